//! Per-agent daily attendance counters: a sans-IO core.
//!
//! One [`DailyCounters`] per agent accumulates what the grid's "获取所有坐席列表" query reports
//! per agent for *today* (grid reference A.3.3, 000:L798-L862: `sumAnswerCount`,
//! `todaySignInSec`, `answerCount20`, ...). It is fed every [`Transition`] of the agent's
//! [`AgentMachine`](crate::agents::state::AgentMachine) and is read through
//! [`DailyCounters::snapshot`], which adds the live part (the current state up to `now`). Like
//! the machine it owns no clock: every call takes `now_ms` (Unix milliseconds) and a
//! [`DayClock`], which knows where local midnights fall in the configured time zone (default
//! [`DEFAULT_TIME_ZONE`]).
//!
//! # The day, and what belongs to it
//!
//! - **A day is a local calendar day** `[midnight, next midnight)` of the configured zone. In a
//!   zone with daylight saving time a day lasts 23 or 25 hours; where midnight itself does not
//!   exist (a DST jump at 00:00, e.g. America/Sao_Paulo until 2019) the day starts at its first
//!   instant (01:00).
//! - **Time is split at midnight.** Every duration counter is the overlap of the agent's states
//!   with today: a not-ready state from 23:50 to 00:10 gives 10 minutes to yesterday and 10 to
//!   today. This holds for talk time too, so a call answered at 23:59 and ended at 00:05 adds 5
//!   minutes to today's `sum_answer_sec` while its answer is counted yesterday.
//! - **Counts are events that happen today.** A state or call carried over midnight is not
//!   counted again: an agent signed in since yesterday has `today_sign_in_count == 0` but a
//!   positive `today_sign_in_sec`. Counting carried-over states would count one sign-in on two
//!   days and make the sum over a week wrong.
//! - **Durations are kept in milliseconds and reported in whole seconds, rounded down**, each
//!   from its own exact total; so `today_sign_in_sec + today_sign_out_sec` may be one second
//!   short of the time elapsed since midnight, never over.
//! - **The day changes lazily.** Any call whose `now_ms` (or transition time) lies on a later
//!   day first closes the counters' day: the state open at midnight is accounted up to midnight
//!   and the finished day is returned (so the shell can keep or report it), then counting
//!   restarts from the new day's midnight. The shell should call [`DailyCounters::roll_over`]
//!   at [`DailyCounters::next_roll_over_ms`] so that persisted rows do not keep yesterday's
//!   values while an agent stays in one state across midnight; correctness does not depend on
//!   it. Days without any call in between (a daemon down over a weekend) are skipped.
//! - **Time never runs backwards** (as in the state machine): everything before
//!   [`DailyCounters`]' accounted instant has been accounted once; an instant earlier than that
//!   is treated as that instant, so a late or clock-stepped transition counts as an event but
//!   adds no time, and no duration is ever negative or wrapped.
//! - **A restart does not zero anything**: the struct serializes to JSON (every field has a
//!   default, so rows written before a field existed stay readable) and round-trips exactly.
//!   Renaming a field breaks old rows; add new ones instead.
//!
//! # Counter definitions
//!
//! "Time in X" below always means the overlap of X with today, including the current state up
//! to `now` in a [`DailyCounters::snapshot`].
//!
//! | grid field | [`CounterSnapshot`] field | definition |
//! |---|---|---|
//! | `sumAnswerCount` | `sum_answer_count` | inbound calls answered today (ringing → talking) |
//! | `sumAnswerSec` | `sum_answer_sec` | time talking or holding on inbound calls |
//! | `answerCount20` | `answer_count20` | of those, answered after ringing ≤ 20 000 ms ([`ANSWER_WITHIN_MS`]) |
//! | `curSignInSec` | `cur_sign_in_sec` | the whole current sign-in session, also before midnight; 0 when signed out |
//! | `todayCurStateSec` | `today_cur_state_sec` | time in the current state since it began or since midnight, whichever is later |
//! | `todaySignInSec` | `today_sign_in_sec` | time signed in (any state but signed out) |
//! | `todaySignInCount` | `today_sign_in_count` | sign-ins today |
//! | `todaySignOutCount` | `today_sign_out_count` | sign-outs today |
//! | `todaySignOutSec` | `today_sign_out_sec` | time signed out **since midnight** (see below) |
//! | `todayBusyCount` | `today_busy_count` | entries into a not-ready state **chosen by the agent** (示忙, see below) |
//! | `todayDelayCount` | `today_delay_count` | entries into after-call work (整理) |
//! | `todayDelaySec` | `today_delay_sec` | time in after-call work |
//! | `callOutCount` | `call_out_count` | outbound calls answered today |
//! | `callOutSec` | `call_out_sec` | time talking or holding on outbound calls |
//! | `todayIdleCount` | `today_idle_sec` | the field is named a count but labelled 空闲时长 (idle *duration*); both `today_idle_count` (entries into idle) and `today_idle_sec` exist, render the one the grid confirms |
//!
//! Beyond the grid's list: `cur_state_sec` (the whole current state), `today_busy_sec`,
//! `today_not_ready_count`/`_sec` (every not-ready state, automatic ones included),
//! `today_rest_count`/`_sec`, `ring_count`/`ring_sec`/`no_answer_count` (inbound calls that
//! rang at the agent, time ringing, and those that stopped ringing unanswered),
//! `call_out_attempt_count`/`call_out_no_answer_count`, `hold_count`/`hold_sec`,
//! `total_answer_count`/`total_talk_sec` (all directions, including calls whose direction was
//! never given) and `today_sign_out_sec_since_first_sign_in`.
//!
//! # Choices
//!
//! - **`todaySignOutSec` counts from midnight**, so that signed-in plus signed-out time is the
//!   time elapsed today, a check the grid can make. It is mostly "time before the shift";
//!   `today_sign_out_sec_since_first_sign_in` is the time signed out after the agent was first
//!   signed in today (at midnight if signed in across it), i.e. the gaps in the working day.
//!   Both count only from when the counters began (a fresh agent created at 10:00 has no
//!   signed-out time before 10:00), and from when the machine says the state began.
//! - **示忙 is the agent's choice.** `today_busy_count` counts entries into
//!   [`AgentState::NotReady`] caused by the agent or the API (`SetBusy`), not the automatic
//!   ones: the not-ready state a sign-in lands in, [`NotReadyReason::EXTENSION_OFFLINE`] (the
//!   phone went away) and [`NotReadyReason::REST_ENDED`] (a rest ran out). These would inflate
//!   the busy count with events the agent did not choose. A change of busy reason while
//!   already busy by choice is not a new entry. Rest is its own counter, not 示忙.
//! - **A rest restarted while resting** (a new duration, Huawei's `prolong`) is not a new rest.
//! - **`answerCount20` measures ringing at the agent** (the `Reserved` state), the only wait
//!   this daemon sees; queue time before the offer is not included. A call that rang before
//!   midnight and is answered after it counts today, with its whole ringing time.
//! - **A call's direction is fixed by the first transition of the call that gives one**
//!   (normally the offer); a different value given later is ignored, so that a call's offer,
//!   answer, ringing and talk time all land in the same direction. A call whose direction is
//!   never given counts only in the `total_*` fields and in signed-in time.
//! - **Outbound calls** go through `Reserved` too (the call being set up), so
//!   `call_out_attempt_count` counts them and `call_out_count` counts those answered.

use std::fmt;

use jiff::civil::{Date, Time};
use jiff::tz::{TimeZone, TimeZoneDatabase};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::agents::state::{AgentMachine, AgentState, NotReadyReason, Transition};
use crate::events::CallDirection;

/// The zone the contact center's days follow unless configured otherwise.
pub const DEFAULT_TIME_ZONE: &str = "Asia/Shanghai";

/// The longest ringing after which an answer still counts in `answerCount20` (20s接通量).
pub const ANSWER_WITHIN_MS: u64 = 20_000;

/// A local calendar day as `yyyymmdd` (20240310), which sorts like the days and reads well in
/// JSON and SQL.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct LocalDay(pub i32);

impl LocalDay {
    /// No day yet: counters in this state start a day at their first use. Never a real date.
    pub const UNSET: LocalDay = LocalDay(0);

    /// The day `year-month-day` (not validated: this is a label, not arithmetic).
    pub fn from_ymd(year: i16, month: i8, day: i8) -> LocalDay {
        LocalDay(i32::from(year) * 10_000 + i32::from(month) * 100 + i32::from(day))
    }

    fn from_date(date: Date) -> LocalDay {
        LocalDay::from_ymd(date.year(), date.month(), date.day())
    }

    /// Whether this is a real day rather than [`LocalDay::UNSET`].
    pub fn is_set(self) -> bool {
        self != LocalDay::UNSET
    }
}

impl fmt::Display for LocalDay {
    /// `2024-03-10`, or `unset`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_set() {
            return f.write_str("unset");
        }
        let year = self.0.div_euclid(10_000);
        let rest = self.0.rem_euclid(10_000);
        write!(f, "{year:04}-{:02}-{:02}", rest / 100, rest % 100)
    }
}

/// A time-zone name that neither the system's nor the bundled time-zone database knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {0:?} (expected an IANA name such as \"Asia/Shanghai\")")]
pub struct UnknownTimeZone(pub String);

/// Where local days begin and end in one time zone.
///
/// Lookups prefer the system's time-zone database (it gets tzdata updates) and fall back to
/// the copy bundled into the binary, so the daemon also works in a sandbox without
/// `/usr/share/zoneinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayClock {
    tz: TimeZone,
}

