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
    // Accounts offered, so their cases run too (kept in memory: nothing on disk).
    let accounts = tcpchat_accounts::SqliteStore::open_file(std::path::Path::new(":memory:"))
        .expect("in-memory account store");
    let config = tcpchat_server::Config {
        max_clients: CAPACITY,
        account_store: Some(tcpchat_server::StoreHandle::new(accounts.clone())),
        ..tcpchat_server::Config::default()
    };
    // History kept in a directory of its own, so `ext-history` runs too, with the accounts'
    // direct streams (`ext-history-offline`).
    let data = tempfile::tempdir().expect("tempdir");
    let history = tcpchat_server::History::open(
        data.path(),
        tcpchat_server::HistorySettings::default(),
        std::sync::Arc::new(move |name: &str| accounts.is_registered_cached(name)),
    )
    .expect("history");
    let hub = tcpchat_server::MemoryHub::with_history(history);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tcpchat_server::run_with_hub(listener, config, hub, async {
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

/// A server whose limits are tighter than a case needs: the report says the limit, not a
/// bug, stopped it, and how to rerun.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_that_stops_a_case_is_named_in_the_report() {
    use tcpchat_server::limits::{CommandRate, Rate};
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    // A burst of 10, then 5 lines a second, dropped after 1 s of waiting: `message-order`'s
    // 100 SENDs at once cannot all be answered.
    let mut limits = tcpchat_server::Limits::off();
    limits.command_rate = Some(CommandRate {
        rate: Rate::new(10, 5).expect("non-zero"),
        flood_timeout: Duration::from_secs(1),
    });
    let config = tcpchat_server::Config {
        limits,
        ..tcpchat_server::Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tcpchat_server::run(listener, config, async {
        let _ = stopped.await;
    }));

    let mut check = Config::new(addr.to_string());
    check.only = vec!["message-order".to_owned(), "login".to_owned()];
    check.timeout = Duration::from_secs(5);
    let report = tcpchat_check::run(&check, |_| {})
        .await
        .expect("our server is reachable");
    let _ = stop.send(());
    let _ = server.await;

    assert_eq!(report.failed_names(), ["message-order"]);
    let text = tcpchat_check::report::text::failures(&report);
    assert!(
        text.contains("abuse limits refused this") && text.contains("--limits off"),
        "{text}"
    );
}
