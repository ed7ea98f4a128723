//! The test TLS relay as a program, to measure the clients' TLS cost before the server has
//! its own TLS listener: `cargo run --release -p tcpchat-testkit --example tls_relay --
//! UPSTREAM DIR` makes a CA and a leaf for localhost and 127.0.0.1, writes the CA to
//! `DIR/ca.pem`, prints the relay's address and relays until killed. With a third argument
//! `plain`, the same relay without TLS, the baseline that has the same extra hop.

use std::time::Duration;

use tcpchat_testkit::{TestCa, TlsRelay};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(upstream), Some(dir)) = (args.next(), args.next()) else {
        eprintln!("usage: tls_relay UPSTREAM_HOST:PORT DIR");
        std::process::exit(2);
    };
    let Ok(upstream) = upstream.parse() else {
        eprintln!("{upstream:?} is not HOST:PORT (an IP address and a port)");
        std::process::exit(2);
    };
    let relay = if args.next().as_deref() == Some("plain") {
        let relay = TlsRelay::plain(upstream);
        println!("{}", relay.addr);
        relay
    } else {
        let ca = TestCa::new();
        let path = ca.write(std::path::Path::new(&dir), "ca.pem");
        let relay = TlsRelay::start(upstream, &ca.leaf(&["localhost", "127.0.0.1"]));
        println!("{} {}", relay.addr, path.display());
        relay
    };
    let _relay = relay;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
