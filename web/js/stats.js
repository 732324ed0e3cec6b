// Per-peer figures from getStats(), once a second: the selected candidate pair, RTT,
// bitrates, loss, resolution and frame rate.

export async function summarize (pc, previous) {
  const report = await pc.getStats()
  const byId = new Map()
  report.forEach((s) => byId.set(s.id, s))
  let pair = null
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId)
  })
  if (!pair) report.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s })
  const out = {
    at: performance.now(),
    state: pc.connectionState,
    local: null,
    remote: null,
    protocol: null,
    rtt: null,
    bytesIn: 0,
    bytesOut: 0,
    packetsLost: 0,
    packetsReceived: 0,
    audioPacketsReceived: 0,
    framesDecoded: 0,
    width: null,
    height: null,
    fps: null
  }
  if (pair) {
    const l = byId.get(pair.localCandidateId)
    const r = byId.get(pair.remoteCandidateId)
    out.local = l && l.candidateType
    out.remote = r && r.candidateType
    out.protocol = l && (l.relayProtocol ? `${l.protocol}/${l.relayProtocol}` : l.protocol)
    out.rtt = pair.currentRoundTripTime
  }
  report.forEach((s) => {
    if (s.type === 'inbound-rtp') {
      out.bytesIn += s.bytesReceived || 0
      out.packetsLost += s.packetsLost || 0
      out.packetsReceived += s.packetsReceived || 0
      if (s.kind === 'audio') out.audioPacketsReceived += s.packetsReceived || 0
      if (s.kind === 'video') {
        out.framesDecoded += s.framesDecoded || 0
        out.width = s.frameWidth || out.width
        out.height = s.frameHeight || out.height
        out.fps = s.framesPerSecond || out.fps
      }
    } else if (s.type === 'outbound-rtp') {
      out.bytesOut += s.bytesSent || 0
    }
  })
  const dt = previous ? (out.at - previous.at) / 1000 : 0
  out.kbpsIn = dt > 0 ? Math.max(0, Math.round(((out.bytesIn - previous.bytesIn) * 8) / dt / 1000)) : 0
  out.kbpsOut = dt > 0 ? Math.max(0, Math.round(((out.bytesOut - previous.bytesOut) * 8) / dt / 1000)) : 0
  const total = out.packetsLost + out.packetsReceived
  out.lossPct = total > 0 ? (100 * out.packetsLost) / total : 0
  return out
}

export function format (s) {
  const lines = [s.state]
  if (s.local) lines.push(`${s.local} → ${s.remote} ${s.protocol || ''}`)
  if (s.rtt != null) lines.push(`rtt ${Math.round(s.rtt * 1000)} ms`)
  lines.push(`in ${s.kbpsIn} kb/s  out ${s.kbpsOut} kb/s`)
  lines.push(`loss ${s.lossPct.toFixed(1)}%`)
  if (s.width) lines.push(`${s.width}×${s.height} ${s.fps ? Math.round(s.fps) + ' fps' : ''}`)
  return lines.join('\n')
}
