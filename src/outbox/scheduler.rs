//! The outbox's delivery scheduler: a sans-IO core that decides which record to send next and
//! what to do with each answer. No sockets, no clock, no SQLite: the shell feeds it committed
//! records ([`Scheduler::push`]), asks for work ([`Scheduler::poll_dispatch`]), reports answers
//! ([`Scheduler::on_result`]) and sleeps until [`Scheduler::next_wakeup`].
//!
//! Rules, after Vector, Fluent Bit and the transactional-outbox pattern
//! (`shared/reference/recording-and-forwarding.md` §B4):
//!
//! * **Per-key order.** Records with the same target and key form a lane; only a lane's head is
//!   ever in flight, so a call's segments (or an agent's events) arrive in enqueue order. Lanes are
//!   independent: one stuck call never blocks another.
//! * **Retries.** A transient failure (timeout, connection error, 5xx, 408, 429) reschedules the
//!   lane's head after full jitter, `random(0, min(max, base · 2^attempts))`, or later if the
//!   receiver sent `Retry-After`. A rejection (any other 4xx, a refusing envelope) dead-letters
//!   the head at once; so does the `max_attempts`-th counted failure or a record older than
//!   `max_age`.
//! * **Attempts.** A failure counts against the record's `max_attempts` when the target was
//!   up: the record failed while the receiver was working. Failures while the target is down
//!   (probes) do not: an outage, whether the receiver is unreachable or answers 5xx to
//!   everything, is not the record's fault and must not dead-letter the backlog.
//! * **Target health.** A connection that cannot be made ([`AttemptResult::Unreachable`])
//!   marks the target down at once; transient answers (5xx, 429, timeouts) do so when they
//!   come from `down_after` different lanes with no success in between. One record failing
//!   again and again is that record's problem: it backs off alone, uses up its attempts and
//!   others keep flowing. While the target is down nothing is sent but one probe at a time,
//!   the head of the lane that has waited longest (first in, first probed, so every waiting
//!   lane gets its turn), on a full-jitter schedule of its own: an outage costs the receiver a
//!   trickle of requests, not one per waiting record. The first answer that proves the receiver alive (a delivery, or a
//!   rejection) brings the target up and releases every waiting lane at once, so the backlog
//!   drains at full speed, except lanes still inside a `Retry-After` they were given.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};

use bytes::Bytes;

use super::record::{Pending, RecordId, Target};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Deliveries in flight across all targets.
    pub max_in_flight: usize,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Counted failures before a record is dead-lettered; 0 means no limit (only `max_age_ms`).
    pub max_attempts: u32,
    /// A record older than this is dead-lettered at its next failure.
    pub max_age_ms: u64,
    /// Consecutive transient failures that mark a target down.
    pub down_after: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_in_flight: 64,
            backoff_base_ms: 500,
            backoff_max_ms: 300_000,
            max_attempts: 20,
            max_age_ms: 7 * 86_400_000,
            down_after: 3,
        }
    }
}

/// How one delivery attempt went, as judged by the shell from the HTTP exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The receiver accepted it (2xx and a success envelope).
    Delivered,
    /// Worth retrying: a timeout, a connection failure, 5xx, 408, 429.
    Transient {
        reason: String,
        /// The receiver's `Retry-After`, in ms, honoured as a minimum delay.
        retry_after_ms: Option<u64>,
    },
    /// Retrying cannot help: any other 4xx, or an envelope refusing the record.
    Rejected { reason: String },
    /// The connection could not be made (refused, unreachable, connect timeout): retried like
    /// a transient failure, but it does not count against the record's attempts.
    Unreachable { reason: String },
}

/// One record to send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    pub id: RecordId,
    pub target: Target,
    pub idempotency_key: String,
    pub payload: Bytes,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub enqueued_ms: u64,
    /// Sent while the target is down, to find out whether it came back.
    pub probe: bool,
}

/// What the shell must make durable after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Delete the row.
    Delivered {
        id: RecordId,
        target: Target,
        enqueued_ms: u64,
    },
    /// Keep the row; persist the attempt count so a restart keeps counting.
    Retry {
        id: RecordId,
        target: Target,
        attempts: u32,
        due_ms: u64,
        reason: String,
    },
    /// Move the row to the dead-letter table.
    Dead { record: Pending, reason: String },
}

type LaneId = u64;

