//! The `rooms` extension across cluster nodes (`docs/cluster.md`, "Rooms"): three real
//! `tcpchat serve --cluster` processes on a real `redis-server`, and the same tests on a real
//! Redis Cluster (three masters, three replicas), where the rooms' slots and the nodes'
//! channels are on different shards. Members on three nodes, two senders on different
//! nodes: everyone sees one order. Then a master of the Redis Cluster fails over under a
//! room.

use std::time::Duration;

use tcpchat_testkit::{Client, Node, Redis, RedisCluster, PATIENCE};

/// Nodes for a Redis Cluster failover: a lease longer than the failover, which on a loaded
/// machine can outlast the 5 s default and free the names by design (`docs/cluster.md`).
fn failover_nodes(url: &str, n: usize) -> Vec<Node> {
    (1..=n)
        .map(|i| {
            Node::start_with(
                url,
                &format!("n{i}"),
                &["--limits", "off", "--cluster-lease", "60s"],
            )
        })
        .collect()
}

fn nodes_on(url: &str, n: usize) -> Vec<Node> {
    (1..=n)
        .map(|i| Node::start_with(url, &format!("n{i}"), &["--limits", "off"]))
        .collect()
}

fn cluster(n: usize) -> (Redis, Vec<Node>) {
    let redis = Redis::start();
    let nodes = nodes_on(&redis.url(), n);
    (redis, nodes)
}

