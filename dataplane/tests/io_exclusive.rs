//! The multi-core IO drivers must not share what belongs to another process: a multi-queue TUN
//! device another process holds open, or a UDP port another reuseport group holds. Before the
//! multi-core change both were refused by the kernel (EBUSY, EADDRINUSE); with IFF_MULTI_QUEUE
//! and SO_REUSEPORT the kernel would let a second daemon join, so the drivers must refuse.

mod common;

use std::io;

use common::{require, Netns};
use vxwg_dataplane::io::{Offload, Tun, UdpSocket};

#[test]
fn a_multi_queue_device_in_use_is_not_joined() {
    if !require(&["ip"]) {
        return;
    }
    let ns = Netns::new("vxwgmqx");
    let first = ns.run(|| Tun::create_queues("mqx0", 2, true)).unwrap();
    let offload = first[0].offload();
    assert_ne!(offload, Offload::None);
    // A second daemon of the same name, with or without offloads: joining would add its queues
    // to the device, which the kernel then hands part of the first one's flows.
    for with_offload in [false, true] {
        let e = ns.run(|| Tun::create_queues("mqx0", 1, with_offload)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy, "{e}");
        assert!(e.to_string().contains("mqx0") && e.to_string().contains("exists"), "{e}");
    }
    // The first owner's device is as it was: its queues still carry the vnet header.
    let show = ns.ip("-d link show mqx0");
    assert!(
        show.contains("vnet_hdr on") && show.contains("numqueues 2 "),
        "the first owner's device is intact: {show}"
    );
    drop(first);
}

#[test]
fn the_queues_of_a_name_pattern_share_one_device() {
    if !require(&["ip"]) {
        return;
    }
    let ns = Netns::new("vxwgmqp");
    let queues = ns.run(|| Tun::create_queues("mqp%d", 2, false)).unwrap();
    let name = queues[0].name().to_string();
    assert!(!name.contains('%'), "the kernel resolved the pattern: {name}");
    assert_eq!(queues[1].name(), name, "queue 1 attached to queue 0's device, not a new one");
    let show = ns.ip(&format!("-d link show {name}"));
    assert!(show.contains("numqueues 2 "), "{show}");
}

#[test]
fn a_port_held_by_another_group_is_not_joined() {
    let first = UdpSocket::bind_group(0, 2).unwrap();
    let port = first[0].local_port().unwrap();
    for n in [1, 2, 3] {
        let e = UdpSocket::bind_group(port, n).err().map(|e| e.kind());
        assert_eq!(e, Some(io::ErrorKind::AddrInUse), "a group of {n} on port {port} held by another group");
    }
    // Still ours alone once the first group is gone. A process another test thread is spawning
    // holds copies of every descriptor between its fork and its exec (close-on-exec acts only
    // then), so the port may stay taken for a moment after the drop: retry briefly.
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let again = loop {
        match UdpSocket::bind_group(port, 2) {
            Ok(again) => break again,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => panic!("port {port} after the first group was dropped: {e}"),
        }
    };
    assert_eq!(again[1].local_port().unwrap(), port);
}
