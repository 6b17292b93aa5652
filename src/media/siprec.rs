//! SIPREC (RFC 7866) INVITE bodies: the `multipart/mixed` split (RFC 2046 §5.1) and the
//! `application/rs-metadata+xml` document (RFC 7865), plus the mapping of recorded streams to
//! the agent and customer channels.
//!
//! Everything here reads network input, so every size is bounded before work is done, XML
//! DTDs and entity references (other than the five predefined ones) are refused, and errors
//! say what was wrong.

use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiprecError {
    #[error("Content-Type {0:?} is not multipart/* with a boundary")]
    NotMultipart(String),
    #[error("multipart boundary is missing, empty, longer than 70 bytes or has bad characters")]
    BadBoundary,
    #[error("multipart body is {len} bytes, more than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("multipart body has no opening boundary line")]
    NoOpeningBoundary,
    #[error("multipart body ends without the closing boundary")]
    Unterminated,
    #[error("multipart body has more than {max} parts")]
    TooManyParts { max: usize },
    #[error("multipart part {part}: {reason}")]
    BadPart { part: usize, reason: String },
    #[error("rs-metadata is {len} bytes, more than the {max} allowed")]
    MetadataTooLarge { len: usize, max: usize },
    #[error("rs-metadata is not UTF-8")]
    NotUtf8,
    #[error("rs-metadata must not contain a DOCTYPE (DTDs and entities are refused)")]
    Doctype,
    #[error("rs-metadata nests deeper than {max} elements")]
    TooDeep { max: usize },
    #[error("rs-metadata has more than {max} elements")]
    TooManyElements { max: usize },
    #[error("rs-metadata root element is not <recording>")]
    NotRecording,
    #[error("rs-metadata: {0}")]
    Xml(String),
}

/// Bounds on the multipart body. Typical SIPREC bodies are a few KiB.
pub const MAX_MULTIPART_BYTES: usize = 256 * 1024;
pub const MAX_PARTS: usize = 8;
pub const MAX_PART_HEADERS: usize = 16;
/// Bounds on the metadata document.
pub const MAX_METADATA_BYTES: usize = 128 * 1024;
pub const MAX_DEPTH: usize = 16;
pub const MAX_ELEMENTS: usize = 4096;

/// One body part: its headers (names lower-cased, values trimmed) and raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub headers: Vec<(String, String)>,
    /// Media type without parameters, lower-cased; `text/plain` when absent (RFC 2046 §5.1).
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Part {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    pub parts: Vec<Part>,
}

impl Parts {
    /// First part of the given media type (e.g. `application/sdp`).
    pub fn first(&self, content_type: &str) -> Option<&Part> {
        self.parts
            .iter()
            .find(|p| p.content_type.eq_ignore_ascii_case(content_type))
    }

    pub fn sdp(&self) -> Option<&[u8]> {
        self.first("application/sdp").map(|p| p.body.as_slice())
    }

    pub fn metadata(&self) -> Option<&[u8]> {
        self.first("application/rs-metadata+xml")
            .map(|p| p.body.as_slice())
    }
}

/// Splits a `multipart/*` body. `content_type` is the SIP Content-Type header value.
/// Preamble and epilogue are ignored; lines may end in CRLF or bare LF.
pub fn split_multipart(content_type: &str, body: &[u8]) -> Result<Parts, SiprecError> {
    let boundary = boundary(content_type)?;
    if body.len() > MAX_MULTIPART_BYTES {
        return Err(SiprecError::TooLarge {
            len: body.len(),
            max: MAX_MULTIPART_BYTES,
        });
    }
    let mut delimiter = Vec::with_capacity(boundary.len() + 2);
    delimiter.extend_from_slice(b"--");
    delimiter.extend_from_slice(boundary.as_bytes());

    // Walk the body line by line, noting where each delimiter line starts and ends.
    // (start of the line, end of the line including its line end, is_close)
    let mut delimiters: Vec<(usize, usize, bool)> = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| pos + i + 1);
        let line = trim_line_end(&body[pos..end]);
        if let Some(rest) = line.strip_prefix(delimiter.as_slice()) {
            let (close, padding) = match rest.strip_prefix(b"--") {
                Some(p) => (true, p),
                None => (false, rest),
            };
            // RFC 2046: only linear whitespace may follow the boundary on its line; anything
            // else means this was body text that merely starts with the same characters.
            if padding.iter().all(|b| *b == b' ' || *b == b'\t') {
                delimiters.push((pos, end, close));
                if delimiters.len() > MAX_PARTS + 1 {
                    return Err(SiprecError::TooManyParts { max: MAX_PARTS });
                }
                if close {
                    break;
                }
            }
        }
        pos = end;
    }
    let Some(&(_, _, first_close)) = delimiters.first() else {
        return Err(SiprecError::NoOpeningBoundary);
    };
    if first_close || !delimiters.last().is_some_and(|d| d.2) {
        return Err(SiprecError::Unterminated);
    }
    let mut parts = Vec::new();
    for (index, pair) in delimiters.windows(2).enumerate() {
        let (start, end) = (pair[0].1, pair[1].0);
        // The line end before a delimiter belongs to the delimiter (RFC 2046 §5.1.1).
        let mut raw = &body[start..end];
        raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        parts.push(parse_part(raw, index)?);
    }
    Ok(Parts { parts })
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn parse_part(raw: &[u8], part: usize) -> Result<Part, SiprecError> {
    let bad = |reason: &str| SiprecError::BadPart {
        part,
        reason: reason.to_string(),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    // Headers end at the first empty line. A part that starts with an empty line has none.
    let body_start = loop {
        if pos >= raw.len() {
            // Headers only, no blank line: an empty body.
            break raw.len();
        }
        let end = raw[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| pos + i + 1);
        let line = trim_line_end(&raw[pos..end]);
        if line.is_empty() {
            break end;
        }
        let line = std::str::from_utf8(line).map_err(|_| bad("header is not UTF-8"))?;
        if line.starts_with([' ', '\t']) {
            // Folded continuation (RFC 5322 §2.2.3).
            let Some(last) = headers.last_mut() else {
                return Err(bad("continuation line before any header"));
            };
            last.1.push(' ');
            last.1.push_str(line.trim());
        } else {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| bad("header line without ':'"))?;
            let name = name.trim();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad("bad header name"));
            }
            if headers.len() >= MAX_PART_HEADERS {
                return Err(bad("too many headers"));
            }
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        pos = end;
    };
    let content_type = headers
        .iter()
        .find(|(n, _)| n == "content-type" || n == "c")
        .map(|(_, v)| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|| "text/plain".to_string());
    Ok(Part {
        headers,
        content_type,
        body: raw[body_start..].to_vec(),
    })
}

