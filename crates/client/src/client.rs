//! The glue between the two machines: typed input and server events in, effects out.
//!
//! [`Client`] owns a [`Session`] (the protocol) and a [`Conversations`] (what the user
//! reads). It parses what the user typed into session calls and conversation changes, and
//! turns each event the session reports into entries and notices; every effect is then passed
//! on unchanged, so the plain mode prints the same events the UI draws from the model. It is
//! as pure as the two it joins: no I/O, time passed in as `now`.

use std::time::Instant;

use tcpchat_proto::{Extension, ExtensionSet, Stream, Username};

use crate::account::{AccountOp, AccountReply, PasswordPrompt, Secret};
use crate::command::{self, TopicArg, UserCommand};
use crate::conversations::{Buffer, Conversations, Older, Target};
use crate::rooms::{RoomEvent, RoomOp, RoomRefusal};
use crate::session::HistoryNote;
use crate::session::{one_line, Config, Delivery, Effect, Event, Phase, Session, Undelivered};

/// The client: a session and its conversations. See the module documentation.
#[derive(Debug)]
pub struct Client {
    session: Session,
    chats: Conversations,
    /// `/register`, `/password` or `/unregister` collecting its passwords.
    account: Option<AccountPrompt>,
    /// What the status buffer last said about the server's extensions.
    told_extensions: Option<ExtensionSet>,
}

/// An account command asking for its passwords, one prompt at a time.
#[derive(Debug)]
struct AccountPrompt {
    op: AccountOp,
    step: PasswordPrompt,
    current: Option<Secret>,
    new: Option<Secret>,
}

impl Client {
    /// A client that has not started yet; call [`Client::start`].
    pub fn new(config: Config) -> Self {
        Self {
            session: Session::new(config),
            chats: Conversations::new(),
            account: None,
            told_extensions: None,
        }
    }

    /// Begins: connects when the name is known, asks for it otherwise.
    pub fn start(&mut self, now: Instant) -> Vec<Effect> {
        let effects = self.session.start();
        self.absorb(effects, now)
    }

    // ---- inputs -------------------------------------------------------------------------

    /// The connection asked for by [`Effect::Connect`] is open.
    pub fn handle_connected(&mut self, now: Instant) -> Vec<Effect> {
        let effects = self.session.handle_connected(now);
        self.absorb(effects, now)
    }

    /// The connection asked for by [`Effect::Connect`] could not be opened.
    pub fn handle_connect_failed(&mut self, reason: &str, now: Instant) -> Vec<Effect> {
        let effects = self.session.handle_connect_failed(reason, now);
        self.absorb(effects, now)
    }

    /// Bytes from the server, cut anywhere.
    pub fn handle_bytes(&mut self, bytes: &[u8], now: Instant) -> Vec<Effect> {
        let effects = self.session.handle_bytes(bytes, now);
        self.absorb(effects, now)
    }

    /// The server closed the connection, or it broke.
    pub fn handle_closed(&mut self, reason: &str, now: Instant) -> Vec<Effect> {
        let effects = self.session.handle_closed(reason, now);
        self.absorb(effects, now)
    }

    /// The user leaves (Ctrl-C, like `/quit`): at once, whatever is pending.
    pub fn handle_quit(&mut self, now: Instant) -> Vec<Effect> {
        let effects = self.session.handle_quit();
        self.absorb(effects, now)
    }

    /// The plain mode's input ended; see [`Session::handle_end_of_input`].
    pub fn handle_end_of_input(&mut self, now: Instant) -> Vec<Effect> {
        let effects = self.session.handle_end_of_input(now);
        self.absorb(effects, now)
    }

