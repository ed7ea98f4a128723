//! The route cache and pipelined cross-node delivery (`docs/cluster.md`, "Pipelined
//! delivery"), end to end: a real `redis-server`, real `tcpchat serve --cluster` nodes, raw
//! protocol lines. See: #18.
//!
//! A node caches where each recipient lives (node and login token) and publishes plain frames
//! to it; these tests move, drop and flush what the cache points at, and check that every
//! reply is still the truth: `SEND-OK` only for a message its recipient's node queued, in
//! order. Nothing is timed.

use tcpchat_testkit::{Client, Node, Redis};
use tokio::io::AsyncWriteExt;

/// `n` nodes with their abuse limits off: the tests pipeline thousands of lines.
fn cluster(n: usize) -> (Redis, Vec<Node>) {
    let redis = Redis::start();
    let nodes = (1..=n)
        .map(|i| Node::start_with(&redis.url(), &format!("n{i}"), &["--limits", "off"]))
        .collect();
    (redis, nodes)
}

async fn write_all(c: &mut Client, lines: &str) {
    c.writer
        .write_all(lines.as_bytes())
        .await
        .expect("write lines");
}

/// Logs `name` out of wherever it is and waits until the cluster has freed it.
async fn log_out(user: Client, name: &str, observer: &mut Client) {
    drop(user);
    tcpchat_testkit::wait_presence(observer, name, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_route_after_a_move_still_delivers() {
    let (_redis, nodes) = cluster(3);
    let mut ann = nodes[0].login("ann").await;
    let bob = nodes[1].login("bob").await;

    // ann's node learns bob's route (n2, this login).
    ann.send("SEND bob hello on n2").await;
    ann.expect("SEND-OK").await;

    // bob moves to n3. ann's node still points at n2: n2 answers "not here", the name is
    // looked up again, and the message goes to n3.
    log_out(bob, "bob", &mut ann).await;
    let mut bob = nodes[2].login("bob").await;
    ann.send("SEND bob hello on n3").await;
    ann.expect("SEND-OK").await;
    bob.expect("DELIVERY ann hello on n3").await;

    // bob leaves: the route now names a login that is gone, and nobody else holds the name.
    log_out(bob, "bob", &mut ann).await;
    ann.send("SEND bob anyone?").await;
    ann.expect("BAD-DEST-USER").await;

    // A new login on the node the route named first: another token, still found.
    let mut bob = nodes[1].login("bob").await;
    ann.send("SEND bob back on n2").await;
    ann.expect("SEND-OK").await;
    bob.expect("DELIVERY ann back on n2").await;

    // And again on the same node as the last route: n2, a newer login.
    log_out(bob, "bob", &mut ann).await;
    let mut bob = nodes[1].login("bob").await;
    ann.send("SEND bob newer login").await;
    ann.expect("SEND-OK").await;
    bob.expect("DELIVERY ann newer login").await;
}

/// Replies leave in request order whatever answers first: a local recipient (at once), users
/// on two other nodes (a round trip), a name nowhere (a lookup).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_across_nodes_keep_every_order() {
    let (_redis, nodes) = cluster(3);
    let mut ann = nodes[0].login("ann").await;
    let mut amy = nodes[0].login("amy").await;
    let mut bob = nodes[1].login("bob").await;
    let mut cat = nodes[2].login("cat").await;
    ann.wait_list(&["amy", "ann", "bob", "cat"]).await;

    const N: usize = 1000;
    let mut batch = String::new();
    for i in 0..N {
        batch.push_str(&format!(
            "SEND bob b{i}\nSEND nobody n{i}\nSEND amy a{i}\nSEND cat c{i}\n"
        ));
    }
    write_all(&mut ann, &batch).await;
    for i in 0..N {
        for want in ["SEND-OK", "BAD-DEST-USER", "SEND-OK", "SEND-OK"] {
            let got = ann.next_text().await;
            assert_eq!(got.as_deref(), Some(want), "reply {i}: {got:?}");
        }
    }
    for i in 0..N {
        bob.expect(&format!("DELIVERY ann b{i}")).await;
        amy.expect(&format!("DELIVERY ann a{i}")).await;
        cat.expect(&format!("DELIVERY ann c{i}")).await;
    }
    // Any other request waits for the SENDs before it.
    write_all(&mut ann, "SEND bob last\nLIST\n").await;
    ann.expect("SEND-OK").await;
    ann.expect("LIST-OK amy,ann,bob,cat").await;
    bob.expect("DELIVERY ann last").await;
}

/// bob leaves while thousands of ann's messages to him are in flight. Every `SEND-OK` ann
/// gets is a message bob's connection queued (he half-closes and reads everything that was
/// queued before his connection ended): the answers are a run of `SEND-OK` then only
/// `BAD-DEST-USER`, and bob received exactly that run, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_send_ok_for_a_message_whose_recipient_left_mid_flight() {
    let (_redis, nodes) = cluster(2);
    let mut ann = nodes[0].login("ann").await;
    for round in 0..3 {
        let mut bob = nodes[1].login("bob").await;
        // The route is cached before the burst.
        ann.send_until_ok("bob", "warm up").await;
        bob.expect("DELIVERY ann warm up").await;

        const N: usize = 3000;
        let batch: String = (0..N).map(|i| format!("SEND bob m{i}\n")).collect();
        write_all(&mut ann, &batch).await;
        // bob leaves as soon as the burst starts arriving, then reads what was queued.
        let first = bob.next_text().await;
        assert_eq!(first.as_deref(), Some("DELIVERY ann m0"));
        bob.writer.shutdown().await.expect("half-close");
        let mut got = vec!["DELIVERY ann m0".to_owned()];
        got.extend(bob.lines_until_closed().await);

        let mut ok = 0;
        for i in 0..N {
            match ann.next_text().await.as_deref() {
                Some("SEND-OK") if ok == i => ok += 1,
                Some("BAD-DEST-USER") => {}
                other => panic!("round {round}, reply {i} after {ok} SEND-OK: {other:?}"),
            }
        }
        let want: Vec<String> = (0..ok).map(|i| format!("DELIVERY ann m{i}")).collect();
        assert_eq!(
            got, want,
            "round {round}: bob received exactly the messages answered SEND-OK"
        );
        eprintln!("round {round}: {ok} of {N} delivered before bob left");
        tcpchat_testkit::wait_presence(&mut ann, "bob", false).await;
    }
}

