//! The `history` extension over real sockets, against the real SQLite file
//! (`docs/protocol.md`, "history"): offline delivery once, after a login and after a restart;
//! resume after a dropped connection with no duplicate and no gap; the expired and
//! epoch-changed answers; caps and retention; `HISTORY` paging and who may read; and a
//! classic client that sees nothing new.

use std::sync::Arc;

mod common;

use common::Client;
use tcpchat_accounts::SqliteStore;
use tcpchat_proto::Reply;
use tcpchat_server::{Config, History, HistorySettings, MemoryHub, StoreHandle};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const PW: &str = "correct-horse";

/// One server process's worth: the store, the history and the running server, over a data
/// directory that outlives it (for the restart cases).
struct Setup {
    addr: std::net::SocketAddr,
    history: History,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

async fn start(dir: &std::path::Path, settings: HistorySettings) -> Setup {
    let store = SqliteStore::open(dir).expect("open store");
    let known = store.clone();
    let history = History::open(
        dir,
        settings,
        Arc::new(move |name: &str| known.is_registered_cached(name)),
    )
    .expect("open history");
    let config = Config {
        accounts: tcpchat_server::AccountSettings {
            hash_threads: std::num::NonZeroUsize::MIN,
            ..tcpchat_server::AccountSettings::default()
        },
        account_store: Some(StoreHandle::new(store)),
        history: settings,
        ..Config::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let hub = MemoryHub::with_history(history.clone());
    let task = tokio::spawn(tcpchat_server::run_with_hub(listener, config, hub, async {
        let _ = stopped.await;
    }));
    Setup {
        addr,
        history,
        stop: Some(stop),
        task: Some(task),
    }
}

impl Setup {
    async fn connect(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Stops the server and waits until everything numbered is on disk.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("no panic").expect("server ran");
        }
        self.history.flushed().await;
    }
}

/// A connection that negotiated `exts` (all of them offered).
async fn extended(s: &Setup, exts: &str) -> Client {
    let mut c = s.connect().await;
    c.send(&format!("EXT {exts}")).await;
    c.expect(&format!("EXT-OK {exts}")).await;
    c
}

/// A connection with `exts` logged in as `name` (a plain `HELLO-FROM`).
async fn named(s: &Setup, name: &str, exts: &str) -> Client {
    let mut c = extended(s, exts).await;
    c.send(&format!("HELLO-FROM {name}")).await;
    c.expect(&format!("HELLO {name}")).await;
    c
}

/// Registers `name` and leaves: an offline account.
async fn register(s: &Setup, name: &str) {
    let mut c = named(s, name, "accounts").await;
    c.send(&format!("REGISTER {PW}")).await;
    c.expect("REGISTER-OK").await;
    drop(c);
    wait_gone(s, name).await;
}

/// A line with its time (and epoch) left out, so tests compare what is decided.
async fn next(c: &mut Client) -> String {
    let line = c.next_line().await.expect("a line");
    match Reply::parse(&line) {
        Ok(Reply::DeliveryAt {
            offset, from, body, ..
        }) => format!("DELIVERY-AT {offset} {from} {body}"),
        Ok(Reply::SaidAt {
            room,
            offset,
            from,
            body,
            ..
        }) => format!("SAID-AT {room} {offset} {from} {body}"),
        Ok(Reply::ResumeOk { top, .. }) => format!("RESUME-OK {top}"),
        Ok(Reply::ResumeExpired { top, .. }) => format!("RESUME-EXPIRED {top}"),
        Ok(Reply::ResumeEpoch { top, .. }) => format!("RESUME-EPOCH {top}"),
        Ok(Reply::HistoryOk { stream, top, n, .. }) => format!("HISTORY-OK {stream} {top} {n}"),
        _ => String::from_utf8_lossy(&line).into_owned(),
    }
}

/// The epoch in a `RESUME-OK` line.
async fn resume_ok_epoch(c: &mut Client) -> (String, u64) {
    let line = c.next_line().await.expect("a line");
    match Reply::parse(&line) {
        Ok(Reply::ResumeOk { epoch, top }) => (epoch.to_owned(), top),
        other => panic!("expected RESUME-OK, got {other:?}"),
    }
}

/// Logs in to `name` on a connection with `exts` (accounts among them), `RESUME` first if
/// given, and reads `HELLO`.
async fn login(s: &Setup, name: &str, exts: &str, resume: Option<(&str, u64)>) -> Client {
    let mut c = extended(s, exts).await;
    if let Some((epoch, offset)) = resume {
        c.send(&format!("RESUME {epoch} {offset}")).await;
    }
    c.send(&format!("LOGIN {name} {PW}")).await;
    c.expect(&format!("HELLO {name}")).await;
    c
}

fn small() -> HistorySettings {
    HistorySettings::default()
}

#[tokio::test]
async fn an_offline_message_arrives_once_at_login_with_its_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path(), small()).await;
    register(&s, "alice").await;

    let mut bob = named(&s, "bob", "history").await;
    let before = tcpchat_server::history::now_ms();
    bob.send("SEND alice while you were out").await;
    bob.expect("SEND-QUEUED").await;
    // A classic sender sees the classic table, and nothing is kept for it.
    let mut carol = s.connect().await;
    carol.send("HELLO-FROM carol").await;
    carol.expect("HELLO carol").await;
    carol.send("SEND alice classic").await;
    carol.expect("BAD-DEST-USER").await;

    let mut alice = login(&s, "alice", "accounts,history", None).await;
    let line = alice.next_line().await.expect("the kept message");
    let Ok(Reply::DeliveryAt {
        offset,
        time,
        from,
        body,
    }) = Reply::parse(&line)
    else {
        panic!(
            "expected DELIVERY-AT, got {:?}",
            String::from_utf8_lossy(&line)
        );
    };
    assert_eq!(
        (offset, from.as_str(), body),
        (1, "bob", "while you were out")
    );
    assert!(time >= before, "the original time, not the login's");
    assert_eq!(next(&mut alice).await, "RESUME-OK 1");
    // Live from here, with offsets.
    bob.send("SEND alice now live").await;
    bob.expect("SEND-OK").await;
    assert_eq!(next(&mut alice).await, "DELIVERY-AT 2 bob now live");
    drop(alice);

    // Delivered once: the next login has nothing to catch up.
    let mut again = login(&s, "alice", "accounts,history", None).await;
    assert_eq!(next(&mut again).await, "RESUME-OK 2");
    drop(again);

    // A connection without `history` gets what was kept as plain DELIVERY lines.
    wait_gone(&s, "alice").await;
    bob.send("SEND alice for a plain client").await;
    bob.expect("SEND-QUEUED").await;
    let mut plain = login(&s, "alice", "accounts", None).await;
    plain.expect("DELIVERY bob for a plain client").await;
    plain.send("LIST").await;
    assert!(next(&mut plain).await.starts_with("LIST-OK "));
    s.stop().await;
}

