// The account: cash (available and held), coins, recharge, shares with the fees received (and a
// chart of the payouts over time), reward payouts, the transaction history with before/after balances
// (paged by `seq`), withdrawals (asked for here, paid out or rejected by the operator), and the
// account's API tokens (list, create: shown once, revoke).
import { api, el, showError, initPage, requestKey } from './api.js';
import { t, num, money, dateTime, label } from './i18n.js';

// history entries per page: 20, or the page's ?limit= (1..200)
const PAGE = Math.min(200, Math.max(1, Number(new URLSearchParams(location.search).get('limit')) || 20));
const REVENUE_SPAN = 1000; // newest fee payouts the revenue chart is drawn from (the API's most)
const MONEY = /^\d{1,15}(\.\d{1,2})?$/;
let pageBefore = 0;        // 0: the newest page; else the `before` of the page shown
let lastSeq = 0;           // the oldest seq on the page shown (the next page is before= it)
let revenueChart = null;

if (initPage()) {
  revenueChart = new Chart(document.getElementById('revenue-chart'), {
    type: 'line',
    data: { datasets: [{ label: t('received'), data: [], stepped: true, borderColor: '#2ca02c', backgroundColor: '#2ca02c' }] },
    options: { animation: false, responsive: true, maintainAspectRatio: false, parsing: false,
      scales: { x: { type: 'linear', ticks: { callback: (v) => dateTime(v / 1000) } }, y: { beginAtZero: true } },
      plugins: { tooltip: { callbacks: { title: (items) => items.length ? dateTime(items[0].parsed.x / 1000) : '' } } } },
  });
  document.getElementById('recharge-form').addEventListener('submit', recharge);
  document.getElementById('token-form').addEventListener('submit', tokenCreate);
  document.getElementById('withdraw-form').addEventListener('submit', withdraw);
  document.getElementById('history-newest').addEventListener('click', () => history(0));
  document.getElementById('history-older').addEventListener('click', () => history(lastSeq));
  load();
}

function fail(e) { showError(document.getElementById('profile-error'), e); }

async function load() {
  await Promise.all([account(), history(pageBefore), tokens(), withdrawals()]);
}

async function account() {
  try {
    const a = await api('GET', '/account');
    document.getElementById('cash').textContent = money(a.cash) + ' (' + t('available') + ' ' + money(a.cash_available) +
      ', ' + t('held') + ' ' + money(a.cash_held) + ')';
    document.getElementById('cash').dataset.cash = a.cash; // the server's decimal, for tests
    document.getElementById('coins').textContent = num(a.coins);
    const rewards = a.rewards || [];
    document.querySelector('#rewards tbody').replaceChildren(...rewards.map((r) => el('tr', { 'data-test': 'reward-row' },
      el('td', { text: r.task_ledger_id }), el('td', { text: money(r.amount) }))));
    document.getElementById('no-rewards').hidden = rewards.length > 0;
    const rev = await api('GET', '/account/revenues?limit=' + REVENUE_SPAN);
    const shares = rev.tasks || [];
    document.querySelector('#shares tbody').replaceChildren(...shares.map((s) => el('tr', { 'data-test': 'share-row', 'data-task': s.task },
      el('td', {}, el('a', { href: '/tasks/' + encodeURIComponent(s.task), text: s.name + ' (' + s.task + ')' })),
      el('td', { 'data-test': 'share-ppm', text: num(s.ppm / 10000, 4) + ' %' }),
      el('td', { 'data-test': 'share-received', text: money(s.received) }), el('td', { text: num(s.payouts) }))));
    revenue(rev.payouts || []);
    document.getElementById('no-shares').hidden = shares.length > 0;
  } catch (e) { fail(e); }
}

// One page of the history: the newest (before = 0) or the entries older than `before`.
async function history(before) {
  try {
    const q = '/account/history?limit=' + PAGE + (before ? '&before=' + before : '');
    const h = await api('GET', q);
    if (before && !h.length) return; // no older entries: stay on this page
    pageBefore = before;
    lastSeq = h.length ? h[h.length - 1].seq : 0;
    document.querySelector('#history tbody').replaceChildren(...h.map((x) =>
      el('tr', { 'data-test': 'history-row', 'data-seq': x.seq, 'data-kind': x.kind },
        el('td', { text: x.seq }), el('td', { text: dateTime(x.time) }), el('td', { text: label('type.', x.type) }),
        el('td', { text: label('kind.', x.kind) }), el('td', { text: x.currency }),
        el('td', { text: x.currency === 'CNY' ? money(x.amount) : num(Number(x.amount)) }),
        el('td', { text: x.currency === 'CNY' ? money(x.before) : num(Number(x.before)) }),
        el('td', { text: x.currency === 'CNY' ? money(x.after) : num(Number(x.after)) }))));
    document.getElementById('history-older').disabled = lastSeq <= 1;
    document.getElementById('history-newest').disabled = !before;
  } catch (e) { fail(e); }
}

