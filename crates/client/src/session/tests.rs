//! The protocol session driven directly, without conversations: scripted server lines, the
//! user's requests, a fake clock. See: #11

use super::*;
use crate::history::Stamp;

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

// ---- extensions (#13) ---------------------------------------------------------------------

const ASK: &str = "EXT keepalive,presence,accounts,rooms,history";

fn secret(s: &str) -> Secret {
    Secret::parse(s).expect("test password is valid")
}

impl Harness {
    /// Extended (asks for every extension), connected, `EXT-OK` with `offered`, logged in as
    /// alice (with the first presence list, if offered), everything sent and shown cleared.
    fn extended(config: Config, offered: &str) -> Self {
        let mut h = Self::new(config.extended());
        h.connected();
        h.server(&format!("EXT-OK {offered}"));
        h.server("HELLO alice");
        if h.session.has(Extension::Presence) {
            h.server("ONLINE alice,bob");
            h.server("ONLINE-DONE");
        } else if h.session.pending_requests() > 0 {
            h.server("LIST-OK alice,bob");
        }
        h.sent.clear();
        h.shown.clear();
        h
    }

    fn has_shown(&self, wanted: &Event) -> bool {
        self.shown.iter().any(|e| e == wanted)
    }
}

#[test]
fn a_classic_server_answering_ext_with_bad_rqst_hdr_leaves_the_client_classic() {
    let mut h = Harness::new(Config::interactive(Some(name("alice"))).extended());
    h.connected();
    // HELLO-FROM is pipelined behind EXT: no round trip lost on a classic server.
    assert_eq!(h.sent, vec![ASK, "HELLO-FROM alice"]);
    h.sent.clear();
    h.server("BAD-RQST-HDR");
    h.server("HELLO alice");
    assert_eq!(h.session.extensions(), ExtensionSet::NONE);
    assert_eq!(*h.session.phase(), Phase::Online);
    // Polls as a classic client does.
    assert_eq!(h.sent, vec!["LIST"]);
    h.server("LIST-OK alice");
    h.sent.clear();
    // Extension lines from a server that did not negotiate them are not understood.
    h.server("PING x");
    h.server("ONLINE mallory");
    assert!(h.sent.is_empty(), "{:?}", h.sent);
    assert_eq!(h.session.online(), Some(&[name("alice")][..]));
    // And nobody is pinged: a classic server would answer BAD-RQST-HDR.
    h.advance(Duration::from_secs(120));
    assert!(
        !h.sent.iter().any(|l| l.starts_with("PING")),
        "{:?}",
        h.sent
    );
}

#[test]
fn anything_but_ext_ok_is_classic_and_the_hello_still_counts() {
    // A server that answers EXT with something odd (BAD-RQST-BODY, or a stray HELLO).
    for answer in ["BAD-RQST-BODY", "IN-USE"] {
        let mut h = Harness::new(Config::script(Some(name("alice"))).extended());
        h.connected();
        h.server(answer);
        h.server("HELLO alice");
        assert_eq!(h.session.extensions(), ExtensionSet::NONE, "{answer}");
        assert_eq!(*h.session.phase(), Phase::Online, "{answer}");
    }
}

#[test]
fn ext_ok_names_the_extensions_of_this_connection() {
    let mut h = Harness::new(Config::script(Some(name("alice"))).extended());
    h.connected();
    // Names we did not ask for (or do not know) are ignored.
    h.server("EXT-OK presence,frobnicate");
    assert!(h.session.has(Extension::Presence));
    assert!(!h.session.has(Extension::Keepalive));
    assert!(!h.session.has(Extension::Accounts));
    let mut only: ExtensionSet = ExtensionSet::NONE;
    only.insert(Extension::Presence);
    assert!(h.has_shown(&Event::Extensions(only)));
    // A server that offers nothing: `EXT-OK` alone.
    let mut h = Harness::new(Config::script(Some(name("alice"))).extended());
    h.connected();
    h.server("EXT-OK");
    h.server("HELLO alice");
    assert_eq!(h.session.extensions(), ExtensionSet::NONE);
}

