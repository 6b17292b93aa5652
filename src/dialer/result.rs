//! How an outbound attempt ended, in seed 004's `resultDetail` codes (004:L368, L446) and in
//! the compliance log's terms. Sans-IO: the facts of one attempt in, its classification out.
//!
//! | code | seed 004 | when |
//! |---|---|---|
//! | 1 | 空号 (no such number) | Q.850 1 UNALLOCATED_NUMBER, 22 NUMBER_CHANGED, 28 INVALID_NUMBER_FORMAT; SIP 404, 484, 604 |
//! | 10 | 呼叫被拒绝 (rejected) | Q.850 21 CALL_REJECTED; SIP 403, 603 |
//! | 20 | 客户忙 (busy) | Q.850 17 USER_BUSY; SIP 486, 600 |
//! | 25 | 客户未接听 (no answer) | Q.850 18 NO_USER_RESPONSE, 19 NO_ANSWER, 31 with the ring timeout reached, our own cancel at the ring timeout; SIP 408, 480, 487 |
//! | 5 | 未接通 (not connected) | any other failure before answer (network, congestion, 503) |
//! | 28 | 等待坐席接通时挂断 | a person answered and hung up while waiting for an agent |
//! | 30 / 32 / 35 | 坐席忙 / 坐席未接听 / 坐席全忙 | a person answered; the agent chosen was busy / did not answer / none was free |
//! | 40 | 排队超时挂断 | a person answered and the system dropped the call after waiting (`drop_secs`) |
//! | 50 / 55 | 呼叫成功坐席挂断 / 客户挂断 | bridged to an agent; who hung up |
//!
//! An answering machine is classified by the answering-machine detection outcome (25 and
//! `Machine`: the seed has no machine code, and "not answered by the customer" is what it
//! means for a recall rule).

use super::compliance::AttemptOutcome;

/// Seed 004's `resultDetail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ResultDetail {
    NoSuchNumber,
    NotConnected,
    Rejected,
    CustomerBusy,
    NoAnswer,
    HungUpWaitingForAgent,
    AgentBusy,
    AgentNoAnswer,
    AllAgentsBusy,
    QueueTimeout,
    AgentHungUp,
    CustomerHungUp,
}

impl ResultDetail {
    pub fn code(self) -> u8 {
        match self {
            ResultDetail::NoSuchNumber => 1,
            ResultDetail::NotConnected => 5,
            ResultDetail::Rejected => 10,
            ResultDetail::CustomerBusy => 20,
            ResultDetail::NoAnswer => 25,
            ResultDetail::HungUpWaitingForAgent => 28,
            ResultDetail::AgentBusy => 30,
            ResultDetail::AgentNoAnswer => 32,
            ResultDetail::AllAgentsBusy => 35,
            ResultDetail::QueueTimeout => 40,
            ResultDetail::AgentHungUp => 50,
            ResultDetail::CustomerHungUp => 55,
        }
    }

    pub fn from_code(code: u8) -> Option<ResultDetail> {
        use ResultDetail::*;
        [
            NoSuchNumber,
            NotConnected,
            Rejected,
            CustomerBusy,
            NoAnswer,
            HungUpWaitingForAgent,
            AgentBusy,
            AgentNoAnswer,
            AllAgentsBusy,
            QueueTimeout,
            AgentHungUp,
            CustomerHungUp,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }
}

/// What the agent side did for a live answer that was not bridged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentMiss {
    /// No agent was free at all.
    NoneFree,
    /// The agent's phone was busy.
    Busy,
    /// The agent's phone did not answer.
    NoAnswer,
}

/// The facts of one finished attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttemptFacts {
    /// Dialed to answer (ms); `None` when never answered.
    pub answered_after_ms: Option<u64>,
    /// Answering-machine detection said machine.
    pub machine: bool,
    /// Answer to bridge with an agent (ms); `None` when never bridged.
    pub bridged_after_ms: Option<u64>,
    /// Who hung up first, when bridged: true for the agent.
    pub agent_hung_up: bool,
    /// The system dropped a waiting call (`drop_secs` reached).
    pub dropped_by_system: bool,
    pub agent_miss: Option<AgentMiss>,
    /// The hang-up cause of the customer leg, when it failed.
    pub q850: Option<u16>,
    pub sip_status: Option<u16>,
    /// The dialer cancelled the call at its ring timeout.
    pub ring_timeout: bool,
}

/// Classifies an attempt; `threshold_ms` is the abandon threshold (2 s).
pub fn classify(f: &AttemptFacts, threshold_ms: u64) -> (ResultDetail, AttemptOutcome) {
    use ResultDetail as R;
    let Some(_answered) = f.answered_after_ms else {
        return (failure(f), failure_outcome(f));
    };
    if f.machine {
        return (R::NoAnswer, AttemptOutcome::Machine);
    }
    match f.bridged_after_ms {
        Some(wait) => {
            let outcome = if wait <= threshold_ms {
                AttemptOutcome::Connected
            } else {
                AttemptOutcome::Abandoned
            };
            let r = if f.agent_hung_up {
                R::AgentHungUp
            } else {
                R::CustomerHungUp
            };
            (r, outcome)
        }
        None => {
            let r = match (f.dropped_by_system, f.agent_miss) {
                (true, _) => R::QueueTimeout,
                (false, Some(AgentMiss::NoneFree)) => R::AllAgentsBusy,
                (false, Some(AgentMiss::Busy)) => R::AgentBusy,
                (false, Some(AgentMiss::NoAnswer)) => R::AgentNoAnswer,
                (false, None) => R::HungUpWaitingForAgent,
            };
            (r, AttemptOutcome::Abandoned)
        }
    }
}

