//! A control-plane test mesh: node namespaces on one bridged LAN, node specs (keys, certificate,
//! record) and `vxwg up --config` daemons with a `[control]` section, all removed on drop. Shared by
//! tests/control.rs (file source) and tests/control_etcd.rs (etcd source).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{ifname, keypair, sh, unique, Netns, RemoveDir};
use vxwg::control::keys::Key;
use vxwg::control::netmap::{Acl, AutoApprover, NodeCert, NodeRecord, Policy, SigningKey};

pub const VXWG: &str = env!("CARGO_BIN_EXE_vxwg");

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A LAN: a namespace holding a bridge; each node namespace joins it through a veth pair.
pub struct Lan {
    pub ns: Netns,
    /// First letter of the veth names, one per test binary so names from two binaries never meet.
    veth: char,
}

impl Lan {
    /// The bridge carries `bridge_addr`/24 when given (a host on the LAN itself, such as etcd).
    pub fn new(tag: &str, veth: char, bridge_addr: Option<&str>) -> Lan {
        let ns = Netns::new(tag);
        match bridge_addr {
            Some(addr) => {
                ns.exec(&format!("ip link add br0 type bridge && ip addr add {addr}/24 dev br0 && ip link set br0 up"))
            }
            None => ns.exec("ip link add br0 type bridge && ip link set br0 up"),
        };
        Lan { ns, veth }
    }

    /// A node namespace on the LAN with underlay address `addr`/24.
    pub fn join(&self, tag: &str, addr: &str) -> Netns {
        let node = Netns::new(tag);
        let n = unique();
        let pid = std::process::id() % 10000;
        let (inner, outer) = (format!("{}u{pid}x{n}", self.veth), format!("{}l{pid}x{n}", self.veth));
        sh(&format!("ip link add {inner} netns {} type veth peer name {outer} netns {}", node.name, self.ns.name));
        node.exec(&format!("ip addr add {addr}/24 dev {inner} && ip link set {inner} up"));
        self.ns.exec(&format!("ip link set {outer} master br0 && ip link set {outer} up"));
        node
    }
}

/// Nodes tagged `tag:node` reach each other; the `prefixes` may be advertised by `tag:router` nodes.
pub fn policy(prefixes: &[&str]) -> Policy {
    Policy {
        version: 1,
        issued_at: unix_now(),
        auto_approvers: prefixes
            .iter()
            .map(|p| AutoApprover { prefix: p.parse().unwrap(), tags: vec!["tag:router".into()] })
            .collect(),
        acls: vec![Acl { src: "tag:node".into(), dst: vec!["tag:node".into()] }],
    }
}

/// One node of a test mesh: its keys, addresses and what it advertises.
pub struct Spec {
    pub name: String,
    pub wg: (String, String),
    pub signing: SigningKey,
    pub overlay: String,
    pub underlay: String,
    pub routes: Vec<String>,
    pub tags: Vec<String>,
}

