//! The netmap's security properties: every way a document can be forged, stale or out of policy
//! is refused with the right reason and never yields a peer or an AllowedIP; route approval, HA
//! primary selection and failover, ACLs, renewal, determinism, and a diff that touches only what
//! changed.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use vxwg_control::keys::Key;
use vxwg_control::netmap::*;
use vxwg_dataplane::route::IpNet;

const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn never_stale(_: &Key) -> bool {
    false
}

/// An operator and its nodes, with deterministic keys.
struct Fleet {
    operator: SigningKey,
    nodes: BTreeMap<String, Node>,
}

struct Node {
    signing: SigningKey,
    wg: Key,
    index: u8,
}

impl Fleet {
    fn new() -> Self {
        Self { operator: SigningKey::from_seed([200; 32]), nodes: BTreeMap::new() }
    }

    fn trust(&self) -> Trust {
        Trust { operator: self.operator.public() }
    }

    fn node(&mut self, name: &str) -> &Node {
        let index = self.nodes.len() as u8 + 1;
        self.nodes.entry(name.to_owned()).or_insert_with(|| Node {
            signing: SigningKey::from_seed([index; 32]),
            wg: Key([index; 32]).public(),
            index,
        })
    }

    fn cert_for(&mut self, name: &str, tags: &[&str], not_after: u64) -> NodeCert {
        let node = self.node(name);
        NodeCert {
            name: name.to_owned(),
            wireguard_key: node.wg,
            node_key: node.signing.public(),
            addresses: vec![IpAddr::from([100, 64, 0, node.index])],
            tags: tags.iter().map(|t| t.to_string()).collect(),
            not_after,
        }
    }

    /// A valid certificate document, tagged `tag:k8s`, valid for 90 days.
    fn cert(&mut self, name: &str) -> Document {
        let cert = self.cert_for(name, &["tag:k8s"], NOW + 90 * DAY);
        doc(format!("{name}.cert.json"), cert.sign(&self.operator))
    }

    fn record_for(&mut self, name: &str, routes: &[&str]) -> NodeRecord {
        let index = self.node(name).index;
        NodeRecord {
            name: name.to_owned(),
            endpoints: vec![
                SocketAddr::from(([192, 168, 1, index], 51820)),
                SocketAddr::from(([203, 0, 113, index], 51820)),
            ],
            routes: routes.iter().map(|r| net(r)).collect(),
            vtep_mac: Some([2, 0, 0, 0, 0, index]),
            issued_at: NOW - 10,
            expires: NOW + 60,
        }
    }

    /// A valid record signed by the node's own key, advertising `routes`.
    fn record(&mut self, name: &str, routes: &[&str]) -> Document {
        let record = self.record_for(name, routes);
        doc(format!("{name}.record.json"), record.sign(&self.nodes[name].signing))
    }

    /// Replaces `name`'s record in `docs` with a fresh one advertising `routes`.
    fn readvertise(&mut self, docs: &mut Vec<Document>, name: &str, routes: &[&str]) {
        let key = format!("{name}.record.json");
        docs.retain(|d| d.key != key);
        docs.push(self.record(name, routes));
    }

    /// The usual policy: pods in 10.42.0.0/16 auto-approved for tag:k8s, tag:k8s reaches tag:k8s.
    fn policy(&self) -> Document {
        doc("policy.json".into(), usual_policy().sign(&self.operator))
    }

    fn wg(&self, name: &str) -> Key {
        self.nodes[name].wg
    }
}

fn usual_policy() -> Policy {
    Policy {
        version: 1,
        issued_at: NOW - 100,
        auto_approvers: vec![AutoApprover { prefix: net("10.42.0.0/16"), tags: vec!["tag:k8s".into()] }],
        acls: vec![Acl { src: "tag:k8s".into(), dst: vec!["tag:k8s".into()] }],
    }
}

fn doc(key: String, envelope: Envelope) -> Document {
    Document { key, bytes: envelope.to_json() }
}

/// Three healthy nodes a, b, c, each advertising its pod CIDR, and the usual policy.
fn three() -> (Fleet, Vec<Document>) {
    let mut f = Fleet::new();
    let mut docs = vec![f.policy()];
    for (name, pods) in [("a", "10.42.1.0/24"), ("b", "10.42.2.0/24"), ("c", "10.42.3.0/24")] {
        docs.push(f.cert(name));
        docs.push(f.record(name, &[pods]));
    }
    (f, docs)
}

