//! The Noise_IKpsk2 handshake of WireGuard (whitepaper section 5.4.2 and 5.4.3), as pure functions
//! over explicit state: nothing here reads a clock, draws randomness on its own or touches a socket.
//!
//! Initiator: [`create_initiation`] → (response arrives) → [`consume_response`].
//! Responder: [`decrypt_initiator_static`] → (look the key up) → [`consume_initiation`] →
//! [`create_response`]. Each step mixes the same chaining key `ck` and hash `h` as the paper.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand_core::RngCore;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

use super::constants::INITIATIONS_PER_SECOND;
use super::crypto::{aead_open, aead_seal, dh, hash, kdf, CONSTRUCTION, IDENTIFIER};
use crate::wire::wireguard::{Initiation, Response};

/// Why a handshake message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// A Diffie-Hellman result was all zeros (a low-order public key).
    #[error("peer used a low-order public key")]
    LowOrderKey,
    /// An AEAD field did not decrypt: wrong keys, wrong preshared key, or a corrupted message.
    #[error("handshake message does not decrypt")]
    DecryptionFailed,
}

/// Our static key pair.
pub struct StaticIdentity {
    pub(crate) secret: StaticSecret,
    pub(crate) public: PublicKey,
    /// HASH(HASH(HASH(CONSTRUCTION) || IDENTIFIER) || our public key): where a responder starts.
    responder_hash: [u8; 32],
}

impl StaticIdentity {
    /// Derives the public key and the precomputed responder hash.
    pub fn new(secret: StaticSecret) -> Self {
        let public = PublicKey::from(&secret);
        let responder_hash = hash(&[&initial_hash(), public.as_bytes()]);
        Self { secret, public, responder_hash }
    }

    /// Our public key.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }
}

/// What we keep about a peer for handshakes.
pub struct PeerKeys {
    pub(crate) public: PublicKey,
    pub(crate) preshared: [u8; 32],
    /// DH(our static, their static), computed once.
    static_static: [u8; 32],
    /// HASH(initial hash || their public key): where an initiator to them starts.
    initiator_hash: [u8; 32],
}

impl Drop for PeerKeys {
    fn drop(&mut self) {
        self.preshared.zeroize();
        self.static_static.zeroize();
    }
}

impl PeerKeys {
    /// Precomputes what every handshake with this peer needs. Fails for a low-order public key.
    pub fn new(
        identity: &StaticIdentity,
        public: PublicKey,
        preshared: Option<[u8; 32]>,
    ) -> Result<Self, HandshakeError> {
        let static_static = dh(&identity.secret, &public).ok_or(HandshakeError::LowOrderKey)?;
        let initiator_hash = hash(&[&initial_hash(), public.as_bytes()]);
        Ok(Self { public, preshared: preshared.unwrap_or([0; 32]), static_static, initiator_hash })
    }
}

fn initial_chaining_key() -> [u8; 32] {
    hash(&[CONSTRUCTION])
}

fn initial_hash() -> [u8; 32] {
    hash(&[&initial_chaining_key(), IDENTIFIER])
}

/// The running transcript of a handshake.
struct Transcript {
    ck: [u8; 32],
    h: [u8; 32],
}

impl Drop for Transcript {
    fn drop(&mut self) {
        self.ck.zeroize();
        self.h.zeroize();
    }
}

impl Transcript {
    fn mix_hash(&mut self, data: &[u8]) {
        self.h = hash(&[&self.h, data]);
    }
    fn mix_chain(&mut self, data: &[u8]) {
        let [ck] = kdf::<1>(&self.ck, data);
        self.ck = ck;
    }
    fn mix_key(&mut self, data: &[u8]) -> [u8; 32] {
        let [ck, k] = kdf::<2>(&self.ck, data);
        self.ck = ck;
        k
    }
    fn mix_psk(&mut self, psk: &[u8; 32]) -> [u8; 32] {
        let [ck, t, k] = kdf::<3>(&self.ck, psk);
        self.ck = ck;
        self.mix_hash(&t);
        k
    }
    fn transport_keys(&self) -> ([u8; 32], [u8; 32]) {
        let [a, b] = kdf::<2>(&self.ck, &[]);
        (a, b)
    }
}

/// Transport keys derived by a finished handshake.
pub struct SessionKeys {
    pub send: [u8; 32],
    pub recv: [u8; 32],
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.send.zeroize();
        self.recv.zeroize();
    }
}

fn random_secret(rng: &mut dyn RngCore) -> StaticSecret {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    let s = StaticSecret::from(bytes);
    bytes.zeroize();
    s
}