struct Lane {
    target: Target,
    key: String,
    queue: VecDeque<Pending>,
    in_flight: bool,
    /// When the head may be sent.
    due_ms: u64,
    /// The receiver's `Retry-After` for the head: not before this, even when the target
    /// comes back.
    not_before_ms: u64,
    /// Failures of the head, counted or not: the backoff exponent (attempts alone stay
    /// flat while failures do not count).
    failures: u32,
}

#[derive(Default)]
struct TargetState {
    down: bool,
    /// Consecutive transient failures.
    failures: u32,
    probe_due_ms: u64,
    probe_in_flight: bool,
    /// Lanes that came due while the target was down, in the order they did.
    parked: VecDeque<LaneId>,
    /// Lanes that failed since the last answer that proved the target alive.
    failing: HashSet<LaneId>,
    depth: usize,
    bytes: usize,
    /// Pending records by id (ids grow with commit time), for the age of the oldest.
    enqueued: BTreeMap<RecordId, u64>,
}

/// Gauges for one target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetStats {
    pub depth: usize,
    pub bytes: usize,
    pub oldest_enqueued_ms: Option<u64>,
    pub down: bool,
}

pub struct Scheduler {
    cfg: SchedulerConfig,
    lanes: HashMap<LaneId, Lane>,
    lane_of_key: HashMap<(Target, String), LaneId>,
    /// Every pending record's lane, so a record is never adopted twice.
    lane_of_record: HashMap<RecordId, LaneId>,
    /// Lanes by due time; entries go stale when a lane is rescheduled and are skipped.
    heap: BinaryHeap<Reverse<(u64, LaneId)>>,
    /// Records in flight: their lane, and whether they are their target's probe.
    in_flight: HashMap<RecordId, (LaneId, bool)>,
    targets: [TargetState; Target::ALL.len()],
    next_lane: LaneId,
    rng: u64,
}

