//! Hot-path cost of the SIP wire model: parsing a REGISTER as a registrar receives it,
//! interpreting its Via and Contact headers, and writing the 200 OK back.
//!
//! Run with `cargo bench --bench sip_parse`. The registrar's budget is >50k registrations per
//! CPU-second, i.e. 20 µs for everything; these pieces should stay a small fraction of that.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gridedge::sip::header::{parse_contacts, parse_vias};
use gridedge::sip::message::{reason_phrase, HeaderName, Limits, Message, Response};

/// A REGISTER as a softphone sends it over TLS on its second (authenticated) attempt.
const REGISTER: &[u8] = b"REGISTER sip:pbx.example.com SIP/2.0\r\n\
Via: SIP/2.0/TLS 192.0.2.10:49152;rport;branch=z9hG4bK-524287-1---a1b2c3d4e5f60718;alias\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:1001@192.0.2.10:49152;transport=tls;ob>;reg-id=1;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\"\r\n\
To: <sip:1001@pbx.example.com>\r\n\
From: \"Agent 1001\" <sip:1001@pbx.example.com>;tag=8a7d3c21\r\n\
Call-ID: 5f1e7c9a2b3d4e6f8a9b0c1d2e3f4a5b\r\n\
CSeq: 2 REGISTER\r\n\
Expires: 3600\r\n\
Supported: replaces, outbound, path, gruu\r\n\
User-Agent: Softphone 5.2.1\r\n\
Authorization: Digest username=\"1001\", realm=\"pbx.example.com\", nonce=\"5fa1c0e3b2d94c7e\", uri=\"sip:pbx.example.com;transport=tls\", response=\"0c9a8b7d6e5f40312a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5\", algorithm=SHA-256, qop=auth, nc=0000000a, cnonce=\"c0ffee42\"\r\n\
Content-Length: 0\r\n\
\r\n";

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let message = Message::parse(REGISTER, &limits).expect("benchmark REGISTER must parse");

    let mut group = c.benchmark_group("sip_parse");
    group.throughput(Throughput::Bytes(REGISTER.len() as u64));
    group.bench_function("message_parse_register", |b| {
        b.iter(|| Message::parse(black_box(REGISTER), &limits))
    });
    group.finish();

    c.bench_function("parse_vias_and_contacts", |b| {
        b.iter(|| {
            let headers = black_box(&message).headers();
            let vias = parse_vias(headers.get_all(&HeaderName::Via));
            let contacts = parse_contacts(headers.get_all(&HeaderName::Contact));
            (vias, contacts)
        })
    });

    let Message::Request(request) = message else {
        panic!("benchmark message is a request");
    };
    let mut ok = Response::reply_to(&request, 200, reason_phrase(200));
    ok.headers.push(
        HeaderName::Contact,
        "<sip:1001@192.0.2.10:49152;transport=tls;ob>;expires=3600;reg-id=1;\
         +sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\"",
    );
    ok.headers.push(
        HeaderName::Contact,
        "<sip:1001@198.51.100.23:5060;transport=udp>;expires=1200",
    );
    ok.headers.push(HeaderName::Expires, "3600");
    let mut out = Vec::with_capacity(1024);
    c.bench_function("response_write_to_200_ok_2_contacts", |b| {
        b.iter(|| {
            out.clear();
            black_box(&ok).write_to(&mut out);
            black_box(out.len())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