#[test]
fn a_classic_config_never_sends_ext() {
    let mut h = Harness::new(Config::interactive(Some(name("alice"))));
    h.connected();
    assert_eq!(h.sent, vec!["HELLO-FROM alice"]);
}

#[test]
fn server_pings_are_answered_in_place_without_disturbing_replies() {
    let mut h = Harness::extended(Config::script(Some(name("alice"))), "keepalive");
    let id = h.send("bob", "hi");
    h.server("PING tok-1");
    h.server("PING");
    assert_eq!(h.sent, vec!["SEND bob hi", "PONG tok-1", "PONG"]);
    // The SEND-OK still answers the SEND: a ping is not a reply.
    h.server("SEND-OK");
    assert!(h
        .shown
        .iter()
        .any(|e| matches!(e, Event::Delivered { id: d, .. } if *d == id)));
    // Our own PONG, unasked, is ignored quietly.
    h.server("PONG whatever");
    assert!(h.notices().is_empty(), "{:?}", h.notices());
}

#[test]
fn a_silent_server_is_pinged_then_given_up() {
    let config = Config::interactive(Some(name("alice")));
    let (after, timeout) = (config.ping_after, config.ping_timeout);
    let mut h = Harness::extended(config, "keepalive,presence");
    h.advance(after - Duration::from_secs(1));
    assert!(h.sent.is_empty(), "pinged early: {:?}", h.sent);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.sent, vec!["PING c1"]);
    // Any line is a sign of life: the next ping is a full interval later.
    h.server("PONG c1");
    h.sent.clear();
    h.advance(after - Duration::from_secs(1));
    assert!(h.sent.is_empty(), "{:?}", h.sent);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.sent, vec!["PING c2"]);
    assert_eq!(h.disconnects, 0);
    h.advance(timeout);
    assert_eq!(h.disconnects, 1, "{:?}", h.shown);
    assert!(
        h.shown.iter().any(|e| matches!(
            e,
            Event::Offline { reason: Offline::Silent(d), .. } if *d == after + timeout
        )),
        "{:?}",
        h.shown
    );
    assert!(matches!(h.session.phase(), Phase::Waiting { .. }));
}

#[test]
fn presence_replaces_polling_and_is_a_set() {
    let mut h = Harness::new(Config::interactive(Some(name("alice"))).extended());
    h.connected();
    h.server("EXT-OK keepalive,presence");
    h.sent.clear();
    h.server("HELLO alice");
    assert!(h.sent.is_empty(), "no LIST with presence: {:?}", h.sent);
    h.server("ONLINE alice,bob");
    h.server("ONLINE carol,bob");
    assert_eq!(h.session.online(), None, "the list is not complete yet");
    h.server("ONLINE-DONE");
    assert_eq!(
        h.session.online(),
        Some(&[name("alice"), name("bob"), name("carol")][..])
    );
    assert!(
        !h.shown.iter().any(|e| matches!(e, Event::Joined(_))),
        "the first list is not news: {:?}",
        h.shown
    );
    h.shown.clear();
    for line in [
        "ONLINE dave",
        "ONLINE dave",
        "OFFLINE bob",
        "OFFLINE bob",
        "OFFLINE zed",
    ] {
        h.server(line);
    }
    assert_eq!(
        h.shown,
        vec![Event::Joined(name("dave")), Event::Left(name("bob"))]
    );
    assert_eq!(
        h.session.online(),
        Some(&[name("alice"), name("carol"), name("dave")][..])
    );
    // `!who` is answered from the set; the refresh never polls.
    h.shown.clear();
    let effects = h.session.who(h.now);
    h.apply(effects);
    assert_eq!(
        h.shown,
        vec![Event::Online(vec![
            name("alice"),
            name("carol"),
            name("dave")
        ])]
    );
    h.server("PING k");
    h.sent.clear();
    h.advance(Duration::from_secs(20));
    assert!(!h.sent.iter().any(|l| l == "LIST"), "{:?}", h.sent);
}

