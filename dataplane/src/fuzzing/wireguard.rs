//! Fuzz entry points for WireGuard: the message views of [`crate::wire::wireguard`]
//! ([`wire_wireguard`]) and the "datagram received" path of [`crate::wireguard::Device`]
//! ([`device_receive`]).
//!
//! Everything here is deterministic: the devices draw their randomness from a seeded generator
//! that exists only in this module, the wall clock is a constant and the monotonic clock is virtual
//! (one `Instant` captured per call, then moved forward by the input). The same input always takes
//! the same path, which is what a fuzzer needs to minimise and replay a crash.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand_core::{CryptoRng, RngCore};

use crate::wire::wireguard::{
    cookie_reply, initiation, response, CookieReply, Initiation, MessageType, Repr, Response, TransportData, TAG_LEN,
};
use crate::wireguard::{
    public_key, Device, DeviceConfig, DropReason, Encapsulated, PeerConfig, PeerId, Received, RecvError, HEADROOM,
    TAILROOM,
};

/// Any byte string as a WireGuard message.
///
/// Invariants: [`MessageType::classify`], [`Repr::parse`] and each view's `new_checked` agree on
/// whether (and as what) the buffer is accepted, with the same error; the view's accessors agree
/// with the `Repr`; emitting the `Repr` over a copy of the input gives the input back byte for
/// byte (the reserved bytes were zero, and emit leaves the cryptographic fields alone), and
/// emitting it into a zeroed buffer parses back to the same `Repr`; emit refuses a buffer of any
/// other length than `buffer_len()`.
pub fn wire_wireguard(data: &[u8]) {
    let classified = MessageType::classify(data);
    let parsed = Repr::parse(data);
    assert_eq!(parsed.map(|r| message_type(&r)), classified, "Repr::parse and MessageType::classify disagree");

    let is = |ty| classified == Ok(ty);
    assert_eq!(Initiation::new_checked(data).is_ok(), is(MessageType::HandshakeInitiation));
    assert_eq!(Response::new_checked(data).is_ok(), is(MessageType::HandshakeResponse));
    assert_eq!(CookieReply::new_checked(data).is_ok(), is(MessageType::CookieReply));
    assert_eq!(TransportData::new_checked(data).is_ok(), is(MessageType::TransportData));

    let Ok(repr) = parsed else {
        return;
    };
    assert_eq!(repr.buffer_len(), data.len(), "a parsed message is exactly buffer_len() long");
    match repr {
        Repr::Initiation { sender } => {
            let m = Initiation::new_checked(data).expect("classified as an initiation");
            assert_eq!(m.sender_index(), sender);
            let _ = (m.ephemeral(), m.encrypted_static(), m.encrypted_timestamp(), m.mac1(), m.mac2());
            assert_eq!(m.as_bytes(), data);
        }
        Repr::Response { sender, receiver } => {
            let m = Response::new_checked(data).expect("classified as a response");
            assert_eq!((m.sender_index(), m.receiver_index()), (sender, receiver));
            let _ = (m.ephemeral(), m.encrypted_nothing(), m.mac1(), m.mac2());
        }
        Repr::CookieReply { receiver } => {
            let m = CookieReply::new_checked(data).expect("classified as a cookie reply");
            assert_eq!(m.receiver_index(), receiver);
            let _ = (m.nonce(), m.encrypted_cookie());
        }
        Repr::TransportData { receiver, counter, payload_len } => {
            let m = TransportData::new_checked(data).expect("classified as transport data");
            assert_eq!((m.receiver_index(), m.counter()), (receiver, counter));
            assert_eq!(m.encrypted_payload().len(), payload_len + TAG_LEN);
        }
    }

    let mut copy = data.to_vec();
    repr.emit(&mut copy).expect("emit into a buffer of buffer_len()");
    assert_eq!(Repr::parse(&copy), Ok(repr));
    assert_eq!(copy, data, "re-emit over the input is not byte-identical");

    let mut zeroed = vec![0u8; repr.buffer_len()];
    repr.emit(&mut zeroed).expect("emit into a buffer of buffer_len()");
    assert_eq!(Repr::parse(&zeroed), Ok(repr));

    let len = repr.buffer_len();
    assert!(repr.emit(&mut zeroed[..len - 1]).is_err(), "emit into a short buffer");
    zeroed.push(0);
    assert!(repr.emit(&mut zeroed).is_err(), "emit into a long buffer");
}