/// The `boundary` parameter of a `multipart/*` Content-Type, quoted or not.
fn boundary(content_type: &str) -> Result<String, SiprecError> {
    let not_multipart = || SiprecError::NotMultipart(content_type.chars().take(100).collect());
    let (media, mut params) = content_type.split_once(';').unwrap_or((content_type, ""));
    let media = media.trim().to_ascii_lowercase();
    if !media.starts_with("multipart/") {
        return Err(not_multipart());
    }
    let mut found = None;
    while !params.trim().is_empty() {
        let (name, rest) = params.split_once('=').ok_or_else(not_multipart)?;
        let rest = rest.trim_start();
        let (value, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or(SiprecError::BadBoundary)?;
            let after = quoted[end..].trim_start();
            let after = match after.strip_prefix(';') {
                Some(a) => a,
                None if after.is_empty() => after,
                None => return Err(not_multipart()),
            };
            (value, after)
        } else {
            let (v, a) = rest.split_once(';').unwrap_or((rest, ""));
            (v.trim().to_string(), a)
        };
        if name.trim().eq_ignore_ascii_case("boundary") {
            found = Some(value);
        }
        params = after;
    }
    let b = found.ok_or_else(not_multipart)?;
    // RFC 2046 §5.1.1 bchars; a space may not be last.
    let valid = !b.is_empty()
        && b.len() <= 70
        && !b.ends_with(' ')
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c));
    if !valid {
        return Err(SiprecError::BadBoundary);
    }
    Ok(b)
}

/// RFC 7865 §6: whether the document describes the whole recording or only changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataMode {
    Complete,
    Partial,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: String,
    /// `<sipSessionID>` values (RFC 7989 Session-ID of the recorded call legs).
    pub sip_session_ids: Vec<String>,
    pub group_ref: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Participant {
    pub id: String,
    pub aor: Option<String>,
    pub name: Option<String>,
    /// Stream ids this participant sends (from `<participantstreamassoc>` or, in the
    /// pre-RFC form some SBCs still emit, `<send>` directly inside `<participant>`).
    pub sends: Vec<String>,
    pub receives: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamInfo {
    pub id: String,
    pub session: Option<String>,
    /// Matches `a=label` of an SDP m= line.
    pub label: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub data_mode: Option<DataMode>,
    /// The first `<session>`'s id (most SRCs send exactly one).
    pub session_id: Option<String>,
    pub group_ids: Vec<String>,
    pub sessions: Vec<SessionInfo>,
    pub participants: Vec<Participant>,
    pub streams: Vec<StreamInfo>,
}

impl Metadata {
    /// All `<sipSessionID>` values over all sessions.
    pub fn sip_session_ids(&self) -> impl Iterator<Item = &str> {
        self.sessions
            .iter()
            .flat_map(|s| s.sip_session_ids.iter().map(String::as_str))
    }

    /// The participant that sends the stream whose `<label>` is `label`.
    pub fn sender_of_label(&self, label: &str) -> Option<&Participant> {
        let stream = self
            .streams
            .iter()
            .find(|s| s.label.as_deref() == Some(label))?;
        self.participants
            .iter()
            .find(|p| p.sends.contains(&stream.id))
    }
}

/// Namespaces accepted for the recording elements: RFC 7865's, and the unnumbered one that
/// pre-RFC implementations (e.g. older Acme Packet / Oracle SBCs) still send.
const NAMESPACES: [&[u8]; 2] = [
    b"urn:ietf:params:xml:ns:recording:1",
    b"urn:ietf:params:xml:ns:recording",
];

/// Where we are in the document; `Ignored` covers unknown elements and foreign-namespace
/// extension data, together with everything under them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Recording,
    DataMode,
    Session(usize),
    SipSessionId(usize),
    GroupRef(usize),
    Participant(usize),
    NameId(usize),
    Name(usize),
    Aor(usize),
    Send(usize),
    Recv(usize),
    Stream(usize),
    Label(usize),
    Assoc(usize),
    AssocSend(usize),
    AssocRecv(usize),
    Ignored,
}

