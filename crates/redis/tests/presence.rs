//! The `presence` extension across cluster nodes: a real `redis-server` and three real
//! `tcpchat serve --cluster` processes (`docs/cluster.md`, "Presence"). See: #13.

use std::time::Duration;

use tcpchat_testkit::{Client, Node, Redis, PATIENCE};

fn cluster(n: usize) -> (Redis, Vec<Node>) {
    let redis = Redis::start();
    let nodes = (1..=n)
        .map(|i| Node::start_with(&redis.url(), &format!("n{i}"), &["--limits", "off"]))
        .collect();
    (redis, nodes)
}

/// Logs `name` in on `node` with `presence`, retrying while the cluster settles (`BUSY`), and
/// returns the client and the names of its first list.
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

fn names(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_crosses_three_nodes_in_order_with_messages() {
    let (_redis, nodes) = cluster(3);
    let classic = nodes[2].login("carol").await;
    let (mut w1, first) = watcher(&nodes[0], "w1").await;
    assert_eq!(first, names(&["carol", "w1"]), "the first list of w1");
    let (mut w2, first) = watcher(&nodes[1], "w2").await;
    assert_eq!(first, names(&["carol", "w1", "w2"]), "the first list of w2");
    w1.expect("ONLINE w2").await;

    // Newcomers on every node, each sending to both watchers in the same write as its
    // login and leaving at once: ONLINE before the message, OFFLINE after it, on both nodes.
    for i in 0..12 {
        let node = &nodes[i % 3];
        let name = format!("x{i}");
        // The cluster has settled (the watchers logged in), so no BUSY here.
        let mut x = node.connect().await;
        x.send_raw(format!("HELLO-FROM {name}\nSEND w1 m{i}\nSEND w2 m{i}\n").as_bytes())
            .await;
        x.expect(&format!("HELLO {name}")).await;
        x.expect("SEND-OK").await;
        x.expect("SEND-OK").await;
        drop(x);
        for w in [&mut w1, &mut w2] {
            w.expect(&format!("ONLINE {name}")).await;
            w.expect(&format!("DELIVERY {name} m{i}")).await;
            w.expect(&format!("OFFLINE {name}")).await;
        }
    }

    // A classic user leaving is announced too, on the other nodes.
    drop(classic);
    w1.expect("OFFLINE carol").await;
    w2.expect("OFFLINE carol").await;
}

/// A node killed without a word: its users' departures reach the other nodes' watchers once
/// its lease has expired (another node reaps it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_users_go_offline_for_the_others() {
    let (_redis, nodes) = cluster(3);
    let _dan = nodes[2].login("dan").await;
    let _eve = nodes[2].login("eve").await;
    let (mut w1, first) = watcher(&nodes[0], "w1").await;
    assert_eq!(first, names(&["dan", "eve", "w1"]));
    let (mut w2, _) = watcher(&nodes[1], "w2").await;
    w1.expect("ONLINE w2").await;
    nodes[2].process.kill9();
    for w in [&mut w1, &mut w2] {
        let mut gone = Vec::new();
        for _ in 0..2 {
            gone.push(w.next_text().await.expect("an OFFLINE line"));
        }
        gone.sort();
        assert_eq!(gone, ["OFFLINE dan", "OFFLINE eve"]);
    }
}

/// Presence costs nothing in Redis while no node has a watcher: logins and logouts publish
/// no event. Once one node has a watcher, every other node's logins are published to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_without_watchers_are_sent_no_events() {
    let (redis, nodes) = cluster(2);
    // Settled: both nodes admit logins.
    drop(nodes[0].login("warm1").await);
    drop(nodes[1].login("warm2").await);
    let publishes = |redis: &Redis| redis.command_calls().get("publish").copied().unwrap_or(0);
    let before = publishes(&redis);
    for i in 0..10 {
        let mut c = nodes[i % 2].login(&format!("q{i}")).await;
        c.send("LIST").await;
        let list = c.next_text().await.expect("LIST-OK");
        assert!(list.starts_with("LIST-OK "), "{list}");
    }
    // The logouts' release scripts run just after each connection ends; a watcher's login
    // below is ordered after them only by waiting for LIST to be empty of them.
    let mut probe = nodes[1].login("probe").await;
    probe.wait_list(&["probe"]).await;
    assert_eq!(
        publishes(&redis),
        before,
        "no PUBLISH for logins and logouts while nobody watches"
    );

    let (mut w, _) = watcher(&nodes[0], "w").await;
    drop(nodes[1].login("r").await);
    w.expect("ONLINE r").await;
    w.expect("OFFLINE r").await;
    assert!(
        publishes(&redis) >= before + 2,
        "the events for w were published"
    );
    drop(probe);
}
