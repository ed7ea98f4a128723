//! A hub can end a connection by closing its outbox (the cluster backend does this when a
//! node finds that another node took one of its users' names). The connection must notice at
//! once, not at the user's next request, and its name must be freed.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use common::{wait_presence, Client, PATIENCE};
use tcpchat_proto::Username;
use tcpchat_server::{Config, Delivery, Hub, LoginError, MemoryHub, Outbox};
use tokio::net::TcpListener;

/// The in-memory hub, plus a handle on every logged-in user's outbox.
#[derive(Clone, Default)]
struct EvictingHub {
    inner: MemoryHub,
    outboxes: Arc<Mutex<HashMap<String, Arc<Outbox>>>>,
}

impl EvictingHub {
    fn evict(&self, name: &str) {
        let outbox = self.outboxes.lock().expect("lock").remove(name);
        outbox.expect("user is logged in").close();
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

    fn list(&self) -> impl Future<Output = Vec<Username>> + Send {
        self.inner.list()
    }

    fn deliver(
        &self,
        from: &Username,
        to: &Username,
        body: &str,
    ) -> impl Future<Output = Delivery> + Send {
        self.inner.deliver(from, to, body)
    }
}

#[tokio::test]
async fn evicted_user_is_disconnected_at_once_and_freed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hub = EvictingHub::default();
    tokio::spawn(tcpchat_server::run_with_hub(
        listener,
        Config::default(),
        hub.clone(),
        std::future::pending(),
    ));
    let login = |name: &'static str| async move {
        let mut c = Client::connect(addr).await;
        c.send(&format!("HELLO-FROM {name}")).await;
        c.expect(&format!("HELLO {name}")).await;
        c
    };
    let mut watcher = login("watcher").await;
    let mut bob = login("bob").await;

    hub.evict("bob");
    // Bob sends nothing: the server must close his connection by itself.
    tokio::time::timeout(PATIENCE, bob.expect_closed())
        .await
        .expect("evicted connection closed without waiting for a request");
    wait_presence(&mut watcher, "bob", false).await;
    let _again = login("bob").await;
}
