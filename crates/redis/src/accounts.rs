//! [`RedisAccounts`]: a cluster's accounts, in the Redis its nodes already share.
//!
//! Why Redis and not a SQL server (the trade-off is in `docs/cluster.md`): the cluster
//! already depends on it, so accounts add no new service to run, secure and monitor; every
//! node sees a registration at once; the operations are single-key reads and writes. What
//! Redis does not give by default is durability, so it is **required**: a node checks at
//! start (`CONFIG GET appendonly` / `CONFIG GET save`) and offers `accounts` only when Redis
//! persists its data ([`Persistence`]). Registered names are protected either way: the store
//! is consulted on every `HELLO-FROM` whatever the check said.
//!
//! Keys (beside the cluster's own, listed in `scripts.rs`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `tcpchat:account:{name}` | hash | `hash` (PHC string), `locked` (0/1), `created_at`, `password_changed_at` (Unix seconds) |
//! | `tcpchat:accounts` | set | every account's name, for `tcpchat accounts list` |
//!
//! Each write to an account is one single-key script, so "create if absent" is atomic across
//! nodes: two nodes registering one name at once, one wins. The set is an index for listing,
//! written right after (an account and the set are in different slots of a Redis Cluster):
//! a node that dies between the two leaves an account that works but is not listed until it
//! is written again; listing skips names whose account is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redis::Script;
use tcpchat_accounts::{unix_now, Account, AccountStore, StoreError, StoreFuture};
use tracing::{info, warn};

use crate::store::Store;
use crate::{ClusterConfig, ClusterError, ClusterMetrics};

const ACCOUNTS: &str = "tcpchat:accounts";

/// How often a node asks again while Redis has not confirmed persistence.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) fn key(name: &str) -> String {
    format!("tcpchat:account:{name}")
}

/// What Redis said about keeping its data across a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persistence {
    /// AOF on (`appendonly yes`), or RDB snapshots configured (`save` not empty).
    Durable(String),
    /// Neither: a restart loses every account.
    None,
    /// `CONFIG GET` refused or failed (managed Redis often disables CONFIG): unknown.
    Unknown(String),
}

/// The cluster's account store. Cheap to clone.
#[derive(Clone)]
pub struct RedisAccounts {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Accounts are offered on new connections only once persistence was confirmed.
    durable: AtomicBool,
    scripts: Scripts,
}

struct Scripts {
    get: Script,
    create: Script,
    set_password: Script,
    set_locked: Script,
    delete: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            get: Script::new(
                "return redis.call('HMGET', KEYS[1], 'hash', 'locked', 'created_at', 'password_changed_at')",
            ),
            create: Script::new(
                "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
                 redis.call('HSET', KEYS[1], 'hash', ARGV[1], 'locked', '0',
                            'created_at', ARGV[2], 'password_changed_at', ARGV[2])
                 return 1",
            ),
            set_password: Script::new(
                "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
                 redis.call('HSET', KEYS[1], 'hash', ARGV[1], 'password_changed_at', ARGV[2])
                 return 1",
            ),
            set_locked: Script::new(
                "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
                 redis.call('HSET', KEYS[1], 'locked', ARGV[1])
                 return 1",
            ),
            delete: Script::new("return redis.call('DEL', KEYS[1])"),
        }
    }
}

