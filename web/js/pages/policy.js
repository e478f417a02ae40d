// Policy: the draft's segments, services and rules in searchable tables, editors that show validation errors
// on the field they concern, the diff against the active policy, commit (optionally with confirm-within, or at a
// scheduled time; with the two-person rule, after a submission for approval), and the version history with
// rollback. Every write carries the draft's (or the active version's) ETag in If-Match, so an edit made by someone
// else meanwhile is never overwritten silently.

import { request, get, can, ApiError } from '../api.js';
import {
  h, replace, table, named, field, showFieldErrors, toast, modal, reportError, badge, selectorText, fmtTime, fmtAgo,
} from '../dom.js';
import { unreadableWarning } from './discovery.js';

const TABS = [
  ['rules', 'Rules'], ['segments', 'Segments'], ['services', 'Services'], ['settings', 'Settings'],
  ['commit', 'Diff & commit'], ['history', 'History'],
];

// The draft as last read: document, ETag, validation.
const draft = { doc: null, etag: null, validation: { valid: true, errors: [] } };

async function loadDraft() {
  // Validation needs the `analyze` right: without it the draft is shown as it is, unjudged.
  const [d, v] = await Promise.all([request('GET', '/draft'), can('analyze') ? request('POST', '/validate') : null]);
  draft.doc = d.data;
  draft.etag = d.etag;
  draft.validation = v ? v.data : { valid: true, errors: [], unjudged: true };
}

/**
 * A draft write with If-Match. Keeps the ETag and validation from the answer and reloads the document.
 * A stale ETag (someone else changed the draft) reloads and says so; nothing is overwritten.
 */
async function write(method, path, body, query) {
  try {
    const r = await request(method, path, { body, etag: draft.etag, query });
    draft.etag = r.etag || draft.etag;
    if (r.data && r.data.validation) draft.validation = r.data.validation;
    const d = await request('GET', '/draft');
    draft.doc = d.data;
    draft.etag = d.etag;
    return r.data;
  } catch (e) {
    if (e instanceof ApiError && e.code === 'stale_etag') {
      await loadDraft();
      throw new ApiError(409, e.code, 'The draft was changed meanwhile (another user or script). It has been reloaded: check it and redo your edit.');
    }
    throw e;
  }
}

const errorsAt = (prefix) => draft.validation.errors.filter((e) => e.path.startsWith(prefix));

function validationBanner() {
  const v = draft.validation;
  if (v.unjudged) return null;
  if (v.valid) return h('div', { class: 'banner ok', id: 'validation' }, 'The draft validates.');
  return h('div', { class: 'banner bad', id: 'validation' },
    h('strong', {}, `The draft does not validate: ${v.errors.length} error(s). It cannot be committed until they are fixed.`),
    h('ul', {}, v.errors.map((e) => h('li', {}, h('code', {}, e.path), ' ', e.message))));
}

// ---- Form helpers ----

const input = (name, value = '', attrs = {}) => h('input', { name, value: value ?? '', ...attrs });
const select = (name, options, value) => h('select', { name },
  options.map((o) => (Array.isArray(o) ? o : [o, o])).map(([v, l]) => h('option', { value: v, selected: String(v) === String(value) }, l)));
const lines = (text) => text.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
const labelsText = (labels) => Object.entries(labels || {}).map(([k, v]) => `${k}=${v}`).join('\n');
function parseLabels(text) {
  const out = {};
  for (const l of lines(text)) {
    const i = l.indexOf('=');
    if (i < 0) out[l] = ''; // the API names the problem
    else out[l.slice(0, i).trim()] = l.slice(i + 1).trim();
  }
  return out;
}

/** A selector field: kind (any, segment, labels, prefix) and its value. */
function selectorField(name, label, sel, segments) {
  const kind = sel === 'any' || !sel ? 'any' : Object.keys(sel)[0];
  const value = kind === 'any' ? '' : kind === 'labels' ? labelsText(sel.labels).replace(/\n/g, ', ') : sel[kind];
  const kindSel = select(`${name}_kind`, [['any', 'any address'], ['segment', 'segment'], ['labels', 'segments with labels'], ['prefix', 'prefix']], kind);
  const val = input(`${name}_value`, value, { list: 'segment-names', placeholder: 'engineering · zone=it · 10.0.0.0/8', 'aria-label': `${label} value` });
  val.disabled = kind === 'any';
  kindSel.addEventListener('change', () => { val.disabled = kindSel.value === 'any'; if (!val.disabled) val.focus(); });
  const f = field(label, kindSel);
  f.dataset.field = name;
  // The kind and the value side by side, in the field's place for its control.
  const wrap = h('div', { class: 'selector' });
  kindSel.replaceWith(wrap);
  wrap.append(kindSel, val);
  f.append(h('datalist', { id: 'segment-names' }, segments.map((s) => h('option', { value: s.name }))));
  return f;
}

function readSelector(form, name) {
  const kind = form.elements[`${name}_kind`].value;
  const v = form.elements[`${name}_value`].value.trim();
  if (kind === 'any') return 'any';
  if (kind === 'labels') return { labels: parseLabels(v) };
  return { [kind]: v };
}

/**
 * An editor dialog. `save(form)` returns the path prefix of the saved object in the draft (e.g. "rules[3].")
 * so the draft's validation errors for it can be shown on its fields; the dialog stays open while there are.
 */
