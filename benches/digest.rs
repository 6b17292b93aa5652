//! Digest authentication hot paths: every REGISTER refresh parses an `Authorization` header
//! and runs `Verifier::verify`, and every unauthenticated request costs a challenge.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use gridedge::sip::digest::{
    compute_response, ha1_hex, issue_nonce, Algorithm, AuthOutcome, DigestConfig,
    DigestCredentials, NonceKey, Qop, Verifier,
};

const REALM: &str = "pbx.example.com";
const USER: &str = "1001";
const PASSWORD: &str = "correct horse battery staple";
const URI: &str = "sip:pbx.example.com;transport=tls";
const CNONCE: &str = "6f1e3c0a9b2d4e7f";
const NOW: u64 = 1_700_000_000;
const KEY: [u8; 32] = [0x5c; 32];

/// A header as a typical desk phone sends it on a REGISTER refresh.
const HEADER: &str = "Digest username=\"1001\", realm=\"pbx.example.com\", \
    nonce=\"AAAAAGVTsQDx2Cq3Qm9yZXR3b3JkcyBhcmUgZnVu\", uri=\"sip:pbx.example.com;transport=tls\", \
    response=\"1f2e3d4c5b6a79881f2e3d4c5b6a7988\", algorithm=MD5, cnonce=\"6f1e3c0a9b2d4e7f\", \
    qop=auth, nc=0000002a";

fn client_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 23))
}

fn bench_parse(c: &mut Criterion) {
    assert!(DigestCredentials::parse(HEADER).is_ok());
    c.bench_function("digest/parse_authorization", |b| {
        b.iter(|| DigestCredentials::parse(black_box(HEADER)))
    });
}

/// Builds valid credentials for `nonce` with nonce-count `nc`, as the phone would.
fn credentials(alg: Algorithm, ha1: &str, nonce: &str, nc: u32) -> DigestCredentials {
    let response = compute_response(
        alg,
        ha1,
        "REGISTER",
        URI,
        nonce,
        Some((Qop::Auth, nc, CNONCE)),
        b"",
    );
    DigestCredentials {
        username: USER.to_owned(),
        realm: REALM.to_owned(),
        nonce: nonce.to_owned(),
        uri: URI.to_owned(),
        response,
        algorithm: alg,
        session: false,
        cnonce: Some(CNONCE.to_owned()),
        opaque: None,
        qop: Some(Qop::Auth),
        nc: Some(nc),
        userhash: false,
    }
}

fn bench_verify(c: &mut Criterion, alg: Algorithm, name: &str) {
    let cfg = DigestConfig {
        realm: REALM.to_owned(),
        algorithms: vec![alg],
        nonce_lifetime_secs: 3600,
        max_tracked_nonces: 100_000,
        require_qop: true,
    };
    let mut verifier = Verifier::new(cfg, NonceKey::from_bytes(KEY));
    let nonce = issue_nonce(&NonceKey::from_bytes(KEY), NOW, client_ip());
    let ha1 = ha1_hex(alg, USER, REALM, PASSWORD);
    let lookup = |_: &str, _: Algorithm| Some(ha1.clone());

    // Make sure the benchmark measures the success path, not a rejection.
    let first = credentials(alg, &ha1, &nonce, 1);
    let outcome = verifier.verify(&first, "REGISTER", b"", client_ip(), NOW, lookup);
    assert!(
        matches!(outcome, AuthOutcome::Authenticated { .. }),
        "{outcome:?}"
    );

    // Each iteration uses the next nonce-count so it is never a replay; building the
    // credentials (the client's work) happens in setup, outside the measurement.
    let mut nc = 1u32;
    c.bench_function(name, |b| {
        b.iter_batched(
            || {
                nc += 1;
                credentials(alg, &ha1, &nonce, nc)
            },
            |creds| {
                let out = verifier.verify(&creds, "REGISTER", b"", client_ip(), NOW, lookup);
                debug_assert!(matches!(out, AuthOutcome::Authenticated { .. }));
                out
            },
            BatchSize::SmallInput,
        )
    });
}

fn bench_verify_md5(c: &mut Criterion) {
    bench_verify(c, Algorithm::Md5, "digest/verify_md5_qop_auth");
}

fn bench_verify_sha256(c: &mut Criterion) {
    bench_verify(c, Algorithm::Sha256, "digest/verify_sha256_qop_auth");
}

fn bench_challenge(c: &mut Criterion) {
    let cfg = DigestConfig {
        realm: REALM.to_owned(),
        algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
        ..DigestConfig::default()
    };
    let verifier = Verifier::new(cfg, NonceKey::from_bytes(KEY));
    c.bench_function("digest/challenge_sha256_md5", |b| {
        b.iter(|| verifier.challenge(black_box(NOW), black_box(client_ip()), false))
    });
}

criterion_group!(
    benches,
    bench_parse,
    bench_verify_md5,
    bench_verify_sha256,
    bench_challenge
);
criterion_main!(benches);
