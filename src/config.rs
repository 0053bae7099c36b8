//! `vxwg up --config FILE`: the node's TOML configuration (documented in docs/config.md).
//!
//! Parsing checks everything before anything is applied: an error names the field and the reason,
//! and the daemon exits without creating anything.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use vxwg::control::keys::Key;
use vxwg::control::netmap::{check_name, SigningKey, VerifyingKey};
use vxwg::control::uapi::{DeviceUpdate, PeerUpdate};
use vxwg::dataplane::engine::pod::RemoteVtep;
use vxwg::dataplane::io::netlink::InterfaceAddress;
use vxwg::dataplane::mtu;
use vxwg::dataplane::route::IpNet;
use vxwg::dataplane::wire::ethernet::EthernetAddress;
use vxwg::dataplane::wire::vxlan::Vni;

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
    workers: Option<usize>,
    #[serde(default)]
    pin_workers: Option<bool>,
    #[serde(default)]
    assist: Option<crate::assist::AssistMode>,
    #[serde(default)]
    routing: Option<RawRouting>,
    #[serde(default)]
    vxlan: Option<RawVxlan>,
    #[serde(default)]
    control: Option<RawControl>,
    #[serde(default, rename = "peer")]
    peers: Vec<RawPeer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVxlan {
    #[serde(default)]
    vni: Option<u32>,
    #[serde(default)]
    port: Option<u16>,
    vtep_mac: Option<String>,
    #[serde(default)]
    pod_interface: Option<String>,
    #[serde(default)]
    pod_cidrs: Vec<String>,
    #[serde(default)]
    pod_mtu: Option<u32>,
    #[serde(default)]
    clamp_mss: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    node: Option<String>,
    operator_key: Option<String>,
    signing_key_file: Option<PathBuf>,
    source: Option<String>,
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    lease_ttl_secs: Option<u64>,
    #[serde(default)]
    advertise_endpoints: Vec<String>,
    #[serde(default)]
    advertise_routes: Vec<String>,
    #[serde(default)]
    record_ttl_secs: Option<u64>,
    #[serde(default)]
    refresh_secs: Option<u64>,
    #[serde(default)]
    persistent_keepalive: Option<u16>,
    #[serde(default)]
    stale_after_secs: Option<u64>,
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
    #[serde(default)]
    vtep_mac: Option<String>,
    #[serde(default)]
    vtep_ip: Option<String>,
    #[serde(default)]
    pod_cidrs: Vec<String>,
}

/// Default VXLAN network identifier (flannel's).
pub const DEFAULT_VNI: u32 = 1;
/// Default VXLAN UDP port (flannel's and Cilium's, Linux's default too).
pub const DEFAULT_VXLAN_PORT: u16 = 8472;

/// One remote pod CIDR and the VTEP (WireGuard peer) that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodRoute {
    pub net: IpNet,
    pub remote: RemoteVtep,
}

/// The `[vxlan]` section: the local VTEP and the pod path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan {
    pub vni: Vni,
    pub port: u16,
    pub vtep_mac: EthernetAddress,
    /// The local VTEP address: the first of `addresses`.
    pub vtep_ip: IpAddr,
    /// The pod-side TUN's name, if set; see [`Vxlan::pod_interface`].
    pod_interface: Option<String>,
    /// This node's own pod CIDRs (checked against the peers', not routed by vxwg).
    pub local_pod_cidrs: Vec<IpNet>,
    pub pod_mtu: u32,
    pub clamp_mss: bool,
    /// Every peer's pod CIDRs, routed into the pod TUN.
    pub routes: Vec<PodRoute>,
}

impl Vxlan {
    /// The pod-side TUN's name: `pod_interface`, or `IFNAME-pods` (with IFNAME cut to 10
    /// characters where needed, so the whole suffix fits the kernel's 15 and the name can never
    /// be the WireGuard interface's own).
    pub fn pod_interface(&self, ifname: &str) -> String {
        match &self.pod_interface {
            Some(n) => n.clone(),
            None => default_pod_interface(ifname),
        }
    }
}

/// `IFNAME-pods`, IFNAME cut to 10 characters so the suffix always fits in 15.
pub fn default_pod_interface(ifname: &str) -> String {
    let stem: String = ifname.chars().take(10).collect();
    format!("{stem}-pods")
}

/// Routing the daemon installs for peers' AllowedIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routing {
    pub enabled: bool,
    pub table: u32,
    pub rule_priority: u32,
}

