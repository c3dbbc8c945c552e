// The /sync page: polls GET /api/v2/sync/status every 5 s and renders it. Plain JS, no build step,
// no library. Everything from the server is written with textContent/attributes, never parsed as markup.
// The pure helpers are exported so node:test can check them without a browser.

export const POLL_MS = 5000;
export const FETCH_TIMEOUT_MS = 4000;
const TOKEN_KEY = 'elara.opsToken';

/** The newest reconcile run that has finished (runs may come in any order). */
export function latestFinishedRun(status) {
  return [...(status?.runs ?? [])]
    .filter((r) => r && r.mode !== 'keys' && r.status !== 'running')
    .sort((a, b) => (Date.parse(b.startedAt) || 0) - (Date.parse(a.startedAt) || 0) || (b.id ?? 0) - (a.id ?? 0))[0];
}

/**
 * A tile's colour is decided by the server only (ops/status.ts, which also feeds the metrics), so
 * the page and the alerts cannot disagree. A tile without a valid state is shown red.
 */
export function tileState(table) {
  return ['green', 'amber', 'red'].includes(table?.state) ? table.state : 'red';
}

export function formatSeconds(s) {
  if (s === null || s === undefined || !Number.isFinite(Number(s))) return '–';
  const n = Math.max(0, Number(s));
  if (n < 1) return `${Math.round(n * 1000)} ms`;
  if (n < 90) return `${n < 10 ? n.toFixed(1) : Math.round(n)} s`;
  if (n < 5400) return `${Math.round(n / 60)} min`;
  if (n < 172800) return `${(n / 3600).toFixed(1)} h`;
  return `${Math.round(n / 86400)} d`;
}

export function formatTime(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '–' : d.toLocaleString();
}

export function formatBytes(n) {
  if (n === null || n === undefined || !Number.isFinite(Number(n))) return '–';
  const v = Math.max(0, Number(n));
  if (v < 1024) return `${Math.round(v)} B`;
  if (v < 1024 ** 2) return `${(v / 1024).toFixed(1)} KiB`;
  if (v < 1024 ** 3) return `${(v / 1024 ** 2).toFixed(1)} MiB`;
  return `${(v / 1024 ** 3).toFixed(1)} GiB`;
}

/** One line on real-time sync: off (and why), live, or which targets are not streaming. */
export function watchSummary(status) {
  const w = status?.watch;
  if (!w || w.mode !== 'on') return { live: false, text: `off${w?.reason ? `: ${w.reason}` : ''}; registrations reach staging through the outbox, other changes at the next reconcile` };
  const streams = w.streams ?? [];
  const notLive = streams.filter((s) => s.phase !== 'streaming');
  if (streams.length > 0 && notLive.length === 0) return { live: true, text: `streaming to ${streams.map((s) => s.target).join(', ')}: production's changes arrive at once` };
  return { live: false, text: `not streaming: ${notLive.map((s) => `${s.target} ${s.phase}${s.lastError ? ` (${s.lastError.code})` : ''}`).join(', ') || 'no stream'}` };
}

export function rowsChanged(run) {
  return (run?.tables ?? []).reduce((sum, t) => sum + (Number(t.inserted) || 0) + (Number(t.updated) || 0) + (Number(t.deleted) || 0), 0);
}

/**
 * Points for the chart, oldest first: rows changed by each reconcile run, and the lag when it
 * started (seconds since the previous successful run finished; null before the first success).
 */
export function chartModel(runs, limit = 30) {
  const ordered = [...(runs ?? [])]
    .filter((r) => r && r.mode !== 'keys' && r.startedAt)
    .sort((a, b) => Date.parse(a.startedAt) - Date.parse(b.startedAt))
    .slice(-limit);
  let lastOk = null;
  return ordered.map((r) => {
    const started = Date.parse(r.startedAt);
    const lag = lastOk === null ? null : Math.max(0, (started - lastOk) / 1000);
    if ((r.status === 'ok' || r.status === 'conflicts') && r.finishedAt) lastOk = Date.parse(r.finishedAt);
    return { id: r.id, startedAt: r.startedAt, status: r.status, rows: rowsChanged(r), lag };
  });
}

