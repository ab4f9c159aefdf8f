// A page driver for detour's e2e tests: Debian's Chromium under playwright-core, steered
// by the Rust test (detour_e2e::browser) over stdin/stdout, one JSON object per line.
//
//   → {"id": 1, "cmd": "open", "url": "http://...", "width": 1400, "height": 900}
//   ← {"id": 1, "ok": true, "value": ...}   or   {"id": 1, "ok": false, "error": "..."}
//
// Commands: open, eval (an expression in the page, evaluated over the DevTools protocol,
// which the page's CSP does not govern), waitFor (polls until an expression in the page
// is truthy; returns its value), screenshot, console (what the page logged, page
// errors and CSP violations included), close. Assertions stay in Rust; this only acts.
//
// The browser is never downloaded: CHROMIUM_BIN (default /usr/bin/chromium). Without
// the background-networking flags Chromium tries to reach Google's services, which a
// closed network refuses, and it stalls. Playwright gives every launch a fresh, empty
// profile directory.
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const executablePath = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let browser = null;
let page = null;
const consoleLines = [];

function reply(message) {
  process.stdout.write(JSON.stringify(message) + '\n');
}

async function open({ url, width = 1400, height = 900 }) {
  if (!browser) {
    browser = await chromium.launch({ executablePath, headless: true, args: FLAGS });
  }
  if (page) await page.close();
  page = await browser.newPage({ viewport: { width, height } });
  page.on('console', (m) => consoleLines.push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  page.on('requestfailed', (r) => {
    // The event stream is cut when the page closes; that is not a failure of the page.
    if (!r.url().endsWith('/v1/status/events')) {
      consoleLines.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`);
    }
  });
  const response = await page.goto(url, { waitUntil: 'domcontentloaded' });
  return { status: response ? response.status() : null };
}

function needPage() {
  if (!page) throw new Error('no page: send "open" first');
  return page;
}

const commands = {
  open,
  eval: async ({ expr }) => needPage().evaluate(expr),
  // Polled from here: Playwright's waitForFunction evaluates strings inside the page,
  // which the page's Content-Security-Policy (no 'unsafe-eval') rightly refuses, and
  // the test must not weaken it (bypassCSP) to look at the page.
  waitFor: async ({ expr, timeoutMs = 10000 }) => {
    const deadline = Date.now() + timeoutMs;
    let last;
    for (;;) {
      last = await needPage().evaluate(expr);
      if (last) return last;
      if (Date.now() >= deadline) {
        throw new Error(`still ${JSON.stringify(last)} after ${timeoutMs} ms: ${expr}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  },
  screenshot: async ({ path, fullPage = false }) => {
    await needPage().screenshot({ path, fullPage });
    return path;
  },
  console: async () => consoleLines.splice(0),
  close: async () => {
    if (browser) await browser.close();
    browser = null;
    page = null;
    return true;
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let request;
  try {
    request = JSON.parse(line);
  } catch (e) {
    reply({ id: null, ok: false, error: `not JSON: ${e.message}` });
    continue;
  }
  const command = commands[request.cmd];
  if (!command) {
    reply({ id: request.id, ok: false, error: `unknown command ${request.cmd}` });
    continue;
  }
  try {
    const value = await command(request);
    reply({ id: request.id, ok: true, value: value === undefined ? null : value });
  } catch (e) {
    reply({ id: request.id, ok: false, error: String(e && e.stack ? e.stack : e) });
  }
  if (request.cmd === 'close') break;
}
if (browser) await browser.close();
