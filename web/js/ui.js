// DOM: video tiles, notices, the chat and signaling logs.

const $ = (id) => document.getElementById(id)
const LOG_LIMIT = 300

export { $ }

export function tile (id, label, { local = false } = {}) {
  let el = document.querySelector(`.tile[data-peer="${CSS.escape(id)}"]`)
  if (el) return el
  el = document.createElement('div')
  el.className = 'tile' + (local ? ' local' : '')
  el.dataset.peer = id
  const video = document.createElement('video')
  video.autoplay = true
  video.playsInline = true
  video.muted = local
  const name = document.createElement('span')
  name.className = 'label'
  name.textContent = label
  const stats = document.createElement('div')
  stats.className = 'stats'
  const badges = document.createElement('div')
  badges.className = 'badges'
  el.append(video, name, stats, badges)
  $('tiles').append(el)
  markPeers()
  return el
}

// Whether anyone else is on screen: a phone then shows its own picture small.
function markPeers () {
  $('tiles').classList.toggle('with-peers', !!document.querySelector('.tile:not(.local)'))
}

export function removeTile (id) {
  const el = document.querySelector(`.tile[data-peer="${CSS.escape(id)}"]`)
  if (el) {
    const v = el.querySelector('video')
    v.srcObject = null
    el.remove()
  }
  markPeers()
}

export function setBadges (el, { audio, video }) {
  el.dataset.audioMuted = String(!audio)
  el.dataset.videoMuted = String(!video)
  const b = el.querySelector('.badges')
  b.replaceChildren()
  for (const [on, text] of [[audio, 'mic off'], [video, 'cam off']]) {
    if (on) continue
    const s = document.createElement('span')
    s.className = 'badge'
    s.textContent = text
    b.append(s)
  }
}

export function notice (html) {
  const n = $('notice')
  if (!html) {
    n.hidden = true
    return
  }
  n.innerHTML = html
  n.hidden = false
}

// A short line over the call (who joined, who left) that fades after a few seconds;
// read out by screen readers.
export function toast (text) {
  let box = $('toasts')
  if (!box) {
    box = document.createElement('div')
    box.id = 'toasts'
    box.setAttribute('role', 'status')
    box.setAttribute('aria-live', 'polite')
    document.body.append(box)
  }
  const t = document.createElement('div')
  t.className = 'toast'
  t.textContent = text
  box.append(t)
  while (box.children.length > 4) box.firstChild.remove()
  setTimeout(() => t.remove(), 6000)
}

function append (listId, text, cls) {
  const list = $(listId)
  const li = document.createElement('li')
  li.textContent = text
  if (cls) li.className = cls
  list.append(li)
  while (list.children.length > LOG_LIMIT) list.firstChild.remove()
  list.scrollTop = list.scrollHeight
}

export function chatLine (name, text) {
  append('chat-log', `${name}: ${text}`)
}

export function eventLine (text) {
  append('event-log', `${new Date().toLocaleTimeString()} ${text}`)
}

export function escapeHtml (s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]))
}
