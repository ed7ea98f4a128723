// tcpchat in the browser: the chat protocol over a WebSocket to /ws, one line per text
// message (docs/protocol.md, "WebSocket transport"). Plain modern JavaScript, no build step:
// the server embeds this file as it is (crates/web/src/assets.rs says why).
//
// State lives in `chat` (the conversations, the people online) and is kept in
// sessionStorage, so a reconnection, and a reload of the tab, keeps the page's history.
// A password is kept in memory only, for automatic re-login, never stored.

'use strict';

const EXTENSIONS = ['keepalive', 'presence', 'accounts'];
// Part 2 of the extensions (rooms, history) is not on this server build yet. When it is,
// add 'rooms' and 'history' here when EXT-OK offers them and handle their lines in
// `onLine` (ROOMS HOOK): a conversation key would then be "#room" beside a peer's name.
const STORE_KEY = 'tcpchat.v1';
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
const LIST_POLL_MS = 15000; // without the presence extension only

const $ = (id) => document.getElementById(id);
const encoder = new TextEncoder();

const chat = {
  name: null,          // logged in (or logging back in) as
  password: null,      // memory only
  offered: new Set(),  // what EXT-OK gave this connection
  conversations: {},   // peer -> { messages: [{id, dir, text, at, state, reason}], unread }
  order: [],           // peers, most recent activity first
  current: null,       // the peer shown
  online: new Set(),
  nextId: 1,
  maxLine: 4096,
};

let ws = null;
let loggedIn = false;
let wantOnline = false;  // the user joined and did not log out: keep reconnecting
let backoff = BACKOFF_MIN_MS;
let retryTimer = null;
let listTimer = null;
// Requests that get exactly one reply, in order (the server answers in request order).
let pending = [];

// ---------- persistence

function save() {
  const { name, conversations, order, current, nextId } = chat;
  try {
    sessionStorage.setItem(STORE_KEY, JSON.stringify({ name, conversations, order, current, nextId }));
  } catch (_) { /* private mode or full: the page still works, without keeping history */ }
}

function load() {
  try {
    const s = JSON.parse(sessionStorage.getItem(STORE_KEY) || 'null');
    if (s && typeof s === 'object') {
      chat.name = s.name || null;
      chat.conversations = s.conversations || {};
      chat.order = Array.isArray(s.order) ? s.order : [];
      chat.current = s.current || null;
      chat.nextId = s.nextId || 1;
      // A message still "sending" when the page went away may or may not have arrived.
      for (const c of Object.values(chat.conversations)) {
        for (const m of c.messages) {
          if (m.state === 'sending') { m.state = 'failed'; m.reason = 'the page was reloaded before the server answered'; }
        }
      }
    }
  } catch (_) { /* a broken store is an empty one */ }
}

// ---------- protocol

function wsUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

function sendLine(line) {
  if (ws && ws.readyState === WebSocket.OPEN) { ws.send(line); return true; }
  return false;
}

function connect() {
  clearTimeout(retryTimer);
  if (ws) { ws.onclose = null; ws.close(); }
  if (wantOnline) setStatus('Connecting…');
  const socket = new WebSocket(wsUrl(), 'tcpchat');
  ws = socket;
  loggedIn = false;
  pending = [];
  socket.onopen = () => {
    // EXT first; the login follows EXT-OK (a password must wait for it).
    sendLine(`EXT ${EXTENSIONS.join(',')}`);
    pending.push({ kind: 'ext' });
  };
  socket.onmessage = (ev) => { if (typeof ev.data === 'string') onLine(ev.data); };
  socket.onclose = (ev) => { if (ws === socket) onClosed(ev); };
}

function login() {
  if (!chat.name) return;
  if (chat.password && chat.offered.has('accounts')) {
    sendLine(`LOGIN ${chat.name} ${chat.password}`);
  } else {
    sendLine(`HELLO-FROM ${chat.name}`);
  }
  pending.push({ kind: 'login' });
  setStatus('Logging in…');
}

function onClosed(ev) {
  const was = loggedIn;
  loggedIn = false;
  clearInterval(listTimer);
  // Every SEND still waiting lost its answer with the connection; after a 1009 close the
  // last one was the message the server found too long.
  const sends = pending.filter((p) => p.kind === 'send');
  sends.forEach((p, i) => {
    const tooLong = ev.code === 1009 && i === sends.length - 1;
    markMessage(p.peer, p.id, 'failed', tooLong ? "too long for this server's line limit" : 'the connection dropped before the server answered');
  });
  pending = [];
  chat.online.clear();
  renderOnline();
  setComposer();
  if (!wantOnline) { setStatus(''); return; }
  const wait = Math.min(backoff, BACKOFF_MAX_MS) * (0.75 + Math.random() * 0.5);
  backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
  setStatus(`${was ? 'Connection lost' : 'Cannot connect'}; trying again in ${Math.ceil(wait / 1000)} s…`, 'warn');
  retryTimer = setTimeout(connect, wait);
}

