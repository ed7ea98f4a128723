//! The abuse limits wired into the server: who is let in, who is displaced, and each
//! connection's command rate. The rules are [`crate::limits`]'; this is the shared state
//! around them and the little glue the listener and the connection task call.
//!
//! - The listener calls [`Admission::admit`] for every accepted connection, after the client
//!   limit: a refusal is answered `BUSY` exactly as a full server is, and logged at info at
//!   most once a minute per address ([`crate::limits::Refused::log`]).
//! - The connection task holds the [`Slot`] it is given for its whole life: the client-limit
//!   permit, the per-address ticket and its place in the pre-login queue all go back when it
//!   drops, however the connection ends.
//! - At the pre-login cap, a new connection displaces the oldest one still waiting to log in:
//!   `BUSY` is queued on that one's [`Outbox`] and the outbox is evicted, so its own task
//!   writes `BUSY` and closes, the same path as a hub eviction. A connection that is displaced
//!   while its `HELLO-FROM` is on the way finds out in [`Slot::leave_prelogin`] and does not
//!   log in.
//!
//! Exempt networks skip all of it: no address count, no pre-login place, no command rate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tcpchat_proto::Reply;
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use crate::config::Config;
use crate::limits::{AddressLimiter, AddressTicket, PreLoginCap, Refused, TokenBucket};
use crate::outbox::Outbox;

/// The limits' shared state, one per server.
pub(crate) struct Admission {
    /// `None` when both per-address limits are off: no table of addresses is kept at all
    /// (it would cost every connection's address an entry for nothing).
    addresses: Option<AddressLimiter>,
    /// For exemption when there is no address table.
    limits: crate::limits::Limits,
    prelogin: Option<Arc<Mutex<Waiting>>>,
    command_rate: Option<crate::limits::CommandRate>,
}

/// Connections waiting to log in: their order, and how to tell each one to go.
struct Waiting {
    cap: PreLoginCap<u64>,
    outboxes: HashMap<u64, Arc<Outbox>>,
}

impl Admission {
    pub(crate) fn new(config: &Config) -> Self {
        let limits = &config.limits;
        Self {
            addresses: (limits.max_per_address.is_some() || limits.connect_rate.is_some())
                .then(|| AddressLimiter::new(limits)),
            limits: limits.clone(),
            prelogin: config.prelogin_cap().map(|cap| {
                Arc::new(Mutex::new(Waiting {
                    cap: PreLoginCap::new(cap),
                    outboxes: HashMap::new(),
                }))
            }),
            command_rate: limits.command_rate,
        }
    }

    /// A connection from `ip` got a client slot (`permit`) at `now`: admit it under the
    /// per-address limits, or say why not (the caller answers `BUSY`).
    pub(crate) fn admit(
        &self,
        ip: IpAddr,
        permit: OwnedSemaphorePermit,
        now: Instant,
    ) -> Result<Slot, Refused> {
        let (ticket, exempt) = match &self.addresses {
            Some(addresses) => {
                let ticket = addresses.try_admit(ip, now)?;
                let exempt = ticket.is_exempt();
                (Some(ticket), exempt)
            }
            None => (None, self.limits.is_exempt(ip)),
        };
        Ok(Slot {
            _permit: permit,
            _ticket: ticket,
            exempt,
            waiting: None,
        })
    }

    /// The connection `id` holding `slot` has its outbox: put it in the pre-login queue,
    /// displacing the oldest waiting connection if the queue is full.
    pub(crate) fn enter_prelogin(&self, slot: &mut Slot, id: u64, outbox: &Arc<Outbox>) {
        let Some(prelogin) = self.prelogin.as_ref().filter(|_| !slot.exempt) else {
            return;
        };
        let mut waiting = prelogin.lock().unwrap_or_else(PoisonError::into_inner);
        waiting.outboxes.insert(id, Arc::clone(outbox));
        if let Some(oldest) = waiting.cap.handle_connect(id) {
            if let Some(displaced) = waiting.outboxes.remove(&oldest) {
                debug!(
                    id = oldest,
                    "pre-login cap reached: displacing the oldest waiting connection"
                );
                // A full outbox already refuses; eviction ends the connection either way.
                displaced.push_with(|buf| Reply::Busy.encode(buf)).ok();
                displaced.evict();
            }
        }
        drop(waiting);
        slot.waiting = Some((Arc::clone(prelogin), id));
    }

    /// The command-rate state for a new connection, `None` if the rate is off or the
    /// connection exempt.
    pub(crate) fn command_bucket(&self, slot: &Slot, now: Instant) -> Option<TokenBucket> {
        self.command_rate
            .filter(|_| !slot.exempt)
            .map(|rate| TokenBucket::new(rate, now))
    }
}

/// One connection's share of the limits, given back when it drops.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    _ticket: Option<AddressTicket>,
    exempt: bool,
    /// Its place in the pre-login queue, until it logs in or closes.
    waiting: Option<(Arc<Mutex<Waiting>>, u64)>,
}

impl Slot {
    /// Whether a login may go ahead: `false` if the connection was displaced (its outbox
    /// already holds `BUSY` and is evicted). It stays in the pre-login queue while the hub
    /// decides, so a name refused with `IN-USE` keeps counting against the cap.
    pub(crate) fn may_log_in(&self) -> bool {
        match &self.waiting {
            Some((prelogin, id)) => prelogin
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .outboxes
                .contains_key(id),
            None => true,
        }
    }

    /// The connection logged in: it no longer counts against the pre-login cap. Returns
    /// `false` if it was displaced meanwhile (while the hub was deciding): it must not stay
    /// logged in.
    pub(crate) fn leave_prelogin(&mut self) -> bool {
        match self.waiting.take() {
            Some((prelogin, id)) => {
                let mut waiting = prelogin.lock().unwrap_or_else(PoisonError::into_inner);
                waiting.outboxes.remove(&id);
                waiting.cap.handle_login(id)
            }
            None => true,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((prelogin, id)) = self.waiting.take() {
            let mut waiting = prelogin.lock().unwrap_or_else(PoisonError::into_inner);
            waiting.outboxes.remove(&id);
            waiting.cap.handle_close(id);
        }
    }
}
