// Tokens (admin: the `manage_tokens` right): every token with its role, state and last use (GET /tokens);
// create one with a role and an optional expiry (POST /tokens), rotate (POST /tokens/{id}/rotate) and revoke
// (DELETE /tokens/{id}). A secret is shown once, in a dialog, when it is made; the API never answers it again.

import { get, request, ApiError } from '../api.js';
import { h, replace, table, badge, field, showFieldErrors, toast, modal, reportError, fmtAgo, fmtTime } from '../dom.js';

const ROLES = [
  ['viewer', 'viewer — read everything but secrets'],
  ['operator', 'operator — + kill connections, settle pending commits'],
  ['author', 'author — + edit, validate, diff, explain, submit the draft'],
  ['approver', 'approver — + commit, schedule, roll back'],
  ['admin', 'admin — + tokens'],
];
const EXPIRIES = [['', 'never'], ['86400', '1 day'], ['2592000', '30 days'], ['7776000', '90 days'], ['31536000', '1 year']];
const STATE_KIND = { active: 'allow', expired: 'monitor', revoked: 'deny' };

/** The dialog that shows a new secret, this once. */
function showSecret(title, answer) {
  const secret = h('code', { class: 'secret', id: 'new-secret' }, answer.token);
  const copy = h('button', { type: 'button', class: 'small', onclick: async () => {
    try { await navigator.clipboard.writeText(answer.token); toast('Copied.', 'ok'); } catch { toast('Select the secret and copy it.', 'info'); }
  } }, 'Copy');
  return modal(title, h('div', {},
    h('p', {}, `The secret of ${answer.identity} (${answer.role}, token ${answer.id}). It is shown only now: copy it to where it will be used.`),
    secret, h('div', { class: 'actions' }, copy)));
}

export function mount(main) {
  const list = h('div', { class: 'card', id: 'token-list' });
  const identity = h('input', { name: 'identity', required: true, maxlength: 64, placeholder: 'e.g. grafana or alice@example.org', autocomplete: 'off' });
  const role = h('select', { name: 'role' }, ROLES.map(([v, l]) => h('option', { value: v }, l)));
  const expiry = h('select', { name: 'expires_in_s' }, EXPIRIES.map(([v, l]) => h('option', { value: v }, l)));
  const description = h('input', { name: 'description', maxlength: 200, size: 40, placeholder: 'what it is for' });
  const tiers = h('input', { name: 'tiers', size: 30, placeholder: 'e.g. segments (empty: every tier)', autocomplete: 'off' });
  const note = h('div', { class: 'form-note' });
  const form = h('form', { class: 'card', id: 'token-create', novalidate: true, onsubmit: async (ev) => {
    ev.preventDefault();
    replace(note);
    const body = { identity: identity.value.trim(), role: role.value };
    if (description.value.trim()) body.description = description.value.trim();
    const scope = tiers.value.split(',').map((t) => t.trim()).filter((t) => t);
    if (scope.length) body.tiers = scope;
    if (expiry.value) body.expires_in_s = Number(expiry.value);
    try {
      const r = await request('POST', '/tokens', { body });
      showFieldErrors(form, []);
      form.reset();
      await refresh();
      await showSecret('New token', r.data);
    } catch (e) {
      if (e instanceof ApiError) showFieldErrors(form, e.details);
      replace(note, h('div', { class: 'banner bad' }, `Not created: ${e.message}`));
    }
  } },
  h('h2', {}, 'New token'),
  h('div', { class: 'row' }, field('Identity', identity, 'recorded in the audit log as who'), field('Role', role), field('Expires', expiry)),
  field('Description', description),
  field('Tiers it may edit', tiers, 'comma-separated; a scoped token edits only those tiers of the draft'),
  note,
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Create token')));
  replace(main, h('h1', {}, 'Tokens'),
    h('p', { class: 'muted' }, 'The token file keeps only a hash of each secret. Revoked and expired tokens stay listed, so their use is reported as such.'),
    form, list);

  /** Asks, then does `action` (a request whose answer `done` shows), then lists the tokens again. */
  async function confirmed(question, text, button, action, done) {
    const answer = await modal(question, h('p', {}, text),
      [{ label: 'Cancel', value: '' }, { ...button, value: 'yes' }]);
    if (answer !== 'yes') return;
    try {
      const r = await action();
      await refresh();
      await done(r.data);
    } catch (e) { reportError(e); }
  }

  const rotate = (t) => confirmed(`Rotate the token of ${t.identity}?`,
    'It gets a new secret; the old one stops working at once, and streams opened with it end.',
    { label: 'Rotate', class: 'primary' },
    () => request('POST', `/tokens/${encodeURIComponent(t.id)}/rotate`),
    (data) => showSecret('New secret', data));

  const revoke = (t) => confirmed(`Revoke the token of ${t.identity}?`,
    'It is refused from now on. This cannot be undone: create a new token instead.',
    { label: 'Revoke', class: 'danger' },
    () => request('DELETE', `/tokens/${encodeURIComponent(t.id)}`),
    () => toast(`Token ${t.id} of ${t.identity} revoked.`, 'ok'));

  async function refresh() {
    const x = await get('/tokens');
    replace(list, table({
      columns: [
        { label: 'Identity', cell: (t) => h('span', {}, h('strong', {}, t.identity), t.description ? h('div', { class: 'muted small' }, t.description) : null), sort: (t) => t.identity },
        { label: 'Role', cell: (t) => t.role, sort: (t) => t.role },
        { label: 'Tiers', cell: (t) => (t.tiers ? t.tiers.join(', ') : h('span', { class: 'muted' }, 'all')), sort: (t) => (t.tiers || []).join(',') },
        { label: 'State', cell: (t) => badge(t.state, STATE_KIND[t.state]), sort: (t) => t.state },
        { label: 'Id', cell: (t) => h('code', {}, t.id) },
        { label: 'Created', cell: (t) => h('span', { title: t.created_at }, fmtAgo(t.created_at)), sort: (t) => t.created_at },
        { label: 'Expires', cell: (t) => (t.expires_at ? fmtTime(t.expires_at) : 'never'), sort: (t) => t.expires_at || '' },
        { label: 'Last used', cell: (t) => h('span', { title: t.last_used_at || '' }, fmtAgo(t.last_used_at)), sort: (t) => t.last_used_at || '' },
        { label: '', class: 'row-actions', cell: (t) => (t.state === 'revoked' ? null : h('span', {},
          t.state === 'active' ? h('button', { type: 'button', class: 'small', onclick: () => rotate(t), 'aria-label': `Rotate token ${t.id}` }, 'Rotate') : null,
          h('button', { type: 'button', class: 'small danger', onclick: () => revoke(t), 'aria-label': `Revoke token ${t.id}` }, 'Revoke'))) },
      ],
      rows: x.tokens,
      rowAttrs: (t) => ({ 'data-token': t.id, 'data-identity': t.identity, class: `token-${t.state}` }),
      empty: 'No token.',
    }));
  }

  refresh().catch(reportError);
  return () => {};
}
