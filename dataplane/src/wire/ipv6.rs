//! IPv6 fixed headers (RFC 8200).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Traffic Class |           Flow Label                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                         Source Address                        +
//! |                          (16 octets)                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                      Destination Address                      +
//! |                          (16 octets)                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! IPv6 has no header checksum. [`Packet::payload`] is bounded by Payload Length, never by the
//! buffer (link padding after it is ignored).
//!
//! # Extension headers
//! Only the fixed header is modelled. When Next Header names an extension header (see
//! [`IpProtocol::is_ipv6_extension_header`]), the payload starts with that header, not with the
//! upper-layer protocol, and this module does not walk the chain. Code that looks for a particular
//! upper-layer protocol (the VXLAN and WireGuard paths look for UDP) treats any other Next Header,
//! extension headers included, as "not ours". Jumbograms (RFC 2675, Payload Length 0 plus a
//! Hop-by-Hop Jumbo Payload option) are not supported: such a packet reads as having an empty
//! payload.

use core::fmt;
use core::net::Ipv6Addr;

pub use super::ipv4::IpProtocol;
use super::{Error, Result};

/// Length of the IPv6 fixed header.
pub const HEADER_LEN: usize = 40;

/// Largest value a Flow Label can hold (20 bits).
pub const MAX_FLOW_LABEL: u32 = 0x000f_ffff;

mod field {
    pub type Field = core::ops::Range<usize>;

    pub const VER_TC_FLOW: Field = 0..4;
    pub const PAYLOAD_LEN: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
}

/// A view of an IPv6 packet in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Accessors panic if the buffer is shorter than the fixed
    /// header, and [`payload`](Packet::payload) if it is shorter than the header plus Payload
    /// Length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that this is an IPv6 packet that fits in the buffer, so that no accessor panics:
    /// the buffer holds the fixed header (else [`Error::Truncated`]), the version is 6 (else
    /// [`Error::Malformed`] `"version"`), and the buffer holds Payload Length octets after the
    /// header (else `Truncated`).
    pub fn check_len(&self) -> Result<()> {
        let data = self.buffer.as_ref();
        super::check_len(data, HEADER_LEN)?;
        if self.version() != 6 {
            return Err(Error::Malformed { field: "version" });
        }
        super::check_len(data, self.total_len())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn first_word(&self) -> u32 {
        let d = &self.buffer.as_ref()[field::VER_TC_FLOW];
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    }

    fn read_addr(&self, f: field::Field) -> Ipv6Addr {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&self.buffer.as_ref()[f]);
        Ipv6Addr::from(octets)
    }

    /// The Version field (6 for a packet that passed [`Packet::check_len`]).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// The Traffic Class: DSCP in the upper six bits, ECN in the lower two.
    pub fn traffic_class(&self) -> u8 {
        (self.first_word() >> 20) as u8
    }

    /// The 20-bit Flow Label.
    pub fn flow_label(&self) -> u32 {
        self.first_word() & MAX_FLOW_LABEL
    }

    /// Payload Length: the octets after the fixed header, extension headers included.
    pub fn payload_len(&self) -> u16 {
        let d = &self.buffer.as_ref()[field::PAYLOAD_LEN];
        u16::from_be_bytes([d[0], d[1]])
    }

    /// Fixed header plus Payload Length, in octets.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// Next Header: the upper-layer protocol, or the first extension header.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::NEXT_HEADER])
    }

    /// Hop Limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The Source Address.
    pub fn src_addr(&self) -> Ipv6Addr {
        self.read_addr(field::SRC_ADDR)
    }

    /// The Destination Address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        self.read_addr(field::DST_ADDR)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload: Payload Length octets after the fixed header.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn write_first_word(&mut self, mask: u32, bits: u32) {
        let v = (self.first_word() & !mask) | (bits & mask);
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the Version field (the low four bits of `value`).
    pub fn set_version(&mut self, value: u8) {
        self.write_first_word(0xf000_0000, u32::from(value) << 28);
    }

    /// Sets the Traffic Class.
    pub fn set_traffic_class(&mut self, value: u8) {
        self.write_first_word(0x0ff0_0000, u32::from(value) << 20);
    }

    /// Sets the Flow Label (the low 20 bits of `value`).
    pub fn set_flow_label(&mut self, value: u32) {
        self.write_first_word(MAX_FLOW_LABEL, value);
    }

    /// Sets Payload Length.
    pub fn set_payload_len(&mut self, value: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets Next Header.
    pub fn set_next_header(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::NEXT_HEADER] = value.0;
    }

    /// Sets Hop Limit.
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    /// Sets the Source Address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the Destination Address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// The payload, mutably: Payload Length octets after the fixed header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The meaning of an IPv6 fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Next Header: the upper-layer protocol or the first extension header.
    pub next_header: IpProtocol,
    /// Payload Length in octets (extension headers included).
    pub payload_len: usize,
    /// Hop Limit.
    pub hop_limit: u8,
    /// Traffic Class (DSCP and ECN).
    pub traffic_class: u8,
    /// Flow Label; at most [`MAX_FLOW_LABEL`].
    pub flow_label: u32,
}

