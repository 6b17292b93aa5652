//! Request authentication for the management API (seed 004, "接口基础说明").
//!
//! Every management request carries three headers: `account` (the application account),
//! `timestamp` (milliseconds since the Unix epoch, a Java `Long`) and
//! `sign = MD5(account + timestamp + secret)` as hex. The seed also says the API is for
//! server-side callers only, behind an IP allow-list. This module is sans-IO: the HTTP layer
//! extracts the peer address and the three header values, passes the current time, and maps the
//! [`AuthError`] to a response and a metric label. Nothing here touches a socket or a clock, so
//! every edge (window boundaries, replay expiry, overflow) is driven deterministically by tests.
//!
//! Checks run in a fixed order, and the first failure wins:
//!
//! 1. source address against the allow-list (IPv4-mapped IPv6 peers are matched as IPv4);
//! 2. presence of `account`, `timestamp`, `sign` (in that order), none may be empty;
//! 3. timestamp syntax: plain decimal milliseconds;
//! 4. timestamp within `±window_ms` of now (a seconds value gets its own message);
//! 5. `sign` syntax: exactly 32 hex digits, either case;
//! 6. account known and signature correct, reported as one error;
//! 7. replay: the same (account, sign) is accepted once while its timestamp can still pass (4).
//!
//! Why the sign syntax (5) is checked before the account lookup (6): a malformed sign is then
//! reported the same way whether or not the account exists, so it cannot be used to probe for
//! account names. For the same reason an unknown account and a wrong signature share one message
//! and one code path: an unknown account is checked against a dummy secret so both cases do the
//! same MD5 and constant-time comparison.
//!
//! Why replay detection comes last: only requests that proved knowledge of a secret are
//! remembered, so an outsider can neither fill the replay cache nor learn what is in it.
//!
//! A consequence of the seed's scheme worth knowing: the signature covers only account and
//! timestamp, not the method, path or body, and two requests from one account in the same
//! millisecond carry the same sign. The second is refused as a replay; clients must use a fresh
//! timestamp per request.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net};
use md5::{Digest, Md5};
use subtle::{Choice, ConstantTimeEq};

/// Default accepted clock skew either side of now: ±5 minutes.
pub const DEFAULT_WINDOW_MS: u64 = 300_000;

/// Default bound on remembered (account, sign) pairs. At the default window a pair lives about
/// five minutes, so this sustains roughly 330 authenticated requests per second, far above what
/// a management back office sends.
pub const DEFAULT_MAX_REPLAY_ENTRIES: usize = 100_000;

/// Every value [`AuthError::metric_label`] can return, so a counter can be pre-registered for
/// each label and dashboards show zeros instead of missing series.
pub const METRIC_LABELS: [&str; 7] = [
    "forbidden_ip",
    "missing_header",
    "bad_timestamp",
    "stale",
    "bad_sign",
    "replay",
    "overload",
];

/// Secret used for unknown accounts so that they cost the same MD5 and comparison as a known
/// account with a wrong signature. Its value never matters: the result is discarded.
const DUMMY_SECRET: &str = "gridedge-unknown-account-dummy-secret";

/// Timestamps with exactly ten digits are seconds between 2001 and 2286; as milliseconds they
/// would be in early 1970, which no real client sends.
const SECONDS_RANGE: std::ops::Range<u64> = 1_000_000_000..10_000_000_000;

/// A shared secret. Deliberately has no `Display` and a redacting `Debug`, so that logging an
/// account, a config or the authenticator can never leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Private: the only reader is the signature check in this module.
    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// One application account from config.
#[derive(Clone, Debug)]
pub struct ApiAccount {
    pub account: String,
    secret: Secret,
}

/// Why an [`ApiAccount`] could not be built from config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("api account name must not be empty")]
    EmptyName,
    /// An empty secret would make `sign = MD5(account + timestamp)`, forgeable by anyone.
    #[error("api account {0:?}: secret must not be empty")]
    EmptySecret(String),
}

impl ApiAccount {
    pub fn new(
        account: impl Into<String>,
        secret: impl Into<Secret>,
    ) -> Result<Self, AccountError> {
        let account = account.into();
        let secret = secret.into();
        if account.is_empty() {
            return Err(AccountError::EmptyName);
        }
        if secret.is_empty() {
            return Err(AccountError::EmptySecret(account));
        }
        Ok(Self { account, secret })
    }

    pub fn secret(&self) -> &Secret {
        &self.secret
    }
}

/// Tunables, reloadable at runtime through [`Authenticator::set_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignConfig {
    /// Accepted distance between the request timestamp and now, both directions, inclusive.
    pub window_ms: u64,
    /// Source networks allowed to call the API. An EMPTY list means loopback only
    /// (127.0.0.0/8 and ::1): the seed demands an allow-list, so a missing one must fail closed
    /// rather than open the API to the world. Use `0.0.0.0/0` and `::/0` to allow everyone.
    /// IPv4 peers (including IPv4-mapped IPv6 peers on a dual-stack socket) match IPv4 rules
    /// and IPv4-mapped IPv6 rules (`::ffff:10.0.0.0/104`); they do not match plain IPv6 rules
    /// such as `::/0`.
    pub allow: Vec<IpNet>,
    /// Bound on remembered (account, sign) pairs; when full, new requests are refused rather
    /// than forgetting pairs that could still be replayed. 0 refuses every request.
    pub max_replay_entries: usize,
}

impl Default for SignConfig {
    fn default() -> Self {
        Self {
            window_ms: DEFAULT_WINDOW_MS,
            allow: Vec::new(),
            max_replay_entries: DEFAULT_MAX_REPLAY_ENTRIES,
        }
    }
}

