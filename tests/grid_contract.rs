//! Contract tests of the grid pushes, field for field, through the library's public API.
//!
//! Every expected key list and value here was written by hand from seed 000
//! (`shared/seeds/000_ed9ce25caaac5f00.txt`) and the decisions documented in the `grid::*`
//! modules, never pasted from the code's output:
//!
//! - 话单推送 (CDR, L357-448): `grid::cdr::to_grid`, with every 确认删除/删除 field absent.
//! - 坐席事件（坐席考勤）推送 (L454-495): `grid::agent_event`, driven by the real presence core.
//! - 坐席信息变更推送 (L534-568) and 网格接入号信息变更推送 (L574-610): `grid::changes`.
//! - 呼叫中心明细数据推送 (L2904-3043): `grid::detail`, against both of the seed's examples,
//!   whose JSON is copied verbatim below.
//!
//! Epochs were turned into Asia/Shanghai wall time (UTC+8, no DST) with python3.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use serde_json::{Map, Value};

use gridedge::agents::counters::DayClock;
use gridedge::agents::directory::{AccessNumber, Agent, SkillGroup};
use gridedge::agents::presence::{AgentEvent, AgentEventKind, Command, Presence};
use gridedge::agents::state::{
    AgentConfig, AgentState, CallId, NotReadyReason, RestReason, Transition,
};
use gridedge::cdr::record::{AgentRef, AnswerFlag, CallRecord, CallResult, CallScope, Segment};
use gridedge::events::{CallDirection, CallEvent, CallPhase};
use gridedge::grid::agent_event::{
    self, AgentEventConfig, AgentEventFormat, AgentInfo, AgentStatus,
};
use gridedge::grid::cdr::{to_grid, TimeFormat};
use gridedge::grid::changes::{
    diff_access_numbers, diff_agents, AgentSnapshot, ChangeType, ChangesConfig,
};
use gridedge::grid::detail::{self, sign_str, DetailConfig, DetailExtras, DetailFormat};

// -------------------------------------------------------------------------------------------
// helpers

fn keys(m: &Map<String, Value>) -> Vec<&str> {
    m.keys().map(String::as_str).collect()
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

/// Asserts the object has exactly these keys, in this order, with these string values.
fn assert_fields(m: &Map<String, Value>, expected: &[(&str, &str)], what: &str) {
    let want: Vec<&str> = expected.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys(m), want, "{what}: key list");
    for (k, v) in expected {
        assert_eq!(m[*k], s(v), "{what}: {k}");
    }
}

fn assert_all_strings(m: &Map<String, Value>, what: &str) {
    for (k, v) in m {
        assert!(v.is_string(), "{what}: {k} is {v}, not a string");
    }
}

// -------------------------------------------------------------------------------------------
// Call records: the seed's two 呼叫中心明细数据推送 examples as domain records

/// The outbound example (L3007-3043): agent songbo (宋博, extension 70007) dials
/// 15835102037 presenting 2427998. Started 2024-08-17 00:49:08 +08 (1723826948000); the
/// customer rang 4 s (alertLength) until the answer at 00:49:13 (= recordStartTime); the talk
/// lasted 40 s to 00:49:53 (endTime); total 45 s; the customer hung up (客户挂断, 210).
fn outbound_example() -> CallRecord {
    CallRecord {
        stream_number: "1723826948000809937154930119398400".into(),
        session_id: "8099371549301193984".into(),
        segment: Segment::Agent,
        direction: CallDirection::Outbound,
        service: 3,
        scope: CallScope::External,
        user_number: "15835102037".into(),
        area_code: "0351".into(),
        service_id: String::new(),
        service_name: String::new(),
        detail: "NORMAL_CLEARING".into(),
        agent: Some(AgentRef {
            extension: "70007".into(),
            agent_id: "songbo".into(),
            name: "宋博".into(),
            org_no: "14101".into(),
            org_name: "太原供电公司".into(),
        }),
        start_ms: 1_723_826_948_000,
        ring_ms: Some(1_723_826_949_000),
        answer_ms: Some(1_723_826_953_000),
        end_ms: 1_723_826_993_000,
        session_stop_ms: 1_723_826_993_000,
        ring_secs: 4,
        answer_secs: 40,
        queue_secs: 0,
        duration_secs: 45,
        answer_flag: AnswerFlag::Connected,
        result: CallResult::UserHungUp,
        end_cause: 0,
        route_result: None,
        route_end_cause: -1,
        original_called: "15835102037".into(),
        recording: Some("2024/08/17/8099371549301193984.wav".into()),
        org_no: "14101".into(),
        org_name: "太原供电公司".into(),
        current_call_type: "02".into(),
        call_track: "02".into(),
        core_uuid: "core".into(),
        call_uuid: "call".into(),
        leg_uuid: "leg".into(),
    }
}

