// DOM building, icons, time and duration formatting, and small shared widgets. No framework: every view
// builds real elements with h(), so text is never parsed as HTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Creates an element. attrs: class, on<event>, dataset, boolean attributes (true/false), properties
 * value/checked/indeterminate, anything else as an attribute. Children: nodes, strings, arrays, null. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, ...children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.setAttribute('class', value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'style' && typeof value === 'object') Object.assign(el.style, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'value' || key === 'checked' || key === 'indeterminate') el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
}

export function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) el.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// ---- icons: 24×24 strokes drawn for this UI, inherited colour ------------------------------------------

const ICONS = {
  logo: '<circle cx="12" cy="12" r="9"/><path d="M12 7v5l3.5 2"/><path d="M3 12h2M19 12h2M12 3v2M12 19v2"/>',
  dashboard: '<rect x="3" y="3" width="7" height="9" rx="1.5"/><rect x="14" y="3" width="7" height="5" rx="1.5"/>'
    + '<rect x="14" y="12" width="7" height="9" rx="1.5"/><rect x="3" y="16" width="7" height="5" rx="1.5"/>',
  list: '<path d="M9 6h11M9 12h11M9 18h11"/><path d="M4 6h.01M4 12h.01M4 18h.01"/>',
  activity: '<path d="M3 12h4l3-8 4 16 3-8h4"/>',
  server: '<rect x="3" y="4" width="18" height="7" rx="2"/><rect x="3" y="13" width="18" height="7" rx="2"/>'
    + '<path d="M7 7.5h.01M7 16.5h.01"/>',
  play: '<path d="M7 4.5v15l12-7.5z"/>',
  stop: '<rect x="6" y="6" width="12" height="12" rx="1.5"/>',
  check: '<path d="M20 6 9 17l-5-5"/>',
  x: '<path d="M18 6 6 18M6 6l12 12"/>',
  plus: '<path d="M12 5v14M5 12h14"/>',
  edit: '<path d="M4 20h4L19 9l-4-4L4 16z"/><path d="m13 7 4 4"/>',
  copy: '<rect x="9" y="9" width="11" height="11" rx="2"/><path d="M15 9V6a2 2 0 0 0-2-2H6a2 2 0 0 0-2 2v7a2 2 0 0 0 2 2h3"/>',
  trash: '<path d="M4 7h16M10 11v6M14 11v6M6 7l1 13h10l1-13M9 7V4h6v3"/>',
  power: '<path d="M12 3v9"/><path d="M6.3 7a8 8 0 1 0 11.4 0"/>',
  refresh: '<path d="M20 11a8 8 0 0 0-14.9-3.9L4 9"/><path d="M4 4v5h5"/><path d="M4 13a8 8 0 0 0 14.9 3.9L20 15"/>'
    + '<path d="M20 20v-5h-5"/>',
  search: '<circle cx="11" cy="11" r="7"/><path d="m20 20-3.5-3.5"/>',
  crown: '<path d="M3 8l4.5 4L12 5l4.5 7L21 8l-2 11H5z"/>',
  left: '<path d="m15 18-6-6 6-6"/>',
  right: '<path d="m9 18 6-6-6-6"/>',
  first: '<path d="m17 18-6-6 6-6M7 6v12"/>',
  last: '<path d="m7 18 6-6-6-6M17 6v12"/>',
  logout: '<path d="M9 21H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h4M16 17l5-5-5-5M21 12H9"/>',
  okCircle: '<circle cx="12" cy="12" r="9"/><path d="m8 12.5 2.8 2.8L16 9.5"/>',
  badCircle: '<circle cx="12" cy="12" r="9"/><path d="m15 9-6 6M9 9l6 6"/>',
  warn: '<path d="M12 3.5 2.5 20h19z"/><path d="M12 10v4.5M12 17.5h.01"/>',
  dot: '<circle cx="12" cy="12" r="9"/><circle cx="12" cy="12" r="3.5" fill="currentColor"/>',
  clock: '<circle cx="12" cy="12" r="9"/><path d="M12 7v5l3 2"/>',
  minus: '<circle cx="12" cy="12" r="9"/><path d="M8 12h8"/>',
  skip: '<circle cx="12" cy="12" r="9"/><path d="m9 8 4 4-4 4M15 8v8"/>',
  terminal: '<rect x="3" y="4" width="18" height="16" rx="2"/><path d="m7 9 3 3-3 3M13 15h4"/>',
  key: '<circle cx="8" cy="15" r="4"/><path d="m11 12 9-9M16 7l3 3M14 9l2 2"/>',
  pause: '<rect x="6" y="5" width="4" height="14" rx="1"/><rect x="14" y="5" width="4" height="14" rx="1"/>',
  tag: '<path d="M3 12V4a1 1 0 0 1 1-1h8l9 9-9 9z"/><path d="M7.5 7.5h.01"/>',
  wrap: '<path d="M3 6h18M3 12h15a3 3 0 0 1 0 6h-4"/><path d="m16 16-2 2 2 2M3 18h7"/>',
  inbox: '<path d="M3 13h5l2 3h4l2-3h5"/><path d="M5 5h14l2 8v6H3v-6z"/>',
  globe: '<circle cx="12" cy="12" r="9"/><path d="M3 12h18M12 3a14 14 0 0 1 0 18M12 3a14 14 0 0 0 0 18"/>',
  eye: '<path d="M2 12s3.5-7 10-7 10 7 10 7-3.5 7-10 7S2 12 2 12z"/><circle cx="12" cy="12" r="3"/>',
};

