//! The `vxwg` binary, end to end.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn vxwg(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vxwg"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vxwg");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// `wg` from wireguard-tools, if installed (CI installs it, and there it is required).
fn wg_pubkey(private: &str) -> Option<String> {
    let child = Command::new("wg").arg("pubkey").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(_) if std::env::var_os("CI").is_none() => return None,
        Err(e) => panic!("CI must provide wg (wireguard-tools): {e}"),
    };
    child.stdin.take().unwrap().write_all(private.as_bytes()).unwrap();
    Some(String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap())
}

#[test]
fn genkey_pubkey_match_wireguard_tools() {
    for _ in 0..5 {
        let private = vxwg(&["genkey"], "");
        assert!(private.status.success());
        let private = stdout(&private);
        assert_eq!(private.trim().len(), 44);
        let public = vxwg(&["pubkey"], &private);
        assert!(public.status.success(), "{}", String::from_utf8_lossy(&public.stderr));
        if let Some(reference) = wg_pubkey(&private) {
            assert_eq!(stdout(&public), reference, "vxwg pubkey and wg pubkey disagree");
        }
        // And wg accepts our key as a private key too.
        let key = vxwg::control::keys::Key::from_base64(&private).unwrap();
        assert_eq!(stdout(&public).trim(), key.public().to_base64());
    }
}

#[test]
fn genpsk_is_random_and_well_formed() {
    let a = stdout(&vxwg(&["genpsk"], ""));
    let b = stdout(&vxwg(&["genpsk"], ""));
    assert_ne!(a, b);
    assert!(vxwg::control::keys::Key::from_base64(&a).is_ok());
}

#[test]
fn pubkey_rejects_bad_input_with_a_reason() {
    for bad in ["", "hello", &"A".repeat(43), &format!("{}!", "A".repeat(43))] {
        let o = vxwg(&["pubkey"], bad);
        assert!(!o.status.success(), "accepted {bad:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("private key") && err.contains("base64"), "unclear error: {err}");
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn demo_runs_on_its_embedded_default() {
    // In process explicitly: as root (as in CI) plain `vxwg demo` builds the namespace mesh, which
    // tests/netns.rs covers.
    let o = vxwg(&["demo", "--in-process", "--packets", "2000"], "");
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("2000 each way of 1420 bytes, every byte verified"), "{out}");
    assert!(out.contains("none lost"), "{out}");
    assert!(out.trim_end().ends_with("ok"));
}

#[test]
fn demo_rejects_a_bad_size() {
    let o = vxwg(&["demo", "--size", "10"], "");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--size"));
}

#[test]
fn bare_interface_name_means_up_as_with_wireguard_go() {
    // An over-long name is refused by `up` before anything is created (even as root, this test
    // must never create a device in the namespace it runs in); the error shows `up` handled it.
    let o = vxwg(&["-f", "this-name-is-far-too-long"], "");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("must be 1-15 characters"), "{err}");
    // A real subcommand is still a subcommand.
    assert!(vxwg(&["genkey"], "").status.success());
}
