//! WireGuard, sans-IO: the Noise_IKpsk2 handshake, cookies, sessions, replay protection and
//! timers, composed by [`Device`]. Nothing in this module opens a socket, spawns a thread or reads
//! a clock: every call takes `now`, randomness is injected at construction, and what must be sent
//! is pulled with [`Device::poll_transmit`].
#![forbid(unsafe_code)]

pub mod aead;
pub mod constants;
pub mod cookie;
pub mod crypto;
pub mod device;
pub mod error;
pub mod handshake;
pub mod peer;
pub mod replay;
pub mod session;
pub mod timers;

pub use device::Device;
pub use device::{DeviceConfig, Encapsulated, OpenTicket, ReceivePlan, Received, SendPlan, Transmit};
pub use error::{DropReason, PeerError, RecvError, SendError};
pub use peer::{PeerConfig, PeerId, PeerStats};
pub use session::{OpenFailure, SendBlock, RESEAL_BEHIND};
pub use x25519_dalek::{PublicKey, StaticSecret};

/// Bytes of headroom a caller reserves before a plaintext packet so it can be encrypted in place
/// into a transport message.
pub const HEADROOM: usize = crate::wire::wireguard::DATA_HEADER_LEN;

/// Bytes a caller must leave after the plaintext: up to 15 bytes of padding and the 16-byte tag.
pub const TAILROOM: usize = 15 + crate::wire::wireguard::TAG_LEN;

/// The public key for a private key (as `wg pubkey` computes it).
pub fn public_key(private_key: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*private_key)).to_bytes()
}

/// False for a public key no handshake can ever complete with (a low-order point, whose
/// Diffie-Hellman result is all zeros).
pub fn is_usable_public_key(public_key: &[u8; 32]) -> bool {
    // Any fixed secret works: a low-order point maps every clamped scalar to zero.
    let probe = StaticSecret::from([0x42; 32]);
    probe.diffie_hellman(&PublicKey::from(*public_key)).was_contributory()
}