function onLine(line) {
  const sp = line.indexOf(' ');
  const word = sp < 0 ? line : line.slice(0, sp);
  const rest = sp < 0 ? '' : line.slice(sp + 1);
  switch (word) {
    case 'DELIVERY': {
      const i = rest.indexOf(' ');
      if (i > 0) receive(rest.slice(0, i), rest.slice(i + 1));
      return;
    }
    case 'ONLINE':
      for (const n of rest.split(',')) if (n) chat.online.add(n);
      renderOnline();
      return;
    case 'ONLINE-DONE':
      return;
    case 'OFFLINE':
      chat.online.delete(rest);
      renderOnline();
      return;
    case 'PING':
      sendLine(rest ? `PONG ${rest}` : 'PONG');
      return;
    case 'PONG':
      return;
    case 'BUSY':
      setStatus('The server is busy; trying again…', 'warn');
      return; // the server closes; onClosed retries
    // ROOMS HOOK: room lines (JOINED, ROOM-DELIVERY, ...) go here when the server offers rooms.
    default:
      break;
  }
  const req = pending.shift();
  if (!req) return; // a reply to nothing: ignore rather than guess
  switch (req.kind) {
    case 'ext':
      chat.offered = new Set(word === 'EXT-OK' && rest ? rest.split(',') : []);
      showPasswordField(chat.offered.has('accounts'));
      if (wantOnline) login();
      return;
    case 'login':
      onLoginReply(word, rest);
      return;
    case 'send':
      if (word === 'SEND-OK') markMessage(req.peer, req.id, 'delivered');
      else if (word === 'BAD-DEST-USER' || word === 'UNKNOWN') markMessage(req.peer, req.id, 'failed', `${req.peer} is not online`);
      else if (word === 'BAD-RQST-BODY') markMessage(req.peer, req.id, 'failed', 'the server refused this message');
      else markMessage(req.peer, req.id, 'failed', `the server answered ${word}`);
      return;
    case 'list':
      if (word === 'LIST-OK') {
        chat.online = new Set(rest.split(',').filter(Boolean));
        renderOnline();
      }
      return;
    default:
      return;
  }
}

function onLoginReply(word, rest) {
  const retryLater = (msg) => {
    // Another session still holds the name (a dropped connection the server has not
    // noticed yet): try again with back-off.
    setStatus(msg, 'warn');
    if (ws) ws.close();
  };
  switch (word) {
    case 'HELLO':
      loggedIn = true;
      backoff = BACKOFF_MIN_MS;
      chat.name = rest;
      save();
      showChat();
      setStatus('Connected', 'ok');
      if (!chat.offered.has('presence')) {
        sendLine('LIST'); pending.push({ kind: 'list' });
        listTimer = setInterval(() => { sendLine('LIST'); pending.push({ kind: 'list' }); }, LIST_POLL_MS);
      }
      return;
    case 'IN-USE':
      // Back in after a drop: the server may not have noticed the old connection yet.
      if (!$('chat-view').hidden) return retryLater('The name is still held by the old connection; trying again…');
      return loginError('That name is in use. Pick another one.');
    case 'NAME-REGISTERED':
      return loginError('That name is registered: enter its password.', 'password');
    case 'NO-ACCOUNT':
      return loginError('No account has that name: leave the password empty to join with it.', 'password');
    case 'BAD-PASSWORD':
      return loginError('Wrong password.', 'password');
    case 'LOCKED':
      return loginError('This account is locked by the operator.');
    case 'THROTTLED':
      return loginError(`Too many attempts: try again in ${rest || 'a few'} s.`);
    case 'NEEDS-TLS':
      return loginError('This server accepts passwords over https:// only.');
    case 'BAD-RQST-BODY':
      return loginError('That name is not allowed: up to 32 characters, no spaces or commas.', 'name');
    default:
      return loginError(`The server answered ${word}.`);
  }
}

function loginError(msg, focus) {
  wantOnline = false;
  if (ws) { ws.onclose = null; ws.close(); ws = null; }
  showLogin();
  $('login-error').textContent = msg;
  setStatus('');
  if (focus) $(focus).focus();
}

// ---------- conversations

function conversation(peer) {
  if (!chat.conversations[peer]) chat.conversations[peer] = { messages: [], unread: 0 };
  return chat.conversations[peer];
}

