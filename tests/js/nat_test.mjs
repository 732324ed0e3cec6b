// The calling page between two Chromium browsers behind their own NAT routers, with
// `rtcdev serve --turn` on the lab's internet (natlab.sh). A phone changes networks (its
// link down for 3 s, back on another router with a new address) and a phone is away for
// 40 s (the same address after): both sides decode each other's video again, on a path
// through the new address, with one tile for the other and no stale one. Prints one JSON
// object a line. Usage: unshare --net sh natlab.sh node nat_test.mjs
import { spawn, execFile, execFileSync } from 'node:child_process'
import { promisify } from 'node:util'
import { out, sleep, until, launch, check, STEP_TIMEOUT_MS } from './lib.mjs'

const BIN = process.env.RTCDEV_BIN
const LAB = process.env.LAB
const ORIGIN = 'https://10.200.0.1:8443'
// How long after the link is back both sides must decode again. A dead hub connection
// is noticed by the page's own keepalive and by the browser's network events, ICE is
// restarted over the resumed hub place: seconds, well inside the 30 s the hub's
// heartbeat took before.
const RECOVERY_LIMIT_MS = 20000
const run = promisify(execFile)

function startServer () {
  const server = spawn(BIN, ['serve', '--bind', '0.0.0.0', '--port', '8443', '--turn', '--quiet', '--no-qr', '--room', 'lobby'], {
    stdio: ['ignore', 'pipe', 'inherit']
  })
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not start')), STEP_TIMEOUT_MS)
    server.stdout.on('data', (d) => {
      if (String(d).includes('Local:')) { clearTimeout(timer); resolve(server) }
    })
    server.on('exit', (code) => reject(new Error(`server exited ${code}`)))
  })
}

async function open (client, name) {
  const { browser, context } = await launch(`${LAB}/${client}-chromium`)
  const page = await context.newPage()
  page.on('pageerror', (e) => out({ log: `${name}: page error ${e}` }))
  await page.addInitScript((n) => localStorage.setItem('rtcdev.name', n), name)
  await page.goto(`${ORIGIN}/?room=nat`)
  await until(`${name} joined`, () => page.evaluate(() => !!(window.rtcdev.signaling && window.rtcdev.joinedAt)))
  return { browser, page, name }
}

// What a page has of the call: its peers, remote tiles, video frames decoded in all, and
// the selected candidate pair of each connection.
function state (page) {
  return page.evaluate(async () => {
    let frames = 0
    const paths = []
    for (const [, p] of window.rtcdev.peers) {
      const stats = await p.pc.getStats()
      let pairId = null
      stats.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0
        if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId
      })
      const pair = pairId && stats.get(pairId)
      const end = (id) => {
        const c = id && stats.get(id)
        return c ? { type: c.candidateType, address: c.address, protocol: c.protocol } : null
      }
      paths.push(pair ? { state: pair.state, local: end(pair.localCandidateId), remote: end(pair.remoteCandidateId) } : null)
    }
    return {
      peers: window.rtcdev.peers.size,
      tiles: document.querySelectorAll('.tile:not(.local)').length,
      frames,
      paths
    }
  })
}

// Both pages decode frames again: each one's count grows by at least 10 over a second,
// with exactly one peer and one remote tile on each.
async function bothDecoding (a, b, what, timeout) {
  const since = await Promise.all([a, b].map((p) => p.page.evaluate(() => window.rtcdev.events.length)))
  return until(what, async () => {
    const [a1, b1] = [await state(a.page), await state(b.page)]
    await sleep(1000)
    const [a2, b2] = [await state(a.page), await state(b.page)]
    const one = (s) => s.peers === 1 && s.tiles === 1
    return one(a2) && one(b2) && a2.frames - a1.frames >= 10 && b2.frames - b1.frames >= 10 && { a: a2, b: b2 }
  }, timeout, 200).catch(async (err) => {
    // What each page did meanwhile, for the failure report.
    for (const [i, p] of [a, b].entries()) {
      const events = await p.page.evaluate((n) => window.rtcdev.events.slice(n), since[i]).catch((e) => String(e))
      out({ log: `${p.name}: ${JSON.stringify(await state(p.page).catch(String))}`, events })
    }
    throw err
  })
}

async function checks () {
  const a = await open('a', 'Ann')
  const b = await open('b', 'Bob')
  try {
    await check('nat-call-connects', async () => {
      const s = await bothDecoding(a, b, 'both sides decoding across the NATs', STEP_TIMEOUT_MS)
      return { a: s.a.paths, b: s.b.paths }
    })
    await check('network-switch-recovers', async () => {
      const before = (await state(a.page)).paths
      const idBefore = await a.page.evaluate(() => window.rtcdev.signaling.id)
      await run(`${LAB}/switch-a`, ['3'])
      const back = Date.now()
      const s = await bothDecoding(a, b, 'both sides decoding after the network switch', RECOVERY_LIMIT_MS)
      const ms = Date.now() - back
      // The path really moved: a's end is its new address (host 192.168.3.10, or the
      // new router's 10.200.0.13 as seen from outside).
      const local = s.a.paths[0] && s.a.paths[0].local
      if (!local || !['192.168.3.10', '10.200.0.13'].includes(local.address) && local.type !== 'relay') {
        throw new Error(`a's path did not move: ${JSON.stringify(s.a.paths)}`)
      }
      const idAfter = await a.page.evaluate(() => window.rtcdev.signaling.id)
      return { recoveredMsAfterLinkBack: ms, before, after: s.a.paths, sameHubId: idBefore === idAfter }
    })
    await check('outage-40s-recovers', async () => {
      await run(`${LAB}/cut-a`, ['40'])
      const back = Date.now()
      const s = await bothDecoding(a, b, 'both sides decoding after a 40 s outage', RECOVERY_LIMIT_MS)
      return { recoveredMsAfterLinkBack: Date.now() - back, a: s.a.paths, b: s.b.paths }
    })
  } finally {
    await a.browser.close()
    await b.browser.close()
  }
}

execFileSync(BIN, ['cert', '--install'], { env: { ...process.env, RTCDEV_TRUST_STORES: 'nss' }, stdio: 'ignore' })
const server = await startServer()
let failed = false
try {
  await checks()
} catch (err) {
  failed = true
  out({ log: String(err && err.stack || err) })
} finally {
  const exited = new Promise((resolve) => server.on('exit', resolve))
  server.kill('SIGTERM')
  await exited
}
process.exit(failed ? 1 : 0)
