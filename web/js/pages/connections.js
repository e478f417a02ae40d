// Connections: the gateways' live connection tables (GET /flows, every gateway, one, or an HA pair's members) with
// filters, and kill (POST /flows/kill) for one connection (on its gateway, or on both members of its pair) or every
// connection matching the filter.

import { get, request } from '../api.js';
import { h, replace, every, table, badge, toast, modal, reportError, endpoint, protoName, fmtBytes, fmtDuration, fmtInt } from '../dom.js';
import { gatewaySelect } from './gateways.js';

const filter = { gateway: '', addr: '', src: '', dst: '', port: '', proto: '', rule_id: '', limit: '200' };

export function mount(main) {
  const inp = (name, attrs = {}) => h('label', {}, `${attrs.label} `, h('input', {
    name, value: filter[name], size: attrs.size || 14, placeholder: attrs.placeholder || '', 'aria-label': attrs.label,
  }));
  const note = h('div', { class: 'form-note' });
  const form = h('form', { class: 'toolbar', onsubmit: (ev) => { ev.preventDefault(); read(); refresh().catch(reportError); } },
    h('label', {}, 'Gateway ', gatewaySelect(filter.gateway, () => { read(); refresh().catch(reportError); })),
    inp('addr', { label: 'Address', placeholder: 'either end' }), inp('src', { label: 'Source' }), inp('dst', { label: 'Destination' }),
    inp('port', { label: 'Port', size: 6 }), inp('proto', { label: 'Protocol', size: 7, placeholder: 'tcp' }),
    inp('rule_id', { label: 'Rule', size: 6 }),
    h('button', { type: 'submit', class: 'primary' }, 'Filter'),
    h('button', { type: 'button', class: 'danger', 'data-needs': 'kill', onclick: () => killMatching() }, 'Kill matching…'));
  const auto = h('input', { type: 'checkbox', checked: true, id: 'auto-refresh' });
  const list = h('div', { class: 'card' });
  replace(main, h('h1', {}, 'Connections'), form, note,
    h('label', { class: 'check' }, auto, ' Refresh every 3 s'), list);

  function read() {
    for (const k of Object.keys(filter)) if (form.elements[k]) filter[k] = form.elements[k].value.trim();
  }

  function killBody(base) {
    const body = { ...base };
    for (const k of ['port', 'proto', 'rule_id']) if (body[k] !== undefined && /^\d+$/.test(String(body[k]))) body[k] = Number(body[k]);
    return body;
  }

  async function kill(body, what) {
    const answer = await modal('Kill connections?', h('p', {},
      `${what}. Their state is removed at once; the next packet of each is judged as a new flow by the active policy.`),
    [{ label: 'Cancel', value: '' }, { label: 'Kill', value: 'kill', class: 'danger' }]);
    if (answer !== 'kill') return;
    try {
      const r = await request('POST', '/flows/kill', { body });
      toast(`${r.data.killed} connection(s) killed.`, 'ok');
      await refresh();
    } catch (e) { reportError(e); }
  }

  function killMatching() {
    read();
    const base = {};
    for (const k of ['gateway', 'addr', 'src', 'dst', 'port', 'proto', 'rule_id']) if (filter[k] !== '') base[k] = filter[k];
    if (!Object.keys(base).filter((k) => k !== 'gateway').length) {
      replace(note, h('div', { class: 'banner warn' }, 'Set a filter first: killing every connection is not offered here (the API takes "all": true for that).'));
      return;
    }
    replace(note);
    kill(killBody(base), 'Every connection matching the filter is killed');
  }

  async function refresh() {
    const q = {};
    for (const [k, v] of Object.entries(filter)) if (v !== '') q[k] = v;
    try {
      const x = await get('/flows', q);
      replace(note);
      render(x);
    } catch (e) {
      replace(note, h('div', { class: 'banner bad' }, e.message));
      throw e;
    }
  }

  function render(x) {
    replace(list, h('p', { class: 'muted' }, `${fmtInt(x.flows.length)} connection(s)${x.truncated ? ` (only the first ${filter.limit} shown)` : ''}.`),
      table({
        columns: [
          { label: 'Gateway', cell: (f) => f.gateway || '', sort: (f) => f.gateway },
          { label: 'Protocol', cell: (f) => protoName(f.proto), sort: (f) => f.proto },
          { label: 'Source', cell: (f) => endpoint(f.src, f.sport, f.proto), sort: (f) => f.src },
          { label: 'Destination', cell: (f) => endpoint(f.dst, f.dport, f.proto), sort: (f) => f.dst },
          { label: 'State', cell: (f) => h('span', {}, f.state, f.monitored ? badge('monitor') : null) },
          { label: 'Rule', cell: (f) => (f.rule_id ? h('a', { href: `#/policy/rules/${f.rule_id}` }, `#${f.rule_id}`) : 'default'), sort: (f) => f.rule_id },
          { label: 'Policy', cell: (f) => `v${f.policy_version}` },
          { label: 'Packets', class: 'num', cell: (f) => `${fmtInt(f.packets_orig)} / ${fmtInt(f.packets_reply)}`, sort: (f) => f.packets_orig + f.packets_reply },
          { label: 'Bytes', class: 'num', cell: (f) => `${fmtBytes(f.bytes_orig)} / ${fmtBytes(f.bytes_reply)}`, sort: (f) => f.bytes_orig + f.bytes_reply },
          { label: 'Age', class: 'num', cell: (f) => fmtDuration(f.age_ms), sort: (f) => f.age_ms },
          { label: 'Idle', class: 'num', cell: (f) => fmtDuration(f.idle_ms), sort: (f) => f.idle_ms },
          { label: '', class: 'row-actions', cell: (f) => h('button', {
            type: 'button', class: 'small danger', 'data-needs': 'kill', 'aria-label': `Kill ${f.src} to ${f.dst}`,
            // A pair member's connection is killed on both members: the standby's synced copy would come back on failover.
            onclick: () => kill(killBody({ gateway: f.pair || f.gateway, src: f.src, dst: f.dst, port: f.dport, proto: f.proto }),
              `The connection ${endpoint(f.src, f.sport, f.proto)} → ${endpoint(f.dst, f.dport, f.proto)} on ${f.pair ? `pair ${f.pair}` : `gateway ${f.gateway}`} (and any other between these hosts on that port there) is killed`),
          }, 'Kill') },
        ],
        rows: x.flows,
        rowAttrs: (f) => ({ 'data-flow': `${f.src}>${f.dst}:${f.dport}/${f.proto}` }),
        empty: 'No tracked connection matches.',
      }));
  }

  const stop = every(3000, async () => { if (auto.checked) await refresh(); });
  return stop;
}
