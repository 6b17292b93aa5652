//! Integration tests of the sans-IO presence core ([`gridedge::agents::presence::Presence`]):
//! registrations, commands, call events, timers, local midnight, seat removal and restore,
//! driven with explicit times (nothing here sleeps or reads a clock).

use std::collections::HashMap;
use std::net::IpAddr;

use gridedge::agents::counters::{CounterSnapshot, DailyCounters, DayClock, LiveState, LocalDay};
use gridedge::agents::directory::ProjectCode;
use gridedge::agents::presence::{
    state_index, AgentEvent, AgentEventKind, CallInfo, Command, Presence, PresenceError,
    SeatSnapshot,
};
use gridedge::agents::state::{
    AgentConfig, AgentMachine, AgentState, CallId, NotReadyReason, RestReason, Transition,
    TransitionError,
};
use gridedge::events::{CallDirection, CallEvent, CallPhase};

/// 2024-03-10 10:00:00 in Asia/Shanghai (UTC+8), Unix ms.
const T0: u64 = 1_710_036_000_000;
/// The next local midnight after [`T0`]: 2024-03-11 00:00:00 +08:00.
const MIDNIGHT: u64 = 1_710_086_400_000;
const DAY_MS: u64 = 86_400_000;

// ------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------

fn clock() -> DayClock {
    DayClock::new("Asia/Shanghai").expect("Asia/Shanghai is a known zone")
}

fn cfg(acw_ms: u64) -> AgentConfig {
    AgentConfig {
        acw_ms,
        idle_after_rest: false,
    }
}

fn presence(acw_ms: u64) -> Presence {
    Presence::new(cfg(acw_ms), clock(), T0)
}

fn project() -> Option<ProjectCode> {
    Some(ProjectCode::parse("P-core").unwrap())
}

fn not_ready(reason: NotReadyReason) -> AgentState {
    AgentState::NotReady { reason }
}

fn call(id: &str) -> CallId {
    CallId(id.to_owned())
}

fn ev(
    ext: &str,
    call_id: &str,
    direction: CallDirection,
    phase: CallPhase,
    at_ms: u64,
) -> CallEvent {
    CallEvent {
        call_id: call(call_id),
        extension: ext.to_owned(),
        direction,
        phase,
        remote_number: Some("13800138000".to_owned()),
        task_code: None,
        at_ms,
    }
}

fn ended() -> CallPhase {
    CallPhase::Ended {
        q850: Some(16),
        agent_hung_up: Some(false),
    }
}

/// The transitions among `evs`, as (from, to).
fn moves(evs: &[AgentEvent]) -> Vec<(AgentState, AgentState)> {
    evs.iter()
        .map(|e| match &e.kind {
            AgentEventKind::Transition(t) => (t.from.clone(), t.to.clone()),
            AgentEventKind::Registration => panic!("want transitions only: {evs:#?}"),
        })
        .collect()
}

fn transition(e: &AgentEvent) -> &Transition {
    match &e.kind {
        AgentEventKind::Transition(t) => t,
        AgentEventKind::Registration => panic!("not a transition: {e:#?}"),
    }
}

fn state(p: &Presence, ext: &str) -> AgentState {
    p.seat(ext)
        .unwrap_or_else(|| panic!("no seat {ext}"))
        .machine
        .state()
        .clone()
}

/// The seat's counters as the grid reads them at `now_ms`.
fn snap(p: &Presence, ext: &str, now_ms: u64) -> CounterSnapshot {
    let s = p.seat(ext).unwrap_or_else(|| panic!("no seat {ext}"));
    s.counters
        .snapshot(now_ms, LiveState::from(&s.machine), p.clock())
}

/// `counts_by_state` recomputed from the seats.
fn recount(p: &Presence) -> [usize; 8] {
    let mut c = [0; 8];
    for (_, s) in p.seats() {
        c[state_index(s.machine.state())] += 1;
    }
    c
}

fn assert_counts(p: &Presence, ctx: &str) {
    assert_eq!(
        p.counts_by_state(),
        recount(p),
        "counts_by_state after {ctx}"
    );
}

/// Dirty extensions (sorted) and removed ones, draining both.
fn drain(p: &mut Presence) -> (Vec<String>, Vec<String>) {
    let (dirty, removed) = p.take_dirty();
    let mut d: Vec<String> = dirty.into_iter().map(|(e, _, _)| e).collect();
    d.sort();
    (d, removed)
}

/// A registered seat, signed in and idle at `at`.
fn idle_seat(p: &mut Presence, ext: &str, at: u64) {
    p.add_seat(ext, project(), None, true, None, at);
    let evs = p.command(ext, Command::Available, at).unwrap();
    assert_eq!(evs.len(), 2, "{evs:#?}");
    assert_eq!(state(p, ext), AgentState::Idle);
}

/// Everything about a seat a refused input must leave alone.
fn seat_state(p: &Presence, ext: &str) -> (AgentMachine, DailyCounters, Option<CallInfo>) {
    let s = p.seat(ext).unwrap();
    (s.machine.clone(), s.counters.clone(), s.call.clone())
}

// ------------------------------------------------------------------------------------------
// registration
// ------------------------------------------------------------------------------------------

