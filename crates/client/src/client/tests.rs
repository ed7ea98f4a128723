//! The session and the conversations together, through the glue: scripted server lines, typed
//! input, a fake clock.

use std::time::Duration;

use tcpchat_proto::{NameError, DEFAULT_MAX_LINE_BYTES};

use super::*;
use crate::conversations::EntryKind;
use crate::session::{LoginError, NameProblem, Offline, Undelivered, QUIT_GRACE};

fn name(s: &str) -> Username {
    Username::parse(s).expect("test name is valid")
}

/// A client plus everything it asked for, under a clock that only moves when told.
struct Harness {
    client: Client,
    now: Instant,
    /// Lines written to the server, without `\n`.
    sent: Vec<String>,
    shown: Vec<Event>,
    connects: usize,
    disconnects: usize,
    exit: Option<Result<(), LoginError>>,
}

impl Harness {
    fn new(config: Config) -> Self {
        let now = Instant::now();
        let mut h = Self {
            client: Client::new(config),
            now,
            sent: Vec::new(),
            shown: Vec::new(),
            connects: 0,
            disconnects: 0,
            exit: None,
        };
        let effects = h.client.start(now);
        h.apply(effects);
        h
    }

    /// Interactive, logged in as alice, with the initial LIST answered.
    fn online() -> Self {
        let mut h = Self::new(Config::interactive(Some(name("alice"))));
        h.client_connected();
        h.server("HELLO alice");
        h.server("LIST-OK alice,bob");
        h.take_sent();
        h.shown.clear();
        h
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            assert!(self.exit.is_none(), "effect {effect:?} after exit");
            match effect {
                Effect::Connect => self.connects += 1,
                Effect::Send(line) => {
                    assert_eq!(line.last(), Some(&b'\n'));
                    let text = String::from_utf8(line[..line.len() - 1].to_vec())
                        .expect("client writes UTF-8");
                    self.sent.push(text);
                }
                Effect::Disconnect => self.disconnects += 1,
                // A state change the entries show; the tests read those.
                Effect::Show(Event::Sending { .. }) => {}
                Effect::Show(event) => self.shown.push(event),
                Effect::Exit(result) => self.exit = Some(result),
            }
        }
    }

    fn client_connected(&mut self) {
        let effects = self.client.handle_connected(self.now);
        self.apply(effects);
    }

    fn server(&mut self, line: &str) {
        let effects = self
            .client
            .handle_bytes(format!("{line}\n").as_bytes(), self.now);
        self.apply(effects);
    }

    fn closed(&mut self) {
        let effects = self.client.handle_closed("reset", self.now);
        self.apply(effects);
    }

    fn connect_failed(&mut self) {
        let effects = self.client.handle_connect_failed("refused", self.now);
        self.apply(effects);
    }

    fn type_line(&mut self, line: &str) {
        let effects = self.client.handle_input(line, self.now);
        self.apply(effects);
    }

    /// Moves the clock by `d`, firing the timer as often as it falls due.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(at) = self.client.poll_timeout() {
            if at > end {
                break;
            }
            self.now = self.now.max(at);
            let effects = self.client.handle_timeout(self.now);
            self.apply(effects);
        }
        self.now = end;
    }

    fn take_sent(&mut self) -> Vec<String> {
        std::mem::take(&mut self.sent)
    }

    fn take_shown(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.shown)
    }

    /// The delivery states of the messages to `peer`, oldest first.
    fn states(&self, peer: &str) -> Vec<(String, Delivery)> {
        let target = Target::Peer(name(peer));
        let buffer = self
            .client
            .buffers()
            .iter()
            .find(|b| b.target == target)
            .expect("conversation exists");
        buffer
            .entries
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::Outgoing { text, state, .. } => Some((text.clone(), *state)),
                _ => None,
            })
            .collect()
    }
}

fn owned(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|l| (*l).to_owned()).collect()
}

#[test]
fn logs_in_and_chats() {
    let mut h = Harness::new(Config::interactive(Some(name("alice"))));
    assert_eq!(h.connects, 1);
    assert_eq!(h.client.phase(), &Phase::Connecting);
    h.client_connected();
    assert_eq!(h.take_sent(), owned(&["HELLO-FROM alice"]));
    h.server("HELLO alice");
    assert_eq!(h.client.phase(), &Phase::Online);
    assert_eq!(
        h.take_shown(),
        vec![Event::LoggedIn {
            name: name("alice"),
            again: false
        }]
    );
    // The online list is fetched without the user asking.
    assert_eq!(h.take_sent(), owned(&["LIST"]));
    h.server("LIST-OK bob,alice");
    assert_eq!(h.client.online(), Some(&[name("alice"), name("bob")][..]));
    assert_eq!(h.take_shown(), vec![], "an unasked list is not announced");

    h.type_line("@bob hi  there 👋");
    assert_eq!(h.take_sent(), owned(&["SEND bob hi  there 👋"]));
    assert_eq!(
        h.states("bob"),
        vec![("hi  there 👋".into(), Delivery::Sending)]
    );
    h.server("SEND-OK");
    assert_eq!(
        h.states("bob"),
        vec![("hi  there 👋".into(), Delivery::Delivered)]
    );
    assert!(matches!(
        h.take_shown().as_slice(),
        [Event::Delivered { to, text, .. }]
            if *to == name("bob") && text == "hi  there 👋"
    ));

    // Sending opened the conversation, so plain text goes there now.
    h.type_line("and more");
    assert_eq!(h.take_sent(), owned(&["SEND bob and more"]));

    h.server("DELIVERY bob hello  alice");
    assert_eq!(
        h.take_shown(),
        vec![Event::Message {
            from: name("bob"),
            text: "hello  alice".into(),
            at: None,
        }]
    );
}

