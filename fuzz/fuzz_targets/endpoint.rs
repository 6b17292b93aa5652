//! Fuzzes the whole SIP request path without sockets: guard, parse, dispatch, digest
//! credential parsing and verification, the registrar and the location table, reply encoding.
//! Invariant beyond "never panics": any reply we produce parses back as a response.

#![no_main]

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use gridedge::clock::Now;
use gridedge::sip::credentials::{Credential, CredentialTable};
use gridedge::sip::digest::{DigestConfig, NonceKey, Verifier};
use gridedge::sip::endpoint::Endpoint;
use gridedge::sip::guard::{Guard, GuardConfig};
use gridedge::sip::location::{Flow, Transport};
use gridedge::sip::message::{Limits, Message};
use gridedge::sip::registrar::{Registrar, RegistrarConfig};
use libfuzzer_sys::fuzz_target;

fn endpoint() -> &'static Mutex<Endpoint> {
    static EP: OnceLock<Mutex<Endpoint>> = OnceLock::new();
    EP.get_or_init(|| {
        let mut creds = CredentialTable::new();
        creds.insert(
            "1001".into(),
            Credential::from_password("1001", "gridedge", "pw"),
        );
        let registrar = Registrar::new(
            RegistrarConfig {
                domains: HashSet::new(),
                min_expires: 60,
                max_expires: 3600,
                default_expires: 3600,
                max_contacts: 4,
                md5_only_user_agents: vec!["baresip".into()],
            },
            Verifier::new(DigestConfig::default(), NonceKey::from_bytes([9; 32])),
            Arc::new(creds),
        );
        let guard = Guard::new(GuardConfig {
            enabled: false,
            ..GuardConfig::default()
        });
        Mutex::new(Endpoint::new(guard, registrar, Limits::default()))
    })
}

fuzz_target!(|data: &[u8]| {
    let flow = Flow {
        transport: Transport::Udp,
        source: "192.0.2.1:5060".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
        connection: None,
    };
    let mut ep = endpoint().lock().unwrap_or_else(|e| e.into_inner());
    let h = ep.handle(data, &flow, Now::system());
    if let Some((reply, _)) = h.reply {
        let unlimited = Limits {
            max_message_bytes: usize::MAX,
            max_headers: usize::MAX,
            max_line_bytes: usize::MAX,
        };
        match Message::parse(&reply, &unlimited) {
            Ok(Message::Response(_)) => {}
            other => panic!("our reply does not parse as a response: {other:?}"),
        }
    }
});