fn build_a(f: &Fleet, docs: &[Document]) -> Netmap {
    build(&f.trust(), "a", docs, at(NOW), &never_stale)
}

/// The single rejection of document `key`.
fn rejection<'a>(netmap: &'a Netmap, key: &str) -> &'a RejectReason {
    let found: Vec<_> = netmap.rejections.iter().filter(|r| r.key == key).collect();
    assert_eq!(found.len(), 1, "expected one rejection for {key}, got {:?}", netmap.rejections);
    &found[0].reason
}

/// Every AllowedIP the engine would hold.
fn all_allowed_ips(intent: &Intent) -> Vec<IpNet> {
    intent.peers.values().flat_map(|p| p.allowed_ips.clone()).collect()
}

fn node<'a>(netmap: &'a Netmap, name: &str) -> Option<&'a NodeView> {
    netmap.nodes.iter().find(|n| n.name() == name)
}

fn route<'a>(netmap: &'a Netmap, prefix: &str, node: &str) -> &'a RouteState {
    &netmap.routes.iter().find(|r| r.prefix == net(prefix) && r.node == node).expect("route decided").state
}

#[test]
fn healthy_fleet_gives_peers_with_overlay_addresses_and_approved_pod_routes() {
    let (f, docs) = three();
    let netmap = build_a(&f, &docs);
    assert!(netmap.rejections.is_empty(), "{:?}", netmap.rejections);
    let intent = intent(&netmap);
    assert_eq!(intent.peers.len(), 2, "a peers with b and c, not itself");
    let b = &intent.peers[&f.wg("b")];
    assert_eq!(b.name, "b");
    assert_eq!(b.endpoint, Some(SocketAddr::from(([192, 168, 1, 2], 51820))), "same-LAN endpoint first");
    assert_eq!(b.allowed_ips, vec![net("10.42.2.0/24"), net("100.64.0.2/32")]);
    assert_eq!(b.routes, vec![net("10.42.2.0/24")]);
    assert_eq!(b.vtep_ip, Some(IpAddr::from([100, 64, 0, 2])));
    assert_eq!(b.vtep_mac, Some([2, 0, 0, 0, 0, 2]));
    assert_eq!(
        route(&netmap, "10.42.1.0/24", "a"),
        &RouteState::Approved { primary: true },
        "own route, served locally"
    );
    assert!(node(&netmap, "a").unwrap().is_self);
}

#[test]
fn tampered_payload_is_a_bad_signature_and_adds_nothing() {
    let (mut f, mut docs) = three();
    // Rewrite b's record to claim a route, keeping b's signature.
    let mut envelope = Envelope::parse(&docs[4].bytes).unwrap();
    assert_eq!(docs[4].key, "b.record.json");
    let forged = String::from_utf8(envelope.payload.clone()).unwrap().replace("10.42.2.0/24", "10.42.0.0/16");
    envelope.payload = forged.into_bytes();
    docs[4].bytes = envelope.to_json();
    let netmap = build_a(&f, &docs);
    assert!(matches!(rejection(&netmap, "b.record.json"), RejectReason::BadSignature { .. }));
    let intent = intent(&netmap);
    assert!(!intent.peers.contains_key(&f.wg("b")), "b has no valid record, so it is gone");
    assert!(!all_allowed_ips(&intent).contains(&net("10.42.0.0/16")));
    assert!(netmap.routes.iter().all(|r| r.node != "b"));
    // A byte flipped inside the base64 signature is refused too.
    let mut raw = String::from_utf8(f.cert_for("c", &["tag:k8s"], NOW + DAY).sign(&f.operator).to_json()).unwrap();
    let sig_at = raw.find("\"signature\":\"").unwrap() + 14;
    let flipped = if &raw[sig_at..=sig_at] == "A" { "B" } else { "A" };
    raw.replace_range(sig_at..=sig_at, flipped);
    let reason = Envelope::open(raw.as_bytes()).unwrap_err();
    assert!(matches!(reason, RejectReason::BadSignature { .. }), "{reason}");
}

