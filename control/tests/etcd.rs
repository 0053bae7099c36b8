//! The etcd source against a real three-member etcd cluster on 127.0.0.1 (started and removed by
//! each test; needs the `etcd` binary, not root). Skipped with a note when `etcd` is missing,
//! except under CI, which installs it.

#[path = "common/etcd_cluster.rs"]
mod etcd_cluster;

use std::time::{Duration, Instant};

use etcd_cluster::{etcd_available, EtcdCluster};
use vxwg_control::netmap::Document;
use vxwg_control::source::{EtcdSource, Source};

const PREFIX: &str = "/vxwg/test/";
const LONG_TTL: Duration = Duration::from_secs(10);

fn doc(key: &str, bytes: &str) -> Document {
    Document { key: key.to_string(), bytes: bytes.as_bytes().to_vec() }
}

fn as_pairs(docs: &[Document]) -> Vec<(String, String)> {
    docs.iter().map(|d| (d.key.clone(), String::from_utf8_lossy(&d.bytes).into_owned())).collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Calls `next` until a returned set satisfies `done`; returns that set (as key/text pairs and as
/// the documents themselves) and how long it took. Errors from `next` are tolerated (failover in
/// progress) until the deadline.
fn wait_for_documents(
    source: &mut EtcdSource,
    within: Duration,
    done: impl Fn(&[(String, String)]) -> bool,
) -> (Vec<Document>, Duration) {
    let start = Instant::now();
    let mut last_set = None;
    let mut last_error = None;
    while start.elapsed() < within {
        match source.next(within.saturating_sub(start.elapsed())) {
            Ok(Some(docs)) => {
                let set = as_pairs(&docs);
                if done(&set) {
                    return (docs, start.elapsed());
                }
                last_set = Some(set);
            }
            Ok(None) => {}
            Err(e) => last_error = Some(e.to_string()),
        }
    }
    panic!("not reached within {within:?}; last set {last_set:?}, last error {last_error:?}");
}

fn wait_for(
    source: &mut EtcdSource,
    within: Duration,
    done: impl Fn(&[(String, String)]) -> bool,
) -> (Vec<(String, String)>, Duration) {
    let (docs, took) = wait_for_documents(source, within, done);
    (as_pairs(&docs), took)
}

fn has(set: &[(String, String)], key: &str) -> bool {
    set.iter().any(|(k, _)| k == key)
}

/// A fresh three-member cluster and its endpoints; `None` (the test is skipped) without `etcd`.
/// The cluster is removed when dropped, so tests keep it bound (as `_cluster`) to their end.
fn start_cluster() -> Option<(EtcdCluster, Vec<String>)> {
    if !etcd_available() {
        return None;
    }
    let cluster = EtcdCluster::start(3);
    let endpoints = cluster.endpoints();
    Some((cluster, endpoints))
}

fn connect(endpoints: &[String], ttl: Duration) -> EtcdSource {
    EtcdSource::connect(endpoints, PREFIX, ttl).unwrap_or_else(|e| panic!("connect to {endpoints:?}: {e}"))
}

#[test]
fn a_published_record_is_seen_by_another_node_in_under_a_second() {
    let Some((_cluster, endpoints)) = start_cluster() else {
        return;
    };
    let mut a = connect(&endpoints, LONG_TTL);
    let mut b = connect(&endpoints[1..], LONG_TTL);

    let first = b.next(Duration::from_secs(5)).expect("first next");
    assert_eq!(first.map(|d| d.len()), Some(0), "the first call hands out the (empty) set");

    let start = Instant::now();
    a.publish(&doc("node-a", "record of a")).expect("publish");
    let (set, _) = wait_for(&mut b, Duration::from_secs(5), |set| has(set, "node-a"));
    let seen = start.elapsed();
    println!("published on one member, seen through another in {seen:?}");
    assert_eq!(set, pairs(&[("node-a", "record of a")]));
    assert!(seen < Duration::from_secs(1), "join took {seen:?}, must be under 1 s");

    // The publisher watches the prefix too and sees its own record.
    let (own, _) = wait_for(&mut a, Duration::from_secs(5), |set| has(set, "node-a"));
    assert_eq!(own, pairs(&[("node-a", "record of a")]));
    assert!(a.describe().contains(PREFIX), "{}", a.describe());
}

#[test]
fn an_update_is_a_change_and_an_unchanged_set_is_none() {
    let Some((_cluster, endpoints)) = start_cluster() else {
        return;
    };
    let mut a = connect(&endpoints, LONG_TTL);
    let mut b = connect(&endpoints, LONG_TTL);
    a.publish(&doc("node-a", "v1")).unwrap();
    wait_for(&mut b, Duration::from_secs(5), |set| set == pairs(&[("node-a", "v1")]));

    assert!(b.next(Duration::from_millis(300)).unwrap().is_none(), "nothing changed");
    // Putting the same bytes again is a store event, but not a change of the set.
    a.publish(&doc("node-a", "v1")).unwrap();
    assert!(b.next(Duration::from_millis(500)).unwrap().is_none(), "same bytes again");

    a.publish(&doc("node-a", "v2")).unwrap();
    let (set, took) = wait_for(&mut b, Duration::from_secs(5), |set| has(set, "node-a"));
    println!("update seen in {took:?}");
    assert_eq!(set, pairs(&[("node-a", "v2")]), "the update replaced the record, same key");
    assert!(b.next(Duration::from_millis(300)).unwrap().is_none(), "and then nothing changed");
}

#[test]
fn a_lapsed_lease_removes_the_record_and_a_kept_one_keeps_it() {
    let Some((_cluster, endpoints)) = start_cluster() else {
        return;
    };
    let ttl = Duration::from_secs(2);
    let mut a = connect(&endpoints, ttl);
    let mut c = connect(&endpoints, ttl);
    let mut b = connect(&endpoints, LONG_TTL);
    a.publish(&doc("node-a", "a")).unwrap();
    c.publish(&doc("node-c", "c")).unwrap();
    wait_for(&mut b, Duration::from_secs(5), |set| has(set, "node-a") && has(set, "node-c"));

    // a keeps calling next for well over its TTL: the keepalives inside hold the record.
    let until = Instant::now() + 3 * ttl;
    while Instant::now() < until {
        a.next(Duration::from_millis(200)).expect("a's next");
        c.next(Duration::from_millis(200)).expect("c's next");
        if let Some(set) = b.next(Duration::ZERO).expect("b's next") {
            let set = as_pairs(&set);
            assert!(has(&set, "node-a") && has(&set, "node-c"), "a live lease kept the records: {set:?}");
        }
    }

    // a stops without revoking (as a crashed node would): its record goes when the lease lapses.
    let stopped = Instant::now();
    drop(a);
    let (set, _) = {
        let start = Instant::now();
        let mut found = None;
        while start.elapsed() < ttl + Duration::from_secs(3) {
            c.next(Duration::from_millis(100)).expect("c's next");
            if let Some(docs) = b.next(Duration::from_millis(100)).expect("b's next") {
                let set = as_pairs(&docs);
                if !has(&set, "node-a") {
                    found = Some((set, start.elapsed()));
                    break;
                }
            }
        }
        found.expect("node-a still present after TTL + 3 s")
    };
    let gone = stopped.elapsed();
    println!("lease of {ttl:?} lapsed: record gone after {gone:?}");
    assert_eq!(set, pairs(&[("node-c", "c")]), "only the stopped node's record went");
    assert!(gone >= ttl / 2, "gone after {gone:?}: too early for a lapsed {ttl:?} lease");

    // A revoked lease (graceful leave) removes the record at once.
    let left = Instant::now();
    c.revoke().expect("revoke");
    let (set, took) = wait_for(&mut b, Duration::from_secs(5), |set| !has(set, "node-c"));
    println!("revoked lease: record gone after {:?} (seen after {took:?})", left.elapsed());
    assert!(set.is_empty());
    assert!(left.elapsed() < Duration::from_secs(1), "revoke took {:?}", left.elapsed());
}

#[test]
fn one_member_killed_changes_nothing() {
    let Some((mut cluster, endpoints)) = start_cluster() else {
        return;
    };
    let ttl = Duration::from_secs(3);
    // a and b both start on member 0 (the one to die); c on member 1.
    let mut a = connect(&endpoints, ttl);
    let mut b = connect(&[endpoints[0].clone(), endpoints[2].clone(), endpoints[1].clone()], LONG_TTL);
    let mut c = connect(&[endpoints[1].clone(), endpoints[2].clone(), endpoints[0].clone()], ttl);
    assert_eq!((a.endpoint(), b.endpoint(), c.endpoint()), (&*endpoints[0], &*endpoints[0], &*endpoints[1]));
    a.publish(&doc("node-a", "a1")).unwrap();
    c.publish(&doc("node-c", "c1")).unwrap();
    wait_for(&mut b, Duration::from_secs(5), |set| set == pairs(&[("node-a", "a1"), ("node-c", "c1")]));
    let lease = a.lease_id();

    cluster.kill(0);
    let killed = Instant::now();

    // Publishing through a source whose member died works (it moves to the next endpoint) ...
    a.publish(&doc("node-a", "a2")).expect("publish after a member died");
    println!("publish right after the kill took {:?}", killed.elapsed());
    assert_ne!(a.endpoint(), endpoints[0], "a moved off the dead member");
    // ... and so does watching: the new value arrives, the rest of the set is intact.
    let (set, took) = wait_for(&mut b, Duration::from_secs(5), |set| set.iter().any(|(_, v)| v == "a2"));
    println!("after killing a member: new record seen after {took:?} ({:?} since the kill)", killed.elapsed());
    assert_eq!(set, pairs(&[("node-a", "a2"), ("node-c", "c1")]));
    assert_ne!(b.endpoint(), endpoints[0], "b moved off the dead member");

    // A new record from a node that still lists the dead member first appears too.
    let mut d = connect(&endpoints, ttl);
    d.publish(&doc("node-d", "d1")).expect("publish from a new node");
    wait_for(&mut b, Duration::from_secs(5), |set| has(set, "node-d"));

    // Leases survive the failover: records stay for several TTLs while their nodes run.
    let until = Instant::now() + 2 * ttl;
    while Instant::now() < until {
        for source in [&mut a, &mut c, &mut d] {
            source.next(Duration::from_millis(100)).expect("next after the failover");
        }
        if let Some(docs) = b.next(Duration::ZERO).expect("b's next") {
            assert_eq!(as_pairs(&docs).len(), 3, "the set stays whole: {:?}", as_pairs(&docs));
        }
    }
    assert_eq!(a.lease_id(), lease, "a kept its lease across the failover");
    assert!(b.next(Duration::from_millis(200)).unwrap().is_none(), "nothing changed meanwhile");
}

#[test]
fn connect_fails_with_an_error_naming_the_endpoint() {
    // Nothing listens on a port we just released: no etcd needed for this one.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let err =
        EtcdSource::connect(std::slice::from_ref(&endpoint), PREFIX, LONG_TTL).err().expect("nothing listens there");
    let text = err.to_string();
    assert!(text.contains(&endpoint), "{text}");
    println!("{text}");
    assert!(EtcdSource::connect(&[], PREFIX, LONG_TTL).is_err(), "no endpoints at all is refused");
}

/// Signed documents for the last test: an operator, its policy, and nodes a and b.
mod signed {
    use std::net::{IpAddr, SocketAddr};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use vxwg_control::keys::Key;
    use vxwg_control::netmap::{Acl, AutoApprover, Document, NodeCert, NodeRecord, Policy, SigningKey};

    pub fn unix_now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    pub fn operator() -> SigningKey {
        SigningKey::from_seed([200; 32])
    }

    fn node_key(index: u8) -> SigningKey {
        SigningKey::from_seed([index; 32])
    }

    pub fn wg_key(index: u8) -> Key {
        Key([index; 32]).public()
    }

    pub fn policy() -> Document {
        let policy = Policy {
            version: 1,
            issued_at: unix_now() - 100,
            auto_approvers: vec![AutoApprover {
                prefix: "10.42.0.0/16".parse().unwrap(),
                tags: vec!["tag:k8s".into()],
            }],
            acls: vec![Acl { src: "tag:k8s".into(), dst: vec!["tag:k8s".into()] }],
        };
        Document { key: "policy.json".into(), bytes: policy.sign(&operator()).to_json() }
    }

    pub fn cert(name: &str, index: u8) -> Document {
        let cert = NodeCert {
            name: name.into(),
            wireguard_key: wg_key(index),
            node_key: node_key(index).public(),
            addresses: vec![IpAddr::from([100, 64, 0, index])],
            tags: vec!["tag:k8s".into()],
            not_after: unix_now() + Duration::from_secs(90 * 86_400).as_secs(),
        };
        Document { key: format!("{name}.cert.json"), bytes: cert.sign(&operator()).to_json() }
    }

    pub fn record(name: &str, index: u8) -> Document {
        let record = NodeRecord {
            name: name.into(),
            endpoints: vec![SocketAddr::from(([192, 168, 1, index], 51820))],
            routes: vec![format!("10.42.{index}.0/24").parse().unwrap()],
            vtep_mac: Some([2, 0, 0, 0, 0, index]),
            issued_at: unix_now() - 10,
            expires: unix_now() + 600,
        };
        Document { key: format!("{name}.record.json"), bytes: record.sign(&node_key(index)).to_json() }
    }
}

#[test]
fn a_value_tampered_with_in_etcd_is_rejected_by_verification() {
    use vxwg_control::netmap::{build, intent, Envelope, RejectReason, Trust};

    let Some((_cluster, endpoints)) = start_cluster() else {
        return;
    };

    // The operator stores policy and certificates without a lease (they outlive any node).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let raw_put = |key: &str, bytes: Vec<u8>| {
        runtime.block_on(async {
            let mut client = etcd_client::Client::connect(&endpoints, None).await.unwrap();
            client.put(format!("{PREFIX}{key}"), bytes, None).await.unwrap();
        })
    };
    for doc in [signed::policy(), signed::cert("a", 1), signed::cert("b", 2)] {
        raw_put(&doc.key, doc.bytes);
    }
    // Each node publishes its own signed record with its lease.
    let mut a = connect(&endpoints, LONG_TTL);
    let mut b = connect(&endpoints, LONG_TTL);
    a.publish(&signed::record("a", 1)).unwrap();
    b.publish(&signed::record("b", 2)).unwrap();

    let trust = Trust { operator: signed::operator().public() };
    let netmap_of = |docs: &[Document]| build(&trust, "a", docs, std::time::SystemTime::now(), &|_| false);
    let (docs, _) = wait_for_documents(&mut a, Duration::from_secs(5), |set| set.len() == 5);
    let netmap = netmap_of(&docs);
    assert!(netmap.rejections.is_empty(), "{:?}", netmap.rejections);
    assert!(intent(&netmap).peers.contains_key(&signed::wg_key(2)), "b is a peer of a");

    // Someone with write access to etcd rewrites b's record to claim the whole pod range, keeping
    // b's signature: verification rejects it and b is no peer, its routes are not trusted.
    let original = signed::record("b", 2);
    let mut envelope = Envelope::parse(&original.bytes).unwrap();
    let forged = String::from_utf8(envelope.payload.clone()).unwrap().replace("10.42.2.0/24", "10.42.0.0/16");
    envelope.payload = forged.into_bytes();
    raw_put("b.record.json", envelope.to_json());
    let before = as_pairs(&docs);
    let (docs, _) = wait_for_documents(&mut a, Duration::from_secs(5), |set| set != before);
    assert_eq!(docs.len(), 5, "the forged record replaced b's, nothing else changed");
    let netmap = netmap_of(&docs);
    let rejected: Vec<_> = netmap.rejections.iter().filter(|r| r.key == "b.record.json").collect();
    assert_eq!(rejected.len(), 1, "{:?}", netmap.rejections);
    assert!(matches!(rejected[0].reason, RejectReason::BadSignature { .. }), "{}", rejected[0]);
    let intent = intent(&netmap);
    assert!(!intent.peers.contains_key(&signed::wg_key(2)), "a forged record adds no peer");
    assert!(intent.peers.values().all(|p| !p.allowed_ips.contains(&"10.42.0.0/16".parse().unwrap())));
}

#[test]
fn a_lost_lease_is_granted_again_and_the_record_put_back() {
    let Some((_cluster, endpoints)) = start_cluster() else {
        return;
    };
    let mut a = connect(&endpoints, Duration::from_secs(3));
    let mut b = connect(&endpoints, LONG_TTL);
    a.publish(&doc("node-a", "a")).unwrap();
    wait_for(&mut b, Duration::from_secs(5), |set| has(set, "node-a"));

    // The lease vanishes behind a's back (as when it expires while a cannot reach any member).
    let lost = a.lease_id().expect("a holds a lease");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut client = etcd_client::Client::connect(&endpoints, None).await.unwrap();
        client.lease_revoke(lost).await.unwrap();
    });
    wait_for(&mut b, Duration::from_secs(5), |set| !has(set, "node-a"));

    // a notices at its next keepalive (a third of the TTL), takes a new lease and puts its
    // record back; b sees it return.
    let start = Instant::now();
    let mut back = false;
    while !back && start.elapsed() < Duration::from_secs(5) {
        a.next(Duration::from_millis(100)).expect("a's next");
        if let Some(docs) = b.next(Duration::from_millis(100)).expect("b's next") {
            back = as_pairs(&docs) == pairs(&[("node-a", "a")]);
        }
    }
    println!("lost lease replaced, record back after {:?}", start.elapsed());
    assert!(back, "a's record did not come back");
    assert_ne!(a.lease_id(), Some(lost), "a new lease");
}

