//! Flood and brute-force protection for the SIP front door.
//!
//! Two independent, sans-IO limiters (every call takes `now: Instant`; nothing reads a clock):
//!
//! * **Per-IP request rate**, modelled on Kamailio's `pike` module: more than
//!   [`GuardConfig::max_requests`] requests in a [`GuardConfig::window`] bans the source address
//!   for [`GuardConfig::ban`]. Requests whose `User-Agent` names a well-known SIP scanner are
//!   dropped outright.
//! * **Per-(user, IP) authentication failures**, modelled on IvozProvider's brute-force
//!   counter: [`GuardConfig::auth_failure_limit`] failures within
//!   [`GuardConfig::auth_failure_window`] ban that username *from that address* for
//!   [`GuardConfig::auth_ban`]. Keying on the pair means an attacker cannot lock a legitimate
//!   user out from the user's own address, and one compromised host cannot hide behind many
//!   usernames without also tripping the per-IP limiter.
//!
//! # Rate algorithm
//!
//! A sliding-window approximation (the two-window scheme used by pike and by most token-less
//! rate limiters): each IP keeps the count of the current fixed window and of the previous
//! one, and the rate estimate is `current + previous × (unelapsed fraction of the current
//! window)`. Unlike a plain fixed window it does not let a client send `2 × max_requests`
//! across a window boundary, and it needs only two counters per address.
//!
//! # Memory bound
//!
//! Both tables are bounded by [`GuardConfig::max_tracked`]. When a table is full and a new key
//! arrives: expired bans are removed first; then the least-recently-seen *non-banned* entry is
//! evicted (an idle address has the least rate history to lose); bans are never evicted to
//! make room. If active bans alone fill the table, a request from a new address is dropped with
//! [`DropReason::Flood`] rather than letting the table grow: under a flood big enough to ban
//! `max_tracked` sources, failing closed for new sources is the safer choice. A consequence of
//! the bound is that a spoofing attacker who cycles through many source addresses can evict the
//! rate history of a real flooder; the bans themselves survive.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// Longest username (in bytes) kept as a failure-table key. Usernames are attacker-chosen, so
/// they are truncated to keep the table's memory bounded; two names sharing a long prefix then
/// share a counter, which only ever makes the limiter stricter for that one address.
pub const MAX_USER_KEY_BYTES: usize = 256;

/// Kamailio's default scanner `User-Agent` substrings.
pub const DEFAULT_SCANNER_USER_AGENTS: [&str; 6] = [
    "friendly",
    "scanner",
    "sipcli",
    "sipvicious",
    "vaxsipuseragent",
    "pplsip",
];

/// Guard policy. All durations are wall-clock spans measured on the caller's `Instant`s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardConfig {
    /// Master switch. When false every request is allowed and nothing is recorded (existing
    /// state is kept for when it is switched back on).
    pub enabled: bool,
    /// Rate-limit window.
    pub window: Duration,
    /// Requests allowed per window and IP; the request that makes the estimate exceed it bans.
    pub max_requests: u32,
    /// How long a flooding IP is banned.
    pub ban: Duration,
    /// Failures within `auth_failure_window` that ban a (user, IP) pair; the failure that
    /// reaches the limit bans. Zero behaves like one.
    pub auth_failure_limit: u32,
    /// Window in which authentication failures accumulate (fixed, starting at the first
    /// failure).
    pub auth_failure_window: Duration,
    /// How long a (user, IP) pair is banned.
    pub auth_ban: Duration,
    /// Networks that are never rate-limited, banned or checked for scanner user agents
    /// (trusted peers: proxies, SBCs, monitoring).
    pub allow: Vec<IpNet>,
    /// Case-insensitive `User-Agent` substrings identifying scanners. Empty strings are
    /// ignored (they would match every request).
    pub scanner_user_agents: Vec<String>,
    /// Bound on tracked IPs, and separately on tracked (user, IP) pairs. Zero behaves like one.
    pub max_tracked: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            enabled: true,
            window: Duration::from_secs(2),
            max_requests: 16,
            ban: Duration::from_secs(300),
            auth_failure_limit: 5,
            auth_failure_window: Duration::from_secs(60),
            auth_ban: Duration::from_secs(900),
            allow: Vec::new(),
            scanner_user_agents: DEFAULT_SCANNER_USER_AGENTS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            max_tracked: 100_000,
        }
    }
}

/// Decision for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Process the request.
    Allow,
    /// Drop the request silently (answering would help the attacker).
    Drop(DropReason),
}

/// Why a request is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The source IP is serving a ban.
    Banned,
    /// This request crossed the rate threshold and the IP is now banned; also returned for a
    /// new IP when active bans fill the table (see the module documentation).
    Flood,
    /// The `User-Agent` matches a known scanner.
    Scanner,
}

// ---------------------------------------------------------------------------------------------
// Bounded table with LRU eviction of unbanned entries and ordered ban expiry
// ---------------------------------------------------------------------------------------------

