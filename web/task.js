// One task, live: the event stream's first `status` draws everything, each `round` adds a point
// to the accuracy chart and a line to the round log (and the status is read again for the
// participants' values), `valued` brings a round's Shapley values when valuation ran after the
// round closed, `state` and `settled` redraw. The contributions chart stacks each round's values
// per participant when the status carries them (`history[i].values`), else it shows cumulative
// values per participant (servers whose STATUS has only those).
import { api, el, showError, initPage } from './api.js';
import { t, num, money } from './i18n.js';

const FINAL = new Set(['completed', 'cancelled', 'failed']);
const COLOURS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
const id = decodeURIComponent(location.pathname.split('/')[2] || '');
let accChart = null, contribChart = null, es = null;
const rounds = new Map(); // round number -> its history entry (values merged in as they come)
let participants = [];

if (initPage()) {
  accChart = new Chart(document.getElementById('accuracy-chart'), {
    type: 'line',
    data: { labels: [], datasets: [
      { label: t('val_acc'), data: [], yAxisID: 'acc', borderColor: '#1f77b4', backgroundColor: '#1f77b4' },
      { label: t('test_acc'), data: [], yAxisID: 'acc', borderColor: '#2ca02c', backgroundColor: '#2ca02c' },
      { label: t('val_loss'), data: [], yAxisID: 'loss', borderColor: '#d62728', backgroundColor: '#d62728' }] },
    options: { animation: false, responsive: true, maintainAspectRatio: false,
      scales: { acc: { type: 'linear', position: 'left', min: 0, max: 1 }, loss: { type: 'linear', position: 'right', beginAtZero: true, grid: { drawOnChartArea: false },
        ticks: { callback: (v) => (v !== 0 && Math.abs(v) < 0.001 ? v.toExponential(1) : num(v)) } } } },
  });
  contribChart = new Chart(document.getElementById('contrib-chart'), {
    type: 'bar', data: { labels: [], datasets: [] },
    options: { animation: false, responsive: true, maintainAspectRatio: false,
      scales: { x: { stacked: true }, y: { stacked: true } } },
  });
  document.getElementById('cancel').addEventListener('click', cancel);
  connect();
}

