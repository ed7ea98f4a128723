//! The screen, drawn into ratatui's test backend and compared with a picture of it.
//!
//! The client is fed scripted server lines and key presses under a fixed clock (12:00), so the
//! pictures are exact. A mismatch prints the expected and the drawn screen as blocks.

use std::time::{Duration, Instant};

use chrono::NaiveTime;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use tcpchat_client::net::NetEvent;
use tcpchat_client::{Config, Effect};
use tcpchat_proto::Username;
use tcpchat_tui::{view, App, Clock};
use unicode_width::UnicodeWidthStr;

struct Screen {
    app: App,
    t0: Instant,
    now: Instant,
    sent: Vec<String>,
}

impl Screen {
    fn new(name: Option<&str>) -> Self {
        let name = name.map(|n| Username::parse(n).expect("valid test name"));
        Self::with_config(Config::interactive(name))
    }

    fn with_config(config: Config) -> Self {
        let t0 = Instant::now();
        let clock = Clock::new(t0, NaiveTime::from_hms_opt(12, 0, 0).expect("a time"));
        let mut app = App::new("localhost:5378", config, clock);
        let effects = app.start(t0);
        let mut s = Self {
            app,
            t0,
            now: t0,
            sent: Vec::new(),
        };
        s.record(effects);
        s
    }

    /// Logged in as alice with alice, bob and carol online, at 12:00.
    fn online() -> Self {
        let mut s = Self::new(Some("alice"));
        s.net(NetEvent::Connected);
        s.server("HELLO alice");
        s.server("LIST-OK alice,bob,carol");
        s.sent.clear();
        s
    }

    fn record(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            if let Effect::Send(line) = effect {
                self.sent
                    .push(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
        }
    }

    fn at_minute(&mut self, minute: u64) {
        self.now = self.t0 + Duration::from_secs(60 * minute);
    }

    fn net(&mut self, event: NetEvent) {
        let effects = self.app.handle_net(event, self.now);
        self.record(effects);
    }

    fn server(&mut self, line: &str) {
        self.net(NetEvent::Bytes(format!("{line}\n").into_bytes()));
    }

    fn key(&mut self, code: KeyCode) {
        self.key_with(code, KeyModifiers::NONE);
    }

    fn key_with(&mut self, code: KeyCode, modifiers: KeyModifiers) {
        let effects = self
            .app
            .handle_key(KeyEvent::new(code, modifiers), self.now);
        self.record(effects);
    }

    fn type_text(&mut self, text: &str) {
        for c in text.chars() {
            self.key(KeyCode::Char(c));
        }
    }

    fn type_line(&mut self, text: &str) {
        self.type_text(text);
        self.key(KeyCode::Enter);
    }

    /// The screen's text, one string per row, trailing spaces removed. The cell a wide
    /// character spills into is skipped, so rows read as the terminal shows them.
    fn draw(&self, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
        terminal
            .draw(|frame| view::render(&self.app, frame))
            .expect("draw");
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                let mut row = String::new();
                let mut skip = 0;
                for x in 0..width {
                    if skip > 0 {
                        skip -= 1;
                        continue;
                    }
                    let symbol = buffer[(x, y)].symbol();
                    skip = symbol.width().saturating_sub(1);
                    row.push_str(symbol);
                }
                row.trim_end().to_owned()
            })
            .collect()
    }
}

#[track_caller]
fn assert_screen(got: &[String], want: &[&str]) {
    let want: Vec<String> = want.iter().map(|l| l.trim_end().to_owned()).collect();
    if got != want.as_slice() {
        panic!(
            "\nexpected screen:\n{}\n\ngot:\n{}\n",
            want.join("\n"),
            got.join("\n")
        );
    }
}

