//! Reconciliation: deciding when a call is finished and which description of each leg to
//! build it from. Sans-IO; the shell feeds it legs and the time.
//!
//! Two sources describe the same legs. ESL's `CHANNEL_HANGUP_COMPLETE` arrives first but is
//! lossy (FreeSWITCH drops events for a slow or disconnected listener); mod_json_cdr's document
//! arrives a moment later, complete, but only if the post (or the error-dir sweep) succeeds.
//! A call is closed, and built exactly once, when
//!
//! 1. every leg any of its legs names has been seen (from either source), and
//! 2. the documents the switch is configured to post ([`DocPolicy`]) are all in,
//!
//! or, failing that, `settle_ms` after the last leg arrived: then it is built from whatever is
//! there (ESL data for legs whose document never came). A call whose first leg (the one whose
//! uuid is the call uuid) has not been seen is still in progress as far as anyone knows: an
//! agent leg that ended while the caller waits on in the queue must not close the call. Such
//! a call waits `orphan_ms` (the longest call there can be) from its first arrival before it is
//! built without its first leg. For each leg the document wins over
//! the event, since it is a superset. The shell persists legs before feeding them here and
//! records closed calls, so a restart re-feeds open calls and a leg arriving after its call
//! closed is recognised as late instead of producing a second record.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::switch::leg::Leg;

/// Where a leg description came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegSource {
    /// ESL `CHANNEL_HANGUP_COMPLETE`.
    Esl,
    /// A CDR document: mod_json_cdr post, or a file swept from its error directory.
    Document,
}

impl LegSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Esl => "esl",
            Self::Document => "document",
        }
    }

    pub fn parse(s: &str) -> Option<LegSource> {
        match s {
            "esl" => Some(Self::Esl),
            "document" => Some(Self::Document),
            _ => None,
        }
    }
}

/// Which legs FreeSWITCH is configured to post documents for (`log-b-leg`, or no
/// mod_json_cdr at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocPolicy {
    AllLegs,
    ALegOnly,
    None,
}

/// A call's identity: the first leg's uuid on its core.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey {
    pub core_uuid: String,
    pub call_uuid: String,
}

impl CallKey {
    pub fn of(leg: &Leg) -> CallKey {
        CallKey {
            core_uuid: leg.key.core_uuid.clone(),
            call_uuid: leg.call_uuid.clone(),
        }
    }

    /// The text form stored in the database.
    pub fn to_text(&self) -> String {
        format!("{}/{}", self.core_uuid, self.call_uuid)
    }
}

/// How a closed call was assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every leg was seen over ESL and has its document.
    Both,
    /// Every leg has its document; ESL missed some or all of them.
    DocumentOnly,
    /// At least one leg has no document (not configured, or it never came): built from ESL.
    EslOnly,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Both => "both",
            Self::DocumentOnly => "json_only",
            Self::EslOnly => "esl_only",
        }
    }
}

/// A finished call, ready for the builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedCall {
    pub key: CallKey,
    /// One description per leg: the document where there is one, else the ESL event.
    pub legs: Vec<Leg>,
    pub outcome: Outcome,
    /// Every description received, with its source, so a call whose commit failed can be
    /// put back exactly as it was ([`Reconciler::reopen`]).
    pub received: Vec<(Leg, LegSource)>,
}

#[derive(Debug, Default)]
struct Slot {
    esl: Option<Leg>,
    doc: Option<Leg>,
}

#[derive(Debug)]
struct Pending {
    slots: BTreeMap<String, Slot>,
    expected: BTreeSet<String>,
    /// Settle deadline, pushed back by every arrival.
    deadline_ms: u64,
    /// When a call still missing its first leg is given up on.
    orphan_deadline_ms: u64,
}

/// What adding a leg did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    New,
    /// This source already described this leg.
    Duplicate,
}

#[derive(Debug)]
pub struct Reconciler {
    calls: HashMap<CallKey, Pending>,
    settle_ms: u64,
    orphan_ms: u64,
    policy: DocPolicy,
    max_pending: usize,
}

