//! vxwg's WireGuard core against boringtun's `noise::Tunn`, in process.
//!
//! No sockets: datagrams move through two queues. Time is virtual on both sides: vxwg takes `now`
//! explicitly, and boringtun (built with its `mock-instant` feature) reads a thread-local mock
//! clock that [`Harness::advance`] moves in lockstep.

use std::collections::{BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use mock_instant::MockClock;
use rand_core::OsRng;
use vxwg::dataplane::wireguard::{
    Device, DeviceConfig, DropReason, Encapsulated, PeerConfig, PeerId, Received, RecvError, SendBlock, HEADROOM,
    TAILROOM,
};

const VX_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 51820);
const BT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 51821);
const VX_KEY: [u8; 32] = [0x11; 32];
const BT_KEY: [u8; 32] = [0x22; 32];

/// An IPv4/UDP packet carrying a sequence number, with a valid header checksum.
fn ipv4_packet(seq: u32, payload_len: usize) -> Vec<u8> {
    let total = 20 + 8 + payload_len.max(4);
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let csum = !p[..20].chunks(2).fold(0u32, |acc, w| {
        let s = acc + u32::from(u16::from_be_bytes([w[0], w[1]]));
        (s & 0xffff) + (s >> 16)
    }) as u16;
    p[10..12].copy_from_slice(&csum.to_be_bytes());
    p[20..22].copy_from_slice(&1234u16.to_be_bytes());
    p[22..24].copy_from_slice(&5678u16.to_be_bytes());
    p[24..26].copy_from_slice(&((total - 20) as u16).to_be_bytes());
    p[28..32].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[32..].iter_mut().enumerate() {
        *b = (i as u32 ^ seq) as u8;
    }
    p
}

fn seq_of(packet: &[u8]) -> u32 {
    u32::from_be_bytes(packet[28..32].try_into().unwrap())
}

#[derive(Default)]
struct Options {
    vx_psk: Option<[u8; 32]>,
    bt_psk: Option<[u8; 32]>,
    vx_under_load: bool,
    bt_under_load: bool,
}

struct Harness {
    now: Instant,
    vx: Device,
    vx_peer: PeerId,
    bt: Tunn,
    to_vx: VecDeque<Vec<u8>>,
    to_bt: VecDeque<Vec<u8>>,
    vx_got: Vec<Vec<u8>>,
    bt_got: Vec<Vec<u8>>,
    vx_events: Vec<String>,
    vx_errors: Vec<RecvError>,
    bt_errors: Vec<WireGuardError>,
}

impl Harness {
    fn new(opts: Options) -> Self {
        let now = Instant::now();
        let mut config = DeviceConfig::new(VX_KEY);
        if opts.vx_under_load {
            config.under_load_threshold = 0;
        }
        let mut vx = Device::new(config, OsRng, now, SystemTime::now());
        let bt_public = x25519::PublicKey::from(&x25519::StaticSecret::from(BT_KEY));
        let vx_peer = vx
            .add_peer(PeerConfig {
                public_key: bt_public.to_bytes(),
                preshared_key: opts.vx_psk,
                endpoint: Some(BT_ADDR),
                persistent_keepalive: None,
            })
            .unwrap();
        let rate_limiter = opts.bt_under_load.then(|| Arc::new(RateLimiter::new(&bt_public, 0)));
        let bt = Tunn::new(
            x25519::StaticSecret::from(BT_KEY),
            x25519::PublicKey::from(vx.public_key()),
            opts.bt_psk,
            None,
            7,
            rate_limiter,
        );
        Self {
            now,
            vx,
            vx_peer,
            bt,
            to_vx: VecDeque::new(),
            to_bt: VecDeque::new(),
            vx_got: Vec::new(),
            bt_got: Vec::new(),
            vx_events: Vec::new(),
            vx_errors: Vec::new(),
            bt_errors: Vec::new(),
        }
    }

    fn drain_vx_transmits(&mut self) {
        while let Some(t) = self.vx.poll_transmit() {
            assert_eq!(t.dst, BT_ADDR, "vxwg sends to the peer's endpoint");
            self.to_bt.push_back(t.payload);
        }
    }

