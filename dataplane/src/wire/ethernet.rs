//! Ethernet II frames.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                   destination address (6 octets)              |
//! +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                               |                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//! |                     source address (6 octets)                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           EtherType           |   payload ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The buffer holds the frame as a TAP device or packet socket hands it over: no preamble and no
//! frame check sequence. Frames shorter than the 60-octet Ethernet minimum are accepted, and
//! [`Repr::emit`] does not pad.
//!
//! 802.1Q/802.1ad tags are not interpreted: a tagged frame reads as EtherType `0x8100` (or
//! `0x88a8`), and its payload begins with the tag control information followed by the inner
//! EtherType. Such frames still parse, emit and round-trip; callers that do not handle VLANs simply
//! see an EtherType they do not know.

use core::fmt;
use core::str::FromStr;

use super::{check_len, Error, Result};

/// Length of the Ethernet II header: two addresses and the EtherType.
pub const HEADER_LEN: usize = 14;

mod field {
    pub type Field = core::ops::Range<usize>;

    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: core::ops::RangeFrom<usize> = 14..;
}

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// The broadcast address `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: Self = Self([0xff; 6]);

    /// The six octets, first on the wire first.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Whether this is the broadcast address.
    pub const fn is_broadcast(&self) -> bool {
        let a = self.0;
        a[0] & a[1] & a[2] & a[3] & a[4] & a[5] == 0xff
    }

    /// Whether the individual/group bit is set. Broadcast is a group address, so this is true for
    /// [`EthernetAddress::BROADCAST`] as well.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether this names a single station (the individual/group bit is clear).
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// Whether the universal/local bit is set: the address was assigned locally rather than by a
    /// manufacturer (as for generated addresses of virtual interfaces).
    pub const fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl From<[u8; 6]> for EthernetAddress {
    fn from(octets: [u8; 6]) -> Self {
        Self(octets)
    }
}

impl From<EthernetAddress> for [u8; 6] {
    fn from(addr: EthernetAddress) -> Self {
        addr.0
    }
}

impl fmt::Display for EthernetAddress {
    /// Lower-case hexadecimal octets separated by colons, e.g. `02:00:5e:10:00:01`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", a[0], a[1], a[2], a[3], a[4], a[5])
    }
}

impl fmt::Debug for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for EthernetAddress {
    type Err = Error;

    /// Parses six two-digit hexadecimal octets separated by `:` or `-` (either case), e.g.
    /// `02:00:5e:10:00:01` or `02-00-5E-10-00-01`. Anything else is
    /// [`Error::Malformed`] with field `"ethernet address"`.
    fn from_str(s: &str) -> Result<Self> {
        const BAD: Error = Error::Malformed { field: "ethernet address" };
        let sep = match s.as_bytes().get(2) {
            Some(&c @ (b':' | b'-')) => c as char,
            _ => return Err(BAD),
        };
        let mut octets = [0u8; 6];
        let mut parts = s.split(sep);
        for octet in &mut octets {
            let part = parts.next().ok_or(BAD)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(BAD);
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| BAD)?;
        }
        if parts.next().is_some() {
            return Err(BAD);
        }
        Ok(Self(octets))
    }
}

/// The EtherType field: which protocol the payload carries.
///
/// A newtype rather than an enum, so that every value has exactly one representation and unknown
/// types (802.1Q tags, LLDP, ...) pass through unchanged. Match on the associated constants.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EtherType(pub u16);

impl EtherType {
    /// Internet Protocol version 4.
    pub const IPV4: Self = Self(0x0800);
    /// Address Resolution Protocol.
    pub const ARP: Self = Self(0x0806);
    /// Internet Protocol version 6.
    pub const IPV6: Self = Self(0x86dd);

    const fn name(self) -> Option<&'static str> {
        match self {
            Self::IPV4 => Some("IPv4"),
            Self::ARP => Some("ARP"),
            Self::IPV6 => Some("IPv6"),
            _ => None,
        }
    }
}

impl From<u16> for EtherType {
    fn from(value: u16) -> Self {
        Self(value)
    }
}

impl From<EtherType> for u16 {
    fn from(value: EtherType) -> Self {
        value.0
    }
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "0x{:04x}", self.0),
        }
    }
}

impl fmt::Debug for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "EtherType::{}", name.to_ascii_uppercase()),
            None => write!(f, "EtherType(0x{:04x})", self.0),
        }
    }
}