fn message_type(repr: &Repr) -> MessageType {
    match repr {
        Repr::Initiation { .. } => MessageType::HandshakeInitiation,
        Repr::Response { .. } => MessageType::HandshakeResponse,
        Repr::CookieReply { .. } => MessageType::CookieReply,
        Repr::TransportData { .. } => MessageType::TransportData,
    }
}

/// Two devices, A and B, that completed a handshake, then a sequence of operations read from
/// `data`: datagrams received (raw bytes, genuine, mutated, replayed, reordered, lost), packets
/// sent, handshakes started and the virtual clock moved on.
///
/// # Input format
/// `data` is a sequence of chunks `[op, len, body[len]]` (a short last chunk is cut to what is
/// there; at most 64 chunks are read). In `op`, bits 0-2 are the action, bit 3 the direction
/// (0: A acts or sends and B receives, 1: the reverse), bits 4-5 a source address for what is
/// delivered (0: the sender's own address, 1: the sender's IP with another port, 2: a stranger's
/// IPv4 address, 3: a stranger's IPv6 address), bits 6 and 7 flags:
///
/// | action | what | body |
/// | --- | --- | --- |
/// | 0 | receiver gets `body` as a datagram | the datagram |
/// | 1 | sender encapsulates a new packet (bit 6: IPv6; bit 7: padded to about the MTU) | packet payload |
/// | 2 | the oldest (body\[0\] bit 3: newest) datagrams in flight from the sender arrive (bit 6: are lost) | \[count - 1 (bits 0-2)\] |
/// | 3 | the sender makes a message (0: data, 1: keepalive, 2: initiation, 3: oldest in flight), one byte of a copy is XORed and the copy delivered; the genuine one stays in flight | \[kind, pos lo, pos hi, xor mask, data payload…\] |
/// | 4 | a datagram the sender emitted earlier arrives again | \[index into the last 32\] |
/// | 5 | the clock moves on by body\[0\] × (1 ms, 100 ms, 1 s, 10 s by bits 4-5), then both devices run their timers (bit 6: stopping at every deadline on the way, as a punctual event loop would; else once, as a stalled one) | \[amount\] |
/// | 6 | the sender starts a handshake (`initiate_handshake`) | — |
/// | 7 | everything in flight arrives, both ways, until nothing is left | — |
///
/// Everything a device emits (`encapsulate` or `poll_transmit`) goes in flight toward the other
/// one and into a log of the last 32 for replays; nothing arrives unless an operation says so.
///
/// # Invariants
/// * Nothing panics; every message a device emits is well-formed.
/// * A decrypted packet is byte for byte one the other device encapsulated, and no packet is
///   received twice: a forged or mutated message never decrypts, a replay is never accepted.
/// * The same datagram is never accepted twice (transport, initiation, response, cookie reply).
/// * A genuine message with one byte changed is always rejected, unless the byte is in MAC2 of a
///   handshake message (checked only under load) or in a cookie reply's receiver index.
/// * A datagram that is rejected, or only answered with a cookie reply, does not move the peer's
///   endpoint; an authenticated one moves it to its source. Each rejection counts exactly one drop,
///   under the reason of its error; an accepted datagram counts none.
/// * After `handle_timeout(now)`, no deadline at or before `now` is left.
/// * Afterwards, with a lossless network and the clock moving on in 30 s steps, a packet A sends
///   reaches B within ten tries (five minutes): enough for every stale session to be replaced (a
///   session is usable for at most 180 s and the initiator renews it after 120 s), for handshake
///   retries, and for load and cookie state to clear.
pub fn device_receive(data: &[u8]) {
    let mut h = Harness::new();
    let mut rest = data;
    for _ in 0..MAX_OPS {
        let Some((&op, tail)) = rest.split_first() else {
            break;
        };
        let (len, tail) = tail.split_first().map_or((0, tail), |(&len, tail)| (usize::from(len), tail));
        let (body, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        h.step(op, body);
    }
    h.check_liveness();
}

/// A deterministic generator for fuzzing only (SplitMix64).
///
/// It is **not** cryptographically secure: the [`CryptoRng`] marker is there only because
/// [`Device::new`] demands it, so that the fuzz harness can build devices whose keys, indices and
/// jitter are the same on every run. It is private to this module and must never be used anywhere
/// else.
struct FuzzRng(u64);

impl RngCore for FuzzRng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

/// Fuzzing only; see [`FuzzRng`].
impl CryptoRng for FuzzRng {}

const A: usize = 0;
const B: usize = 1;
const NAMES: [&str; 2] = ["A", "B"];
const PRIVATE_KEYS: [[u8; 32]; 2] = [[0x11; 32], [0x22; 32]];
const RNG_SEEDS: [u64; 2] = [0xa11c_e5ee_d000_0001, 0xb0b5_5eed_0000_0002];
const PRESHARED_KEY: [u8; 32] = [0x5a; 32];
const ADDRS: [SocketAddr; 2] = [
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 51820),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 51820),
];
const STRANGER_V4: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66)), 6666);
const STRANGER_V6: SocketAddr = SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x66)), 6666);
/// B keeps the path open with a persistent keepalive, so that timer is in play too.
const B_PERSISTENT_KEEPALIVE: Duration = Duration::from_secs(25);
/// Low, so that a few handshake messages put a device under load (cookie replies, MAC2).
const UNDER_LOAD_THRESHOLD: u32 = 3;

