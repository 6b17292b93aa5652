//! The calls waiting in mod_callcenter queues right now, for the grid's 查询通话排队列表
//! (000:L941-L978). Sans-IO: fed `member-queue-start` / `member-queue-end` (and the other
//! signs that a member left: its agent answered, its channel hung up, a resync no longer lists
//! it) with times as arguments; read as a snapshot.
//!
//! Architecture invariants: bounded (a full board refuses new entries and says so, it never
//! grows); a member is keyed by its session uuid, so a repeated start is not a second call and an
//! end for an unknown member changes nothing.

use std::collections::{HashMap, HashSet};

/// One queued call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedCall {
    /// The member's (caller's) channel uuid, `CC-Member-Session-UUID`.
    pub member_session: String,
    /// mod_callcenter's queue name, e.g. `support@default`.
    pub queue: String,
    pub caller: String,
    pub callee: String,
    /// When the member joined the queue (Unix ms).
    pub joined_ms: u64,
}

/// What an input did to the board (for metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoardChange {
    Added,
    /// A start for a member already queued in the same queue: nothing changed.
    Duplicate,
    /// A start for a member queued elsewhere: it moved (its waiting time keeps counting from
    /// the first join, which is what the caller experiences).
    Moved,
    Removed,
    /// An end (or another sign of leaving) for a member the board does not hold.
    Unknown,
    /// The board is full; the new member is not listed.
    Full,
}

impl BoardChange {
    pub fn label(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Duplicate => "duplicate",
            Self::Moved => "moved",
            Self::Removed => "removed",
            Self::Unknown => "unknown",
            Self::Full => "full",
        }
    }
}

/// Longest value kept for a queue name, a number or a session uuid: anything longer from the
/// switch is cut (at a character boundary), so one event cannot pin large strings.
pub const MAX_FIELD: usize = 128;

fn cut(s: &str) -> String {
    crate::text::truncate(s.trim(), MAX_FIELD).to_owned()
}

#[derive(Debug)]
pub struct QueueBoard {
    calls: HashMap<String, QueuedCall>,
    max: usize,
}

impl QueueBoard {
    pub fn new(max: usize) -> Self {
        Self {
            calls: HashMap::new(),
            max: max.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// `member-queue-start`.
    pub fn member_joined(
        &mut self,
        member_session: &str,
        queue: &str,
        caller: &str,
        callee: &str,
        joined_ms: u64,
    ) -> BoardChange {
        let key = cut(member_session);
        if key.is_empty() {
            return BoardChange::Unknown;
        }
        if let Some(c) = self.calls.get_mut(&key) {
            let queue = cut(queue);
            if c.queue == queue {
                return BoardChange::Duplicate;
            }
            c.queue = queue;
            return BoardChange::Moved;
        }
        if self.calls.len() >= self.max {
            return BoardChange::Full;
        }
        self.calls.insert(
            key.clone(),
            QueuedCall {
                member_session: key,
                queue: cut(queue),
                caller: cut(caller),
                callee: cut(callee),
                joined_ms,
            },
        );
        BoardChange::Added
    }

    /// `member-queue-end`, a `bridge-agent-start` for the member, or its channel's hang-up.
    pub fn member_left(&mut self, member_session: &str) -> BoardChange {
        match self.calls.remove(member_session.trim()) {
            Some(_) => BoardChange::Removed,
            None => BoardChange::Unknown,
        }
    }

    /// After an event-socket (re)connect: members whose channel no longer exists left while we
    /// were not listening. Returns how many were dropped.
    pub fn retain_live(&mut self, live_channels: &HashSet<String>) -> usize {
        let before = self.calls.len();
        self.calls.retain(|k, _| live_channels.contains(k));
        before - self.calls.len()
    }

    /// Every queued call, longest waiting first (ties by session, so the order is stable
    /// across pages).
    pub fn snapshot(&self) -> Vec<QueuedCall> {
        let mut v: Vec<QueuedCall> = self.calls.values().cloned().collect();
        v.sort_by(|a, b| {
            a.joined_ms
                .cmp(&b.joined_ms)
                .then_with(|| a.member_session.cmp(&b.member_session))
        });
        v
    }
}

/// The board shared between its writer (the FreeSWITCH adapter) and its reader (the grid's
/// queue query), with its metrics kept in step: `gridedge_grid_queue_calls` (gauge) and
/// `gridedge_grid_queue_events_total{change}`. Still no I/O and no clock.
pub struct SharedQueueBoard {
    board: std::sync::Mutex<QueueBoard>,
    calls: prometheus::IntGauge,
    changes: prometheus::IntCounterVec,
}

impl SharedQueueBoard {
    /// Registers its metrics in `registry` (once per registry).
    pub fn new(max: usize, registry: &prometheus::Registry) -> Self {
        let calls = prometheus::IntGauge::new(
            "gridedge_grid_queue_calls",
            "Calls waiting in mod_callcenter queues, as the grid's queue list reports them.",
        )
        .expect("valid metric definition");
        let changes = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "gridedge_grid_queue_events_total",
                "Queue-board inputs by effect (added, duplicate, moved, removed, unknown, full).",
            ),
            &["change"],
        )
        .expect("valid metric definition");
        // A second board on the same registry (tests) keeps working, unregistered.
        let _ = registry.register(Box::new(calls.clone()));
        let _ = registry.register(Box::new(changes.clone()));
        Self {
            board: std::sync::Mutex::new(QueueBoard::new(max)),
            calls,
            changes,
        }
    }

