// Discovery: what talked to what over the flow history (up to its whole retention), drilled down from segment
// pairs to host pairs, services and conversations; the hosts outside every segment, offered as candidate segments;
// and rules suggested from what was seen — reviewed with their provenance and coverage, then added to the draft
// (never committed from here).

import { get, request } from '../api.js';
import {
  h, replace, table, badge, toast, modal, reportError, field, fmtInt, fmtBytes, fmtAgo, protoName,
} from '../dom.js';
import { gatewaySelect } from './gateways.js';

/**
 * A warning when a history answer (the map, conversations, unsegmented hosts, rules, suggestion, what-if) skipped
 * stored rows it could not read (`unreadable_rows`): a damaged store must not pass for a quiet network. Else nothing.
 */
export function unreadableWarning(answer) {
  const n = (answer && answer.unreadable_rows) || 0;
  if (!n) return null;
  const one = n === 1;
  return h('div', { class: 'banner warn', 'data-unreadable': n },
    `${fmtInt(n)} stored ${one ? 'row' : 'rows'} could not be read and ${one ? 'was' : 'were'} left out — the history store may be damaged.`);
}

const WINDOWS = [
  ['3600', 'last hour'], ['86400', 'last day'], ['604800', 'last 7 days'], ['2592000', 'last 30 days'], ['', 'whole history'],
];

