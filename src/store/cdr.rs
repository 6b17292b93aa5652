//! Call legs, closed calls and grid call records.
//!
//! A leg is committed here before its sender is acknowledged (the mod_json_cdr post gets its
//! 2xx only after the commit), and a call's records are committed in the same transaction
//! that marks the call closed, so a crash between the two cannot build a call twice or lose it.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};
use crate::cdr::reconcile::{CallKey, LegSource, Outcome};
use crate::cdr::record::CallRecord;
use crate::switch::leg::Leg;

/// A leg of a call not built yet, as stored.
#[derive(Debug, Clone)]
pub struct StoredLeg {
    pub leg: Option<Leg>,
    pub source: LegSource,
    pub document: Option<Vec<u8>>,
}

/// What storing a leg found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegInsert {
    New,
    /// This source already delivered this leg (a retried post, a re-swept file).
    Duplicate,
    /// The leg's call was already built; the leg is kept for reference but builds nothing.
    Late,
}

impl Store {
    /// Stores a leg description. Idempotent on (core uuid, leg uuid, source).
    pub fn insert_leg(
        &mut self,
        leg: &Leg,
        source: LegSource,
        document: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<LegInsert, StoreError> {
        let key = CallKey::of(leg).to_text();
        let json = serde_json::to_string(leg).map_err(|e| {
            StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
        })?;
        // ESL legs are the lossy source (the document supersedes them and is what FreeSWITCH
        // waits for), so their commits skip the fsync; documents stay synchronous=FULL. In WAL
        // mode the next FULL commit makes the earlier frames durable too.
        let relaxed = source == LegSource::Esl && self.durability_full();
        if relaxed {
            self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        let result = self.insert_leg_tx(&key, &json, leg, source, document, now_ms);
        if relaxed {
            self.conn.pragma_update(None, "synchronous", "FULL")?;
        }
        result
    }

    fn insert_leg_tx(
        &mut self,
        key: &str,
        json: &str,
        leg: &Leg,
        source: LegSource,
        document: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<LegInsert, StoreError> {
        let tx = self.conn.transaction()?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO cdr_legs (core_uuid, uuid, source, call_key, leg, document, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                leg.key.core_uuid,
                leg.key.uuid,
                source.as_str(),
                key,
                json,
                document,
                now_ms as i64
            ],
        )?;
        let closed: bool = tx
            .query_row("SELECT 1 FROM cdr_calls WHERE call_key = ?1", [key], |_| {
                Ok(())
            })
            .optional()?
            .is_some();
        tx.commit()?;
        Ok(match (inserted, closed) {
            (0, _) => LegInsert::Duplicate,
            (_, true) => LegInsert::Late,
            _ => LegInsert::New,
        })
    }

    /// Legs of calls not built yet, for the reconciler after a restart. A row whose stored
    /// leg this binary cannot read comes back with `leg: None` and its raw document (if it
    /// has one), for the caller to interpret again.
    pub fn open_legs(&self) -> Result<Vec<StoredLeg>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT leg, source, document FROM cdr_legs
             WHERE call_key NOT IN (SELECT call_key FROM cdr_calls)
             ORDER BY received_ms",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<Vec<u8>>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (leg, source, document) = row?;
            let Some(source) = LegSource::parse(&source) else {
                tracing::warn!(source, "stored call leg with an unknown source skipped");
                continue;
            };
            out.push(StoredLeg {
                leg: serde_json::from_str::<Leg>(&leg).ok(),
                source,
                document,
            });
        }
        Ok(out)
    }

