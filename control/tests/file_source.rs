//! The file source: delivers the whole set on change (and only then), publishes atomically, and
//! turns a half-written file into a rejection rather than a crash.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use vxwg_control::keys::Key;
use vxwg_control::netmap::{build, Document, NodeCert, RejectReason, SigningKey, Trust};
use vxwg_control::source::{FileSource, Source, SourceError};

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vxwg-filesrc-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cert_doc(operator: &SigningKey, name: &str) -> Document {
    let cert = NodeCert {
        name: name.into(),
        wireguard_key: Key([name.len() as u8; 32]).public(),
        node_key: SigningKey::from_seed([name.len() as u8; 32]).public(),
        addresses: vec![[100, 64, 0, name.len() as u8].into()],
        tags: vec!["tag:k8s".into()],
        not_after: u64::MAX,
    };
    Document { key: format!("{name}.cert.json"), bytes: cert.sign(operator).to_json() }
}

fn keys(docs: &[Document]) -> Vec<&str> {
    docs.iter().map(|d| d.key.as_str()).collect()
}

#[test]
fn delivers_the_set_on_change_and_only_then() {
    let dir = TempDir::new();
    let operator = SigningKey::from_seed([1; 32]);
    std::fs::write(dir.0.join("a.cert.json"), cert_doc(&operator, "a").bytes).unwrap();
    std::fs::write(dir.0.join("notes.txt"), b"ignored").unwrap();
    let mut source = FileSource::new(&dir.0);
    assert!(source.describe().starts_with("file:"));

    let first = source.next(Duration::ZERO).unwrap().expect("the first call returns the set");
    assert_eq!(keys(&first), ["a.cert.json"]);
    assert_eq!(source.next(Duration::from_millis(250)).unwrap(), None, "nothing changed");

    // A published document shows up within the poll interval, alongside the others.
    let doc = cert_doc(&operator, "bb");
    let started = Instant::now();
    source.publish(&doc).unwrap();
    let set = source.next(Duration::from_secs(2)).unwrap().expect("changed");
    // The source polls every 100 ms; a generous bound keeps a loaded machine from failing this.
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(keys(&set), ["a.cert.json", "bb.cert.json"]);
    assert_eq!(set[1], doc);
    let leftovers: Vec<_> = std::fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 3, "no temporary file left behind: {leftovers:?}");

    // Touching a file without changing it delivers nothing; removing one delivers the smaller set.
    std::fs::write(dir.0.join("a.cert.json"), cert_doc(&operator, "a").bytes).unwrap();
    assert_eq!(source.next(Duration::from_millis(250)).unwrap(), None);
    std::fs::remove_file(dir.0.join("a.cert.json")).unwrap();
    let set = source.next(Duration::from_secs(2)).unwrap().expect("changed");
    assert_eq!(keys(&set), ["bb.cert.json"]);
}

#[test]
fn a_torn_file_is_a_rejection_then_counts_once_complete() {
    let dir = TempDir::new();
    let operator = SigningKey::from_seed([2; 32]);
    let full = cert_doc(&operator, "a").bytes;
    std::fs::write(dir.0.join("a.cert.json"), &full[..full.len() / 2]).unwrap();
    let mut source = FileSource::new(&dir.0);
    let trust = Trust { operator: operator.public() };
    let set = source.next(Duration::ZERO).unwrap().unwrap();
    let netmap = build(&trust, "a", &set, SystemTime::now(), &|_| false);
    assert_eq!(netmap.rejections.len(), 1);
    assert_eq!(netmap.rejections[0].key, "a.cert.json");
    assert!(matches!(netmap.rejections[0].reason, RejectReason::BadJson(_)));
    assert!(netmap.nodes.is_empty());

    std::fs::write(dir.0.join("a.cert.json"), &full).unwrap();
    let set = source.next(Duration::from_secs(2)).unwrap().expect("the completed file is delivered");
    let netmap = build(&trust, "a", &set, SystemTime::now(), &|_| false);
    assert!(netmap.rejections.is_empty(), "{:?}", netmap.rejections);
    assert_eq!(netmap.nodes.len(), 1);
}

#[test]
fn one_file_holding_an_array_of_documents() {
    let dir = TempDir::new();
    let operator = SigningKey::from_seed([3; 32]);
    let (a, b) = (cert_doc(&operator, "a"), cert_doc(&operator, "bb"));
    let array =
        format!("[{},\n{}]", String::from_utf8(a.bytes).unwrap().trim(), String::from_utf8(b.bytes).unwrap().trim());
    let file = dir.0.join("netmap.json");
    std::fs::write(&file, array).unwrap();
    let mut source = FileSource::new(&file);
    let set = source.next(Duration::ZERO).unwrap().unwrap();
    assert_eq!(keys(&set), ["netmap.json#0", "netmap.json#1"]);
    let netmap = build(&Trust { operator: operator.public() }, "a", &set, SystemTime::now(), &|_| false);
    assert_eq!(netmap.nodes.len(), 2, "{:?}", netmap.rejections);
    let err = source.publish(&Document { key: "x.json".into(), bytes: vec![] }).unwrap_err();
    assert!(matches!(err, SourceError::ReadOnly { .. }), "{err}");
}

#[test]
fn refuses_keys_that_are_not_plain_document_names_and_missing_paths() {
    let dir = TempDir::new();
    let mut source = FileSource::new(&dir.0);
    for key in ["../escape.json", "a/b.json", ".hidden.json", "record.txt", ".json"] {
        let err = source.publish(&Document { key: key.into(), bytes: b"{}".to_vec() }).unwrap_err();
        assert!(matches!(err, SourceError::BadKey { .. }), "{key}: {err}");
    }
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
    let mut missing = FileSource::new(dir.0.join("nope"));
    let err = missing.next(Duration::ZERO).unwrap_err();
    assert!(matches!(err, SourceError::Io { .. }) && err.to_string().contains("nope"), "{err}");
}
