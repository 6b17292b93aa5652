//! 呼叫中心明细数据推送: the signed, camelCase call-detail format (seed 000 L2904-3043; digest
//! §C.3), "pushed after hang-up" (L2906).
//!
//! Envelope (L2914-2917): `{entId, signStr, timestamp, calldata}`, keys in the table's order.
//! `timestamp` is the push time `yyyyMMddHHmmss` (L2916) and
//! `signStr = UPPER(HEX(MD5(timestamp + "|" + entId + "|" + sessionId)))` (L2946-2948); both
//! examples (L3002 and L3040, with their timestamps L3003, L3041) are unit-test vectors. The
//! seed says "MD5 value" without a case; the examples are upper-case hex.
//!
//! `calldata` (L2918-2944) carries every field of the table, in the table's order, then the two
//! fields only the examples show, `handleLength` (L2989, L3026) and `deptName` (L3021). Every
//! value is a JSON string: the table types them all `String` and both examples quote every
//! value, numbers included (`"alertLength": "4"`, `"callType": "0"`). The examples list keys
//! alphabetically and leave out fields they have no value for; JSON objects are unordered, so
//! the table order is kept, and every field is sent ("" when unknown) unless
//! [`DetailConfig::omit_empty`] is set.
//!
//! # Field sources (one [`CallRecord`], i.e. one call segment)
//!
//! | field | source |
//! |---|---|
//! | `sessionId` | `session_id` (the call's id, L2918) |
//! | `agentId`/`agentName` | the segment's agent |
//! | `agentNum` | [`DetailConfig::agent_num_prefix`] + extension (the outbound example sends `sip:70007`, L3014) |
//! | `skillId`/`skillName` | `service_id`/`service_name` |
//! | `startTime`/`endTime` | `start_ms`/`end_ms`, `yyyy-MM-dd HH:mm:ss` (L2924-2925) |
//! | `callingNum` | inbound: the customer (`user_number`); outbound: the presented number (`dialNum`), as the outbound example has `callingNum` = `dialNum` (L3018, L3022) |
//! | `dialNum` | outbound only: the presented caller id, from [`DetailExtras::dial_num`] (the record does not hold it) |
//! | `calledNum` | inbound: `original_called` (the number dialled); outbound: [`DetailConfig::outbound_called_num_prefix`] + the customer (the example sends `Tel:15835102037`, L3017) |
//! | `queueLength`/`alertLength`/`talkLength`/`totalDuration` | `queue_secs`/`ring_secs`/`answer_secs`/`duration_secs` |
//! | `endType`/`hangupDisposition` | [`end_type`] (below) |
//! | `customerProvince`/`customerCity`/`satisfactionKey`/`satisfactionResult`/`deptName` | [`DetailExtras`] (number-location lookup, survey, directory: none of them is in the record) |
//! | `recordStartTime`/`recordEndTime` | with a recording: answer (or start) and end; both examples record from answer to end (L2993-2995, L3030-3032) |
//! | `recordPath` | [`DetailConfig::record_url_prefix`] + the recording id |
//! | `callType` | 1 inbound, 0 outbound (L2950-2955) |
//! | `entId` | the caller's enterprise id (also in the envelope) |
//! | `ivrLength` | an IVR segment's `duration_secs`, else 0 |
//! | `handleLength` | undefined in the seed; `totalDuration - queueLength - alertLength - talkLength` (floored at 0), the only reading that fits both examples: 29-0-0-29 = 0 (L2989) and 45-0-4-40 = 1 (L3026), i.e. the set-up time not spent queueing, alerting or talking (in the outbound example, the agent leg's own ringing before the customer was dialled) |
//!
//! In the inbound example `callingNum` is 2427998, `calledNum` 10001000111 (L2984-2985); the
//! recording name `<hex16(sessionId)>_10001000111_2427998` puts them the other way round.
//! The table's meanings (主叫/被叫) are followed.
//!
//! # `endType` (L2957-2973), derived from the record
//!
//! | record | `endType` | `hangupDisposition` |
//! |---|---|---|
//! | IVR segment | 200 | IVR挂断 (as the inbound example, L2987-2990) |
//! | queue segment, inbound | 202 | （呼入）排队放弃 |
//! | queue segment, outbound, customer hung up | 210 | 客户挂断 |
//! | agent segment not connected, inbound | 251 | （呼入）振铃放弃 |
//! | agent segment not connected, outbound | 204 | （呼出）振铃放弃 |
//! | connected, `CALLRESCODE` 1 (customer hung up) | 210 | 客户挂断 (as the outbound example, L3024-3027) |
//! | connected, `CALLRESCODE` 3/5 (agent's phone or desktop hung up) | 211 | 坐席挂断 |
//! | connected, `CALLRESCODE` 6 (agent transferred) | 217 | 咨询挂断 |
//! | connected, other, `CALLENDCAUSE` 2-4 (released by the platform) | 220 | 全拆 |
//! | connected, other, inbound / outbound | 252 / 205 | （呼入）通话挂断 / （呼出）通话挂断 |
//! | any other queue segment | 220 | 全拆 |
//!
//! 216 (hung up on hold), 218 (conference) and 219 (monitoring) are never produced: a call
//! record does not say whether the call was held, conferenced or monitored at its end.
//! `hangupDisposition` is the table's 说明 cell verbatim.
//!
//! The format describes one call ("一通电话", L2918) while a [`CallRecord`] is one segment:
//! pushing only the call's last record ([`is_final_segment`]) gives one detail per call.
//! Lane key: the session id; idempotency key: the record's stream number.

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::cdr::TimeFormat;
use crate::cdr::record::{AnswerFlag, CallRecord, CallResult, Segment};
use crate::events::CallDirection;

