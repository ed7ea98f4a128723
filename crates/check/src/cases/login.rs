//! Logging in: the accepted name, a taken name, and every way a name can be invalid.

use tcpchat_proto::{Command, Reply, Request, Username};

use super::{malformed, CaseResult, Ctx, Done};

/// Length of the name `name-too-long` sends: past any sane bound on a name (ours is 32
/// bytes), yet well inside any sane line limit, so the answer is about the name.
const TOO_LONG_NAME_BYTES: usize = 256;

pub(super) async fn login(cx: &mut Ctx) -> CaseResult {
    // Fresh names are in lower case; this one in upper case is just as fresh, and the same
    // name in lower case is still free afterwards: names are compared byte for byte
    // (docs/protocol.md, Names), so `Alice` and `alice` are two users.
    let lower = cx.fresh_name();
    let upper = Username::parse(&lower.as_str().to_ascii_uppercase())
        .expect("a valid name in upper case is valid");
    let mut a = cx.connect().await?;
    a.send(&Request::HelloFrom(upper.clone())).await?;
    a.expect(
        "log in with a fresh name in upper case",
        &Reply::Hello(upper.clone()),
    )
    .await
    .map_err(|f| f.note("repeat the name exactly as the client wrote it"))?;
    let mut b = cx.connect().await?;
    b.send(&Request::HelloFrom(lower.clone())).await?;
    b.expect(
        &format!("log in as {lower}, which differs from A's {upper} only in case"),
        &Reply::Hello(lower),
    )
    .await
    .map_err(|f| {
        f.note("names are case-sensitive: compare them byte for byte, without folding case")
    })?;
    Ok(Done::Passed)
}

pub(super) async fn name_in_use(cx: &mut Ctx) -> CaseResult {
    let a = cx.login().await?;
    let taken = a.name().clone();
    let mut b = cx.connect().await?;
    b.send(&Request::HelloFrom(taken.clone())).await?;
    b.expect(&format!("log in as {taken}, which A has"), &Reply::InUse)
        .await?;
    cx.log_in(&mut b)
        .await
        .map_err(|f| f.note("after IN-USE the connection must stay open for another try"))?;
    let names = cx.list(&mut b, "list who is online").await?;
    super::require_listed(&b, "list who is online", &names, &[&taken, b.name()])?;
    Ok(Done::Passed)
}

pub(super) async fn name_empty(cx: &mut Ctx) -> CaseResult {
    let mut c = cx.connect().await?;
    c.send_line(&malformed(Command::HelloFrom, b"")).await?;
    c.expect("log in with an empty name", &Reply::BadRqstBody)
        .await?;
    // Without even the space, the name is just as missing; a server may also call the line
    // malformed, so either error is accepted here.
    c.send_line(Command::HelloFrom.as_str().as_bytes()).await?;
    c.expect_one_of(
        "send HELLO-FROM with no name at all",
        &[Reply::BadRqstBody, Reply::BadRqstHdr],
    )
    .await?;
    retry_after_invalid(cx, &mut c).await
}

pub(super) async fn name_whitespace(cx: &mut Ctx) -> CaseResult {
    let tag = cx.run_tag().to_string();
    rejects_name(cx, format!("{tag}a b").as_bytes(), "a space").await?;
    rejects_name(cx, format!("{tag}a\tb").as_bytes(), "a tab").await
}

pub(super) async fn name_comma(cx: &mut Ctx) -> CaseResult {
    let tag = cx.run_tag().to_string();
    rejects_name(cx, format!("{tag}a,b").as_bytes(), "a comma").await
}

pub(super) async fn name_control(cx: &mut Ctx) -> CaseResult {
    let tag = cx.run_tag().to_string();
    rejects_name(
        cx,
        format!("{tag}\x1b[31mred").as_bytes(),
        "an escape character",
    )
    .await?;
    rejects_name(cx, format!("{tag}a\x07b").as_bytes(), "a bell character").await
}

pub(super) async fn name_too_long(cx: &mut Ctx) -> CaseResult {
    let mut name = cx.run_tag().to_string();
    while name.len() < TOO_LONG_NAME_BYTES {
        name.push('n');
    }
    rejects_name(cx, name.as_bytes(), "256 bytes").await
}

pub(super) async fn name_not_utf8(cx: &mut Ctx) -> CaseResult {
    let mut name = cx.run_tag().as_bytes().to_vec();
    name.extend_from_slice(b"\xff\xfe");
    rejects_name(cx, &name, "bytes that are not UTF-8").await
}

/// `HELLO-FROM <name>` must get `BAD-RQST-BODY`, and the connection must still log in.
async fn rejects_name(cx: &mut Ctx, name: &[u8], what: &str) -> CaseResult {
    let mut c = cx.connect().await?;
    c.send_line(&malformed(Command::HelloFrom, name)).await?;
    c.expect(
        &format!("log in with a name with {what}"),
        &Reply::BadRqstBody,
    )
    .await?;
    retry_after_invalid(cx, &mut c).await
}

async fn retry_after_invalid(cx: &mut Ctx, c: &mut crate::client::Client) -> CaseResult {
    cx.log_in(c)
        .await
        .map_err(|f| f.note("after BAD-RQST-BODY the connection must stay open for another try"))?;
    Ok(Done::Passed)
}
