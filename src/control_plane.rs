//! The daemon side of `[control]`: a thread that owns the netmap source, and the part of the
//! daemon loop that applies what it builds.
//!
//! The control thread publishes this node's signed record once the loop has applied the first
//! netmap (re-signed every `refresh_secs`, valid for `record_ttl_secs`), takes the document set from the source whenever it changes, and
//! rebuilds the netmap when its inputs change: the documents, the set of stale peers, or the clock
//! passing the next certificate or record expiry. When the netmap differs from the last one handed over, it is put in a one-slot
//! mailbox (a newer netmap replaces an unread one) and a byte on a socket pair wakes the daemon
//! loop. The loop never waits on the source: it takes the newest netmap, applies the difference
//! to the engine ([`EngineSync`]) and to the kernel's routes ([`RouteSync`]), and once a second
//! tells the thread which peers went stale and puts back any route someone deleted.
//!
//! A netmap that cannot be right — no valid policy, or this node's own certificate missing or
//! invalid — is not applied once a good one was: the last good state stays (a broken or
//! tampered store never tears the mesh down), and `vxwg status` says why it is held.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use vxwg::apply::{EngineSync, Target};
use vxwg::control::keys::Key;
use vxwg::control::netmap::{
    build_cached, intent, Document, Intent, Netmap, NodeRecord, RouteState, SigningKey, Trust, VerifyCache,
};
use vxwg::control::source::{EtcdSource, FileSource, Source};
use vxwg::dataplane::route::IpNet;

use crate::config::{Config, Control, SourceConfig};
use crate::daemon::Dataplane;
use crate::routesync::RouteSync;
use crate::worker;

/// vxwg's own UAPI request for `vxwg routes` (answered with one line of JSON and a blank line).
pub const ROUTES_REQUEST: &str = "vxwg_routes=1\n\n";

/// The longest the thread blocks in the source: how soon it sees `stop`, a stale-set change or
/// an expiry.
const WAIT_AT_MOST: Duration = Duration::from_millis(500);
/// How often the loop reports stale peers and reconciles kernel routes.
const TICK_EVERY: Duration = Duration::from_secs(1);
/// How long the first publish waits for the first netmap to be applied.
const FIRST_PUBLISH_WAIT: Duration = Duration::from_secs(2);
/// How long to wait before publishing again after a failed publish.
const PUBLISH_RETRY: Duration = Duration::from_secs(1);

/// A netmap and the engine state it asks for.
struct Built {
    netmap: Netmap,
    intent: Intent,
    at: SystemTime,
}

/// What the control thread and the daemon loop share.
#[derive(Default)]
struct Shared {
    /// The newest netmap not yet taken by the loop (an unread one is replaced, never queued).
    mailbox: Mutex<Option<Built>>,
    /// WireGuard keys of peers whose handshake went stale, as the loop last saw them.
    stale: Mutex<BTreeSet<Key>>,
    /// The source's last error (cleared once it works again).
    source_error: Mutex<Option<String>>,
    stop: AtomicBool,
    /// The loop has applied a netmap (so this node accepts its peers' handshakes).
    applied: AtomicBool,
}

/// The control plane inside the daemon: the thread's handle, and what was applied.
pub struct ControlSide {
    shared: Arc<Shared>,
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
    source: String,
    node: String,
    engine: EngineSync,
    routes: Option<RouteSync>,
    /// The netmap applied (or, before any good one, the last one seen) and when it was built.
    netmap: Option<(Netmap, SystemTime)>,
    /// Why the newest netmap is not applied, if it is not.
    held: Option<String>,
    /// A good netmap was applied at least once.
    had_good: bool,
    stale_after: Duration,
    last_tick: Instant,
    applied: u64,
    /// What reconciliation last failed to do (logged when it changes, not every second).
    reconcile_failures: Vec<String>,
    /// The interface's addresses (`addresses`), checked against this node's certificate.
    addresses: Vec<std::net::IpAddr>,
    /// The certificate's overlay addresses last warned about.
    warned_addresses: Option<Vec<std::net::IpAddr>>,
}

