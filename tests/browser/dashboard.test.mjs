// The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core)
// against a real coordinator serving HTTPS, with two real C trainers (`blockfed-client join`) over
// ZeroMQ + CURVE on a small generated dataset:
//   - wendy registers in the page, a wrong password shows an inline error, she logs in by keyboard;
//   - a task named `<img src=x onerror=alert(1)>` is created through the form and renders as text
//     (no element, no dialog); its creator cancels it from its page;
//   - a shareholding task is created through the form; alice and bob (CLI accounts with a web
//     password) train it; the accuracy chart gains one point per round without a reload, and the
//     task list in another tab follows it; the contributions are stacked per round when the server
//     sends per-round values (then they add up to the cumulative ones and a `valued` event arrived
//     per round), cumulative otherwise; after settlement the task page shows the result hash, the
//     values and the split, which is the share a shareholder's profile shows;
//   - wendy recharges on her profile (one over the daily cap shows the server's LIMIT), pays for a
//     prediction of a generated PNG, sees the top class, the fee and her balance drop by exactly the
//     fee; a corrupt image shows its error and costs nothing; the shareholder's profile then shows
//     the fees received (table, chart, history);
//   - profile: the language switch, a withdrawal (one over the available cash refused), history
//     paged by seq, an API token created (shown once), used, revoked (then 401); every page fits
//     a phone's width and labels every field;
//   - operator page: a wrong token refused, the one from HOME/operator.token: balances, every
//     ledger check passing, the summary (or, on a server without it, its notice), a deposit;
//   - every UI string the served pages use is in the table in English and Chinese;
//   - logout ends the session: the page's next API call gets 401.
// Screenshots of every page go to OUTDIR; their paths are printed.
// Usage: node dashboard.test.mjs COORDINATOR CLIENT OUTDIR PORT (PORT: HTTPS, PORT+1: ZeroMQ).
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, existsSync, writeFileSync, readFileSync } from 'node:fs';
import { deflateSync } from 'node:zlib';
import { chromium } from 'playwright-core';

const [coord, client, out, port] = process.argv.slice(2);
if (!coord || !client || !out || !port) { console.error('usage: dashboard.test.mjs COORDINATOR CLIENT OUTDIR PORT'); process.exit(2); }
const CHROMIUM = '/usr/bin/chromium';
if (!existsSync(CHROMIUM)) { console.error('FAIL: ' + CHROMIUM + ' is missing (apt-get install chromium)'); process.exit(1); }
const ROUNDS = 3;
const t0 = Date.now();
const work = out + '/browser-run';
rmSync(work, { recursive: true, force: true });
mkdirSync(work + '/data', { recursive: true });
const home = work + '/coordinator';
const ep = 'tcp://127.0.0.1:' + (Number(port) + 1);
const base = 'https://127.0.0.1:' + port;
let failures = 0;
const shots = [];
function check(ok, what) { console.log((ok ? 'ok   ' : 'FAIL ') + what); if (!ok) failures++; }
// Each page shot is also checked for form fields without a label.
async function shot(page, name) {
  const p = out + '/dashboard-' + name + '.png';
  await page.screenshot({ path: p, fullPage: true });
  shots.push(p);
  const bare = await page.$$eval('input, select, textarea', (es) => es.filter((e) => !e.labels?.length && !e.getAttribute('aria-label')).map((e) => e.id || e.name));
  check(bare.length === 0, name + ': every form field has a label' + (bare.length ? ': not ' + bare.join(', ') : ''));
}

