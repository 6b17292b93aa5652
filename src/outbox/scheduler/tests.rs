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

fn unreachable() -> AttemptResult {
    AttemptResult::Unreachable {
        reason: "transport: connection refused".into(),
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
        s.on_result(d.id, unreachable(), 0);
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
                s.on_result(d.id, unreachable(), now),
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
        rest.iter().all(|d| d.attempt == 1),
        "no record burned attempts in the outage"
    );
}

#[test]
fn probes_take_turns_first_parked_first_probed() {
    let mut c = cfg();
    c.max_age_ms = u64::MAX / 4;
    let mut s = Scheduler::new(c, 21);
    for i in 1..=3 {
        s.push(rec(i, Target::Cdr, &format!("k{i}")), 0);
    }
    for d in drain(&mut s, 0) {
        s.on_result(d.id, unreachable(), 0);
    }
    assert!(s.stats(Target::Cdr).down);
    // A new call arrives during the outage.
    s.push(rec(10, Target::Cdr, "new"), 0);
    let mut probed = Vec::new();
    for _ in 0..8 {
        let (now, d) = next_dispatch(&mut s);
        assert!(d.probe);
        probed.push(d.id.0);
        s.on_result(d.id, unreachable(), now);
    }
    // Every waiting lane, the new one included, is probed within the first five probes.
    for id in [1, 2, 3, 10] {
        assert!(probed[..5].contains(&id), "{id} not probed in {probed:?}");
    }
}

#[test]
fn one_record_failing_alone_is_its_own_problem() {
    // A record the receiver answers 500 forever: the target is not declared down (no other
    // lane fails), the record uses up its attempts and is dead-lettered after exactly
    // max_attempts requests; meanwhile new calls go at once.
    let mut s = Scheduler::new(cfg(), 4);
    s.push(rec(1, Target::Cdr, "stuck"), 0);
    let mut now = 0;
    let mut sent = 0;
    let mut other = 100;
    loop {
        for d in drain(&mut s, now) {
            if d.id == RecordId(1) {
                sent += 1;
                match s.on_result(d.id, transient(), now).unwrap() {
                    Decision::Retry { .. } => {}
                    Decision::Dead { record, reason } => {
                        assert_eq!(record.attempts, 5);
                        assert!(reason.starts_with("exhausted after 5"), "{reason}");
                        assert_eq!(sent, 5, "exactly max_attempts requests");
                        return;
                    }
                    other => panic!("{other:?}"),
                }
            } else {
                s.on_result(d.id, AttemptResult::Delivered, now);
            }
        }
        assert!(
            !s.stats(Target::Cdr).down,
            "one failing lane does not take the target down"
        );
        other += 1;
        s.push(rec(other, Target::Cdr, &format!("other{other}")), now);
        let d = drain(&mut s, now);
        assert!(
            d.iter().any(|d| d.id == RecordId(other)),
            "a new call waited"
        );
        for d in d {
            s.on_result(d.id, AttemptResult::Delivered, now);
        }
        now = s.next_wakeup().expect("the stuck record waits").max(now);
    }
}

