//! Typed views over individual header values: SIP URIs, name-addr (From/To/Contact), Via, CSeq,
//! Expires.
//!
//! `message` keeps values as unfolded strings; these parsers are applied on demand to the few
//! headers a component actually needs. Every type parses from `&str` and writes back with
//! `Display` in a canonical, always-reparseable form (which is not necessarily byte-identical
//! to the input: whitespace is normalized and name-addrs always get angle brackets).

use std::fmt::{self, Write as _};
use std::net::Ipv6Addr;
use std::str::FromStr;

use super::message::{is_token, is_token_byte, Method};

/// Why a header value could not be interpreted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("empty header value")]
    Empty,
    #[error("empty element in a comma-separated list")]
    EmptyListElement,
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    #[error("unbalanced angle brackets")]
    UnbalancedAngleBrackets,
    #[error("unsupported URI scheme (only sip and sips are accepted)")]
    UnsupportedScheme,
    #[error("invalid URI: {0}")]
    InvalidUri(&'static str),
    #[error("invalid host: {0}")]
    InvalidHost(&'static str),
    #[error("invalid port")]
    InvalidPort,
    #[error("invalid parameter: {0}")]
    InvalidParam(&'static str),
    #[error("invalid name-addr: {0}")]
    InvalidNameAddr(&'static str),
    #[error("Contact `*` must be the only Contact value")]
    StarNotAlone,
    #[error("invalid Via: {0}")]
    InvalidVia(&'static str),
    #[error("invalid CSeq: {0}")]
    InvalidCSeq(&'static str),
    #[error("invalid delta-seconds value")]
    InvalidDeltaSeconds,
}

// ---------------------------------------------------------------------------------------------
// Scanning helpers
// ---------------------------------------------------------------------------------------------

/// Whitespace as it can appear in an unfolded value. CR and LF are included so that values
/// which still carry folding (from callers other than `message`) are tolerated.
fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn trim_lws(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && is_lws(c as u8))
}

/// A forward-only cursor over a `&str`. Every slice it hands out ends on an ASCII byte or at
/// the end of input, so slicing always lands on a char boundary.
struct Scanner<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn new(s: &'a str) -> Self {
        Scanner { s, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or_default()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn skip_lws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_lws) {
            self.pos += 1;
        }
        self.pos > start
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Consumes bytes while `accept` holds. `accept` must give the same answer for every byte
    /// >= 0x80 so the cut never falls inside a multi-byte character.
    fn take_while(&mut self, accept: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&accept) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or_default()
    }

    /// Reads a quoted-string whose opening quote is the next byte, returning it unescaped.
    fn quoted_string(&mut self) -> Result<String, HeaderError> {
        if !self.eat(b'"') {
            return Err(HeaderError::UnterminatedQuote);
        }
        let rest = self.rest();
        // Fast path: most quoted strings (display names, `+sip.instance`) have no escapes,
        // so they can be copied in one allocation instead of char by char.
        if let Some(end) = rest
            .bytes()
            .position(|b| matches!(b, b'"' | b'\\' | b'\r' | b'\n'))
            .filter(|&end| rest.as_bytes().get(end) == Some(&b'"'))
        {
            self.pos += end + 1;
            // `end` indexes an ASCII quote.
            return Ok(rest.get(..end).unwrap_or_default().to_owned());
        }
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    // quoted-pair cannot escape CR or LF (RFC 3261 §25.1).
                    Some((_, '\r' | '\n')) | None => break,
                    Some((_, escaped)) => out.push(escaped),
                },
                '\r' | '\n' => break,
                c => out.push(c),
            }
        }
        Err(HeaderError::UnterminatedQuote)
    }
}

/// Calls `each` with every trimmed element of a comma-separated list, ignoring commas inside
/// quoted strings and angle brackets (`"Smith, Bob" <sip:a,b@h>`).
fn for_each_element<'a>(
    value: &'a str,
    mut each: impl FnMut(&'a str) -> Result<(), HeaderError>,
) -> Result<(), HeaderError> {
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    let mut in_angle = false;
    for (i, b) in value.bytes().enumerate() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quotes = false;
            }
            continue;
        }
        match b {
            b'"' if !in_angle => in_quotes = true,
            b'<' if in_angle => return Err(HeaderError::UnbalancedAngleBrackets),
            b'<' => in_angle = true,
            b'>' if !in_angle => return Err(HeaderError::UnbalancedAngleBrackets),
            b'>' => in_angle = false,
            b',' if !in_angle => {
                // `i` indexes an ASCII comma, so both cuts are on char boundaries.
                each(list_element(value.get(start..i))?)?;
                start = i + 1;
            }
            _ => {}
        }
    }
    if in_quotes {
        return Err(HeaderError::UnterminatedQuote);
    }
    if in_angle {
        return Err(HeaderError::UnbalancedAngleBrackets);
    }
    each(list_element(value.get(start..))?)
}

fn list_element(raw: Option<&str>) -> Result<&str, HeaderError> {
    match raw.map(trim_lws) {
        Some(element) if !element.is_empty() => Ok(element),
        _ => Err(HeaderError::EmptyListElement),
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Checks a URI component against RFC 3261's `unreserved / escaped / <extra>` productions,
/// including that every `%` starts a valid escape (comparison decodes them).
fn valid_uri_component(s: &str, extra: &[u8]) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let valid = bytes.get(i + 1).copied().and_then(hex_value).is_some()
                && bytes.get(i + 2).copied().and_then(hex_value).is_some();
            if !valid {
                return false;
            }
            i += 3;
            continue;
        }
        let ok = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            )
            || extra.contains(&b);
        if !ok {
            return false;
        }
        i += 1;
    }
    true
}

/// RFC 3261 user-unreserved.
const USER_EXTRA: &[u8] = b"&=+$,;?/";
/// RFC 3261 password characters beyond unreserved.
const PASSWORD_EXTRA: &[u8] = b"&=+$,";
/// RFC 3261 param-unreserved.
const PARAM_EXTRA: &[u8] = b"[]/:&+$";
/// RFC 3261 hnv-unreserved plus the `=` and `&` separators of the headers component.
const HEADERS_EXTRA: &[u8] = b"[]/?:+$=&";

/// The bytes of `s` with `%XX` escapes decoded, for RFC 3261 §19.1.4 comparison.
fn percent_decoded(s: &str) -> impl Iterator<Item = u8> + '_ {
    let bytes = s.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        let b = *bytes.get(i)?;
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                i += 3;
                return Some(hi << 4 | lo);
            }
        }
        i += 1;
        Some(b)
    })
}

