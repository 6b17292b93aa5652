//! The registrar core: RFC 3261 §10.3 REGISTER processing with digest authentication and
//! RFC 5626 outbound, as a sans-IO state machine.
//!
//! It owns the digest verifier (nonce-count state) and the location table; the shell hands it a
//! parsed request, the flow it came on and `now`, and gets back the response and what changed.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::clock::Now;
use crate::sip::credentials::{Credential, CredentialTable};
use crate::sip::digest::{Algorithm, AuthOutcome, DigestCredentials, RejectReason, Verifier};
use crate::sip::header::{parse_contacts, parse_expires, CSeq, ContactValue, NameAddr};
use crate::sip::location::{ApplyError, Binding, Changes, ContactUpdate, Flow, Location};
use crate::sip::message::{HeaderName, Request, Response};
use crate::text::truncate;

/// Registrar policy, reloadable.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// Lower-cased domains this registrar serves; empty serves any.
    pub domains: HashSet<String>,
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_contacts: usize,
    /// Lower-cased User-Agent substrings of phones that fail on any challenge they cannot
    /// answer (Debian's baresip 1.0 gives up on a SHA-256 challenge even when MD5 is offered
    /// beside it; SIPp 3.6.1 reads only the first): they get the MD5 challenge alone, everyone
    /// else the configured set in order.
    pub md5_only_user_agents: Vec<String>,
}

/// What authentication concluded, for the guard and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthNote {
    /// Answered before authentication was attempted (malformed, wrong domain).
    None,
    Challenged,
    Stale,
    Authenticated(String),
    /// A failed attempt that counts towards the (user, source) ban.
    Failed(String, RejectReason),
    /// Refused but not counted (bad nonce from a NAT rebinding, wrong realm, ...).
    Refused(RejectReason),
    /// The (user, source) pair is banned: dropped without an answer and without hashing.
    Banned(String),
}

/// Everything one REGISTER produced.
#[derive(Debug)]
pub struct Handled {
    /// `None` when the request is to be dropped silently (a banned user).
    pub response: Option<Response>,
    pub changes: Changes,
    pub auth: AuthNote,
}

pub struct Registrar {
    cfg: RegistrarConfig,
    verifier: Verifier,
    credentials: Arc<CredentialTable>,
    location: Location,
    date_cache: (u64, String),
}

impl Registrar {
    pub fn new(
        cfg: RegistrarConfig,
        verifier: Verifier,
        credentials: Arc<CredentialTable>,
    ) -> Self {
        Self {
            cfg,
            verifier,
            credentials,
            location: Location::new(),
            date_cache: (u64::MAX, String::new()),
        }
    }

    pub fn set_config(&mut self, cfg: RegistrarConfig) {
        self.cfg = cfg;
    }

    pub fn verifier_mut(&mut self) -> &mut Verifier {
        &mut self.verifier
    }

    pub fn credentials(&self) -> &Arc<CredentialTable> {
        &self.credentials
    }

    /// Replaces the credential table (reload, or an extension changed). Bindings of extensions
    /// that are now disabled or gone are removed.
    pub fn set_credentials(&mut self, creds: Arc<CredentialTable>) -> Changes {
        let mut changes = Changes::default();
        let stale: Vec<String> = self
            .location
            .iter()
            .map(|(aor, _)| aor)
            .filter(|aor| !creds.get(*aor).is_some_and(|c| c.enabled))
            .map(str::to_owned)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for aor in stale {
            let c = self
                .location
                .remove_aor(&aor, crate::events::RegistrationChange::Administrative);
            changes.append(c);
        }
        self.credentials = creds;
        changes
    }

