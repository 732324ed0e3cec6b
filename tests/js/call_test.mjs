// Drives the calling page in Debian's headless Chromium (fake camera and microphone)
// against `rtcdev serve`, inside a network namespace (see netns.sh). Prints one JSON
// object a line: {"check": name, "ok": bool, ...}. Usage:
//   RTCDEV_BIN=... HOME=<temp> node call_test.mjs checks
//   RTCDEV_BIN=... HOME=<temp> node call_test.mjs bench RUNS
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { chromium } from 'playwright-core'
import { out, sleep, until, media, launch, check, serve, stop, wrongFingerprint, STEP_TIMEOUT_MS } from './lib.mjs'

const BIN = process.env.RTCDEV_BIN
const PORT = 8443
const ORIGIN = `https://localhost:${PORT}`
const SMALL_PORT = 8446
const SMALL_ORIGIN = `https://localhost:${SMALL_PORT}`

let server = null

async function startServer () {
  server = await serve(BIN, ['--bind', '127.0.0.1', '--port', String(PORT), '--quiet', '--no-qr', '--room', 'lobby'])
}

async function stopServer () {
  const s = server
  server = null
  await stop(s)
}

async function sending (page, ms = 2000) {
  const sample = () => page.evaluate(async () => {
    const out = {}
    for (const [id, p] of window.rtcdev.peers) {
      const sender = p.pc.getSenders().find((s) => s.track && s.track.kind === 'video')
      let bytes = 0
      const stats = await p.pc.getStats()
      stats.forEach((s) => { if (s.type === 'outbound-rtp' && s.kind === 'video') bytes += s.bytesSent || 0 })
      const e = sender ? sender.getParameters().encodings[0] || {} : {}
      out[id] = { bytes, maxBitrate: e.maxBitrate, scale: e.scaleResolutionDownBy, at: performance.now() }
    }
    return out
  })
  const a = await sample()
  await sleep(ms)
  const b = await sample()
  return Object.fromEntries(Object.entries(b).map(([id, x]) => [id, { maxBitrate: x.maxBitrate, scale: x.scale, bps: a[id] ? Math.round((x.bytes - a[id].bytes) * 8000 / (x.at - a[id].at)) : null }]))
}

// Every sender of `page` carries the plan for a room of `size` and sends within it.
async function checkUplink (page, size) {
  const want = await page.evaluate(async (n) => (await import('/js/uplink.js')).plan(n - 1, false), size)
  const got = await until(`the uplink plan for ${size}`, async () => {
    const s = await sending(page)
    const all = Object.values(s)
    return all.length === size - 1 && all.every((x) => x.maxBitrate === want.maxBitrate && x.scale === want.scaleResolutionDownBy) && s
  })
  for (const x of Object.values(got)) {
    // Measured over 2 s, with room for RTP headers and the encoder's overshoot.
    if (x.bps > want.maxBitrate * 1.25) throw new Error(`a sender at ${x.bps} b/s past its ${want.maxBitrate}`)
  }
  return { perSender: want.maxBitrate, scale: want.scaleResolutionDownBy, measured: Object.values(got).map((x) => x.bps) }
}

// Every URL a page asks for (documents, scripts, fetches, WebSockets).
const requested = []
function recordRequests (page) {
  page.on('request', (r) => requested.push(r.url()))
  page.on('websocket', (ws) => requested.push(ws.url()))
}

async function open (context, room, name, origin = ORIGIN) {
  const page = await context.newPage()
  recordRequests(page)
  page.on('pageerror', (e) => out({ log: `${name}: page error ${e}` }))
  page.on('requestfailed', (r) => out({ log: `${name}: request failed ${r.url()} ${r.failure() && r.failure().errorText}` }))
  await page.addInitScript((n) => localStorage.setItem('rtcdev.name', n), name)
  const t0 = Date.now()
  await page.goto(`${origin}/?room=${room}`)
  try {
    await until(`${name} joined`, () => page.evaluate(() => !!(window.rtcdev.signaling && window.rtcdev.signaling.id && window.rtcdev.joinedAt)))
  } catch (err) {
    const state = await page.evaluate(() => ({ url: location.href, title: document.title, events: window.rtcdev ? window.rtcdev.events.slice(-10) : null, notice: document.getElementById('notice') && document.getElementById('notice').textContent })).catch((e) => String(e))
    throw new Error(`${err.message}; page: ${JSON.stringify(state)}`)
  }
  const id = await page.evaluate(() => window.rtcdev.signaling.id)
  return { page, t0, id, name }
}

// The page stops hearing its hub connection without closing it, as when the network
// under it goes away and the hub has not noticed: the socket stays in window.awayWs.
function silenceHub (page) {
  return page.evaluate(() => {
    const sig = window.rtcdev.signaling
    window.awayWs = sig.ws
    sig.ws.onmessage = null
    sig.ws.onclose = null
    clearInterval(sig.keepalive)
  })
}

async function firstFrameMs (p) {
  await until(`${p.name} first remote frame`, async () => Object.values(await media(p.page)).some((m) => m.frames > 0), STEP_TIMEOUT_MS)
  return Date.now() - p.t0
}

