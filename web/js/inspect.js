// Tells rtcdev how this page's peer connections live, for its room inspector (/inspect,
// on the laptop): state changes, candidates gathered and received, candidate errors,
// and once a second a summary of the stats. Sent in batches every 2 s; a server that
// has no inspector (404) is not asked again.

const FLUSH_MS = 2000
const MAX_EVENTS = 200

export class Reporter {
  constructor (app) {
    this.app = app
    this.events = []
    this.stopped = false
    this.timer = setInterval(() => this.flush(), FLUSH_MS)
  }

  event (peer, kind, detail) {
    if (this.stopped) return
    this.events.push({ peer, at: Date.now(), kind, detail: String(detail).slice(0, 200) })
    if (this.events.length > MAX_EVENTS) this.events.shift()
  }

  // Follows one peer connection's life.
  watch (peer) {
    const pc = peer.pc
    const ev = (kind, detail) => this.event(peer.id, kind, detail)
    ev('connection', pc.connectionState)
    pc.addEventListener('signalingstatechange', () => ev('signaling', pc.signalingState))
    pc.addEventListener('iceconnectionstatechange', () => ev('ice', pc.iceConnectionState))
    pc.addEventListener('connectionstatechange', () => ev('connection', pc.connectionState))
    pc.addEventListener('icegatheringstatechange', () => ev('gathering', pc.iceGatheringState))
    pc.addEventListener('icecandidate', ({ candidate: c }) => {
      if (c && c.candidate) ev('local-candidate', describe(c))
    })
    pc.addEventListener('icecandidateerror', (e) => ev('candidate-error', `${e.errorCode} ${e.errorText || ''} ${e.url || ''}`.trim()))
    peer.addEventListener('remote-candidate', ({ detail }) => ev('remote-candidate', describe(detail)))
  }

  async flush () {
    const sig = this.app.signaling
    if (this.stopped || !sig || !sig.id || !this.app.room) return
    const peers = []
    for (const [id, s] of this.app.stats) {
      peers.push({
        peer: id,
        state: s.state,
        path: s.local ? `${s.local} → ${s.remote} ${s.protocol || ''}`.trim() : null,
        rttMs: s.rtt != null ? Math.round(s.rtt * 1000) : null,
        kbpsIn: s.kbpsIn,
        kbpsOut: s.kbpsOut,
        lossPct: Math.round(s.lossPct * 10) / 10,
        framesDecoded: s.framesDecoded,
        fps: s.fps != null ? Math.round(s.fps) : null,
        resolution: s.width ? `${s.width}x${s.height}` : null
      })
    }
    const body = { room: this.app.room, id: sig.id, name: this.app.name || '', events: this.events.splice(0), peers }
    try {
      const res = await fetch('/inspect/report', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
      if (res.status === 404) this.stop()
    } catch { /* the server is away; the hub's notice says so */ }
  }

  stop () {
    this.stopped = true
    clearInterval(this.timer)
  }
}

// "relay udp 10.0.0.1:50000 over tcp" from an RTCIceCandidate or its init dictionary.
function describe (c) {
  let { type, protocol, address, port, relayProtocol } = c
  if (!type && c.candidate) {
    const f = c.candidate.split(' ')
    protocol = (f[2] || '').toLowerCase()
    address = f[4]
    port = f[5]
    type = f[7]
  }
  return `${type} ${protocol} ${address}:${port}${relayProtocol ? ' over ' + relayProtocol : ''}`
}
