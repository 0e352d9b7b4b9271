// aas-gateway status page. Plain JavaScript, no build step, no framework (see src/web/mod.rs).
//
// Data: /status/summary (and the same as server-sent events on /status/events, read with fetch()
// because EventSource cannot send an Authorization header), /status/elements (one searched page),
// /status/audit (admins), and the API's write-back PATCH .../$value for writes.
'use strict';

const TOKEN_KEY = 'aas-gateway-token';
const POLL_MS = 2000;
const ROLES = ['reader', 'writer', 'admin'];

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  you: null,
  q: '',
  offset: 0,
  limit: 100,
  total: 0,
  streamAbort: null,
  pollTimer: null,
  elementsBusy: false,
  elementsAgain: false,
  writeRow: null,
  trendRow: null,
  ticks: 0,
  rows: [],
  started: false,
};

const $ = (id) => document.getElementById(id);

class AuthRequired extends Error {}

function esc(v) {
  return String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

function authHeaders() {
  return state.token ? { Authorization: 'Bearer ' + state.token } : {};
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    const m = body.messages && body.messages[0];
    if (m && m.text) return m.text;
  } catch (_) { /* not JSON */ }
  return resp.status + ' ' + resp.statusText;
}

async function getJson(url) {
  const resp = await fetch(url, { headers: authHeaders(), cache: 'no-store' });
  if (resp.status === 401) throw new AuthRequired(await errorText(resp));
  if (!resp.ok) throw new Error(await errorText(resp));
  return resp.json();
}

function age(s) {
  if (s === null || s === undefined) return '—';
  if (s < 10) return s.toFixed(1) + ' s';
  if (s < 120) return Math.round(s) + ' s';
  if (s < 7200) return Math.round(s / 60) + ' min';
  return Math.round(s / 3600) + ' h';
}

function bytes(n) {
  if (n < 1024) return n + ' B';
  if (n < 1048576) return (n / 1024).toFixed(1) + ' KiB';
  if (n < 1073741824) return (n / 1048576).toFixed(1) + ' MiB';
  return (n / 1073741824).toFixed(2) + ' GiB';
}

function hasRole(role) {
  const mine = state.you && state.you.role;
  return mine !== null && mine !== undefined && ROLES.indexOf(mine) >= ROLES.indexOf(role);
}

// ---- log in / out -------------------------------------------------------------------------

function showLogin(message) {
  stopUpdates();
  $('main').hidden = true;
  $('login').hidden = false;
  $('logout').hidden = true;
  $('login-open').hidden = true;
  $('who').textContent = '';
  setMode('offline', 'not logged in');
  const err = $('login-error');
  err.hidden = !message;
  err.textContent = message || '';
  $('token').focus();
}

$('login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  state.token = $('token').value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $('token').value = '';
  start(true);
});

$('logout').addEventListener('click', () => {
  state.token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  state.started = false;
  start(false);
});

$('login-open').addEventListener('click', () => showLogin(''));

// ---- start, stream, poll -------------------------------------------------------------------

async function start(afterLogin) {
  stopUpdates();
  let summary;
  try {
    summary = await getJson('/status/summary');
  } catch (e) {
    if (e instanceof AuthRequired) {
      if (state.token) sessionStorage.removeItem(TOKEN_KEY);
      showLogin(afterLogin ? 'The token was not accepted: ' + e.message : '');
      state.token = '';
      return;
    }
    setMode('offline', 'the gateway does not answer: ' + e.message);
    setTimeout(() => start(false), POLL_MS);
    return;
  }
  $('login').hidden = true;
  $('main').hidden = false;
  renderSummary(summary);
  loadElements();
  loadAudit();
  streamEvents();
}

function stopUpdates() {
  if (state.streamAbort) state.streamAbort.abort();
  state.streamAbort = null;
  if (state.pollTimer) clearTimeout(state.pollTimer);
  state.pollTimer = null;
}

function setMode(mode, title) {
  const el = $('mode');
  el.className = 'mode ' + mode;
  el.textContent = mode === 'live' ? 'live' : mode === 'polling' ? 'polling' : 'offline';
  el.title = title || '';
}

