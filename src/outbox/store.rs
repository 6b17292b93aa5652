//! The outbox's SQLite tables (migration 4): `outbox` holds records until the receiver
//! acknowledges them, `outbox_dead` holds those it refused or that ran out of attempts.
//!
//! Every function takes a plain `&Connection`, so a producer enqueues inside its own
//! transaction (a `Transaction` derefs to a `Connection`): the CDR service writes a call's
//! records and their outbox rows in one commit, which is what makes "nothing acknowledged is
//! lost" hold across `kill -9`.

use rusqlite::{params, Connection, OptionalExtension};

use crate::text::truncate;

use super::record::{NewRecord, Pending, RecordId, Target};
use super::scheduler::Decision;
use crate::store::StoreError;

/// Adds a record; the caller commits.
pub fn insert(conn: &Connection, rec: &NewRecord, now_ms: u64) -> Result<RecordId, StoreError> {
    conn.prepare_cached(
        "INSERT INTO outbox (target, lane, idem_key, payload, enqueued_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        rec.target.as_str(),
        rec.key,
        rec.idempotency_key,
        &rec.payload[..],
        now_ms as i64
    ])?;
    Ok(RecordId(conn.last_insert_rowid()))
}

fn pending_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Pending>> {
    let target: String = r.get(1)?;
    let Some(target) = Target::parse(&target) else {
        return Ok(None);
    };
    let payload: Vec<u8> = r.get(4)?;
    Ok(Some(Pending {
        id: RecordId(r.get(0)?),
        target,
        key: r.get(2)?,
        idempotency_key: r.get(3)?,
        payload: payload.into(),
        enqueued_ms: r.get::<_, i64>(5)?.max(0) as u64,
        attempts: r.get::<_, i64>(6)?.clamp(0, u32::MAX as i64) as u32,
    }))
}

/// Pending records with an id above `after`, in id order (which is commit order).
/// Rows of a target this build does not know are skipped, not lost: they stay in the table.
pub fn load_after(
    conn: &Connection,
    after: RecordId,
    limit: usize,
) -> Result<Vec<Pending>, StoreError> {
    // Unknown targets are filtered in SQL, not after LIMIT: a page full of them must not
    // hide the rows behind it.
    let known: Vec<String> = Target::ALL
        .iter()
        .map(|t| format!("'{}'", t.as_str()))
        .collect();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, target, lane, idem_key, payload, enqueued_ms, attempts FROM outbox WHERE id > ?1 AND target IN ({}) ORDER BY id LIMIT ?2",
        known.join(", ")
    ))?;
    let rows = stmt.query_map(params![after.0, limit as i64], pending_from_row)?;
    let mut out = Vec::new();
    for row in rows {
        if let Some(p) = row? {
            out.push(p);
        }
    }
    Ok(out)
}

/// The highest id in the table so far (0 when empty), whether pending or not.
pub fn max_id(conn: &Connection) -> Result<RecordId, StoreError> {
    let id: Option<i64> = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(RecordId(id.unwrap_or(0)))
}

/// Makes the scheduler's decisions durable; the caller commits.
pub fn apply(conn: &Connection, decisions: &[Decision], now_ms: u64) -> Result<(), StoreError> {
    for d in decisions {
        match d {
            Decision::Delivered { id, .. } => {
                conn.prepare_cached("DELETE FROM outbox WHERE id = ?1")?
                    .execute([id.0])?;
            }
            Decision::Retry {
                id,
                attempts,
                reason,
                ..
            } => {
                conn.prepare_cached(
                    "UPDATE outbox SET attempts = ?2, last_error = ?3 WHERE id = ?1",
                )?
                .execute(params![
                    id.0,
                    *attempts as i64,
                    truncate(reason, 500)
                ])?;
            }
            Decision::Dead { record, reason } => {
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO outbox_dead (id, target, lane, idem_key, payload, enqueued_ms, attempts, reason, dead_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    record.id.0,
                    record.target.as_str(),
                    record.key,
                    record.idempotency_key,
                    &record.payload[..],
                    record.enqueued_ms as i64,
                    record.attempts as i64,
                    truncate(reason, 1000),
                    now_ms as i64
                ])?;
                conn.prepare_cached("DELETE FROM outbox WHERE id = ?1")?
                    .execute([record.id.0])?;
            }
        }
    }
    Ok(())
}

