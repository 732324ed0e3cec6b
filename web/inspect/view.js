// The inspector view: polls /inspect/state.json and draws each room's connections, both
// ends side by side, with the merged timeline under each.

const $ = (id) => document.getElementById(id)

function el (tag, attrs = {}, ...children) {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v)
  for (const c of children) e.append(c == null ? '' : c)
  return e
}

function who (pages, id) {
  const p = pages[id]
  return p ? `${p.name || id.slice(0, 8)} (${p.browser})` : id.slice(0, 8)
}

function sideCells (side) {
  if (!side) return [el('td', {}, 'no report'), el('td'), el('td'), el('td'), el('td'), el('td'), el('td')]
  const s = side.summary || {}
  return [
    el('td', { class: side.state }, side.state || '?'),
    el('td', {}, s.path || ''),
    el('td', {}, s.rttMs != null ? `${s.rttMs} ms` : ''),
    el('td', {}, `${s.kbpsIn ?? '?'} / ${s.kbpsOut ?? '?'} kb/s`),
    el('td', {}, s.lossPct != null ? `${s.lossPct}%` : ''),
    el('td', {}, s.resolution ? `${s.resolution} ${s.fps ?? ''} fps` : ''),
    el('td', {}, graph(side))
  ]
}

// A small line graph over the last reports of the given keys (solid, then dashed),
// scaled to the highest value.
function lines (h, keys, label, unit) {
  const W = 120
  const H = 28
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg')
  svg.setAttribute('width', W)
  svg.setAttribute('height', H)
  svg.setAttribute('role', 'img')
  const top = Math.max(1, ...h.flatMap((p) => keys.map((k) => p[k] || 0)))
  svg.setAttribute('aria-label', `${label} over the last ${h.length} reports, up to ${top} ${unit}`)
  keys.forEach((key, n) => {
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline')
    line.setAttribute('points', h.map((p, i) => `${(i * (W - 2)) / Math.max(1, h.length - 1) + 1},${H - 1 - ((p[key] || 0) / top) * (H - 2)}`).join(' '))
    line.setAttribute('fill', 'none')
    line.setAttribute('stroke', 'currentColor')
    if (n) line.setAttribute('stroke-dasharray', '3 2')
    svg.append(line)
  })
  return svg
}

// Bitrate in (solid) and out (dashed), the round trip and the loss, over the last
// reports.
function graph (side) {
  const h = (side && side.history) || []
  const box = document.createElement('span')
  box.append(lines(h, ['kbpsIn', 'kbpsOut'], 'bitrate in and out', 'kb/s'), ' ', lines(h, ['rttMs'], 'round trip', 'ms'),
    ' ', lines(h, ['lossPct'], 'packets lost', '%'))
  return box
}

function timeline (pages, a, b, sa, sb) {
  const rows = []
  for (const [id, side] of [[a, sa], [b, sb]]) {
    for (const e of (side && side.timeline) || []) rows.push({ ...e, who: pages[id] ? (pages[id].name || id.slice(0, 8)) : id })
  }
  rows.sort((x, y) => x.at - y.at)
  const t0 = rows.length ? rows[0].at : 0
  const body = el('tbody')
  for (const r of rows.slice(-120)) body.append(el('tr', {}, el('td', {}, `+${((r.at - t0) / 1000).toFixed(1)} s`), el('td', {}, r.who), el('td', {}, r.kind), el('td', {}, r.detail)))
  const candidates = (side) => side ? `gathered ${Object.entries(side.local).map(([k, n]) => `${n} ${k}`).join(', ') || 'none'}; received ${Object.entries(side.remote).map(([k, n]) => `${n} ${k}`).join(', ') || 'none'}${side.errors.length ? '; errors: ' + side.errors.join(' | ') : ''}` : 'no report'
  return el('details', {},
    el('summary', {}, 'Timeline and candidates'),
    el('p', {}, `${who(pages, a)}: ${candidates(sa)}`),
    el('p', {}, `${who(pages, b)}: ${candidates(sb)}`),
    el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'time'), el('th', {}, 'who'), el('th', {}, 'what'), el('th', {}, 'detail'))), body))
}

function draw (state) {
  const root = $('rooms')
  const open = new Set([...root.querySelectorAll('details[open]')].map((d) => d.dataset.key))
  root.replaceChildren()
  const rooms = Object.entries(state.rooms || {})
  if (!rooms.length) root.append(el('p', {}, 'Nobody is in a call yet.'))
  for (const [room, reported] of rooms) {
    // The keys are what devices reported: looked up without a prototype, so a page
    // that calls itself "constructor" is just a name.
    const pages = Object.assign(Object.create(null), reported)
    for (const page of Object.values(pages)) page.connections = Object.assign(Object.create(null), page.connections)
    const section = el('section', { 'data-room': room }, el('h2', {}, `Room ${room}`))
    const table = el('table', {}, el('thead', {}, el('tr', {},
      ...['connection', 'seen from', 'state', 'path', 'rtt', 'in / out', 'loss', 'video', 'kb/s in — out - -, rtt, loss'].map((h) => el('th', {}, h)))))
    const body = el('tbody')
    const pairs = new Set()
    for (const [a, page] of Object.entries(pages)) {
      for (const b of Object.keys(page.connections)) pairs.add([a, b].sort().join(' '))
    }
    const details = []
    for (const key of pairs) {
      const [a, b] = key.split(' ')
      const sa = pages[a] && pages[a].connections[b]
      const sb = pages[b] && pages[b].connections[a]
      body.append(el('tr', { 'data-pair': key }, el('td', { rowspan: '2' }, `${who(pages, a)} ↔ ${who(pages, b)}`), el('td', {}, pages[a] ? pages[a].name || a.slice(0, 8) : a.slice(0, 8)), ...sideCells(sa)))
      body.append(el('tr', {}, el('td', {}, pages[b] ? pages[b].name || b.slice(0, 8) : b.slice(0, 8)), ...sideCells(sb)))
      // What rtcdev made of it, from either end (the terminal says it too).
      const said = [sa, sb].map((x) => x && x.verdict).filter(Boolean)
      if (said.length) body.append(el('tr', { class: 'verdict' }, el('td', { colspan: '10' }, said.join('\n'))))
      const d = timeline(pages, a, b, sa, sb)
      d.dataset.key = `${room} ${key}`
      if (open.has(d.dataset.key)) d.open = true
      details.push(d)
    }
    table.append(body)
    section.append(table, ...details)
    root.append(section)
  }
}

async function poll () {
  try {
    const res = await fetch('/inspect/state.json', { cache: 'no-store' })
    if (res.ok) {
      const state = await res.json()
      window.inspectorState = state
      draw(state)
    }
  } catch { /* the server is away: try again */ }
  setTimeout(poll, 1000)
}

poll()