/// Default lifetime of this node's signed record (refreshed well before it ends).
pub const DEFAULT_RECORD_TTL_SECS: u64 = 60;
/// Default etcd lease TTL.
pub const DEFAULT_LEASE_TTL_SECS: u64 = 10;
/// Default etcd key prefix.
pub const DEFAULT_ETCD_PREFIX: &str = "/vxwg/";
/// Default keepalive towards netmap peers: keeps NAT mappings open and, because a live session
/// needs a fresh handshake every two minutes, keeps handshakes fresh for the stale rule.
pub const DEFAULT_CONTROL_KEEPALIVE: u16 = 25;
/// A peer counts as stale once its last handshake (or, if it never completed one, the moment it
/// was added) is older than this: WireGuard's REJECT_AFTER_TIME (180 s) plus a rekey margin.
pub const DEFAULT_STALE_AFTER_SECS: u64 = 180 + 30;

/// Where the netmap comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// A directory of signed documents (or one file holding an array of them).
    File { path: PathBuf },
    /// An etcd cluster: documents under `prefix`, this node's record kept alive by a lease.
    Etcd { endpoints: Vec<String>, prefix: String, lease_ttl: Duration },
}

/// The `[control]` section: peers and routes come from a signed netmap (docs/control.md).
#[derive(Debug)]
pub struct Control {
    /// This node's name, as in its certificate.
    pub node: String,
    /// The trust root: the operator key that signs certificates and the policy.
    pub operator: VerifyingKey,
    /// Signs this node's own record (its certificate names the public half).
    pub signing_key: SigningKey,
    pub source: SourceConfig,
    /// What this node advertises: endpoints in preference order (same-LAN first) ...
    pub advertise_endpoints: Vec<SocketAddr>,
    /// ... and subnet routes (approved or not by the policy).
    pub advertise_routes: Vec<IpNet>,
    /// How long a published record is valid.
    pub record_ttl: Duration,
    /// How often the record is re-signed and published.
    pub refresh: Duration,
    /// Persistent keepalive towards netmap peers (None: off).
    pub persistent_keepalive: Option<u16>,
    /// See [`DEFAULT_STALE_AFTER_SECS`].
    pub stale_after: Duration,
}

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    pub update: DeviceUpdate,
    pub addresses: Vec<InterfaceAddress>,
    pub mtu: u32,
    pub routing: Routing,
    /// The pod path, when `[vxlan]` is present.
    pub vxlan: Option<Vxlan>,
    /// The control plane, when `[control]` is present.
    pub control: Option<Control>,
    /// Packet worker threads (default: one per CPU the daemon may use).
    pub workers: Option<usize>,
    /// Whether each worker is pinned to its own CPU.
    pub pin_workers: Option<bool>,
    /// When idle workers help decrypt a busy worker's batch.
    pub assist: Option<crate::assist::AssistMode>,
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
        if let Some(n) = raw.workers {
            if !(1..=crate::worker::MAX_WORKERS).contains(&n) {
                bail!("workers = {n}: must be 1 to {}", crate::worker::MAX_WORKERS);
            }
        }
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
        let vxlan = match &raw.vxlan {
            Some(v) => Some(parse_vxlan(v, &raw.peers, &peers, &addresses, mtu)?),
            None => {
                if let Some(i) = raw
                    .peers
                    .iter()
                    .position(|p| p.vtep_mac.is_some() || p.vtep_ip.is_some() || !p.pod_cidrs.is_empty())
                {
                    bail!("peer[{i}]: vtep_mac, vtep_ip and pod_cidrs need a [vxlan] section");
                }
                None
            }
        };

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
        let listen_port = raw.listen_port.unwrap_or(DEFAULT_LISTEN_PORT);
        let control = match &raw.control {
            Some(c) => {
                if !raw.peers.is_empty() {
                    bail!("peer[0]: with [control], peers come from the netmap; remove the [[peer]] entries");
                }
                Some(parse_control(c, base, listen_port)?)
            }
            None => None,
        };
        let update = DeviceUpdate {
            private_key: Some(Some(private_key)),
            listen_port: Some(listen_port),
            fwmark: Some(fwmark),
            replace_peers: true,
            peers,
        };
        Ok(Config {
            update,
            addresses,
            mtu,
            routing,
            vxlan,
            control,
            workers: raw.workers,
            pin_workers: raw.pin_workers,
            assist: raw.assist,
            fwmark_default,
        })
    }
}

