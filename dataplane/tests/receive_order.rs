//! Received datagrams take effect in arrival order, as if processed one by one, on the phased
//! receive path too: a handshake message later in a batch must not change sessions under a data
//! packet planned before it. The case that broke: B holds a fresh, unconfirmed `next` keypair K;
//! A sent data on K, then a new initiation; B gets both in one batch. Kernel WireGuard delivers
//! the data (it is older than the initiation that replaces K), and so must we.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod common;
use common::engines::{addr, engine_pair, pod_pair, A, B};

use vxwg_dataplane::engine::pod::{Delivery, PodEngine, PodIncoming, POD_HEADROOM, POD_TAILROOM};
use vxwg_dataplane::engine::{open_jobs, Datagram, Engine, Incoming, OpenJob, HEADROOM, TAILROOM};
use vxwg_dataplane::wire::wireguard::{MessageType, RESPONSE_LEN};
use vxwg_dataplane::wireguard::{DropReason, Encapsulated, PeerId, Received};

/// Past REKEY_TIMEOUT, so a new initiation of A's is neither suppressed nor taken for a flood.
const STEP: Duration = Duration::from_secs(6);

/// An IPv4 packet `src` → `dst` of `len` octets at `buf[at..]`, its body a pattern of `tag`.
fn ipv4(src: [u8; 4], dst: [u8; 4], len: usize, tag: u8, buf: &mut [u8], at: usize) -> Vec<u8> {
    let p = &mut buf[at..at + len];
    p.iter_mut().enumerate().for_each(|(i, b)| *b = (i as u8).wrapping_mul(7) ^ tag);
    p[..20].fill(0);
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[6] = 0x40; // DF, as pods send
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p.to_vec()
}

/// A rekey that A starts at `at` and B answers, but whose confirmation never reaches B: A sends
/// on the new keypair K, B holds K as its unconfirmed `next`.
fn rekey_unconfirmed(a: &mut Engine, b: &mut Engine, b_at_a: PeerId, at: Instant) {
    a.device_mut().initiate_handshake(b_at_a, at);
    let mut initiation = a.poll_transmit().expect("A's initiation");
    assert!(matches!(b.decapsulate(addr(A), &mut initiation.payload, at), Ok(Received::HandshakeInitiation { .. })));
    let mut response = b.poll_transmit().expect("B's response");
    assert!(matches!(a.decapsulate(addr(B), &mut response.payload, at), Ok(Received::HandshakeComplete { .. })));
    // A's confirming keepalive is lost.
    while a.poll_transmit().is_some() {}
}

/// A new initiation of A's, at `at`.
fn initiation(a: &mut Engine, b_at_a: PeerId, at: Instant) -> Vec<u8> {
    a.device_mut().initiate_handshake(b_at_a, at);
    let t = a.poll_transmit().expect("A's new initiation");
    assert_eq!(MessageType::classify(&t.payload), Ok(MessageType::HandshakeInitiation));
    t.payload
}

/// L3 engines where B holds K as `next`, and what B receives in one batch: A's data packet on K
/// (whose plaintext is returned too), then A's new initiation. Returns the time of arrival.
fn l3_scenario() -> (Engine, Engine, Vec<Vec<u8>>, Vec<u8>, Instant) {
    let start = Instant::now();
    let (mut a, mut b, b_at_a) = engine_pair(start);
    rekey_unconfirmed(&mut a, &mut b, b_at_a, start);
    let mut buf = vec![0u8; HEADROOM + 200 + TAILROOM];
    let plain = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 200, 1, &mut buf, HEADROOM);
    let Ok(Encapsulated::Ready { len, .. }) = a.device_mut().encapsulate(b_at_a, &mut buf, 200, start) else {
        panic!("A sends on K");
    };
    buf.truncate(len);
    let later = start + STEP;
    let init = initiation(&mut a, b_at_a, later);
    (a, b, vec![buf, init], plain, later)
}

/// Pod engines where B holds K as `next`, and the batch B receives: A's pod packet on K (its
/// plaintext returned too), then A's new initiation. Returns the time of arrival.
fn pod_scenario() -> (PodEngine, PodEngine, Vec<Vec<u8>>, Vec<u8>, Instant) {
    let start = Instant::now();
    let (mut a, mut b) = pod_pair(start);
    let b_at_a = a.engine().device().peer_by_key(&b.engine().device().public_key()).unwrap();
    let rekey = start + STEP;
    rekey_unconfirmed(a.engine_mut(), b.engine_mut(), b_at_a, rekey);
    let mut bufs = vec![vec![0u8; POD_HEADROOM + 300 + POD_TAILROOM]];
    let plain = ipv4([10, 42, 1, 5], [10, 42, 2, 7], 300, 2, &mut bufs[0], POD_HEADROOM);
    let (mut out, mut icmp) = (Vec::new(), Vec::new());
    a.encapsulate_pod_batch(&mut bufs, &[300], rekey, &mut out, &mut icmp);
    assert_eq!(out.len(), 1, "A sends the pod packet on K");
    let data = bufs[0][out[0].range.clone()].to_vec();
    let later = rekey + STEP;
    let init = initiation(a.engine_mut(), b_at_a, later);
    (a, b, vec![data, init], plain, later)
}

