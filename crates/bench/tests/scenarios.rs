//! Every scenario, briefly, against the real server on loopback. These assert counts
//! (everyone logged in, sent = delivered, nothing lost, reordered or altered), never
//! timings: how fast is `docs/performance.md`'s business.

use std::net::SocketAddr;
use std::time::Duration;

use tcpchat_bench::{BenchError, Dialect, Options, Plan, Report, Scenario};
use tcpchat_server::Config;

/// A server on its own runtime in a background thread, for the life of the test process.
fn server(config: Config) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            tx.send(listener.local_addr().expect("local addr"))
                .expect("test waits for the address");
            tcpchat_server::run(listener, config, std::future::pending())
                .await
                .expect("server runs");
        });
    });
    rx.recv().expect("server started")
}

/// A server with a plain TCP listener and the web listener (`serve --web-listen`), as
/// [`server`]: `(tcp, web)`.
fn web_server(config: Config) -> (SocketAddr, SocketAddr) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let any: SocketAddr = "127.0.0.1:0".parse().expect("literal");
            let plain = tcpchat_server::bind(any).expect("bind tcp");
            let web = tcpchat_server::bind(any).expect("bind web");
            tx.send((
                plain.local_addr().expect("local addr"),
                web.local_addr().expect("local addr"),
            ))
            .expect("test waits for the addresses");
            let listeners = tcpchat_server::Listeners {
                plain: Some(plain),
                tls: None,
                web: Some(tcpchat_web::server(
                    web,
                    None,
                    tcpchat_web::Settings::default(),
                )),
            };
            tcpchat_server::run_listeners(
                listeners,
                config,
                tcpchat_server::MemoryHub::new(),
                std::future::pending(),
            )
            .await
            .expect("server runs");
        });
    });
    rx.recv().expect("server started")
}

/// A server set up for load tests, as the docs run one: abuse limits off (a throughput run is
/// a flood, by design).
fn load_test_config() -> Config {
    Config {
        limits: tcpchat_server::Limits::off(),
        ..Config::default()
    }
}

fn plan(target: SocketAddr, scenario: Scenario, clients: usize) -> Plan {
    Plan {
        target,
        more_targets: Vec::new(),
        dialect: Dialect::Classic,
        scenario,
        clients,
        size: 64,
        duration: Duration::from_millis(300),
        login_timeout: Duration::from_secs(20),
        login_concurrency: 1000,
        drain_timeout: Duration::from_secs(20),
        tag: format!("t{}x", scenario.name().len()),
        spread_sources: true,
        pace_tick: tcpchat_bench::DEFAULT_PACE_TICK,
        tls: None,
        ws: None,
    }
}

fn run(plan: Plan, server_pid: Option<u32>) -> Result<Report, BenchError> {
    tcpchat_bench::run(Options {
        plan,
        server_pid,
        clients_per_process: 10_000,
        worker_command: None,
        progress: false,
        metrics: None,
    })
}

fn assert_clean(r: &Report) {
    assert!(r.problems.is_empty(), "problems: {:#?}", r.problems);
    assert_eq!(r.login.logged_in, r.clients as u64, "{}", r.table());
    assert_eq!(r.login.failures.total(), 0, "{}", r.table());
    if let Some(m) = &r.messages {
        assert!(m.sent > 0, "nothing was sent:\n{}", r.table());
        assert_eq!(m.sent, m.delivered, "{}", r.table());
        assert_eq!(
            m.acknowledged,
            m.sent,
            "every SEND got SEND-OK:\n{}",
            r.table()
        );
        assert_eq!(
            (
                m.lost,
                m.order_violations,
                m.content_errors,
                m.send_failed,
                m.protocol_errors,
                m.disconnected
            ),
            (0, 0, 0, 0, 0, 0),
            "{}",
            r.table()
        );
        assert_eq!(m.latency.count, m.delivered, "one latency per delivery");
    }
}

#[test]
fn every_scenario_against_the_real_server() {
    let addr = server(load_test_config());
    let scenarios = [
        (Scenario::Connect, 200),
        (Scenario::Throughput { window: 16 }, 20),
        (Scenario::Latency { rate: 2000.0 }, 20),
        (Scenario::Fanin { window: 4 }, 20),
        (Scenario::Idle, 100),
    ];
    for (scenario, clients) in scenarios {
        let pid = (scenario == Scenario::Idle).then(std::process::id);
        let report = run(plan(addr, scenario, clients), pid).expect("bench runs");
        assert_clean(&report);
        if scenario == Scenario::Idle {
            let mem = report.memory.as_ref().expect("memory measured with a pid");
            assert!(mem.logged_in_bytes.is_some() && mem.bytes_per_client.is_some());
        }
        if matches!(scenario, Scenario::Fanin { .. }) {
            let m = report.messages.as_ref().expect("fanin sends");
            let (lo, hi) = (
                m.per_sender_min.expect("min"),
                m.per_sender_max.expect("max"),
            );
            assert!(lo > 0 && lo <= hi, "every sender got through: {lo}..{hi}");
        }
    }
}

