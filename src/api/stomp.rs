//! STOMP 1.2 frame codec for the agent-desktop event stream, sans-IO.
//!
//! Agent desktops and supervisor screens run stomp.js / @stomp/stompjs over sockjs-client; the
//! shell unwraps SockJS (see `sockjs`), feeds the text into a [`Decoder`] (or calls [`decode`]
//! on its own buffer) and writes [`Frame::encode`] output back. Nothing here touches sockets or
//! timers, so the whole wire format is testable and fuzzable in isolation.
//!
//! Where the specification leaves room, this codec chooses:
//! - Leniency only where real clients need it: a raw `:` inside a header value is kept (the line
//!   splits at the first `:`), because CONNECT frames cannot escape it and passcodes may hold one.
//! - Strictness everywhere else: a CR not followed by LF, a NUL before the blank line, or an
//!   undefined escape is fatal, since each means the peer and we disagree about where things end.
//! - Every size is bounded by [`Limits`]: the decoder never asks the shell to buffer more than
//!   one frame's worth of bytes, and a content-length that cannot fit fails at once instead of
//!   waiting for bytes that would be refused anyway.
//!
//! Any error means the stream can no longer be delimited: the shell should send an ERROR frame
//! if it can and close the connection.

use std::fmt;

/// Versions [`negotiate_version`] can pick, in the form the `version` header of an ERROR frame
/// uses to tell a client what it could have asked for.
pub const SUPPORTED_VERSIONS: &str = "1.0,1.1,1.2";

const CONTENT_LENGTH: &str = "content-length";

/// Stands in for characters a header cannot carry on the wire (see [`Frame::encode`]).
const UNREPRESENTABLE: char = '\u{FFFD}';

/// Caps on what one frame may occupy; exceeding any of them is an error, never a reason to
/// buffer more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Whole frame from the first command byte through the terminating NUL.
    pub max_frame_bytes: usize,
    /// Header lines, repeated names included.
    pub max_headers: usize,
    /// Command line, header lines and the blank line that ends them, EOLs included.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    /// 64 KiB frames match the message size limit Spring's STOMP endpoint applies, which the
    /// desktop clients were written against; 8 KiB of headers leaves room for a bearer token in
    /// CONNECT.
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 * 1024,
            max_headers: 64,
            max_header_bytes: 8 * 1024,
        }
    }
}

/// Frame commands, client and server side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Connect,
    Stomp,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    Disconnect,
    Connected,
    Message,
    Receipt,
    Error,
}