/// Parses an RFC 7865 `<recording>` document.
pub fn parse_metadata(xml: &[u8]) -> Result<Metadata, SiprecError> {
    if xml.len() > MAX_METADATA_BYTES {
        return Err(SiprecError::MetadataTooLarge {
            len: xml.len(),
            max: MAX_METADATA_BYTES,
        });
    }
    let text = std::str::from_utf8(xml).map_err(|_| SiprecError::NotUtf8)?;
    let mut reader = NsReader::from_str(text);
    let config = reader.config_mut();
    config.expand_empty_elements = true;
    config.check_end_names = true;

    let mut meta = Metadata::default();
    // participantstreamassoc entries: (participant id, sends, receives), resolved at the end
    // because they may come before the participant they name.
    let mut assocs: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    let mut stack: Vec<Ctx> = Vec::new();
    let mut text_buf = String::new();
    let mut elements = 0usize;
    let mut seen_root = false;

    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| SiprecError::Xml(e.to_string()))?;
        match event {
            Event::DocType(_) => return Err(SiprecError::Doctype),
            Event::Start(start) => {
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(SiprecError::TooManyElements { max: MAX_ELEMENTS });
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(SiprecError::TooDeep { max: MAX_DEPTH });
                }
                let ours = match ns {
                    ResolveResult::Unbound => true,
                    ResolveResult::Bound(n) => NAMESPACES.contains(&n.0),
                    ResolveResult::Unknown(prefix) => {
                        return Err(SiprecError::Xml(format!(
                            "undeclared namespace prefix {:?}",
                            String::from_utf8_lossy(&prefix)
                        )))
                    }
                };
                let local = start.local_name();
                let name = std::str::from_utf8(local.as_ref()).unwrap_or("");
                let parent = stack.last().copied();
                let ctx = if !ours {
                    Ctx::Ignored
                } else {
                    open(parent, name, &start, &mut meta, &mut assocs)?
                };
                if parent.is_none() {
                    if seen_root || ctx != Ctx::Recording {
                        return Err(SiprecError::NotRecording);
                    }
                    seen_root = true;
                }
                text_buf.clear();
                stack.push(ctx);
            }
            Event::Text(t) => {
                let t = t
                    .unescape()
                    .map_err(|e| SiprecError::Xml(format!("text: {e}")))?;
                if stack.is_empty() && !t.trim().is_empty() {
                    return Err(SiprecError::Xml("text outside the root element".into()));
                }
                text_buf.push_str(&t);
            }
            Event::CData(c) => {
                let c = c
                    .decode()
                    .map_err(|e| SiprecError::Xml(format!("CDATA: {e}")))?;
                text_buf.push_str(&c);
            }
            Event::End(_) => {
                let ctx = stack.pop().unwrap_or(Ctx::Ignored);
                close(ctx, text_buf.trim(), &mut meta, &mut assocs);
                text_buf.clear();
            }
            Event::Eof => {
                if !stack.is_empty() {
                    return Err(SiprecError::Xml("document ends inside an element".into()));
                }
                break;
            }
            // Declaration, comments and processing instructions carry nothing we use.
            _ => {}
        }
    }
    if !seen_root {
        return Err(SiprecError::NotRecording);
    }
    for (pid, sends, receives) in assocs {
        if let Some(p) = meta.participants.iter_mut().find(|p| p.id == pid) {
            p.sends.extend(sends);
            p.receives.extend(receives);
        }
    }
    meta.session_id = meta.sessions.first().map(|s| s.id.clone());
    Ok(meta)
}

fn attr(start: &BytesStart, names: &[&str]) -> Result<Option<String>, SiprecError> {
    for a in start.attributes() {
        let a: Attribute = a.map_err(|e| SiprecError::Xml(format!("attribute: {e}")))?;
        let key = a.key.local_name();
        let key = std::str::from_utf8(key.as_ref()).unwrap_or("");
        if names.contains(&key) {
            let v = a
                .unescape_value()
                .map_err(|e| SiprecError::Xml(format!("attribute {key}: {e}")))?;
            return Ok(Some(v.trim().to_string()));
        }
    }
    Ok(None)
}