impl Spec {
    pub fn new(name: &str, overlay: &str, underlay: &str, routes: &[&str], tags: &[&str]) -> Spec {
        Spec {
            name: name.to_string(),
            wg: keypair(),
            signing: SigningKey::generate().unwrap(),
            overlay: overlay.to_string(),
            underlay: underlay.to_string(),
            routes: routes.iter().map(|s| s.to_string()).collect(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn cert(&self, not_after: u64) -> NodeCert {
        NodeCert {
            name: self.name.clone(),
            wireguard_key: Key::from_base64(&self.wg.1).unwrap(),
            node_key: self.signing.public(),
            addresses: vec![self.overlay.parse().unwrap()],
            tags: self.tags.clone(),
            not_after,
        }
    }

    /// An unsigned record valid for an hour, as the node's daemon would publish it.
    pub fn record(&self) -> NodeRecord {
        let now = unix_now();
        NodeRecord {
            name: self.name.clone(),
            endpoints: vec![format!("{}:41641", self.underlay).parse().unwrap()],
            routes: self.routes.iter().map(|r| r.parse().unwrap()).collect(),
            vtep_mac: None,
            issued_at: now,
            expires: now + 3600,
        }
    }

    /// The key (file name, or name under the etcd prefix) of the node's record.
    pub fn record_key(&self) -> String {
        format!("{}.record.json", self.name)
    }
}

/// A `vxwg up --config` daemon in a namespace; killed (and its UAPI socket removed) on drop.
pub struct Daemon<'a> {
    pub ns: &'a Netns,
    pub ifname: String,
    child: Option<Child>,
    pub log: PathBuf,
    _cleanup: RemoveDir,
}

impl<'a> Daemon<'a> {
    /// Starts `spec`'s node, certified by `operator` (its public key, base64); `control` holds the
    /// source's lines of `[control]` (source, endpoints or path, TTLs), `extra` any tables after it.
    pub fn launch(ns: &'a Netns, operator: &str, spec: &Spec, control: &str, extra: &str) -> Daemon<'a> {
        let dir = std::env::temp_dir().join(format!("vxwg-ctlcfg-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("private.key"), &spec.wg.0).unwrap();
        std::fs::write(dir.join("signing.key"), spec.signing.to_base64()).unwrap();
        let toml = format!(
            "private_key_file = \"private.key\"\nlisten_port = 41641\naddresses = [\"{}/32\"]\n[control]\nnode = \"{}\"\noperator_key = \"{operator}\"\nsigning_key_file = \"signing.key\"\nadvertise_endpoints = [\"{}\"]\nadvertise_routes = [{}]\n{control}{extra}",
            spec.overlay,
            spec.name,
            spec.underlay,
            quoted(&spec.routes)
        );
        std::fs::write(dir.join("node.toml"), toml).unwrap();
        let ifname = ifname();
        let log = dir.join("daemon.log");
        let child = ns.spawn_logged(
            &format!("{VXWG} up --foreground --config {} {ifname}", dir.join("node.toml").display()),
            &log,
        );
        let d = Daemon { ns, ifname, child: Some(child), log, _cleanup: RemoveDir(dir) };
        d.wait_for(10, "the UAPI socket", || Path::new(&format!("/var/run/wireguard/{}.sock", d.ifname)).exists());
        d
    }

    /// Waits up to `secs` for `ok`, failing with the daemon's log.
    #[track_caller]
    pub fn wait_for(&self, secs: u64, what: &str, mut ok: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !ok() {
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "{what}: not within {secs} s; {} log:\n{}",
                self.ifname,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        start.elapsed()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Table 52 (empty before the first route creates it).
    pub fn table(&self) -> String {
        String::from_utf8_lossy(&self.ns.try_exec("ip route show table 52").stdout).into_owned()
    }

    pub fn routes_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ns.exec(&format!("{VXWG} routes --json {}", self.ifname))).unwrap()
    }

    pub fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ns.exec(&format!("{VXWG} status --json {}", self.ifname))).unwrap()
    }

    pub fn peers(&self) -> Vec<String> {
        self.ns.exec(&format!("wg show {} peers", self.ifname)).lines().map(str::to_string).collect()
    }

    /// `spec` is this node's peer and its overlay address and approved routes are in table 52.
    pub fn holds(&self, spec: &Spec) -> bool {
        let table = self.table();
        self.peers().contains(&spec.wg.1)
            && table.contains(&format!("{} dev {}", spec.overlay, self.ifname))
            && spec.routes.iter().all(|r| table.contains(&format!("{r} dev {}", self.ifname)))
    }

    /// Neither `spec`'s peer nor any of its routes is left.
    pub fn forgot(&self, spec: &Spec) -> bool {
        let table = self.table();
        !self.peers().contains(&spec.wg.1)
            && !table.contains(&format!("{} ", spec.overlay))
            && spec.routes.iter().all(|r| !table.contains(r.as_str()))
    }

    pub fn pings(&self, addr: &str) -> bool {
        self.ns.try_exec(&format!("ping -c 1 -W 1 {addr}")).status.success()
    }

    /// Probes every 50 ms until the first answer, for at most 2 s (one run of ping).
    pub fn answers_soon(&self, addr: &str) -> bool {
        self.ns.try_exec(&format!("ping -q -c 1 -i 0.05 -w 2 {addr}")).status.success()
    }

    /// Sends `signal` and waits for the exit.
    pub fn stop(&mut self, signal: &str) {
        if let Some(mut c) = self.child.take() {
            sh(&format!("kill -{signal} {}", c.id()));
            let _ = c.wait();
        }
    }

    /// SIGKILL: no record withdrawn, no lease revoked; the socket it leaves is removed.
    pub fn kill(&mut self) {
        self.stop("KILL");
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.ifname));
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.ifname));
    }
}

/// `items` as a TOML array's contents: `"a", "b"`.
pub fn quoted(items: &[String]) -> String {
    items.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>().join(", ")
}
