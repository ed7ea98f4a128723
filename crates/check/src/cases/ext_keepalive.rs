//! The `keepalive` extension: `PING` is answered `PONG` with the token echoed, before and
//! after login. (The server's own pings take a minute of silence; they are tested by the
//! server's tests with short settings, not here.)

use tcpchat_proto::{Extension, Reply, Request};

use super::ext_negotiation::{negotiate, Answer};
use super::{CaseResult, Ctx, Done};

pub(super) async fn ext_keepalive(cx: &mut Ctx) -> CaseResult {
    let mut a = cx.connect().await?;
    match negotiate(&mut a, &[Extension::Keepalive.name()]).await? {
        Answer::Classic(why) => return Ok(Done::Skipped(why)),
        Answer::Extended(names) if !names.iter().any(|n| n == Extension::Keepalive.name()) => {
            return Ok(Done::Skipped(
                "the server speaks extensions but does not offer keepalive".to_owned(),
            ));
        }
        Answer::Extended(_) => {}
    }
    let token = format!("{}before", cx.run_tag());
    a.send(&Request::Ping(Some(&token))).await?;
    a.expect("PING before logging in", &Reply::Pong(Some(&token)))
        .await?;
    cx.log_in(&mut a).await?;
    let token = format!("{}after~!", cx.run_tag());
    a.send(&Request::Ping(Some(&token))).await?;
    a.expect("PING after logging in", &Reply::Pong(Some(&token)))
        .await?;
    a.send(&Request::Ping(None)).await?;
    a.expect("PING without a token", &Reply::Pong(None)).await?;
    // A PONG is an answer: nothing comes back for it, so the next reply is the LIST's.
    a.send(&Request::Pong(Some(&token))).await?;
    cx.list(&mut a, "send PONG, then LIST: the PONG gets no reply")
        .await?;
    Ok(Done::Passed)
}
