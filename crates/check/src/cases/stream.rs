//! The byte stream under the lines: `\r\n`, many lines per write, one byte per write,
//! ordering, and a line too long to hold.

use std::time::Duration;

use tcpchat_proto::{Reply, Request};

use super::{require_listed, CaseResult, Ctx, Done};
use crate::client::Got;
use crate::failure::Failure;

/// Pause between single-byte writes, so each byte is likely to be its own read on the server.
/// Pacing only: the case passes or fails the same however the bytes are grouped.
const BYTE_GAP: Duration = Duration::from_millis(2);

/// What to fix when a `\r\n` line goes wrong.
const CR_HINT: &str = "a line may end in \\r\\n: strip one \\r before the \\n, then parse the line";

/// Messages in the ordering case.
const ORDERED_MESSAGES: usize = 100;

/// Length of the overlong line's message: far past any sane line limit (the reference server's is
/// 4096 bytes), small enough to send quickly.
const OVERLONG_BYTES: usize = 1024 * 1024;

/// What to fix when an overlong line is silently dropped.
const SILENT_DROP_NOTE: &str =
    "the overlong line got no error reply: answer it with an error, or close the connection";
/// What to fix when an overlong line gets anything but an error or a close.
const OVERLONG_NOTE: &str = "a line over the server's limit is answered with an error and \
                             discarded, or the connection is closed";

// A relayed overlong line must look too long to the watcher, never like a line it could match.
const _: () = assert!(crate::client::MAX_REPLY_BYTES < OVERLONG_BYTES);

/// `line` (with its `\n`) with `\r` put before the `\n`.
fn with_cr(mut line: Vec<u8>) -> Vec<u8> {
    let at = line.len() - 1;
    line.insert(at, b'\r');
    line
}

pub(super) async fn crlf(cx: &mut Ctx) -> CaseResult {
    let mut a = cx.connect().await?;
    let name = cx.fresh_name();
    a.send_raw(&with_cr(Request::HelloFrom(name.clone()).to_line()))
        .await?;
    a.expect(
        "log in with a line ending in \\r\\n",
        &Reply::Hello(name.clone()),
    )
    .await
    .map_err(|f| f.note(CR_HINT))?;
    a.set_name(name);
    let mut b = cx.login().await?;

    a.send_raw(&with_cr(cx.generation.list_request().to_line()))
        .await?;
    let step = "send LIST ending in \\r\\n";
    let names = super::read_list(cx.generation, &mut a, step).await?;
    require_listed(&a, step, &names, &[a.name(), b.name()])?;

    let body = "carriage return?";
    a.send_raw(&with_cr(
        Request::Send {
            to: b.name().clone(),
            body,
        }
        .to_line(),
    ))
    .await?;
    a.expect("send SEND ending in \\r\\n", &Reply::SendOk)
        .await
        .map_err(|f| f.note(CR_HINT))?;
    b.expect(
        "receive the message without the \\r",
        &Reply::Delivery {
            from: a.name().clone(),
            body,
        },
    )
    .await?;
    Ok(Done::Passed)
}

pub(super) async fn pipelining(cx: &mut Ctx) -> CaseResult {
    let mut b = cx.login().await?;
    let mut a = cx.connect().await?;
    let name = cx.fresh_name();
    let nobody = cx.fresh_name();
    let to = b.name().clone();
    let mut burst = Vec::new();
    Request::HelloFrom(name.clone()).encode(&mut burst);
    cx.generation.list_request().encode(&mut burst);
    Request::Send {
        to: to.clone(),
        body: "first",
    }
    .encode(&mut burst);
    Request::Send {
        to: nobody,
        body: "lost",
    }
    .encode(&mut burst);
    burst.extend_from_slice(b"NOT-A-COMMAND\n");
    Request::Send {
        to: to.clone(),
        body: "second",
    }
    .encode(&mut burst);
    cx.generation.list_request().encode(&mut burst);
    a.send_raw(&burst).await?;

    a.expect("reply 1 of 7: the login", &Reply::Hello(name.clone()))
        .await?;
    a.set_name(name);
    let step = "reply 2 of 7: the first LIST";
    let names = super::read_list(cx.generation, &mut a, step).await?;
    require_listed(&a, step, &names, &[a.name(), &to])?;
    a.expect("reply 3 of 7: the first SEND", &Reply::SendOk)
        .await?;
    a.expect(
        "reply 4 of 7: the SEND to nobody",
        &cx.generation.bad_dest(),
    )
    .await?;
    a.expect("reply 5 of 7: the unknown command", &Reply::BadRqstHdr)
        .await?;
    a.expect("reply 6 of 7: the second SEND", &Reply::SendOk)
        .await?;
    let step = "reply 7 of 7: the second LIST";
    let names = super::read_list(cx.generation, &mut a, step).await?;
    require_listed(&a, step, &names, &[a.name(), &to])?;

    for body in ["first", "second"] {
        b.expect(
            &format!("receive the {body} message"),
            &Reply::Delivery {
                from: a.name().clone(),
                body,
            },
        )
        .await?;
    }
    Ok(Done::Passed)
}