#[test]
fn a_conversation_with_unread_counts_and_delivery_states() {
    let mut s = Screen::online();
    s.at_minute(1);
    s.type_line("@bob hi bob");
    s.server("SEND-OK");
    s.at_minute(2);
    s.server("DELIVERY bob hello alice 👋");
    s.type_line("@nobody are you there?");
    s.server("BAD-DEST-USER");
    s.type_line("/query bob");
    s.type_line("still there?");
    s.server("DELIVERY carol psst");
    s.server("DELIVERY carol over here");
    s.type_text("typing…");
    assert_eq!(
        s.sent,
        [
            "SEND bob hi bob",
            "SEND nobody are you there?",
            "SEND bob still there?"
        ]
    );
    assert_screen(
        &s.draw(80, 8),
        &[
            " 1 status      │12:01 <alice> hi bob ✓                          │ online (3)",
            " 2 bob         │12:02 <bob> hello alice 👋                      │ alice",
            " 3 nobody      │12:02 <alice> still there? (sending…)           │ bob",
            " 4 carol (2)   │                                                │ carol",
            "               │                                                │",
            "               │                                                │",
            " localhost:5378 │ alice │ online                 [4] carol: over here │ F1 help",
            "[bob] typing…",
        ],
    );
}

#[test]
fn not_delivered_says_why() {
    let mut s = Screen::online();
    s.type_line("@nobody hello?");
    s.server("BAD-DEST-USER");
    assert_screen(
        &s.draw(60, 4),
        &[
            " 1 status      │12:00 <alice> hello? ✗ not delivered: user",
            " 2 nobody      │      offline",
            " localhost:5378 │ alice │ online                    F1 help",
            "[nobody]",
        ],
    );
}

#[test]
fn a_narrow_terminal_keeps_the_conversation_and_names_it_below() {
    let mut s = Screen::online();
    s.type_line("@bob 日本語のテキストはちゃんと折り返される");
    s.server("SEND-OK");
    assert_screen(
        &s.draw(30, 6),
        &[
            "12:00 <alice> 日本語のテキスト",
            "      はちゃんと折り返される ✓",
            "",
            "",
            " alice │ on [2] bob │ F1 help",
            "[bob]",
        ],
    );
}

#[test]
fn long_text_wraps_at_spaces_and_indents() {
    let mut s = Screen::online();
    s.server("DELIVERY bob the quick brown fox jumps over the lazy dog and keeps running");
    s.type_line("/query bob");
    assert_screen(
        &s.draw(64, 5),
        &[
            " 1 status      │12:00 <bob> the quick brown fox jumps over the",
            " 2 bob         │      lazy dog and keeps running",
            "               │",
            " localhost:5378 │ alice │ online                        F1 help",
            "[bob]",
        ],
    );
}

#[test]
fn asks_for_a_name_and_explains_the_rules() {
    let mut s = Screen::new(None);
    assert_screen(
        &s.draw(50, 5),
        &[
            " 1 status      │Welcome to tcpchat. Type the name",
            "               │you want to use and press Enter (a",
            "               │name is 1 to 32 bytes, with no",
            " localhost:5378 │ ? │ choose a name       F1 help",
            "name:",
        ],
    );
    s.type_line("two words");
    assert_eq!(s.sent, Vec::<String>::new());
    let screen = s.draw(200, 4);
    assert!(
        screen[0].contains("\"two words\" cannot be used: name contains a space"),
        "{screen:#?}"
    );
    s.type_line("alice");
    s.net(NetEvent::Connected);
    s.server("IN-USE");
    let screen = s.draw(100, 5);
    assert!(
        screen[2].contains("the name alice is taken; type another name"),
        "{screen:#?}"
    );
    assert_eq!(screen[4], "name:");
    s.type_line("alice2");
    s.server("HELLO alice2");
    assert_eq!(s.sent, ["HELLO-FROM alice", "HELLO-FROM alice2", "LIST"]);
    assert!(s.draw(100, 5)[3].contains("│ alice2 │ online"));
}