fn datagrams_of(wire: &[Vec<u8>], src: SocketAddr) -> Vec<Datagram> {
    wire.iter().enumerate().map(|(slot, d)| Datagram { slot, range: 0..d.len(), src }).collect()
}

/// The phases as a worker runs them, on engine `b` (L3 or pod, through `plan` and `commit`):
/// plan, open, commit, again from where planning stopped. Returns what was delivered and how
/// many datagrams each planning call consumed.
fn in_rounds<E, I>(
    b: &mut E,
    wire: &mut [Vec<u8>],
    plan: impl Fn(&mut E, &mut [Vec<u8>], &[Datagram], &mut Vec<OpenJob>) -> usize,
    commit: impl Fn(&mut E, &mut [Vec<u8>], &[OpenJob], &mut Vec<I>),
) -> (Vec<I>, Vec<usize>) {
    let datagrams = datagrams_of(wire, addr(A));
    let (mut jobs, mut inc, mut calls) = (Vec::new(), Vec::new(), Vec::new());
    let mut next = 0;
    while next < datagrams.len() {
        jobs.clear();
        let consumed = plan(b, wire, &datagrams[next..], &mut jobs);
        open_jobs(wire, &mut jobs);
        commit(b, wire, &jobs, &mut inc);
        calls.push(consumed);
        next += consumed;
    }
    (inc, calls)
}

/// [`in_rounds`] on the L3 engine.
fn receive_phased(b: &mut Engine, wire: &mut [Vec<u8>], now: Instant) -> (Vec<Incoming>, Vec<usize>) {
    in_rounds(
        b,
        wire,
        |b, w, d, jobs| b.plan_decapsulate(w, d, now, jobs),
        |b, w, jobs, out| b.commit_decapsulate(w, jobs, now, out),
    )
}

/// [`in_rounds`] on the pod path.
fn receive_phased_pod(b: &mut PodEngine, wire: &mut [Vec<u8>], now: Instant) -> (Vec<PodIncoming>, Vec<usize>) {
    in_rounds(
        b,
        wire,
        |b, w, d, jobs| b.plan_decapsulate_pod(w, d, now, jobs),
        |b, w, jobs, out| b.commit_decapsulate_pod(w, jobs, now, out),
    )
}

/// B answered the new initiation: the response is queued for A, and A completes the handshake
/// with it.
fn assert_answered(a: &mut Engine, b: &mut Engine, now: Instant) {
    let mut response = b.poll_transmit().expect("B answers the new initiation");
    assert_eq!((response.dst, response.payload.len()), (addr(A), RESPONSE_LEN));
    assert_eq!(MessageType::classify(&response.payload), Ok(MessageType::HandshakeResponse));
    assert!(matches!(a.decapsulate(addr(B), &mut response.payload, now), Ok(Received::HandshakeComplete { .. })));
}

#[test]
fn data_before_an_initiation_in_one_phased_batch_is_delivered() {
    let (mut a, mut b, mut wire, plain, now) = l3_scenario();
    let (inc, calls) = receive_phased(&mut b, &mut wire, now);
    assert_eq!(inc.len(), 1, "the data packet on K is delivered");
    assert_eq!(wire[inc[0].slot][inc[0].range.clone()], plain[..]);
    assert_eq!(inc[0].slot, 0);
    assert_eq!(calls, [1, 1], "planning stopped before the initiation, then took it");
    assert_eq!(b.device().drop_count(DropReason::UnknownIndex), 0);
    assert_answered(&mut a, &mut b, now);
}

#[test]
fn data_before_an_initiation_in_one_single_call_batch_is_delivered() {
    let (mut a, mut b, mut wire, plain, now) = l3_scenario();
    let lens: Vec<usize> = wire.iter().map(Vec::len).collect();
    let mut inc = Vec::new();
    b.decapsulate_batch(&mut wire, &lens, &[addr(A); 2], now, &mut inc);
    assert_eq!(inc.len(), 1, "the data packet on K is delivered");
    assert_eq!(wire[0][inc[0].range.clone()], plain[..]);
    assert_answered(&mut a, &mut b, now);

    // The same through the datagram-range API.
    let (mut a, mut b, mut wire, plain, now) = l3_scenario();
    let datagrams = datagrams_of(&wire, addr(A));
    let mut inc = Vec::new();
    b.decapsulate_datagrams(&mut wire, &datagrams, now, &mut inc);
    assert_eq!(inc.len(), 1, "the data packet on K is delivered");
    assert_eq!(wire[0][inc[0].range.clone()], plain[..]);
    assert_answered(&mut a, &mut b, now);
}

