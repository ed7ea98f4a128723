//! [`HashPool`]: argon2id on its own threads, with a bounded queue.
//!
//! One argon2id hash with the default [`HashParams`] (19 MiB, 2 passes) takes tens of
//! milliseconds of one core and 19 MiB of memory. Run on the async runtime it would stall
//! every connection on that worker; run on tokio's blocking pool (512 threads) a login burst
//! could take 512 × 19 MiB. So hashing has its own few threads (`--hash-threads`) and a queue
//! of fixed length (`--hash-queue`): a job that finds the queue full is refused at once
//! ([`PoolError::Full`], answered `THROTTLED 1`), so memory is bounded by
//! `threads × 19 MiB` and the wait by `queue / threads` hashes, and the runtime's threads,
//! which carry the chat, never hash. The threads also run at a lower CPU priority (nice 10 on
//! Linux), so when every core is hashing the chat's threads still get the CPU first.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use password_hash::rand_core::OsRng;
use password_hash::SaltString;
use tokio::sync::oneshot;
use tracing::warn;

/// Password checks that may wait for a hashing thread (`--hash-queue`).
pub const DEFAULT_HASH_QUEUE: usize = 64;

/// A password in memory: hidden from `Debug`, overwritten when dropped. The pool takes it
/// by value, so the only copy lives until its hash is done.
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(password: &str) -> Self {
        Self(password.to_owned())
    }

    fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        // Keeps the zeroing from being optimised away as a dead store.
        std::hint::black_box(&bytes);
    }
}

/// argon2id's cost parameters for new hashes. Stored hashes carry their own (PHC strings), so
/// changing these later affects only passwords set afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub passes: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for HashParams {
    /// OWASP's recommendation for argon2id: 19 MiB, 2 passes, parallelism 1
    /// (`docs/protocol.md`, "accounts").
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            passes: 2,
            parallelism: 1,
        }
    }
}

impl HashParams {
    fn hasher(&self) -> Result<Argon2<'static>, argon2::Error> {
        let params = Params::new(self.memory_kib, self.passes, self.parallelism, None)?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Why the pool did not run a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// As many jobs as the queue holds are already waiting (`THROTTLED 1`).
    #[error("too many password checks waiting")]
    Full,
    /// The pool's threads are gone (shutting down), or the job failed.
    #[error("hashing pool unavailable")]
    Unavailable,
}

enum Job {
    Hash {
        password: Secret,
        reply: oneshot::Sender<Option<String>>,
    },
    Verify {
        password: Secret,
        phc: String,
        reply: oneshot::Sender<bool>,
    },
}

/// The hashing threads and their queue. Dropping every clone stops the threads once the
/// jobs already queued are done.
#[derive(Clone)]
pub struct HashPool {
    jobs: SyncSender<Job>,
    threads: usize,
    queue: usize,
}

impl fmt::Debug for HashPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashPool")
            .field("threads", &self.threads)
            .field("queue", &self.queue)
            .finish()
    }
}

impl HashPool {
    /// Starts `threads` hashing threads, with room for `queue` jobs waiting for them.
    ///
    /// # Errors
    /// The parameters are refused by argon2, or a thread cannot be spawned.
    pub fn new(threads: NonZeroUsize, queue: usize, params: HashParams) -> std::io::Result<Self> {
        let hasher = params
            .hasher()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let (jobs, rx) = mpsc::sync_channel(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.get() {
            let rx = Arc::clone(&rx);
            let hasher = hasher.clone();
            std::thread::Builder::new()
                .name(format!("tcpchat-hash-{i}"))
                .spawn(move || worker(&rx, &hasher))?;
        }
        Ok(Self {
            jobs,
            threads: threads.get(),
            queue,
        })
    }

    /// The default thread count: the number of cores, at most 4 (hashing beyond that would
    /// take cores from the chat on a small machine and buy little on a large one).
    pub fn default_threads() -> NonZeroUsize {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        NonZeroUsize::new(cores.min(4)).unwrap_or(NonZeroUsize::MIN)
    }

    /// Hashes `password` into a PHC string with a fresh 16-byte salt.
    ///
    /// # Errors
    /// [`PoolError::Full`] at once if the queue is full; [`PoolError::Unavailable`] if the
    /// pool stopped.
    pub async fn hash(&self, password: Secret) -> Result<String, PoolError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Hash { password, reply })?;
        answer.await.ok().flatten().ok_or(PoolError::Unavailable)
    }

    /// Whether `password` matches the PHC string `phc` (with the parameters stored in it).
    /// A malformed stored hash never matches (and is logged).
    ///
    /// # Errors
    /// As [`HashPool::hash`].
    pub async fn verify(&self, password: Secret, phc: String) -> Result<bool, PoolError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Verify {
            password,
            phc,
            reply,
        })?;
        answer.await.map_err(|_| PoolError::Unavailable)
    }

    fn submit(&self, job: Job) -> Result<(), PoolError> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => PoolError::Full,
            TrySendError::Disconnected(_) => PoolError::Unavailable,
        })
    }
}

