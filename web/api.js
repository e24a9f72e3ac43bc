// The dashboard's one way to the server: the JSON API under /api/v1 with the session cookie
// (HttpOnly, set by login) and, on changes, the login's CSRF token, kept with the user name in
// localStorage: like the cookie, it serves every tab of this origin (a page opened in a new tab
// is still logged in) until logout or a 401 clears it. Also the navigation bar every page shares.
import { t, applyI18n, lang, setLang } from './i18n.js';

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

export function session() {
  return { user: localStorage.getItem('bf.user'), csrf: localStorage.getItem('bf.csrf') };
}
export function saveSession(user, csrf) { localStorage.setItem('bf.user', user); localStorage.setItem('bf.csrf', csrf); }
export function clearSession() { localStorage.removeItem('bf.user'); localStorage.removeItem('bf.csrf'); }

// method, path under /api/v1, an object for a JSON body or a FormData; answers the parsed JSON.
// A 401 (no or an expired session) goes to the login page, unless the call brings its own
// credential (the operator page's bearer token: its 401 is the page's to show).
export async function api(method, path, body, headers = {}) {
  const h = { ...headers };
  if (method !== 'GET') {
    const { csrf } = session();
    if (csrf) h['X-CSRF-Token'] = csrf;
  }
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) { payload = JSON.stringify(body); h['Content-Type'] = 'application/json'; }
  const resp = await fetch('/api/v1' + path, { method, headers: h, body: payload, credentials: 'same-origin' });
  let data = null;
  try { data = await resp.json(); } catch { data = null; }
  if (!resp.ok) {
    const e = data && data.error ? data.error : { code: 'HTTP_' + resp.status, message: resp.statusText };
    if (resp.status === 401 && !path.startsWith('/auth/') && !headers.Authorization) { clearSession(); location.assign('/login'); }
    throw new ApiError(resp.status, e.code, e.message);
  }
  return data;
}

// A fresh idempotency key for one money-moving action (a retry of the same action reuses it).
export function requestKey() {
  const b = crypto.getRandomValues(new Uint8Array(32));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

// Builds an element: el('td', {class: 'x', 'data-test': 'y'}, 'text', child...). Strings become
// text nodes, so nothing from users is ever parsed as HTML.
export function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}

export function showError(node, err) {
  node.textContent = err ? (err.code ? err.code + ': ' : '') + err.message : '';
  node.hidden = !err;
}

// The shared header; pages that need a session call it first (no session: to the login page).
export function initPage({ needSession = true } = {}) {
  const { user } = session();
  if (needSession && !user) { location.assign('/login'); return false; }
  const nav = document.getElementById('nav');
  if (nav) {
    nav.replaceChildren(
      el('a', { href: '/', class: 'brand', text: t('app') }),
      ...(user ? [el('a', { href: '/', text: t('dashboard') }), el('a', { href: '/predict', text: t('predict') }),
        el('a', { href: '/profile', 'data-test': 'nav-profile', text: t('profile') }),
        el('span', { class: 'who', 'data-test': 'nav-user', text: user }),
        el('button', { type: 'button', 'data-test': 'logout', text: t('logout'), onclick: logout })] : []),
      el('a', { href: '/operator', 'data-test': 'nav-operator', text: t('operator') }),
      el('button', { type: 'button', class: 'lang', 'data-test': 'lang', text: t('language'),
        onclick: () => { setLang(lang() === 'zh' ? 'en' : 'zh'); location.reload(); } }));
  }
  applyI18n();
  return true;
}

async function logout() {
  try { await api('POST', '/auth/logout'); } catch { /* the session is gone either way */ }
  clearSession();
  location.assign('/login');
}
