#!/usr/bin/env node
/*
 * The dashboard in a real headless Chromium (Debian's chromium, driven by
 * npm's playwright-core from build/npm). Run by tests/integ/test_dashboard.py;
 * prints one JSON object with what it saw and exits 0 when every check
 * passed, 1 otherwise.
 *
 *   node tests/browser/dashboard.js --url http://127.0.0.1:PORT/ \
 *       --shot OUT.png [--expect SENSOR:QUANTITY ...] [--empty] [--lost]
 *       [--width 1280] [--height 900]
 *
 * --expect  the table must list these series and the charts must show them
 *           updating (their count of readings or their last value changes
 *           within 5 s)
 * --empty   the page must show the "no data yet" state instead
 * --lost    then print "STOP-SERVER" and wait for a line on stdin (the test
 *           stops the server), and check the lost-server banner appears
 *
 * Checks in every mode: the page loads, makes no console error or page
 * error (until the server is stopped on purpose), fetches nothing from any
 * other host. SPDX-License-Identifier: MIT
 */
'use strict';

const path = require('path');
const readline = require('readline');

const ROOT = path.resolve(__dirname, '..', '..');
const NPM = process.env.SENSORNET_NPM || path.join(ROOT, 'build', 'npm');

function args() {
  const a = { expect: [], width: 1280, height: 900 };
  const v = process.argv.slice(2);
  for (let i = 0; i < v.length; i++) {
    const k = v[i];
    if (k === '--url') a.url = v[++i];
    else if (k === '--shot') a.shot = v[++i];
    else if (k === '--shot-lost') a.shotLost = v[++i];
    else if (k === '--expect') a.expect.push(v[++i]);
    else if (k === '--empty') a.empty = true;
    else if (k === '--lost') a.lost = true;
    else if (k === '--width') a.width = Number(v[++i]);
    else if (k === '--height') a.height = Number(v[++i]);
    else throw new Error('unknown argument ' + k);
  }
  if (!a.url || !a.shot) throw new Error('--url and --shot are required');
  return a;
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

async function main() {
  const a = args();
  const { chromium } = require(path.join(NPM, 'node_modules', 'playwright-core'));
  const result = { ok: false, checks: [], console: [], foreign: [] };
  const check = (name, ok, detail) => {
    result.checks.push({ name, ok: !!ok, detail: detail === undefined ? null : detail });
    if (!ok) throw new Error('check failed: ' + name + (detail ? ' (' + JSON.stringify(detail) + ')' : ''));
  };
  // As root Chromium needs --no-sandbox; the rest keeps it from trying to
  // reach hosts this machine cannot reach (shared/environment-notes.md).
  // Playwright gives it a fresh --user-data-dir of its own.
  const browser = await chromium.launch({
    executablePath: process.env.SENSORNET_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--disable-dev-shm-usage'],
  });
  let stopping = false;
  try {
    const ctx = await browser.newContext({ viewport: { width: a.width, height: a.height }, colorScheme: 'light' });
    const page = await ctx.newPage();
    const origin = new URL(a.url).origin;
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') {
        result.console.push({ type: m.type(), text: m.text(), after_stop: stopping });
      }
    });
    page.on('pageerror', (e) => result.console.push({ type: 'pageerror', text: String(e), after_stop: stopping }));
    page.on('request', (r) => {
      const u = r.url();
      if (!u.startsWith(origin) && !u.startsWith('data:')) result.foreign.push(u);
    });

    const resp = await page.goto(a.url, { waitUntil: 'load', timeout: 15000 });
    check('page loads', resp && resp.status() === 200, resp && resp.status());
    await page.waitForSelector('#status.live', { timeout: 10000 });
    check('status says live', true);

    if (a.empty) {
      await page.waitForSelector('#empty:not([hidden])', { timeout: 5000 });
      check('empty state shown', await page.isVisible('#empty'));
      check('no table when empty', !(await page.isVisible('#sensors-section')));
    }

    for (const e of a.expect) {
      const [sensor, quantity] = e.split(':');
      const row = `#sensors tbody tr[data-sensor="${sensor}"][data-quantity="${quantity}"]`;
      await page.waitForSelector(row, { timeout: 10000 });
      const cells = await page.$$eval(row + ' td', (tds) => tds.map((t) => t.textContent));
      check('table row ' + e, cells.length === 7, cells);
      check('table value ' + e, /\d/.test(cells[2]), cells[2]);
      check('table says connected ' + e, cells[4] === 'connected', cells[4]);
      const card = `.card[data-sensor="${sensor}"][data-quantity="${quantity}"]`;
      await page.waitForSelector(card + '[data-points]', { timeout: 10000 });
      await page.waitForFunction((sel) => {
        const c = document.querySelector(sel);
        return c && Number(c.dataset.points) > 0 && c.querySelector('polyline, circle');
      }, card, { timeout: 10000 });
      check('chart drawn ' + e, true);
    }
    if (a.expect.length) {
      // Live: within 5 s some chart shows more readings or a new last value.
      const snap = () => page.$$eval('.card', (cs) => cs.map((c) => c.dataset.readings + '/' + c.dataset.last + '/' + c.querySelector('.card-last').textContent));
      const before = await snap();
      const t0 = Date.now();
      let after = before;
      while (Date.now() - t0 < 5000) {
        await sleep(250);
        after = await snap();
        if (after.some((v, i) => v !== before[i])) break;
      }
      check('charts update within 5 s', after.some((v, i) => v !== before[i]),
        { before, after, ms: Date.now() - t0 });
      result.update_ms = Date.now() - t0;
      result.cards = await page.$$eval('.card', (cs) => cs.map((c) => ({
        sensor: c.dataset.sensor, quantity: c.dataset.quantity,
        points: Number(c.dataset.points), readings: Number(c.dataset.readings),
        last: c.querySelector('.card-last').textContent,
      })));

      // Time ranges: 1 h redraws from /api/series with the new range.
      const seriesReq = page.waitForRequest((r) => r.url().includes('/api/series') && r.url().includes('from=-1h'), { timeout: 5000 });
      await page.click('.ranges button[data-range="1h"]');
      await seriesReq;
      await page.waitForFunction(() => document.querySelector('#range-label').textContent === 'last hour', null, { timeout: 5000 });
      check('range 1 h selected', await page.getAttribute('.ranges button[data-range="1h"]', 'aria-pressed') === 'true');
      await page.click('.ranges button[data-range="5m"]');
      await page.waitForFunction(() => document.querySelector('#range-label').textContent === 'last 5 minutes', null, { timeout: 5000 });
      await sleep(300);
    }
    await page.screenshot({ path: a.shot, fullPage: true });
    result.screenshot = a.shot;

    const errors = result.console.filter((m) => !m.after_stop);
    check('no console errors', errors.length === 0, errors);
    check('nothing fetched from other hosts', result.foreign.length === 0, result.foreign);

    if (a.lost) {
      stopping = true;
      process.stdout.write('STOP-SERVER\n');
      const rl = readline.createInterface({ input: process.stdin });
      await new Promise((r) => rl.once('line', r));
      rl.close();
      await page.waitForSelector('#lost:not([hidden])', { timeout: 8000 });
      check('lost-server banner shown', await page.isVisible('#lost'));
      check('status says unreachable', (await page.textContent('#status-text')) === 'Server unreachable');
      if (a.shotLost) await page.screenshot({ path: a.shotLost, fullPage: true });
    }
    result.ok = true;
  } catch (e) {
    result.error = String(e && e.stack ? e.stack : e);
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(result.ok ? 0 : 1);
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e) }) + '\n');
  process.exit(1);
});
