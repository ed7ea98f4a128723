//! Stored messages on the client side (`docs/protocol.md`, "history"): where the client
//! stands in each stream, and which stored lines are new to it.
//!
//! The server numbers each stream's messages (an *offset* that only grows, within an
//! *epoch*). The client keeps, per stream, the epoch and the highest offset it holds, and
//! the lowest one (to page further back); [`Positions`] decides for each `DELIVERY-AT` or
//! `SAID-AT` whether it is new (shown) or one the client already holds (dropped), so that a
//! reconnection or a restart shows nothing twice and leaves no gap:
//!
//! - **Direct stream.** The position goes out as `RESUME <epoch> <offset>` before `LOGIN`;
//!   the server sends what came after it, then `RESUME-OK`. A line at or below the position
//!   of the same epoch is dropped.
//! - **Rooms.** After a rejoin the client asks for the newest page (`HISTORY #room 50`) and
//!   pages back with `BEFORE` until it reaches the last offset it had; a page line is new when
//!   it is above that offset and below the first live line since the rejoin (the live lines
//!   have shown the rest). This is "Rooms and resume" of the protocol: paging from the first
//!   live offset, or from the newest page when no live line came yet, is the same walk.
//! - **Older lines** (the user scrolls past the top): `HISTORY <stream> BEFORE <lowest> 50`;
//!   a line is new when it is below the lowest offset held.
//!
//! Pure: no I/O, no clock. Bounded: one entry per room the user is in or was in
//! ([`MAX_ROOM_POSITIONS`]), and a catch-up stops after [`MAX_CATCHUP_PAGES`] pages.

use std::collections::BTreeMap;

use tcpchat_proto::{RoomName, Stream, MAX_HISTORY_PAGE};

/// The most room positions kept (rooms left long ago are forgotten first).
pub const MAX_ROOM_POSITIONS: usize = 200;

/// The most pages one room's catch-up fetches: the server keeps 2,048 messages of a room by
/// default (`--history-room-cap`), 41 pages of 50. Beyond it the client says that older
/// messages were not fetched.
pub const MAX_CATCHUP_PAGES: u32 = 41;

/// Lines asked for per page: the protocol's maximum.
pub const PAGE: u32 = MAX_HISTORY_PAGE;

/// A stored message's place and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Its offset in its stream.
    pub offset: u64,
    /// When the server accepted it, in milliseconds since the Unix epoch (UTC).
    pub time: u64,
    /// It arrived as it was sent; false for a message caught up after a reconnection or a
    /// restart, or fetched from the history (the plain mode prints the time of those).
    pub live: bool,
    /// Fetched on the user's request (an older page): already read, never unread.
    pub older: bool,
}

/// Where the client stands in one stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    /// The stream's epoch; empty until the server named one.
    pub epoch: String,
    /// The highest offset held (0: none).
    pub top: u64,
    /// The lowest offset held (0: none), for paging further back.
    pub lowest: u64,
}

impl Position {
    /// Whether `offset` is among the lines held.
    fn holds(&self, offset: u64) -> bool {
        self.lowest != 0 && (self.lowest..=self.top).contains(&offset)
    }

    fn hold(&mut self, offset: u64) {
        self.top = self.top.max(offset);
        if self.lowest == 0 || offset < self.lowest {
            self.lowest = offset;
        }
    }
}

/// What a `HISTORY` request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// A room's catch-up after a rejoin: `had` is the highest offset held before it, in
    /// `epoch` (empty: none known); `pages` fetched so far.
    CatchUp { had: u64, epoch: String, pages: u32 },
    /// Older lines the user asked for (scrolling past the top).
    Older,
}

/// A `HISTORY` request waiting for its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub stream: Stream,
    pub before: Option<u64>,
    pub purpose: Purpose,
}

/// A page being received: its `HISTORY-OK` came, `left` lines are still to come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageIn {
    pub request: PageRequest,
    pub epoch: String,
    pub left: u32,
    pub got: u32,
    /// The lowest offset of the page so far.
    pub lowest: Option<u64>,
    /// For an older page: its lines below this are new (the lowest held when the page
    /// came, or the request's `BEFORE`); `None`: all are.
    pub bound: Option<u64>,
}

/// The client's positions in its streams. See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions {
    /// The direct stream (`@`), once an account's login or a restored state named it.
    pub direct: Option<Position>,
    /// Each room's, in no particular order; at most [`MAX_ROOM_POSITIONS`].
    pub rooms: BTreeMap<RoomName, Position>,
    /// Per room being caught up: the first live offset since the rejoin.
    first_live: BTreeMap<RoomName, u64>,
}