/// The inbound example (L2977-3005): 2427998 calls 10001000111 and stays in the IVR from
/// 2024-08-15 21:39:30 +08 (1723729170000, answered at once: recordStartTime = startTime) to
/// 21:39:59 (29 s), then hangs up in the IVR (IVR挂断, 200).
fn inbound_example() -> CallRecord {
    CallRecord {
        stream_number: "1723729170000809936990884176256900".into(),
        session_id: "8099369908841762569".into(),
        segment: Segment::Ivr,
        direction: CallDirection::Inbound,
        service: 0,
        scope: CallScope::External,
        user_number: "2427998".into(),
        area_code: "0351".into(),
        service_id: String::new(),
        service_name: String::new(),
        detail: "NORMAL_CLEARING".into(),
        agent: None,
        start_ms: 1_723_729_170_000,
        ring_ms: None,
        answer_ms: Some(1_723_729_170_000),
        end_ms: 1_723_729_199_000,
        session_stop_ms: 1_723_729_199_000,
        ring_secs: 0,
        answer_secs: 29,
        queue_secs: 0,
        duration_secs: 29,
        answer_flag: AnswerFlag::Connected,
        result: CallResult::UserHungUp,
        end_cause: 0,
        route_result: None,
        route_end_cause: -1,
        original_called: "10001000111".into(),
        recording: Some("IVR/2024-08-15/7066be0511004f09_10001000111_2427998.mp3".into()),
        org_no: "14101".into(),
        org_name: "太原供电公司".into(),
        current_call_type: "01".into(),
        call_track: "01".into(),
        core_uuid: "core".into(),
        call_uuid: "call".into(),
        leg_uuid: "leg".into(),
    }
}

/// Seed 000 L2980-3004, verbatim.
const SEED_INBOUND: &str = r#"{
  "calldata": {
    "alertLength": "0",
    "callType": "1",
    "calledNum": "10001000111",
    "callingNum": "2427998",
    "endTime": "2024-08-15 21:39:59",
    "endType": "200",
    "entId": "VEIP",
    "handleLength": "0",
    "hangupDisposition": "IVR挂断",
    "ivrLength": "29",
    "queueLength": "0",
    "recordEndTime": "2024-08-15 21:39:59",
    "recordPath": "http://www.yuming.com/cca/record/172.21.0.16/dat/record/VEIP/IVR/2024-08-15/7066be0511004f09_10001000111_2427998.mp3",
    "recordStartTime": "2024-08-15 21:39:30",
    "sessionId": "8099369908841762569",
    "startTime": "2024-08-15 21:39:30",
    "talkLength": "29",
    "totalDuration": "29"
  },
  "entId": "VEIP",
  "signStr": "2EF552BB7FCC0B9CDAB170DAC4C5BB6C",
  "timestamp": "20240815214004"
}"#;

/// Seed 000 L3010-3042, verbatim.
const SEED_OUTBOUND: &str = r#"{
  "calldata": {
    "agentId": "songbo",
    "agentName": "宋博",
    "agentNum": "sip:70007",
    "alertLength": "4",
    "callType": "0",
    "calledNum": "Tel:15835102037",
    "callingNum": "2427998",
    "customerCity": "太原",
    "customerProvince": "山西",
    "deptName": "客服部",
    "dialNum": "2427998",
    "endTime": "2024-08-17 00:49:53",
    "endType": "210",
    "entId": "VEIP",
    "handleLength": "1",
    "hangupDisposition": "客户挂断",
    "ivrLength": "0",
    "queueLength": "0",
    "recordEndTime": "2024-08-17 00:49:53",
    "recordPath": "https://www.yuming.com/report/call/play/video/ims_6/record/VEIP/2024/08/17/8099371549301193984.wav",
    "recordStartTime": "2024-08-17 00:49:13",
    "satisfactionResult": "",
    "sessionId": "8099371549301193984",
    "startTime": "2024-08-17 00:49:08",
    "talkLength": "40",
    "totalDuration": "45"
  },
  "entId": "VEIP",
  "signStr": "51035998C2A49434BDF81254B9CE5A5D",
  "timestamp": "20240817004958"
}"#;

