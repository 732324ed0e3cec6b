// The calling page: a lobby, then a mesh call over rtcdev's hub, as many peers as the
// hub's rooms hold (it says so in `welcome`). One app object (window.rtcdev) holds the
// state; tests read it too.

import { Signaling } from './signaling.js'
import { Media } from './media.js'
import { Peer } from './peers.js'
import { summarize, format } from './stats.js'
import { Reporter } from './inspect.js'
import * as uplink from './uplink.js'
import { $, tile, removeTile, setBadges, notice, chatLine, eventLine, escapeHtml, toast } from './ui.js'

// Until the hub's `welcome` says how many peers its rooms hold.
const DEFAULT_ROOM_SIZE = 8
// A peer whose signaling dropped but whose media still flows is kept this long for
// it to come back under the same id (it resumes its place, even on a restarted serve,
// whose resume tokens are signed with a key of its CA).
const REJOIN_GRACE_MS = 15000
// How long a peer in its grace may stay without media before it is taken for gone.
const GRACE_DISCONNECTED_MS = 4000
// A connection neither connected nor failed this long shows the no-path message.
const NO_PATH_MS = 20000
// How long the hub may be away before the page says so.
const HUB_AWAY_NOTICE_MS = 3000
const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/

// An id for this page load only, kept in memory: a reload or a duplicated tab is
// another participant. (No crypto.randomUUID: it is missing outside secure contexts,
// where the page must still load to explain how to get one.)
function pageId () {
  const bytes = (globalThis.crypto && crypto.getRandomValues) ? crypto.getRandomValues(new Uint8Array(12)) : Uint8Array.from({ length: 12 }, () => Math.floor(Math.random() * 256))
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}

const app = {
  room: null,
  name: '',
  roomSize: DEFAULT_ROOM_SIZE,
  pageId: pageId(),
  signaling: null,
  media: new Media(),
  peers: new Map(), // hub id -> Peer
  stats: new Map(), // hub id -> last summary
  rejoinTimers: new Map(),
  uplink: null, // the sending plan in force (uplink.js)
  iceServers: [],
  joinedAt: null,
  events: [],
  // `&echo`: rtcdev's echo peer joins and sends this page its own media back.
  echo: false,
  // `&relay`: every connection through TURN only (iceTransportPolicy 'relay').
  relayOnly: false,
  // When each step of joining happened (ms since navigation), first time only: what the
  // first-frame benchmark reads.
  marks: {}
}
window.rtcdev = app

function mark (name) {
  if (!(name in app.marks)) app.marks[name] = Math.round(performance.now())
}
mark('script')

// 13 characters of a 32-letter alphabet: 65 random bits, too many to guess.
function randomRoom () {
  const alphabet = 'abcdefghjkmnpqrstuvwxyz023456789'
  if (!(globalThis.crypto && crypto.getRandomValues)) return `room-${pageId().slice(0, 13)}`
  const bytes = crypto.getRandomValues(new Uint8Array(13))
  return `room-${Array.from(bytes, (b) => alphabet[b % 32]).join('')}`
}

function log (text) {
  app.events.push(text)
  if (app.events.length > 500) app.events.shift()
  eventLine(text)
}

function defaultName () {
  return localStorage.getItem('rtcdev.name') || `Guest-${app.pageId.slice(0, 4)}`
}

async function fillDevices () {
  const { cameras, mics } = await app.media.devices()
  for (const [sel, list] of [[$('camera-select'), cameras], [$('mic-select'), mics]]) {
    sel.replaceChildren(...list.map((d, i) => new Option(d.label || `${d.kind} ${i + 1}`, d.deviceId)))
    sel.disabled = list.length === 0
  }
}

