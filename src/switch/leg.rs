//! One call leg, normalized: what the CDR builder needs to know about a FreeSWITCH channel,
//! whichever source described it (a mod_json_cdr post, a mod_xml_cdr file, or the ESL
//! `CHANNEL_HANGUP_COMPLETE` event), all read through a [`CdrView`]: a parsed [`RawCdr`], or
//! the event itself through [`HangupCdr`].
//!
//! Everything here is FreeSWITCH vocabulary turned into domain terms; nothing knows about the
//! grid's field names (that is `cdr` and `grid`).

use serde::{Deserialize, Serialize};

use super::esl::EslEvent;
use super::raw_cdr::{CallerProfile, CdrView, HangupCdr, RawCdr};

/// A leg's identity: FreeSWITCH uuids are unique per core, and one gridedge may face several
/// cores over time (a reinstall changes the core uuid), so the pair is the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LegKey {
    /// `core-uuid`; empty for CDRs written before FreeSWITCH had one.
    pub core_uuid: String,
    pub uuid: String,
}

/// Which way the channel points from FreeSWITCH's side: `inbound` legs were sent to
/// FreeSWITCH (a phone or a gateway calling in), `outbound` legs FreeSWITCH placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegDirection {
    Inbound,
    Outbound,
}

/// Who ended the leg, from `sip_hangup_disposition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HangupBy {
    /// The party at the far end of this leg (recv_bye, recv_cancel, recv_refuse).
    FarEnd,
    /// FreeSWITCH ended this leg (send_bye, send_cancel, send_refuse): because the other leg
    /// hung up, or an application or timer did.
    Switch,
    Unknown,
}

/// The leg's hang-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hangup {
    /// FreeSWITCH's cause name, e.g. `NORMAL_CLEARING`, `ORIGINATOR_CANCEL`.
    pub cause: String,
    pub q850: Option<u16>,
    /// The final SIP status of this leg when it was a SIP leg (`sip_term_status`, else the
    /// `sip:NNN` of `proto_specific_hangup_cause`, else `sip_invite_failure_status`).
    pub sip_status: Option<u16>,
    pub by: HangupBy,
}

/// Times of the leg in Unix milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegTimes {
    pub created_ms: u64,
    /// First 180 or 183 (the phone or far end started ringing).
    pub ringing_ms: Option<u64>,
    pub answered_ms: Option<u64>,
    pub bridged_ms: Option<u64>,
    pub ended_ms: u64,
    /// mod_callcenter: when the caller joined the queue, was answered by an agent, and left
    /// the queue without one (cancelled or terminated).
    pub queue_joined_ms: Option<u64>,
    pub queue_answered_ms: Option<u64>,
    pub queue_left_ms: Option<u64>,
}

/// One normalized leg.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    pub key: LegKey,
    /// The uuid of the call's first leg (the originator); every leg of a call shares it.
    pub call_uuid: String,
    /// uuids of other legs this one names (originated or bridged legs, its originator).
    pub related: Vec<String>,
    pub direction: LegDirection,
    pub sip_call_id: Option<String>,
    /// Caller-ID number and name presented on this leg.
    pub caller_number: String,
    pub caller_name: String,
    /// The number this leg was dialled to (or dialled, for an inbound leg).
    pub destination: String,
    /// The number first dialled, before any transfer or forwarding (the oldest profile's
    /// destination).
    pub original_called: String,
    /// The registered user on the phone side of this leg, if it is a phone leg: for an
    /// inbound leg the authenticated or From user, for an outbound leg the dialled user.
    pub phone_user: Option<String>,
    /// The SIP gateway a trunk leg went through.
    pub gateway: Option<String>,
    /// mod_callcenter queue and agent.
    pub queue: Option<String>,
    pub cc_agent: Option<String>,
    pub times: LegTimes,
    pub hangup: Hangup,
    /// A recording id or path, from the first configured variable that is set.
    pub recording: Option<String>,
    /// gridedge's own channel variables (set by the dialer or dialplan): outbound task code and
    /// service type override.
    pub task_code: Option<String>,
    pub service: Option<String>,
    /// The channel was transferred into this call (`transfer_history` / `transfer_source`).
    pub transferred: bool,
}

/// Why a document could not be read as a leg.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegError {
    #[error("the CDR has no leg uuid")]
    NoUuid,
    #[error("the CDR has no usable start time")]
    NoStartTime,
    #[error("the CDR has no end time")]
    NoEndTime,
    #[error("the CDR's uuid {0:?} is not a plausible channel uuid")]
    BadUuid(String),
}