/// The envelope's keys in the table's order (L2914-2917).
pub const ENVELOPE_FIELDS: [&str; 4] = ["entId", "signStr", "timestamp", "calldata"];

/// `calldata`'s keys: the table's order (L2918-2944), then `handleLength` and `deptName`
/// (examples only, L2989, L3021).
pub const CALLDATA_FIELDS: [&str; 29] = [
    "sessionId",
    "agentId",
    "agentNum",
    "agentName",
    "skillId",
    "skillName",
    "startTime",
    "endTime",
    "callingNum",
    "dialNum",
    "calledNum",
    "queueLength",
    "alertLength",
    "talkLength",
    "totalDuration",
    "endType",
    "hangupDisposition",
    "customerProvince",
    "customerCity",
    "satisfactionKey",
    "satisfactionResult",
    "recordStartTime",
    "recordEndTime",
    "recordPath",
    "callType",
    "entId",
    "ivrLength",
    "handleLength",
    "deptName",
];

/// `signStr` (L2946-2948): upper-case hex MD5 of `timestamp|entId|sessionId`.
pub fn sign_str(timestamp: &str, ent_id: &str, session_id: &str) -> String {
    let mut h = Md5::new();
    h.update(timestamp.as_bytes());
    h.update(b"|");
    h.update(ent_id.as_bytes());
    h.update(b"|");
    h.update(session_id.as_bytes());
    hex::encode_upper(h.finalize())
}

/// `endType` (L2957-2973).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndType {
    /// 200 IVR挂断.
    Ivr,
    /// 202 （呼入）排队放弃.
    InboundQueueAbandoned,
    /// 251 （呼入）振铃放弃.
    InboundRingAbandoned,
    /// 252 （呼入）通话挂断.
    InboundTalkEnded,
    /// 204 （呼出）振铃放弃.
    OutboundRingAbandoned,
    /// 205 （呼出）通话挂断.
    OutboundTalkEnded,
    /// 210 客户挂断.
    CustomerHungUp,
    /// 211 坐席挂断.
    AgentHungUp,
    /// 216 保持挂断.
    HungUpOnHold,
    /// 217 咨询挂断.
    ConsultHungUp,
    /// 218 会议挂断.
    ConferenceHungUp,
    /// 219 坐席监听.
    AgentMonitor,
    /// 220 全拆.
    AllReleased,
}