impl ControlSide {
    /// Opens the source and starts the control thread. Routes go into vxwg's table through
    /// `ifname` (and `pod_ifname` with the pod path) unless `[routing] enabled = false`.
    pub fn start(ifname: &str, config: &Config, pod_ifname: Option<&str>) -> anyhow::Result<ControlSide> {
        let control = config.control.as_ref().context("no [control] section")?;
        let routes = match config.routing.enabled {
            true => Some(RouteSync::new(ifname, pod_ifname, config.routing.table, crate::netconf::rules(config))?),
            false => None,
        };
        let source = open_source(control)?;
        let describe = source.describe();
        let (wake, wake_tx) = UnixStream::pair().context("creating the control wake-up socket pair")?;
        wake.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let shared = Arc::new(Shared::default());
        let publisher = Publisher {
            // The thread's own copy (a signing key is not Clone).
            key: SigningKey::from_base64(&control.signing_key.to_base64()).context("control.signing_key_file")?,
            template: NodeRecord {
                name: control.node.clone(),
                endpoints: control.advertise_endpoints.clone(),
                routes: control.advertise_routes.clone(),
                vtep_mac: config.vxlan.as_ref().map(|v| v.vtep_mac.0),
                issued_at: 0,
                expires: 0,
            },
            ttl: control.record_ttl,
            refresh: control.refresh,
        };
        let worker = Worker {
            ifname: ifname.to_string(),
            trust: Trust { operator: control.operator },
            node: control.node.clone(),
            source,
            publisher,
            shared: shared.clone(),
            wake: wake_tx,
        };
        let thread = std::thread::Builder::new()
            .name(format!("vxwg-control-{ifname}"))
            .spawn(move || worker.run())
            .context("starting the control thread")?;
        log(ifname, &format!("control plane: node {} from {describe}", control.node));
        Ok(ControlSide {
            shared,
            wake,
            thread: Some(thread),
            source: describe,
            node: control.node.clone(),
            engine: EngineSync::new(
                control.advertise_routes.clone(),
                control.persistent_keepalive.map(|s| Duration::from_secs(u64::from(s))),
            ),
            routes,
            netmap: None,
            held: None,
            had_good: false,
            stale_after: control.stale_after,
            last_tick: Instant::now(),
            applied: 0,
            reconcile_failures: Vec::new(),
            addresses: config.addresses.iter().map(|a| a.addr()).collect(),
            warned_addresses: None,
        })
    }