fn escaped_eq(a: &str, b: &str, ignore_case: bool) -> bool {
    if ignore_case {
        percent_decoded(a)
            .map(|b| b.to_ascii_lowercase())
            .eq(percent_decoded(b).map(|b| b.to_ascii_lowercase()))
    } else {
        percent_decoded(a).eq(percent_decoded(b))
    }
}

/// Validates a host: a bracketed IPv6 reference, or a hostname / IPv4 address. Underscores
/// are accepted in hostnames because deployed devices use them, even though RFC 1123 does not.
fn validate_host(host: &str) -> Result<(), HeaderError> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or(HeaderError::InvalidHost("unterminated IPv6 reference"))?;
        return inner
            .parse::<Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| HeaderError::InvalidHost("invalid IPv6 address"));
    }
    if host.is_empty() {
        return Err(HeaderError::InvalidHost("empty host"));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(HeaderError::InvalidHost("invalid character in host"));
    }
    Ok(())
}

fn host_eq(a: &str, b: &str) -> bool {
    let v6 = |h: &str| {
        h.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .and_then(|h| h.parse::<Ipv6Addr>().ok())
    };
    match (v6(a), v6(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a.eq_ignore_ascii_case(b),
    }
}

fn parse_port(digits: &str) -> Result<u16, HeaderError> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeaderError::InvalidPort);
    }
    digits.parse().map_err(|_| HeaderError::InvalidPort)
}

// ---------------------------------------------------------------------------------------------
// Params
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Param {
    name: String,
    value: Option<String>,
    quoted: bool,
}

/// Ordered `;name[=value]` parameters, as found on URIs and on header values.
///
/// Names keep their received case but are looked up case-insensitively. Values are stored
/// unquoted and unescaped; whether a value arrived as a quoted-string is remembered so that
/// `Display` re-quotes it (`+sip.instance="<urn:uuid:...>"` must come back quoted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    items: Vec<Param>,
}

impl Params {
    pub fn new() -> Self {
        Params::default()
    }

    /// `None` if absent, `Some(None)` for a flag (`;lr`), `Some(Some(v))` for `;name=v`.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.find(name).map(|p| p.value.as_deref())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// Whether `name` is present with a quoted-string value.
    pub fn is_quoted(&self, name: &str) -> bool {
        self.find(name).is_some_and(|p| p.quoted)
    }

    /// Sets `name` to a value written verbatim (or to a flag), replacing any existing
    /// occurrences in place. The value must be a token or host; use [`Params::set_quoted`] for
    /// anything else.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        self.replace(name, value.map(str::to_owned), false);
    }

    /// Sets `name` to a value written as a quoted-string, replacing any existing occurrences.
    /// Only meaningful on header parameters: URI parameters have no quoting.
    pub fn set_quoted(&mut self, name: &str, value: &str) {
        self.replace(name, Some(value.to_owned()), true);
    }

    /// Removes every occurrence of `name`; returns whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.items.len();
        self.items.retain(|p| !p.name.eq_ignore_ascii_case(name));
        self.items.len() != before
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.items
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_deref()))
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn find(&self, name: &str) -> Option<&Param> {
        self.items
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }

    fn push(&mut self, name: &str, value: Option<String>, quoted: bool) {
        self.items.push(Param {
            name: name.to_owned(),
            value,
            quoted,
        });
    }

    fn replace(&mut self, name: &str, value: Option<String>, quoted: bool) {
        match self
            .items
            .iter()
            .position(|p| p.name.eq_ignore_ascii_case(name))
        {
            Some(first) => {
                let mut index = 0;
                self.items.retain(|p| {
                    let keep = index <= first || !p.name.eq_ignore_ascii_case(name);
                    index += 1;
                    keep
                });
                if let Some(p) = self.items.get_mut(first) {
                    p.value = value;
                    p.quoted = quoted && p.value.is_some();
                }
            }
            None => self.push(name, value, quoted),
        }
    }

    /// Parses header parameters (`*( SEMI generic-param )`) from the scanner to its end,
    /// allowing whitespace around `;` and `=` as RFC 3261's SEMI and EQUAL do.
    fn parse_header_params(sc: &mut Scanner<'_>) -> Result<Params, HeaderError> {
        let mut params = Params::new();
        loop {
            sc.skip_lws();
            if sc.at_end() {
                return Ok(params);
            }
            if !sc.eat(b';') {
                return Err(HeaderError::InvalidParam("expected `;`"));
            }
            sc.skip_lws();
            let name = sc.take_while(is_token_byte);
            if name.is_empty() {
                return Err(HeaderError::InvalidParam("missing parameter name"));
            }
            sc.skip_lws();
            if !sc.eat(b'=') {
                params.push(name, None, false);
                continue;
            }
            sc.skip_lws();
            if sc.peek() == Some(b'"') {
                let value = sc.quoted_string()?;
                params.push(name, Some(value), true);
            } else {
                // gen-value = token / host / quoted-string; the host part adds IPv6 brackets
                // and colons.
                let value = sc.take_while(|b| is_token_byte(b) || matches!(b, b'[' | b']' | b':'));
                if value.is_empty() {
                    return Err(HeaderError::InvalidParam("missing parameter value"));
                }
                params.push(name, Some(value.to_owned()), false);
            }
        }
    }

    /// Parses URI parameters: `;`-separated, no whitespace, no quoting.
    fn parse_uri_params(s: &str) -> Result<Params, HeaderError> {
        let mut params = Params::new();
        for item in s.split(';') {
            let (name, value) = match item.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (item, None),
            };
            if name.is_empty() {
                return Err(HeaderError::InvalidParam("missing URI parameter name"));
            }
            if !valid_uri_component(name, PARAM_EXTRA)
                || !value.is_none_or(|v| valid_uri_component(v, PARAM_EXTRA))
            {
                return Err(HeaderError::InvalidParam(
                    "invalid character in URI parameter",
                ));
            }
            params.push(name, value.map(str::to_owned), false);
        }
        Ok(params)
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.items {
            f.write_char(';')?;
            f.write_str(&p.name)?;
            match (&p.value, p.quoted) {
                (None, _) => {}
                (Some(v), false) => {
                    f.write_char('=')?;
                    f.write_str(v)?;
                }
                (Some(v), true) => {
                    f.write_char('=')?;
                    write_quoted(f, v)?;
                }
            }
        }
        Ok(())
    }
}

/// Writes `s` as a quoted-string. CR and LF cannot be escaped, so they become spaces.
fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                f.write_char('\\')?;
                f.write_char(c)?;
            }
            '\r' | '\n' => f.write_char(' ')?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

// ---------------------------------------------------------------------------------------------
// SIP URI
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UriScheme {
    Sip,
    Sips,
}