/// Which channel variables carry what gridedge needs beyond FreeSWITCH's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegVariables {
    /// Checked in order; the first non-empty wins.
    pub recording: Vec<String>,
    pub task_code: String,
    pub service: String,
    pub gateway: Vec<String>,
}

impl Default for LegVariables {
    fn default() -> Self {
        Self {
            recording: vec![
                "gridedge_recording_id".into(),
                "record_path".into(),
                "recording_file".into(),
            ],
            task_code: "gridedge_task".into(),
            service: "gridedge_service".into(),
            gateway: vec!["sip_gateway_name".into(), "sip_h_X-gateway".into()],
        }
    }
}

impl Leg {
    /// Interprets a CDR document. Refuses documents without an identity or times, since a
    /// record built from them would be wrong rather than partial.
    pub fn from_raw(raw: &RawCdr, vars: &LegVariables) -> Result<Leg, LegError> {
        Self::from_view(raw, vars)
    }

    /// Interprets a `CHANNEL_HANGUP_COMPLETE` event: the same leg as
    /// `Leg::from_raw(&RawCdr::from_hangup_event(event), vars)`, read from the event in place.
    pub fn from_hangup_event(event: &EslEvent, vars: &LegVariables) -> Result<Leg, LegError> {
        Self::from_view(&HangupCdr::new(event), vars)
    }

