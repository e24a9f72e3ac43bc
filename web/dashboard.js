// The task list (live: an event stream per unfinished task, up to MAX_STREAMS, refreshes it; a
// slow poll catches new tasks) and the create-task form, validated here as the protocol does.
import { api, el, showError, initPage, requestKey } from './api.js';
import { t, num, money } from './i18n.js';

const MAX_STREAMS = 4;       // a browser keeps 6 connections per host; leave room for the API
const POLL_MS = 10000;
const FINAL = new Set(['completed', 'cancelled', 'failed']);
const streams = new Map();   // task -> EventSource
const prices = new Map();    // task -> "fee / pool" text (not in the list: read from its status)

if (initPage()) {
  refresh();
  setInterval(refresh, POLL_MS);
  document.getElementById('create-form').addEventListener('submit', create);
}

let pending = null;
function refreshSoon() { clearTimeout(pending); pending = setTimeout(refresh, 200); }

async function refresh() {
  const errNode = document.getElementById('list-error');
  let tasks;
  try { tasks = await api('GET', '/tasks'); showError(errNode, null); } catch (e) { return showError(errNode, e); }
  const list = Array.isArray(tasks) ? tasks : tasks.tasks || [];
  const body = document.querySelector('#task-list tbody');
  body.replaceChildren(...list.map(row));
  document.getElementById('no-tasks').hidden = list.length > 0;
  for (const tk of list) {
    if (!prices.has(tk.task)) fetchPrice(tk.task);
    if (!FINAL.has(tk.state) && !streams.has(tk.task) && streams.size < MAX_STREAMS) watch(tk.task);
  }
}

function row(tk) {
  return el('tr', { 'data-task': tk.task },
    el('td', {}, el('a', { href: '/tasks/' + encodeURIComponent(tk.task), text: tk.task })),
    el('td', { 'data-test': 'task-name', text: tk.name }),
    el('td', { 'data-test': 'task-state', class: 'state ' + tk.state, text: tk.state }),
    el('td', { 'data-test': 'task-round', text: num(tk.round) + ' / ' + num(tk.rounds) }),
    el('td', { text: num(tk.participants) }),
    el('td', { text: tk.mode }),
    el('td', { 'data-test': 'task-price', text: prices.get(tk.task) || '' }));
}

async function fetchPrice(task) {
  prices.set(task, '');
  try {
    const s = await api('GET', '/tasks/' + encodeURIComponent(task));
    prices.set(task, s.mode === 'reward' ? money(s.pool) : money(s.fee) + ' ' + t('per.image'));
    const cell = document.querySelector(`tr[data-task="${CSS.escape(task)}"] [data-test="task-price"]`);
    if (cell) cell.textContent = prices.get(task);
  } catch { prices.delete(task); }
}

function watch(task) {
  const es = new EventSource('/api/v1/tasks/' + encodeURIComponent(task) + '/events');
  streams.set(task, es);
  for (const kind of ['round', 'state', 'settled']) es.addEventListener(kind, refreshSoon);
  es.addEventListener('state', (ev) => {
    try { if (FINAL.has(JSON.parse(ev.data).to)) stop(task); } catch { /* refreshed anyway */ }
  });
  es.onerror = () => { if (es.readyState === EventSource.CLOSED) stop(task); };
}
function stop(task) { const es = streams.get(task); if (es) es.close(); streams.delete(task); }

// The protocol's ranges (docs/PROTOCOL.md section 5, TASK_CREATE); the server checks them again.
const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
const MONEY = /^\d{1,15}(\.\d{1,2})?$/;
const ints = { rounds: [1, 10000], min_clients: [1, 10000], local_epochs: [1, 100], batch: [1, 1024],
  round_timeout: [1, 86400], value_images: [100, 100000], own_data_cap: [1, 1e9] };

export function taskRequest(form) {
  const v = (k) => form.elements[k].value.trim();
  const req = {};
  const bad = (k, why) => { throw { code: 'BAD_REQUEST', message: t(k) + ': ' + why }; };
  for (const k of ['task', 'dataset']) {
    if (!v(k) || v(k).length > 64 || !NAME.test(v(k))) bad(k, '1..64 of A-Z a-z 0-9 _ . -, not starting with . or -');
    req[k] = v(k);
  }
  if (!v('name') || v('name').length > 128) bad('name', '1..128');
  req.name = v('name');
  if (v('description')) req.description = v('description');
  if (new TextEncoder().encode(v('description')).length > 1024) bad('description', '≤ 1024 bytes');
  req.model = v('model');
  req.mode = v('mode');
  for (const [k, [lo, hi]] of Object.entries(ints)) {
    if (v(k) === '') { if (k === 'value_images' || k === 'own_data_cap') continue; bad(k, lo + '..' + hi); }
    const n = Number(v(k));
    if (!Number.isInteger(n) || n < lo || n > hi) bad(k, lo + '..' + hi);
    req[k] = n;
  }
  const lr = Number(v('lr'));
  if (!(lr > 0 && lr <= 10)) bad('lr', '(0, 10]');
  req.lr = lr;
  for (const k of ['fee', 'pool', 'base_fee']) {
    if (v(k) === '') continue;
    if (!MONEY.test(v(k))) bad(k, '0.00 .. 999999999999999.99');
    req[k] = v(k);
  }
  if (req.mode === 'reward' && !req.pool) bad('pool', t('mode') + ' reward');
  if (v('rate')) {
    if (!/^(\d{1,20}\/[1-9]\d{0,19}|\d{1,4}(\.\d{1,6})?)$/.test(v('rate'))) bad('rate', 'N/D or a decimal 0..1000');
    req.rate = v('rate');
  }
  if (!/^(iid|dirichlet:\d+(\.\d+)?)$/.test(v('partition'))) bad('partition', 'iid or dirichlet:ALPHA');
  req.partition = v('partition');
  req.strategy = v('strategy');
  if (v('mu') !== '') {
    const mu = Number(v('mu'));
    if (!(mu >= 0 && mu <= 100)) bad('mu', '[0, 100]');
    req.mu = mu;
  }
  if (v('seed') !== '') {
    if (!/^\d{1,20}$/.test(v('seed')) || BigInt(v('seed')) >= 2n ** 64n) bad('seed', '0..2^64-1');
    req.seed = Number(v('seed'));
  }
  return req;
}

let createKey = null; // kept across retries of one submission, new once it succeeded
async function create(ev) {
  ev.preventDefault();
  const form = ev.target;
  const errNode = document.getElementById('create-error');
  const note = document.getElementById('create-note');
  note.hidden = true;
  showError(errNode, null); /* an earlier submission's error is not this one's */
  let req;
  try { req = taskRequest(form); } catch (e) { return showError(errNode, e); }
  createKey = createKey || requestKey();
  req.request = createKey;
  try {
    await api('POST', '/tasks', req);
    createKey = null;
    showError(errNode, null);
    note.textContent = t('created');
    note.hidden = false;
    refresh();
  } catch (e) {
    if (e.status) createKey = null; // answered: a retry is a new request (network errors keep the key)
    showError(errNode, e);
  }
}
