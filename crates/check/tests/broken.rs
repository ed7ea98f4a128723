//! Proof that the checker can fail: a reference server that follows every rule passes, and
//! the same server with one planted defect fails, flagged by the case for that rule.
//! See: #5 (item 4), #11 (point 5).

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
    check_only(defect, &[], tcpchat_check::DEFAULT_FLOOD_LIMIT_BYTES).await
}

async fn check_only(defect: Defect, only: &[&str], flood_limit: usize) -> Report {
    let server = support::start(defect, CAPACITY).await;
    let mut config = Config::new(server.addr.to_string());
    config.capacity = Some(CAPACITY);
    config.timeout = TIMEOUT;
    config.only = only.iter().map(|s| s.to_string()).collect();
    config.flood_limit = flood_limit;
    tcpchat_check::run(&config, |_| {})
        .await
        .expect("the reference server is reachable")
}

/// A server whose queue for a reader that reads nothing is bounded above what the probe
/// pushes (here: not bounded at all) is not failed: the protocol bounds the queue, not
/// where. `slow-reader` says how far it went; the run still succeeds. See: #16
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_bound_above_the_probe_is_inconclusive_not_a_failure() {
    let limit = 4 * 1024 * 1024;
    let report = check_only(Defect::UnboundedQueue, &["slow-reader"], limit).await;
    let case = &report.cases[0];
    match &case.outcome {
        Outcome::Inconclusive(why) => {
            assert!(why.contains("4.0 MiB pushed"), "{why}");
            assert!(why.contains("--flood-limit"), "{why}");
        }
        other => panic!("slow-reader: expected inconclusive, got {other:?}"),
    }
    assert!(report.success(), "an inconclusive case fails no run");
    // The same probe against the reference server, which bounds its queue: a pass, with
    // the point where the reader was dropped.
    let report = check_only(Defect::None, &["slow-reader"], limit).await;
    assert!(
        matches!(report.cases[0].outcome, Outcome::Pass),
        "{}",
        failures(&report)
    );
    let found = report.cases[0].finding.as_deref().unwrap_or_default();
    assert!(found.contains("was dropped"), "{found}");
}

/// The longest name is the server's choice: it is found and reported, and a server is
/// failed only when a name as long as a whole line is accepted. See: #16
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_name_bound_is_found_and_reported() {
    let report = check_only(Defect::None, &["name-too-long"], 0).await;
    assert!(
        matches!(report.cases[0].outcome, Outcome::Pass),
        "{}",
        failures(&report)
    );
    let found = report.cases[0].finding.as_deref().unwrap_or_default();
    let max = tcpchat_proto::MAX_NAME_BYTES;
    assert!(
        found.starts_with(&format!(
            "names up to {max} bytes are accepted; {} bytes get",
            max + 1
        )),
        "{found}"
    );
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

/// Every case that reads a `LIST-OK` naming two or more users, so a space after a comma
/// breaks it (a `LIST-OK` of one name has no comma).
const LISTS_SEVERAL: &[&str] = &[
    "name-in-use",
    "second-hello",
    "list",
    "crlf",
    "pipelining",
    "byte-by-byte",
    "overlong-line",
    "name-freed",
    "name-freed-reset",
    "many-clients",
    "ext-history-offline",
];

/// Every case that requires the asker in its `LIST-OK` (`overlong-line` takes one whoever
/// it names).
const LISTS_ASKER: &[&str] = &[
    "name-in-use",
    "unknown-command",
    "empty-line",
    "second-hello",
    "list",
    "crlf",
    "pipelining",
    "byte-by-byte",
    "name-freed",
    "name-freed-reset",
    "many-clients",
];

/// A server without line buffering breaks wherever a line can straddle two reads: big
/// writes, split wherever the kernel happens to split them.
const LINE_PER_READ_ALSO: &[&str] = &[
    "overlong-line",
    "slow-reader",
    "message-order",
    "many-clients",
    "pipelining",
];

/// One planted defect and what it must do to the run.
struct Planted {
    test: &'static str,
    /// Cases that fail on every run: the rule the defect breaks.
    must: &'static [&'static str],
    /// Cases that may fail too (a rule every later case leans on, such as the `LIST-OK`
    /// format, or bytes the kernel happens to split); every other case must pass.
    may: &'static [&'static str],
}

