//! The conversation model: what the user reads, kept apart from the protocol.
//!
//! [`Conversations`] holds the status buffer and one buffer per peer, each with its history
//! and unread count, which one is open, and the latest arrival elsewhere (for a notice where
//! the user is looking). It knows nothing of requests, replies or connections: the
//! [`crate::Client`] glue turns the session's events into entries here, the way tiny's TUI
//! keeps tabs apart from `libtiny_client`. A message's delivery state is mirrored in its entry
//! from those events; the message itself belongs to the session's store, so closing (or
//! evicting) a conversation never loses a message that is still queued.
//!
//! Everything is bounded, so a server that floods `DELIVERY`s from ever new names cannot grow
//! the client without limit: at most [`MAX_CONVERSATIONS`] buffers (the oldest one without
//! unread messages is evicted to make room), and per buffer at most [`MAX_HISTORY_ENTRIES`]
//! entries and [`MAX_HISTORY_BYTES`] of text (the oldest entries go first; the newest entry is
//! always kept, and one line is at most [`crate::MAX_SERVER_LINE_BYTES`]).
//!
//! Pure like the session: time comes in as `now`, nothing is read or written.

use std::collections::VecDeque;
use std::time::Instant;

use tcpchat_proto::{RoomName, Username};

use crate::history::Stamp;
use crate::session::{Delivery, MsgId};

/// The most conversations kept, the status buffer included.
pub const MAX_CONVERSATIONS: usize = 100;

/// The most entries one conversation keeps.
pub const MAX_HISTORY_ENTRIES: usize = 1000;

/// The most text (in bytes, summed over its entries) one conversation keeps.
pub const MAX_HISTORY_BYTES: usize = 256 * 1024;

/// How much of a message an arrival notice quotes, in characters.
pub const PREVIEW_CHARS: usize = 40;

/// The most members a room's conversation keeps (a server allows 1,000 by default): only
/// bounds what a hostile server can make the client hold.
pub const MAX_KNOWN_MEMBERS: usize = 10_000;

/// A conversation: with a peer, in a room, or the status buffer for everything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Status,
    Peer(Username),
    Room(RoomName),
}

/// One conversation's history and unread count.
#[derive(Debug, Clone)]
pub struct Buffer {
    pub target: Target,
    /// Oldest first; see [`MAX_HISTORY_ENTRIES`].
    pub entries: VecDeque<Entry>,
    /// Messages received while another conversation was open.
    pub unread: usize,
    /// A room's topic as last seen (`None`: none, or not a room).
    pub topic: Option<String>,
    /// A room's members as last seen (`MEMBERS-OK`, then `JOINED`, `PARTED`, `KICKED`):
    /// empty when not in the room. At most [`MAX_KNOWN_MEMBERS`].
    pub members: Vec<Username>,
    /// Whether older lines are being fetched from the server, or there are none.
    pub older: Older,
    /// The text held by `entries`, for [`MAX_HISTORY_BYTES`].
    text_bytes: usize,
    /// Unread lines of a previous run that are not held here (a restored state).
    unseen: usize,
}

/// What is known of the lines before a conversation's first (`history`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Older {
    /// Nothing asked yet: scrolling past the top asks the server.
    #[default]
    Unknown,
    /// Asked, the page is on its way ("loading older…").
    Loading,
    /// The server keeps nothing older ("beginning of history").
    Beginning,
}

impl Buffer {
    fn new(target: Target) -> Self {
        Self {
            target,
            entries: VecDeque::new(),
            unread: 0,
            topic: None,
            members: Vec::new(),
            older: Older::Unknown,
            text_bytes: 0,
            unseen: 0,
        }
    }

    /// The bytes of text this conversation holds.
    pub fn text_bytes(&self) -> usize {
        self.text_bytes
    }
}

/// One line of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub at: Instant,
    pub kind: EntryKind,
    /// Its place in its stream and its server time, when it was stored (`history`).
    pub stamp: Option<Stamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Incoming {
        from: Username,
        text: String,
    },
    Outgoing {
        id: MsgId,
        text: String,
        state: Delivery,
    },
    Notice(String),
}

impl EntryKind {
    fn text_bytes(&self) -> usize {
        match self {
            Self::Incoming { text, .. } | Self::Outgoing { text, .. } | Self::Notice(text) => {
                text.len()
            }
        }
    }
}

/// A message that arrived in a conversation other than the open one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub from: Username,
    /// The start of the message, at most [`PREVIEW_CHARS`] characters, `…` when cut.
    pub preview: String,
}

