//! The signed documents a netmap is built from, and their JSON envelope.
//!
//! Every document is one JSON object:
//! `{"kind": "node-cert", "payload": "<base64>", "signer": "<base64 ed25519 key>", "signature": "<base64>"}`.
//! The signature covers `b"vxwg-<kind>-v1\0"` followed by the exact payload bytes, so a signature
//! made for one kind of document can never be replayed as another. The payload is itself JSON;
//! parsing it never panics and every refusal names the field.

use core::fmt;
use core::net::{IpAddr, SocketAddr};

use base64::Engine;
use serde::{Deserialize, Serialize};
use vxwg_dataplane::route::IpNet;

use super::reject::RejectReason;
use super::signing::{decode_fixed, SigningKey, VerifyingKey, SIGNATURE_LEN};
use crate::keys::Key;

/// One raw document as a source delivers it: where it came from (a file name or an etcd key) and
/// its bytes, not yet trusted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Document {
    pub key: String,
    pub bytes: Vec<u8>,
}

/// What a document is; part of what is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A node's certificate, signed by the operator.
    NodeCert,
    /// A node's dynamic record, signed by the node's own key.
    NodeRecord,
    /// The policy (route approvers and ACLs), signed by the operator.
    Policy,
}

impl Kind {
    /// The `kind` string in the envelope.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NodeCert => "node-cert",
            Kind::NodeRecord => "node-record",
            Kind::Policy => "policy",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Kind::NodeCert, Kind::NodeRecord, Kind::Policy].into_iter().find(|k| k.as_str() == s)
    }

    /// The domain-separation prefix signed in front of the payload.
    fn signing_prefix(self) -> Vec<u8> {
        format!("vxwg-{}-v1\0", self.as_str()).into_bytes()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed but not yet verified envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub kind: Kind,
    pub payload: Vec<u8>,
    pub signer: VerifyingKey,
    pub signature: [u8; SIGNATURE_LEN],
}

/// The envelope as JSON.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeJson {
    kind: String,
    payload: String,
    signer: String,
    signature: String,
}

/// A verified document's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Cert(NodeCert),
    Record(NodeRecord),
    Policy(Policy),
}

impl Envelope {
    /// Signs `payload` as a document of `kind`.
    pub fn seal(kind: Kind, payload: Vec<u8>, key: &SigningKey) -> Self {
        let mut message = kind.signing_prefix();
        message.extend_from_slice(&payload);
        Self { kind, signature: key.sign(&message), signer: key.public(), payload }
    }

    /// Parses the JSON envelope without checking the signature (see [`Envelope::verify`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, RejectReason> {
        let json: EnvelopeJson = serde_json::from_slice(bytes).map_err(|e| RejectReason::BadJson(e.to_string()))?;
        let kind = Kind::parse(&json.kind).ok_or(RejectReason::UnknownKind(json.kind))?;
        let field =
            |field: &str, e: &dyn fmt::Display| RejectReason::BadEnvelope { field: field.into(), error: e.to_string() };
        let payload =
            base64::engine::general_purpose::STANDARD.decode(json.payload.trim()).map_err(|e| field("payload", &e))?;
        let signer = VerifyingKey::from_base64(&json.signer).map_err(|e| field("signer", &e))?;
        let signature = decode_fixed(&json.signature).map_err(|e| field("signature", &e))?;
        Ok(Self { kind, payload, signer, signature })
    }

    /// The envelope as JSON bytes (one line, newline-terminated).
    pub fn to_json(&self) -> Vec<u8> {
        let b64 = &base64::engine::general_purpose::STANDARD;
        let json = EnvelopeJson {
            kind: self.kind.as_str().into(),
            payload: b64.encode(&self.payload),
            signer: self.signer.to_base64(),
            signature: b64.encode(self.signature),
        };
        let mut out = serde_json::to_vec(&json).expect("an envelope of strings always serializes");
        out.push(b'\n');
        out
    }

    /// Whether the signature is `signer`'s over this kind and payload.
    pub fn verify(&self) -> bool {
        let mut message = self.kind.signing_prefix();
        message.extend_from_slice(&self.payload);
        self.signer.verify(&message, &self.signature)
    }

    /// Parses the payload for this envelope's kind (whether or not it verifies).
    pub fn decode(&self) -> Result<Payload, RejectReason> {
        match self.kind {
            Kind::NodeCert => NodeCert::from_payload(&self.payload).map(Payload::Cert),
            Kind::NodeRecord => NodeRecord::from_payload(&self.payload).map(Payload::Record),
            Kind::Policy => Policy::from_payload(&self.payload).map(Payload::Policy),
        }
    }

    /// Parses, verifies and decodes a document: the signature must be the stated signer's (who
    /// that signer may be is for the caller to check).
    pub fn open(bytes: &[u8]) -> Result<(Self, Payload), RejectReason> {
        let envelope = Self::parse(bytes)?;
        if !envelope.verify() {
            return Err(RejectReason::BadSignature { signer: envelope.signer });
        }
        let payload = envelope.decode()?;
        Ok((envelope, payload))
    }
}

