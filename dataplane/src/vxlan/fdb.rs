//! The forwarding database: per VNI, MAC → remote VTEP, IP → MAC neighbours, and what to do with
//! broadcast, multicast and unknown-unicast (BUM) frames.
//!
//! # No learning, by design
//! Entries are static: they come from configuration and, later, from the control crate, which
//! knows every pod's MAC, IP and node. The data path never learns source MACs from received
//! frames (a peer cannot poison the table) and address resolution is answered locally by
//! [`responder`](super::responder), so nothing needs to flood across the WAN. BUM frames that
//! still occur are either replicated head-end to the VNI's flood list, or dropped, per VNI
//! ([`FloodPolicy`]).
//!
//! Inserts allocate (they are configuration); lookups do not.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::wire::ethernet::EthernetAddress;
use crate::wire::vxlan::Vni;

/// What to do with broadcast, multicast and unknown-unicast frames of a VNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloodPolicy {
    /// Send one copy to each remote VTEP in the VNI's flood list.
    HeadEndReplication,
    /// Drop them (the default: with local ARP/NDP answers, nothing should need flooding).
    #[default]
    Drop,
}

/// Where a frame goes, from [`Fdb::forward`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward<'a> {
    /// To the single remote VTEP that owns the destination MAC.
    Unicast(IpAddr),
    /// A copy to each of these remote VTEPs (head-end replication). Never empty.
    Flood(&'a [IpAddr]),
    /// Nowhere: unknown VNI, or BUM traffic under [`FloodPolicy::Drop`] or with an empty flood
    /// list.
    Drop,
}

#[derive(Debug, Clone, Default)]
struct Segment {
    macs: HashMap<EthernetAddress, IpAddr>,
    neighbours: HashMap<IpAddr, EthernetAddress>,
    flood: Vec<IpAddr>,
    policy: FloodPolicy,
}

/// The forwarding database of every VNI this node takes part in.
#[derive(Debug, Clone, Default)]
pub struct Fdb {
    segments: HashMap<Vni, Segment>,
}

impl Fdb {
    /// An empty database: every lookup misses, every frame is dropped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the BUM policy of `vni` (creating the VNI if needed).
    pub fn set_flood_policy(&mut self, vni: Vni, policy: FloodPolicy) {
        self.segments.entry(vni).or_default().policy = policy;
    }

    /// The BUM policy of `vni`, or `None` for a VNI with no entries.
    pub fn flood_policy(&self, vni: Vni) -> Option<FloodPolicy> {
        self.segments.get(&vni).map(|s| s.policy)
    }

    /// Maps `mac` in `vni` to the remote VTEP `vtep`, returning the VTEP it replaced.
    pub fn insert_mac(&mut self, vni: Vni, mac: EthernetAddress, vtep: IpAddr) -> Option<IpAddr> {
        self.segments.entry(vni).or_default().macs.insert(mac, vtep)
    }

    /// Removes `mac` from `vni`, returning its VTEP.
    pub fn remove_mac(&mut self, vni: Vni, mac: EthernetAddress) -> Option<IpAddr> {
        self.segments.get_mut(&vni)?.macs.remove(&mac)
    }

    /// The remote VTEP that owns `mac` in `vni`.
    pub fn lookup_mac(&self, vni: Vni, mac: EthernetAddress) -> Option<IpAddr> {
        self.segments.get(&vni)?.macs.get(&mac).copied()
    }

    /// Records that `ip` in `vni` is at `mac` (answered locally by ARP/NDP), returning the MAC it
    /// replaced.
    pub fn insert_neighbour(&mut self, vni: Vni, ip: IpAddr, mac: EthernetAddress) -> Option<EthernetAddress> {
        self.segments.entry(vni).or_default().neighbours.insert(ip, mac)
    }

    /// Removes the neighbour entry for `ip` in `vni`, returning its MAC.
    pub fn remove_neighbour(&mut self, vni: Vni, ip: IpAddr) -> Option<EthernetAddress> {
        self.segments.get_mut(&vni)?.neighbours.remove(&ip)
    }

    /// The MAC of `ip` in `vni`.
    pub fn lookup_neighbour(&self, vni: Vni, ip: IpAddr) -> Option<EthernetAddress> {
        self.segments.get(&vni)?.neighbours.get(&ip).copied()
    }

    /// Adds `vtep` to the flood list of `vni`; returns false if it was already there.
    pub fn add_flood(&mut self, vni: Vni, vtep: IpAddr) -> bool {
        let flood = &mut self.segments.entry(vni).or_default().flood;
        if flood.contains(&vtep) {
            return false;
        }
        flood.push(vtep);
        true
    }

    /// Removes `vtep` from the flood list of `vni`; returns whether it was there.
    pub fn remove_flood(&mut self, vni: Vni, vtep: IpAddr) -> bool {
        let Some(segment) = self.segments.get_mut(&vni) else {
            return false;
        };
        let before = segment.flood.len();
        segment.flood.retain(|v| *v != vtep);
        segment.flood.len() != before
    }

    /// The flood list of `vni` (empty for an unknown VNI), whatever the policy.
    pub fn flood_list(&self, vni: Vni) -> &[IpAddr] {
        self.segments.get(&vni).map_or(&[], |s| &s.flood[..])
    }

    /// Removes every entry of `vni`.
    pub fn remove_vni(&mut self, vni: Vni) {
        self.segments.remove(&vni);
    }

