//! The `rooms` extension: join lines seen by every member, one order of room messages for
//! everyone under concurrent senders, the members list, and leaving (`docs/protocol.md`,
//! "rooms").
//!
//! The room's name is fresh for the run, so other people on the server cannot share it.

use tcpchat_proto::{Extension, Reply, Request, RoomName, Username};

use super::ext_negotiation::login_with;
use super::{CaseResult, Ctx, Done};
use crate::client::{Client, Got};
use crate::failure::Failure;

/// Messages each of two senders pipelines into the room.
const EACH: usize = 20;

pub(super) async fn ext_rooms(cx: &mut Ctx) -> CaseResult {
    let mut members: Vec<Client> = Vec::new();
    for _ in 0..3 {
        match login_with(cx, Extension::Rooms).await? {
            Ok(c) => members.push(c),
            Err(why) => return Ok(Done::Skipped(why)),
        }
    }
    let tag = cx.fresh_name();
    let room = RoomName::parse(&format!("#{tag}"))
        .expect("# and a fresh name (lowercase letters and digits) is a room name");

    // Each joins in turn; everyone already in sees it, the joiner first of all.
    for i in 0..members.len() {
        let joiner = members[i].name().clone();
        members[i].send(&Request::Join(room.clone())).await?;
        let joined = Reply::Joined {
            room: room.clone(),
            name: joiner,
        };
        for (j, m) in members.iter_mut().enumerate().take(i + 1) {
            let step = if j == i {
                "join the room (answered by the JOINED line every member gets)"
            } else {
                "hear of a newcomer's JOINED"
            };
            m.expect(step, &joined).await?;
        }
    }
    let names: Vec<Username> = members.iter().map(|m| m.name().clone()).collect();
    members[1].send(&Request::Members(room.clone())).await?;
    members[1]
        .expect(
            "list the members (in join order, the owner first)",
            &Reply::MembersOk {
                room: room.clone(),
                names: names.clone(),
            },
        )
        .await?;

    // Two senders pipeline their messages at once; every member, senders included, must
    // receive all of them, each once, in one and the same order.
    for (s, sender) in members.iter_mut().take(2).enumerate() {
        let mut batch = Vec::new();
        for k in 0..EACH {
            let body = format!("m{s}-{k}");
            batch.extend(
                Request::Say {
                    room: room.clone(),
                    body: &body,
                }
                .to_line(),
            );
        }
        sender.send_raw(&batch).await?;
    }
    let mut orders: Vec<Vec<Vec<u8>>> = Vec::new();
    for m in &mut members {
        let mut seen = Vec::new();
        for _ in 0..2 * EACH {
            let got = m.recv().await;
            let said = match &got {
                Got::Line(line) => matches!(Reply::parse(line), Ok(Reply::Said { .. })),
                _ => false,
            };
            let Got::Line(line) = got.clone() else {
                return Err(m.mismatch("receive the room's messages", "SAID lines", &got));
            };
            if !said {
                return Err(m.mismatch("receive the room's messages", "SAID lines", &got));
            }
            seen.push(line);
        }
        orders.push(seen);
    }
    for (i, seen) in orders.iter().enumerate().skip(1) {
        if let Some(at) = (0..seen.len()).find(|&k| seen[k] != orders[0][k]) {
            return Err(Failure::new(
                format!("{}: receive the room's messages", members[i].label()),
                format!(
                    "the same order as {}: message {} is {}",
                    members[0].label(),
                    at + 1,
                    String::from_utf8_lossy(&orders[0][at])
                ),
                String::from_utf8_lossy(&seen[at]).into_owned(),
            )
            .note("every member of a room sees its messages in one order"));
        }
    }
    let mut distinct = orders[0].clone();
    distinct.sort();
    distinct.dedup();
    if distinct.len() != 2 * EACH {
        return Err(Failure::new(
            format!("{}: receive the room's messages", members[0].label()),
            format!("{} distinct messages", 2 * EACH),
            format!("{} distinct among {}", distinct.len(), orders[0].len()),
        )
        .note("every member receives each room message once"));
    }

    // The last one leaves: everyone sees it, and the list no longer names it.
    let leaver = names[2].clone();
    members[2].send(&Request::Part(room.clone())).await?;
    let parted = Reply::Parted {
        room: room.clone(),
        name: leaver,
    };
    for m in members.iter_mut().rev() {
        m.expect("hear of the departure (PARTED)", &parted).await?;
    }
    members[0].send(&Request::Members(room.clone())).await?;
    members[0]
        .expect(
            "list the members after a departure",
            &Reply::MembersOk {
                room: room.clone(),
                names: names[..2].to_vec(),
            },
        )
        .await?;
    members[2]
        .send(&Request::Say {
            room: room.clone(),
            body: "after leaving",
        })
        .await?;
    members[2]
        .expect("send to a room one has left", &Reply::NotMember)
        .await?;
    Ok(Done::Passed)
}