impl EndType {
    pub fn code(self) -> u16 {
        match self {
            EndType::Ivr => 200,
            EndType::InboundQueueAbandoned => 202,
            EndType::OutboundRingAbandoned => 204,
            EndType::OutboundTalkEnded => 205,
            EndType::CustomerHungUp => 210,
            EndType::AgentHungUp => 211,
            EndType::HungUpOnHold => 216,
            EndType::ConsultHungUp => 217,
            EndType::ConferenceHungUp => 218,
            EndType::AgentMonitor => 219,
            EndType::AllReleased => 220,
            EndType::InboundRingAbandoned => 251,
            EndType::InboundTalkEnded => 252,
        }
    }

    /// `hangupDisposition`: the 说明（挂断方） cell, verbatim.
    pub fn label(self) -> &'static str {
        match self {
            EndType::Ivr => "IVR挂断",
            EndType::InboundQueueAbandoned => "（呼入）排队放弃",
            EndType::InboundRingAbandoned => "（呼入）振铃放弃",
            EndType::InboundTalkEnded => "（呼入）通话挂断",
            EndType::OutboundRingAbandoned => "（呼出）振铃放弃",
            EndType::OutboundTalkEnded => "（呼出）通话挂断",
            EndType::CustomerHungUp => "客户挂断",
            EndType::AgentHungUp => "坐席挂断",
            EndType::HungUpOnHold => "保持挂断",
            EndType::ConsultHungUp => "咨询挂断",
            EndType::ConferenceHungUp => "会议挂断",
            EndType::AgentMonitor => "坐席监听",
            EndType::AllReleased => "全拆",
        }
    }
}

/// The record's `endType` (mapping table in the module docs).
pub fn end_type(r: &CallRecord) -> EndType {
    let inbound = r.direction == CallDirection::Inbound;
    let connected = r.answer_flag == AnswerFlag::Connected;
    match r.segment {
        Segment::Ivr => EndType::Ivr,
        // A routing/queue segment that was answered (the call reached someone without an
        // agent record of its own) ended as a conversation, not as an abandon.
        Segment::Queue if !connected && inbound => EndType::InboundQueueAbandoned,
        Segment::Queue if !connected && r.result == CallResult::UserHungUp => {
            EndType::CustomerHungUp
        }
        Segment::Queue if !connected => EndType::AllReleased,
        Segment::Agent if !connected => {
            if inbound {
                EndType::InboundRingAbandoned
            } else {
                EndType::OutboundRingAbandoned
            }
        }
        Segment::Queue | Segment::Agent => match r.result {
            CallResult::UserHungUp => EndType::CustomerHungUp,
            CallResult::AgentHungUp | CallResult::AgentAppHungUp => EndType::AgentHungUp,
            CallResult::AgentTransferred => EndType::ConsultHungUp,
            CallResult::None | CallResult::UserNotReached | CallResult::AgentNotReached => {
                if (2..=4).contains(&r.end_cause) {
                    EndType::AllReleased
                } else if inbound {
                    EndType::InboundTalkEnded
                } else {
                    EndType::OutboundTalkEnded
                }
            }
        },
    }
}

/// Whether the record is the last segment of its call: it ends when the whole session does.
/// Segments that handed the call on (IVR → queue → agent, a transfer) end earlier.
pub fn is_final_segment(r: &CallRecord) -> bool {
    r.end_ms >= r.session_stop_ms
}

/// `[grid.detail]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetailConfig {
    /// IANA zone of every time (the seed names none; the platform is in China).
    pub timezone: String,
    /// Put before the extension in `agentNum` (the example has `sip:`, L3014). Default "".
    pub agent_num_prefix: String,
    /// Put before the customer's number in an outbound `calledNum` (the example has `Tel:`,
    /// L3017). Default "".
    pub outbound_called_num_prefix: String,
    /// Put before the recording id in `recordPath` (e.g. the download URL's base). Default "".
    pub record_url_prefix: String,
    /// Leave out `calldata` fields whose value is "" (the examples leave out what they do not
    /// know). Default false: every field is sent.
    pub omit_empty: bool,
}