    /// vxwg encrypts `packet` for boringtun.
    fn vx_send(&mut self, packet: &[u8]) {
        let mut buf = vec![0u8; HEADROOM + packet.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + packet.len()].copy_from_slice(packet);
        match self.vx.encapsulate(self.vx_peer, &mut buf, packet.len(), self.now).unwrap() {
            Encapsulated::Ready { len, dst } => {
                assert_eq!(dst, BT_ADDR);
                self.to_bt.push_back(buf[..len].to_vec());
            }
            Encapsulated::Staged => {}
        }
        self.drain_vx_transmits();
    }

    /// boringtun encrypts `packet` for vxwg.
    fn bt_send(&mut self, packet: &[u8]) {
        let mut out = vec![0u8; packet.len() + 200];
        match self.bt.encapsulate(packet, &mut out) {
            TunnResult::WriteToNetwork(d) => self.to_vx.push_back(d.to_vec()),
            TunnResult::Done => {}
            TunnResult::Err(e) => self.bt_errors.push(e),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn deliver_to_vx(&mut self, mut datagram: Vec<u8>) -> Result<(), RecvError> {
        let result = match self.vx.decapsulate(BT_ADDR, &mut datagram, self.now) {
            Ok(Received::Packet { peer, packet }) => {
                assert_eq!(peer, self.vx_peer);
                self.vx_got.push(packet.to_vec());
                Ok(())
            }
            Ok(other) => {
                self.vx_events.push(format!("{other:?}"));
                Ok(())
            }
            Err(e) => {
                self.vx_errors.push(e);
                Err(e)
            }
        };
        self.drain_vx_transmits();
        result
    }

    fn deliver_to_bt(&mut self, datagram: &[u8]) {
        let mut out = vec![0u8; 65536];
        let mut first = true;
        loop {
            let input: &[u8] = if first { datagram } else { &[] };
            first = false;
            match self.bt.decapsulate(Some(VX_ADDR.ip()), input, &mut out) {
                TunnResult::Done => break,
                TunnResult::Err(e) => {
                    self.bt_errors.push(e);
                    break;
                }
                TunnResult::WriteToNetwork(d) => self.to_vx.push_back(d.to_vec()),
                TunnResult::WriteToTunnelV4(p, _) => {
                    self.bt_got.push(p.to_vec());
                    break;
                }
                TunnResult::WriteToTunnelV6(p, _) => {
                    self.bt_got.push(p.to_vec());
                    break;
                }
            }
        }
    }

    /// Delivers everything in flight, both ways, until both queues are empty.
    fn pump(&mut self) {
        while !self.to_vx.is_empty() || !self.to_bt.is_empty() {
            while let Some(d) = self.to_bt.pop_front() {
                self.deliver_to_bt(&d);
            }
            while let Some(d) = self.to_vx.pop_front() {
                let _ = self.deliver_to_vx(d);
            }
        }
    }

    /// Moves both clocks forward and runs both sides' timers.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        MockClock::advance(by);
        self.vx.handle_timeout(self.now);
        self.drain_vx_transmits();
        let mut out = vec![0u8; 2048];
        match self.bt.update_timers(&mut out) {
            TunnResult::WriteToNetwork(d) => self.to_vx.push_back(d.to_vec()),
            TunnResult::Err(e) => self.bt_errors.push(e),
            _ => {}
        }
        self.pump();
    }

    fn handshakes(&self) -> u64 {
        self.vx.peer_stats(self.vx_peer).unwrap().handshakes
    }
}

#[test]
fn vxwg_initiates_and_data_flows_both_ways() {
    let mut h = Harness::new(Options::default());
    h.vx_send(&ipv4_packet(1, 100));
    assert_eq!(h.to_bt.len(), 1, "first packet is staged and an initiation goes out");
    assert_eq!(h.to_bt[0].len(), 148);
    h.pump();
    assert_eq!(h.handshakes(), 1);
    assert_eq!(h.bt_got, vec![ipv4_packet(1, 100)], "staged packet delivered after the handshake");
    for seq in 2..50 {
        h.vx_send(&ipv4_packet(seq, seq as usize * 29 % 1400));
        h.bt_send(&ipv4_packet(1000 + seq, seq as usize * 31 % 1400));
    }
    h.pump();
    assert_eq!(h.bt_got.len(), 49);
    assert_eq!(h.vx_got.len(), 48);
    for (i, p) in h.vx_got.iter().enumerate() {
        let seq = 1002 + i as u32;
        assert_eq!(p, &ipv4_packet(seq, seq as usize % 1000 * 31 % 1400));
    }
    assert!(h.vx_errors.is_empty(), "{:?}", h.vx_errors);
    assert!(h.bt_errors.is_empty(), "{:?}", h.bt_errors);
    let stats = h.vx.peer_stats(h.vx_peer).unwrap();
    assert!(stats.rx_bytes > 0 && stats.tx_bytes > 0 && stats.last_handshake.is_some());
}

#[test]
fn boringtun_initiates_and_data_flows_both_ways() {
    let mut h = Harness::new(Options::default());
    h.bt_send(&ipv4_packet(1, 64));
    assert_eq!(h.to_vx.len(), 1);
    h.pump();
    assert_eq!(h.vx_events[0], format!("{:?}", Received::HandshakeInitiation { peer: h.vx_peer }));
    // boringtun confirms the session with a keepalive, then flushes its queue.
    assert_eq!(h.vx_events[1..], [format!("{:?}", Received::Keepalive { peer: h.vx_peer })]);
    assert_eq!(h.vx_got, vec![ipv4_packet(1, 64)]);
    // vxwg as responder may send only once the initiator has confirmed the session (it has now).
    assert!(h.vx.has_session(h.vx_peer, h.now));
    for seq in 2..20 {
        h.vx_send(&ipv4_packet(seq, 1300));
        h.bt_send(&ipv4_packet(seq, 1300));
    }
    h.pump();
    assert_eq!(h.bt_got.len(), 18);
    assert_eq!(h.vx_got.len(), 19);
    assert!(h.vx_errors.is_empty() && h.bt_errors.is_empty(), "{:?} {:?}", h.vx_errors, h.bt_errors);
}

/// Ten minutes of two-way traffic, 20 packets a second each way: sessions roll over at least four
/// times and not one packet is lost or rejected.
fn rekey_over_ten_minutes(vx_starts: bool) {
    let mut h = Harness::new(Options::default());
    let (mut vx_sent, mut bt_sent) = (BTreeSet::new(), BTreeSet::new());
    let step = Duration::from_millis(50);
    let mut seq = 0u32;
    let first = ipv4_packet(seq, 200);
    if vx_starts {
        h.vx_send(&first);
        vx_sent.insert(seq);
    } else {
        h.bt_send(&first);
        bt_sent.insert(seq);
    }
    h.pump();
    let end = h.now + Duration::from_secs(600);
    while h.now < end {
        seq += 1;
        h.vx_send(&ipv4_packet(seq, 200 + (seq as usize % 1000)));
        vx_sent.insert(seq);
        h.bt_send(&ipv4_packet(seq, 200 + (seq as usize % 900)));
        bt_sent.insert(seq);
        h.advance(step);
    }
    h.advance(Duration::from_secs(1));
    let vx_got: BTreeSet<u32> = h.vx_got.iter().map(|p| seq_of(p)).collect();
    let bt_got: BTreeSet<u32> = h.bt_got.iter().map(|p| seq_of(p)).collect();
    assert_eq!(h.vx_got.len(), vx_got.len(), "no duplicates delivered");
    assert_eq!(bt_got, vx_sent, "every packet vxwg sent reached boringtun");
    assert_eq!(vx_got, bt_sent, "every packet boringtun sent reached vxwg");
    assert!(h.vx_errors.is_empty(), "{:?}", h.vx_errors);
    assert!(h.bt_errors.is_empty(), "{:?}", h.bt_errors);
    assert!(h.handshakes() >= 4, "sessions rolled over: {} handshakes", h.handshakes());
}

#[test]
fn rekey_across_ten_minutes_vxwg_initiator() {
    rekey_over_ten_minutes(true);
}

#[test]
fn rekey_across_ten_minutes_boringtun_initiator() {
    rekey_over_ten_minutes(false);
}

#[test]
fn replayed_transport_message_is_rejected() {
    let mut h = Harness::new(Options::default());
    h.vx_send(&ipv4_packet(1, 10));
    h.pump();
    h.bt_send(&ipv4_packet(2, 10));
    let captured = h.to_vx[0].clone();
    h.pump();
    assert_eq!(h.vx_got.len(), 1);
    assert_eq!(h.deliver_to_vx(captured), Err(RecvError::Replay));
    assert_eq!(h.vx_got.len(), 1);
    assert_eq!(h.vx.drop_count(DropReason::Replay), 1);

    // And the other way: boringtun refuses a replay of ours.
    h.vx_send(&ipv4_packet(3, 10));
    let ours = h.to_bt[0].clone();
    h.pump();
    h.deliver_to_bt(&ours);
    assert_eq!(h.bt_got.len(), 2);
    assert!(matches!(h.bt_errors.as_slice(), [WireGuardError::DuplicateCounter]), "{:?}", h.bt_errors);
}

/// A run vxwg planned and sealed, then held, as a worker descheduled before its send would hold
/// it, while more than boringtun's 1,024-counter replay window went out to the same peer.
/// Sent as sealed, boringtun refuses it as too old. Checked and resealed before the send (what
/// the workers do, `engine::reseal_stale`), boringtun takes it.
#[test]
fn a_run_held_past_boringtuns_replay_window_goes_through_only_when_resealed() {
    let mut h = Harness::new(Options::default());
    h.vx_send(&ipv4_packet(1, 100));
    h.pump();
    assert_eq!(h.bt_got.len(), 1, "handshake done, first packet delivered");
    let held = |h: &mut Harness, seq: u32| -> (SendBlock, Vec<u8>) {
        let packet = ipv4_packet(seq, 200);
        let mut buf = vec![0u8; HEADROOM + packet.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + packet.len()].copy_from_slice(&packet);
        let plan = h.vx.plan_send(h.vx_peer, &[buf.as_slice()], &[packet.len()], h.now).unwrap().unwrap();
        let len = plan.block.seal(0, &mut buf, packet.len()).unwrap();
        buf.truncate(len);
        (plan.block, buf)
    };
    let (as_sealed, as_sealed_message) = held(&mut h, 2);
    let (mut resealed, mut resealed_message) = held(&mut h, 3);
    for seq in 4..4 + 1100 {
        h.vx_send(&ipv4_packet(seq, 64));
    }
    h.pump();
    assert_eq!(h.bt_got.len(), 1101);
    assert!(h.bt_errors.is_empty(), "{:?}", h.bt_errors);
    assert!(as_sealed.is_stale() && resealed.is_stale(), "{} counters behind", as_sealed.counters_behind());

    h.deliver_to_bt(&as_sealed_message);
    assert!(matches!(h.bt_errors.as_slice(), [WireGuardError::InvalidCounter]), "{:?}", h.bt_errors);
    assert_eq!(h.bt_got.len(), 1101, "refused as too far behind");

    let old = resealed.renew().expect("far from the message limit");
    assert!(resealed.reseal(&old, 0, &mut resealed_message));
    h.deliver_to_bt(&resealed_message);
    assert_eq!(h.bt_errors.len(), 1, "{:?}", h.bt_errors);
    assert_eq!(h.bt_got.last(), Some(&ipv4_packet(3, 200)), "the resealed packet arrived intact");
}

#[test]
fn replayed_initiation_is_rejected() {
    let mut h = Harness::new(Options::default());
    h.bt_send(&ipv4_packet(1, 10));
    let initiation = h.to_vx[0].clone();
    h.pump();
    assert_eq!(h.handshakes(), 1);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.deliver_to_vx(initiation), Err(RecvError::StaleTimestamp));
    assert!(h.to_bt.is_empty(), "no response to a replayed initiation");
    // The session it would have replaced still carries traffic.
    h.bt_send(&ipv4_packet(2, 10));
    h.pump();
    assert_eq!(h.vx_got.len(), 2);
}

