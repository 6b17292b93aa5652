//! The grid platform's queries and pushes to us (seed 000 §二 网格化调用端, 000:L727-L1049),
//! sans-IO: request parameters in, validated domain requests out, and the contract's JSON
//! built from plain snapshots (directory rows, presence views, queued calls) and `now`.
//!
//! Wire rules reproduced exactly (grid reference A.1.4, C.5):
//! - `code` is the **String** `"200"` for the recording download, the agent list and the
//!   extension list (000:L754, L827, L895) and the **int** `200` for the agent change, the queue
//!   list, the skill groups and the 保底号码 push (000:L936, L969, L1010, L1048). Errors use the
//!   same envelope and type, with the HTTP status as the code.
//! - Every agent-list value is a String (000:L827-L862), the typo `serviceameList` included
//!   (000:L862).
//!
//! Decisions on what the seed leaves open are documented where they are made, with the line
//! they concern.

use std::collections::{BTreeMap, HashSet};

use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde_json::{json, Map, Value};

use crate::agents::counters::CounterSnapshot;
use crate::agents::directory::{AccessNumber, Agent, SkillGroup};

use super::queue_board::QueuedCall;

/// Most agent ids one agent-list request may name (000:L817: "最多允许100个").
pub const MAX_AGENT_IDS: usize = 100;
/// Longest identifier accepted (agent ids, skill-group ids, org numbers, record ids).
pub const MAX_ID_LEN: usize = 64;
/// Longest agent name.
pub const MAX_NAME_LEN: usize = 64;
/// Default page size when a paged query gives none.
pub const DEFAULT_PAGE_SIZE: u64 = 100;
/// Longest raw `agentIds` value: 100 quoted ids of `MAX_ID_LEN` plus separators and blanks.
const MAX_AGENT_IDS_RAW: usize = MAX_AGENT_IDS * (MAX_ID_LEN + 8);

/// A refused request: HTTP status (also the envelope's `code`), metrics label, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub status: u16,
    pub label: &'static str,
    pub msg: String,
}

impl QueryError {
    pub fn new(status: u16, label: &'static str, msg: impl Into<String>) -> Self {
        Self {
            status,
            label,
            msg: msg.into(),
        }
    }

    pub fn bad(msg: impl Into<String>) -> Self {
        Self::new(400, "bad_param", msg)
    }

    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(404, "not_found", msg)
    }

    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::new(409, "conflict", msg)
    }
}

/// How a route renders `code` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeStyle {
    /// `"200"`.
    Str,
    /// `200`.
    Int,
}

/// `{code, msg}` with `code` typed per route.
pub fn envelope(style: CodeStyle, code: u16, msg: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "code".into(),
        match style {
            CodeStyle::Str => Value::String(code.to_string()),
            CodeStyle::Int => Value::from(code),
        },
    );
    m.insert("msg".into(), Value::String(msg.to_owned()));
    m
}

pub const OK_MSG: &str = "success";

// ---- parameters -------------------------------------------------------------------------

/// One parameter value as sent.
#[derive(Debug, Clone, PartialEq)]
enum PValue {
    Str(String),
    Int(i64),
    /// A JSON value of another type (named for the message).
    Other(&'static str),
}

/// Request parameters from a JSON object or a form-urlencoded body (plus the query string).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(Vec<(String, PValue)>);

/// The body's encoding, from `Content-Type` (or, without one, from its first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
}

impl BodyKind {
    pub fn detect(content_type: Option<&str>, body: &[u8]) -> Result<BodyKind, QueryError> {
        match content_type.map(|c| c.to_ascii_lowercase()) {
            Some(c) if c.contains("json") => Ok(BodyKind::Json),
            Some(c) if c.contains("x-www-form-urlencoded") => Ok(BodyKind::Form),
            Some(c) if !c.trim().is_empty() && !c.starts_with("text/plain") => {
                Err(QueryError::new(
                    415,
                    "unsupported_media_type",
                    format!(
                    "Content-Type {c:?} is not supported; send application/json or application/x-www-form-urlencoded"
                ),
                ))
            }
            _ => Ok(
                if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
                    BodyKind::Json
                } else {
                    BodyKind::Form
                },
            ),
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a non-integer number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Params {
    /// Parses the query string and the body. A name given twice is refused rather than
    /// guessed at; `null` and empty strings count as absent.
    pub fn parse(query: Option<&str>, kind: BodyKind, body: &[u8]) -> Result<Params, QueryError> {
        let mut p = Params::default();
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            p.add_form(q.as_bytes())?;
        }
        match kind {
            BodyKind::Form => p.add_form(body)?,
            BodyKind::Json => {
                if !body.iter().all(u8::is_ascii_whitespace) {
                    let v: Value = serde_json::from_slice(body)
                        .map_err(|e| QueryError::bad(format!("body is not valid JSON: {e}")))?;
                    let Value::Object(obj) = v else {
                        return Err(QueryError::bad(format!(
                            "body must be a JSON object, got {}",
                            json_kind(&v)
                        )));
                    };
                    for (k, v) in obj {
                        let pv = match v {
                            Value::Null => continue,
                            Value::String(s) => PValue::Str(s),
                            Value::Number(n) => match n.as_i64() {
                                Some(i) => PValue::Int(i),
                                None => PValue::Other("a non-integer number"),
                            },
                            other => PValue::Other(json_kind(&other)),
                        };
                        p.push(k, pv)?;
                    }
                }
            }
        }
        Ok(p)
    }

    fn add_form(&mut self, bytes: &[u8]) -> Result<(), QueryError> {
        if std::str::from_utf8(bytes).is_err() {
            return Err(QueryError::bad("parameters are not valid UTF-8"));
        }
        for (k, v) in form_urlencoded::parse(bytes) {
            if k.contains('\u{FFFD}') || v.contains('\u{FFFD}') {
                return Err(QueryError::bad(format!(
                    "parameter {k} is not valid percent-encoded UTF-8"
                )));
            }
            self.push(k.into_owned(), PValue::Str(v.into_owned()))?;
        }
        Ok(())
    }

    fn push(&mut self, k: String, v: PValue) -> Result<(), QueryError> {
        if self.0.iter().any(|(n, _)| *n == k) {
            return Err(QueryError::bad(format!(
                "parameter {k} given more than once"
            )));
        }
        if self.0.len() >= 64 {
            return Err(QueryError::bad("too many parameters (at most 64)"));
        }
        self.0.push((k, v));
        Ok(())
    }

    fn raw(&self, name: &str) -> Option<&PValue> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// A String parameter. Integers are taken as their decimal text (a JSON client may send
    /// `"state": 0`); other JSON types are refused.
    pub fn str(&self, name: &str) -> Result<Option<String>, QueryError> {
        match self.raw(name) {
            None => Ok(None),
            Some(PValue::Str(s)) => {
                let t = s.trim();
                Ok((!t.is_empty()).then(|| t.to_owned()))
            }
            Some(PValue::Int(i)) => Ok(Some(i.to_string())),
            Some(PValue::Other(kind)) => Err(QueryError::bad(format!(
                "parameter {name} must be a string, got {kind}"
            ))),
        }
    }

    pub fn required_str(&self, name: &str) -> Result<String, QueryError> {
        self.str(name)?
            .ok_or_else(|| QueryError::bad(format!("missing parameter {name}")))
    }

    /// Whether the parameter is present at all (even empty).
    pub fn has(&self, name: &str) -> bool {
        self.raw(name).is_some()
    }

    /// An int parameter: a JSON integer or a decimal string.
    pub fn int(&self, name: &str) -> Result<Option<i64>, QueryError> {
        match self.raw(name) {
            None => Ok(None),
            Some(PValue::Int(i)) => Ok(Some(*i)),
            Some(PValue::Str(s)) if s.trim().is_empty() => Ok(None),
            Some(PValue::Str(s)) => s.trim().parse::<i64>().map(Some).map_err(|_| {
                QueryError::bad(format!("parameter {name} must be an integer, got {s:?}"))
            }),
            Some(PValue::Other(kind)) => Err(QueryError::bad(format!(
                "parameter {name} must be an integer, got {kind}"
            ))),
        }
    }
}

// ---- identifiers ------------------------------------------------------------------------

fn id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@')
}