/// Redis loses everything (`FLUSHALL`) while routes are cached: a cached route still reaches
/// its user (the user's node confirms each message), the nodes re-register by themselves,
/// and new users and moved users are found again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_routes_survive_an_emptied_redis_and_heal() {
    let (redis, nodes) = cluster(3);
    let mut ann = nodes[0].login("ann").await;
    let mut bob = nodes[1].login("bob").await;
    ann.send("SEND bob before").await;
    ann.expect("SEND-OK").await;
    bob.expect("DELIVERY ann before").await;

    assert_eq!(redis.command(&["FLUSHALL"]).as_deref(), Some("+OK"));
    ann.send("SEND bob after the flush").await;
    ann.expect("SEND-OK").await;
    bob.expect("DELIVERY ann after the flush").await;

    // Logins resume after the settle time; a newcomer is looked up.
    let mut cat = nodes[2].login("cat").await;
    ann.send_until_ok("cat", "welcome").await;
    cat.expect("DELIVERY ann welcome").await;
    ann.wait_list(&["ann", "bob", "cat"]).await;

    // bob moves: the cached route is stale and is corrected.
    log_out(bob, "bob", &mut ann).await;
    let mut bob = nodes[2].login("bob").await;
    ann.send("SEND bob moved").await;
    ann.expect("SEND-OK").await;
    bob.expect("DELIVERY ann moved").await;
}