#[test]
fn registration_changes_are_events_and_offline_idle_becomes_not_ready() {
    let mut p = presence(0);
    p.add_seat("8000", project(), Some("A-1".into()), false, None, T0);
    assert_counts(&p, "add_seat");
    drain(&mut p);
    let ip: IpAddr = "192.0.2.7".parse().unwrap();

    // signed out: registration is news, but no transition
    let evs = p.registration("8000", true, Some(ip), T0 + 1_000);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    let e = &evs[0];
    assert_eq!(e.kind, AgentEventKind::Registration);
    assert_eq!(e.extension, "8000");
    assert_eq!(e.project, project());
    assert_eq!(e.agent_id.as_deref(), Some("A-1"));
    assert_eq!(e.state, AgentState::SignedOut);
    assert!(e.registered);
    assert_eq!(e.source_ip, Some(ip));
    assert_eq!(e.at_ms, T0 + 1_000);
    assert_eq!(e.signin_session, None);
    assert!(p.seat("8000").unwrap().machine.registered());
    assert_eq!(
        drain(&mut p).0,
        ["8000"],
        "a registration change is persisted"
    );
    // the same again is no news
    assert!(p.registration("8000", true, None, T0 + 1_500).is_empty());
    assert_eq!(p.seat("8000").unwrap().source_ip, Some(ip), "kept");

    // down while signed out: a registration event too
    let evs = p.registration("8000", false, None, T0 + 2_000);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].kind, AgentEventKind::Registration);
    assert!(!evs[0].registered);
    assert!(p.registration("8000", false, None, T0 + 2_100).is_empty());

    // idle, then offline: NotReady(EXTENSION_OFFLINE) as a transition
    p.registration("8000", true, Some(ip), T0 + 3_000);
    p.command("8000", Command::Available, T0 + 4_000).unwrap();
    assert_eq!(state(&p, "8000"), AgentState::Idle);
    drain(&mut p);
    let evs = p.registration("8000", false, None, T0 + 9_000);
    assert_eq!(
        moves(&evs),
        [(
            AgentState::Idle,
            not_ready(NotReadyReason::EXTENSION_OFFLINE)
        )]
    );
    let t = transition(&evs[0]);
    assert_eq!(
        (t.from_since_ms, t.at_ms, t.duration_ms),
        (T0 + 4_000, T0 + 9_000, 5_000)
    );
    assert!(!evs[0].registered);
    assert_eq!(evs[0].state, not_ready(NotReadyReason::EXTENSION_OFFLINE));
    assert!(evs[0].signin_session.is_some());
    assert_eq!(drain(&mut p).0, ["8000"]);
    assert_counts(&p, "offline");

    // back online: registered, but still not ready (the agent must ask to be idle)
    let evs = p.registration("8000", true, None, T0 + 10_000);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].kind, AgentEventKind::Registration);
    assert_eq!(
        state(&p, "8000"),
        not_ready(NotReadyReason::EXTENSION_OFFLINE)
    );

    // unknown extensions are ignored
    let before = p.counts_by_state();
    drain(&mut p);
    assert!(p
        .registration("9999", true, Some(ip), T0 + 11_000)
        .is_empty());
    assert!(p.registration("9999", false, None, T0 + 11_000).is_empty());
    assert!(p.seat("9999").is_none());
    assert_eq!(p.len(), 1);
    assert_eq!(p.counts_by_state(), before);
    assert_eq!(drain(&mut p), (vec![], vec![]));
}

// ------------------------------------------------------------------------------------------
// commands
// ------------------------------------------------------------------------------------------

#[test]
fn available_signs_a_registered_seat_in_and_makes_it_idle() {
    let mut p = presence(0);
    p.add_seat("8000", project(), None, true, None, T0);
    drain(&mut p);
    let evs = p.command("8000", Command::Available, T0 + 1_000).unwrap();
    assert_eq!(
        moves(&evs),
        [
            (AgentState::SignedOut, not_ready(NotReadyReason::NONE)),
            (not_ready(NotReadyReason::NONE), AgentState::Idle),
        ]
    );
    let session = evs[0].signin_session.expect("a sign-in session");
    assert_eq!(transition(&evs[0]).signin_session, Some(session));
    assert_eq!(evs[1].signin_session, Some(session));
    assert_eq!(evs[1].state, AgentState::Idle);
    assert!(evs.iter().all(|e| e.registered && e.at_ms == T0 + 1_000));
    assert_eq!(state(&p, "8000"), AgentState::Idle);
    assert_eq!(drain(&mut p).0, ["8000"]);
    assert_counts(&p, "Available");
    let s = snap(&p, "8000", T0 + 5_000);
    assert_eq!(s.today_sign_in_count, 1);
    assert_eq!(s.today_idle_count, 1);
    assert_eq!(s.today_busy_count, 0, "the sign-in landing is not 示忙");
    assert_eq!(s.cur_sign_in_sec, 4);

    // again: nothing to do
    assert_eq!(
        p.command("8000", Command::Available, T0 + 6_000),
        Ok(vec![])
    );

    // Unavailable from idle: one step, to MANUAL
    let evs = p.command("8000", Command::Unavailable, T0 + 7_000).unwrap();
    assert_eq!(
        moves(&evs),
        [(AgentState::Idle, not_ready(NotReadyReason::MANUAL))]
    );
    assert_eq!(snap(&p, "8000", T0 + 7_000).today_busy_count, 1);
}

#[test]
fn available_on_an_unregistered_seat_is_refused_and_changes_nothing() {
    let mut p = presence(0);
    p.add_seat("8000", project(), None, false, None, T0);
    p.add_seat("8001", project(), None, true, None, T0);
    drain(&mut p);
    let before = seat_state(&p, "8000");
    let counts = p.counts_by_state();
    let snap_before = snap(&p, "8000", T0 + 1_000);

    let r = p.command("8000", Command::Available, T0 + 1_000);
    match r {
        Err(PresenceError::Refused {
            extension,
            source: TransitionError::ExtensionOffline { .. },
        }) => assert_eq!(extension, "8000"),
        other => panic!("want Refused(ExtensionOffline), got {other:?}"),
    }
    assert_eq!(
        state(&p, "8000"),
        AgentState::SignedOut,
        "half a command ran"
    );
    assert_eq!(seat_state(&p, "8000"), before);
    assert_eq!(snap(&p, "8000", T0 + 1_000), snap_before);
    assert_eq!(p.counts_by_state(), counts);
    assert_counts(&p, "refused Available");
    assert_eq!(
        drain(&mut p),
        (vec![], vec![]),
        "a refused command marked the seat dirty"
    );

    // other refusals change nothing either
    for cmd in [Command::SetIdle, Command::SignOut, Command::EndRest] {
        assert!(
            p.command("8000", cmd.clone(), T0 + 2_000).is_err(),
            "{cmd:?}"
        );
        assert_eq!(seat_state(&p, "8000"), before, "{cmd:?}");
        assert_eq!(drain(&mut p), (vec![], vec![]), "{cmd:?}");
    }
    assert_eq!(
        p.command("7999", Command::Available, T0 + 2_000),
        Err(PresenceError::UnknownSeat("7999".into()))
    );

    // Unavailable needs no registration: sign in, then MANUAL
    let evs = p.command("8000", Command::Unavailable, T0 + 3_000).unwrap();
    assert_eq!(
        moves(&evs),
        [
            (
                AgentState::SignedOut,
                not_ready(NotReadyReason::EXTENSION_OFFLINE)
            ),
            (
                not_ready(NotReadyReason::EXTENSION_OFFLINE),
                not_ready(NotReadyReason::MANUAL)
            ),
        ]
    );
    assert_counts(&p, "Unavailable");
}

// ------------------------------------------------------------------------------------------
// calls
// ------------------------------------------------------------------------------------------