/// The conversations. See the module documentation.
#[derive(Debug, Clone)]
pub struct Conversations {
    buffers: Vec<Buffer>,
    open: usize,
    arrival: Option<Arrival>,
}

impl Default for Conversations {
    fn default() -> Self {
        Self::new()
    }
}

impl Conversations {
    /// Only the status buffer, open.
    pub fn new() -> Self {
        Self {
            buffers: vec![Buffer::new(Target::Status)],
            open: 0,
            arrival: None,
        }
    }

    /// The conversations, the status buffer first, then in the order they were opened.
    pub fn buffers(&self) -> &[Buffer] {
        &self.buffers
    }

    /// The index in [`Conversations::buffers`] of the open conversation.
    pub fn open_index(&self) -> usize {
        self.open
    }

    pub fn open_buffer(&self) -> &Buffer {
        &self.buffers[self.open]
    }

    /// The latest message that arrived elsewhere, until its conversation is opened.
    pub fn arrival(&self) -> Option<&Arrival> {
        self.arrival.as_ref()
    }

    /// Opens conversation `index` (clamped) and clears its unread count.
    pub fn select(&mut self, index: usize) {
        self.open = index.min(self.buffers.len() - 1);
        let buffer = &mut self.buffers[self.open];
        buffer.unread = 0;
        buffer.unseen = 0;
        if let (Some(arrival), Target::Peer(peer)) = (&self.arrival, &buffer.target) {
            if arrival.from == *peer {
                self.arrival = None;
            }
        }
    }

    /// Opens the conversation with `peer`, creating it if needed.
    pub fn open_peer(&mut self, peer: &Username) {
        let index = self.peer_index(peer);
        self.select(index);
    }

    /// Closes the open conversation (not the status buffer). Its messages still waiting for
    /// the server are the session's and go on; their outcome is told in the status buffer.
    pub fn close_open(&mut self) {
        if self.open == 0 {
            return;
        }
        let closed = self.buffers.remove(self.open);
        self.forget_arrival(&closed.target);
        self.select(self.open - 1);
    }

    /// A message from `from`: appended to its conversation (created if needed), counted as
    /// unread and noted as the latest arrival unless that conversation is open.
    pub fn incoming(&mut self, from: &Username, text: &str, now: Instant) {
        self.incoming_at(from, text, None, now);
    }

    /// [`Conversations::incoming`] with the message's stamp: a line caught up or fetched
    /// from the history takes its place by offset among the lines already held.
    pub fn incoming_at(&mut self, from: &Username, text: &str, stamp: Option<Stamp>, now: Instant) {
        let index = self.peer_index(from);
        self.push_at(
            index,
            now,
            EntryKind::Incoming {
                from: from.clone(),
                text: text.to_owned(),
            },
            stamp,
        );
        // An older page is history the user asked for, not news.
        if index != self.open && !stamp.is_some_and(|s| s.older) {
            let buffer = &mut self.buffers[index];
            buffer.unread = (buffer.unread + 1).min(buffer.entries.len() + buffer.unseen);
            self.arrival = Some(Arrival {
                from: from.clone(),
                preview: preview(text),
            });
        }
    }

    /// A message the user sent, in the conversation with `to` (created if needed).
    pub fn outgoing(&mut self, to: &Username, id: MsgId, text: &str, now: Instant) {
        let index = self.peer_index(to);
        self.push(
            index,
            now,
            EntryKind::Outgoing {
                id,
                text: text.to_owned(),
                state: Delivery::Queued,
            },
        );
    }

    /// Sets the state of message `id` to `to`. Returns false when it is no longer shown
    /// (its conversation was closed or evicted, or the entry aged out of the history).
    pub fn set_state(&mut self, to: &Username, id: MsgId, state: Delivery) -> bool {
        let Some(buffer) = self.find_mut(to) else {
            return false;
        };
        buffer
            .entries
            .iter_mut()
            .rev()
            .find_map(|e| match &mut e.kind {
                EntryKind::Outgoing {
                    id: i, state: s, ..
                } if *i == id => {
                    *s = state;
                    Some(())
                }
                _ => None,
            })
            .is_some()
    }

    /// Opens the conversation of `room`, creating it if needed.
    pub fn open_room(&mut self, room: &RoomName) {
        let index = self.target_index(Target::Room(room.clone()));
        self.select(index);
    }