// ---- the dataset: 16x16 images of 4 classes, a bright 8x8 square in the class's quadrant -------
function quadrant(c, rnd) {
  const px = Buffer.alloc(256);
  for (let h = 0; h < 16; h++) for (let w = 0; w < 16; w++) {
    const on = (h < 8) === (c < 2) && (w < 8) === (c % 2 === 0);
    px[h * 16 + w] = (on ? 170 : 40) + Math.floor(rnd() * 60);
  }
  return px;
}
function rng(seed) { let s = seed >>> 0; return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32); }
function be32(v) { const b = Buffer.alloc(4); b.writeUInt32BE(v >>> 0); return b; }
function writeSplit(prefix, n, seed) {
  const rnd = rng(seed), labels = Buffer.alloc(n), imgs = [];
  for (let i = 0; i < n; i++) { labels[i] = Math.floor(rnd() * 4); imgs.push(quadrant(labels[i], rnd)); }
  writeFileSync(`${work}/data/${prefix}-images-idx3-ubyte`, Buffer.concat([be32(0x803), be32(n), be32(16), be32(16), ...imgs]));
  writeFileSync(`${work}/data/${prefix}-labels-idx1-ubyte`, Buffer.concat([be32(0x801), be32(n), labels]));
}
writeSplit('train', 1100, 7);
writeSplit('t10k', 200, 8);

// A grayscale PNG (filter 0 per row) of the given 16x16 pixels.
const CRC = Array.from({ length: 256 }, (_, n) => { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; return c >>> 0; });
function crc32(b) { let c = 0xffffffff; for (const x of b) c = CRC[(c ^ x) & 255] ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0; }
function chunk(type, data) { const td = Buffer.concat([Buffer.from(type), data]); return Buffer.concat([be32(data.length), td, be32(crc32(td))]); }
function png(px) {
  const raw = Buffer.alloc(16 * 17);
  for (let h = 0; h < 16; h++) px.copy(raw, h * 17 + 1, h * 16, h * 16 + 16);
  const ihdr = Buffer.concat([be32(16), be32(16), Buffer.from([8, 0, 0, 0, 0])]);
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}
const PNG_CLASS = 2;
writeFileSync(work + '/query.png', png(quadrant(PNG_CLASS, rng(99))));

// ---- the coordinator and the trainers ------------------------------------------------------------
const initOut = execFileSync(coord, ['init', '--home', home]).toString();
const key = (/server public key: (\S{40})/.exec(initOut) || [])[1];
if (!key) { console.log('FAIL init printed no server key: ' + initOut); process.exit(1); }
const srv = spawn(coord, ['run', '--home', home, '--bind', ep, '--dataset', 'tiny=' + work + '/data', '--http', '127.0.0.1:' + port,
  '--block-size', '100', '--blocks-per-join', '3', '--liveness', '30', '--recharge', 'open:50'], { stdio: ['ignore', 'pipe', 'pipe'] });
let log = '';
srv.stdout.on('data', (d) => { log += d; });
srv.stderr.on('data', (d) => { log += d; });
const kids = [];
function cli(user, args, input) { // a blockfed-client command for user's profile; its output
  return execFileSync(client, ['--home', work + '/' + user, ...args], { input: input ?? '', stdio: ['pipe', 'pipe', 'pipe'] }).toString();
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, fn, ms = 30000) {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(100)) if (await fn()) return true;
  throw new Error('timed out: ' + what);
}
const yuan = (c) => Math.floor(c / 100) + '.' + String(c % 100).padStart(2, '0'); // c >= 0
const cents = (s) => { const m = /^(-?)(\d+)\.(\d\d)$/.exec(s); if (!m) throw new Error('not money: ' + s); return (m[1] ? -1 : 1) * (Number(m[2]) * 100 + Number(m[3])); };

