//! The UI's state around the client machine: the input line, scrolling, the help overlay,
//! and the keys that drive them. Like the machine it does no I/O; [`crate::run`] feeds it
//! terminal and network events and draws it.

use std::cell::Cell;
use std::time::Instant;

use chrono::{NaiveTime, Offset, Timelike};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tcpchat_client::net::{self, NetEvent};
use tcpchat_client::{Client, Config, Effect, LoginError, Target};

use crate::editor::LineEditor;

/// Turns the machine's instants into wall-clock times for the time stamps.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    wall: NaiveTime,
    /// The local zone's offset from UTC, for the server's times (UTC milliseconds).
    offset: chrono::FixedOffset,
}

impl Clock {
    /// A clock on which `origin` is `wall`.
    pub fn new(origin: Instant, wall: NaiveTime) -> Self {
        Self {
            origin,
            wall,
            offset: chrono::FixedOffset::east_opt(0).unwrap_or(chrono::Utc.fix()),
        }
    }

    /// The local time now.
    pub fn local() -> Self {
        let now = chrono::Local::now();
        Self {
            offset: *now.offset(),
            ..Self::new(Instant::now(), now.time())
        }
    }

    /// A server time (ms since the Unix epoch, UTC) as `HH:MM` in this clock's zone.
    pub fn server_hh_mm(&self, time_ms: u64) -> String {
        let utc = i64::try_from(time_ms)
            .ok()
            .and_then(chrono::DateTime::from_timestamp_millis);
        match utc {
            Some(t) => {
                let t = t.with_timezone(&self.offset);
                format!("{:02}:{:02}", t.hour(), t.minute())
            }
            None => "--:--".to_owned(),
        }
    }

    /// `at` as `HH:MM`.
    pub fn hh_mm(&self, at: Instant) -> String {
        let elapsed = at.saturating_duration_since(self.origin);
        let delta = chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::zero());
        let (time, _) = self.wall.overflowing_add_signed(delta);
        format!("{:02}:{:02}", time.hour(), time.minute())
    }
}

/// Everything the screen shows.
#[derive(Debug)]
pub struct App {
    pub(crate) client: Client,
    pub(crate) server: String,
    pub(crate) input: LineEditor,
    /// Rows scrolled up from the bottom of the open conversation (clamped when drawn).
    pub(crate) scroll: Cell<usize>,
    /// The most the open conversation can scroll, as of the last drawing.
    pub(crate) max_scroll: Cell<usize>,
    /// The message pane's height at the last drawing, for PageUp/PageDown.
    pub(crate) page: Cell<usize>,
    pub(crate) help: bool,
    pub(crate) clock: Clock,
    pub(crate) now: Instant,
    exit: Option<Result<(), LoginError>>,
}

impl App {
    pub fn new(server: impl Into<String>, config: Config, clock: Clock) -> Self {
        Self {
            client: Client::new(config),
            server: server.into(),
            input: LineEditor::default(),
            scroll: Cell::new(0),
            max_scroll: Cell::new(0),
            page: Cell::new(10),
            help: false,
            clock,
            now: clock.origin,
            exit: None,
        }
    }

    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Starts the session; returns the effects for the network.
    pub fn start(&mut self, now: Instant) -> Vec<Effect> {
        self.now = now;
        let effects = self.client.start(now);
        self.absorb(effects)
    }

    /// Set once the session is over.
    pub fn exit(&self) -> Option<&Result<(), LoginError>> {
        self.exit.as_ref()
    }

    pub fn take_exit(&mut self) -> Option<Result<(), LoginError>> {
        self.exit.take()
    }

    /// Something happened on the connection.
    pub fn handle_net(&mut self, event: NetEvent, now: Instant) -> Vec<Effect> {
        self.now = now;
        // On the status buffer with no conversation at all, a first message opens its
        // conversation: there is nothing else the user could be looking at. See: #11
        let nothing_open = self.client.buffers().len() == 1;
        let effects = net::feed(&mut self.client, event, now);
        if nothing_open && self.client.open_index() == 0 && self.client.buffers().len() > 1 {
            let first_message = effects
                .iter()
                .any(|e| matches!(e, Effect::Show(tcpchat_client::Event::Message { .. })));
            if first_message {
                self.client.select(1);
            }
        }
        self.absorb(effects)
    }

    /// The machine's timer fell due, or the clock moved (for the countdowns on screen).
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Effect> {
        self.now = now;
        let due = self.client.poll_timeout().is_some_and(|at| at <= now);
        if !due {
            return Vec::new();
        }
        let effects = self.client.handle_timeout(now);
        self.absorb(effects)
    }

    /// Text pasted into the terminal.
    pub fn handle_paste(&mut self, text: &str) {
        self.input.insert_str(text);
    }

