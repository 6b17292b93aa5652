//! `gridedge transcode`: converts a backlog in batch — every spool WAV with a JSON sidecar
//! (`<id>.wav` + `<id>.json`) that is not yet stored, or (`--add-format`) a new format for
//! every stored recording that lacks it — on `--jobs` threads, with a progress line on stderr.
//!
//! The per-file work is exactly the daemon's ([`TranscodeConfig::run`] /
//! [`TranscodeConfig::add_format`]), so it is as crash-safe and idempotent: a batch can be
//! interrupted and run again, also while the daemon runs (SQLite serializes the commits).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::crypto::{Keyring, DEFAULT_CHUNK};
use super::store::RecordingStore;
use super::transcode::{Format, TranscodeConfig, TranscodeJob};

#[derive(clap::Args, Debug, Clone)]
pub struct TranscodeArgs {
    /// The daemon's config: its state directory, `[recording] key_file` and `formats` are
    /// the defaults of the options below (embedded defaults when neither is given).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The daemon's state directory (database `gridedge.db`, `recordings/`).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// AES-256 key file (default `<state-dir>/recording.key`; created 0600 when absent).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Spool directory holding `<id>.wav` + `<id>.json` (default `<state-dir>/recordings/spool`).
    #[arg(long)]
    pub spool_dir: Option<PathBuf>,
    /// Output formats, in order (wav, alaw, wav16k); the first is what downloads serve
    /// (default: the config's `[recording] formats`).
    #[arg(long = "format", value_delimiter = ',')]
    pub formats: Vec<String>,
    /// Instead of the spool: add this format to every stored recording that lacks it.
    #[arg(long)]
    pub add_format: Option<String>,
    /// Worker threads (default: available cores).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

/// Counts a batch keeps while running; read by the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    pub total: usize,
    pub done: AtomicUsize,
    pub failed: AtomicUsize,
    /// Input frames converted (8 kHz), for ×real-time.
    pub frames: AtomicU64,
}

/// What a batch did.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchReport {
    pub total: usize,
    pub done: usize,
    pub failed: usize,
    /// Spool WAVs without a sidecar (left alone).
    pub skipped: usize,
    pub audio_secs: f64,
    pub wall_secs: f64,
    pub jobs: usize,
}

impl BatchReport {
    pub fn realtime(&self) -> f64 {
        if self.wall_secs > 0.0 {
            self.audio_secs / self.wall_secs
        } else {
            0.0
        }
    }
}

/// `12/100 files  35.2 files/s  1234× real-time  ETA 3s` (pure, for the progress line).
pub fn progress_line(done: usize, total: usize, frames: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = done as f64 / secs;
    let xrt = frames as f64 / 8000.0 / secs;
    let eta = if done == 0 {
        "?".to_string()
    } else {
        format!("{:.0}s", (total - done.min(total)) as f64 / rate)
    };
    format!("{done}/{total} files  {rate:.1} files/s  {xrt:.0}× real-time  ETA {eta}")
}

enum Work {
    Spool(PathBuf),
    AddFormat(String),
}

/// Spool WAVs with their sidecar, sorted; and how many have none.
fn spool_backlog(dir: &Path) -> anyhow::Result<(Vec<PathBuf>, usize)> {
    let mut wavs = Vec::new();
    let mut skipped = 0;
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((wavs, 0)),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for e in rd {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "wav") && p.is_file() {
            if p.with_extension("json").is_file() {
                // A recording still being written (the daemon is running), or one a crash
                // cut (the daemon repairs and indexes those when it starts): not ours to touch.
                let live = TranscodeJob::from_sidecar(&p)
                    .is_ok_and(|j| j.meta.status == super::store::RecordingStatus::Recording);
                if live {
                    skipped += 1;
                    continue;
                }
                wavs.push(p);
            } else {
                skipped += 1;
            }
        }
    }
    wavs.sort();
    Ok((wavs, skipped))
}