fn open(
    parent: Option<Ctx>,
    name: &str,
    start: &BytesStart,
    meta: &mut Metadata,
    assocs: &mut Vec<(String, Vec<String>, Vec<String>)>,
) -> Result<Ctx, SiprecError> {
    Ok(match (parent, name) {
        (None, "recording") => Ctx::Recording,
        (Some(Ctx::Recording), n) if n.eq_ignore_ascii_case("datamode") => Ctx::DataMode,
        (Some(Ctx::Recording), "group") => {
            if let Some(id) = attr(start, &["group_id", "id"])? {
                meta.group_ids.push(id);
            }
            Ctx::Ignored
        }
        (Some(Ctx::Recording), "session") => {
            meta.sessions.push(SessionInfo {
                id: attr(start, &["session_id", "id"])?.unwrap_or_default(),
                ..SessionInfo::default()
            });
            Ctx::Session(meta.sessions.len() - 1)
        }
        (Some(Ctx::Session(i)), "sipSessionID") => Ctx::SipSessionId(i),
        (Some(Ctx::Session(i)), "group-ref") => Ctx::GroupRef(i),
        (Some(Ctx::Recording), "participant") => {
            meta.participants.push(Participant {
                id: attr(start, &["participant_id", "id"])?.unwrap_or_default(),
                ..Participant::default()
            });
            Ctx::Participant(meta.participants.len() - 1)
        }
        (Some(Ctx::Participant(i)), "nameID") => {
            if let Some(aor) = attr(start, &["aor"])? {
                meta.participants[i].aor = Some(aor);
            }
            Ctx::NameId(i)
        }
        (Some(Ctx::NameId(i) | Ctx::Participant(i)), "name") => Ctx::Name(i),
        (Some(Ctx::Participant(i)), "aor") => Ctx::Aor(i),
        (Some(Ctx::Participant(i)), "send") => Ctx::Send(i),
        (Some(Ctx::Participant(i)), "recv") => Ctx::Recv(i),
        (Some(Ctx::Recording), "stream") => {
            meta.streams.push(StreamInfo {
                id: attr(start, &["stream_id", "id"])?.unwrap_or_default(),
                session: attr(start, &["session_id", "session"])?,
                label: None,
            });
            Ctx::Stream(meta.streams.len() - 1)
        }
        (Some(Ctx::Stream(i)), "label") => Ctx::Label(i),
        (Some(Ctx::Recording), "participantstreamassoc") => {
            assocs.push((
                attr(start, &["participant_id"])?.unwrap_or_default(),
                Vec::new(),
                Vec::new(),
            ));
            Ctx::Assoc(assocs.len() - 1)
        }
        (Some(Ctx::Assoc(i)), "send") => Ctx::AssocSend(i),
        (Some(Ctx::Assoc(i)), "recv") => Ctx::AssocRecv(i),
        _ => Ctx::Ignored,
    })
}

fn close(
    ctx: Ctx,
    text: &str,
    meta: &mut Metadata,
    assocs: &mut [(String, Vec<String>, Vec<String>)],
) {
    let value = || (!text.is_empty()).then(|| text.to_string());
    // Indices come from `open`, which pushed the entries; `get_mut` keeps this panic-free
    // regardless.
    match ctx {
        Ctx::DataMode => {
            meta.data_mode = match text.to_ascii_lowercase().as_str() {
                "complete" => Some(DataMode::Complete),
                "partial" => Some(DataMode::Partial),
                _ => None,
            }
        }
        Ctx::SipSessionId(i) => {
            if let (Some(s), Some(v)) = (meta.sessions.get_mut(i), value()) {
                s.sip_session_ids.push(v);
            }
        }
        Ctx::GroupRef(i) => {
            if let Some(s) = meta.sessions.get_mut(i) {
                s.group_ref = value();
            }
        }
        Ctx::Name(i) => {
            if let Some(p) = meta.participants.get_mut(i) {
                p.name = value().or(p.name.take());
            }
        }
        Ctx::Aor(i) => {
            if let Some(p) = meta.participants.get_mut(i) {
                p.aor = value().or(p.aor.take());
            }
        }
        Ctx::Send(i) => {
            if let (Some(p), Some(v)) = (meta.participants.get_mut(i), value()) {
                p.sends.push(v);
            }
        }
        Ctx::Recv(i) => {
            if let (Some(p), Some(v)) = (meta.participants.get_mut(i), value()) {
                p.receives.push(v);
            }
        }
        Ctx::Label(i) => {
            if let Some(s) = meta.streams.get_mut(i) {
                s.label = value();
            }
        }
        Ctx::AssocSend(i) => {
            if let (Some(a), Some(v)) = (assocs.get_mut(i), value()) {
                a.1.push(v);
            }
        }
        Ctx::AssocRecv(i) => {
            if let (Some(a), Some(v)) = (assocs.get_mut(i), value()) {
                a.2.push(v);
            }
        }
        _ => {}
    }
}

/// Which side of the conversation a recorded stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelRole {
    Customer,
    Agent,
}

