//! Server-side HTTP/SIP Digest authentication (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).
//!
//! This module is sans-IO: it never reads a clock, a socket or a credential store. Every
//! function that depends on time takes `now_unix`, and the user database is reached through a
//! caller-supplied `lookup_ha1` closure, so the registrar decides how (and whether) to block.
//!
//! The pieces, from low to high level:
//!
//! * [`Algorithm`], [`Qop`], [`ha1_hex`], [`session_ha1_hex`], [`compute_response`]: the hash
//!   arithmetic of RFC 7616 §3.4.
//! * [`DigestCredentials::parse`]: a strict, panic-free parser for `Authorization` /
//!   `Proxy-Authorization` values.
//! * [`issue_nonce`] / [`check_nonce`]: stateless nonces authenticated with HMAC-SHA256 and
//!   bound to the client address, so that the server keeps no per-challenge state.
//! * [`NonceCounts`]: the bounded nonce-count table that provides replay protection.
//! * [`Verifier`]: the object the registrar uses; it combines all of the above and encodes the
//!   security-relevant ordering (verify first, commit the nonce-count only on success).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Digest as _;
use subtle::{Choice, ConstantTimeEq};

type HmacSha256 = Hmac<sha2::Sha256>;

/// How far in the future (relative to `now`) an authentic nonce's timestamp may be before it
/// is treated as stale. Only our own key can mint nonces, so a future timestamp means clock
/// skew between nodes sharing a key (or a clock step backwards), not an attack; a small
/// allowance avoids pointless re-challenges while still bounding the damage of a bad clock.
pub const NONCE_FUTURE_SKEW_SECS: u64 = 30;

/// Length in bytes of a decoded nonce: issued_at (8) | random (8) | truncated MAC (16).
const NONCE_RAW_LEN: usize = 32;
/// Length of the base64url (unpadded) encoding of a nonce.
const NONCE_B64_LEN: usize = 43;
/// Upper bound on auth-params in one header. Real clients send about a dozen; the bound keeps
/// duplicate detection cheap and stops a huge header from allocating without limit.
const MAX_PARAMS: usize = 64;
/// Longest parameter name echoed back in an error, so errors stay small when logged.
const MAX_ERROR_NAME: usize = 32;

// ---------------------------------------------------------------------------------------------
// Algorithms and hashing
// ---------------------------------------------------------------------------------------------

/// Digest hash algorithm (RFC 7616 §3.3 / RFC 8760 §2.2).
///
/// The `-sess` variants are not separate variants: they use the same hash and the same stored
/// `H(username:realm:password)`, so they are carried as a separate `session` flag (see
/// [`Algorithm::parse`] and [`DigestCredentials::session`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// `MD5`: legacy, kept for interoperability with older SIP phones.
    Md5,
    /// `SHA-256`.
    Sha256,
    /// `SHA-512-256`: SHA-512/256 (FIPS 180-4), as named by RFC 7616 and RFC 8760.
    Sha512_256,
}

impl Algorithm {
    /// Every supported algorithm, strongest first.
    pub const ALL: [Algorithm; 3] = [Algorithm::Sha512_256, Algorithm::Sha256, Algorithm::Md5];

    /// The `algorithm=` token for the non-session variant, e.g. `"SHA-256"`.
    pub fn token(&self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha512_256 => "SHA-512-256",
        }
    }

    /// The `algorithm=` token for the session variant, e.g. `"SHA-256-sess"`.
    pub fn session_token(&self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5-sess",
            Algorithm::Sha256 => "SHA-256-sess",
            Algorithm::Sha512_256 => "SHA-512-256-sess",
        }
    }

    /// Parses an `algorithm=` token, case-insensitively.
    ///
    /// Returns the hash algorithm and whether the `-sess` variant was named
    /// (`"md5-sess"` → `(Md5, true)`), or `None` for an unknown token.
    pub fn parse(s: &str) -> Option<(Algorithm, bool)> {
        let (base, session) = match s
            .len()
            .checked_sub("-sess".len())
            .and_then(|i| Some((s.get(..i)?, s.get(i..)?)))
        {
            Some((base, suffix)) if suffix.eq_ignore_ascii_case("-sess") => (base, true),
            _ => (s, false),
        };
        let alg = Algorithm::ALL
            .into_iter()
            .find(|a| a.token().eq_ignore_ascii_case(base))?;
        Some((alg, session))
    }

    /// Length of this algorithm's lowercase-hex digest (32 for MD5, 64 otherwise).
    pub fn hex_len(&self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha256 | Algorithm::Sha512_256 => 64,
        }
    }

    /// Lowercase hex of `H(parts[0] ":" parts[1] ":" ...)`.
    fn hash_hex(&self, parts: &[&[u8]]) -> String {
        match self {
            Algorithm::Md5 => hash_parts::<md5::Md5>(parts),
            Algorithm::Sha256 => hash_parts::<sha2::Sha256>(parts),
            Algorithm::Sha512_256 => hash_parts::<sha2::Sha512_256>(parts),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// Parses a non-session algorithm token (for configuration); `-sess` tokens are rejected
/// because configuration lists hash algorithms to offer, not session variants.
impl FromStr for Algorithm {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match Algorithm::parse(s) {
            Some((alg, false)) => Ok(alg),
            _ => Err(DigestError::UnsupportedAlgorithm),
        }
    }
}

impl serde::Serialize for Algorithm {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.token())
    }
}

impl<'de> serde::Deserialize<'de> for Algorithm {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(|_| {
            serde::de::Error::invalid_value(
                serde::de::Unexpected::Str(&s),
                &"one of \"MD5\", \"SHA-256\", \"SHA-512-256\"",
            )
        })
    }
}

fn hash_parts<D: sha2::Digest>(parts: &[&[u8]]) -> String {
    let mut hasher = D::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(b":");
        }
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

/// Quality of protection (RFC 7616 §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Qop {
    /// `auth`: authentication of the request line only.
    Auth,
    /// `auth-int`: authentication including a hash of the message body.
    AuthInt,
}

impl Qop {
    /// The wire token, `"auth"` or `"auth-int"`.
    pub fn token(&self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }

    /// Parses a qop token case-insensitively.
    pub fn parse(s: &str) -> Option<Qop> {
        if s.eq_ignore_ascii_case("auth") {
            Some(Qop::Auth)
        } else if s.eq_ignore_ascii_case("auth-int") {
            Some(Qop::AuthInt)
        } else {
            None
        }
    }
}

/// Lowercase hex of `H(username ":" realm ":" password)`: the value a credential store keeps
/// instead of the password.
pub fn ha1_hex(alg: Algorithm, username: &str, realm: &str, password: &str) -> String {
    alg.hash_hex(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()])
}

/// The `-sess` HA1 of RFC 7616 §3.4.2: `H(HA1 ":" nonce ":" cnonce)`, with HA1 in lowercase
/// hex (as RFC 7616 specifies and deployed servers do; RFC 2617's sample code hashed the
/// binary HA1, which is an erratum).
pub fn session_ha1_hex(alg: Algorithm, ha1_hex: &str, nonce: &str, cnonce: &str) -> String {
    alg.hash_hex(&[ha1_hex.as_bytes(), nonce.as_bytes(), cnonce.as_bytes()])
}

/// The `userhash` form of a username (RFC 7616 §3.4.4): `H(username ":" realm)`.
pub fn userhash_hex(alg: Algorithm, username: &str, realm: &str) -> String {
    alg.hash_hex(&[username.as_bytes(), realm.as_bytes()])
}

/// Computes the expected `response` value (RFC 7616 §3.4.1).
///
/// * with `qop = Some((qop, nc, cnonce))`: `H(HA1:nonce:nc:cnonce:qop:HA2)`, `nc` rendered as
///   8 lowercase hex digits;
/// * without qop (RFC 2069 compatibility): `H(HA1:nonce:HA2)`.
///
/// `HA2 = H(method:uri)`, or `H(method:uri:H(body))` for `auth-int`. `ha1_hex` must already be
/// the session HA1 ([`session_ha1_hex`]) when a `-sess` algorithm is in use. `uri` must be the
/// digest `uri` parameter exactly as the client sent it.
pub fn compute_response(
    alg: Algorithm,
    ha1_hex: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<(Qop, u32, &str)>,
    body: &[u8],
) -> String {
    let ha2 = match qop {
        Some((Qop::AuthInt, _, _)) => {
            let body_hash = alg.hash_hex(&[body]);
            alg.hash_hex(&[method.as_bytes(), uri.as_bytes(), body_hash.as_bytes()])
        }
        _ => alg.hash_hex(&[method.as_bytes(), uri.as_bytes()]),
    };
    match qop {
        Some((q, nc, cnonce)) => {
            let nc = format!("{nc:08x}");
            alg.hash_hex(&[
                ha1_hex.as_bytes(),
                nonce.as_bytes(),
                nc.as_bytes(),
                cnonce.as_bytes(),
                q.token().as_bytes(),
                ha2.as_bytes(),
            ])
        }
        None => alg.hash_hex(&[ha1_hex.as_bytes(), nonce.as_bytes(), ha2.as_bytes()]),
    }
}

// ---------------------------------------------------------------------------------------------
// Credentials parsing
// ---------------------------------------------------------------------------------------------