impl Reconciler {
    /// A call missing its first leg waits `settle_ms` too unless [`Self::with_orphan_ms`]
    /// says otherwise.
    pub fn new(settle_ms: u64, policy: DocPolicy, max_pending: usize) -> Reconciler {
        Reconciler {
            calls: HashMap::new(),
            settle_ms,
            orphan_ms: settle_ms,
            policy,
            max_pending: max_pending.max(1),
        }
    }

    /// How long a call missing its first leg waits for it (at least the settle time).
    pub fn with_orphan_ms(mut self, orphan_ms: u64) -> Reconciler {
        self.orphan_ms = orphan_ms.max(self.settle_ms);
        self
    }

    pub fn pending(&self) -> usize {
        self.calls.len()
    }

    /// Adds a leg description; the call may now be complete (see [`Reconciler::poll`]).
    pub fn add(&mut self, leg: Leg, source: LegSource, now_ms: u64) -> Added {
        let key = CallKey::of(&leg);
        if !self.calls.contains_key(&key) {
            // Bounded memory: beyond the limit the call that would close soonest is closed
            // early (at the next poll) with what it has. Calls already marked are skipped, so
            // each arrival over the limit marks one more.
            let marked = self
                .calls
                .values()
                .filter(|p| p.deadline_ms == 0 && p.orphan_deadline_ms == 0)
                .count();
            if self.calls.len().saturating_sub(marked) >= self.max_pending {
                if let Some(victim) = self
                    .calls
                    .values_mut()
                    .filter(|p| !(p.deadline_ms == 0 && p.orphan_deadline_ms == 0))
                    .min_by_key(|p| p.deadline_ms)
                {
                    victim.deadline_ms = 0;
                    victim.orphan_deadline_ms = 0;
                }
            }
        }
        let orphan_deadline_ms = now_ms.saturating_add(self.orphan_ms);
        let pending = self.calls.entry(key).or_insert_with(|| Pending {
            slots: BTreeMap::new(),
            expected: BTreeSet::new(),
            deadline_ms: 0,
            orphan_deadline_ms,
        });
        let slot = pending.slots.entry(leg.key.uuid.clone()).or_default();
        let place = match source {
            LegSource::Esl => &mut slot.esl,
            LegSource::Document => &mut slot.doc,
        };
        if place.is_some() {
            return Added::Duplicate;
        }
        pending.expected.insert(leg.key.uuid.clone());
        pending.expected.extend(leg.related.iter().cloned());
        *place = Some(leg);
        if !(pending.deadline_ms == 0 && pending.orphan_deadline_ms == 0) {
            pending.deadline_ms = now_ms.saturating_add(self.settle_ms);
        }
        Added::New
    }

    /// Puts a closed call back as it was before [`Reconciler::poll`] took it (its commit
    /// failed); it closes again at the next poll.
    pub fn reopen(&mut self, call: ClosedCall, now_ms: u64) {
        for (leg, source) in call.received {
            self.add(leg, source, now_ms);
        }
        if let Some(p) = self.calls.get_mut(&call.key) {
            p.deadline_ms = now_ms;
            p.orphan_deadline_ms = now_ms;
        }
    }

    /// When a pending call closes by timeout: its settle deadline once its first leg is in,
    /// else the later of that and its orphan deadline.
    fn timeout_of(key: &CallKey, p: &Pending) -> u64 {
        if p.slots.contains_key(&key.call_uuid) {
            p.deadline_ms
        } else {
            p.deadline_ms.max(p.orphan_deadline_ms)
        }
    }

    /// The earliest moment a call closes by timeout, for the shell's timer.
    pub fn next_deadline(&self) -> Option<u64> {
        self.calls.iter().map(|(k, p)| Self::timeout_of(k, p)).min()
    }

    fn complete(&self, key: &CallKey, p: &Pending) -> bool {
        let all_seen = p.expected.iter().all(|u| p.slots.contains_key(u));
        if !all_seen {
            return false;
        }
        match self.policy {
            DocPolicy::None => true,
            DocPolicy::AllLegs => p.slots.values().all(|s| s.doc.is_some()),
            DocPolicy::ALegOnly => p.slots.get(&key.call_uuid).is_some_and(|s| s.doc.is_some()),
        }
    }

