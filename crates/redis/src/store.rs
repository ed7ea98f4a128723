//! One shared command connection to Redis, made on demand and replaced after a failure.
//!
//! The connection is to a standalone Redis (one multiplexed connection) or to a Redis Cluster
//! (the `redis` crate's cluster connection: one connection per shard, commands routed by their
//! key's slot, `MOVED`/`ASK` and failovers followed by the client). Everything above this module
//! is the same for both; [`Backend`] says which, and [`Store::publish`] picks `PUBLISH` or
//! `SPUBLISH`.
//!
//! Every call is bounded by the call timeout, so an unreachable Redis costs a login a bounded
//! wait (then `BUSY`), never a hang. Reconnection is lazy: the next call after a failure
//! connects again, at most once per [`RECONNECT_PAUSE`], so an outage does not turn every
//! login into a connection attempt.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, RedisError, ScriptInvocation};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{info, warn};

/// Least time between two connection attempts.
pub(crate) const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// Why a Redis call failed. Every failure is handled the same way (the call's fallback, and
/// a re-sync once Redis answers again), so only the reason for the log is kept.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("no answer from redis within {0:?}")]
    Timeout(Duration),
    #[error("redis unreachable; retrying shortly")]
    Backoff,
    #[error("redis gave {0} answers to {1} commands")]
    Answers(usize, usize),
}

/// What the cluster runs on.
// One per node, made once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub(crate) enum Backend {
    /// One Redis (`redis://`, `rediss://`), replicas or not.
    Single(redis::Client),
    /// A Redis Cluster (`redis+cluster://`, `rediss+cluster://`).
    Cluster(ClusterSeeds),
}

/// How to reach a Redis Cluster: the client for commands, and what it takes to build the
/// subscriber's own (RESP3, with a push channel).
#[derive(Clone)]
pub(crate) struct ClusterSeeds {
    pub commands: ClusterClient,
    pub nodes: Vec<redis::ConnectionInfo>,
    pub certs: Option<redis::TlsCertificates>,
    pub timeout: Duration,
}

impl ClusterSeeds {
    /// A client for these nodes; with `push`, RESP3 and every push message (sharded messages,
    /// disconnections) sent to it.
    pub(crate) fn client(
        nodes: Vec<redis::ConnectionInfo>,
        certs: Option<redis::TlsCertificates>,
        timeout: Duration,
        push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
    ) -> redis::RedisResult<ClusterClient> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            // Each call is bounded by the call timeout above the client; within it, the
            // client follows MOVED/ASK and waits out a failover.
            .retries(8);
        if let Some(certs) = certs {
            builder = builder.certs(certs);
        }
        if let Some(push) = push {
            builder = builder
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(push);
        }
        builder.build()
    }

    pub(crate) fn subscriber(
        &self,
        push: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> redis::RedisResult<ClusterClient> {
        Self::client(
            self.nodes.clone(),
            self.certs.clone(),
            self.timeout,
            Some(push),
        )
    }
}

/// A live command connection of either kind.
#[derive(Clone)]
pub(crate) enum Live {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Live {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

pub(crate) struct Store {
    backend: Backend,
    call_timeout: Duration,
    conn: Mutex<Conn>,
    metrics: crate::ClusterMetrics,
}

struct Conn {
    live: Option<Live>,
    /// No new attempt before this instant.
    next_attempt: Instant,
    /// Whether the last state logged was "connected", to log each change once.
    was_up: Option<bool>,
}

impl Store {
    pub(crate) fn new(
        backend: Backend,
        call_timeout: Duration,
        metrics: crate::ClusterMetrics,
    ) -> Self {
        Self {
            backend,
            call_timeout,
            metrics,
            conn: Mutex::new(Conn {
                live: None,
                next_attempt: Instant::now(),
                was_up: None,
            }),
        }
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }

    /// `PUBLISH channel payload`, or `SPUBLISH` on a Redis Cluster (sharded pub/sub: the
    /// message goes to the shard that owns the channel's slot only). Either answers the
    /// number of subscribers that got it.
    pub(crate) fn publish(
        &self,
        pipe: &mut redis::Pipeline,
        channel: String,
        payload: impl redis::ToRedisArgs,
    ) {
        let verb = match self.backend {
            Backend::Single(_) => "PUBLISH",
            Backend::Cluster(_) => "SPUBLISH",
        };
        pipe.cmd(verb).arg(channel).arg(payload);
    }

