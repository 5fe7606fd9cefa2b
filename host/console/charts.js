// Charts drawn as SVG, and a virtualised table: no library, nothing fetched.

import { h, s, bytes, count, when } from './api.js';

export const TIERS = ['hot', 'warm', 'cold', 'archived', 'deleted'];

/** A legend of the tiers and marks. */
export function legend() {
  return h('div', { class: 'legend' },
    TIERS.slice(0, 4).map((tier) => h('span', {}, h('span', { class: 'swatch tier-' + tier }), tier)),
    h('span', {}, h('span', { class: 'swatch sealed' }), 'sealed'),
    h('span', {}, h('span', { class: 'swatch archived-mark' }), 'has archive'),
    h('span', {}, h('span', { class: 'swatch failed' }), 'compaction failed'));
}

/**
 * The timeline of `data` (the answer of GET …/timeline): x = period, one
 * lane per key (or `other`), each (bucket, lane) a bar whose height grows
 * with its bytes, split by tier. `options.onCell(cell)` is called on a
 * click; `options.now` (ms) draws a line; `options.changed(cell)` marks a
 * cell as changed by a plan.
 */
export function timeline(data, options = {}) {
  const width = Math.max(600, options.width || 1100);
  const hasOther = data.cells.some((c) => c.lane === null);
  const lanes = data.lanes.map((key) => (key === '' ? '(no key)' : key));
  if (hasOther) lanes.push('other (' + count(data.other_keys) + ' keys)');
  const laneHeight = lanes.length > 12 ? 18 : 34;
  const left = 150;
  const top = 22;
  const height = top + lanes.length * laneHeight + 8;
  const from = Date.parse(data.from);
  const to = Math.max(Date.parse(data.to), from + 1);
  const x = (ms) => left + ((ms - from) / (to - from)) * (width - left - 10);
  const svg = s('svg', {
    class: 'timeline', viewBox: `0 0 ${width} ${height}`, 'data-partitions': data.partitions,
    'data-cells': data.cells.length, role: 'img', 'aria-label': 'partitions over time by tier',
  });
  for (const tick of ticks(from, to, 6)) {
    svg.append(s('line', { class: 'grid', x1: x(tick), x2: x(tick), y1: top - 4, y2: height }));
    svg.append(s('text', { x: x(tick) + 2, y: 12 }, when(tick * 1e6).slice(0, 10)));
  }
  lanes.forEach((name, index) => {
    svg.append(s('text', { x: 4, y: top + index * laneHeight + laneHeight / 2 + 4 }, name.length > 22 ? name.slice(0, 21) + '…' : name));
  });
  const cellOf = { cells: [] };
  const cellAt = (target) => (target.dataset && target.dataset.index !== undefined ? cellOf.cells[Number(target.dataset.index)] : undefined);
  drawCells(svg, data, { x, top, laneHeight, laneCount: lanes.length, hasOther, cellOf }, options);
  // One listener and one tooltip for every bar: thousands of bars stay cheap.
  const tip = h('div', { class: 'tip', hidden: true });
  svg.addEventListener('click', (event) => {
    const cell = cellAt(event.target);
    if (cell && options.onCell) options.onCell(cell);
  });
  svg.addEventListener('mousemove', (event) => {
    const cell = cellAt(event.target);
    tip.hidden = !cell;
    if (!cell) return;
    tip.textContent = describe(cell);
    tip.style.left = event.clientX + 12 + 'px';
    tip.style.top = event.clientY + 12 + 'px';
  });
  svg.addEventListener('mouseleave', () => { tip.hidden = true; });
  if (options.now) svg.append(s('line', { class: 'now', x1: x(options.now), x2: x(options.now), y1: top - 4, y2: height }));
  return h('div', { class: 'timeline-holder' }, svg, tip);
}

