//! Building a netmap: verify every document against the trust chain, keep the newest valid
//! certificate, record and policy, apply the policy (ACLs and route approval) and pick one
//! primary for each prefix several nodes advertise. Sans-IO and deterministic: the same documents,
//! `now` and staleness always give the same, sorted netmap.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use core::fmt;
use core::net::IpAddr;

use vxwg_dataplane::route::IpNet;

use super::document::{Document, Envelope, NodeCert, NodeRecord, Payload, Policy};
use super::reject::{RejectReason, Rejection};
use super::signing::VerifyingKey;
use crate::keys::Key;

/// What the netmap trusts: the operator key that signs certificates and the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trust {
    pub operator: VerifyingKey,
}

/// Every verified node, every advertised route with its decision, and every dropped document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netmap {
    /// The node this netmap was built for.
    pub self_name: String,
    /// Nodes with a valid certificate (this node included), sorted by name.
    pub nodes: Vec<NodeView>,
    /// Every route advertised in a live record, sorted by prefix then node.
    pub routes: Vec<RouteDecision>,
    /// Documents that did not count, sorted by document key.
    pub rejections: Vec<Rejection>,
    /// The policy in force (`None`: nothing is approved and nobody is a peer).
    pub policy: Option<Policy>,
}

/// A node with a valid certificate, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub cert: NodeCert,
    /// The document key of the certificate in force.
    pub cert_key: String,
    /// The live record, if any (without one the node is gone).
    pub record: Option<NodeRecord>,
    /// The document key of that record.
    pub record_key: Option<String>,
    /// This is the node the netmap was built for.
    pub is_self: bool,
    /// The policy's ACLs let this node and ours reach each other (in either direction).
    pub acl_allows: bool,
    /// Whether this node is a peer of ours: not us, allowed by the ACLs and with a live record.
    pub peer: bool,
    /// The caller reported its handshake as stale.
    pub stale: bool,
}

impl NodeView {
    pub fn name(&self) -> &str {
        &self.cert.name
    }
}

/// One advertised route and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDecision {
    pub prefix: IpNet,
    /// The advertising node.
    pub node: String,
    pub state: RouteState,
}

/// Whether an advertised route is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteState {
    /// The policy approves it; `primary` says whether this node's advertisement is the one used
    /// (the others for the same prefix are standbys).
    Approved {
        primary: bool,
    },
    NotApproved(NotApproved),
}

/// Why an advertised route is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotApproved {
    #[error("no valid policy document: nothing is approved")]
    NoPolicy,
    #[error("no auto_approvers prefix covers it")]
    NoApprover,
    #[error("auto_approvers covers it with {approver}, but the node has none of the tags {tags:?}")]
    TagNotAllowed { approver: IpNet, tags: Vec<String> },
    #[error("it covers overlay address {address} of node {node:?}")]
    CoversNodeAddress { address: IpAddr, node: String },
    #[error("the ACLs do not let the advertising node and this node reach each other")]
    NotPeer,
}

impl fmt::Display for RouteState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteState::Approved { primary: true } => f.write_str("approved, primary"),
            RouteState::Approved { primary: false } => f.write_str("approved, standby"),
            RouteState::NotApproved(why) => write!(f, "not approved: {why}"),
        }
    }
}

/// Unix seconds of `now` (0 before the epoch).
fn unix_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Verifies `docs` against `trust` and builds the netmap as node `self_name` sees it.
///
/// `stale(wg_key)` reports peers whose handshake went stale; a stale node is primary for a prefix
/// only if every other node advertising it is stale too. Without a valid policy nothing is approved
/// and no node is a peer (fail closed).
pub fn build(
    trust: &Trust,
    self_name: &str,
    docs: &[Document],
    now: SystemTime,
    stale: &dyn Fn(&Key) -> bool,
) -> Netmap {
    build_cached(&mut VerifyCache::default(), trust, self_name, docs, now, stale)
}

/// A parsed and verified document, or why it is not one.
type Opened = Result<(Envelope, Payload), RejectReason>;

