//! Answers address resolution locally from the [`Fdb`] neighbour table, so that ARP requests and
//! IPv6 Neighbor Solicitations from pods never cross the WAN.
//!
//! Both responders take a frame from the pod side (TAP, or the synthetic Ethernet layer in front
//! of a TUN device), write the answer frame into `out` and return its length; `None` means "no
//! answer" — the frame is not a request this responder handles, it is malformed, the target is
//! not in the neighbour table, or `out` is too small. They never panic and never allocate.
//!
//! Answers come from the neighbour's MAC, as if the neighbour itself had answered. Frames are not
//! padded to the 60-octet Ethernet minimum (TAP devices and the kernel do not need it).

use std::net::{IpAddr, Ipv6Addr};

use super::arp;
use super::fdb::Fdb;
use crate::wire::checksum;
use crate::wire::ethernet::{self, EtherType, EthernetAddress};
use crate::wire::ipv4::IpProtocol;
use crate::wire::ipv6;
use crate::wire::vxlan::Vni;

/// Length of the frame [`answer_arp`] writes.
pub const ARP_REPLY_LEN: usize = ethernet::HEADER_LEN + arp::PACKET_LEN;

/// ICMPv6 Neighbor Solicitation.
const ICMPV6_NS: u8 = 135;
/// ICMPv6 Neighbor Advertisement.
const ICMPV6_NA: u8 = 136;
/// NS/NA header: type, code, checksum, 4 octets (reserved or flags), 16-octet target.
const ND_LEN: usize = 24;
/// NDP option: source link-layer address.
const OPT_SOURCE_LLA: u8 = 1;
/// NDP option: target link-layer address.
const OPT_TARGET_LLA: u8 = 2;
/// NA flags (first octet): Solicited, Override.
const NA_FLAG_SOLICITED: u8 = 0x40;
const NA_FLAG_OVERRIDE: u8 = 0x20;
/// The ICMPv6 part of the advertisement [`answer_ndp`] writes: header, target, TLLA option.
const NA_ICMP_LEN: usize = ND_LEN + 8;
/// Length of the frame [`answer_ndp`] writes.
pub const NA_FRAME_LEN: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN + NA_ICMP_LEN;

/// Builds the ARP reply to an ARP request (in an Ethernet frame) whose target IPv4 address is in
/// `fdb`'s neighbour table for `vni`, into `out`; returns its length ([`ARP_REPLY_LEN`]).
///
/// The reply goes to the requester (Ethernet and ARP target = the request's sender) from the
/// neighbour's MAC. Gratuitous requests (sender IP = target IP) are not answered.
pub fn answer_arp(frame: &[u8], fdb: &Fdb, vni: Vni, out: &mut [u8]) -> Option<usize> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    if eth.ethertype() != EtherType::ARP {
        return None;
    }
    let request = arp::Repr::parse(&arp::Packet::new_unchecked(eth.payload())).ok()?;
    if request.operation != arp::Operation::REQUEST || request.sender_ip == request.target_ip {
        return None;
    }
    let mac = fdb.lookup_neighbour(vni, IpAddr::V4(request.target_ip))?;
    let out = out.get_mut(..ARP_REPLY_LEN)?;
    let reply = arp::Repr {
        operation: arp::Operation::REPLY,
        sender_hw: mac,
        sender_ip: request.target_ip,
        target_hw: request.sender_hw,
        target_ip: request.sender_ip,
    };
    let (header, payload) = out.split_at_mut(ethernet::HEADER_LEN);
    ethernet::Repr { src: mac, dst: request.sender_hw, ethertype: EtherType::ARP }
        .emit(&mut ethernet::Frame::new_unchecked(header))
        .ok()?;
    reply.emit(payload).ok()?;
    Some(ARP_REPLY_LEN)
}

/// The ICMPv6 checksum of `icmp` (checksum field included) for `src` → `dst`: zero when valid.
fn icmpv6_sum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
    let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::ICMPV6.0, icmp.len() as u32);
    checksum::finish(checksum::combine(&[pseudo, checksum::sum(icmp)]))
}

