//! The page's files, embedded in the binary with `include_bytes!`: no build step, no CDN,
//! nothing fetched at run time, so the page works on a machine with no internet.
//!
//! Plain modern JavaScript, HTML and CSS, written by hand: nothing to install to build or
//! change them, every byte that runs in the browser is in this repository to audit, and the
//! binary serves exactly the files under `crates/web/assets/`.
//!
//! Caching: `Cache-Control: no-cache` with an `ETag` of the embedded files' hash. The
//! browser keeps its copy and asks each time whether it is current (a 304 costs one round
//! trip), so a new binary's page is never hidden behind a stale one.

use std::sync::LazyLock;

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// Every file the page needs, by the path it is served at.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../assets/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/app.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/style.css"),
    },
    Asset {
        path: "/icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../assets/icon.svg"),
    },
];

/// The asset served at `path`; `/index.html` is `/`.
pub fn find(path: &str) -> Option<&'static Asset> {
    let path = if path == "/index.html" { "/" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

pub const CACHE_CONTROL: &str = "no-cache";

/// The strict policy: scripts, styles, images only from this server, no inline script or
/// style, WebSockets only back to this server (`'self'` covers ws:// and wss:// of the same
/// host in current browsers), no framing, no forms elsewhere, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Sent with every HTTP answer.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
];

/// The `ETag` of every asset: one FNV-1a hash over all of them (a change to any file is a
/// new page), quoted as the header wants it.
pub fn etag() -> &'static str {
    static ETAG: LazyLock<String> = LazyLock::new(|| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for a in ASSETS {
            for &b in a.path.as_bytes().iter().chain(a.body) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("\"{h:016x}\"")
    });
    &ETAG
}