/// Cases no defect can fail alone, and why; each still has a defect in whose `must` it is.
const SHARED: &[(&str, &str)] = &[
    (
        "list",
        "every case that reads a LIST-OK sees a defect in its format or its names",
    ),
    (
        "send-unknown-user",
        "pipelining sends to a name no one uses too, and name-freed to one that left",
    ),
];

macro_rules! planted {
    (@may) => { &[] };
    (@may $may:expr) => { $may };
    ($($test:ident: $defect:ident => $must:expr $(, $may:expr)?;)*) => {
        /// Every planted defect, for the test that each case has one.
        const PLANTED: &[Planted] = &[$(Planted {
            test: stringify!($test),
            must: $must,
            may: planted!(@may $($may)?),
        }),*];
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                flags(Defect::$defect, $must, planted!(@may $($may)?)).await;
            }
        )*
    };
}

planted! {
    names_ignore_case: NamesIgnoreCase => &["login"];
    closes_on_in_use: ClosesOnInUse => &["name-in-use"];
    accepts_empty_name: AcceptsEmptyName => &["name-empty"];
    first_word_is_name: FirstWordIsName => &["name-whitespace"];
    accepts_comma_in_name: AcceptsCommaInName => &["name-comma"];
    accepts_control_in_name: AcceptsControlInName => &["name-control"];
    no_name_length_limit: NoNameLengthLimit => &["name-too-long"];
    accepts_invalid_utf8_name: AcceptsInvalidUtf8Name => &["name-not-utf8"];
    closes_on_bad_name: ClosesOnBadName => &[
        "name-empty", "name-whitespace", "name-comma", "name-control", "name-too-long",
        "name-not-utf8"
    ];
    list_before_login: ListBeforeLogin => &["before-login"];
    case_insensitive_commands: CaseInsensitive => &["case-sensitive"];
    prefix_commands: PrefixCommands => &["unknown-command"];
    ignores_empty_line: IgnoresEmptyLine => &["empty-line"];
    second_hello_renames: SecondHelloRenames => &["second-hello"];
    spaces_in_list: SpacesInList => LISTS_SEVERAL;
    list_without_asker: ListWithoutAsker => LISTS_ASKER;
    recipient_by_prefix: RecipientByPrefix => &["send"];
    trims_message: TrimsMessage => &["send-spaces"];
    drops_non_bmp: DropsNonBmp => &["send-unicode"];
    latin1_messages: Latin1Messages => &["send-unicode", "send-not-utf8"];
    rejects_sending_to_yourself: RejectsSelfSend => &["send-self"];
    send_ok_to_unknown_user: SendOkToUnknownUser => &[
        "send-unknown-user", "pipelining", "name-freed", "name-freed-reset"
    ], &["ext-history-offline"];
    missing_user_is_header_error: MissingUserIsHeaderError => &["send-missing-user"];
    relays_empty_message: RelaysEmptyMessage => &["send-empty-message"];
    relays_invalid_utf8: RelaysInvalidUtf8 => &["send-not-utf8"];
    keeps_cr: KeepsCr => &["crlf"];
    drops_rest_after_login: DropsRestAfterLogin => &["pipelining"], &["byte-by-byte", "ext-presence"];
    line_per_read: LinePerRead => &["byte-by-byte"], LINE_PER_READ_ALSO;
    sorts_burst: SortsBurst => &["message-order"];
    no_line_limit: NoLineLimit => &["overlong-line"];
    name_kept_after_eof: KeepsNameAfterEof => &["name-freed"], &[
        "ext-presence", "ext-history-offline", "accounts-registered-name"
    ];
    name_kept_after_reset: KeepsNameAfterReset => &["name-freed-reset"], &["ext-history-offline"];
    client_limit_40: ClientLimit40 => &["many-clients"];
    blocks_on_slow_reader: BlocksOnSlowReader => &["slow-reader"];
    no_busy: NoBusy => &["busy"];
    echoes_unknown_extensions: EchoesUnknownExtensions => &["ext-negotiation"];
    pong_without_token: PongWithoutToken => &["ext-keepalive"];
    presence_list_without_self: PresenceListWithoutSelf => &["ext-presence"];
    no_takeover: NoTakeover => &["accounts-register"];
    accepts_any_password: AcceptsAnyPassword => &["accounts-wrong-password"], &["accounts-throttle"];
    registered_name_free_for_classic: RegisteredNameFreeForClassic => &["accounts-registered-name"];
    in_use_for_accounts: InUseForAccounts => &["accounts-registered-name"];
    never_throttles: NeverThrottles => &["accounts-throttle"];
    // ext-history reads the sender's own SAID-AT lines too.
    no_room_echo: NoRoomEcho => &["ext-rooms"], &["ext-history"];
    history_newest_first: HistoryNewestFirst => &["ext-history"];
    resume_ignored: ResumeIgnored => &["ext-history-offline"];
    queues_for_classic_sender: QueuesForClassicSender => &["ext-history-offline"];
}

