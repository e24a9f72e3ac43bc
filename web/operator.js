// The operator's page: the ledger verified (each check's result), the books summed per currency
// and account kind, the summary (chain head, totals, pending holds and withdrawals) when the server
// has it, and deposits. The credential is HOME/operator.token, typed into a password field and
// kept in this tab's sessionStorage; every call sends it as a bearer token (so no CSRF header).
import { api, el, showError, initPage } from './api.js';
import { t, num, money, label } from './i18n.js';

const KEY = 'bf.op';
const MONEY = /^\d{1,15}(\.\d{1,2})?$/;
const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$/;
const errNode = document.getElementById('op-error');

initPage({ needSession: false });
document.getElementById('op-login').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const tok = ev.target.token.value.trim();
  if (!tok) return showError(errNode, { code: 'BAD_REQUEST', message: t('op.token') });
  sessionStorage.setItem(KEY, tok);
  ev.target.reset();
  load();
});
document.getElementById('op-forget').addEventListener('click', forget);
document.getElementById('verify').addEventListener('click', verify);
document.getElementById('deposit-form').addEventListener('submit', deposit);
if (sessionStorage.getItem(KEY)) load();

function forget() {
  sessionStorage.removeItem(KEY);
  document.getElementById('op-panels').hidden = true;
}

function op(method, path, body) {
  return api(method, '/operator' + path, body, { Authorization: 'Bearer ' + sessionStorage.getItem(KEY) });
}

// A refused credential (401 unknown, 403 a user's) is forgotten: the page asks again.
function refused(e) {
  showError(errNode, e);
  if (e.status === 401 || e.status === 403) forget();
}

async function load() {
  showError(errNode, null);
  try {
    await balances();
  } catch (e) { return refused(e); }
  document.getElementById('op-panels').hidden = false;
  summary();
}

async function balances() {
  const b = await op('GET', '/balances');
  document.querySelector('#op-balances tbody').replaceChildren(...(b.totals || []).map((x) =>
    el('tr', { 'data-test': 'balance-row', 'data-currency': x.currency, 'data-kind': x.kind },
      el('td', { text: x.currency }), el('td', { text: label('acct.', x.kind) }),
      el('td', { 'data-test': 'balance-posted', text: fmt(x.currency, x.posted) }),
      el('td', { text: fmt(x.currency, x.available) }), el('td', { text: x.held === undefined ? '—' : fmt(x.currency, x.held) }))));
}

function fmt(currency, v) { return currency === 'CNY' ? money(v) : num(Number(v)); }

// GET /operator/summary (the verify replay's head and counts with the totals) is newer than the
// other operator routes: a 404 says this server has none yet.
async function summary() {
  const missing = document.getElementById('summary-missing');
  try {
    const s = await op('GET', '/summary');
    missing.hidden = true;
    const ok = document.getElementById('s-ok');
    ok.textContent = s.ok === undefined ? '—' : s.ok ? t('verify.ok') : t('verify.bad');
    ok.className = s.ok === false ? 'error' : 'note';
    document.getElementById('s-head').textContent = s.chain_head || '—';
    document.getElementById('s-entries').textContent = num(s.entries ?? 0);
    document.getElementById('s-holds').textContent = num(s.pending_holds ?? 0);
    document.getElementById('s-withdrawals').textContent = num(s.pending_withdrawals ?? 0);
    document.getElementById('summary').hidden = false;
    const tot = document.getElementById('summary-totals');
    tot.querySelector('tbody').replaceChildren(...(s.totals || []).map((x) => el('tr', { 'data-test': 'summary-total' },
      el('td', { text: x.currency }), el('td', { text: x.kind ? label('acct.', x.kind) : '' }),
      el('td', { text: fmt(x.currency, x.posted) }), el('td', { text: x.held === undefined ? '—' : fmt(x.currency, x.held) }))));
    tot.hidden = false;
  } catch (e) {
    if (e.status !== 404) return refused(e);
    missing.textContent = t('summary.missing');
    missing.hidden = false;
  }
}

async function verify() {
  const out = document.getElementById('verify-result');
  out.textContent = t('verifying');
  out.className = '';
  try {
    const v = await op('GET', '/ledger/verify');
    out.textContent = v.ok ? t('verify.ok') : t('verify.bad');
    out.className = v.ok ? 'note' : 'error';
    out.dataset.ok = String(v.ok);
    document.getElementById('v-head').textContent = v.head_hash || '—';
    for (const [id, k] of [['v-transfers', 'transfers'], ['v-accounts', 'accounts'], ['v-users', 'users'],
      ['v-tasks', 'tasks'], ['v-holds', 'holds_pending']]) document.getElementById(id).textContent = num(v[k] ?? 0);
    document.getElementById('verify-facts').hidden = false;
    document.querySelector('#checks tbody').replaceChildren(...(v.checks || []).map((c) =>
      el('tr', { 'data-test': 'check-row', 'data-check': c.name, 'data-ok': String(c.ok) },
        el('td', { text: c.name }), el('td', { class: c.ok ? 'note' : 'error', text: c.ok ? t('pass') : t('fail') }),
        el('td', { text: num(c.failures) }), el('td', { text: c.detail || '' }))));
  } catch (e) { out.textContent = ''; refused(e); }
}

async function deposit(ev) {
  ev.preventDefault();
  const f = ev.target, err = document.getElementById('deposit-error'), note = document.getElementById('deposit-note');
  showError(err, null);
  note.hidden = true;
  const user = f.user.value.trim(), amount = f.amount.value.trim(), ref = f.ref.value.trim();
  if (!NAME.test(user)) return showError(err, { code: 'BAD_REQUEST', message: t('user') + ': 1..32 of A-Z a-z 0-9 _ . -' });
  if (!MONEY.test(amount) || !/[1-9]/.test(amount)) return showError(err, { code: 'BAD_REQUEST', message: t('amount') + ': 0.01 .. 999999999999999.99' });
  if (!/^[!-~]{1,100}$/.test(ref)) return showError(err, { code: 'BAD_REQUEST', message: t('ref') + ': 1..100, no spaces' });
  try {
    const r = await op('POST', '/deposit', { user, amount, ref });
    note.textContent = t('deposited', { user: r.user, cash: money(r.cash) });
    note.hidden = false;
    f.reset();
    balances().catch(refused);
    summary();
  } catch (e) { e.status === 401 || e.status === 403 ? refused(e) : showError(err, e); }
}
