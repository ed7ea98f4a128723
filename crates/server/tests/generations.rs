//! Both protocol generations over real sockets: an old-generation client (`WHO`, `WHO-OK`,
//! `UNKNOWN`) is served unchanged beside a current one, and `--protocol-generation` fixes one
//! for all. See: #16

mod common;

use common::Server;
use tcpchat_server::{Config, GenerationPolicy};

fn config(generation: GenerationPolicy) -> Config {
    Config {
        generation,
        ..Config::default()
    }
}

#[tokio::test]
async fn auto_answers_each_connection_in_its_own_generation() {
    let server = Server::default().await;
    let mut old = server.login("old").await;
    let mut new = server.login("new").await;
    // Before its first WHO an auto connection is current.
    old.send("SEND nobody hi").await;
    old.expect("BAD-DEST-USER").await;
    old.send("WHO").await;
    old.expect("WHO-OK new,old").await;
    // From then on, in its generation.
    old.send("SEND nobody hi").await;
    old.expect("UNKNOWN").await;
    old.send("SEND new hello").await;
    old.expect("SEND-OK").await;
    new.expect("DELIVERY old hello").await;
    // The other connection is untouched.
    new.send("SEND nobody hi").await;
    new.expect("BAD-DEST-USER").await;
    assert_eq!(new.list().await, ["new", "old"]);
    old.send("WHO x").await;
    old.expect("BAD-RQST-BODY").await;
    server.shutdown().await;
}

#[tokio::test]
async fn old_fixes_the_previous_generation_for_everyone() {
    let server = Server::start(config(GenerationPolicy::Old)).await;
    let mut a = server.login("a").await;
    a.send("SEND nobody hi").await;
    a.expect("UNKNOWN").await;
    a.send("LIST").await;
    a.expect("BAD-RQST-HDR").await;
    a.send("WHO").await;
    a.expect("WHO-OK a").await;
    server.shutdown().await;
}

#[tokio::test]
async fn current_knows_no_who() {
    let server = Server::start(config(GenerationPolicy::Current)).await;
    let mut a = server.login("a").await;
    a.send("WHO").await;
    a.expect("BAD-RQST-HDR").await;
    a.send("SEND nobody hi").await;
    a.expect("BAD-DEST-USER").await;
    assert_eq!(a.list().await, ["a"]);
    server.shutdown().await;
}

#[tokio::test]
async fn who_before_login_is_a_header_error() {
    let server = Server::default().await;
    let mut c = server.connect().await;
    c.send("WHO").await;
    c.expect("BAD-RQST-HDR").await;
    server.shutdown().await;
}