/// Why an `Authorization` value could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The auth-scheme is not `Digest`.
    #[error("authorization scheme is not Digest")]
    NotDigest,
    /// The auth-param list does not follow the grammar.
    #[error("malformed digest credentials: {0}")]
    Syntax(&'static str),
    /// A parameter appeared more than once (RFC 7616 §3.4: each at most once).
    #[error("duplicate digest parameter `{0}`")]
    DuplicateParam(String),
    /// A mandatory parameter is absent.
    #[error("missing digest parameter `{0}`")]
    MissingParam(&'static str),
    /// A parameter forbidden in this combination is present (e.g. `nc` without `qop`).
    #[error("unexpected digest parameter `{0}`")]
    UnexpectedParam(&'static str),
    /// A parameter has a value outside its grammar.
    #[error("invalid value for digest parameter `{0}`")]
    InvalidParam(&'static str),
    /// More auth-params than any legitimate client sends.
    #[error("too many digest parameters")]
    TooManyParams,
    /// The `algorithm` is not one this implementation knows.
    #[error("unsupported digest algorithm")]
    UnsupportedAlgorithm,
    /// The `qop` is neither `auth` nor `auth-int`.
    #[error("unsupported qop")]
    UnsupportedQop,
    /// `nc` is not exactly 8 hex digits.
    #[error("invalid nonce-count")]
    InvalidNonceCount,
}

/// Parsed `Authorization` / `Proxy-Authorization` header value (RFC 7616 §3.4).
///
/// String fields hold the *unquoted* values (quoted-pair escapes removed), which is exactly what
/// RFC 7616's `unq()` feeds into the hashes.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    /// `username`, or the decoded `username*` (RFC 7616 §3.4.4). When [`Self::userhash`] is
    /// true this is `H(username:realm)` in hex, not a name.
    pub username: String,
    /// `realm`.
    pub realm: String,
    /// `nonce`, as issued by the server.
    pub nonce: String,
    /// `uri` exactly as sent; it is hashed verbatim and must never be re-serialized.
    pub uri: String,
    /// `response`: the request digest (hex).
    pub response: String,
    /// Hash algorithm; `MD5` when the parameter is absent (RFC 7616 §3.4).
    pub algorithm: Algorithm,
    /// Whether the `-sess` variant of [`Self::algorithm`] was named.
    pub session: bool,
    /// `cnonce`; present exactly when `qop` is.
    pub cnonce: Option<String>,
    /// `opaque`, echoed from the challenge.
    pub opaque: Option<String>,
    /// `qop`; `None` means an RFC 2069-style response.
    pub qop: Option<Qop>,
    /// `nc`, parsed as hexadecimal (`00000100` → 256); present exactly when `qop` is.
    pub nc: Option<u32>,
    /// `userhash=true` (RFC 7616 §3.4.4).
    pub userhash: bool,
}

/// The response digest is an offline-crackable function of the password, so it is redacted.
impl fmt::Debug for DigestCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestCredentials")
            .field("username", &self.username)
            .field("realm", &self.realm)
            .field("nonce", &self.nonce)
            .field("uri", &self.uri)
            .field("response", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .field("session", &self.session)
            .field("cnonce", &self.cnonce)
            .field("opaque", &self.opaque)
            .field("qop", &self.qop)
            .field("nc", &self.nc)
            .field("userhash", &self.userhash)
            .finish()
    }
}

/// Raw parameter values collected before validation.
#[derive(Default)]
struct RawParams {
    username: Option<String>,
    username_ext: Option<String>,
    realm: Option<String>,
    nonce: Option<String>,
    uri: Option<String>,
    response: Option<String>,
    algorithm: Option<String>,
    cnonce: Option<String>,
    opaque: Option<String>,
    qop: Option<String>,
    nc: Option<String>,
    userhash: Option<String>,
    /// Lowercased names of unrecognised parameters, kept only for duplicate detection.
    unknown: Vec<String>,
}

impl RawParams {
    fn set(&mut self, name: &str, value: String) -> Result<(), DigestError> {
        // Names are matched case-insensitively (RFC 7616 §3.4) without allocating: this runs
        // for every parameter of every authenticated request.
        let known: [(&'static str, &mut Option<String>); 12] = [
            ("username", &mut self.username),
            ("username*", &mut self.username_ext),
            ("realm", &mut self.realm),
            ("nonce", &mut self.nonce),
            ("uri", &mut self.uri),
            ("response", &mut self.response),
            ("algorithm", &mut self.algorithm),
            ("cnonce", &mut self.cnonce),
            ("opaque", &mut self.opaque),
            ("qop", &mut self.qop),
            ("nc", &mut self.nc),
            ("userhash", &mut self.userhash),
        ];
        if let Some((canonical, slot)) = known
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            if slot.is_some() {
                return Err(duplicate(canonical));
            }
            *slot = Some(value);
            return Ok(());
        }
        // RFC 7616 §3.4: unknown parameters are ignored, but a repeated one still makes the
        // header malformed.
        let lower = name.to_ascii_lowercase();
        if self.unknown.contains(&lower) {
            return Err(duplicate(&lower));
        }
        self.unknown.push(lower);
        Ok(())
    }
}

fn duplicate(name: &str) -> DigestError {
    DigestError::DuplicateParam(crate::text::truncate(name, MAX_ERROR_NAME).to_owned())
}

/// Linear-whitespace bytes. CR and LF are included so that a folded header value that the
/// framing layer did not unfold still parses.
fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// SIP `token` characters (RFC 3261 §25.1), plus `*` for `username*`.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// Bytes allowed in an unquoted value. Deliberately wider than `token` (clients put `/`, `=`
/// or `:` in unquoted nonces and algorithms), but never a delimiter or a control byte.
fn is_bare_value_byte(b: u8) -> bool {
    !is_lws(b) && b != b',' && b != b'"' && !b.is_ascii_control()
}

/// Byte cursor over the header value. All delimiters are ASCII, so every index at which the
/// cursor slices is a UTF-8 character boundary.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn skip_lws(&mut self) {
        while self.peek().is_some_and(is_lws) {
            self.pos += 1;
        }
    }

    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or_default()
    }

    /// Parses a quoted-string starting at the opening `"`, removing quoted-pair escapes.
    fn quoted(&mut self) -> Result<String, DigestError> {
        self.pos += 1; // opening quote
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(DigestError::Syntax("unterminated quoted-string")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    // quoted-pair: the next byte is taken literally. If it starts a multi-byte
                    // character, its continuation bytes follow on later iterations, so the
                    // output remains valid UTF-8.
                    let escaped = self
                        .s
                        .as_bytes()
                        .get(self.pos + 1)
                        .copied()
                        .ok_or(DigestError::Syntax("unterminated quoted-pair"))?;
                    out.push(escaped);
                    self.pos += 2;
                }
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| DigestError::Syntax("invalid UTF-8 in quoted-string"))
    }
}

impl DigestCredentials {
    /// Parses a `Digest` `Authorization` / `Proxy-Authorization` header value.
    ///
    /// Accepts the scheme case-insensitively, comma-separated auth-params with optional
    /// whitespace (and empty list elements, per the `#rule`), quoted or bare values for every
    /// parameter (clients disagree on which are quoted), and `username*` (RFC 8187 UTF-8
    /// ext-value). Rejects duplicates, missing mandatory parameters, an unknown algorithm or
    /// qop, an `nc` that is not exactly 8 hex digits, `qop` without `cnonce`/`nc`, and
    /// `cnonce`/`nc` or a `-sess` algorithm without `qop` (RFC 7616 §3.4). Never panics.
    pub fn parse(header_value: &str) -> Result<Self, DigestError> {
        let mut cur = Cursor {
            s: header_value,
            pos: 0,
        };
        cur.skip_lws();
        let scheme = cur.take_while(|b| !is_lws(b));
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestError::NotDigest);
        }
        let mut raw = RawParams::default();
        let mut count = 0usize;
        loop {
            cur.skip_lws();
            match cur.peek() {
                None => break,
                Some(b',') => {
                    cur.pos += 1;
                    continue;
                }
                Some(_) => {}
            }
            if count == MAX_PARAMS {
                return Err(DigestError::TooManyParams);
            }
            count += 1;
            let name = cur.take_while(is_name_byte);
            if name.is_empty() {
                return Err(DigestError::Syntax("expected parameter name"));
            }
            cur.skip_lws();
            if cur.peek() != Some(b'=') {
                return Err(DigestError::Syntax("expected `=` after parameter name"));
            }
            cur.pos += 1;
            cur.skip_lws();
            let value = match cur.peek() {
                Some(b'"') => cur.quoted()?,
                _ => {
                    let v = cur.take_while(is_bare_value_byte);
                    if v.is_empty() {
                        return Err(DigestError::Syntax("expected parameter value"));
                    }
                    v.to_owned()
                }
            };
            raw.set(name, value)?;
            cur.skip_lws();
            match cur.peek() {
                None => break,
                Some(b',') => cur.pos += 1,
                Some(_) => return Err(DigestError::Syntax("expected `,` between parameters")),
            }
        }
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawParams) -> Result<Self, DigestError> {
        let userhash = match raw.userhash.as_deref() {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(_) => return Err(DigestError::InvalidParam("userhash")),
        };
        let username = match (raw.username, raw.username_ext) {
            (Some(u), None) => u,
            (None, Some(ext)) => {
                // RFC 7616 §3.4.4: username* is for names that cannot be sent as-is, and is
                // meaningless alongside a hashed username.
                if userhash {
                    return Err(DigestError::UnexpectedParam("username*"));
                }
                decode_ext_value(&ext).ok_or(DigestError::InvalidParam("username*"))?
            }
            (Some(_), Some(_)) => return Err(DigestError::UnexpectedParam("username*")),
            (None, None) => return Err(DigestError::MissingParam("username")),
        };
        let realm = raw.realm.ok_or(DigestError::MissingParam("realm"))?;
        let nonce = raw.nonce.ok_or(DigestError::MissingParam("nonce"))?;
        let uri = raw.uri.ok_or(DigestError::MissingParam("uri"))?;
        let response = raw.response.ok_or(DigestError::MissingParam("response"))?;
        let (algorithm, session) = match raw.algorithm.as_deref() {
            None => (Algorithm::Md5, false),
            Some(tok) => Algorithm::parse(tok).ok_or(DigestError::UnsupportedAlgorithm)?,
        };
        let qop = match raw.qop.as_deref() {
            None => None,
            Some(tok) => Some(Qop::parse(tok).ok_or(DigestError::UnsupportedQop)?),
        };
        let nc = match raw.nc.as_deref() {
            None => None,
            Some(v) => Some(parse_nc(v).ok_or(DigestError::InvalidNonceCount)?),
        };
        if qop.is_some() {
            if raw.cnonce.is_none() {
                return Err(DigestError::MissingParam("cnonce"));
            }
            if nc.is_none() {
                return Err(DigestError::MissingParam("nc"));
            }
        } else {
            // RFC 7616 §3.4: cnonce and nc MUST NOT be sent without qop; and a session HA1
            // needs a cnonce, so `-sess` implies qop as well.
            if raw.cnonce.is_some() {
                return Err(DigestError::UnexpectedParam("cnonce"));
            }
            if nc.is_some() {
                return Err(DigestError::UnexpectedParam("nc"));
            }
            if session {
                return Err(DigestError::MissingParam("qop"));
            }
        }
        Ok(DigestCredentials {
            username,
            realm,
            nonce,
            uri,
            response,
            algorithm,
            session,
            cnonce: raw.cnonce,
            opaque: raw.opaque,
            qop,
            nc,
            userhash,
        })
    }
}