/** Failures to list, newest first: failed runs, per-table errors, immediate-sync failures. */
export function failureList(status, limit = 20) {
  const out = [];
  for (const r of status?.runs ?? []) {
    if (r.status === 'error') out.push({ at: r.finishedAt ?? r.startedAt, where: `run #${r.id}`, message: r.error ?? 'failed' });
    for (const t of r.tables ?? []) {
      if (t.error) out.push({ at: r.finishedAt ?? r.startedAt, where: `run #${r.id} · ${t.table}`, message: t.error });
      else if (t.conflicts > 0) out.push({ at: r.finishedAt ?? r.startedAt, where: `run #${r.id} · ${t.table}`, message: `${t.conflicts} conflicts with rows created in staging` });
    }
  }
  for (const f of status?.immediate?.recentFailures ?? []) {
    out.push({ at: f.at, where: `immediate${f.attempts ? ` · attempt ${f.attempts}` : ''}`, message: f.message ?? 'failed' });
  }
  return out.sort((a, b) => (Date.parse(b.at) || 0) - (Date.parse(a.at) || 0)).slice(0, limit);
}

/** The banner: what an operator should know first. */
export function summary(status) {
  const staging = status?.staging ?? {};
  if (staging.configured === false) return { level: 'error', text: 'staging is not configured (STAGING_DATABASE_URL)' };
  if (staging.reachable === false) return { level: 'error', text: `staging unreachable${staging.error ? `: ${staging.error}` : ''}` };
  const states = (status?.tables ?? []).map((t) => tileState(t));
  const lastRun = latestFinishedRun(status);
  if (lastRun?.status === 'error') return { level: 'error', text: `last reconcile #${lastRun.id} failed${lastRun.error ? `: ${lastRun.error}` : ''}` };
  if (states.includes('red')) return { level: 'error', text: 'staging is far behind production' };
  if (states.includes('amber') || lastRun?.status === 'conflicts') return { level: 'warn', text: lastRun?.status === 'conflicts' ? 'last reconcile finished with conflicts' : 'staging is behind production' };
  if (states.length === 0) return { level: 'warn', text: 'no tables reported' };
  // A stream that lost its connection or cannot go on: the reconcile still converges, but changes no longer arrive at once.
  const broken = (status?.watch?.streams ?? []).find((x) => x.phase === 'reconnecting' || x.phase === 'failed');
  if (broken) return { level: 'warn', text: `real-time sync to ${broken.target} ${broken.phase === 'failed' ? 'has failed' : 'is reconnecting'}${broken.lastError ? `: ${broken.lastError.code} ${broken.lastError.message}` : ''}` };
  return { level: 'ok', text: 'staging is current' };
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** An SVG element (bars = rows changed, line = lag) drawn by hand; `doc` is the DOM document. */
export function renderChart(doc, points, { width = 720, height = 220 } = {}) {
  const pad = { left: 48, right: 48, top: 12, bottom: 28 };
  const svg = doc.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', 'rows changed and lag per run');
  svg.setAttribute('data-points', String(points.length));
  const el = (name, attrs, text) => {
    const e = doc.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
    return e;
  };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  el('line', { class: 'axis', x1: pad.left, y1: pad.top + plotH, x2: pad.left + plotW, y2: pad.top + plotH });
  if (points.length === 0) {
    el('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle', 'data-testid': 'chart-empty' }, 'no runs yet');
    return svg;
  }
  const maxRows = Math.max(1, ...points.map((p) => p.rows));
  const maxLag = Math.max(1, ...points.map((p) => p.lag ?? 0));
  const step = plotW / points.length;
  const barW = Math.max(2, step * 0.6);
  const y = (v, max) => pad.top + plotH - (v / max) * plotH;
  points.forEach((p, i) => {
    const x = pad.left + i * step + (step - barW) / 2;
    const bar = el('rect', { class: 'bar', x: x.toFixed(1), y: y(p.rows, maxRows).toFixed(1), width: barW.toFixed(1), height: Math.max(0, pad.top + plotH - y(p.rows, maxRows)).toFixed(1), 'data-testid': `chart-bar-${p.id}` });
    const title = doc.createElementNS(SVG_NS, 'title');
    title.textContent = `run #${p.id} (${p.status}): ${p.rows} rows changed, lag ${formatSeconds(p.lag)}`;
    bar.appendChild(title);
  });
  const lagPts = points.map((p, i) => (p.lag === null ? null : [pad.left + i * step + step / 2, y(p.lag, maxLag)])).filter(Boolean);
  if (lagPts.length > 1) el('polyline', { class: 'lag', points: lagPts.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(' ') });
  for (const [a, b] of lagPts) el('circle', { class: 'lag-point', cx: a.toFixed(1), cy: b.toFixed(1), r: 2.5 });
  el('text', { x: pad.left - 6, y: pad.top + 10, 'text-anchor': 'end' }, String(maxRows));
  el('text', { x: pad.left - 6, y: pad.top + plotH, 'text-anchor': 'end' }, '0');
  el('text', { x: pad.left + plotW + 6, y: pad.top + 10 }, formatSeconds(maxLag));
  el('text', { x: pad.left, y: height - 8 }, `#${points[0].id}`);
  el('text', { x: pad.left + plotW, y: height - 8, 'text-anchor': 'end' }, `#${points[points.length - 1].id}`);
  return svg;
}

