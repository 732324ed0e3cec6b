// N socket.io clients that emit `join` at once, before they are connected, as the
// seed article's page does: the client sends it the moment the server's connect
// answer arrives. Prints {"joined": how many got `joined`, "clients": N} and exits.
// Usage: node join_at_once.mjs URL websocket|polling N
const [url, transport = 'websocket', n = '100'] = process.argv.slice(2)
const { io } = await import('socket.io-client')
const total = Number(n)
let joined = 0
let finished = false
const sockets = []
const done = () => {
  if (finished) return
  finished = true
  process.stdout.write(JSON.stringify({ joined, clients: total }) + '\n')
  // Closed cleanly (the disconnect packets sent, polling ones too) before exiting.
  for (const s of sockets) s.close()
  setTimeout(() => process.exit(0), 500)
}
for (let i = 0; i < total; i++) {
  const s = io(url, { transports: [transport], reconnection: false, forceNew: true })
  s.once('joined', () => {
    joined += 1
    if (joined === total) done()
  })
  s.emit('join', `at-once-${i}`)
  sockets.push(s)
}
setTimeout(done, 10000)