struct Slot<V> {
    value: V,
    /// Recency stamp (key into `lru`) while not banned.
    touch: u64,
    /// Ban expiry (key into `bans`) while banned.
    banned_until: Option<Instant>,
}

/// The table is full and every entry is an active ban.
struct Full;

/// A map whose unbanned entries are ordered by recency and whose banned entries are ordered by
/// ban expiry, so that every operation, including eviction, is O(log n). A linear scan on
/// eviction would let a spoofed-source flood cost O(n) per packet.
struct BanTable<K, V> {
    entries: HashMap<K, Slot<V>>,
    /// Unbanned keys by last touch; the first is the least recently seen.
    lru: BTreeMap<u64, K>,
    /// Banned keys by expiry.
    bans: BTreeSet<(Instant, K)>,
    next_touch: u64,
}

impl<K: Clone + Eq + Hash + Ord, V> BanTable<K, V> {
    fn new() -> Self {
        BanTable {
            entries: HashMap::new(),
            lru: BTreeMap::new(),
            bans: BTreeSet::new(),
            next_touch: 0,
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn stamp(&mut self) -> u64 {
        let t = self.next_touch;
        self.next_touch = self.next_touch.wrapping_add(1);
        t
    }

    /// Active ban expiry for `key`, if any.
    fn ban_of(&self, key: &K, now: Instant) -> Option<Instant> {
        self.entries
            .get(key)
            .and_then(|s| s.banned_until)
            .filter(|until| *until > now)
    }

    /// Removes `key` if its ban has expired, so that it starts over with fresh counters.
    fn lift_expired_ban(&mut self, key: &K, now: Instant) {
        let expired = match self.entries.get(key) {
            Some(Slot {
                banned_until: Some(until),
                ..
            }) => *until <= now,
            _ => false,
        };
        if expired {
            self.remove(key);
        }
    }

    /// The value of an unbanned entry, marked as most recently seen.
    fn touch(&mut self, key: &K) -> Option<&mut V> {
        let stamp = self.next_touch;
        let slot = self.entries.get_mut(key)?;
        if slot.banned_until.is_some() {
            return None;
        }
        if let Some(k) = self.lru.remove(&slot.touch) {
            self.lru.insert(stamp, k);
        }
        slot.touch = stamp;
        self.next_touch = self.next_touch.wrapping_add(1);
        Some(&mut slot.value)
    }

    /// Inserts a new unbanned entry (replacing any existing one), making room as described in
    /// the module documentation.
    fn insert(&mut self, key: K, value: V, now: Instant, capacity: usize) -> Result<&mut V, Full> {
        // Keeps the indexes consistent even if a caller inserts a key that is present.
        self.remove(&key);
        if self.entries.len() >= capacity {
            self.expire_bans(now);
        }
        while self.entries.len() >= capacity {
            let Some((_, victim)) = self.lru.pop_first() else {
                return Err(Full);
            };
            self.entries.remove(&victim);
        }
        let touch = self.stamp();
        self.lru.insert(touch, key.clone());
        let slot = self.entries.entry(key).or_insert(Slot {
            value,
            touch,
            banned_until: None,
        });
        Ok(&mut slot.value)
    }

    /// Bans an existing unbanned entry until `until`.
    fn ban(&mut self, key: &K, until: Instant) {
        let Some(slot) = self.entries.get_mut(key) else {
            return;
        };
        if slot.banned_until.is_some() {
            return;
        }
        if let Some(k) = self.lru.remove(&slot.touch) {
            self.bans.insert((until, k));
        }
        slot.banned_until = Some(until);
    }

    fn remove(&mut self, key: &K) {
        if let Some(slot) = self.entries.remove(key) {
            match slot.banned_until {
                Some(until) => {
                    self.bans.remove(&(until, key.clone()));
                }
                None => {
                    self.lru.remove(&slot.touch);
                }
            }
        }
    }

    /// Removes every ban that has run out.
    fn expire_bans(&mut self, now: Instant) {
        while let Some((until, _)) = self.bans.first() {
            if *until > now {
                break;
            }
            if let Some((_, key)) = self.bans.pop_first() {
                self.entries.remove(&key);
            }
        }
    }

    /// Removes expired bans and unbanned entries for which `idle` is true.
    fn sweep(&mut self, now: Instant, idle: impl Fn(&V) -> bool) {
        self.expire_bans(now);
        let stale: Vec<K> = self
            .lru
            .values()
            .filter(|k| self.entries.get(*k).is_some_and(|s| idle(&s.value)))
            .cloned()
            .collect();
        for key in stale {
            self.remove(&key);
        }
    }

    /// Shrinks to `capacity`: least-recently-seen unbanned entries first, then the bans that
    /// would expire soonest (a reload to a smaller bound must still bound memory).
    fn shrink_to(&mut self, capacity: usize) {
        while self.entries.len() > capacity {
            if let Some((_, key)) = self.lru.pop_first() {
                self.entries.remove(&key);
            } else if let Some((_, key)) = self.bans.pop_first() {
                self.entries.remove(&key);
            } else {
                break;
            }
        }
    }

    fn active_bans(&self, now: Instant) -> usize {
        // `bans` is ordered by expiry, so active bans form a suffix.
        self.bans
            .iter()
            .rev()
            .take_while(|(until, _)| *until > now)
            .count()
    }
}

// ---------------------------------------------------------------------------------------------
// Per-key state
// ---------------------------------------------------------------------------------------------

/// Two-window rate state (see the module documentation).
#[derive(Clone, Copy, Debug)]
struct RateState {
    window_start: Instant,
    current: u32,
    previous: u32,
}

impl RateState {
    fn new(now: Instant) -> Self {
        RateState {
            window_start: now,
            current: 0,
            previous: 0,
        }
    }

    /// Counts one request at `now`; returns true if the estimated rate now exceeds `max`.
    fn record(&mut self, now: Instant, window: Duration, max: u32) -> bool {
        // A zero window would divide by zero; treat it as the smallest representable one.
        let w = window.as_nanos().max(1);
        // `saturating_duration_since` makes a non-monotonic caller clock harmless.
        let mut elapsed = now.saturating_duration_since(self.window_start).as_nanos();
        if elapsed >= 2 * w {
            *self = RateState::new(now);
            elapsed = 0;
        } else if elapsed >= w {
            self.previous = self.current;
            self.current = 0;
            self.window_start = self.window_start.checked_add(window).unwrap_or(now);
            elapsed -= w;
        }
        self.current = self.current.saturating_add(1);
        // estimate = current + previous × (w − elapsed) / w, compared without dividing so
        // the fractional part is not lost (flooring would let a boundary burst through).
        // All terms are below u32::MAX × 2^64 × 10^9 < 2^127, so nothing saturates in practice.
        let estimate_w = u128::from(self.current)
            .saturating_mul(w)
            .saturating_add(u128::from(self.previous).saturating_mul(w - elapsed));
        estimate_w > u128::from(max).saturating_mul(w)
    }

    /// True once both windows have rolled out: the entry carries no information.
    fn is_idle(&self, now: Instant, window: Duration) -> bool {
        now.saturating_duration_since(self.window_start) >= window.saturating_mul(2)
    }
}

/// Fixed-window authentication failure counter.
#[derive(Clone, Copy, Debug)]
struct FailureState {
    window_start: Instant,
    failures: u32,
}

impl FailureState {
    /// Counts one failure; returns true if the limit is reached.
    fn record(&mut self, now: Instant, window: Duration, limit: u32) -> bool {
        if now.saturating_duration_since(self.window_start) >= window {
            self.window_start = now;
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.failures >= limit.max(1)
    }

    fn is_idle(&self, now: Instant, window: Duration) -> bool {
        now.saturating_duration_since(self.window_start) >= window
    }
}

type UserKey = (String, IpAddr);

// ---------------------------------------------------------------------------------------------
// Guard
// ---------------------------------------------------------------------------------------------

/// Flood and brute-force guard. Not internally synchronised: the daemon owns one and serialises
/// access (it is `Send`).
pub struct Guard {
    cfg: GuardConfig,
    /// Lowercased, non-empty scanner patterns.
    scanners: Vec<String>,
    ips: BanTable<IpAddr, RateState>,
    users: BanTable<UserKey, FailureState>,
}

/// `now + d`, saturating instead of panicking when `d` is absurdly large (e.g. a "forever"
/// ban configured as `Duration::MAX`).
fn deadline(now: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(d)
        .or_else(|| now.checked_add(CENTURY))
        .unwrap_or(now)
}

fn user_key(user: &str, ip: IpAddr) -> UserKey {
    (
        crate::text::truncate(user, MAX_USER_KEY_BYTES).to_owned(),
        ip.to_canonical(),
    )
}

fn normalise_scanners(patterns: &[String]) -> Vec<String> {
    patterns
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| p.to_ascii_lowercase())
        .collect()
}

impl Guard {
    /// Creates a guard with empty tables.
    pub fn new(cfg: GuardConfig) -> Self {
        Guard {
            scanners: normalise_scanners(&cfg.scanner_user_agents),
            cfg,
            ips: BanTable::new(),
            users: BanTable::new(),
        }
    }

    /// Replaces the configuration (live reload). Current bans, with their original expiry, and
    /// counters are kept; the tables are shrunk if `max_tracked` got smaller.
    pub fn set_config(&mut self, cfg: GuardConfig) {
        self.scanners = normalise_scanners(&cfg.scanner_user_agents);
        let cap = cfg.max_tracked.max(1);
        self.ips.shrink_to(cap);
        self.users.shrink_to(cap);
        self.cfg = cfg;
    }

    /// The current configuration.
    pub fn config(&self) -> &GuardConfig {
        &self.cfg
    }

    fn capacity(&self) -> usize {
        self.cfg.max_tracked.max(1)
    }

    fn is_allowed(&self, ip: IpAddr) -> bool {
        self.cfg.allow.iter().any(|net| net.contains(&ip))
    }

    fn is_scanner(&self, user_agent: &str) -> bool {
        if self.scanners.is_empty() {
            return false;
        }
        // One linear lowercase pass, then substring searches that are linear too, so an
        // oversized User-Agent costs O(len) rather than O(len × pattern).
        let ua = user_agent.to_ascii_lowercase();
        self.scanners.iter().any(|p| ua.contains(p.as_str()))
    }

    /// Decides whether to process a request from `ip` (with its `User-Agent`, if any) and
    /// accounts for it.
    ///
    /// Order: allow-list (always allowed), active ban, scanner `User-Agent` (dropped without
    /// being counted or tracked, so rotating scanners cannot fill the table), then the rate
    /// limiter. A ban is not extended by traffic received while banned, as in pike.
    pub fn check_request(&mut self, ip: IpAddr, user_agent: Option<&str>, now: Instant) -> Verdict {
        if !self.cfg.enabled {
            return Verdict::Allow;
        }
        // IPv4-mapped IPv6 (dual-stack sockets) is the same client as its IPv4 form.
        let ip = ip.to_canonical();
        if self.is_allowed(ip) {
            return Verdict::Allow;
        }
        self.ips.lift_expired_ban(&ip, now);
        if self.ips.ban_of(&ip, now).is_some() {
            return Verdict::Drop(DropReason::Banned);
        }
        if user_agent.is_some_and(|ua| self.is_scanner(ua)) {
            return Verdict::Drop(DropReason::Scanner);
        }
        let (window, max, cap) = (self.cfg.window, self.cfg.max_requests, self.capacity());
        let exceeded = match self.ips.touch(&ip) {
            Some(state) => state.record(now, window, max),
            None => match self.ips.insert(ip, RateState::new(now), now, cap) {
                Ok(state) => state.record(now, window, max),
                Err(Full) => return Verdict::Drop(DropReason::Flood),
            },
        };
        if exceeded {
            self.ips.ban(&ip, deadline(now, self.cfg.ban));
            Verdict::Drop(DropReason::Flood)
        } else {
            Verdict::Allow
        }
    }

    /// True if `user` is banned from authenticating from `ip`. Check this before verifying
    /// credentials, and answer as for a wrong password so the ban is not an oracle.
    pub fn is_user_banned(&self, user: &str, ip: IpAddr, now: Instant) -> bool {
        if !self.cfg.enabled {
            return false;
        }
        let key = user_key(user, ip);
        if self.is_allowed(key.1) {
            return false;
        }
        self.users.ban_of(&key, now).is_some()
    }

    /// Records a failed authentication of `user` from `ip`. Returns true when this failure
    /// bans the pair. Failures while already banned are not counted (and return false).
    ///
    /// If the table is full of active bans the failure cannot be tracked and is ignored; the
    /// per-IP rate limiter still bounds the guessing rate.
    pub fn record_auth_failure(&mut self, user: &str, ip: IpAddr, now: Instant) -> bool {
        if !self.cfg.enabled {
            return false;
        }
        let key = user_key(user, ip);
        if self.is_allowed(key.1) {
            return false;
        }
        self.users.lift_expired_ban(&key, now);
        if self.users.ban_of(&key, now).is_some() {
            return false;
        }
        let (window, limit, cap) = (
            self.cfg.auth_failure_window,
            self.cfg.auth_failure_limit,
            self.capacity(),
        );
        let reached = match self.users.touch(&key) {
            Some(state) => state.record(now, window, limit),
            None => {
                let fresh = FailureState {
                    window_start: now,
                    failures: 0,
                };
                match self.users.insert(key.clone(), fresh, now, cap) {
                    Ok(state) => state.record(now, window, limit),
                    Err(Full) => return false,
                }
            }
        };
        if reached {
            self.users.ban(&key, deadline(now, self.cfg.auth_ban));
        }
        reached
    }

    /// Records a successful authentication: resets the pair's failure count. An active ban is
    /// left in place (a success should not happen while banned, since callers check
    /// [`Self::is_user_banned`] first; if it does, it must not lift the ban early).
    pub fn record_auth_success(&mut self, user: &str, ip: IpAddr) {
        let key = user_key(user, ip);
        let banned = self
            .users
            .entries
            .get(&key)
            .is_some_and(|s| s.banned_until.is_some());
        if !banned {
            self.users.remove(&key);
        }
    }

    /// Drops expired bans and entries whose windows have rolled out. Call periodically (e.g.
    /// every few seconds); the tables are bounded regardless.
    pub fn sweep(&mut self, now: Instant) {
        let window = self.cfg.window;
        self.ips.sweep(now, |s| s.is_idle(now, window));
        let window = self.cfg.auth_failure_window;
        self.users.sweep(now, |s| s.is_idle(now, window));
    }

    /// Number of IPs currently banned (for metrics).
    pub fn banned_ips(&self, now: Instant) -> usize {
        self.ips.active_bans(now)
    }

    /// Number of (user, IP) pairs currently banned (for metrics).
    pub fn banned_users(&self, now: Instant) -> usize {
        self.users.active_bans(now)
    }

    /// Number of IPs tracked, banned or not (for metrics; at most `max_tracked`).
    pub fn tracked_ips(&self) -> usize {
        self.ips.len()
    }

    /// Number of (user, IP) pairs tracked, banned or not (at most `max_tracked`).
    pub fn tracked_users(&self) -> usize {
        self.users.len()
    }
}

/// Summarises instead of dumping the tables, which can hold 100k entries of client data.
impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("cfg", &self.cfg)
            .field("tracked_ips", &self.ips.len())
            .field("tracked_users", &self.users.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, last))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(m: u64) -> Duration {
        Duration::from_millis(m)
    }

