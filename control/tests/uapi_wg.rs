//! The UAPI against the real `wg` (wireguard-tools): a unix socket at
//! `/var/run/wireguard/NAME.sock` served by [`UapiModel`], driven by `wg show`, `wg showconf`,
//! `wg set`, `wg setconf` and `wg syncconf`. Needs root and `wg`; skipped with a note otherwise,
//! except under CI, which must provide both.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

use vxwg_control::keys::Key;
use vxwg_control::uapi::{self, DeviceSnapshot, PeerSnapshot, UapiModel};

const SOCKET_DIR: &str = "/var/run/wireguard";
/// Larger requests are refused: a test server should not buffer without bound either.
const MAX_REQUEST: usize = 1 << 20;

/// Whether this machine can run the oracle: root (to create the socket where `wg` looks) and `wg`.
/// Decided once; the note goes straight to stderr so the test harness does not swallow it.
fn oracle_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let root = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
            .unwrap_or(false);
        let wg = Command::new("wg").arg("--version").output().is_ok_and(|o| o.status.success());
        if !(root && wg) && std::env::var_os("CI").is_some() {
            panic!("CI must run the UAPI oracle as root with wg (wireguard-tools) installed (root: {root}, wg: {wg})");
        }
        if !(root && wg) {
            let _ = writeln!(
                std::io::stderr(),
                "note: skipping the wg UAPI oracle tests: they need root and wg (root: {root}, wg: {wg})"
            );
        }
        root && wg
    })
}

/// A fake WireGuard interface: a UAPI socket served by a model on a thread, plus a scratch
/// directory for key and config files. Dropping it (also while a test panics) stops the thread and
/// removes the socket and the files.
struct Iface {
    name: String,
    socket: PathBuf,
    dir: PathBuf,
    model: Arc<Mutex<UapiModel>>,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
}