/// An identifier (agent id, skill-group id, org number): 1-64 of `A-Z a-z 0-9 - _ . @`.
pub fn check_id(name: &str, v: &str) -> Result<(), QueryError> {
    if v.is_empty() || v.len() > MAX_ID_LEN || !v.bytes().all(id_char) {
        return Err(QueryError::bad(format!(
            "{name} must be 1-{MAX_ID_LEN} characters of A-Z, a-z, 0-9, '-', '_', '.', '@'; got {:?}",
            truncate(v, 80)
        )));
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// A recording's id (000:L748: per recording, not per call). Also used as a file-name stem
/// by indexes, hence the strict alphabet: 1-128 of `A-Z a-z 0-9 - _ .`, not starting with a
/// dot (no `..`, no `/`).
pub fn parse_record_id(v: &str) -> Result<String, QueryError> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && !v.starts_with('.')
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(QueryError::bad(format!(
            "recordId must be 1-128 characters of A-Z, a-z, 0-9, '-', '_', '.' not starting with '.'; got {:?}",
            truncate(v, 80)
        )))
    }
}

/// `startTime` (000:L747: "年月", format to be provided by 合众): kept as a hint for the
/// index; checked only to be short and made of digits and date punctuation.
pub fn parse_start_time(v: Option<String>) -> Result<Option<String>, QueryError> {
    match v {
        None => Ok(None),
        Some(s)
            if s.len() <= 32
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b':' | b'/' | b' ' | b'T')) =>
        {
            Ok(Some(s))
        }
        Some(s) => Err(QueryError::bad(format!(
            "startTime must be at most 32 characters of digits and '-', ':', '/', ' ', 'T'; got {:?}",
            truncate(&s, 40)
        ))),
    }
}

/// A phone number as a caller ID: optional `+`, then 3-20 digits.
pub fn check_phone(name: &str, v: &str) -> Result<(), QueryError> {
    let digits = v.strip_prefix('+').unwrap_or(v);
    if (3..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(QueryError::bad(format!(
            "{name} must be a phone number: an optional '+' and 3-20 digits; got {:?}",
            truncate(v, 40)
        )))
    }
}

/// An extension number (as the directory stores them): 1-16 digits.
pub fn check_extension(name: &str, v: &str) -> Result<(), QueryError> {
    crate::agents::directory::ExtensionNumber::parse(v)
        .map(|_| ())
        .map_err(|_| {
            QueryError::bad(format!(
                "{name} must be 1-16 digits; got {:?}",
                truncate(v, 40)
            ))
        })
}

/// `agentIds` (000:L817): ids separated by commas, each "wrapped in single quotes"
/// (`'a1','a2'`). Unquoted ids and blanks around items are tolerated; a quote that is not a
/// whole item's wrapper (`'a1`, `a'1'`, `'a''b'`), an empty item, or more than
/// [`MAX_AGENT_IDS`] distinct ids is refused with a message naming the item. Duplicates are
/// dropped; order is kept.
pub fn parse_agent_ids(raw: &str) -> Result<Vec<String>, QueryError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    if raw.len() > MAX_AGENT_IDS_RAW {
        return Err(QueryError::bad(format!(
            "agentIds is too long ({} bytes); at most {MAX_AGENT_IDS} ids are allowed",
            raw.len()
        )));
    }
    let mut out: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for (i, item) in raw.split(',').enumerate() {
        let item = item.trim();
        let id = match item.strip_prefix('\'') {
            Some(rest) => rest.strip_suffix('\'').ok_or_else(|| {
                QueryError::bad(format!(
                    "agentIds item {} ({:?}) has an unbalanced quote; expected 'id','id'",
                    i + 1,
                    truncate(item, 80)
                ))
            })?,
            None => item,
        };
        if id.is_empty() {
            return Err(QueryError::bad(format!(
                "agentIds item {} is empty; expected 'id','id'",
                i + 1
            )));
        }
        if id.contains('\'') {
            return Err(QueryError::bad(format!(
                "agentIds item {} ({:?}) has a stray quote; expected 'id','id'",
                i + 1,
                truncate(item, 80)
            )));
        }
        check_id(&format!("agentIds item {}", i + 1), id)?;
        if seen.insert(id.to_owned()) {
            out.push(id.to_owned());
            if out.len() > MAX_AGENT_IDS {
                return Err(QueryError::bad(format!(
                    "agentIds names more than {MAX_AGENT_IDS} agents"
                )));
            }
        }
    }
    Ok(out)
}

// ---- paging -----------------------------------------------------------------------------

/// A window over an ordered list: `offset` items skipped, at most `limit` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: u64,
    pub limit: u64,
}

impl Page {
    pub const ALL: Page = Page {
        offset: 0,
        limit: u64::MAX,
    };

    pub fn apply<T>(&self, items: Vec<T>) -> Vec<T> {
        let off = usize::try_from(self.offset).unwrap_or(usize::MAX);
        let lim = usize::try_from(self.limit).unwrap_or(usize::MAX);
        items.into_iter().skip(off).take(lim).collect()
    }
}

fn page_size(p: &Params, required: bool, max: u64) -> Result<u64, QueryError> {
    match p.int("pageSize")? {
        None if required => Err(QueryError::bad("missing parameter pageSize")),
        None => Ok(DEFAULT_PAGE_SIZE.min(max)),
        Some(n) if n >= 1 && (n as u64) <= max => Ok(n as u64),
        Some(n) => Err(QueryError::bad(format!(
            "pageSize must be between 1 and {max}, got {n}"
        ))),
    }
}

/// `pageNo` as a page number (页码, 000:L888 and L962): 1 is the first page.
fn page_by_number(p: &Params, required: bool, max: u64) -> Result<Page, QueryError> {
    let size = page_size(p, required, max)?;
    let no = match p.int("pageNo")? {
        None if required => return Err(QueryError::bad("missing parameter pageNo")),
        None => 1,
        Some(n) if n >= 1 => n as u64,
        Some(n) => {
            return Err(QueryError::bad(format!(
                "pageNo is a page number starting at 1, got {n}"
            )))
        }
    };
    Ok(Page {
        offset: (no - 1).saturating_mul(size),
        limit: size,
    })
}

