//! FreeSWITCH Event Socket (ESL) wire codec, sans-IO: no sockets, no runtime, no clock.
//!
//! Both directions use a MIME-like framing: `Name: value` header lines ending with LF (CRLF
//! is tolerated), a blank line, then exactly `Content-Length` body bytes when that header is
//! present. This module provides:
//!
//! * [`EslDecoder`]: a streaming, bounded decoder of server → client [`EslMessage`]s. How the
//!   bytes are split across [`EslDecoder::push`] calls never changes what decodes.
//! * [`EslEvent`]: the parsed form of `text/event-json` and `text/event-plain` bodies.
//! * [`Command`]: client → server command encoding that refuses CR/LF in arguments, because a
//!   line break would let a caller smuggle a second command into the socket.
//! * [`EslSession`]: a small inbound-mode state machine (auth → subscribe → events, `bgapi`
//!   job correlation) that tells the shell what to send and what happened.
//!
//! Decoding decisions, documented once here:
//!
//! * Outer (framing) header values are kept **verbatim** in [`EslMessage::headers`] so the
//!   message is exactly what was on the wire. [`EslMessage::header_decoded`] percent-decodes
//!   on demand, because FreeSWITCH URL-encodes the outer block of the outbound `connect`
//!   reply (`Reply-Text: %2BOK%0A`).
//! * Percent-decoding never treats `+` as a space (unlike `application/x-www-form-urlencoded`,
//!   hence no `form_urlencoded` here): FreeSWITCH encodes `+` as `%2B` and replies start with a
//!   literal `+OK`. In `text/event-plain` bodies a malformed escape (`%` not followed by two
//!   hex digits) is an error, since FreeSWITCH always encodes `%` itself. If the decoded bytes
//!   are not UTF-8 the raw, still-encoded value is kept: lossless, and visibly undecoded.
//! * Multi-value headers (JSON arrays, plain `ARRAY::a|:b`) become **repeated entries** with
//!   the same name, in order; [`EslEvent::get`] returns the first, [`EslEvent::get_all`] all.
//! * Event bodies are text (API output); invalid UTF-8 in a body is replaced with U+FFFD.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;

/// Size limits applied by [`EslDecoder`]. They bound memory per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest header block, including its terminating blank line.
    pub max_header_bytes: usize,
    /// Most header lines in one block.
    pub max_headers: usize,
    /// Largest accepted `Content-Length`. `api show channels as json` answers can be large.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_headers: 512,
            max_body_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Everything that can go wrong decoding, parsing or encoding ESL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EslError {
    #[error("header block exceeds {limit} bytes before its terminating blank line")]
    HeaderBlockTooLarge { limit: usize },
    #[error("header block has more than {limit} header lines")]
    TooManyHeaders { limit: usize },
    #[error("header line {line} is not valid UTF-8")]
    HeaderNotUtf8 { line: usize },
    #[error("header line {line} has no ':' separator")]
    HeaderMissingColon { line: usize },
    #[error("header line {line} has an empty name or a name with whitespace or control bytes")]
    InvalidHeaderName { line: usize },
    #[error("Content-Length {value:?} is not a non-negative decimal integer")]
    InvalidContentLength { value: String },
    #[error("conflicting Content-Length headers: {first} then {second}")]
    ConflictingContentLength { first: u64, second: u64 },
    #[error("Content-Length {length} exceeds the body limit of {limit} bytes")]
    BodyTooLarge { length: u64, limit: usize },
    #[error("content type {content_type:?} does not carry an event")]
    NotAnEvent { content_type: String },
    #[error("event format {content_type:?} is not supported (use json or plain)")]
    UnsupportedEventFormat { content_type: String },
    #[error("JSON event is not valid JSON: {detail}")]
    EventJsonSyntax { detail: String },
    #[error("JSON event is not a JSON object")]
    EventJsonNotObject,
    #[error("JSON event header {name:?} is neither a string nor an array of strings")]
    EventJsonValueType { name: String },
    #[error("event header {name:?} has a malformed percent-escape")]
    BadPercentEscape { name: String },
    #[error("event body is {actual} bytes but its Content-Length says {declared}")]
    EventBodyLength { declared: u64, actual: usize },
    #[error("event has {extra} bytes after its header block but no Content-Length")]
    UnexpectedEventBody { extra: usize },
    #[error("command argument `{what}` contains CR or LF")]
    CommandInjection { what: &'static str },
    #[error("command argument `{what}` is empty")]
    EmptyArgument { what: &'static str },
    #[error("command argument `{what}` must be a single token without whitespace")]
    NotAToken { what: &'static str },
    #[error("session is closed")]
    SessionClosed,
    #[error("session is not authenticated yet")]
    NotAuthenticated,
    #[error("more than {limit} commands are awaiting a reply")]
    TooManyOutstanding { limit: usize },
    #[error("background job {job_uuid:?} is already outstanding")]
    DuplicateJob { job_uuid: String },
}

/// The `Content-Type` of a server message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentType {
    AuthRequest,
    CommandReply,
    ApiResponse,
    EventPlain,
    EventJson,
    EventXml,
    DisconnectNotice,
    RudeRejection,
    LogData,
    /// Anything else, verbatim; the empty string when the header is missing.
    Other(String),
}

impl ContentType {
    fn parse(value: &str) -> Self {
        // Media types are case-insensitive; FreeSWITCH sends lower case but be liberal.
        let v = value.trim();
        let known = [
            ("auth/request", Self::AuthRequest),
            ("command/reply", Self::CommandReply),
            ("api/response", Self::ApiResponse),
            ("text/event-plain", Self::EventPlain),
            ("text/event-json", Self::EventJson),
            ("text/event-xml", Self::EventXml),
            ("text/disconnect-notice", Self::DisconnectNotice),
            ("text/rude-rejection", Self::RudeRejection),
            ("log/data", Self::LogData),
        ];
        known
            .into_iter()
            .find(|(name, _)| v.eq_ignore_ascii_case(name))
            .map_or_else(|| Self::Other(value.to_owned()), |(_, ct)| ct)
    }

    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::AuthRequest => "auth/request",
            Self::CommandReply => "command/reply",
            Self::ApiResponse => "api/response",
            Self::EventPlain => "text/event-plain",
            Self::EventJson => "text/event-json",
            Self::EventXml => "text/event-xml",
            Self::DisconnectNotice => "text/disconnect-notice",
            Self::RudeRejection => "text/rude-rejection",
            Self::LogData => "log/data",
            Self::Other(s) => s,
        }
    }

    /// Whether the body is an event (`text/event-*`).
    pub fn is_event(&self) -> bool {
        matches!(self, Self::EventPlain | Self::EventJson | Self::EventXml)
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One framed server → client message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EslMessage {
    /// Header lines in wire order, values verbatim (leading blanks after ':' dropped).
    pub headers: Vec<(String, String)>,
    /// Exactly `Content-Length` bytes; empty without that header.
    pub body: Vec<u8>,
}

impl EslMessage {
    /// First header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// [`Self::header`], percent-decoded when that yields valid UTF-8, verbatim otherwise.
    pub fn header_decoded(&self, name: &str) -> Option<Cow<'_, str>> {
        self.header(name).map(decode_lenient)
    }

    pub fn content_type(&self) -> ContentType {
        ContentType::parse(self.header("Content-Type").unwrap_or(""))
    }

    /// The body as text (lossy for invalid UTF-8).
    pub fn body_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// A reply view when this is a `command/reply`.
    pub fn as_reply(&self) -> Option<Reply<'_>> {
        (self.content_type() == ContentType::CommandReply).then_some(Reply { message: self })
    }
}

/// A `command/reply` message: `Reply-Text: +OK ...` or `-ERR ...`.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    message: &'a EslMessage,
}

impl<'a> Reply<'a> {
    /// `Reply-Text`, percent-decoded (outbound `connect` replies encode it as `%2BOK%0A`).
    pub fn reply_text(&self) -> Cow<'a, str> {
        self.message
            .header_decoded("Reply-Text")
            .unwrap_or(Cow::Borrowed(""))
    }

    pub fn is_ok(&self) -> bool {
        self.reply_text().starts_with("+OK")
    }

    /// The text after `-ERR`, trimmed; `None` unless the reply is an error.
    pub fn error_text(&self) -> Option<String> {
        let text = self.reply_text();
        text.strip_prefix("-ERR").map(|rest| rest.trim().to_owned())
    }

    /// `Job-UUID` of a `bgapi` reply: the header, else parsed from `+OK Job-UUID: <uuid>`.
    pub fn job_uuid(&self) -> Option<String> {
        if let Some(uuid) = self.message.header("Job-UUID") {
            return Some(uuid.trim().to_owned());
        }
        let text = self.reply_text();
        text.strip_prefix("+OK Job-UUID:")
            .map(|rest| rest.trim().to_owned())
            .filter(|uuid| !uuid.is_empty())
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

// ---------------------------------------------------------------------------------------------
// Decoder

#[derive(Debug)]
enum DecodeState {
    /// Looking for the end of a header block; `scanned` bytes past `start` hold no terminator.
    Headers {
        scanned: usize,
    },
    /// Header block parsed; waiting for `length` body bytes.
    Body {
        headers: Vec<(String, String)>,
        length: usize,
    },
    Failed(EslError),
}

/// Streaming, bounded decoder of server messages.
#[derive(Debug)]
pub struct EslDecoder {
    limits: Limits,
    buf: Vec<u8>,
    /// Consumed prefix of `buf`; compacted lazily so many small messages stay O(n).
    start: usize,
    state: DecodeState,
}

impl EslDecoder {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            buf: Vec::new(),
            start: 0,
            state: DecodeState::Headers { scanned: 0 },
        }
    }

    /// Appends received bytes. Ignored once the decoder has failed: the stream is unusable.
    pub fn push(&mut self, bytes: &[u8]) {
        if matches!(self.state, DecodeState::Failed(_)) {
            return;
        }
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as part of a message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    pub fn is_failed(&self) -> bool {
        matches!(self.state, DecodeState::Failed(_))
    }

    /// The next complete message, `Ok(None)` when more bytes are needed. After an error every
    /// call returns that same error.
    pub fn next_message(&mut self) -> Result<Option<EslMessage>, EslError> {
        match self.step() {
            Ok(message) => Ok(message),
            Err(e) => {
                self.state = DecodeState::Failed(e.clone());
                self.buf = Vec::new();
                self.start = 0;
                Err(e)
            }
        }
    }

    fn step(&mut self) -> Result<Option<EslMessage>, EslError> {
        loop {
            match &mut self.state {
                DecodeState::Failed(e) => return Err(e.clone()),
                DecodeState::Headers { scanned } => {
                    let pending = &self.buf[self.start..];
                    // Stray blank lines between messages carry nothing; skipping them keeps a
                    // lone "\n" from decoding as an empty message.
                    if pending.starts_with(b"\n") {
                        self.start += 1;
                        *scanned = 0;
                        continue;
                    }
                    if pending.starts_with(b"\r\n") {
                        self.start += 2;
                        *scanned = 0;
                        continue;
                    }
                    if pending == b"\r" {
                        return Ok(None);
                    }
                    let Some(end) = find_block_end(pending, *scanned) else {
                        if pending.len() > self.limits.max_header_bytes {
                            return Err(EslError::HeaderBlockTooLarge {
                                limit: self.limits.max_header_bytes,
                            });
                        }
                        // The last two bytes may begin a terminator split across pushes.
                        *scanned = pending.len().saturating_sub(2);
                        return Ok(None);
                    };
                    if end > self.limits.max_header_bytes {
                        return Err(EslError::HeaderBlockTooLarge {
                            limit: self.limits.max_header_bytes,
                        });
                    }
                    let parsed = parse_header_block(&pending[..end], self.limits.max_headers)?;
                    let length = match parsed.content_length {
                        None => 0,
                        Some(n) => match usize::try_from(n) {
                            Ok(n) if n <= self.limits.max_body_bytes => n,
                            _ => {
                                return Err(EslError::BodyTooLarge {
                                    length: n,
                                    limit: self.limits.max_body_bytes,
                                })
                            }
                        },
                    };
                    self.start += end;
                    self.state = DecodeState::Body {
                        headers: parsed.headers,
                        length,
                    };
                }
                DecodeState::Body { headers, length } => {
                    let pending = &self.buf[self.start..];
                    if pending.len() < *length {
                        return Ok(None);
                    }
                    let body = pending[..*length].to_vec();
                    self.start += *length;
                    let headers = std::mem::take(headers);
                    self.state = DecodeState::Headers { scanned: 0 };
                    return Ok(Some(EslMessage { headers, body }));
                }
            }
        }
    }
}