// Server-sent events through fetch(): the bearer token goes in a header, never in the URL.
async function streamEvents() {
  const abort = new AbortController();
  state.streamAbort = abort;
  try {
    const resp = await fetch('/status/events', {
      headers: Object.assign({ Accept: 'text/event-stream' }, authHeaders()),
      cache: 'no-store',
      signal: abort.signal,
    });
    if (resp.status === 401) { showLogin('The gateway asks for a token again.'); return; }
    if (!resp.ok || !resp.body || !resp.body.getReader) throw new Error('no event stream');
    setMode('live', 'server-sent events from /status/events');
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        onFrame(frame);
      }
    }
  } catch (e) {
    if (abort.signal.aborted) return;
  }
  if (abort.signal.aborted) return;
  // The stream ended or is not possible (a proxy, an old browser): poll, and try again later.
  poll(0);
}

function onFrame(frame) {
  let event = 'message';
  const data = [];
  for (const line of frame.split('\n')) {
    if (line.startsWith('event:')) event = line.slice(6).trim();
    else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
  }
  if (event !== 'status' || data.length === 0) return;
  try {
    renderSummary(JSON.parse(data.join('\n')));
    loadElements();
    loadTrend();
  } catch (e) {
    console.warn('bad status event', e);
  }
}

async function poll(round) {
  try {
    const summary = await getJson('/status/summary');
    setMode('polling', 'polling /status/summary every ' + POLL_MS / 1000 + ' s (no event stream)');
    renderSummary(summary);
    loadElements();
    loadTrend();
  } catch (e) {
    if (e instanceof AuthRequired) { showLogin('The gateway asks for a token again.'); return; }
    setMode('offline', 'the gateway does not answer: ' + e.message);
  }
  // Every 15 rounds, see whether the event stream works again.
  if (round > 0 && round % 15 === 0) { streamEvents(); return; }
  state.pollTimer = setTimeout(() => poll(round + 1), POLL_MS);
}

// ---- summary ------------------------------------------------------------------------------

function renderSummary(s) {
  state.you = s.you;
  // The audit log (admins) every 5th update: it is read from files and verified as a whole.
  state.ticks += 1;
  if (state.ticks % 5 === 0) loadAudit();
  $('gateway-name').textContent = s.gateway;
  $('gateway-version').textContent = 'v' + s.version + ' · up ' + age(s.uptimeS);
  document.title = s.gateway + ' · aas-gateway';
  const you = s.you || {};
  $('who').textContent = you.role ? (you.name + ' (' + you.role + ')') : '';
  $('logout').hidden = !state.token;
  $('login-open').hidden = !!state.token || !you.tokensConfigured;
  $('audit').hidden = !(hasRole('admin') && you.auditAvailable);

  $('sources').tBodies[0].innerHTML = s.sources.map((src) => {
    const rejected = src.rejectedTotal > 0
      ? '<details><summary>' + src.rejectedTotal + '</summary>' + src.rejectedNodes.map((n) =>
        '<div><code>' + esc(n.node) + '</code> ' + esc(n.reason) + '</div>').join('') + '</details>'
      : '0';
    const reason = src.reason ? '<div class="reason">' + esc(src.reason) + '</div>' : '';
    return '<tr data-source="' + esc(src.name) + '">' +
      '<td>' + esc(src.name) + '</td>' +
      '<td><code>' + esc(src.endpoint) + '</code></td>' +
      '<td>' + esc(src.securityPolicy) + ' / ' + esc(src.securityMode) + '</td>' +
      '<td><span class="badge state state-' + esc(src.state) + '">' + esc(src.state) + '</span>' + reason + '</td>' +
      '<td class="num">' + age(src.lastDataAgeS) + '</td>' +
      '<td class="num">' + src.values + '</td>' +
      '<td class="num">' + src.reconnects + '</td>' +
      '<td>' + rejected + '</td></tr>';
  }).join('') || '<tr><td colspan="8" class="muted">no sources configured</td></tr>';

  $('sinks').tBodies[0].innerHTML = s.sinks.map((k) => {
    const use = k.bufferMaxBytes > 0 ? Math.min(1, k.bufferBytes / k.bufferMaxBytes) : 0;
    return '<tr data-sink="' + esc(k.name) + '">' +
      '<td>' + esc(k.name) + '</td>' +
      '<td><span class="badge state state-' + esc(k.state) + '">' + esc(k.state) + '</span>' +
        (k.dropping ? ' <span class="badge state-failed">dropping</span>' : '') + '</td>' +
      '<td class="num">' + k.confirmedPerS + '</td>' +
      '<td class="num lag">' + k.lag + '</td>' +
      '<td class="num">' + age(k.oldestUnconfirmedAgeS) + '</td>' +
      '<td><span class="bar' + (use > 0.9 ? ' full' : '') + '"><span style="width:' + (use * 100).toFixed(1) + '%"></span></span>' +
        bytes(k.bufferBytes) + ' / ' + bytes(k.bufferMaxBytes) + ' <span class="muted">(' + esc(k.whenFull) + ')</span></td>' +
      '<td class="num">' + k.dropped + '</td>' +
      '<td class="num">' + k.errors + ' / ' + k.retries + '</td></tr>';
  }).join('') || '<tr><td colspan="8" class="muted">no sink enabled: values are served by the API only</td></tr>';

  $('totals').textContent = s.readings + ' values received, ' + s.updates + ' mapped, ' +
    s.conversionErrors + ' did not fit their element.';
}