impl DayClock {
    /// The clock of the IANA zone `name` ("Asia/Shanghai", "America/New_York", "UTC").
    pub fn new(name: &str) -> Result<DayClock, UnknownTimeZone> {
        jiff::tz::db()
            .get(name)
            .or_else(|_| TimeZoneDatabase::bundled().get(name))
            .map(DayClock::from_time_zone)
            .map_err(|_| UnknownTimeZone(name.to_owned()))
    }

    /// The clock of an already resolved zone (tests, fixed offsets).
    pub fn from_time_zone(tz: TimeZone) -> DayClock {
        DayClock { tz }
    }

    /// The zone.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// The local day `unix_ms` falls on.
    pub fn day_of(&self, unix_ms: u64) -> LocalDay {
        LocalDay::from_date(self.local_date(unix_ms))
    }

    /// The first instant (Unix ms) of the local day `unix_ms` falls on: its midnight, or the
    /// first instant after the gap where midnight does not exist. Never after `unix_ms`.
    pub fn start_of_day_ms(&self, unix_ms: u64) -> u64 {
        self.first_instant(self.local_date(unix_ms))
            .map_or(unix_ms, |start| start.min(unix_ms))
    }

    /// The first instant (Unix ms) of the next local day: always after `unix_ms`, or
    /// `u64::MAX` at the end of representable time.
    pub fn next_midnight_ms(&self, unix_ms: u64) -> u64 {
        let mut date = self.local_date(unix_ms);
        // One step is enough in every real zone; a few more survive a zone whose calendar
        // jumps (Pacific/Apia skipped 2011-12-30).
        for _ in 0..3 {
            date = match date.tomorrow() {
                Ok(d) => d,
                Err(_) => return u64::MAX,
            };
            if let Some(start) = self.first_instant(date) {
                if start > unix_ms {
                    return start;
                }
            }
        }
        u64::MAX
    }

    fn local_date(&self, unix_ms: u64) -> Date {
        self.tz.to_datetime(timestamp(unix_ms)).date()
    }

    /// Midnight of `date`; jiff's "compatible" disambiguation picks the instant after a gap
    /// and the first of a fold, which is the day's first instant either way.
    fn first_instant(&self, date: Date) -> Option<u64> {
        self.tz
            .to_timestamp(date.to_datetime(Time::midnight()))
            .ok()
            .map(|ts| u64::try_from(ts.as_millisecond()).unwrap_or(0))
    }
}

/// The latest instant jiff can place on a calendar (year 9999). Later inputs are treated as
/// this instant, so that a nonsense `now_ms` cannot pour centuries into one day.
fn clamp_ms(unix_ms: u64) -> u64 {
    let max = u64::try_from(Timestamp::MAX.as_millisecond()).unwrap_or(u64::MAX);
    unix_ms.min(max)
}

/// `unix_ms` as a jiff timestamp, clamped to jiff's range (year 9999).
fn timestamp(unix_ms: u64) -> Timestamp {
    i64::try_from(unix_ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .unwrap_or(Timestamp::MAX)
}

/// What the agent's machine says now: the state whose time is still running.
///
/// The machine, not the counters, is the authority on the current state: after a restart the
/// two are restored separately and the counters may have missed a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveState<'a> {
    /// The current state.
    pub state: &'a AgentState,
    /// When it began (Unix ms).
    pub since_ms: u64,
    /// When the current sign-in session began (the machine's session id, which is the sign-in
    /// time bumped by at most a few ms to stay unique); `None` while signed out.
    pub signin_session_start_ms: Option<u64>,
}

impl<'a> From<&'a AgentMachine> for LiveState<'a> {
    fn from(m: &'a AgentMachine) -> LiveState<'a> {
        LiveState {
            state: m.state(),
            since_ms: m.since_ms(),
            signin_session_start_ms: m.signin_session(),
        }
    }
}

/// Per-direction call figures for one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct CallStats {
    /// Calls that started ringing (entered `Reserved`).
    offered: u32,
    /// Calls answered (ringing → talking).
    answered: u32,
    /// Of those, answered after ringing at most [`ANSWER_WITHIN_MS`].
    answered_within_20s: u32,
    /// Calls that stopped ringing without an answer.
    not_answered: u32,
    /// Holds (talking → hold).
    held: u32,
    /// Time ringing.
    ring_ms: u64,
    /// Time talking or on hold.
    talk_ms: u64,
    /// Time on hold (part of `talk_ms`).
    hold_ms: u64,
}

/// What the counters remember about the state the last transition entered, so the
/// transition that leaves it can be classified the same way (was this not-ready chosen, which
/// way does this call go).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LastEntry {
    /// The state entered.
    state: AgentState,
    /// When (the transition's `at_ms`, unclamped, to match the next `from_since_ms`).
    since_ms: u64,
    /// Whether a not-ready state was the agent's choice.
    #[serde(default)]
    busy_by_choice: bool,
    /// The direction of the call, for call states.
    #[serde(default)]
    call_direction: Option<CallDirection>,
}

/// Where a stretch of time goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    SignedOut,
    NotReady { by_choice: bool },
    Idle,
    Ringing(Option<CallDirection>),
    Talking(Option<CallDirection>),
    Hold(Option<CallDirection>),
    AfterCallWork,
    Rest,
}

impl Bucket {
    fn call_direction(self) -> Option<CallDirection> {
        match self {
            Bucket::Ringing(d) | Bucket::Talking(d) | Bucket::Hold(d) => d,
            _ => None,
        }
    }

    fn in_conversation(self) -> bool {
        matches!(self, Bucket::Talking(_) | Bucket::Hold(_))
    }
}

/// Whether a not-ready reason can be the agent's choice; see the module docs.
fn reason_can_be_chosen(reason: NotReadyReason) -> bool {
    reason != NotReadyReason::EXTENSION_OFFLINE && reason != NotReadyReason::REST_ENDED
}

/// One agent's counters for one local day, plus what is needed to continue them.
///
/// Durations are kept in ms; read them through [`DailyCounters::snapshot`] (live) or
/// [`DailyCounters::totals`] (a finished day).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DailyCounters {
    /// The day counted.
    day: LocalDay,
    /// Its first instant (Unix ms).
    day_start_ms: u64,
    /// The next day's first instant (Unix ms), cached so that a transition within the day
    /// costs no time-zone arithmetic; 0 = not computed yet (rows written before it existed).
    #[serde(default)]
    day_end_ms: u64,
    /// Everything from `day_start_ms` up to here has been accounted; later instants not yet.
    accounted_until_ms: u64,
    /// The first instant today the agent was known to be signed in.
    first_signed_in_ms: Option<u64>,

    sign_in_count: u32,
    sign_out_count: u32,
    not_ready_count: u32,
    busy_count: u32,
    idle_count: u32,
    acw_count: u32,
    rest_count: u32,

    signed_out_ms: u64,
    signed_out_after_sign_in_ms: u64,
    not_ready_ms: u64,
    busy_ms: u64,
    idle_ms: u64,
    acw_ms: u64,
    rest_ms: u64,

    inbound: CallStats,
    outbound: CallStats,
    unknown_direction: CallStats,

    /// The state the last transition entered, carried across days.
    last: Option<LastEntry>,
}

/// The counters as the grid reads them: whole seconds (rounded down) and counts.
///
/// Field definitions are in the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CounterSnapshot {
    /// The day the values belong to.
    pub day: LocalDay,
    /// Inbound calls answered today (`sumAnswerCount`).
    pub sum_answer_count: u32,
    /// Time talking or holding on inbound calls today (`sumAnswerSec`).
    pub sum_answer_sec: u64,
    /// Inbound calls answered after ringing at most 20 s (`answerCount20`).
    pub answer_count20: u32,
    /// Inbound calls that started ringing at the agent today.
    pub ring_count: u32,
    /// Time an inbound call was ringing at the agent today.
    pub ring_sec: u64,
    /// Inbound calls that stopped ringing unanswered today.
    pub no_answer_count: u32,
    /// Outbound calls answered today (`callOutCount`).
    pub call_out_count: u32,
    /// Time talking or holding on outbound calls today (`callOutSec`).
    pub call_out_sec: u64,
    /// Outbound calls started today, answered or not.
    pub call_out_attempt_count: u32,
    /// Outbound calls that ended unanswered today.
    pub call_out_no_answer_count: u32,
    /// Calls answered today in any direction, including unknown.
    pub total_answer_count: u32,
    /// Time talking or holding today in any direction, including unknown.
    pub total_talk_sec: u64,
    /// Holds today (any direction).
    pub hold_count: u32,
    /// Time on hold today (any direction; also part of the talk times).
    pub hold_sec: u64,
    /// The whole current sign-in session up to now, midnight or not (`curSignInSec`).
    pub cur_sign_in_sec: u64,
    /// The whole current state up to now.
    pub cur_state_sec: u64,
    /// The current state since it began or since midnight, whichever is later
    /// (`todayCurStateSec`).
    pub today_cur_state_sec: u64,
    /// Time signed in today (`todaySignInSec`).
    pub today_sign_in_sec: u64,
    /// Sign-ins today (`todaySignInCount`).
    pub today_sign_in_count: u32,
    /// Sign-outs today (`todaySignOutCount`).
    pub today_sign_out_count: u32,
    /// Time signed out today, from midnight (`todaySignOutSec`).
    pub today_sign_out_sec: u64,
    /// Time signed out today after first being signed in today.
    pub today_sign_out_sec_since_first_sign_in: u64,
    /// Entries into not-ready by the agent's choice (`todayBusyCount`, 示忙).
    pub today_busy_count: u32,
    /// Time not ready by the agent's choice.
    pub today_busy_sec: u64,
    /// Entries into not-ready for any reason (from a state that was not not-ready).
    pub today_not_ready_count: u32,
    /// Time not ready for any reason.
    pub today_not_ready_sec: u64,
    /// Entries into after-call work (`todayDelayCount`, 整理).
    pub today_delay_count: u32,
    /// Time in after-call work (`todayDelaySec`).
    pub today_delay_sec: u64,
    /// Entries into idle.
    pub today_idle_count: u32,
    /// Time idle (what the grid's `todayIdleCount`, labelled 空闲时长, asks for).
    pub today_idle_sec: u64,
    /// Rests started today (a restart while resting is not a new rest).
    pub today_rest_count: u32,
    /// Time resting.
    pub today_rest_sec: u64,
}

