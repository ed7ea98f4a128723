//! `check tls://...` against our server behind a TLS-terminating relay (testkit's
//! [`TlsRelay`]): the cases run inside TLS, and a refused certificate stops the run with one
//! clear error. The relay forwards plaintext to the server's plain port.

use std::time::Duration;

use tcpchat_check::{CheckError, Config, Outcome};
use tcpchat_testkit::{TestCa, TlsRelay};
use tokio::net::TcpListener;

/// Above `many-clients`' 64, so `busy` runs too.
const CAPACITY: usize = 80;

async fn server() -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tempfile::TempDir,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
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
    tokio::spawn(tcpchat_server::run_with_hub(listener, config, hub, async {
        let _ = stopped.await;
    }));
    (addr, stop, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_passes_over_tls() {
    let (addr, _stop, _data) = server().await;
    let ca = TestCa::new();
    let relay = TlsRelay::start(addr, &ca.leaf(&["localhost"]));
    let dir = std::env::temp_dir().join(format!("tcpchat-check-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut check = Config::new(format!("tls://localhost:{}", relay.addr.port()));
    check.ca = Some(ca.write(&dir, "ca.pem"));
    check.capacity = Some(CAPACITY);
    check.timeout = Duration::from_secs(5);
    let report = tcpchat_check::run(&check, |_| {}).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = report.expect("reachable over TLS");
    assert!(
        report.success(),
        "failed: {:?}\n{}",
        report.failed_names(),
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

#[tokio::test]
async fn an_untrusted_certificate_is_one_clear_error() {
    let (addr, _stop, _data) = server().await;
    let relay = TlsRelay::start(addr, &TestCa::new().leaf(&["localhost"]));
    let check = Config::new(format!("tls://localhost:{}", relay.addr.port()));
    let err = tcpchat_check::run(&check, |_| {})
        .await
        .expect_err("the system's roots do not trust a test CA");
    assert!(matches!(err, CheckError::Handshake { .. }), "{err}");
    assert!(err.to_string().contains("--ca cert.pem"), "{err}");
}
