//! The four WireGuard messages (whitepaper section 5.4), as checked views over byte slices.
//!
//! Every message starts with a little-endian `u32` type whose upper three bytes are reserved and
//! must be zero (Linux compares all four bytes). Handshake messages have exact lengths; a transport
//! message is a 16-byte header followed by at least the 16-byte Poly1305 tag.
//!
//! `new_checked` validates type and length, after which every accessor is in bounds. Setters exist
//! on mutable buffers and are how the protocol emits messages in place.

use super::{check_len, Error, Result};

/// Length of a handshake initiation.
pub const INITIATION_LEN: usize = 148;
/// Length of a handshake response.
pub const RESPONSE_LEN: usize = 92;
/// Length of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = 64;
/// Length of the transport-data header (type, receiver index, counter).
pub const DATA_HEADER_LEN: usize = 16;
/// Length of the Poly1305 tag that ends every AEAD ciphertext.
pub const TAG_LEN: usize = 16;
/// Smallest transport message: a keepalive (empty plaintext, tag only).
pub const DATA_MIN_LEN: usize = DATA_HEADER_LEN + TAG_LEN;
/// Bytes a transport message adds to its (padded) plaintext.
pub const DATA_OVERHEAD: usize = DATA_HEADER_LEN + TAG_LEN;

/// The message type, from the first four bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    HandshakeInitiation = 1,
    HandshakeResponse = 2,
    CookieReply = 3,
    TransportData = 4,
}

impl MessageType {
    /// Classifies a datagram and checks that its length fits the type.
    pub fn classify(buf: &[u8]) -> Result<MessageType> {
        check_len(buf, 4)?;
        if buf[1..4] != [0, 0, 0] {
            return Err(Error::Malformed { field: "wireguard message type" });
        }
        let (ty, exact) = match buf[0] {
            1 => (MessageType::HandshakeInitiation, Some(INITIATION_LEN)),
            2 => (MessageType::HandshakeResponse, Some(RESPONSE_LEN)),
            3 => (MessageType::CookieReply, Some(COOKIE_REPLY_LEN)),
            4 => (MessageType::TransportData, None),
            _ => return Err(Error::Malformed { field: "wireguard message type" }),
        };
        match exact {
            Some(len) if buf.len() != len => {
                if buf.len() < len {
                    Err(Error::Truncated { needed: len, actual: buf.len() })
                } else {
                    Err(Error::Malformed { field: "wireguard handshake length" })
                }
            }
            Some(_) => Ok(ty),
            None => check_len(buf, DATA_MIN_LEN).map(|()| ty),
        }
    }
}

#[inline]
fn array<const N: usize>(buf: &[u8], at: usize) -> &[u8; N] {
    // In bounds: every caller's view was length-checked by `new_checked` (or sized by its owner).
    buf[at..at + N].try_into().expect("length checked at construction")
}

#[inline]
fn array_mut<const N: usize>(buf: &mut [u8], at: usize) -> &mut [u8; N] {
    (&mut buf[at..at + N]).try_into().expect("length checked at construction")
}

#[inline]
fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(*array(buf, at))
}