fn failure(f: &AttemptFacts) -> ResultDetail {
    use ResultDetail as R;
    if f.ring_timeout {
        return R::NoAnswer;
    }
    if let Some(c) = f.q850 {
        match c {
            1 | 22 | 28 => return R::NoSuchNumber,
            21 => return R::Rejected,
            17 => return R::CustomerBusy,
            18 | 19 => return R::NoAnswer,
            _ => {}
        }
    }
    match f.sip_status {
        Some(404 | 484 | 604) => R::NoSuchNumber,
        Some(403 | 603) => R::Rejected,
        Some(486 | 600) => R::CustomerBusy,
        Some(408 | 480 | 487) => R::NoAnswer,
        _ => R::NotConnected,
    }
}

fn failure_outcome(f: &AttemptFacts) -> AttemptOutcome {
    match failure(f) {
        ResultDetail::CustomerBusy => AttemptOutcome::Busy,
        ResultDetail::NoAnswer => AttemptOutcome::NoAnswer,
        _ => AttemptOutcome::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AttemptOutcome as O;
    use ResultDetail as R;

    fn failed(q850: Option<u16>, sip: Option<u16>) -> AttemptFacts {
        AttemptFacts {
            q850,
            sip_status: sip,
            ..AttemptFacts::default()
        }
    }

    #[test]
    fn failures_before_answer() {
        let cases = [
            (failed(Some(1), None), R::NoSuchNumber, O::Failed),
            (failed(Some(28), None), R::NoSuchNumber, O::Failed),
            (failed(None, Some(404)), R::NoSuchNumber, O::Failed),
            (failed(Some(21), None), R::Rejected, O::Failed),
            (failed(None, Some(603)), R::Rejected, O::Failed),
            (failed(Some(17), None), R::CustomerBusy, O::Busy),
            (failed(None, Some(486)), R::CustomerBusy, O::Busy),
            (failed(Some(19), None), R::NoAnswer, O::NoAnswer),
            (failed(None, Some(480)), R::NoAnswer, O::NoAnswer),
            (failed(Some(34), Some(503)), R::NotConnected, O::Failed),
            (failed(None, None), R::NotConnected, O::Failed),
            (
                AttemptFacts {
                    ring_timeout: true,
                    q850: Some(31),
                    ..AttemptFacts::default()
                },
                R::NoAnswer,
                O::NoAnswer,
            ),
        ];
        for (f, r, o) in cases {
            assert_eq!(classify(&f, 2000), (r, o), "{f:?}");
        }
    }

    #[test]
    fn answered_calls() {
        let live = AttemptFacts {
            answered_after_ms: Some(8_000),
            ..AttemptFacts::default()
        };
        let bridged = |wait, agent| AttemptFacts {
            bridged_after_ms: Some(wait),
            agent_hung_up: agent,
            ..live
        };
        assert_eq!(
            classify(&bridged(300, false), 2000),
            (R::CustomerHungUp, O::Connected)
        );
        assert_eq!(
            classify(&bridged(2000, true), 2000),
            (R::AgentHungUp, O::Connected)
        );
        // Bridged late: connected for the seed, abandoned for the regulator.
        assert_eq!(
            classify(&bridged(2001, false), 2000),
            (R::CustomerHungUp, O::Abandoned)
        );
        assert_eq!(
            classify(&live, 2000),
            (R::HungUpWaitingForAgent, O::Abandoned)
        );
        let missed = |m| AttemptFacts {
            agent_miss: Some(m),
            ..live
        };
        assert_eq!(
            classify(&missed(AgentMiss::NoneFree), 2000).0,
            R::AllAgentsBusy
        );
        assert_eq!(classify(&missed(AgentMiss::Busy), 2000).0, R::AgentBusy);
        assert_eq!(
            classify(&missed(AgentMiss::NoAnswer), 2000).0,
            R::AgentNoAnswer
        );
        let dropped = AttemptFacts {
            dropped_by_system: true,
            ..live
        };
        assert_eq!(classify(&dropped, 2000), (R::QueueTimeout, O::Abandoned));
        let machine = AttemptFacts {
            machine: true,
            ..live
        };
        assert_eq!(classify(&machine, 2000), (R::NoAnswer, O::Machine));
    }

    #[test]
    fn codes_are_the_seeds() {
        let codes: Vec<u8> = [
            R::NoSuchNumber,
            R::NotConnected,
            R::Rejected,
            R::CustomerBusy,
            R::NoAnswer,
            R::HungUpWaitingForAgent,
            R::AgentBusy,
            R::AgentNoAnswer,
            R::AllAgentsBusy,
            R::QueueTimeout,
            R::AgentHungUp,
            R::CustomerHungUp,
        ]
        .iter()
        .map(|r| r.code())
        .collect();
        assert_eq!(codes, vec![1, 5, 10, 20, 25, 28, 30, 32, 35, 40, 50, 55]);
        for c in codes {
            assert_eq!(ResultDetail::from_code(c).map(|r| r.code()), Some(c));
        }
        assert_eq!(ResultDetail::from_code(2), None);
    }
}
