// Segment map: segments as nodes, observed traffic between them as edges (GET /traffic/map, built from flow
// events). Allowed, denied and would-deny (monitor mode) traffic are separate edges in separate colours; an
// edge opens (click or Enter) the flows behind it (GET /flow-log filtered by segment) and the rules that
// decided them.

import { get } from '../api.js';
import { h, svg, replace, every, fmtInt, fmtAgo, fmtBytes, table, badge, endpoint, protoName } from '../dom.js';

const CLASSES = [
  ['allowed', 'Allowed', 'var(--allow)'],
  ['would_deny', 'Would deny (monitor)', 'var(--monitor)'],
  ['denied', 'Denied', 'var(--deny)'],
];
const W = 760;
const HGT = 520;

const state = { window_s: '900', proto: '', port: '' };

function layout(nodes) {
  const n = nodes.length;
  const r = n <= 1 ? 0 : Math.min(W, HGT) / 2 - 90;
  const pos = new Map();
  nodes.forEach((node, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(1, n);
    // Labels sit outside the circle of nodes, where no edge runs.
    const cos = n <= 1 ? 0 : Math.cos(a);
    const sin = n <= 1 ? 1 : Math.sin(a);
    pos.set(node.id, {
      x: W / 2 + r * Math.cos(a),
      y: HGT / 2 + r * Math.sin(a),
      lx: 32 * cos,
      ly: sin < -0.3 ? -46 : sin > 0.3 ? 40 : 5,
      anchor: cos > 0.3 ? 'start' : cos < -0.3 ? 'end' : 'middle',
    });
  });
  return pos;
}

/** A curved path from a to b, bent by `bend` (so both directions and each class get their own curve). */
function curve(a, b, bend) {
  if (a === b) {
    const k = 26 + bend * 0.6;
    return `M ${a.x - 8} ${a.y - 18} C ${a.x - k} ${a.y - 60 - k}, ${a.x + k} ${a.y - 60 - k}, ${a.x + 8} ${a.y - 18}`;
  }
  const mx = (a.x + b.x) / 2;
  const my = (a.y + b.y) / 2;
  const dx = b.x - a.x;
  const dy = b.y - a.y;
  const len = Math.hypot(dx, dy) || 1;
  const cx = mx - (dy / len) * bend;
  const cy = my + (dx / len) * bend;
  // End the curve at the node's rim, not its centre.
  const trim = (p, q) => {
    const l = Math.hypot(q.x - p.x, q.y - p.y) || 1;
    return { x: p.x + ((q.x - p.x) / l) * 24, y: p.y + ((q.y - p.y) / l) * 24 };
  };
  const s = trim(a, { x: cx, y: cy });
  const e = trim(b, { x: cx, y: cy });
  return `M ${s.x} ${s.y} Q ${cx} ${cy} ${e.x} ${e.y}`;
}