impl Command {
    pub const ALL: [Command; 15] = [
        Command::Connect,
        Command::Stomp,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Ack,
        Command::Nack,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Disconnect,
        Command::Connected,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Connected => "CONNECTED",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// Commands are case-sensitive on the wire.
    pub fn from_wire(s: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Frames a server sends; everything else comes from clients.
    pub fn is_server(self) -> bool {
        matches!(
            self,
            Command::Connected | Command::Message | Command::Receipt | Command::Error
        )
    }

    /// CONNECT and CONNECTED keep STOMP 1.0's unescaped headers so 1.0 peers can still
    /// negotiate; the specification names only these two, so STOMP frames are escaped.
    pub fn escapes_headers(self) -> bool {
        !matches!(self, Command::Connect | Command::Connected)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One STOMP frame, headers unescaped and in wire order (repeats kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub command: Command,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One unit at the front of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Frame(Frame),
    /// One or more bare EOLs: the peer's heart-beat (or the optional EOLs after a frame's NUL,
    /// which are indistinguishable and prove liveness just as well).
    HeartBeat,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StompError {
    #[error("frame exceeds {limit} bytes")]
    FrameTooLarge { limit: usize },
    #[error("frame headers exceed {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("frame has more than {limit} headers")]
    TooManyHeaders { limit: usize },
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("invalid UTF-8 in {0}")]
    InvalidUtf8(&'static str),
    #[error("header line without ':'")]
    HeaderWithoutColon,
    #[error("header line with an empty name")]
    EmptyHeaderName,
    #[error("undefined escape sequence \"\\{0}\" in header")]
    UndefinedEscape(String),
    #[error("header ends inside an escape sequence")]
    TruncatedEscape,
    #[error("carriage return not followed by line feed")]
    BareCarriageReturn,
    #[error("NUL byte before the end of the frame headers")]
    NulInHeaders,
    #[error("content-length is not a number")]
    InvalidContentLength,
    #[error("no NUL after the content-length bytes of the body")]
    MissingNul,
    #[error(
        "no supported STOMP version in accept-version {0:?} (supported: {SUPPORTED_VERSIONS})"
    )]
    UnsupportedVersion(String),
    #[error("heart-beat is not two comma-separated numbers")]
    InvalidHeartBeat,
}

/// What [`step`] found at the front of a buffer.
enum Step {
    Done(Decoded, usize),
    /// Nothing can complete before the buffer holds at least `need` bytes.
    Incomplete {
        need: usize,
    },
}

/// Decodes the unit at the front of `buf`: a frame, or a run of heart-beat EOLs.
///
/// `Ok(None)` means more bytes are needed; `Ok(Some((unit, n)))` means the first `n` bytes are
/// consumed. Because heart-beats are returned rather than skipped, a shell that drops consumed
/// bytes never accumulates an idle client's EOLs.
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Option<(Decoded, usize)>, StompError> {
    Ok(match step(buf, limits)? {
        Step::Done(unit, consumed) => Some((unit, consumed)),
        Step::Incomplete { .. } => None,
    })
}

fn step(buf: &[u8], limits: &Limits) -> Result<Step, StompError> {
    let mut eols = 0;
    loop {
        match buf.get(eols) {
            Some(b'\n') => eols += 1,
            Some(b'\r') => match buf.get(eols + 1) {
                Some(b'\n') => eols += 2,
                Some(_) => return Err(StompError::BareCarriageReturn),
                None => break,
            },
            _ => break,
        }
    }
    if eols > 0 {
        return Ok(Step::Done(Decoded::HeartBeat, eols));
    }
    if buf.is_empty() {
        return Ok(Step::Incomplete { need: 1 });
    }
    parse_frame(buf, limits)
}

fn parse_frame(buf: &[u8], limits: &Limits) -> Result<Step, StompError> {
    // The header section must fit both limits; report whichever one is actually binding.
    let (head_limit, head_error) = if limits.max_header_bytes <= limits.max_frame_bytes {
        let limit = limits.max_header_bytes;
        (limit, StompError::HeadersTooLarge { limit })
    } else {
        let limit = limits.max_frame_bytes;
        (limit, StompError::FrameTooLarge { limit })
    };
    let head_incomplete = || {
        if buf.len() >= head_limit {
            Err(head_error.clone())
        } else {
            Ok(Step::Incomplete {
                need: buf.len() + 1,
            })
        }
    };

    let Some((line, mut pos)) = read_line(buf, 0, head_limit)? else {
        return head_incomplete();
    };
    let command = parse_command(line)?;

    let mut headers = Vec::new();
    loop {
        let Some((line, next)) = read_line(buf, pos, head_limit)? else {
            return head_incomplete();
        };
        pos = next;
        if line.is_empty() {
            break;
        }
        if headers.len() >= limits.max_headers {
            return Err(StompError::TooManyHeaders {
                limit: limits.max_headers,
            });
        }
        headers.push(parse_header(line, command.escapes_headers())?);
    }

    let body_start = pos;
    let too_large = StompError::FrameTooLarge {
        limit: limits.max_frame_bytes,
    };
    // Repeated headers: the first occurrence is the one that counts (STOMP 1.2).
    let content_length = headers
        .iter()
        .find(|(name, _)| name == CONTENT_LENGTH)
        .map(|(_, value)| value.as_str());
    let nul_at = match content_length {
        Some(value) => {
            let len = parse_content_length(value, &too_large)?;
            let nul_at = body_start.checked_add(len).ok_or(too_large.clone())?;
            // Refuse now rather than wait for bytes that could never be accepted.
            if nul_at >= limits.max_frame_bytes {
                return Err(too_large);
            }
            match buf.get(nul_at) {
                None => return Ok(Step::Incomplete { need: nul_at + 1 }),
                Some(0) => nul_at,
                Some(_) => return Err(StompError::MissingNul),
            }
        }
        None => {
            let scan_end = buf.len().min(limits.max_frame_bytes);
            let found = buf
                .get(body_start..scan_end)
                .and_then(|window| window.iter().position(|&b| b == 0));
            match found {
                Some(offset) => body_start + offset,
                None if buf.len() >= limits.max_frame_bytes => return Err(too_large),
                None => {
                    return Ok(Step::Incomplete {
                        need: buf.len() + 1,
                    })
                }
            }
        }
    };

    let body = buf.get(body_start..nul_at).unwrap_or_default().to_vec();
    let frame = Frame {
        command,
        headers,
        body,
    };
    Ok(Step::Done(Decoded::Frame(frame), nul_at + 1))
}

/// The line starting at `start` (EOL stripped) and the offset just past its LF, looking no
/// further than `scan_end`. `None` means no LF yet within reach.
fn read_line(
    buf: &[u8],
    start: usize,
    scan_end: usize,
) -> Result<Option<(&[u8], usize)>, StompError> {
    let window = buf.get(start..scan_end.min(buf.len())).unwrap_or_default();
    for (i, &byte) in window.iter().enumerate() {
        match byte {
            b'\n' => {
                let line = window.get(..i).unwrap_or_default();
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                return Ok(Some((line, start + i + 1)));
            }
            // A CR at the window's end may still be followed by LF once more bytes arrive.
            b'\r' if !matches!(window.get(i + 1), Some(b'\n') | None) => {
                return Err(StompError::BareCarriageReturn);
            }
            // Before the blank line a NUL can only mean a truncated or garbled frame; failing
            // here beats waiting for a blank line that will never come.
            0 => return Err(StompError::NulInHeaders),
            _ => {}
        }
    }
    Ok(None)
}

fn parse_command(line: &[u8]) -> Result<Command, StompError> {
    let text = std::str::from_utf8(line).map_err(|_| StompError::InvalidUtf8("command"))?;
    Command::from_wire(text).ok_or_else(|| StompError::UnknownCommand(excerpt(text)))
}

/// Keeps error messages (which end up in logs and ERROR frames) short whatever the peer sent.
fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 32;
    let mut out: String = text.chars().take(MAX_CHARS).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

fn parse_header(line: &[u8], escaped: bool) -> Result<(String, String), StompError> {
    let text = std::str::from_utf8(line).map_err(|_| StompError::InvalidUtf8("header"))?;
    let (name, value) = text.split_once(':').ok_or(StompError::HeaderWithoutColon)?;
    if name.is_empty() {
        return Err(StompError::EmptyHeaderName);
    }
    if escaped {
        Ok((unescape(name)?, unescape(value)?))
    } else {
        Ok((name.to_owned(), value.to_owned()))
    }
}

fn unescape(text: &str) -> Result<String, StompError> {
    if !text.contains('\\') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('c') => out.push(':'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                return Err(StompError::UndefinedEscape(
                    other.escape_debug().to_string(),
                ))
            }
            None => return Err(StompError::TruncatedEscape),
        }
    }
    Ok(out)
}

fn parse_content_length(value: &str, too_large: &StompError) -> Result<usize, StompError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StompError::InvalidContentLength);
    }
    // All digits, so the only possible failure is overflow: a length no limit could admit.
    value.parse().map_err(|_| too_large.clone())
}

