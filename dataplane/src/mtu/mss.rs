//! TCP MSS clamping on SYNs.

use crate::wire::ipv4::{self, IpProtocol};
use crate::wire::{checksum, ipv6};

const TCP_HEADER_LEN: usize = 20;
const TCP_FLAGS: usize = 13;
const TCP_CHECKSUM: usize = 16;
const FLAG_SYN: u8 = 0x02;
const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_MSS_LEN: usize = 4;

/// Lowers the Maximum Segment Size option of a TCP SYN (or SYN-ACK) to `max_mss` when it is
/// larger, updating the TCP checksum incrementally (RFC 1624 eqn. 3), in place. Returns whether
/// the packet changed.
///
/// Handles IPv4 (not a non-first fragment) and IPv6 whose Next Header is TCP (no extension
/// headers). Anything else, including malformed IP headers, TCP headers or options, is left
/// untouched and returns `false`; nothing panics. Every MSS option of the SYN is clamped.
///
/// For a path MTU `mtu` the MSS to clamp to is [`super::max_mss`]: `mtu - 40` for IPv4 and
/// `mtu - 60` for IPv6 (IP and TCP headers without options).
pub fn clamp_tcp_mss(packet: &mut [u8], max_mss: u16) -> bool {
    let range = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let Ok(p) = ipv4::Packet::new_checked(&*packet) else {
                return false;
            };
            if p.protocol() != IpProtocol::TCP || p.frag_offset() != 0 {
                return false;
            }
            p.header_len()..usize::from(p.total_len())
        }
        Some(6) => {
            let Ok(p) = ipv6::Packet::new_checked(&*packet) else {
                return false;
            };
            if p.next_header() != IpProtocol::TCP {
                return false;
            }
            ipv6::HEADER_LEN..p.total_len()
        }
        _ => return false,
    };
    clamp_segment(&mut packet[range], max_mss)
}

/// Clamps the MSS in a TCP segment (header first).
fn clamp_segment(tcp: &mut [u8], max_mss: u16) -> bool {
    if tcp.len() < TCP_HEADER_LEN || tcp[TCP_FLAGS] & FLAG_SYN == 0 {
        return false;
    }
    let header_len = usize::from(tcp[12] >> 4) * 4;
    if header_len < TCP_HEADER_LEN || header_len > tcp.len() {
        return false;
    }
    let mut changed = false;
    let mut at = TCP_HEADER_LEN;
    while at < header_len {
        match tcp[at] {
            OPT_EOL => break,
            OPT_NOP => at += 1,
            kind => {
                let Some(&len) = tcp.get(at + 1) else { break };
                let len = usize::from(len);
                if len < 2 || at + len > header_len {
                    break;
                }
                if kind == OPT_MSS && len == OPT_MSS_LEN {
                    let mss = u16::from_be_bytes([tcp[at + 2], tcp[at + 3]]);
                    if mss > max_mss {
                        set_u16_with_checksum(tcp, at + 2, max_mss);
                        changed = true;
                    }
                }
                at += len;
            }
        }
    }
    changed
}

/// Writes `value` at `pos` (which may be odd) of `tcp` and adjusts the checksum at
/// [`TCP_CHECKSUM`] for the change: HC' = ~(~HC + ~m + m') over the 16-bit words touched.
fn set_u16_with_checksum(tcp: &mut [u8], pos: usize, value: u16) {
    // The 16-bit-aligned window holding both octets: 2 octets when `pos` is even, else 4.
    let start = pos & !1;
    let end = (pos + 3) & !1;
    let mut old = [0u8; 4];
    old[..end - start].copy_from_slice(&tcp[start..end]);
    tcp[pos..pos + 2].copy_from_slice(&value.to_be_bytes());
    let mut new = [0u8; 4];
    new[..end - start].copy_from_slice(&tcp[start..end]);
    let hc = u16::from_be_bytes([tcp[TCP_CHECKSUM], tcp[TCP_CHECKSUM + 1]]);
    // !finish(x) is x folded to 16 bits: the one's-complement sum m of the old words.
    let m = !checksum::finish(checksum::sum(&old[..end - start]));
    let new_sum = checksum::sum(&new[..end - start]);
    let hc_new = checksum::finish(checksum::combine(&[u32::from(!hc), u32::from(!m), new_sum]));
    tcp[TCP_CHECKSUM..TCP_CHECKSUM + 2].copy_from_slice(&hc_new.to_be_bytes());
}
