//! The `accounts` extension (`docs/protocol.md`, "accounts"), when the server offers it.
//!
//! Each case negotiates `EXT accounts` first; a server that does not offer it (a classic
//! one, or one without an account store) skips them all: "classic only". Every case
//! registers a fresh name of its own, and all but `accounts-throttle` delete it again with
//! `UNREGISTER`; the throttle case cannot (its name is throttled by then), so it leaves one
//! account named like the run's other names, for the operator to remove.
//!
//! Password checks cost the checker's address part of its budget (20 at once, then one per
//! 3 s on tcpchat): the four cases together use 15, so two runs back to back within a minute
//! can see `THROTTLED`, which the report names as the server's limit.

use std::time::Duration;

use tcpchat_proto::{Password, Reply, Request, Username};
use tokio::time::Instant;

use super::{CaseResult, Ctx, Done};
use crate::client::{Client, Got};
use crate::failure::Failure;

/// The password every case registers with (the rules: 8 to 128 bytes, no space).
const PASSWORD: &str = "check-password-1";
/// A wrong one.
const WRONG: &str = "check-password-2";
/// Wrong passwords sent before a throttle must have answered: the protocol's defaults are 5
/// per name, then 20 per address; any server that throttles at all should within this many.
const THROTTLE_WITHIN: usize = 25;
/// Pause between looks while waiting for a name to be freed.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

fn password(s: &str) -> Password<'_> {
    Password::parse(s).expect("the checker's passwords follow the rules")
}

const SKIP: &str = "classic only: the server does not offer the accounts extension";

/// Opens a connection and negotiates `accounts`; `None` when the server does not offer it.
async fn accounts_client(cx: &mut Ctx) -> Result<Option<Client>, Failure> {
    let mut c = cx.connect().await?;
    c.send(&Request::Ext(vec!["accounts"])).await?;
    match c.recv().await {
        got if got.is(&Reply::ExtOk(vec!["accounts"])) => Ok(Some(c)),
        // A classic server (`BAD-RQST-HDR`), or one that offers other extensions only.
        Got::Line(_) => Ok(None),
        got => Err(c.mismatch(
            "negotiate the accounts extension",
            "EXT-OK accounts, EXT-OK without it, or BAD-RQST-HDR (a classic server)",
            &got,
        )),
    }
}

/// An accounts connection logged in with `HELLO-FROM` under a fresh name that it has just
/// registered; `None` when accounts are not offered.
async fn registered(cx: &mut Ctx) -> Result<Option<Client>, Failure> {
    let Some(mut c) = accounts_client(cx).await? else {
        return Ok(None);
    };
    cx.log_in(&mut c).await?;
    c.send(&Request::Register(password(PASSWORD))).await?;
    c.expect("register the name", &Reply::RegisterOk).await?;
    Ok(Some(c))
}

/// Logs `c` (an accounts connection) in to `name` with the right password.
async fn login(c: &mut Client, name: &Username, step: &str) -> Result<(), Failure> {
    c.send(&Request::Login {
        name: name.clone(),
        password: password(PASSWORD),
    })
    .await?;
    c.expect(step, &Reply::Hello(name.clone())).await?;
    c.set_name(name.clone());
    Ok(())
}

/// Deletes the account `c` is logged in to.
async fn unregister(c: &mut Client) -> Result<(), Failure> {
    c.send(&Request::Unregister(password(PASSWORD))).await?;
    c.expect("delete the account (clean up)", &Reply::UnregisterOk)
        .await
}

/// Register, log in again with the password (taking the name over from the first session),
/// unregister.
pub(super) async fn register(cx: &mut Ctx) -> CaseResult {
    let Some(mut owner) = registered(cx).await? else {
        return Ok(Done::Skipped(SKIP.into()));
    };
    let name = owner.name().clone();
    owner.send(&Request::Register(password(PASSWORD))).await?;
    owner
        .expect("register it again", &Reply::NameRegistered)
        .await?;
    let Some(mut again) = accounts_client(cx).await? else {
        return Err(Failure::new(
            "B: negotiate accounts",
            "EXT-OK accounts, as A got",
            "the server stopped offering accounts",
        ));
    };
    login(
        &mut again,
        &name,
        "log in with the password while A holds the name (A's session is taken over)",
    )
    .await?;
    owner
        .expect_closed("A's earlier session is closed by the new login")
        .await?;
    unregister(&mut again).await?;
    again.send(&Request::Unregister(password(PASSWORD))).await?;
    again
        .expect("delete it again: it is gone", &Reply::NoAccount)
        .await?;
    Ok(Done::Passed)
}

