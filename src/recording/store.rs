//! The recording index (migration 8): `recordings` (one row per recording) and
//! `recording_files` (one row per stored format). Written in one transaction per recording
//! by the transcoder, read by the download and the listing, pruned by retention.

use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::transcode::Format;
use crate::store::{Durability, Store, StoreError};

/// How a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingStatus {
    /// Ended by BYE, CANCEL or RTP timeout.
    Complete,
    /// Repaired after a crash.
    Partial,
    /// Still being written: only ever seen in a spool sidecar. A sidecar still saying so at
    /// start-up belongs to a recording a crash cut; it is repaired and indexed as partial.
    Recording,
}

impl RecordingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingStatus::Complete => "complete",
            RecordingStatus::Partial => "partial",
            RecordingStatus::Recording => "recording",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "complete" => Some(RecordingStatus::Complete),
            "partial" => Some(RecordingStatus::Partial),
            _ => None,
        }
    }
}

/// What is known of a recording when it is handed to the transcoder; also its JSON sidecar
/// (`<spool>/<record_id>.json` next to `<record_id>.wav`) so a backlog can be converted after
/// a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingMeta {
    pub record_id: String,
    /// SIP Call-ID of the recording INVITE.
    pub call_id: String,
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default)]
    pub participants: Vec<String>,
    pub started_ms: u64,
    pub ended_ms: u64,
    /// Codec(s) received, e.g. "PCMA" or "PCMU/G722".
    pub codec: String,
    pub status: RecordingStatus,
    /// The recorded call's identifiers (softswitch uuid, SIPREC session ids): how its CDR
    /// finds this recording. Kept in the sidecar, not in the index.
    #[serde(default)]
    pub call_refs: Vec<String>,
    /// RFC 4733 key presses heard during the recording (metadata, never audio).
    #[serde(default)]
    pub dtmf: Vec<DtmfMark>,
}

/// One key press: when, how long, on which side, and the key, which is masked (`*`→`x`)
/// unless `[recording] dtmf_digits` is on: digits typed during a call are often card numbers
/// or PINs, and the index is not encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DtmfMark {
    pub offset_ms: u64,
    pub duration_ms: u32,
    /// `customer` or `agent`.
    pub side: String,
    pub key: String,
}