/// What the HTTP layer extracted from one request. A header that is present but not valid
/// UTF-8 should be passed as `Some("\u{FFFD}")` or similar, not `None`, so the client is told
/// it is malformed rather than missing.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub peer: IpAddr,
    pub account: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub sign: Option<&'a str>,
}

/// A request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthOk {
    pub account: String,
    pub timestamp_ms: u64,
}

/// Why a request was refused. Every message is safe to return to the caller: it names the
/// failed rule, never a secret, the expected signature or whether an account exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("source address {0} not allowed")]
    ForbiddenIp(IpAddr),
    #[error("missing header: {0}")]
    MissingHeader(&'static str),
    #[error("empty header: {0}")]
    EmptyHeader(&'static str),
    #[error("timestamp is not a number")]
    TimestampNotNumber,
    #[error("timestamp must not be negative")]
    TimestampNegative,
    #[error("timestamp is out of range")]
    TimestampOutOfRange,
    #[error("timestamp must be in milliseconds, not seconds")]
    TimestampInSeconds,
    #[error(
        "timestamp is too old: outside the allowed window of {}",
        window_text(.window_ms)
    )]
    TimestampTooOld { window_ms: u64 },
    #[error(
        "timestamp is in the future: outside the allowed window of {}",
        window_text(.window_ms)
    )]
    TimestampInFuture { window_ms: u64 },
    #[error("sign must be 32 hexadecimal digits")]
    MalformedSign,
    /// One variant for both cases so the response cannot be used to enumerate accounts.
    #[error("unknown account or bad signature")]
    BadCredentials,
    #[error("request replayed")]
    Replayed,
    #[error("too many requests: replay cache is full, retry later")]
    Overloaded,
}

impl AuthError {
    /// Low-cardinality label for a Prometheus counter; one of [`METRIC_LABELS`].
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::ForbiddenIp(_) => "forbidden_ip",
            Self::MissingHeader(_) | Self::EmptyHeader(_) => "missing_header",
            Self::TimestampNotNumber
            | Self::TimestampNegative
            | Self::TimestampOutOfRange
            | Self::TimestampInSeconds => "bad_timestamp",
            Self::TimestampTooOld { .. } | Self::TimestampInFuture { .. } => "stale",
            Self::MalformedSign | Self::BadCredentials => "bad_sign",
            Self::Replayed => "replay",
            Self::Overloaded => "overload",
        }
    }

    /// Suggested HTTP status: 403 for a refused source, 400 for a request that is malformed
    /// regardless of credentials, 401 for a well-formed request that failed authentication,
    /// 429 when the replay cache is full (the client may retry later).
    pub fn http_status(&self) -> u16 {
        match self {
            Self::ForbiddenIp(_) => 403,
            Self::MissingHeader(_)
            | Self::EmptyHeader(_)
            | Self::TimestampNotNumber
            | Self::TimestampNegative
            | Self::TimestampOutOfRange
            | Self::TimestampInSeconds
            | Self::MalformedSign => 400,
            Self::TimestampTooOld { .. }
            | Self::TimestampInFuture { .. }
            | Self::BadCredentials
            | Self::Replayed => 401,
            Self::Overloaded => 429,
        }
    }
}

/// "±300 s" for whole seconds, "±1500 ms" otherwise, so the message matches the config value.
fn window_text(window_ms: &u64) -> String {
    if window_ms % 1000 == 0 {
        format!("±{} s", window_ms / 1000)
    } else {
        format!("±{window_ms} ms")
    }
}

/// `MD5(account + timestamp + secret)` as lower-case hex, exactly as seed 004 defines it. The
/// timestamp is the text as sent, not a re-formatted number.
pub fn sign(account: &str, timestamp: &str, secret: &str) -> String {
    hex::encode(digest(account, timestamp, secret))
}

fn digest(account: &str, timestamp: &str, secret: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(account.as_bytes());
    h.update(timestamp.as_bytes());
    h.update(secret.as_bytes());
    h.finalize().into()
}

/// Replay key: the account and the decoded sign. Decoded, so that re-sending a sign with its
/// hex case changed is still recognised as the same request.
type ReplayKey = (Arc<str>, [u8; 16]);

/// Remembered (account, sign) pairs, pruned by timestamp.
///
/// Ordered by request timestamp rather than arrival time because a pair must be kept exactly as
/// long as its timestamp can still pass the window check: a request stamped `window` in the
/// future stays replayable for two windows after arrival. Ordering by timestamp also keeps
/// pruning correct when the window is changed by a reload.
#[derive(Default)]
struct ReplayCache {
    seen: HashSet<ReplayKey>,
    by_ts: BinaryHeap<Reverse<(u64, ReplayKey)>>,
}

impl ReplayCache {
    /// Drops pairs whose timestamp is now older than the window. Each pair is popped once, so
    /// the cost is amortised O(log n) per accepted request.
    fn prune(&mut self, now_ms: u64, window_ms: u64) {
        while let Some(Reverse((ts, _))) = self.by_ts.peek() {
            // Same arithmetic as the window check: kept while `now - ts <= window`.
            if ts.saturating_add(window_ms) >= now_ms {
                break;
            }
            if let Some(Reverse((_, key))) = self.by_ts.pop() {
                self.seen.remove(&key);
            }
        }
    }

    fn len(&self) -> usize {
        self.seen.len()
    }
}