/// Lowers the calling thread's CPU priority (nice 10): on a machine whose cores are all
/// hashing during a login burst, the scheduler then runs the chat's threads first, so a burst
/// costs logins time, not chat latency. Linux gives each thread its own nice value; elsewhere
/// this does nothing.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority only reads its arguments; `who` 0 is the calling thread on
        // Linux. A failure (not permitted) leaves the priority as it was, which is fine.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
        if rc != 0 {
            tracing::debug!("cannot lower the hashing thread's priority");
        }
    }
}

fn worker(rx: &Mutex<Receiver<Job>>, hasher: &Argon2<'static>) {
    lower_priority();
    loop {
        // The lock is held only while waiting for the next job, never while hashing.
        let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        match job {
            Job::Hash { password, reply } => {
                let salt = SaltString::generate(&mut OsRng);
                let phc = match hasher.hash_password(password.expose(), &salt) {
                    Ok(hash) => Some(hash.to_string()),
                    Err(e) => {
                        warn!(error = %e, "password hashing failed");
                        None
                    }
                };
                // The asker may have gone (connection closed); nothing to do then.
                let _ = reply.send(phc);
            }
            Job::Verify {
                password,
                phc,
                reply,
            } => {
                let matches = match PasswordHash::new(&phc) {
                    Ok(hash) => hasher.verify_password(password.expose(), &hash).is_ok(),
                    Err(e) => {
                        warn!(error = %e, "stored password hash is malformed; refusing the password");
                        false
                    }
                };
                let _ = reply.send(matches);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters for the tests that are about the pool, not the cost.
    const CHEAP: HashParams = HashParams {
        memory_kib: 64,
        passes: 1,
        parallelism: 1,
    };

    fn one() -> NonZeroUsize {
        NonZeroUsize::MIN
    }

    #[tokio::test]
    async fn hashes_are_argon2id_phc_strings_with_the_documented_parameters() {
        let pool = HashPool::new(one(), 4, HashParams::default()).expect("pool");
        let phc = pool.hash(Secret::new("correct-horse")).await.expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let parsed = PasswordHash::new(&phc).expect("PHC");
        assert_eq!(parsed.salt.map(|s| s.len()), Some(22), "16 bytes, base64");
        assert!(pool
            .verify(Secret::new("correct-horse"), phc.clone())
            .await
            .expect("verify"));
        assert!(!pool
            .verify(Secret::new("correct-horsf"), phc.clone())
            .await
            .expect("verify"));
        let again = pool.hash(Secret::new("correct-horse")).await.expect("hash");
        assert_ne!(phc, again, "a fresh salt every time");
    }

    #[tokio::test]
    async fn a_hash_made_with_other_parameters_still_verifies() {
        let cheap = HashPool::new(one(), 4, CHEAP).expect("pool");
        let phc = cheap.hash(Secret::new("old-password")).await.expect("hash");
        let default = HashPool::new(one(), 4, HashParams::default()).expect("pool");
        assert!(default
            .verify(Secret::new("old-password"), phc)
            .await
            .expect("verify"));
    }

    #[tokio::test]
    async fn a_malformed_stored_hash_never_matches() {
        let pool = HashPool::new(one(), 4, CHEAP).expect("pool");
        assert!(!pool
            .verify(Secret::new("anything-at-all"), "not a phc".into())
            .await
            .expect("verify"));
    }

    /// A full queue refuses at once instead of waiting: one thread, room for one job, eight
    /// slow jobs submitted back to back. At most two (one running, one queued) are taken; no
    /// timing is involved, only the bound.
    #[tokio::test]
    async fn a_full_queue_is_refused_at_once() {
        let slow = HashParams::default();
        let pool = HashPool::new(one(), 1, slow).expect("pool");
        let mut waiting = Vec::new();
        let mut refused = 0;
        for _ in 0..8 {
            let (reply, answer) = oneshot::channel();
            match pool.submit(Job::Hash {
                password: Secret::new("correct-horse"),
                reply,
            }) {
                Ok(()) => waiting.push(answer),
                Err(PoolError::Full) => refused += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        // At most one running and one queued were accepted: 8 submitted, queue 1.
        assert!(waiting.len() <= 2, "accepted {}", waiting.len());
        assert_eq!(refused, 8 - waiting.len());
        for answer in waiting {
            assert!(answer.await.expect("answered").is_some());
        }
        // Drained: room again.
        assert!(pool.hash(Secret::new("correct-horse")).await.is_ok());
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        assert_eq!(format!("{:?}", Secret::new("hunter22")), "Secret(<hidden>)");
    }
}
