//! One leg's CDR document as FreeSWITCH writes it, before any interpretation.
//!
//! `mod_json_cdr` and `mod_xml_cdr` post (or, after failed posts, leave in their error-log
//! directory) one document per channel at hangup. Both carry the same things: `core-uuid`,
//! `switchname`, `channel_data`, every channel variable, and the callflow (caller profiles
//! and their times). [`RawCdr`] holds exactly those parts, with variable values decoded;
//! `switch::leg` interprets them. This module only parses and bounds. An ESL hang-up event
//! carries the same parts and is read in place through [`HangupCdr`].
//!
//! Value encoding: with `encode-values=true` (FreeSWITCH's default) every variable value is
//! percent-encoded inside the JSON; with `false` it is plain. The document does not say which,
//! so values are percent-decoded when they hold a valid `%XX` escape and left alone otherwise
//! (a plain value such as `"1001" <1001>` has none). A plain value that happens to contain
//! `%41` would be decoded too; FreeSWITCH never generates such variables for the fields
//! gridedge reads (numbers, uuids, epochs, causes, gateway and queue names).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::Hasher;

use base64::Engine;
use rustc_hash::FxHasher;
use serde_json::Value;

use super::esl::EslEvent;

/// Which serializer produced the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CdrFormat {
    Json,
    Xml,
    /// Rebuilt from an ESL `CHANNEL_HANGUP_COMPLETE` event, which carries the same variables.
    EslEvent,
}

impl CdrFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Xml => "xml",
            Self::EslEvent => "esl",
        }
    }
}

/// Bounds on one document; a CDR is a few tens of KiB, so these are generous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CdrLimits {
    pub max_bytes: usize,
    pub max_variables: usize,
    pub max_profiles: usize,
    /// JSON/XML nesting depth.
    pub max_depth: usize,
}

impl Default for CdrLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024,
            max_variables: 4096,
            max_profiles: 64,
            max_depth: 32,
        }
    }
}

/// Why a document was refused. Each names what was wrong, for the HTTP 400 body and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdrError {
    #[error("CDR body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("CDR body is empty")]
    Empty,
    #[error("CDR is not valid JSON: {0}")]
    Json(String),
    #[error("CDR is not valid XML: {0}")]
    Xml(String),
    #[error("CDR form body has no cdr= field")]
    NoCdrField,
    #[error("CDR base64 body does not decode")]
    Base64,
    #[error("CDR nesting exceeds depth {limit}")]
    TooDeep { limit: usize },
    #[error("CDR field `{field}` has the wrong type: expected {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("CDR has no `{0}`")]
    Missing(&'static str),
    #[error("CDR has more than {limit} {what}")]
    TooMany { what: &'static str, limit: usize },
    #[error("CDR field `{field}` is not a valid {expected}: {value:?}")]
    Invalid {
        field: &'static str,
        expected: &'static str,
        value: String,
    },
}

/// One caller profile of the callflow: who called whom at that point of the leg's life, and
/// the leg's times (microseconds since the epoch as FreeSWITCH writes them; `0` = never).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerProfile {
    pub username: String,
    pub caller_id_name: String,
    pub caller_id_number: String,
    pub ani: String,
    pub destination_number: String,
    pub rdnis: String,
    pub uuid: String,
    pub chan_name: String,
    pub network_addr: String,
    /// The callflow's dialplan extension name (e.g. the matched dialplan entry).
    pub extension_name: String,
    /// `times`: created_time, progress_time, progress_media_time, answered_time, bridged_time,
    /// hangup_time, transfer_time, ...
    pub times: BTreeMap<String, String>,
    /// uuids of the originatee profiles (the legs this one originated) when present.
    pub originatees: Vec<String>,
    /// uuids of the originator profiles (the leg that originated this one) when present.
    pub originators: Vec<String>,
}

/// A FreeSWITCH CDR document, parsed and bounded, not yet interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCdr {
    pub format: CdrFormat,
    /// `core-uuid` (absent in CDRs from before 2010).
    pub core_uuid: Option<String>,
    pub switchname: Option<String>,
    /// `channel_data.direction`: `inbound` or `outbound` from FreeSWITCH's point of view.
    pub channel_direction: Option<String>,
    /// Every channel variable, values decoded.
    pub variables: BTreeMap<String, String>,
    /// The callflow as written: FreeSWITCH lists the newest profile first.
    pub profiles: Vec<CallerProfile>,
}

