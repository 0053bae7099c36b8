//! Shared by the root-only integration tests: a network namespace that is deleted on drop, and a
//! way to run code inside it. Tests touch only namespaces they create. [`engines`] sets up
//! engine pairs for the in-memory tests.
#![allow(dead_code)]

pub mod engines;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use vxwg_dataplane::io::netns;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// True if the test can run: root and every tool present. Outside CI it skips with a note; in
/// CI (env `CI` set) a missing requirement fails the test.
pub fn require(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| !Command::new(t).arg("-V").output().is_ok_and(|o| o.status.success()))
        .collect();
    let ok = is_root() && missing.is_empty();
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "CI must run as root with {tools:?} installed (missing {missing:?})");
        eprintln!("skipped: needs root and {tools:?} (root: {}, missing: {missing:?})", is_root());
    }
    ok
}

/// Runs `tool args...`; panics with its stderr if it fails.
#[track_caller]
pub fn run(tool: &str, args: &[&str]) -> String {
    let o = Command::new(tool).args(args).output().unwrap_or_else(|e| panic!("running {tool}: {e}"));
    assert!(o.status.success(), "`{tool} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A network namespace named `<prefix>-<pid>-<n>`, deleted on drop (even on panic).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip("link set lo up");
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// `TOOL -n NS <cmd>` for iproute2 tools (`ip`, `bridge`); panics with its output if it fails.
    #[track_caller]
    pub fn tool(&self, tool: &str, cmd: &str) -> String {
        let mut args = vec!["-n", &self.name];
        args.extend(cmd.split_whitespace());
        run(tool, &args)
    }

    /// `ip -n NS <cmd>`.
    #[track_caller]
    pub fn ip(&self, cmd: &str) -> String {
        self.tool("ip", cmd)
    }

    /// Runs `f` on a thread inside this namespace and returns its result (re-raising its panic).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                netns::enter(&path).expect("setns into the test namespace");
                // Never go on in the wrong namespace: the thread's must now be the test's.
                let ours = std::fs::metadata("/proc/thread-self/ns/net").expect("own netns");
                let target = std::fs::metadata(&path).expect("test netns");
                assert_eq!((ours.dev(), ours.ino()), (target.dev(), target.ino()), "setns did not take effect");
                f()
            });
            handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}