/// With the server's metrics given, the report carries the server's share: one delivery
/// counted per message delivered during the run, and the bench's own send lag, one per
/// message sent. Counts only.
#[test]
fn the_servers_share_and_the_benchs_lag_are_reported() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let chat = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            let scrape = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            let addrs = (
                chat.local_addr().expect("local addr"),
                scrape.local_addr().expect("local addr"),
            );
            let metrics = tcpchat_server::Metrics::on();
            tokio::spawn(tcpchat_server::metrics::serve(scrape, metrics.clone()));
            tx.send(addrs).expect("test waits for the addresses");
            let listeners = tcpchat_server::Listeners {
                plain: Some(chat),
                tls: None,
                web: None,
            };
            tcpchat_server::run_observed(
                listeners,
                load_test_config(),
                tcpchat_server::MemoryHub::new(),
                metrics,
                std::future::pending(),
            )
            .await
            .expect("server runs");
        });
    });
    let (addr, scrape) = rx.recv().expect("server started");
    let url = format!("http://{scrape}/metrics").parse().expect("url");
    let report = tcpchat_bench::run(Options {
        plan: plan(addr, Scenario::Latency { rate: 2000.0 }, 20),
        server_pid: None,
        clients_per_process: 10_000,
        worker_command: None,
        progress: false,
        metrics: Some(url),
    })
    .expect("bench runs");
    assert_clean(&report);
    let m = report.messages.as_ref().expect("latency sends");
    let server = m.server_latency.as_ref().expect("scraped");
    assert_eq!(server.count, m.delivered, "{}", report.table());
    assert!(server.p50_us.is_some(), "{server:?}");
    let lag = m.send_lag.as_ref().expect("open loop");
    assert_eq!(lag.count, m.sent, "{}", report.table());
    assert!(report.table().contains("bench lag") && report.table().contains("server"));
    // Every client ran in this process: its own CPU over the run is reported (a share of
    // cores, whatever its size).
    let cpu = m.bench_cpu.expect("one process: its CPU is known");
    assert!(cpu.is_finite() && cpu >= 0.0, "{cpu}");
    assert!(report.table().contains("bench CPU"), "{}", report.table());

    // Not a tcpchat metrics endpoint: a clear error, before any message is sent.
    let wrong = format!("http://{addr}/metrics").parse().expect("url");
    let err = tcpchat_bench::run(Options {
        plan: plan(addr, Scenario::Latency { rate: 2000.0 }, 4),
        server_pid: None,
        clients_per_process: 10_000,
        worker_command: None,
        progress: false,
        metrics: Some(wrong),
    })
    .expect_err("not a metrics endpoint");
    assert!(err.to_string().contains("--metrics"), "{err}");
}

/// LIST in a loop beside SEND: every LIST-OK names all 50 users, every message arrives,
/// in a closed loop and at a fixed LIST rate. Listers 0..5, client 5 idle (its partner
/// lists), 22 sending pairs. See: #11
#[test]
fn the_scenarios_over_websocket_against_the_real_web_listener() {
    let (_, web) = web_server(load_test_config());
    let scenarios = [
        (Scenario::Connect, 100),
        (Scenario::Throughput { window: 16 }, 20),
        (Scenario::Latency { rate: 2000.0 }, 20),
        (Scenario::Idle, 100),
        (
            Scenario::ListSend {
                listers: 2,
                rate: 500.0,
                list_rate: None,
            },
            20,
        ),
    ];
    for (scenario, clients) in scenarios {
        let pid = (scenario == Scenario::Idle).then(std::process::id);
        let mut p = plan(web, scenario, clients);
        p.ws = Some(tcpchat_bench::WsTarget {
            host: web.to_string(),
            path: "/ws".into(),
        });
        let report = run(p, pid).expect("bench runs over ws://");
        assert_clean(&report);
        assert!(report.target.starts_with("ws://"), "{}", report.target);
        if scenario == Scenario::Idle {
            let mem = report.memory.as_ref().expect("memory measured with a pid");
            assert!(mem.logged_in_bytes.is_some() && mem.bytes_per_client.is_some());
        }
    }
}