const escapes = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const escape = (text) => String(text).replace(/[&<>"']/g, (c) => escapes[c]);

/**
 * The bars, written as one SVG fragment (thousands of elements parse far
 * faster than they are built one call at a time); `data-index` leads back
 * to the cell. The marks are one path per kind.
 */
function drawCells(svg, data, geometry, options) {
  const { x, top, laneHeight, laneCount, cellOf } = geometry;
  const groups = new Map();
  for (const cell of data.cells) {
    const id = cell.start + '|' + cell.lane;
    if (!groups.has(id)) groups.set(id, []);
    groups.get(id).push(cell);
  }
  let maxBytes = 0;
  for (const cells of groups.values()) maxBytes = Math.max(maxBytes, cells.reduce((n, c) => n + c.bytes, 0));
  const parts = [];
  const marks = { sealed: [], archived: [], failed: [] };
  const drawn = [];
  for (const cells of groups.values()) {
    cells.sort((a, b) => TIERS.indexOf(a.tier) - TIERS.indexOf(b.tier));
    const lane = cells[0].lane === null ? laneCount - 1 : cells[0].lane;
    const total = cells.reduce((n, c) => n + c.bytes, 0);
    const partitions = cells.reduce((n, c) => n + c.partitions, 0);
    const weight = (c) => (total > 0 ? c.bytes / total : c.partitions / partitions);
    const barHeight = (laneHeight - 4) * (maxBytes > 0 ? 0.3 + 0.7 * Math.sqrt(total / maxBytes) : 1);
    const x0 = x(Date.parse(cells[0].start));
    const barWidth = Math.max(1.5, x(Date.parse(cells[0].end)) - x0 - 0.5);
    let y = top + lane * laneHeight + (laneHeight - barHeight) / 2;
    for (const cell of cells) {
      const segment = barHeight * weight(cell);
      const changed = options.changed && options.changed(cell) ? ' changed' : '';
      parts.push(`<rect class="cell tier-${escape(cell.tier)}${changed}" x="${x0.toFixed(1)}" y="${y.toFixed(1)}" `
        + `width="${barWidth.toFixed(1)}" height="${Math.max(segment, 1).toFixed(1)}" data-index="${drawn.length}" `
        + `data-tier="${escape(cell.tier)}" data-lane="${cell.lane === null ? 'other' : cell.lane}" data-start="${escape(cell.start)}" `
        + `data-partitions="${cell.partitions}" data-bytes="${cell.bytes}"`
        + (cell.partition ? ` data-partition="${escape(cell.partition.id)}"` : '')
        + (cell.action ? ` data-action="${escape(cell.action)}"` : '') + '/>');
      drawn.push(cell);
      y += segment;
    }
    let offset = 0;
    const markTop = top + lane * laneHeight + 1;
    for (const kind of ['sealed', 'archived', 'failed']) {
      if (!cells.some((c) => c[kind])) continue;
      marks[kind].push(`M${(x0 + offset).toFixed(1)},${markTop.toFixed(1)}h4.5v4.5h-4.5z`);
      offset += 6;
    }
  }
  const layer = s('g', { class: 'cells' });
  layer.innerHTML = parts.join('');
  svg.append(layer);
  for (const [kind, paths] of Object.entries(marks)) {
    if (paths.length) svg.append(s('path', { class: 'mark ' + kind, 'data-mark': kind, 'data-count': paths.length, d: paths.join('') }));
  }
  cellOf.cells = drawn;
}

function describe(cell) {
  const what = cell.partition ? cell.partition.id : `${count(cell.partitions)} partitions`;
  const lines = [what, `${when(cell.start)} → ${when(cell.end)}`, `tier ${cell.tier}`,
    `${count(cell.rows)} rows, ${bytes(cell.bytes)}`];
  if (cell.sealed) lines.push(`${count(cell.sealed)} sealed`);
  if (cell.archived) lines.push(`${count(cell.archived)} archived`);
  if (cell.failed) lines.push(`${count(cell.failed)} compaction failed`);
  if (cell.action) lines.push(`plan: ${cell.action}`);
  return lines.join('\n');
}

/** About `n` round tick positions between `from` and `to` (ms). */
export function ticks(from, to, n) {
  const steps = [3600e3, 6 * 3600e3, 86400e3, 7 * 86400e3, 30 * 86400e3, 91 * 86400e3, 365 * 86400e3, 3650 * 86400e3];
  const raw = (to - from) / n;
  const step = steps.find((candidate) => candidate >= raw) || raw;
  const out = [];
  for (let t = Math.ceil(from / step) * step; t <= to && out.length < 50; t += step) out.push(t);
  return out;
}

const PALETTE = ['#1f6f8b', '#e4572e', '#2e7d32', '#7a6fb0', '#f3a712', '#4c86c6', '#a15c00', '#b3261e'];

/**
 * A line chart of `series` (`[{name, points: [[ms, value], …]}]`), at most
 * eight series drawn; a legend names them.
 */
export function lineChart(series, options = {}) {
  const width = options.width || 1100;
  const height = options.height || 260;
  const left = 60;
  const bottom = 20;
  const shown = series.slice(0, PALETTE.length);
  const all = shown.flatMap((one) => one.points);
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, 'data-series': shown.length, 'data-points': all.length });
  if (!all.length) return svg;
  const [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  const [y0, y1] = [Math.min(0, ...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  const x = (v) => left + ((v - x0) / Math.max(x1 - x0, 1)) * (width - left - 10);
  const y = (v) => height - bottom - ((v - y0) / Math.max(y1 - y0, 1e-12)) * (height - bottom - 10);
  for (const tick of ticks(x0, x1, 6)) svg.append(s('text', { x: x(tick), y: height - 4 }, when(tick * 1e6).slice(5, 16)));
  for (const v of [y0, (y0 + y1) / 2, y1]) svg.append(s('text', { x: 2, y: y(v) + 4 }, Number(v.toPrecision(4))));
  shown.forEach((one, index) => {
    const d = one.points.map((p, i) => `${i ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join('');
    svg.append(s('path', { d, stroke: PALETTE[index], 'data-series': one.name }, s('title', {}, one.name)));
    svg.append(s('text', { x: left + 10 + index * 140, y: 12, fill: PALETTE[index] }, one.name.slice(0, 20)));
  });
  return svg;
}

/**
 * A table that renders only the rows in view: `columns` are
 * `[{name, label, value(row), num}]`. Usable with any number of rows.
 */
export function virtualTable(columns, rows, options = {}) {
  const rowHeight = 24;
  const height = Math.min(options.height || 480, rows.length * rowHeight + 2);
  const template = columns.map((c) => c.width || 'minmax(80px, 1fr)').join(' ');
  const head = h('div', { class: 'vhead' }, columns.map((c) => h('span', { class: c.num ? 'num' : '' }, c.label || c.name)));
  head.style.gridTemplateColumns = template;
  const spacer = h('div');
  spacer.style.height = rows.length * rowHeight + 'px';
  const body = h('div', { class: 'vbody' }, spacer);
  body.style.height = Math.max(height, rowHeight) + 'px';
  const root = h('div', { class: 'vtable', 'data-rows': rows.length }, head, body);
  const drawn = new Map();
  const render = () => {
    const first = Math.max(0, Math.floor(body.scrollTop / rowHeight) - 5);
    const last = Math.min(rows.length, first + Math.ceil((body.clientHeight || height) / rowHeight) + 10);
    for (const [index, element] of drawn) {
      if (index < first || index >= last) { element.remove(); drawn.delete(index); }
    }
    for (let index = first; index < last; index += 1) {
      if (drawn.has(index)) continue;
      const row = rows[index];
      const element = h('div', { class: 'vrow' + (options.onRow ? ' clickable' : ''), 'data-index': index },
        columns.map((c) => {
          const value = c.value ? c.value(row) : row[c.name];
          return value instanceof Node ? h('span', {}, value) : h('span', { class: c.num ? 'num' : '', title: value ?? '' }, value ?? '');
        }));
      element.style.top = index * rowHeight + 'px';
      element.style.gridTemplateColumns = template;
      if (options.onRow) element.addEventListener('click', () => options.onRow(row));
      body.append(element);
      drawn.set(index, element);
    }
  };
  body.addEventListener('scroll', render, { passive: true });
  requestAnimationFrame(render);
  render();
  return root;
}
