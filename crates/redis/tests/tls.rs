//! Cluster mode over TLS (`rediss://`) to a real `redis-server` started with `--tls-port`
//! and a certificate from a test CA, logging in as an ACL user whose password comes from a
//! file: the steps of docs/operations.md "Redis over TLS", as a test runs them.

use tcpchat_testkit::{tcpchat_bin, Node, Redis, TestCa};

/// A private directory for the CA file and the password file, removed on drop.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tcpchat-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn secret(&self, name: &str, text: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write secret");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path.display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_chat_through_redis_over_tls_with_an_acl_user() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost", "127.0.0.1"]);
    let (redis, tls_port) = Redis::start_tls(&leaf, "tcpchat", "s3cret-pw");
    let dir = Dir::new("rediss");
    let ca_file = ca.write(&dir.0, "redis-ca.pem").display().to_string();
    let password = dir.secret("redis-password", "s3cret-pw\n");
    let url = format!("rediss://tcpchat@localhost:{tls_port}");
    let flags = [
        "--limits",
        "off",
        "--cluster-ca",
        &ca_file,
        "--cluster-password-file",
        &password,
        "--log-level",
        "debug",
    ];
    let a = Node::start_with(&url, "tls-a", &flags);
    let b = Node::start_with(&url, "tls-b", &flags);
    let mut ann = a.login("ann").await;
    let mut bob = b.login("bob").await;
    ann.wait_list(&["ann", "bob"]).await;
    ann.send("SEND bob over tls").await;
    ann.expect("SEND-OK").await;
    bob.expect("DELIVERY ann over tls").await;

    // Both nodes registered in that Redis (read over its plain port, as the default user).
    assert_eq!(redis.int(&["SCARD", "tcpchat:{global}:nodes"]), 2);
    // Over TLS as the ACL user, not as `default`: every connection but ours (the plain one
    // asking) is user=tcpchat, which only the password from the file lets in.
    let clients = redis.text(&["CLIENT", "LIST"]);
    let nodes: Vec<&str> = clients
        .lines()
        .filter(|l| !l.contains("cmd=client|list"))
        .collect();
    assert!(!nodes.is_empty(), "the nodes hold connections: {clients}");
    assert!(
        nodes.iter().all(|l| l.contains(" user=tcpchat ")),
        "every node connection is the ACL user: {clients}"
    );
    // The password is in no log line, not even at debug (the settings line included).
    for node in [&a, &b] {
        let log = node.process.log_text();
        assert!(
            log.contains("rediss://tcpchat@localhost"),
            "redacted URL logged: {log}"
        );
        assert!(
            !log.contains("s3cret-pw"),
            "the password leaked into the log:\n{log}"
        );
    }
}

/// Without the CA the node cannot verify Redis, and a wrong password is refused: either way
/// logins get `BUSY` (the node runs, Redis is unusable), and the log says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_redis_or_a_wrong_password_means_busy() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost"]);
    let (_redis, tls_port) = Redis::start_tls(&leaf, "tcpchat", "right");
    let dir = Dir::new("rediss-bad");
    let ca_file = ca.write(&dir.0, "redis-ca.pem").display().to_string();
    let wrong = dir.secret("wrong", "wrong\n");
    let url = format!("rediss://tcpchat@localhost:{tls_port}");
    for (id, flags) in [
        ("no-ca", vec!["--cluster-password-file", wrong.as_str()]),
        (
            "bad-pw",
            vec![
                "--cluster-ca",
                ca_file.as_str(),
                "--cluster-password-file",
                wrong.as_str(),
            ],
        ),
    ] {
        let node = Node::start_with(&url, id, &flags);
        let mut c = node.connect().await;
        c.send("HELLO-FROM ann").await;
        c.expect("BUSY").await;
        let line = node.process.wait_log("cannot reach redis");
        assert!(!line.contains("wrong"), "{line}");
    }
}

/// A lease setting that breaks a rule is refused before anything starts, with the rule.
#[test]
fn timing_rules_are_checked_by_the_binary() {
    let out = std::process::Command::new(tcpchat_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cluster",
            "redis://127.0.0.1:1",
            "--cluster-lease",
            "2s",
        ])
        .env_remove("RUST_LOG")
        .output()
        .expect("run tcpchat");
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cluster-renew 1s must be at most a third of cluster-lease 2s"),
        "{err}"
    );
}
