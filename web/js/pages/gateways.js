// Gateways: every managed gateway (GET /gateways) with its reachability, the version it runs, whether that is
// the active one, when it last answered and its last error. Also the gateway selector the Connections and
// Explain pages use.

import { get } from '../api.js';
import { h, replace, every, table, badge, fmtInt, fmtAgo } from '../dom.js';

// A `<select name="gateway">`: "every gateway" (the empty value) and the configured gateways by name.
export function gatewaySelect(current, onchange) {
  const select = h('select', { name: 'gateway', 'aria-label': 'Gateway', onchange },
    h('option', { value: '' }, 'every gateway'));
  get('/gateways').then((x) => {
    for (const g of x.gateways) select.append(h('option', { value: g.name, selected: g.name === current }, g.name));
  }).catch(() => {});
  return select;
}

export function mount(main) {
  const list = h('div', { class: 'card', id: 'gateways' });
  replace(main, h('h1', {}, 'Gateways'),
    h('p', { class: 'muted' }, 'Commits are prepared on every gateway, then published on all. A gateway that missed a version keeps enforcing its own until reconciliation brings it to the active one.'),
    list);

  async function refresh() {
    const x = await get('/gateways');
    const synced = x.gateways.filter((g) => g.in_sync).length;
    replace(list,
      h('p', { id: 'gateways-summary' }, `${synced} of ${x.gateways.length} gateway(s) run the active version v${x.active_version ?? '–'}.`),
      table({
        columns: [
          { label: 'Gateway', cell: (g) => h('strong', {}, g.name), sort: (g) => g.name },
          { label: 'Address', cell: (g) => h('span', {}, g.address, ' ', badge(g.transport === 'tls' ? 'mutual TLS' : 'local socket', 'monitor')) },
          { label: 'Reachable', cell: (g) => badge(g.reachable ? 'up' : 'unreachable', g.reachable ? 'allow' : 'deny') },
          { label: 'Version', cell: (g) => (g.policy_version == null ? '–' : `v${g.policy_version}`), sort: (g) => g.policy_version ?? -1 },
          { label: 'In sync', cell: (g) => badge(g.in_sync ? 'in sync' : g.reconcile_refused ? 'newer than active' : 'out of sync', g.in_sync ? 'allow' : 'deny') },
          { label: 'Flows', class: 'num', cell: (g) => (g.flows_active == null ? '–' : fmtInt(g.flows_active)) },
          { label: 'Last contact', cell: (g) => (g.last_contact ? fmtAgo(g.last_contact) : 'never') },
          { label: 'Last error', cell: (g) => g.last_error || '' },
        ],
        rows: x.gateways,
        rowAttrs: (g) => ({ 'data-gateway': g.name }),
        empty: 'No gateway is configured.',
      }));
  }

  return every(5000, refresh);
}
