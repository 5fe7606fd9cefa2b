// Pages every token with read access can use: overview, a dataset's
// timeline, lifecycle runs, the audit log and queries.

import {
  api, apiBlob, badge, bytes, count, explainPath, h, labelStart, page, saveBlob, when,
} from './api.js';
import { legend, lineChart, timeline, virtualTable } from './charts.js';
import { isAdmin, showError } from './app.js';

/** Rows per listing page, and the most a listing without cursors shows. */
const PAGE_ROWS = 1000;

function table(columns, rows, onRow) {
  return h('table', {},
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c.num ? 'num' : '' }, c.label)))),
    h('tbody', {}, rows.map((row) => h('tr', { class: onRow ? 'clickable' : '', onclick: onRow ? () => onRow(row) : null, 'data-name': row.name || null },
      columns.map((c) => {
        const value = c.value(row);
        return h('td', { class: c.num ? 'num' : '' }, value);
      })))));
}

// ---------------------------------------------------------------- overview

const ingestSamples = new Map();

function ingestRate(dataset) {
  const now = performance.now();
  const previous = ingestSamples.get(dataset.name);
  ingestSamples.set(dataset.name, { at: now, rows: dataset.rows });
  if (!previous || now - previous.at < 500) return '—';
  return count(Math.max(0, Math.round(((dataset.rows - previous.rows) * 1000) / (now - previous.at)))) + ' rows/s';
}

async function tierBytes(name) {
  const data = await api(`/v1/datasets/${encodeURIComponent(name)}/timeline?buckets=1&lanes=0`);
  const tiers = {};
  for (const cell of data.cells) tiers[cell.tier] = (tiers[cell.tier] || 0) + cell.bytes;
  return tiers;
}

export async function overviewPage(main) {
  const [datasets, health] = await Promise.all([
    api('/v1/datasets'),
    api('/health/lifecycle').catch((error) => ({ status: 'unknown', problems: [], error })),
  ]);
  const tiers = await Promise.all(datasets.datasets.map((d) => tierBytes(d.name)));
  const targets = isAdmin() ? await api('/v1/storage-targets').catch(() => null) : null;
  const rows = datasets.datasets.map((d, i) => Object.assign({}, d, { tiers: tiers[i], rate: ingestRate(d) }));
  const tierColumn = (tier) => ({ label: tier, num: true, value: (d) => (d.tiers[tier] ? bytes(d.tiers[tier]) : '') });
  main.replaceChildren(
    h('h1', {}, 'Overview'),
    h('div', { class: 'cards' },
      card('Datasets', count(rows.length)),
      card('Rows', count(rows.reduce((n, d) => n + d.rows, 0))),
      card('Bytes', bytes(rows.reduce((n, d) => n + d.bytes, 0))),
      card('Lifecycle', badge(health.status))),
    h('section', { class: 'panel' }, h('h2', {}, 'Datasets'),
      rows.length ? table([
        { label: 'dataset', value: (d) => h('a', { href: '#/dataset/' + encodeURIComponent(d.name) }, d.name) },
        { label: 'period', value: (d) => d.period },
        { label: 'partitions', num: true, value: (d) => count(d.partitions) },
        { label: 'rows', num: true, value: (d) => count(d.rows) },
        { label: 'buffered', num: true, value: (d) => count(d.buffered_rows) },
        { label: 'bytes', num: true, value: (d) => bytes(d.bytes) },
        tierColumn('hot'), tierColumn('warm'), tierColumn('cold'), tierColumn('archived'),
        { label: 'ingest', num: true, value: (d) => d.rate },
      ], rows, (d) => { location.hash = '#/dataset/' + encodeURIComponent(d.name); })
        : h('p', { class: 'muted' }, 'No datasets yet: write rows to create one.')),
    h('section', { class: 'panel', id: 'health' }, h('h2', {}, 'Lifecycle health'),
      health.problems.length
        ? table([
          { label: 'status', value: (p) => badge(p.status) },
          { label: 'dataset', value: (p) => p.dataset || '' },
          { label: 'partition', value: (p) => p.partition || '' },
          { label: 'problem', value: (p) => p.problem || JSON.stringify(p) },
          { label: 'since', value: (p) => when(p.since) },
        ], health.problems)
        : h('p', { class: 'ok' }, 'No problems.')),
    h('section', { class: 'panel' }, h('h2', {}, 'Storage targets'),
      targets ? table([
        { label: 'target', value: (t) => t.name },
        { label: 'kind', value: (t) => t.kind },
        { label: 'tiers', value: (t) => t.tiers.map((x) => x.tier).join(', ') },
        { label: 'location', value: (t) => t.location || '' },
        { label: 'files', num: true, value: (t) => count(t.files) },
        { label: 'bytes', num: true, value: (t) => bytes(t.bytes) },
        { label: 'archives', num: true, value: (t) => count(t.archives) },
        { label: 'archive bytes', num: true, value: (t) => bytes(t.archive_bytes) },
        { label: 'reachable', value: (t) => (t.reachable === false ? h('span', { class: 'error' }, t.unreachable_reason || 'no') : 'yes') },
      ], targets.storage_targets) : h('p', { class: 'muted' }, 'Storage targets need an admin token.')),
    h('p', { class: 'muted' }, 'Ingest rates compare the row counts of this visit and the last (reload to refresh).'));
}