    /// Interprets a CDR however it is held (see [`CdrView`]).
    pub fn from_view<V: CdrView + ?Sized>(raw: &V, vars: &LegVariables) -> Result<Leg, LegError> {
        let uuid = raw.uuid().ok_or(LegError::NoUuid)?.to_owned();
        if !plausible_uuid(&uuid) {
            return Err(LegError::BadUuid(uuid.chars().take(80).collect()));
        }
        let newest = raw.profiles().first();
        let oldest = raw.profiles().last();
        let profile_time = |name: &str| raw.profile_time(name).and_then(micros_to_ms);
        let var_us = |name: &str| raw.var(name).and_then(micros_to_ms);
        let var_s = |name: &str| raw.var(name).and_then(secs_to_ms);
        let created_ms = var_us("start_uepoch")
            .or_else(|| var_s("start_epoch"))
            .or_else(|| profile_time("created_time"))
            .ok_or(LegError::NoStartTime)?;
        let ended_ms = var_us("end_uepoch")
            .or_else(|| var_s("end_epoch"))
            .or_else(|| profile_time("hangup_time"))
            .ok_or(LegError::NoEndTime)?;
        let ringing_ms = [
            var_us("progress_uepoch").or_else(|| profile_time("progress_time")),
            var_us("progress_media_uepoch").or_else(|| profile_time("progress_media_time")),
        ]
        .into_iter()
        .flatten()
        .min();
        // The profile's answered_time first: CDRs from 2008-era FreeSWITCH set answer_uepoch
        // at early media, while answered_time (and billsec) mark the real answer; in current
        // versions the two are equal.
        let answered_ms = profile_time("answered_time")
            .or_else(|| var_us("answer_uepoch"))
            .or_else(|| var_s("answer_epoch"));
        let bridged_ms = var_us("bridge_uepoch")
            .or_else(|| var_s("bridge_epoch"))
            .or_else(|| profile_time("bridged_time"));

        let direction = match raw
            .channel_direction()
            .or_else(|| raw.var("direction"))
            .or_else(|| raw.var("call_direction"))
        {
            Some(d) if d.eq_ignore_ascii_case("outbound") => LegDirection::Outbound,
            _ => LegDirection::Inbound,
        };

        let originator = raw
            .var("originator")
            .or_else(|| raw.var("originating_leg_uuid"))
            .map(str::to_owned)
            .or_else(|| newest.and_then(|p| p.originators.first().cloned()));
        // FreeSWITCH copies `call_uuid` from the originating channel to every leg it places,
        // so a consult or transfer leg placed by an agent leg still names the customer's call;
        // `originator` names only the immediate parent. The key goes into the store, so only
        // plausible uuids are taken.
        let call_uuid = raw
            .var("call_uuid")
            .filter(|u| plausible_uuid(u))
            .map(str::to_owned)
            .or_else(|| originator.clone().filter(|u| plausible_uuid(u)))
            .unwrap_or_else(|| uuid.clone());

        let mut related: Vec<String> = Vec::new();
        let mut relate = |u: &str| {
            let u = u.trim();
            if !u.is_empty() && u != uuid && !related.iter().any(|r| r == u) && related.len() < 32 {
                related.push(u.to_owned());
            }
        };
        if let Some(o) = &originator {
            relate(o);
        }
        for name in ["bridge_uuid", "last_bridge_to", "originate_signal_bond"] {
            if let Some(v) = raw.var(name) {
                relate(v);
            }
        }
        // `originated_legs` = ARRAY::uuid;name;number|:uuid;name;number
        if let Some(v) = raw.var("originated_legs") {
            for item in v.trim_start_matches("ARRAY::").split("|:") {
                relate(item.split(';').next().unwrap_or(""));
            }
        }
        for p in raw.profiles() {
            for u in p.originatees.iter().chain(p.originators.iter()) {
                relate(u);
            }
        }

        // The caller profile is what this leg presented. `effective_caller_id_*` is what the
        // dialplan set for the legs this one calls out on, so it is only a fallback. An
        // originated leg with `channel_cid_flipped` shows the callee in its profile; its
        // caller is the origination caller-ID.
        let flipped = raw
            .var("channel_cid_flipped")
            .is_some_and(|v| v == "yes" || v == "true");
        let profile_str = |f: fn(&CallerProfile) -> &str| newest.map(f).filter(|s| !s.is_empty());
        let flipped_number = if flipped {
            raw.var("origination_caller_id_number")
                .or_else(|| profile_str(|p| p.ani.as_str()))
        } else {
            None
        };
        let caller_number = flipped_number
            .or_else(|| profile_str(|p| p.caller_id_number.as_str()))
            .or_else(|| raw.var("effective_caller_id_number"))
            .or_else(|| raw.var("caller_id_number"))
            .unwrap_or("")
            .to_owned();
        let flipped_name = if flipped {
            raw.var("origination_caller_id_name")
        } else {
            None
        };
        let caller_name = flipped_name
            .or_else(|| profile_str(|p| p.caller_id_name.as_str()))
            .or_else(|| raw.var("effective_caller_id_name"))
            .unwrap_or("")
            .to_owned();
        let destination = newest
            .map(|p| p.destination_number.as_str())
            .filter(|s| !s.is_empty())
            .or_else(|| raw.var("destination_number"))
            .or_else(|| raw.var("sip_req_user"))
            .or_else(|| raw.var("sip_to_user"))
            .unwrap_or("")
            .to_owned();
        let original_called = oldest
            .map(|p| p.destination_number.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| destination.clone());

        let gateway = vars
            .gateway
            .iter()
            .find_map(|n| raw.var(n))
            .map(str::to_owned);
        let phone_user = if gateway.is_some() {
            None
        } else {
            match direction {
                LegDirection::Inbound => raw
                    .var("sip_auth_username")
                    .or_else(|| raw.var("user_name"))
                    .or_else(|| raw.var("sip_from_user"))
                    .or_else(|| {
                        newest
                            .map(|p| p.username.as_str())
                            .filter(|s| !s.is_empty())
                    }),
                LegDirection::Outbound => raw
                    .var("dialed_user")
                    .or_else(|| raw.var("sip_to_user"))
                    .or_else(|| raw.var("callee_id_number")),
            }
            .map(str::to_owned)
        };

        let queue_joined_ms = raw.var("cc_queue_joined_epoch").and_then(secs_to_ms);
        let queue_answered_ms = raw.var("cc_queue_answered_epoch").and_then(secs_to_ms);
        let queue_left_ms = raw
            .var("cc_queue_canceled_epoch")
            .or_else(|| raw.var("cc_queue_terminated_epoch"))
            .and_then(secs_to_ms);

        let q850 = raw
            .var("hangup_cause_q850")
            .and_then(|v| v.trim().parse::<u16>().ok());
        let sip_status = raw
            .var("sip_term_status")
            .and_then(|v| v.trim().parse::<u16>().ok())
            .or_else(|| {
                raw.var("proto_specific_hangup_cause")
                    .and_then(|v| v.strip_prefix("sip:"))
                    .and_then(|v| v.trim().parse::<u16>().ok())
            })
            // A leg that never answered records its final response here.
            .or_else(|| {
                raw.var("sip_invite_failure_status")
                    .and_then(|v| v.trim().parse::<u16>().ok())
            })
            .filter(|s| (100..700).contains(s));
        let by = match raw.var("sip_hangup_disposition") {
            Some(d) if d.starts_with("recv_") => HangupBy::FarEnd,
            Some(d) if d.starts_with("send_") => HangupBy::Switch,
            _ => HangupBy::Unknown,
        };
        let cause = raw
            .var("hangup_cause")
            .or_else(|| raw.var("originate_disposition"))
            .unwrap_or("")
            .to_owned();

        Ok(Leg {
            key: LegKey {
                core_uuid: raw.core_uuid().unwrap_or_default().to_owned(),
                uuid,
            },
            call_uuid,
            related,
            direction,
            sip_call_id: raw.var("sip_call_id").map(str::to_owned),
            caller_number,
            caller_name,
            destination,
            original_called,
            phone_user,
            gateway,
            queue: raw.var("cc_queue").map(str::to_owned),
            cc_agent: raw.var("cc_agent").map(str::to_owned),
            times: LegTimes {
                created_ms,
                ringing_ms,
                answered_ms,
                bridged_ms,
                ended_ms: ended_ms.max(created_ms),
                queue_joined_ms,
                queue_answered_ms,
                queue_left_ms,
            },
            hangup: Hangup {
                cause,
                q850,
                sip_status,
                by,
            },
            recording: vars
                .recording
                .iter()
                .find_map(|n| raw.var(n))
                .map(str::to_owned),
            task_code: raw.var(&vars.task_code).map(str::to_owned),
            service: raw.var(&vars.service).map(str::to_owned),
            transferred: raw.var("transfer_history").is_some()
                || raw.var("transfer_source").is_some(),
        })
    }