#[test]
fn a_signature_cannot_be_replayed_as_another_kind() {
    let (mut f, _) = three();
    let cert = f.cert_for("a", &["tag:k8s"], NOW + DAY).sign(&f.operator);
    let mut as_policy = cert.clone();
    as_policy.kind = Kind::Policy;
    assert!(cert.verify());
    assert!(!as_policy.verify(), "the kind is signed (domain separation)");
}

#[test]
fn record_signed_by_another_nodes_key_is_refused() {
    let (mut f, mut docs) = three();
    // c signs a record in b's name, moving b's traffic to c's endpoint.
    let mut record = f.record_for("b", &["10.42.2.0/24"]);
    record.endpoints = vec![SocketAddr::from(([198, 51, 100, 66], 51820))];
    docs.retain(|d| d.key != "b.record.json");
    docs.push(doc("b.record.json".into(), record.sign(&f.nodes["c"].signing)));
    let netmap = build_a(&f, &docs);
    let reason = rejection(&netmap, "b.record.json");
    assert_eq!(
        reason,
        &RejectReason::WrongSigner { signer: f.nodes["c"].signing.public(), expected: f.nodes["b"].signing.public() }
    );
    assert!(reason.to_string().contains("binds"), "{reason}");
    assert!(!intent(&netmap).peers.contains_key(&f.wg("b")));
}

#[test]
fn cert_signed_by_a_non_operator_key_is_refused_and_its_node_never_peers() {
    let (mut f, mut docs) = three();
    let intruder = SigningKey::from_seed([99; 32]);
    let cert = f.cert_for("mallory", &["tag:k8s"], NOW + DAY);
    docs.push(doc("mallory.cert.json".into(), cert.sign(&intruder)));
    docs.push(f.record("mallory", &["10.42.9.0/24"]));
    let netmap = build_a(&f, &docs);
    assert_eq!(rejection(&netmap, "mallory.cert.json"), &RejectReason::UnknownSigner { signer: intruder.public() });
    assert_eq!(rejection(&netmap, "mallory.record.json"), &RejectReason::NoCert { name: "mallory".into() });
    assert!(node(&netmap, "mallory").is_none());
    let intent = intent(&netmap);
    assert!(!intent.peers.contains_key(&f.wg("mallory")));
    assert!(!all_allowed_ips(&intent).contains(&net("10.42.9.0/24")));
}

#[test]
fn expired_cert_and_expired_record_are_refused() {
    let (mut f, mut docs) = three();
    let old = f.cert_for("b", &["tag:k8s"], NOW - 1);
    docs.retain(|d| d.key != "b.cert.json");
    docs.push(doc("b.cert.json".into(), old.sign(&f.operator)));
    let mut stale_record = f.record_for("c", &["10.42.3.0/24"]);
    stale_record.issued_at = NOW - 120;
    stale_record.expires = NOW;
    docs.retain(|d| d.key != "c.record.json");
    docs.push(doc("c.record.json".into(), stale_record.sign(&f.nodes["c"].signing)));
    let netmap = build_a(&f, &docs);
    assert_eq!(rejection(&netmap, "b.cert.json"), &RejectReason::CertExpired { not_after: NOW - 1 });
    assert_eq!(rejection(&netmap, "b.record.json"), &RejectReason::NoCert { name: "b".into() });
    assert_eq!(rejection(&netmap, "c.record.json"), &RejectReason::RecordExpired { expires: NOW });
    let c = node(&netmap, "c").expect("c's certificate is still valid");
    assert!(c.record.is_none() && !c.peer, "without a live record c is gone");
    assert!(intent(&netmap).peers.is_empty());
    assert!(netmap.routes.iter().all(|r| r.node == "a"), "gone nodes advertise nothing");
}

#[test]
fn record_whose_name_has_no_cert_is_refused() {
    let (mut f, mut docs) = three();
    docs.push(f.record("ghost", &["10.42.7.0/24"]));
    let netmap = build_a(&f, &docs);
    assert_eq!(rejection(&netmap, "ghost.record.json"), &RejectReason::NoCert { name: "ghost".into() });
    assert_eq!(
        netmap.rejections[0].to_string(),
        "ghost.record.json (node ghost): no valid certificate for node \"ghost\""
    );
    assert_eq!(intent(&netmap).peers.len(), 2);
}

