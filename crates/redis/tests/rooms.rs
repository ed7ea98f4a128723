//! The `rooms` extension across cluster nodes: a real `redis-server` and three real
//! `tcpchat serve --cluster` processes (`docs/cluster.md`, "Rooms"). Members on three nodes,
//! two senders on different nodes: everyone sees one order.

use std::time::Duration;

use tcpchat_testkit::{Client, Node, Redis, PATIENCE};

fn cluster(n: usize) -> (Redis, Vec<Node>) {
    let redis = Redis::start();
    let nodes = (1..=n)
        .map(|i| Node::start_with(&redis.url(), &format!("n{i}"), &["--limits", "off"]))
        .collect();
    (redis, nodes)
}

/// Logs `name` in on `node` with `rooms`, retrying while the cluster settles (`BUSY`).
async fn member(node: &Node, name: &str) -> Client {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut c = node.connect().await;
        c.send_raw(format!("EXT rooms\nHELLO-FROM {name}\n").as_bytes())
            .await;
        c.expect("EXT-OK rooms").await;
        match c.next_text().await.as_deref() {
            Some(l) if l == format!("HELLO {name}") => return c,
            Some("BUSY") if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("login of {name}: expected HELLO {name}, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_three_nodes_see_one_order_from_senders_on_two() {
    const EACH: usize = 150;
    let (_redis, nodes) = cluster(3);
    let mut clients = Vec::new();
    for i in 0..6 {
        let name = format!("m{i}");
        let mut c = member(&nodes[i % 3], &name).await;
        c.send("JOIN #big").await;
        c.expect(&format!("JOINED #big {name}")).await;
        for earlier in &mut clients {
            let earlier: &mut Client = earlier;
            earlier.expect(&format!("JOINED #big {name}")).await;
        }
        clients.push(c);
    }
    clients[4].send("MEMBERS #big").await;
    clients[4].expect("MEMBERS-OK #big m0,m1,m2,m3,m4,m5").await;

    // m0 on n1 and m1 on n2 pipeline at once.
    for (s, sender) in clients.iter_mut().take(2).enumerate() {
        let batch: String = (0..EACH).map(|k| format!("SAY #big s{s}-{k}\n")).collect();
        sender.send_raw(batch.as_bytes()).await;
    }
    let mut orders = Vec::new();
    for c in &mut clients {
        let mut seen = Vec::new();
        for _ in 0..2 * EACH {
            let line = c.next_text().await.expect("a room line");
            assert!(line.starts_with("SAID #big "), "{line}");
            seen.push(line);
        }
        orders.push(seen);
    }
    for (i, seen) in orders.iter().enumerate() {
        assert_eq!(seen, &orders[0], "m{i} saw another order than m0");
    }
    let mut distinct = orders[0].clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 2 * EACH, "each message once");
    for s in 0..2 {
        let mine: Vec<_> = orders[0]
            .iter()
            .filter(|l| l.starts_with(&format!("SAID #big m{s} ")))
            .cloned()
            .collect();
        let want: Vec<_> = (0..EACH)
            .map(|k| format!("SAID #big m{s} s{s}-{k}"))
            .collect();
        assert_eq!(mine, want, "a sender's messages in the order sent");
    }

    // The owner sets a topic; a member on n3 leaves; one on n2 disconnects.
    clients[0].send("TOPIC #big three nodes").await;
    for c in &mut clients {
        c.expect("TOPIC-IS #big m0 three nodes").await;
    }
    clients[1].send("KICK #big m2").await;
    clients[1].expect("NOT-OWNER").await;
    clients[2].send("PART #big").await;
    for c in &mut clients {
        c.expect("PARTED #big m2").await;
    }
    let gone = clients.remove(4);
    drop(gone);
    for (i, c) in clients.iter_mut().enumerate() {
        if i != 2 {
            c.expect("PARTED #big m4").await;
        }
    }
    clients[3].send("MEMBERS #big").await;
    clients[3].expect("MEMBERS-OK #big m0,m1,m3,m5").await;
    // A newcomer gets the topic after its JOINED; ROOMS sees the room from any node.
    let mut late = member(&nodes[2], "late").await;
    late.send("JOIN #big").await;
    late.expect("JOINED #big late").await;
    late.expect("TOPIC-IS #big m0 three nodes").await;
    late.send("ROOMS").await;
    late.expect("ROOMS-OK #big").await;
    clients[0].send("KICK #big late").await;
    clients[0].expect("JOINED #big late").await;
    clients[0].expect("KICKED #big late m0").await;
    late.expect("KICKED #big late m0").await;
    late.send("SAY #big x").await;
    late.expect("NOT-MEMBER").await;
}

/// A node killed without a word: its members leave their rooms for the others once its
/// lease runs out and it is reaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_members_are_parted() {
    let (_redis, nodes) = cluster(2);
    let mut a = member(&nodes[0], "a").await;
    a.send("JOIN #r").await;
    a.expect("JOINED #r a").await;
    let mut b = member(&nodes[1], "b").await;
    b.send("JOIN #r").await;
    b.expect("JOINED #r b").await;
    a.expect("JOINED #r b").await;
    nodes[1].process.kill9();
    a.expect("PARTED #r b").await;
    a.send("MEMBERS #r").await;
    a.expect("MEMBERS-OK #r a").await;
}
