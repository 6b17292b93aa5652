//! The HTTP listener's connection cap (`http.max_connections`): connections beyond it wait in
//! the kernel's backlog, unanswered, until a slot frees; the daemon never exceeds the cap.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

#[test]
fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let d = Daemon::start("[http]\nmax_connections = 2\n");
    let addr = d.listeners.http;
    // Two idle keep-alive connections take both slots (each proves it is served).
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
            s
        })
        .collect();
    // A third is accepted by the kernel but not served while both slots are held.
    let mut third = TcpStream::connect(addr).unwrap();
    write!(
        third,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(
        third.read(&mut buf).is_err(),
        "a third connection was served beyond http.max_connections = 2"
    );
    // Freeing one slot lets it through.
    drop(held.pop());
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut out = Vec::new();
    third.read_to_end(&mut out).unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
}

#[test]
fn idle_connections_are_closed_so_they_cannot_hold_every_slot() {
    let d = Daemon::start("[http]\nmax_connections = 1\nidle_timeout_secs = 1\n");
    let addr = d.listeners.http;
    // An idle socket that never sends a byte takes the only slot...
    let mut idle = TcpStream::connect(addr).unwrap();
    // ...and is closed by the daemon after idle_timeout_secs, freeing it for a real request.
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        idle.read(&mut buf).unwrap_or(0),
        0,
        "an idle connection was not closed"
    );
    let (code, body) = http_get(addr, "/healthz").unwrap();
    assert_eq!((code, body.as_str()), (200, "ok\n"));
}
