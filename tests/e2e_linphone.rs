//! linphone-cli 5.1 (`linphonecsh`, package linphone-cli) registers with a SHA-256 digest
//! (RFC 8760) — the only installable peer that answers SHA-256 challenges.
//!
//! Invocation (verified against Kamailio 5.6 with `modparam("auth", "algorithm", "SHA-256")`):
//!   HOME=<tmp> linphonecsh init -c <fresh rc> -d 6 -l <tmp>/linphonec.log
//!   (wait for the control socket /tmp/linphonec-<uid>: `init` returns before it exists and an
//!    early `register` fails with "Failed to connect pipe")
//!   HOME=<tmp> linphonecsh register --host 127.0.0.1:PORT --username 1001 --password ...
//!   HOME=<tmp> linphonecsh status register   (poll: "registered=-1" -> "registered, identity=...")
//!   HOME=<tmp> linphonecsh unregister / exit
//! Gotchas: the rc file must be fresh per run (linphonec writes the account into it and
//! re-registers it on the next init); `[sip] sip_port=-1, sip_tcp_port=-1` picks random ports
//! (the default binds 5060); the control socket path depends only on the uid, so only one
//! linphonec per user can run: the guard refuses to start if another one is alive.
//! Piping commands into `linphonec`'s stdin does not drive the core.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const SHA256_ONLY: &str = r#"
[sip.auth]
algorithms = ["SHA-256"]
"#;

fn uid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("uid from /proc/self/status")
}

fn control_socket() -> PathBuf {
    PathBuf::from(format!("/tmp/linphonec-{}", uid()))
}

/// A linphonec daemon driven by linphonecsh; `Drop` runs `linphonecsh exit` and then kills any
/// linphonec still running with *our* rc file (found through /proc, by exact path).
struct Linphone {
    home: tempfile::TempDir,
    rc: PathBuf,
    log: PathBuf,
    csh: PathBuf,
}

impl Linphone {
    fn start() -> Linphone {
        let csh = require_tool("linphonecsh");
        require_tool("linphonec");
        let sock = control_socket();
        if sock.exists() {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                panic!(
                    "another linphonec is running for this user ({} answers); linphonecsh \
                     supports one per uid — stop it (linphonecsh exit) and re-run",
                    sock.display()
                );
            }
            let _ = fs::remove_file(&sock); // stale socket of a dead linphonec
        }
        let home = tempfile::Builder::new()
            .prefix("gridedge-linphone-")
            .tempdir()
            .unwrap();
        fs::create_dir_all(home.path().join(".local/share/linphone")).unwrap();
        let run = home.path().join("run");
        fs::create_dir_all(&run).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&run, fs::Permissions::from_mode(0o700)).unwrap();
        }
        let rc = home.path().join("linphonerc");
        fs::write(&rc, "[sip]\nsip_port=-1\nsip_tcp_port=-1\nsip_tls_port=0\n").unwrap();
        let log = home.path().join("linphonec.log");
        let l = Linphone { home, rc, log, csh };
        let rc_s = l.rc.display().to_string();
        let log_s = l.log.display().to_string();
        let (st, out, err) = l.csh(&["init", "-c", &rc_s, "-d", "6", "-l", &log_s]);
        assert!(st, "linphonecsh init failed: {out}{err}");
        if poll_until(Duration::from_secs(15), || {
            std::os::unix::net::UnixStream::connect(&sock)
                .ok()
                .map(|_| ())
        })
        .is_none()
        {
            panic!(
                "linphonec control socket {} not up within 15 s\n{}",
                sock.display(),
                tail(&read_lossy(&l.log), 8000)
            );
        }
        l
    }

    fn csh(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = Command::new(&self.csh);
        // linphonec (spawned by `init`) inherits this environment; XDG_RUNTIME_DIR keeps the
        // PulseAudio client from creating /tmp/pulse-* directories
        cmd.args(args)
            .env("HOME", self.home.path())
            .env("XDG_RUNTIME_DIR", self.home.path().join("run"));
        let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(20));
        (status.success(), out, err)
    }

    fn status_register(&self) -> String {
        let (_, out, err) = self.csh(&["status", "register"]);
        format!("{out}{err}").trim().to_string()
    }

    fn log(&self) -> String {
        read_lossy(&self.log)
    }
}

