//! The mapping tables behind the seed 000 fields marked 需梳理 ("to be worked out"): hang-up
//! causes to `CALLENDCAUSE`, dialer modes to `SERVICE`, queues to skill groups, number
//! prefixes to area codes. They live in config (`[cdr.mapping]`) with defaults a FreeSWITCH
//! contact center would pick; `config/gridedge.toml` documents each table.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[cdr.mapping]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdrMapping {
    /// FreeSWITCH hang-up cause → `CALLENDCAUSE` (0 normal, 1 picked up elsewhere, 2 released
    /// by an application, 3 abnormal, 4 maximum duration). Causes not listed get
    /// `default_end_cause`.
    pub end_causes: BTreeMap<String, i32>,
    pub default_end_cause: i32,
    /// Dialer mode (the `gridedge_service` channel variable, as the dialer sets it) →
    /// `SERVICE`. A numeric variable value is used as the code directly.
    pub services: BTreeMap<String, u8>,
    /// `SERVICE` for calls FreeSWITCH originated without a dialer mode (e.g. `bgapi originate`
    /// by another tool).
    pub originated_service: u8,
    /// mod_callcenter queue name → skill group id (`SERVICEID`); the name comes from the
    /// directory. Unlisted queues are looked up as skill group ids or names directly, after
    /// dropping an `@domain` suffix.
    pub queues: BTreeMap<String, String>,
    /// Number prefix → `AREACODE`; the longest matching prefix wins.
    pub area_codes: BTreeMap<String, String>,
    /// An inbound leg the switch answered at least this long before handing it to a queue or
    /// an agent spent that time in an IVR, which becomes its own segment.
    pub ivr_min_ms: u64,
    /// `currentCallType` per segment kind ("" = not sent).
    pub current_call_type_agent: String,
    pub current_call_type_ivr: String,
    /// `callTrack` for calls that reached an agent, and for the rest.
    pub call_track_agent: String,
    pub call_track_other: String,
}

impl Default for CdrMapping {
    fn default() -> Self {
        let end_causes = [
            // Normal ends.
            ("NORMAL_CLEARING", 0),
            ("ORIGINATOR_CANCEL", 0),
            ("NORMAL_UNSPECIFIED", 0),
            ("USER_BUSY", 0),
            ("NO_ANSWER", 0),
            ("NO_USER_RESPONSE", 0),
            ("CALL_REJECTED", 0),
            ("SUBSCRIBER_ABSENT", 0),
            ("UNALLOCATED_NUMBER", 0),
            ("USER_NOT_REGISTERED", 0),
            // Picked up elsewhere (call pickup, another phone of a ring group answered).
            ("PICKED_OFF", 1),
            ("LOSE_RACE", 1),
            // Released by an application or operator.
            ("MANAGER_REQUEST", 2),
            ("BLIND_TRANSFER", 2),
            ("ATTENDED_TRANSFER", 2),
            // Maximum duration (sched_hangup, limit).
            ("ALLOTTED_TIMEOUT", 4),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let services = [
            ("inbound", 0),
            ("precise", 1),
            ("preview", 2),
            ("agent_outbound", 3),
            ("ivr_outbound", 4),
            ("internal", 5),
            ("consult", 6),
            ("transfer_in", 7),
            ("progressive", 12),
            ("predictive", 13),
            ("precise_preview", 14),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Self {
            end_causes,
            // Everything unlisted (media timeouts, gateway failures, ...) is abnormal.
            default_end_cause: 3,
            services,
            originated_service: 4,
            queues: BTreeMap::new(),
            area_codes: BTreeMap::new(),
            ivr_min_ms: 1000,
            current_call_type_agent: "02".into(),
            current_call_type_ivr: String::new(),
            call_track_agent: "02".into(),
            call_track_other: String::new(),
        }
    }
}

impl CdrMapping {
    pub fn end_cause(&self, cause: &str) -> i32 {
        self.end_causes
            .get(cause)
            .copied()
            .unwrap_or(self.default_end_cause)
    }

    /// `SERVICE` from a `gridedge_service` value: a code or a mode name.
    pub fn service(&self, value: &str) -> Option<u8> {
        let v = value.trim();
        v.parse::<u8>()
            .ok()
            .filter(|c| *c <= 14)
            .or_else(|| self.services.get(v).copied())
    }

    pub fn area_code(&self, number: &str) -> String {
        self.area_codes
            .iter()
            .filter(|(prefix, _)| number.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, code)| code.clone())
            .unwrap_or_default()
    }

    /// Names the first table entry that is out of range, for config validation.
    pub fn validate(&self) -> Result<(), String> {
        for (cause, code) in &self.end_causes {
            if !(0..=4).contains(code) {
                return Err(format!("end_causes.{cause} = {code} is not 0-4"));
            }
        }
        if !(0..=4).contains(&self.default_end_cause) {
            return Err("default_end_cause must be 0-4".into());
        }
        for (mode, code) in &self.services {
            if *code > 14 {
                return Err(format!("services.{mode} = {code} is not 0-14"));
            }
        }
        if self.originated_service > 14 {
            return Err("originated_service must be 0-14".into());
        }
        Ok(())
    }
}
