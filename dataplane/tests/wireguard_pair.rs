//! Two vxwg [`Device`]s back to back, in memory, on a virtual clock: the WireGuard timer and
//! session state machine (whitepaper section 6; Linux `timers.c`, `send.c`, `noise.c`) pinned
//! down through what each side observably emits and accepts.
//!
//! No sockets and no sleeping. Datagrams move through two queues (one per direction, each of
//! which can be cut to model loss), every datagram either side emits is logged with its virtual
//! send time, and [`Pair::advance_to`] walks time forward deadline by deadline, as an event loop
//! driven by `poll_timeout` would, running both devices' timers at each step.
//!
//! The `fuzzing` feature (enabled for this crate's own tests in `Cargo.toml`) exposes
//! `Device::current_keypair_mut` and `Keypair::force_send_counter`.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use rand_core::OsRng;
use vxwg_dataplane::wireguard::constants::{
    KEEPALIVE_TIMEOUT, MAX_STAGED_PACKETS, MAX_TIMER_HANDSHAKES, REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES, REKEY_AFTER_TIME, REKEY_ATTEMPT_TIME, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX,
};
use vxwg_dataplane::wireguard::{
    public_key, Device, DeviceConfig, DropReason, Encapsulated, PeerConfig, PeerId, Received, RecvError, SendError,
    HEADROOM, TAILROOM,
};

const A_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 51820);
const B_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 51820);
const B_ROAMED: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40000);
const C_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3)), 51820);
const EVIL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66)), 6666);
const A_KEY: [u8; 32] = [0x11; 32];
const B_KEY: [u8; 32] = [0x22; 32];
const C_KEY: [u8; 32] = [0x33; 32];

/// WireGuard message types (first byte).
const T_INIT: u8 = 1;
const T_DATA: u8 = 4;
/// (type, length) of the fixed-size messages.
const INIT: (u8, usize) = (T_INIT, 148);
const RESP: (u8, usize) = (2, 92);
const KEEPALIVE: (u8, usize) = (T_DATA, 32);

const MS: Duration = Duration::from_millis(1);
const NS: Duration = Duration::from_nanos(1);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// (type, length) of the transport message carrying a `plain`-byte packet (below the MTU).
fn data(plain: usize) -> (u8, usize) {
    (T_DATA, 16 + plain.next_multiple_of(16) + 16)
}

/// An IPv4/UDP packet carrying a sequence number: 28 + `payload_len.max(4)` bytes.
fn ipv4_packet(seq: u32, payload_len: usize) -> Vec<u8> {
    let total = 20 + 8 + payload_len.max(4);
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    p[24..26].copy_from_slice(&((total - 20) as u16).to_be_bytes());
    p[28..32].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[32..].iter_mut().enumerate() {
        *b = (i as u32 ^ seq) as u8;
    }
    p
}

fn pkt(seq: u32) -> Vec<u8> {
    ipv4_packet(seq, 40)
}

fn seq_of(packet: &[u8]) -> u32 {
    u32::from_be_bytes(packet[28..32].try_into().unwrap())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}
use Side::{A, B};

impl Side {
    fn other(self) -> Side {
        match self {
            A => B,
            B => A,
        }
    }
}

/// One end: its device, the id it knows the other end by, and what it received.
struct Node {
    dev: Device,
    peer: PeerId,
    /// Source address of the datagrams this node sends (changed to model roaming).
    addr: SocketAddr,
    got: Vec<Vec<u8>>,
    keepalives: usize,
    errors: Vec<RecvError>,
}

impl Node {
    fn new(key: [u8; 32], addr: SocketAddr, other: ([u8; 32], SocketAddr), pk: Option<Duration>, now: Instant) -> Self {
        Self::with_wall(key, addr, other, pk, now, SystemTime::now())
    }

    fn with_wall(
        key: [u8; 32],
        addr: SocketAddr,
        (other_key, other_addr): ([u8; 32], SocketAddr),
        persistent_keepalive: Option<Duration>,
        now: Instant,
        wall: SystemTime,
    ) -> Self {
        let mut dev = Device::new(DeviceConfig::new(key), OsRng, now, wall);
        let peer = dev
            .add_peer(PeerConfig {
                public_key: public_key(&other_key),
                preshared_key: None,
                endpoint: Some(other_addr),
                persistent_keepalive,
            })
            .unwrap();
        Self { dev, peer, addr, got: Vec::new(), keepalives: 0, errors: Vec::new() }
    }

    fn has_session(&self, now: Instant) -> bool {
        self.dev.has_session(self.peer, now)
    }

    fn handshakes(&self) -> u64 {
        self.dev.peer_stats(self.peer).unwrap().handshakes
    }

    /// (local index, remote index, is_initiator, send counter) of the current sending keypair.
    fn current(&mut self) -> Option<(u32, u32, bool, u64)> {
        let k = self.dev.current_keypair_mut(self.peer)?;
        Some((k.local_index, k.remote_index, k.is_initiator, k.send_counter()))
    }
}

/// One datagram as it left a device.
struct Sent {
    at: Instant,
    from: Side,
    dst: SocketAddr,
    bytes: Vec<u8>,
}

impl Sent {
    fn kind(&self) -> (u8, usize) {
        (self.bytes[0], self.bytes.len())
    }
}

struct Pair {
    t0: Instant,
    wall0: SystemTime,
    now: Instant,
    a: Node,
    b: Node,
    /// In flight, per destination (`Side as usize`): (source address, datagram).
    queue: [VecDeque<(SocketAddr, Vec<u8>)>; 2],
    /// Per destination: false loses whatever is sent that way.
    link: [bool; 2],
    log: Vec<Sent>,
}

impl Pair {
    fn new() -> Self {
        Self::with_keepalive(None, None)
    }

    fn with_keepalive(a_pk: Option<Duration>, b_pk: Option<Duration>) -> Self {
        let t0 = Instant::now();
        let wall0 = SystemTime::now();
        Self {
            t0,
            wall0,
            now: t0,
            a: Node::with_wall(A_KEY, A_ADDR, (B_KEY, B_ADDR), a_pk, t0, wall0),
            b: Node::with_wall(B_KEY, B_ADDR, (A_KEY, A_ADDR), b_pk, t0, wall0),
            queue: [VecDeque::new(), VecDeque::new()],
            link: [true, true],
            log: Vec::new(),
        }
    }

