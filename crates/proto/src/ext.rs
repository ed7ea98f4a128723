//! The pieces of the extension lines that are not names or messages: extension names and the
//! set a connection negotiated, keepalive tokens, and passwords (`docs/protocol.md`,
//! "Extensions").
//!
//! Each is validated once, here, when a line is parsed; what holds one is known to be valid.

use std::fmt;

/// Longest extension name, in bytes.
pub const MAX_EXT_NAME_BYTES: usize = 32;
/// Most extension names one `EXT` line may carry.
pub const MAX_EXT_NAMES: usize = 32;
/// Longest keepalive token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 64;
/// Shortest password, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 8;
/// Longest password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 128;
/// Most names one `ONLINE` line carries (the server splits a longer list).
pub const MAX_ONLINE_NAMES_PER_LINE: usize = 100;
/// Most lines one `HISTORY` page carries (`docs/protocol.md`, "history").
pub const MAX_HISTORY_PAGE: u32 = 50;
/// Longest history epoch, in bytes.
pub const MAX_EPOCH_BYTES: usize = 32;

/// An extension tcpchat knows. Names the peer sends that are not here are carried as text
/// (see [`crate::Request::Ext`]) and left out of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Extension {
    /// `PING` / `PONG` both ways, and the server's ping timeout.
    Keepalive,
    /// `ONLINE` / `ONLINE-DONE` / `OFFLINE` instead of polling `LIST`.
    Presence,
    /// `LOGIN`, `REGISTER`, `PASSWORD`, `UNREGISTER`: names protected by a password.
    Accounts,
    /// `JOIN`, `PART`, `ROOMS`, `MEMBERS`, `SAY`, `TOPIC`, `KICK`: group conversations.
    Rooms,
    /// `HISTORY`, `RESUME`, offsets on live lines, offline delivery: stored messages.
    History,
}

impl Extension {
    /// Every extension, in the order a client asks for them.
    pub const ALL: [Extension; 5] = [
        Self::Keepalive,
        Self::Presence,
        Self::Accounts,
        Self::Rooms,
        Self::History,
    ];

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Keepalive => "keepalive",
            Self::Presence => "presence",
            Self::Accounts => "accounts",
            Self::Rooms => "rooms",
            Self::History => "history",
        }
    }

    /// The extension with this wire name, if tcpchat knows it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of extensions: what a server offers, or what one connection negotiated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ExtensionSet(u8);

impl ExtensionSet {
    /// No extension: a classic connection.
    pub const NONE: Self = Self(0);

    /// Every extension tcpchat knows.
    pub fn all() -> Self {
        Extension::ALL.into_iter().collect()
    }

    /// This set and `ext`; `const`, so a set can be spelled as a constant.
    #[must_use]
    pub const fn with(self, ext: Extension) -> Self {
        Self(self.0 | ext.bit())
    }

    pub fn contains(self, ext: Extension) -> bool {
        self.0 & ext.bit() != 0
    }

    pub fn insert(&mut self, ext: Extension) {
        self.0 |= ext.bit();
    }

    pub fn remove(&mut self, ext: Extension) {
        self.0 &= !ext.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members, in [`Extension::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Extension> {
        Extension::ALL
            .into_iter()
            .filter(move |e| self.contains(*e))
    }

    /// What a server offering `self` answers to `EXT <asked>`: the names it knows and offers,
    /// in the client's order, each once.
    pub fn answer<'a>(self, asked: &[&'a str]) -> (ExtensionSet, Vec<&'a str>) {
        let mut chosen = ExtensionSet::NONE;
        let mut names = Vec::new();
        for name in asked {
            if let Some(ext) = Extension::from_name(name) {
                if self.contains(ext) && !chosen.contains(ext) {
                    chosen.insert(ext);
                    names.push(*name);
                }
            }
        }
        (chosen, names)
    }

    /// The set named by an `EXT-OK` answer; unknown names are ignored.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        names.into_iter().filter_map(Extension::from_name).collect()
    }
}

impl FromIterator<Extension> for ExtensionSet {
    fn from_iter<I: IntoIterator<Item = Extension>>(iter: I) -> Self {
        let mut set = Self::NONE;
        for ext in iter {
            set.insert(ext);
        }
        set
    }
}

impl fmt::Display for ExtensionSet {
    /// Comma separated, as on the wire; `none` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, ext) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(ext.name())?;
        }
        Ok(())
    }
}

/// Whether `name` is a well-formed extension name (1 to 32 bytes of `a-z`, `0-9`, `-`).
pub fn is_ext_name(name: &[u8]) -> bool {
    (1..=MAX_EXT_NAME_BYTES).contains(&name.len())
        && name
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Splits a comma list of extension names, checking each and the count. `None` if any is
/// malformed, or if there are none or too many.
pub(crate) fn parse_ext_list(list: &[u8]) -> Option<Vec<&str>> {
    let mut names = Vec::new();
    for name in list.split(|b| *b == b',') {
        if !is_ext_name(name) || names.len() == MAX_EXT_NAMES {
            return None;
        }
        // Checked to be ASCII just above.
        names.push(std::str::from_utf8(name).ok()?);
    }
    Some(names)
}

/// Whether `token` is a well-formed keepalive token (1 to 64 bytes of printable ASCII).
pub fn is_token(token: &[u8]) -> bool {
    (1..=MAX_TOKEN_BYTES).contains(&token.len()) && token.iter().all(|b| b.is_ascii_graphic())
}

/// Whether `epoch` is a well-formed history epoch (1 to 32 bytes of `0-9` and `a-z`).
pub fn is_epoch(epoch: &[u8]) -> bool {
    (1..=MAX_EPOCH_BYTES).contains(&epoch.len())
        && epoch
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A stream of stored messages (`docs/protocol.md`, "history"): your own direct messages
/// (`@` on the wire), or a room's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Stream {
    /// `@`: the direct messages sent to the user asking.
    Direct,
    /// `#room`: a room's `SAID` messages.
    Room(crate::RoomName),
}

impl Stream {
    /// The name on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Direct => "@",
            Self::Room(room) => room.as_str(),
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a password is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("a password has at least {MIN_PASSWORD_BYTES} bytes")]
    TooShort,
    #[error("a password has at most {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("a password is UTF-8 text")]
    NotUtf8,
    #[error("a password has no spaces or other white space")]
    Whitespace,
    #[error("a password has no control characters")]
    Control,
}

/// A password as a line carries it: 8 to 128 bytes of UTF-8, no white space, no control
/// character. Its `Debug` never shows it, so a logged request cannot leak one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Password<'a>(&'a str);

impl<'a> Password<'a> {
    /// Checks `bytes` against the password rules.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, PasswordError> {
        if bytes.len() < MIN_PASSWORD_BYTES {
            return Err(PasswordError::TooShort);
        }
        if bytes.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| PasswordError::NotUtf8)?;
        Self::check_chars(text)?;
        Ok(Self(text))
    }

    /// Checks a password typed by a user (the client's side of the same rules).
    ///
    /// # Errors
    /// The first rule broken.
    pub fn parse(text: &'a str) -> Result<Self, PasswordError> {
        Self::from_bytes(text.as_bytes())
    }

    fn check_chars(text: &str) -> Result<(), PasswordError> {
        for c in text.chars() {
            if c.is_whitespace() {
                return Err(PasswordError::Whitespace);
            }
            if c.is_control() {
                return Err(PasswordError::Control);
            }
        }
        Ok(())
    }

    /// The password itself, for hashing or sending. Never log it.
    pub fn expose(&self) -> &'a str {
        self.0
    }
}