    /// Where a frame to `dst` in `vni` goes: the owning VTEP for a known unicast MAC; for
    /// broadcast, multicast and unknown unicast, the flood list under
    /// [`FloodPolicy::HeadEndReplication`], else [`Forward::Drop`].
    pub fn forward(&self, vni: Vni, dst: EthernetAddress) -> Forward<'_> {
        let Some(segment) = self.segments.get(&vni) else {
            return Forward::Drop;
        };
        if dst.is_unicast() {
            if let Some(vtep) = segment.macs.get(&dst) {
                return Forward::Unicast(*vtep);
            }
        }
        match segment.policy {
            FloodPolicy::HeadEndReplication if !segment.flood.is_empty() => Forward::Flood(&segment.flood),
            _ => Forward::Drop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vni(v: u32) -> Vni {
        Vni::new(v).unwrap()
    }
    const MAC_A: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0xa]);
    const MAC_B: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0xb]);

    #[test]
    fn mac_table_per_vni() {
        let mut fdb = Fdb::new();
        let v1: IpAddr = "198.51.100.1".parse().unwrap();
        let v2: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(fdb.insert_mac(vni(1), MAC_A, v1), None);
        assert_eq!(fdb.insert_mac(vni(2), MAC_A, v2), None);
        assert_eq!(fdb.lookup_mac(vni(1), MAC_A), Some(v1));
        assert_eq!(fdb.lookup_mac(vni(2), MAC_A), Some(v2));
        assert_eq!(fdb.lookup_mac(vni(3), MAC_A), None);
        assert_eq!(fdb.lookup_mac(vni(1), MAC_B), None);
        assert_eq!(fdb.insert_mac(vni(1), MAC_A, v2), Some(v1));
        assert_eq!(fdb.forward(vni(1), MAC_A), Forward::Unicast(v2));
        assert_eq!(fdb.remove_mac(vni(1), MAC_A), Some(v2));
        assert_eq!(fdb.remove_mac(vni(1), MAC_A), None);
        assert_eq!(fdb.remove_mac(vni(9), MAC_A), None);
        assert_eq!(fdb.lookup_mac(vni(1), MAC_A), None);
    }

    #[test]
    fn neighbour_table() {
        let mut fdb = Fdb::new();
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(fdb.insert_neighbour(vni(1), ip, MAC_A), None);
        assert_eq!(fdb.lookup_neighbour(vni(1), ip), Some(MAC_A));
        assert_eq!(fdb.lookup_neighbour(vni(2), ip), None);
        assert_eq!(fdb.insert_neighbour(vni(1), ip, MAC_B), Some(MAC_A));
        assert_eq!(fdb.remove_neighbour(vni(1), ip), Some(MAC_B));
        assert_eq!(fdb.lookup_neighbour(vni(1), ip), None);
    }

    #[test]
    fn flood_list_and_policy() {
        let mut fdb = Fdb::new();
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        assert_eq!(fdb.flood_list(vni(5)), &[] as &[IpAddr]);
        assert_eq!(fdb.flood_policy(vni(5)), None);
        assert!(fdb.add_flood(vni(5), a));
        assert!(fdb.add_flood(vni(5), b));
        assert!(!fdb.add_flood(vni(5), a), "no duplicates");
        assert_eq!(fdb.flood_list(vni(5)), &[a, b]);
        // Default policy drops BUM traffic even with a flood list.
        assert_eq!(fdb.flood_policy(vni(5)), Some(FloodPolicy::Drop));
        assert_eq!(fdb.forward(vni(5), EthernetAddress::BROADCAST), Forward::Drop);
        fdb.set_flood_policy(vni(5), FloodPolicy::HeadEndReplication);
        assert_eq!(fdb.forward(vni(5), EthernetAddress::BROADCAST), Forward::Flood(&[a, b]));
        // Multicast and unknown unicast flood too; a known unicast MAC does not.
        let mcast = EthernetAddress([0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(fdb.forward(vni(5), mcast), Forward::Flood(&[a, b]));
        assert_eq!(fdb.forward(vni(5), MAC_A), Forward::Flood(&[a, b]));
        fdb.insert_mac(vni(5), MAC_A, b);
        assert_eq!(fdb.forward(vni(5), MAC_A), Forward::Unicast(b));
        // A multicast MAC entry is never used for unicast forwarding.
        fdb.insert_mac(vni(5), mcast, a);
        assert_eq!(fdb.forward(vni(5), mcast), Forward::Flood(&[a, b]));
        assert!(fdb.remove_flood(vni(5), a));
        assert!(!fdb.remove_flood(vni(5), a));
        assert!(!fdb.remove_flood(vni(6), a));
        assert_eq!(fdb.forward(vni(5), EthernetAddress::BROADCAST), Forward::Flood(&[b]));
        assert!(fdb.remove_flood(vni(5), b));
        assert_eq!(fdb.forward(vni(5), EthernetAddress::BROADCAST), Forward::Drop, "empty list drops");
        // Unknown VNI drops everything.
        assert_eq!(fdb.forward(vni(6), MAC_A), Forward::Drop);
        fdb.remove_vni(vni(5));
        assert_eq!(fdb.forward(vni(5), MAC_A), Forward::Drop);
        assert_eq!(fdb.flood_policy(vni(5)), None);
    }
}
