//! Helpers for the root tests in network namespaces (tests/netns.rs, tests/control.rs,
//! tests/control_etcd.rs): unique names, namespaces deleted on drop, shell helpers that say what
//! failed.
#![allow(dead_code)]

pub mod mesh;

use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// Skips (with a note) outside CI when not root or a tool is missing; in CI, requires them.
pub fn require(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh").args(["-c", &format!("command -v {t}")]).output().is_ok_and(|o| o.status.success())
        })
        .collect();
    let ok = is_root() && missing.is_empty();
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "CI must run as root with {missing:?} installed");
        eprintln!("skipped: needs root and {tools:?} (missing {missing:?})");
    }
    ok
}

pub fn run(cmd: &str) -> Output {
    Command::new("sh").args(["-c", cmd]).output().expect("sh")
}

#[track_caller]
pub fn sh(cmd: &str) -> String {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A unique number for names (with the pid, unique across concurrent test binaries too).
pub fn unique() -> u32 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A network namespace that is deleted (with every process in it) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("vxwgc-{}-{}-{tag}", std::process::id(), unique());
        sh(&format!("ip netns add {name}"));
        let ns = Netns { name };
        ns.exec("ip link set lo up");
        ns
    }

    #[track_caller]
    pub fn exec(&self, cmd: &str) -> String {
        sh(&format!("ip netns exec {} sh -c '{}'", self.name, cmd.replace('\'', r"'\''")))
    }

    pub fn try_exec(&self, cmd: &str) -> Output {
        run(&format!("ip netns exec {} sh -c '{}'", self.name, cmd.replace('\'', r"'\''")))
    }

    /// Starts `cmd` in the namespace with its stdout and stderr piped back.
    pub fn spawn(&self, cmd: &str) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", &format!("exec {cmd}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    }

    /// Starts `cmd` in the namespace; its stderr goes to `log` (a file) so a failing test can show it.
    pub fn spawn_logged(&self, cmd: &str, log: &std::path::Path) -> Child {
        let err = std::fs::File::create(log).expect("log file");
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", &format!("exec {cmd}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&format!("ip netns pids {} | xargs -r kill -9", self.name));
        let _ = run(&format!("ip netns del {}", self.name));
    }
}

/// A unique interface name (the UAPI socket directory is shared by all namespaces).
pub fn ifname() -> String {
    format!("vc{}n{}", std::process::id() % 100_000, unique())
}

/// Removes a directory on drop, even when the test panics.
pub struct RemoveDir(pub std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh WireGuard key pair (private, public) from `vxwg genkey` / `vxwg pubkey`.
pub fn keypair() -> (String, String) {
    let vxwg = env!("CARGO_BIN_EXE_vxwg");
    let private = sh(&format!("{vxwg} genkey")).trim().to_string();
    let public = sh(&format!("echo {private} | {vxwg} pubkey")).trim().to_string();
    (private, public)
}
