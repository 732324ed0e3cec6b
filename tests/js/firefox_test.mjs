// The calling page in Debian's Firefox ESR (driven over WebDriver BiDi by puppeteer-core,
// with Firefox's fake camera and microphone) and a Chromium page in one call, against
// `rtcdev serve`, inside the namespace netns.sh makes. Firefox trusts the page because
// `rtcdev cert --install` put the CA into its profile, as it does for a user's. Prints one
// JSON object a line. Usage: unshare --net sh netns.sh node firefox_test.mjs
import { execFileSync } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import puppeteer from 'puppeteer-core'
import { until, media, launch, check, serve, runChecks } from './lib.mjs'

const BIN = process.env.RTCDEV_BIN
const ORIGIN = 'https://localhost:8443'
const PROFILE = `${process.env.HOME}/.mozilla/firefox/rtcdev-test.default-esr`


function firefox () {
  return puppeteer.launch({
    browser: 'firefox',
    executablePath: '/usr/bin/firefox-esr',
    headless: true,
    userDataDir: PROFILE,
    extraPrefsFirefox: {
      // Fake camera and microphone, no permission prompt, media plays unmuted.
      'media.navigator.streams.fake': true,
      'media.navigator.permission.disabled': true,
      'media.autoplay.default': 0,
      'media.autoplay.blocking_policy': 0,
      // Host candidates as addresses (the namespace's veth pair), not mDNS names.
      'media.peerconnection.ice.obfuscate_host_addresses': false
    }
  })
}

async function joined (page, name) {
  await until(`${name} joined`, () => page.evaluate(() => !!(window.rtcdev.signaling && window.rtcdev.signaling.joined)))
  return page.evaluate(() => window.rtcdev.signaling.id)
}

async function checks () {
  const fx = await firefox()
  const { browser } = await launch()
  try {
    const fpage = await fx.newPage()
    await fpage.evaluateOnNewDocument(() => localStorage.setItem('rtcdev.name', 'Fox'))
    await check('firefox-trusts-the-ca', async () => {
      // No certificate exception anywhere: a certificate Firefox does not trust fails
      // the navigation.
      const res = await fpage.goto(`${ORIGIN}/?room=fx`)
      const secure = await fpage.evaluate(() => window.isSecureContext)
      if (!res.ok() || !secure) throw new Error(`status ${res.status()}, secure context ${secure}`)
      return { userAgent: await fpage.evaluate(() => navigator.userAgent) }
    })
    const fox = await joined(fpage, 'Fox')
    const cpage = await (await browser.newContext({ permissions: ['camera', 'microphone'] })).newPage()
    await cpage.addInitScript(() => localStorage.setItem('rtcdev.name', 'Chrome'))
    await cpage.goto(`${ORIGIN}/?room=fx`)
    const chrome = await joined(cpage, 'Chrome')
    await check('firefox-and-chromium-call', async () => {
      const both = async () => {
        const inFox = (await media(fpage))[chrome]
        const inChrome = (await media(cpage))[fox]
        const ok = (m) => m && m.state === 'connected' && m.frames > 10 && m.samples > 0
        return ok(inFox) && ok(inChrome) && { inFox, inChrome }
      }
      return until('video and audio both ways between Firefox and Chromium', both).catch(async (err) => {
        for (const [name, page] of [['Firefox', fpage], ['Chromium', cpage]]) {
          out({ log: name, media: await media(page).catch(String), events: await page.evaluate(() => window.rtcdev.events.slice(-40)).catch(String) })
        }
        throw err
      })
    })
    await check('inspector-shows-firefox-and-chromium', async () => {
      // Both browsers report their end of the connection; the laptop sees both.
      const both = await until('both ends in /inspect', () => cpage.evaluate(async ([f, c]) => {
        const st = await (await fetch('/inspect/state.json')).json()
        const room = st.rooms && st.rooms.fx
        const end = (a, b) => room && room[a] && room[a].connections[b]
        const live = (e) => e && e.state === 'connected' && e.summary && e.summary.kbpsIn > 0
        return live(end(f, c)) && live(end(c, f)) && { fox: { browser: room[f].browser, path: end(f, c).summary.path }, chrome: { browser: room[c].browser, path: end(c, f).summary.path } }
      }, [fox, chrome]))
      if (!/^Firefox \d+/.test(both.fox.browser) || !/^Chrome \d+/.test(both.chrome.browser)) throw new Error(`browsers: ${JSON.stringify(both)}`)
      return both
    })
    await check('firefox-chat-and-mute', async () => {
      await until('chat open in Firefox', () => fpage.evaluate(() => [...window.rtcdev.peers.values()].every((p) => p.chat && p.chat.readyState === 'open')))
      await fpage.evaluate(() => window.rtcdev.sendChat('hello from Firefox'))
      await until('Chromium reads Firefox', () => cpage.evaluate(() => document.getElementById('chat-log').textContent.includes('Fox: hello from Firefox')))
      await fpage.click('#mic')
      await until('Firefox muted at Chromium', () => cpage.evaluate((x) => document.querySelector(`.tile[data-peer="${x}"]`).dataset.audioMuted === 'true', fox))
      return {}
    })
  } finally {
    await fx.close()
    await browser.close()
  }
}

mkdirSync(PROFILE, { recursive: true })
execFileSync('certutil', ['-N', '-d', `sql:${PROFILE}`, '--empty-password'])
execFileSync(BIN, ['cert', '--install'], { env: { ...process.env, RTCDEV_TRUST_STORES: 'nss' }, stdio: 'ignore' })
const server = await serve(BIN, ['--bind', '127.0.0.1', '--port', '8443', '--quiet', '--no-qr', '--room', 'lobby'])
await runChecks(server, checks)