impl RawCdr {
    pub fn var(&self, name: &str) -> Option<&str> {
        self.variables
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The leg's uuid: the `uuid` variable, else the newest caller profile's.
    pub fn uuid(&self) -> Option<&str> {
        CdrView::uuid(self)
    }

    /// Rebuilds the CDR document from a `CHANNEL_HANGUP_COMPLETE` event. The event carries
    /// every channel variable (`variable_*` headers) and the current caller profile
    /// (`Caller-*` headers, times in microseconds); only the older callflow profiles and
    /// `app_log` are missing, which is why a later mod_json_cdr post supersedes it.
    ///
    /// To read a leg from an event, [`HangupCdr`] gives the same answers without copying.
    pub fn from_hangup_event(event: &EslEvent) -> RawCdr {
        let mut variables = BTreeMap::new();
        let mut times = BTreeMap::new();
        for (name, value) in event.headers() {
            if let Some(var) = name.strip_prefix("variable_") {
                variables
                    .entry(var.to_owned())
                    .and_modify(|folded: &mut String| fold_repeat(folded, value))
                    .or_insert_with(|| value.to_owned());
            } else if let Some(t) = caller_channel_time(name) {
                times.insert(time_key(t), value.to_owned());
            }
        }
        let mut profile = event_profile(event);
        profile.times = times;
        RawCdr {
            format: CdrFormat::EslEvent,
            core_uuid: event.core_uuid().map(str::to_owned),
            switchname: event.get("FreeSWITCH-Switchname").map(str::to_owned),
            channel_direction: event.get("Call-Direction").map(str::to_owned),
            variables,
            profiles: vec![profile],
        }
    }
}

/// Multi-value variables arrive as repeated headers; this folds a repeat back into
/// FreeSWITCH's `ARRAY::a|:b` notation, as the CDR documents write them.
fn fold_repeat(folded: &mut String, value: &str) {
    if !folded.starts_with("ARRAY::") {
        folded.insert_str(0, "ARRAY::");
    }
    folded.push_str("|:");
    folded.push_str(value);
}

/// `X` of a `Caller-Channel-X-Time` header (the current profile's times).
fn caller_channel_time(name: &str) -> Option<&str> {
    name.strip_prefix("Caller-Channel-")?.strip_suffix("-Time")
}

/// The event's current caller profile, without its times.
fn event_profile(event: &EslEvent) -> CallerProfile {
    let h = |n: &str| event.get(n).unwrap_or("").to_owned();
    let other = event.get("Other-Leg-Unique-ID").map(str::to_owned);
    let other_type = event.get("Other-Type").unwrap_or("");
    CallerProfile {
        username: h("Caller-Username"),
        caller_id_name: h("Caller-Caller-ID-Name"),
        caller_id_number: h("Caller-Caller-ID-Number"),
        ani: h("Caller-ANI"),
        destination_number: h("Caller-Destination-Number"),
        rdnis: h("Caller-RDNIS"),
        uuid: event.unique_id().unwrap_or("").to_owned(),
        chan_name: h("Caller-Channel-Name"),
        network_addr: h("Caller-Network-Addr"),
        extension_name: String::new(),
        times: BTreeMap::new(),
        originatees: other
            .clone()
            .filter(|_| other_type == "originatee")
            .into_iter()
            .collect(),
        originators: other
            .filter(|_| other_type == "originator")
            .into_iter()
            .collect(),
    }
}

/// What [`Leg`](super::leg::Leg) reads from one leg's CDR, whichever way it arrived: a parsed
/// document ([`RawCdr`]) or a hang-up event read in place ([`HangupCdr`]). For the same event
/// both answer alike, so a leg does not depend on which was used.
pub trait CdrView {
    /// Channel variable `name` (exact name, value decoded), `None` when absent or empty.
    fn var(&self, name: &str) -> Option<&str>;
    /// `core-uuid`.
    fn core_uuid(&self) -> Option<&str>;
    /// `channel_data.direction`.
    fn channel_direction(&self) -> Option<&str>;
    /// The callflow's caller profiles, newest first.
    fn profiles(&self) -> &[CallerProfile];

    /// Time `name` (`created_time`, `answered_time`, ...) of the newest profile, as written.
    fn profile_time(&self, name: &str) -> Option<&str> {
        self.profiles().first()?.times.get(name).map(String::as_str)
    }

    /// The leg's uuid: the `uuid` variable, else the newest caller profile's.
    fn uuid(&self) -> Option<&str> {
        self.var("uuid").or_else(|| {
            self.profiles()
                .iter()
                .map(|p| p.uuid.as_str())
                .find(|u| !u.is_empty())
        })
    }
}

impl CdrView for RawCdr {
    fn var(&self, name: &str) -> Option<&str> {
        RawCdr::var(self, name)
    }

    fn core_uuid(&self) -> Option<&str> {
        self.core_uuid.as_deref()
    }

    fn channel_direction(&self) -> Option<&str> {
        self.channel_direction.as_deref()
    }

    fn profiles(&self) -> &[CallerProfile] {
        &self.profiles
    }
}

/// A `CHANNEL_HANGUP_COMPLETE` event read as a CDR in place: what
/// [`RawCdr::from_hangup_event`] builds, borrowed from the event. A hang-up event has some 250
/// variables and a leg reads about 40 of them, so instead of copying each into a map of owned
/// strings one pass indexes the `variable_*` headers by name (copying only the rare
/// multi-value ones, to fold them) and notes the profile's `Caller-Channel-*-Time` headers.
#[derive(Debug, Clone)]
pub struct HangupCdr<'a> {
    variables: Variables<'a>,
    /// `(X, value)` of every `Caller-Channel-X-Time` header, in order.
    times: Vec<(&'a str, &'a str)>,
    /// The current caller profile, without `times` (see [`CdrView::profile_time`]).
    profile: CallerProfile,
    core_uuid: Option<&'a str>,
    channel_direction: Option<&'a str>,
}

