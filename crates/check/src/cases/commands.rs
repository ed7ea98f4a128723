//! Which commands are allowed when: before login, after login, spelled differently.

use tcpchat_proto::Reply;

use super::{CaseResult, Ctx, Done};

pub(super) async fn before_login(cx: &mut Ctx) -> CaseResult {
    let mut watcher = cx.login().await?;
    let mut c = cx.connect().await?;
    let send = format!("SEND {} sent before login", watcher.name());
    let lines: [(&[u8], &str); 4] = [
        (b"LIST", "LIST before login"),
        (send.as_bytes(), "SEND before login"),
        (b"", "an empty line before login"),
        (b"WHAT-IS-THIS", "an unknown command before login"),
    ];
    for (line, what) in lines {
        c.send_line(line).await?;
        c.expect(&format!("send {what}"), &Reply::BadRqstHdr)
            .await?;
    }
    cx.log_in(&mut c)
        .await
        .map_err(|f| f.note("after BAD-RQST-HDR the client may still log in"))?;
    cx.expect_nothing_delivered(&mut watcher, &mut c, "the SEND before login")
        .await?;
    Ok(Done::Passed)
}

pub(super) async fn case_sensitive(cx: &mut Ctx) -> CaseResult {
    let mut watcher = cx.login().await?;
    let mut c = cx.connect().await?;
    let name = cx.fresh_name();
    c.send_line(format!("hello-from {name}").as_bytes()).await?;
    c.expect("log in with hello-from in lower case", &Reply::BadRqstHdr)
        .await?;
    c.send_line(format!("Hello-From {name}").as_bytes()).await?;
    c.expect("log in with Hello-From in mixed case", &Reply::BadRqstHdr)
        .await?;
    cx.log_in(&mut c).await?;
    c.send_line(b"list").await?;
    c.expect("send list in lower case", &Reply::BadRqstHdr)
        .await?;
    let to = watcher.name().clone();
    c.send_line(format!("send {to} lower-case send").as_bytes())
        .await?;
    c.expect("send send in lower case", &Reply::BadRqstHdr)
        .await?;
    c.send_line(format!("Send {to} mixed-case send").as_bytes())
        .await?;
    c.expect("send Send in mixed case", &Reply::BadRqstHdr)
        .await?;
    cx.expect_nothing_delivered(&mut watcher, &mut c, "the lower-case sends")
        .await?;
    Ok(Done::Passed)
}

pub(super) async fn unknown_command(cx: &mut Ctx) -> CaseResult {
    let mut a = cx.login().await?;
    for line in [&b"WHO"[..], b"QUIT now", b"LISTS", b"SEND-OK"] {
        a.send_line(line).await?;
        a.expect(
            &format!("send the unknown command {}", String::from_utf8_lossy(line)),
            &Reply::BadRqstHdr,
        )
        .await?;
    }
    let names = cx.list(&mut a, "LIST still works afterwards").await?;
    super::require_listed(&a, "LIST still works afterwards", &names, &[a.name()])?;
    Ok(Done::Passed)
}

pub(super) async fn empty_line(cx: &mut Ctx) -> CaseResult {
    let mut a = cx.login().await?;
    a.send_line(b"").await?;
    a.expect("send an empty line", &Reply::BadRqstHdr).await?;
    let names = cx.list(&mut a, "LIST still works afterwards").await?;
    super::require_listed(&a, "LIST still works afterwards", &names, &[a.name()])?;
    Ok(Done::Passed)
}

pub(super) async fn second_hello(cx: &mut Ctx) -> CaseResult {
    let mut a = cx.login().await?;
    let first = a.name().clone();
    let second = cx.fresh_name();
    a.send_line(format!("HELLO-FROM {second}").as_bytes())
        .await?;
    a.expect("log in again with another name", &Reply::BadRqstHdr)
        .await?;
    a.send_line(format!("HELLO-FROM {first}").as_bytes())
        .await?;
    a.expect("log in again with the same name", &Reply::BadRqstHdr)
        .await?;
    // The second name must not have been taken by A: another client can have it.
    let mut b = cx.connect().await?;
    b.send_line(format!("HELLO-FROM {second}").as_bytes())
        .await?;
    b.expect(
        &format!("log in as {second}, which A asked for after its login"),
        &Reply::Hello(second.clone()),
    )
    .await
    .map_err(|f| f.note("a rejected second HELLO-FROM must not register the name"))?;
    b.set_name(second);
    let names = cx.list(&mut b, "list who is online").await?;
    super::require_listed(&b, "list who is online", &names, &[&first, b.name()])?;
    Ok(Done::Passed)
}