function card(label, value) {
  return h('div', { class: 'card' }, h('div', { class: 'muted' }, label), h('div', { class: 'value' }, value));
}

// ---------------------------------------------------------------- dataset

/** The timeline of `name`, sized to the page. */
export async function fetchTimeline(name, width) {
  const buckets = Math.max(20, Math.min(300, Math.floor((width - 160) / 5)));
  return api(`/v1/datasets/${encodeURIComponent(name)}/timeline?buckets=${buckets}&lanes=20`);
}

export async function datasetPage(main, name) {
  const width = Math.max(700, main.clientWidth - 40);
  // The timeline's answer has the totals: no per-partition listing is read.
  const data = await fetchTimeline(name, width);
  performance.mark('strata-timeline-fetched');
  const detail = h('section', { class: 'panel', id: 'explain' }, h('h2', {}, 'Partition'),
    h('p', { class: 'muted' }, 'Click a bar of the timeline for its partitions and their explanation.'));
  const list = h('section', { class: 'panel', id: 'partitions' }, h('h2', {}, 'Partitions'),
    h('button', { type: 'button', class: 'quiet', onclick: () => partitionList(list, name, '') }, 'List partitions'));
  const chart = data.partitions
    ? timeline(data, { width, onCell: (cell) => showCell(detail, name, cell, data.lanes) })
    : h('p', { class: 'muted' }, 'No partitions yet.');
  main.replaceChildren(
    h('h1', {}, 'Dataset ', h('code', {}, name)),
    h('div', { class: 'cards' },
      card('Partitions', count(data.partitions)), card('Committed rows', count(data.rows)),
      card('Bytes', bytes(data.bytes)), card('Period', data.period),
      card('Keys', count(data.keys))),
    h('section', { class: 'panel', id: 'timeline' }, h('h2', {}, 'Timeline'),
      h('p', { class: 'muted' }, data.bucket_ns
        ? `From ${when(data.from)} to ${when(data.to)}, ${count(Math.round(data.bucket_ns / 3.6e12))} h per bar`
        : `${count(data.periods)} periods from ${when(data.from)} to ${when(data.to)}, one bar per period`),
      legend(), chart),
    detail, list);
  performance.mark('strata-first-render');
}

async function showCell(panel, dataset, cell, lanes) {
  if (cell.partition) return showExplain(panel, dataset, cell.partition.period_label, cell.partition.key);
  panel.replaceChildren(h('h2', {}, `${count(cell.partitions)} partitions, ${when(cell.start)} → ${when(cell.end)}`));
  const params = new URLSearchParams({ from: cell.start, to: cell.end, tier: cell.tier });
  if (cell.lane !== null) params.set('key', lanes[cell.lane]);
  // The lane's key, or for `other` any key without a lane of its own.
  const inLane = (p) => (cell.lane !== null ? (p.key || '') === lanes[cell.lane] : !lanes.includes(p.key || ''));
  await partitionList(panel, dataset, '&' + params.toString(), cell, inLane);
}

