//! Typed configuration with embedded defaults and validation.
//!
//! Every key has a default, so `gridedge run` with no file runs a loopback-only daemon with its
//! state under `./state`. Unknown keys are refused (a typo must not silently fall back to a
//! default), and [`Config::validate`] names the offending key in every error.
//! `config/gridedge.toml` documents each key; keep the two in step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use crate::sip::digest::Algorithm;

/// A configuration problem, always naming the key it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

/// `Ok` when `v` is within `lo..=hi`, else the key and why: the check every section's
/// `validate` makes of its numbers.
pub fn check_range(
    key: &'static str,
    v: u64,
    lo: u64,
    hi: u64,
) -> Result<(), (&'static str, String)> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err((key, format!("must be between {lo} and {hi}")))
    }
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub log: LogConfig,
    pub state: StateConfig,
    pub http: HttpConfig,
    pub sip: SipConfig,
    /// Extensions seeded into the store at start-up and on reload. Passwords given here are
    /// hashed into per-algorithm HA1 values before they reach the store.
    pub extensions: Vec<ExtensionSeed>,
    pub directory: DirectoryConfig,
    pub presence: PresenceConfig,
    pub management: ManagementConfig,
    /// Agents known before the grid pushes any (`[[agents]]`).
    pub agents: Vec<crate::agents::directory::Agent>,
    pub skill_groups: Vec<crate::agents::directory::SkillGroup>,
    pub access_numbers: Vec<crate::agents::directory::AccessNumber>,
    pub esl: EslConfig,
    pub cdr: CdrConfig,
    pub outbox: crate::outbox::OutboxConfig,
    pub grid: crate::grid::targets::GridConfig,
    /// `[grid_api]`: the routes the grid platform calls (seed 000 §二 网格化调用端).
    pub grid_api: crate::api::grid::GridApiConfig,
    /// `[dialer]`: the campaign runtime (call tasks, lines, origination).
    pub dialer: crate::dialer::config::DialerConfig,
    /// `[recording]`: the recording server (SIP URIs, media ports, outputs, keys, retention).
    pub recording: crate::recording::config::RecordingConfig,
}

/// `[esl]`: the FreeSWITCH event socket gridedge connects to (inbound mode).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EslConfig {
    /// Off by default: gridedge runs without a softswitch until one is configured.
    pub enabled: bool,
    /// `host:port` of mod_event_socket.
    pub address: String,
    /// The event socket password (FreeSWITCH's default is `ClueCon`). Prefer `password_file`.
    pub password: String,
    /// A file holding the password (first line), read at start-up; overrides `password`.
    pub password_file: Option<PathBuf>,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    pub connect_timeout_ms: u64,
    pub api_timeout_ms: u64,
    /// Events queued for the consumer; beyond it events are dropped and a resync follows.
    pub queue: usize,
    /// Largest frame body accepted (`show channels as json` can be large).
    pub max_frame_bytes: usize,
}

impl std::fmt::Debug for EslConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EslConfig")
            .field("enabled", &self.enabled)
            .field("address", &self.address)
            .field("password", &"<redacted>")
            .field("password_file", &self.password_file)
            .field("reconnect_min_ms", &self.reconnect_min_ms)
            .field("reconnect_max_ms", &self.reconnect_max_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("api_timeout_ms", &self.api_timeout_ms)
            .field("queue", &self.queue)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .finish()
    }
}

impl Default for EslConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            address: "127.0.0.1:8021".into(),
            password: "ClueCon".into(),
            password_file: None,
            reconnect_min_ms: 200,
            reconnect_max_ms: 30_000,
            connect_timeout_ms: 5_000,
            api_timeout_ms: 10_000,
            queue: 10_000,
            max_frame_bytes: 16 * 1024 * 1024,
        }
    }
}

