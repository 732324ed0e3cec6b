// What the browser tests share: one JSON line per result, bounded waits, what a page
// receives from each peer, and Debian's headless Chromium with a fake camera.
import { spawn } from 'node:child_process'
import { chromium } from 'playwright-core'

export const STEP_TIMEOUT_MS = 20000
export const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

export async function until (what, fn, timeout = STEP_TIMEOUT_MS, every = 50) {
  const deadline = Date.now() + timeout
  for (;;) {
    let v
    try { v = await fn() } catch (e) { v = false }
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(every)
  }
}

// Per remote peer: video frames decoded and their size, audio packets received and
// samples decoded, connection state, and whether its <video> element plays.
export function media (page) {
  return page.evaluate(async () => {
    const res = {}
    for (const [id, p] of window.rtcdev.peers) {
      let frames = 0
      let audio = 0
      let samples = 0
      let width = 0
      let height = 0
      const stats = await p.pc.getStats()
      stats.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') {
          frames += s.framesDecoded || 0
          width = s.frameWidth || width
          height = s.frameHeight || height
        }
        if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          audio += s.packetsReceived || 0
          samples += s.totalSamplesReceived || 0
        }
      })
      const v = document.querySelector(`.tile[data-peer="${CSS.escape(id)}"] video`)
      const video = v ? { width: v.videoWidth, time: v.currentTime, paused: v.paused } : null
      res[id] = { frames, audio, samples, width, height, video, state: p.pc.connectionState, name: p.meta.name }
    }
    return res
  })
}

// What a page sends to each peer: the video sender's encoding limits and the video
// bits a second measured over `ms`.
export async function launch (executablePath = '/usr/bin/chromium') {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--autoplay-policy=no-user-gesture-required', '--no-sandbox', '--disable-gpu', '--disable-quic',
      '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-features=WebRtcHideLocalIpsWithMdns'
    ]
  })
  const context = await browser.newContext({ permissions: ['camera', 'microphone'] })
  return { browser, context }
}

// The pages of `context` get a certificate fingerprint that is not the far side's in
// every remote description: ICE finds a path and DTLS fails on it.
export function wrongFingerprint (context) {
  return context.addInitScript(() => {
    const set = RTCPeerConnection.prototype.setRemoteDescription
    RTCPeerConnection.prototype.setRemoteDescription = function (d) {
      if (d && d.sdp) d = { type: d.type, sdp: d.sdp.replace(/a=fingerprint:sha-256 ([0-9A-F]{2})/g, (m, x) => `a=fingerprint:sha-256 ${x === '00' ? '01' : '00'}`) }
      return set.call(this, d)
    }
  })
}

export async function check (name, fn) {
  const started = Date.now()
  try {
    const detail = await fn()
    out({ check: name, ok: true, ms: Date.now() - started, ...detail })
  } catch (err) {
    out({ check: name, ok: false, error: String(err && err.stack || err) })
    throw err
  }
}

// `rtcdev serve ARGS` (with `env` added to this process's), resolved once it has printed
// its URLs. What it prints on stdout gathers in `.printed` (ICE test reports, the
// inspector's verdicts, the echo's comings and goings).
export function serve (bin, args, env = {}) {
  const server = spawn(bin, ['serve', ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } })
  server.printed = ''
  return new Promise((resolve, reject) => {
    // One that does not start in time is not left running.
    const timer = setTimeout(() => { server.kill('SIGKILL'); reject(new Error(`serve did not start: ${server.printed}`)) }, STEP_TIMEOUT_MS)
    server.stdout.on('data', (d) => {
      server.printed += String(d)
      // Its first URL (`Local:` on loopback, `Network:` only when bound to one address).
      if (server.printed.includes('https://')) { clearTimeout(timer); resolve(server) }
    })
    server.on('exit', (code) => { clearTimeout(timer); reject(new Error(`serve exited ${code}`)) })
  })
}

// Stops what `serve` started, and waits for it to exit.
export async function stop (server) {
  const exited = new Promise((resolve) => server.on('exit', resolve))
  server.kill('SIGTERM')
  await exited
}

// Runs `checks` against `server`, stops it, and exits 1 if a check threw.
export async function runChecks (server, checks) {
  let failed = false
  try {
    await checks()
  } catch (err) {
    failed = true
    out({ log: String(err && err.stack || err) })
  } finally {
    await stop(server)
  }
  process.exit(failed ? 1 : 0)
}