fn secs(ms: u64) -> u64 {
    ms / 1_000
}

impl DailyCounters {
    /// Empty counters for the day `now_ms` falls on, counting from its midnight.
    pub fn new(now_ms: u64, clock: &DayClock) -> DailyCounters {
        let day_start_ms = clock.start_of_day_ms(now_ms);
        DailyCounters {
            day: clock.day_of(now_ms),
            day_start_ms,
            day_end_ms: clock.next_midnight_ms(day_start_ms),
            accounted_until_ms: day_start_ms,
            ..DailyCounters::default()
        }
    }

    /// The day counted ([`LocalDay::UNSET`] for `DailyCounters::default()`, which starts a
    /// day at its first use).
    pub fn day(&self) -> LocalDay {
        self.day
    }

    /// When the shell should call [`DailyCounters::roll_over`] next (Unix ms): the next local
    /// midnight. In the past (0) for unset counters.
    pub fn next_roll_over_ms(&self, clock: &DayClock) -> u64 {
        if self.day.is_set() {
            clock.next_midnight_ms(self.day_start_ms)
        } else {
            0
        }
    }

    /// Accounts one transition of the agent's machine.
    ///
    /// `direction` is the direction of `t.call_id` when the transition enters or leaves a call
    /// state (ignored otherwise). If the transition happens on a later day, the counters'
    /// day is closed first (the state being left is accounted up to midnight) and returned.
    pub fn on_transition(
        &mut self,
        t: &Transition,
        direction: Option<CallDirection>,
        clock: &DayClock,
    ) -> Option<DailyCounters> {
        let from = self.classify(&t.from, t.from_since_ms, direction);
        let since = clamp_ms(t.from_since_ms);
        let finished = self.roll_to(clamp_ms(t.at_ms), from, since, clock);
        let at = clamp_ms(t.at_ms).max(self.accounted_until_ms);
        self.account(from, since, at);
        self.count_entry(t, from, direction, at);
        finished
    }

    /// Starts a new day if `now_ms` is on a later day than the counters', returning the
    /// finished one (with the state open at midnight accounted up to midnight).
    pub fn roll_over(
        &mut self,
        now_ms: u64,
        live: LiveState<'_>,
        clock: &DayClock,
    ) -> Option<DailyCounters> {
        let open = self.classify(live.state, live.since_ms, None);
        self.roll_to(clamp_ms(now_ms), open, clamp_ms(live.since_ms), clock)
    }

    /// Today's values as of `now_ms`, including the current state's time up to `now_ms`.
    ///
    /// If `now_ms` is on a later day, the values are those of that day (as if
    /// [`DailyCounters::roll_over`] had run); the counters themselves do not change.
    pub fn snapshot(&self, now_ms: u64, live: LiveState<'_>, clock: &DayClock) -> CounterSnapshot {
        let (closed, now) = self.closed_at(now_ms, live, clock);
        let mut s = closed.totals();
        let since = clamp_ms(live.since_ms).min(now);
        s.cur_state_sec = secs(now - since);
        s.today_cur_state_sec = secs(now - since.max(closed.day_start_ms.min(now)));
        if *live.state != AgentState::SignedOut {
            // The session contains the current state, so it began no later; the session id
            // may be a few ms later than the sign-in (see `LiveState`).
            let session = live.signin_session_start_ms.unwrap_or(since).min(since);
            s.cur_sign_in_sec = secs(now - session);
        }
        s
    }

    /// The accounted values only, without a live part: complete for a day returned by
    /// [`DailyCounters::roll_over`] or [`DailyCounters::on_transition`]. The `cur_*` fields
    /// are 0.
    pub fn totals(&self) -> CounterSnapshot {
        let calls = [&self.inbound, &self.outbound, &self.unknown_direction];
        let sum_ms =
            |f: fn(&CallStats) -> u64| calls.iter().map(|s| f(s)).fold(0, u64::saturating_add);
        let sum_n =
            |f: fn(&CallStats) -> u32| calls.iter().map(|s| f(s)).fold(0, u32::saturating_add);
        let signed_in_ms = [
            self.not_ready_ms,
            self.idle_ms,
            self.acw_ms,
            self.rest_ms,
            sum_ms(|s| s.ring_ms),
            sum_ms(|s| s.talk_ms),
        ]
        .into_iter()
        .fold(0, u64::saturating_add);
        CounterSnapshot {
            day: self.day,
            sum_answer_count: self.inbound.answered,
            sum_answer_sec: secs(self.inbound.talk_ms),
            answer_count20: self.inbound.answered_within_20s,
            ring_count: self.inbound.offered,
            ring_sec: secs(self.inbound.ring_ms),
            no_answer_count: self.inbound.not_answered,
            call_out_count: self.outbound.answered,
            call_out_sec: secs(self.outbound.talk_ms),
            call_out_attempt_count: self.outbound.offered,
            call_out_no_answer_count: self.outbound.not_answered,
            total_answer_count: sum_n(|s| s.answered),
            total_talk_sec: secs(sum_ms(|s| s.talk_ms)),
            hold_count: sum_n(|s| s.held),
            hold_sec: secs(sum_ms(|s| s.hold_ms)),
            cur_sign_in_sec: 0,
            cur_state_sec: 0,
            today_cur_state_sec: 0,
            today_sign_in_sec: secs(signed_in_ms),
            today_sign_in_count: self.sign_in_count,
            today_sign_out_count: self.sign_out_count,
            today_sign_out_sec: secs(self.signed_out_ms),
            today_sign_out_sec_since_first_sign_in: secs(self.signed_out_after_sign_in_ms),
            today_busy_count: self.busy_count,
            today_busy_sec: secs(self.busy_ms),
            today_not_ready_count: self.not_ready_count,
            today_not_ready_sec: secs(self.not_ready_ms),
            today_delay_count: self.acw_count,
            today_delay_sec: secs(self.acw_ms),
            today_idle_count: self.idle_count,
            today_idle_sec: secs(self.idle_ms),
            today_rest_count: self.rest_count,
            today_rest_sec: secs(self.rest_ms),
        }
    }

    /// A copy rolled to `now_ms`'s day with the live state accounted up to `now_ms`, and the
    /// clamped `now_ms`.
    fn closed_at(
        &self,
        now_ms: u64,
        live: LiveState<'_>,
        clock: &DayClock,
    ) -> (DailyCounters, u64) {
        let mut c = self.clone();
        let open = c.classify(live.state, live.since_ms, None);
        let since = clamp_ms(live.since_ms);
        c.roll_to(clamp_ms(now_ms), open, since, clock);
        let now = clamp_ms(now_ms).max(c.accounted_until_ms);
        c.account(open, since, now);
        (c, now)
    }

    /// Which bucket the time of `state` (entered at `since_ms`) goes to. What was remembered
    /// when the state was entered wins, if it is the same state; otherwise the state alone
    /// decides (a not-ready with no reason is then taken for the sign-in landing).
    fn classify(
        &self,
        state: &AgentState,
        since_ms: u64,
        direction: Option<CallDirection>,
    ) -> Bucket {
        let known = self
            .last
            .as_ref()
            .filter(|l| &l.state == state && l.since_ms == since_ms);
        // The remembered direction wins: see the module docs.
        let dir = known.and_then(|l| l.call_direction).or(direction);
        match state {
            AgentState::SignedOut => Bucket::SignedOut,
            AgentState::NotReady { reason } => Bucket::NotReady {
                by_choice: known.map_or_else(
                    || *reason != NotReadyReason::NONE && reason_can_be_chosen(*reason),
                    |l| l.busy_by_choice,
                ),
            },
            AgentState::Idle => Bucket::Idle,
            AgentState::Reserved => Bucket::Ringing(dir),
            AgentState::Talking => Bucket::Talking(dir),
            AgentState::Hold => Bucket::Hold(dir),
            AgentState::AfterCallWork { .. } => Bucket::AfterCallWork,
            AgentState::Rest { .. } => Bucket::Rest,
        }
    }

