//! The SQLite store: one file under the state directory, WAL mode, versioned migrations.
//!
//! Blocking by design (rusqlite); shells call it from dedicated threads or `spawn_blocking`.
//!
//! Architecture invariant: the schema only moves forward through [`MIGRATIONS`]; a database
//! newer than this binary is refused rather than guessed at.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::sip::credentials::{Credential, CredentialTable};
use crate::sip::digest::Algorithm;
use crate::sip::location::{Binding, ConnectionId, Flow, Persist, Transport};

mod cdr;
mod directory;
mod grid;
pub use cdr::{LegInsert, StoredLeg};
pub use directory::PresenceRow;
pub use grid::ExtensionRow;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot create state directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("database schema version {found} is newer than this binary supports ({supported})")]
    TooNew { found: i64, supported: i64 },
}

/// Each entry moves the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: extensions with per-algorithm HA1, registrar bindings, small key-value metadata.
    r#"
    CREATE TABLE extensions (
        user            TEXT PRIMARY KEY,
        realm           TEXT NOT NULL,
        ha1_md5         TEXT,
        ha1_sha256      TEXT,
        ha1_sha512_256  TEXT,
        enabled         INTEGER NOT NULL DEFAULT 1,
        origin          TEXT NOT NULL DEFAULT 'config',
        updated_at      INTEGER NOT NULL
    );
    CREATE TABLE bindings (
        aor            TEXT NOT NULL,
        contact        TEXT NOT NULL,
        instance       TEXT,
        reg_id         INTEGER,
        q              REAL,
        call_id        TEXT NOT NULL,
        cseq           INTEGER NOT NULL,
        branch_hash    INTEGER NOT NULL,
        expires_at     INTEGER NOT NULL,
        transport      TEXT NOT NULL,
        source         TEXT NOT NULL,
        local          TEXT NOT NULL,
        connection_id  INTEGER,
        path           TEXT NOT NULL,
        user_agent     TEXT,
        registered_at  INTEGER NOT NULL,
        PRIMARY KEY (aor, contact)
    ) WITHOUT ROWID;
    CREATE INDEX bindings_expiry ON bindings (expires_at);
    CREATE TABLE meta (
        key    TEXT PRIMARY KEY,
        value  BLOB NOT NULL
    );
    "#,
    // 2: the directory (projects, their extensions, agents, skill groups, access numbers) and
    // persisted presence (agent state and today's counters), so a restart zeroes nothing.
    r#"
    CREATE TABLE projects (
        code        TEXT PRIMARY KEY,
        seats       INTEGER NOT NULL,
        generation  INTEGER NOT NULL,
        cert_hash   BLOB NOT NULL UNIQUE,
        created_at  INTEGER NOT NULL
    );
    ALTER TABLE extensions ADD COLUMN project TEXT REFERENCES projects (code);
    ALTER TABLE extensions ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE extensions ADD COLUMN claimed INTEGER;
    ALTER TABLE extensions ADD COLUMN agent_id TEXT;
    ALTER TABLE extensions ADD COLUMN telephone_type TEXT NOT NULL DEFAULT '01';
    CREATE INDEX extensions_project ON extensions (project);
    CREATE TABLE agents (
        agent_id    TEXT PRIMARY KEY,
        body        TEXT NOT NULL,
        origin      TEXT NOT NULL DEFAULT 'config',
        updated_at  INTEGER NOT NULL
    );
    CREATE TABLE skill_groups (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        origin      TEXT NOT NULL DEFAULT 'config'
    );
    CREATE TABLE access_numbers (
        access_num  TEXT PRIMARY KEY,
        body        TEXT NOT NULL,
        origin      TEXT NOT NULL DEFAULT 'config'
    );
    CREATE TABLE presence (
        extension   TEXT PRIMARY KEY,
        machine     TEXT NOT NULL,
        counters    TEXT NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    "#,
    // 3: call legs as received (ESL or CDR document), calls closed by the reconciler, and the
    // grid call records built from them.
    r#"
    CREATE TABLE cdr_legs (
        core_uuid    TEXT NOT NULL,
        uuid         TEXT NOT NULL,
        source       TEXT NOT NULL,
        call_key     TEXT NOT NULL,
        leg          TEXT NOT NULL,
        document     BLOB,
        received_ms  INTEGER NOT NULL,
        PRIMARY KEY (core_uuid, uuid, source)
    ) WITHOUT ROWID;
    CREATE INDEX cdr_legs_call ON cdr_legs (call_key);
    CREATE TABLE cdr_calls (
        call_key     TEXT PRIMARY KEY,
        session_id   TEXT NOT NULL,
        outcome      TEXT NOT NULL,
        closed_ms    INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE call_records (
        stream_number TEXT PRIMARY KEY,
        call_key      TEXT NOT NULL,
        segment       TEXT NOT NULL,
        record        TEXT NOT NULL,
        created_ms    INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX call_records_call ON call_records (call_key);
    "#,
    // 4: the outbox of records bound for the grid platform, and its dead letters. AUTOINCREMENT
    // so an id is never reused: ids grow in commit order, which is what per-key order and the
    // delivery shell's "rows after the last id read" scan rely on.
    r#"
    CREATE TABLE outbox (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        target       TEXT NOT NULL,
        lane         TEXT NOT NULL,
        idem_key     TEXT NOT NULL,
        payload      BLOB NOT NULL,
        enqueued_ms  INTEGER NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        last_error   TEXT
    );
    CREATE TABLE outbox_dead (
        id           INTEGER PRIMARY KEY,
        target       TEXT NOT NULL,
        lane         TEXT NOT NULL,
        idem_key     TEXT NOT NULL,
        payload      BLOB NOT NULL,
        enqueued_ms  INTEGER NOT NULL,
        attempts     INTEGER NOT NULL,
        reason       TEXT NOT NULL,
        dead_ms      INTEGER NOT NULL
    );
    CREATE INDEX outbox_dead_target ON outbox_dead (target, id);
    "#,
    // 5: the grid API (store/grid.rs): fallback caller IDs pushed by the grid (保底号码,
    // 000:L1020-L1049), one per (orgNo, serviceId or ''); and agents the grid deleted, so a
    // config-seeded agent it deleted stays deleted across restarts.
    r#"
    CREATE TABLE grid_fallback_numbers (
        org_no           TEXT NOT NULL,
        service_id       TEXT NOT NULL DEFAULT '',
        outbound_number  TEXT NOT NULL,
        updated_at       INTEGER NOT NULL,
        PRIMARY KEY (org_no, service_id)
    ) WITHOUT ROWID;
    CREATE TABLE grid_agent_tombstones (
        agent_id    TEXT PRIMARY KEY,
        deleted_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 6: the dialer's per-attempt compliance log (dialer/compliance.rs). Append-only: the
    // triggers refuse updates and deletes, so the abandon rate can always be recomputed from
    // raw records (predictive-dialing.md §3.3).
    r#"
    CREATE TABLE dial_attempts (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        campaign     TEXT NOT NULL,
        number       TEXT NOT NULL,
        caller_id    TEXT NOT NULL,
        dialed_ms    INTEGER NOT NULL,
        answered_ms  INTEGER,
        bridged_ms   INTEGER,
        ended_ms     INTEGER NOT NULL,
        outcome      TEXT NOT NULL,
        live         INTEGER NOT NULL,
        agent        TEXT,
        call_id      TEXT,
        pacing       TEXT
    );
    CREATE INDEX dial_attempts_campaign_end ON dial_attempts (campaign, ended_ms);
    CREATE INDEX dial_attempts_number ON dial_attempts (campaign, number);
    CREATE TRIGGER dial_attempts_no_update BEFORE UPDATE ON dial_attempts
        BEGIN SELECT RAISE(ABORT, 'the compliance log is append-only'); END;
    CREATE TRIGGER dial_attempts_no_delete BEFORE DELETE ON dial_attempts
        BEGIN SELECT RAISE(ABORT, 'the compliance log is append-only'); END;
    "#,
    // 7: the campaign runtime (dialer/store.rs): gateways (lines), call lists, the blacklist,
    // call tasks and each task's numbers. The compliance log gains the seed 004
    // resultDetail of each attempt and the task number it dialled.
    r#"
    CREATE TABLE gateways (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        gw_code      TEXT NOT NULL UNIQUE,
        status       INTEGER NOT NULL,
        concurrency  INTEGER NOT NULL,
        body         TEXT NOT NULL
    );
    CREATE TABLE call_list_entries (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        list_id   TEXT NOT NULL,
        number    TEXT NOT NULL,
        added_ms  INTEGER NOT NULL
    );
    CREATE INDEX call_list_entries_list ON call_list_entries (list_id, id);
    CREATE INDEX call_list_entries_number ON call_list_entries (list_id, number);
    CREATE TABLE blacklist (
        number    TEXT PRIMARY KEY,
        added_ms  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE call_tasks (
        code          TEXT PRIMARY KEY,
        project_code  TEXT NOT NULL,
        status        INTEGER NOT NULL,
        created_ms    INTEGER NOT NULL,
        updated_ms    INTEGER NOT NULL,
        body          TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE task_numbers (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        task_code        TEXT NOT NULL,
        number           TEXT NOT NULL,
        original         TEXT NOT NULL,
        entry_id         INTEGER,
        state            INTEGER NOT NULL DEFAULT 0,
        next_at_ms       INTEGER NOT NULL DEFAULT 0,
        retries          INTEGER NOT NULL DEFAULT 0,
        retry_counts     TEXT NOT NULL DEFAULT '{}',
        last_result      INTEGER,
        last_attempt_id  INTEGER
    );
    CREATE INDEX task_numbers_due ON task_numbers (task_code, state, next_at_ms, id);
    CREATE INDEX task_numbers_number ON task_numbers (task_code, number);
    ALTER TABLE dial_attempts ADD COLUMN result_detail INTEGER;
    ALTER TABLE dial_attempts ADD COLUMN task_number_id INTEGER;
    "#,
    // 8: stored call recordings (recording/store.rs): one row per recording, one per stored
    // format (encrypted file, plaintext size and SHA-256, the key id that sealed it).
    r#"
    CREATE TABLE recordings (
        record_id     TEXT PRIMARY KEY,
        call_id       TEXT NOT NULL,
        agent         TEXT,
        participants  TEXT NOT NULL DEFAULT '[]',
        started_ms    INTEGER NOT NULL,
        ended_ms      INTEGER NOT NULL,
        codec         TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('complete', 'partial')),
        created_ms    INTEGER NOT NULL,
        dtmf          TEXT NOT NULL DEFAULT '[]'
    ) WITHOUT ROWID;
    CREATE INDEX recordings_call ON recordings (call_id);
    CREATE INDEX recordings_ended ON recordings (ended_ms);
    CREATE TABLE recording_files (
        record_id  TEXT NOT NULL REFERENCES recordings (record_id) ON DELETE CASCADE,
        format     TEXT NOT NULL,
        path       TEXT NOT NULL,
        size       INTEGER NOT NULL,
        sha256     TEXT NOT NULL,
        key_id     TEXT NOT NULL,
        PRIMARY KEY (record_id, format)
    ) WITHOUT ROWID;
    "#,
];

pub struct Store {
    conn: Connection,
    durability: Durability,
}

/// How hard a connection syncs. The outbox needs FULL; write-behind registrar state tolerates
/// NORMAL (WAL + NORMAL survives a process crash, not a power cut, and phones re-register).
#[derive(Debug, Clone, Copy)]
pub enum Durability {
    Full,
    Normal,
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path, durability: Durability) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(
            None,
            "synchronous",
            match durability {
                Durability::Full => "FULL",
                Durability::Normal => "NORMAL",
            },
        )?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = Store { conn, durability };
        store.migrate()?;
        Ok(store)
    }

    /// Whether this connection commits with synchronous=FULL.
    pub fn durability_full(&self) -> bool {
        matches!(self.durability, Durability::Full)
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let current = self.schema_version()?;
        let supported = MIGRATIONS.len() as i64;
        if current > supported {
            return Err(StoreError::TooNew {
                found: current,
                supported,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
            tracing::info!(version = i + 1, "applied database migration");
        }
        Ok(())
    }

    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn meta_set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Writes config-seeded extensions in one transaction. Extensions created by other origins
    /// (the management API) are left alone; config-origin rows no longer in the config are
    /// removed so that deleting an `[[extensions]]` entry revokes it.
    pub fn seed_extensions(
        &mut self,
        realm: &str,
        seeds: &[(String, Credential)],
        now_unix: u64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "CREATE TEMP TABLE IF NOT EXISTS seeded (user TEXT PRIMARY KEY)",
            [],
        )?;
        tx.execute("DELETE FROM seeded", [])?;
        {
            let mut up = tx.prepare(
                "INSERT INTO extensions (user, realm, ha1_md5, ha1_sha256, ha1_sha512_256, enabled, origin, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'config', ?7)
                 ON CONFLICT(user) DO UPDATE SET realm = excluded.realm, ha1_md5 = excluded.ha1_md5,
                   ha1_sha256 = excluded.ha1_sha256, ha1_sha512_256 = excluded.ha1_sha512_256,
                   enabled = excluded.enabled, updated_at = excluded.updated_at
                 WHERE extensions.origin = 'config'",
            )?;
            let mut mark = tx.prepare("INSERT OR IGNORE INTO seeded (user) VALUES (?1)")?;
            for (user, c) in seeds {
                up.execute(params![
                    user,
                    realm,
                    c.ha1_hex(Algorithm::Md5),
                    c.ha1_hex(Algorithm::Sha256),
                    c.ha1_hex(Algorithm::Sha512_256),
                    c.enabled,
                    now_unix as i64
                ])?;
                mark.execute([user])?;
            }
        }
        tx.execute("DELETE FROM extensions WHERE origin = 'config' AND user NOT IN (SELECT user FROM seeded)", [])?;
        tx.commit()?;
        Ok(())
    }

    /// The credential table for `realm`. Rows hashed for another realm cannot verify anything
    /// and are skipped (with a warning, since it means the realm changed under them).
    pub fn load_credentials(&self, realm: &str) -> Result<CredentialTable, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT user, realm, ha1_md5, ha1_sha256, ha1_sha512_256, enabled FROM extensions",
        )?;
        let mut rows = stmt.query([])?;
        let mut table = CredentialTable::new();
        let mut wrong_realm = 0usize;
        while let Some(r) = rows.next()? {
            let row_realm: String = r.get(1)?;
            if row_realm != realm {
                wrong_realm += 1;
                continue;
            }
            let user: String = r.get(0)?;
            let (md5, sha256, sha512): (Option<String>, Option<String>, Option<String>) =
                (r.get(2)?, r.get(3)?, r.get(4)?);
            match Credential::from_hex(
                md5.as_deref(),
                sha256.as_deref(),
                sha512.as_deref(),
                r.get(5)?,
            ) {
                Ok(c) => {
                    table.insert(user, c);
                }
                Err(e) => {
                    tracing::warn!(user, error = %e, "skipping extension with an unreadable credential")
                }
            }
        }
        if wrong_realm > 0 {
            tracing::warn!(
                count = wrong_realm,
                realm,
                "extensions hashed for another realm were skipped; re-seed their passwords"
            );
        }
        Ok(table)
    }

    /// Applies a batch of write-behind binding changes in one transaction.
    pub fn apply_bindings(&mut self, batch: &[Persist]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut up = tx.prepare_cached(
                "INSERT OR REPLACE INTO bindings (aor, contact, instance, reg_id, q, call_id, cseq, branch_hash,
                   expires_at, transport, source, local, connection_id, path, user_agent, registered_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?;
            let mut del =
                tx.prepare_cached("DELETE FROM bindings WHERE aor = ?1 AND contact = ?2")?;
            for p in batch {
                match p {
                    Persist::Upsert { aor, binding: b } => {
                        up.execute(params![
                            aor,
                            b.contact,
                            b.instance,
                            b.reg_id,
                            b.q,
                            b.call_id,
                            b.cseq,
                            b.branch_hash as i64,
                            b.expires_at as i64,
                            b.flow.transport.as_str(),
                            b.flow.source.to_string(),
                            b.flow.local.to_string(),
                            b.flow.connection.map(|c| c.0 as i64),
                            b.path.join("\n"),
                            b.user_agent,
                            b.registered_at as i64,
                        ])?;
                    }
                    Persist::Delete { aor, contact } => {
                        del.execute(params![aor, contact])?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every persisted binding that has not expired by `now_unix`; expired rows are deleted.
    pub fn load_bindings(&mut self, now_unix: u64) -> Result<Vec<(String, Binding)>, StoreError> {
        self.conn.execute(
            "DELETE FROM bindings WHERE expires_at <= ?1",
            [now_unix as i64],
        )?;
        let mut stmt = self.conn.prepare(
            "SELECT aor, contact, instance, reg_id, q, call_id, cseq, branch_hash, expires_at, transport,
                    source, local, connection_id, path, user_agent, registered_at FROM bindings",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let transport: String = r.get(9)?;
            let source: String = r.get(10)?;
            let local: String = r.get(11)?;
            let (Some(transport), Ok(source), Ok(local)) =
                (Transport::parse(&transport), source.parse(), local.parse())
            else {
                tracing::warn!("skipping unreadable persisted binding");
                continue;
            };
            let path: String = r.get(13)?;
            let binding = Binding {
                contact: r.get(1)?,
                instance: r.get(2)?,
                reg_id: r.get(3)?,
                q: r.get(4)?,
                call_id: r.get(5)?,
                cseq: r.get(6)?,
                branch_hash: r.get::<_, i64>(7)? as u64,
                expires_at: r.get::<_, i64>(8)? as u64,
                flow: Flow {
                    transport,
                    source,
                    local,
                    connection: r.get::<_, Option<i64>>(12)?.map(|c| ConnectionId(c as u64)),
                },
                path: if path.is_empty() {
                    Vec::new()
                } else {
                    path.split('\n').map(str::to_owned).collect()
                },
                user_agent: r.get(14)?,
                registered_at: r.get::<_, i64>(15)? as u64,
            };
            out.push((r.get(0)?, binding));
        }
        Ok(out)
    }

    /// Gives up the wrapper for a subsystem that owns its connection (the outbox writer).
    pub fn into_connection(self) -> Connection {
        self.conn
    }

    pub fn connection_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(contact: &str, expires_at: u64, transport: Transport) -> Binding {
        Binding {
            contact: contact.into(),
            instance: Some("<urn:uuid:1>".into()),
            reg_id: Some(1),
            q: Some(0.5),
            call_id: "cid".into(),
            cseq: 7,
            branch_hash: u64::MAX - 3,
            expires_at,
            flow: Flow {
                transport,
                source: "192.0.2.7:5062".parse().unwrap(),
                local: "127.0.0.1:5060".parse().unwrap(),
                connection: None,
            },
            path: vec!["<sip:p1>".into(), "<sip:p2>".into()],
            user_agent: Some("ua".into()),
            registered_at: 900,
        }
    }

    #[test]
    fn migrates_a_real_file_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/gridedge.db");
        let s = Store::open(&path, Durability::Full).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let mode: String = s
            .connection()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(s);
        let s = Store::open(&path, Durability::Normal).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let s = Store::open(&path, Durability::Full).unwrap();
        s.connection()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        drop(s);
        assert!(matches!(
            Store::open(&path, Durability::Full),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn bindings_round_trip_and_expired_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("g.db"), Durability::Normal).unwrap();
        let live = binding("sip:a@h", 2000, Transport::Udp);
        s.apply_bindings(&[
            Persist::Upsert {
                aor: "1001".into(),
                binding: live.clone(),
            },
            Persist::Upsert {
                aor: "1002".into(),
                binding: binding("sip:b@h", 1000, Transport::Udp),
            },
            Persist::Upsert {
                aor: "1003".into(),
                binding: binding("sip:c@h", 2000, Transport::Udp),
            },
            Persist::Delete {
                aor: "1003".into(),
                contact: "sip:c@h".into(),
            },
        ])
        .unwrap();
        let loaded = s.load_bindings(1500).unwrap();
        assert_eq!(loaded, vec![("1001".to_string(), live)]);
        let rows: i64 = s
            .connection()
            .query_row("SELECT count(*) FROM bindings", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1, "expired row deleted at load");
    }

    #[test]
    fn seeding_stores_only_hashes_and_revokes_removed_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("g.db"), Durability::Full).unwrap();
        let c = Credential::from_password("1001", "r", "pw-plain");
        s.seed_extensions(
            "r",
            &[("1001".into(), c.clone()), ("1002".into(), c.clone())],
            1,
        )
        .unwrap();
        let t = s.load_credentials("r").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t["1001"], c);
        // Nothing in the file is the plaintext password.
        let dump: String = s
            .connection()
            .query_row("SELECT group_concat(coalesce(ha1_md5,'') || coalesce(ha1_sha256,''), '|') FROM extensions", [], |r| r.get(0))
            .unwrap();
        assert!(!dump.contains("pw-plain"));
        s.seed_extensions("r", &[("1001".into(), c)], 2).unwrap();
        assert_eq!(s.load_credentials("r").unwrap().len(), 1);
        assert!(s.load_credentials("other").unwrap().is_empty());
    }

    #[test]
    fn meta_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("g.db"), Durability::Full).unwrap();
        assert_eq!(s.meta_get("k").unwrap(), None);
        s.meta_set("k", b"v1").unwrap();
        s.meta_set("k", b"v2").unwrap();
        assert_eq!(s.meta_get("k").unwrap().as_deref(), Some(&b"v2"[..]));
    }
}
