//! UDP datagrams (RFC 768; over IPv6, RFC 8200 section 8.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Source Port          |       Destination Port        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |             Length            |           Checksum            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                          payload ...                          |
//! ```
//!
//! The buffer is the IP payload. Length (header plus payload) must be at least 8 and fit in the
//! buffer; [`Packet::payload`] is bounded by it, and octets after it are ignored. Jumbograms
//! (RFC 2675, Length 0) are not supported.
//!
//! # Checksum
//! The checksum covers an IP pseudo-header, so it needs the addresses of the enclosing packet,
//! passed as [`IpAddr`]s of the same family; a mixed pair is an error (or, for
//! [`Packet::verify_checksum`], a failed verification), never a panic.
//!
//! * Over IPv4 a zero checksum field means the sender computed none, and it is accepted (RFC 768);
//!   VXLAN senders usually do this (RFC 7348 section 5).
//! * Over IPv6 a zero checksum field is invalid and fails verification (RFC 8200 section 8.1; the
//!   RFC 6935 tunnel exception is not applied).
//! * A checksum that computes to zero is transmitted as `0xffff`, for both families.
//!
//! [`Repr::emit`] writes a zero ("none") checksum, since the payload may not be in place yet; call
//! [`Packet::fill_checksum`] once it is, which IPv6 requires. The datagram is summed by a single
//! [`checksum::sum`] pass over header and payload together.

use core::fmt;
use core::net::IpAddr;

use super::ipv4::IpProtocol;
use super::{checksum, Error, Result};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

mod field {
    pub type Field = core::ops::Range<usize>;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

/// Partial sum of the pseudo-header, or `None` for addresses of different families.
fn pseudo_header(src: IpAddr, dst: IpAddr, length: u16) -> Option<u32> {
    let proto = IpProtocol::UDP.0;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(checksum::pseudo_header_v4(s, d, proto, u32::from(length))),
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(checksum::pseudo_header_v6(s, d, proto, u32::from(length))),
        _ => None,
    }
}

const MIXED_FAMILIES: Error = Error::Malformed { field: "address family" };

/// A view of a UDP datagram in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Accessors panic if the buffer is shorter than the
    /// header; [`payload`](Packet::payload) and the checksum methods also if it is shorter than
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

    /// Checks that no accessor can panic: the buffer holds the header (else
    /// [`Error::Truncated`]), Length is at least 8 (else [`Error::Malformed`] `"length"`), and
    /// the buffer holds Length octets (else `Truncated`).
    pub fn check_len(&self) -> Result<()> {
        let data = self.buffer.as_ref();
        super::check_len(data, HEADER_LEN)?;
        let len = usize::from(self.len());
        if len < HEADER_LEN {
            return Err(Error::Malformed { field: "length" });
        }
        super::check_len(data, len)
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn read_u16(&self, f: field::Field) -> u16 {
        let d = &self.buffer.as_ref()[f];
        u16::from_be_bytes([d[0], d[1]])
    }

    /// The Source Port.
    pub fn src_port(&self) -> u16 {
        self.read_u16(field::SRC_PORT)
    }

    /// The Destination Port.
    pub fn dst_port(&self) -> u16 {
        self.read_u16(field::DST_PORT)
    }

    /// The Length field: header plus payload, in octets.
    #[allow(clippy::len_without_is_empty)] // a header field, not a container length
    pub fn len(&self) -> u16 {
        self.read_u16(field::LENGTH)
    }

    /// The Checksum field as stored.
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM)
    }

    /// Whether the checksum verifies for a datagram sent from `src` to `dst`.
    ///
    /// True for a zero checksum field over IPv4 (no checksum); false for a zero field over IPv6,
    /// and false when `src` and `dst` are of different families.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        let length = self.len();
        let Some(pseudo) = pseudo_header(src, dst, length) else {
            return false;
        };
        match (self.checksum(), src) {
            (0, IpAddr::V4(_)) => return true,
            (0, IpAddr::V6(_)) => return false,
            _ => {}
        }
        let datagram = &self.buffer.as_ref()[..usize::from(length)];
        checksum::finish(checksum::combine(&[pseudo, checksum::sum(datagram)])) == 0
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload: from the end of the header to Length.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn write_u16(&mut self, f: field::Field, value: u16) {
        self.buffer.as_mut()[f].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the Source Port.
    pub fn set_src_port(&mut self, value: u16) {
        self.write_u16(field::SRC_PORT, value);
    }

    /// Sets the Destination Port.
    pub fn set_dst_port(&mut self, value: u16) {
        self.write_u16(field::DST_PORT, value);
    }

    /// Sets the Length field.
    pub fn set_len(&mut self, value: u16) {
        self.write_u16(field::LENGTH, value);
    }

    /// Sets the Checksum field to `value` as given (0 means "no checksum" over IPv4).
    pub fn set_checksum(&mut self, value: u16) {
        self.write_u16(field::CHECKSUM, value);
    }

    /// Computes the checksum over the pseudo-header for `src` → `dst`, the header and Length
    /// octets of payload, and stores it (a computed zero is stored as `0xffff`). Call it after the
    /// payload and every header field are final.
    ///
    /// Fails with `Error::Malformed { field: "address family" }`, leaving the buffer unchanged,
    /// when `src` and `dst` are of different families.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) -> Result<()> {
        let length = self.len();
        let pseudo = pseudo_header(src, dst, length).ok_or(MIXED_FAMILIES)?;
        self.set_checksum(0);
        let datagram = &self.buffer.as_ref()[..usize::from(length)];
        let sum = checksum::finish(checksum::combine(&[pseudo, checksum::sum(datagram)]));
        self.set_checksum(if sum == 0 { 0xffff } else { sum });
        Ok(())
    }

    /// The payload, mutably: from the end of the header to Length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The meaning of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length in octets (Length minus the header).
    pub payload_len: usize,
}