#[test]
fn routes_outside_the_policy_or_from_untagged_nodes_are_not_approved() {
    let (mut f, mut docs) = three();
    // b advertises its pods and 0.0.0.0/0; d is inside the approved prefix but lacks tag:k8s
    // (the ACL still lets it peer, through tag:infra).
    f.readvertise(&mut docs, "b", &["10.42.2.0/24", "0.0.0.0/0"]);
    let d = f.cert_for("d", &["tag:infra"], NOW + DAY);
    docs.push(doc("d.cert.json".into(), d.sign(&f.operator)));
    docs.push(f.record("d", &["10.42.4.0/24"]));
    let mut policy = usual_policy();
    policy.acls.push(Acl { src: "tag:infra".into(), dst: vec!["tag:k8s".into()] });
    docs.retain(|d| d.key != "policy.json");
    docs.push(doc("policy.json".into(), policy.sign(&f.operator)));
    let netmap = build_a(&f, &docs);
    assert_eq!(route(&netmap, "0.0.0.0/0", "b"), &RouteState::NotApproved(NotApproved::NoApprover));
    assert_eq!(
        route(&netmap, "10.42.4.0/24", "d"),
        &RouteState::NotApproved(NotApproved::TagNotAllowed {
            approver: net("10.42.0.0/16"),
            tags: vec!["tag:k8s".into()]
        })
    );
    let intent = intent(&netmap);
    assert!(intent.peers.contains_key(&f.wg("d")), "d is a peer, only its route is refused");
    let ips = all_allowed_ips(&intent);
    assert!(!ips.contains(&net("0.0.0.0/0")) && !ips.contains(&net("10.42.4.0/24")));
    assert!(ips.contains(&net("10.42.2.0/24")));
    assert_eq!(intent.peers[&f.wg("d")].allowed_ips, vec![net("100.64.0.4/32")]);
}

#[test]
fn a_route_may_not_take_over_another_nodes_overlay_address() {
    let (mut f, mut docs) = three();
    let mut policy = usual_policy();
    policy.auto_approvers.push(AutoApprover { prefix: net("100.64.0.0/16"), tags: vec!["tag:k8s".into()] });
    docs.retain(|d| d.key != "policy.json" && d.key != "c.record.json");
    docs.push(doc("policy.json".into(), policy.sign(&f.operator)));
    docs.push(f.record("c", &["10.42.3.0/24", "100.64.0.2/32"]));
    let netmap = build_a(&f, &docs);
    assert_eq!(
        route(&netmap, "100.64.0.2/32", "c"),
        &RouteState::NotApproved(NotApproved::CoversNodeAddress {
            address: IpAddr::from([100, 64, 0, 2]),
            node: "b".into()
        })
    );
    let intent = intent(&netmap);
    assert_eq!(intent.peers[&f.wg("b")].allowed_ips, vec![net("10.42.2.0/24"), net("100.64.0.2/32")]);
    assert!(!intent.peers[&f.wg("c")].allowed_ips.contains(&net("100.64.0.2/32")));
}

#[test]
fn policy_signed_by_a_non_operator_key_is_refused_and_nothing_is_approved() {
    let (f, mut docs) = three();
    let intruder = SigningKey::from_seed([98; 32]);
    let mut generous = usual_policy();
    generous.version = 99;
    generous.auto_approvers.push(AutoApprover { prefix: net("0.0.0.0/0"), tags: vec!["*".into()] });
    docs.retain(|d| d.key != "policy.json");
    docs.push(doc("policy.json".into(), generous.sign(&intruder)));
    let netmap = build_a(&f, &docs);
    assert_eq!(rejection(&netmap, "policy.json"), &RejectReason::UnknownSigner { signer: intruder.public() });
    assert!(netmap.policy.is_none());
    assert!(netmap.routes.iter().all(|r| r.state == RouteState::NotApproved(NotApproved::NoPolicy)));
    assert!(intent(&netmap).peers.is_empty(), "no policy: fail closed, no peers");
}

#[test]
fn the_newest_valid_policy_wins() {
    let (f, mut docs) = three();
    let mut strict = usual_policy();
    strict.version = 2;
    strict.acls.clear();
    docs.push(doc("policy-v2.json".into(), strict.sign(&f.operator)));
    let netmap = build_a(&f, &docs);
    assert_eq!(netmap.policy.as_ref().map(|p| p.version), Some(2));
    assert!(intent(&netmap).peers.is_empty(), "version 2 has no ACLs");
}

