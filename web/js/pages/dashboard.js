// Dashboard: live throughput, drops by reason, flows, per-worker load and the top denied flows.
// Reads GET /stats (control's last reading of the dataplane counters, with rates) and the flow log.

import uPlot from '../../vendor/uplot/uPlot.esm.js';
import { get } from '../api.js';
import { h, replace, every, fmtSi, fmtInt, fmtAgo, table, badge, endpoint, protoName } from '../dom.js';

const POLL_MS = 2000;
const KEEP = 180; // samples on the charts: 6 minutes at POLL_MS

// History survives leaving and coming back to the page (while the tab is open).
const history = { t: [], rx: [], tx: [], drops: [], newFlows: [], active: [], wouldDeny: [] };
let lastReadAt = null;

function record(s) {
  if (!s.up || !s.rates || s.read_at === lastReadAt) return;
  lastReadAt = s.read_at;
  const r = s.rates;
  const push = (k, v) => { history[k].push(v); if (history[k].length > KEEP) history[k].shift(); };
  push('t', Date.parse(s.read_at) / 1000);
  push('rx', r.rx_pps);
  push('tx', r.tx_pps);
  push('drops', r.drops_pps);
  push('newFlows', r.new_flows_ps);
  push('active', s.totals.flows_active);
  push('wouldDeny', r.would_deny_pps);
}

