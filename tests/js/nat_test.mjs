// The calling page between two Chromium browsers behind their own NAT routers, with
// `rtcdev serve --turn` on the lab's internet (natlab.sh). A phone changes networks (its
// link down for 3 s, back on another router with a new address) and a phone is away for
// 40 s (the same address after): both sides decode each other's video again, on a path
// through the new address, with one tile for the other and no stale one. Then b's network
// blocks UDP (the call goes through TURN over TCP) and TURN's port as well (both pages
// say there is no connection); then the faults the room inspector must name: lost
// candidates, a wrong TURN password on a relay-only page, no STUN or TURN server behind
// NAT. Prints one JSON object a line. Usage: unshare --net sh natlab.sh node nat_test.mjs
import { execFile, execFileSync } from 'node:child_process'
import { promisify } from 'node:util'
import { readFileSync } from 'node:fs'
import https from 'node:https'
import { out, sleep, until, launch, check, serve, runChecks, STEP_TIMEOUT_MS } from './lib.mjs'

const BIN = process.env.RTCDEV_BIN
const LAB = process.env.LAB
const ORIGIN = 'https://10.200.0.1:8443'
// How long after the link is back both sides must decode again. A dead hub connection
// is noticed by the page's own keepalive and by the browser's network events, ICE is
// restarted over the resumed hub place: seconds, well inside the 30 s the hub's
// heartbeat took before.
const RECOVERY_LIMIT_MS = 20000
const run = promisify(execFile)
// NAT_CHECKS=name,name runs only those (while working on one).
const only = process.env.NAT_CHECKS ? process.env.NAT_CHECKS.split(',') : null
const step = (name, fn) => (!only || only.includes(name)) ? check(name, fn) : null


async function open (client, name) {
  const { browser, context } = await launch(`${LAB}/${client}-chromium`)
  const page = await context.newPage()
  page.on('pageerror', (e) => out({ log: `${name}: page error ${e}` }))
  await page.addInitScript((n) => localStorage.setItem('rtcdev.name', n), name)
  await page.goto(`${ORIGIN}/?room=nat`)
  await until(`${name} joined`, () => page.evaluate(() => !!(window.rtcdev.signaling && window.rtcdev.joinedAt)))
  return { browser, page, name }
}

// /inspect/state.json as this machine gets it (serve runs here), trusting the local CA.
function inspectorState () {
  const ca = readFileSync(`${process.env.HOME}/.local/share/rtcdev/rootCA.pem`)
  return new Promise((resolve, reject) => {
    https.get('https://127.0.0.1:8443/inspect/state.json', { ca }, (res) => {
      let body = ''
      res.on('data', (d) => { body += d })
      res.on('end', () => { try { resolve(JSON.parse(body)) } catch (e) { reject(new Error(`${res.statusCode}: ${body}`)) } })
    }).on('error', reject)
  })
}

// Rules in b's router (nft commands, one each).
async function firewall (...commands) {
  for (const c of commands) await run(`${LAB}/router`, ['2', ...c.split(' ')])
}

