//! A peer that vanishes without FIN or RST (cable pulled, machine gone) is found by TCP
//! keepalive and its name freed.
//!
//! The vanishing peer is a real kernel TCP endpoint in its own network namespace, joined to the
//! server's by a veth pair; taking its interface down makes it silent in both directions,
//! exactly like a pulled cable.
//!
//! No real root is needed. The test re-runs this same binary in three roles:
//!
//! - **outer** (the test as cargo runs it, any user): starts the **host** role under
//!   `unshare --user --map-root-user --net`, a fresh user namespace in which it is root and a
//!   fresh network namespace it may configure;
//! - **host** (inside that namespace): starts the **ghost** role under `unshare --net` (a second
//!   network namespace), moves one end of a veth pair into it, runs `tcpchat serve` and the
//!   watcher client, and tells the ghost when to log in and when to pull its cable;
//! - **ghost**: brings up its end of the link, logs in, and on request takes the link down.
//!
//! Fresh namespaces mean fixed interface names and addresses with nothing to clean up: they
//! vanish with the processes. Where the kernel forbids unprivileged user namespaces the test
//! fails and says which setting forbids them and how to allow them; it never skips.
//!
//! Needs `unshare` (util-linux) and `ip` (iproute2).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

mod common;

use common::{lines_of, wait_for, Server, PATIENCE};

/// This test's name, to re-run exactly it in another role.
const TEST_NAME: &str = "dead_peer_found_by_keepalive_and_name_freed";
/// Which role a re-run plays: unset (outer), `host` or `ghost`.
const ROLE_ENV: &str = "TCPCHAT_DEAD_PEER_ROLE";
/// The ghost's status lines contain this, to tell them from libtest's own output (which may
/// precede it on the same line: `test NAME ... ` has no newline).
const GHOST_SAYS: &str = "ghost:";

const HOST_IF: &str = "tcdh0";
const PEER_IF: &str = "tcdp0";
const HOST_IP: &str = "10.200.0.1";
const PEER_IP: &str = "10.200.0.2";

#[test]
fn dead_peer_found_by_keepalive_and_name_freed() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("host") => host(),
        Ok("ghost") => ghost(),
        _ => outer(),
    }
}

/// This test binary, set to run only this test, in `role`, under `unshare ARGS`.
fn rerun(unshare_args: &[&str], role: &str) -> Command {
    let exe = std::env::current_exe().expect("path of the running test binary");
    let mut cmd = Command::new("unshare");
    cmd.args(unshare_args)
        .arg("--")
        .arg(exe)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role);
    cmd
}

fn outer() {
    let out = rerun(&["--user", "--map-root-user", "--net"], "host")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `unshare` ({e}): this test needs util-linux's unshare to create a \
                 user + network namespace (Debian package util-linux)"
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        print!("{stdout}");
        eprint!("{stderr}");
        return;
    }
    // unshare reports its own failures as `unshare: ...`; anything else is the scenario.
    if stderr.lines().any(|l| l.starts_with("unshare:")) {
        panic!(
            "cannot create a user + network namespace for the vanishing peer:\n{}\n{}",
            stderr.trim(),
            namespace_help()
        );
    }
    panic!(
        "the scenario inside the namespace failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}

/// Why the kernel may refuse an unprivileged user namespace, with the current settings.
fn namespace_help() -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .ok()
    };
    let mut causes = Vec::new();
    if let Some(v) = read("/proc/sys/user/max_user_namespaces") {
        if v == "0" {
            causes.push(
                "user.max_user_namespaces is 0; allow them: sudo sysctl -w user.max_user_namespaces=15000"
                    .to_string(),
            );
        }
    }
    if let Some(v) = read("/proc/sys/kernel/unprivileged_userns_clone") {
        if v == "0" {
            causes.push(
                "kernel.unprivileged_userns_clone is 0 (Debian kernels); allow them: \
                 sudo sysctl -w kernel.unprivileged_userns_clone=1"
                    .to_string(),
            );
        }
    }
    if let Some(v) = read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") {
        if v == "1" {
            causes.push(
                "kernel.apparmor_restrict_unprivileged_userns is 1 (AppArmor, Ubuntu 23.10+); \
                 allow them: sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"
                    .to_string(),
            );
        }
    }
    if causes.is_empty() {
        causes.push(
            "no kernel setting forbids them, so a sandbox probably does: in a container, a \
             seccomp profile or missing capabilities block unshare (docker: --privileged, or \
             --security-opt seccomp=unconfined)"
                .to_string(),
        );
    }
    format!(
        "This test runs the server and a vanishing peer in network namespaces it creates as an \
         unprivileged user, which this machine does not allow:\n  - {}",
        causes.join("\n  - ")
    )
}

/// Runs `ip ARGS` in the current namespace, failing the test with what went wrong.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("cannot run `ip` ({e}): this test needs iproute2 (scripts/test.sh installs it)")
    });
    assert!(
        out.status.success(),
        "`ip {}` failed: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim(),
        namespace_help()
    );
}