impl Repr {
    /// Parses a datagram sent from `src` to `dst` and verifies its checksum (see the module docs
    /// for zero checksums).
    ///
    /// Fails as [`Packet::check_len`] does, then with `Error::Malformed { field: "address
    /// family" }` for a mixed address pair, then with [`Error::Checksum`].
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>, src: IpAddr, dst: IpAddr) -> Result<Self> {
        packet.check_len()?;
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(MIXED_FAMILIES);
        }
        if !packet.verify_checksum(src, dst) {
            return Err(Error::Checksum);
        }
        Ok(Self::parse_fields(packet))
    }

    /// Like [`Repr::parse`] but without the checksum, for datagrams whose checksum was already
    /// verified (checksum offload). Needs no addresses.
    pub fn parse_ignoring_checksum<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        Ok(Self::parse_fields(packet))
    }

    fn parse_fields<T: AsRef<[u8]>>(packet: &Packet<T>) -> Self {
        Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: usize::from(packet.len()) - HEADER_LEN,
        }
    }

    /// Length of the emitted header: always [`HEADER_LEN`].
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Length of the emitted datagram: header plus payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.payload_len)
    }

    /// Writes the header into the start of `packet` with a zero checksum, leaving the payload
    /// untouched (it may be written before or after). Follow with [`Packet::fill_checksum`] once
    /// the payload is in place, unless sending without a checksum over IPv4.
    ///
    /// Fails with `Error::Malformed { field: "payload_len" }` if the datagram would exceed 65535
    /// octets, and with [`Error::BufferTooSmall`] if the buffer cannot hold
    /// [`Repr::buffer_len`] octets; in both cases the buffer is left unchanged.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<()> {
        let len = u16::try_from(self.buffer_len()).map_err(|_| Error::Malformed { field: "payload_len" })?;
        let actual = packet.buffer.as_ref().len();
        if actual < usize::from(len) {
            return Err(Error::BufferTooSmall { needed: usize::from(len), actual });
        }
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(len);
        packet.set_checksum(0);
        Ok(())
    }
}