impl Default for DetailConfig {
    fn default() -> Self {
        DetailConfig {
            timezone: "Asia/Shanghai".into(),
            agent_num_prefix: String::new(),
            outbound_called_num_prefix: String::new(),
            record_url_prefix: String::new(),
            omit_empty: false,
        }
    }
}

impl DetailConfig {
    /// The error names the bad key (relative to `[grid.detail]`).
    pub fn validate(&self) -> Result<(), String> {
        DetailFormat::new(self).map(|_| ())
    }
}

/// A validated [`DetailConfig`].
#[derive(Debug, Clone)]
pub struct DetailFormat {
    time: TimeFormat,
    stamp: TimeFormat,
    cfg: DetailConfig,
}

impl DetailFormat {
    pub fn new(cfg: &DetailConfig) -> Result<Self, String> {
        let time = TimeFormat::new("%Y-%m-%d %H:%M:%S", &cfg.timezone)
            .map_err(|e| format!("timezone: {e}"))?;
        let stamp =
            TimeFormat::new("%Y%m%d%H%M%S", &cfg.timezone).map_err(|e| format!("timezone: {e}"))?;
        for (key, v) in [
            ("agent_num_prefix", &cfg.agent_num_prefix),
            (
                "outbound_called_num_prefix",
                &cfg.outbound_called_num_prefix,
            ),
            ("record_url_prefix", &cfg.record_url_prefix),
        ] {
            if v.chars().any(char::is_control) || v.len() > 1024 {
                return Err(format!(
                    "{key}: must be at most 1024 bytes without control characters"
                ));
            }
        }
        Ok(DetailFormat {
            time,
            stamp,
            cfg: cfg.clone(),
        })
    }
}

impl Default for DetailFormat {
    fn default() -> Self {
        DetailFormat::new(&DetailConfig::default()).expect("the default config is valid")
    }
}

/// What the record does not hold, looked up by the caller ("" when unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetailExtras<'a> {
    /// `deptName`: the agent's department (directory).
    pub dept_name: &'a str,
    /// `dialNum`: the caller id presented on an outbound call.
    pub dial_num: &'a str,
    /// `customerProvince`/`customerCity`: number-location lookup.
    pub customer_province: &'a str,
    pub customer_city: &'a str,
    /// `satisfactionKey`/`satisfactionResult`: the post-call survey.
    pub satisfaction_key: &'a str,
    pub satisfaction_result: &'a str,
}

/// One detail push, ready for the outbox: idempotency key the record's stream number, lane
/// the call's session id.
pub type DetailPush = super::push::GridPush;

