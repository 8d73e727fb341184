/*
 * sensornet dashboard: polls the server's own API every 2 seconds
 * (/api/sensors, then /api/series for each sensor and quantity) and draws
 * a table and one SVG chart per series. No libraries, no network access
 * beyond this server. SPDX-License-Identifier: MIT
 */
'use strict';

(function () {
  const POLL_MS = 2000;
  const MAX_CHARTS = 48;
  const RANGES = {
    '5m': { ms: 5 * 60e3, label: 'last 5 minutes' },
    '1h': { ms: 3600e3, label: 'last hour' },
    '24h': { ms: 24 * 3600e3, label: 'last 24 hours' },
    '7d': { ms: 7 * 24 * 3600e3, label: 'last 7 days' },
  };
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const state = {
    range: '5m',
    cards: new Map(),   // "sensor\u0000quantity" -> card
    rows: new Map(),    // same key -> table row
    lastOk: 0,
    failures: 0,
    timer: 0,
    busy: false,
  };

  const $ = (id) => document.getElementById(id);

  // ---- formatting --------------------------------------------------------

  function fmtValue(v) {
    if (v === null || v === undefined || !isFinite(v)) return '–';
    const a = Math.abs(v);
    const digits = a >= 1000 ? 1 : a >= 100 ? 2 : a >= 1 ? 2 : 4;
    return v.toLocaleString(undefined, { maximumFractionDigits: digits });
  }

  function fmtAge(s) {
    if (s === null || s === undefined || !isFinite(s)) return '–';
    if (s < 0) s = 0;
    if (s < 1) return 'now';
    if (s < 60) return Math.floor(s) + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' d ago';
  }

  function pad2(n) { return (n < 10 ? '0' : '') + n; }

  function fmtClock(ms, withSeconds) {
    const d = new Date(ms);
    return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) +
      (withSeconds ? ':' + pad2(d.getSeconds()) : '');
  }

  function fmtTick(ms, span, step) {
    const d = new Date(ms);
    if (span <= 10 * 60e3) return fmtClock(ms, step < 60e3);
    if (span <= 26 * 3600e3) return fmtClock(ms, false);
    return d.toLocaleDateString(undefined, { weekday: 'short' }) + ' ' + fmtClock(ms, false);
  }

  function fmtFull(ms) {
    return new Date(ms).toLocaleString(undefined, { hour12: false });
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  const keyOf = (s) => s.sensor + '\u0000' + s.quantity;

  // ---- data --------------------------------------------------------------

  async function getJSON(url) {
    const r = await fetch(url, { cache: 'no-store' });
    if (!r.ok) {
      let msg = r.status + ' ' + r.statusText;
      try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
      const err = new Error(msg);
      err.status = r.status;
      throw err;
    }
    return r.json();
  }

  function seriesURL(s) {
    const q = new URLSearchParams({
      sensor: s.sensor, quantity: s.quantity,
      from: '-' + state.range, to: 'now',
    });
    return '/api/series?' + q.toString();
  }

  async function poll() {
    if (state.busy) return;
    state.busy = true;
    try {
      const list = await getJSON('/api/sensors');
      const shown = list.sensors.slice(0, MAX_CHARTS);
      const series = await Promise.all(shown.map((s) =>
        getJSON(seriesURL(s)).catch((e) => (e.status ? { error: e.message } : Promise.reject(e)))));
      render(list, shown, series);
      online();
    } catch (e) {
      offline(e);
    } finally {
      state.busy = false;
    }
  }

  function schedule() {
    clearTimeout(state.timer);
    state.timer = setTimeout(async () => { await poll(); schedule(); }, POLL_MS);
  }

  // ---- connection state --------------------------------------------------

  function online() {
    state.lastOk = Date.now();
    state.failures = 0;
    $('lost').hidden = true;
    document.body.classList.remove('stale');
    const st = $('status');
    st.className = 'status live';
    $('status-text').textContent = 'Live';
    $('updated').textContent = 'Updated ' + fmtClock(state.lastOk, true);
  }

  function offline(e) {
    state.failures++;
    const st = $('status');
    st.className = 'status lost';
    $('status-text').textContent = 'Server unreachable';
    $('lost').hidden = false;
    $('lost-text').textContent = state.lastOk
      ? 'Retrying every 2 seconds. The data below is from ' + fmtClock(state.lastOk, true) + '.'
      : 'Retrying every 2 seconds (' + (e && e.message ? e.message : 'no answer') + ').';
    if (state.lastOk) document.body.classList.add('stale');
  }

  // ---- the table ---------------------------------------------------------

  function renderTable(list) {
    const tbody = $('sensors').tBodies[0];
    const seen = new Set();
    list.sensors.forEach((s) => {
      const key = keyOf(s);
      seen.add(key);
      let row = state.rows.get(key);
      if (!row) {
        row = document.createElement('tr');
        row.dataset.sensor = s.sensor;
        row.dataset.quantity = s.quantity;
        for (let i = 0; i < 7; i++) row.appendChild(el('td'));
        row.cells[2].className = 'num value';
        row.cells[3].className = 'num';
        row.cells[5].className = 'num';
        row.cells[0].textContent = s.sensor;
        row.cells[1].textContent = s.quantity;
        state.rows.set(key, row);
      }
      tbody.appendChild(row); // keeps the server's order
      row.cells[2].textContent = fmtValue(s.last_value) + (s.unit ? ' ' + s.unit : '');
      row.cells[3].textContent = fmtAge(s.age_s);
      row.cells[3].classList.toggle('age-stale', s.age_s > 60);
      const pill = el('span', 'pill ' + (s.connected ? 'on' : 'off'),
        s.connected ? 'connected' : 'offline');
      row.cells[4].replaceChildren(pill);
      row.cells[5].textContent = Number(s.count).toLocaleString();
      row.cells[6].textContent = s.peer || '–';
      row.cells[6].className = 'muted';
    });
    for (const [key, row] of state.rows) {
      if (!seen.has(key)) { row.remove(); state.rows.delete(key); }
    }
  }

  // ---- the charts --------------------------------------------------------

  function makeCard(s) {
    const card = el('article', 'card');
    card.dataset.sensor = s.sensor;
    card.dataset.quantity = s.quantity;
    const head = el('div', 'card-head');
    head.appendChild(el('span', 'card-title', s.sensor));
    head.appendChild(el('span', 'card-sub', s.quantity));
    const last = el('span', 'card-last');
    head.appendChild(last);
    const chart = el('div', 'chart');
    const foot = el('div', 'card-foot');
    const left = el('span');
    const right = el('span');
    foot.append(left, right);
    card.append(head, chart, foot);
    const c = { card, last, chart, left, right, data: null, meta: s };
    chart.addEventListener('mousemove', (ev) => hover(c, ev));
    chart.addEventListener('mouseleave', () => unhover(c));
    return c;
  }

  function niceStep(span, n) {
    const raw = span / Math.max(1, n);
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
  }

  const TIME_STEPS = [1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3,
    900e3, 1800e3, 3600e3, 7200e3, 3 * 3600e3, 6 * 3600e3, 12 * 3600e3, 86400e3];

  function drawChart(c) {
    const d = c.data;
    const box = c.chart.getBoundingClientRect();
    const W = Math.max(200, Math.round(box.width));
    const H = Math.max(120, Math.round(box.height));
    const m = { l: 52, r: 12, t: 8, b: 26 };
    const pw = W - m.l - m.r;
    const ph = H - m.t - m.b;
    const root = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img',
      'aria-label': c.meta.sensor + ' ' + c.meta.quantity + ', ' + RANGES[state.range].label });
    const x0 = d.fromMs;
    const x1 = d.toMs;
    const pts = d.points;
    let lo = Infinity;
    let hi = -Infinity;
    pts.forEach((p) => { if (p.min < lo) lo = p.min; if (p.max > hi) hi = p.max; });
    c.chart.replaceChildren(root);
    if (!pts.length) {
      const nd = el('div', 'nodata', 'No readings in the ' + RANGES[state.range].label);
      c.chart.appendChild(nd);
      lo = 0; hi = 1;
    }
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    const ystep = niceStep(hi - lo, 4);
    lo = Math.floor(lo / ystep) * ystep;
    hi = Math.ceil(hi / ystep) * ystep;
    const X = (t) => m.l + ((t - x0) / (x1 - x0)) * pw;
    const Y = (v) => m.t + (1 - (v - lo) / (hi - lo)) * ph;
    c.X = X; c.Y = Y; c.m = m; c.W = W; c.H = H;

    const axis = svg('g', { class: 'axis' });
    for (let v = lo; pts.length && v <= hi + ystep / 2; v += ystep) {
      const y = Y(v).toFixed(1);
      axis.appendChild(svg('line', { class: 'gridline', x1: m.l, x2: W - m.r, y1: y, y2: y }));
      const t = svg('text', { x: m.l - 6, y: Number(y) + 4, 'text-anchor': 'end' });
      t.textContent = fmtValue(Math.abs(v) < ystep / 1e6 ? 0 : v);
      axis.appendChild(t);
    }
    const span = x1 - x0;
    const tstep = TIME_STEPS.find((s) => span / s <= Math.max(2, Math.floor(pw / 90))) || 86400e3;
    const tz = new Date().getTimezoneOffset() * 60e3;
    for (let t = Math.ceil((x0 - tz) / tstep) * tstep + tz; t <= x1; t += tstep) {
      const x = X(t);
      const lbl = svg('text', { x: x.toFixed(1), y: H - 6, 'text-anchor': 'middle' });
      lbl.textContent = fmtTick(t, span, tstep);
      axis.appendChild(lbl);
    }
    root.appendChild(axis);

    // Runs of buckets without gaps become one band and one line each.
    const gap = d.stepMs * 2.5;
    const runs = [];
    let run = [];
    pts.forEach((p, i) => {
      if (i && p.t - pts[i - 1].t > gap) { runs.push(run); run = []; }
      run.push(p);
    });
    if (run.length) runs.push(run);
    const half = d.stepMs / 2;
    runs.forEach((r) => {
      const top = r.map((p) => X(p.t + half).toFixed(1) + ',' + Y(p.max).toFixed(1));
      const bot = r.slice().reverse().map((p) => X(p.t + half).toFixed(1) + ',' + Y(p.min).toFixed(1));
      root.appendChild(svg('polygon', { class: 'band', points: top.concat(bot).join(' ') }));
      const line = r.map((p) => X(p.t + half).toFixed(1) + ',' + Y(p.avg).toFixed(1));
      if (r.length === 1) {
        root.appendChild(svg('circle', { class: 'dotlast', cx: line[0].split(',')[0], cy: line[0].split(',')[1], r: 2.5 }));
      } else {
        root.appendChild(svg('polyline', { class: 'line', points: line.join(' ') }));
      }
    });
    if (pts.length) {
      const p = pts[pts.length - 1];
      root.appendChild(svg('circle', { class: 'dotlast', cx: X(p.t + half).toFixed(1), cy: Y(p.avg).toFixed(1), r: 3 }));
    }
    c.cursor = svg('line', { class: 'cursor', y1: m.t, y2: H - m.b, x1: m.l, x2: m.l, visibility: 'hidden' });
    root.appendChild(c.cursor);
  }

  function hover(c, ev) {
    if (!c.data || !c.data.points.length || !c.X) return;
    const box = c.chart.getBoundingClientRect();
    const px = (ev.clientX - box.left) * (c.W / box.width);
    const half = c.data.stepMs / 2;
    let best = null;
    let bd = Infinity;
    c.data.points.forEach((p) => {
      const dx = Math.abs(c.X(p.t + half) - px);
      if (dx < bd) { bd = dx; best = p; }
    });
    if (!best) return;
    const x = c.X(best.t + half);
    c.cursor.setAttribute('x1', x);
    c.cursor.setAttribute('x2', x);
    c.cursor.setAttribute('visibility', 'visible');
    const tip = $('tip');
    const u = c.meta.unit ? ' ' + c.meta.unit : '';
    tip.textContent = fmtFull(best.t) + ' — avg ' + fmtValue(best.avg) + u +
      ', min ' + fmtValue(best.min) + ', max ' + fmtValue(best.max) + ' (' + best.count + ')';
    tip.hidden = false;
    tip.style.left = Math.min(ev.clientX + 12, window.innerWidth - tip.offsetWidth - 8) + 'px';
    tip.style.top = (ev.clientY + 14) + 'px';
  }

  function unhover(c) {
    $('tip').hidden = true;
    if (c.cursor) c.cursor.setAttribute('visibility', 'hidden');
  }

  function renderCharts(shown, series) {
    const box = $('charts');
    const seen = new Set();
    shown.forEach((s, i) => {
      const key = keyOf(s);
      seen.add(key);
      let c = state.cards.get(key);
      if (!c) { c = makeCard(s); state.cards.set(key, c); }
      box.appendChild(c.card);
      c.meta = s;
      const r = series[i];
      c.last.replaceChildren(document.createTextNode(fmtValue(s.last_value)));
      if (s.unit) c.last.appendChild(el('span', 'unit', s.unit));
      if (r.error) {
        c.data = { points: [], fromMs: Date.now() - RANGES[state.range].ms, toMs: Date.now(), stepMs: 1000 };
        drawChart(c);
        c.left.textContent = 'Error: ' + r.error;
        return;
      }
      const pts = r.points.map((p) => ({ t: Number(p.ts) / 1e6, min: p.min, max: p.max, avg: p.avg, count: p.count }));
      c.data = { points: pts, fromMs: Number(r.from) / 1e6, toMs: Number(r.to) / 1e6, stepMs: Number(r.step) / 1e6 };
      const readings = pts.reduce((a, p) => a + p.count, 0);
      c.card.dataset.points = String(pts.length);
      c.card.dataset.readings = String(readings);
      c.card.dataset.last = String(s.last_value);
      drawChart(c);
      c.left.textContent = readings.toLocaleString() + ' readings in view';
      c.right.textContent = s.connected ? 'connected' : 'offline, last ' + fmtAge(s.age_s);
    });
    for (const [key, c] of state.cards) {
      if (!seen.has(key)) { c.card.remove(); state.cards.delete(key); }
    }
  }

  function render(list, shown, series) {
    const any = list.sensors.length > 0;
    $('empty').hidden = any;
    $('sensors-section').hidden = !any;
    $('charts-section').hidden = !any;
    if (!any) return;
    renderTable(list);
    renderCharts(shown, series);
  }

  // ---- controls ----------------------------------------------------------

  function setRange(r) {
    if (!RANGES[r]) return;
    state.range = r;
    document.querySelectorAll('.ranges button').forEach((b) => {
      const on = b.dataset.range === r;
      b.classList.toggle('active', on);
      b.setAttribute('aria-pressed', on ? 'true' : 'false');
    });
    $('range-label').textContent = RANGES[r].label;
    history.replaceState(null, '', '#' + r);
    poll().then(schedule);
  }

  function init() {
    $('empty-host').textContent = location.hostname || 'HOST';
    document.querySelectorAll('.ranges button').forEach((b) => {
      b.addEventListener('click', () => setRange(b.dataset.range));
    });
    let resizeTimer = 0;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => state.cards.forEach((c) => c.data && drawChart(c)), 150);
    });
    const want = location.hash.slice(1);
    if (RANGES[want] && want !== state.range) {
      setRange(want);
    } else {
      poll().then(schedule);
    }
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', init);
  } else {
    init();
  }
})();
