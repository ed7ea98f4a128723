//! The faults `docs/cluster.md` decides, each against real processes: `redis-server`,
//! `tcpchat serve --cluster` nodes, and a [`CutProxy`] between a node and Redis for a network
//! partition. See: #11.
//!
//! Bounds the docs state (the node lease, the settle time) are read from Redis's own clock
//! (`PTTL` of the key that enforces them), so they hold however loaded the machine is; the
//! wall-clock waits around them are timeouts with room for a slow machine, never a measure.

use std::time::{Duration, Instant};

use tcpchat_testkit::{Client, CutProxy, Node, Redis, PATIENCE};

/// The node lease `docs/cluster.md` states: a dead node's names are free at most this long
/// after its last renewal. Written here, not taken from the library, so the code is held to
/// what the docs promise.
const NODE_LEASE: Duration = Duration::from_secs(5);
/// The settle time `docs/cluster.md` states: logins wait this long on a fresh Redis.
const SETTLE: Duration = Duration::from_secs(3);

/// Room on top of a documented bound for a loaded, shared machine to schedule the processes
/// and the test's polling. The bound itself is checked in Redis.
const SLACK: Duration = Duration::from_secs(5);

fn cluster(n: usize) -> (Redis, Vec<Node>) {
    let redis = Redis::start();
    let nodes = (1..=n)
        .map(|i| Node::start(&redis.url(), &format!("n{i}")))
        .collect();
    (redis, nodes)
}

fn lease_key(node: &str) -> String {
    format!("tcpchat:{{n:{node}}}:alive")
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).expect("a test duration fits")
}

/// Waits until Redis no longer holds `key`, failing if that takes longer than `bound` (plus
/// [`SLACK`]) from `since`.
async fn until_gone(redis: &Redis, key: &str, since: Instant, bound: Duration) {
    while redis.exists(key) {
        assert!(
            since.elapsed() < bound + SLACK,
            "{key} still in redis {:?} after the fault (documented bound {bound:?}); PTTL {}",
            since.elapsed(),
            redis.int(&["PTTL", key])
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A single login attempt that must be admitted (no retry on `BUSY`).
async fn login_now(node: &Node, name: &str) -> Client {
    let mut c = node.connect().await;
    c.send(&format!("HELLO-FROM {name}")).await;
    c.expect(&format!("HELLO {name}")).await;
    c
}

/// kill -9: no goodbye. A `SEND` to the dead node's users is refused as soon as Redis sees its
/// connections close, and its names are free once its lease runs out, which Redis guarantees
/// within `NODE_LEASE` of the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_frees_its_names_within_its_lease() {
    let (redis, nodes) = cluster(3);
    let mut ann = nodes[0].login("ann").await;
    let mut bob = nodes[1].login("bob").await;
    let _cat = nodes[2].login("cat").await;
    let _dan = nodes[2].login("dan").await;
    ann.wait_list(&["ann", "bob", "cat", "dan"]).await;

    nodes[2].process.kill9();
    let killed = Instant::now();
    let left = redis.int(&["PTTL", &lease_key("n3")]);
    assert!(
        left <= millis(NODE_LEASE),
        "the dead node's lease has {left} ms left, more than the documented {NODE_LEASE:?}"
    );

    // Refused before the lease expires: nobody listens on the dead node's channel.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        ann.send("SEND cat are you there").await;
        match ann.next_text().await.as_deref() {
            Some("BAD-DEST-USER") => break,
            // Redis had not yet handled the closed connection.
            Some("SEND-OK") if tokio::time::Instant::now() < deadline => {}
            other => panic!("SEND to a killed node's user: expected BAD-DEST-USER, got {other:?}"),
        }
    }
    assert!(
        redis.exists(&lease_key("n3")),
        "BAD-DEST-USER came only after the lease expired, not when the node's connection closed"
    );

    until_gone(&redis, &lease_key("n3"), killed, NODE_LEASE).await;
    // The moment the lease is gone, so are the names: one LIST, no polling.
    assert_eq!(ann.list().await, ["ann", "bob"]);
    assert_eq!(bob.list().await, ["ann", "bob"]);
    let mut cat2 = login_now(&nodes[0], "cat").await;
    // Nobody on a surviving node was lost.
    ann.send("SEND bob still here").await;
    ann.expect("SEND-OK").await;
    bob.expect("DELIVERY ann still here").await;
    bob.send("SEND cat to the new cat").await;
    bob.expect("SEND-OK").await;
    cat2.expect("DELIVERY bob to the new cat").await;
    ann.send("SEND dan anyone?").await;
    ann.expect("BAD-DEST-USER").await;
}

/// SIGTERM: the node disconnects its users, then deletes its lease and its names before it
/// exits, so they are free at once, not after the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_frees_a_nodes_names_at_once() {
    let (redis, nodes) = cluster(2);
    let mut ann = nodes[0].login("ann").await;
    let mut cat = nodes[1].login("cat").await;
    let mut dan = nodes[1].login("dan").await;
    ann.wait_list(&["ann", "cat", "dan"]).await;

    nodes[1].process.signal("TERM");
    cat.expect_closed().await;
    dan.expect_closed().await;
    let status = nodes[1].process.wait_exit();
    assert!(
        status.success(),
        "SIGTERM is a clean stop: {status}; log:\n{}",
        nodes[1].process.log_text()
    );

    // At once: no waiting, no polling.
    assert!(!redis.exists(&lease_key("n2")), "lease left behind");
    assert_eq!(redis.get("tcpchat:{u:cat}:holder"), None, "cat left behind");
    assert_eq!(ann.list().await, ["ann"]);
    let _cat2 = login_now(&nodes[0], "cat").await;
    ann.send("SEND dan still there?").await;
    ann.expect("BAD-DEST-USER").await;
}