/// Asserts that `keys` are not all on one shard of `redis`: the test then needs every room
/// step to stay in its slot.
fn spread(redis: &RedisCluster, keys: &[&str]) {
    let masters: std::collections::HashSet<Option<u16>> = keys
        .iter()
        .map(|k| redis.master_of(redis.slot(k)))
        .collect();
    assert!(masters.len() >= 2, "every key on one shard: {masters:?}");
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
    let (_redis, nodes) = cluster(3);
    one_order(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_members_on_three_nodes_see_one_order_from_senders_on_two() {
    let redis = RedisCluster::start();
    spread(
        &redis,
        &[
            "tcpchat:{r:#big}:lines",
            "tcpchat:{n:n1}:deliver",
            "tcpchat:{n:n2}:deliver",
            "tcpchat:{n:n3}:deliver",
        ],
    );
    let nodes = nodes_on(&redis.url(), 3);
    one_order(&nodes).await;
}

/// Six members on three nodes; two on two nodes pipeline 150 `SAY`s each: all six see one
/// order, each sender's messages in the order sent. Then topic, refusals, `PART`, a
/// disconnection, a newcomer, `ROOMS`, `KICK`.
async fn one_order(nodes: &[Node]) {
    const EACH: usize = 150;
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
    killed_nodes_members_parted(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_a_killed_nodes_members_are_parted() {
    let redis = RedisCluster::start();
    let nodes = nodes_on(&redis.url(), 2);
    killed_nodes_members_parted(&nodes).await;
}

async fn killed_nodes_members_parted(nodes: &[Node]) {
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

/// `SAY #f {body} #{try}` from `from` until it is answered without `ROOM-UNAVAILABLE`
/// (Redis answers again after a fault); returns the try that went through. A try answered
/// `ROOM-UNAVAILABLE` may still have been said (its script ran, the answer was lost).
async fn say_until_said(from: &mut Client, name: &str, body: &str) -> u32 {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut tries = 0;
    loop {
        tries += 1;
        from.send(&format!("SAY #f {body} #{tries}")).await;
        // A member hears its own line; a refusal comes instead of it.
        loop {
            let line = from.next_text().await.unwrap_or_default();
            if line == "ROOM-UNAVAILABLE" {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "SAY #f {body}: still ROOM-UNAVAILABLE"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                break;
            }
            if line == format!("SAID #f {name} {body} #{tries}") {
                return tries;
            }
            let earlier = line
                .strip_prefix(&format!("SAID #f {name} {body} #"))
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n < tries);
            assert!(
                earlier || line.starts_with("JOINED #f "),
                "SAY #f {body}: got {line:?}"
            );
        }
    }
}

/// Reads `c`'s lines until `SAID #f {from} {body} #{tries}`: earlier tries of it may come
/// first, and `JOINED #f` repeats of members written back after a loss (`docs/cluster.md`).
async fn heard(c: &mut Client, who: &str, from: &str, body: &str, tries: u32) {
    let want = format!("SAID #f {from} {body} #{tries}");
    loop {
        let line = c.next_text().await.unwrap_or_default();
        if line == want {
            return;
        }
        let earlier = line
            .strip_prefix(&format!("SAID #f {from} {body} #"))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n < tries);
        assert!(
            earlier || line.starts_with("JOINED #f "),
            "{who}: expected {want:?}, got {line:?}"
        );
    }
}

/// The master of a room's slot is killed with kill -9 and its replica takes over; no node is
/// restarted. The room's members on three nodes are still its members, in the same order,
/// and hear each other again; a newcomer can join. Then the same for the master of a node's
/// channel, on another shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_a_room_survives_a_master_failover() {
    let mut redis = RedisCluster::start();
    let nodes = failover_nodes(&redis.url(), 3);
    let mut members = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let name = format!("f{i}");
        let mut c = member(node, &name).await;
        c.send("JOIN #f").await;
        c.expect(&format!("JOINED #f {name}")).await;
        for earlier in &mut members {
            let earlier: &mut Client = earlier;
            earlier.expect(&format!("JOINED #f {name}")).await;
        }
        members.push(c);
    }
    members[0].send("TOPIC #f before the failover").await;
    for c in &mut members {
        c.expect("TOPIC-IS #f f0 before the failover").await;
    }

    let slot = redis.slot("tcpchat:{r:#f}:lines");
    let dead = redis.master_of(slot).expect("a master for the room");
    redis.kill(dead);
    let promoted = redis.wait_failover(slot, dead);
    assert_ne!(promoted, dead);

    // Senders on two nodes; every member on every node hears both.
    for (s, body) in [(1, "after the failover"), (2, "me too")] {
        let tries = say_until_said(&mut members[s], &format!("f{s}"), body).await;
        for (i, c) in members.iter_mut().enumerate() {
            if i != s {
                heard(c, &format!("f{i}"), &format!("f{s}"), body, tries).await;
            }
        }
    }
    // Still members, in join order, the owner first; the topic kept.
    members[2].send("MEMBERS #f").await;
    members[2].expect("MEMBERS-OK #f f0,f1,f2").await;
    let mut late = member(&nodes[1], "late").await;
    late.send("JOIN #f").await;
    late.expect("JOINED #f late").await;
    late.expect("TOPIC-IS #f f0 before the failover").await;
    for c in &mut members {
        c.expect("JOINED #f late").await;
    }

    // Then the master of a node's channel (and lease) on another shard.
    let (key, second) = ["n1", "n2", "n3"]
        .iter()
        .map(|n| format!("tcpchat:{{n:{n}}}:deliver"))
        .find_map(|k| {
            let m = redis.master_of(redis.slot(&k))?;
            (m != promoted).then_some((k, m))
        })
        .expect("a node's channel on another shard");
    let slot = redis.slot(&key);
    redis.kill(second);
    redis.wait_failover(slot, second);
    let tries = say_until_said(&mut members[0], "f0", "still here").await;
    for (i, c) in members.iter_mut().enumerate().skip(1) {
        heard(c, &format!("f{i}"), "f0", "still here", tries).await;
    }
    heard(&mut late, "late", "f0", "still here", tries).await;
    late.send("MEMBERS #f").await;
    late.expect("MEMBERS-OK #f f0,f1,f2,late").await;
}

/// A membership whose leaving never reached Redis (a `PART` lost in a failover, a connection
/// whose `drop` failed) does not keep that name out of the room: the name's next `JOIN`, from
/// a login not in the room, joins it again and everyone hears it. Fails if such a `JOIN` is
/// taken for "already a member" (the joiner then never gets its `JOINED`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_membership_does_not_keep_its_name_out() {
    let (redis, nodes) = cluster(2);
    let mut a = member(&nodes[0], "a").await;
    a.send("JOIN #z").await;
    a.expect("JOINED #z a").await;
    // What a lost PART leaves behind: "ghost" still listed, on n2.
    redis.int(&["ZADD", "tcpchat:{r:#z}:members", "100", "ghost"]);
    redis.int(&["HSET", "tcpchat:{r:#z}:where", "ghost", "n2"]);
    a.send("MEMBERS #z").await;
    a.expect("MEMBERS-OK #z a,ghost").await;
    let mut g = member(&nodes[1], "ghost").await;
    g.send("JOIN #z").await;
    g.expect("JOINED #z ghost").await;
    a.expect("JOINED #z ghost").await;
    g.send("SAY #z back").await;
    g.expect("SAID #z ghost back").await;
    a.expect("SAID #z ghost back").await;
    g.send("PART #z").await;
    g.expect("PARTED #z ghost").await;
    a.expect("PARTED #z ghost").await;
    a.send("MEMBERS #z").await;
    a.expect("MEMBERS-OK #z a").await;
}

