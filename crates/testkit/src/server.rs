//! The server in the test's own process, on a loopback port chosen by the kernel.

use std::net::SocketAddr;

use tcpchat_server::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{Client, PATIENCE};

/// A running `tcpchat_server::run` on `127.0.0.1:0`; [`Server::shutdown`] stops it.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Binds a loopback port and starts the server with `config`.
    pub async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tcpchat_server::run(listener, config, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// [`Server::start`] with the default settings.
    pub async fn default() -> Self {
        Self::start(Config::default()).await
    }

    /// Asks the server to shut down and waits for `run` to return.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("server stops within the grace period")
                .expect("server task did not panic")
                .expect("server returned Ok");
        }
    }

    pub async fn connect(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// A client logged in as `name` (the first answer must be `HELLO name`).
    pub async fn login(&self, name: &str) -> Client {
        let mut c = self.connect().await;
        c.send(&format!("HELLO-FROM {name}")).await;
        c.expect(&format!("HELLO {name}")).await;
        c
    }
}
