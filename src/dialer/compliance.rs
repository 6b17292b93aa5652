//! The per-attempt compliance log: one row per outbound attempt, written once when the
//! attempt ends, never changed or deleted (SQLite triggers refuse both), so that the abandon
//! rate a regulator asks for can be recomputed from raw records after any restart
//! (predictive-dialing.md §3.3: Genesys OCS counters resetting on restart is the known
//! pitfall).
//!
//! The abandon rate follows the US definition (§4.3): abandoned live answers over all live
//! answers, where "abandoned" is decided from timestamps (not bridged to an agent within the
//! threshold), per campaign, over a rolling 30-day window (US) and 24 hours (UK).

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::StoreError;

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// A person answered and was bridged to an agent within the threshold.
    Connected,
    /// A person answered and was not bridged within the threshold (dropped by the system,
    /// or hung up while waiting): an abandoned call.
    Abandoned,
    /// Rang until the ring timeout.
    NoAnswer,
    Busy,
    /// Special information tone, unallocated number, network failure.
    Failed,
    /// Answered by a machine (detected, or identified by the agent).
    Machine,
    /// Never dialled: on the blacklist or outside the calling window.
    Suppressed,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 7] = [
        AttemptOutcome::Connected,
        AttemptOutcome::Abandoned,
        AttemptOutcome::NoAnswer,
        AttemptOutcome::Busy,
        AttemptOutcome::Failed,
        AttemptOutcome::Machine,
        AttemptOutcome::Suppressed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Connected => "connected",
            AttemptOutcome::Abandoned => "abandoned",
            AttemptOutcome::NoAnswer => "no_answer",
            AttemptOutcome::Busy => "busy",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Machine => "machine",
            AttemptOutcome::Suppressed => "suppressed",
        }
    }

    pub fn parse(s: &str) -> Option<AttemptOutcome> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Whether a person answered: the abandon rate's denominator.
    pub fn is_live(self) -> bool {
        matches!(self, AttemptOutcome::Connected | AttemptOutcome::Abandoned)
    }

    /// Decides a live answer's outcome from its timestamps: bridged within `threshold_ms` of
    /// the answer is connected, anything else abandoned (the 2-second rule is computed, not
    /// trusted to a flag).
    pub fn of_live_answer(answered_ms: u64, bridged_ms: Option<u64>, threshold_ms: u64) -> Self {
        match bridged_ms {
            Some(b) if b >= answered_ms && b - answered_ms <= threshold_ms => {
                AttemptOutcome::Connected
            }
            _ => AttemptOutcome::Abandoned,
        }
    }
}

/// One attempt, as logged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    /// The campaign (seed 004 `callTaskCode`).
    pub campaign: String,
    pub number: String,
    /// The caller ID presented.
    pub caller_id: String,
    pub dialed_ms: u64,
    pub answered_ms: Option<u64>,
    /// When the call was bridged to an agent.
    pub bridged_ms: Option<u64>,
    pub ended_ms: u64,
    pub outcome: AttemptOutcome,
    pub agent: Option<String>,
    /// The switch's call id, when there was a call.
    pub call_id: Option<String>,
    /// The pacing decision that launched it (policy, counted agents, calls in flight), for
    /// audits.
    pub pacing: Option<String>,
    /// Seed 004's `resultDetail` code (dialer/result.rs); `None` for attempts logged before
    /// migration 7.
    pub result_detail: Option<u8>,
    /// The task number (`task_numbers.id`) this attempt dialled.
    pub task_number_id: Option<i64>,
}

impl Attempt {
    /// An attempt that placed no call (a blacklisted number, or one whose call was lost to
    /// a restart): times are `now`, no caller ID, no answer; `note` says why.
    pub fn without_call(
        campaign: &str,
        number: &str,
        task_number_id: i64,
        outcome: AttemptOutcome,
        note: &str,
        now_ms: u64,
    ) -> Attempt {
        Attempt {
            campaign: campaign.to_owned(),
            number: number.to_owned(),
            caller_id: String::new(),
            dialed_ms: now_ms,
            answered_ms: None,
            bridged_ms: None,
            ended_ms: now_ms,
            outcome,
            agent: None,
            call_id: None,
            pacing: Some(note.to_owned()),
            result_detail: None,
            task_number_id: Some(task_number_id),
        }
    }
}

/// Live answers and abandons in a window, and their ratio.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AbandonStats {
    pub live: u64,
    pub abandoned: u64,
    /// abandoned / live; 0 with no live answer.
    pub rate: f64,
}

impl AbandonStats {
    pub fn new(live: u64, abandoned: u64) -> Self {
        AbandonStats {
            live,
            abandoned,
            rate: if live == 0 {
                0.0
            } else {
                abandoned as f64 / live as f64
            },
        }
    }
}

