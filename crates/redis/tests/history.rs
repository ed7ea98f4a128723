//! The `history` extension's room streams across cluster nodes (`docs/cluster.md`,
//! "History"): real `tcpchat serve --cluster` processes on a real `redis-server` (and a real
//! Redis Cluster). Every member on every node sees one room message with the same offset
//! and time; `HISTORY #room` pages the same stream on any node; a member of a node that was
//! killed and started again pages back to exactly what it missed; caps and retention hold
//! in Redis.

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

/// What a cluster does not keep yet (`docs/protocol.md`, "history", "Cluster"): no direct
/// stream. A `history` sender's message to an account that is offline is `BAD-DEST-USER`,
/// never `SEND-QUEUED`; `HISTORY @` is `NO-HISTORY`; `LOGIN` gets no catch-up and no
/// `RESUME-OK`; a live direct message is a plain `DELIVERY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_keeps_no_direct_stream_yet_and_says_so_plainly() {
    let redis = Redis::start_persistent();
    let nodes = nodes_on(&redis.url(), 2, &[]);
    // Register `dora` on n1 (retrying while the cluster settles), then leave.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut c = nodes[0].connect().await;
        c.send_raw(b"EXT accounts,history\nHELLO-FROM dora\n").await;
        c.expect("EXT-OK accounts,history").await;
        match c.next_text().await.as_deref() {
            Some("HELLO dora") => {
                c.send("REGISTER correct-horse").await;
                c.expect("REGISTER-OK").await;
                break;
            }
            Some("BUSY") if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("login of dora: {other:?}"),
        }
    }
    let mut eve = nodes[1].connect().await;
    eve.send_raw(b"EXT history\nHELLO-FROM eve\n").await;
    eve.expect("EXT-OK history").await;
    eve.expect("HELLO eve").await;
    // dora's connection is gone once its name is free again.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        eve.send("SEND dora while away").await;
        match eve.next_text().await.as_deref() {
            Some("BAD-DEST-USER") => break,
            Some("SEND-OK") if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("SEND to an offline account: expected BAD-DEST-USER, got {other:?}"),
        }
    }
    let mut dora = nodes[1].connect().await;
    dora.send("EXT accounts,history").await;
    dora.expect("EXT-OK accounts,history").await;
    dora.send("LOGIN dora correct-horse").await;
    dora.expect("HELLO dora").await;
    dora.send("HISTORY @ 10").await;
    // No catch-up, no RESUME-OK before it: the next line is the answer.
    dora.expect("NO-HISTORY").await;
    eve.send("SEND dora now").await;
    eve.expect("SEND-OK").await;
    dora.expect("DELIVERY eve now").await;
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