    /// A pair whose handshake A initiated (without data) and B has confirmed, at `t0`.
    fn established() -> Self {
        let mut p = Self::new();
        p.handshake(A);
        p
    }

    /// `from` starts a handshake and everything is delivered; both ends must then have a session.
    fn handshake(&mut self, from: Side) {
        let now = self.now;
        let node = self.node(from);
        node.dev.initiate_handshake(node.peer, now);
        self.drain(from);
        self.pump();
        assert!(self.a.has_session(now) && self.b.has_session(now), "handshake from {from:?} completed");
    }

    fn node(&mut self, side: Side) -> &mut Node {
        match side {
            A => &mut self.a,
            B => &mut self.b,
        }
    }

    fn emit(&mut self, from: Side, dst: SocketAddr, bytes: Vec<u8>) {
        let src = self.node(from).addr;
        self.log.push(Sent { at: self.now, from, dst, bytes: bytes.clone() });
        let to = from.other() as usize;
        if self.link[to] {
            self.queue[to].push_back((src, bytes));
        }
    }

    /// Moves everything `side` queued through `poll_transmit` onto the wire.
    fn drain(&mut self, side: Side) {
        while let Some(t) = self.node(side).dev.poll_transmit() {
            self.emit(side, t.dst, t.payload);
        }
    }

    /// `from` encapsulates `packet` for the other end now.
    fn send(&mut self, from: Side, packet: &[u8]) -> Encapsulated {
        let now = self.now;
        let node = self.node(from);
        let mut buf = vec![0u8; HEADROOM + packet.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + packet.len()].copy_from_slice(packet);
        let result = node.dev.encapsulate(node.peer, &mut buf, packet.len(), now).unwrap();
        if let Encapsulated::Ready { len, dst } = result {
            buf.truncate(len);
            self.emit(from, dst, buf);
        }
        self.drain(from);
        result
    }

