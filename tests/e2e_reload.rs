//! SIGHUP reloads what can change live: credentials (a changed password, a removed extension,
//! a disabled one), guard settings and the log filter; an invalid file is refused and the
//! running configuration kept.

mod common;

use std::fs;
use std::time::Duration;

use common::*;

fn reload(d: &Daemon, new_config: &str, expect_log: &str) {
    let before = d.logs().matches(expect_log).count();
    fs::write(&d.config_path, new_config).unwrap();
    send_signal(d.pid(), "HUP");
    poll_until(Duration::from_secs(10), || {
        (d.logs().matches(expect_log).count() > before).then_some(())
    })
    .unwrap_or_else(|| d.fail(&format!("no '{expect_log}' in the log after SIGHUP")));
}

#[test]
fn sighup_applies_credentials_and_guard_and_refuses_a_bad_file() {
    let mut d = Daemon::start("[log]\nlevel = \"info\"\n");
    let mut c = d.udp_client();
    let contact = format!("<sip:1001@{}>", c.local_addr());
    register_ok(&mut c, "1001", &contact, None, "before reload");
    let contact_1002 = format!("<sip:1002@{}>", c.local_addr());
    register_ok(&mut c, "1002", &contact_1002, None, "1002 before reload");
    assert_eq!(d.bindings_active(), 2.0);

    // New password for 1001, 1002 removed, 1003 disabled, debug logging on.
    let base = fs::read_to_string(&d.config_path).unwrap();
    let mut table: toml::Table = base.parse().unwrap();
    let exts = table
        .get_mut("extensions")
        .and_then(|v| v.as_array_mut())
        .unwrap();
    exts.retain(|e| e.get("user").and_then(|u| u.as_str()) != Some("1002"));
    for e in exts.iter_mut() {
        let t = e.as_table_mut().unwrap();
        match t.get("user").and_then(|u| u.as_str()) {
            Some("1001") => {
                t.insert("password".into(), "rotated-1001".into());
            }
            Some("1003") => {
                t.insert("enabled".into(), false.into());
            }
            _ => {}
        }
    }
    table["log"]
        .as_table_mut()
        .unwrap()
        .insert("level".into(), "debug".into());
    // A much lower flood limit, live.
    table["sip"]["guard"]
        .as_table_mut()
        .unwrap()
        .insert("max_requests".into(), 3.into());
    reload(&d, &table.to_string(), "configuration reloaded");

    // 1002's binding went with its extension, and it can no longer register.
    assert_eq!(
        d.bindings_active(),
        1.0,
        "the removed extension's binding is gone"
    );
    let mut uac = Uac::new("1002");
    let pw = password_of("1002");
    let r = register(
        &mut c,
        &mut uac,
        &RegisterOpts::new(&pw, Some(contact.clone())),
        "removed",
    )
    .response;
    assert_eq!(
        r.code, 401,
        "a removed extension is refused like any unknown user"
    );

    // The old password no longer works; the new one does.
    let mut uac = Uac::new("1001");
    let old = password_of("1001");
    let r = register(
        &mut c,
        &mut uac,
        &RegisterOpts::new(&old, Some(contact.clone())),
        "old pw",
    )
    .response;
    assert_eq!(r.code, 401, "old password refused after the reload");
    let mut uac = Uac::new("1001");
    let r = register(
        &mut c,
        &mut uac,
        &RegisterOpts::new("rotated-1001", Some(contact.clone())),
        "new pw",
    )
    .response;
    assert_eq!(r.code, 200, "new password accepted:\n{}", r.raw);

    // 1003 is disabled: it authenticates but is refused.
    let mut uac = Uac::new("1003");
    let pw3 = password_of("1003");
    let r = register(
        &mut c,
        &mut uac,
        &RegisterOpts::new(&pw3, Some(contact.clone())),
        "disabled",
    )
    .response;
    assert_eq!(r.code, 403);

    // The guard took the new flood limit: a fourth request within the window bans the source.
    let mut flooder = UdpConn::new("127.0.0.6", d.listeners.udp());
    let mut probe = Uac::new("flood");
    for _ in 0..6 {
        let m = probe.request(&flooder, "OPTIONS", &[], "");
        flooder.send(m.as_bytes()).unwrap();
    }
    let mut answered = 0;
    while flooder.recv_response(SILENCE).is_some() {
        answered += 1;
    }
    assert_eq!(answered, 3, "max_requests = 3 after the reload");

    // The log filter changed live: debug lines now appear.
    poll_until(Duration::from_secs(5), || {
        d.logs().contains("DEBUG").then_some(())
    })
    .unwrap_or_else(|| d.fail("log level did not change to debug"));

    // A broken file is refused, the daemon keeps serving with what it had.
    let before = d.logs().matches("reload refused").count();
    fs::write(&d.config_path, "[sip]\nmin_expires_secs = \"soon\"\n").unwrap();
    send_signal(d.pid(), "HUP");
    poll_until(Duration::from_secs(10), || {
        (d.logs().matches("reload refused").count() > before).then_some(())
    })
    .unwrap_or_else(|| d.fail("an invalid config on SIGHUP was not refused"));
    assert!(
        d.logs().contains("min_expires_secs"),
        "the refusal names the key"
    );
    d.assert_alive("after a refused reload");
    let mut uac = Uac::new("1001");
    let r = register(
        &mut c,
        &mut uac,
        &RegisterOpts::new("rotated-1001", Some(contact)),
        "after refusal",
    )
    .response;
    assert_eq!(r.code, 200);
}