#[test]
fn replies_are_matched_to_requests_in_order() {
    let mut h = Harness::online();
    h.type_line("@bob one");
    h.type_line("@carol two");
    h.type_line("!who");
    h.type_line("@bob three");
    assert_eq!(
        h.take_sent(),
        owned(&["SEND bob one", "SEND carol two", "LIST", "SEND bob three"])
    );
    // A DELIVERY between replies answers nothing.
    h.server("SEND-OK");
    h.server("DELIVERY carol hey");
    h.server("BAD-DEST-USER");
    h.server("LIST-OK alice,bob");
    h.server("BAD-RQST-BODY");
    assert_eq!(
        h.states("bob"),
        vec![
            ("one".into(), Delivery::Delivered),
            ("three".into(), Delivery::NotDelivered(Undelivered::Refused)),
        ]
    );
    assert_eq!(
        h.states("carol"),
        vec![(
            "two".into(),
            Delivery::NotDelivered(Undelivered::UserOffline)
        )]
    );
    let shown = h.take_shown();
    assert!(shown.contains(&Event::Online(vec![name("alice"), name("bob")])));
    assert!(shown.iter().any(|e| matches!(e, Event::NotDelivered {
        to,
        text,
        why: Undelivered::UserOffline,
        ..
    } if *to == name("carol") && text == "two")));
}

#[test]
fn the_same_events_however_the_bytes_are_cut() {
    let transcript: &[u8] = "HELLO alice\nLIST-OK alice,bob\nDELIVERY bob żółw 🐢\r\nSEND-OK\nBAD-DEST-USER\nDELIVERY bob  x \n".as_bytes();
    let run = |cuts: &[usize]| {
        let mut h = Harness::new(Config::interactive(Some(name("alice"))));
        h.client_connected();
        h.type_line("@bob a");
        h.type_line("@carol b");
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&transcript.len())) {
            let effects = h.client.handle_bytes(&transcript[start..cut], h.now);
            h.apply(effects);
            start = cut;
        }
        (
            h.take_sent(),
            h.take_shown(),
            h.states("bob"),
            h.states("carol"),
        )
    };
    let whole = run(&[]);
    assert_eq!(whole.2, vec![("a".into(), Delivery::Delivered)]);
    for i in 0..=transcript.len() {
        assert_eq!(run(&[i]), whole, "cut at byte {i}");
    }
    let every_byte: Vec<usize> = (1..transcript.len()).collect();
    assert_eq!(run(&every_byte), whole, "one byte at a time");
}

#[test]
fn asks_for_a_name_when_none_was_given() {
    let mut h = Harness::new(Config::interactive(None));
    assert_eq!(h.connects, 0, "no connection before there is a name");
    assert_eq!(h.take_shown(), vec![Event::NameNeeded(None)]);
    h.type_line("no spaces please");
    assert_eq!(h.connects, 0);
    assert!(matches!(
        h.take_shown().as_slice(),
        [Event::NameNeeded(Some(NameProblem::Invalid {
            err: NameError::Whitespace,
            ..
        }))]
    ));
    h.type_line("alice");
    assert_eq!(h.connects, 1);
    h.client_connected();
    assert_eq!(h.take_sent(), owned(&["HELLO-FROM alice"]));
}

#[test]
fn a_taken_name_asks_again_on_the_same_connection() {
    let mut h = Harness::new(Config::interactive(Some(name("bob"))));
    h.client_connected();
    h.take_sent();
    h.server("IN-USE");
    assert_eq!(
        h.take_shown(),
        vec![Event::NameNeeded(Some(NameProblem::Taken(name("bob"))))]
    );
    h.type_line("bob2");
    assert_eq!(
        h.connects, 1,
        "the server keeps the connection open after IN-USE"
    );
    assert_eq!(h.take_sent(), owned(&["HELLO-FROM bob2"]));
    h.server("HELLO bob2");
    assert_eq!(h.client.name(), Some(&name("bob2")));
    assert_eq!(h.client.phase(), &Phase::Online);
}

#[test]
fn a_refused_name_asks_again() {
    let mut h = Harness::new(Config::interactive(Some(name("bob"))));
    h.client_connected();
    h.server("BAD-RQST-BODY");
    assert_eq!(
        h.take_shown(),
        vec![Event::NameNeeded(Some(NameProblem::Refused(name("bob"))))]
    );
}

#[test]
fn a_script_fails_on_login_problems() {
    let cases: Vec<(&str, &str, LoginError)> = vec![
        ("IN-USE", "bob", LoginError::NameTaken(name("bob"))),
        ("BAD-RQST-BODY", "bob", LoginError::NameRefused(name("bob"))),
        ("BUSY", "bob", LoginError::ServerFull),
    ];
    for (reply, who, want) in cases {
        let mut h = Harness::new(Config::script(Some(name(who))));
        h.client_connected();
        h.server(reply);
        assert_eq!(h.exit, Some(Err(want)), "after {reply}");
    }

    let mut h = Harness::new(Config::script(Some(name("bob"))));
    h.connect_failed();
    assert_eq!(
        h.exit,
        Some(Err(LoginError::CannotConnect("refused".into())))
    );

    // A name typed at the prompt asks again, as the full-screen UI does. See: #11
    let mut h = Harness::new(Config::script(None));
    h.type_line("a,b");
    assert_eq!(h.exit, None);
    assert!(matches!(
        h.take_shown().as_slice(),
        [
            Event::NameNeeded(None),
            Event::NameNeeded(Some(NameProblem::Invalid {
                err: NameError::Comma,
                ..
            }))
        ]
    ));
}

#[test]
fn a_full_server_is_retried_with_back_off() {
    let mut h = Harness::new(Config::interactive(Some(name("alice"))));
    h.client_connected();
    h.server("BUSY");
    assert_eq!(h.disconnects, 1);
    assert!(matches!(
        h.take_shown().as_slice(),
        [Event::Offline {
            reason: Offline::Busy,
            retry_in,
            ..
        }] if *retry_in == Duration::from_secs(1)
    ));
    h.advance(Duration::from_millis(999));
    assert_eq!(h.connects, 1);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.connects, 2);
}

