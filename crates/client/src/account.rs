//! The client's side of the `accounts` extension: passwords held in memory, the account
//! requests, and their answers in words (`docs/protocol.md`, "accounts").
//!
//! A password lives only in memory, in a [`Secret`]: validated once with the protocol's rules
//! ([`Password::parse`]) so that nothing invalid is ever sent, and with a `Debug` that hides
//! it, so that no log line, assertion message or `{:?}` of an effect can print one. The
//! client never writes one anywhere but the connection.

use std::fmt;

use tcpchat_proto::{Password, PasswordError, Username};

/// A password that passed the protocol's rules. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Checks `text` (as typed or read; a trailing line break is the caller's to remove)
    /// against the password rules.
    ///
    /// # Errors
    /// The first rule broken, in words by its `Display`.
    pub fn parse(text: &str) -> Result<Self, PasswordError> {
        Password::parse(text).map(|p| Self(p.expose().to_owned()))
    }

    /// The protocol's view of it, for encoding a request.
    pub fn password(&self) -> Password<'_> {
        // Checked by `parse`, the only way to make one; the text never changes after.
        Password::parse(&self.0).expect("a Secret is checked when made")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// An account request made once logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountOp {
    /// `/register`: `REGISTER`.
    Register,
    /// `/password`: `PASSWORD`.
    ChangePassword,
    /// `/unregister`: `UNREGISTER`.
    Unregister,
}

impl fmt::Display for AccountOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Register => "registering",
            Self::ChangePassword => "changing the password",
            Self::Unregister => "deleting the account",
        })
    }
}

/// What the server (or the client itself) answered to an account request or a `LOGIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountReply {
    /// `REGISTER-OK`, `PASSWORD-OK`, `UNREGISTER-OK`.
    Done,
    /// `NAME-REGISTERED`.
    NameRegistered,
    /// `NO-ACCOUNT`.
    NoAccount,
    /// `BAD-PASSWORD`.
    BadPassword,
    /// `LOCKED`.
    Locked,
    /// `THROTTLED <seconds>`.
    Throttled(u32),
    /// `NEEDS-TLS`.
    NeedsTls,
    /// `BAD-RQST-BODY` or anything else unexpected.
    Refused,
    /// Not asked: the server did not offer `accounts` on this connection, or we are not
    /// logged in.
    Unavailable,
}

impl AccountReply {
    /// The sentence for `op`'s outcome.
    pub fn describe(self, op: AccountOp) -> String {
        match (self, op) {
            (Self::Done, AccountOp::Register) => {
                "your name is registered: from now on it can only be used with your password"
                    .to_owned()
            }
            (Self::Done, AccountOp::ChangePassword) => "your password is changed".to_owned(),
            (Self::Done, AccountOp::Unregister) => {
                "your account is deleted; the name is free for anyone once you leave".to_owned()
            }
            (Self::NameRegistered, _) => "this name is already registered".to_owned(),
            (Self::NoAccount, _) => "this name is not registered (use /register)".to_owned(),
            (other, op) => format!("{op} failed: {other}"),
        }
    }
}

impl fmt::Display for AccountReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Done => f.write_str("done"),
            Self::NameRegistered => f.write_str("the name is registered"),
            Self::NoAccount => f.write_str("the name is not registered"),
            Self::BadPassword => f.write_str("wrong password"),
            Self::Locked => f.write_str("the server's operator has locked this account"),
            Self::Throttled(s) => write!(f, "too many attempts; try again in {s}s"),
            Self::NeedsTls => f.write_str(
                "this server refuses passwords over plain TCP; connect with tls://HOST \
                 (its TLS port, 5379 unless told otherwise)",
            ),
            Self::Refused => f.write_str("the server refused the request"),
            Self::Unavailable => {
                f.write_str("this server has no accounts (or you are not logged in yet)")
            }
        }
    }
}

/// What a password prompt asks for. The UI masks the input while one is open and keeps it out
/// of the history; the plain mode answers from its password source instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordPrompt {
    /// The password of this account, to log in.
    Login(Username),
    /// The account's current password (`/password`, `/unregister`).
    Current,
    /// A new password (`/register`, `/password`).
    New,
    /// The new password again, to catch a typing mistake.
    Again,
}

impl fmt::Display for PasswordPrompt {
    /// The input line's label.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Login(name) => write!(f, "password for {name}"),
            Self::Current => f.write_str("current password"),
            Self::New => f.write_str("new password"),
            Self::Again => f.write_str("new password again"),
        }
    }
}

/// Whether `line` (a request line, as written) carries a password: such a line is never
/// shown, only its command.
pub(crate) fn carries_password(line: &[u8]) -> bool {
    use tcpchat_proto::Command;
    matches!(
        Command::of_line(line),
        Some(Command::Login | Command::Register | Command::Password | Command::Unregister)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_follow_the_protocol_rules_and_never_show() {
        assert!(Secret::parse("short").is_err());
        assert!(Secret::parse("has space").is_err());
        let s = Secret::parse("hunter22-secret").expect("valid");
        assert_eq!(s.password().expose(), "hunter22-secret");
        assert!(!format!("{s:?}").contains("hunter22"));
    }

    #[test]
    fn password_lines_are_recognised() {
        for line in [
            &b"LOGIN alice pw123456\n"[..],
            b"REGISTER pw123456\n",
            b"PASSWORD a1234567 b1234567\n",
            b"UNREGISTER pw123456\n",
        ] {
            assert!(carries_password(line));
        }
        assert!(!carries_password(b"SEND bob LOGIN\n"));
        assert!(!carries_password(b"HELLO-FROM alice\n"));
    }
}
