//! The outbox's per-record work outside SQLite and HTTP: the scheduler adopting a record,
//! dispatching it and settling its answer (with 10,000 other records pending in 2,500 lanes,
//! so lane lookups and the heap are at a realistic size), and judging the grid's answer.
//! The durable path end to end (group commit, HTTP) is measured by `scripts/bench-outbox.sh`.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gridedge::outbox::judge::judge;
use gridedge::outbox::scheduler::{AttemptResult, Scheduler, SchedulerConfig};
use gridedge::outbox::{Pending, RecordId, Target};

fn rec(id: i64, key: String, payload: &Bytes) -> Pending {
    Pending {
        id: RecordId(id),
        target: Target::Cdr,
        key,
        idempotency_key: format!("{:032}", id),
        payload: payload.clone(),
        enqueued_ms: 1_000,
        attempts: 0,
    }
}

fn bench(c: &mut Criterion) {
    let payload = Bytes::from(vec![b'x'; 1300]);
    let cfg = SchedulerConfig {
        max_in_flight: 20_000,
        ..SchedulerConfig::default()
    };
    let mut s = Scheduler::new(cfg, 7);
    // Background: 10,000 records in 2,500 lanes, heads in flight (as under load).
    for i in 0..10_000 {
        s.push(rec(i, format!("bg-{}", i % 2_500), &payload), 0);
    }
    while s.poll_dispatch(0).is_some() {}
    let mut id = 1_000_000i64;
    c.bench_function("outbox/schedule_one_record", |b| {
        b.iter(|| {
            id += 1;
            s.push(rec(id, format!("call-{id}"), &payload), 0);
            let d = s.poll_dispatch(0).expect("the new lane is due");
            let decision = s.on_result(d.id, AttemptResult::Delivered, 1);
            black_box(decision)
        })
    });
    let ok = br#"{"code":"200","msg":"ok"}"#;
    c.bench_function("outbox/judge_answer", |b| {
        b.iter(|| black_box(judge(black_box(200), None, black_box(ok))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
