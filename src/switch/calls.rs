//! Live call state from ESL channel events: which phone legs exist, and what presence must
//! hear about them ([`CallEvent`]: ringing, answered, held, resumed, ended). Sans-IO.
//!
//! A "phone leg" is a channel whose far end is a registered phone rather than a trunk:
//!
//! | Channel direction (FreeSWITCH's view) | The phone's user | For the agent |
//! |---|---|---|
//! | outbound (FreeSWITCH calls the phone) | `variable_dialed_user`, else `Caller-Destination-Number` | an inbound call: `CHANNEL_CREATE` = ringing, `CHANNEL_ANSWER` = answered |
//! | inbound (the phone calls FreeSWITCH) | `variable_user_name`, else `variable_sip_from_user`, else `Caller-Username` | the agent dials out: first sighting = ringing (set-up), `CHANNEL_BRIDGE` = answered (the far end picked up) |
//!
//! Legs through a gateway (`variable_sip_gateway_name`) are trunk legs and not tracked.
//! `CHANNEL_HOLD`/`UNHOLD` map to held/resumed; `CHANNEL_HANGUP` or `CHANNEL_HANGUP_COMPLETE`
//! (whichever comes first) to ended, with "the agent hung up" when the phone sent the BYE or
//! CANCEL (`sip_hangup_disposition` = `recv_*`). Events can be lost (ESL drops them under
//! load and during reconnects), so the first event seen for an untracked phone leg starts
//! tracking it, and [`ChannelTracker::resync`] reconciles against `show channels`.

use std::collections::{BTreeMap, HashMap};

use super::esl::EslEvent;
use crate::agents::state::CallId;
use crate::events::{CallDirection, CallEvent, CallPhase};

#[derive(Debug, Clone)]
struct Channel {
    extension: String,
    /// The phone was called (true) or is calling (false).
    phone_called: bool,
    direction: CallDirection,
    remote: Option<String>,
    task_code: Option<String>,
    answered: bool,
    held: bool,
}

/// Tracks phone legs. Bounded: beyond `max_channels` new legs are not tracked (and counted).
#[derive(Debug)]
pub struct ChannelTracker {
    channels: HashMap<String, Channel>,
    max_channels: usize,
    /// Variable naming the dialer task of an originated call.
    task_variable: String,
    pub untracked_overflow: u64,
}

/// Fields of a channel, from an event's headers or a `show channels` row.
trait ChannelView {
    fn get(&self, name: &str) -> Option<&str>;
    fn var(&self, name: &str) -> Option<&str>;
}

impl ChannelView for EslEvent {
    fn get(&self, name: &str) -> Option<&str> {
        EslEvent::get(self, name).filter(|v| !v.is_empty())
    }
    fn var(&self, name: &str) -> Option<&str> {
        EslEvent::var(self, name).filter(|v| !v.is_empty())
    }
}

