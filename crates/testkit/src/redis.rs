//! A private `redis-server` for one test, and a tiny synchronous client to look inside it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{free_port, require, Process, PATIENCE};

/// A `redis-server` on a free loopback port: no persistence, so a restart comes back empty
/// ([`Redis::start_persistent`]: AOF on, so a restart keeps everything).
pub struct Redis {
    pub port: u16,
    process: Option<Process>,
    dir: PathBuf,
    /// More `redis-server` arguments (TLS, users), given again on every restart.
    extra: Vec<String>,
    persistent: bool,
}

/// One RESP reply, as far as the tests need to read them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Vec<Reply>),
}

impl Redis {
    pub fn start() -> Self {
        Self::start_inner(false, &[])
    }

    /// With AOF on and every write synced (`appendfsync always`): even a kill -9 loses
    /// nothing, which is what the accounts require of a cluster's Redis.
    pub fn start_persistent() -> Self {
        Self::start_inner(true, &[])
    }

    /// [`Redis::start`] with more `redis-server` arguments. The plain port stays open for
    /// the helpers below (as the `default` user, no password).
    pub fn start_with(extra: &[String]) -> Self {
        Self::start_inner(false, extra)
    }

    fn start_inner(persistent: bool, extra: &[String]) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("tcpchat-redis-{}-{port}", std::process::id()));
        // A previous run's files must not leak into this one.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("redis work dir");
        let mut r = Self {
            port,
            process: None,
            dir,
            extra: extra.to_vec(),
            persistent,
        };
        r.restart();
        r
    }

    /// A Redis that also serves TLS on a second free port, with `leaf` as its certificate
    /// (clients are not asked for one), and an ACL user `user` with password `password`
    /// allowed everything. Returns it and the TLS port.
    pub fn start_tls(leaf: &crate::Leaf, user: &str, password: &str) -> (Self, u16) {
        let tls_port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "tcpchat-redis-tls-{}-{tls_port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("redis TLS dir");
        let cert = dir.join("redis.crt");
        let key = dir.join("redis.key");
        std::fs::write(&cert, &leaf.cert_pem).expect("write redis cert");
        std::fs::write(&key, &leaf.key_pem).expect("write redis key");
        let extra = [
            "--tls-port".to_owned(),
            tls_port.to_string(),
            "--tls-cert-file".to_owned(),
            cert.display().to_string(),
            "--tls-key-file".to_owned(),
            key.display().to_string(),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
            "--user".to_owned(),
            user.to_owned(),
            "on".to_owned(),
            format!(">{password}"),
            "~*".to_owned(),
            "&*".to_owned(),
            "+@all".to_owned(),
        ];
        (Self::start_with(&extra), tls_port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port: empty, or, when persistent, with what it had.
    pub fn restart(&mut self) {
        self.stop();
        let bin = require("redis-server", "redis-server");
        let mut cmd = Command::new(bin);
        let aof: &[&str] = if self.persistent {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(aof)
        .arg("--dir")
        .arg(&self.dir)
        .args(&self.extra);
        let p = Process::spawn("redis-server", cmd);
        let deadline = Instant::now() + PATIENCE;
        // Ready when it answers, and the answer comes from this process, not another
        // program that took the port.
        let want = format!("process_id:{}", p.pid());
        while !self.info("server").lines().any(|l| l.trim() == want) {
            assert!(
                Instant::now() < deadline,
                "redis-server (pid {}) did not answer on port {}; its log:\n{}",
                p.pid(),
                self.port,
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.process = Some(p);
    }

    /// Whether the server was started and not stopped.
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Kills the server (as a crash would): everything in it is gone.
    pub fn stop(&mut self) {
        if let Some(p) = self.process.take() {
            p.kill9();
        }
    }

    fn call(&self, args: &[&str]) -> std::io::Result<Reply> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes())?;
        read_reply(&mut BufReader::new(s))
    }

    /// Sends one command and returns the reply's first line in RESP form (`:0`, `+OK`,
    /// `$5`...), or `None` if Redis cannot be reached.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        Some(match self.call(args).ok()? {
            Reply::Status(s) => format!("+{s}"),
            Reply::Error(e) => format!("-{e}"),
            Reply::Int(i) => format!(":{i}"),
            Reply::Bulk(None) => "$-1".to_owned(),
            Reply::Bulk(Some(b)) => format!("${}", b.len()),
            Reply::Array(a) => format!("*{}", a.len()),
        })
    }

    /// A bulk string reply's text (`CLIENT LIST`, `GET`...). Panics on anything else.
    pub fn text(&self, args: &[&str]) -> String {
        match self.call(args) {
            Ok(Reply::Bulk(Some(b))) => b,
            other => panic!("redis {args:?}: expected a string, got {other:?}"),
        }
    }

    /// An integer reply (`EXISTS`, `PTTL`, `DBSIZE`...). Panics on anything else.
    pub fn int(&self, args: &[&str]) -> i64 {
        match self.call(args) {
            Ok(Reply::Int(i)) => i,
            other => panic!("redis {args:?}: expected an integer, got {other:?}"),
        }
    }

    /// `GET key`. Panics if Redis cannot be reached.
    pub fn get(&self, key: &str) -> Option<String> {
        match self.call(&["GET", key]) {
            Ok(Reply::Bulk(v)) => v,
            other => panic!("redis GET {key}: expected a string, got {other:?}"),
        }
    }

    /// Whether `key` exists.
    pub fn exists(&self, key: &str) -> bool {
        self.int(&["EXISTS", key]) == 1
    }

    /// `INFO section`, or an empty string if Redis cannot be reached.
    pub fn info(&self, section: &str) -> String {
        match self.call(&["INFO", section]) {
            Ok(Reply::Bulk(Some(body))) => body,
            _ => String::new(),
        }
    }

    /// `INFO commandstats` as (command, calls) pairs.
    pub fn command_calls(&self) -> HashMap<String, u64> {
        let body = self.info("commandstats");
        assert!(!body.is_empty(), "no INFO commandstats from redis");
        body.lines()
            .filter_map(|l| {
                let l = l.strip_prefix("cmdstat_")?;
                let (cmd, rest) = l.split_once(':')?;
                let calls = rest
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                Some((cmd.to_owned(), calls))
            })
            .collect()
    }
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut header = String::new();
    r.read_line(&mut header)?;
    let header = header.trim_end();
    let (kind, rest) = header
        .split_at_checked(1)
        .ok_or_else(|| bad("empty reply"))?;
    let number = || rest.parse::<i64>().map_err(|_| bad(header));
    Ok(match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(number()?),
        "$" => match usize::try_from(number()?) {
            Err(_) => Reply::Bulk(None),
            Ok(len) => {
                let mut body = vec![0u8; len + 2];
                r.read_exact(&mut body)?;
                body.truncate(len);
                Reply::Bulk(Some(String::from_utf8_lossy(&body).into_owned()))
            }
        },
        "*" => {
            let n = usize::try_from(number()?).unwrap_or(0);
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(read_reply(r)?);
            }
            Reply::Array(items)
        }
        _ => return Err(bad(header)),
    })
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
