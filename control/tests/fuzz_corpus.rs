//! Replays every committed seed in `fuzz/corpus/<target>/` for the control crate's fuzz targets
//! through the function the target calls (`vxwg_control::fuzzing`), so that the seeds and any
//! crash reproducer added to them run in ordinary `cargo test`, without a fuzzer or nightly.
//!
//! The seeds are written by `write_seeds` below (ignored; run it by hand after changing the fixed
//! keys or the document format:
//! `cargo test -p vxwg-control --test fuzz_corpus -- --ignored write_seeds`), and
//! `signed_seeds_reach_the_netmap` checks that the valid ones still build a netmap with peers and
//! approved routes, so the fuzzer keeps starting from deep inputs.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use vxwg_control::fuzzing::{self, node_signing_key, operator_key, DOCUMENT_SEPARATOR, NOW, SELF_NAME};
use vxwg_control::keys::Key;
use vxwg_control::netmap::{
    build, intent, Acl, AutoApprover, Envelope, Kind, NodeCert, NodeRecord, Policy, RouteState, Trust,
};
use vxwg_control::uapi::PeerUpdate;

/// What a fuzz target calls with each input.
type Target = fn(&[u8]);

/// Fuzz target (`[[bin]]` name and corpus directory) → the function it calls. The dataplane's
/// replay test (`dataplane/tests/fuzz_corpus.rs`) names these as replayed here.
const TARGETS: &[(&str, Target)] =
    &[("uapi_request", fuzzing::uapi_request), ("netmap_documents", fuzzing::netmap_documents)];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
}

fn seeds(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no seeds", dir.display());
    files
}

fn replay(name: &str) {
    let (_, target) = TARGETS.iter().find(|(n, _)| *n == name).expect("mapped target");
    for path in seeds(name) {
        let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Shown with the panic message if this seed fails.
        eprintln!("replaying {}", path.display());
        target(&data);
    }
}

#[test]
fn uapi_request() {
    replay("uapi_request");
}

#[test]
fn netmap_documents() {
    replay("netmap_documents");
}

/// The seeds made of valid signed documents (as envelopes, and as payloads to seal) still open
/// and build a netmap with peers, an approved primary route and a refused one: if the fixed keys
/// or the document format change, they must be written again.
#[test]
fn signed_seeds_reach_the_netmap() {
    for seed in ["fleet_envelopes", "fleet_sealed"] {
        let data = fs::read(corpus_dir("netmap_documents").join(seed)).expect("seed exists");
        let docs = fuzzing::split_documents(&data);
        let netmap = build(&Trust { operator: operator_key().public() }, SELF_NAME, &docs, fuzzing::now(), &|_| false);
        let peers: Vec<&str> = netmap.nodes.iter().filter(|n| n.peer).map(|n| n.name()).collect();
        assert_eq!(peers, ["beta", "gamma"], "{seed}");
        let state = |prefix: &str, node: &str| {
            let r = netmap.routes.iter().find(|r| r.prefix.to_string() == prefix && r.node == node);
            r.unwrap_or_else(|| panic!("{seed}: no route {prefix} of {node}")).state.clone()
        };
        assert_eq!(state("10.9.0.0/16", "beta"), RouteState::Approved { primary: true }, "{seed}");
        assert_eq!(state("10.9.0.0/16", "gamma"), RouteState::Approved { primary: false }, "{seed}");
        assert!(matches!(state("192.168.0.0/16", "gamma"), RouteState::NotApproved(_)), "{seed}");
        assert_eq!(intent(&netmap).peers.len(), 2, "{seed}");
        // The tampered, stranger-signed, wrong-signer and expired documents are refused.
        assert_eq!(netmap.rejections.len(), 4, "{seed}: {:#?}", netmap.rejections);
    }
}

// --- seed writer -------------------------------------------------------------------------------

const DAY: u64 = 86_400;

fn wg_key(name: &str) -> Key {
    Key([name.len() as u8 * 17 + name.as_bytes()[0]; 32]).public()
}