impl Positions {
    /// Whether a direct message at `offset` is new, recording it if so.
    pub fn direct_line(&mut self, offset: u64) -> bool {
        let pos = self.direct.get_or_insert_with(Position::default);
        if pos.holds(offset) {
            return false;
        }
        pos.hold(offset);
        true
    }

    /// The login's catch-up said the stream's epoch and top (`RESUME-OK`, `-EXPIRED`):
    /// the client holds everything up to `top`.
    pub fn direct_caught_up(&mut self, epoch: &str, top: u64) {
        let pos = self.direct.get_or_insert_with(Position::default);
        pos.epoch = epoch.to_owned();
        pos.top = pos.top.max(top);
        if pos.lowest == 0 && top > 0 {
            // Everything up to `top` reached a connection of ours, but this run holds none
            // of it: an older page starts just above.
            pos.lowest = top + 1;
        }
    }

    /// `RESUME-EPOCH`: the stream was reset; what the client held means nothing in it.
    pub fn direct_reset(&mut self, epoch: &str) {
        self.direct = Some(Position {
            epoch: epoch.to_owned(),
            ..Position::default()
        });
    }

    /// A live room message at `offset`: whether it is new, recording it if so.
    pub fn room_live(&mut self, room: &RoomName, offset: u64) -> bool {
        if let Some(first) = self.first_live.get_mut(room) {
            if *first == 0 {
                *first = offset;
            }
        }
        let pos = self.room_entry(room);
        if pos.holds(offset) {
            return false;
        }
        pos.hold(offset);
        true
    }

    /// The user is in `room` again: the catch-up that fetches what it missed, if it had
    /// anything there before (else `None`: a first join shows from now on).
    pub fn rejoined(&mut self, room: &RoomName) -> Option<PageRequest> {
        let pos = self.rooms.get(room)?.clone();
        if pos.top == 0 {
            return None;
        }
        self.first_live.insert(room.clone(), 0);
        Some(PageRequest {
            stream: Stream::Room(room.clone()),
            before: None,
            purpose: Purpose::CatchUp {
                had: pos.top,
                epoch: pos.epoch,
                pages: 0,
            },
        })
    }

    /// Older lines of `stream`: the page before the lowest offset held, the newest page when
    /// none is held (a room's history from before the user joined), or `None` when the
    /// lowest held is the stream's first.
    pub fn older(&self, stream: &Stream) -> Option<PageRequest> {
        let lowest = match stream {
            Stream::Direct => self.direct.as_ref().map_or(0, |p| p.lowest),
            Stream::Room(room) => self.rooms.get(room).map_or(0, |p| p.lowest),
        };
        if lowest == 1 {
            return None;
        }
        Some(PageRequest {
            stream: stream.clone(),
            before: (lowest > 1).then_some(lowest),
            purpose: Purpose::Older,
        })
    }

    /// The page answering `request` begins (`HISTORY-OK <stream> <epoch> <top> <n>`).
    pub fn page_start(&self, request: PageRequest, epoch: &str, n: u32) -> PageIn {
        let lowest = match &request.stream {
            Stream::Direct => self.direct.as_ref().map_or(0, |p| p.lowest),
            Stream::Room(room) => self.rooms.get(room).map_or(0, |p| p.lowest),
        };
        let held = (lowest > 0).then_some(lowest);
        let bound = match (request.before, held) {
            (Some(b), Some(h)) => Some(b.min(h)),
            (b, h) => b.or(h),
        };
        PageIn {
            request,
            epoch: epoch.to_owned(),
            left: n.min(PAGE),
            got: 0,
            lowest: None,
            bound,
        }
    }

    /// A line of `page` at `offset`: whether it is new to the client, recording it if so.
    pub fn page_line(&mut self, page: &mut PageIn, offset: u64) -> bool {
        page.left = page.left.saturating_sub(1);
        page.got += 1;
        page.lowest = Some(page.lowest.map_or(offset, |l| l.min(offset)));
        let new = match (&page.request.purpose, &page.request.stream) {
            (Purpose::CatchUp { had, epoch, .. }, Stream::Room(room)) => {
                let same_epoch = epoch.is_empty() || *epoch == page.epoch;
                let first = self.first_live.get(room).copied().unwrap_or(0);
                (!same_epoch || offset > *had) && (first == 0 || offset < first)
            }
            (Purpose::CatchUp { .. }, Stream::Direct) => false,
            (Purpose::Older, _) => page.bound.is_none_or(|b| offset < b),
        };
        if new {
            match &page.request.stream {
                Stream::Direct => self
                    .direct
                    .get_or_insert_with(Position::default)
                    .hold(offset),
                Stream::Room(room) => self.room_entry(room).hold(offset),
            }
        }
        new
    }