#[test]
fn a_ws_target_that_is_not_a_web_listener_is_a_clear_error() {
    let (tcp, web) = web_server(load_test_config());
    let ws = |host: SocketAddr, path: &str| {
        let mut p = plan(host, Scenario::Connect, 2);
        p.ws = Some(tcpchat_bench::WsTarget {
            host: host.to_string(),
            path: path.into(),
        });
        p
    };
    // The chat port answers the upgrade request's lines in the chat protocol.
    let err = run(ws(tcp, "/ws"), None).expect_err("a TCP chat port is no web listener");
    let text = err.to_string();
    assert!(text.contains("not 101 Switching Protocols"), "{text}");
    // The web listener, asked for a path that does not upgrade.
    let err = run(ws(web, "/nowhere"), None).expect_err("no WebSocket there");
    let text = err.to_string();
    assert!(text.contains("HTTP/1.1 4"), "{text}");
}

#[test]
fn list_send_checks_every_list_and_every_message() {
    let addr = server(load_test_config());
    for list_rate in [None, Some(500.0)] {
        let scenario = Scenario::ListSend {
            listers: 5,
            rate: 2000.0,
            list_rate,
        };
        let report = run(plan(addr, scenario, 50), None).expect("bench runs");
        check_list_send(&report, list_rate);
    }
}

fn check_list_send(report: &Report, list_rate: Option<f64>) {
    assert_clean(report);
    let lists = report
        .lists
        .as_ref()
        .expect("list-send reports its LIST loop");
    assert_eq!(lists.listers, 5);
    assert!(lists.answered > 0, "no LIST answered:\n{}", report.table());
    assert_eq!(lists.errors, 0, "{}", report.table());
    assert_eq!(
        lists.latency.count, lists.answered,
        "one round trip per LIST-OK"
    );
    assert_eq!(lists.offered_per_sec, list_rate);
    let m = report.messages.as_ref().expect("list-send sends");
    assert_eq!(m.offered_per_sec, Some(2000.0));
    assert!(report.table().contains("LIST-OK/s"), "{}", report.table());
    assert_eq!(
        report.table().contains("LIST skipped"),
        list_rate.is_some(),
        "{}",
        report.table()
    );
}

/// A proxy in front of `upstream` that passes everything through, except that from the
/// third `LIST-OK` on each connection it changes the reply's last byte: same length, same
/// number of names, one name wrong.
fn corrupting_proxy(upstream: SocketAddr) -> SocketAddr {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("proxy runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            tx.send(listener.local_addr().expect("local addr"))
                .expect("test waits for the address");
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (from_server, mut to_server) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                    });
                    let mut lines = BufReader::new(from_server);
                    let mut line = Vec::new();
                    let mut lists = 0;
                    while lines.read_until(b'\n', &mut line).await.unwrap_or(0) > 0 {
                        if line.starts_with(b"LIST-OK ") {
                            lists += 1;
                            if lists > 2 && line.len() > 2 {
                                let last = line.len() - 2;
                                line[last] = if line[last] == b'0' { b'1' } else { b'0' };
                            }
                        }
                        if to_client.write_all(&line).await.is_err() {
                            return;
                        }
                        line.clear();
                    }
                });
            }
        });
    });
    rx.recv().expect("proxy started")
}

/// A proxy in front of `upstream` that, on each connection, passes the client's first line
/// (its login) and then reads nothing more from the client for `stall`, with a 4 KiB receive
/// buffer: the client's socket fills and refuses bytes. The server's side passes through.
fn stalling_proxy(upstream: SocketAddr, stall: Duration) -> SocketAddr {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("proxy runtime");
        rt.block_on(async move {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .set_recv_buffer_size(4096)
                .expect("small receive buffer");
            socket
                .bind("127.0.0.1:0".parse().expect("literal"))
                .expect("bind loopback");
            let listener = socket.listen(16).expect("listen");
            tx.send(listener.local_addr().expect("local addr"))
                .expect("test waits for the address");
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                    });
                    let mut from_client = BufReader::with_capacity(1024, from_client);
                    let mut login = Vec::new();
                    if from_client.read_until(b'\n', &mut login).await.unwrap_or(0) == 0
                        || to_server.write_all(&login).await.is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(stall).await;
                    let _ = tokio::io::copy_buf(&mut from_client, &mut to_server).await;
                });
            }
        });
    });
    rx.recv().expect("proxy started")
}

