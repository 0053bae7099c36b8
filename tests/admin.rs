//! `vxwg admin`, run as the operator would: keys, certificates, records and the policy signed with
//! the built binary, then checked by `inspect` — valid as written, refused once tampered with.

use std::fmt::Debug;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vxwg-admin-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn vxwg<S: AsRef<str>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vxwg")).args(args.iter().map(AsRef::as_ref)).output().expect("run vxwg")
}

/// Runs `vxwg args` expecting success; returns stdout.
fn ok<S: AsRef<str> + Debug>(args: &[S]) -> String {
    let out = vxwg(args);
    assert!(out.status.success(), "vxwg {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `vxwg args` expecting failure; returns stdout and stderr.
fn fails<S: AsRef<str> + Debug>(args: &[S]) -> (String, String) {
    let out = vxwg(args);
    assert!(!out.status.success(), "vxwg {args:?} should have failed");
    (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// `vxwg admin sign-node` arguments: `name`'s certificate (WireGuard key `wg`, node key `node`,
/// then `more` flags such as `--address`) signed with the key file `signer`, written to `out`;
/// both files are in `t`.
fn sign_node(t: &TempDir, signer: &str, name: &str, wg: &str, node: &str, more: &[&str], out: &str) -> Vec<String> {
    let (signer, out) = (t.path(signer), t.path(out));
    let mut args = vec!["admin", "sign-node", "--operator-key", &signer, "--name", name];
    args.extend(["--wg-public-key", wg, "--node-key", node]);
    args.extend(more);
    args.extend(["--out", &out]);
    args.into_iter().map(str::to_string).collect()
}

/// `vxwg admin sign-record` arguments: `name`'s record (`more` flags such as `--endpoint`)
/// signed with the node key file `key`, written to `out`; both files are in `t`.
fn sign_record(t: &TempDir, key: &str, name: &str, more: &[&str], out: &str) -> Vec<String> {
    let (key, out) = (t.path(key), t.path(out));
    let mut args = vec!["admin", "sign-record", "--node-key", &key, "--name", name];
    args.extend(more);
    args.extend(["--out", &out]);
    args.into_iter().map(str::to_string).collect()
}

/// `vxwg admin sign-policy` arguments: the policy file `policy` signed with the operator key,
/// written to `out`; all files are in `t`.
fn sign_policy(t: &TempDir, policy: &str, out: &str) -> Vec<String> {
    let key = t.path("operator/operator.key");
    ["admin", "sign-policy", "--operator-key", &key, "--policy", &t.path(policy), "--out", &t.path(out)]
        .map(str::to_string)
        .to_vec()
}

/// An operator directory and a `docs/` directory holding a certificate, a record and a policy
/// for node `a`. Returns the operator public key.
fn signed_fleet(t: &TempDir) -> String {
    let operator = ok(&["admin", "init", "--dir", &t.path("operator")]).trim().to_owned();
    let node_pub = ok(&["admin", "keygen", "--out", &t.path("a.key")]).trim().to_owned();
    let wg_pub = vxwg_pubkey();
    std::fs::create_dir(t.path("docs")).unwrap();
    let cert = ["--address", "100.64.0.1", "fd7a::1", "--tag", "tag:k8s"];
    ok(&sign_node(t, "operator/operator.key", "a", &wg_pub, &node_pub, &cert, "docs/a.cert.json"));
    let record = [
        "--endpoint",
        "192.168.1.1:51820",
        "203.0.113.1:51820",
        "--route",
        "10.42.1.0/24",
        "--vtep-mac",
        "02:00:00:00:00:01",
    ];
    ok(&sign_record(t, "a.key", "a", &record, "docs/a.record.json"));
    std::fs::write(
        t.path("policy.toml"),
        "[[auto_approvers]]\nprefix = \"10.42.0.0/16\"\ntags = [\"tag:k8s\"]\n\n[[acl]]\nsrc = \"tag:k8s\"\ndst = [\"tag:k8s\"]\n",
    )
    .unwrap();
    ok(&sign_policy(t, "policy.toml", "docs/policy.json"));
    operator
}

fn vxwg_pubkey() -> String {
    use std::io::Write;
    let private = ok(&["genkey"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vxwg"))
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(private.as_bytes()).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap().trim().to_owned()
}

fn mode(path: &str) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Rewrites the payload of the document at `path` with `edit`, keeping its signature.
fn tamper(path: &Path, edit: impl Fn(String) -> String) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let payload = String::from_utf8(b64.decode(json["payload"].as_str().unwrap()).unwrap()).unwrap();
    let edited = edit(payload.clone());
    assert_ne!(edited, payload, "the edit changed nothing");
    json["payload"] = b64.encode(edited).into();
    std::fs::write(path, serde_json::to_vec(&json).unwrap()).unwrap();
}

#[test]
fn signed_documents_inspect_as_valid() {
    let t = TempDir::new();
    let operator = signed_fleet(&t);
    assert_eq!(mode(&t.path("operator/operator.key")), 0o600);
    assert_eq!(mode(&t.path("a.key")), 0o600);
    assert_eq!(std::fs::read_to_string(t.path("operator/operator.pub")).unwrap().trim(), operator);

    let out = ok(&["admin", "inspect", &t.path("docs"), "--operator", &operator]);
    assert_eq!(out.matches("verdict:   valid").count(), 3, "{out}");
    assert!(!out.contains("INVALID"), "{out}");
    assert!(out.contains(&format!("signer:    {operator} (the operator)")), "{out}");
    assert!(out.contains("(node key of a)"), "{out}");
    assert!(out.contains("addresses: 100.64.0.1, fd7a::1"), "{out}");
    assert!(out.contains("routes:    10.42.1.0/24"), "{out}");
    assert!(out.contains("approve:   10.42.0.0/16 for tag:k8s"), "{out}");
    assert!(out.contains("(in 90d 0h)") || out.contains("(in 89d 23h)"), "certificates last 90 days by default: {out}");
}

#[test]
fn a_tampered_document_fails_inspect_with_a_bad_signature() {
    let t = TempDir::new();
    let operator = signed_fleet(&t);
    tamper(&t.0.join("docs/a.record.json"), |p| p.replace("10.42.1.0/24", "10.42.9.0/24"));
    let (out, err) = fails(&["admin", "inspect", &t.path("docs"), "--operator", &operator]);
    assert!(out.contains("a.record.json\n"), "{out}");
    assert!(out.contains("signature: BAD"), "{out}");
    assert!(out.contains("INVALID: bad signature"), "{out}");
    assert_eq!(out.matches("verdict:   valid").count(), 2, "the other documents stay valid: {out}");
    assert!(err.contains("1 invalid document"), "{err}");

    // A raw byte flipped anywhere in the file is refused too, naming the file.
    let path = t.0.join("docs/policy.json");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let (out, _) = fails(&["admin", "inspect", path.to_str().unwrap()]);
    assert!(out.starts_with("policy.json\n") && out.contains("INVALID"), "{out}");
}

#[test]
fn inspect_checks_who_signed_and_expiry() {
    let t = TempDir::new();
    let operator = signed_fleet(&t);
    // A certificate signed with a node key instead of the operator key, and an expired record.
    let intruder_pub = ok(&["admin", "keygen", "--out", &t.path("intruder.key")]).trim().to_owned();
    let cert = ["--address", "100.64.0.66"];
    ok(&sign_node(&t, "intruder.key", "mallory", &vxwg_pubkey(), &intruder_pub, &cert, "docs/mallory.cert.json"));
    let record = ["--endpoint", "192.168.1.1:51820", "--ttl-secs", "0"];
    ok(&sign_record(&t, "a.key", "a", &record, "docs/a.record.json"));
    let (out, _) = fails(&["admin", "inspect", &t.path("docs"), "--operator", &operator]);
    assert!(out.contains(&format!("INVALID: signed by {intruder_pub}, which is not the operator key")), "{out}");
    assert!(out.contains("INVALID: record expired at"), "{out}");
    assert_eq!(out.matches("verdict:   valid").count(), 2, "{out}");
}

#[test]
fn errors_name_the_file_and_the_field() {
    let t = TempDir::new();
    signed_fleet(&t);
    let (_, err) = fails(&["admin", "keygen", "--out", &t.path("a.key")]);
    assert!(err.contains("a.key") && err.contains("never overwritten"), "{err}");
    std::fs::write(t.path("bad.toml"), "[[auto_approvers]]\nprefix = \"10.42.0.0/33\"\ntags = [\"tag:k8s\"]\n")
        .unwrap();
    let (_, err) = fails(&sign_policy(&t, "bad.toml", "x.json"));
    assert!(err.contains("bad.toml") && err.contains("auto_approvers[0].prefix"), "{err}");
    std::fs::write(t.path("typo.toml"), "[[acls]]\nsrc = \"tag:k8s\"\ndst = []\n").unwrap();
    let (_, err) = fails(&sign_policy(&t, "typo.toml", "x.json"));
    assert!(err.contains("typo.toml") && err.contains("acls"), "{err}");
    let (_, err) =
        fails(&sign_node(&t, "operator/operator.key", "b", "nope", "nope", &["--address", "100.64.0.2"], "x.json"));
    assert!(err.contains("--wg-public-key"), "{err}");
    std::fs::write(t.path("broken.key"), "not a key").unwrap();
    let (_, err) = fails(&sign_record(&t, "broken.key", "a", &[], "x.json"));
    assert!(err.contains("broken.key"), "{err}");
    assert!(!Path::new(&t.path("x.json")).exists(), "nothing written on error");
}
