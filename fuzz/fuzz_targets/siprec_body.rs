//! Fuzzes SIPREC INVITE bodies: the multipart split, rs-metadata XML and the channel map.
//! Run with `scripts/fuzz.sh siprec_body` (cargo-fuzz; see that script for stable toolchains).
//!
//! The first byte picks the Content-Type (so boundaries of every shape get exercised); the
//! rest is the body. Every part is also fed to the metadata parser, and the raw input too, so
//! the XML parser sees both well-framed and arbitrary documents.

#![no_main]

use gridedge::media::siprec::{channel_map, parse_metadata, split_multipart, MAX_PARTS};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [&str; 4] = [
    "multipart/mixed;boundary=b1",
    "multipart/mixed; boundary=\"unique boundary-1\"",
    "Multipart/Mixed ; charset=utf-8 ; boundary=--",
    "multipart/related;boundary=a'()+_,-./:=?",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    if let Ok(parts) = split_multipart(content_type, body) {
        assert!(parts.parts.len() <= MAX_PARTS);
        for part in &parts.parts {
            assert!(part.body.len() <= body.len());
            check_metadata(&part.body);
        }
    }
    check_metadata(body);
});

fn check_metadata(xml: &[u8]) {
    let Ok(meta) = parse_metadata(xml) else {
        return;
    };
    let labels: Vec<Option<String>> = meta
        .streams
        .iter()
        .map(|s| s.label.clone())
        .chain([None])
        .collect();
    let roles = channel_map(&meta, &labels, |user| user.len() % 2 == 0);
    assert_eq!(roles.len(), labels.len());
}
