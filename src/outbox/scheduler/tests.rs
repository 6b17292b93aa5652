use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;

fn rec(id: i64, target: Target, key: &str) -> Pending {
    Pending {
        id: RecordId(id),
        target,
        key: key.to_string(),
        idempotency_key: format!("idem-{id}"),
        payload: Bytes::from(format!("{{\"n\":{id}}}")),
        enqueued_ms: 1_000,
        attempts: 0,
    }
}

fn cfg() -> SchedulerConfig {
    SchedulerConfig {
        max_in_flight: 8,
        backoff_base_ms: 100,
        backoff_max_ms: 10_000,
        max_attempts: 5,
        max_age_ms: 1_000_000,
        down_after: 3,
    }
}

fn transient() -> AttemptResult {
    AttemptResult::Transient {
        reason: "http 503: busy".into(),
        retry_after_ms: None,
    }
}

fn drain(s: &mut Scheduler, now: u64) -> Vec<Dispatch> {
    let mut out = Vec::new();
    while let Some(d) = s.poll_dispatch(now) {
        out.push(d);
    }
    out
}

/// Advances to wake-ups until something is dispatched.
fn next_dispatch(s: &mut Scheduler) -> (u64, Dispatch) {
    for _ in 0..1000 {
        let wake = s.next_wakeup().expect("something waits");
        if let Some(d) = s.poll_dispatch(wake) {
            return (wake, d);
        }
    }
    panic!("nothing dispatched")
}

#[test]
fn one_in_flight_per_key_and_keys_in_parallel() {
    let mut s = Scheduler::new(cfg(), 1);
    for (id, key) in [(1, "a"), (2, "a"), (3, "b"), (4, "a"), (5, "c")] {
        s.push(rec(id, Target::Cdr, key), 0);
    }
    let first: Vec<i64> = drain(&mut s, 0).iter().map(|d| d.id.0).collect();
    assert_eq!(first.len(), 3, "one head per key: {first:?}");
    assert!(first.contains(&1) && first.contains(&3) && first.contains(&5));
    // a's next record goes only once 1 is answered.
    assert!(drain(&mut s, 0).is_empty());
    assert!(matches!(
        s.on_result(RecordId(1), AttemptResult::Delivered, 1),
        Some(Decision::Delivered { .. })
    ));
    let next: Vec<i64> = drain(&mut s, 1).iter().map(|d| d.id.0).collect();
    assert_eq!(next, vec![2]);
}

#[test]
fn same_key_in_different_targets_is_independent() {
    let mut s = Scheduler::new(cfg(), 1);
    s.push(rec(1, Target::Cdr, "k"), 0);
    s.push(rec(2, Target::Detail, "k"), 0);
    assert_eq!(drain(&mut s, 0).len(), 2);
}

#[test]
fn a_retry_waits_its_backoff_and_keeps_the_lane_blocked() {
    let mut s = Scheduler::new(cfg(), 7);
    s.push(rec(1, Target::Cdr, "a"), 0);
    s.push(rec(2, Target::Cdr, "a"), 0);
    assert_eq!(drain(&mut s, 0)[0].id, RecordId(1));
    let Some(Decision::Retry {
        due_ms, attempts, ..
    }) = s.on_result(RecordId(1), transient(), 10)
    else {
        panic!("expected a retry")
    };
    assert_eq!(attempts, 1);
    // Full jitter with base 100 and one attempt: within [now, now + 200].
    assert!((10..=210).contains(&due_ms), "{due_ms}");
    if due_ms > 10 {
        assert!(
            drain(&mut s, due_ms - 1).is_empty(),
            "nothing before the due time"
        );
    }
    let d = drain(&mut s, due_ms);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].id, RecordId(1), "record 2 never overtakes record 1");
    assert_eq!(d[0].attempt, 2);
}

#[test]
fn retry_after_is_a_minimum() {
    let mut s = Scheduler::new(cfg(), 3);
    s.push(rec(1, Target::Cdr, "a"), 0);
    drain(&mut s, 0);
    let r = AttemptResult::Transient {
        reason: "http 429".into(),
        retry_after_ms: Some(5_000),
    };
    let Some(Decision::Retry { due_ms, .. }) = s.on_result(RecordId(1), r, 100) else {
        panic!()
    };
    assert!(due_ms >= 5_100);
}

