//! The server's integration tests share their helpers with the cluster tests through
//! `tcpchat-testkit`; this module keeps `mod common;` working in every test file.

#![allow(unused_imports)] // each test file uses a different subset

pub use tcpchat_testkit::{wait_presence, Client, Server, PATIENCE};