fn cert(name: &str, index: u8, tags: &[&str]) -> NodeCert {
    NodeCert {
        name: name.into(),
        wireguard_key: wg_key(name),
        node_key: node_signing_key(name).public(),
        addresses: vec![IpAddr::from([100, 64, 0, index]), IpAddr::from([0xfd7a, 0, 0, 0, 0, 0, 0, u16::from(index)])],
        tags: tags.iter().map(|t| t.to_string()).collect(),
        not_after: NOW + 90 * DAY,
    }
}

fn record(name: &str, index: u8, routes: &[&str]) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        endpoints: vec![SocketAddr::from(([192, 0, 2, index], 51820)), "[2001:db8::1]:51820".parse().unwrap()],
        routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
        vtep_mac: Some([0x02, 0, 0, 0, 0, index]),
        issued_at: NOW - 60,
        expires: NOW + DAY,
    }
}

fn policy(version: u64) -> Policy {
    let tags = |t: &[&str]| t.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    Policy {
        version,
        issued_at: NOW - DAY,
        auto_approvers: vec![
            AutoApprover { prefix: "10.0.0.0/8".parse().unwrap(), tags: tags(&["tag:router"]) },
            AutoApprover { prefix: "fd00::/8".parse().unwrap(), tags: tags(&["tag:router"]) },
            AutoApprover { prefix: "100.64.0.0/10".parse().unwrap(), tags: tags(&["tag:router"]) },
        ],
        acls: vec![
            Acl { src: "tag:k8s".into(), dst: tags(&["tag:k8s", "tag:router"]) },
            Acl { src: "tag:router".into(), dst: tags(&["tag:router"]) },
        ],
    }
}

/// A document as an envelope, or as a `seal` chunk that the fuzz function signs itself.
enum Form {
    Envelope,
    Sealed,
}

fn document(form: &Form, kind: Kind, payload: Vec<u8>, signer: &str) -> Vec<u8> {
    match form {
        Form::Envelope => {
            let key = if signer == "operator" { operator_key() } else { node_signing_key(signer) };
            Envelope::seal(kind, payload, &key).to_json()
        }
        Form::Sealed => [format!("seal {} {signer}\n", kind.as_str()).into_bytes(), payload].concat(),
    }
}

fn join(docs: Vec<Vec<u8>>) -> Vec<u8> {
    docs.join(&[DOCUMENT_SEPARATOR][..])
}

/// A fleet as alpha sees it: alpha (k8s), beta and gamma (routers, both advertising 10.9.0.0/16),
/// delta (outside the ACLs); plus a tampered certificate, one signed by a stranger, a record
/// signed with the wrong node's key and an expired one.
fn fleet(form: Form) -> Vec<u8> {
    let f = &form;
    let mut docs = vec![
        document(f, Kind::NodeCert, cert("alpha", 1, &["tag:k8s"]).to_payload(), "operator"),
        document(f, Kind::NodeCert, cert("beta", 2, &["tag:k8s", "tag:router"]).to_payload(), "operator"),
        document(f, Kind::NodeCert, cert("gamma", 3, &["tag:router"]).to_payload(), "operator"),
        document(f, Kind::NodeCert, cert("delta", 4, &["tag:other"]).to_payload(), "operator"),
        document(f, Kind::Policy, policy(1).to_payload(), "operator"),
        document(f, Kind::Policy, policy(0).to_payload(), "operator"),
        document(f, Kind::NodeRecord, record("alpha", 1, &["10.1.0.0/16"]).to_payload(), "alpha"),
        document(
            f,
            Kind::NodeRecord,
            record("beta", 2, &["10.2.0.0/16", "10.9.0.0/16", "fd00:9::/32"]).to_payload(),
            "beta",
        ),
        document(
            f,
            Kind::NodeRecord,
            record("gamma", 3, &["10.9.0.0/16", "192.168.0.0/16", "100.64.0.0/24"]).to_payload(),
            "gamma",
        ),
        document(f, Kind::NodeRecord, record("delta", 4, &["10.3.0.0/16"]).to_payload(), "delta"),
        // Refused: signed by a key that is not the operator's, by the wrong node, or expired.
        document(f, Kind::NodeCert, cert("epsilon", 5, &["tag:k8s"]).to_payload(), "stranger"),
        document(f, Kind::NodeRecord, record("beta", 2, &["10.8.0.0/16"]).to_payload(), "gamma"),
        document(
            f,
            Kind::NodeRecord,
            NodeRecord { expires: NOW - 1, issued_at: NOW - 2, ..record("gamma", 3, &[]) }.to_payload(),
            "gamma",
        ),
    ];
    // A certificate whose payload was changed after signing.
    let mut tampered = Envelope::seal(Kind::NodeCert, cert("zeta", 6, &["tag:k8s"]).to_payload(), &operator_key());
    tampered.payload = cert("zeta", 6, &["tag:router"]).to_payload();
    docs.push(tampered.to_json());
    join(docs)
}

