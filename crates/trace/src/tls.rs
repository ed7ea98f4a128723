//! Recognising TLS in a reassembled byte stream and reading the two messages of its handshake
//! that travel in the clear: the ClientHello (server name, offered versions, ALPN) and the
//! ServerHello (the version the server chose).
//!
//! Everything after them is encrypted, so this is all a capture can say about a TLS
//! connection. It is a hand-written reader for just these fields rather than the `tls-parser`
//! crate: that crate parses every TLS message with nom 7 and phf tables, while we need five
//! fields of two messages and must in any case gather the handshake message from records
//! split across segments ourselves. Every read goes through [`Reader`], which checks the
//! length first, so a truncated or hostile record is an [`Unreadable`] value, never a panic;
//! and at most [`MAX_HELLO_BYTES`] of a stream are held.
//!
//! Sans-I/O like the rest of the crate: [`Watch::push`] takes in-order stream bytes, and says
//! when it has seen the start of TLS and when it has read (or failed to read) the hello.

use serde::Serialize;

/// The TLS port (`tcpchat_proto::DEFAULT_TLS_PORT`, the chat port + 1); `trace` shows its
/// connections like the chat port's.
pub const DEFAULT_TLS_PORT: u16 = tcpchat_proto::DEFAULT_TLS_PORT;

/// Handshake bytes held while waiting for a hello to be complete. A real ClientHello is a few
/// hundred bytes (under 2 KiB with a post-quantum key share); this is generous and bounded.
pub const MAX_HELLO_BYTES: usize = 64 * 1024;

/// The largest record TLS allows: 2^14 bytes of plaintext plus the expansion TLS 1.2 permits.
const MAX_RECORD_BYTES: usize = (1 << 14) + 2048;

const RECORD_HEADER_BYTES: usize = 5;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const HANDSHAKE_SERVER_HELLO: u8 = 2;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;

/// The ServerHello random that marks a HelloRetryRequest (RFC 8446 section 4.1.3).
const HELLO_RETRY_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// Whether a stream starting with `head` (at least three bytes) starts with a TLS handshake
/// record: content type 22, record version 3.1 to 3.3 (what every TLS 1.0 to 1.3 client sends).
pub fn starts_tls(head: &[u8]) -> bool {
    matches!(head, [CONTENT_HANDSHAKE, 0x03, 0x01..=0x03, ..])
}

/// A version number as people write it: `TLS 1.3`, or hex for one we do not know.
pub fn version_name(v: u16) -> String {
    match v {
        0x0300 => "SSL 3.0".into(),
        0x0301 => "TLS 1.0".into(),
        0x0302 => "TLS 1.1".into(),
        0x0303 => "TLS 1.2".into(),
        0x0304 => "TLS 1.3".into(),
        other => format!("0x{other:04x}"),
    }
}

/// GREASE values (RFC 8701): placeholders a client offers to keep servers tolerant; they mean
/// nothing and are left out of what is reported.
fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// What a ClientHello says in the clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientHello {
    /// The server name (SNI) the client asks for, if it sent one.
    pub server_name: Option<String>,
    /// The versions it offers, newest first as sent: from `supported_versions` (TLS 1.3
    /// clients), or just its `legacy_version` when it sent no such list.
    pub offered_versions: Vec<String>,
    /// Application protocols it offers (ALPN), if any.
    pub alpn: Vec<String>,
}

/// What a ServerHello says in the clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerHello {
    /// The version the server chose: `supported_versions` when present (TLS 1.3), else its
    /// `legacy_version`.
    pub version: String,
    /// A HelloRetryRequest: the server asks the client for another ClientHello.
    pub hello_retry: bool,
}

/// A hello that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub reason: String,
}

/// A hello as read from one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    Client(ClientHello),
    Server(ServerHello),
    Unreadable(Unreadable),
}

/// What [`Watch::push`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The stream starts with a TLS handshake record.
    TlsStart,
    /// Its first handshake message, read or not.
    Hello(Hello),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for the stream's first three bytes.
    Start,
    /// A TLS stream: gathering the first handshake message from its records.
    Gathering,
    /// Done (hello read, not TLS, or given up): takes no more bytes.
    Done,
}

