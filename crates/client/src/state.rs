//! The state file: what a client run leaves for the next one (`docs/protocol.md`, "history").
//!
//! One small JSON file per server and account, `<dir>/<server>--<account>.json`, where `<dir>`
//! is `--state-dir`, else `$XDG_STATE_HOME/tcpchat`, else `~/.local/state/tcpchat`. It holds
//! the rooms the user is in, the resume point of each stream (epoch and offsets) and, per
//! conversation, its unread count; never a message's text and never a password. At the next
//! start the client joins the rooms again, sends `RESUME` with the direct stream's position
//! and pages each room back to its last offset, so the conversations, their unread counts and
//! the messages missed meanwhile are back; older lines are the server's to give (`HISTORY`).
//!
//! Written atomically (a temporary file in the same directory, then a rename), mode 0600 in a
//! directory of mode 0700. Bounded: at most [`MAX_STATE_BYTES`] are read, and it holds at
//! most [`crate::history::MAX_ROOM_POSITIONS`] room positions and
//! [`crate::MAX_CONVERSATIONS`] conversations. A file that cannot be read, is not valid, or
//! belongs to another server or account is a warning and is ignored: the run starts fresh.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tcpchat_proto::{RoomName, Username};

use crate::conversations::{Target, MAX_CONVERSATIONS};
use crate::history::{Position, Positions, MAX_ROOM_POSITIONS};

/// The most bytes read from a state file: far more than the bounded contents need.
pub const MAX_STATE_BYTES: u64 = 1024 * 1024;

/// The least time between two writes of the state file: a busy room changes the positions
/// with every message, and each write is an fsync. The end of a run always writes.
pub const WRITE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The format's version; another one is ignored (with a warning).
const VERSION: u32 = 1;

/// What is saved. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub version: u32,
    /// The server as the user named it.
    pub server: String,
    pub account: String,
    /// The direct stream's position, if the server named one.
    pub direct: Option<SavedPosition>,
    /// The rooms the user is in, in the order joined.
    pub joined: Vec<String>,
    /// The position in each room's stream.
    pub rooms: Vec<(String, SavedPosition)>,
    /// Each conversation (`@peer` or `#room`) and its unread count.
    pub conversations: Vec<(String, usize)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPosition {
    pub epoch: String,
    pub top: u64,
    pub lowest: u64,
}

impl From<&Position> for SavedPosition {
    fn from(p: &Position) -> Self {
        Self {
            epoch: p.epoch.clone(),
            top: p.top,
            lowest: p.lowest,
        }
    }
}

impl From<&SavedPosition> for Position {
    fn from(p: &SavedPosition) -> Self {
        Self {
            epoch: p.epoch.clone(),
            top: p.top,
            lowest: p.lowest.min(p.top),
        }
    }
}

/// What a saved state gives back to a new run, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    pub positions: Positions,
    pub joined: Vec<RoomName>,
    pub conversations: Vec<(Target, usize)>,
}

impl Saved {
    /// The state of a run, for `server` and `account`.
    pub fn new(
        server: &str,
        account: &Username,
        positions: &Positions,
        joined: &[RoomName],
        conversations: &[(Target, usize)],
    ) -> Self {
        Self {
            version: VERSION,
            server: server.to_owned(),
            account: account.to_string(),
            direct: positions.direct.as_ref().map(SavedPosition::from),
            joined: joined.iter().map(ToString::to_string).collect(),
            rooms: positions
                .rooms
                .iter()
                .take(MAX_ROOM_POSITIONS)
                .map(|(r, p)| (r.to_string(), p.into()))
                .collect(),
            conversations: conversations
                .iter()
                .take(MAX_CONVERSATIONS)
                .filter_map(|(t, unread)| match t {
                    Target::Status => None,
                    Target::Peer(p) => Some((format!("@{p}"), *unread)),
                    Target::Room(r) => Some((r.to_string(), *unread)),
                })
                .collect(),
        }
    }

