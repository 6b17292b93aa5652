//! The command line: `gridedge check-config FILE` accepts a good config and rejects a bad one
//! naming the offending key.

mod common;

use std::fs;
use std::process::Command;
use std::time::Duration;

use common::*;

fn check_config(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gridedge.toml");
    fs::write(&path, text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gridedge"));
    cmd.arg("check-config").arg(&path);
    let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(20));
    (status.success(), format!("{out}{err}"))
}

#[test]
fn check_config_accepts_the_harness_config() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = check_config(&render_config(&dir.path().join("state"), ""));
    assert!(ok, "check-config rejected a valid config:\n{out}");
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for (over, key) in [
        ("[sip]\nudpp = [\"127.0.0.1:0\"]\n", "udpp"),
        ("[sip]\nmax_headers = \"many\"\n", "max_headers"),
        ("[sip.guard]\nallow = [\"not-a-cidr\"]\n", "allow"),
        ("[sip.auth]\nalgorithms = [\"SHA-1\"]\n", "algorithms"),
    ] {
        let text = render_config(&state, over);
        let (ok, out) = check_config(&text);
        assert!(!ok, "check-config accepted a bad config ({over:?}):\n{out}");
        assert!(
            out.contains(key),
            "check-config output does not name `{key}`:\n{out}"
        );
    }
}

#[test]
fn check_config_refuses_what_run_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let missing = dir.path().join("missing.pem");
    let over = format!(
        "[sip]\ntls = [\"127.0.0.1:0\"]\ntls_cert = {:?}\ntls_key = {:?}\n",
        missing.display().to_string(),
        missing.display().to_string()
    );
    let (ok, out) = check_config(&render_config(&state, &over));
    assert!(!ok, "check-config accepted unreadable TLS files:\n{out}");
    assert!(out.contains("sip.tls_cert"), "{out}");
    assert_eq!(
        out.matches("No such file").count(),
        1,
        "the cause is printed once:\n{out}"
    );
}
