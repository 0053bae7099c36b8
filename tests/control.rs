//! The control plane end to end (root only; CI runs as root): vxwg nodes in network namespaces on
//! one bridged LAN, fed by a shared directory of signed documents (the file source). Documents are
//! made with the library (`vxwg::control::netmap`), as `vxwg admin` does.
//!
//! Every namespace, interface and directory has a unique name and is removed on drop; traffic goes
//! only to addresses inside the test's namespaces.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::mesh::{policy, unix_now, Daemon, Lan, Spec, VXWG};
use common::{ifname, require, sh, unique, Netns, RemoveDir};
use vxwg::control::netmap::SigningKey;

/// Short record lifetimes so a node that dies without withdrawing its record is dropped quickly.
const RECORD_TTL: u64 = 6;
const REFRESH: u64 = 2;

/// A pod namespace behind `node` holding `pod`/24, its default route via `gw` on the node (where
/// forwarding is turned on).
fn pod_behind(node: &Netns, tag: &str, gw: &str, pod: &str) -> Netns {
    let ns = Netns::new(tag);
    let n = unique();
    let (vn, vp) = (format!("cn{}x{n}", std::process::id() % 10000), format!("cp{}x{n}", std::process::id() % 10000));
    sh(&format!("ip link add {vn} netns {} type veth peer name {vp} netns {}", node.name, ns.name));
    node.exec(&format!("ip addr add {gw}/24 dev {vn} && ip link set {vn} up && sysctl -qw net.ipv4.ip_forward=1"));
    ns.exec(&format!("ip addr add {pod}/24 dev {vp} && ip link set {vp} up && ip route add default via {gw}"));
    ns
}

/// The shared netmap directory, the operator key that signs certificates and the policy.
struct Netmap {
    dir: PathBuf,
    operator: SigningKey,
    _cleanup: RemoveDir,
}

