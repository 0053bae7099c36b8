//! Cutting a TSO/USO super-packet from the TUN device into wire-sized segments, and completing the
//! checksums the kernel left open.

use super::vnet::{GsoType, VirtioNetHdr};
use crate::wire::checksum;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Why a super-packet could not be split (it is dropped; TCP retransmits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// The headers do not describe a packet of this length, or the protocol does not match the
    /// segmentation asked for.
    #[error("malformed super-packet: {0}")]
    Malformed(&'static str),
    /// A segmentation type vxwg does not do.
    #[error("unsupported segmentation type {0:?}")]
    Unsupported(GsoType),
    /// More segments than buffers given.
    #[error("{needed} segments but room for {room}")]
    NoRoom { needed: usize, room: usize },
    /// A buffer is too short for a segment at the given headroom.
    #[error("segment buffer too short: need {needed} bytes, have {actual}")]
    BufferTooShort { needed: usize, actual: usize },
}

/// Headers of a packet about to be cut.
#[derive(Clone, Copy)]
struct Layout {
    v4: bool,
    /// IP header length.
    ip_len: usize,
    /// Transport header length.
    l4_len: usize,
    proto: u8,
}

impl Layout {
    fn parse(p: &[u8], proto: u8) -> Result<Layout, SplitError> {
        let (v4, ip_len) = match p.first().map(|b| b >> 4) {
            Some(4) => {
                let ihl = usize::from(p[0] & 0x0f) * 4;
                if ihl < 20 || p.len() < ihl {
                    return Err(SplitError::Malformed("IPv4 header length"));
                }
                if p[9] != proto {
                    return Err(SplitError::Malformed("IPv4 protocol does not match the segmentation type"));
                }
                (true, ihl)
            }
            Some(6) => {
                if p.len() < 40 {
                    return Err(SplitError::Malformed("IPv6 header length"));
                }
                if p[6] != proto {
                    return Err(SplitError::Malformed("IPv6 next header does not match the segmentation type"));
                }
                (false, 40)
            }
            _ => return Err(SplitError::Malformed("not IPv4 or IPv6")),
        };
        let l4_len = if proto == PROTO_TCP {
            let off = *p.get(ip_len + 12).ok_or(SplitError::Malformed("TCP header truncated"))?;
            usize::from(off >> 4) * 4
        } else {
            8
        };
        if l4_len < if proto == PROTO_TCP { 20 } else { 8 } || p.len() < ip_len + l4_len {
            return Err(SplitError::Malformed("transport header length"));
        }
        Ok(Layout { v4, ip_len, l4_len, proto })
    }

    fn headers(&self) -> usize {
        self.ip_len + self.l4_len
    }

    /// Makes `seg` (headers copied from the super-packet, then its payload) a valid packet:
    /// lengths, IPv4 ID and header checksum, TCP sequence number and flags, full L4 checksum.
    fn fix(&self, seg: &mut [u8], index: usize, last: bool, payload_offset: usize) {
        let total = seg.len();
        let l4 = self.ip_len;
        if self.v4 {
            seg[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            let id = u16::from_be_bytes([seg[4], seg[5]]).wrapping_add(index as u16);
            seg[4..6].copy_from_slice(&id.to_be_bytes());
            seg[10..12].fill(0);
            let c = checksum::finish(checksum::sum(&seg[..self.ip_len]));
            seg[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            seg[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        }
        let csum_at = if self.proto == PROTO_TCP {
            let seq = u32::from_be_bytes([seg[l4 + 4], seg[l4 + 5], seg[l4 + 6], seg[l4 + 7]])
                .wrapping_add(payload_offset as u32);
            seg[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
            if !last {
                seg[l4 + 13] &= !(TCP_FIN | TCP_PSH);
            }
            if index != 0 {
                seg[l4 + 13] &= !TCP_CWR;
            }
            l4 + 16
        } else {
            seg[l4 + 4..l4 + 6].copy_from_slice(&((total - l4) as u16).to_be_bytes());
            l4 + 6
        };
        seg[csum_at..csum_at + 2].fill(0);
        let c = l4_checksum(seg, self.v4, l4, self.proto);
        seg[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// Full transport checksum of `packet` whose transport header starts at `l4`.
fn l4_checksum(packet: &[u8], v4: bool, l4: usize, proto: u8) -> u16 {
    let len = (packet.len() - l4) as u32;
    let pseudo = if v4 {
        let s: [u8; 4] = packet[12..16].try_into().expect("IPv4 header checked");
        let d: [u8; 4] = packet[16..20].try_into().expect("IPv4 header checked");
        checksum::pseudo_header_v4(s.into(), d.into(), proto, len)
    } else {
        let s: [u8; 16] = packet[8..24].try_into().expect("IPv6 header checked");
        let d: [u8; 16] = packet[24..40].try_into().expect("IPv6 header checked");
        checksum::pseudo_header_v6(s.into(), d.into(), proto, len)
    };
    let c = checksum::finish(checksum::combine(&[pseudo, checksum::sum(&packet[l4..])]));
    // UDP sends a computed 0 as 0xffff (0 means "no checksum").
    if c == 0 && proto == PROTO_UDP {
        0xffff
    } else {
        c
    }
}

/// Completes a checksum the kernel left open (`NEEDS_CSUM`): the field at `csum_start +
/// csum_offset` holds the pseudo-header sum; the sum over everything from `csum_start` goes there.
pub fn complete_checksum(packet: &mut [u8], csum_start: usize, csum_offset: usize) -> Result<(), SplitError> {
    let at = csum_start.checked_add(csum_offset).ok_or(SplitError::Malformed("checksum offset"))?;
    if at + 2 > packet.len() {
        return Err(SplitError::Malformed("checksum offset beyond the packet"));
    }
    let mut c = checksum::finish(checksum::sum(&packet[csum_start..]));
    // Only UDP's field sits 6 bytes in; a computed 0 goes out as 0xffff there.
    if c == 0 && csum_offset == 6 {
        c = 0xffff;
    }
    packet[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Splits the packet at `bufs[0][headroom..headroom + len]`, described by `hdr`, into segments of
/// at most `hdr.gso_size` payload bytes: the first stays where it is, the others are written at
/// `headroom` in `bufs[1..]`. Sets `lens[i]` for each and returns how many there are. Every
/// segment leaves with complete lengths and checksums; a packet without segmentation just gets
/// its checksum completed if the kernel left it open.
pub fn split<B: AsMut<[u8]>>(
    hdr: &VirtioNetHdr,
    bufs: &mut [B],
    headroom: usize,
    len: usize,
    lens: &mut [usize],
) -> Result<usize, SplitError> {
    let room = bufs.len().min(lens.len());
    let Some((first, rest)) = bufs.split_first_mut() else { return Err(SplitError::NoRoom { needed: 1, room: 0 }) };
    if room == 0 {
        return Err(SplitError::NoRoom { needed: 1, room: 0 });
    }
    let first = first.as_mut();
    let actual = first.len();
    let packet =
        first.get_mut(headroom..headroom + len).ok_or(SplitError::BufferTooShort { needed: headroom + len, actual })?;
    cut(hdr, packet, Segments { first_in_place: true, bufs: rest, headroom, room: usize::MAX }, &mut lens[..room])
}

/// As [`split`], for a packet that lies elsewhere (a landing buffer for super-packets larger
/// than a slot): every segment, the first too, is written at `headroom` in `bufs[i]`, and must
/// fit in `room` bytes there (so what the caller keeps behind it, such as tailroom for the AEAD
/// tag, stays free). `BufferTooShort` says how long a buffer would have had to be.
pub fn split_into<B: AsMut<[u8]>>(
    hdr: &VirtioNetHdr,
    packet: &mut [u8],
    bufs: &mut [B],
    headroom: usize,
    room: usize,
    lens: &mut [usize],
) -> Result<usize, SplitError> {
    let slots = bufs.len().min(lens.len());
    cut(hdr, packet, Segments { first_in_place: false, bufs, headroom, room }, &mut lens[..slots])
}

/// Where [`cut`] puts segments: the first left in the packet or copied like the others, each
/// copy at `headroom` in the next buffer, at most `room` bytes long.
struct Segments<'a, B> {
    first_in_place: bool,
    bufs: &'a mut [B],
    headroom: usize,
    room: usize,
}

impl<B: AsMut<[u8]>> Segments<'_, B> {
    /// The buffer region segment `i` of `seg_len` bytes is copied to.
    fn region(&mut self, i: usize, seg_len: usize) -> Result<&mut [u8], SplitError> {
        let index = if self.first_in_place { i - 1 } else { i };
        let dst = self.bufs[index].as_mut();
        let needed = self.headroom + seg_len;
        if seg_len > self.room || dst.len() < needed {
            let usable = dst.len().min(self.headroom.saturating_add(self.room));
            return Err(SplitError::BufferTooShort { needed, actual: usable });
        }
        Ok(&mut dst[self.headroom..needed])
    }

    /// How many segments there is a buffer for.
    fn capacity(&self, lens: usize) -> usize {
        let bufs = if self.first_in_place { self.bufs.len() + 1 } else { self.bufs.len() };
        bufs.min(lens)
    }
}

/// Cuts `packet` (the whole super-packet) into segments as `out` says; `lens[i]` gets each
/// segment's length. Returns how many.
fn cut<B: AsMut<[u8]>>(
    hdr: &VirtioNetHdr,
    packet: &mut [u8],
    mut out: Segments<'_, B>,
    lens: &mut [usize],
) -> Result<usize, SplitError> {
    let len = packet.len();
    let room = out.capacity(lens.len());
    if room == 0 {
        return Err(SplitError::NoRoom { needed: 1, room: 0 });
    }
    let proto = match hdr.gso_type {
        GsoType::None => {
            if hdr.needs_csum() {
                complete_checksum(packet, usize::from(hdr.csum_start), usize::from(hdr.csum_offset))?;
            }
            if !out.first_in_place {
                out.region(0, len)?.copy_from_slice(packet);
            }
            lens[0] = len;
            return Ok(1);
        }
        GsoType::TcpV4 | GsoType::TcpV6 => PROTO_TCP,
        GsoType::UdpL4 => PROTO_UDP,
        other => return Err(SplitError::Unsupported(other)),
    };
    let layout = Layout::parse(packet, proto)?;
    if matches!((hdr.gso_type, layout.v4), (GsoType::TcpV4, false) | (GsoType::TcpV6, true)) {
        return Err(SplitError::Malformed("IP version does not match the segmentation type"));
    }
    let gso = usize::from(hdr.gso_size);
    if gso == 0 {
        return Err(SplitError::Malformed("segment size 0"));
    }
    let hl = layout.headers();
    let payload = len - hl;
    let needed = payload.div_ceil(gso).max(1);
    if needed > room {
        return Err(SplitError::NoRoom { needed, room });
    }
    let copied_from = usize::from(out.first_in_place);
    for (i, seg_len) in lens.iter_mut().enumerate().take(needed).skip(copied_from) {
        let off = hl + i * gso;
        let plen = gso.min(len - off);
        let seg = out.region(i, hl + plen)?;
        seg[..hl].copy_from_slice(&packet[..hl]);
        seg[hl..].copy_from_slice(&packet[off..off + plen]);
        layout.fix(seg, i, i + 1 == needed, i * gso);
        *seg_len = hl + plen;
    }
    if out.first_in_place {
        let first_len = hl + gso.min(payload);
        layout.fix(&mut packet[..first_len], 0, needed == 1, 0);
        lens[0] = first_len;
    }
    Ok(needed)
}