/// The signed envelope for one record, pushed at `push_ms`.
pub fn to_detail(
    r: &CallRecord,
    ent_id: &str,
    push_ms: u64,
    extras: &DetailExtras<'_>,
    fmt: &DetailFormat,
) -> DetailPush {
    let cfg = &fmt.cfg;
    let t = |ms: u64| fmt.time.format_ms(ms);
    let inbound = r.direction == CallDirection::Inbound;
    let agent = r.agent.as_ref();
    let end = end_type(r);
    let handle = r
        .duration_secs
        .saturating_sub(r.queue_secs)
        .saturating_sub(r.ring_secs)
        .saturating_sub(r.answer_secs);
    let (record_start, record_end, record_path) = match &r.recording {
        Some(id) => (
            t(r.answer_ms.unwrap_or(r.start_ms)),
            t(r.end_ms),
            format!("{}{id}", cfg.record_url_prefix),
        ),
        None => (String::new(), String::new(), String::new()),
    };
    let values: [String; 29] = [
        r.session_id.clone(),
        agent.map(|a| a.agent_id.clone()).unwrap_or_default(),
        agent
            .filter(|a| !a.extension.is_empty())
            .map(|a| format!("{}{}", cfg.agent_num_prefix, a.extension))
            .unwrap_or_default(),
        agent.map(|a| a.name.clone()).unwrap_or_default(),
        r.service_id.clone(),
        r.service_name.clone(),
        t(r.start_ms),
        t(r.end_ms),
        if inbound {
            r.user_number.clone()
        } else {
            extras.dial_num.to_owned()
        },
        if inbound {
            String::new()
        } else {
            extras.dial_num.to_owned()
        },
        if inbound {
            r.original_called.clone()
        } else if r.user_number.is_empty() {
            String::new()
        } else {
            format!("{}{}", cfg.outbound_called_num_prefix, r.user_number)
        },
        r.queue_secs.to_string(),
        r.ring_secs.to_string(),
        r.answer_secs.to_string(),
        r.duration_secs.to_string(),
        end.code().to_string(),
        end.label().to_owned(),
        extras.customer_province.to_owned(),
        extras.customer_city.to_owned(),
        extras.satisfaction_key.to_owned(),
        extras.satisfaction_result.to_owned(),
        record_start,
        record_end,
        record_path,
        if inbound { "1" } else { "0" }.to_owned(),
        ent_id.to_owned(),
        if r.segment == Segment::Ivr {
            r.duration_secs
        } else {
            0
        }
        .to_string(),
        handle.to_string(),
        extras.dept_name.to_owned(),
    ];
    let calldata: Map<String, Value> = CALLDATA_FIELDS
        .iter()
        .zip(values)
        .filter(|(_, v)| !(cfg.omit_empty && v.is_empty()))
        .map(|(k, v)| ((*k).to_owned(), Value::String(v)))
        .collect();
    let timestamp = fmt.stamp.format_ms(push_ms);
    let sign = sign_str(&timestamp, ent_id, &r.session_id);
    let mut body = Map::new();
    body.insert("entId".into(), Value::String(ent_id.to_owned()));
    body.insert("signStr".into(), Value::String(sign));
    body.insert("timestamp".into(), Value::String(timestamp));
    body.insert("calldata".into(), Value::Object(calldata));
    DetailPush::new(body, r.stream_number.clone(), r.session_id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both examples of the seed (signStr L3002/L3040, timestamp L3003/L3041, entId
    /// L3001/L3039, sessionId L2996/L3034).
    #[test]
    fn sign_str_matches_both_seed_vectors() {
        assert_eq!(
            sign_str("20240815214004", "VEIP", "8099369908841762569"),
            "2EF552BB7FCC0B9CDAB170DAC4C5BB6C"
        );
        assert_eq!(
            sign_str("20240817004958", "VEIP", "8099371549301193984"),
            "51035998C2A49434BDF81254B9CE5A5D"
        );
    }

    #[test]
    fn end_type_codes_and_labels_are_the_tables() {
        let all = [
            (EndType::Ivr, 200, "IVR挂断"),
            (EndType::InboundQueueAbandoned, 202, "（呼入）排队放弃"),
            (EndType::InboundRingAbandoned, 251, "（呼入）振铃放弃"),
            (EndType::InboundTalkEnded, 252, "（呼入）通话挂断"),
            (EndType::OutboundRingAbandoned, 204, "（呼出）振铃放弃"),
            (EndType::OutboundTalkEnded, 205, "（呼出）通话挂断"),
            (EndType::CustomerHungUp, 210, "客户挂断"),
            (EndType::AgentHungUp, 211, "坐席挂断"),
            (EndType::HungUpOnHold, 216, "保持挂断"),
            (EndType::ConsultHungUp, 217, "咨询挂断"),
            (EndType::ConferenceHungUp, 218, "会议挂断"),
            (EndType::AgentMonitor, 219, "坐席监听"),
            (EndType::AllReleased, 220, "全拆"),
        ];
        for (e, code, label) in all {
            assert_eq!((e.code(), e.label()), (code, label));
        }
    }

    #[test]
    fn config_errors_name_the_key() {
        let bad = DetailConfig {
            timezone: "Nowhere/Else".into(),
            ..DetailConfig::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("timezone:"));
        let bad = DetailConfig {
            record_url_prefix: "a\u{0}".into(),
            ..DetailConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .starts_with("record_url_prefix:"));
        assert!(DetailConfig::default().validate().is_ok());
        assert!(toml::from_str::<DetailConfig>("ent_id = \"x\"").is_err());
    }
}