impl Netmap {
    fn new() -> Netmap {
        let dir = std::env::temp_dir().join(format!("vxwg-netmap-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).unwrap();
        Netmap { dir: dir.clone(), operator: SigningKey::generate().unwrap(), _cleanup: RemoveDir(dir) }
    }

    fn write(&self, key: &str, bytes: &[u8]) {
        // Written aside and renamed, as a careful operator (or `vxwg admin`) would.
        let tmp = self.dir.join(format!(".{key}.tmp"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(tmp, self.dir.join(key)).unwrap();
    }

    fn certify(&self, spec: &Spec) {
        self.write(&format!("{}.cert.json", spec.name), &spec.cert(unix_now() + 86_400).sign(&self.operator).to_json());
    }

    /// Nodes tagged `tag:node` reach each other; 10.42.0.0/16 and 10.43.0.0/16 may be advertised
    /// by `tag:router` nodes.
    fn policy(&self) {
        self.write("policy.json", &policy(&["10.42.0.0/16", "10.43.0.0/16"]).sign(&self.operator).to_json());
    }

    fn record_path(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.record.json"))
    }
}

impl<'a> Daemon<'a> {
    /// A node on `netmap`'s directory (the file source).
    fn start(ns: &'a Netns, netmap: &Netmap, spec: &Spec) -> Daemon<'a> {
        Self::start_with(ns, netmap, spec, "")
    }

    /// As [`Daemon::start`], with `extra` TOML tables (such as `[vxlan]`) after `[control]`.
    fn start_with(ns: &'a Netns, netmap: &Netmap, spec: &Spec, extra: &str) -> Daemon<'a> {
        let control = format!(
            "source = \"file\"\npath = \"{}\"\nrecord_ttl_secs = {RECORD_TTL}\nrefresh_secs = {REFRESH}\n",
            netmap.dir.display()
        );
        Self::launch(ns, &netmap.operator.public().to_base64(), spec, &control, extra)
    }
}

/// The route entry for `prefix` from `node` in `vxwg routes --json`.
fn route<'v>(routes: &'v serde_json::Value, prefix: &str, node: &str) -> &'v serde_json::Value {
    routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["prefix"] == prefix && r["node"] == node)
        .unwrap_or_else(|| panic!("no route {prefix} from {node} in {routes:#}"))
}

#[test]
fn three_nodes_join_and_leave_live_and_deleted_routes_come_back() {
    if !require(&["ip", "wg", "ping"]) {
        return;
    }
    let lan = Lan::new("lan", 'c', None);
    let (na, nb, nc) = (lan.join("ja", "10.201.0.1"), lan.join("jb", "10.201.0.2"), lan.join("jc", "10.201.0.3"));
    let netmap = Netmap::new();
    let a = Spec::new("ja", "100.64.40.1", "10.201.0.1", &[], &["tag:node"]);
    let b = Spec::new("jb", "100.64.40.2", "10.201.0.2", &[], &["tag:node"]);
    let c = Spec::new("jc", "100.64.40.3", "10.201.0.3", &["10.43.3.0/24"], &["tag:node", "tag:router"]);
    // An address in the subnet behind the third node (on its loopback, inside its namespace).
    nc.exec("ip addr add 10.43.3.1/32 dev lo");
    for s in [&a, &b, &c] {
        netmap.certify(s);
    }
    netmap.policy();
    let mut da = Daemon::start(&na, &netmap, &a);
    let db = Daemon::start(&nb, &netmap, &b);
    da.wait_for(10, "ja reaches jb", || da.pings("100.64.40.2"));
    let session = |d: &Daemon, key: &str| {
        let status = d.status_json();
        let peer = status["peers"].as_array().unwrap().iter().find(|p| p["public_key"] == key).cloned();
        let peer = peer.unwrap_or_else(|| panic!("{key} is a peer: {status:#}"));
        (peer["handshakes"].as_u64().unwrap(), peer["latest_handshake"].as_u64().unwrap())
    };
    let ja_jb = session(&da, &b.wg.1);

    // The third node joins: its record appears in the directory, and it is reachable from both.
    let mut dc = Daemon::start(&nc, &netmap, &c);
    let record = netmap.record_path("jc");
    dc.wait_for(10, "jc publishes its record", || record.exists());
    let appeared = Instant::now();
    da.wait_for(2, "ja reaches jc within 2 s", || da.pings("100.64.40.3"));
    let from_a = appeared.elapsed();
    db.wait_for(2, "jb reaches jc within 2 s", || db.pings("100.64.40.3"));
    let from_b = appeared.elapsed();
    println!(
        "join: jc answered ping from ja {:.0} ms and from jb {:.0} ms after its record appeared",
        from_a.as_secs_f64() * 1e3,
        from_b.as_secs_f64() * 1e3
    );
    assert!(from_b < Duration::from_secs(2), "reachable from both within 2 s");
    let table = da.table();
    assert!(table.contains(&format!("100.64.40.3 dev {}", da.ifname)), "{table}");
    assert!(table.contains(&format!("10.43.3.0/24 dev {}", da.ifname)), "{table}");
    assert!(da.pings("10.43.3.1"), "the approved subnet behind jc is reachable");
    let routes = da.routes_json();
    let r = route(&routes, "10.43.3.0/24", "jc");
    assert_eq!((r["state"].as_str(), r["installed"].as_bool()), (Some("primary"), Some(true)), "{routes:#}");
    let status = da.status_json();
    assert_eq!(status["control"]["peers"].as_u64(), Some(2), "{status:#}");
    assert!(status["control"]["source"].as_str().unwrap().contains(netmap.dir.to_str().unwrap()), "{status:#}");

    // Routes and the rule deleted by hand come back by themselves.
    let deleted = Instant::now();
    na.exec("ip route del 100.64.40.3 table 52 && ip route del 10.43.3.0/24 table 52 && ip -4 rule del pref 5270");
    da.wait_for(3, "deleted routes and rule put back", || {
        let t = da.table();
        t.contains("100.64.40.3 dev")
            && t.contains("10.43.3.0/24 dev")
            && na.exec("ip -4 rule show pref 5270").contains("lookup 52")
    });
    println!("reconcile: deleted routes and rule back after {:.0} ms", deleted.elapsed().as_secs_f64() * 1e3);
    // Put back what was deleted, and nothing else (no spurious restores every second).
    std::thread::sleep(Duration::from_millis(1500));
    let log = std::fs::read_to_string(&da.log).unwrap();
    assert_eq!(log.matches("was missing: put back").count(), 3, "{log}");
    assert!(da.pings("100.64.40.3"));

    // The third node leaves (SIGTERM withdraws its record): gone from both, with its routes.
    let c_public = c.wg.1.clone();
    assert!(da.peers().contains(&c_public));
    let left = Instant::now();
    dc.stop("TERM");
    da.wait_for(3, "jc's routes gone from ja's table 52", || {
        let t = da.table();
        !t.contains("100.64.40.3") && !t.contains("10.43.3.0")
    });
    db.wait_for(3, "jc gone from jb", || !db.peers().contains(&c_public));
    println!("leave: jc's peer and routes removed {:.0} ms after SIGTERM", left.elapsed().as_secs_f64() * 1e3);
    assert!(!da.peers().contains(&c_public), "jc is no peer of ja any more");
    assert!(!da.pings("100.64.40.3"), "jc unreachable");
    assert!(da.pings("100.64.40.2"), "jb untouched");
    // ja's session with jb went through jc's join, a route reconciliation and jc's leave as it was.
    assert_eq!(session(&da, &b.wg.1), ja_jb, "ja's session with jb untouched (same handshake)");

    // A record deleted from the directory counts as gone too: jb's record removed (and jb stopped
    // first, so it cannot publish it again) takes jb out of ja's netmap.
    let mut db = db;
    db.stop("KILL");
    std::fs::remove_file(netmap.record_path("jb")).unwrap();
    da.wait_for(3, "jb gone once its record is deleted", || !da.table().contains("100.64.40.2"));

    // Clean exit: table 52 and the rule are empty again.
    da.stop("TERM");
    assert_eq!(na.exec("ip route show table 52").trim(), "", "routes removed on exit");
    assert!(!na.exec("ip rule show").contains("lookup 52"), "rule removed on exit");
}

#[test]
fn forged_and_expired_documents_and_unapproved_routes_are_rejected_and_reported() {
    if !require(&["ip", "wg", "ping"]) {
        return;
    }
    let lan = Lan::new("lan", 'c', None);
    let (na, nb) = (lan.join("ra", "10.201.0.1"), lan.join("rb", "10.201.0.2"));
    let netmap = Netmap::new();
    let a = Spec::new("ra", "100.64.41.1", "10.201.0.1", &[], &["tag:node"]);
    // rb advertises an approved prefix and one no auto-approver covers.
    let b =
        Spec::new("rb", "100.64.41.2", "10.201.0.2", &["10.43.2.0/24", "10.99.0.0/16"], &["tag:node", "tag:router"]);
    netmap.certify(&a);
    netmap.certify(&b);
    netmap.policy();
    // Forgeries, each of which would add a peer and a route if it counted.
    let forged = |name: &str, n: u8| {
        Spec::new(name, &format!("100.64.41.{n}"), "10.201.0.9", &["10.43.9.0/24"], &["tag:node", "tag:router"])
    };
    // A record signed by a key its certificate does not bind.
    let wrong = forged("fx", 20);
    netmap.certify(&wrong);
    let stranger = SigningKey::generate().unwrap();
    netmap.write("fx.record.json", &wrong.record().sign(&stranger).to_json());
    // A record changed after it was signed.
    let tampered = forged("fy", 21);
    netmap.certify(&tampered);
    let mut envelope = tampered.record().sign(&tampered.signing);
    let mut bigger = tampered.record();
    bigger.routes.push("10.42.0.0/16".parse().unwrap());
    envelope.payload = bigger.to_payload();
    netmap.write("fy.record.json", &envelope.to_json());
    // A certificate signed by someone other than the operator.
    let unsigned = forged("fz", 22);
    netmap.write("fz.cert.json", &unsigned.cert(unix_now() + 3600).sign(&stranger).to_json());
    netmap.write("fz.record.json", &unsigned.record().sign(&unsigned.signing).to_json());
    // An expired certificate.
    let expired = forged("fw", 23);
    netmap.write("fw.cert.json", &expired.cert(unix_now() - 60).sign(&netmap.operator).to_json());
    netmap.write("fw.record.json", &expired.record().sign(&expired.signing).to_json());

    let da = Daemon::start(&na, &netmap, &a);
    let _db = Daemon::start(&nb, &netmap, &b);
    da.wait_for(10, "ra reaches rb", || da.pings("100.64.41.2"));
    da.wait_for(5, "rb's approved route installed", || da.table().contains("10.43.2.0/24"));

    // Only the genuine peer, only its approved route.
    assert_eq!(da.peers(), vec![b.wg.1.clone()], "no forged peer was added");
    let table = da.table();
    for absent in
        ["10.99.0.0", "10.43.9.0", "10.42.0.0", "100.64.41.20", "100.64.41.21", "100.64.41.22", "100.64.41.23"]
    {
        assert!(!table.contains(absent), "{absent} must not be routed: {table}");
    }

    let routes = da.routes_json();
    println!("vxwg routes --json: {routes:#}");
    let unapproved = route(&routes, "10.99.0.0/16", "rb");
    assert_eq!(unapproved["state"].as_str(), Some("not approved"), "{routes:#}");
    assert!(unapproved["reason"].as_str().unwrap().contains("auto_approvers"), "{routes:#}");
    assert_eq!(route(&routes, "10.43.2.0/24", "rb")["state"].as_str(), Some("primary"));
    let rejections = routes["rejections"].as_array().unwrap();
    let reason = |key: &str| -> String {
        rejections
            .iter()
            .find(|r| r["key"] == key)
            .and_then(|r| r["reason"].as_str())
            .unwrap_or_else(|| panic!("{key} not reported as rejected: {routes:#}"))
            .to_string()
    };
    assert!(reason("fx.record.json").contains("binds"), "wrong signer: {}", reason("fx.record.json"));
    assert!(reason("fy.record.json").contains("bad signature"), "tampered: {}", reason("fy.record.json"));
    assert!(reason("fz.cert.json").contains("not the operator key"), "unsigned: {}", reason("fz.cert.json"));
    assert!(reason("fw.cert.json").contains("expired"), "expired: {}", reason("fw.cert.json"));
    let status = da.status_json();
    assert!(status["control"]["rejections"].as_u64().unwrap() >= 4, "{status:#}");
    let text = na.exec(&format!("{VXWG} routes {}", da.ifname));
    assert!(text.contains("10.99.0.0/16") && text.contains("rejected documents:"), "{text}");

    // A store that breaks entirely (the policy replaced by garbage) does not tear the mesh down:
    // the last good netmap stays applied, and status says why the new one is held back.
    netmap.write("policy.json", b"{\"kind\": \"policy\", \"payload\": \"bm9wZQ==\"}");
    da.wait_for(5, "the broken netmap is held back", || da.status_json()["control"]["held"].is_string());
    let status = da.status_json();
    assert!(status["control"]["held"].as_str().unwrap().contains("policy"), "{status:#}");
    assert_eq!(da.peers(), vec![b.wg.1.clone()], "peers kept");
    assert!(da.table().contains("10.43.2.0/24"), "routes kept");
    assert!(da.pings("100.64.41.2"), "traffic still flows");
    assert!(na.exec(&format!("{VXWG} status {}", da.ifname)).contains("newest netmap held back"));
    // A good policy again: applied again.
    netmap.policy();
    da.wait_for(5, "a good netmap is applied again", || da.status_json()["control"]["held"].is_null());
}

#[test]
fn ha_subnet_route_fails_over_to_the_standby_when_the_primary_dies() {
    if !require(&["ip", "wg", "ping", "sysctl"]) {
        return;
    }
    let lan = Lan::new("lan", 'c', None);
    let (na, nb, nc) = (lan.join("ha", "10.201.0.1"), lan.join("hb", "10.201.0.2"), lan.join("hc", "10.201.0.3"));
    // The same pod address behind each of the two routers.
    let _pa = pod_behind(&na, "hpa", "10.42.0.254", "10.42.0.1");
    let _pb = pod_behind(&nb, "hpb", "10.42.0.254", "10.42.0.1");
    let netmap = Netmap::new();
    let router = ["tag:node", "tag:router"];
    let a = Spec::new("ha", "100.64.42.1", "10.201.0.1", &["10.42.0.0/16"], &router);
    let b = Spec::new("hb", "100.64.42.2", "10.201.0.2", &["10.42.0.0/16"], &router);
    let c = Spec::new("hc", "100.64.42.3", "10.201.0.3", &[], &["tag:node"]);
    for s in [&a, &b, &c] {
        netmap.certify(s);
    }
    netmap.policy();
    let mut da = Daemon::start(&na, &netmap, &a);
    let db = Daemon::start(&nb, &netmap, &b);
    let dc = Daemon::start(&nc, &netmap, &c);
    dc.wait_for(10, "hc reaches the pod through the primary", || dc.pings("10.42.0.1"));
    // hb publishes its record once its own first netmap is applied, which may be after ha's
    // route already works: wait until hc knows both advertisers.
    let has = |routes: &serde_json::Value, node: &str| {
        routes["routes"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["prefix"] == "10.42.0.0/16" && r["node"] == node))
    };
    dc.wait_for(10, "hc knows both advertisers of 10.42.0.0/16", || {
        let routes = dc.routes_json();
        has(&routes, "ha") && has(&routes, "hb")
    });
    let routes = dc.routes_json();
    assert_eq!(route(&routes, "10.42.0.0/16", "ha")["state"].as_str(), Some("primary"), "{routes:#}");
    assert_eq!(route(&routes, "10.42.0.0/16", "hb")["state"].as_str(), Some("standby"), "{routes:#}");
    // The routers deliver their own prefix locally, never to each other.
    assert!(!db.table().contains("10.42.0.0/16"), "{}", db.table());

    // The primary dies without a word (SIGKILL): its record lapses and hc fails over to hb.
    let killed = Instant::now();
    da.stop("KILL");
    dc.wait_for(15, "traffic to 10.42.0.1 resumes through hb within 15 s", || dc.pings("10.42.0.1"));
    let resumed = killed.elapsed();
    println!(
        "HA failover: traffic to 10.42.0.1 resumed through hb {:.1} s after the primary was killed",
        resumed.as_secs_f64()
    );
    let routes = dc.routes_json();
    let r = route(&routes, "10.42.0.0/16", "hb");
    assert_eq!((r["state"].as_str(), r["installed"].as_bool()), (Some("primary"), Some(true)), "{routes:#}");
    let status = dc.status_json();
    let via_b = status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["public_key"] == b.wg.1.as_str())
        .unwrap_or_else(|| panic!("hb is a peer: {status:#}"));
    assert!(via_b["allowed_ips"].as_array().unwrap().iter().any(|n| n == "10.42.0.0/16"), "{status:#}");

    // The former primary comes back: the choice is deterministic (lowest name among the live,
    // non-stale routers), so it is primary again, and traffic flows through it.
    drop(da);
    let back = Daemon::start(&na, &netmap, &a);
    dc.wait_for(10, "ha primary again", || {
        let routes = dc.routes_json();
        let primary = routes["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["prefix"] == "10.42.0.0/16" && r["node"] == "ha" && r["state"] == "primary");
        primary
    });
    dc.wait_for(10, "traffic to 10.42.0.1 through ha again", || dc.pings("10.42.0.1"));
    assert!(back.peers().contains(&c.wg.1));
}

#[test]
fn with_the_pod_path_approved_pod_cidrs_travel_as_vxlan_to_the_advertising_vtep() {
    if !require(&["ip", "wg", "ping", "sysctl"]) {
        return;
    }
    let lan = Lan::new("lan", 'c', None);
    let (na, nb) = (lan.join("pa", "10.201.0.1"), lan.join("pb", "10.201.0.2"));
    let pod_a = pod_behind(&na, "ppa", "10.42.1.1", "10.42.1.2");
    let pod_b = pod_behind(&nb, "ppb", "10.42.2.1", "10.42.2.2");
    let netmap = Netmap::new();
    let router = ["tag:node", "tag:router"];
    let a = Spec::new("pa", "100.64.43.1", "10.201.0.1", &["10.42.1.0/24"], &router);
    let b = Spec::new("pb", "100.64.43.2", "10.201.0.2", &["10.42.2.0/24"], &router);
    netmap.certify(&a);
    netmap.certify(&b);
    netmap.policy();
    let vxlan = |mac: &str, pods: &str| format!("[vxlan]\nvtep_mac = \"{mac}\"\npod_cidrs = [\"{pods}\"]\n");
    let da = Daemon::start_with(&na, &netmap, &a, &vxlan("02:00:00:00:43:01", "10.42.1.0/24"));
    let db = Daemon::start_with(&nb, &netmap, &b, &vxlan("02:00:00:00:43:02", "10.42.2.0/24"));
    // The pod TUN's default name: IFNAME cut to 10 characters, then -pods.
    let pods_a = format!("{}-pods", da.ifname.chars().take(10).collect::<String>());
    da.wait_for(10, "pb's pod CIDR routed into the pod TUN", || {
        da.table().contains(&format!("10.42.2.0/24 dev {pods_a}"))
    });
    let table = da.table();
    assert!(table.contains(&format!("100.64.43.2 dev {}", da.ifname)), "the VTEP address stays on the tunnel: {table}");
    assert!(!table.contains("10.42.1.0"), "its own pod CIDR is not routed to a peer: {table}");

    // Pod to pod, both ways, as VXLAN inside WireGuard.
    db.wait_for(10, "pod a reaches pod b", || pod_a.try_exec("ping -c 1 -W 1 10.42.2.2").status.success());
    assert!(pod_b.try_exec("ping -c 1 -W 1 10.42.1.2").status.success(), "pod b reaches pod a");
    let status = da.status_json();
    let pod = &status["pod"];
    let route = pod["routes"].as_array().unwrap().iter().find(|r| r["cidr"] == "10.42.2.0/24");
    let route = route.unwrap_or_else(|| panic!("pod route to pb's VTEP: {status:#}"));
    assert_eq!(
        (route["vtep_ip"].as_str(), route["vtep_mac"].as_str()),
        (Some("100.64.43.2"), Some("02:00:00:00:43:02"))
    );
    assert!(pod["packets_out"].as_u64().unwrap() >= 1 && pod["packets_in"].as_u64().unwrap() >= 1, "{status:#}");
    // pb's AllowedIPs hold its overlay address only: the pod CIDR is a pod route, not L3.
    let peer = &status["peers"][0];
    assert_eq!(peer["allowed_ips"], serde_json::json!(["100.64.43.2/32"]), "{status:#}");
}

#[test]
fn a_source_that_cannot_be_opened_fails_the_start_and_leaves_nothing_behind() {
    if !require(&["ip"]) {
        return;
    }
    let lan = Lan::new("lan", 'c', None);
    let na = lan.join("xa", "10.201.0.1");
    let a = Spec::new("xa", "100.64.45.1", "10.201.0.1", &[], &["tag:node"]);
    let dir = std::env::temp_dir().join(format!("vxwg-ctlbad-{}-{}", std::process::id(), unique()));
    let _cleanup = RemoveDir(dir.clone());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("private.key"), &a.wg.0).unwrap();
    std::fs::write(dir.join("signing.key"), a.signing.to_base64()).unwrap();
    // Nothing listens there (inside the node's own namespace).
    let toml = format!(
        "private_key_file = \"private.key\"\naddresses = [\"100.64.45.1/32\"]\n[control]\nnode = \"xa\"\noperator_key = \"{}\"\nsigning_key_file = \"signing.key\"\nsource = \"etcd\"\nendpoints = [\"http://10.201.0.1:1\"]\n",
        SigningKey::generate().unwrap().public().to_base64()
    );
    std::fs::write(dir.join("node.toml"), toml).unwrap();
    let name = ifname();
    let out = na.try_exec(&format!("{VXWG} up --foreground --config {} {name}", dir.join("node.toml").display()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without its source");
    assert!(err.contains("control.endpoints"), "the error names the field: {err}");
    assert!(!na.try_exec(&format!("ip link show {name}")).status.success(), "no interface left behind");
    assert!(!Path::new(&format!("/var/run/wireguard/{name}.sock")).exists(), "no socket left behind");
    let table = na.try_exec("ip route show table 52");
    assert!(String::from_utf8_lossy(&table.stdout).trim().is_empty(), "no routes left behind");
    assert!(!na.exec("ip rule show").contains("lookup 52"), "no rule left behind");
}

/// The shipped example policy is what `vxwg admin sign-policy` takes, and the result verifies.
#[test]
fn the_example_policy_signs_and_verifies_with_vxwg_admin() {
    let dir = std::env::temp_dir().join(format!("vxwg-ctlpolicy-{}-{}", std::process::id(), unique()));
    let _cleanup = RemoveDir(dir.clone());
    let operator = sh(&format!("{VXWG} admin init --dir {}", dir.join("operator").display())).trim().to_string();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/control/policy.toml");
    let out = dir.join("policy.json");
    sh(&format!(
        "{VXWG} admin sign-policy --operator-key {} --policy {example} --out {}",
        dir.join("operator/operator.key").display(),
        out.display()
    ));
    let inspected = sh(&format!("{VXWG} admin inspect --operator {operator} {}", out.display()));
    assert!(inspected.contains("10.42.0.0/16") && inspected.contains("tag:k8s"), "{inspected}");
}