    /// A message the user typed in `room`, shown at once as [`Delivery::Sending`] until the
    /// room's echo places it ([`Conversations::room_echo`]).
    pub fn room_outgoing(&mut self, room: &RoomName, id: MsgId, text: &str, now: Instant) {
        let index = self.target_index(Target::Room(room.clone()));
        self.push(
            index,
            now,
            EntryKind::Outgoing {
                id,
                text: text.to_owned(),
                state: Delivery::Sending,
            },
        );
    }

    /// The user's own message came back from `room` (`SAID` with the user's name): the
    /// oldest unconfirmed entry of that text moves to where the room's order put it, the
    /// end, and is delivered: every member got it. Without one (the conversation was
    /// closed meanwhile) the message is added as delivered, with `fallback` as its id.
    pub fn room_echo(
        &mut self,
        room: &RoomName,
        text: &str,
        fallback: MsgId,
        stamp: Option<Stamp>,
        now: Instant,
    ) {
        let index = self.target_index(Target::Room(room.clone()));
        let buffer = &mut self.buffers[index];
        let waiting = buffer.entries.iter().position(|e| {
            matches!(&e.kind, EntryKind::Outgoing { text: t, state: Delivery::Sending, .. } if t == text)
        });
        let id = match waiting.and_then(|i| buffer.entries.remove(i)) {
            Some(entry) => {
                buffer.text_bytes -= entry.kind.text_bytes();
                match entry.kind {
                    EntryKind::Outgoing { id, .. } => id,
                    _ => fallback,
                }
            }
            None => fallback,
        };
        buffer.unread = buffer.unread.min(buffer.entries.len());
        self.push_at(
            index,
            now,
            EntryKind::Outgoing {
                id,
                text: text.to_owned(),
                state: Delivery::Delivered,
            },
            stamp,
        );
    }

    /// One of the user's own room messages that came from the history (a catch-up or an
    /// older page): shown as sent, in its place by offset.
    pub fn room_sent_earlier(
        &mut self,
        room: &RoomName,
        id: MsgId,
        text: &str,
        stamp: Option<Stamp>,
        now: Instant,
    ) {
        let index = self.target_index(Target::Room(room.clone()));
        self.push_at(
            index,
            now,
            EntryKind::Outgoing {
                id,
                text: text.to_owned(),
                state: Delivery::Delivered,
            },
            stamp,
        );
    }

    /// The user's message to `room` was not taken: the oldest unconfirmed entry of that
    /// text says why. Returns false when it is no longer shown.
    pub fn room_refused(&mut self, room: &RoomName, text: &str, why: Delivery) -> bool {
        let target = Target::Room(room.clone());
        let Some(buffer) = self.buffers.iter_mut().find(|b| b.target == target) else {
            return false;
        };
        buffer
            .entries
            .iter_mut()
            .find_map(|e| match &mut e.kind {
                EntryKind::Outgoing {
                    text: t, state: s, ..
                } if t == text && *s == Delivery::Sending => {
                    *s = why;
                    Some(())
                }
                _ => None,
            })
            .is_some()
    }

    /// `room`'s members, as `MEMBERS-OK` listed them (if it has a conversation).
    pub fn set_members(&mut self, room: &RoomName, names: &[Username]) {
        if let Some(b) = self.room_mut(room) {
            b.members = names.iter().take(MAX_KNOWN_MEMBERS).cloned().collect();
        }
    }

    /// `name` joined `room`.
    pub fn member_joined(&mut self, room: &RoomName, name: &Username) {
        if let Some(b) = self.room_mut(room) {
            if !b.members.contains(name) && b.members.len() < MAX_KNOWN_MEMBERS {
                b.members.push(name.clone());
            }
        }
    }

    /// `name` left `room` (or was removed); the user leaving empties the list.
    pub fn member_left(&mut self, room: &RoomName, name: &Username, me: bool) {
        if let Some(b) = self.room_mut(room) {
            if me {
                b.members.clear();
            } else {
                b.members.retain(|n| n != name);
            }
        }
    }

    /// The connection ended: no room's members are known any more.
    pub fn forget_members(&mut self) {
        for b in &mut self.buffers {
            b.members.clear();
        }
    }

    fn room_mut(&mut self, room: &RoomName) -> Option<&mut Buffer> {
        self.buffers
            .iter_mut()
            .find(|b| matches!(&b.target, Target::Room(r) if r == room))
    }