#[test]
fn a_set_larger_than_one_range_page_is_loaded_whole() {
    let Some((_cluster, endpoints)) = start_cluster() else {
        return;
    };
    let mut a = connect(&endpoints, LONG_TTL);
    // 250 documents: three pages of the source's 100-key ranges.
    let start = Instant::now();
    for i in 0..250 {
        a.publish(&doc(&format!("node-{i:03}"), &format!("record {i}"))).unwrap();
    }
    println!("250 publishes took {:?}", start.elapsed());
    // A node that joins now reads them in one paged snapshot.
    let mut late = connect(&endpoints[2..], LONG_TTL);
    let start = Instant::now();
    let docs = late.next(Duration::from_secs(5)).unwrap().expect("first set");
    println!("250 documents loaded in {:?}", start.elapsed());
    let expected: Vec<(String, String)> = (0..250).map(|i| (format!("node-{i:03}"), format!("record {i}"))).collect();
    assert_eq!(as_pairs(&docs), expected);
}

#[test]
fn a_hung_member_is_noticed_and_left() {
    let Some((mut cluster, endpoints)) = start_cluster() else {
        return;
    };
    let mut a = connect(&[endpoints[1].clone(), endpoints[2].clone()], LONG_TTL);
    let mut b = connect(&endpoints, LONG_TTL);
    a.publish(&doc("node-a", "a1")).unwrap();
    wait_for(&mut b, Duration::from_secs(5), |set| has(set, "node-a"));
    assert_eq!(b.endpoint(), endpoints[0]);

    // b's member stops answering without closing anything: b's watch would wait forever; the
    // connection's pings find it dead and b moves on.
    cluster.freeze(0);
    let frozen = Instant::now();
    a.publish(&doc("node-a", "a2")).expect("publish while a member hangs");
    let (set, _) = wait_for(&mut b, Duration::from_secs(15), |set| set.iter().any(|(_, v)| v == "a2"));
    println!("a member hung: the update reached its watcher after {:?}", frozen.elapsed());
    assert_eq!(set, pairs(&[("node-a", "a2")]));
    assert_ne!(b.endpoint(), endpoints[0], "b left the hung member");
}