#[test]
fn an_inbound_call_drives_ringing_talking_hold_and_after_call_work() {
    let acw = 30_000;
    let mut p = presence(acw);
    idle_seat(&mut p, "8000", T0);
    drain(&mut p);
    let dir = CallDirection::Inbound;
    let info = CallInfo {
        call_id: call("c1"),
        direction: dir,
        remote_number: Some("13800138000".into()),
        task_code: None,
    };

    let evs = p
        .call_event(&ev("8000", "c1", dir, CallPhase::Ringing, T0 + 1_000))
        .unwrap();
    assert_eq!(moves(&evs), [(AgentState::Idle, AgentState::Reserved)]);
    assert_eq!(evs[0].call.as_ref(), Some(&info));
    assert_eq!(transition(&evs[0]).call_id, Some(call("c1")));
    assert_eq!(p.seat("8000").unwrap().call.as_ref(), Some(&info));
    assert_eq!(drain(&mut p).0, ["8000"]);
    assert_counts(&p, "ringing");

    let evs = p
        .call_event(&ev("8000", "c1", dir, CallPhase::Answered, T0 + 6_000))
        .unwrap();
    assert_eq!(moves(&evs), [(AgentState::Reserved, AgentState::Talking)]);
    assert_eq!(evs[0].call.as_ref(), Some(&info));
    assert_eq!(transition(&evs[0]).duration_ms, 5_000);

    let evs = p
        .call_event(&ev("8000", "c1", dir, CallPhase::Held, T0 + 10_000))
        .unwrap();
    assert_eq!(moves(&evs), [(AgentState::Talking, AgentState::Hold)]);
    assert_eq!(evs[0].call.as_ref(), Some(&info));
    let evs = p
        .call_event(&ev("8000", "c1", dir, CallPhase::Resumed, T0 + 12_000))
        .unwrap();
    assert_eq!(moves(&evs), [(AgentState::Hold, AgentState::Talking)]);
    assert_counts(&p, "resumed");

    let evs = p
        .call_event(&ev("8000", "c1", dir, ended(), T0 + 20_000))
        .unwrap();
    let until = T0 + 20_000 + acw;
    assert_eq!(
        moves(&evs),
        [(
            AgentState::Talking,
            AgentState::AfterCallWork { until_ms: until }
        )]
    );
    assert_eq!(
        evs[0].call.as_ref(),
        Some(&info),
        "names the call that ended"
    );
    assert_eq!(transition(&evs[0]).call_id, Some(call("c1")));
    assert_eq!(
        p.seat("8000").unwrap().call,
        None,
        "the seat forgets the call"
    );
    assert_eq!(p.next_deadline(), until);
    assert_counts(&p, "ended");

    // an Ended for a call no longer tracked is nothing
    assert_eq!(
        p.call_event(&ev("8000", "c1", dir, ended(), T0 + 21_000)),
        Ok(vec![])
    );

    assert_eq!(p.tick(until - 1), vec![]);
    assert!(matches!(
        state(&p, "8000"),
        AgentState::AfterCallWork { .. }
    ));
    let evs = p.tick(until);
    assert_eq!(
        moves(&evs),
        [(
            AgentState::AfterCallWork { until_ms: until },
            AgentState::Idle
        )]
    );
    assert_eq!(transition(&evs[0]).duration_ms, acw);
    assert_eq!(p.next_deadline(), MIDNIGHT);
    assert_counts(&p, "after-call work ended");

    let s = snap(&p, "8000", until);
    assert_eq!(s.sum_answer_count, 1);
    assert_eq!(s.answer_count20, 1);
    assert_eq!(s.ring_count, 1);
    assert_eq!(s.ring_sec, 5);
    assert_eq!(s.sum_answer_sec, 14, "talking and holding, 6 s to 20 s");
    assert_eq!(s.hold_count, 1);
    assert_eq!(s.hold_sec, 2);
    assert_eq!(s.total_answer_count, 1);
    assert_eq!(s.call_out_count, 0);
    assert_eq!(s.today_delay_count, 1);
    assert_eq!(s.today_delay_sec, 30);
    assert_eq!(s.no_answer_count, 0);
}

/// Rings for `ring_ms`, answers, ends; returns the counters after.
fn answered_after(ring_ms: u64, direction: CallDirection) -> CounterSnapshot {
    let mut p = presence(0);
    idle_seat(&mut p, "8000", T0);
    let t = T0 + 1_000;
    p.call_event(&ev("8000", "c", direction, CallPhase::Ringing, t))
        .unwrap();
    p.call_event(&ev(
        "8000",
        "c",
        direction,
        CallPhase::Answered,
        t + ring_ms,
    ))
    .unwrap();
    let evs = p
        .call_event(&ev("8000", "c", direction, ended(), t + ring_ms + 60_000))
        .unwrap();
    assert_eq!(moves(&evs), [(AgentState::Talking, AgentState::Idle)]);
    snap(&p, "8000", t + ring_ms + 60_000)
}

#[test]
fn answer_within_20_seconds_is_counted_separately() {
    for (ring_ms, within) in [(3_000, 1), (19_999, 1), (20_000, 1), (25_000, 0)] {
        let s = answered_after(ring_ms, CallDirection::Inbound);
        assert_eq!(s.sum_answer_count, 1, "ring {ring_ms} ms");
        assert_eq!(s.answer_count20, within, "ring {ring_ms} ms");
        assert_eq!(s.sum_answer_sec, 60, "ring {ring_ms} ms");
        assert_eq!(s.ring_sec, ring_ms / 1_000, "ring {ring_ms} ms");
        assert_eq!(s.call_out_count, 0, "ring {ring_ms} ms");
    }
}

#[test]
fn outbound_answered_calls_count_as_calls_out() {
    let s = answered_after(4_000, CallDirection::Outbound);
    assert_eq!(s.call_out_count, 1);
    assert_eq!(s.call_out_attempt_count, 1);
    assert_eq!(s.call_out_sec, 60);
    assert_eq!(s.sum_answer_count, 0, "not an inbound answer");
    assert_eq!(s.answer_count20, 0);
    assert_eq!(s.total_answer_count, 1);

    // an outbound call that is never answered
    let mut p = presence(0);
    idle_seat(&mut p, "8000", T0);
    let o = CallDirection::Outbound;
    p.call_event(&ev("8000", "x", o, CallPhase::Ringing, T0 + 1_000))
        .unwrap();
    let evs = p
        .call_event(&ev("8000", "x", o, ended(), T0 + 9_000))
        .unwrap();
    assert_eq!(
        moves(&evs),
        [(AgentState::Reserved, AgentState::Idle)],
        "no after-call work for an unanswered call"
    );
    let s = snap(&p, "8000", T0 + 9_000);
    assert_eq!(
        (
            s.call_out_count,
            s.call_out_attempt_count,
            s.call_out_no_answer_count
        ),
        (0, 1, 1)
    );
}

