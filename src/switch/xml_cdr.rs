//! `mod_xml_cdr` documents, parsed into the same [`RawCdr`] as `mod_json_cdr` ones.
//!
//! FreeSWITCH writes the same information in both serializers, so this module mirrors
//! [`parse_json`](super::raw_cdr::parse_json) field by field: for one call, both parsers give
//! the same `RawCdr` apart from `format`. The XML shapes that differ from the JSON are:
//!
//! * `core-uuid` and `switchname` are attributes of `<cdr>`;
//! * every variable is a child element of `<variables>` named after the variable;
//! * the callflow is one `<callflow>` element per caller profile (newest first), rather than
//!   an array or a lone object;
//! * related legs are `<originatee><originatee_caller_profile>…` (one element per profile)
//!   instead of `originatee.originatee_caller_profiles`;
//! * the extension name is the `name` attribute of `<extension>`.
//!
//! Where the JSON parser relies on serde_json's "last repeated key wins", this one lets the
//! last repeated element win, so even odd documents come out the same way.
//!
//! The document is read with quick-xml's streaming reader and never held as a tree: nesting
//! is counted while streaming (a hostile 100 000-deep document is refused at
//! `limits.max_depth`, with no recursion anywhere), and only the handful of values gridedge
//! keeps are copied out. Every text and attribute is still checked, including in the parts
//! that are skipped (`call-stats`, `app_log`), so a document is either well-formed or refused,
//! as a JSON document is. quick-xml does not expand DTD entities: a `<!DOCTYPE>` is skipped,
//! and a reference to an entity it declares is an error, so entity expansion attacks cannot
//! happen. Only the five predefined entities and character references are resolved.
//!
//! Text is not trimmed: a value written verbatim (`encode-values=false`) keeps its spaces,
//! as it does in the JSON. Whitespace between elements is ignored. Non-UTF-8 bytes are
//! replaced (lossy), never refused: a garbled display name must not cost the call its CDR.

use std::borrow::Cow;
use std::collections::BTreeMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::raw_cdr::{decode_value, CallerProfile, CdrError, CdrFormat, CdrLimits, RawCdr};