export function mount(main, params) {
  const controls = h('form', { class: 'toolbar', onsubmit: (ev) => { ev.preventDefault(); refresh(); } },
    h('label', {}, 'Window ', h('select', { name: 'window_s', onchange: (ev) => { state.window_s = ev.target.value; refresh(); } },
      [['300', '5 min'], ['900', '15 min'], ['3600', '1 hour'], ['21600', '6 hours'], ['86400', '24 hours']]
        .map(([v, l]) => h('option', { value: v, selected: v === state.window_s }, l)))),
    h('label', {}, 'Protocol ', h('select', { name: 'proto', onchange: (ev) => { state.proto = ev.target.value; refresh(); } },
      [['', 'any'], ['tcp', 'tcp'], ['udp', 'udp'], ['icmp', 'icmp'], ['icmpv6', 'icmpv6']]
        .map(([v, l]) => h('option', { value: v, selected: v === state.proto }, l)))),
    h('label', {}, 'Port ', h('input', { name: 'port', type: 'number', min: 0, max: 65535, value: state.port, size: 6,
      oninput: (ev) => { state.port = ev.target.value; } })),
    h('button', { type: 'submit' }, 'Apply'),
    h('span', { class: 'legend' }, CLASSES.map(([, label, color]) =>
      h('span', { class: 'legend-item' }, h('span', { class: 'swatch', style: { background: color } }), label))));
  const info = h('p', { class: 'muted', id: 'map-info' });
  const canvas = h('div', { class: 'card map-card' });
  const detail = h('aside', { class: 'card map-detail', id: 'edge-detail', 'aria-live': 'polite' },
    h('p', { class: 'muted' }, 'Select an edge (click it, or Tab to it and press Enter) to see its flows and the rules that decided them.'));
  replace(main, h('h1', {}, 'Segment map'), controls, info, h('div', { class: 'map-layout' }, canvas, detail));
  let selected = params[0] ? params[0] : null;
  let lastMap = null;

  async function refresh() {
    const m = await get('/traffic/map', { window_s: state.window_s, proto: state.proto, port: state.port });
    lastMap = m;
    replace(info, `${fmtInt(m.events_considered)} flow events from ${new Date(m.from).toLocaleTimeString('en-GB')} to `,
      `${new Date(m.to).toLocaleTimeString('en-GB')}`,
      m.truncated ? ' — the flow log\'s memory does not reach back over the whole window: older traffic is missing.' : '');
    draw(m);
    if (selected) showEdge(selected);
  }

  function draw(m) {
    const pos = layout(m.nodes);
    const edges = [];
    for (const e of m.edges) {
      CLASSES.forEach(([key, , color], ci) => {
        if (!e[key]) return;
        edges.push({ e, key, color, ci });
      });
    }
    const maxFlows = Math.max(1, ...edges.map((x) => x.e[x.key]));
    const root = svg('svg', { viewBox: `0 0 ${W} ${HGT}`, class: 'map', role: 'group', 'aria-label': 'Segments and the traffic between them' },
      svg('defs', {}, CLASSES.map(([key, , color]) => svg('marker', {
        id: `arrow-${key}`, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 11, markerHeight: 11,
        markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse',
      }, svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: color })))));
    for (const x of edges) {
      const a = pos.get(x.e.from);
      const b = pos.get(x.e.to);
      if (!a || !b) continue;
      const id = `${x.e.from}→${x.e.to}`;
      const n = x.e[x.key];
      const width = 1.5 + 5 * Math.log1p(n) / Math.log1p(maxFlows);
      const label = `${x.e.from} → ${x.e.to}: ${n} ${x.key.replace('_', ' ')} flow(s)`;
      const g = svg('g', {
        class: `edge edge-${x.key}${selected === id ? ' selected' : ''}`, tabindex: 0, role: 'button',
        'aria-label': label, 'data-edge': id, 'data-class': x.key,
        onclick: () => { selected = id; draw(m); showEdge(id); },
        onkeydown: (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); selected = id; draw(m); showEdge(id); } },
      },
      svg('title', {}, label),
      svg('path', { d: curve(a, b, 22 + x.ci * 18), class: 'edge-hit' }),
      svg('path', { d: curve(a, b, 22 + x.ci * 18), stroke: x.color, 'stroke-width': width, fill: 'none', 'marker-end': `url(#arrow-${x.key})` }));
      root.append(g);
    }
    for (const node of m.nodes) {
      const p = pos.get(node.id);
      const labels = Object.entries(node.labels || {}).map(([k, v]) => `${k}=${v}`).join(' ');
      root.append(svg('g', { class: `node${node.observed ? '' : ' quiet'}${node.mode === 'monitor' ? ' monitor' : ''}`, 'data-node': node.id },
        svg('title', {}, `${node.name}${labels ? ` (${labels})` : ''}${node.prefixes ? `\n${node.prefixes.join(', ')}` : ''}${node.mode === 'monitor' ? '\nmonitor mode' : ''}`),
        svg('circle', { cx: p.x, cy: p.y, r: 22 }),
        svg('text', { x: p.x + p.lx, y: p.y + p.ly, 'text-anchor': p.anchor, class: 'node-name' }, node.id === '-' ? 'unsegmented' : node.name),
        labels ? svg('text', { x: p.x + p.lx, y: p.y + p.ly + 15, 'text-anchor': p.anchor, class: 'node-labels' }, labels) : null));
    }
    replace(canvas, m.nodes.length ? root : h('p', { class: 'muted' }, 'The active policy has no segments.'),
      m.edges.length ? null : h('p', { class: 'muted' }, 'No traffic observed in this window.'));
  }

  async function showEdge(id) {
    const e = lastMap && lastMap.edges.find((x) => `${x.from}→${x.to}` === id);
    if (!e) { replace(detail, h('p', { class: 'muted' }, `No traffic from ${id.replace('→', ' to ')} in this window.`)); return; }
    const log = await get('/flow-log', {
      src_segment: e.from, dst_segment: e.to, kind: 'new,denied', limit: 50,
      proto: state.proto, port: state.port,
    });
    const name = (s) => (s === '-' ? 'unsegmented' : s);
    replace(detail,
      h('h2', {}, `${name(e.from)} → ${name(e.to)}`),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Allowed'), h('dd', {}, fmtInt(e.allowed)),
        h('dt', {}, 'Would deny'), h('dd', {}, fmtInt(e.would_deny)),
        h('dt', {}, 'Denied'), h('dd', {}, fmtInt(e.denied)),
        h('dt', {}, 'Traffic'), h('dd', {}, `${fmtInt(e.packets)} packets, ${fmtBytes(e.bytes)}`, h('div', { class: 'muted small' }, 'of denied packets and of flows that ended')),
        h('dt', {}, 'Last seen'), h('dd', {}, fmtAgo(e.last_seen))),
      h('h3', {}, 'Services'),
      h('ul', { class: 'plain' }, e.services.map((s) => h('li', {}, `${protoName(s.proto)}${s.proto === 6 || s.proto === 17 ? `/${s.port}` : ''}: ${s.flows} flow(s)`))),
      h('h3', {}, 'Decided by'),
      h('ul', { class: 'plain', id: 'edge-rules' }, e.rules.map((r) => h('li', {},
        r.id ? h('a', { href: `#/policy/rules/${r.id}` }, `#${r.id} ${r.name || ''}`) : 'the default action',
        `: ${r.flows} flow(s)`))),
      h('h3', {}, 'Recent flows'),
      table({
        columns: [
          { label: 'Time', cell: (f) => fmtAgo(f.time) },
          { label: 'Flow', cell: (f) => `${endpoint(f.src, f.sport, f.proto)} → ${endpoint(f.dst, f.dport, f.proto)} ${protoName(f.proto)}` },
          { label: 'Verdict', cell: (f) => badge(f.verdict) },
          { label: 'Rule', cell: (f) => (f.rule_id ? `#${f.rule_id}` : 'default') },
        ],
        rows: (log.events || []).slice().reverse(),
        empty: 'The flow log holds no flows of this edge any more.',
      }));
  }

  const stop = every(5000, refresh);
  return stop;
}
