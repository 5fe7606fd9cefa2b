// Admin pages: policies, their versions, rollback, run now, and the
// simulate panel drawing a plan on the dataset's timeline. The buttons are
// hidden without an admin token; the API refuses such calls anyway.

import { api, badge, bytes, count, h, labelStart, splitPartitionId, when } from './api.js';
import { legend, timeline, virtualTable } from './charts.js';
import { confirmAction, isAdmin, showError } from './app.js';
import { card, fetchTimeline, table } from './pages.js';

export async function policiesPage(main) {
  if (!isAdmin()) {
    main.replaceChildren(h('h1', {}, 'Policies'), h('p', { class: 'muted' }, 'Policies need an admin token.'));
    return;
  }
  const answer = await api('/v1/policies');
  const reload = h('button', {
    type: 'button', class: 'admin-only', id: 'reload',
    onclick: async () => {
      if (!(await confirmAction('Reload every policy file now?'))) return;
      await api('/v1/policies/reload', { method: 'POST' }).catch((error) => showError(main, error));
      policiesPage(main);
    },
  }, 'Reload policies');
  main.replaceChildren(h('h1', {}, 'Policies'),
    h('section', { class: 'panel' }, table([
      { label: 'policy', value: (p) => h('a', { href: '#/policy/' + encodeURIComponent(p.name) }, p.name) },
      { label: 'kind', value: (p) => p.kind || '' },
      { label: 'status', value: (p) => badge(p.status) },
      { label: 'active', num: true, value: (p) => (p.active_seq ?? '—') },
      { label: 'datasets', value: (p) => p.datasets.join(', ') },
      { label: 'schedule', value: (p) => p.schedule || '' },
      { label: 'calls', num: true, value: (p) => count(p.invocations) },
      { label: 'failures', num: true, value: (p) => count(p.failures) },
      { label: 'reload failures', num: true, value: (p) => count(p.reload_failures) },
      { label: 'load error', value: (p) => (p.load_error ? h('span', { class: 'error' }, p.load_error.message || JSON.stringify(p.load_error)) : '') },
    ], answer.policies, (p) => { location.hash = '#/policy/' + encodeURIComponent(p.name); }),
    answer.file_errors && answer.file_errors.length
      ? h('pre', { class: 'error' }, JSON.stringify(answer.file_errors, null, 2)) : '',
    h('div', { class: 'buttons' }, reload)));
}

export async function policyPage(main, name) {
  const [policy, datasets] = await Promise.all([api('/v1/policies/' + encodeURIComponent(name)), api('/v1/datasets')]);
  const path = '/v1/policies/' + encodeURIComponent(name);
  const rollback = (version) => async () => {
    if (!(await confirmAction(`Roll ${name} back to version ${version.seq}? It serves at once.`))) return;
    try {
      await api(path + '/rollback', { method: 'POST', body: { version: version.seq } });
      await policyPage(main, name);
    } catch (error) {
      showError(status, error);
    }
  };
  const status = h('div', { id: 'policy-status' });
  const versions = table([
    { label: 'version', num: true, value: (v) => v.seq },
    { label: 'status', value: (v) => badge(v.status) },
    { label: 'component', value: (v) => h('code', {}, v.component_sha256.slice(0, 12)) },
    { label: 'source', value: (v) => v.source },
    { label: 'loaded', value: (v) => when(v.loaded_at) },
    { label: 'activated', value: (v) => when(v.activated_at) },
    { label: 'error', value: (v) => (v.last_error ? h('span', { class: 'error' }, v.last_error) : '') },
    { label: '', value: (v) => (v.status === 'superseded'
      ? h('button', { type: 'button', class: 'quiet admin-only rollback', 'data-seq': v.seq, onclick: rollback(v), disabled: !isAdmin() }, 'Roll back to this')
      : '') },
  ], policy.versions);
  main.replaceChildren(
    h('h1', {}, 'Policy ', h('code', {}, name)),
    h('div', { class: 'cards' },
      card('Status', badge(policy.status)),
      card('Active version', h('span', { id: 'active-seq' }, policy.active_seq ?? '—')),
      card('Kind', policy.kind || '—'), card('Calls', count(policy.invocations)),
      card('Failures', count(policy.failures)), card('Limit failures', count(policy.limit_failures)),
      card('Last call', `${count(policy.last_duration_us)} µs`)),
    status,
    policy.evaluation_error ? h('p', { class: 'error' }, 'Last evaluation error: ' + JSON.stringify(policy.evaluation_error)) : '',
    h('section', { class: 'panel' }, h('h2', {}, 'Versions'), versions),
    runPanel(path, policy, datasets.datasets, status),
    simulatePanel(path, policy, datasets.datasets),
    h('section', { class: 'panel' }, h('h2', {}, 'Definition'), h('pre', {}, JSON.stringify({ plugin: policy.plugin, datasets: policy.datasets, schedule: policy.schedule, config: policy.config, limits: policy.limits }, null, 2))));
}

