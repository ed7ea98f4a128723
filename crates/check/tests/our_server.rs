//! The checker against our own server, in process: every case must pass. (CI also runs
//! `tcpchat check` against the real binary.) See: #5.

use std::time::Duration;

use tcpchat_check::{Config, Outcome};
use tokio::net::TcpListener;

/// Above `many-clients`' 64, so every case runs, `busy` included.
const CAPACITY: usize = 80;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_passes_every_case() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    let config = tcpchat_server::Config {
        max_clients: CAPACITY,
        ..tcpchat_server::Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tcpchat_server::run(listener, config, async {
        let _ = stopped.await;
    }));

    let mut check = Config::new(addr.to_string());
    check.capacity = Some(CAPACITY);
    check.timeout = Duration::from_secs(5);
    let report = tcpchat_check::run(&check, |_| {})
        .await
        .expect("our server is reachable");

    let _ = stop.send(());
    let _ = server.await;
    let failed: Vec<_> = report.failed_names();
    assert!(
        report.success(),
        "failed: {failed:?}\n{}",
        tcpchat_check::report::text::failures(&report)
    );
    for case in &report.cases {
        assert_eq!(
            case.outcome,
            Outcome::Pass,
            "{} did not run",
            case.case.name
        );
    }
}
