// Explain: type a flow, see the verdict under the draft and the active policy, the rule that decides it,
// and which tracked connections a commit of the draft would cut (POST /explain).

import { request } from '../api.js';
import { h, replace, field, showFieldErrors, table, badge, endpoint, protoName, fmtBytes, fmtDuration } from '../dom.js';
import { gatewaySelect } from './gateways.js';

const last = { src: '', dst: '', protocol: 'tcp', port: '', source_port: '', icmp_type: '', icmp_code: '', vlan: '', gateway: '' };

function verdictCard(title, v) {
  const m = v.matched || {};
  return h('div', { class: 'card verdict', 'data-side': title.toLowerCase() },
    h('h2', {}, title),
    h('div', { class: 'verdict-line' }, badge(v.verdict, v.would_deny ? 'monitor' : v.passes ? 'allow' : 'deny')),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Decided by'),
      h('dd', {}, m.type === 'rule'
        ? h('span', {}, h('a', { href: `#/policy/rules/${m.id}` }, `rule #${m.id} ${m.name}`), ` (position ${m.position}, ${m.action}${m.mode === 'monitor' ? ', monitor' : ''})`)
        : `the default action (${m.action}${m.monitored ? ', monitored' : ''})`),
      h('dt', {}, 'Source segments'), h('dd', {}, (v.src_segments || []).join(', ') || 'none (unsegmented)'),
      h('dt', {}, 'Destination segments'), h('dd', {}, (v.dst_segments || []).join(', ') || 'none (unsegmented)')));
}

export function mount(main) {
  const inp = (name, attrs = {}) => h('input', { name, value: last[name], ...attrs });
  const proto = h('select', { name: 'protocol' }, ['tcp', 'udp', 'icmp', 'icmpv6'].map((p) => h('option', { value: p, selected: p === last.protocol }, p)));
  const result = h('div', { id: 'explain-result', 'aria-live': 'polite' });
  const note = h('div', { class: 'form-note' });
  const form = h('form', { class: 'card editor', novalidate: true, onsubmit: async (ev) => {
    ev.preventDefault();
    replace(note);
    const el = form.elements;
    for (const k of Object.keys(last)) last[k] = el[k].value.trim();
    const body = { src: last.src, dst: last.dst, protocol: last.protocol };
    for (const k of ['port', 'source_port', 'icmp_type', 'icmp_code', 'vlan']) if (last[k] !== '') body[k] = /^\d+$/.test(last[k]) ? Number(last[k]) : last[k];
    if (last.gateway !== '') body.gateway = last.gateway;
    showFieldErrors(form, []);
    try {
      const r = await request('POST', '/explain', { body });
      show(r.data);
    } catch (e) {
      const rest = showFieldErrors(form, e.details || []);
      replace(note, h('div', { class: 'banner bad' }, e.message, rest.length ? h('ul', {}, rest.map((d) => h('li', {}, d.path ? `${d.path}: ` : '', d.message))) : null));
    }
  } },
  h('div', { class: 'row wrap' },
    field('Source address', inp('src', { placeholder: '10.99.0.11', required: true })),
    field('Destination address', inp('dst', { placeholder: '10.99.0.2', required: true })),
    field('Protocol', proto),
    field('Destination port', inp('port', { type: 'number', min: 0, max: 65535 })),
    field('Source port', inp('source_port', { type: 'number', min: 0, max: 65535 })),
    field('ICMP type', inp('icmp_type', { type: 'number', min: 0, max: 255 })),
    field('ICMP code', inp('icmp_code', { type: 'number', min: 0, max: 255 })),
    field('VLAN', inp('vlan', { type: 'number', min: 0, max: 4095 })),
    field('Connections of', gatewaySelect(last.gateway))),
  note,
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Explain')));

  function show(x) {
    const c = x.connections || {};
    replace(result,
      h('div', { class: 'cols' }, verdictCard('Draft', x.draft), verdictCard('Active', x.active)),
      h('div', { class: 'card' },
        h('h2', {}, 'If the draft were committed now'),
        h('p', { id: 'would-cut' }, c.on_policy_change === 'keep'
          ? `Existing connections are kept (on_policy_change: keep): none of the ${c.tracked} tracked connections would be cut.`
          : `${c.would_cut} of the ${c.tracked} tracked connections would be cut${c.scan_truncated ? ' (the scan stopped early: there may be more)' : ''}.`),
        table({
          columns: [
            { label: 'Gateway', cell: (f) => f.gateway || '' },
            { label: 'Connection', cell: (f) => `${endpoint(f.src, f.sport, f.proto)} → ${endpoint(f.dst, f.dport, f.proto)} ${protoName(f.proto)}` },
            { label: 'State', cell: (f) => f.state },
            { label: 'Admitted by', cell: (f) => (f.rule_id ? `rule #${f.rule_id}` : 'default') },
            { label: 'Draft says', cell: (f) => badge(f.draft.verdict, f.draft.passes ? 'allow' : 'deny') },
            { label: 'Traffic', class: 'num', cell: (f) => fmtBytes((f.bytes_orig || 0) + (f.bytes_reply || 0)) },
            { label: 'Age', class: 'num', cell: (f) => fmtDuration(f.age_ms) },
          ],
          rows: c.cut || [],
          empty: 'None.',
        })));
  }

  replace(main, h('h1', {}, 'Explain'),
    h('p', { class: 'muted' }, 'How would the draft and the active policy judge a flow? Nothing is changed by asking.'),
    form, result);
  form.querySelector('input').focus();
  return null;
}