async function lobby (room) {
  $('lobby').hidden = false
  $('room').value = room || randomRoom()
  $('name').value = defaultName()
  if (!window.isSecureContext) {
    $('lobby-note').innerHTML = insecureHelp()
  } else {
    await app.media.open()
    $('preview').srcObject = app.media.stream
    await fillDevices()
    const said = mediaNotice()
    if (said) $('lobby-note').innerHTML = said
  }
  $('random-room').onclick = () => { $('room').value = randomRoom() }
  const reopen = async () => {
    app.media.close()
    await app.media.open({ cameraId: $('camera-select').value, micId: $('mic-select').value })
    $('preview').srcObject = app.media.stream
  }
  $('camera-select').onchange = reopen
  $('mic-select').onchange = reopen
  const go = (r) => {
    localStorage.setItem('rtcdev.name', $('name').value.trim())
    app.relayOnly = $('relay-only').checked
    const flags = `${app.echo ? '&echo' : ''}${app.relayOnly ? '&relay' : ''}`
    history.replaceState(null, '', `?room=${encodeURIComponent(r)}${flags}`)
    $('lobby').hidden = true
    start(r, $('name').value.trim() || defaultName())
  }
  $('relay-only').checked = app.relayOnly
  $('lobby-form').onsubmit = (ev) => {
    ev.preventDefault()
    const r = $('room').value.trim()
    if (ROOM_RE.test(r)) go(r)
  }
  // A room of one's own, and the echo in it: the whole path with one device.
  $('test-alone').onclick = () => {
    app.echo = true
    go(randomRoom())
  }
}

function insecureHelp () {
  // Without a room yet (the lobby), /join uses the server's own room.
  const join = `http://${location.host}/join${app.room ? `?room=${encodeURIComponent(app.room)}` : ''}`
  return `This page is not a secure context, so the browser will not give it a camera or microphone. ` +
    `Open it over HTTPS with a trusted certificate: <a href="${escapeHtml(join)}">set up this device</a>.`
}

function mediaHelp (error) {
  if (error === 'insecure') return insecureHelp()
  if (error === 'NotAllowedError') {
    return 'Camera and microphone are blocked for this site. Allow them in the address bar\'s site settings ' +
      '(on iOS: Settings → Safari → Camera / Microphone), then reload. You are joining receive-only.'
  }
  if (error === 'NotFoundError' || error === 'OverconstrainedError') return 'No camera or microphone found: joining receive-only.'
  if (error === 'NotReadableError' || error === 'AbortError') {
    return 'The camera and microphone are in use by another app (or the system would not start them). ' +
      'Close the other app, then reload. You are joining receive-only.'
  }
  return `Cannot open camera or microphone (${escapeHtml(error)}): joining receive-only.`
}

// The camera or the microphone opened without the other: say which, why, and what the
// others get.
function partialHelp (media) {
  const why = {
    NotReadableError: 'it is in use by another app',
    AbortError: 'it is in use by another app',
    NotFoundError: 'none was found',
    OverconstrainedError: 'none was found',
    NotAllowedError: 'it is blocked for this site'
  }[media.partial] || escapeHtml(media.partial)
  const stream = media.stream
  if (stream && !stream.getVideoTracks().length) return `Your camera could not be opened (${why}): the others hear you but do not see you.`
  if (stream && !stream.getAudioTracks().length) return `Your microphone could not be opened (${why}): the others see you but do not hear you.`
  return ''
}

function mediaNotice () {
  if (app.media.error) return mediaHelp(app.media.error)
  if (app.media.partial) return partialHelp(app.media)
  return ''
}

