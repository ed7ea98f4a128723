//! The `accounts` extension's server side: who may send a password, the throttle, the hashing
//! pool and the store, turned into replies (`docs/protocol.md`, "accounts").
//!
//! The session machine only says *what* was asked ([`crate::session::Step`]); this module
//! answers it, off the session because the answers need the store and the hashing pool
//! (both asynchronous). The order of the checks is the point:
//!
//! 1. plain text from a non-loopback address is refused before the password is looked at
//!    ([`passwords_allowed`]);
//! 2. the throttle ([`LoginThrottle`]) before anything costly, so an attempt over budget
//!    costs a hash-map lookup;
//! 3. the store (off the runtime);
//! 4. argon2id on the [`HashPool`]'s own threads; a full queue is `THROTTLED 1`.
//!
//! A store that does not answer is `THROTTLED 1` to an accounts request ("try again later",
//! never a wrong answer) and `BUSY` to a classic login, as when the cluster's Redis is down.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Instant;

use tcpchat_accounts::{AccountStore, HashParams, HashPool, PoolError, Secret, StoreError};
use tcpchat_proto::{Password, Reply, Username};
use tracing::{info, warn};

use crate::limits::{
    throttled_seconds, LoginRate, LoginThrottle, DEFAULT_LOGIN_BURST, DEFAULT_LOGIN_EVERY,
    DEFAULT_LOGIN_NAME_BURST, DEFAULT_LOGIN_NAME_EVERY,
};

/// The accounts settings (`docs/protocol.md`, "Limits and defaults of the extensions").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSettings {
    /// Accept passwords on plain TCP from non-loopback addresses (`allow-plain-passwords`).
    pub allow_plain_passwords: bool,
    /// Password checks per address (`login-burst`, `login-rate`).
    pub per_address: LoginRate,
    /// Wrong passwords per name (`login-name-burst`, `login-name-rate`).
    pub per_name: LoginRate,
    /// Checks that may wait for a hashing thread (`hash-queue`).
    pub hash_queue: usize,
    /// Hashing threads (`hash-threads`).
    pub hash_threads: NonZeroUsize,
}

impl Default for AccountSettings {
    fn default() -> Self {
        let throttle = |burst, every| {
            LoginRate::new(burst, every).unwrap_or(LoginRate {
                burst: std::num::NonZeroU32::MIN,
                every,
            })
        };
        Self {
            allow_plain_passwords: false,
            per_address: throttle(DEFAULT_LOGIN_BURST, DEFAULT_LOGIN_EVERY),
            per_name: throttle(DEFAULT_LOGIN_NAME_BURST, DEFAULT_LOGIN_NAME_EVERY),
            hash_queue: tcpchat_accounts::DEFAULT_HASH_QUEUE,
            hash_threads: HashPool::default_threads(),
        }
    }
}

/// The account store a server uses, if any: without one, `accounts` is not offered.
/// Compared by identity, so a [`crate::Config`] holding one stays comparable.
#[derive(Clone)]
pub struct StoreHandle(pub Arc<dyn AccountStore>);

impl StoreHandle {
    /// Wraps a store.
    pub fn new(store: impl AccountStore) -> Self {
        Self(Arc::new(store))
    }
}

impl fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreHandle")
    }
}

impl PartialEq for StoreHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for StoreHandle {}

/// Whether a password may be sent on this connection: always over TLS or from loopback
/// (127.0.0.0/8, `::1`, and IPv4-mapped loopback); on plain TCP from elsewhere only when the
/// operator allows it, because anyone on the path would read it.
pub fn passwords_allowed(tls: bool, peer: IpAddr, allow_plain: bool) -> bool {
    let loopback = match peer {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    tls || loopback || allow_plain
}

/// Where a password request comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    pub(crate) peer: IpAddr,
    pub(crate) tls: bool,
}

/// The store, the pool and the throttle of one server.
pub(crate) struct AccountService {
    store: Arc<dyn AccountStore>,
    pool: HashPool,
    throttle: LoginThrottle,
    allow_plain: bool,
}

/// What a successful `LOGIN` check lets the connection do: take the name.
pub(crate) type Checked = Result<(), Reply<'static>>;

impl AccountService {
    /// Starts the hashing threads.
    pub(crate) fn start(settings: &AccountSettings, store: &StoreHandle) -> std::io::Result<Self> {
        let pool = HashPool::new(
            settings.hash_threads,
            settings.hash_queue,
            HashParams::default(),
        )?;
        info!(
            threads = settings.hash_threads.get(),
            queue = settings.hash_queue,
            "accounts: hashing pool started"
        );
        Ok(Self {
            store: Arc::clone(&store.0),
            pool,
            throttle: LoginThrottle::new(settings.per_address, settings.per_name),
            allow_plain: settings.allow_plain_passwords,
        })
    }

    /// Whether new connections are offered `accounts` (the store can keep them).
    pub(crate) fn offered(&self) -> bool {
        self.store.offers_accounts()
    }

    /// Whether `HELLO-FROM name` must be refused because `name` is an account.
    pub(crate) async fn is_registered(&self, name: &Username) -> Result<bool, StoreError> {
        self.store.is_registered(name.as_str()).await
    }