#[test]
fn a_lost_connection_keeps_the_history_and_counts_down() {
    let mut s = Screen::online();
    s.type_line("@bob before the storm");
    s.server("SEND-OK");
    s.net(NetEvent::Closed("the connection was reset".into()));
    s.type_line("after it");
    assert_screen(
        &s.draw(100, 5),
        &[
            " 1 status      │12:00 <alice> before the storm ✓                                    │ online (3)",
            " 2 bob         │12:00 -!- connection lost: the connection was reset; retrying in 1s │ alice",
            "               │12:00 <alice> after it (waiting for the connection…)                │ bob",
            " alice │ offline, retrying in 1s: connection lost: the connection was reset                 F1 help",
            "[bob]",
        ],
    );
}

#[test]
fn help_overlay_opens_and_closes() {
    let mut s = Screen::online();
    s.type_line("/help");
    let screen = s.draw(80, 24).join("\n");
    assert!(screen.contains("@user text"), "{screen}");
    assert!(screen.contains("Ctrl-W Ctrl-U Ctrl-K"), "{screen}");
    s.key(KeyCode::Esc);
    let screen = s.draw(80, 24).join("\n");
    assert!(!screen.contains("Ctrl-W"), "{screen}");
    s.key(KeyCode::F(1));
    assert!(s.draw(80, 24).join("\n").contains("Keys"));

    // Too short for both lists one above the other: they go side by side.
    let screen = s.draw(120, 14).join("\n");
    assert!(
        screen.contains("//text") && screen.contains("F1  "),
        "{screen}"
    );
}

#[test]
fn page_up_scrolls_back() {
    let mut s = Screen::online();
    for i in 1..=20 {
        s.server(&format!("DELIVERY bob message {i}"));
    }
    // The first message opened bob's conversation (nothing else was open).
    let bottom = s.draw(40, 6);
    assert_eq!(bottom[3], "12:00 <bob> message 20");
    s.key(KeyCode::PageUp);
    let up = s.draw(40, 6);
    assert_eq!(up[0], "12:00 <bob> message 14");
    assert!(up[4].contains("more below"), "{up:#?}");
    for _ in 0..10 {
        s.key(KeyCode::PageUp);
        s.draw(40, 6);
    }
    assert_eq!(s.draw(40, 6)[0], "12:00 <bob> message 1");
    for _ in 0..10 {
        s.key(KeyCode::PageDown);
        s.draw(40, 6);
    }
    assert_eq!(s.draw(40, 6), bottom);
}

#[test]
fn escape_sequences_from_the_network_are_not_drawn() {
    let mut s = Screen::online();
    s.server("DELIVERY bob \u{1b}[2J\u{7}boo");
    s.type_line("/query bob");
    let screen = s.draw(40, 4);
    assert_eq!(screen[0], "12:00 <bob> \u{fffd}[2J\u{fffd}boo");
}

#[test]
fn input_editing_history_and_completion() {
    let mut s = Screen::online();
    s.type_text("@c");
    s.key(KeyCode::Tab);
    s.type_text("hey there");
    assert_eq!(s.draw(40, 3)[2], "[status] @carol hey there");
    s.key_with(KeyCode::Char('w'), KeyModifiers::CONTROL);
    s.type_text("you");
    s.key(KeyCode::Home);
    s.key(KeyCode::Delete);
    s.type_text("@");
    s.key(KeyCode::End);
    s.key(KeyCode::Enter);
    assert_eq!(s.sent, ["SEND carol hey you"]);
    s.key(KeyCode::Up);
    assert_eq!(s.draw(40, 3)[2], "[carol] @carol hey you");
    s.key(KeyCode::Down);
    assert_eq!(s.draw(40, 3)[2], "[carol]");
    s.type_text("/q");
    s.key(KeyCode::Tab);
    assert_eq!(s.draw(40, 3)[2], "[carol] /query");
}