async function start (room, name) {
  app.room = room
  app.name = name
  $('call').hidden = false
  // The camera and the hub connection start together; whatever the hub says waits for
  // the camera (in order), so no offer or answer goes out without the tracks.
  const mediaReady = (!app.media.stream && window.isSecureContext) ? app.media.open() : Promise.resolve()
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:'
  const sig = new Signaling(`${proto}//${location.host}/ws`)
  app.signaling = sig
  // Until then hub events wait in a queue; after, they are handled as they come, in the
  // event itself (the hub client acts on what a handler did, e.g. forgets the signals
  // queued for a peer the handler dropped, before it flushes the rest).
  let ready = false
  const waiting = []
  const on = (type, fn) => sig.addEventListener(type, (ev) => { if (ready) fn(ev); else waiting.push(() => fn(ev)) })
  app.reporter = new Reporter(app)
  sig.addEventListener('log', ({ detail }) => {
    const m = detail.msg
    if (m.type === 'signal') log(`${detail.dir} signal ${m.from || m.to || 'room'} ${m.data && m.data.kind}`)
    else log(`${detail.dir} ${m.type}${m.id ? ' ' + m.id : ''}${m.code ? ' ' + m.code : ''}`)
  })
  on('welcome', ({ detail }) => {
    mark('welcome')
    app.iceServers = detail.iceServers || []
    if (Number.isInteger(detail.roomSize) && detail.roomSize >= 2) app.roomSize = detail.roomSize
    $('ice-list').textContent = JSON.stringify(app.iceServers, null, 2) || '[]'
    notice(mediaNotice())
  })
  on('joined', ({ detail }) => {
    mark('joined')
    clearTimeout(app.awayTimer)
    if ($('notice').textContent.startsWith('Cannot reach the rtcdev server')) notice(mediaNotice())
    const first = !app.joinedAt
    app.joinedAt = app.joinedAt || performance.now()
    if (first && app.echo) askEcho()
    if (first && detail.peers.length) toast(`In this call: ${detail.peers.map((p) => displayName(p.meta, p.id)).join(', ')}`)
    if (!first) {
      // Back after a drop: peers the room no longer lists left while we were away (we
      // missed their goodbye), or lost their own hub connection. As when the hub says
      // one left: a connection that still carries media gets a grace, any other goes.
      const listed = new Set(detail.peers.map((p) => p.id))
      for (const id of [...app.peers.keys()]) {
        if (!listed.has(id)) peerLeft(id)
      }
      // Our place was kept (resumed): the others still hold their connections to us,
      // but what was signalled while we were away may be lost, and we may be on
      // another network. Each one is told we are back, and ICE restarts from here.
      if (detail.resumed) {
        log('resumed our place in the room')
        for (const p of app.peers.values()) {
          if (!listed.has(p.id)) continue
          app.signaling.signal(p.id, { kind: 'back' })
          p.afterAway(true)
        }
      } else {
        // Our place was lost (away past the hub's heartbeat): the others were told we
        // left, and the ones whose media stopped start over with us as a newcomer.
        // Connections that still carry media stand.
        for (const p of [...app.peers.values()]) {
          if (listed.has(p.id) && p.pc.connectionState !== 'connected') dropPeer(p.id, { quiet: true })
        }
      }
    }
    for (const p of detail.peers) addPeer(p.id, p.meta, true)
  })
  on('peer-joined', ({ detail }) => {
    // Every newcomer shows, by name: a room name is the only key to a call. A peer we
    // still hold is one coming back (the hub vouched for its id): no news.
    if (!app.peers.has(detail.id)) toast(`${displayName(detail.meta, detail.id)} joined`)
    addPeer(detail.id, detail.meta, false)
  })
  on('peer-left', ({ detail }) => peerLeft(detail.id))
  on('signal', ({ detail }) => onSignal(detail.from, detail.data))
  on('error', ({ detail }) => {
    if (detail.code === 'room-full' && !app.joinedAt) roomFull()
    else if (detail.code === 'room-full') notice('The room filled up while the connection to the server was down; reload to try again.')
    else if (detail.code === 'rate-limited') toast('Too many messages at once: the server is slowing this page down.')
    else if (detail.code === 'too-large') toast('A message was too large for the server and was not sent.')
    else if (detail.code === 'bad-request' || detail.code === 'not-in-room') {
      notice(`The rtcdev server refused a message from this page (${escapeHtml(detail.message || detail.code)}). ` +
        'If the call misbehaves, reload the page.')
    }
    // unknown-peer (someone left as we signalled) and resume-refused (handled by the
    // reconnect) are routine.
  })
  on('disconnected', ({ detail }) => {
    // Why, in the log and the inspector's timeline (docs/PROTOCOL.md lists the hub's codes).
    const why = {
      1001: 'the server is shutting down',
      1006: 'the connection dropped',
      1008: 'the server closed it: this page did not read, or sent too fast',
      1009: 'the server closed it: a message was too large',
      4000: 'the server did not answer',
      4001: 'this page reconnected elsewhere'
    }[detail && detail.code]
    log(`hub connection lost (${(detail && detail.code) || 'no code'}${why ? ': ' + why : ''}); reconnecting`)
    // A blip is not news; a server that stays away is, in words for anyone.
    clearTimeout(app.awayTimer)
    app.awayTimer = setTimeout(() => {
      if (!app.signaling.joined) {
        notice(`Cannot reach the rtcdev server at ${escapeHtml(location.host)}. The call goes on with ` +
          'whoever is already connected; new people cannot join until it is back. Is it still running ' +
          '(and this device on the same network)? Trying again…')
      }
    }, HUB_AWAY_NOTICE_MS)
  })
  sig.join(room, { name })
  sig.connect()
  await mediaReady
  mark('media')
  const said = mediaNotice()
  if (said) notice(said)
  const me = tile('self', `${name} (you)`, { local: true })
  me.querySelector('video').srcObject = app.media.stream
  me.classList.toggle('mirrored', app.media.mirrored())
  setBadges(me, { audio: app.media.audioOn, video: app.media.videoOn })
  watchLocalTracks()
  if (!window.isSecureContext) notice(insecureHelp())
  $('share').hidden = !Media.canShareScreen()
  ready = true
  for (const handle of waiting.splice(0)) handle()
  wireControls()
  // A phone's screen stays on during a call (where the browser allows it), again after
  // the tab was in the background.
  keepAwake()
  document.addEventListener('visibilitychange', () => { if (!app.signaling.closed) keepAwake() })
  // Closing the tab or navigating away: tell the others at once, instead of a frozen
  // tile until the hub notices the dead connection.
  window.addEventListener('pagehide', () => {
    if (app.signaling && !app.signaling.closed) {
      app.signaling.broadcast({ kind: 'bye' })
      app.signaling.close()
    }
  })
  setInterval(refreshStats, 1000)
}

