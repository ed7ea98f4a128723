//! Load and limits: many clients at once, a client that stops reading, the client limit.

use std::time::Duration;

use tcpchat_proto::{Reply, Request};
use tokio::time::Instant;

use super::{require_listed, CaseResult, Ctx, Done};
use crate::client::{reply_line, request_line, Client, Got};
use crate::failure::{escape, quoted, Failure};

/// Clients online at once in `many-clients`: the original project's promise.
pub(crate) const MANY_CLIENTS: usize = 64;

/// The slow reader's socket receive buffer: small, so the server's side fills up soon.
const STUCK_RECV_BUFFER_BYTES: u32 = 4096;
/// Size of each message flooding the slow reader: well under any sane line limit (IRC's is
/// 512 bytes), so only the slow reader is on trial.
const FLOOD_BODY_BYTES: usize = 400;
/// Messages each sender writes (in one write, its replies read before the next sender): no
/// more than `message-order` sends at once, so a server whose command rate lets that case
/// through (a burst of 100 or more) never has to delay these. The flood comes from many
/// senders in turn instead of one, so the case tests the reader's bounded queue, not the
/// server's flood control (docs/security.md).
const FLOOD_WINDOW: usize = 100;

/// Pause between two tries while waiting for a slot to be freed.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

pub(super) async fn many_clients(cx: &mut Ctx) -> CaseResult {
    if let Some(capacity) = cx.capacity {
        if capacity < MANY_CLIENTS {
            return Ok(Done::Skipped(format!(
                "needs {MANY_CLIENTS} clients and --capacity is {capacity}"
            )));
        }
    }
    let mut clients: Vec<Client> = Vec::with_capacity(MANY_CLIENTS);
    for _ in 0..MANY_CLIENTS {
        let online = clients.len();
        let client = cx.login().await.map_err(|f| {
            f.note(format!(
                "{online} of this case's clients were online when the next one could not log in"
            ))
        })?;
        clients.push(client);
    }
    let names: Vec<_> = clients.iter().map(|c| c.name().clone()).collect();
    let body = |i: usize| format!("ring message from client {i}");

    // Everyone sends to the next one round the ring, all before anyone reads.
    for (i, client) in clients.iter_mut().enumerate() {
        let to = names[(i + 1) % MANY_CLIENTS].clone();
        client.send(&Request::Send { to, body: &body(i) }).await?;
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let prev = (i + MANY_CLIENTS - 1) % MANY_CLIENTS;
        let from_prev = body(prev);
        client
            .expect_unordered(
                "get SEND-OK for its message and the message from the previous client",
                &[
                    Reply::SendOk,
                    Reply::Delivery {
                        from: names[prev].clone(),
                        body: &from_prev,
                    },
                ],
            )
            .await?;
    }
    let step = format!("list who is online, all {MANY_CLIENTS} included");
    let first = &mut clients[0];
    let listed = cx.list(first, &step).await?;
    let want: Vec<_> = names.iter().collect();
    require_listed(first, &step, &listed, &want)?;
    Ok(Done::Passed)
}

pub(super) async fn slow_reader(cx: &mut Ctx) -> CaseResult {
    let stuck = cx.login_with(Some(STUCK_RECV_BUFFER_BYTES)).await?;
    let bad_dest = cx.generation.bad_dest();
    let mut body = String::from("flood ");
    body.extend(std::iter::repeat_n('x', FLOOD_BODY_BYTES - body.len()));
    let mut window = Vec::new();
    for _ in 0..FLOOD_WINDOW {
        Request::Send {
            to: stuck.name().clone(),
            body: &body,
        }
        .encode(&mut window);
    }
    let shown = request_line(&Request::Send {
        to: stuck.name().clone(),
        body: &body[..10],
    });

    let mut sent = 0usize;
    let mut senders = 0usize;
    let mut dropped = false;
    // The latest sender stays open until the next one has logged in, for the transcript.
    let mut last_sender: Option<Client> = None;
    let flood_limit = cx.flood_limit;
    while !dropped && sent * FLOOD_BODY_BYTES < flood_limit {
        let mut f = cx.login().await?;
        senders += 1;
        if senders == 1 {
            f.log_note(&format!(
                "-> {}... ({FLOOD_BODY_BYTES}-byte messages, {FLOOD_WINDOW} per sender, one \
                 sender after another; {} never reads)",
                escape(&shown),
                stuck.label()
            ));
        }
        let flooded = mib(sent * FLOOD_BODY_BYTES);
        if let Err(got) = f.write_quietly(&window).await {
            return Err(Failure::new(
                format!("{}: send more messages after {sent} ({flooded})", f.label()),
                "the server to keep reading from the sender",
                got.to_string(),
            )
            .note(stall_note(stuck.label())));
        }
        for _ in 0..FLOOD_WINDOW {
            let got = f.recv_quietly().await;
            match &got {
                got if got.is(&Reply::SendOk) => {}
                got if got.is(&bad_dest) => dropped = true,
                _ => {
                    let step = format!(
                        "get a reply to each message, after {sent} messages ({flooded}) to {} \
                         which reads nothing",
                        stuck.label()
                    );
                    f.log_received(&got);
                    let expected = format!(
                        "{}, or {} once the reader is dropped",
                        quoted(&reply_line(&Reply::SendOk)),
                        quoted(&reply_line(&bad_dest))
                    );
                    let failure = f.mismatch(&step, &expected, &got);
                    return Err(if matches!(got, Got::Timeout(_)) {
                        failure.note(stall_note(stuck.label()))
                    } else {
                        failure
                    });
                }
            }
            sent += 1;
        }
        if let Some(previous) = last_sender.replace(f) {
            previous.close().await;
        }
    }
    let outcome = if dropped {
        format!(
            "BAD-DEST-USER after {sent} messages ({}, from {senders} senders): {} was dropped",
            mib(sent * FLOOD_BODY_BYTES),
            stuck.label()
        )
    } else {
        format!(
            "SEND-OK for all {sent} messages ({})",
            mib(sent * FLOOD_BODY_BYTES)
        )
    };
    if let Some(f) = &last_sender {
        f.log_note(&format!("<- {outcome}"));
    }

    // Everyone else is unaffected.
    let mut b = cx.login().await?;
    let mut c = cx.login().await?;
    let note = "not stalled";
    b.send(&Request::Send {
        to: c.name().clone(),
        body: note,
    })
    .await?;
    b.expect("send a message while the reader is stuck", &Reply::SendOk)
        .await?;
    c.expect(
        "receive a message while another client is stuck",
        &Reply::Delivery {
            from: b.name().clone(),
            body: note,
        },
    )
    .await?;

    if !dropped {
        // The protocol bounds the queue but not where: a server may hold more than the
        // probe pushes. Not a failure, not a pass: say how far the probe went.
        return Ok(Done::Inconclusive(format!(
            "{} pushed at {} (which reads nothing) without the server dropping it; everyone \
             else was unaffected. If the server bounds its queue, the bound is above the \
             probe's limit: push further with --flood-limit (e.g. {} bytes)",
            mib(sent * FLOOD_BODY_BYTES),
            stuck.label(),
            flood_limit.saturating_mul(4)
        )));
    }
    Ok(Done::Found(outcome))
}

