//! `run` refuses a configuration that breaks one of the server's rules, so a library user
//! cannot start a server the binary would refuse.

use std::time::Duration;

use tcpchat_server::{Config, ConfigError};

#[tokio::test]
async fn run_refuses_an_invalid_config_before_serving() {
    let listener = tcpchat_server::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let config = Config {
        max_line_bytes: 100,
        outbox_limit_bytes: 10,
        ..Config::default()
    };
    // The shutdown future never completes: only the refusal can end `run`.
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        tcpchat_server::run(listener, config, std::future::pending()),
    )
    .await
    .expect("run returned instead of serving");
    let err = result.expect_err("an outbox smaller than a line is refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<ConfigError>())
        .expect("the ConfigError is inside");
    assert_eq!(
        inner,
        &ConfigError::OutboxBelowLine {
            given: 10,
            max_line: 100
        }
    );
}
