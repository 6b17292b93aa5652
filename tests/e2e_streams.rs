//! Stream connection lifecycle: an idle connection without a registration is closed, one that
//! carries a binding is kept open however quiet it is (closing it would unregister the phone),
//! and one host cannot hold more than its share of connections.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn idle_connections_close_unless_they_carry_a_binding() {
    let d = Daemon::start("[sip]\nidle_timeout_secs = 1\n");
    let mut idle = TcpConn::connect(d.listeners.tcp());
    let mut phone = TcpConn::connect(d.listeners.tcp());
    let contact = format!("<sip:1004@{};transport=tcp>", phone.sent_by());
    register_ok(&mut phone, "1004", &contact, Some(600), "tcp register");

    assert!(
        idle.wait_closed(Duration::from_secs(5)),
        "an idle unregistered connection is closed"
    );
    // Three idle periods later the registered phone's connection still works.
    std::thread::sleep(Duration::from_secs(3));
    options_ok(&mut phone, "quiet connection carrying a binding");
    assert_eq!(d.bindings_active(), 1.0);
    let refused = d
        .metric(
            "gridedge_sip_connections_refused_total",
            &["reason=\"idle\""],
        )
        .unwrap_or(0.0);
    assert!(
        refused >= 1.0,
        "the idle close is counted:\n{}",
        d.metrics()
    );
}

#[test]
fn one_host_cannot_take_every_connection_slot() {
    let d = Daemon::start("[sip]\nmax_connections_per_ip = 2\n");
    let mut a = TcpConn::connect(d.listeners.tcp());
    let mut b = TcpConn::connect(d.listeners.tcp());
    options_ok(&mut a, "first connection");
    options_ok(&mut b, "second connection");
    let mut c = TcpConn::connect(d.listeners.tcp());
    assert!(
        c.wait_closed(Duration::from_secs(5)),
        "a third connection from the same IP is refused"
    );
    let refused = d
        .metric(
            "gridedge_sip_connections_refused_total",
            &["reason=\"per_ip_limit\""],
        )
        .unwrap_or(0.0);
    assert_eq!(refused, 1.0, "{}", d.metrics());
    // Closing one frees its slot.
    drop(a);
    let mut e = poll_until(Duration::from_secs(5), || {
        let mut e = TcpConn::connect(d.listeners.tcp());
        (!e.wait_closed(Duration::from_millis(300))).then_some(e)
    })
    .expect("a slot frees up when a connection closes");
    options_ok(&mut e, "after a slot was freed");
}
