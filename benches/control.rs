//! `cargo bench --bench control`: netmap churn on a node with 1,000 peers, in memory (no root, no
//! sockets).
//!
//! Setup: an operator key, a policy, and 1,001 signed certificates and records (this node and
//! 1,000 peers, each advertising a /24). The netmap is built and applied to an [`Engine`] through
//! [`EngineSync`], then every peer completes a real WireGuard handshake with the engine (each peer
//! is its own in-memory `Device`), so 1,000 sessions are established.
//!
//! Measured, for one peer's record changing (its endpoint moves and it advertises one more route;
//! alternately back), `ROUNDS` times: `build` from scratch (verify every document, apply the
//! policy), `build_cached` with the verification cache the daemon keeps (only the changed record
//! is verified), `intent`, `diff` of the two intents, and `EngineSync::apply` (which diffs again
//! and changes the engine), each timed on its own, then the daemon's whole path (cached build +
//! intent + apply). Medians and extremes are printed.
//!
//! Then the proof that the other 999 peers were not touched: their peer ids, endpoints,
//! AllowedIPs, handshake counters, last-handshake times and byte counters are exactly as before,
//! and each still has its original session: a packet the engine encrypts for it is `Ready` at once
//! (no new handshake) and the peer's own device decrypts it with the keys of the first handshake.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand_core::OsRng;
use vxwg::apply::{EngineSync, Target};
use vxwg::control::keys::Key;
use vxwg::control::netmap::{
    build, build_cached, diff, intent, Acl, AutoApprover, Document, NodeCert, NodeRecord, Policy, SigningKey, Trust,
    VerifyCache,
};
use vxwg::dataplane::engine::{Engine, HEADROOM, TAILROOM};
use vxwg::dataplane::route::IpNet;
use vxwg::dataplane::wireguard::{Device, DeviceConfig, Encapsulated, PeerConfig, PeerId, PeerStats, Received};

const PEERS: usize = 1000;
/// Odd, so the changed peer ends on its moved endpoint.
const ROUNDS: usize = 41;
const SELF: &str = "n0000";

struct Node {
    name: String,
    wg: Key,
    signing: SigningKey,
    overlay: Ipv4Addr,
    endpoint: SocketAddr,
}

impl Node {
    fn new(i: usize) -> Node {
        Node {
            name: format!("n{i:04}"),
            wg: Key::generate_private(&mut OsRng),
            signing: SigningKey::generate().expect("system RNG"),
            overlay: Ipv4Addr::new(100, 64, (i >> 8) as u8, i as u8),
            endpoint: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 200, (i >> 8) as u8, i as u8)), 41641),
        }
    }

    fn route(&self) -> IpNet {
        format!("10.{}.{}.0/24", 100 + (self.overlay.octets()[2]), self.overlay.octets()[3]).parse().unwrap()
    }

    fn cert(&self, operator: &SigningKey, now: u64) -> Document {
        let cert = NodeCert {
            name: self.name.clone(),
            wireguard_key: self.wg.public(),
            node_key: self.signing.public(),
            addresses: vec![IpAddr::V4(self.overlay)],
            tags: vec!["tag:node".into()],
            not_after: now + 86_400,
        };
        Document { key: format!("{}.cert.json", self.name), bytes: cert.sign(operator).to_json() }
    }

    /// Version 0: one endpoint, one route; version 1: moved endpoint, one more route.
    fn record(&self, now: u64, version: u64) -> Document {
        let mut endpoints = vec![self.endpoint];
        let mut routes = vec![self.route()];
        if version % 2 == 1 {
            endpoints.insert(0, SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 51820));
            routes.push("10.250.0.0/24".parse().unwrap());
        }
        let record = NodeRecord {
            name: self.name.clone(),
            endpoints,
            routes,
            vtep_mac: None,
            issued_at: now + version,
            expires: now + 3600,
        };
        Document { key: format!("{}.record.json", self.name), bytes: record.sign(&self.signing).to_json() }
    }
}

/// Everything observable about a peer that a control-plane change must leave alone.
#[derive(Debug, PartialEq)]
struct PeerState {
    id: PeerId,
    endpoint: Option<SocketAddr>,
    allowed_ips: Vec<IpNet>,
    stats: PeerStats,
}

