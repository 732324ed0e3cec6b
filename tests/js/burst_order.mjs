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
let overall
const done = () => {
  if (finished) return
  finished = true
  clearTimeout(overall)
  const inOrder = seen.every((s, i) => s === i)
  process.stdout.write(JSON.stringify({ received: seen.length, inOrder, sent: total }) + '\n')
  // Over long-polling each disconnect is a POST of its own: node exits by itself once
  // they are sent, not at a fixed delay that a loaded machine may outrun. The unref'd
  // timer only ends a run whose sockets never let go.
  a.close()
  b.close()
  setTimeout(() => process.exit(0), 5000).unref()
}
b.on('message', (m) => {
  seen.push(m.seq)
  if (seen.length === total) done()
})
for (let i = 0; i < total; i++) a.emit('message', { to: bId, seq: i, candidate: 'x'.repeat(200) })
// Reports what arrived if the burst never completes; generous, as a loaded machine
// may take seconds over long-polling.
overall = setTimeout(done, 30000)