impl<'a> HangupCdr<'a> {
    pub fn new(event: &'a EslEvent) -> HangupCdr<'a> {
        let headers = event.headers();
        let mut variables = Variables::with_capacity(headers.len());
        let mut times = Vec::new();
        for (name, value) in headers {
            if let Some(var) = name.strip_prefix("variable_") {
                variables.add(var, value);
            } else if let Some(t) = caller_channel_time(name) {
                times.push((t, value));
            }
        }
        HangupCdr {
            variables,
            times,
            profile: event_profile(event),
            core_uuid: event.core_uuid(),
            channel_direction: event.get("Call-Direction"),
        }
    }
}

impl CdrView for HangupCdr<'_> {
    fn var(&self, name: &str) -> Option<&str> {
        self.variables.get(name).filter(|v| !v.is_empty())
    }

    fn core_uuid(&self) -> Option<&str> {
        self.core_uuid
    }

    fn channel_direction(&self) -> Option<&str> {
        self.channel_direction
    }

    fn profiles(&self) -> &[CallerProfile] {
        std::slice::from_ref(&self.profile)
    }

    /// The last `Caller-Channel-X-Time` header whose `time_key` is `name`, compared without
    /// building the key.
    fn profile_time(&self, name: &str) -> Option<&str> {
        let want = name.strip_suffix("_time")?.as_bytes();
        let key_byte = |b: u8| {
            if b == b'-' {
                b'_'
            } else {
                b.to_ascii_lowercase()
            }
        };
        self.times
            .iter()
            .rev()
            .find(|(t, _)| {
                t.len() == want.len() && t.bytes().map(key_byte).eq(want.iter().copied())
            })
            .map(|&(_, value)| value)
    }
}

/// An event's channel variables by name, in event order, repeats folded into the first.
///
/// Hashed positions in a flat table: a hash and a probe or two per variable, as fast as a
/// `FxHashMap` here. Unlike one, it cannot be flooded: some variable names come from the
/// caller (`sip_h_X-*` from SIP headers), and with an unseeded hash, names crafted to collide
/// would make every insert scan all the others. Probe runs are bounded instead; a name that
/// lands too far from its slot moves the index to a `BTreeMap`, so the worst case stays
/// O(n log n), like the map of owned strings this replaces.
#[derive(Debug, Clone)]
struct Variables<'a> {
    /// `(name, value)`; a repeated name's values are folded into `ARRAY::a|:b`, as the CDR
    /// documents write them.
    entries: Vec<(&'a str, Cow<'a, str>)>,
    index: NameIndex<'a>,
}

#[derive(Debug, Clone)]
enum NameIndex<'a> {
    /// Open addressing with linear probing: `1 + position in entries`, `0` for empty; a
    /// power-of-two length at most half full.
    Hashed(Vec<u32>),
    Sorted(BTreeMap<&'a str, usize>),
}

/// How far a name may sit from its hashed slot. Runs this long are all but impossible at half
/// load unless the names were made to collide.
const MAX_PROBE: usize = 32;

impl<'a> Variables<'a> {
    /// Room for `n` variables without rehashing.
    fn with_capacity(n: usize) -> Self {
        let slots = n.saturating_mul(2).max(16).checked_next_power_of_two();
        let index = match slots.filter(|&s| u32::try_from(s).is_ok()) {
            Some(slots) => NameIndex::Hashed(vec![0; slots]),
            None => NameIndex::Sorted(BTreeMap::new()),
        };
        Variables {
            entries: Vec::with_capacity(n),
            index,
        }
    }