#[test]
fn cookie_round_trip_when_vxwg_is_under_load() {
    let mut h = Harness::new(Options { vx_under_load: true, ..Default::default() });
    h.bt_send(&ipv4_packet(1, 10));
    let first = h.to_vx.pop_front().unwrap();
    h.deliver_to_vx(first).unwrap();
    assert_eq!(h.vx_events, vec!["CookieReplySent".to_string()]);
    let reply = h.to_bt.pop_front().unwrap();
    assert_eq!(reply.len(), 64);
    h.deliver_to_bt(&reply);
    assert!(h.bt_errors.is_empty(), "boringtun accepts our cookie reply: {:?}", h.bt_errors);
    // boringtun retries with MAC2 = MAC(cookie, ...).
    let mut out = [0u8; 256];
    let TunnResult::WriteToNetwork(retry) = h.bt.format_handshake_initiation(&mut out, true) else { panic!() };
    let retry = retry.to_vec();
    assert_ne!(&retry[132..], &[0u8; 16], "boringtun used the cookie");
    h.deliver_to_vx(retry).unwrap();
    h.pump();
    assert_eq!(h.vx_got, vec![ipv4_packet(1, 10)]);
    assert!(h.vx.has_session(h.vx_peer, h.now));
}

#[test]
fn cookie_round_trip_when_boringtun_is_under_load() {
    let mut h = Harness::new(Options { bt_under_load: true, ..Default::default() });
    h.vx_send(&ipv4_packet(1, 10));
    h.pump();
    assert_eq!(h.vx_events, vec![format!("{:?}", Received::CookieReply { peer: h.vx_peer })]);
    assert_eq!(h.handshakes(), 0);
    // Our retransmission after REKEY_TIMEOUT carries MAC2 and gets through.
    h.advance(Duration::from_millis(5400));
    assert_eq!(h.handshakes(), 1);
    assert_eq!(h.bt_got, vec![ipv4_packet(1, 10)]);
    assert!(h.bt_errors.is_empty() && h.vx_errors.is_empty(), "{:?} {:?}", h.bt_errors, h.vx_errors);
}

