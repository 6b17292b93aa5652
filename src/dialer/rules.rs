//! A campaign's per-attempt rules, sans-IO: when to call a number again (seed 000
//! `repeatConfs`, 000:L1224-1227), which caller ID to present (`outboundNumberGroups` by
//! orgNo and skill group, then the grid's 保底号码 by the city's orgNo, 000:L1236-1239,
//! L1823-1824), and when to pause a campaign that keeps failing (`continuousSeconds`,
//! `continuousFailed`, 000:L1232-1233).

use super::result::ResultDetail;

/// `repeatConfs[].status`: which results a retry rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
pub enum RetryStatus {
    /// 1 无效号码: the number does not exist.
    InvalidNumber,
    /// 2 无人接听: nobody answered (or it was busy).
    NoAnswer,
    /// 3 振铃放弃: answered, but the call was lost before a conversation (abandoned while
    /// waiting for an agent, agents busy, queue timeout).
    Abandoned,
    /// 4 线路故障: the network failed or refused the call.
    LineFault,
    /// 5 加拨零: the number does not exist as dialled; try again with a leading 0 (a local
    /// mobile dialled as long distance, or the reverse).
    AddZero,
}

impl RetryStatus {
    pub fn from_code(code: &str) -> Option<RetryStatus> {
        match code.trim() {
            "1" => Some(RetryStatus::InvalidNumber),
            "2" => Some(RetryStatus::NoAnswer),
            "3" => Some(RetryStatus::Abandoned),
            "4" => Some(RetryStatus::LineFault),
            "5" => Some(RetryStatus::AddZero),
            _ => None,
        }
    }

    /// Which statuses a result falls under (a nonexistent number matches both 1 and 5).
    fn matches(self, r: ResultDetail) -> bool {
        use ResultDetail as R;
        match self {
            RetryStatus::InvalidNumber | RetryStatus::AddZero => r == R::NoSuchNumber,
            RetryStatus::NoAnswer => matches!(r, R::NoAnswer | R::CustomerBusy),
            RetryStatus::Abandoned => matches!(
                r,
                R::HungUpWaitingForAgent
                    | R::AgentBusy
                    | R::AgentNoAnswer
                    | R::AllAgentsBusy
                    | R::QueueTimeout
            ),
            RetryStatus::LineFault => matches!(r, R::NotConnected | R::Rejected),
        }
    }
}

/// One rule: retry up to `times` times (1-5), `interval_min` minutes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct RetryRule {
    pub status: RetryStatus,
    pub times: u8,
    pub interval_min: u32,
}

/// The next attempt of a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    pub at_ms: u64,
    /// The number to dial (with the leading 0 for `AddZero`).
    pub number: String,
}

/// The rule that covers `result`, if any (each rule has its own retry budget).
pub fn matching_rule(rules: &[RetryRule], result: ResultDetail) -> Option<&RetryRule> {
    rules.iter().find(|r| r.status.matches(result))
}

impl RetryStatus {
    /// Seed 000's code (`repeatConfs[].status`).
    pub fn code(self) -> u8 {
        match self {
            RetryStatus::InvalidNumber => 1,
            RetryStatus::NoAnswer => 2,
            RetryStatus::Abandoned => 3,
            RetryStatus::LineFault => 4,
            RetryStatus::AddZero => 5,
        }
    }
}

/// Whether and when to call again after `result`, given how many retries this number already
/// had under the matching rule. Connected calls are never retried; neither is a number whose
/// `AddZero` variant was already tried.
pub fn next_retry(
    rules: &[RetryRule],
    result: ResultDetail,
    number: &str,
    retries_so_far: u8,
    now_ms: u64,
) -> Option<Retry> {
    if matches!(
        result,
        ResultDetail::AgentHungUp | ResultDetail::CustomerHungUp
    ) {
        return None;
    }
    let rule = rules.iter().find(|r| r.status.matches(result))?;
    if retries_so_far >= rule.times.min(5) {
        return None;
    }
    let number = if rule.status == RetryStatus::AddZero {
        if number.starts_with('0') || number.starts_with('+') {
            return None;
        }
        format!("0{number}")
    } else {
        number.to_owned()
    };
    Some(Retry {
        at_ms: now_ms.saturating_add(u64::from(rule.interval_min) * 60_000),
        number,
    })
}