/// Parses a `mod_xml_cdr` document (already unwrapped from its `cdr=` form encoding).
///
/// Refuses, with the reason: a body over `limits.max_bytes` ([`CdrError::TooLarge`]), an
/// empty or blank one ([`CdrError::Empty`]), XML that is not well-formed, including unknown
/// entities and content outside the root ([`CdrError::Xml`]), a root other than `<cdr>`
/// ([`CdrError::WrongType`]), nesting deeper than `limits.max_depth`
/// ([`CdrError::TooDeep`]), more than `limits.max_variables` variables or
/// `limits.max_profiles` callflows ([`CdrError::TooMany`]), a variable holding elements
/// instead of text ([`CdrError::WrongType`]), and no `<variables>` ([`CdrError::Missing`]).
pub fn parse_xml(text: &[u8], limits: &CdrLimits) -> Result<RawCdr, CdrError> {
    if text.len() > limits.max_bytes {
        return Err(CdrError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    if text.trim_ascii().is_empty() {
        return Err(CdrError::Empty);
    }
    let mut reader = Reader::from_reader(text);
    let config = reader.config_mut();
    // `<a/>` arrives as Start + End, so empty elements need no separate path.
    config.expand_empty_elements = true;
    // Well-formedness: `<a></b>` and a stray `</a>` are errors, not silently accepted.
    config.check_end_names = true;
    config.allow_unmatched_ends = false;
    config.check_comments = true;
    // Values keep their surrounding whitespace, as in the JSON (see the module docs).
    config.trim_text(false);

    let mut doc = Document::new(limits);
    loop {
        let event = reader
            .read_event()
            .map_err(|e| xml_error(e, reader.error_position()))?;
        match event {
            Event::Start(element) => doc.start(&element, reader.buffer_position())?,
            Event::Empty(element) => {
                doc.start(&element, reader.buffer_position())?;
                doc.end()?;
            }
            Event::End(_) => doc.end()?,
            Event::Text(text) => doc.text(&text, reader.buffer_position())?,
            Event::CData(data) => doc.cdata(&data)?,
            // Declarations, comments, processing instructions and DOCTYPE carry nothing a
            // CDR needs; a DOCTYPE's entity declarations are deliberately never used.
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    doc.finish()
}

/// What an open element is, decided from its parent's role and its own name. The roles that
/// capture text are the leaves gridedge keeps ([`Role::captures_text`]).
#[derive(Debug)]
enum Role {
    /// `<cdr>`.
    Root,
    /// `<cdr><channel_data>`.
    ChannelData,
    /// `<channel_data><direction>`: captures text.
    Direction,
    /// `<cdr><variables>`.
    Variables,
    /// A child of `<variables>`, holding the variable name: captures text.
    Variable(String),
    /// `<cdr><callflow>`: one caller profile.
    Callflow,
    /// `<callflow><caller_profile>`.
    CallerProfile,
    /// A kept child of `<caller_profile>`: captures text.
    ProfileField(ProfileField),
    /// `<callflow><times>`.
    Times,
    /// A child of `<times>`, holding its name: captures text.
    Time(String),
    /// `<caller_profile><originatee>` or `<originator>`.
    Related(Related),
    /// `<originatee_caller_profile>` or `<originator_caller_profile>`.
    RelatedProfile(Related),
    /// The `<uuid>` of a related profile: captures text.
    RelatedUuid,
    /// Anything else, with everything under it.
    Ignored,
}

impl Role {
    fn captures_text(&self) -> bool {
        matches!(
            self,
            Self::Direction
                | Self::Variable(_)
                | Self::ProfileField(_)
                | Self::Time(_)
                | Self::RelatedUuid
        )
    }
}

/// Which list of related legs a `<originatee>`/`<originator>` subtree feeds.
#[derive(Debug, Clone, Copy)]
enum Related {
    Originatee,
    Originator,
}

impl Related {
    /// The element that holds one related leg's profile inside the list element.
    fn profile_element(self) -> &'static [u8] {
        match self {
            Self::Originatee => b"originatee_caller_profile",
            Self::Originator => b"originator_caller_profile",
        }
    }

    fn list(self, profile: &mut CallerProfile) -> &mut Vec<String> {
        match self {
            Self::Originatee => &mut profile.originatees,
            Self::Originator => &mut profile.originators,
        }
    }
}

/// The `<caller_profile>` children copied into [`CallerProfile`]; others (`dialplan`,
/// `context`, `source`, ...) are skipped, as in the JSON parser.
#[derive(Debug, Clone, Copy)]
enum ProfileField {
    Username,
    CallerIdName,
    CallerIdNumber,
    Ani,
    DestinationNumber,
    Rdnis,
    Uuid,
    ChanName,
    NetworkAddr,
}

impl ProfileField {
    fn from_name(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"username" => Self::Username,
            b"caller_id_name" => Self::CallerIdName,
            b"caller_id_number" => Self::CallerIdNumber,
            b"ani" => Self::Ani,
            b"destination_number" => Self::DestinationNumber,
            b"rdnis" => Self::Rdnis,
            b"uuid" => Self::Uuid,
            b"chan_name" => Self::ChanName,
            b"network_addr" => Self::NetworkAddr,
            _ => return None,
        })
    }

    fn slot(self, profile: &mut CallerProfile) -> &mut String {
        match self {
            Self::Username => &mut profile.username,
            Self::CallerIdName => &mut profile.caller_id_name,
            Self::CallerIdNumber => &mut profile.caller_id_number,
            Self::Ani => &mut profile.ani,
            Self::DestinationNumber => &mut profile.destination_number,
            Self::Rdnis => &mut profile.rdnis,
            Self::Uuid => &mut profile.uuid,
            Self::ChanName => &mut profile.chan_name,
            Self::NetworkAddr => &mut profile.network_addr,
        }
    }
}

/// One open element.
#[derive(Debug)]
struct Frame {
    role: Role,
    /// Whether a child element has been opened inside it. A capturing element with children
    /// is the XML form of a JSON object where a string was expected.
    has_children: bool,
}

/// The document being streamed: the open-element stack plus the parts of [`RawCdr`] built
/// so far.
struct Document<'l> {
    limits: &'l CdrLimits,
    stack: Vec<Frame>,
    /// The root element has been opened (a second root is an error).
    root_seen: bool,
    core_uuid: Option<String>,
    switchname: Option<String>,
    channel_direction: Option<String>,
    /// `None` until a `<variables>` element is opened.
    variables: Option<BTreeMap<String, String>>,
    profiles: Vec<CallerProfile>,
    /// Text of the capturing element being read (captures never nest, so one buffer does).
    text: String,
    /// uuid of the related profile being read, pushed when its element closes.
    related_uuid: String,
}

impl<'l> Document<'l> {
    fn new(limits: &'l CdrLimits) -> Self {
        Self {
            limits,
            stack: Vec::new(),
            root_seen: false,
            core_uuid: None,
            switchname: None,
            channel_direction: None,
            variables: None,
            profiles: Vec::new(),
            text: String::new(),
            related_uuid: String::new(),
        }
    }

    /// The caller profile of the innermost `<callflow>`; only called in roles that exist
    /// below a `<callflow>`, which pushed the profile when it opened.
    fn profile(&mut self) -> Result<&mut CallerProfile, CdrError> {
        self.profiles
            .last_mut()
            .ok_or_else(|| CdrError::Xml("caller profile outside <callflow>".to_owned()))
    }