#[test]
fn who_before_the_first_presence_list_is_answered_by_it() {
    let mut h = Harness::new(Config::script(Some(name("alice"))).extended());
    h.connected();
    h.server("EXT-OK presence");
    h.server("HELLO alice");
    let effects = h.session.who(h.now);
    h.apply(effects);
    assert!(!h.shown.iter().any(|e| matches!(e, Event::Online(_))));
    h.server("ONLINE alice");
    h.server("ONLINE-DONE");
    assert!(h.has_shown(&Event::Online(vec![name("alice")])));
    assert!(!h.sent.iter().any(|l| l == "LIST"), "{:?}", h.sent);
}

#[test]
fn a_reconnection_reports_what_changed_while_away() {
    let mut h = Harness::extended(Config::interactive(Some(name("alice"))), "presence");
    let effects = h.session.handle_closed("reset", h.now);
    h.apply(effects);
    h.advance(Duration::from_secs(1));
    h.connected();
    h.server("EXT-OK presence");
    h.server("HELLO alice");
    h.shown.clear();
    h.server("ONLINE alice,carol");
    h.server("ONLINE-DONE");
    assert_eq!(
        h.shown,
        vec![Event::Joined(name("carol")), Event::Left(name("bob"))]
    );
}

#[test]
fn a_password_waits_for_ext_ok_and_logs_in_with_login() {
    let mut config = Config::script(Some(name("alice"))).extended();
    config.password = Some(secret("correct-horse"));
    let mut h = Harness::new(config);
    h.connected();
    assert_eq!(
        h.sent,
        vec![ASK],
        "no login before the server said it knows accounts"
    );
    h.sent.clear();
    h.server("EXT-OK keepalive,presence,accounts");
    assert_eq!(h.sent, vec!["LOGIN alice correct-horse"]);
    h.server("HELLO alice");
    assert_eq!(*h.session.phase(), Phase::Online);
    // A reconnection logs in with the password again (the server closes the old session).
    let effects = h.session.handle_closed("reset", h.now);
    h.apply(effects);
    h.advance(Duration::from_secs(1));
    h.sent.clear();
    h.connected();
    h.server("EXT-OK accounts");
    assert_eq!(h.sent, vec![ASK, "LOGIN alice correct-horse"]);
}

#[test]
fn a_password_is_never_sent_to_a_server_without_accounts() {
    let mut config = Config::script(Some(name("alice"))).extended();
    config.password = Some(secret("correct-horse"));
    for answer in ["BAD-RQST-HDR", "EXT-OK keepalive,presence"] {
        let mut h = Harness::new(config.clone());
        h.connected();
        h.server(answer);
        assert_eq!(h.sent, vec![ASK, "HELLO-FROM alice"], "{answer}");
        assert!(
            h.notices().iter().any(|n| n.contains("no accounts")),
            "{:?}",
            h.shown
        );
    }
}

#[test]
fn a_registered_name_asks_for_its_password() {
    let mut h = Harness::new(Config::interactive(Some(name("alice"))).extended());
    h.connected();
    h.server("EXT-OK keepalive,presence,accounts");
    h.server("NAME-REGISTERED");
    assert_eq!(*h.session.phase(), Phase::NeedPassword(name("alice")));
    assert!(h.has_shown(&Event::PasswordNeeded(PasswordPrompt::Login(name("alice")))));
    h.sent.clear();
    // Checked here first: nothing is sent for a password the server must refuse.
    let effects = h.session.handle_password("short", h.now);
    h.apply(effects);
    assert!(h.sent.is_empty());
    assert_eq!(*h.session.phase(), Phase::NeedPassword(name("alice")));
    let effects = h.session.handle_password("wrong-horse", h.now);
    h.apply(effects);
    assert_eq!(h.sent, vec!["LOGIN alice wrong-horse"]);
    h.server("BAD-PASSWORD");
    assert_eq!(*h.session.phase(), Phase::NeedPassword(name("alice")));
    assert!(h.notices().iter().any(|n| n.contains("wrong password")));
    let effects = h.session.handle_password("correct-horse", h.now);
    h.apply(effects);
    h.server("HELLO alice");
    assert_eq!(*h.session.phase(), Phase::Online);
}