/// A fresh cluster cannot tell a new Redis from one that lost its state, so logins get `BUSY`
/// for the settle time (while live nodes would re-register), then are admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_cluster_refuses_logins_while_it_settles_then_admits() {
    let redis = Redis::start();
    let node = Node::start(&redis.url(), "n1");
    let started = Instant::now();
    let (mut refused_while_settling, mut admitted) = (0, false);
    while !admitted {
        // A login whose answer falls between two sightings of the settle key was handled
        // while the cluster settled.
        let before = redis.int(&["PTTL", "tcpchat:{global}:settling"]);
        assert!(
            before <= millis(SETTLE),
            "settle key has {before} ms left, more than the documented {SETTLE:?}"
        );
        let mut c = node.connect().await;
        c.send("HELLO-FROM ann").await;
        let answer = c.next_text().await;
        let settling = before > 0 && redis.int(&["PTTL", "tcpchat:{global}:settling"]) > 0;
        match answer.as_deref() {
            Some("BUSY") => {
                c.expect_closed().await;
                refused_while_settling += usize::from(settling);
            }
            Some("HELLO ann") => {
                assert!(!settling, "a login was admitted while the cluster settled");
                admitted = true;
            }
            other => panic!("login on a fresh cluster: expected BUSY or HELLO, got {other:?}"),
        }
        assert!(
            admitted || started.elapsed() < SETTLE + SLACK,
            "no login admitted {:?} after the node started (settle time {SETTLE:?})",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused_while_settling > 0,
        "no login was tried while the cluster settled; the node's log:\n{}",
        node.process.log_text()
    );
}

/// Redis reachable over a link that stops answering (a partition, not a refusal): every call
/// is given up after the call timeout, so the node answers as when Redis is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_redis_stops_answering_gives_each_call_up() {
    let redis = Redis::start();
    let proxy = CutProxy::start(([127, 0, 0, 1], redis.port).into());
    let n1 = Node::start(&proxy.url(), "n1");
    let n2 = Node::start(&redis.url(), "n2");
    let mut ann = n1.login("ann").await;
    let mut amy = n1.login("amy").await;
    let mut bob = n2.login("bob").await;
    bob.wait_list(&["amy", "ann", "bob"]).await;

    proxy.cut();
    ann.send("SEND amy same node").await;
    ann.expect("SEND-OK").await;
    amy.expect("DELIVERY ann same node").await;
    let mut late = n1.connect().await;
    late.send("HELLO-FROM late").await;
    late.expect("BUSY").await;
    late.expect_closed().await;
    assert_eq!(ann.list().await, ["amy", "ann"]);
    ann.send("SEND bob across the cut").await;
    ann.expect("BAD-DEST-USER").await;
    // The link never heals here: what the node sent during the cut never reaches Redis.
}