    /// The page is complete: the next page of a catch-up, if one is needed; `Err` with
    /// the number of pages when the catch-up stopped at [`MAX_CATCHUP_PAGES`].
    pub fn page_done(&mut self, page: &PageIn) -> Result<Option<PageRequest>, u32> {
        if let Stream::Room(room) = &page.request.stream {
            let pos = self.room_entry(room);
            pos.epoch.clone_from(&page.epoch);
        }
        let Purpose::CatchUp { had, epoch, pages } = &page.request.purpose else {
            return Ok(None);
        };
        let full = page.got >= PAGE;
        let same_epoch = epoch.is_empty() || *epoch == page.epoch;
        let reached = match page.lowest {
            Some(lowest) => same_epoch && lowest <= had + 1,
            None => true,
        };
        if !full || reached || !same_epoch {
            // A reset stream shows its newest page only: what it held means nothing.
            if let Stream::Room(room) = &page.request.stream {
                self.first_live.remove(room);
            }
            return Ok(None);
        }
        if pages + 1 >= MAX_CATCHUP_PAGES {
            if let Stream::Room(room) = &page.request.stream {
                self.first_live.remove(room);
            }
            return Err(pages + 1);
        }
        Ok(Some(PageRequest {
            stream: page.request.stream.clone(),
            before: page.lowest,
            purpose: Purpose::CatchUp {
                had: *had,
                epoch: epoch.clone(),
                pages: pages + 1,
            },
        }))
    }

    /// The catch-up of `room` will not complete (the page was refused, the connection ended).
    pub fn catch_up_abandoned(&mut self, room: &RoomName) {
        self.first_live.remove(room);
    }

    fn room_entry(&mut self, room: &RoomName) -> &mut Position {
        if !self.rooms.contains_key(room) && self.rooms.len() >= MAX_ROOM_POSITIONS {
            // Forget the one with the oldest messages: the least recently active, roughly.
            if let Some(victim) = self
                .rooms
                .iter()
                .filter(|(r, _)| !self.first_live.contains_key(*r))
                .min_by_key(|(_, p)| p.top)
                .map(|(r, _)| r.clone())
            {
                self.rooms.remove(&victim);
            }
        }
        self.rooms.entry(room.clone()).or_default()
    }
}