async function checks () {
  const { browser, context } = await launch()
  try {
    const a = await open(context, 'call', 'Ann')
    const b = await open(context, 'call', 'Bob')
    await check('join-notices', async () => {
      const toasts = (p) => p.evaluate(() => [...document.querySelectorAll('.toast')].map((t) => t.textContent))
      const atAnn = await until('Ann told Bob joined', async () => { const t = await toasts(a.page); return t.some((x) => x === 'Bob joined') && t })
      const atBob = await until('Bob told who is here', async () => { const t = await toasts(b.page); return t.some((x) => x === 'In this call: Ann') && t })
      return { atAnn, atBob }
    })
    await check('two-pages-media', async () => {
      const [fa, fb] = await Promise.all([firstFrameMs(a), firstFrameMs(b)])
      // Audio decoded, not only packets received: the sample count keeps growing.
      const decoded = async (p) => {
        const first = await until(`audio decoded at ${p.name}`, async () => { const m = Object.values(await media(p.page)); return m.length === 1 && m[0].samples > 0 && m[0] })
        return until(`audio still decoded at ${p.name}`, async () => { const m = Object.values(await media(p.page))[0]; return m.samples > first.samples + 8000 && m })
      }
      // The remote <video> element really plays: it has a size and its clock moves.
      const playing = async (p) => {
        const first = await until(`video element playing at ${p.name}`, async () => { const m = Object.values(await media(p.page))[0]; return m.video && m.video.width > 0 && !m.video.paused && m })
        return until(`video time advancing at ${p.name}`, async () => { const m = Object.values(await media(p.page))[0]; return m.video.time > first.video.time + 0.5 && m })
      }
      // Joining through a room link, the page started its camera and its hub connection
      // in its head, before the modules ran, and the modules took both over.
      for (const p of [a, b]) {
        const early = await p.page.evaluate(() => ({ camera: window.rtcdev.media.early === true, hub: window.rtcdev.signaling.early === true }))
        if (!early.camera || !early.hub) throw new Error(`${p.name} did not start early: ${JSON.stringify(early)}`)
      }
      const [ma, mb] = [await decoded(a), await decoded(b)]
      const [va, vb] = [await playing(a), await playing(b)]
      // One receiver: the whole budget (up to the per-sender cap), full size.
      const uplink = await checkUplink(a.page, 2)
      return { firstFrameMs: { ann: fa, bob: fb }, ann: ma, bob: mb, videoAtAnn: va.video, videoAtBob: vb.video, uplink }
    })
    // A new connection sends at half size first, then at the plan's (which checkUplink
    // above waited for): a real sender in Ann's page, through uplink.js.
    await check('fast-start-then-plan', () => a.page.evaluate(async () => {
      const uplink = await import('/js/uplink.js')
      const [pc1, pc2] = [new RTCPeerConnection(), new RTCPeerConnection()]
      const track = window.rtcdev.media.cameraTrack.clone()
      pc1.addTrack(track)
      await pc1.setLocalDescription()
      await pc2.setRemoteDescription(pc1.localDescription)
      await pc2.setLocalDescription()
      await pc1.setRemoteDescription(pc2.localDescription)
      const peer = { pc: pc1 }
      const scale = () => pc1.getSenders()[0].getParameters().encodings[0].scaleResolutionDownBy
      await uplink.apply([peer], false)
      const fresh = scale()
      peer.fastStartOver = true
      await uplink.apply([peer], false)
      const later = scale()
      pc1.close()
      pc2.close()
      track.stop()
      if (fresh !== 2 || later !== 1) throw new Error(`scale ${fresh} then ${later}, not 2 then 1`)
      return { fresh, later }
    }))
    await check('inspector-shows-the-call', async () => {
      // The laptop's view of the room: both ends of Ann <-> Bob, connected, with media.
      const page = await context.newPage()
      await page.goto(`${ORIGIN}/inspect`)
      // A device that reports a connection to "constructor", in a room drawn first: the
      // rest of the view still draws.
      const posted = await page.evaluate(() => fetch('/inspect/report', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ room: '-', id: 'toString', name: 'odd', events: [{ peer: 'constructor', at: 1, kind: 'connection', detail: 'new' }] })
      }).then((r) => r.status))
      if (posted !== 204) throw new Error(`the odd report: ${posted}`)
      const seen = await until('the inspector showing Ann and Bob connected', () => page.evaluate(([x, y]) => {
        const room = window.inspectorState && window.inspectorState.rooms.call
        const ab = room && room[x] && room[x].connections[y]
        const ba = room && room[y] && room[y].connections[x]
        const media = (s) => s && s.state === 'connected' && s.summary && s.summary.kbpsIn > 0 && s.summary.path && s.history.length >= 3
        const row = document.querySelector('section[data-room="call"] tr[data-pair]')
        const graph = row && row.querySelector('svg polyline')
        return media(ab) && media(ba) && graph && {
          ab: ab.summary,
          ba: ba.summary,
          history: ab.history.length,
          names: [room[x].name, room[y].name],
          row: row.textContent,
          points: graph.getAttribute('points').split(' ').length
        }
      }, [a.id, b.id]))
      if (!seen.row.includes('Ann') || !seen.row.includes('Bob')) throw new Error(`inspector row: ${seen.row}`)
      // Both ends name the same selected pair: Ann's local end is Bob's remote one (a
      // peer-reflexive end is the other's host or srflx, learned from its checks).
      const [al, , ar] = seen.ab.path.split(' ')
      const [bl, , br] = seen.ba.path.split(' ')
      const same = (x, y) => x === y || x === 'prflx' || y === 'prflx'
      if (!same(al, br) || !same(ar, bl)) throw new Error(`the two ends disagree on the pair: ${seen.ab.path} / ${seen.ba.path}`)
      if (seen.points < 3) throw new Error(`graph with ${seen.points} points`)
      await page.close()
      return seen
    })
    await check('stats-overlay', async () => {
      // On demand: hidden until the debug panel is opened.
      const shown = () => a.page.evaluate(() => getComputedStyle(document.querySelector('.tile:not(.local) .stats')).display !== 'none')
      if (await shown()) throw new Error('the stats overlay shows before it was asked for')
      await a.page.click('#debug-toggle')
      if (!(await shown())) throw new Error('the debug panel did not show the stats overlay')
      const text = await until('stats text', () => a.page.evaluate(() => {
        const t = document.querySelector('.tile:not(.local) .stats').textContent
        return t.includes('host') && t.includes('rtt') && t
      }))
      await a.page.click('#debug-toggle')
      return { text }
    })
    await check('chat-crosses', async () => {
      await until('chat channel open', () => a.page.evaluate(() => [...window.rtcdev.peers.values()].every((p) => p.chat && p.chat.readyState === 'open')))
      await a.page.click('#chat-toggle')
      await a.page.fill('#chat-input', 'hello from Ann')
      await a.page.click('#chat-form button')
      const line = await until('chat at Bob', () => b.page.evaluate(() => {
        const t = document.getElementById('chat-log').textContent
        return t.includes('Ann: hello from Ann') && t
      }))
      // And the other way.
      await b.page.click('#chat-toggle')
      await b.page.fill('#chat-input', 'hello from Bob')
      await b.page.click('#chat-form button')
      const back = await until('chat at Ann', () => a.page.evaluate(() => {
        const t = document.getElementById('chat-log').textContent
        return t.includes('Bob: hello from Bob') && t
      }))
      // The name on a chat line is the one the sender joined with (the hub relays it),
      // not one the message claims.
      await a.page.evaluate(() => { for (const p of window.rtcdev.peers.values()) p.sendChat({ name: 'Mallory', text: 'spoofed name' }) })
      const spoof = await until('the spoofing line at Bob', () => b.page.evaluate(() => {
        const lines = [...document.querySelectorAll('#chat-log > *')].map((l) => l.textContent)
        return lines.find((l) => l.includes('spoofed name'))
      }))
      if (!spoof.startsWith('Ann') || spoof.includes('Mallory')) throw new Error(`chat line under a chosen name: ${spoof}`)
      return { line, back, spoof }
    })
    await check('camera-off-shows-far-side', async () => {
      await a.page.click('#cam')
      const sending = await a.page.evaluate(() => window.rtcdev.media.stream.getVideoTracks()[0].enabled)
      if (sending !== false) throw new Error('local video track still enabled')
      await until('cam-off badge at Bob', () => b.page.evaluate((id) => {
        const t = document.querySelector(`.tile[data-peer="${id}"]`)
        return t && t.dataset.videoMuted === 'true' && t.textContent.includes('cam off')
      }, a.id))
      await a.page.click('#cam')
      await until('cam on at Bob', () => b.page.evaluate((id) => document.querySelector(`.tile[data-peer="${id}"]`).dataset.videoMuted === 'false', a.id))
      return {}
    })
    // Bob's hub connection dies without a close (a network switch: the hub has not
    // noticed) and the page opens a new one: it resumes its place with its token, keeps
    // its id, and Ann sees nothing: the same peer, the same RTCPeerConnection, media on.
    await check('resume-keeps-the-call', async () => {
      await a.page.evaluate(() => { window.pcOfBob = [...window.rtcdev.peers.values()][0].pc })
      const f0 = Object.values(await media(a.page))[0].frames
      await silenceHub(b.page)
      await b.page.evaluate(() => window.rtcdev.signaling.connect())
      await until('Bob resumed', () => b.page.evaluate(() => window.rtcdev.events.includes('resumed our place in the room')))
      const id = await b.page.evaluate(() => window.rtcdev.signaling.id)
      if (id !== b.id) throw new Error(`Bob came back as ${id}, not ${b.id}`)
      await until('the old connection closed by the hub', () => b.page.evaluate(() => window.awayWs.readyState === WebSocket.CLOSED))
      await until('media still flowing at Ann', async () => Object.values(await media(a.page))[0].frames > f0 + 10)
      const same = await a.page.evaluate((bid) => window.rtcdev.peers.size === 1 && window.rtcdev.peers.get(bid) && window.rtcdev.peers.get(bid).pc === window.pcOfBob, b.id)
      if (!same) throw new Error('Ann holds another peer or connection for Bob')
      const toasts = await a.page.evaluate(() => [...document.querySelectorAll('.toast')].map((t) => t.textContent))
      if (toasts.some((t) => t.includes('Bob left'))) throw new Error(`Ann was told Bob left: ${toasts}`)
      // Signals still reach Bob's new connection: chat goes over the data channel, so
      // check a state change instead.
      await a.page.click('#mic')
      await until('mute seen by the resumed Bob', () => b.page.evaluate((aid) => document.querySelector(`.tile[data-peer="${aid}"]`).dataset.audioMuted === 'true', a.id))
      await a.page.click('#mic')
      await until('unmute seen by the resumed Bob', () => b.page.evaluate((aid) => document.querySelector(`.tile[data-peer="${aid}"]`).dataset.audioMuted === 'false', a.id))
      return { id }
    })
    await check('mute-shows-far-side', async () => {
      await a.page.click('#mic')
      const local = await a.page.evaluate(() => window.rtcdev.media.stream.getAudioTracks()[0].enabled)
      if (local !== false) throw new Error('local track still enabled')
      await until('muted badge at Bob', () => b.page.evaluate((id) => {
        const t = document.querySelector(`.tile[data-peer="${id}"]`)
        return t && t.dataset.audioMuted === 'true'
      }, a.id))
      await a.page.click('#mic')
      await until('unmuted at Bob', () => b.page.evaluate((id) => document.querySelector(`.tile[data-peer="${id}"]`).dataset.audioMuted === 'false', a.id))
      return {}
    })
    await check('screen-share-replaces-track', async () => {
      // The fake camera and the fake screen are both 1280x720: a smaller camera here,
      // so that what Bob decodes tells the two apart.
      await a.page.evaluate(() => window.rtcdev.media.cameraTrack.applyConstraints({ width: 640, height: 360 }))
      const camera = await until('the smaller camera at Bob', async () => {
        const m = Object.values(await media(b.page))[0]
        return m.width > 0 && m.width <= 640 && m
      })
      const before = camera.frames
      await a.page.click('#share')
      const sending = await until('screen track sent', () => a.page.evaluate(() => {
        const m = window.rtcdev.media
        const p = [...window.rtcdev.peers.values()][0]
        const sender = p.pc.getSenders().find((s) => s.track && s.track.kind === 'video')
        return m.screenTrack && sender && sender.track === m.screenTrack && m.screenTrack.label
      }))
      await until('frames keep coming', async () => Object.values(await media(b.page))[0].frames > before + 5)
      // What Bob decodes is the screen: its frame size is the screen track's, not the camera's.
      const screen = await a.page.evaluate(() => window.rtcdev.media.screenTrack.getSettings())
      const shared = await until('the screen at Bob', async () => {
        const m = Object.values(await media(b.page))[0]
        return m.width === screen.width && m.height === screen.height && m
      })
      if (screen.width === camera.width && screen.height === camera.height) throw new Error(`the screen has the camera's size ${screen.width}x${screen.height}`)
      await a.page.click('#share')
      await until('camera back', () => a.page.evaluate(() => {
        const p = [...window.rtcdev.peers.values()][0]
        const sender = p.pc.getSenders().find((s) => s.track && s.track.kind === 'video')
        return !window.rtcdev.media.screenTrack && sender.track === window.rtcdev.media.cameraTrack
      }))
      await a.page.evaluate(() => window.rtcdev.media.cameraTrack.applyConstraints(window.rtcdev.media.cameraConstraints()))
      return { screenTrack: sending, camera: [camera.width, camera.height], screen: [shared.width, shared.height] }
    })
    // Without camera permission the page still joins, receive-only, and sees the others.
    await check('denied-permission-receives', async () => {
      const denied = await chromium.launch({
        executablePath: '/usr/bin/chromium',
        headless: true,
        args: ['--use-fake-device-for-media-stream', '--autoplay-policy=no-user-gesture-required', '--no-sandbox', '--disable-gpu', '--disable-features=WebRtcHideLocalIpsWithMdns']
      })
      try {
        const ctx = await denied.newContext({ permissions: [] })
        const r = await open(ctx, 'call', 'Rae')
        const notice = await until('the receive-only notice', () => r.page.evaluate(() => {
          const t = document.getElementById('notice').textContent
          return t.includes('receive-only') && t
        }))
        const m = await until('Rae sees both', async () => {
          const m = Object.values(await media(r.page))
          return m.length === 2 && m.every((x) => x.frames > 0 && x.samples > 0) && m
        })
        const sent = await r.page.evaluate(() => window.rtcdev.media.stream ? window.rtcdev.media.stream.getTracks().length : 0)
        if (sent !== 0) throw new Error(`receive-only page holds ${sent} local tracks`)
        // The inspector tells the laptop why nothing comes from Rae.
        const verdict = await until('the no-media verdict', () => server.printed.split('\n').find((l) => l.includes('nothing arrives at') && l.includes('from Rae: Rae sends no audio or video')), 20000, 250)
        await r.page.close()
        for (const p of [a, b]) await until(`${p.name} dropped Rae`, () => p.page.evaluate((id) => !window.rtcdev.peers.has(id), r.id))
        return { notice, frames: m.map((x) => x.frames), verdict }
      } finally {
        await denied.close()
      }
    })
    // A computer with no camera or microphone at all joins receive-only and can still
    // share its screen: its receive-only video transceiver starts sending, and the
    // others decode the screen.
    await check('screen-share-without-camera', async () => {
      const ctx = await a.page.context().browser().newContext({ permissions: ['camera', 'microphone'] })
      await ctx.addInitScript(() => {
        navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('no device', 'NotFoundError'))
      })
      try {
        const r = await open(ctx, 'call', 'Sol')
        await until('Sol sees both', async () => {
          const m = Object.values(await media(r.page))
          return m.length === 2 && m.every((x) => x.frames > 0)
        })
        await r.page.click('#share')
        const screen = await until('Sol sharing', () => r.page.evaluate(() => window.rtcdev.media.screenTrack && window.rtcdev.media.screenTrack.getSettings()))
        for (const p of [a, b]) {
          await until(`${p.name} decodes Sol's screen`, async () => {
            const m = (await media(p.page))[r.id]
            return m && m.frames > 0 && m.width === screen.width && m.height === screen.height
          })
        }
        await r.page.close()
        for (const p of [a, b]) await until(`${p.name} dropped Sol`, () => p.page.evaluate((id) => !window.rtcdev.peers.has(id), r.id))
        return { screen: [screen.width, screen.height] }
      } finally {
        await ctx.close()
      }
    })
    // On a phone (emulated: a phone's user agent and touch) the switch button turns
    // between front and back by facingMode, stops the old camera first, and the others
    // keep decoding video from the new one.
    await check('camera-switch-on-a-phone', async () => {
      const phone = await a.page.context().browser().newContext({
        permissions: ['camera', 'microphone'],
        userAgent: 'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36',
        hasTouch: true,
        isMobile: true,
        viewport: { width: 412, height: 915 }
      })
      try {
        const p = await open(phone, 'call', 'Pia')
        await until('Pia connected to both', async () => {
          const m = Object.values(await media(p.page))
          return m.length === 2 && m.every((x) => x.frames > 0)
        })
        const before = await p.page.evaluate(() => ({ id: window.rtcdev.media.cameraTrack.id, facing: window.rtcdev.media.facing }))
        await p.page.click('#switch')
        const after = await until('a new camera track sent', () => p.page.evaluate((old) => {
          const m = window.rtcdev.media
          const senders = [...window.rtcdev.peers.values()].map((x) => x.pc.getSenders().find((s) => s.track && s.track.kind === 'video'))
          return m.cameraTrack && m.cameraTrack.id !== old && senders.every((s) => s && s.track === m.cameraTrack) && { id: m.cameraTrack.id, facing: m.facing, mirrored: document.querySelector('.tile.local').classList.contains('mirrored') }
        }, before.id))
        if (before.facing !== 'user' || after.facing !== 'environment') throw new Error(`facing ${before.facing} -> ${after.facing}`)
        if (after.mirrored) throw new Error('the back camera is mirrored')
        for (const x of [a, b]) {
          const f0 = (await media(x.page))[p.id].frames
          await until(`${x.name} keeps decoding Pia`, async () => (await media(x.page))[p.id].frames > f0 + 10)
        }
        await p.page.close()
        for (const x of [a, b]) await until(`${x.name} dropped Pia`, () => x.page.evaluate((id) => !window.rtcdev.peers.has(id), p.id))
        return { before, after }
      } finally {
        await phone.close()
      }
    })
    const c = await open(context, 'call', 'Cid')
    await check('three-pages-full-mesh', async () => {
      const all = [a, b, c]
      for (const p of all) {
        await until(`${p.name} connected to two`, async () => {
          const m = Object.values(await media(p.page))
          return m.length === 2 && m.every((x) => x.state === 'connected' && x.frames > 0 && x.samples > 0)
        })
      }
      // Two receivers each: the uplink split in two, at full size.
      const uplink = {}
      for (const p of all) uplink[p.name] = await checkUplink(p.page, 3)
      return { uplink }
    })
    await check('leaver-disappears', async () => {
      await c.page.click('#leave')
      for (const p of [a, b]) {
        await until(`${p.name} dropped Cid`, () => p.page.evaluate((id) => !window.rtcdev.peers.has(id) && !document.querySelector(`.tile[data-peer="${id}"]`), c.id))
        await until(`${p.name} told Cid left`, () => p.page.evaluate(() => [...document.querySelectorAll('.toast')].some((t) => t.textContent === 'Cid left')))
      }
      await c.page.close()
      return {}
    })
    await check('reload-and-duplicate-tab', async () => {
      const d = await open(context, 'call', 'Dee')
      const connected = (p, id) => p.page.evaluate((x) => { const q = window.rtcdev.peers.get(x); return q && q.pc.connectionState === 'connected' }, id)
      for (const p of [a, b]) await until(`${p.name} connected to Dee`, () => connected(p, d.id))
      // A reload is someone new: the old tile goes at once (the page said goodbye), the
      // new one connects, and chat crosses both ways.
      const oldId = d.id
      await d.page.reload()
      await until('Dee rejoined', () => d.page.evaluate((old) => window.rtcdev.signaling.joined && window.rtcdev.signaling.id !== old, oldId))
      d.id = await d.page.evaluate(() => window.rtcdev.signaling.id)
      for (const p of [a, b]) {
        await until(`${p.name} dropped the old Dee`, () => p.page.evaluate((x) => !window.rtcdev.peers.has(x) && !document.querySelector(`.tile[data-peer="${x}"]`), oldId))
        await until(`${p.name} connected to the new Dee`, () => connected(p, d.id))
      }
      await until('chat open at Dee', () => d.page.evaluate(() => [...window.rtcdev.peers.values()].every((p) => p.chat && p.chat.readyState === 'open')))
      await d.page.evaluate(() => window.rtcdev.sendChat('back after reload'))
      await until('Ann reads the reloaded Dee', () => a.page.evaluate(() => document.getElementById('chat-log').textContent.includes('Dee: back after reload')))
      await a.page.evaluate(() => window.rtcdev.sendChat('welcome back'))
      await until('the reloaded Dee reads Ann', () => d.page.evaluate(() => document.getElementById('chat-log').textContent.includes('Ann: welcome back')))
      // A duplicated tab copies the session storage: it is someone new, and the
      // original keeps its place and its connections.
      const pcOfAnn = await b.page.evaluate((x) => { window.annPc = window.rtcdev.peers.get(x).pc; return true }, a.id)
      const storage = await a.page.evaluate(() => JSON.stringify(Object.entries(sessionStorage)))
      const dupPage = await context.newPage()
      await dupPage.addInitScript((entries) => { for (const [k, v] of JSON.parse(entries)) sessionStorage.setItem(k, v) }, storage)
      await dupPage.goto(a.page.url())
      await until('the duplicate joined', () => dupPage.evaluate(() => window.rtcdev.signaling.joined))
      const dupId = await dupPage.evaluate(() => window.rtcdev.signaling.id)
      if (dupId === a.id) throw new Error('the duplicate took the original\'s id')
      await until('Bob connected to the duplicate', () => connected(b, dupId))
      const kept = await b.page.evaluate((x) => window.rtcdev.peers.get(x) && window.rtcdev.peers.get(x).pc === window.annPc && window.annPc.connectionState === 'connected', a.id)
      if (!pcOfAnn || !kept) throw new Error('the original lost its connection to Bob')
      await dupPage.close()
      await d.page.close()
      for (const id of [dupId, d.id]) await until('the closed tabs dropped', () => b.page.evaluate((x) => !window.rtcdev.peers.has(x), id))
      return { reloaded: d.id, duplicate: dupId }
    })
    // Bob's hub connection goes silent while Ann reloads: Bob misses her goodbye and
    // holds a connection to the old Ann that no longer carries media. When Bob is back,
    // the room lists only the new Ann: the old one goes at once (a peer the room no
    // longer lists keeps a grace only while media from it still flows).
    await check('reload-while-away-drops-the-old-peer', async () => {
      const joins = () => b.page.evaluate(() => window.rtcdev.events.filter((e) => e.startsWith('in joined')).length)
      const joinsBefore = await joins()
      await silenceHub(b.page)
      await b.page.evaluate(() => { window.rtcdev.signaling.ws = null })
      const oldAnn = a.id
      await a.page.reload()
      await until('Ann rejoined', () => a.page.evaluate((old) => window.rtcdev.signaling.joined && window.rtcdev.signaling.id !== old, oldAnn))
      a.id = await a.page.evaluate(() => window.rtcdev.signaling.id)
      await until("Bob's media from the old Ann stopped", () => b.page.evaluate((x) => { const p = window.rtcdev.peers.get(x); return p && p.pc.connectionState !== 'connected' }, oldAnn), 30000, 250)
      // The hub notices Bob's old connection gone; Bob's page connects again.
      await b.page.evaluate(() => new Promise((resolve) => { window.awayWs.onclose = resolve; window.awayWs.close() }))
      await b.page.evaluate(() => window.rtcdev.signaling.connect())
      await until('Bob joined again', async () => (await joins()) > joinsBefore)
      const held = await b.page.evaluate((x) => ({ peer: window.rtcdev.peers.has(x), tile: !!document.querySelector(`.tile[data-peer="${x}"]`) }), oldAnn)
      if (held.peer || held.tile) throw new Error(`Bob still holds the old Ann once back: ${JSON.stringify(held)}`)
      const connected = (p, id) => p.page.evaluate((x) => { const q = window.rtcdev.peers.get(x); return q && q.pc.connectionState === 'connected' && window.rtcdev.peers.size === 1 }, id)
      await until('Bob connected to the new Ann', () => connected(b, a.id))
      await until('Ann connected to Bob', () => connected(a, b.id))
      return {}
    })
    // A page that dies (its renderer crashes: no goodbye, no DTLS close) leaves the room
    // while its media was flowing, so the others first give it the grace a page that only
    // lost its hub connection gets; once its media stops too, it is dropped after a few
    // seconds of `disconnected`, not at the end of the grace.
    await check('dead-page-dropped-when-its-media-stops', async () => {
      const g = await open(context, 'call', 'Gus')
      const connected = (p, id) => p.page.evaluate((x) => { const q = window.rtcdev.peers.get(x); return q && q.pc.connectionState === 'connected' }, id)
      for (const p of [a, b]) await until(`${p.name} connected to Gus`, () => connected(p, g.id))
      const cdp = await context.newCDPSession(g.page)
      cdp.send('Page.crash').catch(() => {})
      const graced = (p) => p.page.evaluate(() => window.rtcdev.events.some((e) => e.startsWith('signaling lost for Gus')))
      for (const p of [a, b]) await until(`${p.name} gives Gus a grace`, () => graced(p))
      const dropped = (p) => p.page.evaluate((x) => !window.rtcdev.peers.has(x) && !document.querySelector(`.tile[data-peer="${x}"]`) &&
        window.rtcdev.events.some((e) => e === 'Gus: gone from the room and no media for 4 s'), g.id)
      for (const p of [a, b]) await until(`${p.name} dropped Gus once his media stopped`, () => dropped(p), 30000, 250)
      await g.page.close().catch(() => {})
      const kept = await connected(b, a.id)
      if (!kept) throw new Error('Ann and Bob lost their own connection')
      return {}
    })
    await check('camera-in-use-says-so', async () => {
      // Another app holds the camera: the browser's getUserMedia fails with
      // NotReadableError for video (Chromium's fake devices cannot be busy, so the page
      // sees that error as it would), the microphone opens.
      const page = await context.newPage()
      await page.addInitScript(() => {
        localStorage.setItem('rtcdev.name', 'Fay')
        const md = navigator.mediaDevices
        const real = md.getUserMedia.bind(md)
        md.getUserMedia = (c) => (c && c.video) ? Promise.reject(new DOMException('Could not start video source', 'NotReadableError')) : real(c)
      })
      await page.goto(`${ORIGIN}/?room=call`)
      const text = await until('the in-use notice', () => page.evaluate(() => {
        const t = document.getElementById('notice').textContent
        return t.includes('in use by another app') && t
      }))
      if (!text.includes('hear you') || text.includes('receive-only')) throw new Error(`notice: ${text}`)
      const fay = await until('Fay joined', () => page.evaluate(() => window.rtcdev.signaling.joined && window.rtcdev.signaling.id))
      // And it is true: Ann hears Fay.
      await until('Ann hears Fay', async () => { const m = (await media(a.page))[fay]; return m && m.samples > 0 && m.audio > 0 })
      await page.close()
      await until('Fay gone at Ann', () => a.page.evaluate((x) => !window.rtcdev.peers.has(x), fay))
      return { text }
    })
    await check('phone-width-360', async () => {
      await a.page.setViewportSize({ width: 360, height: 740 })
      await sleep(300)
      const layout = await a.page.evaluate(() => {
        const controls = [...document.querySelectorAll('.controls button')].filter((b) => !b.hidden)
        const offscreen = controls.filter((b) => { const r = b.getBoundingClientRect(); return r.right > window.innerWidth + 1 || r.bottom > window.innerHeight + 1 })
        const own = document.querySelector('.tile.local').getBoundingClientRect()
        const far = document.querySelector('.tile:not(.local) video')
        return {
          scrollWidth: document.documentElement.scrollWidth,
          offscreen: offscreen.map((b) => b.id),
          videos: document.querySelectorAll('.tile video[playsinline]').length,
          ownWidth: Math.round(own.width),
          farFit: getComputedStyle(far).objectFit
        }
      })
      // One's own picture small in the corner; the far side's whole, not cropped.
      if (layout.ownWidth > 180 || layout.farFit !== 'contain') throw new Error(`phone layout: ${JSON.stringify(layout)}`)
      if (process.env.SCREENSHOT) await a.page.screenshot({ path: process.env.SCREENSHOT })
      if (layout.scrollWidth > 360 || layout.offscreen.length) throw new Error(`layout overflows at 360 px: ${JSON.stringify(layout)}`)
      await a.page.setViewportSize({ width: 1280, height: 720 })
      return layout
    })
    await check('hub-restart-survived', async () => {
      const before = await media(a.page)
      const bobBefore = Object.values(await media(b.page))[0]
      // The same RTCPeerConnection objects must carry the call across the restart.
      for (const p of [a, b]) await p.page.evaluate(() => { window.pcsBefore = [...window.rtcdev.peers.values()].map((x) => x.pc) })
      await stopServer()
      await until('Ann saw the drop', () => a.page.evaluate(() => !(window.rtcdev.signaling.ws && window.rtcdev.signaling.ws.readyState === 1)))
      // A server that stays away is said so, in words for anyone, and the notice goes
      // when it is back.
      const away = await until('the server-away notice', () => a.page.evaluate(() => {
        const n = document.getElementById('notice')
        return !n.hidden && n.textContent.includes('Cannot reach the rtcdev server') && n.textContent
      }))
      await startServer()
      await until('the notice gone', () => a.page.evaluate(() => {
        const n = document.getElementById('notice')
        return n.hidden || !n.textContent.includes('Cannot reach')
      }))
      // Both come back under their own ids: the restarted serve grants their resumes
      // (its tokens are signed with a key of its CA).
      for (const p of [a, b]) {
        await until(`${p.name} rejoined`, () => p.page.evaluate(() => window.rtcdev.signaling.ws.readyState === 1 && window.rtcdev.signaling.joined))
        const id = await p.page.evaluate(() => window.rtcdev.signaling.id)
        if (id !== p.id) throw new Error(`${p.name} came back as ${id}, not ${p.id}`)
      }
      // The call never stopped: same single peer, still connected, frames still coming.
      const f0 = Object.values(before)[0].frames
      const after = await until('media still flowing', async () => {
        const m = Object.values(await media(a.page))
        return m.length === 1 && m[0].state === 'connected' && m[0].frames > f0 + 10 && m[0].samples > Object.values(before)[0].samples && m
      })
      // Both ways, on the very same peer connections.
      await until('media still flowing at Bob', async () => {
        const m = Object.values(await media(b.page))
        return m.length === 1 && m[0].state === 'connected' && m[0].frames > bobBefore.frames + 10 && m[0].samples > bobBefore.samples
      })
      for (const p of [a, b]) {
        const same = await p.page.evaluate(() => {
          const now = [...window.rtcdev.peers.values()].map((x) => x.pc)
          return now.length === window.pcsBefore.length && now.every((pc, i) => pc === window.pcsBefore[i])
        })
        if (!same) throw new Error(`${p.name}: a new RTCPeerConnection after the hub restart`)
      }
      // And the hub works again: a newcomer connects to both.
      const d = await open(context, 'call', 'Dee')
      await until('Dee connected to two', async () => {
        const m = Object.values(await media(d.page))
        return m.length === 2 && m.every((x) => x.state === 'connected' && x.frames > 0)
      })
      return { framesBefore: f0, framesAfter: after[0].frames, away: away.slice(0, 60) }
    })
    // Nothing the calling pages asked for left their origin (no CDN, no font, no STUN
    // lookup over HTTP): every request went to the server that served them.
    // The page learns the room size from the hub (serve's default: eight), and the
    // join past the last place gets the room-full screen. Checked with a server of
    // rooms of four: eight pages with video in one mesh are more than this two-core
    // machine's Chromium carries (ICE consent checks starve and connections restart).
    await check('fifth-page-sees-room-full', async () => {
      const size = await a.page.evaluate(() => window.rtcdev.roomSize)
      if (size !== 8) throw new Error(`serve's page thinks rooms hold ${size}, not 8`)
      for (const pg of context.pages()) await pg.close()
      const small = await serve(BIN, ['--bind', '127.0.0.1', '--port', String(SMALL_PORT), '--quiet', '--no-qr', '--room-size', '4'])
      try {
        const four = []
        for (let i = 0; i < 4; i++) four.push(await open(context, 'full', `P${i}`, SMALL_ORIGIN))
        for (const p of four) {
          await until(`${p.name} connected to three`, async () => {
            const m = Object.values(await media(p.page))
            return m.length === 3 && m.every((x) => x.state === 'connected' && x.frames > 0 && x.samples > 0)
          }, 40000)
        }
        const learnt = await four[0].page.evaluate(() => window.rtcdev.roomSize)
        if (learnt !== 4) throw new Error(`the page thinks rooms hold ${learnt}`)
        // Three receivers: a third of the budget each, captured smaller.
        const uplink = await checkUplink(four[0].page, 4)
        const fifth = await context.newPage()
        recordRequests(fifth)
        await fifth.goto(`${SMALL_ORIGIN}/?room=full`)
        const text = await until('the room-full screen', () => fifth.evaluate(() => !document.getElementById('full').hidden && document.getElementById('call').hidden && document.getElementById('full').textContent))
        if (!text.includes('4 people')) throw new Error(`the screen does not say the size: ${text}`)
        const held = await fifth.evaluate(() => window.rtcdev.peers.size)
        if (held !== 0) throw new Error(`the fifth page holds ${held} peers`)
        for (const p of four) {
          const n = await p.page.evaluate(() => window.rtcdev.peers.size)
          if (n !== 3) throw new Error(`${p.name} holds ${n} peers after the fifth tried`)
        }
        await fifth.close()
        for (const p of four) await p.page.close()
        return { text: text.replace(/\s+/g, ' ').trim().slice(0, 120), uplink }
      } finally {
        await stop(small)
      }
    })
    // axe-core on the lobby, the call and the phone's /join page: no serious or critical
    // violation (contrast, names, keyboard access, ...).
    await check('join-page-per-device', async () => {
      // The phone link's page as each kind of device opens it before it trusts the CA:
      // its own steps first, the CA's fingerprint shown, nothing wider than the screen.
      const devices = {
        iphone: { ua: 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1', width: 390, touch: 5, want: 'ios' },
        ipad: { ua: 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15', width: 820, touch: 5, want: 'ios' },
        android: { ua: 'Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36', width: 412, touch: 5, want: 'android' },
        desktop: { ua: 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36', width: 1280, touch: 0, want: 'desktop' }
      }
      const seen = {}
      for (const [name, d] of Object.entries(devices)) {
        const ctx = await browser.newContext({ userAgent: d.ua, viewport: { width: d.width, height: 800 }, hasTouch: d.touch > 0 })
        await ctx.addInitScript((n) => Object.defineProperty(Navigator.prototype, 'maxTouchPoints', { get: () => n }), d.touch)
        const page = await ctx.newPage()
        await page.route('**/trust-check', (route) => route.abort())
        await page.goto(`http://localhost:${PORT}/join?room=ua`)
        const got = await until(`${name}: the page laid out`, () => page.evaluate(() => {
          const first = document.querySelector('#steps [data-platform]')
          const fp = document.getElementById('fingerprint').textContent.trim()
          return first && { first: first.dataset.platform, fp, wide: document.documentElement.scrollWidth > window.innerWidth + 1 }
        }))
        await ctx.close()
        if (got.first !== d.want) throw new Error(`${name}: the ${got.first} steps come first`)
        if (!/^[0-9A-F]{2}([: ]?[0-9A-F]{2}){31}$/.test(got.fp.replace(/\s+/g, ' '))) throw new Error(`${name}: fingerprint ${got.fp}`)
        if (got.wide) throw new Error(`${name}: the page is wider than the screen`)
        seen[name] = got.first
      }
      return { seen }
    })
    await check('accessibility-axe', async () => {
      const axe = readFileSync(new URL('./node_modules/axe-core/axe.min.js', import.meta.url), 'utf8')
      const audit = async (page) => {
        await page.addScriptTag({ content: axe })
        return page.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] })).violations
          .filter((v) => v.impact === 'serious' || v.impact === 'critical')
          .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`))
      }
      const found = {}
      const lobby = await context.newPage()
      await lobby.goto(`${ORIGIN}/`)
      await until('the lobby', () => lobby.evaluate(() => !document.getElementById('lobby').hidden))
      found.lobby = await audit(lobby)
      await lobby.close()
      const call = await open(context, 'axe', 'Axe')
      found.call = await audit(call.page)
      await call.page.close()
      // The join page as a phone sees it before it trusts the CA (the trust check fails).
      const join = await context.newPage()
      await join.route('**/trust-check', (route) => route.abort())
      await join.goto(`http://localhost:${PORT}/join?room=axe`)
      found.join = await audit(join)
      await join.close()
      // The ICE test page, with no server to test (this serve runs no TURN): it says so.
      const ice = await context.newPage()
      await ice.goto(`${ORIGIN}/ice`)
      await until('the ICE servers filled in', () => ice.evaluate(() => document.getElementById('servers').value !== ''))
      await ice.click('#run')
      await until('the ICE test done', () => ice.evaluate(() => window.iceResults))
      const said = await ice.evaluate(() => document.getElementById('verdicts').textContent)
      if (!said.includes('No STUN or TURN server to test')) throw new Error(`ICE page without servers: ${said}`)
      found.ice = await audit(ice)
      await ice.close()
      const bad = Object.entries(found).filter(([, v]) => v.length)
      if (bad.length) throw new Error(`accessibility violations: ${JSON.stringify(Object.fromEntries(bad))}`)
      return { pages: Object.keys(found) }
    })
    await check('no-request-leaves-the-origin', async () => {
      const own = (u) => [PORT, SMALL_PORT].some((port) => u.startsWith(`https://localhost:${port}/`) || u.startsWith(`wss://localhost:${port}/`)) || u.startsWith('data:') || u.startsWith('blob:')
      const foreign = requested.filter((u) => !own(u))
      if (foreign.length) throw new Error(`requests outside the origin: ${foreign.join(', ')}`)
      if (requested.length < 10) throw new Error(`only ${requested.length} requests recorded`)
      return { requests: requested.length }
    })
    // The local CA is name-constrained, installed in Chromium's NSS database (no flag to
    // ignore certificate errors anywhere), and Chromium trusts its leaves for localhost
    // and for a private address.
    await check('constrained-ca-trusted', async () => {
      const ca = `${process.env.HOME}/.local/share/rtcdev/rootCA.pem`
      const ext = execFileSync('openssl', ['x509', '-noout', '-ext', 'nameConstraints', '-in', ca]).toString()
      if (!ext.includes('DNS:localhost') || !ext.includes('IP:10.0.0.0')) throw new Error(`no name constraints: ${ext}`)
      const lan = await serve(BIN, ['--bind', '10.99.0.1', '--port', '8444', '--quiet', '--no-qr'])
      try {
        const page = await context.newPage()
        const seen = {}
        for (const url of [`https://localhost:${PORT}/healthz`, 'https://10.99.0.1:8444/healthz']) {
          const res = await page.goto(url)
          if (!res || !res.ok()) throw new Error(`${url}: ${res && res.status()}`)
          seen[url] = res.status()
        }
        await page.close()
        return { seen }
      } finally {
        await stop(lan)
      }
    })
    // A real vite dev server behind `rtcdev serve --proxy`: the page loads through
    // rtcdev's HTTPS, vite's HMR WebSocket goes through rtcdev too, and a stylesheet
    // edited on disk reaches the open page as a hot update (no reload), on every URL
    // rtcdev prints.
    await check('vite-hmr-through-proxy', async () => {
      const { createServer } = await import('vite')
      const fs = await import('node:fs')
      const path = await import('node:path')
      const os = await import('node:os')
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rtcdev-vite-'))
      fs.writeFileSync(path.join(dir, 'index.html'), '<!doctype html><title>vite app</title><p id="x">hello</p><script type="module" src="/main.js"></script>')
      fs.writeFileSync(path.join(dir, 'main.js'), "import './style.css'\n")
      const css = path.join(dir, 'style.css')
      fs.writeFileSync(css, '#x { color: rgb(255, 0, 0); }\n')
      const vite = await createServer({ root: dir, logLevel: 'silent', configFile: false, server: { host: '127.0.0.1', port: 5173, strictPort: true } })
      await vite.listen()
      const proxy = await serve(BIN, ['--bind', '127.0.0.1', '--port', '8445', '--quiet', '--no-qr', '--proxy', 'http://127.0.0.1:5173'])
      try {
        const seen = {}
        let color = 0
        for (const origin of ['https://localhost:8445', 'https://127.0.0.1:8445']) {
          const page = await context.newPage()
          // Vite's client says so on the console once its HMR WebSocket is open: an
          // edit made before that would be missed on a loaded machine.
          let hmr = false
          page.on('console', (m) => { if (m.text().includes('[vite] connected')) hmr = true })
          await page.goto(`${origin}/`)
          const colorOf = () => page.evaluate(() => getComputedStyle(document.getElementById('x')).color)
          await until(`${origin}: the page's style`, async () => (await colorOf()) === 'rgb(255, 0, 0)' || (await colorOf()) === `rgb(0, 0, ${color})`)
          await until(`${origin}: vite's HMR connected`, () => hmr)
          await page.evaluate(() => { window.notReloaded = true })
          color += 100
          fs.writeFileSync(css, `#x { color: rgb(0, 0, ${color}); }\n`)
          await until(`${origin}: the hot update`, async () => (await colorOf()) === `rgb(0, 0, ${color})`)
          if (!(await page.evaluate(() => window.notReloaded === true))) throw new Error(`${origin}: the page reloaded instead of a hot update`)
          // Without --inspect the app's HTML arrives as the upstream sent it.
          const html = await page.evaluate(async () => (await fetch('/')).text())
          if (html.includes('/inspect/agent.js')) throw new Error('the agent was put into a page without --inspect')
          seen[origin] = await colorOf()
          await page.close()
        }
        return { seen }
      } finally {
        await stop(proxy)
        await vite.close()
        fs.rmSync(dir, { recursive: true, force: true })
      }
    })
    await check('hub-errors-in-words', async () => {
      // A page that floods the hub is slowed down, says so in words, and stays in the call.
      const f = await open(context, 'flood', 'Flo')
      await f.page.evaluate(() => { for (let i = 0; i < 400; i++) window.rtcdev.signaling.send({ type: 'ping' }) })
      const said = await until('the rate-limit toast', () => f.page.evaluate(() => [...document.querySelectorAll('.toast')].map((t) => t.textContent).find((t) => t.includes('Too many messages'))))
      await sleep(1500)
      await until('Flo still in the call', () => f.page.evaluate(() => window.rtcdev.signaling.joined && window.rtcdev.signaling.ws.readyState === 1))
      await f.page.close()
      return { said }
    })
    await check('dtls-failure-named', async () => {
      // Eve's browser is given a certificate fingerprint that is not Dee's: ICE finds
      // the path, DTLS fails on it, and serve says so.
      const ctx = await browser.newContext({ permissions: ['camera', 'microphone'] })
      await wrongFingerprint(ctx)
      const d = await open(context, 'dtls', 'Dee')
      const e = await open(ctx, 'dtls', 'Eve')
      const verdict = await until('the DTLS verdict', () => server.printed.split('\n').find((l) => l.includes('DTLS handshake failed')), 30000, 250)
      await d.page.close()
      await ctx.close()
      return { verdict, eve: e.id }
    })
    await check('proxied-app-inspected', async () => {
      // The developer's own app behind `serve --proxy --inspect`: two peer connections
      // of its own in one page show in /inspect, and the app sees the browser's own
      // RTCPeerConnection (same prototype, instanceof).
      const http = await import('node:http')
      const appHtml = `<!doctype html><html><head><title>my app</title></head><body><script>
        (async () => {
          const a = new RTCPeerConnection()
          const b = new RTCPeerConnection()
          window.sameProto = Object.getPrototypeOf(a) === RTCPeerConnection.prototype && a instanceof RTCPeerConnection && typeof RTCPeerConnection.generateCertificate === 'function'
          a.onicecandidate = (e) => { if (e.candidate) b.addIceCandidate(e.candidate) }
          b.onicecandidate = (e) => { if (e.candidate) a.addIceCandidate(e.candidate) }
          const stream = await navigator.mediaDevices.getUserMedia({ video: true })
          for (const t of stream.getTracks()) a.addTrack(t, stream)
          await a.setLocalDescription()
          await b.setRemoteDescription(a.localDescription)
          await b.setLocalDescription()
          await a.setRemoteDescription(b.localDescription)
          window.appPcs = [a, b]
        })()
      </script></body></html>`
      const upstream = http.createServer((req, res) => {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
        res.end(appHtml)
      })
      await new Promise((resolve) => upstream.listen(5174, '127.0.0.1', resolve))
      const proxy = await serve(BIN, ['--bind', '127.0.0.1', '--port', '8447', '--quiet', '--no-qr', '--proxy', 'http://127.0.0.1:5174', '--inspect'])
      try {
        const app = await context.newPage()
        await app.goto('https://localhost:8447/')
        await until('the app connected its peers', () => app.evaluate(() => window.appPcs && window.appPcs.every((pc) => pc.connectionState === 'connected')))
        const first = await app.evaluate(() => document.head.firstElementChild && document.head.firstElementChild.getAttribute('src'))
        if (first !== '/inspect/agent.js') throw new Error(`first in the head: ${first}`)
        if (!(await app.evaluate(() => window.sameProto))) throw new Error('the app saw another RTCPeerConnection')
        const view = await context.newPage()
        await view.goto('https://localhost:8447/inspect')
        const seen = await until('the app\'s connections in /inspect', () => view.evaluate(() => {
          const room = window.inspectorState && window.inspectorState.rooms['app /']
          const pages = room ? Object.values(room) : []
          const conns = pages.length === 1 ? Object.values(pages[0].connections) : []
          const live = conns.filter((c) => c.state === 'connected' && c.summary && c.summary.path && c.remote.host > 0)
          return live.length === 2 && conns.some((c) => c.summary.kbpsOut > 0) && { name: pages[0].name, paths: live.map((c) => c.summary.path) }
        }))
        if (seen.name !== 'my app') throw new Error(`page name ${seen.name}`)
        await view.close()
        await app.close()
        return seen
      } finally {
        await stop(proxy)
        upstream.close()
      }
    })
  } finally {
    await browser.close()
  }
}