#[test]
fn an_empty_password_gives_up_the_name() {
    let mut h = Harness::new(Config::interactive(Some(name("alice"))).extended());
    h.connected();
    h.server("EXT-OK accounts");
    h.server("NAME-REGISTERED");
    let effects = h.session.handle_password("", h.now);
    h.apply(effects);
    assert_eq!(
        *h.session.phase(),
        Phase::NeedName(Some(NameProblem::Registered(name("alice"))))
    );
    // A script given --name cannot go on.
    let mut h = Harness::new(Config::script(Some(name("alice"))).extended());
    h.connected();
    h.server("EXT-OK accounts");
    h.server("NAME-REGISTERED");
    let effects = h.session.cancel_password();
    h.apply(effects);
    assert_eq!(h.exit, Some(Err(LoginError::NameRegistered(name("alice")))));
}

#[test]
fn the_password_typed_after_the_server_gave_up_reconnects_and_logs_in() {
    let mut h = Harness::new(Config::interactive(Some(name("alice"))).extended());
    h.connected();
    h.server("EXT-OK accounts");
    h.server("NAME-REGISTERED");
    // The server's login timeout ends the connection while the user types.
    let effects = h
        .session
        .handle_closed("the server closed the connection", h.now);
    h.apply(effects);
    assert_eq!(*h.session.phase(), Phase::NeedPassword(name("alice")));
    h.sent.clear();
    let effects = h.session.handle_password("correct-horse", h.now);
    h.apply(effects);
    assert_eq!(*h.session.phase(), Phase::Connecting);
    h.connected();
    h.server("EXT-OK accounts");
    assert_eq!(h.sent, vec![ASK, "LOGIN alice correct-horse"]);
}

#[test]
fn each_login_refusal_ends_a_script_in_words() {
    let cases = [
        ("BAD-PASSWORD", AccountReply::BadPassword, "wrong password"),
        ("LOCKED", AccountReply::Locked, "locked"),
        ("THROTTLED 7", AccountReply::Throttled(7), "try again in 7s"),
        ("NEEDS-TLS", AccountReply::NeedsTls, "tls://"),
        ("BAD-RQST-BODY", AccountReply::Refused, "refused"),
    ];
    for (line, reply, words) in cases {
        let mut config = Config::script(Some(name("alice"))).extended();
        config.password = Some(secret("correct-horse"));
        let mut h = Harness::new(config);
        h.connected();
        h.server("EXT-OK accounts");
        h.server(line);
        let want = LoginError::Account {
            name: name("alice"),
            reply,
        };
        assert!(want.to_string().contains(words), "{want}");
        assert_eq!(h.exit, Some(Err(want)), "{line}");
    }
}

#[test]
fn a_locked_or_tls_only_account_asks_a_person_for_another_name() {
    for (line, reply) in [
        ("LOCKED", AccountReply::Locked),
        ("NEEDS-TLS", AccountReply::NeedsTls),
    ] {
        let mut config = Config::interactive(Some(name("alice"))).extended();
        config.password = Some(secret("correct-horse"));
        let mut h = Harness::new(config);
        h.connected();
        h.server("EXT-OK accounts");
        h.server(line);
        let problem = NameProblem::Account {
            name: name("alice"),
            reply,
        };
        assert_eq!(*h.session.phase(), Phase::NeedName(Some(problem)), "{line}");
    }
}

