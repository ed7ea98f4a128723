//! Cluster accounts end to end: a real `redis-server` with AOF, real `tcpchat serve
//! --cluster` nodes, raw protocol lines (`docs/cluster.md`, "Accounts").
//!
//! An account registered on one node logs in on another; a classic client on a third gets
//! `IN-USE` for the name; a login takes the name over from a session on another node; the
//! account survives a restart of Redis; `tcpchat accounts --cluster` locks it; and a Redis
//! without persistence gets no accounts offered, with the log line saying why.

use std::time::Duration;

use tcpchat_testkit::{tcpchat_bin, Client, Node, Redis, PATIENCE};

const PW: &str = "correct-horse";

fn nodes(redis: &Redis, n: usize) -> Vec<Node> {
    (1..=n)
        .map(|i| Node::start_with(&redis.url(), &format!("n{i}"), &["--limits", "off"]))
        .collect()
}

async fn accounts_client(node: &Node) -> Client {
    let mut c = node.connect().await;
    c.send("EXT accounts").await;
    c.expect("EXT-OK accounts").await;
    c
}

/// Sends `line` on fresh accounts connections to `node` until the answer is `want`,
/// retrying while the cluster cannot answer yet (`BUSY` while nodes re-register after a
/// Redis restart, `THROTTLED 1` while the store is unreachable).
async fn until(node: &Node, line: &str, want: &str) -> Client {
    until_on(node, true, line, want).await
}

/// [`until`] on a classic connection (`extended: false`) or an accounts one.
async fn until_on(node: &Node, extended: bool, line: &str, want: &str) -> Client {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut c = node.connect().await;
        let ready = !extended || {
            c.send("EXT accounts").await;
            c.next_text().await.as_deref() == Some("EXT-OK accounts")
        };
        if ready {
            c.send(line).await;
            let got = c.next_text().await;
            if got.as_deref() == Some(want) {
                return c;
            }
            assert!(
                matches!(got.as_deref(), Some("BUSY" | "THROTTLED 1") | None),
                "{line}: expected {want}, got {got:?}"
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{line} on {}: never {want}",
            node.id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn accounts_cli(redis: &Redis, args: &[&str]) -> std::process::Output {
    std::process::Command::new(tcpchat_bin())
        .arg("accounts")
        .args(args)
        .args(["--cluster", &redis.url()])
        .output()
        .expect("run tcpchat accounts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_shared_by_every_node_and_survive_a_redis_restart() {
    let mut redis = Redis::start_persistent();
    let n = nodes(&redis, 3);

    // The first logins wait for the new cluster to settle.
    let mut first = until(&n[0], "HELLO-FROM alice", "HELLO alice").await;
    first.send(&format!("REGISTER {PW}")).await;
    first.expect("REGISTER-OK").await;

    // A classic client on a third node: IN-USE; an accounts one: NAME-REGISTERED.
    let mut classic = n[2].connect().await;
    classic.send("HELLO-FROM alice").await;
    classic.expect("IN-USE").await;
    let mut other = accounts_client(&n[2]).await;
    other.send("HELLO-FROM alice").await;
    other.expect("NAME-REGISTERED").await;
    other.send("LOGIN alice wrong-password").await;
    other.expect("BAD-PASSWORD").await;

    // Logging in on node 2 takes the name over from node 1's session.
    let mut bob = n[0].login("bob").await;
    let mut second = accounts_client(&n[1]).await;
    second.send(&format!("LOGIN alice {PW}")).await;
    second.expect("HELLO alice").await;
    first.expect_closed().await;
    bob.send_until_ok("alice", "to node 2").await;
    second.expect("DELIVERY bob to node 2").await;

    // The operator sees it from any machine that reaches Redis.
    let out = accounts_cli(&redis, &["list"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("alice\tactive"));

    // A crash and restart of Redis: the account is still there.
    redis.stop();
    redis.restart();
    let mut third = until(&n[2], &format!("LOGIN alice {PW}"), "HELLO alice").await;
    // ... and that login took the name over from node 2.
    second.expect_closed().await;
    // A node's first call after Redis came back may fail (its connection was cut): BUSY.
    until_on(&n[0], false, "HELLO-FROM alice", "IN-USE").await;

    // Locked by the operator: refused on every node.
    let out = accounts_cli(&redis, &["lock", "alice"]);
    assert!(out.status.success(), "{out:?}");
    until(&n[0], &format!("LOGIN alice {PW}"), "LOCKED").await;
    // Removed: free for anyone once she leaves.
    let out = accounts_cli(&redis, &["remove", "alice"]);
    assert!(out.status.success(), "{out:?}");
    third.send(&format!("UNREGISTER {PW}")).await;
    third.expect("NO-ACCOUNT").await;
    drop(third);
    tcpchat_testkit::login_at(n[1].addr, "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_persistence_accounts_is_not_offered_and_the_log_says_why() {
    let redis = Redis::start();
    let n = nodes(&redis, 1);
    let log = n[0].process.wait_log("accounts NOT offered");
    assert!(log.contains("no persistence"), "{log}");
    let mut c = n[0].connect().await;
    c.send("EXT accounts").await;
    // Without it, the server may offer nothing at all (then EXT itself is unknown).
    let reply = c.next_text().await.expect("a reply");
    assert!(reply == "EXT-OK" || reply == "BAD-RQST-HDR", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_takes_the_name_over_from_a_session_on_the_same_node() {
    let redis = Redis::start_persistent();
    let n = nodes(&redis, 1);
    let mut first = until(&n[0], "HELLO-FROM carol", "HELLO carol").await;
    first.send(&format!("REGISTER {PW}")).await;
    first.expect("REGISTER-OK").await;
    let mut second = accounts_client(&n[0]).await;
    second.send(&format!("LOGIN carol {PW}")).await;
    second.expect("HELLO carol").await;
    first.expect_closed().await;
    // The earlier session's end freed nothing: carol is still reachable, as the new one.
    let mut dave = n[0].login("dave").await;
    dave.send("SEND carol still here").await;
    dave.expect("SEND-OK").await;
    second.expect("DELIVERY dave still here").await;
    let mut classic = n[0].connect().await;
    classic.send("HELLO-FROM carol").await;
    classic.expect("IN-USE").await;
}