/// Waits until `name` is logged out (`LIST` no longer shows it).
async fn wait_gone(s: &Setup, name: &str) {
    static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut probe = s.connect().await;
    probe.send(&format!("HELLO-FROM probe-{n}")).await;
    probe.expect(&format!("HELLO probe-{n}")).await;
    loop {
        let list = probe.list().await;
        if !list.iter().any(|n| n == name) {
            return;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn an_offline_message_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path(), small()).await;
    register(&s, "alice").await;
    let mut bob = named(&s, "bob", "history").await;
    bob.send("SEND alice kept across a restart").await;
    bob.expect("SEND-QUEUED").await;
    drop(bob);
    s.stop().await;

    let s = start(dir.path(), small()).await;
    let mut alice = login(&s, "alice", "accounts,history", None).await;
    assert_eq!(
        next(&mut alice).await,
        "DELIVERY-AT 1 bob kept across a restart"
    );
    let (epoch, top) = resume_ok_epoch(&mut alice).await;
    assert_eq!(top, 1);
    drop(alice);
    s.stop().await;

    // Once: a second restart and login bring nothing again, in the same epoch.
    let s = start(dir.path(), small()).await;
    let mut alice = login(&s, "alice", "accounts,history", Some((&epoch, 1))).await;
    assert_eq!(resume_ok_epoch(&mut alice).await, (epoch, 1));
    s.stop().await;
}

#[tokio::test]
async fn resume_after_a_dropped_connection_has_no_duplicate_and_no_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path(), small()).await;
    register(&s, "alice").await;
    let mut bob = named(&s, "bob", "history").await;

    let mut alice = login(&s, "alice", "accounts,history", None).await;
    let (epoch, top) = resume_ok_epoch(&mut alice).await;
    assert_eq!(top, 0);
    for i in 1..=3 {
        bob.send(&format!("SEND alice m{i}")).await;
        bob.expect("SEND-OK").await;
    }
    // Alice read only the first before her connection died.
    assert_eq!(next(&mut alice).await, "DELIVERY-AT 1 bob m1");
    drop(alice);
    wait_gone(&s, "alice").await;
    bob.send("SEND alice m4").await;
    bob.expect("SEND-QUEUED").await;

    let mut alice = login(&s, "alice", "accounts,history", Some((&epoch, 1))).await;
    for want in [
        "DELIVERY-AT 2 bob m2",
        "DELIVERY-AT 3 bob m3",
        "DELIVERY-AT 4 bob m4",
        "RESUME-OK 4",
    ] {
        assert_eq!(next(&mut alice).await, want);
    }
    bob.send("SEND alice m5").await;
    bob.expect("SEND-OK").await;
    assert_eq!(next(&mut alice).await, "DELIVERY-AT 5 bob m5");
    s.stop().await;
}

