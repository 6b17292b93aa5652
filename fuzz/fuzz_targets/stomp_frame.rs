//! Fuzzes the event-stream wire path: SockJS client messages and STOMP framing, parsing and
//! serialization. Run with `scripts/fuzz.sh stomp_frame` (cargo-fuzz; see that script for
//! stable toolchains).
//!
//! Beyond "never panics", it checks the invariants the WebSocket shell relies on: every unit
//! consumes at least one byte and never more than it was given or the frame limit allows,
//! whatever decodes re-encodes into something that decodes to the same frame, how the bytes
//! are split across pushes never changes what decodes, and the SockJS parser honours its cap.

#![no_main]

use gridedge::api::sockjs::parse_client_message;
use gridedge::api::stomp::{decode, Decoded, Decoder, Frame, Limits, StompError};
use libfuzzer_sys::fuzz_target;

/// Reparsing our own output must not trip limits the original squeaked under: encoding adds a
/// content-length header and escapes grow header text.
const UNLIMITED: Limits = Limits {
    max_frame_bytes: usize::MAX,
    max_headers: usize::MAX,
    max_header_bytes: usize::MAX,
};

/// Small enough that ordinary inputs hit every limit path.
const SMALL: Limits = Limits {
    max_frame_bytes: 256,
    max_headers: 4,
    max_header_bytes: 64,
};

const MAX_SOCKJS_MESSAGES: usize = 8;

fuzz_target!(|data: &[u8]| {
    for limits in [Limits::default(), SMALL] {
        let whole = check_stream(data, &limits);
        // Split at a point the input itself picks, so the fuzzer can steer it.
        let split = data
            .first()
            .map_or(0, |&b| usize::from(b) % (data.len() + 1));
        let (head, tail) = data.split_at(split);
        assert_eq!(
            decode_pushed(&[head, tail], limits),
            whole,
            "split at {split}"
        );
    }

    let text = String::from_utf8_lossy(data);
    if let Ok(payloads) = parse_client_message(&text, MAX_SOCKJS_MESSAGES) {
        assert!(payloads.len() <= MAX_SOCKJS_MESSAGES);
        // What the shell does with them: one decoder per session, fed chunk by chunk.
        let chunks: Vec<&[u8]> = payloads.iter().map(|p| p.as_bytes()).collect();
        let _ = decode_pushed(&chunks, Limits::default());
    }
});

/// Decodes `data` unit by unit the way a shell with its own buffer would, checking every
/// frame; returns the frames (heart-beats left out: how EOLs group depends on the split) and
/// the error that stopped decoding, if any.
fn check_stream(data: &[u8], limits: &Limits) -> (Vec<Frame>, Option<StompError>) {
    let mut frames = Vec::new();
    let mut rest = data;
    loop {
        match decode(rest, limits) {
            Ok(Some((unit, consumed))) => {
                assert!(consumed > 0 && consumed <= rest.len());
                if let Decoded::Frame(frame) = unit {
                    assert!(consumed <= limits.max_frame_bytes);
                    check_round_trip(&frame);
                    frames.push(frame);
                }
                rest = &rest[consumed..];
            }
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

fn check_round_trip(frame: &Frame) {
    let wire = frame.encode();
    let reparsed = match Frame::parse(&wire, &UNLIMITED) {
        Ok(Some((reparsed, consumed))) => {
            assert_eq!(consumed, wire.len());
            reparsed
        }
        other => panic!("encoded frame does not parse: {other:?}"),
    };
    // Encoding replaces any content-length with the body's real length (omitted when empty).
    assert_eq!(
        without_content_length(reparsed.clone()),
        without_content_length(frame.clone())
    );
    assert_eq!(reparsed.encode(), wire, "encoding is not canonical");
}

fn without_content_length(mut frame: Frame) -> Frame {
    frame.headers.retain(|(name, _)| name != "content-length");
    frame
}

fn decode_pushed(chunks: &[&[u8]], limits: Limits) -> (Vec<Frame>, Option<StompError>) {
    let mut decoder = Decoder::new(limits);
    let mut frames = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        loop {
            match decoder.next_decoded() {
                Ok(Some(Decoded::Frame(frame))) => frames.push(frame),
                Ok(Some(Decoded::HeartBeat)) => {}
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
        // Whatever is left is the start of one frame that has not outgrown the limit yet.
        assert!(decoder.buffered() < limits.max_frame_bytes);
    }
    (frames, None)
}