#[test]
fn an_outage_is_reported_on_every_call_and_the_source_recovers_after_it() {
    let Some((mut cluster, endpoints)) = start_cluster() else {
        return;
    };
    let ttl = Duration::from_secs(2);
    let mut a = connect(&endpoints, ttl);
    let mut b = connect(&endpoints, LONG_TTL);
    a.publish(&doc("node-a", "a")).unwrap();
    wait_for(&mut b, Duration::from_secs(5), |set| set == pairs(&[("node-a", "a")]));
    let lease = a.lease_id();

    // Every member down for longer than a's lease TTL.
    for i in 0..3 {
        cluster.kill(i);
    }
    let down = Instant::now();
    let mut calls = 0;
    while down.elapsed() < 2 * ttl {
        for source in [&mut a, &mut b] {
            let err = source.next(Duration::from_millis(200)).expect_err("no member answers");
            calls += 1;
            let text = err.to_string();
            assert!(endpoints.iter().any(|e| text.contains(e.as_str())), "names an endpoint: {text}");
        }
    }
    println!("outage: {calls} calls, each an error (e.g. {})", b.next(Duration::ZERO).unwrap_err());

    // Two of three members back (a quorum): both sources reconnect, stop reporting errors, and
    // a's record is in the set again. (etcd extends every lease when a new leader takes over, so
    // a's lease may have outlived the outage; if it lapsed, a takes a new one and puts the record
    // back.)
    cluster.restart(0);
    cluster.restart(1);
    cluster.wait_healthy(Duration::from_secs(30)).expect("quorum back");
    let back = Instant::now();
    // What b handed out last, before the outage; it changes only if the set did.
    let mut seen = pairs(&[("node-a", "a")]);
    let mut healthy = false;
    while !(healthy && seen == pairs(&[("node-a", "a")]) && a.lease_id().is_some())
        && back.elapsed() < Duration::from_secs(15)
    {
        let a_ok = a.next(Duration::from_millis(100)).is_ok();
        let b_next = b.next(Duration::from_millis(100));
        healthy = a_ok && b_next.is_ok();
        if let Ok(Some(docs)) = b_next {
            seen = as_pairs(&docs);
        }
    }
    println!("recovered {:?} after the quorum was back (lease kept: {})", back.elapsed(), a.lease_id() == lease);
    assert!(healthy, "sources did not recover");
    assert_eq!(seen, pairs(&[("node-a", "a")]));
    // The store itself holds the record, as a node joining now reads it.
    let mut c = connect(&endpoints, LONG_TTL);
    assert_eq!(as_pairs(&c.next(Duration::from_secs(5)).unwrap().expect("first set")), pairs(&[("node-a", "a")]));
    assert!(b.next(Duration::from_millis(200)).expect("healthy again").is_none());
}