    /// A message from someone else in `room` (created if needed): counted as unread unless
    /// that conversation is open.
    pub fn room_message(
        &mut self,
        room: &RoomName,
        from: &Username,
        text: &str,
        stamp: Option<Stamp>,
        now: Instant,
    ) {
        let index = self.target_index(Target::Room(room.clone()));
        self.push_at(
            index,
            now,
            EntryKind::Incoming {
                from: from.clone(),
                text: text.to_owned(),
            },
            stamp,
        );
        if index != self.open && !stamp.is_some_and(|s| s.older) {
            let buffer = &mut self.buffers[index];
            buffer.unread = (buffer.unread + 1).min(buffer.entries.len() + buffer.unseen);
        }
    }

    /// A remark in the conversation of `room`, created if `create` (else only if there is
    /// one; returns whether it was shown).
    pub fn room_notice(&mut self, room: &RoomName, text: &str, create: bool, now: Instant) -> bool {
        let target = Target::Room(room.clone());
        let index = match self.buffers.iter().position(|b| b.target == target) {
            Some(i) => i,
            None if create => self.target_index(target),
            None => return false,
        };
        self.push(index, now, EntryKind::Notice(text.to_owned()));
        true
    }

    /// Records `room`'s topic, if it has a conversation.
    pub fn set_topic(&mut self, room: &RoomName, topic: Option<String>) {
        let target = Target::Room(room.clone());
        if let Some(b) = self.buffers.iter_mut().find(|b| b.target == target) {
            b.topic = topic;
        }
    }

    /// A remark in the open conversation.
    pub fn notice(&mut self, text: &str, now: Instant) {
        self.push(self.open, now, EntryKind::Notice(text.to_owned()));
    }

    /// A remark in the status buffer.
    pub fn status_notice(&mut self, text: &str, now: Instant) {
        self.push(0, now, EntryKind::Notice(text.to_owned()));
    }

    /// A remark in the conversation with `peer`, if there is one.
    pub fn peer_notice(&mut self, peer: &Username, text: &str, now: Instant) {
        if let Some(i) = self.position(peer) {
            self.push(i, now, EntryKind::Notice(text.to_owned()));
        }
    }

    fn position(&self, peer: &Username) -> Option<usize> {
        self.buffers
            .iter()
            .position(|b| matches!(&b.target, Target::Peer(p) if p == peer))
    }

    fn find_mut(&mut self, peer: &Username) -> Option<&mut Buffer> {
        let i = self.position(peer)?;
        Some(&mut self.buffers[i])
    }

    fn forget_arrival(&mut self, target: &Target) {
        if let (Some(arrival), Target::Peer(peer)) = (&self.arrival, target) {
            if arrival.from == *peer {
                self.arrival = None;
            }
        }
    }

    /// The index of the conversation with `peer`, created (evicting one if full) if needed.
    fn peer_index(&mut self, peer: &Username) -> usize {
        self.target_index(Target::Peer(peer.clone()))
    }

    /// The index of `target`'s conversation, created (evicting one if full) if needed.
    fn target_index(&mut self, target: Target) -> usize {
        if let Some(i) = self.buffers.iter().position(|b| b.target == target) {
            return i;
        }
        if self.buffers.len() >= MAX_CONVERSATIONS {
            // The oldest conversation nobody is looking at, preferably one already read.
            let candidates = || (1..self.buffers.len()).filter(|&i| i != self.open);
            let victim = candidates()
                .find(|&i| self.buffers[i].unread == 0)
                .or_else(|| candidates().next());
            if let Some(victim) = victim {
                let gone = self.buffers.remove(victim);
                self.forget_arrival(&gone.target);
                if victim < self.open {
                    self.open -= 1;
                }
            }
        }
        self.buffers.push(Buffer::new(target));
        self.buffers.len() - 1
    }

    /// What is known of `target`'s older lines (if it has a conversation).
    pub fn set_older(&mut self, target: &Target, older: Older) {
        if let Some(b) = self.buffers.iter_mut().find(|b| b.target == *target) {
            b.older = older;
        }
    }

    /// The conversations' targets with their unread counts (for the state file).
    pub fn unread_counts(&self) -> Vec<(Target, usize)> {
        self.buffers
            .iter()
            .skip(1)
            .map(|b| (b.target.clone(), b.unread))
            .collect()
    }

    /// Opens no conversation but makes `target`'s exist with `unread` unread lines (a
    /// restored state; the lines come back from the server). The status buffer stays open.
    pub fn restore(&mut self, target: Target, unread: usize) {
        if target == Target::Status {
            return;
        }
        let index = self.target_index(target);
        let unread = unread.min(MAX_HISTORY_ENTRIES);
        self.buffers[index].unread = unread;
        self.buffers[index].unseen = unread;
    }

