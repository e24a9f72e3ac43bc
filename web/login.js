// Login and register: errors shown inline; a login keeps the user and CSRF token for this tab.
import { api, saveSession, showError, initPage } from './api.js';
import { t } from './i18n.js';

initPage({ needSession: false });
const form = document.getElementById('login-form');
const err = document.getElementById('login-error');
const note = document.getElementById('login-note');

function creds() {
  return { username: form.username.value.trim(), password: form.password.value };
}

function invalid() {
  for (const f of [form.username, form.password])
    if (!f.checkValidity()) return { code: 'BAD_REQUEST', message: f.labels[0].textContent + ': ' + f.validationMessage };
  return null;
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  showError(note, null);
  const bad = invalid();
  if (bad) return showError(err, bad);
  try {
    const c = creds();
    const r = await api('POST', '/auth/login', c);
    saveSession(r.user || c.username, r.csrf);
    location.assign('/');
  } catch (e) { showError(err, e); }
});

document.getElementById('register').addEventListener('click', async () => {
  showError(note, null);
  const bad = invalid();
  if (bad) return showError(err, bad);
  try {
    await api('POST', '/auth/register', creds());
    showError(err, null);
    note.textContent = t('register.done');
    note.hidden = false;
  } catch (e) { showError(err, e); }
});
