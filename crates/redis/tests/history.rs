//! The `history` extension's room streams across cluster nodes (`docs/cluster.md`,
//! "History"): real `tcpchat serve --cluster` processes on a real `redis-server` (and a real
//! Redis Cluster). Every member on every node sees one room message with the same offset
//! and time; `HISTORY #room` pages the same stream on any node; a member of a node that was
//! killed and started again pages back to exactly what it missed; caps and retention hold
//! in Redis. Direct streams: an offline message sent on one node arrives once at a login on
//! another, `RESUME` on a third gets exactly what was missed, and `tcpchat check` passes
//! against three nodes with accounts on.

use std::time::Duration;

use tcpchat_testkit::{Client, CutProxy, Node, Redis, RedisCluster, PATIENCE};

fn nodes_on(url: &str, n: usize, extra: &[&str]) -> Vec<Node> {
    (1..=n).map(|i| node(url, i, extra)).collect()
}

fn node(url: &str, i: usize, extra: &[&str]) -> Node {
    let mut args = vec!["--limits", "off"];
    args.extend_from_slice(extra);
    Node::start_with(url, &format!("n{i}"), &args)
}

/// Logs `name` in on `node` with `rooms` and `history`, retrying while the cluster settles
/// (`BUSY`), and joins `room`.
async fn member(node: &Node, name: &str, room: &str) -> Client {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut c = node.connect().await;
        c.send_raw(format!("EXT rooms,history\nHELLO-FROM {name}\n").as_bytes())
            .await;
        c.expect("EXT-OK rooms,history").await;
        match c.next_text().await.as_deref() {
            Some(l) if l == format!("HELLO {name}") => {
                c.send(&format!("JOIN {room}")).await;
                c.expect(&format!("JOINED {room} {name}")).await;
                return c;
            }
            Some("BUSY") if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("login of {name}: expected HELLO {name}, got {other:?}"),
        }
    }
}

/// One `SAID-AT` line: `(offset, time, from, body)`.
type Said = (u64, u64, String, String);

fn said_at(room: &str, line: &str) -> Option<Said> {
    let rest = line.strip_prefix(&format!("SAID-AT {room} "))?;
    let mut parts = rest.splitn(4, ' ');
    let offset = parts.next()?.parse().ok()?;
    let time = parts.next()?.parse().ok()?;
    let from = parts.next()?.to_owned();
    let body = parts.next()?.to_owned();
    Some((offset, time, from, body))
}

/// The next `SAID-AT` of `room` on `c`, skipping its membership lines (`JOINED`, `PARTED`).
async fn next_said(c: &mut Client, room: &str) -> Said {
    loop {
        let line = c.next_text().await.expect("a room line");
        if let Some(said) = said_at(room, &line) {
            return said;
        }
        assert!(
            line.starts_with(&format!("JOINED {room} "))
                || line.starts_with(&format!("PARTED {room} ")),
            "expected SAID-AT {room}, got {line:?}"
        );
    }
}