/** An inline SVG icon; decorative (aria-hidden) unless a label is given. */
export function icon(name, label = '') {
  const el = svg('svg', {
    class: `icon icon-${name}`,
    viewBox: '0 0 24 24',
    width: 18,
    height: 18,
    fill: 'none',
    stroke: 'currentColor',
    'stroke-width': 2,
    'stroke-linecap': 'round',
    'stroke-linejoin': 'round',
    focusable: 'false',
  });
  el.innerHTML = ICONS[name] || ICONS.dot; // constant markup from this file, never user data
  if (label) {
    el.setAttribute('role', 'img');
    el.setAttribute('aria-label', label);
  } else {
    el.setAttribute('aria-hidden', 'true');
  }
  return el;
}

// ---- time ------------------------------------------------------------------------------------------------

export const viewerZone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';

/** A Date from an RFC 3339 string (nanoseconds allowed), or null for null, "" and Go's zero time. */
export function parseTime(value) {
  if (!value) return null;
  if (value instanceof Date) return value;
  const text = String(value).replace(/(\.\d{3})\d+/, '$1');
  const date = new Date(text);
  if (Number.isNaN(date.getTime()) || date.getUTCFullYear() < 1971) return null;
  return date;
}

const formatters = new Map();
function formatter(zone, withDate, withYear = true) {
  const key = `${zone}|${withDate}|${withYear}`;
  if (!formatters.has(key)) {
    /** @type {Intl.DateTimeFormatOptions} */
    const options = {
      hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23', timeZoneName: 'short',
    };
    if (withDate) Object.assign(options, { weekday: 'short', month: 'short', day: 'numeric' });
    if (withDate && withYear) options.year = 'numeric';
    if (zone) options.timeZone = zone;
    formatters.set(key, new Intl.DateTimeFormat(undefined, options));
  }
  return formatters.get(key);
}