    #[test]
    fn seventeenth_request_in_window_bans_for_300s() {
        let mut g = Guard::new(GuardConfig::default());
        let t0 = Instant::now();
        for i in 0..16 {
            assert_eq!(
                g.check_request(ip(1), Some("Yealink"), t0 + ms(i * 100)),
                Verdict::Allow,
                "request {}",
                i + 1
            );
        }
        let t_ban = t0 + ms(1600);
        assert_eq!(
            g.check_request(ip(1), None, t_ban),
            Verdict::Drop(DropReason::Flood)
        );
        assert_eq!(g.banned_ips(t_ban), 1);
        // Everything is dropped until the ban runs out, however slowly it arrives.
        for s in [1, 10, 100, 299] {
            assert_eq!(
                g.check_request(ip(1), None, t_ban + secs(s)),
                Verdict::Drop(DropReason::Banned),
                "+{s}s"
            );
        }
        assert_eq!(
            g.check_request(ip(1), None, t_ban + secs(299) + ms(999)),
            Verdict::Drop(DropReason::Banned)
        );
        // Other sources are unaffected.
        assert_eq!(g.check_request(ip(2), None, t_ban), Verdict::Allow);
        // After 300 s the IP starts over with a clean slate.
        let after = t_ban + secs(300);
        assert_eq!(g.banned_ips(after), 0);
        assert_eq!(g.check_request(ip(1), None, after), Verdict::Allow);
        for i in 1..16 {
            assert_eq!(g.check_request(ip(1), None, after + ms(i)), Verdict::Allow);
        }
        assert_eq!(
            g.check_request(ip(1), None, after + ms(20)),
            Verdict::Drop(DropReason::Flood)
        );
    }