/// Against a classic server the extension cases are skipped, each saying why, and nothing
/// fails. See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_server_skips_the_extension_cases_and_fails_none() {
    let report = check(Defect::Classic).await;
    assert!(
        report.success(),
        "failed: {:?}\n{}",
        report.failed_names(),
        failures(&report)
    );
    let mut skipped = Vec::new();
    for case in &report.cases {
        match &case.outcome {
            Outcome::Skip(why) => {
                assert!(why.contains("classic only"), "{}: {why}", case.case.name);
                skipped.push(case.case.name);
            }
            Outcome::Pass => {}
            other => panic!("{}: {other:?}", case.case.name),
        }
    }
    assert_eq!(
        skipped,
        [
            "ext-negotiation",
            "ext-keepalive",
            "ext-presence",
            "ext-rooms",
            "ext-history",
            "ext-history-offline",
            "accounts-register",
            "accounts-wrong-password",
            "accounts-registered-name",
            "accounts-throttle",
        ]
    );
}

/// A case that no defect can fail is a case that proves nothing: every registered case must
/// have a planted defect that fails it and no other case (or, for the few in [`SHARED`], one
/// that fails it among others). Adding a case without adding its defect fails here.
/// See: #11 (point 5).
#[test]
fn every_case_has_a_defect_only_it_catches() {
    let known = |name: &str| tcpchat_check::find(name).is_some();
    for p in PLANTED {
        for name in p.must.iter().chain(p.may) {
            assert!(known(name), "{}: {name:?} is not a case", p.test);
        }
        assert!(
            !p.must.is_empty(),
            "{}: a defect must fail some case",
            p.test
        );
    }
    let mut missing = Vec::new();
    for case in tcpchat_check::CASES {
        let name = case.name;
        let alone: Vec<_> = PLANTED
            .iter()
            .filter(|p| p.must == [name])
            .map(|p| p.test)
            .collect();
        let among = PLANTED.iter().any(|p| p.must.contains(&name));
        match SHARED.iter().find(|(shared, _)| *shared == name) {
            Some((_, why)) => {
                assert!(among, "{name} is shared ({why}) but no defect fails it");
                assert!(
                    alone.is_empty(),
                    "{name} is listed as shared, yet {alone:?} fail it alone: take it out of \
                     SHARED"
                );
            }
            None if alone.is_empty() => missing.push(name),
            None => {}
        }
    }
    assert!(
        missing.is_empty(),
        "no planted defect fails only these cases: {missing:?}; add one to tests/support \
         (or, if no defect can, say why in SHARED)"
    );
}
