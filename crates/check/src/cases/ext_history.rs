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
