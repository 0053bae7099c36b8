//! `struct virtio_net_hdr` (virtio 1.x, the 10-byte form without `num_buffers`), which a TUN device
//! opened with `IFF_VNET_HDR` puts in front of every packet, in host byte order (little endian on
//! every machine vxwg runs on).

/// Bytes of the header in front of each packet.
pub const VNET_HDR_LEN: usize = 10;

/// `flags`: the checksum from `csum_start` to the end is left to the receiver; the field at
/// `csum_start + csum_offset` holds the pseudo-header sum.
pub const F_NEEDS_CSUM: u8 = 1;

/// What kind of segmentation a packet asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoType {
    /// An ordinary packet.
    None,
    /// TCP over IPv4, cut into `gso_size`-byte payloads.
    TcpV4,
    /// TCP over IPv6.
    TcpV6,
    /// UDP (USO), cut into `gso_size`-byte datagrams.
    UdpL4,
    /// Anything else (UFO, unknown values): not handled.
    Other(u8),
}

const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: the packet carries ECN CWR; ignored (the TCP header already says so).
const GSO_ECN: u8 = 0x80;

impl GsoType {
    fn from_raw(v: u8) -> Self {
        match v & !GSO_ECN {
            GSO_NONE => GsoType::None,
            GSO_TCPV4 => GsoType::TcpV4,
            GSO_TCPV6 => GsoType::TcpV6,
            GSO_UDP_L4 => GsoType::UdpL4,
            other => GsoType::Other(other),
        }
    }

    fn to_raw(self) -> u8 {
        match self {
            GsoType::None => GSO_NONE,
            GsoType::TcpV4 => GSO_TCPV4,
            GsoType::TcpV6 => GSO_TCPV6,
            GsoType::UdpL4 => GSO_UDP_L4,
            GsoType::Other(v) => v,
        }
    }
}

/// The parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioNetHdr {
    pub flags: u8,
    pub gso_type: GsoType,
    /// Length of the headers (IP + transport) copied in front of every segment.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksummed region starts (the transport header).
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    /// A plain packet: no segmentation, checksum already complete.
    pub const NONE: VirtioNetHdr =
        VirtioNetHdr { flags: 0, gso_type: GsoType::None, hdr_len: 0, gso_size: 0, csum_start: 0, csum_offset: 0 };

    /// Reads the header from the first [`VNET_HDR_LEN`] bytes; `None` if `buf` is shorter.
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let b: &[u8; VNET_HDR_LEN] = buf.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VirtioNetHdr {
            flags: b[0],
            gso_type: GsoType::from_raw(b[1]),
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// The header's bytes.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type.to_raw();
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// Whether the receiver must complete a checksum.
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }
}