#[test]
fn an_answer_without_a_ring_offers_and_answers() {
    let mut p = presence(0);
    idle_seat(&mut p, "8000", T0);
    drain(&mut p);
    let dir = CallDirection::Inbound;
    let evs = p
        .call_event(&ev("8000", "c2", dir, CallPhase::Answered, T0 + 2_000))
        .unwrap();
    assert_eq!(
        moves(&evs),
        [
            (AgentState::Idle, AgentState::Reserved),
            (AgentState::Reserved, AgentState::Talking),
        ]
    );
    for e in &evs {
        let c = e.call.as_ref().expect("call info on both events");
        assert_eq!(c.call_id, call("c2"));
        assert_eq!(c.direction, dir);
        assert_eq!(c.remote_number.as_deref(), Some("13800138000"));
    }
    assert_eq!(state(&p, "8000"), AgentState::Talking);
    assert_counts(&p, "answer without ring");
    let evs = p
        .call_event(&ev("8000", "c2", dir, ended(), T0 + 32_000))
        .unwrap();
    assert_eq!(moves(&evs), [(AgentState::Talking, AgentState::Idle)]);
    let s = snap(&p, "8000", T0 + 32_000);
    assert_eq!((s.sum_answer_count, s.answer_count20), (1, 1));
    assert_eq!(s.sum_answer_sec, 30);
}

#[test]
fn call_events_for_signed_out_or_unknown_seats_are_ignored() {
    let mut p = presence(0);
    p.add_seat("8000", project(), None, true, None, T0);
    drain(&mut p);
    let before = seat_state(&p, "8000");
    let dir = CallDirection::Inbound;
    for phase in [
        CallPhase::Ringing,
        CallPhase::Answered,
        CallPhase::Held,
        CallPhase::Resumed,
        ended(),
    ] {
        assert_eq!(
            p.call_event(&ev("8000", "c", dir, phase.clone(), T0 + 1_000)),
            Ok(vec![]),
            "{phase:?}"
        );
        assert_eq!(seat_state(&p, "8000"), before, "{phase:?}");
    }
    assert_eq!(drain(&mut p), (vec![], vec![]));
    assert_counts(&p, "ignored call events");
    assert_eq!(
        p.call_event(&ev("7999", "c", dir, CallPhase::Ringing, T0 + 1_000)),
        Err(PresenceError::UnknownSeat("7999".into()))
    );
}

#[test]
fn an_event_naming_another_call_is_refused_and_changes_nothing() {
    let mut p = presence(10_000);
    idle_seat(&mut p, "8000", T0);
    let dir = CallDirection::Inbound;
    p.call_event(&ev("8000", "c1", dir, CallPhase::Ringing, T0 + 1_000))
        .unwrap();

    // while ringing: an answer for another call, a second ring
    drain(&mut p);
    let before = seat_state(&p, "8000");
    let counts = p.counts_by_state();
    let deadline = p.next_deadline();
    match p.call_event(&ev("8000", "other", dir, CallPhase::Answered, T0 + 2_000)) {
        Err(PresenceError::Refused {
            source: TransitionError::WrongCall { current, got, .. },
            ..
        }) => {
            assert_eq!(current, Some(call("c1")));
            assert_eq!(got, call("other"));
        }
        other => panic!("want WrongCall, got {other:?}"),
    }
    assert!(p
        .call_event(&ev("8000", "c2", dir, CallPhase::Ringing, T0 + 2_000))
        .is_err());
    assert_eq!(seat_state(&p, "8000"), before);
    assert_eq!(p.counts_by_state(), counts);
    assert_eq!(p.next_deadline(), deadline);
    assert_eq!(drain(&mut p), (vec![], vec![]));

    // while talking: an end for another call; hold/resume out of place
    p.call_event(&ev("8000", "c1", dir, CallPhase::Answered, T0 + 3_000))
        .unwrap();
    drain(&mut p);
    let before = seat_state(&p, "8000");
    assert!(matches!(
        p.call_event(&ev("8000", "other", dir, ended(), T0 + 4_000)),
        Err(PresenceError::Refused {
            source: TransitionError::WrongCall { .. },
            ..
        })
    ));
    assert!(p
        .call_event(&ev("8000", "c1", dir, CallPhase::Resumed, T0 + 4_000))
        .is_err());
    assert_eq!(seat_state(&p, "8000"), before);
    assert_eq!(state(&p, "8000"), AgentState::Talking);
    assert_eq!(drain(&mut p), (vec![], vec![]));
    assert_counts(&p, "refused call events");
    let s = snap(&p, "8000", T0 + 4_000);
    assert_eq!((s.ring_count, s.sum_answer_count), (1, 1));
}

#[test]
fn a_call_taken_while_not_ready_returns_to_the_same_reason() {
    let busy = NotReadyReason(210);
    for acw in [0, 5_000] {
        let mut p = presence(acw);
        idle_seat(&mut p, "8000", T0);
        p.command("8000", Command::SetBusy(busy), T0 + 1_000)
            .unwrap();
        let dir = CallDirection::Outbound;
        let evs = p
            .call_event(&ev("8000", "c", dir, CallPhase::Ringing, T0 + 2_000))
            .unwrap();
        assert_eq!(moves(&evs), [(not_ready(busy), AgentState::Reserved)]);
        p.call_event(&ev("8000", "c", dir, CallPhase::Answered, T0 + 3_000))
            .unwrap();
        let evs = p
            .call_event(&ev("8000", "c", dir, ended(), T0 + 9_000))
            .unwrap();
        if acw > 0 {
            assert_eq!(
                moves(&evs),
                [(
                    AgentState::Talking,
                    AgentState::AfterCallWork {
                        until_ms: T0 + 9_000 + acw
                    }
                )]
            );
            assert_eq!(p.tick(T0 + 9_000 + acw - 1), vec![]);
            let evs = p.tick(T0 + 9_000 + acw);
            assert_eq!(evs.len(), 1, "acw {acw}");
            assert_eq!(evs[0].state, not_ready(busy), "acw {acw}");
        } else {
            assert_eq!(moves(&evs), [(AgentState::Talking, not_ready(busy))]);
        }
        assert_eq!(state(&p, "8000"), not_ready(busy), "acw {acw}");
        assert_counts(&p, "call while busy");
    }
}