pub(super) async fn byte_by_byte(cx: &mut Ctx) -> CaseResult {
    let mut b = cx.login().await?;
    let mut a = cx.connect().await?;
    let name = cx.fresh_name();
    let body = "sent in pieces";
    let mut script = Request::HelloFrom(name.clone()).to_line();
    Request::Send {
        to: b.name().clone(),
        body,
    }
    .encode(&mut script);
    cx.generation.list_request().encode(&mut script);
    a.send_bytewise(&script, BYTE_GAP).await?;

    a.expect("log in, one byte per write", &Reply::Hello(name.clone()))
        .await?;
    a.set_name(name);
    a.expect("send a message, one byte per write", &Reply::SendOk)
        .await?;
    let step = "send LIST, one byte per write";
    let names = super::read_list(cx.generation, &mut a, step).await?;
    require_listed(&a, step, &names, &[a.name(), b.name()])?;
    b.expect(
        "receive the message sent in pieces",
        &Reply::Delivery {
            from: a.name().clone(),
            body,
        },
    )
    .await?;
    Ok(Done::Passed)
}

pub(super) async fn message_order(cx: &mut Ctx) -> CaseResult {
    let mut a = cx.login().await?;
    let mut b = cx.login().await?;
    let bodies: Vec<String> = (1..=ORDERED_MESSAGES)
        .map(|i| format!("message {i}"))
        .collect();
    let mut burst = Vec::new();
    for body in &bodies {
        Request::Send {
            to: b.name().clone(),
            body,
        }
        .encode(&mut burst);
    }
    a.send_raw(&burst).await?;
    for i in 1..=ORDERED_MESSAGES {
        a.expect(&format!("reply {i} of {ORDERED_MESSAGES}"), &Reply::SendOk)
            .await?;
    }
    for body in &bodies {
        b.expect(
            &format!("receive \"{body}\", in order"),
            &Reply::Delivery {
                from: a.name().clone(),
                body,
            },
        )
        .await?;
    }
    Ok(Done::Passed)
}

pub(super) async fn overlong_line(cx: &mut Ctx) -> CaseResult {
    let mut w = cx.login().await?;
    let mut a = cx.login().await?;
    let body = "x".repeat(OVERLONG_BYTES);
    let line = Request::Send {
        to: w.name().clone(),
        body: &body,
    }
    .to_line();
    let head = String::from_utf8_lossy(&line[..line.len() - 1 - body.len()]).into_owned();

    // A server may close the connection in the middle of the line: a write error is allowed.
    let mut a_open = match a.write_quietly(&line).await {
        Ok(()) => {
            a.log_note(&format!(
                "-> {head}xxxx... ({OVERLONG_BYTES} bytes in one line)"
            ));
            true
        }
        Err(Got::Timeout(t)) => {
            return Err(Failure::new(
                format!("{}: send a line of {OVERLONG_BYTES} bytes", a.label()),
                "the server to read and discard it, or close the connection",
                Got::Timeout(t).to_string(),
            )
            .note("the server stopped reading in the middle of a long line"));
        }
        Err(got) => {
            a.log_note(&format!(
                "-> {head}xxxx... (the server closed during the write: {got})"
            ));
            false
        }
    };

    if a_open {
        a.send(&cx.generation.list_request()).await.ok();
        let step = "read the reply to the overlong line, then to LIST";
        let mut errors = 0;
        loop {
            let got = a.recv().await;
            match &got {
                Got::Line(l)
                    if matches!(Reply::parse(l), Ok(Reply::BadRqstBody | Reply::BadRqstHdr)) =>
                {
                    errors += 1;
                }
                Got::Line(l)
                    if matches!(Reply::parse(l), Ok(Reply::ListOk(_) | Reply::WhoOk(_))) =>
                {
                    if errors == 0 {
                        let expected = "BAD-RQST-BODY (or BAD-RQST-HDR) before the LIST-OK";
                        return Err(a.mismatch(step, expected, &got).note(SILENT_DROP_NOTE));
                    }
                    break;
                }
                g if g.is_closed() => {
                    a_open = false;
                    break;
                }
                _ => {
                    let expected = "BAD-RQST-BODY or BAD-RQST-HDR, then LIST-OK; or a close";
                    return Err(a.mismatch(step, expected, &got).note(OVERLONG_NOTE));
                }
            }
        }
    }

    if a_open {
        cx.expect_nothing_delivered(&mut w, &mut a, "the overlong line")
            .await?;
    } else {
        // The server closed A after reading (part of) the line, so anything it relayed was
        // queued for W before the close we saw; a marker from a fresh sender comes after it.
        let mut m = cx.login().await?;
        cx.expect_nothing_delivered(&mut w, &mut m, "the overlong line")
            .await?;
    }
    Ok(Done::Passed)
}
