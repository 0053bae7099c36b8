//! VXLAN headers (RFC 7348).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|                  Reserved                     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          VXLAN Network Identifier (VNI)       |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 inner Ethernet frame ...                      |
//! ```
//!
//! The buffer is a UDP payload. The I flag must be set ([`Packet::new_checked`] and
//! [`Repr::parse`] fail with `Error::Malformed { field: "flags" }` otherwise); as RFC 7348
//! requires, every reserved bit (the other seven flag bits and both reserved fields) is ignored on
//! receive and written as zero by [`Repr::emit`]. Extensions that reuse reserved bits (VXLAN-GPE,
//! Group Based Policy) are not interpreted. The payload is the inner Ethernet frame, without FCS.
//!
//! # Ports
//! IANA assigned UDP port 4789 ([`IANA_PORT`]); the Linux kernel's `vxlan` driver (when no
//! `dstport` is given), flannel and Cilium use 8472 ([`DEFAULT_PORT`]), which is what vxwg uses by
//! default.

use core::fmt;

use super::{check_len, Error, Result};

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;

/// Default UDP destination port: 8472, as used by Linux, flannel and Cilium.
pub const DEFAULT_PORT: u16 = 8472;

/// The IANA-assigned VXLAN UDP port (RFC 7348 section 5).
pub const IANA_PORT: u16 = 4789;

mod field {
    pub type Field = core::ops::Range<usize>;

    pub const FLAGS: usize = 0;
    pub const RESERVED_1: Field = 1..4;
    pub const VNI: Field = 4..7;
    pub const RESERVED_2: usize = 7;
}

/// The I flag: the VNI is valid. The only flag RFC 7348 defines.
const FLAG_I: u8 = 0x08;

/// A 24-bit VXLAN Network Identifier. The constructor guarantees it is below 2^24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Vni(u32);

impl Vni {
    /// The largest VNI, 2^24 − 1.
    pub const MAX: Self = Self(0x00ff_ffff);

    /// The VNI `value`, or `None` if it does not fit in 24 bits.
    pub const fn new(value: u32) -> Option<Self> {
        if value <= Self::MAX.0 {
            Some(Self(value))
        } else {
            None
        }
    }

    /// The VNI as a number below 2^24.
    pub const fn get(self) -> u32 {
        self.0
    }