/// `[cdr]`: the mod_json_cdr receiver, its error-directory sweeper, reconciliation and the
/// grid call-record format.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdrConfig {
    /// Path of the receiver on the HTTP listener (mod_json_cdr's `url`).
    pub receiver_path: String,
    /// Source networks allowed to post CDRs; empty = loopback only.
    pub allow: Vec<ipnet::IpNet>,
    /// HTTP Basic credentials FreeSWITCH must send (`cred` in json_cdr.conf), `user:password`;
    /// empty = none required.
    pub credentials: String,
    /// Largest accepted CDR post, in bytes.
    pub max_body_bytes: usize,
    /// mod_json_cdr / mod_xml_cdr `err-log-dir`s to sweep: FreeSWITCH never re-sends what it
    /// writes there. Ingested files move to `<dir>/ingested/`, unreadable ones to `<dir>/refused/`.
    pub error_dirs: Vec<PathBuf>,
    pub sweep_interval_secs: u64,
    /// Which legs FreeSWITCH posts documents for: all_legs (`log-b-leg=true`), a_leg_only, none.
    pub documents: crate::cdr::reconcile::DocPolicy,
    /// How long a call waits for missing legs or documents before it is built from what came.
    pub settle_secs: u64,
    /// How long a call whose first leg has not been seen waits for it (a caller may still be
    /// queued after an agent leg ended); at least `settle_secs`.
    pub orphan_secs: u64,
    /// Calls held open at once; beyond it the oldest is built early.
    pub max_pending: usize,
    /// Days the received legs (with their raw documents) are kept after their call was built;
    /// the call records themselves stay. 0 = keep forever.
    pub leg_retention_days: u64,
    /// strftime pattern of the grid record's times, and their zone.
    pub time_format: String,
    pub timezone: String,
    /// Channel variables holding a recording id, in order of preference.
    pub recording_variables: Vec<String>,
    pub mapping: crate::cdr::mapping::CdrMapping,
}

impl std::fmt::Debug for CdrConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdrConfig")
            .field("receiver_path", &self.receiver_path)
            .field("allow", &self.allow)
            .field(
                "credentials",
                &(!self.credentials.is_empty()).then_some("<redacted>"),
            )
            .field("max_body_bytes", &self.max_body_bytes)
            .field("error_dirs", &self.error_dirs)
            .field("sweep_interval_secs", &self.sweep_interval_secs)
            .field("documents", &self.documents)
            .field("settle_secs", &self.settle_secs)
            .field("orphan_secs", &self.orphan_secs)
            .field("max_pending", &self.max_pending)
            .field("leg_retention_days", &self.leg_retention_days)
            .field("time_format", &self.time_format)
            .field("timezone", &self.timezone)
            .field("recording_variables", &self.recording_variables)
            .field("mapping", &self.mapping)
            .finish()
    }
}

impl Default for CdrConfig {
    fn default() -> Self {
        Self {
            receiver_path: "/freeswitch/cdr".into(),
            allow: Vec::new(),
            credentials: String::new(),
            max_body_bytes: 1024 * 1024,
            error_dirs: Vec::new(),
            sweep_interval_secs: 10,
            documents: crate::cdr::reconcile::DocPolicy::AllLegs,
            settle_secs: 60,
            orphan_secs: 4 * 3600,
            max_pending: 100_000,
            leg_retention_days: 30,
            time_format: "%Y-%m-%d %H:%M:%S".into(),
            timezone: "Asia/Shanghai".into(),
            recording_variables: crate::switch::leg::LegVariables::default().recording,
            mapping: crate::cdr::mapping::CdrMapping::default(),
        }
    }
}

/// `[directory]`: where project extensions come from and what clients are told.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectoryConfig {
    /// Extension number blocks allocated to projects, e.g. ["8000-8999"].
    pub ranges: Vec<String>,
    /// The key file passwords and certificates are derived from; empty = `{state.dir}/directory.key`.
    pub key_file: Option<PathBuf>,
    /// `servers` returned by createProject/getByCertificate (WebRTC, WSS URL).
    pub servers: String,
    /// `nativeServers` returned likewise (host:port for native softphones).
    pub native_servers: String,
    /// Largest `seats` one createProject may ask for.
    pub max_seats: u32,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self {
            ranges: vec!["8000-8999".into()],
            key_file: None,
            servers: "wss://127.0.0.1:7443".into(),
            native_servers: "127.0.0.1:5060".into(),
            max_seats: 1000,
        }
    }
}

/// `[presence]`: agent state policy and the attendance day.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// IANA time zone whose midnight resets the daily counters.
    pub timezone: String,
    /// After-call work after each conversation, in seconds; 0 = straight back.
    pub acw_secs: u64,
    /// Whether a rest that runs out makes the agent idle (true) or not ready (false).
    pub idle_after_rest: bool,
    /// How often changed agent state and counters are written to the store, in ms.
    pub persist_interval_ms: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            timezone: "Asia/Shanghai".into(),
            acw_secs: 10,
            idle_after_rest: false,
            persist_interval_ms: 1000,
        }
    }
}