#[tokio::test]
async fn another_epoch_and_expired_messages_are_said_plainly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = HistorySettings {
        direct_cap: 2,
        ..small()
    };
    let s = start(dir.path(), settings).await;
    register(&s, "alice").await;
    let mut bob = named(&s, "bob", "history").await;
    let mut alice = login(&s, "alice", "accounts,history", None).await;
    let (epoch, _) = resume_ok_epoch(&mut alice).await;
    drop(alice);
    wait_gone(&s, "alice").await;
    for i in 1..=4 {
        bob.send(&format!("SEND alice m{i}")).await;
        bob.expect("SEND-QUEUED").await;
    }
    // The cap kept the newest two; the client had nothing: a gap, said first.
    let mut alice = login(&s, "alice", "accounts,history", Some((&epoch, 0))).await;
    for want in [
        "RESUME-EXPIRED 4",
        "DELIVERY-AT 3 bob m3",
        "DELIVERY-AT 4 bob m4",
        "RESUME-OK 4",
    ] {
        assert_eq!(next(&mut alice).await, want);
    }
    drop(alice);
    wait_gone(&s, "alice").await;
    bob.send("SEND alice m5").await;
    bob.expect("SEND-QUEUED").await;
    // An epoch that is not the stream's: said, then what was never delivered.
    let mut alice = login(&s, "alice", "accounts,history", Some(("zzz", 3))).await;
    for want in ["RESUME-EPOCH 5", "DELIVERY-AT 5 bob m5", "RESUME-OK 5"] {
        assert_eq!(next(&mut alice).await, want);
    }
    // An offset past the top is another epoch too.
    drop(alice);
    wait_gone(&s, "alice").await;
    let mut alice = login(&s, "alice", "accounts,history", Some((&epoch, 99))).await;
    for want in ["RESUME-EPOCH 5", "RESUME-OK 5"] {
        assert_eq!(next(&mut alice).await, want);
    }
    // UNREGISTER takes the stream away: a new account starts a new epoch.
    alice.send(&format!("UNREGISTER {PW}")).await;
    alice.expect("UNREGISTER-OK").await;
    alice.send(&format!("REGISTER {PW}")).await;
    alice.expect("REGISTER-OK").await;
    drop(alice);
    wait_gone(&s, "alice").await;
    let mut alice = login(&s, "alice", "accounts,history", Some((&epoch, 5))).await;
    assert_eq!(next(&mut alice).await, "RESUME-EPOCH 0");
    let (new_epoch, top) = resume_ok_epoch(&mut alice).await;
    assert_ne!(new_epoch, epoch);
    assert_eq!(top, 0);
    s.stop().await;
}

#[tokio::test]
async fn the_retention_removes_old_messages_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path(), small()).await;
    register(&s, "alice").await;
    s.stop().await;
    // Kept by an earlier run eight days ago (time 1 ms after the epoch is older still), and
    // one from now: the retention (7 days) removes the first when the server starts.
    let db = tcpchat_accounts::history::HistoryDb::open(dir.path()).expect("db");
    let kept = |offset: u64, time: u64| tcpchat_accounts::history::Write::Append {
        stream: "@alice".into(),
        epoch: "e1".into(),
        offset,
        time,
        sender: "bob".into(),
        body: format!("m{offset}"),
        delivered: 0,
    };
    let now = tcpchat_server::history::now_ms();
    let no_limits = tcpchat_accounts::history::Bounds {
        direct_cap: 100,
        room_cap: 100,
        retention_ms: None,
    };
    db.write(&[kept(1, 1), kept(2, now)], no_limits, now)
        .expect("write");
    assert_eq!(db.count().expect("count"), 2);
    let s = start(dir.path(), small()).await;
    assert_eq!(db.count().expect("count"), 1, "the old one is gone");
    // What is left is delivered, and the old offset is not reused.
    let mut alice = login(&s, "alice", "accounts,history", Some(("e1", 0))).await;
    for want in ["RESUME-EXPIRED 2", "DELIVERY-AT 2 bob m2", "RESUME-OK 2"] {
        assert_eq!(next(&mut alice).await, want);
    }
    s.stop().await;
}