// A reload of the page: it comes back as someone new and joins again.
async function reload (p) {
  const old = await p.page.evaluate(() => window.rtcdev.signaling.id)
  await p.page.reload()
  await until(`${p.name} back after the reload`, () => p.page.evaluate((x) => window.rtcdev.signaling && window.rtcdev.signaling.joined && window.rtcdev.signaling.id !== x, old))
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
        return c ? { type: c.candidateType, address: c.address, protocol: c.protocol, relayProtocol: c.relayProtocol } : null
      }
      const gathered = []
      stats.forEach((c) => {
        if (c.type === 'local-candidate' || c.type === 'remote-candidate') gathered.push(`${c.type[0]}:${c.candidateType}/${c.protocol}${c.relayProtocol ? '/' + c.relayProtocol : ''} ${c.address}:${c.port}`)
      })
      paths.push(pair ? { state: pair.state, local: end(pair.localCandidateId), remote: end(pair.remoteCandidateId) } : { gathered })
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
    await step('nat-call-connects', async () => {
      const s = await bothDecoding(a, b, 'both sides decoding across the NATs', STEP_TIMEOUT_MS)
      return { a: s.a.paths, b: s.b.paths }
    })
    await step('network-switch-recovers', async () => {
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
    await step('outage-40s-recovers', async () => {
      await run(`${LAB}/cut-a`, ['40'])
      const back = Date.now()
      const s = await bothDecoding(a, b, 'both sides decoding after a 40 s outage', RECOVERY_LIMIT_MS)
      return { recoveredMsAfterLinkBack: Date.now() - back, a: s.a.paths, b: s.b.paths }
    })
    // b's network drops all UDP (as some corporate and hotel networks do): a fresh
    // connection (b reloads) goes through rtcdev's TURN over TCP.
    await step('udp-blocked-relays-over-tcp', async () => {
      await firewall('add table inet block', 'add chain inet block through { type filter hook forward priority 0 ; policy accept ; }', 'add rule inet block through meta l4proto udp drop')
      await reload(b)
      const s = await bothDecoding(a, b, 'both sides decoding with UDP blocked at b', STEP_TIMEOUT_MS)
      const local = s.b.paths[0] && s.b.paths[0].local
      if (!local || local.type !== 'relay' || local.relayProtocol !== 'tcp') throw new Error(`b's path is not TURN over TCP: ${JSON.stringify(s.b.paths)}`)
      // And the terminal says how the call got through.
      const said = await until('the UDP-blocked verdict in serve\'s terminal', () => server.printed.split('\n').find((l) => l.includes('call connected in room nat:')))
      if (!said.includes("UDP blocked on Bob's network: connected through TURN over TCP")) throw new Error(`verdict: ${said}`)
      return { b: s.b.paths, verdict: said }
    })
    // The ICE test page on b, in that network: each server's verdict from b's side, on
    // the page and in serve's terminal, labelled with the device.
    await step('ice-test-page-from-the-device', async () => {
      const page = await b.page.context().newPage()
      await page.goto(`${ORIGIN}/ice`)
      await until('the ICE servers filled in', () => page.evaluate(() => document.getElementById('servers').value.includes('turn:')))
      await page.fill('#device', "Bob's phone")
      await page.click('#run')
      const results = await until('the ICE test results', () => page.evaluate(() => window.iceResults), 30000, 250)
      const sent = await until('the result sent', () => page.evaluate(() => document.getElementById('sent').textContent))
      await page.close()
      const by = (re) => results.find((r) => re.test(r.url))
      const stun = by(/^stun:/)
      const udp = by(/^turn:.*transport=udp/)
      const tcp = by(/^turn:.*transport=tcp/)
      if (!stun || stun.verdict !== 'fail' || stun.failure !== 'unreachable') throw new Error(`STUN over blocked UDP: ${JSON.stringify(stun)}`)
      if (!udp || udp.verdict !== 'fail' || udp.failure !== 'unreachable') throw new Error(`TURN over blocked UDP: ${JSON.stringify(udp)}`)
      if (!tcp || tcp.verdict !== 'ok' || !/^relay 10\.200\.0\.1:\d+ allocated over tcp$/.test(tcp.detail)) throw new Error(`TURN over TCP: ${JSON.stringify(tcp)}`)
      const printed = await until('the report in serve\'s terminal', () => {
        const i = server.printed.indexOf('ICE test from "Bob\'s phone"')
        return i >= 0 && server.printed.slice(i).split('\n').slice(0, results.length + 1).join('\n')
      })
      if (!/\(Chrome \d+ on Linux\), 10\.200\.0\.12:/.test(printed) || !/OK +turn:.*transport=tcp +relay .* allocated over tcp/.test(printed) || !/FAIL unreachable +stun:/.test(printed)) {
        throw new Error(`printed: ${printed}`)
      }
      return { results, sent, printed }
    })
    // A wrong TURN password typed into /ice (on a, whose network lets everything
    // through): the TURN URLs fail as auth, and the terminal says so.
    await step('ice-test-page-wrong-password', async () => {
      const page = await a.page.context().newPage()
      await page.goto(`${ORIGIN}/ice`)
      await until('the ICE servers filled in', () => page.evaluate(() => document.getElementById('servers').value.includes('turn:')))
      await page.evaluate(() => {
        const servers = JSON.parse(document.getElementById('servers').value)
        for (const s of servers) if (s.credential) s.credential = 'wrong-password'
        document.getElementById('servers').value = JSON.stringify(servers)
      })
      await page.fill('#device', "Ann's laptop")
      await page.click('#run')
      const results = await until('the ICE test results', () => page.evaluate(() => window.iceResults), 30000, 250)
      await page.close()
      const turn = results.filter((r) => /^turn:/.test(r.url))
      if (!turn.length || !turn.every((r) => r.verdict === 'fail' && r.failure === 'auth' && r.detail.startsWith('401'))) throw new Error(`TURN with a wrong password: ${JSON.stringify(results)}`)
      const printed = await until('the 401 in serve\'s terminal', () => {
        const i = server.printed.indexOf('ICE test from "Ann\'s laptop"')
        return i >= 0 && server.printed.slice(i).split('\n').slice(0, results.length + 1).join('\n')
      })
      if (!/FAIL auth +turn:.*401/.test(printed)) throw new Error(`printed: ${printed}`)
      return { results, printed }
    })
    // And TURN's TCP port too: no path at all. Each side says so on the other's tile,
    // in words, with what helps.
    await step('ice-blocked-says-so', async () => {
      await firewall('add rule inet block through tcp dport 3478 drop')
      await reload(b)
      const problem = (p) => p.page.evaluate(() => { const e = document.querySelector('.tile:not(.local) .problem'); return e && e.textContent })
      const texts = []
      for (const p of [a, b]) texts.push(await until(`${p.name} says there is no connection`, () => problem(p), 60000, 250))
      if (!texts.every((t) => t.startsWith('No connection to') && t.includes('relay (TURN) server included'))) throw new Error(`problem texts: ${texts}`)
      // The terminal says why, once for the connection, from what both ends reported.
      const verdict = await until('the failure verdict in serve\'s terminal', () => {
        const lines = server.printed.split('\n').filter((l) => l.includes('call failed in room nat:'))
        return lines.length && lines
      })
      if (verdict.length !== 1 || !verdict[0].includes('TURN server')) throw new Error(`verdict: ${verdict}`)
      // /inspect shows it too, on the connection, to this machine.
      const state = await inspectorState()
      const shown = Object.values(state.rooms.nat || {}).flatMap((p) => Object.values(p.connections)).map((c) => c.verdict).filter(Boolean)
      if (!shown.some((v) => v === verdict[0].trim())) throw new Error(`/inspect shows ${JSON.stringify(shown)}`)
      await firewall('delete table inet block')
      return { texts, verdict: verdict[0] }
    })
    // Both routers now map every flow to a random port (a symmetric NAT, as many
    // mobile carriers run): no reflexive pair can work, and a fresh connection (b
    // reloads) goes through the relay, both ways.
    await step('symmetric-nat-through-relay', async () => {
      for (const r of ['2', '3']) {
        await run(`${LAB}/router`, [r, 'flush', 'chain', 'ip', 'nat', 'post'])
        await run(`${LAB}/router`, [r, 'add', 'rule', 'ip', 'nat', 'post', 'oifname', 'wan', 'masquerade', 'random,fully-random'])
      }
      await reload(b)
      const s = await bothDecoding(a, b, 'both sides decoding behind symmetric NATs', STEP_TIMEOUT_MS)
      const relayed = [...s.a.paths, ...s.b.paths].some((p) => p && [p.local, p.remote].some((e) => e && e.type === 'relay'))
      if (!relayed) throw new Error(`no relay in the paths: ${JSON.stringify([s.a.paths, s.b.paths])}`)
      return { a: s.a.paths, b: s.b.paths }
    })
    // serve's test hook drops the ICE candidates of a peer named Cid, as a signaling
    // path that loses them would: b comes back as Cid, no path forms through the NATs,
    // and the verdict names the lost candidates.
    await step('lost-candidates-named', async () => {
      await b.page.context().addInitScript(() => localStorage.setItem('rtcdev.name', 'Cid'))
      await reload(b)
      const verdict = await until('the lost-candidates verdict', () => server.printed.split('\n').find((l) => /Cid gathered candidates \(.+\) but none reached Ann/.test(l)), 60000, 250)
      return { verdict }
    })
    // A relay-only page (`&relay`) whose TURN password is wrong (its RTCPeerConnection
    // is given another one): it has no candidate at all, and the verdict names the 401
    // and the device.
    await step('relay-only-wrong-password-named', async () => {
      await b.page.context().addInitScript(() => {
        localStorage.setItem('rtcdev.name', 'Dee')
        const Native = window.RTCPeerConnection
        const Wrong = function (config, ...rest) {
          const servers = ((config && config.iceServers) || []).map((s) => s.credential ? { ...s, credential: 'wrong-password' } : s)
          return new Native({ ...config, iceServers: servers }, ...rest)
        }
        Wrong.prototype = Native.prototype
        window.RTCPeerConnection = Wrong
      })
      await b.page.goto(`${ORIGIN}/?room=nat&relay`)
      await until('Dee joined', () => b.page.evaluate(() => !!(window.rtcdev.signaling && window.rtcdev.joinedAt)))
      const verdict = await until('the 401 verdict', () => server.printed.split('\n').find((l) => l.includes("the TURN server refused Dee's credentials (401")), 60000, 250)
      return { verdict }
    })
    // Neither page has a STUN or TURN server (their RTCPeerConnections are given none),
    // both behind NAT: host candidates only, no pair can work, and the verdict says a
    // TURN server relays around it, with the command.
    await step('no-servers-behind-nat-named', async () => {
      for (const [p, name] of [[a, 'Fay'], [b, 'Gus']]) {
        await p.page.context().addInitScript((n) => {
          localStorage.setItem('rtcdev.name', n)
          const Native = window.RTCPeerConnection
          const Bare = function (config, ...rest) { return new Native({ ...config, iceServers: [] }, ...rest) }
          Bare.prototype = Native.prototype
          window.RTCPeerConnection = Bare
        }, name)
        await p.page.goto(`${ORIGIN}/?room=bare`)
        await until(`${name} joined`, () => p.page.evaluate(() => !!(window.rtcdev.signaling && window.rtcdev.joinedAt)))
      }
      const verdict = await until('the no-servers verdict', () => server.printed.split('\n').find((l) => l.includes('in room bare:') && l.includes('rtcdev serve --turn')), 60000, 250)
      if (!verdict.includes('only host candidates on both sides')) throw new Error(`verdict: ${verdict}`)
      return { verdict }
    })
  } finally {
    await a.browser.close()
    await b.browser.close()
  }
}

execFileSync(BIN, ['cert', '--install'], { env: { ...process.env, RTCDEV_TRUST_STORES: 'nss' }, stdio: 'ignore' })
const server = await serve(BIN, ['--bind', '0.0.0.0', '--port', '8443', '--turn', '--quiet', '--no-qr', '--room', 'lobby'], { RTCDEV_TEST_HOOK_DROP_CANDIDATES_FROM: 'Cid' })
await runChecks(server, checks)
