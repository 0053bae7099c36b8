//! Ed25519 keys for the netmap's trust chain: the operator key signs node certificates and the
//! policy; each node's own key signs its dynamic record. Text forms are standard base64 of the
//! 32-byte seed (secret) or public key, so key files look like `wg genkey` output.

use core::fmt;
use core::str::FromStr;

use base64::Engine;
use ring::signature::{self, Ed25519KeyPair, KeyPair};

/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// An Ed25519 signing key (the 32-byte seed and its key pair).
pub struct SigningKey {
    seed: [u8; 32],
    pair: Ed25519KeyPair,
}

/// An Ed25519 public key: who signed a document.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VerifyingKey(pub [u8; 32]);

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyTextError {
    #[error("not valid base64: {0}")]
    Base64(String),
    #[error("expected {expected} bytes, got {got}")]
    Length { expected: usize, got: usize },
    #[error("the system random number generator failed")]
    Random,
}

impl SigningKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<Self, KeyTextError> {
        use ring::rand::SecureRandom;
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut seed).map_err(|_| KeyTextError::Random)?;
        Ok(Self::from_seed(seed))
    }

    /// The key with this 32-byte seed (RFC 8032's private key).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        // Any 32 bytes are a valid Ed25519 seed, so this cannot fail.
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).expect("any 32-byte seed is a valid Ed25519 key");
        Self { seed, pair }
    }

    /// Parses the base64 seed a key file holds (surrounding whitespace allowed).
    pub fn from_base64(text: &str) -> Result<Self, KeyTextError> {
        Ok(Self::from_seed(decode_fixed(text)?))
    }

    /// The base64 seed, as a key file stores it. This is the secret.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.seed)
    }

    /// The public key that verifies this key's signatures.
    pub fn public(&self) -> VerifyingKey {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        VerifyingKey(out)
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

impl fmt::Debug for SigningKey {
    /// Never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public {})", self.public())
    }
}

impl VerifyingKey {
    /// Parses the base64 form.
    pub fn from_base64(text: &str) -> Result<Self, KeyTextError> {
        Ok(Self(decode_fixed(text)?))
    }

    /// The base64 form.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// Whether `signature` is this key's signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0).verify(message, signature).is_ok()
    }
}

impl fmt::Display for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", self.to_base64())
    }
}

impl FromStr for VerifyingKey {
    type Err = KeyTextError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_base64(s)
    }
}

/// Decodes base64 text that must hold exactly `N` bytes.
pub(crate) fn decode_fixed<const N: usize>(text: &str) -> Result<[u8; N], KeyTextError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| KeyTextError::Base64(e.to_string()))?;
    bytes.try_into().map_err(|b: Vec<u8>| KeyTextError::Length { expected: N, got: b.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8032_test_vector_1() {
        // RFC 8032 section 7.1, TEST 1 (empty message).
        let seed = hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let key = SigningKey::from_seed(seed.try_into().unwrap());
        assert_eq!(key.public().0.to_vec(), hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"));
        let sig = key.sign(b"");
        assert_eq!(
            sig.to_vec(),
            hex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
        );
        assert!(key.public().verify(b"", &sig));
        assert!(!key.public().verify(b"x", &sig));
    }

    #[test]
    fn text_forms_round_trip_and_refuse_garbage() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::from_base64(&format!(" {}\n", key.to_base64())).unwrap();
        assert_eq!(again.public(), key.public());
        assert_eq!(VerifyingKey::from_base64(&key.public().to_base64()).unwrap(), key.public());
        assert_eq!(VerifyingKey::from_base64("AAAA"), Err(KeyTextError::Length { expected: 32, got: 3 }));
        assert!(matches!(VerifyingKey::from_base64("!!"), Err(KeyTextError::Base64(_))));
        assert!(!format!("{key:?}").contains(&key.to_base64()));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }
}
