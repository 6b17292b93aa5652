//! Stream (TCP/TLS) framing, sans-IO: finds where one SIP message ends in a byte stream, and
//! recognizes RFC 5626 §4.4.1 CRLF keepalives between messages.
//!
//! The transport keeps a receive buffer, calls [`next_frame`] (or [`FrameScanner::next_frame`])
//! after every read, and on `Ok(Some(frame))` removes `frame.wire_len()` bytes from the front,
//! handing `Frame::Message` bytes to `message::Message::parse`. Any error means the stream can
//! no longer be delimited and the connection must be closed.
//!
//! Header lines are delimited the same way `message` does (LF, optionally preceded by CR), so
//! the framer and the parser always agree on where the header section ends.

use super::message::Limits;

/// One unit at the start of a stream buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// `\r\n\r\n`: the peer asks for a pong (answer with a single `\r\n`).
    KeepAlivePing,
    /// A single `\r\n`: the answer to a ping we sent.
    KeepAlivePong,
    /// The first this many bytes are one complete SIP message.
    Message(usize),
}

impl Frame {
    /// How many bytes this frame occupies at the start of the buffer.
    pub fn wire_len(&self) -> usize {
        match self {
            Frame::KeepAlivePing => 4,
            Frame::KeepAlivePong => 2,
            Frame::Message(len) => *len,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("message has no Content-Length, which is mandatory on stream transports")]
    MissingContentLength,
    #[error("Content-Length is not a decimal number")]
    InvalidContentLength,
    #[error("conflicting Content-Length values {first} and {second}")]
    ConflictingContentLength { first: usize, second: usize },
    #[error("message exceeds the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("line feed without a carriage return before the start line")]
    StrayLineFeed,
}

/// Finds the first frame in `buf`. Returns `Ok(None)` when more bytes are needed.
///
/// Keepalives are only recognized where a message could start. `\r\n\r\n` is a ping. A `\r\n`
/// followed by anything but `\r` is a pong. A buffer of exactly `\r\n` is also taken as a pong
/// rather than waited on: pongs arrive alone and waiting would leave them unanswered until the
/// next message, whereas a ping split after its second byte is rare (peers write it in one
/// call) and costs only one missed pong, since its second half then reads as another pong.
/// `\r\n\r` waits for the fourth byte.
///
/// Content-Length (long or compact form, any case, possibly folded) is mandatory on streams
/// (RFC 3261 §18.3). `FramingError::TooLarge` is reported as soon as the header section or the
/// declared total is known to exceed `limits.max_message_bytes`, before the body is buffered.
///
/// This rescans `buf` from the start on every call. Transports that may receive a message in
/// many small pieces should keep a [`FrameScanner`] per connection, which resumes instead.
pub fn next_frame(buf: &[u8], limits: &Limits) -> Result<Option<Frame>, FramingError> {
    FrameScanner::new().next_frame(buf, limits)
}

/// Incremental [`next_frame`]: remembers how far it has looked, so feeding a message one
/// byte at a time costs linear rather than quadratic time.
///
/// Contract: between calls the caller only appends to the buffer, except that after
/// `Ok(Some(frame))` it removes exactly `frame.wire_len()` bytes from the front (the scanner
/// resets itself then). After an error, the connection is to be closed; [`FrameScanner::reset`]
/// exists for reusing the value anyway.
#[derive(Debug, Clone, Default)]
pub struct FrameScanner {
    /// Whether the current frame is known to be a message (not a keepalive).
    in_message: bool,
    /// Start of the first line not yet processed.
    line_start: usize,
    /// How far the search for that line's LF has already looked.
    searched: usize,
    /// Complete lines processed so far; the first is the start line.
    lines: usize,
    /// The Content-Length value established so far.
    content_length: Option<usize>,
    /// The Content-Length field being read, which continuation lines may still extend.
    open: Option<Decimal>,
    /// Offset of the body, once the empty line ending the headers has been seen.
    body_start: Option<usize>,
}

impl FrameScanner {
    pub fn new() -> Self {
        FrameScanner::default()
    }

    pub fn reset(&mut self) {
        *self = FrameScanner::default();
    }

