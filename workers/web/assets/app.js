// shoal dashboard (workers/web/dashboard.hpp). Plain DOM, no library: every value from the
// server goes into the page as text (textContent, attributes), never as markup, so a payload
// holding <script> is shown, not run. The Content-Security-Policy allows only this file anyway.
'use strict';

// -- small helpers ----------------------------------------------------------------------------

// el('td', {class: 'num'}, 'text', child…): strings become text nodes.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function num(n) { return (n === undefined || n === null) ? '–' : Number(n).toLocaleString('en-US'); }
function ms(n) {
  if (n === undefined || n === null || n < 0) return '–';
  if (n < 1000) return Math.round(n) + ' ms';
  if (n < 120000) return (n / 1000).toFixed(1) + ' s';
  if (n < 7200000) return Math.round(n / 60000) + ' min';
  return (n / 3600000).toFixed(1) + ' h';
}
function when(epochMs) { return epochMs ? new Date(epochMs).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '–'; }
function state(s) { return el('span', {class: 'state ' + String(s).replace(/[^a-z]/g, '')}, s); }
function table(id, headers, rows) {
  return el('table', {id},
    el('thead', {}, el('tr', {}, headers.map(h => el('th', {class: h.endsWith('#') ? 'num' : null}, h.replace(/#$/, ''))))),
    el('tbody', {}, rows));
}
function td(v, cls) { return el('td', {class: cls}, v); }
function tdn(v) { return el('td', {class: 'num'}, num(v)); }

async function getJSON(url) {
  const r = await fetch(url, {headers: {Accept: 'application/json'}, cache: 'no-store'});
  let body = null;
  try { body = await r.json(); } catch (e) { body = {error: 'not JSON (' + r.status + ')'}; }
  if (!r.ok) throw new Error((body && body.error) || ('HTTP ' + r.status));
  return body;
}

function setStatus(text, bad) {
  const s = document.getElementById('status');
  s.textContent = text;
  s.className = bad ? 'error' : 'muted';
}

const params = new URLSearchParams(location.search);
function setParam(k, v) {
  if (v) params.set(k, v); else params.delete(k);
  history.replaceState(null, '', location.pathname + (params.toString() ? '?' + params : ''));
}

// -- charts (plain SVG) -----------------------------------------------------------------------

// Bars of values over labelled slots: [{label, value, title}].
function barChart(id, items, opts) {
  const W = opts.width || 900, H = opts.height || 180, L = 48, B = 28, T = 10;
  const max = Math.max(1, ...items.map(i => i.value));
  const bw = items.length ? (W - L - 8) / items.length : 0;
  const g = svg('svg', {id, class: 'chart', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img'});
  g.append(svg('line', {class: 'axis', x1: L, y1: H - B, x2: W - 4, y2: H - B}));
  g.append(svg('text', {x: 4, y: T + 8}, num(max) + (opts.unit || '')));
  g.append(svg('text', {x: 4, y: H - B}, '0'));
  items.forEach((it, i) => {
    const h = (H - B - T) * it.value / max;
    const r = svg('rect', {class: 'bar ' + (it.cls || ''), x: L + i * bw + 1, y: H - B - h, width: Math.max(1, bw - 2), height: h});
    r.append(svg('title', {}, it.title || (it.label + ': ' + num(it.value))));
    g.append(r);
    const every = Math.ceil(items.length / 12);
    if (i % every === 0) g.append(svg('text', {x: L + i * bw, y: H - B + 14}, it.label));
  });
  if (opts.caption) g.append(svg('text', {x: L, y: H - 2}, opts.caption));
  return g;
}

// Lines over time: series [{cls, points: [[tMs, v]…], name}], shared y axis.
function lineChart(id, series, opts) {
  const W = opts.width || 900, H = opts.height || 200, L = 52, B = 30, T = 12, R = 8;
  const all = series.flatMap(s => s.points);
  const g = svg('svg', {id, class: 'chart', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img'});
  g.append(svg('line', {class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B}));
  g.append(svg('line', {class: 'axis', x1: L, y1: T, x2: L, y2: H - B}));
  const t1 = Date.now(), t0 = t1 - (opts.spanMs || 3600000);
  const max = Math.max(1e-9, ...all.map(p => p[1]));
  const x = t => L + (W - L - R) * (t - t0) / (t1 - t0);
  const y = v => H - B - (H - B - T) * v / max;
  g.append(svg('text', {x: 4, y: T + 4}, (max < 10 ? max.toFixed(2) : num(Math.round(max))) + (opts.unit || '')));
  g.append(svg('text', {x: 4, y: H - B}, '0'));
  for (let m = 0; m <= 60; m += 10)
    g.append(svg('text', {x: x(t0 + m * 60000) - (m === 60 ? 20 : 8), y: H - B + 14}, m === 60 ? 'now' : '−' + (60 - m) + 'm'));
  for (const s of series) {
    const pts = s.points.filter(p => p[0] >= t0);
    if (pts.length === 1) g.append(svg('circle', {cx: x(pts[0][0]), cy: y(pts[0][1]), r: 2.5, class: 'line ' + s.cls}));
    if (pts.length > 1) g.append(svg('polyline', {class: 'line ' + s.cls, points: pts.map(p => x(p[0]).toFixed(1) + ',' + y(p[1]).toFixed(1)).join(' ')}));
  }
  g.append(svg('text', {x: L + 6, y: H - 2}, series.map(s => s.name).join('   ')));
  return g;
}

// -- pages --------------------------------------------------------------------------------------

const pages = {};

pages.fleet = async function () {
  const f = await getJSON('/api/fleet');
  const live = f.workers.filter(w => w.state === 'idle' || w.state === 'working').length;
  const coord = f.hosts.find(h => h.coordinator);
  return [
    el('h2', {}, 'Fleet of ', f.host),
    el('div', {class: 'cards'},
      card('state', state(f.state)),
      card('coordinator', coord ? coord.host : (f.assignment.coordinator || 'none'), 'coordinator'),
      card('this host coordinates', f.coordinator ? 'yes' : 'no'),
      card('workers live / wanted', live + ' / ' + f.workers_wanted, 'live-workers'),
      card('uptime', ms(f.uptime_ms)),
      card('supervisor pid', f.pid)),
    el('h2', {}, 'Hosts and shard assignment'),
    table('hosts-table', ['host', 'coordinator', 'workers#', 'shards', 'last seen'],
      f.hosts.map(h => el('tr', {'data-host': h.host},
        td(h.host), td(h.coordinator ? state('yes') : ''), tdn(h.workers),
        td(h.shards.length ? h.shards.join(' ') : '(none)', 'mono'), td(ms(h.last_seen_ms_ago) + ' ago')))),
    el('p', {class: 'muted'}, 'This host: epoch ', f.assignment.epoch, ', shards ',
      f.assignment.shards.length ? f.assignment.shards.join(' ') : '(none yet)'),
    el('h2', {}, 'Workers on ', f.host),
    table('workers-table', ['slot', 'pid#', 'state', 'queue', 'current record', 'in flight#', 'done#', 'failed#',
      'claimed#', 'contention#', 'lease lost#', 'rate/s#', 'last heartbeat', 'restarts#', 'shards'],
      f.workers.map(w => el('tr', {'data-slot': w.slot, 'data-state': w.state},
        td(w.slot), td(w.pid || '–', 'num'), td(state(w.state)), td(w.queue), td(w.current || '–', 'mono'),
        tdn(w.in_flight), tdn(w.done), tdn(w.failed), tdn(w.claimed), tdn(w.contention), tdn(w.lease_lost),
        td(Number(w.rate_per_s).toFixed(1), 'num'),
        td(w.last_heartbeat_ms_ago < 0 ? 'never' : ms(w.last_heartbeat_ms_ago) + ' ago'),
        tdn(w.restarts), td(w.shards.length ? w.shards.join(' ') : 'all', 'mono')))),
    el('h2', {}, 'Queues this fleet claims from'),
    table('fleet-queues', ['queue', 'pending#', 'claimed#', 'done#', 'dead#', 'read'],
      Object.entries(f.queues).map(([q, s]) => el('tr', {},
        td(q), tdn(s.by_status.pending), tdn(s.by_status.claimed), tdn(s.by_status.done), tdn(s.by_status.dead),
        td(s.error ? el('span', {class: 'error'}, s.error) : ms(s.age_ms) + ' ago')))),
  ];
};

function card(label, value, id) {
  return el('div', {class: 'card', id: id ? 'card-' + id : null}, el('div', {class: 'label'}, label), el('div', {class: 'value'}, value));
}

// Completions per second between consecutive samples, plotted at the later one.
function rates(history, key) {
  const out = [];
  for (let i = 1; i < history.length; i++) {
    const a = history[i - 1], b = history[i];
    const dt = (b.at_ms - a.at_ms) / 1000;
    if (dt <= 0) continue;
    out.push([b.at_ms, Math.max(0, ((b.by_status[key] || 0) - (a.by_status[key] || 0)) / dt)]);
  }
  return out;
}

pages.queues = async function () {
  const d = await getJSON('/api/queues');
  const out = [el('h2', {}, 'Queues of the work table'),
    el('p', {class: 'muted'}, 'Counts are read every ', ms(d.sample_ms), '; the chart shows the last hour as seen by this supervisor.')];
  if (d.error) out.push(el('p', {class: 'error'}, d.error));
  if (!d.queues.length) out.push(el('p', {class: 'note'}, 'No queue yet.'));
  for (const q of d.queues) {
    const s = q.by_status;
    out.push(el('h2', {id: 'queue-' + q.name}, 'Queue ', q.name),
      el('div', {class: 'cards'},
        card('pending', num(s.pending)), card('claimed', num(s.claimed)), card('done', num(s.done)),
        card('dead', num(s.dead)), card('total', num(q.total)),
        card('oldest pending', q.oldest_pending_age_ms < 0 ? 'none' : (q.oldest_pending_partial ? '≥ ' : '') + ms(q.oldest_pending_age_ms))),
      q.error ? el('p', {class: 'error'}, q.error) : null,
      el('div', {class: 'grid2'},
        el('div', {},
          lineChart('chart-' + q.name, [
            {cls: 'done', name: '— done/s', points: rates(q.history, 'done')},
            {cls: 'pending', name: '- - dead/s', points: rates(q.history, 'dead')}], {unit: '/s', width: 640})),
        table('shards-' + q.name, ['shard#', 'pending#', 'claimed#', 'done#', 'dead#'],
          Object.entries(q.by_shard).sort((a, b) => a[0] - b[0]).map(([sh, c]) => el('tr', {},
            tdn(sh), tdn(c.pending || 0), tdn(c.claimed || 0), tdn(c.done || 0), tdn(c.dead || 0))))));
  }
  return out;
};

let knownQueues = [];
pages.dead = async function (cfg) {
  const queue = params.get('queue') || cfg.default_queue;
  if (!knownQueues.length) {
    try { knownQueues = (await getJSON('/api/queues')).queues.map(q => q.name); } catch (e) { knownQueues = []; }
  }
  if (!knownQueues.includes(queue)) knownQueues.push(queue);
  const d = await getJSON('/api/dead?queue=' + encodeURIComponent(queue));
  const sel = el('select', {id: 'queue-select', onchange: e => { setParam('queue', e.target.value); refresh(); }},
    knownQueues.map(q => el('option', {value: q, selected: q === queue}, q)));
  const rows = d.dead.map(r => recordRow(r, queue, cfg, true));
  return [
    el('h2', {}, 'Dead letters and failures'),
    el('div', {class: 'toolbar'}, 'queue ', sel,
      el('span', {class: 'muted'}, cfg.actions ? 'token' : 'actions disabled: the supervisor has no [web] token_file'),
      tokenInput(cfg),
      el('button', {id: 'requeue-all', class: 'primary', disabled: !cfg.actions || !d.dead.length,
        onclick: () => act('requeue', {queue, all: true})}, 'Requeue all dead'),
      el('button', {id: 'purge-all', class: 'danger', disabled: !cfg.actions || !d.dead.length,
        onclick: () => { if (confirm('Delete every dead record of ' + queue + '?')) act('purge', {queue, all: true}); }}, 'Purge all dead'),
      el('span', {id: 'action-result'}, lastAction.text)),
    el('h2', {}, 'Dead (', d.dead.length, d.dead_truncated ? '+' : '', ') — failed ', cfg.max_attempts, ' attempts'),
    d.dead.length ? table('dead-table', ['record', 'attempts#', 'last error', 'owners (claim gen, attempt)', 'payload', 'updated', ''], rows)
      : el('p', {class: 'note', id: 'no-dead'}, 'No dead letter in ', queue, '.'),
    el('h2', {}, 'Failing, to be retried (', d.failing.length, ')'),
    d.failing.length ? table('failing-table', ['record', 'attempts#', 'last error', 'owners (claim gen, attempt)', 'payload', 'retry after', ''],
      d.failing.map(r => recordRow(r, queue, cfg, false)))
      : el('p', {class: 'note'}, 'No record is failing right now.'),
  ];
};

function recordRow(r, queue, cfg, dead) {
  const payload = r.payload
    ? el('pre', {class: 'payload', 'data-id': r.id}, r.payload.text, r.payload.truncated ? '…' : '')
    : el('span', {class: 'muted'}, 'blob ', r.payload_blob, ' (', num(r.payload_bytes), ' bytes)');
  return el('tr', {'data-id': r.id},
    td(r.id, 'mono'), tdn(r.attempts), td(el('pre', {}, r.last_error || '–')),
    td(r.owners.map(o => el('div', {class: 'mono'}, o.owner, ' (gen ', o.gen, ', attempt ', o.attempt, ')',
      o.source !== 'work table' ? el('span', {class: 'muted'}, ' ', o.source) : null))),
    td(payload), td(dead ? when(r.updated_ms) : when(r.not_before_ms)),
    td(el('div', {class: 'toolbar'},
      el('button', {class: 'requeue', 'data-id': r.id, disabled: !cfg.actions, onclick: () => act('requeue', {queue, ids: [r.id]})}, 'Requeue'),
      el('button', {class: 'purge danger', 'data-id': r.id, disabled: !cfg.actions, onclick: () => act('purge', {queue, ids: [r.id]})}, 'Purge'))));
}

function tokenInput(cfg) {
  return el('input', {id: 'token', type: 'password', placeholder: 'token ([web] token_file)', autocomplete: 'off',
    disabled: !cfg.actions, value: sessionStorage.getItem('shoal-token') || '',
    oninput: e => sessionStorage.setItem('shoal-token', e.target.value)});
}

let lastAction = {text: '', ok: true};
async function act(action, body) {
  const token = (document.getElementById('token') || {}).value || '';
  const headers = {'Content-Type': 'application/json'};
  if (token) headers.Authorization = 'Bearer ' + token;
  let text, ok;
  try {
    const r = await fetch('/api/dead/' + action, {method: 'POST', headers, body: JSON.stringify(body), cache: 'no-store'});
    const j = await r.json().catch(() => ({error: 'HTTP ' + r.status}));
    ok = r.ok;
    text = ok ? action + 'd ' + j.changed + ' record(s)' : action + ' refused (' + r.status + '): ' + j.error;
  } catch (e) {
    ok = false;
    text = action + ' failed: ' + e.message;
  }
  lastAction = {text, ok};
  await refresh();
}

let selectedRun = params.get('run') || '';
pages.etl = async function () {
  const status = params.get('status') || '';
  const d = await getJSON('/api/etl' + (status ? '?status=' + encodeURIComponent(status) : ''));
  const filter = el('select', {id: 'status-select', onchange: e => { setParam('status', e.target.value); refresh(); }},
    ['', 'running', 'completed', 'failed'].map(s => el('option', {value: s, selected: s === status}, s || 'any status')));
  const out = [el('h2', {}, 'ETL runs'), el('div', {class: 'toolbar'}, 'status ', filter,
    el('span', {class: 'muted'}, 'click a run for its step timeline')),
    d.instances_note ? el('p', {class: 'note'}, d.instances_note) : null,
    table('runs-table', ['blob', 'dataset', 'status', 'last step', 'attempts#', 'records#', 'loaded#', 'duplicates#',
      'quarantined#', 'time#', 'updated'],
      d.instances.map(i => el('tr', {class: 'clickable' + (i.id === selectedRun ? ' selected' : ''), 'data-id': i.id,
        onclick: () => { selectedRun = i.id; setParam('run', i.id); refresh(); }},
        td(i.blob || i.id, 'mono'), td(i.dataset), td(state(i.status)), td(i.step || '–'), tdn(i.attempts),
        tdn(i.records), tdn(i.loaded), tdn(i.duplicates), tdn(i.quarantined), td(ms(i.ms), 'num'), td(when(i.updated_ms)))))];
  if (!selectedRun && d.instances.length) selectedRun = d.instances[0].id;
  if (selectedRun) {
    try {
      const run = await getJSON('/api/etl/run?id=' + encodeURIComponent(selectedRun));
      out.push(el('h2', {}, 'Timeline of ', run.blob || run.id), timeline(run),
        run.error ? el('p', {class: 'error'}, run.error) : null,
        table('steps-table', ['#', 'step', 'attempt#', 'gen#', 'owner', 'started', 'time#', 'in#', 'out#', 'quarantined#', 'detail'],
          run.steps.map(s => el('tr', {'data-step': s.step}, tdn(s.seq), td(s.step), tdn(s.attempt), tdn(s.gen), td(s.owner, 'mono'),
            td(when(s.started_ms)), td(ms(s.ms), 'num'), tdn(s.records_in), tdn(s.records_out), tdn(s.quarantined), td(s.detail)))));
    } catch (e) {
      out.push(el('p', {class: 'error'}, 'run ', selectedRun, ': ', e.message));
    }
  }
  out.push(el('h2', {}, 'Quarantine of the SQL sink (', d.sink, ')'),
    d.quarantine_error ? el('p', {class: 'error'}, d.quarantine_error) : null,
    d.quarantine_note ? el('p', {class: 'note'}, d.quarantine_note) : null,
    d.quarantine.length ? table('quarantine-table', ['blob', 'record#', 'dataset', 'message id', 'step', 'reason', 'raw record', 'at'],
      d.quarantine.map(q => el('tr', {}, td(q.blob, 'mono'), tdn(q.record_index), td(q.dataset), td(q.message_id, 'mono'),
        td(q.step), td(q.reason), td(el('pre', {}, q.raw.text, q.raw.truncated ? '…' : '')), td(q.at))))
      : el('p', {class: 'note'}, 'Nothing quarantined.'));
  return out;
};

// Steps as bars on one time axis: where each started and how long it ran.
function timeline(run) {
  const steps = run.steps.filter(s => s.started_ms || s.ms);
  const W = 900, rowH = 26, L = 90, R = 150, H = steps.length * rowH + 30;
  const g = svg('svg', {id: 'timeline', class: 'chart', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img'});
  if (!steps.length) { g.append(svg('text', {x: 10, y: 20}, 'no step recorded yet')); return g; }
  const t0 = Math.min(...steps.map(s => s.started_ms || s.finished_ms - s.ms));
  const t1 = Math.max(...steps.map(s => Math.max(s.finished_ms, (s.started_ms || 0) + s.ms)));
  const span = Math.max(1, t1 - t0);
  const x = t => L + (W - L - R) * (t - t0) / span;
  steps.forEach((s, i) => {
    const start = s.started_ms || (s.finished_ms - s.ms);
    const y = 6 + i * rowH;
    g.append(svg('text', {x: 4, y: y + 14}, s.seq + ' ' + s.step));
    const r = svg('rect', {class: 'bar ' + s.step, x: x(start), y, width: Math.max(2, x(start + s.ms) - x(start)), height: rowH - 8});
    r.append(svg('title', {}, s.step + ': ' + ms(s.ms) + ', in ' + s.records_in + ', out ' + s.records_out + ', quarantined ' + s.quarantined));
    g.append(r);
    g.append(svg('text', {x: W - R + 6, y: y + 14}, ms(s.ms) + '  ' + s.records_in + '→' + s.records_out + (s.quarantined ? '  q ' + s.quarantined : '')));
  });
  g.append(svg('text', {x: L, y: H - 4}, '0'));
  g.append(svg('text', {x: W - R - 30, y: H - 4}, ms(span)));
  return g;
}

let catalogResult = null;
pages.persistor = async function () {
  const d = await getJSON('/api/persistor');
  const days = d.days.slice(-90);
  const form = el('form', {id: 'catalog-form', class: 'toolbar', onsubmit: async e => {
    e.preventDefault();
    const f = new FormData(e.target);
    const q = new URLSearchParams();
    for (const k of ['dest', 'date', 'host']) if (f.get(k)) q.set(k, f.get(k));
    try { catalogResult = await getJSON('/api/catalog?' + q); } catch (err) { catalogResult = {error: err.message}; }
    await refresh();
  }},
  el('input', {name: 'dest', id: 'q-dest', placeholder: 'dest', value: params.get('dest') || ''}),
  el('input', {name: 'date', id: 'q-date', placeholder: 'YYYY-MM-DD'}),
  el('input', {name: 'host', id: 'q-host', placeholder: 'host'}),
  el('button', {class: 'primary', type: 'submit'}, 'Query the catalog'));
  return [
    el('h2', {}, 'Blobs per day (catalog ', d.catalog, ')'),
    d.note ? el('p', {class: 'note'}, d.note) : null,
    el('p', {class: 'muted'}, num(d.scanned), ' index entries read', d.partial ? ' (stopped at the cap: partial)' : '',
      '; totals are kept ', d.cache_s, ' s.'),
    barChart('blobs-per-day', days.map(x => ({label: x.date.slice(5), value: x.blobs,
      title: x.date + ': ' + x.blobs + ' blobs, ' + x.records + ' records'})), {caption: days.length ? days[0].date + ' … ' + days[days.length - 1].date : 'no blob yet'}),
    el('h2', {}, 'Records per dest'),
    table('dests-table', ['dest', 'blobs#', 'records#'], d.dests.map(x => el('tr', {}, td(x.dest), tdn(x.blobs), tdn(x.records)))),
    el('h2', {}, 'Catalog query'), form,
    catalogResult === null ? null : catalogResult.error ? el('p', {class: 'error', id: 'catalog-error'}, catalogResult.error)
      : table('catalog-table', ['blob', 'dest', 'date', 'host', 'format', 'records#'],
        catalogResult.entries.map(x => el('tr', {}, td(x.blob, 'mono'), td(x.dest), td(x.date), td(x.host), td(x.format), tdn(x.record_count)))),
  ];
};

// -- the loop -----------------------------------------------------------------------------------

const page = (location.pathname.replace(/\/+$/, '').split('/')[1]) || 'fleet';
let cfg = null;
let busy = false;

async function refresh() {
  if (busy) return;
  busy = true;
  try {
    if (!cfg) cfg = await getJSON('/api/config');
    const render = pages[page];
    const main = document.getElementById('main');
    const content = render ? await render(cfg) : [el('p', {class: 'error'}, 'no such page')];
    // Keep what the user is typing across refreshes.
    const focused = document.activeElement && document.activeElement.id;
    const kept = {};
    for (const i of main.querySelectorAll('input[id]')) kept[i.id] = i.value;
    main.replaceChildren(...content.filter(Boolean));
    for (const [id, v] of Object.entries(kept)) { const i = document.getElementById(id); if (i && id !== 'token') i.value = v; }
    if (focused) { const f = document.getElementById(focused); if (f) f.focus(); }
    const r = document.getElementById('action-result');
    if (r) r.className = lastAction.text ? (lastAction.ok ? 'ok' : 'bad') : '';
    setStatus('updated ' + new Date().toLocaleTimeString('en-GB') + ' · every ' + ms(cfg.refresh_ms) + ' · shoal ' + cfg.version);
    document.body.setAttribute('data-loaded', String(Date.now()));
  } catch (e) {
    setStatus(e.message, true);
  } finally {
    busy = false;
  }
}

// Polling (not SSE): each refresh is one short GET and holds none of civetweb's threads.
async function loop() {
  if (!document.hidden) await refresh();
  setTimeout(loop, cfg ? cfg.refresh_ms : 2000);
}

document.addEventListener('DOMContentLoaded', () => {
  for (const a of document.querySelectorAll('#nav a')) if (a.dataset.page === page) a.classList.add('active');
  loop();
});
