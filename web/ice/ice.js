// The ICE test page: gathers candidates on this device against each STUN and TURN URL
// (one RTCPeerConnection per URL, so every candidate and error belongs to one server),
// gives each a verdict in `rtcdev probe`'s words, and sends the result to rtcdev, which
// prints it in its terminal.

const GATHER_TIMEOUT_MS = 10000
const $ = (id) => document.getElementById(id)

// A candidate error's code, as the probe names the class.
function failureOf (code) {
  if (code === 401) return 'auth'
  if (code === 403 || code === 486) return 'forbidden'
  if (code === 701) return 'unreachable'
  return 'error'
}

// A URL's host is a loopback address (rtcdev lists one for pages on its own machine).
const LOOPBACK = /^turns?:(127\.|\[::1\]|localhost[:?]|localhost$)|^stuns?:(127\.|\[::1\]|localhost[:?]|localhost$)/
const onThisMachine = ['localhost', '127.0.0.1', '[::1]'].includes(location.hostname) || location.hostname.startsWith('127.')

// Each URL of each server entry on its own, with that entry's credentials. Loopback
// URLs are left out on another device: there they name the device itself.
function expand (servers) {
  const out = []
  for (const s of servers) {
    for (const url of [].concat(s.urls || [])) {
      if (!onThisMachine && LOOPBACK.test(url)) continue
      out.push({ url, server: { urls: url, username: s.username, credential: s.credential } })
    }
  }
  return out
}

function row (cells) {
  const tr = document.createElement('tr')
  for (const c of cells) {
    const td = document.createElement('td')
    td.textContent = c == null ? '' : String(c)
    tr.append(td)
  }
  $('rows').append(tr)
}

// Gathers against one URL and decides.
async function test ({ url, server }) {
  const turn = /^turns?:/.test(url)
  const started = performance.now()
  const pc = new RTCPeerConnection({ iceServers: [server] })
  const found = { srflx: [], relay: [], host: 0 }
  const errors = []
  const done = new Promise((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), GATHER_TIMEOUT_MS)
    pc.onicecandidate = ({ candidate }) => {
      if (!candidate || !candidate.candidate) { clearTimeout(timer); resolve('complete'); return }
      const ms = Math.round(performance.now() - started)
      const c = candidate
      row([ms, url, c.component, c.type, c.protocol, c.address, c.port, c.relayProtocol, ''])
      if (c.type === 'host') found.host++
      if (c.type === 'srflx') found.srflx.push(`${c.address}:${c.port}`)
      if (c.type === 'relay') found.relay.push({ at: `${c.address}:${c.port}`, over: c.relayProtocol || (url.includes('transport=tcp') ? 'tcp' : 'udp'), ms })
    }
    pc.onicecandidateerror = (e) => {
      const ms = Math.round(performance.now() - started)
      errors.push({ code: e.errorCode, text: e.errorText })
      row([ms, url, '', '', '', e.address, e.port, '', `${e.errorCode} ${e.errorText}`])
    }
  })
  pc.createDataChannel('ice-test')
  await pc.setLocalDescription(await pc.createOffer())
  const how = await done
  pc.close()
  const ms = Math.round(performance.now() - started)
  const err = errors.find((e) => e.code !== 701) || errors[0]
  if (turn) {
    if (found.relay.length) {
      const r = found.relay[0]
      return { url, verdict: 'ok', detail: `relay ${r.at} allocated over ${r.over}`, ms: r.ms }
    }
    if (err) return { url, verdict: 'fail', failure: failureOf(err.code), detail: `${err.code} ${err.text}`.trim(), ms }
    return { url, verdict: 'fail', failure: 'unreachable', detail: how === 'timeout' ? `no answer within ${GATHER_TIMEOUT_MS} ms` : 'no relay candidate', ms }
  }
  if (found.srflx.length) return { url, verdict: 'ok', detail: `mapped address ${found.srflx[0]}`, ms }
  if (err) return { url, verdict: 'fail', failure: failureOf(err.code), detail: `${err.code} ${err.text}`.trim(), ms }
  if (how === 'timeout') return { url, verdict: 'fail', failure: 'unreachable', detail: `no answer within ${GATHER_TIMEOUT_MS} ms`, ms }
  // Browsers leave out a mapped address equal to a host one (no NAT in between); one
  // that cannot report errors leaves a silent server looking the same.
  if (!('onicecandidateerror' in RTCPeerConnection.prototype)) return { url, verdict: 'fail', failure: 'unreachable', detail: 'no mapped address (this browser does not report STUN errors)', ms }
  return { url, verdict: 'ok', detail: 'answered; the mapped address is this device\'s own (no NAT in between)', ms }
}

function show (results) {
  const list = $('verdicts')
  list.replaceChildren()
  for (const r of results) {
    const li = document.createElement('li')
    const v = document.createElement('span')
    v.className = r.verdict === 'ok' ? 'ok' : 'fail'
    v.textContent = r.verdict === 'ok' ? 'OK' : `FAIL (${r.failure})`
    li.append(v, ` ${r.url}: ${r.detail} (${r.ms} ms)`)
    list.append(li)
  }
  if (!results.length) list.innerHTML = '<li>No STUN or TURN server to test: rtcdev serve --turn runs one.</li>'
}

async function run (ev) {
  ev.preventDefault()
  let servers
  try {
    servers = JSON.parse($('servers').value || '[]')
    if (!Array.isArray(servers)) throw new Error('not a list')
  } catch (err) {
    $('verdicts').innerHTML = ''
    $('verdicts').textContent = `The ICE servers are not a JSON list: ${err.message}`
    return
  }
  $('run').disabled = true
  $('rows').replaceChildren()
  $('verdicts').innerHTML = '<li>Testing…</li>'
  const device = $('device').value.trim()
  localStorage.setItem('rtcdev.device', device)
  try {
    const results = await Promise.all(expand(servers).map(test))
    show(results)
    window.iceResults = results
    const res = await fetch('/ice/report', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ device, results })
    })
    $('sent').textContent = res.ok ? 'Sent to the rtcdev terminal.' : `The rtcdev terminal did not take the result (${res.status}).`
  } catch (err) {
    $('sent').textContent = `Failed: ${err.message}`
  } finally {
    $('run').disabled = false
  }
}

async function init () {
  $('device').value = localStorage.getItem('rtcdev.device') || ''
  try {
    const config = await (await fetch('/config.json')).json()
    $('servers').value = JSON.stringify(config.iceServers || [], null, 2)
  } catch {
    $('servers').value = '[]'
  }
  $('form').onsubmit = run
}

init()