// ---- values -------------------------------------------------------------------------------

async function loadElements() {
  // One request at a time; a change while one runs asks for another afterwards.
  if (state.elementsBusy) { state.elementsAgain = true; return; }
  state.elementsBusy = true;
  try {
    const url = '/status/elements?q=' + encodeURIComponent(state.q) + '&offset=' + state.offset + '&limit=' + state.limit;
    const page = await getJson(url);
    state.total = page.total;
    state.rows = page.rows;
    renderElements(page);
  } catch (e) {
    if (e instanceof AuthRequired) { showLogin('The gateway asks for a token again.'); return; }
  } finally {
    state.elementsBusy = false;
  }
  if (state.elementsAgain) { state.elementsAgain = false; loadElements(); }
}

// The cells that change with every update (value, quality, age), for in-place updates.
function liveCells(r) {
  const q = r.quality;
  const code = r.statusCode && q !== 'good' ? ' <span class="muted">' + esc(r.statusCode) + '</span>' : '';
  return {
    rowClass: q === 'bad' ? 'row-bad' : q === 'uncertain' ? 'row-uncertain' : '',
    value: esc(r.value ?? ''),
    quality: '<span class="badge quality q-' + esc(q) + '">' + esc(q) + '</span>' + code,
    age: age(r.ageS),
  };
}

function renderElements(page) {
  const canWrite = hasRole('writer');
  const body = $('elements').tBodies[0];
  const key = (r) => r.submodelId + '\u0000' + r.path + '\u0000' + canWrite;
  const keys = page.rows.map(key).join('\u0001');
  if (page.rows.length > 0 && body.dataset.keys === keys) {
    // The same rows: update their live cells in place, so that a button being clicked is not
    // replaced under the pointer by the next update.
    page.rows.forEach((r, i) => {
      const tr = body.rows[i];
      const c = liveCells(r);
      tr.className = c.rowClass;
      const text = r.value ?? '';
      if (tr.cells[3].textContent !== text) tr.cells[3].textContent = text;
      tr.cells[5].innerHTML = c.quality;
      tr.cells[6].textContent = c.age;
    });
  } else {
    body.dataset.keys = keys;
    body.innerHTML = page.rows.map((r, i) => {
      const c = liveCells(r);
      const write = canWrite && r.writable ? '<button type="button" class="write" data-row="' + i + '">Write…</button>' : '';
      return '<tr class="' + c.rowClass + '" data-path="' + esc(r.path) + '" data-submodel="' + esc(r.submodelId) + '">' +
        '<td>' + esc(r.shell) + '</td><td>' + esc(r.submodel) + '</td>' +
        '<td>' + esc(r.path) + (r.history ? ' <button type="button" class="trend" data-row="' + i + '" title="trend of the recent values">trend</button>' : '') + '</td>' +
        '<td class="value">' + c.value + '</td>' +
        '<td>' + esc(r.unit ?? '') + '</td>' +
        '<td>' + c.quality + '</td>' +
        '<td class="num">' + c.age + '</td><td>' + write + '</td></tr>';
    }).join('') || '<tr><td colspan="8" class="muted">no element matches</td></tr>';
  }
  const first = page.total === 0 ? 0 : page.offset + 1;
  const last = Math.min(page.offset + page.rows.length, page.total);
  $('range').textContent = first + '–' + last + ' of ' + page.total +
    (page.total !== page.elements ? ' (' + page.elements + ' elements)' : '');
  $('prev').disabled = page.offset === 0;
  $('next').disabled = last >= page.total;
}