    const fn from_be_bytes(b: [u8; 3]) -> Self {
        Self(((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32)
    }

    const fn to_be_bytes(self) -> [u8; 3] {
        let [_, a, b, c] = self.0.to_be_bytes();
        [a, b, c]
    }
}

impl TryFrom<u32> for Vni {
    type Error = Error;

    /// Fails with `Error::Malformed { field: "vni" }` for values of 2^24 and above.
    fn try_from(value: u32) -> Result<Self> {
        Self::new(value).ok_or(Error::Malformed { field: "vni" })
    }
}

impl From<Vni> for u32 {
    fn from(vni: Vni) -> Self {
        vni.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A view of a VXLAN packet (header and inner frame) in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Accessors panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`], and checks that the I flag is set (else
    /// `Error::Malformed { field: "flags" }`).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        packet.check_flags()?;
        Ok(packet)
    }

    /// Fails with [`Error::Truncated`] if the buffer cannot hold the header. When this succeeds,
    /// no accessor panics.
    pub fn check_len(&self) -> Result<()> {
        check_len(self.buffer.as_ref(), HEADER_LEN)
    }

    fn check_flags(&self) -> Result<()> {
        if self.vni_valid() {
            Ok(())
        } else {
            Err(Error::Malformed { field: "flags" })
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The flags octet as received, reserved bits included.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Whether the I flag is set, i.e. the VNI field is meaningful.
    pub fn vni_valid(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    /// The VXLAN Network Identifier.
    pub fn vni(&self) -> Vni {
        let d = &self.buffer.as_ref()[field::VNI];
        Vni::from_be_bytes([d[0], d[1], d[2]])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The inner Ethernet frame: everything after the header.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the flags octet as given.
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Sets the VNI (leaving the reserved octet after it alone).
    pub fn set_vni(&mut self, vni: Vni) {
        self.buffer.as_mut()[field::VNI].copy_from_slice(&vni.to_be_bytes());
    }

    /// Zeroes both reserved fields (not the reserved flag bits; see [`Packet::set_flags`]).
    pub fn clear_reserved(&mut self) {
        let data = self.buffer.as_mut();
        data[field::RESERVED_1].fill(0);
        data[field::RESERVED_2] = 0;
    }

    /// The inner Ethernet frame, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The meaning of a VXLAN header: just the VNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// The VXLAN Network Identifier.
    pub vni: Vni,
}

impl Repr {
    /// Parses a header, failing as [`Packet::new_checked`] does. Reserved bits are ignored.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        packet.check_flags()?;
        Ok(Self { vni: packet.vni() })
    }

    /// Length of the emitted header: always [`HEADER_LEN`].
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (I flag set, every reserved bit zero) into the first [`HEADER_LEN`]
    /// bytes of `packet`, leaving the inner frame untouched. Fails with
    /// [`Error::BufferTooSmall`] if the buffer is shorter than the header.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<()> {
        let actual = packet.buffer.as_ref().len();
        if actual < HEADER_LEN {
            return Err(Error::BufferTooSmall { needed: HEADER_LEN, actual });
        }
        packet.set_flags(FLAG_I);
        packet.clear_reserved();
        packet.set_vni(self.vni);
        Ok(())
    }
}

impl fmt::Display for Repr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VXLAN vni={}", self.vni)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // VNI 0x123456 (1193046) carrying the start of an inner Ethernet frame
    // (dst 02:00:00:00:00:02, src 02:00:00:00:00:01, IPv4).
    const PACKET: [u8; 22] = [
        0x08, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x00, //
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
    ];

    fn vni(v: u32) -> Vni {
        Vni::new(v).unwrap()
    }

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(packet.flags(), 0x08);
        assert!(packet.vni_valid());
        assert_eq!(packet.vni(), vni(0x12_3456));
        assert_eq!(packet.vni().get(), 1_193_046);
        assert_eq!(packet.payload(), &PACKET[8..]);
        assert_eq!(Repr::parse(&packet), Ok(Repr { vni: vni(0x12_3456) }));
    }

    #[test]
    fn emit_matches_bytes() {
        let mut buf = PACKET;
        buf[..8].fill(0xff);
        Repr { vni: vni(0x12_3456) }.emit(&mut Packet::new_unchecked(&mut buf[..])).unwrap();
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn i_flag_is_required() {
        for flags in [0x00, 0xf7, 0x80, 0x01] {
            let mut buf = PACKET;
            buf[0] = flags;
            assert_eq!(Packet::new_checked(&buf[..]), Err(Error::Malformed { field: "flags" }));
            assert_eq!(Repr::parse(&Packet::new_unchecked(&buf[..])), Err(Error::Malformed { field: "flags" }));
        }
    }

    #[test]
    fn reserved_bits_ignored_on_parse_zeroed_on_emit() {
        let mut buf = PACKET;
        buf[0] = 0xff;
        buf[1..4].fill(0xa5);
        buf[7] = 0x5a;
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(packet.flags(), 0xff);
        let repr = Repr::parse(&packet).unwrap();
        assert_eq!(repr.vni, vni(0x12_3456));
        let mut out = buf;
        repr.emit(&mut Packet::new_unchecked(&mut out[..])).unwrap();
        assert_eq!(out, PACKET);
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..HEADER_LEN {
            let buf = &PACKET[..len];
            assert_eq!(Packet::new_checked(buf), Err(Error::Truncated { needed: HEADER_LEN, actual: len }));
            assert!(Repr::parse(&Packet::new_unchecked(buf)).is_err());
        }
        // A header with no inner frame parses; the Ethernet layer rejects the empty frame.
        let packet = Packet::new_checked(&PACKET[..HEADER_LEN]).unwrap();
        assert!(packet.payload().is_empty());
    }

    #[test]
    fn emit_needs_room() {
        let mut buf = [0u8; 7];
        assert_eq!(
            Repr { vni: Vni::MAX }.emit(&mut Packet::new_unchecked(&mut buf[..])),
            Err(Error::BufferTooSmall { needed: 8, actual: 7 })
        );
        assert_eq!(buf, [0; 7]);
    }

    #[test]
    fn vni_range() {
        assert_eq!(Vni::new(0), Some(Vni::default()));
        assert_eq!(Vni::new(0x00ff_ffff), Some(Vni::MAX));
        assert_eq!(Vni::new(0x0100_0000), None);
        assert_eq!(Vni::new(u32::MAX), None);
        assert_eq!(Vni::try_from(0x0100_0000), Err(Error::Malformed { field: "vni" }));
        assert_eq!(Vni::try_from(42).map(u32::from), Ok(42));
        assert_eq!(Vni::MAX.to_string(), "16777215");
        assert_eq!(Repr { vni: vni(1) }.to_string(), "VXLAN vni=1");
    }

    #[test]
    fn setters() {
        let mut buf = [0xffu8; 10];
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        packet.set_flags(FLAG_I);
        packet.set_vni(vni(7));
        assert_eq!(packet.as_ref(), &[0x08, 0xff, 0xff, 0xff, 0, 0, 7, 0xff, 0xff, 0xff]);
        packet.clear_reserved();
        packet.payload_mut().copy_from_slice(&[1, 2]);
        assert_eq!(packet.into_inner(), [0x08, 0, 0, 0, 0, 0, 7, 0, 1, 2]);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn emit_parse_round_trip(v in 0..=Vni::MAX.get(), payload in proptest::collection::vec(any::<u8>(), 0..32)) {
                let repr = Repr { vni: vni(v) };
                let mut buf = vec![0u8; repr.header_len() + payload.len()];
                let mut packet = Packet::new_unchecked(&mut buf[..]);
                repr.emit(&mut packet).unwrap();
                packet.payload_mut().copy_from_slice(&payload);
                let packet = Packet::new_checked(&buf[..]).unwrap();
                prop_assert_eq!(Repr::parse(&packet), Ok(repr));
                prop_assert_eq!(packet.payload(), &payload[..]);
            }

            #[test]
            fn vni_constructor_matches_range(v in any::<u32>()) {
                prop_assert_eq!(Vni::new(v).is_some(), v < 1 << 24);
            }
        }
    }
}
