//! The CDR builder: the legs of one finished call in, its grid call records out. Sans-IO and
//! deterministic: the same legs and directory always give the same records, stream numbers
//! included, so a rebuild after a crash produces duplicates the grid can recognise.
//!
//! How legs become segments (seed 000 话单推送, one record per segment):
//!
//! | Segment | When | Times |
//! |---|---|---|
//! | IVR (`TYPE` 1) | the switch itself answered an inbound caller at least `ivr_min_ms` before handing it on (queue join, agent leg, bridge) | leg created → answer → hand-off |
//! | Queue (`TYPE` 0) | a leg carries `cc_queue` (mod_callcenter) | queue join → agent answer or leaving the queue |
//! | Agent (`TYPE` 2) | every leg whose phone side is an agent's extension | agent leg created → ringing → answer → end |
//! | Routing (`TYPE` 0) | a call with none of the above | first leg created → end of call |
//!
//! The call's first leg is the one whose uuid is the call uuid. When it is missing (its
//! document never came and ESL lost it), the earliest leg stands in: a leg FreeSWITCH placed to
//! a phone then means someone called that phone.
//!
//! - `DIRECTION`: outbound when the first leg is an agent's own phone or a leg FreeSWITCH
//!   originated (the dialer), else inbound.
//! - `CALLTYPE`: internal when no leg went through a gateway and every party (each leg's phone
//!   user, and the callee of a one-leg call or the caller of a call missing its first leg) is a
//!   directory extension.
//! - `SERVICE`: the `gridedge_service` variable through `[cdr.mapping.services]` when set; else
//!   5 for internal calls, 0 inbound, 3 an agent calling out, `originated_service` for other
//!   originated calls. Transfers are not guessed (dialplans transfer internally all the time).
//! - `CALLRESCODE`, agent segments: answered and the agent's phone sent the BYE → 3, answered
//!   otherwise → 1; an unanswered agent leg → 4, or 1 when the caller cancelled it
//!   (`ORIGINATOR_CANCEL`); an agent's own call the customer did not answer → 2.
//! - `CALLRESCODE`, routing records: answered and the customer hung up (or nobody knows who
//!   did) → 1, the callee did → 3 inbound / 0 outbound; unanswered outbound → 2; unanswered
//!   inbound: the caller gave up → 1, a placed leg was not answered → 4, routing refused → 0.
//! - Connected (`ANSWERFLAG`, `ANSWERTIME`) means the far party answered, never the switch
//!   answering the caller itself.
//! - `ROUTERESCODE`: 10 when a queue selected an agent, 11 when the caller left the queue, 1
//!   when the call was sent to an extension (answered or not), 0 when routing refused it; empty
//!   for outbound calls. `ROUTEENDCAUSE`: −1 when connected, 0 when the caller hung up first,
//!   else the Q.850 cause.

use sha2::{Digest, Sha256};

use super::mapping::CdrMapping;
use super::record::{
    AgentRef, AnswerFlag, CallRecord, CallResult, CallScope, RouteResult, Segment,
};
use crate::events::CallDirection;
use crate::switch::leg::{HangupBy, Leg, LegDirection};

/// What the builder needs from the directory, looked up when the call closes.
pub trait CdrDirectory {
    /// The agent currently on this extension, if the extension is an agent seat.
    fn agent_at(&self, extension: &str) -> Option<AgentRef>;
    /// Whether the number is one of our extensions (agent or not).
    fn is_extension(&self, user: &str) -> bool;
    /// A skill group's id and name, by id or name.
    fn skill_group(&self, key: &str) -> Option<(String, String)>;
    /// The first skill group of an agent, for agent segments outside any queue.
    fn agent_skill_group(&self, extension: &str) -> Option<(String, String)>;
}

/// The call's session id: 63 bits of SHA-256 over the core and call uuids, in decimal.
pub fn session_id(core_uuid: &str, call_uuid: &str) -> String {
    let mut h = Sha256::new();
    h.update(core_uuid.as_bytes());
    h.update([0]);
    h.update(call_uuid.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(b) & (u64::MAX >> 1)).to_string()
}

fn secs_between(from: u64, to: u64) -> u64 {
    // Whole seconds, rounded to nearest: FreeSWITCH's own billsec truncates the µs epochs, which
    // makes the parts of a record disagree with its total by a second now and then.
    to.saturating_sub(from).saturating_add(500) / 1000
}

fn cc_agent_extension(agent: &str) -> &str {
    agent.split('@').next().unwrap_or(agent)
}

