//! `tcpchat cert`: a self-signed certificate and key for trying TLS without a CA.
//!
//! It writes `cert.pem` and `key.pem` (PEM; the key readable by its owner only) for the
//! given host names and addresses, then prints how to serve with them and how to make a
//! client trust them. It is deliberately not a CA: for a public server, use a certificate
//! from one (certbot and the like); this is the five-minute path for a classroom or a laptop.
//! The key is ECDSA P-256 made by rcgen with ring, the project's one crypto provider.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls_pki_types::ServerName;

use crate::UsageError;

use tcpchat_proto::DEFAULT_TLS_PORT;

/// Names the certificate is for when no `--host` is given: this machine, both families.
const DEFAULT_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";

/// Validity starts this long before now, so a client whose clock is a little behind the
/// machine that made the certificate still accepts it.
const BACKDATE: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Args)]
#[command(after_help = "Example:  tcpchat cert --host chat.example.org --out ./tls")]
pub struct CertArgs {
    /// A host name or IP address clients will connect to (repeat for several; default:
    /// localhost, 127.0.0.1 and ::1)
    #[arg(long = "host", value_name = "NAME|IP")]
    hosts: Vec<String>,

    /// Directory for cert.pem and key.pem (created if missing)
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,

    /// Days the certificate is valid
    #[arg(long, value_name = "N", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,

    /// Replace cert.pem and key.pem if they already exist
    #[arg(long)]
    force: bool,
}

pub fn run(args: CertArgs) -> anyhow::Result<ExitCode> {
    let hosts: Vec<String> = if args.hosts.is_empty() {
        DEFAULT_HOSTS.iter().map(|h| h.to_string()).collect()
    } else {
        // `[::1]` as in a URL is the address ::1.
        args.hosts
            .iter()
            .map(|h| {
                h.strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(h)
                    .to_string()
            })
            .collect()
    };
    let sans = hosts
        .iter()
        .map(|h| san(h))
        .collect::<Result<Vec<_>, _>>()?;

    let cert_path = args.out.join(CERT_FILE);
    let key_path = args.out.join(KEY_FILE);
    if !args.force {
        // Checked for both before writing either, so a refusal leaves nothing half done.
        for path in [&cert_path, &key_path] {
            if path.exists() {
                return Err(UsageError(format!(
                    "{} already exists; not replacing it (use --force to overwrite, or --out \
                     another directory)",
                    path.display()
                ))
                .into());
            }
        }
    }

    let key = KeyPair::generate().context("cannot generate a key")?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, hosts[0].as_str());
    dn.push(DnType::OrganizationName, "tcpchat self-signed");
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::from_secs(u64::from(args.days) * 24 * 60 * 60);
    let cert = params
        .self_signed(&key)
        .context("cannot build the certificate")?;

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644, args.force)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600, args.force)?;

    print_advice(&hosts, &cert_path, &key_path, params.not_after);
    Ok(ExitCode::SUCCESS)
}

/// A `--host` value as a subject alternative name. A name must be one a client can ask for
/// (`tls://NAME`), so it is checked with the same rules the client's verifier uses.
fn san(host: &str) -> Result<SanType, UsageError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let bad = |why: &str| {
        UsageError(format!(
            "--host {host:?}: {why}; give a DNS name such as chat.example.org or an IP address \
             such as 192.0.2.7, one per --host"
        ))
    };
    if host.contains(',') {
        return Err(bad("one name per --host"));
    }
    if host.contains(':') || host.contains('/') {
        return Err(bad("not a host name (no port, scheme or path)"));
    }
    if host.contains('*') {
        return Err(bad("wildcard names are not supported"));
    }
    match ServerName::try_from(host) {
        Ok(ServerName::DnsName(_)) => {}
        _ => return Err(bad("not a valid host name")),
    }
    let ia5 = host.try_into().map_err(|_| bad("not a valid host name"))?;
    Ok(SanType::DnsName(ia5))
}

/// Writes `data` to a new file with `mode` (Unix), replacing an existing one only if `force`.
fn write_file(path: &Path, data: &[u8], mode: u32, force: bool) -> anyhow::Result<()> {
    if force {
        // Removed rather than truncated, so the new file gets `mode` even if the old one
        // was readable by others.
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
        }
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn print_advice(hosts: &[String], cert: &Path, key: &Path, until: time::OffsetDateTime) {
    // Absolute paths, so the printed commands work from any directory.
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (cert, key) = (abs(cert), abs(key));
    let host = &hosts[0];
    let url_host = if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let slug: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    println!(
        "wrote a self-signed certificate for {} (valid until {}):",
        hosts.join(", "),
        until.date()
    );
    println!("  certificate  {}", cert.display());
    println!(
        "  private key  {}  (readable by its owner only; keep it secret)",
        key.display()
    );
    println!();
    println!("Serve with it:");
    println!(
        "  tcpchat serve --tls-listen 0.0.0.0:{DEFAULT_TLS_PORT} --tls-cert {} --tls-key {}",
        cert.display(),
        key.display()
    );
    println!();
    println!("No CA signed it, so a client must be told to trust it. Either per connection:");
    println!("  tcpchat connect tls://{url_host} --ca {}", cert.display());
    println!("or for every program on a Debian or Ubuntu machine (as root):");
    println!(
        "  cp {} /usr/local/share/ca-certificates/tcpchat-{slug}.crt && update-ca-certificates",
        cert.display()
    );
}
