//! The campaign runtime's SQLite tables (migration 7): gateways, call lists, the blacklist,
//! call tasks and each task's numbers, next to the compliance log (`dial_attempts`).
//!
//! A task's numbers are copied from its call list when the task is submitted (or appended,
//! callTaskAdditional), so a list can be imported into again without changing running tasks.
//! A number moves `pending → in_flight → done` (or back to `pending` with a later
//! `next_at_ms` when a retry rule applies); a preview task hands numbers out instead.
//! Finishing an attempt appends the compliance row and moves the number in one transaction,
//! so a crash never leaves a logged attempt whose number would be dialled again, nor the
//! reverse.

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::compliance::{Attempt, ComplianceLog};
use super::gateway::Gateway;
use super::numbers::PhoneNumber;
use super::task::{TaskSpec, TaskStatus};
use crate::store::{Durability, Store, StoreError};

/// A task number's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberState {
    Pending = 0,
    InFlight = 1,
    Done = 2,
    /// Given to a preview agent (getCallList).
    HandedOut = 3,
}

/// A number due for dialling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueNumber {
    pub id: i64,
    /// What to dial (an add-zero retry has the leading 0).
    pub number: String,
    /// The number as imported (the blacklist is checked against both).
    pub original: String,
    pub retries: u32,
}

/// A stored task.
#[derive(Debug, Clone)]
pub struct StoredTask {
    pub spec: TaskSpec,
    pub status: TaskStatus,
}

/// callLog getList's filters and page.
#[derive(Debug, Clone, Copy)]
pub struct LogQuery<'a> {
    pub project: Option<&'a str>,
    pub task: Option<&'a str>,
    /// Filter and order on the end time (`queryTimeType` 2) instead of the start time.
    pub by_end: bool,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub offset: u64,
    pub limit: u64,
}

/// One row of callLog getList.
#[derive(Debug, Clone)]
pub struct LogRow {
    pub id: i64,
    pub attempt: Attempt,
}

/// Whether an error is a UNIQUE/PRIMARY KEY violation (answered 409 by the API).
pub fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
        if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

