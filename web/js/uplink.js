// How much a page sends: in a mesh every peer is one more encoder on the same uplink,
// so one total budget is split between the senders, and larger rooms capture smaller.
// Re-applied whenever a peer comes or goes and whenever the video track changes.

// What a phone on a typical Wi-Fi or 4G uplink sends without stalling, in all.
export const UPLINK_BUDGET_BPS = 2_500_000
// No sender gets more than this (a 720p camera needs no more), nor less than the floor
// below which video is not worth sending.
const MAX_PER_SENDER_BPS = 1_500_000
const MIN_PER_SENDER_BPS = 150_000

// A new connection sends at half the plan's size at first: its first keyframe is a
// quarter as large, so the far side shows video sooner (a 720p keyframe at the starting
// bandwidth estimate costs the receiver's first frame about 170 ms). The plan's own
// size follows this long after the connection is up, once the estimate has grown.
export const FAST_START_MS = 2000

// The plan for `others` receivers: bits a second for each video sender, how much to
// scale the capture down, and the most frames a second.
export function plan (others, screen) {
  const n = Math.max(1, others)
  const bps = Math.round(Math.min(MAX_PER_SENDER_BPS, Math.max(MIN_PER_SENDER_BPS, UPLINK_BUDGET_BPS / n)))
  // Text on a shared screen must stay legible: keep its resolution, drop frames.
  if (screen) return { maxBitrate: bps, scaleResolutionDownBy: 1, maxFramerate: 15, degradationPreference: 'maintain-resolution' }
  // Every receiver more is one more encoder on the same phone: smaller frames, fewer
  // of them.
  const scale = n <= 2 ? 1 : n <= 4 ? 1.5 : 2
  const fps = n <= 2 ? 30 : n <= 4 ? 24 : 15
  return { maxBitrate: bps, scaleResolutionDownBy: scale, maxFramerate: fps, degradationPreference: 'balanced' }
}

// Whether `peer` still starts small: until the page marks its fast start over
// (`fastStartOver`, FAST_START_MS after it first connected).
export function fastStart (peer, screen) {
  return !screen && !peer.fastStartOver
}

// Applies the plan to every video sender of `peers`.
export async function apply (peers, screen) {
  const plain = plan(peers.length, screen)
  await Promise.all(peers.map(async (peer) => {
    const p = fastStart(peer, screen) ? { ...plain, scaleResolutionDownBy: plain.scaleResolutionDownBy * 2 } : plain
    for (const sender of peer.pc.getSenders()) {
      if (!sender.track || sender.track.kind !== 'video') continue
      const params = sender.getParameters()
      if (!params.encodings || params.encodings.length === 0) continue // not negotiated yet
      const e = params.encodings[0]
      if (e.maxBitrate === p.maxBitrate && e.scaleResolutionDownBy === p.scaleResolutionDownBy &&
        e.maxFramerate === p.maxFramerate && params.degradationPreference === p.degradationPreference) continue
      params.encodings[0].maxBitrate = p.maxBitrate
      params.encodings[0].maxFramerate = p.maxFramerate
      params.encodings[0].scaleResolutionDownBy = p.scaleResolutionDownBy
      params.degradationPreference = p.degradationPreference
      try {
        await sender.setParameters(params)
      } catch (err) {
        peer.emit('log', `uplink: ${err}`)
      }
    }
  }))
  return plain
}