#[test]
fn login_to_a_name_without_an_account_falls_back_to_hello_from() {
    let mut config = Config::script(Some(name("alice"))).extended();
    config.password = Some(secret("correct-horse"));
    let mut h = Harness::new(config);
    h.connected();
    h.server("EXT-OK accounts");
    h.sent.clear();
    h.server("NO-ACCOUNT");
    assert_eq!(h.sent, vec!["HELLO-FROM alice"]);
    h.server("HELLO alice");
    assert_eq!(*h.session.phase(), Phase::Online);
}

#[test]
fn account_requests_and_every_answer() {
    let answers = [
        ("NAME-REGISTERED", AccountReply::NameRegistered),
        ("NO-ACCOUNT", AccountReply::NoAccount),
        ("BAD-PASSWORD", AccountReply::BadPassword),
        ("LOCKED", AccountReply::Locked),
        ("THROTTLED 3", AccountReply::Throttled(3)),
        ("NEEDS-TLS", AccountReply::NeedsTls),
        ("BAD-RQST-BODY", AccountReply::Refused),
    ];
    let ok = [
        (AccountOp::Register, "REGISTER-OK"),
        (AccountOp::ChangePassword, "PASSWORD-OK"),
        (AccountOp::Unregister, "UNREGISTER-OK"),
    ];
    for (op, ok_line) in ok {
        for (line, reply) in answers
            .iter()
            .copied()
            .chain([(ok_line, AccountReply::Done)])
        {
            let mut h = Harness::extended(Config::script(Some(name("alice"))), "accounts");
            let effects = match op {
                AccountOp::Register => h.session.register(secret("new-horse"), h.now),
                AccountOp::ChangePassword => {
                    h.session
                        .change_password(&secret("old-horse"), secret("new-horse"), h.now)
                }
                AccountOp::Unregister => h.session.unregister(&secret("old-horse"), h.now),
            };
            h.apply(effects);
            let want_line = match op {
                AccountOp::Register => "REGISTER new-horse",
                AccountOp::ChangePassword => "PASSWORD old-horse new-horse",
                AccountOp::Unregister => "UNREGISTER old-horse",
            };
            assert_eq!(h.sent, vec![want_line]);
            h.server(line);
            assert_eq!(h.shown, vec![Event::Account { op, reply }], "{op:?} {line}");
            assert!(!reply.describe(op).is_empty());
        }
    }
}

#[test]
fn a_registered_password_is_used_to_log_in_again() {
    let mut h = Harness::extended(Config::interactive(Some(name("alice"))), "accounts");
    let effects = h.session.register(secret("new-horse"), h.now);
    h.apply(effects);
    h.server("REGISTER-OK");
    let effects = h.session.handle_closed("reset", h.now);
    h.apply(effects);
    h.advance(Duration::from_secs(1));
    h.sent.clear();
    h.connected();
    h.server("EXT-OK accounts");
    assert_eq!(h.sent, vec![ASK, "LOGIN alice new-horse"]);
}

#[test]
fn account_requests_need_the_extension() {
    let mut h = Harness::extended(Config::script(Some(name("alice"))), "keepalive");
    let effects = h.session.register(secret("new-horse"), h.now);
    h.apply(effects);
    assert!(h.sent.is_empty());
    assert_eq!(
        h.shown,
        vec![Event::Account {
            op: AccountOp::Register,
            reply: AccountReply::Unavailable
        }]
    );
}

#[test]
fn no_debug_output_shows_a_password() {
    let mut config = Config::script(Some(name("alice"))).extended();
    config.password = Some(secret("hunter2-secret"));
    let mut session = Session::new(config.clone());
    let mut effects = session.start();
    effects.extend(session.handle_connected(Instant::now()));
    effects.extend(session.handle_bytes(b"EXT-OK accounts\n", Instant::now()));
    effects.extend(session.register(secret("hunter3-secret"), Instant::now()));
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::Send(l) if l.starts_with(b"LOGIN"))));
    let shown = format!("{effects:?} {session:?} {config:?}");
    assert!(!shown.contains("hunter"), "{shown}");
    assert!(shown.contains("LOGIN <hidden>"), "{shown}");
}