    /// Time passed; call at [`Client::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Effect> {
        let effects = self.session.handle_timeout(now);
        self.absorb(effects, now)
    }

    /// When [`Client::handle_timeout`] wants to be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }

    /// A line the user typed.
    pub fn handle_input(&mut self, line: &str, now: Instant) -> Vec<Effect> {
        if *self.session.phase() == Phase::Done || self.session.is_quitting() {
            return Vec::new();
        }
        if self.password_prompt().is_some() {
            let typed = line.trim_end_matches(['\r', '\n']);
            return self.password_typed(typed, now);
        }
        let parsed = command::parse(line);
        let mut effects = Vec::new();
        if let Phase::NeedName(_) = self.session.phase() {
            match parsed {
                Ok(UserCommand::Quit) => effects = self.session.handle_quit(),
                Ok(UserCommand::Help) => effects.push(Effect::Show(Event::Help)),
                Ok(UserCommand::Nothing) => {}
                _ => effects = self.session.handle_name(line.trim(), now),
            }
            return self.absorb(effects, now);
        }
        match parsed {
            Ok(UserCommand::Nothing) => {}
            Ok(UserCommand::Say(text)) => match &self.chats.open_buffer().target {
                Target::Peer(to) => {
                    let to = to.clone();
                    return self.send(to, &text, now);
                }
                Target::Room(room) => {
                    let room = room.clone();
                    let text = one_line(&text);
                    let id = self.session.next_msg_id();
                    self.chats.room_outgoing(&room, id, &text, now);
                    effects = self.session.room_request(RoomOp::Say { room, text }, now);
                }
                Target::Status => effects.push(Effect::Show(Event::Notice(
                    "no conversation is open: type @user message, /query user or /join #room \
                     first"
                        .into(),
                ))),
            },
            Ok(UserCommand::Msg { to, text }) => {
                self.chats.open_peer(&to);
                return self.send(to, &text, now);
            }
            Ok(UserCommand::Query(to)) => {
                self.chats.open_peer(&to);
                effects.push(Effect::Show(Event::Opened(to)));
            }
            Ok(UserCommand::Close) => self.chats.close_open(),
            Ok(UserCommand::Who) => effects = self.session.who(now),
            Ok(UserCommand::Quit) => effects = self.session.handle_quit(),
            Ok(UserCommand::Help) => effects.push(Effect::Show(Event::Help)),
            Ok(UserCommand::Register) => effects = self.begin_account(AccountOp::Register),
            Ok(UserCommand::ChangePassword) => {
                effects = self.begin_account(AccountOp::ChangePassword);
            }
            Ok(UserCommand::Unregister) => effects = self.begin_account(AccountOp::Unregister),
            Ok(UserCommand::Join(room)) => {
                self.chats.open_room(&room);
                effects = self.session.room_request(RoomOp::Join(room), now);
            }
            Ok(UserCommand::Part(room)) => match room.or_else(|| self.open_room()) {
                Some(room) => effects = self.session.room_request(RoomOp::Part(room), now),
                None => effects.push(not_in_a_room("/part #room")),
            },
            Ok(UserCommand::Rooms) => effects = self.session.room_request(RoomOp::List, now),
            Ok(UserCommand::Members(room)) => match room.or_else(|| self.open_room()) {
                Some(room) => effects = self.session.room_request(RoomOp::Members(room), now),
                None => effects.push(not_in_a_room("/members #room")),
            },
            Ok(UserCommand::Topic(arg)) => match (self.open_room(), arg) {
                (None, _) => effects.push(not_in_a_room("/topic in a room's conversation")),
                (Some(room), TopicArg::Show) => {
                    let text = match &self.chats.open_buffer().topic {
                        Some(topic) => format!("the topic of {room}: {topic}"),
                        None => format!("{room} has no topic (/topic text sets one)"),
                    };
                    effects.push(Effect::Show(Event::Notice(text)));
                }
                (Some(room), TopicArg::Set(text)) => {
                    let text = Some(one_line(&text));
                    effects = self.session.room_request(RoomOp::Topic { room, text }, now);
                }
                (Some(room), TopicArg::Clear) => {
                    let op = RoomOp::Topic { room, text: None };
                    effects = self.session.room_request(op, now);
                }
            },
            Ok(UserCommand::Kick(name)) => match self.open_room() {
                Some(room) => {
                    effects = self.session.room_request(RoomOp::Kick { room, name }, now);
                }
                None => effects.push(not_in_a_room("/kick in a room's conversation")),
            },
            Err(err) => effects.push(Effect::Show(Event::Notice(err.to_string()))),
        }
        self.absorb(effects, now)
    }

    /// What the next input line is asked for, when it is a password: the UI masks it and
    /// keeps it out of the history. `None` for ordinary input.
    pub fn password_prompt(&self) -> Option<PasswordPrompt> {
        if let Phase::NeedPassword(name) = self.session.phase() {
            return Some(PasswordPrompt::Login(name.clone()));
        }
        self.account.as_ref().map(|a| a.step.clone())
    }

    /// A password for the open prompt from somewhere other than the keyboard (the plain
    /// mode's `--password-fd` or `TCPCHAT_PASSWORD`).
    pub fn supply_password(&mut self, secret: Secret, now: Instant) -> Vec<Effect> {
        let effects = if self.account.is_some() {
            self.account_step(secret, now)
        } else {
            self.session.handle_secret(secret, now)
        };
        self.absorb(effects, now)
    }

    /// Gives up the open password prompt (an empty line does the same).
    pub fn cancel_password(&mut self, now: Instant) -> Vec<Effect> {
        let effects = match self.account.take() {
            Some(prompt) => vec![Effect::Show(Event::Notice(format!(
                "{} cancelled",
                prompt.op
            )))],
            None => self.session.cancel_password(),
        };
        self.absorb(effects, now)
    }

    /// Restores what a previous run left (the state file): the rooms to join, the resume
    /// points and the conversations with their unread counts. Call before [`Client::start`].
    pub fn restore(&mut self, restored: crate::state::Restored) {
        self.session
            .restore(restored.positions, restored.joined.clone());
        for room in &restored.joined {
            self.chats.restore(Target::Room(room.clone()), 0);
        }
        for (target, unread) in restored.conversations {
            self.chats.restore(target, unread);
        }
    }

    /// The user scrolled past the top of the open conversation: ask the server for the
    /// page before its oldest line (a room's stream, or the direct stream for a peer), once
    /// at a time, and not when the beginning was reached.
    pub fn load_older(&mut self, now: Instant) -> Vec<Effect> {
        let buffer = self.chats.open_buffer();
        if buffer.older != Older::Unknown {
            return Vec::new();
        }
        let stream = match &buffer.target {
            Target::Status => return Vec::new(),
            // Only an account has a direct stream.
            Target::Peer(_) if !self.session.is_account() => return Vec::new(),
            Target::Peer(_) => Stream::Direct,
            Target::Room(room) => Stream::Room(room.clone()),
        };
        if !self.session.has(Extension::History) {
            return Vec::new();
        }
        let effects = self.session.load_older(stream, now);
        self.absorb(effects, now)
    }

    /// A remark in the status buffer (a warning from the run loop, such as a state file
    /// that was ignored).
    pub fn status_notice(&mut self, text: &str, now: Instant) {
        self.chats.status_notice(text, now);
    }

    // ---- the view's side ----------------------------------------------------------------

    /// The protocol session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The conversation model.
    pub fn conversations(&self) -> &Conversations {
        &self.chats
    }

    pub fn phase(&self) -> &Phase {
        self.session.phase()
    }

    /// The name we are (or will be) logged in as.
    pub fn name(&self) -> Option<&Username> {
        self.session.name()
    }

    pub fn is_connected(&self) -> bool {
        self.session.is_connected()
    }

    /// Who was online at the last answer to `LIST`, sorted; `None` before the first.
    pub fn online(&self) -> Option<&[Username]> {
        self.session.online()
    }

    pub fn is_quitting(&self) -> bool {
        self.session.is_quitting()
    }

    /// The conversations, the status buffer first, then in the order they were opened.
    pub fn buffers(&self) -> &[Buffer] {
        self.chats.buffers()
    }

    /// The index in [`Client::buffers`] of the open conversation.
    pub fn open_index(&self) -> usize {
        self.chats.open_index()
    }

    pub fn open_buffer(&self) -> &Buffer {
        self.chats.open_buffer()
    }

    /// Opens conversation `index` (clamped) and clears its unread count.
    pub fn select(&mut self, index: usize) {
        self.chats.select(index);
    }

    // ---- internals ----------------------------------------------------------------------

    /// The room whose conversation is open, if it is one.
    fn open_room(&self) -> Option<tcpchat_proto::RoomName> {
        match &self.chats.open_buffer().target {
            Target::Room(room) => Some(room.clone()),
            _ => None,
        }
    }

    fn record_room(&mut self, event: &RoomEvent, now: Instant) {
        let me = self.session.name().cloned();
        let mine = |n: &tcpchat_proto::Username| me.as_ref() == Some(n);
        let text = crate::rooms::describe(event, me.as_ref());
        let chats = &mut self.chats;
        match event {
            RoomEvent::Said {
                room,
                from,
                text,
                at,
            } if mine(from) && at.is_none_or(|a| a.live) => {
                let fallback = self.session.next_msg_id();
                self.chats.room_echo(room, text, fallback, *at, now);
            }
            RoomEvent::Said {
                room,
                from,
                text,
                at,
            } if mine(from) => {
                // One of ours from the history: shown as sent, in its place.
                let id = self.session.next_msg_id();
                chats.room_sent_earlier(room, id, text, *at, now);
            }
            RoomEvent::Said {
                room,
                from,
                text,
                at,
            } => chats.room_message(room, from, text, *at, now),
            RoomEvent::Joined { room, name } => {
                chats.room_notice(room, &text, mine(name), now);
                chats.member_joined(room, name);
            }
            RoomEvent::Topic {
                room, text: topic, ..
            } => {
                chats.room_notice(room, &text, false, now);
                chats.set_topic(room, topic.clone());
            }
            RoomEvent::Parted { room, name } | RoomEvent::Kicked { room, name, .. } => {
                chats.room_notice(room, &text, false, now);
                chats.member_left(room, name, mine(name));
            }
            RoomEvent::Members { room, names } => {
                chats.set_members(room, names);
                if !chats.room_notice(room, &text, false, now)
                    || chats.open_buffer().target != Target::Room(room.clone())
                {
                    chats.notice(&text, now);
                }
            }
            RoomEvent::Refused {
                op: RoomOp::Say { room, text: said },
                why,
            } => {
                let state = Delivery::NotDelivered(match why {
                    RoomRefusal::TooLong => Undelivered::TooLong,
                    RoomRefusal::NotOffered | RoomRefusal::Busy => Undelivered::NotSent,
                    RoomRefusal::Unanswered => Undelivered::Unconfirmed,
                    _ => Undelivered::Refused,
                });
                if !chats.room_refused(room, said, state) {
                    chats.notice(&text, now);
                } else {
                    chats.room_notice(room, &text, false, now);
                }
            }
            RoomEvent::Refused {
                op: RoomOp::Join(room),
                ..
            } => {
                if let Some(me) = &me {
                    chats.member_left(room, me, true);
                }
                chats.notice(&text, now);
            }
            RoomEvent::Rooms(_) | RoomEvent::Refused { .. } => chats.notice(&text, now),
        }
    }

    fn record_history(&mut self, note: &HistoryNote, now: Instant) {
        let chats = &mut self.chats;
        // The conversations a stream's older lines belong to: a room's own, or, for the
        // direct stream, which mixes every peer, each peer's.
        let targets = |chats: &Conversations, stream: &Stream| -> Vec<Target> {
            match stream {
                Stream::Room(room) => vec![Target::Room(room.clone())],
                Stream::Direct => chats
                    .buffers()
                    .iter()
                    .filter(|b| matches!(b.target, Target::Peer(_)))
                    .map(|b| b.target.clone())
                    .collect(),
            }
        };
        let mark = |chats: &mut Conversations, stream: &Stream, older: Older| {
            for t in targets(chats, stream) {
                chats.set_older(&t, older);
            }
        };
        match note {
            HistoryNote::CaughtUp => {}
            HistoryNote::Expired | HistoryNote::Reset => {
                chats.status_notice(&note.to_string(), now);
                if chats.open_index() != 0 {
                    chats.notice(&note.to_string(), now);
                }
            }
            HistoryNote::Loading(stream) => mark(chats, stream, Older::Loading),
            HistoryNote::Loaded { stream, beginning } => {
                let older = if *beginning {
                    Older::Beginning
                } else {
                    Older::Unknown
                };
                mark(chats, stream, older);
            }
            HistoryNote::CatchUpCut { room, .. } => {
                chats.room_notice(room, &note.to_string(), true, now);
            }
            HistoryNote::Unavailable(stream) => {
                mark(chats, stream, Older::Unknown);
                chats.notice(&note.to_string(), now);
            }
        }
    }

    fn password_typed(&mut self, typed: &str, now: Instant) -> Vec<Effect> {
        if self.account.is_none() {
            let effects = self.session.handle_password(typed, now);
            return self.absorb(effects, now);
        }
        if typed.is_empty() {
            return self.cancel_password(now);
        }
        let effects = match Secret::parse(typed) {
            Ok(secret) => self.account_step(secret, now),
            Err(err) => {
                let step = self.account.as_ref().map(|a| a.step.clone());
                let mut effects = vec![Effect::Show(Event::Notice(format!("not used: {err}")))];
                effects.extend(step.map(|s| Effect::Show(Event::PasswordNeeded(s))));
                effects
            }
        };
        self.absorb(effects, now)
    }

    fn begin_account(&mut self, op: AccountOp) -> Vec<Effect> {
        if *self.session.phase() != Phase::Online || !self.session.has(Extension::Accounts) {
            let reply = AccountReply::Unavailable;
            return vec![Effect::Show(Event::Account { op, reply })];
        }
        let step = match op {
            AccountOp::Register => PasswordPrompt::New,
            AccountOp::ChangePassword | AccountOp::Unregister => PasswordPrompt::Current,
        };
        self.account = Some(AccountPrompt {
            op,
            step: step.clone(),
            current: None,
            new: None,
        });
        vec![Effect::Show(Event::PasswordNeeded(step))]
    }

    /// One password for the account command in progress: the next prompt, or the request.
    fn account_step(&mut self, secret: Secret, now: Instant) -> Vec<Effect> {
        let Some(mut prompt) = self.account.take() else {
            return Vec::new();
        };
        let next = match prompt.step {
            PasswordPrompt::Current if prompt.op == AccountOp::Unregister => {
                return self.session.unregister(&secret, now);
            }
            PasswordPrompt::Current => {
                prompt.current = Some(secret);
                PasswordPrompt::New
            }
            PasswordPrompt::New | PasswordPrompt::Login(_) => {
                prompt.new = Some(secret);
                PasswordPrompt::Again
            }
            PasswordPrompt::Again => {
                let same = prompt.new.as_ref() == Some(&secret);
                match (same, prompt.op, prompt.current.take()) {
                    (true, AccountOp::Register, _) => return self.session.register(secret, now),
                    (true, AccountOp::ChangePassword, Some(old)) => {
                        return self.session.change_password(&old, secret, now);
                    }
                    (true, _, current) => {
                        prompt.current = current;
                        return Vec::new();
                    }
                    (false, _, current) => {
                        prompt.current = current;
                        prompt.new = None;
                        prompt.step = PasswordPrompt::New;
                        self.account = Some(prompt);
                        return vec![
                            Effect::Show(Event::Notice(
                                "the two passwords differ; type the new one again".into(),
                            )),
                            Effect::Show(Event::PasswordNeeded(PasswordPrompt::New)),
                        ];
                    }
                }
            }
        };
        prompt.step = next.clone();
        self.account = Some(prompt);
        vec![Effect::Show(Event::PasswordNeeded(next))]
    }

    fn send(&mut self, to: Username, text: &str, now: Instant) -> Vec<Effect> {
        let text = one_line(text);
        let (id, effects) = self.session.send(to.clone(), &text, now);
        self.chats.outgoing(&to, id, &text, now);
        self.absorb(effects, now)
    }

    /// Records what the session reported in the conversations; returns the effects unchanged.
    fn absorb(&mut self, effects: Vec<Effect>, now: Instant) -> Vec<Effect> {
        for effect in &effects {
            if let Effect::Show(event) = effect {
                self.record(event, now);
            }
        }
        effects
    }

    fn record(&mut self, event: &Event, now: Instant) {
        let chats = &mut self.chats;
        match event {
            Event::NameNeeded(Some(problem)) => {
                chats.status_notice(&format!("{problem}; type another name"), now);
            }
            Event::LoggedIn { name, again } => {
                let text = if *again {
                    format!("reconnected as {name}")
                } else {
                    format!("logged in as {name}")
                };
                chats.status_notice(&text, now);
                if *again && chats.open_index() != 0 {
                    chats.notice(&text, now);
                }
            }
            Event::Message { from, text, at } => chats.incoming_at(from, text, *at, now),
            Event::Kept { id, to, text } => {
                if !chats.set_state(to, *id, Delivery::Kept) {
                    chats.status_notice(
                        &format!(
                            "queued for {to} (offline, delivered at their next login): {text}"
                        ),
                        now,
                    );
                }
            }
            Event::History(note) => self.record_history(note, now),
            Event::Sending { id, to } => {
                chats.set_state(to, *id, Delivery::Sending);
            }
            Event::Delivered { id, to, text } => {
                if !chats.set_state(to, *id, Delivery::Delivered) {
                    chats.status_notice(&format!("delivered to {to}: {text}"), now);
                }
            }
            Event::NotDelivered { id, to, text, why } => {
                if !chats.set_state(to, *id, Delivery::NotDelivered(*why)) {
                    chats.status_notice(&format!("not delivered to {to} ({why}): {text}"), now);
                }
            }
            Event::Online(names) => {
                let list: Vec<&str> = names.iter().map(Username::as_str).collect();
                let text = format!("online ({}): {}", names.len(), list.join(", "));
                chats.notice(&text, now);
            }
            Event::Joined(name) => chats.peer_notice(name, &format!("{name} is online"), now),
            Event::Left(name) => chats.peer_notice(name, &format!("{name} went offline"), now),
            Event::Offline {
                reason,
                retry_in,
                first,
            } => {
                // The server parted us from every room; who is there is learnt again on the
                // rejoin.
                chats.forget_members();
                // Only the first failure of a streak goes into the history; the retries that
                // follow would bury the conversation, and the UI's status line shows the
                // latest anyway.
                if *first {
                    let text = format!("{reason}; retrying in {}s", retry_in.as_secs_f32().ceil());
                    chats.status_notice(&text, now);
                    if chats.open_index() != 0 && self.session.logged_in_once() {
                        chats.notice(&text, now);
                    }
                }
            }
            Event::Notice(text) => chats.notice(text, now),
            Event::Extensions(set) => {
                if self.told_extensions != Some(*set) {
                    self.told_extensions = Some(*set);
                    let text = if set.is_empty() {
                        "the server speaks the classic protocol (no extensions)".to_owned()
                    } else {
                        format!("the server's extensions: {set}")
                    };
                    chats.status_notice(&text, now);
                }
            }
            Event::PasswordNeeded(prompt) => chats.notice(
                &format!("{prompt}: type it below (it is not shown; an empty line cancels)"),
                now,
            ),
            Event::Account { op, reply } => chats.notice(&reply.describe(*op), now),
            Event::Room(event) => self.record_room(event, now),
            Event::NameNeeded(None) | Event::Opened(_) | Event::Help => {}
        }
    }
}

fn not_in_a_room(usage: &str) -> Effect {
    Effect::Show(Event::Notice(format!(
        "the open conversation is not a room: {usage}"
    )))
}

#[cfg(test)]
mod tests;