    /// The checks before a password is looked at: the connection, then the throttle.
    fn admit(&self, origin: Origin, name: Option<&Username>) -> Checked {
        if !passwords_allowed(origin.tls, origin.peer, self.allow_plain) {
            return Err(Reply::NeedsTls);
        }
        self.throttle
            .attempt(origin.peer, name.map(Username::as_str), Instant::now())
            .map_err(|wait| Reply::Throttled(throttled_seconds(wait)))
    }

    /// Checks `password` against the account `name`, spending the name's budget if wrong.
    /// `Ok`: right, and the account is not locked.
    async fn check(&self, name: &Username, password: &Password<'_>) -> Checked {
        let account = match self.store.get(name.as_str()).await {
            Ok(Some(account)) => account,
            Ok(None) => return Err(Reply::NoAccount),
            Err(e) => return Err(unavailable(&e)),
        };
        if account.locked {
            return Err(Reply::Locked);
        }
        match self
            .pool
            .verify(Secret::new(password.expose()), account.hash)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.throttle.wrong_password(name.as_str(), Instant::now());
                Err(Reply::BadPassword)
            }
            Err(e) => Err(pool_refused(e)),
        }
    }

    /// `LOGIN name password`: `Ok` means the password is right; the caller then takes the
    /// name (closing an earlier session of the account).
    pub(crate) async fn login(
        &self,
        origin: Origin,
        name: &Username,
        password: &Password<'_>,
    ) -> Checked {
        self.admit(origin, Some(name))?;
        self.check(name, password).await
    }

    /// `REGISTER password` from the user logged in as `name`.
    pub(crate) async fn register(
        &self,
        origin: Origin,
        name: &Username,
        password: &Password<'_>,
    ) -> Reply<'static> {
        if let Err(reply) = self.admit(origin, None) {
            return reply;
        }
        match self.store.is_registered(name.as_str()).await {
            Ok(true) => return Reply::NameRegistered,
            Ok(false) => {}
            Err(e) => return unavailable(&e),
        }
        let hash = match self.pool.hash(Secret::new(password.expose())).await {
            Ok(hash) => hash,
            Err(e) => return pool_refused(e),
        };
        match self.store.create(name.as_str(), &hash).await {
            Ok(true) => {
                info!(%name, "account registered");
                Reply::RegisterOk
            }
            Ok(false) => Reply::NameRegistered,
            Err(e) => unavailable(&e),
        }
    }

    /// `PASSWORD old new` from the user logged in as `name`.
    pub(crate) async fn change_password(
        &self,
        origin: Origin,
        name: &Username,
        old: &Password<'_>,
        new: &Password<'_>,
    ) -> Reply<'static> {
        if let Err(reply) = self.admit(origin, Some(name)) {
            return reply;
        }
        if let Err(reply) = self.check(name, old).await {
            return reply;
        }
        let hash = match self.pool.hash(Secret::new(new.expose())).await {
            Ok(hash) => hash,
            Err(e) => return pool_refused(e),
        };
        match self.store.set_password(name.as_str(), &hash).await {
            Ok(true) => {
                info!(%name, "account password changed");
                Reply::PasswordOk
            }
            Ok(false) => Reply::NoAccount,
            Err(e) => unavailable(&e),
        }
    }

    /// `UNREGISTER password` from the user logged in as `name`.
    pub(crate) async fn unregister(
        &self,
        origin: Origin,
        name: &Username,
        password: &Password<'_>,
    ) -> Reply<'static> {
        if let Err(reply) = self.admit(origin, Some(name)) {
            return reply;
        }
        if let Err(reply) = self.check(name, password).await {
            return reply;
        }
        match self.store.delete(name.as_str()).await {
            Ok(true) => {
                info!(%name, "account deleted by its owner");
                Reply::UnregisterOk
            }
            Ok(false) => Reply::NoAccount,
            Err(e) => unavailable(&e),
        }
    }
}

/// The store failed: "try again later".
fn unavailable(e: &StoreError) -> Reply<'static> {
    warn!(error = %e, "account store unavailable; answering THROTTLED 1");
    Reply::Throttled(1)
}

fn pool_refused(e: PoolError) -> Reply<'static> {
    if e == PoolError::Unavailable {
        warn!("hashing pool unavailable; answering THROTTLED 1");
    }
    Reply::Throttled(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn passwords_need_tls_or_loopback_unless_allowed() {
        for loopback in ["127.0.0.1", "127.9.8.7", "::1", "::ffff:127.0.0.1"] {
            assert!(passwords_allowed(false, ip(loopback), false), "{loopback}");
        }
        for remote in [
            "192.0.2.1",
            "10.0.0.1",
            "2001:db8::1",
            "::ffff:192.0.2.1",
            "0.0.0.0",
        ] {
            assert!(!passwords_allowed(false, ip(remote), false), "{remote}");
            assert!(passwords_allowed(true, ip(remote), false), "TLS: {remote}");
            assert!(
                passwords_allowed(false, ip(remote), true),
                "allowed: {remote}"
            );
        }
    }
}