/// `[management]`: the seed 004 management API and the event stream's supervisor logins.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagementConfig {
    /// Source networks allowed to call the management API; empty = loopback only.
    pub allow: Vec<ipnet::IpNet>,
    /// Accepted clock difference for `timestamp`, in seconds.
    pub timestamp_window_secs: u64,
    /// Bound on remembered signatures (replay protection).
    pub max_replay_entries: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    pub accounts: Vec<ApiAccountConfig>,
    /// Open event-stream (WebSocket) connections in total.
    pub max_stream_connections: usize,
    /// Messages queued per event-stream connection before it is dropped as too slow.
    pub stream_queue: usize,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            timestamp_window_secs: 300,
            max_replay_entries: 100_000,
            max_body_bytes: 65_536,
            accounts: Vec::new(),
            max_stream_connections: 10_000,
            stream_queue: 256,
        }
    }
}

/// One `[[management.accounts]]` entry.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiAccountConfig {
    pub account: String,
    pub secret: String,
}

impl std::fmt::Debug for ApiAccountConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAccountConfig")
            .field("account", &self.account)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter directive, e.g. `info` or `info,gridedge::sip=debug`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Directory holding `gridedge.db`, the nonce secret and `listeners.json`. systemd's
    /// `StateDirectory=` points this at /var/lib/gridedge.
    pub dir: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("state"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Simultaneous HTTP connections; further connections wait for a slot.
    pub max_connections: usize,
    /// A connection that sends nothing this long is closed (event streams excepted).
    pub idle_timeout_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8088".parse().expect("static address"),
            max_connections: 1024,
            idle_timeout_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Digest realm offered in challenges. HA1 values are bound to it, so changing it requires
    /// re-seeding passwords.
    pub realm: String,
    /// Domains this registrar is responsible for (the To host of a REGISTER). Empty accepts any.
    pub domains: Vec<String>,
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub ws: Vec<SocketAddr>,
    /// TLS and WSS listeners start only when `tls_cert` and `tls_key` are set.
    pub tls: Vec<SocketAddr>,
    pub wss: Vec<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub max_message_bytes: usize,
    pub max_headers: usize,
    /// Kernel receive and send buffer requested for each UDP socket (capped by
    /// net.core.rmem_max / wmem_max); 0 keeps the system default.
    pub udp_buffer_bytes: usize,
    /// Open TCP/TLS/WS/WSS connections across all stream listeners.
    pub max_connections: usize,
    /// Open stream connections from one source IP.
    pub max_connections_per_ip: u32,
    /// A stream connection that carries no binding and sees no traffic for this long is
    /// closed (keep-alives count). Connections carrying a binding stay open while it lives.
    pub idle_timeout_secs: u64,
    /// Deadline for a TLS or WebSocket handshake to complete.
    pub handshake_timeout_secs: u64,
    pub min_expires_secs: u32,
    pub max_expires_secs: u32,
    pub default_expires_secs: u32,
    pub max_contacts_per_aor: usize,
    /// Send OPTIONS to UDP contacts this often and drop bindings that stop answering; 0 = off.
    pub qualify_interval_secs: u64,
    /// Seconds to wait for a qualify answer.
    pub qualify_timeout_secs: u64,
    /// Consecutive unanswered probes that remove a binding.
    pub qualify_max_failures: u32,
    /// How often bindings changed in memory are written to the store (write-behind).
    pub persist_interval_ms: u64,
    pub auth: AuthConfig,
    pub guard: GuardSettings,
}