fn flipped(msg: &[u8], at: usize) -> Vec<u8> {
    let mut m = msg.to_vec();
    m[at] ^= 0x01;
    m
}

#[test]
fn corrupted_initiation_is_rejected_at_every_byte() {
    // Not under load: every byte MAC1 covers, and MAC1 itself, is checked.
    let mut h = Harness::new(Options::default());
    h.bt_send(&ipv4_packet(1, 10));
    let initiation = h.to_vx.pop_front().unwrap();
    for at in 0..132 {
        assert!(h.deliver_to_vx(flipped(&initiation, at)).is_err(), "byte {at} corrupted but accepted");
    }
    assert!(h.to_bt.is_empty());
    h.deliver_to_vx(initiation).unwrap();
    assert_eq!(h.to_bt.len(), 1, "the genuine initiation is still answered");

    // Under load MAC2 counts too: a corrupted MAC2 earns only another cookie reply.
    let mut h = Harness::new(Options { vx_under_load: true, ..Default::default() });
    h.bt_send(&ipv4_packet(1, 10));
    let first = h.to_vx.pop_front().unwrap();
    h.deliver_to_vx(first).unwrap();
    let reply = h.to_bt.pop_front().unwrap();
    h.deliver_to_bt(&reply);
    let mut out = [0u8; 256];
    let TunnResult::WriteToNetwork(retry) = h.bt.format_handshake_initiation(&mut out, true) else { panic!() };
    let retry = retry.to_vec();
    for at in 0..148 {
        let before = h.vx_events.len();
        let _ = h.deliver_to_vx(flipped(&retry, at));
        let accepted = h.vx_events[before..].iter().any(|e| e.starts_with("HandshakeInitiation"));
        assert!(!accepted, "byte {at} corrupted but the initiation was accepted");
        h.to_bt.clear();
    }
    h.deliver_to_vx(retry).unwrap();
    assert!(h.vx_events.last().unwrap().starts_with("HandshakeInitiation"));
}