/// TAI64N of `wall`, with the nanoseconds rounded down so the timestamp does not leak precise
/// clock readings (Linux does the same, to a power of two below 1 s / INITIATIONS_PER_SECOND).
pub fn tai64n(wall: SystemTime) -> [u8; 12] {
    let since = wall.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let granularity = (1_000_000_000 / INITIATIONS_PER_SECOND).next_power_of_two() / 2;
    let nanos = since.subsec_nanos() - since.subsec_nanos() % granularity;
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&(0x4000_0000_0000_000a_u64 + since.as_secs()).to_be_bytes());
    out[8..].copy_from_slice(&nanos.to_be_bytes());
    out
}

/// An initiation in flight: what the initiator needs to process the response.
pub struct InitiatorState {
    transcript: Transcript,
    ephemeral: StaticSecret,
}

/// Writes the body of a handshake initiation (everything but the MACs) into `msg`.
pub fn create_initiation(
    identity: &StaticIdentity,
    peer: &PeerKeys,
    sender_index: u32,
    timestamp: [u8; 12],
    rng: &mut dyn RngCore,
    msg: &mut Initiation<&mut [u8]>,
) -> Result<InitiatorState, HandshakeError> {
    let mut t = Transcript { ck: initial_chaining_key(), h: peer.initiator_hash };
    let ephemeral = random_secret(rng);
    let e_pub = PublicKey::from(&ephemeral);
    msg.set_message_type();
    msg.set_sender_index(sender_index);
    *msg.ephemeral_mut() = e_pub.to_bytes();
    t.mix_chain(e_pub.as_bytes());
    t.mix_hash(e_pub.as_bytes());

    let k = t.mix_key(&dh(&ephemeral, &peer.public).ok_or(HandshakeError::LowOrderKey)?);
    aead_seal(&k, identity.public.as_bytes(), &t.h, msg.encrypted_static_mut());
    t.mix_hash(msg.encrypted_static());

    let k = t.mix_key(&peer.static_static);
    aead_seal(&k, &timestamp, &t.h, msg.encrypted_timestamp_mut());
    t.mix_hash(msg.encrypted_timestamp());
    Ok(InitiatorState { transcript: t, ephemeral })
}

/// Responder, first half: the initiator's static public key, decrypted so the peer can be found.
pub struct PartialInitiation {
    transcript: Transcript,
    remote_ephemeral: PublicKey,
    pub initiator_static: PublicKey,
}

/// Decrypts the initiator's static key from an initiation addressed to `identity`.
pub fn decrypt_initiator_static(
    identity: &StaticIdentity,
    msg: &Initiation<&[u8]>,
) -> Result<PartialInitiation, HandshakeError> {
    let mut t = Transcript { ck: initial_chaining_key(), h: identity.responder_hash };
    let e_i = PublicKey::from(*msg.ephemeral());
    t.mix_chain(e_i.as_bytes());
    t.mix_hash(e_i.as_bytes());
    let k = t.mix_key(&dh(&identity.secret, &e_i).ok_or(HandshakeError::LowOrderKey)?);
    let mut s = [0u8; 32];
    if !aead_open(&k, msg.encrypted_static(), &t.h, &mut s) {
        return Err(HandshakeError::DecryptionFailed);
    }
    t.mix_hash(msg.encrypted_static());
    Ok(PartialInitiation { transcript: t, remote_ephemeral: e_i, initiator_static: PublicKey::from(s) })
}

/// Responder state after a fully verified initiation.
pub struct ConsumedInitiation {
    transcript: Transcript,
    remote_ephemeral: PublicKey,
    /// The initiator's TAI64N timestamp: must be greater than any seen before from this peer.
    pub timestamp: [u8; 12],
}

/// Responder, second half: decrypts the timestamp with the peer's precomputed static-static DH.
pub fn consume_initiation(
    partial: PartialInitiation,
    peer: &PeerKeys,
    msg: &Initiation<&[u8]>,
) -> Result<ConsumedInitiation, HandshakeError> {
    let PartialInitiation { mut transcript, remote_ephemeral, .. } = partial;
    let k = transcript.mix_key(&peer.static_static);
    let mut timestamp = [0u8; 12];
    if !aead_open(&k, msg.encrypted_timestamp(), &transcript.h, &mut timestamp) {
        return Err(HandshakeError::DecryptionFailed);
    }
    transcript.mix_hash(msg.encrypted_timestamp());
    Ok(ConsumedInitiation { transcript, remote_ephemeral, timestamp })
}

