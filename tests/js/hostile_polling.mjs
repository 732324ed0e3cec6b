// A swarm of raw Engine.IO v4 long-polling clients that read slowly and write in bursts,
// to reproduce a hub stall. Each client handshakes, connects socket.io's default
// namespace, joins ROOM, POSTs BATCH `message` events in one request every second, and
// polls with a random POLL_MIN_MS..POLL_MAX_MS pause between GETs, answering pings. A
// session the server drops is counted and not reconnected. After SECONDS prints
// {"clients","handshakes","posted","received","polls","dropped","errors"} and exits 0.
// Usage: node hostile_polling.mjs URL CLIENTS SECONDS [BATCH=100] [ROOM=hostile] [POLL_MIN_MS=50] [POLL_MAX_MS=400]
import { setTimeout as sleep } from 'node:timers/promises'
import { setMaxListeners } from 'node:events'

const [url, nArg = '10', secArg = '10', batchArg = '100', room = 'hostile', minArg = '50', maxArg = '400'] =
  process.argv.slice(2)
const [clients, seconds, batch, pollMin, pollMax] = [nArg, secArg, batchArg, minArg, maxArg].map(Number)
const base = `${url.replace(/\/+$/, '')}/socket.io/?EIO=4&transport=polling`
const SEP = '\x1e' // Engine.IO v4 separates the packets of one polling payload with this
const stats = { clients, handshakes: 0, posted: 0, received: 0, polls: 0, dropped: 0, errors: 0 }

let reported = false
const report = () => {
  if (reported) return
  reported = true
  process.stdout.write(JSON.stringify(stats) + '\n')
}
// Every loop stops at the deadline; aborting `stop` also cancels every request in flight.
const stop = new AbortController()
setMaxListeners(0, stop.signal) // every request in flight listens to it
const live = () => !stop.signal.aborted
setTimeout(() => stop.abort(), seconds * 1000)
setTimeout(() => { report(); process.exit(0) }, (seconds + 10) * 1000).unref()
const pause = (ms) => sleep(ms, undefined, { signal: stop.signal }).catch(() => {})

class Dropped extends Error {}

// One HTTP request: the body text, or Dropped when the server no longer knows the session.
async function req(method, target, body, ms = 5000) {
  const res = await fetch(target, {
    method,
    body,
    headers: body === undefined ? undefined : { 'Content-Type': 'text/plain;charset=UTF-8' },
    signal: AbortSignal.any([AbortSignal.timeout(ms), stop.signal]),
  })
  const text = await res.text()
  if (res.status === 400 && /session id unknown/i.test(text)) throw new Dropped()
  if (!res.ok) throw new Error(`${method} ${res.status}`)
  return text
}

const drop = (c) => {
  if (!c.gone) stats.dropped++
  c.gone = true
}
// Errors after the deadline are our own aborts, not the server's doing.
const fail = (c, e) => (e instanceof Dropped ? drop(c) : live() && !c.gone && stats.errors++)

// A POST of its own (not queued behind others) so a pong is never held up by a slow batch.
function post(c, body, events = 0) {
  if (c.gone || !live()) return
  const p = req('POST', c.url, body)
    .then(() => { stats.posted += events })
    .catch((e) => fail(c, e))
  c.inflight.add(p)
  p.finally(() => c.inflight.delete(p))
}

// Reads one polling payload: pongs the pings, counts events, notices a close.
function handle(c, text) {
  for (const packet of text.split(SEP)) {
    if (packet === '2') post(c, '3')
    else if (packet === '1' || packet.startsWith('41')) drop(c) // engine close / namespace disconnect
    else if (packet.startsWith('42')) stats.received++
    else if (packet.startsWith('40')) c.connected = true
  }
}

async function client() {
  const c = { url: '', gone: false, connected: false, inflight: new Set(), pollMs: 30000 }
  try {
    // 1. Handshake: `0{"sid":...,"pingInterval":...,"pingTimeout":...}`.
    const open = (await req('GET', base)).split(SEP)[0]
    if (!open.startsWith('0')) throw new Error(`bad handshake ${open.slice(0, 40)}`)
    const hs = JSON.parse(open.slice(1))
    c.url = `${base}&sid=${encodeURIComponent(hs.sid)}`
    // A poll is held open until the server has something; a ping comes every pingInterval.
    if (hs.pingInterval) c.pollMs = hs.pingInterval + (hs.pingTimeout ?? 5000)
    stats.handshakes++
    // 2. Connect the default namespace, then read its `40{"sid":...}` answer.
    await req('POST', c.url, '40')
    handle(c, await req('GET', c.url, undefined, c.pollMs))
    stats.polls++
    if (!c.connected) throw new Error('no socket.io connect answer')
  } catch (e) {
    return fail(c, e)
  }
  // 3. Join the room.
  post(c, `42${JSON.stringify(['join', room])}`)
  // 4. Every second, BATCH events in one request body.
  const pad = 'x'.repeat(200)
  const bursts = (async () => {
    for (let seq = 0; !c.gone && live(); await pause(1000)) {
      const packets = []
      for (let i = 0; i < batch; i++) packets.push(`42${JSON.stringify(['message', { seq: seq++, pad }])}`)
      if (batch > 0) post(c, packets.join(SEP), batch)
    }
  })()
  // 5. Poll, slowly.
  while (!c.gone && live()) {
    try {
      handle(c, await req('GET', c.url, undefined, c.pollMs))
      stats.polls++
    } catch (e) {
      fail(c, e)
    }
    await pause(pollMin + Math.random() * Math.max(0, pollMax - pollMin))
  }
  await bursts
  await Promise.allSettled([...c.inflight])
  // Close the session (an Engine.IO close packet) rather than leave it to time out.
  if (!c.gone) {
    await fetch(c.url, { method: 'POST', body: '1', signal: AbortSignal.timeout(2000) }).catch(() => {})
  }
}

await Promise.allSettled(Array.from({ length: clients }, () => client()))
report()
process.exit(0)