#[test]
fn corrupted_response_is_rejected_at_every_byte_and_the_genuine_one_still_works() {
    let mut h = Harness::new(Options::default());
    h.vx_send(&ipv4_packet(1, 10));
    let initiation = h.to_bt.pop_front().unwrap();
    h.deliver_to_bt(&initiation);
    let response = h.to_vx.pop_front().unwrap();
    assert_eq!(response.len(), 92);
    // MAC2 (bytes 76..92) only matters under load.
    for at in 0..76 {
        assert!(h.deliver_to_vx(flipped(&response, at)).is_err(), "byte {at} corrupted but accepted");
    }
    assert_eq!(h.handshakes(), 0);
    h.deliver_to_vx(response).unwrap();
    assert_eq!(h.handshakes(), 1, "forged responses did not destroy the handshake state");
    h.pump();
    assert_eq!(h.bt_got, vec![ipv4_packet(1, 10)]);
}

#[test]
fn corrupted_transport_message_is_rejected_at_every_byte() {
    let mut h = Harness::new(Options::default());
    h.vx_send(&ipv4_packet(1, 10));
    h.pump();
    for size in [0usize, 100, 1400] {
        h.bt_send(&ipv4_packet(7, size));
        let data = h.to_vx.pop_front().unwrap();
        for at in 0..data.len() {
            assert!(h.deliver_to_vx(flipped(&data, at)).is_err(), "size {size}: byte {at} corrupted but accepted");
        }
        let n = h.vx_got.len();
        h.deliver_to_vx(data).unwrap();
        assert_eq!(h.vx_got.len(), n + 1);
    }
    // A truncated message, too.
    h.bt_send(&ipv4_packet(8, 100));
    let data = h.to_vx.pop_front().unwrap();
    for cut in 0..data.len() {
        assert!(h.deliver_to_vx(data[..cut].to_vec()).is_err(), "truncated at {cut} but accepted");
    }
}