// "12.34" -> 1234: money stays integer cents; only the chart divides, to draw.
function cents(s) {
  const m = /^(-?)(\d+)(?:\.(\d{1,2}))?$/.exec(s || '');
  if (!m) return 0;
  return (m[1] ? -1 : 1) * (Number(m[2]) * 100 + Number((m[3] || '0').padEnd(2, '0')));
}

function fromCents(c) {
  const a = Math.abs(c);
  return (c < 0 ? '-' : '') + Math.floor(a / 100) + '.' + String(a % 100).padStart(2, '0');
}

// The newest REVENUE_SPAN fee payouts (newest first from the server), summed as they came.
function revenue(payouts) {
  let sum = 0;
  const pts = payouts.slice().reverse().map((x) => { sum += cents(x.amount); return { x: x.time * 1000, y: sum / 100 }; });
  revenueChart.data.datasets[0].data = pts;
  revenueChart.update();
  // an empty time axis would label itself with the epoch: say there is nothing instead
  document.getElementById('revenue-box').hidden = pts.length === 0;
  document.getElementById('no-revenue').hidden = pts.length > 0;
  const c = document.getElementById('revenue-chart');
  c.dataset.points = String(pts.length);
  c.dataset.total = fromCents(sum);
}

let rechargeKey = null; // kept across retries of one submission (network errors), new once answered
async function recharge(ev) {
  ev.preventDefault();
  const err = document.getElementById('recharge-error'), note = document.getElementById('recharge-note');
  showError(err, null);
  note.hidden = true;
  const amount = ev.target.amount.value.trim();
  if (!MONEY.test(amount) || cents(amount) <= 0)
    return showError(err, { code: 'BAD_REQUEST', message: t('amount') + ': 0.01 .. 999999999999999.99' });
  rechargeKey = rechargeKey || requestKey();
  try {
    const r = await api('POST', '/account/recharge', { amount, request: rechargeKey });
    rechargeKey = null;
    note.textContent = t('recharged', { cash: money(r.cash) });
    note.hidden = false;
    load();
  } catch (e) {
    if (e.status) rechargeKey = null;
    showError(err, e); // e.g. FORBIDDEN under `run --recharge operator`, LIMIT over the daily cap
  }
}

async function withdrawals() {
  try {
    const list = await api('GET', '/account/withdrawals');
    document.querySelector('#withdrawals tbody').replaceChildren(...list.map((w) => el('tr', { 'data-test': 'withdrawal-row', 'data-status': w.status },
      el('td', { text: w.withdrawal }), el('td', { text: money(w.amount) }), el('td', { text: label('wd.', w.status) }),
      el('td', { text: dateTime(w.created) }), el('td', { text: w.resolved ? dateTime(w.resolved) : '—' }),
      el('td', { text: w.ref || w.reason || '' }))));
  } catch (e) { fail(e); }
}

let withdrawKey = null; // as rechargeKey
async function withdraw(ev) {
  ev.preventDefault();
  const err = document.getElementById('withdraw-error');
  showError(err, null);
  const amount = ev.target.amount.value.trim();
  if (!MONEY.test(amount) || cents(amount) <= 0)
    return showError(err, { code: 'BAD_REQUEST', message: t('amount') + ': 0.01 .. 999999999999999.99' });
  withdrawKey = withdrawKey || requestKey();
  try {
    await api('POST', '/account/withdrawals', { amount, request: withdrawKey });
    withdrawKey = null;
    ev.target.reset();
    load();
  } catch (e) {
    if (e.status) withdrawKey = null;
    showError(err, e); // INSUFFICIENT_FUNDS over the available cash
  }
}

async function tokens() {
  try {
    const list = await api('GET', '/tokens');
    document.querySelector('#tokens tbody').replaceChildren(...list.map((x) => el('tr', { 'data-test': 'token-row', 'data-id': x.id },
      el('td', { text: x.id }), el('td', { 'data-test': 'token-row-name', text: x.name }), el('td', { text: dateTime(x.created_at) }),
      el('td', { text: x.last_used_at ? dateTime(x.last_used_at) : '—' }),
      el('td', {}, el('button', { type: 'button', 'data-test': 'token-revoke', 'aria-label': t('revoke') + ' ' + x.name,
        text: t('revoke'), onclick: () => revoke(x.id) })))));
  } catch (e) { fail(e); }
}

async function tokenCreate(ev) {
  ev.preventDefault();
  const err = document.getElementById('token-error');
  showError(err, null);
  const name = ev.target.name.value.trim();
  if (!name || new TextEncoder().encode(name).length > 64) return showError(err, { code: 'BAD_REQUEST', message: t('token.name') + ': 1..64 bytes' });
  try {
    const r = await api('POST', '/tokens', { name });
    document.getElementById('token-value').textContent = r.token;
    document.getElementById('token-new').hidden = false;
    ev.target.reset();
    tokens();
  } catch (e) { showError(err, e); }
}

async function revoke(id) {
  const err = document.getElementById('token-error');
  showError(err, null);
  try {
    await api('DELETE', '/tokens/' + encodeURIComponent(id));
    document.getElementById('token-new').hidden = true;
    tokens();
  } catch (e) { showError(err, e); }
}
