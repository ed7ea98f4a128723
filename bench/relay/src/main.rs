//! `tcpchat-relay ADDR`: the smallest server of the classic protocol that `tcpchat bench`
//! can load, written the way most tokio chat servers are (tokio's own chat example): one
//! task reading lines, one task writing, an unbounded channel of owned lines between
//! them, and a name → channel map behind a mutex.
//!
//! It is a yardstick for `bench/compare`, not a server: `HELLO-FROM`, `SEND` (with
//! `DELIVERY` and `SEND-OK` / `BAD-DEST-USER`), `IN-USE`, `BAD-RQST-HDR` for anything else;
//! no limits, no timeouts, no `LIST`, no extensions, and it trusts its input (a line is
//! split at spaces, not validated). Its latency is what the plain design costs on this
//! machine; tcpchat's figure is read against it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type Line = Vec<u8>;
type Users = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Line>>>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5392".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    let users = Users::default();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // EMFILE and the like: try again rather than end the yardstick mid-run.
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream, Arc::clone(&users)));
    }
}

async fn serve(stream: TcpStream, users: Users) {
    let (read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
    // The writer: everything queued since the last write goes out in one write.
    let writer = tokio::spawn(async move {
        let mut batch = Vec::new();
        while let Some(line) = rx.recv().await {
            batch.extend_from_slice(&line);
            while let Ok(line) = rx.try_recv() {
                batch.extend_from_slice(&line);
            }
            if write.write_all(&batch).await.is_err() {
                return;
            }
            batch.clear();
        }
    });
    let mut lines = BufReader::new(read).lines();
    let mut name: Option<String> = None;
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim_end_matches('\r');
        let reply: Line = match (line.split_once(' '), &name) {
            (Some(("HELLO-FROM", who)), None) => {
                let mut map = users.lock().unwrap_or_else(|e| e.into_inner());
                if map.contains_key(who) {
                    b"IN-USE\n".to_vec()
                } else {
                    map.insert(who.to_owned(), tx.clone());
                    name = Some(who.to_owned());
                    format!("HELLO {who}\n").into_bytes()
                }
            }
            (Some(("SEND", rest)), Some(from)) => match rest.split_once(' ') {
                Some((to, body)) => {
                    let map = users.lock().unwrap_or_else(|e| e.into_inner());
                    match map.get(to) {
                        Some(peer) => {
                            let _ = peer.send(format!("DELIVERY {from} {body}\n").into_bytes());
                            b"SEND-OK\n".to_vec()
                        }
                        None => b"BAD-DEST-USER\n".to_vec(),
                    }
                }
                None => b"BAD-RQST-BODY\n".to_vec(),
            },
            _ => b"BAD-RQST-HDR\n".to_vec(),
        };
        if tx.send(reply).is_err() {
            break;
        }
    }
    if let Some(me) = name {
        users.lock().unwrap_or_else(|e| e.into_inner()).remove(&me);
    }
    drop(tx);
    let _ = writer.await;
}
