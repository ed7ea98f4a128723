//! A cap on connections that have not logged in yet.
//!
//! Without it, silent or junk connections from many addresses (each under its per-address
//! limit) could fill the client limit and keep everyone out until their handshake timeouts.
//! With it, they can hold at most the cap, and when the cap is reached a new connection
//! displaces the *oldest* waiting one rather than being refused: a real user, who logs in
//! within moments of connecting, is among the newest and is only displaced if `cap` newer
//! connections arrive before their `HELLO-FROM` does. Refusing the newcomer instead would let
//! a flood that got there first keep every real user out.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::num::NonZeroUsize;

/// Connections waiting to log in, oldest first. `Id` is whatever the caller names
/// connections by (the listener's connection id). The caller reports every connection's
/// arrival, login and close; this only keeps the order and says whom to close.
#[derive(Debug, Clone)]
pub struct PreLoginCap<Id> {
    cap: NonZeroUsize,
    /// Arrival order: a counter that only grows, so ties are impossible.
    next_seq: u64,
    by_age: BTreeMap<u64, Id>,
    seq_of: HashMap<Id, u64>,
}

impl<Id: Copy + Eq + Hash> PreLoginCap<Id> {
    /// At most `cap` connections waiting to log in.
    pub fn new(cap: NonZeroUsize) -> Self {
        Self {
            cap,
            next_seq: 0,
            by_age: BTreeMap::new(),
            seq_of: HashMap::new(),
        }
    }

    /// A connection was accepted and has not logged in. Returns the connection to close to
    /// make room (the oldest waiting one), if the cap was reached; it is no longer tracked.
    /// Never returns `id` itself. An `id` already waiting keeps its place.
    pub fn handle_connect(&mut self, id: Id) -> Option<Id> {
        if self.seq_of.contains_key(&id) {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_age.insert(seq, id);
        self.seq_of.insert(id, seq);
        if self.by_age.len() <= self.cap.get() {
            return None;
        }
        // The cap is at least 1 and `id` is the newest, so the oldest is another connection.
        let (_, oldest) = self.by_age.pop_first()?;
        self.seq_of.remove(&oldest);
        Some(oldest)
    }

    /// `id` logged in: it no longer counts. Returns whether it was waiting.
    pub fn handle_login(&mut self, id: Id) -> bool {
        self.forget(id)
    }

    /// `id` closed before logging in (timeout, error, peer gone). Returns whether it was
    /// waiting; a connection this cap displaced was already forgotten.
    pub fn handle_close(&mut self, id: Id) -> bool {
        self.forget(id)
    }

    /// Connections waiting to log in.
    pub fn len(&self) -> usize {
        self.by_age.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.by_age.is_empty()
    }

    fn forget(&mut self, id: Id) -> bool {
        match self.seq_of.remove(&id) {
            Some(seq) => {
                self.by_age.remove(&seq);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cap(n: usize) -> PreLoginCap<u64> {
        PreLoginCap::new(NonZeroUsize::new(n).expect("non-zero"))
    }

    #[derive(Debug, Clone, Copy)]
    enum Event {
        Connect(u64),
        Login(u64),
        Close(u64),
    }

    /// A name, the cap, what happens, and what each event displaces.
    type Case = (
        &'static str,
        usize,
        &'static [Event],
        &'static [Option<u64>],
    );

    #[test]
    fn displaces_the_oldest_waiting_connection() {
        use Event::*;
        let cases: &[Case] = &[
            (
                "under the cap nobody is displaced",
                3,
                &[Connect(1), Connect(2), Connect(3)],
                &[None, None, None],
            ),
            (
                "at the cap the oldest goes",
                2,
                &[Connect(1), Connect(2), Connect(3), Connect(4)],
                &[None, None, Some(1), Some(2)],
            ),
            (
                "a logged-in connection no longer counts",
                2,
                &[Connect(1), Connect(2), Login(1), Connect(3), Connect(4)],
                &[None, None, None, None, Some(2)],
            ),
            (
                "a closed connection no longer counts",
                2,
                &[Connect(1), Connect(2), Close(2), Connect(3), Connect(4)],
                &[None, None, None, None, Some(1)],
            ),
            (
                "a cap of one keeps only the newest",
                1,
                &[Connect(1), Connect(2), Connect(3)],
                &[None, Some(1), Some(2)],
            ),
            (
                "a repeated id keeps its place",
                2,
                &[Connect(1), Connect(2), Connect(1), Connect(3)],
                &[None, None, None, Some(1)],
            ),
        ];
        for &(name, n, events, want) in cases {
            let mut c = cap(n);
            let got: Vec<Option<u64>> = events
                .iter()
                .map(|e| match *e {
                    Connect(id) => c.handle_connect(id),
                    Login(id) => {
                        c.handle_login(id);
                        None
                    }
                    Close(id) => {
                        c.handle_close(id);
                        None
                    }
                })
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_displaced_connection_closing_later_is_harmless() {
        let mut c = cap(1);
        c.handle_connect(1);
        assert_eq!(c.handle_connect(2), Some(1));
        assert!(!c.handle_close(1), "already forgotten");
        assert_eq!(c.len(), 1);
        assert!(c.handle_login(2));
        assert!(c.is_empty());
    }

    proptest! {
        /// Whatever a flood does, a user who logs in before `cap` newer connections arrive is
        /// never displaced, and the cap is never exceeded.
        #[test]
        fn a_prompt_user_always_gets_in(
            n in 1usize..20,
            flood_before in 0usize..100,
            // Flood connections that arrive between the user's connect and login: fewer than
            // the cap, or the user would rightly be displaced.
            flood_during_frac in 0.0f64..1.0,
            flood_logins in proptest::collection::vec(any::<bool>(), 0..100),
        ) {
            let mut c = cap(n);
            let mut next = 1000u64;
            let mut displaced = Vec::new();
            for i in 0..flood_before {
                next += 1;
                displaced.extend(c.handle_connect(next));
                if flood_logins.get(i).copied().unwrap_or(false) {
                    c.handle_login(next);
                }
                prop_assert!(c.len() <= n);
            }
            let user = 1;
            displaced.extend(c.handle_connect(user));
            let during = ((n - 1) as f64 * flood_during_frac) as usize;
            for _ in 0..during {
                next += 1;
                displaced.extend(c.handle_connect(next));
                prop_assert!(c.len() <= n);
            }
            prop_assert!(!displaced.contains(&user));
            prop_assert!(c.handle_login(user), "still waiting, not displaced");
        }
    }
}