/// Writes the body of the response (everything but the MACs) and derives the session keys.
pub fn create_response(
    consumed: ConsumedInitiation,
    peer: &PeerKeys,
    sender_index: u32,
    receiver_index: u32,
    rng: &mut dyn RngCore,
    msg: &mut Response<&mut [u8]>,
) -> Result<SessionKeys, HandshakeError> {
    let ConsumedInitiation { mut transcript, remote_ephemeral, .. } = consumed;
    let t = &mut transcript;
    let ephemeral = random_secret(rng);
    let e_pub = PublicKey::from(&ephemeral);
    msg.set_message_type();
    msg.set_sender_index(sender_index);
    msg.set_receiver_index(receiver_index);
    *msg.ephemeral_mut() = e_pub.to_bytes();
    t.mix_chain(e_pub.as_bytes());
    t.mix_hash(e_pub.as_bytes());
    t.mix_chain(&dh(&ephemeral, &remote_ephemeral).ok_or(HandshakeError::LowOrderKey)?);
    t.mix_chain(&dh(&ephemeral, &peer.public).ok_or(HandshakeError::LowOrderKey)?);
    let k = t.mix_psk(&peer.preshared);
    aead_seal(&k, &[], &t.h, msg.encrypted_nothing_mut());
    t.mix_hash(msg.encrypted_nothing());
    let (recv, send) = t.transport_keys();
    Ok(SessionKeys { send, recv })
}

/// Initiator: verifies the response to `state` and derives the session keys.
pub fn consume_response(
    state: &InitiatorState,
    identity: &StaticIdentity,
    peer: &PeerKeys,
    msg: &Response<&[u8]>,
) -> Result<SessionKeys, HandshakeError> {
    // Work on a copy: a forged response must not destroy the state a genuine one still needs.
    let mut transcript = Transcript { ck: state.transcript.ck, h: state.transcript.h };
    let ephemeral = &state.ephemeral;
    let t = &mut transcript;
    let e_r = PublicKey::from(*msg.ephemeral());
    t.mix_chain(e_r.as_bytes());
    t.mix_hash(e_r.as_bytes());
    t.mix_chain(&dh(ephemeral, &e_r).ok_or(HandshakeError::LowOrderKey)?);
    t.mix_chain(&dh(&identity.secret, &e_r).ok_or(HandshakeError::LowOrderKey)?);
    let k = t.mix_psk(&peer.preshared);
    if !aead_open(&k, msg.encrypted_nothing(), &t.h, &mut []) {
        return Err(HandshakeError::DecryptionFailed);
    }
    t.mix_hash(msg.encrypted_nothing());
    let (send, recv) = t.transport_keys();
    Ok(SessionKeys { send, recv })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::wireguard::{INITIATION_LEN, RESPONSE_LEN};
    use rand_core::OsRng;

    fn identity(seed: u8) -> StaticIdentity {
        StaticIdentity::new(StaticSecret::from([seed; 32]))
    }

    fn run(psk_i: Option<[u8; 32]>, psk_r: Option<[u8; 32]>) -> Result<(SessionKeys, SessionKeys), HandshakeError> {
        let (a, b) = (identity(1), identity(2));
        let a_to_b = PeerKeys::new(&a, b.public, psk_i)?;
        let b_to_a = PeerKeys::new(&b, a.public, psk_r)?;
        let mut init = [0u8; INITIATION_LEN];
        let state = create_initiation(
            &a,
            &a_to_b,
            11,
            tai64n(SystemTime::now()),
            &mut OsRng,
            &mut Initiation::new_unchecked(&mut init[..]),
        )?;
        let view = Initiation::new_checked(&init[..]).unwrap();
        let partial = decrypt_initiator_static(&b, &view)?;
        assert_eq!(partial.initiator_static, a.public);
        let consumed = consume_initiation(partial, &b_to_a, &view)?;
        let mut resp = [0u8; RESPONSE_LEN];
        let rkeys =
            create_response(consumed, &b_to_a, 22, 11, &mut OsRng, &mut Response::new_unchecked(&mut resp[..]))?;
        let ikeys = consume_response(&state, &a, &a_to_b, &Response::new_checked(&resp[..]).unwrap())?;
        Ok((ikeys, rkeys))
    }

    #[test]
    fn both_sides_derive_mirrored_keys() {
        let (i, r) = run(None, None).unwrap();
        assert_eq!(i.send, r.recv);
        assert_eq!(i.recv, r.send);
        assert_ne!(i.send, i.recv);
        let (i, r) = run(Some([5; 32]), Some([5; 32])).unwrap();
        assert_eq!(i.send, r.recv);
    }

    #[test]
    fn preshared_key_mismatch_fails() {
        assert_eq!(run(Some([5; 32]), None).err(), Some(HandshakeError::DecryptionFailed));
    }

    #[test]
    fn tai64n_is_monotonic_and_coarse() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let a = tai64n(t);
        let b = tai64n(t + Duration::from_millis(40));
        assert!(b > a);
        assert_eq!(&a[..8], &(0x4000_0000_0000_000a_u64 + 1_700_000_000).to_be_bytes());
        assert_eq!(u32::from_be_bytes(a[8..].try_into().unwrap()) % (1 << 23), 0);
    }
}
