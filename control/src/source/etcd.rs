//! The etcd source: each node puts its own signed record under a key prefix, attached to a lease it
//! keeps alive, and watches the prefix for everyone's documents.
//!
//! etcd is only a store. What comes back is checked by `netmap::build` exactly like a file, so a
//! tampered value is rejected there, never trusted here.
//!
//! The client (`etcd-client`: gRPC over tonic) is async; that stays inside. [`EtcdSource`] owns a
//! current-thread tokio runtime and blocks on it in `next` and `publish`, so the control thread sees
//! the same synchronous [`Source`] as with the file source, and the runtime (with the lease
//! keepalive) only runs while one of those calls does.
//!
//! Consistency: the view is a range of the prefix at revision R, then a watch from R + 1. A watch
//! that fails, ends, or is cancelled (compaction, lost leader) is replaced by a fresh range, so a gap
//! in the event stream is never papered over.
//!
//! Failover: one connection, to one endpoint, at a time. A failed call drops it and the next attempt
//! connects to the next endpoint in the list; once every endpoint has failed in a row, attempts back
//! off (doubling, up to [`MAX_BACKOFF`]). The lease survives a switch of endpoint (it lives in the
//! cluster); if it was lost anyway (expired while no member answered), a new one is granted and every
//! document this source published is put again.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, ConnectOptions, GetOptions, KeyValue, LeaseKeepAliveStream, LeaseKeeper, PutOptions, WatchOptions,
    WatchResponse, WatchStream,
};

use super::{Source, SourceError};
use crate::netmap::Document;