#[test]
fn two_certs_claiming_one_name_or_one_key_are_all_refused() {
    let (mut f, mut docs) = three();
    // A second certificate for b with another WireGuard key.
    let mut other_b = f.cert_for("b", &["tag:k8s"], NOW + 2 * DAY);
    other_b.wireguard_key = Key([77; 32]).public();
    docs.push(doc("b2.cert.json".into(), other_b.sign(&f.operator)));
    // d claims c's WireGuard key.
    let mut d = f.cert_for("d", &["tag:k8s"], NOW + DAY);
    d.wireguard_key = f.wg("c");
    docs.push(doc("d.cert.json".into(), d.sign(&f.operator)));
    docs.push(f.record("d", &["10.42.4.0/24"]));
    let netmap = build_a(&f, &docs);
    assert!(
        matches!(rejection(&netmap, "b.cert.json"), RejectReason::DuplicateName { name, other } if name == "b" && other == "b2.cert.json")
    );
    assert!(matches!(rejection(&netmap, "b2.cert.json"), RejectReason::DuplicateName { .. }));
    assert!(matches!(rejection(&netmap, "c.cert.json"), RejectReason::DuplicateKey { other, .. } if other == "d"));
    assert!(matches!(rejection(&netmap, "d.cert.json"), RejectReason::DuplicateKey { other, .. } if other == "c"));
    assert!(node(&netmap, "b").is_none() && node(&netmap, "c").is_none() && node(&netmap, "d").is_none());
    let intent = intent(&netmap);
    assert!(intent.peers.is_empty(), "{:?}", intent.peers.keys());
}

#[test]
fn two_certs_claiming_one_overlay_address_are_refused() {
    let (mut f, mut docs) = three();
    let mut d = f.cert_for("d", &["tag:k8s"], NOW + DAY);
    d.addresses = vec![IpAddr::from([100, 64, 0, 2])];
    docs.push(doc("d.cert.json".into(), d.sign(&f.operator)));
    let netmap = build_a(&f, &docs);
    assert!(matches!(rejection(&netmap, "d.cert.json"), RejectReason::DuplicateAddress { other, .. } if other == "b"));
    assert!(!intent(&netmap).peers.contains_key(&f.wg("b")));
}

#[test]
fn ha_prefix_has_exactly_one_primary_and_fails_over() {
    let (mut f, mut docs) = three();
    f.readvertise(&mut docs, "b", &["10.42.0.0/16"]);
    f.readvertise(&mut docs, "c", &["10.42.0.0/16"]);
    let primaries = |netmap: &Netmap| -> Vec<String> {
        netmap
            .routes
            .iter()
            .filter(|r| r.prefix == net("10.42.0.0/16") && r.state == RouteState::Approved { primary: true })
            .map(|r| r.node.clone())
            .collect()
    };
    let netmap = build_a(&f, &docs);
    assert_eq!(primaries(&netmap), ["b"]);
    assert_eq!(route(&netmap, "10.42.0.0/16", "c"), &RouteState::Approved { primary: false });
    let i = intent(&netmap);
    assert_eq!(i.peers[&f.wg("b")].routes, vec![net("10.42.0.0/16")]);
    assert!(i.peers[&f.wg("c")].routes.is_empty(), "the standby holds no AllowedIP for the prefix");
    assert_eq!(all_allowed_ips(&i).iter().filter(|n| **n == net("10.42.0.0/16")).count(), 1);

    // b's handshake goes stale: c takes over.
    let b_key = f.wg("b");
    let netmap = build(&f.trust(), "a", &docs, at(NOW), &|k: &Key| *k == b_key);
    assert_eq!(primaries(&netmap), ["c"]);
    assert!(node(&netmap, "b").unwrap().stale && node(&netmap, "b").unwrap().peer, "a stale node stays a peer");
    let i = intent(&netmap);
    assert_eq!(i.peers[&f.wg("c")].routes, vec![net("10.42.0.0/16")]);
    // Everyone stale: still one primary.
    let netmap = build(&f.trust(), "a", &docs, at(NOW), &|_: &Key| true);
    assert_eq!(primaries(&netmap), ["b"]);

    // b's record expires (b stopped refreshing it): c takes over.
    let later = NOW + 61;
    let mut c_fresh = f.record_for("c", &["10.42.0.0/16"]);
    c_fresh.expires = later + 60;
    docs.retain(|d| d.key != "c.record.json");
    docs.push(doc("c.record.json".into(), c_fresh.sign(&f.nodes["c"].signing)));
    let netmap = build(&f.trust(), "a", &docs, at(later), &never_stale);
    assert_eq!(primaries(&netmap), ["c"]);
    assert!(!intent(&netmap).peers.contains_key(&f.wg("b")));
}

