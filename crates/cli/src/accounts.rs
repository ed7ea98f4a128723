//! `tcpchat accounts list|lock|unlock|remove`: the operator's view of the account store,
//! the same one the server uses (`<data-dir>/tcpchat.db`, or a cluster's Redis).
//!
//! Thin on purpose: every action is one [`AccountStore`] call. It works beside a running
//! server: SQLite's WAL lets both use the file, and the server confirms a registered name on
//! disk before refusing it, so a removed account is free at once; a lock is read at the next
//! `LOGIN`. A session already logged in is not touched: it keeps its name until it leaves.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand};
use tcpchat_accounts::{AccountStore, SqliteStore};
use tcpchat_proto::Username;

use crate::serve::default_data_dir;
use crate::UsageError;

#[derive(Debug, Args)]
pub struct AccountsArgs {
    #[command(subcommand)]
    action: Action,

    /// The account database of a single server: the --data-dir it runs with [default:
    /// $XDG_DATA_HOME/tcpchat, else ~/.local/share/tcpchat, else ./tcpchat-data]
    #[arg(long, env = "TCPCHAT_DATA_DIR", value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,

    /// A cluster's accounts: the Redis its nodes use, e.g. redis://10.0.0.5:6379 (then
    /// --data-dir is not used, as by `serve --cluster`)
    #[arg(long, env = "TCPCHAT_CLUSTER", value_name = "URL", global = true)]
    cluster: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Every account: name, state, when it was registered and its password last set.
    List,
    /// Refuse LOGIN to NAME (answered LOCKED); the name stays protected.
    Lock { name: String },
    /// Let NAME log in again.
    Unlock { name: String },
    /// Delete the account NAME: the name is free again (a forgotten password's remedy).
    Remove { name: String },
}

/// Runs `tcpchat accounts ...`.
pub fn run(args: AccountsArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let store = open(&args).await?;
        act(store.as_ref(), &args.action).await
    })
}

async fn open(args: &AccountsArgs) -> anyhow::Result<Box<dyn AccountStore>> {
    if let Some(url) = &args.cluster {
        tcpchat_redis::check_url(url).map_err(|e| UsageError(e.to_string()))?;
        // The node id is not used: this only reads and writes accounts.
        let cluster =
            tcpchat_redis::ClusterConfig::new(url.clone(), tcpchat_redis::NodeId::random());
        let store = tcpchat_redis::RedisAccounts::connect(&cluster)
            .await
            .map_err(|e| UsageError(e.to_string()))?;
        return Ok(Box::new(store));
    }
    let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    // Opening creates an empty database where there was none: for `list` that is just an
    // empty list, and the directory is the one a server would use.
    let store = SqliteStore::open(&dir).map_err(|e| {
        UsageError(format!(
            "cannot open the account database in {}: {e}",
            dir.display()
        ))
    })?;
    Ok(Box::new(store))
}

async fn act(store: &dyn AccountStore, action: &Action) -> anyhow::Result<ExitCode> {
    let (name, done) = match action {
        Action::List => {
            let accounts = store.list().await.context("cannot list the accounts")?;
            if accounts.is_empty() {
                println!("no accounts");
            }
            for a in accounts {
                let state = if a.locked { "locked" } else { "active" };
                println!(
                    "{}\t{state}\tregistered {}\tpassword set {}",
                    a.name,
                    date(a.created_at),
                    date(a.password_changed_at)
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        Action::Lock { name } => {
            let n = valid(name)?;
            (
                name,
                store
                    .set_locked(n.as_str(), true)
                    .await
                    .map(|f| f.then_some("locked")),
            )
        }
        Action::Unlock { name } => {
            let n = valid(name)?;
            (
                name,
                store
                    .set_locked(n.as_str(), false)
                    .await
                    .map(|f| f.then_some("unlocked")),
            )
        }
        Action::Remove { name } => {
            let n = valid(name)?;
            (
                name,
                store
                    .delete(n.as_str())
                    .await
                    .map(|f| f.then_some("removed")),
            )
        }
    };
    match done.context("the account store refused")? {
        Some(what) => {
            println!("{name}: {what}");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("tcpchat: no account {name:?}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn valid(name: &str) -> Result<Username, UsageError> {
    Username::parse(name).map_err(|e| UsageError(format!("invalid name {name:?}: {e}")))
}

/// A Unix time as an RFC 3339 date (UTC, whole seconds).
fn date(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}