    fn push(&mut self, index: usize, at: Instant, kind: EntryKind) {
        self.push_at(index, at, kind, None);
    }

    /// Appends a line; one that was not live goes before the first line with a higher
    /// offset, so a conversation stays in its stream's order whatever order pages come in.
    fn push_at(&mut self, index: usize, at: Instant, kind: EntryKind, stamp: Option<Stamp>) {
        let buffer = &mut self.buffers[index];
        buffer.text_bytes += kind.text_bytes();
        let place = match stamp {
            Some(s) if !s.live => buffer
                .entries
                .iter()
                .position(|e| e.stamp.is_some_and(|o| o.offset > s.offset)),
            _ => None,
        };
        let entry = Entry { at, kind, stamp };
        match place {
            Some(i) => buffer.entries.insert(i, entry),
            None => buffer.entries.push_back(entry),
        }
        while buffer.entries.len() > MAX_HISTORY_ENTRIES
            || (buffer.text_bytes > MAX_HISTORY_BYTES && buffer.entries.len() > 1)
        {
            if let Some(old) = buffer.entries.pop_front() {
                buffer.text_bytes -= old.kind.text_bytes();
            }
        }
        buffer.unread = buffer.unread.min(buffer.entries.len() + buffer.unseen);
    }
}

fn preview(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(PREVIEW_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Username {
        Username::parse(s).expect("test name is valid")
    }

    #[test]
    fn a_flood_of_messages_from_new_names_stays_bounded() {
        let now = Instant::now();
        let mut c = Conversations::new();
        c.open_peer(&name("friend"));
        let body = "x".repeat(4000);
        for i in 0..(MAX_CONVERSATIONS * 3) {
            let from = name(&format!("flood{i}"));
            for _ in 0..50 {
                c.incoming(&from, &body, now);
            }
        }
        for i in 0..(MAX_HISTORY_ENTRIES * 2) {
            c.incoming(&name("flood0"), &format!("{i}"), now);
        }
        assert_eq!(c.buffers().len(), MAX_CONVERSATIONS);
        assert_eq!(
            c.open_buffer().target,
            Target::Peer(name("friend")),
            "the open conversation is never evicted"
        );
        for b in c.buffers() {
            assert!(b.entries.len() <= MAX_HISTORY_ENTRIES, "{:?}", b.target);
            assert!(b.text_bytes() <= MAX_HISTORY_BYTES, "{:?}", b.target);
            assert!(b.unread <= b.entries.len());
            let counted: usize = b.entries.iter().map(|e| e.kind.text_bytes()).sum();
            assert_eq!(counted, b.text_bytes());
        }
    }

    #[test]
    fn one_huge_entry_is_kept_alone() {
        let now = Instant::now();
        let mut c = Conversations::new();
        c.incoming(&name("bob"), "small", now);
        c.incoming(&name("bob"), &"y".repeat(MAX_HISTORY_BYTES + 1), now);
        assert_eq!(c.buffers()[1].entries.len(), 1);
    }

    #[test]
    fn read_conversations_are_evicted_before_unread_ones() {
        let now = Instant::now();
        let mut c = Conversations::new();
        c.incoming(&name("unread"), "hi", now);
        for i in 0..(MAX_CONVERSATIONS - 2) {
            let peer = name(&format!("read{i}"));
            c.open_peer(&peer);
        }
        c.select(0);
        c.incoming(&name("newcomer"), "hello", now);
        let names: Vec<&Target> = c.buffers().iter().map(|b| &b.target).collect();
        assert!(names.contains(&&Target::Peer(name("unread"))));
        assert!(!names.contains(&&Target::Peer(name("read0"))));
        assert!(names.contains(&&Target::Peer(name("newcomer"))));
    }

    #[test]
    fn an_arrival_elsewhere_is_noted_until_its_conversation_opens() {
        let now = Instant::now();
        let mut c = Conversations::new();
        c.open_peer(&name("bob"));
        c.incoming(&name("bob"), "seen here", now);
        assert_eq!(c.arrival(), None);
        let long = "a message much longer than the preview can show in full";
        c.incoming(&name("carol"), long, now);
        let arrival = c.arrival().expect("an arrival");
        assert_eq!(arrival.from, name("carol"));
        assert_eq!(arrival.preview.chars().count(), PREVIEW_CHARS + 1);
        assert!(arrival.preview.ends_with('…'));
        c.select(2);
        assert_eq!(c.arrival(), None);
    }
}
