// Local media: camera and microphone, device switching, screen share, mute.

export class Media {
  constructor () {
    this.stream = null
    this.cameraTrack = null
    this.screenTrack = null
    this.audioOn = true
    this.videoOn = true
    this.facing = 'user'
    this.error = null
  }

  static canShareScreen () {
    return !!(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia)
  }

  async devices () {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return { cameras: [], mics: [] }
    const list = await navigator.mediaDevices.enumerateDevices()
    return {
      cameras: list.filter((d) => d.kind === 'videoinput'),
      mics: list.filter((d) => d.kind === 'audioinput')
    }
  }

  // Opens camera and microphone; falls back to audio only, then to none (receive-only).
  async open ({ cameraId, micId } = {}) {
    this.error = null
    this.partial = null
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      this.error = 'insecure'
      return null
    }
    const video = this.cameraConstraints(cameraId)
    const audio = micId ? { deviceId: { exact: micId } } : true
    const attempts = [{ video, audio }, { audio }, { video }]
    let failure = null
    // The page's head started the first attempt while the modules loaded (a link that
    // names a room); taken once, and only if it asked for what this one would.
    const early = window.rtcdevEarlyMedia
    window.rtcdevEarlyMedia = null
    let adopted = false
    try {
      for (const constraints of attempts) {
        try {
          const asked = early && JSON.stringify(early.constraints) === JSON.stringify(constraints) ? early.stream : null
          this.stream = await (asked || navigator.mediaDevices.getUserMedia(constraints))
          if (asked) this.early = adopted = true
          this.cameraTrack = this.stream.getVideoTracks()[0] || null
          // Half of it opened: why the other half did not, for the notice.
          this.partial = failure
          return this.stream
        } catch (err) {
          failure = err.name
          if (err.name === 'NotAllowedError' || err.name === 'SecurityError') break
        }
      }
    } finally {
      // Not taken over: a camera the page does not use is not left on.
      if (early && !adopted) early.stream.then((s) => s.getTracks().forEach((t) => t.stop()), () => {})
    }
    this.error = failure
    this.stream = null
    return null
  }

  tracks () {
    return this.stream ? this.stream.getTracks() : []
  }

  setAudio (on) {
    this.audioOn = on
    for (const t of this.stream ? this.stream.getAudioTracks() : []) t.enabled = on
  }

  setVideo (on) {
    this.videoOn = on
    if (this.cameraTrack) this.cameraTrack.enabled = on
  }

  // Phones and tablets, where cameras are chosen by the way they face. iPadOS says
  // "Macintosh" but has a touch screen.
  static isMobile () {
    const ua = navigator.userAgent
    return /Android|iPhone|iPad|iPod/.test(ua) || (/Macintosh/.test(ua) && navigator.maxTouchPoints > 1)
  }

  // The camera the page asks for: the facing direction on phones (front and back, not
  // every lens one by one), the device elsewhere, always with the same size.
  cameraConstraints (deviceId) {
    const size = { width: { ideal: 1280 }, height: { ideal: 720 } }
    return deviceId ? { deviceId: { exact: deviceId }, ...size } : { facingMode: this.facing, ...size }
  }

  // The next camera: front/back on phones, the next device elsewhere. The old camera is
  // stopped before the new one opens (many Android phones cannot open two at once); if
  // the new one fails, the old one is opened again and the error is thrown. Returns the
  // new track.
  async switchCamera () {
    if (!this.stream) return null
    let constraints
    const previous = { facing: this.facing, deviceId: this.cameraTrack && this.cameraTrack.getSettings().deviceId }
    if (Media.isMobile()) {
      this.facing = this.facing === 'user' ? 'environment' : 'user'
      constraints = this.cameraConstraints()
    } else {
      const { cameras } = await this.devices()
      if (cameras.length < 2) throw new Error('there is no other camera')
      const i = cameras.findIndex((c) => c.deviceId === previous.deviceId)
      constraints = this.cameraConstraints(cameras[(i + 1) % cameras.length].deviceId)
    }
    this.dropCamera()
    try {
      return await this.openCamera(constraints)
    } catch (err) {
      this.facing = previous.facing
      await this.openCamera(this.cameraConstraints(Media.isMobile() ? undefined : previous.deviceId)).catch(() => {})
      throw err
    }
  }

  dropCamera () {
    if (!this.cameraTrack) return
    this.stream.removeTrack(this.cameraTrack)
    this.cameraTrack.stop()
    this.cameraTrack = null
  }

  async openCamera (video) {
    const fresh = await navigator.mediaDevices.getUserMedia({ video })
    const track = fresh.getVideoTracks()[0]
    track.enabled = this.videoOn
    this.stream.addTrack(track)
    this.cameraTrack = track
    return track
  }

  // Whether the local preview should be mirrored: the front camera only.
  mirrored () {
    if (this.screenTrack || !this.cameraTrack) return false
    const facing = this.cameraTrack.getSettings().facingMode
    return facing ? facing === 'user' : this.facing === 'user'
  }

  async startScreen () {
    const s = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false })
    this.screenTrack = s.getVideoTracks()[0]
    return this.screenTrack
  }

  stopScreen () {
    if (this.screenTrack) this.screenTrack.stop()
    this.screenTrack = null
  }

  // The video track peers should get now.
  outgoingVideo () {
    return this.screenTrack || this.cameraTrack
  }

  close () {
    for (const t of this.tracks()) t.stop()
    this.stopScreen()
  }
}
