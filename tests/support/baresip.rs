//! baresip 1.0 (package baresip-core) as a test peer: one account, SIP trace on stdout.
//!
//! Invocation (verified against Kamailio 5.6 first):
//!   HOME=<tmp> baresip -f <tmp>/cfg -s -t <secs>
//! with `<tmp>/cfg/config` = `sip_listen 127.0.0.1:0`, `module_path /usr/lib/baresip/modules`,
//! `module_app account.so` (no audio modules, no console) and `<tmp>/cfg/accounts` = the
//! account line. `-s` traces every SIP message to stdout: without it baresip prints only the
//! first "200 OK" of a registration, not the refreshes. SIGTERM makes it unregister.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

pub struct Baresip {
    pub proc: ProcGuard,
    out: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Baresip {
    /// Starts baresip with one account line, e.g.
    /// `<sip:1001@127.0.0.1:PORT;transport=udp>;auth_pass=...;regint=N`.
    pub fn start(account: &str) -> Baresip {
        let bin = require_tool("baresip");
        let dir = tempfile::Builder::new()
            .prefix("gridedge-baresip-")
            .tempdir()
            .unwrap();
        let cfg = dir.path().join("cfg");
        fs::create_dir_all(&cfg).unwrap();
        fs::write(
            cfg.join("config"),
            "sip_listen\t127.0.0.1:0\n\
             module_path\t/usr/lib/baresip/modules\n\
             module_app\taccount.so\n",
        )
        .unwrap();
        fs::write(cfg.join("accounts"), format!("{account}\n")).unwrap();
        let out = dir.path().join("baresip.out");
        let log = fs::File::create(&out).unwrap();
        let child = Command::new(bin)
            .arg("-f")
            .arg(&cfg)
            .arg("-s")
            .args(["-t", "120"]) // hard stop, in case every guard fails
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn baresip");
        Baresip {
            proc: ProcGuard::new("baresip", child),
            out,
            _dir: dir,
        }
    }

    pub fn output(&self) -> String {
        read_lossy(&self.out)
    }

    /// Number of traced `SIP/2.0 <code> ...` responses to REGISTER.
    pub fn register_responses(&self, code: u16) -> usize {
        count_responses(&self.output(), code, "REGISTER")
    }

    /// Contact URIs baresip sent in its REGISTERs.
    pub fn sent_contacts(&self) -> Vec<String> {
        let out = self.output();
        let mut v: Vec<String> = out
            .lines()
            .filter(|l| l.starts_with("Contact:"))
            .map(|l| contact_uri(l.trim_start_matches("Contact:").trim()).to_string())
            .collect();
        v.dedup();
        v
    }

    /// Waits until `cond` holds, failing the test with baresip's trace and the daemon's logs.
    pub fn wait_for(
        &self,
        d: &Daemon,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&Baresip) -> bool,
    ) {
        if poll_until(timeout, || cond(self).then_some(())).is_none() {
            d.fail(&format!(
                "baresip: {what} not seen within {timeout:?}\n--- baresip output:\n{}",
                tail(&self.output(), 16000)
            ));
        }
    }
}

/// Counts traced responses `SIP/2.0 <code>` whose CSeq method is `method`.
pub fn count_responses(trace: &str, code: u16, method: &str) -> usize {
    let status = format!("SIP/2.0 {code} ");
    let mut in_resp = false;
    let mut n = 0;
    for line in trace.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("SIP/2.0 ") || line.ends_with(" SIP/2.0") {
            in_resp = line.starts_with(&status);
        } else if in_resp && line.to_ascii_lowercase().starts_with("cseq:") {
            if line.ends_with(method) {
                n += 1;
            }
            in_resp = false;
        }
    }
    n
}
