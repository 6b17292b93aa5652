//! Authentication of the grid platform's calls to us (seed 000 §二 网格化调用端, 000:L727-L1049).
//!
//! The contract defines no authentication for any of these routes (grid reference A.1.3: "No
//! signing or auth is defined"), so the scheme is ours and configurable. Every request must come
//! from an allow-listed source address (default: loopback only), and then pass one of:
//!
//! - `none`: the allow-list alone (a private link between the two platforms);
//! - `bearer`: `Authorization: Bearer <token>`, the token compared in constant time (both sides
//!   hashed with SHA-256 first, so neither the comparison nor its timing depends on the length of
//!   what was sent);
//! - `hmac`: `X-Grid-Timestamp: <unix seconds>` and `X-Grid-Signature: <hex HMAC-SHA256>` over
//!   `timestamp + "\n" + method + "\n" + path + "\n" + body`, where `path` is the request
//!   target as sent (path and query string, since query parameters are read too). The
//!   timestamp must lie within ±`window` of now, and a signature is accepted once while its
//!   timestamp can still pass (replay protection, bounded).
//!
//! Sans-IO: the HTTP shell passes the peer address, the header values, the body and `now`. The
//! allow-list is checked first and separately ([`GridAuth::check_peer`]), before the body is
//! read, so an outsider cannot make us read a body. Secrets never appear in `Debug` output or
//! error messages.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::fmt;
use std::net::IpAddr;

use hmac::{Hmac, Mac};
use ipnet::{IpNet, Ipv4Net};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Header carrying the HMAC timestamp (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-grid-timestamp";
/// Header carrying the HMAC signature (64 hex digits).
pub const SIGNATURE_HEADER: &str = "x-grid-signature";

/// How the grid's calls are authenticated beyond the allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// The allow-list alone.
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// HMAC-SHA256 over timestamp, method, path and body.
    Hmac,
}

/// A secret that never prints.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GridSecret(Vec<u8>);

impl GridSecret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for GridSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What [`GridAuth`] needs, already validated by the config.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Empty = loopback only.
    pub allow: Vec<IpNet>,
    pub mode: AuthMode,
    /// The bearer token or the HMAC key, per `mode`.
    pub secret: GridSecret,
    pub window_secs: u64,
    pub max_replay_entries: usize,
}

/// One request, as far as authentication is concerned.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    pub method: &'a str,
    /// The request target as sent: path and, if any, `?query`.
    pub target: &'a str,
    pub authorization: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
}

/// Why a request was refused. Messages name the header at fault, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GridAuthError {
    #[error("source address {0} is not allowed (grid_api.allow)")]
    ForbiddenIp(IpAddr),
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("Authorization must be \"Bearer <token>\"")]
    MalformedBearer,
    #[error("invalid bearer token")]
    BadToken,
    #[error("X-Grid-Timestamp must be Unix seconds (decimal digits)")]
    BadTimestamp,
    #[error("X-Grid-Timestamp is more than {window_secs} s away from this node's clock")]
    Stale { window_secs: u64 },
    #[error("X-Grid-Signature must be 64 hexadecimal digits")]
    MalformedSignature,
    #[error("invalid X-Grid-Signature")]
    BadSignature,
    #[error("signature already used (replay)")]
    Replayed,
    #[error("too many signed requests in the replay window; retry later")]
    Overloaded,
}

impl GridAuthError {
    /// The HTTP status: 403 for the allow-list, 429 when the replay table is full, else 401.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::ForbiddenIp(_) => 403,
            Self::Overloaded => 429,
            _ => 401,
        }
    }

    /// The `result` label of `gridedge_api_requests_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::ForbiddenIp(_) => "forbidden_ip",
            Self::MissingHeader(_) => "missing_header",
            Self::MalformedBearer | Self::BadToken => "bad_token",
            Self::BadTimestamp => "bad_timestamp",
            Self::Stale { .. } => "stale",
            Self::MalformedSignature | Self::BadSignature => "bad_sign",
            Self::Replayed => "replay",
            Self::Overloaded => "overload",
        }
    }
}