    fn add(&mut self, name: &'a str, value: &'a str) {
        match self.position(name) {
            Ok(i) => fold_repeat(self.entries[i].1.to_mut(), value),
            Err(slot) => {
                let i = self.entries.len();
                self.entries.push((name, Cow::Borrowed(value)));
                match (&mut self.index, slot) {
                    (NameIndex::Hashed(slots), Some(slot)) if 2 * (i + 1) <= slots.len() => {
                        // `with_capacity` only hashes when every position fits in a u32.
                        slots[slot] = u32::try_from(i + 1).unwrap_or(0);
                    }
                    (NameIndex::Sorted(sorted), _) => {
                        sorted.insert(name, i);
                    }
                    // No free slot near enough, or more variables than the table was sized
                    // for: sort instead from now on.
                    (NameIndex::Hashed(_), _) => {
                        let names = self.entries.iter().enumerate();
                        let tree = names.map(|(i, (name, _))| (*name, i)).collect();
                        self.index = NameIndex::Sorted(tree);
                    }
                }
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.position(name)
            .ok()
            .and_then(|i| self.entries.get(i))
            .map(|(_, value)| value.as_ref())
    }

    /// `Ok(position in entries)` of `name`, else `Err` with the free slot to index it in (none
    /// when sorted or when the probe run is too long).
    fn position(&self, name: &str) -> Result<usize, Option<usize>> {
        match &self.index {
            NameIndex::Hashed(slots) => {
                let mask = slots.len() - 1;
                let mut slot = hash_name(name) & mask;
                for _ in 0..MAX_PROBE {
                    match slots[slot] {
                        0 => return Err(Some(slot)),
                        s => {
                            let i = s as usize - 1;
                            if self.entries.get(i).is_some_and(|(n, _)| *n == name) {
                                return Ok(i);
                            }
                        }
                    }
                    slot = (slot + 1) & mask;
                }
                Err(None)
            }
            NameIndex::Sorted(tree) => tree.get(name).copied().ok_or(None),
        }
    }
}

fn hash_name(name: &str) -> usize {
    let mut hasher = FxHasher::default();
    hasher.write(name.as_bytes());
    hasher.finish() as usize
}

/// The CDR documents' name for the event's `Caller-Channel-<t>-Time`: `Progress-Media` →
/// `progress_media_time`.
fn time_key(t: &str) -> String {
    format!("{}_time", t.to_ascii_lowercase().replace('-', "_"))
}

/// How the body of a `mod_json_cdr` POST is encoded, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostEncoding {
    /// `application/json` (`encode=false`).
    Raw,
    /// `application/x-www-form-urlencoded` with `cdr=<urlencoded json>` (`encode=true`).
    Form,
    /// `application/x-www-form-base64-encoded` (`encode=base64`): `cdr=<base64>`, the base64
    /// not URL-encoded. Error-directory files hold the base64 alone.
    Base64,
    /// The whole body percent-encoded: what mod_json_cdr leaves in its error directory with
    /// `encode=true` (the posted form value, without `cdr=`).
    Percent,
}

impl PostEncoding {
    /// Picks the encoding from a Content-Type header; unknown or absent means raw JSON when
    /// the body starts with `{`, which is what curl-like senders and FreeSWITCH agree on.
    pub fn from_content_type(content_type: Option<&str>, body: &[u8]) -> Self {
        let ct = content_type
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        match ct.as_str() {
            "application/x-www-form-urlencoded" => Self::Form,
            "application/x-www-form-base64-encoded" => Self::Base64,
            "application/json" | "text/json" => Self::Raw,
            _ => Self::sniff(body),
        }
    }

