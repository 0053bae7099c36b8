//! Why a document did not count. Every rejection names the document (its file name or etcd key),
//! the node it concerns when known, and a typed reason whose text says what is wrong.

use core::fmt;

use super::signing::VerifyingKey;
use crate::keys::Key;

/// A document that was dropped while building the netmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The document's key (file name or etcd key).
    pub key: String,
    /// The node the document is about, when it got that far.
    pub node: Option<String>,
    pub reason: RejectReason,
}

/// Why a document was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("not a JSON document envelope: {0}")]
    BadJson(String),
    #[error("unknown document kind {0:?} (expected node-cert, node-record or policy)")]
    UnknownKind(String),
    #[error("envelope field `{field}`: {error}")]
    BadEnvelope { field: String, error: String },
    #[error("payload field `{field}`: {error}")]
    BadPayload { field: String, error: String },
    #[error("bad signature: the payload was not signed by the stated signer {signer} (tampered or corrupt)")]
    BadSignature { signer: VerifyingKey },
    #[error("signed by {signer}, which is not the operator key")]
    UnknownSigner { signer: VerifyingKey },
    #[error("record signed by {signer}, but the certificate for this node binds {expected}")]
    WrongSigner { signer: VerifyingKey, expected: VerifyingKey },
    #[error("no valid certificate for node {name:?}")]
    NoCert { name: String },
    #[error("certificate expired at {not_after} (unix seconds)")]
    CertExpired { not_after: u64 },
    #[error("record expired at {expires} (unix seconds)")]
    RecordExpired { expires: u64 },
    #[error("certificate names {name:?}, which another valid certificate ({other}) also claims with a different key")]
    DuplicateName { name: String, other: String },
    #[error("certificate claims WireGuard key {key:?}, which the certificate of node {other:?} also claims")]
    DuplicateKey { key: Key, other: String },
    #[error("certificate claims overlay address {address}, which node {other:?} also claims")]
    DuplicateAddress { address: core::net::IpAddr, other: String },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(node) => write!(f, "{} (node {node}): {}", self.key, self.reason),
            None => write!(f, "{}: {}", self.key, self.reason),
        }
    }
}