#[test]
fn back_off_doubles_up_to_a_limit_and_resets_after_login() {
    let mut h = Harness::new(Config::interactive(Some(name("alice"))));
    let mut delays = Vec::new();
    for _ in 0..8 {
        h.connect_failed();
        match h.take_shown().pop() {
            Some(Event::Offline { retry_in, .. }) => delays.push(retry_in.as_secs()),
            other => panic!("expected Offline, got {other:?}"),
        }
        let connects = h.connects;
        h.advance(Duration::from_secs(60));
        assert_eq!(h.connects, connects + 1);
    }
    assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30, 30]);

    h.client_connected();
    h.server("HELLO alice");
    h.closed();
    match h.take_shown().pop() {
        Some(Event::Offline { retry_in, .. }) => assert_eq!(retry_in.as_secs(), 1),
        other => panic!("expected Offline, got {other:?}"),
    }
}

#[test]
fn a_lost_connection_reconnects_and_keeps_the_history() {
    let mut h = Harness::online();
    h.type_line("@bob before");
    h.server("SEND-OK");
    h.type_line("in flight");
    h.take_sent();
    h.closed();
    assert!(matches!(
        h.client.phase(),
        Phase::Waiting {
            reason: Offline::Lost(_),
            ..
        }
    ));
    assert_eq!(
        h.states("bob"),
        vec![
            ("before".into(), Delivery::Delivered),
            (
                "in flight".into(),
                Delivery::NotDelivered(Undelivered::Unconfirmed)
            ),
        ]
    );

    // Typed while offline: kept, and sent once logged in again.
    h.type_line("while away");
    assert_eq!(h.take_sent(), Vec::<String>::new());
    h.advance(Duration::from_secs(1));
    assert_eq!(h.connects, 2);
    h.client_connected();
    assert_eq!(h.take_sent(), owned(&["HELLO-FROM alice"]));
    h.take_shown();
    h.server("HELLO alice");
    assert_eq!(h.take_sent(), owned(&["LIST", "SEND bob while away"]));
    assert!(h.take_shown().contains(&Event::LoggedIn {
        name: name("alice"),
        again: true
    }));
    h.server("LIST-OK alice,bob");
    h.server("SEND-OK");
    assert_eq!(
        h.states("bob"),
        vec![
            ("before".into(), Delivery::Delivered),
            (
                "in flight".into(),
                Delivery::NotDelivered(Undelivered::Unconfirmed)
            ),
            ("while away".into(), Delivery::Delivered),
        ]
    );
    assert_eq!(h.client.open_index(), 1, "the open conversation stays open");
}

#[test]
fn our_name_still_taken_after_a_reconnection_is_retried_not_asked() {
    let mut h = Harness::online();
    h.closed();
    h.advance(Duration::from_secs(1));
    h.client_connected();
    h.take_shown();
    h.server("IN-USE");
    assert!(matches!(
        h.client.phase(),
        Phase::Waiting {
            reason: Offline::NameStillTaken(_),
            ..
        }
    ));
    assert_eq!(h.disconnects, 1);
}

#[test]
fn a_silent_server_counts_as_gone() {
    let mut h = Harness::online();
    h.type_line("@bob hello?");
    h.advance(Duration::from_secs(19));
    assert_eq!(h.client.phase(), &Phase::Online);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.disconnects, 1);
    assert!(matches!(
        h.client.phase(),
        Phase::Waiting {
            reason: Offline::NoReply(_),
            ..
        }
    ));
    assert_eq!(
        h.states("bob"),
        vec![(
            "hello?".into(),
            Delivery::NotDelivered(Undelivered::Unconfirmed)
        )]
    );
}

#[test]
fn the_online_list_stays_fresh() {
    let mut h = Harness::online();
    h.type_line("/query bob");
    h.take_shown();
    h.advance(Duration::from_secs(5));
    assert_eq!(h.take_sent(), owned(&["LIST"]));
    // No second LIST while the first is unanswered.
    h.advance(Duration::from_secs(5));
    assert_eq!(h.take_sent(), Vec::<String>::new());
    h.server("LIST-OK alice,carol");
    assert_eq!(
        h.take_shown(),
        vec![Event::Joined(name("carol")), Event::Left(name("bob"))]
    );
    let last = h
        .client
        .open_buffer()
        .entries
        .back()
        .map(|e| e.kind.clone());
    assert_eq!(last, Some(EntryKind::Notice("bob went offline".into())));
}

#[test]
fn unread_counts_follow_the_open_conversation() {
    let mut h = Harness::online();
    h.type_line("/query bob");
    h.server("DELIVERY carol psst");
    h.server("DELIVERY carol psst again");
    h.server("DELIVERY bob visible");
    let unread: Vec<(usize, usize)> = h
        .client
        .buffers()
        .iter()
        .enumerate()
        .map(|(i, b)| (i, b.unread))
        .collect();
    assert_eq!(unread, vec![(0, 0), (1, 0), (2, 2)]);
    h.client.select(2);
    assert_eq!(h.client.buffers()[2].unread, 0);
}

#[test]
fn quit_leaves_at_once_whatever_is_pending() {
    // See: #11
    let mut h = Harness::online();
    h.type_line("@bob last words");
    h.type_line("/quit");
    assert_eq!(h.exit, Some(Ok(())));
    assert_eq!(h.disconnects, 1);
    assert_eq!(
        h.states("bob"),
        vec![(
            "last words".into(),
            Delivery::NotDelivered(Undelivered::LeftUnanswered)
        )]
    );

    let mut h = Harness::online();
    h.type_line("!quit");
    assert_eq!(h.exit, Some(Ok(())), "nothing to wait for");

    // Offline with a message queued: no wait either.
    let mut h = Harness::online();
    h.closed();
    h.type_line("@bob queued");
    let effects = h.client.handle_quit(h.now);
    h.apply(effects);
    assert_eq!(h.exit, Some(Ok(())));
    assert_eq!(
        h.states("bob"),
        vec![(
            "queued".into(),
            Delivery::NotDelivered(Undelivered::NotSent)
        )]
    );
}

#[test]
fn the_end_of_input_waits_a_bounded_time_for_answers() {
    let mut h = Harness::online();
    h.type_line("@bob last words");
    let effects = h.client.handle_end_of_input(h.now);
    h.apply(effects);
    assert_eq!(h.exit, None);
    h.type_line("@bob ignored after the end");
    assert_eq!(h.take_sent(), owned(&["SEND bob last words"]));
    h.server("SEND-OK");
    assert_eq!(h.exit, Some(Ok(())));

    let mut h = Harness::online();
    h.type_line("@bob never answered");
    let effects = h.client.handle_end_of_input(h.now);
    h.apply(effects);
    h.advance(QUIT_GRACE);
    assert_eq!(h.exit, Some(Ok(())));
}

