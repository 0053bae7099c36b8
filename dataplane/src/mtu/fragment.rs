//! IPv4 fragmentation at the inner layer (RFC 791 section 3.2, "Fragmentation").

use super::Error;
use crate::wire::ipv4;

/// Splits an IPv4 packet without DF into fragments of at most `mtu` octets, each written into a
/// caller buffer: pull them with [`Fragmenter::next_into`] until it returns `Ok(None)`.
///
/// Each fragment carries the original Identification, TTL, Protocol, DSCP/ECN and addresses, DF
/// clear, MF set on all but the last (and on the last too when the original was itself a non-last
/// fragment), its offset in 8-octet units (added to the original's offset, so fragments may be
/// fragmented again), and a recomputed header checksum. The first fragment keeps every option;
/// the others keep only the options with the copy bit set (RFC 791), padded with End of Option
/// List to a multiple of 4. Every fragment but the last carries a multiple of 8 data octets.
///
/// A packet that already fits is produced once, unchanged (DF included; link padding after Total
/// Length dropped).
#[derive(Debug, Clone)]
pub struct Fragmenter<'a> {
    /// The original header (with all options).
    header: &'a [u8],
    /// The original payload (bounded by Total Length).
    payload: &'a [u8],
    /// Options with the copy bit, for the fragments after the first.
    copied: [u8; 40],
    /// Header length of the fragments after the first: 20 + copied options, padded.
    later_header_len: usize,
    mtu: usize,
    /// Payload octets already produced.
    done: usize,
    /// Whether the original had MF set (it was itself a fragment, not the last).
    orig_more: bool,
    /// The original's fragment offset, in octets.
    orig_offset: usize,
    /// Whether the last fragment has been produced.
    finished: bool,
}

impl<'a> Fragmenter<'a> {
    /// Prepares to split `packet` for a path MTU of `mtu` (values above 65535 count as 65535).
    ///
    /// Fails with [`Error::Malformed`] if the packet or its options do not parse,
    /// [`Error::DontFragment`] if it is larger than `mtu` and has DF set, and
    /// [`Error::MtuTooSmall`] if `mtu` cannot hold a header plus 8 data octets.
    pub fn new(packet: &'a [u8], mtu: usize) -> Result<Self, Error> {
        let p = ipv4::Packet::new_checked(packet)?;
        let mtu = mtu.min(usize::from(u16::MAX));
        let total_len = usize::from(p.total_len());
        let header_len = p.header_len();
        let (copied, copied_len) = copied_options(p.options())?;
        let later_header_len = ipv4::HEADER_LEN + copied_len.next_multiple_of(4);
        let orig_offset = usize::from(p.frag_offset());
        if orig_offset + (total_len - header_len) > usize::from(u16::MAX) {
            return Err(crate::wire::Error::Malformed { field: "fragment offset" }.into());
        }
        if total_len > mtu {
            if p.dont_frag() {
                return Err(Error::DontFragment);
            }
            let minimum = header_len.max(later_header_len) + 8;
            if mtu < minimum {
                return Err(Error::MtuTooSmall { mtu, minimum });
            }
        }
        Ok(Self {
            header: &packet[..header_len],
            payload: &packet[header_len..total_len],
            copied,
            later_header_len,
            mtu,
            done: 0,
            orig_more: p.more_frags(),
            orig_offset,
            finished: false,
        })
    }

    /// Whether the packet fits `mtu` and will be produced whole, as one "fragment".
    pub fn fits(&self) -> bool {
        self.header.len() + self.payload.len() <= self.mtu
    }

    /// Largest fragment this splitter produces: a buffer of this size always suffices for
    /// [`Fragmenter::next_into`].
    pub fn max_fragment_len(&self) -> usize {
        self.mtu.min(self.header.len() + self.payload.len())
    }