    /// `to` receives `datagram` from `src` now.
    fn deliver(&mut self, to: Side, src: SocketAddr, mut datagram: Vec<u8>) -> Result<(), RecvError> {
        let now = self.now;
        let node = self.node(to);
        let result = match node.dev.decapsulate(src, &mut datagram, now) {
            Ok(Received::Packet { peer, packet }) => {
                assert_eq!(peer, node.peer);
                node.got.push(packet.to_vec());
                Ok(())
            }
            Ok(Received::Keepalive { peer }) => {
                assert_eq!(peer, node.peer);
                node.keepalives += 1;
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => {
                node.errors.push(e);
                Err(e)
            }
        };
        self.drain(to);
        result
    }

    /// Takes the oldest datagram in flight to `to` without delivering it.
    fn take(&mut self, to: Side) -> (SocketAddr, Vec<u8>) {
        self.queue[to as usize].pop_front().expect("a datagram in flight")
    }

    /// Delivers the oldest datagram in flight to `to`.
    fn deliver_one(&mut self, to: Side) -> Result<(), RecvError> {
        let (src, d) = self.take(to);
        self.deliver(to, src, d)
    }

    /// Delivers everything in flight (one datagram each way in turn) until nothing is left.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for to in [B, A] {
                if let Some((src, d)) = self.queue[to as usize].pop_front() {
                    let _ = self.deliver(to, src, d);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn run_timers(&mut self) {
        let now = self.now;
        for side in [A, B] {
            self.node(side).dev.handle_timeout(now);
            self.drain(side);
        }
        self.pump();
    }

    /// Moves the clock to `target`, stopping at every deadline either device reports on the way.
    /// What is in flight arrives first: the network has no latency.
    fn advance_to(&mut self, target: Instant) {
        assert!(target >= self.now, "time only moves forward");
        self.pump();
        for _ in 0..100_000 {
            let next = [self.a.dev.poll_timeout(), self.b.dev.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(deadline) if deadline <= target => {
                    self.now = self.now.max(deadline);
                    self.run_timers();
                }
                _ => {
                    self.now = target;
                    self.run_timers();
                    return;
                }
            }
        }
        panic!("timers keep firing without the clock moving");
    }

    fn advance(&mut self, by: Duration) {
        self.advance_to(self.now + by);
    }

    /// Everything `side` emitted at or after `since`.
    fn log_since(&self, side: Side, since: Instant) -> Vec<&Sent> {
        self.log.iter().filter(|s| s.from == side && s.at >= since).collect()
    }

    /// (type, length) of everything `side` emitted at or after `since`.
    fn sent_since(&self, side: Side, since: Instant) -> Vec<(u8, usize)> {
        self.log_since(side, since).iter().map(|s| s.kind()).collect()
    }

    /// Position in the log, to look at what is emitted from now on regardless of time.
    fn mark(&self) -> usize {
        self.log.len()
    }

    /// (type, length) of everything `side` emitted after `mark`.
    fn sent_after(&self, side: Side, mark: usize) -> Vec<(u8, usize)> {
        self.log[mark..].iter().filter(|s| s.from == side).map(Sent::kind).collect()
    }

    /// Send times of the initiations `side` emitted at or after `since`.
    fn initiations_since(&self, side: Side, since: Instant) -> Vec<Instant> {
        self.log_since(side, since).iter().filter(|s| s.kind() == INIT).map(|s| s.at).collect()
    }

    /// The bytes of the last datagram `side` emitted.
    fn last_sent(&self, side: Side) -> Vec<u8> {
        self.log.iter().rev().find(|s| s.from == side).unwrap().bytes.clone()
    }

    /// Replaces `side` with a freshly started device: same key and configuration, no state.
    fn restart(&mut self, side: Side) {
        let wall = self.wall0 + (self.now - self.t0);
        let now = self.now;
        *self.node(side) = match side {
            A => Node::with_wall(A_KEY, A_ADDR, (B_KEY, B_ADDR), None, now, wall),
            B => Node::with_wall(B_KEY, B_ADDR, (A_KEY, A_ADDR), None, now, wall),
        };
        self.queue[side as usize].clear();
    }
}

// 1. Handshake, data both ways, and deadlines.

#[test]
fn handshake_then_data_both_ways_and_timers_wait_for_their_deadline() {
    let mut p = Pair::new();
    let t = p.now;
    assert_eq!(p.a.dev.poll_timeout(), None, "a fresh device has nothing scheduled");
    assert!(!p.a.has_session(t) && !p.b.has_session(t));

    let p1 = ipv4_packet(1, 100);
    assert_eq!(p.send(A, &p1), Encapsulated::Staged);
    assert_eq!(p.sent_since(A, t), [INIT], "no session: the packet waits and an initiation goes out");
    assert!(p.b.got.is_empty());
    p.pump();
    assert_eq!(p.sent_since(B, t), [RESP]);
    assert_eq!(p.sent_since(A, t), [INIT, data(p1.len())], "the staged packet confirms the session");
    assert_eq!(p.b.got, std::slice::from_ref(&p1));
    assert!(p.a.has_session(t) && p.b.has_session(t));
    assert_eq!((p.a.handshakes(), p.b.handshakes()), (1, 1));
    assert!(p.a.dev.peer_stats(p.a.peer).unwrap().last_handshake.is_some());

    let p2 = ipv4_packet(2, 37);
    let p3 = ipv4_packet(3, 1000);
    assert!(matches!(p.send(B, &p2), Encapsulated::Ready { dst: A_ADDR, .. }));
    p.pump();
    assert!(matches!(p.send(A, &p3), Encapsulated::Ready { dst: B_ADDR, .. }));
    p.pump();
    assert_eq!(p.a.got, std::slice::from_ref(&p2));
    assert_eq!(p.b.got, [p1.clone(), p3.clone()]);
    let (d1, d2, d3) = (data(p1.len()).1 as u64, data(p2.len()).1 as u64, data(p3.len()).1 as u64);
    let sa = p.a.dev.peer_stats(p.a.peer).unwrap();
    let sb = p.b.dev.peer_stats(p.b.peer).unwrap();
    assert_eq!((sa.tx_bytes, sa.rx_bytes), (148 + d1 + d3, 92 + d2));
    assert_eq!((sb.tx_bytes, sb.rx_bytes), (92 + d2, 148 + d1 + d3));

    // A's last data is unanswered (new-handshake timer, 15 s + up to the jitter); B received data
    // and sent nothing since (keepalive timer, 10 s).
    let a_deadline = p.a.dev.poll_timeout().expect("A has a timer after sending data");
    assert!(
        a_deadline >= t + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
            && a_deadline <= t + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX,
        "A's deadline is {:?} after the traffic",
        a_deadline - t
    );
    assert_eq!(p.b.dev.poll_timeout(), Some(t + KEEPALIVE_TIMEOUT));

    // Just before a deadline, handle_timeout does nothing at all.
    p.b.dev.handle_timeout(t + KEEPALIVE_TIMEOUT - NS);
    assert_eq!(p.b.dev.poll_transmit(), None);
    assert_eq!(p.b.dev.poll_timeout(), Some(t + KEEPALIVE_TIMEOUT), "the deadline is still pending");
    p.a.dev.handle_timeout(a_deadline - NS);
    assert_eq!(p.a.dev.poll_transmit(), None);
    assert_eq!(p.a.dev.poll_timeout(), Some(a_deadline));

    // At the deadline B's keepalive goes out, which answers A's data and disarms A's timer.
    p.advance_to(t + KEEPALIVE_TIMEOUT);
    assert_eq!(p.sent_since(B, t + MS), [KEEPALIVE]);
    assert_eq!(p.a.keepalives, 1);
    assert_eq!(p.a.dev.poll_timeout(), Some(t + REJECT_AFTER_TIME * 3), "only key zeroing is left");
    p.advance_to(t + secs(100));
    assert_eq!(p.sent_since(A, t + MS), [], "an answered, idle peer stays quiet");
    assert_eq!(p.sent_since(B, t + MS), [KEEPALIVE]);
    assert!(p.a.errors.is_empty() && p.b.errors.is_empty(), "{:?} {:?}", p.a.errors, p.b.errors);
}

// 2. Passive keepalive.

#[test]
fn passive_keepalive_goes_out_after_keepalive_timeout_and_not_before() {
    let mut p = Pair::established();
    p.advance(secs(1));
    let t1 = p.now;
    let a_keepalives = p.a.keepalives;
    p.send(A, &pkt(1));
    p.pump();
    assert_eq!(p.b.got.len(), 1);

    p.advance_to(t1 + KEEPALIVE_TIMEOUT - MS);
    assert_eq!(p.sent_since(B, t1), [], "nothing before KEEPALIVE_TIMEOUT");
    p.advance_to(t1 + KEEPALIVE_TIMEOUT);
    let sent = p.log_since(B, t1);
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].kind(), sent[0].at, sent[0].dst), (KEEPALIVE, t1 + KEEPALIVE_TIMEOUT, A_ADDR));
    assert_eq!(p.a.keepalives, a_keepalives + 1, "A authenticated the keepalive");
    p.advance_to(t1 + secs(60));
    assert_eq!(p.sent_since(B, t1), [KEEPALIVE], "exactly one keepalive");
    assert_eq!(p.sent_since(A, t1), [data(pkt(1).len())], "A's data was answered: no new handshake");

    // More data while the keepalive timer runs asks for another keepalive one interval later.
    let t2 = p.now;
    p.send(A, &pkt(2));
    p.advance(secs(5));
    p.send(A, &pkt(3));
    p.advance_to(t2 + secs(30));
    let times: Vec<Duration> = p.log_since(B, t2).iter().map(|s| s.at - t2).collect();
    assert_eq!(p.sent_since(B, t2), [KEEPALIVE, KEEPALIVE]);
    assert_eq!(times, [KEEPALIVE_TIMEOUT, KEEPALIVE_TIMEOUT * 2]);

    // Data sent back within the interval makes the keepalive unnecessary.
    let t3 = p.now;
    p.send(A, &pkt(4));
    p.advance(secs(3));
    p.send(B, &pkt(5));
    p.advance_to(t3 + secs(25));
    assert!(p.now < p.t0 + REKEY_AFTER_TIME, "(all within the first session's life)");
    assert_eq!(p.sent_since(B, t3), [data(pkt(5).len())], "no keepalive after B sent data itself");
    let a_sent = p.log_since(A, t3);
    assert_eq!(a_sent.iter().map(|s| s.kind()).collect::<Vec<_>>(), [data(pkt(4).len()), KEEPALIVE]);
    assert_eq!(a_sent[1].at, t3 + secs(3) + KEEPALIVE_TIMEOUT, "A now owes B the keepalive");
    assert_eq!(p.b.got.iter().map(|x| seq_of(x)).collect::<Vec<_>>(), [1, 2, 3, 4]);
}