// ---------------------------------------------------------------- browser only below

// The operations token is typed into the page's form and kept for this tab (sessionStorage); it is
// sent only in the Authorization header, which the server never logs. It is not taken from the
// address bar: a URL ends up in server and proxy logs, in the history and in Referer headers.
function readToken(win) {
  const url = new URL(win.location.href);
  if (url.searchParams.has('token')) {
    url.searchParams.delete('token');
    win.history.replaceState(null, '', url.toString());
  }
  try { return win.sessionStorage.getItem(TOKEN_KEY); } catch { return null; }
}

function saveToken(win, token) {
  try { win.sessionStorage.setItem(TOKEN_KEY, token); } catch { /* storage disabled: this page load only */ }
}

/** Thrown by fetchStatus for 401/403, so the page asks for a token. */
export class NotAuthorisedError extends Error {}

export async function fetchStatus(fetchImpl, token, timeoutMs = FETCH_TIMEOUT_MS) {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeoutMs);
  try {
    const res = await fetchImpl('/api/v2/sync/status', {
      headers: { Accept: 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
      cache: 'no-store',
      signal: ctrl.signal,
    });
    if (res.status === 401 || res.status === 403) throw new NotAuthorisedError(`not authorised (HTTP ${res.status}): enter the operations token (OPS_TOKEN) or an admin's access token`);
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const body = await res.json();
    if (!body || typeof body !== 'object' || !Array.isArray(body.tables)) throw new Error('unexpected response');
    return body;
  } catch (err) {
    if (err instanceof NotAuthorisedError) throw err;
    throw new Error(err?.name === 'AbortError' ? 'timed out' : (err?.message ?? String(err)), { cause: err });
  } finally {
    clearTimeout(timer);
  }
}

