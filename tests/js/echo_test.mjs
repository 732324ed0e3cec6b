// The echo peer ("test alone"): one Chromium page in a room of its own asks rtcdev for
// its echo, and decodes its own video and audio coming back, over host candidates and,
// with `&relay`, through rtcdev's TURN; the echo echoes chat, leaves with the page, and
// leaves at its time limit. Runs inside the namespace netns.sh makes; `serve` listens on
// every address there (loopback and the veth pair). Prints one JSON object a line.
// Usage: unshare --net sh netns.sh node echo_test.mjs
import { execFileSync } from 'node:child_process'
import { out, until, media, launch, check, serve, stop, runChecks } from './lib.mjs'

const BIN = process.env.RTCDEV_BIN
const PORT = 8450
const ORIGIN = `https://localhost:${PORT}`
const SHORT_PORT = 8451

// The echo's connection at `page`: what arrives from it, and the selected pair's types.
function echoSide (page) {
  return page.evaluate(async () => {
    const echo = [...window.rtcdev.peers.values()].find((p) => p.meta && p.meta.echo)
    if (!echo) return null
    const stats = await echo.pc.getStats()
    let frames = 0; let samples = 0; let width = 0; let sent = 0; let pair = null
    const byId = new Map()
    stats.forEach((s) => byId.set(s.id, s))
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') { frames += s.framesDecoded || 0; width = s.frameWidth || width }
      if (s.type === 'outbound-rtp' && s.kind === 'video') sent = s.frameWidth || sent
      if (s.type === 'inbound-rtp' && s.kind === 'audio') samples += s.totalSamplesReceived || 0
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId)
    })
    const local = pair && byId.get(pair.localCandidateId)
    const remote = pair && byId.get(pair.remoteCandidateId)
    return {
      name: echo.meta.name,
      state: echo.pc.connectionState,
      frames,
      samples,
      width,
      sentWidth: sent,
      local: local && local.candidateType,
      remote: remote && remote.candidateType
    }
  })
}

async function openEcho (context, room, flags = '') {
  const page = await context.newPage()
  page.on('pageerror', (e) => out({ log: `page error ${e}` }))
  await page.goto(`${ORIGIN}/?room=${room}&echo${flags}`)
  return page
}

// Video frames and audio samples from the echo keep growing.
async function decodesItself (page, what) {
  const first = await until(`${what}: the echo's video and audio decoded`, async () => {
    const e = await echoSide(page)
    return e && e.state === 'connected' && e.frames > 10 && e.samples > 0 && e
  })
  return until(`${what}: still decoded`, async () => {
    const e = await echoSide(page)
    return e.frames > first.frames + 20 && e.samples > first.samples + 16000 && e
  })
}

async function checks (server) {
  const { browser, context } = await launch()
  try {
    const page = await openEcho(context, 'alone')
    await check('echo-sends-own-media-back', async () => {
      await decodesItself(page, 'host')
      // The picture is what the page sends, at the size it sends (the encoder adapts
      // its size at first); the path is direct.
      const e = await until('the echoed size is the sent size', async () => { const x = await echoSide(page); return x.width > 0 && x.width === x.sentWidth && x })
      if (e.local === 'relay' || e.remote === 'relay') throw new Error(`relayed without &relay: ${JSON.stringify(e)}`)
      await until('serve says the echo joined', () => /echo: joined room alone for Chrome \d+ on Linux/.test(server.printed))
      return { echo: e }
    })
    await check('echo-echoes-chat', async () => {
      await until('the echo greeting', () => page.evaluate(() => document.getElementById('chat-log').textContent.includes('Echo (rtcdev): You see and hear yourself')))
      await page.evaluate(() => window.rtcdev.sendChat('ping 42'))
      await until('the chat line back', () => page.evaluate(() => document.getElementById('chat-log').textContent.includes('Echo (rtcdev): ping 42')))
      return {}
    })
    await check('one-echo-per-room', async () => {
      const again = await page.evaluate(async () => (await fetch('/echo', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ room: 'alone' }) })).json())
      const echoes = await page.evaluate(() => [...window.rtcdev.peers.values()].filter((p) => p.meta.echo).length)
      if (!again.already || echoes !== 1) throw new Error(`second ask ${JSON.stringify(again)}, ${echoes} echoes`)
      const empty = await page.evaluate(async () => { const r = await fetch('/echo', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ room: 'nobody-here' }) }); return { status: r.status, text: await r.text() } })
      if (empty.status !== 409 || !empty.text.includes('nobody is in room nobody-here')) throw new Error(`empty room: ${JSON.stringify(empty)}`)
      return { empty }
    })
    await check('echo-through-turn', async () => {
      const relayed = await openEcho(context, 'alone-relay', '&relay')
      const e = await decodesItself(relayed, 'relay')
      if (e.local !== 'relay') throw new Error(`not through TURN: ${JSON.stringify(e)}`)
      const health = await relayed.evaluate(async () => (await fetch('/healthz')).json())
      if (!(health.turn && health.turn.allocations >= 1)) throw new Error(`no TURN allocation: ${JSON.stringify(health.turn)}`)
      await until('serve says relay only', () => /echo: joined room alone-relay for Chrome .* relay only/.test(server.printed))
      await relayed.close()
      return { echo: e, turn: health.turn }
    })
    await check('echo-leaves-with-the-page', async () => {
      await page.close()
      await until('serve says the echo left', () => /echo: left room alone \(no page is left in the room\)/.test(server.printed))
      await until('the relay echo left too', () => /echo: left room alone-relay \(no page is left in the room\)/.test(server.printed))
      const probe = await context.newPage()
      await probe.goto(`${ORIGIN}/healthz`)
      const health = await until('no peer left on the hub', async () => { const h = JSON.parse(await probe.textContent('body')); return h.peers === 0 && h })
      return { peers: health.peers }
    })
    await check('echo-time-limit', async () => {
      // Long enough for the echo's chat channel to open first on a loaded machine (its
      // goodbye goes over it): 4 s was not, once in CI.
      const short = await serve(BIN, ['--port', String(SHORT_PORT), '--quiet', '--no-qr'], { RTCDEV_TEST_ECHO_LIMIT_SECS: '15' })
      try {
        const p = await context.newPage()
        await p.goto(`https://localhost:${SHORT_PORT}/?room=short&echo`)
        await until('the echo joined', () => p.evaluate(() => [...window.rtcdev.peers.values()].some((x) => x.meta.echo)))
        await until('the echo greets in the chat', () => p.evaluate(() => document.getElementById('chat-log').textContent.includes('Echo (rtcdev): You see and hear yourself')))
        await until('the echo says it leaves', () => p.evaluate(() => document.getElementById('chat-log').textContent.includes("The echo's 15 seconds are up")), 30000)
        await until('its tile goes', () => p.evaluate(() => ![...window.rtcdev.peers.values()].some((x) => x.meta.echo)))
        await until('serve says why', () => /echo: left room short \(its 15 seconds were up\)/.test(short.printed))
        return {}
      } finally {
        await stop(short)
      }
    })
  } finally {
    await browser.close()
  }
}

execFileSync(BIN, ['cert', '--install'], { env: { ...process.env, RTCDEV_TRUST_STORES: 'nss' }, stdio: 'ignore' })
const server = await serve(BIN, ['--port', String(PORT), '--quiet', '--no-qr', '--turn'])
await runChecks(server, async () => { try { await checks(server) } finally { out({ printed: server.printed }) } })
