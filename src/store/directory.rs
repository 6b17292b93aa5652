//! Directory and presence tables: projects, project extensions, agents, skill groups, access
//! numbers, and the persisted agent state with today's counters.
//!
//! Every multi-row change is one transaction, so an API call either happened completely or
//! not at all, whatever the crash.

use rusqlite::{params, OptionalExtension, Transaction};

use super::{Store, StoreError};
use crate::agents::directory::{
    AccessNumber, Agent, Extension, ExtensionNumber, Project, ProjectCode, Role, SkillGroup,
    TelephoneType,
};
use crate::sip::credentials::Credential;
use crate::sip::digest::Algorithm;

/// One agent's persisted presence: its state machine snapshot and counters, as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRow {
    pub extension: String,
    pub machine: String,
    pub counters: String,
}

fn i64_of(v: u64) -> i64 {
    // Generations are random u64s; SQLite integers are i64. Reinterpret the bits.
    v as i64
}

fn u64_of(v: i64) -> u64 {
    v as u64
}

fn extension_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Extension>> {
    let number: String = r.get(0)?;
    let project: Option<String> = r.get(1)?;
    let Ok(number) = ExtensionNumber::parse(&number) else {
        // A config-seeded extension may have any user name; the directory only manages digits.
        return Ok(None);
    };
    let project = match project {
        Some(p) => match ProjectCode::parse(&p) {
            Ok(p) => Some(p),
            Err(_) => return Ok(None),
        },
        None => None,
    };
    let claimed: Option<i64> = r.get(4)?;
    let tt: String = r.get(6)?;
    Ok(Some(Extension {
        number,
        project,
        generation: u64_of(r.get(2)?),
        enabled: r.get(3)?,
        claimed: claimed.and_then(Role::from_code),
        agent_id: r.get(5)?,
        telephone_type: TelephoneType::from_code(&tt).unwrap_or(TelephoneType::BuiltIn),
    }))
}

const EXTENSION_COLUMNS: &str =
    "user, project, generation, enabled, claimed, agent_id, telephone_type";

fn insert_extension(
    tx: &Transaction<'_>,
    realm: &str,
    ext: &Extension,
    cred: &Credential,
    now_unix: u64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO extensions (user, realm, ha1_md5, ha1_sha256, ha1_sha512_256, enabled, origin,
             updated_at, project, generation, claimed, agent_id, telephone_type)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'project', ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            ext.number.as_str(),
            realm,
            cred.ha1_hex(Algorithm::Md5),
            cred.ha1_hex(Algorithm::Sha256),
            cred.ha1_hex(Algorithm::Sha512_256),
            ext.enabled,
            now_unix as i64,
            ext.project.as_ref().map(ProjectCode::as_str),
            i64_of(ext.generation),
            ext.claimed.map(Role::code),
            ext.agent_id,
            ext.telephone_type.code(),
        ],
    )?;
    Ok(())
}