impl Frame {
    pub fn new(command: Command) -> Frame {
        Frame {
            command,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Frame {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Frame {
        self.body = body.into();
        self
    }

    /// The value of the first header called `name`: STOMP 1.2 says repeats after it are
    /// ignored (a proxy may have prepended an override).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first complete frame in `buf`, skipping heart-beats before it; `Ok(None)` if more
    /// bytes are needed. The count includes the skipped heart-beats.
    ///
    /// Suited to whole buffers (one SockJS message, a test vector). For a long-lived stream use
    /// [`decode`] or [`Decoder`]: they hand heart-beats back so the buffer can drop them.
    pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Frame, usize)>, StompError> {
        let mut offset = 0;
        loop {
            let rest = buf.get(offset..).unwrap_or_default();
            match step(rest, limits)? {
                Step::Done(Decoded::HeartBeat, n) => offset += n,
                Step::Done(Decoded::Frame(frame), n) => return Ok(Some((frame, offset + n))),
                Step::Incomplete { .. } => return Ok(None),
            }
        }
    }

    /// Wire form: LF line endings, a `content-length` for any non-empty body (replacing any
    /// `content-length` in `headers`, so a forwarded frame can't advertise a stale length),
    /// and the terminating NUL.
    ///
    /// Header text is escaped except in CONNECT and CONNECTED. Characters no header can carry
    /// there — NUL anywhere; CR and LF in unescaped frames; `:` in an unescaped name — become
    /// U+FFFD rather than corrupting the framing. Decoded frames never contain them, so
    /// `parse(encode(f))` gives `f` back for every decoded `f` (content-length aside).
    pub fn encode(&self) -> Vec<u8> {
        let header_bytes: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 2)
            .sum();
        let mut out = Vec::with_capacity(16 + header_bytes + 32 + self.body.len());
        self.encode_into(&mut out);
        out
    }

    /// [`encode`](Frame::encode), appending to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.command.as_str().as_bytes());
        out.push(b'\n');
        let escape = self.command.escapes_headers();
        for (name, value) in &self.headers {
            if name == CONTENT_LENGTH {
                continue;
            }
            write_header_text(out, name, escape, true);
            out.push(b':');
            write_header_text(out, value, escape, false);
            out.push(b'\n');
        }
        if !self.body.is_empty() {
            out.extend_from_slice(CONTENT_LENGTH.as_bytes());
            out.push(b':');
            out.extend_from_slice(self.body.len().to_string().as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out.push(0);
    }

    /// The reply to a successful CONNECT. `heart_beat` is the server's own `(sx, sy)`: the
    /// client runs the same negotiation as [`negotiate_heart_beat`] on its side.
    pub fn connected(version: &str, heart_beat: (u32, u32), server: &str) -> Frame {
        Frame::new(Command::Connected)
            .with_header("version", version)
            .with_header("heart-beat", format!("{},{}", heart_beat.0, heart_beat.1))
            .with_header("server", server)
    }

    pub fn message(
        destination: &str,
        subscription_id: &str,
        message_id: &str,
        content_type: &str,
        body: impl Into<Vec<u8>>,
    ) -> Frame {
        Frame::new(Command::Message)
            .with_header("destination", destination)
            .with_header("content-type", content_type)
            .with_header("subscription", subscription_id)
            .with_header("message-id", message_id)
            .with_body(body)
    }

    pub fn receipt(receipt_id: &str) -> Frame {
        Frame::new(Command::Receipt).with_header("receipt-id", receipt_id)
    }

    /// `message` is the short summary clients show; `detail` goes in the body. `receipt_id`
    /// echoes the `receipt` header of the frame that caused the error, as the spec asks.
    pub fn error(message: &str, detail: &str, receipt_id: Option<&str>) -> Frame {
        let mut frame = Frame::new(Command::Error).with_header("message", message);
        if let Some(id) = receipt_id {
            frame = frame.with_header("receipt-id", id);
        }
        if !detail.is_empty() {
            frame = frame
                .with_header("content-type", "text/plain;charset=UTF-8")
                .with_body(detail);
        }
        frame
    }
}

fn write_header_text(out: &mut Vec<u8>, text: &str, escape: bool, is_name: bool) {
    let mut utf8 = [0u8; 4];
    for c in text.chars() {
        let replacement: &[u8] = match c {
            '\\' if escape => b"\\\\",
            '\r' if escape => b"\\r",
            '\n' if escape => b"\\n",
            ':' if escape => b"\\c",
            '\0' | '\r' | '\n' => UNREPRESENTABLE.encode_utf8(&mut utf8).as_bytes(),
            ':' if is_name => UNREPRESENTABLE.encode_utf8(&mut utf8).as_bytes(),
            _ => c.encode_utf8(&mut utf8).as_bytes(),
        };
        out.extend_from_slice(replacement);
    }
}

/// Incremental decoding over a bounded buffer: push whatever arrived, then call
/// [`next_decoded`](Decoder::next_decoded) until it returns `Ok(None)`.
///
/// The buffer never holds more than one frame's worth of unconsumed bytes plus the last push;
/// once an error is returned the decoder stays failed (the stream cannot be resynchronized).
#[derive(Debug, Clone)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    /// Parsing before the pending bytes reach this length cannot succeed; skipping it keeps a
    /// frame with a large content-length that trickles in from being re-scanned on every push.
    need: usize,
    limits: Limits,
    failed: Option<StompError>,
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            buf: Vec::new(),
            start: 0,
            need: 0,
            limits,
            failed: None,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    pub fn next_decoded(&mut self) -> Result<Option<Decoded>, StompError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let pending = self.buf.get(self.start..).unwrap_or_default();
        if pending.len() < self.need {
            return Ok(None);
        }
        match step(pending, &self.limits) {
            Ok(Step::Done(unit, consumed)) => {
                self.start += consumed;
                self.need = 0;
                Ok(Some(unit))
            }
            Ok(Step::Incomplete { need }) => {
                self.need = need;
                Ok(None)
            }
            Err(error) => {
                self.failed = Some(error.clone());
                self.buf = Vec::new();
                self.start = 0;
                Err(error)
            }
        }
    }

    /// Bytes received but not yet returned as a frame or heart-beat.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }
}

