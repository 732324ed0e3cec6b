// N socket.io clients that emit `join` at once, before they are connected, as the
// seed article's page does: the client sends it the moment the server's connect
// answer arrives. Each joins a room of its own, or all the one ROOM when given. Prints
// {"joined": how many got `joined`, "full": how many got `room-full`, "clients": N}.
// Usage: node join_at_once.mjs URL websocket|polling N [ROOM]
const [url, transport = 'websocket', n = '100', room] = process.argv.slice(2)
const { io } = await import('socket.io-client')
const total = Number(n)
let joined = 0
let full = 0
let finished = false
let overall
const sockets = []
const done = () => {
  if (finished) return
  finished = true
  clearTimeout(overall)
  process.stdout.write(JSON.stringify({ joined, full, clients: total }) + '\n')
  // Closed cleanly (the disconnect packets sent, polling ones too) before exiting:
  // node exits by itself once no request is pending, not at a fixed delay that a
  // loaded machine may outrun. The unref'd timer only ends a run whose sockets never
  // let go.
  for (const s of sockets) s.close()
  setTimeout(() => process.exit(0), 5000).unref()
}
for (let i = 0; i < total; i++) {
  const s = io(url, { transports: [transport], reconnection: false, forceNew: true })
  s.once('joined', () => {
    joined += 1
    if (joined + full === total) done()
  })
  s.on('error', (e) => {
    if (e && e.code === 'room-full') full += 1
    if (joined + full === total) done()
  })
  s.emit('join', room || `at-once-${i}`)
  sockets.push(s)
}
// Reports what arrived if some answers never come; generous, as a loaded machine may
// take seconds to connect 150 clients.
overall = setTimeout(done, 30000)
