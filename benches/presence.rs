//! One agent state transition and its event fan-out, with 10,000 seats and 100 subscribers.
//!
//! The seats are signed in and registered; each iteration toggles one seat (rotating through
//! all 10,000) between idle and not ready through `Presence::command`, then hands the event to
//! the event-stream hub, which renders seed 004's messages and publishes them. 100 supervisor
//! connections watch the project's `/topic/callExtStatus`, and the toggled agent's desktop
//! watches its own `/topic/status` and `/topic/register`.
//!
//! Two figures: `publish` is the work on the path of the transition (state machine, counters,
//! JSON rendering, one channel send per topic whatever the number of subscribers); `delivered`
//! also drains every subscriber's copy, the work that in the daemon happens on each
//! connection's own task.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gridedge::agents::counters::DayClock;
use gridedge::agents::directory::ProjectCode;
use gridedge::agents::presence::{AgentEvent, Command, Presence};
use gridedge::agents::service::AgentEventSink;
use gridedge::agents::state::AgentConfig;
use gridedge::api::stream::Hub;
use gridedge::metrics::Metrics;

const SEATS: usize = 10_000;
const SUBSCRIBERS: usize = 100;
const T0: u64 = 1_700_000_000_000;

fn setup() -> (Presence, Arc<Hub>, Vec<String>) {
    let clock = DayClock::new("Asia/Shanghai").unwrap();
    let mut p = Presence::new(AgentConfig::default(), clock, T0);
    let project = ProjectCode::parse("P1").unwrap();
    let users: Vec<String> = (0..SEATS).map(|i| format!("{}", 100_000 + i)).collect();
    for u in &users {
        p.add_seat(u, Some(project.clone()), None, true, None, T0);
        p.command(u, Command::Available, T0).unwrap();
    }
    let hub = Arc::new(Hub::new(256, Arc::new(Metrics::new())));
    (p, hub, users)
}

/// Toggles the `i`-th seat (rotating) between not ready and idle at `now`.
fn toggle(p: &mut Presence, users: &[String], i: usize, now: u64) -> Vec<AgentEvent> {
    let cmd = if (i / SEATS) % 2 == 0 {
        Command::Unavailable
    } else {
        Command::Available
    };
    let events = p.command(&users[i % SEATS], cmd, now).unwrap();
    // Every iteration must be a real transition, or the figure would flatter.
    assert_eq!(events.len(), 1);
    events
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("presence_transition_10k_seats_100_subscribers");

    let (mut p, hub, users) = setup();
    let supervisors: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| hub.subscribe("/topic/callExtStatus/P1"))
        .collect();
    let mut desktops: Vec<_> = users
        .iter()
        .flat_map(|u| {
            [
                hub.subscribe(&format!("/topic/status/{u}")),
                hub.subscribe(&format!("/topic/register/{u}")),
            ]
        })
        .collect();
    let mut i = 0usize;
    let mut now = T0;
    g.bench_function("publish", |b| {
        b.iter(|| {
            now += 1;
            let events = toggle(&mut p, &users, i, now);
            i += 1;
            AgentEventSink::publish(&*hub, black_box(&events));
        })
    });
    drop(supervisors);
    desktops.clear();

    let (mut p, _hub, users) = setup();
    let mut i = 0usize;
    let mut now = T0;
    g.bench_function("transition_only", |b| {
        b.iter(|| {
            now += 1;
            black_box(toggle(&mut p, &users, i, now));
            i += 1;
        })
    });

    let (mut p, hub, users) = setup();
    let mut supervisors: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| hub.subscribe("/topic/callExtStatus/P1"))
        .collect();
    let mut i = 0usize;
    let mut now = T0;
    g.bench_function("delivered", |b| {
        b.iter(|| {
            now += 1;
            let events = toggle(&mut p, &users, i, now);
            i += 1;
            AgentEventSink::publish(&*hub, &events);
            for rx in supervisors.iter_mut() {
                black_box(rx.try_recv().unwrap());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