/// A dead letter as the API and the CLI show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: i64,
    pub target: String,
    pub key: String,
    pub idempotency_key: String,
    pub attempts: u32,
    pub reason: String,
    pub enqueued_ms: u64,
    pub dead_ms: u64,
    /// The body as it was sent: JSON when it parses, else a (lossy) string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

fn dead_from_row(r: &rusqlite::Row<'_>, with_payload: bool) -> rusqlite::Result<DeadLetter> {
    let payload =
        if with_payload {
            let bytes: Vec<u8> = r.get(8)?;
            Some(serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into())
            }))
        } else {
            None
        };
    Ok(DeadLetter {
        id: r.get(0)?,
        target: r.get(1)?,
        key: r.get(2)?,
        idempotency_key: r.get(3)?,
        attempts: r.get::<_, i64>(4)?.clamp(0, u32::MAX as i64) as u32,
        reason: r.get(5)?,
        enqueued_ms: r.get::<_, i64>(6)?.max(0) as u64,
        dead_ms: r.get::<_, i64>(7)?.max(0) as u64,
        payload,
    })
}

const DEAD_COLUMNS: &str =
    "id, target, lane, idem_key, attempts, reason, enqueued_ms, dead_ms, payload";

/// Dead letters in id order, optionally of one target, after `after` (for paging).
pub fn dead_list(
    conn: &Connection,
    target: Option<Target>,
    after: i64,
    limit: usize,
) -> Result<Vec<DeadLetter>, StoreError> {
    let sql = format!(
        "SELECT {DEAD_COLUMNS} FROM outbox_dead WHERE id > ?1 AND (?2 IS NULL OR target = ?2) ORDER BY id LIMIT ?3"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(
        params![after, target.map(|t| t.as_str()), limit as i64],
        |r| dead_from_row(r, false),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn dead_get(conn: &Connection, id: i64) -> Result<Option<DeadLetter>, StoreError> {
    let sql = format!("SELECT {DEAD_COLUMNS} FROM outbox_dead WHERE id = ?1");
    Ok(conn
        .query_row(&sql, [id], |r| dead_from_row(r, true))
        .optional()?)
}

/// Dead letters per target.
pub fn dead_counts(conn: &Connection) -> Result<Vec<(String, u64)>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT target, COUNT(*) FROM outbox_dead GROUP BY target ORDER BY target")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Pending records and the commit time of the oldest.
pub fn pending_summary(conn: &Connection) -> Result<(u64, Option<u64>), StoreError> {
    Ok(
        conn.query_row("SELECT COUNT(*), MIN(enqueued_ms) FROM outbox", [], |r| {
            Ok((
                r.get::<_, i64>(0)?.max(0) as u64,
                r.get::<_, Option<i64>>(1)?.map(|v| v.max(0) as u64),
            ))
        })?,
    )
}

/// Which dead letters to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaySelection {
    One(i64),
    All(Option<Target>),
}

/// Moves dead letters back into the outbox with fresh ids (so they queue behind whatever
/// their key holds now), the same idempotency key and payload, and a zero attempt count.
/// Pages of [`REPLAY_PAGE`] rows, each one transaction (a row moves whole or not at all), so
/// a replay of a large table never holds the write lock for long. Returns how many moved.
pub fn replay(
    conn: &mut Connection,
    which: ReplaySelection,
    now_ms: u64,
) -> Result<usize, StoreError> {
    let (id, target) = match which {
        ReplaySelection::One(id) => (Some(id), None),
        ReplaySelection::All(t) => (None, t.map(|t| t.as_str())),
    };
    let mut moved = 0;
    loop {
        let tx = conn.transaction()?;
        let ids: Vec<i64> = {
            let mut stmt = tx.prepare(
                "SELECT id FROM outbox_dead WHERE (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR target = ?2) ORDER BY id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![id, target, REPLAY_PAGE as i64], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        if ids.is_empty() {
            return Ok(moved);
        }
        for dead in &ids {
            tx.execute(
                "INSERT INTO outbox (target, lane, idem_key, payload, enqueued_ms, attempts) \
                 SELECT target, lane, idem_key, payload, ?2, 0 FROM outbox_dead WHERE id = ?1",
                params![dead, now_ms as i64],
            )?;
            tx.execute("DELETE FROM outbox_dead WHERE id = ?1", [dead])?;
        }
        tx.commit()?;
        moved += ids.len();
        if ids.len() < REPLAY_PAGE {
            return Ok(moved);
        }
    }
}

/// Rows moved per replay transaction.
pub const REPLAY_PAGE: usize = 1000;

/// Deletes dead letters older than `before_ms` (the table is bounded by retention, not by
/// hope); returns how many.
pub fn prune_dead(conn: &Connection, before_ms: u64) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "DELETE FROM outbox_dead WHERE dead_ms < ?1",
        [before_ms as i64],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, Store};

    fn open() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), Durability::Full).unwrap();
        (dir, store.into_connection())
    }

    fn new(target: Target, key: &str, idem: &str) -> NewRecord {
        NewRecord {
            target,
            key: key.into(),
            idempotency_key: idem.into(),
            payload: bytes::Bytes::from(format!("{{\"id\":\"{idem}\"}}")),
        }
    }

    #[test]
    fn ids_grow_and_load_after_pages_in_order() {
        let (_d, conn) = open();
        let ids: Vec<RecordId> = (0..10)
            .map(|i| insert(&conn, &new(Target::Cdr, "k", &format!("s{i}")), 100 + i).unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let first = load_after(&conn, RecordId(0), 4).unwrap();
        assert_eq!(first.len(), 4);
        let rest = load_after(&conn, first[3].id, 100).unwrap();
        assert_eq!(rest.len(), 6);
        assert_eq!(rest[0].idempotency_key, "s4");
        assert_eq!(rest[0].enqueued_ms, 104);
        assert_eq!(max_id(&conn).unwrap(), ids[9]);
    }

    #[test]
    fn outcomes_delete_update_and_dead_letter() {
        let (_d, mut conn) = open();
        let a = insert(&conn, &new(Target::Cdr, "k", "a"), 1).unwrap();
        let b = insert(&conn, &new(Target::Cdr, "k", "b"), 1).unwrap();
        let c = insert(&conn, &new(Target::AgentEvent, "agent", "c"), 1).unwrap();
        let rows = load_after(&conn, RecordId(0), 10).unwrap();
        apply(
            &conn,
            &[
                Decision::Delivered {
                    id: a,
                    target: Target::Cdr,
                    enqueued_ms: 1,
                },
                Decision::Retry {
                    id: b,
                    target: Target::Cdr,
                    attempts: 3,
                    due_ms: 9,
                    reason: "http 503".into(),
                },
                Decision::Dead {
                    record: rows[2].clone(),
                    reason: "http 400: bad".into(),
                },
            ],
            50,
        )
        .unwrap();
        let left = load_after(&conn, RecordId(0), 10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].id, left[0].attempts), (b, 3));
        let dead = dead_list(&conn, None, 0, 10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].id, c.0);
        assert_eq!(dead[0].reason, "http 400: bad");
        assert_eq!(dead[0].dead_ms, 50);
        assert!(dead[0].payload.is_none());
        let full = dead_get(&conn, c.0).unwrap().unwrap();
        assert_eq!(full.payload, Some(serde_json::json!({"id": "c"})));
        assert!(dead_list(&conn, Some(Target::Cdr), 0, 10)
            .unwrap()
            .is_empty());
        assert_eq!(
            dead_counts(&conn).unwrap(),
            vec![("agent_event".to_string(), 1)]
        );
        // Replay: a fresh id above everything, same key and payload, attempts reset.
        assert_eq!(replay(&mut conn, ReplaySelection::One(c.0), 70).unwrap(), 1);
        assert_eq!(replay(&mut conn, ReplaySelection::One(c.0), 70).unwrap(), 0);
        let back = load_after(&conn, b, 10).unwrap();
        assert_eq!(back.len(), 1);
        assert!(back[0].id > c);
        assert_eq!(back[0].idempotency_key, "c");
        assert_eq!(back[0].attempts, 0);
        assert_eq!(back[0].enqueued_ms, 70);
        assert!(dead_list(&conn, None, 0, 10).unwrap().is_empty());
    }

    #[test]
    fn replay_all_of_one_target_leaves_the_others() {
        let (_d, mut conn) = open();
        for (t, k) in [
            (Target::Cdr, "1"),
            (Target::Cdr, "2"),
            (Target::Detail, "3"),
        ] {
            insert(&conn, &new(t, k, k), 1).unwrap();
        }
        let rows = load_after(&conn, RecordId(0), 10).unwrap();
        let dead: Vec<Decision> = rows
            .into_iter()
            .map(|r| Decision::Dead {
                record: r,
                reason: "x".into(),
            })
            .collect();
        apply(&conn, &dead, 2).unwrap();
        assert_eq!(
            replay(&mut conn, ReplaySelection::All(Some(Target::Cdr)), 3).unwrap(),
            2
        );
        assert_eq!(dead_list(&conn, None, 0, 10).unwrap().len(), 1);
        assert_eq!(replay(&mut conn, ReplaySelection::All(None), 3).unwrap(), 1);
        assert_eq!(pending_summary(&conn).unwrap(), (3, Some(3)));
    }

    #[test]
    fn a_page_of_unknown_targets_hides_nothing() {
        let (_d, conn) = open();
        for i in 0..50 {
            conn.execute(
                "INSERT INTO outbox (target, lane, idem_key, payload, enqueued_ms) VALUES ('future', 'k', ?1, x'00', 1)",
                [i],
            )
            .unwrap();
        }
        let id = insert(&conn, &new(Target::Cdr, "k", "a"), 1).unwrap();
        let rows = load_after(&conn, RecordId(0), 10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, id);
    }

    #[test]
    fn rows_of_unknown_targets_are_skipped_not_lost() {
        let (_d, conn) = open();
        conn.execute(
            "INSERT INTO outbox (target, lane, idem_key, payload, enqueued_ms) VALUES ('future', 'k', 'i', x'00', 1)",
            [],
        )
        .unwrap();
        insert(&conn, &new(Target::Cdr, "k", "a"), 1).unwrap();
        let rows = load_after(&conn, RecordId(0), 10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(pending_summary(&conn).unwrap().0, 2);
    }

    #[test]
    fn replay_pages_through_a_large_table_and_prune_bounds_it() {
        let (_d, mut conn) = open();
        for i in 0..2_500 {
            insert(
                &conn,
                &new(Target::Cdr, &format!("k{i}"), &format!("i{i}")),
                1,
            )
            .unwrap();
        }
        let rows = load_after(&conn, RecordId(0), 10_000).unwrap();
        let dead: Vec<Decision> = rows
            .into_iter()
            .map(|r| Decision::Dead {
                record: r,
                reason: "x".into(),
            })
            .collect();
        apply(&conn, &dead, 5).unwrap();
        assert_eq!(
            replay(&mut conn, ReplaySelection::All(None), 9).unwrap(),
            2_500
        );
        assert_eq!(pending_summary(&conn).unwrap().0, 2_500);
        let rows = load_after(&conn, RecordId(0), 10_000).unwrap();
        let dead: Vec<Decision> = rows
            .into_iter()
            .map(|r| Decision::Dead {
                record: r,
                reason: "x".into(),
            })
            .collect();
        apply(&conn, &dead[..100], 5).unwrap();
        apply(&conn, &dead[100..], 50).unwrap();
        assert_eq!(prune_dead(&conn, 10).unwrap(), 100);
        assert_eq!(dead_list(&conn, None, 0, 10_000).unwrap().len(), 2_400);
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let s = "错".repeat(600);
        let t = truncate(&s, 1000);
        assert!(t.len() <= 1000 && s.starts_with(t));
    }
}
