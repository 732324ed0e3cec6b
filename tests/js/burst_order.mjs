// Two socket.io clients in one room; A emits N `message`s to B in one burst, as a
// browser does with its ICE candidates. Prints {"received": how many reached B,
// "inOrder": whether B got them in the order A sent them, "sent": N} and exits.
// Usage: node burst_order.mjs URL websocket|polling N
const [url, transport = 'websocket', n = '500'] = process.argv.slice(2)
const { io } = await import('socket.io-client')
const total = Number(n)
const room = `burst-${process.pid}`
const opts = { transports: [transport], reconnection: false, forceNew: true }
const joined = (s) => new Promise((resolve) => s.once('joined', (ids) => resolve(ids)))
const a = io(url, opts)
const b = io(url, opts)
a.emit('join', room)
await joined(a)
b.emit('join', room)
const ids = await joined(b)
const bId = ids.split(',').pop()
const seen = []
let finished = false
const done = () => {
  if (finished) return
  finished = true
  const inOrder = seen.every((s, i) => s === i)
  process.stdout.write(JSON.stringify({ received: seen.length, inOrder, sent: total }) + '\n')
  a.close()
  b.close()
  setTimeout(() => process.exit(0), 300)
}
b.on('message', (m) => {
  seen.push(m.seq)
  if (seen.length === total) done()
})
for (let i = 0; i < total; i++) a.emit('message', { to: bId, seq: i, candidate: 'x'.repeat(200) })
setTimeout(done, 10000)
