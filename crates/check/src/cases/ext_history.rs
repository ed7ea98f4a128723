//! The `history` extension, room paging: live `SAID-AT` lines carry one offset per message,
//! the same for every member and one more for each message; `HISTORY` pages backwards from
//! the newest with `HISTORY-OK` and the stored lines, oldest first; a non-member is
//! `NO-HISTORY` (`docs/protocol.md`, "history").
//!
//! The room's name is fresh for the run, so its stream is new.

use tcpchat_proto::{Extension, Reply, Request, RoomName, Stream};

use super::ext_negotiation::{negotiate, Answer};
use super::{CaseResult, Ctx, Done};
use crate::client::{Client, Got};
use crate::failure::Failure;

/// Messages said in the room.
const SAID: u64 = 3;

/// A client that negotiated `rooms` and `history`, logged in; `Err(why)` to skip.
async fn history_client(cx: &mut Ctx) -> Result<Result<Client, String>, Failure> {
    let mut c = cx.connect().await?;
    let wanted = [Extension::Rooms.name(), Extension::History.name()];
    match negotiate(&mut c, &wanted).await? {
        Answer::Classic(why) => return Ok(Err(why)),
        Answer::Extended(names) if !wanted.iter().all(|w| names.iter().any(|n| n == w)) => {
            return Ok(Err(
                "the server does not offer both rooms and history".to_owned()
            ));
        }
        Answer::Extended(_) => {}
    }
    cx.log_in(&mut c).await?;
    Ok(Ok(c))
}

/// The next line as a `SAID-AT` of `room`: its offset and body.
async fn said_at(c: &mut Client, step: &str, room: &RoomName) -> Result<(u64, String), Failure> {
    let got = c.recv().await;
    if let Got::Line(line) = &got {
        if let Ok(Reply::SaidAt {
            room: r,
            offset,
            body,
            ..
        }) = Reply::parse(line)
        {
            if &r == room {
                return Ok((offset, body.to_owned()));
            }
        }
    }
    Err(c.mismatch(
        step,
        &format!("SAID-AT {room} <offset> <time> <from> <msg>"),
        &got,
    ))
}

pub(super) async fn ext_history(cx: &mut Ctx) -> CaseResult {
    let mut a = match history_client(cx).await? {
        Ok(c) => c,
        Err(why) => return Ok(Done::Skipped(why)),
    };
    let mut b = match history_client(cx).await? {
        Ok(c) => c,
        Err(why) => return Ok(Done::Skipped(why)),
    };
    let room = RoomName::parse(&format!("#{}", cx.fresh_name()))
        .expect("# and a fresh name is a room name");
    for joiner in [0, 1] {
        let name = [&a, &b][joiner].name().clone();
        let joined = Reply::Joined {
            room: room.clone(),
            name,
        };
        [&mut a, &mut b][joiner]
            .send(&Request::Join(room.clone()))
            .await?;
        a.expect("see a JOINED of the room", &joined).await?;
        if joiner == 1 {
            b.expect("join the room", &joined).await?;
        }
    }
    let bodies: Vec<String> = (0..SAID).map(|k| format!("h{k}")).collect();
    for body in &bodies {
        a.send(&Request::Say {
            room: room.clone(),
            body,
        })
        .await?;
    }
    let step = "receive the room's messages with their offsets (SAID-AT)";
    let mut first = None;
    for member in [&mut a, &mut b] {
        let mut offsets = Vec::new();
        for body in &bodies {
            let (offset, got) = said_at(member, step, &room).await?;
            if &got != body {
                return Err(Failure::new(
                    format!("{}: {step}", member.label()),
                    format!("the message {body:?}"),
                    format!("{got:?}"),
                )
                .note("a room's messages arrive in the order they were said"));
            }
            offsets.push(offset);
        }
        let start = *first.get_or_insert(offsets[0]);
        let want: Vec<u64> = (start..start + SAID).collect();
        if offsets != want {
            return Err(Failure::new(
                format!("{}: {step}", member.label()),
                format!("offsets {want:?}, the same for every member"),
                format!("{offsets:?}"),
            )
            .note("each message of a stream has the next offset, and one offset for everyone"));
        }
    }
    let start = first.unwrap_or(1);
    let top = start + SAID - 1;

    let page_step = "page the room's history backwards (HISTORY)";
    b.send(&Request::History {
        stream: Stream::Room(room.clone()),
        before: None,
        count: 2,
    })
    .await?;
    expect_page(&mut b, page_step, &room, top, &[top - 1, top]).await?;
    b.send(&Request::History {
        stream: Stream::Room(room.clone()),
        before: Some(top - 1),
        count: 2,
    })
    .await?;
    expect_page(&mut b, page_step, &room, top, &[start]).await?;

    a.send(&Request::Part(room.clone())).await?;
    let parted = Reply::Parted {
        room: room.clone(),
        name: a.name().clone(),
    };
    a.expect("leave the room", &parted).await?;
    a.send(&Request::History {
        stream: Stream::Room(room.clone()),
        before: None,
        count: 1,
    })
    .await?;
    a.expect(
        "ask for the history of a room one has left",
        &Reply::NoHistory,
    )
    .await?;
    Ok(Done::Passed)
}