#[test]
fn a_node_advertising_a_prefix_itself_serves_it_locally() {
    let (mut f, mut docs) = three();
    f.readvertise(&mut docs, "a", &["10.42.0.0/16"]);
    f.readvertise(&mut docs, "b", &["10.42.0.0/16"]);
    let netmap = build_a(&f, &docs);
    assert_eq!(route(&netmap, "10.42.0.0/16", "a"), &RouteState::Approved { primary: true });
    assert_eq!(route(&netmap, "10.42.0.0/16", "b"), &RouteState::Approved { primary: false });
    assert!(!all_allowed_ips(&intent(&netmap)).contains(&net("10.42.0.0/16")));
}

#[test]
fn acl_decides_who_peers() {
    let (mut f, mut docs) = three();
    let guest = f.cert_for("guest", &["tag:guest"], NOW + DAY);
    docs.push(doc("guest.cert.json".into(), guest.sign(&f.operator)));
    docs.push(f.record("guest", &[]));
    let netmap = build_a(&f, &docs);
    let g = node(&netmap, "guest").unwrap();
    assert!(!g.acl_allows && !g.peer);
    assert!(!intent(&netmap).peers.contains_key(&f.wg("guest")));
    // A one-way rule is enough: WireGuard sessions are symmetric.
    let mut policy = usual_policy();
    policy.version = 2;
    policy.acls.push(Acl { src: "tag:guest".into(), dst: vec!["tag:k8s".into()] });
    docs.push(doc("policy-v2.json".into(), policy.sign(&f.operator)));
    let netmap = build_a(&f, &docs);
    assert!(intent(&netmap).peers.contains_key(&f.wg("guest")));
    // And the guest sees a, but not through rules it is not part of.
    assert!(build(&f.trust(), "guest", &docs, at(NOW), &never_stale).nodes.iter().filter(|n| n.peer).count() == 3);
}

#[test]
fn renewed_cert_is_picked_up_and_the_old_one_may_expire() {
    let (mut f, mut docs) = three();
    let short = f.cert_for("b", &["tag:k8s"], NOW + 100);
    docs.retain(|d| d.key != "b.cert.json");
    docs.push(doc("b.cert.json".into(), short.sign(&f.operator)));
    let renewed = f.cert_for("b", &["tag:k8s"], NOW + DEFAULT_CERT_DAYS * DAY);
    docs.push(doc("b.renewed.cert.json".into(), renewed.sign(&f.operator)));
    let netmap = build_a(&f, &docs);
    assert!(netmap.rejections.is_empty(), "{:?}", netmap.rejections);
    let b = node(&netmap, "b").unwrap();
    assert_eq!((b.cert.not_after, b.cert_key.as_str()), (NOW + 90 * DAY, "b.renewed.cert.json"));
    // Past the old cert's expiry, b is still there (its record refreshed meanwhile).
    let later = NOW + 200;
    let mut record = f.record_for("b", &["10.42.2.0/24"]);
    record.issued_at = later - 1;
    record.expires = later + 60;
    docs.push(doc("b.record2.json".into(), record.sign(&f.nodes["b"].signing)));
    let netmap = build(&f.trust(), "a", &docs, at(later), &never_stale);
    assert_eq!(rejection(&netmap, "b.cert.json"), &RejectReason::CertExpired { not_after: NOW + 100 });
    assert!(node(&netmap, "b").unwrap().peer);
    assert_eq!(node(&netmap, "b").unwrap().record_key.as_deref(), Some("b.record2.json"));
}