/// PIDs of linphonec processes whose command line mentions `rc` (our own instance only).
fn linphonec_pids_using(rc: &Path) -> Vec<u32> {
    let needle = rc.display().to_string();
    let mut pids = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.starts_with("linphonec") && cmdline.contains(&needle) {
                pids.push(pid);
            }
        }
    }
    pids
}

impl Drop for Linphone {
    fn drop(&mut self) {
        let _ = self.csh(&["exit"]);
        let gone = poll_until(Duration::from_secs(5), || {
            linphonec_pids_using(&self.rc).is_empty().then_some(())
        });
        if gone.is_none() {
            for pid in linphonec_pids_using(&self.rc) {
                send_signal(pid, "KILL");
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "----- linphonec log (tail) -----\n{}",
                tail(&self.log(), 12000)
            );
        }
    }
}

#[test]
fn linphone_registers_with_sha256() {
    let d = Daemon::start(SHA256_ONLY);
    let port = d.listeners.udp().port();
    let lin = Linphone::start();
    let host = format!("127.0.0.1:{port}");
    let (ok, out, err) = lin.csh(&[
        "register",
        "--host",
        &host,
        "--username",
        "1001",
        "--password",
        &password_of("1001"),
    ]);
    assert!(ok, "linphonecsh register failed: {out}{err}");

    let want = format!("registered, identity=sip:1001@{host}");
    let mut last = String::new();
    if poll_until(Duration::from_secs(20), || {
        last = lin.status_register();
        last.starts_with(&want).then_some(())
    })
    .is_none()
    {
        d.fail(&format!(
            "linphone did not register: last status {last:?}\n--- linphonec log (tail):\n{}",
            tail(&lin.log(), 12000)
        ));
    }

    // the daemon offered SHA-256 only and linphone answered with SHA-256
    let log = lin.log();
    let challenges: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("WWW-Authenticate:"))
        .collect();
    assert!(!challenges.is_empty(), "no challenge in linphone's log");
    for c in &challenges {
        assert!(
            c.contains("algorithm=SHA-256") && !c.contains("MD5"),
            "the daemon offered something other than SHA-256: {c}"
        );
    }
    assert!(
        log.lines()
            .any(|l| l.starts_with("Authorization:") && l.contains("algorithm=SHA-256")),
        "linphone did not answer with a SHA-256 digest"
    );

    // the daemon holds exactly this binding
    assert_eq!(d.bindings_active(), 1.0, "{}", d.metrics());
    let mut c = d.udp_client();
    let mut uac = Uac::new("1001");
    uac.domain = host.clone();
    let pw = password_of("1001");
    let mut opts = RegisterOpts::new(&pw, None);
    opts.algorithm = Some("SHA-256");
    let q = register(&mut c, &mut uac, &opts, "query linphone's AoR").response;
    assert_eq!(q.code, 200, "{}", q.raw);
    assert_binding_listed(&q, "sip:1001@127.0.0.1:", "linphone's binding");

    // unregister removes it
    let (ok, out, err) = lin.csh(&["unregister"]);
    assert!(ok, "linphonecsh unregister failed: {out}{err}");
    if poll_until(Duration::from_secs(10), || {
        (d.bindings_active() == 0.0).then_some(())
    })
    .is_none()
    {
        d.fail(&format!(
            "binding still active after linphonecsh unregister:\n{}\n--- linphonec log (tail):\n{}",
            d.metrics(),
            tail(&lin.log(), 8000)
        ));
    }
}