/// A network namespace for one test, with loopback up; deleted on drop.
struct TestNetns {
    name: String,
}

impl TestNetns {
    fn new(tag: &str) -> TestNetns {
        let name = format!("vxwg-{tag}-{}", std::process::id());
        let ok = |args: &[&str]| {
            let status = std::process::Command::new("ip").args(args).status().expect("run ip");
            assert!(status.success(), "ip {args:?}");
        };
        ok(&["netns", "add", &name]);
        let ns = TestNetns { name };
        ok(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &str) {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend(args.split_whitespace());
        let status = std::process::Command::new("ip").args(&full).status().expect("run ip");
        assert!(status.success(), "ip {full:?}");
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// The harness can put a cluster inside a namespace (for vxwg nodes in other namespaces to reach):
/// it comes up there, survives a member's death and takes it back.
#[test]
fn a_cluster_runs_inside_a_network_namespace() {
    if !etcd_available() {
        return;
    }
    if !is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI must run as root");
        eprintln!("skipped: needs root for a network namespace");
        return;
    }
    let ns = TestNetns::new("etcdns");
    // An address of the namespace alone (on its loopback); a test would put it on a bridge.
    ns.ip("addr add 10.77.0.1/32 dev lo");
    let mut cluster = EtcdCluster::start_in_netns(3, &ns.name, "10.77.0.1");
    assert_eq!(cluster.endpoints(), ["http://10.77.0.1:2379", "http://10.77.0.1:2381", "http://10.77.0.1:2383"]);
    cluster.kill(0);
    cluster.wait_healthy(Duration::from_secs(15)).expect("two members stay healthy");
    cluster.restart(0);
    cluster.wait_healthy(Duration::from_secs(15)).expect("the restarted member rejoins");
}