#[test]
fn a_server_that_drops_the_connection_at_ext_gets_the_classic_client_next_time() {
    let mut h = Harness::new(Config::interactive(Some(name("alice"))).extended());
    h.connected();
    let effects = h
        .session
        .handle_closed("the server closed the connection", h.now);
    h.apply(effects);
    h.advance(Duration::from_secs(1));
    h.sent.clear();
    h.connected();
    assert_eq!(h.sent, vec!["HELLO-FROM alice"]);
    h.server("HELLO alice");
    assert_eq!(*h.session.phase(), Phase::Online);
}

#[test]
fn a_hostile_presence_stream_cannot_grow_the_online_list() {
    let mut h = Harness::new(Config::script(Some(name("alice"))).extended());
    h.connected();
    h.server("EXT-OK presence");
    h.server("HELLO alice");
    // The first list, 100 names a line, past the bound; then events past it too.
    let mut n = 0;
    while n < MAX_ONLINE_NAMES + 500 {
        let names: Vec<String> = (n..n + 100).map(|i| format!("u{i}")).collect();
        h.server(&format!("ONLINE {}", names.join(",")));
        n += 100;
    }
    h.server("ONLINE-DONE");
    assert_eq!(
        h.session.online().map(<[Username]>::len),
        Some(MAX_ONLINE_NAMES)
    );
    h.server("ONLINE newcomer");
    assert_eq!(
        h.session.online().map(<[Username]>::len),
        Some(MAX_ONLINE_NAMES)
    );
    let said = h
        .notices()
        .iter()
        .filter(|t| t.contains("more than"))
        .count();
    assert_eq!(said, 1, "{:?}", h.notices());
    // Leaving still works, and makes room.
    h.server("OFFLINE u0");
    h.server("ONLINE newcomer");
    assert!(h
        .session
        .online()
        .is_some_and(|o| o.contains(&name("newcomer"))));
}

// ---- history (docs/protocol.md, "history") -------------------------------------------------

fn messages(shown: &[Event]) -> Vec<(String, Option<Stamp>)> {
    shown
        .iter()
        .filter_map(|e| match e {
            Event::Message { from, text, at } => Some((format!("<{from}> {text}"), *at)),
            Event::Room(RoomEvent::Said {
                room,
                from,
                text,
                at,
            }) => Some((format!("[{room}] <{from}> {text}"), *at)),
            _ => None,
        })
        .collect()
}

fn texts(shown: &[Event]) -> Vec<String> {
    messages(shown).into_iter().map(|(t, _)| t).collect()
}

impl Harness {
    /// Logged in to alice's account on a server with every extension, the catch-up done
    /// (`RESUME-OK <epoch> <top>`), everything sent and shown cleared.
    fn account(epoch: &str, top: u64) -> Self {
        let mut config = Config::interactive(Some(name("alice"))).extended();
        config.password = Some(secret("correct-horse"));
        let mut h = Self::new(config);
        h.connected();
        h.server("EXT-OK keepalive,presence,accounts,rooms,history");
        h.server("HELLO alice");
        h.server("ONLINE alice");
        h.server("ONLINE-DONE");
        h.server(&format!("RESUME-OK {epoch} {top}"));
        h.sent.clear();
        h.shown.clear();
        h
    }

    fn reconnect(&mut self) {
        self.reconnect_to("keepalive,presence,accounts,rooms,history");
    }

    fn reconnect_to(&mut self, offered: &str) {
        let effects = self.session.handle_closed("reset", self.now);
        self.apply(effects);
        self.advance(Duration::from_secs(1));
        self.sent.clear();
        self.shown.clear();
        self.connected();
        self.server(&format!("EXT-OK {offered}"));
    }
}

