//! The primitives of Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s as WireGuard instantiates them
//! (whitepaper section 5.4): HASH, MAC, HMAC, KDF1..3, DH, and the handshake AEAD/XAEAD.

use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Mac as _, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use hmac::SimpleHmac;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

use super::aead::{Aead, DefaultAead};
use crate::wire::wireguard::TAG_LEN;

/// "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
pub const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// "WireGuard v1 zx2c4 Jason@zx2c4.com"
pub const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
/// Label hashed with a static public key to key MAC1.
pub const LABEL_MAC1: &[u8] = b"mac1----";
/// Label hashed with a static public key to key cookie encryption.
pub const LABEL_COOKIE: &[u8] = b"cookie--";

/// HASH(a || b || ...): BLAKE2s-256.
pub fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

/// MAC(key, data): keyed BLAKE2s with a 16-byte output. `key` is at most 32 bytes.
pub fn mac(key: &[u8], data: &[u8]) -> [u8; 16] {
    let mut m = <Blake2sMac<U16> as KeyInit>::new_from_slice(key).expect("MAC keys are 16 or 32 bytes");
    Update::update(&mut m, data);
    m.finalize_fixed().into()
}

/// HMAC(key, a || b): HMAC-BLAKE2s-256.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <SimpleHmac<Blake2s256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        Update::update(&mut m, p);
    }
    m.finalize().into_bytes().into()
}

/// KDF_n(key, input) for n = 1..=3, as HKDF over HMAC-BLAKE2s; returns the first `N` outputs.
pub fn kdf<const N: usize>(key: &[u8; 32], input: &[u8]) -> [[u8; 32]; N] {
    debug_assert!((1..=3).contains(&N));
    let prk = hmac(key, &[input]);
    let mut out = [[0u8; 32]; N];
    let mut prev = [0u8; 32];
    for (i, slot) in out.iter_mut().enumerate() {
        // T(1) = HMAC(prk, 0x1); T(i) = HMAC(prk, T(i-1) || i).
        let previous: &[u8] = if i == 0 { &[] } else { &prev };
        *slot = hmac(&prk, &[previous, &[i as u8 + 1]]);
        prev = *slot;
    }
    prev.zeroize();
    out
}

/// DH(private, public), refusing a result of all zeros (a low-order public key).
pub fn dh(private: &StaticSecret, public: &PublicKey) -> Option<[u8; 32]> {
    let shared = private.diffie_hellman(public);
    shared.was_contributory().then(|| shared.to_bytes())
}

/// AEAD(key, 0, plaintext, aad) for the handshake: seals `plaintext` into `out` (len + 16).
pub fn aead_seal(key: &[u8; 32], plaintext: &[u8], aad: &[u8], out: &mut [u8]) {
    let (body, tag) = out.split_at_mut(plaintext.len());
    body.copy_from_slice(plaintext);
    let t = DefaultAead::new(key).seal_in_place(0, aad, body);
    tag[..TAG_LEN].copy_from_slice(&t);
}

/// Opens a handshake AEAD field into `out` (ciphertext len - 16). `false` if it does not verify.
pub fn aead_open(key: &[u8; 32], ciphertext: &[u8], aad: &[u8], out: &mut [u8]) -> bool {
    let mut buf = [0u8; 64];
    let Some(buf) = buf.get_mut(..ciphertext.len()) else {
        return false;
    };
    buf.copy_from_slice(ciphertext);
    match DefaultAead::new(key).open_in_place(0, aad, buf) {
        Ok(n) if n == out.len() => {
            out.copy_from_slice(&buf[..n]);
            true
        }
        _ => false,
    }
}

/// XAEAD(key, nonce, plaintext, aad) for cookie replies: XChaCha20-Poly1305.
pub fn xaead_seal(key: &[u8; 32], nonce: &[u8; 24], plaintext: &[u8; 16], aad: &[u8], out: &mut [u8; 32]) {
    use chacha20poly1305::aead::AeadInPlace;
    let cipher = chacha20poly1305::XChaCha20Poly1305::new(key.into());
    out[..16].copy_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(nonce.into(), aad, &mut out[..16])
        .expect("16-byte plaintext is within XChaCha20-Poly1305 limits");
    out[16..].copy_from_slice(&tag);
}

/// Opens a cookie. `None` if it does not verify.
pub fn xaead_open(key: &[u8; 32], nonce: &[u8; 24], ciphertext: &[u8; 32], aad: &[u8]) -> Option<[u8; 16]> {
    use chacha20poly1305::aead::AeadInPlace;
    let cipher = chacha20poly1305::XChaCha20Poly1305::new(key.into());
    let mut cookie = [0u8; 16];
    cookie.copy_from_slice(&ciphertext[..16]);
    cipher.decrypt_in_place_detached(nonce.into(), aad, &mut cookie, ciphertext[16..].into()).ok().map(|()| cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_chaining_key_and_hash_match_the_reference() {
        // Values every WireGuard implementation precomputes (Linux noise.c, wireguard-go).
        let ck = hash(&[CONSTRUCTION]);
        let h = hash(&[&ck, IDENTIFIER]);
        assert_eq!(
            ck,
            [
                0x60, 0xe2, 0x6d, 0xae, 0xf3, 0x27, 0xef, 0xc0, 0x2e, 0xc3, 0x35, 0xe2, 0xa0, 0x25, 0xd2, 0xd0, 0x16,
                0xeb, 0x42, 0x06, 0xf8, 0x72, 0x77, 0xf5, 0x2d, 0x38, 0xd1, 0x98, 0x8b, 0x78, 0xcd, 0x36
            ]
        );
        assert_eq!(
            h,
            [
                0x22, 0x11, 0xb3, 0x61, 0x08, 0x1a, 0xc5, 0x66, 0x69, 0x12, 0x43, 0xdb, 0x45, 0x8a, 0xd5, 0x32, 0x2d,
                0x9c, 0x6c, 0x66, 0x22, 0x93, 0xe8, 0xb7, 0x0e, 0xe1, 0x9c, 0x65, 0xba, 0x07, 0x9e, 0xf3
            ]
        );
    }

    #[test]
    fn kdf_outputs_chain() {
        let key = [7u8; 32];
        let [a] = kdf::<1>(&key, b"x");
        let [b, c] = kdf::<2>(&key, b"x");
        let [d, e, f] = kdf::<3>(&key, b"x");
        assert_eq!(a, b);
        assert_eq!(b, d);
        assert_eq!(c, e);
        assert_ne!(e, f);
    }

    #[test]
    fn handshake_aead_round_trip_and_tamper() {
        let key = [1u8; 32];
        let mut sealed = [0u8; 48];
        aead_seal(&key, &[9u8; 32], b"aad", &mut sealed);
        let mut out = [0u8; 32];
        assert!(aead_open(&key, &sealed, b"aad", &mut out));
        assert_eq!(out, [9u8; 32]);
        sealed[3] ^= 1;
        assert!(!aead_open(&key, &sealed, b"aad", &mut out));
    }

    #[test]
    fn low_order_public_key_is_refused() {
        let sk = StaticSecret::from([3u8; 32]);
        assert!(dh(&sk, &PublicKey::from([0u8; 32])).is_none());
    }
}
