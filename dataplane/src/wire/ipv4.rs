//! IPv4 headers (RFC 791).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |   DSCP    |ECN|          Total Length         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Identification        |R|D|M|      Fragment Offset    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Source Address                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Options (IHL > 5)                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`Packet::new_checked`] accepts a buffer longer than Total Length (Ethernet pads short frames
//! to 60 octets): [`Packet::payload`] is bounded by Total Length, never by the buffer.
//!
//! # Checksum
//! [`Repr::parse`] verifies the header checksum. Where the checksum was already verified (by the
//! NIC, or by the kernel before the packet reached a TUN device with offloads enabled), use
//! [`Repr::parse_ignoring_checksum`], which does everything else `parse` does. [`Repr::emit`]
//! always writes a correct checksum.
//!
//! # Fragments
//! This dataplane does not reassemble. [`Repr`] describes a whole datagram, so `Repr::parse`
//! rejects fragments (MF set or a non-zero offset) with `Error::Malformed { field: "fragment" }`,
//! so that no fragment's payload is mistaken for a complete upper-layer packet. The [`Packet`]
//! accessors still read every field of a fragment.

use core::fmt;
use core::net::Ipv4Addr;

use super::{checksum, Error, Result};

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;
/// Largest IPv4 header: IHL 15, 40 octets of options.
pub const MAX_HEADER_LEN: usize = 60;

mod field {
    pub type Field = core::ops::Range<usize>;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// An IP protocol number (IPv4 Protocol, IPv6 Next Header), from the IANA "Assigned Internet
/// Protocol Numbers" registry.
///
/// A newtype rather than an enum, so that every value has exactly one representation and unknown
/// protocols pass through unchanged. Match on the associated constants.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// IPv6 Hop-by-Hop Options (an IPv6 extension header).
    pub const HOP_BY_HOP: Self = Self(0);
    /// Internet Control Message Protocol.
    pub const ICMP: Self = Self(1);
    /// Transmission Control Protocol.
    pub const TCP: Self = Self(6);
    /// User Datagram Protocol.
    pub const UDP: Self = Self(17);
    /// IPv6 Routing header (an IPv6 extension header).
    pub const IPV6_ROUTING: Self = Self(43);
    /// IPv6 Fragment header (an IPv6 extension header).
    pub const IPV6_FRAGMENT: Self = Self(44);
    /// ICMP for IPv6.
    pub const ICMPV6: Self = Self(58);
    /// IPv6 "No Next Header".
    pub const IPV6_NO_NEXT_HEADER: Self = Self(59);
    /// IPv6 Destination Options (an IPv6 extension header).
    pub const IPV6_DEST_OPTIONS: Self = Self(60);

    /// Whether this number names an IPv6 extension header (IANA "IPv6 Extension Header Types",
    /// RFC 7045): Hop-by-Hop, Routing, Fragment, ESP, AH, Destination Options, Mobility, HIP,
    /// Shim6 and the two experimental values.
    pub const fn is_ipv6_extension_header(self) -> bool {
        matches!(self.0, 0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254)
    }

    const fn name(self) -> Option<&'static str> {
        match self {
            Self::ICMP => Some("ICMP"),
            Self::TCP => Some("TCP"),
            Self::UDP => Some("UDP"),
            Self::ICMPV6 => Some("ICMPv6"),
            _ => None,
        }
    }
}

impl From<u8> for IpProtocol {
    fn from(value: u8) -> Self {
        Self(value)
    }
}

impl From<IpProtocol> for u8 {
    fn from(value: IpProtocol) -> Self {
        value.0
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Debug for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "IpProtocol::{}", name.to_ascii_uppercase()),
            None => write!(f, "IpProtocol({})", self.0),
        }
    }
}

