//! `check --generation old` against our own server: a server fixed to the previous protocol
//! generation passes every case in it, and fails the current generation's `LIST` and
//! `BAD-DEST-USER` cases, so the flag is what decides. See: #16

use std::time::Duration;

use tcpchat_check::Config;
use tcpchat_proto::Generation;
use tcpchat_server::GenerationPolicy;
use tokio::net::TcpListener;

const CAPACITY: usize = 80;

async fn check_against(
    policy: GenerationPolicy,
    generation: Generation,
    only: &[&str],
) -> tcpchat_check::Report {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    let config = tcpchat_server::Config {
        max_clients: CAPACITY,
        generation: policy,
        ..tcpchat_server::Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tcpchat_server::run(listener, config, async {
        let _ = stopped.await;
    }));
    let mut check = Config::new(addr.to_string());
    check.capacity = Some(CAPACITY);
    check.timeout = Duration::from_secs(5);
    check.generation = generation;
    check.only = only.iter().map(|s| s.to_string()).collect();
    let report = tcpchat_check::run(&check, |_| {}).await.expect("reachable");
    let _ = stop.send(());
    let _ = server.await;
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_generation_server_passes_every_case_in_its_generation() {
    let report = check_against(GenerationPolicy::Old, Generation::Old, &[]).await;
    assert!(
        report.success(),
        "{:?}\n{}",
        report.failed_names(),
        tcpchat_check::report::text::failures(&report)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_server_passes_the_old_generation_too() {
    let report = check_against(GenerationPolicy::Auto, Generation::Old, &[]).await;
    assert!(
        report.success(),
        "{:?}\n{}",
        report.failed_names(),
        tcpchat_check::report::text::failures(&report)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_generation_server_fails_the_current_generation() {
    let report = check_against(
        GenerationPolicy::Old,
        Generation::Current,
        &["list", "send-unknown-user"],
    )
    .await;
    assert_eq!(report.failed_names(), ["list", "send-unknown-user"]);
}
