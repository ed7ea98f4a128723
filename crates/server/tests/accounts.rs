//! The `accounts` extension over real sockets, against the real SQLite store
//! (`docs/protocol.md`, "accounts"): register, log in, wrong password, the throttle, takeover
//! of an earlier session, locked accounts, the registered-name rule for classic and accounts
//! clients, and `NEEDS-TLS` for a plain non-loopback peer (in a network namespace, where the
//! peer address is not loopback).

use std::num::NonZeroUsize;
use std::time::Duration;

mod common;

use common::{Client, Server};
use tcpchat_accounts::SqliteStore;
use tcpchat_server::limits::LoginRate;
use tcpchat_server::{AccountSettings, Config, StoreHandle};

const PW: &str = "correct-horse";

struct Setup {
    server: Server,
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

fn settings(f: impl FnOnce(&mut AccountSettings)) -> AccountSettings {
    let mut s = AccountSettings {
        hash_threads: NonZeroUsize::MIN,
        ..AccountSettings::default()
    };
    f(&mut s);
    s
}

async fn start(accounts: AccountSettings) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("open store");
    let config = Config {
        accounts,
        account_store: Some(StoreHandle::new(store.clone())),
        ..Config::default()
    };
    Setup {
        server: Server::start(config).await,
        store,
        _dir: dir,
    }
}

/// A connection that negotiated `accounts`.
async fn accounts_client(server: &Server) -> Client {
    let mut c = server.connect().await;
    c.send("EXT accounts").await;
    c.expect("EXT-OK accounts").await;
    c
}

/// An accounts connection logged in as `name` with `HELLO-FROM`, the name then registered.
async fn registered(server: &Server, name: &str) -> Client {
    let mut c = accounts_client(server).await;
    c.send(&format!("HELLO-FROM {name}")).await;
    c.expect(&format!("HELLO {name}")).await;
    c.send(&format!("REGISTER {PW}")).await;
    c.expect("REGISTER-OK").await;
    c
}

#[tokio::test]
async fn register_then_the_name_needs_its_password() {
    let s = start(settings(|_| {})).await;
    let mut first = registered(&s.server, "alice").await;
    first.send(&format!("REGISTER {PW}")).await;
    first.expect("NAME-REGISTERED").await;
    assert!(s.store.get_blocking("alice").expect("get").is_some());

    // A classic client cannot tell it from a taken name.
    let mut classic = s.server.connect().await;
    classic.send("HELLO-FROM alice").await;
    classic.expect("IN-USE").await;
    // An accounts client is told why, and stays logging in.
    let mut other = accounts_client(&s.server).await;
    other.send("HELLO-FROM alice").await;
    other.expect("NAME-REGISTERED").await;
    other.send("LOGIN alice wrong-password").await;
    other.expect("BAD-PASSWORD").await;
    other.send("LOGIN nobody-here correct-horse").await;
    other.expect("NO-ACCOUNT").await;
    other.send("LOGIN alice short").await;
    other.expect("BAD-RQST-BODY").await;
    other.send(&format!("LOGIN alice {PW}")).await;
    other.expect("HELLO alice").await;
    // The earlier session was closed by the takeover.
    first.expect_closed().await;
    let mut bob = s.server.login("bob").await;
    bob.send("SEND alice hi").await;
    bob.expect("SEND-OK").await;
    other.expect("DELIVERY bob hi").await;
    // Without the extension, the lines are unknown.
    bob.send(&format!("REGISTER {PW}")).await;
    bob.expect("BAD-RQST-HDR").await;
}

#[tokio::test]
async fn a_takeover_closes_the_earlier_session_after_what_was_queued_for_it() {
    let s = start(settings(|_| {})).await;
    let mut first = registered(&s.server, "alice").await;
    let mut bob = s.server.login("bob").await;
    bob.send("SEND alice before").await;
    bob.expect("SEND-OK").await;
    // `first` reads nothing yet: the delivery waits in its queue when the takeover comes.
    let mut second = accounts_client(&s.server).await;
    second.send(&format!("LOGIN alice {PW}")).await;
    second.expect("HELLO alice").await;
    assert_eq!(first.lines_until_closed().await, ["DELIVERY bob before"]);
    bob.send("SEND alice after").await;
    bob.expect("SEND-OK").await;
    second.expect("DELIVERY bob after").await;
}