    /// The descriptor the daemon loop polls: readable when a new netmap is waiting.
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Called by the daemon loop on every wake-up (`woken`: [`ControlSide::wake_fd`] was
    /// readable): applies a waiting netmap, and once a second reports stale peers to the thread
    /// and reconciles the kernel's routes. Costs a clock read when there is nothing to do. The
    /// dataplane lock is taken only to read or change the engine, never around netlink calls,
    /// so the packet workers do not wait on the kernel's routing tables.
    pub fn poll(&mut self, ifname: &str, dataplane: &worker::Shared, woken: bool) {
        if woken {
            let mut drain = [0u8; 64];
            while matches!(self.wake.read(&mut drain), Ok(n) if n > 0) {}
            let waiting = self.shared.mailbox.lock().map(|mut m| m.take()).unwrap_or(None);
            if let Some(built) = waiting {
                self.take(ifname, built, dataplane);
            }
        }
        if self.last_tick.elapsed() >= TICK_EVERY {
            self.last_tick = Instant::now();
            let stale = self.engine.stale_peers(dataplane.lock().engine(), SystemTime::now(), self.stale_after);
            if let Ok(mut s) = self.shared.stale.lock() {
                *s = stale;
            }
            if let Some(routes) = self.routes.as_mut() {
                let report = routes.reconcile();
                for net in &report.added {
                    log(ifname, &format!("route {net} in table {} was missing: put back", routes.table()));
                }
                for rule in &report.rules_restored {
                    log(ifname, &format!("{rule} was missing: put back"));
                }
                let failures: Vec<String> = report.failed.iter().map(|e| e.to_string()).collect();
                for e in failures.iter().filter(|e| !self.reconcile_failures.contains(e)) {
                    log(ifname, &format!("route reconciliation: {e} (retried every second)"));
                }
                self.reconcile_failures = failures;
            }
        }
    }

    /// Applies `built` unless it cannot be right (then the last good state stays).
    fn take(&mut self, ifname: &str, built: Built, dataplane: &worker::Shared) {
        if let Some(why) = unusable(&built.netmap) {
            if self.had_good {
                if self.held.as_deref() != Some(why.as_str()) {
                    log(ifname, &format!("netmap not applied, keeping the last good one: {why}"));
                }
                self.held = Some(why);
                return;
            }
            // Nothing good yet: nothing to keep, and status shows the netmap and its rejections.
            self.held = Some(why);
        } else {
            self.held = None;
            self.had_good = true;
        }
        let (report, local_vtep) = {
            let mut dp = dataplane.lock();
            let local_vtep = match &*dp {
                Dataplane::L3(_) => None,
                Dataplane::Pod(p) => Some(p.config().local_vtep_ip),
            };
            let target = match &mut *dp {
                Dataplane::L3(e) => Target::L3(e),
                Dataplane::Pod(p) => Target::Pod(p),
            };
            (self.engine.apply(built.intent, target, SystemTime::now()), local_vtep)
        };
        for (what, names) in [("added", &report.added), ("removed", &report.removed), ("updated", &report.updated)] {
            if !names.is_empty() {
                log(ifname, &format!("peers {what}: {}", names.join(", ")));
            }
        }
        for e in &report.errors {
            log(ifname, &format!("netmap: {e}"));
        }
        if let Some(routes) = self.routes.as_mut() {
            let sync = routes.set(self.engine.kernel_routes(local_vtep));
            for e in &sync.failed {
                log(ifname, &format!("routes: {e} (retried within a second)"));
            }
        }
        self.applied += 1;
        self.shared.applied.store(true, Ordering::SeqCst);
        self.check_own_addresses(ifname, &built.netmap);
        self.netmap = Some((built.netmap, built.at));
    }

    /// Warns (once per certificate) when this node's certificate names overlay addresses the
    /// interface does not have: peers accept from us only what the certificate names.
    fn check_own_addresses(&mut self, ifname: &str, netmap: &Netmap) {
        let Some(me) = netmap.nodes.iter().find(|n| n.is_self) else { return };
        let missing: Vec<_> = me.cert.addresses.iter().filter(|a| !self.addresses.contains(a)).copied().collect();
        if missing.is_empty() || self.warned_addresses.as_ref() == Some(&me.cert.addresses) {
            return;
        }
        let list: Vec<String> = missing.iter().map(|a| a.to_string()).collect();
        log(
            ifname,
            &format!(
                "this node's certificate names overlay address(es) {} that `addresses` does not put on {ifname}; \
                 peers accept only the certificate's addresses from us",
                list.join(", ")
            ),
        );
        self.warned_addresses = Some(me.cert.addresses.clone());
    }

    /// `control` in `vxwg status --json`.
    pub fn status_json(&self) -> serde_json::Value {
        let netmap = self.netmap.as_ref();
        let age = netmap.and_then(|(_, at)| SystemTime::now().duration_since(*at).ok()).map(|d| d.as_secs());
        serde_json::json!({
            "node": self.node,
            "source": self.source,
            "source_error": self.shared.source_error.lock().ok().and_then(|e| e.clone()),
            "netmap_age_secs": age,
            "netmaps_applied": self.applied,
            "held": self.held,
            "policy_version": netmap.and_then(|(n, _)| n.policy.as_ref()).map(|p| p.version),
            "peers": self.engine.current().peers.len(),
            "routes_approved": netmap.map_or(0, |(n, _)| n.routes.iter().filter(|r| matches!(r.state, RouteState::Approved { .. })).count()),
            "rejections": netmap.map_or(0, |(n, _)| n.rejections.len()),
        })
    }

    /// The answer to [`ROUTES_REQUEST`]: every advertised route and its state, and every rejection.
    pub fn routes_json(&self) -> serde_json::Value {
        let Some((netmap, at)) = &self.netmap else {
            return serde_json::json!({ "node": self.node, "source": self.source, "netmap": null, "routes": [], "rejections": [] });
        };
        let installed = self.routes.as_ref().map(|r| r.wanted().clone()).unwrap_or_default();
        let routes: Vec<serde_json::Value> = netmap
            .routes
            .iter()
            .map(|r| {
                let (state, reason) = match &r.state {
                    RouteState::Approved { primary: true } => ("primary", None),
                    RouteState::Approved { primary: false } => ("standby", None),
                    RouteState::NotApproved(why) => ("not approved", Some(why.to_string())),
                };
                let own = r.node == self.node;
                serde_json::json!({
                    "prefix": r.prefix.to_string(),
                    "node": r.node,
                    "state": state,
                    "reason": reason,
                    "own": own,
                    "installed": !own && installed.contains_key(&r.prefix) && self.routed_to(&r.node, r.prefix),
                })
            })
            .collect();
        let rejections: Vec<serde_json::Value> = netmap
            .rejections
            .iter()
            .map(|r| serde_json::json!({ "key": r.key, "node": r.node, "reason": r.reason.to_string() }))
            .collect();
        serde_json::json!({
            "node": self.node,
            "source": self.source,
            "netmap_age_secs": SystemTime::now().duration_since(*at).ok().map(|d| d.as_secs()),
            "held": self.held,
            "routes": routes,
            "rejections": rejections,
        })
    }

    /// Whether the applied intent routes `prefix` to node `name`.
    fn routed_to(&self, name: &str, prefix: IpNet) -> bool {
        self.engine.current().peers.values().any(|p| p.name == name && p.routes.contains(&prefix))
    }
}

impl Drop for ControlSide {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            // The thread checks `stop` at least every WAIT_AT_MOST, then withdraws our record.
            let _ = t.join();
        }
    }
}