/// A server time (ms since the Unix epoch) as the user reads it: the local date and time to
/// the second (`2026-12-02 05:30:12`).
pub fn clock(time_ms: u64) -> String {
    let Ok(ms) = i64::try_from(time_ms) else {
        return format!("@{time_ms}");
    };
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        None => format!("@{time_ms}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(s: &str) -> RoomName {
        RoomName::parse(s).expect("valid room")
    }

    fn page(request: PageRequest, epoch: &str, n: u32) -> PageIn {
        PageIn {
            request,
            epoch: epoch.to_owned(),
            left: n,
            got: 0,
            lowest: None,
            bound: None,
        }
    }

    #[test]
    fn a_direct_line_already_held_is_dropped() {
        let mut p = Positions::default();
        assert!(p.direct_line(1));
        assert!(p.direct_line(2));
        assert!(!p.direct_line(2));
        assert!(!p.direct_line(1));
        assert!(p.direct_line(3));
        p.direct_reset("e2");
        assert!(p.direct_line(1), "a reset stream starts again");
    }

    #[test]
    fn a_room_catch_up_pages_back_to_what_it_had_without_duplicate_or_gap() {
        let r = room("#r");
        let mut p = Positions::default();
        for offset in 1..=10 {
            assert!(p.room_live(&r, offset));
        }
        p.rooms.get_mut(&r).expect("held").epoch = "e".into();
        // Reconnected: 10..=130 were said meanwhile, 131 arrives live before the page.
        let request = p.rejoined(&r).expect("a catch-up");
        assert!(p.room_live(&r, 131));
        // The newest page: 82..=131 (131 seen live already).
        let mut first = page(request, "e", PAGE);
        let shown: Vec<u64> = (82..=131).filter(|o| p.page_line(&mut first, *o)).collect();
        assert_eq!(shown, (82..=130).collect::<Vec<_>>());
        let next = p
            .page_done(&first)
            .expect("in bounds")
            .expect("more to fetch");
        assert_eq!(next.before, Some(82));
        let mut second = page(next, "e", PAGE);
        let shown: Vec<u64> = (32..=81).filter(|o| p.page_line(&mut second, *o)).collect();
        assert_eq!(shown, (32..=81).collect::<Vec<_>>());
        let next = p.page_done(&second).expect("in bounds").expect("more");
        let mut third = page(next, "e", PAGE);
        // 1..=31, of which 1..=10 were held.
        let shown: Vec<u64> = (1..=31).filter(|o| p.page_line(&mut third, *o)).collect();
        assert_eq!(shown, (11..=31).collect::<Vec<_>>());
        assert_eq!(p.page_done(&third), Ok(None), "reached what it had");
        assert!(!p.room_live(&r, 131), "the live line is still held once");
        assert!(p.room_live(&r, 132));
    }

    #[test]
    fn a_first_join_fetches_nothing_and_a_reset_room_shows_its_newest_page() {
        let r = room("#r");
        let mut p = Positions::default();
        assert_eq!(p.rejoined(&r), None);
        p.room_live(&r, 500);
        p.rooms.get_mut(&r).expect("held").epoch = "old".into();
        let request = p.rejoined(&r).expect("a catch-up");
        let mut newest = page(request, "new", PAGE);
        let shown = (1..=50).filter(|o| p.page_line(&mut newest, *o)).count();
        assert_eq!(shown, 50, "another epoch: every line is new");
        assert_eq!(p.page_done(&newest), Ok(None));
        assert_eq!(p.rooms[&r].epoch, "new");
    }

    #[test]
    fn a_catch_up_is_bounded() {
        let r = room("#r");
        let mut p = Positions::default();
        p.room_live(&r, 1);
        let mut request = p.rejoined(&r).expect("a catch-up");
        let mut top = 1_000_000;
        for _ in 0..MAX_CATCHUP_PAGES - 1 {
            let mut pg = page(request, "", PAGE);
            for o in (top - 49..=top).rev() {
                p.page_line(&mut pg, o);
            }
            top -= 50;
            request = p.page_done(&pg).expect("in bounds").expect("more");
        }
        let mut last = page(request, "", PAGE);
        for o in top - 49..=top {
            p.page_line(&mut last, o);
        }
        assert_eq!(p.page_done(&last), Err(MAX_CATCHUP_PAGES));
    }

    #[test]
    fn older_lines_are_those_below_the_lowest_held() {
        let r = room("#r");
        let mut p = Positions::default();
        let newest = p.older(&Stream::Room(r.clone())).expect("the newest page");
        assert_eq!(newest.before, None, "nothing held: the newest page");
        p.room_live(&r, 60);
        p.room_live(&r, 61);
        let request = p.older(&Stream::Room(r.clone())).expect("a page");
        assert_eq!(request.before, Some(60));
        let mut pg = p.page_start(request, "e", 3);
        assert!(p.page_line(&mut pg, 57));
        assert!(p.page_line(&mut pg, 58));
        assert!(!p.page_line(&mut pg, 61), "held");
        assert_eq!(p.rooms[&r].lowest, 57);
        p.room_live(&r, 1);
        assert_eq!(p.older(&Stream::Room(r.clone())), None, "the first is held");
        // The newest page of a room joined a moment ago: a live line that came before it is
        // in it too, and shown once.
        let mut joined = Positions::default();
        let newest = joined
            .older(&Stream::Room(r.clone()))
            .expect("the newest page");
        assert!(joined.room_live(&r, 51));
        let mut pg = joined.page_start(newest, "e", PAGE);
        let shown = (2..=51).filter(|o| joined.page_line(&mut pg, *o)).count();
        assert_eq!(shown, 49);
        let mut fresh = Positions::default();
        fresh.direct_caught_up("e", 10);
        let request = fresh.older(&Stream::Direct).expect("a page");
        assert_eq!(request.before, Some(11), "offset 10 itself is fetched too");
        assert!(fresh.direct_line(11));
        let mut many = Positions::default();
        for i in 0..(MAX_ROOM_POSITIONS + 20) {
            many.room_live(&room(&format!("#r{i}")), 1);
        }
        assert!(many.rooms.len() <= MAX_ROOM_POSITIONS);
    }
}