#[tokio::test]
async fn change_password_and_unregister() {
    let s = start(settings(|_| {})).await;
    let mut alice = registered(&s.server, "alice").await;
    alice.send("PASSWORD wrong-password battery-staple").await;
    alice.expect("BAD-PASSWORD").await;
    alice.send(&format!("PASSWORD {PW} battery-staple")).await;
    alice.expect("PASSWORD-OK").await;
    alice.send("PASSWORD a b").await;
    alice.expect("BAD-RQST-BODY").await;
    drop(alice);

    let mut again = accounts_client(&s.server).await;
    again.send(&format!("LOGIN alice {PW}")).await;
    again.expect("BAD-PASSWORD").await;
    again.send("LOGIN alice battery-staple").await;
    again.expect("HELLO alice").await;
    again.send(&format!("UNREGISTER {PW}")).await;
    again.expect("BAD-PASSWORD").await;
    again.send("UNREGISTER battery-staple").await;
    again.expect("UNREGISTER-OK").await;
    again.send("UNREGISTER battery-staple").await;
    again.expect("NO-ACCOUNT").await;
    assert!(s.store.get_blocking("alice").expect("get").is_none());
    drop(again);

    // Free once she left: anyone may take it with HELLO-FROM.
    let mut classic = s.server.connect().await;
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        classic.send("HELLO-FROM alice").await;
        match classic.next_text().await.as_deref() {
            Some("HELLO alice") => break,
            // Her connection's end may not have been handled yet.
            Some("IN-USE") if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("HELLO-FROM alice once her account is gone: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_locked_account_is_refused_and_still_protected() {
    let s = start(settings(|_| {})).await;
    drop(registered(&s.server, "alice").await);
    assert!(s.store.set_locked_blocking("alice", true).expect("lock"));
    let mut c = accounts_client(&s.server).await;
    c.send(&format!("LOGIN alice {PW}")).await;
    c.expect("LOCKED").await;
    let mut classic = s.server.connect().await;
    classic.send("HELLO-FROM alice").await;
    classic.expect("IN-USE").await;
    assert!(s.store.set_locked_blocking("alice", false).expect("unlock"));
    c.send(&format!("LOGIN alice {PW}")).await;
    c.expect("HELLO alice").await;
}

#[tokio::test]
async fn wrong_passwords_are_throttled_per_name_then_per_address() {
    let s = start(settings(|a| {
        a.per_address = LoginRate::new(6, Duration::from_secs(3600)).expect("burst");
        a.per_name = LoginRate::new(2, Duration::from_secs(3600)).expect("burst");
    }))
    .await;
    drop(registered(&s.server, "alice").await);
    drop(registered(&s.server, "carol").await);
    let mut c = accounts_client(&s.server).await;
    for _ in 0..2 {
        c.send("LOGIN alice wrong-password").await;
        c.expect("BAD-PASSWORD").await;
    }
    // alice's budget is spent: even the right password waits, and nothing is hashed.
    c.send(&format!("LOGIN alice {PW}")).await;
    let reply = c.next_text().await.expect("a reply");
    let secs: u32 = reply
        .strip_prefix("THROTTLED ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("expected THROTTLED <s>, got {reply:?}"));
    assert!((3500..=3600).contains(&secs), "{secs}");
    // Another name is still fine from this address, until the address's 6 checks are
    // spent (the 2 registrations, 2 wrong for alice, these 2 for carol; the refused one
    // cost nothing).
    c.send("LOGIN carol wrong-password").await;
    c.expect("BAD-PASSWORD").await;
    c.send(&format!("LOGIN carol {PW}")).await;
    c.expect("HELLO carol").await;
    let mut d = accounts_client(&s.server).await;
    d.send(&format!("LOGIN carol {PW}")).await;
    let reply = d.next_text().await.expect("a reply");
    assert!(reply.starts_with("THROTTLED "), "{reply}");
}

#[tokio::test]
async fn a_full_hashing_queue_is_throttled_and_chat_goes_on() {
    let s = start(settings(|a| {
        a.hash_queue = 1;
        a.per_address = LoginRate::new(1_000, Duration::from_secs(1)).expect("burst");
    }))
    .await;
    drop(registered(&s.server, "alice").await);
    let mut bob = s.server.login("bob").await;
    let mut carol = s.server.login("carol").await;
    // 32 logins at once on one hashing thread with room for one more: at most two are
    // taken while the first hash runs (tens of milliseconds), the rest refused at once.
    let mut clients = Vec::new();
    for _ in 0..32 {
        clients.push(accounts_client(&s.server).await);
    }
    for c in &mut clients {
        c.send(&format!("LOGIN alice {PW}")).await;
    }
    bob.send("SEND carol meanwhile").await;
    bob.expect("SEND-OK").await;
    carol.expect("DELIVERY bob meanwhile").await;
    let mut throttled = 0;
    for c in &mut clients {
        let reply = c.next_text().await.expect("a reply");
        if reply == "THROTTLED 1" {
            throttled += 1;
        } else {
            assert_eq!(reply, "HELLO alice");
        }
    }
    assert!(throttled > 0, "a full queue refuses at once");
}

#[tokio::test]
async fn without_a_store_accounts_is_not_offered() {
    let server = Server::start(Config::default()).await;
    let mut c = server.connect().await;
    c.send("EXT accounts").await;
    // Not among what is offered: `EXT-OK` without it, or, when nothing else is offered
    // either, `EXT` itself is unknown (a classic server).
    let reply = c.next_text().await.expect("a reply");
    assert!(reply == "EXT-OK" || reply == "BAD-RQST-HDR", "{reply}");
    c.send(&format!("LOGIN alice {PW}")).await;
    c.expect("BAD-RQST-HDR").await;
}

/// This test's name and its role variable, to re-run it inside a network namespace.
const NEEDS_TLS_TEST: &str = "a_plain_password_from_a_non_loopback_address_needs_tls";
const ROLE_ENV: &str = "TCPCHAT_ACCOUNTS_NETNS";
const OWN_IP: &str = "10.201.0.1";

/// Inside a fresh network namespace with a veth interface, a connection to the interface's
/// address comes from that (non-loopback) address: exactly what a remote client looks like
/// to the server.
#[test]
fn a_plain_password_from_a_non_loopback_address_needs_tls() {
    if std::env::var(ROLE_ENV).is_ok() {
        return inside_namespace();
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "--"])
        .arg(exe)
        .args([NEEDS_TLS_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run unshare (util-linux) for a network namespace: {e}"));
    assert!(
        out.status.success(),
        "inside the namespace ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn inside_namespace() {
    for args in [
        &["link", "set", "lo", "up"][..],
        &[
            "link", "add", "tcacc0", "type", "veth", "peer", "name", "tcacc1",
        ],
        &["addr", "add", "10.201.0.1/24", "dev", "tcacc0"],
        &["link", "set", "tcacc0", "up"],
        &["link", "set", "tcacc1", "up"],
    ] {
        let status = std::process::Command::new("ip")
            .args(args)
            .status()
            .expect("run ip (iproute2)");
        assert!(status.success(), "ip {args:?}");
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        for allow in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = SqliteStore::open(dir.path()).expect("store");
            let listener = tokio::net::TcpListener::bind((OWN_IP, 0))
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let config = Config {
                accounts: settings(|a| a.allow_plain_passwords = allow),
                account_store: Some(StoreHandle::new(store)),
                ..Config::default()
            };
            tokio::spawn(tcpchat_server::run(
                listener,
                config,
                std::future::pending(),
            ));
            let mut c = Client::connect(addr).await;
            c.send("EXT accounts").await;
            c.expect("EXT-OK accounts").await;
            c.send("HELLO-FROM alice").await;
            c.expect("HELLO alice").await;
            c.send(&format!("REGISTER {PW}")).await;
            c.expect(if allow { "REGISTER-OK" } else { "NEEDS-TLS" })
                .await;
            c.send("LOGIN x y").await;
            c.expect("BAD-RQST-HDR").await;
        }
    });
}