/// `pageNo` as the agent list defines it (000:L820, "查询开始 项", the item to start from):
/// the 1-based position of the first item returned.
fn page_by_start_item(p: &Params, max: u64) -> Result<Page, QueryError> {
    let size = page_size(p, false, max)?;
    let start = match p.int("pageNo")? {
        None => 1,
        Some(n) if n >= 1 => n as u64,
        Some(n) => {
            return Err(QueryError::bad(format!(
                "pageNo is the 1-based position of the first agent to return (查询开始项), got {n}"
            )))
        }
    };
    Ok(Page {
        offset: start - 1,
        limit: size,
    })
}

// ---- time -------------------------------------------------------------------------------

/// `yyyy-MM-dd HH:mm:ss` in `tz` (the grid's other query answers use this form, 000:L2513;
/// the seed gives no format for these fields).
pub fn format_time(ms: u64, tz: &TimeZone) -> String {
    match Timestamp::from_millisecond(ms as i64) {
        Ok(ts) => ts
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => String::new(),
    }
}

// ---- 获取所有坐席列表 (agent list, 000:L798-L862) -------------------------------------------

/// `state` (000:L818).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListScope {
    /// 0: agents signed in now; unpaged.
    SignedInNow,
    /// 1: agents signed in at some point today; unpaged ("不分页查当日签入坐席").
    SignedInTodayAll,
    /// 2: every agent, signed in or out; paged.
    AllPaged,
    /// 3: agents signed in at some point today; paged.
    SignedInTodayPaged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentListRequest {
    /// Empty: every agent (see [`AgentListRequest::parse`]).
    pub agent_ids: Vec<String>,
    pub scope: ListScope,
    /// `agentState` filter, 0-4.
    pub agent_state: Option<u8>,
    pub page: Page,
}

impl AgentListRequest {
    /// `entId` must equal this node's enterprise id (`grid_api.ent_id`). `agentIds` is
    /// required by the seed (000:L817) and must be present; an empty value means every agent,
    /// since `state` 1 and 2 ask for "all agents". `state` defaults to 2 (every agent, paged).
    /// `pageNo`/`pageSize` apply to `state` 2 and 3 only (0 and 1 are unpaged by definition).
    pub fn parse(p: &Params, ent_id: &str, max_page_size: u64) -> Result<Self, QueryError> {
        let ent = p.required_str("entId")?;
        if ent_id.is_empty() {
            return Err(QueryError::bad(format!(
                "entId {:?} is not served here: this node has no grid_api.ent_id configured",
                truncate(&ent, 64)
            )));
        }
        if ent != ent_id {
            return Err(QueryError::bad(format!(
                "entId {:?} is not this enterprise (expected the id this call platform provided)",
                truncate(&ent, 64)
            )));
        }
        if !p.has("agentIds") {
            return Err(QueryError::bad(
                "missing parameter agentIds (send '' for every agent)",
            ));
        }
        let agent_ids = parse_agent_ids(&p.str("agentIds")?.unwrap_or_default())?;
        let scope = match p.str("state")?.as_deref() {
            Some("0") => ListScope::SignedInNow,
            Some("1") => ListScope::SignedInTodayAll,
            None | Some("2") => ListScope::AllPaged,
            Some("3") => ListScope::SignedInTodayPaged,
            Some(other) => {
                return Err(QueryError::bad(format!(
                    "state must be 0, 1, 2 or 3, got {:?}",
                    truncate(other, 20)
                )))
            }
        };
        let agent_state = match p.str("agentState")?.as_deref() {
            None => None,
            Some(s @ ("0" | "1" | "2" | "3" | "4")) => Some(s.as_bytes()[0] - b'0'),
            Some(other) => {
                return Err(QueryError::bad(format!(
                    "agentState must be 0, 1, 2, 3 or 4, got {:?}",
                    truncate(other, 20)
                )))
            }
        };
        let paged = matches!(scope, ListScope::AllPaged | ListScope::SignedInTodayPaged);
        let page = if paged {
            page_by_start_item(p, max_page_size)?
        } else {
            // Validated all the same, so a wrong value is reported rather than ignored.
            page_by_start_item(p, max_page_size)?;
            Page::ALL
        };
        Ok(Self {
            agent_ids,
            scope,
            agent_state,
            page,
        })
    }
}

/// What presence knows about an agent's seat, read under its lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatLive {
    /// The grid's `agentState` (`agents::state::grid_agent_state`; ringing counts as 3).
    pub grid_state: u8,
    pub state_since_ms: u64,
    /// When the current sign-in began; None while signed out.
    pub signin_ms: Option<u64>,
    pub counters: CounterSnapshot,
}

/// One agent with its seat (None: the agent has no extension, or the extension no seat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentView {
    pub agent: Agent,
    pub live: Option<SeatLive>,
}

impl AgentView {
    fn grid_state(&self) -> u8 {
        self.live.as_ref().map_or(0, |l| l.grid_state)
    }

    /// Signed in now, or at some time today.
    fn signed_in_today(&self) -> bool {
        self.live.as_ref().is_some_and(|l| {
            l.grid_state != 0
                || l.counters.today_sign_in_count > 0
                || l.counters.today_sign_in_sec > 0
        })
    }
}

/// The agent list's `data`. `views` are the directory's agents (any order); `groups` names
/// skill groups. The summary counts describe every agent `agentIds` selects (all of them if
/// empty), before the `state`/`agentState` filters and paging, so that they add up:
/// `agentCount = agentBusy + agentIdle + agentTalk + agentAcw + agentSignout`, where 忙碌
/// (busy) is `agentState` 1 (not ready, resting included).
pub fn agent_list_response(
    req: &AgentListRequest,
    views: &[AgentView],
    groups: &[SkillGroup],
    now_ms: u64,
    tz: &TimeZone,
) -> Value {
    let by_id: BTreeMap<&str, &AgentView> = views
        .iter()
        .map(|v| (v.agent.agent_id.as_str(), v))
        .collect();
    let selected: Vec<&AgentView> = if req.agent_ids.is_empty() {
        by_id.values().copied().collect()
    } else {
        req.agent_ids
            .iter()
            .filter_map(|id| by_id.get(id.as_str()).copied())
            .collect()
    };
    let unknown: Vec<&str> = req
        .agent_ids
        .iter()
        .map(String::as_str)
        .filter(|id| !by_id.contains_key(id))
        .collect();
    let mut counts = [0u64; 5];
    for v in &selected {
        counts[usize::from(v.grid_state().min(4))] += 1;
    }
    let filtered: Vec<&AgentView> = selected
        .into_iter()
        .filter(|v| match req.scope {
            ListScope::SignedInNow => v.grid_state() != 0,
            ListScope::AllPaged => true,
            ListScope::SignedInTodayAll | ListScope::SignedInTodayPaged => v.signed_in_today(),
        })
        .filter(|v| req.agent_state.is_none_or(|s| v.grid_state() == s))
        .collect();
    let names: BTreeMap<&str, &str> = groups
        .iter()
        .map(|g| (g.id.as_str(), g.name.as_str()))
        .collect();
    let context: Vec<Value> = req
        .page
        .apply(filtered)
        .into_iter()
        .map(|v| agent_json(v, &names, tz))
        .collect();
    let mut env = envelope(CodeStyle::Str, 200, OK_MSG);
    if !unknown.is_empty() {
        env.insert(
            "msg".into(),
            Value::String(format!(
                "success; unknown agentIds ignored: {}",
                unknown.join(",")
            )),
        );
    }
    env.insert(
        "data".into(),
        json!({
            "ctiTime": format_time(now_ms, tz),
            "agentCount": counts.iter().sum::<u64>().to_string(),
            "agentBusy": counts[1].to_string(),
            "agentIdle": counts[2].to_string(),
            "agentTalk": counts[3].to_string(),
            "agentAcw": counts[4].to_string(),
            "agentSignout": counts[0].to_string(),
            "contextArray": context,
        }),
    );
    Value::Object(env)
}

