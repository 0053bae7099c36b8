//! The file source: a directory of `*.json` documents (or one file holding a JSON array of them),
//! polled for changes. The embedded default: no daemon to run, documents copied in by any tool.
//!
//! Change detection polls each file's size, modification time and inode every
//! [`FileSource::POLL`]; no inotify needed, and a file replaced by rename is seen as changed. A
//! half-written file is delivered as it is and refused by the netmap as bad JSON; the next poll
//! delivers it again once complete. [`Source::publish`] writes a temporary file and renames it
//! over the target, so readers never see a torn document from vxwg itself.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Source, SourceError};
use crate::netmap::Document;

/// A directory (or single file) of signed documents.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    /// What the files looked like when last read.
    seen: Option<Vec<Stamp>>,
    /// What was last returned by `next`.
    delivered: Option<Vec<Document>>,
}

/// The metadata that changes whenever a file is written or replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    name: String,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
}

impl FileSource {
    /// How often the files are checked for changes.
    pub const POLL: Duration = Duration::from_millis(100);

    /// A source reading `path`: a directory of `*.json` documents or one file. Nothing is read
    /// until [`Source::next`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), seen: None, delivered: None }
    }

    fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SourceError + '_ {
        move |source| SourceError::Io { path: path.to_owned(), source }
    }

    /// The document files (sorted by name) and their stamps.
    fn scan(&self) -> Result<Vec<(PathBuf, Stamp)>, SourceError> {
        let meta = fs::metadata(&self.path).map_err(Self::io_error(&self.path))?;
        let mut files = Vec::new();
        if meta.is_dir() {
            for entry in fs::read_dir(&self.path).map_err(Self::io_error(&self.path))? {
                let entry = entry.map_err(Self::io_error(&self.path))?;
                let Ok(name) = entry.file_name().into_string() else { continue };
                if !is_document_name(&name) {
                    continue;
                }
                let path = entry.path();
                match fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => files.push((path, stamp(name, &meta))),
                    Ok(_) => {}
                    // Removed between listing and looking: it is gone.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Self::io_error(&path)(e)),
                }
            }
        } else {
            let name = self.path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            files.push((self.path.clone(), stamp(name, &meta)));
        }
        files.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        Ok(files)
    }

    /// Reads every document in `files`.
    fn load(&self, files: &[(PathBuf, Stamp)]) -> Result<Vec<Document>, SourceError> {
        let single_file = !self.path.is_dir();
        let mut docs = Vec::new();
        for (path, stamp) in files {
            let bytes = match fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Self::io_error(path)(e)),
            };
            if single_file {
                if let Ok(serde_json::Value::Array(items)) = serde_json::from_slice(&bytes) {
                    for (i, item) in items.iter().enumerate() {
                        let bytes = serde_json::to_vec(item).expect("a parsed JSON value always serializes");
                        docs.push(Document { key: format!("{}#{i}", stamp.name), bytes });
                    }
                    continue;
                }
            }
            // Anything else is one document; if it is torn or not JSON the netmap says so.
            docs.push(Document { key: stamp.name.clone(), bytes });
        }
        Ok(docs)
    }
}

impl Source for FileSource {
    fn next(&mut self, timeout: Duration) -> Result<Option<Vec<Document>>, SourceError> {
        let deadline = Instant::now() + timeout;
        loop {
            let files = self.scan()?;
            let stamps: Vec<Stamp> = files.iter().map(|(_, s)| s.clone()).collect();
            if self.seen.as_ref() != Some(&stamps) {
                let docs = self.load(&files)?;
                self.seen = Some(stamps);
                if self.delivered.as_ref() != Some(&docs) {
                    self.delivered = Some(docs.clone());
                    return Ok(Some(docs));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Self::POLL.min(deadline - now));
        }
    }

    fn publish(&mut self, doc: &Document) -> Result<(), SourceError> {
        if !self.path.is_dir() {
            return Err(SourceError::ReadOnly {
                source_name: self.describe(),
                reason: "a single-file source cannot store documents; use a directory",
            });
        }
        if !is_document_name(&doc.key) || doc.key.contains('/') {
            return Err(SourceError::BadKey {
                key: doc.key.clone(),
                reason: "a file source stores documents as <name>.json files (no '/', not starting with '.')",
            });
        }
        let target = self.path.join(&doc.key);
        let temp = self.path.join(format!(".{}.{}.tmp", doc.key, std::process::id()));
        let write = || -> io::Result<()> {
            let mut file = fs::File::create(&temp)?;
            file.write_all(&doc.bytes)?;
            file.sync_all()?;
            fs::rename(&temp, &target)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&temp);
            Self::io_error(&target)(e)
        })
    }

    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }
}

/// Files the source reads: `*.json`, not hidden (temporary files are hidden).
fn is_document_name(name: &str) -> bool {
    name.len() > ".json".len() && name.ends_with(".json") && !name.starts_with('.')
}

fn stamp(name: String, meta: &fs::Metadata) -> Stamp {
    let ns = |secs: i64, nsec: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsec);
    Stamp {
        name,
        len: meta.len(),
        mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        inode: meta.ino(),
    }
}