/// The port of the replica of the master on `master`, from `CLUSTER NODES`
/// (`id ip:port@bus flags master-id ...`).
fn replica_of(redis: &RedisCluster, master: u16) -> u16 {
    let nodes = redis
        .servers
        .iter()
        .find(|s| s.is_running())
        .expect("a running server")
        .text(&["CLUSTER", "NODES"]);
    let port = |f: &str| -> Option<u16> { f.split('@').next()?.rsplit(':').next()?.parse().ok() };
    let fields: Vec<Vec<&str>> = nodes
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let id = fields
        .iter()
        .find(|f| f.len() > 3 && port(f[1]) == Some(master))
        .map(|f| f[0])
        .expect("the master in CLUSTER NODES");
    fields
        .iter()
        .find(|f| f.len() > 3 && f[3] == id && !f[2].contains("fail"))
        .and_then(|f| port(f[1]))
        .expect("a replica of the master")
}

/// A planned failover (`CLUSTER FAILOVER` on a replica): the old master, now a replica,
/// unsubscribes the room's channel under the nodes without dropping their connections. The
/// nodes notice and listen again on the new master; members on two nodes hear each other.
/// Fails if a node takes that unsubscription for one of its own (its members then hear
/// nothing more of the room). The room is chosen on a shard that holds neither node's own
/// channel, so only the room's channel is unsubscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_a_room_survives_a_planned_failover() {
    let redis = RedisCluster::start();
    let taken: Vec<Option<u16>> = ["n1", "n2"]
        .iter()
        .map(|n| redis.master_of(redis.slot(&format!("tcpchat:{{n:{n}}}:deliver"))))
        .collect();
    let room = (0..50)
        .map(|i| format!("#p{i}"))
        .find(|r| {
            !taken.contains(&redis.master_of(redis.slot(&format!("tcpchat:{{r:{r}}}:lines"))))
        })
        .expect("a room on the third shard");
    let nodes = failover_nodes(&redis.url(), 2);
    let mut a = member(&nodes[0], "a").await;
    a.send(&format!("JOIN {room}")).await;
    a.expect(&format!("JOINED {room} a")).await;
    let mut b = member(&nodes[1], "b").await;
    b.send(&format!("JOIN {room}")).await;
    b.expect(&format!("JOINED {room} b")).await;
    a.expect(&format!("JOINED {room} b")).await;

    let slot = redis.slot(&format!("tcpchat:{{r:{room}}}:lines"));
    let old = redis.master_of(slot).expect("the room's master");
    let new = replica_of(&redis, old);
    let server = redis
        .servers
        .iter()
        .find(|s| s.port == new)
        .expect("the replica");
    assert_eq!(
        server.command(&["CLUSTER", "FAILOVER"]).as_deref(),
        Some("+OK")
    );
    assert_eq!(redis.wait_failover(slot, old), new);

    // Each says until its line comes back to it, then the other must hear it. A line said
    // while the nodes were still listening on the old master is lost for them (nothing
    // answers it: a member's `SAY` has no reply but its line), so a try that brings nothing
    // back within a few seconds is followed by the next; the pass condition is only that the
    // lines come back, not how soon.
    let mut pair = [a, b];
    for (f, name) in [(0, "a"), (1, "b")] {
        let [x, y] = &mut pair;
        let (from, to) = if f == 0 { (x, y) } else { (y, x) };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut tries = 0;
        let said = 'said: loop {
            tries += 1;
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}: no line of its own came back"
            );
            from.send(&format!("SAY {room} after {tries}")).await;
            loop {
                let line = match from.next_line_within(Duration::from_secs(3)).await {
                    Ok(Some(l)) => String::from_utf8_lossy(&l).into_owned(),
                    Ok(None) => panic!("{name}: connection closed"),
                    Err(_) => continue 'said,
                };
                if line == format!("SAID {room} {name} after {tries}") {
                    break 'said tries;
                }
                if line == "ROOM-UNAVAILABLE" {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'said;
                }
                assert!(
                    line.starts_with(&format!("SAID {room} {name} after ")),
                    "{name}: {line:?}"
                );
            }
        };
        loop {
            let line = to.next_text().await.expect("the other member hears it");
            if line == format!("SAID {room} {name} after {said}") {
                break;
            }
            assert!(
                line.starts_with(&format!("SAID {room} {name} after ")),
                "{line:?}"
            );
        }
    }
}
