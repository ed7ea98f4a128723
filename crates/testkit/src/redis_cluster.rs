//! A real Redis Cluster for one test: three masters and three replicas of Debian's
//! `redis-server` on loopback ports, joined by `redis-cli --cluster create`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::{free_port, require, Redis, PATIENCE};

/// Six `redis-server`s in cluster mode (`cluster-node-timeout` 1 s, so a killed master's
/// replica takes over within a few seconds), killed when dropped. Started, every replica has
/// completed its first sync.
pub struct RedisCluster {
    pub servers: Vec<Redis>,
}

/// One master of [`RedisCluster`] and the slots it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    pub port: u16,
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts six servers, creates the cluster (three masters, one replica each) and waits
    /// until every server reports `cluster_state:ok` and agrees on three masters.
    pub fn start() -> Self {
        Self::start_inner(&[])
    }

    /// [`RedisCluster::start`] with AOF on and every write synced on each server, as the
    /// accounts require of a cluster's Redis (so nodes on it offer `accounts`).
    pub fn start_persistent() -> Self {
        Self::start_inner(&["--appendonly", "yes", "--appendfsync", "always"])
    }

    fn start_inner(more: &[&str]) -> Self {
        let servers: Vec<Redis> = (0..6)
            .map(|_| {
                let mut args = vec![
                    "--cluster-enabled".to_owned(),
                    "yes".to_owned(),
                    "--cluster-node-timeout".to_owned(),
                    "1000".to_owned(),
                    // The bus port is port + 10000 by default, which may be taken or past 65535.
                    "--cluster-port".to_owned(),
                    free_port().to_string(),
                    // A replica's first sync starts at once (not after the default 5 s), and
                    // a replica always stands for election however long ago it last heard
                    // from its master (a loaded test machine must not block the failover).
                    "--repl-diskless-sync-delay".to_owned(),
                    "0".to_owned(),
                    "--cluster-replica-validity-factor".to_owned(),
                    "0".to_owned(),
                ];
                args.extend(more.iter().map(|a| (*a).to_owned()));
                Redis::start_with(&args)
            })
            .collect();
        let cli = require("redis-cli", "redis-tools");
        let mut cmd = Command::new(cli);
        cmd.arg("--cluster").arg("create");
        for s in &servers {
            cmd.arg(format!("127.0.0.1:{}", s.port));
        }
        cmd.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = cmd.output().expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { servers };
        let deadline = Instant::now() + PATIENCE;
        while !cluster
            .servers
            .iter()
            .all(|s| healthy(s) && masters_seen_by(s).len() == 3 && synced(s))
        {
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster did not come up: {:?}",
                cluster
                    .servers
                    .iter()
                    .map(|s| s.info("cluster"))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// `redis+cluster://` with the three first servers as seeds.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// A server still running, to ask.
    fn any(&self) -> &Redis {
        self.servers
            .iter()
            .find(|s| s.is_running())
            .expect("a running server")
    }

    /// The slot Redis Cluster hashes `key` (or channel) to.
    pub fn slot(&self, key: &str) -> u16 {
        let slot = self.any().int(&["CLUSTER", "KEYSLOT", key]);
        u16::try_from(slot).expect("a slot fits in u16")
    }

    /// The port of the live master serving `slot`, as a running server sees it.
    pub fn master_of(&self, slot: u16) -> Option<u16> {
        masters_seen_by(self.any())
            .into_iter()
            .find(|m| m.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|m| m.port)
    }

    /// Kills (-9) the server on `port`, as a crash would.
    pub fn kill(&mut self, port: u16) {
        let s = self
            .servers
            .iter_mut()
            .find(|s| s.port == port)
            .expect("a server on that port");
        s.stop();
    }

    /// Waits until a live server other than `dead` is master of `slot` and every running
    /// server reports `cluster_state:ok`; returns the new master's port.
    pub fn wait_failover(&self, slot: u16, dead: u16) -> u16 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let now = self.master_of(slot);
            let running = self.servers.iter().filter(|s| s.is_running());
            if let Some(port) = now.filter(|p| *p != dead) {
                if running.clone().all(healthy) {
                    return port;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no replica took over slot {slot} from {dead}; master now {now:?}; CLUSTER NODES:\n{}",
                self.any().text(&["CLUSTER", "NODES"])
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether `s` is a master, or a replica whose link to its master is up (its first sync
/// done: only then can it take over).
fn synced(s: &Redis) -> bool {
    let info = s.info("replication");
    info.contains("role:master") || info.contains("master_link_status:up")
}

/// Whether `s` answers and says `cluster_state:ok`.
fn healthy(s: &Redis) -> bool {
    s.command(&["CLUSTER", "INFO"]).is_some()
        && s.text(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
}

/// The masters `s` knows, not failed, with their slots (from `CLUSTER NODES`:
/// `id ip:port@bus flags master ping pong epoch state slot...`).
fn masters_seen_by(s: &Redis) -> Vec<Master> {
    if s.command(&["CLUSTER", "NODES"]).is_none() {
        return Vec::new();
    }
    s.text(&["CLUSTER", "NODES"])
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let flags = f.get(2)?;
            if !flags.contains("master") || flags.contains("fail") || f.get(7) != Some(&"connected")
            {
                return None;
            }
            let port = f
                .get(1)?
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let slots = f
                .get(8..)
                .unwrap_or_default()
                .iter()
                .filter(|r| !r.starts_with('['))
                .filter_map(|r| match r.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => r.parse().ok().map(|a| (a, a)),
                })
                .collect::<Vec<_>>();
            (!slots.is_empty()).then_some(Master { port, slots })
        })
        .collect()
}