impl Default for SipConfig {
    fn default() -> Self {
        let lo = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        Self {
            realm: "gridedge".into(),
            domains: Vec::new(),
            udp: vec![lo(5060)],
            tcp: vec![lo(5060)],
            ws: vec![lo(5066)],
            tls: vec![lo(5061)],
            wss: vec![lo(7443)],
            tls_cert: None,
            tls_key: None,
            max_message_bytes: 65_535,
            max_headers: 128,
            udp_buffer_bytes: 4 << 20,
            max_connections: 10_000,
            max_connections_per_ip: 100,
            idle_timeout_secs: 300,
            handshake_timeout_secs: 10,
            min_expires_secs: 60,
            max_expires_secs: 3600,
            default_expires_secs: 3600,
            max_contacts_per_aor: 10,
            qualify_interval_secs: 0,
            qualify_timeout_secs: 5,
            qualify_max_failures: 3,
            persist_interval_ms: 200,
            auth: AuthConfig::default(),
            guard: GuardSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Challenge algorithms in preference order: `SHA-256`, `SHA-512-256`, `MD5`.
    pub algorithms: Vec<String>,
    pub nonce_lifetime_secs: u64,
    /// Refuse RFC 2069 responses without `qop` (they carry no nonce count, so no replay check).
    pub require_qop: bool,
    /// Bound on the nonce-count replay table.
    pub max_tracked_nonces: usize,
    /// User-Agent substrings (case-insensitive) of phones that fail on any challenge they
    /// cannot answer; they are offered MD5 alone.
    pub md5_only_user_agents: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            algorithms: vec!["SHA-256".into(), "MD5".into()],
            nonce_lifetime_secs: 300,
            require_qop: true,
            max_tracked_nonces: 1_000_000,
            md5_only_user_agents: ["baresip", "sipp", "sipsak", "pyvoip"]
                .into_iter()
                .map(String::from)
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardSettings {
    pub enabled: bool,
    pub window_secs: u64,
    pub max_requests: u32,
    pub ban_secs: u64,
    pub auth_failure_limit: u32,
    pub auth_failure_window_secs: u64,
    pub auth_ban_secs: u64,
    /// Sources never rate-limited or banned: the softswitch, trunks, monitoring.
    pub allow: Vec<IpNet>,
    /// Case-insensitive User-Agent substrings dropped without an answer.
    pub scanner_user_agents: Vec<String>,
    pub max_tracked: usize,
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            window_secs: 2,
            max_requests: 16,
            ban_secs: 300,
            auth_failure_limit: 5,
            auth_failure_window_secs: 60,
            auth_ban_secs: 900,
            allow: Vec::new(),
            scanner_user_agents: crate::sip::guard::DEFAULT_SCANNER_USER_AGENTS
                .into_iter()
                .map(String::from)
                .collect(),
            max_tracked: 100_000,
        }
    }
}

/// One `[[extensions]]` entry: either a plaintext password (hashed on load) or ready HA1 values.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtensionSeed {
    pub user: String,
    pub password: Option<String>,
    pub ha1_md5: Option<String>,
    pub ha1_sha256: Option<String>,
    pub ha1_sha512_256: Option<String>,
    pub enabled: Option<bool>,
}