/// Validates `[vxlan]` and the peers' VTEP fields (`peers` are the already validated updates).
fn parse_vxlan(
    v: &RawVxlan,
    raw_peers: &[RawPeer],
    peers: &[PeerUpdate],
    addresses: &[InterfaceAddress],
    mtu: u32,
) -> anyhow::Result<Vxlan> {
    let vni = v.vni.unwrap_or(DEFAULT_VNI);
    let vni = Vni::new(vni).with_context(|| format!("vxlan.vni = {vni}: must be below 2^24"))?;
    let port = v.port.unwrap_or(DEFAULT_VXLAN_PORT);
    if port == 0 {
        bail!("vxlan.port = 0: VXLAN needs a destination port");
    }
    let Some(mac) = &v.vtep_mac else {
        bail!("vxlan.vtep_mac: required (this node's VTEP MAC, e.g. \"02:00:00:00:00:01\")")
    };
    let vtep_mac = parse_mac(mac).map_err(|e| anyhow::anyhow!("vxlan.vtep_mac = {mac:?}: {e}"))?;
    let vtep_ip = addresses
        .first()
        .map(|a| a.addr())
        .context("vxlan: the local VTEP address is the first of `addresses`, and there is none")?;
    if let Some(name) = &v.pod_interface {
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
            bail!("vxlan.pod_interface = {name:?}: must be 1-15 characters without '/', spaces or NUL");
        }
    }
    let family = mtu::Family::of(vtep_ip);
    let max_pod_mtu = mtu.saturating_sub(mtu::vxlan_overhead(family) as u32);
    let pod_mtu = v.pod_mtu.unwrap_or(max_pod_mtu);
    if !(mtu::IPV4_MIN_MTU..=max_pod_mtu).contains(&pod_mtu) {
        bail!(
            "vxlan.pod_mtu = {pod_mtu}: must be between {} and {max_pod_mtu} (mtu {mtu} minus {} of VXLAN over {family})",
            mtu::IPV4_MIN_MTU,
            mtu::vxlan_overhead(family)
        );
    }
    let mut local_pod_cidrs = Vec::new();
    for (j, c) in v.pod_cidrs.iter().enumerate() {
        let net: IpNet = c.parse().map_err(|e| anyhow::anyhow!("vxlan.pod_cidrs[{j}] = {c:?}: {e}"))?;
        local_pod_cidrs.push(net);
    }
    let mut routes: Vec<PodRoute> = Vec::new();
    for (i, (p, update)) in raw_peers.iter().zip(peers).enumerate() {
        let at = |field: &str| format!("peer[{i}].{field}");
        if p.pod_cidrs.is_empty() {
            if p.vtep_mac.is_some() || p.vtep_ip.is_some() {
                bail!("{}: vtep_mac and vtep_ip are only used with pod_cidrs", at("pod_cidrs"));
            }
            continue;
        }
        let Some(mac) = &p.vtep_mac else { bail!("{}: required with pod_cidrs", at("vtep_mac")) };
        let vtep_mac = parse_mac(mac).map_err(|e| anyhow::anyhow!("{} = {mac:?}: {e}", at("vtep_mac")))?;
        let peer_vtep = match &p.vtep_ip {
            Some(s) => {
                let ip: IpAddr = s.parse().map_err(|e| anyhow::anyhow!("{} = {s:?}: {e}", at("vtep_ip")))?;
                if !update.allowed_ips.iter().any(|n| n.contains(ip)) {
                    bail!("{} = {s:?}: not in this peer's allowed_ips, so nothing would reach it", at("vtep_ip"));
                }
                ip
            }
            None => update
                .allowed_ips
                .iter()
                .find(|n| n.is_ipv4() == vtep_ip.is_ipv4() && n.prefix_len() == if n.is_ipv4() { 32 } else { 128 })
                .map(|n| n.addr())
                .with_context(|| {
                    format!("{}: none set, and allowed_ips has no {family} /32 or /128 to take it from", at("vtep_ip"))
                })?,
        };
        if peer_vtep.is_ipv4() != vtep_ip.is_ipv4() {
            bail!("{}: {peer_vtep} is not of the local VTEP {vtep_ip}'s family", at("vtep_ip"));
        }
        for (j, c) in p.pod_cidrs.iter().enumerate() {
            let field = format!("{}[{j}]", at("pod_cidrs"));
            let net: IpNet = c.parse().map_err(|e| anyhow::anyhow!("{field} = {c:?}: {e}"))?;
            if let Some(local) = local_pod_cidrs.iter().find(|l| overlaps(**l, net)) {
                bail!("{field} = {c:?}: overlaps this node's own vxlan.pod_cidrs {local}");
            }
            if let Some(other) = routes.iter().find(|r| overlaps(r.net, net)) {
                bail!("{field} = {c:?}: overlaps {} (VTEP {})", other.net, other.remote.vtep_ip);
            }
            // The same prefix cannot be routed to both TUNs; pod CIDRs travel as VXLAN, so they
            // belong in pod_cidrs only (the VTEP address in allowed_ips covers them).
            if let Some(a) = peers.iter().flat_map(|u| u.allowed_ips.iter()).find(|a| **a == net) {
                bail!("{field} = {c:?}: also in allowed_ips ({a}); list pod CIDRs in pod_cidrs only");
            }
            routes.push(PodRoute { net, remote: RemoteVtep { vtep_ip: peer_vtep, vtep_mac } });
        }
    }
    Ok(Vxlan {
        vni,
        port,
        vtep_mac,
        vtep_ip,
        pod_interface: v.pod_interface.clone(),
        local_pod_cidrs,
        pod_mtu,
        clamp_mss: v.clamp_mss.unwrap_or(true),
        routes,
    })
}

