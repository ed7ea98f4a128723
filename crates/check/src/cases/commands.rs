//! Which commands are allowed when: before login, after login, spelled differently.

use tcpchat_proto::{Command, Reply, Request};

use super::{CaseResult, Ctx, Done};
use crate::client::{reply_line, request_line};

/// `line` with its command word (everything before the first space) rewritten by `recase`.
fn recased(line: &[u8], recase: fn(&str) -> String) -> Vec<u8> {
    let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let word = String::from_utf8_lossy(&line[..end]);
    let mut out = recase(&word).into_bytes();
    out.extend_from_slice(&line[end..]);
    out
}

/// `HELLO-FROM` as `Hello-From`: each part after a `-` capitalised, the rest in lower case.
fn title_case(word: &str) -> String {
    word.split('-')
        .map(|part| {
            let lower = part.to_ascii_lowercase();
            let mut chars = lower.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

pub(super) async fn before_login(cx: &mut Ctx) -> CaseResult {
    let mut watcher = cx.login().await?;
    let mut c = cx.connect().await?;
    let send = request_line(&Request::Send {
        to: watcher.name().clone(),
        body: "sent before login",
    });
    let lines: [(&[u8], &str); 4] = [
        (
            &request_line(&cx.generation.list_request()),
            "LIST before login",
        ),
        (&send, "SEND before login"),
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
    let hello = request_line(&Request::HelloFrom(cx.fresh_name()));
    c.send_line(&recased(&hello, str::to_ascii_lowercase))
        .await?;
    c.expect("log in with hello-from in lower case", &Reply::BadRqstHdr)
        .await?;
    c.send_line(&recased(&hello, title_case)).await?;
    c.expect("log in with Hello-From in mixed case", &Reply::BadRqstHdr)
        .await?;
    cx.log_in(&mut c).await?;
    c.send_line(&recased(
        &request_line(&cx.generation.list_request()),
        str::to_ascii_lowercase,
    ))
    .await?;
    c.expect("send list in lower case", &Reply::BadRqstHdr)
        .await?;
    let send = |body| {
        request_line(&Request::Send {
            to: watcher.name().clone(),
            body,
        })
    };
    c.send_line(&recased(&send("lower-case send"), str::to_ascii_lowercase))
        .await?;
    c.expect("send send in lower case", &Reply::BadRqstHdr)
        .await?;
    c.send_line(&recased(&send("mixed-case send"), title_case))
        .await?;
    c.expect("send Send in mixed case", &Reply::BadRqstHdr)
        .await?;
    cx.expect_nothing_delivered(&mut watcher, &mut c, "the lower-case sends")
        .await?;
    Ok(Done::Passed)
}

pub(super) async fn unknown_command(cx: &mut Ctx) -> CaseResult {
    let mut a = cx.login().await?;
    // Two that only start like a command (`LISTS`, and a reply word that starts with `SEND`):
    // the command is the whole first word.
    let lists = format!("{}S", Command::List.as_str());
    let send_ok = reply_line(&Reply::SendOk);
    for line in [&b"NAMES"[..], b"QUIT now", lists.as_bytes(), &send_ok] {
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
    a.send(&Request::HelloFrom(second.clone())).await?;
    a.expect("log in again with another name", &Reply::BadRqstHdr)
        .await?;
    a.send(&Request::HelloFrom(first.clone())).await?;
    a.expect("log in again with the same name", &Reply::BadRqstHdr)
        .await?;
    // The second name must not have been taken by A: another client can have it.
    let mut b = cx.connect().await?;
    b.send(&Request::HelloFrom(second.clone())).await?;
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