let browser;
try {
  await until('the coordinator listens', () => log.includes('HTTPS API on') && log.includes('listening on'), 10000);
  for (const u of ['alice', 'bob']) {
    cli(u, ['register', u, '--coordinator', ep, '--server-key', key]);
    cli(u, ['password'], u + ' password\n'); // their web login (the client sends a hash over CURVE)
  }
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 800 } }); // init's self-signed certificate
  const page = await ctx.newPage();
  const problems = [];
  let dialogs = 0;
  function watch(p) {
    p.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) problems.push(m.text()); });
    p.on('pageerror', (e) => { problems.push('page error: ' + e.message); });
    p.on('dialog', (d) => { dialogs++; d.dismiss(); });
  }
  watch(page);
  const text = (sel) => page.textContent(sel);
  const visible = (sel, p = page) => p.waitForSelector(sel + ':not([hidden])');

  // ---- register, a wrong password, login ----
  await page.goto(base + '/login');
  await page.fill('[data-test=login-username]', 'wendy');
  await page.fill('[data-test=login-password]', 'correct horse');
  await page.click('[data-test=register-submit]');
  await visible('[data-test=login-note]');
  check(true, 'register shows its note');
  await shot(page, 'login');
  await page.fill('[data-test=login-password]', 'wrong horse!');
  await page.click('[data-test=login-submit]');
  const err = await visible('[data-test=login-error]');
  check(/UNAUTHORIZED/.test(await err.textContent()), 'a wrong password shows an inline error: ' + await err.textContent());
  // by keyboard only: Tab from the password field reaches the login button, Enter submits
  await page.fill('[data-test=login-password]', 'correct horse');
  await page.keyboard.press('Tab');
  check(await page.evaluate(() => document.activeElement?.dataset.test === 'login-submit'), 'Tab reaches the login button');
  await page.keyboard.press('Enter');
  await page.waitForURL(base + '/');
  await page.waitForSelector('[data-test=nav-user]');
  check((await text('[data-test=nav-user]')) === 'wendy', 'logged in as wendy');

  // ---- client-side validation, then a hostile name rendered as text, cancelled from its page ----
  await page.fill('[data-test=create-task]', '-bad');
  await page.fill('[data-test=create-name]', 'x');
  await page.click('[data-test=create-submit]');
  const cerr = await visible('[data-test=create-error]');
  check(/A-Z a-z 0-9/.test(await cerr.textContent()), 'a bad task id is refused in the page: ' + await cerr.textContent());
  const hostile = '<img src=x onerror=alert(1)>';
  async function createTask(fields) {
    for (const [k, v] of Object.entries(fields)) {
      const sel = '[name=' + k + ']';
      if ((await page.$eval(sel, (e) => e.tagName)) === 'SELECT') await page.selectOption(sel, v);
      else await page.fill(sel, v);
    }
    await page.click('[data-test=create-submit]');
    const o = await page.waitForSelector('[data-test=create-note]:not([hidden]), [data-test=create-error]:not([hidden])');
    return [await o.getAttribute('data-test'), await o.textContent()];
  }
  const tiny = { model: 'cnn', dataset: 'tiny', mode: 'shareholding', fee: '0.10', batch: '32', round_timeout: '60' };
  let [kind, msg] = await createTask({ ...tiny, task: 'x1', name: hostile, rounds: '1', min_clients: '3' });
  check(kind === 'create-note', 'the hostile-named task is created: ' + msg);
  const row = await page.waitForSelector('[data-test=task-list] tr[data-task=x1]');
  check((await (await row.$('[data-test=task-name]')).textContent()) === hostile, 'the hostile name is shown as text in the list');
  check((await page.$$('[data-test=task-list] img')).length === 0 && dialogs === 0, 'no element or script came from the name');
  check((await (await row.$('[data-test=task-round]')).textContent()) === '0 / 1', 'the list shows round 0 / 1');
  await page.waitForFunction(() => document.querySelector('tr[data-task=x1] [data-test=task-price]')?.textContent.includes('0.10'));
  check(true, 'the list shows the fee');
  await page.click('tr[data-task=x1] a');
  await page.waitForFunction(() => document.querySelector('[data-test=task-state]')?.textContent === 'waiting');
  check((await text('[data-test=task-title]')).startsWith(hostile) && (await page.$$('main img')).length === 0,
    'the task page title is the name as text');
  check(await page.isVisible('[data-test=cancel]'), 'the creator sees the cancel button while waiting');
  await page.click('[data-test=cancel]');
  await page.waitForFunction(() => document.querySelector('[data-test=task-state]')?.textContent === 'cancelled');
  check(dialogs === 0, 'cancel from the page: the state becomes cancelled; no dialog fired');

  // ---- a shareholding task through the form, trained by two C trainers, watched live ----
  await page.goto(base + '/');
  [kind, msg] = await createTask({ ...tiny, task: 't1', name: 'tiny shareholding', rounds: String(ROUNDS), min_clients: '2' });
  check(kind === 'create-note', 'the shareholding task is created through the form: ' + msg);
  await page.waitForSelector('[data-test=task-list] tr[data-task=t1]');
  await shot(page, 'tasks');
  await page.goto(base + '/tasks/t1');
  await page.waitForFunction(() => document.querySelector('[data-test=task-state]')?.textContent === 'waiting');
  // every value the chart's point count takes, recorded in the page as it is set (rounds of this
  // tiny task close faster than a poll from here could see); gone if the page reloads
  await page.evaluate(() => {
    const c = document.querySelector('[data-test=accuracy-chart]');
    window.__points = [];
    new MutationObserver((ms) => { for (const m of ms) window.__points.push(Number(c.dataset.points)); })
      .observe(c, { attributes: true, attributeFilter: ['data-points'] });
  });
  const points = () => page.$eval('[data-test=accuracy-chart]', (c) => Number(c.dataset.points || 0));
  check((await points()) === 0, 'the accuracy chart starts empty');
  // the task list in another tab follows too (its event streams), also without a reload
  const list = await ctx.newPage();
  watch(list);
  await list.goto(base + '/');
  await list.waitForSelector('tr[data-task=t1] [data-test=task-state]');
  await list.evaluate(() => { window.__sameList = true; });
  for (const u of ['alice', 'bob']) {
    const p = spawn(client, ['--home', work + '/' + u, 'join', 't1', '--threads', '1', '--quiet'], { stdio: ['ignore', 'pipe', 'pipe'] });
    p.out = '';
    p.stdout.on('data', (d) => { p.out += d; });
    p.stderr.on('data', (d) => { p.out += d; });
    kids.push(p);
  }
  await until('the first round closes', async () => (await points()) >= 1, 60000);
  await shot(page, 'task-running');
  await until('the task completes', async () => (await text('[data-test=task-state]')) === 'completed', 120000);
  const seen = await page.evaluate(() => window.__points);
  check(JSON.stringify(seen) === JSON.stringify(Array.from({ length: ROUNDS }, (_, i) => i + 1)),
    'the accuracy chart gained one point per round: ' + JSON.stringify(seen));
  check(await page.evaluate(() => Array.isArray(window.__points)), 'without a reload');
  check((await page.$$('[data-test=round-row]')).length === ROUNDS, 'the round log has a line per round');
  await list.waitForFunction((r) => document.querySelector('tr[data-task=t1] [data-test=task-state]')?.textContent === 'completed' &&
    document.querySelector('tr[data-task=t1] [data-test=task-round]')?.textContent === r + ' / ' + r, ROUNDS, { timeout: 15000 });
  check(await list.evaluate(() => window.__sameList === true), 'the task list shows t1 completed, ' + ROUNDS + ' / ' + ROUNDS + ', without a reload');
  await list.close();
  await until('the settled values show', async () => /^[0-9a-f]{64}$/.test(await text('[data-test=result-hash]')), 10000);
  check(true, 'after settlement the result hash shows');
  const parts = await page.$$eval('[data-test=participant-row]', (rs) => rs.map((r) => [r.cells[0].textContent, r.cells[1].textContent]));
  check(parts.length === 2, 'both trainers are listed with their values: ' + JSON.stringify(parts));
  const st0 = await page.evaluate(async () => (await fetch('/api/v1/tasks/t1')).json());
  const status0 = () => st0;
  const kindOfChart = await page.$eval('[data-test=contrib-chart]', (c) => c.dataset.kind + ' ' + c.dataset.bars);
  const hasValues = await page.evaluate(async () => ((await (await fetch('/api/v1/tasks/t1')).json()).history || []).some((h) => Array.isArray(h.values)));
  check(kindOfChart === (hasValues ? 'stacked ' + ROUNDS : 'cumulative 2'), 'the contributions chart: ' + kindOfChart + (hasValues ? ' (per-round values)' : ' (cumulative only)'));
  if (hasValues) { // a valued event per round reached the page; each participant's bars add up to its value
    const valuedEvents = await page.$eval('[data-test=contrib-chart]', (c) => Number(c.dataset.valuedEvents || 0));
    check(valuedEvents === ROUNDS, 'a valued event per round: ' + valuedEvents);
    const sums = await page.evaluate(() => Object.fromEntries(Chart.getChart(document.querySelector('[data-test=contrib-chart]'))
      .data.datasets.map((d) => [d.label, d.data.reduce((a, b) => a + b, 0)])));
    check(status0().participants.every((p) => Math.abs((sums[p.user] ?? NaN) - p.shapley) < 1e-9), 'the stacked bars add up to the cumulative values: ' + JSON.stringify(sums));
  }
  const splits = await page.$$eval('[data-test=participant-row]', (rs) => rs.map((r) => r.querySelector('[data-test=participant-split]')?.textContent));
  check(splits.length === 2 && splits.every((x) => /%$/.test(x || '')), 'the settlement split shows once completed: ' + splits);
  await shot(page, 'task');
  for (const p of kids) await until('a trainer exits', () => p.exitCode !== null, 20000);
  check(kids.every((p) => p.exitCode === 0), 'both trainers finished cleanly');

  // the shareholder with the larger value logs in in a second browser context and sees the shares
  const status = await page.evaluate(async () => (await fetch('/api/v1/tasks/t1')).json());
  const holder = status.participants.slice().sort((a, b) => b.shapley - a.shapley)[0].user;
  const ctx2 = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 390, height: 844 } }); // phone width
  const page2 = await ctx2.newPage();
  watch(page2);
  await page2.goto(base + '/login');
  await page2.fill('[data-test=login-username]', holder);
  await page2.fill('[data-test=login-password]', holder + ' password');
  await page2.click('[data-test=login-submit]');
  await page2.waitForURL(base + '/');
  await page2.goto(base + '/profile');
  const share = await page2.waitForSelector('[data-test=share-row]');
  const ppm = await (await share.$('[data-test=share-ppm]')).textContent();
  check(/%/.test(ppm) && !/^0 %$/.test(ppm), holder + "'s profile shows a share of the task: " + ppm);
  check((await (await share.$('[data-test=share-received]')).textContent()) === '0.00', 'no fees received yet');
  const split = await page.$eval(`[data-test=participant-row][data-user="${holder}"] [data-test=participant-split]`, (e) => e.textContent);
  check(Math.abs(parseFloat(split) - parseFloat(ppm)) < 0.01, `the task page's split for ${holder} (${split}) is the ledger's share (${ppm})`);

  // ---- wendy recharges (and is refused over the cap), then pays for a prediction ----
  await page.goto(base + '/profile');
  await page.fill('[data-test=recharge-amount]', '1000.00');
  await page.click('[data-test=recharge-submit]');
  const rerr = await visible('[data-test=recharge-error]');
  check(/LIMIT/.test(await rerr.textContent()), 'a recharge over the daily cap shows the server\'s refusal: ' + await rerr.textContent());
  await page.fill('[data-test=recharge-amount]', '5.00');
  await page.click('[data-test=recharge-submit]');
  await visible('[data-test=recharge-note]');
  await page.waitForFunction(() => document.querySelector('[data-test=cash]')?.dataset.cash === '5.00');
  check(await page.isHidden('[data-test=recharge-error]'), 'the recharge is credited: cash 5.00');
  const cashBefore = await page.$eval('[data-test=cash]', (e) => e.dataset.cash);
  await page.goto(base + '/predict');
  await page.waitForSelector('[data-test=predict-task] option[value=t1]', { state: 'attached' });
  await page.selectOption('[data-test=predict-task]', 't1');
  await page.waitForFunction(() => document.querySelector('[data-test=predict-price]')?.textContent.includes('0.10'));
  await page.setInputFiles('[data-test=predict-file]', work + '/query.png');
  await page.waitForSelector('[data-test=predict-previews] img');
  await page.click('[data-test=predict-submit]');
  const res = await page.waitForSelector('[data-test=predict-fee]:not([hidden]), [data-test=predict-error]:not([hidden])', { timeout: 30000 });
  check((await res.getAttribute('data-test')) === 'predict-fee', 'the prediction is answered: ' + await res.textContent());
  const topClass = await page.$eval('[data-test=predict-class] .label', (e) => e.textContent);
  const topP = await page.$eval('[data-test=predict-class] meter', (e) => Number(e.value));
  check(topClass === String(PNG_CLASS) && topP > 0.5, 'the top class is the drawn one: ' + topClass + ' p=' + topP);
  const feeLine = await res.textContent();
  const [, fee, balance] = /([\d.]+) yuan\. Balance after: ([\d.,]+) yuan/.exec(feeLine) || [];
  check(fee === '0.10' && cents(balance.replace(/,/g, '')) === cents(cashBefore) - cents(fee),
    `the fee and the balance after: ${cashBefore} - ${fee} = ${balance}`);
  await shot(page, 'predict');
  // a corrupt image: its error shows and it costs nothing
  writeFileSync(work + '/corrupt.png', Buffer.concat([Buffer.from([137, 80, 78, 71]), Buffer.from('not really a png')]));
  await page.setInputFiles('[data-test=predict-file]', work + '/corrupt.png');
  await page.click('[data-test=predict-submit]');
  const ierr = await page.waitForSelector('[data-test=predict-image-error]', { timeout: 30000 });
  const feeLine2 = await text('[data-test=predict-fee]');
  const [, fee2, balance2] = /([\d.]+) yuan\. Balance after: ([\d.,]+) yuan/.exec(feeLine2) || [];
  check(fee2 === '0.00' && balance2 === balance, 'a corrupt image shows its error (' + await ierr.textContent() + ') and costs nothing: ' + feeLine2);
  await page.goto(base + '/profile');
  await page.waitForFunction((b) => document.querySelector('[data-test=cash]')?.dataset.cash === b, balance);
  check(true, 'the profile shows the balance after the fee');
  const usage = await page.$$eval('[data-test=history-row]', (rs) => rs.map((r) => r.dataset.kind));
  check(usage.includes('usage_fee'), 'the history shows the prediction fee: ' + usage.join(','));

  // the language switch: every string from the table, numbers per language; and back
  await page.click('[data-test=lang]');
  await page.waitForFunction(() => document.querySelector('h1')?.textContent === '个人资料');
  check((await text('[data-test=recharge-submit]')) === '充值' && (await page.getAttribute('html', 'lang')) === 'zh-CN', 'the page switches to Chinese');
  await shot(page, 'profile-zh');
  await page.click('[data-test=lang]');
  await page.waitForFunction(() => document.querySelector('h1')?.textContent === 'Profile');

  // a withdrawal: over the available cash refused with the server's error; 1.00 held, pending
  await page.fill('[data-test=withdraw-amount]', '100.00');
  await page.click('[data-test=withdraw-submit]');
  const werr = await visible('[data-test=withdraw-error]');
  check(/INSUFFICIENT_FUNDS/.test(await werr.textContent()), 'a withdrawal over the available cash is refused: ' + await werr.textContent());
  await page.fill('[data-test=withdraw-amount]', '1.00');
  await page.click('[data-test=withdraw-submit]');
  await page.waitForSelector('[data-test=withdrawal-row][data-status=pending]');
  await page.waitForFunction(() => /held 1\.00/.test(document.querySelector('[data-test=cash]')?.textContent || ''));
  check(await page.isHidden('[data-test=withdraw-error]'), 'a withdrawal of 1.00 is pending and held: ' + await text('[data-test=cash]'));

  // history paged by seq: two per page
  await page.goto(base + '/profile?limit=2');
  const seqs = () => page.$$eval('[data-test=history-row]', (rs) => rs.map((r) => Number(r.dataset.seq)));
  await page.waitForSelector('[data-test=history-row]');
  const first = await seqs();
  await page.click('[data-test=history-older]');
  await page.waitForFunction((s) => Number(document.querySelector('[data-test=history-row]')?.dataset.seq) === s, first[1] - 1);
  const second = await seqs();
  check(first.length === 2 && second[0] === first[1] - 1 && second.length === 2, 'history paged: ' + first + ' then ' + second);
  await page.click('[data-test=history-newest]');
  await page.waitForFunction((s) => Number(document.querySelector('[data-test=history-row]')?.dataset.seq) === s, first[0]);
  check(true, 'back to the newest page');

  // an API token: created (shown once), it opens the API, revoked it does not
  await page.fill('[data-test=token-name]', 'my script');
  await page.click('[data-test=token-submit]');
  await visible('[data-test=token-new]');
  const tok = await text('[data-test=token-value]');
  await page.waitForSelector('[data-test=token-row]');
  check(/^bft_/.test(tok) && (await text('[data-test=token-row-name]')) === 'my script', 'a token is created, shown once and listed');
  const withTok = (tk) => page.evaluate(async (tk) => (await fetch('/api/v1/account', { headers: { Authorization: 'Bearer ' + tk }, credentials: 'omit' })).status, tk);
  check((await withTok(tok)) === 200, 'the token opens the API');
  await shot(page, 'profile');
  await page.click('[data-test=token-revoke]');
  await page.waitForFunction(() => !document.querySelector('[data-test=token-row]'));
  check((await withTok(tok)) === 401, 'revoked, it does not');

  // the shareholder's profile shows the fee received: table, chart, history
  await page2.reload();
  const got = await page2.waitForSelector('[data-test=share-received]');
  const received = await got.textContent();
  check(cents(received) > 0 && cents(received) <= 10, holder + ' received part of the fee: ' + received);
  const rev = await page2.$eval('[data-test=revenue-chart]', (c) => [c.dataset.points, c.dataset.total]);
  check(rev[0] === '1' && rev[1] === received, 'the revenue chart has the payout: ' + rev);
  check((await page2.$$('[data-test=history-row][data-kind=fee_payout]')).length === 1, 'the history shows the payout');
  const wide = await page2.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
  check(wide, 'the profile fits a phone-width screen (no page-wide horizontal scroll)');
  await page2.screenshot({ path: out + '/dashboard-profile-shareholder.png', fullPage: true });
  shots.push(out + '/dashboard-profile-shareholder.png');
  for (const path of ['/', '/tasks/t1', '/predict', '/operator']) {
    await page2.goto(base + path);
    await page2.waitForSelector('#nav a');
    await sleep(300); // the page's first API answers drawn
    check(await page2.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1), path + ' fits a phone-width screen');
  }
  await page2.goto(base + '/tasks/t1');
  await page2.waitForSelector('[data-test=round-row]');
  await page2.screenshot({ path: out + '/dashboard-task-phone.png', fullPage: true });
  shots.push(out + '/dashboard-task-phone.png');

  // ---- the operator page ----
  await page.goto(base + '/operator');
  await page.fill('[data-test=op-token]', 'bfs_not_the_operator');
  await page.click('[data-test=op-use]');
  const operr = await visible('[data-test=op-error]');
  check(/UNAUTHORIZED/.test(await operr.textContent()), 'a wrong operator token is refused: ' + await operr.textContent());
  await page.fill('[data-test=op-token]', readFileSync(home + '/operator.token', 'utf8').trim());
  await page.click('[data-test=op-use]');
  await page.waitForSelector('[data-test=balance-row]');
  check(await page.isHidden('[data-test=op-error]'), 'the operator token opens the page');
  await page.click('[data-test=verify]');
  await page.waitForSelector('[data-test=check-row]');
  const checks = await page.$$eval('[data-test=check-row]', (rs) => rs.map((r) => r.dataset.check + '=' + r.dataset.ok));
  check(checks.length > 0 && checks.every((c) => c.endsWith('=true')) && (await text('[data-test=verify-result]')) === 'Every check passed.',
    'ledger verify: ' + checks.join(' '));
  const head = await text('[data-test=verify-head]');
  const sumStatus = await page.evaluate(async (tk) => (await fetch('/api/v1/operator/summary', { headers: { Authorization: 'Bearer ' + tk } })).status,
    readFileSync(home + '/operator.token', 'utf8').trim());
  if (sumStatus === 404) {
    await visible('[data-test=summary-missing]');
    check(true, 'no summary route on this server: the page says so');
  } else {
    await visible('[data-test=summary]');
    check(sumStatus === 200 && (await text('[data-test=summary-head]')) === head, 'the summary shows the chain head ' + head);
    check((await text('#s-withdrawals')) === '1', 'and the pending withdrawal');
  }
  const cashRow = () => page.$eval('[data-test=balance-row][data-currency=CNY][data-kind=user_cash] [data-test=balance-posted]', (e) => e.textContent);
  const usersCash = await cashRow();
  await page.fill('[data-test=deposit-user]', 'wendy');
  await page.fill('[data-test=deposit-amount]', '2.50');
  await page.fill('[data-test=deposit-ref]', 'bank-0001');
  await page.click('[data-test=deposit-submit]');
  const dn = await visible('[data-test=deposit-note]');
  check(/wendy/.test(await dn.textContent()) && (await dn.textContent()).includes(yuan(cents(balance) + 250)),
    'a deposit: ' + await dn.textContent());
  await page.waitForFunction((before) => document.querySelector('[data-test=balance-row][data-currency=CNY][data-kind=user_cash] [data-test=balance-posted]')?.textContent !== before, usersCash);
  check(cents((await cashRow()).replace(/,/g, '')) === cents(usersCash.replace(/,/g, '')) + 250, 'users\' cash rose by the deposit');
  await shot(page, 'operator');

  // ---- every UI string the served pages and scripts use is in the table in both languages ----
  const missing = await page.evaluate(async () => {
    const { known } = await import('/static/i18n.js');
    const files = ['/', '/login', '/tasks/t1', '/predict', '/profile', '/operator'];
    const keys = new Set();
    for (let i = 0; i < files.length; i++) {
      const src = await (await fetch(files[i])).text();
      for (const m of src.matchAll(/data-i18n="([^"]+)"/g)) keys.add(m[1]);
      for (const m of src.matchAll(/\bt\('([^']+)'/g)) keys.add(m[1]);
      for (const m of src.matchAll(/(?:src="\/static\/|from '\.\/)([a-z0-9]+\.js)/g))
        if (m[1] !== 'chart.min.js' && !files.includes('/static/' + m[1])) files.push('/static/' + m[1]);
    }
    return { n: keys.size, files: files.length, missing: [...keys].filter((k) => k !== 'key' && !(known('en', k) && known('zh', k))) };
  });
  check(missing.n > 140 && missing.files === 14 && missing.missing.length === 0,
    `every UI string (${missing.n} keys in ${missing.files} files) has English and Chinese: ` + (missing.missing.join(', ') || 'none missing'));

  // ---- logout ends the session ----
  await page.goto(base + '/');
  await page.click('[data-test=logout]');
  await page.waitForURL(base + '/login');
  const after = await page.evaluate(async () => (await fetch('/api/v1/account')).status);
  check(after === 401, 'after logout the account is 401 (got ' + after + ')');
  await page.goto(base + '/profile');
  await page.waitForURL(base + '/login');
  check(true, 'and the profile page sends to the login page');
  check(dialogs === 0, 'no dialog fired in the whole run');
  check(problems.length === 0, 'no CSP violation or page error: ' + problems.join(' | '));
} catch (e) {
  console.log('FAIL ' + (e.stack || e));
  failures++;
} finally {
  if (browser) await browser.close();
  for (const p of kids) if (p.exitCode === null) p.kill('SIGTERM');
  // waited for, so the next run finds the port free
  const gone = new Promise((r) => srv.once('exit', r));
  const stopAt = Date.now();
  srv.kill('SIGTERM');
  let timer;
  await Promise.race([gone, new Promise((r) => { timer = setTimeout(r, 10000); })]);
  clearTimeout(timer); // a pending timer would keep node running for its 10 s
  console.log('the coordinator ' + (srv.exitCode !== null || srv.signalCode ? 'exited' : 'had not exited') + ' ' +
    ((Date.now() - stopAt) / 1000).toFixed(1) + ' s after SIGTERM');
}
for (const p of shots) console.log('screenshot: ' + p);
console.log('elapsed: ' + ((Date.now() - t0) / 1000).toFixed(1) + ' s');
if (failures) {
  console.log(failures + ' failure(s); coordinator log:\n' + log.slice(-4000));
  for (const p of kids) console.log('trainer output:\n' + (p.out || '').slice(-1500));
  process.exit(1);
}
console.log('all passed');