#[tokio::test]
async fn history_pages_backwards_for_members_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path(), small()).await;
    let mut ann = named(&s, "ann", "rooms,history").await;
    ann.send("JOIN #r").await;
    ann.expect("JOINED #r ann").await;
    // A rooms member without history: the classic room lines.
    let mut old = named(&s, "old", "rooms").await;
    old.send("JOIN #r").await;
    old.expect("JOINED #r old").await;
    ann.expect("JOINED #r old").await;
    for i in 1..=5 {
        ann.send(&format!("SAY #r m{i}")).await;
        assert_eq!(next(&mut ann).await, format!("SAID-AT #r {i} ann m{i}"));
        old.expect(&format!("SAID #r ann m{i}")).await;
    }
    ann.send("HISTORY #r 2").await;
    for want in [
        "HISTORY-OK #r 5 2",
        "SAID-AT #r 4 ann m4",
        "SAID-AT #r 5 ann m5",
    ] {
        assert_eq!(next(&mut ann).await, want);
    }
    ann.send("HISTORY #r BEFORE 4 2").await;
    for want in [
        "HISTORY-OK #r 5 2",
        "SAID-AT #r 2 ann m2",
        "SAID-AT #r 3 ann m3",
    ] {
        assert_eq!(next(&mut ann).await, want);
    }
    ann.send("HISTORY #r BEFORE 2 2").await;
    assert_eq!(next(&mut ann).await, "HISTORY-OK #r 5 1");
    assert_eq!(next(&mut ann).await, "SAID-AT #r 1 ann m1");
    // Errors and who may read.
    ann.send("HISTORY #r 51").await;
    ann.expect("BAD-RQST-BODY").await;
    ann.send("HISTORY #elsewhere 5").await;
    ann.expect("NO-HISTORY").await;
    ann.send("HISTORY @ 5").await;
    ann.expect("NO-HISTORY").await;
    old.send("HISTORY #r 5").await;
    old.expect("BAD-RQST-HDR").await;
    let mut outsider = named(&s, "outsider", "rooms,history").await;
    outsider.send("HISTORY #r 5").await;
    outsider.expect("NO-HISTORY").await;
    // A member reads what was said before they joined.
    outsider.send("JOIN #r").await;
    outsider.expect("JOINED #r outsider").await;
    outsider.send("HISTORY #r 1").await;
    assert_eq!(next(&mut outsider).await, "HISTORY-OK #r 5 1");
    assert_eq!(next(&mut outsider).await, "SAID-AT #r 5 ann m5");
    s.stop().await;
}

#[tokio::test]
async fn a_direct_stream_pages_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path(), small()).await;
    register(&s, "alice").await;
    let mut alice = login(&s, "alice", "accounts,history", None).await;
    assert_eq!(next(&mut alice).await, "RESUME-OK 0");
    alice.send("HISTORY @ 10").await;
    assert_eq!(next(&mut alice).await, "HISTORY-OK @ 0 0");
    let mut bob = s.connect().await;
    bob.send("HELLO-FROM bob").await;
    bob.expect("HELLO bob").await;
    for i in 1..=3 {
        bob.send(&format!("SEND alice d{i}")).await;
        bob.expect("SEND-OK").await;
        assert_eq!(next(&mut alice).await, format!("DELIVERY-AT {i} bob d{i}"));
    }
    alice.send("HISTORY @ BEFORE 3 10").await;
    for want in [
        "HISTORY-OK @ 3 2",
        "DELIVERY-AT 1 bob d1",
        "DELIVERY-AT 2 bob d2",
    ] {
        assert_eq!(next(&mut alice).await, want);
    }
    s.stop().await;
}