#[test]
fn end_of_input_before_login_still_sends_what_was_typed() {
    // `echo '@bob hi' | tcpchat connect --plain --name alice`
    let mut h = Harness::new(Config::script(Some(name("alice"))));
    h.type_line("@bob hi");
    let effects = h.client.handle_end_of_input(h.now);
    h.apply(effects);
    assert_eq!(h.exit, None);
    h.client_connected();
    h.server("HELLO alice");
    assert_eq!(h.take_sent(), owned(&["HELLO-FROM alice", "SEND bob hi"]));
    h.server("SEND-OK");
    assert!(h.take_shown().iter().any(
        |e| matches!(e, Event::Delivered { to, text, .. } if *to == name("bob") && text == "hi")
    ));
    assert_eq!(h.exit, Some(Ok(())));

    // And a script that cannot connect fails even though it is quitting.
    let mut h = Harness::new(Config::script(Some(name("alice"))));
    h.type_line("@bob hi");
    let effects = h.client.handle_end_of_input(h.now);
    h.apply(effects);
    h.connect_failed();
    assert_eq!(
        h.exit,
        Some(Err(LoginError::CannotConnect("refused".into())))
    );
}

#[test]
fn commands_that_need_a_conversation_or_a_connection_explain() {
    let mut h = Harness::online();
    h.type_line("hello?");
    assert!(matches!(h.take_shown().as_slice(), [Event::Notice(t)] if t.contains("@user")));
    h.type_line("/nope");
    assert!(
        matches!(h.take_shown().as_slice(), [Event::Notice(t)] if t.contains("unknown command /nope"))
    );
    h.type_line("/help");
    assert_eq!(h.take_shown(), vec![Event::Help]);
    assert_eq!(h.take_sent(), Vec::<String>::new());
    h.type_line("/query dave");
    assert_eq!(h.take_shown(), vec![Event::Opened(name("dave"))]);
    h.type_line("/close");
    assert_eq!(h.client.open_index(), 0);
}

#[test]
fn too_long_messages_are_refused_locally() {
    let mut h = Harness::online();
    let long = "x".repeat(DEFAULT_MAX_LINE_BYTES);
    h.type_line(&format!("@bob {long}"));
    assert_eq!(h.take_sent(), Vec::<String>::new());
    assert_eq!(
        h.states("bob"),
        vec![(long, Delivery::NotDelivered(Undelivered::TooLong))]
    );
}

#[test]
fn garbage_and_unsolicited_replies_are_ignored() {
    let mut h = Harness::online();
    h.server("WHAT IS THIS");
    h.server("SEND-OK");
    h.server("\u{1b}[2J");
    assert_eq!(h.client.phase(), &Phase::Online);
    // Said once, in words: never the raw line (it may hold escape sequences). See: #11
    assert!(matches!(
        h.take_shown().as_slice(),
        [Event::Notice(t)] if t.contains("does not understand") && !t.contains("WHAT")
    ));
    h.type_line("@bob still fine");
    h.server("SEND-OK");
    assert_eq!(
        h.states("bob"),
        vec![("still fine".into(), Delivery::Delivered)]
    );
}

#[test]
fn messages_to_yourself_arrive() {
    let mut h = Harness::online();
    h.type_line("@alice note to self");
    assert_eq!(h.take_sent(), owned(&["SEND alice note to self"]));
    h.server("SEND-OK");
    h.server("DELIVERY alice note to self");
    let kinds: Vec<_> = h
        .client
        .open_buffer()
        .entries
        .iter()
        .map(|e| &e.kind)
        .collect();
    assert!(matches!(
        kinds.as_slice(),
        [
            EntryKind::Outgoing {
                state: Delivery::Delivered,
                ..
            },
            EntryKind::Incoming { .. }
        ]
    ));
}

#[test]
fn a_script_without_input_still_reports_its_login() {
    // `tcpchat connect --plain --name alice < /dev/null` says whether it could log in.
    let mut h = Harness::new(Config::script(Some(name("alice"))));
    let effects = h.client.handle_end_of_input(h.now);
    h.apply(effects);
    assert_eq!(h.exit, None);
    h.client_connected();
    h.server("IN-USE");
    assert_eq!(h.exit, Some(Err(LoginError::NameTaken(name("alice")))));

    let mut h = Harness::new(Config::script(Some(name("alice"))));
    let effects = h.client.handle_end_of_input(h.now);
    h.apply(effects);
    h.client_connected();
    h.server("HELLO alice");
    assert_eq!(h.exit, Some(Ok(())));

    let mut h = Harness::new(Config::script(Some(name("alice"))));
    let effects = h.client.handle_end_of_input(h.now);
    h.apply(effects);
    h.advance(QUIT_GRACE);
    assert_eq!(h.exit, Some(Err(LoginError::NoReply(QUIT_GRACE))));

    // A person quitting while connecting is not kept waiting.
    let mut h = Harness::new(Config::interactive(Some(name("alice"))));
    let effects = h.client.handle_quit(h.now);
    h.apply(effects);
    assert_eq!(h.exit, Some(Ok(())));
}

#[test]
fn only_the_first_failure_of_a_streak_is_kept_in_the_history() {
    let mut h = Harness::online();
    h.type_line("/query bob");
    h.closed();
    for _ in 0..3 {
        h.advance(Duration::from_secs(60));
        h.connect_failed();
    }
    let notices = |b: &Buffer| {
        b.entries
            .iter()
            .filter(|e| matches!(&e.kind, EntryKind::Notice(t) if t.contains("retrying")))
            .count()
    };
    assert_eq!(notices(&h.client.buffers()[0]), 1);
    assert_eq!(notices(h.client.open_buffer()), 1);
    let offline = h
        .take_shown()
        .into_iter()
        .filter(|e| matches!(e, Event::Offline { .. }))
        .count();
    assert_eq!(offline, 4, "each failure is still an event");
}