/// Picks the version for CONNECTED from a CONNECT's `accept-version` (absent means a 1.0
/// client, per the spec): the highest this codec speaks.
///
/// Note that [`Frame::encode`] always escapes (1.1+ behaviour); for a 1.0 client that only
/// matters if a header value holds `\`, `:`, CR or LF.
pub fn negotiate_version(accept_version: Option<&str>) -> Result<&'static str, StompError> {
    let Some(offered) = accept_version else {
        return Ok("1.0");
    };
    let offers = || offered.split(',').map(str::trim);
    ["1.2", "1.1", "1.0"]
        .into_iter()
        .find(|version| offers().any(|offer| offer == *version))
        .ok_or_else(|| StompError::UnsupportedVersion(excerpt(offered)))
}

/// Reads a `heart-beat` header (`"cx,cy"`, milliseconds); absent means `(0, 0)`, no heart-beats.
pub fn parse_heart_beat(value: Option<&str>) -> Result<(u32, u32), StompError> {
    let Some(value) = value else {
        return Ok((0, 0));
    };
    let (x, y) = value.split_once(',').ok_or(StompError::InvalidHeartBeat)?;
    let number = |s: &str| {
        let s = s.trim();
        // `u32::from_str` would also take a leading '+', which the grammar does not allow.
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(StompError::InvalidHeartBeat);
        }
        s.parse::<u32>().map_err(|_| StompError::InvalidHeartBeat)
    };
    Ok((number(x)?, number(y)?))
}

/// Negotiated heart-beat intervals in milliseconds; 0 means none in that direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeartBeat {
    /// How often the server must send something (a frame or an EOL) to the client.
    pub outgoing_ms: u32,
    /// How often the client promised to send something. The spec advises some tolerance before
    /// declaring the client dead (network latency), which is the shell's call.
    pub incoming_ms: u32,
}

