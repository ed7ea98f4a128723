//! A hub can end a connection by evicting its user (the cluster backend does this when a
//! node finds that another node took one of its users' names). The connection must notice at
//! once, not at the user's next request; what was queued for the user before the eviction
//! still reaches them, then EOF; the name is freed; and the log says it was an eviction, not
//! a full queue.

mod common;
mod logs;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use common::{wait_presence, Client, PATIENCE};
use tcpchat_proto::{Reply, Username};
use tcpchat_server::{Config, Delivery, Hub, LoginError, MemoryHub, Outbox, Roster};
use tokio::net::TcpListener;

/// The in-memory hub, plus a handle on every logged-in user's outbox, and optionally a
/// user who is evicted by their own next `SEND` (an eviction racing a request in flight).
#[derive(Clone, Default)]
struct EvictingHub {
    inner: MemoryHub,
    outboxes: Arc<Mutex<HashMap<String, Arc<Outbox>>>>,
    evict_on_send: Arc<Mutex<Option<String>>>,
}

impl EvictingHub {
    /// Queues `lines` for `name`, then evicts them, with no chance for their connection to
    /// write in between.
    fn evict(&self, name: &str, lines: &[Reply<'_>]) {
        let outbox = self.outboxes.lock().expect("lock").remove(name);
        let outbox = outbox.expect("user is logged in");
        for line in lines {
            outbox
                .push_with(|buf| line.encode(buf))
                .expect("queue open before the eviction");
        }
        outbox.evict();
    }
}

impl Hub for EvictingHub {
    type Lease = <MemoryHub as Hub>::Lease;

    fn login(
        &self,
        name: &Username,
        outbox: &Arc<Outbox>,
    ) -> impl Future<Output = Result<Self::Lease, LoginError>> + Send {
        self.outboxes
            .lock()
            .expect("lock")
            .insert(name.to_string(), Arc::clone(outbox));
        self.inner.login(name, outbox)
    }

    fn list(&self) -> impl Future<Output = Roster> + Send {
        self.inner.list()
    }

    fn deliver(
        &self,
        from: &Username,
        to: &Username,
        body: &str,
    ) -> impl Future<Output = Delivery> + Send {
        let victim = self.evict_on_send.lock().expect("lock").take();
        if let Some(victim) = victim.filter(|v| v == from.as_str()) {
            self.evict(&victim, &[]);
        }
        self.inner.deliver(from, to, body)
    }

    fn watch(&self, lease: &Self::Lease, outbox: &Arc<Outbox>) -> impl Future<Output = ()> + Send {
        self.inner.watch(lease, outbox)
    }
}

async fn start(hub: &EvictingHub) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(tcpchat_server::run_with_hub(
        listener,
        Config::default(),
        hub.clone(),
        std::future::pending(),
    ));
    addr
}

async fn login(addr: std::net::SocketAddr, name: &str) -> Client {
    let mut c = Client::connect(addr).await;
    c.send(&format!("HELLO-FROM {name}")).await;
    c.expect(&format!("HELLO {name}")).await;
    c
}

fn no_queue_full(logs: &logs::Logs, name: &str) {
    let wrong = logs.lines_with(&[&format!("{name:?}"), "queue full"]);
    assert!(
        wrong.is_empty(),
        "an eviction logged as a full queue: {wrong:?}"
    );
}

#[tokio::test]
async fn evicted_user_is_disconnected_at_once_and_freed() {
    let hub = EvictingHub::default();
    let addr = start(&hub).await;
    let mut watcher = login(addr, "watcher").await;
    let mut bob = login(addr, "bob").await;

    hub.evict("bob", &[]);
    // Bob sends nothing: the server must close his connection by itself.
    tokio::time::timeout(PATIENCE, bob.expect_closed())
        .await
        .expect("evicted connection closed without waiting for a request");
    wait_presence(&mut watcher, "bob", false).await;
    let _again = login(addr, "bob").await;
}

#[tokio::test]
async fn evicted_user_reads_what_was_queued_then_eof_and_the_log_says_evicted() {
    let logs = logs::capture();
    let hub = EvictingHub::default();
    let addr = start(&hub).await;
    let mut carl = login(addr, "carl").await;
    let from = Username::parse("ann").expect("valid name");
    let queued = [
        Reply::Delivery {
            from: from.clone(),
            body: "first",
        },
        Reply::Delivery {
            from,
            body: "second",
        },
    ];
    hub.evict("carl", &queued);
    carl.expect("DELIVERY ann first").await;
    carl.expect("DELIVERY ann second").await;
    carl.expect_closed().await;
    logs.wait_for(&["carl", "evicted"]).await;
    no_queue_full(&logs, "carl");
}

#[tokio::test]
async fn eviction_during_a_request_is_an_eviction_not_a_full_queue() {
    let logs = logs::capture();
    let hub = EvictingHub::default();
    let addr = start(&hub).await;
    let _ann = login(addr, "ann").await;
    let mut dora = login(addr, "dora").await;
    *hub.evict_on_send.lock().expect("lock") = Some("dora".into());
    // The hub evicts dora while her SEND is being handled: its reply is refused.
    dora.send("SEND ann hi").await;
    dora.expect_closed().await;
    logs.wait_for(&["dora", "evicted"]).await;
    no_queue_full(&logs, "dora");
}
