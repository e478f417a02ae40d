// Rules health: per rule, hits and the last hit (GET /rules/health); stale rules (no hit in the chosen
// window) and rules that can never decide anything because earlier rules shadow them. Beside the dataplane's
// counters (since it started), the flows each rule decided over the same window in the flow history
// (GET /history/rules), which reaches back weeks and survives restarts.

import { get } from '../api.js';
import { h, replace, every, table, named, badge, fmtInt, fmtBytes, fmtAgo } from '../dom.js';
import { unreadableWarning } from './discovery.js';

const state = { policy: 'active', stale_after_s: '86400', only: 'all' };

function status(r, past) {
  const out = [];
  if (past && past.stale) out.push(badge('unused in history', 'monitor'));
  if (r.shadowed) {
    out.push(r.shadowed.reason === 'matches_nothing'
      ? badge('matches nothing', 'deny')
      : badge(`shadowed by ${r.shadowed.by.map((id) => `#${id}`).join(', ')}`, 'deny'));
  }
  if (r.stale) out.push(badge('stale', 'monitor'));
  if (!out.length) out.push(badge('in use', 'allow'));
  return h('span', { class: 'badges' }, out);
}

export function mount(main) {
  const sel = (name, options) => h('select', { name, onchange: (ev) => { state[name] = ev.target.value; stop(); stop = every(10000, refresh); } },
    options.map(([v, l]) => h('option', { value: v, selected: v === state[name] }, l)));
  const summary = h('div', { id: 'health-summary' });
  const list = h('div', { class: 'card' });
  replace(main, h('h1', {}, 'Rules health'),
    h('div', { class: 'toolbar' },
      h('label', {}, 'Policy ', sel('policy', [['active', 'active'], ['draft', 'draft']])),
      h('label', {}, 'Stale after ', sel('stale_after_s', [['3600', '1 hour'], ['86400', '1 day'], ['604800', '7 days'], ['2592000', '30 days']])),
      h('label', {}, 'Show ', sel('only', [['all', 'all rules'], ['stale', 'stale only'], ['shadowed', 'shadowed only']]))),
    summary, list);

  async function refresh() {
    const [x, hist] = await Promise.all([
      get('/rules/health', { policy: state.policy, stale_after_s: state.stale_after_s }),
      // Absent when the history is disabled (404): the live counters alone then.
      get('/history/rules', { policy: state.policy, window_s: state.stale_after_s }).catch(() => null),
    ]);
    const past = new Map(((hist && hist.rules) || []).map((r) => [r.id, r]));
    const rules = x.rules || [];
    const stale = rules.filter((r) => r.stale).length;
    const shadowed = rules.filter((r) => r.shadowed).length;
    replace(summary, h('div', { class: 'tiles' },
      h('div', { class: 'tile' }, h('div', { class: 'tile-label' }, 'Rules'), h('div', { class: 'tile-value' }, fmtInt(rules.length)),
        h('div', { class: 'tile-sub' }, `${x.policy}${x.version ? ` v${x.version}` : ''}`)),
      h('div', { class: 'tile' }, h('div', { class: 'tile-label' }, 'Stale'), h('div', { class: 'tile-value', id: 'stale-count' }, fmtInt(stale)),
        h('div', { class: 'tile-sub' }, 'no hit in the window')),
      h('div', { class: 'tile' }, h('div', { class: 'tile-label' }, 'Shadowed'), h('div', { class: 'tile-value', id: 'shadowed-count' }, fmtInt(shadowed)),
        h('div', { class: 'tile-sub' }, 'can never be the first match')),
      h('div', { class: 'tile' }, h('div', { class: 'tile-label' }, 'Default action'), h('div', { class: 'tile-value' }, x.default ? fmtInt(x.default.packets) : '–'),
        h('div', { class: 'tile-sub' }, x.default ? `packets (${x.default.action}), last ${fmtAgo(x.default.last_hit)}` : 'no counters'))),
    x.read_at ? null : h('div', { class: 'banner warn' }, 'No counters from the dataplane yet: hits are unknown; shadowing is still shown.'),
    unreadableWarning(hist));
    const shown = rules.filter((r) => state.only === 'all' || (state.only === 'stale' ? r.stale : r.shadowed));
    replace(list, table({
      columns: [
        { label: '#', class: 'num', cell: (r) => r.position, sort: (r) => r.position },
        { label: 'Id', class: 'num', cell: (r) => h('a', { href: `#/policy/rules/${r.id}` }, `#${r.id}`) },
        { label: 'Name', cell: (r) => named(r) },
        { label: 'Action', cell: (r) => h('span', {}, badge(r.action), r.mode === 'monitor' ? badge('monitor') : null) },
        { label: 'Packets', class: 'num', cell: (r) => fmtInt(r.packets), sort: (r) => r.packets ?? -1 },
        { label: 'Flows', class: 'num', cell: (r) => fmtInt(r.flows), sort: (r) => r.flows ?? -1 },
        { label: 'Bytes', class: 'num', cell: (r) => fmtBytes(r.bytes), sort: (r) => r.bytes ?? -1 },
        { label: 'Last hit', cell: (r) => h('span', { title: r.last_hit || 'never' }, fmtAgo(r.last_hit)), sort: (r) => r.last_hit || '' },
        ...(hist ? [
          { label: 'Flows (history)', class: 'num', cell: (r) => fmtInt(past.get(r.id)?.flows), sort: (r) => past.get(r.id)?.flows ?? -1 },
          { label: 'Last hit (history)', cell: (r) => h('span', { title: past.get(r.id)?.last_hit || 'never' }, fmtAgo(past.get(r.id)?.last_hit)) },
        ] : []),
        { label: 'Status', cell: (r) => status(r, past.get(r.id)) },
      ],
      rows: shown,
      rowAttrs: (r) => ({ 'data-rule': r.id }),
      empty: 'No rule in this view.',
    }));
  }
  let stop = every(10000, refresh);
  return () => stop();
}
