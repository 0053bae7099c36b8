//! Entry points shared by the control crate's fuzz targets (`fuzz/fuzz_targets/{uapi_request,
//! netmap_documents}.rs`) and the seed-corpus replay test (`control/tests/fuzz_corpus.rs`). Each
//! function takes arbitrary bytes and must never panic; the assertions in it are the invariants
//! under test.
//!
//! - [`uapi_request`]: bytes from the `wg` UAPI socket.
//! - [`netmap_documents`]: documents from a netmap source (files or etcd), built into a netmap
//!   with fixed keys ([`operator_key`], [`node_signing_key`]) and a fixed [`NOW`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::keys::Key;
use crate::netmap::{
    build, build_cached, covers, diff, intent, Document, Envelope, Intent, Kind, Netmap, NodeCert, NodeRecord, Payload,
    Policy, RejectReason, RouteState, SigningKey, Trust, VerifyCache,
};
use crate::uapi::{parse_request, render_errno, request_len, Request, UapiModel, EINVAL, EPROTO};

/// The longest error message a request may produce: values are quoted only in part, so that a
/// hostile line cannot flood the log.
const MAX_ERROR_LEN: usize = 512;

/// Parses `data` as one UAPI request and, frame by frame as the daemon splits a connection's
/// bytes with [`request_len`], applies it to an in-memory device.
///
/// Invariants: an accepted request is exactly one frame; a set request renders back
/// ([`DeviceUpdate::to_request`]) to text that parses to the same update and is canonical; an
/// error names a line that exists, answers `EINVAL` or `EPROTO`, and stays short; a refused request
/// leaves the device unchanged; the device's state, sent again as `wg setconf` would send it,
/// rebuilds the same device.
pub fn uapi_request(data: &[u8]) {
    match parse_request(data) {
        Ok(request) => {
            assert_eq!(request_len(data), Some(data.len()), "an accepted request is not exactly one frame");
            if let Request::Set(update) = request {
                let text = update.to_request();
                assert_eq!(parse_request(&text), Ok(Request::Set(update.clone())), "{text:?} does not round-trip");
                assert_eq!(request_len(text.as_bytes()), Some(text.len()));
            }
        }
        Err(e) => {
            assert!(e.errno() == EINVAL || e.errno() == EPROTO, "{e}: errno {}", e.errno());
            let lines = data.iter().filter(|&&b| b == b'\n').count();
            assert!(e.line() <= lines + 1, "{e}: line {} of {lines}", e.line());
            let message = e.to_string();
            assert!(message.len() <= MAX_ERROR_LEN, "{} byte error message: {message:?}", message.len());
            assert_eq!(render_errno(e.errno()), format!("errno=-{}\n\n", e.errno()));
        }
    }

    let mut device = UapiModel::new();
    let mut rest = data;
    while let Some(len) = request_len(rest) {
        let (frame, next) = rest.split_at(len);
        rest = next;
        let before = device.clone();
        let answer = device.handle(frame);
        match parse_request(frame) {
            Ok(Request::Get) => assert!(answer.ends_with("errno=0\n\n"), "{answer:?}"),
            Ok(Request::Set(_)) => assert_eq!(answer, "errno=0\n\n"),
            Err(e) => {
                assert_eq!(answer, render_errno(e.errno()));
                assert_eq!(device, before, "refused request {e} changed the device");
            }
        }
        let mut rebuilt = UapiModel::new();
        assert_eq!(rebuilt.handle(device.snapshot().to_setconf().to_request().as_bytes()), "errno=0\n\n");
        assert_eq!(rebuilt.snapshot(), device.snapshot(), "setconf of the device's state rebuilds another device");
    }
}

/// Separates the documents of one [`netmap_documents`] input.
pub const DOCUMENT_SEPARATOR: u8 = 0xff;
/// At most this many documents of an input are used, to keep one run fast.
pub const MAX_DOCUMENTS: usize = 24;
/// The node the netmap is built for.
pub const SELF_NAME: &str = "alpha";
/// The build's clock, in Unix seconds (2027-01-15).
pub const NOW: u64 = 1_800_000_000;
/// [`NOW`] as the clock the build is given.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

