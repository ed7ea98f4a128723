//! docs/operations.md "Upgrading without losing users", as a test runs it: two cluster nodes
//! behind HAProxy; one node at a time is stopped (SIGTERM), its users come back through the
//! balancer at once under the same names, and the node, started again on its port, takes
//! new users.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use tcpchat_testkit::{free_port, tcpchat_bin, Client, Haproxy, Node, Process, Redis, PATIENCE};

/// `tcpchat serve --cluster` on a fixed port, so a restart is where HAProxy expects it.
fn node(redis: &Redis, id: &str, port: u16) -> Process {
    let mut cmd = Command::new(tcpchat_bin());
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--cluster",
            &redis.url(),
            "--node-id",
            id,
            "--limits",
            "off",
        ])
        .env_remove("RUST_LOG")
        .env("TCPCHAT_LOG_LEVEL", "info");
    let p = Process::spawn(&format!("node {id}"), cmd);
    p.wait_log("listening addr=");
    p
}

/// Logs `name` in through the balancer, as a client that reconnects would: a connection the
/// balancer closes (its node just went away) or `BUSY` is retried, until [`PATIENCE`].
async fn login_via(lb: SocketAddr, name: &str) -> Client {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut c = Client::connect(lb).await;
        c.send(&format!("HELLO-FROM {name}")).await;
        match c.next_text().await.as_deref() {
            Some(l) if l == format!("HELLO {name}") => return c,
            None | Some("BUSY") if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("login of {name} through {lb}: got {other:?}"),
        }
    }
}

/// The names `p` logged in, from its log.
fn logged_in_on(p: &Process, names: &[&'static str]) -> Vec<&'static str> {
    let log = p.log();
    names
        .iter()
        .copied()
        .filter(|n| {
            log.iter()
                .any(|l| l.contains("logged in") && l.contains(&format!("name={n}")))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_one_node_at_a_time_behind_haproxy() {
    let redis = Redis::start();
    let ports = [free_port(), free_port()];
    let mut nodes = [node(&redis, "n1", ports[0]), node(&redis, "n2", ports[1])];
    let backends: Vec<SocketAddr> = ports.iter().map(|&p| ([127, 0, 0, 1], p).into()).collect();
    let lb = Haproxy::start(&backends);

    let names = ["ada", "ben", "cal", "dee"];
    let mut clients = Vec::new();
    for name in names {
        clients.push(login_via(lb.addr, name).await);
    }
    clients[0].wait_list(&names).await;

    for (i, id) in ["n1", "n2"].into_iter().enumerate() {
        let on_it = logged_in_on(&nodes[i], &names);
        assert!(!on_it.is_empty(), "round-robin put users on {id}");
        // 1. Stop the node: a graceful shutdown, exit 0; it leaves the cluster at once.
        nodes[i].signal("TERM");
        assert!(nodes[i].wait_exit().success(), "{id} exits 0 on SIGTERM");
        nodes[i].wait_log("left the cluster");
        // 2. Its users are disconnected and log in again through the balancer, under the
        //    same names (freed at once, not after the lease), on the node still up.
        for name in &on_it {
            let k = names.iter().position(|n| n == name).expect("a known name");
            clients[k].lines_until_closed().await;
            clients[k] = login_via(lb.addr, name).await;
        }
        let mut survivor = login_via(lb.addr, "probe").await;
        survivor
            .wait_list(&["ada", "ben", "cal", "dee", "probe"])
            .await;
        drop(survivor);
        // 3. Start it again (the upgraded binary) on the same port.
        nodes[i] = node(&redis, id, ports[i]);
        // 4. The balancer sends it new users again once its health check passes.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut n = 0;
        while !nodes[i].log().iter().any(|l| l.contains("logged in")) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} took no new user after its restart; its log:\n{}",
                nodes[i].log_text()
            );
            n += 1;
            drop(login_via(lb.addr, &format!("new{i}x{n}")).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Everyone still chats across both nodes after the rollout.
    for (i, c) in clients.iter_mut().enumerate() {
        let to = names[(i + 1) % names.len()];
        c.send(&format!("SEND {to} after the upgrade")).await;
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let from = names[(i + names.len() - 1) % names.len()];
        let delivery = format!("DELIVERY {from} after the upgrade");
        c.expect_unordered(&["SEND-OK".to_owned(), delivery]).await;
    }
}

/// `GET /metrics` on `addr`: every sample, series → value.
fn scrape(addr: SocketAddr) -> std::collections::HashMap<String, f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer
        .lines()
        .filter(|l| l.starts_with("tcpchat_"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// Scrapes until `ok` holds for the samples (the cluster series are updated by the keeper,
/// on its own schedule), failing with the last scrape after [`PATIENCE`].
fn scrape_until(
    addr: SocketAddr,
    what: &str,
    ok: impl Fn(&std::collections::HashMap<String, f64>) -> bool,
) -> std::collections::HashMap<String, f64> {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let s = scrape(addr);
        if ok(&s) {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "never {what}: {s:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The cluster's series on a real node: live nodes, the subscription, Redis call latency,
/// and errors once Redis is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_metrics_on_a_real_node() {
    let mut redis = Redis::start();
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let m = metrics.to_string();
    // A fast renewal, so the live nodes are counted every second rather than every five.
    let a = Node::start_with(
        &redis.url(),
        "m1",
        &["--metrics-listen", &m, "--cluster-renew", "200ms"],
    );
    let _b = Node::start(&redis.url(), "m2");
    let mut ann = a.login("ann").await;
    ann.send("LIST").await;
    ann.expect("LIST-OK ann").await;
    let get = |s: &std::collections::HashMap<String, f64>, k: &str| s.get(k).copied();
    let s = scrape_until(metrics, "two nodes alive", |s| {
        get(s, "tcpchat_cluster_nodes_alive") == Some(2.0)
    });
    assert_eq!(get(&s, "tcpchat_cluster_subscribed"), Some(1.0), "{s:#?}");
    assert_eq!(
        get(&s, "tcpchat_cluster_redis_errors_total"),
        Some(0.0),
        "{s:#?}"
    );
    let calls = get(&s, "tcpchat_cluster_redis_call_duration_seconds_count").unwrap_or(0.0);
    assert!(calls >= 2.0, "the claim and the LIST at least: {s:#?}");
    assert_eq!(get(&s, "tcpchat_users"), Some(1.0));

    redis.stop();
    let s = scrape_until(metrics, "redis errors counted", |s| {
        get(s, "tcpchat_cluster_redis_errors_total").is_some_and(|n| n > 0.0)
            && get(s, "tcpchat_cluster_subscribed") == Some(0.0)
    });
    assert_eq!(get(&s, "tcpchat_users"), Some(1.0), "ann stays on her node");
    drop(ann);
}