/// One `contextArray` entry: the 26 fields of 000:L836-L862, in the seed's order, all Strings.
fn agent_json(v: &AgentView, group_names: &BTreeMap<&str, &str>, tz: &TimeZone) -> Value {
    let a = &v.agent;
    let c = v.live.as_ref().map(|l| l.counters).unwrap_or_default();
    let (state_time, signin_out_time) = match &v.live {
        None => (String::new(), String::new()),
        Some(l) => (
            format_time(l.state_since_ms, tz),
            match l.signin_ms {
                Some(ms) => format_time(ms, tz),
                // Signed out: when it happened, if it happened today.
                None if c.today_sign_out_count > 0 => format_time(l.state_since_ms, tz),
                None => String::new(),
            },
        ),
    };
    let group_names: Vec<&str> = a
        .skill_groups
        .iter()
        .map(|g| group_names.get(g.as_str()).copied().unwrap_or(g.as_str()))
        .collect();
    let s = |n: u64| n.to_string();
    json!({
        "agentId": a.agent_id,
        "agentName": a.name,
        "agentState": v.grid_state().to_string(),
        "agentStateTime": state_time,
        "agentSignInOutTime": signin_out_time,
        "department": a.department,
        "orgName": a.org_name,
        "orgNo": a.org_no,
        "sumAnswerCount": s(c.sum_answer_count.into()),
        "sumAnswerSec": s(c.sum_answer_sec),
        "curSignInSec": s(c.cur_sign_in_sec),
        "todayCurStateSec": s(c.today_cur_state_sec),
        "todaySignInSec": s(c.today_sign_in_sec),
        "todaySignInCount": s(c.today_sign_in_count.into()),
        "todaySignOutCount": s(c.today_sign_out_count.into()),
        "todaySignOutSec": s(c.today_sign_out_sec),
        "todayBusyCount": s(c.today_busy_count.into()),
        "todayDelayCount": s(c.today_delay_count.into()),
        "todayDelaySec": s(c.today_delay_sec),
        "callOutCount": s(c.call_out_count.into()),
        "callOutSec": s(c.call_out_sec),
        // Named a count, labelled 当日空闲时长 (idle duration, 000:L858): the label wins, as
        // the counters module decided (agents::counters, "todayIdleCount").
        "todayIdleCount": s(c.today_idle_sec),
        "answerCount20": s(c.answer_count20.into()),
        "serviceIdList": a.skill_groups.join(","),
        // Sic (000:L862).
        "serviceameList": group_names.join(","),
    })
}

// ---- 查询分机列表 (extension list, 000:L868-L901) ------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionListRequest {
    pub number: Option<String>,
    /// "01" or "02".
    pub telephone_type: Option<String>,
    pub page: Page,
}

impl ExtensionListRequest {
    /// `pageNo` (a page number from 1) and `pageSize` are required (000:L888-L889).
    pub fn parse(p: &Params, max_page_size: u64) -> Result<Self, QueryError> {
        let number = p.str("telephoneNumber")?;
        if let Some(n) = &number {
            check_extension("telephoneNumber", n)?;
        }
        let telephone_type = p.str("telephoneType")?;
        if let Some(t) = &telephone_type {
            if t != "01" && t != "02" {
                return Err(QueryError::bad(format!(
                    "telephoneType must be 01 (内置, built-in) or 02 (外置, external), got {:?}",
                    truncate(t, 20)
                )));
            }
        }
        Ok(Self {
            number,
            telephone_type,
            page: page_by_number(p, true, max_page_size)?,
        })
    }
}

/// One extension with its current user, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionView {
    pub number: String,
    pub telephone_type: String,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
}

/// `{code:"200", msg, list}` (000:L895-L901; no total: the seed has none). `agentId` and
/// `agentName` are optional in the seed; they are always present, empty when nobody uses the
/// extension, so the shape never varies.
pub fn extension_list_response(req: &ExtensionListRequest, mut rows: Vec<ExtensionView>) -> Value {
    rows.retain(|r| {
        req.number.as_ref().is_none_or(|n| &r.number == n)
            && req
                .telephone_type
                .as_ref()
                .is_none_or(|t| &r.telephone_type == t)
    });
    rows.sort_by(|a, b| a.number.cmp(&b.number));
    let list: Vec<Value> = req
        .page
        .apply(rows)
        .into_iter()
        .map(|r| {
            json!({
                "telephoneNumber": r.number,
                "telephoneType": r.telephone_type,
                "agentId": r.agent_id.unwrap_or_default(),
                "agentName": r.agent_name.unwrap_or_default(),
            })
        })
        .collect();
    let mut env = envelope(CodeStyle::Str, 200, OK_MSG);
    env.insert("list".into(), Value::Array(list));
    Value::Object(env)
}

// ---- 查询通话排队列表 (queue list, 000:L941-L978) ------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueListRequest {
    pub service_id: Option<String>,
    pub page: Page,
}

impl QueueListRequest {
    /// Everything optional (000:L961-L963): `pageNo` defaults to 1, `pageSize` to
    /// [`DEFAULT_PAGE_SIZE`].
    pub fn parse(p: &Params, max_page_size: u64) -> Result<Self, QueryError> {
        let service_id = p.str("serviceId")?;
        if let Some(s) = &service_id {
            check_id("serviceId", s)?;
        }
        Ok(Self {
            service_id,
            page: page_by_number(p, false, max_page_size)?,
        })
    }
}

/// Which skill group a mod_callcenter queue serves, by the rule the CDR builder uses for
/// `SERVICEID` (`cdr.mapping.queues`, one table for both): the mapped key for the full queue
/// name, else the name before `@`; then the skill group with that id, else with that name.
pub fn queue_skill_group<'a>(
    queue: &str,
    mapping: &BTreeMap<String, String>,
    groups: &'a [SkillGroup],
) -> Option<&'a SkillGroup> {
    let key = mapping
        .get(queue)
        .map(String::as_str)
        .unwrap_or_else(|| queue.split('@').next().unwrap_or(queue));
    groups
        .iter()
        .find(|g| g.id == key)
        .or_else(|| groups.iter().find(|g| g.name == key))
}