#[test]
fn pod_data_before_an_initiation_in_one_phased_batch_is_delivered() {
    let (mut a, mut b, mut wire, plain, now) = pod_scenario();
    let (inc, calls) = receive_phased_pod(&mut b, &mut wire, now);
    assert_eq!(inc.len(), 1, "the pod packet on K is delivered");
    assert_eq!(inc[0].delivery, Delivery::Pod);
    assert_eq!(wire[inc[0].slot][inc[0].range.clone()], plain[..]);
    assert_eq!(calls, [1, 1], "planning stopped before the initiation, then took it");
    assert_eq!(b.engine().device().drop_count(DropReason::UnknownIndex), 0);
    assert_answered(a.engine_mut(), b.engine_mut(), now);
}

#[test]
fn pod_data_before_an_initiation_in_one_single_call_batch_is_delivered() {
    let (mut a, mut b, mut wire, plain, now) = pod_scenario();
    let lens: Vec<usize> = wire.iter().map(Vec::len).collect();
    let mut inc = Vec::new();
    b.decapsulate_pod_batch(&mut wire, &lens, &[addr(A); 2], now, &mut inc);
    assert_eq!(inc.len(), 1, "the pod packet on K is delivered");
    assert_eq!(wire[0][inc[0].range.clone()], plain[..]);
    assert_answered(a.engine_mut(), b.engine_mut(), now);
}

/// A run of data packets between handshake messages: one at the start of a planning call is
/// handled and planning goes on; one after planned data ends the call; nothing is lost.
/// `count` IPv4 packets of `len` bytes (tagged 0, 1, ...) that A seals for B on its current
/// keypair, as datagrams on the wire.
fn sealed_packets(a: &mut Engine, b_at_a: PeerId, count: u8, len: usize, now: Instant) -> Vec<Vec<u8>> {
    (0..count)
        .map(|tag| {
            let mut buf = vec![0u8; HEADROOM + len + TAILROOM];
            ipv4([10, 0, 0, 1], [10, 0, 0, 2], len, tag, &mut buf, HEADROOM);
            let Ok(Encapsulated::Ready { len: sealed, .. }) = a.device_mut().encapsulate(b_at_a, &mut buf, len, now)
            else {
                panic!("A sends on its current keypair");
            };
            buf.truncate(sealed);
            buf
        })
        .collect()
}

#[test]
fn planning_stops_only_before_a_handshake_that_follows_planned_data() {
    let (mut a, mut b, mut wire, _, now) = l3_scenario();
    let b_at_a = a.device().peer_by_key(&b.device().public_key()).unwrap();
    // B first sees the initiation alone and answers; A completes, and sends three packets on the
    // new keypair; stale copies of the initiation (replays) come before and after them.
    let stale = wire[1].clone();
    let (inc, calls) = receive_phased(&mut b, &mut wire[1..], now);
    assert!(inc.is_empty());
    assert_eq!(calls, [1]);
    assert_answered(&mut a, &mut b, now);
    let mut batch = sealed_packets(&mut a, b_at_a, 3, 100, now);
    batch.insert(0, stale.clone());
    batch.push(stale);
    let (inc, calls) = receive_phased(&mut b, &mut batch, now);
    assert_eq!(inc.len(), 3, "all three data packets delivered");
    assert_eq!(calls, [4, 1], "the leading replay and the data run in one call, the last replay in the next");
    assert_eq!(b.device().drop_count(DropReason::HandshakeReplay), 2);
}

#[test]
fn a_batch_of_data_only_is_planned_in_one_call() {
    let (mut a, mut b, _, _, now) = l3_scenario();
    let b_at_a = a.device().peer_by_key(&b.device().public_key()).unwrap();
    let mut wire = sealed_packets(&mut a, b_at_a, 32, 60, now);
    let (inc, calls) = receive_phased(&mut b, &mut wire, now);
    assert_eq!(calls, [32]);
    assert_eq!(inc.len(), 32);
}

/// What makes planning stop: the three handshake messages, well formed; never transport data
/// or a datagram the device would refuse unread.
#[test]
fn handshake_messages_are_told_apart_from_data_by_type_and_length() {
    use vxwg_dataplane::wire::wireguard::COOKIE_REPLY_LEN;
    use vxwg_dataplane::wireguard::device::is_handshake_message;

    let (_, mut b, wire, _, now) = l3_scenario();
    let (data, mut init) = (wire[0].clone(), wire[1].clone());
    assert!(!is_handshake_message(&data));
    assert!(is_handshake_message(&init));
    b.decapsulate(addr(A), &mut init, now).unwrap();
    let response = b.poll_transmit().expect("B's response").payload;
    assert!(is_handshake_message(&response));
    let mut cookie_reply = [0u8; COOKIE_REPLY_LEN];
    cookie_reply[0] = 3;
    assert!(is_handshake_message(&cookie_reply));
    // Malformed: dropped by the device without effect, so no reason to stop.
    assert!(!is_handshake_message(&init[..init.len() - 1]));
    assert!(!is_handshake_message(&cookie_reply[..1]));
    let mut reserved = init.clone();
    reserved[1] = 1;
    assert!(!is_handshake_message(&reserved));
    assert!(!is_handshake_message(&[]));
}