#[test]
fn tiny_terminals_do_not_panic() {
    let mut s = Screen::online();
    s.type_line("@bob 👋👋👋 日本語 a-very-long-word-without-any-spaces-at-all");
    for (w, h) in [
        (1, 1),
        (2, 2),
        (7, 3),
        (8, 3),
        (9, 4),
        (20, 3),
        (47, 5),
        (48, 5),
        (71, 5),
    ] {
        let _ = s.draw(w, h);
    }
}

#[test]
fn ctrl_c_quits() {
    let mut s = Screen::online();
    s.key_with(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert!(matches!(s.app.exit(), Some(Ok(()))));

    // With a message on its way, Ctrl-C does not wait for its answer. See: #11
    let mut s = Screen::online();
    s.type_line("@bob last");
    s.key_with(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert!(matches!(s.app.exit(), Some(Ok(()))));
    assert!(
        s.draw(80, 4)[0].contains("<alice> last ✗ not delivered: left before"),
        "{:#?}",
        s.draw(80, 4)
    );
}

#[test]
fn a_message_elsewhere_is_seen_at_once() {
    // See: #11. Alice is talking to bob; carol writes.
    let mut s = Screen::online();
    s.type_line("/query bob");
    s.server("DELIVERY carol are you free for lunch tomorrow? there is a new place");
    assert_screen(
        &s.draw(90, 5),
        &[
            " 1 status      │No messages with bob yet.                                 │ online (3)",
            " 2 bob         │                                                          │ alice",
            " 3 carol (1)   │                                                          │ bob",
            " localhost:5378 │ alice │ online  [3] carol: are you free for lunch tomorrow? t │ F1 help",
            "[bob]",
        ],
    );
    // Opening carol's conversation clears the notice with the unread count.
    s.key_with(KeyCode::Char('3'), KeyModifiers::ALT);
    let screen = s.draw(90, 5);
    assert!(!screen[3].contains("carol:"), "{screen:#?}");
    assert!(screen[2].starts_with(" 3 carol  "), "{screen:#?}");
}

#[test]
fn a_first_message_on_the_status_buffer_opens_its_conversation() {
    // See: #11
    let mut s = Screen::online();
    s.server("DELIVERY bob hello?");
    assert_screen(
        &s.draw(60, 4),
        &[
            " 1 status      │12:00 <bob> hello?",
            " 2 bob         │",
            " localhost:5378 │ alice │ online                    F1 help",
            "[bob]",
        ],
    );
    // With a conversation already there, the status buffer stays and names the arrival.
    s.key_with(KeyCode::Char('1'), KeyModifiers::ALT);
    s.server("DELIVERY carol psst");
    let screen = s.draw(80, 4);
    assert!(screen[3].starts_with("[status]"), "{screen:#?}");
    assert!(screen[2].contains("[3] carol: psst"), "{screen:#?}");
}

/// Everything the screen shows, as one string, for "is it anywhere" checks.
fn whole(screen: &[String]) -> String {
    screen.join("\n")
}

#[test]
fn a_registered_name_asks_for_its_password_masked_and_never_remembered() {
    // See: #13
    let name = Username::parse("alice").expect("valid test name");
    let mut s = Screen::with_config(Config::interactive(Some(name)).extended());
    s.net(NetEvent::Connected);
    s.server("EXT-OK keepalive,presence,accounts");
    s.server("NAME-REGISTERED");
    s.type_text("hunter22-x");
    let screen = s.draw(80, 6);
    assert_eq!(screen[5], "password for alice: **********", "{screen:#?}");
    assert!(screen[4].contains("password for alice"), "{screen:#?}");
    assert!(!whole(&screen).contains("hunter"), "{screen:#?}");
    s.key(KeyCode::Enter);
    assert_eq!(
        s.sent,
        [
            "EXT keepalive,presence,accounts,rooms,history",
            "HELLO-FROM alice",
            "LOGIN alice hunter22-x"
        ]
    );
    s.server("HELLO alice");
    s.server("ONLINE alice,bob");
    s.server("ONLINE-DONE");
    let screen = s.draw(80, 6);
    assert!(!whole(&screen).contains("hunter"), "{screen:#?}");
    assert!(whole(&screen).contains("online (2)"), "{screen:#?}");
    // The password is not in the history.
    s.key(KeyCode::Up);
    assert!(!whole(&s.draw(80, 6)).contains("hunter"));
}

#[test]
fn register_asks_twice_masked_and_the_online_list_follows_presence() {
    // See: #13
    let name = Username::parse("alice").expect("valid test name");
    let mut s = Screen::with_config(Config::interactive(Some(name)).extended());
    s.net(NetEvent::Connected);
    s.server("EXT-OK keepalive,presence,accounts");
    s.server("HELLO alice");
    s.server("ONLINE alice,bob");
    s.server("ONLINE-DONE");
    s.server("ONLINE carol");
    s.server("OFFLINE bob");
    s.sent.clear();
    let screen = s.draw(80, 6);
    assert!(whole(&screen).contains("online (2)"), "{screen:#?}");
    assert!(whole(&screen).contains("carol"), "{screen:#?}");
    s.type_line("/register");
    assert_eq!(s.draw(80, 6)[5], "new password:");
    s.type_text("secret-pw");
    assert_eq!(s.draw(80, 6)[5], "new password: *********");
    s.key(KeyCode::Enter);
    s.type_line("secret-pw");
    assert_eq!(s.sent, ["REGISTER secret-pw"]);
    s.server("REGISTER-OK");
    let screen = s.draw(120, 6);
    assert!(
        whole(&screen).contains("your name is registered"),
        "{screen:#?}"
    );
    // Neither the passwords nor the command are in the history.
    s.key(KeyCode::Up);
    assert_eq!(s.draw(80, 6)[5], "[status]");
    assert!(!whole(&s.draw(80, 6)).contains("secret-pw"));
}

/// Logged in as alice on a server offering rooms, at 12:00.
fn online_with_rooms() -> Screen {
    let name = Username::parse("alice").expect("valid test name");
    let mut s = Screen::with_config(Config::interactive(Some(name)).extended());
    s.net(NetEvent::Connected);
    s.server("EXT-OK keepalive,presence,accounts,rooms");
    s.server("HELLO alice");
    s.server("ONLINE alice,bob,carol");
    s.server("ONLINE-DONE");
    s.sent.clear();
    s
}

#[test]
fn a_room_is_a_conversation_with_its_topic_and_members() {
    // See: #14
    let mut s = online_with_rooms();
    s.type_line("/join #rust");
    s.server("JOINED #rust alice");
    s.server("TOPIC-IS #rust bob borrowck support group");
    s.server("MEMBERS-OK #rust bob,alice");
    s.at_minute(1);
    s.server("JOINED #rust carol");
    s.type_line("hello room");
    s.server("SAID #rust bob welcome");
    s.server("SAID #rust alice hello room");
    s.type_line("still sending");
    assert_eq!(
        s.sent,
        [
            "JOIN #rust",
            "MEMBERS #rust",
            "SAY #rust hello room",
            "SAY #rust still sending"
        ]
    );
    assert_screen(
        &s.draw(80, 9),
        &[
            " 1 status      │ #rust │ 3 members │ borrowck support group     │ members (3)",
            " 2 #rust       │12:00 -!- members of #rust (2, the owner first):│ bob",
            "               │      bob, alice                                │ alice",
            "               │12:01 -!- carol joined #rust                    │ carol",
            "               │12:01 <bob> welcome                             │",
            "               │12:01 <alice> hello room ✓                      │",
            "               │12:01 <alice> still sending (sending…)          │",
            " localhost:5378 │ alice │ online                                        F1 help",
            "[#rust]",
        ],
    );
}

#[test]
fn a_room_elsewhere_counts_unread_and_a_narrow_screen_keeps_its_header() {
    // See: #14
    let mut s = online_with_rooms();
    s.type_line("/join #r");
    s.server("JOINED #r alice");
    s.server("MEMBERS-OK #r alice");
    s.key_with(KeyCode::Char('1'), KeyModifiers::ALT);
    s.server("JOINED #r bob");
    s.server("SAID #r bob one");
    s.server("SAID #r bob two");
    assert_screen(
        &s.draw(80, 5),
        &[
            " 1 status      │12:00 -!- the server's extensions:              │ online (3)",
            " 2 #r (2)      │      keepalive,presence,accounts,rooms         │ alice",
            "               │12:00 -!- logged in as alice                    │ bob",
            " localhost:5378 │ alice │ online                                        F1 help",
            "[status]",
        ],
    );
    s.key_with(KeyCode::Char('2'), KeyModifiers::ALT);
    assert_screen(
        &s.draw(30, 6),
        &[
            " #r │ 2 members │ no topic",
            "12:00 -!- bob joined #r",
            "12:00 <bob> one",
            "12:00 <bob> two",
            " alice │ onl [2] #r │ F1 help",
            "[#r]",
        ],
    );
}

/// Logged in as alice on a server offering rooms and history, joined to `#r`.
fn in_a_room_with_history() -> Screen {
    let name = Username::parse("alice").expect("valid test name");
    let mut s = Screen::with_config(Config::interactive(Some(name)).extended());
    s.net(NetEvent::Connected);
    s.server("EXT-OK keepalive,presence,accounts,rooms,history");
    s.server("HELLO alice");
    s.server("ONLINE alice,bob");
    s.server("ONLINE-DONE");
    s.type_line("/join #r");
    s.server("JOINED #r alice");
    s.server("MEMBERS-OK #r alice,bob");
    s.sent.clear();
    s
}

#[test]
fn messages_show_their_server_time_and_a_kept_message_says_queued() {
    let mut s = in_a_room_with_history();
    // 2026-12-02 09:15 UTC; the test clock's zone is UTC.
    s.server("SAID-AT #r 7 1764666900000 bob from the morning");
    let screen = s.draw(80, 8);
    assert!(
        whole(&screen).contains("09:15 <bob> from the morning"),
        "{screen:#?}"
    );
    s.type_line("/msg carol are you there");
    s.server("SEND-QUEUED");
    let screen = s.draw(80, 8);
    assert!(
        whole(&screen).contains("are you there (queued: delivered"),
        "{screen:#?}"
    );
}

#[test]
fn scrolling_past_the_top_loads_older_history_then_says_where_it_begins() {
    let mut s = in_a_room_with_history();
    s.server("SAID-AT #r 60 1764666900000 bob newest");
    s.key(KeyCode::PageUp);
    assert_eq!(s.sent, ["HISTORY #r BEFORE 60 50"]);
    let screen = s.draw(80, 8);
    assert!(whole(&screen).contains("loading older…"), "{screen:#?}");
    s.key(KeyCode::PageUp);
    assert_eq!(s.sent.len(), 1, "asked once: {:?}", s.sent);
    s.server("HISTORY-OK #r e1 60 2");
    s.server("SAID-AT #r 58 1764666780000 bob older one");
    s.server("SAID-AT #r 59 1764666840000 alice older two");
    let screen = s.draw(80, 10);
    let text = whole(&screen);
    assert!(text.contains("— beginning of history —"), "{screen:#?}");
    assert!(!text.contains("loading older"), "{screen:#?}");
    let at = |needle: &str| {
        screen
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not drawn: {screen:#?}"))
    };
    assert!(at("beginning of history") < at("09:13 <bob> older one"));
    assert!(at("older one") < at("09:14 <alice> older two"));
    assert!(at("older two") < at("09:15 <bob> newest"));
    // The beginning is known: no more requests.
    s.key(KeyCode::PageUp);
    assert_eq!(s.sent.len(), 1, "{:?}", s.sent);
}