/// How long one call to etcd (connect, range, put, lease grant or keepalive) may take before the
/// endpoint counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait between two rounds of attempts once every endpoint has failed.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long [`EtcdSource::connect`] keeps trying before it gives up: long enough to ride out a
/// leader election (etcd's takes about a second) or a member restarting, short enough that a
/// start against a dead store fails clearly.
pub const START_PATIENCE: Duration = Duration::from_secs(8);
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Keys per range request: a few hundred small documents, far below the 4 MiB message limit.
const RANGE_PAGE: i64 = 100;
/// HTTP/2 pings on the connection, so a member that vanished without closing TCP is noticed.
const PING_INTERVAL: Duration = Duration::from_secs(2);
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The step of the protocol that failed; part of every [`EtcdError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdCall {
    Connect,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseRevoke,
    Put,
    Range,
    Watch,
}

impl fmt::Display for EtcdCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EtcdCall::Connect => "connect",
            EtcdCall::LeaseGrant => "lease grant",
            EtcdCall::LeaseKeepAlive => "lease keepalive",
            EtcdCall::LeaseRevoke => "lease revoke",
            EtcdCall::Put => "put",
            EtcdCall::Range => "range",
            EtcdCall::Watch => "watch",
        })
    }
}

/// What went wrong talking to etcd; each names the endpoint and the call. Cheap to clone, so the
/// source can report the failure it is in on every call until it recovers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd source needs at least one endpoint")]
    NoEndpoints,
    #[error("etcd source: cannot start its async runtime: {0}")]
    Runtime(#[source] Arc<std::io::Error>),
    #[error("etcd {endpoint}: {call} failed: {source}")]
    Failed {
        endpoint: String,
        call: EtcdCall,
        #[source]
        source: Arc<etcd_client::Error>,
    },
    #[error("etcd {endpoint}: {call} got no answer within {after:?}")]
    TimedOut { endpoint: String, call: EtcdCall, after: Duration },
    #[error("etcd {endpoint}: the watch stream ended")]
    WatchEnded { endpoint: String },
    #[error("etcd {endpoint}: the watch was refused: {reason}")]
    WatchRefused { endpoint: String, reason: String },
}

impl From<EtcdError> for SourceError {
    fn from(err: EtcdError) -> Self {
        let (context, message) = match &err {
            EtcdError::Failed { endpoint, call, source } => (format!("{endpoint} {call}"), source.to_string()),
            EtcdError::TimedOut { endpoint, call, after } => {
                (format!("{endpoint} {call}"), format!("no answer within {after:?}"))
            }
            EtcdError::WatchEnded { endpoint } => (format!("{endpoint} watch"), "the stream ended".to_string()),
            EtcdError::WatchRefused { endpoint, reason } => (format!("{endpoint} watch"), format!("refused: {reason}")),
            EtcdError::NoEndpoints | EtcdError::Runtime(_) => ("source".to_string(), err.to_string()),
        };
        SourceError::Etcd { context, message }
    }
}

/// A [`Source`] backed by an etcd cluster. See the module docs for how it behaves.
pub struct EtcdSource {
    runtime: tokio::runtime::Runtime,
    state: State,
}

impl EtcdSource {
    /// Connects to the first endpoint that answers and grants this node's lease (TTL rounded up to
    /// whole seconds; etcd may raise a very short one to its minimum). The endpoints are tried in
    /// turn, with backoff, for up to [`START_PATIENCE`]; the error is the last one's if none
    /// answers by then.
    pub fn connect(endpoints: &[String], prefix: &str, lease_ttl: Duration) -> Result<Self, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EtcdError::Runtime(Arc::new(e)))?;
        let mut state = State::new(endpoints.to_vec(), prefix, lease_ttl);
        runtime.block_on(state.first_contact())?;
        Ok(EtcdSource { runtime, state })
    }

    /// Blocks up to `timeout`; returns the whole document set under the prefix (keys relative to
    /// it) when it differs from what the previous call returned (the first call always returns it),
    /// `Ok(None)` if etcd answers and nothing changed. Keeps the lease alive meanwhile. While no
    /// endpoint works, every call returns the failure in force (also while it waits out a
    /// backoff); the last set handed out stays the best knowledge, and later calls carry on.
    pub fn next_documents(&mut self, timeout: Duration) -> Result<Option<Vec<Document>>, EtcdError> {
        let deadline = Instant::now() + timeout;
        self.runtime.block_on(self.state.next(deadline))
    }

    /// Puts `<prefix><doc.key>` attached to this node's lease, and remembers it to put it again if
    /// the lease is ever lost. Tries each endpoint once; on error nothing is remembered.
    pub fn publish_document(&mut self, doc: &Document) -> Result<(), EtcdError> {
        self.runtime.block_on(self.state.publish(doc))
    }

    /// Revokes the lease, so this node's records disappear at once (a graceful leave). Dropping the
    /// source without this leaves them until the lease expires, so a quick restart causes no churn.
    pub fn revoke(mut self) -> Result<(), EtcdError> {
        self.runtime.block_on(self.state.revoke())
    }

    /// The lease this source keeps alive, if it holds one now.
    pub fn lease_id(&self) -> Option<i64> {
        self.state.lease.as_ref().map(|l| l.id)
    }

    /// The endpoint in use (or to be tried next).
    pub fn endpoint(&self) -> &str {
        self.state.endpoint()
    }
}

impl Source for EtcdSource {
    fn next(&mut self, timeout: Duration) -> Result<Option<Vec<Document>>, SourceError> {
        Ok(self.next_documents(timeout)?)
    }

    fn publish(&mut self, doc: &Document) -> Result<(), SourceError> {
        Ok(self.publish_document(doc)?)
    }

    fn describe(&self) -> String {
        format!("etcd {} prefix {:?}", self.state.endpoints.join(","), self.state.view.prefix)
    }
}

/// The documents under the prefix as of one revision, and whether they changed since they were
/// last handed out. Sans-IO: fed by ranges and watch events.
#[derive(Debug)]
struct View {
    prefix: String,
    docs: BTreeMap<String, Vec<u8>>,
    /// The store revision `docs` reflects; a new watch starts right after it.
    revision: i64,
    /// False until a range is loaded, and again after a watch failure: events can't be trusted
    /// to be gapless until the next range.
    synced: bool,
    /// `docs` differs from what was last handed out (true before the first hand-out).
    changed: bool,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event<'a> {
    Put { key: &'a [u8], value: &'a [u8] },
    Delete { key: &'a [u8] },
}

impl View {
    fn new(prefix: &str) -> Self {
        View { prefix: prefix.to_string(), docs: BTreeMap::new(), revision: 0, synced: false, changed: true }
    }

    fn relative_key(&self, key: &[u8]) -> Option<String> {
        let rest = key.strip_prefix(self.prefix.as_bytes())?;
        // A non-UTF-8 key can't be a document name; keep it visible (build rejects it) rather
        // than dropping it silently.
        Some(String::from_utf8_lossy(rest).into_owned())
    }

    /// Replaces the view with a complete range taken at `revision`.
    fn load<'a>(&mut self, entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>, revision: i64) {
        let docs: BTreeMap<String, Vec<u8>> =
            entries.into_iter().filter_map(|(k, v)| Some((self.relative_key(k)?, v.to_vec()))).collect();
        if docs != self.docs {
            self.docs = docs;
            self.changed = true;
        }
        self.revision = revision;
        self.synced = true;
    }

    /// Applies watch events that happened up to `revision`.
    fn apply<'a>(&mut self, events: impl IntoIterator<Item = Event<'a>>, revision: i64) {
        for event in events {
            match event {
                Event::Put { key, value } => {
                    let Some(key) = self.relative_key(key) else { continue };
                    if self.docs.get(&key).map(Vec::as_slice) != Some(value) {
                        self.docs.insert(key, value.to_vec());
                        self.changed = true;
                    }
                }
                Event::Delete { key } => {
                    let Some(key) = self.relative_key(key) else { continue };
                    if self.docs.remove(&key).is_some() {
                        self.changed = true;
                    }
                }
            }
        }
        self.revision = self.revision.max(revision);
    }

    /// The whole set, if it changed since the last hand-out and is known to be complete.
    fn take_change(&mut self) -> Option<Vec<Document>> {
        if !self.synced || !self.changed {
            return None;
        }
        self.changed = false;
        Some(self.docs.iter().map(|(key, bytes)| Document { key: key.clone(), bytes: bytes.clone() }).collect())
    }
}

/// When to retry after failures: the next endpoint at once, a pause after a full round.
#[derive(Debug)]
struct Backoff {
    endpoints: usize,
    failures: usize,
    delay: Duration,
}

impl Backoff {
    fn new(endpoints: usize) -> Self {
        Backoff { endpoints, failures: 0, delay: MIN_BACKOFF }
    }

    /// Records a failure; returns how long to wait before the next attempt.
    fn failed(&mut self) -> Duration {
        self.failures += 1;
        if self.failures % self.endpoints != 0 {
            return Duration::ZERO;
        }
        let wait = self.delay;
        self.delay = (self.delay * 2).min(MAX_BACKOFF);
        wait
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.delay = MIN_BACKOFF;
    }
}

#[derive(Debug)]
struct Lease {
    id: i64,
    /// When the next keepalive is due: a third of the granted TTL after the last confirmation.
    renew_at: Instant,
    /// Every published document has been put with this lease.
    documents_attached: bool,
}

/// One live connection to one endpoint, with the streams opened on it.
struct Connection {
    client: Client,
    watch: Option<WatchStream>,
    keepalive: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
}

struct State {
    endpoints: Vec<String>,
    /// Index into `endpoints` of the connection in use (or the next to try).
    current: usize,
    conn: Option<Connection>,
    lease_ttl: Duration,
    lease: Option<Lease>,
    /// This node's own documents (relative key → bytes), put again under a new lease.
    published: BTreeMap<String, Vec<u8>>,
    view: View,
    backoff: Backoff,
    retry_at: Option<Instant>,
    /// The last call's failure, until a call succeeds.
    failure: Option<EtcdError>,
}

/// Runs `fut` for at most [`CALL_TIMEOUT`], mapping both ways of failing to an [`EtcdError`].
async fn call<T>(
    endpoint: &str,
    what: EtcdCall,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => {
            Err(EtcdError::Failed { endpoint: endpoint.to_string(), call: what, source: Arc::new(source) })
        }
        Err(_) => Err(EtcdError::TimedOut { endpoint: endpoint.to_string(), call: what, after: CALL_TIMEOUT }),
    }
}

/// The lease is unknown to etcd (expired or revoked): the server's status on a put, or the
/// client's own error when opening a keepalive stream gets TTL 0 back.
fn is_lease_not_found(err: &EtcdError) -> bool {
    match err {
        EtcdError::Failed { source, .. } => match source.as_ref() {
            etcd_client::Error::GRpcStatus(status) => status.message().contains("requested lease not found"),
            etcd_client::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
            _ => false,
        },
        _ => false,
    }
}

/// A watch event, classified without `Event::event_type` (which panics on an unknown type): a
/// delete carries a key-value with version 0, a put one with version ≥ 1.
fn watch_event(kv: &KeyValue) -> Event<'_> {
    if kv.version() == 0 {
        Event::Delete { key: kv.key() }
    } else {
        Event::Put { key: kv.key(), value: kv.value() }
    }
}

impl State {
    fn new(endpoints: Vec<String>, prefix: &str, lease_ttl: Duration) -> Self {
        let backoff = Backoff::new(endpoints.len());
        State {
            endpoints,
            current: 0,
            conn: None,
            lease_ttl,
            lease: None,
            published: BTreeMap::new(),
            view: View::new(prefix),
            backoff,
            retry_at: None,
            failure: None,
        }
    }

    fn endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    fn ttl_seconds(&self) -> i64 {
        let secs = self.lease_ttl.as_secs() + u64::from(self.lease_ttl.subsec_nanos() > 0);
        i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
    }

    /// Gives up on the connection in use: the next attempt goes to the next endpoint, after a
    /// pause if every endpoint has now failed in a row. The view must be re-ranged.
    fn fail(&mut self, error: EtcdError) {
        self.failure = Some(error);
        self.conn = None;
        self.view.synced = false;
        self.current = (self.current + 1) % self.endpoints.len();
        let wait = self.backoff.failed();
        self.retry_at = (!wait.is_zero()).then(|| Instant::now() + wait);
    }

    fn succeeded(&mut self) {
        self.failure = None;
        self.backoff.succeeded();
    }

    /// Takes a lease through the first endpoint that grants one, going round the endpoints with
    /// the usual backoff for up to [`START_PATIENCE`]: a node started while the cluster elects a
    /// leader or a member restarts waits for it instead of failing to start.
    async fn first_contact(&mut self) -> Result<(), EtcdError> {
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            match self.ensure_lease().await {
                Ok(()) => {
                    self.succeeded();
                    self.retry_at = None;
                    return Ok(());
                }
                Err(e) => self.fail(e),
            }
            let resume = self.retry_at.unwrap_or_else(Instant::now);
            if resume >= deadline {
                return Err(self.failure.clone().unwrap_or(EtcdError::NoEndpoints));
            }
            tokio::time::sleep(resume.saturating_duration_since(Instant::now())).await;
        }
    }

    async fn connection(&mut self) -> Result<&mut Connection, EtcdError> {
        if self.conn.is_none() {
            let endpoint = self.endpoints[self.current].clone();
            let options = ConnectOptions::new()
                .with_connect_timeout(CALL_TIMEOUT)
                .with_keep_alive(PING_INTERVAL, PING_TIMEOUT)
                // A member cut off from the leader refuses watches instead of serving stale data.
                .with_require_leader(true);
            let client =
                call(&endpoint, EtcdCall::Connect, Client::connect([endpoint.as_str()], Some(options))).await?;
            self.conn = Some(Connection { client, watch: None, keepalive: None });
        }
        Ok(self.conn.as_mut().expect("connection was just set"))
    }

    /// Makes sure a lease is held, kept alive, and carries every published document.
    async fn ensure_lease(&mut self) -> Result<(), EtcdError> {
        let now = Instant::now();
        match &self.lease {
            None => self.grant().await?,
            Some(lease) if now >= lease.renew_at => {
                if !self.keep_alive().await? {
                    self.lease = None;
                    self.grant().await?;
                }
            }
            Some(_) => {}
        }
        if !self.lease.as_ref().is_some_and(|l| l.documents_attached) {
            self.attach_documents().await?;
        }
        Ok(())
    }

    async fn grant(&mut self) -> Result<(), EtcdError> {
        let ttl = self.ttl_seconds();
        let endpoint = self.endpoint().to_string();
        let conn = self.connection().await?;
        let granted = call(&endpoint, EtcdCall::LeaseGrant, conn.client.lease_grant(ttl, None)).await?;
        conn.keepalive = None;
        self.lease = Some(Lease {
            id: granted.id(),
            renew_at: Instant::now() + renew_interval(granted.ttl()),
            documents_attached: self.published.is_empty(),
        });
        Ok(())
    }

    /// Renews the lease; `false` if etcd no longer knows it.
    async fn keep_alive(&mut self) -> Result<bool, EtcdError> {
        let Some(id) = self.lease.as_ref().map(|l| l.id) else { return Ok(false) };
        let endpoint = self.endpoint().to_string();
        let conn = self.connection().await?;
        if conn.keepalive.is_none() {
            // Opening the stream is itself a keepalive, answered "lease not found" if it is gone.
            match call(&endpoint, EtcdCall::LeaseKeepAlive, conn.client.lease_keep_alive(id)).await {
                Ok(pair) => conn.keepalive = Some(pair),
                Err(e) if is_lease_not_found(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        let (keeper, stream) = conn.keepalive.as_mut().expect("keepalive stream was just set");
        let sent = call(&endpoint, EtcdCall::LeaseKeepAlive, keeper.keep_alive()).await;
        let answer = match sent {
            Ok(()) => call(&endpoint, EtcdCall::LeaseKeepAlive, stream.message()).await,
            Err(e) => Err(e),
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                conn.keepalive = None;
                return if is_lease_not_found(&e) { Ok(false) } else { Err(e) };
            }
        };
        let Some(answer) = answer else {
            conn.keepalive = None;
            return Err(EtcdError::Failed {
                endpoint,
                call: EtcdCall::LeaseKeepAlive,
                source: Arc::new(etcd_client::Error::LeaseKeepAliveError("the keepalive stream ended".into())),
            });
        };
        // etcd answers an unknown (expired) lease with TTL 0.
        if answer.ttl() <= 0 {
            conn.keepalive = None;
            return Ok(false);
        }
        if let Some(lease) = &mut self.lease {
            lease.renew_at = Instant::now() + renew_interval(answer.ttl());
        }
        Ok(true)
    }

    /// Puts every published document with the current lease (after a new grant).
    async fn attach_documents(&mut self) -> Result<(), EtcdError> {
        let Some(id) = self.lease.as_ref().map(|l| l.id) else { return Ok(()) };
        let docs: Vec<(String, Vec<u8>)> = self.published.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (key, bytes) in docs {
            self.put(&key, bytes, id).await?;
        }
        if let Some(lease) = &mut self.lease {
            lease.documents_attached = true;
        }
        Ok(())
    }

    async fn put(&mut self, key: &str, bytes: Vec<u8>, lease: i64) -> Result<(), EtcdError> {
        let full_key = format!("{}{key}", self.view.prefix);
        let endpoint = self.endpoint().to_string();
        let conn = self.connection().await?;
        let options = PutOptions::new().with_lease(lease);
        call(&endpoint, EtcdCall::Put, conn.client.put(full_key, bytes, Some(options))).await?;
        Ok(())
    }

    async fn publish(&mut self, doc: &Document) -> Result<(), EtcdError> {
        for _ in 0..self.endpoints.len() {
            match self.try_publish(doc).await {
                Ok(()) => {
                    self.published.insert(doc.key.clone(), doc.bytes.clone());
                    self.succeeded();
                    return Ok(());
                }
                Err(e) => self.fail(e),
            }
        }
        Err(self.failure.clone().unwrap_or(EtcdError::NoEndpoints))
    }

    async fn try_publish(&mut self, doc: &Document) -> Result<(), EtcdError> {
        self.ensure_lease().await?;
        let id = self.lease.as_ref().map_or(0, |l| l.id);
        match self.put(&doc.key, doc.bytes.clone(), id).await {
            Err(e) if is_lease_not_found(&e) => {
                // Expired between keepalives: a new lease, then everything (this one too) again.
                self.lease = None;
                self.ensure_lease().await?;
                let id = self.lease.as_ref().map_or(0, |l| l.id);
                self.put(&doc.key, doc.bytes.clone(), id).await
            }
            other => other,
        }
    }

    /// Revokes the lease through the first endpoint that answers.
    async fn revoke(&mut self) -> Result<(), EtcdError> {
        let Some(id) = self.lease.as_ref().map(|l| l.id) else { return Ok(()) };
        for _ in 0..self.endpoints.len() {
            let endpoint = self.endpoint().to_string();
            let revoked = match self.connection().await {
                Ok(conn) => call(&endpoint, EtcdCall::LeaseRevoke, conn.client.lease_revoke(id)).await.map(drop),
                Err(e) => Err(e),
            };
            match revoked {
                // Already gone counts as revoked.
                Err(e) if !is_lease_not_found(&e) => self.fail(e),
                _ => {
                    self.lease = None;
                    return Ok(());
                }
            }
        }
        Err(self.failure.clone().unwrap_or(EtcdError::NoEndpoints))
    }

    /// Loads the prefix and starts a watch right after the revision it was read at. The range is
    /// read in pages of [`RANGE_PAGE`] keys, all at the first page's revision, so a large fleet
    /// never exceeds the gRPC message limit and the pages still form one snapshot.
    async fn resync(&mut self) -> Result<(), EtcdError> {
        let endpoint = self.endpoint().to_string();
        let prefix = self.view.prefix.clone();
        let end = prefix_end(prefix.as_bytes());
        let conn = self.connection().await?;
        conn.watch = None;
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(RANGE_PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let page = call(&endpoint, EtcdCall::Range, conn.client.get(start.clone(), Some(options))).await?;
            if revision == 0 {
                revision = page.header().map_or(0, |h| h.revision());
            }
            entries.extend(page.kvs().iter().map(|kv| (kv.key().to_vec(), kv.value().to_vec())));
            match page.kvs().last() {
                Some(last) if page.more() => {
                    // The next page starts right after the last key: that key plus a zero byte.
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
        let watch = call(&endpoint, EtcdCall::Watch, conn.client.watch(prefix.as_str(), Some(options))).await?;
        conn.watch = Some(watch);
        self.view.load(entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())), revision);
        Ok(())
    }

    /// Handles one watch message; `Err` if the watch is no longer usable.
    fn on_watch(&mut self, endpoint: &str, response: WatchResponse) -> Result<(), EtcdError> {
        if response.canceled() {
            if response.compact_revision() > 0 {
                // Our start revision was compacted away: not an endpoint failure, just re-range.
                self.view.synced = false;
                if let Some(conn) = &mut self.conn {
                    conn.watch = None;
                }
                return Ok(());
            }
            return Err(EtcdError::WatchRefused {
                endpoint: endpoint.to_string(),
                reason: response.cancel_reason().to_string(),
            });
        }
        let revision = response.header().map_or(self.view.revision, |h| h.revision());
        let events = response.events().iter().filter_map(|e| e.kv()).map(watch_event);
        self.view.apply(events, revision);
        Ok(())
    }

    /// One round: connection, lease, view; then waits on the watch until `deadline` or the next
    /// keepalive, whichever is first.
    async fn step(&mut self, deadline: Instant) -> Result<(), EtcdError> {
        self.ensure_lease().await?;
        let watching = self.conn.as_ref().is_some_and(|c| c.watch.is_some());
        if !self.view.synced || !watching {
            return self.resync().await;
        }
        let wake = self.lease.as_ref().map_or(deadline, |l| l.renew_at.min(deadline));
        let endpoint = self.endpoint().to_string();
        let Some(watch) = self.conn.as_mut().and_then(|c| c.watch.as_mut()) else { return Ok(()) };
        let message = match tokio::time::timeout_at(wake.into(), watch.message()).await {
            Err(_) => return Ok(()),
            Ok(message) => message,
        };
        match message {
            Ok(Some(response)) => self.on_watch(&endpoint, response),
            Ok(None) => Err(EtcdError::WatchEnded { endpoint }),
            Err(source) => Err(EtcdError::Failed { endpoint, call: EtcdCall::Watch, source: Arc::new(source) }),
        }
    }

    /// `Ok(None)` only while etcd answers; while failing (also when waiting out a backoff), the
    /// failure in force.
    async fn next(&mut self, deadline: Instant) -> Result<Option<Vec<Document>>, EtcdError> {
        loop {
            if let Some(docs) = self.view.take_change() {
                return Ok(Some(docs));
            }
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at.min(deadline).into()).await;
                if at > deadline {
                    return self.failure.clone().map_or(Ok(None), Err);
                }
                self.retry_at = None;
            }
            match self.step(deadline).await {
                Ok(()) => self.succeeded(),
                Err(e) => self.fail(e),
            }
            if Instant::now() >= deadline {
                return match self.view.take_change() {
                    Some(docs) => Ok(Some(docs)),
                    None => self.failure.clone().map_or(Ok(None), Err),
                };
            }
        }
    }
}

/// The end of the key range holding every key that starts with `prefix`: the prefix with its
/// last byte below 0xff incremented (and what follows dropped); `\0` (to the end of the keyspace)
/// if there is no such byte.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Keepalives go out at a third of the TTL, so two can be lost before the lease expires.
fn renew_interval(ttl_seconds: i64) -> Duration {
    let ttl = Duration::from_secs(u64::try_from(ttl_seconds).unwrap_or(0).max(1));
    ttl / 3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(docs: &[Document]) -> Vec<(&str, &[u8])> {
        docs.iter().map(|d| (d.key.as_str(), d.bytes.as_slice())).collect()
    }

    #[test]
    fn the_first_hand_out_needs_a_range_and_then_comes_once() {
        let mut view = View::new("/vxwg/");
        assert_eq!(view.take_change(), None, "nothing before the first range");
        view.load([(b"/vxwg/a".as_slice(), b"1".as_slice())], 5);
        let docs = view.take_change().expect("first range is handed out");
        assert_eq!(keys(&docs), [("a", b"1".as_slice())]);
        assert_eq!(view.take_change(), None, "unchanged set is not handed out again");

        // An empty prefix is a set too: the first range hands it out even though it is empty.
        let mut empty = View::new("/vxwg/");
        empty.load([], 1);
        assert_eq!(empty.take_change(), Some(vec![]));
    }

    #[test]
    fn events_change_the_set_only_when_content_changes() {
        let mut view = View::new("/p/");
        view.load([(b"/p/a".as_slice(), b"1".as_slice()), (b"/p/b", b"2")], 10);
        view.take_change();

        view.apply([Event::Put { key: b"/p/a", value: b"1" }], 11);
        assert_eq!(view.take_change(), None, "same value again (a lease refresh) is no change");

        view.apply([Event::Put { key: b"/p/a", value: b"3" }, Event::Delete { key: b"/p/b" }], 12);
        let docs = view.take_change().expect("update and delete are a change");
        assert_eq!(keys(&docs), [("a", b"3".as_slice())]);
        assert_eq!(view.revision, 12);

        view.apply([Event::Delete { key: b"/p/zz" }], 13);
        assert_eq!(view.take_change(), None, "deleting an unknown key changes nothing");
    }

    #[test]
    fn a_resync_hands_out_only_a_different_set() {
        let mut view = View::new("/p/");
        view.load([(b"/p/a".as_slice(), b"1".as_slice())], 3);
        view.take_change();
        view.synced = false; // watch failed
        view.apply([Event::Put { key: b"/p/b", value: b"2" }], 4);
        assert_eq!(view.take_change(), None, "not handed out while unsynced");
        view.load([(b"/p/a".as_slice(), b"1".as_slice()), (b"/p/b", b"2")], 9);
        assert_eq!(keys(&view.take_change().unwrap()), [("a", b"1".as_slice()), ("b", b"2")]);
        view.load([(b"/p/a".as_slice(), b"1".as_slice()), (b"/p/b", b"2")], 12);
        assert_eq!(view.take_change(), None, "a re-range with the same content is no change");
    }

    #[test]
    fn keys_outside_the_prefix_are_ignored_and_odd_ones_kept_visible() {
        let mut view = View::new("/p/");
        view.load([(b"/q/a".as_slice(), b"1".as_slice()), (b"/p/\xff", b"2")], 1);
        let docs = view.take_change().unwrap();
        assert_eq!(keys(&docs), [("\u{fffd}", b"2".as_slice())]);
    }

    #[test]
    fn backoff_tries_every_endpoint_before_pausing() {
        let mut backoff = Backoff::new(3);
        assert_eq!(backoff.failed(), Duration::ZERO);
        assert_eq!(backoff.failed(), Duration::ZERO);
        assert_eq!(backoff.failed(), MIN_BACKOFF);
        for _ in 0..30 {
            backoff.failed();
        }
        assert_eq!(backoff.delay, MAX_BACKOFF, "capped");
        backoff.succeeded();
        assert_eq!(
            (backoff.failed(), backoff.failed(), backoff.failed()),
            (Duration::ZERO, Duration::ZERO, MIN_BACKOFF)
        );
    }

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/vxwg/"), b"/vxwg0");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0", "no upper bound: to the end of the keyspace");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn keepalives_go_out_at_a_third_of_the_ttl() {
        assert_eq!(renew_interval(9), Duration::from_secs(3));
        assert_eq!(renew_interval(0), Duration::from_secs(1) / 3, "never a zero interval");
    }

    #[test]
    fn lease_ttl_rounds_up_to_whole_seconds() {
        assert_eq!(State::new(vec!["x".into()], "/", Duration::from_millis(2500)).ttl_seconds(), 3);
        assert_eq!(State::new(vec!["x".into()], "/", Duration::ZERO).ttl_seconds(), 1);
    }

    #[test]
    fn a_source_error_names_the_endpoint_and_the_call() {
        let err = EtcdError::TimedOut {
            endpoint: "http://10.0.0.1:2379".into(),
            call: EtcdCall::Put,
            after: Duration::from_secs(2),
        };
        assert_eq!(err.to_string(), "etcd http://10.0.0.1:2379: put got no answer within 2s");
        let source: SourceError = err.into();
        assert_eq!(source.to_string(), "etcd http://10.0.0.1:2379 put: no answer within 2s");
    }

    #[test]
    fn etcd_source_is_send() {
        fn send<T: Send>() {}
        send::<EtcdSource>();
    }
}