/// `{code:200, msg, count, queueList}`. `count` is every queued call matching the filter
/// (the seed's 总数), `queueList` the requested page of them, longest waiting first.
/// `serviceName` is the skill group's name (the queue's own name when it maps to none);
/// `orgNo`/`orgName` come from the access number the caller dialled (`calleeNum`), empty when
/// it is not a known access number.
pub fn queue_list_response(
    req: &QueueListRequest,
    calls: &[QueuedCall],
    mapping: &BTreeMap<String, String>,
    groups: &[SkillGroup],
    access: &[AccessNumber],
    now_ms: u64,
) -> Value {
    let rows: Vec<(&QueuedCall, Option<&SkillGroup>)> = calls
        .iter()
        .map(|c| (c, queue_skill_group(&c.queue, mapping, groups)))
        .filter(|(c, g)| match &req.service_id {
            None => true,
            Some(want) => match g {
                Some(g) => &g.id == want,
                None => &c.queue == want,
            },
        })
        .collect();
    let count = rows.len();
    let list: Vec<Value> = req
        .page
        .apply(rows)
        .into_iter()
        .map(|(c, g)| {
            let short = c.queue.split_once('@').map_or(c.queue.as_str(), |(q, _)| q);
            let org = access.iter().find(|a| a.access_num == c.callee);
            json!({
                "callerNum": c.caller,
                "calleeNum": c.callee,
                "serviceName": g.map_or(short, |g| g.name.as_str()),
                "queueDur": (now_ms.saturating_sub(c.joined_ms) / 1000).to_string(),
                "orgNo": org.map_or("", |a| a.org_no.as_str()),
                "orgName": org.map_or("", |a| a.org_name.as_str()),
            })
        })
        .collect();
    let mut env = envelope(CodeStyle::Int, 200, OK_MSG);
    env.insert("count".into(), Value::from(count));
    env.insert("queueList".into(), Value::Array(list));
    Value::Object(env)
}

// ---- 查询技能组列表 (skill groups, 000:L984-L1014) -----------------------------------------

/// `{code:200, msg, list:[{serviceId, serviceName}]}`; `serviceId` filters exactly (an unknown
/// id gives an empty list, not an error: it is a filter).
pub fn skill_group_response(p: &Params, groups: &[SkillGroup]) -> Result<Value, QueryError> {
    let want = p.str("serviceId")?;
    if let Some(s) = &want {
        check_id("serviceId", s)?;
    }
    let list: Vec<Value> = groups
        .iter()
        .filter(|g| want.as_ref().is_none_or(|w| &g.id == w))
        .map(|g| json!({ "serviceId": g.id, "serviceName": g.name }))
        .collect();
    let mut env = envelope(CodeStyle::Int, 200, OK_MSG);
    env.insert("list".into(), Value::Array(list));
    Ok(Value::Object(env))
}

// ---- 坐席信息变更推送 (agent change, grid → us, 000:L907-L937) ----------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentChange {
    /// 01.
    Add {
        agent_id: String,
        name: Option<String>,
        extension: Option<String>,
    },
    /// 02.
    Delete { agent_id: String },
    /// 03: only what is given changes; the id never does (000:L928).
    Modify {
        agent_id: String,
        name: Option<String>,
        extension: Option<String>,
    },
}

impl AgentChange {
    pub fn parse(p: &Params) -> Result<Self, QueryError> {
        let kind = p.required_str("changeType")?;
        let agent_id = p.required_str("agentId")?;
        check_id("agentId", &agent_id)?;
        let name = p.str("agentName")?;
        if let Some(n) = &name {
            if n.chars().count() > MAX_NAME_LEN || n.chars().any(char::is_control) {
                return Err(QueryError::bad(format!(
                    "agentName must be at most {MAX_NAME_LEN} characters without control characters"
                )));
            }
        }
        let extension = p.str("telephoneNumber")?;
        if let Some(e) = &extension {
            check_extension("telephoneNumber", e)?;
        }
        match kind.as_str() {
            "01" => Ok(Self::Add {
                agent_id,
                name,
                extension,
            }),
            "02" => Ok(Self::Delete { agent_id }),
            "03" if name.is_none() && extension.is_none() => Err(QueryError::bad(
                "changeType 03 (modify) needs agentName or telephoneNumber: nothing to change",
            )),
            "03" => Ok(Self::Modify {
                agent_id,
                name,
                extension,
            }),
            other => Err(QueryError::bad(format!(
                "changeType must be 01 (add), 02 (delete) or 03 (modify), got {:?}",
                truncate(other, 20)
            ))),
        }
    }

    pub fn agent_id(&self) -> &str {
        match self {
            Self::Add { agent_id, .. }
            | Self::Delete { agent_id }
            | Self::Modify { agent_id, .. } => agent_id,
        }
    }
}

/// What a change does to the directory once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeEffect {
    Upsert(Agent),
    Delete(String),
}

/// Defaults for agents the grid adds: "default root department and minimal role" (000:L927).
/// gridedge has no roles for agents, so only the department (and the org) are set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewAgentDefaults {
    pub department: String,
    pub org_no: String,
    pub org_name: String,
}

/// Validates a change against the current directory: a duplicate add, or a delete or modify
/// of an unknown agent, is refused; an extension must exist and not be another agent's.
pub fn plan_change(
    change: &AgentChange,
    agents: &BTreeMap<String, Agent>,
    extension_exists: impl Fn(&str) -> bool,
    defaults: &NewAgentDefaults,
) -> Result<ChangeEffect, QueryError> {
    let check_ext = |id: &str, ext: &str| -> Result<(), QueryError> {
        if !extension_exists(ext) {
            return Err(QueryError::not_found(format!(
                "telephoneNumber {ext} is not an extension of this node"
            )));
        }
        if let Some(other) = agents
            .values()
            .find(|a| a.agent_id != id && a.extension.as_deref() == Some(ext))
        {
            return Err(QueryError::conflict(format!(
                "telephoneNumber {ext} is already used by agent {}",
                other.agent_id
            )));
        }
        Ok(())
    };
    match change {
        AgentChange::Add {
            agent_id,
            name,
            extension,
        } => {
            if agents.contains_key(agent_id) {
                return Err(QueryError::conflict(format!(
                    "agent {agent_id} already exists; use changeType 03 to modify it"
                )));
            }
            if let Some(e) = extension {
                check_ext(agent_id, e)?;
            }
            Ok(ChangeEffect::Upsert(Agent {
                agent_id: agent_id.clone(),
                name: name.clone().unwrap_or_default(),
                department: defaults.department.clone(),
                org_no: defaults.org_no.clone(),
                org_name: defaults.org_name.clone(),
                extension: extension.clone(),
                skill_groups: Vec::new(),
            }))
        }
        AgentChange::Delete { agent_id } => {
            if !agents.contains_key(agent_id) {
                return Err(QueryError::not_found(format!("unknown agent {agent_id}")));
            }
            Ok(ChangeEffect::Delete(agent_id.clone()))
        }
        AgentChange::Modify {
            agent_id,
            name,
            extension,
        } => {
            let mut a = agents
                .get(agent_id)
                .cloned()
                .ok_or_else(|| QueryError::not_found(format!("unknown agent {agent_id}")))?;
            if let Some(e) = extension {
                check_ext(agent_id, e)?;
                a.extension = Some(e.clone());
            }
            if let Some(n) = name {
                a.name = n.clone();
            }
            Ok(ChangeEffect::Upsert(a))
        }
    }
}

// ---- 推送外呼保底号码 (fallback caller ID, 000:L1020-L1049) -------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackNumber {
    pub org_no: String,
    /// None: the org's number for every skill group.
    pub service_id: Option<String>,
    pub outbound_number: String,
}

impl FallbackNumber {
    pub fn parse(p: &Params) -> Result<Self, QueryError> {
        let outbound_number = p.required_str("outboundNumber")?;
        check_phone("outboundNumber", &outbound_number)?;
        let org_no = p.required_str("orgNo")?;
        check_id("orgNo", &org_no)?;
        let service_id = p.str("serviceId")?;
        if let Some(s) = &service_id {
            check_id("serviceId", s)?;
        }
        Ok(Self {
            org_no,
            service_id,
            outbound_number,
        })
    }
}