impl Repr {
    /// Parses the fixed header, failing as [`Packet::check_len`] does.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        Ok(Self {
            src: packet.src_addr(),
            dst: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    /// Length of the emitted header: always [`HEADER_LEN`].
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Length of the emitted packet: header plus payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.payload_len)
    }

    /// Writes the fixed header into the start of `packet`, leaving the payload untouched (it may
    /// be written before or after).
    ///
    /// Fails with [`Error::Malformed`] `"payload_len"` if the payload exceeds 65535 octets,
    /// `"flow_label"` if the flow label exceeds 20 bits, and with [`Error::BufferTooSmall`] if
    /// the buffer cannot hold [`Repr::buffer_len`] octets; in each case the buffer is left
    /// unchanged.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<()> {
        let payload_len = u16::try_from(self.payload_len).map_err(|_| Error::Malformed { field: "payload_len" })?;
        if self.flow_label > MAX_FLOW_LABEL {
            return Err(Error::Malformed { field: "flow_label" });
        }
        let needed = self.buffer_len();
        let actual = packet.buffer.as_ref().len();
        if actual < needed {
            return Err(Error::BufferTooSmall { needed, actual });
        }
        let word = (6 << 28) | (u32::from(self.traffic_class) << 20) | self.flow_label;
        packet.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&word.to_be_bytes());
        packet.set_payload_len(payload_len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src);
        packet.set_dst_addr(self.dst);
        Ok(())
    }
}

