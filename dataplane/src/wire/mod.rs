//! Wire formats as checked, zero-copy views over byte slices.
//!
//! Every format follows the same shape (after smoltcp's `wire` module):
//!
//! * `Packet<T: AsRef<[u8]>>` (or `Frame`/`Message`) wraps a buffer. `new_unchecked` wraps without
//!   looking; `new_checked` validates lengths (and fixed fields) so that every accessor afterwards is
//!   in bounds. Accessors read fields straight from the buffer; setters exist when `T: AsMut<[u8]>`.
//! * A private `mod field` lists the byte ranges of the header.
//! * An owned `Repr` carries the high-level meaning, with `parse(&Packet)` and `emit(&mut Packet)`.
//!
//! # No-panic contract
//! Nothing in this module panics on any input reachable from the network: `new_checked` and `parse`
//! return [`Error`] for short, truncated or malformed buffers. Accessors on a packet created with
//! `new_unchecked` may panic on a short buffer; use them only on buffers the caller sized itself.
//! Every parser here has a fuzz target in `fuzz/fuzz_targets/`.
#![forbid(unsafe_code)]

pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod udp;
pub mod vxlan;
pub mod wireguard;

/// Why a buffer was rejected by a parser. Cheap to construct and copy, for the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the header or than the length the header declares.
    #[error("truncated: need {needed} bytes, have {actual}")]
    Truncated { needed: usize, actual: usize },
    /// A fixed field (version, type, reserved bits, flags) has a value this format does not allow.
    #[error("malformed {field}")]
    Malformed { field: &'static str },
    /// A checksum does not verify.
    #[error("bad checksum")]
    Checksum,
    /// The buffer given to `emit` is too small for the representation.
    #[error("buffer too small: need {needed} bytes, have {actual}")]
    BufferTooSmall { needed: usize, actual: usize },
}

/// Result of a wire-format operation.
pub type Result<T> = core::result::Result<T, Error>;

/// Fails with [`Error::Truncated`] unless `buf` holds at least `needed` bytes.
#[inline]
pub(crate) fn check_len(buf: &[u8], needed: usize) -> Result<()> {
    if buf.len() < needed {
        Err(Error::Truncated { needed, actual: buf.len() })
    } else {
        Ok(())
    }
}

/// The Internet checksum (RFC 1071) and its pseudo-header helpers.
pub mod checksum {
    use core::net::{Ipv4Addr, Ipv6Addr};

    /// One's-complement sum of `data`, folded to 16 bits; combine with [`combine`] and [`finish`].
    ///
    /// One's-complement addition does not care about byte order (RFC 1071 section 2(B)): the
    /// data is summed as native-endian 32-bit words into a 64-bit accumulator (no carries to
    /// chase), folded, and byte-swapped once at the end on little-endian machines.
    pub fn sum(data: &[u8]) -> u32 {
        let mut acc: u64 = 0;
        let mut chunks = data.chunks_exact(32);
        for c in &mut chunks {
            for w in c.chunks_exact(8) {
                let v = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
                acc += (v & 0xffff_ffff) + (v >> 32);
            }
        }
        let mut words = chunks.remainder().chunks_exact(4);
        for w in &mut words {
            acc += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
        }
        let mut rest = words.remainder().chunks_exact(2);
        for w in &mut rest {
            acc += u64::from(u16::from_ne_bytes([w[0], w[1]]));
        }
        if let [last] = rest.remainder() {
            // A trailing byte is the high half of a big-endian word padded with zero.
            acc += u64::from(u16::from_ne_bytes([*last, 0]));
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        // Native order back to network order (a no-op on big-endian machines).
        u32::from(u16::from_be(acc as u16))
    }

    /// Adds partial sums.
    pub fn combine(parts: &[u32]) -> u32 {
        let mut acc: u64 = parts.iter().map(|&p| u64::from(p)).sum();
        while acc > 0xffff_ffff {
            acc = (acc & 0xffff_ffff) + (acc >> 32);
        }
        acc as u32
    }

    /// Folds a partial sum to 16 bits and complements it: the value to store in a checksum field.
    pub fn finish(mut acc: u32) -> u16 {
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    /// Partial sum of the IPv4 pseudo-header for an upper-layer protocol.
    pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u32) -> u32 {
        let mut b = [0u8; 12];
        b[0..4].copy_from_slice(&src.octets());
        b[4..8].copy_from_slice(&dst.octets());
        b[9] = protocol;
        b[10..12].copy_from_slice(&(length as u16).to_be_bytes());
        sum(&b)
    }

    /// Partial sum of the IPv6 pseudo-header for an upper-layer protocol.
    pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> u32 {
        let mut b = [0u8; 40];
        b[0..16].copy_from_slice(&src.octets());
        b[16..32].copy_from_slice(&dst.octets());
        b[32..36].copy_from_slice(&length.to_be_bytes());
        b[39] = next_header;
        sum(&b)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rfc1071_example() {
            // RFC 1071 section 3 worked example: sum 0x2ddf0 folds to 0xddf2.
            let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
            assert_eq!(finish(sum(&data)), !0xddf2);
        }

        #[test]
        fn odd_length_pads_with_zero() {
            assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        }

        /// The textbook sum: big-endian 16-bit words, carries folded.
        fn reference(data: &[u8]) -> u16 {
            let mut acc: u64 = 0;
            for c in data.chunks(2) {
                acc += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
            while acc > 0xffff {
                acc = (acc & 0xffff) + (acc >> 16);
            }
            acc as u16
        }

        proptest::proptest! {
            #[test]
            fn matches_the_textbook_sum(data in proptest::collection::vec(proptest::num::u8::ANY, 0..3000)) {
                proptest::prop_assert_eq!(finish(sum(&data)), !reference(&data));
            }
        }

        #[test]
        fn all_ones_and_all_zeros() {
            assert_eq!(finish(sum(&[0u8; 1500])), 0xffff);
            assert_eq!(finish(sum(&[0xffu8; 1500])), 0x0000);
            assert_eq!(finish(sum(&[])), 0xffff);
        }
    }
}