// Asks rtcdev for its echo peer in this room; it joins as the room's newcomer and
// offers, so the page meets it as it meets anyone.
async function askEcho () {
  try {
    const r = await fetch('/echo', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ room: app.room, relay: app.relayOnly })
    })
    if (r.ok) {
      toast(`rtcdev's echo is joining: you will see and hear yourself come back${app.relayOnly ? ' through TURN' : ''}.`)
    } else {
      notice(`The echo could not join: ${escapeHtml((await r.text()).trim())}`)
    }
  } catch (err) {
    notice(`The echo could not join: ${escapeHtml(String(err))}`)
  }
}

// The hub refused the join: say so on a screen of its own, with the way out.
function roomFull () {
  app.signaling.close()
  app.media.close()
  $('call').hidden = true
  $('full').hidden = false
  $('full-room').textContent = app.room
  $('full-size').textContent = String(app.roomSize)
  $('full-lobby').onclick = () => location.assign(`${location.pathname}?lobby=`)
  $('full-lobby').focus()
}

// What the badges and the others are told: a track that is off, muted by the system
// (iOS stops the camera of a page in the background) or ended counts as off.
function localState () {
  const live = (t) => t && t.readyState === 'live' && !t.muted && t.enabled
  const audio = app.media.stream ? app.media.stream.getAudioTracks()[0] : null
  return { audio: app.media.audioOn && live(audio), video: app.media.videoOn && live(app.media.cameraTrack) }
}

function showLocalState () {
  setBadges(tile('self'), localState())
  sendState()
}

// The system can take the camera or microphone away (another app, a phone call, the
// tab in the background, a device unplugged): say so and tell the others.
function watchLocalTracks () {
  for (const t of app.media.tracks()) {
    if (t.rtcdevWatched) continue
    t.rtcdevWatched = true
    t.addEventListener('mute', showLocalState)
    t.addEventListener('unmute', showLocalState)
    t.addEventListener('ended', () => {
      showLocalState()
      if (t === app.media.cameraTrack || t.kind === 'audio') {
        toast(`Your ${t.kind === 'audio' ? 'microphone' : 'camera'} stopped (another app may have taken it).`)
      }
    })
  }
}

async function keepAwake () {
  if (!('wakeLock' in navigator) || document.visibilityState !== 'visible') return
  try {
    app.wakeLock = await navigator.wakeLock.request('screen')
  } catch (err) {
    log(`screen wake lock: ${err.name}`)
  }
}

function displayName (meta, id) {
  const name = meta && typeof meta.name === 'string' && meta.name.trim()
  return name ? name.slice(0, 40) : `a guest (${String(id).slice(0, 6)})`
}

