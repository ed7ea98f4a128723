//! Logging in: the accepted name, a taken name, and every way a name can be invalid.

use tcpchat_proto::{Command, Reply, Request, Username};

use super::{malformed, CaseResult, Ctx, Done};

/// The longest name `name-too-long` tries: `HELLO-FROM ` and it fill a whole line of the
/// protocol's default limit. A server that accepts it bounds names by nothing but the line.
fn whole_line_name_bytes() -> usize {
    tcpchat_proto::DEFAULT_MAX_LINE_BYTES - Command::HelloFrom.as_str().len() - 1
}

/// A name refused at this length or below is refused for being a name, not for making the
/// line too long (any sane line limit is above it), so it must get `BAD-RQST-BODY` and leave
/// the connection open for another try, as every invalid name does.
const NAME_REFUSAL_BYTES: usize = 256;

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

/// Finds the server's bound on names instead of assuming one: the protocol decides that
/// names are bounded, not where. Fails only when a name filling a whole line is accepted.
pub(super) async fn name_too_long(cx: &mut Ctx) -> CaseResult {
    let whole_line = whole_line_name_bytes();
    let whole = long_name(cx, whole_line);
    let (accepted, refusal) = try_name(cx, &whole).await?;
    if accepted {
        return Err(crate::failure::Failure::new(
            format!("log in with a name of {whole_line} bytes (a whole line)"),
            "BAD-RQST-BODY: names have a bound",
            "HELLO: the name was accepted",
        )
        .note(
            "bound the length of names (tcpchat's bound is 32 bytes): without one, one client \
             can make every LIST-OK as long as a line",
        ));
    }
    // The shortest name is the run's fresh ones (accepted by `login`); search between.
    let mut lo = cx.run_tag().len() + 1;
    let mut hi = whole_line;
    let mut hi_refusal = refusal;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let name = long_name(cx, mid);
        match try_name(cx, &name).await? {
            (true, _) => lo = mid,
            (false, refusal) => {
                hi = mid;
                hi_refusal = refusal;
            }
        }
    }
    if hi <= NAME_REFUSAL_BYTES {
        let name = long_name(cx, hi);
        let what = format!("{hi} bytes, one more than the longest the server accepts");
        rejects_name(cx, &name, &what).await?;
    }
    Ok(Done::Found(format!(
        "names up to {lo} bytes are accepted; {hi} bytes get {hi_refusal}"
    )))
}

/// The run's tag padded with `n` to `len` bytes.
fn long_name(cx: &Ctx, len: usize) -> Vec<u8> {
    let mut name = cx.run_tag().as_bytes().to_vec();
    name.resize(len.max(name.len()), b'n');
    name
}

/// Tries to log in as `name` on a connection of its own, closed afterwards: whether the
/// server accepted it, and if not, what it answered.
async fn try_name(cx: &mut Ctx, name: &[u8]) -> Result<(bool, String), crate::failure::Failure> {
    let mut c = cx.connect().await?;
    // A server may close on a line it finds too long before reading all of it.
    let mut line = malformed(Command::HelloFrom, name);
    line.push(b'\n');
    let _ = c.write(&line).await;
    let got = c.recv().await;
    // `HELLO ` and whatever name: the reply to a login, built by the protocol crate.
    let hello = crate::client::reply_line(&Reply::Hello(
        Username::parse("x").expect("a literal valid name"),
    ));
    let hello = hello.strip_suffix(b"x").unwrap_or(&hello);
    let accepted = matches!(&got, crate::client::Got::Line(line) if line.starts_with(hello));
    let refusal = match &got {
        crate::client::Got::Line(line) => crate::failure::quoted(line),
        other => other.to_string(),
    };
    c.close().await;
    Ok((accepted, refusal))
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