    /// Adds, replaces or (with `None`) removes individual credentials, as the directory
    /// allocates, disables and frees extensions. Bindings of extensions that end up disabled or
    /// gone are removed, exactly as [`Registrar::set_credentials`] does for a whole table.
    pub fn update_credentials(
        &mut self,
        updates: impl IntoIterator<Item = (String, Option<Credential>)>,
    ) -> Changes {
        let table = Arc::make_mut(&mut self.credentials);
        let mut touched = Vec::new();
        for (user, c) in updates {
            match c {
                Some(c) => {
                    table.insert(user.clone(), c);
                }
                None => {
                    table.remove(&user);
                }
            }
            touched.push(user);
        }
        let mut changes = Changes::default();
        for user in touched {
            if !self.credentials.get(&user).is_some_and(|c| c.enabled) {
                changes.append(
                    self.location
                        .remove_aor(&user, crate::events::RegistrationChange::Administrative),
                );
            }
        }
        changes
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    pub fn location_mut(&mut self) -> &mut Location {
        &mut self.location
    }

    /// Processes one REGISTER (RFC 3261 §10.3 steps 1-8).
    ///
    /// `is_banned` is asked about the AoR and the digest username before any hashing, so a
    /// banned brute-forcer costs one header parse and gets no answer at all, not even a
    /// challenge.
    pub fn handle_register(
        &mut self,
        req: &Request,
        flow: &Flow,
        now: Now,
        is_banned: impl Fn(&str) -> bool,
    ) -> Handled {
        let mut changes = Changes::default();
        let (response, auth) = match self.process(req, flow, now, &mut changes, is_banned) {
            Ok((resp, AuthNote::Banned(user))) => {
                drop(resp);
                (None, AuthNote::Banned(user))
            }
            Ok((resp, auth)) => (Some(resp), auth),
            Err((code, reason, auth)) => (Some(self.reply(req, code, reason)), auth),
        };
        Handled {
            response,
            changes,
            auth,
        }
    }

    fn process(
        &mut self,
        req: &Request,
        flow: &Flow,
        now: Now,
        changes: &mut Changes,
        is_banned: impl Fn(&str) -> bool,
    ) -> Result<(Response, AuthNote), (u16, &'static str, AuthNote)> {
        let bad = |reason: &'static str| (400, reason, AuthNote::None);

        // Step 1: is the Request-URI's domain ours?
        if !self.cfg.domains.is_empty() {
            let host = request_uri_host(&req.uri).ok_or_else(|| bad("Bad Request-URI"))?;
            if !self.cfg.domains.contains(&host) {
                return Err((404, "Domain Not Served", AuthNote::None));
            }
        }
        // Step 2: extensions the client requires and we lack.
        let unsupported: Vec<&str> = req
            .headers
            .get_all(&HeaderName::Require)
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| {
                !t.is_empty() && !matches!(t.to_ascii_lowercase().as_str(), "outbound" | "path")
            })
            .collect();
        if !unsupported.is_empty() {
            let mut resp = self.reply(req, 420, "Bad Extension");
            resp.headers
                .push(HeaderName::Unsupported, unsupported.join(", "));
            return Ok((resp, AuthNote::None));
        }

        let to = req
            .headers
            .get(&HeaderName::To)
            .ok_or_else(|| bad("Missing To"))?;
        let to = NameAddr::parse(to).map_err(|_| bad("Malformed To"))?;
        let aor = to
            .uri
            .user
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| bad("To Has No User"))?;
        if !self.cfg.domains.is_empty()
            && !self.cfg.domains.contains(&to.uri.host.to_ascii_lowercase())
        {
            return Err((404, "Domain Not Served", AuthNote::None));
        }
        if is_banned(&aor) {
            return Ok((
                Response::reply_to(req, 403, "Forbidden"),
                AuthNote::Banned(aor),
            ));
        }
        let call_id = req
            .headers
            .get(&HeaderName::CallId)
            .ok_or_else(|| bad("Missing Call-ID"))?;
        let cseq = req
            .headers
            .get(&HeaderName::CSeq)
            .ok_or_else(|| bad("Missing CSeq"))?;
        let cseq = CSeq::parse(cseq).map_err(|_| bad("Malformed CSeq"))?;
        if cseq.method != crate::sip::message::Method::Register {
            return Err(bad("CSeq Method Mismatch"));
        }