/// Signature checks already done, by exact document bytes. Verifying is most of the cost of a
/// build (an Ed25519 verification per document), and a control loop rebuilds with the same
/// documents over and over as time passes; the result for given bytes never changes, so it is
/// kept. Trust, expiry and policy are checked again on every build.
#[derive(Debug, Default)]
pub struct VerifyCache {
    /// Document bytes -> (generation last seen, verification result).
    entries: HashMap<Vec<u8>, (u64, Opened)>,
    generation: u64,
}

impl VerifyCache {
    /// Parses and verifies `bytes`, or returns the remembered result.
    fn open(&mut self, bytes: &[u8]) -> Opened {
        let generation = self.generation;
        if let Some((seen, result)) = self.entries.get_mut(bytes) {
            *seen = generation;
            return result.clone();
        }
        let result = Envelope::open(bytes);
        self.entries.insert(bytes.to_vec(), (generation, result.clone()));
        result
    }

    /// Forgets documents that were not part of the last build.
    fn end_build(&mut self) {
        let generation = self.generation;
        self.entries.retain(|_, (seen, _)| *seen == generation);
        self.generation += 1;
    }

    /// How many documents are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// [`build`], reusing the signature checks in `cache` from earlier builds: the same netmap as
/// [`build`], much cheaper when few documents changed. Keep one cache per control loop.
pub fn build_cached(
    cache: &mut VerifyCache,
    trust: &Trust,
    self_name: &str,
    docs: &[Document],
    now: SystemTime,
    stale: &dyn Fn(&Key) -> bool,
) -> Netmap {
    let netmap = build_inner(cache, trust, self_name, docs, now, stale);
    cache.end_build();
    netmap
}

fn build_inner(
    cache: &mut VerifyCache,
    trust: &Trust,
    self_name: &str,
    docs: &[Document],
    now: SystemTime,
    stale: &dyn Fn(&Key) -> bool,
) -> Netmap {
    let now = unix_secs(now);
    let mut rejections = Vec::new();
    let mut reject = |key: &str, node: Option<&str>, reason: RejectReason| {
        rejections.push(Rejection { key: key.to_owned(), node: node.map(str::to_owned), reason });
    };

    let mut certs: Vec<(&str, NodeCert)> = Vec::new();
    let mut records: Vec<(&str, VerifyingKey, NodeRecord)> = Vec::new();
    let mut policies: Vec<(&str, Policy)> = Vec::new();
    for doc in docs {
        let (envelope, payload) = match cache.open(&doc.bytes) {
            Ok(opened) => opened,
            Err(reason) => {
                reject(&doc.key, None, reason);
                continue;
            }
        };
        match payload {
            Payload::Cert(cert) if envelope.signer != trust.operator => {
                reject(&doc.key, Some(&cert.name), RejectReason::UnknownSigner { signer: envelope.signer })
            }
            Payload::Cert(cert) if now > cert.not_after => {
                reject(&doc.key, Some(&cert.name), RejectReason::CertExpired { not_after: cert.not_after })
            }
            Payload::Cert(cert) => certs.push((&doc.key, cert)),
            Payload::Record(record) if now >= record.expires => {
                reject(&doc.key, Some(&record.name), RejectReason::RecordExpired { expires: record.expires })
            }
            Payload::Record(record) => records.push((&doc.key, envelope.signer, record)),
            Payload::Policy(_) if envelope.signer != trust.operator => {
                reject(&doc.key, None, RejectReason::UnknownSigner { signer: envelope.signer })
            }
            Payload::Policy(policy) => policies.push((&doc.key, policy)),
        }
    }

    // Certificates: per name, the one with the latest not_after wins (renewal); two valid
    // certificates naming one node with different WireGuard keys are both refused.
    let mut by_name: BTreeMap<String, Vec<(&str, NodeCert)>> = BTreeMap::new();
    for (key, cert) in certs {
        by_name.entry(cert.name.clone()).or_default().push((key, cert));
    }
    let mut winners: Vec<(&str, NodeCert)> = Vec::new();
    for (name, mut group) in by_name {
        group.sort_by(|a, b| (a.1.not_after, a.0).cmp(&(b.1.not_after, b.0)));
        if group.iter().any(|(_, c)| c.wireguard_key != group[0].1.wireguard_key) {
            for (key, cert) in &group {
                let other = group.iter().find(|(_, c)| c.wireguard_key != cert.wireguard_key).map_or("", |(k, _)| k);
                reject(key, Some(&name), RejectReason::DuplicateName { name: name.clone(), other: other.to_owned() });
            }
            continue;
        }
        winners.push(group.pop().expect("groups are never empty"));
    }
    // One WireGuard key or overlay address claimed by two nodes: neither counts, since either
    // could be the operator's mistake and AllowedIPs cannot be shared.
    let mut by_key: BTreeMap<Key, Vec<usize>> = BTreeMap::new();
    let mut by_address: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
    for (i, (_, cert)) in winners.iter().enumerate() {
        by_key.entry(cert.wireguard_key).or_default().push(i);
        for address in cert.addresses.iter().collect::<BTreeSet<_>>() {
            by_address.entry(*address).or_default().push(i);
        }
    }
    let mut refused = BTreeSet::new();
    let key_clashes = by_key.values().map(|claimants| (claimants, None));
    let address_clashes = by_address.iter().map(|(address, claimants)| (claimants, Some(*address)));
    for (claimants, address) in key_clashes.chain(address_clashes).filter(|(c, _)| c.len() > 1) {
        for &i in claimants {
            if !refused.insert(i) {
                continue; // one reason per certificate is enough
            }
            let (key, cert) = &winners[i];
            let other =
                winners[claimants.iter().copied().find(|&j| j != i).expect("two or more claimants")].1.name.clone();
            let reason = match address {
                None => RejectReason::DuplicateKey { key: cert.wireguard_key, other },
                Some(address) => RejectReason::DuplicateAddress { address, other },
            };
            reject(key, Some(&cert.name), reason);
        }
    }
    let winners: BTreeMap<String, (&str, NodeCert)> = winners
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !refused.contains(i))
        .map(|(_, (key, cert))| (cert.name.clone(), (key, cert)))
        .collect();