/// `outboundNumberGroups[]`: a caller ID for an org (and skill group).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct CallerIdGroup {
    pub org_no: String,
    pub service_id: Option<String>,
    pub outbound_number: String,
}

/// Why no caller ID could be chosen: the seed says the import fails (L1823).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no caller ID for orgNo {org_no:?} (serviceId {service_id:?}) and no 保底号码 for cityOrgNo {city_org_no:?}")]
pub struct NoCallerId {
    pub org_no: String,
    pub service_id: Option<String>,
    pub city_org_no: String,
}

/// The caller ID for a number: the campaign's group for orgNo and skill group, then for
/// orgNo alone, then the grid's 保底号码 (`fallback`, e.g. the grid API's
/// `fallback_caller_id`) for the city's orgNo.
pub fn choose_caller_id(
    groups: &[CallerIdGroup],
    org_no: &str,
    service_id: Option<&str>,
    city_org_no: &str,
    fallback: impl Fn(&str, Option<&str>) -> Option<String>,
) -> Result<String, NoCallerId> {
    let exact = service_id.and_then(|sid| {
        groups
            .iter()
            .find(|g| g.org_no == org_no && g.service_id.as_deref() == Some(sid))
    });
    let by_org = || groups.iter().find(|g| g.org_no == org_no);
    if let Some(g) = exact.or_else(by_org) {
        return Ok(g.outbound_number.clone());
    }
    fallback(city_org_no, service_id).ok_or_else(|| NoCallerId {
        org_no: org_no.to_owned(),
        service_id: service_id.map(str::to_owned),
        city_org_no: city_org_no.to_owned(),
    })
}

/// Why a campaign paused itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseReason {
    /// `continuousSeconds` calls in a row answered and hung up within `short_call_ms`
    /// (秒挂: a list of wrong numbers, or a caller ID people reject).
    ShortCalls(u32),
    /// `continuousFailed` attempts in a row not connected (a dead trunk, a bad list).
    Failures(u32),
}

/// Counts consecutive short calls and failures; a connected call of normal length resets
/// both. Thresholds of 0 disable a guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureGuard {
    pub continuous_seconds: u32,
    pub continuous_failed: u32,
    pub short_call_ms: u64,
    short: u32,
    failed: u32,
}

impl FailureGuard {
    /// The seed's defaults: 20 short calls, 50 failures (000:L1232-1233); short is under 3 s.
    pub fn new(continuous_seconds: u32, continuous_failed: u32) -> Self {
        FailureGuard {
            continuous_seconds,
            continuous_failed,
            short_call_ms: 3_000,
            short: 0,
            failed: 0,
        }
    }