/// Follows one direction of a connection from its first byte.
#[derive(Debug, Clone)]
pub struct Watch {
    state: State,
    /// Unparsed stream bytes (record headers and fragments), at most one record's worth
    /// beyond what is already gathered.
    raw: Vec<u8>,
    /// The handshake layer: record payloads joined.
    handshake: Vec<u8>,
}

impl Default for Watch {
    fn default() -> Self {
        Self::new()
    }
}

impl Watch {
    /// A watcher for a stream seen from its first byte.
    pub fn new() -> Self {
        Self {
            state: State::Start,
            raw: Vec::new(),
            handshake: Vec::new(),
        }
    }

    /// A watcher that never reports (the capture started mid-stream: offset 0 is unknown).
    pub fn off() -> Self {
        Self {
            state: State::Done,
            raw: Vec::new(),
            handshake: Vec::new(),
        }
    }

    /// Whether it still wants bytes.
    pub fn active(&self) -> bool {
        self.state != State::Done
    }

    /// Takes the next in-order stream bytes; what it learned goes to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Seen>) {
        if !self.active() || data.is_empty() {
            return;
        }
        let room = (MAX_HELLO_BYTES + MAX_RECORD_BYTES).saturating_sub(self.raw.len());
        self.raw.extend_from_slice(&data[..data.len().min(room)]);
        if self.state == State::Start {
            if self.raw.len() < 3 {
                return;
            }
            if !starts_tls(&self.raw) {
                self.stop();
                return;
            }
            self.state = State::Gathering;
            out.push(Seen::TlsStart);
        }
        self.gather(out);
    }

    /// Bytes are missing from the capture here.
    pub fn gap(&mut self, out: &mut Vec<Seen>) {
        if self.state == State::Gathering {
            self.give_up("bytes of it are missing from the capture", out);
        }
        self.stop();
    }

    /// The stream ended.
    pub fn finish(&mut self, out: &mut Vec<Seen>) {
        if self.state == State::Gathering {
            // What arrived of the record being cut off counts towards the message.
            let mut hs = self.handshake.clone();
            if let Some(header) = self.raw.get(..RECORD_HEADER_BYTES) {
                let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
                let end = self.raw.len().min(RECORD_HEADER_BYTES + len);
                hs.extend_from_slice(&self.raw[RECORD_HEADER_BYTES..end]);
            }
            let reason = match handshake_header(&hs) {
                Some((kind, len)) => format!(
                    "the stream ended inside the {}: {} of its {} bytes arrived",
                    message_name(kind),
                    hs.len().saturating_sub(4),
                    len
                ),
                None => "the stream ended inside the first TLS record".to_string(),
            };
            self.give_up(&reason, out);
        }
        self.stop();
    }

    fn stop(&mut self) {
        self.state = State::Done;
        self.raw = Vec::new();
        self.handshake = Vec::new();
    }

    fn give_up(&mut self, reason: &str, out: &mut Vec<Seen>) {
        out.push(Seen::Hello(Hello::Unreadable(Unreadable {
            reason: reason.to_string(),
        })));
        self.stop();
    }

    /// Moves whole records from `raw` to `handshake`; parses the first handshake message once
    /// it is complete.
    fn gather(&mut self, out: &mut Vec<Seen>) {
        let mut used = 0;
        while self.state == State::Gathering {
            let rest = &self.raw[used..];
            let Some(header) = rest.get(..RECORD_HEADER_BYTES) else {
                break;
            };
            let content = header[0];
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if content != CONTENT_HANDSHAKE {
                self.give_up(
                    &format!(
                        "a {} record came before the hello was complete",
                        content_name(content)
                    ),
                    out,
                );
                return;
            }
            if len > MAX_RECORD_BYTES {
                self.give_up(
                    &format!("a record of {len} bytes (TLS allows at most {MAX_RECORD_BYTES})"),
                    out,
                );
                return;
            }
            let Some(payload) = rest.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len) else {
                break;
            };
            if self.handshake.len() + payload.len() > MAX_HELLO_BYTES {
                self.give_up(&format!("a hello longer than {MAX_HELLO_BYTES} bytes"), out);
                return;
            }
            self.handshake.extend_from_slice(payload);
            used += RECORD_HEADER_BYTES + len;
            if let Some((kind, msg_len)) = handshake_header(&self.handshake) {
                if let Some(body) = self.handshake.get(4..4 + msg_len) {
                    let hello = parse_hello(kind, body);
                    out.push(Seen::Hello(hello));
                    self.stop();
                    return;
                }
                if msg_len > MAX_HELLO_BYTES {
                    self.give_up(
                        &format!(
                            "a {} of {msg_len} bytes (more than the {MAX_HELLO_BYTES} read)",
                            message_name(kind)
                        ),
                        out,
                    );
                    return;
                }
            }
        }
        self.raw.drain(..used);
    }
}

