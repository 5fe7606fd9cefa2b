// Talking to the Strata API and building the DOM. Every request carries the
// session's token (sessionStorage: gone when the tab closes).

const TOKEN_KEY = 'strata.token';

/** An error answer from the API: its HTTP status, stable code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra) {
  const all = Object.assign({}, extra || {});
  if (token()) all.Authorization = 'Bearer ' + token();
  return all;
}

async function failure(response) {
  let code = 'http_' + response.status;
  let message = response.statusText || 'request failed';
  try {
    const body = await response.json();
    const error = body.error || {};
    code = error.code || code;
    message = error.message || message;
  } catch (_) { /* not JSON */ }
  return new ApiError(response.status, code, message);
}

/** GET (or `method` with a JSON body) `path`; the JSON answer, or throws ApiError. */
export async function api(path, options = {}) {
  const init = { method: options.method || 'GET', headers: headers(options.headers) };
  if (options.body !== undefined) {
    init.body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
    init.headers['Content-Type'] = 'application/json';
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  return response.json();
}

/** The answer as a Blob (CSV/Arrow downloads). */
export async function apiBlob(path, body) {
  const response = await fetch(path, {
    method: 'POST', body: JSON.stringify(body), headers: headers({ 'Content-Type': 'application/json' }),
  });
  if (!response.ok) throw await failure(response);
  return response.blob();
}

/** Saves a Blob under `filename` through a temporary link. */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = h('a', { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/**
 * A page of a listing: `{items, next}`. Listings that paginate answer
 * `next_cursor`; `next` is then a function fetching the following page.
 * A listing that does not is cut at `cap` items on this side.
 */
export async function page(path, key, limit, cap = limit) {
  const join = path.includes('?') ? '&' : '?';
  const body = await api(path + join + 'limit=' + limit);
  const items = body[key] || [];
  if (!('next_cursor' in body)) {
    return { items: items.slice(0, cap), next: null, truncated: items.length > cap, body };
  }
  const cursor = body.next_cursor;
  const next = cursor
    ? () => page(path + join + 'cursor=' + encodeURIComponent(cursor), key, limit, cap)
    : null;
  return { items, next, truncated: false, body };
}

// ---------------------------------------------------------------- DOM

/** An HTML element: `h('div', {class: 'x', onclick: f}, child, …)`. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, children);
}

function build(element, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else if (name === 'text') element.textContent = value;
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

// ---------------------------------------------------------------- formats

export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = Number(n);
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return (unit === 0 ? value : value.toFixed(value < 10 ? 2 : 1)) + ' ' + units[unit];
}

export function count(n) {
  if (n === null || n === undefined) return '—';
  return Number(n).toLocaleString('en-US');
}

/** RFC 3339 text or epoch ns → a short UTC date-time. */
export function when(value) {
  if (value === null || value === undefined || value === '') return '—';
  const ms = typeof value === 'number' ? value / 1e6 : Date.parse(value);
  if (Number.isNaN(ms)) return String(value);
  return new Date(ms).toISOString().replace('T', ' ').replace(/:\d\d\.\d+Z$|\.\d+Z$|Z$/, '');
}

/** A value shown in a table cell. */
export function cellText(value) {
  if (value === null || value === undefined) return '';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

export function badge(text) {
  return h('span', { class: 'badge ' + String(text), 'data-status': text }, text);
}

/** The start (ms since the epoch, UTC) of a period label: 2026-01-15T13, 2026-01-15, 2026-W03, 2026-01, 2026-Q1, 2026. */
export function labelStart(label) {
  let m;
  if ((m = /^(\d{4})-(\d\d)-(\d\d)T(\d\d)$/.exec(label))) return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4]);
  if ((m = /^(\d{4})-(\d\d)-(\d\d)$/.exec(label))) return Date.UTC(+m[1], +m[2] - 1, +m[3]);
  if ((m = /^(\d{4})-W(\d\d)$/.exec(label))) {
    const jan4 = Date.UTC(+m[1], 0, 4);
    const monday = jan4 - ((new Date(jan4).getUTCDay() + 6) % 7) * 86400000;
    return monday + (+m[2] - 1) * 7 * 86400000;
  }
  if ((m = /^(\d{4})-(\d\d)$/.exec(label))) return Date.UTC(+m[1], +m[2] - 1, 1);
  if ((m = /^(\d{4})-Q(\d)$/.exec(label))) return Date.UTC(+m[1], (+m[2] - 1) * 3, 1);
  if ((m = /^(\d{4})$/.exec(label))) return Date.UTC(+m[1], 0, 1);
  return NaN;
}

/** `dataset/label[/key]` → `{label, key}`. */
export function splitPartitionId(id, dataset) {
  const rest = id.startsWith(dataset + '/') ? id.slice(dataset.length + 1) : id;
  const slash = rest.indexOf('/');
  return slash < 0 ? { label: rest, key: '' } : { label: rest.slice(0, slash), key: rest.slice(slash + 1) };
}

/** The explain path of a partition. */
export function explainPath(dataset, label, key) {
  const parts = [dataset, 'partitions', label].concat(key ? [key] : []).map(encodeURIComponent);
  return '/v1/datasets/' + parts.join('/') + '/explain';
}