impl Iface {
    fn start(model: UapiModel) -> Iface {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!("vxwgt{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        assert!(name.len() <= 15, "interface name {name} is too long");
        std::fs::create_dir_all(SOCKET_DIR).unwrap();
        let socket = Path::new(SOCKET_DIR).join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket); // left over from a killed run with the same pid
        let listener = UnixListener::bind(&socket).unwrap();
        let dir = std::env::temp_dir().join(format!("{name}.d"));
        std::fs::create_dir_all(&dir).unwrap();

        let model = Arc::new(Mutex::new(model));
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let (model, stop) = (Arc::clone(&model), Arc::clone(&stop));
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(conn) = conn {
                        let _ = serve(conn, &model);
                    }
                }
            })
        };
        Iface { name, socket, dir, model, stop, server: Some(server) }
    }

    fn model(&self) -> MutexGuard<'_, UapiModel> {
        self.model.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn snapshot(&self) -> DeviceSnapshot {
        self.model().snapshot().clone()
    }

    /// Writes a scratch file (a key or a config) and returns its path.
    fn file(&self, name: &str, contents: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// Runs `wg` with `args`, where `IFACE` stands for this interface's name.
    fn wg(&self, args: &[&str]) -> Output {
        let args: Vec<&str> = args.iter().map(|a| if *a == "IFACE" { self.name.as_str() } else { a }).collect();
        Command::new("wg").args(&args).output().expect("run wg")
    }

    /// Runs `wg`, requires success, returns its stdout.
    fn wg_ok(&self, args: &[&str]) -> String {
        let out = self.wg(args);
        assert!(out.status.success(), "wg {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Sends raw bytes over one connection and returns the first `responses` responses.
    fn raw(&self, request: &[u8], responses: usize) -> String {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request).unwrap();
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        // A response ends with an empty line, as a request does.
        while response.windows(2).filter(|w| w == b"\n\n").count() < responses {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed after {:?}", String::from_utf8_lossy(&response));
            response.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(response).unwrap()
    }
}

/// Answers every request on one connection until the client closes it (wg sends one per connection,
/// and opens an empty one first to probe the socket).
fn serve(mut conn: UnixStream, model: &Mutex<UapiModel>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(len) = uapi::request_len(&pending) {
            let response = model.lock().unwrap_or_else(|p| p.into_inner()).handle(&pending[..len]);
            conn.write_all(response.as_bytes())?;
            pending.drain(..len);
        }
        if pending.len() > MAX_REQUEST {
            return conn.write_all(uapi::render_errno(uapi::EPROTO).as_bytes());
        }
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

impl Drop for Iface {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.socket); // wakes the accept loop
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn new_key() -> Key {
    Key::generate_private(&mut rand_core::OsRng)
}

fn b64(k: &Key) -> String {
    k.to_base64()
}

fn peer<'a>(s: &'a DeviceSnapshot, k: &Key) -> &'a PeerSnapshot {
    s.peers.iter().find(|p| p.public_key == *k).unwrap_or_else(|| panic!("no peer {k:?} in {s:#?}"))
}

fn nets(p: &PeerSnapshot) -> Vec<String> {
    p.allowed_ips.iter().map(ToString::to_string).collect()
}

/// `wg show IFACE dump` as rows of fields.
fn dump(iface: &Iface) -> Vec<Vec<String>> {
    iface.wg_ok(&["show", "IFACE", "dump"]).lines().map(|l| l.split('\t').map(str::to_string).collect()).collect()
}

#[test]
fn empty_interface_shows_nothing_configured() {
    if !oracle_available() {
        return;
    }
    let iface = Iface::start(UapiModel::new());
    assert_eq!(dump(&iface), [["(none)", "(none)", "0", "off"]]);
    assert_eq!(iface.wg_ok(&["showconf", "IFACE"]).trim(), "[Interface]");
    assert_eq!(iface.wg_ok(&["show", "IFACE"]).trim(), format!("interface: {}", iface.name));
    let all = iface.wg_ok(&["show", "interfaces"]);
    assert!(all.split_whitespace().any(|n| n == iface.name), "{all:?} lacks {}", iface.name);
}

#[test]
fn wg_set_then_show_and_remove() {
    if !oracle_available() {
        return;
    }
    let iface = Iface::start(UapiModel::new());
    let (private, psk, peer_key) = (new_key(), Key::generate_preshared(&mut rand_core::OsRng), new_key().public());
    let private_file = iface.file("private", &format!("{}\n", b64(&private)));
    let psk_file = iface.file("psk", &format!("{}\n", b64(&psk)));
    let pub_b64 = b64(&peer_key);
    iface.wg_ok(&[
        "set",
        "IFACE",
        "private-key",
        &private_file,
        "listen-port",
        "51999",
        "peer",
        &pub_b64,
        "allowed-ips",
        "10.0.0.0/24,fd00::/64",
        "endpoint",
        "127.0.0.1:51820",
        "persistent-keepalive",
        "25",
        "preshared-key",
        &psk_file,
    ]);

    // What the model received.
    let s = iface.snapshot();
    assert_eq!((s.private_key, s.listen_port, s.fwmark), (Some(private), 51999, None));
    assert_eq!(s.peers.len(), 1);
    let p = &s.peers[0];
    assert_eq!((p.public_key, p.preshared_key), (peer_key, Some(psk)));
    assert_eq!(p.endpoint, Some("127.0.0.1:51820".parse().unwrap()));
    assert_eq!(p.persistent_keepalive, 25);
    assert_eq!(nets(p), ["10.0.0.0/24", "fd00::/64"]);

    // What wg reads back: it derives the same public key from our private key.
    let public = b64(&private.public());
    assert_eq!(
        dump(&iface),
        [
            vec![b64(&private), public.clone(), "51999".into(), "off".into()],
            vec![
                pub_b64.clone(),
                b64(&psk),
                "127.0.0.1:51820".into(),
                "10.0.0.0/24,fd00::/64".into(),
                "0".into(),
                "0".into(),
                "0".into(),
                "25".into()
            ],
        ]
    );
    assert_eq!(iface.wg_ok(&["show", "IFACE", "public-key"]).trim(), public);
    assert_eq!(iface.wg_ok(&["show", "IFACE", "listen-port"]).trim(), "51999");
    assert_eq!(iface.wg_ok(&["show", "IFACE", "endpoints"]).trim(), format!("{pub_b64}\t127.0.0.1:51820"));
    let conf = iface.wg_ok(&["showconf", "IFACE"]);
    for line in [
        "[Interface]".to_string(),
        "ListenPort = 51999".into(),
        format!("PrivateKey = {}", b64(&private)),
        "[Peer]".into(),
        format!("PublicKey = {pub_b64}"),
        format!("PresharedKey = {}", b64(&psk)),
        "AllowedIPs = 10.0.0.0/24, fd00::/64".into(),
        "Endpoint = 127.0.0.1:51820".into(),
        "PersistentKeepalive = 25".into(),
    ] {
        assert!(conf.lines().any(|l| l == line), "showconf lacks {line:?}:\n{conf}");
    }
    let human = iface.wg_ok(&["show", "IFACE"]);
    assert!(human.contains(&format!("public key: {public}")) && human.contains("listening port: 51999"), "{human}");
    assert!(human.contains("allowed ips: 10.0.0.0/24, fd00::/64") && human.contains("every 25 seconds"), "{human}");

    iface.wg_ok(&["set", "IFACE", "peer", &pub_b64, "remove"]);
    assert!(iface.snapshot().peers.is_empty());
    assert_eq!(dump(&iface), [[b64(&private), public, "51999".into(), "off".into()]]);

    // An empty private-key file removes the key; wg then shows none.
    let empty = iface.file("empty", "");
    iface.wg_ok(&["set", "IFACE", "private-key", &empty]);
    assert_eq!(iface.snapshot().private_key, None);
    assert_eq!(dump(&iface), [["(none)", "(none)", "51999", "off"]]);
}

#[test]
fn traffic_counters_and_handshake_time_reach_wg() {
    if !oracle_available() {
        return;
    }
    let peer_key = new_key().public();
    let mut p = PeerSnapshot::new(peer_key);
    p.endpoint = Some("[2001:db8::1]:51820".parse().unwrap());
    p.last_handshake = Some(UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000));
    (p.rx_bytes, p.tx_bytes) = (1234, 5678);
    p.allowed_ips = vec!["10.7.0.0/16".parse().unwrap()];
    let iface = Iface::start(UapiModel::from_snapshot(DeviceSnapshot {
        listen_port: 443,
        fwmark: Some(0x2a),
        peers: vec![p],
        ..Default::default()
    }));
    let k = b64(&peer_key);
    assert_eq!(
        dump(&iface)[1],
        [k.as_str(), "(none)", "[2001:db8::1]:51820", "10.7.0.0/16", "1700000000", "1234", "5678", "off"]
    );
    assert_eq!(dump(&iface)[0], ["(none)", "(none)", "443", "0x2a"]);
    assert_eq!(iface.wg_ok(&["show", "IFACE", "transfer"]).trim(), format!("{k}\t1234\t5678"));
    assert_eq!(iface.wg_ok(&["show", "IFACE", "latest-handshakes"]).trim(), format!("{k}\t1700000000"));
    assert_eq!(iface.wg_ok(&["show", "IFACE", "fwmark"]).trim(), "0x2a");
}