/// The type and length of the handshake message at the start of `hs`, once its 4-byte header
/// is there.
fn handshake_header(hs: &[u8]) -> Option<(u8, usize)> {
    let h = hs.get(..4)?;
    Some((
        h[0],
        usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]),
    ))
}

fn message_name(kind: u8) -> String {
    match kind {
        HANDSHAKE_CLIENT_HELLO => "ClientHello".into(),
        HANDSHAKE_SERVER_HELLO => "ServerHello".into(),
        other => format!("handshake message of type {other}"),
    }
}

fn content_name(content: u8) -> String {
    match content {
        20 => "ChangeCipherSpec".into(),
        21 => "alert".into(),
        23 => "application data".into(),
        other => format!("type {other}"),
    }
}

/// Parses the body of handshake message `kind`.
pub fn parse_hello(kind: u8, body: &[u8]) -> Hello {
    let parsed = match kind {
        HANDSHAKE_CLIENT_HELLO => client_hello(body).map(Hello::Client),
        HANDSHAKE_SERVER_HELLO => server_hello(body).map(Hello::Server),
        other => Err(format!(
            "the first handshake message is of type {other}, not a hello"
        )),
    };
    parsed.unwrap_or_else(|reason| {
        Hello::Unreadable(Unreadable {
            reason: format!("malformed {}: {reason}", message_name(kind)),
        })
    })
}

/// A bounds-checked cursor: every read says what was short instead of panicking.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.data.len() < n {
            return Err(format!(
                "{what} needs {n} bytes, {} remain",
                self.data.len()
            ));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, String> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self, what: &str) -> Result<Reader<'a>, String> {
        let n = usize::from(self.u8(what)?);
        Ok(Reader::new(self.take(n, what)?))
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self, what: &str) -> Result<Reader<'a>, String> {
        let n = usize::from(self.u16(what)?);
        Ok(Reader::new(self.take(n, what)?))
    }
}

/// The extensions block: (type, body) pairs. Absent in a hello from before TLS 1.2's era.
fn extensions<'a>(r: &mut Reader<'a>) -> Result<Vec<(u16, Reader<'a>)>, String> {
    let mut out = Vec::new();
    if r.is_empty() {
        return Ok(out);
    }
    let mut all = r.vec16("extensions")?;
    while !all.is_empty() {
        let kind = all.u16("extension type")?;
        let body = all.vec16("extension")?;
        out.push((kind, body));
    }
    Ok(out)
}

fn client_hello(body: &[u8]) -> Result<ClientHello, String> {
    let mut r = Reader::new(body);
    let legacy = r.u16("version")?;
    r.take(32, "random")?;
    r.vec8("session id")?;
    r.vec16("cipher suites")?;
    r.vec8("compression methods")?;
    let mut hello = ClientHello {
        server_name: None,
        offered_versions: Vec::new(),
        alpn: Vec::new(),
    };
    for (kind, mut ext) in extensions(&mut r)? {
        match kind {
            EXT_SERVER_NAME => {
                let mut names = ext.vec16("server name list")?;
                while !names.is_empty() {
                    let name_type = names.u8("server name type")?;
                    let name = names.vec16("server name")?;
                    // Type 0 is host_name, the only one defined (RFC 6066 section 3).
                    if name_type == 0 && hello.server_name.is_none() {
                        hello.server_name = Some(crate::chat::printable(name.data));
                    }
                }
            }
            EXT_SUPPORTED_VERSIONS => {
                let mut versions = ext.vec8("supported versions")?;
                while !versions.is_empty() {
                    let v = versions.u16("supported version")?;
                    if !is_grease(v) {
                        hello.offered_versions.push(version_name(v));
                    }
                }
            }
            EXT_ALPN => {
                let mut protocols = ext.vec16("ALPN list")?;
                while !protocols.is_empty() {
                    let p = protocols.vec8("ALPN protocol")?;
                    hello.alpn.push(crate::chat::printable(p.data));
                }
            }
            _ => {}
        }
    }
    if hello.offered_versions.is_empty() {
        hello.offered_versions.push(version_name(legacy));
    }
    Ok(hello)
}