/// A view of an Ethernet II frame in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking it. Accessors panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`Frame::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Fails with [`Error::Truncated`] if the buffer cannot hold the header. When this succeeds,
    /// no accessor panics.
    pub fn check_len(&self) -> Result<()> {
        check_len(self.buffer.as_ref(), HEADER_LEN)
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The destination address.
    pub fn dst_addr(&self) -> EthernetAddress {
        read_addr(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// The source address.
    pub fn src_addr(&self) -> EthernetAddress {
        read_addr(&self.buffer.as_ref()[field::SOURCE])
    }

    /// The EtherType.
    pub fn ethertype(&self) -> EtherType {
        let d = &self.buffer.as_ref()[field::ETHERTYPE];
        EtherType(u16::from_be_bytes([d[0], d[1]]))
    }
}

fn read_addr(bytes: &[u8]) -> EthernetAddress {
    let mut octets = [0u8; 6];
    octets.copy_from_slice(bytes);
    EthernetAddress(octets)
}

impl<'a, T: AsRef<[u8]> + ?Sized> Frame<&'a T> {
    /// Everything after the header, borrowed for the buffer's lifetime.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ethertype.0.to_be_bytes());
    }

    /// Everything after the header, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Frame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The header of an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src: EthernetAddress,
    /// Destination address.
    pub dst: EthernetAddress,
    /// Protocol of the payload.
    pub ethertype: EtherType,
}

impl Repr {
    /// Reads the header of a frame (checking its length first, so an unchecked frame is fine).
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<Self> {
        frame.check_len()?;
        Ok(Self { src: frame.src_addr(), dst: frame.dst_addr(), ethertype: frame.ethertype() })
    }

    /// Length of the emitted header: always [`HEADER_LEN`].
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `frame`, leaving the payload
    /// untouched. Fails with [`Error::BufferTooSmall`] if the buffer is shorter than the header.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) -> Result<()> {
        let actual = frame.buffer.as_ref().len();
        if actual < HEADER_LEN {
            return Err(Error::BufferTooSmall { needed: HEADER_LEN, actual });
        }
        frame.set_dst_addr(self.dst);
        frame.set_src_addr(self.src);
        frame.set_ethertype(self.ethertype);
        Ok(())
    }
}