/// Runs a batch over `cfg` (see the module comment). `on_tick` is called at most every
/// `tick` with the running counts, and once at the end.
pub fn transcode_backlog(
    cfg: &TranscodeConfig,
    spool_dir: &Path,
    add_format: Option<Format>,
    jobs: usize,
    tick: Duration,
    on_tick: &mut dyn FnMut(&Progress, Duration),
) -> anyhow::Result<BatchReport> {
    let mut skipped = 0;
    let work: Vec<Work> = match add_format {
        None => {
            let (w, s) = spool_backlog(spool_dir)?;
            skipped = s;
            w.into_iter().map(Work::Spool).collect()
        }
        Some(f) => {
            let store = RecordingStore::open(&cfg.db_path)?;
            let mut ids = Vec::new();
            let mut after = String::new();
            loop {
                let page = store.missing_format(f, &after, 1000)?;
                let Some(last) = page.last() else { break };
                after = last.meta.record_id.clone();
                ids.extend(page.into_iter().map(|r| Work::AddFormat(r.meta.record_id)));
            }
            ids
        }
    };
    let progress = Arc::new(Progress {
        total: work.len(),
        ..Default::default()
    });
    let work = Arc::new(Mutex::new(work.into_iter()));
    let jobs = jobs.max(1);
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..jobs {
        let mut store = RecordingStore::open(&cfg.db_path)?;
        let (work, progress, cfg) = (Arc::clone(&work), Arc::clone(&progress), cfg.clone());
        handles.push(std::thread::spawn(move || loop {
            let next = match work.lock() {
                Ok(mut w) => w.next(),
                Err(_) => None,
            };
            let Some(item) = next else { return };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let r = match &item {
                Work::Spool(wav) => TranscodeJob::from_sidecar(wav)
                    .and_then(|job| cfg.run(&mut store, &job, now))
                    .map(|s| s.frames),
                Work::AddFormat(id) => add_format
                    .ok_or_else(|| super::transcode::TranscodeError::Resample("no format".into()))
                    .and_then(|f| cfg.add_format(&mut store, id, f))
                    .map(|(_, frames)| frames),
            };
            match r {
                Ok(frames) => {
                    progress.frames.fetch_add(frames, Ordering::Relaxed);
                }
                Err(e) => {
                    let what = match &item {
                        Work::Spool(p) => p.display().to_string(),
                        Work::AddFormat(id) => id.clone(),
                    };
                    tracing::warn!(item = %what, error = %e, "transcode failed");
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            progress.done.fetch_add(1, Ordering::Relaxed);
        }));
    }
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(
            tick.min(Duration::from_millis(20))
                .max(Duration::from_millis(1)),
        );
        if t0.elapsed() >= tick {
            on_tick(&progress, t0.elapsed());
        }
    }
    for h in handles {
        let _ = h.join();
    }
    let wall = t0.elapsed();
    on_tick(&progress, wall);
    Ok(BatchReport {
        total: progress.total,
        done: progress.done.load(Ordering::Relaxed),
        failed: progress.failed.load(Ordering::Relaxed),
        skipped,
        audio_secs: progress.frames.load(Ordering::Relaxed) as f64 / 8000.0,
        wall_secs: wall.as_secs_f64(),
        jobs,
    })
}

/// `gridedge transcode` (wired into main.rs's clap by the integrator).
pub fn run_transcode(mut args: TranscodeArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(p) => crate::config::Config::load(p)
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?,
        None => crate::config::Config::parse("")
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?,
    };
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| config.state.dir.clone());
    if args.key_file.is_none() {
        args.key_file = config.recording.key_file.clone();
    }
    if args.formats.is_empty() {
        args.formats = config.recording.formats.clone();
    }
    let formats = args
        .formats
        .iter()
        .map(|f| Format::parse(f.trim()).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if formats.is_empty() {
        anyhow::bail!("--format: at least one output format is needed");
    }
    let add_format = args
        .add_format
        .as_deref()
        .map(|f| Format::parse(f.trim()).map_err(anyhow::Error::msg))
        .transpose()?;
    let key_file = args
        .key_file
        .clone()
        .unwrap_or_else(|| state_dir.join("recording.key"));
    let keyring = Keyring::load_or_create(&key_file)?;
    let cfg = TranscodeConfig {
        recordings_dir: state_dir.join("recordings"),
        db_path: state_dir.join("gridedge.db"),
        formats,
        keyring: Arc::new(keyring),
        chunk: DEFAULT_CHUNK,
    };
    let spool = args
        .spool_dir
        .clone()
        .unwrap_or_else(|| cfg.recordings_dir.join("spool"));
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let quiet = args.quiet;
    let mut last = Instant::now() - Duration::from_secs(1);
    let mut tick = |p: &Progress, elapsed: Duration| {
        // At most ~10 updates a second, on one line.
        if quiet || last.elapsed() < Duration::from_millis(100) {
            return;
        }
        last = Instant::now();
        let line = progress_line(
            p.done.load(Ordering::Relaxed),
            p.total,
            p.frames.load(Ordering::Relaxed),
            elapsed,
        );
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    };
    let r = transcode_backlog(
        &cfg,
        &spool,
        add_format,
        jobs,
        Duration::from_millis(100),
        &mut tick,
    )?;
    eprintln!(
        "{}transcoded {} of {} files ({} failed, {} spool WAVs without sidecar or still recording skipped): {:.1} s of audio in {:.2} s, {:.0}× real-time ({:.0}× per job, {} jobs)",
        if quiet { "" } else { "\n" },
        r.done - r.failed,
        r.total,
        r.failed,
        r.skipped,
        r.audio_secs,
        r.wall_secs,
        r.realtime(),
        r.realtime() / r.jobs as f64,
        r.jobs
    );
    if r.failed > 0 {
        anyhow::bail!(
            "{} of {} files failed (see the log); they were left in place",
            r.failed,
            r.total
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::transcode::tests::{spool, stereo_wav};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TranscodeArgs,
    }

    #[test]
    fn progress_line_reads_well() {
        let l = progress_line(12, 100, 8000 * 1234, Duration::from_secs(1));
        assert_eq!(l, "12/100 files  12.0 files/s  1234× real-time  ETA 7s");
        assert!(progress_line(0, 5, 0, Duration::ZERO).ends_with("ETA ?"));
    }

    #[test]
    fn a_backlog_is_converted_once_and_formats_can_be_added() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let sp = state.join("recordings");
        for i in 0..5 {
            spool(&sp, &format!("b{i}"), 8000);
        }
        // Malformed input with a sidecar: fails, stays. A WAV without sidecar: skipped.
        let bad = spool(&sp, "bad", 10);
        std::fs::write(&bad.spool_wav, b"junk").unwrap();
        stereo_wav(&sp.join("spool/orphan.wav"), 10);
        let cli = Cli::parse_from([
            "t",
            "--state-dir",
            state.to_str().unwrap(),
            "--format",
            "wav,alaw",
            "-j",
            "2",
            "--quiet",
        ]);
        assert_eq!(cli.args.formats, ["wav", "alaw"]);
        let e = run_transcode(cli.args.clone()).unwrap_err().to_string();
        assert!(e.contains("1 of 6 files failed"), "{e}");
        assert!(bad.spool_wav.exists() && sp.join("spool/orphan.wav").exists());
        assert!(!sp.join("spool/b0.wav").exists());
        // The key was created 0600 under the state dir.
        let keyring = Keyring::load_or_create(&state.join("recording.key")).unwrap();
        let store = RecordingStore::open(&state.join("gridedge.db")).unwrap();
        assert_eq!(store.by_call("call-1").unwrap().len(), 5);
        // Again: only the bad file is left, nothing is converted twice.
        std::fs::remove_file(&bad.spool_wav).unwrap();
        std::fs::remove_file(bad.spool_wav.with_extension("json")).unwrap();
        run_transcode(cli.args.clone()).unwrap();
        // Add a format to everything stored.
        let cfg = TranscodeConfig {
            recordings_dir: state.join("recordings"),
            db_path: state.join("gridedge.db"),
            formats: vec![Format::Wav],
            keyring: Arc::new(keyring),
            chunk: DEFAULT_CHUNK,
        };
        let mut ticks = 0;
        let r = transcode_backlog(
            &cfg,
            &sp.join("spool"),
            Some(Format::Wav16k),
            2,
            Duration::from_millis(100),
            &mut |_, _| ticks += 1,
        )
        .unwrap();
        assert_eq!((r.total, r.done, r.failed), (5, 5, 0));
        assert!((r.audio_secs - 5.0).abs() < 1e-9);
        assert!(ticks >= 1);
        assert!(store
            .by_call("call-1")
            .unwrap()
            .iter()
            .all(|x| x.file(Format::Wav16k).is_some()));
        // Bad options are clear errors.
        let mut a = cli.args;
        a.formats = vec!["mp3".into()];
        assert!(run_transcode(a).unwrap_err().to_string().contains("mp3"));
    }
}