/// A node's certificate: who it is and what it may claim, signed by the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCert {
    pub name: String,
    pub wireguard_key: Key,
    /// The key that signs this node's [`NodeRecord`].
    pub node_key: VerifyingKey,
    /// Overlay addresses (become /32 or /128 AllowedIPs); the first is the VTEP address.
    pub addresses: Vec<IpAddr>,
    /// ACL tags such as `tag:k8s`.
    pub tags: Vec<String>,
    /// Unix seconds after which the certificate no longer counts.
    pub not_after: u64,
}

/// A node's dynamic state, signed by the node's own key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub name: String,
    /// Where to reach the node, in preference order (same-LAN address first).
    pub endpoints: Vec<SocketAddr>,
    /// Subnet routes the node advertises (approved or not by the policy).
    pub routes: Vec<IpNet>,
    pub vtep_mac: Option<[u8; 6]>,
    /// Unix seconds; among several valid records for a node the latest issued counts.
    pub issued_at: u64,
    /// Unix seconds after which the record counts as gone.
    pub expires: u64,
}

/// Which tags may advertise which prefixes, and which tags may reach which; signed by the operator.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Among several valid policies the highest version (then the latest issued) counts.
    pub version: u64,
    pub issued_at: u64,
    pub auto_approvers: Vec<AutoApprover>,
    pub acls: Vec<Acl>,
}

/// A route inside `prefix` is approved when advertised by a node with one of `tags`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoApprover {
    pub prefix: IpNet,
    pub tags: Vec<String>,
}