function datasetPicker(policy, datasets, name) {
  const bound = datasets.filter((d) => policy.datasets.some((pattern) => matches(pattern, d.name)));
  return h('select', { name }, (bound.length ? bound : datasets).map((d) => h('option', { value: d.name }, d.name)));
}

/** A dataset pattern as policies write them: `*` matches any run of characters. */
function matches(pattern, name) {
  const escaped = pattern.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*');
  return new RegExp('^' + escaped + '$').test(name);
}

function runPanel(path, policy, datasets, status) {
  const dataset = datasetPicker(policy, datasets, 'run-dataset');
  const dry = h('input', { type: 'checkbox', name: 'dry' });
  const run = async () => {
    const what = dry.checked ? 'a dry run of' : 'the';
    if (!(await confirmAction(`Run ${what} ${policy.name} on ${dataset.value} now?`))) return;
    try {
      const answer = await api(path + '/run', { method: 'POST', body: { dataset: dataset.value, dry: dry.checked } });
      status.replaceChildren(...answer.runs.map((r) => h('p', { class: 'ok' },
        `Run ${r.id}: ${count(r.executed)} executed, ${count(r.rejected)} rejected, ${count(r.failed)} failed. `,
        h('a', { href: '#/run/' + r.id }, 'Decisions'))));
    } catch (error) {
      showError(status, error);
    }
  };
  return h('section', { class: 'panel admin-only' }, h('h2', {}, 'Run now'),
    h('div', { class: 'form-row' }, h('label', {}, 'dataset', dataset), h('label', {}, dry, 'dry run'),
      h('button', { type: 'button', id: 'run-now', onclick: run }, 'Run now')));
}

function simulatePanel(path, policy, datasets) {
  const dataset = datasetPicker(policy, datasets, 'simulate-dataset');
  const today = new Date();
  const now = h('input', { type: 'date', name: 'now', value: today.toISOString().slice(0, 10) });
  const slider = h('input', { type: 'range', name: 'now-days', min: -730, max: 730, value: 0 });
  slider.addEventListener('input', () => {
    now.value = new Date(today.getTime() + Number(slider.value) * 86400000).toISOString().slice(0, 10);
  });
  const version = h('select', { name: 'version' }, h('option', { value: '' }, 'active'),
    policy.versions.filter((v) => v.status !== 'failed').map((v) => h('option', { value: v.seq }, `version ${v.seq} (${v.status})`)));
  const out = h('div', { id: 'simulation' });
  const simulate = async () => {
    out.replaceChildren(h('p', { class: 'muted' }, 'Simulating…'));
    try {
      const body = { dataset: dataset.value, now: now.value + 'T00:00:00Z' };
      if (version.value) body.version = Number(version.value);
      const width = Math.max(700, out.clientWidth || 1000);
      const [answer, current] = await Promise.all([api(path + '/simulate', { method: 'POST', body }), fetchTimeline(dataset.value, width)]);
      drawSimulation(out, answer, current, width, Date.parse(body.now));
    } catch (error) {
      showError(out, error);
    }
  };
  return h('section', { class: 'panel admin-only' }, h('h2', {}, 'Simulate'),
    h('div', { class: 'form-row' }, h('label', {}, 'dataset', dataset), h('label', {}, 'now', now, slider),
      h('label', {}, 'version', version), h('button', { type: 'button', id: 'simulate', onclick: simulate }, 'Simulate')),
    out);
}

/** What the plan's entry does to a partition's tier. */
function tierAfter(entry) {
  if (entry.action === 'delete') return 'deleted';
  if (entry.action === 'move') return entry.target;
  if (entry.action === 'archive') return 'archived';
  return entry.tier;
}

