//! `vxwg up --config FILE`: the node's TOML configuration (documented in docs/config.md).
//!
//! Parsing checks everything before anything is applied: an error names the field and the reason,
//! and the daemon exits without creating anything.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;
use vxwg::control::keys::Key;
use vxwg::control::uapi::{DeviceUpdate, PeerUpdate};
use vxwg::dataplane::io::netlink::InterfaceAddress;
use vxwg::dataplane::route::IpNet;

/// Default UDP port (the one tailscaled uses, so firewalls already open for it keep working).
pub const DEFAULT_LISTEN_PORT: u16 = 41641;
/// Default routing table for peers' AllowedIPs (tailscaled's).
pub const DEFAULT_TABLE: u32 = 52;
/// Default `ip rule` priority sending lookups to that table (tailscaled's).
pub const DEFAULT_RULE_PRIORITY: u32 = 5270;
/// Default mark on the tunnel's own UDP packets when vxwg installs routes (tailscaled's value).
pub const DEFAULT_FWMARK: u32 = 0x0008_0000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    private_key_file: PathBuf,
    #[serde(default)]
    listen_port: Option<u16>,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    fwmark: Option<u32>,
    #[serde(default)]
    routing: Option<RawRouting>,
    #[serde(default, rename = "peer")]
    peers: Vec<RawPeer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    #[serde(default)]
    table: Option<u32>,
    #[serde(default)]
    rule_priority: Option<u32>,
    /// Install routes and the rule at all (off: addresses only, routing left to the operator).
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    public_key: String,
    #[serde(default)]
    preshared_key_file: Option<PathBuf>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    allowed_ips: Vec<String>,
    #[serde(default)]
    persistent_keepalive: Option<u16>,
}

/// Routing the daemon installs for peers' AllowedIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routing {
    pub enabled: bool,
    pub table: u32,
    pub rule_priority: u32,
}

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    pub update: DeviceUpdate,
    pub addresses: Vec<InterfaceAddress>,
    pub mtu: u32,
    pub routing: Routing,
    fwmark_default: bool,
}

impl Config {
    /// The mark on the tunnel's own UDP packets (0: none).
    pub fn fwmark(&self) -> u32 {
        self.update.fwmark.flatten().unwrap_or(0)
    }

    /// Whether the mark is vxwg's default rather than one the operator chose.
    pub fn fwmark_is_default(&self) -> bool {
        self.fwmark_default
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, path.parent().unwrap_or(Path::new("."))).with_context(|| format!("in {}", path.display()))
    }

    /// Validates a configuration; relative key file paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> anyhow::Result<Config> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
        let private_key = read_key(&base.join(&raw.private_key_file)).context("private_key_file")?;

        let mut addresses = Vec::new();
        for (i, a) in raw.addresses.iter().enumerate() {
            addresses.push(a.parse::<InterfaceAddress>().map_err(|e| anyhow::anyhow!("addresses[{i}] = {a:?}: {e}"))?);
        }
        let has_v6 = addresses.iter().any(|a| a.addr().is_ipv6());
        let mtu = raw.mtu.unwrap_or(1420);
        let min_mtu = if has_v6 { 1280 } else { 576 };
        if !(min_mtu..=65_535).contains(&mtu) {
            bail!("mtu = {mtu}: must be between {min_mtu} and 65535{}", if has_v6 { " (IPv6 needs 1280)" } else { "" });
        }

        let mut peers = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, p) in raw.peers.iter().enumerate() {
            let at = |field: &str| format!("peer[{i}].{field}");
            let public_key =
                Key::from_base64(&p.public_key).map_err(|e| anyhow::anyhow!("{}: {e}", at("public_key")))?;
            if !vxwg::dataplane::wireguard::is_usable_public_key(&public_key.0) {
                bail!("{}: a low-order point, no handshake can succeed with it", at("public_key"));
            }
            if public_key == private_key.public() {
                bail!("{}: this is our own public key", at("public_key"));
            }
            if !seen.insert(public_key) {
                bail!("{}: the same peer appears twice", at("public_key"));
            }
            let mut update = PeerUpdate::new(public_key);
            if let Some(file) = &p.preshared_key_file {
                update.preshared_key =
                    Some(Some(read_key(&base.join(file)).with_context(|| at("preshared_key_file"))?));
            }
            if let Some(ep) = &p.endpoint {
                update.endpoint = Some(resolve_endpoint(ep).with_context(|| format!("{} = {ep:?}", at("endpoint")))?);
            }
            for (j, a) in p.allowed_ips.iter().enumerate() {
                let net: IpNet = a.parse().map_err(|e| anyhow::anyhow!("{}[{j}] = {a:?}: {e}", at("allowed_ips")))?;
                update.allowed_ips.push(net);
            }
            update.replace_allowed_ips = true;
            update.persistent_keepalive = p.persistent_keepalive;
            peers.push(update);
        }

        let routing = raw.routing.unwrap_or(RawRouting { table: None, rule_priority: None, enabled: None });
        let routing = Routing {
            enabled: routing.enabled.unwrap_or(true),
            table: routing.table.unwrap_or(DEFAULT_TABLE),
            rule_priority: routing.rule_priority.unwrap_or(DEFAULT_RULE_PRIORITY),
        };
        if routing.table == 0 || (253..=255).contains(&routing.table) {
            bail!(
                "routing.table = {}: 0 and the kernel's default/main/local tables (253-255) are not ours to fill",
                routing.table
            );
        }

        let fwmark_default = routing.enabled && raw.fwmark.is_none();
        let fwmark = if fwmark_default { Some(DEFAULT_FWMARK) } else { raw.fwmark.filter(|&m| m != 0) };
        if routing.enabled && fwmark.is_none() {
            bail!(
                "fwmark = 0: with routing enabled the tunnel's own packets need a mark to stay out of table {}",
                routing.table
            );
        }
        let update = DeviceUpdate {
            private_key: Some(Some(private_key)),
            listen_port: Some(raw.listen_port.unwrap_or(DEFAULT_LISTEN_PORT)),
            fwmark: Some(fwmark),
            replace_peers: true,
            peers,
        };
        Ok(Config { update, addresses, mtu, routing, fwmark_default })
    }
}