    /// Records one finished attempt; `talk_ms` for connected calls. Returns a reason when
    /// the campaign must pause (and resets the counters, so resuming starts afresh).
    pub fn observe(&mut self, result: ResultDetail, talk_ms: Option<u64>) -> Option<PauseReason> {
        let connected = matches!(
            result,
            ResultDetail::AgentHungUp | ResultDetail::CustomerHungUp
        );
        if connected {
            self.failed = 0;
            if talk_ms.is_some_and(|t| t < self.short_call_ms) {
                self.short += 1;
            } else {
                self.short = 0;
            }
        } else {
            self.failed += 1;
        }
        let reason = if self.continuous_seconds > 0 && self.short >= self.continuous_seconds {
            Some(PauseReason::ShortCalls(self.short))
        } else if self.continuous_failed > 0 && self.failed >= self.continuous_failed {
            Some(PauseReason::Failures(self.failed))
        } else {
            None
        };
        if reason.is_some() {
            self.short = 0;
            self.failed = 0;
        }
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ResultDetail as R;

    fn rule(status: RetryStatus, times: u8, interval_min: u32) -> RetryRule {
        RetryRule {
            status,
            times,
            interval_min,
        }
    }

    #[test]
    fn retries_follow_the_matching_rule() {
        let rules = [
            rule(RetryStatus::NoAnswer, 2, 30),
            rule(RetryStatus::Abandoned, 1, 5),
        ];
        let r = next_retry(&rules, R::NoAnswer, "13900000000", 0, 1_000).unwrap();
        assert_eq!(r.at_ms, 1_000 + 30 * 60_000);
        assert_eq!(r.number, "13900000000");
        assert!(next_retry(&rules, R::CustomerBusy, "139", 1, 0).is_some());
        assert!(
            next_retry(&rules, R::NoAnswer, "139", 2, 0).is_none(),
            "used up"
        );
        assert_eq!(
            next_retry(&rules, R::QueueTimeout, "139", 0, 0).map(|r| r.at_ms),
            Some(5 * 60_000)
        );
        assert!(
            next_retry(&rules, R::NoSuchNumber, "139", 0, 0).is_none(),
            "no rule"
        );
        assert!(next_retry(&rules, R::CustomerHungUp, "139", 0, 0).is_none());
        // More than the seed's 5 retries is never honoured.
        let many = [rule(RetryStatus::NoAnswer, 9, 1)];
        assert!(next_retry(&many, R::NoAnswer, "139", 5, 0).is_none());
    }

    #[test]
    fn add_zero_dials_the_number_once_with_a_leading_zero() {
        let rules = [rule(RetryStatus::AddZero, 1, 0)];
        let r = next_retry(&rules, R::NoSuchNumber, "13900000000", 0, 7).unwrap();
        assert_eq!((r.number.as_str(), r.at_ms), ("013900000000", 7));
        assert!(next_retry(&rules, R::NoSuchNumber, "013900000000", 0, 7).is_none());
        assert!(next_retry(&rules, R::NoSuchNumber, "+86139", 0, 7).is_none());
    }

    #[test]
    fn caller_id_by_org_and_group_then_the_grids_fallback() {
        let groups = vec![
            CallerIdGroup {
                org_no: "64401".into(),
                service_id: Some("G1".into()),
                outbound_number: "0951001".into(),
            },
            CallerIdGroup {
                org_no: "64401".into(),
                service_id: None,
                outbound_number: "0951000".into(),
            },
        ];
        let fallback =
            |city: &str, _sid: Option<&str>| (city == "644").then(|| "95598".to_string());
        assert_eq!(
            choose_caller_id(&groups, "64401", Some("G1"), "644", fallback),
            Ok("0951001".into())
        );
        assert_eq!(
            choose_caller_id(&groups, "64401", Some("G9"), "644", fallback),
            Ok("0951001".into()),
            "the first group of the org when the skill group has none"
        );
        assert_eq!(
            choose_caller_id(&groups, "64499", None, "644", fallback),
            Ok("95598".into())
        );
        assert!(choose_caller_id(&groups, "64499", None, "645", fallback).is_err());
    }

    #[test]
    fn the_guard_pauses_after_runs_of_failures_or_short_calls() {
        let mut g = FailureGuard::new(3, 4);
        for _ in 0..3 {
            assert_eq!(g.observe(R::NoAnswer, None), None);
        }
        assert_eq!(
            g.observe(R::NotConnected, None),
            Some(PauseReason::Failures(4))
        );
        // A normal call resets the failures.
        for _ in 0..3 {
            g.observe(R::NoAnswer, None);
        }
        g.observe(R::CustomerHungUp, Some(60_000));
        assert_eq!(g.observe(R::NoAnswer, None), None);
        // Short calls.
        let mut g = FailureGuard::new(3, 0);
        assert_eq!(g.observe(R::CustomerHungUp, Some(1_000)), None);
        assert_eq!(g.observe(R::CustomerHungUp, Some(900)), None);
        assert_eq!(
            g.observe(R::AgentHungUp, Some(10)),
            Some(PauseReason::ShortCalls(3))
        );
        // Disabled guards never fire.
        let mut off = FailureGuard::new(0, 0);
        for _ in 0..1000 {
            assert_eq!(off.observe(R::NotConnected, None), None);
        }
        assert_eq!(RetryStatus::from_code("5"), Some(RetryStatus::AddZero));
        assert_eq!(RetryStatus::from_code("6"), None);
    }
}
