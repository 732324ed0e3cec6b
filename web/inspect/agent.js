// rtcdev's inspector agent, put at the top of an app's pages by `serve --proxy URL
// --inspect`. It follows every RTCPeerConnection the app makes and reports it to the
// room inspector (/inspect) like the calling page does. The app sees the same
// constructor, prototype and events; nothing is added to its calls.
(() => {
  const Native = window.RTCPeerConnection
  if (!Native || Native.rtcdevInspected) return
  const page = Math.random().toString(36).slice(2, 12)
  const app = {
    room: `app ${location.pathname}`.slice(0, 64),
    name: document.title || location.host,
    signaling: { id: page },
    stats: new Map()
  }
  const connections = []
  let reporter = null
  let summarize = null
  // The reporter and the stats summary are loaded after the page's own start.
  const ready = Promise.all([import('/inspect/reporter.js'), import('/inspect/stats.js')]).then(([r, s]) => {
    summarize = s.summarize
    reporter = new r.Reporter(app)
    for (const c of connections) reporter.watch(c)
    setInterval(refresh, 1000)
  }).catch(() => {})

  async function refresh () {
    for (const c of connections) {
      if (c.pc.connectionState === 'closed') continue
      try {
        app.stats.set(c.id, await summarize(c.pc, app.stats.get(c.id)))
        // What the page learned of the far side's candidates, from the stats (its calls
        // to addIceCandidate are left alone).
        const report = await c.pc.getStats()
        report.forEach((s) => {
          if (s.type !== 'remote-candidate' || c.seen.has(s.id)) return
          c.seen.add(s.id)
          reporter.event(c.id, 'remote-candidate', `${s.candidateType} ${s.protocol} ${s.address}:${s.port}`)
        })
      } catch { /* closed meanwhile */ }
    }
    app.name = document.title || location.host
  }

  function RTCPeerConnection (...args) {
    const pc = new Native(...args)
    const c = { id: `connection ${connections.length + 1}`, pc, seen: new Set(), addEventListener () {} }
    connections.push(c)
    if (reporter) reporter.watch(c)
    return pc
  }
  RTCPeerConnection.prototype = Native.prototype
  Object.setPrototypeOf(RTCPeerConnection, Native)
  Object.defineProperty(RTCPeerConnection, 'rtcdevInspected', { value: true })
  window.RTCPeerConnection = RTCPeerConnection
  void ready
})()