/// STOMP 1.2 §Heart-beating: the client's `(cx, cy)` (what it can send, what it wants) against
/// the server's `(sx, sy)`. A direction runs only if both sides want it, at the slower rate.
pub fn negotiate_heart_beat(client: (u32, u32), server: (u32, u32)) -> HeartBeat {
    let (cx, cy) = client;
    let (sx, sy) = server;
    let interval = |a: u32, b: u32| if a == 0 || b == 0 { 0 } else { a.max(b) };
    HeartBeat {
        outgoing_ms: interval(sx, cy),
        incoming_ms: interval(cx, sy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_one(wire: &[u8]) -> Result<Option<(Frame, usize)>, StompError> {
        Frame::parse(wire, &Limits::default())
    }

    fn frame(wire: &[u8]) -> Frame {
        match parse_one(wire) {
            Ok(Some((frame, consumed))) => {
                assert_eq!(consumed, wire.len(), "frame should use the whole input");
                frame
            }
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    fn error(wire: &[u8]) -> StompError {
        match parse_one(wire) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn error_with(wire: &[u8], limits: Limits) -> StompError {
        match Frame::parse(wire, &limits) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// Every frame and the first error, heart-beats left out (their grouping depends on how
    /// the bytes were split, by design).
    fn decode_all(chunks: &[&[u8]], limits: Limits) -> (Vec<Frame>, Option<StompError>) {
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
        }
        (frames, None)
    }

    fn without_content_length(mut frame: Frame) -> Frame {
        frame.headers.retain(|(name, _)| name != CONTENT_LENGTH);
        frame
    }

    // Byte-for-byte what stomp.js 2.3.3 (the Stomp.over(new SockJS(...)) era most desktop
    // code was written for) puts inside the SockJS string.
    const STOMPJS_CONNECT: &[u8] = b"CONNECT\naccept-version:1.1,1.0\nheart-beat:10000,10000\n\n\0";
    const STOMPJS_SUBSCRIBE: &[u8] = b"SUBSCRIBE\nid:sub-0\ndestination:/topic/status/1001\n\n\0";

    fn stompjs_send() -> Vec<u8> {
        let body = r#"{"username":"1001","workType":"10","projectCode":"项目A"}"#;
        format!(
            "SEND\ndestination:/app/idle\ncontent-length:{}\n\n{body}\0",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn stompjs_connect_negotiates_1_1_and_heart_beats() {
        let connect = frame(STOMPJS_CONNECT);
        assert_eq!(connect.command, Command::Connect);
        assert_eq!(
            connect.headers,
            headers(&[("accept-version", "1.1,1.0"), ("heart-beat", "10000,10000")])
        );
        assert!(connect.body.is_empty());
        assert_eq!(
            negotiate_version(connect.header("accept-version")),
            Ok("1.1")
        );
        let client = parse_heart_beat(connect.header("heart-beat")).unwrap();
        assert_eq!(client, (10_000, 10_000));
        assert_eq!(
            negotiate_heart_beat(client, (25_000, 5_000)),
            HeartBeat {
                outgoing_ms: 25_000,
                incoming_ms: 10_000
            }
        );
    }

    #[test]
    fn stompjs_v7_connect_negotiates_1_2() {
        let wire = b"CONNECT\nlogin:1001\npasscode:s3:cr3t\\x\naccept-version:1.2,1.1,1.0\nheart-beat:4000,4000\n\n\0";
        let connect = frame(wire);
        assert_eq!(
            negotiate_version(connect.header("accept-version")),
            Ok("1.2")
        );
        // CONNECT is never unescaped: the raw ':' and '\' are the passcode's own.
        assert_eq!(connect.header("passcode"), Some("s3:cr3t\\x"));
    }

    #[test]
    fn stompjs_subscribe() {
        let subscribe = frame(STOMPJS_SUBSCRIBE);
        assert_eq!(subscribe.command, Command::Subscribe);
        assert_eq!(subscribe.header("id"), Some("sub-0"));
        assert_eq!(subscribe.header("destination"), Some("/topic/status/1001"));
    }

    #[test]
    fn stompjs_send_with_content_length_and_multibyte_json() {
        let wire = stompjs_send();
        let send = frame(&wire);
        assert_eq!(send.command, Command::Send);
        assert_eq!(send.header("destination"), Some("/app/idle"));
        let json: serde_json::Value = serde_json::from_slice(&send.body).unwrap();
        assert_eq!(json["projectCode"], "项目A");
    }

    #[test]
    fn crlf_line_endings() {
        let send = frame(b"SEND\r\ndestination:/app/busy\r\n\r\n{}\0");
        assert_eq!(send.headers, headers(&[("destination", "/app/busy")]));
        assert_eq!(send.body, b"{}");
    }

    #[test]
    fn heart_beats_are_reported_and_skipped() {
        let limits = Limits::default();
        assert_eq!(decode(b"\n", &limits), Ok(Some((Decoded::HeartBeat, 1))));
        assert_eq!(
            decode(b"\r\n\n\r\n", &limits),
            Ok(Some((Decoded::HeartBeat, 5)))
        );
        // A lone CR may be the first half of CRLF.
        assert_eq!(decode(b"\r", &limits), Ok(None));
        assert_eq!(decode(b"", &limits), Ok(None));
        assert_eq!(
            decode(b"\nSEND\n\n\0", &limits),
            Ok(Some((Decoded::HeartBeat, 1)))
        );

        let mut wire = b"\n\r\n".to_vec();
        wire.extend_from_slice(STOMPJS_SUBSCRIBE);
        wire.extend_from_slice(b"\n\n");
        let (parsed, consumed) = parse_one(&wire).unwrap().unwrap();
        assert_eq!(parsed, frame(STOMPJS_SUBSCRIBE));
        // The EOLs after the NUL are left for the next call, which reports them as liveness.
        assert_eq!(consumed, wire.len() - 2);
        assert_eq!(
            decode(&wire[consumed..], &limits),
            Ok(Some((Decoded::HeartBeat, 2)))
        );
        assert_eq!(parse_one(b"\n\n\r\n"), Ok(None));
    }

    #[test]
    fn content_length_body_may_contain_nul() {
        let send = frame(b"SEND\ndestination:/q\ncontent-length:5\n\na\0b\0c\0");
        assert_eq!(send.body, b"a\0b\0c");
    }

    #[test]
    fn body_without_content_length_ends_at_first_nul() {
        let wire = b"SEND\ndestination:/q\n\nhello\0world\n\n\0";
        let (send, consumed) = parse_one(wire).unwrap().unwrap();
        assert_eq!(send.body, b"hello");
        assert_eq!(consumed, 27);
        assert_eq!(
            error(&wire[consumed..]),
            StompError::UnknownCommand("world".into())
        );
    }

    #[test]
    fn empty_body_and_no_headers() {
        let disconnect = frame(b"DISCONNECT\n\n\0");
        assert_eq!(disconnect, Frame::new(Command::Disconnect));
        let zero = frame(b"SEND\ncontent-length:0\n\n\0");
        assert!(zero.body.is_empty());
    }

    #[test]
    fn escapes_are_decoded_except_in_connect_and_connected() {
        let send = frame(b"SEND\na\\cb:x\\ny\\rz\\\\w\\c\n\n\0");
        assert_eq!(send.headers, headers(&[("a:b", "x\ny\rz\\w:")]));

        let connect = frame(b"CONNECT\nhost:a\\cb:c\n\n\0");
        assert_eq!(connect.header("host"), Some("a\\cb:c"));
        let connected = frame(b"CONNECTED\nserver:x\\ny\n\n\0");
        assert_eq!(connected.header("server"), Some("x\\ny"));
        // The STOMP command is a CONNECT synonym but the spec exempts only CONNECT/CONNECTED.
        let stomp = frame(b"STOMP\nhost:a\\cb\n\n\0");
        assert_eq!(stomp.header("host"), Some("a:b"));
    }

    #[test]
    fn repeated_header_first_wins() {
        let send = frame(b"SEND\ndestination:/first\ndestination:/second\n\n\0");
        assert_eq!(send.header("destination"), Some("/first"));
        assert_eq!(send.headers.len(), 2);
        // Including content-length, which decides the framing.
        let send = frame(b"SEND\ncontent-length:2\ncontent-length:5\n\nab\0");
        assert_eq!(send.body, b"ab");
    }

    #[test]
    fn header_values_are_not_trimmed() {
        let send = frame(b"SEND\nfoo: bar \n\n\0");
        assert_eq!(send.header("foo"), Some(" bar "));
        let send = frame(b"SEND\nempty:\n\n\0");
        assert_eq!(send.header("empty"), Some(""));
    }

    #[test]
    fn every_prefix_of_a_frame_is_incomplete() {
        for wire in [STOMPJS_CONNECT, STOMPJS_SUBSCRIBE, &stompjs_send()[..]] {
            for end in 0..wire.len() {
                assert_eq!(parse_one(&wire[..end]), Ok(None), "prefix of {end} bytes");
            }
        }
    }

    #[test]
    fn split_at_every_byte_boundary_decodes_identically() {
        let mut wire = Vec::new();
        wire.extend_from_slice(STOMPJS_CONNECT);
        wire.extend_from_slice(b"\n");
        wire.extend_from_slice(STOMPJS_SUBSCRIBE);
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(&stompjs_send());
        wire.extend_from_slice(b"MESSAGE\r\nx:a\\cb\r\n\r\nno length\0\n");
        let (whole, error) = decode_all(&[&wire], Limits::default());
        assert_eq!(whole.len(), 4);
        assert_eq!(error, None);
        for split in 0..=wire.len() {
            let (head, tail) = wire.split_at(split);
            assert_eq!(
                decode_all(&[head, tail], Limits::default()),
                (whole.clone(), None),
                "split at {split}"
            );
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(decode_all(&bytes, Limits::default()), (whole, None));
    }

    #[test]
    fn decoder_reports_heart_beats_and_frames_in_order() {
        let mut decoder = Decoder::new(Limits::default());
        decoder.push(b"\n");
        assert_eq!(decoder.next_decoded(), Ok(Some(Decoded::HeartBeat)));
        assert_eq!(decoder.next_decoded(), Ok(None));
        decoder.push(b"SEND\ncontent-length:3\n\nab");
        assert_eq!(decoder.next_decoded(), Ok(None));
        assert_eq!(decoder.buffered(), 25);
        decoder.push(b"c\0\nDISCONNECT\n\n\0");
        assert_eq!(
            decoder.next_decoded(),
            Ok(Some(Decoded::Frame(
                Frame::new(Command::Send)
                    .with_header("content-length", "3")
                    .with_body(&b"abc"[..])
            )))
        );
        assert_eq!(decoder.next_decoded(), Ok(Some(Decoded::HeartBeat)));
        assert_eq!(
            decoder.next_decoded(),
            Ok(Some(Decoded::Frame(Frame::new(Command::Disconnect))))
        );
        assert_eq!(decoder.next_decoded(), Ok(None));
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn decoder_stays_failed() {
        let mut decoder = Decoder::new(Limits::default());
        decoder.push(b"BOGUS\n\n\0");
        let first = decoder.next_decoded();
        assert_eq!(first, Err(StompError::UnknownCommand("BOGUS".into())));
        decoder.push(STOMPJS_SUBSCRIBE);
        assert_eq!(decoder.next_decoded(), first);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn unknown_commands() {
        assert_eq!(
            error(b"send\n\n\0"),
            StompError::UnknownCommand("send".into())
        );
        assert_eq!(
            error(b"SEND \n\n\0"),
            StompError::UnknownCommand("SEND ".into())
        );
        assert_eq!(
            error(b"GET / HTTP/1.1\r\n\r\n"),
            StompError::UnknownCommand("GET / HTTP/1.1".into())
        );
        let long = format!("{}\n\n\0", "X".repeat(100));
        match error(long.as_bytes()) {
            StompError::UnknownCommand(shown) => assert_eq!(shown.chars().count(), 33),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_utf8() {
        assert_eq!(error(b"SE\xffND\n\n\0"), StompError::InvalidUtf8("command"));
        assert_eq!(
            error(b"SEND\nkey:\xc3\x28\n\n\0"),
            StompError::InvalidUtf8("header")
        );
        // Bodies are opaque bytes.
        assert_eq!(frame(b"SEND\n\n\xff\xfe\0").body, b"\xff\xfe");
    }

    #[test]
    fn malformed_header_lines() {
        assert_eq!(
            error(b"SEND\nnocolon\n\n\0"),
            StompError::HeaderWithoutColon
        );
        assert_eq!(error(b"SEND\n:value\n\n\0"), StompError::EmptyHeaderName);
        assert_eq!(
            error(b"SEND\nkey:a\\tb\n\n\0"),
            StompError::UndefinedEscape("t".into())
        );
        assert_eq!(
            error(b"SEND\nk\\x:v\n\n\0"),
            StompError::UndefinedEscape("x".into())
        );
        assert_eq!(error(b"SEND\nkey:ab\\\n\n\0"), StompError::TruncatedEscape);
        assert_eq!(
            error(b"SEND\nkey:a\rb\n\n\0"),
            StompError::BareCarriageReturn
        );
        assert_eq!(error(b"SE\rND\n\n\0"), StompError::BareCarriageReturn);
        assert_eq!(error(b"\rX"), StompError::BareCarriageReturn);
        assert_eq!(error(b"\n\rSEND"), StompError::BareCarriageReturn);
        assert_eq!(error(b"SEND\nkey:a\0b\n\n\0"), StompError::NulInHeaders);
        // A frame whose blank line went missing.
        assert_eq!(error(b"DISCONNECT\n\0"), StompError::NulInHeaders);
        assert_eq!(error(b"\0"), StompError::NulInHeaders);
    }

    #[test]
    fn content_length_errors() {
        for bad in ["abc", "", "-1", "+5", " 5", "5 ", "0x10", "1.0"] {
            let wire = format!("SEND\ncontent-length:{bad}\n\nhello\0");
            assert_eq!(
                error(wire.as_bytes()),
                StompError::InvalidContentLength,
                "{bad:?}"
            );
        }
        assert_eq!(
            error(b"SEND\ncontent-length:3\n\nhello\0"),
            StompError::MissingNul
        );
        assert_eq!(
            error(b"SEND\ncontent-length:99999999999999999999999999\n\n"),
            StompError::FrameTooLarge { limit: 65536 }
        );
        // Refused before the body arrives: no point buffering it.
        assert_eq!(
            error(b"SEND\ncontent-length:65536\n\n"),
            StompError::FrameTooLarge { limit: 65536 }
        );
    }

    #[test]
    fn frame_size_limit_is_inclusive() {
        let limits = Limits {
            max_frame_bytes: 32,
            max_headers: 4,
            max_header_bytes: 24,
        };
        let head = b"SEND\n\n"; // 6 bytes, so a 25-byte body and the NUL make exactly 32.
        let mut fits = head.to_vec();
        fits.extend_from_slice(&[b'x'; 25]);
        fits.push(0);
        assert_eq!(fits.len(), 32);
        assert!(matches!(Frame::parse(&fits, &limits), Ok(Some((_, 32)))));
        // Without content-length: the 33rd byte would have to be the NUL.
        let mut over = head.to_vec();
        over.extend_from_slice(&[b'x'; 26]);
        assert_eq!(over.len(), 32);
        assert_eq!(
            error_with(&over, limits),
            StompError::FrameTooLarge { limit: 32 }
        );
        assert_eq!(Frame::parse(&over[..31], &limits), Ok(None));
        // With content-length, known as soon as the header arrives.
        let declared = b"SEND\ncontent-length:4\n\n"; // 23 bytes + 4 + NUL = 28
        let mut fits = declared.to_vec();
        fits.extend_from_slice(b"abcd\0");
        assert!(matches!(Frame::parse(&fits, &limits), Ok(Some((_, 28)))));
        assert_eq!(
            error_with(b"SEND\ncontent-length:9\n\n", limits),
            StompError::FrameTooLarge { limit: 32 }
        );
        assert_eq!(
            StompError::FrameTooLarge { limit: 65536 }.to_string(),
            "frame exceeds 65536 bytes"
        );
    }

    #[test]
    fn header_limits() {
        let limits = Limits {
            max_frame_bytes: 1024,
            max_headers: 2,
            max_header_bytes: 24,
        };
        assert!(Frame::parse(b"SEND\na:1\nb:2\n\n\0", &limits).is_ok());
        assert_eq!(
            error_with(b"SEND\na:1\nb:2\nc:3\n\n\0", limits),
            StompError::TooManyHeaders { limit: 2 }
        );
        // 24 bytes of head exactly: "SEND\n" + "k:" + 15 x + "\n" + "\n".
        let at_limit = format!("SEND\nk:{}\n\n\0", "x".repeat(15));
        assert!(Frame::parse(at_limit.as_bytes(), &limits)
            .unwrap()
            .is_some());
        let over = format!("SEND\nk:{}\n\n\0", "x".repeat(16));
        assert_eq!(
            error_with(over.as_bytes(), limits),
            StompError::HeadersTooLarge { limit: 24 }
        );
        // No LF in sight: refused once the limit's worth of bytes is buffered, not before.
        let endless = "SEND".to_string() + &"x".repeat(19);
        assert_eq!(Frame::parse(endless.as_bytes(), &limits), Ok(None));
        assert_eq!(
            error_with(format!("{endless}x").as_bytes(), limits),
            StompError::HeadersTooLarge { limit: 24 }
        );
        // When frames are smaller than the header allowance, the frame limit is what binds.
        let tight = Limits {
            max_frame_bytes: 8,
            max_headers: 2,
            max_header_bytes: 100,
        };
        assert_eq!(
            error_with(b"SUBSCRIBE\n\n\0", tight),
            StompError::FrameTooLarge { limit: 8 }
        );
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            StompError::HeaderWithoutColon.to_string(),
            "header line without ':'"
        );
        assert_eq!(
            StompError::InvalidContentLength.to_string(),
            "content-length is not a number"
        );
        assert_eq!(
            StompError::UndefinedEscape("t".into()).to_string(),
            "undefined escape sequence \"\\t\" in header"
        );
        assert_eq!(
            StompError::UnsupportedVersion("2.0".into()).to_string(),
            "no supported STOMP version in accept-version \"2.0\" (supported: 1.0,1.1,1.2)"
        );
        assert_eq!(
            StompError::UnknownCommand("GET".into()).to_string(),
            "unknown command \"GET\""
        );
    }

    #[test]
    fn version_negotiation() {
        assert_eq!(negotiate_version(None), Ok("1.0"));
        assert_eq!(negotiate_version(Some("1.0")), Ok("1.0"));
        assert_eq!(negotiate_version(Some("1.1,1.0")), Ok("1.1"));
        assert_eq!(negotiate_version(Some("1.0,1.1,1.2")), Ok("1.2"));
        assert_eq!(negotiate_version(Some("1.2, 2.0")), Ok("1.2"));
        assert_eq!(
            negotiate_version(Some("2.0,3.0")),
            Err(StompError::UnsupportedVersion("2.0,3.0".into()))
        );
        assert_eq!(
            negotiate_version(Some("")),
            Err(StompError::UnsupportedVersion(String::new()))
        );
    }

    #[test]
    fn heart_beat_parsing() {
        assert_eq!(parse_heart_beat(None), Ok((0, 0)));
        assert_eq!(parse_heart_beat(Some("0,0")), Ok((0, 0)));
        assert_eq!(parse_heart_beat(Some("10000,5000")), Ok((10_000, 5_000)));
        assert_eq!(parse_heart_beat(Some("10, 20")), Ok((10, 20)));
        for bad in [
            "",
            "10",
            "10,",
            ",10",
            "a,b",
            "-1,0",
            "+1,0",
            "1,2,3",
            "4294967296,0",
        ] {
            assert_eq!(
                parse_heart_beat(Some(bad)),
                Err(StompError::InvalidHeartBeat),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn heart_beat_negotiation() {
        let none = HeartBeat::default();
        assert_eq!(negotiate_heart_beat((0, 0), (10_000, 10_000)), none);
        assert_eq!(negotiate_heart_beat((10_000, 10_000), (0, 0)), none);
        // Client can send every 1s but wants nothing; server wants to hear every 5s.
        assert_eq!(
            negotiate_heart_beat((1_000, 0), (10_000, 5_000)),
            HeartBeat {
                outgoing_ms: 0,
                incoming_ms: 5_000
            }
        );
        assert_eq!(
            negotiate_heart_beat((20_000, 3_000), (10_000, 5_000)),
            HeartBeat {
                outgoing_ms: 10_000,
                incoming_ms: 20_000
            }
        );
    }

    #[test]
    fn connected_builder() {
        let connected = Frame::connected("1.1", (10_000, 10_000), "gridedge/0.1.0");
        assert_eq!(
            connected.encode(),
            b"CONNECTED\nversion:1.1\nheart-beat:10000,10000\nserver:gridedge/0.1.0\n\n\0"
        );
    }

    #[test]
    fn message_builder() {
        let message = Frame::message(
            "/topic/status/1001",
            "sub-0",
            "m-7",
            "application/json;charset=UTF-8",
            r#"{"status":1}"#,
        );
        assert_eq!(
            String::from_utf8(message.encode()).unwrap(),
            "MESSAGE\ndestination:/topic/status/1001\ncontent-type:application/json;charset=UTF-8\n\
             subscription:sub-0\nmessage-id:m-7\ncontent-length:12\n\n{\"status\":1}\0"
        );
    }

    #[test]
    fn receipt_and_error_builders() {
        assert_eq!(
            Frame::receipt("r-1").encode(),
            b"RECEIPT\nreceipt-id:r-1\n\n\0"
        );
        assert_eq!(
            Frame::error("malformed frame", "", None).encode(),
            b"ERROR\nmessage:malformed frame\n\n\0"
        );
        let error = Frame::error("bad: header", "line 2\nhas no ':'", Some("r-2"));
        assert_eq!(
            String::from_utf8(error.encode()).unwrap(),
            "ERROR\nmessage:bad\\c header\nreceipt-id:r-2\ncontent-type:text/plain;charset=UTF-8\n\
             content-length:17\n\nline 2\nhas no ':'\0"
        );
        assert_eq!(
            frame(&error.encode()).header("message"),
            Some("bad: header")
        );
    }

    #[test]
    fn encode_escapes_and_replaces_content_length() {
        let send = Frame::new(Command::Send)
            .with_header("content-length", "999")
            .with_header("a:b", "x\ny\rz\\")
            .with_body(&b"hi"[..]);
        assert_eq!(
            send.encode(),
            b"SEND\na\\cb:x\\ny\\rz\\\\\ncontent-length:2\n\nhi\0"
        );
        let empty = Frame::new(Command::Send).with_header("content-length", "5");
        assert_eq!(empty.encode(), b"SEND\n\n\0");
    }

    #[test]
    fn encode_replaces_what_headers_cannot_carry() {
        let connected = Frame::new(Command::Connected)
            .with_header("a:b", "x\ny:z")
            .with_header("nul", "a\0b");
        let wire = connected.encode();
        assert_eq!(
            String::from_utf8(wire.clone()).unwrap(),
            "CONNECTED\na\u{FFFD}b:x\u{FFFD}y:z\nnul:a\u{FFFD}b\n\n\0"
        );
        assert_eq!(frame(&wire).header("a\u{FFFD}b"), Some("x\u{FFFD}y:z"));
        let send = Frame::new(Command::Send).with_header("k", "a\0b");
        assert_eq!(frame(&send.encode()).header("k"), Some("a\u{FFFD}b"));
    }

    #[test]
    fn command_names_round_trip() {
        for command in Command::ALL {
            assert_eq!(Command::from_wire(command.as_str()), Some(command));
            assert_eq!(command.to_string(), command.as_str());
            let wire = Frame::new(command).encode();
            assert_eq!(frame(&wire), Frame::new(command));
        }
        assert_eq!(Command::ALL.iter().filter(|c| c.is_server()).count(), 4);
    }

    fn header_text(escaped: bool, is_name: bool) -> impl Strategy<Value = String> {
        let c = prop_oneof![
            Just(':'),
            Just('\n'),
            Just('\r'),
            Just('\\'),
            Just('c'),
            Just('\u{FFFD}'),
            any::<char>(),
        ];
        let min = usize::from(is_name);
        proptest::collection::vec(c, min..12).prop_map(move |chars| {
            chars
                .into_iter()
                .map(|c| match c {
                    // What `encode` documents it cannot carry, and would replace.
                    '\0' => 'x',
                    '\r' | '\n' if !escaped => 'x',
                    ':' if !escaped && is_name => 'x',
                    c => c,
                })
                .collect()
        })
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        proptest::sample::select(Command::ALL.to_vec()).prop_flat_map(|command| {
            let escaped = command.escapes_headers();
            let header = (header_text(escaped, true), header_text(escaped, false));
            (
                Just(command),
                proptest::collection::vec(header, 0..6),
                proptest::collection::vec(any::<u8>(), 0..64),
            )
                .prop_map(|(command, headers, body)| Frame {
                    command,
                    headers,
                    body,
                })
        })
    }

    fn unlimited() -> Limits {
        Limits {
            max_frame_bytes: usize::MAX,
            max_headers: usize::MAX,
            max_header_bytes: usize::MAX,
        }
    }

    proptest! {
        // Failures print the minimal input; persisting regression files would write into the
        // repository from tests, which several people run concurrently.
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn encode_then_parse_round_trips(original in arb_frame()) {
            let wire = original.encode();
            let (parsed, consumed) = Frame::parse(&wire, &unlimited())
                .expect("own output parses")
                .expect("own output is complete");
            prop_assert_eq!(consumed, wire.len());
            prop_assert_eq!(
                without_content_length(parsed.clone()),
                without_content_length(original.clone())
            );
            prop_assert_eq!(parsed.body.len(), original.body.len());
            // Decoded frames are already canonical: encoding them again changes nothing.
            prop_assert_eq!(parsed.encode(), wire);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_split_consistently(
            data in proptest::collection::vec(
                prop_oneof![
                    Just(b'\n'), Just(b'\r'), Just(b':'), Just(b'\\'), Just(0u8),
                    Just(b'S'), any::<u8>()
                ],
                0..200,
            ),
            split in any::<prop::sample::Index>(),
        ) {
            let limits = Limits { max_frame_bytes: 64, max_headers: 3, max_header_bytes: 32 };
            if let Ok(Some((_, consumed))) = decode(&data, &limits) {
                prop_assert!(consumed > 0 && consumed <= data.len());
            }
            let whole = decode_all(&[&data], limits);
            let (head, tail) = data.split_at(split.index(data.len() + 1));
            prop_assert_eq!(decode_all(&[head, tail], limits), whole);
        }

        #[test]
        fn stompjs_style_frames_split_anywhere(
            body in "[ -~]{0,40}",
            destination in "/[a-z/]{1,20}",
            split in any::<prop::sample::Index>(),
        ) {
            let send = Frame::new(Command::Send)
                .with_header("destination", destination)
                .with_body(body.into_bytes());
            let mut wire = send.encode();
            wire.extend_from_slice(b"\n");
            wire.extend_from_slice(&send.encode());
            let (head, tail) = wire.split_at(split.index(wire.len() + 1));
            let (frames, error) = decode_all(&[head, tail], Limits::default());
            prop_assert_eq!(error, None);
            prop_assert_eq!(frames.len(), 2);
            for f in frames {
                prop_assert_eq!(without_content_length(f), without_content_length(send.clone()));
            }
        }
    }
}
