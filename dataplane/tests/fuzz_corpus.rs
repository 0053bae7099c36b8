//! Replays every committed seed in `fuzz/corpus/<target>/` through the function its fuzz target
//! calls, so that the seeds (and any crash reproducer added to them) run in ordinary `cargo test`
//! without a fuzzer or a nightly toolchain.
//!
//! The mapping below is the single list of targets: a corpus directory without an entry, an entry
//! without a non-empty corpus, or a `[[bin]]` in `fuzz/Cargo.toml` without a corpus fails. Targets
//! of other crates are listed in `REPLAYED_ELSEWHERE` with the test that replays them.

use std::fs;
use std::path::{Path, PathBuf};

use vxwg_dataplane::fuzzing;

/// What a fuzz target calls with each input.
type Target = fn(&[u8]);

/// Fuzz target (`[[bin]]` name and corpus directory) → the function it calls.
const TARGETS: &[(&str, Target)] = &[
    ("wire_ethernet", fuzzing::wire::ethernet),
    ("wire_ipv4", fuzzing::wire::ipv4),
    ("wire_ipv6", fuzzing::wire::ipv6),
    ("wire_udp", fuzzing::wire::udp),
    ("wire_vxlan", fuzzing::wire::vxlan),
    ("wire_wireguard", fuzzing::wireguard::wire_wireguard),
    ("device_receive", fuzzing::wireguard::device_receive),
    ("vxlan_decapsulate", fuzzing::pod::vxlan_decapsulate),
    ("neighbour_answers", fuzzing::pod::neighbour_answers),
    ("mtu_handling", fuzzing::pod::mtu_handling),
    ("tun_split", fuzzing::offload::tun_split),
    ("tun_coalesce", fuzzing::offload::tun_coalesce),
    ("schedstat", fuzzing::io::schedstat),
    ("proc_stat", fuzzing::io::proc_stat),
];

/// Fuzz targets whose function is in another crate, with the test file (relative to the
/// repository) that replays their seeds; each must still be a `[[bin]]` with a non-empty corpus,
/// and that file must name it.
const REPLAYED_ELSEWHERE: &[(&str, &str)] =
    &[("uapi_request", "control/tests/fuzz_corpus.rs"), ("netmap_documents", "control/tests/fuzz_corpus.rs")];

/// Whether `name` is a target of this crate or of another one.
fn is_mapped(name: &str) -> bool {
    TARGETS.iter().any(|(n, _)| *n == name) || REPLAYED_ELSEWHERE.iter().any(|(n, _)| *n == name)
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz")
}

fn corpus_dir() -> PathBuf {
    fuzz_dir().join("corpus")
}

/// Runs every file in `fuzz/corpus/<name>/` through the target's function.
fn replay(name: &str) {
    let (_, target) = TARGETS.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("{name} is not mapped"));
    let dir = corpus_dir().join(name);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no seeds", dir.display());
    for path in files {
        let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Shown with the panic message if this seed fails.
        eprintln!("replaying {}", path.display());
        target(&data);
    }
}

/// The `[[bin]]` names in `fuzz/Cargo.toml`.
fn fuzz_bins() -> Vec<String> {
    let manifest = fuzz_dir().join("Cargo.toml");
    let text = fs::read_to_string(&manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let mut in_bin = false;
    let mut names = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin {
            if let Some((key, value)) = line.split_once('=') {
                if key.trim() == "name" {
                    names.push(value.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    names
}

#[test]
fn every_corpus_directory_is_mapped() {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(corpus_dir()).expect("fuzz/corpus exists") {
        let path = entry.expect("readable directory entry").path();
        if path.is_dir() {
            dirs.push(path.file_name().expect("a name").to_string_lossy().into_owned());
        }
    }
    dirs.sort();
    for dir in &dirs {
        assert!(is_mapped(dir), "fuzz/corpus/{dir} has no target in TARGETS or REPLAYED_ELSEWHERE");
    }
    for (name, _) in TARGETS {
        assert!(dirs.iter().any(|d| d == name), "target {name} has no fuzz/corpus/{name}");
    }
}

#[test]
fn every_fuzz_target_has_a_corpus_and_a_mapping() {
    let bins = fuzz_bins();
    assert!(!bins.is_empty(), "no [[bin]] found in fuzz/Cargo.toml");
    for bin in &bins {
        assert!(corpus_dir().join(bin).is_dir(), "fuzz target {bin} has no fuzz/corpus/{bin}");
        assert!(is_mapped(bin), "fuzz target {bin} is in neither TARGETS nor REPLAYED_ELSEWHERE");
    }
    for (name, _) in TARGETS {
        assert!(bins.iter().any(|b| b == name), "{name} is in TARGETS but not a [[bin]] of fuzz/Cargo.toml");
    }
}

#[test]
fn targets_replayed_elsewhere_have_seeds_and_a_replay() {
    let bins = fuzz_bins();
    for (name, test) in REPLAYED_ELSEWHERE {
        assert!(!TARGETS.iter().any(|(n, _)| n == name), "{name} is in both TARGETS and REPLAYED_ELSEWHERE");
        assert!(bins.iter().any(|b| b == name), "{name} is in REPLAYED_ELSEWHERE but not a [[bin]] of fuzz/Cargo.toml");
        let seeds = fs::read_dir(corpus_dir().join(name)).unwrap_or_else(|e| panic!("fuzz/corpus/{name}: {e}"));
        assert!(seeds.count() > 0, "fuzz/corpus/{name} has no seeds");
        let path = fuzz_dir().join("..").join(test);
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(text.contains(&format!("\"{name}\"")), "{test} does not replay {name}");
    }
}

#[test]
fn wire_ethernet() {
    replay("wire_ethernet");
}

#[test]
fn wire_ipv4() {
    replay("wire_ipv4");
}

#[test]
fn wire_ipv6() {
    replay("wire_ipv6");
}

#[test]
fn wire_udp() {
    replay("wire_udp");
}

#[test]
fn wire_vxlan() {
    replay("wire_vxlan");
}

#[test]
fn wire_wireguard() {
    replay("wire_wireguard");
}

#[test]
fn device_receive() {
    replay("device_receive");
}

#[test]
fn vxlan_decapsulate() {
    replay("vxlan_decapsulate");
}

#[test]
fn neighbour_answers() {
    replay("neighbour_answers");
}

#[test]
fn mtu_handling() {
    replay("mtu_handling");
}

#[test]
fn tun_split() {
    replay("tun_split");
}

#[test]
fn tun_coalesce() {
    replay("tun_coalesce");
}

#[test]
fn schedstat() {
    replay("schedstat");
}

#[test]
fn proc_stat() {
    replay("proc_stat");
}
