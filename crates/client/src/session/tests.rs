//! The protocol session driven directly, without conversations: scripted server lines, the
//! user's requests, a fake clock. See: #11

use super::*;

fn name(s: &str) -> Username {
    Username::parse(s).expect("test name is valid")
}

struct Harness {
    session: Session,
    now: Instant,
    sent: Vec<String>,
    shown: Vec<Event>,
    disconnects: usize,
    exit: Option<Result<(), LoginError>>,
}

impl Harness {
    fn new(config: Config) -> Self {
        let mut h = Self {
            session: Session::new(config),
            now: Instant::now(),
            sent: Vec::new(),
            shown: Vec::new(),
            disconnects: 0,
            exit: None,
        };
        let effects = h.session.start();
        h.apply(effects);
        h
    }

    /// Interactive, logged in as alice, the first LIST answered.
    fn online() -> Self {
        let mut h = Self::new(Config::interactive(Some(name("alice"))));
        h.connected();
        h.server("HELLO alice");
        h.server("LIST-OK alice");
        h.sent.clear();
        h.shown.clear();
        h
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            assert!(self.exit.is_none(), "effect {effect:?} after exit");
            match effect {
                Effect::Connect => {}
                Effect::Send(line) => self
                    .sent
                    .push(String::from_utf8_lossy(&line).trim_end().to_owned()),
                Effect::Disconnect => self.disconnects += 1,
                Effect::Show(event) => self.shown.push(event),
                Effect::Exit(result) => self.exit = Some(result),
            }
        }
    }

    fn connected(&mut self) {
        let effects = self.session.handle_connected(self.now);
        self.apply(effects);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        let effects = self.session.handle_bytes(bytes, self.now);
        self.apply(effects);
    }

    fn server(&mut self, line: &str) {
        self.bytes(format!("{line}\n").as_bytes());
    }

    fn send(&mut self, to: &str, text: &str) -> MsgId {
        let (id, effects) = self.session.send(name(to), text, self.now);
        self.apply(effects);
        id
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(at) = self.session.poll_timeout() {
            if at > end || self.exit.is_some() {
                break;
            }
            self.now = self.now.max(at);
            let effects = self.session.handle_timeout(self.now);
            self.apply(effects);
        }
        self.now = end;
    }

    fn notices(&self) -> Vec<&str> {
        self.shown
            .iter()
            .filter_map(|e| match e {
                Event::Notice(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn the_pending_queue_is_bounded_and_drains_as_answers_come() {
    let mut h = Harness::online();
    let total = MAX_PENDING_REQUESTS + 10;
    for i in 0..total {
        h.send("bob", &format!("m{i}"));
    }
    assert_eq!(h.sent.len(), MAX_PENDING_REQUESTS);
    assert_eq!(h.session.pending_requests(), MAX_PENDING_REQUESTS);
    assert_eq!(h.session.unsettled(), total);
    h.sent.clear();
    for _ in 0..10 {
        h.server("SEND-OK");
    }
    assert_eq!(h.sent.len(), 10, "each answer makes room for one more");
    assert_eq!(h.session.pending_requests(), MAX_PENDING_REQUESTS);
    for _ in 0..MAX_PENDING_REQUESTS {
        h.server("SEND-OK");
    }
    assert_eq!(h.session.pending_requests(), 0);
    assert_eq!(h.session.unsettled(), 0);
    let delivered = h
        .shown
        .iter()
        .filter(|e| matches!(e, Event::Delivered { .. }))
        .count();
    assert_eq!(delivered, total);
}

#[test]
fn the_store_is_bounded_while_offline() {
    let mut h = Harness::new(Config::interactive(Some(name("alice"))));
    for i in 0..MAX_UNSETTLED_MESSAGES {
        h.send("bob", &format!("m{i}"));
    }
    let id = h.send("bob", "one too many");
    assert_eq!(h.session.unsettled(), MAX_UNSETTLED_MESSAGES);
    assert_eq!(
        h.shown.last(),
        Some(&Event::NotDelivered {
            id,
            to: name("bob"),
            text: "one too many".into(),
            why: Undelivered::Backlog
        })
    );
}

#[test]
fn tolerates_what_real_servers_send() {
    let mut h = Harness::new(Config::interactive(Some(name("alice"))));
    h.connected();
    h.bytes(b"\r\n\nHELLO alice\r\n");
    assert_eq!(h.session.phase(), &Phase::Online);
    h.bytes(b"LIST-OK alice, bob,  carol\r\n");
    assert_eq!(
        h.session.online(),
        Some(&[name("alice"), name("bob"), name("carol")][..])
    );
    h.send("bob", "hi");
    h.bytes(b"\nSEND-OK\r\n");
    assert!(h.shown.iter().any(|e| matches!(e, Event::Delivered { .. })));
    assert!(h.notices().is_empty(), "{:?}", h.notices());
}

#[test]
fn an_unknown_line_is_a_notice_in_words_once_per_connection() {
    let mut h = Harness::online();
    h.server("\u{1b}[2J SOMETHING-NEW x");
    h.server("ANOTHER-ONE");
    let notices = h.notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("does not understand"), "{notices:?}");
    assert!(!notices[0].contains("SOMETHING"), "never the raw line");
    assert_eq!(h.session.phase(), &Phase::Online);
}

#[test]
fn a_reply_that_cannot_be_read_is_given_up_after_the_timeout() {
    let mut h = Harness::online();
    let id = h.send("bob", "hello?");
    h.server("SEND-OK and then some");
    assert_eq!(h.notices().len(), 1);
    assert_eq!(
        h.session.message(id).map(|m| m.state),
        Some(Delivery::Sending)
    );
    h.advance(Duration::from_secs(20));
    assert_eq!(h.disconnects, 1);
    assert!(h.shown.iter().any(|e| matches!(
        e,
        Event::NotDelivered {
            why: Undelivered::Unconfirmed,
            ..
        }
    )));
    assert!(h.shown.iter().any(|e| matches!(
        e,
        Event::Offline {
            reason: Offline::NoReply(_),
            ..
        }
    )));
}

#[test]
fn quit_leaves_at_once_whatever_is_pending() {
    let mut h = Harness::online();
    h.send("bob", "in flight");
    let effects = h.session.handle_quit();
    h.apply(effects);
    assert_eq!(h.exit, Some(Ok(())));
    assert_eq!(h.disconnects, 1);
    assert!(h.shown.iter().any(|e| matches!(
        e,
        Event::NotDelivered {
            why: Undelivered::LeftUnanswered,
            ..
        }
    )));

    // Also while connecting, with a message queued.
    let mut h = Harness::new(Config::script(Some(name("alice"))));
    h.send("bob", "queued");
    let effects = h.session.handle_quit();
    h.apply(effects);
    assert_eq!(h.exit, Some(Ok(())));
}

#[test]
fn a_name_typed_at_the_prompt_asks_again_even_in_a_script() {
    let mut h = Harness::new(Config::script(None));
    assert_eq!(h.shown, vec![Event::NameNeeded(None)]);
    let effects = h.session.handle_name("two words", h.now);
    h.apply(effects);
    assert!(matches!(
        h.shown.last(),
        Some(Event::NameNeeded(Some(NameProblem::Invalid { .. })))
    ));
    let effects = h.session.handle_name("alice", h.now);
    h.apply(effects);
    h.connected();
    h.server("IN-USE");
    assert_eq!(
        h.shown.last(),
        Some(&Event::NameNeeded(Some(NameProblem::Taken(name("alice")))))
    );
    assert_eq!(h.exit, None);
    // The input ends with the name still taken: that is the script's failure.
    let effects = h.session.handle_end_of_input(h.now);
    h.apply(effects);
    assert_eq!(h.exit, Some(Err(LoginError::NameTaken(name("alice")))));

    // With --name, a taken name ends the run.
    let mut h = Harness::new(Config::script(Some(name("alice"))));
    h.connected();
    h.server("IN-USE");
    assert_eq!(h.exit, Some(Err(LoginError::NameTaken(name("alice")))));
}

#[test]
fn who_beyond_the_pending_bound_waits_for_room() {
    let mut h = Harness::online();
    for i in 0..MAX_PENDING_REQUESTS {
        h.send("bob", &format!("m{i}"));
    }
    h.sent.clear();
    let effects = h.session.who(h.now);
    h.apply(effects);
    assert!(h.sent.is_empty());
    h.server("SEND-OK");
    assert_eq!(h.sent, ["LIST"]);
}