    pub(crate) fn metrics(&self) -> &crate::ClusterMetrics {
        &self.metrics
    }

    async fn connection(&self) -> Result<Live, CallError> {
        // The lock is held while connecting so an outage costs one attempt, not one per
        // caller; everyone else fails fast meanwhile via the pause below.
        let mut conn = self.conn.lock().await;
        if let Some(c) = &conn.live {
            return Ok(c.clone());
        }
        if Instant::now() < conn.next_attempt {
            return Err(CallError::Backoff);
        }
        conn.next_attempt = Instant::now() + RECONNECT_PAUSE;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.call_timeout))
            .set_response_timeout(Some(self.call_timeout));
        let made = match &self.backend {
            Backend::Single(client) => client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(Live::Single),
            Backend::Cluster(seeds) => seeds
                .commands
                .get_async_connection()
                .await
                .map(Live::Cluster),
        };
        match made {
            Ok(c) => {
                if conn.was_up != Some(true) {
                    info!("connected to redis");
                }
                conn.was_up = Some(true);
                conn.live = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                if conn.was_up != Some(false) {
                    warn!(error = %e, "cannot reach redis; new logins get BUSY until it is back");
                }
                conn.was_up = Some(false);
                Err(e.into())
            }
        }
    }

    /// Runs one command (no script), with the same timeout and reconnection as [`Store::invoke`].
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CallError> {
        let mut c = self.connection().await?;
        let result = match tokio::time::timeout(self.call_timeout, cmd.query_async(&mut c)).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => CallError::Redis(e),
            Err(_) => CallError::Timeout(self.call_timeout),
        };
        self.conn.lock().await.live = None;
        Err(result)
    }

    /// Runs a script; on any failure the connection is dropped so the next call reconnects.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        call: &ScriptInvocation<'_>,
    ) -> Result<T, CallError> {
        let started = Instant::now();
        let mut c = match self.connection().await {
            Ok(c) => c,
            Err(e) => {
                self.metrics.call(started.elapsed(), false);
                return Err(e);
            }
        };
        let answer = tokio::time::timeout(self.call_timeout, call.invoke_async(&mut c)).await;
        self.metrics
            .call(started.elapsed(), matches!(answer, Ok(Ok(_))));
        let result = match answer {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => CallError::Redis(e),
            Err(_) => CallError::Timeout(self.call_timeout),
        };
        Err(self.lost(result).await)
    }

    /// Sends a pipeline (its commands in order, one write) and returns every answer; on any
    /// failure the connection is dropped, as for [`Store::invoke`].
    pub(crate) async fn pipeline(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<Vec<redis::Value>, CallError> {
        let mut c = self.connection().await?;
        let answer = match &mut c {
            Live::Single(_) => {
                tokio::time::timeout(self.call_timeout, pipe.query_async(&mut c)).await
            }
            Live::Cluster(cluster) => {
                tokio::time::timeout(self.call_timeout, each_alone(cluster, pipe)).await
            }
        };
        let result = match answer {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => CallError::Redis(e),
            Err(_) => CallError::Timeout(self.call_timeout),
        };
        Err(self.lost(result).await)
    }

    /// Runs `pipe` and returns the raw answers, every command's (none is ignored), or the
    /// first error among them.
    pub(crate) async fn values(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<Vec<redis::Value>, CallError> {
        let started = Instant::now();
        let answer = self.pipeline(pipe).await;
        self.metrics.call(started.elapsed(), answer.is_ok());
        let values = answer?;
        for v in &values {
            if let redis::Value::ServerError(e) = v {
                return Err(CallError::Redis(e.clone().into()));
            }
        }
        Ok(values)
    }

    async fn lost(&self, result: CallError) -> CallError {
        let mut conn = self.conn.lock().await;
        if conn.was_up == Some(true) {
            warn!(error = %result, "lost redis; new logins get BUSY until it is back");
            conn.was_up = Some(false);
        }
        conn.live = None;
        result
    }
}

/// A pipeline on a Redis Cluster, whose commands may hash to different slots: each command
/// is sent on its own, all at once, in order (each shard's connection writes them in the
/// order given, so two commands for one slot keep their order), and the answers are
/// collected in order.
async fn each_alone(
    cluster: &ClusterConnection,
    pipe: &redis::Pipeline,
) -> redis::RedisResult<Vec<redis::Value>> {
    let calls = pipe.cmd_iter().map(|cmd| {
        let mut c = cluster.clone();
        async move { c.req_packed_command(cmd).await }
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .collect()
}