    /// Runs `f` on the board and updates the metrics with what it did.
    pub fn update(&self, f: impl FnOnce(&mut QueueBoard) -> BoardChange) -> BoardChange {
        let mut b = self.board.lock().unwrap_or_else(|e| e.into_inner());
        let change = f(&mut b);
        self.calls.set(b.len() as i64);
        drop(b);
        self.changes.with_label_values(&[change.label()]).inc();
        change
    }

    /// A channel hung up: if it was a queued member, it left (counted as removed); any other
    /// channel is not counted, since most hang-ups are not queue members.
    pub fn channel_gone(&self, uuid: &str) {
        let mut b = self.board.lock().unwrap_or_else(|e| e.into_inner());
        if b.member_left(uuid) == BoardChange::Removed {
            self.calls.set(b.len() as i64);
            drop(b);
            self.changes
                .with_label_values(&[BoardChange::Removed.label()])
                .inc();
        }
    }

    /// After a resync; see [`QueueBoard::retain_live`].
    pub fn retain_live(&self, live_channels: &HashSet<String>) -> usize {
        let mut b = self.board.lock().unwrap_or_else(|e| e.into_inner());
        let n = b.retain_live(live_channels);
        self.calls.set(b.len() as i64);
        n
    }

    pub fn snapshot(&self) -> Vec<QueuedCall> {
        self.board
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn start_end_duplicate_moved_unknown() {
        let mut b = QueueBoard::new(10);
        assert_eq!(
            b.member_joined("s1", "support@default", "139", "95598", 1000),
            BoardChange::Added
        );
        assert_eq!(
            b.member_joined("s1", "support@default", "139", "95598", 2000),
            BoardChange::Duplicate
        );
        assert_eq!(b.snapshot()[0].joined_ms, 1000);
        assert_eq!(
            b.member_joined("s1", "sales@default", "139", "95598", 3000),
            BoardChange::Moved
        );
        assert_eq!(b.snapshot()[0].queue, "sales@default");
        assert_eq!(b.snapshot()[0].joined_ms, 1000);
        assert_eq!(b.member_left("nope"), BoardChange::Unknown);
        assert_eq!(b.len(), 1);
        assert_eq!(b.member_left(" s1 "), BoardChange::Removed);
        assert_eq!(b.member_left("s1"), BoardChange::Unknown);
        assert!(b.is_empty());
        assert_eq!(
            b.member_joined("  ", "q", "1", "2", 0),
            BoardChange::Unknown
        );
    }

    #[test]
    fn bounded_and_ordered() {
        let mut b = QueueBoard::new(2);
        assert_eq!(b.member_joined("b", "q", "1", "2", 50), BoardChange::Added);
        assert_eq!(b.member_joined("a", "q", "1", "2", 50), BoardChange::Added);
        assert_eq!(b.member_joined("c", "q", "1", "2", 10), BoardChange::Full);
        let order: Vec<String> = b.snapshot().into_iter().map(|c| c.member_session).collect();
        assert_eq!(order, ["a", "b"]);
        let long = "x".repeat(1000) + "é";
        assert_eq!(b.member_left("a"), BoardChange::Removed);
        assert_eq!(
            b.member_joined(&long, &long, &long, &long, 1),
            BoardChange::Added
        );
        assert!(b.snapshot().iter().all(|c| c.queue.len() <= MAX_FIELD));
    }

    #[test]
    fn resync_drops_members_whose_channel_is_gone() {
        let mut b = QueueBoard::new(10);
        b.member_joined("a", "q", "1", "2", 1);
        b.member_joined("b", "q", "1", "2", 2);
        let live: HashSet<String> = ["b".to_owned(), "zzz".to_owned()].into();
        assert_eq!(b.retain_live(&live), 1);
        assert_eq!(b.snapshot()[0].member_session, "b");
    }

    proptest! {
        /// Whatever the sequence, the board never exceeds its bound and holds exactly the
        /// members that joined and did not leave since (up to the bound).
        #[test]
        fn model(ops in proptest::collection::vec((any::<bool>(), 0u8..8), 0..200)) {
            let mut b = QueueBoard::new(5);
            let mut model: HashSet<String> = HashSet::new();
            for (join, id) in ops {
                let id = format!("s{id}");
                if join {
                    let r = b.member_joined(&id, "q", "1", "2", 0);
                    if model.contains(&id) {
                        prop_assert_eq!(r, BoardChange::Duplicate);
                    } else if model.len() >= 5 {
                        prop_assert_eq!(r, BoardChange::Full);
                    } else {
                        prop_assert_eq!(r, BoardChange::Added);
                        model.insert(id);
                    }
                } else {
                    let r = b.member_left(&id);
                    prop_assert_eq!(r == BoardChange::Removed, model.remove(&id));
                }
                prop_assert!(b.len() <= 5);
                prop_assert_eq!(b.len(), model.len());
            }
        }
    }
}
