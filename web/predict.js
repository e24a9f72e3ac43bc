// A paid prediction: pick a completed task, choose or drop images (previewed from the files themselves),
// POST them as multipart `image` fields with an idempotency key; show each image's top classes
// with probability bars (or its error: a corrupt image costs nothing), the fee and the balance.
import { api, el, showError, initPage, requestKey } from './api.js';
import { t, num, money } from './i18n.js';

const form = document.getElementById('predict-form');
const errNode = document.getElementById('predict-error');
let previews = [];

if (initPage()) {
  load();
  form.task.addEventListener('change', price);
  form.image.addEventListener('change', preview);
  const drop = document.getElementById('drop');
  drop.addEventListener('dragover', (ev) => { ev.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (ev) => { // dropped files become the input's, as if chosen
    ev.preventDefault();
    drop.classList.remove('over');
    if (ev.dataTransfer?.files?.length) { form.image.files = ev.dataTransfer.files; preview(); }
  });
  form.addEventListener('submit', submit);
}

async function load() {
  try {
    const tasks = (await api('GET', '/tasks')).filter((x) => x.state === 'completed');
    form.task.replaceChildren(...tasks.map((x) => el('option', { value: x.task, text: x.name + ' (' + x.task + ')' })));
    document.getElementById('no-models').hidden = tasks.length > 0;
    const want = new URLSearchParams(location.search).get('task');
    if (want && tasks.some((x) => x.task === want)) form.task.value = want;
    price();
  } catch (e) { showError(errNode, e); }
}

async function price() {
  const line = document.getElementById('p-fee');
  line.textContent = '';
  if (!form.task.value) return;
  try {
    const s = await api('GET', '/tasks/' + encodeURIComponent(form.task.value));
    line.textContent = t('fee') + ': ' + money(s.fee) + (s.base_fee !== '0.00' ? ' + ' + money(s.base_fee) : '');
  } catch (e) { showError(errNode, e); }
}

function preview() {
  for (const u of previews) URL.revokeObjectURL(u);
  previews = Array.from(form.image.files, (f) => URL.createObjectURL(f));
  document.getElementById('previews').replaceChildren(...previews.map((u, i) =>
    el('img', { src: u, alt: form.image.files[i].name })));
}

async function submit(ev) {
  ev.preventDefault();
  showError(errNode, null);
  const files = Array.from(form.image.files);
  const top = Number(form.top.value);
  if (!form.task.value) return showError(errNode, { code: 'BAD_REQUEST', message: t('no.models') });
  if (!files.length || files.length > 64) return showError(errNode, { code: 'BAD_REQUEST', message: t('images') + ': 1..64' });
  if (files.some((f) => f.size > 16 << 20)) return showError(errNode, { code: 'TOO_LARGE', message: t('images') + ': ≤ 16 MiB' });
  if (!Number.isInteger(top) || top < 1 || top > 256) return showError(errNode, { code: 'BAD_REQUEST', message: t('top') + ': 1..256' });
  const body = new FormData();
  for (const f of files) body.append('image', f, f.name);
  const result = document.getElementById('result');
  try {
    const r = await api('POST', '/tasks/' + encodeURIComponent(form.task.value) + '/predict?top=' + top, body,
      { 'Idempotency-Key': requestKey() });
    result.replaceChildren(...r.results.map((x, i) => card(files[i], previews[i], x)));
    const fee = document.getElementById('fee-line');
    fee.textContent = t('fee.line', { fee: money(r.fee), balance: money(r.balance) });
    fee.hidden = false;
  } catch (e) { showError(errNode, e); }
}

function card(file, url, x) {
  const head = el('h3', { text: file ? file.name : '' });
  if (x.error) return el('div', { class: 'card', 'data-test': 'predict-image' }, head,
    el('p', { class: 'error', 'data-test': 'predict-image-error', text: t('error') + ': ' + x.error }));
  return el('div', { class: 'card', 'data-test': 'predict-image' }, url ? el('img', { src: url, alt: '' }) : null, head,
    el('ol', { class: 'bars' }, ...x.top.map((c) => el('li', { 'data-test': 'predict-class' },
      el('span', { class: 'label', text: c.label ?? String(c.class) }),
      el('meter', { min: 0, max: 1, value: c.p, title: num(c.p * 100, 1) + '%' }),
      el('span', { class: 'p', text: num(c.p * 100, 1) + '%' })))));
}