/// A view of an IPv4 packet in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Accessors panic if the buffer is shorter than the
    /// header or than the lengths the header declares.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that this is an IPv4 packet whose lengths are consistent with the buffer, so that no
    /// accessor panics. The checks, in order:
    ///
    /// * the buffer holds the fixed header, else [`Error::Truncated`];
    /// * the version is 4, else [`Error::Malformed`] `"version"` (the lengths below mean nothing
    ///   for another version);
    /// * IHL is at least 5, else `Malformed` `"ihl"`;
    /// * the buffer holds the whole header including options, else `Truncated`;
    /// * Total Length covers at least the header, else `Malformed` `"total_len"`;
    /// * the buffer holds Total Length octets, else `Truncated`.
    ///
    /// The checksum is not verified here; see [`Packet::verify_checksum`] and [`Repr::parse`].
    pub fn check_len(&self) -> Result<()> {
        let data = self.buffer.as_ref();
        super::check_len(data, HEADER_LEN)?;
        if self.version() != 4 {
            return Err(Error::Malformed { field: "version" });
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::Malformed { field: "ihl" });
        }
        super::check_len(data, header_len)?;
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::Malformed { field: "total_len" });
        }
        super::check_len(data, total_len)
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn read_u16(&self, f: field::Field) -> u16 {
        let d = &self.buffer.as_ref()[f];
        u16::from_be_bytes([d[0], d[1]])
    }

    fn read_addr(&self, f: field::Field) -> Ipv4Addr {
        let d = &self.buffer.as_ref()[f];
        Ipv4Addr::new(d[0], d[1], d[2], d[3])
    }

    /// The Version field (4 for a packet that passed [`Packet::check_len`]).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in octets (IHL × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The whole second octet: DSCP in the upper six bits, ECN in the lower two.
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// The Differentiated Services Code Point.
    pub fn dscp(&self) -> u8 {
        self.dscp_ecn() >> 2
    }

    /// The Explicit Congestion Notification bits.
    pub fn ecn(&self) -> u8 {
        self.dscp_ecn() & 0x03
    }

    /// Total Length: header plus payload, in octets.
    pub fn total_len(&self) -> u16 {
        self.read_u16(field::LENGTH)
    }

    /// The Identification field.
    pub fn ident(&self) -> u16 {
        self.read_u16(field::IDENT)
    }

    /// The Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.read_u16(field::FLG_OFF) & FLAG_DF != 0
    }

    /// The More Fragments flag.
    pub fn more_frags(&self) -> bool {
        self.read_u16(field::FLG_OFF) & FLAG_MF != 0
    }

    /// The fragment offset in octets (the field counts 8-octet units).
    pub fn frag_offset(&self) -> u16 {
        (self.read_u16(field::FLG_OFF) & OFFSET_MASK) << 3
    }

    /// Whether this packet is a fragment of a larger datagram (MF set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.read_u16(field::FLG_OFF) & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Time to Live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The Protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// The Header Checksum field as stored.
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM)
    }

    /// The Source Address.
    pub fn src_addr(&self) -> Ipv4Addr {
        self.read_addr(field::SRC_ADDR)
    }

    /// The Destination Address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        self.read_addr(field::DST_ADDR)
    }

    /// Whether the header checksum (over the header including options) verifies.
    pub fn verify_checksum(&self) -> bool {
        let header = &self.buffer.as_ref()[..self.header_len()];
        checksum::finish(checksum::sum(header)) == 0
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The options: the header beyond its first 20 octets (empty when IHL is 5).
    pub fn options(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The payload: from the end of the header to Total Length. Octets after Total Length (link
    /// padding) are not part of it.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn write_u16(&mut self, f: field::Field, value: u16) {
        self.buffer.as_mut()[f].copy_from_slice(&value.to_be_bytes());
    }

    fn write_flg_off(&mut self, mask: u16, bits: u16) {
        let v = self.read_u16(field::FLG_OFF);
        self.write_u16(field::FLG_OFF, (v & !mask) | (bits & mask));
    }

    /// Sets the Version field (the low four bits of `value`).
    pub fn set_version(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (value << 4);
    }

    /// Sets IHL from a header length in octets (`len / 4`, keeping the low four bits).
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) as u8 & 0x0f);
    }

    /// Sets the DSCP/ECN octet.
    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    /// Sets Total Length.
    pub fn set_total_len(&mut self, value: u16) {
        self.write_u16(field::LENGTH, value);
    }

    /// Sets the Identification field.
    pub fn set_ident(&mut self, value: u16) {
        self.write_u16(field::IDENT, value);
    }

    /// Clears the reserved bit and both fragmentation flags, keeping the offset.
    pub fn clear_flags(&mut self) {
        self.write_flg_off(!OFFSET_MASK, 0);
    }

    /// Sets or clears Don't Fragment.
    pub fn set_dont_frag(&mut self, value: bool) {
        self.write_flg_off(FLAG_DF, if value { FLAG_DF } else { 0 });
    }

    /// Sets or clears More Fragments.
    pub fn set_more_frags(&mut self, value: bool) {
        self.write_flg_off(FLAG_MF, if value { FLAG_MF } else { 0 });
    }

    /// Sets the fragment offset from a value in octets (rounded down to a multiple of 8).
    pub fn set_frag_offset(&mut self, offset: u16) {
        self.write_flg_off(OFFSET_MASK, offset >> 3);
    }

    /// Sets Time to Live.
    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    /// Sets the Protocol.
    pub fn set_protocol(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = value.0;
    }

    /// Sets the Header Checksum field to `value` as given.
    pub fn set_checksum(&mut self, value: u16) {
        self.write_u16(field::CHECKSUM, value);
    }

    /// Sets the Source Address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the Destination Address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Computes the header checksum (over IHL × 4 octets) and stores it. Call it after the last
    /// change to any header field; a TTL decrement, for one, invalidates it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = self.header_len();
        let sum = checksum::sum(&self.buffer.as_ref()[..header_len]);
        self.set_checksum(checksum::finish(sum));
    }

    /// The payload, mutably: from the end of the header to Total Length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The meaning of an unfragmented IPv4 header. Options are not represented: `emit` writes a