/// `HISTORY-OK <room> <epoch> <top> <n>` and then exactly the `SAID-AT` lines `offsets`.
async fn expect_page(
    c: &mut Client,
    step: &str,
    room: &RoomName,
    top: u64,
    offsets: &[u64],
) -> Result<(), Failure> {
    let n = u32::try_from(offsets.len()).unwrap_or(u32::MAX);
    let got = c.recv().await;
    let ok = matches!(&got, Got::Line(line) if matches!(
        Reply::parse(line),
        Ok(Reply::HistoryOk { stream: Stream::Room(r), top: t, n: m, .. })
            if &r == room && t == top && m == n
    ));
    if !ok {
        return Err(c.mismatch(step, &format!("HISTORY-OK {room} <epoch> {top} {n}"), &got));
    }
    for want in offsets {
        let (offset, _) = said_at(c, step, room).await?;
        if offset != *want {
            return Err(Failure::new(
                format!("{}: {step}", c.label()),
                format!("SAID-AT with offset {want} (a page is oldest first)"),
                format!("offset {offset}"),
            ));
        }
    }
    Ok(())
}

/// The password of the account `ext-history-offline` registers (and deletes at the end).
const ACCOUNT_PASSWORD: &str = "check-history-1";

/// A connection that negotiated `accounts` and `history`, not logged in; `Err(why)` to skip.
async fn account_client(cx: &mut Ctx) -> Result<Result<Client, String>, Failure> {
    let mut c = cx.connect().await?;
    let wanted = [Extension::Accounts.name(), Extension::History.name()];
    match negotiate(&mut c, &wanted).await? {
        Answer::Classic(why) => Ok(Err(why)),
        Answer::Extended(names) if !wanted.iter().all(|w| names.iter().any(|n| n == w)) => Ok(Err(
            "the server does not offer both accounts and history".to_owned(),
        )),
        Answer::Extended(_) => Ok(Ok(c)),
    }
}

