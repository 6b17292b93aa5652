//! From an INVITE body to what gets recorded: which m= lines are taken, on which channel each
//! lands, and who the participants are. Plain SDP and SIPREC (RFC 7866 multipart with
//! rs-metadata) both end up here; the SIP dialog logic in `uas` never looks inside a body.

use std::net::IpAddr;

use crate::media::codec::Codec;
use crate::media::sdp::{self, Offer, SdpError};
use crate::media::siprec::{self, ChannelRole, Metadata, SiprecError};

/// Streams recorded per session: a stereo file has two channels. Further audio lines of an
/// offer (a conference SRC sending every participant apart) are answered with port 0.
pub const MAX_STREAMS: usize = 2;

/// Which side of the call a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Agent,
}

/// One accepted stream: where it arrives and how to decode it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamPlan {
    /// Index of its m= line in the offer.
    pub line: usize,
    pub port: u16,
    pub role: Role,
    pub codec: Codec,
    pub payload_types: Vec<(u8, Codec)>,
    pub dtmf_pt: Option<u8>,
    pub label: Option<String>,
    /// Whether the SRC says it sends on this stream (false on hold: `a=inactive`/`recvonly`).
    pub sending: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Participant {
    pub role: Role,
    pub aor: Option<String>,
    pub name: Option<String>,
}

/// What the index keeps about who was recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionMeta {
    pub siprec: bool,
    pub participants: Vec<Participant>,
    /// The recorded call's identifiers (SIPREC sipSessionID and Call-IDs, or the softswitch's
    /// call uuid from an X-Call-UUID header): how the CDR finds this recording.
    pub call_refs: Vec<String>,
    /// The agent's extension, when one participant is a known extension.
    pub agent: Option<String>,
    pub codec: Option<Codec>,
}

#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    #[error("unsupported body type {0:?} (application/sdp or multipart/mixed expected)")]
    UnsupportedType(String),
    #[error("INVITE without an SDP offer (offerless INVITEs are not supported)")]
    NoOffer,
    #[error("{0}")]
    Sdp(#[from] SdpError),
    #[error("{0}")]
    Siprec(#[from] SiprecError),
}

impl OfferError {
    /// The SIP refusal: 415 for a body we do not read, 488 when nothing can be recorded, 400
    /// for anything malformed.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            OfferError::UnsupportedType(_) => (415, "Unsupported Media Type"),
            OfferError::NoOffer | OfferError::Sdp(SdpError::NotAcceptable) => {
                (488, "Not Acceptable Here")
            }
            _ => (400, "Bad Request"),
        }
    }
}

pub struct ParsedOffer {
    offer: Offer,
    meta: Option<Metadata>,
    opus: bool,
}

fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

impl ParsedOffer {
    pub fn read(
        content_type: Option<&str>,
        body: &[u8],
        opus: bool,
    ) -> Result<ParsedOffer, OfferError> {
        if body.is_empty() {
            return Err(OfferError::NoOffer);
        }
        let ct = content_type.unwrap_or("application/sdp");
        let limits = sdp::Limits::default();
        match media_type(ct).as_str() {
            "application/sdp" => Ok(ParsedOffer {
                offer: sdp::parse_offer(body, &limits)?,
                meta: None,
                opus,
            }),
            "multipart/mixed" => {
                let parts = siprec::split_multipart(ct, body)?;
                let sdp_body = parts.sdp().ok_or(OfferError::NoOffer)?;
                let offer = sdp::parse_offer(sdp_body, &limits)?;
                let meta = match parts.metadata() {
                    Some(xml) => Some(siprec::parse_metadata(xml)?),
                    None => None,
                };
                Ok(ParsedOffer { offer, meta, opus })
            }
            other => Err(OfferError::UnsupportedType(other.to_owned())),
        }
    }

    pub fn line_count(&self) -> usize {
        self.offer.media.len()
    }

    /// The m= lines that need a local port: acceptable audio, at most [`MAX_STREAMS`].
    pub fn wanted_streams(&self) -> Vec<usize> {
        sdp::acceptable(&self.offer, self.opus)
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_some())
            .map(|(i, _)| i)
            .take(MAX_STREAMS)
            .collect()
    }

    /// Builds the answer for `ports` (one per m= line, 0 = refuse) and places each stream on
    /// a side. `from_user` and `is_agent` decide a plain single-stream offer: the sender is
    /// the agent when it is one of our extensions.
    pub fn answer(
        &self,
        ports: &[u16],
        local_ip: IpAddr,
        session_id: u64,
        version: u64,
        from_user: Option<&str>,
        is_agent: &dyn Fn(&str) -> bool,
    ) -> Result<(String, Vec<StreamPlan>, SessionMeta), OfferError> {
        let a = sdp::answer(&self.offer, local_ip, ports, session_id, version, self.opus)?;
        let accepted: Vec<&sdp::AcceptedStream> = a.streams.iter().flatten().collect();
        let labels: Vec<Option<String>> = accepted.iter().map(|s| s.label.clone()).collect();
        let mut meta = SessionMeta {
            siprec: self.meta.is_some(),
            codec: accepted.first().map(|s| s.codec),
            ..SessionMeta::default()
        };
        let roles: Vec<Role> = match &self.meta {
            Some(m) => {
                let roles = siprec::channel_map(m, &labels, |aor| is_agent(aor));
                // RFC 7865 names the recorded call by its SIP session ID (RFC 7989), which
                // the softswitch side also logs; the recording session's own id too.
                meta.call_refs = m
                    .session_id
                    .iter()
                    .map(String::as_str)
                    .chain(m.sip_session_ids())
                    .map(str::to_owned)
                    .collect();
                for p in &m.participants {
                    let role = if p
                        .aor
                        .as_deref()
                        .is_some_and(|a| is_agent(siprec::aor_user(a)))
                    {
                        Role::Agent
                    } else {
                        Role::Customer
                    };
                    if role == Role::Agent && meta.agent.is_none() {
                        meta.agent = p.aor.as_deref().map(|a| siprec::aor_user(a).to_owned());
                    }
                    meta.participants.push(Participant {
                        role,
                        aor: p.aor.clone(),
                        name: p.name.clone(),
                    });
                }
                roles
                    .into_iter()
                    .map(|r| match r {
                        ChannelRole::Agent => Role::Agent,
                        ChannelRole::Customer => Role::Customer,
                    })
                    .collect()
            }
            None if accepted.len() == 1 => {
                let agent = from_user.is_some_and(is_agent);
                if agent {
                    meta.agent = from_user.map(str::to_owned);
                }
                vec![if agent { Role::Agent } else { Role::Customer }]
            }
            // A plain two-stream offer: the convention FreeSWITCH and rtpengine forks follow,
            // caller (customer) first.
            None => (0..accepted.len())
                .map(|i| if i == 0 { Role::Customer } else { Role::Agent })
                .collect(),
        };
        let plans = accepted
            .iter()
            .zip(roles.into_iter().chain(std::iter::repeat(Role::Customer)))
            .map(|(s, role)| StreamPlan {
                line: s.index,
                port: s.local_port,
                role,
                codec: s.codec,
                payload_types: s.codec_pt.clone(),
                dtmf_pt: s.dtmf_pt,
                label: s.label.clone(),
                sending: s.direction != sdp::Direction::Inactive,
            })
            .collect();
        Ok((a.sdp, plans, meta))
    }
}