fn snapshot(engine: &Engine, nodes: &[Node]) -> BTreeMap<String, PeerState> {
    let device = engine.device();
    nodes[1..]
        .iter()
        .map(|n| {
            let id = device.peer_by_key(&n.wg.public().0).expect("peer present");
            let state = PeerState {
                id,
                endpoint: device.peer_endpoint(id),
                allowed_ips: engine.allowed_ips(id),
                stats: device.peer_stats(id).unwrap_or_default(),
            };
            (n.name.clone(), state)
        })
        .collect()
}

/// An IPv4 packet from `src` to `dst`.
fn packet(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0u8; 64];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&64u16.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p
}

/// Peer `n` (its own device) completes a handshake with `engine` and sends it one packet.
fn handshake(engine: &mut Engine, me: &Node, peer: &mut Device, n: &Node, now: Instant) {
    let central = peer.peer_by_key(&me.wg.public().0).unwrap();
    let p = packet(n.overlay, me.overlay);
    let mut buf = vec![0u8; HEADROOM + p.len() + TAILROOM];
    buf[HEADROOM..HEADROOM + p.len()].copy_from_slice(&p);
    assert!(matches!(peer.encapsulate(central, &mut buf, p.len(), now), Ok(Encapsulated::Staged)));
    let mut to_engine: Vec<Vec<u8>> = Vec::new();
    let mut to_peer: Vec<Vec<u8>> = Vec::new();
    while let Some(t) = peer.poll_transmit() {
        to_engine.push(t.payload);
    }
    let mut delivered = false;
    for _ in 0..4 {
        for mut d in to_engine.drain(..) {
            if let Ok(Received::Packet { .. }) = engine.decapsulate(n.endpoint, &mut d, now) {
                delivered = true;
            }
        }
        while let Some(t) = engine.poll_transmit() {
            to_peer.push(t.payload);
        }
        for mut d in to_peer.drain(..) {
            let _ = peer.decapsulate(me.endpoint, &mut d, now);
        }
        while let Some(t) = peer.poll_transmit() {
            to_engine.push(t.payload);
        }
    }
    assert!(delivered, "handshake with {} did not complete", n.name);
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too (kept fast enough).
    let wall = SystemTime::now();
    let now_s = wall.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let operator = SigningKey::generate().unwrap();
    let nodes: Vec<Node> = (0..=PEERS).map(Node::new).collect();
    let policy = Policy {
        version: 1,
        issued_at: now_s,
        auto_approvers: vec![AutoApprover { prefix: "10.0.0.0/8".parse().unwrap(), tags: vec!["tag:node".into()] }],
        acls: vec![Acl { src: "tag:node".into(), dst: vec!["tag:node".into()] }],
    };
    let mut docs = vec![Document { key: "policy.json".into(), bytes: policy.sign(&operator).to_json() }];
    for n in &nodes {
        docs.push(n.cert(&operator, now_s));
        docs.push(n.record(now_s, 0));
    }
    let trust = Trust { operator: operator.public() };
    let not_stale = |_: &Key| false;

    // Load the 1,000 peers.
    let me = &nodes[0];
    let start = Instant::now();
    let mut engine = Engine::new(Device::new(DeviceConfig::new(me.wg.0), OsRng, start, wall));
    let mut sync = EngineSync::new(vec![me.route()], None);
    let t = Instant::now();
    let netmap = build(&trust, SELF, &docs, wall, &not_stale);
    assert_eq!(netmap.rejections.len(), 0, "{:?}", netmap.rejections.first());
    let report = sync.apply(intent(&netmap), Target::L3(&mut engine), wall);
    let initial = t.elapsed();
    assert_eq!(report.added.len(), PEERS);

    // 1,000 established sessions.
    let t = Instant::now();
    let mut devices: Vec<Device> = nodes[1..]
        .iter()
        .map(|n| {
            let mut d = Device::new(DeviceConfig::new(n.wg.0), OsRng, start, wall);
            d.add_peer(PeerConfig { endpoint: Some(me.endpoint), ..PeerConfig::new(me.wg.public().0) }).unwrap();
            d
        })
        .collect();
    let mut now = start;
    for (i, n) in nodes[1..].iter().enumerate() {
        // Spread over virtual time so the handshake rate limiter never sees a flood.
        now += Duration::from_millis(20);
        handshake(&mut engine, me, &mut devices[i], n, now);
    }
    let handshakes = t.elapsed();
    let before = snapshot(&engine, &nodes);
    assert!(before.values().all(|s| s.stats.handshakes == 1));

    // Churn: one peer's record changes, back and forth.
    let changed = PEERS / 2;
    let record_slot = 2 + 2 * changed;
    let mut current = sync.current().clone();
    let mut cache = VerifyCache::default();
    build_cached(&mut cache, &trust, SELF, &docs, wall, &not_stale);
    let (mut t_build, mut t_cached, mut t_intent, mut t_diff, mut t_apply, mut t_total) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        docs[record_slot] = nodes[changed].record(now_s, round as u64);
        let tf = Instant::now();
        let fresh = build(&trust, SELF, &docs, wall, &not_stale);
        t_build.push(tf.elapsed());
        let t0 = Instant::now();
        let netmap = build_cached(&mut cache, &trust, SELF, &docs, wall, &not_stale);
        let t1 = Instant::now();
        assert_eq!(netmap, fresh, "the cache changes nothing but the time");
        let new = sync.localize(intent(&netmap));
        let t2 = Instant::now();
        let changes = diff(&current, &new);
        let t3 = Instant::now();
        let report = sync.apply(new.clone(), Target::L3(&mut engine), wall);
        let t4 = Instant::now();
        assert_eq!(changes.len(), 1, "exactly one peer changed");
        assert_eq!(report.updated, vec![nodes[changed].name.clone()]);
        current = new;
        t_cached.push(t1 - t0);
        t_intent.push(t2 - t1);
        t_diff.push(t3 - t2);
        t_apply.push(t4 - t3);
        t_total.push(t4 - t0);
    }

    // The other 999: untouched, and their sessions are the ones from the first handshake.
    let after = snapshot(&engine, &nodes);
    let mut untouched = 0;
    for (i, n) in nodes[1..].iter().enumerate() {
        if i + 1 == changed {
            let (b, a) = (&before[&n.name], &after[&n.name]);
            assert_eq!((a.id, a.stats.handshakes), (b.id, b.stats.handshakes), "the changed peer keeps its session");
            assert_eq!(a.endpoint, Some(SocketAddr::from(([192, 0, 2, 7], 51820))), "its endpoint moved");
            assert_ne!(a.allowed_ips, b.allowed_ips, "it gained a route");
            continue;
        }
        assert_eq!(before[&n.name], after[&n.name], "{} was touched", n.name);
        let id = after[&n.name].id;
        let p = packet(me.overlay, n.overlay);
        let mut buf = vec![0u8; HEADROOM + p.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + p.len()].copy_from_slice(&p);
        let Ok(Encapsulated::Ready { len, .. }) = engine.device_mut().encapsulate(id, &mut buf, p.len(), now) else {
            panic!("{}: no session any more", n.name);
        };
        let mut datagram = buf[..len].to_vec();
        let got = devices[i].decapsulate(me.endpoint, &mut datagram, now);
        assert!(matches!(got, Ok(Received::Packet { .. })), "{}: the peer cannot decrypt: {got:?}", n.name);
        untouched += 1;
    }
    assert_eq!(untouched, PEERS - 1);

    println!("control bench: {PEERS} peers, 1 record changed per round, {ROUNDS} rounds");
    println!("  initial load (build + intent + apply of {PEERS} peers): {:.1} ms", initial.as_secs_f64() * 1e3);
    println!("  {PEERS} in-memory handshakes: {:.1} ms", handshakes.as_secs_f64() * 1e3);
    for (what, v) in [
        ("build from scratch (2,003 signatures)", &mut t_build),
        ("build_cached (1 new signature)", &mut t_cached),
        ("intent", &mut t_intent),
        ("diff", &mut t_diff),
        ("apply to the engine (diff + 1 peer)", &mut t_apply),
        ("total: build_cached + intent + diff + apply", &mut t_total),
    ] {
        let (min, max) = (*v.iter().min().unwrap(), *v.iter().max().unwrap());
        println!("  {what:<44} median {:>9.1} us  min {:>9.1}  max {:>9.1}", us(median(v)), us(min), us(max));
    }
    println!(
        "  untouched: {untouched} peers with the same id, endpoint, AllowedIPs, counters and handshake; each still decrypts with its first session"
    );
}