let searchTimer = null;
$('search').addEventListener('input', () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    state.q = $('search').value;
    state.offset = 0;
    loadElements();
  }, 200);
});
$('prev').addEventListener('click', () => { state.offset = Math.max(0, state.offset - state.limit); loadElements(); });
$('next').addEventListener('click', () => {
  if (state.offset + state.limit < state.total) { state.offset += state.limit; loadElements(); }
});

// ---- trend (history variables) -------------------------------------------------------------

$('elements').addEventListener('click', (ev) => {
  const button = ev.target.closest('button.trend');
  if (!button) return;
  const row = state.rows[Number(button.dataset.row)];
  if (!row) return;
  state.trendRow = row;
  $('trend-target').textContent = row.shell + ' / ' + row.submodel + ' / ' + row.path;
  $('trend-panel').hidden = false;
  $('trend-panel').scrollIntoView({ block: 'nearest' });
  loadTrend();
});
$('trend-close').addEventListener('click', () => { $('trend-panel').hidden = true; state.trendRow = null; });

async function loadTrend() {
  const row = state.trendRow;
  if (!row) return;
  try {
    const t = await getJson('/status/trend?submodel=' + encodeURIComponent(row.submodelId) +
      '&path=' + encodeURIComponent(row.path) + '&max=300');
    drawTrend(t);
  } catch (e) {
    $('trend-info').textContent = 'no trend: ' + e.message;
  }
}

// A plain SVG line: time on x, value on y; Bad/Uncertain samples as red/amber dots.
function drawTrend(t) {
  const svg = $('trend-chart');
  const pts = t.points.filter((p) => p[1] !== null);
  const W = 720, H = 180, L = 60, R = 10, T = 10, B = 20;
  if (pts.length === 0) {
    svg.innerHTML = '<text x="' + L + '" y="' + H / 2 + '">no numeric values yet</text>';
    $('trend-info').textContent = '';
    return;
  }
  const t0 = pts[0][0], t1 = Math.max(pts[pts.length - 1][0], t0 + 1);
  let lo = Math.min(...pts.map((p) => p[1])), hi = Math.max(...pts.map((p) => p[1]));
  if (hi === lo) { hi += 1; lo -= 1; }
  const x = (ms) => L + (ms - t0) / (t1 - t0) * (W - L - R);
  const y = (v) => T + (hi - v) / (hi - lo) * (H - T - B);
  const line = pts.map((p) => x(p[0]).toFixed(1) + ',' + y(p[1]).toFixed(1)).join(' ');
  const dots = pts.filter((p) => p[2] !== 'good').map((p) =>
    '<circle class="' + esc(p[2]) + '" cx="' + x(p[0]).toFixed(1) + '" cy="' + y(p[1]).toFixed(1) + '" r="3"></circle>').join('');
  const unit = t.unit ? ' ' + t.unit : '';
  svg.innerHTML = '<polyline points="' + line + '"></polyline>' + dots +
    '<text x="4" y="' + (T + 10) + '">' + esc(hi.toPrecision(6) + unit) + '</text>' +
    '<text x="4" y="' + (H - B) + '">' + esc(lo.toPrecision(6) + unit) + '</text>' +
    '<text x="' + L + '" y="' + (H - 4) + '">' + esc(new Date(t0).toLocaleTimeString()) + '</text>' +
    '<text x="' + (W - R - 60) + '" y="' + (H - 4) + '">' + esc(new Date(t1).toLocaleTimeString()) + '</text>';
  $('trend-info').textContent = pts.length + ' values over ' + age((t1 - t0) / 1000) + '; newest ' + pts[pts.length - 1][1] + unit;
}

