// One RTCPeerConnection per remote peer: the newcomer offers, perfect negotiation
// (polite side chosen by id) settles later clashes, trickle ICE, ICE restart when a
// connection fails or stays disconnected, and a negotiated data channel for chat.

const DISCONNECTED_RESTART_MS = 4000
// A re-offer (after the connection was up once) with no answer by then, lost while the
// hub or the network was away, is rolled back and made again with an ICE restart. A
// first offer is never rolled back: a busy peer may take long to answer it, and the
// transport it sets up cannot be taken back.
const OFFER_TIMEOUT_MS = 15000

export class Peer extends EventTarget {
  constructor ({ id, meta, selfId, iceServers, relayOnly, send, media, offerer }) {
    super()
    this.id = id
    this.meta = meta || {}
    this.polite = selfId < id
    // Which connection a signal belongs to, so a far side that starts over is told apart
    // from late signals of the connection it replaced.
    this.session = Math.random().toString(36).slice(2, 12)
    this.remoteSession = null
    this.send = (data) => send({ ...data, session: this.session })
    this.media = media
    this.offerer = offerer
    this.makingOffer = false
    this.ignoreOffer = false
    this.pendingCandidates = []
    this.remoteStream = new MediaStream()
    this.remoteState = { audio: true, video: true }
    this.restartTimer = null
    this.offerTimer = null
    this.wasConnected = false
    this.chat = null
    this.pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: relayOnly ? 'relay' : 'all' })
    this.wire()
    if (offerer) {
      this.addLocalMedia()
      this.openChat()
    }
  }

  emit (type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }))
  }

  wire () {
    const pc = this.pc
    pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true
        await pc.setLocalDescription()
        this.send({ kind: 'sdp', description: pc.localDescription })
        this.watchOffer()
        this.emit('negotiated')
      } catch (err) {
        this.emit('log', `negotiation failed: ${err}`)
      } finally {
        this.makingOffer = false
      }
    }
    pc.onicecandidate = ({ candidate }) => {
      if (candidate) this.send({ kind: 'ice', candidate })
    }
    pc.ontrack = ({ track }) => {
      this.remoteStream.addTrack(track)
      track.onended = () => this.remoteStream.removeTrack(track)
      this.emit('track', track)
    }
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState
      if (s === 'connected') this.wasConnected = true
      this.emit('state', s)
      clearTimeout(this.restartTimer)
      if (s === 'failed') this.restartIce()
      if (s === 'disconnected') this.restartTimer = setTimeout(() => this.restartIce(), DISCONNECTED_RESTART_MS)
    }
  }

  watchOffer () {
    clearTimeout(this.offerTimer)
    if (!this.wasConnected) return
    this.offerTimer = setTimeout(async () => {
      if (this.pc.signalingState !== 'have-local-offer') return
      this.emit('log', 'offer unanswered; offering again')
      try {
        await this.pc.setLocalDescription({ type: 'rollback' })
        this.pc.restartIce()
      } catch (err) {
        this.emit('log', `rollback failed: ${err}`)
      }
    }, OFFER_TIMEOUT_MS)
  }

  addLocalMedia () {
    const tracks = this.media.tracks()
    const stream = this.media.stream
    const video = this.media.outgoingVideo()
    for (const t of tracks) {
      if (t.kind === 'video') continue
      this.pc.addTrack(t, stream)
    }
    if (video) this.pc.addTrack(video, stream || new MediaStream([video]))
    // Receive-only peers (no camera or microphone) still ask for the other side's media.
    const kinds = new Set(this.pc.getTransceivers().map((tr) => tr.receiver.track.kind))
    if (this.offerer) {
      for (const kind of ['audio', 'video']) {
        if (!kinds.has(kind)) this.pc.addTransceiver(kind, { direction: 'recvonly' })
      }
    }
  }

  openChat () {
    // Negotiated with a fixed id on both sides: no ondatachannel asymmetry.
    this.chat = this.pc.createDataChannel('chat', { negotiated: true, id: 0 })
    this.chat.onmessage = (ev) => {
      try { this.emit('chat', JSON.parse(ev.data)) } catch { /* not ours */ }
    }
    this.chat.onopen = () => this.emit('chat-open')
    this.chat.onclose = () => this.emit('chat-close')
  }

  async onSignal (data) {
    const pc = this.pc
    if (data.kind === 'sdp') {
      const description = data.description
      const collision = description.type === 'offer' && (this.makingOffer || pc.signalingState !== 'stable')
      this.ignoreOffer = !this.polite && collision
      if (this.ignoreOffer) return
      await pc.setRemoteDescription(description)
      if (description.type === 'offer') {
        // The side that did not offer adds its media now, so the answer carries it
        // in the offered transceivers and no second negotiation is needed.
        if (!this.chat) {
          this.addLocalMedia()
          this.openChat()
        }
        await pc.setLocalDescription()
        this.send({ kind: 'sdp', description: pc.localDescription })
      }
      this.emit('negotiated')
      for (const c of this.pendingCandidates.splice(0)) await this.addCandidate(c)
    } else if (data.kind === 'ice') {
      if (data.candidate && data.candidate.candidate) this.emit('remote-candidate', data.candidate)
      if (!pc.remoteDescription) this.pendingCandidates.push(data.candidate)
      else await this.addCandidate(data.candidate)
    } else if (data.kind === 'back') {
      await this.afterAway(false)
    } else if (data.kind === 'state') {
      this.remoteState = { audio: !!data.audio, video: !!data.video }
      this.emit('remote-state', this.remoteState)
    }
  }

  async addCandidate (candidate) {
    try {
      await this.pc.addIceCandidate(candidate)
    } catch (err) {
      if (!this.ignoreOffer) this.emit('log', `bad candidate: ${err}`)
    }
  }

  // The hub connection was away, so signals either side sent meanwhile may be lost.
  // The side that was away (`moved`: it may be on another network) drops an offer it
  // made and restarts ICE, gathering on the network it has now; the other side sends
  // its own pending offer again, or restarts a connection that carries nothing.
  async afterAway (moved) {
    const pc = this.pc
    if (pc.connectionState === 'closed') return
    try {
      if (moved) {
        if (pc.signalingState === 'have-local-offer') await pc.setLocalDescription({ type: 'rollback' })
        this.restartIce()
      } else if (pc.signalingState === 'have-local-offer' && pc.localDescription) {
        this.emit('log', 'sending our offer again')
        this.send({ kind: 'sdp', description: pc.localDescription })
        this.watchOffer()
      } else if (pc.connectionState !== 'connected') {
        this.restartIce()
      }
    } catch (err) {
      this.emit('log', `renegotiation after the hub was away failed: ${err}`)
    }
  }

  restartIce () {
    if (this.pc.connectionState === 'closed') return
    this.emit('log', 'ICE restart')
    this.pc.restartIce()
  }

  // Sends `track` (or nothing, for null) as this peer's video. A page that joined
  // without a camera has a receive-only video transceiver: sharing its screen turns it
  // to send-and-receive, which renegotiates; without any video transceiver (the far
  // side offered none) the track is added.
  async replaceVideo (track) {
    const tr = this.pc.getTransceivers().find((t) => t.receiver.track.kind === 'video' && !t.stopped)
    if (!tr) {
      if (track) this.pc.addTrack(track, new MediaStream([track]))
      return
    }
    await tr.sender.replaceTrack(track)
    if (track && (tr.direction === 'recvonly' || tr.direction === 'inactive')) {
      tr.sender.setStreams(new MediaStream([track]))
      tr.direction = 'sendrecv'
    }
  }

  sendChat (msg) {
    if (this.chat && this.chat.readyState === 'open') {
      this.chat.send(JSON.stringify(msg))
      return true
    }
    return false
  }

  close () {
    clearTimeout(this.restartTimer)
    clearTimeout(this.offerTimer)
    this.pc.close()
    this.emit('closed')
  }
}
