//! SockJS framing for the `/callcenter/ws` endpoint, sans-IO, WebSocket transport only.
//!
//! sockjs-client first GETs `{base}/info`, then opens a WebSocket at
//! `{base}/{server_id}/{session_id}/websocket`. On that socket the server speaks SockJS frames
//! (`o`, `h`, `a[...]`, `c[...]`) and the client sends JSON arrays of strings; each string is
//! a chunk of the STOMP stream (see `stomp`). Only the WebSocket transport is modelled: the
//! HTTP streaming and polling fallbacks exist for browsers without WebSocket, which the agent
//! desktops do not run.
//!
//! Reference: sockjs-protocol 0.3.3.

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt::{self, Write as _};

/// Sent once, first, when the session opens.
pub const OPEN: &str = "o";

/// Keeps proxies from closing an idle socket; sockjs-client expects one every ~25 s.
pub const HEARTBEAT: &str = "h";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SockJsError {
    /// The protocol says to drop the connection without a close frame in this case.
    #[error("broken JSON encoding: {0}")]
    BrokenJson(String),
    #[error("expected a JSON array of strings or a single JSON string")]
    NotStrings,
    #[error("more than {limit} messages in one SockJS frame")]
    TooManyMessages { limit: usize },
}

/// Body of `GET {base}/info`.
///
/// `entropy` must be fresh and unpredictable per request: sockjs-client seeds its session-id
/// generator with it because browsers of its era lacked a good random source.
/// `cookie_needed` is false because the WebSocket transport needs no sticky sessions.
pub fn info_json(entropy: u32) -> String {
    format!(r#"{{"websocket":true,"origins":["*:*"],"cookie_needed":false,"entropy":{entropy}}}"#)
}

/// `a[...]`: delivers each payload as one message to the client.
pub fn message_frame(payloads: &[&str]) -> String {
    let mut out = String::with_capacity(3 + payloads.iter().map(|p| p.len() + 3).sum::<usize>());
    out.push_str("a[");
    for (i, payload) in payloads.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, payload);
    }
    out.push(']');
    out
}

/// `c[code,"reason"]`: the last frame before the server closes (3000 "Go away!" is the
/// conventional application close).
pub fn close_frame(code: u16, reason: &str) -> String {
    let mut out = format!("c[{code},");
    push_json_string(&mut out, reason);
    out.push(']');
    out
}

/// JSON-encodes `text`, also escaping the characters sockjs-protocol requires servers to
/// escape: sockjs-client's older transports evaluate frames as JavaScript, where U+2028/U+2029
/// end a line, and browsers mangle the other zero-width and specials-block characters.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0}'..='\u{1f}'
            | '\u{200c}'..='\u{200f}'
            | '\u{2028}'..='\u{202f}'
            | '\u{2060}'..='\u{206f}'
            | '\u{fff0}'..='\u{ffff}' => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Decodes one WebSocket text message from the client into its payload strings.
///
/// sockjs-client sends a JSON array of strings; the protocol also allows a single JSON string.
/// An empty message is ignored (the protocol says so), giving no payloads. More than
/// `max_messages` strings is refused as it is read, before the rest is allocated.
pub fn parse_client_message(text: &str, max_messages: usize) -> Result<Vec<String>, SockJsError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let too_many = Cell::new(false);
    let seed = Payloads {
        max: max_messages,
        too_many: &too_many,
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = seed
        .deserialize(&mut deserializer)
        .and_then(|payloads| deserializer.end().map(|()| payloads));
    parsed.map_err(|e| {
        if too_many.get() {
            SockJsError::TooManyMessages {
                limit: max_messages,
            }
        } else if e.classify() == serde_json::error::Category::Data {
            SockJsError::NotStrings
        } else {
            SockJsError::BrokenJson(e.to_string())
        }
    })
}

/// Deserializes straight into the payload list so the count can be enforced mid-array; a
/// flag, not the error text, tells the caller which refusal it was.
struct Payloads<'a> {
    max: usize,
    too_many: &'a Cell<bool>,
}

impl Payloads<'_> {
    fn refuse<E: de::Error>(&self) -> E {
        self.too_many.set(true);
        E::custom("too many messages")
    }
}

