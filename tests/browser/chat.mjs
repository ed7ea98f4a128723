// The web page end to end in a real browser (Debian's Chromium, driven by playwright-core):
// a browser user and a `tcpchat connect --plain` user chat both ways, presence shows the
// other come and go, the page survives a server restart with its history, a second browser
// user (at phone width) chats with the first, the three of them talk in a room (joined from
// the page's form and with `/join` in the message box and the terminal; the page joins it
// again after the restart; topic, members, unread count, leaving; a newcomer sees what was
// said before), a message to a registered user who is offline is kept and shown at her
// login (history) and her page logs back in after the restart with RESUME, showing it once,
// a wrong Origin is refused before the upgrade
// and an over-long message is refused without hurting anyone else. Screenshots at 375x740
// and 1280x800 go to docs/screenshots/.
//
// Run by crates/cli/tests/browser.rs (inside `scripts/test.sh`), which passes TCPCHAT_BIN.
// Every wait has a timeout that says what it waited for; nothing is timed.

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const BIN = process.env.TCPCHAT_BIN;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOTS || join(repo, 'docs', 'screenshots');
const PATIENCE = 30_000;

if (!BIN) throw new Error('TCPCHAT_BIN is not set: run this through crates/cli/tests/browser.rs');

const children = new Set();
const dataDir = mkdtempSync(join(tmpdir(), 'tcpchat-browser-'));

function step(what) { console.log(`-- ${what}`); }