/// Polls `LIST` on `w` until `name` has left it (the server has seen the disconnect).
async fn wait_gone(
    cx: &mut Ctx,
    w: &mut Client,
    name: &tcpchat_proto::Username,
) -> Result<(), Failure> {
    let step = format!("wait for {name} to leave LIST after its connection ended");
    let deadline = tokio::time::Instant::now() + cx.timeout;
    loop {
        let names = cx.list(w, &step).await?;
        if !names.contains(name) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::new(
                format!("{}: {step}", w.label()),
                format!("a LIST-OK without {name}"),
                super::listed(&names),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `SEND <to> <body>` from `c`, answered `want`.
async fn send_to(
    c: &mut Client,
    to: &tcpchat_proto::Username,
    body: &str,
    step: &str,
    want: &Reply<'_>,
) -> Result<(), Failure> {
    c.send(&Request::Send {
        to: to.clone(),
        body,
    })
    .await?;
    c.expect(step, want).await
}

/// The next line as a `DELIVERY-AT`: its offset, time, sender and message.
async fn delivery_at(c: &mut Client, step: &str) -> Result<(u64, u64, String, String), Failure> {
    let got = c.recv().await;
    if let Got::Line(line) = &got {
        if let Ok(Reply::DeliveryAt {
            offset,
            time,
            from,
            body,
        }) = Reply::parse(line)
        {
            return Ok((offset, time, from.as_str().to_owned(), body.to_owned()));
        }
    }
    Err(c.mismatch(step, "DELIVERY-AT <offset> <time> <from> <msg>", &got))
}

/// Reads the catch-up after a login: `DELIVERY-AT` lines until `RESUME-OK`, which must name
/// `top`; returns the epoch and the (offset, time, body) of each line. A `RESUME-EPOCH` or
/// `RESUME-EXPIRED` before the lines fails the step.
async fn catch_up(
    c: &mut Client,
    step: &str,
    top: u64,
) -> Result<(String, Vec<(u64, u64, String)>), Failure> {
    let mut lines = Vec::new();
    loop {
        let got = c.recv().await;
        let parsed = match &got {
            Got::Line(line) => Reply::parse(line).ok(),
            _ => None,
        };
        match parsed {
            Some(Reply::DeliveryAt {
                offset, time, body, ..
            }) => lines.push((offset, time, body.to_owned())),
            Some(Reply::ResumeOk { epoch, top: t }) if t == top => {
                return Ok((epoch.to_owned(), lines));
            }
            _ => {
                return Err(c.mismatch(
                    step,
                    &format!("DELIVERY-AT lines, then RESUME-OK <epoch> {top}"),
                    &got,
                ))
            }
        }
    }
}

/// Offline delivery and resume on a fresh account: two messages from a `history` sender to
/// the account while it is offline are `SEND-QUEUED` (a classic sender's, between them, is
/// `BAD-DEST-USER`); the login gets exactly those two, as `DELIVERY-AT` 1 and 2, then
/// `RESUME-OK <epoch> 2`. A live message follows as offset 3; after that connection is
/// dropped and one more is queued, `RESUME <epoch> 2` gets 3 and 4, each once, and
/// `RESUME-OK <epoch> 4`. Four password checks in all (register, two logins, unregister).
pub(super) async fn ext_history_offline(cx: &mut Ctx) -> CaseResult {
    let mut owner = match account_client(cx).await? {
        Ok(c) => c,
        Err(why) => return Ok(Done::Skipped(why)),
    };
    let mut sender = match account_client(cx).await? {
        Ok(c) => c,
        Err(why) => return Ok(Done::Skipped(why)),
    };
    let password = tcpchat_proto::Password::parse(ACCOUNT_PASSWORD)
        .expect("the checker's password follows the rules");
    cx.log_in(&mut owner).await?;
    owner.send(&Request::Register(password)).await?;
    owner
        .expect("register the name", &Reply::RegisterOk)
        .await?;
    let name = owner.name().clone();
    cx.log_in(&mut sender).await?;
    let mut classic = cx.login().await?;
    owner.close().await;
    wait_gone(cx, &mut sender, &name).await?;

    send_to(
        &mut sender,
        &name,
        "q1",
        "send to the account while it is offline",
        &Reply::SendQueued,
    )
    .await
    .map_err(|f| f.note("a history sender's message to an offline account is kept: SEND-QUEUED"))?;
    send_to(
        &mut classic,
        &name,
        "classic",
        "send to the offline account from a classic connection",
        &Reply::BadDestUser,
    )
    .await
    .map_err(|f| f.note("a classic sender keeps the classic reply, and nothing is kept"))?;
    send_to(
        &mut sender,
        &name,
        "q2",
        "send to the account while it is offline",
        &Reply::SendQueued,
    )
    .await?;

    let mut first = match account_client(cx).await? {
        Ok(c) => c,
        Err(why) => return Ok(Done::Skipped(why)),
    };
    first
        .send(&Request::Login {
            name: name.clone(),
            password,
        })
        .await?;
    first
        .expect("log in to the account", &Reply::Hello(name.clone()))
        .await?;
    first.set_name(name.clone());
    let step = "receive what was kept while offline, then RESUME-OK";
    let (epoch, got) = catch_up(&mut first, step, 2)
        .await
        .map_err(|f| f.note("a classic sender's message is never kept, so only q1 and q2 come"))?;
    let bodies: Vec<(u64, &str)> = got.iter().map(|(o, _, b)| (*o, b.as_str())).collect();
    if bodies != [(1, "q1"), (2, "q2")] {
        return Err(Failure::new(
            format!("{}: {step}", first.label()),
            "DELIVERY-AT 1 (q1), DELIVERY-AT 2 (q2)",
            format!("{bodies:?} (offset, message)"),
        )
        .note(
            "a new stream's first message is offset 1; each kept message arrives once, in order",
        ));
    }
    send_to(
        &mut sender,
        &name,
        "l3",
        "send to the account, online again",
        &Reply::SendOk,
    )
    .await?;
    let step = "receive a live message after the catch-up";
    let (offset, time, from, body) = delivery_at(&mut first, step).await?;
    if (offset, body.as_str(), from.as_str()) != (3, "l3", sender.name().as_str()) {
        return Err(Failure::new(
            format!("{}: {step}", first.label()),
            format!("DELIVERY-AT 3 <time> {} l3", sender.name()),
            format!("DELIVERY-AT {offset} {time} {from} {body}"),
        ));
    }
    if got.iter().any(|(_, t, _)| *t > time) {
        return Err(Failure::new(
            format!("{}: {step}", first.label()),
            format!("the kept messages' times at or before the live one's ({time})"),
            format!("{got:?} (offset, time, message)"),
        )
        .note("a kept message arrives with the time it was sent, not the time of the login"));
    }

    // The connection dies (as if l3 were lost with it); one more message is kept meanwhile.
    first.abort();
    wait_gone(cx, &mut sender, &name).await?;
    send_to(
        &mut sender,
        &name,
        "q4",
        "send to the account while it is offline again",
        &Reply::SendQueued,
    )
    .await?;
    let mut second = match account_client(cx).await? {
        Ok(c) => c,
        Err(why) => return Ok(Done::Skipped(why)),
    };
    second
        .send(&Request::Resume {
            epoch: &epoch,
            offset: 2,
        })
        .await?;
    second
        .send(&Request::Login {
            name: name.clone(),
            password,
        })
        .await?;
    second
        .expect(
            &format!("log in again after RESUME {epoch} 2"),
            &Reply::Hello(name.clone()),
        )
        .await?;
    second.set_name(name.clone());
    let step = format!("receive everything after offset 2 (RESUME {epoch} 2), then RESUME-OK");
    let (again, got) = catch_up(&mut second, &step, 4).await?;
    let offsets: Vec<(u64, &str)> = got.iter().map(|(o, _, b)| (*o, b.as_str())).collect();
    if again != epoch || offsets != [(3, "l3"), (4, "q4")] {
        return Err(Failure::new(
            format!("{}: {step}", second.label()),
            format!("DELIVERY-AT 3 (l3), DELIVERY-AT 4 (q4), RESUME-OK {epoch} 4"),
            format!("{offsets:?} (offset, message), RESUME-OK {again} 4"),
        )
        .note(
            "a resume gets exactly what came after its position, what reached a dropped \
             connection included: no gap, no duplicate",
        ));
    }
    second.send(&Request::Unregister(password)).await?;
    second
        .expect("delete the account (clean up)", &Reply::UnregisterOk)
        .await?;
    Ok(Done::Passed)
}