impl RecordingMeta {
    /// Writes the spool sidecar durably: temp file, fsync, rename. A sidecar is what lets a
    /// start-up (or `gridedge transcode`) index a recording the daemon never finished.
    pub fn write_sidecar(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself must survive a power cut, or the WAV could outlive its sidecar.
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// One stored format of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub format: Format,
    /// Relative to the recordings root (`YYYY/MM/DD/<id>.<fmt>.gre`).
    pub path: String,
    /// Plaintext bytes.
    pub size: u64,
    /// SHA-256 of the plaintext, hex.
    pub sha256: String,
    pub key_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecording {
    pub meta: RecordingMeta,
    pub created_ms: u64,
    pub files: Vec<StoredFile>,
}

impl StoredRecording {
    pub fn file(&self, f: Format) -> Option<&StoredFile> {
        self.files.iter().find(|x| x.format == f)
    }
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn conv(col: usize, msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        col,
        rusqlite::types::Type::Text,
        Box::<dyn std::error::Error + Send + Sync>::from(msg),
    )
}

fn meta_row(r: &Row<'_>) -> rusqlite::Result<(RecordingMeta, u64)> {
    let participants: String = r.get(3)?;
    let status: String = r.get(7)?;
    let dtmf: String = r.get(9)?;
    Ok((
        RecordingMeta {
            record_id: r.get(0)?,
            call_id: r.get(1)?,
            agent: r.get(2)?,
            participants: serde_json::from_str(&participants)
                .map_err(|e| conv(3, format!("participants: {e}")))?,
            started_ms: r.get::<_, i64>(4)?.max(0) as u64,
            ended_ms: r.get::<_, i64>(5)?.max(0) as u64,
            codec: r.get(6)?,
            status: RecordingStatus::parse(&status)
                .ok_or_else(|| conv(7, format!("status {status:?}")))?,
            call_refs: Vec::new(),
            dtmf: serde_json::from_str(&dtmf).map_err(|e| conv(9, format!("dtmf: {e}")))?,
        },
        r.get::<_, i64>(8)?.max(0) as u64,
    ))
}

const META_COLS: &str =
    "record_id, call_id, agent, participants, started_ms, ended_ms, codec, status, created_ms, dtmf";

pub struct RecordingStore {
    store: Store,
}

impl RecordingStore {
    /// Opens the daemon's database (migrated by `Store::open`), synchronous=FULL: a committed
    /// index row is on disk before the spool file it replaces is deleted.
    pub fn open(path: &std::path::Path) -> Result<RecordingStore, StoreError> {
        Ok(RecordingStore {
            store: Store::open(path, Durability::Full)?,
        })
    }

    /// Records (or re-records, after a crash) a recording and its files in one transaction.
    pub fn commit(
        &mut self,
        meta: &RecordingMeta,
        files: &[StoredFile],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let participants =
            serde_json::to_string(&meta.participants).unwrap_or_else(|_| "[]".into());
        let dtmf = serde_json::to_string(&meta.dtmf).unwrap_or_else(|_| "[]".into());
        let tx = self.store.connection_mut().transaction()?;
        tx.execute(
            "INSERT INTO recordings (record_id, call_id, agent, participants, started_ms, ended_ms, codec, status, created_ms, dtmf)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (record_id) DO UPDATE SET call_id = excluded.call_id, agent = excluded.agent,
               participants = excluded.participants, started_ms = excluded.started_ms,
               ended_ms = excluded.ended_ms, codec = excluded.codec, status = excluded.status,
               dtmf = excluded.dtmf",
            params![
                meta.record_id,
                meta.call_id,
                meta.agent,
                participants,
                ms(meta.started_ms),
                ms(meta.ended_ms),
                meta.codec,
                meta.status.as_str(),
                ms(now_ms),
                dtmf
            ],
        )?;
        for f in files {
            upsert_file(&tx, &meta.record_id, f)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Adds (or replaces) one format of a stored recording (`gridedge transcode --add-format`).
    pub fn add_file(&mut self, record_id: &str, f: &StoredFile) -> Result<(), StoreError> {
        upsert_file(self.store.connection(), record_id, f)?;
        Ok(())
    }

    pub fn get(&self, record_id: &str) -> Result<Option<StoredRecording>, StoreError> {
        let c = self.store.connection();
        let row = c
            .query_row(
                &format!("SELECT {META_COLS} FROM recordings WHERE record_id = ?1"),
                [record_id],
                meta_row,
            )
            .optional()?;
        match row {
            None => Ok(None),
            Some((meta, created_ms)) => {
                let files = self.files(&meta.record_id)?;
                Ok(Some(StoredRecording {
                    meta,
                    created_ms,
                    files,
                }))
            }
        }
    }

    fn files(&self, record_id: &str) -> Result<Vec<StoredFile>, StoreError> {
        let c = self.store.connection();
        let mut st = c.prepare_cached(
            "SELECT format, path, size, sha256, key_id FROM recording_files WHERE record_id = ?1 ORDER BY format",
        )?;
        let rows = st.query_map([record_id], |r| {
            let format: String = r.get(0)?;
            Ok(StoredFile {
                format: Format::parse(&format).map_err(|e| conv(0, e))?,
                path: r.get(1)?,
                size: r.get::<_, i64>(2)?.max(0) as u64,
                sha256: r.get(3)?,
                key_id: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn select(
        &self,
        where_: &str,
        p: impl rusqlite::Params,
    ) -> Result<Vec<StoredRecording>, StoreError> {
        let metas: Vec<(RecordingMeta, u64)> = {
            let c = self.store.connection();
            let mut st = c.prepare(&format!("SELECT {META_COLS} FROM recordings {where_}"))?;
            let rows = st.query_map(p, meta_row)?;
            rows.collect::<Result<_, _>>()?
        };
        metas
            .into_iter()
            .map(|(meta, created_ms)| {
                Ok(StoredRecording {
                    files: self.files(&meta.record_id)?,
                    meta,
                    created_ms,
                })
            })
            .collect()
    }

    /// Recordings of one SIP Call-ID, oldest first.
    pub fn by_call(&self, call_id: &str) -> Result<Vec<StoredRecording>, StoreError> {
        self.select(
            "WHERE call_id = ?1 ORDER BY started_ms, record_id LIMIT 1000",
            [call_id],
        )
    }

    /// Recordings that ended before `cutoff_ms` (retention candidates), oldest first.
    pub fn ended_before(
        &self,
        cutoff_ms: u64,
        limit: usize,
    ) -> Result<Vec<StoredRecording>, StoreError> {
        self.select(
            "WHERE ended_ms < ?1 ORDER BY ended_ms LIMIT ?2",
            params![ms(cutoff_ms), limit as i64],
        )
    }

    /// Recordings without `format`, in id order after `after` (paging).
    pub fn missing_format(
        &self,
        format: Format,
        after: &str,
        limit: usize,
    ) -> Result<Vec<StoredRecording>, StoreError> {
        self.select(
            "WHERE record_id > ?1 AND NOT EXISTS (SELECT 1 FROM recording_files f
               WHERE f.record_id = recordings.record_id AND f.format = ?2)
             ORDER BY record_id LIMIT ?3",
            params![after, format.name(), limit as i64],
        )
    }

    /// Deletes a recording's rows (files cascade). Returns whether it existed.
    pub fn delete(&mut self, record_id: &str) -> Result<bool, StoreError> {
        let tx = self.store.connection_mut().transaction()?;
        tx.execute(
            "DELETE FROM recording_files WHERE record_id = ?1",
            [record_id],
        )?;
        let n = tx.execute("DELETE FROM recordings WHERE record_id = ?1", [record_id])?;
        tx.commit()?;
        Ok(n > 0)
    }
}

fn upsert_file(
    c: &rusqlite::Connection,
    record_id: &str,
    f: &StoredFile,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO recording_files (record_id, format, path, size, sha256, key_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (record_id, format) DO UPDATE SET path = excluded.path, size = excluded.size,
           sha256 = excluded.sha256, key_id = excluded.key_id",
        params![
            record_id,
            f.format.name(),
            f.path,
            ms(f.size),
            f.sha256,
            f.key_id
        ],
    )?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn meta(id: &str, call: &str, ended_ms: u64) -> RecordingMeta {
        RecordingMeta {
            record_id: id.into(),
            call_id: call.into(),
            agent: Some("1001".into()),
            participants: vec!["sip:1001@x".into(), "sip:+4930123@x".into()],
            started_ms: ended_ms.saturating_sub(60_000),
            ended_ms,
            codec: "PCMA".into(),
            status: RecordingStatus::Complete,
            call_refs: vec![],
            dtmf: vec![],
        }
    }

    fn file(f: Format, size: u64) -> StoredFile {
        StoredFile {
            format: f,
            path: format!("2026/11/21/r.{}.gre", f.name()),
            size,
            sha256: "ab".repeat(32),
            key_id: "0123456789abcdef".into(),
        }
    }

    #[test]
    fn commit_get_list_and_delete_on_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("gridedge.db");
        let mut s = RecordingStore::open(&db).unwrap();
        let m = meta("r1", "call-a", 1_000_000);
        s.commit(&m, &[file(Format::Wav, 100), file(Format::Alaw, 50)], 7)
            .unwrap();
        // Idempotent re-commit (a crash between commit and spool deletion re-runs it).
        s.commit(&m, &[file(Format::Wav, 100)], 8).unwrap();
        s.commit(&meta("r2", "call-a", 2_000_000), &[file(Format::Wav, 1)], 9)
            .unwrap();
        drop(s);
        let mut s = RecordingStore::open(&db).unwrap();
        let got = s.get("r1").unwrap().unwrap();
        assert_eq!(got.meta, m);
        assert_eq!(got.created_ms, 7);
        assert_eq!(got.files.len(), 2);
        assert_eq!(got.file(Format::Alaw).unwrap().size, 50);
        assert!(s.get("nope").unwrap().is_none());
        let ids = |v: Vec<StoredRecording>| -> Vec<String> {
            v.into_iter().map(|r| r.meta.record_id).collect()
        };
        assert_eq!(ids(s.by_call("call-a").unwrap()), ["r1", "r2"]);
        assert_eq!(ids(s.ended_before(1_500_000, 10).unwrap()), ["r1"]);
        assert_eq!(ids(s.missing_format(Format::Alaw, "", 10).unwrap()), ["r2"]);
        assert_eq!(
            ids(s.missing_format(Format::Wav16k, "r1", 10).unwrap()),
            ["r2"]
        );
        s.add_file("r2", &file(Format::Alaw, 3)).unwrap();
        assert!(s.missing_format(Format::Alaw, "", 10).unwrap().is_empty());
        assert!(s.delete("r1").unwrap());
        assert!(!s.delete("r1").unwrap());
        assert!(s.get("r1").unwrap().is_none());
        let n: i64 = s
            .store
            .connection()
            .query_row(
                "SELECT COUNT(*) FROM recording_files WHERE record_id = 'r1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0);
        // A file row without its recording is refused (foreign key).
        assert!(s.add_file("ghost", &file(Format::Wav, 1)).is_err());
    }

    #[test]
    fn sidecar_json_round_trips() {
        let m = meta("r1", "c", 5);
        let j = serde_json::to_string(&m).unwrap();
        assert!(j.contains("\"status\":\"complete\""), "{j}");
        assert_eq!(serde_json::from_str::<RecordingMeta>(&j).unwrap(), m);
        let min = r#"{"record_id":"x","call_id":"c","started_ms":1,"ended_ms":2,"codec":"PCMU","status":"partial"}"#;
        let m: RecordingMeta = serde_json::from_str(min).unwrap();
        assert_eq!(m.status, RecordingStatus::Partial);
        assert!(serde_json::from_str::<RecordingMeta>(r#"{"record_id":"x"}"#).is_err());
    }
}