function render(doc, status) {
  const $ = (id) => doc.getElementById(id);
  const text = (id, value) => { const e = $(id); if (e) e.textContent = value; };
  const make = (tag, attrs = {}, content) => {
    const e = doc.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (content !== undefined) e.textContent = content;
    return e;
  };

  const s = summary(status);
  const banner = $('banner');
  banner.className = `banner banner-${s.level}`;
  banner.dataset.level = s.level;
  banner.textContent = s.text;

  const staging = status.staging ?? {};
  const stagingEl = $('staging-state');
  stagingEl.dataset.reachable = String(staging.reachable === true);
  stagingEl.textContent = staging.configured === false ? 'staging: not configured' : staging.reachable ? 'staging: reachable' : 'staging: unreachable';
  text('interval', formatSeconds(status.intervalSeconds));
  text('generated-at', formatTime(status.generatedAt));

  const ws = watchSummary(status);
  const watchEl = $('watch-state');
  watchEl.dataset.live = String(ws.live);
  watchEl.dataset.mode = status.watch?.mode ?? 'off';
  watchEl.textContent = ws.text;
  const streams = (status.watch?.streams ?? []).map((x) => {
    const tr = make('tr', { 'data-testid': `stream-row-${x.target}`, 'data-target': x.target, 'data-phase': x.phase });
    const err = x.lastError ? `${x.lastError.code}: ${x.lastError.message} (${formatTime(x.lastError.at)})` : '–';
    tr.append(make('td', {}, x.target), make('td', { class: `phase-${x.phase}`, 'data-testid': `stream-phase-${x.target}` }, x.phase),
      make('td', { 'data-testid': `stream-lsn-${x.target}` }, x.lsn ?? '–'),
      make('td', { class: 'num', 'data-testid': `stream-lag-${x.target}` }, formatSeconds(x.lagSeconds)),
      make('td', { class: 'num' }, formatBytes(x.lagBytes)), make('td', { class: 'num' }, formatBytes(x.retainedWalBytes)),
      make('td', { class: 'num', 'data-testid': `stream-transactions-${x.target}` }, String(x.transactions ?? 0)),
      make('td', { class: 'num', 'data-testid': `stream-rows-${x.target}` }, String(x.rows ?? 0)),
      make('td', { class: 'num', 'data-testid': `stream-reconnects-${x.target}` }, String(x.reconnects ?? 0)),
      make('td', { class: 'message', 'data-testid': `stream-error-${x.target}` }, err));
    return tr;
  });
  $('streams').replaceChildren(...(streams.length > 0 ? streams : [emptyRow(make, 10, status.watch?.mode === 'on' ? 'no stream' : 'watch is off')]));

  const tiles = status.tables.map((t) => {
    const state = tileState(t);
    const tile = make('article', { class: `tile tile-${state}`, 'data-testid': `table-tile-${t.table}`, 'data-state': state, 'data-table': t.table });
    const h = make('h3');
    h.append(make('span', {}, t.table), make('span', { class: 'state', 'data-testid': `table-state-${t.table}` }, state));
    tile.append(h,
      make('p', { 'data-testid': `table-rows-${t.table}` }, `production ${t.productionRows ?? '?'} · staging ${t.stagingRows ?? '?'}`),
      make('p', { 'data-testid': `table-lag-${t.table}` }, `lag ${formatSeconds(t.lagSeconds)} · ${t.lagRows ?? '?'} rows`),
      make('p', {}, `last equal ${formatTime(t.lastEqualAt)}`));
    return tile;
  });
  $('tiles').replaceChildren(...(tiles.length > 0 ? tiles : [make('p', { class: 'empty' }, 'no tables reported')]));

  $('chart').replaceChildren(renderChart(doc, chartModel(status.runs)));

  const im = status.immediate ?? {};
  text('immediate-enabled', im.enabled === false ? 'disabled' : 'enabled');
  text('immediate-successes', String(im.successes ?? 0));
  text('immediate-failures', String(im.failures ?? 0));
  text('immediate-backlog', String(im.backlog ?? 0));
  text('immediate-oldest', formatSeconds(im.oldestAgeSeconds ?? 0));

  const failures = failureList(status).map((f, i) => {
    const tr = make('tr', { 'data-testid': 'failure-row', 'data-index': i });
    tr.append(make('td', {}, formatTime(f.at)), make('td', {}, f.where), make('td', { class: 'message' }, f.message));
    return tr;
  });
  $('failures').replaceChildren(...(failures.length > 0 ? failures : [emptyRow(make, 3, 'no failures')]));

  const runs = (status.runs ?? []).slice(0, 15).map((r) => {
    const sum = (k) => (r.tables ?? []).reduce((n, t) => n + (Number(t[k]) || 0), 0);
    const tr = make('tr', { 'data-testid': `run-row-${r.id}`, 'data-status': r.status });
    tr.append(make('td', {}, String(r.id)), make('td', {}, formatTime(r.startedAt)),
      make('td', { class: `status-${r.status}` }, r.status), make('td', {}, r.mode ?? ''),
      make('td', { class: 'num' }, r.durationMs === null || r.durationMs === undefined ? '–' : formatSeconds(r.durationMs / 1000)),
      ...['inserted', 'updated', 'deleted', 'conflicts'].map((k) => make('td', { class: 'num' }, String(sum(k)))));
    return tr;
  });
  $('runs').replaceChildren(...(runs.length > 0 ? runs : [emptyRow(make, 9, 'no runs yet')]));
}

function emptyRow(make, span, message) {
  const tr = make('tr');
  tr.append(make('td', { colspan: span, class: 'empty' }, message));
  return tr;
}

function renderUnavailable(doc, message) {
  const banner = doc.getElementById('banner');
  banner.className = 'banner banner-unavailable';
  banner.dataset.level = 'unavailable';
  banner.textContent = `status unavailable: ${message} (retrying every ${POLL_MS / 1000} s)`;
}

export function start(win = globalThis.window) {
  const doc = win.document;
  let token = readToken(win);
  let timer = null;
  const form = doc.getElementById('token-form');
  const tick = async () => {
    win.clearTimeout(timer);
    try {
      render(doc, await fetchStatus(win.fetch.bind(win), token));
      form.hidden = true;
    } catch (err) {
      if (err instanceof NotAuthorisedError) form.hidden = false;
      renderUnavailable(doc, err?.message ?? String(err));
    } finally {
      // setTimeout after each attempt, not setInterval: a slow server never gets overlapping polls.
      timer = win.setTimeout(tick, POLL_MS);
    }
  };
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const input = doc.getElementById('token-input');
    token = input.value.trim();
    input.value = '';
    saveToken(win, token);
    tick();
  });
  tick();
  return () => win.clearTimeout(timer);
}

if (typeof window !== 'undefined' && typeof document !== 'undefined' && document.getElementById('banner')) {
  start(window);
}