    /// Writes the next fragment into the start of `out` and returns its length, or `Ok(None)` once
    /// all have been produced. Fails with [`Error::BufferTooSmall`] (producing nothing; a retry
    /// with a larger buffer resumes) when `out` cannot hold the fragment.
    pub fn next_into(&mut self, out: &mut [u8]) -> Result<Option<usize>, Error> {
        if self.finished {
            return Ok(None);
        }
        if self.fits() {
            // Produced whole and unchanged (a DF packet that fits keeps its DF).
            let (h, len) = (self.header.len(), self.header.len() + self.payload.len());
            if out.len() < len {
                return Err(Error::BufferTooSmall { needed: len, actual: out.len() });
            }
            out[..h].copy_from_slice(self.header);
            out[h..len].copy_from_slice(self.payload);
            self.finished = true;
            return Ok(Some(len));
        }
        // Every fragment but the last carries at least 8 octets, so only the first starts at 0.
        let first = self.done == 0;
        let header_len = if first { self.header.len() } else { self.later_header_len };
        let remaining = self.payload.len() - self.done;
        // new() checked that the MTU holds the header plus 8 octets whenever splitting is needed.
        let room = self.mtu.saturating_sub(header_len);
        let (data_len, last) = if remaining <= room { (remaining, true) } else { (room & !7, false) };
        let len = header_len + data_len;
        if out.len() < len {
            return Err(Error::BufferTooSmall { needed: len, actual: out.len() });
        }
        let frag = &mut out[..len];
        if first {
            frag[..header_len].copy_from_slice(self.header);
        } else {
            frag[..ipv4::HEADER_LEN].copy_from_slice(&self.header[..ipv4::HEADER_LEN]);
            frag[ipv4::HEADER_LEN..header_len].copy_from_slice(&self.copied[..header_len - ipv4::HEADER_LEN]);
        }
        frag[header_len..].copy_from_slice(&self.payload[self.done..self.done + data_len]);
        let offset = self.orig_offset + self.done;
        let mut p = ipv4::Packet::new_unchecked(&mut *frag);
        p.set_header_len(header_len);
        // len <= mtu <= 65535.
        p.set_total_len(len as u16);
        p.clear_flags();
        p.set_more_frags(!last || self.orig_more);
        // new() checked that offsets stay within 65535.
        p.set_frag_offset(offset as u16);
        p.fill_checksum();
        self.done += data_len;
        self.finished = last;
        Ok(Some(len))
    }
}

/// The options of `options` with the copy bit set, concatenated (EOL-padded by the caller's
/// zeroed tail), and their length.
fn copied_options(options: &[u8]) -> Result<([u8; 40], usize), Error> {
    const BAD: crate::wire::Error = crate::wire::Error::Malformed { field: "options" };
    let mut copied = [0u8; 40];
    let mut len = 0;
    let mut at = 0;
    while let Some(&kind) = options.get(at) {
        match kind {
            0 => break,
            1 => at += 1,
            _ => {
                let opt_len = usize::from(*options.get(at + 1).ok_or(BAD)?);
                if opt_len < 2 || at + opt_len > options.len() {
                    return Err(BAD.into());
                }
                if kind & 0x80 != 0 {
                    copied[len..len + opt_len].copy_from_slice(&options[at..at + opt_len]);
                    len += opt_len;
                }
                at += opt_len;
            }
        }
    }
    Ok((copied, len))
}

/// Splits `packet` as [`Fragmenter`] does, building each fragment in `scratch` and handing it to
/// `out` in order. Returns the number of fragments (1 when the packet already fits).
///
/// Everything is checked before the first fragment is handed out: on error `out` is never called.
/// A `scratch` of `mtu` octets (or of the packet's length, if smaller) always suffices; a smaller
/// one fails with [`Error::BufferTooSmall`]. The other errors are those of [`Fragmenter::new`].
pub fn fragment_v4(packet: &[u8], mtu: usize, scratch: &mut [u8], out: &mut impl FnMut(&[u8])) -> Result<usize, Error> {
    let mut fragmenter = Fragmenter::new(packet, mtu)?;
    let needed = fragmenter.max_fragment_len();
    if scratch.len() < needed {
        return Err(Error::BufferTooSmall { needed, actual: scratch.len() });
    }
    let mut count = 0;
    while let Some(len) = fragmenter.next_into(scratch)? {
        out(&scratch[..len]);
        count += 1;
    }
    Ok(count)
}
