// One task, live: the event stream's first `status` draws everything, each `round` adds a point
// to the accuracy chart and a line to the round log (and the status is read again for the
// participants' Shapley values, which STATUS carries cumulatively), `state` and `settled` redraw.
import { api, el, showError, initPage } from './api.js';
import { t, num, money } from './i18n.js';

const FINAL = new Set(['completed', 'cancelled', 'failed']);
const id = decodeURIComponent(location.pathname.split('/')[2] || '');
let accChart = null, contribChart = null, es = null;
const seen = new Set(); // round numbers drawn

if (initPage()) {
  accChart = new Chart(document.getElementById('accuracy-chart'), {
    type: 'line',
    data: { labels: [], datasets: [
      { label: t('val_acc'), data: [], yAxisID: 'acc', borderColor: '#1f77b4', backgroundColor: '#1f77b4' },
      { label: t('test_acc'), data: [], yAxisID: 'acc', borderColor: '#2ca02c', backgroundColor: '#2ca02c' },
      { label: t('val_loss'), data: [], yAxisID: 'loss', borderColor: '#d62728', backgroundColor: '#d62728' }] },
    options: { animation: false, responsive: true, maintainAspectRatio: false,
      scales: { acc: { type: 'linear', position: 'left', min: 0, max: 1 }, loss: { type: 'linear', position: 'right', grid: { drawOnChartArea: false } } } },
  });
  contribChart = new Chart(document.getElementById('contrib-chart'), {
    type: 'bar', data: { labels: [], datasets: [{ label: t('shapley'), data: [], backgroundColor: '#9467bd' }] },
    options: { animation: false, responsive: true, maintainAspectRatio: false },
  });
  document.getElementById('cancel').addEventListener('click', cancel);
  connect();
}

function connect() {
  es = new EventSource('/api/v1/tasks/' + encodeURIComponent(id) + '/events');
  document.getElementById('live').textContent = '…';
  es.addEventListener('open', () => { document.getElementById('live').textContent = 'on'; });
  es.addEventListener('status', (ev) => render(JSON.parse(ev.data)));
  es.addEventListener('settled', (ev) => render(JSON.parse(ev.data)));
  es.addEventListener('round', (ev) => { addRound(JSON.parse(ev.data)); reload(); });
  es.addEventListener('state', (ev) => {
    const s = JSON.parse(ev.data);
    setState(s.to);
    if (FINAL.has(s.to)) reload();
  });
  es.onerror = async () => {
    if (es.readyState !== EventSource.CLOSED && !document.getElementById('state').dataset.final) return;
    es.close();
    document.getElementById('live').textContent = 'off';
    if (!document.getElementById('state').dataset.final) reload(); // a 404 or a lost session shows its error
  };
}

async function reload() {
  try { render(await api('GET', '/tasks/' + encodeURIComponent(id))); showError(document.getElementById('task-error'), null); }
  catch (e) { showError(document.getElementById('task-error'), e); }
}

function setState(state) {
  const s = document.getElementById('state');
  s.textContent = state;
  s.className = 'state ' + state;
  if (FINAL.has(state)) {
    s.dataset.final = '1';
    if (es) { es.close(); document.getElementById('live').textContent = 'off'; }
  }
  document.getElementById('cancel').hidden = !(state === 'waiting' || state === 'running');
}

function render(st) {
  document.title = 'BlockFed: ' + st.task;
  document.getElementById('title').textContent = st.name + ' (' + st.task + ')';
  document.getElementById('desc').textContent = st.description || '';
  document.getElementById('round').textContent = num(st.round) + ' / ' + num(st.rounds);
  document.getElementById('mode').textContent = st.mode + ', ' + st.model + ', ' + st.dataset + ', ' + st.strategy;
  document.getElementById('price').textContent = st.mode === 'reward' ? money(st.pool) : money(st.fee) + ' ' + t('per.image');
  document.getElementById('hash').textContent = st.result_hash || '—';
  for (const h of st.history || []) addRound(h);
  const parts = st.participants || [];
  document.querySelector('#participants tbody').replaceChildren(...parts.map((p) => el('tr', {},
    el('td', { text: p.user }), el('td', { text: num(p.shapley, 4) }), el('td', { text: num(p.blocks) }),
    el('td', { text: num(p.samples) }), el('td', { text: num(p.contributed) }), el('td', { text: p.status }))));
  contribChart.data.labels = parts.map((p) => p.user);
  contribChart.data.datasets[0].data = parts.map((p) => p.shapley);
  contribChart.update();
  setState(st.state);
}

function addRound(h) {
  if (seen.has(h.round)) return;
  seen.add(h.round);
  accChart.data.labels.push(String(h.round));
  accChart.data.datasets[0].data.push(h.val_acc);
  accChart.data.datasets[1].data.push(h.test_acc);
  accChart.data.datasets[2].data.push(h.val_loss);
  accChart.update();
  const canvas = document.getElementById('accuracy-chart');
  canvas.dataset.points = String(accChart.data.labels.length); // a stable hook for tests
  document.querySelector('#round-log tbody').append(el('tr', { 'data-round': h.round },
    el('td', { text: num(h.round) }), el('td', { text: num(h.participants) }), el('td', { text: num(h.samples) }),
    el('td', { text: num(h.val_acc, 4) }), el('td', { text: num(h.val_loss, 4) }), el('td', { text: num(h.test_acc, 4) }),
    el('td', { text: num(h.seconds, 1) })));
}

async function cancel() {
  const note = document.getElementById('cancel-note');
  try {
    await api('POST', '/tasks/' + encodeURIComponent(id) + '/cancel');
    note.textContent = t('cancelled');
    note.hidden = false;
    reload();
  } catch (e) { showError(document.getElementById('task-error'), e); }
}