impl Default for EslDecoder {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

/// Length of the header block including its blank line (`\n\n` or `\n\r\n`), searching from
/// `from` so repeated calls on a growing buffer stay linear.
fn find_block_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            match buf.get(i + 1..) {
                Some([b'\n', ..]) => return Some(i + 2),
                Some([b'\r', b'\n', ..]) => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

struct ParsedBlock {
    headers: Vec<(String, String)>,
    content_length: Option<u64>,
}

/// Iterates the lines of a header block: split on LF, trailing CR dropped, stops at the first
/// empty line (the terminator) or the end of input. Yields `(line number, bytes)`.
fn block_lines(block: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    block
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
        .enumerate()
        .map(|(i, line)| (i + 1, line))
}

fn parse_header_line(number: usize, line: &[u8]) -> Result<(&str, &str), EslError> {
    let line = std::str::from_utf8(line).map_err(|_| EslError::HeaderNotUtf8 { line: number })?;
    let (name, value) = line
        .split_once(':')
        .ok_or(EslError::HeaderMissingColon { line: number })?;
    if name.is_empty() || name.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(EslError::InvalidHeaderName { line: number });
    }
    Ok((name, value.trim_start_matches([' ', '\t'])))
}

fn parse_header_block(block: &[u8], max_headers: usize) -> Result<ParsedBlock, EslError> {
    let mut headers = Vec::new();
    let mut content_length = None;
    for (number, line) in block_lines(block) {
        if headers.len() == max_headers {
            return Err(EslError::TooManyHeaders { limit: max_headers });
        }
        let (name, value) = parse_header_line(number, line)?;
        if name.eq_ignore_ascii_case("Content-Length") {
            merge_content_length(&mut content_length, value)?;
        }
        headers.push((name.to_owned(), value.to_owned()));
    }
    Ok(ParsedBlock {
        headers,
        content_length,
    })
}

/// Strict decimal: ASCII digits only (no sign, no blanks), fitting in u64.
fn parse_content_length(value: &str) -> Result<u64, EslError> {
    let invalid = || EslError::InvalidContentLength {
        value: value.to_owned(),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    value.parse().map_err(|_| invalid())
}

/// Repeated Content-Length headers are tolerated only when they agree: differing ones are the
/// classic request-smuggling ambiguity.
fn merge_content_length(slot: &mut Option<u64>, value: &str) -> Result<(), EslError> {
    let n = parse_content_length(value)?;
    match *slot {
        Some(first) if first != n => Err(EslError::ConflictingContentLength { first, second: n }),
        _ => {
            *slot = Some(n);
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Byte scanning and percent-decoding

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Sets the high bit of every byte of `word` equal to `byte`. Only the lowest mark is
/// certain: a mark can be wrong, but only above a right one (the borrow of a subtraction runs
/// upwards from a matching byte), which is all the scanners below rely on.
fn bytes_equal(word: u64, byte: u8) -> u64 {
    let x = word ^ ONES.wrapping_mul(u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// The index of the first `stop` byte in `hay`, and whether any byte before it is one that
/// `marks` flags (high bit set, as [`bytes_equal`]; wrongly only above a right mark) and
/// `flagged` tests one at a time.
///
/// Event bodies are tens of KB of short lines, scanned for line breaks, colons and escapes,
/// so this tests eight bytes per step (std's memchr is not public for byte slices, and the
/// crate takes no dependency for it); a mark below `stop` is then exact.
#[inline(always)]
fn scan_to(
    hay: &[u8],
    stop: u8,
    marks: impl Fn(u64) -> u64,
    flagged: impl Fn(u8) -> bool,
) -> (Option<usize>, bool) {
    let mut seen = false;
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        // `chunks_exact(8)` only yields 8-byte chunks, so the conversion cannot fail.
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        let stops = bytes_equal(word, stop);
        let marked = marks(word);
        if stops != 0 {
            let at = stops.trailing_zeros() as usize / 8;
            let below = (1u64 << (8 * at)) - 1;
            return (Some(base + at), seen | (marked & below != 0));
        }
        seen |= marked != 0;
        base += 8;
    }
    for (i, &b) in chunks.remainder().iter().enumerate() {
        if b == stop {
            return (Some(base + i), seen);
        }
        seen |= flagged(b);
    }
    (None, seen)
}

/// Index of the first `needle` in `hay`.
fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    scan_to(hay, needle, |_| 0, |_| false).0
}

/// The first `:` in `hay` and whether any byte before it is not allowed in a header name:
/// blank, control byte or DEL (UTF-8 beyond ASCII is fine).
fn scan_name(hay: &[u8]) -> (Option<usize>, bool) {
    scan_to(
        hay,
        b':',
        // Bytes below 0x21 (a high bit set in the word excludes itself), and DEL.
        |w| (w.wrapping_sub(ONES.wrapping_mul(0x21)) & !w & HIGHS) | bytes_equal(w, 0x7f),
        |b| b <= b' ' || b == 0x7f,
    )
}

/// The first `\n` in `hay` and whether a `%` comes before it.
fn scan_value(hay: &[u8]) -> (Option<usize>, bool) {
    scan_to(hay, b'\n', |w| bytes_equal(w, b'%'), |b| b == b'%')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends the percent-decoding of `raw` to `out`; `false` (and `out` unchanged) on a
/// malformed escape (`%` not followed by two hex digits). `+` stays `+`.
fn percent_decode_into(raw: &[u8], out: &mut Vec<u8>) -> bool {
    let start = out.len();
    // Decoding only shrinks: room for the raw length, cut to size at the end.
    out.resize(start + raw.len(), 0);
    let dst = &mut out[start..];
    let (mut i, mut n) = (0, 0);
    loop {
        // Encoded values are short with escapes every few bytes, so runs are not copied one
        // call each: eight bytes are stored as a word and the cursors advance to the first
        // `%` among them (what follows it is overwritten or cut off later).
        if let (Some(src), Some(to)) = (raw.get(i..i + 8), dst.get_mut(n..n + 8)) {
            to.copy_from_slice(src);
            let word = u64::from_le_bytes(src.try_into().unwrap_or([0; 8]));
            let plain = bytes_equal(word, b'%').trailing_zeros() as usize / 8;
            i += plain;
            n += plain;
            if plain == 8 {
                continue;
            }
        }
        // An escape, or one of the last few bytes.
        let Some(&b) = raw.get(i) else { break };
        let decoded = if b == b'%' {
            let escape = raw.get(i + 1..i + 3);
            i += 3;
            match escape {
                Some(&[hi, lo]) => hex_value(hi).zip(hex_value(lo)).map(|(h, l)| h << 4 | l),
                _ => None,
            }
        } else {
            i += 1;
            Some(b)
        };
        match (decoded, dst.get_mut(n)) {
            (Some(byte), Some(slot)) => *slot = byte,
            _ => {
                out.truncate(start);
                return false;
            }
        }
        n += 1;
    }
    out.truncate(start + n);
    true
}

/// Lenient decode for outer headers, which are usually not encoded at all.
fn decode_lenient(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw);
    }
    let mut bytes = Vec::new();
    if !percent_decode_into(raw.as_bytes(), &mut bytes) {
        return Cow::Borrowed(raw);
    }
    match String::from_utf8(bytes) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Borrowed(raw),
    }
}

// ---------------------------------------------------------------------------------------------
// Events

/// A header's name or value: a byte range of an event's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn len(self) -> usize {
        self.end - self.start
    }

    fn shifted(self, by: usize) -> Span {
        Span {
            start: self.start + by,
            end: self.end + by,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HeaderSpan {
    name: Span,
    value: Span,
}

/// A parsed FreeSWITCH event.
///
/// A `CHANNEL_HANGUP_COMPLETE` carries over 300 headers and arrives for every leg, so the
/// decoded headers are not kept as two `String`s each: every name and value lives in one
/// `text` buffer and `spans` lists their byte ranges in order. For a plain event `text` starts
/// with the (UTF-8-validated) header block itself, so names and unencoded values are not
/// copied one by one; percent-decoded values follow it.
///
/// Headers are in wire order; multi-value headers are repeated entries. They include the
/// event's own `Content-Length` when it has a body. Two events are equal when their headers
/// and bodies are, however their text is laid out.
#[derive(Clone, Default)]
pub struct EslEvent {
    text: String,
    spans: Vec<HeaderSpan>,
    /// The event body (`_body` in JSON), e.g. a `BACKGROUND_JOB` result.
    pub body: Option<String>,
}

/// The headers of an [`EslEvent`] as `(name, value)`, in order.
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    text: &'a str,
    spans: std::slice::Iter<'a, HeaderSpan>,
}

impl<'a> Headers<'a> {
    fn pair(&self, h: &HeaderSpan) -> (&'a str, &'a str) {
        (slice(self.text, h.name), slice(self.text, h.value))
    }
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        self.spans.next().map(|h| self.pair(h))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl DoubleEndedIterator for Headers<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.spans.next_back().map(|h| self.pair(h))
    }
}

impl ExactSizeIterator for Headers<'_> {}
impl std::iter::FusedIterator for Headers<'_> {}

/// The text of a span. Spans are built from `text` itself, so the fallback never shows; it
/// only keeps this panic-free.
fn slice(text: &str, span: Span) -> &str {
    text.get(span.start..span.end).unwrap_or("")
}

const VARIABLE_PREFIX: &str = "variable_";

impl EslEvent {
    /// An event with these headers, in order, and no body (tests, synthetic events).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let mut event = Self::default();
        event
            .text
            .reserve(pairs.iter().map(|(n, v)| n.len() + v.len()).sum());
        for (name, value) in pairs {
            let name = event.append(name);
            event.push_value(name, value);
        }
        event
    }

    /// Parses an event message (`text/event-json` or `text/event-plain`).
    pub fn from_message(message: &EslMessage) -> Result<Self, EslError> {
        match message.content_type() {
            ContentType::EventJson => Self::parse_json(&message.body),
            ContentType::EventPlain => Self::parse_plain(&message.body),
            ct @ ContentType::EventXml => Err(EslError::UnsupportedEventFormat {
                content_type: ct.to_string(),
            }),
            other => Err(EslError::NotAnEvent {
                content_type: other.to_string(),
            }),
        }
    }

    /// Parses a `text/event-plain` body: URL-encoded `Name: value` lines, a blank line (or the
    /// end of input), then exactly `Content-Length` body bytes when that header is present.
    pub fn parse_plain(body: &[u8]) -> Result<Self, EslError> {
        // UTF-8 is validated once for the whole body rather than line by line. Every header
        // line must be UTF-8, so all good lines lie in the valid prefix `text`, and the first
        // line reaching past it is the first bad one. Errors come out line by line in order,
        // exactly as if each line were checked on its own.
        let text = match std::str::from_utf8(body) {
            Ok(text) => text,
            Err(e) => std::str::from_utf8(&body[..e.valid_up_to()]).unwrap_or(""),
        };
        let bytes = text.as_bytes();
        let complete = bytes.len() == body.len();
        // Lines average some 45 bytes; sized so a hang-up event never regrows, capped so a
        // large job result with a handful of headers does not reserve much.
        let mut spans: Vec<HeaderSpan> = Vec::with_capacity((body.len() / 32 + 8).min(1024));
        // Percent-decoded values (each checked to be UTF-8), appended to the header block once
        // it is complete; `moved` lists the spans whose value lies here (relative to it).
        let mut decoded = Vec::with_capacity((body.len() / 16).min(16 * 1024));
        let mut moved = Vec::new();
        let mut content_length = None;
        let mut pos = 0;
        let mut number = 0;
        // Header lines up to a blank line or the end of input (body-only captures often end
        // without one); `rest` is where what follows the blank line starts.
        let (block_end, rest) = loop {
            let remaining = &bytes[pos..];
            match remaining {
                [b'\n', ..] => break (pos, pos + 1),
                [b'\r', b'\n', ..] => break (pos, pos + 2),
                [] | [b'\r'] if complete => break (pos, bytes.len()),
                _ => {}
            }
            number += 1;
            let colon = pos + find_colon(remaining, complete, number)?;
            let name = Span {
                start: pos,
                end: colon,
            };
            let mut value_start = colon + 1;
            while value_start < bytes.len() && matches!(bytes[value_start], b' ' | b'\t') {
                value_start += 1;
            }
            let (eol, escaped) = scan_value(&bytes[value_start..]);
            let (eol, next) = match eol {
                Some(i) => (value_start + i, value_start + i + 1),
                // The line runs into the bytes that are not UTF-8.
                None if !complete => return Err(EslError::HeaderNotUtf8 { line: number }),
                None => (bytes.len(), bytes.len()),
            };
            let line_end = if eol > value_start && bytes[eol - 1] == b'\r' {
                eol - 1
            } else {
                eol
            };
            let raw_value = Span {
                start: value_start,
                end: line_end,
            };
            // FreeSWITCH encodes `%` itself, so a value without one is already decoded.
            let (value, in_decoded) = if escaped {
                let start = decoded.len();
                if !percent_decode_into(&bytes[value_start..line_end], &mut decoded) {
                    return Err(EslError::BadPercentEscape {
                        name: slice(text, name).to_owned(),
                    });
                }
                if std::str::from_utf8(&decoded[start..]).is_ok() {
                    let end = decoded.len();
                    (Span { start, end }, true)
                } else {
                    // Not UTF-8 once decoded: keep the raw value (lossless, visibly encoded).
                    decoded.truncate(start);
                    (raw_value, false)
                }
            } else {
                (raw_value, false)
            };
            // Both checks look at bytes first: a `&str` of the value is only made for the rare
            // headers they apply to.
            let value_text = || {
                if in_decoded {
                    std::str::from_utf8(&decoded[value.start..value.end]).unwrap_or("")
                } else {
                    slice(text, value)
                }
            };
            let value_bytes = if in_decoded { &decoded[..] } else { bytes };
            if name.len() == CONTENT_LENGTH.len()
                && bytes[name.start..name.end].eq_ignore_ascii_case(CONTENT_LENGTH.as_bytes())
            {
                merge_content_length(&mut content_length, value_text())?;
            }
            let first = spans.len();
            if value_bytes[value.start..value.end].starts_with(ARRAY_PREFIX.as_bytes()) {
                push_array(&mut spans, name, value, value_text());
            } else {
                spans.push(HeaderSpan { name, value });
            }
            if in_decoded {
                moved.extend(first..spans.len());
            }
            pos = next;
        };
        let mut arena = String::with_capacity(block_end + decoded.len());
        arena.push_str(&text[..block_end]);
        // Valid: each decoded value was checked and the rest truncated away.
        arena.push_str(std::str::from_utf8(&decoded).unwrap_or_default());
        for &i in &moved {
            if let Some(h) = spans.get_mut(i) {
                h.value = h.value.shifted(block_end);
            }
        }
        let rest = &body[rest..];
        let body = match content_length {
            None if rest.is_empty() => None,
            None => return Err(EslError::UnexpectedEventBody { extra: rest.len() }),
            Some(declared) => {
                if u64::try_from(rest.len()).ok() != Some(declared) {
                    return Err(EslError::EventBodyLength {
                        declared,
                        actual: rest.len(),
                    });
                }
                Some(String::from_utf8_lossy(rest).into_owned())
            }
        };
        Ok(Self {
            text: arena,
            spans,
            body,
        })
    }

    /// Parses a `text/event-json` body: one object of strings or arrays of strings; `_body`
    /// is the event body and `Content-Length` must match its byte length when both appear.
    pub fn parse_json(body: &[u8]) -> Result<Self, EslError> {
        // Decoded strings are never longer than their JSON text; a big `_body` is kept apart,
        // hence the cap.
        let mut event = Self {
            text: String::with_capacity(body.len().min(64 * 1024)),
            ..Self::default()
        };
        let mut members = JsonMembers {
            event: &mut event,
            type_error: None,
        };
        let mut de = serde_json::Deserializer::from_slice(body);
        serde::de::DeserializeSeed::deserialize(&mut members, &mut de)
            .and_then(|()| de.end())
            .map_err(|e| {
                if e.is_data() {
                    EslError::EventJsonNotObject
                } else {
                    EslError::EventJsonSyntax {
                        detail: e.to_string(),
                    }
                }
            })?;
        // Type errors wait for the whole document: a syntax error anywhere wins, as it did
        // when the object was read into a tree first.
        if let Some(name) = members.type_error {
            return Err(EslError::EventJsonValueType {
                name: slice(&event.text, name).to_owned(),
            });
        }
        let mut declared = None;
        for (name, value) in event.headers() {
            if name.eq_ignore_ascii_case("Content-Length") {
                merge_content_length(&mut declared, value)?;
            }
        }
        if let Some(declared) = declared {
            let actual = event.body.as_ref().map_or(0, String::len);
            if u64::try_from(actual).ok() != Some(declared) {
                return Err(EslError::EventBodyLength { declared, actual });
            }
        }
        Ok(event)
    }

    /// Every header as `(name, value)`, in order; multi-value headers repeat.
    pub fn headers(&self) -> Headers<'_> {
        Headers {
            text: &self.text,
            spans: self.spans.iter(),
        }
    }

