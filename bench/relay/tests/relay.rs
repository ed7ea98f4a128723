//! The relay speaks enough of the classic protocol for `tcpchat bench`: checked over real
//! sockets against the binary.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client(addr: &str) -> (BufReader<TcpStream>, TcpStream) {
    // The relay binds after it starts; the deadline only bounds a hang.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => panic!("relay not listening: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    (BufReader::new(stream.try_clone().expect("clone")), stream)
}

fn ask(c: &mut (BufReader<TcpStream>, TcpStream), line: &str) -> String {
    c.1.write_all(format!("{line}\n").as_bytes())
        .expect("write");
    read(c)
}

fn read(c: &mut (BufReader<TcpStream>, TcpStream)) -> String {
    let mut s = String::new();
    c.0.read_line(&mut s).expect("read a line");
    s
}

#[test]
fn logs_in_forwards_and_acknowledges() {
    let addr = format!("127.0.0.1:{}", tcpchat_testkit::free_port());
    let _relay = Relay(
        Command::new(env!("CARGO_BIN_EXE_tcpchat-relay"))
            .arg(&addr)
            .spawn()
            .expect("start the relay"),
    );
    let mut ann = client(&addr);
    let mut bob = client(&addr);
    assert_eq!(ask(&mut ann, "SEND bob early"), "BAD-RQST-HDR\n");
    assert_eq!(ask(&mut ann, "HELLO-FROM ann"), "HELLO ann\n");
    assert_eq!(ask(&mut bob, "HELLO-FROM ann"), "IN-USE\n");
    assert_eq!(ask(&mut bob, "HELLO-FROM bob"), "HELLO bob\n");
    assert_eq!(ask(&mut ann, "SEND bob hi there"), "SEND-OK\n");
    assert_eq!(read(&mut bob), "DELIVERY ann hi there\n");
    assert_eq!(ask(&mut ann, "SEND nobody x"), "BAD-DEST-USER\n");
    // Bob leaves: his name is free again.
    drop(bob);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = client(&addr);
        match ask(&mut again, "HELLO-FROM bob").as_str() {
            "HELLO bob\n" => break,
            other if Instant::now() > deadline => panic!("bob's name not freed: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