/// The 保底库 in memory: (orgNo, serviceId or "") → number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FallbackTable(BTreeMap<(String, String), String>);

impl FallbackTable {
    pub fn upsert(&mut self, f: &FallbackNumber) {
        self.0.insert(
            (f.org_no.clone(), f.service_id.clone().unwrap_or_default()),
            f.outbound_number.clone(),
        );
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The caller ID for an outbound call of `org_no` (and skill group `service_id`): the
    /// number pushed for that org and group, else the one pushed for the org alone
    /// (000:L1236-L1239, L1823-L1824: match orgNo + group, then fall back to the city org).
    pub fn lookup(&self, org_no: &str, service_id: Option<&str>) -> Option<&str> {
        if let Some(s) = service_id.filter(|s| !s.is_empty()) {
            if let Some(n) = self.0.get(&(org_no.to_owned(), s.to_owned())) {
                return Some(n);
            }
        }
        self.0
            .get(&(org_no.to_owned(), String::new()))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn form(s: &str) -> Params {
        Params::parse(None, BodyKind::Form, s.as_bytes()).unwrap()
    }

    fn jsonp(v: Value) -> Params {
        Params::parse(None, BodyKind::Json, v.to_string().as_bytes()).unwrap()
    }

    fn ids(n: usize, quoted: bool) -> String {
        (0..n)
            .map(|i| {
                if quoted {
                    format!("'a{i}'")
                } else {
                    format!("a{i}")
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn agent_ids_quoted_unquoted_blanks_and_limits() {
        assert_eq!(parse_agent_ids("'a1','a2'").unwrap(), ["a1", "a2"]);
        assert_eq!(parse_agent_ids(" 'a1' , a2 ,'a1'").unwrap(), ["a1", "a2"]);
        assert_eq!(parse_agent_ids("").unwrap(), Vec::<String>::new());
        assert_eq!(parse_agent_ids("  ").unwrap(), Vec::<String>::new());
        assert_eq!(parse_agent_ids(&ids(100, true)).unwrap().len(), 100);
        assert_eq!(parse_agent_ids(&ids(100, false)).unwrap().len(), 100);
        let e = parse_agent_ids(&ids(101, true)).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.msg.contains("more than 100"), "{}", e.msg);
        // 101 items of which two are the same id: 100 distinct, accepted.
        let dup = format!("{},'a0'", ids(100, true));
        assert_eq!(parse_agent_ids(&dup).unwrap().len(), 100);
        for (bad, needle) in [
            ("'a1", "unbalanced"),
            ("a1'", "stray quote"),
            ("'a'b'", "stray quote"),
            ("''", "empty"),
            ("a1,,a2", "item 2 is empty"),
            ("a1,", "item 2 is empty"),
            ("'a 1'", "agentIds item 1"),
            ("'a1';DROP TABLE agents", "agentIds item 1"),
            ("\"a1\"", "agentIds item 1"),
        ] {
            let e = parse_agent_ids(bad).unwrap_err();
            assert!(e.msg.contains(needle), "{bad}: {}", e.msg);
        }
        let long = "x".repeat(MAX_AGENT_IDS_RAW + 1);
        assert!(parse_agent_ids(&long).unwrap_err().msg.contains("too long"));
    }

    proptest! {
        #[test]
        fn agent_ids_never_panic_and_stay_bounded(s in ".{0,400}") {
            if let Ok(v) = parse_agent_ids(&s) {
                prop_assert!(v.len() <= MAX_AGENT_IDS);
                for id in v {
                    prop_assert!(!id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(id_char));
                }
            }
        }

        #[test]
        fn agent_ids_round_trip(list in proptest::collection::vec("[A-Za-z0-9_.@-]{1,20}", 0..100)) {
            let quoted = list.iter().map(|i| format!("'{i}'")).collect::<Vec<_>>().join(",");
            let mut want: Vec<String> = Vec::new();
            for i in &list { if !want.contains(i) { want.push(i.clone()); } }
            prop_assert_eq!(parse_agent_ids(&quoted).unwrap(), want);
        }

        #[test]
        fn params_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Params::parse(None, BodyKind::Json, &body);
            let _ = Params::parse(None, BodyKind::Form, &body);
        }
    }

    #[test]
    fn params_types_duplicates_and_content_types() {
        let p = jsonp(json!({"state": 0, "pageNo": "3", "x": null, "b": true, "f": 1.5}));
        assert_eq!(p.str("state").unwrap().as_deref(), Some("0"));
        assert_eq!(p.int("pageNo").unwrap(), Some(3));
        assert_eq!(p.str("x").unwrap(), None);
        assert!(p
            .str("b")
            .unwrap_err()
            .msg
            .contains("parameter b must be a string, got a boolean"));
        assert!(p.int("f").unwrap_err().msg.contains("must be an integer"));
        assert!(form("pageNo=x")
            .int("pageNo")
            .unwrap_err()
            .msg
            .contains("\"x\""));
        let e = Params::parse(None, BodyKind::Form, b"a=1&a=2").unwrap_err();
        assert!(e.msg.contains("given more than once"));
        let e = Params::parse(Some("a=1"), BodyKind::Json, b"{\"a\":2}").unwrap_err();
        assert!(e.msg.contains("given more than once"));
        assert!(Params::parse(None, BodyKind::Json, b"[1]")
            .unwrap_err()
            .msg
            .contains("JSON object"));
        assert!(Params::parse(None, BodyKind::Json, b"{")
            .unwrap_err()
            .msg
            .contains("not valid JSON"));
        assert!(Params::parse(None, BodyKind::Json, b"  ")
            .unwrap()
            .0
            .is_empty());
        assert_eq!(BodyKind::detect(None, b" {}").unwrap(), BodyKind::Json);
        assert_eq!(BodyKind::detect(None, b"a=1").unwrap(), BodyKind::Form);
        assert_eq!(
            BodyKind::detect(Some("application/json;charset=UTF-8"), b"").unwrap(),
            BodyKind::Json
        );
        assert_eq!(
            BodyKind::detect(Some("multipart/form-data"), b"")
                .unwrap_err()
                .status,
            415
        );
    }

    #[test]
    fn paging_edges() {
        let p = |s: &str| AgentListRequest::parse(&form(s), "E1", 500);
        let r = p("entId=E1&agentIds=").unwrap();
        assert_eq!(r.scope, ListScope::AllPaged);
        assert_eq!(
            r.page,
            Page {
                offset: 0,
                limit: 100
            }
        );
        let r = p("entId=E1&agentIds=&state=3&pageNo=11&pageSize=10").unwrap();
        assert_eq!(
            r.page,
            Page {
                offset: 10,
                limit: 10
            }
        );
        assert_eq!(
            p("entId=E1&agentIds=&state=0&pageNo=5").unwrap().page,
            Page::ALL
        );
        assert!(p("entId=E1&agentIds=&pageNo=0")
            .unwrap_err()
            .msg
            .contains("1-based"));
        assert!(p("entId=E1&agentIds=&state=1&pageSize=0")
            .unwrap_err()
            .msg
            .contains("between 1 and 500"));
        assert!(p("entId=E1&agentIds=&pageSize=501").is_err());
        assert!(p("entId=E1&agentIds=&pageSize=500").is_ok());
        assert_eq!(
            Page {
                offset: 3,
                limit: 2
            }
            .apply(vec![1, 2, 3, 4, 5, 6]),
            [4, 5]
        );
        assert_eq!(
            Page {
                offset: 30,
                limit: 2
            }
            .apply(vec![1, 2]),
            Vec::<i32>::new()
        );
        assert_eq!(
            Page {
                offset: u64::MAX,
                limit: u64::MAX
            }
            .apply(vec![1]),
            Vec::<i32>::new()
        );
        // Extension list: page numbers, both required.
        let e = |s: &str| ExtensionListRequest::parse(&form(s), 500);
        assert!(e("pageSize=10")
            .unwrap_err()
            .msg
            .contains("missing parameter pageNo"));
        assert!(e("pageNo=1")
            .unwrap_err()
            .msg
            .contains("missing parameter pageSize"));
        assert_eq!(
            e("pageNo=3&pageSize=10").unwrap().page,
            Page {
                offset: 20,
                limit: 10
            }
        );
        assert!(e("pageNo=0&pageSize=10")
            .unwrap_err()
            .msg
            .contains("starting at 1"));
        assert_eq!(
            e(&format!("pageNo={}&pageSize=500", i64::MAX))
                .unwrap()
                .page
                .limit,
            500
        );
        assert!(e("pageNo=1&pageSize=1&telephoneType=03")
            .unwrap_err()
            .msg
            .contains("telephoneType"));
        assert!(e("pageNo=1&pageSize=1&telephoneNumber=12a")
            .unwrap_err()
            .msg
            .contains("telephoneNumber"));
        let q = QueueListRequest::parse(&form(""), 500).unwrap();
        assert_eq!(
            q.page,
            Page {
                offset: 0,
                limit: 100
            }
        );
    }

    #[test]
    fn agent_list_parameters() {
        let p = |s: &str| AgentListRequest::parse(&form(s), "E1", 500);
        assert!(p("agentIds=")
            .unwrap_err()
            .msg
            .contains("missing parameter entId"));
        assert!(p("entId=E2&agentIds=")
            .unwrap_err()
            .msg
            .contains("entId \"E2\""));
        assert!(
            AgentListRequest::parse(&form("entId=E1&agentIds="), "", 500)
                .unwrap_err()
                .msg
                .contains("grid_api.ent_id")
        );
        assert!(p("entId=E1")
            .unwrap_err()
            .msg
            .contains("missing parameter agentIds"));
        assert!(p("entId=E1&agentIds=&state=4")
            .unwrap_err()
            .msg
            .contains("state must be"));
        assert!(p("entId=E1&agentIds=&agentState=5")
            .unwrap_err()
            .msg
            .contains("agentState must be"));
        let r = p("entId=E1&agentIds='a','b'&state=1&agentState=3").unwrap();
        assert_eq!(r.agent_ids, ["a", "b"]);
        assert_eq!(r.scope, ListScope::SignedInTodayAll);
        assert_eq!(r.agent_state, Some(3));
    }

    fn agent(id: &str, ext: Option<&str>, groups: &[&str]) -> Agent {
        Agent {
            agent_id: id.into(),
            name: format!("name-{id}"),
            department: "D".into(),
            org_no: "O1".into(),
            org_name: "Org".into(),
            extension: ext.map(Into::into),
            skill_groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn live(state: u8, sign_ins: u32) -> Option<SeatLive> {
        Some(SeatLive {
            grid_state: state,
            state_since_ms: 1_700_000_000_000,
            signin_ms: (state != 0).then_some(1_700_000_000_000),
            counters: CounterSnapshot {
                today_sign_in_count: sign_ins,
                today_idle_sec: 42,
                today_idle_count: 7,
                ..Default::default()
            },
        })
    }

    #[test]
    fn agent_list_state_filters_counts_and_fields() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let views = vec![
            AgentView {
                agent: agent("a0", None, &[]),
                live: None,
            },
            AgentView {
                agent: agent("a1", Some("1001"), &["SG1", "SG9"]),
                live: live(2, 1),
            },
            AgentView {
                agent: agent("a2", Some("1002"), &[]),
                live: live(3, 1),
            },
            AgentView {
                agent: agent("a3", Some("1003"), &[]),
                live: live(0, 1),
            },
            AgentView {
                agent: agent("a4", Some("1004"), &[]),
                live: live(1, 0),
            },
            AgentView {
                agent: agent("a5", Some("1005"), &[]),
                live: live(4, 2),
            },
        ];
        let groups = [SkillGroup {
            id: "SG1".into(),
            name: "Repairs".into(),
        }];
        let run = |q: &str| {
            let r = AgentListRequest::parse(&form(q), "E1", 500).unwrap();
            agent_list_response(&r, &views, &groups, 1_700_000_000_000, &tz)
        };
        let ids = |v: &Value| -> Vec<String> {
            v["data"]["contextArray"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["agentId"].as_str().unwrap().to_owned())
                .collect()
        };
        let v = run("entId=E1&agentIds=");
        assert_eq!(v["code"], "200");
        assert_eq!(v["msg"], "success");
        let d = &v["data"];
        // 2023-11-15 06:13:20 in Shanghai (UTC+8) for 1_700_000_000 s.
        assert_eq!(d["ctiTime"], "2023-11-15 06:13:20");
        assert_eq!(
            [
                &d["agentCount"],
                &d["agentBusy"],
                &d["agentIdle"],
                &d["agentTalk"],
                &d["agentAcw"],
                &d["agentSignout"]
            ],
            ["6", "1", "1", "1", "1", "2"]
        );
        assert_eq!(ids(&v), ["a0", "a1", "a2", "a3", "a4", "a5"]);
        assert_eq!(
            ids(&run("entId=E1&agentIds=&state=0")),
            ["a1", "a2", "a4", "a5"]
        );
        // Signed in today: now, or earlier today (a3 signed out since).
        assert_eq!(
            ids(&run("entId=E1&agentIds=&state=1")),
            ["a1", "a2", "a3", "a4", "a5"]
        );
        assert_eq!(
            ids(&run("entId=E1&agentIds=&state=3&pageNo=2&pageSize=2")),
            ["a2", "a3"]
        );
        assert_eq!(
            ids(&run("entId=E1&agentIds=&state=2&pageNo=6&pageSize=2")),
            ["a5"]
        );
        assert_eq!(ids(&run("entId=E1&agentIds=&agentState=0")), ["a0", "a3"]);
        assert_eq!(ids(&run("entId=E1&agentIds=&agentState=3")), ["a2"]);
        let v = run("entId=E1&agentIds='a2','a1','zz'");
        assert_eq!(ids(&v), ["a2", "a1"]);
        assert_eq!(v["data"]["agentCount"], "2");
        assert!(v["msg"].as_str().unwrap().contains("zz"));
        // Every field of one entry, all Strings.
        let v = run("entId=E1&agentIds='a1'");
        let a = &v["data"]["contextArray"][0];
        let keys: Vec<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "agentId",
                "agentName",
                "agentState",
                "agentStateTime",
                "agentSignInOutTime",
                "department",
                "orgName",
                "orgNo",
                "sumAnswerCount",
                "sumAnswerSec",
                "curSignInSec",
                "todayCurStateSec",
                "todaySignInSec",
                "todaySignInCount",
                "todaySignOutCount",
                "todaySignOutSec",
                "todayBusyCount",
                "todayDelayCount",
                "todayDelaySec",
                "callOutCount",
                "callOutSec",
                "todayIdleCount",
                "answerCount20",
                "serviceIdList",
                "serviceameList"
            ]
        );
        assert!(a.as_object().unwrap().values().all(Value::is_string));
        assert_eq!(a["agentState"], "2");
        assert_eq!(a["agentStateTime"], "2023-11-15 06:13:20");
        assert_eq!(a["todayIdleCount"], "42");
        assert_eq!(a["todaySignInCount"], "1");
        assert_eq!(a["serviceIdList"], "SG1,SG9");
        assert_eq!(a["serviceameList"], "Repairs,SG9");
    }

    #[test]
    fn queue_list_maps_groups_orgs_and_pages() {
        let groups = vec![
            SkillGroup {
                id: "SG1".into(),
                name: "Repairs".into(),
            },
            SkillGroup {
                id: "support".into(),
                name: "Support".into(),
            },
        ];
        let mapping: BTreeMap<String, String> =
            [("billing@default".to_owned(), "SG1".to_owned())].into();
        let access = vec![AccessNumber {
            access_num: "95598".into(),
            org_no: "3340101".into(),
            org_name: "Hangzhou".into(),
            ..Default::default()
        }];
        let call = |s: &str, q: &str, callee: &str, t: u64| QueuedCall {
            member_session: s.into(),
            queue: q.into(),
            caller: "13900000001".into(),
            callee: callee.into(),
            joined_ms: t,
        };
        let calls = vec![
            call("s1", "billing@default", "95598", 10_000),
            call("s2", "support@default", "4000", 20_000),
            call("s3", "other@default", "95598", 30_000),
        ];
        let run = |q: &str| {
            let r = QueueListRequest::parse(&form(q), 500).unwrap();
            queue_list_response(&r, &calls, &mapping, &groups, &access, 75_500)
        };
        let v = run("");
        assert_eq!(v["code"], 200);
        assert_eq!(v["count"], 3);
        assert_eq!(
            v["queueList"][0],
            json!({"callerNum": "13900000001", "calleeNum": "95598", "serviceName": "Repairs",
                   "queueDur": "65", "orgNo": "3340101", "orgName": "Hangzhou"})
        );
        assert_eq!(v["queueList"][1]["serviceName"], "Support");
        assert_eq!(v["queueList"][1]["orgNo"], "");
        assert_eq!(v["queueList"][2]["serviceName"], "other");
        let v = run("serviceId=SG1");
        assert_eq!(v["count"], 1);
        let v = run("pageNo=2&pageSize=2");
        assert_eq!(v["count"], 3);
        assert_eq!(v["queueList"].as_array().unwrap().len(), 1);
        assert!(QueueListRequest::parse(&form("serviceId=a b"), 500).is_err());
    }

    #[test]
    fn agent_change_plans() {
        let mut dir = BTreeMap::new();
        dir.insert("a1".to_owned(), agent("a1", Some("1001"), &[]));
        let exists = |e: &str| e.starts_with("100");
        let d = NewAgentDefaults {
            department: "root".into(),
            ..Default::default()
        };
        let plan =
            |q: &str| AgentChange::parse(&form(q)).and_then(|c| plan_change(&c, &dir, exists, &d));
        match plan("changeType=01&agentId=a2&agentName=Li&telephoneNumber=1002").unwrap() {
            ChangeEffect::Upsert(a) => {
                assert_eq!((a.name.as_str(), a.department.as_str()), ("Li", "root"));
                assert_eq!(a.extension.as_deref(), Some("1002"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(plan("changeType=01&agentId=a1").unwrap_err().status, 409);
        assert_eq!(
            plan("changeType=01&agentId=a2&telephoneNumber=1001")
                .unwrap_err()
                .status,
            409
        );
        assert_eq!(
            plan("changeType=01&agentId=a2&telephoneNumber=2001")
                .unwrap_err()
                .status,
            404
        );
        assert_eq!(plan("changeType=02&agentId=a9").unwrap_err().status, 404);
        assert_eq!(
            plan("changeType=02&agentId=a1").unwrap(),
            ChangeEffect::Delete("a1".into())
        );
        assert_eq!(
            plan("changeType=03&agentId=a9&agentName=x")
                .unwrap_err()
                .status,
            404
        );
        assert!(plan("changeType=03&agentId=a1")
            .unwrap_err()
            .msg
            .contains("nothing to change"));
        match plan("changeType=03&agentId=a1&agentName=New").unwrap() {
            ChangeEffect::Upsert(a) => {
                assert_eq!(a.name, "New");
                assert_eq!(a.extension.as_deref(), Some("1001"));
            }
            other => panic!("{other:?}"),
        }
        assert!(plan("changeType=04&agentId=a1")
            .unwrap_err()
            .msg
            .contains("changeType must be"));
        assert!(plan("changeType=01")
            .unwrap_err()
            .msg
            .contains("missing parameter agentId"));
        assert!(plan("changeType=01&agentId=a%0A1")
            .unwrap_err()
            .msg
            .contains("agentId must be"));
        let long = "n".repeat(65);
        assert!(plan(&format!("changeType=01&agentId=a3&agentName={long}")).is_err());
    }

    #[test]
    fn fallback_numbers_parse_and_lookup() {
        let f = |q: &str| FallbackNumber::parse(&form(q));
        assert!(f("orgNo=O1")
            .unwrap_err()
            .msg
            .contains("missing parameter outboundNumber"));
        assert!(f("outboundNumber=95598")
            .unwrap_err()
            .msg
            .contains("missing parameter orgNo"));
        for bad in ["12", "abc123", "+", "1234567890123456789012", "0571-1234"] {
            let e = f(&format!(
                "outboundNumber={}&orgNo=O1",
                bad.replace('+', "%2B")
            ))
            .unwrap_err();
            assert!(
                e.msg.contains("outboundNumber must be a phone number"),
                "{bad}"
            );
        }
        let mut t = FallbackTable::default();
        t.upsert(&f("outboundNumber=057188880000&orgNo=O1").unwrap());
        t.upsert(&f("outboundNumber=%2B8657100000&orgNo=O1&serviceId=SG1").unwrap());
        assert_eq!(t.lookup("O1", Some("SG1")), Some("+8657100000"));
        assert_eq!(t.lookup("O1", Some("SG2")), Some("057188880000"));
        assert_eq!(t.lookup("O1", None), Some("057188880000"));
        assert_eq!(t.lookup("O2", Some("SG1")), None);
        t.upsert(&f("outboundNumber=057100000001&orgNo=O1").unwrap());
        assert_eq!(t.lookup("O1", None), Some("057100000001"));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn record_ids_and_start_times() {
        assert!(parse_record_id("8099369908841762569_1").is_ok());
        for bad in [
            "",
            "../etc/passwd",
            ".hidden",
            "a/b",
            "a b",
            &"x".repeat(129),
        ] {
            assert!(parse_record_id(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_start_time(Some("202403".into())).unwrap().as_deref(),
            Some("202403")
        );
        assert!(parse_start_time(Some("2024-03-01 10:00:00".into())).is_ok());
        assert!(parse_start_time(Some("x".into())).is_err());
    }
}