/// The agent on this leg, if any: mod_callcenter's `cc_agent` or the phone-side user.
fn agent_of(leg: &Leg, dir: &dyn CdrDirectory) -> Option<AgentRef> {
    if let Some(agent) = leg
        .cc_agent
        .as_deref()
        .and_then(|a| dir.agent_at(cc_agent_extension(a)))
    {
        // cc_agent is set on the caller's leg too; only the leg that rang the agent counts.
        if leg.phone_user.as_deref() == Some(agent.extension.as_str()) {
            return Some(agent);
        }
    }
    leg.phone_user.as_deref().and_then(|u| dir.agent_at(u))
}

/// Builds every record of one call. `legs` are all the call's legs (any order); an empty
/// slice gives no records.
pub fn build_call(legs: &[Leg], dir: &dyn CdrDirectory, map: &CdrMapping) -> Vec<CallRecord> {
    let mut legs: Vec<&Leg> = legs.iter().collect();
    legs.sort_by(|a, b| (a.times.created_ms, &a.key.uuid).cmp(&(b.times.created_ms, &b.key.uuid)));
    let present = legs.iter().copied().find(|l| l.key.uuid == l.call_uuid);
    // Without its first leg (lost, or its document never came) the call is judged from the
    // earliest leg left: a leg FreeSWITCH placed to a phone means someone called that phone.
    let first_missing = present.is_none();
    let Some(first) = present.or_else(|| legs.first().copied()) else {
        return Vec::new();
    };
    let agents: Vec<(&Leg, AgentRef)> = legs
        .iter()
        .filter_map(|l| agent_of(l, dir).map(|a| (*l, a)))
        .collect();
    let first_is_agent = !first_missing && agents.iter().any(|(l, _)| l.key == first.key);

    let direction = if first_missing {
        if first.phone_user.is_some() {
            CallDirection::Inbound
        } else {
            CallDirection::Outbound
        }
    } else if first_is_agent || first.direction == LegDirection::Outbound {
        CallDirection::Outbound
    } else {
        CallDirection::Inbound
    };
    let is_internal_party = |l: &Leg| {
        l.gateway.is_none() && l.phone_user.as_deref().is_some_and(|u| dir.is_extension(u))
    };
    // The party no leg of ours describes: the caller of a call whose first leg is missing,
    // or the callee of a one-leg call.
    let far_is_extension = if first_missing {
        dir.is_extension(&first.caller_number)
    } else if legs.len() == 1 {
        dir.is_extension(&first.destination)
    } else {
        true
    };
    let scope = if far_is_extension && legs.iter().all(|l| is_internal_party(l)) {
        CallScope::Internal
    } else {
        CallScope::External
    };
    // The customer's leg: inbound, the first leg; outbound, the first leg that is not an
    // agent phone (the dialer's originated leg or the agent's B-leg to the gateway).
    let customer: &Leg = match direction {
        CallDirection::Inbound => first,
        CallDirection::Outbound => legs
            .iter()
            .copied()
            .find(|l| !agents.iter().any(|(a, _)| a.key == l.key))
            .unwrap_or(first),
    };
    let user_number = match direction {
        CallDirection::Inbound => first.caller_number.clone(),
        CallDirection::Outbound => customer.destination.clone(),
    };
    let dialer_service = legs
        .iter()
        .find_map(|l| l.service.as_deref())
        .and_then(|s| map.service(s));
    // Transfers are not guessed from `transfer_history`: dialplans transfer internally all the
    // time. A transfer-in is marked by the dialplan setting gridedge_service=transfer_in.
    let service = dialer_service.unwrap_or(match direction {
        _ if scope == CallScope::Internal => 5,
        CallDirection::Inbound => 0,
        CallDirection::Outbound if first_is_agent => 3,
        CallDirection::Outbound => map.originated_service,
    });
    let session = session_id(&first.key.core_uuid, &first.call_uuid);
    let session_stop_ms = legs.iter().map(|l| l.times.ended_ms).max().unwrap_or(0);
    let recording = legs.iter().find_map(|l| l.recording.clone());

    let queue_leg = legs.iter().copied().find(|l| l.queue.is_some());
    let queue_group = queue_leg.and_then(|l| {
        let q = l.queue.as_deref().unwrap_or("");
        let key = map
            .queues
            .get(q)
            .map(String::as_str)
            .unwrap_or_else(|| q.split('@').next().unwrap_or(q));
        dir.skill_group(key)
            .or_else(|| Some((key.to_owned(), String::new())))
    });

    let base = |segment: Segment| CallRecord {
        stream_number: String::new(),
        session_id: session.clone(),
        segment,
        direction,
        service,
        scope,
        user_number: user_number.clone(),
        area_code: map.area_code(&user_number),
        service_id: String::new(),
        service_name: String::new(),
        detail: customer.hangup.cause.clone(),
        agent: None,
        start_ms: 0,
        ring_ms: None,
        answer_ms: None,
        end_ms: 0,
        session_stop_ms,
        ring_secs: 0,
        answer_secs: 0,
        queue_secs: 0,
        duration_secs: 0,
        answer_flag: AnswerFlag::NotApplicable,
        result: CallResult::None,
        end_cause: 0,
        route_result: None,
        route_end_cause: -1,
        original_called: first.original_called.clone(),
        recording: recording.clone(),
        org_no: String::new(),
        org_name: String::new(),
        current_call_type: String::new(),
        call_track: if agents.is_empty() {
            map.call_track_other.clone()
        } else {
            map.call_track_agent.clone()
        },
        core_uuid: first.key.core_uuid.clone(),
        call_uuid: first.call_uuid.clone(),
        leg_uuid: first.key.uuid.clone(),
    };
    let mut records = Vec::new();

    // The moment the first leg left the switch's own hands: queue join, an agent leg, a
    // bridge, or its own end.
    let first_agent_created = agents
        .iter()
        .filter(|(l, _)| l.key != first.key)
        .map(|(l, _)| l.times.created_ms)
        .min();
    let handoff_ms = [
        queue_leg.and_then(|l| l.times.queue_joined_ms),
        first_agent_created,
        first.times.bridged_ms,
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(first.times.ended_ms);

    // IVR segment.
    // The switch answered the caller itself (not by bridging) and kept it for a while.
    // When the first leg named legs it placed but neither they nor its bridge time are known
    // (a 2008-era CDR), its answer may have been the bridge: no IVR is claimed.
    let handoff_known =
        first.related.is_empty() || first.times.bridged_ms.is_some() || legs.len() > 1;
    if direction == CallDirection::Inbound && !first_is_agent && !first_missing && handoff_known {
        if let Some(answered) = first.times.answered_ms {
            if handoff_ms.saturating_sub(answered) >= map.ivr_min_ms {
                let ended_here = handoff_ms >= first.times.ended_ms;
                let mut r = base(Segment::Ivr);
                r.start_ms = first.times.created_ms;
                r.ring_ms = first.times.ringing_ms.filter(|&t| t <= answered);
                r.answer_ms = Some(answered);
                r.end_ms = handoff_ms;
                r.ring_secs = r.ring_ms.map_or(0, |ring| secs_between(ring, answered));
                r.answer_secs = secs_between(answered, handoff_ms);
                r.answer_flag = AnswerFlag::Connected;
                r.result = if ended_here {
                    match first.hangup.by {
                        HangupBy::Switch => CallResult::None,
                        _ => CallResult::UserHungUp,
                    }
                } else {
                    CallResult::None
                };
                r.end_cause = if ended_here {
                    map.end_cause(&first.hangup.cause)
                } else {
                    0
                };
                r.current_call_type = map.current_call_type_ivr.clone();
                records.push(r);
            }
        }
    }

    // Queue segment.
    if let Some(q) = queue_leg {
        let joined = q.times.queue_joined_ms.unwrap_or(q.times.created_ms);
        let (left, outcome) = match (q.times.queue_answered_ms, q.times.queue_left_ms) {
            (Some(a), _) => (a, RouteResult::AgentSelected),
            (None, Some(l)) => (l, RouteResult::AbandonedInQueue),
            (None, None) => (q.times.ended_ms, RouteResult::AbandonedInQueue),
        };
        let left = left.max(joined);
        let mut r = base(Segment::Queue);
        if let Some((id, name)) = &queue_group {
            r.service_id = id.clone();
            r.service_name = name.clone();
        }
        r.start_ms = joined;
        r.end_ms = left;
        r.queue_secs = secs_between(joined, left);
        r.route_result = Some(outcome);
        r.route_end_cause = match outcome {
            RouteResult::AgentSelected => -1,
            _ if q.hangup.by == HangupBy::FarEnd => 0,
            _ => i32::from(q.hangup.q850.unwrap_or(0)),
        };
        r.result = match outcome {
            RouteResult::AgentSelected => CallResult::None,
            _ => CallResult::UserHungUp,
        };
        r.answer_flag = match outcome {
            RouteResult::AgentSelected => AnswerFlag::Connected,
            _ => AnswerFlag::NotConnected,
        };
        r.end_cause = match outcome {
            RouteResult::AgentSelected => 0,
            _ => map.end_cause(&q.hangup.cause),
        };
        records.push(r);
    }

    // Agent segments.
    let queue_joined = queue_leg.and_then(|l| l.times.queue_joined_ms);
    for (leg, agent) in &agents {
        let own_call = leg.key == first.key && direction == CallDirection::Outbound;
        let mut r = base(Segment::Agent);
        r.start_ms = leg.times.created_ms;
        r.end_ms = leg.times.ended_ms;
        let answer = if own_call {
            // The agent dialled: FreeSWITCH answers the agent's own leg at once; what counts
            // is the customer answering, i.e. the bridge.
            leg.times.bridged_ms.or(if customer.key != leg.key {
                customer.times.answered_ms
            } else {
                None
            })
        } else {
            leg.times.answered_ms
        };
        let ring = if own_call && customer.key != leg.key {
            customer
                .times
                .ringing_ms
                .or(Some(customer.times.created_ms))
        } else {
            leg.times.ringing_ms.or(Some(leg.times.created_ms))
        };
        r.ring_ms = ring;
        r.answer_ms = answer;
        r.ring_secs = ring.map_or(0, |ring| secs_between(ring, answer.unwrap_or(r.end_ms)));
        r.answer_secs = answer.map_or(0, |a| secs_between(a, r.end_ms));
        r.duration_secs = secs_between(r.start_ms, r.end_ms);
        r.queue_secs = queue_joined.map_or(0, |j| secs_between(j, leg.times.created_ms));
        r.answer_flag = if answer.is_some() {
            AnswerFlag::Connected
        } else {
            AnswerFlag::NotConnected
        };
        r.result = match (answer.is_some(), own_call) {
            (true, _) if leg.hangup.by == HangupBy::FarEnd => CallResult::AgentHungUp,
            (true, _) => CallResult::UserHungUp,
            (false, true) => CallResult::UserNotReached,
            (false, false) if leg.hangup.cause == "ORIGINATOR_CANCEL" => CallResult::UserHungUp,
            (false, false) => CallResult::AgentNotReached,
        };
        r.end_cause = map.end_cause(&leg.hangup.cause);
        if !own_call {
            r.route_result = Some(if queue_leg.is_some() {
                RouteResult::AgentSelected
            } else {
                RouteResult::ToExtension
            });
        }
        let group = queue_group
            .clone()
            .or_else(|| dir.agent_skill_group(&agent.extension));
        if let Some((id, name)) = group {
            r.service_id = id;
            r.service_name = name;
        }
        r.org_no = agent.org_no.clone();
        r.org_name = agent.org_name.clone();
        r.agent = Some(agent.clone());
        r.current_call_type = map.current_call_type_agent.clone();
        r.leg_uuid = leg.key.uuid.clone();
        r.detail = leg.hangup.cause.clone();
        records.push(r);
    }

    // A call that never reached an IVR, a queue or an agent still gets one routing record.
    if records.is_empty() {
        let mut r = base(Segment::Queue);
        r.start_ms = first.times.created_ms;
        r.end_ms = session_stop_ms;
        let others: Vec<&Leg> = legs
            .iter()
            .copied()
            .filter(|l| l.key != first.key)
            .collect();
        // Connected means the far party answered: for an inbound call a leg the switch placed
        // (or, when that leg is unknown, the first leg's bridge), not the switch answering the
        // caller itself; for an outbound call the customer's leg.
        let answered = match direction {
            CallDirection::Inbound if first_missing => first.times.answered_ms,
            CallDirection::Inbound => others
                .iter()
                .filter_map(|l| l.times.answered_ms)
                .min()
                .or(first.times.bridged_ms)
                // A leg it placed is named but its bridge time is not recorded (2008-era
                // CDRs): its answer was that leg answering.
                .or(first
                    .times
                    .answered_ms
                    .filter(|_| others.is_empty() && !first.related.is_empty())),
            CallDirection::Outbound => customer.times.answered_ms,
        };
        r.ring_ms = legs.iter().filter_map(|l| l.times.ringing_ms).min();
        r.answer_ms = answered;
        r.ring_secs = r
            .ring_ms
            .map_or(0, |ring| secs_between(ring, answered.unwrap_or(r.end_ms)));
        r.answer_secs = answered.map_or(0, |a| secs_between(a, r.end_ms));
        r.answer_flag = if answered.is_some() {
            AnswerFlag::Connected
        } else {
            AnswerFlag::NotConnected
        };
        // Routing happened for inbound calls only; it reached an extension when a leg was
        // placed towards one (answered or not), else it was refused.
        let routed = first_missing || !others.is_empty() || !first.related.is_empty();
        r.route_result = match direction {
            CallDirection::Inbound if answered.is_some() || routed => {
                Some(RouteResult::ToExtension)
            }
            CallDirection::Inbound => Some(RouteResult::Rejected),
            CallDirection::Outbound => None,
        };
        r.route_end_cause = match first.hangup.by {
            _ if answered.is_some() => -1,
            HangupBy::FarEnd => 0,
            _ => i32::from(first.hangup.q850.unwrap_or(0)),
        };
        r.result = match (answered.is_some(), direction, customer.hangup.by) {
            // Who hung up is unknown in old CDRs; the customer is the usual answer.
            (true, _, HangupBy::FarEnd | HangupBy::Unknown) => CallResult::UserHungUp,
            (true, CallDirection::Inbound, HangupBy::Switch) => CallResult::AgentHungUp,
            (true, CallDirection::Outbound, _) => CallResult::None,
            (false, CallDirection::Outbound, _) => CallResult::UserNotReached,
            (false, CallDirection::Inbound, HangupBy::FarEnd) => CallResult::UserHungUp,
            (false, CallDirection::Inbound, _) if routed => CallResult::AgentNotReached,
            (false, CallDirection::Inbound, _) => CallResult::None,
        };
        r.end_cause = map.end_cause(&customer.hangup.cause);
        records.push(r);
    }

    records.sort_by_key(|r| (r.start_ms, r.segment.code()));
    for (i, r) in records.iter_mut().enumerate() {
        r.duration_secs = secs_between(r.start_ms, r.end_ms);
        r.stream_number = format!(
            "{:013}{:0>19}{:02}",
            r.start_ms % 10_000_000_000_000,
            r.session_id,
            // Two digits, widening (never wrapping) past 99 records, so it stays unique.
            i
        );
    }
    records
}

#[cfg(test)]
mod tests {
    //! Segments no fixture covers: an IVR, a mod_callcenter queue and an answered agent leg.

    use super::*;
    use crate::switch::leg::{Hangup, LegKey, LegTimes};

    const T: u64 = 1_700_000_000_000;

    struct Dir;
    impl CdrDirectory for Dir {
        fn agent_at(&self, extension: &str) -> Option<AgentRef> {
            (extension == "8001").then(|| AgentRef {
                extension: "8001".into(),
                agent_id: "A8001".into(),
                name: "Agent".into(),
                org_no: "64401".into(),
                org_name: "Org".into(),
            })
        }
        fn is_extension(&self, user: &str) -> bool {
            user == "8001"
        }
        fn skill_group(&self, key: &str) -> Option<(String, String)> {
            (key == "G1").then(|| ("G1".into(), "报修组".into()))
        }
        fn agent_skill_group(&self, _: &str) -> Option<(String, String)> {
            None
        }
    }

    fn leg(uuid: &str, direction: LegDirection, times: LegTimes, by: HangupBy) -> Leg {
        Leg {
            key: LegKey {
                core_uuid: "core".into(),
                uuid: uuid.into(),
            },
            call_uuid: "a".into(),
            related: Vec::new(),
            direction,
            sip_call_id: None,
            caller_number: "13900000000".into(),
            caller_name: String::new(),
            destination: "95598".into(),
            original_called: "95598".into(),
            phone_user: None,
            gateway: None,
            queue: None,
            cc_agent: None,
            times,
            hangup: Hangup {
                cause: "NORMAL_CLEARING".into(),
                q850: Some(16),
                sip_status: None,
                by,
            },
            recording: None,
            task_code: None,
            service: None,
            transferred: false,
        }
    }

    /// Caller via the carrier: IVR for 9 s, queued in G1 for 15 s, agent 8001 rings 4.5 s,
    /// answers, and the caller hangs up after 60 s of talk.
    #[test]
    fn ivr_queue_and_agent_segments_of_one_inbound_call() {
        let mut a = leg(
            "a",
            LegDirection::Inbound,
            LegTimes {
                created_ms: T,
                ringing_ms: None,
                answered_ms: Some(T + 1_000),
                bridged_ms: Some(T + 25_000),
                ended_ms: T + 85_000,
                queue_joined_ms: Some(T + 10_000),
                queue_answered_ms: Some(T + 25_000),
                queue_left_ms: None,
            },
            HangupBy::FarEnd,
        );
        a.gateway = Some("carrier".into());
        a.queue = Some("G1@default".into());
        a.related = vec!["b".into()];
        a.recording = Some("rec-1".into());
        let mut b = leg(
            "b",
            LegDirection::Outbound,
            LegTimes {
                created_ms: T + 20_000,
                ringing_ms: Some(T + 20_500),
                answered_ms: Some(T + 25_000),
                bridged_ms: Some(T + 25_000),
                ended_ms: T + 85_000,
                ..LegTimes::default()
            },
            HangupBy::Switch,
        );
        b.phone_user = Some("8001".into());
        b.cc_agent = Some("8001@default".into());

        let records = build_call(&[b, a], &Dir, &CdrMapping::default());
        let kinds: Vec<Segment> = records.iter().map(|r| r.segment).collect();
        assert_eq!(kinds, [Segment::Ivr, Segment::Queue, Segment::Agent]);
        let (ivr, queue, agent) = (&records[0], &records[1], &records[2]);

        assert_eq!(
            (ivr.start_ms, ivr.answer_ms, ivr.end_ms),
            (T, Some(T + 1_000), T + 10_000)
        );
        assert_eq!((ivr.answer_secs, ivr.result), (9, CallResult::None));

        assert_eq!(
            (queue.start_ms, queue.end_ms, queue.queue_secs),
            (T + 10_000, T + 25_000, 15)
        );
        assert_eq!(queue.route_result, Some(RouteResult::AgentSelected));
        assert_eq!(queue.route_end_cause, -1);
        assert_eq!(
            (queue.service_id.as_str(), queue.service_name.as_str()),
            ("G1", "报修组")
        );

        assert_eq!(
            agent.agent.as_ref().map(|a| a.agent_id.as_str()),
            Some("A8001")
        );
        assert_eq!(
            (
                agent.ring_secs,
                agent.answer_secs,
                agent.queue_secs,
                agent.duration_secs
            ),
            (5, 60, 10, 65)
        );
        assert_eq!(agent.answer_flag, AnswerFlag::Connected);
        assert_eq!(agent.result, CallResult::UserHungUp, "the caller hung up");
        assert_eq!(agent.route_result, Some(RouteResult::AgentSelected));
        assert_eq!(agent.service_id, "G1");
        assert_eq!(agent.leg_uuid, "b");

        for r in &records {
            assert_eq!(r.direction, CallDirection::Inbound);
            assert_eq!(r.scope, CallScope::External);
            assert_eq!(r.user_number, "13900000000");
            assert_eq!(r.session_stop_ms, T + 85_000);
            assert_eq!(r.recording.as_deref(), Some("rec-1"));
            assert_eq!(r.session_id, records[0].session_id);
        }
        let numbers: std::collections::HashSet<&str> =
            records.iter().map(|r| r.stream_number.as_str()).collect();
        assert_eq!(numbers.len(), 3, "unique stream numbers");
        assert!(records[2].stream_number.ends_with("02"));
    }

    /// The caller gives up in the queue: one queue record, abandoned.
    #[test]
    fn a_caller_abandoning_the_queue() {
        let mut a = leg(
            "a",
            LegDirection::Inbound,
            LegTimes {
                created_ms: T,
                answered_ms: Some(T + 500),
                ended_ms: T + 40_000,
                queue_joined_ms: Some(T + 1_000),
                queue_left_ms: Some(T + 40_000),
                ..LegTimes::default()
            },
            HangupBy::FarEnd,
        );
        a.queue = Some("G1".into());
        a.hangup.cause = "ORIGINATOR_CANCEL".into();
        let records = build_call(&[a], &Dir, &CdrMapping::default());
        assert_eq!(records.len(), 1, "{records:#?}");
        let q = &records[0];
        assert_eq!(q.segment, Segment::Queue);
        assert_eq!(q.route_result, Some(RouteResult::AbandonedInQueue));
        assert_eq!((q.route_end_cause, q.queue_secs), (0, 39));
        assert_eq!(
            (q.answer_flag, q.result),
            (AnswerFlag::NotConnected, CallResult::UserHungUp)
        );
    }
}