// 3. New handshake when data gets no answer.

#[test]
fn unanswered_data_triggers_a_new_handshake_after_keepalive_plus_rekey_timeout() {
    let mut p = Pair::established();
    p.advance(secs(1));
    let t1 = p.now;
    p.link[A as usize] = false; // B's answers are lost
    p.send(A, &pkt(1));
    p.advance(secs(8));
    p.send(A, &pkt(2)); // later data does not push the deadline back
    p.pump();
    assert_eq!(p.b.got.len(), 2, "A -> B works");

    let deadline = t1 + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT;
    p.advance_to(deadline - MS);
    assert_eq!(p.sent_since(A, t1), [data(pkt(1).len()), data(pkt(2).len())], "no initiation before 15 s");
    assert!(p.sent_since(B, t1).contains(&KEEPALIVE), "B did answer (and the answer was lost)");
    p.advance_to(deadline + REKEY_TIMEOUT_JITTER_MAX);
    let inits = p.initiations_since(A, t1);
    assert_eq!(inits.len(), 1, "exactly one initiation: {:?}", p.sent_since(A, t1));
    assert!(inits[0] >= deadline && inits[0] <= deadline + REKEY_TIMEOUT_JITTER_MAX, "{:?}", inits[0] - t1);
}

// 4. Retransmission with jitter, then giving up.

#[test]
fn unanswered_initiation_is_retransmitted_with_jitter_then_abandoned() {
    let mut p = Pair::new();
    p.link[B as usize] = false; // B is unreachable
    let t0 = p.now;
    assert_eq!(p.send(A, &pkt(1)), Encapsulated::Staged);
    p.advance_to(t0 + secs(200));

    let sent = p.sent_since(A, t0);
    assert!(sent.iter().all(|&k| k == INIT), "only initiations: {sent:?}");
    let inits = p.initiations_since(A, t0);
    assert_eq!(
        inits.len(),
        2 + MAX_TIMER_HANDSHAKES as usize,
        "as Linux: the first initiation and MAX_TIMER_HANDSHAKES + 1 retries"
    );
    let gaps: Vec<Duration> = inits.windows(2).map(|w| w[1] - w[0]).collect();
    for gap in &gaps {
        assert!(
            *gap >= REKEY_TIMEOUT && *gap < REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX,
            "retransmitted after {gap:?}"
        );
    }
    assert!(gaps.iter().any(|g| *g > REKEY_TIMEOUT + MS), "jitter is added: {gaps:?}");
    assert!(gaps.iter().any(|g| *g != gaps[0]), "jitter is random per retransmission: {gaps:?}");
    let span = *inits.last().unwrap() - inits[0];
    assert!(
        span >= REKEY_ATTEMPT_TIME && span < REKEY_ATTEMPT_TIME + REKEY_TIMEOUT_JITTER_MAX * 19 + REKEY_TIMEOUT,
        "{span:?}"
    );
    // Given up: nothing scheduled but the key-material wipe, a long way off.
    let next = p.a.dev.poll_timeout().expect("key zeroing stays scheduled");
    assert!(next >= *inits.last().unwrap() + REKEY_TIMEOUT + REJECT_AFTER_TIME * 3, "{:?}", next - t0);

    // New traffic starts over at once, and what was staged for the abandoned attempt is gone.
    p.link[B as usize] = true;
    let t = p.now;
    assert_eq!(p.send(A, &pkt(2)), Encapsulated::Staged);
    assert_eq!(p.sent_since(A, t), [INIT]);
    p.pump();
    assert_eq!(p.b.got, [pkt(2)], "packet 1 was dropped when A gave up");
    assert!(p.a.has_session(p.now));
}

// 5. Rekey by time.

#[test]
fn initiator_rekeys_on_send_once_the_session_is_older_than_rekey_after_time() {
    let mut p = Pair::established();
    let t0 = p.now;
    p.advance_to(t0 + REKEY_AFTER_TIME - MS);
    let m = p.mark();
    assert!(matches!(p.send(A, &pkt(1)), Encapsulated::Ready { .. }));
    assert_eq!(p.sent_after(A, m), [data(pkt(1).len())], "not yet");
    p.pump();

    p.advance_to(t0 + REKEY_AFTER_TIME + MS);
    let m = p.mark();
    assert!(matches!(p.send(B, &pkt(2)), Encapsulated::Ready { .. }));
    assert_eq!(p.sent_after(B, m), [data(pkt(2).len())], "the responder does not rekey on age");
    p.pump();
    let m = p.mark();
    assert!(matches!(p.send(A, &pkt(3)), Encapsulated::Ready { .. }), "still sent on the old session");
    assert_eq!(p.sent_after(A, m), [data(pkt(3).len()), INIT]);
    let (old_local, ..) = p.a.current().unwrap();
    // Hold the last packet on the old session back until the new one is confirmed.
    let (src, late) = p.take(B);
    p.pump();
    assert_eq!((p.a.handshakes(), p.b.handshakes()), (2, 2));
    let (local, _, initiator, _) = p.a.current().unwrap();
    assert!(initiator && local != old_local, "A sends on the new session");
    p.deliver(B, src, late).unwrap();
    assert_eq!(p.b.got.iter().map(|x| seq_of(x)).collect::<Vec<_>>(), [1, 3], "the previous session still decrypts");
    assert_eq!(p.a.got.iter().map(|x| seq_of(x)).collect::<Vec<_>>(), [2]);
}