impl fmt::Display for Repr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UDP src={} dst={} len={}", self.src_port, self.dst_port, self.payload_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    const V4_SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1));
    const V4_DST: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2));

    // A DNS-port datagram 192.168.1.1:48896 -> 192.168.1.2:53 with a 4-octet payload. The
    // checksum 0x124d is checked against an independent implementation of RFC 768's sum.
    const V4_DATAGRAM: [u8; 12] = [0xbf, 0x00, 0x00, 0x35, 0x00, 0x0c, 0x12, 0x4d, 0xaa, 0x00, 0x00, 0xff];

    const V6_SRC: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    const V6_DST: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));

    // 2001:db8::1:12345 -> 2001:db8::2:8472 carrying deadbeef (the payload of the packet in the
    // IPv6 tests), checksum 0xb572.
    const V6_DATAGRAM: [u8; 12] = [0x30, 0x39, 0x21, 0x18, 0x00, 0x0c, 0xb5, 0x72, 0xde, 0xad, 0xbe, 0xef];

    // 10.0.0.1:0x1234 -> 10.0.0.2:0x5678 with a payload chosen so the checksum computes to zero,
    // which must go on the wire as 0xffff.
    const ZERO_SUM_SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const ZERO_SUM_DST: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    const ZERO_SUM: [u8; 10] = [0x12, 0x34, 0x56, 0x78, 0x00, 0x0a, 0xff, 0xff, 0x83, 0x2b];

    #[test]
    fn deconstruct_v4() {
        let packet = Packet::new_checked(&V4_DATAGRAM[..]).unwrap();
        assert_eq!(packet.src_port(), 48896);
        assert_eq!(packet.dst_port(), 53);
        assert_eq!(packet.len(), 12);
        assert_eq!(packet.checksum(), 0x124d);
        assert_eq!(packet.payload(), &[0xaa, 0x00, 0x00, 0xff]);
        assert!(packet.verify_checksum(V4_SRC, V4_DST));
        assert_eq!(Repr::parse(&packet, V4_SRC, V4_DST), Ok(Repr { src_port: 48896, dst_port: 53, payload_len: 4 }));
    }

    #[test]
    fn deconstruct_v6() {
        let packet = Packet::new_checked(&V6_DATAGRAM[..]).unwrap();
        assert!(packet.verify_checksum(V6_SRC, V6_DST));
        assert_eq!(Repr::parse(&packet, V6_SRC, V6_DST), Ok(Repr { src_port: 12345, dst_port: 8472, payload_len: 4 }));
        // Over the wrong pseudo-header it fails (swapping src and dst would not: the sum commutes).
        assert_eq!(Repr::parse(&packet, V6_SRC, V6_SRC), Err(Error::Checksum));
        assert!(!packet.verify_checksum(V4_SRC, V4_DST));
    }

    #[test]
    fn emit_and_fill_match_known_bytes() {
        for (bytes, src, dst) in [
            (&V4_DATAGRAM[..], V4_SRC, V4_DST),
            (&V6_DATAGRAM[..], V6_SRC, V6_DST),
            (&ZERO_SUM[..], ZERO_SUM_SRC, ZERO_SUM_DST),
        ] {
            let repr = Repr::parse(&Packet::new_checked(bytes).unwrap(), src, dst).unwrap();
            let mut buf = vec![0u8; repr.buffer_len()];
            let mut packet = Packet::new_unchecked(&mut buf[..]);
            repr.emit(&mut packet).unwrap();
            assert_eq!(packet.checksum(), 0);
            packet.payload_mut().copy_from_slice(&bytes[HEADER_LEN..]);
            packet.fill_checksum(src, dst).unwrap();
            assert_eq!(buf, bytes);
        }
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        let mut buf = ZERO_SUM;
        buf[6..8].fill(0x5a);
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        packet.fill_checksum(ZERO_SUM_SRC, ZERO_SUM_DST).unwrap();
        assert_eq!(packet.checksum(), 0xffff);
        assert!(packet.verify_checksum(ZERO_SUM_SRC, ZERO_SUM_DST));
    }

    #[test]
    fn zero_checksum_means_none_over_v4_only() {
        let mut buf = V4_DATAGRAM;
        buf[6..8].fill(0);
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert!(packet.verify_checksum(V4_SRC, V4_DST));
        assert!(Repr::parse(&packet, V4_SRC, V4_DST).is_ok());

        let mut buf = V6_DATAGRAM;
        buf[6..8].fill(0);
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert!(!packet.verify_checksum(V6_SRC, V6_DST));
        assert_eq!(Repr::parse(&packet, V6_SRC, V6_DST), Err(Error::Checksum));
    }

    #[test]
    fn zero_checksum_over_v6_is_rejected_even_when_the_sum_is_zero() {
        // A sender that sent 0 instead of 0xffff for a zero sum: fine over IPv4 (it means "none"),
        // invalid over IPv6.
        let mut buf = ZERO_SUM;
        buf[6..8].fill(0);
        let v6_src: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let v6_dst: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert!(!packet.verify_checksum(v6_src, v6_dst));
    }

    #[test]
    fn mixed_families_are_an_error_not_a_panic() {
        let packet = Packet::new_checked(&V4_DATAGRAM[..]).unwrap();
        assert!(!packet.verify_checksum(V4_SRC, V6_DST));
        assert!(!packet.verify_checksum(V6_SRC, V4_DST));
        assert_eq!(Repr::parse(&packet, V4_SRC, V6_DST), Err(MIXED_FAMILIES));
        // Even a checksum-less datagram: the addresses are wrong, not the datagram.
        let mut buf = V4_DATAGRAM;
        buf[6..8].fill(0);
        assert_eq!(Repr::parse(&Packet::new_unchecked(&buf[..]), V6_SRC, V4_DST), Err(MIXED_FAMILIES));
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        assert_eq!(packet.fill_checksum(V4_SRC, V6_DST), Err(MIXED_FAMILIES));
        assert_eq!(packet.checksum(), 0, "buffer changed on error");
    }

    #[test]
    fn checksum_catches_every_flipped_bit() {
        for (bytes, src, dst) in [(&V4_DATAGRAM[..], V4_SRC, V4_DST), (&V6_DATAGRAM[..], V6_SRC, V6_DST)] {
            for bit in 0..bytes.len() * 8 {
                let mut buf = bytes.to_vec();
                buf[bit / 8] ^= 1 << (bit % 8);
                // Flips in Length that make it too short or too long are caught by the length check.
                let Ok(packet) = Packet::new_checked(&buf[..]) else {
                    continue;
                };
                assert!(!packet.verify_checksum(src, dst), "bit {bit} not caught");
                assert_eq!(Repr::parse(&packet, src, dst), Err(Error::Checksum), "bit {bit}");
            }
        }
    }

    #[test]
    fn truncated_at_every_length() {
        for bytes in [&V4_DATAGRAM[..], &V6_DATAGRAM[..], &ZERO_SUM[..]] {
            for len in 0..bytes.len() {
                let buf = &bytes[..len];
                let needed = if len < HEADER_LEN { HEADER_LEN } else { bytes.len() };
                assert_eq!(Packet::new_checked(buf), Err(Error::Truncated { needed, actual: len }));
                let packet = Packet::new_unchecked(buf);
                assert!(Repr::parse(&packet, V4_SRC, V4_DST).is_err());
                assert!(Repr::parse_ignoring_checksum(&packet).is_err());
            }
        }
    }

    #[test]
    fn length_field_is_validated() {
        for bad in 0..HEADER_LEN as u16 {
            let mut buf = V4_DATAGRAM;
            buf[4..6].copy_from_slice(&bad.to_be_bytes());
            assert_eq!(Packet::new_checked(&buf[..]), Err(Error::Malformed { field: "length" }));
        }
        // Trailing octets after Length are not payload.
        let mut buf = V4_DATAGRAM.to_vec();
        buf.extend_from_slice(&[1, 2, 3]);
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(packet.payload().len(), 4);
        assert!(packet.verify_checksum(V4_SRC, V4_DST));
        // A header-only datagram is fine.
        let empty = [0, 1, 0, 2, 0, 8, 0, 0];
        let packet = Packet::new_checked(&empty[..]).unwrap();
        assert!(packet.payload().is_empty());
        assert_eq!(Repr::parse_ignoring_checksum(&packet).unwrap().payload_len, 0);
    }

    #[test]
    fn parse_ignoring_checksum_skips_only_the_checksum() {
        let mut buf = V6_DATAGRAM;
        buf[6] ^= 0x10;
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Repr::parse(&packet, V6_SRC, V6_DST), Err(Error::Checksum));
        assert_eq!(
            Repr::parse_ignoring_checksum(&packet),
            Ok(Repr { src_port: 12345, dst_port: 8472, payload_len: 4 })
        );
    }

    #[test]
    fn emit_errors_leave_buffer_alone() {
        let repr = Repr { src_port: 1, dst_port: 2, payload_len: 4 };
        let mut short = [0u8; 11];
        assert_eq!(
            repr.emit(&mut Packet::new_unchecked(&mut short[..])),
            Err(Error::BufferTooSmall { needed: 12, actual: 11 })
        );
        assert_eq!(short, [0; 11]);
        let mut buf = vec![0u8; 70_000];
        let huge = Repr { payload_len: 65536 - HEADER_LEN, ..repr };
        assert_eq!(huge.emit(&mut Packet::new_unchecked(&mut buf[..])), Err(Error::Malformed { field: "payload_len" }));
        assert!(buf.iter().all(|&b| b == 0));
        let max = Repr { payload_len: 65535 - HEADER_LEN, ..repr };
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        max.emit(&mut packet).unwrap();
        packet.fill_checksum(V6_SRC, V6_DST).unwrap();
        assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap(), V6_SRC, V6_DST), Ok(max));
        assert_eq!(Repr { payload_len: usize::MAX, ..repr }.buffer_len(), usize::MAX);
    }

    #[test]
    fn display() {
        let repr = Repr { src_port: 1, dst_port: 8472, payload_len: 50 };
        assert_eq!(repr.to_string(), "UDP src=1 dst=8472 len=50");
        let packet = Packet::new_unchecked(V4_DATAGRAM);
        assert_eq!(packet.as_ref(), &V4_DATAGRAM);
        assert_eq!(packet.into_inner(), V4_DATAGRAM);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn arb_addrs() -> impl Strategy<Value = (IpAddr, IpAddr)> {
            prop_oneof![
                (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(s, d)| (IpAddr::from(s), IpAddr::from(d))),
                (any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(s, d)| (IpAddr::from(s), IpAddr::from(d))),
            ]
        }

        proptest! {
            #[test]
            fn emit_fill_parse_round_trip(src_port in any::<u16>(), dst_port in any::<u16>(),
                                          payload in proptest::collection::vec(any::<u8>(), 0..64),
                                          (src, dst) in arb_addrs()) {
                let repr = Repr { src_port, dst_port, payload_len: payload.len() };
                let mut buf = vec![0u8; repr.buffer_len()];
                let mut packet = Packet::new_unchecked(&mut buf[..]);
                repr.emit(&mut packet).unwrap();
                packet.payload_mut().copy_from_slice(&payload);
                packet.fill_checksum(src, dst).unwrap();
                prop_assert_ne!(packet.checksum(), 0);
                let packet = Packet::new_checked(&buf[..]).unwrap();
                prop_assert_eq!(Repr::parse(&packet, src, dst), Ok(repr));
                prop_assert_eq!(packet.payload(), &payload[..]);
            }

            #[test]
            fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40), (src, dst) in arb_addrs()) {
                let packet = Packet::new_unchecked(&data[..]);
                let _ = (Repr::parse(&packet, src, dst), Repr::parse_ignoring_checksum(&packet));
                if let Ok(p) = Packet::new_checked(&data[..]) {
                    let _ = (p.verify_checksum(src, dst), p.verify_checksum(src, V4_DST), p.payload());
                }
            }
        }
    }
}