fn read_key(path: &Path) -> anyhow::Result<Key> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Key::from_base64(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// `host:port` or `[v6]:port`; a name is resolved once, at start-up.
fn resolve_endpoint(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !s.contains(':') {
        bail!("expected HOST:PORT");
    }
    s.to_socket_addrs()?.next().with_context(|| format!("{s} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with_key() -> (tempdir::Dir, String) {
        let d = tempdir::Dir::new();
        let key = Key::generate_private(&mut rand_core::OsRng);
        std::fs::write(d.path().join("private.key"), key.to_base64()).unwrap();
        (d, key.public().to_base64())
    }

    /// A throwaway directory removed on drop.
    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "vxwg-config-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    const PEER: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    #[test]
    fn full_example_parses() {
        let (d, _) = dir_with_key();
        let text = format!(
            r#"
private_key_file = "private.key"
listen_port = 41641
addresses = ["100.64.0.1/24", "fd7a:115c:a1e0::1/64"]
mtu = 1280
[routing]
table = 52
rule_priority = 5270
[[peer]]
public_key = "{PEER}"
endpoint = "192.0.2.7:41641"
allowed_ips = ["100.64.0.2/32", "10.42.1.0/24"]
persistent_keepalive = 25
"#
        );
        let c = Config::parse(&text, d.path()).unwrap();
        assert_eq!(c.mtu, 1280);
        assert_eq!(c.addresses.len(), 2);
        assert_eq!(c.addresses[0].to_string(), "100.64.0.1/24");
        assert_eq!(c.fwmark(), DEFAULT_FWMARK);
        assert!(c.fwmark_is_default());
        assert_eq!(c.update.listen_port, Some(41641));
        let p = &c.update.peers[0];
        assert_eq!(p.allowed_ips.len(), 2);
        assert_eq!(p.persistent_keepalive, Some(25));
        assert_eq!(p.endpoint, Some("192.0.2.7:41641".parse().unwrap()));
        assert_eq!(c.routing, Routing { enabled: true, table: 52, rule_priority: 5270 });
    }

    #[track_caller]
    fn err(text: &str) -> String {
        let (d, _) = dir_with_key();
        format!("{:#}", Config::parse(text, d.path()).unwrap_err())
    }

    #[test]
    fn errors_name_the_field_and_the_reason() {
        let base = "private_key_file = \"private.key\"\n";
        let cases = [
            (format!("{base}listen_port = 70000"), "listen_port"),
            (format!("{base}addresses = [\"100.64.0\"]"), "addresses[0]"),
            (format!("{base}addresses = [\"100.64.0.1/33\"]"), "longer than 32"),
            (format!("{base}mtu = 100"), "mtu = 100"),
            (format!("{base}addresses = [\"fd00::1/64\"]\nmtu = 1200"), "IPv6 needs 1280"),
            (format!("{base}bogus = 1"), "bogus"),
            (format!("{base}[[peer]]\npublic_key = \"nope\""), "peer[0].public_key"),
            (
                format!("{base}[[peer]]\npublic_key = \"{PEER}\"\nallowed_ips = [\"10.0.0.0/40\"]"),
                "peer[0].allowed_ips[0]",
            ),
            (format!("{base}[[peer]]\npublic_key = \"{PEER}\"\nendpoint = \"nowhere\""), "peer[0].endpoint"),
            (format!("{base}[[peer]]\npublic_key = \"{PEER}\"\n[[peer]]\npublic_key = \"{PEER}\""), "twice"),
            (format!("{base}[[peer]]\npublic_key = \"{}\"", "A".repeat(43) + "="), "low-order"),
            (format!("{base}[routing]\ntable = 254"), "routing.table"),
            ("private_key_file = \"missing.key\"".to_string(), "private_key_file"),
        ];
        for (text, needle) in cases {
            let e = err(&text);
            assert!(e.contains(needle), "error for {text:?} should mention {needle:?}: {e}");
        }
    }

    #[test]
    fn own_key_as_peer_is_refused() {
        let (d, public) = dir_with_key();
        let text = format!("private_key_file = \"private.key\"\n[[peer]]\npublic_key = \"{public}\"");
        let e = format!("{:#}", Config::parse(&text, d.path()).unwrap_err());
        assert!(e.contains("our own public key"), "{e}");
    }
}