#[test]
fn garbage_is_rejected_with_a_reason_and_never_panics() {
    let (f, mut docs) = three();
    let valid = Envelope::parse(&docs[1].bytes).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.json", vec![]),
        ("torn.json", docs[1].bytes[..docs[1].bytes.len() / 2].to_vec()),
        ("kind.json", br#"{"kind":"peer","payload":"","signer":"","signature":""}"#.to_vec()),
        (
            "signer.json",
            format!(r#"{{"kind":"policy","payload":"","signer":"AAAA","signature":"{}"}}"#, b64.encode([0; 64]))
                .into_bytes(),
        ),
        ("payload.json", Envelope::seal(Kind::NodeCert, b"{\"name\":1}".to_vec(), &f.operator).to_json()),
        (
            "field.json",
            Envelope::seal(
                Kind::NodeRecord,
                br#"{"name":"a","endpoints":["nowhere"],"routes":[],"issued_at":1,"expires":2}"#.to_vec(),
                &f.nodes["a"].signing,
            )
            .to_json(),
        ),
        ("invalid-utf8.json", vec![0xff, 0xfe, 0x00]),
    ];
    for (key, bytes) in cases {
        docs.push(Document { key: key.into(), bytes });
    }
    let netmap = build_a(&f, &docs);
    assert!(matches!(rejection(&netmap, "empty.json"), RejectReason::BadJson(_)));
    assert!(matches!(rejection(&netmap, "torn.json"), RejectReason::BadJson(_)));
    assert_eq!(rejection(&netmap, "kind.json"), &RejectReason::UnknownKind("peer".into()));
    assert!(matches!(rejection(&netmap, "signer.json"), RejectReason::BadEnvelope { field, .. } if field == "signer"));
    assert!(matches!(rejection(&netmap, "payload.json"), RejectReason::BadPayload { field, .. } if field == "payload"));
    let field = rejection(&netmap, "field.json");
    assert!(matches!(field, RejectReason::BadPayload { field, .. } if field == "endpoints[0]"), "{field}");
    assert!(field.to_string().contains("\"nowhere\""), "{field}");
    assert!(matches!(rejection(&netmap, "invalid-utf8.json"), RejectReason::BadJson(_)));
    assert_eq!(intent(&netmap).peers.len(), 2, "the valid documents still count");
    assert!(valid.verify());
}

#[test]
fn build_is_deterministic_whatever_the_document_order() {
    let (mut f, mut docs) = three();
    docs.push(f.record("ghost", &[]));
    docs.push(Document { key: "junk.json".into(), bytes: b"{".to_vec() });
    let first = build_a(&f, &docs);
    for rotation in 1..docs.len() {
        docs.rotate_left(1);
        assert_eq!(build_a(&f, &docs), first, "rotation {rotation}");
    }
    docs.reverse();
    assert_eq!(build_a(&f, &docs), first);
    assert!(first.nodes.windows(2).all(|w| w[0].name() < w[1].name()));
    assert!(first.routes.windows(2).all(|w| (w[0].prefix, &w[0].node) < (w[1].prefix, &w[1].node)));
}

#[test]
fn documents_round_trip_through_their_envelope() {
    let (mut f, _) = three();
    let cert = f.cert_for("a", &["tag:k8s", "tag:router"], NOW + DAY);
    let (envelope, payload) = Envelope::open(&cert.sign(&f.operator).to_json()).unwrap();
    assert_eq!((envelope.kind, envelope.signer, payload), (Kind::NodeCert, f.operator.public(), Payload::Cert(cert)));
    let record = f.record_for("a", &["10.42.1.0/24", "fd00:42::/64"]);
    let (_, payload) = Envelope::open(&record.sign(&f.nodes["a"].signing).to_json()).unwrap();
    assert_eq!(payload, Payload::Record(record));
    let policy = usual_policy();
    let (_, payload) = Envelope::open(&policy.sign(&f.operator).to_json()).unwrap();
    assert_eq!(payload, Payload::Policy(policy));
    assert_eq!(parse_mac("02:00:0A:ff:00:01"), Ok([2, 0, 10, 255, 0, 1]));
    assert_eq!(format_mac(&[2, 0, 10, 255, 0, 1]), "02:00:0a:ff:00:01");
    assert!(parse_mac("02:00:0a:ff:00").is_err() && parse_mac("02:00:0a:ff:00:+1").is_err());
}

#[test]
fn cached_builds_equal_fresh_builds_and_recheck_changed_bytes() {
    let (f, mut docs) = three();
    let mut cache = VerifyCache::default();
    let trust = f.trust();
    let first = build_cached(&mut cache, &trust, "a", &docs, at(NOW), &never_stale);
    assert_eq!(first, build_a(&f, &docs));
    assert_eq!(cache.len(), docs.len());
    // Same bytes, later time: expiry is checked again, not cached.
    let later = build_cached(&mut cache, &trust, "a", &docs, at(NOW + 61), &never_stale);
    assert!(later.rejections.iter().all(|r| matches!(r.reason, RejectReason::RecordExpired { .. })));
    assert_eq!(later.rejections.len(), 3);
    // A document tampered with after it was cached is verified afresh and refused.
    let mut envelope = Envelope::parse(&docs[4].bytes).unwrap();
    envelope.payload =
        String::from_utf8(envelope.payload).unwrap().replace("10.42.2.0/24", "10.42.0.0/16").into_bytes();
    docs[4].bytes = envelope.to_json();
    let tampered = build_cached(&mut cache, &trust, "a", &docs, at(NOW), &never_stale);
    assert!(matches!(rejection(&tampered, "b.record.json"), RejectReason::BadSignature { .. }));
    assert_eq!(tampered, build_a(&f, &docs));
    // Documents no longer present are forgotten.
    docs.truncate(3);
    build_cached(&mut cache, &trust, "a", &docs, at(NOW), &never_stale);
    assert_eq!(cache.len(), 3);
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary bytes, and valid documents with bytes flipped, truncated or payload bytes
        /// changed, never panic and never add a peer beyond the valid fleet.
        #[test]
        fn mutated_documents(
            garbage in proptest::collection::vec(any::<u8>(), 0..300),
            which in 0usize..7,
            at_frac in 0.0f64..1.0,
            flip in 1u8..=255,
            truncate in any::<bool>(),
        ) {
            let (f, mut docs) = three();
            docs.push(Document { key: "garbage.json".into(), bytes: garbage });
            let target = &mut docs[which];
            let original = target.bytes.clone();
            let at = ((target.bytes.len() - 1) as f64 * at_frac) as usize;
            if truncate {
                target.bytes.truncate(at);
            } else {
                target.bytes[at] ^= flip;
            }
            let netmap = build_a(&f, &docs);
            let peers = intent(&netmap).peers;
            prop_assert!(peers.len() <= 2);
            for key in peers.keys() {
                prop_assert!(*key == f.wg("b") || *key == f.wg("c"));
            }
            // Changing a document's bytes either leaves its meaning intact (e.g. JSON whitespace
            // or escape-equivalent base64 padding) or gets it rejected.
            let meaning_kept = Envelope::open(&docs[which].bytes).ok().map(|(e, p)| (e.kind, e.signer, p))
                == Envelope::open(&original).ok().map(|(e, p)| (e.kind, e.signer, p));
            let rejected = netmap.rejections.iter().any(|r| r.key == docs[which].key);
            prop_assert!(meaning_kept || rejected, "a changed document was accepted with a new meaning");
        }
    }
}