macro_rules! message_view {
    ($(#[$doc:meta])* $name:ident, $ty:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps a buffer without checking it; accessors panic if it is too short.
            pub const fn new_unchecked(buffer: T) -> Self {
                Self { buffer }
            }

            /// Wraps a buffer after checking its type and length.
            pub fn new_checked(buffer: T) -> Result<Self> {
                if MessageType::classify(buffer.as_ref())? != $ty {
                    return Err(Error::Malformed { field: "wireguard message type" });
                }
                Ok(Self { buffer })
            }

            /// The whole message.
            pub fn as_bytes(&self) -> &[u8] {
                self.buffer.as_ref()
            }

            /// Returns the underlying buffer.
            pub fn into_inner(self) -> T {
                self.buffer
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            /// Writes the type field (type byte and three zero reserved bytes).
            pub fn set_message_type(&mut self) {
                self.buffer.as_mut()[0..4].copy_from_slice(&[$ty as u8, 0, 0, 0]);
            }

            /// The whole message, mutable.
            pub fn as_bytes_mut(&mut self) -> &mut [u8] {
                self.buffer.as_mut()
            }
        }
    };
}

macro_rules! field {
    ($get:ident, $at:expr, $n:expr, $doc:literal) => {
        #[doc = $doc]
        pub fn $get(&self) -> &[u8; $n] {
            array(self.buffer.as_ref(), $at)
        }
    };
}

macro_rules! field_mut {
    ($get_mut:ident, $at:expr, $n:expr) => {
        #[doc = concat!("Mutable access to the field read by `", stringify!($get_mut), "`'s getter.")]
        pub fn $get_mut(&mut self) -> &mut [u8; $n] {
            array_mut(self.buffer.as_mut(), $at)
        }
    };
}

message_view!(
    /// Handshake initiation (type 1, 148 bytes).
    Initiation,
    MessageType::HandshakeInitiation
);

/// Byte offsets within an initiation.
pub mod initiation {
    pub const SENDER: usize = 4;
    pub const EPHEMERAL: usize = 8;
    pub const STATIC: usize = 40;
    pub const TIMESTAMP: usize = 88;
    pub const MAC1: usize = 116;
    pub const MAC2: usize = 132;
}

impl<T: AsRef<[u8]>> Initiation<T> {
    /// The initiator's index for this handshake.
    pub fn sender_index(&self) -> u32 {
        read_u32(self.buffer.as_ref(), initiation::SENDER)
    }
    field!(ephemeral, initiation::EPHEMERAL, 32, "Unencrypted ephemeral public key.");
    field!(encrypted_static, initiation::STATIC, 48, "AEAD of the initiator's static key.");
    field!(encrypted_timestamp, initiation::TIMESTAMP, 28, "AEAD of the TAI64N timestamp.");
    field!(mac1, initiation::MAC1, 16, "MAC1 over the bytes before it.");
    field!(mac2, initiation::MAC2, 16, "MAC2 (cookie MAC) over the bytes before it.");
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Initiation<T> {
    /// Sets the initiator's index.
    pub fn set_sender_index(&mut self, index: u32) {
        self.buffer.as_mut()[initiation::SENDER..initiation::SENDER + 4].copy_from_slice(&index.to_le_bytes());
    }
    field_mut!(ephemeral_mut, initiation::EPHEMERAL, 32);
    field_mut!(encrypted_static_mut, initiation::STATIC, 48);
    field_mut!(encrypted_timestamp_mut, initiation::TIMESTAMP, 28);
    field_mut!(mac1_mut, initiation::MAC1, 16);
    field_mut!(mac2_mut, initiation::MAC2, 16);
}

message_view!(
    /// Handshake response (type 2, 92 bytes).
    Response,
    MessageType::HandshakeResponse
);

/// Byte offsets within a response.
pub mod response {
    pub const SENDER: usize = 4;
    pub const RECEIVER: usize = 8;
    pub const EPHEMERAL: usize = 12;
    pub const EMPTY: usize = 44;
    pub const MAC1: usize = 60;
    pub const MAC2: usize = 76;
}

impl<T: AsRef<[u8]>> Response<T> {
    /// The responder's index for the new session.
    pub fn sender_index(&self) -> u32 {
        read_u32(self.buffer.as_ref(), response::SENDER)
    }
    /// The initiator's index, from its initiation.
    pub fn receiver_index(&self) -> u32 {
        read_u32(self.buffer.as_ref(), response::RECEIVER)
    }
    field!(ephemeral, response::EPHEMERAL, 32, "Unencrypted ephemeral public key.");
    field!(encrypted_nothing, response::EMPTY, 16, "AEAD of the empty string.");
    field!(mac1, response::MAC1, 16, "MAC1 over the bytes before it.");
    field!(mac2, response::MAC2, 16, "MAC2 (cookie MAC) over the bytes before it.");
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Response<T> {
    /// Sets the responder's index.
    pub fn set_sender_index(&mut self, index: u32) {
        self.buffer.as_mut()[response::SENDER..response::SENDER + 4].copy_from_slice(&index.to_le_bytes());
    }
    /// Sets the initiator's index.
    pub fn set_receiver_index(&mut self, index: u32) {
        self.buffer.as_mut()[response::RECEIVER..response::RECEIVER + 4].copy_from_slice(&index.to_le_bytes());
    }
    field_mut!(ephemeral_mut, response::EPHEMERAL, 32);
    field_mut!(encrypted_nothing_mut, response::EMPTY, 16);
    field_mut!(mac1_mut, response::MAC1, 16);
    field_mut!(mac2_mut, response::MAC2, 16);
}

message_view!(
    /// Cookie reply (type 3, 64 bytes).
    CookieReply,
    MessageType::CookieReply
);

/// Byte offsets within a cookie reply.
pub mod cookie_reply {
    pub const RECEIVER: usize = 4;
    pub const NONCE: usize = 8;
    pub const COOKIE: usize = 32;
}

impl<T: AsRef<[u8]>> CookieReply<T> {
    /// The sender index of the handshake message this replies to.
    pub fn receiver_index(&self) -> u32 {
        read_u32(self.buffer.as_ref(), cookie_reply::RECEIVER)
    }
    field!(nonce, cookie_reply::NONCE, 24, "XChaCha20 nonce.");
    field!(encrypted_cookie, cookie_reply::COOKIE, 32, "XAEAD of the cookie.");
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> CookieReply<T> {
    /// Sets the receiver index.
    pub fn set_receiver_index(&mut self, index: u32) {
        self.buffer.as_mut()[cookie_reply::RECEIVER..cookie_reply::RECEIVER + 4].copy_from_slice(&index.to_le_bytes());
    }
    field_mut!(nonce_mut, cookie_reply::NONCE, 24);
    field_mut!(encrypted_cookie_mut, cookie_reply::COOKIE, 32);
}

message_view!(
    /// Transport data (type 4): header, then ciphertext and tag.
    TransportData,
    MessageType::TransportData
);

/// Byte offsets within a transport message.
pub mod transport {
    pub const RECEIVER: usize = 4;
    pub const COUNTER: usize = 8;
    pub const PAYLOAD: usize = 16;
}

impl<T: AsRef<[u8]>> TransportData<T> {
    /// The receiver's index of the session the message is encrypted for.
    pub fn receiver_index(&self) -> u32 {
        read_u32(self.buffer.as_ref(), transport::RECEIVER)
    }
    /// The nonce counter.
    pub fn counter(&self) -> u64 {
        u64::from_le_bytes(*array(self.buffer.as_ref(), transport::COUNTER))
    }
    /// Ciphertext followed by the tag.
    pub fn encrypted_payload(&self) -> &[u8] {
        &self.buffer.as_ref()[transport::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TransportData<T> {
    /// Writes type, receiver index and counter in one go (the hot path).
    #[inline]
    pub fn set_header(&mut self, receiver_index: u32, counter: u64) {
        let b = self.buffer.as_mut();
        b[0..4].copy_from_slice(&[MessageType::TransportData as u8, 0, 0, 0]);
        b[4..8].copy_from_slice(&receiver_index.to_le_bytes());
        b[8..16].copy_from_slice(&counter.to_le_bytes());
    }
    /// Ciphertext followed by the tag, mutable (decryption happens in place here).
    pub fn encrypted_payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[transport::PAYLOAD..]
    }
}

/// Owned summary of any WireGuard message's public header fields (for logging, fuzzing and
/// dissection; the cryptographic fields stay in the views).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr {
    Initiation { sender: u32 },
    Response { sender: u32, receiver: u32 },
    CookieReply { receiver: u32 },
    TransportData { receiver: u32, counter: u64, payload_len: usize },
}

impl Repr {
    /// Parses the header fields of any message.
    pub fn parse(buf: &[u8]) -> Result<Repr> {
        Ok(match MessageType::classify(buf)? {
            MessageType::HandshakeInitiation => {
                Repr::Initiation { sender: Initiation::new_unchecked(buf).sender_index() }
            }
            MessageType::HandshakeResponse => {
                let r = Response::new_unchecked(buf);
                Repr::Response { sender: r.sender_index(), receiver: r.receiver_index() }
            }
            MessageType::CookieReply => {
                Repr::CookieReply { receiver: CookieReply::new_unchecked(buf).receiver_index() }
            }
            MessageType::TransportData => {
                let d = TransportData::new_unchecked(buf);
                Repr::TransportData {
                    receiver: d.receiver_index(),
                    counter: d.counter(),
                    payload_len: buf.len() - DATA_MIN_LEN,
                }
            }
        })
    }

    /// Length of the message this header describes.
    pub fn buffer_len(&self) -> usize {
        match *self {
            Repr::Initiation { .. } => INITIATION_LEN,
            Repr::Response { .. } => RESPONSE_LEN,
            Repr::CookieReply { .. } => COOKIE_REPLY_LEN,
            Repr::TransportData { payload_len, .. } => DATA_MIN_LEN + payload_len,
        }
    }

    /// Writes the header fields into `buf` (which must be `buffer_len()` long); the cryptographic
    /// fields are left as they are.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let needed = self.buffer_len();
        if buf.len() < needed {
            return Err(Error::BufferTooSmall { needed, actual: buf.len() });
        }
        if buf.len() > needed {
            // A WireGuard message has exactly this length; trailing bytes would change its meaning.
            return Err(Error::Malformed { field: "buffer length (longer than the message)" });
        }
        match *self {
            Repr::Initiation { sender } => {
                let mut m = Initiation::new_unchecked(buf);
                m.set_message_type();
                m.set_sender_index(sender);
            }
            Repr::Response { sender, receiver } => {
                let mut m = Response::new_unchecked(buf);
                m.set_message_type();
                m.set_sender_index(sender);
                m.set_receiver_index(receiver);
            }
            Repr::CookieReply { receiver } => {
                let mut m = CookieReply::new_unchecked(buf);
                m.set_message_type();
                m.set_receiver_index(receiver);
            }
            Repr::TransportData { receiver, counter, .. } => {
                TransportData::new_unchecked(buf).set_header(receiver, counter)
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_exact_lengths() {
        let mut b = [0u8; 200];
        b[0] = 1;
        assert_eq!(MessageType::classify(&b[..148]), Ok(MessageType::HandshakeInitiation));
        assert!(MessageType::classify(&b[..147]).is_err());
        assert!(MessageType::classify(&b[..149]).is_err());
        b[0] = 2;
        assert_eq!(MessageType::classify(&b[..92]), Ok(MessageType::HandshakeResponse));
        b[0] = 3;
        assert_eq!(MessageType::classify(&b[..64]), Ok(MessageType::CookieReply));
        b[0] = 4;
        assert_eq!(MessageType::classify(&b[..32]), Ok(MessageType::TransportData));
        assert_eq!(MessageType::classify(&b[..31]), Err(Error::Truncated { needed: 32, actual: 31 }));
        b[0] = 5;
        assert!(MessageType::classify(&b[..64]).is_err());
    }

    #[test]
    fn reserved_bytes_must_be_zero() {
        let mut b = [0u8; 148];
        b[0] = 1;
        b[2] = 1;
        assert_eq!(MessageType::classify(&b), Err(Error::Malformed { field: "wireguard message type" }));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for (ty, len) in [(1u8, 148usize), (2, 92), (3, 64), (4, 32)] {
            let mut b = vec![0u8; len];
            b[0] = ty;
            for cut in 0..len {
                assert!(Repr::parse(&b[..cut]).is_err(), "type {ty} cut at {cut}");
            }
            assert!(Repr::parse(&b).is_ok());
        }
    }

    #[test]
    fn repr_round_trip() {
        for repr in [
            Repr::Initiation { sender: 0xdead_beef },
            Repr::Response { sender: 1, receiver: 2 },
            Repr::CookieReply { receiver: 7 },
            Repr::TransportData { receiver: 9, counter: u64::MAX - 5, payload_len: 100 },
        ] {
            let mut b = vec![0u8; repr.buffer_len()];
            repr.emit(&mut b).unwrap();
            assert_eq!(Repr::parse(&b), Ok(repr));
        }
    }

    #[test]
    fn field_offsets_match_the_paper() {
        let mut b = [0u8; 148];
        let mut m = Initiation::new_unchecked(&mut b[..]);
        m.set_message_type();
        m.set_sender_index(0x0403_0201);
        m.ephemeral_mut().fill(0xee);
        m.mac2_mut().fill(0x22);
        assert_eq!(&b[4..8], &[1, 2, 3, 4]);
        assert!(b[8..40].iter().all(|&x| x == 0xee));
        assert!(b[132..148].iter().all(|&x| x == 0x22));
        assert_eq!(b[40], 0);
    }
}