/// Channel uuids are short tokens; anything else (a hostile or corrupt event) is not tracked,
/// so it can neither bloat the table nor reach the desktops as a call id.
fn plausible_uuid(u: &str) -> bool {
    (1..=64).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn at_ms(ev: &EslEvent, fallback: u64) -> u64 {
    // Event-Date-Timestamp is in microseconds.
    ev.get("Event-Date-Timestamp")
        .and_then(|t| t.trim().parse::<u64>().ok())
        .map(|us| us / 1000)
        .filter(|&ms| ms > 0)
        .unwrap_or(fallback)
}

impl ChannelTracker {
    pub fn new(max_channels: usize, task_variable: &str) -> ChannelTracker {
        ChannelTracker {
            channels: HashMap::new(),
            max_channels,
            task_variable: task_variable.to_owned(),
            untracked_overflow: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Describes a phone leg, or None for a trunk leg or a leg without a user.
    fn describe(&self, view: &dyn ChannelView) -> Option<Channel> {
        if view.var("sip_gateway_name").is_some() {
            return None;
        }
        let outbound = view
            .get("Call-Direction")
            .or_else(|| view.get("direction"))
            .is_some_and(|d| d.eq_ignore_ascii_case("outbound"));
        let task_code = view.var(&self.task_variable).map(str::to_owned);
        let (extension, remote) = if outbound {
            (
                view.var("dialed_user")
                    .or_else(|| view.get("Caller-Destination-Number"))
                    .or_else(|| view.get("dest")),
                view.get("Caller-Caller-ID-Number")
                    .or_else(|| view.get("cid_num")),
            )
        } else {
            (
                view.var("user_name")
                    .or_else(|| view.var("sip_from_user"))
                    .or_else(|| view.get("Caller-Username"))
                    // `show channels` rows carry neither: the presence id names the user.
                    .or_else(|| {
                        view.get("presence_id")
                            .and_then(|p| p.split('@').next())
                            .filter(|u| !u.is_empty())
                    }),
                view.get("Caller-Destination-Number")
                    .or_else(|| view.get("dest")),
            )
        };
        let extension = extension?.trim();
        if extension.is_empty() || extension.len() > 64 {
            return None;
        }
        Some(Channel {
            extension: extension.to_owned(),
            phone_called: outbound,
            direction: if outbound && task_code.is_none() {
                CallDirection::Inbound
            } else {
                CallDirection::Outbound
            },
            remote: remote.map(str::to_owned),
            task_code,
            answered: false,
            held: false,
        })
    }

    fn event(uuid: &str, ch: &Channel, phase: CallPhase, at_ms: u64) -> CallEvent {
        CallEvent {
            call_id: CallId(uuid.to_owned()),
            extension: ch.extension.clone(),
            direction: ch.direction,
            phase,
            remote_number: ch.remote.clone(),
            task_code: ch.task_code.clone(),
            at_ms,
        }
    }

    /// Starts tracking a leg first seen now; returns its ringing event.
    fn track(&mut self, uuid: &str, view: &dyn ChannelView, at: u64) -> Option<CallEvent> {
        if self.channels.contains_key(uuid) {
            return None;
        }
        let ch = self.describe(view)?;
        if self.channels.len() >= self.max_channels {
            self.untracked_overflow += 1;
            return None;
        }
        let ev = Self::event(uuid, &ch, CallPhase::Ringing, at);
        self.channels.insert(uuid.to_owned(), ch);
        Some(ev)
    }

    /// Presence events for one ESL event (none for events that change nothing).
    pub fn on_event(&mut self, ev: &EslEvent, now_ms: u64) -> Vec<CallEvent> {
        let Some(name) = ev.name() else {
            return Vec::new();
        };
        let Some(uuid) = ev
            .unique_id()
            .filter(|u| plausible_uuid(u))
            .map(str::to_owned)
        else {
            return Vec::new();
        };
        let at = at_ms(ev, now_ms);
        let mut out = Vec::new();
        match name {
            "CHANNEL_CREATE" | "CHANNEL_PROGRESS" | "CHANNEL_PROGRESS_MEDIA" => {
                out.extend(self.track(&uuid, ev, at));
            }
            "CHANNEL_ANSWER" => {
                out.extend(self.track(&uuid, ev, at));
                if let Some(ch) = self.channels.get_mut(&uuid) {
                    // Answering a phone that is calling out only means FreeSWITCH took its
                    // call; the conversation starts at the bridge.
                    if ch.phone_called && !ch.answered {
                        ch.answered = true;
                        out.push(Self::event(&uuid, ch, CallPhase::Answered, at));
                    }
                }
            }
            "CHANNEL_BRIDGE" => {
                out.extend(self.track(&uuid, ev, at));
                let mut legs = vec![uuid.clone()];
                for h in [
                    "Other-Leg-Unique-ID",
                    "Bridge-B-Unique-ID",
                    "Bridge-A-Unique-ID",
                ] {
                    if let Some(o) = ChannelView::get(ev, h) {
                        if !legs.iter().any(|l| l == o) {
                            legs.push(o.to_owned());
                        }
                    }
                }
                for leg in legs {
                    if let Some(ch) = self.channels.get_mut(&leg) {
                        if !ch.answered {
                            ch.answered = true;
                            out.push(Self::event(&leg, ch, CallPhase::Answered, at));
                        }
                    }
                }
            }
            "CHANNEL_HOLD" | "CHANNEL_UNHOLD" => {
                let hold = name == "CHANNEL_HOLD";
                if let Some(ch) = self.channels.get_mut(&uuid) {
                    if ch.answered && ch.held != hold {
                        ch.held = hold;
                        let phase = if hold {
                            CallPhase::Held
                        } else {
                            CallPhase::Resumed
                        };
                        out.push(Self::event(&uuid, ch, phase, at));
                    }
                }
            }
            "CHANNEL_HANGUP" | "CHANNEL_HANGUP_COMPLETE" => {
                if let Some(ch) = self.channels.remove(&uuid) {
                    let q850 = ev
                        .var("hangup_cause_q850")
                        .and_then(|v| v.trim().parse::<u16>().ok());
                    let agent_hung_up = ev
                        .var("sip_hangup_disposition")
                        .map(|d| d.starts_with("recv_"));
                    out.push(Self::event(
                        &uuid,
                        &ch,
                        CallPhase::Ended {
                            q850,
                            agent_hung_up,
                        },
                        at,
                    ));
                }
            }
            _ => {}
        }
        out
    }

    /// After a reconnect or dropped events: `rows` is what `show channels as json` listed.
    /// Tracked legs that are gone end; listed phone legs not tracked start (answered ones
    /// also answer).
    pub fn resync(&mut self, rows: &[BTreeMap<String, String>], now_ms: u64) -> Vec<CallEvent> {
        struct Row<'a>(&'a BTreeMap<String, String>);
        impl ChannelView for Row<'_> {
            fn get(&self, name: &str) -> Option<&str> {
                self.0
                    .get(name)
                    .map(String::as_str)
                    .filter(|v| !v.is_empty())
            }
            fn var(&self, _: &str) -> Option<&str> {
                None
            }
        }
        let listed: HashMap<&str, &BTreeMap<String, String>> = rows
            .iter()
            .filter_map(|r| r.get("uuid").map(|u| (u.as_str(), r)))
            .filter(|(u, _)| plausible_uuid(u))
            .collect();
        let mut out = Vec::new();
        let gone: Vec<String> = self
            .channels
            .keys()
            .filter(|u| !listed.contains_key(u.as_str()))
            .cloned()
            .collect();
        for uuid in gone {
            if let Some(ch) = self.channels.remove(&uuid) {
                out.push(Self::event(
                    &uuid,
                    &ch,
                    CallPhase::Ended {
                        q850: None,
                        agent_hung_up: None,
                    },
                    now_ms,
                ));
            }
        }
        let mut uuids: Vec<&str> = listed.keys().copied().collect();
        uuids.sort_unstable();
        for uuid in uuids {
            let row = Row(listed[uuid]);
            if self.channels.contains_key(uuid) {
                continue;
            }
            // `show channels` names gateways only inside the channel name.
            if row
                .get("name")
                .is_some_and(|n| n.starts_with("sofia/gateway/"))
            {
                continue;
            }
            out.extend(self.track(uuid, &row, now_ms));
            let state = row.get("callstate");
            let active = state.is_some_and(|s| matches!(s, "ACTIVE" | "HELD"));
            if let Some(ch) = self.channels.get_mut(uuid) {
                if active {
                    ch.answered = true;
                    out.push(Self::event(uuid, ch, CallPhase::Answered, now_ms));
                }
                if state == Some("HELD") {
                    ch.held = true;
                    out.push(Self::event(uuid, ch, CallPhase::Held, now_ms));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switch::esl::{EslDecoder, EslMessage};

    fn frames(bytes: &[u8]) -> Vec<EslMessage> {
        let mut d = EslDecoder::default();
        d.push(bytes);
        let mut out = Vec::new();
        while let Some(m) = d.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    /// The real 2015 capture: phone 1001 dials, FreeSWITCH bridges to phone 1003.
    #[test]
    fn the_captured_session_gives_ringing_answer_and_end_for_both_phones() {
        let mut t = ChannelTracker::new(100, "gridedge_task");
        let mut got = Vec::new();
        for m in frames(include_bytes!(
            "../../tests/fixtures/freeswitch/esl-outbound-session-full.txt"
        )) {
            if m.content_type().is_event() {
                let ev = EslEvent::from_message(&m).unwrap();
                got.extend(t.on_event(&ev, 0));
            }
        }
        let summary: Vec<(String, String, CallDirection, Option<String>)> = got
            .iter()
            .map(|e| {
                let phase = match &e.phase {
                    CallPhase::Ended { .. } => "ended".to_owned(),
                    p => format!("{p:?}").to_lowercase(),
                };
                (
                    e.extension.clone(),
                    phase,
                    e.direction,
                    e.remote_number.clone(),
                )
            })
            .collect();
        let s = |x: &str| x.to_owned();
        assert_eq!(
            summary,
            vec![
                (
                    s("1001"),
                    s("ringing"),
                    CallDirection::Outbound,
                    Some(s("3"))
                ),
                (
                    s("1003"),
                    s("ringing"),
                    CallDirection::Inbound,
                    Some(s("1001"))
                ),
                (
                    s("1003"),
                    s("answered"),
                    CallDirection::Inbound,
                    Some(s("1001"))
                ),
                (
                    s("1001"),
                    s("answered"),
                    CallDirection::Outbound,
                    Some(s("3"))
                ),
                (s("1001"), s("ended"), CallDirection::Outbound, Some(s("3"))),
                (
                    s("1003"),
                    s("ended"),
                    CallDirection::Inbound,
                    Some(s("1001"))
                ),
            ]
        );
        assert_eq!(got[1].call_id.0, "9bc34cb7-1d0a-4c89-8d47-9dc25faa160f");
        assert!(t.is_empty());
        // Event-Date-Timestamp (µs) becomes the event time.
        assert!(got.iter().all(|e| e.at_ms > 1_420_000_000_000));
    }

    fn ev(headers: &[(&str, &str)]) -> EslEvent {
        EslEvent::from_pairs(headers)
    }

    #[test]
    fn hold_resume_and_who_hung_up() {
        let mut t = ChannelTracker::new(100, "gridedge_task");
        let base = [
            ("Unique-ID", "u1"),
            ("Call-Direction", "outbound"),
            ("variable_dialed_user", "8001"),
            ("Caller-Caller-ID-Number", "13900000000"),
        ];
        let with = |name: &str, extra: &[(&str, &str)]| {
            let mut h = vec![("Event-Name", name)];
            h.extend_from_slice(&base);
            h.extend_from_slice(extra);
            ev(&h)
        };
        assert_eq!(t.on_event(&with("CHANNEL_CREATE", &[]), 1).len(), 1);
        assert_eq!(
            t.on_event(&with("CHANNEL_HOLD", &[]), 2).len(),
            0,
            "not answered yet"
        );
        assert_eq!(
            t.on_event(&with("CHANNEL_ANSWER", &[]), 3)[0].phase,
            CallPhase::Answered
        );
        assert_eq!(
            t.on_event(&with("CHANNEL_HOLD", &[]), 4)[0].phase,
            CallPhase::Held
        );
        assert!(t.on_event(&with("CHANNEL_HOLD", &[]), 5).is_empty());
        assert_eq!(
            t.on_event(&with("CHANNEL_UNHOLD", &[]), 6)[0].phase,
            CallPhase::Resumed
        );
        let end = t.on_event(
            &with(
                "CHANNEL_HANGUP_COMPLETE",
                &[
                    ("variable_sip_hangup_disposition", "recv_bye"),
                    ("variable_hangup_cause_q850", "16"),
                ],
            ),
            7,
        );
        assert_eq!(
            end[0].phase,
            CallPhase::Ended {
                q850: Some(16),
                agent_hung_up: Some(true)
            }
        );
        assert!(t
            .on_event(&with("CHANNEL_HANGUP_COMPLETE", &[]), 8)
            .is_empty());
    }

    #[test]
    fn trunk_legs_and_hostile_events_are_ignored() {
        let mut t = ChannelTracker::new(1, "gridedge_task");
        assert!(t
            .on_event(
                &ev(&[
                    ("Event-Name", "CHANNEL_CREATE"),
                    ("Unique-ID", "g"),
                    ("Call-Direction", "outbound"),
                    ("variable_sip_gateway_name", "carrier"),
                    ("Caller-Destination-Number", "13900000000"),
                ]),
                0
            )
            .is_empty());
        assert!(t
            .on_event(&ev(&[("Event-Name", "CHANNEL_CREATE")]), 0)
            .is_empty());
        assert!(t.on_event(&ev(&[("Unique-ID", "x")]), 0).is_empty());
        let huge = "a".repeat(10_000);
        assert!(t
            .on_event(
                &ev(&[
                    ("Event-Name", "CHANNEL_CREATE"),
                    ("Unique-ID", &huge),
                    ("Call-Direction", "outbound"),
                    ("variable_dialed_user", "8001"),
                ]),
                0
            )
            .is_empty());
        let long = "9".repeat(100);
        assert!(t
            .on_event(
                &ev(&[
                    ("Event-Name", "CHANNEL_CREATE"),
                    ("Unique-ID", "l"),
                    ("Call-Direction", "outbound"),
                    ("variable_dialed_user", &long),
                ]),
                0
            )
            .is_empty());
        // Bounded.
        let mk = |u: &'static str| {
            ev(&[
                ("Event-Name", "CHANNEL_CREATE"),
                ("Unique-ID", u),
                ("Call-Direction", "outbound"),
                ("variable_dialed_user", "8001"),
            ])
        };
        assert_eq!(t.on_event(&mk("a"), 0).len(), 1);
        assert!(t.on_event(&mk("b"), 0).is_empty());
        assert_eq!(t.untracked_overflow, 1);
    }

    #[test]
    fn resync_ends_vanished_legs_and_adopts_listed_ones() {
        let mut t = ChannelTracker::new(100, "gridedge_task");
        t.on_event(
            &ev(&[
                ("Event-Name", "CHANNEL_CREATE"),
                ("Unique-ID", "gone"),
                ("Call-Direction", "outbound"),
                ("variable_dialed_user", "8001"),
            ]),
            0,
        );
        let row = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let rows = vec![
            row(&[
                ("uuid", "live"),
                ("direction", "outbound"),
                ("dest", "8002"),
                ("cid_num", "13900000000"),
                ("callstate", "ACTIVE"),
                ("name", "sofia/internal/8002@10.0.0.2"),
            ]),
            row(&[
                ("uuid", "trunk"),
                ("direction", "outbound"),
                ("dest", "13900000000"),
                ("callstate", "ACTIVE"),
                ("name", "sofia/gateway/carrier/13900000000"),
            ]),
        ];
        let evs = t.resync(&rows, 50);
        let phases: Vec<(&str, &CallPhase)> = evs
            .iter()
            .map(|e| (e.extension.as_str(), &e.phase))
            .collect();
        assert_eq!(
            phases,
            vec![
                (
                    "8001",
                    &CallPhase::Ended {
                        q850: None,
                        agent_hung_up: None
                    }
                ),
                ("8002", &CallPhase::Ringing),
                ("8002", &CallPhase::Answered),
            ]
        );
        assert_eq!(t.len(), 1);
        assert!(
            t.resync(&rows, 60).is_empty(),
            "a second resync changes nothing"
        );

        // An agent dialling out during the outage: an inbound leg, named by its presence id.
        let mut rows = rows;
        rows.push(row(&[
            ("uuid", "dialling"),
            ("direction", "inbound"),
            ("presence_id", "8003@10.0.0.1"),
            ("dest", "13900000001"),
            ("callstate", "HELD"),
            ("name", "sofia/internal/8003@10.0.0.3"),
        ]));
        let evs = t.resync(&rows, 70);
        let got: Vec<(&str, &CallPhase, CallDirection)> = evs
            .iter()
            .map(|e| (e.extension.as_str(), &e.phase, e.direction))
            .collect();
        assert_eq!(
            got,
            vec![
                ("8003", &CallPhase::Ringing, CallDirection::Outbound),
                ("8003", &CallPhase::Answered, CallDirection::Outbound),
                ("8003", &CallPhase::Held, CallDirection::Outbound),
            ]
        );
    }
}