// ------------------------------------------------------------------------------------------
// timers
// ------------------------------------------------------------------------------------------

#[test]
fn deadlines_fire_exactly_at_their_time() {
    let clock = clock();
    assert_eq!(
        clock.next_midnight_ms(T0),
        MIDNIGHT,
        "Asia/Shanghai is UTC+8"
    );
    assert_eq!(clock.day_of(T0), LocalDay::from_ymd(2024, 3, 10));
    assert_eq!(clock.day_of(MIDNIGHT - 1), LocalDay::from_ymd(2024, 3, 10));
    assert_eq!(clock.day_of(MIDNIGHT), LocalDay::from_ymd(2024, 3, 11));

    let mut p = presence(20_000);
    assert_eq!(p.next_deadline(), MIDNIGHT, "no seat: midnight");
    idle_seat(&mut p, "8000", T0);
    idle_seat(&mut p, "8001", T0);
    assert_eq!(p.next_deadline(), MIDNIGHT);

    // 8000 rests for 15 minutes from T0+1s; 8001 finishes a call at T0+2s (ACW until T0+22s)
    let evs = p
        .command(
            "8000",
            Command::StartRest {
                reason: RestReason(2),
                duration_ms: Some(900_000),
            },
            T0 + 1_000,
        )
        .unwrap();
    assert_eq!(
        moves(&evs),
        [(
            AgentState::Idle,
            AgentState::Rest {
                reason: RestReason(2),
                until_ms: Some(T0 + 901_000)
            }
        )]
    );
    assert_eq!(p.next_deadline(), T0 + 901_000);
    p.call_event(&ev(
        "8001",
        "c",
        CallDirection::Inbound,
        CallPhase::Answered,
        T0 + 1_500,
    ))
    .unwrap();
    p.call_event(&ev(
        "8001",
        "c",
        CallDirection::Inbound,
        ended(),
        T0 + 2_000,
    ))
    .unwrap();
    assert_eq!(p.next_deadline(), T0 + 22_000, "the earliest timer");

    assert_eq!(p.tick(T0 + 21_999), vec![], "not before");
    let evs = p.tick(T0 + 22_000);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].extension, "8001");
    assert_eq!(evs[0].state, AgentState::Idle);
    assert_eq!(p.next_deadline(), T0 + 901_000);
    assert_eq!(p.tick(T0 + 22_000), vec![], "a timer fires once");

    assert_eq!(p.tick(T0 + 900_999), vec![]);
    let evs = p.tick(T0 + 901_000);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].extension, "8000");
    assert_eq!(
        moves(&evs),
        [(
            AgentState::Rest {
                reason: RestReason(2),
                until_ms: Some(T0 + 901_000)
            },
            not_ready(NotReadyReason::REST_ENDED)
        )]
    );
    assert_eq!(transition(&evs[0]).duration_ms, 900_000);
    assert_eq!(p.next_deadline(), MIDNIGHT);
    assert_counts(&p, "timers");
    let s = snap(&p, "8000", T0 + 901_000);
    assert_eq!((s.today_rest_count, s.today_rest_sec), (1, 900));

    // a rest ended early takes its deadline with it
    p.command(
        "8001",
        Command::StartRest {
            reason: RestReason(1),
            duration_ms: Some(60_000),
        },
        T0 + 902_000,
    )
    .unwrap();
    assert_eq!(p.next_deadline(), T0 + 962_000);
    p.command("8001", Command::EndRest, T0 + 903_000).unwrap();
    assert_eq!(state(&p, "8001"), AgentState::Idle);
    assert_eq!(p.next_deadline(), MIDNIGHT);

    // several timers due at once all fire in one tick
    for ext in ["8000", "8001"] {
        p.command(
            ext,
            Command::StartRest {
                reason: RestReason(1),
                duration_ms: Some(1_000),
            },
            T0 + 904_000,
        )
        .unwrap();
    }
    let evs = p.tick(T0 + 999_000);
    let mut exts: Vec<&str> = evs.iter().map(|e| e.extension.as_str()).collect();
    exts.sort();
    assert_eq!(exts, ["8000", "8001"]);
    // an overdue timer fires at the tick's time
    assert!(evs.iter().all(|e| transition(e).at_ms == T0 + 999_000));
}

#[test]
fn local_midnight_rolls_the_counters_over_and_the_session_continues() {
    let mut p = presence(0);
    idle_seat(&mut p, "8000", T0);
    p.add_seat("8001", project(), None, false, None, T0);
    let dir = CallDirection::Inbound;
    p.call_event(&ev("8000", "c", dir, CallPhase::Ringing, T0 + 1_000))
        .unwrap();
    p.call_event(&ev("8000", "c", dir, CallPhase::Answered, T0 + 3_000))
        .unwrap();
    p.call_event(&ev("8000", "c", dir, ended(), T0 + 63_000))
        .unwrap();
    let s = snap(&p, "8000", MIDNIGHT - 1);
    assert_eq!(s.day, LocalDay::from_ymd(2024, 3, 10));
    assert_eq!((s.today_sign_in_count, s.sum_answer_count), (1, 1));
    assert_eq!(p.next_deadline(), MIDNIGHT);
    drain(&mut p);

    assert_eq!(p.tick(MIDNIGHT - 1), vec![]);
    assert_eq!(
        p.seat("8000").unwrap().counters.day(),
        LocalDay::from_ymd(2024, 3, 10),
        "rolled over before midnight"
    );
    assert_eq!(p.next_deadline(), MIDNIGHT);
    assert_eq!(drain(&mut p), (vec![], vec![]));

    assert_eq!(p.tick(MIDNIGHT), vec![], "midnight is no transition");
    for ext in ["8000", "8001"] {
        assert_eq!(
            p.seat(ext).unwrap().counters.day(),
            LocalDay::from_ymd(2024, 3, 11),
            "{ext} not rolled over at midnight"
        );
    }
    assert_eq!(
        drain(&mut p).0,
        ["8000", "8001"],
        "rolled counters must be persisted"
    );
    assert_eq!(p.next_deadline(), MIDNIGHT + DAY_MS, "the next midnight");
    assert_eq!(state(&p, "8000"), AgentState::Idle, "the state carries on");

    let now = MIDNIGHT + 60_000;
    let s = snap(&p, "8000", now);
    assert_eq!(s.day, LocalDay::from_ymd(2024, 3, 11));
    assert_eq!(s.today_sign_in_count, 0, "the sign-in was yesterday");
    assert_eq!(s.sum_answer_count, 0);
    assert_eq!(s.ring_count, 0);
    assert_eq!(s.today_idle_count, 0);
    assert_eq!(s.today_sign_in_sec, 60);
    assert_eq!(s.today_idle_sec, 60);
    assert_eq!(s.today_sign_out_sec, 0);
    assert_eq!(
        s.cur_sign_in_sec,
        (now - T0) / 1_000,
        "the session continues across midnight"
    );
    assert_eq!(s.cur_state_sec, (now - (T0 + 63_000)) / 1_000);
    assert_eq!(s.today_cur_state_sec, 60);
    let s1 = snap(&p, "8001", now);
    assert_eq!((s1.today_sign_out_sec, s1.cur_sign_in_sec), (60, 0));

    // today's events count today
    p.command("8000", Command::SignOut, now).unwrap();
    let s = snap(&p, "8000", now + 1_000);
    assert_eq!((s.today_sign_in_count, s.today_sign_out_count), (0, 1));
    assert_eq!(s.cur_sign_in_sec, 0);
    assert_counts(&p, "after midnight");
}

