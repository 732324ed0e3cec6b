// The hub client: the native protocol over /ws, with reconnect and rejoin after a drop.

const BACKOFF_START_MS = 500
const BACKOFF_MAX_MS = 8000
const KEEPALIVE_MS = 20000
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
  }

  emit (type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }))
  }

  connect () {
    this.closed = false
    this.resuming = null
    const ws = new WebSocket(this.url)
    this.ws = ws
    ws.onopen = () => {
      this.backoff = BACKOFF_START_MS
      this.keepalive = setInterval(() => this.send({ type: 'ping' }), KEEPALIVE_MS)
    }
    ws.onmessage = (ev) => {
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
    ws.onclose = (ev) => {
      clearInterval(this.keepalive)
      if (this.ws !== ws) return
      this.joined = false
      this.emit('disconnected', { code: ev.code })
      if (this.closed) return
      const wait = this.backoff
      this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS)
      setTimeout(() => { if (!this.closed) this.connect() }, wait)
    }
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
