//! A peer that vanishes without FIN or RST (cable pulled, machine gone) is found by TCP
//! keepalive and its name freed.
//!
//! The vanishing peer lives in a network namespace joined to ours by a veth pair; taking its
//! interface down makes it silent in both directions, exactly like a pulled cable. Needs root
//! (CI runs as root; `scripts/test.sh` is the supported way to run the suite).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Server, PATIENCE};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("cannot run `ip` ({e}); this test needs iproute2 and root (run ./scripts/test.sh)")
    });
    assert!(
        out.status.success(),
        "`ip {}` failed: {} (this test needs root to create a network namespace)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace with one veth link to the root namespace; removed on drop.
struct Link {
    ns: String,
    host_if: String,
    peer_if: String,
    host_ip: String,
    peer_ip: String,
}

impl Link {
    fn new() -> Self {
        let id = std::process::id() % 60_000;
        let (a, b) = (id / 250 % 250, id % 250);
        let link = Self {
            ns: format!("tcpchat-dp-{id}"),
            host_if: format!("tcdh{id}"),
            peer_if: format!("tcdp{id}"),
            host_ip: format!("10.{}.{}.1", 100 + a % 100, b),
            peer_ip: format!("10.{}.{}.2", 100 + a % 100, b),
        };
        ip(&["netns", "add", &link.ns]);
        ip(&[
            "link",
            "add",
            &link.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &link.peer_if,
        ]);
        ip(&["link", "set", &link.peer_if, "netns", &link.ns]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", link.host_ip),
            "dev",
            &link.host_if,
        ]);
        ip(&["link", "set", &link.host_if, "up"]);
        link.in_ns(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", link.peer_ip),
            "dev",
            &link.peer_if,
        ]);
        link.in_ns(&["ip", "link", "set", &link.peer_if, "up"]);
        link
    }

    fn in_ns(&self, cmd: &[&str]) {
        let mut args = vec!["netns", "exec", &self.ns];
        args.extend_from_slice(cmd);
        ip(&args);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn list(r: &mut BufReader<TcpStream>, w: &mut TcpStream) -> String {
    w.write_all(b"LIST\n").expect("write LIST");
    let mut line = String::new();
    r.read_line(&mut line).expect("read LIST-OK");
    line
}

#[test]
fn dead_peer_found_by_keepalive_and_name_freed() {
    let link = Link::new();
    let server = Server::start(
        &format!("{}:0", link.host_ip),
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

    // The ghost: a client inside the namespace that logs in, then just waits.
    let script = format!(
        "import socket,time\n\
         s=socket.create_connection(('{}',{}))\n\
         s.sendall(b'HELLO-FROM ghost\\n')\n\
         print(s.recv(100).decode(),flush=True)\n\
         time.sleep(120)\n",
        addr.ip(),
        addr.port()
    );
    let mut ghost = Command::new("ip")
        .args(["netns", "exec", &link.ns, "python3", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ghost client");
    let mut ghost_out = BufReader::new(ghost.stdout.take().expect("stdout"));
    let _ghost = Killed(ghost);
    let mut hello = String::new();
    ghost_out.read_line(&mut hello).expect("ghost output");
    assert_eq!(hello.trim(), "HELLO ghost");

    let stream = TcpStream::connect(addr).expect("watcher connects");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut w = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    w.write_all(b"HELLO-FROM watcher\n").expect("write");
    let mut line = String::new();
    r.read_line(&mut line).expect("HELLO");
    assert!(list(&mut r, &mut w).contains("ghost"));

    // Pull the cable: the ghost's interface goes down; no FIN, no RST ever reaches us.
    link.in_ns(&["ip", "link", "set", &link.peer_if, "down"]);

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
}
