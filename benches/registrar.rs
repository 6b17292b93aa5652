//! The registrar core handling an authenticated REGISTER end to end without I/O: parse, guard,
//! digest verification (MD5 and SHA-256), binding refresh, 200 OK encoding.

#[path = "../tests/support/uac.rs"]
mod uac;

use std::collections::HashSet;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gridedge::clock::Now;
use gridedge::sip::credentials::{Credential, CredentialTable};
use gridedge::sip::digest::{Algorithm, DigestConfig, NonceKey, Verifier};
use gridedge::sip::endpoint::Endpoint;
use gridedge::sip::guard::{Guard, GuardConfig};
use gridedge::sip::location::{Flow, Transport};
use gridedge::sip::message::{Limits, Message};
use gridedge::sip::registrar::{Registrar, RegistrarConfig};

fn endpoint(alg: Algorithm, users: usize) -> Endpoint {
    let mut creds = CredentialTable::new();
    for i in 0..users {
        let u = format!("{}", 100_000 + i);
        let c = Credential::from_password(&u, "gridedge", "secret");
        creds.insert(u, c);
    }
    let verifier = Verifier::new(
        DigestConfig {
            realm: "gridedge".into(),
            algorithms: vec![alg],
            nonce_lifetime_secs: 300,
            max_tracked_nonces: 1_000_000,
            require_qop: true,
        },
        NonceKey::from_bytes([3; 32]),
    );
    let rc = RegistrarConfig {
        domains: HashSet::new(),
        min_expires: 60,
        max_expires: 3600,
        default_expires: 3600,
        max_contacts: 10,
        md5_only_user_agents: vec!["baresip".into()],
    };
    let guard = Guard::new(GuardConfig {
        allow: vec!["198.51.100.0/24".parse().unwrap()],
        ..GuardConfig::default()
    });
    Endpoint::new(
        guard,
        Registrar::new(rc, verifier, Arc::new(creds)),
        Limits::default(),
    )
}

fn bench(c: &mut Criterion) {
    let flow = Flow {
        transport: Transport::Udp,
        source: "198.51.100.7:40000".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
        connection: None,
    };
    let mut group = c.benchmark_group("registrar");
    group.throughput(Throughput::Elements(1));
    for (name, alg) in [
        ("authenticated_register_md5", Algorithm::Md5),
        ("authenticated_register_sha256", Algorithm::Sha256),
    ] {
        // 10,000 extensions already registered, so lookups hit a populated table.
        let mut ep = endpoint(alg, 10_000);
        let now = Now::system();
        let mut phones: Vec<uac::Uac> = (0..10_000)
            .map(|i| uac::Uac::new(&format!("{}", 100_000 + i), "secret"))
            .collect();
        for p in &mut phones {
            p.contact = format!("<sip:{}@198.51.100.7:40000>", p.user);
            let first = p.register(&[]);
            let (bytes, _) = ep.handle(&first, &flow, now).reply.unwrap();
            let Ok(Message::Response(ch)) = Message::parse(&bytes, &Limits::default()) else {
                panic!()
            };
            p.take_challenge(&ch);
        }
        let mut next = 0usize;
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let n = phones.len();
                    let p = &mut phones[next % n];
                    next += 1;
                    let auth = p.authorization("sip:gridedge.test");
                    let contact = format!("Contact: {}", p.contact);
                    p.register(&[&contact, &auth])
                },
                |req| {
                    let h = ep.handle(&req, &flow, now);
                    debug_assert!(h
                        .reply
                        .as_ref()
                        .is_some_and(|(r, _)| r.starts_with(b"SIP/2.0 200")));
                    h
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