function connect() {
  es = new EventSource('/api/v1/tasks/' + encodeURIComponent(id) + '/events');
  document.getElementById('live').textContent = '…';
  es.addEventListener('open', () => { document.getElementById('live').textContent = t('live.on'); });
  es.addEventListener('status', (ev) => render(JSON.parse(ev.data)));
  es.addEventListener('settled', (ev) => render(JSON.parse(ev.data)));
  es.addEventListener('round', (ev) => { addRound(JSON.parse(ev.data)); reload(); });
  es.addEventListener('valued', (ev) => {
    const v = JSON.parse(ev.data);
    const c = document.getElementById('contrib-chart');
    c.dataset.valuedEvents = String(Number(c.dataset.valuedEvents || 0) + 1); // a hook for tests
    const h = rounds.get(v.round);
    if (h) { h.values = v.values; h.valued = true; drawRoundLog(); drawContrib(); }
    reload(); // the participants' cumulative values moved too
  });
  es.addEventListener('state', (ev) => {
    const s = JSON.parse(ev.data);
    setState(s.to);
    if (FINAL.has(s.to)) reload();
  });
  es.onerror = async () => {
    if (es.readyState !== EventSource.CLOSED && !document.getElementById('state').dataset.final) return;
    es.close();
    document.getElementById('live').textContent = t('live.off');
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
    if (es) { es.close(); document.getElementById('live').textContent = t('live.off'); }
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
  participants = st.participants || [];
  const split = st.state === 'completed' ? settlement(participants) : null;
  document.getElementById('split-head').hidden = !split;
  document.querySelector('#participants tbody').replaceChildren(...participants.map((p, i) => el('tr', { 'data-test': 'participant-row', 'data-user': p.user },
    el('td', { text: p.user }), el('td', { text: num(p.shapley, 4) }), el('td', { text: num(p.blocks) }),
    el('td', { text: num(p.samples) }), el('td', { text: num(p.contributed) }), el('td', { text: p.status }),
    split ? el('td', { 'data-test': 'participant-split', text: num(split[i] * 100, 2) + ' %' }) : null)));
  drawContrib();
  setState(st.state);
}

// Each participant's fraction of the settlement (shares, or the reward pool), by the rule of
// docs/COORDINATOR.md: weights are the positive cumulative values in millionths; none positive,
// an equal split among those whose updates counted. The ledger's own figures are on each
// holder's profile; this is the split they follow.
function settlement(parts) {
  const w = parts.map((p) => Math.max(0, Math.round(p.shapley * 1e6)));
  let sum = w.reduce((a, b) => a + b, 0);
  if (!sum) { for (let i = 0; i < w.length; i++) w[i] = parts[i].contributed > 0 ? 1 : 0; sum = w.reduce((a, b) => a + b, 0); }
  return w.map((x) => (sum ? x / sum : 0));
}

// A round's entry from the stream or a status: a new round adds a chart point; a known one only
// takes what is new in it (values and timings arrive after the round closed).
function addRound(h) {
  const known = rounds.get(h.round);
  rounds.set(h.round, known ? { ...known, ...h, values: h.values ?? known.values } : h);
  if (!known) {
    accChart.data.labels.push(String(h.round));
    accChart.data.datasets[0].data.push(h.val_acc);
    accChart.data.datasets[1].data.push(h.test_acc);
    accChart.data.datasets[2].data.push(h.val_loss);
    accChart.update();
    document.getElementById('accuracy-chart').dataset.points = String(accChart.data.labels.length); // a stable hook for tests
  }
  drawRoundLog();
}

const secs = (x) => (typeof x === 'number' ? num(x, 1) : '—');

function drawRoundLog() {
  const list = [...rounds.values()].sort((a, b) => a.round - b.round);
  document.querySelector('#round-log tbody').replaceChildren(...list.map((h) => el('tr', { 'data-round': h.round, 'data-test': 'round-row' },
    el('td', { text: num(h.round) }), el('td', { text: num(h.participants) }), el('td', { text: num(h.samples) }),
    el('td', { text: num(h.val_acc, 4) }), el('td', { text: num(h.val_loss, 4) }), el('td', { text: num(h.test_acc, 4) }),
    el('td', { text: secs(h.seconds) }), el('td', { 'data-test': 'round-aggregate', text: secs(h.aggregate_seconds) }),
    el('td', { 'data-test': 'round-value', text: secs(h.value_seconds) }),
    el('td', { 'data-test': 'round-valued', text: h.valued === undefined ? '—' : h.valued ? t('valued.yes') : t('valued.no') }))));
}

// Stacked per-round values when any round carries them; else cumulative values per participant.
function drawContrib() {
  const list = [...rounds.values()].sort((a, b) => a.round - b.round);
  const canvas = document.getElementById('contrib-chart');
  const perRound = list.some((h) => Array.isArray(h.values));
  if (perRound) {
    const users = [];
    for (const p of participants) if (!users.includes(p.user)) users.push(p.user);
    for (const h of list) for (const v of h.values || []) if (!users.includes(v.user)) users.push(v.user);
    contribChart.data.labels = list.map((h) => t('round') + ' ' + h.round);
    contribChart.data.datasets = users.map((u, i) => ({
      label: u, backgroundColor: COLOURS[i % COLOURS.length], stack: 'shapley',
      data: list.map((h) => { const v = (h.values || []).find((x) => x.user === u); return v ? v.shapley : 0; }) }));
    document.getElementById('contrib-heading').textContent = t('contrib.rounds');
  } else {
    contribChart.data.labels = participants.map((p) => p.user);
    contribChart.data.datasets = [{ label: t('shapley'), data: participants.map((p) => p.shapley), backgroundColor: '#9467bd' }];
    document.getElementById('contrib-heading').textContent = t('contrib.title');
  }
  contribChart.update();
  canvas.dataset.kind = perRound ? 'stacked' : 'cumulative';
  canvas.dataset.bars = String(contribChart.data.labels.length);
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