    #[test]
    fn spread_out_requests_never_ban() {
        let mut g = Guard::new(GuardConfig::default());
        let t0 = Instant::now();
        // Ten minutes at 4 requests per second (half the limit)...
        for i in 0..(4 * 600) {
            assert_eq!(
                g.check_request(ip(1), None, t0 + ms(i * 250)),
                Verdict::Allow,
                "request {i}"
            );
        }
        // ...and ten minutes at ~7.5 per second (just under 16 per 2 s window) from another IP.
        for i in 0..4500 {
            assert_eq!(
                g.check_request(ip(2), None, t0 + ms(i * 134)),
                Verdict::Allow,
                "request {i}"
            );
        }
        assert_eq!(g.banned_ips(t0 + secs(600)), 0);
    }

    #[test]
    fn sliding_estimate_catches_bursts_across_window_boundary() {
        let mut g = Guard::new(GuardConfig::default());
        let t0 = Instant::now();
        // 16 at the very end of one window, then a burst just after the boundary: a plain
        // fixed window would allow 32 in ~0.2 s.
        for i in 0..16 {
            assert_eq!(
                g.check_request(ip(1), None, t0 + ms(1900) + Duration::from_micros(i)),
                Verdict::Allow
            );
        }
        // First request of the window anchored at t0 was at t0 + 1.9 s, so that is where the
        // window starts; 16 is the full budget for it.
        let next = t0 + ms(1900) + secs(2) + ms(100);
        assert_eq!(
            g.check_request(ip(1), None, next),
            Verdict::Drop(DropReason::Flood),
            "previous window's 16 still weigh 95%"
        );
    }