impl UriScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            UriScheme::Sip => "sip",
            UriScheme::Sips => "sips",
        }
    }
}

/// A `sip:` or `sips:` URI (RFC 3261 §19.1).
///
/// Components are stored as received (escapes are not decoded, host case is kept) so that
/// `Display` reproduces them; [`SipUri::same_address`] does the RFC comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub scheme: UriScheme,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Hostname, IPv4 address, or IPv6 reference including its brackets (`[2001:db8::1]`).
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
    /// The raw `?`-headers component, without the `?`.
    pub headers: Option<String>,
}

impl SipUri {
    pub fn parse(s: &str) -> Result<SipUri, HeaderError> {
        let (scheme, rest) = s
            .split_once(':')
            .ok_or(HeaderError::InvalidUri("missing scheme"))?;
        let scheme = if scheme.eq_ignore_ascii_case("sip") {
            UriScheme::Sip
        } else if scheme.eq_ignore_ascii_case("sips") {
            UriScheme::Sips
        } else {
            return Err(HeaderError::UnsupportedScheme);
        };

        // `@` cannot occur unescaped after the userinfo, so the first one ends it.
        let (userinfo, rest) = match rest.split_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(userinfo) => {
                let (user, password) = match userinfo.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (userinfo, None),
                };
                if user.is_empty() {
                    return Err(HeaderError::InvalidUri("empty user part"));
                }
                if !valid_uri_component(user, USER_EXTRA) {
                    return Err(HeaderError::InvalidUri("invalid character in user part"));
                }
                if !password.is_none_or(|p| valid_uri_component(p, PASSWORD_EXTRA)) {
                    return Err(HeaderError::InvalidUri("invalid character in password"));
                }
                (Some(user.to_owned()), password.map(str::to_owned))
            }
        };

        let (rest, headers) = match rest.split_once('?') {
            Some((rest, headers)) => (rest, Some(headers)),
            None => (rest, None),
        };
        if let Some(headers) = headers {
            if headers.is_empty() || !valid_uri_component(headers, HEADERS_EXTRA) {
                return Err(HeaderError::InvalidUri("invalid headers component"));
            }
        }
        let (hostport, params) = match rest.split_once(';') {
            Some((hostport, params)) => (hostport, Params::parse_uri_params(params)?),
            None => (rest, Params::new()),
        };
        let (host, port) = split_hostport(hostport)?;
        validate_host(host)?;

        Ok(SipUri {
            scheme,
            user,
            password,
            host: host.to_owned(),
            port,
            params,
            headers: headers.map(str::to_owned),
        })
    }

    /// The `transport` URI parameter, if present with a value.
    pub fn transport(&self) -> Option<&str> {
        self.params.get("transport").flatten()
    }

    /// URI equivalence per RFC 3261 §19.1.4: scheme, user and password (case-sensitive),
    /// host (case-insensitive; IPv6 by address), and port must match, with an absent port
    /// distinct from an explicit 5060. `transport`, `user`, `ttl`, `method` and `maddr` must
    /// match if present in either URI; other parameters only if present in both. Escapes are
    /// decoded before comparing. The headers component is compared verbatim, which is
    /// stricter than the RFC's unordered comparison.
    pub fn same_address(&self, other: &SipUri) -> bool {
        fn opt_eq(a: &Option<String>, b: &Option<String>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => escaped_eq(a, b, false),
                _ => false,
            }
        }
        fn value_eq(a: Option<&str>, b: Option<&str>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => escaped_eq(a, b, true),
                _ => false,
            }
        }
        const SIGNIFICANT: [&str; 5] = ["transport", "user", "ttl", "method", "maddr"];

        self.scheme == other.scheme
            && opt_eq(&self.user, &other.user)
            && opt_eq(&self.password, &other.password)
            && host_eq(&self.host, &other.host)
            && self.port == other.port
            && SIGNIFICANT.iter().all(|name| {
                match (self.params.get(name), other.params.get(name)) {
                    (None, None) => true,
                    (Some(a), Some(b)) => value_eq(a, b),
                    _ => false,
                }
            })
            // Look both sides up by name (first occurrence wins) rather than walking our own
            // list, so a URI with a repeated parameter still equals itself.
            && self.params.iter().all(|(name, _)| {
                match (self.params.get(name), other.params.get(name)) {
                    (Some(ours), Some(theirs)) => value_eq(ours, theirs),
                    _ => true,
                }
            })
            && self.headers == other.headers
    }
}

/// Splits `host[:port]`, where host may be a bracketed IPv6 reference.
fn split_hostport(hostport: &str) -> Result<(&str, Option<u16>), HeaderError> {
    let (host, port) = if hostport.starts_with('[') {
        let end = hostport
            .find(']')
            .ok_or(HeaderError::InvalidHost("unterminated IPv6 reference"))?;
        // `end` indexes an ASCII `]`.
        let (host, after) = hostport.split_at(end + 1);
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or(HeaderError::InvalidHost("garbage after IPv6 reference"))?,
                ),
            ),
        }
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    Ok((host, port.map(parse_port).transpose()?))
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme.as_str())?;
        f.write_char(':')?;
        if let Some(user) = &self.user {
            f.write_str(user)?;
            if let Some(password) = &self.password {
                f.write_char(':')?;
                f.write_str(password)?;
            }
            f.write_char('@')?;
        }
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        // URI params are never quoted; `set_quoted` on them is a caller error.
        write!(f, "{}", self.params)?;
        if let Some(headers) = &self.headers {
            f.write_char('?')?;
            f.write_str(headers)?;
        }
        Ok(())
    }
}

impl FromStr for SipUri {
    type Err = HeaderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SipUri::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------
// name-addr / addr-spec (From, To, Contact, Route, ...)
// ---------------------------------------------------------------------------------------------

/// A `name-addr` or `addr-spec` with header parameters: the value of From, To, or one Contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Unquoted and unescaped. An unquoted multi-token display name is kept as written.
    pub display_name: Option<String>,
    pub uri: SipUri,
    /// Header parameters (`tag`, `expires`, `q`, `+sip.instance`, ...), not URI parameters.
    pub params: Params,
}

