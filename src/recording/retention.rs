//! Retention: recordings whose end is more than `retention_days` ago are deleted, files
//! first, then index rows. A crash in between leaves rows whose files are gone; the next run
//! finds them again (a missing file counts as removed) and deletes the rows. The reverse
//! order could leave unindexed files nobody would ever delete.

use std::io;
use std::path::Path;

use super::store::{RecordingStore, StoredRecording};
use crate::store::StoreError;

const DAY_MS: u64 = 86_400_000;

/// Sans-IO: the ids among `rows` that have expired at `now_ms`. `retention_days == 0` keeps
/// everything (retention off).
pub fn expired(rows: &[StoredRecording], now_ms: u64, retention_days: u32) -> Vec<&str> {
    if retention_days == 0 {
        return Vec::new();
    }
    let keep = u64::from(retention_days).saturating_mul(DAY_MS);
    rows.iter()
        .filter(|r| r.meta.ended_ms.saturating_add(keep) <= now_ms)
        .map(|r| r.meta.record_id.as_str())
        .collect()
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    /// Recordings whose rows were deleted.
    pub recordings: usize,
    /// Files removed (or already gone).
    pub files: usize,
    /// Recordings kept for now because a file could not be removed (logged).
    pub errors: usize,
}

/// The shell: deletes expired recordings, `batch` rows per query, until none is left.
pub fn apply(
    store: &mut RecordingStore,
    recordings_dir: &Path,
    now_ms: u64,
    retention_days: u32,
    batch: usize,
) -> Result<RetentionReport, StoreError> {
    let mut report = RetentionReport::default();
    if retention_days == 0 {
        return Ok(report);
    }
    let cutoff = now_ms.saturating_sub(u64::from(retention_days).saturating_mul(DAY_MS)) + 1;
    let mut failed: Vec<String> = Vec::new();
    loop {
        let rows = store.ended_before(cutoff, batch.max(1) + failed.len())?;
        let ids: Vec<String> = expired(&rows, now_ms, retention_days)
            .into_iter()
            .filter(|id| !failed.iter().any(|f| f == id))
            .map(str::to_owned)
            .collect();
        if ids.is_empty() {
            break;
        }
        for id in ids {
            let Some(rec) = rows.iter().find(|r| r.meta.record_id == id) else {
                continue;
            };
            match remove_files(rec, recordings_dir) {
                Ok(n) => {
                    report.files += n;
                    if store.delete(&id)? {
                        report.recordings += 1;
                    }
                }
                Err(e) => {
                    tracing::warn!(record_id = %id, error = %e, "cannot delete an expired recording's file; kept for the next run");
                    report.errors += 1;
                    failed.push(id);
                }
            }
        }
    }
    Ok(report)
}

fn remove_files(rec: &StoredRecording, root: &Path) -> io::Result<usize> {
    let mut n = 0;
    for f in &rec.files {
        let p = root.join(&f.path);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        n += 1;
        // Empty day directories go too (fails harmlessly when not empty).
        if let Some(d) = p.parent() {
            let _ = std::fs::remove_dir(d);
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::store::tests::meta;
    use crate::recording::transcode::tests::{config, spool};
    use crate::recording::transcode::Format;

    fn rec(id: &str, ended_ms: u64) -> StoredRecording {
        StoredRecording {
            meta: meta(id, "c", ended_ms),
            created_ms: 0,
            files: vec![],
        }
    }

    #[test]
    fn the_decision_is_by_end_time_and_zero_keeps_everything() {
        let now = 100 * DAY_MS;
        let rows = [
            rec("old", 9 * DAY_MS),
            rec("edge", 10 * DAY_MS),
            rec("young", 10 * DAY_MS + 1),
        ];
        assert_eq!(expired(&rows, now, 90), ["old", "edge"]);
        assert!(expired(&rows, now, 0).is_empty());
        assert!(expired(&rows, now, u32::MAX).is_empty());
        assert!(expired(&rows, 0, 1).is_empty());
    }

    #[test]
    fn the_shell_deletes_files_then_rows_and_survives_a_half_done_run() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), vec![Format::Wav, Format::Alaw]);
        let mut store = RecordingStore::open(&cfg.db_path).unwrap();
        let mut paths = Vec::new();
        for id in ["a", "b", "c"] {
            let s = cfg.run(&mut store, &spool(dir.path(), id, 80), 1).unwrap();
            paths.push(cfg.recordings_dir.join(&s.files[0].path));
        }
        // "b" ended later than the others.
        let mut m = store.get("b").unwrap().unwrap().meta;
        m.ended_ms += 200 * DAY_MS;
        store.commit(&m, &[], 1).unwrap();
        // "c" lost its files already (a crash after deleting them, before the rows).
        std::fs::remove_file(&paths[2]).unwrap();
        let ended = store.get("a").unwrap().unwrap().meta.ended_ms;
        let now = ended + 90 * DAY_MS;
        let r = apply(&mut store, &cfg.recordings_dir, now, 90, 1).unwrap();
        assert_eq!(
            r,
            RetentionReport {
                recordings: 2,
                files: 4,
                errors: 0
            }
        );
        assert!(store.get("a").unwrap().is_none() && store.get("c").unwrap().is_none());
        assert!(!paths[0].exists());
        assert!(store.get("b").unwrap().is_some() && paths[1].exists());
        // Nothing more to do; retention off deletes nothing.
        assert_eq!(
            apply(&mut store, &cfg.recordings_dir, now, 90, 10).unwrap(),
            RetentionReport::default()
        );
        assert_eq!(
            apply(&mut store, &cfg.recordings_dir, u64::MAX, 0, 10).unwrap(),
            RetentionReport::default()
        );
    }
}