/// The calldata table's order (L2918-2944, without the envelope rows), then the two
/// example-only fields.
const CALLDATA_ORDER: [&str; 29] = [
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

// -------------------------------------------------------------------------------------------
// 呼叫中心明细数据推送 (L2904-3043)

#[test]
fn sign_str_vectors_from_the_seed() {
    // L2948 rule, L3002-3003 and L3040-3041 vectors.
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
fn detail_outbound_matches_the_seed_example() {
    let fmt = DetailFormat::new(&DetailConfig {
        agent_num_prefix: "sip:".into(),
        outbound_called_num_prefix: "Tel:".into(),
        record_url_prefix: "https://www.yuming.com/report/call/play/video/ims_6/record/VEIP/"
            .into(),
        ..DetailConfig::default()
    })
    .unwrap();
    let extras = DetailExtras {
        dept_name: "客服部",
        dial_num: "2427998",
        customer_province: "山西",
        customer_city: "太原",
        satisfaction_key: "",
        satisfaction_result: "",
    };
    let record = outbound_example();
    // Pushed at 2024-08-17 00:49:58 +08 (timestamp L3041).
    let push = detail::to_detail(&record, "VEIP", 1_723_826_998_000, &extras, &fmt);
    assert_eq!(push.idempotency_key(), record.stream_number);
    assert_eq!(push.lane_key(), "8099371549301193984");

    let body = push.body();
    assert_eq!(keys(body), ["entId", "signStr", "timestamp", "calldata"]);
    let seed: Map<String, Value> = serde_json::from_str(SEED_OUTBOUND).unwrap();
    for k in ["entId", "signStr", "timestamp"] {
        assert_eq!(body[k], seed[k], "envelope {k}");
    }
    let ours = body["calldata"].as_object().unwrap();
    let theirs = seed["calldata"].as_object().unwrap();
    assert_eq!(keys(ours), CALLDATA_ORDER, "every field, table order");
    assert_all_strings(ours, "calldata");
    for (k, v) in theirs {
        assert_eq!(&ours[k], v, "calldata.{k}");
    }
    // The fields the example leaves out are sent empty.
    for k in ["skillId", "skillName", "satisfactionKey"] {
        assert!(!theirs.contains_key(k));
        assert_eq!(ours[k], s(""), "{k}");
    }
    assert_eq!(ours.len(), theirs.len() + 3);
}

#[test]
fn detail_inbound_ivr_matches_the_seed_example_exactly_when_empty_fields_are_omitted() {
    let cfg = DetailConfig {
        record_url_prefix: "http://www.yuming.com/cca/record/172.21.0.16/dat/record/VEIP/".into(),
        omit_empty: true,
        ..DetailConfig::default()
    };
    let fmt = DetailFormat::new(&cfg).unwrap();
    // Pushed at 2024-08-15 21:40:04 +08 (timestamp L3003).
    let push = detail::to_detail(
        &inbound_example(),
        "VEIP",
        1_723_729_204_000,
        &DetailExtras::default(),
        &fmt,
    );
    let seed: Value = serde_json::from_str(SEED_INBOUND).unwrap();
    assert_eq!(Value::Object(push.body().clone()), seed);
    assert!(detail::is_final_segment(&inbound_example()));

    // Without omit_empty every field is present, in table order.
    let fmt = DetailFormat::new(&DetailConfig {
        omit_empty: false,
        ..cfg
    })
    .unwrap();
    let push = detail::to_detail(
        &inbound_example(),
        "VEIP",
        1_723_729_204_000,
        &DetailExtras::default(),
        &fmt,
    );
    let cd = push.body()["calldata"].as_object().unwrap();
    assert_eq!(keys(cd), CALLDATA_ORDER);
    assert_eq!(cd["dialNum"], s(""));
    assert_eq!(cd["agentId"], s(""));
}

#[test]
fn detail_end_types_follow_the_documented_mapping() {
    use detail::EndType;
    let base = outbound_example();
    let with = |f: &dyn Fn(&mut CallRecord)| {
        let mut r = base.clone();
        f(&mut r);
        detail::end_type(&r)
    };
    let unanswered = |r: &mut CallRecord| {
        r.answer_flag = AnswerFlag::NotConnected;
        r.result = CallResult::UserNotReached;
    };
    assert_eq!(with(&|_| {}), EndType::CustomerHungUp);
    assert_eq!(with(&unanswered), EndType::OutboundRingAbandoned);
    assert_eq!(
        with(&|r| {
            unanswered(r);
            r.direction = CallDirection::Inbound;
        }),
        EndType::InboundRingAbandoned
    );
    assert_eq!(
        with(&|r| r.result = CallResult::AgentHungUp),
        EndType::AgentHungUp
    );
    assert_eq!(
        with(&|r| r.result = CallResult::AgentAppHungUp),
        EndType::AgentHungUp
    );
    assert_eq!(
        with(&|r| r.result = CallResult::AgentTransferred),
        EndType::ConsultHungUp
    );
    assert_eq!(
        with(&|r| r.result = CallResult::None),
        EndType::OutboundTalkEnded
    );
    assert_eq!(
        with(&|r| {
            r.result = CallResult::None;
            r.direction = CallDirection::Inbound;
        }),
        EndType::InboundTalkEnded
    );
    assert_eq!(
        with(&|r| {
            r.result = CallResult::None;
            r.end_cause = 4;
        }),
        EndType::AllReleased
    );
    assert_eq!(
        with(&|r| {
            r.segment = Segment::Queue;
            r.direction = CallDirection::Inbound;
            r.answer_flag = AnswerFlag::NotConnected;
        }),
        EndType::InboundQueueAbandoned
    );
    // A routing segment that was answered ended as a conversation (seen end to end with the
    // bridged 2018 fixture, whose only record is the routing one).
    assert_eq!(
        with(&|r| {
            r.segment = Segment::Queue;
            r.direction = CallDirection::Inbound;
        }),
        EndType::CustomerHungUp
    );
    assert_eq!(with(&|r| r.segment = Segment::Ivr), EndType::Ivr);
    assert_eq!(EndType::InboundQueueAbandoned.label(), "（呼入）排队放弃");
    assert_eq!(EndType::AllReleased.code(), 220);
}

// -------------------------------------------------------------------------------------------
// 话单推送 (L357-448)

/// Every field of the CDR table marked 确认删除 in 是否必传 or 删除 in 备注 (L373-440).
const CDR_DELETED: [&str; 25] = [
    "seq",
    "VCCID",
    "DEPARTMENT",
    "USERID",
    "TRANSFERNUMBER",
    "ROUTESERVICEID",
    "ROUTEDEST",
    "DESTAGENTID",
    "ROUTEREASON",
    "MSSERVER",
    "MEDIA",
    "TRANSPARAM",
    "CALLDATA",
    "ENDCALLDATA",
    "VCCNAME",
    "FAILREASON",
    "SMRESCODE",
    "SMMSGID",
    "CONTRACTORID",
    "CONTRACTORNAME",
    "SUBCONTRACTORID",
    "SUBCONTRACTORNAME",
    "PROJECTID",
    "PROJECTNAME",
    "PROJECTTYPE",
];

#[test]
fn cdr_push_field_for_field_and_no_deleted_field() {
    let record = outbound_example();
    let m = to_grid(&record, &TimeFormat::default());
    // The table's rows in order (L373-440) minus the deleted ones and the undecided
    // ORIGAGENTNUMBER/ORIGAGENTID; values from the record by the table's meanings.
    assert_fields(
        &m,
        &[
            ("streamnumber", "1723826948000809937154930119398400"),
            ("callId", "8099371549301193984"),
            ("sId", "8099371549301193984"),
            ("TYPE", "2"),      // 坐席呼叫
            ("DIRECTION", "2"), // 呼出
            ("SERVICE", "3"),   // 坐席外呼
            ("CALLTYPE", "1"),  // 外部呼叫
            ("USERNUMBER", "15835102037"),
            ("AREACODE", "0351"),
            ("SERVICEID", ""),
            ("DETAIL", "NORMAL_CLEARING"),
            ("AGENTNUMBER", "70007"),
            ("AGENTID", "songbo"),
            ("AGENTNAME", "宋博"),
            ("STARTTIME", "2024-08-17 00:49:08"),
            ("RINGTIME", "2024-08-17 00:49:09"),
            ("ANSWERTIME", "2024-08-17 00:49:13"),
            ("RINGSECONDS", "4"),
            ("ANSWERSECONDS", "40"),
            ("QUEUESECONDS", "0"),
            ("DURATION", "45"),
            ("ENDTIME", "2024-08-17 00:49:53"),
            ("ANSWERFLAG", "1"),  // 接通
            ("CALLRESCODE", "1"), // 用户挂机
            ("CALLENDCAUSE", "0"),
            ("ROUTERESCODE", ""),
            ("ROUTEENDCAUSE", "-1"),
            ("ORIGCALLED", "15835102037"),
            ("SRFMSGID", "2024/08/17/8099371549301193984.wav"),
            ("SERVICENAME", ""),
            ("SESSIONSTOPTIME", "2024-08-17 00:49:53"),
            ("ORGNO", "14101"),
            ("ORGName", "太原供电公司"),
            ("dataSrc", "0"),
            ("ym", "202408"),
            ("currentCallType", "02"),
            ("callContent", ""),
            ("callTrack", "02"),
        ],
        "CDR push",
    );
    for deleted in CDR_DELETED
        .iter()
        .chain(&["ORIGAGENTNUMBER", "ORIGAGENTID"])
    {
        assert!(!m.contains_key(*deleted), "deleted field {deleted} sent");
    }
    // No deleted field in the detail push either (case-insensitively, CALLDATA vs calldata is
    // the envelope's own key and not a CDR field).
    let d = detail::to_detail(
        &record,
        "VEIP",
        0,
        &DetailExtras::default(),
        &DetailFormat::default(),
    );
    let cd = d.body()["calldata"].as_object().unwrap();
    for deleted in CDR_DELETED {
        assert!(!cd.contains_key(deleted), "{deleted}");
    }
}

// -------------------------------------------------------------------------------------------
// 坐席事件（坐席考勤）推送 (L454-495)

const EXT: &str = "8001";
/// 2024-08-15 21:00:00 +08: the seat is created (signed out from here).
const T0: u64 = 1_723_726_800_000;
/// 21:30:00: sign-in.
const T_SIGNIN: u64 = 1_723_728_600_000;
/// 21:30:10: idle.
const T_IDLE: u64 = 1_723_728_610_000;
/// 21:39:41 ring, 21:39:45 answer, 21:41:02 hang-up (the digest's CDR example times).
const T_RING: u64 = 1_723_729_181_000;
const T_ANSWER: u64 = 1_723_729_185_000;
const T_END: u64 = 1_723_729_262_000;
/// 21:45:00: heartbeat.
const T_HEARTBEAT: u64 = 1_723_729_500_000;
/// 21:50:00: busy.
const T_BUSY: u64 = 1_723_729_800_000;
/// 22:00:00.400: sign-out.
const T_SIGNOUT: u64 = 1_723_730_400_400;
/// 22:10:00: sign-in again.
const T_SIGNIN2: u64 = 1_723_731_000_000;

const AGENT_KEYS: [&str; 16] = [
    "steamNumber",
    "ym",
    "ssid",
    "agentId",
    "agentName",
    "callId",
    "event",
    "esate",
    "estateName",
    "etime",
    "lastState",
    "lastTime",
    "lastDuration",
    "inOutDuration",
    "ip",
    "mac",
];

fn agent_format() -> AgentEventFormat {
    let mut cfg = AgentEventConfig::default();
    cfg.macs.insert(EXT.into(), "00-11-22-33-44-55".into());
    AgentEventFormat::new(&cfg).unwrap()
}

const WHO: AgentInfo<'static> = AgentInfo {
    agent_id: Some("a1001"),
    agent_name: "张三",
};

fn transitions(evs: Vec<AgentEvent>) -> Vec<AgentEvent> {
    evs.into_iter()
        .filter(|e| matches!(e.kind, AgentEventKind::Transition(_)))
        .collect()
}

/// Expected agent-event payload as (key, value) pairs in contract order.
#[allow(clippy::too_many_arguments)]
fn expected_agent(
    steam: &str,
    ssid: &str,
    call_id: &str,
    event: &str,
    esate: (&str, &str),
    etime: &str,
    last: (&str, &str, &str),
    in_out: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("steamNumber", steam.into()),
        ("ym", "202408".into()),
        ("ssid", ssid.into()),
        ("agentId", "a1001".into()),
        ("agentName", "张三".into()),
        ("callId", call_id.into()),
        ("event", event.into()),
        ("esate", esate.0.into()),
        ("estateName", esate.1.into()),
        ("etime", etime.into()),
        ("lastState", last.0.into()),
        ("lastTime", last.1.into()),
        ("lastDuration", last.2.into()),
        ("inOutDuration", in_out.into()),
        ("ip", "10.1.2.3".into()),
        ("mac", "00:11:22:33:44:55".into()),
    ]
}

