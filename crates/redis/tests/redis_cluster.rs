//! Cluster mode on a real Redis Cluster (`docs/cluster.md`, "Redis Cluster"): three masters
//! and three replicas of `redis-server` on loopback ports, three `tcpchat serve --cluster
//! redis+cluster://...` nodes, raw protocol lines, `tcpchat check`, and a master killed with
//! kill -9 while the nodes run. See: #18.
//!
//! Waits poll with a generous bound and report what they saw; nothing is timed.

use std::time::Duration;

use tcpchat_testkit::{tcpchat_bin, Client, Node, RedisCluster, PATIENCE};

/// `n` nodes on `cluster`, abuse limits off (the order test sends hundreds of lines at once).
fn nodes_on(cluster: &RedisCluster, n: usize) -> Vec<Node> {
    nodes_with(cluster, n, &["--limits", "off"])
}

/// Nodes for a master's failover: a lease longer than any failover here. On a loaded machine
/// a failover can outlast the 5 s default lease, and then the names are freed by design
/// (`docs/cluster.md`), which is not what the failover test is about. No node is killed in it.
fn failover_nodes(cluster: &RedisCluster, n: usize) -> Vec<Node> {
    nodes_with(cluster, n, &["--limits", "off", "--cluster-lease", "60s"])
}

fn nodes_with(cluster: &RedisCluster, n: usize, settings: &[&str]) -> Vec<Node> {
    (1..=n)
        .map(|i| Node::start_with(&cluster.url(), &format!("n{i}"), settings))
        .collect()
}

/// Logs `name` in on `node` with `presence`, retrying while the cluster settles (`BUSY`);
/// returns the client after its first list.
async fn watcher(node: &Node, name: &str) -> (Client, Vec<String>) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut c = node.connect().await;
        c.send_raw(format!("EXT presence\nHELLO-FROM {name}\n").as_bytes())
            .await;
        c.expect("EXT-OK presence").await;
        match c.next_text().await.as_deref() {
            Some(l) if l == format!("HELLO {name}") => {
                let mut names = Vec::new();
                loop {
                    let line = c.next_text().await.expect("the first list");
                    if line == "ONLINE-DONE" {
                        break;
                    }
                    let list = line
                        .strip_prefix("ONLINE ")
                        .unwrap_or_else(|| panic!("expected ONLINE, got {line:?}"));
                    names.extend(list.split(',').map(str::to_owned));
                }
                names.sort();
                return (c, names);
            }
            Some("BUSY") if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("login of {name}: expected HELLO {name}, got {other:?}"),
        }
    }
}

/// A login of `name` on `node` must be refused `IN-USE`: retried while the node answers
/// `BUSY` (re-registering after a fault), never admitted.
async fn refused_in_use(node: &Node, name: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut c = node.connect().await;
        c.send(&format!("HELLO-FROM {name}")).await;
        match c.next_text().await.as_deref() {
            Some("IN-USE") => return,
            Some("BUSY") if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!(
                "a second {name} on {}: expected IN-USE, got {other:?}",
                node.id
            ),
        }
    }
}

/// Sends `body` from `from` (logged in as `from_name`) to `to_name` until it is answered
/// `SEND-OK` (routing heals after a fault), each try numbered, and waits for it at `to`.
/// Earlier tries answered `BAD-DEST-USER` may still have been delivered (a frame that reached
/// Redis just before a failure, which `docs/cluster.md` allows): they arrive first, in order.
async fn send_until_delivered(
    from: &mut Client,
    from_name: &str,
    to: &mut Client,
    to_name: &str,
    body: &str,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut tries = 0;
    loop {
        tries += 1;
        from.send(&format!("SEND {to_name} {body} #{tries}")).await;
        match from.next_text().await.as_deref() {
            Some("SEND-OK") => break,
            Some("BAD-DEST-USER") if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("SEND {to_name} {body}: expected SEND-OK, last got {other:?}"),
        }
    }
    let want = format!("DELIVERY {from_name} {body} #{tries}");
    loop {
        let line = to.next_text().await.unwrap_or_default();
        if line == want {
            return;
        }
        let earlier = line
            .strip_prefix(&format!("DELIVERY {from_name} {body} #"))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n < tries);
        assert!(earlier, "expected {want:?}, got {line:?}");
    }
}

/// Reads a watcher's presence events until `want` (repeats of earlier events may come
/// first: clients treat presence as a set).
async fn presence_until(watcher: &mut Client, want: &str) {
    loop {
        let line = watcher.next_text().await.unwrap_or_default();
        if line == want {
            return;
        }
        assert!(
            line.starts_with("ONLINE ") || line.starts_with("OFFLINE "),
            "expected {want:?}, got {line:?}"
        );
    }
}

