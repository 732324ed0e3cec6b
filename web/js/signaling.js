// The hub client: the native protocol over /ws, with reconnect and rejoin after a drop.

const BACKOFF_START_MS = 500
const BACKOFF_MAX_MS = 8000
const KEEPALIVE_MS = 10000
// A connection whose network went away (a phone changing Wi-Fi, a suspended tab) is not
// closed, it just goes quiet: no word from the hub this long after a ping ends it, and a
// new one takes the place back. Probed at once when the browser sees a network change.
const PROBE_TIMEOUT_MS = 3000
// Signals written while the hub is away wait for the next `joined`; past this many the
// oldest are dropped (a restart renegotiates anyway).
const MAX_QUEUED_SIGNALS = 200

export class Signaling extends EventTarget {
  constructor (url) {
    super()
    this.url = url
    this.id = null
    this.iceServers = []
    this.room = null
    this.meta = {}
    this.ws = null
    this.backoff = BACKOFF_START_MS
    this.closed = false
    this.keepalive = null
    this.joined = false
    this.queued = []
    // The id and resume token of the last welcome: a new connection asks for that place
    // back (a network switch, a hub connection that died silently).
    this.place = null
    this.resuming = null
    this.probeTimer = null
    this.retryTimer = null
    const check = () => this.probe()
    globalThis.addEventListener('online', () => this.reconnectNow())
    globalThis.addEventListener('offline', check)
    if (globalThis.navigator && navigator.connection && navigator.connection.addEventListener) {
      navigator.connection.addEventListener('change', check)
    }
    if (globalThis.document) {
      document.addEventListener('visibilitychange', () => { if (document.visibilityState === 'visible') check() })
    }
  }

  emit (type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }))
  }

  connect () {
    this.closed = false
    this.resuming = null
    clearTimeout(this.retryTimer)
    this.retryTimer = null
    // The page's head may have opened it already (index.html); taken once.
    const early = globalThis.rtcdevEarlyHub
    globalThis.rtcdevEarlyHub = null
    const adopted = early && early.ws.url === new URL(this.url).href
    const ws = adopted ? early.ws : new WebSocket(this.url)
    this.ws = ws
    this.early = this.early || adopted
    ws.onopen = () => {
      this.backoff = BACKOFF_START_MS
      this.keepalive = setInterval(() => this.probe(), KEEPALIVE_MS)
    }
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return
      clearTimeout(this.probeTimer)
      this.probeTimer = null
      let msg
      try { msg = JSON.parse(ev.data) } catch { return }
      this.emit('log', { dir: 'in', msg })
      if (msg.type === 'welcome') {
        if (this.place && this.place.id !== msg.id && !this.resuming) {
          // Ask for the old place first; this welcome stands if that is refused.
          this.resuming = msg
          this.send({ type: 'resume', id: this.place.id, token: this.place.token })
          return
        }
        this.welcomed(msg)
      } else if (msg.type === 'error' && msg.code === 'resume-refused' && this.resuming) {
        // A restarted hub, or the place is gone: carry on as someone new.
        this.emit('resume-refused', msg)
        this.welcomed(this.resuming)
      } else if (msg.type === 'joined') {
        this.joined = true
        this.emit(msg.type, msg)
        // What was written while away goes out now, in order, after the join.
        for (const m of this.queued.splice(0)) this.send(m)
      } else {
        this.emit(msg.type, msg)
      }
    }
    ws.onclose = (ev) => this.lost(ws, ev.code, this.backoff)
    if (adopted) {
      if (ws.readyState === WebSocket.OPEN) ws.onopen()
      for (const ev of early.heard) (ev.type === 'close' ? ws.onclose : ws.onmessage)(ev)
    } else if (early) {
      early.ws.close()
    }
  }

  // Asks the hub for a sign of life; none within PROBE_TIMEOUT_MS and this connection is
  // given up for a new one. Anything the hub sends counts as an answer.
  probe () {
    const ws = this.ws
    if (!ws || ws.readyState !== WebSocket.OPEN || this.probeTimer) return
    this.send({ type: 'ping' })
    this.probeTimer = setTimeout(() => {
      this.probeTimer = null
      if (this.ws !== ws) return
      this.emit('log', { dir: 'in', msg: { type: 'silence' } })
      ws.onclose = null
      ws.onmessage = null
      try { ws.close() } catch { /* already closing */ }
      this.lost(ws, 4000, 0)
    }, PROBE_TIMEOUT_MS)
  }

  // The browser is online again: a connection being waited for is tried now, and an
  // open one is probed (it may belong to the network that went away).
  reconnectNow () {
    if (this.closed) return
    if (this.retryTimer) {
      this.backoff = BACKOFF_START_MS
      this.connect()
    } else {
      this.probe()
    }
  }

  lost (ws, code, wait) {
    if (this.ws !== ws) return
    clearInterval(this.keepalive)
    clearTimeout(this.probeTimer)
    this.probeTimer = null
    this.ws = null
    this.joined = false
    this.emit('disconnected', { code })
    if (this.closed) return
    this.backoff = Math.min(Math.max(this.backoff, BACKOFF_START_MS) * 2, BACKOFF_MAX_MS)
    this.retryTimer = setTimeout(() => { if (!this.closed) this.connect() }, wait)
  }

  welcomed (msg) {
    this.resuming = null
    this.id = msg.id
    this.place = msg.resume ? { id: msg.id, token: msg.resume } : null
    this.iceServers = msg.iceServers || []
    this.emit('welcome', msg)
    if (this.room) this.send({ type: 'join', room: this.room, meta: this.meta })
  }

  join (room, meta) {
    this.room = room
    this.meta = meta
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.id) this.send({ type: 'join', room, meta })
  }

  signal (to, data) {
    this.sendOrQueue({ type: 'signal', to, data })
  }

  broadcast (data) {
    this.sendOrQueue({ type: 'signal', data })
  }

  // Signals need a room: while the hub is away (or the join is not answered yet) they
  // wait, instead of being dropped without a word.
  sendOrQueue (msg) {
    if (this.joined && this.send(msg)) return
    if (this.closed) return
    this.queued.push(msg)
    if (this.queued.length > MAX_QUEUED_SIGNALS) this.queued.shift()
  }

  // Signals still waiting for `to` are dropped: the connection they were for is gone.
  forget (to) {
    this.queued = this.queued.filter((m) => m.to !== to)
  }

  send (msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false
    if (msg.type !== 'ping') this.emit('log', { dir: 'out', msg })
    this.ws.send(JSON.stringify(msg))
    return true
  }

  close () {
    this.closed = true
    if (this.ws) {
      this.send({ type: 'leave' })
      this.ws.close(1000)
    }
  }
}