/// The bytes an HMAC request signs: `timestamp \n method \n target \n body`.
pub fn string_to_sign(timestamp: &str, method: &str, target: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(timestamp.len() + method.len() + target.len() + body.len() + 3);
    for part in [timestamp.as_bytes(), method.as_bytes(), target.as_bytes()] {
        m.extend_from_slice(part);
        m.push(b'\n');
    }
    m.extend_from_slice(body);
    m
}

/// `hex(HMAC-SHA256(key, string_to_sign(...)))`, lower case: what a client sends.
pub fn hmac_signature(
    key: &[u8],
    timestamp: &str,
    method: &str,
    target: &str,
    body: &[u8],
) -> String {
    hex::encode(mac(key, &string_to_sign(timestamp, method, target, body)))
}

fn mac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// Peers are matched as IPv4 when they are IPv4-mapped IPv6, and so are rules.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let (Some(v4), Some(len)) = (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96))
        {
            if let Ok(n) = Ipv4Net::new(v4, len) {
                return IpNet::V4(n.trunc());
            }
        }
    }
    net
}

/// Accepted signatures, pruned once their timestamp can no longer pass the window.
#[derive(Default)]
struct Replay {
    seen: HashSet<[u8; 32]>,
    by_ts: BinaryHeap<Reverse<(u64, [u8; 32])>>,
}

pub struct GridAuth {
    s: AuthSettings,
    replay: Replay,
}