impl fmt::Debug for Password<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<hidden>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_names_round_trip() {
        for ext in Extension::ALL {
            assert_eq!(Extension::from_name(ext.name()), Some(ext));
            assert!(is_ext_name(ext.name().as_bytes()));
        }
        assert_eq!(Extension::from_name("Keepalive"), None);
        assert_eq!(Extension::from_name("resume"), None);
    }

    #[test]
    fn answer_keeps_the_clients_order_and_drops_the_unknown_and_the_unoffered() {
        let mut offered = ExtensionSet::all();
        offered.remove(Extension::Keepalive);
        let (set, names) =
            offered.answer(&["resume", "accounts", "keepalive", "presence", "accounts"]);
        assert_eq!(names, vec!["accounts", "presence"]);
        assert!(set.contains(Extension::Accounts) && set.contains(Extension::Presence));
        assert!(!set.contains(Extension::Keepalive));
        assert_eq!(set.to_string(), "presence,accounts");
        assert_eq!(ExtensionSet::NONE.to_string(), "none");
    }

    #[test]
    fn ext_lists() {
        assert_eq!(parse_ext_list(b"a,b-1,c2"), Some(vec!["a", "b-1", "c2"]));
        for bad in [&b""[..], b"a,,b", b"a,", b",a", b"A", b"a b", b"\xff"] {
            assert_eq!(
                parse_ext_list(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = vec![b'a'; MAX_EXT_NAME_BYTES + 1];
        assert_eq!(parse_ext_list(&long), None);
        let many = vec!["x"; MAX_EXT_NAMES + 1].join(",");
        assert_eq!(parse_ext_list(many.as_bytes()), None);
        let most = vec!["x"; MAX_EXT_NAMES].join(",");
        assert_eq!(
            parse_ext_list(most.as_bytes()).map(|v| v.len()),
            Some(MAX_EXT_NAMES)
        );
    }

    #[test]
    fn epochs() {
        assert!(is_epoch(b"0"));
        assert!(is_epoch(b"18c2f0a9b3"));
        assert!(is_epoch(&[b'z'; MAX_EPOCH_BYTES]));
        for bad in [&b""[..], b"A1", b"a-b", b"a b", b"\xff"] {
            assert!(!is_epoch(bad));
        }
        assert!(!is_epoch(&[b'a'; MAX_EPOCH_BYTES + 1]));
    }

    #[test]
    fn tokens() {
        assert!(is_token(b"1"));
        assert!(is_token(b"!~abc"));
        assert!(!is_token(b""));
        assert!(!is_token(b"a b"));
        assert!(!is_token("é".as_bytes()));
        assert!(is_token(&[b'x'; MAX_TOKEN_BYTES]));
        assert!(!is_token(&[b'x'; MAX_TOKEN_BYTES + 1]));
    }

    #[test]
    fn password_rules() {
        use PasswordError::*;
        assert!(Password::parse("correct-horse").is_ok());
        assert!(Password::parse("пароль-секрет").is_ok());
        assert_eq!(Password::parse("short"), Err(TooShort));
        assert_eq!(Password::parse(&"x".repeat(129)), Err(TooLong));
        assert!(Password::parse(&"x".repeat(128)).is_ok());
        assert_eq!(Password::parse("has space in"), Err(Whitespace));
        assert_eq!(Password::parse("no\u{a0}break-space"), Err(Whitespace));
        assert_eq!(Password::parse("bell\u{7}bell"), Err(Control));
        assert_eq!(Password::from_bytes(b"\xff\xfe12345678"), Err(NotUtf8));
    }

    #[test]
    fn password_debug_hides_it() {
        let pw = Password::parse("hunter22-secret").expect("valid");
        assert!(!format!("{pw:?}").contains("hunter22"));
        assert_eq!(pw.expose(), "hunter22-secret");
    }
}
