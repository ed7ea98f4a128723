//! The `presence` extension: the first list after `HELLO`, then `ONLINE` / `OFFLINE` for
//! every login and departure, ordered with deliveries (`docs/protocol.md`, "presence").
//!
//! Other people may use the server while the case runs: presence lines about names this run
//! did not make are skipped, anything else is judged.

use tcpchat_proto::{Extension, Reply, Request, Username};

use super::ext_negotiation::login_with;
use super::{CaseResult, Ctx, Done};
use crate::client::{Client, Got};
use crate::failure::Failure;

/// The next line on `w` that is not a presence change about someone outside `ours`.
async fn next_about(w: &mut Client, ours: &[&Username]) -> Got {
    loop {
        let got = w.recv().await;
        let Got::Line(line) = &got else {
            return got;
        };
        let other = match Reply::parse(line) {
            Ok(Reply::Online(names)) => names.len() == 1 && !ours.contains(&&names[0]),
            Ok(Reply::Offline(name)) => !ours.contains(&&name),
            _ => false,
        };
        if !other {
            return got;
        }
    }
}

/// Requires the next line about `ours` to be `want`.
async fn expect_about(
    w: &mut Client,
    ours: &[&Username],
    step: &str,
    want: &Reply<'_>,
) -> Result<(), Failure> {
    let got = next_about(w, ours).await;
    if got.is(want) {
        return Ok(());
    }
    Err(w.mismatch(
        step,
        &crate::failure::quoted(&crate::client::reply_line(want)),
        &got,
    ))
}

pub(super) async fn ext_presence(cx: &mut Ctx) -> CaseResult {
    // A classic user, already online: the list must show it, and its departure later.
    let a = cx.login().await?;
    let mut w = match login_with(cx, Extension::Presence).await? {
        Ok(w) => w,
        Err(why) => return Ok(Done::Skipped(why)),
    };

    // The first list: ONLINE lines, then ONLINE-DONE.
    let step = "read the first presence list (ONLINE lines, then ONLINE-DONE)";
    let mut listed: Vec<Username> = Vec::new();
    loop {
        let got = w.recv().await;
        let parsed = match &got {
            Got::Line(line) => Reply::parse(line).ok(),
            _ => None,
        };
        match parsed {
            Some(Reply::OnlineDone) => break,
            Some(Reply::Online(names)) => listed.extend(names),
            _ => {
                return Err(w.mismatch(
                    step,
                    "ONLINE <name>,... or ONLINE-DONE, right after HELLO",
                    &got,
                ))
            }
        }
    }
    for who in [w.name(), a.name()] {
        let count = listed.iter().filter(|n| *n == who).count();
        if count != 1 {
            return Err(Failure::new(
                format!("{}: {step}", w.label()),
                format!("a first list naming {who} exactly once"),
                format!("{count} times among {} names", listed.len()),
            )
            .note("the first list names everyone online, the user itself included"));
        }
    }

    // A newcomer logs in and at once sends the watcher a message, in one write: its ONLINE
    // must come before its DELIVERY.
    let mut n = cx.connect().await?;
    let name = cx.fresh_name();
    let body = format!("hello from {name}");
    let mut lines = Request::HelloFrom(name.clone()).to_line();
    lines.extend(
        Request::Send {
            to: w.name().clone(),
            body: &body,
        }
        .to_line(),
    );
    n.send_raw(&lines).await?;
    n.expect("log in and send at once", &Reply::Hello(name.clone()))
        .await?;
    n.set_name(name.clone());
    n.expect("send to the watcher", &Reply::SendOk).await?;
    let ours = [w.name().clone(), a.name().clone(), name.clone()];
    let ours: Vec<&Username> = ours.iter().collect();
    expect_about(
        &mut w,
        &ours,
        "hear of the newcomer's login before its message",
        &Reply::Online(vec![name.clone()]),
    )
    .await?;
    expect_about(
        &mut w,
        &ours,
        "receive the newcomer's message",
        &Reply::Delivery {
            from: name.clone(),
            body: &body,
        },
    )
    .await?;

    // Departures, the classic user's included.
    n.close().await;
    expect_about(
        &mut w,
        &ours,
        "hear that the newcomer left",
        &Reply::Offline(name.clone()),
    )
    .await?;
    let a_name = a.name().clone();
    a.close().await;
    expect_about(
        &mut w,
        &ours,
        "hear that the classic user left",
        &Reply::Offline(a_name),
    )
    .await?;
    Ok(Done::Passed)
}
