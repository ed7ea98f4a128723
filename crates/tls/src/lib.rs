//! TLS for tcpchat, in one place: the crypto provider every part uses, and (in its modules)
//! the server's certificate handling and the clients' verification.
//!
//! The protocol inside TLS is exactly the classic one (`docs/protocol.md`, "TLS"); nothing
//! here knows about lines or names. It stands apart so that the server, the client, `check`
//! and `bench` build their rustls configurations the same way, with the same provider and the
//! same protocol versions, and so that the crypto choice is made once.
//!
//! The provider is *ring*: it builds with a C compiler alone, where aws-lc-rs (rustls's
//! default) also needs cmake, and it covers every cipher suite TLS 1.2 and 1.3 clients offer
//! today. Only TLS 1.3 and 1.2 are enabled.

pub mod client;
pub mod server;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use tcpchat_proto::DEFAULT_TLS_PORT;

/// The protocol versions tcpchat speaks: TLS 1.3 and TLS 1.2, nothing older.
pub static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The crypto provider every tcpchat TLS configuration is built with (*ring*).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_offers_tls13_and_tls12_suites_only() {
        let provider = provider();
        let versions: Vec<_> = provider
            .cipher_suites
            .iter()
            .map(|s| s.version().version)
            .collect();
        assert!(versions.contains(&rustls::ProtocolVersion::TLSv1_3));
        assert!(versions.contains(&rustls::ProtocolVersion::TLSv1_2));
        assert!(versions.iter().all(|v| matches!(
            v,
            rustls::ProtocolVersion::TLSv1_3 | rustls::ProtocolVersion::TLSv1_2
        )));
        // A server config with our versions builds with this provider.
        rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .expect("ring supports TLS 1.2 and 1.3");
    }
}
