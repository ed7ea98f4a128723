//! The glue between the two machines: typed input and server events in, effects out.
//!
//! [`Client`] owns a [`Session`] (the protocol) and a [`Conversations`] (what the user
//! reads). It parses what the user typed into session calls and conversation changes, and
//! turns each event the session reports into entries and notices; every effect is then passed
//! on unchanged, so the plain mode prints the same events the UI draws from the model. It is
//! as pure as the two it joins: no I/O, time passed in as `now`.

use std::time::Instant;

use tcpchat_proto::Username;

use crate::command::{self, UserCommand};
use crate::conversations::{Buffer, Conversations, Target};
use crate::session::{one_line, Config, Delivery, Effect, Event, Phase, Session};

/// The client: a session and its conversations. See the module documentation.
#[derive(Debug)]
pub struct Client {
    session: Session,
    chats: Conversations,
}

impl Client {
    /// A client that has not started yet; call [`Client::start`].
    pub fn new(config: Config) -> Self {
        Self {
            session: Session::new(config),
            chats: Conversations::new(),
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
                Target::Status => effects.push(Effect::Show(Event::Notice(
                    "no conversation is open: type @user message, or /query user first".into(),
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
            Err(err) => effects.push(Effect::Show(Event::Notice(err.to_string()))),
        }
        self.absorb(effects, now)
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
            Event::Message { from, text } => chats.incoming(from, text, now),
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
            Event::NameNeeded(None) | Event::Opened(_) | Event::Help => {}
        }
    }
}

#[cfg(test)]
mod tests;
