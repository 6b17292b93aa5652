//! The systemd contract, against the real binary: READY=1 once serving, WATCHDOG=1 at half
//! of WatchdogSec while the SIP core answers, STOPPING=1 on SIGTERM, then a clean exit. The
//! test plays systemd's part with a Unix datagram socket as NOTIFY_SOCKET.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Collects notification datagrams until `want` has been seen or the deadline passes.
fn wait_for(sock: &UnixDatagram, seen: &mut Vec<String>, want: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if seen.iter().any(|m| m.lines().any(|l| l == want)) {
            return true;
        }
        let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    seen.iter().any(|m| m.lines().any(|l| l == want))
}

#[test]
fn ready_watchdog_and_stopping_are_notified() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let config = dir.path().join("gridedge.toml");
    std::fs::write(&config, render_config(&state, "")).unwrap();
    let notify_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify_path).unwrap();
    let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();

    // systemd sets WATCHDOG_PID to the main process; `exec` from a shell keeps its PID, so $$
    // is what the daemon will see as its own.
    let child = Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" run --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_gridedge"))
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        // 400 ms watchdog: the daemon must ping every 200 ms.
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut proc = ProcGuard::new("gridedge", child);
    let logs = || std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();

    let mut seen = Vec::new();
    assert!(
        wait_for(&sock, &mut seen, "READY=1", Duration::from_secs(20)),
        "no READY=1: {seen:?}\n{}",
        logs()
    );
    // READY must mean ready: the listeners file exists and /readyz answers 200.
    let listeners =
        Listeners::parse(&std::fs::read_to_string(state.join("listeners.json")).unwrap()).unwrap();
    assert_eq!(http_get(listeners.http, "/readyz").unwrap().0, 200);

    let before = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    let start = Instant::now();
    while seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() < before + 3
        && start.elapsed() < Duration::from_secs(5)
    {
        let _ = wait_for(&sock, &mut seen, "__never__", Duration::from_millis(150));
    }
    let pings = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() - before;
    assert!(
        pings >= 3,
        "expected WATCHDOG=1 about every 200 ms, got {pings} in {:?}",
        start.elapsed()
    );

    send_signal(proc.pid(), "TERM");
    assert!(
        wait_for(&sock, &mut seen, "STOPPING=1", Duration::from_secs(10)),
        "no STOPPING=1: {seen:?}"
    );
    let status = proc
        .wait_timeout(Duration::from_secs(15))
        .expect("daemon exits after SIGTERM");
    assert!(
        status.success(),
        "graceful stop exits 0, got {status}\n{}",
        logs()
    );
}