/// `HISTORY {room} [BEFORE {before}] {count}`: `(epoch, top, messages)`.
async fn page(
    c: &mut Client,
    room: &str,
    before: Option<u64>,
    count: u32,
) -> (String, u64, Vec<Said>) {
    match before {
        Some(b) => c.send(&format!("HISTORY {room} BEFORE {b} {count}")).await,
        None => c.send(&format!("HISTORY {room} {count}")).await,
    }
    // Room lines may come before the answer; a test that checks them reads them first.
    let head = loop {
        let line = c.next_text().await.expect("HISTORY-OK");
        if line.starts_with("HISTORY-OK ") {
            break line;
        }
        assert!(
            line.starts_with(&format!("JOINED {room} "))
                || line.starts_with(&format!("PARTED {room} ")),
            "expected HISTORY-OK, got {line:?}"
        );
    };
    let words: Vec<&str> = head.split(' ').collect();
    assert_eq!(words.len(), 5, "{head}");
    assert_eq!(words[1], room, "{head}");
    let n: usize = words[4].parse().expect("n");
    let mut messages = Vec::new();
    for _ in 0..n {
        let line = c.next_text().await.expect("a stored line");
        messages.push(said_at(room, &line).unwrap_or_else(|| panic!("not SAID-AT: {line}")));
    }
    (
        words[2].to_owned(),
        words[3].parse().expect("top"),
        messages,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_three_nodes_see_one_stream_and_page_it_anywhere() {
    let redis = Redis::start();
    let nodes = nodes_on(&redis.url(), 3, &[]);
    one_stream(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_members_on_three_nodes_see_one_stream() {
    let redis = RedisCluster::start();
    let nodes = nodes_on(&redis.url(), 3, &[]);
    one_stream(&nodes).await;
}

async fn one_stream(nodes: &[Node]) {
    const EACH: u64 = 20;
    let mut ann = member(&nodes[0], "ann", "#h").await;
    let mut bob = member(&nodes[1], "bob", "#h").await;
    let mut cat = member(&nodes[2], "cat", "#h").await;
    // Before anything is said: an empty stream, with its epoch.
    let (epoch, top, none) = page(&mut cat, "#h", None, 50).await;
    assert_eq!((top, none.len()), (0, 0));
    let (again, _, _) = page(&mut ann, "#h", None, 50).await;
    assert_eq!(again, epoch, "an empty stream keeps the epoch it was given");
    for c in [&mut ann, &mut bob] {
        let batch: String = (0..EACH).map(|k| format!("SAY #h m{k}\n")).collect();
        c.send_raw(batch.as_bytes()).await;
    }
    let mut seen = Vec::new();
    for c in [&mut ann, &mut bob, &mut cat] {
        let mut mine = Vec::new();
        for _ in 0..2 * EACH {
            mine.push(next_said(c, "#h").await);
        }
        seen.push(mine);
    }
    assert_eq!(
        seen[1], seen[0],
        "bob (n2) and ann (n1) saw different offsets or times"
    );
    assert_eq!(
        seen[2], seen[0],
        "cat (n3) and ann (n1) saw different offsets or times"
    );
    let offsets: Vec<u64> = seen[0].iter().map(|s| s.0).collect();
    assert_eq!(
        offsets,
        (1..=2 * EACH).collect::<Vec<_>>(),
        "one offset each, in order"
    );
    assert!(
        seen[0].windows(2).all(|w| w[0].1 <= w[1].1),
        "times never go back within the room"
    );

    // cat on n3 pages the stream back: what everyone saw, in two pages.
    let (e, top, newest) = page(&mut cat, "#h", None, 25).await;
    assert_eq!((e.as_str(), top), (epoch.as_str(), 2 * EACH));
    assert_eq!(newest, seen[0][15..].to_vec());
    let (_, _, older) = page(&mut cat, "#h", Some(newest[0].0), 25).await;
    assert_eq!(older, seen[0][..15].to_vec(), "nothing older than offset 1");
    for below in [0, 1] {
        let (_, top, none) = page(&mut cat, "#h", Some(below), 25).await;
        assert_eq!((top, none.len()), (2 * EACH, 0), "nothing below {below}");
    }
    // The same page from n1.
    let (e1, _, same) = page(&mut ann, "#h", None, 25).await;
    assert_eq!((e1, same), (epoch, newest));

    // A non-member may not read it.
    let mut out = nodes[1].connect().await;
    out.send_raw(b"EXT rooms,history\nHELLO-FROM out\n").await;
    out.expect("EXT-OK rooms,history").await;
    out.expect("HELLO out").await;
    out.send("HISTORY #h 5").await;
    out.expect("NO-HISTORY").await;
    // A classic member gets the classic line only.
    let mut plain = nodes[1].connect().await;
    plain
        .send_raw(b"EXT rooms\nHELLO-FROM plain\nJOIN #h\n")
        .await;
    plain.expect("EXT-OK rooms").await;
    plain.expect("HELLO plain").await;
    plain.expect("JOINED #h plain").await;
    ann.send("SAY #h for all").await;
    plain.expect("SAID #h ann for all").await;
    let last = next_said(&mut ann, "#h").await;
    assert_eq!(last.0, 2 * EACH + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_nodes_member_pages_back_exactly_what_it_missed() {
    let redis = Redis::start();
    let mut nodes = nodes_on(&redis.url(), 3, &[]);
    let mut ann = member(&nodes[0], "ann", "#h").await;
    let mut bob = member(&nodes[1], "bob", "#h").await;
    let mut cat = member(&nodes[2], "cat", "#h").await;
    let mut had = Vec::new();
    for k in 0..5 {
        ann.send(&format!("SAY #h before {k}")).await;
        had.push(next_said(&mut cat, "#h").await);
        assert_eq!(next_said(&mut bob, "#h").await, had[k]);
    }
    // n3 dies without a word; the room goes on without cat.
    nodes[2].process.kill9();
    drop(cat);
    for k in 0..7 {
        bob.send(&format!("SAY #h while down {k}")).await;
        let s = next_said(&mut bob, "#h").await;
        assert_eq!(s.3, format!("while down {k}"));
    }
    // n3 again, on the same Redis; cat comes back and rejoins.
    nodes[2] = node(&redis.url(), 3, &[]);
    let mut cat = member(&nodes[2], "cat", "#h").await;
    ann.send("SAY #h after").await;
    let first_live = next_said(&mut cat, "#h").await;
    assert_eq!(first_live.3, "after");
    // Page back from the first live line to the last one it had.
    let last_had = had.last().expect("had some").0;
    let mut missed = Vec::new();
    let mut below = first_live.0;
    loop {
        let (_, _, older) = page(&mut cat, "#h", Some(below), 3).await;
        assert!(
            !older.is_empty(),
            "the stream ends before offset {last_had}"
        );
        below = older[0].0;
        let done = below <= last_had;
        missed.splice(0..0, older);
        if done {
            break;
        }
    }
    missed.retain(|s| s.0 > last_had);
    had.extend(missed);
    had.push(first_live);
    let offsets: Vec<u64> = had.iter().map(|s| s.0).collect();
    assert_eq!(
        offsets,
        (1..=13).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    let bodies: Vec<&str> = had[5..12].iter().map(|s| s.3.as_str()).collect();
    let want: Vec<String> = (0..7).map(|k| format!("while down {k}")).collect();
    assert_eq!(bodies, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_cap_and_the_retention_hold_in_redis() {
    let redis = Redis::start();
    let nodes = nodes_on(
        &redis.url(),
        2,
        &["--history-room-cap", "3", "--history-retention", "20s"],
    );
    let mut ann = member(&nodes[0], "ann", "#c").await;
    let mut bob = member(&nodes[1], "bob", "#c").await;
    for k in 0..5 {
        ann.send(&format!("SAY #c m{k}")).await;
        next_said(&mut bob, "#c").await;
    }
    let (_, top, kept) = page(&mut bob, "#c", None, 50).await;
    assert_eq!(top, 5);
    assert_eq!(
        kept.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![3, 4, 5],
        "the cap keeps the newest 3"
    );
    assert_eq!(
        redis.int(&["LLEN", "tcpchat:{r:#c}:hist"]),
        3,
        "and Redis holds 3"
    );
    // Every key of the stream lapses a retention after its newest message.
    for key in ["hist", "htop", "hepoch"] {
        let ttl = redis.int(&["PTTL", &format!("tcpchat:{{r:#c}}:{key}")]);
        assert!((1..=20_000).contains(&ttl), "{key}: PTTL {ttl}");
    }
}

/// A room stream nobody writes to is gone a retention after its newest message, in Redis
/// itself (its keys lapse): a later page finds nothing, under a new epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_stream_lapses_a_retention_after_its_newest_message() {
    let redis = Redis::start();
    let nodes = nodes_on(&redis.url(), 1, &["--history-retention", "1s"]);
    let mut ann = member(&nodes[0], "ann", "#t").await;
    ann.send("SAY #t soon gone").await;
    let said = next_said(&mut ann, "#t").await;
    assert_eq!(said.0, 1);
    let (epoch, top, kept) = page(&mut ann, "#t", None, 50).await;
    assert_eq!((top, kept.len()), (1, 1));
    // Nothing signals an expiry: look until Redis has dropped the list (the retention is
    // the setting under test, not a wait for something else).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while redis.exists("tcpchat:{r:#t}:hist") {
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (later, top, kept) = page(&mut ann, "#t", None, 50).await;
    assert_eq!((top, kept.len()), (0, 0), "nothing kept past the retention");
    assert_ne!(later, epoch, "a forgotten stream starts a new epoch");
    ann.send("SAY #t again").await;
    let again = next_said(&mut ann, "#t").await;
    assert_eq!(again.0, 1, "offsets start again in the new epoch");
    let (e, _, _) = page(&mut ann, "#t", None, 1).await;
    assert_eq!(
        e, later,
        "the epoch a page gave is the one the next message takes"
    );
}

/// Registers the account `name` on `node` (retrying while the cluster settles) and leaves.
async fn register(node: &Node, name: &str, password: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut c = node.connect().await;
        c.send_raw(format!("EXT accounts,history\nHELLO-FROM {name}\n").as_bytes())
            .await;
        c.expect("EXT-OK accounts,history").await;
        match c.next_text().await.as_deref() {
            Some(l) if l == format!("HELLO {name}") => {
                c.send(&format!("REGISTER {password}")).await;
                c.expect("REGISTER-OK").await;
                return;
            }
            Some("BUSY") if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("login of {name}: {other:?}"),
        }
    }
}

/// A connection with `exts` that logs in to the account `name`, `RESUME` first if given;
/// the lines up to its catch-up's `RESUME-OK` are left to read.
async fn account(node: &Node, exts: &str, name: &str, resume: Option<(&str, u64)>) -> Client {
    let mut c = node.connect().await;
    c.send(&format!("EXT {exts}")).await;
    c.expect(&format!("EXT-OK {exts}")).await;
    if let Some((epoch, offset)) = resume {
        c.send(&format!("RESUME {epoch} {offset}")).await;
    }
    c.send(&format!("LOGIN {name} correct-horse")).await;
    c.expect(&format!("HELLO {name}")).await;
    c
}

/// A `history` connection logged in as `name` (no account).
async fn history_user(node: &Node, exts: &str, name: &str) -> Client {
    let mut c = node.connect().await;
    c.send_raw(format!("EXT {exts}\nHELLO-FROM {name}\n").as_bytes())
        .await;
    c.expect(&format!("EXT-OK {exts}")).await;
    c.expect(&format!("HELLO {name}")).await;
    c
}

/// `DELIVERY-AT {offset} {time} {from} {body}`: `(offset, time, "from body")`.
fn delivery_at(line: &str) -> (u64, u64, String) {
    let rest = line
        .strip_prefix("DELIVERY-AT ")
        .unwrap_or_else(|| panic!("expected DELIVERY-AT, got {line:?}"));
    let mut parts = rest.splitn(3, ' ');
    let offset = parts.next().and_then(|o| o.parse().ok()).expect("offset");
    let time = parts.next().and_then(|t| t.parse().ok()).expect("time");
    (offset, time, parts.next().expect("from body").to_owned())
}

/// `RESUME-OK {epoch} {top}`: `(epoch, top)`.
fn resume_ok(line: &str) -> (String, u64) {
    let rest = line
        .strip_prefix("RESUME-OK ")
        .unwrap_or_else(|| panic!("expected RESUME-OK, got {line:?}"));
    let (epoch, top) = rest.split_once(' ').expect("epoch top");
    (epoch.to_owned(), top.parse().expect("top"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Offline delivery across nodes (`docs/protocol.md`, "Offline delivery"; `docs/cluster.md`,
/// "History"): a `history` sender on n1 gets `SEND-QUEUED` for an account that is offline;
/// a classic sender gets `BAD-DEST-USER` and nothing is kept; the account's login on n2
/// gets the kept message once, with the time it was accepted, then `RESUME-OK`, then live
/// lines numbered after it; a later login on n3 gets nothing again; `HISTORY @` pages the
/// stream from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_message_sent_on_one_node_arrives_once_at_login_on_another() {
    let redis = Redis::start_persistent();
    offline_once(&nodes_on(&redis.url(), 3, &[])).await;
}

/// The same on a Redis Cluster whose servers persist: the stream's keys, the holder and the
/// account are on their own shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_an_offline_message_arrives_once_at_login_on_another_node() {
    let redis = RedisCluster::start_persistent();
    offline_once(&nodes_on(&redis.url(), 3, &[])).await;
}

async fn offline_once(nodes: &[Node]) {
    register(&nodes[0], "dora", "correct-horse").await;
    let mut eve = history_user(&nodes[0], "history", "eve").await;
    let mut fred = nodes[2].login("fred").await;
    tcpchat_testkit::wait_presence(&mut eve, "dora", false).await;
    let before = now_ms();
    eve.send("SEND dora while away").await;
    eve.expect("SEND-QUEUED").await;
    let after = now_ms();
    // A classic sender is unaffected: nothing kept.
    fred.send("SEND dora classic").await;
    fred.expect("BAD-DEST-USER").await;

    let mut dora = account(&nodes[1], "accounts,history", "dora", None).await;
    let (offset, time, text) = delivery_at(&dora.next_text().await.expect("DELIVERY-AT"));
    assert_eq!((offset, text.as_str()), (1, "eve while away"));
    assert!(
        (before..=after).contains(&time),
        "the kept message's time {time} is when it was accepted ({before}..={after})"
    );
    let (epoch, top) = resume_ok(&dora.next_text().await.expect("RESUME-OK"));
    assert_eq!(top, 1);
    // Live after the catch-up, numbered on: from the sender's node and from dora's own.
    eve.send("SEND dora now live").await;
    eve.expect("SEND-OK").await;
    let (offset, _, text) = delivery_at(&dora.next_text().await.expect("DELIVERY-AT"));
    assert_eq!((offset, text.as_str()), (2, "eve now live"));
    let mut gus = history_user(&nodes[1], "history", "gus").await;
    gus.send("SEND dora same node").await;
    gus.expect("SEND-OK").await;
    // Not an account: no direct stream.
    gus.send("HISTORY @ 5").await;
    gus.expect("NO-HISTORY").await;
    let (offset, _, text) = delivery_at(&dora.next_text().await.expect("DELIVERY-AT"));
    assert_eq!((offset, text.as_str()), (3, "gus same node"));
    // A classic sender's live message to a `history` recipient is numbered too.
    fred.send("SEND dora classic live").await;
    fred.expect("SEND-OK").await;
    let (offset, _, text) = delivery_at(&dora.next_text().await.expect("DELIVERY-AT"));
    assert_eq!((offset, text.as_str()), (4, "fred classic live"));

    // The stream, paged from Redis.
    dora.send("HISTORY @ 10").await;
    dora.expect(&format!("HISTORY-OK @ {epoch} 4 4")).await;
    dora.expect(&format!("DELIVERY-AT 1 {time} eve while away"))
        .await;
    for (o, want) in [
        (2, "eve now live"),
        (3, "gus same node"),
        (4, "fred classic live"),
    ] {
        let (offset, _, text) = delivery_at(&dora.next_text().await.expect("a stored line"));
        assert_eq!((offset, text.as_str()), (o, want));
    }
    dora.send("HISTORY @ BEFORE 2 5").await;
    dora.expect(&format!("HISTORY-OK @ {epoch} 4 1")).await;
    dora.expect(&format!("DELIVERY-AT 1 {time} eve while away"))
        .await;

    // Once: a later login, on n3, has nothing to catch up.
    drop(dora);
    tcpchat_testkit::wait_presence(&mut eve, "dora", false).await;
    let mut again = account(&nodes[2], "accounts,history", "dora", None).await;
    assert_eq!(
        resume_ok(&again.next_text().await.expect("RESUME-OK")),
        (epoch, 4)
    );
    // A classic login of the account gets live messages as plain `DELIVERY`.
    drop(again);
    tcpchat_testkit::wait_presence(&mut eve, "dora", false).await;
    let mut classic = account(&nodes[0], "accounts", "dora", None).await;
    eve.send("SEND dora plain").await;
    eve.expect("SEND-OK").await;
    classic.expect("DELIVERY eve plain").await;
}

/// `RESUME` across nodes (`docs/protocol.md`, "Resume"): dora reads message 1 on n1, her
/// connection drops; messages 2 and 3 are sent meanwhile (kept, whether her old login was
/// still held or not); `RESUME {epoch} 1` on n3 gets exactly 2 and 3, then `RESUME-OK`,
/// then live lines from 4, with no duplicate and no gap. A wrong epoch is `RESUME-EPOCH`,
/// and nothing follows it that was delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_dropped_connection_on_another_node_gets_exactly_what_was_missed() {
    let redis = Redis::start_persistent();
    let nodes = nodes_on(&redis.url(), 3, &[]);
    register(&nodes[0], "dora", "correct-horse").await;
    let mut eve = history_user(&nodes[1], "history", "eve").await;
    tcpchat_testkit::wait_presence(&mut eve, "dora", false).await;
    let mut dora = account(&nodes[0], "accounts,history", "dora", None).await;
    let (epoch, top) = resume_ok(&dora.next_text().await.expect("RESUME-OK"));
    assert_eq!(top, 0);
    eve.send("SEND dora m1").await;
    eve.expect("SEND-OK").await;
    assert_eq!(
        delivery_at(&dora.next_text().await.expect("m1")).0,
        1,
        "m1 is the stream's first"
    );
    drop(dora);
    for m in ["m2", "m3"] {
        eve.send(&format!("SEND dora {m}")).await;
        let answer = eve.next_text().await.expect("an answer");
        assert!(
            answer == "SEND-OK" || answer == "SEND-QUEUED",
            "SEND dora {m}: {answer}"
        );
    }
    tcpchat_testkit::wait_presence(&mut eve, "dora", false).await;
    let mut back = account(&nodes[2], "accounts,history", "dora", Some((&epoch, 1))).await;
    for (o, want) in [(2, "eve m2"), (3, "eve m3")] {
        let (offset, _, text) = delivery_at(&back.next_text().await.expect("a missed one"));
        assert_eq!((offset, text.as_str()), (o, want));
    }
    assert_eq!(
        resume_ok(&back.next_text().await.expect("RESUME-OK")),
        (epoch.clone(), 3)
    );
    eve.send("SEND dora m4").await;
    eve.expect("SEND-OK").await;
    let (offset, _, text) = delivery_at(&back.next_text().await.expect("m4"));
    assert_eq!((offset, text.as_str()), (4, "eve m4"));
    drop(back);
    tcpchat_testkit::wait_presence(&mut eve, "dora", false).await;
    // Another epoch: said so, then what was never delivered (nothing), then `RESUME-OK`.
    let mut other = account(&nodes[1], "accounts,history", "dora", Some(("0abc", 2))).await;
    other.expect(&format!("RESUME-EPOCH {epoch} 4")).await;
    assert_eq!(
        resume_ok(&other.next_text().await.expect("RESUME-OK")),
        (epoch, 4)
    );
}

/// The direct cap holds in Redis (`--history-direct-cap 2`): of three messages kept while
/// dora was offline the oldest is gone, so `RESUME` from before it is `RESUME-EXPIRED`, then
/// the two kept, then `RESUME-OK`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_direct_cap_holds_in_redis_and_a_resume_past_it_is_expired() {
    let redis = Redis::start_persistent();
    let nodes = nodes_on(&redis.url(), 2, &["--history-direct-cap", "2"]);
    register(&nodes[0], "dora", "correct-horse").await;
    let mut eve = history_user(&nodes[1], "history", "eve").await;
    tcpchat_testkit::wait_presence(&mut eve, "dora", false).await;
    let mut dora = account(&nodes[0], "accounts,history", "dora", None).await;
    let (epoch, top) = resume_ok(&dora.next_text().await.expect("RESUME-OK"));
    assert_eq!(top, 0);
    drop(dora);
    tcpchat_testkit::wait_presence(&mut eve, "dora", false).await;
    for m in ["m1", "m2", "m3"] {
        eve.send(&format!("SEND dora {m}")).await;
        eve.expect("SEND-QUEUED").await;
    }
    let mut back = account(&nodes[1], "accounts,history", "dora", Some((&epoch, 0))).await;
    back.expect(&format!("RESUME-EXPIRED {epoch} 3")).await;
    for (o, want) in [(2, "eve m2"), (3, "eve m3")] {
        let (offset, _, text) = delivery_at(&back.next_text().await.expect("a kept one"));
        assert_eq!((offset, text.as_str()), (o, want));
    }
    assert_eq!(
        resume_ok(&back.next_text().await.expect("RESUME-OK")),
        (epoch, 3)
    );
}

/// `tcpchat check` against three nodes whose Redis persists (accounts on): its
/// `ext-history-offline` case (offline delivery and resume, from outside) passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcpchat_check_passes_against_three_nodes_with_accounts() {
    let redis = Redis::start_persistent();
    let nodes = nodes_on(&redis.url(), 3, &[]);
    drop(nodes[0].login("warmup").await);
    let targets: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    let out = tokio::process::Command::new(tcpchat_testkit::tcpchat_bin())
        .args(["check", &targets.join(",")])
        .output()
        .await
        .expect("run tcpchat check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tcpchat check failed against the cluster's nodes:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for case in ["ext-history", "ext-history-offline"] {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(case))
            .unwrap_or_else(|| panic!("no {case} case in:\n{stdout}"));
        assert!(line.trim_start().starts_with("pass "), "{line}");
    }
}

/// A node cut off from Redis has no stream to page: `HISTORY #room` is `ROOM-UNAVAILABLE`
/// (try again), never a page under an epoch made up on the spot; the other node pages on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_answers_a_page_room_unavailable() {
    let redis = Redis::start();
    let proxy = CutProxy::start(([127, 0, 0, 1], redis.port).into());
    let n1 = node(&proxy.url(), 1, &[]);
    let n2 = node(&redis.url(), 2, &[]);
    let mut ann = member(&n1, "ann", "#u").await;
    let mut bob = member(&n2, "bob", "#u").await;
    ann.expect("JOINED #u bob").await;
    bob.send("SAY #u kept").await;
    let said = next_said(&mut ann, "#u").await;
    assert_eq!(next_said(&mut bob, "#u").await, said);
    let (epoch, _, _) = page(&mut ann, "#u", None, 5).await;
    proxy.cut();
    ann.send("HISTORY #u 5").await;
    ann.expect("ROOM-UNAVAILABLE").await;
    let (e, top, kept) = page(&mut bob, "#u", None, 5).await;
    assert_eq!((e, top, kept), (epoch, 1, vec![said]));
}