    #[test]
    fn allow_listed_ips_never_ban_and_skip_scanner_check() {
        let cfg = GuardConfig {
            allow: vec![
                "203.0.113.0/28".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            ..GuardConfig::default()
        };
        let mut g = Guard::new(cfg);
        let t0 = Instant::now();
        let v6 = IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap());
        for i in 0..1000 {
            assert_eq!(
                g.check_request(ip(1), Some("sipvicious"), t0 + ms(i)),
                Verdict::Allow
            );
            assert_eq!(g.check_request(v6, None, t0 + ms(i)), Verdict::Allow);
        }
        for _ in 0..100 {
            assert!(!g.record_auth_failure("alice", ip(1), t0));
        }
        assert!(!g.is_user_banned("alice", ip(1), t0));
        assert_eq!(g.tracked_ips(), 0);
        assert_eq!(g.tracked_users(), 0);
        // An IPv4-mapped form of an allow-listed IPv4 address is allow-listed too.
        let mapped = IpAddr::V6(Ipv4Addr::new(203, 0, 113, 1).to_ipv6_mapped());
        assert_eq!(
            g.check_request(mapped, Some("friendly-scanner"), t0),
            Verdict::Allow
        );
        // Outside the allow-list the same traffic is limited.
        let outside = ip(200);
        let verdicts: Vec<_> = (0..17)
            .map(|i| g.check_request(outside, None, t0 + ms(i)))
            .collect();
        assert_eq!(verdicts[16], Verdict::Drop(DropReason::Flood));
    }