    /// Removes and returns every call that is complete or whose settle time has passed.
    pub fn poll(&mut self, now_ms: u64) -> Vec<ClosedCall> {
        let ready: Vec<CallKey> = self
            .calls
            .iter()
            .filter(|(k, p)| Self::timeout_of(k, p) <= now_ms || self.complete(k, p))
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::with_capacity(ready.len());
        for key in ready {
            let Some(p) = self.calls.remove(&key) else {
                continue;
            };
            let all_doc = p.slots.values().all(|s| s.doc.is_some());
            let all_esl = p.slots.values().all(|s| s.esl.is_some());
            let outcome = match (all_doc, all_esl) {
                (true, true) => Outcome::Both,
                (true, false) => Outcome::DocumentOnly,
                (false, _) => Outcome::EslOnly,
            };
            let mut received = Vec::new();
            let mut legs = Vec::new();
            for slot in p.slots.into_values() {
                if let Some(e) = &slot.esl {
                    received.push((e.clone(), LegSource::Esl));
                }
                if let Some(d) = &slot.doc {
                    received.push((d.clone(), LegSource::Document));
                }
                legs.extend(slot.doc.or(slot.esl));
            }
            out.push(ClosedCall {
                key,
                legs,
                outcome,
                received,
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::switch::leg::{Hangup, HangupBy, LegDirection, LegKey, LegTimes};

    pub(crate) fn leg(uuid: &str, call: &str, related: &[&str]) -> Leg {
        Leg {
            key: LegKey {
                core_uuid: "core".into(),
                uuid: uuid.into(),
            },
            call_uuid: call.into(),
            related: related.iter().map(|s| (*s).to_owned()).collect(),
            direction: LegDirection::Inbound,
            sip_call_id: None,
            caller_number: "1".into(),
            caller_name: String::new(),
            destination: "2".into(),
            original_called: "2".into(),
            phone_user: None,
            gateway: None,
            queue: None,
            cc_agent: None,
            times: LegTimes {
                created_ms: 1,
                ended_ms: 2,
                ..LegTimes::default()
            },
            hangup: Hangup {
                cause: "NORMAL_CLEARING".into(),
                q850: Some(16),
                sip_status: None,
                by: HangupBy::Unknown,
            },
            recording: None,
            task_code: None,
            service: None,
            transferred: false,
        }
    }

    #[test]
    fn esl_then_documents_close_once_with_both() {
        let mut r = Reconciler::new(60_000, DocPolicy::AllLegs, 100);
        assert_eq!(r.add(leg("a", "a", &["b"]), LegSource::Esl, 0), Added::New);
        assert_eq!(r.add(leg("b", "a", &["a"]), LegSource::Esl, 10), Added::New);
        assert!(r.poll(20).is_empty(), "documents are still expected");
        r.add(leg("a", "a", &["b"]), LegSource::Document, 30);
        assert!(r.poll(40).is_empty());
        assert_eq!(
            r.add(leg("b", "a", &["a"]), LegSource::Esl, 45),
            Added::Duplicate
        );
        r.add(leg("b", "a", &["a"]), LegSource::Document, 50);
        let closed = r.poll(50);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].outcome, Outcome::Both);
        assert_eq!(closed[0].legs.len(), 2);
        assert!(r.poll(1_000_000).is_empty(), "closed exactly once");
    }

    #[test]
    fn lost_esl_still_closes_from_documents_alone() {
        let mut r = Reconciler::new(60_000, DocPolicy::AllLegs, 100);
        r.add(leg("a", "a", &["b"]), LegSource::Document, 0);
        assert!(r.poll(1).is_empty(), "the b-leg is named but not seen");
        r.add(leg("b", "a", &["a"]), LegSource::Document, 2);
        let closed = r.poll(2);
        assert_eq!(closed[0].outcome, Outcome::DocumentOnly);
    }

    #[test]
    fn missing_documents_close_from_esl_after_settling() {
        let mut r = Reconciler::new(60_000, DocPolicy::AllLegs, 100);
        r.add(leg("a", "a", &[]), LegSource::Esl, 1_000);
        assert_eq!(r.next_deadline(), Some(61_000));
        assert!(r.poll(60_999).is_empty());
        let closed = r.poll(61_000);
        assert_eq!(closed[0].outcome, Outcome::EslOnly);
    }

    #[test]
    fn without_documents_configured_esl_closes_at_once() {
        let mut r = Reconciler::new(60_000, DocPolicy::None, 100);
        r.add(leg("a", "a", &["b"]), LegSource::Esl, 0);
        assert!(r.poll(0).is_empty());
        r.add(leg("b", "a", &["a"]), LegSource::Esl, 0);
        assert_eq!(r.poll(0).len(), 1);
    }

    #[test]
    fn a_leg_only_policy_waits_for_the_a_leg_document() {
        let mut r = Reconciler::new(60_000, DocPolicy::ALegOnly, 100);
        r.add(leg("a", "a", &["b"]), LegSource::Esl, 0);
        r.add(leg("b", "a", &["a"]), LegSource::Esl, 0);
        assert!(r.poll(0).is_empty());
        r.add(leg("a", "a", &["b"]), LegSource::Document, 0);
        assert_eq!(r.poll(0)[0].outcome, Outcome::EslOnly);
    }

    #[test]
    fn a_call_waits_for_its_first_leg_until_the_orphan_timeout() {
        // The agent leg b ended (unanswered) while the caller a waits on in the queue.
        let mut r = Reconciler::new(60_000, DocPolicy::None, 100).with_orphan_ms(3_600_000);
        r.add(leg("b", "a", &["a"]), LegSource::Esl, 0);
        assert!(r.poll(60_000).is_empty(), "the first leg is still up");
        assert_eq!(r.next_deadline(), Some(3_600_000));
        // The caller hangs up later; its leg names a second agent leg c that answered.
        r.add(leg("c", "a", &["a"]), LegSource::Esl, 200_000);
        r.add(leg("a", "a", &["b", "c"]), LegSource::Esl, 300_000);
        let closed = r.poll(300_000);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].legs.len(), 3, "one call with all three legs");
        // Without its first leg, a call is built after the orphan timeout.
        r.add(leg("y", "x", &["x"]), LegSource::Esl, 0);
        assert!(r.poll(3_599_999).is_empty());
        assert_eq!(r.poll(3_600_000)[0].legs.len(), 1);
    }