export function mount(main) {
  const state = { window_s: '604800', gateway: '' };
  const windowSelect = h('select', {
    name: 'window', 'aria-label': 'window',
    onchange: () => { state.window_s = windowSelect.value; refresh().catch(reportError); },
  }, WINDOWS.map(([v, label]) => h('option', { value: v, selected: v === state.window_s }, label)));
  const gatewayPick = gatewaySelect(state.gateway, () => {
    state.gateway = gatewayPick.value;
    refresh().catch(reportError);
  });
  const pairs = h('div', { class: 'card', id: 'pairs' });
  const drill = h('div', { id: 'drill' });
  const unsegmented = h('div', { class: 'card', id: 'unsegmented' });
  const suggest = h('div', { class: 'card', id: 'suggest' });
  replace(main, h('h1', {}, 'Discovery'),
    h('div', { class: 'toolbar' }, h('label', {}, 'Window ', windowSelect), h('label', {}, 'Gateway ', gatewayPick)),
    pairs, drill, unsegmented, suggest);

  const query = (extra = {}) => ({ ...(state.window_s ? { window_s: state.window_s } : {}), ...extra });
  /** The map and the conversations also take the gateway (empty: every gateway). */
  const traffic = (extra = {}) => query({ ...(state.gateway ? { gateway: state.gateway } : {}), ...extra });

  /** The suggestion and what-if take a window as {from, to}; the history routes take window_s. */
  const windowBody = () => (state.window_s
    ? { from: new Date(Date.now() - Number(state.window_s) * 1000).toISOString() }
    : {});

  const counts = [
    { label: 'Allowed', class: 'num', cell: (e) => fmtInt(e.allowed), sort: (e) => e.allowed },
    { label: 'Would deny', class: 'num', cell: (e) => fmtInt(e.would_deny), sort: (e) => e.would_deny },
    { label: 'Denied', class: 'num', cell: (e) => fmtInt(e.denied), sort: (e) => e.denied },
    { label: 'Bytes', class: 'num', cell: (e) => fmtBytes(e.bytes), sort: (e) => e.bytes },
    { label: 'Last seen', cell: (e) => h('span', { title: e.last_seen }, fmtAgo(e.last_seen)), sort: (e) => e.last_seen },
  ];
  const services = (e) => (e.services || []).map((s) => `${protoName(s.proto)}/${s.port}`).join(', ');

  async function showPairs() {
    const m = await get('/history/map', traffic());
    replace(pairs, h('h2', {}, 'Segment pairs'), h('p', { class: 'muted' }, `From ${m.from} to ${m.to}.`), unreadableWarning(m), table({
      columns: [
        { label: 'From', cell: (e) => e.from, sort: (e) => e.from },
        { label: 'To', cell: (e) => e.to, sort: (e) => e.to },
        ...counts,
        { label: 'Services', cell: services },
        { label: '', class: 'row-actions', cell: (e) => h('button', {
          type: 'button', class: 'small', onclick: () => showHosts(e.from, e.to).catch(reportError),
          'aria-label': `Hosts from ${e.from} to ${e.to}`,
        }, 'Hosts') },
      ],
      rows: m.edges,
      rowAttrs: (e) => ({ 'data-pair': `${e.from}>${e.to}` }),
      empty: 'No traffic in this window.',
    }));
  }

  async function showHosts(from, to) {
    const m = await get('/history/map', traffic({ src_segment: from, dst_segment: to }));
    replace(drill, h('div', { class: 'card', id: 'hosts' }, h('h2', {}, `Hosts: ${from} → ${to}`), unreadableWarning(m), table({
      columns: [
        { label: 'Source', cell: (e) => e.src, sort: (e) => e.src },
        { label: 'Destination', cell: (e) => e.dst, sort: (e) => e.dst },
        ...counts,
        { label: 'Services', cell: services },
        { label: '', class: 'row-actions', cell: (e) => h('button', {
          type: 'button', class: 'small', onclick: () => showServices(from, to, e.src, e.dst).catch(reportError),
          'aria-label': `Services from ${e.src} to ${e.dst}`,
        }, 'Services') },
      ],
      rows: m.edges,
      empty: 'No host pair in this window.',
    })));
  }

  async function showServices(from, to, src, dst) {
    const m = await get('/history/map', traffic({ src_segment: from, dst_segment: to, src, dst }));
    const conv = h('div');
    replace(drill, h('div', { class: 'card', id: 'services' }, h('h2', {}, `Services: ${src} → ${dst}`), unreadableWarning(m), table({
      columns: [
        { label: 'Service', cell: (e) => `${protoName(e.proto)}/${e.port}`, sort: (e) => e.port },
        ...counts,
        { label: 'Deciding rules', cell: (e) => (e.rules || []).map((r) => `${r.tier ? `${r.tier}: ` : ''}${r.name ?? `#${r.id}`} (${fmtInt(r.flows)})`).join(', ') },
        { label: '', class: 'row-actions', cell: (e) => h('button', {
          type: 'button', class: 'small', onclick: () => showConversations(conv, src, dst, e.proto, e.port).catch(reportError),
        }, 'Conversations') },
      ],
      rows: m.edges,
      empty: 'No service in this window.',
    }), conv));
  }

  async function showConversations(into, src, dst, proto, port) {
    const c = await get('/history/conversations', traffic({ src, dst, proto, port, group: 'window', limit: 100 }));
    replace(into, h('h3', {}, `Conversations (${fmtInt(c.matched)})`), unreadableWarning(c), table({
      columns: [
        { label: 'Verdict', cell: (x) => badge(x.key.verdict) },
        { label: 'Rule', class: 'num', cell: (x) => (x.key.rule_id ? `#${x.key.rule_id}` : 'default') },
        { label: 'Tier', cell: (x) => x.key.tier ?? '–' },
        { label: 'Gateway', cell: (x) => x.key.gateway ?? '–' },
        { label: 'Policy', class: 'num', cell: (x) => `v${x.key.policy_version}` },
        { label: 'Flows', class: 'num', cell: (x) => fmtInt(x.flows), sort: (x) => x.flows },
        { label: 'Bytes', class: 'num', cell: (x) => fmtBytes(x.bytes[0] + x.bytes[1]) },
        { label: 'First seen', cell: (x) => x.first_seen },
        { label: 'Last seen', cell: (x) => x.last_seen },
      ],
      rows: c.conversations,
    }));
  }

  async function showUnsegmented() {
    const u = await get('/history/unsegmented', query());
    replace(unsegmented, h('h2', {}, 'Hosts outside every segment'), unreadableWarning(u), table({
      columns: [
        { label: 'Subnet', cell: (c) => c.subnet, sort: (c) => c.subnet },
        { label: 'Hosts', class: 'num', cell: (c) => fmtInt(c.hosts.length), sort: (c) => c.hosts.length },
        { label: 'Flows', class: 'num', cell: (c) => fmtInt(c.flows), sort: (c) => c.flows },
        { label: 'Talks to', cell: (c) => c.talks_to.map((t) => `${t.segment} (${fmtInt(t.flows)})`).join(', ') },
        { label: 'Candidate', cell: (c) => c.name },
        { label: '', class: 'row-actions', cell: (c) => h('button', {
          type: 'button', class: 'small', 'data-needs': 'edit', onclick: () => addSegment(c),
          'aria-label': `Add ${c.subnet} as a segment`,
        }, 'Add as segment…') },
      ],
      rows: u.candidates,
      rowAttrs: (c) => ({ 'data-subnet': c.subnet }),
      empty: 'Every address seen is in a segment.',
    }));
  }

  async function addSegment(c) {
    const name = h('input', { name: 'segment_name', value: c.name, size: 40 });
    const whole = h('input', { type: 'checkbox', name: 'whole_subnet', checked: true });
    const answer = await modal(`Add ${c.subnet} as a segment?`, h('div', {},
      field('Name', name),
      h('label', { class: 'check' }, whole, ` The whole subnet ${c.prefixes.join(', ')} (else only the ${c.hosts.length} host(s) seen)`)),
    [{ label: 'Cancel', value: '' }, { label: 'Add to draft', value: 'add', class: 'primary' }]);
    if (answer !== 'add') return;
    const hostPrefix = (a) => (a.includes(':') ? `${a}/128` : `${a}/32`);
    const prefixes = whole.checked ? c.prefixes : c.hosts.map((x) => hostPrefix(x.addr));
    try {
      const d = await request('GET', '/draft');
      await request('POST', '/draft/segments', { body: { name: name.value.trim(), prefixes }, etag: d.etag });
      toast(`Segment ${name.value.trim()} added to the draft.`, 'ok');
      await refresh();
    } catch (e) { reportError(e); }
  }

  function showSuggestForm() {
    const grouping = h('select', { name: 'grouping', 'aria-label': 'grouping' },
      [['hosts', 'host to host (exactly what was seen)'], ['segments', 'segment to segment where hosts behave alike'],
        ['labels', 'label to label where hosts behave alike']].map(([v, l]) => h('option', { value: v }, l)));
    const denied = h('input', { type: 'checkbox', name: 'include_denied' });
    const result = h('div', { id: 'proposal' });
    replace(suggest, h('h2', {}, 'Suggest rules from what was seen'),
      h('form', { class: 'toolbar', onsubmit: (ev) => { ev.preventDefault(); propose(grouping.value, denied.checked, result).catch(reportError); } },
        h('label', {}, 'Grouping ', grouping),
        h('label', { class: 'check' }, denied, ' also cover denied conversations'),
        h('button', { type: 'submit', class: 'primary', 'data-needs': 'analyze' }, 'Suggest')),
      result);
  }

  async function propose(grouping, includeDenied, into) {
    const p = (await request('POST', '/suggest', { body: { window: windowBody(), grouping, include_denied: includeDenied } })).data;
    const share = (c) => `${(c.conversation_share * 100).toFixed(1)} % of conversations, ${(c.flow_share * 100).toFixed(1)} % of flows`;
    const picked = new Set(p.rules.map((r) => r.rule.id));
    const pick = (r) => h('input', {
      type: 'checkbox', checked: true, 'aria-label': `keep rule ${r.rule.id}`,
      onchange: (ev) => { if (ev.target.checked) picked.add(r.rule.id); else picked.delete(r.rule.id); },
    });
    const sel = (s) => (s.segment ? s.segment : s.labels ? JSON.stringify(s.labels) : s.prefixes ? s.prefixes.join(', ') : JSON.stringify(s));
    replace(into,
      unreadableWarning(p),
      h('p', { id: 'coverage' }, `The draft allows ${share(p.coverage_before)} seen; with these ${p.rules.length} rule(s): ${share(p.coverage_after)}.`,
        p.left_to_draft_rules ? ` ${fmtInt(p.left_to_draft_rules)} conversation(s) denied by a draft rule are left alone.` : ''),
      table({
        columns: [
          { label: '', cell: pick },
          { label: 'Rule', cell: (r) => h('span', {}, h('strong', {}, `#${r.rule.id} ${r.rule.name}`), h('div', { class: 'muted small' }, r.rule.description || '')) },
          { label: 'From', cell: (r) => sel(r.rule.from) },
          { label: 'To', cell: (r) => sel(r.rule.to) },
          { label: 'Service', cell: (r) => r.rule.service },
          { label: 'Conversations', class: 'num', cell: (r) => fmtInt(r.conversations), sort: (r) => r.conversations },
          { label: 'Flows', class: 'num', cell: (r) => fmtInt(r.flows), sort: (r) => r.flows },
          { label: 'Seen', cell: (r) => `${r.rule.provenance.first_seen} … ${r.rule.provenance.last_seen}` },
        ],
        rows: p.rules,
        rowAttrs: (r) => ({ 'data-rule': r.rule.id }),
        empty: 'Nothing to suggest: the draft already decides every conversation seen.',
      }),
      p.rules.length ? h('div', { class: 'actions' }, h('button', {
        type: 'button', class: 'primary', 'data-needs': 'edit',
        onclick: () => apply(p, [...picked]).catch(reportError),
      }, 'Add selected to draft')) : null);
  }

  async function apply(proposal, ruleIds) {
    if (!ruleIds.length) { toast('No rule selected.', 'info'); return; }
    const d = await request('GET', '/draft');
    const r = await request('POST', '/suggest/apply', { body: { proposal, rule_ids: ruleIds }, etag: d.etag });
    const added = r.data.object || {};
    toast(`Added to the draft: ${fmtInt((added.rules_added || []).length)} rule(s), ${fmtInt((added.services_added || []).length)} service(s). Review and commit on the Policy page.`, 'ok');
  }

  async function refresh() {
    replace(drill);
    await Promise.all([showPairs(), showUnsegmented()]);
  }

  showSuggestForm();
  refresh().catch(reportError);
}
