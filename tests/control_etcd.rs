//! The control plane on etcd end to end (root only; CI runs as root and installs etcd): a real
//! three-member etcd cluster inside the namespace that bridges the LAN, three vxwg nodes in their own
//! namespaces on that LAN with `[control] source = "etcd"` and every member as an endpoint. The
//! operator's certificates and policy are put into etcd through etcd's JSON gateway; each node
//! publishes its own signed record under its lease. An observer (an `EtcdSource` on a thread inside
//! the LAN namespace) timestamps when records appear and vanish, so the test measures what the
//! nodes do from the moment a change is visible in etcd.
//!
//! Every namespace, process and directory has a unique name and is removed on drop, also on panic;
//! traffic goes only to addresses inside the test's namespaces.

mod common;
#[allow(dead_code)]
#[path = "../control/tests/common/etcd_cluster.rs"]
mod etcd_cluster;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::mesh::{policy, quoted, unix_now, Daemon, Lan, Spec};
use common::{require, Netns};
use etcd_cluster::{etcd_available, EtcdCluster};
use vxwg::control::netmap::SigningKey;
use vxwg::control::source::EtcdSource;
use vxwg::dataplane::io::netns;

const PREFIX: &str = "/vxwg/";
/// The etcd host: the LAN bridge's own address, inside the LAN namespace.
const ETCD_HOST: &str = "10.202.0.100";
/// The nodes' lease: the shortest docs/control.md advises when a member may die mid-test.
const LEASE_TTL: u64 = 6;
/// Records valid far longer than the lease, so only the lease can remove a killed node's record.
const RECORD_TTL: u64 = 600;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `f` on a thread inside namespace `ns` (setns affects only that thread), for sockets that
/// must be opened there.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = PathBuf::from(format!("/var/run/netns/{ns}"));
    std::thread::spawn(move || {
        netns::enter(&path).unwrap_or_else(|e| panic!("enter {}: {e}", path.display()));
        f()
    })
    .join()
    .expect("thread inside the namespace")
}