    #[test]
    fn a_reopened_call_keeps_each_leg_source() {
        let mut r = Reconciler::new(60_000, DocPolicy::AllLegs, 100);
        r.add(leg("a", "a", &[]), LegSource::Esl, 0);
        let closed = r.poll(60_000);
        assert_eq!(closed[0].outcome, Outcome::EslOnly);
        r.reopen(closed.into_iter().next().unwrap(), 70_000);
        // Still an ESL-only description: the document is new, not a duplicate.
        assert_eq!(
            r.add(leg("a", "a", &[]), LegSource::Document, 70_000),
            Added::New
        );
        assert_eq!(r.poll(70_000)[0].outcome, Outcome::Both);
    }

    #[test]
    fn the_pending_table_is_bounded() {
        let mut r = Reconciler::new(60_000, DocPolicy::AllLegs, 2);
        r.add(leg("a", "a", &[]), LegSource::Esl, 0);
        r.add(leg("b", "b", &[]), LegSource::Esl, 10);
        r.add(leg("c", "c", &[]), LegSource::Esl, 20);
        let closed = r.poll(20);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].key.call_uuid, "a");
        assert_eq!(r.pending(), 2);
        // Several arrivals over the limit before a poll each mark one more call.
        r.add(leg("d", "d", &[]), LegSource::Esl, 30);
        r.add(leg("e", "e", &[]), LegSource::Esl, 40);
        assert_eq!(r.poll(40).len(), 2);
        assert_eq!(r.pending(), 2);
    }
}