/// A partition between one node and Redis that outlasts the node's lease: its names are freed
/// and one is taken on another node; when the link heals, the user who lost the name is
/// disconnected (after what was queued for it), the others are registered again, and the name
/// has one holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_beyond_its_lease_loses_only_the_names_taken_meanwhile() {
    let redis = Redis::start();
    let proxy = CutProxy::start(([127, 0, 0, 1], redis.port).into());
    let n1 = Node::start(&proxy.url(), "n1");
    let n2 = Node::start(&redis.url(), "n2");
    let mut ann = n1.login("ann").await;
    let mut amy = n1.login("amy").await;
    let mut bob = n2.login("bob").await;
    bob.wait_list(&["amy", "ann", "bob"]).await;

    proxy.cut();
    let cut = Instant::now();
    until_gone(&redis, &lease_key("n1"), cut, NODE_LEASE).await;
    // Free for everyone else: one LIST, and a login of one of them.
    assert_eq!(bob.list().await, ["bob"]);
    let mut ann2 = login_now(&n2, "ann").await;
    // The cut node cannot know: its users still reach each other, the old ann included.
    amy.send("SEND ann from your own node").await;
    amy.expect("SEND-OK").await;

    proxy.heal();
    let queued = ann.lines_until_closed().await;
    assert_eq!(
        queued,
        ["DELIVERY amy from your own node"],
        "the old ann gets what was queued for it, then its connection ends"
    );
    n1.process
        .wait_log("name was claimed on another node while this one was cut off");
    bob.wait_list(&["amy", "ann", "bob"]).await;
    amy.wait_list(&["amy", "ann", "bob"]).await;
    // One holder: Redis, both nodes' routing and both nodes' logins agree it is n2's ann.
    let owner = redis.get("tcpchat:{u:ann}:holder").unwrap_or_default();
    assert!(owner.starts_with("n2 "), "ann is held by {owner:?}");
    amy.send_until_ok("ann", "to the ann that is left").await;
    ann2.expect("DELIVERY amy to the ann that is left").await;
    bob.send("SEND amy you are back").await;
    bob.expect("SEND-OK").await;
    amy.expect("DELIVERY bob you are back").await;
    for node in [&n1, &n2] {
        let mut dup = node.connect().await;
        dup.send("HELLO-FROM ann").await;
        dup.expect("IN-USE").await;
    }
}

/// A node frozen (SIGSTOP) past its lease: a message sent to its users meanwhile is answered
/// `BAD-DEST-USER` (its node never confirmed it) and is not delivered when it resumes; its
/// names were freed meanwhile, and on resuming it keeps those nobody took and drops the user
/// whose name was taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_beyond_its_lease_keeps_the_names_nobody_took() {
    let (redis, nodes) = cluster(2);
    let mut ann = nodes[0].login("ann").await;
    let mut cat = nodes[1].login("cat").await;
    let mut dan = nodes[1].login("dan").await;
    ann.wait_list(&["ann", "cat", "dan"]).await;

    nodes[1].process.signal("STOP");
    let stopped = Instant::now();
    assert!(redis.exists(&lease_key("n2")), "lease expired at once");
    ann.send("SEND cat while you were away").await;
    ann.expect("BAD-DEST-USER").await;
    until_gone(&redis, &lease_key("n2"), stopped, NODE_LEASE).await;
    assert_eq!(ann.list().await, ["ann"]);
    let mut dan2 = login_now(&nodes[0], "dan").await;

    nodes[1].process.signal("CONT");
    assert_eq!(dan.lines_until_closed().await, Vec::<String>::new());
    ann.wait_list(&["ann", "cat", "dan"]).await;
    ann.send_until_ok("cat", "welcome back").await;
    // The refused message was dropped past its deadline: this is cat's next line.
    cat.expect("DELIVERY ann welcome back").await;
    cat.send("SEND dan which dan?").await;
    cat.expect("SEND-OK").await;
    dan2.expect("DELIVERY cat which dan?").await;
}