#[test]
fn wildcard_acls_and_ipv6_routes() {
    let (mut f, mut docs) = three();
    let policy = Policy {
        version: 5,
        issued_at: NOW,
        auto_approvers: vec![AutoApprover { prefix: net("fd00:42::/48"), tags: vec!["tag:k8s".into()] }],
        acls: vec![Acl { src: "*".into(), dst: vec!["*".into()] }],
    };
    docs.push(doc("policy-v5.json".into(), policy.sign(&f.operator)));
    f.readvertise(&mut docs, "b", &["fd00:42:0:2::/64", "fd00:43::/64", "10.42.2.0/24"]);
    let netmap = build_a(&f, &docs);
    assert_eq!(route(&netmap, "fd00:42:0:2::/64", "b"), &RouteState::Approved { primary: true });
    assert_eq!(route(&netmap, "fd00:43::/64", "b"), &RouteState::NotApproved(NotApproved::NoApprover));
    assert_eq!(
        route(&netmap, "10.42.2.0/24", "b"),
        &RouteState::NotApproved(NotApproved::NoApprover),
        "v5 replaced v1"
    );
    let intent = intent(&netmap);
    assert_eq!(intent.peers.len(), 2);
    assert_eq!(intent.peers[&f.wg("b")].routes, vec![net("fd00:42:0:2::/64")]);
    assert!(!covers(&net("10.0.0.0/8"), &net("::/0")) && !covers(&net("::/0"), &net("10.0.0.0/8")));
    assert!(covers(&net("::/0"), &net("fd00::/8")) && !covers(&net("fd00::/8"), &net("::/0")));
}
