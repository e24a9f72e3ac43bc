// The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core)
// against a real coordinator serving HTTPS: register, a wrong password's inline error, login,
// a task created through the form shows in the list, a hostile task name renders as text, the task
// page, logout. Usage: node dashboard.test.mjs COORDINATOR OUTDIR PORT. Any failure exits 1.
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, existsSync } from 'node:fs';
import { chromium } from 'playwright-core';

const [coord, out, port] = process.argv.slice(2);
if (!coord || !out || !port) { console.error('usage: dashboard.test.mjs COORDINATOR OUTDIR PORT'); process.exit(2); }
const CHROMIUM = '/usr/bin/chromium';
if (!existsSync(CHROMIUM)) { console.error('FAIL: ' + CHROMIUM + ' is missing (apt-get install chromium)'); process.exit(1); }
const home = out + '/browser-home';
rmSync(home, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
execFileSync(coord, ['init', '--home', home], { stdio: 'ignore' });
const srv = spawn(coord, ['run', '--home', home, '--bind', 'tcp://127.0.0.1:' + (Number(port) + 1), '--insecure',
  '--dataset', 'fashion-mnist=/usr/share/datasets/fashion-mnist', '--http', '127.0.0.1:' + port], { stdio: ['ignore', 'pipe', 'pipe'] });
let log = '';
srv.stdout.on('data', (d) => { log += d; });
srv.stderr.on('data', (d) => { log += d; });
const base = 'https://127.0.0.1:' + port;
let failures = 0;
function check(ok, what) { console.log((ok ? 'ok   ' : 'FAIL ') + what); if (!ok) failures++; }

let browser;
try {
  for (let i = 0; i < 100 && !log.includes('HTTPS API on'); i++) await new Promise((r) => setTimeout(r, 100));
  if (!log.includes('HTTPS API on')) throw new Error('the coordinator did not start:\n' + log);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true }); // init's self-signed certificate
  const page = await ctx.newPage();
  const cspViolations = [];
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
  page.on('pageerror', (e) => { cspViolations.push('page error: ' + e.message); });
  let dialogs = 0;
  page.on('dialog', (d) => { dialogs++; d.dismiss(); });

  // register, then a wrong password, then the right one
  await page.goto(base + '/login');
  await page.fill('[data-test=login-username]', 'wendy');
  await page.fill('[data-test=login-password]', 'correct horse');
  await page.click('[data-test=register-submit]');
  await page.waitForSelector('[data-test=login-note]:not([hidden])');
  check(true, 'register shows its note');
  await page.screenshot({ path: out + '/dashboard-login.png' });
  await page.fill('[data-test=login-password]', 'wrong horse!');
  await page.click('[data-test=login-submit]');
  const err = await page.waitForSelector('[data-test=login-error]:not([hidden])');
  check(/UNAUTHORIZED/.test(await err.textContent()), 'a wrong password shows an inline error: ' + await err.textContent());
  await page.fill('[data-test=login-password]', 'correct horse');
  await page.click('[data-test=login-submit]');
  await page.waitForURL(base + '/');
  await page.waitForSelector('[data-test=nav-user]');
  check((await page.textContent('[data-test=nav-user]')) === 'wendy', 'logged in as wendy');

  // client-side validation: a bad task id is refused before anything is sent
  await page.fill('[data-test=create-task]', '-bad');
  await page.fill('[data-test=create-name]', 'x');
  await page.click('[data-test=create-submit]');
  const cerr = await page.waitForSelector('[data-test=create-error]:not([hidden])');
  check(/A-Z a-z 0-9/.test(await cerr.textContent()), 'a bad task id is refused in the page: ' + await cerr.textContent());

  // a shareholding task through the form; its name is hostile HTML
  const hostile = '<img src=x onerror=alert(1)>';
  await page.fill('[data-test=create-task]', 'fm1');
  await page.fill('[data-test=create-name]', hostile);
  await page.fill('[data-test=create-rounds]', '3');
  await page.selectOption('[data-test=create-mode]', 'shareholding');
  await page.fill('[data-test=create-fee]', '0.10');
  await page.fill('[data-test=create-dataset]', 'fashion-mnist');
  await page.click('[data-test=create-submit]');
  const outcome = await page.waitForSelector('[data-test=create-note]:not([hidden]), [data-test=create-error]:not([hidden])');
  check((await outcome.getAttribute('data-test')) === 'create-note', 'the task is created: ' + await outcome.textContent());
  const row = await page.waitForSelector('[data-test=task-list] tr[data-task=fm1]');
  check((await (await row.$('[data-test=task-name]')).textContent()) === hostile, 'the hostile name is shown as text');
  check((await page.$$('[data-test=task-list] img')).length === 0 && dialogs === 0, 'no element or script came from the name');
  check((await (await row.$('[data-test=task-round]')).textContent()) === '0 / 3', 'the list shows round 0 / 3');
  await page.waitForFunction(() => document.querySelector('tr[data-task=fm1] [data-test=task-price]')?.textContent.includes('0.10'));
  check(true, 'the list shows the fee');
  await page.screenshot({ path: out + '/dashboard-tasks.png', fullPage: true });

  // the task page: state from the event stream
  await page.click('tr[data-task=fm1] a');
  await page.waitForFunction(() => document.querySelector('[data-test=task-state]')?.textContent === 'waiting');
  check((await page.textContent('[data-test=task-title]')).startsWith(hostile), 'the task page title is the name as text');
  check(await page.isVisible('[data-test=cancel]'), 'the creator sees the cancel button while waiting');
  await page.screenshot({ path: out + '/dashboard-task.png', fullPage: true });
  await page.click('[data-test=cancel]');
  await page.waitForFunction(() => document.querySelector('[data-test=task-state]')?.textContent === 'cancelled');
  check(true, 'cancel from the page: the state becomes cancelled');

  await page.goto(base + '/predict');
  await page.waitForSelector('#no-models:not([hidden])');
  check(true, 'predict page: no completed model yet');
  await page.screenshot({ path: out + '/dashboard-predict.png', fullPage: true });

  // logout ends the session: the API refuses the cookie afterwards
  await page.goto(base + '/');
  await page.click('[data-test=logout]');
  await page.waitForURL(base + '/login');
  const after = await page.evaluate(async () => (await fetch('/api/v1/account')).status);
  check(after === 401, 'after logout the account is 401 (got ' + after + ')');
  check(cspViolations.length === 0, 'no CSP violation or page error: ' + cspViolations.join(' | '));
} catch (e) {
  console.log('FAIL ' + (e.stack || e));
  failures++;
} finally {
  if (browser) await browser.close();
  // waited for, so the next run finds the port free
  const gone = new Promise((r) => srv.once('exit', r));
  srv.kill('SIGTERM');
  await Promise.race([gone, new Promise((r) => setTimeout(r, 10000))]);
}
if (failures) { console.log(failures + ' failure(s); coordinator log:\n' + log.slice(-3000)); process.exit(1); }
console.log('all passed; screenshots in ' + out);
