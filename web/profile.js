// The account: cash (available and held), coins, shares with the fees received, and the newest
// page of the transaction history with before/after balances.
import { api, el, showError, initPage } from './api.js';
import { t, num, money } from './i18n.js';

if (initPage()) load();

async function load() {
  try {
    const a = await api('GET', '/account');
    document.getElementById('cash').textContent =
      money(a.cash) + ' (' + t('available') + ' ' + money(a.cash_available) + ', ' + t('held') + ' ' + money(a.cash_held) + ')';
    document.getElementById('coins').textContent = num(a.coins);
    document.querySelector('#shares tbody').replaceChildren(...(a.shares || []).map((s) => el('tr', {},
      el('td', { text: s.task_ledger_id }), el('td', { text: num(s.ppm) }), el('td', { text: money(s.received) }))));
    const h = await api('GET', '/account/history?limit=50');
    document.querySelector('#history tbody').replaceChildren(...(Array.isArray(h) ? h : h.entries || []).map((x) =>
      el('tr', {}, el('td', { text: x.seq }), el('td', { text: new Date(x.time * 1000).toLocaleString() }),
        el('td', { text: x.kind }), el('td', { text: x.currency }), el('td', { text: money(x.amount) }),
        el('td', { text: money(x.before) }), el('td', { text: money(x.after) }))));
  } catch (e) { showError(document.getElementById('profile-error'), e); }
}