impl<'de> DeserializeSeed<'de> for Payloads<'_> {
    type Value = Vec<String>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Payloads<'_> {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of strings or a single JSON string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        self.visit_string(text.to_owned())
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        if self.max == 0 {
            return Err(self.refuse());
        }
        Ok(vec![text])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut payloads = Vec::new();
        while let Some(payload) = seq.next_element::<String>()? {
            if payloads.len() >= self.max {
                return Err(self.refuse());
            }
            payloads.push(payload);
        }
        Ok(payloads)
    }
}

/// Splits `{server_id}/{session_id}/websocket` (what follows the endpoint prefix; one leading
/// `/` is tolerated). Both ids may be anything but empty or containing a dot, as the protocol
/// says: the server id only steers load balancers and the session id is opaque, so neither is
/// interpreted further (a WebSocket session lives exactly as long as its socket).
pub fn parse_session_path(path_after_prefix: &str) -> Option<(&str, &str)> {
    let path = path_after_prefix
        .strip_prefix('/')
        .unwrap_or(path_after_prefix);
    let mut parts = path.split('/');
    let (server, session, transport) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || transport != "websocket" {
        return None;
    }
    let valid = |id: &str| !id.is_empty() && !id.contains('.');
    (valid(server) && valid(session)).then_some((server, session))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stomp::{self, Command, Decoded, Decoder, Frame, Limits};
    use proptest::prelude::*;

    fn decode_json(frame: &str) -> Vec<String> {
        serde_json::from_str(frame).expect("valid JSON")
    }

    #[test]
    fn info_response() {
        assert_eq!(
            info_json(1234567),
            r#"{"websocket":true,"origins":["*:*"],"cookie_needed":false,"entropy":1234567}"#
        );
        let info: serde_json::Value = serde_json::from_str(&info_json(u32::MAX)).unwrap();
        assert_eq!(info["entropy"], u64::from(u32::MAX));
        assert_eq!(info["websocket"], true);
        assert_eq!(info["origins"][0], "*:*");
    }

    #[test]
    fn server_frames() {
        assert_eq!(OPEN, "o");
        assert_eq!(HEARTBEAT, "h");
        assert_eq!(message_frame(&[]), "a[]");
        assert_eq!(message_frame(&["a", "b"]), r#"a["a","b"]"#);
        assert_eq!(close_frame(3000, "Go away!"), r#"c[3000,"Go away!"]"#);
        assert_eq!(
            close_frame(2010, "Another connection still open"),
            r#"c[2010,"Another connection still open"]"#
        );
        assert_eq!(close_frame(1002, "say \"hi\""), r#"c[1002,"say \"hi\""]"#);
    }

    #[test]
    fn stomp_frame_inside_message_frame() {
        let connected = Frame::connected("1.1", (0, 0), "gridedge").encode();
        let connected = String::from_utf8(connected).unwrap();
        assert_eq!(
            message_frame(&[&connected]),
            r#"a["CONNECTED\nversion:1.1\nheart-beat:0,0\nserver:gridedge\n\n\u0000"]"#
        );
    }

    #[test]
    fn server_escapes_what_the_protocol_requires() {
        let tricky = "\u{2028}\u{2029}\u{200c}\u{2060}\u{fff0}\u{ffff}\u{1}\u{1f}\t\\\"/é😀";
        let frame = message_frame(&[tricky]);
        assert_eq!(
            frame,
            "a[\"\\u2028\\u2029\\u200c\\u2060\\ufff0\\uffff\\u0001\\u001f\\t\\\\\\\"/é😀\"]"
        );
        assert_eq!(decode_json(&frame[1..]), vec![tricky.to_string()]);
    }

    #[test]
    fn client_messages() {
        assert_eq!(parse_client_message(r#"["a"]"#, 8), Ok(vec!["a".into()]));
        assert_eq!(
            parse_client_message(r#"["a","b"]"#, 8),
            Ok(vec!["a".into(), "b".into()])
        );
        assert_eq!(parse_client_message(r#" [ ] "#, 8), Ok(vec![]));
        assert_eq!(
            parse_client_message(r#""single""#, 8),
            Ok(vec!["single".into()])
        );
        assert_eq!(parse_client_message("", 8), Ok(vec![]));
        // Escapes sockjs-client applies to protect characters browsers mangle.
        assert_eq!(
            parse_client_message(r#"["\u0000\u2028\ud83d\ude00\"\\"]"#, 8),
            Ok(vec!["\0\u{2028}😀\"\\".into()])
        );
    }

    #[test]
    fn client_messages_refused() {
        for broken in [
            r#"["a"#,
            "[",
            "x",
            " ",
            r#"["a"]x"#,
            r#"["a"]["b"]"#,
            r#"["\x"]"#,
        ] {
            assert!(
                matches!(
                    parse_client_message(broken, 8),
                    Err(SockJsError::BrokenJson(_))
                ),
                "{broken:?}"
            );
        }
        for wrong in [
            "{}",
            "[1]",
            "null",
            "true",
            "3",
            r#"[["a"]]"#,
            r#"["a",null]"#,
            r#"{"a":"b"}"#,
        ] {
            assert_eq!(
                parse_client_message(wrong, 8),
                Err(SockJsError::NotStrings),
                "{wrong:?}"
            );
        }
        assert_eq!(
            parse_client_message(r#"["a","b","c"]"#, 2),
            Err(SockJsError::TooManyMessages { limit: 2 })
        );
        assert_eq!(
            parse_client_message(r#"["a","b"]"#, 2).map(|v| v.len()),
            Ok(2)
        );
        assert_eq!(
            parse_client_message(r#""a""#, 0),
            Err(SockJsError::TooManyMessages { limit: 0 })
        );
        assert_eq!(parse_client_message("[]", 0), Ok(vec![]));
        // Lone surrogates cannot become a Rust string.
        assert!(matches!(
            parse_client_message(r#"["\ud800"]"#, 8),
            Err(SockJsError::BrokenJson(_))
        ));
        assert_eq!(
            SockJsError::NotStrings.to_string(),
            "expected a JSON array of strings or a single JSON string"
        );
        let deep = "[".repeat(10_000);
        assert!(parse_client_message(&deep, 8).is_err());
    }

    #[test]
    fn session_paths() {
        assert_eq!(
            parse_session_path("123/abcdefgh/websocket"),
            Some(("123", "abcdefgh"))
        );
        assert_eq!(parse_session_path("/000/x/websocket"), Some(("000", "x")));
        assert_eq!(parse_session_path("_/_/websocket"), Some(("_", "_")));
        assert_eq!(
            parse_session_path("abcdefgh_i-j%20/abcdefg_i-j%20/websocket"),
            Some(("abcdefgh_i-j%20", "abcdefg_i-j%20"))
        );
        for bad in [
            "",
            "/",
            "websocket",
            "/websocket",
            "a/websocket",
            "//websocket",
            "a//websocket",
            "/a/websocket",
            "a./a/websocket",
            "a/a./websocket",
            "./././websocket",
            "a/a/xhr",
            "a/a/websocket/",
            "a/a/b/websocket",
            "a/a/WEBSOCKET",
            "//a/a/websocket",
        ] {
            assert_eq!(parse_session_path(bad), None, "{bad:?}");
        }
    }

    /// What a desktop running `Stomp.over(new SockJS("https://host/callcenter/ws"))` (stomp.js
    /// 2.3.3, sockjs-client 1.x) exchanges with the server, frame by frame.
    #[test]
    fn real_sockjs_client_session() {
        // GET /callcenter/ws/info, then the WebSocket upgrade.
        let info: serde_json::Value = serde_json::from_str(&info_json(2_891_430_007)).unwrap();
        assert_eq!(info["websocket"], true);
        assert_eq!(
            parse_session_path("381/zk3rbqlt/websocket"),
            Some(("381", "zk3rbqlt"))
        );

        let mut to_client = vec![OPEN.to_string()];
        let mut decoder = Decoder::new(Limits::default());
        let mut from_client = |ws_text: &str| -> Vec<Decoded> {
            let mut units = Vec::new();
            for chunk in parse_client_message(ws_text, 16).unwrap() {
                decoder.push(chunk.as_bytes());
                while let Some(unit) = decoder.next_decoded().unwrap() {
                    units.push(unit);
                }
            }
            units
        };

        let connect =
            from_client(r#"["CONNECT\naccept-version:1.1,1.0\nheart-beat:10000,10000\n\n\u0000"]"#);
        let [Decoded::Frame(connect)] = &connect[..] else {
            panic!("{connect:?}")
        };
        assert_eq!(connect.command, Command::Connect);
        let version = stomp::negotiate_version(connect.header("accept-version")).unwrap();
        let client_beats = stomp::parse_heart_beat(connect.header("heart-beat")).unwrap();
        let beats = stomp::negotiate_heart_beat(client_beats, (10_000, 10_000));
        assert_eq!(
            (version, beats.outgoing_ms, beats.incoming_ms),
            ("1.1", 10_000, 10_000)
        );
        let connected = Frame::connected(version, (10_000, 10_000), "gridedge").encode();
        to_client.push(message_frame(&[std::str::from_utf8(&connected).unwrap()]));

        let subscribe =
            from_client(r#"["SUBSCRIBE\nid:sub-0\ndestination:/topic/status/1001\n\n\u0000"]"#);
        let [Decoded::Frame(subscribe)] = &subscribe[..] else {
            panic!("{subscribe:?}")
        };
        assert_eq!(subscribe.header("destination"), Some("/topic/status/1001"));

        // stomp.js counts content-length in UTF-8 bytes, as STOMP requires.
        let send = from_client(
            r#"["SEND\ndestination:/app/idle\ncontent-length:58\n\n{\"username\":\"1001\",\"workType\":\"10\",\"projectCode\":\"项目\"}\u0000"]"#,
        );
        let [Decoded::Frame(send)] = &send[..] else {
            panic!("{send:?}")
        };
        assert_eq!(send.header("destination"), Some("/app/idle"));
        let idle: serde_json::Value = serde_json::from_slice(&send.body).unwrap();
        assert_eq!(idle["projectCode"], "项目");

        // stomp.js's heart-beat is a bare EOL, wrapped like any other data.
        assert_eq!(from_client(r#"["\n"]"#), vec![Decoded::HeartBeat]);
        assert_eq!(from_client(""), vec![]);

        to_client.push(HEARTBEAT.to_string());
        to_client.push(message_frame(&["\n"]));
        let status = Frame::message(
            "/topic/status/1001",
            subscribe.header("id").unwrap(),
            "1-0",
            "application/json;charset=UTF-8",
            r#"{"status":1,"workStatus":1,"sessionSatus":0}"#,
        );
        to_client.push(message_frame(&[
            std::str::from_utf8(&status.encode()).unwrap()
        ]));
        to_client.push(close_frame(3000, "Go away!"));

        assert_eq!(
            to_client,
            [
                "o",
                r#"a["CONNECTED\nversion:1.1\nheart-beat:10000,10000\nserver:gridedge\n\n\u0000"]"#,
                "h",
                r#"a["\n"]"#,
                r#"a["MESSAGE\ndestination:/topic/status/1001\ncontent-type:application/json;charset=UTF-8\nsubscription:sub-0\nmessage-id:1-0\ncontent-length:44\n\n{\"status\":1,\"workStatus\":1,\"sessionSatus\":0}\u0000"]"#,
                r#"c[3000,"Go away!"]"#,
            ]
        );
        // And the client side of sockjs-client reads our frames back as the same strings.
        let [_, connected_frame, ..] = &to_client[..] else {
            unreachable!()
        };
        let payloads = decode_json(&connected_frame[1..]);
        let (frame, _) = Frame::parse(payloads[0].as_bytes(), &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(frame.header("version"), Some("1.1"));
    }

    proptest! {
        // Failures print the minimal input; persisting regression files would write into the
        // repository from tests, which several people run concurrently.
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn message_frames_round_trip(payloads in proptest::collection::vec(any::<String>(), 0..5)) {
            let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
            let frame = message_frame(&refs);
            prop_assert!(frame.starts_with('a'));
            prop_assert_eq!(decode_json(&frame[1..]), payloads.clone());
            // What the server sends, a client could send back unchanged.
            prop_assert_eq!(parse_client_message(&frame[1..], 5), Ok(payloads));
        }

        #[test]
        fn close_frames_round_trip(code in any::<u16>(), reason in any::<String>()) {
            let frame = close_frame(code, &reason);
            let (c, r): (u16, String) = serde_json::from_str(&frame[1..]).expect("valid JSON");
            prop_assert_eq!((c, r), (code, reason));
        }

        #[test]
        fn client_messages_never_panic(text in any::<String>(), max in 0usize..4) {
            if let Ok(payloads) = parse_client_message(&text, max) {
                prop_assert!(payloads.len() <= max);
            }
        }
    }
}