/// A document that starts with this line prefix is a payload to be signed here rather than an
/// envelope: `seal <kind> <signer>\n<payload>`, where `<signer>` is `operator` or a node name
/// (signed with [`node_signing_key`]). It lets the fuzzer change payloads and still reach the
/// checks behind the signature.
pub const SEAL_PREFIX: &[u8] = b"seal ";

/// The operator key the fuzzed netmap trusts (a constant seed).
pub fn operator_key() -> SigningKey {
    SigningKey::from_seed([0x0b; 32])
}

/// The record-signing key of node `name` (a constant seed derived from the name).
pub fn node_signing_key(name: &str) -> SigningKey {
    let mut seed = [0x5a; 32];
    for (s, b) in seed.iter_mut().zip(name.bytes()) {
        *s ^= b;
    }
    SigningKey::from_seed(seed)
}

/// The envelope a `seal` document stands for, or `None` if `chunk` is not one.
pub fn sealed(chunk: &[u8]) -> Option<Envelope> {
    let rest = chunk.strip_prefix(SEAL_PREFIX)?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    let header = core::str::from_utf8(&rest[..end]).ok()?;
    let (kind, signer) = header.split_once(' ')?;
    let kind = [Kind::NodeCert, Kind::NodeRecord, Kind::Policy].into_iter().find(|k| k.as_str() == kind)?;
    let key = if signer == "operator" { operator_key() } else { node_signing_key(signer) };
    Some(Envelope::seal(kind, rest[end + 1..].to_vec(), &key))
}

/// The documents of a [`netmap_documents`] input, keyed `doc00`, `doc01`, ... in input order.
pub fn split_documents(data: &[u8]) -> Vec<Document> {
    data.split(|&b| b == DOCUMENT_SEPARATOR)
        .take(MAX_DOCUMENTS)
        .enumerate()
        .map(|(i, chunk)| Document {
            key: format!("doc{i:02}"),
            bytes: sealed(chunk).map_or_else(|| chunk.to_vec(), |envelope| envelope.to_json()),
        })
        .collect()
}

/// Whether the fuzzed netmap counts node `key`'s handshake as stale (a fixed rule, so that the
/// standby/primary logic is exercised).
fn stale(key: &Key) -> bool {
    key.0[0] % 3 == 0
}

/// Opens every document of `data` ([`split_documents`]) and builds the netmap as [`SELF_NAME`]
/// sees it, trusting [`operator_key`], at [`NOW`].
///
/// Invariants: what parses renders back to itself (envelopes, payloads); the netmap holds only
/// nodes whose certificate the operator signed and that has not expired, records signed by the
/// key the node's certificate binds, and the newest valid policy; no two nodes share a name, key
/// or address; a peer is ACL-allowed and live; an approved route is covered by an approver whose
/// tags the node has, covers no other node's address and has exactly one primary; the build does
/// not depend on the order of the documents or on the verification cache; the intent holds only
/// peers, with their own addresses and primary routes.
pub fn netmap_documents(data: &[u8]) {
    let docs = split_documents(data);
    let opened: BTreeMap<&str, Opened> = docs.iter().map(|d| (d.key.as_str(), check_document(&d.bytes))).collect();
    let trust = Trust { operator: operator_key().public() };
    let now = now();

    // Verifying is most of the cost of a run: each document is verified once by the cache (half
    // of them in a first build), and once more by the uncached build of the reversed order.
    let mut cache = VerifyCache::default();
    let _ = build_cached(&mut cache, &trust, SELF_NAME, &docs[..docs.len() / 2], now, &stale);
    let netmap = build_cached(&mut cache, &trust, SELF_NAME, &docs, now, &stale);
    let distinct: BTreeSet<&[u8]> = docs.iter().map(|d| d.bytes.as_slice()).collect();
    assert_eq!(cache.len(), distinct.len(), "the cache keeps exactly the last build's documents");
    check_netmap(&netmap, &opened, &trust);
    check_intent(&netmap);

    let mut reversed = docs.clone();
    reversed.reverse();
    let uncached = build(&trust, SELF_NAME, &reversed, now, &stale);
    assert_eq!(uncached, netmap, "the netmap depends on document order or on the cache");
}