    fn start(&mut self, element: &BytesStart<'_>, position: u64) -> Result<(), CdrError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(CdrError::TooDeep {
                limit: self.limits.max_depth,
            });
        }
        let name = element.name();
        let name = name.as_ref();
        check_name(name, position)?;
        // Attributes are checked on every element (syntax, duplicates, entities) and kept
        // only where they carry data: `<cdr core-uuid switchname>` and `<extension name>`.
        let attributes = read_attributes(element, position)?;
        let Some(parent) = self.stack.last_mut() else {
            return self.start_root(name, attributes);
        };
        parent.has_children = true;
        let role = match (&parent.role, name) {
            (Role::Root, b"channel_data") => {
                // A later <channel_data> replaces an earlier one, like a repeated JSON key.
                self.channel_direction = None;
                Role::ChannelData
            }
            (Role::Root, b"variables") => {
                self.variables = Some(BTreeMap::new());
                Role::Variables
            }
            (Role::Root, b"callflow") => {
                if self.profiles.len() >= self.limits.max_profiles {
                    return Err(CdrError::TooMany {
                        what: "callflow profiles",
                        limit: self.limits.max_profiles,
                    });
                }
                self.profiles.push(CallerProfile::default());
                Role::Callflow
            }
            (Role::ChannelData, b"direction") => Role::Direction,
            (Role::Variables, _) => Role::Variable(String::from_utf8_lossy(name).into_owned()),
            (Role::Variable(_), _) => {
                return Err(CdrError::WrongType {
                    field: "variables.*",
                    expected: "string",
                })
            }
            (Role::Direction, _) => {
                return Err(CdrError::WrongType {
                    field: "channel_data.direction",
                    expected: "string",
                })
            }
            (Role::Callflow, b"extension") => {
                let extension_name = attributes
                    .into_iter()
                    .find(|(key, _)| *key == "name")
                    .map(|(_, value)| decode_value(&value))
                    .unwrap_or_default();
                self.profile()?.extension_name = extension_name;
                // Its children are the dialplan's applications, which a CDR does not need.
                Role::Ignored
            }
            (Role::Callflow, b"caller_profile") => {
                // A repeated <caller_profile> replaces the earlier one entirely, as a
                // repeated JSON key would.
                let profile = self.profile()?;
                *profile = CallerProfile {
                    extension_name: std::mem::take(&mut profile.extension_name),
                    times: std::mem::take(&mut profile.times),
                    ..CallerProfile::default()
                };
                Role::CallerProfile
            }
            (Role::Callflow, b"times") => {
                self.profile()?.times.clear();
                Role::Times
            }
            (Role::CallerProfile, b"originatee") => {
                Related::Originatee.list(self.profile()?).clear();
                Role::Related(Related::Originatee)
            }
            (Role::CallerProfile, b"originator") => {
                Related::Originator.list(self.profile()?).clear();
                Role::Related(Related::Originator)
            }
            (Role::CallerProfile, _) => match ProfileField::from_name(name) {
                Some(field) => Role::ProfileField(field),
                None => Role::Ignored,
            },
            (Role::Times, _) => Role::Time(String::from_utf8_lossy(name).into_owned()),
            (Role::Related(related), _) if name == related.profile_element() => {
                self.related_uuid.clear();
                Role::RelatedProfile(*related)
            }
            (Role::RelatedProfile(_), b"uuid") => Role::RelatedUuid,
            _ => Role::Ignored,
        };
        if role.captures_text() {
            self.text.clear();
        }
        self.stack.push(Frame {
            role,
            has_children: false,
        });
        Ok(())
    }

    fn start_root(
        &mut self,
        name: &[u8],
        attributes: Vec<(&'static str, String)>,
    ) -> Result<(), CdrError> {
        if self.root_seen {
            return Err(CdrError::Xml(
                "content after the root element: a second root element".to_owned(),
            ));
        }
        self.root_seen = true;
        if name != b"cdr" {
            return Err(CdrError::WrongType {
                field: "document",
                expected: "<cdr> root element",
            });
        }
        for (key, value) in attributes {
            // As in the JSON: an empty attribute is the same as an absent one.
            let value = (!value.is_empty()).then(|| decode_value(&value));
            match key {
                "core-uuid" => self.core_uuid = value,
                "switchname" => self.switchname = value,
                _ => {}
            }
        }
        self.stack.push(Frame {
            role: Role::Root,
            has_children: false,
        });
        Ok(())
    }

    fn end(&mut self) -> Result<(), CdrError> {
        // quick-xml already refuses unmatched end tags; this keeps a bug there from
        // becoming a panic here.
        let frame = self
            .stack
            .pop()
            .ok_or_else(|| CdrError::Xml("end tag without a start tag".to_owned()))?;
        // A capturing element that held elements has no text value: the JSON parser reads
        // an object where a string belongs as "" (profile fields) or skips it (times).
        let value = match (frame.role.captures_text(), frame.has_children) {
            (true, false) => Some(std::mem::take(&mut self.text)),
            _ => None,
        };
        match frame.role {
            Role::Direction => {
                self.channel_direction = value.filter(|v| !v.is_empty()).map(|v| decode_value(&v));
            }
            Role::Variable(name) => {
                let variables = self.variables.get_or_insert_with(BTreeMap::new);
                variables.insert(name, decode_value(&value.unwrap_or_default()));
                // Counted after insertion: a repeated name replaces, not adds (as in JSON).
                if variables.len() > self.limits.max_variables {
                    return Err(CdrError::TooMany {
                        what: "variables",
                        limit: self.limits.max_variables,
                    });
                }
            }
            Role::ProfileField(field) => {
                let value = decode_value(&value.unwrap_or_default());
                *field.slot(self.profile()?) = value;
            }
            Role::Time(name) => {
                // Times are epochs, never percent-encoded: kept as written, as in the JSON.
                let times = &mut self.profile()?.times;
                match value {
                    Some(value) => times.insert(name, value),
                    None => times.remove(&name),
                };
            }
            Role::RelatedUuid => {
                self.related_uuid = decode_value(&value.unwrap_or_default());
            }
            Role::RelatedProfile(related) => {
                let uuid = std::mem::take(&mut self.related_uuid);
                let list = related.list(self.profile()?);
                if !uuid.is_empty() && !list.contains(&uuid) {
                    list.push(uuid);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Raw (still escaped) character data. Only the values gridedge keeps are decoded and
    /// copied; other text is just checked for entities, which most of it (numbers, names)
    /// does not even contain.
    fn text(&mut self, raw: &[u8], position: u64) -> Result<(), CdrError> {
        if self.capturing() {
            let text = unescape_lossy(raw, position)?;
            self.text.push_str(&text);
            return Ok(());
        }
        if raw.contains(&b'&') {
            unescape_lossy(raw, position)?;
        }
        self.check_stray_text(raw)
    }

    /// CDATA is literal text: no entities to resolve, otherwise read like any other text
    /// (FreeSWITCH never writes it; other writers might).
    fn cdata(&mut self, data: &[u8]) -> Result<(), CdrError> {
        if self.capturing() {
            self.text.push_str(&String::from_utf8_lossy(data));
            return Ok(());
        }
        self.check_stray_text(data)
    }

    /// Whether text arriving now is a value to keep. Text after a child element is not
    /// (see [`Frame::has_children`]).
    fn capturing(&self) -> bool {
        self.stack
            .last()
            .is_some_and(|frame| frame.role.captures_text() && !frame.has_children)
    }

    /// Text that is not a kept value: whitespace between elements and text in parts gridedge
    /// does not read pass; text where only elements belong is refused.
    fn check_stray_text(&self, text: &[u8]) -> Result<(), CdrError> {
        if text.trim_ascii().is_empty() {
            return Ok(());
        }
        match self.stack.last() {
            // The XML form of JSON `"variables": "..."`.
            Some(Frame {
                role: Role::Variables,
                ..
            }) => Err(CdrError::WrongType {
                field: "variables",
                expected: "child elements",
            }),
            None => Err(CdrError::Xml("text outside the root element".to_owned())),
            Some(_) => Ok(()),
        }
    }

    fn finish(self) -> Result<RawCdr, CdrError> {
        if !self.stack.is_empty() {
            return Err(CdrError::Xml(format!(
                "document ends with {} element(s) still open",
                self.stack.len()
            )));
        }
        if !self.root_seen {
            return Err(CdrError::Xml("no root element".to_owned()));
        }
        let variables = self.variables.ok_or(CdrError::Missing("variables"))?;
        Ok(RawCdr {
            format: CdrFormat::Xml,
            core_uuid: self.core_uuid,
            switchname: self.switchname,
            channel_direction: self.channel_direction,
            variables,
            profiles: self.profiles,
        })
    }
}

/// The attributes gridedge reads: `core-uuid` and `switchname` on `<cdr>`, `name` on
/// `<extension>`.
const KEPT_ATTRIBUTES: [&str; 3] = ["core-uuid", "switchname", "name"];

/// Checks every attribute of `element` (syntax, duplicates, entities) and returns the
/// unescaped values of those in [`KEPT_ATTRIBUTES`]; the rest (`app_data` on every logged
/// application, ...) are checked without being copied.
fn read_attributes(
    element: &BytesStart<'_>,
    position: u64,
) -> Result<Vec<(&'static str, String)>, CdrError> {
    let mut kept = Vec::new();
    // `attributes()` checks for duplicates by default; a repeated attribute is malformed XML.
    for attribute in element.attributes() {
        let attribute = attribute
            .map_err(|e| CdrError::Xml(format!("bad attribute near byte {position}: {e}")))?;
        let value = unescape_lossy(&attribute.value, position)?;
        let key = attribute.key.as_ref();
        if let Some(name) = KEPT_ATTRIBUTES.iter().find(|k| k.as_bytes() == key) {
            kept.push((*name, value.into_owned()));
        }
    }
    Ok(kept)
}

/// Replaces invalid UTF-8 first (lossy, see the module docs), then resolves the predefined
/// entities and character references; any other entity is refused, never expanded.
fn unescape_lossy(raw: &[u8], position: u64) -> Result<Cow<'_, str>, CdrError> {
    let refuse = |e| {
        CdrError::Xml(format!(
            "bad entity or character reference near byte {position}: {e}"
        ))
    };
    match String::from_utf8_lossy(raw) {
        Cow::Borrowed(text) => quick_xml::escape::unescape(text).map_err(refuse),
        Cow::Owned(text) => quick_xml::escape::unescape(&text)
            .map(|unescaped| Cow::Owned(unescaped.into_owned()))
            .map_err(refuse),
    }
}

/// Refuses element names that are empty or hold markup characters (`<<<>` reads as an
/// element named `<<`). quick-xml reads names leniently, and that leniency is kept otherwise:
/// FreeSWITCH names `<variables>` children after the variables verbatim, which can start with
/// a digit or hold characters XML forbids in names, and such CDRs must still be accepted.
fn check_name(name: &[u8], position: u64) -> Result<(), CdrError> {
    if name.is_empty()
        || name
            .iter()
            .any(|b| matches!(b, b'<' | b'>' | b'&' | b'"' | b'\'' | b'='))
    {
        return Err(CdrError::Xml(format!(
            "malformed element name {:?} near byte {position}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

fn xml_error(error: quick_xml::Error, position: u64) -> CdrError {
    CdrError::Xml(format!("{error} at byte {position}"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::raw_cdr::parse_json;
    use super::*;

    const MODERN: &[u8] = fixture!("cdr-inbound-unanswered-subscriber-absent-2019.xml");
    const LEGACY: &[u8] = fixture!("cdr-inbound-answered-bridged-legacy-2008.xml");

    fn parse(text: &[u8]) -> Result<RawCdr, CdrError> {
        parse_xml(text, &CdrLimits::default())
    }

    #[test]
    fn modern_fixture_with_core_uuid_channel_data_and_encoded_values() {
        let cdr = parse(MODERN).unwrap();
        assert_eq!(cdr.format, CdrFormat::Xml);
        assert_eq!(
            cdr.core_uuid.as_deref(),
            Some("1eee52c9-73dd-4a6b-a13e-2bf391021578")
        );
        assert_eq!(cdr.switchname.as_deref(), Some("zhihong"));
        assert_eq!(cdr.channel_direction.as_deref(), Some("inbound"));
        assert_eq!(cdr.uuid(), Some("47e84b8e-95b0-4d09-8339-9fb2a479e3fb"));
        assert_eq!(cdr.var("hangup_cause"), Some("SUBSCRIBER_ABSENT"));
        assert_eq!(cdr.var("originate_failed_cause"), Some("SUBSCRIBER_ABSENT"));
        assert_eq!(cdr.var("hangup_cause_q850"), Some("20"));
        assert_eq!(cdr.var("billsec"), Some("0"));
        assert_eq!(cdr.var("answer_epoch"), Some("1574244030"));
        // Percent-encoded values come out decoded.
        assert_eq!(cdr.var("caller_id"), Some("\"8001\" <8001>"));
        assert_eq!(cdr.var("sip_from_uri"), Some("8001@10.3.1.9"));
        assert_eq!(cdr.var("Event-Date-Local"), Some("2019-11-20 18:00:29"));
        assert_eq!(cdr.var("FreeSWITCH-IPv6"), Some("::1"));
        // Written twice; the (identical) last one is kept.
        assert_eq!(cdr.var("DP_MATCH"), Some("87452174"));
        // call-stats and channel_data children are not variables.
        assert!(!cdr.variables.contains_key("mos"));
        assert!(!cdr.variables.contains_key("state_number"));

        assert_eq!(cdr.profiles.len(), 1);
        let profile = &cdr.profiles[0];
        assert_eq!(profile.extension_name, "Local_Extension");
        assert_eq!(profile.username, "8001");
        assert_eq!(profile.caller_id_name, "8001");
        assert_eq!(profile.caller_id_number, "8001");
        assert_eq!(profile.ani, "8001");
        assert_eq!(profile.destination_number, "87452174");
        assert_eq!(profile.rdnis, "");
        assert_eq!(profile.uuid, "47e84b8e-95b0-4d09-8339-9fb2a479e3fb");
        assert_eq!(profile.chan_name, "sofia/internal/8001@10.3.1.9");
        assert_eq!(profile.network_addr, "172.16.0.6");
        assert_eq!(profile.times.len(), 11);
        assert_eq!(
            profile.times.get("answered_time").map(String::as_str),
            Some("1574244030095179")
        );
        assert_eq!(
            profile.times.get("hangup_time").map(String::as_str),
            Some("1574244030235115")
        );
        assert_eq!(
            profile.times.get("bridged_time").map(String::as_str),
            Some("0")
        );
        assert!(profile.originatees.is_empty());
        assert!(profile.originators.is_empty());
    }

    #[test]
    fn legacy_fixture_without_core_uuid_with_originatee() {
        let cdr = parse(LEGACY).unwrap();
        assert_eq!(cdr.core_uuid, None);
        assert_eq!(cdr.switchname, None);
        assert_eq!(cdr.channel_direction, None);
        assert_eq!(cdr.var("billsec"), Some("36"));
        assert_eq!(cdr.var("duration"), Some("39"));
        assert_eq!(cdr.var("hangup_cause"), Some("NORMAL_CLEARING"));
        assert_eq!(cdr.var("caller_id"), Some("\"Mikey\" <1160>"));
        assert_eq!(
            cdr.var("effective_caller_id_name"),
            Some("Michael S Collins")
        );
        assert_eq!(cdr.var("bridge_channel"), Some("OpenZAP/1:23/5555555555"));
        assert_eq!(
            cdr.var("bridge_uuid"),
            Some("e012ce96-7f9c-4194-87fe-5ba86a3930ca")
        );
        // No `uuid` variable in 2008: the leg's uuid comes from the caller profile.
        assert_eq!(cdr.var("uuid"), None);
        assert_eq!(cdr.uuid(), Some("6f32e2f8-38d1-43a7-b6ea-215bbfe6a314"));

        assert_eq!(cdr.profiles.len(), 1);
        let profile = &cdr.profiles[0];
        assert_eq!(profile.extension_name, "tod_example");
        // The A-leg's own fields, not the originatee's (which has its own uuid, name and
        // destination inside <originatee_caller_profile>).
        assert_eq!(profile.uuid, "6f32e2f8-38d1-43a7-b6ea-215bbfe6a314");
        assert_eq!(profile.caller_id_name, "Mikey");
        assert_eq!(profile.caller_id_number, "1160");
        assert_eq!(profile.destination_number, "95555555555");
        assert_eq!(profile.chan_name, "sofia/internal/1160@192.168.50.229");
        assert_eq!(
            profile.originatees,
            vec!["e012ce96-7f9c-4194-87fe-5ba86a3930ca".to_owned()]
        );
        assert!(profile.originators.is_empty());
        assert_eq!(
            profile.times.get("answered_time").map(String::as_str),
            Some("1217529341528422")
        );
        assert_eq!(profile.times.get("bridged_time"), None);
    }

    #[test]
    fn same_call_as_json_and_xml_gives_the_same_raw_cdr() {
        let json = br#"{
            "core-uuid": "0c9b1a52-7e11-4c2b-9a3e-5b1f0d2c3e4f",
            "switchname": "edge%2Dfs1",
            "channel_data": {"direction": "inbound", "state": "CS_REPORTING"},
            "variables": {
                "uuid": "bbbb-0002",
                "caller_id": "%221001%22%20%3C1001%3E",
                "plain_caller_id": "\"1001\" <1001>",
                "amp": "a&b",
                "spaced": "  two  ",
                "empty": "",
                "fifty": "50%zz",
                "letter": "A",
                "billsec": "7"
            },
            "callflow": [
                {
                    "dialplan": "XML",
                    "profile_index": "2",
                    "extension": {"name": "queue%20entry", "number": "2000"},
                    "caller_profile": {
                        "username": "1001",
                        "caller_id_name": "Alice%20A",
                        "caller_id_number": "1001",
                        "ani": "1001",
                        "destination_number": "2000",
                        "rdnis": "",
                        "uuid": "bbbb-0002",
                        "chan_name": "sofia/internal/1001@10.0.0.5",
                        "network_addr": "10.0.0.5",
                        "context": "default",
                        "originatee": {"originatee_caller_profiles": [
                            {"uuid": "cccc-0003", "caller_id_name": "Bob"},
                            {"uuid": "dddd-0004"},
                            {"uuid": "cccc-0003"}
                        ]}
                    },
                    "times": {"created_time": "1700000000000001", "answered_time": "0"}
                },
                {
                    "caller_profile": {
                        "username": "1001",
                        "destination_number": "1999",
                        "uuid": "bbbb-0002",
                        "originator": {"originator_caller_profiles": {"uuid": "aaaa-0001"}}
                    },
                    "times": {"created_time": "1700000000000000", "transfer_time": "1700000000000001"}
                }
            ]
        }"#;
        let xml = br#"<?xml version="1.0"?>
<cdr core-uuid="0c9b1a52-7e11-4c2b-9a3e-5b1f0d2c3e4f" switchname="edge%2Dfs1">
  <channel_data><state>CS_REPORTING</state><direction>inbound</direction></channel_data>
  <call-stats><audio><inbound><mos>4.50</mos></inbound></audio></call-stats>
  <variables>
    <uuid>bbbb-0002</uuid>
    <caller_id>%221001%22%20%3C1001%3E</caller_id>
    <plain_caller_id>&quot;1001&quot; &lt;1001&gt;</plain_caller_id>
    <amp>a&amp;b</amp>
    <spaced>  two  </spaced>
    <empty/>
    <fifty>50%zz</fifty>
    <letter>&#x41;</letter>
    <billsec><![CDATA[7]]></billsec>
  </variables>
  <app_log><application app_name="answer" app_data="" app_stamp="1"/></app_log>
  <callflow dialplan="XML" unique-id="bbbb-0002" profile_index="2">
    <extension name="queue%20entry" number="2000">
      <application app_name="bridge" app_data="user/2000"/>
    </extension>
    <caller_profile>
      <username>1001</username>
      <dialplan>XML</dialplan>
      <caller_id_name>Alice%20A</caller_id_name>
      <caller_id_number>1001</caller_id_number>
      <ani>1001</ani>
      <destination_number>2000</destination_number>
      <rdnis></rdnis>
      <uuid>bbbb-0002</uuid>
      <chan_name>sofia/internal/1001@10.0.0.5</chan_name>
      <network_addr>10.0.0.5</network_addr>
      <context>default</context>
      <originatee>
        <originatee_caller_profile><uuid>cccc-0003</uuid><caller_id_name>Bob</caller_id_name></originatee_caller_profile>
        <originatee_caller_profile><uuid>dddd-0004</uuid></originatee_caller_profile>
        <originatee_caller_profile><uuid>cccc-0003</uuid></originatee_caller_profile>
      </originatee>
    </caller_profile>
    <times><created_time>1700000000000001</created_time><answered_time>0</answered_time></times>
  </callflow>
  <callflow dialplan="XML" profile_index="1">
    <caller_profile>
      <username>1001</username>
      <destination_number>1999</destination_number>
      <uuid>bbbb-0002</uuid>
      <originator><originator_caller_profile><uuid>aaaa-0001</uuid></originator_caller_profile></originator>
    </caller_profile>
    <times><created_time>1700000000000000</created_time><transfer_time>1700000000000001</transfer_time></times>
  </callflow>
</cdr>"#;
        let limits = CdrLimits::default();
        let from_json = parse_json(json, &limits).unwrap();
        let from_xml = parse_xml(xml, &limits).unwrap();
        assert_eq!(from_xml.format, CdrFormat::Xml);
        assert_eq!(
            RawCdr {
                format: CdrFormat::Json,
                ..from_xml.clone()
            },
            from_json
        );
        // Spot checks, so an equal-but-empty result cannot pass.
        assert_eq!(from_xml.switchname.as_deref(), Some("edge-fs1"));
        assert_eq!(from_xml.var("plain_caller_id"), Some("\"1001\" <1001>"));
        assert_eq!(from_xml.var("spaced"), Some("  two  "));
        assert_eq!(from_xml.profiles.len(), 2);
        assert_eq!(from_xml.profiles[0].extension_name, "queue entry");
        assert_eq!(
            from_xml.profiles[0].originatees,
            vec!["cccc-0003".to_owned(), "dddd-0004".to_owned()]
        );
        assert_eq!(
            from_xml.profiles[1].originators,
            vec!["aaaa-0001".to_owned()]
        );
    }

    #[test]
    fn size_and_emptiness_are_checked_first() {
        let limits = CdrLimits::default();
        let big = vec![b' '; limits.max_bytes + 1];
        assert_eq!(
            parse_xml(&big, &limits),
            Err(CdrError::TooLarge {
                limit: limits.max_bytes
            })
        );
        assert_eq!(parse(b""), Err(CdrError::Empty));
        assert_eq!(parse(b" \r\n\t "), Err(CdrError::Empty));
    }

    #[test]
    fn malformed_xml_is_refused_as_xml() {
        for bad in [
            &b"<cdr><variables>"[..],
            b"<cdr><variables></variables>",
            b"<cdr><variables></cdr>",
            b"<cdr><variables><a>1</b></variables></cdr>",
            b"</cdr>",
            b"<cdr><variables><a>&bogus;</a></variables></cdr>",
            b"<cdr><variables><a>&#xD800;</a></variables></cdr>",
            b"<cdr><variables><a>&amp</a></variables></cdr>",
            b"<cdr a=\"&nope;\"><variables/></cdr>",
            b"<cdr a=\"1\" a=\"2\"><variables/></cdr>",
            b"<cdr a=1><variables/></cdr>",
            b"<cdr><variables/></cdr>trailing",
            b"<cdr><variables/></cdr><cdr><variables/></cdr>",
            b"garbage<cdr><variables/></cdr>",
            b"\x00\x01\x02 not xml at all",
            b"<?xml version=\"1.0\"?>",
            b"<!-- only a comment -->",
            b"<cdr><variables/><!-- a -- b --></cdr>",
            b"<cdr><variables",
            b"<<<>>>",
            b"<![CDATA[x]]><cdr><variables/></cdr>",
            b"<cdr><variables><></></variables></cdr>",
            b"<cdr><variables><a=b>1</a=b></variables></cdr>",
        ] {
            let result = parse(bad);
            assert!(
                matches!(result, Err(CdrError::Xml(_))),
                "{:?} gave {result:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn wrong_shapes_are_refused_with_the_field() {
        assert_eq!(
            parse(b"<json><variables/></json>"),
            Err(CdrError::WrongType {
                field: "document",
                expected: "<cdr> root element"
            })
        );
        assert_eq!(
            parse(b"<cdr core-uuid=\"x\"/>"),
            Err(CdrError::Missing("variables"))
        );
        assert_eq!(
            parse(b"<cdr><channel_data><direction>in</direction></channel_data></cdr>"),
            Err(CdrError::Missing("variables"))
        );
        assert_eq!(
            parse(b"<cdr><variables><a><b>1</b></a></variables></cdr>"),
            Err(CdrError::WrongType {
                field: "variables.*",
                expected: "string"
            })
        );
        assert_eq!(
            parse(b"<cdr><variables>text</variables></cdr>"),
            Err(CdrError::WrongType {
                field: "variables",
                expected: "child elements"
            })
        );
        assert_eq!(
            parse(
                b"<cdr><channel_data><direction><x/></direction></channel_data><variables/></cdr>"
            ),
            Err(CdrError::WrongType {
                field: "channel_data.direction",
                expected: "string"
            })
        );
    }

    #[test]
    fn nesting_is_bounded_while_streaming() {
        let limits = CdrLimits::default();
        let deep = format!(
            "<cdr><variables/>{}{}</cdr>",
            "<a>".repeat(100_000),
            "</a>".repeat(100_000)
        );
        assert_eq!(
            parse_xml(deep.as_bytes(), &limits),
            Err(CdrError::TooDeep {
                limit: limits.max_depth
            })
        );
        // Never closed: refused at the depth limit, long before the missing end tags.
        let unclosed = format!("<cdr>{}", "<x>".repeat(100_000));
        assert_eq!(
            parse_xml(unclosed.as_bytes(), &limits),
            Err(CdrError::TooDeep {
                limit: limits.max_depth
            })
        );
        // Exactly at the limit is fine: <cdr> is depth 1.
        let tight = CdrLimits {
            max_depth: 3,
            ..limits
        };
        assert!(parse_xml(b"<cdr><variables><a>1</a></variables></cdr>", &tight).is_ok());
        assert_eq!(
            parse_xml(b"<cdr><variables><a><b/></a></variables></cdr>", &tight),
            Err(CdrError::TooDeep { limit: 3 })
        );
    }

    #[test]
    fn variable_and_profile_counts_are_bounded() {
        let limits = CdrLimits {
            max_variables: 2,
            max_profiles: 1,
            ..CdrLimits::default()
        };
        assert_eq!(
            parse_xml(b"<cdr><variables><a/><b/><c/></variables></cdr>", &limits),
            Err(CdrError::TooMany {
                what: "variables",
                limit: 2
            })
        );
        // A repeated name replaces its value, as a repeated JSON key does; it is not counted
        // twice.
        let cdr = parse_xml(
            b"<cdr><variables><a>1</a><a>2</a><a>3</a></variables></cdr>",
            &limits,
        )
        .unwrap();
        assert_eq!(cdr.var("a"), Some("3"));
        assert_eq!(
            parse_xml(b"<cdr><variables/><callflow/><callflow/></cdr>", &limits),
            Err(CdrError::TooMany {
                what: "callflow profiles",
                limit: 1
            })
        );
        assert_eq!(
            parse_xml(b"<cdr><variables/><callflow/></cdr>", &limits)
                .unwrap()
                .profiles
                .len(),
            1
        );
    }

    #[test]
    fn dtd_entities_are_never_expanded() {
        let declared =
            b"<!DOCTYPE cdr [<!ENTITY x \"boom\">]><cdr><variables><a>&x;</a></variables></cdr>";
        assert!(matches!(parse(declared), Err(CdrError::Xml(_))));
        let laughs = br#"<?xml version="1.0"?>
<!DOCTYPE cdr [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
]>
<cdr><variables><a>&lol2;</a></variables></cdr>"#;
        assert!(matches!(parse(laughs), Err(CdrError::Xml(_))));
        // A DOCTYPE that is not used is harmless and skipped.
        let unused =
            b"<!DOCTYPE cdr [<!ENTITY x \"boom\">]><cdr><variables><a>1</a></variables></cdr>";
        assert_eq!(parse(unused).unwrap().var("a"), Some("1"));
    }

    #[test]
    fn non_utf8_text_is_replaced_not_refused() {
        let cdr = parse(b"<cdr switchname=\"fs\xff\"><variables><name>caf\xe9</name><enc>%FF</enc></variables></cdr>")
            .unwrap();
        assert_eq!(cdr.switchname.as_deref(), Some("fs\u{FFFD}"));
        assert_eq!(cdr.var("name"), Some("caf\u{FFFD}"));
        assert_eq!(cdr.var("enc"), Some("\u{FFFD}"));
    }

    #[test]
    fn empty_attributes_and_values_read_as_absent() {
        let cdr = parse(
            b"<cdr core-uuid=\"\" switchname=\"\"><channel_data><direction/></channel_data>\
              <variables><blank></blank></variables></cdr>",
        )
        .unwrap();
        assert_eq!(cdr.core_uuid, None);
        assert_eq!(cdr.switchname, None);
        assert_eq!(cdr.channel_direction, None);
        assert_eq!(cdr.variables.get("blank").map(String::as_str), Some(""));
        assert_eq!(cdr.var("blank"), None);
    }

    /// Length of `doc` up to and including `</cdr>`: every shorter prefix is incomplete.
    fn complete_len(doc: &[u8]) -> usize {
        let end = b"</cdr>";
        doc.windows(end.len())
            .rposition(|w| w == end)
            .expect("fixture ends with </cdr>")
            + end.len()
    }

    #[test]
    fn every_truncation_of_the_fixtures_is_refused_without_panicking() {
        // ~24 000 parses: one thread per fixture keeps the debug-build test short.
        std::thread::scope(|scope| {
            for doc in [MODERN, LEGACY] {
                scope.spawn(move || {
                    let complete = complete_len(doc);
                    for len in 0..complete {
                        let result = parse(&doc[..len]);
                        assert!(result.is_err(), "prefix of {len} bytes parsed: {result:?}");
                    }
                    for len in complete..=doc.len() {
                        assert!(parse(&doc[..len]).is_ok());
                    }
                });
            }
        });
    }

    /// Pieces of CDR markup, so random documents reach deep into the parser rather than
    /// failing at the first byte.
    const SOUP: &[&str] = &[
        "<",
        "</",
        ">",
        "/>",
        "cdr",
        "variables",
        "channel_data",
        "direction",
        "callflow",
        "extension",
        " name=\"x\"",
        "caller_profile",
        "originatee",
        "originatee_caller_profile",
        "uuid",
        "times",
        "a",
        "=\"",
        "\"",
        " ",
        "\n",
        "&amp;",
        "&",
        ";",
        "#x41",
        "%41",
        "<![CDATA[",
        "]]>",
        "<!--",
        "-->",
        "<!DOCTYPE cdr [",
        "]>",
        "<?xml",
        "?>",
        "\u{e9}",
    ];

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn markup_soup_never_panics(
            pieces in proptest::collection::vec(prop::sample::select(SOUP), 0..96),
        ) {
            let _ = parse(pieces.concat().as_bytes());
        }

        #[test]
        fn byte_flips_in_fixtures_never_panic(
            modern in any::<bool>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        ) {
            let mut doc = if modern { MODERN.to_vec() } else { LEGACY.to_vec() };
            for (index, byte) in flips {
                let at = index.index(doc.len());
                doc[at] = byte;
            }
            let _ = parse(&doc);
        }

        #[test]
        fn truncated_and_flipped_fixtures_never_panic(
            cut in any::<prop::sample::Index>(),
            index in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut doc = MODERN[..cut.index(MODERN.len() + 1)].to_vec();
            if !doc.is_empty() {
                let at = index.index(doc.len());
                doc[at] = byte;
            }
            let _ = parse(&doc);
        }
    }
}