#[test]
fn corrupted_cookie_reply_is_rejected_at_every_byte() {
    let mut h = Harness::new(Options { bt_under_load: true, ..Default::default() });
    h.vx_send(&ipv4_packet(1, 10));
    let initiation = h.to_bt.pop_front().unwrap();
    h.deliver_to_bt(&initiation);
    let reply = h.to_vx.pop_front().unwrap();
    assert_eq!(reply.len(), 64);
    for at in 0..64 {
        assert!(h.deliver_to_vx(flipped(&reply, at)).is_err(), "byte {at} corrupted but accepted");
    }
    h.deliver_to_vx(reply).unwrap();
    assert_eq!(h.vx_events, vec![format!("{:?}", Received::CookieReply { peer: h.vx_peer })]);
}

#[test]
fn wrong_preshared_key_fails_the_handshake_either_way() {
    let psk = Some([0x33; 32]);
    let other = Some([0x44; 32]);
    // vxwg initiates: boringtun answers, and vxwg refuses the response.
    let mut h = Harness::new(Options { vx_psk: psk, bt_psk: other, ..Default::default() });
    h.vx_send(&ipv4_packet(1, 10));
    h.pump();
    assert!(h.vx_errors.iter().any(|e| matches!(e, RecvError::Handshake(_))), "{:?}", h.vx_errors);
    assert_eq!(h.handshakes(), 0);
    assert!(!h.vx.has_session(h.vx_peer, h.now));
    assert!(h.bt_got.is_empty());

    // boringtun initiates: vxwg answers, and boringtun refuses the response.
    let mut h = Harness::new(Options { vx_psk: psk, bt_psk: None, ..Default::default() });
    h.bt_send(&ipv4_packet(1, 10));
    h.pump();
    assert!(matches!(h.bt_errors.as_slice(), [WireGuardError::InvalidAeadTag]), "{:?}", h.bt_errors);
    assert!(h.vx_got.is_empty());
    assert!(!h.vx.has_session(h.vx_peer, h.now));

    // Matching keys work.
    let mut h = Harness::new(Options { vx_psk: psk, bt_psk: psk, ..Default::default() });
    h.vx_send(&ipv4_packet(1, 10));
    h.pump();
    assert_eq!(h.bt_got.len(), 1);
}