// ---- write --------------------------------------------------------------------------------

$('elements').addEventListener('click', (ev) => {
  const button = ev.target.closest('button.write');
  if (!button) return;
  const row = state.rows[Number(button.dataset.row)];
  if (!row) return;
  state.writeRow = row;
  $('write-target').textContent = row.shell + ' / ' + row.submodel + ' / ' + row.path;
  $('write-type').textContent = row.valueType + (row.unit ? ' in ' + row.unit : '');
  $('write-value').value = row.value ?? '';
  $('write-result').textContent = '';
  $('write-result').className = '';
  $('write-panel').hidden = false;
  $('write-panel').scrollIntoView({ block: 'nearest' });
  $('write-value').focus();
});

$('write-cancel').addEventListener('click', () => { $('write-panel').hidden = true; state.writeRow = null; });

// The JSON value for an xs:* type (numbers and booleans as JSON numbers and booleans).
function typed(text, valueType) {
  const t = text.trim();
  if (/^xs:(boolean)$/.test(valueType)) {
    if (t === 'true' || t === '1') return true;
    if (t === 'false' || t === '0') return false;
    throw new Error('enter true or false');
  }
  if (/^xs:(double|float|decimal|int|integer|long|short|byte|unsigned\w+|nonNegativeInteger|positiveInteger|negativeInteger|nonPositiveInteger)$/.test(valueType)) {
    if (t === '' || isNaN(Number(t))) throw new Error('enter a number');
    return Number(t);
  }
  return text;
}

$('write-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const row = state.writeRow;
  if (!row) return;
  const result = $('write-result');
  let value;
  try {
    value = typed($('write-value').value, row.valueType);
  } catch (e) {
    result.className = 'error';
    result.textContent = e.message;
    return;
  }
  result.className = 'muted';
  result.textContent = 'writing…';
  const path = row.path.split('.').map(encodeURIComponent).join('.');
  const url = '/api/v3.0/submodels/' + row.submodelIdEncoded + '/submodel-elements/' + path + '/$value';
  try {
    const resp = await fetch(url, {
      method: 'PATCH',
      headers: Object.assign({ 'Content-Type': 'application/json' }, authHeaders()),
      body: JSON.stringify(value),
    });
    if (resp.status === 204) {
      result.className = 'ok';
      result.textContent = 'Written: the OPC UA server answered Good. The new value shows once the node reports it.';
    } else {
      result.className = 'error';
      result.textContent = 'Not written (' + resp.status + '): ' + await errorText(resp);
    }
  } catch (e) {
    result.className = 'error';
    result.textContent = 'Not written: ' + e.message;
  }
});

// ---- audit (admins) -----------------------------------------------------------------------

async function loadAudit() {
  if (!(hasRole('admin') && state.you && state.you.auditAvailable)) return;
  try {
    const a = await getJson('/status/audit?lines=50');
    const v = a.verify;
    const verdict = $('audit-verdict');
    if (v.ok) {
      verdict.className = 'ok';
      verdict.textContent = 'audit verify: the chain is intact (' + v.lines + ' lines in ' + v.files + ' files' +
        (v.fromGenesis ? ', from the first line' : ', from a remembered hash after retention') + ').';
    } else {
      verdict.className = 'error';
      verdict.textContent = 'audit verify: BROKEN at ' + v.file + ':' + v.line + ': ' + v.reason;
    }
    $('audit-tail').tBodies[0].innerHTML = a.tail.slice().reverse().map((r) => {
      const details = Object.assign({}, r);
      for (const k of ['ts', 'event', 'prev_hash', 'hash']) delete details[k];
      return '<tr><td>' + esc(r.ts) + '</td><td>' + esc(r.event) + '</td><td><code>' +
        esc(JSON.stringify(details)) + '</code></td></tr>';
    }).join('');
  } catch (e) {
    $('audit-verdict').textContent = 'cannot read the audit log: ' + e.message;
  }
}
$('audit-refresh').addEventListener('click', loadAudit);

start(false);
