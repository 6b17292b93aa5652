//! Fuzzes the recording media path: arbitrary datagrams into `Stream::push` / `drain` /
//! `finish` (RTP parsing, extended sequence numbers, reordering, timestamp placement, SSRC
//! changes, DTMF, G.711 and G.722 decoding). Run with `scripts/fuzz.sh rtp_packet`.
//!
//! Input: a sequence of records `[dt: u8][len: u8][len bytes]`; `dt` advances the clock in
//! ms. Beyond "never panics": the reorder buffer stays within its bound and the output grows
//! exactly by what the stream says it emitted.

#![no_main]

use gridedge::media::codec::Codec;
use gridedge::media::jitter::{Stream, StreamConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut cfg = StreamConfig::new(
        vec![(0, Codec::Pcmu), (8, Codec::Pcma), (9, Codec::G722)],
        Some(101),
    );
    cfg.max_packets = 32;
    let mut s = Stream::new(cfg);
    let mut out = Vec::new();
    let mut now = 0u64;
    let mut rest = data;
    while rest.len() >= 2 {
        now += rest[0] as u64;
        let len = (rest[1] as usize).min(rest.len() - 2);
        let dgram = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let _ = s.push(dgram, now);
        assert!(s.pending() <= 32);
        s.drain(now, &mut out);
        assert_eq!(out.len() as u64, s.emitted());
        // Keep memory bounded for long inputs.
        if out.len() > 1 << 20 {
            out.clear();
            break;
        }
    }
    s.finish(&mut out);
});