    #[test]
    fn scanner_user_agents_dropped_case_insensitively() {
        let mut g = Guard::new(GuardConfig::default());
        let t0 = Instant::now();
        for ua in [
            "friendly-scanner",
            "FRIENDLY-SCANNER",
            "SIPVicious 0.3.4",
            "sipcli/v1.8",
            "VaxSIPUserAgent/3.1",
            "PPLSIP",
            "my Scanner",
        ] {
            assert_eq!(
                g.check_request(ip(1), Some(ua), t0),
                Verdict::Drop(DropReason::Scanner),
                "{ua}"
            );
        }
        assert_eq!(
            g.check_request(ip(1), Some("Yealink SIP-T46S"), t0),
            Verdict::Allow
        );
        assert_eq!(g.check_request(ip(1), None, t0), Verdict::Allow);
        // Scanner drops are not tracked, so they cannot fill the table.
        assert_eq!(g.tracked_ips(), 1);
        // Custom lists replace the default; empty patterns are ignored.
        g.set_config(GuardConfig {
            scanner_user_agents: vec![String::new(), "EvilUA".into()],
            ..GuardConfig::default()
        });
        assert_eq!(
            g.check_request(ip(3), Some("xx-eviluA-xx"), t0),
            Verdict::Drop(DropReason::Scanner)
        );
        assert_eq!(
            g.check_request(ip(3), Some("sipvicious"), t0),
            Verdict::Allow
        );
        assert_eq!(g.check_request(ip(3), Some(""), t0), Verdict::Allow);
    }

    #[test]
    fn auth_failures_ban_user_ip_pair_only() {
        let mut g = Guard::new(GuardConfig::default());
        let t0 = Instant::now();
        for i in 0..4 {
            assert!(!g.record_auth_failure("alice", ip(1), t0 + secs(i)));
            assert!(!g.is_user_banned("alice", ip(1), t0 + secs(i)));
        }
        assert!(
            g.record_auth_failure("alice", ip(1), t0 + secs(4)),
            "5th failure bans"
        );
        let t = t0 + secs(5);
        assert!(g.is_user_banned("alice", ip(1), t));
        assert!(!g.is_user_banned("alice", ip(2), t), "same user, other IP");
        assert!(!g.is_user_banned("bob", ip(1), t), "other user, same IP");
        assert_eq!(g.banned_users(t), 1);
        // Further failures while banned neither re-ban nor extend.
        assert!(!g.record_auth_failure("alice", ip(1), t));
        // The ban lasts auth_ban (900 s) from the banning failure.
        assert!(g.is_user_banned("alice", ip(1), t0 + secs(4) + secs(899)));
        assert!(!g.is_user_banned("alice", ip(1), t0 + secs(4) + secs(900)));
        assert_eq!(g.banned_users(t0 + secs(904)), 0);
        // The IP itself is not rate-banned by auth failures.
        assert_eq!(g.check_request(ip(1), None, t), Verdict::Allow);
    }

    #[test]
    fn failures_outside_the_window_do_not_accumulate() {
        let mut g = Guard::new(GuardConfig::default());
        let t0 = Instant::now();
        for i in 0..20 {
            // Four failures per 60 s window, never five.
            let t = t0 + secs(60 * (i / 4)) + secs(i % 4);
            assert!(!g.record_auth_failure("alice", ip(1), t), "failure {i}");
        }
        assert!(!g.is_user_banned("alice", ip(1), t0 + secs(400)));
    }