#[test]
fn a_message_from_someone_proves_they_are_online() {
    let mut h = Harness::online();
    h.server("DELIVERY carol hi");
    assert_eq!(
        h.client.online(),
        Some(&[name("alice"), name("bob"), name("carol")][..])
    );
    h.type_line("@dave hi");
    h.server("SEND-OK");
    assert_eq!(h.client.online().map(<[Username]>::len), Some(4));
    h.type_line("@dave again");
    h.server("BAD-DEST-USER");
    assert_eq!(h.client.online().map(<[Username]>::len), Some(3));
}

#[test]
fn who_before_login_is_answered_after_it() {
    // printf '!who\n' | tcpchat connect --plain --name alice
    let mut h = Harness::new(Config::script(Some(name("alice"))));
    h.type_line("!who");
    let effects = h.client.handle_end_of_input(h.now);
    h.apply(effects);
    h.client_connected();
    h.server("HELLO alice");
    assert_eq!(h.take_sent(), owned(&["HELLO-FROM alice", "LIST"]));
    assert_eq!(h.exit, None, "still waiting for the list");
    h.server("LIST-OK alice,bob");
    assert!(h
        .take_shown()
        .contains(&Event::Online(vec![name("alice"), name("bob")])));
    assert_eq!(h.exit, Some(Ok(())));
}

#[test]
fn closing_a_conversation_keeps_its_queued_message() {
    // See: #11. The session's store owns the message, not the conversation.
    let mut h = Harness::online();
    h.closed();
    h.type_line("@bob typed while offline");
    h.type_line("/close");
    assert!(h
        .client
        .buffers()
        .iter()
        .all(|b| b.target == Target::Status));
    h.advance(Duration::from_secs(1));
    h.client_connected();
    h.server("HELLO alice");
    assert_eq!(
        h.take_sent(),
        owned(&["HELLO-FROM alice", "LIST", "SEND bob typed while offline"])
    );
    h.server("LIST-OK alice,bob");
    h.server("SEND-OK");
    assert!(h.take_shown().iter().any(|e| matches!(
        e,
        Event::Delivered { text, .. } if text == "typed while offline"
    )));
    let status = &h.client.buffers()[0];
    assert!(
        status
            .entries
            .iter()
            .any(|e| e.kind == EntryKind::Notice("delivered to bob: typed while offline".into())),
        "the outcome is told in the status buffer: {:#?}",
        status.entries
    );
}

#[test]
fn a_flood_of_deliveries_cannot_grow_the_client() {
    // See: #11. A hostile server sends messages from ever new names, without end.
    let mut h = Harness::online();
    let body = "z".repeat(3000);
    let mut chunk = Vec::new();
    for i in 0..(crate::MAX_CONVERSATIONS * 4) {
        for _ in 0..20 {
            chunk.extend_from_slice(format!("DELIVERY flood{i} {body}\n").as_bytes());
        }
        let effects = h.client.handle_bytes(&chunk, h.now);
        chunk.clear();
        drop(effects);
    }
    for _ in 0..(crate::MAX_HISTORY_ENTRIES + 50) {
        h.server("DELIVERY flood0 again");
    }
    let buffers = h.client.buffers();
    assert_eq!(buffers.len(), crate::MAX_CONVERSATIONS);
    let total: usize = buffers.iter().map(Buffer::text_bytes).sum();
    assert!(total <= crate::MAX_CONVERSATIONS * crate::MAX_HISTORY_BYTES);
    assert!(buffers
        .iter()
        .all(|b| b.entries.len() <= crate::MAX_HISTORY_ENTRIES));
    assert_eq!(h.client.session().unsettled(), 0);
    assert_eq!(h.client.session().pending_requests(), 0);
}

// ---- accounts through the glue (#13) --------------------------------------------------------

/// Extended and logged in as alice on a server offering every extension.
fn online_with_accounts() -> Harness {
    let mut h = Harness::new(Config::interactive(Some(name("alice"))).extended());
    h.client_connected();
    h.server("EXT-OK keepalive,presence,accounts");
    h.server("HELLO alice");
    h.server("ONLINE alice,bob");
    h.server("ONLINE-DONE");
    h.take_sent();
    h.take_shown();
    h
}

/// Every text the conversations hold, for checking that no password is among them.
fn all_text(h: &Harness) -> String {
    format!("{:?}", h.client.buffers())
}

#[test]
fn register_asks_twice_and_sends_once() {
    let mut h = online_with_accounts();
    h.type_line("/register");
    assert_eq!(h.client.password_prompt(), Some(PasswordPrompt::New));
    h.type_line("tiny");
    assert_eq!(
        h.client.password_prompt(),
        Some(PasswordPrompt::New),
        "too short"
    );
    h.type_line("correct-horse");
    assert_eq!(h.client.password_prompt(), Some(PasswordPrompt::Again));
    h.type_line("correct-hose");
    // A typing mistake starts over.
    assert_eq!(h.client.password_prompt(), Some(PasswordPrompt::New));
    h.type_line("correct-horse");
    h.type_line("correct-horse");
    assert_eq!(h.client.password_prompt(), None);
    assert_eq!(h.take_sent(), owned(&["REGISTER correct-horse"]));
    h.server("REGISTER-OK");
    assert!(all_text(&h).contains("your name is registered"));
    assert!(!all_text(&h).contains("horse"), "{}", all_text(&h));
    assert!(!all_text(&h).contains("hose"));
}

#[test]
fn change_password_asks_old_new_and_again() {
    let mut h = online_with_accounts();
    h.type_line("/password");
    assert_eq!(h.client.password_prompt(), Some(PasswordPrompt::Current));
    h.type_line("old-password");
    assert_eq!(h.client.password_prompt(), Some(PasswordPrompt::New));
    h.type_line("new-password");
    h.type_line("new-password");
    assert_eq!(
        h.take_sent(),
        owned(&["PASSWORD old-password new-password"])
    );
    h.server("BAD-PASSWORD");
    assert!(all_text(&h).contains("wrong password"), "{}", all_text(&h));
}