/// Certificates that clash (one name with two keys, one address for two nodes) and renewals (a
/// later certificate and a newer record win).
fn clashes() -> Vec<u8> {
    let f = &Form::Sealed;
    let mut other_key = cert("beta", 2, &["tag:router"]);
    other_key.wireguard_key = wg_key("other");
    let mut same_address = cert("gamma", 3, &["tag:router"]);
    same_address.addresses = vec![IpAddr::from([100, 64, 0, 1])];
    let renewed = NodeCert { not_after: NOW + 200 * DAY, ..cert("alpha", 1, &["tag:k8s", "tag:router"]) };
    let newer = NodeRecord { issued_at: NOW - 1, ..record("alpha", 1, &["10.5.0.0/16"]) };
    join(vec![
        document(f, Kind::NodeCert, cert("alpha", 1, &["tag:k8s"]).to_payload(), "operator"),
        document(f, Kind::NodeCert, renewed.to_payload(), "operator"),
        document(f, Kind::NodeCert, cert("beta", 2, &["tag:router"]).to_payload(), "operator"),
        document(f, Kind::NodeCert, other_key.to_payload(), "operator"),
        document(f, Kind::NodeCert, same_address.to_payload(), "operator"),
        document(f, Kind::Policy, policy(3).to_payload(), "operator"),
        document(f, Kind::NodeRecord, record("alpha", 1, &["10.4.0.0/16"]).to_payload(), "alpha"),
        document(f, Kind::NodeRecord, newer.to_payload(), "alpha"),
        document(f, Kind::NodeRecord, record("gamma", 3, &["10.9.0.0/16"]).to_payload(), "gamma"),
    ])
}

/// Documents that fail before any node is known, one per way of failing.
fn malformed() -> Vec<u8> {
    let good = Envelope::seal(Kind::Policy, policy(1).to_payload(), &operator_key()).to_json();
    let good = String::from_utf8(good).unwrap();
    let f = &Form::Sealed;
    join(vec![
        b"not json".to_vec(),
        good.replace("\"policy\"", "\"routes\"").into_bytes(),
        good.replacen("\"payload\":\"", "\"payload\":\"!!", 1).into_bytes(),
        good.replacen("\"signature\":\"", "\"signature\":\"AAAA", 1).into_bytes(),
        good.replacen('{', "{\"extra\":1,", 1).into_bytes(),
        document(
            f,
            Kind::NodeCert,
            br#"{"name":".bad","wireguard_public_key":"","node_key":"","addresses":[],"tags":[],"not_after":0}"#
                .to_vec(),
            "operator",
        ),
        document(
            f,
            Kind::NodeRecord,
            br#"{"name":"alpha","endpoints":["1.2.3.4"],"routes":[],"issued_at":5,"expires":4}"#.to_vec(),
            "alpha",
        ),
        document(
            f,
            Kind::NodeRecord,
            br#"{"name":"alpha","endpoints":[],"routes":["10.0.0.0/33"],"vtep_mac":"02:00","issued_at":1,"expires":2}"#
                .to_vec(),
            "alpha",
        ),
        document(
            f,
            Kind::Policy,
            br#"{"version":1,"issued_at":1,"auto_approvers":[{"prefix":"x","tags":[]}]}"#.to_vec(),
            "operator",
        ),
        document(
            f,
            Kind::Policy,
            br#"{"version":1,"issued_at":1,"acls":[{"src":"a b","dst":[]}]}"#.to_vec(),
            "operator",
        ),
    ])
}