function addPeer (id, meta, weOffer) {
  meta = meta || {}
  const held = app.peers.get(id)
  // Someone we still hold joins again after losing their place: a connection that no
  // longer carries media is made anew (they offer, as a newcomer does).
  if (held && !weOffer && held.pc.connectionState !== 'connected') dropPeer(id, { quiet: true })
  if (app.peers.has(id)) {
    // Back under its own id (it resumed its place): its connection stands.
    if (app.rejoinTimers.has(id)) {
      clearTimeout(app.rejoinTimers.get(id))
      app.rejoinTimers.delete(id)
      log(`peer ${meta.name || id} is back`)
      sendState(id)
    }
    return
  }
  if (app.peers.size >= app.roomSize - 1) {
    log(`ignoring ${id}: the room holds ${app.roomSize}`)
    return
  }
  const peer = new Peer({
    id,
    meta,
    selfId: app.signaling.id,
    iceServers: app.iceServers,
    relayOnly: app.relayOnly,
    send: (data) => app.signaling.signal(peer.id, data),
    media: app.media,
    offerer: weOffer
  })
  app.peers.set(id, peer)
  if (app.reporter) app.reporter.watch(peer)
  const el = tile(id, meta.name || id)
  peer.noPathTimer = setTimeout(() => noPath(el, meta, id), NO_PATH_MS)
  const video = el.querySelector('video')
  video.addEventListener('loadeddata', () => {
    mark('first-frame')
    peer.firstFrame = { width: video.videoWidth, height: video.videoHeight }
  }, { once: true })
  peer.addEventListener('track', () => {
    mark('track')
    video.srcObject = peer.remoteStream
    // Only a blocked autoplay needs a tap; an interrupted play() (a new track) does not.
    video.play().catch((err) => { if (err.name === 'NotAllowedError') $('tap-audio').hidden = false })
  })
  peer.addEventListener('state', ({ detail }) => {
    el.dataset.state = detail
    // Media stopping is often the network changing under us: check the hub connection
    // at once rather than at the next keepalive.
    if (detail === 'disconnected' || detail === 'failed') app.signaling.probe()
    log(`${meta.name || id}: ${detail}`)
    // ICE found no path: say so on that person's tile, with what usually helps; the
    // message stays through the retries (an ICE restart goes back to connecting) until
    // a path is found.
    clearTimeout(peer.noPathTimer)
    if (detail === 'failed') noPath(el, meta, id)
    else if (detail === 'connected') el.querySelector('.problem')?.remove()
    else if (detail !== 'closed') peer.noPathTimer = setTimeout(() => noPath(el, meta, id), NO_PATH_MS)
    if (detail === 'connected') {
      mark('connected')
      sendState(peer.id)
      // Full size once the fast start is over (uplink.js), the first time only.
      if (!peer.fastStarted) {
        peer.fastStarted = true
        setTimeout(() => { peer.fastStartOver = true; replan() }, uplink.FAST_START_MS)
      }
      replan()
    }
    // A peer in its grace (gone from the room) whose media stops too is gone, unless the
    // path comes back by itself within a few seconds (a blip on the same network): should
    // it return later, a connection that carries nothing would be made anew anyway.
    if (detail === 'closed' || (detail === 'failed' && app.rejoinTimers.has(peer.id))) dropPeer(peer.id)
    if (detail === 'disconnected' && app.rejoinTimers.has(peer.id)) {
      setTimeout(() => {
        if (app.peers.get(peer.id) !== peer || !app.rejoinTimers.has(peer.id) || peer.pc.connectionState === 'connected') return
        log(`${peer.meta.name || peer.id}: gone from the room and no media for ${GRACE_DISCONNECTED_MS / 1000} s`)
        dropPeer(peer.id)
      }, GRACE_DISCONNECTED_MS)
    }
  })
  // The sending plan as soon as the senders exist: a page joining a big room does not
  // start every encoder at full rate first.
  peer.addEventListener('negotiated', () => { mark('negotiated'); replan() })
  // The sender's name is the one it joined with (relayed by the hub), never one a
  // message claims.
  peer.addEventListener('chat', ({ detail }) => chatLine(displayName(peer.meta, peer.id), detail.text))
  peer.addEventListener('chat-close', () => { if (app.rejoinTimers.has(peer.id)) dropPeer(peer.id) })
  peer.addEventListener('remote-state', ({ detail }) => setBadges(el, detail))
  peer.addEventListener('log', ({ detail }) => log(`${meta.name || id}: ${detail}`))
}