// Hand-written so a password or HA1 never reaches a log line through `{:?}`.
impl std::fmt::Debug for ExtensionSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtensionSeed")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let cfg = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })?;
        Ok(cfg)
    }

    /// Parses and validates config text (the path in errors is `<config>`).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        // TOML has no null: an empty path means "not set".
        for p in [
            &mut cfg.sip.tls_cert,
            &mut cfg.sip.tls_key,
            &mut cfg.directory.key_file,
        ] {
            if p.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                *p = None;
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Cross-field and range checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.outbox.validate().map_err(|(k, r)| invalid(k, r))?;
        self.dialer.validate().map_err(|(k, r)| invalid(k, r))?;
        self.recording.validate().map_err(|(k, r)| invalid(k, r))?;
        self.grid.validate().map_err(|(k, r)| invalid(k, r))?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", e.to_string()))?;
        if self.state.dir.as_os_str().is_empty() {
            return Err(invalid("state.dir", "must not be empty"));
        }
        if self.http.max_connections == 0 {
            return Err(invalid("http.max_connections", "must be at least 1"));
        }
        if !(1..=3600).contains(&self.http.idle_timeout_secs) {
            return Err(invalid(
                "http.idle_timeout_secs",
                "must be between 1 and 3600",
            ));
        }
        let s = &self.sip;
        if s.realm.is_empty() || s.realm.contains(['"', '\\', '\r', '\n']) {
            return Err(invalid(
                "sip.realm",
                "must be non-empty and contain no quotes, backslashes or line breaks",
            ));
        }
        if s.udp.is_empty() && s.tcp.is_empty() && s.ws.is_empty() && !self.tls_enabled() {
            return Err(invalid(
                "sip.udp",
                "no SIP listener configured (udp, tcp, ws, tls and wss are all empty)",
            ));
        }
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            let key = if s.tls_cert.is_some() {
                "sip.tls_key"
            } else {
                "sip.tls_cert"
            };
            return Err(invalid(key, "tls_cert and tls_key must be set together"));
        }
        if !(512..=1_048_576).contains(&s.max_message_bytes) {
            return Err(invalid(
                "sip.max_message_bytes",
                "must be between 512 and 1048576",
            ));
        }
        if !(16..=4096).contains(&s.max_headers) {
            return Err(invalid("sip.max_headers", "must be between 16 and 4096"));
        }
        if s.max_connections == 0 {
            return Err(invalid("sip.max_connections", "must be at least 1"));
        }
        if s.max_connections_per_ip == 0 {
            return Err(invalid("sip.max_connections_per_ip", "must be at least 1"));
        }
        if s.handshake_timeout_secs == 0 {
            return Err(invalid("sip.handshake_timeout_secs", "must be at least 1"));
        }
        if s.idle_timeout_secs == 0 {
            return Err(invalid("sip.idle_timeout_secs", "must be at least 1"));
        }
        if s.min_expires_secs == 0 {
            return Err(invalid("sip.min_expires_secs", "must be at least 1"));
        }
        if s.min_expires_secs > s.max_expires_secs {
            return Err(invalid(
                "sip.min_expires_secs",
                format!(
                    "{} exceeds sip.max_expires_secs ({})",
                    s.min_expires_secs, s.max_expires_secs
                ),
            ));
        }
        if !(s.min_expires_secs..=s.max_expires_secs).contains(&s.default_expires_secs) {
            return Err(invalid(
                "sip.default_expires_secs",
                "must lie between sip.min_expires_secs and sip.max_expires_secs",
            ));
        }
        if s.max_contacts_per_aor == 0 {
            return Err(invalid("sip.max_contacts_per_aor", "must be at least 1"));
        }
        if s.qualify_interval_secs > 0
            && !(1..s.qualify_interval_secs.max(2)).contains(&s.qualify_timeout_secs)
        {
            return Err(invalid(
                "sip.qualify_timeout_secs",
                "must be at least 1 and shorter than sip.qualify_interval_secs",
            ));
        }
        if s.qualify_max_failures == 0 {
            return Err(invalid("sip.qualify_max_failures", "must be at least 1"));
        }
        if !(10..=60_000).contains(&s.persist_interval_ms) {
            return Err(invalid(
                "sip.persist_interval_ms",
                "must be between 10 and 60000",
            ));
        }
        self.digest_algorithms()?;
        if s.auth.nonce_lifetime_secs < 10 {
            return Err(invalid(
                "sip.auth.nonce_lifetime_secs",
                "must be at least 10",
            ));
        }
        if s.auth.max_tracked_nonces < 1000 {
            return Err(invalid(
                "sip.auth.max_tracked_nonces",
                "must be at least 1000",
            ));
        }
        let g = &s.guard;
        for (key, v) in [
            ("sip.guard.window_secs", g.window_secs),
            ("sip.guard.ban_secs", g.ban_secs),
            (
                "sip.guard.auth_failure_window_secs",
                g.auth_failure_window_secs,
            ),
            ("sip.guard.auth_ban_secs", g.auth_ban_secs),
            ("sip.guard.max_requests", u64::from(g.max_requests)),
            (
                "sip.guard.auth_failure_limit",
                u64::from(g.auth_failure_limit),
            ),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if g.max_tracked < 16 {
            return Err(invalid("sip.guard.max_tracked", "must be at least 16"));
        }
        self.validate_extensions()?;
        self.validate_presence()?;
        self.validate_switch()?;
        self.validate_grid_api()
    }

    /// `[grid_api]`: its own checks, plus its paths must not take another route's.
    fn validate_grid_api(&self) -> Result<(), ConfigError> {
        let reserved = [
            "/metrics",
            "/healthz",
            "/readyz",
            self.cdr.receiver_path.as_str(),
        ];
        // Prefixes the management API and the event stream own.
        let prefixes = ["/callcenter/", "/freeswitch/"];
        self.grid_api
            .validate(&reserved, &prefixes)
            .map_err(|(key, reason)| invalid(key, reason))
    }

    fn validate_switch(&self) -> Result<(), ConfigError> {
        if self.esl.enabled {
            if self.esl.address.trim().is_empty() || !self.esl.address.contains(':') {
                return Err(invalid("esl.address", "must be host:port"));
            }
            if self.esl.password.contains(['\r', '\n']) {
                return Err(invalid("esl.password", "must not contain line breaks"));
            }
        }
        if self.esl.reconnect_min_ms == 0 || self.esl.reconnect_max_ms < self.esl.reconnect_min_ms {
            return Err(invalid(
                "esl.reconnect_max_ms",
                "needs 0 < reconnect_min_ms <= reconnect_max_ms",
            ));
        }
        if self.esl.queue == 0 {
            return Err(invalid("esl.queue", "must be at least 1"));
        }
        if self.esl.max_frame_bytes < 64 * 1024 {
            return Err(invalid("esl.max_frame_bytes", "must be at least 65536"));
        }
        if !self.cdr.receiver_path.starts_with('/') || self.cdr.receiver_path.len() < 2 {
            return Err(invalid(
                "cdr.receiver_path",
                "must be an absolute path like /freeswitch/cdr",
            ));
        }
        // Peers are matched as IPv4 when they are IPv4-mapped, so such a rule would never match.
        if let Some(net) = self.cdr.allow.iter().find(|n| match n {
            ipnet::IpNet::V6(v6) => v6.addr().to_ipv4_mapped().is_some(),
            ipnet::IpNet::V4(_) => false,
        }) {
            return Err(invalid(
                "cdr.allow",
                format!("{net} is IPv4-mapped; write the IPv4 network instead"),
            ));
        }
        if !self.cdr.credentials.is_empty() && !self.cdr.credentials.contains(':') {
            return Err(invalid("cdr.credentials", "must be user:password"));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.cdr.max_body_bytes) {
            return Err(invalid(
                "cdr.max_body_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        if self.cdr.sweep_interval_secs == 0 {
            return Err(invalid("cdr.sweep_interval_secs", "must be at least 1"));
        }
        if self.cdr.settle_secs == 0 || self.cdr.settle_secs > 86_400 {
            return Err(invalid("cdr.settle_secs", "must be between 1 and 86400"));
        }
        if self.cdr.max_pending == 0 {
            return Err(invalid("cdr.max_pending", "must be at least 1"));
        }
        crate::grid::cdr::TimeFormat::new(&self.cdr.time_format, &self.cdr.timezone)
            .map_err(|e| invalid("cdr.time_format", e))?;
        self.cdr.mapping.validate().map_err(|e| {
            invalid(
                format!("cdr.mapping.{}", e.split(' ').next().unwrap_or("")),
                e,
            )
        })?;
        Ok(())
    }

    fn validate_presence(&self) -> Result<(), ConfigError> {
        crate::agents::directory::Ranges::parse(&self.directory.ranges)
            .map_err(|e| invalid("directory.ranges", e.to_string()))?;
        if self.directory.max_seats == 0 {
            return Err(invalid("directory.max_seats", "must be at least 1"));
        }
        crate::agents::counters::DayClock::new(&self.presence.timezone)
            .map_err(|e| invalid("presence.timezone", e.to_string()))?;
        if self.presence.acw_secs > 86_400 {
            return Err(invalid("presence.acw_secs", "must be at most 86400"));
        }
        if !(10..=60_000).contains(&self.presence.persist_interval_ms) {
            return Err(invalid(
                "presence.persist_interval_ms",
                "must be between 10 and 60000",
            ));
        }
        let m = &self.management;
        if !(1..=86_400).contains(&m.timestamp_window_secs) {
            return Err(invalid(
                "management.timestamp_window_secs",
                "must be between 1 and 86400",
            ));
        }
        if m.max_replay_entries < 16 {
            return Err(invalid(
                "management.max_replay_entries",
                "must be at least 16",
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&m.max_body_bytes) {
            return Err(invalid(
                "management.max_body_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if m.max_stream_connections == 0 {
            return Err(invalid(
                "management.max_stream_connections",
                "must be at least 1",
            ));
        }
        if !(8..=65_536).contains(&m.stream_queue) {
            return Err(invalid(
                "management.stream_queue",
                "must be between 8 and 65536",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, a) in m.accounts.iter().enumerate() {
            if a.account.is_empty() || a.account.len() > 64 {
                return Err(invalid(
                    format!("management.accounts[{i}].account"),
                    "must be 1-64 characters",
                ));
            }
            if !seen.insert(a.account.as_str()) {
                return Err(invalid(
                    format!("management.accounts[{i}].account"),
                    format!("duplicate account {}", a.account),
                ));
            }
            if a.secret.len() < 8 {
                return Err(invalid(
                    format!("management.accounts[{i}].secret"),
                    "must be at least 8 characters",
                ));
            }
        }
        let mut ids = std::collections::HashSet::new();
        for (i, a) in self.agents.iter().enumerate() {
            if a.agent_id.is_empty() || !ids.insert(a.agent_id.as_str()) {
                return Err(invalid(
                    format!("agents[{i}].agent_id"),
                    "must be non-empty and unique",
                ));
            }
        }
        Ok(())
    }

    fn validate_extensions(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (i, e) in self.extensions.iter().enumerate() {
            let key = |field: &str| format!("extensions[{i}].{field}");
            if e.user.is_empty() || e.user.len() > 64 || !e.user.bytes().all(is_user_char) {
                return Err(invalid(
                    key("user"),
                    "must be 1-64 characters of letters, digits and -_.!~*'()&=+$,;?/",
                ));
            }
            if !seen.insert(e.user.as_str()) {
                return Err(invalid(
                    key("user"),
                    format!("duplicate extension {}", e.user),
                ));
            }
            let has_ha1 =
                e.ha1_md5.is_some() || e.ha1_sha256.is_some() || e.ha1_sha512_256.is_some();
            match (&e.password, has_ha1) {
                (Some(p), false) if p.is_empty() => {
                    return Err(invalid(key("password"), "must not be empty"))
                }
                (Some(_), false) | (None, true) => {}
                (Some(_), true) => {
                    return Err(invalid(
                        key("password"),
                        "give either password or ha1_* values, not both",
                    ))
                }
                (None, false) => {
                    return Err(invalid(
                        key("password"),
                        "missing: give password or ha1_* values",
                    ))
                }
            }
            for (field, v, len) in [
                ("ha1_md5", &e.ha1_md5, 32),
                ("ha1_sha256", &e.ha1_sha256, 64),
                ("ha1_sha512_256", &e.ha1_sha512_256, 64),
            ] {
                if let Some(v) = v {
                    if v.len() != len || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(invalid(key(field), format!("must be {len} hex digits")));
                    }
                }
            }
        }
        Ok(())
    }

    /// The configured challenge algorithms, parsed.
    pub fn digest_algorithms(&self) -> Result<Vec<Algorithm>, ConfigError> {
        let algs = &self.sip.auth.algorithms;
        if algs.is_empty() {
            return Err(invalid(
                "sip.auth.algorithms",
                "must list at least one of SHA-256, SHA-512-256, MD5",
            ));
        }
        let mut out = Vec::with_capacity(algs.len());
        for a in algs {
            let alg = Algorithm::parse(a)
                .filter(|(_, sess)| !sess)
                .map(|(alg, _)| alg)
                .ok_or_else(|| {
                    invalid(
                        "sip.auth.algorithms",
                        format!("unsupported algorithm {a:?} (use SHA-256, SHA-512-256 or MD5)"),
                    )
                })?;
            if out.contains(&alg) {
                return Err(invalid("sip.auth.algorithms", format!("{a} listed twice")));
            }
            out.push(alg);
        }
        Ok(out)
    }

    pub fn tls_enabled(&self) -> bool {
        self.sip.tls_cert.is_some()
            && self.sip.tls_key.is_some()
            && !(self.sip.tls.is_empty() && self.sip.wss.is_empty())
    }

    /// Where the directory key lives (see `agents::directory`).
    pub fn directory_key_path(&self) -> PathBuf {
        self.directory
            .key_file
            .clone()
            .unwrap_or_else(|| self.state.dir.join("directory.key"))
    }

    pub fn db_path(&self) -> PathBuf {
        self.state.dir.join("gridedge.db")
    }
}

/// RFC 3261 `user` characters (unreserved and user-unreserved), minus escapes.
fn is_user_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn embedded_defaults_are_valid_and_loopback_only() {
        let cfg = Config::parse("").unwrap();
        assert!(cfg.http.listen.ip().is_loopback());
        for a in cfg.sip.udp.iter().chain(&cfg.sip.tcp).chain(&cfg.sip.ws) {
            assert!(a.ip().is_loopback(), "{a} is not loopback");
        }
        assert!(!cfg.tls_enabled());
        assert_eq!(cfg.sip.guard.max_requests, 16);
        assert_eq!(cfg.sip.guard.ban_secs, 300);
    }

    #[test]
    fn unknown_key_is_refused_by_name() {
        let e = err("[sip]\nrelam = \"x\"\n");
        assert!(e.contains("relam"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = err("[sip]\nmin_expires_secs = \"sixty\"\n");
        assert!(e.contains("min_expires_secs"), "{e}");
    }

    #[test]
    fn cross_field_errors_name_the_key() {
        assert!(err("[sip]\nmin_expires_secs = 4000\n").starts_with("sip.min_expires_secs"));
        assert!(err("[sip]\ndefault_expires_secs = 10\n").starts_with("sip.default_expires_secs"));
        assert!(err("[sip.auth]\nalgorithms = [\"SHA-1\"]\n").starts_with("sip.auth.algorithms"));
        assert!(err("[sip.auth]\nalgorithms = []\n").starts_with("sip.auth.algorithms"));
        assert!(err("[sip]\ntls_cert = \"/x.pem\"\n").starts_with("sip.tls_key"));
        assert!(err("[log]\nlevel = \"info,=[\"\n").starts_with("log.level"));
        assert!(err("[sip.guard]\nmax_requests = 0\n").starts_with("sip.guard.max_requests"));
        assert!(err("[sip]\nudp=[]\ntcp=[]\nws=[]\n").starts_with("sip.udp"));
    }

    #[test]
    fn presence_and_management_errors_name_the_key() {
        for (text, key) in [
            ("[directory]\nranges = [\"9-1\"]\n", "directory.ranges"),
            (
                "[directory]\nranges = [\"8000-8099\", \"8050-8060\"]\n",
                "directory.ranges",
            ),
            ("[directory]\nmax_seats = 0\n", "directory.max_seats"),
            ("[presence]\ntimezone = \"Mars/Olympus\"\n", "presence.timezone"),
            ("[presence]\nacw_secs = 100000\n", "presence.acw_secs"),
            ("[presence]\npersist_interval_ms = 1\n", "presence.persist_interval_ms"),
            (
                "[management]\ntimestamp_window_secs = 0\n",
                "management.timestamp_window_secs",
            ),
            ("[management]\nstream_queue = 1\n", "management.stream_queue"),
            (
                "[[management.accounts]]\naccount = \"ops\"\nsecret = \"short\"\n",
                "management.accounts[0].secret",
            ),
            (
                "[[management.accounts]]\naccount = \"a\"\nsecret = \"12345678\"\n[[management.accounts]]\naccount = \"a\"\nsecret = \"87654321\"\n",
                "management.accounts[1].account",
            ),
            ("[management]\nallow = [\"10.0.0.0/33\"]\n", "allow"),
            ("[[agents]]\nname = \"x\"\n", "agents[0].agent_id"),
            ("[dialer]\ntick_ms = 0\n", "dialer.tick_ms"),
            ("[recording]\nuris = []\n", "recording.uris"),
            ("[recording]\nrtp_timeout_secs = 0\n", "recording.rtp_timeout_secs"),
            ("[dialer]\ndrop_ms = 99\n", "dialer.drop_ms"),
            ("[dialer]\nagent_dial_string = \"user/1001\"\n", "dialer.agent_dial_string"),
            ("[dialer]\nagent_dial_string = \"user/{ext},x\"\n", "dialer.agent_dial_string"),
            ("[dialer]\ntimezone = \"Mars/Olympus\"\n", "dialer.timezone"),
            ("[dialer]\nmax_call_secs = 1\n", "dialer.max_call_secs"),
            ("[dialer]\nring_timout_secs = 30\n", "ring_timout_secs"),
        ] {
            let e = err(text);
            assert!(e.contains(key), "{text}: {e}");
        }
        let ok = Config::parse(
            "[directory]\nranges = [\"0100-0199\"]\n[presence]\ntimezone = \"America/New_York\"\n",
        )
        .unwrap();
        assert_eq!(ok.presence.timezone, "America/New_York");
        // The secret never reaches a log line through Debug.
        let cfg = Config::parse(
            "[[management.accounts]]\naccount = \"ops\"\nsecret = \"do-not-print-me\"\n",
        )
        .unwrap();
        assert!(!format!("{cfg:?}").contains("do-not-print-me"));
    }

    #[test]
    fn empty_tls_paths_mean_unset() {
        let cfg = Config::parse("[sip]\ntls_cert = \"\"\ntls_key = \"\"\n").unwrap();
        assert!(cfg.sip.tls_cert.is_none() && !cfg.tls_enabled());
    }

    #[test]
    fn extension_errors_name_the_entry() {
        assert!(err("[[extensions]]\nuser = \"1001\"\n").starts_with("extensions[0].password"));
        let dup = "[[extensions]]\nuser=\"1\"\npassword=\"a\"\n[[extensions]]\nuser=\"1\"\npassword=\"b\"\n";
        assert!(err(dup).starts_with("extensions[1].user"));
        assert!(
            err("[[extensions]]\nuser=\"a b\"\npassword=\"x\"\n").starts_with("extensions[0].user")
        );
        assert!(err("[[extensions]]\nuser=\"1\"\nha1_md5=\"zz\"\n")
            .starts_with("extensions[0].ha1_md5"));
    }

    #[test]
    fn switch_secrets_are_redacted_from_debug() {
        let cfg = Config::parse(
            "[esl]\npassword = \"esl-secret-42\"\n[cdr]\ncredentials = \"fs:cdr-secret-43\"\n",
        )
        .unwrap();
        let text = format!("{cfg:?}");
        assert!(!text.contains("esl-secret-42"), "{text}");
        assert!(!text.contains("cdr-secret-43"), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn extension_debug_redacts_password() {
        let cfg = Config::parse("[[extensions]]\nuser=\"1001\"\npassword=\"hunter2\"\n").unwrap();
        let dbg = format!("{:?}", cfg.extensions);
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }
}