/// The pacing thread writes a plain sender's messages itself, and what the socket does not
/// take waits in the sender's queue for its task. Against a server that stops reading for a
/// second (3.2 MB per sender in the meantime, beyond what the sender's socket buffers on
/// loopback, whose 64 KiB segments start it at a few MB, and the proxy's 4 KiB receive
/// buffer hold), every message still arrives once, in order, intact, and is acknowledged.
#[test]
fn messages_a_full_socket_refused_arrive_once_in_order() {
    // After the stall the server gets the whole backlog at once and relays it faster than a
    // bench on a loaded machine may read: its outgoing queues are made big enough that the
    // slow-reader rule (tested elsewhere) cannot drop a client here, so only the bench's
    // own queueing is under test.
    let config = Config {
        outbox_limit_bytes: 256 * 1024 * 1024,
        ..load_test_config()
    };
    let addr = stalling_proxy(server(config), Duration::from_secs(1));
    let mut p = plan(addr, Scenario::Latency { rate: 4000.0 }, 2);
    p.size = 4000;
    p.duration = Duration::from_millis(800);
    let report = run(p, None).expect("bench runs");
    assert_clean(&report);
    let m = report.messages.as_ref().expect("latency sends");
    assert!(
        m.sent >= 1000,
        "the run sent its schedule:\n{}",
        report.table()
    );
}

/// The bench compares a LIST-OK with the last one it checked name by name instead of
/// checking every reply again: a later reply with one name wrong (same length, same count)
/// must still be counted as an error.
#[test]
fn a_wrong_list_ok_after_right_ones_is_caught() {
    let addr = corrupting_proxy(server(Config::default()));
    let scenario = Scenario::ListSend {
        listers: 2,
        rate: 500.0,
        list_rate: None,
    };
    let mut p = plan(addr, scenario, 20);
    p.duration = Duration::from_millis(500);
    let report = run(p, None).expect("bench runs");
    let lists = report.lists.as_ref().expect("list-send reports its LISTs");
    assert!(
        lists.answered > 0,
        "the first replies are right:\n{}",
        report.table()
    );
    assert!(
        lists.errors > 0,
        "wrong replies counted:\n{}",
        report.table()
    );
    assert!(
        report.problems.iter().any(|p| p.contains("LIST-OK")),
        "{:#?}",
        report.problems
    );
}

/// Beyond `--max-clients` the server answers BUSY, and the bench counts it as such.
#[test]
fn busy_beyond_the_client_limit_is_counted() {
    let addr = server(Config {
        max_clients: 20,
        ..Config::default()
    });
    // Held open (idle) so the first 20 keep their slots while the rest arrive.
    let mut p = plan(addr, Scenario::Idle, 30);
    p.duration = Duration::from_millis(50);
    p.login_concurrency = 1;
    let r = run(p, None).expect("bench runs");
    assert_eq!(r.login.logged_in, 20, "{}", r.table());
    assert_eq!(r.login.failures.busy, 10, "{}", r.table());
    assert_eq!(r.login.failures.total(), 10, "{}", r.table());
}

#[test]
fn a_refused_target_is_a_clear_error() {
    // Bind and drop: nothing listens on this port any more.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let err = run(plan(addr, Scenario::Connect, 5), None).expect_err("nothing listens");
    assert!(err.to_string().contains("connection refused"), "got: {err}");
}

#[test]
fn a_server_of_another_protocol_is_named() {
    let addr = server(load_test_config());
    let mut p = plan(addr, Scenario::Connect, 5);
    p.dialect = Dialect::Irc;
    p.login_timeout = Duration::from_secs(2);
    let err = run(p, None).expect_err("tcpchat does not speak IRC");
    let msg = err.to_string();
    assert!(msg.contains("--dialect classic"), "got: {msg}");
    let mut p = plan(
        addr,
        Scenario::ListSend {
            listers: 2,
            rate: 10.0,
            list_rate: None,
        },
        10,
    );
    p.dialect = Dialect::Irc;
    let err = run(p, None).expect_err("IRC has no LIST of users");
    assert!(matches!(err, BenchError::Usage(_)), "got: {err}");
}

#[test]
fn options_that_make_no_sense_are_usage_errors() {
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("literal");
    let cases = [
        (Scenario::Throughput { window: 8 }, 3, "even"),
        (Scenario::Throughput { window: 0 }, 4, "--window"),
        (Scenario::Latency { rate: 0.0 }, 4, "--rate"),
        (Scenario::Fanin { window: 1 }, 1, "at least 2"),
        (Scenario::Connect, 0, "--clients"),
        (
            Scenario::ListSend {
                listers: 0,
                rate: 10.0,
                list_rate: None,
            },
            10,
            "--listers",
        ),
        (
            Scenario::ListSend {
                listers: 10,
                rate: 10.0,
                list_rate: None,
            },
            10,
            "--listers",
        ),
        (
            Scenario::ListSend {
                listers: 9,
                rate: 10.0,
                list_rate: None,
            },
            10,
            "sending pair",
        ),
        (
            Scenario::ListSend {
                listers: 2,
                rate: 0.0,
                list_rate: None,
            },
            10,
            "--rate",
        ),
        (
            Scenario::ListSend {
                listers: 2,
                rate: 10.0,
                list_rate: Some(f64::NAN),
            },
            10,
            "--list-rate",
        ),
    ];
    for (scenario, clients, says) in cases {
        let err = run(plan(addr, scenario, clients), None).expect_err("invalid");
        assert!(matches!(err, BenchError::Usage(_)), "{scenario:?}: {err}");
        assert!(err.to_string().contains(says), "{scenario:?}: {err}");
    }
}