#[test]
fn responder_never_sends_on_a_session_older_than_reject_after_time() {
    let mut p = Pair::established();
    let t0 = p.now;
    p.advance_to(t0 + REJECT_AFTER_TIME - MS);
    // Kept from A: receiving it past REJECT - KEEPALIVE - REKEY would make A rekey (checked elsewhere).
    p.link[A as usize] = false;
    let m = p.mark();
    assert!(matches!(p.send(B, &pkt(1)), Encapsulated::Ready { .. }), "179.999 s: still usable");
    assert_eq!(p.sent_after(B, m), [data(pkt(1).len())]);
    let late = p.last_sent(B);
    p.link[A as usize] = true;

    p.advance_to(t0 + REJECT_AFTER_TIME);
    assert!(!p.b.has_session(p.now) && !p.a.has_session(p.now), "180 s: expired on both sides");
    assert_eq!(p.deliver(A, B_ADDR, late), Err(RecvError::Expired), "and not accepted on receive either");
    assert_eq!(p.a.dev.drop_count(DropReason::Expired), 1);
    let m = p.mark();
    assert_eq!(p.send(B, &pkt(2)), Encapsulated::Staged);
    assert_eq!(p.sent_after(B, m), [INIT], "nothing on the old key; a handshake instead");
    p.pump();
    assert_eq!(p.a.got, [pkt(2)], "the staged packet goes out on the new session");
    let (_, _, b_initiator, _) = p.b.current().unwrap();
    assert!(b_initiator, "B initiated the replacement");
    assert_eq!(p.b.handshakes(), 2);
}

#[test]
fn initiator_rekeys_when_receiving_on_a_session_near_reject_after_time() {
    let mut p = Pair::established();
    let t0 = p.now;
    let lastminute = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT;
    p.advance_to(t0 + lastminute - MS);
    let m = p.mark();
    p.send(B, &pkt(1));
    p.pump();
    assert_eq!(p.sent_after(A, m), [], "164.999 s: nothing");
    p.advance_to(t0 + lastminute + MS);
    let m = p.mark();
    p.send(B, &pkt(2));
    p.deliver_one(A).unwrap();
    assert_eq!(p.sent_after(A, m), [INIT], "165.001 s: the initiator renews on receive");
    assert_eq!(p.a.got.len(), 2);
    p.pump();
    assert_eq!(p.a.handshakes(), 2);
}

// 6. Rekey by message count.

#[test]
fn rekey_after_messages_starts_a_handshake_on_either_side() {
    let mut p = Pair::established();
    p.advance(REKEY_TIMEOUT + MS); // past the rate limit of the handshake that made the session
    p.a.dev.current_keypair_mut(p.a.peer).unwrap().force_send_counter(REKEY_AFTER_MESSAGES - 1);
    let m = p.mark();
    assert!(matches!(p.send(A, &pkt(1)), Encapsulated::Ready { .. }));
    assert_eq!(p.sent_after(A, m), [data(pkt(1).len())], "counter REKEY_AFTER_MESSAGES - 1: not yet");
    let m = p.mark();
    assert!(matches!(p.send(A, &pkt(2)), Encapsulated::Ready { .. }));
    assert_eq!(p.sent_after(A, m), [data(pkt(2).len()), INIT], "past REKEY_AFTER_MESSAGES: rekey");
    p.pump();
    assert_eq!(p.b.got, [pkt(1), pkt(2)], "the high counters were accepted");
    assert_eq!(p.a.handshakes(), 2);
    assert!(p.a.current().unwrap().3 < 2, "A sends on a fresh session");

    // The responder rekeys on message count too (not on age).
    p.advance(REKEY_TIMEOUT + MS);
    p.b.dev.current_keypair_mut(p.b.peer).unwrap().force_send_counter(REKEY_AFTER_MESSAGES);
    let m = p.mark();
    assert!(matches!(p.send(B, &pkt(3)), Encapsulated::Ready { .. }));
    assert_eq!(p.sent_after(B, m), [data(pkt(3).len()), INIT]);
    p.pump();
    assert_eq!(p.a.got, [pkt(3)]);
    assert!(p.b.current().unwrap().2, "B initiated its new session");
}

#[test]
fn reject_after_messages_stops_the_key_and_stages_behind_a_handshake() {
    let mut p = Pair::established();
    p.advance(REKEY_TIMEOUT + MS); // past the rate limit of the handshake that made the session
    p.a.dev.current_keypair_mut(p.a.peer).unwrap().force_send_counter(REJECT_AFTER_MESSAGES - 1);
    let m = p.mark();
    assert!(matches!(p.send(A, &pkt(1)), Encapsulated::Ready { .. }), "the last permitted nonce");
    assert_eq!(p.sent_after(A, m), [data(pkt(1).len()), INIT]);
    assert!(!p.a.has_session(p.now), "the key is exhausted");
    let m = p.mark();
    assert_eq!(p.send(A, &pkt(2)), Encapsulated::Staged);
    assert_eq!(p.sent_after(A, m), [], "nothing on the exhausted key, and the initiation is already out");
    p.pump();
    assert_eq!(p.b.got, [pkt(1), pkt(2)]);
    assert_eq!(p.a.current().unwrap().3, 1, "the staged packet went out on the new session");

    // A key at REJECT_AFTER_MESSAGES is never used, even once.
    p.advance(REKEY_TIMEOUT + MS);
    p.a.dev.current_keypair_mut(p.a.peer).unwrap().force_send_counter(REJECT_AFTER_MESSAGES);
    assert!(!p.a.has_session(p.now));
    let m = p.mark();
    assert_eq!(p.send(A, &pkt(3)), Encapsulated::Staged);
    assert_eq!(p.sent_after(A, m), [INIT]);
    p.pump();
    assert_eq!(p.b.got, [pkt(1), pkt(2), pkt(3)]);
    assert_eq!(p.a.handshakes(), 3);
}

// 7. Key material is erased.