const MAX_OPS: usize = 64;
/// Datagrams in flight per direction; beyond this the oldest is lost.
const IN_FLIGHT_CAP: usize = 32;
/// Datagrams each device remembers having emitted, for replays.
const LOG_CAP: usize = 32;
/// Deliveries per `pump` (it normally settles in a handful).
const PUMP_LIMIT: usize = 256;
/// Deadlines a punctual clock step stops at before it jumps the rest of the way.
const STEP_LIMIT: usize = 64;
const LIVENESS_TRIES: usize = 10;
const LIVENESS_STEP: Duration = Duration::from_secs(30);
/// Added to a packet's payload by the "big" flag: with the 24-byte header and up to 255 bytes of
/// input, the packet is 1404..=1659 bytes, on both sides of the 1420-byte MTU.
const BIG_EXTRA: usize = 1380;
const UNITS: [Duration; 4] =
    [Duration::from_millis(1), Duration::from_millis(100), Duration::from_secs(1), Duration::from_secs(10)];

/// The peers' public keys, computed once per process (each is a scalar multiplication).
fn public_keys() -> &'static [[u8; 32]; 2] {
    static KEYS: OnceLock<[[u8; 32]; 2]> = OnceLock::new();
    KEYS.get_or_init(|| PRIVATE_KEYS.map(|k| public_key(&k)))
}

/// What an accepted datagram was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepted {
    Packet,
    Keepalive,
    Initiation,
    Complete,
    CookieTaken,
    CookieReplySent,
}

impl Accepted {
    /// Whether the datagram proved it came from the peer (and so may move its endpoint).
    fn authenticated_by_peer(self) -> bool {
        matches!(self, Accepted::Packet | Accepted::Keepalive | Accepted::Initiation | Accepted::Complete)
    }
}