/// The user part of an AoR: `sip:1001@pbx` → `1001`, `tel:+331234` → `+331234`.
pub fn aor_user(aor: &str) -> &str {
    let aor = aor.trim().trim_start_matches('<').trim_end_matches('>');
    let rest = ["sips:", "sip:", "tel:"]
        .iter()
        .find_map(|scheme| {
            aor.get(..scheme.len())
                .filter(|s| s.eq_ignore_ascii_case(scheme))
                .map(|_| &aor[scheme.len()..])
        })
        .unwrap_or(aor);
    let user = rest.split('@').next().unwrap_or(rest);
    user.split([';', '?']).next().unwrap_or(user)
}

/// Maps each recorded stream (by its SDP `a=label`, one entry per m= line) to a role.
///
/// When the metadata ties streams to senders and at least one sender's AoR user part is a
/// known agent (`is_agent`), streams sent by agents go to the agent channel and all others to
/// the customer channel. Otherwise (no metadata match, or every sender an agent) the first
/// stream is the customer and the second the agent, and any further streams are customer.
pub fn channel_map(
    meta: &Metadata,
    labels: &[Option<String>],
    is_agent: impl Fn(&str) -> bool,
) -> Vec<ChannelRole> {
    let matched: Vec<Option<bool>> = labels
        .iter()
        .map(|label| {
            let sender = meta.sender_of_label(label.as_deref()?)?;
            Some(is_agent(aor_user(sender.aor.as_deref()?)))
        })
        .collect();
    let agents = matched.iter().filter(|m| **m == Some(true)).count();
    let positional = || {
        (0..labels.len())
            .map(|i| {
                if i == 1 {
                    ChannelRole::Agent
                } else {
                    ChannelRole::Customer
                }
            })
            .collect()
    };
    // With two or more streams, an all-agent result would put everything on one channel;
    // positional is the better guess for an agent-to-agent call.
    if agents == 0 || (labels.len() > 1 && agents == labels.len()) {
        return positional();
    }
    matched
        .into_iter()
        .map(|m| {
            if m == Some(true) {
                ChannelRole::Agent
            } else {
                ChannelRole::Customer
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Shaped after RFC 7865 §A.1 / RFC 7866 §9: one session, two participants, two streams.
    const RFC7865_METADATA: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns='urn:ietf:params:xml:ns:recording:1'>
  <datamode>complete</datamode>
  <group group_id="7+OTCyoxTmqmqyA/1weDAg==">
    <associate-time>2010-12-16T23:41:07Z</associate-time>
  </group>
  <session session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <sipSessionID>ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2</sipSessionID>
    <group-ref>7+OTCyoxTmqmqyA/1weDAg==</group-ref>
  </session>
  <participant participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <nameID aor="sip:bob@biloxi.example.com">
      <name xml:lang="it">Bob</name>
    </nameID>
  </participant>
  <participant participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <nameID aor="sip:1001@atlanta.example.com">
      <name xml:lang="en">Alice &amp; Co</name>
    </nameID>
  </participant>
  <stream stream_id="UAAMm5GRQKSCMVvLyl4rFw==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <label>96</label>
  </stream>
  <stream stream_id="i1Pz3to5hGk8fuXl+PbwCw==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <label>97</label>
  </stream>
  <participantsessionassoc participant_id="srfBElmCRp2QB23b7Mpk0w==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <associate-time>2010-12-16T23:41:07Z</associate-time>
  </participantsessionassoc>
  <participantstreamassoc participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <send>i1Pz3to5hGk8fuXl+PbwCw==</send>
    <recv>UAAMm5GRQKSCMVvLyl4rFw==</recv>
  </participantstreamassoc>
  <participantstreamassoc participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <send>UAAMm5GRQKSCMVvLyl4rFw==</send>
    <recv>i1Pz3to5hGk8fuXl+PbwCw==</recv>
  </participantstreamassoc>
</recording>
"#;

    /// Pre-RFC form (old SBCs): other namespace spelling, `id=` attributes, `<aor>` child,
    /// `<send>` inside `<participant>`, vendor extension data in its own namespace.
    const LEGACY_METADATA: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<recording xmlns='urn:ietf:params:xml:ns:recording'>
  <dataMode>partial</dataMode>
  <session id="S1"><start-time>2011-06-27T17:03:57</start-time></session>
  <participant id="P1" session="S1">
    <aor>sip:+15551234@carrier.example</aor>
    <name>caller</name>
    <send>ST1</send>
    <extensiondata xmlns:apkt="http://acmepacket.com/siprec/extensiondata">
      <apkt:callingParty>true</apkt:callingParty>
      <apkt:deep><apkt:deeper>x</apkt:deeper></apkt:deep>
    </extensiondata>
  </participant>
  <participant id="P2" session="S1">
    <aor>sip:2002@pbx.example</aor>
    <name>agent</name>
    <send>ST2</send>
  </participant>
  <stream id="ST1" session="S1"><label>11</label></stream>
  <stream id="ST2" session="S1"><label>12</label></stream>
</recording>"#;

    fn multipart(sep: &str, boundary: &str) -> Vec<u8> {
        format!(
            "preamble to ignore{sep}--{boundary}{sep}Content-Type: application/sdp{sep}{sep}\
             v=0{sep}o=- 1 1 IN IP4 192.0.2.1{sep}c=IN IP4 192.0.2.1{sep}\
             m=audio 5000 RTP/AVP 0{sep}a=label:96{sep}a=sendonly{sep}\
             --{boundary}{sep}Content-Type: application/rs-metadata+xml{sep}\
             Content-Disposition: recording-session{sep}{sep}{RFC7865_METADATA}{sep}\
             --{boundary}--{sep}epilogue{sep}"
        )
        .into_bytes()
    }

    #[test]
    fn rfc7865_example() {
        let m = parse_metadata(RFC7865_METADATA.as_bytes()).unwrap();
        assert_eq!(m.data_mode, Some(DataMode::Complete));
        assert_eq!(m.session_id.as_deref(), Some("hVpd7YQgRW2nD22h7q60JQ=="));
        assert_eq!(m.group_ids, vec!["7+OTCyoxTmqmqyA/1weDAg=="]);
        assert_eq!(
            m.sip_session_ids().collect::<Vec<_>>(),
            vec!["ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2"]
        );
        assert_eq!(m.participants.len(), 2);
        assert_eq!(
            m.participants[0].aor.as_deref(),
            Some("sip:bob@biloxi.example.com")
        );
        assert_eq!(m.participants[0].name.as_deref(), Some("Bob"));
        assert_eq!(m.participants[1].name.as_deref(), Some("Alice & Co"));
        assert_eq!(m.participants[0].sends, vec!["i1Pz3to5hGk8fuXl+PbwCw=="]);
        assert_eq!(m.participants[0].receives, vec!["UAAMm5GRQKSCMVvLyl4rFw=="]);
        assert_eq!(m.streams[0].label.as_deref(), Some("96"));
        assert_eq!(
            m.sender_of_label("97").unwrap().id,
            "srfBElmCRp2QB23b7Mpk0w=="
        );
    }

    #[test]
    fn legacy_and_unnamespaced_forms() {
        let m = parse_metadata(LEGACY_METADATA.as_bytes()).unwrap();
        assert_eq!(m.data_mode, Some(DataMode::Partial));
        assert_eq!(m.session_id.as_deref(), Some("S1"));
        assert_eq!(
            m.participants[0].aor.as_deref(),
            Some("sip:+15551234@carrier.example")
        );
        assert_eq!(m.participants[1].sends, vec!["ST2"]);
        assert_eq!(m.streams[1].session.as_deref(), Some("S1"));
        let bare = RFC7865_METADATA.replace(" xmlns='urn:ietf:params:xml:ns:recording:1'", "");
        assert_eq!(
            parse_metadata(bare.as_bytes()).unwrap(),
            parse_metadata(RFC7865_METADATA.as_bytes()).unwrap()
        );
        // Prefixed form of the RFC namespace.
        let prefixed = "<r:recording xmlns:r='urn:ietf:params:xml:ns:recording:1'>\
            <r:stream r:stream_id='a'><r:label>5</r:label></r:stream></r:recording>";
        let m = parse_metadata(prefixed.as_bytes()).unwrap();
        assert_eq!(m.streams[0].id, "a");
        assert_eq!(m.streams[0].label.as_deref(), Some("5"));
    }

    #[test]
    fn foreign_namespace_elements_are_ignored() {
        let xml = "<recording xmlns='urn:ietf:params:xml:ns:recording:1' xmlns:x='urn:x'>\
            <x:participant participant_id='evil'/><participant participant_id='p'/></recording>";
        let m = parse_metadata(xml.as_bytes()).unwrap();
        assert_eq!(m.participants.len(), 1);
        assert_eq!(m.participants[0].id, "p");
    }

    #[test]
    fn hostile_xml_refused() {
        let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<recording>&lol2;</recording>"#;
        assert_eq!(parse_metadata(laughs.as_bytes()), Err(SiprecError::Doctype));
        let undeclared = "<recording><participant participant_id='&xxe;'/></recording>";
        assert!(matches!(
            parse_metadata(undeclared.as_bytes()),
            Err(SiprecError::Xml(_))
        ));
        let text_entity = "<recording><datamode>&xxe;</datamode></recording>";
        assert!(matches!(
            parse_metadata(text_entity.as_bytes()),
            Err(SiprecError::Xml(_))
        ));
        let deep = format!(
            "<recording>{}{}</recording>",
            "<a>".repeat(100),
            "</a>".repeat(100)
        );
        assert_eq!(
            parse_metadata(deep.as_bytes()),
            Err(SiprecError::TooDeep { max: MAX_DEPTH })
        );
        let wide = format!("<recording>{}</recording>", "<a/>".repeat(MAX_ELEMENTS + 1));
        assert_eq!(
            parse_metadata(wide.as_bytes()),
            Err(SiprecError::TooManyElements { max: MAX_ELEMENTS })
        );
        let huge = format!("<recording>{}</recording>", " ".repeat(MAX_METADATA_BYTES));
        assert!(matches!(
            parse_metadata(huge.as_bytes()),
            Err(SiprecError::MetadataTooLarge { .. })
        ));
        for bad in [
            &b"<recording><a></b></recording>"[..],
            b"<recording>",
            b"<other/>",
            b"",
            b"<recording/><recording/>",
            b"<p:recording/>",
            b"<recording>\xff</recording>",
        ] {
            assert!(
                parse_metadata(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn multipart_crlf_and_lf_quoted_and_not() {
        for sep in ["\r\n", "\n"] {
            for (ct, boundary) in [
                ("multipart/mixed;boundary=foobar", "foobar"),
                (
                    "Multipart/Mixed; boundary=\"with space'()+_,-./:=?\"",
                    "with space'()+_,-./:=?",
                ),
                ("multipart/mixed; charset=x;boundary=\"a\\\"b\"", "a\"b"),
            ] {
                if boundary.contains('"') {
                    // A quote is not a bchar: quoted or not, refused.
                    assert_eq!(
                        split_multipart(ct, &multipart(sep, boundary)),
                        Err(SiprecError::BadBoundary)
                    );
                    continue;
                }
                let parts = split_multipart(ct, &multipart(sep, boundary)).unwrap();
                assert_eq!(parts.parts.len(), 2);
                let sdp = parts.sdp().unwrap();
                assert!(sdp.starts_with(b"v=0"));
                assert!(
                    sdp.ends_with(b"a=sendonly"),
                    "{:?}",
                    String::from_utf8_lossy(sdp)
                );
                let meta = parse_metadata(parts.metadata().unwrap()).unwrap();
                assert_eq!(meta.streams.len(), 2);
                assert_eq!(
                    parts.parts[1].header("content-disposition"),
                    Some("recording-session")
                );
            }
        }
    }

    #[test]
    fn multipart_refusals() {
        let body = multipart("\r\n", "b1");
        assert!(matches!(
            split_multipart("application/sdp", &body),
            Err(SiprecError::NotMultipart(_))
        ));
        assert!(matches!(
            split_multipart("multipart/mixed", &body),
            Err(SiprecError::NotMultipart(_))
        ));
        assert_eq!(
            split_multipart("multipart/mixed;boundary=", &body),
            Err(SiprecError::BadBoundary)
        );
        assert_eq!(
            split_multipart(
                &format!("multipart/mixed;boundary={}", "x".repeat(71)),
                &body
            ),
            Err(SiprecError::BadBoundary)
        );
        assert_eq!(
            split_multipart("multipart/mixed;boundary=\"b1", &body),
            Err(SiprecError::BadBoundary)
        );
        assert_eq!(
            split_multipart("multipart/mixed;boundary=other", &body),
            Err(SiprecError::NoOpeningBoundary)
        );
        let cut = &body[..body.len() - 20];
        assert_eq!(
            split_multipart("multipart/mixed;boundary=b1", cut),
            Err(SiprecError::Unterminated)
        );
        assert_eq!(
            split_multipart("multipart/mixed;boundary=b1", b"--b1--\r\n"),
            Err(SiprecError::Unterminated)
        );
        let many = format!("{}--b1--\r\n", "--b1\r\n\r\nx\r\n".repeat(MAX_PARTS + 1));
        assert_eq!(
            split_multipart("multipart/mixed;boundary=b1", many.as_bytes()),
            Err(SiprecError::TooManyParts { max: MAX_PARTS })
        );
        let exactly = format!("{}--b1--\r\n", "--b1\r\n\r\nx\r\n".repeat(MAX_PARTS));
        assert!(split_multipart("multipart/mixed;boundary=b1", exactly.as_bytes()).is_ok());
        let big = vec![b'x'; MAX_MULTIPART_BYTES + 1];
        assert!(matches!(
            split_multipart("multipart/mixed;boundary=b1", &big),
            Err(SiprecError::TooLarge { .. })
        ));
        for bad_part in [
            &b"--b1\r\nno colon here\r\n\r\nx\r\n--b1--\r\n"[..],
            b"--b1\r\n continuation first\r\n\r\nx\r\n--b1--\r\n",
            b"--b1\r\nContent-Type: \xff\r\n\r\nx\r\n--b1--\r\n",
        ] {
            assert!(matches!(
                split_multipart("multipart/mixed;boundary=b1", bad_part),
                Err(SiprecError::BadPart { part: 0, .. })
            ));
        }
    }

    #[test]
    fn boundary_look_alike_lines_stay_in_the_body() {
        let body = b"--b1\r\nContent-Type: text/plain\r\n\r\n--b1x is not a boundary\r\n--b1 \r\n\r\nsecond\r\n--b1--";
        let parts = split_multipart("multipart/mixed; boundary=b1", body).unwrap();
        assert_eq!(parts.parts.len(), 2);
        assert_eq!(parts.parts[0].body, b"--b1x is not a boundary");
        assert_eq!(parts.parts[1].content_type, "text/plain");
        assert_eq!(parts.parts[1].body, b"second");
    }

    #[test]
    fn aor_user_parts() {
        assert_eq!(aor_user("sip:1001@pbx.example"), "1001");
        assert_eq!(aor_user("<SIPS:alice@example.com;transport=tls>"), "alice");
        assert_eq!(aor_user("tel:+331234;phone-context=x"), "+331234");
        assert_eq!(aor_user("bob"), "bob");
        assert_eq!(aor_user(""), "");
    }

    #[test]
    fn channel_mapping() {
        let m = parse_metadata(RFC7865_METADATA.as_bytes()).unwrap();
        let labels = vec![Some("96".to_string()), Some("97".to_string())];
        // Stream 96 is sent by 1001 (Alice), the agent.
        assert_eq!(
            channel_map(&m, &labels, |u| u == "1001"),
            vec![ChannelRole::Agent, ChannelRole::Customer]
        );
        // No agent known: positional.
        assert_eq!(
            channel_map(&m, &labels, |_| false),
            vec![ChannelRole::Customer, ChannelRole::Agent]
        );
        // Everyone an agent: positional too.
        assert_eq!(
            channel_map(&m, &labels, |_| true),
            vec![ChannelRole::Customer, ChannelRole::Agent]
        );
        // Without labels or metadata.
        assert_eq!(
            channel_map(&Metadata::default(), &[None, None, None], |_| true),
            vec![
                ChannelRole::Customer,
                ChannelRole::Agent,
                ChannelRole::Customer
            ]
        );
        // Legacy form: agent 2002 sends label 12.
        let legacy = parse_metadata(LEGACY_METADATA.as_bytes()).unwrap();
        let labels = vec![Some("12".to_string()), Some("11".to_string())];
        assert_eq!(
            channel_map(&legacy, &labels, |u| u == "2002"),
            vec![ChannelRole::Agent, ChannelRole::Customer]
        );
        // One stream sent by an agent.
        assert_eq!(
            channel_map(&legacy, &labels[..1], |u| u == "2002"),
            vec![ChannelRole::Agent]
        );
    }

    /// The whole SIPREC INVITE body path as the UAS will run it: split, SDP answer for both
    /// labelled streams, metadata, and channels by label.
    #[test]
    fn siprec_invite_body_end_to_end() {
        use crate::media::sdp::{answer, parse_offer, Limits};
        let sdp = "v=0\r\no=SRC 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\n\
            t=0 0\r\nm=audio 12240 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
            a=rtpmap:101 telephone-event/8000\r\na=label:96\r\na=sendonly\r\n\
            m=audio 12242 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
            a=rtpmap:101 telephone-event/8000\r\na=label:97\r\na=sendonly\r\n";
        let body = format!(
            "--OSS-unique-boundary-42\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n\
             --OSS-unique-boundary-42\r\nContent-Type: application/rs-metadata+xml\r\n\
             Content-Disposition: recording-session\r\n\r\n{RFC7865_METADATA}\r\n\
             --OSS-unique-boundary-42--\r\n"
        );
        let parts = split_multipart(
            "multipart/mixed;boundary=OSS-unique-boundary-42",
            body.as_bytes(),
        )
        .unwrap();
        let offer = parse_offer(parts.sdp().unwrap(), &Limits::default()).unwrap();
        let local = "192.0.2.10".parse().unwrap();
        let a = answer(&offer, local, &[30000, 30002], 7, 1, false).unwrap();
        let labels: Vec<Option<String>> = a
            .streams
            .iter()
            .map(|s| s.as_ref().and_then(|s| s.label.clone()))
            .collect();
        assert_eq!(labels, vec![Some("96".into()), Some("97".into())]);
        assert!(a.streams.iter().flatten().all(|s| s.dtmf_pt == Some(101)));
        let meta = parse_metadata(parts.metadata().unwrap()).unwrap();
        assert_eq!(
            channel_map(&meta, &labels, |u| u == "1001"),
            vec![ChannelRole::Agent, ChannelRole::Customer]
        );
    }

    proptest! {
        #[test]
        fn arbitrary_metadata_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(m) = parse_metadata(&bytes) {
                let _ = channel_map(&m, &[Some("1".into()), None], |_| true);
            }
        }

        #[test]
        fn mutated_metadata_never_panics(cut in 0usize..2000, insert in "[<>/&;'\"=a-z ]{0,12}") {
            let base = RFC7865_METADATA;
            let at = cut % base.len();
            let s = format!("{}{}{}", &base[..at], insert, &base[at..]);
            let _ = parse_metadata(s.as_bytes());
        }

        #[test]
        fn arbitrary_multipart_never_panics(
            ct in "[ -~]{0,60}",
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let _ = split_multipart(&ct, &bytes);
            let _ = split_multipart("multipart/mixed;boundary=b1", &bytes);
        }

        #[test]
        fn mutated_multipart_never_panics(cut in 0usize..3000, insert in "[-\r\nb1a:; ]{0,10}") {
            let base = multipart("\r\n", "b1");
            let at = cut % base.len();
            let mut s = base[..at].to_vec();
            s.extend_from_slice(insert.as_bytes());
            s.extend_from_slice(&base[at..]);
            if let Ok(parts) = split_multipart("multipart/mixed;boundary=b1", &s) {
                prop_assert!(parts.parts.len() <= MAX_PARTS);
            }
        }
    }
}