/** A paginated, virtualised list of the dataset's partitions. */
async function partitionList(panel, dataset, filter, cell, inLane) {
  const holder = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  panel.replaceChildren(panel.firstChild, holder);
  let rows = [];
  let more = null;
  const keep = (p) => !cell || (p.tier === cell.tier && inLane(p)
    && labelStart(p.period_label) >= Date.parse(cell.start) && labelStart(p.period_label) < Date.parse(cell.end));
  const draw = () => {
    const columns = [
      { name: 'id', label: 'partition', width: 'minmax(200px, 2fr)' },
      { name: 'tier', label: 'tier' },
      { label: 'sealed', value: (p) => (p.read_only ? 'sealed' : '') },
      { label: 'rows', num: true, value: (p) => count(p.rows) },
      { label: 'bytes', num: true, value: (p) => bytes(p.bytes) },
      { label: 'files', num: true, value: (p) => count((p.files || []).length) },
    ];
    const explainPanel = h('div', { class: 'explain-detail' });
    holder.replaceChildren(
      virtualTable(columns, rows, { height: 300, onRow: (p) => showExplain(explainPanel, dataset, p.period_label, p.key || '', true) }),
      more ? h('button', { type: 'button', class: 'quiet', onclick: load }, 'Load more') : h('p', { class: 'muted' }, `${count(rows.length)} partitions`),
      explainPanel);
  };
  const load = async () => {
    try {
      const answer = more ? await more() : await page(`/v1/datasets/${encodeURIComponent(dataset)}/partitions?${filter.slice(1)}`, 'partitions', PAGE_ROWS);
      rows = rows.concat(answer.items.filter(keep));
      more = answer.next;
      draw();
    } catch (error) {
      showError(holder, error);
    }
  };
  await load();
}

async function showExplain(panel, dataset, label, key, keepHeading) {
  try {
    const explained = await api(explainPath(dataset, label, key));
    const body = [
      h('h2', {}, explained.id || `${dataset}/${label}${key ? '/' + key : ''}`),
      h('div', { class: 'cards' },
        card('Tier', h('span', { class: 'explain-tier', 'data-tier': explained.tier }, explained.tier)),
        card('Sealed', explained.read_only ? 'yes' : 'no'),
        card('Rows', count(explained.rows)), card('Bytes', bytes(explained.bytes))),
      h('h2', {}, 'Policies'),
      table([
        { label: 'policy', value: (p) => p.name },
        { label: 'kind', value: (p) => p.kind || '' },
        { label: 'last decision', value: (p) => (p.last_decision ? `${p.last_decision.action || ''} ${p.last_decision.outcome || ''}` : '—') },
        { label: 'reason', value: (p) => (p.last_decision && p.last_decision.reason) || '' },
        { label: 'next evaluation', value: (p) => when(p.next_evaluation) },
      ], explained.policies || []),
      h('h2', {}, 'Everything'), h('pre', {}, JSON.stringify(explained, null, 2)),
    ];
    if (keepHeading) panel.replaceChildren(...body);
    else panel.replaceChildren(...body);
    panel.scrollIntoView({ block: 'nearest' });
  } catch (error) {
    showError(panel, error);
  }
}

// ---------------------------------------------------------------- runs and audit

function filters(fields, onApply) {
  const inputs = {};
  const row = h('div', { class: 'form-row' }, fields.map(([name, placeholder]) => {
    inputs[name] = h('input', { name, placeholder, size: 16 });
    return h('label', {}, name, inputs[name]);
  }), h('button', { type: 'button', onclick: () => onApply(values()) }, 'Filter'));
  const values = () => Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, v.value.trim()]).filter(([, v]) => v));
  return row;
}

export async function runsPage(main) {
  const results = h('div');
  const load = async (values) => {
    const query = new URLSearchParams(values || {}).toString();
    try {
      const answer = await page('/v1/lifecycle/runs' + (query ? '?' + query : ''), 'runs', PAGE_ROWS);
      const rows = answer.items;
      const columns = [
        { name: 'id', label: 'run', width: '60px' },
        { name: 'policy', label: 'policy' },
        { name: 'dataset', label: 'dataset' },
        { label: 'started', value: (r) => when(r.started_at_ns), width: 'minmax(140px, 1fr)' },
        { label: 'dry', value: (r) => (r.dry ? 'dry' : '') },
        { label: 'executed', num: true, value: (r) => count(r.executed) },
        { label: 'rejected', num: true, value: (r) => count(r.rejected) },
        { label: 'failed', num: true, value: (r) => count(r.failed) },
        { label: 'moved', num: true, value: (r) => bytes(r.bytes_moved) },
      ];
      results.replaceChildren(rows.length
        ? virtualTable(columns, rows, { onRow: (r) => { location.hash = '#/run/' + r.id; } })
        : h('p', { class: 'muted' }, 'No runs.'),
      answer.next || answer.truncated ? h('p', { class: 'muted' }, `The first ${count(rows.length)} runs; filter to narrow.`) : '');
    } catch (error) {
      showError(results, error);
    }
  };
  main.replaceChildren(h('h1', {}, 'Lifecycle runs'),
    h('section', { class: 'panel' }, filters([['policy', 'policy name'], ['dataset', 'dataset']], load), results));
  await load();
}