function touch(peer) {
  chat.order = [peer, ...chat.order.filter((p) => p !== peer)];
}

function receive(peer, text) {
  const c = conversation(peer);
  c.messages.push({ id: chat.nextId++, dir: 'in', text, at: Date.now() });
  if (peer !== chat.current || document.hidden) c.unread += 1;
  touch(peer);
  save();
  renderConversations();
  if (peer === chat.current) renderMessages();
}

function sendMessage(text) {
  const peer = chat.current;
  if (!peer || !text) return false;
  const bytes = encoder.encode(`SEND ${peer} ${text}`).length;
  if (bytes > chat.maxLine) {
    setStatus(`Too long: ${bytes - chat.maxLine} bytes over this server's limit.`, 'warn');
    return false;
  }
  const id = chat.nextId++;
  conversation(peer).messages.push({ id, dir: 'out', text, at: Date.now(), state: 'sending' });
  touch(peer);
  if (loggedIn && sendLine(`SEND ${peer} ${text}`)) {
    pending.push({ kind: 'send', peer, id });
  } else {
    markMessage(peer, id, 'failed', 'not connected', false);
  }
  save();
  renderConversations();
  renderMessages();
  return true;
}

function markMessage(peer, id, state, reason, render = true) {
  const c = chat.conversations[peer];
  const m = c && c.messages.find((x) => x.id === id);
  if (!m) return;
  m.state = state;
  m.reason = reason;
  save();
  if (render && peer === chat.current) renderMessages();
}

function open(peer) {
  if (!peer) return;
  chat.current = peer;
  conversation(peer).unread = 0;
  if (!chat.order.includes(peer)) touch(peer);
  save();
  document.body.classList.remove('show-list');
  $('toggle-list').setAttribute('aria-expanded', 'false');
  renderConversations();
  renderMessages();
  setComposer();
  $('text').focus();
}

function step(delta) {
  if (!chat.order.length) return;
  const i = chat.order.indexOf(chat.current);
  const next = i < 0 ? 0 : (i + delta + chat.order.length) % chat.order.length;
  open(chat.order[next]);
}

// ---------- rendering

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('aria-') || k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

function setStatus(text, kind = '') {
  const s = $('status');
  s.textContent = text;
  s.dataset.kind = kind;
}

function showPasswordField(show) {
  $('password-row').hidden = !show;
}

function showLogin() {
  $('login-view').hidden = false;
  $('chat-view').hidden = true;
  $('logout').hidden = true;
  $('me').hidden = true;
  $('toggle-list').hidden = true;
  if (chat.name) $('name').value = chat.name;
}

function showChat() {
  $('login-view').hidden = true;
  $('chat-view').hidden = false;
  $('logout').hidden = false;
  $('toggle-list').hidden = false;
  $('me').hidden = false;
  $('me').textContent = `Signed in as ${chat.name}`;
  $('login-error').textContent = '';
  renderConversations();
  renderMessages();
  renderOnline();
  setComposer();
}

function setComposer() {
  const ready = Boolean(chat.current);
  $('text').disabled = !ready;
  $('send').disabled = !ready;
  $('text').placeholder = !ready ? 'Pick a conversation first'
    : loggedIn ? `Message ${chat.current}` : `Message ${chat.current} (offline: it will fail)`;
}

function renderConversations() {
  const list = $('conversations');
  list.replaceChildren();
  let unread = 0;
  for (const peer of chat.order) {
    const c = conversation(peer);
    unread += c.unread;
    const online = chat.online.has(peer);
    const label = `${peer}${online ? ', online' : ''}${c.unread ? `, ${c.unread} unread` : ''}`;
    const button = el('button', {
      type: 'button', class: 'item', 'aria-label': label,
      'aria-current': peer === chat.current ? 'true' : 'false',
      onclick: () => open(peer),
    },
    el('span', { class: online ? 'dot on' : 'dot', 'aria-hidden': 'true' }),
    el('span', { class: 'who', textContent: peer }));
    if (c.unread) button.append(el('span', { class: 'badge', textContent: String(c.unread), 'aria-hidden': 'true' }));
    list.append(el('li', {}, button));
  }
  if (!chat.order.length) list.append(el('li', { class: 'empty', textContent: 'No conversations yet' }));
  const badge = $('toggle-unread');
  badge.hidden = unread === 0;
  badge.textContent = String(unread);
  $('toggle-list').setAttribute('aria-label', unread ? `Show conversations, ${unread} unread` : 'Show conversations');
  document.title = unread ? `(${unread}) tcpchat` : 'tcpchat';
}