/// 20-octet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: IpProtocol,
    /// Payload length in octets (Total Length minus the header).
    pub payload_len: usize,
    /// Time to Live.
    pub ttl: u8,
    /// The Don't Fragment flag.
    pub dont_frag: bool,
    /// DSCP and ECN, as the second octet of the header.
    pub dscp_ecn: u8,
    /// The Identification field.
    pub ident: u16,
}

impl Repr {
    /// Parses a header and verifies its checksum.
    ///
    /// Fails as [`Packet::check_len`] does, then with [`Error::Checksum`], then with
    /// `Error::Malformed { field: "fragment" }` for a fragment (see the module docs).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error::Checksum);
        }
        Self::parse_fields(packet)
    }

    /// Like [`Repr::parse`] but without verifying the header checksum, for packets whose
    /// checksum was already verified (checksum offload).
    pub fn parse_ignoring_checksum<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        Self::parse_fields(packet)
    }

    fn parse_fields<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        if packet.is_fragment() {
            return Err(Error::Malformed { field: "fragment" });
        }
        Ok(Self {
            src: packet.src_addr(),
            dst: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            ttl: packet.ttl(),
            dont_frag: packet.dont_frag(),
            dscp_ecn: packet.dscp_ecn(),
            ident: packet.ident(),
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

    /// Writes a 20-octet header with a correct checksum into the start of `packet`, leaving the
    /// payload untouched (it may be written before or after).
    ///
    /// Fails with `Error::Malformed { field: "payload_len" }` if the packet would exceed 65535
    /// octets, and with [`Error::BufferTooSmall`] if the buffer cannot hold
    /// [`Repr::buffer_len`] octets; in both cases the buffer is left unchanged.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<()> {
        let total_len = u16::try_from(self.buffer_len()).map_err(|_| Error::Malformed { field: "payload_len" })?;
        let actual = packet.buffer.as_ref().len();
        if actual < usize::from(total_len) {
            return Err(Error::BufferTooSmall { needed: usize::from(total_len), actual });
        }
        packet.set_version(4);
        packet.set_header_len(HEADER_LEN);
        packet.set_dscp_ecn(self.dscp_ecn);
        packet.set_total_len(total_len);
        packet.set_ident(self.ident);
        packet.write_u16(field::FLG_OFF, if self.dont_frag { FLAG_DF } else { 0 });
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src);
        packet.set_dst_addr(self.dst);
        packet.fill_checksum();
        Ok(())
    }
}