#[test]
fn setconf_replaces_and_syncconf_diffs() {
    if !oracle_available() {
        return;
    }
    let iface = Iface::start(UapiModel::new());
    let (private, psk) = (new_key(), Key::generate_preshared(&mut rand_core::OsRng));
    let (a, b, c, d) = (new_key().public(), new_key().public(), new_key().public(), new_key().public());
    // A peer that setconf must remove (replace_peers).
    iface.wg_ok(&["set", "IFACE", "fwmark", "7", "peer", &b64(&c), "allowed-ips", "10.30.0.0/16"]);

    let conf = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = 51820\nFwMark = 0x2a\n\n\
         [Peer]\nPublicKey = {}\nPresharedKey = {}\nAllowedIPs = 10.10.0.0/16, fd10::/64\n\
         Endpoint = [2001:db8::1]:51820\nPersistentKeepalive = 15\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 10.20.0.0/16\n",
        b64(&private),
        b64(&a),
        b64(&psk),
        b64(&b)
    );
    iface.wg_ok(&["setconf", "IFACE", &iface.file("setconf.conf", &conf)]);
    let s = iface.snapshot();
    assert_eq!((s.private_key, s.listen_port, s.fwmark), (Some(private), 51820, Some(0x2a)));
    assert_eq!(s.peers.iter().map(|p| p.public_key).collect::<Vec<_>>(), [a, b], "setconf replaces all peers");
    let pa = peer(&s, &a);
    assert_eq!((pa.preshared_key, pa.persistent_keepalive), (Some(psk), 15));
    assert_eq!(pa.endpoint, Some("[2001:db8::1]:51820".parse().unwrap()));
    assert_eq!(nets(pa), ["10.10.0.0/16", "fd10::/64"]);
    assert_eq!(nets(peer(&s, &b)), ["10.20.0.0/16"]);
    // showconf gives back an equivalent configuration.
    let shown = iface.wg_ok(&["showconf", "IFACE"]);
    for line in [
        "FwMark = 0x2a",
        "ListenPort = 51820",
        "AllowedIPs = 10.10.0.0/16, fd10::/64",
        "Endpoint = [2001:db8::1]:51820",
    ] {
        assert!(shown.lines().any(|l| l == line), "showconf lacks {line:?}:\n{shown}");
    }

    // syncconf: drop a, change b, add d, remove the fwmark; b is updated in place, not recreated.
    iface.model().snapshot_mut().peers.iter_mut().find(|p| p.public_key == b).unwrap().rx_bytes = 77;
    let conf = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = 51821\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 10.20.0.0/16, 10.21.0.0/16\nEndpoint = 192.0.2.1:1\n\n\
         [Peer]\nPublicKey = {}\nPresharedKey = {}\nAllowedIPs = 10.40.0.0/16\n",
        b64(&private),
        b64(&b),
        b64(&d),
        b64(&psk)
    );
    iface.wg_ok(&["syncconf", "IFACE", &iface.file("syncconf.conf", &conf)]);
    let s = iface.snapshot();
    assert_eq!((s.listen_port, s.fwmark), (51821, None));
    assert_eq!(s.peers.iter().map(|p| p.public_key).collect::<Vec<_>>(), [b, d]);
    let pb = peer(&s, &b);
    assert_eq!((pb.rx_bytes, nets(pb)), (77, vec!["10.20.0.0/16".to_string(), "10.21.0.0/16".into()]));
    assert_eq!(pb.endpoint, Some("192.0.2.1:1".parse().unwrap()));
    assert_eq!(peer(&s, &d).preshared_key, Some(psk));

    // syncconf of the same file again changes nothing.
    let before = iface.snapshot();
    iface.wg_ok(&["syncconf", "IFACE", &iface.dir.join("syncconf.conf").to_string_lossy()]);
    assert_eq!(iface.snapshot(), before);
}

