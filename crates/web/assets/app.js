// tcpchat in the browser: the chat protocol over a WebSocket to /ws, one line per text
// message (docs/protocol.md, "WebSocket transport"). Plain modern JavaScript, no build step:
// the server embeds this file as it is (crates/web/src/assets.rs says why).
//
// Rooms (docs/protocol.md, "rooms") are conversations beside the direct ones, keyed
// `room #name` (a space cannot be in a user name, so a user called `#name` stays apart).
// The server answers SAY with the sender's own SAID, in the room's order: that echo is the
// message's delivery mark. The rooms the user is in are joined again after a reconnection.
// With `history` (docs/protocol.md, "history"), messages carry the server's time and an
// offset: direct messages kept while a registered user was away arrive at login with their
// own time, a SEND to a registered user who is offline is "queued", a login with a password
// says where it stopped (RESUME, so nothing is lost or shown twice), and a room, on every
// join, shows its newest kept messages (HISTORY, merged by offset). Older pages are not
// fetched: the page shows at most the newest HISTORY_PAGE of a room's kept history.
// Not in the page yet (the terminal client has them): the room list (ROOMS), KICK, and
// paging a room further back (HISTORY <room> BEFORE <offset>).
//
// State lives in `chat` (the conversations, the people online) and is kept in
// sessionStorage, so a reconnection, and a reload of the tab, keeps the page's history.
// A password is kept in memory only, for automatic re-login, never stored.

'use strict';

const EXTENSIONS = ['keepalive', 'presence', 'accounts', 'rooms', 'history'];
const HISTORY_PAGE = 50; // the protocol's page limit
const ROOM = 'room ';
const isRoom = (key) => Boolean(key) && key.startsWith(ROOM);
const roomKey = (name) => ROOM + name;
const roomName = (key) => key.slice(ROOM.length);
const title = (key) => (isRoom(key) ? roomName(key) : key);
// docs/protocol.md, "Room names": '#', then 1 or more bytes of a name, 50 bytes at most.
const validRoom = (name) => /^#[^\s,\p{Cc}]+$/u.test(name) && encoder.encode(name).length <= 50;
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
  conversations: {},   // key -> { messages: [{id, dir, from, text, at, state, reason, off}], unread }
                       // a room's also { room: true, joined, topic, members: [], epoch }
  direct: null,        // { epoch, offset }: how far this account's direct stream was read
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
// HISTORY-OK announces how many stored lines follow it: those are not live.
let history = { room: null, left: 0 };

// ---------- persistence