#[test]
fn all_key_material_is_erased_after_three_reject_after_times_without_a_new_session() {
    let mut p = Pair::established();
    let t0 = p.now;
    p.advance(secs(1));
    // From now on nothing gets through either way: no session can be renewed.
    p.link = [false, false];
    assert!(matches!(p.send(B, &pkt(1)), Encapsulated::Ready { .. }));
    let held = p.last_sent(B);

    p.advance_to(t0 + REJECT_AFTER_TIME * 3 - MS);
    assert!(p.initiations_since(B, t0).len() > 1, "B kept trying to rekey in vain");
    assert!(!p.a.has_session(p.now) && !p.b.has_session(p.now));
    assert!(p.a.current().is_some() && p.b.current().is_some(), "expired keys are still held");
    assert_eq!(p.deliver(A, B_ADDR, held.clone()), Err(RecvError::Expired));

    p.advance_to(t0 + REJECT_AFTER_TIME * 3);
    assert!(p.a.current().is_none() && p.b.current().is_none(), "540 s: erased");
    assert_eq!(p.deliver(A, B_ADDR, held), Err(RecvError::UnknownIndex), "the old index no longer exists");
    assert_eq!(p.a.dev.drop_count(DropReason::Expired), 1);
    assert_eq!(p.a.dev.drop_count(DropReason::UnknownIndex), 1);
    assert_eq!((p.a.dev.poll_timeout(), p.b.dev.poll_timeout()), (None, None), "nothing left to do");
}

// 8. Persistent keepalive.

#[test]
fn persistent_keepalive_every_interval_and_a_handshake_once_the_session_is_gone() {
    let interval = secs(25);
    let mut p = Pair::with_keepalive(None, Some(interval));
    p.handshake(A);
    let t0 = p.now;
    p.advance_to(t0 + secs(160));
    let b_sent = p.log_since(B, t0 + NS);
    assert!(b_sent.iter().all(|s| s.kind() == KEEPALIVE), "{:?}", p.sent_since(B, t0 + NS));
    let times: Vec<Duration> = b_sent.iter().map(|s| s.at - t0).collect();
    assert_eq!(times, (1..=6).map(|k| interval * k).collect::<Vec<_>>());
    assert_eq!(p.a.keepalives, 6);
    assert_eq!(p.sent_since(A, t0 + NS), [], "A has no persistent keepalive and nothing to answer");

    // Past REJECT_AFTER_TIME the keepalive has no session to go on: it starts a handshake.
    p.link[A as usize] = false; // (so A does not renew on receive at 165 s)
    p.advance_to(t0 + secs(200) - MS);
    assert_eq!(p.sent_since(B, t0 + secs(161)), [KEEPALIVE], "175 s: still on the old session");
    p.link[A as usize] = true;
    p.advance_to(t0 + secs(200));
    assert_eq!(p.sent_since(B, t0 + secs(200)), [INIT, KEEPALIVE], "200 s: handshake, then the keepalive");
    assert_eq!(p.sent_since(A, t0 + NS), [RESP]);
    assert_eq!(p.b.handshakes(), 2);
    assert!(p.a.has_session(p.now) && p.b.has_session(p.now));
    p.advance_to(t0 + secs(226));
    assert_eq!(p.sent_since(B, t0 + secs(200) + NS), [KEEPALIVE], "and every interval on the new one");
}

#[test]
fn persistent_keepalive_on_a_new_idle_peer_brings_the_session_up() {
    let mut p = Pair::with_keepalive(None, Some(secs(25)));
    let t0 = p.now;
    p.advance_to(t0 + secs(26));
    assert_eq!(p.sent_since(B, t0).first(), Some(&INIT), "B should have started a handshake on its own");
    assert!(p.a.has_session(p.now) && p.b.has_session(p.now));
}

// 9. Roaming.

#[test]
fn endpoint_follows_authenticated_packets_only() {
    let mut p = Pair::established();
    assert_eq!(p.a.dev.peer_endpoint(p.a.peer), Some(B_ADDR));
    let initiation = p.log.iter().find(|s| s.from == A && s.kind() == INIT).unwrap().bytes.clone();

    p.b.addr = B_ROAMED;
    p.send(B, &pkt(1));
    p.pump();
    assert_eq!(p.a.got, [pkt(1)]);
    assert_eq!(p.a.dev.peer_endpoint(p.a.peer), Some(B_ROAMED), "A follows B to its new address");
    let roamed = p.mark();
    assert!(matches!(p.send(A, &pkt(2)), Encapsulated::Ready { dst: B_ROAMED, .. }));
    p.pump();

    // Nothing that fails authentication moves the endpoint.
    p.link[A as usize] = false;
    p.send(B, &pkt(3));
    p.link[A as usize] = true;
    let genuine = p.last_sent(B);
    let mut forged = genuine.clone();
    forged[20] ^= 0x80;
    assert_eq!(p.deliver(A, EVIL, forged), Err(RecvError::Decrypt));
    let mut junk = vec![0u8; 148];
    junk[0] = T_INIT;
    assert_eq!(p.deliver(A, EVIL, junk), Err(RecvError::InvalidMac1));
    assert_eq!(p.a.dev.peer_endpoint(p.a.peer), Some(B_ROAMED));
    p.deliver(A, B_ROAMED, genuine.clone()).unwrap();
    assert_eq!(p.deliver(A, EVIL, genuine), Err(RecvError::Replay), "a replay is not authentication");
    assert_eq!(p.a.dev.peer_endpoint(p.a.peer), Some(B_ROAMED));
    assert_eq!(p.deliver(B, EVIL, initiation), Err(RecvError::StaleTimestamp));
    assert_eq!(p.b.dev.peer_endpoint(p.b.peer), Some(A_ADDR), "a replayed initiation does not move B's view of A");
    assert_eq!(p.a.dev.drop_count(DropReason::Decrypt), 1);
    assert_eq!(p.a.dev.drop_count(DropReason::InvalidMac), 1);
    assert_eq!(p.a.dev.drop_count(DropReason::Replay), 1);

    // Control traffic follows as well: A's keepalive for packet 3 goes to the new address.
    p.advance(KEEPALIVE_TIMEOUT);
    assert_eq!(p.sent_after(A, roamed), [data(pkt(2).len()), KEEPALIVE]);
    assert!(p.log[roamed..].iter().filter(|s| s.from == A).all(|s| s.dst == B_ROAMED));
    assert_eq!(p.a.got, [pkt(1), pkt(3)]);
}