/// Checks signed management requests. Not thread-safe by itself; the HTTP layer holds it behind
/// a mutex (each check is a hash lookup and one MD5, so contention is negligible).
pub struct Authenticator {
    accounts: HashMap<String, Secret>,
    cfg: SignConfig,
    /// Largest window ever configured. Pruning uses it instead of the current window so that
    /// shrinking the window and growing it again cannot forget a pair whose timestamp the grown
    /// window accepts again, which would reopen a replay.
    prune_window_ms: u64,
    replay: ReplayCache,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut accounts: Vec<&str> = self.accounts.keys().map(String::as_str).collect();
        accounts.sort_unstable();
        f.debug_struct("Authenticator")
            .field("accounts", &accounts)
            .field("cfg", &self.cfg)
            .field("replay_entries", &self.replay.len())
            .finish()
    }
}

impl Authenticator {
    /// If an account name appears twice the later entry wins; config validation is the place
    /// to reject duplicates.
    pub fn new(accounts: impl IntoIterator<Item = ApiAccount>, cfg: SignConfig) -> Self {
        let mut me = Self {
            accounts: HashMap::new(),
            cfg: SignConfig::default(),
            prune_window_ms: 0,
            replay: ReplayCache::default(),
        };
        me.set_accounts(accounts);
        me.set_config(cfg);
        me
    }

    /// Live reload of the account list. Remembered pairs are kept: a removed and re-added
    /// account must not get its recent requests back as replayable.
    pub fn set_accounts(&mut self, accounts: impl IntoIterator<Item = ApiAccount>) {
        self.accounts = accounts
            .into_iter()
            .map(|a| (a.account, a.secret))
            .collect();
    }

    /// Live reload of the tunables. Remembered pairs are kept; if `max_replay_entries` shrinks
    /// below the current count, new requests are refused until enough pairs expire.
    pub fn set_config(&mut self, mut cfg: SignConfig) {
        cfg.allow = cfg.allow.into_iter().map(canonical_net).collect();
        self.prune_window_ms = self.prune_window_ms.max(cfg.window_ms);
        self.cfg = cfg;
    }

    pub fn config(&self) -> &SignConfig {
        &self.cfg
    }

    /// Number of remembered (account, sign) pairs, for a gauge.
    pub fn replay_entries(&self) -> usize {
        self.replay.len()
    }

    /// Runs every check in the documented order. `now_ms` is the current Unix time in
    /// milliseconds. Only a request that passes everything is remembered for replay detection.
    pub fn check(&mut self, req: &SignedRequest<'_>, now_ms: u64) -> Result<AuthOk, AuthError> {
        let peer = req.peer.to_canonical();
        if !self.ip_allowed(peer) {
            return Err(AuthError::ForbiddenIp(peer));
        }

        let account = required("account", req.account)?;
        let ts_raw = required("timestamp", req.timestamp)?;
        let sign_raw = required("sign", req.sign)?;

        let ts = parse_timestamp(ts_raw)?;
        check_window(ts, now_ms, self.cfg.window_ms)?;

        let presented = decode_sign(sign_raw)?;
        let (secret, known) = match self.accounts.get(account) {
            Some(secret) => (secret.expose(), Choice::from(1)),
            None => (DUMMY_SECRET, Choice::from(0)),
        };
        // Signed over the timestamp text as sent: a client that pads or re-formats the number
        // signed that exact text, and re-formatting here would reject it.
        let expected = digest(account, ts_raw, secret);
        if !bool::from(expected.ct_eq(&presented) & known) {
            return Err(AuthError::BadCredentials);
        }

        self.replay.prune(now_ms, self.prune_window_ms);
        let key: ReplayKey = (Arc::from(account), presented);
        if self.replay.seen.contains(&key) {
            return Err(AuthError::Replayed);
        }
        if self.replay.len() >= self.cfg.max_replay_entries {
            return Err(AuthError::Overloaded);
        }
        self.replay.seen.insert(key.clone());
        self.replay.by_ts.push(Reverse((ts, key)));

        Ok(AuthOk {
            account: account.to_owned(),
            timestamp_ms: ts,
        })
    }

    fn ip_allowed(&self, peer: IpAddr) -> bool {
        if self.cfg.allow.is_empty() {
            return peer.is_loopback();
        }
        self.cfg.allow.iter().any(|net| net.contains(&peer))
    }
}

/// Rewrites an IPv4-mapped IPv6 rule (`::ffff:a.b.c.d/96+n`) as the IPv4 rule `a.b.c.d/n`,
/// because peers are canonicalised to IPv4 before matching.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let (Some(v4), Some(len)) = (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96))
        {
            if let Ok(v4net) = Ipv4Net::new(v4, len) {
                return IpNet::V4(v4net.trunc());
            }
        }
    }
    net
}

fn required<'a>(name: &'static str, value: Option<&'a str>) -> Result<&'a str, AuthError> {
    match value {
        None => Err(AuthError::MissingHeader(name)),
        Some("") => Err(AuthError::EmptyHeader(name)),
        Some(v) => Ok(v),
    }
}

/// Plain ASCII decimal digits only: no sign, spaces, decimal point or exponent, so that the
/// text the client signed is unambiguous. Values up to `u64::MAX` parse; anything that far out
/// fails the window check with a precise message.
fn parse_timestamp(raw: &str) -> Result<u64, AuthError> {
    let (negative, digits) = match raw.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::TimestampNotNumber);
    }
    if negative {
        return Err(AuthError::TimestampNegative);
    }
    digits
        .parse::<u64>()
        .map_err(|_| AuthError::TimestampOutOfRange)
}

