//! Cluster mode end to end: a real `redis-server`, real `tcpchat serve --cluster` processes on
//! loopback ports, HAProxy, and raw protocol lines. See: #8.
//!
//! Every fault decided in `docs/cluster.md` has a test here. Waits poll with a generous bound
//! and report what they saw; nothing is timed.

use std::time::Duration;

use tcpchat_testkit::{free_port, login_at, tcpchat_bin, Client, Haproxy, Node, Redis, PATIENCE};

/// `n` nodes with their abuse limits off: these tests send hundreds of lines from one
/// connection as fast as they can, which the default command rate (rightly) holds back and
/// then drops; the limits are tested in `crates/server/tests/abuse.rs`.
fn cluster(n: usize) -> (Redis, Vec<Node>) {
    let redis = Redis::start();
    let nodes = (1..=n)
        .map(|i| Node::start_with(&redis.url(), &format!("n{i}"), &["--limits", "off"]))
        .collect();
    (redis, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_behave_as_one_server() {
    let (_redis, nodes) = cluster(2);
    let mut ann = nodes[0].login("ann").await;
    let mut bob = nodes[1].login("bob").await;

    // One namespace: a name held on one node is taken on the other.
    let mut dup = nodes[1].connect().await;
    dup.send("HELLO-FROM ann").await;
    dup.expect("IN-USE").await;

    // One LIST, asked on either node.
    ann.wait_list(&["ann", "bob"]).await;
    bob.wait_list(&["ann", "bob"]).await;

    // Messages cross nodes both ways, byte for byte.
    ann.send("SEND bob hi  there 👋 ").await;
    ann.expect("SEND-OK").await;
    bob.expect("DELIVERY ann hi  there 👋 ").await;
    bob.send("SEND ann back").await;
    bob.expect("SEND-OK").await;
    ann.expect("DELIVERY bob back").await;

    // Sending to yourself and to a local user needs no other node.
    ann.send("SEND ann me").await;
    ann.expect("DELIVERY ann me").await;
    ann.expect("SEND-OK").await;

    // A name that is nowhere.
    ann.send("SEND zed hello?").await;
    ann.expect("BAD-DEST-USER").await;

    // Logging out frees the name cluster-wide.
    drop(bob);
    ann.wait_list(&["ann"]).await;
    dup.send("HELLO-FROM bob").await;
    dup.expect("HELLO bob").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_nodes_admit_exactly_one_login_per_name() {
    let (_redis, nodes) = cluster(3);
    // Wait until every node accepts logins (a fresh Redis settles first).
    for (i, n) in nodes.iter().enumerate() {
        drop(n.login(&format!("warmup{i}")).await);
    }
    for round in 0..20 {
        let name = format!("race{round}");
        let mut clients = Vec::new();
        for n in &nodes {
            clients.push(n.connect().await);
        }
        // All three logins are written before any answer is read.
        for c in &mut clients {
            c.send(&format!("HELLO-FROM {name}")).await;
        }
        let mut answers = Vec::new();
        for c in &mut clients {
            let line = c.next_line().await.expect("an answer to HELLO-FROM");
            answers.push(String::from_utf8_lossy(&line).into_owned());
        }
        let hellos = answers
            .iter()
            .filter(|a| **a == format!("HELLO {name}"))
            .count();
        let in_use = answers.iter().filter(|a| *a == "IN-USE").count();
        assert_eq!(
            (hellos, in_use),
            (1, 2),
            "round {round}: expected one HELLO and two IN-USE, got {answers:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_senders_messages_to_another_node_keep_their_order() {
    let (_redis, nodes) = cluster(2);
    let mut ann = nodes[0].login("ann").await;
    let mut bob = nodes[1].login("bob").await;
    const N: usize = 500;
    // Pipelined: every SEND is written before the first SEND-OK is read.
    let mut batch = String::new();
    for i in 0..N {
        batch.push_str(&format!("SEND bob message {i}\n"));
    }
    tokio::io::AsyncWriteExt::write_all(&mut ann.writer, batch.as_bytes())
        .await
        .expect("write SENDs");
    for _ in 0..N {
        ann.expect("SEND-OK").await;
    }
    for i in 0..N {
        bob.expect(&format!("DELIVERY ann message {i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_then_back_empty_heals_without_a_hand_on_it() {
    let (mut redis, nodes) = cluster(2);
    let mut ann = nodes[0].login("ann").await;
    let mut amy = nodes[0].login("amy").await;
    let mut bob = nodes[1].login("bob").await;
    ann.wait_list(&["amy", "ann", "bob"]).await;

    redis.stop();

    // Users on one node keep chatting.
    ann.send("SEND amy local still works").await;
    ann.expect("SEND-OK").await;
    amy.expect("DELIVERY ann local still works").await;
    // New logins are refused: uniqueness cannot be checked.
    let mut late = nodes[1].connect().await;
    late.send("HELLO-FROM late").await;
    late.expect("BUSY").await;
    late.expect_closed().await;
    // LIST shows what the node knows: its own users.
    assert_eq!(ann.list().await, ["amy", "ann"]);
    // Other nodes cannot be reached.
    ann.send("SEND bob are you there").await;
    ann.expect("BAD-DEST-USER").await;

    // Redis comes back empty (restarted without persistence). Nobody touches the nodes.
    redis.restart();
    assert_eq!(
        redis.command(&["DBSIZE"]).as_deref(),
        Some(":0"),
        "restarted empty"
    );

    // Cross-node chat resumes by itself, and every live user is registered again.
    ann.send_until_ok("bob", "welcome back").await;
    bob.expect("DELIVERY ann welcome back").await;
    // ann's node may not have re-registered amy yet: bob reaching ann's node's users proves
    // only that bob's node is back.
    bob.send_until_ok("amy", "hi amy").await;
    amy.expect("DELIVERY bob hi amy").await;
    bob.wait_list(&["amy", "ann", "bob"]).await;
    // Names held before the outage are still unique, and new logins work again.
    let mut thief = nodes[1].connect().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        thief.send("HELLO-FROM ann").await;
        match thief.next_line().await.as_deref() {
            Some(b"IN-USE") => break,
            Some(b"BUSY") if tokio::time::Instant::now() < deadline => {
                thief = nodes[1].connect().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!(
                "login as ann while ann is live: expected IN-USE, got {:?}",
                other.map(String::from_utf8_lossy)
            ),
        }
    }
    let _late = nodes[1].login("late").await;
    bob.wait_list(&["amy", "ann", "bob", "late"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_users_spread_over_three_nodes() {
    let (_redis, nodes) = cluster(3);
    const USERS: usize = 60;
    let names: Vec<String> = (0..USERS).map(|i| format!("user{i:02}")).collect();
    let mut clients = Vec::new();
    for (i, name) in names.iter().enumerate() {
        clients.push(nodes[i % 3].login(name).await);
    }
    let want: Vec<&str> = names.iter().map(String::as_str).collect();
    for c in clients.iter_mut().take(3) {
        c.wait_list(&want).await;
    }
    // Each user writes to the next one, who sits on another node.
    for i in 0..USERS {
        let to = &names[(i + 1) % USERS];
        clients[i].send(&format!("SEND {to} from {i}")).await;
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let from = (i + USERS - 1) % USERS;
        let delivery = format!("DELIVERY {} from {from}", names[from]);
        c.expect_unordered(&["SEND-OK".to_owned(), delivery]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_in_front_of_three_nodes() {
    let (_redis, nodes) = cluster(3);
    let lb = Haproxy::start(&nodes.iter().map(|n| n.addr).collect::<Vec<_>>());
    let names = ["ada", "ben", "cal", "dee", "eli", "fay"];
    let mut clients = Vec::new();
    for name in names {
        clients.push(login_at(lb.addr, name).await);
    }
    clients[0].wait_list(&names).await;
    // Round-robin put users on every node: each node logged some of them in.
    for n in &nodes {
        assert!(
            n.process
                .log()
                .iter()
                .any(|l| l.contains("logged in") && names.iter().any(|x| l.contains(x))),
            "node {} got none of the users through haproxy; its log:\n{}",
            n.id,
            n.process.log_text()
        );
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let to = names[(i + 1) % names.len()];
        c.send(&format!("SEND {to} via the balancer")).await;
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let from = names[(i + names.len() - 1) % names.len()];
        let delivery = format!("DELIVERY {from} via the balancer");
        c.expect_unordered(&["SEND-OK".to_owned(), delivery]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_recipient_or_a_stopped_node_stalls_nobody() {
    let redis = Redis::start();
    // Limits off: ann floods as fast as she can, which the default command rate would hold back.
    let off = ["--limits", "off"];
    let n1 = Node::start_with(&redis.url(), "n1", &off);
    // A small queue so the stuck reader is found quickly.
    let n2 = Node::start_with(
        &redis.url(),
        "n2",
        &["--max-outbox", "8192", "--limits", "off"],
    );
    let n3 = Node::start_with(&redis.url(), "n3", &off);
    let mut ann = n1.login("ann").await;
    // A small receive buffer, so the kernel does not absorb megabytes on sloth's behalf.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(n2.addr).await.expect("connect");
    let mut sloth = Client::from_stream(stream);
    sloth.send("HELLO-FROM sloth").await;
    sloth.expect("HELLO sloth").await; // and never reads again
    let mut bob = n3.login("bob").await;

    // ann floods sloth across nodes until sloth's node drops it; every SEND is answered.
    let body = "z".repeat(2000);
    let mut dropped = false;
    'flood: for _ in 0..200 {
        let batch: String = (0..100).map(|_| format!("SEND sloth {body}\n")).collect();
        tokio::io::AsyncWriteExt::write_all(&mut ann.writer, batch.as_bytes())
            .await
            .expect("write SENDs");
        for _ in 0..100 {
            let line = ann.next_line().await.expect("an answer to SEND");
            match line.as_slice() {
                b"SEND-OK" => {}
                b"BAD-DEST-USER" => dropped = true,
                other => panic!("unexpected {:?}", String::from_utf8_lossy(other)),
            }
        }
        if dropped {
            break 'flood;
        }
    }
    assert!(dropped, "sloth was never dropped although it never reads");
    ann.send("SEND bob after the flood").await;
    ann.expect("SEND-OK").await;
    bob.expect("DELIVERY ann after the flood").await;

    // A frozen node: the others keep chatting at full speed.
    n2.process.signal("STOP");
    for i in 0..50 {
        ann.send(&format!("SEND bob while n2 is stopped {i}")).await;
        ann.expect("SEND-OK").await;
        bob.expect(&format!("DELIVERY ann while n2 is stopped {i}"))
            .await;
        bob.send(&format!("SEND ann ack {i}")).await;
        bob.expect("SEND-OK").await;
        ann.expect(&format!("DELIVERY bob ack {i}")).await;
    }
    n2.process.signal("CONT");
}

/// Counts the Redis commands behind cross-node and same-node SENDs (from `INFO
/// commandstats`), for `docs/cluster.md`. The counts are asserted, not timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_commands_per_send() {
    let (redis, nodes) = cluster(2);
    let mut ann = nodes[0].login("ann").await;
    let mut amy = nodes[0].login("amy").await;
    let mut bob = nodes[1].login("bob").await;
    const N: u64 = 1000;

    let measure = |redis: &Redis| redis.command_calls();
    let diff = |before: &std::collections::HashMap<String, u64>,
                after: &std::collections::HashMap<String, u64>| {
        let mut d: Vec<(String, u64)> = after
            .iter()
            .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
            .filter(|(k, v)| *v > 0 && k != "info")
            .collect();
        d.sort();
        d
    };

    let before = measure(&redis);
    for i in 0..N {
        ann.send(&format!("SEND bob cross {i}")).await;
        ann.expect("SEND-OK").await;
        bob.expect(&format!("DELIVERY ann cross {i}")).await;
    }
    let cross = diff(&before, &measure(&redis));

    let before = measure(&redis);
    for i in 0..N {
        ann.send(&format!("SEND amy local {i}")).await;
        ann.expect("SEND-OK").await;
        amy.expect(&format!("DELIVERY ann local {i}")).await;
    }
    let local = diff(&before, &measure(&redis));

    eprintln!("Redis commands for {N} cross-node SENDs: {cross:?}");
    eprintln!("Redis commands for {N} same-node SENDs: {local:?}");
    let get = |d: &[(String, u64)], k: &str| d.iter().find(|(c, _)| c == k).map_or(0, |(_, v)| *v);
    // Cross-node, one SEND at a time: one frame to bob's node and one frame of results back,
    // each a plain PUBLISH; bob's route is looked up once (one GET of his holder key). No
    // script per message: the lease renewals (a few script calls per node per second) are
    // the only EVALs.
    assert_eq!(
        get(&cross, "publish"),
        2 * N,
        "a frame and its results per lockstep cross-node SEND: {cross:?}"
    );
    assert!(
        get(&cross, "get") <= 2,
        "the route is looked up once, not per SEND: {cross:?}"
    );
    assert!(
        get(&cross, "eval") + get(&cross, "evalsha") < N / 2,
        "no script per cross-node SEND: {cross:?}"
    );
    // Same node: nothing but the renewals.
    assert_eq!(
        get(&local, "publish"),
        0,
        "no PUBLISH for a local SEND: {local:?}"
    );
    assert!(
        get(&local, "eval") + get(&local, "evalsha") < N / 2,
        "a local SEND does not call Redis: {local:?}"
    );
}

/// Settings errors exit 2 before touching Redis; an unreachable Redis does not stop a node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_flags_are_checked_and_an_absent_redis_means_busy() {
    let out = std::process::Command::new(tcpchat_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cluster",
            "localhost:6379",
        ])
        .output()
        .expect("run tcpchat");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid cluster address"), "{err}");

    // Nothing listens on this port: the node starts and answers BUSY.
    let url = format!("redis://127.0.0.1:{}", free_port());
    let node = Node::start(&url, "lonely");
    let mut c = node.connect().await;
    c.send("HELLO-FROM ann").await;
    c.expect("BUSY").await;
    c.expect_closed().await;
    node.process.wait_log("cannot reach redis");
}

/// `--max-clients` is each node's own limit: a full node answers `BUSY` while another node
/// of the same cluster still admits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_is_per_node() {
    let redis = Redis::start();
    let small = Node::start_with(&redis.url(), "small", &["--max-clients", "1"]);
    let big = Node::start(&redis.url(), "big");
    let mut ann = small.login("ann").await;
    let mut extra = small.connect().await;
    extra.send("HELLO-FROM bob").await;
    extra.expect("BUSY").await;
    extra.expect_closed().await;
    let mut bob = big.login("bob").await;
    bob.send("SEND ann hello from the other node").await;
    bob.expect("SEND-OK").await;
    ann.expect("DELIVERY bob hello from the other node").await;
}

/// The conformance checker passes against three nodes behind HAProxy, its users spread over
/// the nodes by round-robin: for every client, the cluster is one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcpchat_check_passes_against_three_nodes_behind_haproxy() {
    let (_redis, nodes) = cluster(3);
    // Wait until the cluster admits logins (a fresh Redis settles first).
    drop(nodes[0].login("warmup").await);
    let lb = Haproxy::start(&nodes.iter().map(|n| n.addr).collect::<Vec<_>>());
    let out = tokio::process::Command::new(tcpchat_bin())
        .args(["check", &lb.addr.to_string()])
        .output()
        .await
        .expect("run tcpchat check");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tcpchat check failed against the cluster:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_every_node_got_users(&nodes);
}

/// Each node logged in at least one of the checker's users: the load really was spread.
fn assert_every_node_got_users(nodes: &[Node]) {
    for n in nodes {
        assert!(
            n.process.log().iter().any(|l| l.contains("logged in")),
            "node {} got none of the checker's users; its log:\n{}",
            n.id,
            n.process.log_text()
        );
    }
}

/// `tcpchat check` given the three nodes themselves spreads each case's users over them in
/// turn (so every two-user case crosses nodes), and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcpchat_check_spread_over_three_nodes_passes() {
    let (_redis, nodes) = cluster(3);
    drop(nodes[0].login("warmup").await);
    let targets: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    let out = tokio::process::Command::new(tcpchat_bin())
        .args(["check", &targets.join(",")])
        .output()
        .await
        .expect("run tcpchat check");
    assert!(
        out.status.success(),
        "tcpchat check failed against the cluster's nodes:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The extension cases run, history's room paging included (not skipped).
    let stdout = String::from_utf8_lossy(&out.stdout);
    for case in ["ext-rooms", "ext-history"] {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(case))
            .unwrap_or_else(|| panic!("no {case} case in:\n{stdout}"));
        assert!(line.trim_start().starts_with("pass "), "{line}");
    }
    assert_every_node_got_users(&nodes);
}

/// `tcpchat bench` given the three nodes spreads its clients over them in turn (each sender's
/// partner on another node) and completes a throughput run with every message delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcpchat_bench_spreads_its_clients_over_three_nodes() {
    let (_redis, nodes) = cluster(3);
    drop(nodes[0].login("warmup").await);
    let targets: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    let out = tokio::process::Command::new(tcpchat_bin())
        .args(["bench", &targets.join(","), "throughput", "--clients", "12"])
        .args(["--duration", "1s", "--no-spread"])
        .output()
        .await
        .expect("run tcpchat bench");
    assert!(
        out.status.success(),
        "tcpchat bench failed against the cluster's nodes:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for n in &nodes {
        let logins = n
            .process
            .log()
            .iter()
            .filter(|l| l.contains("logged in"))
            .count();
        assert!(
            logins >= 4,
            "node {} logged in {logins} of the 12 bench clients (expected 4 or more); its log:\n{}",
            n.id,
            n.process.log_text()
        );
    }
}
