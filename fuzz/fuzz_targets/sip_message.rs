//! Fuzzes the SIP wire model end to end: framing, parsing, salvage, the typed header views,
//! and serialization. Run with `scripts/fuzz.sh sip_message` (cargo-fuzz; see that script for stable toolchains).
//!
//! Beyond "never panics", it checks the invariants other components rely on: whatever parses
//! serializes into something that parses back to the same message, typed header values
//! survive `Display`, and frames never claim more bytes than they were given.

#![no_main]

use gridedge::sip::framing::{next_frame, Frame};
use gridedge::sip::header::{parse_contacts, parse_vias, CSeq, ContactValue, NameAddr, Via};
use gridedge::sip::message::{
    reason_phrase, salvage_for_reply, HeaderName, Limits, Message, Response,
};
use libfuzzer_sys::fuzz_target;

/// Reparsing our own output must not trip limits the original squeaked under: compact names
/// expand, folded lines join, and a Content-Length header may be added.
const UNLIMITED: Limits = Limits {
    max_message_bytes: usize::MAX,
    max_headers: usize::MAX,
    max_line_bytes: usize::MAX,
};

/// Small enough that ordinary inputs hit every limit path.
const SMALL: Limits = Limits {
    max_message_bytes: 512,
    max_headers: 8,
    max_line_bytes: 96,
};

fuzz_target!(|data: &[u8]| {
    check(data, &Limits::default());
    check(data, &SMALL);
});

fn check(data: &[u8], limits: &Limits) {
    if let Ok(Some(frame)) = next_frame(data, limits) {
        assert!(frame.wire_len() <= data.len());
        if let Frame::Message(len) = frame {
            assert!(len <= limits.max_message_bytes);
            if let Some(framed) = data.get(..len) {
                let _ = Message::parse(framed, limits);
            }
        }
    }

    if let Some(request) = salvage_for_reply(data, limits) {
        let reply = Response::reply_to(&request, 400, reason_phrase(400));
        let reparsed = Message::parse(&reply.to_bytes(), &UNLIMITED);
        assert!(
            reparsed.is_ok(),
            "salvaged reply does not parse: {reparsed:?}"
        );
    }

    let Ok(message) = Message::parse(data, limits) else {
        return;
    };
    check_typed_headers(&message);

    let bytes = message.to_bytes();
    let mut reparsed = match Message::parse(&bytes, &UNLIMITED) {
        Ok(reparsed) => reparsed,
        Err(e) => panic!("serialized message does not parse: {e}"),
    };
    let mut original = message;
    original.headers_mut().remove(&HeaderName::ContentLength);
    reparsed.headers_mut().remove(&HeaderName::ContentLength);
    assert_eq!(reparsed, original);
}

fn check_typed_headers(message: &Message) {
    let headers = message.headers();
    if let Ok(vias) = parse_vias(headers.get_all(&HeaderName::Via)) {
        for via in vias {
            assert_eq!(Via::parse(&via.to_string()), Ok(via));
        }
    }
    if let Ok(ContactValue::List(contacts)) = parse_contacts(headers.get_all(&HeaderName::Contact))
    {
        for contact in contacts {
            assert_eq!(NameAddr::parse(&contact.to_string()), Ok(contact));
        }
    }
    for name in [HeaderName::From, HeaderName::To] {
        if let Some(Ok(addr)) = headers.get(&name).map(NameAddr::parse) {
            assert_eq!(NameAddr::parse(&addr.to_string()), Ok(addr));
        }
    }
    if let Some(Ok(cseq)) = headers.get(&HeaderName::CSeq).map(CSeq::parse) {
        assert_eq!(CSeq::parse(&cseq.to_string()), Ok(cseq));
    }
}
