//! Call tasks (seed 004 `callTask`, 004:L116-290, L651-670): what a campaign is, its life
//! cycle and its counters. Domain types only; the wire format lives in `api/campaign.rs`,
//! persistence in `dialer/store.rs`, the running calls in `dialer/campaign.rs`.

use serde::{Deserialize, Serialize};

use super::compliance::AttemptOutcome;
use super::result::ResultDetail;
use super::rules::{CallerIdGroup, RetryRule};

/// A code as the API accepts it for tasks, call lists and gateways: 1–64 characters of
/// `[A-Za-z0-9_.-]`. Narrow on purpose: codes end up in ESL channel variables, metrics labels
/// and stream topics, where anything else would need escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Code(String);

impl Code {
    pub fn parse(s: &str) -> Result<Code, String> {
        let s = s.trim();
        if s.is_empty() || s.len() > 64 {
            return Err(format!("must be 1 to 64 characters, got {}", s.len()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(format!(
                "contains {c:?}; only letters, digits, _ . - are allowed"
            ));
        }
        Ok(Code(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A task's life cycle, with seed 004's stream codes (1 初始化, 2 启动, 3 暂停, 4 结束).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskStatus {
    Initialized,
    Running,
    Paused,
    Ended,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 4] = [
        TaskStatus::Initialized,
        TaskStatus::Running,
        TaskStatus::Paused,
        TaskStatus::Ended,
    ];

    pub fn code(self) -> i64 {
        match self {
            TaskStatus::Initialized => 1,
            TaskStatus::Running => 2,
            TaskStatus::Paused => 3,
            TaskStatus::Ended => 4,
        }
    }

    pub fn from_code(c: i64) -> Option<TaskStatus> {
        Self::ALL.into_iter().find(|s| s.code() == c)
    }

    pub fn label(self) -> &'static str {
        match self {
            TaskStatus::Initialized => "initialized",
            TaskStatus::Running => "running",
            TaskStatus::Paused => "paused",
            TaskStatus::Ended => "ended",
        }
    }
}

/// `callType`: how numbers reach agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallType {
    /// 1 预测式: the dialer calls and connects answered calls to idle agents.
    Predictive,
    /// 2 预览式: agents ask for numbers (getCallList) and dial them themselves.
    Preview,
}

/// Which pacing policy a predictive task runs (a gridedge extension; seed 004 only has `rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PacingChoice {
    Predictive,
    Progressive,
    /// `rate` calls per idle agent.
    RatioIdle,
    /// VICIdial's `rate` × active agents − calls in flight.
    RatioActive,
}

impl PacingChoice {
    pub fn parse(s: &str) -> Option<PacingChoice> {
        match s {
            "predictive" => Some(PacingChoice::Predictive),
            "progressive" => Some(PacingChoice::Progressive),
            "ratio-idle" => Some(PacingChoice::RatioIdle),
            "ratio-active" => Some(PacingChoice::RatioActive),
            _ => None,
        }
    }
}

/// A task's lines: gateway code and the calls the task may place on it at once (`callGWs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLine {
    pub code: String,
    pub concurrency: u32,
}

/// Where a task's numbers come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NumberSource {
    /// A call list (`callListId`).
    List(Code),
    /// A recall: the numbers of `task` whose latest result is one of `results`
    /// (`originalCallTaskCode`, `originalResultDetail`).
    Recall { task: Code, results: Vec<u8> },
}

/// Everything submitCallTask fixes about a task (persisted as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub code: Code,
    pub project: String,
    pub call_type: CallType,
    pub pacing: PacingChoice,
    pub lines: Vec<TaskLine>,
    /// `rate`: the ratio of the ratio policies; the predictive policy's cap on calls per
    /// available agent.
    pub rate: f64,
    pub source: NumberSource,
    pub expires_ms: u64,
    pub time_zone: String,
    pub week_periods: Option<String>,
    pub time_periods: Option<String>,
    pub org_no: Option<String>,
    pub service_id: Option<String>,
    pub city_org_no: Option<String>,
    pub caller_id_groups: Vec<CallerIdGroup>,
    pub retry_rules: Vec<RetryRule>,
    pub continuous_seconds: u32,
    pub continuous_failed: u32,
}

/// A task's counters, as callTaskStatus and the stream report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counters {
    /// Bridged to an agent (50, 55).
    pub success: u64,
    /// Never answered by a person (1, 5, 10, 20, 25, machines).
    pub fail: u64,
    /// 呼叫拒绝 (10), also counted in `fail`.
    pub reject: u64,
    /// 漏接: a person answered and was not bridged (28, 30, 32, 35, 40).
    pub miss: u64,
    /// Attempts finished (suppressed numbers included).
    pub dialed: u64,
}

impl Counters {
    /// Counts one finished attempt. A suppressed number (blacklisted) counts as dialled and
    /// nothing else: no call was made.
    pub fn add(&mut self, result: Option<ResultDetail>, outcome: AttemptOutcome) {
        self.dialed += 1;
        if outcome == AttemptOutcome::Suppressed {
            return;
        }
        let Some(r) = result else { return };
        match Bucket::of(r) {
            Bucket::Success => self.success += 1,
            Bucket::Miss => self.miss += 1,
            Bucket::Fail => {
                self.fail += 1;
                if r == ResultDetail::Rejected {
                    self.reject += 1;
                }
            }
        }
    }
}

/// callLog's `result`: 10 success, 20 fail, 30 miss (004:L367).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Success,
    Fail,
    Miss,
}

impl Bucket {
    pub fn of(r: ResultDetail) -> Bucket {
        use ResultDetail as R;
        match r {
            R::AgentHungUp | R::CustomerHungUp => Bucket::Success,
            R::HungUpWaitingForAgent
            | R::AgentBusy
            | R::AgentNoAnswer
            | R::AllAgentsBusy
            | R::QueueTimeout => Bucket::Miss,
            R::NoSuchNumber | R::NotConnected | R::Rejected | R::CustomerBusy | R::NoAnswer => {
                Bucket::Fail
            }
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Bucket::Success => "10",
            Bucket::Fail => "20",
            Bucket::Miss => "30",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_narrow() {
        assert!(Code::parse("task-1.a_B").is_ok());
        for bad in [
            "",
            "a b",
            "x'; DROP TABLE t;--",
            "任务",
            &"a".repeat(65),
            "a,b",
            "a{b}",
        ] {
            assert!(Code::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn counters_follow_the_seed_buckets() {
        let mut c = Counters::default();
        c.add(
            Some(ResultDetail::CustomerHungUp),
            AttemptOutcome::Connected,
        );
        c.add(Some(ResultDetail::Rejected), AttemptOutcome::Failed);
        c.add(Some(ResultDetail::AllAgentsBusy), AttemptOutcome::Abandoned);
        c.add(Some(ResultDetail::NoAnswer), AttemptOutcome::Machine);
        c.add(None, AttemptOutcome::Suppressed);
        assert_eq!(
            c,
            Counters {
                success: 1,
                fail: 2,
                reject: 1,
                miss: 1,
                dialed: 5
            }
        );
    }

    #[test]
    fn status_codes_round_trip() {
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::from_code(s.code()), Some(s));
        }
        assert_eq!(TaskStatus::from_code(0), None);
    }
}
