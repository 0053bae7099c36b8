//! Where signed documents come from. The engine does not know which source is in use: every
//! source delivers the complete current set of raw [`Document`]s when it changes, and stores this
//! node's own signed record. Verification is the netmap's job ([`crate::netmap::build`]), so a
//! source never needs to be trusted.

use std::path::PathBuf;
use std::time::Duration;

use crate::netmap::Document;

mod etcd;
mod file;

pub use etcd::{EtcdCall, EtcdError, EtcdSource};
pub use file::FileSource;

/// A coordination store holding signed documents.
pub trait Source: Send {
    /// Blocks up to `timeout` and returns the complete current document set if it changed since
    /// the last call (the first call always returns it), `Ok(None)` if it did not.
    fn next(&mut self, timeout: Duration) -> Result<Option<Vec<Document>>, SourceError>;

    /// Stores this node's own signed document under `doc.key` (replacing what was there).
    fn publish(&mut self, doc: &Document) -> Result<(), SourceError>;

    /// Where the documents come from, for logs and `vxwg status` (`file:/etc/vxwg/netmap`).
    fn describe(&self) -> String;
}

/// Why a source could not deliver or store documents.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("document key {key:?} cannot be stored: {reason}")]
    BadKey { key: String, reason: &'static str },
    #[error("{source_name} is read-only: {reason}")]
    ReadOnly { source_name: String, reason: &'static str },
    #[error("etcd {context}: {message}")]
    Etcd { context: String, message: String },
}
