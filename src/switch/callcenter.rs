//! mod_callcenter's `CUSTOM callcenter::info` events and sofia's registration events, read into
//! domain terms. Sans-IO.
//!
//! gridedge owns agent presence itself (from registrations, the API and channel events), so
//! mod_callcenter's own agent status is informational: queue events are logged and counted,
//! and the member/agent pairing of `bridge-agent-*` tells which queue a call came through.
//! sofia's `register`/`unregister`/`expire` are compared with the registrar's own view.

use super::esl::EslEvent;

/// One `callcenter::info` event (`CC-Action`). Times are FreeSWITCH's epoch seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueEvent {
    AgentStatus {
        agent: String,
        status: String,
    },
    AgentState {
        agent: String,
        state: String,
    },
    /// A member (caller) is offered to an agent.
    AgentOffering {
        queue: String,
        agent: String,
        member_session: String,
        caller_number: String,
    },
    /// The agent answered; `agent_leg` is the agent channel's uuid.
    BridgeStart {
        queue: String,
        agent: String,
        agent_leg: String,
        member_session: String,
        joined_at: Option<u64>,
        answered_at: Option<u64>,
    },
    BridgeEnd {
        queue: String,
        agent: String,
        agent_leg: String,
        member_session: String,
        ended_at: Option<u64>,
    },
    BridgeFail {
        queue: String,
        agent: String,
        member_session: String,
        cause: String,
    },
    MembersCount {
        queue: String,
        count: u32,
    },
    MemberJoined {
        queue: String,
        member_session: String,
        caller_number: String,
    },
    /// The member left the queue: `cause` is Terminated (served) or Cancel (gave up), with
    /// mod_callcenter's reason for a cancel.
    MemberLeft {
        queue: String,
        member_session: String,
        cause: String,
        cancel_reason: Option<String>,
    },
    /// An action this version does not interpret (agent-max-no-answer, ...).
    Other {
        action: String,
    },
}

/// Header value with the stray trailing blanks of hand-edited or older events removed.
fn h(ev: &EslEvent, name: &str) -> String {
    ev.get(name).unwrap_or("").trim().to_owned()
}

fn n(ev: &EslEvent, name: &str) -> Option<u64> {
    ev.get(name).and_then(|v| v.trim().parse().ok())
}

impl QueueEvent {
    /// Reads a `callcenter::info` event; None for any other event.
    pub fn from_event(ev: &EslEvent) -> Option<QueueEvent> {
        if ev.subclass().map(str::trim) != Some("callcenter::info") {
            return None;
        }
        let action = h(ev, "CC-Action");
        Some(match action.as_str() {
            "agent-status-change" => Self::AgentStatus {
                agent: h(ev, "CC-Agent"),
                status: h(ev, "CC-Agent-Status"),
            },
            "agent-state-change" => Self::AgentState {
                agent: h(ev, "CC-Agent"),
                state: h(ev, "CC-Agent-State"),
            },
            "agent-offering" => Self::AgentOffering {
                queue: h(ev, "CC-Queue"),
                agent: h(ev, "CC-Agent"),
                member_session: h(ev, "CC-Member-Session-UUID"),
                caller_number: h(ev, "CC-Member-CID-Number"),
            },
            "bridge-agent-start" => Self::BridgeStart {
                queue: h(ev, "CC-Queue"),
                agent: h(ev, "CC-Agent"),
                agent_leg: h(ev, "CC-Agent-UUID"),
                member_session: h(ev, "CC-Member-Session-UUID"),
                joined_at: n(ev, "CC-Member-Joined-Time"),
                answered_at: n(ev, "CC-Agent-Answered-Time"),
            },
            "bridge-agent-end" => Self::BridgeEnd {
                queue: h(ev, "CC-Queue"),
                agent: h(ev, "CC-Agent"),
                agent_leg: h(ev, "CC-Agent-UUID"),
                member_session: h(ev, "CC-Member-Session-UUID"),
                ended_at: n(ev, "CC-Bridge-Terminated-Time"),
            },
            "bridge-agent-fail" => Self::BridgeFail {
                queue: h(ev, "CC-Queue"),
                agent: h(ev, "CC-Agent"),
                member_session: h(ev, "CC-Member-Session-UUID"),
                cause: h(ev, "CC-Hangup-Cause"),
            },
            "members-count" => Self::MembersCount {
                queue: h(ev, "CC-Queue"),
                count: n(ev, "CC-Count")
                    .and_then(|c| u32::try_from(c).ok())
                    .unwrap_or(0),
            },
            "member-queue-start" => Self::MemberJoined {
                queue: h(ev, "CC-Queue"),
                member_session: h(ev, "CC-Member-Session-UUID"),
                caller_number: h(ev, "CC-Member-CID-Number"),
            },
            "member-queue-end" => Self::MemberLeft {
                queue: h(ev, "CC-Queue"),
                member_session: h(ev, "CC-Member-Session-UUID"),
                cause: h(ev, "CC-Cause"),
                cancel_reason: ev
                    .get("CC-Cancel-Reason")
                    .map(|r| r.trim().to_owned())
                    .filter(|r| !r.is_empty()),
            },
            _ => Self::Other { action },
        })
    }