// The tile's message when no path reaches that person: after a failure, or when the
// far side's restarts keep a connection from ever failing or connecting.
function noPath (el, meta, id) {
  let problem = el.querySelector('.problem')
  if (!problem) {
    problem = document.createElement('div')
    problem.className = 'problem'
    problem.setAttribute('role', 'status')
    el.append(problem)
  }
  const relayed = app.iceServers.some((s) => [].concat(s.urls).some((u) => /^turns?:/.test(u)))
  problem.textContent = relayed
    ? `No connection to ${displayName(meta, id)}: the networks between you block every path, the ` +
      'relay (TURN) server included. One of you may be on a network that blocks it (a guest or office ' +
      'Wi-Fi); trying again.'
    : `No connection to ${displayName(meta, id)}: the networks between you block a direct path. ` +
      'Trying again; a TURN server relays around this (rtcdev serve --turn).'
}

function peerLeft (id) {
  const peer = app.peers.get(id)
  if (!peer) return
  if (peer.pc.connectionState === 'connected' && !peer.bye) {
    if (app.rejoinTimers.has(id)) return
    log(`signaling lost for ${peer.meta.name || id}; media still flows`)
    app.rejoinTimers.set(id, setTimeout(() => dropPeer(peer.id), REJOIN_GRACE_MS))
    return
  }
  dropPeer(id)
}

// Splits the uplink between the peers again (a peer came, went, or the video changed).
async function replan () {
  const peers = [...app.peers.values()].filter((p) => p.pc.connectionState !== 'closed')
  app.uplink = await uplink.apply(peers, !!app.media.screenTrack)
}

// `quiet`: the person is still here, only the connection to them is made anew.
function dropPeer (id, { quiet = false } = {}) {
  const peer = app.peers.get(id)
  if (!peer) return
  clearTimeout(app.rejoinTimers.get(id))
  app.rejoinTimers.delete(id)
  app.peers.delete(id)
  app.stats.delete(id)
  app.signaling.forget(id)
  clearTimeout(peer.noPathTimer)
  peer.close()
  removeTile(id)
  replan()
  if (quiet) return log(`new connection to ${peer.meta.name || id}`)
  log(`peer ${peer.meta.name || id} left`)
  toast(`${displayName(peer.meta, id)} left`)
}

async function onSignal (from, data) {
  if (!data || typeof data !== 'object') return
  if (data.kind === 'bye') {
    const p = app.peers.get(from)
    if (p) p.bye = true
    dropPeer(from)
    return
  }
  let peer = app.peers.get(from)
  const offer = data.kind === 'sdp' && data.description && data.description.type === 'offer'
  // Each side's connection has a session id. Another one means the far side made a new
  // connection: its offer replaces ours, and what belonged to the old one is dropped.
  let meta = { name: from }
  if (peer && data.session && peer.remoteSession && data.session !== peer.remoteSession) {
    if (!offer) return
    meta = peer.meta
    dropPeer(from, { quiet: true })
    peer = null
  }
  if (!peer && offer) {
    addPeer(from, meta, false)
    peer = app.peers.get(from)
  }
  if (!peer) return
  if (data.session && !peer.remoteSession) peer.remoteSession = data.session
  try {
    await peer.onSignal(data)
  } catch (err) {
    log(`signal from ${from} failed: ${err}`)
  }
}

function sendState (to) {
  if (!app.signaling) return
  const s = localState()
  const data = { kind: 'state', audio: s.audio, video: s.video || !!app.media.screenTrack }
  if (to) app.signaling.signal(to, data)
  else app.signaling.broadcast(data)
}

async function refreshStats () {
  for (const [id, peer] of app.peers) {
    try {
      const s = await summarize(peer.pc, app.stats.get(id))
      app.stats.set(id, s)
      const el = document.querySelector(`.tile[data-peer="${CSS.escape(id)}"] .stats`)
      if (el) el.textContent = format(s)
    } catch { /* closed meanwhile */ }
  }
}

function toggle (button, on) {
  button.setAttribute('aria-pressed', String(!on))
}

