//! The web page in a real browser: runs `tests/browser/chat.mjs` (playwright-core driving
//! Debian's Chromium) against the real binary. The script starts `tcpchat serve
//! --web-listen`, a `tcpchat connect --plain` user and two browser users, restarts the
//! server, and writes the screenshots the README shows (`docs/screenshots/`).
//!
//! What it needs is installed by `scripts/test.sh`: the `chromium`, `nodejs` and `npm`
//! packages, and `npm ci` in `tests/browser/`. Without them this test fails, saying what to
//! install; it is never skipped.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_page_chats_in_a_real_browser() {
    let dir = repo().join("tests/browser");
    let chromium = std::env::var_os("CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    let install = "run scripts/test.sh (it installs them), or as root: apt-get install chromium nodejs npm && (cd tests/browser && npm ci)";
    assert!(
        chromium.exists(),
        "{} is missing: the browser tests need Debian's chromium; {install}",
        chromium.display()
    );
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules/playwright-core is missing; {install}"
    );
    let mut cmd = Command::new("node");
    common::scrub(&mut cmd);
    let out = cmd
        .arg("chat.mjs")
        .current_dir(&dir)
        .env("TCPCHAT_BIN", env!("CARGO_BIN_EXE_tcpchat"))
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node ({e}); {install}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("-- done"),
        "the script ended early:\n{stdout}\n{stderr}"
    );
}