    /// If `now_ms` is on a later day, closes this day (accounting `open`, entered at
    /// `open_since_ms`, up to its end), returns it and starts the new day at its midnight.
    fn roll_to(
        &mut self,
        now_ms: u64,
        open: Bucket,
        open_since_ms: u64,
        clock: &DayClock,
    ) -> Option<DailyCounters> {
        let now = now_ms.max(self.accounted_until_ms);
        if self.day.is_set() && now < self.day_end_ms {
            // Still the same day: the common case, answered without the time-zone database.
            return None;
        }
        let today = clock.day_of(now);
        // An earlier day can only come from a changed time zone: keep counting the current
        // day rather than going back.
        if self.day.is_set() && today <= self.day {
            self.day_end_ms = clock.next_midnight_ms(self.day_start_ms);
            return None;
        }
        let finished = if self.day.is_set() {
            let mut old = self.clone();
            let end = clock
                .next_midnight_ms(old.day_start_ms)
                .min(now)
                .max(old.accounted_until_ms);
            old.account(open, open_since_ms, end);
            Some(old)
        } else {
            None
        };
        let day_start_ms = clock.start_of_day_ms(now);
        *self = DailyCounters {
            day: today,
            day_start_ms,
            day_end_ms: clock.next_midnight_ms(day_start_ms),
            accounted_until_ms: day_start_ms.max(self.accounted_until_ms),
            last: self.last.take(),
            ..DailyCounters::default()
        };
        finished
    }

    /// Adds the time of `bucket` from `since_ms` (or the accounted instant, if later) to
    /// `until_ms`, which must lie on the counters' day.
    fn account(&mut self, bucket: Bucket, since_ms: u64, until_ms: u64) {
        let start = since_ms.max(self.accounted_until_ms);
        if until_ms <= start {
            return;
        }
        let ms = until_ms - start;
        let add = |total: &mut u64| *total = total.saturating_add(ms);
        match bucket {
            Bucket::SignedOut => {
                add(&mut self.signed_out_ms);
                if self.first_signed_in_ms.is_some() {
                    add(&mut self.signed_out_after_sign_in_ms);
                }
            }
            Bucket::NotReady { by_choice } => {
                add(&mut self.not_ready_ms);
                if by_choice {
                    add(&mut self.busy_ms);
                }
            }
            Bucket::Idle => add(&mut self.idle_ms),
            Bucket::Ringing(d) => add(&mut self.calls(d).ring_ms),
            Bucket::Talking(d) => add(&mut self.calls(d).talk_ms),
            Bucket::Hold(d) => {
                let calls = self.calls(d);
                add(&mut calls.talk_ms);
                add(&mut calls.hold_ms);
            }
            Bucket::AfterCallWork => add(&mut self.acw_ms),
            Bucket::Rest => add(&mut self.rest_ms),
        }
        if bucket != Bucket::SignedOut {
            self.first_signed_in_ms.get_or_insert(start);
        }
        self.accounted_until_ms = until_ms;
    }

    /// Counts the events of `t` (whose state left is `from`) at `at_ms` and remembers the
    /// state entered.
    fn count_entry(
        &mut self,
        t: &Transition,
        from: Bucket,
        direction: Option<CallDirection>,
        at_ms: u64,
    ) {
        let bump = |n: &mut u32| *n = n.saturating_add(1);
        let to_direction = if t.to.in_call() {
            from.call_direction().or(direction)
        } else {
            None
        };
        let mut busy_by_choice = false;

        match (&t.from, &t.to) {
            (AgentState::SignedOut, AgentState::SignedOut) => {}
            (AgentState::SignedOut, _) => {
                bump(&mut self.sign_in_count);
                self.first_signed_in_ms.get_or_insert(at_ms);
            }
            (_, AgentState::SignedOut) => bump(&mut self.sign_out_count),
            _ => {}
        }

        match &t.to {
            AgentState::NotReady { reason } => {
                if !matches!(t.from, AgentState::NotReady { .. }) {
                    bump(&mut self.not_ready_count);
                }
                busy_by_choice = t.from != AgentState::SignedOut && reason_can_be_chosen(*reason);
                if busy_by_choice && from != (Bucket::NotReady { by_choice: true }) {
                    bump(&mut self.busy_count);
                }
            }
            AgentState::Idle if t.from != AgentState::Idle => bump(&mut self.idle_count),
            AgentState::AfterCallWork { .. }
                if !matches!(t.from, AgentState::AfterCallWork { .. }) =>
            {
                bump(&mut self.acw_count);
            }
            AgentState::Rest { .. } if !matches!(t.from, AgentState::Rest { .. }) => {
                bump(&mut self.rest_count);
            }
            AgentState::Reserved if t.from != AgentState::Reserved => {
                bump(&mut self.calls(to_direction).offered);
            }
            AgentState::Talking | AgentState::Hold if !from.in_conversation() => {
                // An answer. The machine always answers from ringing; anything else means
                // the counters missed the offer, and the ringing time is unknown.
                let calls = self.calls(to_direction);
                bump(&mut calls.answered);
                let rang_ms = t.at_ms.saturating_sub(t.from_since_ms);
                if matches!(t.from, AgentState::Reserved) && rang_ms <= ANSWER_WITHIN_MS {
                    bump(&mut calls.answered_within_20s);
                }
            }
            _ => {}
        }
        if matches!((&t.from, &t.to), (AgentState::Talking, AgentState::Hold)) {
            bump(&mut self.calls(to_direction).held);
        }
        if let Bucket::Ringing(d) = from {
            if !matches!(t.to, AgentState::Talking | AgentState::Hold) {
                bump(&mut self.calls(d.or(direction)).not_answered);
            }
        }

        self.last = Some(LastEntry {
            state: t.to.clone(),
            since_ms: t.at_ms,
            busy_by_choice,
            call_direction: to_direction,
        });
    }