/// `nc-value = 8LHEX`. Upper-case hex digits are tolerated on input; the response is always
/// computed over the lowercase rendering the RFC mandates.
fn parse_nc(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// Decodes an RFC 8187 `ext-value` (`UTF-8'lang'pct-encoded`). Only the UTF-8 charset is
/// accepted: RFC 7616 §3.4.4 requires it.
fn decode_ext_value(s: &str) -> Option<String> {
    let mut parts = s.splitn(3, '\'');
    let charset = parts.next()?;
    let _language = parts.next()?;
    let encoded = parts.next()?;
    if !charset.eq_ignore_ascii_case("UTF-8") {
        return None;
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex_val(*bytes.get(i + 1)?)?;
                let lo = hex_val(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex_val(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

// ---------------------------------------------------------------------------------------------
// Stateless nonces
// ---------------------------------------------------------------------------------------------

/// Secret key authenticating nonces. Nodes that must accept each other's nonces share it;
/// otherwise generate one per process.
#[derive(Clone)]
pub struct NonceKey([u8; 32]);

impl NonceKey {
    /// Uses `bytes` as the key. They must be uniformly random (see [`Self::from_secret`] for
    /// arbitrary configured secrets).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        NonceKey(bytes)
    }

    /// Derives a key from an arbitrary configured secret (e.g. a passphrase in the config
    /// file) by hashing it with a domain-separation label, so the same secret reused
    /// elsewhere does not yield the same key.
    pub fn from_secret(secret: &[u8]) -> Self {
        let mut h = sha2::Sha256::new();
        h.update(b"gridedge digest nonce key v1\0");
        h.update(secret);
        NonceKey(h.finalize().into())
    }

    /// Generates a fresh random key from the operating system's CSPRNG.
    ///
    /// # Panics
    ///
    /// Panics if the OS random source fails, which leaves no safe way to continue; use
    /// [`Self::try_generate`] to handle that instead.
    pub fn generate() -> Self {
        use rand::RngCore as _;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        NonceKey(bytes)
    }

    /// Like [`Self::generate`] but reports a failing OS random source.
    pub fn try_generate() -> Result<Self, rand::Error> {
        use rand::RngCore as _;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.try_fill_bytes(&mut bytes)?;
        Ok(NonceKey(bytes))
    }

    /// An HMAC-SHA256 instance keyed with this key.
    fn mac(&self) -> HmacSha256 {
        // HMAC zero-pads keys shorter than the hash block (RFC 2104 §2), so keying with the
        // padded 64-byte block is the same MAC as keying with the 32 bytes, and avoids the
        // fallible `new_from_slice` path entirely.
        let mut block = hmac::digest::Key::<HmacSha256>::default();
        for (dst, src) in block.iter_mut().zip(self.0.iter()) {
            *dst = *src;
        }
        <HmacSha256 as KeyInit>::new(&block)
    }
}

impl fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceKey(<redacted>)")
    }
}

impl Drop for NonceKey {
    fn drop(&mut self) {
        // Best-effort scrub; `black_box` keeps the compiler from eliding the dead store.
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

/// Result of [`check_nonce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    /// Authentic, bound to this client and within its lifetime.
    Valid {
        /// When the nonce was issued (Unix seconds).
        issued_at: u64,
    },
    /// Authentic but expired (or timestamped too far in the future): re-challenge with
    /// `stale=true` so the client retries with the same credentials and a fresh nonce.
    Stale,
    /// Not one of ours: malformed, forged, tampered with, or issued to another address.
    Invalid,
}

/// The address as it is bound into nonces. IPv4-mapped IPv6 addresses are canonicalised to
/// IPv4 so a client seen through a dual-stack socket and an IPv4 socket stays the same client.
fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn nonce_tag(key: &NonceKey, prefix: &[u8], client_ip: IpAddr) -> [u8; 16] {
    let mut mac = key.mac();
    mac.update(prefix);
    // The prefix is fixed-length and the IPv4/IPv6 encodings differ in length, so the MAC
    // input is unambiguous without a separator.
    mac.update(&ip_bytes(client_ip));
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; 16];
    for (dst, src) in tag.iter_mut().zip(full.iter()) {
        *dst = *src;
    }
    tag
}

/// Issues a nonce: base64url (unpadded) of
/// `issued_at (u64 BE) | 8 random bytes | HMAC-SHA256(key, issued_at | random | client_ip)[..16]`.
///
/// The nonce carries its own issue time and is authenticated, so the server needs no state
/// per challenge; binding the client address stops a nonce leaked to one host from being used
/// by another.
pub fn issue_nonce(key: &NonceKey, now_unix: u64, client_ip: IpAddr) -> String {
    use rand::RngCore as _;
    let mut raw = [0u8; NONCE_RAW_LEN];
    raw[..8].copy_from_slice(&now_unix.to_be_bytes());
    rand::thread_rng().fill_bytes(&mut raw[8..16]);
    let tag = nonce_tag(key, &raw[..16], client_ip);
    raw[16..].copy_from_slice(&tag);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Checks a nonce produced by [`issue_nonce`].
///
/// The tag is compared in constant time and before the timestamp is trusted. An authentic
/// nonce is [`NonceCheck::Stale`] when older than `lifetime_secs` or dated more than
/// [`NONCE_FUTURE_SKEW_SECS`] ahead of `now_unix`.
pub fn check_nonce(
    key: &NonceKey,
    nonce: &str,
    now_unix: u64,
    client_ip: IpAddr,
    lifetime_secs: u64,
) -> NonceCheck {
    // Length first: cheap, and it caps the work done on attacker-supplied strings.
    if nonce.len() != NONCE_B64_LEN {
        return NonceCheck::Invalid;
    }
    // The engine rejects padding and non-canonical trailing bits, so each nonce has exactly
    // one accepted spelling.
    let Ok(decoded) = URL_SAFE_NO_PAD.decode(nonce) else {
        return NonceCheck::Invalid;
    };
    let Ok(raw) = <[u8; NONCE_RAW_LEN]>::try_from(decoded.as_slice()) else {
        return NonceCheck::Invalid;
    };
    let expected = nonce_tag(key, &raw[..16], client_ip);
    if !bool::from(expected.ct_eq(&raw[16..])) {
        return NonceCheck::Invalid;
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&raw[..8]);
    let issued_at = u64::from_be_bytes(ts);
    if issued_at > now_unix.saturating_add(NONCE_FUTURE_SKEW_SECS)
        || now_unix.saturating_sub(issued_at) > lifetime_secs
    {
        return NonceCheck::Stale;
    }
    NonceCheck::Valid { issued_at }
}

// ---------------------------------------------------------------------------------------------
// Replay protection
// ---------------------------------------------------------------------------------------------

/// Highest nonce-count accepted per nonce; bounded (evicts the oldest by issue time when full).
///
/// Because the table is bounded, a nonce can be forgotten while still within its lifetime.
/// The table therefore remembers the newest issue time it has ever dropped (by eviction or
/// [`sweep`](Self::sweep)); [`history_lost`](Self::history_lost) reports nonces whose count
/// history may be gone, and the [`Verifier`] answers those with `Stale` instead of trusting an
/// empty history, which would reopen replays.
///
/// Nonces are tracked by a 64-bit keyed fingerprint rather than by their text: a tracked
/// nonce then costs about 60 bytes instead of about 220, which matters at a million entries.
/// The fingerprint is SipHash under a per-process random key, so nobody can aim two nonces at
/// one slot; an accidental collision (odds about n²/2⁶⁵) only makes the second nonce's first
/// use look like a replay, which the phone answers by re-authenticating.
#[derive(Clone, Debug)]
pub struct NonceCounts {
    capacity: usize,
    hasher: std::hash::RandomState,
    /// Nonce fingerprint -> last accepted nonce-count.
    entries: HashMap<u64, u32>,
    /// Same nonces ordered by (issue time, insertion sequence), for O(log n) eviction of the
    /// oldest; the sequence breaks ties so that, among nonces issued in the same second, the
    /// one committed longest ago goes first rather than the one just committed.
    by_issue: BTreeSet<(u64, u64, u64)>,
    /// Next insertion sequence number.
    next_seq: u64,
    /// Newest issue time of any nonce dropped from the table.
    forgotten_through: Option<u64>,
}

impl NonceCounts {
    /// Creates a table holding at most `capacity` nonces (at least 1: a zero-capacity table
    /// would silently disable replay protection).
    pub fn new(capacity: usize) -> Self {
        NonceCounts {
            capacity: capacity.max(1),
            hasher: std::hash::RandomState::new(),
            entries: HashMap::new(),
            by_issue: BTreeSet::new(),
            next_seq: 0,
            forgotten_through: None,
        }
    }

    fn key(&self, nonce: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(nonce)
    }

    /// True if `nc` is greater than the last accepted count for `nonce` (counts start at 1,
    /// so `nc = 0` is never fresh). Does not change state.
    pub fn check(&self, nonce: &str, nc: u32) -> bool {
        nc > self.last(nonce).unwrap_or(0)
    }

    /// The last accepted count for `nonce`, if tracked.
    pub fn last(&self, nonce: &str) -> Option<u32> {
        self.entries.get(&self.key(nonce)).copied()
    }

    /// True if `nonce` is untracked but was issued no later than a nonce the table has
    /// dropped, i.e. its count history may have been lost.
    pub fn history_lost(&self, nonce: &str, issued_at: u64) -> bool {
        !self.entries.contains_key(&self.key(nonce))
            && self.forgotten_through.is_some_and(|w| issued_at <= w)
    }

    /// Records `nc` as accepted for `nonce`. Call only after the response verified. Counts
    /// never move backwards. Evicts the oldest-issued nonces beyond capacity.
    pub fn commit(&mut self, nonce: &str, nc: u32, issued_at: u64) {
        let key = self.key(nonce);
        if let Some(last) = self.entries.get_mut(&key) {
            *last = (*last).max(nc);
            return;
        }
        self.entries.insert(key, nc);
        self.by_issue.insert((issued_at, self.next_seq, key));
        self.next_seq = self.next_seq.wrapping_add(1);
        self.evict_to(self.capacity);
    }

    /// Number of tracked nonces.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no nonce is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Maximum number of tracked nonces.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Changes the bound (minimum 1), evicting the oldest nonces if needed.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        self.evict_to(self.capacity);
    }

    /// Drops nonces issued before `oldest_valid_issue` (they can no longer pass
    /// [`check_nonce`]) and remembers that their history is gone.
    pub fn sweep(&mut self, oldest_valid_issue: u64) {
        let keep = self.by_issue.split_off(&(oldest_valid_issue, 0, 0));
        let dropped = std::mem::replace(&mut self.by_issue, keep);
        for (_, _, key) in dropped {
            self.entries.remove(&key);
        }
        // Raised even if nothing was tracked: a later reload with a longer lifetime could
        // otherwise revive these nonces with an empty history.
        if let Some(w) = oldest_valid_issue.checked_sub(1) {
            self.forget_through(w);
        }
    }

    fn evict_to(&mut self, capacity: usize) {
        while self.entries.len() > capacity {
            let Some((issued_at, _, key)) = self.by_issue.pop_first() else {
                break;
            };
            self.entries.remove(&key);
            self.forget_through(issued_at);
        }
    }

    fn forget_through(&mut self, issued_at: u64) {
        self.forgotten_through = Some(
            self.forgotten_through
                .map_or(issued_at, |w| w.max(issued_at)),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Verifier
// ---------------------------------------------------------------------------------------------

/// Digest policy. Validate with [`DigestConfig::validate`] when loading configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestConfig {
    /// Protection realm announced in challenges and required in credentials.
    pub realm: String,
    /// Algorithms offered, in challenge (preference) order, e.g. `[Sha256, Md5]`. A response
    /// using any other hash is rejected; `-sess` variants are accepted for listed hashes.
    pub algorithms: Vec<Algorithm>,
    /// How long a nonce stays usable, in seconds.
    pub nonce_lifetime_secs: u64,
    /// Bound on the replay table (see [`NonceCounts`]).
    pub max_tracked_nonces: usize,
    /// Require `qop`. When false, RFC 2069 qop-less responses are accepted, but they carry no
    /// nonce-count, so such a response can be replayed for as long as its nonce lives
    /// (bounded by `nonce_lifetime_secs` and the client-address binding). Keep it true unless
    /// legacy devices need otherwise.
    pub require_qop: bool,
}

impl Default for DigestConfig {
    fn default() -> Self {
        DigestConfig {
            realm: "gridedge".to_owned(),
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            nonce_lifetime_secs: 300,
            max_tracked_nonces: 100_000,
            require_qop: true,
        }
    }
}

/// A [`DigestConfig`] that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DigestConfigError {
    /// The realm is empty.
    #[error("digest realm is empty")]
    EmptyRealm,
    /// The realm contains control characters (which could not be sent in a quoted-string
    /// and would corrupt the challenge header).
    #[error("digest realm contains control characters")]
    RealmControlChars,
    /// No algorithm is offered, so nobody could authenticate.
    #[error("no digest algorithm configured")]
    NoAlgorithms,
    /// An algorithm is listed twice.
    #[error("digest algorithm {0} listed twice")]
    DuplicateAlgorithm(Algorithm),
    /// Nonce lifetime of zero.
    #[error("nonce lifetime must be positive")]
    ZeroLifetime,
    /// Replay table of size zero.
    #[error("max tracked nonces must be positive")]
    ZeroCapacity,
}

impl DigestConfig {
    /// Checks the configuration for values that would make authentication impossible or the
    /// challenge malformed.
    pub fn validate(&self) -> Result<(), DigestConfigError> {
        if self.realm.is_empty() {
            return Err(DigestConfigError::EmptyRealm);
        }
        if self.realm.chars().any(char::is_control) {
            return Err(DigestConfigError::RealmControlChars);
        }
        if self.algorithms.is_empty() {
            return Err(DigestConfigError::NoAlgorithms);
        }
        for (i, alg) in self.algorithms.iter().enumerate() {
            if self.algorithms[..i].contains(alg) {
                return Err(DigestConfigError::DuplicateAlgorithm(*alg));
            }
        }
        if self.nonce_lifetime_secs == 0 {
            return Err(DigestConfigError::ZeroLifetime);
        }
        if self.max_tracked_nonces == 0 {
            return Err(DigestConfigError::ZeroCapacity);
        }
        Ok(())
    }
}

/// Result of [`Verifier::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The credentials are valid and fresh.
    Authenticated {
        /// The username as sent.
        username: String,
    },
    /// The nonce is authentic but expired (or its replay history was lost): re-challenge
    /// with `stale=true`.
    Stale,
    /// Authentication failed; re-challenge (without `stale`).
    Rejected(RejectReason),
}

/// Why [`Verifier::verify`] rejected credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The `realm` is not ours.
    WrongRealm,
    /// The nonce is not one we issued to this client.
    BadNonce,
    /// Unknown user or wrong password: deliberately one variant, so callers cannot leak
    /// which usernames exist.
    UnknownUserOrBadPassword,
    /// Valid response with a nonce-count not above the last accepted one.
    Replay,
    /// No `qop` although the configuration requires it.
    QopRequired,
    /// The response uses a hash algorithm not in the configured list.
    AlgorithmNotOffered,
}

/// The registrar's digest authenticator: issues challenges and verifies credentials.
///
/// Owns the nonce key, the configuration and the replay table.
///
/// Replay history starts empty when a `Verifier` is created, yet with a persistent key nonces
/// issued by a previous process still verify. The first `now` seen by [`Self::challenge`] or
/// [`Self::verify`] therefore marks the start of known history; an untracked nonce issued
/// before it is answered `Stale`, so the client simply retries with a fresh nonce.
pub struct Verifier {
    cfg: DigestConfig,
    key: NonceKey,
    counts: NonceCounts,
    /// Per-algorithm HA1 used when the user is unknown, so the unknown-user path does exactly
    /// the same hashing as a wrong password. Derived from the key so it is unpredictable.
    dummy_ha1: [String; 3],
    /// First `now_unix` seen; see the type documentation.
    history_start: OnceLock<u64>,
}

fn alg_index(alg: Algorithm) -> usize {
    match alg {
        Algorithm::Md5 => 0,
        Algorithm::Sha256 => 1,
        Algorithm::Sha512_256 => 2,
    }
}

impl Verifier {
    /// Creates a verifier. `cfg` should have passed [`DigestConfig::validate`]; an invalid
    /// one does not panic, it just makes authentication fail.
    pub fn new(cfg: DigestConfig, key: NonceKey) -> Self {
        let mut mac = key.mac();
        mac.update(b"gridedge digest dummy HA1 v1");
        let seed = mac.finalize().into_bytes();
        let dummy_ha1 = [Algorithm::Md5, Algorithm::Sha256, Algorithm::Sha512_256]
            .map(|alg| alg.hash_hex(&[seed.as_slice()]));
        Verifier {
            counts: NonceCounts::new(cfg.max_tracked_nonces),
            cfg,
            key,
            dummy_ha1,
            history_start: OnceLock::new(),
        }
    }

    /// Replaces the configuration (live reload). The key and replay table are kept; the
    /// table is shrunk if the new bound is smaller.
    pub fn set_config(&mut self, cfg: DigestConfig) {
        self.counts.set_capacity(cfg.max_tracked_nonces);
        self.cfg = cfg;
    }

    /// The current configuration.
    pub fn config(&self) -> &DigestConfig {
        &self.cfg
    }

    /// Number of nonces in the replay table (for metrics).
    pub fn tracked_nonces(&self) -> usize {
        self.counts.len()
    }

    /// Drops replay entries for nonces that have outlived the nonce lifetime. Call
    /// periodically; the table is bounded regardless, but sweeping keeps eviction (and the
    /// `Stale` answers it causes) rare.
    pub fn sweep(&mut self, now_unix: u64) {
        self.counts
            .sweep(now_unix.saturating_sub(self.cfg.nonce_lifetime_secs));
    }

    /// One `WWW-Authenticate` / `Proxy-Authenticate` value per configured algorithm, in
    /// order, all carrying the same fresh nonce:
    /// `Digest realm="..", nonce="..", algorithm=SHA-256, qop="auth"` plus `, stale=true`
    /// when `stale`. No `opaque` is sent: the nonce is self-authenticating. Returns an empty
    /// list if no algorithm is configured (rejected by [`DigestConfig::validate`]).
    pub fn challenge(&self, now_unix: u64, client_ip: IpAddr, stale: bool) -> Vec<String> {
        self.history_start.get_or_init(|| now_unix);
        let nonce = issue_nonce(&self.key, now_unix, client_ip);
        let realm = quote(&self.cfg.realm);
        self.cfg
            .algorithms
            .iter()
            .map(|alg| {
                let mut h = format!(
                    "Digest realm={realm}, nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
                    alg.token()
                );
                if stale {
                    h.push_str(", stale=true");
                }
                h
            })
            .collect()
    }

    /// Verifies credentials for a request with `method` and `body` from `client_ip`.
    ///
    /// `lookup_ha1(username, algorithm)` returns the stored lowercase-hex
    /// `H(username:realm:password)` for that hash algorithm (for `-sess` responses the base
    /// hash is passed: the stored value is the same), or `None` for an unknown user. It is
    /// called at most once, only after the cheap checks (realm, algorithm, qop, nonce) pass,
    /// and is not called for `userhash` credentials, which this server never offers. Its own
    /// timing is the caller's responsibility.
    ///
    /// Guarantees: unknown users and wrong passwords do the same hashing and return the same
    /// [`RejectReason::UnknownUserOrBadPassword`]; the response is compared in constant time;
    /// `uri` is hashed exactly as sent; the replay table changes only after a successful
    /// verification with a fresh nonce-count. The caller must still check that `creds.uri`
    /// designates the Request-URI (RFC 7616 §3.4.6).
    pub fn verify(
        &mut self,
        creds: &DigestCredentials,
        method: &str,
        body: &[u8],
        client_ip: IpAddr,
        now_unix: u64,
        lookup_ha1: impl FnOnce(&str, Algorithm) -> Option<String>,
    ) -> AuthOutcome {
        let history_start = *self.history_start.get_or_init(|| now_unix);
        if creds.realm != self.cfg.realm {
            return AuthOutcome::Rejected(RejectReason::WrongRealm);
        }
        let alg = creds.algorithm;
        if !self.cfg.algorithms.contains(&alg) {
            return AuthOutcome::Rejected(RejectReason::AlgorithmNotOffered);
        }
        // Parsing guarantees qop => (nc, cnonce), and -sess => qop; the match re-checks it so
        // a hand-built `DigestCredentials` cannot slip past replay protection.
        let qop = match (creds.qop, creds.nc, creds.cnonce.as_deref()) {
            (Some(q), Some(nc), Some(cnonce)) => Some((q, nc, cnonce)),
            (None, _, _) if self.cfg.require_qop || creds.session => {
                return AuthOutcome::Rejected(RejectReason::QopRequired)
            }
            (None, _, _) => None,
            (Some(_), _, _) => return AuthOutcome::Rejected(RejectReason::QopRequired),
        };
        let issued_at = match check_nonce(
            &self.key,
            &creds.nonce,
            now_unix,
            client_ip,
            self.cfg.nonce_lifetime_secs,
        ) {
            NonceCheck::Valid { issued_at } => issued_at,
            NonceCheck::Stale => return AuthOutcome::Stale,
            NonceCheck::Invalid => return AuthOutcome::Rejected(RejectReason::BadNonce),
        };
        if qop.is_some() {
            let untracked = self.counts.last(&creds.nonce).is_none();
            if self.counts.history_lost(&creds.nonce, issued_at)
                || (untracked && issued_at < history_start)
            {
                return AuthOutcome::Stale;
            }
        }

        let stored = if creds.userhash {
            None
        } else {
            lookup_ha1(&creds.username, alg)
        };
        let dummy = &self.dummy_ha1[alg_index(alg)];
        let (ha1, known) = match stored {
            Some(h) if h.len() == alg.hex_len() && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                (h.to_ascii_lowercase(), Choice::from(1))
            }
            // Unknown user, or a malformed stored value: same work, guaranteed failure.
            _ => (dummy.clone(), Choice::from(0)),
        };
        let ha1 = match (creds.session, qop) {
            (true, Some((_, _, cnonce))) => session_ha1_hex(alg, &ha1, &creds.nonce, cnonce),
            _ => ha1,
        };
        let expected = compute_response(alg, &ha1, method, &creds.uri, &creds.nonce, qop, body);
        let given = creds.response.to_ascii_lowercase();
        // `ct_eq` on slices exits early only on a length mismatch, which reveals nothing but
        // the (public) digest length.
        let ok = expected.as_bytes().ct_eq(given.as_bytes()) & known;
        if !bool::from(ok) {
            return AuthOutcome::Rejected(RejectReason::UnknownUserOrBadPassword);
        }

        if let Some((_, nc, _)) = qop {
            if !self.counts.check(&creds.nonce, nc) {
                return AuthOutcome::Rejected(RejectReason::Replay);
            }
            self.counts.commit(&creds.nonce, nc, issued_at);
        }
        AuthOutcome::Authenticated {
            username: creds.username.clone(),
        }
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("cfg", &self.cfg)
            .field("key", &self.key)
            .field("tracked_nonces", &self.counts.len())
            .field("history_start", &self.history_start.get())
            .finish_non_exhaustive()
    }
}