export async function runPage(main, id) {
  const run = await api('/v1/lifecycle/runs/' + id);
  const entries = run.entries || [];
  const body = h('div');
  const verdicts = ['all', ...new Set(entries.map((e) => e.verdict))];
  const pick = h('select', { onchange: () => draw() }, verdicts.map((v) => h('option', { value: v }, v)));
  const draw = () => {
    const rows = pick.value === 'all' ? entries : entries.filter((e) => e.verdict === pick.value);
    body.replaceChildren(rows.length ? virtualTable([
      { name: 'partition_id', label: 'partition', width: 'minmax(200px, 2fr)' },
      { name: 'action', label: 'action' },
      { label: 'tier', value: (e) => e.tier || '' },
      { label: 'verdict', value: (e) => badge(e.verdict) },
      { label: 'outcome', value: (e) => badge(e.outcome) },
      { label: 'reason', value: (e) => e.reason, width: 'minmax(160px, 2fr)' },
      { label: 'why / error', value: (e) => e.error || e.why || '', width: 'minmax(160px, 2fr)' },
    ], rows) : h('p', { class: 'muted' }, 'No decisions listed (unchanged ones are only counted).'));
  };
  main.replaceChildren(h('h1', {}, `Run ${run.id}: ${run.policy} on ${run.dataset}`),
    h('div', { class: 'cards' },
      card('Now', when(run.now_ns)), card('Decisions', count(run.decisions)), card('Unchanged', count(run.unchanged)),
      card('Executed', count(run.executed)), card('Rejected', count(run.rejected)), card('Failed', count(run.failed)),
      card('Moved', bytes(run.bytes_moved))),
    h('section', { class: 'panel' }, h('h2', {}, 'Decisions'), h('div', { class: 'form-row' }, h('label', {}, 'verdict', pick)), body));
  draw();
}

export async function auditPage(main) {
  const results = h('div');
  const load = async (values) => {
    const query = new URLSearchParams(values || {}).toString();
    try {
      const answer = await page('/v1/audit' + (query ? '?' + query : ''), 'events', PAGE_ROWS);
      results.replaceChildren(answer.items.length ? virtualTable([
        { name: 'id', label: 'id', width: '60px' },
        { label: 'at', value: (e) => when(e.at_ns), width: 'minmax(140px, 1fr)' },
        { name: 'kind', label: 'kind' },
        { label: 'dataset', value: (e) => e.dataset || '' },
        { label: 'partition', value: (e) => e.partition || '', width: 'minmax(160px, 2fr)' },
        { label: 'actor', value: (e) => e.actor || '' },
        { label: 'detail', value: (e) => JSON.stringify(e.detail), width: 'minmax(200px, 3fr)' },
      ], answer.items) : h('p', { class: 'muted' }, 'No events.'),
      answer.next || answer.truncated ? h('p', { class: 'muted' }, `The first ${count(answer.items.length)} events; filter to narrow.`) : '');
    } catch (error) {
      showError(results, error);
    }
  };
  main.replaceChildren(h('h1', {}, 'Audit log'), h('section', { class: 'panel' },
    filters([['dataset', 'dataset'], ['kind', 'e.g. tier_move'], ['partition', 'partition id'], ['since', 'RFC 3339']], load), results));
  await load();
}

// ---------------------------------------------------------------- query

function localInput(ms) {
  return new Date(ms).toISOString().slice(0, 16);
}

