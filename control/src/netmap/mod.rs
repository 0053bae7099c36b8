//! The netmap: which nodes exist, which of them this node peers with, and which subnet routes are
//! approved — built from signed documents, with no file, socket or clock access (`now` is passed
//! in).
//!
//! Trust chain (docs/control.md): the operator key signs each node's certificate
//! ([`NodeCert`]: name, WireGuard key, node signing key, overlay addresses, tags, expiry) and the
//! [`Policy`] (route auto-approvers and ACLs); each node signs its own [`NodeRecord`] (endpoints,
//! advertised routes, VTEP MAC) with the key its certificate binds. A document that fails any
//! check is dropped with a [`Rejection`] saying why, so a tampered store can neither add a peer
//! nor hijack a route.

mod build;
mod document;
mod intent;
mod reject;
mod signing;

pub use build::{
    build, build_cached, covers, Netmap, NodeView, NotApproved, RouteDecision, RouteState, Trust, VerifyCache,
};
pub use document::{
    check_name, format_mac, parse_mac, Acl, AutoApprover, Document, Envelope, Kind, NodeCert, NodeRecord, Payload,
    Policy,
};
pub use intent::{apply_changes, diff, intent, Change, Intent, PeerIntent};
pub use reject::{RejectReason, Rejection};
pub use signing::{KeyTextError, SigningKey, VerifyingKey, SIGNATURE_LEN};

/// How long a node certificate is valid by default: the 90-day join-key expiry of the clusters
/// vxwg serves. Renew by signing a new certificate with a later `not_after`.
pub const DEFAULT_CERT_DAYS: u64 = 90;
