//! The checker against real client programs: a correct Python client passes every case, and
//! each deliberately broken one (one defect each, `tests/clients/`) fails the case made for
//! that defect. This is the proof that the cases can fail, and that they fail for the right
//! reason. Needs `python3` (scripts/test.sh installs it).

use std::path::PathBuf;
use std::time::Duration;

use tcpchat_check_client::{run, Config, Outcome, Report, Terminal};

fn script(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "clients", name]
        .iter()
        .collect();
    path.to_string_lossy().into_owned()
}

fn python() -> String {
    let python = "python3".to_string();
    assert!(
        std::process::Command::new(&python)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "these tests run Python clients: install python3 (Debian package python3)"
    );
    python
}

fn config(client: &str, only: &[&str]) -> Config {
    let mut config = Config::new(vec![
        python(),
        script(client),
        "{host}".into(),
        "{port}".into(),
    ]);
    config.only = only.iter().map(|s| s.to_string()).collect();
    // A broken client fails by not doing something; the wait for it is this bound, not a
    // measurement.
    config.timeout = Duration::from_secs(3);
    config
}

async fn check(config: &Config) -> Report {
    run(config, |_| {}).await.expect("the run starts")
}

fn describe(report: &Report) -> String {
    let mut out = tcpchat_check_client::report::text::failures(report);
    out.push_str(&tcpchat_check_client::report::text::summary(report));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_python_client_passes_every_case() {
    let report = check(&config("good.py", &[])).await;
    assert!(report.success(), "{}", describe(&report));
    assert_eq!(report.passed(), tcpchat_check_client::CASES.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_python_client_passes_on_a_pty_too() {
    let mut config = config("good.py", &[]);
    config.terminal = Terminal::Pty;
    let report = check(&config).await;
    assert!(report.success(), "{}", describe(&report));
}

/// Runs `client` on `cases` and requires each of them to fail with `hint` in its failure.
async fn fails(client: &str, cases: &[&str], hint: &str) {
    let report = check(&config(client, cases)).await;
    for case in &report.cases {
        match &case.outcome {
            Outcome::Fail(f) => assert!(
                f.hint.as_deref().is_some_and(|h| h.contains(hint)),
                "{client}: {} failed without the hint {hint:?}:\n{}",
                case.case.name,
                describe(&report)
            ),
            other => panic!(
                "{client}: {} should fail, got {other:?}\n{}",
                case.case.name,
                describe(&report)
            ),
        }
    }
    assert_eq!(report.cases.len(), cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_recv_taken_as_one_line_is_found() {
    fails(
        "one_recv_one_line.py",
        &["byte-by-byte", "coalesced"],
        "recv()",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_lost_while_waiting_for_send_ok_is_found() {
    fails(
        "waits_for_send_ok.py",
        &["delivery-before-send-ok"],
        "also while you wait for SEND-OK",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_buffer_too_small_for_list_ok_is_found() {
    fails("small_buffer.py", &["long-list"], "fixed buffer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collapsed_spaces_are_found() {
    fails("collapses_spaces.py", &["send"], "byte for byte").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_on_an_unknown_line_is_found() {
    fails("crashes_on_unknown.py", &["unknown-line"], "crashed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_ignores_the_close_is_found() {
    fails("ignores_close.py", &["server-closes"], "recv()").await;
}

/// Each broken client passes everything else: one defect, one kind of failure. A check
/// that failed a client for the wrong reason would show here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_defect_fails_only_its_own_cases() {
    let cases = [
        "login",
        "name-in-use",
        "busy",
        "who",
        "delivery",
        "unknown-user",
        "quit",
    ];
    for client in [
        "waits_for_send_ok.py",
        "small_buffer.py",
        "collapses_spaces.py",
        "crashes_on_unknown.py",
        "ignores_close.py",
    ] {
        let report = check(&config(client, &cases)).await;
        assert!(report.success(), "{client}:\n{}", describe(&report));
    }
}

/// The end of a case kills the program's whole process group: a grandchild it started
/// (here a `sleep` behind a shell) is gone too, and nothing is left unreaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_program_and_its_children_are_killed_after_each_case() {
    let dir = std::env::temp_dir().join(format!("checkclient-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pidfile = dir.join("sleep.pid");
    let shell = format!(
        "sleep 1000 & echo $! > {}; exec {} {} \"$0\" \"$1\"",
        pidfile.display(),
        python(),
        script("good.py")
    );
    let mut config = Config::new(vec![
        "sh".into(),
        "-c".into(),
        shell,
        "{host}".into(),
        "{port}".into(),
    ]);
    config.only = vec!["login".into()];
    let report = check(&config).await;
    assert!(report.success(), "{}", describe(&report));
    let pid = std::fs::read_to_string(&pidfile).expect("the shell wrote the sleep's pid");
    let pid = pid.trim();
    // The sleep was killed with its group; once its parent is gone it is reaped by init, so
    // its /proc entry disappears (a zombie would still have one, in state Z).
    let gone = (0..200).any(|_| {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "));
        if alive {
            std::thread::sleep(Duration::from_millis(10));
        }
        !alive
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert!(gone, "the grandchild {pid} outlived its case");
}

#[tokio::test]
async fn a_command_without_a_port_is_refused() {
    let config = Config::new(vec!["python3".into(), "client.py".into()]);
    let err = run(&config, |_| {}).await.expect_err("no {port}");
    assert!(err.to_string().contains("{port}"), "{err}");
}

/// `--generation old`: the scripted server speaks `WHO` / `WHO-OK` / `UNKNOWN`. A client of
/// that generation passes every case; a current one fails `who` (it sends `LIST`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_generation_is_checked_in_its_own_words() {
    let mut old = config("old_generation.py", &[]);
    old.generation = tcpchat_proto::Generation::Old;
    let report = check(&old).await;
    assert!(report.success(), "{}", describe(&report));
    let mut current = config("good.py", &["who"]);
    current.generation = tcpchat_proto::Generation::Old;
    let report = check(&current).await;
    assert_eq!(report.failed_names(), ["who"], "{}", describe(&report));
}
