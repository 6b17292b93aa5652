//! 呼叫平台话单推送: a [`CallRecord`] in the grid contract's exact field names (seed 000
//! L357-448).
//!
//! Every value is a JSON string, as the contract types them (and `streamnumber` does not fit
//! a u64). Fields the contract marks 确认删除/删除 (seq, VCCID, DEPARTMENT, USERID,
//! TRANSFERNUMBER, ROUTESERVICEID, ROUTEDEST, DESTAGENTID, ROUTEREASON, MSSERVER, MEDIA,
//! TRANSPARAM, CALLDATA, ENDCALLDATA, VCCNAME, FAILREASON, SMRESCODE, SMMSGID, CONTRACTOR*,
//! SUBCONTRACTOR*, PROJECT*) are never sent; ORIGAGENTNUMBER/ORIGAGENTID (undecided, "mostly
//! empty") are not sent either. The time format is not in the contract, so it is configurable
//! (default `%Y-%m-%d %H:%M:%S` in the configured zone); absent times are empty strings.
//!
//! `callId` and `sId` both carry the call's 19-digit session id, so every segment of a call
//! links by either. The contract's remark on `sId` ("same as streamnumber") would make it
//! unique per record and useless as a link; the reference payload shows `sId` = `callId`,
//! which is what is sent.

use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::cdr::record::CallRecord;
use crate::events::CallDirection;

/// Every key the CDR push carries, in the contract's order.
pub const CDR_FIELDS: &[&str] = &[
    "streamnumber",
    "callId",
    "sId",
    "TYPE",
    "DIRECTION",
    "SERVICE",
    "CALLTYPE",
    "USERNUMBER",
    "AREACODE",
    "SERVICEID",
    "DETAIL",
    "AGENTNUMBER",
    "AGENTID",
    "AGENTNAME",
    "STARTTIME",
    "RINGTIME",
    "ANSWERTIME",
    "RINGSECONDS",
    "ANSWERSECONDS",
    "QUEUESECONDS",
    "DURATION",
    "ENDTIME",
    "ANSWERFLAG",
    "CALLRESCODE",
    "CALLENDCAUSE",
    "ROUTERESCODE",
    "ROUTEENDCAUSE",
    "ORIGCALLED",
    "SRFMSGID",
    "SERVICENAME",
    "SESSIONSTOPTIME",
    "ORGNO",
    "ORGName",
    "dataSrc",
    "ym",
    "currentCallType",
    "callContent",
    "callTrack",
];

/// How times are written.
#[derive(Debug, Clone)]
pub struct TimeFormat {
    pub pattern: String,
    pub zone: TimeZone,
}

impl TimeFormat {
    /// `pattern` is a strftime pattern (jiff's `strtime`); `zone` an IANA name.
    pub fn new(pattern: &str, zone: &str) -> Result<TimeFormat, String> {
        let zone = TimeZone::get(zone).map_err(|e| format!("unknown time zone {zone:?}: {e}"))?;
        let f = TimeFormat {
            pattern: pattern.to_owned(),
            zone,
        };
        // Reject patterns jiff cannot render, once, here rather than on every record.
        jiff::fmt::strtime::format(&f.pattern, &Timestamp::UNIX_EPOCH.to_zoned(f.zone.clone()))
            .map_err(|e| format!("bad time format {pattern:?}: {e}"))?;
        Ok(f)
    }

    pub fn format_ms(&self, ms: u64) -> String {
        let Ok(ts) = Timestamp::from_millisecond(ms as i64) else {
            return String::new();
        };
        jiff::fmt::strtime::format(&self.pattern, &ts.to_zoned(self.zone.clone()))
            .unwrap_or_default()
    }

    /// `yyyymm` of the instant in the configured zone (the grid's partition key).
    pub fn year_month(&self, ms: u64) -> String {
        let Ok(ts) = Timestamp::from_millisecond(ms as i64) else {
            return String::new();
        };
        let z = ts.to_zoned(self.zone.clone());
        format!("{:04}{:02}", z.year(), z.month())
    }
}

impl Default for TimeFormat {
    fn default() -> Self {
        TimeFormat::new("%Y-%m-%d %H:%M:%S", "Asia/Shanghai").expect("valid default time format")
    }
}

/// The record as the grid's JSON object, keys in [`CDR_FIELDS`] order.
pub fn to_grid(record: &CallRecord, time: &TimeFormat) -> Map<String, Value> {
    let t = |ms: Option<u64>| ms.map(|m| time.format_ms(m)).unwrap_or_default();
    let agent = record.agent.as_ref();
    let values: [String; 38] = [
        record.stream_number.clone(),
        record.session_id.clone(),
        record.session_id.clone(),
        record.segment.code().to_string(),
        match record.direction {
            CallDirection::Inbound => "1",
            CallDirection::Outbound => "2",
        }
        .to_owned(),
        record.service.to_string(),
        record.scope.code().to_string(),
        record.user_number.clone(),
        record.area_code.clone(),
        record.service_id.clone(),
        record.detail.clone(),
        agent.map(|a| a.extension.clone()).unwrap_or_default(),
        agent.map(|a| a.agent_id.clone()).unwrap_or_default(),
        agent.map(|a| a.name.clone()).unwrap_or_default(),
        t(Some(record.start_ms)),
        t(record.ring_ms),
        t(record.answer_ms),
        record.ring_secs.to_string(),
        record.answer_secs.to_string(),
        record.queue_secs.to_string(),
        record.duration_secs.to_string(),
        t(Some(record.end_ms)),
        record.answer_flag.code().to_string(),
        record.result.code().to_string(),
        record.end_cause.to_string(),
        record
            .route_result
            .map(|r| r.code().to_string())
            .unwrap_or_default(),
        record.route_end_cause.to_string(),
        record.original_called.clone(),
        record.recording.clone().unwrap_or_default(),
        record.service_name.clone(),
        t(Some(record.session_stop_ms)),
        record.org_no.clone(),
        record.org_name.clone(),
        "0".to_owned(),
        time.year_month(record.start_ms),
        record.current_call_type.clone(),
        String::new(),
        record.call_track.clone(),
    ];
    CDR_FIELDS
        .iter()
        .zip(values)
        .map(|(k, v)| ((*k).to_owned(), Value::String(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_render_in_the_configured_zone() {
        let f = TimeFormat::default();
        // 2018-03-14 07:09:18 UTC = 15:09:18 in Shanghai.
        assert_eq!(f.format_ms(1_521_011_358_000), "2018-03-14 15:09:18");
        assert_eq!(f.year_month(1_521_011_358_000), "201803");
        // Month boundary in local time, not UTC: 2024-07-31 16:30 UTC is August in Shanghai.
        assert_eq!(f.year_month(1_722_443_400_000), "202408");
        let compact = TimeFormat::new("%Y%m%d%H%M%S", "UTC").unwrap();
        assert_eq!(compact.format_ms(1_521_011_358_000), "20180314070918");
        assert!(TimeFormat::new("%Y", "Mars/Base").is_err());
    }

    #[test]
    fn no_deleted_field_is_ever_sent() {
        for deleted in [
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
            "PROJECTID",
        ] {
            assert!(!CDR_FIELDS.contains(&deleted), "{deleted}");
        }
        assert_eq!(CDR_FIELDS.len(), 38);
    }
}