    /// Marks a call closed and stores its records, atomically. Returns false (and stores
    /// nothing) when the call was already closed.
    pub fn close_call(
        &mut self,
        key: &CallKey,
        outcome: Outcome,
        records: &[CallRecord],
        outbox: &[crate::outbox::NewRecord],
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let key = key.to_text();
        let session = records.first().map(|r| r.session_id.as_str()).unwrap_or("");
        let tx = self.conn.transaction()?;
        let fresh = tx.execute(
            "INSERT OR IGNORE INTO cdr_calls (call_key, session_id, outcome, closed_ms) VALUES (?1, ?2, ?3, ?4)",
            params![key, session, outcome.as_str(), now_ms as i64],
        )?;
        if fresh == 0 {
            return Ok(false);
        }
        for r in records {
            let json = serde_json::to_string(r).map_err(|e| {
                StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
            })?;
            tx.execute(
                "INSERT INTO call_records (stream_number, call_key, segment, record, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![r.stream_number, key, r.segment.as_str(), json, now_ms as i64],
            )?;
        }
        // The outbox rows commit with the records they report (transactional outbox).
        for row in outbox {
            crate::outbox::store::insert(&tx, row, now_ms)?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Every record built for a call, in stream-number order.
    pub fn call_records(&self, key: &CallKey) -> Result<Vec<CallRecord>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT record FROM call_records WHERE call_key = ?1 ORDER BY stream_number",
        )?;
        let rows = stmt.query_map([key.to_text()], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            if let Ok(r) = serde_json::from_str(&row?) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Drops the stored legs (and their documents, the bulk of the table) of calls closed
    /// before `before_ms`; the calls and their records stay. Returns the rows removed.
    pub fn prune_legs(&mut self, before_ms: u64) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM cdr_legs WHERE call_key IN
               (SELECT call_key FROM cdr_calls WHERE closed_ms < ?1)",
            [before_ms as i64],
        )?)
    }

    /// How many call records exist in all.
    pub fn call_record_count(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM call_records", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::builder::{build_call, CdrDirectory};
    use crate::cdr::mapping::CdrMapping;
    use crate::cdr::record::AgentRef;
    use crate::store::Durability;
    use crate::switch::leg::LegVariables;
    use crate::switch::raw_cdr::{parse_json, CdrLimits};

    struct NoDir;
    impl CdrDirectory for NoDir {
        fn agent_at(&self, _: &str) -> Option<AgentRef> {
            None
        }
        fn is_extension(&self, _: &str) -> bool {
            false
        }
        fn skill_group(&self, _: &str) -> Option<(String, String)> {
            None
        }
        fn agent_skill_group(&self, _: &str) -> Option<(String, String)> {
            None
        }
    }

    fn leg(name: &str) -> Leg {
        let path = format!(
            "{}/tests/fixtures/freeswitch/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let raw = parse_json(&std::fs::read(path).unwrap(), &CdrLimits::default()).unwrap();
        Leg::from_raw(&raw, &LegVariables::default()).unwrap()
    }

    #[test]
    fn legs_are_idempotent_calls_close_once_and_late_legs_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("db"), Durability::Full).unwrap();
        let a = leg("cdr-inbound-cancelled-aleg-2025.json");
        let b = leg("cdr-outbound-cancelled-bleg-2025.json");
        assert_eq!(
            s.insert_leg(&a, LegSource::Document, Some(b"{}"), 1)
                .unwrap(),
            LegInsert::New
        );
        assert_eq!(
            s.insert_leg(&a, LegSource::Document, Some(b"{}"), 2)
                .unwrap(),
            LegInsert::Duplicate
        );
        assert_eq!(
            s.insert_leg(&a, LegSource::Esl, None, 3).unwrap(),
            LegInsert::New,
            "the ESL description of the same leg is kept beside the document"
        );
        assert_eq!(s.open_legs().unwrap().len(), 2);
        assert!(s.open_legs().unwrap().iter().all(|l| l.leg.is_some()));

        let key = CallKey::of(&a);
        let records = build_call(std::slice::from_ref(&a), &NoDir, &CdrMapping::default());
        assert!(s
            .close_call(&key, Outcome::Both, &records, &[], 10)
            .unwrap());
        assert!(
            !s.close_call(&key, Outcome::Both, &records, &[], 11)
                .unwrap(),
            "a call is closed once"
        );
        assert_eq!(s.call_records(&key).unwrap(), records);
        assert!(s.open_legs().unwrap().is_empty());
        assert_eq!(
            s.insert_leg(&b, LegSource::Document, None, 12).unwrap(),
            LegInsert::Late
        );
        assert_eq!(s.call_record_count().unwrap(), records.len() as u64);

        // Pruning drops the legs of calls closed before the cut-off, never the records.
        assert_eq!(s.prune_legs(10).unwrap(), 0);
        assert_eq!(s.prune_legs(11).unwrap(), 3);
        assert_eq!(s.call_records(&key).unwrap(), records);
    }
}