function chart(el, title, series, data) {
  const opts = {
    title,
    width: Math.max(320, el.clientWidth - 8),
    height: 190,
    cursor: { drag: { x: false, y: false } },
    scales: { y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
    axes: [
      { values: (u, vals) => vals.map((v) => new Date(v * 1000).toLocaleTimeString('en-GB')) },
      { size: 60, values: (u, vals) => vals.map((v) => fmtSi(v)) },
    ],
    series: [{ value: (u, v) => (v === null ? '–' : new Date(v * 1000).toLocaleTimeString('en-GB')) }, ...series.map(([label, stroke]) => ({ label, stroke, width: 2, value: (u, v) => fmtSi(v) }))],
  };
  return new uPlot(opts, data, el);
}

function tile(label, value, sub, id) {
  return h('div', { class: 'tile', id }, h('div', { class: 'tile-label' }, label),
    h('div', { class: 'tile-value' }, value), h('div', { class: 'tile-sub' }, sub || ''));
}

/** The most frequent denied conversations (src, dst, protocol, port) in the recent flow log. */
function topDenied(events) {
  const by = new Map();
  for (const e of events) {
    const key = `${e.src}|${e.dst}|${e.proto}|${e.dport}`;
    const cur = by.get(key) || { e, count: 0, last: e.time };
    cur.count += 1;
    cur.last = e.time;
    cur.e = e;
    by.set(key, cur);
  }
  return [...by.values()].sort((a, b) => b.count - a.count).slice(0, 10);
}

export function mount(main) {
  const tiles = h('div', { class: 'tiles' });
  const charts = h('div', { class: 'charts' },
    h('div', { class: 'card chart', id: 'chart-throughput' }),
    h('div', { class: 'card chart', id: 'chart-drops' }),
    h('div', { class: 'card chart', id: 'chart-flows' }));
  const drops = h('div', { class: 'card' });
  const workers = h('div', { class: 'card' });
  const ports = h('div', { class: 'card' });
  const denied = h('div', { class: 'card wide' });
  replace(main, h('h1', {}, 'Dashboard'), tiles, charts,
    h('div', { class: 'cols' }, drops, workers), ports, denied);
  let plots = null;

  const stopStats = every(POLL_MS, async () => {
    const s = await get('/stats');
    record(s);
    const r = s.rates || {};
    const t = s.totals || {};
    if (!s.up) {
      replace(tiles, h('div', { class: 'banner bad' },
        `The dataplane cannot be read: ${s.last_error || 'no reading yet'}. It keeps enforcing its last policy; `,
        'these figures come back with the next good reading.'));
    } else {
      replace(tiles,
        tile('Throughput', fmtSi(r.rx_pps, 'pps'), `${fmtSi(r.tx_pps, 'pps')} forwarded`, 'tile-throughput'),
        tile('Drops', `${fmtSi(r.drops_pps)}/s`, `${fmtInt(t.drops_total)} in all`, 'tile-drops'),
        tile('Active flows', fmtInt(t.flows_active), `${fmtInt(t.flows_created)} created`, 'tile-flows'),
        tile('New flows', `${fmtSi(r.new_flows_ps)}/s`, `${fmtInt(t.flows_evicted)} evicted`, 'tile-new-flows'),
        tile('Would deny', `${fmtSi(r.would_deny_pps)}/s`, 'passed by monitor mode', 'tile-would-deny'),
        tile('Policy', s.policy_version ? `v${s.policy_version}` : 'none', `read ${fmtAgo(s.read_at)}`, 'tile-policy'));
    }
    const data = [history.t];
    if (!plots) {
      plots = [
        chart(charts.children[0], 'Packets per second', [['received', '#1d70b8'], ['forwarded', '#2a9d8f']], [history.t, history.rx, history.tx]),
        chart(charts.children[1], 'Drops per second', [['dropped', '#d62828'], ['would deny', '#e09f3e']], [history.t, history.drops, history.wouldDeny]),
        chart(charts.children[2], 'Flows', [['active', '#6a4c93'], ['new per second', '#1d70b8']], [history.t, history.active, history.newFlows]),
      ];
    } else {
      plots[0].setData([...data, history.rx, history.tx]);
      plots[1].setData([...data, history.drops, history.wouldDeny]);
      plots[2].setData([...data, history.active, history.newFlows]);
    }
    const reasons = Object.entries(t.drops || {}).filter(([, n]) => n > 0);
    replace(drops, h('h2', {}, 'Drops by reason'), table({
      columns: [
        { label: 'Reason', cell: ([k]) => k, sort: ([k]) => k },
        { label: 'Total', class: 'num', cell: ([, n]) => fmtInt(n), sort: ([, n]) => n },
        { label: 'Now /s', class: 'num', cell: ([k]) => fmtSi((r.drops_pps_by_reason || {})[k]), sort: ([k]) => (r.drops_pps_by_reason || {})[k] || 0 },
      ],
      rows: reasons.sort((a, b) => b[1] - a[1]),
      empty: 'No drops.',
    }));
    replace(workers, h('h2', {}, 'Workers'), table({
      columns: [
        { label: 'Worker', cell: (w) => `#${w.worker}` },
        { label: 'Received /s', class: 'num', cell: (w) => fmtSi(w.rx_pps) },
        { label: 'Flows', class: 'num', cell: (w) => fmtInt(w.flows_active) },
        { label: 'Busy', cell: (w) => h('div', { class: 'meter', title: `${(w.busy_ratio * 100).toFixed(1)} % of polls found packets` },
          h('div', { class: 'meter-fill', style: { width: `${Math.min(100, w.busy_ratio * 100).toFixed(1)}%` } }),
          h('span', {}, `${(w.busy_ratio * 100).toFixed(1)} %`)) },
      ],
      rows: s.workers || [],
      empty: 'No reading.',
    }));
    replace(ports, h('h2', {}, 'Ports'), table({
      columns: [
        { label: 'Port', cell: (p) => p.name },
        { label: 'Rx pps', class: 'num', cell: (p) => fmtSi(p.rx_pps) },
        { label: 'Tx pps', class: 'num', cell: (p) => fmtSi(p.tx_pps) },
        { label: 'Rx bit/s', class: 'num', cell: (p) => fmtSi(p.rx_bps) },
        { label: 'Tx bit/s', class: 'num', cell: (p) => fmtSi(p.tx_bps) },
        { label: 'Missed', class: 'num', cell: (p) => fmtInt(p.rx_missed) },
        { label: 'Errors', class: 'num', cell: (p) => fmtInt((p.rx_errors || 0) + (p.tx_errors || 0)) },
      ],
      rows: s.ports || [],
      empty: 'No reading.',
    }));
  });

  const stopDenied = every(5000, async () => {
    const log = await get('/flow-log', { kind: 'denied', limit: 1000 });
    replace(denied, h('h2', {}, 'Top denied flows ', h('span', { class: 'muted' }, `(last ${log.count} denied events)`)), table({
      columns: [
        { label: 'Source', cell: (x) => h('span', {}, x.e.src, ' ', h('span', { class: 'muted' }, (x.e.src_segments || []).join(', ') || 'unsegmented')) },
        { label: 'Destination', cell: (x) => h('span', {}, endpoint(x.e.dst, x.e.dport, x.e.proto), ' ', h('span', { class: 'muted' }, (x.e.dst_segments || []).join(', ') || 'unsegmented')) },
        { label: 'Protocol', cell: (x) => protoName(x.e.proto) },
        { label: 'Verdict', cell: (x) => badge(x.e.verdict) },
        { label: 'Rule', cell: (x) => (x.e.rule_id ? `#${x.e.rule_id}` : 'default') },
        { label: 'Attempts', class: 'num', cell: (x) => fmtInt(x.count), sort: (x) => x.count },
        { label: 'Last', cell: (x) => fmtAgo(x.last) },
      ],
      rows: topDenied(log.events || []),
      empty: 'No denied flows in the flow log.',
    }));
  });

  return () => { stopStats(); stopDenied(); if (plots) plots.forEach((p) => p.destroy()); };
}