/// The ghost process; killed when dropped, which also removes its namespace and the veth.
struct Ghost {
    child: Child,
    stdin: ChildStdin,
    says: Receiver<String>,
    seen: Vec<String>,
}

impl Ghost {
    fn start() -> Self {
        let mut child = rerun(&["--net"], "ghost")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the ghost under unshare --net");
        let stdin = child.stdin.take().expect("piped stdin");
        let says = lines_of(child.stdout.take().expect("piped stdout"));
        let mut ghost = Self {
            child,
            stdin,
            says,
            seen: Vec::new(),
        };
        // Once it talks, it runs in its own namespace: `unshare` (no --fork) execs the test
        // binary in the same process, so its pid names that namespace.
        ghost.expect("ready");
        ghost
    }

    fn tell(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to the ghost");
    }

    fn expect(&mut self, what: &str) -> String {
        let want = format!("{GHOST_SAYS} {what}");
        let line = wait_for(&self.says, &mut self.seen, &want, |l| l.contains(&want));
        let at = line.find(&want).expect("checked by wait_for");
        line[at..].to_string()
    }
}

impl Drop for Ghost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn list(r: &mut BufReader<TcpStream>, w: &mut TcpStream) -> String {
    w.write_all(b"LIST\n").expect("write LIST");
    let mut line = String::new();
    r.read_line(&mut line).expect("read LIST-OK");
    line
}

/// Inside the fresh user + network namespace: the server, the link, the watcher.
fn host() {
    ip(&["link", "set", "lo", "up"]);
    let mut ghost = Ghost::start();
    let ghost_pid = ghost.child.id().to_string();
    ip(&[
        "link", "add", HOST_IF, "type", "veth", "peer", "name", PEER_IF,
    ]);
    ip(&["link", "set", PEER_IF, "netns", &ghost_pid]);
    ip(&["addr", "add", &format!("{HOST_IP}/30"), "dev", HOST_IF]);
    ip(&["link", "set", HOST_IF, "up"]);

    let server = Server::start(
        &format!("{HOST_IP}:0"),
        &[
            "--keepalive",
            "1s",
            "--keepalive-interval",
            "1s",
            "--keepalive-probes",
            "2",
        ],
    );
    let addr = server.addr;

    ghost.tell(&format!("connect {addr}"));
    let hello = ghost.expect("got");
    assert_eq!(hello, format!("{GHOST_SAYS} got HELLO ghost"));

    let stream = TcpStream::connect(addr).expect("watcher connects");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut w = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    w.write_all(b"HELLO-FROM watcher\n").expect("write");
    let mut line = String::new();
    r.read_line(&mut line).expect("HELLO");
    assert!(list(&mut r, &mut w).contains("ghost"));

    // Pull the cable: the ghost's interface goes down; no FIN, no RST ever reaches us, and
    // the ghost process (and its socket) lives on until this test ends.
    ghost.tell("down");
    ghost.expect("down");

    let deadline = Instant::now() + PATIENCE;
    loop {
        let names = list(&mut r, &mut w);
        if !names.contains("ghost") {
            break;
        }
        assert!(Instant::now() < deadline, "ghost still listed: {names}");
        std::thread::sleep(Duration::from_millis(200));
    }
    w.write_all(b"SEND ghost are you there?\n").expect("write");
    line.clear();
    r.read_line(&mut line).expect("reply");
    assert_eq!(line, "BAD-DEST-USER\n");
    drop(server);
    drop(ghost);
}

/// Inside its own network namespace: does what the host says on stdin, reports on stdout.
fn ghost() {
    println!("{GHOST_SAYS} ready");
    let mut socket = None;
    for command in std::io::stdin().lock().lines() {
        let command = command.expect("read a command from the host");
        if let Some(addr) = command.strip_prefix("connect ") {
            let addr: SocketAddr = addr.parse().expect("the host sends an address");
            ip(&["addr", "add", &format!("{PEER_IP}/30"), "dev", PEER_IF]);
            ip(&["link", "set", PEER_IF, "up"]);
            let stream = TcpStream::connect_timeout(&addr, PATIENCE).expect("ghost connects");
            stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
            let mut w = stream.try_clone().expect("clone");
            w.write_all(b"HELLO-FROM ghost\n").expect("ghost logs in");
            let mut reply = String::new();
            BufReader::new(&stream)
                .read_line(&mut reply)
                .expect("ghost reads HELLO");
            println!("{GHOST_SAYS} got {}", reply.trim_end());
            // Kept open: the ghost never closes, it only goes silent.
            socket = Some(stream);
        } else if command == "down" {
            ip(&["link", "set", PEER_IF, "down"]);
            println!("{GHOST_SAYS} down");
        }
    }
    drop(socket);
}