async function bench (runs) {
  const times = []
  const phases = []
  for (let i = 0; i < runs; i++) {
    const { browser, context } = await launch()
    try {
      const room = `bench-${i}`
      const a = await open(context, room, 'A')
      const b = await open(context, room, 'B')
      // From the second page's navigation (the join that starts the call) to its first decoded frame.
      times.push(await firstFrameMs(b))
      // Where that time went, in the page's own clock (ms since its navigation).
      const p = await until('the first-frame mark', () => b.page.evaluate(() => {
        const m = window.rtcdev.marks
        const nav = performance.getEntriesByType('navigation')[0]
        const fetched = Object.fromEntries(performance.getEntriesByType('resource').map((r) => [r.name.replace(location.origin, ''), [Math.round(r.startTime), Math.round(r.responseEnd)]]))
        const peer = [...window.rtcdev.peers.values()][0]
        return m && m['first-frame'] && { firstFrame: peer && peer.firstFrame, html: Math.round(nav.responseEnd), domContentLoaded: Math.round(nav.domContentLoadedEventStart), ...m, fetched }
      }), 5000).catch(() => null)
      if (p) phases.push(p)
      out({ run: i, firstFrameMs: times[i], phases: p })
      await a.page.close()
    } finally {
      await browser.close()
    }
  }
  const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]
  const names = ['html', 'script', 'media', 'welcome', 'joined', 'negotiated', 'connected', 'track', 'first-frame']
  out({
    bench: 'join-to-first-remote-frame',
    runs: times,
    medianMs: median(times),
    medianPhasesMs: Object.fromEntries(names.map((n) => [n, median(phases.map((p) => p[n]).filter((x) => x != null))]))
  })
}

const [mode = 'checks', arg] = process.argv.slice(2)
execFileSync(BIN, ['cert', '--install'], { env: { ...process.env, RTCDEV_TRUST_STORES: 'nss' }, stdio: 'ignore' })
await startServer()
let failed = false
try {
  if (mode === 'bench') await bench(Number(arg || 5))
  else await checks()
} catch (err) {
  failed = true
  out({ log: String(err && err.stack || err) })
} finally {
  if (server) await stopServer()
}
process.exit(failed ? 1 : 0)