    /// See [`next_frame`] for the semantics and the type docs for the calling contract.
    pub fn next_frame(
        &mut self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<Frame>, FramingError> {
        if !self.in_message {
            match buf {
                [] | [b'\r'] | [b'\r', b'\n', b'\r'] => return Ok(None),
                [b'\r', b'\n', b'\r', b'\n', ..] => return Ok(Some(Frame::KeepAlivePing)),
                [b'\r', b'\n', ..] => return Ok(Some(Frame::KeepAlivePong)),
                [b'\n', ..] => return Err(FramingError::StrayLineFeed),
                _ => self.in_message = true,
            }
        }

        let body_start = match self.body_start {
            Some(body_start) => body_start,
            None => match self.scan_headers(buf, limits)? {
                Some(body_start) => body_start,
                None => return Ok(None),
            },
        };
        let content_length = self
            .content_length
            .ok_or(FramingError::MissingContentLength)?;
        let total = body_start
            .checked_add(content_length)
            .filter(|&total| total <= limits.max_message_bytes)
            .ok_or(FramingError::TooLarge {
                limit: limits.max_message_bytes,
            })?;
        if buf.len() < total {
            return Ok(None);
        }
        self.reset();
        Ok(Some(Frame::Message(total)))
    }

    /// Processes complete header lines; returns the body offset once the empty line is found.
    fn scan_headers(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, FramingError> {
        let too_large = FramingError::TooLarge {
            limit: limits.max_message_bytes,
        };
        loop {
            let from = self.searched.max(self.line_start);
            let Some(lf) = buf
                .get(from..)
                .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
                .map(|i| from + i)
            else {
                self.searched = buf.len().max(self.line_start);
                // Even an empty body would not fit once the unfinished header section
                // reaches the limit.
                if buf.len() >= limits.max_message_bytes {
                    return Err(too_large);
                }
                return Ok(None);
            };
            let line = buf.get(self.line_start..lf).unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            self.line_start = lf + 1;
            self.searched = self.line_start;
            if self.line_start > limits.max_message_bytes {
                return Err(too_large);
            }
            if self.process_line(line)? {
                self.body_start = Some(self.line_start);
                return Ok(self.body_start);
            }
        }
    }

    /// Tracks Content-Length across header lines; returns whether `line` ends the headers.
    fn process_line(&mut self, line: &[u8]) -> Result<bool, FramingError> {
        self.lines += 1;
        if self.lines == 1 {
            return Ok(false);
        }
        match line.first() {
            None => {
                self.close_content_length()?;
                Ok(true)
            }
            Some(b' ' | b'\t') => {
                if let Some(open) = &mut self.open {
                    // Folding joins with whitespace, exactly as the parser's single space.
                    open.feed(b' ');
                    line.iter().for_each(|&b| open.feed(b));
                }
                Ok(false)
            }
            Some(_) => {
                self.close_content_length()?;
                if let Some(colon) = line.iter().position(|&b| b == b':') {
                    let (name, value) = line.split_at(colon);
                    let name = trim_end_wsp(name);
                    if name.eq_ignore_ascii_case(b"content-length")
                        || name.eq_ignore_ascii_case(b"l")
                    {
                        let mut open = Decimal::default();
                        value.iter().skip(1).for_each(|&b| open.feed(b));
                        self.open = Some(open);
                    }
                }
                // Lines without a colon are the parser's problem; framing only needs the
                // length.
                Ok(false)
            }
        }
    }

    fn close_content_length(&mut self) -> Result<(), FramingError> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let n = open.finish().ok_or(FramingError::InvalidContentLength)?;
        match self.content_length {
            Some(first) if first != n => {
                Err(FramingError::ConflictingContentLength { first, second: n })
            }
            _ => {
                self.content_length = Some(n);
                Ok(())
            }
        }
    }
}

fn trim_end_wsp(mut s: &[u8]) -> &[u8] {
    while let Some((b' ' | b'\t', rest)) = s.split_last() {
        s = rest;
    }
    s
}

/// A decimal value read byte by byte, accepting exactly what the parser accepts after
/// trimming: optional whitespace, digits, optional whitespace. Large values saturate, which
/// then fails the size limit.
#[derive(Debug, Clone, Copy, Default)]
struct Decimal {
    value: usize,
    digits: bool,
    ended: bool,
    invalid: bool,
}

impl Decimal {
    fn feed(&mut self, b: u8) {
        match b {
            b'0'..=b'9' if !self.ended => {
                self.value = self
                    .value
                    .saturating_mul(10)
                    .saturating_add(usize::from(b - b'0'));
                self.digits = true;
            }
            b' ' | b'\t' => self.ended |= self.digits,
            _ => self.invalid = true,
        }
    }

    fn finish(self) -> Option<usize> {
        (self.digits && !self.invalid).then_some(self.value)
    }
}
