//! Proof that the checker can fail: a reference server that follows every rule passes, and
//! the same server with one planted defect fails, flagged by the case for that rule.
//! See: #5 (item 4).

mod support;

use std::time::Duration;

use support::Defect;
use tcpchat_check::{Config, Outcome, Report};

/// The reference server's client limit in these runs: above `many-clients`' 64, so every case
/// runs, `busy` included.
const CAPACITY: usize = 80;

/// Bounds waiting for something that never comes (only a few defects make the checker wait
/// this long). Loopback replies take microseconds, but CI runs many test processes at once on
/// two cores, so this leaves room before a slow correct reply would count as none.
const TIMEOUT: Duration = Duration::from_secs(5);

async fn check(defect: Defect) -> Report {
    let server = support::start(defect, CAPACITY).await;
    let mut config = Config::new(server.addr.to_string());
    config.capacity = Some(CAPACITY);
    config.timeout = TIMEOUT;
    tcpchat_check::run(&config, |_| {})
        .await
        .expect("the reference server is reachable")
}

/// Every failure with its step, expected and got, for assertion messages.
fn failures(report: &Report) -> String {
    tcpchat_check::report::text::failures(report)
}

/// Runs the checker against `defect` and requires each case in `must` to fail, and no case
/// outside `must` and `may` to fail (a defect that breaks a rule every later case relies on,
/// such as the `LIST-OK` format, may fail those too).
async fn flags(defect: Defect, must: &[&str], may: &[&str]) {
    let report = check(defect).await;
    let failed = report.failed_names();
    for name in must {
        assert!(
            failed.contains(name),
            "{defect:?}: expected case {name} to fail; failed: {failed:?}\n{}",
            failures(&report)
        );
    }
    for name in &failed {
        assert!(
            must.contains(name) || may.contains(name),
            "{defect:?}: case {name} failed but that defect should not affect it\n{}",
            failures(&report)
        );
    }
    assert!(!report.success(), "{defect:?}: the run must not succeed");
    for case in &report.cases {
        if let Outcome::Fail(f) = &case.outcome {
            assert!(
                !f.expected.is_empty() && !f.got.is_empty() && !f.transcript.is_empty(),
                "{defect:?}: {} fails without saying what it expected, got and sent: {f:?}",
                case.case.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_server_passes_every_case() {
    let report = check(Defect::None).await;
    assert!(
        report.success(),
        "failed: {:?}\n{}",
        report.failed_names(),
        failures(&report)
    );
    assert_eq!(report.skipped(), 0, "with --capacity every case runs");
    assert_eq!(report.passed(), tcpchat_check::CASES.len());
}

/// Every case that reads a `LIST-OK` and may see the defect there.
const LISTING: &[&str] = &[
    "name-in-use",
    "unknown-command",
    "empty-line",
    "second-hello",
    "list",
    "crlf",
    "pipelining",
    "byte-by-byte",
    "overlong-line",
    "name-freed",
    "name-freed-reset",
    "many-clients",
];

macro_rules! defect_tests {
    ($($test:ident: $defect:ident => [$($must:literal),*] $(+ $may:expr)?;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let may: &[&str] = [$($may)?].into_iter().next().unwrap_or(&[]);
                flags(Defect::$defect, &[$($must),*], may).await;
            }
        )*
    };
}

defect_tests! {
    keeps_cr: KeepsCr => ["crlf"];
    spaces_in_list: SpacesInList => ["list"] + LISTING;
    list_without_asker: ListWithoutAsker => ["list"] + LISTING;
    rejects_sending_to_yourself: RejectsSelfSend => ["send-self"];
    case_insensitive_commands: CaseInsensitive => ["case-sensitive"];
    name_kept_after_disconnect: KeepsNameAfterDisconnect => ["name-freed", "name-freed-reset"];
    no_busy: NoBusy => ["busy"];
    trims_message: TrimsMessage => ["send-spaces"];
    relays_invalid_utf8: RelaysInvalidUtf8 => ["send-not-utf8"];
    accepts_comma_in_name: AcceptsCommaInName => ["name-comma"];
    no_name_length_limit: NoNameLengthLimit => ["name-too-long"];
    first_word_is_name: FirstWordIsName => ["name-whitespace"];
    list_before_login: ListBeforeLogin => ["before-login"];
    ignores_empty_line: IgnoresEmptyLine => ["empty-line", "before-login"];
    second_hello_renames: SecondHelloRenames => ["second-hello"];
    line_per_read: LinePerRead => ["byte-by-byte"] + LINE_PER_READ_ALSO;
    no_line_limit: NoLineLimit => ["overlong-line"];
    blocks_on_slow_reader: BlocksOnSlowReader => ["slow-reader"];
    unbounded_queue: UnboundedQueue => ["slow-reader"];
    send_ok_to_unknown_user: SendOkToUnknownUser => [
        "send-unknown-user", "pipelining", "name-freed", "name-freed-reset"
    ];
    relays_empty_message: RelaysEmptyMessage => ["send-empty-message"];
    missing_user_is_header_error: MissingUserIsHeaderError => ["send-missing-user"];
    closes_on_in_use: ClosesOnInUse => ["name-in-use"];
    accepts_empty_name: AcceptsEmptyName => ["name-empty"];
    accepts_control_in_name: AcceptsControlInName => ["name-control"];
    accepts_invalid_utf8_name: AcceptsInvalidUtf8Name => ["name-not-utf8"];
    prefix_commands: PrefixCommands => ["unknown-command"];
    latin1_messages: Latin1Messages => ["send-unicode", "send-not-utf8"];
    client_limit_40: ClientLimit40 => ["many-clients"];
    closes_on_bad_name: ClosesOnBadName => [
        "name-empty", "name-whitespace", "name-comma", "name-control", "name-too-long",
        "name-not-utf8"
    ];
}

/// A server without line buffering breaks wherever a line can straddle two reads: big writes.
const LINE_PER_READ_ALSO: &[&str] = &[
    "overlong-line",
    "slow-reader",
    "message-order",
    "many-clients",
    "pipelining",
];
