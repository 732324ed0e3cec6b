// A socket.io client the Rust tests drive over stdin/stdout, one JSON object a line.
// In:  {"emit": "event", "data": ..., "binary"?: "field"} | {"close": true}
//      ("binary": data[field], an array of byte values, goes as a binary attachment)
// Out: {"event": "connect", "id": ..., "transport": ...} | {"event": name, "data": first arg}
// Usage: node sio_client.mjs URL websocket|polling [v4|v2]
import readline from 'node:readline'

const [url, transport = 'websocket', version = 'v4'] = process.argv.slice(2)
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')

let socket
if (version === 'v2') {
  const ioV2 = (await import('socket.io-client-v2')).default
  socket = ioV2(url, { transports: [transport], reconnection: false, forceNew: true })
  for (const name of ['joined', 'newUserJoined', 'userLeft', 'message', 'error']) {
    socket.on(name, (data) => out({ event: name, data }))
  }
} else {
  const { io } = await import('socket.io-client')
  socket = io(url, { transports: [transport], reconnection: false, forceNew: true })
  socket.onAny((event, ...args) => out({ event, data: args[0] }))
}
socket.on('connect', () => {
  const engine = socket.io.engine
  out({ event: 'connect', id: socket.id, transport: engine.transport.name })
})
socket.on('disconnect', (reason) => out({ event: 'disconnect', data: String(reason) }))
socket.on('connect_error', (err) => out({ event: 'connect_error', data: String(err) }))

const rl = readline.createInterface({ input: process.stdin })
let closing = false
// Over long-polling the disconnect is a POST of its own: exiting at a fixed delay could
// cut it off on a loaded machine, and the hub would keep the connection until its
// heartbeat. So stop reading stdin and let node exit by itself once no request is
// pending; the unref'd timer only ends a client whose socket never lets go.
const finish = () => {
  if (closing) return
  closing = true
  socket.close()
  rl.close()
  process.stdin.destroy()
  setTimeout(() => process.exit(0), 5000).unref()
}
rl.on('line', (line) => {
  if (closing) return
  const cmd = JSON.parse(line)
  if (cmd.close) {
    finish()
    return
  }
  if (cmd.binary) cmd.data[cmd.binary] = Buffer.from(cmd.data[cmd.binary])
  socket.emit(cmd.emit, cmd.data)
})
rl.on('close', finish)