impl NameAddr {
    /// Parses `"Bob" <sip:bob@h>;tag=x`, `Bob <sip:bob@h>`, `<sip:bob@h>` or the addr-spec
    /// form `sip:bob@h;tag=x`, in which parameters belong to the header, not the URI
    /// (RFC 3261 §20).
    pub fn parse(s: &str) -> Result<NameAddr, HeaderError> {
        let s = trim_lws(s);
        if s.is_empty() {
            return Err(HeaderError::Empty);
        }
        let mut sc = Scanner::new(s);
        let (display_name, uri) = if sc.peek() == Some(b'"') {
            let name = sc.quoted_string()?;
            sc.skip_lws();
            (Some(name), bracketed_uri(&mut sc)?)
        } else {
            // An unquoted display name is `*(token LWS)` (non-ASCII tolerated, because devices
            // send UTF-8 names unquoted). If a `<` follows it, this is a name-addr; otherwise
            // it is an addr-spec, whose parameters may legitimately contain `<` inside quotes
            // (`sip:a@h;+sip.instance="<urn:...>"`), so `<` must not be searched for blindly.
            let name = sc.take_while(|b| is_token_byte(b) || is_lws(b) || b >= 0x80);
            if sc.peek() == Some(b'<') {
                let name = trim_lws(name);
                let name = (!name.is_empty()).then(|| name.to_owned());
                (name, bracketed_uri(&mut sc)?)
            } else {
                sc.pos = 0;
                let uri = sc.take_while(|b| b != b';' && !is_lws(b));
                (None, SipUri::parse(uri)?)
            }
        };
        let params = Params::parse_header_params(&mut sc)?;
        Ok(NameAddr {
            display_name,
            uri,
            params,
        })
    }

    /// The `tag` parameter (From/To).
    pub fn tag(&self) -> Option<&str> {
        self.params.get("tag").flatten()
    }

    /// The Contact `expires` parameter; `None` if absent or not delta-seconds.
    pub fn expires(&self) -> Option<u32> {
        self.params
            .get("expires")
            .flatten()
            .and_then(|v| parse_expires(v).ok())
    }

    /// The Contact `q` parameter in thousandths (`q=0.5` is 500), so that priorities compare
    /// exactly; `None` if absent or not a valid qvalue (RFC 3261 §25.1).
    pub fn q_millis(&self) -> Option<u16> {
        parse_qvalue(self.params.get("q").flatten()?)
    }

    /// The Contact `q` parameter as a number in `0.0..=1.0`; see [`NameAddr::q_millis`].
    pub fn q(&self) -> Option<f32> {
        self.q_millis().map(|m| f32::from(m) / 1000.0)
    }
}

/// Reads `<uri>` from the scanner, which must be at the `<`.
fn bracketed_uri(sc: &mut Scanner<'_>) -> Result<SipUri, HeaderError> {
    if !sc.eat(b'<') {
        return Err(HeaderError::InvalidNameAddr(
            "expected `<` after the display name",
        ));
    }
    let inner = sc.take_while(|b| b != b'>');
    if !sc.eat(b'>') {
        return Err(HeaderError::UnbalancedAngleBrackets);
    }
    SipUri::parse(trim_lws(inner))
}

/// qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
fn parse_qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut millis = 0u16;
    for (i, b) in frac.bytes().enumerate() {
        let scale = [100, 10, 1].get(i).copied().unwrap_or(0);
        millis += u16::from(b - b'0') * scale;
    }
    match int {
        "0" => Some(millis),
        "1" if millis == 0 => Some(1000),
        _ => None,
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always name-addr form: in addr-spec form, URI parameters would be read back as
        // header parameters.
        if let Some(name) = &self.display_name {
            write_quoted(f, name)?;
            f.write_char(' ')?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

impl FromStr for NameAddr {
    type Err = HeaderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NameAddr::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Contact
// ---------------------------------------------------------------------------------------------

/// The Contact header(s) of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactValue {
    /// `Contact: *` (remove all bindings, RFC 3261 §10.2.2).
    Star,
    /// Zero or more contacts in wire order; empty when the message has no Contact header.
    List(Vec<NameAddr>),
}

/// Parses every Contact value of a message (pass `headers.get_all(&HeaderName::Contact)`),
/// splitting comma-joined values. `*` must be the only element across all values.
pub fn parse_contacts<'a>(
    values: impl Iterator<Item = &'a str>,
) -> Result<ContactValue, HeaderError> {
    let mut contacts = Vec::new();
    let mut star = false;
    for value in values {
        for_each_element(value, |element| {
            if element == "*" {
                if star || !contacts.is_empty() {
                    return Err(HeaderError::StarNotAlone);
                }
                star = true;
            } else {
                if star {
                    return Err(HeaderError::StarNotAlone);
                }
                contacts.push(NameAddr::parse(element)?);
            }
            Ok(())
        })?;
    }
    Ok(if star {
        ContactValue::Star
    } else {
        ContactValue::List(contacts)
    })
}

impl fmt::Display for ContactValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContactValue::Star => f.write_char('*'),
            ContactValue::List(list) => {
                for (i, contact) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{contact}")?;
                }
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Via
// ---------------------------------------------------------------------------------------------

/// One Via entry (RFC 3261 §20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Protocol name and version, uppercased: `SIP/2.0`.
    pub protocol: String,
    /// Uppercased: `UDP`, `TCP`, `TLS`, `WS`, `WSS`, `SCTP`, ...
    pub transport: String,
    /// Hostname, IPv4 address, or bracketed IPv6 reference.
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    /// Parses a single Via entry (not a comma-joined list; see [`parse_vias`]).
    pub fn parse(s: &str) -> Result<Via, HeaderError> {
        let mut sc = Scanner::new(trim_lws(s));
        if sc.at_end() {
            return Err(HeaderError::Empty);
        }
        // sent-protocol = name SLASH version SLASH transport, SLASH = SWS "/" SWS.
        let name = sc.take_while(is_token_byte);
        sc.skip_lws();
        if name.is_empty() || !sc.eat(b'/') {
            return Err(HeaderError::InvalidVia("expected protocol-name/"));
        }
        sc.skip_lws();
        let version = sc.take_while(is_token_byte);
        sc.skip_lws();
        if version.is_empty() || !sc.eat(b'/') {
            return Err(HeaderError::InvalidVia("expected protocol-version/"));
        }
        sc.skip_lws();
        let transport = sc.take_while(is_token_byte);
        if transport.is_empty() {
            return Err(HeaderError::InvalidVia("missing transport"));
        }
        if !sc.skip_lws() {
            return Err(HeaderError::InvalidVia(
                "expected whitespace before sent-by",
            ));
        }

        let host = if sc.peek() == Some(b'[') {
            let start = sc.pos;
            sc.take_while(|b| b != b']');
            if !sc.eat(b']') {
                return Err(HeaderError::InvalidHost("unterminated IPv6 reference"));
            }
            sc.s.get(start..sc.pos).unwrap_or_default()
        } else {
            sc.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        };
        validate_host(host)?;
        // sent-by = host [ COLON port ], COLON = SWS ":" SWS.
        sc.skip_lws();
        let port = if sc.eat(b':') {
            sc.skip_lws();
            Some(parse_port(sc.take_while(|b| b.is_ascii_digit()))?)
        } else {
            None
        };
        let params = Params::parse_header_params(&mut sc)?;
        if let Some(rport) = params.get("rport") {
            // Validated here so `Via::rport` can be a plain lookup.
            if rport.is_some_and(|v| parse_port(v).is_err()) {
                return Err(HeaderError::InvalidVia("rport is not a port number"));
            }
        }

        let mut protocol = String::with_capacity(name.len() + 1 + version.len());
        protocol.push_str(name);
        protocol.push('/');
        protocol.push_str(version);
        protocol.make_ascii_uppercase();
        Ok(Via {
            protocol,
            transport: transport.to_ascii_uppercase(),
            host: host.to_owned(),
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&str> {
        self.params.get("branch").flatten()
    }

    /// `None` without `rport`, `Some(None)` for the bare flag a client sends (RFC 3581),
    /// `Some(Some(port))` once a server has filled it in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(|v| v.parse().ok()))
    }

    pub fn received(&self) -> Option<&str> {
        self.params.get("received").flatten()
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.protocol, self.transport, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(f, "{}", self.params)
    }
}

impl FromStr for Via {
    type Err = HeaderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Via::parse(s)
    }
}

/// Parses every Via value of a message (pass `headers.get_all(&HeaderName::Via)`), splitting
/// comma-joined values, topmost first.
pub fn parse_vias<'a>(values: impl Iterator<Item = &'a str>) -> Result<Vec<Via>, HeaderError> {
    let mut vias = Vec::new();
    for value in values {
        for_each_element(value, |element| {
            vias.push(Via::parse(element)?);
            Ok(())
        })?;
    }
    Ok(vias)
}