#[test]
fn unregister_asks_once_and_an_empty_line_cancels() {
    let mut h = online_with_accounts();
    h.type_line("/unregister");
    h.type_line("");
    assert_eq!(h.client.password_prompt(), None);
    assert!(h.take_sent().is_empty());
    assert!(all_text(&h).contains("cancelled"));
    // After a cancel, input is chat again.
    h.type_line("@bob hi");
    assert_eq!(h.take_sent(), owned(&["SEND bob hi"]));
    h.type_line("/unregister");
    h.type_line("old-password");
    assert_eq!(h.take_sent(), owned(&["UNREGISTER old-password"]));
    h.server("SEND-OK");
    h.server("UNREGISTER-OK");
    assert!(all_text(&h).contains("your account is deleted"));
}

#[test]
fn account_commands_explain_when_the_server_has_no_accounts() {
    let mut h = Harness::online();
    h.type_line("/register");
    assert_eq!(h.client.password_prompt(), None);
    assert!(h.take_sent().is_empty());
    assert!(all_text(&h).contains("no accounts"), "{}", all_text(&h));
    // A password on the command line is refused before it goes anywhere.
    h.type_line("/register hunter22");
    assert!(h.take_sent().is_empty());
    assert!(all_text(&h).contains("type /register alone"));
}

#[test]
fn the_login_password_prompt_takes_the_next_line() {
    let mut h = Harness::new(Config::interactive(Some(name("alice"))).extended());
    h.client_connected();
    h.server("EXT-OK accounts");
    h.server("NAME-REGISTERED");
    assert_eq!(
        h.client.password_prompt(),
        Some(PasswordPrompt::Login(name("alice")))
    );
    h.take_sent();
    // Even a line that looks like a command is the password here.
    h.type_line("/who-is-it");
    assert_eq!(h.take_sent(), owned(&["LOGIN alice /who-is-it"]));
    h.server("HELLO alice");
    assert_eq!(h.client.password_prompt(), None);
    assert!(!all_text(&h).contains("who-is-it"));
}

#[test]
fn ask_password_prompts_before_connecting() {
    let mut config = Config::interactive(Some(name("alice"))).extended();
    config.ask_password = true;
    let mut h = Harness::new(config);
    assert_eq!(h.connects, 0);
    assert_eq!(
        h.client.password_prompt(),
        Some(PasswordPrompt::Login(name("alice")))
    );
    h.type_line("correct-horse");
    assert_eq!(h.connects, 1);
    h.client_connected();
    assert_eq!(
        h.take_sent(),
        owned(&["EXT keepalive,presence,accounts,rooms,history"])
    );
    h.server("EXT-OK keepalive,presence,accounts");
    assert_eq!(h.take_sent(), owned(&["LOGIN alice correct-horse"]));
}

// ---- rooms through the glue (#14) -----------------------------------------------------------

fn room(s: &str) -> tcpchat_proto::RoomName {
    tcpchat_proto::RoomName::parse(s).expect("test room is valid")
}

/// Extended and logged in as alice on a server offering every extension, rooms included.
fn online_with_rooms() -> Harness {
    let mut h = Harness::new(Config::interactive(Some(name("alice"))).extended());
    h.client_connected();
    h.server("EXT-OK keepalive,presence,accounts,rooms,history");
    h.server("HELLO alice");
    h.server("ONLINE alice,bob");
    h.server("ONLINE-DONE");
    h.take_sent();
    h.take_shown();
    h
}

impl Harness {
    fn room_buffer(&self, r: &str) -> &Buffer {
        let target = Target::Room(room(r));
        self.client
            .buffers()
            .iter()
            .find(|b| b.target == target)
            .expect("room conversation exists")
    }

    /// A room's entries as text: `<from> text` for messages (`me:` and the state for ours),
    /// `* text` for remarks.
    fn room_lines(&self, r: &str) -> Vec<String> {
        self.room_buffer(r)
            .entries
            .iter()
            .map(|e| match &e.kind {
                EntryKind::Incoming { from, text } => format!("<{from}> {text}"),
                EntryKind::Outgoing { text, state, .. } => format!("me: {text} ({state:?})"),
                EntryKind::Notice(text) => format!("* {text}"),
            })
            .collect()
    }

    fn members(&self, r: &str) -> Vec<String> {
        self.room_buffer(r)
            .members
            .iter()
            .map(|n| n.as_str().to_owned())
            .collect()
    }
}