fn uapi_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let (a, b) = (Key([1; 32]).public().to_hex(), Key([2; 32]).public().to_hex());
    let (private, psk, zero) = (Key([9; 32]).to_hex(), Key([7; 32]).to_hex(), "0".repeat(64));
    let mut full = PeerUpdate::new(Key([3; 32]).public());
    full.preshared_key = Some(Some(Key([7; 32])));
    full.endpoint = Some("[fe80::1%7]:51820".parse().unwrap());
    full.persistent_keepalive = Some(25);
    full.replace_allowed_ips = true;
    full.allowed_ips = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/64".parse().unwrap()];
    full.protocol_version = Some(1);
    let update = vxwg_control::uapi::DeviceUpdate {
        private_key: Some(Some(Key([9; 32]))),
        listen_port: Some(51820),
        fwmark: Some(Some(42)),
        replace_peers: true,
        peers: vec![full, PeerUpdate { remove: true, ..PeerUpdate::new(Key([4; 32]).public()) }],
    };
    vec![
        ("get", b"get=1\n\n".to_vec()),
        ("set_everything", update.to_request().into_bytes()),
        (
            "set_wg_order",
            format!(
                "set=1\nprivate_key={private}\nlisten_port=51820\nreplace_peers=true\npublic_key={a}\n\
                 preshared_key={psk}\nendpoint=192.0.2.1:51820\nreplace_allowed_ips=true\n\
                 allowed_ip=10.1.0.0/16\nallowed_ip=10.2.0.0/16\npublic_key={b}\nupdate_only=true\n\
                 endpoint=[2001:db8::1]:51820\npersistent_keepalive_interval=25\nallowed_ip=10.2.0.0/16\n\n"
            )
            .into_bytes(),
        ),
        (
            "set_then_get_frames",
            format!(
                "set=1\npublic_key={a}\nallowed_ip=10.0.0.0/8\n\nset=1\nprivate_key={zero}\nfwmark=0\n\
                 public_key={a}\npreshared_key={zero}\nremove=true\n\nget=1\n\n"
            )
            .into_bytes(),
        ),
        (
            "refused_then_set",
            format!("set=1\nlisten_port=1\npublic_key={a}\nendpoint=bad\n\nset=1\nlisten_port=2\n\n").into_bytes(),
        ),
        ("unterminated", b"set=1\nlisten_port=1\n".to_vec()),
        ("not_utf8", b"set=1\nlisten_port=\xff\n\n".to_vec()),
        ("unknown_keys", format!("set=1\nbogus=1\n\nset=1\npublic_key={a}\nlisten_port=1\n\n").into_bytes()),
        ("named_scope", format!("set=1\npublic_key={a}\nendpoint=[fe80::1%eth0]:51820\n\n").into_bytes()),
        ("long_prefix", format!("set=1\npublic_key={a}\nallowed_ip={}/8\n\n", "1".repeat(600)).into_bytes()),
        ("crlf", b"set=1\r\n\n".to_vec()),
        ("empty_line_first", b"\nget=1\n\n".to_vec()),
    ]
}

/// Writes the seed corpora. Ignored: run it by hand (see the module doc), then commit the files.
#[test]
#[ignore = "writes fuzz/corpus/{uapi_request,netmap_documents}; run by hand"]
fn write_seeds() {
    let netmap: Vec<(&str, Vec<u8>)> = vec![
        ("fleet_envelopes", fleet(Form::Envelope)),
        ("fleet_sealed", fleet(Form::Sealed)),
        ("clashes", clashes()),
        ("malformed", malformed()),
        ("empty", Vec::new()),
    ];
    for (target, files) in [("uapi_request", uapi_seeds()), ("netmap_documents", netmap)] {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in files {
            fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