function renderOnline() {
  const list = $('online');
  list.replaceChildren();
  const names = [...chat.online].filter((n) => n !== chat.name).sort();
  for (const n of names) {
    list.append(el('li', {}, el('button', {
      type: 'button', class: 'item', 'aria-label': `Message ${n}`, onclick: () => open(n),
    }, el('span', { class: 'dot on', 'aria-hidden': 'true' }), el('span', { class: 'who', textContent: n }))));
  }
  if (!names.length) list.append(el('li', { class: 'empty', textContent: loggedIn ? 'Nobody else is online' : '—' }));
  $('online-count').textContent = loggedIn ? `(${names.length})` : '';
  renderConversations();
}

const STATE_TEXT = { sending: 'sending…', delivered: 'delivered', failed: 'failed' };

function renderMessages() {
  const list = $('messages');
  list.replaceChildren();
  const peer = chat.current;
  $('peer-title').textContent = peer ? `${peer}${chat.online.has(peer) ? ' (online)' : ''}` : 'Pick someone to talk to';
  if (!peer) return;
  for (const m of conversation(peer).messages) {
    const time = new Date(m.at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    const meta = el('span', { class: 'meta' }, el('time', { dateTime: new Date(m.at).toISOString(), textContent: time }));
    if (m.dir === 'out') {
      const state = el('span', { class: `state ${m.state}`, 'data-state': m.state, textContent: STATE_TEXT[m.state] || m.state });
      meta.append(' · ', state);
      if (m.state === 'failed' && m.reason) meta.append(el('span', { class: 'reason', textContent: `: ${m.reason}` }));
    }
    list.append(el('li', { class: `msg ${m.dir}`, 'data-id': String(m.id) },
      el('span', { class: 'sr', textContent: m.dir === 'out' ? 'You: ' : `${peer}: ` }),
      el('p', { class: 'text', textContent: m.text }),
      meta));
  }
  list.scrollTop = list.scrollHeight;
}

// ---------- wiring

async function fetchSettings() {
  try {
    const r = await fetch('/settings.json', { cache: 'no-store' });
    const s = await r.json();
    if (Number.isInteger(s.max_line_bytes)) chat.maxLine = s.max_line_bytes;
  } catch (_) { /* the default then */ }
}

function start() {
  load();
  fetchSettings();
  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = $('name').value.trim();
    if (!name) return;
    if (name !== chat.name) {
      // Another user on this tab: their history is not this one's.
      chat.conversations = {}; chat.order = []; chat.current = null;
    }
    chat.name = name;
    chat.password = $('password').value || null;
    $('password').value = '';
    $('login-error').textContent = '';
    wantOnline = true;
    backoff = BACKOFF_MIN_MS;
    if (ws && ws.readyState === WebSocket.OPEN && !pending.length) login();
    else connect();
  });
  $('logout').addEventListener('click', () => {
    wantOnline = false;
    chat.password = null;
    clearTimeout(retryTimer);
    if (ws) { ws.onclose = null; ws.close(1000); ws = null; }
    loggedIn = false;
    chat.online.clear();
    showLogin();
    setStatus('Logged out');
  });
  $('send-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('text');
    const text = input.value;
    if (text.trim() && sendMessage(text)) input.value = '';
  });
  $('new-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const peer = $('new-peer').value.trim();
    if (peer && !/[\s,]/.test(peer)) { $('new-peer').value = ''; open(peer); }
  });
  $('toggle-list').addEventListener('click', () => {
    const shown = document.body.classList.toggle('show-list');
    $('toggle-list').setAttribute('aria-expanded', String(shown));
    // Keyboard users land in the panel they opened.
    if (shown) $('sidebar').querySelector('button, input')?.focus();
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.altKey && (ev.key === 'ArrowUp' || ev.key === 'ArrowDown')) {
      ev.preventDefault();
      step(ev.key === 'ArrowUp' ? -1 : 1);
    } else if (ev.key === 'Escape' && document.body.classList.contains('show-list')) {
      // Phone width: Escape closes the conversation panel, back to its button.
      document.body.classList.remove('show-list');
      $('toggle-list').setAttribute('aria-expanded', 'false');
      $('toggle-list').focus();
    }
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && chat.current) {
      conversation(chat.current).unread = 0;
      save();
      renderConversations();
    }
  });
  window.addEventListener('online', () => { if (wantOnline && !loggedIn) connect(); });

  showLogin();
  showPasswordField(true);
  if (chat.name && chat.order.length) {
    // A reload of a tab that was chatting: back in at once, history and all (a registered
    // name asks for its password again: it was never stored).
    wantOnline = true;
    showChat();
  }
  connect();
}

start();