/// The cluster semantics of `cluster.rs` and `presence.rs`, on a Redis Cluster: one
/// namespace, one `LIST`, messages both ways in order, presence ordered with messages, a
/// killed node's names freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_a_redis_cluster_behave_as_one_server() {
    let redis = RedisCluster::start();
    let nodes = nodes_on(&redis, 3);
    // The keys of one node, one name and the global state are on different shards here:
    // nothing below works unless each step stays on one slot.
    let masters: std::collections::HashSet<Option<u16>> = [
        "tcpchat:{n:n1}:deliver",
        "tcpchat:{n:n2}:deliver",
        "tcpchat:{n:n3}:deliver",
        "tcpchat:{u:ann}:holder",
        "tcpchat:{u:bob}:holder",
        "tcpchat:{global}:nodes",
    ]
    .iter()
    .map(|k| redis.master_of(redis.slot(k)))
    .collect();
    assert!(masters.len() >= 2, "every key on one shard: {masters:?}");

    let mut ann = nodes[0].login("ann").await;
    let mut bob = nodes[1].login("bob").await;
    let (mut w3, _) = watcher(&nodes[2], "w3").await;

    for node in &nodes {
        let mut dup = node.connect().await;
        dup.send("HELLO-FROM ann").await;
        dup.expect("IN-USE").await;
    }
    ann.wait_list(&["ann", "bob", "w3"]).await;

    ann.send("SEND bob hi  there 👋 ").await;
    ann.expect("SEND-OK").await;
    bob.expect("DELIVERY ann hi  there 👋 ").await;
    bob.send("SEND ann and back").await;
    bob.expect("SEND-OK").await;
    ann.expect("DELIVERY bob and back").await;

    // One sender's messages to another node keep their order, pipelined.
    const N: usize = 300;
    let mut burst = String::new();
    for i in 0..N {
        burst.push_str(&format!("SEND bob m{i}\n"));
    }
    ann.send_raw(burst.as_bytes()).await;
    for i in 0..N {
        ann.expect("SEND-OK").await;
        bob.expect(&format!("DELIVERY ann m{i}")).await;
    }

    // Presence from another node, ordered with that user's messages.
    let mut carol = nodes[1].login("carol").await;
    carol.send("SEND w3 hello watcher").await;
    carol.expect("SEND-OK").await;
    let mut seen = Vec::new();
    while !seen.iter().any(|l| l == "DELIVERY carol hello watcher") {
        seen.push(w3.next_text().await.expect("w3's stream"));
    }
    let online = seen.iter().position(|l| l == "ONLINE carol");
    let delivery = seen
        .iter()
        .position(|l| l == "DELIVERY carol hello watcher");
    assert!(
        online.is_some() && online < delivery,
        "ONLINE carol before carol's message: {seen:?}"
    );
    drop(carol);
    presence_until(&mut w3, "OFFLINE carol").await;

    // A killed node's users go offline for the watchers elsewhere, and their names are free.
    nodes[1].process.kill9();
    presence_until(&mut w3, "OFFLINE bob").await;
    ann.wait_list(&["ann", "w3"]).await;
    let mut bob2 = nodes[0].login("bob").await;
    ann.send("SEND bob found again").await;
    ann.expect("SEND-OK").await;
    bob2.expect("DELIVERY ann found again").await;
}

/// `tcpchat check`, the conformance suite, passes against nodes on a Redis Cluster, its
/// extension cases included (`ext-rooms`: a room's members spread over the nodes;
/// `ext-history`: their offsets from the room's slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcpchat_check_passes_against_nodes_on_a_redis_cluster() {
    let redis = RedisCluster::start();
    let nodes = nodes_on(&redis, 3);
    drop(nodes[0].login("warmup").await);
    let targets: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    for target in [targets[1].clone(), targets.join(",")] {
        let out = tokio::process::Command::new(tcpchat_bin())
            .args(["check", &target])
            .output()
            .await
            .expect("run tcpchat check");
        assert!(
            out.status.success(),
            "tcpchat check {target} failed on a Redis Cluster:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        // History's room streams are in Redis, so its case runs (and passes) too.
        for case in ["ext-rooms", "ext-history"] {
            let line = stdout
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(case))
                .unwrap_or_else(|| panic!("no {case} case in:\n{stdout}"));
            assert!(line.trim_start().starts_with("pass "), "{line}");
        }
    }
}

/// The master that owns a node's channel (and with it that node's lease and name set) is
/// killed; its replica takes over. Without restarting any node: chat between the nodes
/// resumes, names stay unique, and new logins are admitted. Then the same for the master of
/// a name's slot on another shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_resumes_after_a_redis_cluster_master_fails_over() {
    let mut redis = RedisCluster::start();
    let nodes = failover_nodes(&redis, 3);
    let mut ann = nodes[0].login("ann").await;
    let mut bob = nodes[1].login("bob").await;
    ann.send("SEND bob before").await;
    ann.expect("SEND-OK").await;
    bob.expect("DELIVERY ann before").await;

    let slot = redis.slot("tcpchat:{n:n2}:deliver");
    let dead = redis.master_of(slot).expect("a master for n2's channel");
    redis.kill(dead);
    let promoted = redis.wait_failover(slot, dead);
    assert_ne!(promoted, dead);

    // Both ways across the failed-over shard.
    send_until_delivered(&mut ann, "ann", &mut bob, "bob", "after the failover").await;
    send_until_delivered(&mut bob, "bob", &mut ann, "ann", "heard you").await;

    // The names were re-registered: still unique on every node.
    for node in &nodes {
        refused_in_use(node, "ann").await;
        refused_in_use(node, "bob").await;
    }
    let mut cat = nodes[2].login("cat").await;
    send_until_delivered(&mut cat, "cat", &mut bob, "bob", "new here").await;
    cat.wait_list(&["ann", "bob", "cat"]).await;

    // Then the master of a name's slot (or of the global state) on another shard: the
    // holder keys it had come back from its replica, or from the nodes' re-sync.
    let (key, second) = [
        "tcpchat:{u:ann}:holder",
        "tcpchat:{u:cat}:holder",
        "tcpchat:{global}:nodes",
    ]
    .iter()
    .find_map(|k| {
        let m = redis.master_of(redis.slot(k))?;
        (m != promoted).then_some((*k, m))
    })
    .expect("a key on another shard");
    let slot = redis.slot(key);
    redis.kill(second);
    redis.wait_failover(slot, second);
    send_until_delivered(&mut ann, "ann", &mut cat, "cat", "still here").await;
    send_until_delivered(&mut cat, "cat", &mut ann, "ann", "me too").await;
    for node in &nodes {
        refused_in_use(node, "ann").await;
        refused_in_use(node, "cat").await;
    }
    cat.wait_list(&["ann", "bob", "cat"]).await;
}