// 10. Responder confirmation.

#[test]
fn responder_waits_for_confirmation_and_stages_until_then() {
    let mut p = Pair::new();
    let t = p.now;
    p.a.dev.initiate_handshake(p.a.peer, t);
    p.drain(A);
    let m = p.mark();
    p.deliver_one(B).unwrap();
    assert_eq!(p.sent_after(B, m), [RESP]);
    assert!(!p.b.has_session(t) && p.b.current().is_none(), "the new session is only `next` until confirmed");

    let m = p.mark();
    assert_eq!(p.send(B, &pkt(1)), Encapsulated::Staged);
    assert_eq!(p.send(B, &pkt(2)), Encapsulated::Staged);
    assert!(!p.sent_after(B, m).iter().any(|k| k.0 == T_DATA), "nothing sent on the unconfirmed session");

    // The response reaches A, which confirms with a keepalive (it has nothing staged).
    let (src, response) = p.queue[A as usize].pop_front().unwrap();
    assert_eq!(response.len(), RESP.1);
    let m = p.mark();
    p.deliver(A, src, response).unwrap();
    assert_eq!(p.sent_after(A, m), [KEEPALIVE]);
    let (src, confirmation) = p.queue[B as usize].pop_back().unwrap();
    let m = p.mark();
    p.deliver(B, src, confirmation).unwrap();
    assert_eq!(p.b.keepalives, 1);
    assert_eq!(p.sent_after(B, m)[..2], [data(pkt(1).len()), data(pkt(2).len())], "released by the confirmation");
    assert!(p.b.has_session(p.now));
    let (b_local, b_remote, b_initiator, _) = p.b.current().unwrap();
    let (a_local, a_remote, ..) = p.a.current().unwrap();
    assert!(!b_initiator);
    assert_eq!((b_local, b_remote), (a_remote, a_local), "B now sends on the session A confirmed");
    p.pump();
    assert_eq!(p.a.got, [pkt(1), pkt(2)]);
}

#[test]
fn responder_does_not_start_a_redundant_handshake_while_awaiting_confirmation() {
    let mut p = Pair::new();
    p.a.dev.initiate_handshake(p.a.peer, p.now);
    p.drain(A);
    p.deliver_one(B).unwrap();
    let m = p.mark();
    assert_eq!(p.send(B, &pkt(1)), Encapsulated::Staged);
    assert_eq!(p.sent_after(B, m), [], "a handshake was answered just now: nothing to initiate");
    p.pump();
    assert_eq!(p.a.got, [pkt(1)]);
    assert_eq!((p.a.handshakes(), p.b.handshakes()), (1, 1), "one handshake, not two");
}

// 11. Simultaneous initiation.

#[test]
fn simultaneous_initiations_converge_on_one_working_session() {
    let mut p = Pair::new();
    let t0 = p.now;
    assert_eq!(p.send(A, &pkt(1)), Encapsulated::Staged);
    assert_eq!(p.send(B, &pkt(101)), Encapsulated::Staged);
    assert_eq!((p.sent_since(A, t0), p.sent_since(B, t0)), (vec![INIT], vec![INIT]));
    p.pump();
    p.advance_to(t0 + REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX);
    assert!(p.a.has_session(p.now) && p.b.has_session(p.now), "converged within one retransmission");
    assert_eq!(p.a.got, [pkt(101)]);
    assert_eq!(p.b.got, [pkt(1)]);
    let (a_local, a_remote, a_init, _) = p.a.current().unwrap();
    let (b_local, b_remote, b_init, _) = p.b.current().unwrap();
    assert_eq!((a_local, a_remote), (b_remote, b_local), "both send on the same session");
    assert_ne!(a_init, b_init, "one initiator, one responder");

    for seq in 2..12 {
        assert!(matches!(p.send(A, &pkt(seq)), Encapsulated::Ready { .. }));
        assert!(matches!(p.send(B, &pkt(100 + seq)), Encapsulated::Ready { .. }));
    }
    p.pump();
    let inits = p.initiations_since(A, t0).len() + p.initiations_since(B, t0).len();
    p.advance(secs(60));
    assert_eq!(p.a.got.len(), 11);
    assert_eq!(p.b.got.len(), 11);
    assert_eq!(p.initiations_since(A, t0).len() + p.initiations_since(B, t0).len(), inits, "settled");
    assert!(inits <= 3, "{inits} initiations");
}

// 12. A restarted peer.

#[test]
fn restarted_peer_is_accepted_with_its_new_initiation() {
    let mut p = Pair::established();
    p.send(A, &pkt(1));
    p.send(B, &pkt(2));
    p.pump();
    p.advance(secs(30));

    p.restart(A);
    let t = p.now;
    assert!(!p.a.has_session(t) && p.b.has_session(t), "B still has the old session");
    assert!(matches!(p.send(B, &pkt(3)), Encapsulated::Ready { .. }));
    p.pump();
    assert_eq!(p.a.errors, [RecvError::UnknownIndex], "the new A knows nothing of the old session");

    assert_eq!(p.send(A, &pkt(4)), Encapsulated::Staged);
    p.pump();
    assert!(p.b.errors.is_empty(), "B accepted the new initiation: {:?}", p.b.errors);
    assert_eq!(p.b.got, [pkt(1), pkt(4)]);
    assert_eq!(p.b.handshakes(), 2);
    assert!(matches!(p.send(B, &pkt(5)), Encapsulated::Ready { .. }));
    p.pump();
    assert_eq!(p.a.got, [pkt(5)]);
}

#[test]
fn restarted_peer_is_recovered_by_the_new_handshake_timer_of_the_other_side() {
    let mut p = Pair::established();
    p.advance(secs(30));
    p.restart(A);
    let t = p.now;
    p.send(B, &pkt(1));
    p.pump();
    assert_eq!(p.a.errors, [RecvError::UnknownIndex]);
    p.advance_to(t + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX);
    let inits = p.initiations_since(B, t);
    assert_eq!(inits.len(), 1, "B noticed the silence and handshook");
    assert!(inits[0] >= t + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT);
    assert!(p.a.has_session(p.now) && p.b.has_session(p.now));
    assert!(matches!(p.send(B, &pkt(2)), Encapsulated::Ready { .. }));
    assert!(matches!(p.send(A, &pkt(3)), Encapsulated::Ready { .. }));
    p.pump();
    assert_eq!(p.a.got, [pkt(2)]);
    assert_eq!(p.b.got, [pkt(3)]);
}