/// A document opened: parsed, verified and decoded, or why not.
type Opened = Result<(Envelope, Payload), RejectReason>;

/// One document on its own: opening it agrees with parsing and decoding it, and what parses
/// renders back to itself. Verifies the signature once.
fn check_document(bytes: &[u8]) -> Opened {
    let opened = Envelope::open(bytes);
    let envelope = match Envelope::parse(bytes) {
        Ok(envelope) => envelope,
        Err(reason) => {
            assert_eq!(opened.as_ref().err(), Some(&reason), "open and parse disagree");
            return opened;
        }
    };
    assert_eq!(Envelope::parse(&envelope.to_json()).as_ref(), Ok(&envelope), "the envelope does not round-trip");
    // Payloads are decoded whether or not the signature holds: the parser sees every mutation.
    let decoded = envelope.decode();
    match &decoded {
        Ok(Payload::Cert(cert)) => assert_eq!(NodeCert::from_payload(&cert.to_payload()).as_ref(), Ok(cert)),
        Ok(Payload::Record(record)) => {
            assert_eq!(NodeRecord::from_payload(&record.to_payload()).as_ref(), Ok(record))
        }
        Ok(Payload::Policy(policy)) => assert_eq!(Policy::from_payload(&policy.to_payload()).as_ref(), Ok(policy)),
        Err(reason) => {
            assert!(!matches!(reason, RejectReason::BadSignature { .. }), "decode does not check signatures")
        }
    }
    match &opened {
        Ok((opened_envelope, payload)) => {
            assert_eq!(opened_envelope, &envelope);
            assert_eq!(decoded.as_ref(), Ok(payload));
        }
        Err(RejectReason::BadSignature { signer }) => assert_eq!(signer, &envelope.signer),
        // Past the signature, open refuses only what decode refuses.
        Err(reason) => assert_eq!(decoded.as_ref().err(), Some(reason), "open refused a parsed envelope"),
    }
    opened
}