#[test]
fn history_lines_keep_their_server_time_and_a_queued_message_is_kept_not_refused() {
    let mut h = Harness::account("e1", 0);
    h.server("DELIVERY-AT 1 1764650000000 bob hi  there");
    assert_eq!(
        messages(&h.shown),
        vec![(
            "<bob> hi  there".to_owned(),
            Some(Stamp {
                offset: 1,
                time: 1_764_650_000_000,
                live: true,
                older: false,
            })
        )]
    );
    let id = h.send("carol", "see you");
    h.server("SEND-QUEUED");
    assert!(h.has_shown(&Event::Kept {
        id,
        to: name("carol"),
        text: "see you".into()
    }));
    assert_eq!(h.session.unsettled(), 0);
}

#[test]
fn a_reconnection_resumes_the_direct_stream_with_no_duplicate_and_no_gap() {
    let mut h = Harness::account("e1", 4);
    h.server("DELIVERY-AT 5 1000 bob five");
    h.server("DELIVERY-AT 6 1001 bob six");
    h.reconnect();
    assert_eq!(
        h.sent,
        vec![ASK, "RESUME e1 6", "LOGIN alice correct-horse"]
    );
    h.server("HELLO alice");
    h.server("ONLINE alice,bob");
    h.server("ONLINE-DONE");
    // The catch-up: a server that resends 6 (it should not) is not shown twice.
    h.server("DELIVERY-AT 6 1001 bob six");
    h.server("DELIVERY-AT 7 1002 bob seven");
    h.server("RESUME-OK e1 7");
    h.server("DELIVERY-AT 8 1003 bob eight");
    let got = messages(&h.shown);
    assert_eq!(texts(&h.shown), vec!["<bob> seven", "<bob> eight"]);
    assert!(!got[0].1.expect("stamped").live, "the catch-up is not live");
    assert!(got[1].1.expect("stamped").live);
    assert!(h.has_shown(&Event::History(HistoryNote::CaughtUp)));
}

#[test]
fn expired_and_reset_streams_are_said_plainly() {
    let mut h = Harness::account("e1", 10);
    h.reconnect();
    h.server("HELLO alice");
    h.server("RESUME-EXPIRED e1 300");
    h.server("DELIVERY-AT 290 1 bob still kept");
    h.server("RESUME-OK e1 300");
    assert!(h.has_shown(&Event::History(HistoryNote::Expired)));
    assert_eq!(texts(&h.shown), vec!["<bob> still kept"]);
    assert!(HistoryNote::Expired.to_string().contains("expired"));

    h.reconnect();
    assert!(h.sent.contains(&"RESUME e1 300".to_owned()), "{:?}", h.sent);
    h.server("HELLO alice");
    h.server("RESUME-EPOCH e2 2");
    h.server("DELIVERY-AT 1 1 bob new one");
    h.server("DELIVERY-AT 2 2 bob new two");
    h.server("RESUME-OK e2 2");
    assert!(h.has_shown(&Event::History(HistoryNote::Reset)));
    assert_eq!(
        texts(&h.shown),
        vec!["<bob> new one", "<bob> new two"],
        "a reset stream's low offsets are new"
    );
    assert_eq!(
        h.session
            .positions()
            .direct
            .as_ref()
            .map(|p| p.epoch.as_str()),
        Some("e2")
    );
}