    #[test]
    fn success_resets_failure_count() {
        let mut g = Guard::new(GuardConfig::default());
        let t0 = Instant::now();
        for _ in 0..4 {
            assert!(!g.record_auth_failure("alice", ip(1), t0));
        }
        g.record_auth_success("alice", ip(1));
        assert_eq!(g.tracked_users(), 0);
        for _ in 0..4 {
            assert!(!g.record_auth_failure("alice", ip(1), t0));
        }
        assert!(!g.is_user_banned("alice", ip(1), t0));
        assert!(g.record_auth_failure("alice", ip(1), t0));
        // Success does not lift an active ban.
        g.record_auth_success("alice", ip(1));
        assert!(g.is_user_banned("alice", ip(1), t0));
    }

    #[test]
    fn long_usernames_are_truncated_consistently() {
        let mut g = Guard::new(GuardConfig::default());
        let t0 = Instant::now();
        let long = "\u{e9}".repeat(1000);
        for _ in 0..5 {
            g.record_auth_failure(&long, ip(1), t0);
        }
        assert!(g.is_user_banned(&long, ip(1), t0));
        assert!(g
            .users
            .entries
            .keys()
            .all(|(u, _)| u.len() <= MAX_USER_KEY_BYTES));
    }

    #[test]
    fn reload_keeps_bans() {
        let mut g = Guard::new(GuardConfig::default());
        let t0 = Instant::now();
        for i in 0..17 {
            g.check_request(ip(1), None, t0 + ms(i));
        }
        for _ in 0..5 {
            g.record_auth_failure("alice", ip(2), t0);
        }
        g.set_config(GuardConfig {
            max_requests: 1000,
            ban: secs(1),
            auth_failure_limit: 1000,
            auth_ban: secs(1),
            ..GuardConfig::default()
        });
        let t = t0 + secs(10);
        assert_eq!(
            g.check_request(ip(1), None, t),
            Verdict::Drop(DropReason::Banned)
        );
        assert!(g.is_user_banned("alice", ip(2), t));
        assert_eq!(g.banned_ips(t), 1);
        assert_eq!(g.banned_users(t), 1);
        // Disabling lets traffic through but keeps state for re-enabling.
        g.set_config(GuardConfig {
            enabled: false,
            ..GuardConfig::default()
        });
        assert_eq!(g.check_request(ip(1), None, t), Verdict::Allow);
        assert!(!g.is_user_banned("alice", ip(2), t));
        g.set_config(GuardConfig::default());
        assert_eq!(
            g.check_request(ip(1), None, t),
            Verdict::Drop(DropReason::Banned)
        );
    }

    #[test]
    fn full_table_evicts_idle_entries_but_never_bans() {
        let cfg = GuardConfig {
            max_tracked: 3,
            ..GuardConfig::default()
        };
        let mut g = Guard::new(cfg);
        let t0 = Instant::now();
        // Ban ip(1) and ip(2).
        for victim in [1, 2] {
            for i in 0..17 {
                g.check_request(ip(victim), None, t0 + ms(i));
            }
        }
        assert_eq!(g.banned_ips(t0), 2);
        // Room for one unbanned entry, which is recycled among new sources.
        for n in 10..20 {
            assert_eq!(g.check_request(ip(n), None, t0 + ms(50)), Verdict::Allow);
            assert_eq!(g.tracked_ips(), 3);
        }
        assert_eq!(
            g.check_request(ip(1), None, t0 + ms(60)),
            Verdict::Drop(DropReason::Banned)
        );
        assert_eq!(
            g.check_request(ip(2), None, t0 + ms(60)),
            Verdict::Drop(DropReason::Banned)
        );
        // Ban the third slot too: now new sources are refused rather than growing the table.
        for i in 0..17 {
            g.check_request(ip(19), None, t0 + ms(100 + i));
        }
        assert_eq!(g.banned_ips(t0 + ms(200)), 3);
        assert_eq!(
            g.check_request(ip(50), None, t0 + ms(200)),
            Verdict::Drop(DropReason::Flood)
        );
        assert_eq!(g.tracked_ips(), 3);
        // Once bans expire, new sources get in again.
        assert_eq!(
            g.check_request(ip(50), None, t0 + secs(301)),
            Verdict::Allow
        );
        assert_eq!(g.banned_ips(t0 + secs(301)), 0);
    }

    #[test]
    fn sweep_drops_expired_state() {
        let mut g = Guard::new(GuardConfig::default());
        let t0 = Instant::now();
        for i in 0..17 {
            g.check_request(ip(1), None, t0 + ms(i));
        }
        g.check_request(ip(2), None, t0);
        g.record_auth_failure("alice", ip(3), t0);
        for _ in 0..5 {
            g.record_auth_failure("bob", ip(3), t0);
        }
        g.sweep(t0 + secs(3));
        assert_eq!(g.tracked_ips(), 2, "ip(2)'s previous window still counts");
        g.sweep(t0 + secs(4));
        assert_eq!(g.tracked_ips(), 1, "idle ip(2) dropped, ban kept");
        assert_eq!(g.tracked_users(), 2);
        g.sweep(t0 + secs(61));
        assert_eq!(
            g.tracked_users(),
            1,
            "alice's window rolled out, bob's ban kept"
        );
        g.sweep(t0 + secs(901));
        assert_eq!(g.tracked_ips(), 0);
        assert_eq!(g.tracked_users(), 0);
    }