        // Step 3: authenticate. Only our realm's credentials count (RFC 3261 §22.4).
        let mut creds = None;
        for value in req.headers.get_all(&HeaderName::Authorization) {
            let parsed =
                DigestCredentials::parse(value).map_err(|_| bad("Malformed Authorization"))?;
            if parsed.realm == self.verifier.config().realm {
                creds = Some(parsed);
                break;
            }
        }
        let Some(creds) = creds else {
            return Ok((self.challenge(req, flow, now, false), AuthNote::Challenged));
        };
        if is_banned(&creds.username) {
            return Ok((
                Response::reply_to(req, 403, "Forbidden"),
                AuthNote::Banned(creds.username),
            ));
        }
        let table = Arc::clone(&self.credentials);
        let outcome = self.verifier.verify(
            &creds,
            req.method.as_str(),
            &req.body,
            flow.source.ip(),
            now.unix_secs(),
            |user, alg| table.get(user).and_then(|c| c.ha1_hex(alg)),
        );
        let user = match outcome {
            AuthOutcome::Authenticated { username } => username,
            AuthOutcome::Stale => {
                return Ok((self.challenge(req, flow, now, true), AuthNote::Stale))
            }
            AuthOutcome::Rejected(reason) => {
                let note = match reason {
                    RejectReason::UnknownUserOrBadPassword | RejectReason::Replay => {
                        AuthNote::Failed(creds.username.clone(), reason)
                    }
                    other => AuthNote::Refused(other),
                };
                // A failure is answered exactly like a first attempt: a fresh challenge, the
                // same for unknown users and wrong passwords, so nothing can be enumerated.
                return Ok((self.challenge(req, flow, now, false), note));
            }
        };
        let authed = AuthNote::Authenticated(user.clone());
        // Step 3 continued: the authenticated identity may only register its own AoR.
        if user != aor {
            return Err((403, "Forbidden", authed));
        }
        if !table.get(&user).is_some_and(|c| c.enabled) {
            return Err((403, "Extension Disabled", authed));
        }

        // Steps 5-7: the contacts.
        let contacts = parse_contacts(req.headers.get_all(&HeaderName::Contact))
            .map_err(|_| (400, "Malformed Contact", authed.clone()))?;
        let header_expires = match req.headers.get(&HeaderName::Expires) {
            Some(v) => {
                Some(parse_expires(v).map_err(|_| (400, "Malformed Expires", authed.clone()))?)
            }
            None => None,
        };
        let now_unix = now.unix_secs();
        // Outbound (RFC 5626 §6) is in force when this request's contacts carry both
        // +sip.instance and reg-id.
        let mut outbound = false;
        let result = match contacts {
            ContactValue::Star => {
                if header_expires != Some(0)
                    || req.headers.get_all(&HeaderName::Contact).count() != 1
                {
                    return Err((400, "Invalid Wildcard Contact", authed));
                }
                self.location
                    .remove_all(&aor, call_id, cseq.seq, now_unix, changes)
            }
            ContactValue::List(list) if list.is_empty() => Ok(()),
            ContactValue::List(list) => {
                let branch_hash = top_branch_hash(req);
                let user_agent = req
                    .headers
                    .get(&HeaderName::UserAgent)
                    .map(|ua| truncate(ua, 128).to_owned());
                let path: Vec<String> = req
                    .headers
                    .get_all(&HeaderName::Path)
                    .map(str::to_owned)
                    .collect();
                let mut updates = Vec::with_capacity(list.len());
                for c in &list {
                    let requested = c
                        .expires()
                        .or(header_expires)
                        .unwrap_or(self.cfg.default_expires);
                    if requested != 0 && requested < self.cfg.min_expires {
                        let mut resp = self.reply(req, 423, "Interval Too Brief");
                        resp.headers
                            .push(HeaderName::MinExpires, self.cfg.min_expires.to_string());
                        return Ok((resp, authed));
                    }
                    let expires = requested.min(self.cfg.max_expires);
                    let instance = c.params.get("+sip.instance").flatten().map(str::to_owned);
                    // reg-id means nothing without an instance (RFC 5626 §4.2).
                    let reg_id = instance.as_ref().and_then(|_| {
                        c.params
                            .get("reg-id")
                            .flatten()
                            .and_then(|v| v.parse().ok())
                    });
                    outbound |= reg_id.is_some();
                    updates.push(ContactUpdate {
                        binding: Binding {
                            contact: c.uri.to_string(),
                            instance,
                            reg_id,
                            q: c.q(),
                            call_id: call_id.to_owned(),
                            cseq: cseq.seq,
                            branch_hash,
                            expires_at: 0,
                            flow: *flow,
                            path: path.clone(),
                            user_agent: user_agent.clone(),
                            registered_at: 0,
                        },
                        expires,
                    });
                }
                self.location
                    .apply(&aor, &updates, self.cfg.max_contacts, now_unix, changes)
            }
        };
        match result {
            Ok(()) => {}
            Err(ApplyError::OutOfOrder) => return Err((400, "Out Of Order CSeq", authed)),
            Err(ApplyError::TooManyContacts) => return Err((403, "Too Many Contacts", authed)),
        }