    /// Guesses the encoding of a body with no (or an unknown) content type, such as a file
    /// from mod_json_cdr's error directory: a document starts with `{` or `<`, encoded with
    /// `%7B`/`%3C`, a form with `cdr=`; anything else is taken for base64.
    pub fn sniff(body: &[u8]) -> Self {
        let b = body.trim_ascii_start();
        let starts = |p: &[u8]| b.len() >= p.len() && b[..p.len()].eq_ignore_ascii_case(p);
        if b.is_empty() || starts(b"{") || starts(b"<") || starts(b"[") {
            Self::Raw
        } else if starts(b"cdr=") {
            Self::Form
        } else if starts(b"%7B") || starts(b"%3C") {
            Self::Percent
        } else {
            Self::Base64
        }
    }
}

/// Unwraps a POST body into the JSON document text.
pub fn unwrap_post(
    body: &[u8],
    encoding: PostEncoding,
    limits: &CdrLimits,
) -> Result<Vec<u8>, CdrError> {
    if body.len() > limits.max_bytes {
        return Err(CdrError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    match encoding {
        PostEncoding::Raw => Ok(body.to_vec()),
        PostEncoding::Form => form_urlencoded::parse(body)
            .find(|(k, _)| k == "cdr")
            .map(|(_, v)| v.into_owned().into_bytes())
            .ok_or(CdrError::NoCdrField),
        PostEncoding::Percent => {
            let text = std::str::from_utf8(body.trim_ascii()).map_err(|_| CdrError::Invalid {
                field: "body",
                expected: "percent-encoded UTF-8",
                value: String::new(),
            })?;
            Ok(decode_value(text).into_bytes())
        }
        PostEncoding::Base64 => {
            let body = body.trim_ascii_start();
            let body = body.strip_prefix(b"cdr=").unwrap_or(body);
            let trimmed: Vec<u8> = body
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(trimmed)
                .map_err(|_| CdrError::Base64)
        }
    }
}

/// Parses a `mod_json_cdr` document (the JSON text, already unwrapped from its POST encoding).
pub fn parse_json(text: &[u8], limits: &CdrLimits) -> Result<RawCdr, CdrError> {
    if text.len() > limits.max_bytes {
        return Err(CdrError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    if text.trim_ascii().is_empty() {
        return Err(CdrError::Empty);
    }
    // serde_json refuses nesting beyond 128 on its own; the explicit depth check below keeps
    // recursion in this module bounded to the configured depth too.
    // Read the top level as ordered entries: 2015-era mod_json_cdr writes one `callflow` key
    // per caller profile (newest first), which a map would collapse to the last one.
    let entries: TopEntries = serde_json::from_slice(text).map_err(|e| {
        if e.is_data() {
            CdrError::WrongType {
                field: "document",
                expected: "object",
            }
        } else {
            CdrError::Json(e.to_string())
        }
    })?;
    let mut top = serde_json::Map::new();
    let mut flows: Vec<Value> = Vec::new();
    for (key, value) in entries.0 {
        check_depth(&value, limits.max_depth.saturating_sub(1))?;
        if key == "callflow" {
            match value {
                Value::Array(items) => flows.extend(items),
                other => flows.push(other),
            }
        } else {
            top.entry(key).or_insert(value);
        }
    }
    let core_uuid = opt_string(top.get("core-uuid"), "core-uuid")?;
    let switchname = opt_string(top.get("switchname"), "switchname")?;
    let channel_direction = match top.get("channel_data") {
        None | Some(Value::Null) => None,
        Some(Value::Object(cd)) => opt_string(cd.get("direction"), "channel_data.direction")?,
        Some(_) => {
            return Err(CdrError::WrongType {
                field: "channel_data",
                expected: "object",
            })
        }
    };
    let variables = match top.get("variables") {
        Some(Value::Object(vars)) => {
            if vars.len() > limits.max_variables {
                return Err(CdrError::TooMany {
                    what: "variables",
                    limit: limits.max_variables,
                });
            }
            let mut out = BTreeMap::new();
            for (name, value) in vars {
                let text = match value {
                    Value::String(s) => decode_value(s),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => String::new(),
                    // Arrays appear for multi-valued variables in some builds; keep them in
                    // FreeSWITCH's own `ARRAY::a|:b` notation so downstream parsing is uniform.
                    Value::Array(items) => {
                        let parts: Vec<String> = items
                            .iter()
                            .map(|i| match i {
                                Value::String(s) => decode_value(s),
                                other => other.to_string(),
                            })
                            .collect();
                        format!("ARRAY::{}", parts.join("|:"))
                    }
                    Value::Object(_) => {
                        return Err(CdrError::WrongType {
                            field: "variables.*",
                            expected: "string",
                        })
                    }
                };
                out.insert(name.clone(), text);
            }
            out
        }
        Some(_) => {
            return Err(CdrError::WrongType {
                field: "variables",
                expected: "object",
            })
        }
        None => return Err(CdrError::Missing("variables")),
    };
    if flows.len() > limits.max_profiles {
        return Err(CdrError::TooMany {
            what: "callflow profiles",
            limit: limits.max_profiles,
        });
    }
    let mut profiles = Vec::new();
    for flow in &flows {
        match flow {
            Value::Null => {}
            Value::Object(_) => profiles.push(json_profile(flow)?),
            _ => {
                return Err(CdrError::WrongType {
                    field: "callflow",
                    expected: "array or object",
                })
            }
        }
    }
    if profiles.len() > limits.max_profiles {
        return Err(CdrError::TooMany {
            what: "callflow profiles",
            limit: limits.max_profiles,
        });
    }
    Ok(RawCdr {
        format: CdrFormat::Json,
        core_uuid,
        switchname,
        channel_direction,
        variables,
        profiles,
    })
}

/// A JSON object's entries in document order, duplicates kept.
struct TopEntries(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for TopEntries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TopEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<TopEntries, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(TopEntries(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn check_depth(value: &Value, max: usize) -> Result<(), CdrError> {
    // Iterative, so a hostile document cannot overflow the stack here.
    let mut stack = vec![(value, 1usize)];
    while let Some((v, depth)) = stack.pop() {
        if depth > max {
            return Err(CdrError::TooDeep { limit: max });
        }
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

fn opt_string(value: Option<&Value>, field: &'static str) -> Result<Option<String>, CdrError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(decode_value(s))),
        Some(_) => Err(CdrError::WrongType {
            field,
            expected: "string",
        }),
    }
}

fn str_field(map: &serde_json::Map<String, Value>, key: &str) -> String {
    match map.get(key) {
        Some(Value::String(s)) => decode_value(s),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn json_profile(flow: &Value) -> Result<CallerProfile, CdrError> {
    let Value::Object(flow) = flow else {
        return Err(CdrError::WrongType {
            field: "callflow[]",
            expected: "object",
        });
    };
    let mut profile = CallerProfile::default();
    if let Some(Value::Object(ext)) = flow.get("extension") {
        profile.extension_name = str_field(ext, "name");
    }
    match flow.get("caller_profile") {
        Some(Value::Object(cp)) => {
            profile.username = str_field(cp, "username");
            profile.caller_id_name = str_field(cp, "caller_id_name");
            profile.caller_id_number = str_field(cp, "caller_id_number");
            profile.ani = str_field(cp, "ani");
            profile.destination_number = str_field(cp, "destination_number");
            profile.rdnis = str_field(cp, "rdnis");
            profile.uuid = str_field(cp, "uuid");
            profile.chan_name = str_field(cp, "chan_name");
            profile.network_addr = str_field(cp, "network_addr");
            profile.originatees = related_uuids(cp, "originatee", "originatee_caller_profiles");
            profile.originators = related_uuids(cp, "originator", "originator_caller_profiles");
        }
        None | Some(Value::Null) => {}
        Some(_) => {
            return Err(CdrError::WrongType {
                field: "callflow.caller_profile",
                expected: "object",
            })
        }
    }
    match flow.get("times") {
        Some(Value::Object(times)) => {
            for (k, v) in times {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => continue,
                };
                profile.times.insert(k.clone(), text);
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => {
            return Err(CdrError::WrongType {
                field: "callflow.times",
                expected: "object",
            })
        }
    }
    Ok(profile)
}

fn related_uuids(cp: &serde_json::Map<String, Value>, outer: &str, list: &str) -> Vec<String> {
    let Some(Value::Object(o)) = cp.get(outer) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    let mut push = |p: &Value| {
        if let Value::Object(p) = p {
            let uuid = str_field(p, "uuid");
            if !uuid.is_empty() && !out.contains(&uuid) {
                out.push(uuid);
            }
        }
    };
    match o.get(list) {
        Some(Value::Array(items)) => items.iter().for_each(&mut push),
        Some(item @ Value::Object(_)) => push(item),
        _ => {}
    }
    out
}

/// Percent-decodes a value when it holds at least one valid `%XX`, as `encode-values=true`
/// writes; otherwise returns it unchanged. Invalid UTF-8 after decoding is replaced, never
/// refused: a garbled display name must not cost the call its CDR.
pub fn decode_value(value: &str) -> String {
    let bytes = value.as_bytes();
    let has_escape = bytes
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit());
    if !has_escape {
        return value.to_owned();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_json_fixture_layout() {
        let limits = CdrLimits::default();
        let cdr = parse_json(fixture!("cdr-inbound-answered-bridged-2018.json"), &limits).unwrap();
        assert_eq!(cdr.uuid(), Some("5a3a1d91-90d3-4db4-af5c-cc3ae15d93a4"));
        assert_eq!(cdr.channel_direction.as_deref(), Some("inbound"));
        assert_eq!(cdr.profiles.len(), 2);
        assert_eq!(
            cdr.profiles[0].originatees,
            vec!["9c1afb4f-1d4a-4e45-84a3-d25721981bf5".to_owned()]
        );
        assert_eq!(cdr.var("caller_id"), Some("\"1001\" <1001>"));

        let cdr = parse_json(fixture!("cdr-inbound-cancelled-aleg-2025.json"), &limits).unwrap();
        // encode-values=true: percent-encoded values come out decoded.
        assert_eq!(cdr.var("caller_id"), Some("\"1001\" <1001>"));
        assert_eq!(cdr.var("proto_specific_hangup_cause"), Some("sip:487"));

        let cdr = parse_json(fixture!("cdr-outbound-cancelled-bleg-2025.json"), &limits).unwrap();
        assert_eq!(
            cdr.profiles[0].originators,
            vec!["51156b0b-f91b-4fd3-9c8f-15226f6098be".to_owned()]
        );

        // 2015: callflow is an object, not an array.
        // 2015: one `callflow` key per profile, newest first; both are kept.
        let cdr = parse_json(fixture!("cdr-inbound-answered-prepaid-2015.json"), &limits).unwrap();
        assert_eq!(cdr.profiles.len(), 2);
        let cdr = parse_json(
            fixture!("cdr-inbound-answered-urlencoded-2013.json"),
            &limits,
        )
        .unwrap();
        assert!(cdr.switchname.is_none() || cdr.switchname.is_some());
        assert!(cdr.uuid().is_some());
    }

    #[test]
    fn post_encodings_unwrap_to_the_same_document() {
        let limits = CdrLimits::default();
        let json = fixture!("cdr-inbound-answered-bridged-2018.json");
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("cdr", std::str::from_utf8(json).unwrap())
            .finish();
        let b64 = base64::engine::general_purpose::STANDARD.encode(json);
        for (body, ct) in [
            (json.to_vec(), "application/json"),
            (form.into_bytes(), "application/x-www-form-urlencoded"),
            (b64.into_bytes(), "application/x-www-form-base64-encoded"),
        ] {
            let enc = PostEncoding::from_content_type(Some(ct), &body);
            let text = unwrap_post(&body, enc, &limits).unwrap();
            assert_eq!(text, json);
        }
        assert_eq!(
            PostEncoding::from_content_type(None, b"cdr=%7B%7D"),
            PostEncoding::Form
        );
        // What FreeSWITCH really posts with encode=base64, and what it leaves in its error
        // directory with encode=true / encode=base64.
        let posted = format!(
            "cdr={}",
            base64::engine::general_purpose::STANDARD.encode(json)
        );
        assert_eq!(
            unwrap_post(posted.as_bytes(), PostEncoding::Base64, &limits).unwrap(),
            json
        );
        let percent: String = form_urlencoded::byte_serialize(json)
            .collect::<String>()
            .replace('+', "%20");
        for file in [
            percent.into_bytes(),
            base64::engine::general_purpose::STANDARD
                .encode(json)
                .into_bytes(),
            json.to_vec(),
        ] {
            let enc = PostEncoding::sniff(&file);
            assert_eq!(unwrap_post(&file, enc, &limits).unwrap(), json, "{enc:?}");
        }
    }

    #[test]
    fn hostile_documents_are_refused_with_a_reason() {
        let limits = CdrLimits::default();
        assert!(matches!(parse_json(b"", &limits), Err(CdrError::Empty)));
        assert!(matches!(parse_json(b"{", &limits), Err(CdrError::Json(_))));
        assert!(matches!(
            parse_json(b"[1,2]", &limits),
            Err(CdrError::WrongType { .. })
        ));
        assert_eq!(
            parse_json(b"{\"core-uuid\":\"x\"}", &limits),
            Err(CdrError::Missing("variables"))
        );
        assert!(matches!(
            parse_json(b"{\"variables\":[]}", &limits),
            Err(CdrError::WrongType {
                field: "variables",
                ..
            })
        ));
        assert!(matches!(
            parse_json(b"{\"variables\":{\"a\":{\"b\":1}}}", &limits),
            Err(CdrError::WrongType { .. })
        ));
        assert!(matches!(
            parse_json(b"{\"core-uuid\":7,\"variables\":{}}", &limits),
            Err(CdrError::WrongType {
                field: "core-uuid",
                ..
            })
        ));
        let deep = format!(
            "{{\"variables\":{{}},\"x\":{}{}}}",
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(matches!(
            parse_json(deep.as_bytes(), &limits),
            Err(CdrError::TooDeep { .. })
        ));
        let big = vec![b' '; limits.max_bytes + 1];
        assert!(matches!(
            parse_json(&big, &limits),
            Err(CdrError::TooLarge { .. })
        ));
        assert_eq!(
            unwrap_post(b"x=1", PostEncoding::Form, &limits),
            Err(CdrError::NoCdrField)
        );
        assert_eq!(
            unwrap_post(b"!!!", PostEncoding::Base64, &limits),
            Err(CdrError::Base64)
        );
    }

    /// `from_hangup_event` as it was before [`HangupCdr`]: the oracle for both the document
    /// it builds and the leg read in place.
    fn reference_from_hangup_event(event: &EslEvent) -> RawCdr {
        let mut variables = BTreeMap::new();
        let mut times = BTreeMap::new();
        for (name, value) in event.headers() {
            if let Some(var) = name.strip_prefix("variable_") {
                variables
                    .entry(var.to_owned())
                    .and_modify(|v: &mut String| {
                        if !v.starts_with("ARRAY::") {
                            v.insert_str(0, "ARRAY::");
                        }
                        v.push_str("|:");
                        v.push_str(value);
                    })
                    .or_insert_with(|| value.to_owned());
            } else if let Some(t) = name.strip_prefix("Caller-Channel-") {
                if let Some(t) = t.strip_suffix("-Time") {
                    times.insert(
                        format!("{}_time", t.to_ascii_lowercase().replace('-', "_")),
                        value.to_owned(),
                    );
                }
            }
        }
        let h = |n: &str| event.get(n).unwrap_or("").to_owned();
        let other = event.get("Other-Leg-Unique-ID").map(str::to_owned);
        let other_type = event.get("Other-Type").unwrap_or("");
        let profile = CallerProfile {
            username: h("Caller-Username"),
            caller_id_name: h("Caller-Caller-ID-Name"),
            caller_id_number: h("Caller-Caller-ID-Number"),
            ani: h("Caller-ANI"),
            destination_number: h("Caller-Destination-Number"),
            rdnis: h("Caller-RDNIS"),
            uuid: event.unique_id().unwrap_or("").to_owned(),
            chan_name: h("Caller-Channel-Name"),
            network_addr: h("Caller-Network-Addr"),
            extension_name: String::new(),
            times,
            originatees: other
                .clone()
                .filter(|_| other_type == "originatee")
                .into_iter()
                .collect(),
            originators: other
                .filter(|_| other_type == "originator")
                .into_iter()
                .collect(),
        };
        RawCdr {
            format: CdrFormat::EslEvent,
            core_uuid: event.core_uuid().map(str::to_owned),
            switchname: event.get("FreeSWITCH-Switchname").map(str::to_owned),
            channel_direction: event.get("Call-Direction").map(str::to_owned),
            variables,
            profiles: vec![profile],
        }
    }

    /// The document and the leg of `event` are what they were, whichever way they are read.
    fn assert_event_reads_as_before(event: &EslEvent) {
        use crate::switch::leg::{Leg, LegVariables};
        let reference = reference_from_hangup_event(event);
        assert_eq!(RawCdr::from_hangup_event(event), reference);
        let vars = LegVariables::default();
        assert_eq!(
            Leg::from_hangup_event(event, &vars),
            Leg::from_raw(&reference, &vars)
        );
        let view = HangupCdr::new(event);
        for name in reference.variables.keys() {
            assert_eq!(view.var(name), reference.var(name), "{name}");
        }
        for name in reference.profiles[0].times.keys() {
            assert_eq!(
                view.profile_time(name),
                reference.profile_time(name),
                "{name}"
            );
        }
    }

    #[test]
    fn hangup_event_fixtures_read_as_before() {
        let plain = [
            fixture!("esl-channel-hangup-complete-2018.txt"),
            fixture!("esl-channel-hangup-complete-2015.txt"),
        ];
        for body in plain {
            let event = EslEvent::parse_plain(body).unwrap();
            assert_event_reads_as_before(&event);
            // The multi-value variables really are folded back.
            let cdr = RawCdr::from_hangup_event(&event);
            assert!(cdr.variables.values().any(|v| v.starts_with("ARRAY::")));
        }
        let json = [
            fixture!("esl-channel-hangup-complete-bleg-cancelled-2025.json"),
            fixture!("esl-channel-hangup-complete-originate-answered-2025.json"),
        ];
        for body in json {
            assert_event_reads_as_before(&EslEvent::parse_json(body).unwrap());
        }
    }

    fn hangup_header() -> impl Strategy<Value = (String, String)> {
        let name = prop::sample::select(
            &[
                "variable_uuid",
                "variable_start_uepoch",
                "variable_start_epoch",
                "variable_end_epoch",
                "variable_answer_uepoch",
                "variable_originator",
                "variable_originated_legs",
                "variable_bridge_uuid",
                "variable_channel_cid_flipped",
                "variable_direction",
                "variable_sip_gateway_name",
                "variable_sip_from_user",
                "variable_dialed_user",
                "variable_hangup_cause",
                "variable_cc_queue",
                "variable_x",
                "variable_",
                "Variable_uuid",
                "Caller-Channel-Created-Time",
                "Caller-Channel-created-Time",
                "Caller-Channel-Hangup-Time",
                "Caller-Channel-Answered-Time",
                "Caller-Channel-Progress-Media-Time",
                "Caller-Channel-Progress_Media-Time",
                "Caller-Channel--Time",
                "Caller-Channel-Hangup-time",
                "Caller-Caller-ID-Number",
                "Caller-Destination-Number",
                "Caller-Username",
                "Unique-ID",
                "Core-UUID",
                "Call-Direction",
                "Other-Type",
                "Other-Leg-Unique-ID",
            ][..],
        );
        let value = prop::sample::select(
            &[
                "",
                "0",
                "7",
                "1521025758006702",
                "1521025788",
                "ARRAY::x",
                "a-1",
                "b-2;name;1002",
                "outbound",
                "inbound",
                "originator",
                "originatee",
                "yes",
                "1002",
            ][..],
        );
        (name, value).prop_map(|(n, v)| (n.to_owned(), v.to_owned()))
    }

    proptest! {
        #[test]
        fn generated_hangup_events_read_as_before(
            headers in prop::collection::vec(hangup_header(), 0..40)
        ) {
            let pairs: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            assert_event_reads_as_before(&EslEvent::from_pairs(&pairs));
        }
    }

    /// The variables index against a plain map, including its fallbacks: more variables
    /// than it was sized for, and names made to collide.
    #[test]
    fn variables_index_falls_back_to_sorting() {
        fn check(variables: &Variables, names: &[String]) {
            for (i, name) in names.iter().enumerate() {
                assert_eq!(variables.get(name), Some(i.to_string().as_str()), "{name}");
            }
            assert_eq!(variables.get("absent"), None);
        }
        let names: Vec<String> = (0..100).map(|i| format!("v{i}")).collect();
        let values: Vec<String> = (0..100).map(|i| i.to_string()).collect();

        let mut small = Variables::with_capacity(4);
        for (name, value) in names.iter().zip(&values) {
            small.add(name, value);
        }
        assert!(
            matches!(small.index, NameIndex::Sorted(_)),
            "outgrew its table"
        );
        check(&small, &names);

        // Names whose hashes all land on one slot of a 256-slot table.
        let home = |name: &str| hash_name(name) & 255;
        let colliding: Vec<String> = (0..)
            .map(|i| format!("c{i}"))
            .filter(|n| home(n) == home("c0"))
            .take(MAX_PROBE + 8)
            .collect();
        let values: Vec<String> = (0..colliding.len()).map(|i| i.to_string()).collect();
        let mut flooded = Variables::with_capacity(128);
        for (i, (name, value)) in colliding.iter().zip(&values).enumerate() {
            flooded.add(name, value);
            let sorted = matches!(flooded.index, NameIndex::Sorted(_));
            assert_eq!(sorted, i >= MAX_PROBE, "{i}");
        }
        check(&flooded, &colliding);
        // Repeats still fold once sorted.
        flooded.add(&colliding[3], "again");
        assert_eq!(flooded.get(&colliding[3]), Some("ARRAY::3|:again"));
    }

    #[test]
    fn value_decoding_only_touches_valid_escapes() {
        assert_eq!(decode_value("sip%3A487"), "sip:487");
        assert_eq!(decode_value("100%"), "100%");
        assert_eq!(decode_value("50%zz"), "50%zz");
        assert_eq!(decode_value("a%2"), "a%2");
        assert_eq!(decode_value("%E4%B8%AD"), "中");
        assert_eq!(decode_value("%FF"), "\u{FFFD}");
    }
}