// 13. Unknown peers and removed peers.

#[test]
fn initiation_from_an_unknown_key_is_dropped_and_counted() {
    let mut p = Pair::established();
    let mut c = Node::new(C_KEY, C_ADDR, (B_KEY, B_ADDR), None, p.now);
    c.dev.initiate_handshake(c.peer, p.now);
    let initiation = c.dev.poll_transmit().unwrap();
    assert_eq!((initiation.dst, initiation.payload.len()), (B_ADDR, 148));
    let m = p.mark();
    assert_eq!(p.b.dev.drop_count(DropReason::UnknownPeer), 0);
    assert_eq!(p.deliver(B, C_ADDR, initiation.payload), Err(RecvError::UnknownPeer));
    assert_eq!(p.b.dev.drop_count(DropReason::UnknownPeer), 1);
    assert!(p.b.dev.drops().any(|(r, n)| r == DropReason::UnknownPeer && n == 1));
    assert_eq!(p.sent_after(B, m), [], "no answer to a stranger");
}

#[test]
fn removed_peer_loses_its_indices_and_queued_transmits() {
    let mut p = Pair::established();
    p.advance(REKEY_TIMEOUT + MS);
    // Captured on their way to B: A's data on the session, and A's answer to a handshake B starts.
    p.link[B as usize] = false;
    p.send(A, &pkt(1));
    let data_msg = p.last_sent(A);
    let old_id = p.b.peer;
    p.b.dev.initiate_handshake(old_id, p.now);
    p.drain(B);
    p.deliver_one(A).unwrap();
    let response = p.last_sent(A);
    assert_eq!(response.len(), RESP.1);

    assert!(p.b.dev.remove_peer(old_id));
    assert_eq!(p.deliver(B, A_ADDR, data_msg.clone()), Err(RecvError::UnknownIndex));
    assert_eq!(p.b.dev.drop_count(DropReason::UnknownIndex), 1);
    assert!(!p.b.dev.remove_peer(old_id));
    let mut buf = vec![0u8; HEADROOM + 64 + TAILROOM];
    assert_eq!(p.b.dev.encapsulate(old_id, &mut buf, 64, p.now), Err(SendError::UnknownPeer));
    assert_eq!(p.b.dev.peer_by_key(&public_key(&A_KEY)), None);
    assert_eq!(p.b.dev.peer_ids().count(), 0);

    // Re-added, A gets the same slot back, but none of the old indices lead to it.
    let again = p.b.dev.add_peer(PeerConfig { endpoint: Some(A_ADDR), ..PeerConfig::new(public_key(&A_KEY)) }).unwrap();
    assert_eq!(again, old_id, "slot reused");
    assert_eq!(p.deliver(B, A_ADDR, data_msg), Err(RecvError::UnknownIndex));
    assert_eq!(
        p.deliver(B, A_ADDR, response),
        Err(RecvError::UnknownIndex),
        "the index of the old peer's handshake went with it"
    );
    assert!(!p.b.dev.has_session(again, p.now));

    // Transmits still queued for a peer go with it; other peers' stay.
    let c_id = p.b.dev.add_peer(PeerConfig { endpoint: Some(C_ADDR), ..PeerConfig::new(public_key(&C_KEY)) }).unwrap();
    p.b.dev.initiate_handshake(c_id, p.now);
    p.b.dev.initiate_handshake(again, p.now);
    assert!(p.b.dev.remove_peer(again));
    let left = p.b.dev.poll_transmit().expect("C's initiation is still queued");
    assert_eq!((left.peer, left.dst, left.payload.len()), (Some(c_id), C_ADDR, INIT.1));
    assert_eq!(p.b.dev.poll_transmit(), None, "A's initiation went with A");
    assert_eq!(p.b.dev.peer_ids().collect::<Vec<_>>(), [c_id]);
}

// Extras.

#[test]
fn staging_keeps_the_newest_packets() {
    let mut p = Pair::new();
    let extra = 5;
    for seq in 0..(MAX_STAGED_PACKETS as u32 + extra) {
        assert_eq!(p.send(A, &pkt(seq)), Encapsulated::Staged);
    }
    assert_eq!(p.sent_since(A, p.t0), [INIT], "one initiation for all of them");
    p.pump();
    let got: Vec<u32> = p.b.got.iter().map(|x| seq_of(x)).collect();
    assert_eq!(got, (extra..MAX_STAGED_PACKETS as u32 + extra).collect::<Vec<_>>());
}

#[test]
fn packets_released_by_a_confirmation_from_a_new_address_go_to_that_address() {
    // Found by the device_receive fuzz target: the staged packets were released before the
    // endpoint was updated, so they went to the initiator's old address after a NAT rebinding.
    let a_roamed: SocketAddr = "203.0.113.9:40001".parse().unwrap();
    let mut p = Pair::new();
    p.a.dev.initiate_handshake(p.a.peer, p.now);
    p.drain(A);
    p.deliver_one(B).unwrap();
    assert_eq!(p.send(B, &pkt(1)), Encapsulated::Staged);
    let (src, response) = p.queue[A as usize].pop_front().unwrap();
    p.deliver(A, src, response).unwrap();
    let (_, confirmation) = p.queue[B as usize].pop_back().unwrap();
    let m = p.log.len();
    p.deliver(B, a_roamed, confirmation).unwrap();
    let released: Vec<&Sent> = p.log[m..].iter().filter(|s| s.from == B).collect();
    assert!(!released.is_empty(), "the staged packet was released");
    assert!(
        released.iter().all(|s| s.dst == a_roamed),
        "released to the new address: {:?}",
        released.iter().map(|s| s.dst).collect::<Vec<_>>()
    );
    assert_eq!(p.b.dev.peer_endpoint(p.b.peer), Some(a_roamed));
}