#[test]
fn wg_set_moves_an_allowed_ip_between_peers() {
    if !oracle_available() {
        return;
    }
    let iface = Iface::start(UapiModel::new());
    let (a, b) = (b64(&new_key().public()), b64(&new_key().public()));
    iface.wg_ok(&[
        "set",
        "IFACE",
        "peer",
        &a,
        "allowed-ips",
        "10.1.0.0/16,10.2.0.0/16",
        "peer",
        &b,
        "allowed-ips",
        "10.3.0.0/16",
    ]);
    // wg set replaces b's allowed IPs with the list; 10.2.0.0/16 leaves a.
    iface.wg_ok(&["set", "IFACE", "peer", &b, "allowed-ips", "10.3.0.0/16,10.2.0.0/16"]);
    let s = iface.snapshot();
    let (ka, kb) = (s.peers[0].public_key, s.peers[1].public_key);
    assert_eq!(
        (nets(peer(&s, &ka)), nets(peer(&s, &kb))),
        (vec!["10.1.0.0/16".to_string()], vec!["10.3.0.0/16".to_string(), "10.2.0.0/16".into()])
    );
    assert_eq!(
        iface.wg_ok(&["show", "IFACE", "allowed-ips"]),
        format!("{a}\t10.1.0.0/16\n{b}\t10.3.0.0/16 10.2.0.0/16\n")
    );

    // An empty list leaves a peer with none.
    iface.wg_ok(&["set", "IFACE", "peer", &a, "allowed-ips", ""]);
    assert_eq!(iface.wg_ok(&["show", "IFACE", "allowed-ips"]), format!("{a}\t(none)\n{b}\t10.3.0.0/16 10.2.0.0/16\n"));
}

