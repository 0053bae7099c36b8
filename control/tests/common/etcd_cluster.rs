//! A real etcd cluster for tests: `etcd` processes on 127.0.0.1 with free ports picked at start
//! ([`EtcdCluster::start`]), or inside a network namespace the test made, on an address of that
//! namespace ([`EtcdCluster::start_in_netns`], for vxwg nodes in other namespaces to reach over a
//! veth or bridge). One data directory each under a temp directory named with the pid. Everything
//! is killed and removed on drop, also when a test panics (then each member's log is printed,
//! since that is where etcd's side of a failure shows).

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// True if the `etcd` binary can run. Outside CI a missing one skips with a note; CI installs it
/// (`.ci/run`), so there it is required.
pub fn etcd_available() -> bool {
    match Command::new("etcd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(status) if status.success() => true,
        _ => {
            assert!(std::env::var_os("CI").is_none(), "CI must provide the etcd binary (Debian's etcd-server)");
            eprintln!("skipped: needs the etcd binary (Debian package etcd-server)");
            false
        }
    }
}

struct Member {
    name: String,
    client_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    /// The namespace etcd runs in (`ip netns exec`, which execs etcd under the same pid).
    netns: Option<String>,
    args: Vec<OsString>,
    process: Option<Child>,
}

impl Member {
    /// Runs etcd with this member's flags, its output appended to its log file.
    fn spawn(&mut self) -> Result<(), String> {
        let out = OpenOptions::new().create(true).append(true).open(&self.log).map_err(|e| format!("log file: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("log file: {e}"))?;
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "etcd"]);
                c
            }
            None => Command::new("etcd"),
        };
        let process = command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot run etcd: {e}"))?;
        self.process = Some(process);
        Ok(())
    }

    fn healthy(&self) -> bool {
        match &self.netns {
            Some(ns) => healthy_in_netns(ns, &self.client_url),
            None => healthy(&self.client_url),
        }
    }
}

pub struct EtcdCluster {
    dir: PathBuf,
    members: Vec<Member>,
}

/// Where the members listen: a namespace (none: the test's own) and an address in it.
struct Placement<'a> {
    netns: Option<&'a str>,
    host: &'a str,
}

const HEALTH_REQUEST: &str = "GET /health HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n";

fn health_answer_ok(answer: &str) -> bool {
    answer.starts_with("HTTP/1.1 200") && answer.contains(r#""health":"true""#)
}

/// etcd's `/health` on the client URL (plain HTTP/1.1 next to gRPC): true once the member has a
/// leader and answers reads. Std only, so any test crate can use this harness.
fn healthy(client_url: &str) -> bool {
    let Some(addr) = client_url.strip_prefix("http://").and_then(|a| a.parse::<SocketAddr>().ok()) else {
        return false;
    };
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(HEALTH_REQUEST.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    health_answer_ok(&answer)
}

/// [`healthy`] for a member inside namespace `ns`, which this process can't reach: bash's
/// /dev/tcp run there does the request.
fn healthy_in_netns(ns: &str, client_url: &str) -> bool {
    let Some((host, port)) = client_url.strip_prefix("http://").and_then(|a| a.rsplit_once(':')) else {
        return false;
    };
    let script = format!("exec 3<>/dev/tcp/{host}/{port} && printf '{HEALTH_REQUEST}' >&3 && cat <&3");
    let output = Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "3", "bash", "-c", &script])
        .stderr(Stdio::null())
        .output();
    output.is_ok_and(|o| health_answer_ok(&String::from_utf8_lossy(&o.stdout)))
}

/// Ports the kernel hands out for port 0, released just before etcd binds them.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port")).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

impl EtcdCluster {
    /// Starts `size` members on 127.0.0.1 and waits until they have elected a leader and answer
    /// reads.
    pub fn start(size: usize) -> EtcdCluster {
        Self::start_at(size, Placement { netns: None, host: "127.0.0.1" })
    }

    /// Starts `size` members inside namespace `netns` (made by the test, with `host` assigned to
    /// one of its interfaces and up), on ports 2379 + 2i (client) and 2380 + 2i (peer): the
    /// namespace is fresh, so they are free. The client URLs are reachable only from there and
    /// from namespaces routed to it.
    pub fn start_in_netns(size: usize, netns: &str, host: &str) -> EtcdCluster {
        Self::start_at(size, Placement { netns: Some(netns), host })
    }