/// Nodes tagged `src` may reach nodes with any of the `dst` tags (`*` matches every node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub src: String,
    pub dst: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertJson {
    name: String,
    wireguard_public_key: String,
    node_key: String,
    addresses: Vec<String>,
    tags: Vec<String>,
    not_after: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordJson {
    name: String,
    endpoints: Vec<String>,
    routes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vtep_mac: Option<String>,
    issued_at: u64,
    expires: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyJson {
    version: u64,
    issued_at: u64,
    #[serde(default)]
    auto_approvers: Vec<AutoApproverJson>,
    #[serde(default)]
    acls: Vec<AclJson>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoApproverJson {
    prefix: String,
    tags: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AclJson {
    src: String,
    dst: Vec<String>,
}

fn bad(field: impl Into<String>, error: impl fmt::Display) -> RejectReason {
    RejectReason::BadPayload { field: field.into(), error: error.to_string() }
}

fn payload_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, RejectReason> {
    serde_json::from_slice(bytes).map_err(|e| bad("payload", format!("not valid JSON: {e}")))
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("payload structs of strings and numbers always serialize")
}

/// Parses every element of `items`, naming the failing one as `field[i]`.
fn parse_each<T, E: fmt::Display>(
    field: &str,
    items: &[String],
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Vec<T>, RejectReason> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| parse(s).map_err(|e| bad(format!("{field}[{i}]"), format!("{s:?}: {e}"))))
        .collect()
}

/// Node names are DNS-label-like so they are safe as file names, etcd keys and log fields.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a node name (1-63 of a-z A-Z 0-9 - _ ., not starting with '.')"))
    }
}

fn check_tags(field: &str, tags: &[String]) -> Result<(), RejectReason> {
    for (i, tag) in tags.iter().enumerate() {
        if tag.is_empty() || tag.chars().any(char::is_whitespace) {
            return Err(bad(format!("{field}[{i}]"), format!("{tag:?} is not a tag")));
        }
    }
    Ok(())
}

impl NodeCert {
    /// The payload bytes that get signed.
    pub fn to_payload(&self) -> Vec<u8> {
        to_json(&CertJson {
            name: self.name.clone(),
            wireguard_public_key: self.wireguard_key.to_base64(),
            node_key: self.node_key.to_base64(),
            addresses: self.addresses.iter().map(ToString::to_string).collect(),
            tags: self.tags.clone(),
            not_after: self.not_after,
        })
    }

    /// Parses a payload; every refusal names the field.
    pub fn from_payload(bytes: &[u8]) -> Result<Self, RejectReason> {
        let json: CertJson = payload_json(bytes)?;
        check_name(&json.name).map_err(|e| bad("name", e))?;
        check_tags("tags", &json.tags)?;
        Ok(Self {
            wireguard_key: Key::from_base64(&json.wireguard_public_key).map_err(|e| bad("wireguard_public_key", e))?,
            node_key: VerifyingKey::from_base64(&json.node_key).map_err(|e| bad("node_key", e))?,
            addresses: parse_each("addresses", &json.addresses, str::parse::<IpAddr>)?,
            name: json.name,
            tags: json.tags,
            not_after: json.not_after,
        })
    }

    /// This certificate as a signed document.
    pub fn sign(&self, operator: &SigningKey) -> Envelope {
        Envelope::seal(Kind::NodeCert, self.to_payload(), operator)
    }
}

impl NodeRecord {
    /// The payload bytes that get signed.
    pub fn to_payload(&self) -> Vec<u8> {
        to_json(&RecordJson {
            name: self.name.clone(),
            endpoints: self.endpoints.iter().map(ToString::to_string).collect(),
            routes: self.routes.iter().map(ToString::to_string).collect(),
            vtep_mac: self.vtep_mac.map(|m| format_mac(&m)),
            issued_at: self.issued_at,
            expires: self.expires,
        })
    }

    /// Parses a payload; every refusal names the field.
    pub fn from_payload(bytes: &[u8]) -> Result<Self, RejectReason> {
        let json: RecordJson = payload_json(bytes)?;
        check_name(&json.name).map_err(|e| bad("name", e))?;
        if json.expires < json.issued_at {
            return Err(bad("expires", format!("{} is before issued_at {}", json.expires, json.issued_at)));
        }
        Ok(Self {
            endpoints: parse_each("endpoints", &json.endpoints, str::parse::<SocketAddr>)?,
            routes: parse_each("routes", &json.routes, str::parse::<IpNet>)?,
            vtep_mac: json.vtep_mac.as_deref().map(parse_mac).transpose().map_err(|e| bad("vtep_mac", e))?,
            name: json.name,
            issued_at: json.issued_at,
            expires: json.expires,
        })
    }

    /// This record as a signed document.
    pub fn sign(&self, node_key: &SigningKey) -> Envelope {
        Envelope::seal(Kind::NodeRecord, self.to_payload(), node_key)
    }
}

impl Policy {
    /// The payload bytes that get signed.
    pub fn to_payload(&self) -> Vec<u8> {
        to_json(&PolicyJson {
            version: self.version,
            issued_at: self.issued_at,
            auto_approvers: self
                .auto_approvers
                .iter()
                .map(|a| AutoApproverJson { prefix: a.prefix.to_string(), tags: a.tags.clone() })
                .collect(),
            acls: self.acls.iter().map(|a| AclJson { src: a.src.clone(), dst: a.dst.clone() }).collect(),
        })
    }

    /// Parses a payload; every refusal names the field.
    pub fn from_payload(bytes: &[u8]) -> Result<Self, RejectReason> {
        let json: PolicyJson = payload_json(bytes)?;
        let mut auto_approvers = Vec::with_capacity(json.auto_approvers.len());
        for (i, a) in json.auto_approvers.into_iter().enumerate() {
            let prefix = a
                .prefix
                .parse()
                .map_err(|e| bad(format!("auto_approvers[{i}].prefix"), format!("{:?}: {e}", a.prefix)))?;
            check_tags(&format!("auto_approvers[{i}].tags"), &a.tags)?;
            auto_approvers.push(AutoApprover { prefix, tags: a.tags });
        }
        let mut acls = Vec::with_capacity(json.acls.len());
        for (i, a) in json.acls.into_iter().enumerate() {
            check_tags(&format!("acls[{i}].src"), core::slice::from_ref(&a.src))?;
            check_tags(&format!("acls[{i}].dst"), &a.dst)?;
            acls.push(Acl { src: a.src, dst: a.dst });
        }
        Ok(Self { version: json.version, issued_at: json.issued_at, auto_approvers, acls })
    }

    /// This policy as a signed document.
    pub fn sign(&self, operator: &SigningKey) -> Envelope {
        Envelope::seal(Kind::Policy, self.to_payload(), operator)
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case).
pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = text.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!("{text:?} is not a MAC address (six hex bytes separated by ':')"));
    }
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{text:?} is not a MAC address (six hex bytes separated by ':')"));
        }
        *byte = u8::from_str_radix(part, 16)
            .map_err(|_| format!("{text:?} is not a MAC address: bad hex byte {part:?}"))?;
    }
    Ok(mac)
}
