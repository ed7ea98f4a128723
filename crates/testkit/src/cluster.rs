//! Cluster parts: `tcpchat serve --cluster` nodes and HAProxy in front of them.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{free_port, require, tcpchat_bin, Client, Process, PATIENCE};

/// One `tcpchat serve --cluster` process.
pub struct Node {
    pub id: String,
    pub addr: SocketAddr,
    pub process: Process,
}

impl Node {
    /// Starts a node on a free loopback port and waits until it listens.
    pub fn start(redis_url: &str, id: &str) -> Self {
        Self::start_with(redis_url, id, &[])
    }

    /// [`Node::start`] with more `serve` flags.
    pub fn start_with(redis_url: &str, id: &str, extra: &[&str]) -> Self {
        let mut cmd = Command::new(tcpchat_bin());
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cluster",
            redis_url,
            "--node-id",
            id,
        ])
        .args(extra)
        .env_remove("RUST_LOG")
        .env("TCPCHAT_LOG_LEVEL", "info");
        let process = Process::spawn(&format!("node {id}"), cmd);
        let line = process.wait_log("listening addr=");
        let addr = line
            .split("addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Self {
            id: id.to_owned(),
            addr,
            process,
        }
    }

    pub async fn connect(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// A client logged in as `name` on this node, retrying while the cluster answers `BUSY`
    /// (Redis just started or came back: nodes are re-registering).
    pub async fn login(&self, name: &str) -> Client {
        login_at(self.addr, name).await
    }
}

/// Logs `name` in at `addr`, retrying on `BUSY` until [`PATIENCE`].
pub async fn login_at(addr: SocketAddr, name: &str) -> Client {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut c = Client::connect(addr).await;
        c.send(&format!("HELLO-FROM {name}")).await;
        match c.next_text().await.as_deref() {
            Some(l) if l == format!("HELLO {name}") => return c,
            Some("BUSY") if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("login of {name} at {addr}: expected HELLO {name}, got {other:?}"),
        }
    }
}

/// HAProxy in TCP mode in front of `backends`, round-robin, with the configuration
/// `docs/cluster.md` recommends.
pub struct Haproxy {
    pub addr: SocketAddr,
    pub config: String,
    _process: Process,
    dir: PathBuf,
}

impl Haproxy {
    pub fn start(backends: &[SocketAddr]) -> Self {
        let bin = require("haproxy", "haproxy");
        let port = free_port();
        let mut config = format!(
            "global\n    maxconn 4000\n\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    \
             # chat connections are long and often silent: never cut them for idleness\n    \
             timeout client 24h\n    timeout server 24h\n\n\
             frontend chat\n    bind 127.0.0.1:{port}\n    default_backend nodes\n\n\
             backend nodes\n    balance roundrobin\n"
        );
        for (i, b) in backends.iter().enumerate() {
            config.push_str(&format!("    server node{} {b} check inter 1s\n", i + 1));
        }
        let dir =
            std::env::temp_dir().join(format!("tcpchat-haproxy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("haproxy dir");
        let cfg_path = dir.join("haproxy.cfg");
        std::fs::write(&cfg_path, &config).expect("write haproxy.cfg");
        let mut cmd = Command::new(bin);
        cmd.arg("-db").arg("-f").arg(&cfg_path);
        let process = Process::spawn("haproxy", cmd);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy did not listen on {addr}; its log:\n{}",
                process.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            addr,
            config,
            _process: process,
            dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