export function isValidZone(zone) {
  if (!zone) return true;
  try {
    new Intl.DateTimeFormat(undefined, { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/** "Mon, Mar 4, 2025, 14:03:05 CET" in the given zone (default: the viewer's). */
export function absTime(value, zone = '', { compact = false } = {}) {
  const date = parseTime(value);
  if (!date) return '';
  const withYear = !compact || date.getFullYear() !== new Date().getFullYear();
  return formatter(isValidZone(zone) ? zone : '', true, withYear).format(date);
}

const rtf = new Intl.RelativeTimeFormat('en', { numeric: 'auto' });

/** "3 minutes ago", "in 2 hours", "in 5 s", "just now". */
export function relTime(value, now = Date.now()) {
  const date = parseTime(value);
  if (!date) return '';
  const diffS = (date.getTime() - now) / 1000;
  const abs = Math.abs(diffS);
  if (diffS > 0 && diffS < 59.5) return `in ${Math.max(1, Math.round(diffS))} s`; // a run about to start is not "just now"
  if (abs < 5) return 'just now';
  /** @type {Array<[Intl.RelativeTimeFormatUnit, number]>} */
  const units = [
    ['year', 31536000], ['month', 2592000], ['week', 604800], ['day', 86400], ['hour', 3600], ['minute', 60],
    ['second', 1],
  ];
  for (const [unit, size] of units) {
    // 0.95: 59 min 40 s reads "1 hour", not "60 minutes".
    if (abs >= size * 0.95 || unit === 'second') return rtf.format(Math.round(diffS / size) || Math.sign(diffS), unit);
  }
  return '';
}

/** A <time> showing relative time, the absolute time (with zone) as its title; kept fresh by refreshTimes(). */
export function timeAgo(value, { zone = '', withAbs = false, empty = '—' } = {}) {
  const date = parseTime(value);
  if (!date) return h('span', { class: 'muted' }, empty);
  const abs = absTime(date, zone);
  const rel = h('time', { datetime: date.toISOString(), title: abs, dataset: { rel: '1' } }, relTime(date));
  if (!withAbs) return rel;
  return h('span', { class: 'when' }, rel, h('span', { class: 'when-abs' }, abs));
}

/** @param {ParentNode} [root] */
export function refreshTimes(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll('time[data-rel]')) {
    el.textContent = relTime(el.getAttribute('datetime'), now);
  }
  for (const el of root.querySelectorAll('[data-since]')) {
    if (!(el instanceof HTMLElement)) continue;
    el.textContent = fmtDuration(now - Number(el.dataset.since));
  }
}

/** "850 ms", "12.3 s", "4 m 05 s", "2 h 03 m", "3 d 4 h". */
export function fmtDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms) || ms < 0) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} m ${String(Math.floor(s % 60)).padStart(2, '0')} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${String(m % 60).padStart(2, '0')} m`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** A live-updating duration since `start` (refreshTimes ticks it). */
export function runningFor(start) {
  const date = parseTime(start);
  if (!date) return h('span', { class: 'muted' }, '—');
  return h('span', { dataset: { since: String(date.getTime()) } }, fmtDuration(Date.now() - date.getTime()));
}

export function executionDuration(execution) {
  const start = parseTime(execution.started_at);
  const end = parseTime(execution.finished_at);
  if (!start) return h('span', { class: 'muted' }, '—');
  if (!end) return runningFor(start);
  return h('span', {}, fmtDuration(end.getTime() - start.getTime()));
}

export const fmtNumber = (n) => new Intl.NumberFormat().format(n);

// ---- statuses --------------------------------------------------------------------------------------------

const STATUS = {
  success: ['ok', 'okCircle', 'Succeeded'],
  failed: ['bad', 'badCircle', 'Failed'],
  partially_failed: ['warn', 'warn', 'Partly failed'],
  running: ['info', 'dot', 'Running'],
  pending: ['info', 'clock', 'Pending'],
  killed: ['bad', 'stop', 'Killed'],
  timeout: ['bad', 'clock', 'Timed out'],
  missed: ['warn', 'skip', 'Missed'],
  skipped: ['neutral', 'skip', 'Skipped'],
  '': ['neutral', 'minus', 'Never run'],
};

export const isRunning = (status) => status === 'running' || status === 'pending';

/** A status badge: colour, icon and words, so colour is never the only signal. */
export function statusBadge(status, extra = '') {
  const [tone, iconName, label] = STATUS[status ?? ''] || ['neutral', 'dot', status];
  return h('span', { class: `badge badge-${tone}${isRunning(status) ? ' badge-live' : ''}`, dataset: { status } },
    icon(iconName), label, extra ? h('span', { class: 'badge-extra' }, extra) : null);
}

export function executionStatus(execution) {
  if (execution.status) return execution.status;
  if (!parseTime(execution.finished_at)) return 'running';
  return execution.success ? 'success' : 'failed';
}

export function chip(text, tone = '') {
  return h('span', { class: `chip${tone ? ` chip-${tone}` : ''}` }, text);
}

export function kvChips(obj, { skip = [] } = {}) {
  const entries = Object.entries(obj || {}).filter(([k]) => !skip.includes(k));
  if (!entries.length) return h('span', { class: 'muted' }, 'none');
  return h('span', { class: 'chips' }, entries.map(([k, v]) => chip(`${k}=${v}`)));
}

// ---- widgets ---------------------------------------------------------------------------------------------

/** A button with an icon and a label; any other attribute as h() takes it.
 * @param {string} label
 * @param {{iconName?: string, kind?: string, onclick?: (event: Event) => unknown, title?: string, type?: string,
 *   [attribute: string]: unknown}} [options] */
export function button(label, { iconName = '', kind = '', onclick, title, type = 'button', ...rest } = {}) {
  return h('button', { type, class: `btn${kind ? ` btn-${kind}` : ''}`, onclick, title, ...rest },
    iconName ? icon(iconName) : null, label ? h('span', {}, label) : null);
}

/** A link that looks like a button.
 * @param {string} label
 * @param {string} href
 * @param {{iconName?: string, kind?: string, [attribute: string]: unknown}} [options] */
export function linkButton(label, href, { iconName = '', kind = '', ...rest } = {}) {
  return h('a', { class: `btn${kind ? ` btn-${kind}` : ''}`, href, ...rest }, iconName ? icon(iconName) : null,
    h('span', {}, label));
}

export function spinner(label = 'Loading…') {
  return h('div', { class: 'loading', role: 'status' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), label);
}

export function emptyState(iconName, title, text, ...actions) {
  return h('div', { class: 'empty' }, h('div', { class: 'empty-icon' }, icon(iconName)), h('p', { class: 'empty-title' }, title),
    text ? h('p', { class: 'muted' }, text) : null, actions.length ? h('div', { class: 'empty-actions' }, actions) : null);
}

export function errorBox(error, retry) {
  const message = error && error.message ? error.message : String(error);
  return h('div', { class: 'alert alert-bad', role: 'alert' }, icon('warn'),
    h('div', {}, h('strong', {}, error && error.status ? `Error ${error.status}` : 'Something went wrong'), h('p', {}, message)),
    retry ? button('Retry', { iconName: 'refresh', onclick: retry }) : null);
}

let uid = 0;
export const nextId = (prefix = 'f') => `${prefix}-${++uid}`;

/** A labelled form field wrapping `control`; returns the wrapper, with a slot for a hint and an error. */
export function field(label, control, { hint = '', id = control.id || nextId(), wide = false, required = false } = {}) {
  control.id = id;
  const hintEl = hint ? h('p', { class: 'hint', id: `${id}-hint` }, hint) : null;
  const errorEl = h('p', { class: 'field-error', id: `${id}-error`, hidden: true });
  const described = [hintEl ? hintEl.id : '', errorEl.id].filter(Boolean).join(' ');
  control.setAttribute('aria-describedby', described);
  const labelEl = h('label', { for: id }, label);
  if (required) control.setAttribute('aria-required', 'true');
  // The star sits outside the label, so the field's accessible name stays "Name", not "Name *".
  const head = required ? h('div', { class: 'label-line' }, labelEl, h('span', { class: 'req', 'aria-hidden': 'true' }, '*')) : labelEl;
  return h('div', { class: `field${wide ? ' field-wide' : ''}` }, head, control, hintEl, errorEl);
}

export function setFieldError(control, message) {
  const errorEl = document.getElementById(`${control.id}-error`);
  if (message) control.setAttribute('aria-invalid', 'true');
  else control.removeAttribute('aria-invalid');
  if (errorEl) {
    errorEl.textContent = message || '';
    errorEl.hidden = !message;
  }
}

/** Editable key/value rows. getPairs() returns [[key, value], ...] without empty keys.
 * @param {{pairs?: string[][], label?: string, keyLabel?: string, valueLabel?: string, addLabel?: string,
 *   keyPlaceholder?: string, valuePlaceholder?: string, name?: string, onchange?: () => void}} [options] */
export function kvEditor({ pairs = [], label = 'Setting', keyLabel = 'Key', valueLabel = 'Value', addLabel = 'Add row',
  keyPlaceholder = '', valuePlaceholder = '', name = 'kv', onchange } = {}) {
  const rows = h('div', { class: 'kv-rows' });
  const head = h('div', { class: 'kv-head', 'aria-hidden': 'true' }, h('span', {}, keyLabel), h('span', {}, valueLabel), h('span'));
  const wrap = h('div', { class: 'kv', dataset: { kv: name } }, head, rows);
  const renumber = () => {
    [...rows.children].forEach((row, i) => {
      row.querySelector('.kv-key').setAttribute('aria-label', `${label} ${i + 1} ${keyLabel.toLowerCase()}`);
      row.querySelector('.kv-value').setAttribute('aria-label', `${label} ${i + 1} ${valueLabel.toLowerCase()}`);
      row.querySelector('.kv-remove').setAttribute('aria-label', `Remove ${label.toLowerCase()} ${i + 1}`);
    });
    head.hidden = rows.children.length === 0;
  };
  const addRow = (key = '', value = '', focus = false) => {
    const keyInput = h('input', { class: 'kv-key', value: key, placeholder: keyPlaceholder, autocomplete: 'off', spellcheck: 'false', oninput: onchange });
    const valueInput = h('input', { class: 'kv-value', value, placeholder: valuePlaceholder, autocomplete: 'off', spellcheck: 'false', oninput: onchange });
    const row = h('div', { class: 'kv-row' }, keyInput, valueInput,
      h('button', {
        type: 'button', class: 'btn btn-ghost btn-icon kv-remove',
        onclick: () => {
          const next = row.nextElementSibling || row.previousElementSibling;
          row.remove();
          renumber();
          (next ? next.querySelector('.kv-key') : addButton).focus();
          onchange && onchange();
        },
      }, icon('x')));
    rows.append(row);
    renumber();
    if (focus) keyInput.focus();
  };
  const addButton = button(addLabel, { iconName: 'plus', kind: 'ghost', onclick: () => addRow('', '', true) });
  wrap.append(addButton);
  pairs.forEach(([k, v]) => addRow(k, v));
  renumber();
  wrap.getPairs = () => [...rows.children]
    .map((row) => [row.querySelector('.kv-key').value.trim(), row.querySelector('.kv-value').value])
    .filter(([k]) => k);
  wrap.setPairs = (list) => {
    clear(rows);
    list.forEach(([k, v]) => addRow(k, v));
    renumber();
  };
  return wrap;
}

/** A modal confirmation (native <dialog>: focus kept inside, Esc cancels). Resolves true when confirmed. */
/** A modal dialog; resolves true when confirmed. confirmLabel '' leaves only a Close button (nothing to confirm). */
export function confirmDialog({ title, body, confirmLabel = 'Confirm', danger = false }) {
  return new Promise((resolve) => {
    const titleId = nextId('dlg');
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': titleId },
      h('form', { method: 'dialog' },
        h('h2', { id: titleId }, title),
        h('div', { class: 'dialog-body' }, body),
        h('div', { class: 'dialog-actions' },
          h('button', { class: 'btn', value: 'cancel', type: 'submit' }, confirmLabel ? 'Cancel' : 'Close'),
          confirmLabel ? h('button', { class: `btn ${danger ? 'btn-danger' : 'btn-primary'}`, value: 'ok', type: 'submit' }, confirmLabel) : null)));
    document.body.append(dialog);
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue === 'ok');
      dialog.remove();
    });
    dialog.showModal();
    dialog.querySelector('button[value=cancel]').focus();
  });
}

/** Runs `fn` over items with at most `limit` at once; resolves to [{item, ok, value|error}]. */
export async function pool(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      try {
        results[i] = { item: items[i], ok: true, value: await fn(items[i]) };
      } catch (error) {
        results[i] = { item: items[i], ok: false, error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

export function debounce(fn, ms) {
  let timer = 0;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

export function plural(n, one, many = `${one}s`) {
  return `${fmtNumber(n)} ${n === 1 ? one : many}`;
}

// ---- notifications ---------------------------------------------------------------------------------------

/** Tells screen readers (polite); the same text twice in a row is still read. */
export function announce(text) {
  const el = document.getElementById('announcer');
  if (!el) return;
  el.textContent = el.textContent === text ? `${text}\u00a0` : text;
}

/** A short visible notification, also announced. tone: info | ok | bad | warn. */
export function toast(message, tone = 'info', { timeoutMs = tone === 'bad' ? 9000 : 5000 } = {}) {
  const container = document.getElementById('toasts');
  announce(message);
  if (!container) return;
  const iconName = { ok: 'okCircle', bad: 'badCircle', warn: 'warn', info: 'dot' }[tone] || 'dot';
  let timer = 0;
  const close = () => {
    clearTimeout(timer);
    el.remove();
  };
  const el = h('div', { class: `toast toast-${tone}` }, icon(iconName), h('p', {}, message),
    h('button', { type: 'button', class: 'btn btn-ghost btn-icon', 'aria-label': 'Dismiss notification', onclick: close }, icon('x')));
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(close, timeoutMs);
  };
  el.addEventListener('mouseenter', () => clearTimeout(timer));
  el.addEventListener('mouseleave', arm);
  el.addEventListener('focusin', () => clearTimeout(timer));
  el.addEventListener('focusout', arm);
  container.append(el);
  while (container.children.length > 4) container.firstElementChild.remove();
  arm();
}

/** A toast for a failed action, with the API's one-line reason. */
export function toastError(what, error) {
  if (error && error.name === 'AbortError') return;
  const reason = error && error.status === 403 ? `not allowed for your token's role (${error.message})` : error.message || String(error);
  toast(`${what} failed: ${reason}`, 'bad');
}