/// Why a netmap must not replace a good one: `None` if it may.
fn unusable(netmap: &Netmap) -> Option<String> {
    if netmap.policy.is_none() {
        return Some("no valid policy document (a broken or tampered store?)".to_string());
    }
    match netmap.nodes.iter().find(|n| n.is_self) {
        None => Some(format!("no valid certificate for this node ({})", netmap.self_name)),
        Some(_) => None,
    }
}

fn open_source(control: &Control) -> anyhow::Result<Box<dyn Source>> {
    match &control.source {
        SourceConfig::File { path } => Ok(Box::new(FileSource::new(path.clone()))),
        SourceConfig::Etcd { endpoints, prefix, lease_ttl } => open_etcd(endpoints, prefix, *lease_ttl),
    }
}

/// Connects to the first etcd endpoint that answers (others are tried when it fails later).
fn open_etcd(endpoints: &[String], prefix: &str, lease_ttl: Duration) -> anyhow::Result<Box<dyn Source>> {
    let source = EtcdSource::connect(endpoints, prefix, lease_ttl)
        .with_context(|| format!("control.endpoints: no etcd endpoint of {endpoints:?} answered"))?;
    Ok(Box::new(source))
}

/// Signs and publishes this node's record.
struct Publisher {
    key: SigningKey,
    template: NodeRecord,
    ttl: Duration,
    refresh: Duration,
}