    /// First header with this name (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.spans
            .iter()
            .find(|h| self.is_named(h, name))
            .map(|h| slice(&self.text, h.value))
    }

    /// Every value of a (multi-value) header, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.spans
            .iter()
            .filter(move |h| self.is_named(h, name))
            .map(|h| slice(&self.text, h.value))
    }

    fn is_named(&self, header: &HeaderSpan, name: &str) -> bool {
        // Comparing lengths first skips nearly every header without touching its text.
        header.name.len() == name.len() && slice(&self.text, header.name).eq_ignore_ascii_case(name)
    }

    pub fn name(&self) -> Option<&str> {
        self.get("Event-Name")
    }

    pub fn subclass(&self) -> Option<&str> {
        self.get("Event-Subclass")
    }

    pub fn unique_id(&self) -> Option<&str> {
        self.get("Unique-ID")
    }

    pub fn job_uuid(&self) -> Option<&str> {
        self.get("Job-UUID")
    }

    pub fn core_uuid(&self) -> Option<&str> {
        self.get("Core-UUID")
    }

    /// `Event-Sequence`, the per-core counter used in idempotency keys.
    pub fn sequence(&self) -> Option<u64> {
        self.get("Event-Sequence")
            .and_then(|s| parse_content_length(s.trim()).ok())
    }

    /// Channel variable `name`, i.e. header `variable_<name>` (the name compared
    /// case-insensitively).
    pub fn var(&self, name: &str) -> Option<&str> {
        let len = VARIABLE_PREFIX.len() + name.len();
        self.spans
            .iter()
            .find(|h| {
                h.name.len() == len
                    && slice(&self.text, h.name)
                        .strip_prefix(VARIABLE_PREFIX)
                        .is_some_and(|v| v.eq_ignore_ascii_case(name))
            })
            .map(|h| slice(&self.text, h.value))
    }

    /// Appends `s` to the text; its span.
    fn append(&mut self, s: &str) -> Span {
        let start = self.text.len();
        self.text.push_str(s);
        Span {
            start,
            end: self.text.len(),
        }
    }

    /// Appends a value for the header whose name is already at `name`.
    fn push_value(&mut self, name: Span, value: &str) {
        let value = self.append(value);
        self.spans.push(HeaderSpan { name, value });
    }
}

impl PartialEq for EslEvent {
    fn eq(&self, other: &Self) -> bool {
        self.body == other.body && self.headers().eq(other.headers())
    }
}

impl Eq for EslEvent {}

impl fmt::Debug for EslEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct List<'a>(&'a EslEvent);
        impl fmt::Debug for List<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list().entries(self.0.headers()).finish()
            }
        }
        f.debug_struct("EslEvent")
            .field("headers", &List(self))
            .field("body", &self.body)
            .finish()
    }
}

/// Offset of the `:` ending the header name at the start of `line` (a non-blank line of an
/// event-plain block, running on to the end of the input), or the line's error: not UTF-8
/// (the line reaches past the valid text, when it is not `complete`), no colon, or a bad name.
fn find_colon(line: &[u8], complete: bool, number: usize) -> Result<usize, EslError> {
    // Fast path, one pass: the first colon, with no blank, control byte or DEL before it (so
    // in particular no line break: the colon is on this line) and a non-empty name.
    if let (Some(colon), false) = scan_name(line) {
        if colon > 0 {
            return Ok(colon);
        }
    }
    // Something is wrong (or unusual): decide what, in the order the checks are defined.
    let line = match find_byte(line, b'\n') {
        Some(eol) => &line[..eol],
        None if !complete => return Err(EslError::HeaderNotUtf8 { line: number }),
        None => line,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let colon = find_byte(line, b':').ok_or(EslError::HeaderMissingColon { line: number })?;
    let name = &line[..colon];
    let valid = !name.is_empty() && !name.iter().any(|&b| b <= b' ' || b == 0x7f);
    if valid {
        Ok(colon)
    } else {
        Err(EslError::InvalidHeaderName { line: number })
    }
}

const ARRAY_PREFIX: &str = "ARRAY::";
const CONTENT_LENGTH: &str = "Content-Length";

/// Plain events encode arrays as `ARRAY::a|:b|:c`; they become repeated entries so plain and
/// JSON events look alike. `value_text` is the text of `value`, which starts with the prefix.
fn push_array(spans: &mut Vec<HeaderSpan>, name: Span, value: Span, value_text: &str) {
    let items = value_text.get(ARRAY_PREFIX.len()..).unwrap_or("");
    let mut start = value.start + ARRAY_PREFIX.len();
    for item in items.split("|:") {
        let end = start + item.len();
        spans.push(HeaderSpan {
            name,
            value: Span { start, end },
        });
        start = end + "|:".len();
    }
}

/// Reads a JSON event's members, in document order, straight into an [`EslEvent`]: strings
/// are appended to its text as serde_json yields them (borrowed from the input when they have
/// no escapes), with no intermediate tree. A wrongly typed member is consumed and the first
/// one remembered, so that a syntax error later in the document still takes precedence.
struct JsonMembers<'e> {
    event: &'e mut EslEvent,
    /// Name of the first member that is neither a string nor an array of strings.
    type_error: Option<Span>,
}

impl<'de> serde::de::DeserializeSeed<'de> for &mut JsonMembers<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for &mut JsonMembers<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key_seed(JsonKey(&mut self.event.text))? {
            let well_typed = if slice(&self.event.text, name) == "_body" {
                let body = map.next_value_seed(JsonBody)?;
                let ok = body.is_some();
                if ok {
                    self.event.body = body;
                }
                ok
            } else {
                map.next_value_seed(JsonHeader {
                    event: &mut *self.event,
                    name,
                    in_array: false,
                })?
            };
            if !well_typed && self.type_error.is_none() {
                self.type_error = Some(name);
            }
        }
        Ok(())
    }
}

/// The visitor methods of every JSON type a member cannot have: the value is consumed (nested
/// containers through [`JsonSkip`]) and `$rejected` returned.
macro_rules! reject_json_types {
    ($de:lifetime, $rejected:expr) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($rejected)
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($rejected)
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($rejected)
        }
        fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<Self::Value, E> {
            Ok($rejected)
        }
        fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<Self::Value, E> {
            Ok($rejected)
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($rejected)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok($rejected)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok($rejected)
        }
        fn visit_map<A: serde::de::MapAccess<$de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            while map.next_entry::<JsonSkip, JsonSkip>()?.is_some() {}
            Ok($rejected)
        }
    };
}

/// A member name, appended to the event text; its span.
struct JsonKey<'t>(&'t mut String);

impl<'de> serde::de::DeserializeSeed<'de> for JsonKey<'_> {
    type Value = Span;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Span, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonKey<'_> {
    type Value = Span;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Span, E> {
        let start = self.0.len();
        self.0.push_str(v);
        Ok(Span {
            start,
            end: self.0.len(),
        })
    }
}

/// A header's value: a string, or (unless `in_array`) an array of strings, each appended as
/// an entry named `name`. Yields whether the value was one of those.
struct JsonHeader<'e> {
    event: &'e mut EslEvent,
    name: Span,
    in_array: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for JsonHeader<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonHeader<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<bool, E> {
        self.event.push_value(self.name, v);
        Ok(true)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        // Arrays nest one level only; keep reading after a bad element so the rest of the
        // array is still consumed.
        let mut ok = !self.in_array;
        while let Some(good) = seq.next_element_seed(JsonHeader {
            event: &mut *self.event,
            name: self.name,
            in_array: true,
        })? {
            ok &= good;
        }
        Ok(ok)
    }

    reject_json_types!('de, false);
}

/// `_body`: a string (`Some`); anything else is consumed and yields `None`.
struct JsonBody;

impl<'de> serde::de::DeserializeSeed<'de> for JsonBody {
    type Value = Option<String>;

