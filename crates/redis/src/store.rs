//! One shared command connection to Redis, made on demand and replaced after a failure.
//!
//! Every call is bounded by the call timeout, so an unreachable Redis costs a login a bounded
//! wait (then `BUSY`), never a hang. Reconnection is lazy: the next call after a failure
//! connects again, at most once per [`RECONNECT_PAUSE`], so an outage does not turn every
//! login into a connection attempt.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
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
}

pub(crate) struct Store {
    client: redis::Client,
    call_timeout: Duration,
    conn: Mutex<Conn>,
    metrics: crate::ClusterMetrics,
}

struct Conn {
    live: Option<MultiplexedConnection>,
    /// No new attempt before this instant.
    next_attempt: Instant,
    /// Whether the last state logged was "connected", to log each change once.
    was_up: Option<bool>,
}

impl Store {
    pub(crate) fn new(
        client: redis::Client,
        call_timeout: Duration,
        metrics: crate::ClusterMetrics,
    ) -> Self {
        Self {
            client,
            call_timeout,
            metrics,
            conn: Mutex::new(Conn {
                live: None,
                next_attempt: Instant::now(),
                was_up: None,
            }),
        }
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    pub(crate) fn metrics(&self) -> &crate::ClusterMetrics {
        &self.metrics
    }

    async fn connection(&self) -> Result<MultiplexedConnection, CallError> {
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
        match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
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
        let result = match tokio::time::timeout(self.call_timeout, pipe.query_async(&mut c)).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => CallError::Redis(e),
            Err(_) => CallError::Timeout(self.call_timeout),
        };
        Err(self.lost(result).await)
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