function editor(title, fields, save) {
  const note = h('div', { class: 'form-note', role: 'status' });
  const form = h('form', { class: 'editor', novalidate: true }, fields, note,
    h('div', { class: 'actions' },
      h('button', { type: 'button', value: 'cancel', onclick: () => dlg.close() }, 'Close'),
      h('button', { 'data-needs': 'edit', type: 'submit', class: 'primary' }, 'Save to draft')));
  const dlg = h('dialog', { class: 'modal wide', 'aria-label': title }, h('h2', {}, title), form);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    replace(note);
    try {
      const prefix = await save(form);
      const errs = prefix ? errorsAt(prefix) : [];
      if (errs.length) {
        const rest = showFieldErrors(form, errs, prefix);
        replace(note, h('div', { class: 'banner warn' }, 'Saved to the draft, but it does not validate yet: fix the field(s) marked in red.',
          rest.length ? h('ul', {}, rest.map((e) => h('li', {}, e.message))) : null));
      } else {
        dlg.close();
        toast(`${title}: saved to the draft.`, 'ok');
      }
    } catch (e) {
      if (e instanceof ApiError && e.details.length) {
        const rest = showFieldErrors(form, e.details);
        replace(note, h('div', { class: 'banner bad' }, `Not saved: ${e.message}.`,
          rest.length ? h('ul', {}, rest.map((d) => h('li', {}, d.path ? `${d.path}: ` : '', d.message))) : null));
      } else {
        replace(note, h('div', { class: 'banner bad' }, `Not saved: ${e.message}`));
      }
    }
  });
  dlg.addEventListener('close', () => { dlg.remove(); rerender(); });
  document.body.append(dlg);
  dlg.showModal();
  const first = form.querySelector('input:not([readonly]), select, textarea');
  if (first) first.focus();
  return dlg;
}

let rerender = () => {};

/** Tells the shell the active version changed, so the status bar does not wait for its next poll. */
const policyChanged = () => window.dispatchEvent(new Event('bulkhead:policy-changed'));

// ---- Rules ----

// A tiered (bulkhead.policy/v2) draft keeps its rules in tiers; a v1 draft's rules are one list.
const tiered = () => draft.doc.format === 'bulkhead.policy/v2';
const allRules = () => (tiered() ? (draft.doc.tiers || []).flatMap((t) => t.rules || []) : draft.doc.rules || []);
/** The validation path prefix of a rule: `rules[i].` or `tiers[k].rules[i].`. */
function rulePath(id) {
  if (!tiered()) return `rules[${(draft.doc.rules || []).findIndex((x) => x.id === id)}].`;
  for (const [k, t] of (draft.doc.tiers || []).entries()) {
    const i = (t.rules || []).findIndex((x) => x.id === id);
    if (i >= 0) return `tiers[${k}].rules[${i}].`;
  }
  return null;
}

function ruleEditor(rule, tier) {
  const isNew = !rule;
  const r = rule || { id: nextRuleId(), name: '', from: 'any', to: 'any', service: 'any', action: 'allow', mode: 'enforce', log: false };
  const actions = [['allow', 'allow'], ['deny', 'deny (drop silently)'], ['reject', 'reject (RST / unreachable)']];
  if (tiered()) actions.push(['pass', 'pass (no decision: the next tier decides)']);
  const listed = tiered() ? ((draft.doc.tiers || []).find((t) => t.name === tier)?.rules || []) : draft.doc.rules || [];
  const segs = draft.doc.segments || [];
  const fields = [
    h('div', { class: 'row' },
      field('Id', input('id', r.id, { type: 'number', min: 1, readonly: !isNew })),
      field('Name', input('name', r.name, { required: true }))),
    field('Description', input('description', r.description || '')),
    h('div', { class: 'row' }, selectorField('from', 'From', r.from, segs), selectorField('to', 'To', r.to, segs)),
    h('div', { class: 'row' },
      field('Service', input('service', r.service, { list: 'service-names' }), 'a service name, or "any"'),
      field('Action', select('action', actions, r.action)),
      field('Mode', select('mode', [['enforce', 'enforce'], ['monitor', 'monitor (pass, count would-deny)']], r.mode))),
    h('datalist', { id: 'service-names' }, h('option', { value: 'any' }), (draft.doc.services || []).map((s) => h('option', { value: s.name }))),
    h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'log', checked: r.log }), ' Log every flow this rule decides'),
    isNew ? field('Position', input('position', listed.length, { type: 'number', min: 0 }), tiered() ? `0 = first in tier ${tier}` : '0 = first; the first matching rule decides') : null,
  ];
  editor(isNew ? (tiered() ? `New rule in tier ${tier}` : 'New rule') : `Rule #${r.id}`, fields, async (form) => {
    const el = form.elements;
    const body = {
      id: Number(el.id.value),
      name: el.name.value.trim(),
      from: readSelector(form, 'from'),
      to: readSelector(form, 'to'),
      service: el.service.value.trim(),
      action: el.action.value,
      mode: el.mode.value,
      log: el.log.checked,
    };
    if (el.description.value.trim()) body.description = el.description.value.trim();
    const query = { position: el.position ? el.position.value : undefined };
    if (isNew && tiered()) query.tier = tier;
    if (isNew) await write('POST', '/draft/rules', body, query);
    else await write('PUT', `/draft/rules/${body.id}`, body);
    return rulePath(body.id);
  });
}

function nextRuleId() {
  const ids = allRules().map((r) => r.id);
  return ids.length ? Math.ceil((Math.max(...ids) + 1) / 10) * 10 : 100;
}

async function moveRule(rule, to) {
  try {
    await write('PUT', `/draft/rules/${rule.id}`, rule, { position: to });
    rerender();
  } catch (e) { reportError(e); }
}

async function remove(kind, key, label) {
  const ok = await modal(`Delete ${label}?`, h('p', {}, `${label} is removed from the draft. Nothing changes in the network until you commit.`),
    [{ label: 'Cancel', value: '' }, { label: 'Delete', value: 'yes', class: 'danger' }]);
  if (ok !== 'yes') return;
  try {
    await write('DELETE', `/draft/${kind}/${encodeURIComponent(key)}`);
    toast(`${label} deleted from the draft.`, 'ok');
    rerender();
  } catch (e) { reportError(e); }
}