impl fmt::Display for Repr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IPv4 src={} dst={} proto={} len={} ttl={}",
            self.src, self.dst, self.protocol, self.payload_len, self.ttl
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The header of a UDP datagram from 192.168.0.1 to 192.168.0.199: Total Length 0x73, DF,
    // TTL 64, checksum 0xb861. The standard worked example of the IPv4 header checksum
    // (one's-complement sum of the other nine words is 0x479e, complement 0xb861).
    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
        0x00, 0xc7,
    ];

    fn example_packet() -> Vec<u8> {
        let mut buf = HEADER.to_vec();
        buf.extend((0..0x73 - 20).map(|i| i as u8));
        buf
    }

    fn example_repr() -> Repr {
        Repr {
            src: Ipv4Addr::new(192, 168, 0, 1),
            dst: Ipv4Addr::new(192, 168, 0, 199),
            protocol: IpProtocol::UDP,
            payload_len: 0x73 - 20,
            ttl: 64,
            dont_frag: true,
            dscp_ecn: 0,
            ident: 0,
        }
    }

    // An ICMP packet 10.0.0.1 -> 10.0.0.2 carrying a Router Alert option (IHL 6), checksum
    // computed by hand: words 4600 001c 1234 0000 4001 0000 0a00 0001 0a00 0002 9404 0000 sum to
    // 0x1_4058, which folds to 0x4059; the complement is 0xbfa6.
    const WITH_OPTIONS: [u8; 28] = [
        0x46, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x00, 0x00, 0x40, 0x01, 0xbf, 0xa6, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00,
        0x00, 0x02, 0x94, 0x04, 0x00, 0x00, // options
        0x08, 0x00, 0xf7, 0xff, // payload: ICMP type, code, checksum
    ];

    #[test]
    fn deconstruct_known_header() {
        let buf = example_packet();
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.dscp_ecn(), 0);
        assert_eq!(packet.total_len(), 0x73);
        assert_eq!(packet.ident(), 0);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset(), 0);
        assert!(!packet.is_fragment());
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.protocol(), IpProtocol::UDP);
        assert_eq!(packet.checksum(), 0xb861);
        assert!(packet.verify_checksum());
        assert_eq!(packet.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert!(packet.options().is_empty());
        assert_eq!(packet.payload(), &buf[20..]);
        assert_eq!(Repr::parse(&packet), Ok(example_repr()));
    }

    #[test]
    fn emit_matches_known_header() {
        let repr = example_repr();
        let mut buf = vec![0xa5; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut buf[..])).unwrap();
        assert_eq!(&buf[..20], &HEADER);
        assert!(buf[20..].iter().all(|&b| b == 0xa5), "emit touched the payload");
    }

    #[test]
    fn options_are_read_and_checked() {
        let packet = Packet::new_checked(&WITH_OPTIONS[..]).unwrap();
        assert_eq!(packet.header_len(), 24);
        assert_eq!(packet.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(packet.payload(), &[0x08, 0x00, 0xf7, 0xff]);
        assert_eq!(packet.checksum(), 0xbfa6);
        assert!(packet.verify_checksum());
        let repr = Repr::parse(&packet).unwrap();
        assert_eq!(repr.protocol, IpProtocol::ICMP);
        assert_eq!(repr.payload_len, 4);
        assert_eq!(repr.ident, 0x1234);
        assert!(!repr.dont_frag);
    }

    #[test]
    fn payload_is_bounded_by_total_len() {
        let mut buf = example_packet();
        buf.extend_from_slice(&[0xee; 7]); // link-layer padding
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(packet.payload().len(), 0x73 - 20);
        assert_eq!(Repr::parse(&packet).unwrap().payload_len, 0x73 - 20);
    }

    #[test]
    fn truncated_at_every_length() {
        for packet in [example_packet(), WITH_OPTIONS.to_vec()] {
            for len in 0..packet.len() {
                let buf = &packet[..len];
                let err = Packet::new_checked(buf).unwrap_err();
                assert!(matches!(err, Error::Truncated { actual, .. } if actual == len), "{len}: {err:?}");
                assert!(Repr::parse(&Packet::new_unchecked(buf)).is_err());
                assert!(Repr::parse_ignoring_checksum(&Packet::new_unchecked(buf)).is_err());
            }
        }
    }

    #[test]
    fn malformed_fixed_fields() {
        let mut buf = example_packet();
        buf[0] = 0x65;
        assert_eq!(Packet::new_checked(&buf[..]), Err(Error::Malformed { field: "version" }));
        buf[0] = 0x44;
        assert_eq!(Packet::new_checked(&buf[..]), Err(Error::Malformed { field: "ihl" }));
        buf[0] = 0x45;
        buf[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&buf[..]), Err(Error::Malformed { field: "total_len" }));
        // IHL 15 claims 60 header octets, more than Total Length.
        let mut buf = example_packet();
        buf[0] = 0x4f;
        buf[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&buf[..]), Err(Error::Malformed { field: "total_len" }));
        // IHL 15 on a 40-octet buffer: the options run off the end.
        assert_eq!(Packet::new_checked(&buf[..40]), Err(Error::Truncated { needed: 60, actual: 40 }));
    }

    #[test]
    fn checksum_catches_every_flipped_bit() {
        for packet in [example_packet(), WITH_OPTIONS.to_vec()] {
            let header_len = usize::from(packet[0] & 0x0f) * 4;
            for bit in 0..header_len * 8 {
                let mut buf = packet.clone();
                buf[bit / 8] ^= 1 << (bit % 8);
                let Ok(p) = Packet::new_checked(&buf[..]) else {
                    continue;
                };
                assert!(!p.verify_checksum(), "bit {bit} not caught");
                assert_eq!(Repr::parse(&p), Err(Error::Checksum), "bit {bit}");
            }
            // Payload bits are not covered by the header checksum.
            let mut buf = packet.clone();
            *buf.last_mut().unwrap() ^= 1;
            assert!(Packet::new_checked(&buf[..]).unwrap().verify_checksum());
        }
    }

    #[test]
    fn parse_ignoring_checksum_accepts_bad_checksum() {
        let mut buf = example_packet();
        buf[10] ^= 0xff;
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Repr::parse(&packet), Err(Error::Checksum));
        assert_eq!(Repr::parse_ignoring_checksum(&packet), Ok(example_repr()));
    }

    #[test]
    fn fragments_are_rejected_by_repr() {
        for (more_frags, offset) in [(true, 0), (false, 1480), (true, 8)] {
            let mut buf = example_packet();
            let mut packet = Packet::new_unchecked(&mut buf[..]);
            packet.set_more_frags(more_frags);
            packet.set_frag_offset(offset);
            packet.fill_checksum();
            let packet = Packet::new_checked(&buf[..]).unwrap();
            assert!(packet.is_fragment());
            assert_eq!(packet.more_frags(), more_frags);
            assert_eq!(packet.frag_offset(), offset);
            assert!(packet.dont_frag());
            assert_eq!(Repr::parse(&packet), Err(Error::Malformed { field: "fragment" }));
        }
    }

    #[test]
    fn reserved_flag_is_ignored_on_parse_and_cleared_on_emit() {
        let mut buf = example_packet();
        buf[6] |= 0x80;
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        packet.fill_checksum();
        let repr = Repr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap();
        assert_eq!(repr, example_repr());
        let mut out = vec![0; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut out[..])).unwrap();
        assert_eq!(out[6], 0x40);
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        packet.clear_flags();
        assert_eq!(packet.read_u16(field::FLG_OFF), 0);
    }

    #[test]
    fn emit_errors_leave_buffer_alone() {
        let repr = example_repr();
        let mut short = vec![0u8; repr.buffer_len() - 1];
        assert_eq!(
            repr.emit(&mut Packet::new_unchecked(&mut short[..])),
            Err(Error::BufferTooSmall { needed: 0x73, actual: 0x72 })
        );
        assert!(short.iter().all(|&b| b == 0));
        let huge = Repr { payload_len: 65536 - 20, ..repr };
        let mut buf = vec![0u8; 70_000];
        assert_eq!(huge.emit(&mut Packet::new_unchecked(&mut buf[..])), Err(Error::Malformed { field: "payload_len" }));
        let max = Repr { payload_len: 65535 - 20, ..repr };
        max.emit(&mut Packet::new_unchecked(&mut buf[..])).unwrap();
        assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()), Ok(max));
        let absurd = Repr { payload_len: usize::MAX, ..repr };
        assert_eq!(absurd.buffer_len(), usize::MAX);
        assert!(absurd.emit(&mut Packet::new_unchecked(&mut buf[..])).is_err());
    }

    #[test]
    fn setters() {
        let mut buf = [0u8; 24];
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        packet.set_version(4);
        packet.set_header_len(20);
        packet.set_dscp_ecn(0xb8 | 0x01);
        packet.set_total_len(24);
        packet.set_ttl(1);
        packet.set_protocol(IpProtocol(253));
        packet.set_dont_frag(true);
        packet.set_dont_frag(false);
        packet.set_src_addr(Ipv4Addr::LOCALHOST);
        packet.set_dst_addr(Ipv4Addr::BROADCAST);
        packet.payload_mut().copy_from_slice(b"abcd");
        packet.fill_checksum();
        assert_eq!(packet.dscp(), 46);
        assert_eq!(packet.ecn(), 1);
        assert!(!packet.dont_frag());
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert!(packet.verify_checksum());
        assert_eq!(packet.payload(), b"abcd");
        assert_eq!(packet.protocol().to_string(), "253");
        assert_eq!(format!("{:?}", packet.protocol()), "IpProtocol(253)");
        assert_eq!(&packet.into_inner()[..2], &[0x45, 0xb9]);
    }

    #[test]
    fn protocol_numbers() {
        assert_eq!(IpProtocol::from(17), IpProtocol::UDP);
        assert_eq!(u8::from(IpProtocol::ICMPV6), 58);
        assert_eq!(IpProtocol::ICMPV6.to_string(), "ICMPv6");
        assert_eq!(format!("{:?}", IpProtocol::TCP), "IpProtocol::TCP");
        assert!(IpProtocol::HOP_BY_HOP.is_ipv6_extension_header());
        assert!(IpProtocol::IPV6_FRAGMENT.is_ipv6_extension_header());
        assert!(!IpProtocol::UDP.is_ipv6_extension_header());
        assert!(!IpProtocol::IPV6_NO_NEXT_HEADER.is_ipv6_extension_header());
        assert_eq!(example_repr().to_string(), "IPv4 src=192.168.0.1 dst=192.168.0.199 proto=UDP len=95 ttl=64");
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn arb_repr() -> impl Strategy<Value = Repr> {
            (
                any::<[u8; 4]>(),
                any::<[u8; 4]>(),
                any::<u8>(),
                0usize..200,
                any::<u8>(),
                any::<bool>(),
                any::<u8>(),
                any::<u16>(),
            )
                .prop_map(|(src, dst, protocol, payload_len, ttl, dont_frag, dscp_ecn, ident)| Repr {
                    src: src.into(),
                    dst: dst.into(),
                    protocol: IpProtocol(protocol),
                    payload_len,
                    ttl,
                    dont_frag,
                    dscp_ecn,
                    ident,
                })
        }

        proptest! {
            #[test]
            fn emit_parse_round_trip(repr in arb_repr(), fill in any::<u8>()) {
                let mut buf = vec![fill; repr.buffer_len()];
                repr.emit(&mut Packet::new_unchecked(&mut buf[..])).unwrap();
                let packet = Packet::new_checked(&buf[..]).unwrap();
                prop_assert!(packet.verify_checksum());
                prop_assert_eq!(Repr::parse(&packet), Ok(repr));
                prop_assert!(packet.payload().iter().all(|&b| b == fill));
            }

            #[test]
            fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..80)) {
                let packet = Packet::new_unchecked(&data[..]);
                let checked = Packet::new_checked(&data[..]);
                let _ = (Repr::parse(&packet), Repr::parse_ignoring_checksum(&packet));
                if let Ok(p) = checked {
                    let _ = (p.verify_checksum(), p.options(), p.payload(), p.frag_offset());
                }
            }

            #[test]
            fn header_bytes_with_valid_version_never_panic(mut data in proptest::collection::vec(any::<u8>(), 20..80)) {
                data[0] = 0x40 | (data[0] & 0x0f);
                let _ = Repr::parse(&Packet::new_unchecked(&data[..]));
            }
        }
    }
}
