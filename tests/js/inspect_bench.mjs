// What the room inspector costs and how fast it speaks, with Debian's headless Chromium
// against `rtcdev serve` inside the namespace netns.sh makes (run by bench/inspect.sh):
// - a page's main-thread CPU in a 2-peer call with reporting and without it (the
//   report route answered 404, which stops a page's reporter), same run, alternating;
// - serve's CPU and RSS with 8 pages (4 calls of 2) reporting, and without;
// - the time from a connection failing in the page (a DTLS failure: one page is given
//   a wrong fingerprint) to its verdict line in serve's output.
// Prints one JSON object a line.
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { out, sleep, until, media, launch, serve, stop, wrongFingerprint } from './lib.mjs'

const BIN = process.env.RTCDEV_BIN
const PORT = 8460
const ORIGIN = `https://localhost:${PORT}`
const SECONDS = Number(process.env.SECONDS_PER_RUN || 20)
const ROUNDS = Number(process.env.ROUNDS || 3)

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

function serveCpuSeconds (pid) {
  // utime and stime, fields 14 and 15 of /proc/PID/stat, in clock ticks (100 a second).
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

function rssKb (pid) {
  return Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1])
}

async function open (context, room, name) {
  const page = await context.newPage()
  await page.addInitScript((n) => localStorage.setItem('rtcdev.name', n), name)
  await page.goto(`${ORIGIN}/?room=${room}`)
  await until(`${name} joined`, () => page.evaluate(() => !!(window.rtcdev.signaling && window.rtcdev.joinedAt)))
  return page
}

// Main-thread task time of `page` (Chromium's own metric), in seconds.
async function taskSeconds (cdp) {
  const { metrics } = await cdp.send('Performance.getMetrics')
  return metrics.find((m) => m.name === 'TaskDuration').value
}

// One run: 4 calls of 2 pages; the first page's CPU and serve's CPU over SECONDS.
async function run (server, report, round) {
  const { browser, context } = await launch()
  try {
    if (!report) await context.route('**/inspect/report', (r) => r.fulfill({ status: 404, body: '' }))
    const pages = []
    for (let i = 0; i < 4; i++) {
      const room = `bench-${round}-${report ? 'r' : 'n'}-${i}`
      pages.push(await open(context, room, `A${i}`), await open(context, room, `B${i}`))
    }
    for (const p of pages) {
      await until('media flowing', async () => Object.values(await media(p)).some((m) => m.state === 'connected' && m.frames > 10))
    }
    const cdp = await context.newCDPSession(pages[0])
    await cdp.send('Performance.enable')
    await sleep(3000)
    const [page0, serve0] = [await taskSeconds(cdp), serveCpuSeconds(server.pid)]
    await sleep(SECONDS * 1000)
    const [page1, serve1] = [await taskSeconds(cdp), serveCpuSeconds(server.pid)]
    const reported = await pages[0].evaluate(() => !!(window.rtcdev.reporter && !window.rtcdev.reporter.stopped))
    if (reported !== report) throw new Error(`reporting is ${reported}, wanted ${report}`)
    return {
      pageCpuPct: Math.round((page1 - page0) / SECONDS * 1000) / 10,
      serveCpuPct: Math.round((serve1 - serve0) / SECONDS * 1000) / 10,
      serveRssKb: rssKb(server.pid)
    }
  } finally {
    await browser.close()
  }
}

// Failure (seen in the page, polled every 20 ms) to verdict line (seen on serve's stdout).
async function verdictDelay (server, i) {
  const { browser, context } = await launch()
  try {
    const bad = await browser.newContext({ permissions: ['camera', 'microphone'] })
    await wrongFingerprint(bad)
    const room = `dtls-${i}`
    let verdictAt = null
    const watch = (d) => { if (!verdictAt && String(d).includes(`room ${room}:`) && String(d).includes('DTLS handshake failed')) verdictAt = Date.now() }
    server.stdout.on('data', watch)
    await open(context, room, 'Dee')
    const eve = await open(bad, room, 'Eve')
    const failedAt = await until('the failure in the page', () => eve.evaluate(() => [...window.rtcdev.peers.values()].some((p) => p.pc.connectionState === 'failed') && Date.now()), 30000, 20)
    await until('the verdict line', () => verdictAt, 30000, 20)
    server.stdout.off('data', watch)
    return verdictAt - failedAt
  } finally {
    await browser.close()
  }
}

execFileSync(BIN, ['cert', '--install'], { env: { ...process.env, RTCDEV_TRUST_STORES: 'nss' }, stdio: 'ignore' })
const server = await serve(BIN, ['--bind', '127.0.0.1', '--port', String(PORT), '--quiet', '--no-qr'])
try {
  const runs = { with: [], without: [] }
  for (let round = 0; round < ROUNDS; round++) {
    for (const report of [false, true]) {
      const r = await run(server, report, round)
      runs[report ? 'with' : 'without'].push(r)
      out({ round, reporting: report, ...r })
    }
  }
  const m = (k, key) => median(runs[k].map((r) => r[key]))
  out({
    bench: 'inspector-cost',
    seconds: SECONDS,
    rounds: ROUNDS,
    pageCpuPct: { with: m('with', 'pageCpuPct'), without: m('without', 'pageCpuPct') },
    serveCpuPct8Pages: { with: m('with', 'serveCpuPct'), without: m('without', 'serveCpuPct') },
    serveRssKbAfter: { with: m('with', 'serveRssKb'), without: m('without', 'serveRssKb') }
  })
  const delays = []
  for (let i = 0; i < 5; i++) delays.push(await verdictDelay(server, i))
  out({ bench: 'failure-to-verdict', ms: delays, medianMs: median(delays) })
} finally {
  await stop(server)
}