#[test]
fn a_room_is_a_conversation() {
    let mut h = online_with_rooms();
    h.type_line("/join #r");
    assert_eq!(h.take_sent(), owned(&["JOIN #r"]));
    assert_eq!(h.client.open_buffer().target, Target::Room(room("#r")));
    // The join is answered by the room's own line; then the topic; then who is there, asked.
    h.server("JOINED #r alice");
    assert_eq!(h.take_sent(), owned(&["MEMBERS #r"]));
    h.server("TOPIC-IS #r bob all about r");
    h.server("MEMBERS-OK #r bob,alice");
    assert_eq!(h.members("#r"), vec!["bob", "alice"]);
    assert_eq!(h.room_buffer("#r").topic.as_deref(), Some("all about r"));
    assert_eq!(h.client.session().joined_rooms(), &[room("#r")]);

    // Plain text goes to the open room. Shown at once, confirmed and placed by its echo.
    h.type_line("hi  all");
    assert_eq!(h.take_sent(), owned(&["SAY #r hi  all"]));
    assert_eq!(
        h.room_lines("#r").last().map(String::as_str),
        Some("me: hi  all (Sending)")
    );
    h.server("SAID #r bob first");
    h.server("SAID #r alice hi  all");
    let lines = h.room_lines("#r");
    assert_eq!(
        lines[lines.len() - 2..],
        [
            "<bob> first".to_owned(),
            "me: hi  all (Delivered)".to_owned()
        ],
        "the room's order, not the typing order: {lines:?}"
    );
    assert_eq!(h.client.session().pending_requests(), 0);

    h.server("JOINED #r carol");
    h.server("PARTED #r bob");
    assert_eq!(h.members("#r"), vec!["alice", "carol"]);
    h.type_line("/topic");
    h.type_line("/topic -");
    assert_eq!(h.take_sent(), owned(&["TOPIC #r"]));
    h.server("TOPIC-IS #r alice");
    assert_eq!(h.room_buffer("#r").topic, None);
    h.type_line("/kick carol");
    assert_eq!(h.take_sent(), owned(&["KICK #r carol"]));
    h.server("KICKED #r carol alice");
    assert_eq!(h.members("#r"), vec!["alice"]);
    assert_eq!(h.client.session().pending_requests(), 0);

    // Elsewhere, the room's messages count as unread; the user's remarks do not.
    h.client.select(0);
    h.server("SAID #r dave one");
    h.server("JOINED #r erin");
    h.server("SAID #r erin two");
    assert_eq!(h.room_buffer("#r").unread, 2);
    h.type_line("/rooms");
    assert_eq!(h.take_sent(), owned(&["ROOMS"]));
    h.server("ROOMS-OK #a,#r");
    let status: Vec<String> = h.client.buffers()[0]
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Notice(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    assert!(
        status.contains(&"rooms (2): #a, #r".to_owned()),
        "{status:?}"
    );

    h.type_line("/part #r");
    assert_eq!(h.take_sent(), owned(&["PART #r"]));
    h.server("PARTED #r alice");
    assert!(h.members("#r").is_empty());
    assert!(h.client.session().joined_rooms().is_empty());
    assert!(h.room_lines("#r").iter().any(|l| l.contains("you left #r")));
}

#[test]
fn room_lines_make_the_same_conversation_however_the_bytes_are_cut() {
    let transcript: &[u8] = "JOINED #r alice\nTOPIC-IS #r bob ż topic\nSAID #r bob yo  🐢\r\n\
        SAID #r alice hi\nNOT-MEMBER\nMEMBERS-OK #r bob,alice\nJOINED #r carol\n\
        SAID #r carol x \nKICKED #r carol bob\nPARTED #r bob\n"
        .as_bytes();
    let run = |cuts: &[usize]| {
        let mut h = online_with_rooms();
        h.type_line("/join #r");
        h.type_line("hi");
        h.type_line("/part #zz");
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&transcript.len())) {
            let effects = h.client.handle_bytes(&transcript[start..cut], h.now);
            h.apply(effects);
            start = cut;
        }
        (
            h.take_sent(),
            h.take_shown(),
            h.room_lines("#r"),
            h.members("#r"),
            h.room_buffer("#r").topic.clone(),
            h.client.session().joined_rooms().to_vec(),
            h.client.session().pending_requests(),
        )
    };
    let whole = run(&[]);
    assert_eq!(
        whole.0,
        owned(&["JOIN #r", "SAY #r hi", "PART #zz", "MEMBERS #r"])
    );
    assert_eq!(whole.3, vec!["alice".to_owned()]);
    assert_eq!(whole.4.as_deref(), Some("ż topic"));
    assert!(
        whole.2.contains(&"me: hi (Delivered)".to_owned()),
        "{:?}",
        whole.2
    );
    assert!(
        whole.2.contains(&"<bob> yo  🐢".to_owned()),
        "{:?}",
        whole.2
    );
    assert_eq!(whole.5, vec![room("#r")]);
    assert_eq!(whole.6, 0, "every request answered");
    for i in 0..=transcript.len() {
        assert_eq!(run(&[i]), whole, "cut at byte {i}");
    }
    let every_byte: Vec<usize> = (1..transcript.len()).collect();
    assert_eq!(run(&every_byte), whole, "one byte at a time");
}

#[test]
fn a_reconnection_joins_the_rooms_again() {
    let mut h = online_with_rooms();
    h.type_line("/join #a");
    h.server("JOINED #a alice");
    h.server("MEMBERS-OK #a alice");
    h.type_line("/join #b");
    h.server("JOINED #b alice");
    h.server("MEMBERS-OK #b bob,alice");
    h.type_line("in flight");
    h.take_sent();
    h.closed();
    assert!(h
        .room_lines("#b")
        .contains(&"me: in flight (NotDelivered(Unconfirmed))".to_owned()));
    h.advance(Duration::from_secs(1));
    h.client_connected();
    h.take_sent();
    h.server("EXT-OK keepalive,presence,accounts,rooms,history");
    h.server("HELLO alice");
    assert_eq!(h.take_sent(), owned(&["JOIN #a", "JOIN #b"]));
    h.server("ONLINE alice,bob");
    h.server("ONLINE-DONE");
    h.server("JOINED #a alice");
    // #b filled up meanwhile: refused, and not tried again next time.
    h.server("ROOM-FULL");
    assert_eq!(h.take_sent(), owned(&["MEMBERS #a"]));
    h.server("MEMBERS-OK #a alice");
    assert_eq!(h.client.session().joined_rooms(), &[room("#a")]);
    assert!(h.members("#b").is_empty(), "{:?}", h.members("#b"));
    // A server that no longer offers rooms: the client says so, and forgets them.
    h.closed();
    h.advance(Duration::from_secs(5));
    h.client_connected();
    h.server("EXT-OK keepalive");
    h.server("HELLO alice");
    assert!(!h.take_sent().iter().any(|l| l.starts_with("JOIN")));
    assert!(h.client.session().joined_rooms().is_empty());
}

