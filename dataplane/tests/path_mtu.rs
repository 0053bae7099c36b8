//! `PathMtuProbe` reads each destination's path MTU through one socket per family, connected
//! afresh for every read. These tests give destinations routes of different MTUs in a namespace
//! of their own (a veth pair inside it; nothing is sent: connecting a UDP socket only looks the
//! route up) and check that every read is the one destination's, in any order, per family, per
//! mark, after a read that failed, and after the node's source address changed.

mod common;

use std::net::SocketAddr;

use common::{require, Netns};
use vxwg_dataplane::io::udp::{path_mtu, PathMtuProbe};

fn at(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A namespace with a veth pair whose routes carry different MTUs: 10.9.1.0/24 1300,
/// 10.9.2.0/24 1400, fd00:1::/64 1280, fd00:2::/64 1350, and, for packets marked 7 (table 100),
/// 10.9.1.0/24 1200. No default route.
fn routed() -> Netns {
    let ns = Netns::new("vxwgpmtu");
    ns.ip("link add pm0 type veth peer name pm1");
    ns.ip("link set pm0 up");
    ns.ip("link set pm1 up");
    ns.ip("addr add 10.9.0.1/24 dev pm0");
    ns.ip("addr add fd00::1/64 dev pm0 nodad");
    ns.ip("route add 10.9.1.0/24 dev pm0 mtu 1300");
    ns.ip("route add 10.9.2.0/24 dev pm0 mtu 1400");
    ns.ip("-6 route add fd00:1::/64 dev pm0 mtu 1280");
    ns.ip("-6 route add fd00:2::/64 dev pm0 mtu 1350");
    ns.ip("route add 10.9.1.0/24 dev pm0 mtu 1200 table 100");
    ns.ip("rule add fwmark 7 table 100");
    ns
}

#[test]
fn one_probe_reads_each_destination_in_turn() {
    if !require(&["ip"]) {
        return;
    }
    let ns = routed();
    let reads = ns.run(|| {
        let mut probe = PathMtuProbe::new(0);
        ["10.9.1.5:51820", "10.9.2.5:51820", "10.9.1.6:51820", "[fd00:1::5]:51820", "[fd00:2::5]:51820", "10.9.2.9:1"]
            .map(|d| probe.read(at(d)).unwrap())
    });
    assert_eq!(reads, [1300, 1400, 1300, 1280, 1350, 1400]);
    // The one-off function agrees.
    assert_eq!(ns.run(|| path_mtu(at("10.9.2.5:51820"), 0).unwrap()), 1400);
}

#[test]
fn a_marked_probe_follows_the_policy_route() {
    if !require(&["ip"]) {
        return;
    }
    let ns = routed();
    let (marked, unmarked) = ns.run(|| {
        let mut marked = PathMtuProbe::new(7);
        let mut unmarked = PathMtuProbe::new(0);
        (marked.read(at("10.9.1.5:51820")).unwrap(), unmarked.read(at("10.9.1.5:51820")).unwrap())
    });
    assert_eq!((marked, unmarked), (1200, 1300), "mark 7 takes table 100's route");
}

#[test]
fn a_failed_read_does_not_lend_its_answer_to_the_next() {
    if !require(&["ip"]) {
        return;
    }
    let ns = routed();
    ns.run(|| {
        let mut probe = PathMtuProbe::new(0);
        assert_eq!(probe.read(at("10.9.1.5:51820")).unwrap(), 1300);
        // No route: an error, not the previous destination's MTU.
        let err = probe.read(at("192.0.2.1:51820")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");
        assert_eq!(probe.read(at("10.9.2.5:51820")).unwrap(), 1400);
        assert!(probe.read(at("[2001:db8::1]:51820")).is_err(), "no IPv6 route either");
        assert_eq!(probe.read(at("[fd00:2::5]:51820")).unwrap(), 1350);
    });
}

/// UDP sockets bound in the calling thread's namespace (IPv4 and IPv6).
fn bound_udp_sockets() -> usize {
    ["udp", "udp6"]
        .iter()
        .map(|t| std::fs::read_to_string(format!("/proc/thread-self/net/{t}")).unwrap().lines().skip(1).count())
        .sum()
}

#[test]
fn reads_survive_a_change_of_source_address_and_hold_no_port() {
    if !require(&["ip"]) {
        return;
    }
    let ns = routed();
    let mut probe = PathMtuProbe::new(0);
    let (reads, bound) = ns.run(|| {
        let reads = (probe.read(at("10.9.1.5:51820")).unwrap(), probe.read(at("[fd00:1::5]:51820")).unwrap());
        (reads, bound_udp_sockets())
    });
    assert_eq!(reads, (1300, 1280));
    assert_eq!(bound, 0, "between reads the probe's sockets hold no port, so nothing can reach them");
    // The node's address changes (the new one first: the device's last address going would
    // take its routes along). The source the first read picked must not stick to the probe.
    ns.ip("addr add 10.8.0.2/24 dev pm0");
    ns.ip("addr del 10.9.0.1/24 dev pm0");
    assert_eq!(ns.run(|| probe.read(at("10.9.2.5:51820")).unwrap()), 1400);
    assert_eq!(ns.run(|| probe.read(at("10.9.1.5:51820")).unwrap()), 1300);
}