impl fmt::Display for Repr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ethernet src={} dst={} type={}", self.src, self.dst, self.ethertype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ARP request from 52:54:00:12:34:56 for 10.0.0.2, as captured on a bridge: broadcast
    // destination, EtherType 0x0806, 28-byte ARP body, padded to the 60-byte minimum.
    const ARP_REQUEST: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, //
        0x0a, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02, //
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    const STATION: EthernetAddress = EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

    #[test]
    fn deconstruct_arp_request() {
        let frame = Frame::new_checked(&ARP_REQUEST[..]).unwrap();
        assert_eq!(frame.dst_addr(), EthernetAddress::BROADCAST);
        assert_eq!(frame.src_addr(), STATION);
        assert_eq!(frame.ethertype(), EtherType::ARP);
        assert_eq!(frame.payload(), &ARP_REQUEST[14..]);
        let repr = Repr::parse(&frame).unwrap();
        assert_eq!(repr, Repr { src: STATION, dst: EthernetAddress::BROADCAST, ethertype: EtherType::ARP });
    }

    #[test]
    fn emit_matches_capture() {
        let repr = Repr { src: STATION, dst: EthernetAddress::BROADCAST, ethertype: EtherType::ARP };
        let mut buf = [0u8; 60];
        buf[14..].copy_from_slice(&ARP_REQUEST[14..]);
        let mut frame = Frame::new_unchecked(&mut buf[..]);
        repr.emit(&mut frame).unwrap();
        assert_eq!(buf, ARP_REQUEST);
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..HEADER_LEN {
            let buf = &ARP_REQUEST[..len];
            assert_eq!(Frame::new_checked(buf), Err(Error::Truncated { needed: HEADER_LEN, actual: len }));
            assert!(Repr::parse(&Frame::new_unchecked(buf)).is_err());
        }
        // A bare header is a valid frame with an empty payload.
        let frame = Frame::new_checked(&ARP_REQUEST[..HEADER_LEN]).unwrap();
        assert!(frame.payload().is_empty());
    }

    #[test]
    fn emit_needs_room_for_header() {
        let repr = Repr::parse(&Frame::new_unchecked(&ARP_REQUEST[..])).unwrap();
        let mut small = [0u8; HEADER_LEN - 1];
        assert_eq!(
            repr.emit(&mut Frame::new_unchecked(&mut small[..])),
            Err(Error::BufferTooSmall { needed: HEADER_LEN, actual: HEADER_LEN - 1 })
        );
    }

    #[test]
    fn vlan_tag_is_an_unknown_ethertype() {
        let mut buf = ARP_REQUEST;
        // Relabel in place: EtherType 0x8100, then TCI 0x0064 (VLAN 100) and the inner type ARP.
        buf[12..14].copy_from_slice(&[0x81, 0x00]);
        buf[14..18].copy_from_slice(&[0x00, 0x64, 0x08, 0x06]);
        let frame = Frame::new_checked(&buf[..]).unwrap();
        let repr = Repr::parse(&frame).unwrap();
        assert_eq!(repr.ethertype, EtherType(0x8100));
        assert_eq!(&frame.payload()[..4], &[0x00, 0x64, 0x08, 0x06]);
        assert_eq!(repr.ethertype.to_string(), "0x8100");
        assert_eq!(format!("{:?}", repr.ethertype), "EtherType(0x8100)");
    }

    #[test]
    fn setters_and_payload_mut() {
        let mut buf = [0u8; 20];
        let mut frame = Frame::new_checked(&mut buf[..]).unwrap();
        frame.set_src_addr(STATION);
        frame.set_dst_addr(EthernetAddress([2, 0, 0, 0, 0, 1]));
        frame.set_ethertype(EtherType::IPV6);
        frame.payload_mut().copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(frame.src_addr(), STATION);
        assert_eq!(frame.ethertype(), EtherType::IPV6);
        assert_eq!(&frame.as_ref()[12..], &[0x86, 0xdd, 1, 2, 3, 4, 5, 6]);
        assert_eq!(frame.into_inner()[..6], [2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn address_classes() {
        let b = EthernetAddress::BROADCAST;
        assert!(b.is_broadcast() && b.is_multicast() && !b.is_unicast());
        let m = EthernetAddress([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
        assert!(!m.is_broadcast() && m.is_multicast() && !m.is_unicast());
        assert!(STATION.is_unicast() && !STATION.is_multicast() && !STATION.is_broadcast());
        assert!(STATION.is_local());
        assert!(!EthernetAddress([0x00, 0x1b, 0x21, 1, 2, 3]).is_local());
        assert!(!EthernetAddress([0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]).is_broadcast());
    }

    #[test]
    fn address_display_and_from_str() {
        assert_eq!(STATION.to_string(), "52:54:00:12:34:56");
        assert_eq!(format!("{:?}", EthernetAddress::BROADCAST), "ff:ff:ff:ff:ff:ff");
        assert_eq!("52:54:00:12:34:56".parse(), Ok(STATION));
        assert_eq!("52-54-00-12-34-56".parse(), Ok(STATION));
        assert_eq!("AA:bb:CC:dd:EE:ff".parse(), Ok(EthernetAddress([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])));
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52:54:00:12:34:5",
            "52:54:00:12:34:567",
            "52:54-00:12:34:56",
            "+2:54:00:12:34:56",
            "52:54:00:12:34:5g",
            "5254.0012.3456",
            "52:54:00:12:34:56:",
        ] {
            assert!(bad.parse::<EthernetAddress>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ethertype_names() {
        assert_eq!(EtherType::from(0x0800), EtherType::IPV4);
        assert_eq!(u16::from(EtherType::IPV6), 0x86dd);
        assert_eq!(EtherType::IPV6.to_string(), "IPv6");
        assert_eq!(format!("{:?}", EtherType::ARP), "EtherType::ARP");
        let repr = Repr { src: STATION, dst: EthernetAddress::BROADCAST, ethertype: EtherType::IPV4 };
        assert_eq!(repr.to_string(), "Ethernet src=52:54:00:12:34:56 dst=ff:ff:ff:ff:ff:ff type=IPv4");
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
                if let Ok(frame) = Frame::new_checked(&data[..]) {
                    let repr = Repr::parse(&frame).unwrap();
                    let _ = (repr.to_string(), frame.payload());
                }
            }

            #[test]
            fn emit_parse_round_trip(src in any::<[u8; 6]>(), dst in any::<[u8; 6]>(), ty in any::<u16>(),
                                     payload in proptest::collection::vec(any::<u8>(), 0..32)) {
                let repr = Repr { src: EthernetAddress(src), dst: EthernetAddress(dst), ethertype: EtherType(ty) };
                let mut buf = vec![0u8; repr.header_len() + payload.len()];
                let mut frame = Frame::new_unchecked(&mut buf[..]);
                repr.emit(&mut frame).unwrap();
                frame.payload_mut().copy_from_slice(&payload);
                let frame = Frame::new_checked(&buf[..]).unwrap();
                prop_assert_eq!(Repr::parse(&frame).unwrap(), repr);
                prop_assert_eq!(frame.payload(), &payload[..]);
            }

            #[test]
            fn address_display_parses_back(octets in any::<[u8; 6]>()) {
                let addr = EthernetAddress(octets);
                prop_assert_eq!(addr.to_string().parse::<EthernetAddress>(), Ok(addr));
            }
        }
    }
}
