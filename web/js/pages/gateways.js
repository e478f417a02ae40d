// Gateways: every managed gateway (GET /gateways) with its reachability, the version it runs, whether that is
// the active one, when it last answered and its last error; HA pairs grouped, each member's role and sync as it
// reports it (keepalived sets the roles, never the console), and a Resync button on a pair's active member.
// Also the gateway selector the Connections and Explain pages use.

import { get, request } from '../api.js';
import { h, replace, every, table, badge, fmtInt, fmtAgo, toast, reportError } from '../dom.js';

const SYNC_KIND = { in_sync: 'allow', lagging: 'monitor', resyncing: 'monitor', disconnected: 'deny' };

// A member's role and sync, in a few words.
function haCell(g) {
  if (g.role == null) return '–';
  if (g.role === 'standalone') return badge('standalone', 'monitor');
  const sync = g.ha && g.ha.sync;
  // The split-brain guard may hold a member in the other role than the one keepalived told it.
  const held = g.ha && g.ha.held;
  return h('span', {}, badge(g.role, g.role === 'active' ? 'allow' : 'monitor'), ' ',
    held ? [badge(`told ${g.ha.desired}, held: ${held.replace('_', ' ')}`, 'deny'), ' '] : '',
    sync ? badge(sync.state.replace('_', ' '), SYNC_KIND[sync.state] || 'monitor') : '',
    sync && sync.sending ? ` lag ${fmtInt(sync.lag)} · sent ${fmtInt(sync.sent)} · acked ${fmtInt(sync.acked)} · resent ${fmtInt(sync.resent)} · lost ${fmtInt(sync.lost)}` : '');
}

async function resync(name) {
  try {
    await request('POST', `/gateways/${encodeURIComponent(name)}/resync`);
    toast(`Bulk resync asked of ${name}.`, 'ok');
  } catch (e) {
    reportError(e);
  }
}

// A `<select name="gateway">`: "every gateway" (the empty value), the configured gateways by name, then the HA
// pairs (a pair's name selects both members: their traffic, connections and counters together).
export function gatewaySelect(current, onchange) {
  const select = h('select', { name: 'gateway', 'aria-label': 'Gateway', onchange },
    h('option', { value: '' }, 'every gateway'));
  get('/gateways').then((x) => {
    for (const g of x.gateways) select.append(h('option', { value: g.name, selected: g.name === current }, g.name));
    for (const p of x.pairs || []) {
      select.append(h('option', { value: p.name, selected: p.name === current, 'data-pair': '' },
        `pair ${p.name} (${p.members.join(' + ')})`));
    }
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
    // A pair's members side by side, in the order of the pair's first member.
    const order = (g) => x.gateways.findIndex((o) => (g.pair ? o.pair === g.pair : o.name === g.name));
    const rows = [...x.gateways].sort((a, b) => order(a) - order(b));
    const pairs = (x.pairs || []).map((p) => h('li', { 'data-pair': p.name }, h('strong', {}, p.name), ': ',
      p.active ? `${p.active} active` : 'no active member', ', ',
      badge(p.sync_complete ? 'sync complete' : 'sync incomplete', p.sync_complete ? 'allow' : 'deny'), ', flows ',
      p.members.map((m) => `${m} ${p.flows_active[m] == null ? '–' : fmtInt(p.flows_active[m])}`).join(' / ')));
    replace(list,
      h('p', { id: 'gateways-summary' }, `${synced} of ${x.gateways.length} gateway(s) run the active version v${x.active_version ?? '–'}.`),
      pairs.length ? h('ul', { id: 'gateway-pairs' }, ...pairs) : '',
      table({
        columns: [
          { label: 'Gateway', cell: (g) => h('strong', {}, g.name), sort: (g) => g.name },
          { label: 'Pair', cell: (g) => g.pair || '', sort: (g) => g.pair || '' },
          { label: 'Role and sync', cell: haCell },
          { label: 'Address', cell: (g) => h('span', {}, g.address, ' ', badge(g.transport === 'tls' ? 'mutual TLS' : 'local socket', 'monitor')) },
          { label: 'Reachable', cell: (g) => badge(g.reachable ? 'up' : 'unreachable', g.reachable ? 'allow' : 'deny') },
          { label: 'Version', cell: (g) => (g.policy_version == null ? '–' : `v${g.policy_version}`), sort: (g) => g.policy_version ?? -1 },
          { label: 'In sync', cell: (g) => badge(g.in_sync ? 'in sync' : g.reconcile_refused ? 'newer than active' : 'out of sync', g.in_sync ? 'allow' : 'deny') },
          { label: 'Flows', class: 'num', cell: (g) => (g.flows_active == null ? '–' : fmtInt(g.flows_active)) },
          { label: 'Last contact', cell: (g) => (g.last_contact ? fmtAgo(g.last_contact) : 'never') },
          { label: 'Last error', cell: (g) => g.last_error || '' },
          { label: '', cell: (g) => (g.role === 'active' && g.ha && g.ha.sync ? h('button', {
            type: 'button', class: 'small', 'data-needs': 'kill', 'aria-label': `Resync ${g.name}`, onclick: () => resync(g.name),
          }, 'Resync') : '') },
        ],
        rows,
        rowAttrs: (g) => ({ 'data-gateway': g.name }),
        empty: 'No gateway is configured.',
      }));
  }

  return every(5000, refresh);
}