/** The search field of a table tab: each keystroke re-renders the tab (`render`) and keeps the focus here. */
function searchBox(query, body, render) {
  return h('input', {
    type: 'search', class: 'search', placeholder: 'Search…', 'aria-label': 'Search', value: query.q,
    oninput: (ev) => { query.q = ev.target.value; render(body, query); body.querySelector('.search').focus(); },
  });
}

const matches = (q, ...texts) => !q || texts.some((t) => String(t ?? '').toLowerCase().includes(q.toLowerCase()));
const issues = (prefix) => {
  const errs = errorsAt(prefix);
  return errs.length ? h('span', { class: 'badge badge-deny', title: errs.map((e) => `${e.path}: ${e.message}`).join('\n') }, `${errs.length} error(s)`) : '';
};

/** A whole-document write (tiers: add, remove, reorder, defaults; migration to tiers). */
async function writeDoc(change, done) {
  const doc = structuredClone(draft.doc);
  change(doc);
  try {
    await write('PUT', '/draft', doc);
    if (done) toast(done, 'ok');
    rerender();
  } catch (e) { reportError(e); }
}

/** Asks for a new tier's name, then adds it (first or last). */
async function newTier() {
  const name = h('input', { name: 'tier-name', required: true, maxlength: 64, placeholder: 'e.g. global, segments, hosts', 'aria-label': 'Tier name' });
  const where = select('tier-where', [['last', 'after the last tier'], ['first', 'before the first tier']], 'last');
  const ok = await modal('New tier', h('div', {}, field('Name', name), field('Place', where)),
    [{ label: 'Cancel', value: '' }, { label: 'Add tier', value: 'add', class: 'primary' }]);
  if (ok !== 'add' || !name.value.trim()) return;
  const tier = { name: name.value.trim(), rules: [], default: 'pass' };
  await writeDoc((d) => { if (where.value === 'first') d.tiers.unshift(tier); else d.tiers.push(tier); }, `Tier ${tier.name} added to the draft.`);
}

/** A v1 draft as one tier `main` with default pass: the same verdicts. */
function toTiers() {
  return writeDoc((d) => {
    d.format = 'bulkhead.policy/v2';
    d.tiers = [{ name: 'main', rules: d.rules || [], default: 'pass' }];
    delete d.rules;
  }, 'The draft now has tiers (one tier, main, with the same verdicts).');
}

function rulesTable(rules, query, pathOf, label) {
  const rows = rules.map((r, i) => ({ r, i })).filter(({ r }) => matches(query.q, r.id, r.name, r.description, selectorText(r.from), selectorText(r.to), r.service, r.action));
  return table({
    columns: [
      { label: '#', class: 'num', cell: ({ i }) => i },
      { label: 'Id', class: 'num', cell: ({ r }) => r.id },
      { label: 'Name', cell: ({ r }) => named(r) },
      { label: 'From', cell: ({ r }) => selectorText(r.from) },
      { label: 'To', cell: ({ r }) => selectorText(r.to) },
      { label: 'Service', cell: ({ r }) => r.service },
      { label: 'Action', cell: ({ r }) => h('span', {}, badge(r.action), r.mode === 'monitor' ? badge('monitor') : null, r.log ? badge('log', 'info') : null) },
      { label: 'Issues', cell: ({ i }) => issues(pathOf(i)) },
      { label: '', class: 'row-actions', cell: ({ r, i }) => h('span', {},
        h('button', { 'data-needs': 'edit', type: 'button', class: 'small', onclick: () => ruleEditor(r, label), 'aria-label': `Edit rule ${r.id}` }, 'Edit'),
        h('button', { 'data-needs': 'edit', type: 'button', class: 'small', disabled: i === 0, onclick: () => moveRule(r, i - 1), 'aria-label': `Move rule ${r.id} up` }, '↑'),
        h('button', { 'data-needs': 'edit', type: 'button', class: 'small', disabled: i === rules.length - 1, onclick: () => moveRule(r, i + 1), 'aria-label': `Move rule ${r.id} down` }, '↓'),
        h('button', { 'data-needs': 'edit', type: 'button', class: 'small danger', onclick: () => remove('rules', r.id, `rule #${r.id} ${r.name}`), 'aria-label': `Delete rule ${r.id}` }, 'Delete')) },
    ],
    rows,
    rowAttrs: ({ r }) => ({ 'data-rule': r.id }),
    empty: query.q ? 'No rule matches the search.' : (label ? `No rules in tier ${label}: its default applies.` : 'No rules: everything gets the default action.'),
  });
}