pub struct DialerStore {
    store: Store,
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl DialerStore {
    /// Opens the daemon's database (migrated by `Store::open` first).
    pub fn open(path: &std::path::Path) -> Result<DialerStore, StoreError> {
        Ok(DialerStore {
            store: Store::open(path, Durability::Full)?,
        })
    }

    pub fn connection(&self) -> &Connection {
        self.store.connection()
    }

    /// The grid's 保底号码 for an org (and skill group), set through the grid API.
    pub fn fallback_caller_id(
        &self,
        org_no: &str,
        service_id: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        self.store.fallback_caller_id(org_no, service_id)
    }

    // ---- gateways ------------------------------------------------------------------------

    /// Adds a gateway; an empty `gw_code` is assigned as `1000 + id`. Returns (id, code).
    pub fn add_gateway(&mut self, g: &Gateway) -> Result<(i64, String), StoreError> {
        let tx = self.store.connection_mut().transaction()?;
        let next: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM gateways", [], |r| {
            r.get(0)
        })?;
        let mut g = g.clone();
        if g.gw_code.is_empty() {
            // `1000 + id`, or the next free code after it when an operator chose that one.
            let mut n = 1000 + next;
            while tx
                .query_row(
                    "SELECT 1 FROM gateways WHERE gw_code = ?1",
                    [n.to_string()],
                    |_| Ok(()),
                )
                .optional()?
                .is_some()
            {
                n += 1;
            }
            g.gw_code = n.to_string();
        }
        g.id = next;
        tx.execute(
            "INSERT INTO gateways (id, gw_code, status, concurrency, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                next,
                g.gw_code,
                g.enabled,
                g.concurrency,
                serde_json::to_string(&g).unwrap_or_default()
            ],
        )?;
        tx.commit()?;
        Ok((next, g.gw_code))
    }

    /// Replaces a gateway; `Ok(false)` when the id is unknown.
    pub fn update_gateway(&mut self, g: &Gateway) -> Result<bool, StoreError> {
        let n = self.store.connection().execute(
            "UPDATE gateways SET status = ?2, concurrency = ?3, body = ?4 WHERE id = ?1",
            params![
                g.id,
                g.enabled,
                g.concurrency,
                serde_json::to_string(g).unwrap_or_default()
            ],
        )?;
        Ok(n == 1)
    }

    pub fn gateway(&self, id: i64) -> Result<Option<Gateway>, StoreError> {
        let body: Option<String> = self
            .store
            .connection()
            .query_row("SELECT body FROM gateways WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(body.and_then(|b| serde_json::from_str(&b).ok()))
    }

    pub fn gateways(&self) -> Result<Vec<Gateway>, StoreError> {
        let mut stmt = self
            .store
            .connection()
            .prepare("SELECT body FROM gateways ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for b in rows {
            match serde_json::from_str(&b?) {
                Ok(g) => out.push(g),
                Err(e) => tracing::error!(error = %e, "unreadable gateway row skipped"),
            }
        }
        Ok(out)
    }

    // ---- call lists and the blacklist ----------------------------------------------------

    /// Numbers a list already holds.
    pub fn list_numbers(&self, list: &str) -> Result<HashSet<PhoneNumber>, StoreError> {
        let mut stmt = self
            .store
            .connection()
            .prepare_cached("SELECT number FROM call_list_entries WHERE list_id = ?1")?;
        let rows = stmt.query_map([list], |r| r.get::<_, String>(0))?;
        let mut out = HashSet::new();
        for n in rows {
            if let Ok(p) = super::numbers::normalize(&n?) {
                out.insert(p);
            }
        }
        Ok(out)
    }

    /// Numbers a task already holds.
    pub fn task_number_set(&self, task: &str) -> Result<HashSet<PhoneNumber>, StoreError> {
        let mut stmt = self
            .store
            .connection()
            .prepare_cached("SELECT number FROM task_numbers WHERE task_code = ?1")?;
        let rows = stmt.query_map([task], |r| r.get::<_, String>(0))?;
        let mut out = HashSet::new();
        for n in rows {
            if let Ok(p) = super::numbers::normalize(&n?) {
                out.insert(p);
            }
        }
        Ok(out)
    }

    /// Appends numbers to a list in one transaction; returns the list's last entry id.
    pub fn append_list(
        &mut self,
        list: &str,
        numbers: &[PhoneNumber],
        now_ms: u64,
    ) -> Result<i64, StoreError> {
        let tx = self.store.connection_mut().transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO call_list_entries (list_id, number, added_ms) VALUES (?1, ?2, ?3)",
            )?;
            for n in numbers {
                ins.execute(params![list, n.as_str(), ms(now_ms)])?;
            }
        }
        let last: i64 = tx.query_row(
            "SELECT COALESCE(MAX(id), 0) FROM call_list_entries WHERE list_id = ?1",
            [list],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok(last)
    }

    pub fn list_exists(&self, list: &str) -> Result<bool, StoreError> {
        Ok(self
            .store
            .connection()
            .query_row(
                "SELECT 1 FROM call_list_entries WHERE list_id = ?1 LIMIT 1",
                [list],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    pub fn blacklist_add(
        &mut self,
        numbers: &[PhoneNumber],
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        let tx = self.store.connection_mut().transaction()?;
        let mut added = 0;
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO blacklist (number, added_ms) VALUES (?1, ?2)",
            )?;
            for n in numbers {
                added += ins.execute(params![n.as_str(), ms(now_ms)])?;
            }
        }
        tx.commit()?;
        Ok(added)
    }

    pub fn blacklist_remove(&mut self, numbers: &[PhoneNumber]) -> Result<usize, StoreError> {
        let tx = self.store.connection_mut().transaction()?;
        let mut removed = 0;
        {
            let mut del = tx.prepare_cached("DELETE FROM blacklist WHERE number = ?1")?;
            for n in numbers {
                removed += del.execute([n.as_str()])?;
            }
        }
        tx.commit()?;
        Ok(removed)
    }

    pub fn blacklisted(&self, number: &str) -> Result<bool, StoreError> {
        Ok(self
            .store
            .connection()
            .prepare_cached("SELECT 1 FROM blacklist WHERE number = ?1")?
            .query_row([number], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn blacklist_page(
        &self,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let total: i64 =
            self.store
                .connection()
                .query_row("SELECT COUNT(*) FROM blacklist", [], |r| r.get(0))?;
        let mut stmt = self
            .store
            .connection()
            .prepare("SELECT number FROM blacklist ORDER BY number LIMIT ?1 OFFSET ?2")?;
        let rows = stmt.query_map(params![ms(limit), ms(offset)], |r| r.get(0))?;
        Ok((total.max(0) as u64, rows.collect::<Result<_, _>>()?))
    }

    // ---- tasks -----------------------------------------------------------------------------

    /// Creates a task and its numbers in one transaction; returns how many numbers it holds.
    /// `Err` with a unique violation when the code exists.
    pub fn create_task(
        &mut self,
        spec: &TaskSpec,
        numbers: &[(Option<i64>, String)],
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let tx = self.store.connection_mut().transaction()?;
        tx.execute(
            "INSERT INTO call_tasks (code, project_code, status, created_ms, updated_ms, body) VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
            params![
                spec.code.as_str(),
                spec.project,
                TaskStatus::Initialized.code(),
                ms(now_ms),
                serde_json::to_string(spec).unwrap_or_default()
            ],
        )?;
        insert_numbers(&tx, spec.code.as_str(), numbers)?;
        tx.commit()?;
        Ok(numbers.len() as u64)
    }

    /// Adds numbers to an existing task (callTaskAdditional).
    pub fn add_task_numbers(
        &mut self,
        task: &str,
        numbers: &[(Option<i64>, String)],
    ) -> Result<(), StoreError> {
        let tx = self.store.connection_mut().transaction()?;
        insert_numbers(&tx, task, numbers)?;
        tx.commit()?;
        Ok(())
    }

    /// Entries of a list with id > `after`, in id order.
    pub fn list_entries_after(
        &self,
        list: &str,
        after: i64,
    ) -> Result<Vec<(Option<i64>, String)>, StoreError> {
        let mut stmt = self.store.connection().prepare(
            "SELECT id, number FROM call_list_entries WHERE list_id = ?1 AND id > ?2 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![list, after], |r| {
            Ok((Some(r.get::<_, i64>(0)?), r.get::<_, String>(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The list entry ids a task already holds.
    pub fn task_entry_ids(&self, task: &str) -> Result<HashSet<i64>, StoreError> {
        let mut stmt = self.store.connection().prepare(
            "SELECT entry_id FROM task_numbers WHERE task_code = ?1 AND entry_id IS NOT NULL",
        )?;
        let rows = stmt.query_map([task], |r| r.get::<_, i64>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_task_status(
        &self,
        task: &str,
        status: TaskStatus,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.store.connection().execute(
            "UPDATE call_tasks SET status = ?2, updated_ms = ?3 WHERE code = ?1",
            params![task, status.code(), ms(now_ms)],
        )?;
        Ok(())
    }

    pub fn update_task_spec(&self, spec: &TaskSpec, now_ms: u64) -> Result<(), StoreError> {
        self.store.connection().execute(
            "UPDATE call_tasks SET body = ?2, updated_ms = ?3 WHERE code = ?1",
            params![
                spec.code.as_str(),
                serde_json::to_string(spec).unwrap_or_default(),
                ms(now_ms)
            ],
        )?;
        Ok(())
    }

    pub fn tasks(&self) -> Result<Vec<StoredTask>, StoreError> {
        let mut stmt = self
            .store
            .connection()
            .prepare("SELECT status, body FROM call_tasks ORDER BY created_ms, code")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (status, body) = row?;
            match (
                TaskStatus::from_code(status),
                serde_json::from_str::<TaskSpec>(&body),
            ) {
                (Some(status), Ok(spec)) => out.push(StoredTask { spec, status }),
                _ => tracing::error!("unreadable call task row skipped"),
            }
        }
        Ok(out)
    }

    /// How many numbers a task holds.
    pub fn task_total(&self, task: &str) -> Result<u64, StoreError> {
        let n: i64 = self.store.connection().query_row(
            "SELECT COUNT(*) FROM task_numbers WHERE task_code = ?1",
            [task],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// Numbers in flight when the daemon stopped: nobody here knows how those calls went
    /// (FreeSWITCH kept them; a customer may have been talking to an agent). Each is logged
    /// as a failed attempt with no resultDetail and closed, rather than dialled again: calling
    /// a customer twice is the worse error. Returns (task, number) of each.
    pub fn close_in_flight(&mut self, now_ms: u64) -> Result<Vec<(String, String)>, StoreError> {
        let tx = self.store.connection_mut().transaction()?;
        let rows: Vec<(i64, String, String)> = {
            let mut stmt =
                tx.prepare("SELECT id, task_code, number FROM task_numbers WHERE state = 1")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, task, number) in &rows {
            let a = Attempt::without_call(
                task,
                number,
                *id,
                super::compliance::AttemptOutcome::Failed,
                "in flight when the daemon stopped; outcome unknown",
                now_ms,
            );
            let aid = ComplianceLog::new(&tx).append(&a)?;
            tx.execute(
                "UPDATE task_numbers SET state = 2, last_attempt_id = ?2 WHERE id = ?1",
                params![id, aid],
            )?;
        }
        tx.commit()?;
        Ok(rows.into_iter().map(|(_, t, n)| (t, n)).collect())
    }

    /// Claims up to `n` due numbers (pending, `next_at_ms <= now`), oldest first, marking them
    /// in flight.
    pub fn claim_due(
        &mut self,
        task: &str,
        n: u32,
        now_ms: u64,
    ) -> Result<Vec<DueNumber>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let tx = self.store.connection_mut().transaction()?;
        let due: Vec<DueNumber> = {
            let mut stmt = tx.prepare_cached(
                "SELECT id, number, original, retries FROM task_numbers WHERE task_code = ?1 AND state = 0 AND next_at_ms <= ?2 ORDER BY next_at_ms, id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![task, ms(now_ms), i64::from(n)], |r| {
                Ok(DueNumber {
                    id: r.get(0)?,
                    number: r.get(1)?,
                    original: r.get(2)?,
                    retries: r.get::<_, i64>(3)?.max(0) as u32,
                })
            })?;
            rows.collect::<Result<_, _>>()?
        };
        {
            let mut upd = tx.prepare_cached("UPDATE task_numbers SET state = 1 WHERE id = ?1")?;
            for d in &due {
                upd.execute([d.id])?;
            }
        }
        tx.commit()?;
        Ok(due)
    }

    /// Gives claimed numbers back untouched (no line was free after all).
    pub fn unclaim(&self, ids: &[i64]) -> Result<(), StoreError> {
        let mut upd = self
            .store
            .connection()
            .prepare_cached("UPDATE task_numbers SET state = 0 WHERE id = ?1 AND state = 1")?;
        for id in ids {
            upd.execute([id])?;
        }
        Ok(())
    }

    /// Whether a task has numbers still to dial (pending now or later, or in flight).
    pub fn task_has_work(&self, task: &str) -> Result<bool, StoreError> {
        Ok(self
            .store
            .connection()
            .prepare_cached(
                "SELECT 1 FROM task_numbers WHERE task_code = ?1 AND state IN (0, 1) LIMIT 1",
            )?
            .query_row([task], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Hands up to `n` pending numbers to a preview agent: (task number id, number).
    pub fn hand_out(
        &mut self,
        task: &str,
        n: u32,
        now_ms: u64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let due = self.claim_due(task, n, now_ms)?;
        let mut upd = self
            .store
            .connection()
            .prepare_cached("UPDATE task_numbers SET state = 3 WHERE id = ?1")?;
        for d in &due {
            upd.execute([d.id])?;
        }
        Ok(due.into_iter().map(|d| (d.id, d.number)).collect())
    }

    /// Retries a number already had under one rule (`RetryStatus::code`).
    pub fn retry_count(&self, number_id: i64, rule: u8) -> Result<u8, StoreError> {
        let counts: Option<String> = self
            .store
            .connection()
            .query_row(
                "SELECT retry_counts FROM task_numbers WHERE id = ?1",
                [number_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(counts
            .and_then(|c| serde_json::from_str::<std::collections::BTreeMap<String, u8>>(&c).ok())
            .and_then(|m| m.get(&rule.to_string()).copied())
            .unwrap_or(0))
    }

    /// Logs a finished attempt and moves its number on, in one transaction: `retry` = Some
    /// (when, number to dial, the rule's code) puts it back to pending with one more retry
    /// under that rule. Returns the compliance row id.
    pub fn finish_attempt(
        &mut self,
        attempt: &Attempt,
        retry: Option<(u64, String, u8)>,
    ) -> Result<i64, StoreError> {
        let tx = self.store.connection_mut().transaction()?;
        let id = ComplianceLog::new(&tx).append(attempt)?;
        if let Some(num_id) = attempt.task_number_id {
            match retry {
                Some((at, number, rule)) => {
                    let counts: String = tx.query_row(
                        "SELECT retry_counts FROM task_numbers WHERE id = ?1",
                        [num_id],
                        |r| r.get(0),
                    )?;
                    let mut m: std::collections::BTreeMap<String, u8> =
                        serde_json::from_str(&counts).unwrap_or_default();
                    *m.entry(rule.to_string()).or_default() += 1;
                    tx.execute(
                        "UPDATE task_numbers SET state = 0, next_at_ms = ?2, retries = retries + 1, number = ?3, last_result = ?4, last_attempt_id = ?5, retry_counts = ?6 WHERE id = ?1",
                        params![
                            num_id,
                            ms(at),
                            number,
                            attempt.result_detail,
                            id,
                            serde_json::to_string(&m).unwrap_or_default()
                        ],
                    )?
                }
                None => tx.execute(
                    "UPDATE task_numbers SET state = 2, last_result = ?2, last_attempt_id = ?3 WHERE id = ?1",
                    params![num_id, attempt.result_detail, id],
                )?,
            };
        }
        tx.commit()?;
        Ok(id)
    }

    /// Counters of a task recomputed from its compliance rows: (result_detail, outcome, count).
    pub fn attempt_summary(
        &self,
        task: &str,
    ) -> Result<Vec<(Option<u8>, String, u64)>, StoreError> {
        let mut stmt = self.store.connection().prepare(
            "SELECT result_detail, outcome, COUNT(*) FROM dial_attempts WHERE campaign = ?1 GROUP BY result_detail, outcome",
        )?;
        let rows = stmt.query_map([task], |r| {
            Ok((
                r.get::<_, Option<i64>>(0)?
                    .and_then(|v| u8::try_from(v).ok()),
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?.max(0) as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// callLog getList: attempts filtered by project (through the task), task and a time range
    /// on the start (`by_end` false) or end time; newest first by that time.
    pub fn call_log(&self, q: &LogQuery<'_>) -> Result<(u64, Vec<LogRow>), StoreError> {
        let LogQuery {
            project,
            task,
            by_end,
            from_ms,
            to_ms,
            offset,
            limit,
        } = *q;
        let col = if by_end { "a.ended_ms" } else { "a.dialed_ms" };
        let filter = format!(
            "FROM dial_attempts a LEFT JOIN call_tasks t ON t.code = a.campaign \
             WHERE (?1 IS NULL OR t.project_code = ?1) AND (?2 IS NULL OR a.campaign = ?2) \
             AND (?3 IS NULL OR {col} >= ?3) AND (?4 IS NULL OR {col} <= ?4) AND a.outcome != 'suppressed'"
        );
        let args = params![project, task, from_ms.map(ms), to_ms.map(ms)];
        let total: i64 =
            self.store
                .connection()
                .query_row(&format!("SELECT COUNT(*) {filter}"), args, |r| r.get(0))?;
        let mut stmt = self.store.connection().prepare(&format!(
            "SELECT a.id, a.campaign, a.number, a.caller_id, a.dialed_ms, a.answered_ms, a.bridged_ms, a.ended_ms, a.outcome, a.agent, a.call_id, a.pacing, a.result_detail, a.task_number_id \
             {filter} ORDER BY {col} DESC, a.id DESC LIMIT ?5 OFFSET ?6"
        ))?;
        let rows = stmt.query_map(
            params![
                project,
                task,
                from_ms.map(ms),
                to_ms.map(ms),
                ms(limit),
                ms(offset)
            ],
            |r| {
                let outcome: String = r.get(8)?;
                Ok(LogRow {
                    id: r.get(0)?,
                    attempt: Attempt {
                        campaign: r.get(1)?,
                        number: r.get(2)?,
                        caller_id: r.get(3)?,
                        dialed_ms: r.get::<_, i64>(4)?.max(0) as u64,
                        answered_ms: r.get::<_, Option<i64>>(5)?.map(|v| v.max(0) as u64),
                        bridged_ms: r.get::<_, Option<i64>>(6)?.map(|v| v.max(0) as u64),
                        ended_ms: r.get::<_, i64>(7)?.max(0) as u64,
                        outcome: super::compliance::AttemptOutcome::parse(&outcome)
                            .unwrap_or(super::compliance::AttemptOutcome::Failed),
                        agent: r.get(9)?,
                        call_id: r.get(10)?,
                        pacing: r.get(11)?,
                        result_detail: r
                            .get::<_, Option<i64>>(12)?
                            .and_then(|v| u8::try_from(v).ok()),
                        task_number_id: r.get(13)?,
                    },
                })
            },
        )?;
        Ok((total.max(0) as u64, rows.collect::<Result<_, _>>()?))
    }

    /// getListByResult: numbers of `task` whose latest attempt ended with one of `results`,
    /// with attempt id > `after`, in attempt id order. Returns (total, page of (id, number)).
    pub fn numbers_by_result(
        &self,
        task: &str,
        results: &[u8],
        after: i64,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<(i64, String)>), StoreError> {
        let list = results
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(",");
        // `list` holds only decimal u8s, so splicing it is safe.
        let filter = format!(
            "FROM task_numbers WHERE task_code = ?1 AND state = 2 AND last_result IN ({list}) AND last_attempt_id > ?2"
        );
        let total: i64 = self.store.connection().query_row(
            &format!("SELECT COUNT(*) {filter}"),
            params![task, after],
            |r| r.get(0),
        )?;
        let mut stmt = self.store.connection().prepare(&format!(
            "SELECT last_attempt_id, number {filter} ORDER BY last_attempt_id LIMIT ?3 OFFSET ?4"
        ))?;
        let rows = stmt.query_map(params![task, after, ms(limit), ms(offset)], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok((total.max(0) as u64, rows.collect::<Result<_, _>>()?))
    }
}

fn insert_numbers(
    tx: &Transaction<'_>,
    task: &str,
    numbers: &[(Option<i64>, String)],
) -> Result<(), StoreError> {
    let mut ins = tx.prepare_cached(
        "INSERT INTO task_numbers (task_code, number, original, entry_id) VALUES (?1, ?2, ?2, ?3)",
    )?;
    for (entry, n) in numbers {
        ins.execute(params![task, n, entry])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialer::compliance::AttemptOutcome;
    use crate::dialer::numbers::normalize;
    use crate::dialer::task::{CallType, Code, NumberSource, PacingChoice, TaskLine};

    fn spec() -> TaskSpec {
        TaskSpec {
            code: Code::parse("t1").unwrap(),
            project: "p1".into(),
            call_type: CallType::Predictive,
            pacing: PacingChoice::Progressive,
            lines: vec![TaskLine {
                code: "1001".into(),
                concurrency: 1,
            }],
            rate: 1.0,
            source: NumberSource::List(Code::parse("l").unwrap()),
            expires_ms: u64::MAX / 2,
            time_zone: "UTC".into(),
            week_periods: None,
            time_periods: None,
            org_no: None,
            service_id: None,
            city_org_no: None,
            caller_id_groups: vec![],
            retry_rules: vec![],
            continuous_seconds: 0,
            continuous_failed: 0,
        }
    }

    fn attempt(id: i64, number: &str, rd: u8) -> Attempt {
        Attempt {
            campaign: "t1".into(),
            number: number.into(),
            caller_id: String::new(),
            dialed_ms: 0,
            answered_ms: None,
            bridged_ms: None,
            ended_ms: 1,
            outcome: AttemptOutcome::Failed,
            agent: None,
            call_id: None,
            pacing: None,
            result_detail: Some(rd),
            task_number_id: Some(id),
        }
    }

    #[test]
    fn retries_keep_the_original_number_and_count_per_rule() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = DialerStore::open(&dir.path().join("d.db")).unwrap();
        s.create_task(&spec(), &[(None, "13900000001".into())], 0)
            .unwrap();
        let d = s.claim_due("t1", 1, 0).unwrap().remove(0);
        s.finish_attempt(
            &attempt(d.id, &d.number, 1),
            Some((10, "013900000001".into(), 5)),
        )
        .unwrap();
        assert_eq!(s.retry_count(d.id, 5).unwrap(), 1);
        assert_eq!(
            s.retry_count(d.id, 2).unwrap(),
            0,
            "another rule's budget is untouched"
        );
        s.blacklist_add(&[normalize("13900000001").unwrap()], 20)
            .unwrap();
        let d2 = s.claim_due("t1", 1, 100).unwrap().remove(0);
        assert_eq!(d2.number, "013900000001");
        assert_eq!(
            d2.original, "13900000001",
            "the blacklist can see the imported form"
        );
        assert!(s.blacklisted(&d2.original).unwrap());
    }

    #[test]
    fn calls_in_flight_at_a_restart_are_closed_not_redialled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let mut s = DialerStore::open(&path).unwrap();
        s.create_task(
            &spec(),
            &[(None, "13900000001".into()), (None, "13900000002".into())],
            0,
        )
        .unwrap();
        assert_eq!(s.claim_due("t1", 1, 0).unwrap().len(), 1);
        drop(s);
        let mut s = DialerStore::open(&path).unwrap();
        let closed = s.close_in_flight(50).unwrap();
        assert_eq!(closed, vec![("t1".to_string(), "13900000001".to_string())]);
        let due = s.claim_due("t1", 5, 100).unwrap();
        assert_eq!(due.len(), 1, "only the number never dialled is due");
        assert_eq!(due[0].number, "13900000002");
        let log = ComplianceLog::new(s.connection())
            .attempts("t1", 0, 10)
            .unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].1.result_detail, None);
    }
}