/// Validates `[control]`; key and source paths are taken relative to `base`.
fn parse_control(c: &RawControl, base: &Path, listen_port: u16) -> anyhow::Result<Control> {
    let Some(node) = &c.node else { bail!("control.node: required (this node's name, as in its certificate)") };
    check_name(node).map_err(|e| anyhow::anyhow!("control.node: {e}"))?;
    let Some(operator) = &c.operator_key else {
        bail!("control.operator_key: required (the operator's public key, from `vxwg admin init`)")
    };
    let operator =
        VerifyingKey::from_base64(operator).map_err(|e| anyhow::anyhow!("control.operator_key = {operator:?}: {e}"))?;
    let Some(file) = &c.signing_key_file else {
        bail!("control.signing_key_file: required (this node's record signing key)")
    };
    let path = base.join(file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("control.signing_key_file: reading {}", path.display()))?;
    let signing_key = SigningKey::from_base64(&text)
        .map_err(|e| anyhow::anyhow!("control.signing_key_file {}: {e}", path.display()))?;
    let kind = c.source.as_deref().unwrap_or("file");
    let file_only = [("path", c.path.is_some())];
    let etcd_only = [
        ("endpoints", !c.endpoints.is_empty()),
        ("prefix", c.prefix.is_some()),
        ("lease_ttl_secs", c.lease_ttl_secs.is_some()),
    ];
    let (source, foreign) = match kind {
        "file" => {
            let Some(path) = &c.path else { bail!("control.path: required with source = \"file\" (a directory)") };
            (SourceConfig::File { path: base.join(path) }, &etcd_only[..])
        }
        "etcd" => {
            if c.endpoints.is_empty() {
                bail!("control.endpoints: required with source = \"etcd\" (e.g. [\"http://10.0.0.1:2379\"])");
            }
            if let Some((i, e)) = c.endpoints.iter().enumerate().find(|(_, e)| e.trim().is_empty()) {
                bail!("control.endpoints[{i}] = {e:?}: empty");
            }
            let prefix = c.prefix.clone().unwrap_or_else(|| DEFAULT_ETCD_PREFIX.to_string());
            if prefix.is_empty() {
                bail!("control.prefix = \"\": must not be empty (the store may hold other data)");
            }
            let ttl = c.lease_ttl_secs.unwrap_or(DEFAULT_LEASE_TTL_SECS);
            if !(2..=3600).contains(&ttl) {
                bail!("control.lease_ttl_secs = {ttl}: must be between 2 and 3600");
            }
            let source =
                SourceConfig::Etcd { endpoints: c.endpoints.clone(), prefix, lease_ttl: Duration::from_secs(ttl) };
            (source, &file_only[..])
        }
        other => bail!("control.source = {other:?}: must be \"file\" or \"etcd\""),
    };
    if let Some((field, _)) = foreign.iter().find(|(_, set)| *set) {
        bail!("control.{field}: not used with source = {kind:?}");
    }
    let mut advertise_endpoints = Vec::new();
    for (i, e) in c.advertise_endpoints.iter().enumerate() {
        let field = format!("control.advertise_endpoints[{i}] = {e:?}");
        // A bare address means our own listen port.
        let addr = match e.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, listen_port),
            Err(_) => resolve_endpoint(e).with_context(|| field.clone())?,
        };
        if addr.port() == 0 || addr.ip().is_unspecified() {
            bail!("{field}: peers cannot reach port 0 or an unspecified address");
        }
        advertise_endpoints.push(addr);
    }
    let mut advertise_routes: Vec<IpNet> = Vec::new();
    for (i, r) in c.advertise_routes.iter().enumerate() {
        let net: IpNet = r.parse().map_err(|e| anyhow::anyhow!("control.advertise_routes[{i}] = {r:?}: {e}"))?;
        if advertise_routes.contains(&net) {
            bail!("control.advertise_routes[{i}] = {r:?}: listed twice");
        }
        advertise_routes.push(net);
    }
    let ttl = c.record_ttl_secs.unwrap_or(DEFAULT_RECORD_TTL_SECS);
    if !(3..=86_400).contains(&ttl) {
        bail!("control.record_ttl_secs = {ttl}: must be between 3 and 86400");
    }
    // Re-signed three times per lifetime by default, so one missed publish never lets it lapse.
    let refresh = c.refresh_secs.unwrap_or((ttl / 3).max(1));
    if refresh == 0 || refresh >= ttl {
        bail!("control.refresh_secs = {refresh}: must be at least 1 and below record_ttl_secs ({ttl})");
    }
    let stale_after = c.stale_after_secs.unwrap_or(DEFAULT_STALE_AFTER_SECS);
    if stale_after < 10 {
        bail!(
            "control.stale_after_secs = {stale_after}: below 10 s, live peers would flap between primary and standby"
        );
    }
    let keepalive = c.persistent_keepalive.unwrap_or(DEFAULT_CONTROL_KEEPALIVE);
    Ok(Control {
        node: node.clone(),
        operator,
        signing_key,
        source,
        advertise_endpoints,
        advertise_routes,
        record_ttl: Duration::from_secs(ttl),
        refresh: Duration::from_secs(refresh),
        persistent_keepalive: (keepalive > 0).then_some(keepalive),
        stale_after: Duration::from_secs(stale_after),
    })
}