#[tokio::test]
async fn a_classic_client_sees_nothing_new() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path(), small()).await;
    register(&s, "alice").await;
    let mut alice = login(&s, "alice", "accounts,history", None).await;
    assert_eq!(next(&mut alice).await, "RESUME-OK 0");
    let mut dave = s.connect().await;
    for line in ["HISTORY @ 5", "RESUME abc 1"] {
        dave.send(line).await;
        dave.expect("BAD-RQST-HDR").await;
    }
    dave.send("HELLO-FROM dave").await;
    dave.expect("HELLO dave").await;
    for line in ["HISTORY @ 5", "RESUME abc 1"] {
        dave.send(line).await;
        dave.expect("BAD-RQST-HDR").await;
    }
    // Its message to an account is stored, and it sees the classic reply.
    dave.send("SEND alice hi from classic").await;
    dave.expect("SEND-OK").await;
    assert_eq!(next(&mut alice).await, "DELIVERY-AT 1 dave hi from classic");
    // What it receives is the classic DELIVERY, whoever sends.
    alice.send("SEND dave hello").await;
    alice.expect("SEND-OK").await;
    dave.expect("DELIVERY alice hello").await;
    drop(alice);
    wait_gone(&s, "alice").await;
    dave.send("SEND alice are you there").await;
    dave.expect("BAD-DEST-USER").await;
    // Nothing was kept for that refused message.
    let mut alice = login(&s, "alice", "accounts,history", None).await;
    assert_eq!(next(&mut alice).await, "RESUME-OK 1");
    // `EXT` without history on a server with it: nothing of it either.
    let mut eve = named(&s, "eve", "keepalive").await;
    alice.send("SEND eve plain").await;
    alice.expect("SEND-OK").await;
    eve.expect("DELIVERY alice plain").await;
    s.stop().await;
}

#[tokio::test]
async fn a_second_resume_or_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path(), small()).await;
    let mut c = extended(&s, "accounts,history").await;
    c.send("RESUME Bad 1").await;
    c.expect("BAD-RQST-BODY").await;
    c.send("RESUME abc 1").await;
    c.send("RESUME abc 2").await;
    c.expect("BAD-RQST-HDR").await;
    c.send("HELLO-FROM free").await;
    c.expect("HELLO free").await;
    c.send("RESUME abc 1").await;
    c.expect("BAD-RQST-HDR").await;
    s.stop().await;
}

/// A hub without history (a cluster's, or a server started without it) never offers it.
#[tokio::test]
async fn a_hub_without_history_does_not_offer_it() {
    let server = common::Server::default().await;
    let mut c = server.connect().await;
    c.send("EXT rooms,history").await;
    c.expect("EXT-OK rooms").await;
    c.send("HELLO-FROM someone").await;
    c.expect("HELLO someone").await;
    c.send("HISTORY @ 5").await;
    c.expect("BAD-RQST-HDR").await;
    server.shutdown().await;
}

/// Messages that keep coming while a login catches up: every one arrives once, in offset
/// order, `RESUME-OK` between the caught-up ones and the live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_racing_new_messages_has_no_duplicate_and_no_gap() {
    const N: u64 = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path(), small()).await;
    register(&s, "alice").await;
    let mut alice = login(&s, "alice", "accounts,history", None).await;
    let (epoch, _) = resume_ok_epoch(&mut alice).await;
    drop(alice);
    wait_gone(&s, "alice").await;
    let mut bob = named(&s, "bob", "history").await;
    let burst: String = (1..=N).map(|i| format!("SEND alice r{i}\n")).collect();
    // Sent while alice logs in: some are kept for her, some are live, some fall in between.
    let sender = tokio::spawn(async move {
        bob.send_raw(burst.as_bytes()).await;
        for _ in 0..N {
            let reply = bob.next_text().await.expect("a reply");
            assert!(reply == "SEND-OK" || reply == "SEND-QUEUED", "{reply}");
        }
    });
    let mut alice = login(&s, "alice", "accounts,history", Some((&epoch, 0))).await;
    let mut offsets = Vec::new();
    let mut resumed_at = None;
    while offsets.len() < N as usize {
        let line = next(&mut alice).await;
        if let Some(top) = line.strip_prefix("RESUME-OK ") {
            assert!(resumed_at.is_none(), "one RESUME-OK");
            resumed_at = Some((offsets.len(), top.parse::<u64>().expect("top")));
            continue;
        }
        let rest = line
            .strip_prefix("DELIVERY-AT ")
            .unwrap_or_else(|| panic!("unexpected {line}"));
        let (offset, body) = rest.split_once(" bob ").expect("offset, sender, body");
        let offset: u64 = offset.parse().expect("offset");
        assert_eq!(body, format!("r{offset}"), "offset and message agree");
        offsets.push(offset);
    }
    sender.await.expect("sender");
    assert_eq!(offsets, (1..=N).collect::<Vec<_>>(), "each once, in order");
    if resumed_at.is_none() {
        // Everything was kept before the login: all of it was caught up.
        assert_eq!(next(&mut alice).await, format!("RESUME-OK {N}"));
        resumed_at = Some((N as usize, N));
    }
    let (at, top) = resumed_at.expect("RESUME-OK came");
    assert_eq!(at as u64, top, "RESUME-OK after exactly what was caught up");
    s.stop().await;
}