        // Step 8: 200 listing every current binding with its remaining lifetime.
        let mut resp = self.reply(req, 200, "OK");
        for b in self.location.bindings(&aor, now_unix) {
            let mut v = format!("<{}>;expires={}", b.contact, b.remaining_secs(now_unix));
            if let Some(inst) = &b.instance {
                v.push_str(";+sip.instance=\"");
                v.push_str(inst.trim_matches('"'));
                v.push('"');
            }
            if let Some(id) = b.reg_id {
                v.push_str(";reg-id=");
                v.push_str(&id.to_string());
            }
            resp.headers.push(HeaderName::Contact, v);
        }
        for p in req.headers.get_all(&HeaderName::Path) {
            resp.headers.push(HeaderName::Path, p.to_owned());
        }
        if outbound && flow.transport.is_stream() {
            // RFC 5626 §6: the registrar confirms it keeps the flow.
            resp.headers.push(HeaderName::Require, "outbound");
        }
        resp.headers.push(HeaderName::Supported, "outbound, path");
        let date = self.http_date(now_unix).to_owned();
        resp.headers.push(HeaderName::Date, date);
        Ok((resp, authed))
    }

    fn challenge(&mut self, req: &Request, flow: &Flow, now: Now, stale: bool) -> Response {
        let mut resp = self.reply(req, 401, "Unauthorized");
        let mut values = self
            .verifier
            .challenge(now.unix_secs(), flow.source.ip(), stale);
        // One challenge per configured algorithm, in configuration order.
        let md5 = self
            .verifier
            .config()
            .algorithms
            .iter()
            .position(|a| *a == Algorithm::Md5);
        if let (Some(i), Some(ua)) = (md5, req.headers.get(&HeaderName::UserAgent)) {
            let ua = ua.to_ascii_lowercase();
            if i < values.len()
                && self
                    .cfg
                    .md5_only_user_agents
                    .iter()
                    .any(|p| ua.contains(p.as_str()))
            {
                let v = values.swap_remove(i);
                values = vec![v];
            }
        }
        for value in values {
            resp.headers.push(HeaderName::WwwAuthenticate, value);
        }
        resp
    }

    fn reply(&self, req: &Request, code: u16, reason: &str) -> Response {
        reply_with_tag(req, code, reason)
    }

    fn http_date(&mut self, now_unix: u64) -> &str {
        if self.date_cache.0 != now_unix {
            self.date_cache = (now_unix, http_date(now_unix));
        }
        &self.date_cache.1
    }
}

/// A response to `req` with a To tag added (RFC 3261 §8.2.6.2). The tag is derived from the
/// Call-ID and From tag so every response in one dialog-less exchange carries the same tag.
pub fn reply_with_tag(req: &Request, code: u16, reason: &str) -> Response {
    let mut resp = Response::reply_to(req, code, reason);
    if code > 100 {
        if let Some(to) = resp.headers.get(&HeaderName::To) {
            if !has_tag(to) {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                req.headers.get(&HeaderName::CallId).hash(&mut h);
                req.headers.get(&HeaderName::From).hash(&mut h);
                let tagged = format!("{to};tag={:016x}", h.finish());
                resp.headers.set(HeaderName::To, tagged);
            }
        }
    }
    resp
}

fn has_tag(header: &str) -> bool {
    // Parameters after the closing '>' (or after the URI when there are no brackets).
    let params = header.rsplit_once('>').map_or(header, |(_, p)| p);
    params
        .split(';')
        .skip(usize::from(!header.contains('>')))
        .any(|p| {
            let name = p.split('=').next().unwrap_or("").trim();
            name.eq_ignore_ascii_case("tag")
        })
}

fn top_branch_hash(req: &Request) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    req.headers.get(&HeaderName::Via).hash(&mut h);
    h.finish()
}

fn request_uri_host(uri: &str) -> Option<String> {
    let u = crate::sip::header::SipUri::parse(uri).ok()?;
    Some(u.host.to_ascii_lowercase())
}

/// RFC 7231 IMF-fixdate, as SIP's Date header wants (RFC 3261 §20.17).
pub fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), valid for the whole u64 range we meet.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_date_matches_known_instants() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(1_795_262_400), "Sat, 21 Nov 2026 12:00:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn tag_detection() {
        assert!(has_tag("<sip:a@b>;tag=x"));
        assert!(!has_tag("<sip:a@b;tag=x>"));
        assert!(has_tag("sip:a@b;tag=x"));
        assert!(!has_tag("sip:a@b"));
        assert!(!has_tag("\"tag\" <sip:a@b>;xtag=1"));
    }
}