    #[test]
    fn degenerate_config_does_not_panic() {
        let cfg = GuardConfig {
            window: Duration::ZERO,
            max_requests: 0,
            ban: Duration::MAX,
            auth_failure_limit: 0,
            auth_failure_window: Duration::ZERO,
            auth_ban: Duration::MAX,
            max_tracked: 0,
            ..GuardConfig::default()
        };
        let mut g = Guard::new(cfg);
        let t0 = Instant::now();
        assert_eq!(
            g.check_request(ip(1), None, t0),
            Verdict::Drop(DropReason::Flood)
        );
        assert_eq!(
            g.check_request(ip(1), None, t0 + secs(1_000_000)),
            Verdict::Drop(DropReason::Banned)
        );
        assert!(g.record_auth_failure("a", ip(1), t0));
        assert!(g.tracked_ips() <= 1);
        // Time going backwards is tolerated.
        let mut g = Guard::new(GuardConfig::default());
        g.check_request(ip(1), None, t0 + secs(10));
        assert_eq!(g.check_request(ip(1), None, t0), Verdict::Allow);
        assert!(!g.record_auth_failure("a", ip(1), t0 + secs(10)));
        assert!(!g.record_auth_failure("a", ip(1), t0));
    }

    #[test]
    fn debug_is_a_summary() {
        let mut g = Guard::new(GuardConfig::default());
        g.record_auth_failure("secret-user-name", ip(1), Instant::now());
        let dbg = format!("{g:?}");
        assert!(!dbg.contains("secret-user-name"));
        assert!(dbg.contains("tracked_users: 1"));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Request(u16, u64),
        Failure(u8, u16, u64),
        Success(u8, u16),
        Sweep(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<u16>(), 0u64..500).prop_map(|(a, dt)| Op::Request(a, dt)),
            3 => (0u8..8, any::<u16>(), 0u64..500).prop_map(|(u, a, dt)| Op::Failure(u, a, dt)),
            1 => (0u8..8, any::<u16>()).prop_map(|(u, a)| Op::Success(u, a)),
            1 => (0u64..400_000).prop_map(Op::Sweep),
        ]
    }

    fn addr(a: u16) -> IpAddr {
        // Mix a few hot addresses (which get banned) with many cold ones (which fill the table).
        let a = match a % 4 {
            0 => a % 8,
            _ => a,
        };
        let [hi, lo] = a.to_be_bytes();
        if a % 3 == 0 {
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                0,
                0,
                0,
                u16::from(hi),
                u16::from(lo),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, 0, hi, lo))
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
        fn tables_stay_bounded(max_tracked in 1usize..32, ops in proptest::collection::vec(op(), 1..400)) {
            let cfg = GuardConfig {
                max_tracked,
                max_requests: 3,
                auth_failure_limit: 2,
                ..GuardConfig::default()
            };
            let mut g = Guard::new(cfg);
            let mut now = Instant::now();
            for op in ops {
                match op {
                    Op::Request(a, dt) => {
                        now += ms(dt);
                        g.check_request(addr(a), None, now);
                    }
                    Op::Failure(u, a, dt) => {
                        now += ms(dt);
                        g.record_auth_failure(&format!("u{u}"), addr(a), now);
                    }
                    Op::Success(u, a) => g.record_auth_success(&format!("u{u}"), addr(a)),
                    Op::Sweep(dt) => {
                        now += ms(dt);
                        g.sweep(now);
                    }
                }
                prop_assert!(g.tracked_ips() <= max_tracked);
                prop_assert!(g.tracked_users() <= max_tracked);
                prop_assert!(g.banned_ips(now) <= g.tracked_ips());
                // Index consistency: every entry is in exactly one of the two indexes.
                prop_assert_eq!(g.ips.entries.len(), g.ips.lru.len() + g.ips.bans.len());
                prop_assert_eq!(g.users.entries.len(), g.users.lru.len() + g.users.bans.len());
            }
        }

        #[test]
        fn a_banned_ip_stays_banned_until_expiry(max_tracked in 1usize..8, others in proptest::collection::vec(any::<u16>(), 0..200)) {
            let cfg = GuardConfig { max_tracked, ..GuardConfig::default() };
            let mut g = Guard::new(cfg);
            let t0 = Instant::now();
            let victim = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
            for i in 0..17 {
                g.check_request(victim, None, t0 + ms(i));
            }
            // However many other sources show up, the ban is never evicted.
            for (i, a) in others.into_iter().enumerate() {
                let t = t0 + ms(20 + i as u64);
                g.check_request(addr(a), None, t);
                prop_assert_eq!(g.check_request(victim, None, t), Verdict::Drop(DropReason::Banned));
            }
        }
    }
}
