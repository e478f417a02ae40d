// DOM helpers. Everything the API returns (rule names, descriptions, labels) reaches the page through
// text nodes or attribute values set by these helpers, never through innerHTML, so it is always escaped.

/** Creates an element: h('td', {class: 'num', onclick: fn}, 'text', child, [more], null). */
export function h(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children, true);
}

/** SVG element with attributes (same rules as `h`, attributes only). */
export function svg(tag, attrs = {}, ...children) {
  return build(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, children, false);
}

// Absent attributes (undefined, null, false) are left out; functions under on* become listeners. HTML
// elements also take `class`, form `value`, and boolean properties, which must be set as properties.
// `style` is an object of CSS properties set through the CSSOM: the Content-Security-Policy (no
// 'unsafe-inline') refuses style attributes.
function build(el, attrs, children, html) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'style') Object.assign(el.style, v);
    else if (html && k === 'class') el.className = v;
    else if (html && k === 'value') el.value = v;
    else if (html && ['checked', 'selected', 'disabled', 'hidden'].includes(k)) el[k] = true;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function fmtInt(n) {
  return n === null || n === undefined ? '–' : Math.round(n).toLocaleString('en-US');
}

/** 1234567 → "1.23 M" (packets, flows); `unit` appended. */
export function fmtSi(n, unit = '') {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  const abs = Math.abs(n);
  const [d, s] = abs >= 1e9 ? [1e9, ' G'] : abs >= 1e6 ? [1e6, ' M'] : abs >= 1e3 ? [1e3, ' k'] : [1, ' '];
  const v = n / d;
  const txt = d === 1 ? (Number.isInteger(v) ? String(v) : v.toFixed(1)) : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2);
  return (txt + s + unit).trim();
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i ? v.toFixed(v >= 100 ? 0 : 1) : v} ${units[i]}`;
}

/** "3 s ago", "5 min ago", ... from an RFC 3339 time; "never" for null. */
export function fmtAgo(rfc3339, now = Date.now()) {
  if (!rfc3339) return 'never';
  const t = Date.parse(rfc3339);
  if (Number.isNaN(t)) return String(rfc3339);
  return fmtDuration(Math.max(0, now - t)) + ' ago';
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined) return '–';
  const s = ms / 1000;
  if (s < 1) return `${Math.round(ms)} ms`;
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

export function fmtTime(rfc3339) {
  if (!rfc3339) return '–';
  const d = new Date(rfc3339);
  return Number.isNaN(d.getTime()) ? String(rfc3339) : d.toLocaleString('en-GB', { hour12: false });
}

const PROTOS = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6' };
export function protoName(p) {
  return PROTOS[p] || String(p);
}

/** "10.0.0.1:443" or "[2001:db8::1]:443"; no port for ICMP. */
export function endpoint(addr, port, proto) {
  const a = String(addr).includes(':') ? `[${addr}]` : addr;
  return proto === 6 || proto === 17 ? `${a}:${port}` : a;
}

/** A rule selector (`"any"`, {segment}, {labels}, {prefix}) as short text. */
export function selectorText(sel) {
  if (sel === 'any' || sel === undefined || sel === null) return 'any';
  if (sel.segment !== undefined) return sel.segment;
  if (sel.prefix !== undefined) return sel.prefix;
  if (sel.labels !== undefined) return Object.entries(sel.labels).map(([k, v]) => `${k}=${v}`).join(', ') || 'labels: none';
  return JSON.stringify(sel);
}

/** An object's name in bold with its description, if any, below it (table cells). */
export function named(o) {
  return h('span', {}, h('strong', {}, o.name), o.description ? h('div', { class: 'muted small' }, o.description) : null);
}

/** A coloured badge for a verdict or action. */
export function badge(text, kind = text) {
  return h('span', { class: `badge badge-${String(kind).replace(/[^a-z_-]/gi, '')}` }, text);
}

/**
 * A table: columns [{label, cell(row) → node|text, class?, sort?(row) → value}], rows, and an empty text.
 * Clicking (or Enter on) a sortable header sorts by it.
 */
export function table({ columns, rows, empty = 'Nothing to show.', rowAttrs = () => ({}), caption }) {
  let sortBy = null;
  let desc = false;
  const tbody = h('tbody');
  const render = () => {
    let list = rows.slice();
    if (sortBy !== null && columns[sortBy].sort) {
      const key = columns[sortBy].sort;
      list.sort((a, b) => {
        const x = key(a);
        const y = key(b);
        const c = x < y ? -1 : x > y ? 1 : 0;
        return desc ? -c : c;
      });
    }
    replace(tbody, list.length
      ? list.map((r) => h('tr', rowAttrs(r), columns.map((c) => h('td', { class: c.class }, c.cell(r)))))
      : h('tr', {}, h('td', { colspan: columns.length, class: 'empty' }, empty)));
  };
  const head = h('tr', {}, columns.map((c, i) => {
    if (!c.sort) return h('th', { class: c.class, scope: 'col' }, c.label);
    const th = h('th', { class: `${c.class || ''} sortable`, scope: 'col', 'aria-sort': 'none' },
      h('button', {
        type: 'button',
        class: 'th-sort',
        onclick: () => {
          desc = sortBy === i ? !desc : true;
          sortBy = i;
          for (const other of head.children) other.setAttribute('aria-sort', 'none');
          th.setAttribute('aria-sort', desc ? 'descending' : 'ascending');
          render();
        },
      }, c.label));
    return th;
  }));
  render();
  return h('table', { class: 'grid' }, caption ? h('caption', {}, caption) : null, h('thead', {}, head), tbody);
}

/** A labelled form field with a slot for its validation error (shown by `showFieldErrors`). */
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  const err = h('div', { class: 'field-error', id: `${id}-err`, role: 'alert' });
  input.setAttribute('aria-describedby', `${id}-err`);
  return h('div', { class: 'field', 'data-field': input.name || '' },
    h('label', { for: id }, label), input, hint ? h('div', { class: 'hint' }, hint) : null, err);
}

/**
 * Puts API validation errors ({path, message}) on the fields whose `name` is the path's first component
 * (after `prefix`, e.g. "rules[3]."); returns the errors that matched no field.
 */
export function showFieldErrors(form, errors, prefix = '') {
  for (const f of form.querySelectorAll('.field')) {
    f.classList.remove('invalid');
    const e = f.querySelector('.field-error');
    if (e) e.textContent = '';
  }
  const rest = [];
  for (const err of errors) {
    let path = err.path || '';
    if (prefix) {
      if (!path.startsWith(prefix)) continue;
      path = path.slice(prefix.length);
    }
    // The field named by the whole path (e.g. "timeouts.udp"), else by its first component ("prefixes[2]").
    const byPath = (n) => (n ? form.querySelector(`.field[data-field="${CSS.escape(n)}"]`) : null);
    const whole = byPath(path);
    const name = whole ? path : path.split(/[.[]/)[0];
    const f = whole || byPath(name);
    if (!f) { rest.push(err); continue; }
    f.classList.add('invalid');
    const slot = f.querySelector('.field-error');
    const index = path.slice(name.length);
    slot.textContent = (slot.textContent ? `${slot.textContent} ` : '') + (index ? `${index}: ` : '') + err.message;
  }
  const first = form.querySelector('.field.invalid input, .field.invalid select, .field.invalid textarea');
  if (first) first.focus();
  return rest;
}

/** A short message at the corner of the screen. */
export function toast(message, kind = 'info') {
  const t = h('div', { class: `toast toast-${kind}` }, message);
  document.getElementById('toasts').append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 8000 : 4000);
}

/** A modal dialog; resolves with the button value pressed ('' when dismissed with Esc). */
export function modal(title, body, buttons = [{ label: 'Close', value: '' }]) {
  return new Promise((resolve) => {
    const dlg = h('dialog', { class: 'modal', 'aria-label': title },
      h('h2', {}, title),
      h('div', { class: 'modal-body' }, body),
      h('form', { method: 'dialog', class: 'actions' },
        buttons.map((b) => h('button', { value: b.value, class: b.class || '', type: 'submit' }, b.label))));
    dlg.addEventListener('close', () => { resolve(dlg.returnValue); dlg.remove(); });
    document.body.append(dlg);
    dlg.showModal();
  });
}

/** Calls `fn` now and every `ms` until the returned stop function is called; errors are shown once. */
export function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try { await fn(); } catch (e) { if (!stopped) reportError(e); }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

const shown = new Map(); // message → when it was last shown
/** Shows an API or network error as a toast; the same message is not repeated within a minute. */
export function reportError(e) {
  if (e && e.status === 401) return; // the app shows the sign-in page
  const msg = e && e.message ? e.message : String(e);
  const now = Date.now();
  if (now - (shown.get(msg) || 0) < 60000) return;
  shown.set(msg, now);
  toast(msg, 'error');
}
