//! `[grid]` and `[grid.push.*]`: which pushes of seed 000 are on, where they go and how they
//! authenticate. Seed 000 leaves every URL as `/xxxxxxx` and defines no authentication for
//! the 网格化服务端 pushes (A.1 of the digest), so both are configuration: a bearer token
//! and/or static headers, over http or https.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::outbox::Target;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GridConfig {
    /// 企业ID (`entId`) the grid knows this call center by; sent in the access-number and
    /// signed detail pushes and checked on the grid's queries.
    pub ent_id: String,
    /// Seconds between comparisons of the directory with what was last pushed (agent and
    /// access-number changes), and the heartbeat clock's resolution.
    pub sync_secs: u64,
    pub push: PushTargets,
    /// `[grid.agent_event]`: key spellings, the esate table, MACs, heartbeats.
    pub agent_event: crate::grid::agent_event::AgentEventConfig,
    /// `[grid.changes]`: defaults of the change pushes.
    pub changes: crate::grid::changes::ChangesConfig,
    /// `[grid.detail]`: the signed 明细 format.
    pub detail: crate::grid::detail::DetailConfig,
}

impl Default for GridConfig {
    fn default() -> Self {
        GridConfig {
            ent_id: "gridedge".into(),
            sync_secs: 5,
            push: PushTargets::default(),
            agent_event: Default::default(),
            changes: Default::default(),
            detail: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushTargets {
    /// 话单推送 (000:L357-448).
    pub cdr: PushTarget,
    /// 坐席事件(考勤)推送 (000:L454-495).
    pub agent_event: PushTarget,
    /// 坐席信息变更推送 (000:L534-568).
    pub agent_change: PushTarget,
    /// 网格接入号信息变更推送 (000:L574-610).
    pub access_number: PushTarget,
    /// 呼叫中心明细数据推送, the signed format (000:L2904-3043).
    pub detail: PushTarget,
}

impl PushTargets {
    pub fn get(&self, t: Target) -> &PushTarget {
        match t {
            Target::Cdr => &self.cdr,
            Target::AgentEvent => &self.agent_event,
            Target::AgentChange => &self.agent_change,
            Target::AccessNumber => &self.access_number,
            Target::Detail => &self.detail,
        }
    }
}

#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushTarget {
    /// Off by default: nothing leaves the host until a URL is configured.
    pub enabled: bool,
    /// `http://` or `https://` (rustls, webpki roots).
    pub url: String,
    /// One attempt: connect, send and read the answer.
    pub timeout_ms: u64,
    /// Sent as `Authorization: Bearer ...` when set. Prefer `bearer_token_file`.
    pub bearer_token: String,
    /// A file holding the token (first line), read at start-up; overrides `bearer_token`.
    pub bearer_token_file: Option<PathBuf>,
    /// Extra request headers, e.g. an API key the grid team hands out.
    pub headers: BTreeMap<String, String>,
    /// The header carrying the record's idempotency key (the IETF httpapi draft's name by
    /// default); empty to send none.
    pub idempotency_header: String,
}

impl Default for PushTarget {
    fn default() -> Self {
        PushTarget {
            enabled: false,
            url: String::new(),
            timeout_ms: 10_000,
            bearer_token: String::new(),
            bearer_token_file: None,
            headers: BTreeMap::new(),
            idempotency_header: "Idempotency-Key".into(),
        }
    }
}

/// The URL without userinfo or query, which may carry credentials.
fn redacted_url(url: &str) -> String {
    match url.parse::<hyper::Uri>() {
        Ok(u) => {
            format!(
                "{}://{}{}",
                u.scheme_str().unwrap_or(""),
                u.host().unwrap_or(""),
                u.port().map(|p| format!(":{p}")).unwrap_or_default()
            ) + u.path()
        }
        Err(_) => "<invalid>".into(),
    }
}

impl std::fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushTarget")
            .field("enabled", &self.enabled)
            .field("url", &redacted_url(&self.url))
            .field("timeout_ms", &self.timeout_ms)
            .field(
                "bearer_token",
                &if self.bearer_token.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("bearer_token_file", &self.bearer_token_file)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("idempotency_header", &self.idempotency_header)
            .finish()
    }
}

impl GridConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        let ent = self.ent_id.trim();
        if ent.is_empty() || ent.len() > 64 || ent.chars().any(|c| c.is_control()) {
            return Err((
                "grid.ent_id".into(),
                "must be 1-64 printable characters".into(),
            ));
        }
        if !(1..=3600).contains(&self.sync_secs) {
            return Err(("grid.sync_secs".into(), "must be between 1 and 3600".into()));
        }
        self.agent_event
            .validate()
            .map_err(|e| ("grid.agent_event".into(), e))?;
        self.changes
            .validate()
            .map_err(|e| ("grid.changes".into(), e))?;
        self.detail
            .validate()
            .map_err(|e| ("grid.detail".into(), e))?;
        for t in Target::ALL {
            let p = self.push.get(t);
            let key = |k: &str| format!("grid.push.{}.{k}", t.as_str());
            if !p.enabled {
                continue;
            }
            let uri: hyper::Uri = p
                .url
                .parse()
                .map_err(|e| (key("url"), format!("not a URL: {e}")))?;
            match uri.scheme_str() {
                Some("http") | Some("https") => {}
                _ => return Err((key("url"), "must start with http:// or https://".into())),
            }
            if uri.host().is_none_or(str::is_empty) {
                return Err((key("url"), "has no host".into()));
            }
            if !(100..=300_000).contains(&p.timeout_ms) {
                return Err((key("timeout_ms"), "must be between 100 and 300000".into()));
            }
            for (name, value) in &p.headers {
                hyper::header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| (key("headers"), format!("{name:?} is not a header name")))?;
                hyper::header::HeaderValue::from_str(value).map_err(|_| {
                    (
                        key("headers"),
                        format!("the value of {name:?} is not a valid header value"),
                    )
                })?;
            }
            if !p.idempotency_header.is_empty()
                && hyper::header::HeaderName::from_bytes(p.idempotency_header.as_bytes()).is_err()
            {
                return Err((key("idempotency_header"), "is not a header name".into()));
            }
            if let Some(path) = &p.bearer_token_file {
                if let Err(e) = std::fs::read_to_string(path) {
                    return Err((
                        key("bearer_token_file"),
                        format!("cannot read {}: {e}", path.display()),
                    ));
                }
            }
            // Headers that frame the request or name the connection are ours to set.
            const RESERVED: [&str; 7] = [
                "host",
                "content-length",
                "transfer-encoding",
                "connection",
                "content-type",
                "authorization",
                "upgrade",
            ];
            if let Some(name) = p
                .headers
                .keys()
                .find(|n| RESERVED.contains(&n.to_ascii_lowercase().as_str()))
            {
                return Err((
                    key("headers"),
                    format!("{name:?} is set by gridedge (use bearer_token for Authorization)"),
                ));
            }
            if RESERVED.contains(&p.idempotency_header.to_ascii_lowercase().as_str()) {
                return Err((
                    key("idempotency_header"),
                    "must not be a framing or authorization header".into(),
                ));
            }
            if p.bearer_token.chars().any(|c| c.is_control()) {
                return Err((
                    key("bearer_token"),
                    "must not contain control characters".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_credentials() {
        let p = PushTarget {
            enabled: true,
            url: "https://user:pw@grid.example:8443/api/cdr?token=abc".into(),
            bearer_token: "s3cret-token".into(),
            headers: [("X-Api-Key".to_string(), "k3y".to_string())].into(),
            ..PushTarget::default()
        };
        let d = format!("{p:?}");
        for secret in ["pw", "abc", "s3cret-token", "k3y"] {
            assert!(!d.contains(secret), "{secret} in {d}");
        }
        assert!(d.contains("https://grid.example:8443/api/cdr"), "{d}");
    }

    #[test]
    fn validation_names_the_key() {
        let mut g = GridConfig::default();
        g.push.detail.enabled = true;
        g.push.detail.url = "ftp://x/y".into();
        assert_eq!(g.validate().unwrap_err().0, "grid.push.detail.url");
        g.push.detail.url = "http://grid/y".into();
        g.push
            .detail
            .headers
            .insert("Content-Length".into(), "1".into());
        assert_eq!(g.validate().unwrap_err().0, "grid.push.detail.headers");
        g.push.detail.headers.clear();
        g.push.detail.idempotency_header = "Authorization".into();
        assert_eq!(
            g.validate().unwrap_err().0,
            "grid.push.detail.idempotency_header"
        );
        g.push.detail.idempotency_header = "Idempotency-Key".into();
        g.push.detail.bearer_token_file = Some("/nonexistent/token".into());
        assert_eq!(
            g.validate().unwrap_err().0,
            "grid.push.detail.bearer_token_file"
        );
        g.push.detail.bearer_token_file = None;
        assert!(g.validate().is_ok());
    }
}