#[test]
fn a_rejoined_room_pages_back_to_what_it_had() {
    let mut h = Harness::account("e1", 0);
    let room = RoomName::parse("#r").expect("valid room");
    let effects = h.session.room_request(RoomOp::Join(room.clone()), h.now);
    h.apply(effects);
    h.server("JOINED #r alice");
    h.server("MEMBERS-OK #r alice,bob");
    h.server("SAID-AT #r 1 10 bob one");
    h.server("SAID-AT #r 2 11 bob two");
    h.reconnect();
    h.server("HELLO alice");
    h.server("RESUME-OK e1 0");
    assert!(h.sent.contains(&"JOIN #r".to_owned()));
    h.sent.clear();
    h.server("JOINED #r alice");
    assert_eq!(h.sent, vec!["MEMBERS #r", "HISTORY #r 50"]);
    h.sent.clear();
    h.server("MEMBERS-OK #r alice,bob");
    // Said while we were away: 3..=53; 54 arrives live before the page.
    h.server("SAID-AT #r 54 100 bob live");
    let mut page = vec!["HISTORY-OK #r re 54 50".to_owned()];
    page.extend((5..=54).map(|o| format!("SAID-AT #r {o} {o} bob m{o}")));
    for line in &page {
        h.server(line);
    }
    assert_eq!(h.sent, vec!["HISTORY #r BEFORE 5 50"], "the gap is paged");
    h.sent.clear();
    h.server("HISTORY-OK #r re 54 4");
    for o in 1..=4 {
        h.server(&format!("SAID-AT #r {o} {o} bob m{o}"));
    }
    assert!(h.sent.is_empty(), "reached what it had: {:?}", h.sent);
    let shown = texts(&h.shown);
    let mut want = vec!["[#r] <bob> live".to_owned()];
    want.extend((5..=53).map(|o| format!("[#r] <bob> m{o}")));
    want.extend((3..=4).map(|o| format!("[#r] <bob> m{o}")));
    assert_eq!(shown, want, "no duplicate (1, 2, 54), no gap (3..=53)");
}

#[test]
fn older_lines_are_fetched_on_request_and_the_beginning_is_said() {
    let mut h = Harness::account("e1", 0);
    let room = RoomName::parse("#r").expect("valid room");
    // Nothing held yet: the newest page (a non-member is refused).
    let effects = h.session.load_older(Stream::Room(room.clone()), h.now);
    h.apply(effects);
    assert_eq!(h.sent, vec!["HISTORY #r 50"]);
    h.server("NO-HISTORY");
    assert!(
        h.has_shown(&Event::History(HistoryNote::Unavailable(Stream::Room(
            room.clone()
        ))))
    );
    h.shown.clear();
    h.sent.clear();
    let effects = h.session.room_request(RoomOp::Join(room.clone()), h.now);
    h.apply(effects);
    h.server("JOINED #r alice");
    h.server("MEMBERS-OK #r alice");
    h.server("SAID-AT #r 40 10 bob newest");
    h.sent.clear();
    h.shown.clear();
    let effects = h.session.load_older(Stream::Room(room.clone()), h.now);
    h.apply(effects);
    let again = h.session.load_older(Stream::Room(room.clone()), h.now);
    h.apply(again);
    assert_eq!(h.sent, vec!["HISTORY #r BEFORE 40 50"], "asked once");
    h.server("HISTORY-OK #r re 40 2");
    h.server("SAID-AT #r 38 1 bob older");
    h.server("SAID-AT #r 39 2 alice mine");
    assert_eq!(
        texts(&h.shown),
        vec!["[#r] <bob> older", "[#r] <alice> mine"]
    );
    assert!(h.has_shown(&Event::History(HistoryNote::Loaded {
        stream: Stream::Room(room),
        beginning: true
    })));
}

#[test]
fn a_server_without_history_sees_exactly_what_it_saw_before() {
    let mut config = Config::interactive(Some(name("alice"))).extended();
    config.password = Some(secret("correct-horse"));
    let mut h = Harness::new(config);
    h.connected();
    h.server("EXT-OK keepalive,presence,accounts,rooms");
    h.server("HELLO alice");
    h.server("ONLINE alice");
    h.server("ONLINE-DONE");
    h.server("DELIVERY bob before");
    h.reconnect_to("keepalive,presence,accounts,rooms");
    assert_eq!(h.sent, vec![ASK, "LOGIN alice correct-horse"], "no RESUME");
    h.server("HELLO alice");
    h.sent.clear();
    let effects = h.session.load_older(Stream::Direct, h.now);
    h.apply(effects);
    assert!(h.sent.is_empty(), "no HISTORY: {:?}", h.sent);
    assert!(h.has_shown(&Event::History(HistoryNote::Unavailable(Stream::Direct))));
    // History lines it did not negotiate are not understood.
    h.server("DELIVERY-AT 1 1 bob hi");
    assert!(texts(&h.shown).is_empty(), "{:?}", h.shown);
}
