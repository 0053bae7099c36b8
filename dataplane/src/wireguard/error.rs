//! Why the protocol refuses something, split by cause: a packet it cannot send ([`SendError`]), a
//! datagram it drops ([`RecvError`], counted under a [`DropReason`]), a peer it cannot add
//! ([`PeerError`]). Cheap to construct and `Copy`, for the hot path.

use super::handshake::HandshakeError;

/// Why a packet could not be encapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no such peer")]
    UnknownPeer,
    #[error("buffer too small: need {needed} bytes, have {actual}")]
    BufferTooSmall { needed: usize, actual: usize },
    #[error("peer has no endpoint")]
    NoEndpoint,
}

/// Why a datagram was dropped. Each maps to a [`DropReason`] counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    #[error("malformed message: {0}")]
    Malformed(#[from] crate::wire::Error),
    #[error("unknown receiver index")]
    UnknownIndex,
    #[error("initiation from an unknown public key")]
    UnknownPeer,
    #[error("invalid MAC1")]
    InvalidMac1,
    #[error("handshake rate limit exceeded for source")]
    RateLimited,
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("initiation timestamp not newer than the last one (replay)")]
    StaleTimestamp,
    #[error("initiations arriving too fast from this peer")]
    InitiationFlood,
    #[error("response does not match a handshake in flight")]
    UnexpectedResponse,
    #[error("cookie reply unexpected")]
    UnexpectedCookieReply,
    #[error("cookie reply does not decrypt")]
    InvalidCookieReply,
    #[error("session expired")]
    Expired,
    #[error("replayed or too old counter")]
    Replay,
    #[error("transport message does not authenticate")]
    Decrypt,
    #[error("decrypted payload is not an IP packet")]
    InvalidInnerPacket,
}

/// Counter classes for dropped datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    Malformed,
    UnknownIndex,
    UnknownPeer,
    InvalidMac,
    RateLimited,
    HandshakeFailed,
    HandshakeReplay,
    Cookie,
    Expired,
    Replay,
    Decrypt,
    InvalidInnerPacket,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 12] = [
        DropReason::Malformed,
        DropReason::UnknownIndex,
        DropReason::UnknownPeer,
        DropReason::InvalidMac,
        DropReason::RateLimited,
        DropReason::HandshakeFailed,
        DropReason::HandshakeReplay,
        DropReason::Cookie,
        DropReason::Expired,
        DropReason::Replay,
        DropReason::Decrypt,
        DropReason::InvalidInnerPacket,
    ];

    /// Stable name for logs and `vxwg status`.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownIndex => "unknown_index",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::InvalidMac => "invalid_mac",
            DropReason::RateLimited => "rate_limited",
            DropReason::HandshakeFailed => "handshake_failed",
            DropReason::HandshakeReplay => "handshake_replay",
            DropReason::Cookie => "cookie",
            DropReason::Expired => "expired",
            DropReason::Replay => "replay",
            DropReason::Decrypt => "decrypt",
            DropReason::InvalidInnerPacket => "invalid_inner_packet",
        }
    }
}

impl RecvError {
    /// The counter this drop is accounted under.
    pub fn reason(&self) -> DropReason {
        match self {
            RecvError::Malformed(_) => DropReason::Malformed,
            RecvError::UnknownIndex => DropReason::UnknownIndex,
            RecvError::UnknownPeer => DropReason::UnknownPeer,
            RecvError::InvalidMac1 => DropReason::InvalidMac,
            RecvError::RateLimited => DropReason::RateLimited,
            RecvError::Handshake(_) | RecvError::UnexpectedResponse => DropReason::HandshakeFailed,
            RecvError::StaleTimestamp | RecvError::InitiationFlood => DropReason::HandshakeReplay,
            RecvError::UnexpectedCookieReply | RecvError::InvalidCookieReply => DropReason::Cookie,
            RecvError::Expired => DropReason::Expired,
            RecvError::Replay => DropReason::Replay,
            RecvError::Decrypt => DropReason::Decrypt,
            RecvError::InvalidInnerPacket => DropReason::InvalidInnerPacket,
        }
    }
}

/// Why a peer could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("a peer with this public key already exists")]
    Duplicate,
    #[error("public key is a low-order point")]
    LowOrderKey,
    #[error("public key is our own")]
    OwnKey,
}