/** Runs fn (which re-renders container) and puts focus back on the control with the same data-key.
 * @param {HTMLElement} container
 * @param {() => unknown} fn */
export function keepFocus(container, fn) {
  const active = document.activeElement;
  const key = active instanceof HTMLElement && container.contains(active) ? active.dataset.key : undefined;
  fn();
  if (key) {
    const again = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again instanceof HTMLElement && again !== document.activeElement) again.focus({ preventScroll: true });
  }
}

/** Fills `nav` with the Newer / Older buttons of a list of executions at `page` of `pages` (hidden when there is one
 * page); a button calls `go` with the page it opens. Focus stays on the button that was pressed (on the other one
 * when it is now disabled).
 * @param {HTMLElement} nav
 * @param {number} page
 * @param {number} pages
 * @param {(page: number) => unknown} go */
export function executionsPager(nav, page, pages, go) {
  nav.hidden = pages <= 1;
  const focused = nav.contains(document.activeElement);
  keepFocus(nav, () => append(clear(nav),
    h('button', { type: 'button', class: 'btn btn-icon', 'aria-label': 'Newer executions', disabled: page <= 1, onclick: () => go(page - 1), dataset: { key: 'newer' } }, icon('left')),
    h('span', { class: 'pager-label' }, `Page ${page} of ${pages}`),
    h('button', { type: 'button', class: 'btn btn-icon', 'aria-label': 'Older executions', disabled: page >= pages, onclick: () => go(page + 1), dataset: { key: 'older' } }, icon('right'))));
  // The button pressed is disabled on the first or last page: the focus goes to the other one, not to the page.
  const enabled = nav.querySelector('button:not([disabled])');
  if (focused && !nav.contains(document.activeElement) && enabled instanceof HTMLElement) enabled.focus({ preventScroll: true });
}