/** A child whose output lines are kept and can be waited for. */
function child(args, name, extraEnv = {}) {
  const env = { ...process.env, TCPCHAT_DATA_DIR: dataDir, RUST_LOG: 'info' };
  for (const k of Object.keys(env)) if (k.startsWith('TCPCHAT_') && k !== 'TCPCHAT_DATA_DIR') delete env[k];
  Object.assign(env, extraEnv);
  const proc = spawn(BIN, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(proc);
  const lines = [];
  const waiters = [];
  const take = (stream) => createInterface({ input: stream }).on('line', (raw) => {
    // eslint-disable-next-line no-control-regex
    const line = raw.replace(/\x1b\[[0-9;]*m/g, '');
    lines.push(line);
    for (const w of [...waiters]) if (w.test(line)) { waiters.splice(waiters.indexOf(w), 1); w.done(line); }
  });
  take(proc.stdout);
  take(proc.stderr);
  const exited = new Promise((res) => proc.on('exit', (code, signal) => { children.delete(proc); res({ code, signal }); }));
  return {
    proc, lines, exited,
    /** The first line (already seen or to come) that `test` accepts. */
    waitFor(what, test) {
      const seen = lines.find(test);
      if (seen) return Promise.resolve(seen);
      return new Promise((res, rej) => {
        const timer = setTimeout(() => rej(new Error(`${name}: no ${what} within ${PATIENCE} ms; its output:\n${lines.join('\n')}`)), PATIENCE);
        waiters.push({ test, done: (l) => { clearTimeout(timer); res(l); } });
      });
    },
    type(line) { proc.stdin.write(`${line}\n`); },
  };
}

async function startServer(tcp = '127.0.0.1:0', web = '127.0.0.1:0') {
  const s = child(['serve', '--listen', tcp, '--web-listen', web, '--data-dir', dataDir, '--shutdown-grace', '1s'], 'server');
  const addr = (await s.waitFor('"listening addr="', (l) => /listening addr=/.test(l))).match(/listening addr=(\S+)/)[1];
  const webAddr = (await s.waitFor('"listening web addr="', (l) => /listening web addr=/.test(l))).match(/listening web addr=(\S+)/)[1];
  return { ...s, addr, webAddr };
}

async function stopServer(s) {
  s.proc.kill('SIGTERM');
  const { code } = await s.exited;
  if (code !== 0) throw new Error(`the server exited with ${code}`);
}

function plainUser(server, name) {
  return child(['connect', '--plain', '--name', name, server.addr], `plain ${name}`);
}

/** Resolves when `fn` (run in the page) returns something truthy. */
function until(page, what, fn, arg) {
  return page.waitForFunction(fn, arg, { timeout: PATIENCE }).catch((e) => {
    throw new Error(`browser: ${what} did not happen within ${PATIENCE} ms (${e.message.split('\n')[0]})`);
  });
}

async function join_(page, url, name) {
  await page.goto(url);
  await page.getByLabel('Name', { exact: true }).fill(name);
  await page.getByRole('button', { name: 'Join' }).click();
  await until(page, `${name} logged in`, (n) => document.getElementById('me').textContent === `Signed in as ${n}`, name);
}

const lastMessage = (page) => page.evaluate(() => {
  const items = document.querySelectorAll('#messages .msg');
  const m = items[items.length - 1];
  return m ? { text: m.querySelector('.text').textContent, state: m.querySelector('.state')?.dataset.state, meta: m.querySelector('.meta')?.textContent ?? '' } : null;
});

async function send(page, text) {
  const box = page.getByLabel('Message', { exact: true });
  await box.fill(text);
  await box.press('Enter');
}

function messageShown(page, text, state) {
  return until(page, `message ${JSON.stringify(text)}${state ? ` ${state}` : ''} shown`, ([t, s]) => [...document.querySelectorAll('#messages .msg')]
    .some((m) => m.querySelector('.text').textContent === t && (!s || m.querySelector('.state')?.dataset.state === s)), [text, state]);
}

/** A room message from `from` shown with its sender's name. */
function roomMessageShown(page, from, text) {
  return until(page, `room message ${JSON.stringify(text)} from ${from} shown`, ([f, t]) => [...document.querySelectorAll('#messages .msg.in')]
    .some((m) => m.querySelector('.text').textContent === t && m.querySelector('.from')?.textContent === `${f}: `), [from, text]);
}

/** The status line of a raw HTTP request to /ws with this Origin. */
function upgradeStatus(webAddr, origin) {
  const [host, port] = [webAddr.slice(0, webAddr.lastIndexOf(':')), webAddr.slice(webAddr.lastIndexOf(':') + 1)];
  return new Promise((res, rej) => {
    const req = request({
      host, port, path: '/ws', headers: {
        Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', Origin: origin,
      },
    });
    req.on('response', (r) => { res(r.statusCode); r.resume(); });
    req.on('upgrade', (r, socket) => { res(r.statusCode); socket.destroy(); });
    req.on('error', rej);
    req.setTimeout(PATIENCE, () => rej(new Error('no answer to the upgrade')));
    req.end();
  });
}

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  step('server with --web-listen');
  let server = await startServer();
  const url = `http://${server.webAddr}/`;

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  });
  try {
    // As with no internet: anything the page asks of another host fails, and is a failure.
    const elsewhere = [];
    const offline = async (ctx) => ctx.route('**/*', (route) => {
      const u = new URL(route.request().url());
      if (u.host === server.webAddr) return route.continue();
      elsewhere.push(u.href);
      return route.abort();
    });
    const desktop = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    await offline(desktop);
    const alice = await desktop.newPage();
    const problems = [];
    alice.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    alice.on('console', (m) => { if (m.type() === 'error' && !/WebSocket|ERR_CONNECTION_REFUSED/.test(m.text())) problems.push(`console: ${m.text()}`); });

    step('alice logs in in the browser');
    await join_(alice, url, 'alice');

    step('bob logs in with tcpchat connect --plain; alice sees him online');
    let bob = plainUser(server, 'bob');
    await bob.waitFor('login', (l) => l.includes('logged in to'));
    const bobButton = alice.getByRole('button', { name: 'Message bob' });
    await bobButton.waitFor({ timeout: PATIENCE });

    step('alice -> bob, delivered; bob -> alice');
    await bobButton.click();
    await send(alice, 'hello bob, from the browser – żółw');
    await messageShown(alice, 'hello bob, from the browser – żółw', 'delivered');
    await bob.waitFor('the delivery', (l) => l === '<alice> hello bob, from the browser – żółw');
    bob.type('@alice hi alice,  from the terminal');
    await messageShown(alice, 'hi alice,  from the terminal');

    step('a message to someone offline fails with its reason');
    await alice.getByLabel('Message someone').fill('ghost');
    await alice.getByRole('button', { name: 'Open' }).click();
    await send(alice, 'anyone there?');
    await messageShown(alice, 'anyone there?', 'failed');
    const failed = await lastMessage(alice);
    if (!failed.meta.includes('ghost is not online')) throw new Error(`failed without its reason: ${failed.meta}`);

    step('accounts: a registered name logs in with its password only');
    const dora = child(['connect', '--plain', '--name', 'dora', server.addr], 'plain dora', { TCPCHAT_PASSWORD: 'correct-horse-1' });
    await dora.waitFor('login', (l) => l.includes('logged in to'));
    dora.type('/register');
    await dora.waitFor('registration', (l) => l.includes('your name is registered'));
    dora.type('/quit');
    await dora.exited;
    await alice.getByLabel('Message someone').fill('dora');
    await alice.getByRole('button', { name: 'Open' }).click();
    await send(alice, 'for dora, while she is away');
    await messageShown(alice, 'for dora, while she is away', 'queued');
    const doraCtx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const dora_ = await doraCtx.newPage();
    {
      const page = dora_;
      await page.goto(url);
      await page.getByLabel('Name', { exact: true }).fill('dora');
      await page.getByRole('button', { name: 'Join' }).click();
      await until(page, 'the page asking for the password', () => /registered: enter its password/.test(document.getElementById('login-error').textContent));
      await page.getByLabel(/^Password/).fill('wrong-password');
      await page.getByRole('button', { name: 'Join' }).click();
      await until(page, 'a wrong password refused', () => /Wrong password/.test(document.getElementById('login-error').textContent));
      await page.getByLabel(/^Password/).fill('correct-horse-1');
      await page.getByRole('button', { name: 'Join' }).click();
      await until(page, 'dora logged in with her password', () => document.getElementById('me').textContent === 'Signed in as dora');
      // history: what alice sent while dora was away, kept for her, with its time.
      const kept = page.getByRole('button', { name: 'alice, online, 1 unread' });
      await kept.waitFor({ timeout: PATIENCE });
      await kept.click();
      await messageShown(page, 'for dora, while she is away');
      // RESUME-OK told the page where its direct stream stands: it says so at the next login.
      const direct = await page.evaluate(() => JSON.parse(sessionStorage.getItem('tcpchat.v1')).direct);
      if (!direct || !direct.epoch || direct.offset < 1) throw new Error(`no direct stream position kept: ${JSON.stringify(direct)}`);
    }

    step('rooms: alice joins #lobby from the form, bob with /join; they talk');
    await alice.getByLabel('Join a room').fill('#lobby');
    await alice.getByRole('button', { name: 'Join room' }).click();
    await messageShown(alice, 'You joined #lobby');
    await until(alice, 'the room in the list and the header', () => document.getElementById('peer-title').textContent === '#lobby'
      && [...document.querySelectorAll('#conversations button')].some((b) => b.getAttribute('aria-label') === '#lobby, room'));
    bob.type('/join #lobby');
    await bob.waitFor('bob in the room', (l) => l === 'you joined #lobby');
    await messageShown(alice, 'bob joined');
    await until(alice, 'two members shown', () => document.getElementById('room-members').textContent === '2 members: alice, bob');
    bob.type('hello room,  from the terminal');
    await roomMessageShown(alice, 'bob', 'hello room,  from the terminal');
    await send(alice, 'hi room – żółw');
    await messageShown(alice, 'hi room – żółw', 'delivered');
    await bob.waitFor('the room message', (l) => l === '[#lobby] <alice> hi room – żółw');
    await alice.getByRole('button', { name: 'Message bob' }).click();

    step('keyboard: Alt+Down / Alt+Up switch conversations');
    const title = () => alice.locator('#peer-title').textContent();
    const before = await title();
    await alice.keyboard.press('Alt+ArrowDown');
    const after = await title();
    if (after === before) throw new Error(`Alt+ArrowDown did not switch (${before})`);
    await alice.keyboard.press('Alt+ArrowUp');
    if ((await title()) !== before) throw new Error('Alt+ArrowUp did not come back');

    step('bob leaves and comes back: presence');
    bob.type('/quit');
    await bob.exited;
    await bobButton.waitFor({ state: 'detached', timeout: PATIENCE });
    bob = plainUser(server, 'bob');
    await bobButton.waitFor({ timeout: PATIENCE });

    step('the server restarts: the page reconnects, history kept');
    await bobButton.click();
    await stopServer(server);
    bob.proc.kill('SIGTERM');
    await until(alice, 'the page noticing the drop', () => /lost|Cannot connect|trying again/i.test(document.getElementById('status').textContent));
    server = await startServer(server.addr, server.webAddr);
    await until(alice, 'reconnection', () => document.getElementById('status').textContent === 'Connected');
    await messageShown(alice, 'hello bob, from the browser – żółw', 'delivered');
    await messageShown(alice, 'hi alice,  from the terminal');
    bob = plainUser(server, 'bob');
    await bobButton.waitFor({ timeout: PATIENCE });
    await send(alice, 'back after the restart');
    await messageShown(alice, 'back after the restart', 'delivered');
    await bob.waitFor('the delivery after the restart', (l) => l === '<alice> back after the restart');

    step('dora\'s page logged in again with RESUME: nothing twice, live messages arrive');
    await until(dora_, 'dora reconnected', () => document.getElementById('status').textContent === 'Connected');
    await alice.getByRole('button', { name: /^dora/ }).click();
    await send(alice, 'after the restart, dora');
    await messageShown(alice, 'after the restart, dora', 'delivered');
    await messageShown(dora_, 'after the restart, dora');
    const twice = await dora_.evaluate(() => [...document.querySelectorAll('#messages .msg .text')].filter((e) => e.textContent === 'for dora, while she is away').length);
    if (twice !== 1) throw new Error(`dora's kept message shown ${twice} times after the reconnection`);
    await doraCtx.close();

    step('the page joined #lobby again after the restart; alice sets its topic');
    await alice.getByRole('button', { name: /^#lobby, room/ }).click();
    await until(alice, 'alice back in #lobby alone', () => document.getElementById('room-members').textContent === '1 member: alice');
    bob.type('/join #lobby');
    await until(alice, 'bob in #lobby again', () => document.getElementById('room-members').textContent === '2 members: alice, bob');
    await send(alice, '/topic tea at five');
    await messageShown(alice, 'alice set the topic: tea at five');
    await until(alice, 'the topic in the header', () => document.getElementById('room-topic').textContent === 'Topic: tea at five');
    await send(alice, 'in the room again');
    await messageShown(alice, 'in the room again', 'delivered');
    await bob.waitFor('the room message after the restart', (l) => l === '[#lobby] <alice> in the room again');
    await alice.getByRole('button', { name: 'Message bob' }).click();

    step('a second browser user, at phone width, chats with alice');
    const phone = await browser.newContext({ viewport: { width: 375, height: 740 }, hasTouch: true, isMobile: true });
    await offline(phone);
    const carol = await phone.newPage();
    carol.on('pageerror', (e) => problems.push(`page error (carol): ${e.message}`));
    await carol.goto(url);
    await carol.getByRole('button', { name: 'Join' }).waitFor({ timeout: PATIENCE });
    await carol.screenshot({ path: join(SHOTS, 'phone-375x740-login.png') });
    await join_(carol, url, 'carol');
    await carol.getByRole('button', { name: /^Show conversations/ }).click();
    await carol.getByRole('button', { name: 'Message alice' }).click();
    await send(carol, 'hi alice, carol here');
    await messageShown(carol, 'hi alice, carol here', 'delivered');
    const carolConversation = alice.getByRole('button', { name: /^carol, online, 1 unread$/ });
    await carolConversation.waitFor({ timeout: PATIENCE });
    await carolConversation.click();
    await messageShown(alice, 'hi alice, carol here');
    await send(alice, 'hello carol!');
    await messageShown(carol, 'hello carol!');
    await send(carol, 'see you');
    await messageShown(alice, 'see you');

    step('carol joins #lobby with /join typed in the message box: topic, members, unread');
    await send(carol, '/join #lobby');
    await messageShown(carol, 'You joined #lobby');
    await roomMessageShown(carol, 'bob', 'hello room,  from the terminal'); // history
    await until(carol, 'the topic and three members', () => document.getElementById('room-topic').textContent === 'Topic: tea at five'
      && document.getElementById('room-members').textContent === '3 members: alice, bob, carol');
    await send(carol, 'hello everyone');
    await messageShown(carol, 'hello everyone', 'delivered');
    await bob.waitFor('carol in the room', (l) => l === '[#lobby] <carol> hello everyone');
    const lobbyUnread = alice.getByRole('button', { name: '#lobby, room, 1 unread' });
    await lobbyUnread.waitFor({ timeout: PATIENCE });
    await lobbyUnread.click();
    await roomMessageShown(alice, 'carol', 'hello everyone');
    await carol.screenshot({ path: join(SHOTS, 'phone-375x740-room.png') });
    await alice.screenshot({ path: join(SHOTS, 'desktop-1280x800-room.png') });
    await carol.getByRole('button', { name: 'Leave room' }).click();
    await messageShown(carol, 'You left #lobby');
    await messageShown(alice, 'carol left');
    await until(alice, 'two members again', () => document.getElementById('room-members').textContent === '2 members: alice, bob');
    await send(carol, '/part');
    await messageShown(carol, 'Leaving: you are not in that room');
    if ((await carol.getByRole('button', { name: 'Join again' }).count()) !== 1) throw new Error('no "Join again" button in a room carol left');
    await carol.getByRole('button', { name: /^Show conversations/ }).click();
    await carol.getByRole('button', { name: /^alice/ }).click();
    await alice.getByRole('button', { name: /^carol/ }).click();

    step('a wrong Origin is refused before the upgrade; the page\'s own is not');
    const evil = await upgradeStatus(server.webAddr, 'http://evil.example');
    if (evil !== 403) throw new Error(`a foreign origin got ${evil}, not 403`);
    const own = await upgradeStatus(server.webAddr, `http://${server.webAddr}`);
    if (own !== 101) throw new Error(`the page's own origin got ${own}, not 101`);

    step('an over-long message is refused (1009) and the others carry on');
    const code = await alice.evaluate(() => new Promise((res) => {
      const s = new WebSocket(`ws://${location.host}/ws`);
      s.onopen = () => { s.send('HELLO-FROM mallory'); s.send(`SEND alice ${'x'.repeat(100_000)}`); };
      s.onclose = (ev) => res(ev.code);
    }));
    if (code !== 1009) throw new Error(`the over-long message closed with ${code}, not 1009`);
    await send(carol, 'still here?');
    await messageShown(alice, 'still here?');
    await send(alice, 'yes');
    await messageShown(alice, 'yes', 'delivered');
    await messageShown(carol, 'yes');
    const noMallory = await alice.evaluate(() => ![...document.querySelectorAll('#conversations .who')].some((e) => e.textContent === 'mallory'));
    if (!noMallory) throw new Error('mallory\'s refused message reached alice');

    step('screenshots');
    await bob.waitFor('bob online', (l) => l.includes('logged in to'));
    await alice.getByRole('button', { name: /^bob/ }).first().click();
    await alice.screenshot({ path: join(SHOTS, 'desktop-1280x800.png') });
    await carol.screenshot({ path: join(SHOTS, 'phone-375x740.png') });
    await carol.getByRole('button', { name: /^Show conversations/ }).click();
    await carol.screenshot({ path: join(SHOTS, 'phone-375x740-conversations.png') });

    step('keyboard at phone width: the list opened from its button takes focus, Escape closes it');
    const toggle = carol.getByRole('button', { name: /^Show conversations/ });
    await carol.keyboard.press('Escape');
    await until(carol, 'Escape closing the list', () => !document.body.classList.contains('show-list')
      && document.activeElement === document.getElementById('toggle-list'));
    if ((await toggle.getAttribute('aria-expanded')) !== 'false') throw new Error('the closed list is still aria-expanded');
    await carol.keyboard.press('Enter');
    await until(carol, 'Enter on the button opening the list, focus inside it', () => document.body.classList.contains('show-list')
      && document.getElementById('sidebar').contains(document.activeElement));
    await carol.keyboard.press('Escape');
    await until(carol, 'Escape closing it again', () => !document.body.classList.contains('show-list'));

    if (elsewhere.length) throw new Error(`the page asked other hosts for: ${elsewhere.join(', ')}`);
    if (problems.length) throw new Error(`the page reported problems:\n${problems.join('\n')}`);
    step('done');
  } finally {
    await browser.close();
    for (const c of children) c.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  }
}

main().then(() => process.exit(0), (e) => {
  console.error(`FAILED: ${e.stack || e}`);
  for (const c of children) c.kill('SIGKILL');
  process.exit(1);
});
