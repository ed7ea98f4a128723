//! `SEND`: relaying exactly, to oneself, to nobody, and rejecting malformed sends.

use tcpchat_proto::{Command, Reply, Request, Username};

use super::{malformed, CaseResult, Ctx, Done};
use crate::client::request_line;

/// `a` sends `body` to `b`; `a` must get `SEND-OK` and `b` the exact `DELIVERY`.
async fn relays(cx: &mut Ctx, body: &str, what: &str) -> CaseResult {
    let mut a = cx.login().await?;
    let mut b = cx.login().await?;
    a.send(&Request::Send {
        to: b.name().clone(),
        body,
    })
    .await?;
    a.expect(&format!("send B {what}"), &Reply::SendOk).await?;
    b.expect(
        &format!("receive {what} from A, byte for byte"),
        &Reply::Delivery {
            from: a.name().clone(),
            body,
        },
    )
    .await?;
    Ok(Done::Passed)
}

pub(super) async fn send(cx: &mut Ctx) -> CaseResult {
    let mut a = cx.login().await?;
    let mut b = cx.login().await?;
    // C's name is B's and one letter more (fresh names end in digits, so no case of this run
    // can be given it): the recipient is the whole name, so B must get nothing sent to C.
    let mut c = cx.connect().await?;
    let longer = Username::parse(&format!("{}x", b.name()))
        .expect("a fresh name and a letter is a valid name");
    c.send(&Request::HelloFrom(longer.clone())).await?;
    c.expect(
        &format!("log in as {longer}, B's name and one letter more"),
        &Reply::Hello(longer.clone()),
    )
    .await?;
    c.set_name(longer);
    let body = "hello there";
    a.send(&Request::Send {
        to: c.name().clone(),
        body,
    })
    .await?;
    a.expect("send C a message", &Reply::SendOk).await?;
    cx.expect_nothing_delivered(&mut b, &mut a, "the message to C")
        .await
        .map_err(|f| {
            f.note(
                "B's name is only the start of C's: find the recipient by the whole name, \
                 byte for byte",
            )
        })?;
    c.expect(
        "receive the message from A, byte for byte",
        &Reply::Delivery {
            from: a.name().clone(),
            body,
        },
    )
    .await?;
    Ok(Done::Passed)
}

pub(super) async fn send_spaces(cx: &mut Ctx) -> CaseResult {
    relays(
        cx,
        "  two leading,   three inside and two trailing  ",
        "a message with runs of spaces",
    )
    .await
}

pub(super) async fn send_unicode(cx: &mut Ctx) -> CaseResult {
    relays(
        cx,
        "zażółć gęślą jaźń — 你好 👋🏽 👩‍💻 ✓",
        "a message in many scripts with emoji",
    )
    .await
}

pub(super) async fn send_self(cx: &mut Ctx) -> CaseResult {
    let mut a = cx.login().await?;
    let body = "a note to myself";
    a.send(&Request::Send {
        to: a.name().clone(),
        body,
    })
    .await?;
    // The reply and the delivery travel on the same connection; the protocol does not say
    // which comes first.
    a.expect_unordered(
        "send a message to itself",
        &[
            Reply::SendOk,
            Reply::Delivery {
                from: a.name().clone(),
                body,
            },
        ],
    )
    .await?;
    Ok(Done::Passed)
}

pub(super) async fn send_unknown_user(cx: &mut Ctx) -> CaseResult {
    let mut a = cx.login().await?;
    let nobody = cx.fresh_name();
    a.send(&Request::Send {
        to: nobody.clone(),
        body: "anyone there?",
    })
    .await?;
    a.expect(
        &format!("send to {nobody}, a name no one has used"),
        &cx.generation.bad_dest(),
    )
    .await?;
    Ok(Done::Passed)
}

pub(super) async fn send_missing_user(cx: &mut Ctx) -> CaseResult {
    let mut a = cx.login().await?;
    a.send_line(Command::Send.as_str().as_bytes()).await?;
    a.expect("send SEND with nothing after it", &Reply::BadRqstBody)
        .await?;
    a.send_line(&malformed(Command::Send, b"")).await?;
    a.expect("send SEND with an empty user", &Reply::BadRqstBody)
        .await?;
    Ok(Done::Passed)
}

pub(super) async fn send_empty_message(cx: &mut Ctx) -> CaseResult {
    let mut w = cx.login().await?;
    let mut a = cx.login().await?;
    let to = w.name().clone();
    let no_message = malformed(Command::Send, to.as_str().as_bytes());
    a.send_line(&no_message).await?;
    a.expect("send SEND <user> with no message", &Reply::BadRqstBody)
        .await?;
    a.send_line(&[&no_message[..], b" "].concat()).await?;
    a.expect(
        "send SEND <user> with an empty message",
        &Reply::BadRqstBody,
    )
    .await?;
    cx.expect_nothing_delivered(&mut w, &mut a, "the empty messages")
        .await?;
    Ok(Done::Passed)
}

pub(super) async fn send_not_utf8(cx: &mut Ctx) -> CaseResult {
    let mut w = cx.login().await?;
    let mut a = cx.login().await?;
    let mut line = request_line(&Request::Send {
        to: w.name().clone(),
        body: "bad bytes: ",
    });
    line.extend_from_slice(b"\xff\xfe\xc3\x28 end");
    a.send_line(&line).await?;
    a.expect("send a message that is not UTF-8", &Reply::BadRqstBody)
        .await?;
    cx.expect_nothing_delivered(&mut w, &mut a, "the message that is not UTF-8")
        .await?;
    Ok(Done::Passed)
}
