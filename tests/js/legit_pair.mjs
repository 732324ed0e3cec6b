// A well-behaved pair of peers in one room, A sending B a steady stream of messages for
// SECONDS at RATE a second, over the native protocol or socket.io. Prints
// {"sent","received","inOrder","maxGapMs"} and exits: nothing lost and in order is the
// mark of a hub that kept working for its good clients.
// Usage: node --experimental-websocket legit_pair.mjs URL native|socketio SECONDS RATE [ROOM]
const [url, kind = 'native', secArg = '10', rateArg = '20', room = `legit-${process.pid}`] = process.argv.slice(2)
const seconds = Number(secArg)
const rate = Number(rateArg)
const total = Math.round(seconds * rate)
const seen = []
let lastAt = Date.now()
let maxGapMs = 0
const got = (seq) => {
  const now = Date.now()
  maxGapMs = Math.max(maxGapMs, now - lastAt)
  lastAt = now
  seen.push(seq)
}

let send, closeAll
if (kind === 'socketio') {
  const { io } = await import('socket.io-client')
  const opts = { transports: ['websocket'], reconnection: false, forceNew: true }
  const joined = (s) => new Promise((resolve) => s.once('joined', resolve))
  const a = io(url, opts)
  const b = io(url, opts)
  a.emit('join', room)
  await joined(a)
  b.emit('join', room)
  const bId = (await joined(b)).split(',').pop()
  b.on('message', (m) => got(m.seq))
  send = (seq) => a.emit('message', { to: bId, seq })
  closeAll = () => { a.close(); b.close() }
} else {
  const ws = url.replace(/^http/, 'ws') + '/ws'
  const open = (u) => new Promise((resolve, reject) => {
    const s = new WebSocket(u)
    const frames = []
    let wake = null
    s.onmessage = (e) => { frames.push(JSON.parse(e.data)); if (wake) wake() }
    s.onerror = reject
    s.onopen = () => resolve({ s, frames, next: async (type) => {
      for (;;) {
        const i = frames.findIndex((f) => f.type === type)
        if (i >= 0) return frames.splice(i, 1)[0]
        await new Promise((r) => { wake = r })
      }
    } })
  })
  const a = await open(ws)
  const b = await open(ws)
  await a.next('welcome')
  const bWelcome = await b.next('welcome')
  a.s.send(JSON.stringify({ type: 'join', room }))
  await a.next('joined')
  b.s.send(JSON.stringify({ type: 'join', room }))
  await b.next('joined')
  b.s.onmessage = (e) => {
    const f = JSON.parse(e.data)
    if (f.type === 'signal') got(f.data.seq)
  }
  send = (seq) => a.s.send(JSON.stringify({ type: 'signal', to: bWelcome.id, data: { seq } }))
  closeAll = () => { a.s.close(); b.s.close() }
}

lastAt = Date.now()
for (let seq = 0; seq < total; seq++) {
  send(seq)
  await new Promise((r) => setTimeout(r, 1000 / rate))
}
// Grace for the last ones to arrive.
const until = Date.now() + 3000
while (seen.length < total && Date.now() < until) await new Promise((r) => setTimeout(r, 20))
const inOrder = seen.every((s, i) => s === i)
process.stdout.write(JSON.stringify({ sent: total, received: seen.length, inOrder, maxGapMs }) + '\n')
closeAll()
setTimeout(() => process.exit(0), 200)