/**
 * The plan drawn on the dataset's timeline: the current picture, then the
 * same buckets and lanes with every change applied (changed bars outlined).
 */
function plannedTimeline(answer, current) {
  const cells = new Map(current.cells.map((c) => [`${c.start}|${c.lane}|${c.tier}`, Object.assign({}, c)]));
  const lanes = new Map(current.lanes.map((key, index) => [key, index]));
  const starts = [...new Set(current.cells.map((c) => c.start))].map((start) => [Date.parse(start), start]).sort((a, b) => a[0] - b[0]);
  const bucketOf = (ms) => {
    let found = starts[0];
    for (const candidate of starts) { if (candidate[0] <= ms) found = candidate; else break; }
    return found;
  };
  for (const entry of answer.plan) {
    const after = tierAfter(entry);
    if (after === entry.tier) continue;
    const { label, key } = splitPartitionId(entry.partition, answer.dataset);
    const bucket = bucketOf(labelStart(label));
    if (!bucket) continue;
    const lane = lanes.has(key) ? lanes.get(key) : null;
    const from = cells.get(`${bucket[1]}|${lane}|${entry.tier}`);
    if (from) {
      from.partitions -= 1;
      from.bytes -= entry.bytes;
      from.rows -= entry.rows;
    }
    const id = `${bucket[1]}|${lane}|${after}`;
    if (!cells.has(id)) {
      const template = from || {};
      cells.set(id, { start: bucket[1], end: template.end || bucket[1], lane, tier: after, partitions: 0, rows: 0, bytes: 0, sealed: 0, archived: 0, failed: 0, partition: null, action: entry.action });
    }
    const to = cells.get(id);
    to.partitions += 1;
    to.bytes += entry.bytes;
    to.rows += entry.rows;
    to.action = entry.action;
  }
  return Object.assign({}, current, { cells: [...cells.values()].filter((c) => c.partitions > 0) });
}

function drawSimulation(out, answer, current, width, nowMs) {
  const changes = answer.plan.filter((e) => tierAfter(e) !== e.tier);
  const summary = Object.entries(answer.summary || {}).map(([action, s]) => Object.assign({ action }, s));
  const diff = answer.diff || [];
  out.replaceChildren(
    h('p', {}, `Version ${answer.version.seq ?? answer.version.label} at ${when(answer.now)}: `,
      h('strong', { 'data-changes': changes.length }, `${count(changes.length)} partitions change`),
      ` of ${count(answer.plan.length)}.`),
    table([
      { label: 'action', value: (s) => s.action },
      { label: 'partitions', num: true, value: (s) => count(s.partitions) },
      { label: 'rows', num: true, value: (s) => count(s.rows) },
      { label: 'bytes', num: true, value: (s) => bytes(s.bytes) },
    ], summary),
    current.partitions ? h('div', {}, legend(),
      h('h2', {}, 'Now'), timeline(current, { width, now: nowMs }),
      h('h2', {}, 'After the plan'), h('div', { class: 'planned' }, timeline(plannedTimeline(answer, current), { width, now: nowMs, changed: (c) => Boolean(c.action) })))
      : '',
    h('h2', {}, 'Changes'),
    changes.length ? virtualTable([
      { name: 'partition', label: 'partition', width: 'minmax(200px, 2fr)' },
      { name: 'action', label: 'action' },
      { label: 'from', value: (e) => e.tier },
      { label: 'to', value: (e) => tierAfter(e) },
      { label: 'bytes', num: true, value: (e) => bytes(e.bytes) },
      { name: 'reason', label: 'reason', width: 'minmax(200px, 3fr)' },
    ], changes, { height: 300 }) : h('p', { class: 'muted' }, 'Nothing changes.'),
    h('h2', {}, answer.against ? `Differences from the active version ${answer.against.seq}` : 'Differences from the active version'),
    diff.length ? virtualTable([
      { name: 'partition', label: 'partition', width: 'minmax(200px, 2fr)' },
      { label: 'active', value: (d) => `${d.before.action} ${d.before.target || ''}` },
      { label: 'this version', value: (d) => `${d.after.action} ${d.after.target || ''}` },
    ], diff, { height: 240 }) : h('p', { class: 'muted' }, 'None.'));
}