// ------------------------------------------------------------------------------------------
// removal
// ------------------------------------------------------------------------------------------

#[test]
fn remove_seat_signs_the_agent_out_and_forgets_the_seat() {
    let mut p = presence(30_000);
    idle_seat(&mut p, "8000", T0);
    idle_seat(&mut p, "8001", T0);
    p.add_seat("8002", project(), None, false, None, T0);
    let session = p.seat("8000").unwrap().machine.signin_session();
    drain(&mut p);

    let evs = p.remove_seat("8000", T0 + 5_000);
    assert_eq!(moves(&evs), [(AgentState::Idle, AgentState::SignedOut)]);
    let t = transition(&evs[0]);
    assert_eq!(t.signin_session, session, "names the session that ended");
    assert_eq!(t.duration_ms, 5_000);
    assert_eq!(evs[0].state, AgentState::SignedOut);
    assert_eq!(evs[0].extension, "8000");
    assert!(p.seat("8000").is_none());
    assert_eq!(p.len(), 2);
    assert_counts(&p, "remove_seat");
    assert_eq!(drain(&mut p), (vec![], vec!["8000".to_string()]));

    // a seat in after-call work: its timer goes with it
    p.call_event(&ev(
        "8001",
        "c",
        CallDirection::Inbound,
        CallPhase::Answered,
        T0 + 6_000,
    ))
    .unwrap();
    p.call_event(&ev(
        "8001",
        "c",
        CallDirection::Inbound,
        ended(),
        T0 + 7_000,
    ))
    .unwrap();
    assert_eq!(p.next_deadline(), T0 + 37_000);
    let evs = p.remove_seat("8001", T0 + 8_000);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].state, AgentState::SignedOut);
    assert_eq!(p.next_deadline(), MIDNIGHT);
    assert_eq!(p.tick(T0 + 37_000), vec![]);

    // a seat in a call is signed out too
    idle_seat(&mut p, "8003", T0 + 9_000);
    p.call_event(&ev(
        "8003",
        "d",
        CallDirection::Outbound,
        CallPhase::Answered,
        T0 + 10_000,
    ))
    .unwrap();
    let evs = p.remove_seat("8003", T0 + 11_000);
    assert_eq!(moves(&evs), [(AgentState::Talking, AgentState::SignedOut)]);
    assert_eq!(
        evs[0].call.as_ref().map(|c| c.call_id.clone()),
        Some(call("d"))
    );

    // signed out already: no event, still removed
    assert_eq!(p.remove_seat("8002", T0 + 12_000), vec![]);
    assert!(p.is_empty());
    assert_eq!(p.counts_by_state(), [0; 8]);
    let (dirty, mut removed) = drain(&mut p);
    removed.sort();
    assert_eq!(dirty, Vec::<String>::new());
    assert_eq!(removed, ["8001", "8002", "8003"]);

    // unknown: nothing
    assert_eq!(p.remove_seat("7999", T0 + 13_000), vec![]);
    assert_eq!(drain(&mut p), (vec![], vec![]));
}

/// The shell writes the dirty rows, then deletes the removed ones (`store::save_presence`), so
/// a seat removed and added again between two persists must not be reported as both: its
/// fresh row would be deleted right after being written.
#[test]
fn a_seat_removed_and_added_again_is_not_reported_removed() {
    let mut p = presence(0);
    idle_seat(&mut p, "8000", T0);
    drain(&mut p);
    p.remove_seat("8000", T0 + 1_000);
    p.add_seat("8000", project(), None, true, None, T0 + 2_000);
    p.command("8000", Command::Unavailable, T0 + 3_000).unwrap();
    let (dirty, removed) = drain(&mut p);
    assert_eq!(dirty, ["8000"]);
    assert!(
        !removed.contains(&"8000".to_string()),
        "take_dirty reports 8000 both changed and removed (dirty {dirty:?}, removed \
         {removed:?}): the shell upserts, then deletes the live seat's row"
    );
}

// ------------------------------------------------------------------------------------------
// restore
// ------------------------------------------------------------------------------------------

/// The seat's snapshot and counters, through JSON as the store keeps them.
fn persisted(p: &Presence, ext: &str) -> (SeatSnapshot, DailyCounters) {
    let s = p.seat(ext).unwrap();
    let snap = SeatSnapshot {
        machine: s.machine.snapshot(),
    };
    let m = serde_json::to_string(&snap).unwrap();
    let c = serde_json::to_string(&s.counters).unwrap();
    (
        serde_json::from_str(&m).unwrap(),
        serde_json::from_str(&c).unwrap(),
    )
}

