//! Tables of the grid query API (migration 4): fallback caller IDs (保底号码) and agent
//! deletions, plus the directory reads the grid's queries need.
//!
//! The grid's agent changes (000:L907-L937) write the `agents` table with origin `grid`, so
//! the config seeding at start-up (which replaces only origin `config` rows) never undoes them;
//! a deleted agent gets a tombstone, so a config-seeded agent the grid deleted stays deleted.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};
use crate::agents::directory::Agent;
use crate::grid::query::{ChangeEffect, FallbackNumber};

/// One extension as the grid's extension list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionRow {
    pub user: String,
    pub telephone_type: String,
    pub enabled: bool,
    /// The agent id the directory attached to a project extension, if any.
    pub agent_id: Option<String>,
}

impl Store {
    /// Inserts or replaces the fallback number of (orgNo, serviceId), durably before the grid
    /// is told 200.
    pub fn grid_fallback_upsert(
        &self,
        f: &FallbackNumber,
        now_unix: u64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO grid_fallback_numbers (org_no, service_id, outbound_number, updated_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(org_no, service_id) DO UPDATE SET
               outbound_number = excluded.outbound_number, updated_at = excluded.updated_at",
            params![
                f.org_no,
                f.service_id.as_deref().unwrap_or(""),
                f.outbound_number,
                now_unix as i64
            ],
        )?;
        Ok(())
    }

    pub fn grid_fallback_numbers(&self) -> Result<Vec<FallbackNumber>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT org_no, service_id, outbound_number FROM grid_fallback_numbers
             ORDER BY org_no, service_id",
        )?;
        let rows = stmt.query_map([], |r| {
            let service: String = r.get(1)?;
            Ok(FallbackNumber {
                org_no: r.get(0)?,
                service_id: (!service.is_empty()).then_some(service),
                outbound_number: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The caller ID for an outbound call of `org_no` (and skill group `service_id`) straight
    /// from the database: the number for (org, group), else the org's own. Same rule as
    /// [`crate::grid::query::FallbackTable::lookup`].
    pub fn fallback_caller_id(
        &self,
        org_no: &str,
        service_id: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT outbound_number FROM grid_fallback_numbers
                 WHERE org_no = ?1 AND service_id IN (?2, '')
                 ORDER BY service_id = '' LIMIT 1",
                params![org_no, service_id.unwrap_or("")],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The directory's agents without those the grid deleted.
    pub fn grid_agents(&self) -> Result<Vec<Agent>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT body FROM agents
             WHERE agent_id NOT IN (SELECT agent_id FROM grid_agent_tombstones)
             ORDER BY agent_id",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let body: String = r.get(0)?;
            match serde_json::from_str(&body) {
                Ok(a) => out.push(a),
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable agent row"),
            }
        }
        Ok(out)
    }

    /// Applies a validated agent change in one transaction.
    pub fn grid_apply_agent_change(
        &mut self,
        effect: &ChangeEffect,
        now_unix: u64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        match effect {
            ChangeEffect::Upsert(a) => {
                tx.execute(
                    "INSERT INTO agents (agent_id, body, origin, updated_at) VALUES (?1, ?2, 'grid', ?3)
                     ON CONFLICT(agent_id) DO UPDATE SET body = excluded.body,
                       origin = 'grid', updated_at = excluded.updated_at",
                    params![
                        a.agent_id,
                        serde_json::to_string(a).unwrap_or_default(),
                        now_unix as i64
                    ],
                )?;
                tx.execute(
                    "DELETE FROM grid_agent_tombstones WHERE agent_id = ?1",
                    [&a.agent_id],
                )?;
            }
            ChangeEffect::Delete(id) => {
                tx.execute("DELETE FROM agents WHERE agent_id = ?1", [id])?;
                tx.execute(
                    "INSERT INTO grid_agent_tombstones (agent_id, deleted_at) VALUES (?1, ?2)
                     ON CONFLICT(agent_id) DO UPDATE SET deleted_at = excluded.deleted_at",
                    params![id, now_unix as i64],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every extension (config and project), for the extension list.
    pub fn grid_extensions(&self) -> Result<Vec<ExtensionRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT user, telephone_type, enabled, agent_id FROM extensions ORDER BY user",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ExtensionRow {
                user: r.get(0)?,
                telephone_type: r.get(1)?,
                enabled: r.get(2)?,
                agent_id: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Durability;

    fn f(org: &str, svc: Option<&str>, n: &str) -> FallbackNumber {
        FallbackNumber {
            org_no: org.into(),
            service_id: svc.map(Into::into),
            outbound_number: n.into(),
        }
    }

    #[test]
    fn fallback_numbers_upsert_survive_reopen_and_fall_back_to_the_org() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let s = Store::open(&path, Durability::Full).unwrap();
        s.grid_fallback_upsert(&f("O1", None, "0571000"), 1)
            .unwrap();
        s.grid_fallback_upsert(&f("O1", Some("SG1"), "0571111"), 1)
            .unwrap();
        s.grid_fallback_upsert(&f("O1", Some("SG1"), "0571222"), 2)
            .unwrap();
        drop(s);
        let s = Store::open(&path, Durability::Full).unwrap();
        assert_eq!(s.grid_fallback_numbers().unwrap().len(), 2);
        assert_eq!(
            s.fallback_caller_id("O1", Some("SG1")).unwrap().as_deref(),
            Some("0571222")
        );
        assert_eq!(
            s.fallback_caller_id("O1", Some("SG2")).unwrap().as_deref(),
            Some("0571000")
        );
        assert_eq!(
            s.fallback_caller_id("O1", None).unwrap().as_deref(),
            Some("0571000")
        );
        assert_eq!(s.fallback_caller_id("O2", Some("SG1")).unwrap(), None);
    }

    #[test]
    fn agent_changes_outlive_config_seeding() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("g.db"), Durability::Normal).unwrap();
        let cfg_agent = Agent {
            agent_id: "A1".into(),
            name: "config".into(),
            ..Default::default()
        };
        s.seed_directory(std::slice::from_ref(&cfg_agent), &[], &[], 1)
            .unwrap();
        let mut renamed = cfg_agent.clone();
        renamed.name = "grid".into();
        s.grid_apply_agent_change(&ChangeEffect::Upsert(renamed), 2)
            .unwrap();
        // A restart seeds the config again: the grid's version stays.
        s.seed_directory(std::slice::from_ref(&cfg_agent), &[], &[], 3)
            .unwrap();
        assert_eq!(s.grid_agents().unwrap()[0].name, "grid");
        s.grid_apply_agent_change(&ChangeEffect::Delete("A1".into()), 4)
            .unwrap();
        s.seed_directory(std::slice::from_ref(&cfg_agent), &[], &[], 5)
            .unwrap();
        assert!(s.grid_agents().unwrap().is_empty());
        // Added again by the grid: back.
        s.grid_apply_agent_change(&ChangeEffect::Upsert(cfg_agent), 6)
            .unwrap();
        assert_eq!(s.grid_agents().unwrap().len(), 1);
    }
}
