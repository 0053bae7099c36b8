//! ARP for Ethernet and IPv4 (RFC 826), as a checked zero-copy view.
//!
//! ```text
//! 0       2       4   5   6       8          14      18         24      28
//! | htype | ptype |hln|pln| oper  |   sha    |  spa  |   tha    |  tpa  |
//! ```
//!
//! Only the Ethernet/IPv4 form (htype 1, ptype 0x0800, hlen 6, plen 4) is accepted:
//! [`Packet::new_checked`] fails with [`Error::Truncated`] for a buffer shorter than 28 octets and
//! with [`Error::Malformed`] for any other hardware or protocol type or address length. Octets
//! after the 28th (Ethernet padding) are ignored. No input panics a checked packet's accessors.

use std::net::Ipv4Addr;

use crate::wire::ethernet::EthernetAddress;
use crate::wire::{Error, Result};

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

mod field {
    pub type Field = core::ops::Range<usize>;

    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;

/// The ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Operation(pub u16);

impl Operation {
    /// A request (1).
    pub const REQUEST: Self = Self(1);
    /// A reply (2).
    pub const REPLY: Self = Self(2);
}

/// A view of an Ethernet/IPv4 ARP packet (the Ethernet payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Accessors panic if it is shorter than [`PACKET_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`Packet::check`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    /// Fails with [`Error::Truncated`] if the buffer is shorter than [`PACKET_LEN`], and with
    /// [`Error::Malformed`] `"htype"`, `"ptype"`, `"hlen"` or `"plen"` unless this is the
    /// Ethernet/IPv4 form. When this succeeds, no accessor panics.
    pub fn check(&self) -> Result<()> {
        crate::wire::check_len(self.buffer.as_ref(), PACKET_LEN)?;
        let d = self.buffer.as_ref();
        if self.read_u16(field::HTYPE) != HTYPE_ETHERNET {
            return Err(Error::Malformed { field: "htype" });
        }
        if self.read_u16(field::PTYPE) != PTYPE_IPV4 {
            return Err(Error::Malformed { field: "ptype" });
        }
        if d[field::HLEN] != 6 {
            return Err(Error::Malformed { field: "hlen" });
        }
        if d[field::PLEN] != 4 {
            return Err(Error::Malformed { field: "plen" });
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn read_u16(&self, f: field::Field) -> u16 {
        let d = &self.buffer.as_ref()[f];
        u16::from_be_bytes([d[0], d[1]])
    }

    fn read_mac(&self, f: field::Field) -> EthernetAddress {
        let mut octets = [0u8; 6];
        octets.copy_from_slice(&self.buffer.as_ref()[f]);
        EthernetAddress(octets)
    }

    fn read_ip(&self, f: field::Field) -> Ipv4Addr {
        let d = &self.buffer.as_ref()[f];
        Ipv4Addr::new(d[0], d[1], d[2], d[3])
    }

    /// The operation.
    pub fn operation(&self) -> Operation {
        Operation(self.read_u16(field::OPER))
    }

    /// Sender hardware address.
    pub fn sender_hw(&self) -> EthernetAddress {
        self.read_mac(field::SHA)
    }

    /// Sender protocol address.
    pub fn sender_ip(&self) -> Ipv4Addr {
        self.read_ip(field::SPA)
    }

    /// Target hardware address.
    pub fn target_hw(&self) -> EthernetAddress {
        self.read_mac(field::THA)
    }

    /// Target protocol address.
    pub fn target_ip(&self) -> Ipv4Addr {
        self.read_ip(field::TPA)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The meaning of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// The operation.
    pub operation: Operation,
    /// Sender hardware address.
    pub sender_hw: EthernetAddress,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_hw: EthernetAddress,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl Repr {
    /// Parses a packet, failing as [`Packet::check`] does.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check()?;
        Ok(Self {
            operation: packet.operation(),
            sender_hw: packet.sender_hw(),
            sender_ip: packet.sender_ip(),
            target_hw: packet.target_hw(),
            target_ip: packet.target_ip(),
        })
    }

    /// Length of the emitted packet: always [`PACKET_LEN`].
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the packet into the first [`PACKET_LEN`] octets of `buf`. Fails with
    /// [`Error::BufferTooSmall`], leaving `buf` unchanged, if it is shorter.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let Some(d) = buf.get_mut(..PACKET_LEN) else {
            return Err(Error::BufferTooSmall { needed: PACKET_LEN, actual: buf.len() });
        };
        d[field::HTYPE].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        d[field::PTYPE].copy_from_slice(&PTYPE_IPV4.to_be_bytes());
        d[field::HLEN] = 6;
        d[field::PLEN] = 4;
        d[field::OPER].copy_from_slice(&self.operation.0.to_be_bytes());
        d[field::SHA].copy_from_slice(&self.sender_hw.0);
        d[field::SPA].copy_from_slice(&self.sender_ip.octets());
        d[field::THA].copy_from_slice(&self.target_hw.0);
        d[field::TPA].copy_from_slice(&self.target_ip.octets());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // who-has 10.0.0.2 tell 10.0.0.1 (02:00:00:00:00:01), as tcpdump shows it.
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 10, 0, 0, 1, 0, 0, 0, 0, 0,
        0, 10, 0, 0, 2,
    ];

    #[test]
    fn deconstruct_and_round_trip() {
        let p = Packet::new_checked(&REQUEST[..]).unwrap();
        let repr = Repr::parse(&p).unwrap();
        assert_eq!(repr.operation, Operation::REQUEST);
        assert_eq!(repr.sender_hw, EthernetAddress([2, 0, 0, 0, 0, 1]));
        assert_eq!(repr.sender_ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(repr.target_hw, EthernetAddress([0; 6]));
        assert_eq!(repr.target_ip, Ipv4Addr::new(10, 0, 0, 2));
        let mut out = [0xffu8; 28];
        repr.emit(&mut out).unwrap();
        assert_eq!(out, REQUEST);
        assert_eq!(repr.emit(&mut [0u8; 27]), Err(Error::BufferTooSmall { needed: 28, actual: 27 }));
    }

    #[test]
    fn rejects_other_forms_and_short_buffers() {
        for len in 0..PACKET_LEN {
            assert_eq!(Packet::new_checked(&REQUEST[..len]), Err(Error::Truncated { needed: 28, actual: len }));
        }
        for (i, field) in [(1, "htype"), (3, "ptype"), (4, "hlen"), (5, "plen")] {
            let mut b = REQUEST;
            b[i] ^= 0x40;
            assert_eq!(Packet::new_checked(&b[..]), Err(Error::Malformed { field }));
        }
        // Padding after the packet is ignored.
        let mut padded = REQUEST.to_vec();
        padded.extend_from_slice(&[0; 18]);
        assert!(Packet::new_checked(&padded[..]).is_ok());
    }
}
