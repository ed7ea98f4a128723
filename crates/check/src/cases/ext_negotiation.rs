//! Extension negotiation (`docs/protocol.md`, "Extensions"), and the helper every extension
//! case starts with: a server that does not answer `EXT` with `EXT-OK` is a classic server, and
//! the extension cases are then skipped as "classic only", never failed.

use tcpchat_proto::{Extension, ExtensionSet, Reply, Request};

use super::{CaseResult, Ctx, Done};
use crate::client::{reply_line, Client, Got};
use crate::failure::quoted;

/// A name no server knows (the spec reserves none like it): it must be left out of the
/// answer, never refused.
const UNKNOWN_EXTENSION: &str = "tcpchat-check-unknown";

/// What a server answered to `EXT`.
pub(super) enum Answer {
    /// `EXT-OK` with these names, in its order.
    Extended(Vec<String>),
    /// `BAD-RQST-HDR`: a classic server. The reason to give for skipping.
    Classic(String),
}

/// Sends `EXT <asked>` on `client` (not logged in) and reads the answer. `BAD-RQST-HDR` is a
/// classic server's answer; anything else but a well-formed `EXT-OK` fails.
pub(super) async fn negotiate(
    client: &mut Client,
    asked: &[&str],
) -> Result<Answer, crate::failure::Failure> {
    client.send(&Request::Ext(asked.to_vec())).await?;
    let got = client.recv().await;
    if got.is(&Reply::BadRqstHdr) {
        return Ok(Answer::Classic(
            "classic only: the server answers EXT with BAD-RQST-HDR, so it offers no extension"
                .to_owned(),
        ));
    }
    let step = "negotiate extensions with EXT";
    if let Got::Line(line) = &got {
        if let Ok(Reply::ExtOk(names)) = Reply::parse(line) {
            return Ok(Answer::Extended(
                names.iter().map(|n| (*n).to_owned()).collect(),
            ));
        }
    }
    Err(client
        .mismatch(
            step,
            &format!(
                "{} (or {}: a classic server)",
                quoted(&reply_line(&Reply::ExtOk(asked.to_vec()))),
                quoted(&reply_line(&Reply::BadRqstHdr))
            ),
            &got,
        )
        .note("a server that does not speak extensions answers EXT as any unknown command"))
}

/// Opens a connection, negotiates `ext` and logs in. `Ok(Err(reason))` when the case has to
/// be skipped: the server is classic, or does not offer `ext`.
pub(super) async fn login_with(
    cx: &mut Ctx,
    ext: Extension,
) -> Result<Result<Client, String>, crate::failure::Failure> {
    let mut client = cx.connect().await?;
    match negotiate(&mut client, &[ext.name()]).await? {
        Answer::Classic(why) => return Ok(Err(why)),
        Answer::Extended(names) if !names.iter().any(|n| n == ext.name()) => {
            return Ok(Err(format!(
                "the server speaks extensions but does not offer {ext}"
            )));
        }
        Answer::Extended(_) => {}
    }
    cx.log_in(&mut client).await?;
    Ok(Ok(client))
}

pub(super) async fn ext_negotiation(cx: &mut Ctx) -> CaseResult {
    let mut a = cx.connect().await?;
    let asked = [
        UNKNOWN_EXTENSION,
        Extension::Presence.name(),
        Extension::Keepalive.name(),
        Extension::Presence.name(),
        Extension::Accounts.name(),
    ];
    let names = match negotiate(&mut a, &asked).await? {
        Answer::Classic(why) => return Ok(Done::Skipped(why)),
        Answer::Extended(names) => names,
    };
    let step = "negotiate extensions with EXT";
    let fail = |a: &Client, why: String| {
        crate::failure::Failure::new(
            format!("{}: {step}", a.label()),
            "EXT-OK naming a subset of what was asked, in the client's order, each once",
            quoted(&reply_line(&Reply::ExtOk(
                names.iter().map(String::as_str).collect(),
            ))),
        )
        .note(why)
    };
    if names.iter().any(|n| n == UNKNOWN_EXTENSION) {
        return Err(fail(
            &a,
            format!("{UNKNOWN_EXTENSION} is no extension: unknown names are left out"),
        ));
    }
    let mut seen = ExtensionSet::NONE;
    let mut last = 0;
    for name in &names {
        let Some(ext) = Extension::from_name(name) else {
            return Err(fail(&a, format!("{name} was not asked for")));
        };
        if seen.contains(ext) {
            return Err(fail(&a, format!("{name} is named twice")));
        }
        seen.insert(ext);
        // Where it first appears in the request: the answer keeps the client's order.
        let at = asked.iter().position(|n| n == name).unwrap_or_default();
        if at < last {
            return Err(fail(
                &a,
                "the answer is not in the client's order".to_owned(),
            ));
        }
        last = at;
    }
    // Once per connection: a second EXT is a command not allowed now.
    a.send(&Request::Ext(vec![Extension::Keepalive.name()]))
        .await?;
    a.expect(
        "send a second EXT on the same connection",
        &Reply::BadRqstHdr,
    )
    .await?;
    cx.log_in(&mut a).await?;
    // Only before login: on a logged-in connection it is not allowed either.
    let mut b = cx.login().await?;
    b.send(&Request::Ext(vec![Extension::Keepalive.name()]))
        .await?;
    b.expect("send EXT after logging in", &Reply::BadRqstHdr)
        .await?;
    Ok(Done::Passed)
}
