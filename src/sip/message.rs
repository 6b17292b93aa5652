//! SIP message wire model: start line, ordered header fields, opaque body.
//!
//! This is the hot path of the registrar, so parsing makes one pass over the header section,
//! never allocates for a known header name, and keeps header values as unfolded strings. Typed
//! interpretation of individual values (URIs, Via, Contact, CSeq) lives in `header`, and callers
//! only pay for it on the headers they actually look at.
//!
//! Everything here is sans-IO: `Message::parse` takes one complete datagram or one message that
//! `framing` cut out of a stream, and serialization writes into a caller-provided buffer.

use std::fmt;
use std::hash::{Hash, Hasher};

/// Size limits applied while parsing, so that a hostile peer cannot make us buffer or scan
/// unbounded input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted message (start line, headers and body). The default is the largest
    /// UDP payload, which also bounds stream messages to the same size.
    pub max_message_bytes: usize,
    /// Largest number of header fields, counted after unfolding.
    pub max_headers: usize,
    /// Longest physical line, excluding its line terminator.
    pub max_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 65_535,
            max_headers: 128,
            max_line_bytes: 8_192,
        }
    }
}

/// Why a buffer is not an acceptable SIP message. Line numbers are 1-based and count physical
/// lines from the start of the buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty message")]
    Empty,
    #[error("message is {size} bytes, the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("line {line} is longer than {limit} bytes")]
    LineTooLong { line: usize, limit: usize },
    #[error("line {line} is not valid UTF-8")]
    NotUtf8 { line: usize },
    #[error("line {line} contains a CR that does not end the line")]
    BareCr { line: usize },
    #[error("line {line} contains a control character outside a quoted-pair")]
    ControlChar { line: usize },
    #[error("header section is not terminated by an empty line")]
    UnterminatedHeaders,
    #[error("invalid request line: {0}")]
    InvalidRequestLine(&'static str),
    #[error("invalid status line: {0}")]
    InvalidStatusLine(&'static str),
    #[error("unsupported SIP version (only SIP/2.0 is accepted)")]
    UnsupportedVersion,
    #[error("line {line}: header field has no colon")]
    MissingColon { line: usize },
    #[error("line {line}: header field name is not a token")]
    InvalidHeaderName { line: usize },
    #[error("line {line}: continuation line before any header field")]
    UnexpectedContinuation { line: usize },
    #[error("Content-Length is not a decimal number")]
    InvalidContentLength,
    #[error("conflicting Content-Length values {first} and {second}")]
    ConflictingContentLength { first: usize, second: usize },
    #[error("Content-Length is {declared} but only {actual} body bytes are present")]
    ContentLengthMismatch { declared: usize, actual: usize },
    #[error("missing mandatory header field {0}")]
    MissingHeader(&'static str),
}

const fn token_table() -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        i += 1;
    }
    table
}

static TOKEN: [bool; 256] = token_table();

/// Whether `b` may appear in an RFC 3261 `token`.
pub(super) fn is_token_byte(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

/// Whether `s` is a non-empty RFC 3261 `token` (method names, header names, parameter names).
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A request method. Method names are case-sensitive (RFC 3261 §7.1), so `register` is an
/// unknown method, not `REGISTER`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Register,
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Subscribe,
    Notify,
    Publish,
    Message,
    Info,
    Prack,
    Update,
    Refer,
    /// Any other method, exactly as received. Always a token when produced by this module.
    Other(String),
}

impl Method {
    pub fn as_str(&self) -> &str {
        match self {
            Method::Register => "REGISTER",
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Message => "MESSAGE",
            Method::Info => "INFO",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Refer => "REFER",
            Method::Other(s) => s,
        }
    }

    /// Maps a method name to a `Method`, case-sensitively. This does not validate `s`: callers
    /// handling untrusted input check [`is_token`] first (the parsers in this module and in
    /// `header` do), because a non-token `Other` would serialize into a broken start line.
    pub fn from_token(s: &str) -> Method {
        match s {
            "REGISTER" => Method::Register,
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "PUBLISH" => Method::Publish,
            "MESSAGE" => Method::Message,
            "INFO" => Method::Info,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            "REFER" => Method::Refer,
            other => Method::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A header field name. Known names are matched case-insensitively and from their compact
/// forms; everything else is kept as received in `Other`.
///
/// Equality and hashing treat `Other` names case-insensitively, as RFC 3261 §7.3.1 requires, so
/// `Headers::get(&HeaderName::Other("x-foo".into()))` finds `X-Foo`. Build names with
/// [`HeaderName::parse`]: `Other("Via".into())` is not equal to `Via`.
#[derive(Debug, Clone)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    ContentLength,
    ContentType,
    Expires,
    MinExpires,
    MaxForwards,
    Authorization,
    WwwAuthenticate,
    ProxyAuthorization,
    ProxyAuthenticate,
    UserAgent,
    Server,
    Supported,
    Require,
    ProxyRequire,
    Unsupported,
    Allow,
    Route,
    RecordRoute,
    Path,
    Date,
    Event,
    AllowEvents,
    Subject,
    ContentEncoding,
    ReferTo,
    ReferredBy,
    SessionExpires,
    AcceptContact,
    RejectContact,
    RequestDisposition,
    Other(String),
}

impl HeaderName {
    /// Parses a header name case-insensitively, expanding compact forms (RFC 3261 §7.3.3 and
    /// the extension RFCs that define `o`, `u`, `r`, `b`, `x`, `a`, `j`, `d`).
    pub fn parse(name: &str) -> HeaderName {
        Self::known(name).unwrap_or_else(|| HeaderName::Other(name.to_owned()))
    }

    /// The known header called `name`, without allocating.
    fn known(name: &str) -> Option<HeaderName> {
        // Lowercase into a stack buffer so a single byte-slice `match` does the lookup; every
        // known long form fits in it.
        let bytes = name.as_bytes();
        let mut buf = [0u8; 20];
        let lower = buf.get_mut(..bytes.len())?;
        for (dst, src) in lower.iter_mut().zip(bytes) {
            *dst = src.to_ascii_lowercase();
        }
        // Dispatching on length first keeps each lookup to a handful of comparisons.
        let known = match lower.len() {
            1 => match lower.first()? {
                b'v' => HeaderName::Via,
                b'f' => HeaderName::From,
                b't' => HeaderName::To,
                b'i' => HeaderName::CallId,
                b'm' => HeaderName::Contact,
                b'l' => HeaderName::ContentLength,
                b'c' => HeaderName::ContentType,
                b'k' => HeaderName::Supported,
                b'o' => HeaderName::Event,
                b'u' => HeaderName::AllowEvents,
                b's' => HeaderName::Subject,
                b'e' => HeaderName::ContentEncoding,
                b'r' => HeaderName::ReferTo,
                b'b' => HeaderName::ReferredBy,
                b'x' => HeaderName::SessionExpires,
                b'a' => HeaderName::AcceptContact,
                b'j' => HeaderName::RejectContact,
                b'd' => HeaderName::RequestDisposition,
                _ => return None,
            },
            2..=5 => match &*lower {
                b"to" => HeaderName::To,
                b"via" => HeaderName::Via,
                b"from" => HeaderName::From,
                b"cseq" => HeaderName::CSeq,
                b"path" => HeaderName::Path,
                b"date" => HeaderName::Date,
                b"allow" => HeaderName::Allow,
                b"route" => HeaderName::Route,
                b"event" => HeaderName::Event,
                _ => return None,
            },
            6..=9 => match &*lower {
                b"server" => HeaderName::Server,
                b"call-id" => HeaderName::CallId,
                b"contact" => HeaderName::Contact,
                b"expires" => HeaderName::Expires,
                b"require" => HeaderName::Require,
                b"subject" => HeaderName::Subject,
                b"refer-to" => HeaderName::ReferTo,
                b"supported" => HeaderName::Supported,
                _ => return None,
            },
            10..=12 => match &*lower {
                b"user-agent" => HeaderName::UserAgent,
                b"min-expires" => HeaderName::MinExpires,
                b"unsupported" => HeaderName::Unsupported,
                b"referred-by" => HeaderName::ReferredBy,
                b"content-type" => HeaderName::ContentType,
                b"max-forwards" => HeaderName::MaxForwards,
                b"record-route" => HeaderName::RecordRoute,
                b"allow-events" => HeaderName::AllowEvents,
                _ => return None,
            },
            13..=15 => match &*lower {
                b"authorization" => HeaderName::Authorization,
                b"proxy-require" => HeaderName::ProxyRequire,
                b"content-length" => HeaderName::ContentLength,
                b"accept-contact" => HeaderName::AcceptContact,
                b"reject-contact" => HeaderName::RejectContact,
                b"session-expires" => HeaderName::SessionExpires,
                _ => return None,
            },
            _ => match &*lower {
                b"www-authenticate" => HeaderName::WwwAuthenticate,
                b"content-encoding" => HeaderName::ContentEncoding,
                b"proxy-authenticate" => HeaderName::ProxyAuthenticate,
                b"proxy-authorization" => HeaderName::ProxyAuthorization,
                b"request-disposition" => HeaderName::RequestDisposition,
                _ => return None,
            },
        };
        Some(known)
    }

    /// The canonical long form (`Call-ID`, `CSeq`, `WWW-Authenticate`), or the name as received
    /// for `Other`.
    pub fn as_str(&self) -> &str {
        match self {
            HeaderName::Via => "Via",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CallId => "Call-ID",
            HeaderName::CSeq => "CSeq",
            HeaderName::Contact => "Contact",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::Expires => "Expires",
            HeaderName::MinExpires => "Min-Expires",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::Authorization => "Authorization",
            HeaderName::WwwAuthenticate => "WWW-Authenticate",
            HeaderName::ProxyAuthorization => "Proxy-Authorization",
            HeaderName::ProxyAuthenticate => "Proxy-Authenticate",
            HeaderName::UserAgent => "User-Agent",
            HeaderName::Server => "Server",
            HeaderName::Supported => "Supported",
            HeaderName::Require => "Require",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::Unsupported => "Unsupported",
            HeaderName::Allow => "Allow",
            HeaderName::Route => "Route",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::Path => "Path",
            HeaderName::Date => "Date",
            HeaderName::Event => "Event",
            HeaderName::AllowEvents => "Allow-Events",
            HeaderName::Subject => "Subject",
            HeaderName::ContentEncoding => "Content-Encoding",
            HeaderName::ReferTo => "Refer-To",
            HeaderName::ReferredBy => "Referred-By",
            HeaderName::SessionExpires => "Session-Expires",
            HeaderName::AcceptContact => "Accept-Contact",
            HeaderName::RejectContact => "Reject-Contact",
            HeaderName::RequestDisposition => "Request-Disposition",
            HeaderName::Other(s) => s,
        }
    }
}

impl PartialEq for HeaderName {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (HeaderName::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl Eq for HeaderName {}

impl Hash for HeaderName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        if let HeaderName::Other(s) = self {
            state.write_usize(s.len());
            for b in s.bytes() {
                state.write_u8(b.to_ascii_lowercase());
            }
        }
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Header fields in wire order. Values are stored unfolded and trimmed; repeated fields stay
/// separate entries (a comma-joined value is one entry: splitting is `header`'s job, because
/// only it knows which headers are lists).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(HeaderName, String)>,
}

impl Headers {
    pub fn new() -> Self {
        Headers::default()
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Headers {
            entries: Vec::with_capacity(capacity),
        }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &HeaderName) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in wire order.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn contains(&self, name: &HeaderName) -> bool {
        self.entries.iter().any(|(n, _)| n == name)
    }

    /// Appends a field after all existing ones.
    pub fn push(&mut self, name: HeaderName, value: impl Into<String>) {
        self.entries.push((name, value.into()));
    }

    /// Replaces every field called `name` with a single one, at the position of the first
    /// (or at the end if there was none), so relative order with other headers is kept.
    pub fn set(&mut self, name: HeaderName, value: impl Into<String>) {
        let value = value.into();
        match self.entries.iter().position(|(n, _)| *n == name) {
            Some(first) => {
                let mut index = 0;
                self.entries.retain(|(n, _)| {
                    let keep = index <= first || *n != name;
                    index += 1;
                    keep
                });
                if let Some(entry) = self.entries.get_mut(first) {
                    entry.1 = value;
                }
            }
            None => self.entries.push((name, value)),
        }
    }

    /// Removes every field called `name` and returns how many there were.
    pub fn remove(&mut self, name: &HeaderName) -> usize {
        let before = self.entries.len();
        self.entries.retain(|(n, _)| n != name);
        before - self.entries.len()
    }

    /// Number of fields (a comma-joined value counts once).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &str)> {
        self.entries.iter().map(|(n, v)| (n, v.as_str()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The Request-URI, verbatim. Serialization writes it as-is, so it must not contain
    /// whitespace or line breaks.
    pub uri: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

/// A cursor over physical lines of raw bytes, for [`salvage_for_reply`], which must step over
/// lines that are not UTF-8. A line ends at LF; a CR right before the LF is dropped, which is
/// how bare-LF messages are accepted alongside CRLF ones (the parser's [`TextLines`] does the
/// same).
struct Lines<'a> {
    buf: &'a [u8],
    pos: usize,
    line_no: usize,
}

impl<'a> Lines<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Lines {
            buf,
            pos: 0,
            line_no: 0,
        }
    }

    /// The next complete line without its terminator, or `None` if no LF is left.
    fn next_line(&mut self) -> Option<&'a [u8]> {
        let rest = self.remaining();
        let nl = rest.iter().position(|&b| b == b'\n')?;
        let (line, _) = rest.split_at(nl);
        self.pos += nl + 1;
        self.line_no += 1;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }

    fn remaining(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }
}

/// The longest prefix of `buf` that is valid UTF-8. The header section must be UTF-8 but the
/// body may be anything, so this is where header parsing stops looking.
fn utf8_prefix(buf: &[u8]) -> &str {
    match std::str::from_utf8(buf) {
        Ok(text) => text,
        Err(e) => buf
            .get(..e.valid_up_to())
            .and_then(|valid| std::str::from_utf8(valid).ok())
            .unwrap_or_default(),
    }
}

/// The parser's line cursor. It runs over text validated once up front rather than line by
/// line, which lets the LF search use core's word-at-a-time `memchr` (the byte-by-byte search
/// was the single largest cost of parsing a REGISTER).
struct TextLines<'a> {
    text: &'a str,
    /// Length of the whole buffer, of which `text` may be only the UTF-8 prefix.
    buf_len: usize,
    pos: usize,
    line_no: usize,
}