#[test]
fn a_restored_seat_keeps_its_state_and_counters() {
    let acw = 60_000;
    let mut p = presence(acw);
    let dir = CallDirection::Inbound;
    // 8000: a call, then busy 210
    idle_seat(&mut p, "8000", T0);
    p.call_event(&ev("8000", "a", dir, CallPhase::Ringing, T0 + 1_000))
        .unwrap();
    p.call_event(&ev("8000", "a", dir, CallPhase::Answered, T0 + 4_000))
        .unwrap();
    p.call_event(&ev("8000", "a", dir, ended(), T0 + 64_000))
        .unwrap();
    p.command("8000", Command::SetBusy(NotReadyReason(210)), T0 + 70_000)
        .unwrap();
    // 8001: in a call
    idle_seat(&mut p, "8001", T0);
    p.call_event(&ev("8001", "b", dir, CallPhase::Answered, T0 + 80_000))
        .unwrap();
    // 8002: in after-call work
    idle_seat(&mut p, "8002", T0);
    p.call_event(&ev("8002", "c", dir, CallPhase::Answered, T0 + 80_000))
        .unwrap();
    p.call_event(&ev("8002", "c", dir, ended(), T0 + 90_000))
        .unwrap();
    // 8003: idle; 8004: resting with a deadline; 8005: signed out
    idle_seat(&mut p, "8003", T0);
    idle_seat(&mut p, "8004", T0);
    p.command(
        "8004",
        Command::StartRest {
            reason: RestReason(3),
            duration_ms: Some(600_000),
        },
        T0 + 95_000,
    )
    .unwrap();
    p.add_seat("8005", project(), None, true, None, T0);

    let saved_at = T0 + 100_000;
    let exts = ["8000", "8001", "8002", "8003", "8004", "8005"];
    let rows: HashMap<&str, (SeatSnapshot, DailyCounters)> =
        exts.iter().map(|e| (*e, persisted(&p, e))).collect();
    let before: HashMap<&str, CounterSnapshot> =
        exts.iter().map(|e| (*e, snap(&p, e, saved_at))).collect();

    // the daemon comes back 10 s later; 8003's phone has not re-registered yet
    let now = saved_at + 10_000;
    let mut q = Presence::new(cfg(acw), clock(), now);
    for e in exts {
        let registered = e != "8003";
        q.add_seat(e, project(), None, registered, Some(rows[e].clone()), now);
    }
    assert_counts(&q, "restore");

    // outside calls the state survives as it was (same state, same start)
    for e in ["8000", "8002", "8004", "8005"] {
        let (a, b) = (&p.seat(e).unwrap().machine, &q.seat(e).unwrap().machine);
        assert_eq!(b.state(), a.state(), "{e}");
        assert_eq!(b.since_ms(), a.since_ms(), "{e}");
        assert_eq!(b.signin_session(), a.signin_session(), "{e}");
        assert_eq!(
            q.seat(e).unwrap().counters,
            p.seat(e).unwrap().counters,
            "{e}"
        );
    }
    assert_eq!(state(&q, "8000"), not_ready(NotReadyReason(210)));
    // a call cannot be trusted after a restart
    assert_eq!(state(&q, "8001"), not_ready(NotReadyReason::INTERRUPTED));
    assert_eq!(q.seat("8001").unwrap().call, None);
    assert_eq!(
        q.seat("8001").unwrap().machine.signin_session(),
        p.seat("8001").unwrap().machine.signin_session(),
        "still the same sign-in session"
    );
    // idle without a registration is not idle
    assert_eq!(
        state(&q, "8003"),
        not_ready(NotReadyReason::EXTENSION_OFFLINE)
    );
    for e in exts {
        assert_eq!(
            q.seat(e).unwrap().machine.invariant_violation(),
            None,
            "{e}"
        );
    }

    // the counters carry on: everything counted before the restart is still there
    for e in exts {
        let (b, a) = (before[e], snap(&q, e, saved_at));
        assert_eq!(a.today_sign_in_count, b.today_sign_in_count, "{e}");
        assert_eq!(a.sum_answer_count, b.sum_answer_count, "{e}");
        assert_eq!(a.answer_count20, b.answer_count20, "{e}");
        assert_eq!(a.today_idle_count, b.today_idle_count, "{e}");
        assert_eq!(a.today_delay_count, b.today_delay_count, "{e}");
    }
    let s = snap(&q, "8000", now);
    assert_eq!(
        (s.today_sign_in_count, s.sum_answer_count, s.answer_count20),
        (1, 1, 1)
    );
    assert_eq!(s.sum_answer_sec, 60);
    assert_eq!(s.today_busy_count, 1);
    assert_eq!(s.cur_sign_in_sec, (now - T0) / 1_000);
    assert_eq!(snap(&q, "8001", now).sum_answer_count, 1);
    assert_eq!(snap(&q, "8005", now).today_sign_in_count, 0);

    // restored timers run: 8002's after-call work, then 8004's rest
    assert_eq!(q.next_deadline(), T0 + 90_000 + acw);
    let evs = q.tick(T0 + 90_000 + acw);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(
        (evs[0].extension.as_str(), &evs[0].state),
        ("8002", &AgentState::Idle)
    );
    assert_eq!(q.next_deadline(), T0 + 95_000 + 600_000);
    let evs = q.tick(T0 + 95_000 + 600_000);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].state, not_ready(NotReadyReason::REST_ENDED));
    assert_counts(&q, "restored timers");

    // the restored 8001 can work again once it says so, with a fresh call
    q.command("8001", Command::SetIdle, now + 1_000).unwrap();
    q.call_event(&ev("8001", "z", dir, CallPhase::Ringing, now + 2_000))
        .unwrap();
    assert_eq!(state(&q, "8001"), AgentState::Reserved);

    // adding an existing seat again only relabels it
    let other = Some(ProjectCode::parse("P-other").unwrap());
    q.add_seat("8000", other.clone(), Some("A-9".into()), false, None, now);
    let s = q.seat("8000").unwrap();
    assert_eq!((&s.project, s.agent_id.as_deref()), (&other, Some("A-9")));
    assert_eq!(s.machine.state(), &not_ready(NotReadyReason(210)));
    assert!(s.machine.registered());
    assert_counts(&q, "relabel");
}

// ------------------------------------------------------------------------------------------
// random sequences
// ------------------------------------------------------------------------------------------

mod prop {
    use super::*;
    use proptest::prelude::*;

    const SEATS: [&str; 3] = ["8000", "8001", "8002"];