fn check_agent(m: &Map<String, Value>, expected: Vec<(&'static str, String)>, what: &str) {
    let pairs: Vec<(&str, &str)> = expected.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_fields(m, &pairs, what);
    assert!(!m.contains_key("port"), "{what}: port is deleted (L488)");
}

#[test]
fn agent_events_from_the_presence_core_field_for_field() {
    let fmt = agent_format();
    let mut p = Presence::new(
        AgentConfig {
            acw_ms: 0,
            idle_after_rest: false,
        },
        DayClock::new("Asia/Shanghai").unwrap(),
        T0,
    );
    p.add_seat(EXT, None, Some("a1001".into()), false, None, T0);
    let ip: IpAddr = "10.1.2.3".parse().unwrap();
    // A registration alone is no attendance event.
    let reg = p.registration(EXT, true, Some(ip), T0 + 60_000);
    assert_eq!(reg.len(), 1);
    assert!(agent_event::from_event(&reg[0], &WHO, 1, &fmt).is_none());

    let mut seq = 0u64;
    let mut push = |e: &AgentEvent| {
        seq += 1;
        agent_event::from_event(e, &WHO, seq, &fmt).expect("a transition is pushed")
    };

    // Sign-in at 21:30:00 after 30 min signed out (since the seat appeared at 21:00:00).
    let evs = transitions(p.command(EXT, Command::SignIn, T_SIGNIN).unwrap());
    assert_eq!(evs.len(), 1);
    let signin = push(&evs[0]);
    check_agent(
        signin.body(),
        expected_agent(
            "172372860000000000000000000000001",
            "1723728600000",
            "",
            "1",
            ("1", "签入"),
            "20240815213000",
            ("0", "20240815210000", "1800"),
            "1800",
        ),
        "sign-in",
    );
    assert_eq!(signin.lane_key(), "a1001");
    assert_eq!(
        signin.idempotency_key(),
        "172372860000000000000000000000001"
    );

    // Idle 10 s later: not a sign-in/out boundary, so inOutDuration is empty.
    let evs = transitions(p.command(EXT, Command::SetIdle, T_IDLE).unwrap());
    check_agent(
        push(&evs[0]).body(),
        expected_agent(
            "172372861000000000000000000000002",
            "1723728600000",
            "",
            "1",
            ("2", "空闲"),
            "20240815213010",
            ("1", "20240815213000", "10"),
            "",
        ),
        "idle",
    );

    // A call: ring (9:31 after idle), answer (4 s), hang-up (77 s) back to idle.
    let call = |phase: CallPhase, at_ms: u64| CallEvent {
        call_id: CallId("c-1".into()),
        extension: EXT.into(),
        direction: CallDirection::Inbound,
        phase,
        remote_number: Some("13900000000".into()),
        task_code: None,
        at_ms,
    };
    let ring = transitions(p.call_event(&call(CallPhase::Ringing, T_RING)).unwrap());
    check_agent(
        push(&ring[0]).body(),
        expected_agent(
            "172372918100000000000000000000003",
            "1723728600000",
            "c-1",
            "1",
            ("9", "振铃"),
            "20240815213941",
            ("2", "20240815213010", "571"),
            "",
        ),
        "ringing",
    );
    let answer = transitions(p.call_event(&call(CallPhase::Answered, T_ANSWER)).unwrap());
    check_agent(
        push(&answer[0]).body(),
        expected_agent(
            "172372918500000000000000000000004",
            "1723728600000",
            "c-1",
            "1",
            ("13", "通话"),
            "20240815213945",
            ("9", "20240815213941", "4"),
            "",
        ),
        "talking",
    );
    let end = transitions(
        p.call_event(&call(
            CallPhase::Ended {
                q850: Some(16),
                agent_hung_up: Some(false),
            },
            T_END,
        ))
        .unwrap(),
    );
    check_agent(
        push(&end[0]).body(),
        expected_agent(
            "172372926200000000000000000000005",
            "1723728600000",
            "c-1",
            "1",
            ("2", "空闲"),
            "20240815214102",
            ("13", "20240815213945", "77"),
            "",
        ),
        "call ended",
    );

    // Heartbeat at 21:45:00: the current state, lastDuration "0" (L484).
    let status = AgentStatus::of_seat(EXT, p.seat(EXT).unwrap());
    let hb = agent_event::heartbeat(&status, &WHO, 100, T_HEARTBEAT, &fmt).unwrap();
    check_agent(
        hb.body(),
        expected_agent(
            "172372950000000000000000000000100",
            "1723728600000",
            "",
            "1",
            ("2", "空闲"),
            "20240815214500",
            ("2", "20240815214102", "0"),
            "",
        ),
        "heartbeat",
    );

    let busy = transitions(
        p.command(EXT, Command::SetBusy(NotReadyReason::MANUAL), T_BUSY)
            .unwrap(),
    );
    check_agent(
        push(&busy[0]).body(),
        expected_agent(
            "172372980000000000000000000000006",
            "1723728600000",
            "",
            "1",
            ("3", "示忙"),
            "20240815215000",
            ("2", "20240815214102", "538"),
            "",
        ),
        "busy",
    );

    // Sign-out at 22:00:00.400: event 0, inOutDuration = signed-in time 30:00.4 → 1800.
    let out = transitions(p.command(EXT, Command::SignOut, T_SIGNOUT).unwrap());
    check_agent(
        push(&out[0]).body(),
        expected_agent(
            "172373040040000000000000000000007",
            "1723728600000",
            "",
            "0",
            ("0", "签出"),
            "20240815220000",
            ("3", "20240815215000", "600"),
            "1800",
        ),
        "sign-out",
    );
    // No heartbeat while signed out.
    let status = AgentStatus::of_seat(EXT, p.seat(EXT).unwrap());
    assert!(agent_event::heartbeat(&status, &WHO, 101, T_SIGNOUT + 1, &fmt).is_none());

    // Sign-in again at 22:10:00: event 1, inOutDuration = signed-out time 9:59.6 → 600, and a
    // new ssid.
    let again = transitions(p.command(EXT, Command::SignIn, T_SIGNIN2).unwrap());
    check_agent(
        push(&again[0]).body(),
        expected_agent(
            "172373100000000000000000000000008",
            "1723731000000",
            "",
            "1",
            ("1", "签入"),
            "20240815221000",
            ("0", "20240815220000", "600"),
            "600",
        ),
        "second sign-in",
    );
}

#[test]
fn agent_event_aliases_rename_the_keys_in_place() {
    let cfg = AgentEventConfig {
        stream_number_key: "streamNumber".into(),
        state_key: "estate".into(),
        year_month_key: "yearMonth".into(),
        ..AgentEventConfig::default()
    };
    let fmt = AgentEventFormat::new(&cfg).unwrap();
    let status = AgentStatus {
        extension: "8002".into(),
        agent_id: None,
        state: AgentState::Rest {
            reason: RestReason(1),
            until_ms: None,
        },
        since_ms: T0,
        signin_session: Some(T0),
        call_id: None,
        source_ip: None,
    };
    let hb = agent_event::heartbeat(&status, &AgentInfo::default(), 7, T0 + 1_000, &fmt).unwrap();
    let mut want = AGENT_KEYS.to_vec();
    want[0] = "streamNumber";
    want[1] = "yearMonth";
    want[7] = "estate";
    assert_eq!(keys(hb.body()), want);
    assert_eq!(hb.body()["estate"], s("16"));
    assert_eq!(hb.body()["estateName"], s("小休"));
    // No agent id anywhere: the extension stands in, for the body and the lane.
    assert_eq!(hb.body()["agentId"], s("8002"));
    assert_eq!(hb.lane_key(), "8002");
    assert_eq!(hb.body()["ip"], s(""));
    assert_eq!(hb.body()["mac"], s(""));
    assert_all_strings(hb.body(), "heartbeat");
}

// -------------------------------------------------------------------------------------------
// 坐席信息变更推送 (L534-568) and 网格接入号信息变更推送 (L574-610)

fn agent(id: &str, name: &str, ext: Option<&str>, groups: &[&str]) -> Agent {
    Agent {
        agent_id: id.into(),
        name: name.into(),
        department: "客服部".into(),
        org_no: "64401".into(),
        org_name: "银川供电公司".into(),
        extension: ext.map(Into::into),
        skill_groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

fn group(id: &str, name: &str) -> SkillGroup {
    SkillGroup {
        id: id.into(),
        name: name.into(),
    }
}

#[test]
fn agent_diff_produces_01_02_03_in_order_field_for_field() {
    let groups = [group("sg-1", "银川报修组"), group("sg-2", "投诉组")];
    let old = [
        agent("a1", "张三", Some("8001"), &["sg-1"]),
        agent("a2", "李四", Some("8002"), &["sg-1"]),
    ];
    let new = [
        // a1 moves to extension 8003 and gains sg-2; a2 is gone; a3 is new, without a
        // department.
        agent("a1", "张三", Some("8003"), &["sg-2", "sg-1"]),
        Agent {
            department: String::new(),
            ..agent("a3", "王五", None, &[])
        },
    ];
    let changes = diff_agents(
        AgentSnapshot {
            agents: &old,
            skill_groups: &groups,
        },
        AgentSnapshot {
            agents: &new,
            skill_groups: &groups,
        },
    );
    let kinds: Vec<ChangeType> = changes.iter().map(|c| c.change).collect();
    assert_eq!(
        kinds,
        [ChangeType::Delete, ChangeType::Modify, ChangeType::Add]
    );
    let cfg = ChangesConfig {
        default_agent_dept: "根部门".into(),
        ..ChangesConfig::default()
    };
    let sg = |no: &str, name: &str| {
        let mut m = Map::new();
        m.insert("skgroupNo".into(), s(no));
        m.insert("skgroupName".into(), s(name));
        Value::Object(m)
    };
    let expected = [
        serde_json::json!({
            "changeType": "02", "agentId": "a2", "agentName": "李四", "agentDept": "客服部",
            "orgName": "银川供电公司", "orgNo": "64401", "telephoneNumber": "8002",
            "skgroups": [sg("sg-1", "银川报修组")]
        }),
        serde_json::json!({
            "changeType": "03", "agentId": "a1", "agentName": "张三", "agentDept": "客服部",
            "orgName": "银川供电公司", "orgNo": "64401", "telephoneNumber": "8003",
            "skgroups": [sg("sg-1", "银川报修组"), sg("sg-2", "投诉组")]
        }),
        serde_json::json!({
            "changeType": "01", "agentId": "a3", "agentName": "王五", "agentDept": "根部门",
            "orgName": "银川供电公司", "orgNo": "64401", "telephoneNumber": "",
            "skgroups": []
        }),
    ];
    let order = [
        "changeType",
        "agentId",
        "agentName",
        "agentDept",
        "orgName",
        "orgNo",
        "telephoneNumber",
        "skgroups",
    ];
    for (c, want) in changes.iter().zip(&expected) {
        let push = c.to_push(&cfg);
        assert_eq!(keys(push.body()), order);
        assert_eq!(&Value::Object(push.body().clone()), want);
        assert_eq!(push.lane_key(), c.agent.agent_id);
        // Deterministic key: the same change again dedups.
        assert_eq!(
            push.idempotency_key(),
            c.clone().to_push(&cfg).idempotency_key()
        );
    }
    let keys_of: Vec<String> = changes
        .iter()
        .map(|c| c.to_push(&cfg).idempotency_key().to_owned())
        .collect();
    assert_ne!(keys_of[0], keys_of[1]);
    assert_ne!(keys_of[1], keys_of[2]);

    // Nothing changed: nothing to push.
    let same = AgentSnapshot {
        agents: &new,
        skill_groups: &groups,
    };
    assert!(diff_agents(same, same).is_empty());
}

fn access(num: &str, remark: &str) -> AccessNumber {
    AccessNumber {
        access_num: num.into(),
        ent_id: String::new(),
        org_no: "6440101".into(),
        org_name: "兴庆供电所".into(),
        city_no: "64401".into(),
        city_name: "银川".into(),
        remark: remark.into(),
        grid_no: "G-001".into(),
        skill_groups: "sg-1,sg-2".into(),
    }
}

#[test]
fn access_number_diff_field_for_field() {
    let old = [access("09511000", "旧"), access("09512000", "x")];
    let new = [access("09513000", "新"), access("09511000", "新描述")];
    let changes = diff_access_numbers(&old, &new);
    let cfg = ChangesConfig {
        default_ent_id: "NX".into(),
        ..ChangesConfig::default()
    };
    let order = [
        "changeType",
        "entId",
        "accessNum",
        "orgNo",
        "orgName",
        "cityNo",
        "cityName",
        "remark",
        "girdNo",
        "skgroups",
    ];
    let row = |ct: &'static str, num: &'static str, remark: &'static str| {
        vec![
            ("changeType", ct),
            ("entId", "NX"),
            ("accessNum", num),
            ("orgNo", "6440101"),
            ("orgName", "兴庆供电所"),
            ("cityNo", "64401"),
            ("cityName", "银川"),
            ("remark", remark),
            ("girdNo", "G-001"),
            ("skgroups", "sg-1,sg-2"),
        ]
    };
    let expected = [
        row("02", "09512000", "x"),
        row("03", "09511000", "新描述"),
        row("01", "09513000", "新"),
    ];
    assert_eq!(changes.len(), 3);
    for (c, want) in changes.iter().zip(&expected) {
        let push = c.to_push(&cfg);
        assert_eq!(keys(push.body()), order);
        assert_fields(push.body(), want, "access number");
        assert_eq!(push.lane_key(), c.number.access_num);
    }
    assert!(diff_access_numbers(&new, &new).is_empty());
}

// -------------------------------------------------------------------------------------------
// Properties

fn arb_state() -> impl Strategy<Value = AgentState> {
    prop_oneof![
        Just(AgentState::SignedOut),
        any::<u16>().prop_map(|r| AgentState::NotReady {
            reason: NotReadyReason(r)
        }),
        Just(AgentState::Idle),
        Just(AgentState::Reserved),
        Just(AgentState::Talking),
        Just(AgentState::Hold),
        any::<u64>().prop_map(|until_ms| AgentState::AfterCallWork { until_ms }),
        (any::<u8>(), any::<Option<u64>>()).prop_map(|(r, until_ms)| AgentState::Rest {
            reason: RestReason(r),
            until_ms
        }),
    ]
}

fn arb_record() -> impl Strategy<Value = CallRecord> {
    (
        (
            any::<u64>(),
            any::<u64>(),
            any::<Option<u64>>(),
            any::<u64>(),
        ),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        (0..3u8, any::<bool>(), 0..3u8, 0..7u8, any::<i32>()),
        (".{0,8}", ".{0,8}", proptest::option::of(".{0,8}")),
    )
        .prop_map(
            |(
                (start, end, answer, stop),
                (ring, talk, queue, dur),
                (seg, inbound, flag, res, cause),
                (num, sid, rec),
            )| {
                let mut r = outbound_example();
                r.start_ms = start;
                r.end_ms = end;
                r.answer_ms = answer;
                r.session_stop_ms = stop;
                r.ring_secs = ring;
                r.answer_secs = talk;
                r.queue_secs = queue;
                r.duration_secs = dur;
                r.segment = [Segment::Queue, Segment::Ivr, Segment::Agent][seg as usize];
                r.direction = if inbound {
                    CallDirection::Inbound
                } else {
                    CallDirection::Outbound
                };
                r.answer_flag = [
                    AnswerFlag::NotApplicable,
                    AnswerFlag::Connected,
                    AnswerFlag::NotConnected,
                ][flag as usize];
                r.result = [
                    CallResult::None,
                    CallResult::UserHungUp,
                    CallResult::UserNotReached,
                    CallResult::AgentHungUp,
                    CallResult::AgentNotReached,
                    CallResult::AgentAppHungUp,
                    CallResult::AgentTransferred,
                ][res as usize];
                r.end_cause = cause;
                r.user_number = num;
                r.session_id = sid;
                r.recording = rec;
                if start % 2 == 0 {
                    r.agent = None;
                }
                r
            },
        )
}

proptest! {
    #[test]
    fn steam_numbers_are_digits_and_unique(a in any::<u64>(), b in any::<u64>(), ms in any::<u64>(), ms2 in any::<u64>()) {
        let x = agent_event::steam_number(ms, a);
        prop_assert!(x.bytes().all(|c| c.is_ascii_digit()));
        prop_assert!(x.len() >= 33);
        if a != b {
            prop_assert_ne!(x, agent_event::steam_number(ms2, b));
        }
    }

    #[test]
    fn agent_event_serializer_never_panics(
        from in arb_state(), to in arb_state(), since in any::<u64>(), at in any::<u64>(),
        dur in any::<u64>(), session in any::<Option<u64>>(), seq in any::<u64>(),
        call in proptest::option::of(".{0,12}"), v6 in any::<bool>(), ip in any::<u128>(),
    ) {
        let source_ip: IpAddr = if v6 { Ipv6Addr::from(ip).into() } else { Ipv4Addr::from(ip as u32).into() };
        let ev = AgentEvent {
            extension: "8001".into(),
            project: None,
            agent_id: None,
            kind: AgentEventKind::Transition(Transition {
                from: from.clone(),
                to: to.clone(),
                from_since_ms: since,
                at_ms: at,
                duration_ms: dur,
                signin_session: session,
                call_id: call.clone().map(CallId),
            }),
            state: to.clone(),
            registered: true,
            call: None,
            signin_session: session,
            source_ip: Some(source_ip),
            at_ms: at,
        };
        let fmt = AgentEventFormat::default();
        let p = agent_event::from_event(&ev, &WHO, seq, &fmt).unwrap();
        prop_assert_eq!(keys(p.body()), AGENT_KEYS.to_vec());
        for (k, v) in p.body() {
            prop_assert!(v.is_string(), "{} not a string", k);
        }
        prop_assert!(p.idempotency_key().bytes().all(|c| c.is_ascii_digit()));
        let event = if to == AgentState::SignedOut { "0" } else { "1" };
        prop_assert_eq!(&p.body()["event"], &s(event));
        let status = AgentStatus {
            extension: "8001".into(), agent_id: None, state: to, since_ms: since,
            signin_session: session, call_id: call.map(CallId), source_ip: Some(source_ip),
        };
        if let Some(hb) = agent_event::heartbeat(&status, &WHO, seq, at, &fmt) {
            prop_assert_eq!(&hb.body()["lastDuration"], &s("0"));
            prop_assert_eq!(&hb.body()["event"], &s("1"));
        }
    }

    #[test]
    fn call_record_serializers_never_panic(r in arb_record(), push in any::<u64>(), ent in ".{0,6}", omit in any::<bool>()) {
        let m = to_grid(&r, &TimeFormat::default());
        prop_assert_eq!(m.len(), 38);
        for v in m.values() {
            prop_assert!(v.is_string());
        }
        let fmt = DetailFormat::new(&DetailConfig { omit_empty: omit, ..DetailConfig::default() }).unwrap();
        let d = detail::to_detail(&r, &ent, push, &DetailExtras::default(), &fmt);
        let cd = d.body()["calldata"].as_object().unwrap();
        for v in cd.values() {
            prop_assert!(v.is_string());
        }
        let sign = d.body()["signStr"].as_str().unwrap();
        prop_assert_eq!(sign.len(), 32);
        prop_assert!(sign.bytes().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c)));
        let code: u16 = cd["endType"].as_str().unwrap().parse().unwrap();
        prop_assert!([200, 202, 204, 205, 210, 211, 216, 217, 218, 219, 220, 251, 252].contains(&code));
    }

    #[test]
    fn diffs_are_exact(
        old in proptest::collection::vec((0..6u8, 0..3u8, 0..3u8), 0..6),
        new in proptest::collection::vec((0..6u8, 0..3u8, 0..3u8), 0..6),
    ) {
        let mk = |v: &Vec<(u8, u8, u8)>| -> Vec<Agent> {
            v.iter().map(|(id, name, g)| {
                agent(&format!("a{id}"), &format!("n{name}"), None, &[["sg-1", "sg-2", "sg-3"][*g as usize]])
            }).collect()
        };
        let (o, n) = (mk(&old), mk(&new));
        let groups = [group("sg-1", "一"), group("sg-2", "二")];
        let snap = |a: &[Agent]| -> Vec<Agent> { a.to_vec() };
        let (o, n) = (snap(&o), snap(&n));
        let so = AgentSnapshot { agents: &o, skill_groups: &groups };
        let sn = AgentSnapshot { agents: &n, skill_groups: &groups };
        prop_assert!(diff_agents(so, so).is_empty());
        let d = diff_agents(so, sn);
        let first = |a: &[Agent], id: &str| a.iter().find(|x| x.agent_id == id).cloned();
        for c in &d {
            let id = &c.agent.agent_id;
            match c.change {
                ChangeType::Add => prop_assert!(first(&o, id).is_none() && first(&n, id).is_some()),
                ChangeType::Delete => prop_assert!(first(&o, id).is_some() && first(&n, id).is_none()),
                ChangeType::Modify => prop_assert_ne!(first(&o, id), first(&n, id)),
            }
        }
        // Each key at most once, and in deletes-modifies-adds order.
        let ranks: Vec<u8> = d.iter().map(|c| match c.change {
            ChangeType::Delete => 0, ChangeType::Modify => 1, ChangeType::Add => 2,
        }).collect();
        prop_assert!(ranks.windows(2).all(|w| w[0] <= w[1]));
        let mut ids: Vec<&str> = d.iter().map(|c| c.agent.agent_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        prop_assert_eq!(ids.len(), d.len());
    }
}