function tieredRulesTab(body, query) {
  const tiers = draft.doc.tiers || [];
  const sections = tiers.map((t, k) => h('section', { class: 'card tier', 'data-tier': t.name },
    h('div', { class: 'toolbar' },
      h('h2', {}, `Tier ${k + 1}: ${t.name}`),
      t.description ? h('span', { class: 'muted' }, t.description) : null,
      h('label', {}, 'Default ', h('select', {
        'data-needs': 'edit', name: `default-${t.name}`, 'aria-label': `Default of tier ${t.name}`,
        onchange: (ev) => writeDoc((d) => { d.tiers[k].default = ev.target.value; }, `Tier ${t.name}: default ${ev.target.value}.`),
      }, [['pass', 'pass (the next tier decides)'], ['deny', 'deny']].map(([v, l]) => h('option', { value: v, selected: (t.default || 'pass') === v }, l)))),
      h('button', { 'data-needs': 'edit', type: 'button', class: 'small primary', onclick: () => ruleEditor(null, t.name), 'aria-label': `New rule in tier ${t.name}` }, 'New rule'),
      h('button', { 'data-needs': 'edit', type: 'button', class: 'small', disabled: k === 0, 'aria-label': `Move tier ${t.name} up`,
        onclick: () => writeDoc((d) => { d.tiers.splice(k - 1, 0, d.tiers.splice(k, 1)[0]); }) }, '↑'),
      h('button', { 'data-needs': 'edit', type: 'button', class: 'small', disabled: k === tiers.length - 1, 'aria-label': `Move tier ${t.name} down`,
        onclick: () => writeDoc((d) => { d.tiers.splice(k + 1, 0, d.tiers.splice(k, 1)[0]); }) }, '↓'),
      h('button', { 'data-needs': 'edit', type: 'button', class: 'small danger', 'aria-label': `Delete tier ${t.name}`,
        onclick: async () => {
          const ok = await modal(`Delete tier ${t.name}?`, h('p', {}, `Tier ${t.name} and its ${(t.rules || []).length} rule(s) are removed from the draft.`),
            [{ label: 'Cancel', value: '' }, { label: 'Delete', value: 'yes', class: 'danger' }]);
          if (ok === 'yes') await writeDoc((d) => { d.tiers.splice(k, 1); }, `Tier ${t.name} deleted from the draft.`);
        } }, 'Delete tier'),
      issues(`tiers[${k}].name`)),
    rulesTable(t.rules || [], query, (i) => `tiers[${k}].rules[${i}].`, t.name)));
  replace(body,
    h('div', { class: 'toolbar' }, searchBox(query, body, rulesTab),
      h('button', { 'data-needs': 'edit', type: 'button', class: 'primary', onclick: newTier }, 'New tier'),
      h('span', { class: 'muted' }, `Tiers are evaluated in order, each top to bottom: the first allow, deny or reject decides; pass hands the flow to the next tier; a tier's deny default decides what its rules did not. Then the policy default: ${draft.doc.settings?.default_action ?? 'deny'}.`)),
    tiers.length ? sections : h('p', { class: 'muted' }, 'No tiers: everything gets the default action.'));
}

function rulesTab(body, query) {
  if (tiered()) {
    tieredRulesTab(body, query);
    return;
  }
  const list = rulesTable(draft.doc.rules || [], query, (i) => `rules[${i}].`, null);
  replace(body,
    h('div', { class: 'toolbar' }, searchBox(query, body, rulesTab),
      h('button', { 'data-needs': 'edit', type: 'button', class: 'primary', onclick: () => ruleEditor(null) }, 'New rule'),
      h('button', { 'data-needs': 'edit', type: 'button', onclick: toTiers, title: 'Make the rules the tier main of a tiered policy (same verdicts); tiers can then be added' }, 'Use tiers'),
      h('span', { class: 'muted' }, `Rules are evaluated top to bottom; the first match decides. Default action: ${draft.doc.settings?.default_action ?? 'deny'}.`)),
    list);
}

// ---- Segments ----

function segmentEditor(seg) {
  const isNew = !seg;
  const s = seg || { name: '', prefixes: [], labels: {}, mode: 'enforce' };
  const fields = [
    h('div', { class: 'row' },
      field('Name', input('name', s.name, { readonly: !isNew, required: true })),
      field('Mode', select('mode', [['enforce', 'enforce'], ['monitor', 'monitor (visibility phase: pass and count)']], s.mode))),
    field('Description', input('description', s.description || '')),
    field('Prefixes', h('textarea', { name: 'prefixes', rows: 3 }, (s.prefixes || []).join('\n')), 'one CIDR per line, e.g. 10.20.0.0/24 or 2001:db8::/64'),
    field('VLANs', input('vlans', (s.vlans || []).join(', ')), 'optional: only frames tagged with these VLAN ids (comma-separated)'),
    field('Labels', h('textarea', { name: 'labels', rows: 3 }, labelsText(s.labels)), 'key=value, one per line (e.g. zone=pci)'),
  ];
  editor(isNew ? 'New segment' : `Segment ${s.name}`, fields, async (form) => {
    const el = form.elements;
    const body = { name: el.name.value.trim(), prefixes: lines(el.prefixes.value), labels: parseLabels(el.labels.value), mode: el.mode.value };
    if (el.description.value.trim()) body.description = el.description.value.trim();
    if (el.vlans.value.trim()) body.vlans = lines(el.vlans.value).map((v) => (/^\d+$/.test(v) ? Number(v) : v));
    if (isNew) await write('POST', '/draft/segments', body);
    else await write('PUT', `/draft/segments/${encodeURIComponent(body.name)}`, body);
    return `segments[${draft.doc.segments.findIndex((x) => x.name === body.name)}].`;
  });
}

function segmentsTab(body, query) {
  const segs = (draft.doc.segments || []).map((s, i) => ({ s, i }))
    .filter(({ s }) => matches(query.q, s.name, s.description, (s.prefixes || []).join(' '), labelsText(s.labels)));
  replace(body,
    h('div', { class: 'toolbar' }, searchBox(query, body, segmentsTab),
      h('button', { 'data-needs': 'edit', type: 'button', class: 'primary', onclick: () => segmentEditor(null) }, 'New segment')),
    table({
      columns: [
        { label: 'Name', cell: ({ s }) => named(s), sort: ({ s }) => s.name },
        { label: 'Prefixes', cell: ({ s }) => (s.prefixes || []).join(', ') },
        { label: 'VLANs', cell: ({ s }) => (s.vlans ? s.vlans.join(', ') : 'any') },
        { label: 'Labels', cell: ({ s }) => Object.entries(s.labels || {}).map(([k, v]) => h('span', { class: 'label' }, `${k}=${v}`)) },
        { label: 'Mode', cell: ({ s }) => badge(s.mode || 'enforce') },
        { label: 'Issues', cell: ({ i }) => issues(`segments[${i}].`) },
        { label: '', class: 'row-actions', cell: ({ s }) => h('span', {},
          h('button', { 'data-needs': 'edit', type: 'button', class: 'small', onclick: () => segmentEditor(s), 'aria-label': `Edit segment ${s.name}` }, 'Edit'),
          h('button', { 'data-needs': 'edit', type: 'button', class: 'small danger', onclick: () => remove('segments', s.name, `segment ${s.name}`), 'aria-label': `Delete segment ${s.name}` }, 'Delete')) },
      ],
      rows: segs,
      rowAttrs: ({ s }) => ({ 'data-segment': s.name }),
      empty: query.q ? 'No segment matches the search.' : 'No segments yet.',
    }));
}