impl std::fmt::Debug for RedisAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAccounts").finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisAccounts {
    /// A store on the cluster's Redis (its URL, password and TLS settings, as the hub
    /// reaches it). Connects lazily (the first call), like the hub.
    ///
    /// # Errors
    /// [`ClusterError::InvalidUrl`] if the URL is not a `redis://` or `rediss://` URL,
    /// [`ClusterError::Tls`] if its TLS settings do not load.
    pub async fn connect(cluster: &ClusterConfig) -> Result<Self, ClusterError> {
        let client = cluster.client()?;
        Ok(Self {
            inner: Arc::new(Inner {
                store: Store::new(client, cluster.call_timeout, ClusterMetrics::off()),
                durable: AtomicBool::new(false),
                scripts: Scripts::new(),
            }),
        })
    }

    /// Asks Redis whether it persists its data.
    pub async fn persistence(&self) -> Persistence {
        let get = |param: &str| {
            let mut cmd = redis::cmd("CONFIG");
            cmd.arg("GET").arg(param);
            cmd
        };
        let aof: Result<Vec<String>, _> = self.inner.store.query(&get("appendonly")).await;
        let save: Result<Vec<String>, _> = self.inner.store.query(&get("save")).await;
        match (aof, save) {
            (Ok(aof), Ok(save)) => {
                let aof_on = aof.get(1).is_some_and(|v| v.eq_ignore_ascii_case("yes"));
                let save = save.get(1).map(|s| s.trim().to_owned()).unwrap_or_default();
                if aof_on {
                    Persistence::Durable("appendonly yes".to_owned())
                } else if !save.is_empty() {
                    Persistence::Durable(format!("save {save}"))
                } else {
                    Persistence::None
                }
            }
            (Err(e), _) | (_, Err(e)) => Persistence::Unknown(e.to_string()),
        }
    }

    /// Checks persistence now, then again every [`RECHECK`] until Redis persists its data
    /// (an operator may turn AOF on with `CONFIG SET` while the node runs, or Redis may not
    /// be up yet). Each change is logged once. Must be called within a tokio runtime.
    pub async fn watch_persistence(&self) {
        let mut last = self.check_persistence(None).await;
        if self.offers_accounts() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RECHECK).await;
                last = this.check_persistence(Some(&last)).await;
                if this.offers_accounts() {
                    return;
                }
            }
        });
    }

    /// Checks persistence and records whether accounts may be offered, logging the outcome
    /// unless it is the same as `last` (the line an operator looks for when `accounts` is
    /// missing from `EXT-OK`).
    async fn check_persistence(&self, last: Option<&Persistence>) -> Persistence {
        let now = self.persistence().await;
        let changed =
            last.is_none_or(|l| std::mem::discriminant(l) != std::mem::discriminant(&now));
        let durable = matches!(now, Persistence::Durable(_));
        if changed {
            self.log(&now);
        }
        self.inner.durable.store(durable, Ordering::Relaxed);
        now
    }

    fn log(&self, persistence: &Persistence) {
        match persistence {
            Persistence::Durable(how) => {
                info!(%how, "accounts: redis persists its data; accounts offered");
            }
            Persistence::None => {
                warn!("accounts NOT offered: redis has no persistence (neither appendonly yes nor save), so a redis restart would lose every account; turn on AOF (appendonly yes); registered names stay protected");
            }
            Persistence::Unknown(why) => {
                warn!(%why, "accounts NOT offered: cannot ask redis whether it persists its data (CONFIG GET failed); asking again every 10s; registered names stay protected");
            }
        }
    }
}

impl RedisAccounts {
    /// Adds `name` to (or removes it from) the list of accounts.
    async fn index(&self, name: &str, add: bool) -> Result<(), StoreError> {
        let mut cmd = redis::cmd(if add { "SADD" } else { "SREM" });
        cmd.arg(ACCOUNTS).arg(name);
        self.inner
            .store
            .query::<i64>(&cmd)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

impl AccountStore for RedisAccounts {
    fn get(&self, name: &str) -> StoreFuture<'_, Option<Account>> {
        let name = name.to_owned();
        Box::pin(async move {
            let mut call = self.inner.scripts.get.prepare_invoke();
            call.key(key(&name));
            let v: Vec<Option<String>> =
                self.inner.store.invoke(&call).await.map_err(unavailable)?;
            let num = |i: usize| {
                v.get(i)
                    .and_then(|s| s.as_deref())
                    .and_then(|s| s.parse::<i64>().ok())
                    .unwrap_or(0)
            };
            Ok(v.first().cloned().flatten().map(|hash| Account {
                name: name.clone(),
                hash,
                locked: num(1) != 0,
                created_at: num(2),
                password_changed_at: num(3),
            }))
        })
    }

    fn is_registered(&self, name: &str) -> StoreFuture<'_, bool> {
        let key = key(name);
        Box::pin(async move {
            let mut cmd = redis::cmd("EXISTS");
            cmd.arg(key);
            let n: i64 = self.inner.store.query(&cmd).await.map_err(unavailable)?;
            Ok(n == 1)
        })
    }

