//! Fuzzes the FreeSWITCH Event Socket wire path: framing, then event parsing of whatever the
//! content type says is an event. Run with `scripts/fuzz.sh esl_frame` (cargo-fuzz; see that
//! script for stable toolchains).
//!
//! Beyond "never panics", it checks the invariants the socket shell relies on: how the bytes
//! are split across pushes never changes what decodes (or which error stops it), a failed
//! decoder stays failed, buffering never exceeds what the limits allow, and every decoded
//! body has exactly its declared Content-Length. Every event that parses is also read as a
//! hang-up leg both ways (in place, and through the owned CDR document), which must agree.

#![no_main]

use gridedge::switch::esl::{EslDecoder, EslError, EslEvent, EslMessage, Limits};
use gridedge::switch::leg::{Leg, LegVariables};
use gridedge::switch::raw_cdr::RawCdr;
use libfuzzer_sys::fuzz_target;

/// Small enough that ordinary inputs hit every limit path.
const SMALL: Limits = Limits {
    max_header_bytes: 64,
    max_headers: 4,
    max_body_bytes: 128,
};

fuzz_target!(|data: &[u8]| {
    for limits in [Limits::default(), SMALL] {
        let whole = decode_pushed(&[data], limits);
        // Split at a point the input itself picks, so the fuzzer can steer it.
        let split = data
            .first()
            .map_or(0, |&b| usize::from(b) % (data.len() + 1));
        let (head, tail) = data.split_at(split);
        let parts = decode_pushed(&[head, tail], limits);
        assert_eq!(parts, whole, "split at {split}");

        for message in &whole.0 {
            check_message(message);
            if message.content_type().is_event() {
                if let Ok(event) = EslEvent::from_message(message) {
                    check_event(&event);
                }
            }
        }
    }
    // Body-only parsers see arbitrary bytes too (captures and mod_amqp payloads).
    for event in [EslEvent::parse_plain(data), EslEvent::parse_json(data)]
        .into_iter()
        .flatten()
    {
        check_event(&event);
    }
});

fn check_event(event: &EslEvent) {
    let vars = LegVariables::default();
    assert_eq!(
        Leg::from_hangup_event(event, &vars),
        Leg::from_raw(&RawCdr::from_hangup_event(event), &vars),
        "the leg read in place matches the document's"
    );
}

fn check_message(message: &EslMessage) {
    let declared = message
        .header("Content-Length")
        .map_or(Some(0), |v| v.parse::<usize>().ok());
    assert_eq!(
        declared,
        Some(message.body.len()),
        "body matches Content-Length"
    );
    let _ = message
        .as_reply()
        .map(|r| (r.is_ok(), r.error_text(), r.job_uuid()));
}

fn decode_pushed(chunks: &[&[u8]], limits: Limits) -> (Vec<EslMessage>, Option<EslError>) {
    let mut decoder = EslDecoder::new(limits);
    let mut messages = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => break,
                Err(e) => {
                    // Failed for good: more input changes nothing.
                    decoder.push(b"Content-Type: auth/request\n\n");
                    assert_eq!(decoder.next_message(), Err(e.clone()));
                    return (messages, Some(e));
                }
            }
        }
        // What is left is one incomplete message within the limits: a header block no larger
        // than the header limit, or a parsed header plus part of an allowed body.
        assert!(
            decoder.buffered()
                <= limits
                    .max_header_bytes
                    .saturating_add(limits.max_body_bytes)
        );
    }
    (messages, None)
}