// ---- Services ----

function serviceEditor(svc) {
  const isNew = !svc;
  const s = svc || { name: '', protocol: 'tcp' };
  const fields = [
    h('div', { class: 'row' },
      field('Name', input('name', s.name, { readonly: !isNew, required: true })),
      field('Protocol', input('protocol', s.protocol, { list: 'protocols' }), 'tcp, udp, icmp, icmpv6, any, or a number')),
    h('datalist', { id: 'protocols' }, ['tcp', 'udp', 'icmp', 'icmpv6', 'any'].map((p) => h('option', { value: p }))),
    field('Description', input('description', s.description || '')),
    h('div', { class: 'row' },
      field('Ports', input('ports', (s.ports || []).join(', ')), 'destination ports: 443, 8000-8080; empty = all'),
      field('Source ports', input('source_ports', (s.source_ports || []).join(', ')), 'empty = all')),
    h('div', { class: 'row' },
      field('ICMP type', input('icmp_type', s.icmp_type ?? '', { type: 'number', min: 0, max: 255 })),
      field('ICMP code', input('icmp_code', s.icmp_code ?? '', { type: 'number', min: 0, max: 255 }))),
  ];
  editor(isNew ? 'New service' : `Service ${s.name}`, fields, async (form) => {
    const el = form.elements;
    const proto = el.protocol.value.trim();
    const body = { name: el.name.value.trim(), protocol: /^\d+$/.test(proto) ? Number(proto) : proto };
    if (el.description.value.trim()) body.description = el.description.value.trim();
    if (el.ports.value.trim()) body.ports = lines(el.ports.value);
    if (el.source_ports.value.trim()) body.source_ports = lines(el.source_ports.value);
    if (el.icmp_type.value !== '') body.icmp_type = Number(el.icmp_type.value);
    if (el.icmp_code.value !== '') body.icmp_code = Number(el.icmp_code.value);
    if (isNew) await write('POST', '/draft/services', body);
    else await write('PUT', `/draft/services/${encodeURIComponent(body.name)}`, body);
    return `services[${draft.doc.services.findIndex((x) => x.name === body.name)}].`;
  });
}

function servicesTab(body, query) {
  const svcs = (draft.doc.services || []).map((s, i) => ({ s, i }))
    .filter(({ s }) => matches(query.q, s.name, s.description, s.protocol, (s.ports || []).join(' ')));
  replace(body,
    h('div', { class: 'toolbar' }, searchBox(query, body, servicesTab),
      h('button', { 'data-needs': 'edit', type: 'button', class: 'primary', onclick: () => serviceEditor(null) }, 'New service')),
    table({
      columns: [
        { label: 'Name', cell: ({ s }) => named(s), sort: ({ s }) => s.name },
        { label: 'Protocol', cell: ({ s }) => String(s.protocol) },
        { label: 'Ports', cell: ({ s }) => (s.ports ? s.ports.join(', ') : s.icmp_type !== undefined ? `type ${s.icmp_type}${s.icmp_code !== undefined ? ` code ${s.icmp_code}` : ''}` : 'all') },
        { label: 'Source ports', cell: ({ s }) => (s.source_ports ? s.source_ports.join(', ') : 'all') },
        { label: 'Issues', cell: ({ i }) => issues(`services[${i}].`) },
        { label: '', class: 'row-actions', cell: ({ s }) => h('span', {},
          h('button', { 'data-needs': 'edit', type: 'button', class: 'small', onclick: () => serviceEditor(s), 'aria-label': `Edit service ${s.name}` }, 'Edit'),
          h('button', { 'data-needs': 'edit', type: 'button', class: 'small danger', onclick: () => remove('services', s.name, `service ${s.name}`), 'aria-label': `Delete service ${s.name}` }, 'Delete')) },
      ],
      rows: svcs,
      rowAttrs: ({ s }) => ({ 'data-service': s.name }),
      empty: query.q ? 'No service matches the search.' : 'No services yet.',
    }));
}

// ---- Settings ----