fn check_window(ts: u64, now_ms: u64, window_ms: u64) -> Result<(), AuthError> {
    // abs_diff cannot overflow, whatever the two values.
    if ts.abs_diff(now_ms) <= window_ms {
        return Ok(());
    }
    // Only for an already stale value, so the heuristic can never refuse a good request; it
    // just turns the most common client mistake into an actionable message.
    let in_window_as_seconds = ts
        .checked_mul(1000)
        .is_some_and(|ms| ms.abs_diff(now_ms) <= window_ms);
    if in_window_as_seconds || SECONDS_RANGE.contains(&ts) {
        return Err(AuthError::TimestampInSeconds);
    }
    if ts < now_ms {
        Err(AuthError::TimestampTooOld { window_ms })
    } else {
        Err(AuthError::TimestampInFuture { window_ms })
    }
}

fn decode_sign(raw: &str) -> Result<[u8; 16], AuthError> {
    let mut out = [0u8; 16];
    // decode_to_slice checks the length (exactly 32 digits) and accepts either case.
    hex::decode_to_slice(raw, &mut out).map_err(|_| AuthError::MalformedSign)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const NOW: u64 = 1_700_000_000_000;
    const W: u64 = DEFAULT_WINDOW_MS;
    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn acct(name: &str, secret: &str) -> ApiAccount {
        ApiAccount::new(name, secret).expect("valid account")
    }

    fn auth() -> Authenticator {
        Authenticator::new([acct("crm", "s3cr3t")], SignConfig::default())
    }

    fn auth_with(cfg: SignConfig) -> Authenticator {
        Authenticator::new([acct("crm", "s3cr3t")], cfg)
    }

    /// Owns the header strings so tests can build a `SignedRequest` from them.
    struct Req {
        peer: IpAddr,
        account: Option<String>,
        timestamp: Option<String>,
        sign: Option<String>,
    }

    impl Req {
        fn signed(ts: u64) -> Self {
            let ts = ts.to_string();
            Self {
                peer: LOCAL,
                sign: Some(sign("crm", &ts, "s3cr3t")),
                account: Some("crm".into()),
                timestamp: Some(ts),
            }
        }

        fn as_req(&self) -> SignedRequest<'_> {
            SignedRequest {
                peer: self.peer,
                account: self.account.as_deref(),
                timestamp: self.timestamp.as_deref(),
                sign: self.sign.as_deref(),
            }
        }
    }

    fn run(a: &mut Authenticator, r: &Req, now: u64) -> Result<AuthOk, AuthError> {
        a.check(&r.as_req(), now)
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("valid net")
    }

    #[test]
    fn sign_matches_known_md5_vector() {
        // MD5("abc") from RFC 1321.
        assert_eq!(sign("a", "b", "c"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(sign("", "", ""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn happy_path() {
        let mut a = auth();
        let ok = run(&mut a, &Req::signed(NOW), NOW).expect("accepted");
        assert_eq!(
            ok,
            AuthOk {
                account: "crm".into(),
                timestamp_ms: NOW
            }
        );
        assert_eq!(a.replay_entries(), 1);
    }

    #[test]
    fn upper_and_mixed_case_sign_accepted() {
        let mut a = auth();
        let mut r = Req::signed(NOW);
        r.sign = r.sign.map(|s| s.to_uppercase());
        run(&mut a, &r, NOW).expect("upper case accepted");

        let mut r = Req::signed(NOW + 1);
        r.sign = r.sign.map(|s| {
            s.chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        });
        run(&mut a, &r, NOW).expect("mixed case accepted");
    }

    #[test]
    fn replay_refused_including_case_changed_copy() {
        let mut a = auth();
        let r = Req::signed(NOW);
        run(&mut a, &r, NOW).expect("first accepted");
        assert_eq!(run(&mut a, &r, NOW + 10), Err(AuthError::Replayed));

        let mut upper = Req::signed(NOW);
        upper.sign = upper.sign.map(|s| s.to_uppercase());
        assert_eq!(run(&mut a, &upper, NOW + 20), Err(AuthError::Replayed));
        // A refused replay is not remembered twice.
        assert_eq!(a.replay_entries(), 1);
    }

    #[test]
    fn replay_entry_expires_with_the_window_and_fresh_requests_flow_again() {
        let mut a = auth();
        let r = Req::signed(NOW);
        run(&mut a, &r, NOW).expect("first accepted");
        // Last instant the timestamp is valid: still a replay.
        assert_eq!(run(&mut a, &r, NOW + W), Err(AuthError::Replayed));
        // One ms later the old request is stale, and that is what protects it from now on.
        assert_eq!(
            run(&mut a, &r, NOW + W + 1),
            Err(AuthError::TimestampTooOld { window_ms: W })
        );
        // A fresh request is accepted and the expired pair has been pruned.
        run(&mut a, &Req::signed(NOW + W + 1), NOW + W + 1).expect("fresh accepted");
        assert_eq!(a.replay_entries(), 1);
    }

    #[test]
    fn future_stamped_request_stays_remembered_for_its_whole_validity() {
        let mut a = auth();
        let r = Req::signed(NOW + W);
        run(&mut a, &r, NOW).expect("edge of future window accepted");
        // Arrival + window: a pruner keyed on arrival time would have forgotten it here.
        run(&mut a, &Req::signed(NOW + W + 1), NOW + W + 1).expect("other request");
        assert_eq!(run(&mut a, &r, NOW + W + 1), Err(AuthError::Replayed));
        assert_eq!(run(&mut a, &r, NOW + 2 * W), Err(AuthError::Replayed));
        assert_eq!(
            run(&mut a, &r, NOW + 2 * W + 1),
            Err(AuthError::TimestampTooOld { window_ms: W })
        );
    }

    #[test]
    fn shrinking_then_growing_window_does_not_reopen_replays() {
        let mut a = auth();
        let r = Req::signed(NOW);
        run(&mut a, &r, NOW).expect("accepted");
        a.set_config(SignConfig {
            window_ms: 1_000,
            ..SignConfig::default()
        });
        // With the small window this accepted request prunes at NOW + 1_001 if the current
        // window were used for pruning.
        run(&mut a, &Req::signed(NOW + 2_000), NOW + 2_000).expect("accepted");
        a.set_config(SignConfig::default());
        assert_eq!(run(&mut a, &r, NOW + 3_000), Err(AuthError::Replayed));
    }

    #[test]
    fn replay_cache_is_bounded_and_refuses_instead_of_forgetting() {
        let mut a = auth_with(SignConfig {
            max_replay_entries: 2,
            ..SignConfig::default()
        });
        run(&mut a, &Req::signed(NOW), NOW).expect("1");
        run(&mut a, &Req::signed(NOW + 1), NOW).expect("2");
        let third = Req::signed(NOW + 2);
        assert_eq!(run(&mut a, &third, NOW), Err(AuthError::Overloaded));
        // A replay is still reported as a replay when the cache is full.
        assert_eq!(
            run(&mut a, &Req::signed(NOW), NOW),
            Err(AuthError::Replayed)
        );
        // Both remembered pairs are still inside the window: nothing may be forgotten.
        assert_eq!(run(&mut a, &third, NOW + W), Err(AuthError::Overloaded));
        assert_eq!(a.replay_entries(), 2);
        // Once the first pair expires there is room again.
        run(&mut a, &third, NOW + W + 1).expect("room after expiry");
        assert_eq!(a.replay_entries(), 2);
    }

    #[test]
    fn zero_capacity_refuses_everything_and_shrinking_capacity_blocks_until_expiry() {
        let mut a = auth_with(SignConfig {
            max_replay_entries: 0,
            ..SignConfig::default()
        });
        assert_eq!(
            run(&mut a, &Req::signed(NOW), NOW),
            Err(AuthError::Overloaded)
        );

        let mut a = auth();
        for i in 0..3 {
            run(&mut a, &Req::signed(NOW + i), NOW).expect("accepted");
        }
        a.set_config(SignConfig {
            max_replay_entries: 1,
            ..SignConfig::default()
        });
        assert_eq!(
            run(&mut a, &Req::signed(NOW + 10), NOW),
            Err(AuthError::Overloaded)
        );
        run(&mut a, &Req::signed(NOW + W + 10), NOW + W + 3).expect("after expiry");
    }

    #[test]
    fn empty_allow_list_means_loopback_only() {
        let mut a = auth();
        for peer in [
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(127, 9, 9, 9)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
        ] {
            let mut r = Req::signed(NOW + u64::from(peer.is_ipv6()));
            r.peer = peer;
            let res = run(&mut a, &r, NOW);
            assert!(res.is_ok() || res == Err(AuthError::Replayed), "{peer}");
        }
        let mut r = Req::signed(NOW + 5);
        r.peer = "10.1.2.3".parse().expect("ip");
        let err = run(&mut a, &r, NOW).expect_err("refused");
        assert_eq!(err.to_string(), "source address 10.1.2.3 not allowed");
        assert_eq!(err.metric_label(), "forbidden_ip");
        assert_eq!(err.http_status(), 403);
    }

    #[test]
    fn allow_list_matches_networks() {
        let mut a = auth_with(SignConfig {
            allow: vec![net("10.0.0.0/8"), net("2001:db8::/32")],
            ..SignConfig::default()
        });
        let mut r = Req::signed(NOW);
        r.peer = "10.200.0.1".parse().expect("ip");
        run(&mut a, &r, NOW).expect("v4 in list");
        let mut r = Req::signed(NOW + 1);
        r.peer = "2001:db8::7".parse().expect("ip");
        run(&mut a, &r, NOW).expect("v6 in list");
        // A non-empty list replaces the loopback default.
        let r = Req::signed(NOW + 2);
        assert_eq!(run(&mut a, &r, NOW), Err(AuthError::ForbiddenIp(LOCAL)));
    }

    #[test]
    fn ipv4_mapped_ipv6_peers_match_ipv4_rules() {
        let mut a = auth_with(SignConfig {
            allow: vec![net("10.0.0.0/8")],
            ..SignConfig::default()
        });
        let mut r = Req::signed(NOW);
        r.peer = "::ffff:10.1.2.3".parse().expect("ip");
        run(&mut a, &r, NOW).expect("mapped peer matches v4 rule");

        let mut r = Req::signed(NOW + 1);
        r.peer = "::ffff:192.168.1.1".parse().expect("ip");
        let err = run(&mut a, &r, NOW).expect_err("refused");
        // Reported as the IPv4 address the operator would write in the allow-list.
        assert_eq!(err.to_string(), "source address 192.168.1.1 not allowed");

        // And mapped rules match plain IPv4 peers.
        let mut a = auth_with(SignConfig {
            allow: vec![net("::ffff:10.0.0.0/104")],
            ..SignConfig::default()
        });
        let mut r = Req::signed(NOW);
        r.peer = "10.9.9.9".parse().expect("ip");
        run(&mut a, &r, NOW).expect("v4 peer matches mapped rule");
        assert_eq!(a.config().allow, vec![net("10.0.0.0/8")]);

        // Plain IPv6 rules do not cover IPv4 peers.
        let mut a = auth_with(SignConfig {
            allow: vec![net("::/0")],
            ..SignConfig::default()
        });
        let mut r = Req::signed(NOW);
        r.peer = "::ffff:10.1.2.3".parse().expect("ip");
        assert!(matches!(
            run(&mut a, &r, NOW),
            Err(AuthError::ForbiddenIp(_))
        ));
    }

    #[test]
    fn missing_and_empty_headers() {
        let mut a = auth();
        for name in ["account", "timestamp", "sign"] {
            let mut r = Req::signed(NOW);
            match name {
                "account" => r.account = None,
                "timestamp" => r.timestamp = None,
                _ => r.sign = None,
            }
            let err = run(&mut a, &r, NOW).expect_err("refused");
            assert_eq!(err, AuthError::MissingHeader(name));
            assert_eq!(err.to_string(), format!("missing header: {name}"));
            assert_eq!(err.metric_label(), "missing_header");
            assert_eq!(err.http_status(), 400);
        }
        let mut r = Req::signed(NOW);
        r.timestamp = Some(String::new());
        let err = run(&mut a, &r, NOW).expect_err("refused");
        assert_eq!(err.to_string(), "empty header: timestamp");
        assert_eq!(err.metric_label(), "missing_header");

        // All missing: the first in check order is reported.
        let r = Req {
            peer: LOCAL,
            account: None,
            timestamp: None,
            sign: None,
        };
        assert_eq!(
            run(&mut a, &r, NOW),
            Err(AuthError::MissingHeader("account"))
        );
    }

    #[test]
    fn timestamp_syntax_errors() {
        let mut a = auth();
        let cases = [
            ("abc", AuthError::TimestampNotNumber),
            ("12a", AuthError::TimestampNotNumber),
            (" 1700000000000", AuthError::TimestampNotNumber),
            ("+1700000000000", AuthError::TimestampNotNumber),
            ("1700000000000.0", AuthError::TimestampNotNumber),
            ("1.7e12", AuthError::TimestampNotNumber),
            ("-", AuthError::TimestampNotNumber),
            ("١٢٣", AuthError::TimestampNotNumber),
            ("-1700000000000", AuthError::TimestampNegative),
            ("18446744073709551616", AuthError::TimestampOutOfRange),
            ("99999999999999999999999999", AuthError::TimestampOutOfRange),
        ];
        for (ts, want) in cases {
            let mut r = Req::signed(NOW);
            r.sign = Some(sign("crm", ts, "s3cr3t"));
            r.timestamp = Some(ts.into());
            let err = run(&mut a, &r, NOW).expect_err(ts);
            assert_eq!(err, want, "{ts}");
            assert_eq!(err.metric_label(), "bad_timestamp");
            assert_eq!(err.http_status(), 400);
        }
        assert_eq!(
            AuthError::TimestampNotNumber.to_string(),
            "timestamp is not a number"
        );
        assert_eq!(
            AuthError::TimestampNegative.to_string(),
            "timestamp must not be negative"
        );
        assert_eq!(
            AuthError::TimestampOutOfRange.to_string(),
            "timestamp is out of range"
        );
    }

    #[test]
    fn timestamp_in_seconds_gets_its_own_message() {
        let mut a = auth();
        let err = run(&mut a, &Req::signed(NOW / 1000), NOW).expect_err("seconds");
        assert_eq!(err, AuthError::TimestampInSeconds);
        assert_eq!(
            err.to_string(),
            "timestamp must be in milliseconds, not seconds"
        );
        assert_eq!(err.metric_label(), "bad_timestamp");
        // Ten digits but far from now, e.g. a client with a wrong clock sending seconds.
        assert_eq!(
            run(&mut a, &Req::signed(1_000_000_000), NOW),
            Err(AuthError::TimestampInSeconds)
        );
        // Not ten digits and not near now as seconds: plain stale.
        assert_eq!(
            run(&mut a, &Req::signed(12_345), NOW),
            Err(AuthError::TimestampTooOld { window_ms: W })
        );
        // A ten-digit value is fine when the window accepts it as milliseconds.
        run(&mut a, &Req::signed(1_000_000_000), 1_000_000_000).expect("in window");
    }

    #[test]
    fn window_edges_are_inclusive() {
        let mut a = auth();
        run(&mut a, &Req::signed(NOW - W), NOW).expect("oldest edge");
        run(&mut a, &Req::signed(NOW + W), NOW).expect("newest edge");
        let err = run(&mut a, &Req::signed(NOW - W - 1), NOW).expect_err("too old");
        assert_eq!(err, AuthError::TimestampTooOld { window_ms: W });
        assert_eq!(
            err.to_string(),
            "timestamp is too old: outside the allowed window of ±300 s"
        );
        assert_eq!(err.metric_label(), "stale");
        assert_eq!(err.http_status(), 401);
        let err = run(&mut a, &Req::signed(NOW + W + 1), NOW).expect_err("future");
        assert_eq!(err, AuthError::TimestampInFuture { window_ms: W });
        assert_eq!(
            err.to_string(),
            "timestamp is in the future: outside the allowed window of ±300 s"
        );
        assert_eq!(err.metric_label(), "stale");
    }

    #[test]
    fn window_message_uses_milliseconds_when_not_whole_seconds() {
        let mut a = auth_with(SignConfig {
            window_ms: 1_500,
            ..SignConfig::default()
        });
        let err = run(&mut a, &Req::signed(NOW - 1_501), NOW).expect_err("stale");
        assert_eq!(
            err.to_string(),
            "timestamp is too old: outside the allowed window of ±1500 ms"
        );
    }

    #[test]
    fn far_future_timestamp_refused() {
        let mut a = auth();
        let ten_years = 10 * 365 * 24 * 3600 * 1000;
        assert_eq!(
            run(&mut a, &Req::signed(NOW + ten_years), NOW),
            Err(AuthError::TimestampInFuture { window_ms: W })
        );
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let mut a = auth();
        assert_eq!(
            run(&mut a, &Req::signed(u64::MAX), NOW),
            Err(AuthError::TimestampInFuture { window_ms: W })
        );
        assert_eq!(
            run(&mut a, &Req::signed(u64::MAX), 0),
            Err(AuthError::TimestampInFuture { window_ms: W })
        );
        assert_eq!(
            run(&mut a, &Req::signed(0), u64::MAX),
            Err(AuthError::TimestampTooOld { window_ms: W })
        );
        assert_eq!(
            run(&mut a, &Req::signed(u64::MAX / 1000), u64::MAX),
            Err(AuthError::TimestampInSeconds)
        );
        // At the very end of time the request is valid, remembered and never pruned early.
        let r = Req::signed(u64::MAX);
        run(&mut a, &r, u64::MAX).expect("accepted");
        assert_eq!(run(&mut a, &r, u64::MAX), Err(AuthError::Replayed));
        run(&mut a, &Req::signed(0), 0).expect("accepted at zero");

        let mut wide = auth_with(SignConfig {
            window_ms: u64::MAX,
            ..SignConfig::default()
        });
        run(&mut wide, &Req::signed(0), u64::MAX).expect("infinite window");
        run(&mut wide, &Req::signed(u64::MAX), 0).expect("infinite window");
        assert_eq!(
            run(&mut wide, &Req::signed(0), u64::MAX),
            Err(AuthError::Replayed)
        );
    }

    #[test]
    fn malformed_sign() {
        let mut a = auth();
        let good = sign("crm", &NOW.to_string(), "s3cr3t");
        let cases = [
            good[..31].to_string(),
            format!("{good}0"),
            format!("{}g", &good[..31]),
            format!(" {}", &good[..31]),
            "é".repeat(16),
            "0x".to_string() + &good[..30],
        ];
        for s in cases {
            let mut r = Req::signed(NOW);
            r.sign = Some(s.clone());
            let err = run(&mut a, &r, NOW).expect_err(&s);
            assert_eq!(err, AuthError::MalformedSign, "{s}");
            assert_eq!(err.to_string(), "sign must be 32 hexadecimal digits");
            assert_eq!(err.metric_label(), "bad_sign");
            assert_eq!(err.http_status(), 400);
        }
        // Checked before the account lookup: same answer for an unknown account.
        let mut r = Req::signed(NOW);
        r.account = Some("nobody".into());
        r.sign = Some("xyz".into());
        assert_eq!(run(&mut a, &r, NOW), Err(AuthError::MalformedSign));
    }

    #[test]
    fn unknown_account_and_bad_signature_look_the_same() {
        let mut a = auth();
        let ts = NOW.to_string();

        let mut unknown = Req::signed(NOW);
        unknown.account = Some("nobody".into());
        unknown.sign = Some(sign("nobody", &ts, "s3cr3t"));
        let e1 = run(&mut a, &unknown, NOW).expect_err("unknown");

        let mut wrong_secret = Req::signed(NOW);
        wrong_secret.sign = Some(sign("crm", &ts, "guess"));
        let e2 = run(&mut a, &wrong_secret, NOW).expect_err("wrong secret");

        // Signed for a different timestamp text than the one sent.
        let mut wrong_ts = Req::signed(NOW);
        wrong_ts.sign = Some(sign("crm", &(NOW + 1).to_string(), "s3cr3t"));
        let e3 = run(&mut a, &wrong_ts, NOW).expect_err("wrong ts");

        // Account names are case-sensitive.
        let mut wrong_case = Req::signed(NOW);
        wrong_case.account = Some("CRM".into());
        let e4 = run(&mut a, &wrong_case, NOW).expect_err("wrong case");

        for e in [e1, e2, e3, e4] {
            assert_eq!(e, AuthError::BadCredentials);
            assert_eq!(e.to_string(), "unknown account or bad signature");
            assert_eq!(e.metric_label(), "bad_sign");
            assert_eq!(e.http_status(), 401);
        }
        // Failed attempts are not remembered.
        assert_eq!(a.replay_entries(), 0);
        run(&mut a, &Req::signed(NOW), NOW).expect("real one still accepted");
    }

    #[test]
    fn signature_covers_timestamp_text_as_sent() {
        let mut a = auth();
        let padded = format!("000{NOW}");
        let mut r = Req::signed(NOW);
        r.sign = Some(sign("crm", &padded, "s3cr3t"));
        r.timestamp = Some(padded.clone());
        let ok = run(&mut a, &r, NOW).expect("padded text signed as sent");
        assert_eq!(ok.timestamp_ms, NOW);

        // The unpadded signature does not validate the padded text.
        let mut r = Req::signed(NOW + 1);
        r.timestamp = Some(format!("0{}", NOW + 1));
        assert_eq!(run(&mut a, &r, NOW), Err(AuthError::BadCredentials));
    }

    #[test]
    fn check_order_first_failure_wins() {
        let mut a = auth();
        let garbage = Req {
            peer: "8.8.8.8".parse().expect("ip"),
            account: None,
            timestamp: Some("x".into()),
            sign: Some("y".into()),
        };
        assert!(matches!(
            run(&mut a, &garbage, NOW),
            Err(AuthError::ForbiddenIp(_))
        ));
        let mut r = Req::signed(NOW);
        r.timestamp = Some("x".into());
        r.sign = Some("y".into());
        assert_eq!(run(&mut a, &r, NOW), Err(AuthError::TimestampNotNumber));
        let mut r = Req::signed(NOW - W - 1);
        r.sign = Some("y".into());
        assert_eq!(
            run(&mut a, &r, NOW),
            Err(AuthError::TimestampTooOld { window_ms: W })
        );
    }

    #[test]
    fn accounts_reload() {
        let mut a = auth();
        let r = Req::signed(NOW);
        run(&mut a, &r, NOW).expect("accepted");

        a.set_accounts([acct("other", "x")]);
        assert_eq!(
            run(&mut a, &Req::signed(NOW + 1), NOW),
            Err(AuthError::BadCredentials)
        );

        // Re-adding the account does not make its earlier requests replayable.
        a.set_accounts([acct("crm", "s3cr3t")]);
        assert_eq!(run(&mut a, &r, NOW), Err(AuthError::Replayed));

        // Rotated secret: old signatures fail, new ones pass. Later duplicate wins.
        a.set_accounts([acct("crm", "s3cr3t"), acct("crm", "rotated")]);
        assert_eq!(
            run(&mut a, &Req::signed(NOW + 2), NOW),
            Err(AuthError::BadCredentials)
        );
        let ts = (NOW + 3).to_string();
        let mut r = Req::signed(NOW + 3);
        r.sign = Some(sign("crm", &ts, "rotated"));
        run(&mut a, &r, NOW).expect("new secret");
    }

    #[test]
    fn account_validation() {
        assert_eq!(
            ApiAccount::new("", "x").expect_err("empty name"),
            AccountError::EmptyName
        );
        let err = ApiAccount::new("crm", "").expect_err("empty secret");
        assert_eq!(err, AccountError::EmptySecret("crm".into()));
        assert_eq!(
            err.to_string(),
            "api account \"crm\": secret must not be empty"
        );
    }

    #[test]
    fn debug_never_prints_secrets() {
        let secret = "very-secret-value-42";
        let account = acct("crm", secret);
        let shown = format!("{account:?} {:?} {account:#?}", account.secret());
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("<redacted>"));
        assert!(shown.contains("crm"));

        let a = Authenticator::new([account.clone()], SignConfig::default());
        let shown = format!("{a:?} {a:#?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("crm"));
    }

    #[test]
    fn metric_labels_are_listed() {
        let all = [
            AuthError::ForbiddenIp(LOCAL),
            AuthError::MissingHeader("sign"),
            AuthError::EmptyHeader("sign"),
            AuthError::TimestampNotNumber,
            AuthError::TimestampNegative,
            AuthError::TimestampOutOfRange,
            AuthError::TimestampInSeconds,
            AuthError::TimestampTooOld { window_ms: 1 },
            AuthError::TimestampInFuture { window_ms: 1 },
            AuthError::MalformedSign,
            AuthError::BadCredentials,
            AuthError::Replayed,
            AuthError::Overloaded,
        ];
        for e in &all {
            assert!(METRIC_LABELS.contains(&e.metric_label()), "{e:?}");
        }
        for label in METRIC_LABELS {
            assert!(all.iter().any(|e| e.metric_label() == label), "{label}");
        }
        let err = AuthError::Overloaded;
        assert_eq!(
            err.to_string(),
            "too many requests: replay cache is full, retry later"
        );
        assert_eq!(err.http_status(), 429);
        assert_eq!(AuthError::Replayed.to_string(), "request replayed");
        assert_eq!(AuthError::Replayed.metric_label(), "replay");
    }

    proptest! {
        #[test]
        fn signed_request_accepted_once(
            account in "\\PC{1,24}",
            secret in "\\PC{1,48}",
            ts in any::<u64>(),
            skew in 0..=W,
            future in any::<bool>(),
        ) {
            let now = if future { ts.saturating_sub(skew) } else { ts.saturating_add(skew) };
            let mut a = Authenticator::new(
                [ApiAccount::new(account.clone(), secret.clone()).expect("non-empty")],
                SignConfig::default(),
            );
            let ts_text = ts.to_string();
            let s = sign(&account, &ts_text, &secret);
            let req = SignedRequest {
                peer: LOCAL,
                account: Some(&account),
                timestamp: Some(&ts_text),
                sign: Some(&s),
            };
            let ok = a.check(&req, now).expect("first accepted");
            prop_assert_eq!(ok.timestamp_ms, ts);
            prop_assert_eq!(a.check(&req, now), Err(AuthError::Replayed));
        }

        #[test]
        fn arbitrary_input_never_panics(
            account in proptest::option::of(".{0,40}"),
            timestamp in proptest::option::of(".{0,40}"),
            sign_text in proptest::option::of(".{0,40}"),
            ip in any::<u128>(),
            v6 in any::<bool>(),
            now in any::<u64>(),
            window in any::<u64>(),
            max in 0usize..4,
        ) {
            let peer = if v6 {
                IpAddr::V6(Ipv6Addr::from(ip))
            } else {
                // Truncation intended: any 32 bits make an IPv4 address.
                IpAddr::V4(Ipv4Addr::from(ip as u32))
            };
            let mut a = auth_with(SignConfig {
                window_ms: window,
                allow: vec![net("0.0.0.0/0"), net("::/0")],
                max_replay_entries: max,
            });
            let req = SignedRequest {
                peer,
                account: account.as_deref(),
                timestamp: timestamp.as_deref(),
                sign: sign_text.as_deref(),
            };
            if let Err(e) = a.check(&req, now) {
                prop_assert!(!e.to_string().is_empty());
                prop_assert!(METRIC_LABELS.contains(&e.metric_label()));
            }
        }
    }
}