fn server_hello(body: &[u8]) -> Result<ServerHello, String> {
    let mut r = Reader::new(body);
    let legacy = r.u16("version")?;
    let random = r.take(32, "random")?;
    r.vec8("session id")?;
    r.u16("cipher suite")?;
    r.u8("compression method")?;
    let mut version = legacy;
    for (kind, mut ext) in extensions(&mut r)? {
        if kind == EXT_SUPPORTED_VERSIONS {
            version = ext.u16("selected version")?;
        }
    }
    Ok(ServerHello {
        version: version_name(version),
        hello_retry: random == HELLO_RETRY_RANDOM,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record as rustls or openssl would send it: SNI, supported_versions
    /// (with a GREASE value first), ALPN.
    fn client_hello_record(sni: &str) -> Vec<u8> {
        let mut ext = Vec::new();
        // server_name
        let name = sni.as_bytes();
        let mut list = vec![0u8];
        list.extend((name.len() as u16).to_be_bytes());
        list.extend(name);
        let mut sn = (list.len() as u16).to_be_bytes().to_vec();
        sn.extend(list);
        ext.extend(EXT_SERVER_NAME.to_be_bytes());
        ext.extend((sn.len() as u16).to_be_bytes());
        ext.extend(sn);
        // supported_versions: GREASE, 1.3, 1.2
        ext.extend(EXT_SUPPORTED_VERSIONS.to_be_bytes());
        ext.extend(7u16.to_be_bytes());
        ext.extend([6, 0x1a, 0x1a, 0x03, 0x04, 0x03, 0x03]);
        // ALPN: "tcpchat"
        ext.extend(EXT_ALPN.to_be_bytes());
        ext.extend(10u16.to_be_bytes());
        ext.extend(8u16.to_be_bytes());
        ext.push(7);
        ext.extend(b"tcpchat");

        let mut body = vec![0x03, 0x03];
        body.extend([0x11; 32]);
        body.push(0); // session id
        body.extend([0, 2, 0x13, 0x01]); // one cipher suite
        body.extend([1, 0]); // null compression
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(ext);

        let mut hs = vec![HANDSHAKE_CLIENT_HELLO];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        let mut rec = vec![CONTENT_HANDSHAKE, 0x03, 0x01];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    fn watch(chunks: &[&[u8]], finish: bool) -> Vec<Seen> {
        let mut w = Watch::new();
        let mut out = Vec::new();
        for c in chunks {
            w.push(c, &mut out);
        }
        if finish {
            w.finish(&mut out);
        }
        out
    }

    fn expected_client() -> Hello {
        Hello::Client(ClientHello {
            server_name: Some("chat.example".into()),
            offered_versions: vec!["TLS 1.3".into(), "TLS 1.2".into()],
            alpn: vec!["tcpchat".into()],
        })
    }

    #[test]
    fn reads_a_client_hello_however_it_is_split() {
        let rec = client_hello_record("chat.example");
        for cut in 0..=rec.len() {
            let got = watch(&[&rec[..cut], &rec[cut..]], true);
            assert_eq!(
                got,
                [Seen::TlsStart, Seen::Hello(expected_client())],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn reads_a_hello_split_across_records() {
        let rec = client_hello_record("chat.example");
        let hs = &rec[5..];
        let mut two = Vec::new();
        for part in [&hs[..10], &hs[10..]] {
            two.extend([CONTENT_HANDSHAKE, 0x03, 0x03]);
            two.extend((part.len() as u16).to_be_bytes());
            two.extend(part);
        }
        assert_eq!(
            watch(&[&two], false),
            [Seen::TlsStart, Seen::Hello(expected_client())]
        );
    }

    #[test]
    fn a_truncated_client_hello_is_unreadable_not_a_panic() {
        let rec = client_hello_record("chat.example");
        for cut in 3..rec.len() {
            let got = watch(&[&rec[..cut]], true);
            assert_eq!(got.len(), 2, "cut at {cut}: {got:?}");
            assert_eq!(got[0], Seen::TlsStart);
            let Seen::Hello(Hello::Unreadable(u)) = &got[1] else {
                panic!("cut at {cut}: {got:?}");
            };
            assert!(u.reason.contains("the stream ended inside"), "{u:?}");
        }
        let got = watch(&[&rec[..60]], true);
        assert_eq!(
            got[1],
            Seen::Hello(Hello::Unreadable(Unreadable {
                reason: format!(
                    "the stream ended inside the ClientHello: 51 of its {} bytes arrived",
                    rec.len() - 9
                )
            }))
        );
    }

    #[test]
    fn lengths_that_lie_are_reported() {
        // The record claims the whole hello; the hello's inner lengths overrun it.
        let mut rec = client_hello_record("chat.example");
        let session_id_len = 5 + 4 + 2 + 32;
        rec[session_id_len] = 200;
        let got = watch(&[&rec], false);
        let Seen::Hello(Hello::Unreadable(u)) = &got[1] else {
            panic!("{got:?}");
        };
        assert!(
            u.reason.starts_with("malformed ClientHello: session id"),
            "{u:?}"
        );

        let huge = [CONTENT_HANDSHAKE, 0x03, 0x03, 0xff, 0xff];
        let got = watch(&[&huge], false);
        assert!(
            matches!(&got[1], Seen::Hello(Hello::Unreadable(u)) if u.reason.contains("65535")),
            "{got:?}"
        );
    }

    #[test]
    fn not_tls_is_left_alone() {
        for head in [
            &b"HELLO-FROM alice\n"[..],
            b"\x16\x03\x00\x00\x05",
            b"\x17\x03\x03",
        ] {
            assert_eq!(watch(&[head], true), [], "{head:?}");
        }
        // Fewer than three bytes: undecided, and the end of the stream says nothing.
        assert_eq!(watch(&[b"\x16\x03"], true), []);
    }

    #[test]
    fn server_hello_version_comes_from_supported_versions() {
        let mut body = vec![0x03, 0x03];
        body.extend([0x22; 32]);
        body.push(0);
        body.extend([0x13, 0x01, 0]);
        body.extend(6u16.to_be_bytes());
        body.extend(EXT_SUPPORTED_VERSIONS.to_be_bytes());
        body.extend(2u16.to_be_bytes());
        body.extend([0x03, 0x04]);
        assert_eq!(
            parse_hello(HANDSHAKE_SERVER_HELLO, &body),
            Hello::Server(ServerHello {
                version: "TLS 1.3".into(),
                hello_retry: false
            })
        );
        // Without the extension (TLS 1.2), its legacy version.
        assert_eq!(
            parse_hello(HANDSHAKE_SERVER_HELLO, &body[..38]),
            Hello::Server(ServerHello {
                version: "TLS 1.2".into(),
                hello_retry: false
            })
        );
    }

    proptest::proptest! {
        /// Any bytes after a TLS record header, however chunked: no panic, at most one hello
        /// after the start, the same answer as in one piece, and bounded memory.
        #[test]
        fn hostile_bytes_give_one_answer_however_chunked(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            cut in 0usize..700,
        ) {
            let mut data = vec![CONTENT_HANDSHAKE, 0x03, 0x03];
            data.extend(&body);
            let whole = watch(&[&data], true);
            let cut = cut.min(data.len());
            let mut w = Watch::new();
            let mut split = Vec::new();
            w.push(&data[..cut], &mut split);
            proptest::prop_assert!(w.raw.len() <= MAX_HELLO_BYTES + MAX_RECORD_BYTES);
            w.push(&data[cut..], &mut split);
            w.finish(&mut split);
            proptest::prop_assert_eq!(&split, &whole);
            proptest::prop_assert_eq!(whole.len(), 2);
            proptest::prop_assert_eq!(&whole[0], &Seen::TlsStart);
        }
    }

    #[test]
    fn grease_is_recognised() {
        assert!(is_grease(0x1a1a) && is_grease(0xfafa));
        assert!(!is_grease(0x0304) && !is_grease(0x1a2a));
    }
}