export async function queryPage(main) {
  const datasets = (await api('/v1/datasets')).datasets;
  const now = Date.now();
  const dataset = h('select', { name: 'dataset' }, datasets.map((d) => h('option', { value: d.name }, d.name)));
  const from = h('input', { type: 'datetime-local', name: 'from', value: localInput(now - 86400000) });
  const to = h('input', { type: 'datetime-local', name: 'to', value: localInput(now + 60000) });
  const every = h('input', { name: 'every', placeholder: '1m (blank: raw rows)', size: 10 });
  const aggs = h('input', { name: 'aggregations', placeholder: 'avg:usage, max:usage', size: 24 });
  const groupBy = h('input', { name: 'group_by', placeholder: 'host', size: 12 });
  const limit = h('input', { name: 'limit', type: 'number', value: 10000, min: 1 });
  const sql = h('textarea', { name: 'sql', rows: 4, placeholder: 'SELECT … FROM dataset' });
  const results = h('section', { class: 'panel', id: 'results' }, h('p', { class: 'muted' }, 'Run a query.'));
  const structured = () => {
    const body = {
      time_range: { start: new Date(from.value + 'Z').toISOString(), end: new Date(to.value + 'Z').toISOString() },
      limit: Number(limit.value) || 10000,
    };
    const list = aggs.value.split(',').map((a) => a.trim()).filter(Boolean).map((a) => {
      const [fn, column] = a.split(':');
      return column ? { fn, column } : { fn: 'count', column: fn };
    });
    if (every.value.trim() || list.length) {
      body.downsample = { aggregations: list.length ? list : [{ fn: 'count', column: datasets.find((d) => d.name === dataset.value)?.time_column || 'time' }] };
      if (every.value.trim()) body.downsample.interval = every.value.trim();
      const groups = groupBy.value.split(',').map((g) => g.trim()).filter(Boolean);
      if (groups.length) body.group_by = groups;
    }
    return body;
  };
  const run = async (path, body, timeColumn) => {
    results.replaceChildren(h('p', { class: 'muted' }, 'Running…'));
    try {
      const answer = await api(path, { method: 'POST', body });
      showResults(results, answer, timeColumn, path, body);
    } catch (error) {
      showError(results, error);
    }
  };
  const timeOf = () => datasets.find((d) => d.name === dataset.value)?.time_column || 'time';
  main.replaceChildren(h('h1', {}, 'Query'),
    h('section', { class: 'panel' }, h('h2', {}, 'Structured'),
      h('div', { class: 'form-row' }, h('label', {}, 'dataset', dataset), h('label', {}, 'from (UTC)', from), h('label', {}, 'to', to)),
      h('div', { class: 'form-row' }, h('label', {}, 'every', every), h('label', {}, 'aggregate', aggs),
        h('label', {}, 'group by', groupBy), h('label', {}, 'limit', limit),
        h('button', { type: 'button', id: 'run-structured', onclick: () => run(`/v1/datasets/${encodeURIComponent(dataset.value)}/query`, structured(), timeOf()) }, 'Run'))),
    h('section', { class: 'panel' }, h('h2', {}, 'SQL'), sql,
      h('div', { class: 'buttons' }, h('button', { type: 'button', id: 'run-sql', onclick: () => run('/v1/sql', { sql: sql.value }, null) }, 'Run SQL'))),
    results);
}

function showResults(panel, answer, timeColumn, path, body) {
  const columns = answer.columns.map((c) => (typeof c === 'string' ? c : c.name));
  const rows = answer.rows;
  const time = timeColumn && columns.includes(timeColumn) ? timeColumn
    : columns.find((c) => rows.length && typeof rows[0][c] === 'string' && !Number.isNaN(Date.parse(rows[0][c])) && /\d{4}-\d\d-\d\dT/.test(rows[0][c]));
  const numeric = columns.filter((c) => c !== time && rows.some((r) => typeof r[c] === 'number'));
  const groups = columns.filter((c) => c !== time && !numeric.includes(c));
  const series = new Map();
  if (time) {
    for (const row of rows) {
      for (const column of numeric) {
        const name = [column, ...groups.map((g) => row[g])].join(' ');
        if (!series.has(name)) series.set(name, []);
        if (row[column] !== null) series.get(name).push([Date.parse(row[time]), row[column]]);
      }
    }
  }
  const download = (format, extension) => async () => {
    try {
      saveBlob(await apiBlob(path, Object.assign({}, body, { format })), 'strata-result.' + extension);
    } catch (error) {
      showError(panel, error);
    }
  };
  panel.replaceChildren(
    h('h2', {}, `${count(rows.length)} rows`),
    h('div', { class: 'form-row' },
      h('button', { type: 'button', class: 'quiet', id: 'download-csv', onclick: download('csv', 'csv') }, 'Download CSV'),
      h('button', { type: 'button', class: 'quiet', id: 'download-arrow', onclick: download('arrow', 'arrow') }, 'Download Arrow'),
      answer.stats ? h('span', { class: 'muted' }, `${answer.stats.elapsed_ms ?? ''} ms, ${count(answer.stats.rows_returned ?? rows.length)} rows`) : ''),
    series.size ? lineChart([...series].map(([name, points]) => ({ name, points: points.sort((a, b) => a[0] - b[0]) }))) : '',
    virtualTable(columns.map((name) => ({ name, label: name, num: numeric.includes(name), value: (r) => (r[name] === null ? '' : typeof r[name] === 'object' ? JSON.stringify(r[name]) : String(r[name])) })), rows, { height: 400 }),
    answer.error ? h('p', { class: 'error' }, `${answer.error.code}: ${answer.error.message}`) : '');
}

export { card, table };