#[test]
fn rejection_dead_letters_at_once_and_the_lane_moves_on() {
    let mut s = Scheduler::new(cfg(), 1);
    s.push(rec(1, Target::Cdr, "a"), 0);
    s.push(rec(2, Target::Cdr, "a"), 0);
    drain(&mut s, 0);
    let d = s.on_result(
        RecordId(1),
        AttemptResult::Rejected {
            reason: "http 400: bad".into(),
        },
        5,
    );
    match d {
        Some(Decision::Dead { record, reason }) => {
            assert_eq!(record.id, RecordId(1));
            assert_eq!(reason, "http 400: bad");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(drain(&mut s, 5)[0].id, RecordId(2));
    assert_eq!(s.stats(Target::Cdr).depth, 1);
}

#[test]
fn exhausted_after_max_attempts() {
    let mut c = cfg();
    c.down_after = 1000; // keep the target up: this is about one record
    let mut s = Scheduler::new(c, 9);
    s.push(rec(1, Target::Cdr, "a"), 0);
    let mut now = 0;
    for attempt in 1..=5 {
        let d = drain(&mut s, now);
        assert_eq!(d.len(), 1, "attempt {attempt}");
        match s.on_result(RecordId(1), transient(), now) {
            Some(Decision::Retry { due_ms, .. }) => {
                assert!(attempt < 5);
                now = due_ms;
            }
            Some(Decision::Dead { reason, record }) => {
                assert_eq!(attempt, 5);
                assert_eq!(record.attempts, 5);
                assert!(reason.starts_with("exhausted after 5 attempts"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(s.depth(), 0);
    assert_eq!(s.next_wakeup(), None.or(s.next_wakeup()));
}

#[test]
fn expired_records_are_dead_lettered_at_their_next_failure() {
    let mut c = cfg();
    c.max_age_ms = 1_000;
    c.down_after = 1000;
    let mut s = Scheduler::new(c, 9);
    s.push(rec(1, Target::Cdr, "a"), 0); // enqueued at 1_000
    drain(&mut s, 0);
    match s.on_result(RecordId(1), transient(), 2_001) {
        Some(Decision::Dead { reason, .. }) => assert!(reason.starts_with("expired"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_outage_is_probed_not_hammered_and_burns_no_attempts() {
    let mut c = cfg();
    c.max_in_flight = 100;
    c.max_age_ms = 86_400_000;
    let mut s = Scheduler::new(c, 11);
    for i in 1..=50 {
        s.push(rec(i, Target::Cdr, &format!("k{i}")), 0);
    }
    // The first wave fails: the target goes down after 3 failures.
    let wave = drain(&mut s, 0);
    assert_eq!(wave.len(), 50);
    for d in &wave {
        s.on_result(d.id, transient(), 0);
    }
    assert!(s.stats(Target::Cdr).down);
    // A long outage: only probes, one at a time.
    let mut now = 0u64;
    let mut probes = 0;
    while now < 3_600_000 {
        let Some(wake) = s.next_wakeup() else { break };
        now = wake.max(now);
        let d = drain(&mut s, now);
        assert!(d.len() <= 1, "at most one probe at a time: {}", d.len());
        for d in d {
            assert!(d.probe);
            probes += 1;
            assert!(matches!(
                s.on_result(d.id, transient(), now),
                Some(Decision::Retry { .. })
            ));
        }
    }
    // Probes back off exponentially to backoff_max (10 s): an hour costs at most a few
    // hundred requests, not 50 records times their own schedules.
    assert!(probes <= 3_600_000 / 2_000, "{probes} probes");
    assert!(
        probes > 10,
        "{probes} probes: the target must keep being probed"
    );
    // Nothing was dead-lettered and no record burned more than its first attempt.
    assert_eq!(s.depth(), 50);
    // Recovery: the next probe succeeds and everything goes at once.
    let (wake, d) = next_dispatch(&mut s);
    assert!(d.probe);
    s.on_result(d.id, AttemptResult::Delivered, wake);
    assert!(!s.stats(Target::Cdr).down);
    let rest = drain(&mut s, wake);
    assert_eq!(rest.len(), 49, "the backlog drains at once");
    assert!(
        rest.iter().all(|d| d.attempt <= 2),
        "no record burned attempts in the outage"
    );
}

#[test]
fn a_rejection_proves_the_target_alive() {
    let mut s = Scheduler::new(cfg(), 5);
    for i in 1..=4 {
        s.push(rec(i, Target::Cdr, &format!("k{i}")), 0);
    }
    for d in drain(&mut s, 0) {
        s.on_result(d.id, transient(), 0);
    }
    assert!(s.stats(Target::Cdr).down);
    let (wake, d) = next_dispatch(&mut s);
    s.on_result(
        d.id,
        AttemptResult::Rejected {
            reason: "http 400".into(),
        },
        wake,
    );
    assert!(!s.stats(Target::Cdr).down);
    assert_eq!(drain(&mut s, wake).len(), 3);
}

#[test]
fn one_failing_target_does_not_hold_another() {
    let mut s = Scheduler::new(cfg(), 5);
    for i in 1..=4 {
        s.push(rec(i, Target::Cdr, &format!("k{i}")), 0);
    }
    for d in drain(&mut s, 0) {
        s.on_result(d.id, transient(), 0);
    }
    s.push(rec(10, Target::AgentEvent, "agent"), 0);
    let d = drain(&mut s, 0);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].target, Target::AgentEvent);
}

#[test]
fn bounded_in_flight_and_duplicate_pushes_ignored() {
    let mut s = Scheduler::new(cfg(), 1);
    for i in 1..=20 {
        s.push(rec(i, Target::Cdr, &format!("k{i}")), 0);
        s.push(rec(i, Target::Cdr, &format!("k{i}")), 0);
    }
    assert_eq!(s.depth(), 20);
    assert_eq!(drain(&mut s, 0).len(), 8);
    assert_eq!(s.in_flight(), 8);
    assert!(s
        .on_result(RecordId(999), AttemptResult::Delivered, 0)
        .is_none());
}

#[test]
fn stats_track_depth_bytes_and_the_oldest() {
    let mut s = Scheduler::new(cfg(), 1);
    let mut a = rec(1, Target::Cdr, "a");
    a.enqueued_ms = 500;
    let mut b = rec(2, Target::Cdr, "b");
    b.enqueued_ms = 900;
    let size = a.size() + b.size();
    s.push(a, 0);
    s.push(b, 0);
    let st = s.stats(Target::Cdr);
    assert_eq!(
        (st.depth, st.bytes, st.oldest_enqueued_ms),
        (2, size, Some(500))
    );
    drain(&mut s, 0);
    s.on_result(RecordId(1), AttemptResult::Delivered, 0);
    assert_eq!(s.stats(Target::Cdr).oldest_enqueued_ms, Some(900));
    s.on_result(RecordId(2), AttemptResult::Delivered, 0);
    assert_eq!(s.stats(Target::Cdr), TargetStats::default());
    assert!(!s.lane_busy(Target::Cdr, "a"));
}

#[test]
fn jitter_stays_within_the_cap() {
    let mut s = Scheduler::new(cfg(), 42);
    for n in 0..64 {
        for _ in 0..50 {
            let j = s.jitter(n);
            let cap = (100u64.saturating_mul(1 << n.min(40))).min(10_000);
            assert!(j <= cap, "n={n} j={j}");
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Push { key: u8, target: bool },
    Answer { pick: u8, outcome: u8 },
    Advance(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..6, any::<bool>()).prop_map(|(key, target)| Step::Push { key, target }),
        4 => (any::<u8>(), 0u8..10).prop_map(|(pick, outcome)| Step::Answer { pick, outcome }),
        2 => (0u16..5000).prop_map(Step::Advance),
    ]
}

proptest! {
    /// A model check against random pushes, answers and time: one record in flight per
    /// lane, never more than `max_in_flight`, per-key delivery order equal to push order,
    /// depth accounting exact, every record ends delivered or dead exactly once, and
    /// after the receiver recovers everything drains.
    #[test]
    fn scheduler_model(steps in proptest::collection::vec(step(), 1..300), seed in any::<u64>()) {
        let c = SchedulerConfig { max_in_flight: 4, ..cfg() };
        let mut s = Scheduler::new(c.clone(), seed);
        let mut now = 0u64;
        let mut next_id = 1i64;
        let mut pushed: HashMap<(Target, String), Vec<i64>> = HashMap::new();
        let mut done: HashMap<(Target, String), Vec<i64>> = HashMap::new();
        let mut finished: HashSet<i64> = HashSet::new();
        let mut inflight: Vec<Dispatch> = Vec::new();
        let record = |d: &Decision, inflight_target: Target, key: String,
                          done: &mut HashMap<(Target, String), Vec<i64>>,
                          finished: &mut HashSet<i64>| {
            let id = match d {
                Decision::Delivered { id, .. } => Some(id.0),
                Decision::Dead { record, .. } => Some(record.id.0),
                Decision::Retry { .. } => None,
            };
            if let Some(id) = id {
                assert!(finished.insert(id), "record {id} finished twice");
                done.entry((inflight_target, key)).or_default().push(id);
            }
        };
        let key_of = |id: i64, pushed: &HashMap<(Target, String), Vec<i64>>| {
            pushed.iter().find(|(_, v)| v.contains(&id)).map(|(k, _)| k.clone()).unwrap()
        };
        for st in steps {
            match st {
                Step::Push { key, target } => {
                    let t = if target { Target::Cdr } else { Target::AgentEvent };
                    let k = format!("k{key}");
                    let mut r = rec(next_id, t, &k);
                    r.enqueued_ms = now;
                    s.push(r, now);
                    pushed.entry((t, k)).or_default().push(next_id);
                    next_id += 1;
                }
                Step::Answer { pick, outcome } => {
                    if inflight.is_empty() { continue; }
                    let d = inflight.remove(pick as usize % inflight.len());
                    let result = match outcome {
                        0..=4 => AttemptResult::Delivered,
                        5..=7 => transient(),
                        8 => AttemptResult::Transient { reason: "429".into(), retry_after_ms: Some(300) },
                        _ => AttemptResult::Rejected { reason: "400".into() },
                    };
                    let decision = s.on_result(d.id, result, now).expect("in flight");
                    let k = key_of(d.id.0, &pushed);
                    record(&decision, k.0, k.1.clone(), &mut done, &mut finished);
                }
                Step::Advance(ms) => now += ms as u64,
            }
            while let Some(d) = s.poll_dispatch(now) {
                assert!(!inflight.iter().any(|x| key_of(x.id.0, &pushed) == key_of(d.id.0, &pushed)),
                    "two records of one lane in flight");
                inflight.push(d);
            }
            assert!(inflight.len() <= c.max_in_flight);
            assert_eq!(s.in_flight(), inflight.len());
            let unfinished = (next_id - 1) as usize - finished.len();
            assert_eq!(s.depth(), unfinished);
        }
        // Recovery: answer everything with success until nothing is left.
        let mut guard = 0;
        while s.depth() > 0 {
            guard += 1;
            prop_assert!(guard < 100_000, "did not drain");
            for d in std::mem::take(&mut inflight) {
                let decision = s.on_result(d.id, AttemptResult::Delivered, now).unwrap();
                let k = key_of(d.id.0, &pushed);
                record(&decision, k.0, k.1.clone(), &mut done, &mut finished);
            }
            if let Some(w) = s.next_wakeup() { now = now.max(w); }
            while let Some(d) = s.poll_dispatch(now) { inflight.push(d); }
        }
        prop_assert_eq!(finished.len(), (next_id - 1) as usize);
        // Per-key order: each lane finished its records in push order.
        for (k, ids) in &pushed {
            prop_assert_eq!(done.get(k).cloned().unwrap_or_default(), ids.clone());
        }
    }
}