impl<'a> TextLines<'a> {
    fn new(text: &'a str, buf_len: usize) -> Self {
        TextLines {
            text,
            buf_len,
            pos: 0,
            line_no: 0,
        }
    }

    fn remaining(&self) -> &'a str {
        self.text.get(self.pos..).unwrap_or_default()
    }

    /// The next line without its terminator, checked against the limits and for stray CRs.
    /// `Ok(None)` means the buffer ends without another LF.
    fn next_line(&mut self, limits: &Limits) -> Result<Option<&'a str>, ParseError> {
        let rest = self.remaining();
        let Some(nl) = rest.find('\n') else {
            let line = self.line_no + 1;
            // Report the length problem first: an endless header is the more useful
            // diagnosis than whatever byte happens to follow it.
            if rest.len() > limits.max_line_bytes {
                return Err(ParseError::LineTooLong {
                    line,
                    limit: limits.max_line_bytes,
                });
            }
            if self.pos + rest.len() < self.buf_len {
                return Err(ParseError::NotUtf8 { line });
            }
            return Ok(None);
        };
        // `nl` indexes an ASCII LF, so the split is on a char boundary.
        let (line, _) = rest.split_at(nl);
        self.pos += nl + 1;
        self.line_no += 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.len() > limits.max_line_bytes {
            return Err(ParseError::LineTooLong {
                line: self.line_no,
                limit: limits.max_line_bytes,
            });
        }
        if line.as_bytes().contains(&b'\r') {
            return Err(ParseError::BareCr { line: self.line_no });
        }
        check_controls(line.as_bytes(), self.line_no)?;
        Ok(Some(line))
    }
}

/// Decodes one line as UTF-8 and rejects CRs inside it, like [`TextLines::next_line`].
///
/// A stray CR is refused because other SIP stacks may treat it as a line break, which would
/// let a value smuggle in a header.
fn line_text(line: &[u8], line_no: usize) -> Result<&str, ParseError> {
    let text = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8 { line: line_no })?;
    if text.as_bytes().contains(&b'\r') {
        return Err(ParseError::BareCr { line: line_no });
    }
    check_controls(text.as_bytes(), line_no)?;
    Ok(text)
}

/// RFC 3261's grammar admits control characters (NUL, BEL, DEL, ...) only as quoted-pairs,
/// `\` followed by the character, which RFC 4475's "intmeth" exercises. A raw one anywhere
/// else is malformed, and letting it through would hand C-string truncation tricks to every
/// system downstream (logs, the softswitch, the grid), so it is refused here.
fn check_controls(line: &[u8], line_no: usize) -> Result<(), ParseError> {
    let mut escaped = false;
    for &b in line {
        let control = (b < 0x20 && b != b'\t') || b == 0x7f;
        if control && !escaped {
            return Err(ParseError::ControlChar { line: line_no });
        }
        escaped = !escaped && b == b'\\';
    }
    Ok(())
}

fn is_status_line(line: &[u8]) -> bool {
    line.get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
}

/// Splits `METHOD SP Request-URI SP SIP-Version`, checking structure but not the version
/// value, so that `salvage_for_reply` can still answer a well-formed request of another
/// version (with 505).
fn split_request_line(line: &str) -> Result<(&str, &str, &str), ParseError> {
    let (method, rest) = line
        .split_once(' ')
        .ok_or(ParseError::InvalidRequestLine("missing Request-URI"))?;
    if !is_token(method) {
        return Err(ParseError::InvalidRequestLine("method is not a token"));
    }
    let (uri, version) = rest
        .split_once(' ')
        .ok_or(ParseError::InvalidRequestLine("missing SIP version"))?;
    if uri.is_empty() {
        return Err(ParseError::InvalidRequestLine(
            "empty Request-URI (fields must be separated by exactly one space)",
        ));
    }
    if uri.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(ParseError::InvalidRequestLine(
            "Request-URI contains whitespace or control characters",
        ));
    }
    if version.is_empty() || version.bytes().any(|b| b <= b' ') {
        return Err(ParseError::InvalidRequestLine(
            "malformed SIP version (fields must be separated by exactly one space)",
        ));
    }
    Ok((method, uri, version))
}

/// RFC 3261 §7.1: the version string is case-insensitive.
fn check_version(version: &str) -> Result<(), ParseError> {
    if version.eq_ignore_ascii_case("SIP/2.0") {
        Ok(())
    } else {
        Err(ParseError::UnsupportedVersion)
    }
}

