//! WireGuard keys as operators write them: 32 bytes in standard base64 (`wg genkey` output) or,
//! on the UAPI, lowercase hex. Parsing never panics and says what is wrong.

use core::fmt;

/// A 32-byte Curve25519 key (private, public or preshared).
/// Ordered (by bytes) so peer sets keyed by public key iterate deterministically.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

/// Why a key string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is not valid base64: expected 44 characters ending in '=', got {0} characters")]
    Base64Length(usize),
    #[error("key is not valid base64: {0}")]
    Base64(String),
    #[error("key is not valid hex: expected 64 hex digits, got {0} characters")]
    HexLength(usize),
    #[error("key is not valid hex: bad digit at position {0}")]
    HexDigit(usize),
}

impl Key {
    /// Parses `wg`'s base64 form (surrounding whitespace allowed, as in `wg pubkey < file`).
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        use base64::Engine;
        let s = s.trim();
        if s.len() != 44 {
            return Err(KeyError::Base64Length(s.len()));
        }
        let mut out = [0u8; 32];
        let n = base64::engine::general_purpose::STANDARD
            .decode_slice(s, &mut out)
            .map_err(|e| KeyError::Base64(e.to_string()))?;
        if n != 32 {
            return Err(KeyError::Base64Length(s.len()));
        }
        Ok(Key(out))
    }

    /// The base64 form `wg` prints.
    pub fn to_base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// Parses the UAPI's lowercase (or uppercase) hex form.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(KeyError::HexLength(b.len()));
        }
        let digit = |i: usize| -> Result<u8, KeyError> {
            match b[i] {
                c @ b'0'..=b'9' => Ok(c - b'0'),
                c @ b'a'..=b'f' => Ok(c - b'a' + 10),
                c @ b'A'..=b'F' => Ok(c - b'A' + 10),
                _ => Err(KeyError::HexDigit(i)),
            }
        };
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = digit(2 * i)? << 4 | digit(2 * i + 1)?;
        }
        Ok(Key(out))
    }

    /// The UAPI's lowercase hex form.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A new private key from `rng`, clamped as `wg genkey` does.
    pub fn generate_private(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        k[0] &= 248;
        k[31] = (k[31] & 127) | 64;
        Key(k)
    }

    /// A new preshared key from `rng` (uniform, not clamped).
    pub fn generate_preshared(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        Key(k)
    }

    /// The public key of this private key.
    pub fn public(&self) -> Self {
        Key(vxwg_dataplane::wireguard::public_key(&self.0))
    }
}

impl fmt::Debug for Key {
    /// Keys are secrets (or identities): show only a short prefix, as `wg` does in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b64 = self.to_base64();
        write!(f, "Key({}…)", &b64[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7748_public_key_and_round_trips() {
        // RFC 7748 section 6.1: Alice's private and public keys.
        let private = Key::from_hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a").unwrap();
        assert_eq!(private.public().to_hex(), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(Key::from_base64(&private.to_base64()).unwrap(), private);
        assert_eq!(Key::from_base64(&format!("  {}\n", private.to_base64())).unwrap(), private);
    }

    #[test]
    fn bad_keys_say_why() {
        assert_eq!(Key::from_base64("abc"), Err(KeyError::Base64Length(3)));
        assert!(matches!(Key::from_base64(&"!".repeat(44)), Err(KeyError::Base64(_))));
        assert_eq!(Key::from_hex("00"), Err(KeyError::HexLength(2)));
        assert_eq!(Key::from_hex(&format!("{}zz", "0".repeat(62))), Err(KeyError::HexDigit(62)));
    }

    #[test]
    fn generated_private_keys_are_clamped() {
        let k = Key::generate_private(&mut rand_core::OsRng);
        assert_eq!(k.0[0] & 7, 0);
        assert_eq!(k.0[31] & 0xc0, 0x40);
    }
}