    // Records: signed by the key the node's certificate binds; the latest issued wins.
    let mut live: BTreeMap<String, (&str, NodeRecord)> = BTreeMap::new();
    for (key, signer, record) in records {
        let Some((_, cert)) = winners.get(&record.name) else {
            reject(key, Some(&record.name), RejectReason::NoCert { name: record.name.clone() });
            continue;
        };
        if signer != cert.node_key {
            reject(key, Some(&record.name), RejectReason::WrongSigner { signer, expected: cert.node_key });
            continue;
        }
        let newer = match live.get(&record.name) {
            Some((old_key, old)) => (record.issued_at, record.expires, key) > (old.issued_at, old.expires, *old_key),
            None => true,
        };
        if newer {
            live.insert(record.name.clone(), (key, record));
        }
    }

    // Policy: the highest version, then the latest issued.
    let policy = policies
        .into_iter()
        .max_by(|a, b| (a.1.version, a.1.issued_at, a.0).cmp(&(b.1.version, b.1.issued_at, b.0)))
        .map(|(_, p)| p);

    let self_tags: Option<&[String]> = winners.get(self_name).map(|(_, c)| c.tags.as_slice());
    let mut nodes: Vec<NodeView> = winners
        .iter()
        .map(|(name, (cert_key, cert))| {
            let is_self = name == self_name;
            let acl_allows = match (&policy, self_tags) {
                (Some(policy), Some(ours)) => !is_self && policy.peering_allowed(ours, &cert.tags),
                _ => false,
            };
            let record = live.get(name);
            NodeView {
                cert: cert.clone(),
                cert_key: (*cert_key).to_owned(),
                record: record.map(|(_, r)| r.clone()),
                record_key: record.map(|(k, _)| (*k).to_owned()),
                is_self,
                acl_allows,
                peer: acl_allows && record.is_some(),
                stale: !is_self && stale(&cert.wireguard_key),
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.name().cmp(b.name()));

    let routes = decide_routes(&nodes, policy.as_ref());
    rejections.sort_by(|a, b| (&a.key, &a.node).cmp(&(&b.key, &b.node)));
    Netmap { self_name: self_name.to_owned(), nodes, routes, rejections, policy }
}

/// The decision for every route advertised in a live record.
fn decide_routes(nodes: &[NodeView], policy: Option<&Policy>) -> Vec<RouteDecision> {
    let mut addresses: Vec<(IpAddr, &str)> =
        nodes.iter().flat_map(|n| n.cert.addresses.iter().map(move |a| (*a, n.name()))).collect();
    addresses.sort();
    let mut routes = Vec::new();
    for node in nodes {
        let Some(record) = &node.record else { continue };
        let advertised: BTreeSet<IpNet> = record.routes.iter().copied().collect();
        for prefix in advertised {
            let state = match approve(policy, &prefix, node, &addresses) {
                Err(why) => RouteState::NotApproved(why),
                Ok(()) if !node.is_self && !node.peer => RouteState::NotApproved(NotApproved::NotPeer),
                Ok(()) => RouteState::Approved { primary: false },
            };
            routes.push((RouteDecision { prefix, node: node.name().to_owned(), state }, node.is_self, node.stale));
        }
    }
    routes.sort_by(|a, b| (a.0.prefix, &a.0.node).cmp(&(b.0.prefix, &b.0.node)));

    // One primary per prefix: this node if it advertises the prefix itself (it serves it
    // locally), else the lowest-named node that is not stale, else the lowest-named one.
    let mut start = 0;
    while start < routes.len() {
        let prefix = routes[start].0.prefix;
        let end = start + routes[start..].iter().take_while(|r| r.0.prefix == prefix).count();
        let group = &mut routes[start..end];
        let approved = |r: &(RouteDecision, bool, bool)| matches!(r.0.state, RouteState::Approved { .. });
        let pick = group
            .iter()
            .position(|r| approved(r) && r.1)
            .or_else(|| group.iter().position(|r| approved(r) && !r.2))
            .or_else(|| group.iter().position(approved));
        if let Some(i) = pick {
            group[i].0.state = RouteState::Approved { primary: true };
        }
        start = end;
    }
    routes.into_iter().map(|r| r.0).collect()
}

/// Whether the policy lets `node` advertise `prefix`; `addresses` is every node's overlay
/// addresses, sorted.
fn approve(
    policy: Option<&Policy>,
    prefix: &IpNet,
    node: &NodeView,
    addresses: &[(IpAddr, &str)],
) -> Result<(), NotApproved> {
    let policy = policy.ok_or(NotApproved::NoPolicy)?;
    let covering: Vec<_> = policy.auto_approvers.iter().filter(|a| covers(&a.prefix, prefix)).collect();
    let first = covering.first().ok_or(NotApproved::NoApprover)?;
    if !covering.iter().any(|a| a.tags.iter().any(|t| node.cert.tags.contains(t))) {
        return Err(NotApproved::TagNotAllowed { approver: first.prefix, tags: first.tags.clone() });
    }
    // A subnet route must never take over another node's overlay address.
    // `addresses` is sorted, so the ones inside the prefix are one run starting at its network address.
    let first = addresses.partition_point(|(a, _)| *a < prefix.addr());
    let mut inside = addresses[first..].iter().take_while(|(a, _)| prefix.contains(*a));
    if let Some((address, owner)) = inside.find(|(_, owner)| *owner != node.name()) {
        return Err(NotApproved::CoversNodeAddress { address: *address, node: (*owner).to_owned() });
    }
    Ok(())
}

/// Whether `outer` contains every address of `inner`.
pub fn covers(outer: &IpNet, inner: &IpNet) -> bool {
    outer.is_ipv4() == inner.is_ipv4() && outer.prefix_len() <= inner.prefix_len() && outer.contains(inner.addr())
}

impl Policy {
    /// Whether the ACLs let a node tagged `from` reach a node tagged `to`.
    pub fn allows(&self, from: &[String], to: &[String]) -> bool {
        self.acls.iter().any(|acl| {
            (acl.src == "*" || from.contains(&acl.src)) && acl.dst.iter().any(|d| d == "*" || to.contains(d))
        })
    }

    /// Whether two nodes peer: WireGuard is symmetric, so either direction being allowed makes
    /// them peers (the policy is about who may open connections, not about packet filtering).
    pub fn peering_allowed(&self, a: &[String], b: &[String]) -> bool {
        self.allows(a, b) || self.allows(b, a)
    }
}