/// One end of the tunnel.
struct Node {
    dev: Device,
    /// The other end, as this device knows it.
    peer: PeerId,
    /// Emitted and not yet delivered, oldest first.
    in_flight: VecDeque<Vec<u8>>,
    /// The last datagrams emitted, oldest first.
    log: VecDeque<Vec<u8>>,
    /// Every inner packet encapsulated (each is unique: it starts with a sequence number).
    sent: HashSet<Vec<u8>>,
    /// Every inner packet decrypted.
    got: HashSet<Vec<u8>>,
    /// Every datagram accepted from the peer.
    accepted: HashSet<Vec<u8>>,
}

impl Node {
    fn new(me: usize, now: Instant, wall: SystemTime) -> Self {
        let mut config = DeviceConfig::new(PRIVATE_KEYS[me]);
        config.under_load_threshold = UNDER_LOAD_THRESHOLD;
        let mut dev = Device::new(config, FuzzRng(RNG_SEEDS[me]), now, wall);
        let peer = dev
            .add_peer(PeerConfig {
                public_key: public_keys()[1 - me],
                preshared_key: Some(PRESHARED_KEY),
                endpoint: Some(ADDRS[1 - me]),
                persistent_keepalive: (me == B).then_some(B_PERSISTENT_KEEPALIVE),
            })
            .expect("two distinct valid keys");
        Self {
            dev,
            peer,
            in_flight: VecDeque::new(),
            log: VecDeque::new(),
            sent: HashSet::new(),
            got: HashSet::new(),
            accepted: HashSet::new(),
        }
    }

    fn emit(&mut self, datagram: Vec<u8>) {
        if self.in_flight.len() == IN_FLIGHT_CAP {
            self.in_flight.pop_front();
        }
        if self.log.len() == LOG_CAP {
            self.log.pop_front();
        }
        self.log.push_back(datagram.clone());
        self.in_flight.push_back(datagram);
    }

    /// Puts everything from `poll_transmit` in flight; returns how many datagrams that was.
    fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Some(t) = self.dev.poll_transmit() {
            let ty = MessageType::classify(&t.payload);
            assert!(ty.is_ok(), "emitted a malformed message: {:02x?}", t.payload);
            match t.peer {
                Some(peer) => assert_eq!(peer, self.peer, "transmit for a peer that does not exist"),
                None => assert_eq!(ty, Ok(MessageType::CookieReply), "only a cookie reply has no peer"),
            }
            self.emit(t.payload);
            n += 1;
        }
        n
    }

    /// The latest datagram emitted, if the last `n` emissions were not nothing.
    fn latest(&self, n: usize) -> Option<Vec<u8>> {
        if n == 0 {
            return None;
        }
        self.in_flight.back().cloned()
    }
}

struct Harness {
    now: Instant,
    nodes: [Node; 2],
    next_seq: u32,
}

impl Harness {
    /// A and B with a session: A initiated, B answered, A confirmed with a keepalive.
    fn new() -> Self {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = Self { now, nodes: [Node::new(A, now, wall), Node::new(B, now, wall)], next_seq: 0 };
        let a = &mut h.nodes[A];
        a.dev.initiate_handshake(a.peer, now);
        a.drain();
        h.pump();
        for n in &h.nodes {
            assert!(n.dev.has_session(n.peer, now), "set-up handshake did not complete");
        }
        h
    }