    /// The checked contents: anything that breaks the rules is left out.
    pub fn restored(&self) -> Restored {
        let mut positions = Positions::default();
        positions.direct = self
            .direct
            .as_ref()
            .filter(|p| tcpchat_proto::is_epoch(p.epoch.as_bytes()))
            .map(Position::from);
        for (room, pos) in self.rooms.iter().take(MAX_ROOM_POSITIONS) {
            if let Ok(room) = RoomName::parse(room) {
                positions.rooms.insert(room, pos.into());
            }
        }
        let joined = self
            .joined
            .iter()
            .filter_map(|r| RoomName::parse(r).ok())
            .take(crate::MAX_JOINED_ROOMS)
            .collect();
        let conversations = self
            .conversations
            .iter()
            .take(MAX_CONVERSATIONS)
            .filter_map(|(t, unread)| {
                let target = match t.strip_prefix('@') {
                    Some(peer) => Target::Peer(Username::parse(peer).ok()?),
                    None => Target::Room(RoomName::parse(t).ok()?),
                };
                Some((target, *unread))
            })
            .collect();
        Restored {
            positions,
            joined,
            conversations,
        }
    }
}

/// Keeps one run's state file up to date: loaded at the start, written when it changed.
#[derive(Debug)]
pub struct Keeper {
    path: PathBuf,
    server: String,
    account: Username,
    last: Option<Saved>,
    written_at: Option<std::time::Instant>,
}

impl Keeper {
    /// For a run that logs in to `account` on `server` with a password: the keeper, the
    /// state to restore (if any), and a warning to show (a file that was ignored).
    pub fn open(
        dir: Option<&Path>,
        server: &str,
        account: &Username,
    ) -> (Option<Self>, Option<Restored>, Option<String>) {
        let Some(dir) = dir.map(Path::to_path_buf).or_else(default_dir) else {
            let warning = "no state directory (set --state-dir, XDG_STATE_HOME or HOME): \
                           conversations are not kept across restarts"
                .to_owned();
            return (None, None, Some(warning));
        };
        let path = file_path(&dir, server, account);
        let (saved, warning) = match load(&path, server, account) {
            Ok(saved) => (saved, None),
            Err(warning) => (None, Some(warning)),
        };
        let restored = saved.as_ref().map(Saved::restored);
        let keeper = Self {
            path,
            server: server.to_owned(),
            account: account.clone(),
            last: saved,
            written_at: None,
        };
        (Some(keeper), restored, warning)
    }

    /// Writes the client's state if it changed since the last write (and only once it is
    /// logged in to the account with `history`), at most every [`WRITE_EVERY`] unless
    /// `last_call` (the run ends). A failure is returned once, in words.
    pub fn update(
        &mut self,
        client: &crate::Client,
        now: std::time::Instant,
        last_call: bool,
    ) -> Option<String> {
        if !last_call && self.written_at.is_some_and(|at| now < at + WRITE_EVERY) {
            return None;
        }
        let session = client.session();
        if !session.is_account() || !session.has(tcpchat_proto::Extension::History) {
            return None;
        }
        if session.name() != Some(&self.account) {
            return None;
        }
        let saved = Saved::new(
            &self.server,
            &self.account,
            session.positions(),
            session.joined_rooms(),
            &client.conversations().unread_counts(),
        );
        if self.last.as_ref() == Some(&saved) {
            return None;
        }
        self.written_at = Some(now);
        let result = save(&self.path, &saved);
        let failed = self.last.is_some() && result.is_err();
        self.last = Some(saved);
        // Said once: the next changes fail the same way.
        result.err().filter(|_| !failed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The keeper for a run with `config` against `server` (see [`Keeper::open`]); nothing when
/// the run keeps no state ([`crate::Config::keep_state`]) or its name is not known at the
/// start (typed at the prompt). It writes only once logged in to the account.
pub fn for_config(
    config: &crate::Config,
    server: &str,
) -> (Option<Keeper>, Option<Restored>, Option<String>) {
    match &config.name {
        Some(name) if config.keep_state => Keeper::open(config.state_dir.as_deref(), server, name),
        _ => (None, None, None),
    }
}

/// The default directory: `$XDG_STATE_HOME/tcpchat`, else `~/.local/state/tcpchat`.
pub fn default_dir() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").and_then(absolute) {
        return Some(dir.join("tcpchat"));
    }
    std::env::var_os("HOME")
        .and_then(absolute)
        .map(|home| home.join(".local/state/tcpchat"))
}

/// The file of `server` and `account` in `dir`: both names with every byte that is not
/// `A-Za-z0-9._-` written `%XX`, so any name makes one file name of its own.
pub fn file_path(dir: &Path, server: &str, account: &Username) -> PathBuf {
    fn escape(s: &str) -> String {
        let mut out = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
    dir.join(format!(
        "{}--{}.json",
        escape(server),
        escape(account.as_str())
    ))
}

/// Reads the state of `server` and `account` from `path`. `Ok(None)`: no file yet.
///
/// # Errors
/// In words, for a warning: the file cannot be read, is too big, is not a state file of this
/// version, or belongs to another server or account.
pub fn load(path: &Path, server: &str, account: &Username) -> Result<Option<Saved>, String> {
    let shown = path.display();
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("cannot read the state file {shown}: {err}")),
    };
    let mut bytes = Vec::new();
    file.take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read the state file {shown}: {err}"))?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(format!(
            "the state file {shown} is over {MAX_STATE_BYTES} bytes; ignored"
        ));
    }
    let saved: Saved = serde_json::from_slice(&bytes)
        .map_err(|err| format!("the state file {shown} is not valid ({err}); ignored"))?;
    if saved.version != VERSION {
        return Err(format!(
            "the state file {shown} has version {}, this client reads {VERSION}; ignored",
            saved.version
        ));
    }
    if saved.server != server || saved.account != account.as_str() {
        return Err(format!(
            "the state file {shown} is for {} on {}, not {account} on {server}; ignored",
            saved.account, saved.server
        ));
    }
    Ok(Some(saved))
}

