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
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      this.error = 'insecure'
      return null
    }
    const video = cameraId ? { deviceId: { exact: cameraId } } : { facingMode: this.facing, width: { ideal: 1280 }, height: { ideal: 720 } }
    const audio = micId ? { deviceId: { exact: micId } } : true
    const attempts = [{ video, audio }, { audio }, { video }]
    for (const constraints of attempts) {
      try {
        this.stream = await navigator.mediaDevices.getUserMedia(constraints)
        this.cameraTrack = this.stream.getVideoTracks()[0] || null
        return this.stream
      } catch (err) {
        this.error = err.name
        if (err.name === 'NotAllowedError' || err.name === 'SecurityError') break
      }
    }
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

  // The next camera: front/back on phones, the next device elsewhere. Returns the new track.
  async switchCamera () {
    if (!this.stream) return null
    const { cameras } = await this.devices()
    let constraints
    if (cameras.length > 2 || !/Android|iPhone|iPad/.test(navigator.userAgent)) {
      const current = this.cameraTrack && this.cameraTrack.getSettings().deviceId
      const i = cameras.findIndex((c) => c.deviceId === current)
      const next = cameras[(i + 1) % Math.max(cameras.length, 1)]
      if (!next) return null
      constraints = { deviceId: { exact: next.deviceId } }
    } else {
      this.facing = this.facing === 'user' ? 'environment' : 'user'
      constraints = { facingMode: this.facing }
    }
    const fresh = await navigator.mediaDevices.getUserMedia({ video: constraints })
    const track = fresh.getVideoTracks()[0]
    if (this.cameraTrack) {
      this.stream.removeTrack(this.cameraTrack)
      this.cameraTrack.stop()
    }
    track.enabled = this.videoOn
    this.stream.addTrack(track)
    this.cameraTrack = track
    return track
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