    fn calls(&mut self, direction: Option<CallDirection>) -> &mut CallStats {
        match direction {
            Some(CallDirection::Inbound) => &mut self.inbound,
            Some(CallDirection::Outbound) => &mut self.outbound,
            None => &mut self.unknown_direction,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::state::{AgentConfig, AgentInput as I, CallId, RestReason};
    use std::collections::HashMap;

    const MIN: u64 = 60_000;
    const HOUR: u64 = 3_600_000;

    fn clock(name: &str) -> DayClock {
        DayClock::new(name).expect("known zone")
    }

    /// Unix ms of an RFC 3339 instant ("2024-03-09T23:50:00+08:00").
    fn ms(s: &str) -> u64 {
        let ts: Timestamp = s.parse().expect("valid RFC 3339");
        u64::try_from(ts.as_millisecond()).expect("after 1970")
    }

    fn call(id: &str) -> CallId {
        CallId(id.to_owned())
    }

    /// A machine, its counters and the call directions the shell would know.
    struct Agent {
        m: AgentMachine,
        c: DailyCounters,
        clock: DayClock,
        dirs: HashMap<CallId, CallDirection>,
        finished: Vec<DailyCounters>,
    }

    impl Agent {
        fn new(zone: &str, start_ms: u64, acw_ms: u64) -> Agent {
            let clock = clock(zone);
            Agent {
                m: AgentMachine::new(
                    AgentConfig {
                        acw_ms,
                        idle_after_rest: false,
                    },
                    start_ms,
                ),
                c: DailyCounters::new(start_ms, &clock),
                clock,
                dirs: HashMap::new(),
                finished: Vec::new(),
            }
        }

        /// Applies `input` at `at`, feeding any transition to the counters.
        fn at(&mut self, at: u64, input: I) -> &mut Agent {
            let t = self
                .m
                .handle(input.clone(), at)
                .unwrap_or_else(|e| panic!("{input:?}: {e}"));
            if let Some(t) = t {
                let dir = t.call_id.as_ref().and_then(|c| self.dirs.get(c).copied());
                if let Some(done) = self.c.on_transition(&t, dir, &self.clock) {
                    self.finished.push(done);
                }
            }
            self
        }

        fn offer(&mut self, at: u64, id: &str, dir: CallDirection) -> &mut Agent {
            self.dirs.insert(call(id), dir);
            self.at(at, I::CallOffered { call_id: call(id) })
        }

        fn snap(&self, now: u64) -> CounterSnapshot {
            self.c.snapshot(now, LiveState::from(&self.m), &self.clock)
        }

        fn roll(&mut self, now: u64) -> Option<DailyCounters> {
            self.c.roll_over(now, LiveState::from(&self.m), &self.clock)
        }
    }

    fn signed_in_idle(zone: &str, at: u64, acw_ms: u64) -> Agent {
        let mut a = Agent::new(zone, at, acw_ms);
        a.at(at, I::RegistrationUp)
            .at(at, I::SignIn)
            .at(at, I::SetIdle);
        a
    }

    // ----- DayClock -----

    #[test]
    fn shanghai_days_and_midnights() {
        let c = clock("Asia/Shanghai");
        let before = ms("2024-03-09T23:59:59.999+08:00");
        let midnight = ms("2024-03-10T00:00:00+08:00");
        assert_eq!(c.day_of(before), LocalDay(20240309));
        assert_eq!(c.day_of(midnight), LocalDay(20240310));
        assert_eq!(c.next_midnight_ms(before), midnight);
        assert_eq!(c.next_midnight_ms(midnight), midnight + 24 * HOUR);
        assert_eq!(c.start_of_day_ms(before), midnight - 24 * HOUR);
        assert_eq!(c.start_of_day_ms(midnight), midnight);
        assert_eq!(LocalDay(20240310).to_string(), "2024-03-10");
        assert_eq!(LocalDay::UNSET.to_string(), "unset");
        assert_eq!(LocalDay::from_ymd(2024, 3, 10), LocalDay(20240310));
        assert_eq!(
            serde_json::to_string(&LocalDay(20240310)).unwrap(),
            "20240310"
        );
        assert_eq!(
            clock(DEFAULT_TIME_ZONE).day_of(midnight),
            LocalDay(20240310)
        );
    }

    #[test]
    fn unknown_time_zones_are_refused_by_name() {
        let err = DayClock::new("Mars/Olympus_Mons").unwrap_err();
        assert_eq!(err, UnknownTimeZone("Mars/Olympus_Mons".into()));
        assert!(err.to_string().contains("Mars/Olympus_Mons"));
        assert!(DayClock::new("UTC").is_ok());
    }

    #[test]
    fn dst_days_last_23_and_25_hours() {
        let c = clock("America/New_York");
        let spring = ms("2024-03-10T00:00:00-05:00");
        assert_eq!(c.next_midnight_ms(spring) - spring, 23 * HOUR);
        let fall = ms("2024-11-03T00:00:00-04:00");
        assert_eq!(c.next_midnight_ms(fall) - fall, 25 * HOUR);
        assert_eq!(c.day_of(fall + 24 * HOUR), LocalDay(20241103), "23:00 EST");
        assert_eq!(c.day_of(fall + 25 * HOUR), LocalDay(20241104));
    }

    #[test]
    fn a_day_without_a_midnight_starts_at_its_first_instant() {
        let c = clock("America/Sao_Paulo");
        let first = ms("2015-10-18T01:00:00-02:00");
        assert_eq!(c.start_of_day_ms(first + 5 * HOUR), first);
        assert_eq!(c.next_midnight_ms(ms("2015-10-17T12:00:00-03:00")), first);
        assert_eq!(c.day_of(first - 1), LocalDay(20151017));
        assert_eq!(c.day_of(first), LocalDay(20151018));
        assert_eq!(c.next_midnight_ms(first) - first, 23 * HOUR);
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        let c = clock("Asia/Shanghai");
        assert!(c.day_of(u64::MAX).is_set());
        assert_eq!(c.next_midnight_ms(u64::MAX), u64::MAX);
        assert_eq!(
            c.start_of_day_ms(0),
            0,
            "1970-01-01 starts before the epoch"
        );
        assert_eq!(c.day_of(0), LocalDay(19700101));
        assert_eq!(c.day_of(c.start_of_day_ms(u64::MAX)), c.day_of(u64::MAX));
        let mut counters = DailyCounters::new(u64::MAX - 1, &c);
        let s = counters.snapshot(
            u64::MAX,
            LiveState {
                state: &AgentState::Idle,
                since_ms: 0,
                signin_session_start_ms: Some(0),
            },
            &c,
        );
        assert!(s.today_idle_sec <= 25 * 3_600);
        assert_eq!(
            counters.roll_over(
                u64::MAX,
                LiveState {
                    state: &AgentState::Idle,
                    since_ms: 0,
                    signin_session_start_ms: Some(0),
                },
                &c
            ),
            None
        );
    }

    // ----- counters -----

    #[test]
    fn sign_in_and_sign_out() {
        let z = "Asia/Shanghai";
        let day = ms("2024-03-10T00:00:00+08:00");
        let mut a = Agent::new(z, day - 2 * HOUR, 0);
        a.at(day + 9 * HOUR, I::RegistrationUp)
            .at(day + 9 * HOUR, I::SignIn)
            .at(day + 9 * HOUR + MIN, I::SetIdle)
            .at(day + 12 * HOUR, I::SignOut)
            .at(day + 13 * HOUR, I::SignIn);
        let s = a.snap(day + 14 * HOUR + 999);
        assert_eq!((s.today_sign_in_count, s.today_sign_out_count), (2, 1));
        assert_eq!(s.today_sign_in_sec, 4 * 3_600);
        assert_eq!(s.today_sign_out_sec, 10 * 3_600, "from midnight");
        assert_eq!(s.today_sign_out_sec_since_first_sign_in, 3_600);
        assert_eq!(s.cur_sign_in_sec, 3_600);
        assert_eq!((s.cur_state_sec, s.today_cur_state_sec), (3_600, 3_600));
        assert_eq!(s.today_idle_count, 1);
        assert_eq!(s.today_idle_sec, 3 * 3_600 - 60);
        // The landing state of a sign-in is not 示忙.
        assert_eq!((s.today_busy_count, s.today_not_ready_count), (0, 2));
        assert_eq!(s.today_not_ready_sec, 60 + 3_600);
        // Signed out now: no current session.
        a.at(day + 15 * HOUR, I::SignOut);
        let s = a.snap(day + 16 * HOUR);
        assert_eq!(s.cur_sign_in_sec, 0);
        assert_eq!(s.today_sign_in_sec, 5 * 3_600);
        assert_eq!(s.today_sign_out_sec, 11 * 3_600);
        assert_eq!(s.today_sign_in_sec + s.today_sign_out_sec, 16 * 3_600);
    }

    #[test]
    fn busy_counts_only_the_agents_choice() {
        let t0 = ms("2024-03-10T09:00:00+08:00");
        let mut a = signed_in_idle("Asia/Shanghai", t0, 0);
        a.at(
            t0 + MIN,
            I::SetBusy {
                reason: NotReadyReason::MANUAL,
            },
        )
        .at(
            t0 + 2 * MIN,
            I::SetBusy {
                reason: NotReadyReason(201),
            },
        ) // reason change: same 示忙
        .at(t0 + 3 * MIN, I::SetIdle)
        .at(t0 + 4 * MIN, I::RegistrationDown) // automatic
        .at(t0 + 5 * MIN, I::RegistrationUp)
        .at(
            t0 + 6 * MIN,
            I::SetBusy {
                reason: NotReadyReason::NONE,
            },
        ) // chosen, no reason
        .at(
            t0 + 7 * MIN,
            I::StartRest {
                reason: RestReason(1),
                duration_ms: Some(MIN),
            },
        )
        .at(t0 + 8 * MIN, I::Tick); // rest ran out: automatic
        let s = a.snap(t0 + 9 * MIN);
        assert_eq!(s.today_busy_count, 2);
        assert_eq!(s.today_busy_sec, 3 * 60);
        // Sign-in landing, the first busy (reason change is no entry), offline, NONE, rest end.
        assert_eq!(s.today_not_ready_count, 4);
        assert_eq!(s.today_not_ready_sec, 2 * 60 + 2 * 60 + 60 + 60);
        assert_eq!((s.today_rest_count, s.today_rest_sec), (1, 60));
        assert_eq!((s.today_idle_count, s.today_idle_sec), (2, 2 * 60));
    }

    #[test]
    fn a_restarted_rest_is_one_rest_and_after_call_work_is_counted() {
        let t0 = ms("2024-03-10T09:00:00+08:00");
        let mut a = signed_in_idle("Asia/Shanghai", t0, 30_000);
        let rest = |d| I::StartRest {
            reason: RestReason(2),
            duration_ms: Some(d),
        };
        a.at(t0 + MIN, rest(10 * MIN))
            .at(t0 + 2 * MIN, rest(10 * MIN)) // prolonged: a transition, not a new rest
            .at(t0 + 3 * MIN, I::EndRest)
            .offer(t0 + 4 * MIN, "c", CallDirection::Inbound)
            .at(t0 + 4 * MIN + 1_000, I::CallAnswered { call_id: call("c") })
            .at(t0 + 5 * MIN, I::CallEnded { call_id: call("c") })
            .at(t0 + 5 * MIN + 30_000, I::Tick)
            .offer(t0 + 6 * MIN, "d", CallDirection::Inbound)
            .at(t0 + 6 * MIN + 1_000, I::CallAnswered { call_id: call("d") })
            .at(t0 + 7 * MIN, I::CallEnded { call_id: call("d") })
            .at(t0 + 7 * MIN + 10_000, I::SetIdle); // ends after-call work early
        let s = a.snap(t0 + 8 * MIN);
        assert_eq!((s.today_rest_count, s.today_rest_sec), (1, 2 * 60));
        assert_eq!((s.today_delay_count, s.today_delay_sec), (2, 40));
    }

    #[test]
    fn inbound_calls() {
        let t0 = ms("2024-03-10T09:00:00+08:00");
        let mut a = signed_in_idle("Asia/Shanghai", t0, 0);
        let inb = CallDirection::Inbound;
        // Answered after exactly 20 s, with a hold: counts in answerCount20.
        a.offer(t0, "a", inb)
            .at(t0 + 20_000, I::CallAnswered { call_id: call("a") })
            .at(t0 + 80_000, I::CallHeld)
            .at(t0 + 110_000, I::CallResumed)
            .at(t0 + 140_000, I::CallEnded { call_id: call("a") });
        // Answered after 20.001 s: not within 20 s.
        a.offer(t0 + 200_000, "b", inb)
            .at(t0 + 220_001, I::CallAnswered { call_id: call("b") })
            .at(t0 + 250_001, I::CallEnded { call_id: call("b") });
        // Rang 5 s, never answered.
        a.offer(t0 + 300_000, "c", inb)
            .at(t0 + 305_000, I::CallEnded { call_id: call("c") });
        // Ringing now, for 7 s.
        a.offer(t0 + 400_000, "d", inb);
        let s = a.snap(t0 + 407_000);
        assert_eq!(s.sum_answer_count, 2);
        assert_eq!(s.sum_answer_sec, 120 + 30, "hold included");
        assert_eq!(s.answer_count20, 1);
        assert_eq!((s.ring_count, s.ring_sec), (4, 20 + 20 + 5 + 7));
        assert_eq!(s.no_answer_count, 1);
        assert_eq!((s.hold_count, s.hold_sec), (1, 30));
        assert_eq!((s.total_answer_count, s.total_talk_sec), (2, 150));
        assert_eq!((s.call_out_count, s.call_out_attempt_count), (0, 0));
        // Talking now: the live part counts.
        a.at(t0 + 410_000, I::CallAnswered { call_id: call("d") });
        let s = a.snap(t0 + 470_000);
        assert_eq!((s.sum_answer_count, s.sum_answer_sec), (3, 210));
        assert_eq!(s.answer_count20, 2);
        assert_eq!(s.today_cur_state_sec, 60);
    }

    #[test]
    fn outbound_calls() {
        let t0 = ms("2024-03-10T09:00:00+08:00");
        let mut a = signed_in_idle("Asia/Shanghai", t0, 0);
        let out = CallDirection::Outbound;
        a.offer(t0, "a", out)
            .at(t0 + 15_000, I::CallAnswered { call_id: call("a") })
            .at(t0 + 75_000, I::CallHeld)
            .at(t0 + 95_000, I::CallEnded { call_id: call("a") })
            .offer(t0 + 100_000, "b", out)
            .at(t0 + 130_000, I::CallEnded { call_id: call("b") });
        let s = a.snap(t0 + 200_000);
        assert_eq!((s.call_out_count, s.call_out_sec), (1, 80));
        assert_eq!(
            (s.call_out_attempt_count, s.call_out_no_answer_count),
            (2, 1)
        );
        assert_eq!(
            (s.sum_answer_count, s.sum_answer_sec, s.answer_count20),
            (0, 0, 0)
        );
        assert_eq!((s.ring_count, s.no_answer_count), (0, 0));
        assert_eq!((s.hold_count, s.hold_sec), (1, 20));
        assert_eq!(s.total_answer_count, 1);
    }

    #[test]
    fn calls_without_a_direction_count_only_in_totals_and_direction_is_remembered() {
        let t0 = ms("2024-03-10T09:00:00+08:00");
        let mut a = signed_in_idle("Asia/Shanghai", t0, 0);
        // No direction known to the shell at all.
        a.at(t0, I::CallOffered { call_id: call("x") })
            .at(t0 + 1_000, I::CallAnswered { call_id: call("x") })
            .at(t0 + 61_000, I::CallEnded { call_id: call("x") });
        let s = a.snap(t0 + 100_000);
        assert_eq!((s.total_answer_count, s.total_talk_sec), (1, 60));
        assert_eq!((s.sum_answer_count, s.call_out_count), (0, 0));
        assert_eq!(s.today_sign_in_sec, 100);

        // A direction given only when the call is offered carries through the call.
        let mut c = DailyCounters::new(t0, &a.clock);
        let mut m = AgentMachine::new(AgentConfig::default(), t0);
        let mut feed = |input, at, dir| {
            if let Some(t) = m.handle(input, at).unwrap() {
                c.on_transition(&t, dir, &a.clock);
            }
        };
        feed(I::RegistrationUp, t0, None);
        feed(I::SignIn, t0, None);
        feed(I::SetIdle, t0, None);
        feed(
            I::CallOffered { call_id: call("y") },
            t0,
            Some(CallDirection::Inbound),
        );
        feed(I::CallAnswered { call_id: call("y") }, t0 + 1_000, None);
        feed(I::CallHeld, t0 + 2_000, None);
        feed(I::CallResumed, t0 + 3_000, None);
        feed(I::CallEnded { call_id: call("y") }, t0 + 4_000, None);
        let s = c.totals();
        assert_eq!(
            (s.sum_answer_count, s.sum_answer_sec, s.answer_count20),
            (1, 3, 1)
        );
        assert_eq!(s.total_answer_count, 1);
    }

    #[test]
    fn a_state_across_midnight_is_split() {
        let z = "Asia/Shanghai";
        let midnight = ms("2024-03-10T00:00:00+08:00");
        let mut a = signed_in_idle(z, midnight - HOUR, 0);
        a.at(
            midnight - 10 * MIN,
            I::SetBusy {
                reason: NotReadyReason::MANUAL,
            },
        );
        let mut b = Agent::new(z, midnight - HOUR, 0);
        b.at(midnight - HOUR, I::RegistrationUp)
            .at(midnight - HOUR, I::SignIn)
            .at(midnight - HOUR, I::SetIdle)
            .at(
                midnight - 10 * MIN,
                I::SetBusy {
                    reason: NotReadyReason::MANUAL,
                },
            );

        // Explicit roll-over at midnight returns yesterday with the busy time up to midnight.
        let yesterday = a.roll(midnight).expect("a new day");
        let y = yesterday.totals();
        assert_eq!(y.day, LocalDay(20240309));
        assert_eq!((y.today_busy_count, y.today_busy_sec), (1, 600));
        assert_eq!((y.today_idle_sec, y.today_sign_in_sec), (50 * 60, 3_600));
        // The machine only exists since 23:00, so nothing before is known.
        assert_eq!(y.today_sign_out_sec, 0);
        assert_eq!(a.c.day(), LocalDay(20240310));
        assert_eq!(a.roll(midnight + 1), None, "only once");
        assert_eq!(a.c.next_roll_over_ms(&a.clock), midnight + 24 * HOUR);
        let s = a.snap(midnight + 5 * MIN);
        assert_eq!((s.today_busy_count, s.today_busy_sec), (0, 300));
        assert_eq!((s.cur_state_sec, s.today_cur_state_sec), (15 * 60, 5 * 60));
        a.at(midnight + 10 * MIN, I::SetIdle);
        let s = a.snap(midnight + 10 * MIN);
        assert_eq!(
            (s.today_busy_count, s.today_busy_sec, s.today_idle_count),
            (0, 600, 1)
        );

        // Without a roll-over, the transition after midnight rolls over by itself.
        b.at(midnight + 10 * MIN, I::SetIdle);
        let y = b.finished.pop().expect("yesterday closed").totals();
        assert_eq!((y.day, y.today_busy_sec), (LocalDay(20240309), 600));
        assert_eq!(b.snap(midnight + 10 * MIN), s);
    }

    #[test]
    fn a_session_across_midnight() {
        let midnight = ms("2024-03-10T00:00:00+08:00");
        let mut a = signed_in_idle("Asia/Shanghai", midnight - 2 * HOUR, 0);
        let s = a.snap(midnight + HOUR);
        assert_eq!(s.day, LocalDay(20240310));
        assert_eq!(s.cur_sign_in_sec, 3 * 3_600);
        assert_eq!(s.today_sign_in_sec, 3_600);
        assert_eq!((s.today_sign_in_count, s.today_idle_count), (0, 0));
        assert_eq!((s.cur_state_sec, s.today_cur_state_sec), (3 * 3_600, 3_600));
        assert_eq!(s.today_sign_out_sec, 0);
        a.at(midnight + 2 * HOUR, I::SignOut);
        let s = a.snap(midnight + 3 * HOUR);
        assert_eq!(
            (s.today_sign_in_sec, s.today_sign_out_sec),
            (2 * 3_600, 3_600)
        );
        assert_eq!(s.today_sign_out_sec_since_first_sign_in, 3_600);
        assert_eq!((s.today_sign_in_count, s.today_sign_out_count), (0, 1));
        assert_eq!(
            a.c.day(),
            LocalDay(20240310),
            "the sign-out rolled the counters over"
        );
    }

    #[test]
    fn dst_days_are_split_at_local_midnight() {
        let z = "America/New_York";
        let start = ms("2024-03-09T20:00:00-05:00");
        let mut a = signed_in_idle(z, start, 0);
        let y = a.roll(ms("2024-03-10T00:30:00-05:00")).expect("new day");
        assert_eq!(
            (y.day, y.totals().today_idle_sec),
            (LocalDay(20240309), 4 * 3_600)
        );
        let d = a
            .roll(ms("2024-03-11T00:00:00-04:00"))
            .expect("new day")
            .totals();
        assert_eq!(d.day, LocalDay(20240310));
        assert_eq!(
            (d.today_idle_sec, d.today_sign_in_sec),
            (23 * 3_600, 23 * 3_600)
        );

        let start = ms("2024-11-02T23:00:00-04:00");
        let mut a = signed_in_idle(z, start, 0);
        let y = a
            .roll(ms("2024-11-03T12:00:00-05:00"))
            .expect("new day")
            .totals();
        assert_eq!((y.day, y.today_idle_sec), (LocalDay(20241102), 3_600));
        a.at(ms("2024-11-04T00:30:00-05:00"), I::SignOut);
        let d = a.finished.pop().expect("closed").totals();
        assert_eq!((d.day, d.today_idle_sec), (LocalDay(20241103), 25 * 3_600));
        let s = a.snap(ms("2024-11-04T01:00:00-05:00"));
        assert_eq!(
            (s.today_sign_in_sec, s.today_sign_out_sec),
            (30 * 60, 30 * 60)
        );
    }

    #[test]
    fn days_without_events_are_skipped() {
        let z = "Asia/Shanghai";
        let d1 = ms("2024-03-10T00:00:00+08:00");
        let mut a = signed_in_idle(z, d1 + 9 * HOUR, 0);
        a.at(d1 + 72 * HOUR + 8 * HOUR, I::SignOut);
        let done = a.finished.pop().expect("day 1 closed");
        assert!(a.finished.is_empty());
        let t = done.totals();
        assert_eq!((t.day, t.today_idle_sec), (LocalDay(20240310), 15 * 3_600));
        let s = a.snap(d1 + 72 * HOUR + 9 * HOUR);
        assert_eq!(s.day, LocalDay(20240313));
        assert_eq!(
            (s.today_sign_in_sec, s.today_sign_out_sec),
            (8 * 3_600, 3_600)
        );
        assert_eq!((s.today_sign_in_count, s.today_sign_out_count), (0, 1));
    }

    #[test]
    fn time_going_backwards_is_clamped() {
        let c = clock("Asia/Shanghai");
        let t0 = ms("2024-03-10T09:00:00+08:00");
        let mut counters = DailyCounters::new(t0, &c);
        let t = |from: AgentState, to: AgentState, since: u64, at: u64| Transition {
            from,
            to,
            from_since_ms: since,
            at_ms: at,
            duration_ms: at.saturating_sub(since),
            signin_session: Some(1),
            call_id: None,
        };
        let nr = AgentState::NotReady {
            reason: NotReadyReason::NONE,
        };
        counters.on_transition(
            &t(AgentState::SignedOut, nr.clone(), t0 - HOUR, t0),
            None,
            &c,
        );
        counters.on_transition(&t(nr.clone(), AgentState::Idle, t0, t0 + HOUR), None, &c);
        // Late (earlier than accounted) and inconsistent (since after at) transitions.
        counters.on_transition(
            &t(AgentState::Idle, nr.clone(), t0 + HOUR, t0 + 10),
            None,
            &c,
        );
        counters.on_transition(
            &t(nr.clone(), AgentState::Idle, t0 + 5 * HOUR, t0),
            None,
            &c,
        );
        // A transition from a day before the counters' day.
        counters.on_transition(
            &t(AgentState::Idle, nr, t0 - 48 * HOUR, t0 - 47 * HOUR),
            None,
            &c,
        );
        let s = counters.snapshot(
            t0,
            LiveState {
                state: &AgentState::Idle,
                since_ms: t0 + 5 * HOUR,
                signin_session_start_ms: Some(t0 + 6 * HOUR),
            },
            &c,
        );
        assert_eq!(s.day, LocalDay(20240310));
        assert_eq!(s.today_sign_in_sec, 3_600, "no time added after the clamp");
        assert_eq!(s.today_sign_out_sec, 3_600, "from the state's start, 08:00");
        assert_eq!(s.today_idle_count, 2, "the events still count");
        assert_eq!((s.cur_state_sec, s.cur_sign_in_sec), (0, 0));
    }

    #[test]
    fn restart_round_trip() {
        let t0 = ms("2024-03-10T09:00:00+08:00");
        let mut a = signed_in_idle("Asia/Shanghai", t0, 10_000);
        a.offer(t0 + MIN, "c", CallDirection::Outbound)
            .at(t0 + 2 * MIN, I::CallAnswered { call_id: call("c") })
            .at(t0 + 3 * MIN, I::CallHeld);
        let json = serde_json::to_string(&a.c).unwrap();
        let restored: DailyCounters = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, a.c);
        assert_eq!(serde_json::to_string(&restored).unwrap(), json);
        // The restored counters continue exactly like the original ones.
        let before = a.snap(t0 + 4 * MIN);
        a.c = restored;
        assert_eq!(a.snap(t0 + 4 * MIN), before);
        a.at(t0 + 5 * MIN, I::CallEnded { call_id: call("c") });
        let s = a.snap(t0 + 5 * MIN);
        assert_eq!(
            (s.call_out_count, s.call_out_sec, s.hold_sec),
            (1, 180, 120)
        );

        // Rows written before a field existed stay readable; an empty row starts a day.
        let old: DailyCounters =
            serde_json::from_str(r#"{"day":20240310,"idle_ms":5000}"#).unwrap();
        assert_eq!(
            (old.day(), old.totals().today_idle_sec),
            (LocalDay(20240310), 5)
        );
        let mut empty: DailyCounters = serde_json::from_str("{}").unwrap();
        assert_eq!(empty.day(), LocalDay::UNSET);
        assert_eq!(empty.next_roll_over_ms(&a.clock), 0);
        let live = LiveState::from(&a.m);
        assert_eq!(
            empty.roll_over(t0, live, &a.clock),
            None,
            "nothing to close"
        );
        assert_eq!(empty.day(), LocalDay(20240310));
        let snap: CounterSnapshot =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(snap, s);
    }

    #[test]
    fn snapshots_do_not_change_the_counters() {
        let t0 = ms("2024-03-10T22:00:00+08:00");
        let a = signed_in_idle("Asia/Shanghai", t0, 0);
        let before = a.c.clone();
        let s = a.snap(t0 + 5 * HOUR);
        assert_eq!(a.c, before);
        assert_eq!(s.day, LocalDay(20240311));
        assert_eq!((s.today_idle_sec, s.cur_state_sec), (3 * 3_600, 5 * 3_600));
        // Before anything is closed, the totals are the accounted part only.
        assert_eq!(a.c.totals().today_idle_sec, 0);
    }

    // ----- properties -----

    mod prop {
        use super::*;
        use proptest::prelude::*;

        const ZONES: [&str; 3] = ["Asia/Shanghai", "America/New_York", "America/Sao_Paulo"];

        proptest! {
            #[test]
            fn day_clock_brackets_every_instant(zone in 0usize..3, t in 0u64..4_000_000_000_000) {
                let c = clock(ZONES[zone]);
                let start = c.start_of_day_ms(t);
                let next = c.next_midnight_ms(t);
                prop_assert!(start <= t && t < next);
                prop_assert_eq!(c.day_of(start), c.day_of(t));
                prop_assert_eq!(c.day_of(next - 1), c.day_of(t));
                prop_assert!(c.day_of(next) > c.day_of(t));
                prop_assert!(next - start >= 22 * HOUR && next - start <= 26 * HOUR);
                prop_assert_eq!(c.start_of_day_ms(next), next);
            }
        }

        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Cat {
            Out,
            NotReady,
            Idle,
            Ring,
            Talk,
            Acw,
            Rest,
        }

        fn cat(s: &AgentState) -> Cat {
            match s {
                AgentState::SignedOut => Cat::Out,
                AgentState::NotReady { .. } => Cat::NotReady,
                AgentState::Idle => Cat::Idle,
                AgentState::Reserved => Cat::Ring,
                AgentState::Talking | AgentState::Hold => Cat::Talk,
                AgentState::AfterCallWork { .. } => Cat::Acw,
                AgentState::Rest { .. } => Cat::Rest,
            }
        }

        /// Per-category ms of `c`, in `Cat` order.
        fn accounted(c: &DailyCounters) -> [u64; 7] {
            let calls = [c.inbound, c.outbound, c.unknown_direction];
            [
                c.signed_out_ms,
                c.not_ready_ms,
                c.idle_ms,
                calls.iter().map(|s| s.ring_ms).sum(),
                calls.iter().map(|s| s.talk_ms).sum(),
                c.acw_ms,
                c.rest_ms,
            ]
        }

        /// The independent model: every interval the machine spent in a state, and every
        /// transition.
        #[derive(Default)]
        struct Oracle {
            intervals: Vec<(Cat, u64, u64)>,
            transitions: Vec<Transition>,
        }

        impl Oracle {
            /// Per-category overlap with `[from, to)`, with the live state up to `now`.
            fn time(&self, live: (&AgentState, u64, u64), from: u64, to: u64) -> [u64; 7] {
                let mut out = [0u64; 7];
                let live = (cat(live.0), live.1, live.2);
                for &(c, s, e) in self.intervals.iter().chain(std::iter::once(&live)) {
                    let (s, e) = (s.max(from), e.min(to));
                    if e > s {
                        out[c as usize] += e - s;
                    }
                }
                out
            }

            /// Transitions on `[from, to)` matching `f`.
            fn count(&self, from: u64, to: u64, f: impl Fn(&Transition) -> bool) -> u32 {
                let n = self
                    .transitions
                    .iter()
                    .filter(|t| t.at_ms >= from && t.at_ms < to && f(t))
                    .count();
                u32::try_from(n).unwrap()
            }

            fn check_counts(
                &self,
                c: &DailyCounters,
                from: u64,
                to: u64,
            ) -> Result<(), TestCaseError> {
                use AgentState as S;
                prop_assert_eq!(
                    c.sign_in_count,
                    self.count(from, to, |t| t.from == S::SignedOut)
                );
                prop_assert_eq!(
                    c.sign_out_count,
                    self.count(from, to, |t| t.to == S::SignedOut)
                );
                prop_assert_eq!(c.idle_count, self.count(from, to, |t| t.to == S::Idle));
                prop_assert_eq!(
                    c.acw_count,
                    self.count(from, to, |t| matches!(t.to, S::AfterCallWork { .. }))
                );
                let calls = [c.inbound, c.outbound, c.unknown_direction];
                let offered: u32 = calls.iter().map(|s| s.offered).sum();
                let answered: u32 = calls.iter().map(|s| s.answered).sum();
                let missed: u32 = calls.iter().map(|s| s.not_answered).sum();
                prop_assert_eq!(offered, self.count(from, to, |t| t.to == S::Reserved));
                prop_assert_eq!(
                    answered,
                    self.count(from, to, |t| t.from == S::Reserved && t.to == S::Talking)
                );
                prop_assert_eq!(
                    missed,
                    self.count(from, to, |t| t.from == S::Reserved && t.to != S::Talking)
                );
                let not_ready_entries =
                    self.count(from, to, |t| matches!(t.to, S::NotReady { .. }));
                prop_assert!(c.busy_count <= not_ready_entries);
                Ok(())
            }
        }

        fn input() -> impl Strategy<Value = (I, Option<CallDirection>)> {
            let id = prop_oneof![Just("a"), Just("b")].prop_map(call);
            let dir = prop_oneof![
                4 => Just(Some(CallDirection::Inbound)),
                2 => Just(Some(CallDirection::Outbound)),
                1 => Just(None),
            ];
            prop_oneof![
                Just((I::RegistrationUp, None)),
                Just((I::RegistrationDown, None)),
                Just((I::SignIn, None)),
                Just((I::SignOut, None)),
                Just((I::SetIdle, None)),
                Just((I::SetIdle, None)),
                (0u16..6).prop_map(|r| (
                    I::SetBusy {
                        reason: NotReadyReason(r)
                    },
                    None
                )),
                (0u8..2, proptest::option::of(1u64..2 * HOUR)).prop_map(|(r, d)| {
                    (
                        I::StartRest {
                            reason: RestReason(r),
                            duration_ms: d,
                        },
                        None,
                    )
                }),
                Just((I::EndRest, None)),
                (id.clone(), dir.clone()).prop_map(|(call_id, d)| (I::CallOffered { call_id }, d)),
                (id.clone(), dir).prop_map(|(call_id, d)| (I::CallOffered { call_id }, d)),
                id.clone()
                    .prop_map(|call_id| (I::CallAnswered { call_id }, None)),
                id.clone()
                    .prop_map(|call_id| (I::CallAnswered { call_id }, None)),
                Just((I::CallHeld, None)),
                Just((I::CallResumed, None)),
                id.prop_map(|call_id| (I::CallEnded { call_id }, None)),
                Just((I::Tick, None)),
            ]
        }

        fn step_ms() -> impl Strategy<Value = u64> {
            prop_oneof![
                8 => 0u64..40_000,
                4 => 0u64..30 * MIN,
                3 => 0u64..6 * HOUR,
                1 => 0u64..3 * 24 * HOUR,
            ]
        }

        /// What happens besides the input at a step.
        #[derive(Debug, Clone, Copy)]
        enum Extra {
            None,
            RollOver,
            Restart,
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(384))]
            #[test]
            fn counters_follow_a_real_machine_across_days(
                zone in 0usize..3,
                base in 0usize..3,
                offset in 0u64..3 * 24 * HOUR,
                acw_ms in prop_oneof![Just(0u64), 1u64..5 * MIN],
                idle_after_rest in any::<bool>(),
                fresh_default in any::<bool>(),
                steps in proptest::collection::vec(
                    (input(), step_ms(), prop_oneof![
                        6 => Just(Extra::None),
                        2 => Just(Extra::RollOver),
                        1 => Just(Extra::Restart),
                    ]),
                    1..150,
                ),
            ) {
                let clock = clock(ZONES[zone]);
                let bases = [
                    ms("2024-03-08T12:00:00Z"),
                    ms("2024-10-31T12:00:00Z"),
                    ms("2015-10-15T12:00:00Z"),
                ];
                let start = bases[base] + offset;
                let mut m = AgentMachine::new(AgentConfig { acw_ms, idle_after_rest }, start);
                let mut c = if fresh_default {
                    DailyCounters::default()
                } else {
                    DailyCounters::new(start, &clock)
                };
                let mut oracle = Oracle::default();
                let mut dirs: HashMap<CallId, Option<CallDirection>> = HashMap::new();
                let mut prev: Option<CounterSnapshot> = None;
                let mut now = start;

                // A finished day must match the model over its whole length.
                let check_finished = |done: &DailyCounters,
                                      oracle: &Oracle,
                                      live: (&AgentState, u64, u64)|
                 -> Result<(), TestCaseError> {
                    let ds = done.day_start_ms;
                    let de = clock.next_midnight_ms(ds);
                    prop_assert_eq!(clock.day_of(ds), done.day);
                    prop_assert_eq!(accounted(done), oracle.time(live, ds, de), "day {}", done.day);
                    let total: u64 = accounted(done).iter().sum();
                    if ds >= start {
                        prop_assert_eq!(total, de - ds, "a full day is fully accounted");
                    } else {
                        prop_assert_eq!(total, de - start);
                    }
                    oracle.check_counts(done, ds, de)?;
                    let t = done.totals();
                    prop_assert!(t.answer_count20 <= t.sum_answer_count);
                    Ok(())
                };

                for ((input, dir), dt, extra) in steps {
                    now += dt;
                    match extra {
                        Extra::None => {}
                        Extra::RollOver => {
                            let live = (m.state(), m.since_ms(), now);
                            if let Some(done) = c.roll_over(now, LiveState::from(&m), &clock) {
                                check_finished(&done, &oracle, live)?;
                                prop_assert!(done.day < c.day());
                            }
                            prop_assert_eq!(c.day(), clock.day_of(now));
                        }
                        Extra::Restart => {
                            let json = serde_json::to_string(&c).unwrap();
                            let back: DailyCounters = serde_json::from_str(&json).unwrap();
                            prop_assert_eq!(&back, &c);
                            c = back;
                        }
                    }
                    if let I::CallOffered { call_id } = &input {
                        dirs.insert(call_id.clone(), dir);
                    }
                    if let Ok(Some(t)) = m.handle(input, now) {
                        oracle.intervals.push((cat(&t.from), t.from_since_ms, t.at_ms));
                        oracle.transitions.push(t.clone());
                        let d = t.call_id.as_ref().and_then(|id| dirs.get(id).copied().flatten());
                        if let Some(done) = c.on_transition(&t, d, &clock) {
                            // The interval just closed is in the oracle; nothing is live.
                            check_finished(&done, &oracle, (m.state(), now, now))?;
                        }
                    }

                    // Today, live.
                    let live = LiveState::from(&m);
                    let s = c.snapshot(now, live, &clock);
                    let (closed, cnow) = c.closed_at(now, live, &clock);
                    prop_assert_eq!(cnow, now);
                    prop_assert_eq!(s.day, clock.day_of(now));
                    let ds = closed.day_start_ms;
                    let de = clock.next_midnight_ms(ds);
                    prop_assert!(ds <= now && now < de);
                    prop_assert_eq!(accounted(&closed), oracle.time((m.state(), m.since_ms(), now), ds, de));
                    oracle.check_counts(&closed, ds, de)?;

                    let elapsed = now - ds.max(start);
                    let total: u64 = accounted(&closed).iter().sum();
                    prop_assert_eq!(total, elapsed);
                    let signed = s.today_sign_in_sec + s.today_sign_out_sec;
                    prop_assert!(signed <= elapsed / 1_000 && signed + 1 >= elapsed / 1_000);
                    prop_assert!(s.answer_count20 <= s.sum_answer_count);
                    prop_assert!(s.sum_answer_count + s.call_out_count <= s.total_answer_count);
                    prop_assert!(s.today_sign_out_sec_since_first_sign_in <= s.today_sign_out_sec);
                    prop_assert!(s.today_busy_sec <= s.today_not_ready_sec);
                    prop_assert!(s.hold_sec <= s.total_talk_sec);
                    prop_assert!(s.today_cur_state_sec <= s.cur_state_sec);
                    prop_assert!(s.today_cur_state_sec <= elapsed / 1_000);
                    if *m.state() != AgentState::SignedOut {
                        prop_assert!(s.cur_sign_in_sec >= s.cur_state_sec);
                    } else {
                        prop_assert_eq!(s.cur_sign_in_sec, 0);
                    }
                    let day_sec = (de - ds) / 1_000;
                    for v in [
                        s.sum_answer_sec, s.ring_sec, s.call_out_sec, s.total_talk_sec, s.hold_sec,
                        s.today_sign_in_sec, s.today_sign_out_sec, s.today_busy_sec,
                        s.today_not_ready_sec, s.today_delay_sec, s.today_idle_sec,
                        s.today_rest_sec, s.today_cur_state_sec,
                    ] {
                        prop_assert!(v <= day_sec, "{} > a day in {:?}", v, s);
                    }

                    // Within a day nothing goes down (except the current-state figures).
                    if let Some(p) = prev.filter(|p| p.day == s.day) {
                        let counts = |x: &CounterSnapshot| [
                            x.sum_answer_count, x.answer_count20, x.ring_count, x.no_answer_count,
                            x.call_out_count, x.call_out_attempt_count, x.call_out_no_answer_count,
                            x.total_answer_count, x.hold_count, x.today_sign_in_count,
                            x.today_sign_out_count, x.today_busy_count, x.today_not_ready_count,
                            x.today_delay_count, x.today_idle_count, x.today_rest_count,
                        ];
                        let times = |x: &CounterSnapshot| [
                            x.sum_answer_sec, x.ring_sec, x.call_out_sec, x.total_talk_sec,
                            x.hold_sec, x.today_sign_in_sec, x.today_sign_out_sec,
                            x.today_sign_out_sec_since_first_sign_in, x.today_busy_sec,
                            x.today_not_ready_sec, x.today_delay_sec, x.today_idle_sec,
                            x.today_rest_sec,
                        ];
                        for (a, b) in counts(&p).iter().zip(counts(&s).iter()) {
                            prop_assert!(a <= b, "a count went down: {:?} -> {:?}", p, s);
                        }
                        for (a, b) in times(&p).iter().zip(times(&s).iter()) {
                            prop_assert!(a <= b, "a time went down: {:?} -> {:?}", p, s);
                        }
                    }
                    prev = Some(s);
                }
            }
        }
    }
}