    pub fn answered(&self) -> bool {
        self.times.answered_ms.is_some()
    }
}

/// A channel uuid: a short token of letters, digits and dashes.
fn plausible_uuid(u: &str) -> bool {
    (1..=64).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// FreeSWITCH writes `0` for "never"; anything non-numeric is treated the same.
fn micros_to_ms(v: &str) -> Option<u64> {
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|&us| us > 0)
        .map(|us| us / 1000)
}

fn secs_to_ms(v: &str) -> Option<u64> {
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|&s| s > 0)
        .and_then(|s| s.checked_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switch::raw_cdr::{parse_json, CdrLimits};

    fn leg(bytes: &[u8]) -> Leg {
        let raw = parse_json(bytes, &CdrLimits::default()).unwrap();
        Leg::from_raw(&raw, &LegVariables::default()).unwrap()
    }

    #[test]
    fn the_cancelled_pair_shares_one_call_uuid() {
        let a = leg(include_bytes!(
            "../../tests/fixtures/freeswitch/cdr-inbound-cancelled-aleg-2025.json"
        ));
        let b = leg(include_bytes!(
            "../../tests/fixtures/freeswitch/cdr-outbound-cancelled-bleg-2025.json"
        ));
        assert_eq!(a.call_uuid, "51156b0b-f91b-4fd3-9c8f-15226f6098be");
        assert_eq!(b.call_uuid, a.call_uuid);
        assert!(a.related.contains(&b.key.uuid));
        assert!(b.related.contains(&a.key.uuid));
        assert_eq!(a.direction, LegDirection::Inbound);
        assert_eq!(b.direction, LegDirection::Outbound);
        assert_eq!(a.phone_user.as_deref(), Some("1001"));
        assert_eq!(b.phone_user.as_deref(), Some("1003"));
        assert_eq!(a.hangup.by, HangupBy::FarEnd);
        assert_eq!(b.hangup.by, HangupBy::Switch);
        assert_eq!(a.hangup.sip_status, Some(487));
        assert!(!a.answered());
    }

    #[test]
    fn refuses_documents_without_identity_or_times() {
        let limits = CdrLimits::default();
        let vars = LegVariables::default();
        let raw = parse_json(br#"{"variables":{"start_epoch":"1"}}"#, &limits).unwrap();
        assert_eq!(Leg::from_raw(&raw, &vars), Err(LegError::NoUuid));
        let raw = parse_json(br#"{"variables":{"uuid":"a-1"}}"#, &limits).unwrap();
        assert_eq!(Leg::from_raw(&raw, &vars), Err(LegError::NoStartTime));
        let raw = parse_json(
            br#"{"variables":{"uuid":"a-1","start_epoch":"5"}}"#,
            &limits,
        )
        .unwrap();
        assert_eq!(Leg::from_raw(&raw, &vars), Err(LegError::NoEndTime));
        let raw = parse_json(
            br#"{"variables":{"uuid":"../../etc","start_epoch":"5","end_epoch":"6"}}"#,
            &limits,
        )
        .unwrap();
        assert!(matches!(
            Leg::from_raw(&raw, &vars),
            Err(LegError::BadUuid(_))
        ));
    }
}