function save() {
  const { name, conversations, order, current, nextId, direct } = chat;
  try {
    sessionStorage.setItem(STORE_KEY, JSON.stringify({ name, conversations, order, current, nextId, direct }));
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
      chat.direct = s.direct && typeof s.direct.epoch === 'string' ? s.direct : null;
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
  history = { room: null, left: 0 };
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
    // Where this tab stopped reading the account's direct stream; no reply of its own.
    if (chat.direct && chat.offered.has('history')) sendLine(`RESUME ${chat.direct.epoch} ${chat.direct.offset}`);
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
  const sends = pending.filter((p) => p.kind === 'send' || p.kind === 'say');
  sends.forEach((p, i) => {
    const tooLong = ev.code === 1009 && i === sends.length - 1;
    markMessage(p.peer, p.id, 'failed', tooLong ? "too long for this server's line limit" : 'the connection dropped before the server answered');
  });
  pending = [];
  chat.online.clear();
  for (const c of Object.values(chat.conversations)) if (c.room) c.members = [];
  renderOnline();
  renderMessages();
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
    case 'DELIVERY-AT': {
      // <offset> <time> <from> <msg>
      const [off, at, from] = rest.split(' ', 3);
      if (!from) return;
      const offset = Number(off);
      const text = rest.slice(off.length + at.length + from.length + 3);
      if (chat.direct && offset <= chat.direct.offset) return; // had it already
      if (chat.direct) chat.direct.offset = offset;
      receive(from, text, from, Number(at) || Date.now());
      return;
    }
    case 'RESUME-OK': case 'RESUME-EXPIRED': case 'RESUME-EPOCH': {
      const [epoch, top] = rest.split(' ');
      if (word === 'RESUME-EPOCH' || !chat.direct || chat.direct.epoch !== epoch) chat.direct = { epoch, offset: 0 };
      if (word === 'RESUME-OK') chat.direct.offset = Math.max(chat.direct.offset, Number(top) || 0);
      if (word === 'RESUME-EXPIRED') setStatus('Some messages sent to you while you were away had expired.', 'warn');
      save();
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
    case 'JOINED': case 'PARTED': case 'KICKED': case 'TOPIC-IS': case 'SAID': case 'SAID-AT':
      roomLine(word, rest);
      return;
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
      else if (word === 'SEND-QUEUED') markMessage(req.peer, req.id, 'queued', `${req.peer} is offline: it is kept for their next login`);
      else if (word === 'BAD-DEST-USER' || word === 'UNKNOWN') markMessage(req.peer, req.id, 'failed', `${req.peer} is not online`);
      else if (word === 'BAD-RQST-BODY') markMessage(req.peer, req.id, 'failed', 'the server refused this message');
      else markMessage(req.peer, req.id, 'failed', `the server answered ${word}`);
      return;
    case 'join': case 'part': case 'say': case 'topic': case 'members': case 'history':
      roomReply(req, word, rest);
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
      rejoinRooms();
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

function receive(peer, text, from, at = Date.now()) {
  const c = conversation(peer);
  c.messages.push({ id: chat.nextId++, dir: 'in', from: from || peer, text, at });
  if (peer !== chat.current || document.hidden) c.unread += 1;
  touch(peer);
  save();
  renderConversations();
  if (peer === chat.current) renderMessages();
}

function sendMessage(text) {
  const peer = chat.current;
  if (!peer || !text) return false;
  const room = isRoom(peer);
  const line = room ? `SAY ${roomName(peer)} ${text}` : `SEND ${peer} ${text}`;
  if (room && !conversation(peer).joined) {
    setStatus(`You are not in ${roomName(peer)}: join it again first.`, 'warn');
    return false;
  }
  const bytes = encoder.encode(line).length;
  if (bytes > chat.maxLine) {
    setStatus(`Too long: ${bytes - chat.maxLine} bytes over this server's limit.`, 'warn');
    return false;
  }
  const id = chat.nextId++;
  conversation(peer).messages.push({ id, dir: 'out', text, at: Date.now(), state: 'sending' });
  touch(peer);
  if (loggedIn && sendLine(line)) {
    pending.push({ kind: room ? 'say' : 'send', peer, id, room: room ? roomName(peer) : undefined });
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

// ---------- rooms

function room(name) {
  const c = conversation(roomKey(name));
  if (!c.room) Object.assign(c, { room: true, joined: false, topic: null, members: [] });
  if (!Array.isArray(c.members)) c.members = [];
  return c;
}

/** A line about the room itself (someone joined, the topic changed), not a message. */
function notice(name, text) {
  const key = roomKey(name);
  room(name).messages.push({ id: chat.nextId++, dir: 'sys', text, at: Date.now() });
  save();
  if (key === chat.current) renderMessages();
}

function requestRoom(kind, line, name, extra = {}) {
  if (!loggedIn || !chat.offered.has('rooms')) {
    setStatus(loggedIn ? 'This server has no rooms.' : 'Not connected.', 'warn');
    return false;
  }
  if (!sendLine(line)) return false;
  pending.push({ kind, room: name, ...extra });
  return true;
}

function joinRoom(name) {
  if (!validRoom(name)) {
    setStatus('A room name is # and up to 49 more bytes, no spaces or commas.', 'warn');
    return false;
  }
  room(name);
  touch(roomKey(name));
  open(roomKey(name));
  return requestRoom('join', `JOIN ${name}`, name);
}

function partRoom(name) {
  return requestRoom('part', `PART ${name}`, name);
}

function rejoinRooms() {
  if (!chat.offered.has('rooms')) return;
  for (const [key, c] of Object.entries(chat.conversations)) {
    if (isRoom(key) && c.joined) requestRoom('join', `JOIN ${roomName(key)}`, roomName(key), { again: true });
  }
}

/** Whether a room line is the answer the oldest waiting request expects (its own line). */
function answers(kind, name, by) {
  const req = pending[0];
  if (!req || req.kind !== kind || req.room !== name || by !== chat.name) return null;
  return pending.shift();
}

function roomLine(word, rest) {
  const parts = rest.split(' ');
  const name = parts[0];
  if (!name || !validRoom(name)) return;
  const key = roomKey(name);
  const me = chat.name;
  switch (word) {
    case 'JOINED': {
      const who = parts[1];
      const req = answers('join', name, who);
      const c = room(name);
      if (!c.members.includes(who)) c.members.push(who);
      if (who === me) {
        c.joined = true;
        if (!req || !req.again) notice(name, `You joined ${name}`);
        // The member list, kept up to date from here by JOINED, PARTED and KICKED.
        requestRoom('members', `MEMBERS ${name}`, name);
        // What was said while we were away (or before we came): merged by offset.
        if (chat.offered.has('history')) requestRoom('history', `HISTORY ${name} ${HISTORY_PAGE}`, name);
        touch(key);
        renderConversations();
      } else {
        notice(name, `${who} joined`);
      }
      break;
    }
    case 'PARTED': case 'KICKED': {
      const who = parts[1];
      const by = word === 'KICKED' ? parts[2] : null;
      const asked = word === 'PARTED' && answers('part', name, who);
      // Our own PARTED that answers no PART of ours: the server ended this login (it is
      // shutting down), and the connection is closing. We did not leave: join again.
      if (word === 'PARTED' && who === me && !asked) return;
      const c = room(name);
      c.members = c.members.filter((n) => n !== who);
      if (who === me) {
        c.joined = false;
        c.members = [];
        notice(name, by ? `${by} removed you from ${name}` : `You left ${name}`);
      } else {
        notice(name, by ? `${by} removed ${who}` : `${who} left`);
      }
      break;
    }
    case 'TOPIC-IS': {
      const by = parts[1];
      const text = parts.length > 2 ? rest.slice(name.length + by.length + 2) : null;
      answers('topic', name, by);
      const c = room(name);
      const changed = c.topic !== text;
      c.topic = text;
      // A join is followed by the topic for the joiner alone: say it only when it is news.
      if (changed) notice(name, text === null ? `${by} cleared the topic` : `${by} set the topic: ${text}`);
      break;
    }
    case 'SAID': {
      const from = parts[1];
      if (!from) return;
      said(name, from, rest.slice(name.length + from.length + 2), null, Date.now());
      break;
    }
    case 'SAID-AT': {
      // <room> <offset> <time> <from> <msg>
      const [, off, at, from] = parts;
      if (!from) return;
      const text = rest.slice(name.length + off.length + at.length + from.length + 4);
      said(name, from, text, Number(off), Number(at) || Date.now());
      break;
    }
    default:
      return;
  }
  save();
  renderConversations();
  if (key === chat.current) { renderMessages(); setComposer(); }
}

/** A room message: live, our own echo, or (while `history.left`) a stored one. */
function said(name, from, text, off, at) {
  const key = roomKey(name);
  const c = room(name);
  const stored = history.left > 0 && history.room === name;
  if (stored) history.left -= 1;
  if (off !== null && c.messages.some((m) => m.off === off)) return; // had it already
  if (from === chat.name && !stored) {
    // The echo of our own SAY: its delivery mark, in the room's order.
    const req = answers('say', name, from);
    if (req) {
      const m = c.messages.find((x) => x.id === req.id);
      if (m && off !== null) m.off = off;
      markMessage(key, req.id, 'delivered');
      return;
    }
  }
  if (stored && from === chat.name) {
    // One of ours whose echo the connection lost: it did arrive.
    const m = c.messages.find((x) => x.dir === 'out' && x.off === undefined && x.state === 'failed' && x.text === text);
    if (m) { m.off = off; m.state = 'delivered'; m.reason = undefined; return; }
  }
  const m = { id: chat.nextId++, dir: from === chat.name ? 'out' : 'in', from, text, at };
  if (m.dir === 'out') m.state = 'delivered';
  if (off !== null) m.off = off;
  if (stored) {
    // Older than what arrived live since the join: in its place by offset, not unread.
    let i = c.messages.findIndex((x) => x.off !== undefined && x.off > off);
    if (i < 0) {
      // Newer than all we hold: still before the notices (the join) that came after it.
      i = c.messages.length;
      while (i > 0 && c.messages[i - 1].dir === 'sys' && c.messages[i - 1].at > at) i -= 1;
    }
    c.messages.splice(i, 0, m);
  } else {
    c.messages.push(m);
    if (m.dir === 'in' && (key !== chat.current || document.hidden)) c.unread += 1;
    touch(key);
  }
}

const ROOM_REFUSALS = {
  'NOT-MEMBER': 'you are not in that room',
  'NOT-OWNER': "only the room's owner (its longest member) may do that",
  'ROOM-LIMIT': 'you are in as many rooms as this server allows: leave one first',
  'ROOM-FULL': 'the room is full',
  'ROOM-UNAVAILABLE': 'the server cannot reach the room right now: try again',
  'BAD-RQST-BODY': 'the server refused it',
};

/** A reply to a room request that is not the room's own line. */
function roomReply(req, word, rest) {
  const name = req.room;
  if (req.kind === 'history') {
    // HISTORY-OK <stream> <epoch> <top> <n>, then n stored SAID-AT lines.
    if (word !== 'HISTORY-OK') return;
    const [stream, epoch, , n] = rest.split(' ');
    const c = room(name);
    if (stream !== name) return;
    // Another epoch: the stream was reset and the offsets we hold mean nothing.
    if (c.epoch !== epoch) for (const m of c.messages) delete m.off;
    c.epoch = epoch;
    history = { room: name, left: Number(n) || 0 };
    return;
  }
  if (req.kind === 'members') {
    if (word === 'MEMBERS-OK') {
      const names = rest.split(' ')[1];
      room(name).members = names ? names.split(',').filter(Boolean) : [];
      save();
      if (roomKey(name) === chat.current) renderMessages();
    }
    return;
  }
  const why = ROOM_REFUSALS[word] || `the server answered ${word}`;
  if (req.kind === 'say') {
    if (word === 'NOT-MEMBER') { room(name).joined = false; setComposer(); }
    markMessage(roomKey(name), req.id, 'failed', why);
    return;
  }
  if (req.kind === 'join') room(name).joined = false;
  notice(name, `${{ join: 'Joining', part: 'Leaving', topic: 'The topic' }[req.kind]}: ${why}`);
  setStatus(`${name}: ${why}`, 'warn');
  renderMessages();
  setComposer();
}

/** `/join #room`, `/part`, `/topic text` typed in the message box; false if it is a message. */
function command(text) {
  const m = /^\/(\w+)(?:\s+(.*))?$/s.exec(text.trim());
  if (!m) return false;
  const [, word, arg = ''] = m;
  const here = isRoom(chat.current) ? roomName(chat.current) : null;
  switch (word) {
    case 'join': case 'j':
      if (arg) joinRoom(arg.trim());
      else setStatus('Usage: /join #room', 'warn');
      return true;
    case 'part': case 'leave': {
      const name = arg.trim() || here;
      if (name) partRoom(name);
      else setStatus('Usage: /part #room (or in a room: /part)', 'warn');
      return true;
    }
    case 'topic':
      if (!here) setStatus('/topic works in a room', 'warn');
      else if (!arg) setStatus(room(here).topic ? `The topic: ${room(here).topic}` : `${here} has no topic (/topic text sets it, /topic - clears it)`);
      else requestRoom('topic', arg === '-' ? `TOPIC ${here}` : `TOPIC ${here} ${arg}`, here);
      return true;
    default:
      return false; // sent as it is, like any message
  }
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
  const c = ready && chat.conversations[chat.current];
  const gone = ready && c && c.room && !c.joined;
  $('text').disabled = !ready;
  $('send').disabled = !ready;
  const to = title(chat.current);
  $('text').placeholder = !ready ? 'Pick a conversation first'
    : !loggedIn ? `Message ${to} (offline: it will fail)`
      : gone ? `You left ${to}: /join ${to} to come back` : `Message ${to}`;
  const action = $('room-action');
  action.hidden = !(c && c.room);
  if (c && c.room) action.textContent = c.joined ? 'Leave room' : 'Join again';
}

function renderConversations() {
  const list = $('conversations');
  list.replaceChildren();
  let unread = 0;
  for (const peer of chat.order) {
    const c = conversation(peer);
    unread += c.unread;
    const online = chat.online.has(peer);
    const label = `${title(peer)}${c.room ? `, room${c.joined ? '' : ', left'}` : online ? ', online' : ''}${c.unread ? `, ${c.unread} unread` : ''}`;
    const button = el('button', {
      type: 'button', class: 'item', 'aria-label': label,
      'aria-current': peer === chat.current ? 'true' : 'false',
      onclick: () => open(peer),
    },
    c.room ? el('span', { class: c.joined ? 'room-mark on' : 'room-mark', 'aria-hidden': 'true', textContent: '#' })
      : el('span', { class: online ? 'dot on' : 'dot', 'aria-hidden': 'true' }),
    el('span', { class: 'who', textContent: c.room ? title(peer).slice(1) : peer }));
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

const STATE_TEXT = { sending: 'sending…', delivered: 'delivered', queued: 'queued', failed: 'failed' };

function renderMessages() {
  const list = $('messages');
  list.replaceChildren();
  const peer = chat.current;
  const c = peer && conversation(peer);
  $('peer-title').textContent = !peer ? 'Pick someone to talk to'
    : c.room ? title(peer) : `${peer}${chat.online.has(peer) ? ' (online)' : ''}`;
  renderRoomInfo(c);
  if (!peer) return;
  for (const m of c.messages) {
    if (m.dir === 'sys') {
      list.append(el('li', { class: 'msg sys', 'data-id': String(m.id) }, el('p', { class: 'text', textContent: m.text })));
      continue;
    }
    const when = new Date(m.at);
    const time = when.toDateString() === new Date().toDateString()
      ? when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
      : when.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
    const meta = el('span', { class: 'meta' }, el('time', { dateTime: new Date(m.at).toISOString(), textContent: time }));
    if (m.dir === 'out') {
      const state = el('span', { class: `state ${m.state}`, 'data-state': m.state, textContent: STATE_TEXT[m.state] || m.state });
      meta.append(' · ', state);
      if ((m.state === 'failed' || m.state === 'queued') && m.reason) meta.append(el('span', { class: 'reason', textContent: `: ${m.reason}` }));
    }
    const who = m.dir === 'out' ? 'You' : (m.from || peer);
    list.append(el('li', { class: `msg ${m.dir}`, 'data-id': String(m.id) },
      c.room && m.dir === 'in' ? el('span', { class: 'from', textContent: `${who}: ` })
        : el('span', { class: 'sr', textContent: `${who}: ` }),
      el('p', { class: 'text', textContent: m.text }),
      meta));
  }
  list.scrollTop = list.scrollHeight;
}

/** A room's topic and members under the conversation's title; hidden for a direct one. */
function renderRoomInfo(c) {
  const info = $('room-info');
  info.hidden = !(c && c.room);
  if (info.hidden) return;
  $('room-topic').textContent = c.topic ? `Topic: ${c.topic}` : 'No topic';
  const members = c.joined ? c.members : [];
  $('room-members').textContent = c.joined
    ? `${members.length} ${members.length === 1 ? 'member' : 'members'}${members.length ? `: ${members.join(', ')}` : ''}`
    : 'You are not in this room';
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
      chat.conversations = {}; chat.order = []; chat.current = null; chat.direct = null;
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
    // Logging out leaves every room (the server parts a connection that ends).
    for (const c of Object.values(chat.conversations)) if (c.room) { c.joined = false; c.members = []; }
    save();
    showLogin();
    setStatus('Logged out');
  });
  $('send-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('text');
    const text = input.value;
    if (!text.trim()) return;
    // `/join #room` and the other room commands; `//text` sends `/text`.
    if (text.startsWith('/') && !text.startsWith('//') && command(text)) { input.value = ''; return; }
    if (sendMessage(text.startsWith('//') ? text.slice(1) : text)) input.value = '';
  });
  $('join-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    let name = $('join-room').value.trim();
    if (name && !name.startsWith('#')) name = `#${name}`;
    if (name && joinRoom(name)) $('join-room').value = '';
  });
  $('room-action').addEventListener('click', () => {
    const c = chat.current && chat.conversations[chat.current];
    if (!c || !c.room) return;
    const name = roomName(chat.current);
    if (c.joined) partRoom(name); else joinRoom(name);
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
