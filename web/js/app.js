// The console's shell: sign-in with a token, the status bar, and a hash router over the pages. Each page
// module exports `mount(main, params)` and returns a function that stops its timers when the page is left.

import { request, get, token, setToken, setRights, can, onUnauthorized } from './api.js';
import { h, replace, every } from './dom.js';
import * as dashboard from './pages/dashboard.js';
import * as map from './pages/map.js';
import * as policy from './pages/policy.js';
import * as explain from './pages/explain.js';
import * as health from './pages/health.js';
import * as connections from './pages/connections.js';
import * as tokens from './pages/tokens.js';
import * as discovery from './pages/discovery.js';
import * as gateways from './pages/gateways.js';

const PAGES = { dashboard, map, discovery, policy, explain, health, connections, gateways, tokens };
// Every right a role may have: the body is marked `lacks-<right>` for each one the caller lacks (console.css
// hides elements marked data-needs="<right>" then).
const RIGHTS = ['read', 'kill', 'confirm', 'analyze', 'edit', 'submit', 'commit', 'manage_tokens'];
const main = document.getElementById('main');
let unmount = null;
let stopStatus = null;

function signIn(message) {
  if (unmount) { unmount(); unmount = null; }
  if (stopStatus) { stopStatus(); stopStatus = null; }
  document.body.classList.add('signed-out');
  document.getElementById('logout').hidden = true;
  replace(document.getElementById('who'));
  replace(document.getElementById('status'));
  const input = h('input', {
    type: 'password', name: 'token', id: 'token', autocomplete: 'current-password', required: true,
    spellcheck: 'false', placeholder: 'bearer token',
  });
  const err = h('div', { class: 'field-error', role: 'alert', id: 'token-err' }, message || '');
  const form = h('form', { class: 'signin card', onsubmit: async (ev) => {
    ev.preventDefault();
    const t = input.value.trim();
    try {
      await request('GET', '/whoami', { authToken: t });
      setToken(t);
      start();
    } catch (e) {
      err.textContent = e.status === 401 ? 'This token is not valid.' : e.message;
      input.focus();
    }
  } },
  h('h1', {}, 'Sign in to Bulkhead'),
  h('p', {}, 'Paste an API token. An admin creates tokens on the Tokens page (or with POST /api/v1/tokens); at first start, the first admin secret is in ',
    h('code', {}, '<store_dir>/tokens.initial'), '.'),
  h('label', { for: 'token' }, 'Token'), input, err,
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Sign in')));
  replace(main, form);
  input.focus();
}

async function start() {
  document.body.classList.remove('signed-out');
  const logout = document.getElementById('logout');
  logout.hidden = false;
  logout.onclick = () => { setToken(null); setRights([]); signIn('Signed out.'); };
  try {
    const [me, v] = await Promise.all([get('/whoami'), get('/version')]);
    setRights(me.rights);
    for (const r of RIGHTS) document.body.classList.toggle(`lacks-${r}`, !can(r));
    replace(document.getElementById('who'), h('span', { id: 'whoami' }, `${me.identity} (${me.role}${me.tiers ? `; tiers ${me.tiers.join(', ')}` : ''})`),
      ` · control ${v.control} · API ${v.api}`);
  } catch { /* a 401 already brought back the sign-in page */ }
  if (!token()) return;
  stopStatus = every(5000, refreshStatus);
  route();
}

async function refreshStatus() {
  const [hl, active] = await Promise.all([get('/health'), get('/active').catch(() => null)]);
  const dp = hl.dataplane || {};
  const gws = hl.gateways || [];
  const up = gws.filter((g) => g.reachable).length;
  const pending = active && active.pending_confirm;
  replace(document.getElementById('status'),
    gws.length > 1
      ? h('a', { class: `pill ${up === gws.length ? 'ok' : 'bad'}`, href: '#/gateways', title: 'gateways reachable' },
        `${up}/${gws.length} gateways up`)
      : h('span', { class: `pill ${dp.reachable ? 'ok' : 'bad'}`, title: 'dataplane control socket' },
        dp.reachable ? 'dataplane up' : 'dataplane unreachable'),
    h('span', { class: `pill ${hl.in_sync ? 'ok' : 'warn'}`, id: 'active-version' },
      `policy v${hl.active_version ?? '–'}`, hl.in_sync ? '' : ' (not in sync)'),
    dp.reachable ? h('span', { class: 'pill' }, `${dp.flows_active ?? 0} flows`) : null,
    pending ? h('a', { class: 'pill warn', href: '#/policy/commit' },
      `confirm v${active.meta.version} before ${new Date(pending.deadline).toLocaleTimeString('en-GB')}`) : null);
}

function route() {
  if (!token()) return signIn();
  const [name, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  const needs = PAGES[name] && document.querySelector(`#nav a[data-page="${name}"]`).dataset.needs;
  const page = PAGES[name] && (!needs || can(needs)) ? name : 'dashboard';
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.page === page) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (unmount) unmount();
  replace(main);
  document.title = `${document.querySelector(`#nav a[data-page="${page}"]`).textContent} · Bulkhead`;
  unmount = PAGES[page].mount(main, rest.map(decodeURIComponent)) || null;
}

onUnauthorized(() => { setToken(null); signIn('The token was refused (wrong, or rotated): sign in again.'); });
window.addEventListener('hashchange', () => { if (token()) route(); });
window.addEventListener('bulkhead:policy-changed', () => { if (token()) refreshStatus().catch(() => {}); });

if (token()) start();
else signIn();