/// Renders `s` as a quoted-string. Control characters cannot be carried by a quoted-string
/// (CR/LF would even split the header), so they are dropped; [`DigestConfig::validate`]
/// rejects such realms up front.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::Cell;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const REALM: &str = "sip.example.com";
    const T0: u64 = 1_700_000_000;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn rfc7616_response(alg: Algorithm) -> String {
        let ha1 = ha1_hex(alg, "Mufasa", "http-auth@example.org", "Circle of Life");
        compute_response(
            alg,
            &ha1,
            "GET",
            "/dir/index.html",
            RFC7616_NONCE,
            Some((Qop::Auth, 1, RFC7616_CNONCE)),
            b"",
        )
    }

    #[test]
    fn rfc7616_md5_vector() {
        assert_eq!(
            rfc7616_response(Algorithm::Md5),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
    }

    #[test]
    fn rfc7616_sha256_vector() {
        assert_eq!(
            rfc7616_response(Algorithm::Sha256),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn rfc7616_header_parses_and_matches() {
        // The §3.9.1 request header, folded across lines as printed in the RFC.
        let header = "Digest username=\"Mufasa\",\r\n       realm=\"http-auth@example.org\",\r\n       uri=\"/dir/index.html\",\r\n       algorithm=SHA-256,\r\n       nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\",\r\n       nc=00000001,\r\n       cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\",\r\n       qop=auth,\r\n       response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\",\r\n       opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";
        let c = DigestCredentials::parse(header).expect("RFC example parses");
        assert_eq!(c.username, "Mufasa");
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert!(!c.session);
        assert_eq!(c.qop, Some(Qop::Auth));
        assert_eq!(c.nc, Some(1));
        assert_eq!(
            c.opaque.as_deref(),
            Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
        );
        assert_eq!(c.response, rfc7616_response(Algorithm::Sha256));
    }

    #[test]
    fn rfc2617_vector() {
        let ha1 = ha1_hex(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        let got = compute_response(
            Algorithm::Md5,
            &ha1,
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some((Qop::Auth, 1, "0a4f113b")),
            b"",
        );
        assert_eq!(got, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn sha512_256_is_the_fips_truncated_variant() {
        // FIPS 180-4 / NIST example: SHA-512/256("abc"). RFC 7616 §3.9.2's own example values
        // are not used: they are the subject of erratum 4897 and do not reproduce.
        assert_eq!(
            Algorithm::Sha512_256.hash_hex(&[b"abc"]),
            "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
        );
    }

    #[test]
    fn rfc2069_response_without_qop() {
        // H(HA1:nonce:HA2), checked against an independent composition of the hashes.
        let alg = Algorithm::Md5;
        let ha1 = ha1_hex(alg, "u", "r", "p");
        let ha2 = alg.hash_hex(&[b"REGISTER", b"sip:r"]);
        let want = alg.hash_hex(&[ha1.as_bytes(), b"n", ha2.as_bytes()]);
        assert_eq!(
            compute_response(alg, &ha1, "REGISTER", "sip:r", "n", None, b""),
            want
        );
    }

    #[test]
    fn auth_int_hashes_the_body_and_nc_is_lowercase_hex() {
        let alg = Algorithm::Sha256;
        let ha1 = ha1_hex(alg, "u", "r", "p");
        let body_hash = alg.hash_hex(&[b"v=0"]);
        let ha2 = alg.hash_hex(&[b"INVITE", b"sip:x", body_hash.as_bytes()]);
        let want = alg.hash_hex(&[
            ha1.as_bytes(),
            b"n",
            b"0000abcd",
            b"c",
            b"auth-int",
            ha2.as_bytes(),
        ]);
        let got = compute_response(
            alg,
            &ha1,
            "INVITE",
            "sip:x",
            "n",
            Some((Qop::AuthInt, 0xabcd, "c")),
            b"v=0",
        );
        assert_eq!(got, want);
        let other_body = compute_response(
            alg,
            &ha1,
            "INVITE",
            "sip:x",
            "n",
            Some((Qop::AuthInt, 0xabcd, "c")),
            b"v=1",
        );
        assert_ne!(got, other_body);
    }

    #[test]
    fn session_ha1_is_hex_chained() {
        let alg = Algorithm::Md5;
        let ha1 = ha1_hex(alg, "u", "r", "p");
        let want = alg.hash_hex(&[ha1.as_bytes(), b"n", b"c"]);
        assert_eq!(session_ha1_hex(alg, &ha1, "n", "c"), want);
        assert_eq!(ha1.len(), 32);
        assert_eq!(ha1_hex(Algorithm::Sha512_256, "u", "r", "p").len(), 64);
    }

    // ---------------------------------------------------------------- parsing

    fn header(extra: &str) -> String {
        format!(
            "Digest username=\"alice\", realm=\"{REALM}\", nonce=\"abc\", uri=\"sip:{REALM}\", response=\"00\"{extra}"
        )
    }

    #[test]
    fn parse_minimal_defaults_to_md5_without_qop() {
        let c = DigestCredentials::parse(&header("")).unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.realm, REALM);
        assert_eq!(c.nonce, "abc");
        assert_eq!(c.uri, "sip:sip.example.com");
        assert_eq!(c.response, "00");
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert!(!c.session);
        assert_eq!(c.qop, None);
        assert_eq!(c.nc, None);
        assert_eq!(c.cnonce, None);
        assert!(!c.userhash);
    }

    #[test]
    fn parse_nc_is_hexadecimal() {
        let c = DigestCredentials::parse(&header(", qop=auth, nc=0000000a, cnonce=\"x\"")).unwrap();
        assert_eq!(c.nc, Some(10));
        let c = DigestCredentials::parse(&header(", qop=auth, nc=00000100, cnonce=\"x\"")).unwrap();
        assert_eq!(c.nc, Some(256));
        let c = DigestCredentials::parse(&header(", qop=auth, nc=ffffffff, cnonce=\"x\"")).unwrap();
        assert_eq!(c.nc, Some(u32::MAX));
        for bad in [
            "0000001",
            "000000001",
            "0000000g",
            "+0000001",
            "0x000001",
            "\"\"",
        ] {
            let h = header(&format!(", qop=auth, nc={bad}, cnonce=\"x\""));
            assert!(
                matches!(
                    DigestCredentials::parse(&h),
                    Err(DigestError::InvalidNonceCount) | Err(DigestError::Syntax(_))
                ),
                "nc={bad} accepted"
            );
        }
    }

    #[test]
    fn parse_algorithms() {
        let cases = [
            ("MD5", Algorithm::Md5, false),
            ("md5", Algorithm::Md5, false),
            ("MD5-sess", Algorithm::Md5, true),
            ("SHA-256", Algorithm::Sha256, false),
            ("sha-256-SESS", Algorithm::Sha256, true),
            ("SHA-512-256", Algorithm::Sha512_256, false),
            ("\"SHA-512-256\"", Algorithm::Sha512_256, false),
            ("SHA-512-256-sess", Algorithm::Sha512_256, true),
        ];
        for (tok, alg, sess) in cases {
            let c = DigestCredentials::parse(&header(&format!(
                ", algorithm={tok}, qop=auth, nc=00000001, cnonce=\"c\""
            )))
            .unwrap();
            assert_eq!((c.algorithm, c.session), (alg, sess), "{tok}");
        }
        for bad in [
            "SHA-1",
            "MD5-sess-sess",
            "-sess",
            "SHA256",
            "\u{e9}\u{e9}\u{e9}",
        ] {
            assert_eq!(
                DigestCredentials::parse(&header(&format!(", algorithm={bad}"))),
                Err(DigestError::UnsupportedAlgorithm),
                "{bad}"
            );
        }
    }

    #[test]
    fn algorithm_tokens_round_trip() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::parse(alg.token()), Some((alg, false)));
            assert_eq!(Algorithm::parse(alg.session_token()), Some((alg, true)));
            assert_eq!(alg.token().parse::<Algorithm>(), Ok(alg));
            assert!(alg.session_token().parse::<Algorithm>().is_err());
        }
    }

    #[test]
    fn parse_scheme_case_insensitive_and_whitespace() {
        let c = DigestCredentials::parse(
            "  digest   username = \"bob\" ,realm=\"r\",nonce=n ,  uri=\"sip:r\",response=ab",
        )
        .unwrap();
        assert_eq!(c.username, "bob");
        assert_eq!(c.nonce, "n");
        assert_eq!(c.response, "ab");
        assert!(DigestCredentials::parse(
            "DIGEST username=\"b\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"r\""
        )
        .is_ok());
        assert_eq!(
            DigestCredentials::parse("Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
            Err(DigestError::NotDigest)
        );
        assert_eq!(
            DigestCredentials::parse("Digestusername=\"b\""),
            Err(DigestError::NotDigest)
        );
        assert_eq!(DigestCredentials::parse(""), Err(DigestError::NotDigest));
    }

    #[test]
    fn parse_quoted_strings_with_escapes_and_commas() {
        let c = DigestCredentials::parse(
            r#"Digest username="al\"ice, the \\ great", realm="a,b", nonce="n", uri="sip:u", response="r", opaque="x=y, z""#,
        )
        .unwrap();
        assert_eq!(c.username, "al\"ice, the \\ great");
        assert_eq!(c.realm, "a,b");
        assert_eq!(c.opaque.as_deref(), Some("x=y, z"));
    }

    #[test]
    fn parse_keeps_uri_verbatim() {
        let c = DigestCredentials::parse(&format!(
            "Digest username=\"a\", realm=\"{REALM}\", nonce=\"n\", uri=\"sip:example.com;transport=tls\", response=\"r\", qop=auth, nc=00000001, cnonce=\"c\""
        ))
        .unwrap();
        assert_eq!(c.uri, "sip:example.com;transport=tls");
    }

    #[test]
    fn parse_username_ext_value() {
        let c = DigestCredentials::parse(
            "Digest username*=UTF-8''J%C3%A4s%C3%B8n%20Doe, realm=\"r\", nonce=\"n\", uri=\"u\", response=\"r\"",
        )
        .unwrap();
        assert_eq!(c.username, "J\u{e4}s\u{f8}n Doe");
        for bad in [
            "Digest username*=ISO-8859-1''J%E4, realm=\"r\", nonce=\"n\", uri=\"u\", response=\"r\"",
            "Digest username*=UTF-8''%C3, realm=\"r\", nonce=\"n\", uri=\"u\", response=\"r\"",
            "Digest username*=UTF-8''%zz, realm=\"r\", nonce=\"n\", uri=\"u\", response=\"r\"",
            "Digest username*=nope, realm=\"r\", nonce=\"n\", uri=\"u\", response=\"r\"",
        ] {
            assert_eq!(
                DigestCredentials::parse(bad),
                Err(DigestError::InvalidParam("username*")),
                "{bad}"
            );
        }
        assert_eq!(
            DigestCredentials::parse(
                "Digest username=\"a\", username*=UTF-8''a, realm=\"r\", nonce=\"n\", uri=\"u\", response=\"r\""
            ),
            Err(DigestError::UnexpectedParam("username*"))
        );
    }

    #[test]
    fn parse_userhash() {
        let c = DigestCredentials::parse(&header(", userhash=true")).unwrap();
        assert!(c.userhash);
        let c = DigestCredentials::parse(&header(", userhash=\"FALSE\"")).unwrap();
        assert!(!c.userhash);
        assert_eq!(
            DigestCredentials::parse(&header(", userhash=yes")),
            Err(DigestError::InvalidParam("userhash"))
        );
    }

    #[test]
    fn parse_rejects_duplicates() {
        assert_eq!(
            DigestCredentials::parse(&header(", realm=\"other\"")),
            Err(DigestError::DuplicateParam("realm".into()))
        );
        // Case-insensitive names.
        assert_eq!(
            DigestCredentials::parse(&header(", NONCE=\"x\"")),
            Err(DigestError::DuplicateParam("nonce".into()))
        );
        // Unknown parameters are ignored, but not repeated.
        assert!(DigestCredentials::parse(&header(", foo=1")).is_ok());
        assert_eq!(
            DigestCredentials::parse(&header(", foo=1, Foo=2")),
            Err(DigestError::DuplicateParam("foo".into()))
        );
    }

    #[test]
    fn parse_rejects_missing_mandatory() {
        let full = [
            ("username", "username=\"a\""),
            ("realm", "realm=\"r\""),
            ("nonce", "nonce=\"n\""),
            ("uri", "uri=\"u\""),
            ("response", "response=\"x\""),
        ];
        for (missing, _) in full {
            let params: Vec<&str> = full
                .iter()
                .filter(|(n, _)| *n != missing)
                .map(|(_, p)| *p)
                .collect();
            let h = format!("Digest {}", params.join(", "));
            assert_eq!(
                DigestCredentials::parse(&h),
                Err(DigestError::MissingParam(missing)),
                "{h}"
            );
        }
        assert_eq!(
            DigestCredentials::parse("Digest"),
            Err(DigestError::MissingParam("username"))
        );
    }

    #[test]
    fn parse_enforces_qop_dependencies() {
        assert_eq!(
            DigestCredentials::parse(&header(", qop=auth, nc=00000001")),
            Err(DigestError::MissingParam("cnonce"))
        );
        assert_eq!(
            DigestCredentials::parse(&header(", qop=auth, cnonce=\"c\"")),
            Err(DigestError::MissingParam("nc"))
        );
        assert_eq!(
            DigestCredentials::parse(&header(", cnonce=\"c\"")),
            Err(DigestError::UnexpectedParam("cnonce"))
        );
        assert_eq!(
            DigestCredentials::parse(&header(", nc=00000001")),
            Err(DigestError::UnexpectedParam("nc"))
        );
        assert_eq!(
            DigestCredentials::parse(&header(", algorithm=MD5-sess")),
            Err(DigestError::MissingParam("qop"))
        );
        assert_eq!(
            DigestCredentials::parse(&header(", qop=auth-conf, nc=00000001, cnonce=\"c\"")),
            Err(DigestError::UnsupportedQop)
        );
        let c = DigestCredentials::parse(&header(", qop=\"AUTH-INT\", nc=00000001, cnonce=\"c\""))
            .unwrap();
        assert_eq!(c.qop, Some(Qop::AuthInt));
    }

    #[test]
    fn parse_rejects_syntax_errors() {
        for bad in [
            "Digest username=\"unterminated",
            "Digest username=\"a\\",
            "Digest username",
            "Digest =\"a\"",
            "Digest username=\"a\" realm=\"r\"",
            "Digest username=, realm=\"r\"",
            "Digest username=a\"b\"",
            "Digest user name=\"a\"",
        ] {
            assert!(
                matches!(DigestCredentials::parse(bad), Err(DigestError::Syntax(_))),
                "{bad:?} -> {:?}",
                DigestCredentials::parse(bad)
            );
        }
        // Empty list elements are allowed by the #rule.
        assert!(DigestCredentials::parse(&format!("{},, ,", header(""))).is_ok());
    }

    #[test]
    fn parse_bounds_parameter_count() {
        let mut h = header("");
        for i in 0..MAX_PARAMS {
            h.push_str(&format!(", x{i}=1"));
        }
        assert_eq!(
            DigestCredentials::parse(&h),
            Err(DigestError::TooManyParams)
        );
    }

    #[test]
    fn debug_redacts_response() {
        let c = DigestCredentials::parse(
            "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"deadbeefcafe\"",
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("deadbeefcafe"), "{dbg}");
        assert!(dbg.contains("redacted"));
    }

    // ---------------------------------------------------------------- nonces

    fn key() -> NonceKey {
        NonceKey::from_bytes([0x42; 32])
    }

    #[test]
    fn nonce_round_trip() {
        let k = key();
        let n = issue_nonce(&k, T0, ip(1));
        assert_eq!(n.len(), NONCE_B64_LEN);
        assert!(n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(
            check_nonce(&k, &n, T0 + 10, ip(1), 300),
            NonceCheck::Valid { issued_at: T0 }
        );
        assert_eq!(
            check_nonce(&k, &n, T0 + 300, ip(1), 300),
            NonceCheck::Valid { issued_at: T0 }
        );
        // Two nonces issued in the same second differ.
        assert_ne!(n, issue_nonce(&k, T0, ip(1)));
    }

    #[test]
    fn nonce_stale_after_lifetime_or_far_future() {
        let k = key();
        let n = issue_nonce(&k, T0, ip(1));
        assert_eq!(check_nonce(&k, &n, T0 + 301, ip(1), 300), NonceCheck::Stale);
        assert_eq!(
            check_nonce(&k, &n, T0 - NONCE_FUTURE_SKEW_SECS, ip(1), 300),
            NonceCheck::Valid { issued_at: T0 }
        );
        assert_eq!(
            check_nonce(&k, &n, T0 - NONCE_FUTURE_SKEW_SECS - 1, ip(1), 300),
            NonceCheck::Stale
        );
    }

    #[test]
    fn nonce_tampered_bit_is_invalid() {
        let k = key();
        let n = issue_nonce(&k, T0, ip(1));
        let mut raw = URL_SAFE_NO_PAD.decode(&n).unwrap();
        raw[3] ^= 0x01; // inside issued_at
        let tampered = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(
            check_nonce(&k, &tampered, T0, ip(1), 300),
            NonceCheck::Invalid
        );
    }

    #[test]
    fn nonce_from_other_ip_or_key_is_invalid() {
        let k = key();
        let n = issue_nonce(&k, T0, ip(1));
        assert_eq!(check_nonce(&k, &n, T0, ip(2), 300), NonceCheck::Invalid);
        assert_eq!(
            check_nonce(&k, &n, T0, IpAddr::V6(Ipv6Addr::LOCALHOST), 300),
            NonceCheck::Invalid
        );
        let other = NonceKey::from_bytes([0x43; 32]);
        assert_eq!(check_nonce(&other, &n, T0, ip(1), 300), NonceCheck::Invalid);
    }

    #[test]
    fn nonce_ipv4_mapped_address_is_the_same_client() {
        let k = key();
        let v4 = Ipv4Addr::new(198, 51, 100, 7);
        let n = issue_nonce(&k, T0, IpAddr::V4(v4));
        assert_eq!(
            check_nonce(&k, &n, T0, IpAddr::V6(v4.to_ipv6_mapped()), 300),
            NonceCheck::Valid { issued_at: T0 }
        );
    }

    #[test]
    fn nonce_garbage_is_invalid() {
        let k = key();
        let n = issue_nonce(&k, T0, ip(1));
        for g in [
            "",
            "abc",
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            &"A".repeat(NONCE_B64_LEN),
            &format!("{n}="),
            &format!("{n}A"),
            &n[1..],
            &format!("{}\u{e9}", "A".repeat(41)),
        ] {
            assert_eq!(
                check_nonce(&k, g, T0, ip(1), 300),
                NonceCheck::Invalid,
                "{g:?}"
            );
        }
    }

    #[test]
    fn nonce_key_padding_matches_plain_hmac() {
        // The zero-padded-block keying must equal ordinary HMAC keyed with the 32 bytes.
        let k = key();
        let mut a = k.mac();
        a.update(b"x");
        let mut b = <HmacSha256 as KeyInit>::new_from_slice(&[0x42; 32]).unwrap();
        b.update(b"x");
        assert_eq!(a.finalize().into_bytes(), b.finalize().into_bytes());
    }

    #[test]
    fn nonce_key_debug_and_derivation() {
        let k = NonceKey::from_bytes([0xab; 32]);
        let dbg = format!("{k:?}");
        assert!(!dbg.contains("171") && !dbg.to_lowercase().contains("ab, ab"));
        assert_eq!(dbg, "NonceKey(<redacted>)");
        assert_eq!(NonceKey::from_secret(b"s").0, NonceKey::from_secret(b"s").0);
        assert_ne!(NonceKey::from_secret(b"s").0, NonceKey::from_secret(b"t").0);
        assert_ne!(NonceKey::generate().0, NonceKey::generate().0);
        assert!(NonceKey::try_generate().is_ok());
    }

    // ---------------------------------------------------------------- nonce counts

    #[test]
    fn nonce_counts_check_and_commit() {
        let mut t = NonceCounts::new(4);
        assert!(!t.check("a", 0), "nc 0 is never fresh");
        assert!(t.check("a", 1));
        t.commit("a", 1, T0);
        assert!(!t.check("a", 1));
        assert!(t.check("a", 2));
        t.commit("a", 5, T0);
        t.commit("a", 3, T0); // never moves backwards
        assert_eq!(t.last("a"), Some(5));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn nonce_counts_evict_oldest_issue_first() {
        let mut t = NonceCounts::new(2);
        t.commit("new", 1, T0 + 10);
        t.commit("old", 1, T0);
        t.commit("mid", 1, T0 + 5);
        assert_eq!(t.len(), 2);
        assert_eq!(t.last("old"), None);
        assert_eq!(t.last("mid"), Some(1));
        assert_eq!(t.last("new"), Some(1));
        assert!(t.history_lost("old", T0));
        assert!(t.history_lost("other", T0));
        assert!(!t.history_lost("other", T0 + 1));
        assert!(!t.history_lost("mid", T0 + 5));
    }

    #[test]
    fn nonce_counts_sweep() {
        let mut t = NonceCounts::new(10);
        t.commit("a", 1, T0);
        t.commit("b", 1, T0 + 100);
        t.sweep(T0 + 50);
        assert_eq!(t.len(), 1);
        assert_eq!(t.last("a"), None);
        assert_eq!(t.last("b"), Some(1));
        assert!(t.history_lost("a", T0));
        assert!(t.history_lost("z", T0 + 49));
        assert!(!t.history_lost("z", T0 + 50));
        t.set_capacity(0);
        assert_eq!(t.capacity(), 1);
        assert_eq!(t.len(), 1);
    }

    // ---------------------------------------------------------------- verifier

    fn cfg(algorithms: Vec<Algorithm>) -> DigestConfig {
        DigestConfig {
            realm: REALM.to_owned(),
            algorithms,
            nonce_lifetime_secs: 300,
            max_tracked_nonces: 1000,
            require_qop: true,
        }
    }

    fn verifier() -> Verifier {
        Verifier::new(
            cfg(vec![
                Algorithm::Sha256,
                Algorithm::Md5,
                Algorithm::Sha512_256,
            ]),
            key(),
        )
    }

    /// Pulls the nonce out of a challenge header, as a client would.
    fn challenge_nonce(v: &Verifier, now: u64, client: IpAddr) -> String {
        let ch = v.challenge(now, client, false);
        let h = ch.first().expect("one challenge");
        let c = h.split("nonce=\"").nth(1).unwrap();
        c[..c.find('"').unwrap()].to_owned()
    }

    struct Client<'a> {
        user: &'a str,
        password: &'a str,
        alg: Algorithm,
        session: bool,
        qop: Option<Qop>,
        uri: &'a str,
    }

    impl Client<'_> {
        fn new(alg: Algorithm) -> Self {
            Client {
                user: "alice",
                password: "wonderland",
                alg,
                session: false,
                qop: Some(Qop::Auth),
                uri: "sip:sip.example.com",
            }
        }

        /// Builds the header a UA would send and parses it, so tests go through the parser.
        fn creds(&self, nonce: &str, nc: u32, method: &str, body: &[u8]) -> DigestCredentials {
            let cnonce = "0a4f113b";
            let mut ha1 = ha1_hex(self.alg, self.user, REALM, self.password);
            if self.session {
                ha1 = session_ha1_hex(self.alg, &ha1, nonce, cnonce);
            }
            let resp = compute_response(
                self.alg,
                &ha1,
                method,
                self.uri,
                nonce,
                self.qop.map(|q| (q, nc, cnonce)),
                body,
            );
            let alg = if self.session {
                self.alg.session_token()
            } else {
                self.alg.token()
            };
            let mut h = format!(
                "Digest username=\"{}\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{}\", response=\"{resp}\", algorithm={alg}",
                self.user, self.uri
            );
            if let Some(q) = self.qop {
                h.push_str(&format!(
                    ", qop={}, nc={nc:08x}, cnonce=\"{cnonce}\"",
                    q.token()
                ));
            }
            DigestCredentials::parse(&h).unwrap()
        }
    }

    fn store(user: &str, alg: Algorithm) -> Option<String> {
        (user == "alice").then(|| ha1_hex(alg, "alice", REALM, "wonderland"))
    }

    #[test]
    fn verifier_accepts_valid_credentials_for_each_algorithm() {
        for alg in Algorithm::ALL {
            for session in [false, true] {
                let mut v = verifier();
                let n = challenge_nonce(&v, T0, ip(1));
                let mut c = Client::new(alg);
                c.session = session;
                let creds = c.creds(&n, 1, "REGISTER", b"");
                let seen = Cell::new(None);
                let out = v.verify(&creds, "REGISTER", b"", ip(1), T0 + 1, |u, a| {
                    seen.set(Some(a));
                    store(u, a)
                });
                assert_eq!(
                    out,
                    AuthOutcome::Authenticated {
                        username: "alice".into()
                    },
                    "{alg} session={session}"
                );
                assert_eq!(seen.get(), Some(alg), "lookup gets the base hash");
                assert_eq!(v.tracked_nonces(), 1);
            }
        }
    }

    #[test]
    fn verifier_auth_int_and_method_binding() {
        let mut v = verifier();
        let n = challenge_nonce(&v, T0, ip(1));
        let mut c = Client::new(Algorithm::Sha256);
        c.qop = Some(Qop::AuthInt);
        let creds = c.creds(&n, 1, "REGISTER", b"body");
        assert_eq!(
            v.verify(&creds, "REGISTER", b"other", ip(1), T0, store),
            AuthOutcome::Rejected(RejectReason::UnknownUserOrBadPassword)
        );
        assert_eq!(
            v.verify(&creds, "INVITE", b"body", ip(1), T0, store),
            AuthOutcome::Rejected(RejectReason::UnknownUserOrBadPassword)
        );
        assert!(matches!(
            v.verify(&creds, "REGISTER", b"body", ip(1), T0, store),
            AuthOutcome::Authenticated { .. }
        ));
    }

    #[test]
    fn verifier_hashes_uri_exactly_as_sent() {
        let mut v = verifier();
        let n = challenge_nonce(&v, T0, ip(1));
        let mut c = Client::new(Algorithm::Md5);
        c.uri = "sip:example.com;transport=tls";
        let good = c.creds(&n, 1, "REGISTER", b"");
        assert_eq!(good.uri, "sip:example.com;transport=tls");
        // A response computed over a differently-cased (semantically equal) URI, sent with
        // the original URI string, must fail: nothing may normalise the URI before hashing.
        c.uri = "sip:example.com;transport=TLS";
        let mut bad = c.creds(&n, 2, "REGISTER", b"");
        bad.uri = good.uri.clone();
        assert_eq!(
            v.verify(&bad, "REGISTER", b"", ip(1), T0, store),
            AuthOutcome::Rejected(RejectReason::UnknownUserOrBadPassword)
        );
        assert!(matches!(
            v.verify(&good, "REGISTER", b"", ip(1), T0, store),
            AuthOutcome::Authenticated { .. }
        ));
    }

    #[test]
    fn verifier_unknown_user_is_indistinguishable_from_bad_password() {
        let mut v = verifier();
        let n = challenge_nonce(&v, T0, ip(1));
        let mut wrong = Client::new(Algorithm::Sha256);
        wrong.password = "guess";
        let mut unknown = Client::new(Algorithm::Sha256);
        unknown.user = "mallory";
        let calls = Cell::new(0);
        let lookup = |u: &str, a| {
            calls.set(calls.get() + 1);
            store(u, a)
        };
        let a = v.verify(
            &wrong.creds(&n, 1, "REGISTER", b""),
            "REGISTER",
            b"",
            ip(1),
            T0,
            lookup,
        );
        let b = v.verify(
            &unknown.creds(&n, 1, "REGISTER", b""),
            "REGISTER",
            b"",
            ip(1),
            T0,
            lookup,
        );
        assert_eq!(
            a,
            AuthOutcome::Rejected(RejectReason::UnknownUserOrBadPassword)
        );
        assert_eq!(a, b);
        assert_eq!(calls.get(), 2, "both paths consult the store");
        assert_eq!(v.tracked_nonces(), 0);
    }

    #[test]
    fn verifier_unknown_user_cannot_match_the_dummy() {
        // Even a response computed over the dummy HA1 must not authenticate a missing user.
        let mut v = verifier();
        let n = challenge_nonce(&v, T0, ip(1));
        let alg = Algorithm::Md5;
        let dummy = v.dummy_ha1[alg_index(alg)].clone();
        let mut creds = Client::new(alg).creds(&n, 1, "REGISTER", b"");
        creds.username = "ghost".into();
        creds.response = compute_response(
            alg,
            &dummy,
            "REGISTER",
            &creds.uri,
            &n,
            Some((Qop::Auth, 1, "0a4f113b")),
            b"",
        );
        assert_eq!(
            v.verify(&creds, "REGISTER", b"", ip(1), T0, |_, _| None),
            AuthOutcome::Rejected(RejectReason::UnknownUserOrBadPassword)
        );
    }

    #[test]
    fn verifier_rejects_malformed_stored_ha1() {
        let mut v = verifier();
        let n = challenge_nonce(&v, T0, ip(1));
        let creds = Client::new(Algorithm::Sha256).creds(&n, 1, "REGISTER", b"");
        // An MD5-length HA1 for a SHA-256 response is a store bug; it must fail closed.
        assert_eq!(
            v.verify(&creds, "REGISTER", b"", ip(1), T0, |u, _| store(
                u,
                Algorithm::Md5
            )),
            AuthOutcome::Rejected(RejectReason::UnknownUserOrBadPassword)
        );
        // Upper-case hex from the store is tolerated.
        assert!(matches!(
            v.verify(&creds, "REGISTER", b"", ip(1), T0, |u, a| store(u, a)
                .map(|h| h.to_ascii_uppercase())),
            AuthOutcome::Authenticated { .. }
        ));
    }

    #[test]
    fn verifier_replay_rejected_without_state_change() {
        let mut v = verifier();
        let n = challenge_nonce(&v, T0, ip(1));
        let c = Client::new(Algorithm::Md5);
        let first = c.creds(&n, 5, "REGISTER", b"");
        assert!(matches!(
            v.verify(&first, "REGISTER", b"", ip(1), T0, store),
            AuthOutcome::Authenticated { .. }
        ));
        assert_eq!(v.counts.last(&n), Some(5));
        for nc in [5, 4, 1] {
            let again = c.creds(&n, nc, "REGISTER", b"");
            assert_eq!(
                v.verify(&again, "REGISTER", b"", ip(1), T0 + 1, store),
                AuthOutcome::Rejected(RejectReason::Replay),
                "nc={nc}"
            );
            assert_eq!(v.counts.last(&n), Some(5));
            assert_eq!(v.tracked_nonces(), 1);
        }
        let next = c.creds(&n, 6, "REGISTER", b"");
        assert!(matches!(
            v.verify(&next, "REGISTER", b"", ip(1), T0 + 2, store),
            AuthOutcome::Authenticated { .. }
        ));
        assert_eq!(v.counts.last(&n), Some(6));
    }

    #[test]
    fn verifier_bad_response_does_not_commit_nc() {
        let mut v = verifier();
        let n = challenge_nonce(&v, T0, ip(1));
        let mut attacker = Client::new(Algorithm::Md5);
        attacker.password = "nope";
        // An attacker burning nc=1000 with a bad digest must not block the real client's nc=1.
        let out = v.verify(
            &attacker.creds(&n, 1000, "REGISTER", b""),
            "REGISTER",
            b"",
            ip(1),
            T0,
            store,
        );
        assert_eq!(
            out,
            AuthOutcome::Rejected(RejectReason::UnknownUserOrBadPassword)
        );
        assert_eq!(v.counts.last(&n), None);
        assert_eq!(v.tracked_nonces(), 0);
        let real = Client::new(Algorithm::Md5).creds(&n, 1, "REGISTER", b"");
        assert!(matches!(
            v.verify(&real, "REGISTER", b"", ip(1), T0, store),
            AuthOutcome::Authenticated { .. }
        ));
    }

    #[test]
    fn verifier_qop_less_responses() {
        let mut v = verifier();
        let n = challenge_nonce(&v, T0, ip(1));
        let mut c = Client::new(Algorithm::Md5);
        c.qop = None;
        let creds = c.creds(&n, 0, "REGISTER", b"");
        assert_eq!(
            v.verify(&creds, "REGISTER", b"", ip(1), T0, store),
            AuthOutcome::Rejected(RejectReason::QopRequired)
        );
        let mut relaxed = cfg(vec![Algorithm::Md5]);
        relaxed.require_qop = false;
        v.set_config(relaxed);
        assert!(matches!(
            v.verify(&creds, "REGISTER", b"", ip(1), T0, store),
            AuthOutcome::Authenticated { .. }
        ));
        // No nonce-count, so nothing is tracked (documented: no replay protection).
        assert_eq!(v.tracked_nonces(), 0);
        // A hand-built -sess credential without qop cannot sneak through.
        let mut sess = creds.clone();
        sess.session = true;
        assert_eq!(
            v.verify(&sess, "REGISTER", b"", ip(1), T0, store),
            AuthOutcome::Rejected(RejectReason::QopRequired)
        );
    }

    #[test]
    fn verifier_policy_rejections() {
        let mut v = Verifier::new(cfg(vec![Algorithm::Sha256]), key());
        let n = challenge_nonce(&v, T0, ip(1));
        let md5 = Client::new(Algorithm::Md5).creds(&n, 1, "REGISTER", b"");
        assert_eq!(
            v.verify(&md5, "REGISTER", b"", ip(1), T0, store),
            AuthOutcome::Rejected(RejectReason::AlgorithmNotOffered)
        );
        let mut other_realm = Client::new(Algorithm::Sha256).creds(&n, 1, "REGISTER", b"");
        other_realm.realm = "evil.example.com".into();
        assert_eq!(
            v.verify(&other_realm, "REGISTER", b"", ip(1), T0, store),
            AuthOutcome::Rejected(RejectReason::WrongRealm)
        );
        let good = Client::new(Algorithm::Sha256).creds(&n, 1, "REGISTER", b"");
        assert_eq!(
            v.verify(&good, "REGISTER", b"", ip(2), T0, store),
            AuthOutcome::Rejected(RejectReason::BadNonce)
        );
        let forged = Client::new(Algorithm::Sha256).creds(RFC7616_NONCE, 1, "REGISTER", b"");
        assert_eq!(
            v.verify(&forged, "REGISTER", b"", ip(1), T0, store),
            AuthOutcome::Rejected(RejectReason::BadNonce)
        );
        let mut hashed = good.clone();
        hashed.userhash = true;
        assert_eq!(
            v.verify(&hashed, "REGISTER", b"", ip(1), T0, |_, _| {
                panic!("userhash credentials never reach the store")
            }),
            AuthOutcome::Rejected(RejectReason::UnknownUserOrBadPassword)
        );
        assert_eq!(v.tracked_nonces(), 0);
    }

    #[test]
    fn verifier_stale_nonce() {
        let mut v = verifier();
        let n = challenge_nonce(&v, T0, ip(1));
        let creds = Client::new(Algorithm::Sha256).creds(&n, 1, "REGISTER", b"");
        assert_eq!(
            v.verify(&creds, "REGISTER", b"", ip(1), T0 + 301, store),
            AuthOutcome::Stale
        );
        assert_eq!(v.tracked_nonces(), 0);
    }

    #[test]
    fn verifier_nonce_from_before_history_is_stale() {
        // A nonce minted (with the same persistent key) before this verifier existed has no
        // replay history here, so it must not be trusted.
        let k = key();
        let old = issue_nonce(&k, T0 - 10, ip(1));
        let mut v = verifier();
        let _ = challenge_nonce(&v, T0, ip(1));
        let creds = Client::new(Algorithm::Sha256).creds(&old, 1, "REGISTER", b"");
        assert_eq!(
            v.verify(&creds, "REGISTER", b"", ip(1), T0, store),
            AuthOutcome::Stale
        );
    }

    #[test]
    fn verifier_evicted_nonce_is_stale_not_replayable() {
        let mut c = cfg(vec![Algorithm::Md5]);
        c.max_tracked_nonces = 2;
        let mut v = Verifier::new(c, key());
        let client = Client::new(Algorithm::Md5);
        let n0 = challenge_nonce(&v, T0, ip(1));
        let first = client.creds(&n0, 1, "REGISTER", b"");
        assert!(matches!(
            v.verify(&first, "REGISTER", b"", ip(1), T0, store),
            AuthOutcome::Authenticated { .. }
        ));
        for t in 1..=2 {
            let n = challenge_nonce(&v, T0 + t, ip(1));
            let creds = client.creds(&n, 1, "REGISTER", b"");
            assert!(matches!(
                v.verify(&creds, "REGISTER", b"", ip(1), T0 + t, store),
                AuthOutcome::Authenticated { .. }
            ));
        }
        assert_eq!(v.tracked_nonces(), 2);
        // n0 was evicted; replaying its nc=1 must not succeed.
        assert_eq!(
            v.verify(&first, "REGISTER", b"", ip(1), T0 + 3, store),
            AuthOutcome::Stale
        );
    }

    #[test]
    fn verifier_sweep_and_reload() {
        let mut v = verifier();
        let n = challenge_nonce(&v, T0, ip(1));
        let creds = Client::new(Algorithm::Md5).creds(&n, 1, "REGISTER", b"");
        assert!(matches!(
            v.verify(&creds, "REGISTER", b"", ip(1), T0, store),
            AuthOutcome::Authenticated { .. }
        ));
        // Reload keeps the replay table.
        v.set_config(cfg(vec![Algorithm::Md5]));
        assert_eq!(v.tracked_nonces(), 1);
        assert_eq!(
            v.verify(&creds, "REGISTER", b"", ip(1), T0, store),
            AuthOutcome::Rejected(RejectReason::Replay)
        );
        v.sweep(T0 + 299);
        assert_eq!(v.tracked_nonces(), 1);
        v.sweep(T0 + 301);
        assert_eq!(v.tracked_nonces(), 0);
        // Even with a longer lifetime after the sweep, the forgotten nonce stays unusable.
        let mut long = cfg(vec![Algorithm::Md5]);
        long.nonce_lifetime_secs = 3600;
        v.set_config(long);
        assert_eq!(
            v.verify(&creds, "REGISTER", b"", ip(1), T0 + 302, store),
            AuthOutcome::Stale
        );
    }

    #[test]
    fn challenge_format() {
        let mut c = cfg(vec![Algorithm::Sha256, Algorithm::Md5]);
        c.realm = "a \"quoted\" \\ realm".into();
        let v = Verifier::new(c, key());
        let ch = v.challenge(T0, ip(1), false);
        assert_eq!(ch.len(), 2);
        let n = challenge_nonce(&v, T0, ip(1));
        assert_eq!(
            check_nonce(&key(), &n, T0, ip(1), 300),
            NonceCheck::Valid { issued_at: T0 }
        );
        let nonce0 = ch[0].split("nonce=\"").nth(1).unwrap()[..NONCE_B64_LEN].to_owned();
        assert_eq!(
            ch[0],
            format!("Digest realm=\"a \\\"quoted\\\" \\\\ realm\", nonce=\"{nonce0}\", algorithm=SHA-256, qop=\"auth\"")
        );
        assert_eq!(
            ch[1],
            format!("Digest realm=\"a \\\"quoted\\\" \\\\ realm\", nonce=\"{nonce0}\", algorithm=MD5, qop=\"auth\"")
        );
        let stale = v.challenge(T0, ip(1), true);
        assert!(stale.iter().all(|h| h.ends_with(", stale=true")));
        assert_eq!(quote("a\r\nb"), "\"ab\"");
    }

    #[test]
    fn config_validation() {
        assert_eq!(DigestConfig::default().validate(), Ok(()));
        let bad = |c: DigestConfig| c.validate();
        assert_eq!(
            bad(DigestConfig {
                realm: "a\r\nX-Injected: 1".into(),
                ..DigestConfig::default()
            }),
            Err(DigestConfigError::RealmControlChars)
        );
        assert_eq!(
            bad(DigestConfig {
                algorithms: vec![Algorithm::Md5, Algorithm::Md5],
                ..DigestConfig::default()
            }),
            Err(DigestConfigError::DuplicateAlgorithm(Algorithm::Md5))
        );
        assert_eq!(
            bad(DigestConfig {
                algorithms: Vec::new(),
                ..DigestConfig::default()
            }),
            Err(DigestConfigError::NoAlgorithms)
        );
        assert_eq!(
            bad(DigestConfig {
                nonce_lifetime_secs: 0,
                ..DigestConfig::default()
            }),
            Err(DigestConfigError::ZeroLifetime)
        );
        assert_eq!(
            bad(DigestConfig {
                max_tracked_nonces: 0,
                ..DigestConfig::default()
            }),
            Err(DigestConfigError::ZeroCapacity)
        );
        assert_eq!(
            bad(DigestConfig {
                realm: String::new(),
                ..DigestConfig::default()
            }),
            Err(DigestConfigError::EmptyRealm)
        );
    }

    #[test]
    fn verifier_debug_hides_secrets() {
        let mut v = Verifier::new(cfg(vec![Algorithm::Md5]), NonceKey::from_bytes([0x5a; 32]));
        let n = challenge_nonce(&v, T0, ip(1));
        let creds = Client::new(Algorithm::Md5).creds(&n, 1, "REGISTER", b"");
        let ha1 = ha1_hex(Algorithm::Md5, "alice", REALM, "wonderland");
        let _ = v.verify(&creds, "REGISTER", b"", ip(1), T0, store);
        let dbg = format!("{v:?}");
        assert!(!dbg.contains(&ha1));
        assert!(!dbg.contains(&v.dummy_ha1[0]));
        assert!(!dbg.contains("90, 90") && !dbg.contains("5a5a"), "{dbg}");
        assert!(dbg.contains("tracked_nonces: 1"), "{dbg}");
    }

    #[test]
    fn algorithm_serde_uses_tokens() {
        use serde::de::value::{Error as DeError, StrDeserializer};
        use serde::de::IntoDeserializer;
        let d: StrDeserializer<'_, DeError> = "sha-512-256".into_deserializer();
        assert_eq!(
            <Algorithm as serde::Deserialize>::deserialize(d),
            Ok(Algorithm::Sha512_256)
        );
        let d: StrDeserializer<'_, DeError> = "MD5-sess".into_deserializer();
        assert!(<Algorithm as serde::Deserialize>::deserialize(d).is_err());
    }

    // ---------------------------------------------------------------- properties

    /// Renders `s` as a quoted-string the way a client would.
    fn q(s: &str) -> String {
        let mut o = String::from("\"");
        for c in s.chars() {
            if c == '"' || c == '\\' {
                o.push('\\');
            }
            o.push(c);
        }
        o.push('"');
        o
    }

    proptest! {
        // Failures print the minimal input; persisting regression files would write into the
        // repository from tests, which several people run concurrently.
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn parse_never_panics_on_arbitrary_input(s in any::<String>()) {
            let _ = DigestCredentials::parse(&s);
            let _ = DigestCredentials::parse(&format!("Digest {s}"));
        }

        #[test]
        fn parse_never_panics_on_near_miss_input(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("username".to_owned()), Just("realm".to_owned()),
                    Just("nonce".to_owned()), Just("uri".to_owned()),
                    Just("response".to_owned()), Just("qop".to_owned()),
                    Just("nc".to_owned()), Just("cnonce".to_owned()),
                    Just("algorithm".to_owned()), Just("username*".to_owned()),
                    Just("=".to_owned()), Just(",".to_owned()), Just("\"".to_owned()),
                    Just("\\".to_owned()), Just(" ".to_owned()), Just("\r\n".to_owned()),
                    Just("-sess".to_owned()), Just("%C3".to_owned()), Just("'".to_owned()),
                    "[0-9a-fA-F]{0,9}", "\\PC{0,4}",
                ],
                0..40,
            )
        ) {
            let _ = DigestCredentials::parse(&format!("Digest {}", parts.concat()));
        }

        #[test]
        fn parse_round_trips_quoted_values(
            user in "\\PC{0,16}", realm in "\\PC{0,16}", uri in "\\PC{0,24}",
            nonce in "[A-Za-z0-9+/_-]{1,43}", response in "[0-9a-f]{32}",
            nc in any::<u32>(), cnonce in "\\PC{0,16}", opaque in proptest::option::of("\\PC{0,8}"),
            alg in prop_oneof![Just(Algorithm::Md5), Just(Algorithm::Sha256), Just(Algorithm::Sha512_256)],
            session in any::<bool>(),
        ) {
            let alg_tok = if session { alg.session_token() } else { alg.token() };
            let mut h = format!(
                "Digest username={}, realm={}, nonce={}, uri={}, response={}, algorithm={alg_tok}, qop=auth, nc={nc:08x}, cnonce={}",
                q(&user), q(&realm), q(&nonce), q(&uri), q(&response), q(&cnonce)
            );
            if let Some(o) = &opaque {
                h.push_str(&format!(", opaque={}", q(o)));
            }
            let c = DigestCredentials::parse(&h).unwrap();
            prop_assert_eq!(c.username, user);
            prop_assert_eq!(c.realm, realm);
            prop_assert_eq!(c.uri, uri);
            prop_assert_eq!(c.nonce, nonce);
            prop_assert_eq!(c.response, response);
            prop_assert_eq!(c.nc, Some(nc));
            prop_assert_eq!(c.cnonce, Some(cnonce));
            prop_assert_eq!(c.opaque, opaque);
            prop_assert_eq!((c.algorithm, c.session), (alg, session));
        }

        #[test]
        fn any_single_bit_flip_invalidates_a_nonce(bit in 0usize..(NONCE_RAW_LEN * 8), now in 0u64..u64::MAX / 2) {
            let k = key();
            let n = issue_nonce(&k, now, ip(9));
            let mut raw = URL_SAFE_NO_PAD.decode(&n).unwrap();
            raw[bit / 8] ^= 1 << (bit % 8);
            let tampered = URL_SAFE_NO_PAD.encode(&raw);
            prop_assert_eq!(check_nonce(&k, &tampered, now, ip(9), 300), NonceCheck::Invalid);
            prop_assert_eq!(check_nonce(&k, &n, now, ip(9), 300), NonceCheck::Valid { issued_at: now });
        }

        #[test]
        fn check_nonce_never_panics(s in "\\PC{0,64}", now in any::<u64>(), life in any::<u64>()) {
            prop_assert_eq!(check_nonce(&key(), &s, now, ip(1), life), NonceCheck::Invalid);
        }

        #[test]
        fn nonce_counts_stay_bounded(
            cap in 1usize..16,
            ops in proptest::collection::vec((0u8..64, 1u32..5, 0u64..100), 0..200),
        ) {
            let mut t = NonceCounts::new(cap);
            for (n, nc, at) in ops {
                let nonce = format!("n{n}");
                if t.check(&nonce, nc) {
                    t.commit(&nonce, nc, at);
                }
                prop_assert!(t.len() <= cap);
                prop_assert_eq!(t.len(), t.by_issue.len());
            }
        }

        #[test]
        fn verifier_replay_table_respects_capacity(
            cap in 1usize..8,
            steps in proptest::collection::vec((1u64..20, 1u32..4, any::<prop::sample::Index>()), 1..30),
        ) {
            let mut c = cfg(vec![Algorithm::Md5]);
            c.max_tracked_nonces = cap;
            let mut v = Verifier::new(c, key());
            let client = Client::new(Algorithm::Md5);
            let mut now = T0;
            let mut sent = Vec::new();
            for (dt, nc, pick) in steps {
                now += dt;
                let n = challenge_nonce(&v, now, ip(3));
                let creds = client.creds(&n, nc, "REGISTER", b"");
                let out = v.verify(&creds, "REGISTER", b"", ip(3), now, store);
                prop_assert!(matches!(out, AuthOutcome::Authenticated { .. }), "{:?}", out);
                prop_assert!(v.tracked_nonces() <= cap);
                // The request just accepted is tracked, so replaying it is a Replay.
                let again = v.verify(&creds, "REGISTER", b"", ip(3), now, store);
                prop_assert_eq!(again, AuthOutcome::Rejected(RejectReason::Replay));
                sent.push(creds);
                // Replaying any earlier request, tracked or evicted, never authenticates.
                let old = &sent[pick.index(sent.len())];
                let out = v.verify(old, "REGISTER", b"", ip(3), now, store);
                prop_assert!(
                    matches!(out, AuthOutcome::Stale | AuthOutcome::Rejected(RejectReason::Replay)),
                    "{:?}", out
                );
                prop_assert!(v.tracked_nonces() <= cap);
            }
        }
    }
}