fn parse_status_line(line: &str) -> Result<(u16, &str), ParseError> {
    let (version, rest) = line
        .split_once(' ')
        .ok_or(ParseError::InvalidStatusLine("missing status code"))?;
    check_version(version)?;
    // A missing reason phrase (no second space) is tolerated: the phrase carries no meaning.
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    let code = match code.as_bytes() {
        &[a @ b'1'..=b'6', b @ b'0'..=b'9', c @ b'0'..=b'9'] => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => {
            return Err(ParseError::InvalidStatusLine(
                "status code must be three digits from 100 to 699",
            ))
        }
    };
    Ok((code, reason))
}

/// Parses a Content-Length value. Absurdly large values saturate rather than fail, since they
/// can only ever be a mismatch against the bytes we actually hold.
fn parse_content_length(value: &str) -> Option<usize> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.bytes().fold(0usize, |acc, b| {
        acc.saturating_mul(10).saturating_add(usize::from(b - b'0'))
    }))
}

fn declared_content_length(headers: &Headers) -> Result<Option<usize>, ParseError> {
    let mut declared: Option<usize> = None;
    for value in headers.get_all(&HeaderName::ContentLength) {
        let n = parse_content_length(value).ok_or(ParseError::InvalidContentLength)?;
        match declared {
            Some(first) if first != n => {
                return Err(ParseError::ConflictingContentLength { first, second: n })
            }
            _ => declared = Some(n),
        }
    }
    Ok(declared)
}

fn check_mandatory(headers: &Headers) -> Result<(), ParseError> {
    // One pass with a bitmask instead of five lookups.
    const VIA: u8 = 1;
    const FROM: u8 = 2;
    const TO: u8 = 4;
    const CALL_ID: u8 = 8;
    const CSEQ: u8 = 16;
    let mut seen = 0u8;
    for (name, _) in headers.iter() {
        seen |= match name {
            HeaderName::Via => VIA,
            HeaderName::From => FROM,
            HeaderName::To => TO,
            HeaderName::CallId => CALL_ID,
            HeaderName::CSeq => CSEQ,
            _ => 0,
        };
    }
    for (bit, name) in [
        (VIA, "Via"),
        (FROM, "From"),
        (TO, "To"),
        (CALL_ID, "Call-ID"),
        (CSEQ, "CSeq"),
    ] {
        if seen & bit == 0 {
            return Err(ParseError::MissingHeader(name));
        }
    }
    Ok(())
}

enum StartLine<'a> {
    Request { method: &'a str, uri: &'a str },
    Response { code: u16, reason: &'a str },
}

impl Message {
    /// Parses one complete message: a whole datagram, or one message cut from a stream by
    /// `framing::next_frame`.
    ///
    /// Header values are unfolded (continuation lines joined with one space) and trimmed; names
    /// are resolved with [`HeaderName::parse`]. Content-Length, when present, selects the body
    /// and any bytes after it are ignored as datagram padding; when absent the body is the rest
    /// of the buffer. Requests must carry Via, From, To, Call-ID and CSeq; responses are not
    /// checked, because their consumer matches them on Via/CSeq and has to handle absence then.
    pub fn parse(buf: &[u8], limits: &Limits) -> Result<Message, ParseError> {
        if buf.len() > limits.max_message_bytes {
            return Err(ParseError::TooLarge {
                size: buf.len(),
                limit: limits.max_message_bytes,
            });
        }
        let text = utf8_prefix(buf);
        let mut lines = TextLines::new(text, buf.len());

        // RFC 3261 §7.5: CRLFs before the start line are ignored.
        let start = loop {
            match lines.next_line(limits)? {
                Some("") => continue,
                Some(line) => break line,
                None if lines.remaining().is_empty() => return Err(ParseError::Empty),
                None => return Err(ParseError::UnterminatedHeaders),
            }
        };
        let start = if is_status_line(start.as_bytes()) {
            let (code, reason) = parse_status_line(start)?;
            StartLine::Response { code, reason }
        } else {
            let (method, uri, version) = split_request_line(start)?;
            check_version(version)?;
            StartLine::Request { method, uri }
        };

        let mut headers = Headers::with_capacity(16);
        loop {
            let line = lines
                .next_line(limits)?
                .ok_or(ParseError::UnterminatedHeaders)?;
            if line.is_empty() {
                break;
            }
            let line_no = lines.line_no;
            if line.starts_with(is_wsp) {
                let (_, last) = headers
                    .entries
                    .last_mut()
                    .ok_or(ParseError::UnexpectedContinuation { line: line_no })?;
                let more = line.trim_matches(is_wsp);
                if !more.is_empty() {
                    if !last.is_empty() {
                        last.push(' ');
                    }
                    last.push_str(more);
                }
                continue;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or(ParseError::MissingColon { line: line_no })?;
            let name = name.trim_end_matches(is_wsp);
            if !is_token(name) {
                return Err(ParseError::InvalidHeaderName { line: line_no });
            }
            if headers.len() >= limits.max_headers {
                return Err(ParseError::TooManyHeaders {
                    limit: limits.max_headers,
                });
            }
            headers.push(HeaderName::parse(name), value.trim_matches(is_wsp));
        }

        // `pos` is a byte offset into `text`, which is a prefix of `buf`.
        let rest = buf.get(lines.pos..).unwrap_or_default();
        let body = match declared_content_length(&headers)? {
            Some(declared) => rest
                .get(..declared)
                .ok_or(ParseError::ContentLengthMismatch {
                    declared,
                    actual: rest.len(),
                })?,
            None => rest,
        };

        Ok(match start {
            StartLine::Request { method, uri } => {
                check_mandatory(&headers)?;
                Message::Request(Request {
                    method: Method::from_token(method),
                    uri: uri.to_owned(),
                    headers,
                    body: body.to_vec(),
                })
            }
            StartLine::Response { code, reason } => Message::Response(Response {
                code,
                reason: reason.to_owned(),
                headers,
                body: body.to_vec(),
            }),
        })
    }

    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Message::Request(r) => &mut r.headers,
            Message::Response(r) => &mut r.headers,
        }
    }

    pub fn body(&self) -> &[u8] {
        match self {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Message::Request(r) => r.write_to(out),
            Message::Response(r) => r.write_to(out),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }
}

/// Recovers just enough of a request that failed [`Message::parse`] to answer it with an error
/// response (RFC 3261 §8.2.6 needs Via, From, To, Call-ID and CSeq).
///
/// Header lines that are malformed, too long or not UTF-8 are skipped instead of failing, and
/// the body is ignored, so this works for Content-Length mismatches, bad header syntax and
/// truncated datagrams. A request line with a version other than SIP/2.0 is accepted so the
/// caller can answer 505. Returns `None` for responses, for an unusable request line, and when
/// any of the five headers cannot be found. Only the first `max_message_bytes` are examined.
///
/// It does not check whether the message would have parsed: callers use it after `parse`
/// failed. The returned request has exactly those headers (all Vias, the first of the others)
/// and an empty body.
pub fn salvage_for_reply(buf: &[u8], limits: &Limits) -> Option<Request> {
    let buf = buf.get(..limits.max_message_bytes).unwrap_or(buf);
    let mut lines = Lines::new(buf);
    let start = loop {
        match lines.next_line()? {
            [] => continue,
            line => break line,
        }
    };
    if start.len() > limits.max_line_bytes || is_status_line(start) {
        return None;
    }
    let start = line_text(start, lines.line_no).ok()?;
    let (method, uri, _version) = split_request_line(start).ok()?;

    let mut headers = Headers::with_capacity(8);
    let mut vias = 0usize;
    // Whether continuation lines belong to a header we kept.
    let mut continuing = false;
    while let Some(line) = lines.next_line() {
        if line.is_empty() {
            break;
        }
        let text = match line_text(line, lines.line_no) {
            Ok(text) if line.len() <= limits.max_line_bytes => text,
            _ => {
                continuing = false;
                continue;
            }
        };
        if text.starts_with(is_wsp) {
            if continuing {
                if let Some((_, last)) = headers.entries.last_mut() {
                    let more = text.trim_matches(is_wsp);
                    if !more.is_empty() {
                        if !last.is_empty() {
                            last.push(' ');
                        }
                        last.push_str(more);
                    }
                }
            }
            continue;
        }
        continuing = false;
        let Some((name, value)) = text.split_once(':') else {
            continue;
        };
        let keep = match HeaderName::known(name.trim_end_matches(is_wsp)) {
            Some(HeaderName::Via) if vias < limits.max_headers => {
                vias += 1;
                Some(HeaderName::Via)
            }
            Some(
                n @ (HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq),
            ) if !headers.contains(&n) => Some(n),
            _ => None,
        };
        if let Some(name) = keep {
            headers.push(name, value.trim_matches(is_wsp));
            continuing = true;
        }
    }
    check_mandatory(&headers).ok()?;
    Some(Request {
        method: Method::from_token(method),
        uri: uri.to_owned(),
        headers,
        body: Vec::new(),
    })
}

fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    for slot in digits.iter_mut().rev() {
        // n % 10 < 10, so the cast cannot truncate.
        *slot = b'0' + (n % 10) as u8;
        start -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

/// Writes the header block including the terminating empty line. Content-Length is always
/// derived from the body, so a stale stored value can never desynchronize stream framing; CR
/// and LF inside values become spaces so a value can never inject a header.
fn write_headers(headers: &Headers, body_len: usize, out: &mut Vec<u8>) {
    for (name, value) in headers.iter() {
        if *name == HeaderName::ContentLength {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        if value.bytes().any(|b| b == b'\r' || b == b'\n') {
            out.extend(value.bytes().map(|b| match b {
                b'\r' | b'\n' => b' ',
                b => b,
            }));
        } else {
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, body_len);
    out.extend_from_slice(b"\r\n\r\n");
}

fn estimated_len(headers: &Headers, body_len: usize) -> usize {
    // Name, ": ", value and CRLF per header, plus start line and Content-Length slack.
    let header_bytes: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    header_bytes + body_len + 96
}

impl Request {
    /// Appends the wire form to `out`, so the hot path can reuse one buffer.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.uri.as_bytes());
        out.extend_from_slice(b" SIP/2.0\r\n");
        write_headers(&self.headers, self.body.len(), out);
        out.extend_from_slice(&self.body);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(estimated_len(&self.headers, self.body.len()) + self.uri.len());
        self.write_to(&mut out);
        out
    }
}

impl Response {
    /// A response to `req` carrying the headers RFC 3261 §8.2.6.2 says to copy: every Via in
    /// order, then From, To, Call-ID and CSeq. The caller adds the To tag (when the request's
    /// To has none) and anything else.
    pub fn reply_to(req: &Request, code: u16, reason: &str) -> Response {
        let mut headers = Headers::with_capacity(8);
        for value in req.headers.get_all(&HeaderName::Via) {
            headers.push(HeaderName::Via, value);
        }
        for name in [
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq,
        ] {
            if let Some(value) = req.headers.get(&name) {
                headers.push(name, value);
            }
        }
        Response {
            code,
            reason: reason.to_owned(),
            headers,
            body: Vec::new(),
        }
    }

    /// Appends the wire form to `out`, so the hot path can reuse one buffer.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"SIP/2.0 ");
        push_decimal(out, usize::from(self.code));
        out.push(b' ');
        out.extend_from_slice(self.reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        write_headers(&self.headers, self.body.len(), out);
        out.extend_from_slice(&self.body);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(estimated_len(&self.headers, self.body.len()) + self.reason.len());
        self.write_to(&mut out);
        out
    }
}

/// The standard reason phrase for `code`, or a generic one for its class.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        603 => "Decline",
        _ => match code / 100 {
            1 => "Provisional",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            6 => "Global Failure",
            _ => "Unknown",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::header::{parse_contacts, parse_vias, CSeq, ContactValue, NameAddr};
    use super::*;
    use proptest::prelude::*;

    const AUTHORIZATION: &str = "Digest username=\"1001\", realm=\"r\", nonce=\"n\", \
        uri=\"sip:example.com;transport=tls\", response=\"...\", algorithm=SHA-256, qop=auth, \
        nc=0000000a, cnonce=\"c\"";

    fn register() -> String {
        format!(
            "REGISTER sip:example.com SIP/2.0\r\n\
             Via: SIP/2.0/TLS 192.0.2.10:49152;rport;branch=z9hG4bK-524287-1-a1b2c3d4\r\n\
             Max-Forwards: 70\r\n\
             Contact: <sip:1001@192.0.2.10:49152;transport=tls;ob>;reg-id=1;\
             +sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\"\r\n\
             To: <sip:1001@example.com>\r\n\
             From: \"Agent 1001\" <sip:1001@example.com>;tag=8a7d3c21\r\n\
             Call-ID: 5f1e7c9a-2b3d-4e6f-8a9b-0c1d2e3f4a5b\r\n\
             CSeq: 2 REGISTER\r\n\
             Expires: 3600\r\n\
             Authorization: {AUTHORIZATION}\r\n\
             Content-Length: 0\r\n\
             \r\n"
        )
    }

    fn parse(text: &str) -> Result<Message, ParseError> {
        Message::parse(text.as_bytes(), &Limits::default())
    }

    fn parse_request(text: &str) -> Request {
        match parse(text) {
            Ok(Message::Request(r)) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn parse_response(text: &str) -> Response {
        match parse(text) {
            Ok(Message::Response(r)) => r,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    /// A minimal valid request around the given extra header lines and body.
    fn request_with(extra: &str, body: &str) -> String {
        format!(
            "OPTIONS sip:example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
             From: <sip:a@example.com>;tag=1\r\n\
             To: <sip:b@example.com>\r\n\
             Call-ID: c1\r\n\
             CSeq: 1 OPTIONS\r\n\
             {extra}\r\n{body}"
        )
    }

    #[test]
    fn raw_control_characters_are_refused_but_quoted_pairs_pass() {
        let msg = |to: &str| {
            format!(
                "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
                 To: {to}\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            )
        };
        for raw in [
            "\"a\x00b\" <sip:a@b>",
            "<sip:a@b>\x07",
            "<sip:a@b>;x=\x7f",
            "\"\\\\\x00\" <sip:a@b>",
        ] {
            let m = msg(raw);
            assert!(
                matches!(
                    Message::parse(m.as_bytes(), &Limits::default()),
                    Err(ParseError::ControlChar { .. })
                ),
                "{raw:?}"
            );
        }
        assert!(
            Message::parse(msg("\"x\\\x00y\" <sip:a@b>").as_bytes(), &Limits::default()).is_ok()
        );
        assert!(Message::parse(
            msg("\"tab\there\" <sip:a@b>").as_bytes(),
            &Limits::default()
        )
        .is_ok());
    }

    #[test]
    fn register_with_digest_authorization_keeps_value_verbatim() {
        let req = parse_request(&register());
        assert_eq!(req.method, Method::Register);
        assert_eq!(req.uri, "sip:example.com");
        assert_eq!(req.headers.len(), 10);
        assert_eq!(
            req.headers.get(&HeaderName::Authorization),
            Some(AUTHORIZATION)
        );
        assert_eq!(req.headers.get(&HeaderName::Expires), Some("3600"));
        assert_eq!(req.headers.get(&HeaderName::CSeq), Some("2 REGISTER"));
        assert!(req.body.is_empty());
        let names: Vec<&str> = req.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Via",
                "Max-Forwards",
                "Contact",
                "To",
                "From",
                "Call-ID",
                "CSeq",
                "Expires",
                "Authorization",
                "Content-Length"
            ]
        );
    }

    #[test]
    fn compact_header_forms_expand() {
        let text = "REGISTER sip:example.com SIP/2.0\r\n\
                    v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKc\r\n\
                    i: compact@192.0.2.1\r\n\
                    m: <sip:u@192.0.2.1>\r\n\
                    f: <sip:u@example.com>;tag=f\r\n\
                    t: <sip:u@example.com>\r\n\
                    CSeq: 1 REGISTER\r\n\
                    c: text/plain\r\n\
                    k: path\r\n\
                    l: 4\r\n\
                    \r\n\
                    abcd";
        let req = parse_request(text);
        let names: Vec<HeaderName> = req.headers.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(
            names,
            [
                HeaderName::Via,
                HeaderName::CallId,
                HeaderName::Contact,
                HeaderName::From,
                HeaderName::To,
                HeaderName::CSeq,
                HeaderName::ContentType,
                HeaderName::Supported,
                HeaderName::ContentLength,
            ]
        );
        assert_eq!(
            req.headers.get(&HeaderName::CallId),
            Some("compact@192.0.2.1")
        );
        assert_eq!(req.body, b"abcd");
        // Written back in long form.
        let wire = String::from_utf8(req.to_bytes()).expect("utf-8");
        assert!(
            wire.contains("\r\nCall-ID: compact@192.0.2.1\r\n"),
            "{wire}"
        );
        assert!(
            wire.contains("\r\nContact: <sip:u@192.0.2.1>\r\n"),
            "{wire}"
        );
    }

    #[test]
    fn every_compact_form_and_case_insensitive_long_form() {
        let compact = [
            ("v", HeaderName::Via),
            ("i", HeaderName::CallId),
            ("m", HeaderName::Contact),
            ("f", HeaderName::From),
            ("t", HeaderName::To),
            ("l", HeaderName::ContentLength),
            ("c", HeaderName::ContentType),
            ("k", HeaderName::Supported),
            ("e", HeaderName::ContentEncoding),
            ("s", HeaderName::Subject),
            ("o", HeaderName::Event),
            ("u", HeaderName::AllowEvents),
            ("r", HeaderName::ReferTo),
            ("b", HeaderName::ReferredBy),
            ("x", HeaderName::SessionExpires),
            ("a", HeaderName::AcceptContact),
            ("j", HeaderName::RejectContact),
            ("d", HeaderName::RequestDisposition),
        ];
        for (short, long) in compact {
            assert_eq!(HeaderName::parse(short), long, "{short}");
            assert_eq!(HeaderName::parse(&short.to_uppercase()), long, "{short}");
            // The long form parses back to the same variant in any case.
            assert_eq!(HeaderName::parse(long.as_str()), long);
            assert_eq!(HeaderName::parse(&long.as_str().to_lowercase()), long);
            assert_eq!(HeaderName::parse(&long.as_str().to_uppercase()), long);
        }
        assert_eq!(HeaderName::parse("call-id").as_str(), "Call-ID");
        assert_eq!(HeaderName::parse("CSEQ").as_str(), "CSeq");
        assert_eq!(
            HeaderName::parse("www-authenticate").as_str(),
            "WWW-Authenticate"
        );
        assert_eq!(HeaderName::parse("Min-Expires"), HeaderName::MinExpires);
        assert_eq!(HeaderName::parse("q"), HeaderName::Other("q".into()));
        assert_eq!(HeaderName::parse("X-Custom").as_str(), "X-Custom");
        // Longer than the lookup buffer: must not be mistaken for anything.
        let long = "X-".repeat(40);
        assert_eq!(HeaderName::parse(&long), HeaderName::Other(long.clone()));
    }

    #[test]
    fn every_known_long_name_round_trips() {
        let all = [
            HeaderName::Via,
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq,
            HeaderName::Contact,
            HeaderName::ContentLength,
            HeaderName::ContentType,
            HeaderName::Expires,
            HeaderName::MinExpires,
            HeaderName::MaxForwards,
            HeaderName::Authorization,
            HeaderName::WwwAuthenticate,
            HeaderName::ProxyAuthorization,
            HeaderName::ProxyAuthenticate,
            HeaderName::UserAgent,
            HeaderName::Server,
            HeaderName::Supported,
            HeaderName::Require,
            HeaderName::ProxyRequire,
            HeaderName::Unsupported,
            HeaderName::Allow,
            HeaderName::Route,
            HeaderName::RecordRoute,
            HeaderName::Path,
            HeaderName::Date,
            HeaderName::Event,
            HeaderName::AllowEvents,
            HeaderName::Subject,
            HeaderName::ContentEncoding,
            HeaderName::ReferTo,
            HeaderName::ReferredBy,
            HeaderName::SessionExpires,
            HeaderName::AcceptContact,
            HeaderName::RejectContact,
            HeaderName::RequestDisposition,
        ];
        for name in &all {
            let canonical = name.as_str();
            assert_eq!(&HeaderName::parse(canonical), name);
            assert_eq!(&HeaderName::parse(&canonical.to_ascii_lowercase()), name);
            assert_eq!(&HeaderName::parse(&canonical.to_ascii_uppercase()), name);
            // One character off is not a match.
            let mut off = canonical.to_owned();
            off.push('x');
            assert!(
                matches!(HeaderName::parse(&off), HeaderName::Other(_)),
                "{off}"
            );
            // ("To" minus its first letter is the compact form of Event.)
            if canonical.len() > 2 {
                assert!(matches!(
                    HeaderName::parse(&canonical[1..]),
                    HeaderName::Other(_)
                ));
            }
        }
        let distinct: std::collections::HashSet<&str> = all.iter().map(|n| n.as_str()).collect();
        assert_eq!(distinct.len(), all.len());
    }

    #[test]
    fn other_header_names_compare_case_insensitively() {
        use std::collections::hash_map::DefaultHasher;
        let hash = |n: &HeaderName| {
            let mut h = DefaultHasher::new();
            n.hash(&mut h);
            h.finish()
        };
        let a = HeaderName::parse("X-Agent-Id");
        let b = HeaderName::parse("x-agent-ID");
        assert_eq!(a, b);
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(a, HeaderName::parse("X-Agent"));
        assert_eq!(a.as_str(), "X-Agent-Id", "kept as received");
        let req = parse_request(&request_with("x-agent-id: 42\r\n", ""));
        assert_eq!(req.headers.get(&a), Some("42"));
    }

    #[test]
    fn folded_via_continues_on_next_line() {
        let req = parse_request(
            "REGISTER sip:example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.4:5060\r\n\
             \t ;branch=z9hG4bKfold\r\n\
             \x20  ;rport\r\n\
             From: <sip:a@example.com>;tag=1\r\n\
             To: <sip:a@example.com>\r\n\
             Call-ID: fold\r\n\
             CSeq: 1 REGISTER\r\n\
             \r\n",
        );
        assert_eq!(
            req.headers.get(&HeaderName::Via),
            Some("SIP/2.0/UDP 192.0.2.4:5060 ;branch=z9hG4bKfold ;rport")
        );
        let vias = parse_vias(req.headers.get_all(&HeaderName::Via)).expect("vias");
        assert_eq!(vias.len(), 1);
        assert_eq!(vias[0].branch(), Some("z9hG4bKfold"));
        assert_eq!(vias[0].rport(), Some(None));
        assert_eq!(vias[0].port, Some(5060));
    }

    #[test]
    fn folding_onto_an_empty_value_adds_no_leading_space() {
        let req = parse_request(&request_with("Subject:\r\n   hello\r\n  world  \r\n", ""));
        assert_eq!(req.headers.get(&HeaderName::Subject), Some("hello world"));
    }

    #[test]
    fn continuation_before_any_header_is_rejected() {
        let err = parse("OPTIONS sip:a SIP/2.0\r\n folded\r\n\r\n").unwrap_err();
        assert_eq!(err, ParseError::UnexpectedContinuation { line: 2 });
    }

    #[test]
    fn whitespace_around_colon_is_allowed() {
        let req = parse_request(&request_with("Subject \t :   spaced out \t\r\n", ""));
        assert_eq!(req.headers.get(&HeaderName::Subject), Some("spaced out"));
        let req = parse_request(
            "OPTIONS sip:example.com SIP/2.0\r\n\
             Via : SIP/2.0/UDP h;branch=z9hG4bKx\r\n\
             From   : <sip:a@example.com>;tag=1\r\n\
             To\t: <sip:b@example.com>\r\n\
             Call-ID: c1\r\n\
             CSeq : 1 OPTIONS\r\n\
             \r\n",
        );
        assert_eq!(
            req.headers.get(&HeaderName::Via),
            Some("SIP/2.0/UDP h;branch=z9hG4bKx")
        );
        assert_eq!(req.headers.get(&HeaderName::CSeq), Some("1 OPTIONS"));
    }

    #[test]
    fn comma_joined_via_and_second_via_line_give_three_vias_in_order() {
        let req = parse_request(
            "INVITE sip:bob@example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP a.example.com;branch=z9hG4bKp1, SIP/2.0/TCP b.example.com:5070;branch=z9hG4bKp2\r\n\
             From: <sip:a@example.com>;tag=1\r\n\
             v: SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bKp3\r\n\
             To: <sip:bob@example.com>\r\n\
             Call-ID: three-vias\r\n\
             CSeq: 7 INVITE\r\n\
             \r\n",
        );
        let vias = parse_vias(req.headers.get_all(&HeaderName::Via)).expect("vias");
        let branches: Vec<_> = vias.iter().map(|v| v.branch().unwrap_or("")).collect();
        assert_eq!(branches, ["z9hG4bKp1", "z9hG4bKp2", "z9hG4bKp3"]);
        assert_eq!(vias[0].host, "a.example.com");
        assert_eq!(vias[1].transport, "TCP");
        assert_eq!(vias[1].port, Some(5070));
        assert_eq!(vias[2].host, "[2001:db8::9]");
        assert_eq!(vias[2].port, Some(5061));
    }

    #[test]
    fn content_length_shorter_body_is_a_mismatch() {
        let err = parse(&request_with("Content-Length: 10\r\n", "short")).unwrap_err();
        assert_eq!(
            err,
            ParseError::ContentLengthMismatch {
                declared: 10,
                actual: 5
            }
        );
        assert_eq!(
            err.to_string(),
            "Content-Length is 10 but only 5 body bytes are present"
        );
    }

    #[test]
    fn content_length_longer_body_is_datagram_padding() {
        let req = parse_request(&request_with("l: 3\r\n", "abcPADDING"));
        assert_eq!(req.body, b"abc");
        let req = parse_request(&request_with("Content-Length: 0\r\n", "\r\n\r\n"));
        assert!(req.body.is_empty());
    }

    #[test]
    fn missing_content_length_takes_the_rest_as_body() {
        let req = parse_request(&request_with("", "whole rest\r\n"));
        assert_eq!(req.body, b"whole rest\r\n");
    }

    #[test]
    fn content_length_values_must_agree_and_be_decimal() {
        let req = parse_request(&request_with("Content-Length: 2\r\nl: 02\r\n", "ab"));
        assert_eq!(req.body, b"ab");
        assert_eq!(
            parse(&request_with("Content-Length: 2\r\nl: 3\r\n", "abc")).unwrap_err(),
            ParseError::ConflictingContentLength {
                first: 2,
                second: 3
            }
        );
        for bad in ["-1", "1.0", "0x10", "", "1 2", "+5"] {
            let text = request_with(&format!("Content-Length: {bad}\r\n"), "");
            assert_eq!(
                parse(&text).unwrap_err(),
                ParseError::InvalidContentLength,
                "{bad:?}"
            );
        }
        // A value too large for usize saturates and is then simply a mismatch.
        let text = request_with("Content-Length: 99999999999999999999999999\r\n", "x");
        assert!(matches!(
            parse(&text),
            Err(ParseError::ContentLengthMismatch { actual: 1, .. })
        ));
    }

    #[test]
    fn truncated_register_fails_cleanly_at_every_offset() {
        let full = register();
        let bytes = full.as_bytes();
        assert!(Message::parse(bytes, &Limits::default()).is_ok());
        for end in 0..bytes.len() {
            let prefix = &bytes[..end];
            assert!(
                Message::parse(prefix, &Limits::default()).is_err(),
                "prefix of {end} bytes parsed"
            );
            let _ = salvage_for_reply(prefix, &Limits::default());
        }
    }

    #[test]
    fn truncated_message_with_body_reports_mismatch() {
        let text = request_with("Content-Length: 10\r\n", "0123456789");
        for cut in 1..10 {
            let err = parse(&text[..text.len() - cut]).unwrap_err();
            assert_eq!(
                err,
                ParseError::ContentLengthMismatch {
                    declared: 10,
                    actual: 10 - cut
                }
            );
        }
    }

    #[test]
    fn ten_thousand_headers_are_too_many() {
        let mut text = request_with("", "");
        text.truncate(text.len() - 2);
        for i in 0..10_000 {
            text.push_str(if i % 2 == 0 { "X: y\r\n" } else { "Y: z\r\n" });
        }
        text.push_str("\r\n");
        assert!(text.len() < Limits::default().max_message_bytes);
        assert_eq!(
            parse(&text).unwrap_err(),
            ParseError::TooManyHeaders { limit: 128 }
        );
        // Exactly at the limit is fine.
        let limits = Limits {
            max_headers: 7,
            ..Limits::default()
        };
        let ok = request_with("X: 1\r\nY: 2\r\n", "");
        assert!(Message::parse(ok.as_bytes(), &limits).is_ok());
        let over = request_with("X: 1\r\nY: 2\r\nZ: 3\r\n", "");
        assert_eq!(
            Message::parse(over.as_bytes(), &limits).unwrap_err(),
            ParseError::TooManyHeaders { limit: 7 }
        );
    }

    #[test]
    fn a_64k_header_is_rejected() {
        let huge = format!("X-Big: {}\r\n", "a".repeat(64 * 1024));
        let text = request_with(&huge, "");
        assert!(matches!(
            parse(&text).unwrap_err(),
            ParseError::TooLarge { limit: 65_535, .. }
        ));
        let roomy = Limits {
            max_message_bytes: 1 << 20,
            ..Limits::default()
        };
        assert_eq!(
            Message::parse(text.as_bytes(), &roomy).unwrap_err(),
            ParseError::LineTooLong {
                line: 7,
                limit: 8_192
            }
        );
        // Also when the long line is never terminated.
        let unterminated = format!("OPTIONS sip:a SIP/2.0\r\nX: {}", "a".repeat(10_000));
        assert_eq!(
            Message::parse(unterminated.as_bytes(), &roomy).unwrap_err(),
            ParseError::LineTooLong {
                line: 2,
                limit: 8_192
            }
        );
    }

    #[test]
    fn binary_garbage_is_an_error() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in [1usize, 7, 64, 512, 4096] {
            let garbage: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 56) as u8
                })
                .collect();
            assert!(Message::parse(&garbage, &Limits::default()).is_err());
        }
        assert_eq!(parse(""), Err(ParseError::Empty));
        assert_eq!(parse("\r\n\r\n"), Err(ParseError::Empty));
        assert!(Message::parse(&[0xff, 0xfe, b'\n', b'\n'], &Limits::default()).is_err());
        assert_eq!(
            Message::parse(
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n",
                &Limits::default()
            ),
            Err(ParseError::NotUtf8 { line: 1 })
        );
    }

    #[test]
    fn bare_lf_message_parses_like_crlf() {
        let crlf = register();
        let lf = crlf.replace("\r\n", "\n");
        let a = parse(&crlf).expect("crlf");
        let b = parse(&lf).expect("lf");
        assert_eq!(a, b);
        // Mixed terminators in one message are fine too.
        let mixed = crlf.replacen("\r\n", "\n", 3);
        assert_eq!(parse(&mixed).expect("mixed"), a);
    }

    #[test]
    fn leading_crlfs_before_the_start_line_are_ignored() {
        let text = format!("\r\n\r\n{}", register());
        assert!(matches!(parse(&text), Ok(Message::Request(_))));
    }

    #[test]
    fn responses_parse() {
        let res = parse_response(
            "SIP/2.0 200 OK\r\n\
             Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1;received=198.51.100.7;rport=40000\r\n\
             From: <sip:1001@example.com>;tag=a\r\n\
             To: <sip:1001@example.com>;tag=b\r\n\
             Call-ID: r1\r\n\
             CSeq: 2 REGISTER\r\n\
             Contact: <sip:1001@198.51.100.7:40000>;expires=3600\r\n\
             Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n\
             Content-Length: 0\r\n\
             \r\n",
        );
        assert_eq!(res.code, 200);
        assert_eq!(res.reason, "OK");
        assert_eq!(
            res.headers.get(&HeaderName::Date),
            Some("Sat, 13 Nov 2010 23:29:00 GMT")
        );
        let res = parse_response(
            "SIP/2.0 401 Unauthorized Here\r\n\
             WWW-Authenticate: Digest realm=\"r\", nonce=\"abc\", algorithm=SHA-256, qop=\"auth\"\r\n\
             \r\n",
        );
        assert_eq!(res.code, 401);
        assert_eq!(res.reason, "Unauthorized Here");
        assert_eq!(
            res.headers.get(&HeaderName::WwwAuthenticate),
            Some("Digest realm=\"r\", nonce=\"abc\", algorithm=SHA-256, qop=\"auth\"")
        );
        assert_eq!(parse_response("SIP/2.0 100\r\n\r\n").reason, "");
        assert_eq!(parse_response("sip/2.0 180 \r\n\r\n").code, 180);
        for (bad, want) in [
            (
                "SIP/2.0 20 OK\r\n\r\n",
                ParseError::InvalidStatusLine("status code must be three digits from 100 to 699"),
            ),
            (
                "SIP/2.0 700 Nope\r\n\r\n",
                ParseError::InvalidStatusLine("status code must be three digits from 100 to 699"),
            ),
            (
                "SIP/2.0  200 OK\r\n\r\n",
                ParseError::InvalidStatusLine("status code must be three digits from 100 to 699"),
            ),
            ("SIP/3.0 200 OK\r\n\r\n", ParseError::UnsupportedVersion),
            (
                "SIP/2.0\r\n\r\n",
                ParseError::InvalidStatusLine("missing status code"),
            ),
        ] {
            assert_eq!(parse(bad), Err(want), "{bad:?}");
        }
    }

    #[test]
    fn request_line_is_strict() {
        let rest = "Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n\
                    To: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let ok = |line: &str| parse(&format!("{line}\r\n{rest}"));
        assert!(ok("OPTIONS sip:h SIP/2.0").is_ok());
        assert!(
            ok("OPTIONS sip:h sip/2.0").is_ok(),
            "version is case-insensitive"
        );
        assert_eq!(
            ok("OPTIONS sip:h SIP/2.1").unwrap_err(),
            ParseError::UnsupportedVersion
        );
        for bad in [
            "OPTIONS  sip:h SIP/2.0",
            "OPTIONS sip:h  SIP/2.0",
            "OPTIONS sip:h SIP/2.0 ",
            "OPTIONS\tsip:h SIP/2.0",
            "OPTIONS sip:h",
            "OPTIONS",
            "OPT(IONS sip:h SIP/2.0",
            " OPTIONS sip:h SIP/2.0",
        ] {
            assert!(
                matches!(ok(bad), Err(ParseError::InvalidRequestLine(_))),
                "{bad:?}: {:?}",
                ok(bad)
            );
        }
        // Method names are case-sensitive.
        let req = match ok("register sip:h SIP/2.0") {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(req.method, Method::Other("register".into()));
    }

    #[test]
    fn mandatory_request_headers() {
        for (name, missing) in [
            ("Via", "Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"),
            ("From", "From: <sip:a@example.com>;tag=1\r\n"),
            ("To", "To: <sip:b@example.com>\r\n"),
            ("Call-ID", "Call-ID: c1\r\n"),
            ("CSeq", "CSeq: 1 OPTIONS\r\n"),
        ] {
            let text = request_with("", "").replace(missing, "");
            assert_eq!(parse(&text), Err(ParseError::MissingHeader(name)));
        }
        // Max-Forwards is optional, and responses are not checked.
        assert!(parse(&request_with("", "")).is_ok());
        assert!(parse("SIP/2.0 200 OK\r\n\r\n").is_ok());
    }

    #[test]
    fn header_section_must_be_utf8_but_body_need_not_be() {
        let mut bytes = request_with("Subject: caf", "").into_bytes();
        let at = bytes.len() - 2;
        bytes.splice(at..at, [0xe9]);
        assert_eq!(
            Message::parse(&bytes, &Limits::default()),
            Err(ParseError::NotUtf8 { line: 7 })
        );
        let mut bytes = request_with("Content-Length: 4\r\n", "").into_bytes();
        bytes.extend_from_slice(&[0xff, 0x00, 0xc3, 0x28]);
        match Message::parse(&bytes, &Limits::default()) {
            Ok(Message::Request(r)) => assert_eq!(r.body, [0xff, 0x00, 0xc3, 0x28]),
            other => panic!("{other:?}"),
        }
        // UTF-8 values are fine.
        let req = parse_request(&request_with("Subject: café ☎\r\n", ""));
        assert_eq!(req.headers.get(&HeaderName::Subject), Some("café ☎"));
    }

    #[test]
    fn header_syntax_errors() {
        assert_eq!(
            parse(&request_with("NoColonHere\r\n", "")),
            Err(ParseError::MissingColon { line: 7 })
        );
        assert_eq!(
            parse(&request_with("Bad Name: x\r\n", "")),
            Err(ParseError::InvalidHeaderName { line: 7 })
        );
        assert_eq!(
            parse(&request_with(": x\r\n", "")),
            Err(ParseError::InvalidHeaderName { line: 7 })
        );
        assert_eq!(
            parse(&request_with("X: a\rInjected: b\r\n", "")),
            Err(ParseError::BareCr { line: 7 })
        );
        assert_eq!(
            parse("OPTIONS sip:a SIP/2.0\r\nVia: x\r\n"),
            Err(ParseError::UnterminatedHeaders)
        );
    }

    /// RFC 4475 §3.1.1.1 "wsinv", written out with explicit CRLFs.
    const WSINV: &str = "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n\
        TO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n\
        from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8\r\n\
        MaX-fOrWaRdS: 0068\r\n\
        Call-ID: wsinv.ndaksdj@192.0.2.1\r\n\
        Content-Length   : 150\r\n\
        cseq: 0009\r\n  INVITE\r\n\
        Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw\r\n\
        s :\r\n\
        NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n\
        UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n\
        Content-Type: application/sdp\r\n\
        Route:\r\n <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\r\n\
        v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n \
        SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239\r\n\
        m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =\r\n      newvalue ;\r\n  \
        secondparam ; q = 0.33\r\n\
        \r\n\
        v=0\r\n\
        o=mhandley 29739 7272939 IN IP4 192.0.2.3\r\n\
        s=-\r\n\
        c=IN IP4 192.0.2.4\r\n\
        t=0 0\r\n\
        m=audio 49217 RTP/AVP 0 12\r\n\
        m=video 3227 RTP/AVP 31\r\n\
        a=rtpmap:31 LPC\r\n";

    #[test]
    fn rfc4475_wsinv_short_tortuous_invite() {
        let req = parse_request(WSINV);
        assert_eq!(req.method, Method::Invite);
        assert_eq!(req.uri, "sip:vivekg@chair-dnrc.example.com;unknownparam");
        assert_eq!(req.body.len(), 150);
        assert!(req.body.starts_with(b"v=0\r\n"));
        let h = &req.headers;
        assert_eq!(h.get(&HeaderName::MaxForwards), Some("0068"));
        assert_eq!(h.get(&HeaderName::Subject), Some(""));
        assert_eq!(
            h.get(&HeaderName::parse("newfangledheader")),
            Some("newfangled value continued newfangled value")
        );
        assert_eq!(
            h.get(&HeaderName::parse("UnknownHeaderWithUnusualValue")),
            Some(";;,,;;,;")
        );
        assert_eq!(
            h.get(&HeaderName::Route),
            Some("<sip:services.example.com;lr;unknownwith=value;unknown-no-value>")
        );

        let to = NameAddr::parse(h.get(&HeaderName::To).unwrap_or("")).expect("To");
        assert_eq!(to.tag(), Some("1918181833n"));
        assert_eq!(to.uri.user.as_deref(), Some("vivekg"));
        assert!(
            to.uri.params.is_empty(),
            "addr-spec params belong to the header"
        );
        let from = NameAddr::parse(h.get(&HeaderName::From).unwrap_or("")).expect("From");
        assert_eq!(from.display_name.as_deref(), Some("J Rosenberg \\\""));
        assert_eq!(from.tag(), Some("98asjd8"));

        let cseq = CSeq::parse(h.get(&HeaderName::CSeq).unwrap_or("")).expect("CSeq");
        assert_eq!((cseq.seq, cseq.method), (9, Method::Invite));

        let vias = parse_vias(h.get_all(&HeaderName::Via)).expect("vias");
        let summary: Vec<_> = vias
            .iter()
            .map(|v| {
                (
                    v.transport.as_str(),
                    v.host.as_str(),
                    v.branch().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("UDP", "192.0.2.2", "390skdjuw"),
                ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
                ("UDP", "192.168.255.111", "z9hG4bK30239"),
            ]
        );
        assert!(vias.iter().all(|v| v.protocol == "SIP/2.0"));

        let ContactValue::List(contacts) =
            parse_contacts(h.get_all(&HeaderName::Contact)).expect("contacts")
        else {
            panic!("expected a contact list");
        };
        assert_eq!(contacts.len(), 1);
        let c = &contacts[0];
        assert_eq!(c.display_name.as_deref(), Some("Quoted string \"\""));
        assert_eq!(c.params.get("newparam"), Some(Some("newvalue")));
        assert_eq!(c.params.get("secondparam"), Some(None));
        assert_eq!(c.q_millis(), Some(330));

        // Serializing and reparsing keeps every header and the body; only Content-Length
        // moves (it is always written last).
        let mut again = parse_request(&String::from_utf8(req.to_bytes()).expect("utf-8"));
        let mut req = req;
        assert_eq!(again.headers.remove(&HeaderName::ContentLength), 1);
        assert_eq!(req.headers.remove(&HeaderName::ContentLength), 1);
        assert_eq!(again, req);
    }

    #[test]
    fn rfc4475_intmeth_style_unusual_characters() {
        // After RFC 4475 §3.1.1.3: token characters in the method, quoted-pairs escaping
        // control characters (including NUL), and an unknown header with a UTF-8 value.
        let text = "!interesting-Method0123456789_*+`.%indeed'~ \
            sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0\r\n\
            Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~\r\n\
            To: \"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>\r\n\
            From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"работающий\";tag=_token~1'+`*%!-.\r\n\
            Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\r\n\
            CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~\r\n\
            Max-Forwards: 255\r\n\
            extensionHeader-!.%*+_`'~: 大停電\r\n\
            Content-Length: 0\r\n\
            \r\n";
        let req = parse_request(text);
        let method = "!interesting-Method0123456789_*+`.%indeed'~";
        assert_eq!(req.method, Method::Other(method.into()));
        assert_eq!(
            req.headers
                .get(&HeaderName::parse("EXTENSIONHEADER-!.%*+_`'~")),
            Some("大停電")
        );
        let to = NameAddr::parse(req.headers.get(&HeaderName::To).unwrap_or("")).expect("To");
        assert_eq!(
            to.display_name.as_deref(),
            Some("BEL:\x07 NUL:\x00 DEL:\x7f")
        );
        let from = NameAddr::parse(req.headers.get(&HeaderName::From).unwrap_or("")).expect("From");
        assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
        assert_eq!(
            from.params.get("fromParam''~+*_!.-%"),
            Some(Some("работающий"))
        );
        let cseq = CSeq::parse(req.headers.get(&HeaderName::CSeq).unwrap_or("")).expect("CSeq");
        assert_eq!(cseq.method, req.method);
        let again = parse_request(&String::from_utf8(req.to_bytes()).expect("utf-8"));
        assert_eq!(again, req);
    }

    #[test]
    fn salvage_recovers_reply_headers() {
        let text = request_with("Content-Length: 99\r\n", "short body");
        assert!(parse(&text).is_err());
        let req = salvage_for_reply(text.as_bytes(), &Limits::default()).expect("salvaged");
        assert_eq!(req.method, Method::Options);
        assert_eq!(req.uri, "sip:example.com");
        let names: Vec<&str> = req.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Via", "From", "To", "Call-ID", "CSeq"]);
        assert!(req.body.is_empty());

        // A broken header in the middle, a folded Via, a duplicate From and bad UTF-8.
        let mut bytes = b"REGISTER sip:example.com SIP/2.0\r\n\
            Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\
            this line is broken\r\n\
            v: SIP/2.0/UDP b\r\n ;branch=z9hG4bK2\r\n\
            From: <sip:a@example.com>;tag=1\r\n\
            From: <sip:evil@example.com>;tag=2\r\n\
            To: <sip:a@example.com>\r\n\
            Call-ID: salvage\r\n\
            CSeq: 3 REGISTER\r\n"
            .to_vec();
        bytes.extend_from_slice(b"Subject: \xff\xfe\r\n\r\n");
        assert!(Message::parse(&bytes, &Limits::default()).is_err());
        let req = salvage_for_reply(&bytes, &Limits::default()).expect("salvaged");
        let vias: Vec<_> = req.headers.get_all(&HeaderName::Via).collect();
        assert_eq!(
            vias,
            [
                "SIP/2.0/UDP a;branch=z9hG4bK1",
                "SIP/2.0/UDP b ;branch=z9hG4bK2"
            ]
        );
        assert_eq!(
            req.headers.get(&HeaderName::From),
            Some("<sip:a@example.com>;tag=1")
        );
        assert_eq!(req.headers.len(), 6);
        let reply = Response::reply_to(&req, 400, reason_phrase(400));
        assert_eq!(reply.headers.get(&HeaderName::CSeq), Some("3 REGISTER"));

        // Another SIP version is salvageable (to answer 505).
        let other_version = request_with("", "").replace("SIP/2.0\r\n", "SIP/3.0\r\n");
        assert_eq!(parse(&other_version), Err(ParseError::UnsupportedVersion));
        assert!(salvage_for_reply(other_version.as_bytes(), &Limits::default()).is_some());
    }

    #[test]
    fn salvage_gives_up_when_it_cannot_reply() {
        let limits = Limits::default();
        let no_cseq = request_with("", "").replace("CSeq: 1 OPTIONS\r\n", "");
        assert_eq!(salvage_for_reply(no_cseq.as_bytes(), &limits), None);
        let broken_start = request_with("", "").replacen("OPTIONS ", "OPTIONS  ", 1);
        assert_eq!(salvage_for_reply(broken_start.as_bytes(), &limits), None);
        let response = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@h>\r\n\
                        To: <sip:a@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
        assert_eq!(salvage_for_reply(response.as_bytes(), &limits), None);
        assert_eq!(salvage_for_reply(b"", &limits), None);
        assert_eq!(salvage_for_reply(b"\x00\x01\x02\n\n", &limits), None);
        // Headers beyond max_message_bytes are not looked at.
        let small = Limits {
            max_message_bytes: 60,
            ..Limits::default()
        };
        assert_eq!(
            salvage_for_reply(request_with("", "").as_bytes(), &small),
            None
        );
    }

    #[test]
    fn serialization_format() {
        let mut headers = Headers::new();
        headers.push(HeaderName::Via, "SIP/2.0/UDP h;branch=z9hG4bK1");
        headers.push(HeaderName::ContentLength, "999");
        headers.push(HeaderName::parse("x-Custom"), "v");
        let req = Request {
            method: Method::Options,
            uri: "sip:example.com".into(),
            headers,
            body: b"hi".to_vec(),
        };
        assert_eq!(
            req.to_bytes(),
            b"OPTIONS sip:example.com SIP/2.0\r\n\
              Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
              x-Custom: v\r\n\
              Content-Length: 2\r\n\
              \r\n\
              hi"
        );
        let res = Response {
            code: 200,
            reason: "OK".into(),
            headers: Headers::new(),
            body: Vec::new(),
        };
        let mut out = b"prefix".to_vec();
        res.write_to(&mut out);
        assert_eq!(out, b"prefixSIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            res.to_bytes(),
            b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn serialization_neutralizes_line_breaks_in_values() {
        let mut headers = Headers::new();
        headers.push(HeaderName::Subject, "a\r\nVia: injected\nb");
        let res = Response {
            code: 486,
            reason: "Busy Here".into(),
            headers,
            body: Vec::new(),
        };
        let parsed = parse_response(&String::from_utf8(res.to_bytes()).expect("utf-8"));
        assert_eq!(parsed.headers.get(&HeaderName::Via), None);
        assert_eq!(
            parsed.headers.get(&HeaderName::Subject),
            Some("a  Via: injected b")
        );
    }

    #[test]
    fn push_decimal_writes_all_digits() {
        for n in [0usize, 7, 10, 65_535, usize::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn reply_to_copies_the_rfc_3261_headers() {
        let req = parse_request(
            "INVITE sip:bob@example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP p1;branch=z9hG4bK1, SIP/2.0/UDP p2;branch=z9hG4bK2\r\n\
             Max-Forwards: 70\r\n\
             To: <sip:bob@example.com>\r\n\
             Via: SIP/2.0/UDP p3;branch=z9hG4bK3\r\n\
             From: <sip:alice@example.com>;tag=a\r\n\
             Call-ID: reply\r\n\
             CSeq: 314 INVITE\r\n\
             Contact: <sip:alice@p3>\r\n\
             Content-Length: 4\r\n\
             \r\n\
             body",
        );
        let res = Response::reply_to(&req, 486, reason_phrase(486));
        assert_eq!(res.code, 486);
        assert_eq!(res.reason, "Busy Here");
        assert!(res.body.is_empty());
        let copied: Vec<(String, &str)> = res
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v))
            .collect();
        assert_eq!(
            copied,
            [
                (
                    "Via".into(),
                    "SIP/2.0/UDP p1;branch=z9hG4bK1, SIP/2.0/UDP p2;branch=z9hG4bK2"
                ),
                ("Via".into(), "SIP/2.0/UDP p3;branch=z9hG4bK3"),
                ("From".into(), "<sip:alice@example.com>;tag=a"),
                ("To".into(), "<sip:bob@example.com>"),
                ("Call-ID".into(), "reply"),
                ("CSeq".into(), "314 INVITE"),
            ]
        );
    }

    #[test]
    fn reason_phrases() {
        assert_eq!(reason_phrase(200), "OK");
        assert_eq!(reason_phrase(401), "Unauthorized");
        assert_eq!(reason_phrase(423), "Interval Too Brief");
        assert_eq!(reason_phrase(481), "Call/Transaction Does Not Exist");
        assert_eq!(reason_phrase(505), "Version Not Supported");
        assert_eq!(reason_phrase(513), "Message Too Large");
        assert_eq!(reason_phrase(603), "Decline");
        assert_eq!(reason_phrase(499), "Client Error");
        assert_eq!(reason_phrase(42), "Unknown");
    }

    #[test]
    fn headers_container() {
        let mut h = Headers::new();
        assert!(h.is_empty());
        h.push(HeaderName::Via, "1");
        h.push(HeaderName::Route, "r");
        h.push(HeaderName::Via, "2");
        h.push(HeaderName::Via, "3");
        assert_eq!(h.get(&HeaderName::Via), Some("1"));
        assert_eq!(
            h.get_all(&HeaderName::Via).collect::<Vec<_>>(),
            ["1", "2", "3"]
        );
        h.set(HeaderName::Via, "only");
        assert_eq!(
            h.iter().map(|(n, v)| (n.as_str(), v)).collect::<Vec<_>>(),
            [("Via", "only"), ("Route", "r")]
        );
        h.set(HeaderName::Expires, "60");
        assert_eq!(h.len(), 3);
        assert!(h.contains(&HeaderName::Expires));
        assert_eq!(h.remove(&HeaderName::Route), 1);
        assert_eq!(h.remove(&HeaderName::Route), 0);
        assert_eq!(h.get(&HeaderName::Route), None);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn method_tokens() {
        for m in [
            Method::Register,
            Method::Invite,
            Method::Ack,
            Method::Bye,
            Method::Cancel,
            Method::Options,
            Method::Subscribe,
            Method::Notify,
            Method::Publish,
            Method::Message,
            Method::Info,
            Method::Prack,
            Method::Update,
            Method::Refer,
        ] {
            assert_eq!(Method::from_token(m.as_str()), m);
            assert_eq!(m.to_string(), m.as_str());
        }
        assert_eq!(Method::from_token("Invite"), Method::Other("Invite".into()));
        assert!(is_token("X-FOO.bar~"));
        assert!(!is_token(""));
        assert!(!is_token("A B"));
        assert!(!is_token("A/B"));
    }

    // -----------------------------------------------------------------------------------------
    // Properties
    // -----------------------------------------------------------------------------------------

    fn arb_method() -> impl Strategy<Value = Method> {
        prop_oneof![
            Just(Method::Register),
            Just(Method::Invite),
            Just(Method::Options),
            "[A-Za-z0-9.!%*_+`'~-]{1,12}".prop_map(|s| Method::from_token(&s)),
        ]
    }

    fn arb_name() -> impl Strategy<Value = HeaderName> {
        prop_oneof![
            Just(HeaderName::Contact),
            Just(HeaderName::Authorization),
            Just(HeaderName::ContentLength),
            "[A-Za-z0-9.!%*_+`'~-]{1,16}".prop_map(|s| HeaderName::parse(&s)),
        ]
    }

    /// Values as the parser would store them: no CR/LF, no surrounding SP/HTAB.
    fn arb_value() -> impl Strategy<Value = String> {
        "[\\t -~\u{a0}-\u{2fff}\u{1F300}-\u{1F5FF}]{0,40}"
            .prop_map(|s| s.trim_matches(is_wsp).to_owned())
    }

    fn arb_headers(mandatory: bool) -> impl Strategy<Value = Headers> {
        proptest::collection::vec((arb_name(), arb_value()), 0..12).prop_map(move |extra| {
            let mut h = Headers::new();
            if mandatory {
                h.push(HeaderName::Via, "SIP/2.0/UDP h;branch=z9hG4bK1");
                h.push(HeaderName::From, "<sip:a@h>;tag=1");
                h.push(HeaderName::To, "<sip:b@h>");
                h.push(HeaderName::CallId, "c");
                h.push(HeaderName::CSeq, "1 REGISTER");
            }
            for (name, value) in extra {
                h.push(name, value);
            }
            h
        })
    }

    fn arb_body() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..64)
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (arb_method(), "[!-~]{1,30}", arb_headers(true), arb_body()).prop_map(
                |(method, uri, headers, body)| Message::Request(Request {
                    method,
                    uri,
                    headers,
                    body,
                })
            ),
            (100u16..700, "[ -~]{0,20}", arb_headers(false), arb_body()).prop_map(
                |(code, reason, headers, body)| Message::Response(Response {
                    code,
                    reason,
                    headers,
                    body,
                })
            ),
        ]
    }

    fn without_content_length(mut m: Message) -> Message {
        m.headers_mut().remove(&HeaderName::ContentLength);
        m
    }

    proptest! {
        #[test]
        fn round_trip(m in arb_message()) {
            let bytes = m.to_bytes();
            let parsed = Message::parse(&bytes, &Limits::default())
                .map_err(|e| TestCaseError::fail(format!("{e}: {:?}", String::from_utf8_lossy(&bytes))))?;
            let body_len = m.body().len().to_string();
            prop_assert_eq!(
                parsed.headers().get(&HeaderName::ContentLength),
                Some(body_len.as_str())
            );
            prop_assert_eq!(without_content_length(parsed), without_content_length(m));
        }

        #[test]
        fn write_to_appends_exactly_to_bytes(m in arb_message(), prefix in arb_body()) {
            let mut out = prefix.clone();
            m.write_to(&mut out);
            prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
            prop_assert_eq!(&out[prefix.len()..], &m.to_bytes()[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Message::parse(&bytes, &Limits::default());
            let _ = salvage_for_reply(&bytes, &Limits::default());
        }

        #[test]
        fn mutated_register_never_panics(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            small_limits in any::<bool>(),
        ) {
            let mut bytes = register().into_bytes();
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            let limits = if small_limits {
                Limits { max_message_bytes: 300, max_headers: 4, max_line_bytes: 40 }
            } else {
                Limits::default()
            };
            if let Ok(m) = Message::parse(&bytes, &limits) {
                // Whatever parses must serialize into something that parses again.
                let again = Message::parse(&m.to_bytes(), &Limits::default());
                prop_assert!(again.is_ok(), "{:?}", again);
            }
            let _ = salvage_for_reply(&bytes, &limits);
        }
    }
}