/// The rolling windows regulators use.
pub const WINDOW_30_DAYS_MS: u64 = 30 * 86_400_000;
pub const WINDOW_24_HOURS_MS: u64 = 86_400_000;

/// The log's table (created by migration 6).
pub struct ComplianceLog<'a> {
    conn: &'a Connection,
}

impl<'a> ComplianceLog<'a> {
    pub fn new(conn: &'a Connection) -> Self {
        ComplianceLog { conn }
    }

    /// Appends one attempt; the caller commits (inside the transaction that records the
    /// attempt's result elsewhere, when there is one). Returns the row id.
    pub fn append(&self, a: &Attempt) -> Result<i64, StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO dial_attempts (campaign, number, caller_id, dialed_ms, answered_ms, bridged_ms, ended_ms, outcome, live, agent, call_id, pacing, result_detail, task_number_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params![
                a.campaign,
                a.number,
                a.caller_id,
                a.dialed_ms as i64,
                a.answered_ms.map(|v| v as i64),
                a.bridged_ms.map(|v| v as i64),
                a.ended_ms as i64,
                a.outcome.as_str(),
                a.outcome.is_live(),
                a.agent,
                a.call_id,
                a.pacing,
                a.result_detail,
                a.task_number_id,
            ])?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Abandon statistics of a campaign for attempts that ended in `[now - window, now]`.
    pub fn abandon_stats(
        &self,
        campaign: &str,
        now_ms: u64,
        window_ms: u64,
    ) -> Result<AbandonStats, StoreError> {
        let since = now_ms.saturating_sub(window_ms) as i64;
        let (live, abandoned): (i64, i64) = self.conn.query_row(
            "SELECT COALESCE(SUM(live), 0), COALESCE(SUM(outcome = 'abandoned'), 0) FROM dial_attempts \
             WHERE campaign = ?1 AND ended_ms >= ?2 AND ended_ms <= ?3",
            params![campaign, since, now_ms as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(AbandonStats::new(
            live.max(0) as u64,
            abandoned.max(0) as u64,
        ))
    }

    /// The campaigns with attempts in the window, for metrics.
    pub fn campaigns(&self, now_ms: u64, window_ms: u64) -> Result<Vec<String>, StoreError> {
        let since = now_ms.saturating_sub(window_ms) as i64;
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT campaign FROM dial_attempts WHERE ended_ms >= ?1 ORDER BY campaign",
        )?;
        let rows = stmt.query_map([since], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Attempts of a campaign in id order after `after` (for export and audits).
    pub fn attempts(
        &self,
        campaign: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Attempt)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, campaign, number, caller_id, dialed_ms, answered_ms, bridged_ms, ended_ms, outcome, agent, call_id, pacing, result_detail, task_number_id \
             FROM dial_attempts WHERE campaign = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![campaign, after, limit as i64], |r| {
            let outcome: String = r.get(8)?;
            Ok((
                r.get::<_, i64>(0)?,
                Attempt {
                    campaign: r.get(1)?,
                    number: r.get(2)?,
                    caller_id: r.get(3)?,
                    dialed_ms: r.get::<_, i64>(4)?.max(0) as u64,
                    answered_ms: r.get::<_, Option<i64>>(5)?.map(|v| v.max(0) as u64),
                    bridged_ms: r.get::<_, Option<i64>>(6)?.map(|v| v.max(0) as u64),
                    ended_ms: r.get::<_, i64>(7)?.max(0) as u64,
                    outcome: AttemptOutcome::parse(&outcome).unwrap_or(AttemptOutcome::Failed),
                    agent: r.get(9)?,
                    call_id: r.get(10)?,
                    pacing: r.get(11)?,
                    result_detail: r.get(12)?,
                    task_number_id: r.get(13)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The last attempt's end time for a number in a campaign (for recall rules and the UK
    /// 72-hour lockout of abandoned numbers).
    pub fn last_abandoned(&self, campaign: &str, number: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT MAX(ended_ms) FROM dial_attempts WHERE campaign = ?1 AND number = ?2 AND outcome = 'abandoned'",
                params![campaign, number],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?
            .flatten()
            .map(|v| v.max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, Store};

    fn open() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        Store::open(&path, Durability::Full).unwrap();
        (dir, path)
    }

    fn attempt(campaign: &str, ended_ms: u64, outcome: AttemptOutcome) -> Attempt {
        Attempt {
            campaign: campaign.into(),
            number: "13900000000".into(),
            caller_id: "95598".into(),
            dialed_ms: ended_ms.saturating_sub(30_000),
            answered_ms: outcome.is_live().then_some(ended_ms.saturating_sub(20_000)),
            bridged_ms: (outcome == AttemptOutcome::Connected)
                .then_some(ended_ms.saturating_sub(19_000)),
            ended_ms,
            outcome,
            agent: None,
            call_id: None,
            pacing: Some("predictive n=2 ready=3".into()),
            result_detail: None,
            task_number_id: None,
        }
    }

    #[test]
    fn the_two_second_rule_is_computed_from_timestamps() {
        use AttemptOutcome::*;
        assert_eq!(
            AttemptOutcome::of_live_answer(1_000, Some(3_000), 2_000),
            Connected
        );
        assert_eq!(
            AttemptOutcome::of_live_answer(1_000, Some(3_001), 2_000),
            Abandoned
        );
        assert_eq!(
            AttemptOutcome::of_live_answer(1_000, None, 2_000),
            Abandoned
        );
        // A bridge stamped before the answer (clock skew) is not trusted.
        assert_eq!(
            AttemptOutcome::of_live_answer(1_000, Some(999), 2_000),
            Abandoned
        );
    }

    #[test]
    fn rolling_windows_per_campaign_survive_a_reopen() {
        let (_d, path) = open();
        let day = 86_400_000u64;
        let now = 100 * day;
        {
            let store = Store::open(&path, Durability::Full).unwrap();
            let log = ComplianceLog::new(store.connection());
            // 40 days ago: outside both windows.
            log.append(&attempt("T1", now - 40 * day, AttemptOutcome::Abandoned))
                .unwrap();
            // 10 days ago: inside 30 days only.
            for _ in 0..3 {
                log.append(&attempt("T1", now - 10 * day, AttemptOutcome::Abandoned))
                    .unwrap();
            }
            for _ in 0..47 {
                log.append(&attempt("T1", now - 10 * day, AttemptOutcome::Connected))
                    .unwrap();
            }
            // Today.
            log.append(&attempt("T1", now - 1000, AttemptOutcome::Abandoned))
                .unwrap();
            for _ in 0..9 {
                log.append(&attempt("T1", now - 1000, AttemptOutcome::Connected))
                    .unwrap();
            }
            for _ in 0..100 {
                log.append(&attempt("T1", now - 1000, AttemptOutcome::NoAnswer))
                    .unwrap();
            }
            log.append(&attempt("T2", now - 1000, AttemptOutcome::Abandoned))
                .unwrap();
        }
        let store = Store::open(&path, Durability::Full).unwrap();
        let log = ComplianceLog::new(store.connection());
        let month = log.abandon_stats("T1", now, WINDOW_30_DAYS_MS).unwrap();
        assert_eq!((month.live, month.abandoned), (60, 4));
        assert!((month.rate - 4.0 / 60.0).abs() < 1e-12);
        let day_stats = log.abandon_stats("T1", now, WINDOW_24_HOURS_MS).unwrap();
        assert_eq!((day_stats.live, day_stats.abandoned), (10, 1));
        assert_eq!(
            log.abandon_stats("T9", now, WINDOW_24_HOURS_MS)
                .unwrap()
                .rate,
            0.0
        );
        assert_eq!(
            log.campaigns(now, WINDOW_24_HOURS_MS).unwrap(),
            vec!["T1", "T2"]
        );
        assert_eq!(
            log.last_abandoned("T1", "13900000000").unwrap(),
            Some(now - 1000)
        );
        let page = log.attempts("T1", 0, 5).unwrap();
        assert_eq!(page.len(), 5);
        assert_eq!(
            page[0].1,
            attempt("T1", now - 40 * day, AttemptOutcome::Abandoned)
        );
    }

    #[test]
    fn rows_can_be_neither_changed_nor_deleted() {
        let (_d, path) = open();
        let store = Store::open(&path, Durability::Full).unwrap();
        let log = ComplianceLog::new(store.connection());
        let id = log
            .append(&attempt("T1", 5_000_000, AttemptOutcome::Abandoned))
            .unwrap();
        let conn = store.connection();
        let upd = conn.execute(
            "UPDATE dial_attempts SET outcome = 'connected' WHERE id = ?1",
            [id],
        );
        assert!(upd.is_err(), "update allowed");
        assert!(
            conn.execute("DELETE FROM dial_attempts", []).is_err(),
            "delete allowed"
        );
        let s = log
            .abandon_stats("T1", 5_000_000, WINDOW_24_HOURS_MS)
            .unwrap();
        assert_eq!((s.live, s.abandoned), (1, 1));
    }

    #[test]
    fn outcomes_round_trip() {
        for o in AttemptOutcome::ALL {
            assert_eq!(AttemptOutcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(AttemptOutcome::parse("nope"), None);
    }
}
