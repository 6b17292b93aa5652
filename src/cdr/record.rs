//! The call record: one segment of one call, in domain terms.
//!
//! Seed 000's 话单推送 describes one record per call segment (queue/routing, IVR, agent), all
//! linked by the call's id. [`CallRecord`] is that record with typed fields; `grid::cdr` turns
//! it into the contract's field names and string encodings.

use serde::{Deserialize, Serialize};

use crate::events::CallDirection;

/// The segment kind (`TYPE`: 0 routing/queue, 1 IVR, 2 agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    Queue,
    Ivr,
    Agent,
}

impl Segment {
    pub fn code(self) -> u8 {
        match self {
            Self::Queue => 0,
            Self::Ivr => 1,
            Self::Agent => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Ivr => "ivr",
            Self::Agent => "agent",
        }
    }
}

/// `CALLTYPE`: whether the far party is inside the contact center.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallScope {
    Internal,
    External,
}

impl CallScope {
    pub fn code(self) -> u8 {
        match self {
            Self::Internal => 0,
            Self::External => 1,
        }
    }
}

/// `ANSWERFLAG`: 0 not applicable, 1 connected, 2 not connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerFlag {
    NotApplicable,
    Connected,
    NotConnected,
}

impl AnswerFlag {
    pub fn code(self) -> u8 {
        match self {
            Self::NotApplicable => 0,
            Self::Connected => 1,
            Self::NotConnected => 2,
        }
    }
}

/// `CALLRESCODE`: how the segment ended, from the contact center's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallResult {
    /// 0: not applicable (the segment handed the call on).
    None,
    /// 1: the customer hung up.
    UserHungUp,
    /// 2: the customer was not reached.
    UserNotReached,
    /// 3: the agent's extension hung up.
    AgentHungUp,
    /// 4: the agent's extension was not reached.
    AgentNotReached,
    /// 5: the agent's application (desktop, API) released the call.
    AgentAppHungUp,
    /// 6: the agent transferred the call.
    AgentTransferred,
}

impl CallResult {
    pub fn code(self) -> u8 {
        match self {
            Self::None => 0,
            Self::UserHungUp => 1,
            Self::UserNotReached => 2,
            Self::AgentHungUp => 3,
            Self::AgentNotReached => 4,
            Self::AgentAppHungUp => 5,
            Self::AgentTransferred => 6,
        }
    }
}

/// `ROUTERESCODE`: what routing decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteResult {
    /// 0: refused (no destination could take the call).
    Rejected,
    /// 1: sent straight to an extension.
    ToExtension,
    /// 10: queued and an agent was selected.
    AgentSelected,
    /// 11: the caller gave up before an agent was selected.
    AbandonedInQueue,
}

impl RouteResult {
    pub fn code(self) -> u8 {
        match self {
            Self::Rejected => 0,
            Self::ToExtension => 1,
            Self::AgentSelected => 10,
            Self::AbandonedInQueue => 11,
        }
    }
}

/// The agent on an agent segment, from the directory at build time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRef {
    pub extension: String,
    pub agent_id: String,
    pub name: String,
    pub org_no: String,
    pub org_name: String,
}

/// One grid call record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Unique per record, all digits: 13-digit start time in ms, the 19-digit session id, and
    /// a 2-digit segment ordinal (two segments of one call can start in the same ms).
    pub stream_number: String,
    /// The call's session id (decimal u63), shared by every segment of the call; derived from
    /// the FreeSWITCH core and call uuids, so rebuilding the call gives the same id.
    pub session_id: String,
    pub segment: Segment,
    pub direction: CallDirection,
    /// `SERVICE` code (seed 000 enum 0-14).
    pub service: u8,
    pub scope: CallScope,
    /// The customer's number.
    pub user_number: String,
    pub area_code: String,
    /// Skill group (queue) id and name, if any.
    pub service_id: String,
    pub service_name: String,
    /// The hang-up cause behind the result, FreeSWITCH's name (e.g. `NORMAL_CLEARING`).
    pub detail: String,
    pub agent: Option<AgentRef>,
    pub start_ms: u64,
    pub ring_ms: Option<u64>,
    pub answer_ms: Option<u64>,
    pub end_ms: u64,
    /// End of the whole call (every leg gone).
    pub session_stop_ms: u64,
    pub ring_secs: u64,
    pub answer_secs: u64,
    pub queue_secs: u64,
    pub duration_secs: u64,
    pub answer_flag: AnswerFlag,
    pub result: CallResult,
    /// `CALLENDCAUSE` code from the configured table (0 normal ... 4 max duration).
    pub end_cause: i32,
    pub route_result: Option<RouteResult>,
    /// `ROUTEENDCAUSE`: −1 default, 0 the caller abandoned, >0 the Q.850 cause.
    pub route_end_cause: i32,
    pub original_called: String,
    /// Recording id (SRFMSGID), when a recording is linked.
    pub recording: Option<String>,
    pub org_no: String,
    pub org_name: String,
    /// `currentCallType` and `callTrack` codes ("" when not applicable).
    pub current_call_type: String,
    pub call_track: String,
    /// Where it came from, for support: FreeSWITCH core, call and leg uuids.
    pub core_uuid: String,
    pub call_uuid: String,
    pub leg_uuid: String,
}
