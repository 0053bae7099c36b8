//! Error paths of `vxwg up --config` over real network namespaces (root only; CI runs as root):
//! input the node cannot honour gets an error that names it, and nothing is left half-applied.
//!
//! Every test builds its own namespace with a unique name and removes it on drop (with every
//! process in it), so a failing or panicking test leaves nothing behind.

mod common;

use common::{keypair, require, Netns, RemoveDir, NEXT};
use std::sync::atomic::Ordering;

/// Writes a node's TOML config and key into a fresh directory under /tmp, removed on drop.
fn config_dir(private: &str, body: &str) -> RemoveDir {
    let dir =
        std::env::temp_dir().join(format!("vxwg-s5-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("private.key"), private).unwrap();
    std::fs::write(dir.join("node.toml"), format!("private_key_file = \"private.key\"\n{body}")).unwrap();
    RemoveDir(dir)
}

/// A unique interface name of this file's own (the UAPI socket directory is shared).
fn ifname() -> String {
    format!("s5e{}n{}", std::process::id() % 100_000, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Removes a UAPI socket file on drop (a daemon that wrongly kept running was killed with its
/// namespace and could not remove it).
struct RemoveSocket(String);

impl Drop for RemoveSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A route someone else owns in vxwg's table (tailscaled uses table 52 too, with `throw` routes
/// and routes through tailscale0) for a prefix a peer lists in AllowedIPs: adding ours fails
/// with EEXIST, which was taken for "ours is there already", so the node came up and that
/// prefix silently went elsewhere. Now the start fails naming the prefix and table, and removes
/// the routes, rule and interface it had added; the other route stays.
#[test]
fn a_route_of_someone_else_in_the_table_fails_the_start_and_is_left_alone() {
    if !require(&["ip", "timeout"]) {
        return;
    }
    let ns = Netns::new("s5route");
    ns.exec("ip link add s5dummy type veth peer name s5dummyb && ip link set s5dummy up && ip link set s5dummyb up");
    let vxwg = env!("CARGO_BIN_EXE_vxwg");
    let (private, _) = keypair();
    let (_, peer) = keypair();
    for (other, prefix) in [
        ("ip route add 10.77.0.0/24 dev s5dummy table 52", "10.77.0.0/24"),
        ("ip route add throw 10.78.0.0/24 table 52", "10.78.0.0/24"),
    ] {
        ns.exec(other);
        let before = ns.exec("ip route show table 52");
        // The conflicting prefix comes after one that is added, which must then be removed.
        let dir = config_dir(
            &private,
            &format!(
                "addresses = [\"100.64.77.1/32\"]\n[[peer]]\npublic_key = \"{peer}\"\nendpoint = \"10.201.0.2:41641\"\nallowed_ips = [\"100.64.77.2/32\", \"{prefix}\"]\n"
            ),
        );
        let name = ifname();
        let _socket = RemoveSocket(format!("/var/run/wireguard/{name}.sock"));
        // A daemon that comes up anyway runs until `timeout` ends it (exit status 124).
        let out = ns.try_exec(&format!(
            "timeout 5 {vxwg} up --foreground --config {} {name}",
            dir.0.join("node.toml").display()
        ));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && out.status.code() != Some(124), "the node came up over {other:?}: {err}");
        assert!(err.contains(prefix) && err.contains("table 52"), "the error names the prefix and table: {err}");
        assert_eq!(ns.exec("ip route show table 52"), before, "only the other route is in the table");
        assert!(!ns.exec("ip rule show").contains("lookup 52"), "no rule left behind");
        assert!(!ns.exec("ip -6 rule show").contains("lookup 52"), "no IPv6 rule left behind");
        assert!(!ns.try_exec(&format!("ip link show {name}")).status.success(), "no interface left behind");
        assert!(!std::path::Path::new(&_socket.0).exists(), "no socket left behind");
    }
}

/// A start that fails after the UAPI socket is bound (here: the descriptors run out under
/// `ulimit -n`, at whichever step that happens) leaves no socket file behind: a stale one makes
/// `wg show` list a dead interface. Every limit from too few to enough is tried.
#[test]
fn a_start_that_runs_out_of_descriptors_leaves_no_socket_file() {
    if !require(&["ip", "timeout"]) {
        return;
    }
    let ns = Netns::new("s5fds");
    let vxwg = env!("CARGO_BIN_EXE_vxwg");
    let (private, _) = keypair();
    let dir = config_dir(&private, "workers = 4\n");
    let mut failures = 0;
    for limit in 4..64 {
        let name = ifname();
        let socket = RemoveSocket(format!("/var/run/wireguard/{name}.sock"));
        // A daemon that comes up runs until `timeout` ends it (SIGTERM: a clean exit).
        let out = ns.try_exec(&format!(
            "ulimit -n {limit}; exec timeout 2 {vxwg} up --foreground --config {} {name}",
            dir.0.join("node.toml").display()
        ));
        let err = String::from_utf8_lossy(&out.stderr);
        let came_up = err.contains("up: UAPI at");
        assert!(!std::path::Path::new(&socket.0).exists(), "ulimit -n {limit}: socket file left behind: {err}");
        assert!(!ns.try_exec(&format!("ip link show {name}")).status.success(), "ulimit -n {limit}: interface left");
        if came_up {
            break;
        }
        assert!(!out.status.success(), "ulimit -n {limit}: {err}");
        // The error says which step ran out, not just the OS's words.
        let last = err.lines().last().unwrap_or_default();
        assert!(!last.starts_with("vxwg: Too many open files"), "ulimit -n {limit}: unnamed step: {err}");
        failures += 1;
    }
    assert!(failures > 0, "no limit was too low to start");
}