/// `abuse`: with a command rate, the flooder's lines are held back (far fewer handled than
/// written) and the canary gets every message; with the limits off, every count still adds
/// up. Counts only; the latency figures are docs/performance.md's.
#[test]
fn abuse_runs_with_limits_on_and_off() {
    use tcpchat_bench::abuse::{run_abuse, AbusePlan};
    use tcpchat_server::limits::{CommandRate, Rate};
    let mut limits = tcpchat_server::Limits::off();
    limits.command_rate = Some(CommandRate {
        rate: Rate::new(20, 20).expect("non-zero"),
        flood_timeout: Duration::from_millis(500),
    });
    let on = server(Config {
        limits,
        ..Config::default()
    });
    let off = server(load_test_config());
    let plan = |target| AbusePlan {
        target,
        duration: Duration::from_secs(1),
        canary_rate: 10.0,
        size: 64,
        login_timeout: Duration::from_secs(20),
        tag: "ab".into(),
    };
    let r = run_abuse(&plan(on)).expect("abuse runs");
    assert!(r.problems.is_empty(), "{}", r.table());
    assert_eq!(r.canary_delivered, r.canary_sent, "{}", r.table());
    assert!(r.canary_sent > 0, "{}", r.table());
    assert!(
        r.flood_acknowledged + r.flood_refused < r.flood_written,
        "{}",
        r.table()
    );
    assert!(
        r.flooder_dropped_after_secs.is_some(),
        "dropped after the flood timeout: {}",
        r.table()
    );
    assert!(r.table().contains("dropped by the server"), "{}", r.table());

    let r = run_abuse(&plan(off)).expect("abuse runs");
    assert!(r.problems.is_empty(), "{}", r.table());
    assert_eq!(r.canary_delivered, r.canary_sent, "{}", r.table());
    assert_eq!(r.flooder_dropped_after_secs, None, "{}", r.table());
}

/// One room of 30 members, 4 of them sending: every message reaches the 29 others once, in
/// each sender's order, and each sender's own copy confirms it. See: #14
#[test]
fn room_delivers_every_message_to_every_other_member() {
    let addr = server(load_test_config());
    let scenario = Scenario::Room {
        senders: 4,
        rate: 1000.0,
    };
    let report = run(plan(addr, scenario, 30), None).expect("bench runs");
    assert!(
        report.problems.is_empty(),
        "problems: {:#?}",
        report.problems
    );
    assert_eq!(report.login.logged_in, 30, "{}", report.table());
    let m = report.messages.as_ref().expect("room sends");
    assert!(m.sent > 0, "nothing was sent:\n{}", report.table());
    assert_eq!(m.delivered, m.sent * 29, "{}", report.table());
    assert_eq!(
        m.acknowledged,
        m.sent,
        "every SAY echoed:\n{}",
        report.table()
    );
    assert_eq!(
        (
            m.lost,
            m.order_violations,
            m.content_errors,
            m.protocol_errors,
            m.disconnected
        ),
        (0, 0, 0, 0, 0),
        "{}",
        report.table()
    );
    assert_eq!(m.latency.count, m.delivered, "one latency per delivery");
    assert!(
        m.per_sender_min.is_some_and(|lo| lo > 0),
        "{}",
        report.table()
    );
    assert!(report.table().contains("4 senders"), "{}", report.table());
}

/// A server without the rooms extension: the room scenario cannot log in, and says so.
#[test]
fn room_against_a_server_without_rooms_fails_plainly() {
    let config = Config {
        extensions: tcpchat_proto::ExtensionSet::NONE,
        ..load_test_config()
    };
    let addr = server(config);
    let scenario = Scenario::Room {
        senders: 1,
        rate: 100.0,
    };
    let err = run(plan(addr, scenario, 4), None).expect_err("no rooms, no run");
    assert!(
        matches!(&err, BenchError::Target { why, .. } if why.contains("does the server offer rooms?")),
        "{err}"
    );
}