    fn create(&self, name: &str, hash: &str) -> StoreFuture<'_, bool> {
        let (name, hash) = (name.to_owned(), hash.to_owned());
        Box::pin(async move {
            let mut call = self.inner.scripts.create.prepare_invoke();
            call.key(key(&name)).arg(hash).arg(unix_now());
            let n: i64 = self.inner.store.invoke(&call).await.map_err(unavailable)?;
            if n == 1 {
                self.index(&name, true).await?;
            }
            Ok(n == 1)
        })
    }

    fn set_password(&self, name: &str, hash: &str) -> StoreFuture<'_, bool> {
        let (k, hash) = (key(name), hash.to_owned());
        Box::pin(async move {
            let mut call = self.inner.scripts.set_password.prepare_invoke();
            call.key(k).arg(hash).arg(unix_now());
            let n: i64 = self.inner.store.invoke(&call).await.map_err(unavailable)?;
            Ok(n == 1)
        })
    }

    fn delete(&self, name: &str) -> StoreFuture<'_, bool> {
        let name = name.to_owned();
        Box::pin(async move {
            let mut call = self.inner.scripts.delete.prepare_invoke();
            call.key(key(&name));
            let n: i64 = self.inner.store.invoke(&call).await.map_err(unavailable)?;
            self.index(&name, false).await?;
            Ok(n == 1)
        })
    }

    fn set_locked(&self, name: &str, locked: bool) -> StoreFuture<'_, bool> {
        let k = key(name);
        Box::pin(async move {
            let mut call = self.inner.scripts.set_locked.prepare_invoke();
            call.key(k).arg(if locked { "1" } else { "0" });
            let n: i64 = self.inner.store.invoke(&call).await.map_err(unavailable)?;
            Ok(n == 1)
        })
    }

    fn list(&self) -> StoreFuture<'_, Vec<Account>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SMEMBERS");
            cmd.arg(ACCOUNTS);
            let names: Vec<String> = self.inner.store.query(&cmd).await.map_err(unavailable)?;
            if names.is_empty() {
                return Ok(Vec::new());
            }
            // One HMGET per account, each in its own slot on a Redis Cluster.
            let mut pipe = redis::pipe();
            for name in &names {
                pipe.cmd("HMGET").arg(key(name)).arg(&[
                    "hash",
                    "locked",
                    "created_at",
                    "password_changed_at",
                ]);
            }
            let values = self.inner.store.values(&pipe).await.map_err(unavailable)?;
            let mut accounts = Vec::with_capacity(names.len());
            for (name, v) in names.into_iter().zip(values) {
                let fields: Vec<Option<String>> =
                    redis::FromRedisValue::from_redis_value(v).unwrap_or_default();
                let field = |i: usize| fields.get(i).cloned().flatten();
                // Names whose account is gone are skipped.
                let Some(hash) = field(0) else { continue };
                let num = |i: usize| field(i).and_then(|s| s.parse().ok()).unwrap_or(0);
                accounts.push(Account {
                    name,
                    hash,
                    locked: field(1).is_some_and(|l| l != "0"),
                    created_at: num(2),
                    password_changed_at: num(3),
                });
            }
            accounts.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(accounts)
        })
    }

    fn offers_accounts(&self) -> bool {
        self.inner.durable.load(Ordering::Relaxed)
    }
}
