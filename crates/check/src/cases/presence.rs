//! Who is online: `LIST`, and names freed when their connection ends.

use std::time::Duration;

use tcpchat_proto::{Reply, Request};
use tokio::time::Instant;

use super::{require_listed, CaseResult, Ctx, Done};
use crate::client::{seconds, Client};
use crate::failure::Failure;

/// Pause between two looks while waiting for the server to notice a disconnect. The server has
/// to see the FIN or RST before it can free the name, so the check polls for a while (up to
/// the reply timeout) instead of demanding it within one round trip.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

pub(super) async fn list(cx: &mut Ctx) -> CaseResult {
    let mut a = cx.login().await?;
    let b = cx.login().await?;
    let step = "list who is online";
    let names = cx.list(&mut a, step).await?;
    require_listed(&a, step, &names, &[a.name(), b.name()])?;
    Ok(Done::Passed)
}

pub(super) async fn name_freed(cx: &mut Ctx) -> CaseResult {
    freed_after(cx, |gone| async move { gone.close().await }).await
}

pub(super) async fn name_freed_reset(cx: &mut Ctx) -> CaseResult {
    freed_after(cx, |gone| async move { gone.abort() }).await
}

/// Logs a client in, ends its connection with `end`, and requires its name to leave `LIST`
/// and then be free for a new login.
async fn freed_after<F, Fut>(cx: &mut Ctx, end: F) -> CaseResult
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let gone = cx.login().await?;
    let name = gone.name().clone();
    let mut w = cx.login().await?;
    let step = "list who is online";
    let names = cx.list(&mut w, step).await?;
    require_listed(&w, step, &names, &[&name, w.name()])?;
    end(gone).await;

    let step = format!("wait for {name} to leave LIST after A disconnected");
    let deadline = Instant::now() + cx.timeout;
    loop {
        let names = cx.list(&mut w, &step).await?;
        if !names.contains(&name) {
            break;
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(
                format!("{}: {step}", w.label()),
                format!("a LIST-OK without {name}"),
                format!(
                    "{} (still listed {} after the disconnect)",
                    super::listed(&names),
                    seconds(cx.timeout)
                ),
            )
            .note("free the name in every way a connection can end: EOF, reset, error"));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }

    w.send(&Request::Send {
        to: name.clone(),
        body: "are you still there?",
    })
    .await?;
    w.expect(
        &format!("send to {name}, which left LIST"),
        &cx.generation.bad_dest(),
    )
    .await
    .map_err(|f| f.note("a name that left LIST is not logged in: SEND to it gets BAD-DEST-USER"))?;

    let mut c = cx.connect().await?;
    c.send(&Request::HelloFrom(name.clone())).await?;
    c.expect(
        &format!("log in as {name}, freed by the disconnect"),
        &Reply::Hello(name),
    )
    .await
    .map_err(|f| f.note("the name left LIST but cannot be used again"))?;
    Ok(Done::Passed)
}