#[test]
fn room_commands_explain_what_they_need() {
    let mut h = online_with_rooms();
    for line in ["/part", "/members", "/topic x", "/kick bob"] {
        h.type_line(line);
        assert!(h.take_sent().is_empty(), "{line}");
    }
    let said = h.client.buffers()[0]
        .entries
        .iter()
        .filter(|e| {
            matches!(
                &e.kind,
                EntryKind::Notice(t) if t.starts_with("the open conversation is not a room")
            )
        })
        .count();
    assert_eq!(said, 4);
    h.type_line("/join nohash");
    assert!(h.take_sent().is_empty());
    // Refusals, in words and on the message.
    h.type_line("/join #r");
    h.server("ROOM-LIMIT");
    h.type_line("hi");
    assert_eq!(h.take_sent(), owned(&["JOIN #r", "SAY #r hi"]));
    h.server("NOT-MEMBER");
    assert_eq!(
        h.room_lines("#r"),
        vec![
            "* joining #r: you are in as many rooms as the server allows; /part one first",
            "me: hi (NotDelivered(Refused))",
            "* the message to #r: you are not in that room (/join it first)",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>()
    );
    let too_long = "x".repeat(DEFAULT_MAX_LINE_BYTES);
    h.type_line(&too_long);
    assert!(h.take_sent().is_empty());
    assert!(h
        .room_lines("#r")
        .iter()
        .any(|l| l.ends_with("(NotDelivered(TooLong))")));

    // A server without rooms: nothing is sent, and the user is told.
    let mut h = online_with_accounts();
    h.type_line("/join #r");
    h.type_line("hi");
    assert!(h.take_sent().is_empty());
    assert_eq!(
        h.room_lines("#r").last().map(String::as_str),
        Some("* the message to #r: this server has no rooms (or you are not logged in yet)")
    );
    // And room lines it did not negotiate are not understood.
    h.server("SAID #r mallory boo");
    assert!(!h.room_lines("#r").iter().any(|l| l.contains("boo")));
}

// ---- history (#14) --------------------------------------------------------------------------

#[test]
fn a_rejoined_room_gets_what_it_missed_in_order_once() {
    let mut h = online_with_rooms();
    h.type_line("/join #r");
    h.server("JOINED #r alice");
    h.server("MEMBERS-OK #r alice,bob");
    h.server("SAID-AT #r 1 1764666900000 bob one");
    h.server("SAID-AT #r 2 1764666900001 bob two");
    h.closed();
    h.advance(Duration::from_secs(1));
    h.client_connected();
    h.server("EXT-OK keepalive,presence,accounts,rooms,history");
    h.server("HELLO alice");
    h.server("ONLINE alice,bob");
    h.server("ONLINE-DONE");
    h.take_sent();
    h.server("JOINED #r alice");
    assert_eq!(h.take_sent(), ["MEMBERS #r", "HISTORY #r 50"]);
    h.server("MEMBERS-OK #r alice,bob");
    h.server("SAID-AT #r 6 6 bob six, live");
    h.server("HISTORY-OK #r e 6 5");
    for (o, who) in [(2, "bob"), (3, "bob"), (4, "alice"), (5, "bob"), (6, "bob")] {
        h.server(&format!("SAID-AT #r {o} {o} {who} m{o}"));
    }
    let messages: Vec<String> = h
        .room_lines("#r")
        .into_iter()
        .filter(|l| !l.starts_with('*'))
        .collect();
    assert_eq!(
        messages,
        [
            "<bob> one",
            "<bob> two",
            "<bob> m3",
            "me: m4 (Delivered)",
            "<bob> m5",
            "<bob> six, live"
        ]
    );
    let stamps: Vec<u64> = h
        .room_buffer("#r")
        .entries
        .iter()
        .filter_map(|e| e.stamp.map(|s| s.offset))
        .collect();
    assert_eq!(stamps, [1, 2, 3, 4, 5, 6]);
}

#[test]
fn a_restored_state_brings_back_conversations_and_unread_counts() {
    let mut positions = crate::history::Positions::default();
    positions.direct_caught_up("e1", 9);
    let restored = crate::state::Restored {
        positions,
        joined: vec![room("#r")],
        conversations: vec![
            (Target::Peer(name("bob")), 2),
            (Target::Room(room("#r")), 1),
        ],
    };
    let mut config = Config::interactive(Some(name("alice"))).extended();
    config.password = Some(crate::Secret::parse("correct-horse").expect("valid"));
    let mut client = Client::new(config);
    client.restore(restored);
    let now = Instant::now();
    client.start(now);
    let sent: Vec<String> = client
        .handle_connected(now)
        .into_iter()
        .chain(client.handle_bytes(b"EXT-OK accounts,rooms,history\n", now))
        .filter_map(|e| match e {
            Effect::Send(l) => Some(String::from_utf8_lossy(&l).trim_end().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(
        sent,
        [
            "EXT keepalive,presence,accounts,rooms,history",
            "RESUME e1 9",
            "LOGIN alice correct-horse"
        ]
    );
    let effects = client.handle_bytes(b"HELLO alice\nDELIVERY-AT 10 5 bob missed\n", now);
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::Send(l) if l == b"JOIN #r\n")));
    let unread: Vec<(Target, usize)> = client.conversations().unread_counts();
    assert_eq!(
        unread,
        [
            (Target::Room(room("#r")), 1),
            (Target::Peer(name("bob")), 3)
        ]
    );
}

#[test]
fn an_older_page_is_not_unread_but_a_missed_message_is() {
    let mut config = Config::interactive(Some(name("alice"))).extended();
    config.password = Some(crate::Secret::parse("correct-horse").expect("valid"));
    let mut h = Harness::new(config);
    h.client_connected();
    h.server("EXT-OK accounts,history");
    h.server("HELLO alice");
    h.server("LIST-OK alice,bob,carol");
    h.server("DELIVERY-AT 8 1 carol missed while away");
    h.server("RESUME-OK e1 9");
    h.server("DELIVERY-AT 10 2 bob hello");
    h.type_line("/query bob");
    h.take_sent();
    let unread = |h: &Harness, who: &str| {
        h.client
            .buffers()
            .iter()
            .find(|b| b.target == Target::Peer(name(who)))
            .map_or(0, |b| b.unread)
    };
    assert_eq!(unread(&h, "carol"), 1, "the catch-up is news");
    let effects = h.client.load_older(h.now);
    h.apply(effects);
    assert_eq!(h.take_sent(), ["HISTORY @ BEFORE 8 50"]);
    h.server("HISTORY-OK @ e1 10 2");
    h.server("DELIVERY-AT 3 0 carol long ago");
    h.server("DELIVERY-AT 4 0 bob long ago too");
    assert_eq!(unread(&h, "carol"), 1, "an older page is not");
    let bob = &h.client.open_buffer().entries;
    let texts: Vec<&str> = bob
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Incoming { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["long ago too", "hello"], "placed by offset");
    assert_eq!(h.client.open_buffer().older, crate::Older::Beginning);
}