// ---------------------------------------------------------------------------------------------
// CSeq, Expires
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    /// Parses `1*DIGIT LWS Method`; the number must be below 2^31 (RFC 3261 §8.1.1.5).
    pub fn parse(s: &str) -> Result<CSeq, HeaderError> {
        let mut sc = Scanner::new(trim_lws(s));
        let digits = sc.take_while(|b| b.is_ascii_digit());
        if digits.is_empty() {
            return Err(HeaderError::InvalidCSeq("missing sequence number"));
        }
        // Leading zeros are legal (RFC 4475 sends `0009`), so the value, not the digit
        // count, decides.
        let seq = digits
            .bytes()
            .try_fold(0u32, |acc, b| {
                acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
            })
            .filter(|&n| n < 1 << 31)
            .ok_or(HeaderError::InvalidCSeq(
                "sequence number must be below 2^31",
            ))?;
        if !sc.skip_lws() {
            return Err(HeaderError::InvalidCSeq(
                "expected whitespace after the sequence number",
            ));
        }
        let method = sc.rest();
        if !is_token(method) {
            return Err(HeaderError::InvalidCSeq("method is not a token"));
        }
        Ok(CSeq {
            seq,
            method: Method::from_token(method),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

impl FromStr for CSeq {
    type Err = HeaderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CSeq::parse(s)
    }
}

/// Parses delta-seconds (Expires, Min-Expires, Contact `expires`). Values beyond `u32::MAX`
/// clamp instead of failing: RFC 3261 §10.2.1.1 allows large values and the registrar caps
/// them to its own maximum anyway.
pub fn parse_expires(value: &str) -> Result<u32, HeaderError> {
    let value = trim_lws(value);
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeaderError::InvalidDeltaSeconds);
    }
    Ok(value.bytes().fold(0u32, |acc, b| {
        acc.saturating_mul(10).saturating_add(u32::from(b - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn uri(s: &str) -> SipUri {
        SipUri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn contacts(values: &[&str]) -> Result<ContactValue, HeaderError> {
        parse_contacts(values.iter().copied())
    }

    fn contact_list(values: &[&str]) -> Vec<NameAddr> {
        match contacts(values) {
            Ok(ContactValue::List(list)) => list,
            other => panic!("expected a contact list, got {other:?}"),
        }
    }

    #[test]
    fn sip_uri_components() {
        let u = uri("sips:alice:secret@Atlanta.Example.COM:5061;transport=tls;lr?Subject=hi");
        assert_eq!(u.scheme, UriScheme::Sips);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, "Atlanta.Example.COM");
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport(), Some("tls"));
        assert_eq!(u.params.get("LR"), Some(None));
        assert_eq!(u.headers.as_deref(), Some("Subject=hi"));
        assert_eq!(
            u.to_string(),
            "sips:alice:secret@Atlanta.Example.COM:5061;transport=tls;lr?Subject=hi"
        );

        let u = uri("SIP:example.com");
        assert_eq!(u.scheme, UriScheme::Sip);
        assert_eq!(
            (u.user.as_deref(), u.port, u.transport()),
            (None, None, None)
        );
        assert_eq!(uri("SIP:example.com").to_string(), "sip:example.com");

        // User parts may contain `;`, `?`, escapes and telephone-subscriber characters.
        let u = uri("sip:+1-212-555-1212;phone-context=x%20y@gw.example.com;user=phone");
        assert_eq!(
            u.user.as_deref(),
            Some("+1-212-555-1212;phone-context=x%20y")
        );
        assert_eq!(u.params.get("user"), Some(Some("phone")));
    }

    #[test]
    fn sip_uri_ipv6() {
        let u = uri("sip:alice@[2001:DB8::10]:5070;transport=udp");
        assert_eq!(u.host, "[2001:DB8::10]");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.to_string(), "sip:alice@[2001:DB8::10]:5070;transport=udp");
        let u = uri("sip:[::1]");
        assert_eq!((u.host.as_str(), u.port), ("[::1]", None));
        assert!(uri("sip:[2001:db8::10]").same_address(&uri("sip:[2001:DB8:0::10]")));
        for bad in [
            "sip:[::1",
            "sip:[zz::1]",
            "sip:[::1]5060",
            "sip:[::1]:",
            "sip:[::1]:99999",
        ] {
            assert!(SipUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sip_uri_rejects_malformed_input() {
        for (bad, err) in [
            ("example.com", HeaderError::InvalidUri("missing scheme")),
            ("tel:+15551234", HeaderError::UnsupportedScheme),
            ("http://example.com", HeaderError::UnsupportedScheme),
            (
                "sip:@example.com",
                HeaderError::InvalidUri("empty user part"),
            ),
            ("sip:", HeaderError::InvalidHost("empty host")),
            ("sip:a@", HeaderError::InvalidHost("empty host")),
            ("sip:a@host:", HeaderError::InvalidPort),
            ("sip:a@host:65536", HeaderError::InvalidPort),
            ("sip:a@host:-1", HeaderError::InvalidPort),
            (
                "sip:a@ho st",
                HeaderError::InvalidHost("invalid character in host"),
            ),
            (
                "sip:a b@host",
                HeaderError::InvalidUri("invalid character in user part"),
            ),
            (
                "sip:a%zz@host",
                HeaderError::InvalidUri("invalid character in user part"),
            ),
            (
                "sip:a@host;",
                HeaderError::InvalidParam("missing URI parameter name"),
            ),
            (
                "sip:a@host;x=\"q\"",
                HeaderError::InvalidParam("invalid character in URI parameter"),
            ),
            (
                "sip:a@host?",
                HeaderError::InvalidUri("invalid headers component"),
            ),
        ] {
            assert_eq!(SipUri::parse(bad), Err(err), "{bad}");
        }
    }

    #[test]
    fn uri_comparison_follows_rfc_3261_19_1_4() {
        let same = [
            (
                "sip:%61lice@atlanta.com;transport=TCP",
                "sip:alice@AtLanTa.CoM;Transport=tcp",
            ),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
            (
                "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
                "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            ),
        ];
        for (a, b) in same {
            assert!(uri(a).same_address(&uri(b)), "{a} == {b}");
            assert!(uri(b).same_address(&uri(a)), "{b} == {a}");
        }
        let different = [
            (
                "SIP:ALICE@AtLanTa.CoM;Transport=udp",
                "sip:alice@AtLanTa.CoM;Transport=UDP",
            ),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
            ("sip:bob@biloxi.com", "sips:bob@biloxi.com"),
            ("sip:bob:pw@biloxi.com", "sip:bob@biloxi.com"),
            (
                "sip:carol@chicago.com;newparam=5",
                "sip:carol@chicago.com;newparam=6",
            ),
            ("sip:carol@chicago.com;maddr=x", "sip:carol@chicago.com"),
        ];
        for (a, b) in different {
            assert!(!uri(a).same_address(&uri(b)), "{a} != {b}");
            assert!(!uri(b).same_address(&uri(a)), "{b} != {a}");
        }
        // Reflexive even with a repeated parameter (found by proptest).
        let repeated = uri("sip:A;p;p=");
        assert!(repeated.same_address(&repeated));
        assert!(!repeated.same_address(&uri("sip:A;p=x")));
    }

    #[test]
    fn params_container() {
        let mut p = Params::new();
        p.set("expires", Some("60"));
        p.set("ob", None);
        p.set_quoted("+sip.instance", "<urn:uuid:1>");
        assert_eq!(
            p.to_string(),
            ";expires=60;ob;+sip.instance=\"<urn:uuid:1>\""
        );
        assert_eq!(p.get("EXPIRES"), Some(Some("60")));
        assert!(p.contains("Ob"));
        assert!(p.is_quoted("+SIP.INSTANCE"));
        assert!(!p.is_quoted("expires"));
        p.set("Expires", Some("120"));
        assert_eq!(
            p.to_string(),
            ";expires=120;ob;+sip.instance=\"<urn:uuid:1>\""
        );
        assert!(p.remove("ob"));
        assert!(!p.remove("ob"));
        assert_eq!(p.get("ob"), None);
        assert_eq!(p.len(), 2);
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            [
                ("expires", Some("120")),
                ("+sip.instance", Some("<urn:uuid:1>"))
            ]
        );
        p.set_quoted("q\"uote", "a\"b\\c");
        assert!(p.to_string().ends_with(";q\"uote=\"a\\\"b\\\\c\""));
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse("\"Bob \\\"B\\\" Smith\" <sip:bob@biloxi.example.com>;tag=a6c85cf")
            .expect("quoted");
        assert_eq!(n.display_name.as_deref(), Some("Bob \"B\" Smith"));
        assert_eq!(n.uri.user.as_deref(), Some("bob"));
        assert_eq!(n.tag(), Some("a6c85cf"));
        assert_eq!(
            n.to_string(),
            "\"Bob \\\"B\\\" Smith\" <sip:bob@biloxi.example.com>;tag=a6c85cf"
        );

        let n =
            NameAddr::parse("Bob  Smith <sip:bob@h;transport=tcp>  ;  tag = x").expect("tokens");
        assert_eq!(n.display_name.as_deref(), Some("Bob  Smith"));
        assert_eq!(n.uri.transport(), Some("tcp"));
        assert_eq!(n.tag(), Some("x"));
        assert_eq!(
            n.to_string(),
            "\"Bob  Smith\" <sip:bob@h;transport=tcp>;tag=x"
        );

        let n = NameAddr::parse("<sip:bob@h>").expect("bare brackets");
        assert_eq!(n.display_name, None);
        assert!(n.params.is_empty());

        // addr-spec: parameters after the URI belong to the header, not to the URI.
        let n = NameAddr::parse("sip:bob@h;tag=x;transport=tcp").expect("addr-spec");
        assert!(n.uri.params.is_empty());
        assert_eq!(n.tag(), Some("x"));
        assert_eq!(n.params.get("transport"), Some(Some("tcp")));
        assert_eq!(n.to_string(), "<sip:bob@h>;tag=x;transport=tcp");

        // A quoted `<` in an addr-spec's parameters is not an opening bracket.
        let n = NameAddr::parse("sip:a@192.0.2.1;+sip.instance=\"<urn:uuid:x>\"").expect("x");
        assert_eq!(n.params.get("+sip.instance"), Some(Some("<urn:uuid:x>")));

        let n = NameAddr::parse("Jörg <sip:j@h>").expect("utf-8 display name");
        assert_eq!(n.display_name.as_deref(), Some("Jörg"));

        for bad in [
            "",
            "   ",
            "\"unterminated <sip:a@h>",
            "\"Bob\" sip:a@h",
            "<sip:a@h",
            "Bob <sip:a@h>;",
            "Bob <sip:a@h>;tag=",
            "Bob <sip:a@h> junk",
            "B@b <sip:a@h>",
            "<mailto:a@h>",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn contact_star() {
        assert_eq!(contacts(&["*"]), Ok(ContactValue::Star));
        assert_eq!(contacts(&[" * "]), Ok(ContactValue::Star));
        assert_eq!(
            contacts(&["*", "<sip:a@h>"]),
            Err(HeaderError::StarNotAlone)
        );
        assert_eq!(contacts(&["<sip:a@h>, *"]), Err(HeaderError::StarNotAlone));
        assert_eq!(contacts(&["*, *"]), Err(HeaderError::StarNotAlone));
        assert_eq!(contacts(&[]), Ok(ContactValue::List(Vec::new())));
        assert_eq!(ContactValue::Star.to_string(), "*");
    }

    #[test]
    fn contact_list_splitting_respects_quotes_and_brackets() {
        let list = contact_list(&[
            "\"Smith, Bob\" <sip:bob@h1>;q=0.7, <sip:odd,user@h2;x=a>;expires=60",
            "sip:carol@h3;expires=0,\"Quote \\\", comma\" <sip:dave@h4>",
        ]);
        let users: Vec<_> = list
            .iter()
            .map(|c| c.uri.user.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(users, ["bob", "odd,user", "carol", "dave"]);
        assert_eq!(list[0].display_name.as_deref(), Some("Smith, Bob"));
        assert_eq!(list[0].q_millis(), Some(700));
        assert_eq!(list[0].q(), Some(0.7));
        assert_eq!(list[1].uri.params.get("x"), Some(Some("a")));
        assert_eq!(list[1].expires(), Some(60));
        assert_eq!(list[2].expires(), Some(0));
        assert_eq!(list[3].display_name.as_deref(), Some("Quote \", comma"));

        assert_eq!(
            contacts(&["<sip:a@h>,"]),
            Err(HeaderError::EmptyListElement)
        );
        assert_eq!(contacts(&[""]), Err(HeaderError::EmptyListElement));
        assert_eq!(
            contacts(&["\"open <sip:a@h>"]),
            Err(HeaderError::UnterminatedQuote)
        );
        assert_eq!(
            contacts(&["<sip:a@h"]),
            Err(HeaderError::UnbalancedAngleBrackets)
        );
        assert_eq!(
            contacts(&["<sip:a@h>>"]),
            Err(HeaderError::UnbalancedAngleBrackets)
        );
    }

    #[test]
    fn contact_instance_and_reg_id_survive_display() {
        let value = "<sip:1001@192.0.2.10:49152;transport=tls;ob>\
            ;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\";reg-id=1";
        let list = contact_list(&[value]);
        let c = &list[0];
        assert_eq!(
            c.params.get("+sip.instance"),
            Some(Some("<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"))
        );
        assert_eq!(c.params.get("reg-id"), Some(Some("1")));
        assert_eq!(c.uri.params.get("ob"), Some(None));
        assert_eq!(c.to_string(), value);
        assert_eq!(ContactValue::List(list.clone()).to_string(), value);
        assert_eq!(contact_list(&[&c.to_string()]), list);
    }

    #[test]
    fn contact_expires_and_q_helpers() {
        let c = |s: &str| NameAddr::parse(s).expect("contact");
        assert_eq!(c("<sip:a@h>").expires(), None);
        assert_eq!(c("<sip:a@h>;expires=abc").expires(), None);
        assert_eq!(c("<sip:a@h>;expires").expires(), None);
        assert_eq!(c("<sip:a@h>;expires=99999999999").expires(), Some(u32::MAX));
        for (q, want) in [
            ("0", Some(0)),
            ("0.", Some(0)),
            ("0.5", Some(500)),
            ("0.25", Some(250)),
            ("0.001", Some(1)),
            ("1", Some(1000)),
            ("1.000", Some(1000)),
            ("1.5", None),
            ("0.1234", None),
            ("2", None),
            ("-0.5", None),
            (".5", None),
        ] {
            assert_eq!(c(&format!("<sip:a@h>;q={q}")).q_millis(), want, "q={q}");
        }
    }

    #[test]
    fn via_fields() {
        let v = Via::parse(
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport;received=198.51.100.1",
        )
        .expect("via");
        assert_eq!(v.protocol, "SIP/2.0");
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "192.0.2.1");
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.received(), Some("198.51.100.1"));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport;received=198.51.100.1"
        );

        let v = Via::parse("sip / 2.0 / wss  [2001:db8::1] : 443 ; rport=40000").expect("via");
        assert_eq!(v.protocol, "SIP/2.0");
        assert_eq!(v.transport, "WSS");
        assert_eq!(v.host, "[2001:db8::1]");
        assert_eq!(v.port, Some(443));
        assert_eq!(v.rport(), Some(Some(40000)));
        assert_eq!(v.branch(), None);
        assert_eq!(v.to_string(), "SIP/2.0/WSS [2001:db8::1]:443;rport=40000");

        let v = Via::parse("SIP/2.0/TCP client.example.com;branch=z9hG4bK1;received=[2001:db8::2]")
            .expect("via");
        assert_eq!(v.received(), Some("[2001:db8::2]"));
        assert_eq!(v.port, None);
        assert_eq!(v.rport(), None);

        for bad in [
            "",
            "SIP/2.0 host",
            "SIP/2.0/UDP",
            "SIP/2.0/UDPhost",
            "SIP//UDP host",
            "SIP/2.0/UDP host:",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP host;rport=x",
            "SIP/2.0/UDP host;rport=70000",
            "SIP/2.0/UDP host branch=x",
            "SIP/2.0/UDP ho@st",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn via_lists() {
        let vias = parse_vias(
            [
                "SIP/2.0/UDP a;branch=p1, SIP/2.0/UDP b;branch=p2",
                "SIP/2.0/TCP c;branch=\"quoted, with comma\"",
            ]
            .into_iter(),
        )
        .expect("vias");
        let branches: Vec<_> = vias.iter().map(|v| v.branch().unwrap_or("")).collect();
        assert_eq!(branches, ["p1", "p2", "quoted, with comma"]);
        assert_eq!(
            parse_vias(["SIP/2.0/UDP a,"].into_iter()),
            Err(HeaderError::EmptyListElement)
        );
        assert_eq!(parse_vias(std::iter::empty()), Ok(Vec::new()));
    }

    #[test]
    fn cseq() {
        let c = CSeq::parse("  4711   REGISTER ").expect("cseq");
        assert_eq!((c.seq, c.method.clone()), (4711, Method::Register));
        assert_eq!(c.to_string(), "4711 REGISTER");
        assert_eq!(CSeq::parse("0009 INVITE").map(|c| c.seq), Ok(9));
        assert_eq!(
            CSeq::parse("2147483647 BYE").map(|c| c.seq),
            Ok(2_147_483_647)
        );
        assert_eq!(
            CSeq::parse("1 foo").map(|c| c.method),
            Ok(Method::Other("foo".into()))
        );
        for (bad, err) in [
            ("2147483648 BYE", "sequence number must be below 2^31"),
            (
                "99999999999999999999 BYE",
                "sequence number must be below 2^31",
            ),
            ("REGISTER", "missing sequence number"),
            ("", "missing sequence number"),
            ("-1 BYE", "missing sequence number"),
            ("1REGISTER", "expected whitespace after the sequence number"),
            ("1", "expected whitespace after the sequence number"),
            ("1 ", "expected whitespace after the sequence number"),
            ("1 REG ISTER", "method is not a token"),
            ("1 REG/ISTER", "method is not a token"),
        ] {
            assert_eq!(
                CSeq::parse(bad),
                Err(HeaderError::InvalidCSeq(err)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn expires() {
        assert_eq!(parse_expires("3600"), Ok(3600));
        assert_eq!(parse_expires(" 0 "), Ok(0));
        assert_eq!(parse_expires("4294967295"), Ok(u32::MAX));
        assert_eq!(parse_expires("4294967296"), Ok(u32::MAX));
        assert_eq!(parse_expires("99999999999999999999999"), Ok(u32::MAX));
        for bad in ["", "-1", "1.5", "60s", "0x10", "1 2"] {
            assert_eq!(
                parse_expires(bad),
                Err(HeaderError::InvalidDeltaSeconds),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn errors_have_precise_messages() {
        assert_eq!(
            CSeq::parse("x").unwrap_err().to_string(),
            "invalid CSeq: missing sequence number"
        );
        assert_eq!(
            SipUri::parse("sip:a@h:x").unwrap_err().to_string(),
            "invalid port"
        );
        assert_eq!(
            HeaderError::StarNotAlone.to_string(),
            "Contact `*` must be the only Contact value"
        );
    }

    // -----------------------------------------------------------------------------------------
    // Properties
    // -----------------------------------------------------------------------------------------

    fn arb_host() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?(\\.[a-z]{2,6}){0,2}",
            any::<[u8; 4]>().prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
            any::<u128>().prop_map(|a| format!("[{}]", Ipv6Addr::from(a))),
        ]
    }

    fn arb_uri_params() -> impl Strategy<Value = Params> {
        proptest::collection::vec(
            (
                "[a-zA-Z][a-zA-Z0-9.-]{0,8}",
                proptest::option::of("[a-zA-Z0-9.!~*'()\\[\\]/:&+$_-]{0,8}|%[0-9A-F]{2}"),
            ),
            0..4,
        )
        .prop_map(|items| {
            let mut p = Params::new();
            for (name, value) in items {
                p.push(&name, value, false);
            }
            p
        })
    }

    fn arb_uri() -> impl Strategy<Value = SipUri> {
        (
            any::<bool>(),
            proptest::option::of("[a-zA-Z0-9_.!~*'()&=+$,;?/-]{1,10}|%[0-9a-f]{2}[a-z]{0,4}"),
            proptest::option::of("[a-zA-Z0-9&=+$,_.-]{0,8}"),
            arb_host(),
            proptest::option::of(any::<u16>()),
            arb_uri_params(),
            proptest::option::of("[a-zA-Z]{1,6}=[a-zA-Z0-9:]{0,8}(%3[0-9A-F])?"),
        )
            .prop_map(
                |(sips, user, password, host, port, params, headers)| SipUri {
                    scheme: if sips {
                        UriScheme::Sips
                    } else {
                        UriScheme::Sip
                    },
                    password: user.as_ref().and(password),
                    user,
                    host,
                    port,
                    params,
                    headers,
                },
            )
    }

    fn arb_header_params() -> impl Strategy<Value = Params> {
        proptest::collection::vec(
            (
                "[a-zA-Z+][a-zA-Z0-9.!%*_+`'~-]{0,8}",
                prop_oneof![
                    Just(None),
                    "[a-zA-Z0-9.!%*_+`'~:\\[\\]-]{1,8}".prop_map(|v| Some((v, false))),
                    "[ -~\u{a0}-\u{3ff}]{0,12}".prop_map(|v| Some((v, true))),
                ],
            ),
            0..4,
        )
        .prop_map(|items| {
            let mut p = Params::new();
            for (name, value) in items {
                match value {
                    None => p.push(&name, None, false),
                    Some((v, quoted)) => p.push(&name, Some(v), quoted),
                }
            }
            p
        })
    }

    fn arb_name_addr() -> impl Strategy<Value = NameAddr> {
        (
            proptest::option::of("[ -~\u{a0}-\u{3ff}]{0,16}"),
            arb_uri(),
            arb_header_params(),
        )
            .prop_map(|(display_name, uri, params)| NameAddr {
                display_name,
                uri,
                params,
            })
    }

    fn arb_via() -> impl Strategy<Value = Via> {
        (
            "(UDP|TCP|TLS|WS|WSS|SCTP)",
            arb_host(),
            proptest::option::of(any::<u16>()),
            arb_header_params(),
        )
            .prop_map(|(transport, host, port, mut params)| {
                // rport is validated on parse, so generate only valid forms of it.
                params.remove("rport");
                Via {
                    protocol: "SIP/2.0".into(),
                    transport,
                    host,
                    port,
                    params,
                }
            })
    }

    proptest! {
        #[test]
        fn uri_display_round_trips(u in arb_uri()) {
            let text = u.to_string();
            let parsed = SipUri::parse(&text)
                .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert!(parsed.same_address(&u));
            prop_assert_eq!(parsed, u);
        }

        #[test]
        fn name_addr_display_round_trips(n in arb_name_addr()) {
            let text = n.to_string();
            let parsed = NameAddr::parse(&text)
                .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(parsed, n);
        }

        #[test]
        fn contact_list_display_round_trips(list in proptest::collection::vec(arb_name_addr(), 1..4)) {
            let value = ContactValue::List(list);
            let text = value.to_string();
            let parsed = parse_contacts(std::iter::once(text.as_str()))
                .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(parsed, value);
        }

        #[test]
        fn via_display_round_trips(vias in proptest::collection::vec(arb_via(), 1..4)) {
            let joined = vias.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            let parsed = parse_vias(std::iter::once(joined.as_str()))
                .map_err(|e| TestCaseError::fail(format!("{joined}: {e}")))?;
            prop_assert_eq!(parsed, vias);
        }

        #[test]
        fn cseq_round_trips(seq in 0u32..(1 << 31), method in "[A-Za-z0-9.!%*_+`'~-]{1,12}") {
            let c = CSeq { seq, method: Method::from_token(&method) };
            prop_assert_eq!(CSeq::parse(&c.to_string()), Ok(c));
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,64}|[ -~]{0,64}|[\"<>;,=:@\\[\\]\\\\ a-z0-9*%/.]{0,64}") {
            let _ = SipUri::parse(&s);
            let _ = NameAddr::parse(&s);
            let _ = Via::parse(&s);
            let _ = CSeq::parse(&s);
            let _ = parse_expires(&s);
            let _ = parse_vias(std::iter::once(s.as_str()));
            let _ = parse_contacts(std::iter::once(s.as_str()));
        }
    }
}