#[test]
fn a_rejected_record_counts_its_one_attempt() {
    let mut s = Scheduler::new(cfg(), 1);
    s.push(rec(1, Target::Cdr, "a"), 0);
    drain(&mut s, 0);
    match s.on_result(
        RecordId(1),
        AttemptResult::Rejected {
            reason: "http 400".into(),
        },
        1,
    ) {
        Some(Decision::Dead { record, .. }) => assert_eq!(record.attempts, 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn retry_after_survives_the_target_coming_back() {
    let mut s = Scheduler::new(cfg(), 8);
    for i in 1..=4 {
        s.push(rec(i, Target::Cdr, &format!("k{i}")), 0);
    }
    let wave = drain(&mut s, 0);
    // Record 1 is told to wait 4 s; the others cannot connect: the target goes down.
    s.on_result(
        wave[0].id,
        AttemptResult::Transient {
            reason: "http 503".into(),
            retry_after_ms: Some(4_000),
        },
        0,
    );
    for d in &wave[1..] {
        s.on_result(d.id, unreachable(), 0);
    }
    assert!(s.stats(Target::Cdr).down);
    let (now, d) = next_dispatch(&mut s);
    assert_ne!(
        d.id, wave[0].id,
        "record 1 is not probed inside its Retry-After"
    );
    s.on_result(d.id, AttemptResult::Delivered, now);
    assert!(!s.stats(Target::Cdr).down);
    let released = drain(&mut s, now);
    assert!(now < 4_000, "the probe came at {now}");
    assert!(
        !released.iter().any(|d| d.id == wave[0].id),
        "released before its Retry-After"
    );
    assert_eq!(released.len(), 2);
    for d in released {
        s.on_result(d.id, AttemptResult::Delivered, now);
    }
    // Wake-ups may be early (stale heap entries), never the dispatch.
    let (at, d) = next_dispatch(&mut s);
    assert_eq!(d.id, wave[0].id);
    assert!(at >= 4_000, "sent at {at}");
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

#[test]
fn a_long_5xx_outage_dead_letters_nothing() {
    // The receiver answers 503 to everything for 12 hours: once several lanes failed the
    // target is down, probes do not count, and nothing is dead-lettered.
    let mut c = cfg();
    c.max_age_ms = u64::MAX / 4;
    let mut s = Scheduler::new(c, 31);
    for i in 1..=5 {
        s.push(rec(i, Target::Cdr, &format!("k{i}")), 0);
    }
    let mut now = 0;
    while now < 12 * 3_600_000 {
        for d in drain(&mut s, now) {
            let dec = s.on_result(d.id, transient(), now);
            assert!(matches!(dec, Some(Decision::Retry { .. })), "{dec:?}");
        }
        now = s.next_wakeup().expect("waiting").max(now + 1);
    }
    assert_eq!(s.depth(), 5);
    assert!(s.stats(Target::Cdr).down);
}

#[test]
fn an_unreachable_lone_record_backs_off() {
    // One record, receiver port closed: the target is down at the first refusal and probes
    // back off to backoff_max instead of retrying every second forever.
    let mut c = cfg();
    c.max_age_ms = u64::MAX / 4;
    let mut s = Scheduler::new(c, 5);
    s.push(rec(1, Target::Cdr, "only"), 0);
    let mut now = 0;
    let mut sent = 0;
    while now < 3_600_000 {
        for d in drain(&mut s, now) {
            sent += 1;
            s.on_result(d.id, unreachable(), now);
        }
        now = s.next_wakeup().expect("waiting").max(now + 1);
    }
    assert!(s.stats(Target::Cdr).down);
    // Backoff capped at 10 s with full jitter: on average one try per 5 s at most.
    assert!(sent < 3_600 / 2, "{sent} tries in an hour");
    assert_eq!(s.depth(), 1, "never dead-lettered by an outage");
}

#[test]
fn only_the_probe_clears_the_probe_slot() {
    // A request sent before the outage answers (times out) while the probe is out: still
    // one probe at a time.
    let mut c = cfg();
    c.max_age_ms = u64::MAX / 4;
    let mut s = Scheduler::new(c, 12);
    for i in 1..=5 {
        s.push(rec(i, Target::Cdr, &format!("k{i}")), 0);
    }
    let wave = drain(&mut s, 0);
    // Three lanes fail: target down; two requests are still out.
    for d in &wave[..3] {
        s.on_result(d.id, transient(), 0);
    }
    assert!(s.stats(Target::Cdr).down);
    let (now, probe) = next_dispatch(&mut s);
    assert!(probe.probe);
    // A late answer of an old request does not free the probe slot.
    s.on_result(wave[3].id, transient(), now);
    assert!(drain(&mut s, now + 1_000_000).is_empty());
}