    #[derive(Debug, Clone)]
    enum Op {
        Registration(usize, bool),
        Command(usize, Command),
        Call {
            seat: usize,
            call: &'static str,
            outbound: bool,
            phase: CallPhase,
        },
        Tick,
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            Just(Command::SignIn),
            Just(Command::SignOut),
            Just(Command::SetIdle),
            prop_oneof![Just(0u16), Just(1), Just(5), Just(210)]
                .prop_map(|r| Command::SetBusy(NotReadyReason(r))),
            (0u8..3, proptest::option::of(0u64..5_000)).prop_map(|(r, d)| {
                Command::StartRest {
                    reason: RestReason(r),
                    duration_ms: d,
                }
            }),
            Just(Command::EndRest),
            Just(Command::Available),
            Just(Command::Available),
            Just(Command::Unavailable),
        ]
    }

    fn phase() -> impl Strategy<Value = CallPhase> {
        prop_oneof![
            Just(CallPhase::Ringing),
            Just(CallPhase::Answered),
            Just(CallPhase::Held),
            Just(CallPhase::Resumed),
            (
                proptest::option::of(0u16..128),
                proptest::option::of(any::<bool>())
            )
                .prop_map(|(q850, agent_hung_up)| CallPhase::Ended {
                    q850,
                    agent_hung_up
                }),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let seat = 0..SEATS.len();
        prop_oneof![
            2 => (seat.clone(), any::<bool>()).prop_map(|(s, on)| Op::Registration(s, on)),
            4 => (seat.clone(), command()).prop_map(|(s, c)| Op::Command(s, c)),
            5 => (seat, prop_oneof![Just("a"), Just("b")], any::<bool>(), phase()).prop_map(
                |(seat, call, outbound, phase)| Op::Call {
                    seat,
                    call,
                    outbound,
                    phase
                }
            ),
            2 => Just(Op::Tick),
        ]
    }

    /// What the test tracks per seat: when it was added and the time its transitions covered.
    struct Books {
        added_ms: u64,
        accounted_ms: u64,
        since_ms: u64,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn random_inputs_keep_the_tally_and_account_for_all_time(
            acw_ms in prop_oneof![Just(0u64), 1u64..5_000],
            idle_after_rest in any::<bool>(),
            // start within a few minutes of midnight, so sequences often cross it
            before_midnight in 0u64..300_000,
            registered in proptest::collection::vec(any::<bool>(), SEATS.len()),
            steps in proptest::collection::vec((op(), 0u64..4_000), 1..150),
        ) {
            let start = MIDNIGHT - before_midnight;
            let clock = clock();
            let mut p = Presence::new(AgentConfig { acw_ms, idle_after_rest }, clock.clone(), start);
            let mut books: HashMap<&str, Books> = HashMap::new();
            for (i, ext) in SEATS.iter().enumerate() {
                p.add_seat(ext, project(), None, registered[i], None, start);
                books.insert(ext, Books { added_ms: start, accounted_ms: 0, since_ms: start });
            }
            prop_assert_eq!(p.counts_by_state(), recount(&p));
            let mut now = start;
            for (op, dt) in steps {
                now += dt;
                p.take_dirty();
                let before: HashMap<&str, _> =
                    SEATS.iter().map(|e| (*e, seat_state(&p, e))).collect();
                let (result, target): (Result<Vec<AgentEvent>, PresenceError>, Option<&str>) =
                    match &op {
                        Op::Registration(s, on) => {
                            (Ok(p.registration(SEATS[*s], *on, None, now)), Some(SEATS[*s]))
                        }
                        Op::Command(s, c) => (p.command(SEATS[*s], c.clone(), now), Some(SEATS[*s])),
                        Op::Call { seat, call, outbound, phase } => {
                            let dir = if *outbound { CallDirection::Outbound } else { CallDirection::Inbound };
                            (p.call_event(&ev(SEATS[*seat], call, dir, phase.clone(), now)), Some(SEATS[*seat]))
                        }
                        Op::Tick => (Ok(p.tick(now)), None),
                    };
                let ctx = format!("{op:?} at +{}", now - start);
                prop_assert_eq!(p.counts_by_state(), recount(&p), "{}", ctx);
                let (dirty, removed) = p.take_dirty();
                prop_assert!(removed.is_empty(), "{}", ctx);
                let dirty: Vec<String> = dirty.into_iter().map(|(e, _, _)| e).collect();
                match result {
                    Err(e) => {
                        let ext = target.expect("only inputs for a seat are refused");
                        prop_assert!(
                            matches!(e, PresenceError::Refused { ref extension, .. } if extension == ext),
                            "{}: {:?}", ctx, e
                        );
                        for s in SEATS {
                            prop_assert_eq!(&seat_state(&p, s), &before[s], "{} refused ({}) but {} changed", ctx, e, s);
                        }
                        prop_assert!(dirty.is_empty(), "{}: refused but dirty {:?}", ctx, dirty);
                    }
                    Ok(evs) => {
                        for e in &evs {
                            prop_assert!(dirty.contains(&e.extension), "{}: {} changed but not dirty", ctx, e.extension);
                            prop_assert_eq!(e.at_ms, now, "{}", ctx);
                            if let AgentEventKind::Transition(t) = &e.kind {
                                let b = books.get_mut(e.extension.as_str()).unwrap();
                                prop_assert_eq!(t.from_since_ms, b.since_ms, "{}: {:?}", ctx, t);
                                prop_assert_eq!(&t.to, &e.state, "{}", ctx);
                                prop_assert_ne!(&t.from, &t.to, "{}", ctx);
                                prop_assert_eq!(t.duration_ms, t.at_ms - t.from_since_ms, "{}", ctx);
                                b.accounted_ms += t.duration_ms;
                                b.since_ms = t.at_ms;
                            }
                        }
                        // a seat without events kept its state
                        for s in SEATS {
                            if !evs.iter().any(|e| e.extension == s) {
                                prop_assert_eq!(p.seat(s).unwrap().machine.state(), before[s].0.state(), "{}: {} moved silently", ctx, s);
                            }
                        }
                        if let Some(last) = evs.last() {
                            prop_assert_eq!(&last.state, p.seat(&last.extension).unwrap().machine.state(), "{}", ctx);
                        }
                    }
                }
                if matches!(op, Op::Tick) {
                    prop_assert!(p.next_deadline() > now, "{}: a due timer survived a tick", ctx);
                }
                for s in SEATS {
                    let seat = p.seat(s).unwrap();
                    let m = &seat.machine;
                    prop_assert_eq!(m.invariant_violation(), None, "{}: {}", ctx, s);
                    prop_assert_eq!(seat.call.is_some(), m.state().in_call(), "{}: {} call {:?} in {:?}", ctx, s, seat.call, m.state());
                    let b = &books[s];
                    prop_assert_eq!(m.since_ms(), b.since_ms, "{}: {}", ctx, s);
                    prop_assert_eq!(b.accounted_ms + (now - m.since_ms()), now - b.added_ms, "{}: {} time", ctx, s);
                    let c = seat.counters.snapshot(now, LiveState::from(m), &clock);
                    prop_assert_eq!(c.day, clock.day_of(now), "{}", ctx);
                    let elapsed_today = now - clock.start_of_day_ms(now).max(b.added_ms);
                    prop_assert!(
                        c.today_sign_in_sec + c.today_sign_out_sec <= elapsed_today / 1_000,
                        "{}: {} in {} + out {} > {} ms today", ctx, s, c.today_sign_in_sec, c.today_sign_out_sec, elapsed_today
                    );
                }
            }
        }
    }
}