function settingsTab(body) {
  const s = draft.doc.settings || {};
  const t = s.timeouts || {};
  const bool = (name, label, value) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name, checked: value !== false }), ` ${label}`);
  const note = h('div', { class: 'form-note' });
  const timeouts = ['tcp_syn', 'tcp_established', 'tcp_fin', 'tcp_time_wait', 'tcp_close', 'udp', 'udp_stream', 'icmp', 'other'];
  const fl = s.flood_limits || {};
  const floodLimits = [['half_open_per_source', 'half-open per source', 'at most 64'], ['new_per_second_per_source', 'new per second per source', ''],
    ['connections_per_segment', 'connections per segment', '']];
  const form = h('form', { class: 'editor card', novalidate: true, onsubmit: async (ev) => {
    ev.preventDefault();
    replace(note);
    const el = form.elements;
    const settings = {
      default_action: el.default_action.value,
      tcp_strictness: el.tcp_strictness.value,
      on_policy_change: el.on_policy_change.value,
      pass_arp: el.pass_arp.checked,
      pass_neighbor_discovery: el.pass_neighbor_discovery.checked,
      drop_other_ethertypes: el.drop_other_ethertypes.checked,
      timeouts: Object.fromEntries(timeouts.map((k) => [k, el[`timeouts.${k}`].value === '' ? null : Number(el[`timeouts.${k}`].value)])),
      flood_limits: Object.fromEntries(floodLimits.map(([k]) => [k, el[`flood_limits.${k}`].value === '' ? 0 : Number(el[`flood_limits.${k}`].value)])),
    };
    try {
      await write('PUT', '/draft/settings', settings);
      const errs = errorsAt('settings.');
      if (errs.length) showFieldErrors(form, errs, 'settings.');
      replace(note, errs.length ? h('div', { class: 'banner warn' }, 'Saved to the draft, but it does not validate yet.') : h('div', { class: 'banner ok' }, 'Settings saved to the draft.'));
    } catch (e) {
      if (e instanceof ApiError) showFieldErrors(form, e.details);
      replace(note, h('div', { class: 'banner bad' }, `Not saved: ${e.message}`));
    }
  } },
  h('div', { class: 'row' },
    field('Default action', select('default_action', ['deny', 'reject', 'allow'], s.default_action), 'what a flow no rule matches gets'),
    field('TCP strictness', select('tcp_strictness', [['strict', 'strict (a connection starts with a SYN)'], ['loose', 'loose (mid-stream pickup)']], s.tcp_strictness)),
    field('On policy change', select('on_policy_change', [['reevaluate', 're-evaluate existing connections'], ['keep', 'keep existing connections']], s.on_policy_change))),
  h('fieldset', {}, h('legend', {}, 'Non-IP traffic'),
    bool('pass_arp', 'Pass ARP', s.pass_arp), bool('pass_neighbor_discovery', 'Pass IPv6 neighbour discovery', s.pass_neighbor_discovery),
    bool('drop_other_ethertypes', 'Drop other ethertypes', s.drop_other_ethertypes)),
  h('fieldset', {}, h('legend', {}, 'Idle timeouts (seconds)'),
    h('div', { class: 'row wrap' }, timeouts.map((k) => field(k.replace(/_/g, ' '), input(`timeouts.${k}`, t[k], { type: 'number', min: 1 }))))),
  h('fieldset', {}, h('legend', {}, 'Flood limits (0: off)'),
    h('div', { class: 'row wrap' }, floodLimits.map(([k, label, hint]) => field(label, input(`flood_limits.${k}`, fl[k] ?? 0, { type: 'number', min: 0 }), hint || undefined)))),
  note,
  h('div', { class: 'actions' }, h('button', { 'data-needs': 'edit', type: 'submit', class: 'primary' }, 'Save settings to draft')));
  replace(body, form);
}

// ---- Diff & commit ----

/** Pretty JSON of before and after, with the lines that differ marked. */
function jsonDiff(before, after) {
  const a = before === undefined ? [] : JSON.stringify(before, null, 2).split('\n');
  const b = after === undefined ? [] : JSON.stringify(after, null, 2).split('\n');
  const sa = new Set(a);
  const sb = new Set(b);
  return h('div', { class: 'jsondiff' },
    h('pre', { class: 'before', 'aria-label': 'before' }, a.map((l) => h('span', { class: sb.has(l) ? '' : 'del' }, `${l}\n`))),
    h('pre', { class: 'after', 'aria-label': 'after' }, b.map((l) => h('span', { class: sa.has(l) ? '' : 'add' }, `${l}\n`))));
}

function diffView(d) {
  if (d.identical) return h('p', { class: 'banner ok', id: 'diff' }, `No differences between ${d.from} and ${d.to}.`);
  const kind = (k, keyOf) => {
    const x = d[k];
    const items = [
      ...x.added.map((o) => h('li', { class: 'added' }, badge('added', 'allow'), ' ', keyOf(o), jsonDiff(undefined, o))),
      ...x.removed.map((o) => h('li', { class: 'removed' }, badge('removed', 'deny'), ' ', keyOf(o), jsonDiff(o, undefined))),
      ...x.changed.map((c) => h('li', { class: 'changed' }, badge('changed', 'monitor'), ' ', c.key, jsonDiff(c.before, c.after))),
    ];
    if (k === 'rules' && x.order_changed) items.push(h('li', {}, badge('order', 'monitor'), ' the order of the rules changed'));
    return items.length ? h('section', {}, h('h3', {}, k), h('ul', { class: 'diff-list' }, items)) : null;
  };
  return h('div', { id: 'diff' },
    h('p', {}, `${d.changes} change(s) from ${d.from} to ${d.to}.`),
    kind('segments', (o) => o.name), kind('services', (o) => o.name), kind('rules', (o) => `#${o.id} ${o.name}`),
    d.settings ? h('section', {}, h('h3', {}, 'settings'), jsonDiff(d.settings.before, d.settings.after)) : null);
}