impl fmt::Display for Repr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IPv6 src={} dst={} nxt={} len={} hop_limit={}",
            self.src, self.dst, self.next_header, self.payload_len, self.hop_limit
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2001:db8::1 -> 2001:db8::2, traffic class 0xb8 (EF), flow label 0xabcde, UDP, hop limit 64,
    // carrying a 12-octet UDP datagram (checksum verified in the UDP tests), then 2 octets of
    // link padding.
    const PACKET: [u8; 54] = [
        0x6b, 0x8a, 0xbc, 0xde, 0x00, 0x0c, 0x11, 0x40, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, //
        0x30, 0x39, 0x21, 0x18, 0x00, 0x0c, 0xb5, 0x72, 0xde, 0xad, 0xbe, 0xef, //
        0xee, 0xee,
    ];
    const TOTAL: usize = 52;

    fn repr() -> Repr {
        Repr {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            next_header: IpProtocol::UDP,
            payload_len: 12,
            hop_limit: 64,
            traffic_class: 0xb8,
            flow_label: 0xabcde,
        }
    }

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0xb8);
        assert_eq!(packet.flow_label(), 0xabcde);
        assert_eq!(packet.payload_len(), 12);
        assert_eq!(packet.total_len(), TOTAL);
        assert_eq!(packet.next_header(), IpProtocol::UDP);
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(packet.src_addr(), repr().src);
        assert_eq!(packet.dst_addr(), repr().dst);
        assert_eq!(packet.payload(), &PACKET[40..TOTAL]);
        assert_eq!(Repr::parse(&packet), Ok(repr()));
    }

    #[test]
    fn emit_matches_bytes() {
        let mut buf = PACKET;
        buf[..40].fill(0);
        repr().emit(&mut Packet::new_unchecked(&mut buf[..])).unwrap();
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..TOTAL {
            let buf = &PACKET[..len];
            let err = Packet::new_checked(buf).unwrap_err();
            let needed = if len < HEADER_LEN { HEADER_LEN } else { TOTAL };
            assert_eq!(err, Error::Truncated { needed, actual: len });
            assert!(Repr::parse(&Packet::new_unchecked(buf)).is_err());
        }
    }

    #[test]
    fn wrong_version() {
        for first in [0x45, 0x0b, 0x7b, 0xfb] {
            let mut buf = PACKET;
            buf[0] = first;
            assert_eq!(Packet::new_checked(&buf[..]), Err(Error::Malformed { field: "version" }));
        }
    }

    #[test]
    fn emit_rejects_impossible_reprs() {
        let mut buf = vec![0u8; 70_000];
        let too_long = Repr { payload_len: 65536, ..repr() };
        assert_eq!(
            too_long.emit(&mut Packet::new_unchecked(&mut buf[..])),
            Err(Error::Malformed { field: "payload_len" })
        );
        let bad_label = Repr { flow_label: MAX_FLOW_LABEL + 1, ..repr() };
        assert_eq!(
            bad_label.emit(&mut Packet::new_unchecked(&mut buf[..])),
            Err(Error::Malformed { field: "flow_label" })
        );
        assert!(buf.iter().all(|&b| b == 0));
        let mut short = [0u8; TOTAL - 1];
        assert_eq!(
            repr().emit(&mut Packet::new_unchecked(&mut short[..])),
            Err(Error::BufferTooSmall { needed: TOTAL, actual: TOTAL - 1 })
        );
        let max = Repr { payload_len: 65535, flow_label: MAX_FLOW_LABEL, ..repr() };
        max.emit(&mut Packet::new_unchecked(&mut buf[..])).unwrap();
        assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()), Ok(max));
    }

    #[test]
    fn setters_touch_only_their_bits() {
        let mut buf = PACKET;
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        packet.set_traffic_class(0x01);
        assert_eq!((packet.version(), packet.traffic_class(), packet.flow_label()), (6, 0x01, 0xabcde));
        packet.set_flow_label(0xfff_ffff);
        assert_eq!((packet.version(), packet.traffic_class(), packet.flow_label()), (6, 0x01, 0xfffff));
        packet.set_version(7);
        assert_eq!((packet.version(), packet.traffic_class(), packet.flow_label()), (7, 0x01, 0xfffff));
        packet.set_version(6);
        packet.set_payload_len(4);
        packet.set_next_header(IpProtocol::HOP_BY_HOP);
        packet.set_hop_limit(1);
        packet.set_src_addr(Ipv6Addr::LOCALHOST);
        packet.set_dst_addr(Ipv6Addr::UNSPECIFIED);
        packet.payload_mut().copy_from_slice(b"wxyz");
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(packet.payload(), b"wxyz");
        assert!(packet.next_header().is_ipv6_extension_header());
        assert_eq!(packet.src_addr(), Ipv6Addr::LOCALHOST);
        assert_eq!(packet.as_ref().len(), PACKET.len());
        assert_eq!(Repr::parse(&packet).unwrap().to_string(), "IPv6 src=::1 dst=:: nxt=0 len=4 hop_limit=1");
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn emit_parse_round_trip(src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), nh in any::<u8>(),
                                     payload_len in 0usize..100, hop_limit in any::<u8>(),
                                     traffic_class in any::<u8>(), flow_label in 0..=MAX_FLOW_LABEL) {
                let repr = Repr {
                    src: src.into(), dst: dst.into(), next_header: IpProtocol(nh), payload_len,
                    hop_limit, traffic_class, flow_label,
                };
                let mut buf = vec![0x5a; repr.buffer_len()];
                repr.emit(&mut Packet::new_unchecked(&mut buf[..])).unwrap();
                let packet = Packet::new_checked(&buf[..]).unwrap();
                prop_assert_eq!(Repr::parse(&packet), Ok(repr));
                prop_assert!(packet.payload().iter().all(|&b| b == 0x5a));
            }

            #[test]
            fn any_bytes_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..80)) {
                if let Some(b) = data.first_mut() { *b = 0x60 | (*b & 0x0f); }
                if let Ok(p) = Packet::new_checked(&data[..]) {
                    let _ = (Repr::parse(&p).unwrap(), p.payload());
                }
            }
        }
    }
}