impl GridAuth {
    pub fn new(mut s: AuthSettings) -> Self {
        s.allow = s.allow.into_iter().map(canonical_net).collect();
        Self {
            s,
            replay: Replay::default(),
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.s.mode
    }

    /// Remembered signatures (for tests and metrics).
    pub fn replay_entries(&self) -> usize {
        self.replay.seen.len()
    }

    /// The allow-list, checked before anything else (the body is not read yet).
    pub fn check_peer(&self, peer: IpAddr) -> Result<(), GridAuthError> {
        let peer = peer.to_canonical();
        let ok = if self.s.allow.is_empty() {
            peer.is_loopback()
        } else {
            self.s.allow.iter().any(|n| n.contains(&peer))
        };
        if ok {
            Ok(())
        } else {
            Err(GridAuthError::ForbiddenIp(peer))
        }
    }

    /// The configured scheme. `check_peer` must have passed.
    pub fn check(&mut self, req: &AuthRequest<'_>, now_ms: u64) -> Result<(), GridAuthError> {
        match self.s.mode {
            AuthMode::None => Ok(()),
            AuthMode::Bearer => self.check_bearer(req),
            AuthMode::Hmac => self.check_hmac(req, now_ms),
        }
    }

    fn check_bearer(&self, req: &AuthRequest<'_>) -> Result<(), GridAuthError> {
        let h = req
            .authorization
            .ok_or(GridAuthError::MissingHeader("Authorization"))?;
        let (scheme, token) = h
            .trim()
            .split_once(' ')
            .ok_or(GridAuthError::MalformedBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(GridAuthError::MalformedBearer);
        }
        let got: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        let want: [u8; 32] = Sha256::digest(self.s.secret.bytes()).into();
        if bool::from(got.ct_eq(&want)) {
            Ok(())
        } else {
            Err(GridAuthError::BadToken)
        }
    }

    fn check_hmac(&mut self, req: &AuthRequest<'_>, now_ms: u64) -> Result<(), GridAuthError> {
        let ts_raw = req
            .timestamp
            .ok_or(GridAuthError::MissingHeader("X-Grid-Timestamp"))?;
        let sig_raw = req
            .signature
            .ok_or(GridAuthError::MissingHeader("X-Grid-Signature"))?;
        if ts_raw.is_empty() || ts_raw.len() > 19 || !ts_raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(GridAuthError::BadTimestamp);
        }
        let ts: u64 = ts_raw.parse().map_err(|_| GridAuthError::BadTimestamp)?;
        let now_s = now_ms / 1000;
        let window_secs = self.s.window_secs;
        if ts.abs_diff(now_s) > window_secs {
            return Err(GridAuthError::Stale { window_secs });
        }
        let mut presented = [0u8; 32];
        hex::decode_to_slice(sig_raw.trim(), &mut presented)
            .map_err(|_| GridAuthError::MalformedSignature)?;
        let expected = mac(
            self.s.secret.bytes(),
            &string_to_sign(ts_raw, req.method, req.target, req.body),
        );
        if !bool::from(expected.ct_eq(&presented)) {
            return Err(GridAuthError::BadSignature);
        }
        // Only proven requests are remembered, so outsiders cannot fill the table.
        while let Some(Reverse((old, _))) = self.replay.by_ts.peek() {
            if old.saturating_add(window_secs) >= now_s {
                break;
            }
            if let Some(Reverse((_, k))) = self.replay.by_ts.pop() {
                self.replay.seen.remove(&k);
            }
        }
        if self.replay.seen.contains(&presented) {
            return Err(GridAuthError::Replayed);
        }
        if self.replay.seen.len() >= self.s.max_replay_entries {
            return Err(GridAuthError::Overloaded);
        }
        self.replay.seen.insert(presented);
        self.replay.by_ts.push(Reverse((ts, presented)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_700_000_000_000;
    const KEY: &[u8] = b"grid-hmac-key-for-tests";

    fn auth(mode: AuthMode, allow: &[&str]) -> GridAuth {
        GridAuth::new(AuthSettings {
            allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
            mode,
            secret: GridSecret::new(match mode {
                AuthMode::Bearer => b"tok-123456".to_vec(),
                _ => KEY.to_vec(),
            }),
            window_secs: 300,
            max_replay_entries: 3,
        })
    }

    fn req<'a>(
        auth: Option<&'a str>,
        ts: Option<&'a str>,
        sig: Option<&'a str>,
    ) -> AuthRequest<'a> {
        AuthRequest {
            method: "POST",
            target: "/grid/agent/list",
            authorization: auth,
            timestamp: ts,
            signature: sig,
            body: b"{\"entId\":\"E1\"}",
        }
    }

    #[test]
    fn allow_list_defaults_to_loopback_and_maps_v4_in_v6() {
        let a = auth(AuthMode::None, &[]);
        assert!(a.check_peer("127.0.0.1".parse().unwrap()).is_ok());
        assert!(a.check_peer("::1".parse().unwrap()).is_ok());
        assert!(a.check_peer("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert_eq!(
            a.check_peer("10.0.0.1".parse().unwrap()),
            Err(GridAuthError::ForbiddenIp("10.0.0.1".parse().unwrap()))
        );
        let b = auth(AuthMode::None, &["::ffff:10.1.0.0/112"]);
        assert!(b.check_peer("10.1.2.3".parse().unwrap()).is_ok());
        assert!(b.check_peer("127.0.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn bearer_right_wrong_missing_malformed() {
        let mut a = auth(AuthMode::Bearer, &[]);
        assert!(a
            .check(&req(Some("Bearer tok-123456"), None, None), NOW_MS)
            .is_ok());
        assert!(a
            .check(&req(Some("bearer  tok-123456 "), None, None), NOW_MS)
            .is_ok());
        assert_eq!(
            a.check(&req(Some("Bearer tok-12345"), None, None), NOW_MS),
            Err(GridAuthError::BadToken)
        );
        assert_eq!(
            a.check(&req(None, None, None), NOW_MS),
            Err(GridAuthError::MissingHeader("Authorization"))
        );
        for bad in ["Basic dG9r", "tok-123456", "Bearer ", ""] {
            assert!(
                a.check(&req(Some(bad), None, None), NOW_MS).is_err(),
                "{bad}"
            );
        }
        let e = a
            .check(&req(Some("Bearer nope"), None, None), NOW_MS)
            .unwrap_err();
        assert!(!e.to_string().contains("tok-123456"));
    }

    #[test]
    fn hmac_right_stale_replayed_wrong() {
        let mut a = auth(AuthMode::Hmac, &[]);
        let ts = (NOW_MS / 1000).to_string();
        let body = b"{\"entId\":\"E1\"}";
        let sig = hmac_signature(KEY, &ts, "POST", "/grid/agent/list", body);
        assert!(a.check(&req(None, Some(&ts), Some(&sig)), NOW_MS).is_ok());
        // The same signature again is a replay, whatever the case of its hex.
        assert_eq!(
            a.check(&req(None, Some(&ts), Some(&sig.to_uppercase())), NOW_MS),
            Err(GridAuthError::Replayed)
        );
        // Exactly at the window edge passes; one second beyond is stale.
        let edge = (NOW_MS / 1000 - 300).to_string();
        let s = hmac_signature(KEY, &edge, "POST", "/grid/agent/list", body);
        assert!(a.check(&req(None, Some(&edge), Some(&s)), NOW_MS).is_ok());
        let old = (NOW_MS / 1000 - 301).to_string();
        let s = hmac_signature(KEY, &old, "POST", "/grid/agent/list", body);
        assert_eq!(
            a.check(&req(None, Some(&old), Some(&s)), NOW_MS),
            Err(GridAuthError::Stale { window_secs: 300 })
        );
        let future = (NOW_MS / 1000 + 301).to_string();
        let s = hmac_signature(KEY, &future, "POST", "/grid/agent/list", body);
        assert!(a
            .check(&req(None, Some(&future), Some(&s)), NOW_MS)
            .is_err());
        // Signed over another path, another body or another key: refused.
        let s = hmac_signature(KEY, &ts, "POST", "/grid/queue/list", body);
        assert_eq!(
            a.check(&req(None, Some(&ts), Some(&s)), NOW_MS),
            Err(GridAuthError::BadSignature)
        );
        let s = hmac_signature(b"other", &ts, "POST", "/grid/agent/list", body);
        assert_eq!(
            a.check(&req(None, Some(&ts), Some(&s)), NOW_MS),
            Err(GridAuthError::BadSignature)
        );
        assert_eq!(
            a.check(&req(None, Some(&ts), Some("abc")), NOW_MS),
            Err(GridAuthError::MalformedSignature)
        );
        for bad in ["", "-1", "1e9", "１２", "99999999999999999999"] {
            assert_eq!(
                a.check(&req(None, Some(bad), Some(&sig)), NOW_MS),
                Err(GridAuthError::BadTimestamp),
                "{bad}"
            );
        }
        assert_eq!(
            a.check(&req(None, None, Some(&sig)), NOW_MS),
            Err(GridAuthError::MissingHeader("X-Grid-Timestamp"))
        );
    }

    #[test]
    fn replay_table_is_bounded_and_forgets_after_the_window() {
        let mut a = auth(AuthMode::Hmac, &[]);
        let ts = (NOW_MS / 1000).to_string();
        for i in 0..3 {
            let target = format!("/p{i}");
            let s = hmac_signature(KEY, &ts, "POST", &target, b"");
            let r = AuthRequest {
                target: &target,
                body: b"",
                ..req(None, Some(&ts), Some(&s))
            };
            assert!(a.check(&r, NOW_MS).is_ok());
        }
        let s = hmac_signature(KEY, &ts, "POST", "/p3", b"");
        let r = AuthRequest {
            target: "/p3",
            body: b"",
            ..req(None, Some(&ts), Some(&s))
        };
        assert_eq!(a.check(&r, NOW_MS), Err(GridAuthError::Overloaded));
        // 301 s later the old entries are gone, and a fresh request is accepted.
        let later = NOW_MS + 301_000;
        let ts2 = (later / 1000).to_string();
        let s = hmac_signature(KEY, &ts2, "POST", "/p3", b"");
        let r = AuthRequest {
            target: "/p3",
            body: b"",
            ..req(None, Some(&ts2), Some(&s))
        };
        assert!(a.check(&r, later).is_ok());
        assert_eq!(a.replay_entries(), 1);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let a = auth(AuthMode::Bearer, &[]);
        assert!(!format!("{:?}", a.s).contains("tok-123456"));
    }
}
