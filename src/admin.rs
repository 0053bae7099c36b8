//! `vxwg admin`: the operator's tools for the netmap's trust chain — create signing keys, sign
//! node certificates, node records and the policy, and inspect documents (docs/control.md).
//!
//! Secret keys are written with mode 0600 and never overwritten; signed documents are written
//! atomically (temporary file, then rename) so a watched directory never holds a torn document.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use serde::Deserialize;
use vxwg::control::keys::Key;
use vxwg::control::netmap::{
    self, Acl, AutoApprover, Document, Envelope, Kind, NodeCert, NodeRecord, Payload, Policy, SigningKey, Trust,
    VerifyingKey, DEFAULT_CERT_DAYS,
};
use vxwg::control::source::{FileSource, Source};

const DAY: u64 = 86_400;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create the operator signing key DIR/operator.key (mode 0600) and print its public key.
    Init {
        /// Directory for the operator key (created if missing).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Create a node signing key (mode 0600) and print its public key (for `sign-node --node-key`).
    Keygen {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign a node certificate with the operator key.
    SignNode {
        #[arg(long, value_name = "FILE")]
        operator_key: PathBuf,
        /// Node name.
        #[arg(long)]
        name: String,
        /// The node's WireGuard public key (base64).
        #[arg(long, value_name = "KEY")]
        wg_public_key: String,
        /// The node's signing public key (base64, as `keygen` prints): it signs the node's records.
        #[arg(long, value_name = "PUB")]
        node_key: String,
        /// Overlay addresses; the first is the node's VTEP address.
        #[arg(long = "address", value_name = "IP", num_args = 1.., required = true)]
        addresses: Vec<IpAddr>,
        /// ACL tags, such as tag:k8s.
        #[arg(long = "tag", value_name = "TAG", num_args = 1..)]
        tags: Vec<String>,
        /// Days until the certificate expires.
        #[arg(long, default_value_t = DEFAULT_CERT_DAYS)]
        days: u64,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign a node record (endpoints, advertised routes) with the node's signing key.
    SignRecord {
        /// The node signing key file (from `keygen`).
        #[arg(long, value_name = "FILE")]
        node_key: PathBuf,
        #[arg(long)]
        name: String,
        /// Endpoints in preference order (same-LAN address first).
        #[arg(long = "endpoint", value_name = "ADDR", num_args = 1..)]
        endpoints: Vec<SocketAddr>,
        /// Advertised subnet routes.
        #[arg(long = "route", value_name = "CIDR", num_args = 1..)]
        routes: Vec<String>,
        /// The node's VTEP MAC address (aa:bb:cc:dd:ee:ff).
        #[arg(long, value_name = "MAC")]
        vtep_mac: Option<String>,
        /// Seconds until the record expires (a running node refreshes its own record).
        #[arg(long, default_value_t = DEFAULT_CERT_DAYS * DAY)]
        ttl_secs: u64,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign a policy (TOML with [[auto_approvers]] prefix/tags and [[acl]] src/dst) with the operator key.
    SignPolicy {
        #[arg(long, value_name = "FILE")]
        operator_key: PathBuf,
        #[arg(long, value_name = "FILE.toml")]
        policy: PathBuf,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print each document in FILE or DIR: kind, content, signer, whether it verifies, expiry.
    /// Exits non-zero if any document is invalid.
    Inspect {
        /// A document, a JSON array of documents, or a directory of *.json documents.
        path: PathBuf,
        /// The operator public key: also check who signed certificates and the policy, and
        /// build the netmap to report every rejection.
        #[arg(long, value_name = "PUB")]
        operator: Option<String>,
    },
}

pub fn run(command: AdminCommand) -> anyhow::Result<()> {
    let now = SystemTime::now();
    match command {
        AdminCommand::Init { dir } => {
            create_private_dir(&dir)?;
            let key = new_key_file(&dir.join("operator.key"))?;
            write_atomic(&dir.join("operator.pub"), format!("{}\n", key.public()).as_bytes())?;
            println!("{}", key.public());
            Ok(())
        }
        AdminCommand::Keygen { out } => {
            let key = new_key_file(&out)?;
            println!("{}", key.public());
            Ok(())
        }
        AdminCommand::SignNode { operator_key, name, wg_public_key, node_key, addresses, tags, days, out } => {
            let operator = read_key_file(&operator_key)?;
            netmap::check_name(&name).map_err(|e| anyhow!("--name: {e}"))?;
            let cert = NodeCert {
                wireguard_key: Key::from_base64(&wg_public_key).map_err(|e| anyhow!("--wg-public-key: {e}"))?,
                node_key: VerifyingKey::from_base64(&node_key).map_err(|e| anyhow!("--node-key: {e}"))?,
                addresses,
                tags,
                not_after: unix(now).saturating_add(days.saturating_mul(DAY)),
                name,
            };
            check_round_trip(NodeCert::from_payload(&cert.to_payload()))?;
            write_atomic(&out, &cert.sign(&operator).to_json())
        }
        AdminCommand::SignRecord { node_key, name, endpoints, routes, vtep_mac, ttl_secs, out } => {
            let key = read_key_file(&node_key)?;
            netmap::check_name(&name).map_err(|e| anyhow!("--name: {e}"))?;
            let routes = routes
                .iter()
                .map(|r| r.parse().map_err(|e| anyhow!("--route {r:?}: {e}")))
                .collect::<anyhow::Result<_>>()?;
            let vtep_mac =
                vtep_mac.as_deref().map(netmap::parse_mac).transpose().map_err(|e| anyhow!("--vtep-mac: {e}"))?;
            let issued_at = unix(now);
            let record = NodeRecord {
                name,
                endpoints,
                routes,
                vtep_mac,
                issued_at,
                expires: issued_at.saturating_add(ttl_secs),
            };
            write_atomic(&out, &record.sign(&key).to_json())
        }
        AdminCommand::SignPolicy { operator_key, policy, out } => {
            let operator = read_key_file(&operator_key)?;
            let policy = read_policy_toml(&policy, unix(now))?;
            write_atomic(&out, &policy.sign(&operator).to_json())
        }
        AdminCommand::Inspect { path, operator } => {
            let operator =
                operator.map(|o| VerifyingKey::from_base64(&o).map_err(|e| anyhow!("--operator: {e}"))).transpose()?;
            let invalid = inspect(&path, operator, now)?;
            if invalid > 0 {
                bail!("{invalid} invalid document(s) in {}", path.display());
            }
            Ok(())
        }
    }
}

fn unix(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A payload that would not parse back is refused before it is signed.
fn check_round_trip<T>(parsed: Result<T, netmap::RejectReason>) -> anyhow::Result<()> {
    parsed.map(|_| ()).map_err(|e| anyhow!("{e}"))
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Creates a new signing key in `path` (mode 0600); refuses to overwrite an existing key.
fn new_key_file(path: &Path) -> anyhow::Result<SigningKey> {
    let key = SigningKey::generate().map_err(|e| anyhow!("generating a key: {e}"))?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating key file {} (an existing key is never overwritten)", path.display()))?;
    writeln!(file, "{}", key.to_base64())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

fn read_key_file(path: &Path) -> anyhow::Result<SigningKey> {
    let text = fs::read_to_string(path).with_context(|| format!("reading key file {}", path.display()))?;
    SigningKey::from_base64(&text).map_err(|e| anyhow!("key file {}: {e}", path.display()))
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path.file_name().ok_or_else(|| anyhow!("{}: not a file name", path.display()))?;
    let temp = path.with_file_name(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// The policy as operators write it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyToml {
    /// Defaults to the signing time, so a newly signed policy supersedes older ones.
    version: Option<u64>,
    #[serde(default)]
    auto_approvers: Vec<AutoApproverToml>,
    #[serde(default)]
    acl: Vec<AclToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoApproverToml {
    prefix: String,
    tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AclToml {
    src: String,
    dst: Vec<String>,
}

fn read_policy_toml(path: &Path, now: u64) -> anyhow::Result<Policy> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let raw: PolicyToml =
        toml::from_str(&text).map_err(|e| anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
    let mut auto_approvers = Vec::new();
    for (i, a) in raw.auto_approvers.into_iter().enumerate() {
        let prefix = a
            .prefix
            .parse()
            .map_err(|e| anyhow!("{}: auto_approvers[{i}].prefix {:?}: {e}", path.display(), a.prefix))?;
        auto_approvers.push(AutoApprover { prefix, tags: a.tags });
    }
    let acls = raw.acl.into_iter().map(|a| Acl { src: a.src, dst: a.dst }).collect();
    let policy = Policy { version: raw.version.unwrap_or(now), issued_at: now, auto_approvers, acls };
    // The same checks a node applies (tags well formed), named by field.
    Policy::from_payload(&policy.to_payload()).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(policy)
}

/// Prints every document under `path`; returns how many are invalid.
fn inspect(path: &Path, operator: Option<VerifyingKey>, now: SystemTime) -> anyhow::Result<usize> {
    let docs = FileSource::new(path).next(Duration::ZERO)?.unwrap_or_default();
    if docs.is_empty() {
        bail!("{}: no documents (*.json)", path.display());
    }
    let now_secs = unix(now);
    // With the operator key the full netmap check runs, so records are checked against the
    // certificates present and conflicts are found too.
    let rejections = operator.map(|operator| netmap::build(&Trust { operator }, "", &docs, now, &|_| false).rejections);
    let bound_keys: Vec<(String, VerifyingKey)> = docs
        .iter()
        .filter_map(|d| match Envelope::open(&d.bytes) {
            Ok((_, Payload::Cert(cert))) => Some((cert.name, cert.node_key)),
            _ => None,
        })
        .collect();
    let mut invalid = 0;
    let mut out = std::io::stdout().lock();
    for doc in &docs {
        let mut problems = inspect_one(&mut out, doc, operator, &bound_keys, now_secs)?;
        if let Some(rejections) = &rejections {
            for r in rejections.iter().filter(|r| r.key == doc.key) {
                let reason = r.reason.to_string();
                if !problems.contains(&reason) {
                    problems.push(reason);
                }
            }
        }
        if problems.is_empty() {
            writeln!(out, "  verdict:   valid")?;
        } else {
            invalid += 1;
            for p in &problems {
                writeln!(out, "  verdict:   INVALID: {p}")?;
            }
        }
    }
    Ok(invalid)
}

/// Prints one document; returns what is wrong with it on its own.
fn inspect_one(
    out: &mut impl Write,
    doc: &Document,
    operator: Option<VerifyingKey>,
    bound_keys: &[(String, VerifyingKey)],
    now: u64,
) -> anyhow::Result<Vec<String>> {
    writeln!(out, "{}", doc.key)?;
    let envelope = match Envelope::parse(&doc.bytes) {
        Ok(envelope) => envelope,
        Err(e) => return Ok(vec![e.to_string()]),
    };
    let mut problems = Vec::new();
    writeln!(out, "  kind:      {}", envelope.kind)?;
    let who = if Some(envelope.signer) == operator {
        "the operator".to_owned()
    } else if let Some((name, _)) = bound_keys.iter().find(|(_, k)| *k == envelope.signer) {
        format!("node key of {name}")
    } else {
        "unknown key".to_owned()
    };
    writeln!(out, "  signer:    {} ({who})", envelope.signer)?;
    if envelope.verify() {
        writeln!(out, "  signature: valid")?;
    } else {
        writeln!(out, "  signature: BAD")?;
        problems.push(netmap::RejectReason::BadSignature { signer: envelope.signer }.to_string());
    }
    let payload = match envelope.decode() {
        Ok(payload) => payload,
        Err(e) => {
            problems.push(e.to_string());
            return Ok(problems);
        }
    };
    // A certificate is valid through its not_after second; a record is gone from its expires second.
    let expiry = |out: &mut dyn Write, label: &str, at: u64, expired: bool| -> std::io::Result<bool> {
        let when = if expired {
            format!("expired {} ago", span(now.saturating_sub(at)))
        } else {
            format!("in {}", span(at.saturating_sub(now)))
        };
        writeln!(out, "  {label:<10} {at} ({when})")?;
        Ok(expired)
    };
    match payload {
        Payload::Cert(cert) => {
            writeln!(out, "  node:      {}", cert.name)?;
            writeln!(out, "  wireguard: {}", cert.wireguard_key.to_base64())?;
            writeln!(out, "  node key:  {}", cert.node_key)?;
            writeln!(out, "  addresses: {}", join(&cert.addresses))?;
            writeln!(out, "  tags:      {}", cert.tags.join(", "))?;
            if expiry(out, "not after:", cert.not_after, now > cert.not_after)? {
                problems.push(netmap::RejectReason::CertExpired { not_after: cert.not_after }.to_string());
            }
        }
        Payload::Record(record) => {
            writeln!(out, "  node:      {}", record.name)?;
            writeln!(out, "  endpoints: {}", join(&record.endpoints))?;
            writeln!(out, "  routes:    {}", join(&record.routes))?;
            if let Some(mac) = record.vtep_mac {
                writeln!(out, "  vtep mac:  {}", netmap::format_mac(&mac))?;
            }
            writeln!(out, "  issued:    {}", record.issued_at)?;
            if expiry(out, "expires:", record.expires, now >= record.expires)? {
                problems.push(netmap::RejectReason::RecordExpired { expires: record.expires }.to_string());
            }
        }
        Payload::Policy(policy) => {
            writeln!(out, "  version:   {} (issued {})", policy.version, policy.issued_at)?;
            for a in &policy.auto_approvers {
                writeln!(out, "  approve:   {} for {}", a.prefix, a.tags.join(", "))?;
            }
            for a in &policy.acls {
                writeln!(out, "  acl:       {} -> {}", a.src, a.dst.join(", "))?;
            }
        }
    }
    if matches!(envelope.kind, Kind::NodeCert | Kind::Policy) && operator.is_some_and(|o| o != envelope.signer) {
        problems.push(netmap::RejectReason::UnknownSigner { signer: envelope.signer }.to_string());
    }
    Ok(problems)
}

fn join<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        return "(none)".into();
    }
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// `89d 23h`, `5h 3m`, `42s`.
fn span(secs: u64) -> String {
    match secs {
        s if s >= DAY => format!("{}d {}h", s / DAY, s % DAY / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}