    fn step(&mut self, op: u8, body: &[u8]) {
        let tx = usize::from((op >> 3) & 1);
        let rx = 1 - tx;
        let sel = usize::from((op >> 4) & 3);
        let src = match sel {
            0 => ADDRS[tx],
            1 => SocketAddr::new(ADDRS[tx].ip(), 40000 + tx as u16),
            2 => STRANGER_V4,
            _ => STRANGER_V6,
        };
        let flag = op & 0x40 != 0;
        let big = op & 0x80 != 0;
        match op & 7 {
            0 => {
                let _ = self.deliver(rx, src, body.to_vec());
            }
            1 => {
                let packet = self.packet(flag, big, body);
                self.send(tx, packet);
            }
            2 => {
                let arg = body.first().copied().unwrap_or(0);
                for _ in 0..=(arg & 7) {
                    let q = &mut self.nodes[tx].in_flight;
                    let Some(d) = (if arg & 8 != 0 { q.pop_back() } else { q.pop_front() }) else {
                        break;
                    };
                    if !flag {
                        let _ = self.deliver(rx, src, d);
                    }
                }
            }
            3 => self.mutate(tx, src, body),
            4 => {
                let log = &self.nodes[tx].log;
                if !log.is_empty() {
                    let i = body.first().map_or(log.len() - 1, |&b| usize::from(b) % log.len());
                    let d = log[i].clone();
                    let _ = self.deliver(rx, src, d);
                }
            }
            5 => {
                let amount = body.first().copied().unwrap_or(1);
                self.advance(UNITS[sel] * u32::from(amount), flag, false);
            }
            6 => {
                self.initiate(tx);
            }
            _ => self.pump(),
        }
    }