    /// A key press; returns the effects for the network.
    pub fn handle_key(&mut self, key: KeyEvent, now: Instant) -> Vec<Effect> {
        self.now = now;
        if key.kind == KeyEventKind::Release {
            return Vec::new();
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        if ctrl && matches!(key.code, KeyCode::Char('c')) {
            return self.interrupt(now);
        }
        if self.help {
            // Any key closes the help; only Esc, F1 and q are swallowed.
            self.help = false;
            if matches!(key.code, KeyCode::Esc | KeyCode::F(1) | KeyCode::Char('q')) {
                return Vec::new();
            }
        }
        match key.code {
            KeyCode::Enter => {
                // A password, or a command that might carry one by mistake, never goes into
                // the history. See: #13
                let secret = self.client.password_prompt().is_some()
                    || tcpchat_client::command::mentions_password(&self.input.text());
                let line = if secret {
                    self.input.submit_unrecorded()
                } else {
                    self.input.submit()
                };
                let effects = self.client.handle_input(&line, now);
                return self.absorb(effects);
            }
            KeyCode::Char(c) if ctrl => match c {
                'w' | 'h' => self.input.delete_word(),
                'u' => self.input.delete_to_start(),
                'k' => self.input.delete_to_end(),
                'a' => self.input.home(),
                'e' => self.input.end(),
                'n' => self.select_next(1),
                'p' => self.select_next(-1),
                'd' if self.input.chars().is_empty() => return self.interrupt(now),
                'd' => self.input.delete(),
                _ => {}
            },
            KeyCode::Char(c) if alt => match c {
                '1'..='9' => self.select(c as usize - '1' as usize),
                '0' => self.select(9),
                _ => {}
            },
            KeyCode::Char(c) => self.input.insert(c),
            KeyCode::Backspace if alt || ctrl => self.input.delete_word(),
            KeyCode::Backspace => self.input.backspace(),
            KeyCode::Delete => self.input.delete(),
            KeyCode::Left if alt => self.select_next(-1),
            KeyCode::Right if alt => self.select_next(1),
            KeyCode::Left if ctrl => self.input.word_left(),
            KeyCode::Right if ctrl => self.input.word_right(),
            KeyCode::Left => self.input.left(),
            KeyCode::Right => self.input.right(),
            KeyCode::Home => self.input.home(),
            KeyCode::End => self.input.end(),
            KeyCode::Up => self.input.history_up(),
            KeyCode::Down => self.input.history_down(),
            KeyCode::Tab => self.complete(),
            KeyCode::PageUp => {
                let page = self.page.get().max(2) - 1;
                let at_top = self.scroll.get() >= self.max_scroll.get();
                self.scroll
                    .set((self.scroll.get() + page).min(self.max_scroll.get()));
                // Past the top: the server may have older lines.
                if at_top {
                    return self.client.load_older(now);
                }
            }
            KeyCode::PageDown => {
                let page = self.page.get().max(2) - 1;
                self.scroll.set(self.scroll.get().saturating_sub(page));
            }
            KeyCode::F(1) => self.help = true,
            KeyCode::Esc => {}
            _ => {}
        }
        Vec::new()
    }

    /// Ctrl-C: leave at once, like `/quit`.
    fn interrupt(&mut self, now: Instant) -> Vec<Effect> {
        let effects = self.client.handle_quit(now);
        self.absorb(effects)
    }

    fn complete(&mut self) {
        if self.client.password_prompt().is_some() {
            return;
        }
        let mut names: Vec<&str> = self
            .client
            .online()
            .unwrap_or_default()
            .iter()
            .map(|n| n.as_str())
            .collect();
        for buffer in self.client.buffers() {
            match &buffer.target {
                Target::Peer(peer) => names.push(peer.as_str()),
                Target::Room(room) => names.push(room.as_str()),
                Target::Status => {}
            }
        }
        let mut commands = vec![
            "/msg",
            "/query",
            "/close",
            "/who",
            "/register",
            "/password",
            "/unregister",
            "/join",
            "/part",
            "/rooms",
            "/members",
            "/topic",
            "/kick",
            "/quit",
            "/help",
        ];
        if self.input.chars().first() == Some(&'/') && !self.input.chars().contains(&' ') {
            names = std::mem::take(&mut commands);
        }
        self.input.complete(names);
    }

    fn select(&mut self, index: usize) {
        if index < self.client.buffers().len() {
            self.client.select(index);
            self.scroll.set(0);
        }
    }

    fn select_next(&mut self, step: isize) {
        let n = self.client.buffers().len() as isize;
        let next = (self.client.open_index() as isize + step).rem_euclid(n);
        self.select(next as usize);
    }

    /// Keeps what the UI handles itself (help, exit) and returns the network's effects.
    fn absorb(&mut self, effects: Vec<Effect>) -> Vec<Effect> {
        let before = self.client.open_index();
        let mut network = Vec::new();
        for effect in effects {
            match effect {
                Effect::Show(tcpchat_client::Event::Help) => self.help = true,
                Effect::Show(_) => {}
                Effect::Exit(result) => self.exit = Some(result),
                other => network.push(other),
            }
        }
        if self.client.open_index() != before {
            self.scroll.set(0);
        }
        network
    }
}