/// Writes `saved` to `path` atomically, mode 0600, creating its directory (mode 0700).
///
/// # Errors
/// In words, for a warning.
pub fn save(path: &Path, saved: &Saved) -> Result<(), String> {
    let fail =
        |err: std::io::Error| format!("cannot write the state file {}: {err}", path.display());
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(fail)?;
    let bytes = serde_json::to_vec_pretty(saved).map_err(|e| fail(std::io::Error::other(e)))?;
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(&bytes)?;
        file.sync_all()
    });
    if let Err(err) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(err));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Username {
        Username::parse(s).expect("valid name")
    }

    fn dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tcpchat-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn sample() -> Saved {
        let mut positions = Positions::default();
        positions.direct_caught_up("e1", 7);
        let room = RoomName::parse("#r").expect("valid room");
        positions.room_live(&room, 12);
        Saved::new(
            "localhost:5378",
            &name("alice"),
            &positions,
            std::slice::from_ref(&room),
            &[
                (Target::Peer(name("bob")), 3),
                (Target::Room(room.clone()), 1),
            ],
        )
    }

    #[test]
    fn a_state_is_written_privately_and_read_back() {
        let dir = dir("rw");
        let path = file_path(&dir, "localhost:5378", &name("alice"));
        assert!(path.ends_with("localhost%3A5378--alice.json"));
        assert_eq!(load(&path, "localhost:5378", &name("alice")), Ok(None));
        let saved = sample();
        save(&path, &saved).expect("saved");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("written")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = load(&path, "localhost:5378", &name("alice"))
            .expect("valid")
            .expect("there");
        assert_eq!(back, saved);
        let restored = back.restored();
        assert_eq!(restored.positions.direct.expect("kept").top, 7);
        assert_eq!(restored.joined.len(), 1);
        assert_eq!(restored.conversations.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_or_foreign_file_is_a_warning_never_a_panic() {
        let dir = dir("bad");
        std::fs::create_dir_all(&dir).expect("dir");
        let path = file_path(&dir, "s", &name("alice"));
        for junk in [
            &b"{not json"[..],
            b"",
            b"\xff\xfe",
            b"{\"version\":1}",
            b"[1,2,3]",
        ] {
            std::fs::write(&path, junk).expect("write");
            let err = load(&path, "s", &name("alice")).expect_err("not valid");
            assert!(err.contains("not valid"), "{err}");
        }
        save(&path, &sample()).expect("saved");
        let err = load(&path, "s", &name("alice")).expect_err("another server");
        assert!(err.contains("not alice on s"), "{err}");
        let err = load(&path, "localhost:5378", &name("bob")).expect_err("another account");
        assert!(err.contains("not bob"), "{err}");
        // Rule-breaking contents are left out, not trusted.
        let mut odd = sample();
        odd.joined.push("no-hash".into());
        odd.conversations.push(("@two words".into(), 1));
        odd.direct = Some(SavedPosition {
            epoch: "BAD EPOCH".into(),
            top: 1,
            lowest: 1,
        });
        let restored = odd.restored();
        assert_eq!(restored.joined.len(), 1);
        assert_eq!(restored.conversations.len(), 2);
        assert_eq!(restored.positions.direct, None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