    /// A fresh inner packet: an IPv4 or IPv6 header, a sequence number, then `body`.
    fn packet(&mut self, v6: bool, big: bool, body: &[u8]) -> Vec<u8> {
        let mut payload = self.next_seq.to_be_bytes().to_vec();
        self.next_seq += 1;
        payload.extend_from_slice(body);
        if big {
            payload.resize(payload.len() + BIG_EXTRA, 0xa5);
        }
        let mut p = if v6 {
            let mut h = vec![0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
            h[6] = 59; // no next header
            h[7] = 64;
            h[8..24].copy_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).octets());
            h[24..40].copy_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2).octets());
            h
        } else {
            let mut h = vec![0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
            h[8] = 64;
            h[9] = 253; // experimentation
            h[12..16].copy_from_slice(&[10, 0, 0, 1]);
            h[16..20].copy_from_slice(&[10, 0, 0, 2]);
            h
        };
        p.extend_from_slice(&payload);
        p
    }

    /// `tx` encapsulates `packet` (empty: a keepalive). Returns the transport message if one went
    /// out at once, else the last control message this caused (an initiation), if any.
    fn send(&mut self, tx: usize, packet: Vec<u8>) -> Option<Vec<u8>> {
        let now = self.now;
        let node = &mut self.nodes[tx];
        let mut buf = vec![0u8; HEADROOM + packet.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + packet.len()].copy_from_slice(&packet);
        let result =
            node.dev.encapsulate(node.peer, &mut buf, packet.len(), now).expect("a known peer, a sized buffer");
        if !packet.is_empty() {
            node.sent.insert(packet);
        }
        let ready = match result {
            Encapsulated::Ready { len, dst } => {
                assert_eq!(Some(dst), node.dev.peer_endpoint(node.peer), "sent elsewhere than the endpoint");
                buf.truncate(len);
                assert!(matches!(Repr::parse(&buf), Ok(Repr::TransportData { .. })), "not a transport message");
                node.emit(buf.clone());
                Some(buf)
            }
            Encapsulated::Staged => None,
        };
        let n = node.drain();
        ready.or_else(|| node.latest(n))
    }

    /// `tx` starts a handshake; returns the initiation, if one went out.
    fn initiate(&mut self, tx: usize) -> Option<Vec<u8>> {
        let node = &mut self.nodes[tx];
        node.dev.initiate_handshake(node.peer, self.now);
        let n = node.drain();
        node.latest(n)
    }

    /// Delivers a one-byte mutation of a genuine message from `tx`; the genuine one stays in flight.
    fn mutate(&mut self, tx: usize, src: SocketAddr, body: &[u8]) {
        let arg = |i: usize| body.get(i).copied().unwrap_or(0);
        let genuine = match arg(0) % 4 {
            0 => {
                let packet = self.packet(false, false, body.get(4..).unwrap_or_default());
                self.send(tx, packet)
            }
            1 => self.send(tx, Vec::new()),
            2 => self.initiate(tx),
            _ => self.nodes[tx].in_flight.front().cloned(),
        };
        let Some(genuine) = genuine.or_else(|| self.nodes[tx].log.back().cloned()) else {
            return;
        };
        let pos = usize::from(u16::from_le_bytes([arg(1), arg(2)])) % genuine.len();
        let mask = if arg(3) == 0 { 0x80 } else { arg(3) };
        let mut forged = genuine.clone();
        forged[pos] ^= mask;
        let result = self.deliver(1 - tx, src, forged);
        if mutation_must_be_rejected(&genuine, pos) {
            assert!(
                result.is_err(),
                "{}'s {:?} with byte {pos} XORed with {mask:#04x} was accepted: {result:?}",
                NAMES[tx],
                MessageType::classify(&genuine),
            );
        }
    }

    /// `to` receives `datagram` from `src` now; checks what it made of it.
    fn deliver(&mut self, to: usize, src: SocketAddr, mut datagram: Vec<u8>) -> Result<Accepted, RecvError> {
        let now = self.now;
        let [a, b] = &mut self.nodes;
        let (rx, tx) = if to == A { (a, &*b) } else { (b, &*a) };
        let endpoint = rx.dev.peer_endpoint(rx.peer);
        let drops: Vec<(DropReason, u64)> = rx.dev.drops().collect();
        let original = datagram.clone();
        let peer = rx.peer;
        let check_peer = |p: PeerId| assert_eq!(p, peer, "accepted for a peer that does not exist");
        let result = match rx.dev.decapsulate(src, &mut datagram, now) {
            Ok(Received::Packet { peer, packet }) => {
                check_peer(peer);
                assert!(
                    tx.sent.contains(&*packet),
                    "{} decrypted a packet {} never sent: {packet:02x?}",
                    NAMES[to],
                    NAMES[1 - to]
                );
                assert!(rx.got.insert(packet.to_vec()), "{} received the same packet twice", NAMES[to]);
                Ok(Accepted::Packet)
            }
            Ok(Received::Keepalive { peer }) => {
                check_peer(peer);
                Ok(Accepted::Keepalive)
            }
            Ok(Received::HandshakeInitiation { peer }) => {
                check_peer(peer);
                Ok(Accepted::Initiation)
            }
            Ok(Received::HandshakeComplete { peer }) => {
                check_peer(peer);
                Ok(Accepted::Complete)
            }
            Ok(Received::CookieReply { peer }) => {
                check_peer(peer);
                Ok(Accepted::CookieTaken)
            }
            Ok(Received::CookieReplySent) => Ok(Accepted::CookieReplySent),
            Err(e) => Err(e),
        };

        if matches!(result, Ok(kind) if kind != Accepted::CookieReplySent) {
            assert!(rx.accepted.insert(original), "{} accepted the same datagram twice: {result:?}", NAMES[to]);
        }
        let endpoint_now = rx.dev.peer_endpoint(rx.peer);
        match result {
            Ok(kind) if kind.authenticated_by_peer() => assert_eq!(endpoint_now, Some(src), "endpoint did not follow"),
            // Authenticated, then found not to hold an IP packet: the endpoint may have moved.
            Err(RecvError::InvalidInnerPacket) => {}
            _ => assert_eq!(endpoint_now, endpoint, "{result:?} from {src} moved the endpoint"),
        }
        for ((reason, before), (_, after)) in drops.into_iter().zip(rx.dev.drops()) {
            let expected = before + u64::from(matches!(&result, Err(e) if e.reason() == reason));
            assert_eq!(after, expected, "drop counter {} after {result:?}", reason.name());
        }
        rx.drain();
        result
    }

    /// Delivers everything in flight, one datagram each way in turn, until nothing is left.
    fn pump(&mut self) {
        for _ in 0..PUMP_LIMIT {
            let mut moved = false;
            for to in [B, A] {
                if let Some(d) = self.nodes[1 - to].in_flight.pop_front() {
                    let _ = self.deliver(to, ADDRS[1 - to], d);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Moves the clock on by `by`. A punctual clock stops at every deadline on the way; `pump`
    /// delivers what the timers sent each time.
    fn advance(&mut self, by: Duration, punctual: bool, pump: bool) {
        let target = self.now + by;
        if punctual {
            for _ in 0..STEP_LIMIT {
                match self.nodes.iter().filter_map(|n| n.dev.poll_timeout()).min() {
                    Some(deadline) if deadline <= target => {
                        self.now = self.now.max(deadline);
                        self.run_timers(pump);
                    }
                    _ => break,
                }
            }
        }
        self.now = target;
        self.run_timers(pump);
    }

    fn run_timers(&mut self, pump: bool) {
        let now = self.now;
        for (n, name) in self.nodes.iter_mut().zip(NAMES) {
            n.dev.handle_timeout(now);
            n.drain();
            let next = n.dev.poll_timeout();
            assert!(next.is_none_or(|d| d > now), "{name} still has a deadline due after handle_timeout");
        }
        if pump {
            self.pump();
        }
    }

    /// With a lossless network from now on, data from A reaches B (see [`device_receive`]).
    fn check_liveness(&mut self) {
        self.pump();
        for _ in 0..LIVENESS_TRIES {
            self.advance(LIVENESS_STEP, true, true);
            let packet = self.packet(false, false, b"liveness");
            self.send(A, packet.clone());
            self.pump();
            if self.nodes[B].got.contains(&packet) {
                return;
            }
        }
        let (a, b) = (&self.nodes[A], &self.nodes[B]);
        panic!(
            "no packet from A reached B in {LIVENESS_TRIES} tries: sessions A {} B {}, A drops {:?}, B drops {:?}",
            a.dev.has_session(a.peer, self.now),
            b.dev.has_session(b.peer, self.now),
            a.dev.drops().filter(|d| d.1 > 0).collect::<Vec<_>>(),
            b.dev.drops().filter(|d| d.1 > 0).collect::<Vec<_>>(),
        );
    }
}

/// Whether changing byte `pos` of the genuine message `m` must make it unacceptable.
///
/// Everything is covered by an AEAD tag or MAC1 except MAC2 (checked only under load) and a cookie
/// reply's receiver index (it only selects the peer: another index of the same peer would do).
fn mutation_must_be_rejected(m: &[u8], pos: usize) -> bool {
    match MessageType::classify(m) {
        Ok(MessageType::HandshakeInitiation) => pos < initiation::MAC2,
        Ok(MessageType::HandshakeResponse) => pos < response::MAC2,
        Ok(MessageType::CookieReply) => !(cookie_reply::RECEIVER..cookie_reply::NONCE).contains(&pos),
        Ok(MessageType::TransportData) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_empty_inputs() {
        for len in 0..200 {
            wire_wireguard(&vec![0u8; len]);
            for ty in 1..=4u8 {
                let mut b = vec![0u8; len];
                if let Some(first) = b.first_mut() {
                    *first = ty;
                }
                wire_wireguard(&b);
            }
        }
    }

    #[test]
    fn device_receive_basics() {
        device_receive(&[]);
        // A sends, B receives; the same datagram again; a mutated keepalive; B sends back.
        device_receive(&[0x01, 3, 1, 2, 3, 0x02, 0, 0x04, 0, 0x03, 4, 1, 20, 0, 0xff, 0x09, 0, 0x07, 0]);
    }

    #[test]
    fn rng_is_deterministic_and_fills_odd_lengths() {
        let (mut x, mut y) = (FuzzRng(7), FuzzRng(7));
        let (mut bx, mut by) = ([0u8; 13], [0u8; 13]);
        x.fill_bytes(&mut bx);
        y.fill_bytes(&mut by);
        assert_eq!(bx, by);
        assert_ne!(bx, [0; 13]);
        assert_ne!(x.next_u64(), FuzzRng(8).next_u64());
    }
}