fn check_netmap(netmap: &Netmap, opened: &BTreeMap<&str, Opened>, trust: &Trust) {
    let signed_by = |key: &str| opened.get(key).and_then(|o| o.as_ref().ok());
    assert_eq!(netmap.self_name, SELF_NAME);

    // Documents that do not open are rejected with the reason, before any node is known.
    for (key, result) in opened {
        if let Err(reason) = result {
            assert!(
                netmap.rejections.iter().any(|r| r.key == *key && r.node.is_none() && r.reason == *reason),
                "{key} ({reason}) is not among the rejections"
            );
        }
    }
    assert!(netmap.rejections.windows(2).all(|w| (&w[0].key, &w[0].node) <= (&w[1].key, &w[1].node)));

    // The policy in force is the operator's newest.
    let policies = opened.iter().filter_map(|(key, o)| match o {
        Ok((envelope, Payload::Policy(p))) if envelope.signer == trust.operator => Some((*key, p)),
        _ => None,
    });
    let newest = policies.max_by(|a, b| (a.1.version, a.1.issued_at, a.0).cmp(&(b.1.version, b.1.issued_at, b.0)));
    assert_eq!(netmap.policy.as_ref(), newest.map(|(_, p)| p), "not the newest operator policy");

    // Nodes: valid operator certificates, one per name, key and address.
    assert!(netmap.nodes.windows(2).all(|w| w[0].name() < w[1].name()), "nodes not sorted by unique name");
    let mut keys = BTreeSet::new();
    let mut addresses = BTreeSet::new();
    let self_tags = netmap.nodes.iter().find(|n| n.is_self).map(|n| n.cert.tags.as_slice());
    for node in &netmap.nodes {
        let name = node.name();
        match signed_by(&node.cert_key) {
            Some((envelope, Payload::Cert(cert))) => {
                assert_eq!(envelope.signer, trust.operator, "{name}: certificate not signed by the operator");
                assert_eq!(cert, &node.cert, "{name}: certificate differs from its document");
            }
            other => panic!("{name}: certificate document {} is {other:?}", node.cert_key),
        }
        assert!(node.cert.not_after >= NOW, "{name}: expired certificate counts");
        assert!(keys.insert(node.cert.wireguard_key), "{name}: WireGuard key shared");
        for address in node.cert.addresses.iter().collect::<BTreeSet<_>>() {
            assert!(addresses.insert(*address), "{name}: address {address} shared");
        }
        assert_eq!(node.is_self, name == SELF_NAME);
        match (&node.record, &node.record_key) {
            (Some(record), Some(key)) => match signed_by(key) {
                Some((envelope, Payload::Record(signed))) => {
                    assert_eq!(envelope.signer, node.cert.node_key, "{name}: record not signed by the node key");
                    assert_eq!(signed, record);
                    assert_eq!(record.name, name);
                    assert!(record.expires > NOW, "{name}: expired record counts");
                }
                other => panic!("{name}: record document {key} is {other:?}"),
            },
            (None, None) => {}
            other => panic!("{name}: record and record key disagree: {other:?}"),
        }
        let allowed = match (&netmap.policy, self_tags) {
            (Some(policy), Some(ours)) => !node.is_self && policy.peering_allowed(ours, &node.cert.tags),
            _ => false,
        };
        assert_eq!(node.acl_allows, allowed, "{name}: ACL decision");
        assert_eq!(node.peer, node.acl_allows && node.record.is_some(), "{name}: peer");
    }

    // Routes: approved only as the policy says, one primary per approved prefix.
    assert!(netmap.routes.windows(2).all(|w| (w[0].prefix, &w[0].node) < (w[1].prefix, &w[1].node)));
    let mut primaries: BTreeMap<_, (usize, usize)> = BTreeMap::new();
    for route in &netmap.routes {
        let node = netmap.nodes.iter().find(|n| n.name() == route.node).expect("a route's node is a node");
        let record = node.record.as_ref().expect("a route's node has a live record");
        assert!(record.routes.contains(&route.prefix), "{} did not advertise {}", route.node, route.prefix);
        let counts = primaries.entry(route.prefix).or_default();
        let RouteState::Approved { primary } = route.state else { continue };
        counts.0 += 1;
        counts.1 += usize::from(primary);
        let policy = netmap.policy.as_ref().expect("approved without a policy");
        assert!(
            policy
                .auto_approvers
                .iter()
                .any(|a| covers(&a.prefix, &route.prefix) && a.tags.iter().any(|t| node.cert.tags.contains(t))),
            "{} approved for {} without an approver",
            route.prefix,
            route.node
        );
        assert!(node.is_self || node.peer, "{} approved for non-peer {}", route.prefix, route.node);
        for other in netmap.nodes.iter().filter(|n| n.name() != node.name()) {
            for address in &other.cert.addresses {
                assert!(!route.prefix.contains(*address), "{} covers {address} of {}", route.prefix, other.name());
            }
        }
    }
    for (prefix, (approved, primary)) in primaries {
        assert_eq!(primary, usize::from(approved > 0), "{prefix}: {primary} primaries among {approved} approved");
    }
}

fn check_intent(netmap: &Netmap) {
    let intent = intent(netmap);
    for (key, peer) in &intent.peers {
        let node = netmap.nodes.iter().find(|n| n.cert.wireguard_key == *key).expect("an intended peer is a node");
        assert!(node.peer, "{} is in the intent but not a peer", node.name());
        for address in &node.cert.addresses {
            assert!(
                peer.allowed_ips.iter().any(|net| net.contains(*address)),
                "{address} of {} not allowed",
                node.name()
            );
        }
        for route in &peer.routes {
            assert!(
                netmap.routes.iter().any(|r| r.prefix == *route
                    && r.node == node.name()
                    && r.state == RouteState::Approved { primary: true }),
                "{route} routed to {} without being its primary",
                node.name()
            );
        }
    }
    assert_eq!(intent.peers.len(), netmap.nodes.iter().filter(|n| n.peer).count());
    assert!(diff(&intent, &intent).is_empty());
    let mut rebuilt = Intent::default();
    crate::netmap::apply_changes(&mut rebuilt, &diff(&Intent::default(), &intent));
    assert_eq!(rebuilt, intent);
}