impl Store {
    /// Every extension user name in use, whatever its origin (config or project), so that
    /// allocation never hands out a number a config extension already has.
    pub fn extension_users(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT user FROM extensions")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn projects(&self) -> Result<Vec<Project>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT code, seats, generation, created_at FROM projects")?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let code: String = r.get(0)?;
            let Ok(code) = ProjectCode::parse(&code) else {
                continue;
            };
            out.push(Project {
                code,
                seats: r.get(1)?,
                generation: u64_of(r.get(2)?),
                created_at: u64_of(r.get(3)?),
            });
        }
        Ok(out)
    }

    /// Extensions owned by projects.
    pub fn project_extensions(&self) -> Result<Vec<Extension>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {EXTENSION_COLUMNS} FROM extensions WHERE origin = 'project'"
        ))?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            if let Some(e) = extension_from_row(r)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Creates a project and its extensions in one transaction.
    pub fn create_project(
        &mut self,
        realm: &str,
        project: &Project,
        cert_hash: &[u8; 32],
        extensions: &[(Extension, Credential)],
        now_unix: u64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO projects (code, seats, generation, cert_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                project.code.as_str(),
                project.seats,
                i64_of(project.generation),
                &cert_hash[..],
                project.created_at as i64
            ],
        )?;
        for (ext, cred) in extensions {
            insert_extension(&tx, realm, ext, cred, now_unix)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Adds one extension to an existing project (`distributionSeat`) and counts it as a seat.
    pub fn add_project_extension(
        &mut self,
        realm: &str,
        ext: &Extension,
        cred: &Credential,
        now_unix: u64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        insert_extension(&tx, realm, ext, cred, now_unix)?;
        tx.execute(
            "UPDATE projects SET seats = seats + 1 WHERE code = ?1",
            [ext.project.as_ref().map(ProjectCode::as_str)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Marks an extension claimed by `role` (`getByCertificate`).
    pub fn claim_extension(&self, number: &ExtensionNumber, role: Role) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE extensions SET claimed = ?2 WHERE user = ?1 AND origin = 'project'",
            params![number.as_str(), role.code()],
        )?;
        Ok(())
    }

    /// Enables or disables an extension (`setExtensionStatus`).
    pub fn set_extension_enabled(
        &self,
        number: &ExtensionNumber,
        enabled: bool,
        now_unix: u64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE extensions SET enabled = ?2, updated_at = ?3 WHERE user = ?1",
            params![number.as_str(), enabled, now_unix as i64],
        )?;
        Ok(())
    }

    /// Deletes a project, its extensions and their presence rows (`finishProject`).
    pub fn finish_project(&mut self, code: &ProjectCode) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM presence WHERE extension IN (SELECT user FROM extensions WHERE project = ?1)",
            [code.as_str()],
        )?;
        tx.execute(
            "DELETE FROM bindings WHERE aor IN (SELECT user FROM extensions WHERE project = ?1)",
            [code.as_str()],
        )?;
        let n = tx.execute(
            "DELETE FROM extensions WHERE project = ?1 AND origin = 'project'",
            [code.as_str()],
        )?;
        tx.execute("DELETE FROM projects WHERE code = ?1", [code.as_str()])?;
        tx.commit()?;
        Ok(n)
    }

    /// The project whose certificate hashes to `hash`.
    pub fn project_by_cert(&self, hash: &[u8; 32]) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT code FROM projects WHERE cert_hash = ?1",
                [&hash[..]],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Replaces the config-origin agents, skill groups and access numbers with `agents`,
    /// `groups` and `numbers`, leaving rows of other origins (the grid's pushes) alone.
    pub fn seed_directory(
        &mut self,
        agents: &[Agent],
        groups: &[SkillGroup],
        numbers: &[AccessNumber],
        now_unix: u64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM agents WHERE origin = 'config'", [])?;
        tx.execute("DELETE FROM skill_groups WHERE origin = 'config'", [])?;
        tx.execute("DELETE FROM access_numbers WHERE origin = 'config'", [])?;
        for a in agents {
            tx.execute(
                "INSERT INTO agents (agent_id, body, origin, updated_at) VALUES (?1, ?2, 'config', ?3)
                 ON CONFLICT(agent_id) DO NOTHING",
                params![a.agent_id, serde_json::to_string(a).unwrap_or_default(), now_unix as i64],
            )?;
        }
        for g in groups {
            tx.execute(
                "INSERT INTO skill_groups (id, name, origin) VALUES (?1, ?2, 'config')
                 ON CONFLICT(id) DO NOTHING",
                params![g.id, g.name],
            )?;
        }
        for n in numbers {
            tx.execute(
                "INSERT INTO access_numbers (access_num, body, origin) VALUES (?1, ?2, 'config')
                 ON CONFLICT(access_num) DO NOTHING",
                params![n.access_num, serde_json::to_string(n).unwrap_or_default()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        self.json_rows("SELECT body FROM agents ORDER BY agent_id")
    }

    pub fn access_numbers(&self) -> Result<Vec<AccessNumber>, StoreError> {
        self.json_rows("SELECT body FROM access_numbers ORDER BY access_num")
    }

    pub fn skill_groups(&self) -> Result<Vec<SkillGroup>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, name FROM skill_groups ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(SkillGroup {
                id: r.get(0)?,
                name: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn json_rows<T: serde::de::DeserializeOwned>(&self, sql: &str) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let body: String = r.get(0)?;
            match serde_json::from_str(&body) {
                Ok(v) => out.push(v),
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable directory row"),
            }
        }
        Ok(out)
    }

    /// Writes presence rows (upserts) and deletes those named in `removed`, in one transaction.
    pub fn save_presence(
        &mut self,
        rows: &[PresenceRow],
        removed: &[String],
        now_unix: u64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut up = tx.prepare(
                "INSERT INTO presence (extension, machine, counters, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(extension) DO UPDATE SET machine = excluded.machine,
                   counters = excluded.counters, updated_at = excluded.updated_at",
            )?;
            for r in rows {
                up.execute(params![r.extension, r.machine, r.counters, now_unix as i64])?;
            }
            let mut del = tx.prepare("DELETE FROM presence WHERE extension = ?1")?;
            for e in removed {
                del.execute([e])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn load_presence(&self) -> Result<Vec<PresenceRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT extension, machine, counters FROM presence")?;
        let rows = stmt.query_map([], |r| {
            Ok(PresenceRow {
                extension: r.get(0)?,
                machine: r.get(1)?,
                counters: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Durability;

    fn ext(n: &str, project: &str) -> Extension {
        Extension {
            number: ExtensionNumber::parse(n).unwrap(),
            project: Some(ProjectCode::parse(project).unwrap()),
            generation: u64::MAX - 1,
            enabled: true,
            claimed: None,
            agent_id: None,
            telephone_type: TelephoneType::BuiltIn,
        }
    }

    #[test]
    fn a_project_round_trips_and_finishing_removes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let mut s = Store::open(&path, Durability::Normal).unwrap();
        let code = ProjectCode::parse("P1").unwrap();
        let p = Project {
            code: code.clone(),
            seats: 2,
            generation: u64::MAX,
            created_at: 5,
        };
        let cred = Credential::from_password("8000", "r", "pw");
        let exts = vec![(ext("8000", "P1"), cred.clone()), (ext("8001", "P1"), cred)];
        s.create_project("r", &p, &[9; 32], &exts, 5).unwrap();
        s.claim_extension(&exts[0].0.number, Role::Manager).unwrap();
        s.save_presence(
            &[PresenceRow {
                extension: "8000".into(),
                machine: "{}".into(),
                counters: "{}".into(),
            }],
            &[],
            5,
        )
        .unwrap();
        drop(s);
        let mut s = Store::open(&path, Durability::Normal).unwrap();
        assert_eq!(s.projects().unwrap(), vec![p]);
        let loaded = s.project_extensions().unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0].generation, u64::MAX - 1);
        assert_eq!(loaded[0].claimed, Some(Role::Manager));
        assert_eq!(s.project_by_cert(&[9; 32]).unwrap().as_deref(), Some("P1"));
        assert!(s.load_credentials("r").unwrap().contains_key("8001"));
        // A second project with the same certificate hash or code is refused, atomically.
        let again = Project {
            code: ProjectCode::parse("P2").unwrap(),
            seats: 1,
            generation: 1,
            created_at: 6,
        };
        let e2 = vec![(
            ext("8002", "P2"),
            Credential::from_password("8002", "r", "x"),
        )];
        assert!(s.create_project("r", &again, &[9; 32], &e2, 6).is_err());
        assert!(!s.extension_users().unwrap().contains("8002"));
        assert_eq!(s.finish_project(&code).unwrap(), 2);
        assert!(s.projects().unwrap().is_empty());
        assert!(s.project_extensions().unwrap().is_empty());
        assert!(s.load_presence().unwrap().is_empty());
    }
}
