//! `tcpchat connect` against a server of the previous protocol generation: `LIST` gets
//! `BAD-RQST-HDR`, so the client asks again with `WHO` and reads `WHO-OK` and `UNKNOWN` from
//! then on. Real sockets, the real server fixed to the old generation. See: #16

use std::time::Duration;

use tcpchat_client::net::Server;
use tcpchat_client::{plain, Config};
use tcpchat_proto::Username;
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_falls_back_to_who_on_an_old_server() {
    let listener = tcpchat_server::bind("127.0.0.1:0".parse().expect("address")).expect("bind");
    let addr = listener.local_addr().expect("local address");
    let config = tcpchat_server::Config {
        generation: tcpchat_server::GenerationPolicy::Old,
        shutdown_grace: Duration::from_millis(100),
        ..tcpchat_server::Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tcpchat_server::run(listener, config, async {
        let _ = stopped.await;
    }));

    let target = Server::new(&addr.to_string(), None).expect("a server address");
    let (input, lines) = mpsc::channel(8);
    for line in ["!who", "@nobody are you there?"] {
        input.send(line.to_string()).await.expect("queued");
    }
    // The end of the input waits for the answers still on their way.
    drop(input);
    let mut output = Vec::new();
    let name = Username::parse("ada").expect("valid name");
    tokio::time::timeout(
        Duration::from_secs(20),
        plain::run(&target, Config::script(Some(name)), lines, &mut output),
    )
    .await
    .expect("the session ends")
    .expect("the session runs");
    let _ = stop.send(());
    let _ = server.await;

    let shown = String::from_utf8_lossy(&output);
    assert!(shown.contains("online: ada"), "{shown}");
    assert!(shown.contains("not delivered to nobody"), "{shown}");
}