impl Scheduler {
    /// `seed` drives the jitter, so tests are reproducible; the daemon seeds it randomly.
    pub fn new(cfg: SchedulerConfig, seed: u64) -> Scheduler {
        Scheduler {
            cfg,
            lanes: HashMap::new(),
            lane_of_key: HashMap::new(),
            lane_of_record: HashMap::new(),
            heap: BinaryHeap::new(),
            in_flight: HashMap::new(),
            targets: Default::default(),
            next_lane: 0,
            rng: seed | 1,
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// Adopts a committed record. Records must be pushed in id order for per-key order to
    /// hold (the shell reads them from the store by ascending id). A record already known is
    /// ignored, so re-reading the store is harmless.
    pub fn push(&mut self, rec: Pending, now_ms: u64) {
        if self.lane_of_record.contains_key(&rec.id) {
            return;
        }
        let t = &mut self.targets[rec.target.index()];
        t.depth += 1;
        t.bytes += rec.size();
        t.enqueued.insert(rec.id, rec.enqueued_ms);
        let lane_id = match self.lane_of_key.get(&(rec.target, rec.key.clone())) {
            Some(&id) => id,
            None => {
                let id = self.next_lane;
                self.next_lane += 1;
                self.lane_of_key.insert((rec.target, rec.key.clone()), id);
                self.lanes.insert(
                    id,
                    Lane {
                        target: rec.target,
                        key: rec.key.clone(),
                        queue: VecDeque::new(),
                        in_flight: false,
                        due_ms: now_ms,
                        not_before_ms: 0,
                        failures: 0,
                    },
                );
                self.heap.push(Reverse((now_ms, id)));
                id
            }
        };
        self.lane_of_record.insert(rec.id, lane_id);
        if let Some(lane) = self.lanes.get_mut(&lane_id) {
            lane.queue.push_back(rec);
        }
    }

    /// The next record to send, if any may go now.
    pub fn poll_dispatch(&mut self, now_ms: u64) -> Option<Dispatch> {
        if self.in_flight.len() >= self.cfg.max_in_flight {
            return None;
        }
        // A probe for each down target whose probe is due.
        for target in Target::ALL {
            let t = &mut self.targets[target.index()];
            if !t.down || t.probe_in_flight || t.probe_due_ms > now_ms {
                continue;
            }
            while let Some(lane_id) = t.parked.pop_front() {
                let ok = self
                    .lanes
                    .get(&lane_id)
                    .is_some_and(|l| !l.in_flight && !l.queue.is_empty());
                if ok {
                    self.targets[target.index()].probe_in_flight = true;
                    return self.dispatch(lane_id, true);
                }
            }
        }
        while let Some(&Reverse((due, lane_id))) = self.heap.peek() {
            if due > now_ms {
                return None;
            }
            self.heap.pop();
            let Some(lane) = self.lanes.get(&lane_id) else {
                continue;
            };
            if lane.in_flight || lane.queue.is_empty() || lane.due_ms != due {
                continue; // stale entry
            }
            let target = lane.target;
            let t = &mut self.targets[target.index()];
            if t.down {
                t.parked.push_back(lane_id);
                continue;
            }
            return self.dispatch(lane_id, false);
        }
        None
    }

    fn dispatch(&mut self, lane_id: LaneId, probe: bool) -> Option<Dispatch> {
        let lane = self.lanes.get_mut(&lane_id)?;
        let head = lane.queue.front()?;
        lane.in_flight = true;
        self.in_flight.insert(head.id, (lane_id, probe));
        Some(Dispatch {
            id: head.id,
            target: head.target,
            idempotency_key: head.idempotency_key.clone(),
            payload: head.payload.clone(),
            attempt: head.attempts + 1,
            enqueued_ms: head.enqueued_ms,
            probe,
        })
    }

    /// When to call [`Self::poll_dispatch`] again if nothing else happens. `None` when
    /// nothing is waiting on time.
    pub fn next_wakeup(&self) -> Option<u64> {
        let heap = self.heap.peek().map(|Reverse((due, _))| *due);
        let probes = self
            .targets
            .iter()
            .filter(|t| t.down && !t.probe_in_flight && !t.parked.is_empty())
            .map(|t| t.probe_due_ms)
            .min();
        match (heap, probes) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Records the answer to a dispatched record. `None` for an id not in flight.
    pub fn on_result(
        &mut self,
        id: RecordId,
        result: AttemptResult,
        now_ms: u64,
    ) -> Option<Decision> {
        let (lane_id, probe) = self.in_flight.remove(&id)?;
        let lane = self.lanes.get_mut(&lane_id)?;
        lane.in_flight = false;
        let target = lane.target;
        let was_down = self.targets[target.index()].down;
        if probe {
            self.targets[target.index()].probe_in_flight = false;
        }
        let decision = match result {
            AttemptResult::Delivered => {
                let rec = self.pop_head(lane_id)?;
                self.target_alive(target, now_ms);
                Decision::Delivered {
                    id: rec.id,
                    target,
                    enqueued_ms: rec.enqueued_ms,
                }
            }
            AttemptResult::Rejected { reason } => {
                let mut rec = self.pop_head(lane_id)?;
                rec.attempts += 1;
                self.target_alive(target, now_ms);
                Decision::Dead {
                    record: rec,
                    reason,
                }
            }
            AttemptResult::Transient { .. } | AttemptResult::Unreachable { .. } => {
                let (unreachable, reason, retry_after_ms) = match result {
                    AttemptResult::Transient {
                        reason,
                        retry_after_ms,
                    } => (false, reason, retry_after_ms),
                    AttemptResult::Unreachable { reason } => (true, reason, None),
                    _ => unreachable!("matched above"),
                };
                let counted = !was_down && !unreachable;
                let (attempts, failures, enqueued_ms) = {
                    let lane = self.lanes.get_mut(&lane_id)?;
                    lane.failures = lane.failures.saturating_add(1);
                    let failures = lane.failures;
                    let head = lane.queue.front_mut()?;
                    if counted {
                        head.attempts += 1;
                    }
                    (head.attempts, failures, head.enqueued_ms)
                };
                self.target_failed(target, lane_id, unreachable, retry_after_ms, now_ms);
                let exhausted = self.cfg.max_attempts > 0 && attempts >= self.cfg.max_attempts;
                let expired = now_ms.saturating_sub(enqueued_ms) > self.cfg.max_age_ms;
                if exhausted || expired {
                    let rec = self.pop_head(lane_id)?;
                    let why = if exhausted {
                        format!("exhausted after {attempts} attempts: {reason}")
                    } else {
                        format!("expired after {attempts} attempts: {reason}")
                    };
                    Decision::Dead {
                        record: rec,
                        reason: why,
                    }
                } else {
                    // Uncounted failures burn no attempt but still back off.
                    let n = attempts.max(failures);
                    let delay = self.jitter(n).max(retry_after_ms.unwrap_or(0));
                    let due_ms = now_ms + delay;
                    if let Some(lane) = self.lanes.get_mut(&lane_id) {
                        lane.due_ms = due_ms;
                        lane.not_before_ms = retry_after_ms.map_or(0, |r| now_ms + r);
                    }
                    self.heap.push(Reverse((due_ms, lane_id)));
                    return Some(Decision::Retry {
                        id,
                        target,
                        attempts,
                        due_ms,
                        reason,
                    });
                }
            }
        };
        // The head left the lane: the next record may go at once, or the lane is done.
        let empty = self.lanes.get(&lane_id).is_none_or(|l| l.queue.is_empty());
        if empty {
            if let Some(lane) = self.lanes.remove(&lane_id) {
                self.lane_of_key.remove(&(lane.target, lane.key));
            }
        } else if let Some(lane) = self.lanes.get_mut(&lane_id) {
            lane.due_ms = now_ms;
            lane.not_before_ms = 0;
            lane.failures = 0;
            self.heap.push(Reverse((now_ms, lane_id)));
        }
        Some(decision)
    }

    fn pop_head(&mut self, lane_id: LaneId) -> Option<Pending> {
        let rec = self.lanes.get_mut(&lane_id)?.queue.pop_front()?;
        self.lane_of_record.remove(&rec.id);
        let t = &mut self.targets[rec.target.index()];
        t.depth -= 1;
        t.bytes -= rec.size();
        t.enqueued.remove(&rec.id);
        Some(rec)
    }

    /// The receiver answered: bring the target up and release everything waiting on it.
    fn target_alive(&mut self, target: Target, now_ms: u64) {
        let t = &mut self.targets[target.index()];
        t.failures = 0;
        t.failing.clear();
        if !t.down {
            return;
        }
        t.down = false;
        t.parked.clear();
        // Every lane of this target that is waiting (parked, or backing off from failures
        // that were the outage's) goes now, unless the receiver asked it to wait longer.
        for (&id, lane) in self.lanes.iter_mut() {
            if lane.target == target && !lane.in_flight && !lane.queue.is_empty() {
                // Parked lanes are in no heap entry: every waiting lane gets a fresh one.
                lane.due_ms = lane.due_ms.min(now_ms.max(lane.not_before_ms));
                self.heap.push(Reverse((lane.due_ms, id)));
            }
        }
    }

    fn target_failed(
        &mut self,
        target: Target,
        lane_id: LaneId,
        unreachable: bool,
        retry_after_ms: Option<u64>,
        now_ms: u64,
    ) {
        let down_after = self.cfg.down_after.max(1) as usize;
        let failures = {
            let t = &mut self.targets[target.index()];
            t.failures = t.failures.saturating_add(1);
            // Emptied by every answer that proves the target alive; while it is down only
            // probes fail, so it grows by at most one lane per probe.
            if t.failing.len() < down_after {
                t.failing.insert(lane_id);
            }
            if t.failing.len() < down_after && !t.down && !unreachable {
                return;
            }
            t.failures
        };
        let down_after = down_after as u32;
        let delay = self
            .jitter(failures.saturating_sub(down_after).max(1))
            .max(retry_after_ms.unwrap_or(0));
        let t = &mut self.targets[target.index()];
        if !t.down {
            t.down = true;
            tracing::warn!(target = target.as_str(), failures, "push target down");
        }
        t.probe_due_ms = now_ms + delay;
    }

    /// Full jitter: uniform in [0, min(max, base · 2^n)].
    fn jitter(&mut self, n: u32) -> u64 {
        let cap = self
            .cfg
            .backoff_base_ms
            .saturating_mul(1u64 << n.min(40))
            .min(self.cfg.backoff_max_ms);
        // xorshift64*: plenty for spreading retries, and reproducible in tests.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        if cap == 0 {
            0
        } else {
            r % (cap + 1)
        }
    }

    pub fn stats(&self, target: Target) -> TargetStats {
        let t = &self.targets[target.index()];
        TargetStats {
            depth: t.depth,
            bytes: t.bytes,
            oldest_enqueued_ms: t.enqueued.values().next().copied(),
            down: t.down,
        }
    }

    /// Records held, across targets.
    pub fn depth(&self) -> usize {
        self.targets.iter().map(|t| t.depth).sum()
    }

    pub fn bytes(&self) -> usize {
        self.targets.iter().map(|t| t.bytes).sum()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether a lane holds records (for heartbeat coalescing: no heartbeat joins a backlog).
    pub fn lane_busy(&self, target: Target, key: &str) -> bool {
        self.lane_of_key.contains_key(&(target, key.to_string()))
    }
}

#[cfg(test)]
mod tests;