/// The source link-layer address option of a solicitation, `Ok(None)` if absent, `Err` for a
/// malformed option list (an option of length zero or running past the end, RFC 4861 7.1.1).
fn source_lla(mut options: &[u8]) -> Result<Option<EthernetAddress>, ()> {
    let mut found = None;
    while !options.is_empty() {
        let (&kind, &len) = options.first().zip(options.get(1)).ok_or(())?;
        let len = usize::from(len) * 8;
        if len == 0 || len > options.len() {
            return Err(());
        }
        if kind == OPT_SOURCE_LLA && len == 8 && found.is_none() {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&options[2..8]);
            found = Some(EthernetAddress(mac));
        }
        options = &options[len..];
    }
    Ok(found)
}

/// Builds the Neighbor Advertisement answering an IPv6 Neighbor Solicitation (in an Ethernet
/// frame) whose target is in `fdb`'s neighbour table for `vni`, into `out`; returns its length
/// ([`NA_FRAME_LEN`]).
///
/// The solicitation must pass RFC 4861 section 7.1.1 validation: hop limit 255, ICMPv6 type 135
/// code 0, a valid checksum, a non-multicast target, well-formed options, and no source
/// link-layer address option when the source is unspecified. IPv6 extension headers are not
/// followed (no answer).
///
/// The advertisement comes from the target address and the neighbour's MAC, with hop limit 255,
/// the Override flag, a target link-layer address option and a valid checksum. It goes to the
/// solicitation's source with the Solicited flag (to the source link-layer address if given,
/// else the frame's source MAC), or, for duplicate address detection (unspecified source), to
/// all-nodes (ff02::1) without it.
pub fn answer_ndp(frame: &[u8], fdb: &Fdb, vni: Vni, out: &mut [u8]) -> Option<usize> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    if eth.ethertype() != EtherType::IPV6 {
        return None;
    }
    let ip = ipv6::Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::ICMPV6 || ip.hop_limit() != 255 {
        return None;
    }
    let icmp = ip.payload();
    if icmp.len() < ND_LEN || icmp[0] != ICMPV6_NS || icmp[1] != 0 {
        return None;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if icmpv6_sum(src, dst, icmp) != 0 {
        return None;
    }
    let mut target = [0u8; 16];
    target.copy_from_slice(&icmp[8..24]);
    let target = Ipv6Addr::from(target);
    if target.is_multicast() {
        return None;
    }
    let slla = source_lla(&icmp[ND_LEN..]).ok()?;
    let dad = src.is_unspecified();
    if dad && slla.is_some() {
        return None;
    }
    let mac = fdb.lookup_neighbour(vni, IpAddr::V6(target))?;

    let (reply_dst, eth_dst, flags) = if dad {
        (Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), EthernetAddress([0x33, 0x33, 0, 0, 0, 1]), NA_FLAG_OVERRIDE)
    } else {
        (src, slla.unwrap_or(eth.src_addr()), NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE)
    };

    let out = out.get_mut(..NA_FRAME_LEN)?;
    let (header, rest) = out.split_at_mut(ethernet::HEADER_LEN);
    ethernet::Repr { src: mac, dst: eth_dst, ethertype: EtherType::IPV6 }
        .emit(&mut ethernet::Frame::new_unchecked(header))
        .ok()?;
    ipv6::Repr {
        src: target,
        dst: reply_dst,
        next_header: IpProtocol::ICMPV6,
        payload_len: NA_ICMP_LEN,
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut ipv6::Packet::new_unchecked(&mut *rest))
    .ok()?;
    let na = &mut rest[ipv6::HEADER_LEN..];
    na[0] = ICMPV6_NA;
    na[1] = 0;
    na[2..4].fill(0);
    na[4] = flags;
    na[5..8].fill(0);
    na[8..24].copy_from_slice(&target.octets());
    na[24] = OPT_TARGET_LLA;
    na[25] = 1;
    na[26..32].copy_from_slice(&mac.0);
    let sum = icmpv6_sum(target, reply_dst, na);
    na[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(NA_FRAME_LEN)
}