fn stall_note(stuck: &str) -> String {
    format!(
        "the server stopped serving the sender while {stuck} was not reading: never wait on \
         a slow reader; queue for it (bounded) and drop it when its queue is full"
    )
}

fn mib(bytes: usize) -> String {
    // Only for display; the sizes involved are far below f64's exact integer range.
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub(super) async fn busy(cx: &mut Ctx) -> CaseResult {
    let Some(capacity) = cx.capacity else {
        return Ok(Done::Skipped(
            "give --capacity N (the server's client limit) to check BUSY".to_string(),
        ));
    };
    let mut online: Vec<Client> = Vec::new();
    let mut saw_busy = false;
    for i in 1..=capacity.saturating_add(1) {
        let mut c = cx.connect().await.map_err(|f| {
            f.note(format!(
                "{} connections were open; if the checker ran out of file descriptors, raise \
                 `ulimit -n` or check a server with a smaller client limit",
                online.len()
            ))
        })?;
        let name = cx.fresh_name();
        let step = format!("log in as client {i} of at most {capacity}");
        // A server that answers BUSY on accept may have closed before this write lands; what
        // it sent is still readable, so a failed write is not the verdict.
        let _ = c.write(&Request::HelloFrom(name.clone()).to_line()).await;
        let got = c.recv().await;
        let hello = Reply::Hello(name.clone());
        match &got {
            got if got.is(&hello) => {
                c.set_name(name);
                online.push(c);
            }
            got if got.is(&Reply::Busy) => {
                c.expect_closed("after BUSY the server closes the connection")
                    .await?;
                saw_busy = true;
                break;
            }
            _ => {
                let busy = quoted(&reply_line(&Reply::Busy));
                let expected = if i > capacity {
                    format!("{busy} (the server is at its limit)")
                } else {
                    format!("{}, or {busy} at the limit", quoted(&reply_line(&hello)))
                };
                return Err(c.mismatch(&step, &expected, &got));
            }
        }
    }
    if !saw_busy {
        return Err(Failure::new(
            format!(
                "client {}: log in past the limit of {capacity}",
                capacity.saturating_add(1)
            ),
            "BUSY, then the server closes the connection",
            format!("HELLO: {} clients online at once", online.len()),
        )
        .note("at the client limit, answer BUSY and close the connection"));
    }

    // A client leaves; its slot must come back.
    let Some(leaving) = online.pop() else {
        return Ok(Done::Skipped(format!(
            "the server answered BUSY before this case logged anyone in: it was full (try \
                 a larger --capacity), or {}",
            crate::client::LIMITS_NOTE
        )));
    };
    let label = leaving.label().to_string();
    leaving.close().await;
    let deadline = Instant::now() + cx.timeout;
    loop {
        let mut c = cx.connect().await?;
        let name = cx.fresh_name();
        c.write(&Request::HelloFrom(name.clone()).to_line())
            .await
            .ok();
        let step = format!("log in after {label} left and freed a slot");
        let i = c
            .expect_one_of(&step, &[Reply::Hello(name), Reply::Busy])
            .await?;
        if i == 0 {
            return Ok(Done::Passed);
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(
                format!("{}: {step}", c.label()),
                "HELLO: a slot is free again",
                format!(
                    "BUSY, still, {} after {label} left",
                    crate::client::seconds(cx.timeout)
                ),
            )
            .note("a connection's slot must be returned however it ends"));
        }
        drop(c);
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