    fn start_at(size: usize, placement: Placement<'_>) -> EtcdCluster {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        // A port taken between picking and binding makes a member exit: then try fresh ports.
        let mut last_failure = String::new();
        for _ in 0..3 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("vxwg-etcd-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create the cluster's temp directory");
            let mut cluster = EtcdCluster { dir, members: Vec::new() };
            match cluster.launch(size, n, &placement) {
                Ok(()) => return cluster,
                Err(why) => last_failure = format!("{why}\n{}", cluster.logs()),
            }
        }
        panic!("etcd cluster did not start: {last_failure}");
    }

    fn launch(&mut self, size: usize, n: usize, placement: &Placement<'_>) -> Result<(), String> {
        let host = placement.host;
        let ports: Vec<u16> = match placement.netns {
            Some(_) => (0..2 * size).map(|i| 2379 + i as u16).collect(),
            None => free_ports(2 * size),
        };
        let token = format!("vxwg-test-{}-{n}", std::process::id());
        let names: Vec<String> = (0..size).map(|i| format!("m{i}")).collect();
        let peer_urls: Vec<String> = (0..size).map(|i| format!("http://{host}:{}", ports[2 * i + 1])).collect();
        let initial_cluster: Vec<String> = names.iter().zip(&peer_urls).map(|(n, u)| format!("{n}={u}")).collect();
        let initial_cluster = initial_cluster.join(",");
        for i in 0..size {
            let client_url = format!("http://{host}:{}", ports[2 * i]);
            let data_dir = self.dir.join(&names[i]);
            let mut args: Vec<OsString> = Vec::new();
            for arg in [
                "--name",
                &names[i],
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_urls[i],
                "--initial-advertise-peer-urls",
                &peer_urls[i],
                "--initial-cluster",
                &initial_cluster,
                "--initial-cluster-token",
                &token,
                "--initial-cluster-state",
                "new",
                // Faster elections than the defaults (100/1000 ms): a killed member's absence is
                // settled quickly. Fine on loopback.
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
                "--data-dir",
            ] {
                args.push(arg.into());
            }
            args.push(data_dir.clone().into());
            let log = self.dir.join(format!("{}.log", names[i]));
            let netns = placement.netns.map(str::to_string);
            let mut member = Member { name: names[i].clone(), client_url, data_dir, log, netns, args, process: None };
            member.spawn()?;
            self.members.push(member);
        }
        self.wait_healthy(Duration::from_secs(30))
    }

    /// Starts member `index` again after [`EtcdCluster::kill`], on its data directory (etcd then
    /// ignores the initial-cluster flags and rejoins). Does not wait for it.
    pub fn restart(&mut self, index: usize) {
        assert!(self.members[index].process.is_none(), "member {index} is running");
        self.members[index].spawn().unwrap_or_else(|e| panic!("restart member {index}: {e}"));
    }

    /// Every running member reports itself healthy (it has a leader and serves reads).
    pub fn wait_healthy(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        for member in self.members.iter_mut().filter(|m| m.process.is_some()) {
            while !member.healthy() {
                if let Some(Ok(Some(status))) = member.process.as_mut().map(Child::try_wait) {
                    return Err(format!("etcd member {} exited early: {status}", member.name));
                }
                if Instant::now() > deadline {
                    return Err(format!("etcd member {} not healthy within {within:?}", member.name));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// The members' client URLs, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Kills member `index` outright (SIGKILL: no goodbye to clients or peers).
    pub fn kill(&mut self, index: usize) {
        if let Some(mut process) = self.members[index].process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Stops member `index` (SIGSTOP): its sockets stay open but nothing answers, like a hung
    /// or cut-off machine. Drop still kills it.
    pub fn freeze(&mut self, index: usize) {
        let process = self.members[index].process.as_ref().expect("member is running");
        let status = Command::new("kill").args(["-STOP", &process.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -STOP member {index}");
    }

    /// Every member's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for member in &self.members {
            let text = fs::read_to_string(&member.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            all +=
                &format!("--- etcd member {} ({}), last lines of its log:\n", member.name, member.data_dir.display());
            for line in tail.iter().rev() {
                all += line;
                all.push('\n');
            }
        }
        all
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