fn parse_mac(s: &str) -> anyhow::Result<EthernetAddress> {
    let mac: EthernetAddress = s.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    if mac.0[0] & 1 != 0 || mac.0 == [0; 6] {
        bail!("a VTEP MAC must be unicast and not all zeros");
    }
    Ok(mac)
}

/// Whether two prefixes share an address (one contains the other's network address).
fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.addr()) || b.contains(a.addr()))
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
    fn assist_reads_as_its_mode_and_defaults_to_unset() {
        use crate::assist::AssistMode;
        let (d, _) = dir_with_key();
        let base = "private_key_file = \"private.key\"\n";
        assert_eq!(Config::parse(base, d.path()).unwrap().assist, None);
        for (text, mode) in [("off", AssistMode::Off), ("on", AssistMode::On), ("auto", AssistMode::Auto)] {
            let c = Config::parse(&format!("{base}assist = \"{text}\""), d.path()).unwrap();
            assert_eq!(c.assist, Some(mode), "assist = {text:?}");
        }
    }

    #[test]
    fn errors_name_the_field_and_the_reason() {
        let base = "private_key_file = \"private.key\"\n";
        let cases = [
            (format!("{base}listen_port = 70000"), "listen_port"),
            (format!("{base}addresses = [\"100.64.0\"]"), "addresses[0]"),
            (format!("{base}addresses = [\"100.64.0.1/33\"]"), "longer than 32"),
            (format!("{base}mtu = 100"), "mtu = 100"),
            (format!("{base}workers = 0"), "workers = 0: must be 1 to 64"),
            (format!("{base}workers = 65"), "workers = 65"),
            (format!("{base}pin_workers = 2"), "pin_workers"),
            (format!("{base}assist = \"sometimes\""), "assist"),
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
            (format!("{base}[[peer]]\npublic_key = \"{PEER}\"\npod_cidrs = [\"10.42.2.0/24\"]"), "[vxlan]"),
        ];
        for (text, needle) in cases {
            let e = err(&text);
            assert!(e.contains(needle), "error for {text:?} should mention {needle:?}: {e}");
        }
    }

    const VX_BASE: &str = "private_key_file = \"private.key\"\naddresses = [\"100.64.0.1/32\"]\n";

    /// A config with `[vxlan]` body `vxlan` and one peer with extra lines `peer`.
    fn vx(vxlan: &str, peer: &str) -> String {
        format!(
            "{VX_BASE}[vxlan]\n{vxlan}\n[[peer]]\npublic_key = \"{PEER}\"\nallowed_ips = [\"100.64.0.2/32\", \"10.43.0.0/16\"]\n{peer}\n"
        )
    }

    #[test]
    fn vxlan_defaults_and_peer_vteps() {
        let (d, _) = dir_with_key();
        let text = vx(
            "vtep_mac = \"02:00:00:00:00:01\"\npod_cidrs = [\"10.42.1.0/24\"]",
            "vtep_mac = \"02:00:00:00:00:02\"\npod_cidrs = [\"10.42.2.0/24\", \"10.42.3.0/24\"]",
        );
        let c = Config::parse(&text, d.path()).unwrap();
        let v = c.vxlan.unwrap();
        assert_eq!(v.vni, Vni::new(1).unwrap());
        assert_eq!(v.port, 8472);
        assert_eq!(v.vtep_mac, "02:00:00:00:00:01".parse().unwrap());
        assert_eq!(v.vtep_ip, "100.64.0.1".parse::<IpAddr>().unwrap());
        // 1420 - 50 (Ethernet, VXLAN, UDP, IPv4).
        assert_eq!(v.pod_mtu, 1370);
        assert!(v.clamp_mss);
        assert_eq!(v.pod_interface("wg0"), "wg0-pods");
        assert_eq!(v.pod_interface("a-long-ifname15"), "a-long-ifn-pods", "never the WireGuard interface's own name");
        assert_eq!(v.pod_interface("wg-cluster"), "wg-cluster-pods");
        assert_eq!(v.local_pod_cidrs, vec!["10.42.1.0/24".parse().unwrap()]);
        assert_eq!(v.routes.len(), 2);
        for (r, cidr) in v.routes.iter().zip(["10.42.2.0/24", "10.42.3.0/24"]) {
            assert_eq!(r.net, cidr.parse().unwrap());
            // The first /32 of the peer's allowed_ips.
            assert_eq!(r.remote.vtep_ip, "100.64.0.2".parse::<IpAddr>().unwrap());
            assert_eq!(r.remote.vtep_mac, "02:00:00:00:00:02".parse().unwrap());
        }
        // No [vxlan]: no pod path.
        let plain = Config::parse(&format!("{VX_BASE}[[peer]]\npublic_key = \"{PEER}\""), d.path()).unwrap();
        assert!(plain.vxlan.is_none());
    }

    #[test]
    fn vxlan_explicit_settings() {
        let (d, _) = dir_with_key();
        let text = vx(
            "vni = 42\nport = 4789\nvtep_mac = \"02-00-00-00-00-01\"\npod_interface = \"pods0\"\npod_mtu = 1300\nclamp_mss = false",
            "vtep_mac = \"02:00:00:00:00:02\"\nvtep_ip = \"10.43.0.9\"\npod_cidrs = [\"10.42.2.0/24\"]",
        );
        let v = Config::parse(&text, d.path()).unwrap().vxlan.unwrap();
        assert_eq!((v.vni, v.port, v.pod_mtu, v.clamp_mss), (Vni::new(42).unwrap(), 4789, 1300, false));
        assert_eq!(v.pod_interface("wg0"), "pods0");
        assert_eq!(v.routes[0].remote.vtep_ip, "10.43.0.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn vxlan_errors_name_the_field() {
        let mac = "vtep_mac = \"02:00:00:00:00:01\"";
        let peer = "vtep_mac = \"02:00:00:00:00:02\"\npod_cidrs = [\"10.42.2.0/24\"]";
        let cases = [
            (vx("", peer), "vxlan.vtep_mac"),
            (vx("vtep_mac = \"02:00:00\"", peer), "vxlan.vtep_mac"),
            (vx("vtep_mac = \"01:00:5e:00:00:01\"", peer), "unicast"),
            (vx(&format!("{mac}\nvni = 16777216"), peer), "vxlan.vni"),
            (vx(&format!("{mac}\nport = 0"), peer), "vxlan.port"),
            (vx(&format!("{mac}\npod_mtu = 1400"), peer), "vxlan.pod_mtu = 1400"),
            (vx(&format!("{mac}\npod_mtu = 60"), peer), "vxlan.pod_mtu = 60"),
            (vx(&format!("{mac}\npod_interface = \"much-too-long-name\""), peer), "vxlan.pod_interface"),
            (vx(&format!("{mac}\npod_cidrs = [\"10.42.1.0/33\"]"), peer), "vxlan.pod_cidrs[0]"),
            (vx(&format!("{mac}\nbogus = 1"), peer), "bogus"),
            (vx(mac, "pod_cidrs = [\"10.42.2.0/24\"]"), "peer[0].vtep_mac"),
            (vx(mac, "vtep_mac = \"zz\"\npod_cidrs = [\"10.42.2.0/24\"]"), "peer[0].vtep_mac"),
            (vx(mac, "vtep_mac = \"02:00:00:00:00:02\""), "peer[0].pod_cidrs"),
            (vx(mac, "vtep_mac = \"02:00:00:00:00:02\"\npod_cidrs = [\"nope\"]"), "peer[0].pod_cidrs[0]"),
            (vx(mac, &format!("{peer}\nvtep_ip = \"10.99.0.1\"")), "peer[0].vtep_ip"),
            (vx(mac, &format!("{peer}\nvtep_ip = \"fd00::2\"")), "peer[0].vtep_ip"),
            (
                vx(&format!("{mac}\npod_cidrs = [\"10.42.0.0/16\"]"), peer),
                "peer[0].pod_cidrs[0] = \"10.42.2.0/24\": overlaps this node's own",
            ),
            (
                vx(mac, "vtep_mac = \"02:00:00:00:00:02\"\npod_cidrs = [\"10.43.0.0/16\"]"),
                "also in allowed_ips",
            ),
            (
                vx(mac, "vtep_mac = \"02:00:00:00:00:02\"\npod_cidrs = [\"10.42.0.0/16\", \"10.42.2.0/24\"]"),
                "peer[0].pod_cidrs[1]",
            ),
            (
                format!("private_key_file = \"private.key\"\n[vxlan]\n{mac}\n"),
                "first of `addresses`",
            ),
            (
                format!(
                    "{VX_BASE}[vxlan]\n{mac}\n[[peer]]\npublic_key = \"{PEER}\"\nallowed_ips = [\"10.43.0.0/16\"]\n{peer}\n"
                ),
                "peer[0].vtep_ip",
            ),
        ];
        for (text, needle) in cases {
            let e = err(&text);
            assert!(e.contains(needle), "error for {text:?} should mention {needle:?}: {e}");
        }
    }

    #[test]
    fn the_shipped_example_parses() {
        let (d, _) = dir_with_key();
        std::fs::write(d.path().join("peer2.psk"), Key([7; 32]).to_base64()).unwrap();
        let text = include_str!("../examples/node.toml");
        let c = Config::parse(text, d.path()).unwrap();
        let v = c.vxlan.expect("the example shows [vxlan]");
        assert_eq!(v.pod_mtu, 1230);
        assert_eq!(v.routes.len(), 1);
        assert_eq!(v.routes[0].remote.vtep_ip, "100.64.0.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn own_key_as_peer_is_refused() {
        let (d, public) = dir_with_key();
        let text = format!("private_key_file = \"private.key\"\n[[peer]]\npublic_key = \"{public}\"");
        let e = format!("{:#}", Config::parse(&text, d.path()).unwrap_err());
        assert!(e.contains("our own public key"), "{e}");
    }

    /// A key directory with a record signing key too, and the operator's public key.
    fn control_dir() -> (tempdir::Dir, String) {
        let (d, _) = dir_with_key();
        std::fs::write(d.path().join("signing.key"), SigningKey::generate().unwrap().to_base64()).unwrap();
        (d, SigningKey::generate().unwrap().public().to_base64())
    }

    fn control(operator: &str, body: &str) -> String {
        format!(
            "private_key_file = \"private.key\"\nlisten_port = 41641\naddresses = [\"100.64.0.1/32\"]\n[control]\nnode = \"node-a\"\noperator_key = \"{operator}\"\nsigning_key_file = \"signing.key\"\n{body}"
        )
    }

    #[test]
    fn control_with_the_file_source() {
        let (d, operator) = control_dir();
        let text = control(
            &operator,
            "path = \"netmap\"\nadvertise_endpoints = [\"192.0.2.1\", \"198.51.100.1:51820\"]\nadvertise_routes = [\"10.42.1.0/24\"]\n",
        );
        let c = Config::parse(&text, d.path()).unwrap().control.unwrap();
        assert_eq!(c.node, "node-a");
        assert_eq!(c.operator.to_base64(), operator);
        assert_eq!(c.source, SourceConfig::File { path: d.path().join("netmap") });
        let eps: Vec<SocketAddr> = vec!["192.0.2.1:41641".parse().unwrap(), "198.51.100.1:51820".parse().unwrap()];
        assert_eq!(c.advertise_endpoints, eps, "a bare address takes the listen port; order is kept");
        assert_eq!(c.advertise_routes, vec!["10.42.1.0/24".parse::<IpNet>().unwrap()]);
        assert_eq!(c.record_ttl, Duration::from_secs(DEFAULT_RECORD_TTL_SECS));
        assert_eq!(c.refresh, Duration::from_secs(DEFAULT_RECORD_TTL_SECS / 3));
        assert_eq!(c.persistent_keepalive, Some(DEFAULT_CONTROL_KEEPALIVE));
        assert_eq!(c.stale_after, Duration::from_secs(DEFAULT_STALE_AFTER_SECS));
        // Without [control], none.
        assert!(Config::parse("private_key_file = \"private.key\"", d.path()).unwrap().control.is_none());
    }

    #[test]
    fn control_with_the_etcd_source() {
        let (d, operator) = control_dir();
        let text = control(
            &operator,
            "source = \"etcd\"\nendpoints = [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\"]\nprefix = \"/k8s/vxwg/\"\nlease_ttl_secs = 15\nrecord_ttl_secs = 30\nrefresh_secs = 5\npersistent_keepalive = 0\n",
        );
        let c = Config::parse(&text, d.path()).unwrap().control.unwrap();
        assert_eq!(
            c.source,
            SourceConfig::Etcd {
                endpoints: vec!["http://10.0.0.1:2379".into(), "http://10.0.0.2:2379".into()],
                prefix: "/k8s/vxwg/".into(),
                lease_ttl: Duration::from_secs(15),
            }
        );
        assert_eq!((c.record_ttl, c.refresh), (Duration::from_secs(30), Duration::from_secs(5)));
        assert_eq!(c.persistent_keepalive, None);
        let defaults =
            Config::parse(&control(&operator, "source = \"etcd\"\nendpoints = [\"http://10.0.0.1:2379\"]\n"), d.path())
                .unwrap();
        match defaults.control.unwrap().source {
            SourceConfig::Etcd { prefix, lease_ttl, .. } => {
                assert_eq!(
                    (prefix.as_str(), lease_ttl),
                    (DEFAULT_ETCD_PREFIX, Duration::from_secs(DEFAULT_LEASE_TTL_SECS))
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn control_errors_name_the_field() {
        let (d, operator) = control_dir();
        let file = "path = \"netmap\"\n";
        let head = "private_key_file = \"private.key\"\n[control]\n";
        let cases = [
            (
                format!("{head}operator_key = \"{operator}\"\nsigning_key_file = \"signing.key\"\n{file}"),
                "control.node",
            ),
            (format!("{head}node = \"a\"\nsigning_key_file = \"signing.key\"\n{file}"), "control.operator_key"),
            (format!("{head}node = \"a\"\noperator_key = \"{operator}\"\n{file}"), "control.signing_key_file"),
            (control(&operator, file).replace("node-a", "bad name"), "control.node"),
            (control(&operator, file).replace(&operator, "AAAA"), "control.operator_key"),
            (control(&operator, file).replace("signing.key", "missing.key"), "control.signing_key_file"),
            (control(&operator, file).replace("signing.key", "private.key\"\nbogus = \"1"), "bogus"),
            (control(&operator, ""), "control.path"),
            (control(&operator, &format!("source = \"consul\"\n{file}")), "control.source = \"consul\""),
            (control(&operator, "source = \"etcd\"\n"), "control.endpoints"),
            (control(&operator, "source = \"etcd\"\nendpoints = [\" \"]\n"), "control.endpoints[0]"),
            (
                control(&operator, "source = \"etcd\"\nendpoints = [\"http://e:2379\"]\nprefix = \"\"\n"),
                "control.prefix",
            ),
            (
                control(&operator, "source = \"etcd\"\nendpoints = [\"http://e:2379\"]\nlease_ttl_secs = 1\n"),
                "control.lease_ttl_secs = 1",
            ),
            (control(&operator, "source = \"etcd\"\nendpoints = [\"http://e:2379\"]\npath = \"x\"\n"), "control.path"),
            (control(&operator, &format!("{file}endpoints = [\"http://e:2379\"]\n")), "control.endpoints"),
            (
                control(&operator, &format!("{file}advertise_endpoints = [\"nope\"]\n")),
                "control.advertise_endpoints[0]",
            ),
            (
                control(&operator, &format!("{file}advertise_endpoints = [\"0.0.0.0\"]\n")),
                "control.advertise_endpoints[0]",
            ),
            (
                control(&operator, &format!("{file}advertise_routes = [\"10.0.0.0/33\"]\n")),
                "control.advertise_routes[0]",
            ),
            (
                control(&operator, &format!("{file}advertise_routes = [\"10.1.0.0/16\", \"10.1.0.0/16\"]\n")),
                "control.advertise_routes[1]",
            ),
            (control(&operator, &format!("{file}record_ttl_secs = 2\n")), "control.record_ttl_secs = 2"),
            (
                control(&operator, &format!("{file}record_ttl_secs = 10\nrefresh_secs = 10\n")),
                "control.refresh_secs = 10",
            ),
            (control(&operator, &format!("{file}stale_after_secs = 5\n")), "control.stale_after_secs = 5"),
            (
                format!("{}\n[[peer]]\npublic_key = \"{PEER}\"\n", control(&operator, file)),
                "with [control], peers come from the netmap",
            ),
        ];
        for (text, needle) in cases {
            let e = format!("{:#}", Config::parse(&text, d.path()).unwrap_err());
            assert!(e.contains(needle), "error for {text:?} should mention {needle:?}: {e}");
        }
    }

    #[test]
    fn the_shipped_control_example_parses() {
        let (d, _) = control_dir();
        let text = include_str!("../examples/control/node.toml");
        let c = Config::parse(text, d.path()).unwrap();
        let control = c.control.expect("the example shows [control]");
        assert!(!control.advertise_routes.is_empty());
        assert!(c.vxlan.is_some(), "the example shows the pod path too");
    }
}