async function commitTab(body) {
  const [d, active, sub, sched] = await Promise.all([
    can('analyze') ? get('/diff', { from: 'active', to: 'draft' }) : null,
    request('GET', '/active').catch(() => null),
    get('/draft/submission'),
    get('/scheduled-commit'),
  ]);
  const pending = active && active.data && active.data.pending_confirm;
  if (!d) {
    replace(body, pending ? pendingBanner(active, body) : null, sched.scheduled ? scheduledCard(sched.scheduled, body) : null,
      h('div', { class: 'card' }, h('p', { class: 'muted' }, 'The diff, submission and commit need the author role or above.')));
    return;
  }
  const comment = input('comment', '', { placeholder: 'what and why (kept in the history)', size: 50 });
  const withConfirm = h('input', { type: 'checkbox', name: 'with_confirm', id: 'with-confirm' });
  const within = input('confirm_within_s', 120, { type: 'number', min: 1, max: 86400, 'aria-label': 'confirm within seconds' });
  const at = input('at', '', { type: 'datetime-local', 'aria-label': 'commit at (local time)' });
  const note = h('div', { class: 'form-note' });
  const form = h('form', { class: 'card', 'data-needs': 'commit', onsubmit: async (ev) => {
    ev.preventDefault();
    replace(note);
    const confirmWithin = withConfirm.checked ? Number(within.value) : null;
    if (at.value) await schedule(new Date(at.value), comment.value.trim(), confirmWithin, note, body);
    else await commit(comment.value.trim(), confirmWithin, note, body);
  } },
  h('h2', {}, 'Commit the draft'),
  sub.two_person_rule ? h('p', { class: 'muted' }, 'The two-person rule is on: the draft must be submitted for approval, then committed by another identity.') : null,
  field('Comment', comment),
  h('label', { class: 'check' }, withConfirm, ' Revert by itself unless confirmed within ', within, ' seconds'),
  field('Commit at (optional: a change window; empty commits now)', at),
  note,
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', disabled: d.identical || !draft.validation.valid }, 'Commit…')));
  replace(body,
    pending ? pendingBanner(active, body) : null,
    sched.scheduled ? scheduledCard(sched.scheduled, body) : null,
    h('div', { class: 'card' }, h('h2', {}, 'Draft against active'), diffView(d)),
    sub.two_person_rule ? submissionCard(sub, d, body) : null,
    form);
}

/** The draft's submission for approval (two-person rule): submit, withdraw or reject. */
function submissionCard(sub, d, body) {
  const s = sub.submission;
  const comment = input('submission_comment', '', { placeholder: 'what the approver should know', size: 50 });
  const act = async (method, req) => {
    try {
      await request(method, '/draft/submission', { body: req, etag: draft.etag });
      toast(method === 'POST' ? `Revision ${draft.revision} submitted for approval.` : 'Submission withdrawn.', 'ok');
      await commitTab(body);
    } catch (e) { reportError(e); }
  };
  return h('div', { class: 'card', id: 'submission' }, h('h2', {}, 'Approval'),
    s ? h('p', {}, `Revision ${s.revision} submitted by `, h('strong', {}, s.submitted_by), ` ${fmtAgo(s.submitted_at)}`,
      s.comment ? `: ${s.comment}` : '', '. Another identity may commit it; any edit withdraws it. ',
    h('button', { 'data-needs': 'submit', type: 'button', onclick: () => act('DELETE', {}) }, 'Withdraw / reject'))
      : h('form', { onsubmit: (ev) => { ev.preventDefault(); act('POST', comment.value.trim() ? { comment: comment.value.trim() } : {}); } },
        field('Comment', comment),
        h('div', { class: 'actions' }, h('button', { 'data-needs': 'submit', type: 'submit', disabled: d.identical || !draft.validation.valid }, 'Submit for approval'))));
}

function scheduledCard(s, body) {
  return h('div', { class: s.state === 'failed' ? 'banner bad' : 'banner warn', id: 'scheduled' },
    s.state === 'failed'
      ? `The commit scheduled by ${s.scheduled_by} for ${fmtTime(s.at)} failed: ${s.error}. `
      : `Revision ${s.draft_revision} is scheduled by ${s.scheduled_by} to be committed at ${fmtTime(s.at)}${s.comment ? ` (${s.comment})` : ''}. `,
    h('button', { 'data-needs': 'confirm', type: 'button', onclick: async () => {
      try {
        await request('DELETE', '/scheduled-commit');
        toast('Scheduled commit cancelled.', 'ok');
        await commitTab(body);
      } catch (e) { reportError(e); }
    } }, s.state === 'failed' ? 'Dismiss' : 'Cancel it'));
}

async function schedule(at, comment, confirmWithin, note, body) {
  const answer = await modal('Schedule the commit?', h('p', {},
    `Revision ${draft.revision} is validated now and committed at ${at.toLocaleString()}. Later edits of the draft are not part of it.`),
  [{ label: 'Cancel', value: '' }, { label: 'Schedule', value: 'schedule', class: 'primary' }]);
  if (answer !== 'schedule') return;
  try {
    const req = { at: at.toISOString() };
    if (comment) req.comment = comment;
    if (confirmWithin) req.confirm_within_s = confirmWithin;
    await request('POST', '/scheduled-commit', { body: req, etag: draft.etag });
    toast(`Commit scheduled for ${at.toLocaleString()}.`, 'ok');
    await commitTab(body);
  } catch (e) {
    if (e.code === 'stale_etag') await loadDraft();
    replace(note, h('div', { class: 'banner bad' }, `Not scheduled: ${e.message}`));
  }
}

function pendingBanner(active, body) {
  const p = active.data.pending_confirm;
  const v = active.data.meta.version;
  const act = (path, done) => async () => {
    try {
      await request('POST', path, { etag: active.etag });
      toast(done, 'ok');
      policyChanged();
      commitTab(body);
    } catch (e) { reportError(e); }
  };
  return h('div', { class: 'banner warn', id: 'pending' },
    `Version ${v} is on trial: unless confirmed before ${fmtTime(p.deadline)}, control reverts to version ${p.revert_to}. `,
    h('button', { 'data-needs': 'confirm', type: 'button', class: 'primary', onclick: act('/confirm', `Version ${v} confirmed.`) }, 'Confirm'), ' ',
    h('button', { 'data-needs': 'confirm', type: 'button', onclick: act('/revert', `Version ${v} reverted.`) }, 'Revert now'));
}

async function commit(comment, confirmWithin, note, body) {
  // What the commit would do to live connections: explain judges every tracked connection by the draft
  // (the flow asked about does not matter for that part of the answer).
  // And what it would have done to the traffic in the flow history: a separate call, so the replay never waits
  // for the dataplane.
  const [cut, past] = await Promise.all([
    request('POST', '/explain', { body: { src: '192.0.2.1', dst: '192.0.2.2', protocol: 'icmp' } })
      .then((x) => x.data.connections).catch(() => null),
    request('POST', '/what-if', { body: {} }).then((x) => x.data).catch(() => null),
  ]);
  const answer = await modal('Commit the draft?', h('div', {},
    h('p', {}, 'The draft becomes the next version and the dataplane enforces it at once.'),
    cut ? h('p', { class: cut.would_cut ? 'banner warn' : '' },
      `${cut.would_cut} of ${cut.tracked} connections tracked now would be cut${cut.on_policy_change === 'keep' ? ' (none: existing connections are kept)' : ''}.`) : null,
    past ? h('p', { id: 'what-if', class: past.newly_denied.flows ? 'banner warn' : '' },
      `Over the flow history (${past.conversations} conversations, ${past.flows} flows): ${past.newly_denied.conversations} conversation(s) `
      + `(${past.newly_denied.flows} flows) allowed then would be denied, ${past.newly_allowed.conversations} `
      + `(${past.newly_allowed.flows} flows) denied or would-denied then would be allowed.`) : null,
    unreadableWarning(past),
    confirmWithin ? h('p', {}, `Unless you confirm within ${confirmWithin} s, control reverts to the current version by itself.`) : null),
  [{ label: 'Cancel', value: '' }, { label: 'Commit', value: 'commit', class: 'primary' }]);
  if (answer !== 'commit') return;
  try {
    const req = {};
    if (comment) req.comment = comment;
    if (confirmWithin) req.confirm_within_s = confirmWithin;
    const r = await request('POST', '/commit', { body: req, etag: draft.etag });
    toast(`Committed: version ${r.data.version} enforced in ${Number(r.data.commit_ms).toFixed(0)} ms.`, 'ok');
    policyChanged();
    await loadDraft();
    await commitTab(body);
  } catch (e) {
    if (e.code === 'stale_etag') await loadDraft();
    replace(note, h('div', { class: 'banner bad' }, `Not committed: ${e.message}`,
      e.details && e.details.length ? h('ul', {}, e.details.map((x) => h('li', {}, x.path ? h('code', {}, x.path) : '', ' ', x.message))) : null));
  }
}

// ---- History ----

async function historyTab(body) {
  const v = await get('/versions');
  replace(body, h('div', { class: 'card' }, h('h2', {}, 'Versions'), table({
    columns: [
      { label: 'Version', class: 'num', cell: (x) => `v${x.version}` },
      { label: 'Kind', cell: (x) => h('span', {}, x.kind, x.source ? ` of v${x.source}` : '') },
      { label: 'Author', cell: (x) => x.author },
      { label: 'Comment', cell: (x) => x.comment || '' },
      { label: 'Created', cell: (x) => h('span', { title: x.created }, fmtAgo(x.created)) },
      { label: '', cell: (x) => (x.active ? badge('active', 'allow') : '') },
      { label: '', class: 'row-actions', cell: (x) => h('span', {},
        h('button', { type: 'button', class: 'small', onclick: () => showVersion(x.version) }, 'View'),
        x.active ? null : h('button', { 'data-needs': 'commit', type: 'button', class: 'small', onclick: () => rollback(x, body), 'aria-label': `Roll back to version ${x.version}` }, 'Roll back…')) },
    ],
    rows: v.versions,
    rowAttrs: (x) => ({ 'data-version': x.version }),
  })));
}

async function showVersion(n) {
  try {
    const [v, d] = await Promise.all([get(`/versions/${n}`), can('analyze') ? get('/diff', { from: 'active', to: String(n) }) : null]);
    await modal(`Version ${n}`, h('div', {},
      h('p', {}, `${v.kind ?? v.meta?.kind ?? ''} by ${v.author ?? v.meta?.author ?? ''}: ${v.comment ?? v.meta?.comment ?? ''}`),
      d ? h('h3', {}, 'Compared with the active version') : null, d ? diffView(d) : null));
  } catch (e) { reportError(e); }
}

async function rollback(x, body) {
  const comment = input('comment', `roll back to v${x.version}`, { size: 40, 'aria-label': 'comment' });
  const [active, d] = await Promise.all([request('GET', '/active'), get('/diff', { from: 'active', to: String(x.version) })]);
  const answer = await modal(`Roll back to version ${x.version}?`, h('div', {},
    h('p', {}, `A copy of version ${x.version} becomes the next version and is enforced at once. The draft is not changed.`),
    diffView(d), field('Comment', comment)),
  [{ label: 'Cancel', value: '' }, { label: 'Roll back', value: 'yes', class: 'danger' }]);
  if (answer !== 'yes') return;
  try {
    const r = await request('POST', '/rollback', { body: { version: x.version, comment: comment.value }, etag: active.etag });
    toast(`Rolled back: version ${r.data.version} (a copy of v${x.version}) is enforced.`, 'ok');
    policyChanged();
    historyTab(body);
  } catch (e) { reportError(e); }
}

// ---- The page ----

export function mount(main, params) {
  const tab = TABS.some(([t]) => t === params[0]) ? params[0] : 'rules';
  const query = { q: '' };
  const banner = h('div');
  const body = h('div', { class: 'tab-body' });
  const nav = h('nav', { class: 'tabs', 'aria-label': 'Policy sections' }, TABS.map(([t, label]) =>
    h('a', { href: `#/policy/${t}`, 'aria-current': t === tab ? 'page' : null }, label)));
  replace(main, h('h1', {}, 'Policy ', h('span', { class: 'muted', id: 'draft-rev' })), nav, banner, body);
  let alive = true;
  rerender = async () => {
    if (!alive) return;
    replace(banner, validationBanner());
    replace(document.getElementById('draft-rev'), draft.etag ? `draft revision ${draft.etag.replace(/\D/g, '')}` : '');
    try {
      if (tab === 'rules') rulesTab(body, query);
      else if (tab === 'segments') segmentsTab(body, query);
      else if (tab === 'services') servicesTab(body, query);
      else if (tab === 'settings') settingsTab(body);
      else if (tab === 'commit') await commitTab(body);
      else await historyTab(body);
    } catch (e) { reportError(e); }
  };
  loadDraft().then(() => {
    rerender();
    // #/policy/rules/<id> opens that rule's editor (links from the map and rules health).
    if (tab === 'rules' && params[1]) {
      const r = allRules().find((x) => String(x.id) === params[1]);
      if (r) ruleEditor(r);
    }
  }, reportError);
  return () => { alive = false; };
}