function wireControls () {
  $('mic').onclick = () => {
    app.media.setAudio(!app.media.audioOn)
    toggle($('mic'), app.media.audioOn)
    setBadges(tile('self'), { audio: app.media.audioOn, video: app.media.videoOn })
    sendState()
  }
  $('cam').onclick = () => {
    app.media.setVideo(!app.media.videoOn)
    toggle($('cam'), app.media.videoOn)
    setBadges(tile('self'), { audio: app.media.audioOn, video: app.media.videoOn })
    sendState()
  }
  $('switch').onclick = async () => {
    const me = tile('self')
    try {
      const track = await app.media.switchCamera()
      if (track && !app.media.screenTrack) for (const p of app.peers.values()) await p.replaceVideo(track)
    } catch (err) {
      log(`switch camera: ${err}`)
      toast(`Could not switch the camera (${err.name || err.message}); still using the one you had.`)
      if (app.media.cameraTrack && !app.media.screenTrack) for (const p of app.peers.values()) await p.replaceVideo(app.media.cameraTrack)
    }
    me.querySelector('video').srcObject = app.media.stream
    me.classList.toggle('mirrored', app.media.mirrored())
    watchLocalTracks()
    showLocalState()
    replan()
  }
  $('share').onclick = async () => {
    const me = tile('self')
    if (app.media.screenTrack) {
      app.media.stopScreen()
      for (const p of app.peers.values()) await p.replaceVideo(app.media.cameraTrack)
      me.classList.remove('screen')
      me.querySelector('video').srcObject = app.media.stream
      me.classList.toggle('mirrored', app.media.mirrored())
      toggle($('share'), true)
      replan()
      return
    }
    try {
      const track = await app.media.startScreen()
      for (const p of app.peers.values()) await p.replaceVideo(track)
      // A screen carries text: the encoder keeps its detail and drops frames instead.
      track.contentHint = 'detail'
      me.classList.add('screen')
      me.classList.remove('mirrored')
      me.querySelector('video').srcObject = new MediaStream([track])
      toggle($('share'), false)
      replan()
      track.onended = () => { if (app.media.screenTrack === track) $('share').click() }
    } catch (err) {
      log(`share screen: ${err}`)
      if (err.name !== 'NotAllowedError') toast(`Could not share the screen (${err.name || err.message}).`)
    }
  }
  $('copy').onclick = async () => {
    const link = `${location.origin}/?room=${encodeURIComponent(app.room)}`
    try { await navigator.clipboard.writeText(link); log('room link copied') } catch { prompt('Room link', link) }
  }
  $('qr').onclick = () => {
    $('qr-img').src = `/qr.svg?room=${encodeURIComponent(app.room)}`
    $('qr-link').textContent = `${location.origin}/?room=${app.room}`
    $('qr-dialog').showModal()
  }
  $('chat-toggle').onclick = () => { $('chat').hidden = !$('chat').hidden }
  $('debug-toggle').onclick = () => {
    $('debug').hidden = !$('debug').hidden
    document.body.classList.toggle('show-stats', !$('debug').hidden)
  }
  $('chat-form').onsubmit = (ev) => {
    ev.preventDefault()
    const text = $('chat-input').value.trim()
    if (!text) return
    app.sendChat(text)
    $('chat-input').value = ''
  }
  $('leave').onclick = () => app.leave()
  $('tap-audio').onclick = () => {
    for (const v of document.querySelectorAll('.tile video')) v.play().catch(() => {})
    $('tap-audio').hidden = true
  }
}

app.sendChat = (text) => {
  const msg = { text }
  for (const p of app.peers.values()) p.sendChat(msg)
  chatLine(`${app.name} (you)`, text)
}

app.leave = () => {
  if (app.signaling) {
    app.signaling.broadcast({ kind: 'bye' })
    app.signaling.close()
  }
  for (const id of [...app.peers.keys()]) dropPeer(id)
  app.media.close()
  // Back to the lobby, with the room filled in.
  location.assign(`${location.pathname}?lobby=${encodeURIComponent(app.room)}`)
}

const params = new URLSearchParams(location.search)
const room = params.get('room')
app.echo = params.has('echo')
app.relayOnly = params.has('relay')
if (room && ROOM_RE.test(room)) start(room, defaultName())
else lobby(params.get('lobby') || room)