/// A wrong password is `BAD-PASSWORD` and logs nobody in; the right one still works after.
pub(super) async fn wrong_password(cx: &mut Ctx) -> CaseResult {
    let Some(owner) = registered(cx).await? else {
        return Ok(Done::Skipped(SKIP.into()));
    };
    let name = owner.name().clone();
    owner.close().await;
    let Some(mut c) = accounts_client(cx).await? else {
        return Ok(Done::Skipped(SKIP.into()));
    };
    c.send(&Request::Login {
        name: name.clone(),
        password: password(WRONG),
    })
    .await?;
    c.expect("log in with a wrong password", &Reply::BadPassword)
        .await?;
    login(&mut c, &name, "then with the right one").await?;
    unregister(&mut c).await?;
    Ok(Done::Passed)
}

/// A registered name, not online: `IN-USE` to a classic `HELLO-FROM`, `NAME-REGISTERED` to
/// an accounts one.
pub(super) async fn registered_name(cx: &mut Ctx) -> CaseResult {
    let Some(owner) = registered(cx).await? else {
        return Ok(Done::Skipped(SKIP.into()));
    };
    let name = owner.name().clone();
    owner.close().await;
    // Until the server has seen A leave, the name is simply taken: wait for it to leave LIST.
    let mut watcher = cx.login().await?;
    let step = format!("wait for {name} to leave LIST after A disconnected");
    let deadline = Instant::now() + cx.timeout;
    while cx.list(&mut watcher, &step).await?.contains(&name) {
        if Instant::now() >= deadline {
            return Err(Failure::new(
                format!("{}: {step}", watcher.label()),
                format!("a LIST-OK without {name}"),
                format!("{name} still listed after {:?}", cx.timeout),
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let mut classic = cx.connect().await?;
    classic.send(&Request::HelloFrom(name.clone())).await?;
    classic
        .expect(
            "a classic client asks for the registered name",
            &Reply::InUse,
        )
        .await
        .map_err(|f| f.note("a registered name is only used with its password: to a classic client it is IN-USE"))?;
    let Some(mut c) = accounts_client(cx).await? else {
        return Ok(Done::Skipped(SKIP.into()));
    };
    c.send(&Request::HelloFrom(name.clone())).await?;
    c.expect(
        "an accounts client asks for it with HELLO-FROM",
        &Reply::NameRegistered,
    )
    .await?;
    login(&mut c, &name, "then logs in with the password").await?;
    unregister(&mut c).await?;
    Ok(Done::Passed)
}

/// Wrong passwords for one name are throttled (`THROTTLED <seconds>`) well before they run
/// out.
pub(super) async fn throttle(cx: &mut Ctx) -> CaseResult {
    let Some(owner) = registered(cx).await? else {
        return Ok(Done::Skipped(SKIP.into()));
    };
    let name = owner.name().clone();
    owner.close().await;
    let Some(mut c) = accounts_client(cx).await? else {
        return Ok(Done::Skipped(SKIP.into()));
    };
    for _ in 0..THROTTLE_WITHIN {
        c.send(&Request::Login {
            name: name.clone(),
            password: password(WRONG),
        })
        .await?;
        let got = c.recv().await;
        if got.is(&Reply::BadPassword) {
            continue;
        }
        if let Got::Line(line) = &got {
            if matches!(Reply::parse(line), Ok(Reply::Throttled(s)) if s >= 1) {
                return Ok(Done::Passed);
            }
        }
        return Err(c.mismatch(
            "guess the password again",
            "BAD-PASSWORD, or THROTTLED <seconds> once too many were wrong",
            &got,
        ));
    }
    Err(Failure::new(
        format!("{}: guess the password {THROTTLE_WITHIN} times", c.label()),
        "THROTTLED <seconds> before the last guess",
        format!("BAD-PASSWORD {THROTTLE_WITHIN} times"),
    )
    .note("login attempts must be throttled per name and per address (docs/protocol.md, accounts)"))
}