    /// The `CC-Action` label, for metrics and logs.
    pub fn action(&self) -> &str {
        match self {
            Self::AgentStatus { .. } => "agent-status-change",
            Self::AgentState { .. } => "agent-state-change",
            Self::AgentOffering { .. } => "agent-offering",
            Self::BridgeStart { .. } => "bridge-agent-start",
            Self::BridgeEnd { .. } => "bridge-agent-end",
            Self::BridgeFail { .. } => "bridge-agent-fail",
            Self::MembersCount { .. } => "members-count",
            Self::MemberJoined { .. } => "member-queue-start",
            Self::MemberLeft { .. } => "member-queue-end",
            Self::Other { action } => action,
        }
    }
}

/// A sofia registration event: the user and whether FreeSWITCH now considers it registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SofiaRegistration {
    pub user: String,
    pub registered: bool,
    pub network_ip: Option<String>,
}

impl SofiaRegistration {
    /// Reads `sofia::register` / `sofia::unregister` / `sofia::expire`; None otherwise, or when
    /// the event names no plausible user.
    pub fn from_event(ev: &EslEvent) -> Option<SofiaRegistration> {
        let registered = match ev.subclass()?.trim() {
            "sofia::register" => true,
            "sofia::unregister" | "sofia::expire" => false,
            _ => return None,
        };
        let user = ev
            .get("from-user")
            .or_else(|| ev.get("username"))
            .or_else(|| ev.get("user"))
            .map(str::trim)
            .filter(|u| !u.is_empty() && u.len() <= 64)?;
        Some(SofiaRegistration {
            user: user.to_owned(),
            registered,
            network_ip: ev.get("network-ip").map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ten header sets of mod_callcenter's documentation, separated by blank lines.
    fn doc_examples() -> Vec<EslEvent> {
        let text = include_str!(
            "../../tests/fixtures/freeswitch/esl-custom-callcenter-info-doc-examples.txt"
        );
        text.split("\n\n")
            .filter(|block| !block.trim().is_empty())
            .map(|block| EslEvent::parse_plain(block.as_bytes()).unwrap())
            .collect()
    }

    #[test]
    fn every_documented_action_is_read() {
        let events: Vec<QueueEvent> = doc_examples()
            .iter()
            .map(|e| QueueEvent::from_event(e).expect("a callcenter::info event"))
            .collect();
        let actions: Vec<&str> = events.iter().map(QueueEvent::action).collect();
        assert_eq!(
            actions,
            [
                "agent-status-change",
                "agent-state-change",
                "agent-offering",
                "bridge-agent-start",
                "bridge-agent-end",
                "bridge-agent-fail",
                "members-count",
                "member-queue-start",
                "member-queue-end",
                "member-queue-end",
            ]
        );
        assert_eq!(
            events[0],
            QueueEvent::AgentStatus {
                agent: "1000@default".into(),
                status: "Available".into()
            }
        );
        assert_eq!(
            events[2],
            QueueEvent::AgentOffering {
                queue: "support@default".into(),
                agent: "AgentNameHere".into(),
                member_session: "600165a4-f748-11df-afdd-b386769690cd".into(),
                caller_number: "4385551212".into(),
            }
        );
        assert_eq!(
            events[3],
            QueueEvent::BridgeStart {
                queue: "support@default".into(),
                agent: "AgentNameHere".into(),
                agent_leg: "7acfecd3-ab50-470b-8875-d37aba0429ba".into(),
                member_session: "c6360976-231c-43c6-bda7-7ac4c7d1c125".into(),
                joined_at: Some(9000),
                answered_at: Some(10009),
            }
        );
        assert!(matches!(
            &events[4],
            QueueEvent::BridgeEnd {
                ended_at: Some(10500),
                ..
            }
        ));
        assert!(matches!(
            &events[5],
            QueueEvent::BridgeFail { cause, .. } if cause == "CHECK FS HANGUP CAUSE"
        ));
        assert_eq!(
            events[6],
            QueueEvent::MembersCount {
                queue: "support@default".into(),
                count: 1
            }
        );
        let QueueEvent::MemberLeft {
            cause,
            cancel_reason,
            ..
        } = &events[9]
        else {
            panic!("{:?}", events[9]);
        };
        assert_eq!(cause, "Cancel");
        assert_eq!(cancel_reason.as_deref(), Some("TIMEOUT"));
        assert!(matches!(
            &events[8],
            QueueEvent::MemberLeft { cause, cancel_reason: None, .. } if cause == "Terminated"
        ));
    }

    #[test]
    fn the_sofia_register_sample_names_its_user() {
        let ev = EslEvent::parse_plain(include_bytes!(
            "../../tests/fixtures/freeswitch/esl-custom-sofia-register.txt"
        ))
        .unwrap();
        assert_eq!(
            SofiaRegistration::from_event(&ev),
            Some(SofiaRegistration {
                user: "1000".into(),
                registered: true,
                network_ip: Some("192.168.1.23".into()),
            })
        );
        assert_eq!(QueueEvent::from_event(&ev), None);
    }
}