/// One JSON request to etcd's gRPC gateway (`/v3/...`) at `endpoint`, from inside `ns`. HTTP/1.0,
/// so the answer is one plain body that ends when the connection closes.
fn gateway(ns: &str, endpoint: &str, path: &str, body: serde_json::Value) -> Result<serde_json::Value, String> {
    let addr = endpoint.strip_prefix("http://").expect("http:// endpoint").to_string();
    let path = path.to_string();
    in_netns(ns, move || {
        let body = body.to_string();
        let mut stream = TcpStream::connect(&addr).map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let request = format!(
            "POST {path} HTTP/1.0\r\nHost: etcd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).map_err(|e| format!("send to {addr}: {e}"))?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).map_err(|e| format!("read from {addr}: {e}"))?;
        let (head, json) = answer.split_once("\r\n\r\n").ok_or_else(|| format!("{addr}{path}: no body: {answer}"))?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            return Err(format!("{addr}{path}: {answer}"));
        }
        serde_json::from_str(json).map_err(|e| format!("{addr}{path}: {e}: {json}"))
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Puts `<PREFIX><key>` without a lease, as an operator does with certificates and the policy.
fn operator_put(lan: &Lan, endpoint: &str, key: &str, value: &[u8]) {
    let body = serde_json::json!({"key": b64(format!("{PREFIX}{key}").as_bytes()), "value": b64(value)});
    gateway(&lan.ns.name, endpoint, "/v3/kv/put", body).unwrap_or_else(|e| panic!("put {key}: {e}"));
}

/// The index of the member that is the raft leader (its own id equals the leader id it reports).
fn leader(lan: &Lan, endpoints: &[String]) -> usize {
    for (i, endpoint) in endpoints.iter().enumerate() {
        let status = gateway(&lan.ns.name, endpoint, "/v3/maintenance/status", serde_json::json!({}))
            .unwrap_or_else(|e| panic!("status of member {i}: {e}"));
        if status["header"]["member_id"] == status["leader"] {
            return i;
        }
    }
    panic!("no member says it is the leader");
}

/// A key under the prefix appeared (`true`) or vanished (`false`) at the instant given.
type Event = (Instant, String, bool);

/// Watches the prefix from inside the LAN namespace and records when keys appear and vanish.
struct Observer {
    events: Arc<Mutex<Vec<Event>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Observer {
    fn start(lan: &Lan, endpoints: Vec<String>) -> Observer {
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, connected) = mpsc::channel();
        let path = PathBuf::from(format!("/var/run/netns/{}", lan.ns.name));
        let (log, done) = (events.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let source = netns::enter(&path).map_err(|e| format!("enter {}: {e}", path.display())).and_then(|()| {
                EtcdSource::connect(&endpoints, PREFIX, Duration::from_secs(10)).map_err(|e| e.to_string())
            });
            let mut source = match source {
                Ok(source) => {
                    ready.send(Ok(())).unwrap();
                    source
                }
                Err(e) => return ready.send(Err(e)).unwrap(),
            };
            let mut present = BTreeSet::new();
            while !done.load(Ordering::Relaxed) {
                match source.next_documents(Duration::from_millis(50)) {
                    Ok(Some(docs)) => {
                        let now = Instant::now();
                        let keys: BTreeSet<String> = docs.into_iter().map(|d| d.key).collect();
                        let mut log = log.lock().unwrap();
                        log.extend(keys.difference(&present).map(|k| (now, k.clone(), true)));
                        log.extend(present.difference(&keys).map(|k| (now, k.clone(), false)));
                        present = keys;
                    }
                    Ok(None) => {}
                    // A member going away: the source moves on by itself; don't spin meanwhile.
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        let observer = Observer { events, stop, thread: Some(thread) };
        connected.recv().expect("observer thread").unwrap_or_else(|e| panic!("observer cannot watch etcd: {e}"));
        observer
    }

    /// The last event for `key`, if any.
    fn last(&self, key: &str) -> Option<(Instant, bool)> {
        self.events.lock().unwrap().iter().rev().find(|e| e.1 == key).map(|e| (e.0, e.2))
    }

    /// Waits up to `within` until `key` is present (`true`) or absent (`false`); returns when the
    /// observer saw it change to that.
    #[track_caller]
    fn wait(&self, key: &str, present: bool, within: Duration) -> Instant {
        let change = if present { "appeared" } else { "vanished" };
        self.try_wait(key, present, within).unwrap_or_else(|| panic!("{key} {change} in etcd within {within:?}"))
    }

    /// As `wait`, but `None` on timeout (so the caller can say more).
    fn try_wait(&self, key: &str, present: bool, within: Duration) -> Option<Instant> {
        let start = Instant::now();
        loop {
            match self.last(key) {
                Some((at, now_present)) if now_present == present => return Some(at),
                _ => {}
            }
            if start.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// True if `key` vanished from etcd at any time after `since`.
    fn vanished_since(&self, key: &str, since: Instant) -> bool {
        self.events.lock().unwrap().iter().any(|e| e.1 == key && !e.2 && e.0 > since)
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl<'a> Daemon<'a> {
    /// A node on the etcd source at `endpoints`, certified by `operator`.
    fn start(ns: &'a Netns, operator: &SigningKey, endpoints: &[String], spec: &Spec) -> Daemon<'a> {
        let control = format!(
            "source = \"etcd\"\nendpoints = [{}]\nprefix = \"{PREFIX}\"\nlease_ttl_secs = {LEASE_TTL}\nrecord_ttl_secs = {RECORD_TTL}\n",
            quoted(endpoints)
        );
        Self::launch(ns, &operator.public().to_base64(), spec, &control, "")
    }
}

/// Waits up to `within` until `ok` holds on every daemon; returns for each the instant it first
/// did. Fails with every daemon's log.
#[track_caller]
fn wait_each(daemons: &[&Daemon], within: Duration, what: &str, ok: impl Fn(&Daemon) -> bool) -> Vec<Instant> {
    let start = Instant::now();
    let mut seen: Vec<Option<Instant>> = vec![None; daemons.len()];
    while seen.iter().any(Option::is_none) {
        for (d, at) in daemons.iter().zip(seen.iter_mut()).filter(|(_, at)| at.is_none()) {
            if ok(d) {
                *at = Some(Instant::now());
            }
        }
        if start.elapsed() > within && seen.iter().any(Option::is_none) {
            let logs: Vec<String> = daemons.iter().map(|d| format!("--- {} log:\n{}", d.ifname, d.log())).collect();
            panic!("{what}: not on every node within {within:?} ({seen:?});\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    seen.into_iter().map(Option::unwrap).collect()
}

#[test]
fn three_nodes_on_a_three_member_etcd_join_expire_and_ride_out_a_dead_leader() {
    if !require(&["ip", "wg", "ping"]) || !etcd_available() {
        return;
    }
    let lan = Lan::new("elan", 'e', Some(ETCD_HOST));
    let mut etcd = EtcdCluster::start_in_netns(3, &lan.ns.name, ETCD_HOST);
    let endpoints = etcd.endpoints();
    let (na, nb, nc) = (lan.join("ea", "10.202.0.1"), lan.join("eb", "10.202.0.2"), lan.join("ec", "10.202.0.3"));
    let a = Spec::new("ea", "100.64.50.1", "10.202.0.1", &[], &["tag:node"]);
    let b = Spec::new("eb", "100.64.50.2", "10.202.0.2", &[], &["tag:node"]);
    let c = Spec::new("ec", "100.64.50.3", "10.202.0.3", &["10.43.5.0/24"], &["tag:node", "tag:router"]);
    // An address in the subnet ec advertises (on its loopback, inside its namespace).
    nc.exec("ip addr add 10.43.5.1/32 dev lo");

    // The operator's documents, without a lease: they outlive any node.
    let operator = SigningKey::generate().unwrap();
    for s in [&a, &b, &c] {
        operator_put(
            &lan,
            &endpoints[0],
            &format!("{}.cert.json", s.name),
            &s.cert(unix_now() + 86_400).sign(&operator).to_json(),
        );
    }
    let policy = policy(&["10.43.0.0/16"]);
    operator_put(&lan, &endpoints[0], "policy.json", &policy.sign(&operator).to_json());
    let observer = Observer::start(&lan, endpoints.clone());

    // Each node lists every member, starting with a different one (a node connects to the first
    // that answers), so whichever member dies later, one node was talking to it.
    let first = |i: usize| -> Vec<String> { (0..3).map(|k| endpoints[(i + k) % 3].clone()).collect() };
    let da = Daemon::start(&na, &operator, &first(0), &a);
    let db = Daemon::start(&nb, &operator, &first(1), &b);
    wait_each(&[&da, &db], Duration::from_secs(10), "ea and eb hold each other", |d| {
        d.holds(if d.ifname == da.ifname { &b } else { &a })
    });
    assert!(da.answers_soon(&b.overlay), "ea reaches eb");

    // (1) ec joins: its daemon publishes its record; ea and eb add it within 1 s of the record
    // being in etcd, and reach it.
    let started = Instant::now();
    let mut dc = Daemon::start(&nc, &operator, &first(2), &c);
    let published = observer.wait(&c.record_key(), true, Duration::from_secs(10));
    let held = wait_each(&[&da, &db], Duration::from_secs(5), "ec's peer and routes at ea and eb", |d| d.holds(&c));
    let reached =
        wait_each(&[&da, &db], Duration::from_secs(5), "ec answers ea and eb", |d| d.answers_soon(&c.overlay));
    let since = |t: &Instant| t.saturating_duration_since(published);
    println!(
        "join: ec's record in etcd {:.0} ms after its daemon started; peer + routes at ea {:.0} ms, at eb {:.0} ms after \
         that; ec answers ping from ea {:.0} ms, from eb {:.0} ms after the record ({:.0} / {:.0} ms after the start)",
        ms(published - started),
        ms(since(&held[0])),
        ms(since(&held[1])),
        ms(since(&reached[0])),
        ms(since(&reached[1])),
        ms(reached[0] - started),
        ms(reached[1] - started),
    );
    for t in &held {
        assert!(since(t) < Duration::from_secs(1), "the join is visible at the others within 1 s of the record");
    }
    assert!(da.pings("10.43.5.1"), "the approved subnet behind ec is reachable from ea");
    assert_eq!(da.status_json()["control"]["peers"].as_u64(), Some(2));

    // (2) ec dies without a word (SIGKILL: no withdrawal, no revocation). Its record is valid for
    // RECORD_TTL, so only its lease can take it out of etcd; ea and eb then drop it.
    let killed = Instant::now();
    dc.kill();
    let expired = observer.wait(&c.record_key(), false, Duration::from_secs(LEASE_TTL + 4));
    let dropped = wait_each(&[&da, &db], Duration::from_secs(2), "ec's peer and routes gone", |d| d.forgot(&c));
    let since = |t: &Instant| t.saturating_duration_since(expired);
    println!(
        "lease expiry: ec's record gone from etcd {:.1} s after SIGKILL (lease {LEASE_TTL} s, kept alive every {} s); \
         peer + routes removed at ea {:.0} ms, at eb {:.0} ms after that",
        (expired - killed).as_secs_f64(),
        LEASE_TTL / 3,
        ms(since(&dropped[0])),
        ms(since(&dropped[1])),
    );
    // The lease outlives the last keepalive (at most TTL/3 before the kill) by its TTL.
    assert!(expired - killed >= Duration::from_secs(LEASE_TTL - LEASE_TTL / 3 - 1), "removed by the lease, not sooner");
    for t in &dropped {
        assert!(*t - killed < Duration::from_secs(LEASE_TTL + 3), "removed within lease TTL + 3 s of the kill");
    }
    assert!(!da.pings(&c.overlay), "ec unreachable");
    assert!(da.pings(&b.overlay) && db.pings(&a.overlay), "ea and eb untouched");
    assert_eq!(da.status_json()["control"]["peers"].as_u64(), Some(1));

    // (3) The leader dies mid-test. Traffic goes on, the nodes' leases survive, and a change made
    // afterwards (ec joining again) is applied.
    let dead = leader(&lan, &endpoints);
    let member_killed = Instant::now();
    etcd.kill(dead);
    let on_it = [&a, &b, &c][dead].name.as_str();
    println!("killed etcd member {dead} ({}): the leader, and {on_it}'s first endpoint", endpoints[dead]);
    for _ in 0..3 {
        assert!(da.pings(&b.overlay) && db.pings(&a.overlay), "ea and eb reach each other with the leader dead");
        std::thread::sleep(Duration::from_millis(200));
    }
    let restarted = Instant::now();
    let dc = Daemon::start(&nc, &operator, &first(2), &c);
    let published = observer.try_wait(&c.record_key(), true, Duration::from_secs(10)).unwrap_or_else(|| {
        panic!("ec's record did not appear in etcd within 10 s of its restart; ec's log:\n{}", dc.log())
    });
    let held = wait_each(&[&da, &db], Duration::from_secs(5), "ec back at ea and eb", |d| d.holds(&c));
    let reached = wait_each(&[&da, &db], Duration::from_secs(5), "ec answers again", |d| d.answers_soon(&c.overlay));
    let since = |t: &Instant| t.saturating_duration_since(published);
    println!(
        "rejoin with member {dead} dead: record in etcd {:.0} ms after the restart ({:.0} ms after the kill); peer + \
         routes at ea {:.0} ms, at eb {:.0} ms after that; pings answered {:.0} / {:.0} ms after the record",
        ms(published - restarted),
        ms(published - member_killed),
        ms(since(&held[0])),
        ms(since(&held[1])),
        ms(since(&reached[0])),
        ms(since(&reached[1])),
    );
    assert!(dc.pings(&a.overlay) && dc.pings(&b.overlay), "ec reaches both");
    // Past one whole lease TTL since the kill: ea's and eb's records never went away (their
    // keepalives moved to a live member), and neither node lost the other.
    let lease_later = member_killed + Duration::from_secs(LEASE_TTL + 1);
    std::thread::sleep(lease_later.saturating_duration_since(Instant::now()));
    for s in [&a, &b] {
        assert!(
            !observer.vanished_since(&s.record_key(), member_killed),
            "{}'s record survived the dead leader",
            s.name
        );
    }
    assert!(da.holds(&b) && da.holds(&c) && db.holds(&a) && db.holds(&c), "every node still holds the others");
    assert!(da.pings(&b.overlay) && db.pings(&a.overlay) && da.pings(&c.overlay), "the mesh still works");
    // Any node that was talking to the dead member has moved on: no source error left.
    wait_each(&[&da, &db, &dc], Duration::from_secs(5), "no etcd error in status", |d| {
        d.status_json()["control"]["source_error"].is_null()
    });
}