#[test]
fn refused_requests_answer_an_errno_and_change_nothing() {
    if !oracle_available() {
        return;
    }
    let iface = Iface::start(UapiModel::new());
    let peer_key = new_key().public();
    let k = b64(&peer_key);
    iface.wg_ok(&["set", "IFACE", "listen-port", "51820", "peer", &k, "allowed-ips", "10.0.0.0/8"]);
    let before = iface.snapshot();

    // wg refuses a bad endpoint itself; nothing reaches the model.
    let out = iface.wg(&["set", "IFACE", "peer", &k, "endpoint", "bad"]);
    assert!(!out.status.success());
    assert_eq!(iface.snapshot(), before);

    // A link-local endpoint: wg sends the scope by name ("%lo"), which we refuse with EINVAL, and
    // wg reports it as "Invalid argument" (it decodes the negated errno, as wireguard-go sends it).
    let out = iface.wg(&["set", "IFACE", "listen-port", "1", "peer", &k, "endpoint", "[fe80::1%1]:51820"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Unable to modify interface: Invalid argument"), "{stderr}");
    assert_eq!(iface.snapshot(), before, "a refused set must not be half-applied");

    // Raw malformed requests: EINVAL for bad values, EPROTO for a broken request shape.
    let hex = peer_key.to_hex();
    for (request, errno) in [
        (format!("set=1\npublic_key={hex}\nendpoint=bad\n\n"), "errno=-22\n\n"),
        (
            format!("set=1\nlisten_port=1\nreplace_peers=true\npublic_key={hex}\nprotocol_version=2\n\n"),
            "errno=-22\n\n",
        ),
        (format!("set=1\nendpoint=127.0.0.1:1\npublic_key={hex}\n\n"), "errno=-22\n\n"),
        (format!("set=1\nreplace_peers=true\npublic_key={hex}\nremove\n\n"), "errno=-71\n\n"),
        ("get=2\n\n".to_string(), "errno=-71\n\n"),
    ] {
        assert_eq!(iface.raw(request.as_bytes(), 1), errno, "{request:?}");
        assert_eq!(iface.snapshot(), before, "{request:?} changed the model");
    }
    // The device still answers wg after all that, and two requests on one connection both work.
    assert_eq!(dump(&iface)[1][0], k);
    let both = iface.raw(b"set=1\nlisten_port=51821\n\nget=1\n\n", 2);
    assert!(both.starts_with("errno=0\n\nlisten_port=51821\npublic_key="), "{both:?}");
    assert_eq!(iface.snapshot().listen_port, 51821);
}