    fn deserialize<D>(self, deserializer: D) -> Result<Option<String>, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonBody {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Option<String>, E> {
        Ok(Some(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Option<String>, E> {
        Ok(Some(v))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<JsonSkip>()?.is_some() {}
        Ok(None)
    }

    reject_json_types!('de, None);
}

/// Consumes any JSON value, checked exactly as reading it into a tree would (escapes,
/// numbers, serde_json's depth limit), and keeps nothing. Not `IgnoredAny`: serde_json skips
/// that without checking escapes, and an event whose rejected member holds a bad one must
/// still fail as a syntax error.
struct JsonSkip;

impl<'de> serde::Deserialize<'de> for JsonSkip {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonSkip)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonSkip {
    type Value = JsonSkip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<JsonSkip, E> {
        Ok(JsonSkip)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<JsonSkip, A::Error> {
        while seq.next_element::<JsonSkip>()?.is_some() {}
        Ok(JsonSkip)
    }

    reject_json_types!('de, JsonSkip);
}

// ---------------------------------------------------------------------------------------------
// Commands

/// Event serialization requested by `event <format> ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFormat {
    Plain,
    Json,
    Xml,
}

impl EventFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Json => "json",
            Self::Xml => "xml",
        }
    }
}

/// A client → server command. [`Command::encode`] validates and frames it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `auth <password>`.
    Auth { password: String },
    /// `event <format> <names...>`; after `CUSTOM`, subclass names follow as further names.
    Events {
        format: EventFormat,
        names: Vec<String>,
    },
    /// `filter <header> <value>`.
    Filter { header: String, value: String },
    /// `api <command>`: blocks until an `api/response`.
    Api { command: String },
    /// `bgapi <command>` with `Job-UUID: <uuid>`, chosen by the caller for correlation.
    BgApi { command: String, job_uuid: String },
    /// `exit`.
    Exit,
    /// `linger`.
    Linger,
    /// `noevents`.
    NoEvents,
}

impl Command {
    /// The framed bytes, ending with the blank line. Refuses CR/LF anywhere in an argument,
    /// and whitespace in arguments that must be a single token.
    pub fn encode(&self) -> Result<Vec<u8>, EslError> {
        let text = match self {
            Self::Auth { password } => {
                check_arg("password", password)?;
                format!("auth {password}\n\n")
            }
            Self::Events { format, names } => {
                if names.is_empty() {
                    return Err(EslError::EmptyArgument {
                        what: "event names",
                    });
                }
                for name in names {
                    check_token("event name", name)?;
                }
                format!("event {} {}\n\n", format.as_str(), names.join(" "))
            }
            Self::Filter { header, value } => {
                check_token("filter header", header)?;
                check_arg("filter value", value)?;
                format!("filter {header} {value}\n\n")
            }
            Self::Api { command } => {
                check_arg("api command", command)?;
                format!("api {command}\n\n")
            }
            Self::BgApi { command, job_uuid } => {
                check_arg("bgapi command", command)?;
                check_token("job uuid", job_uuid)?;
                format!("bgapi {command}\nJob-UUID: {job_uuid}\n\n")
            }
            Self::Exit => "exit\n\n".to_owned(),
            Self::Linger => "linger\n\n".to_owned(),
            Self::NoEvents => "noevents\n\n".to_owned(),
        };
        Ok(text.into_bytes())
    }
}

fn check_arg(what: &'static str, value: &str) -> Result<(), EslError> {
    if value.contains(['\r', '\n']) {
        return Err(EslError::CommandInjection { what });
    }
    if value.trim().is_empty() {
        return Err(EslError::EmptyArgument { what });
    }
    Ok(())
}

fn check_token(what: &'static str, value: &str) -> Result<(), EslError> {
    check_arg(what, value)?;
    if value.chars().any(char::is_whitespace) {
        return Err(EslError::NotAToken { what });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Inbound session state machine

/// Where an inbound session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Connected; waiting for `auth/request`.
    AwaitingAuthRequest,
    /// `auth` sent; waiting for its reply.
    Authenticating,
    /// Authenticated; the subscription command is awaiting its reply.
    Subscribing,
    /// Subscribed: events flow; `api`/`bgapi` allowed.
    Subscribed,
    /// Ended by the server or by a failed handshake; the shell should drop the socket.
    Closed,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    AuthFailed(String),
    SubscribeFailed(String),
    /// `text/disconnect-notice`, with its body text.
    Disconnected(String),
    /// `text/rude-rejection` (ACL refused the connection), with its body text.
    Rejected(String),
}

/// What the shell should do or learn after a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutput {
    /// Write these bytes to the socket.
    Send(Vec<u8>),
    Authenticated,
    Subscribed,
    /// A subscribed event that is not a tracked job's completion.
    Event(EslEvent),
    /// The server accepted a `bgapi`.
    JobAccepted {
        job_uuid: String,
    },
    /// The server refused a `bgapi` outright (`-ERR`); the job is forgotten.
    JobRejected {
        job_uuid: String,
        reason: String,
    },
    /// The `BACKGROUND_JOB` event of a tracked job; its result is `event.body`.
    JobCompleted {
        job_uuid: String,
        event: EslEvent,
    },
    /// The answer to an `api` command.
    ApiResponse(Vec<u8>),
    /// A `command/reply` nobody is waiting for in particular (e.g. to `filter`).
    CommandReply(String),
    Closed(CloseReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    Auth,
    Subscribe,
    Api,
    BgApi(String),
    Other,
}

/// Inbound-mode ESL client logic without IO. Feed it every decoded message via
/// [`EslSession::handle`]; send whatever it returns in [`SessionOutput::Send`].
#[derive(Debug)]
pub struct EslSession {
    state: SessionState,
    auth: Vec<u8>,
    subscribe: Vec<u8>,
    /// Replies arrive in command order, so a FIFO tells what each reply answers.
    pending: VecDeque<Pending>,
    /// Jobs whose `BACKGROUND_JOB` has not arrived yet.
    jobs: HashMap<String, ()>,
    max_outstanding: usize,
}

impl EslSession {
    /// `max_outstanding` bounds both commands awaiting a reply and unfinished `bgapi` jobs.
    pub fn new(
        password: &str,
        format: EventFormat,
        events: &[&str],
        max_outstanding: usize,
    ) -> Result<Self, EslError> {
        let auth = Command::Auth {
            password: password.to_owned(),
        }
        .encode()?;
        let subscribe = Command::Events {
            format,
            names: events.iter().map(|&s| s.to_owned()).collect(),
        }
        .encode()?;
        Ok(Self {
            state: SessionState::AwaitingAuthRequest,
            auth,
            subscribe,
            pending: VecDeque::new(),
            jobs: HashMap::new(),
            max_outstanding,
        })
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    pub fn outstanding_jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Stops tracking a job nobody awaits any more (its caller gave up), freeing its slot; a
    /// late `BACKGROUND_JOB` for it then arrives as an ordinary event. True if it was tracked.
    pub fn forget_job(&mut self, job_uuid: &str) -> bool {
        self.jobs.remove(job_uuid).is_some()
    }

    /// Encodes a command and records that a reply is expected for it.
    pub fn command(&mut self, command: &Command) -> Result<Vec<u8>, EslError> {
        self.ready()?;
        let bytes = command.encode()?;
        let pending = match command {
            Command::Api { .. } => Pending::Api,
            Command::BgApi { job_uuid, .. } => {
                if self.jobs.contains_key(job_uuid) {
                    return Err(EslError::DuplicateJob {
                        job_uuid: job_uuid.clone(),
                    });
                }
                if self.jobs.len() >= self.max_outstanding {
                    return Err(EslError::TooManyOutstanding {
                        limit: self.max_outstanding,
                    });
                }
                self.jobs.insert(job_uuid.clone(), ());
                Pending::BgApi(job_uuid.clone())
            }
            _ => Pending::Other,
        };
        self.pending.push_back(pending);
        Ok(bytes)
    }

    fn ready(&self) -> Result<(), EslError> {
        match self.state {
            SessionState::Subscribed => {}
            SessionState::Closed => return Err(EslError::SessionClosed),
            _ => return Err(EslError::NotAuthenticated),
        }
        if self.pending.len() >= self.max_outstanding {
            return Err(EslError::TooManyOutstanding {
                limit: self.max_outstanding,
            });
        }
        Ok(())
    }

    fn close(&mut self, reason: CloseReason) -> Vec<SessionOutput> {
        self.state = SessionState::Closed;
        self.pending.clear();
        self.jobs.clear();
        vec![SessionOutput::Closed(reason)]
    }

    /// Advances the session with one server message.
    pub fn handle(&mut self, message: &EslMessage) -> Result<Vec<SessionOutput>, EslError> {
        if self.state == SessionState::Closed {
            return Err(EslError::SessionClosed);
        }
        let content_type = message.content_type();
        match content_type {
            ContentType::AuthRequest if self.state == SessionState::AwaitingAuthRequest => {
                self.state = SessionState::Authenticating;
                self.pending.push_back(Pending::Auth);
                Ok(vec![SessionOutput::Send(self.auth.clone())])
            }
            ContentType::CommandReply => Ok(self.on_reply(message)),
            ContentType::ApiResponse => {
                if self.pending.front() == Some(&Pending::Api) {
                    self.pending.pop_front();
                }
                Ok(vec![SessionOutput::ApiResponse(message.body.clone())])
            }
            ContentType::EventPlain | ContentType::EventJson | ContentType::EventXml => {
                let event = EslEvent::from_message(message)?;
                let job = (event.name() == Some("BACKGROUND_JOB"))
                    .then(|| event.job_uuid().map(str::to_owned))
                    .flatten()
                    .filter(|uuid| self.jobs.contains_key(uuid));
                Ok(vec![match job {
                    Some(job_uuid) => {
                        self.jobs.remove(&job_uuid);
                        SessionOutput::JobCompleted { job_uuid, event }
                    }
                    None => SessionOutput::Event(event),
                }])
            }
            ContentType::DisconnectNotice => {
                Ok(self.close(CloseReason::Disconnected(message.body_text().into_owned())))
            }
            ContentType::RudeRejection => {
                Ok(self.close(CloseReason::Rejected(message.body_text().into_owned())))
            }
            // A repeated auth/request, logs, unknown types: nothing to do.
            _ => Ok(Vec::new()),
        }
    }

    fn on_reply(&mut self, message: &EslMessage) -> Vec<SessionOutput> {
        let reply = Reply { message };
        let text = reply.reply_text().into_owned();
        let pending = match self.pending.front() {
            Some(Pending::Api) | None => Pending::Other,
            Some(_) => self.pending.pop_front().unwrap_or(Pending::Other),
        };
        match pending {
            Pending::Auth if reply.is_ok() => {
                self.state = SessionState::Subscribing;
                self.pending.push_back(Pending::Subscribe);
                vec![
                    SessionOutput::Authenticated,
                    SessionOutput::Send(self.subscribe.clone()),
                ]
            }
            Pending::Auth => self.close(CloseReason::AuthFailed(text)),
            Pending::Subscribe if reply.is_ok() => {
                self.state = SessionState::Subscribed;
                vec![SessionOutput::Subscribed]
            }
            Pending::Subscribe => self.close(CloseReason::SubscribeFailed(text)),
            Pending::BgApi(job_uuid) if reply.is_ok() => {
                vec![SessionOutput::JobAccepted { job_uuid }]
            }
            Pending::BgApi(job_uuid) => {
                self.jobs.remove(&job_uuid);
                vec![SessionOutput::JobRejected {
                    job_uuid,
                    reason: text,
                }]
            }
            Pending::Api | Pending::Other => vec![SessionOutput::CommandReply(text)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SESSION: &[u8] = fixture!("esl-inbound-auth-bgapi-session.txt");
    const API: &[u8] = fixture!("esl-api-response.txt");
    const RELOADXML: &[u8] = fixture!("esl-background-job-reloadxml-2023.txt");
    const BG_PLAIN: &[u8] = fixture!("esl-background-job-plain.txt");
    const BG_JSON: &[u8] = fixture!("esl-background-job-json.txt");
    const LINGER: &[u8] = fixture!("esl-disconnect-notice-linger.txt");
    const EXIT: &[u8] = fixture!("esl-exit-reply-and-disconnect-notice.txt");
    const CONNECT: &[u8] = fixture!("esl-outbound-connect-reply.txt");
    const CONNECT_2023: &[u8] = fixture!("esl-outbound-connect-reply-2023.txt");
    const ANSWER: &[u8] = fixture!("esl-channel-answer.txt");
    const CREATE: &[u8] = fixture!("esl-channel-create.txt");
    const BRIDGE: &[u8] = fixture!("esl-channel-bridge.txt");
    const FULL: &[u8] = fixture!("esl-outbound-session-full.txt");

    /// Every wire-framed fixture (README section 3a).
    const FRAMED: &[&[u8]] = &[
        SESSION,
        API,
        RELOADXML,
        BG_PLAIN,
        BG_JSON,
        LINGER,
        EXIT,
        CONNECT,
        CONNECT_2023,
        ANSWER,
        CREATE,
        BRIDGE,
        FULL,
    ];

    fn decode_chunks(chunks: &[&[u8]], limits: Limits) -> (Vec<EslMessage>, Option<EslError>) {
        let mut decoder = EslDecoder::new(limits);
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.push(chunk);
            loop {
                match decoder.next_message() {
                    Ok(Some(m)) => out.push(m),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        (out, None)
    }

    /// Decodes a whole capture that must decode cleanly with nothing left over.
    fn decode_all(bytes: &[u8]) -> Vec<EslMessage> {
        let mut decoder = EslDecoder::default();
        decoder.push(bytes);
        let mut out = Vec::new();
        while let Some(m) = decoder.next_message().expect("fixture decodes") {
            out.push(m);
        }
        assert_eq!(decoder.buffered(), 0, "no partial message left");
        out
    }

    fn decode_err(bytes: &[u8], limits: Limits) -> EslError {
        decode_chunks(&[bytes], limits).1.expect("an error")
    }

    fn event(message: &EslMessage) -> EslEvent {
        EslEvent::from_message(message).expect("event parses")
    }

    fn reply_text(message: &EslMessage) -> String {
        message
            .as_reply()
            .expect("a reply")
            .reply_text()
            .into_owned()
    }

    /// The framing's Content-Length always matches the body we cut.
    fn assert_length_consistent(message: &EslMessage) {
        let declared = message
            .header("Content-Length")
            .map_or(0, |v| v.parse::<usize>().expect("numeric Content-Length"));
        assert_eq!(declared, message.body.len());
    }

    // --- golden: wire-framed fixtures -----------------------------------------------------

    #[test]
    fn inbound_auth_bgapi_session() {
        let msgs = decode_all(SESSION);
        let types: Vec<ContentType> = msgs.iter().map(EslMessage::content_type).collect();
        assert_eq!(
            types,
            [
                ContentType::AuthRequest,
                ContentType::CommandReply,
                ContentType::CommandReply,
                ContentType::CommandReply,
                ContentType::EventPlain,
            ]
        );
        assert_eq!(reply_text(&msgs[1]), "+OK accepted");
        assert!(msgs[1].as_reply().is_some_and(|r| r.is_ok()));
        assert_eq!(reply_text(&msgs[2]), "+OK event listener enabled plain");
        let uuid = "43e14ab9-38b1-4187-9f08-e13f35136bb2";
        assert_eq!(
            msgs[3].as_reply().and_then(|r| r.job_uuid()).as_deref(),
            Some(uuid)
        );
        assert_eq!(msgs[4].body.len(), 759);
        let ev = event(&msgs[4]);
        assert_eq!(ev.name(), Some("BACKGROUND_JOB"));
        assert_eq!(ev.job_uuid(), Some(uuid));
        assert_eq!(ev.sequence(), Some(534));
        assert_eq!(ev.core_uuid(), Some("ac1ed77b-cf11-4f8a-a36f-3feeb6b53d0e"));
        assert_eq!(
            ev.get("FreeSWITCH-IPv6"),
            Some("2001:0:5ef5:79fd:815:1a92:3f57:fff9")
        );
        assert_eq!(ev.get("Event-Date-Local"), Some("2013-06-06 17:24:02"));
        assert_eq!(
            ev.get("Job-Command-Arg"),
            Some(
                r"sofia/external/1000@10.10.10.108:5070 &playback(C:\\temp\\misc-freeswitch_is_state_of_the_art.wav"
            )
        );
        assert_eq!(ev.body.as_deref(), Some("-ERR RECOVERY_ON_TIMER_EXPIRE\n"));
        msgs.iter().for_each(assert_length_consistent);
    }

    #[test]
    fn api_responses() {
        let msgs = decode_all(API);
        assert_eq!(msgs.len(), 2);
        assert!(msgs
            .iter()
            .all(|m| m.content_type() == ContentType::ApiResponse));
        assert_eq!(msgs[0].body, b"+OK [Success]\n");
        assert_eq!(msgs[1].body, b"-ERR SUBSCRIBER_ABSENT\n");
        assert!(msgs[0].as_reply().is_none());
        assert!(matches!(
            EslEvent::from_message(&msgs[0]),
            Err(EslError::NotAnEvent { content_type }) if content_type == "api/response"
        ));
    }

    #[test]
    fn background_job_plain_events() {
        let msgs = decode_all(RELOADXML);
        assert_eq!(msgs.len(), 1);
        let ev = event(&msgs[0]);
        assert_eq!(ev.name(), Some("BACKGROUND_JOB"));
        assert_eq!(ev.job_uuid(), Some("dcab6b81-ec71-4552-b897-88721870fe16"));
        assert_eq!(ev.get("Job-Command"), Some("reloadxml"));
        assert_eq!(ev.get("FreeSWITCH-IPv6"), Some("::1"));
        assert_eq!(ev.sequence(), Some(1041));
        assert_eq!(ev.body.as_deref(), Some("+OK [Success]\n"));

        let msgs = decode_all(BG_PLAIN);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].body.len(), 908);
        let ev = event(&msgs[0]);
        assert_eq!(ev.get("Job-Command"), Some("status"));
        assert_eq!(ev.get("Content-Length"), Some("330"));
        let body = ev.body.expect("job result");
        assert_eq!(body.len(), 330);
        assert!(body.starts_with("UP 0 years, 3 days"));
        // Trailing spaces in the API output are significant and kept.
        assert!(body.contains("0 session(s) - peak 2, last 5min 0 \n"));
    }

    #[test]
    fn background_job_json_event() {
        let msgs = decode_all(BG_JSON);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].content_type(), ContentType::EventJson);
        assert_eq!(msgs[0].body.len(), 949);
        let ev = event(&msgs[0]);
        assert_eq!(ev.headers().next(), Some(("Event-Name", "BACKGROUND_JOB")));
        assert_eq!(ev.job_uuid(), Some("7370aac1-93a2-4155-8c4a-2997edd4176b"));
        assert_eq!(ev.sequence(), Some(651));
        assert_eq!(ev.get("FreeSWITCH-IPv6"), Some("::1"));
        assert!(ev.get("_body").is_none(), "_body is the body, not a header");
        let body = ev.body.expect("job result");
        assert_eq!(body.len(), 330);
        assert!(body.ends_with("Current Stack Size/Max 240K/8192K\n"));
    }

    #[test]
    fn disconnect_notices_and_exit() {
        let msgs = decode_all(LINGER);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].content_type(), ContentType::DisconnectNotice);
        assert_eq!(msgs[0].header("content-disposition"), Some("linger"));
        assert_eq!(msgs[0].header("Linger-Time"), Some("-1"));
        assert!(msgs[0].body.is_empty());

        let msgs = decode_all(EXIT);
        assert_eq!(msgs.len(), 2);
        assert_eq!(reply_text(&msgs[0]), "+OK bye");
        assert_eq!(msgs[1].content_type(), ContentType::DisconnectNotice);
        assert_eq!(msgs[1].header("Content-Disposition"), Some("disconnect"));
        assert_eq!(msgs[1].body.len(), 67);
        assert!(msgs[1].body_text().contains("See you at ClueCon!"));
    }

    #[test]
    fn outbound_connect_replies() {
        for (bytes, uuid, seq) in [
            (CONNECT, "78b86350-4fb8-4d2b-a629-1eeafd7d2f74", "5808"),
            (CONNECT_2023, "c8130d8b-2109-47eb-bdbc-a8f7159f2821", "7934"),
        ] {
            let msgs = decode_all(bytes);
            assert_eq!(msgs.len(), 1);
            let m = &msgs[0];
            assert_eq!(m.content_type(), ContentType::CommandReply);
            assert!(m.body.is_empty());
            // The connect reply's outer block is URL-encoded channel data.
            assert_eq!(m.header("Reply-Text"), Some("%2BOK%0A"));
            let reply = m.as_reply().expect("reply");
            assert_eq!(reply.reply_text(), "+OK\n");
            assert!(reply.is_ok());
            assert_eq!(reply.error_text(), None);
            assert_eq!(m.header("Event-Name"), Some("CHANNEL_DATA"));
            assert_eq!(m.header("Unique-ID"), Some(uuid));
            assert_eq!(m.header("Event-Sequence"), Some(seq));
            assert_eq!(m.header("Socket-Mode"), Some("async"));
            assert_eq!(m.header("Control"), Some("full"));
            assert!(m
                .header_decoded("Channel-Name")
                .is_some_and(|n| n.starts_with("sofia/internal/") && n.contains('@')));
        }
    }

    #[test]
    fn channel_event_slices() {
        let cases = [
            (
                ANSWER,
                "CHANNEL_ANSWER",
                "78b86350-4fb8-4d2b-a629-1eeafd7d2f74",
                5815,
            ),
            (
                CREATE,
                "CHANNEL_CREATE",
                "9bc34cb7-1d0a-4c89-8d47-9dc25faa160f",
                5841,
            ),
            (
                BRIDGE,
                "CHANNEL_BRIDGE",
                "78b86350-4fb8-4d2b-a629-1eeafd7d2f74",
                5856,
            ),
        ];
        for (bytes, name, uuid, seq) in cases {
            let msgs = decode_all(bytes);
            assert_eq!(msgs.len(), 1);
            assert_length_consistent(&msgs[0]);
            let ev = event(&msgs[0]);
            assert_eq!(ev.name(), Some(name));
            assert_eq!(ev.unique_id(), Some(uuid));
            assert_eq!(ev.sequence(), Some(seq));
            assert_eq!(ev.core_uuid(), Some("8694f653-55e0-42ed-98d8-4983e2b6d248"));
            assert!(ev.body.is_none());
        }
        let answer = event(&decode_all(ANSWER)[0]);
        assert_eq!(answer.var("sip_from_user"), Some("1001"));
        assert_eq!(answer.get("Caller-Destination-Number"), Some("3"));
        let create = event(&decode_all(CREATE)[0]);
        assert_eq!(
            create.get("Other-Leg-Unique-ID"),
            Some("78b86350-4fb8-4d2b-a629-1eeafd7d2f74")
        );
        let bridge = event(&decode_all(BRIDGE)[0]);
        assert_eq!(
            bridge.get("Bridge-A-Unique-ID"),
            Some("78b86350-4fb8-4d2b-a629-1eeafd7d2f74")
        );
        assert_eq!(
            bridge.get("Bridge-B-Unique-ID"),
            Some("9bc34cb7-1d0a-4c89-8d47-9dc25faa160f")
        );
    }

    #[test]
    fn full_outbound_session_capture() {
        let msgs = decode_all(FULL);
        assert_eq!(msgs.len(), 27);
        msgs.iter().for_each(assert_length_consistent);
        let mut names = Vec::new();
        for m in &msgs {
            if m.content_type() == ContentType::EventPlain {
                names.push(event(m).name().unwrap_or_default().to_owned());
            }
        }
        assert_eq!(
            names,
            [
                "CHANNEL_PROGRESS_MEDIA",
                "CHANNEL_ANSWER",
                "CHANNEL_EXECUTE_COMPLETE",
                "CHANNEL_EXECUTE_COMPLETE",
                "CHANNEL_EXECUTE_COMPLETE",
                "CHANNEL_CREATE",
                "CHANNEL_PROGRESS",
                "CHANNEL_ANSWER",
                "CHANNEL_BRIDGE",
                "CHANNEL_HANGUP",
                "CHANNEL_HANGUP",
                "CHANNEL_UNBRIDGE",
                "CHANNEL_EXECUTE_COMPLETE",
                "CHANNEL_EXECUTE_COMPLETE",
            ]
        );
        let count = |ct: ContentType| msgs.iter().filter(|m| m.content_type() == ct).count();
        assert_eq!(count(ContentType::CommandReply), 9);
        assert_eq!(count(ContentType::ApiResponse), 2);
        assert_eq!(count(ContentType::DisconnectNotice), 2);
        assert_eq!(msgs[0], decode_all(CONNECT)[0], "slice matches frame 1");
        assert_eq!(msgs[5], decode_all(ANSWER)[0], "slice matches frame 6");
        assert_eq!(msgs[14], decode_all(CREATE)[0], "slice matches frame 15");
        assert_eq!(msgs[17], decode_all(BRIDGE)[0], "slice matches frame 18");
        assert_eq!(msgs[20], decode_all(LINGER)[0], "slice matches frame 21");
        assert_eq!(
            msgs[25..],
            decode_all(EXIT)[..],
            "slice matches frames 26-27"
        );
    }

    // --- golden: body-only fixtures -------------------------------------------------------

    #[test]
    fn plain_hangup_complete_bodies() {
        let cases: [(&[u8], &str, &str, &str); 2] = [
            (
                fixture!("esl-channel-hangup-complete-2018.txt"),
                "5a3a1d91-90d3-4db4-af5c-cc3ae15d93a4",
                "21",
                "1002",
            ),
            (
                fixture!("esl-channel-hangup-complete-2015.txt"),
                "e3133bf7-dcde-4daf-9663-9a79ffcef5ad",
                "66",
                "1003",
            ),
        ];
        for (bytes, uuid, billsec, dest) in cases {
            let ev = EslEvent::parse_plain(bytes).expect("parses");
            assert_eq!(ev.name(), Some("CHANNEL_HANGUP_COMPLETE"));
            assert_eq!(ev.unique_id(), Some(uuid));
            assert_eq!(ev.get("Hangup-Cause"), Some("NORMAL_CLEARING"));
            assert_eq!(ev.var("billsec"), Some(billsec));
            assert_eq!(ev.var("hangup_cause"), Some("NORMAL_CLEARING"));
            assert_eq!(ev.get("Caller-Destination-Number"), Some(dest));
            assert!(ev.body.is_none());
        }
        let ev = EslEvent::parse_plain(fixture!("esl-channel-hangup-complete-2018.txt"))
            .expect("parses");
        assert_eq!(ev.var("sip_from_uri"), Some("1001@192.168.56.202"));
        assert_eq!(ev.sequence(), Some(1113));
    }

    #[test]
    fn json_hangup_complete_bodies() {
        let cancelled = EslEvent::parse_json(fixture!(
            "esl-channel-hangup-complete-bleg-cancelled-2025.json"
        ))
        .expect("parses");
        assert_eq!(cancelled.name(), Some("CHANNEL_HANGUP_COMPLETE"));
        assert_eq!(
            cancelled.unique_id(),
            Some("a4670a4d-cac6-4022-9f97-7ff77cfb9ee4")
        );
        assert_eq!(cancelled.get("Hangup-Cause"), Some("ORIGINATOR_CANCEL"));
        assert_eq!(cancelled.var("billsec"), Some("0"));
        assert_eq!(cancelled.sequence(), Some(797));
        // Document order is kept.
        assert_eq!(cancelled.headers().next().map(|h| h.0), Some("Event-Name"));

        let answered = EslEvent::parse_json(fixture!(
            "esl-channel-hangup-complete-originate-answered-2025.json"
        ))
        .expect("parses");
        assert_eq!(answered.get("Hangup-Cause"), Some("NORMAL_CLEARING"));
        assert_eq!(answered.var("billsec"), Some("7"));
        assert_eq!(answered.var("sip_to_user"), Some("5555555555"));
        assert_eq!(answered.sequence(), Some(606));
    }

    #[test]
    fn custom_sofia_register_body() {
        let ev = EslEvent::parse_plain(fixture!("esl-custom-sofia-register.txt")).expect("parses");
        assert_eq!(ev.name(), Some("CUSTOM"));
        assert_eq!(ev.subclass(), Some("sofia::register"));
        // The duplicated Event-Subclass line is kept as a repeated entry.
        assert_eq!(ev.get_all("Event-Subclass").count(), 2);
        assert_eq!(ev.get("user-agent"), Some("SIPPER for PhonerLite"));
        assert_eq!(ev.get("expires"), Some("900"));
        // Decoded exactly once: the inner %25-escapes stay escaped.
        assert_eq!(
            ev.get("contact"),
            Some("\"1000\" <sip:1000@192.168.1.23:5060;fs_nat=yes;fs_path=sip%3A1000%40192.168.1.23%3A5060>")
        );
    }

    #[test]
    fn custom_callcenter_doc_examples() {
        let text = fixture!("esl-custom-callcenter-info-doc-examples.txt");
        let text = std::str::from_utf8(text).expect("utf-8");
        let actions: Vec<String> = text
            .split("\n\n")
            .filter(|block| !block.trim().is_empty())
            .map(|block| {
                let ev = EslEvent::parse_plain(block.as_bytes()).expect("parses");
                assert_eq!(ev.subclass().map(str::trim_end), Some("callcenter::info"));
                assert_eq!(ev.name().map(str::trim_end), Some("CUSTOM"));
                ev.get("CC-Action").unwrap_or_default().to_owned()
            })
            .collect();
        assert_eq!(actions.len(), 10);
        // Trailing spaces are data as published.
        assert_eq!(actions[2], "agent-offering ");
        assert_eq!(actions[0], "agent-status-change");
        assert_eq!(actions[9], "member-queue-end");
    }

    // --- splitting ------------------------------------------------------------------------

    #[test]
    fn every_split_point_decodes_identically() {
        for &bytes in FRAMED {
            let whole = decode_chunks(&[bytes], Limits::default());
            assert!(whole.1.is_none());
            // The full capture is large; every boundary in its first and last 4 KiB plus a
            // stride through the middle covers every frame boundary kind cheaply.
            let points: Vec<usize> = if bytes.len() > 20_000 {
                (0..4096)
                    .chain((4096..bytes.len() - 4096).step_by(97))
                    .chain(bytes.len() - 4096..=bytes.len())
                    .collect()
            } else {
                (0..=bytes.len()).collect()
            };
            for split in points {
                let (head, tail) = bytes.split_at(split);
                assert_eq!(
                    decode_chunks(&[head, tail], Limits::default()),
                    whole,
                    "split at {split}"
                );
            }
        }
    }

    #[test]
    fn byte_at_a_time_decodes_identically() {
        for &bytes in FRAMED {
            let whole = decode_chunks(&[bytes], Limits::default());
            let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(decode_chunks(&chunks, Limits::default()), whole);
        }
    }

    #[test]
    fn crlf_and_stray_blank_lines_are_tolerated() {
        let wire = b"\r\n\nContent-Type: api/response\r\nContent-Length: 3\r\n\r\nabc\
                     Content-Type: command/reply\nReply-Text: -ERR no such command\n\n";
        let msgs = decode_all(wire);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].body, b"abc");
        assert_eq!(msgs[0].content_type(), ContentType::ApiResponse);
        let reply = msgs[1].as_reply().expect("reply");
        assert!(!reply.is_ok());
        assert_eq!(reply.error_text().as_deref(), Some("no such command"));
    }

    // --- hostile input --------------------------------------------------------------------

    #[test]
    fn unterminated_header_block_over_limit() {
        let limits = Limits {
            max_header_bytes: 64,
            ..Limits::default()
        };
        let mut decoder = EslDecoder::new(limits);
        decoder.push(&[b'a'; 64]);
        assert_eq!(decoder.next_message(), Ok(None));
        decoder.push(b"a");
        let err = decoder.next_message().expect_err("too large");
        assert_eq!(err, EslError::HeaderBlockTooLarge { limit: 64 });
        assert_eq!(
            err.to_string(),
            "header block exceeds 64 bytes before its terminating blank line"
        );
        // Failed for good, even if valid input follows.
        decoder.push(b"Content-Type: auth/request\n\n");
        assert_eq!(decoder.next_message(), Err(err));
        assert!(decoder.is_failed());
        assert_eq!(decoder.buffered(), 0);

        // A terminated block over the limit fails the same way whatever the split.
        let big = format!("X-Pad: {}\n\n", "p".repeat(100));
        assert_eq!(
            decode_err(big.as_bytes(), limits),
            EslError::HeaderBlockTooLarge { limit: 64 }
        );
    }

    #[test]
    fn content_length_problems() {
        let limits = Limits {
            max_body_bytes: 10,
            ..Limits::default()
        };
        // Rejected as soon as the header block arrives, before any body byte.
        let mut decoder = EslDecoder::new(limits);
        decoder.push(b"Content-Type: api/response\nContent-Length: 11\n\n");
        assert_eq!(
            decoder.next_message(),
            Err(EslError::BodyTooLarge {
                length: 11,
                limit: 10
            })
        );
        assert_eq!(
            decode_err(b"Content-Length: 99999999999999999999999\n\n", limits),
            EslError::InvalidContentLength {
                value: "99999999999999999999999".into()
            }
        );
        for bad in ["abc", "-1", "+5", "1 2", "", "0x10", "1.0"] {
            let wire = format!("Content-Length: {bad}\n\n");
            assert_eq!(
                decode_err(wire.as_bytes(), limits),
                EslError::InvalidContentLength { value: bad.into() },
                "{bad:?}"
            );
        }
        assert_eq!(
            decode_err(b"Content-Length: 3\ncontent-length: 4\n\nabcd", limits),
            EslError::ConflictingContentLength {
                first: 3,
                second: 4
            }
        );
        // Agreeing duplicates are harmless.
        let msgs = decode_all(b"Content-Length: 2\nContent-Length: 2\n\nok");
        assert_eq!(msgs[0].body, b"ok");
    }

    #[test]
    fn malformed_header_lines() {
        let limits = Limits::default();
        assert_eq!(
            decode_err(b"Content-Type: api/response\nno colon here\n\n", limits),
            EslError::HeaderMissingColon { line: 2 }
        );
        assert_eq!(
            decode_err(b": empty name\n\n", limits),
            EslError::InvalidHeaderName { line: 1 }
        );
        assert_eq!(
            decode_err(b"Bad Name: x\n\n", limits),
            EslError::InvalidHeaderName { line: 1 }
        );
        assert_eq!(
            decode_err(b"Content-Type: \xff\xfe\n\n", limits),
            EslError::HeaderNotUtf8 { line: 1 }
        );
        let too_many = "A: b\n".repeat(5) + "\n";
        assert_eq!(
            decode_err(
                too_many.as_bytes(),
                Limits {
                    max_headers: 4,
                    ..limits
                }
            ),
            EslError::TooManyHeaders { limit: 4 }
        );
    }

    fn json_message(body: &str) -> EslMessage {
        EslMessage {
            headers: vec![("Content-Type".into(), "text/event-json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn hostile_json_events() {
        let parse = |body: &str| EslEvent::from_message(&json_message(body));
        assert_eq!(parse("[1,2]"), Err(EslError::EventJsonNotObject));
        assert_eq!(parse("\"str\""), Err(EslError::EventJsonNotObject));
        assert!(matches!(parse("{"), Err(EslError::EventJsonSyntax { .. })));
        assert!(matches!(parse(""), Err(EslError::EventJsonSyntax { .. })));
        assert_eq!(
            parse(r#"{"Event-Name":"X","Event-Sequence":5}"#),
            Err(EslError::EventJsonValueType {
                name: "Event-Sequence".into()
            })
        );
        assert_eq!(
            parse(r#"{"A":["x",null]}"#),
            Err(EslError::EventJsonValueType { name: "A".into() })
        );
        assert_eq!(
            parse(r#"{"_body":["x"]}"#),
            Err(EslError::EventJsonValueType {
                name: "_body".into()
            })
        );
        assert_eq!(
            parse(r#"{"Content-Length":"5","_body":"abc"}"#),
            Err(EslError::EventBodyLength {
                declared: 5,
                actual: 3
            })
        );
        assert_eq!(
            parse(r#"{"Content-Length":"x"}"#),
            Err(EslError::InvalidContentLength { value: "x".into() })
        );
        // Arrays are multi-value headers: repeated entries, in order.
        let ev = parse(
            r#"{"Event-Name":"CUSTOM","X-Multi":["a","b"],"Content-Length":"2","_body":"hi"}"#,
        )
        .expect("parses");
        assert_eq!(ev.get_all("X-Multi").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(ev.body.as_deref(), Some("hi"));
        let xml = EslMessage {
            headers: vec![("Content-Type".into(), "text/event-xml".into())],
            body: b"<event/>".to_vec(),
        };
        assert_eq!(
            EslEvent::from_message(&xml),
            Err(EslError::UnsupportedEventFormat {
                content_type: "text/event-xml".into()
            })
        );
    }

    #[test]
    fn hostile_plain_events() {
        for bad in ["a%", "a%4", "%zz", "%G0"] {
            let body = format!("Event-Name: X\nVal: {bad}\n\n");
            assert_eq!(
                EslEvent::parse_plain(body.as_bytes()),
                Err(EslError::BadPercentEscape { name: "Val".into() }),
                "{bad:?}"
            );
        }
        // Decodes to invalid UTF-8: the raw value is kept instead (lossless).
        let ev = EslEvent::parse_plain(b"Val: %FF%20x\n\n").expect("parses");
        assert_eq!(ev.get("Val"), Some("%FF%20x"));
        // `+` is literal, not a space.
        let ev = EslEvent::parse_plain(b"Reply: +OK%20done\n\n").expect("parses");
        assert_eq!(ev.get("Reply"), Some("+OK done"));
        assert_eq!(
            EslEvent::parse_plain(b"Content-Length: 5\n\nabc"),
            Err(EslError::EventBodyLength {
                declared: 5,
                actual: 3
            })
        );
        assert_eq!(
            EslEvent::parse_plain(b"Content-Length: 1\n\nabc"),
            Err(EslError::EventBodyLength {
                declared: 1,
                actual: 3
            })
        );
        assert_eq!(
            EslEvent::parse_plain(b"A: b\n\nstray"),
            Err(EslError::UnexpectedEventBody { extra: 5 })
        );
        assert_eq!(
            EslEvent::parse_plain(b"A: b\nnocolon\n\n"),
            Err(EslError::HeaderMissingColon { line: 2 })
        );
        assert_eq!(
            EslEvent::parse_plain(b"A: \xc3\x28\n\n"),
            Err(EslError::HeaderNotUtf8 { line: 1 })
        );
        // ARRAY:: values become repeated entries.
        let ev = EslEvent::parse_plain(b"X: ARRAY::one|:two%20b\r\n\r\n").expect("parses");
        assert_eq!(ev.get_all("x").collect::<Vec<_>>(), ["one", "two b"]);
        assert_eq!(EslEvent::parse_plain(b""), Ok(EslEvent::default()));
        let seq = EslEvent::parse_plain(b"Event-Sequence: -3\n").expect("parses");
        assert_eq!(seq.sequence(), None);
    }

    // --- the parsers against their previous implementation -------------------------------

    /// The event parsers as they were when every header was a pair of `String`s and JSON went
    /// through a `serde_json::Value` tree: the oracle the current ones must match, header for
    /// header and error for error.
    mod reference {
        use super::super::{merge_content_length, parse_header_line, EslError};

        pub type Parsed = Result<(Vec<(String, String)>, Option<String>), EslError>;

        fn percent_decode(raw: &str) -> Option<Vec<u8>> {
            let bytes = raw.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' {
                    let mut byte = [0u8];
                    hex::decode_to_slice(bytes.get(i + 1..i + 3)?, &mut byte).ok()?;
                    out.push(byte[0]);
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            Some(out)
        }

        fn decode_value(name: &str, raw: &str) -> Result<String, EslError> {
            if !raw.contains('%') {
                return Ok(raw.to_owned());
            }
            let bytes = percent_decode(raw).ok_or_else(|| EslError::BadPercentEscape {
                name: name.to_owned(),
            })?;
            Ok(String::from_utf8(bytes).unwrap_or_else(|_| raw.to_owned()))
        }

        fn push_multi(headers: &mut Vec<(String, String)>, name: &str, value: String) {
            match value.strip_prefix("ARRAY::") {
                Some(items) => {
                    headers.extend(items.split("|:").map(|v| (name.to_owned(), v.to_owned())))
                }
                None => headers.push((name.to_owned(), value)),
            }
        }

        pub fn parse_plain(body: &[u8]) -> Parsed {
            let mut headers = Vec::new();
            let mut content_length = None;
            let mut pos = 0;
            let mut number = 0;
            let rest = loop {
                let remaining = body.get(pos..).unwrap_or(&[]);
                let (raw_line, next) = match remaining.iter().position(|&b| b == b'\n') {
                    Some(i) => (&remaining[..i], pos + i + 1),
                    None => (remaining, body.len()),
                };
                let line = raw_line.strip_suffix(b"\r").unwrap_or(raw_line);
                if line.is_empty() {
                    break body.get(next..).unwrap_or(&[]);
                }
                number += 1;
                let (name, raw) = parse_header_line(number, line)?;
                let value = decode_value(name, raw)?;
                if name.eq_ignore_ascii_case("Content-Length") {
                    merge_content_length(&mut content_length, &value)?;
                }
                push_multi(&mut headers, name, value);
                pos = next;
            };
            let body = match content_length {
                None if rest.is_empty() => None,
                None => return Err(EslError::UnexpectedEventBody { extra: rest.len() }),
                Some(declared) => {
                    if u64::try_from(rest.len()).ok() != Some(declared) {
                        return Err(EslError::EventBodyLength {
                            declared,
                            actual: rest.len(),
                        });
                    }
                    Some(String::from_utf8_lossy(rest).into_owned())
                }
            };
            Ok((headers, body))
        }

        struct OrderedObject(Vec<(String, serde_json::Value)>);

        impl<'de> serde::Deserialize<'de> for OrderedObject {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visit;
                impl<'de> serde::de::Visitor<'de> for Visit {
                    type Value = OrderedObject;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a JSON object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<OrderedObject, A::Error> {
                        let mut entries = Vec::new();
                        while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                            entries.push(entry);
                        }
                        Ok(OrderedObject(entries))
                    }
                }
                d.deserialize_map(Visit)
            }
        }

        pub fn parse_json(body: &[u8]) -> Parsed {
            let entries = serde_json::from_slice::<OrderedObject>(body)
                .map_err(|e| {
                    if e.is_data() {
                        EslError::EventJsonNotObject
                    } else {
                        EslError::EventJsonSyntax {
                            detail: e.to_string(),
                        }
                    }
                })?
                .0;
            let mut headers = Vec::with_capacity(entries.len());
            let mut event_body = None;
            for (name, value) in entries {
                let type_error = || EslError::EventJsonValueType { name: name.clone() };
                match value {
                    serde_json::Value::String(s) if name == "_body" => event_body = Some(s),
                    serde_json::Value::String(s) => headers.push((name, s)),
                    serde_json::Value::Array(items) if name != "_body" => {
                        for item in items {
                            match item {
                                serde_json::Value::String(s) => headers.push((name.clone(), s)),
                                _ => return Err(type_error()),
                            }
                        }
                    }
                    _ => return Err(type_error()),
                }
            }
            let mut declared = None;
            for (name, value) in &headers {
                if name.eq_ignore_ascii_case("Content-Length") {
                    merge_content_length(&mut declared, value)?;
                }
            }
            if let Some(declared) = declared {
                let actual = event_body.as_ref().map_or(0, String::len);
                if u64::try_from(actual).ok() != Some(declared) {
                    return Err(EslError::EventBodyLength { declared, actual });
                }
            }
            Ok((headers, event_body))
        }
    }

    fn owned(result: Result<EslEvent, EslError>) -> reference::Parsed {
        result.map(|e| {
            let headers = e
                .headers()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect();
            (headers, e.body)
        })
    }

    fn assert_plain_as_before(body: &[u8]) {
        assert_eq!(
            owned(EslEvent::parse_plain(body)),
            reference::parse_plain(body),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }

    fn assert_json_as_before(body: &[u8]) {
        assert_eq!(
            owned(EslEvent::parse_json(body)),
            reference::parse_json(body),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }

    #[test]
    fn fixtures_parse_as_before() {
        let mut bodies = 0;
        for &bytes in FRAMED {
            for m in decode_all(bytes) {
                match m.content_type() {
                    ContentType::EventPlain => assert_plain_as_before(&m.body),
                    ContentType::EventJson => assert_json_as_before(&m.body),
                    _ => continue,
                }
                bodies += 1;
            }
        }
        for body in [
            fixture!("esl-channel-hangup-complete-2018.txt"),
            fixture!("esl-channel-hangup-complete-2015.txt"),
            fixture!("esl-custom-sofia-register.txt"),
            fixture!("esl-custom-callcenter-info-doc-examples.txt"),
        ] {
            assert_plain_as_before(body);
            bodies += 1;
        }
        for body in [
            fixture!("esl-channel-hangup-complete-bleg-cancelled-2025.json"),
            fixture!("esl-channel-hangup-complete-originate-answered-2025.json"),
        ] {
            assert_json_as_before(body);
            bodies += 1;
        }
        assert!(bodies > 20, "{bodies}");
    }

    #[test]
    fn awkward_plain_bodies_parse_as_before() {
        for body in [
            &b""[..],
            b"\n",
            b"\r\n",
            b"\r",
            b"A: b",
            b"A: b\r",
            b"A: b\n\r",
            b"A: b\n\r\xff",
            b"A: b\nC: \xff\n\n",
            b"\xff: b\n\n",
            b"nocolon\xff\n\n",
            b"A: %C3%A9\nB: \xc3",
            b"A: \xc3%A9\n\n",
            b"A: %41\xff\n\n",
            b"A: %\xff\n\n",
            b"A:\t \tx%20y\n\n",
            b"A: ARRAY::\n\n",
            b"A: ARRAY::|:\n\n",
            b"A: ARRAY%3A%3Aa%7C%3Ab|:c\n\n",
            b"A: ARRAY::%FF|:x\n\n",
            b"A%: x\n\n",
            b"A b: %zz\n\n",
            b"Content-Length: 2\n\n\xff\xfe",
            b"Content-Length: %32\n\nab",
            b"Content-Length: \xff\n\n",
            b"Content-Length: 1\ncontent-length: 2\n\nab",
            b"A: b\n\nbody without length",
            b"X: 100%25\nY: %2525\n\n",
        ] {
            assert_plain_as_before(body);
        }
    }

    #[test]
    fn awkward_json_bodies_parse_as_before() {
        for body in [
            r#"{"A":{"k":"\ud800"}}"#,
            r#"{"A":5,"B":"\ud800"}"#,
            r#"{"A":[1,"\ud800"]}"#,
            r#"{"_body":["\ud800"]}"#,
            r#"{"_body":{"a":1e999}}"#,
            r#"{"A":5,"B":"x"#,
            r#"{"A":[["x"]],"B":1}"#,
            r#"{"A":["x",{"y":[]}]}"#,
            r#"{"_body":"a","_body":"bc","Content-Length":"2"}"#,
            r#"{"_bo\u0064y":"x","A\u00e9":"\"q\"\n"}"#,
            r#"{"A":"x"} trailing"#,
            r#"{} "#,
            "{\"A\":\"\u{1F600}\",\"B\":[\"\\u00e9\",\"\\t\"]}",
        ] {
            assert_json_as_before(body.as_bytes());
        }
        let deep = format!("{{\"A\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert_json_as_before(deep.as_bytes());
    }

    /// Fragments that plain bodies are made of, good and bad, for the generators below.
    const PLAIN_PIECES: &[&[u8]] = &[
        b"A",
        b"Event-Name",
        b"variable_x",
        b"Content-Length",
        b"content-length",
        b":",
        b": ",
        b" ",
        b"\t",
        b"\n",
        b"\n",
        b"\r\n",
        b"\r",
        b"%",
        b"%2",
        b"%20",
        b"%41",
        b"%7C%3A",
        b"%FF",
        b"%C3",
        b"%A9",
        b"%zz",
        b"%25",
        b"ARRAY::",
        b"ARRAY%3A%3A",
        b"|:",
        b"+OK",
        b"0",
        b"3",
        b"12",
        b"\xff",
        b"\xc3",
        b"\xa9",
        "é".as_bytes(),
        b"\x7f",
        b"x y",
        b"abcdefghijklmnop",
    ];

    fn plain_soup() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(PLAIN_PIECES), 0..48).prop_map(|p| p.concat())
    }

    /// Mostly well-formed plain events: lines of a name, `: `, value fragments, then maybe a
    /// body with (usually) its Content-Length. Bad names, separators and fragments are rare
    /// enough that most events parse.
    fn plain_event() -> impl Strategy<Value = Vec<u8>> {
        let name = prop_oneof![
            12 => prop::sample::select(&[
                "Event-Name", "variable_a", "Variable_A", "Caller-Channel-Created-Time", "X", "Ä",
            ][..]),
            1 => prop::sample::select(&["Bad Name", "", "Content-Length", "A\x7f"][..]),
        ];
        let sep = prop_oneof![
            12 => prop::sample::select(&[": ", ":", ":\t "][..]),
            1 => prop::sample::select(&["", "::"][..]),
        ];
        let piece = prop_oneof![
            16 => prop::sample::select(&[
                "a", "abcdefghijklmnop", " ", "%20", "%41", "%7C%3A", "%25", "%C3%A9", "é", "+OK",
                "0", "12", "ARRAY::", "ARRAY%3A%3A", "|:",
            ][..]).prop_map(|p| p.as_bytes().to_vec()),
            1 => prop::sample::select(&["%", "%2", "%zz", "%FF", "%C3", "\x7f"][..])
                .prop_map(|p| p.as_bytes().to_vec()),
            1 => prop::sample::select(vec![vec![0xff], vec![0xc3], vec![b'\r']]),
        ];
        let eol = prop::sample::select(&["\n", "\n", "\r\n"][..]);
        let line = (name, sep, prop::collection::vec(piece, 0..5), eol).prop_map(|(n, s, v, e)| {
            [n.as_bytes(), s.as_bytes(), &v.concat(), e.as_bytes()].concat()
        });
        (
            prop::collection::vec(line, 0..12),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..24)),
            any::<bool>(),
            0..10u8,
        )
            .prop_map(|(lines, body, blank, declare)| {
                let mut out = lines.concat();
                if let Some(body) = body {
                    if declare > 1 {
                        out.extend_from_slice(
                            format!("Content-Length: {}\n", body.len()).as_bytes(),
                        );
                    }
                    out.extend_from_slice(if blank { b"\n" } else { b"\r\n" });
                    out.extend_from_slice(&body);
                } else if blank {
                    out.push(b'\n');
                }
                out
            })
    }

    /// JSON events: mostly objects of strings and arrays of strings, sometimes with wrongly
    /// typed or malformed members, trailing junk or a truncation.
    fn json_event() -> impl Strategy<Value = Vec<u8>> {
        let key = prop_oneof![
            12 => prop::sample::select(&[
                r#""Event-Name""#, r#""_body""#, r#""Content-Length""#, r#""content-length""#,
                r#""A""#, r#""\u0041""#, r#""_bo\u0064y""#,
            ][..]),
            1 => Just(r#""\ud800""#),
        ];
        let string = prop_oneof![
            12 => prop::sample::select(&[
                r#""a""#, r#""""#, r#""x\"y""#, r#""\u00e9""#, r#""\n""#, r#""0""#, r#""1""#,
                r#""2""#, r#""ARRAY::a|:b""#, "\"\u{1F600}\"",
            ][..]),
            1 => Just(r#""\ud800""#),
        ];
        let value = prop_oneof![
            8 => string.clone().prop_map(str::to_owned),
            3 => prop::collection::vec(string, 0..3).prop_map(|s| format!("[{}]", s.join(","))),
            1 => prop::sample::select(&[
                "5", "null", "true", "1e999", "-0", "[1]", "[[\"a\"]]", "[\"a\",null]",
                "{}", "{\"k\":\"v\"}", "{\"k\":\"\\ud800\"}", "{\"k\":[1e999]}",
            ][..]).prop_map(str::to_owned),
        ];
        (
            prop::collection::vec((key, value), 0..8),
            prop_oneof![8 => Just(""), 1 => prop::sample::select(&[" ", "}", "x", ",", "\""][..])],
            any::<prop::sample::Index>(),
            0..8u8,
        )
            .prop_map(|(members, tail, cut, truncate)| {
                let members: Vec<String> =
                    members.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                let mut text = format!("{{{}}}{tail}", members.join(",")).into_bytes();
                if truncate == 0 {
                    text.truncate(cut.index(text.len() + 1));
                }
                text
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn plain_soup_parses_as_before(body in plain_soup()) {
            prop_assert_eq!(owned(EslEvent::parse_plain(&body)), reference::parse_plain(&body));
        }

        #[test]
        fn plain_events_parse_as_before(body in plain_event()) {
            prop_assert_eq!(owned(EslEvent::parse_plain(&body)), reference::parse_plain(&body));
        }

        #[test]
        fn json_events_parse_as_before(body in json_event()) {
            prop_assert_eq!(owned(EslEvent::parse_json(&body)), reference::parse_json(&body));
        }

        #[test]
        fn arbitrary_bytes_parse_as_before(body in prop::collection::vec(any::<u8>(), 0..256)) {
            prop_assert_eq!(owned(EslEvent::parse_plain(&body)), reference::parse_plain(&body));
            prop_assert_eq!(owned(EslEvent::parse_json(&body)), reference::parse_json(&body));
        }
    }

    #[test]
    fn events_compare_and_print_by_their_headers() {
        let pairs = [("Event-Name", "CUSTOM"), ("X", "a"), ("X", "b")];
        let built = EslEvent::from_pairs(&pairs);
        let parsed =
            EslEvent::parse_plain(b"Event-Name: CUSTOM\nX: ARRAY::a|:b\n\n").expect("parses");
        assert_eq!(built, parsed, "same headers, differently laid out");
        assert_eq!(built.headers().len(), 3);
        assert_eq!(built.headers().next_back(), Some(("X", "b")));
        assert_eq!(built.get_all("x").collect::<Vec<_>>(), ["a", "b"]);
        assert_ne!(built, EslEvent::from_pairs(&pairs[..2]));
        assert_eq!(
            format!("{built:?}"),
            r#"EslEvent { headers: [("Event-Name", "CUSTOM"), ("X", "a"), ("X", "b")], body: None }"#
        );
        let mut with_body = built.clone();
        with_body.body = Some("x".into());
        assert_ne!(built, with_body);
    }

    #[test]
    fn lookups_compare_names_as_before() {
        let ev = EslEvent::from_pairs(&[
            ("variable_A", "1"),
            ("variable_a", "2"),
            ("VARIABLE_b", "3"),
            ("Content-Type", "x"),
        ]);
        assert_eq!(ev.var("a"), Some("1"), "the name is case-insensitive");
        assert_eq!(ev.var("b"), None, "the prefix is not");
        assert_eq!(ev.get("content-type"), Some("x"));
        assert_eq!(ev.get("content-typ"), None);
        assert_eq!(ev.get(""), None);
        assert_eq!(ev.var(""), None);
    }

    // --- round trip -----------------------------------------------------------------------

    /// Test-only server-side encoder: headers, Content-Length when there is a body, blank line.
    fn encode_server(headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in headers {
            out.extend_from_slice(format!("{name}: {value}\n").as_bytes());
        }
        if !body.is_empty() {
            out.extend_from_slice(format!("Content-Length: {}\n", body.len()).as_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(body);
        out
    }

    fn header_strategy() -> impl Strategy<Value = (String, String)> {
        (
            "[A-Za-z][A-Za-z0-9_-]{0,15}".prop_filter("not Content-Length", |n| {
                !n.eq_ignore_ascii_case("Content-Length")
            }),
            // Leading blanks are dropped by design, and CR/LF cannot be inside a value.
            "([^\r\n \t][^\r\n]{0,30})?",
        )
    }

    fn messages_strategy() -> impl Strategy<Value = Vec<EslMessage>> {
        prop::collection::vec(
            (
                prop::collection::vec(header_strategy(), 1..6),
                prop::collection::vec(any::<u8>(), 0..64),
            )
                .prop_map(|(headers, body)| EslMessage { headers, body }),
            1..5,
        )
    }

    proptest! {
        #[test]
        fn server_messages_round_trip(messages in messages_strategy(), split in any::<prop::sample::Index>()) {
            let wire: Vec<u8> = messages
                .iter()
                .flat_map(|m| encode_server(&m.headers, &m.body))
                .collect();
            let (head, tail) = wire.split_at(split.index(wire.len() + 1));
            let (decoded, err) = decode_chunks(&[head, tail], Limits::default());
            prop_assert_eq!(err, None);
            prop_assert_eq!(decoded.len(), messages.len());
            for (got, want) in decoded.iter().zip(&messages) {
                let mut headers = got.headers.clone();
                headers.retain(|(n, _)| n != "Content-Length");
                prop_assert_eq!(&headers, &want.headers);
                prop_assert_eq!(&got.body, &want.body);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
            let small = Limits { max_header_bytes: 64, max_headers: 4, max_body_bytes: 32 };
            for limits in [Limits::default(), small] {
                let (msgs, _) = decode_chunks(&[&data], limits);
                for m in &msgs {
                    let _ = EslEvent::from_message(m);
                }
            }
            let _ = EslEvent::parse_plain(&data);
            let _ = EslEvent::parse_json(&data);
        }
    }

    // --- commands -------------------------------------------------------------------------

    fn encoded(command: Command) -> String {
        String::from_utf8(command.encode().expect("encodes")).expect("utf-8")
    }

    #[test]
    fn command_encoding() {
        assert_eq!(
            encoded(Command::Auth {
                password: "ClueCon".into()
            }),
            "auth ClueCon\n\n"
        );
        assert_eq!(
            encoded(Command::Events {
                format: EventFormat::Json,
                names: [
                    "CHANNEL_CREATE",
                    "BACKGROUND_JOB",
                    "CUSTOM",
                    "callcenter::info"
                ]
                .map(String::from)
                .to_vec(),
            }),
            "event json CHANNEL_CREATE BACKGROUND_JOB CUSTOM callcenter::info\n\n"
        );
        assert_eq!(
            encoded(Command::Events {
                format: EventFormat::Plain,
                names: vec!["ALL".into()],
            }),
            "event plain ALL\n\n"
        );
        assert_eq!(
            encoded(Command::Filter {
                header: "Unique-ID".into(),
                value: "abc-123".into()
            }),
            "filter Unique-ID abc-123\n\n"
        );
        assert_eq!(
            encoded(Command::Api {
                command: "show channels as json".into()
            }),
            "api show channels as json\n\n"
        );
        assert_eq!(
            encoded(Command::BgApi {
                command: "originate user/1000 &park".into(),
                job_uuid: "d2c8a4d0-1111-4e7a-9a55-0123456789ab".into(),
            }),
            "bgapi originate user/1000 &park\nJob-UUID: d2c8a4d0-1111-4e7a-9a55-0123456789ab\n\n"
        );
        assert_eq!(encoded(Command::Exit), "exit\n\n");
        assert_eq!(encoded(Command::Linger), "linger\n\n");
        assert_eq!(encoded(Command::NoEvents), "noevents\n\n");
    }

    #[test]
    fn command_injection_is_refused() {
        let cases = [
            (
                Command::Auth {
                    password: "x\n\napi shutdown".into(),
                },
                "password",
            ),
            (
                Command::Api {
                    command: "status\r\nexit".into(),
                },
                "api command",
            ),
            (
                Command::BgApi {
                    command: "status\r".into(),
                    job_uuid: "u".into(),
                },
                "bgapi command",
            ),
            (
                Command::BgApi {
                    command: "status".into(),
                    job_uuid: "u\nContent-Length: 9".into(),
                },
                "job uuid",
            ),
            (
                Command::Filter {
                    header: "Unique-ID".into(),
                    value: "a\nb".into(),
                },
                "filter value",
            ),
            (
                Command::Events {
                    format: EventFormat::Json,
                    names: vec!["ALL\n".into()],
                },
                "event name",
            ),
        ];
        for (command, what) in cases {
            let err = command.encode().expect_err("refused");
            assert_eq!(err, EslError::CommandInjection { what });
            assert!(err.to_string().contains("contains CR or LF"));
        }
        assert_eq!(
            Command::Events {
                format: EventFormat::Json,
                names: vec![]
            }
            .encode(),
            Err(EslError::EmptyArgument {
                what: "event names"
            })
        );
        assert_eq!(
            Command::Filter {
                header: "Unique ID".into(),
                value: "x".into()
            }
            .encode(),
            Err(EslError::NotAToken {
                what: "filter header"
            })
        );
        assert_eq!(
            Command::Api {
                command: "  ".into()
            }
            .encode(),
            Err(EslError::EmptyArgument {
                what: "api command"
            })
        );
    }

    // --- session --------------------------------------------------------------------------

    fn reply(text: &str) -> EslMessage {
        EslMessage {
            headers: vec![
                ("Content-Type".into(), "command/reply".into()),
                ("Reply-Text".into(), text.into()),
            ],
            body: Vec::new(),
        }
    }

    fn subscribed_session() -> EslSession {
        let mut s = EslSession::new("ClueCon", EventFormat::Plain, &["BACKGROUND_JOB"], 4)
            .expect("valid config");
        let msgs = decode_all(SESSION);
        s.handle(&msgs[0]).expect("auth request");
        s.handle(&msgs[1]).expect("accepted");
        s.handle(&msgs[2]).expect("subscribed");
        s
    }

    #[test]
    fn session_handshake_and_bgapi_from_capture() {
        let msgs = decode_all(SESSION);
        let mut s = EslSession::new("ClueCon", EventFormat::Plain, &["BACKGROUND_JOB"], 4)
            .expect("valid config");
        assert_eq!(s.state(), SessionState::AwaitingAuthRequest);
        assert!(matches!(
            s.command(&Command::Exit),
            Err(EslError::NotAuthenticated)
        ));
        assert_eq!(
            s.handle(&msgs[0]),
            Ok(vec![SessionOutput::Send(b"auth ClueCon\n\n".to_vec())])
        );
        assert_eq!(s.state(), SessionState::Authenticating);
        assert_eq!(
            s.handle(&msgs[1]),
            Ok(vec![
                SessionOutput::Authenticated,
                SessionOutput::Send(b"event plain BACKGROUND_JOB\n\n".to_vec())
            ])
        );
        assert_eq!(s.handle(&msgs[2]), Ok(vec![SessionOutput::Subscribed]));
        assert_eq!(s.state(), SessionState::Subscribed);

        let uuid = "43e14ab9-38b1-4187-9f08-e13f35136bb2";
        let bytes = s
            .command(&Command::BgApi {
                command: "originate sofia/external/1000".into(),
                job_uuid: uuid.into(),
            })
            .expect("sent");
        assert!(bytes.ends_with(format!("Job-UUID: {uuid}\n\n").as_bytes()));
        assert_eq!(s.outstanding_jobs(), 1);
        assert_eq!(
            s.handle(&msgs[3]),
            Ok(vec![SessionOutput::JobAccepted {
                job_uuid: uuid.into()
            }])
        );
        let out = s.handle(&msgs[4]).expect("event");
        match out.as_slice() {
            [SessionOutput::JobCompleted { job_uuid, event }] => {
                assert_eq!(job_uuid, uuid);
                assert_eq!(
                    event.body.as_deref(),
                    Some("-ERR RECOVERY_ON_TIMER_EXPIRE\n")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(s.outstanding_jobs(), 0);
        // The same event again is no longer a tracked job: surfaced as a plain event.
        assert!(matches!(
            s.handle(&msgs[4]).as_deref(),
            Ok([SessionOutput::Event(_)])
        ));
    }

    #[test]
    fn session_auth_failure_closes() {
        let mut s = EslSession::new("wrong", EventFormat::Json, &["ALL"], 4).expect("config");
        s.handle(&decode_all(SESSION)[0]).expect("auth request");
        assert_eq!(
            s.handle(&reply("-ERR invalid")),
            Ok(vec![SessionOutput::Closed(CloseReason::AuthFailed(
                "-ERR invalid".into()
            ))])
        );
        assert_eq!(s.state(), SessionState::Closed);
        assert_eq!(s.handle(&reply("+OK")), Err(EslError::SessionClosed));
    }

    #[test]
    fn session_rejects_bad_config() {
        assert!(matches!(
            EslSession::new("a\nb", EventFormat::Json, &["ALL"], 1),
            Err(EslError::CommandInjection { what: "password" })
        ));
        assert!(matches!(
            EslSession::new("p", EventFormat::Json, &[], 1),
            Err(EslError::EmptyArgument { .. })
        ));
    }

    #[test]
    fn a_forgotten_job_frees_its_slot() {
        let mut s = subscribed_session();
        let bgapi = |i: usize| Command::BgApi {
            command: "originate".into(),
            job_uuid: format!("job-{i}"),
        };
        for i in 0..4 {
            s.command(&bgapi(i)).expect("within bound");
            s.handle(&reply(&format!("+OK Job-UUID: job-{i}")))
                .expect("accepted");
        }
        // FreeSWITCH dropped every BACKGROUND_JOB: the slots stay taken...
        assert_eq!(
            s.command(&bgapi(4)),
            Err(EslError::TooManyOutstanding { limit: 4 })
        );
        // ...until the jobs nobody awaits are forgotten.
        assert!(s.forget_job("job-0"));
        assert!(!s.forget_job("job-0"));
        assert_eq!(s.outstanding_jobs(), 3);
        s.command(&bgapi(4)).expect("a slot is free again");
    }

    #[test]
    fn session_bounds_and_correlation() {
        let mut s = subscribed_session();
        for i in 0..4 {
            s.command(&Command::BgApi {
                command: "status".into(),
                job_uuid: format!("job-{i}"),
            })
            .expect("within bound");
        }
        assert_eq!(
            s.command(&Command::Api {
                command: "status".into()
            }),
            Err(EslError::TooManyOutstanding { limit: 4 })
        );
        // Replies come back in order: accept job-0, refuse job-1.
        assert_eq!(
            s.handle(&reply("+OK Job-UUID: job-0")),
            Ok(vec![SessionOutput::JobAccepted {
                job_uuid: "job-0".into()
            }])
        );
        assert_eq!(
            s.handle(&reply("-ERR no reply")),
            Ok(vec![SessionOutput::JobRejected {
                job_uuid: "job-1".into(),
                reason: "-ERR no reply".into()
            }])
        );
        assert_eq!(s.outstanding_jobs(), 3);
        assert_eq!(
            s.command(&Command::BgApi {
                command: "status".into(),
                job_uuid: "job-2".into()
            }),
            Err(EslError::DuplicateJob {
                job_uuid: "job-2".into()
            })
        );
    }

    #[test]
    fn session_api_and_disconnect() {
        let mut s = subscribed_session();
        s.command(&Command::Api {
            command: "status".into(),
        })
        .expect("sent");
        let api = decode_all(API);
        assert_eq!(
            s.handle(&api[0]),
            Ok(vec![SessionOutput::ApiResponse(
                b"+OK [Success]\n".to_vec()
            )])
        );
        let exit = decode_all(EXIT);
        s.command(&Command::Exit).expect("sent");
        assert_eq!(
            s.handle(&exit[0]),
            Ok(vec![SessionOutput::CommandReply("+OK bye".into())])
        );
        match s.handle(&exit[1]).as_deref() {
            Ok([SessionOutput::Closed(CloseReason::Disconnected(text))]) => {
                assert!(text.contains("See you at ClueCon!"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(s.state(), SessionState::Closed);
        assert_eq!(s.command(&Command::Exit), Err(EslError::SessionClosed));

        let mut s = subscribed_session();
        let rude = EslMessage {
            headers: vec![("Content-Type".into(), "text/rude-rejection".into())],
            body: b"Access Denied, go away.\n".to_vec(),
        };
        assert_eq!(
            s.handle(&rude),
            Ok(vec![SessionOutput::Closed(CloseReason::Rejected(
                "Access Denied, go away.\n".into()
            ))])
        );
    }
}
