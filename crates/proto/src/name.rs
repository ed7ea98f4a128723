//! User names and their rules.

use std::fmt;

/// Longest accepted user name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 32;

/// Why a name was refused. Every variant maps to `BAD-RQST-BODY` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("name contains a space or other whitespace")]
    Whitespace,
    #[error("name contains a comma")]
    Comma,
    #[error("name contains a control character")]
    Control,
    #[error("name is not valid UTF-8")]
    NotUtf8,
}

/// A user name that follows the protocol's rules: 1 to [`MAX_NAME_BYTES`] bytes of UTF-8, no
/// whitespace, no commas, no control characters. Names compare byte for byte (case-sensitive,
/// no Unicode normalization), as `docs/protocol.md` decides.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(Box<str>);

impl Username {
    /// Validates `name` under the protocol's rules.
    ///
    /// # Errors
    /// The first rule the name breaks.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        Self::parse_with_limit(name, MAX_NAME_BYTES)
    }

    /// Validates a name received from a peer that may allow longer names than we do
    /// (a client reading another server's `LIST-OK`). Same rules, another length limit.
    ///
    /// # Errors
    /// The first rule the name breaks.
    pub fn parse_with_limit(name: &str, max_bytes: usize) -> Result<Self, NameError> {
        check(name, max_bytes)?;
        Ok(Self(name.into()))
    }

    /// Like [`Username::parse`], from raw bytes off the wire.
    ///
    /// # Errors
    /// [`NameError::NotUtf8`] or the first rule the name breaks.
    pub fn from_bytes(name: &[u8]) -> Result<Self, NameError> {
        std::str::from_utf8(name)
            .map_err(|_| NameError::NotUtf8)
            .and_then(Self::parse)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check(name: &str, max_bytes: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max_bytes {
        return Err(NameError::TooLong { max: max_bytes });
    }
    for c in name.chars() {
        if c == ',' {
            return Err(NameError::Comma);
        }
        if c.is_whitespace() {
            return Err(NameError::Whitespace);
        }
        if c.is_control() {
            return Err(NameError::Control);
        }
    }
    Ok(())
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Username {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Longest room name, in bytes of UTF-8, the leading `#` included (ngircd's `CHANNEL_LEN`).
pub const MAX_ROOM_BYTES: usize = 50;

/// Why a room name was refused. Every variant maps to `BAD-RQST-BODY` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    #[error("a room name starts with #")]
    NoHash,
    #[error("a room name has at least one byte after its #")]
    Empty,
    #[error("room name is longer than {MAX_ROOM_BYTES} bytes")]
    TooLong,
    #[error("room name: {0}")]
    Rules(NameError),
}

/// A room name (`docs/protocol.md`, "rooms"): `#` and 1 or more bytes under the name rules,
/// [`MAX_ROOM_BYTES`] in all. A namespace of its own: no command takes a room where a user
/// is expected, so a user name that starts with `#` is never mistaken for one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Box<str>);

impl RoomName {
    /// Validates `name` under the room name rules.
    ///
    /// # Errors
    /// The first rule the name breaks.
    pub fn parse(name: &str) -> Result<Self, RoomNameError> {
        Self::parse_with_limit(name, MAX_ROOM_BYTES)
    }

    /// Validates a room name received from a peer that may allow longer ones. Same rules,
    /// another length limit.
    ///
    /// # Errors
    /// The first rule the name breaks.
    pub fn parse_with_limit(name: &str, max_bytes: usize) -> Result<Self, RoomNameError> {
        let rest = name.strip_prefix('#').ok_or(RoomNameError::NoHash)?;
        if rest.is_empty() {
            return Err(RoomNameError::Empty);
        }
        if name.len() > max_bytes {
            return Err(RoomNameError::TooLong);
        }
        check(rest, usize::MAX).map_err(RoomNameError::Rules)?;
        Ok(Self(name.into()))
    }

    /// Like [`RoomName::parse`], from raw bytes off the wire.
    ///
    /// # Errors
    /// The first rule the name breaks ([`NameError::NotUtf8`] inside [`RoomNameError::Rules`]).
    pub fn from_bytes(name: &[u8]) -> Result<Self, RoomNameError> {
        std::str::from_utf8(name)
            .map_err(|_| RoomNameError::Rules(NameError::NotUtf8))
            .and_then(Self::parse)
    }

    /// The name as text, `#` included.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::borrow::Borrow<str> for RoomName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let long = "x".repeat(MAX_NAME_BYTES);
        let too_long = "x".repeat(MAX_NAME_BYTES + 1);
        let cases: &[(&str, Result<(), NameError>)] = &[
            ("alice", Ok(())),
            ("Alice_2", Ok(())),
            ("żółw🐢", Ok(())),
            (&long, Ok(())),
            ("", Err(NameError::Empty)),
            (
                &too_long,
                Err(NameError::TooLong {
                    max: MAX_NAME_BYTES,
                }),
            ),
            ("a b", Err(NameError::Whitespace)),
            ("a\tb", Err(NameError::Whitespace)),
            ("a\u{a0}b", Err(NameError::Whitespace)),
            ("a,b", Err(NameError::Comma)),
            ("a\u{7}b", Err(NameError::Control)),
            ("a\u{7f}", Err(NameError::Control)),
        ];
        for (input, want) in cases {
            let got = Username::parse(input).map(|_| ());
            assert_eq!(&got, want, "name {input:?}");
        }
    }

    #[test]
    fn invalid_utf8_bytes() {
        assert_eq!(Username::from_bytes(b"al\xffce"), Err(NameError::NotUtf8));
    }

    #[test]
    fn names_are_case_sensitive() {
        assert_ne!(Username::parse("bob"), Username::parse("Bob"));
    }

    #[test]
    fn room_names() {
        let longest = format!("#{}", "r".repeat(MAX_ROOM_BYTES - 1));
        assert!(RoomName::parse("#rust").is_ok());
        assert!(
            RoomName::parse("##").is_ok(),
            "a # after the first is an ordinary byte"
        );
        assert!(RoomName::parse("#żółw🐢").is_ok());
        assert!(RoomName::parse(&longest).is_ok());
        assert_eq!(RoomName::parse("rust"), Err(RoomNameError::NoHash));
        assert_eq!(RoomName::parse("#"), Err(RoomNameError::Empty));
        assert_eq!(RoomName::parse(""), Err(RoomNameError::NoHash));
        assert_eq!(
            RoomName::parse(&format!("{longest}r")),
            Err(RoomNameError::TooLong)
        );
        assert_eq!(
            RoomName::parse("#a,b"),
            Err(RoomNameError::Rules(NameError::Comma))
        );
        assert_eq!(
            RoomName::parse("#a b"),
            Err(RoomNameError::Rules(NameError::Whitespace))
        );
        assert_eq!(
            RoomName::from_bytes(b"#\xff"),
            Err(RoomNameError::Rules(NameError::NotUtf8))
        );
        assert_ne!(RoomName::parse("#a"), RoomName::parse("#A"));
    }
}