impl Publisher {
    /// The document for our record, valid from `now` for `ttl` (0: already expired, a withdrawal).
    fn document(&self, now: SystemTime, ttl: Duration) -> Document {
        let secs = unix_secs(now);
        let record = NodeRecord { issued_at: secs, expires: secs + ttl.as_secs(), ..self.template.clone() };
        Document { key: record_key(&self.template.name), bytes: record.sign(&self.key).to_json() }
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The first moment after `now` (unix seconds) at which a certificate or record in `netmap`
/// expires, changing the netmap with no document changing.
fn next_expiry_of(netmap: &Netmap, now: u64) -> Option<u64> {
    netmap
        .nodes
        .iter()
        .flat_map(|n| [Some(n.cert.not_after), n.record.as_ref().map(|r| r.expires)])
        .flatten()
        // At the expiry second and the one after: right whether expiry counts from `>=` or `>`.
        .flat_map(|t| [t, t.saturating_add(1)])
        .filter(|t| *t > now)
        .min()
}

/// Where a node's record is stored (file name or etcd key below the prefix).
pub fn record_key(node: &str) -> String {
    format!("{node}.record.json")
}

/// The control thread.
struct Worker {
    ifname: String,
    trust: Trust,
    node: String,
    source: Box<dyn Source>,
    publisher: Publisher,
    shared: Arc<Shared>,
    wake: UnixStream,
}

impl Worker {
    fn run(mut self) {
        let mut docs: Option<Vec<Document>> = None;
        let started = Instant::now();
        let mut next_publish = Instant::now();
        let mut publish_error: Option<String> = None;
        let mut last: Option<Netmap> = None;
        // Signature checks are remembered by document bytes, so a rebuild verifies only what
        // changed; still, the netmap is rebuilt only when its inputs change: the documents, the
        // stale set, or the clock passing the next certificate or record expiry.
        let mut cache = VerifyCache::default();
        let mut dirty = false;
        let mut built_with: BTreeSet<Key> = BTreeSet::new();
        let mut next_expiry: Option<u64> = None;
        let mut logged_rejections: Vec<String> = Vec::new();
        while !self.shared.stop.load(Ordering::SeqCst) {
            // Our record goes out once our engine holds the peers it names (or after a while
            // regardless): a peer that learns of us first would otherwise send a handshake we
            // drop, and retry only after WireGuard's 5 s rekey timeout.
            let ready = self.shared.applied.load(Ordering::SeqCst) || started.elapsed() >= FIRST_PUBLISH_WAIT;
            if ready && Instant::now() >= next_publish {
                match self.source.publish(&self.publisher.document(SystemTime::now(), self.publisher.ttl)) {
                    Ok(()) => {
                        if publish_error.take().is_some() {
                            self.log("publishing our record works again");
                        }
                        next_publish = Instant::now() + self.publisher.refresh;
                    }
                    Err(e) => {
                        let e = e.to_string();
                        if publish_error.as_deref() != Some(e.as_str()) {
                            self.log(&format!("publishing our record: {e}"));
                        }
                        publish_error = Some(e);
                        next_publish = Instant::now() + PUBLISH_RETRY;
                    }
                }
            }
            let wait = if ready {
                WAIT_AT_MOST.min(next_publish.saturating_duration_since(Instant::now()))
            } else {
                // Back soon to publish once the loop has applied the netmap.
                Duration::from_millis(20)
            };
            match self.source.next(wait) {
                Ok(Some(d)) => {
                    docs = Some(d);
                    dirty = true;
                    self.set_source_error(None);
                }
                Ok(None) => {}
                Err(e) => {
                    // The last documents stay in force; an unreachable store changes nothing.
                    self.set_source_error(Some(e.to_string()));
                    std::thread::sleep(wait);
                }
            }
            let Some(docs) = &docs else { continue };
            let stale = self.shared.stale.lock().map(|s| s.clone()).unwrap_or_default();
            let now = SystemTime::now();
            let expired = next_expiry.is_some_and(|t| unix_secs(now) >= t);
            if !(dirty || expired || stale != built_with) {
                continue;
            }
            let netmap = build_cached(&mut cache, &self.trust, &self.node, docs, now, &|k| stale.contains(k));
            dirty = false;
            next_expiry = next_expiry_of(&netmap, unix_secs(now));
            built_with = stale;
            if last.as_ref() == Some(&netmap) {
                continue;
            }
            let texts: Vec<String> = netmap.rejections.iter().map(|r| r.to_string()).collect();
            for t in texts.iter().filter(|t| !logged_rejections.contains(t)) {
                self.log(&format!("rejected {t}"));
            }
            logged_rejections = texts;
            let built = Built { intent: intent(&netmap), netmap: netmap.clone(), at: SystemTime::now() };
            if let Ok(mut m) = self.shared.mailbox.lock() {
                *m = Some(built);
            }
            // One byte is enough; a full socket buffer already means "wake up".
            let _ = (&self.wake).write(&[1]);
            last = Some(netmap);
        }
        // Leaving: withdraw our record so peers drop us now rather than when it expires.
        if let Err(e) = self.source.publish(&self.publisher.document(SystemTime::now(), Duration::ZERO)) {
            self.log(&format!("withdrawing our record: {e}"));
        }
    }

    fn set_source_error(&self, error: Option<String>) {
        let Ok(mut slot) = self.shared.source_error.lock() else { return };
        if *slot != error {
            match &error {
                Some(e) => self.log(&format!("source {}: {e} (keeping the last documents)", self.source.describe())),
                None if slot.is_some() => self.log(&format!("source {} works again", self.source.describe())),
                None => {}
            }
            *slot = error;
        }
    }

    fn log(&self, msg: &str) {
        log(&self.ifname, msg);
    }
}

fn log(name: &str, msg: &str) {
    eprintln!("vxwg[{name}]: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use vxwg::control::netmap::{build, Acl, NodeCert, Policy};

    fn doc(key: &str, bytes: Vec<u8>) -> Document {
        Document { key: key.into(), bytes }
    }

    /// A netmap for node "a" from: a policy (or not), a's certificate (or not), and b with a record.
    fn netmap(with_policy: bool, with_self: bool) -> (Netmap, u64) {
        let now = unix_secs(SystemTime::now());
        let operator = SigningKey::generate().unwrap();
        let mut docs = Vec::new();
        if with_policy {
            let acl = Acl { src: "*".into(), dst: vec!["*".into()] };
            let policy = Policy { version: 1, issued_at: now, auto_approvers: vec![], acls: vec![acl] };
            docs.push(doc("policy.json", policy.sign(&operator).to_json()));
        }
        for (name, n, not_after, expires) in [("a", 1u8, now + 500, now + 90), ("b", 2, now + 300, now + 60)] {
            if name == "a" && !with_self {
                continue;
            }
            let key = SigningKey::generate().unwrap();
            let cert = NodeCert {
                name: name.into(),
                wireguard_key: Key([n; 32]),
                node_key: key.public(),
                addresses: vec![format!("100.64.0.{n}").parse().unwrap()],
                tags: vec![],
                not_after,
            };
            docs.push(doc(&format!("{name}.cert.json"), cert.sign(&operator).to_json()));
            let record = NodeRecord {
                name: name.into(),
                endpoints: vec![],
                routes: vec![],
                vtep_mac: None,
                issued_at: now,
                expires,
            };
            docs.push(doc(&record_key(name), record.sign(&key).to_json()));
        }
        (build(&Trust { operator: operator.public() }, "a", &docs, SystemTime::now(), &|_| false), now)
    }

    #[test]
    fn a_netmap_without_policy_or_own_certificate_cannot_replace_a_good_one() {
        assert_eq!(unusable(&netmap(true, true).0), None);
        assert!(unusable(&netmap(false, true).0).unwrap().contains("policy"));
        assert!(unusable(&netmap(true, false).0).unwrap().contains("certificate for this node"));
    }

    #[test]
    fn the_next_rebuild_is_at_the_first_expiry_and_the_second_after() {
        let (netmap, now) = netmap(true, true);
        // b's record expires first (now + 60).
        assert_eq!(next_expiry_of(&netmap, now), Some(now + 60));
        assert_eq!(next_expiry_of(&netmap, now + 60), Some(now + 61));
        assert_eq!(next_expiry_of(&netmap, now + 61), Some(now + 90));
        assert_eq!(next_expiry_of(&netmap, now + 1000), None);
    }
}
