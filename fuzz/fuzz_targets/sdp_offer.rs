//! Fuzzes the recorder's SDP path: offer parsing and answer building. Run with
//! `scripts/fuzz.sh sdp_offer` (cargo-fuzz; see that script for stable toolchains).
//!
//! Beyond "never panics", it checks what the UAS relies on: an answer has exactly one m= line
//! per offered line (RFC 3264 §6), describes one stream slot per line, and parses back as SDP.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use gridedge::media::sdp::{answer, parse_offer, Limits};
use libfuzzer_sys::fuzz_target;

/// Small enough that ordinary inputs hit every limit path.
const SMALL: Limits = Limits {
    max_bytes: 512,
    max_media: 2,
    max_formats: 4,
    max_attributes: 8,
};

fuzz_target!(|data: &[u8]| {
    check(data, &Limits::default());
    check(data, &SMALL);
});

fn check(data: &[u8], limits: &Limits) {
    let Ok(offer) = parse_offer(data, limits) else {
        return;
    };
    assert!(offer.media.len() <= limits.max_media);
    let ports: Vec<u16> = (0..offer.media.len())
        .map(|i| 30000 + 2 * i as u16)
        .collect();
    for (ip, opus) in [
        (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), false),
        (IpAddr::V6(Ipv6Addr::LOCALHOST), true),
    ] {
        let Ok(a) = answer(&offer, ip, &ports, 1, 2, opus) else {
            continue;
        };
        assert_eq!(a.streams.len(), offer.media.len());
        let m_lines = a.sdp.lines().filter(|l| l.starts_with("m=")).count();
        assert_eq!(m_lines, offer.media.len(), "{}", a.sdp);
        // Our header is longer than the shortest possible offer's, so an offer right at the
        // byte limit can give a slightly longer answer; only the size bound is lifted.
        let roomy = Limits {
            max_bytes: usize::MAX,
            ..Limits::default()
        };
        if let Err(e) = parse_offer(a.sdp.as_bytes(), &roomy) {
            panic!("answer does not parse: {e}\n{}", a.sdp);
        }
    }
}
