//! After a call: the finished plaintext spool WAV (8 kHz, 16-bit, stereo) becomes the
//! configured outputs, each encrypted into `<recordings>/YYYY/MM/DD/<id>.<fmt>.gre`, indexed,
//! and only then is the spool file deleted.
//!
//! Crash safety, step by step (a re-run after a crash at any step ends with exactly one
//! complete recording):
//! 1. every output is written to `<final>.tmp`, fsynced, renamed over `<final>`, the directory
//!    fsynced — a crash leaves at worst a stale `.tmp` (overwritten by the re-run) or a final
//!    file without its row (rewritten by the re-run);
//! 2. the index rows of all outputs are committed in one transaction (synchronous=FULL);
//! 3. the spool WAV and its JSON sidecar are deleted — a crash before this makes the re-run
//!    find the rows and files, and only delete the spool.
//!
//! One pass over the input feeds every output; the 16 kHz output is resampled with rubato's
//! `Fft` resampler (fixed ratio), streaming, with its start-up delay trimmed so the output is
//! exactly twice as many frames, aligned with the input. Memory per job is a few blocks.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use super::crypto::{self, CryptoError, EncryptWriter, Keyring};
use super::store::{RecordingMeta, RecordingStatus, RecordingStore, StoredFile};
use crate::store::StoreError;

/// Input frames per resampler call and per read block.
const BLOCK: usize = 1024;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// PCM 16-bit 8 kHz stereo WAV (the recording as received).
    Wav,
    /// G.711 A-law WAV (format tag 6), half the size.
    Alaw,
    /// PCM 16-bit 16 kHz stereo WAV for ASR engines that want 16 kHz.
    Wav16k,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Wav, Format::Alaw, Format::Wav16k];

    pub fn name(self) -> &'static str {
        match self {
            Format::Wav => "wav",
            Format::Alaw => "alaw",
            Format::Wav16k => "wav16k",
        }
    }

    /// `mp3` is refused with a clear message: no encoder is built in.
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "wav" => Ok(Format::Wav),
            "alaw" => Ok(Format::Alaw),
            "wav16k" => Ok(Format::Wav16k),
            "mp3" => Err("recording format mp3 is not available in this build (no MP3 encoder); use wav, alaw or wav16k".into()),
            other => Err(format!("unknown recording format {other:?}; expected wav, alaw or wav16k")),
        }
    }

    pub fn content_type(self) -> &'static str {
        "audio/wav"
    }

    /// Plaintext bytes of this format for `frames` input frames (8 kHz).
    pub fn output_len(self, frames: u64) -> u64 {
        match self {
            Format::Wav => 44 + 4 * frames,
            Format::Alaw => ALAW_HEADER_LEN + 2 * frames,
            Format::Wav16k => 44 + 8 * frames,
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

// ---- G.711 A-law (ITU-T G.711 §A) --------------------------------------------------------

/// Encodes a 16-bit linear sample. G.711 A-law works on 13-bit magnitudes: the top segment
/// bit gives the exponent (segments of doubling width), the next four bits the mantissa; the
/// sign is bit 7 (set for positive) and even bits are inverted (XOR 0x55) on the line.
pub fn alaw_encode(sample: i16) -> u8 {
    let s = i32::from(sample) >> 3; // 13-bit
    let (mag, sign) = if s >= 0 { (s, 0x80) } else { (-s - 1, 0x00) };
    // Segment = position of the highest set bit above the 5-bit linear range.
    let seg = (32 - (mag as u32 | 0x1f).leading_zeros()).saturating_sub(5);
    let code = if seg >= 8 {
        0x7f
    } else if seg == 0 {
        (mag >> 1) as u8 & 0x0f
    } else {
        ((seg as u8) << 4) | ((mag >> seg) as u8 & 0x0f)
    };
    (code | sign) ^ 0x55
}

/// Decodes an A-law byte to 16-bit linear (the middle of its quantization interval).
pub fn alaw_decode(code: u8) -> i16 {
    let a = code ^ 0x55;
    let seg = (a >> 4) & 0x07;
    let mant = i32::from(a & 0x0f);
    let mag = if seg == 0 {
        (mant << 4) + 8
    } else {
        ((mant << 4) + 0x108) << (seg - 1)
    };
    (if a & 0x80 != 0 { mag } else { -mag }) as i16
}

// ---- WAV headers ------------------------------------------------------------------------

const ALAW_HEADER_LEN: u64 = 58;

fn riff(h: &mut Vec<u8>, total: u64) {
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&u32::try_from(total - 8).unwrap_or(u32::MAX).to_le_bytes());
    h.extend_from_slice(b"WAVE");
}

fn fmt_chunk(h: &mut Vec<u8>, tag: u16, rate: u32, bits: u16, extra: bool) {
    let block = 2 * bits / 8;
    h.extend_from_slice(b"fmt ");
    h.extend_from_slice(&(if extra { 18u32 } else { 16 }).to_le_bytes());
    h.extend_from_slice(&tag.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
    h.extend_from_slice(&block.to_le_bytes());
    h.extend_from_slice(&bits.to_le_bytes());
    if extra {
        h.extend_from_slice(&0u16.to_le_bytes());
    }
}

fn data_chunk(h: &mut Vec<u8>, len: u64) {
    h.extend_from_slice(b"data");
    h.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

/// The header of `f` for `frames` 8 kHz input frames. The sizes are known up front (the input
/// is a finished file), so every output is written in one forward pass.
pub fn wav_header(f: Format, frames: u64) -> Vec<u8> {
    let total = f.output_len(frames);
    let mut h = Vec::with_capacity(ALAW_HEADER_LEN as usize);
    riff(&mut h, total);
    match f {
        Format::Wav | Format::Wav16k => {
            let rate = if f == Format::Wav { 8000 } else { 16000 };
            fmt_chunk(&mut h, 1, rate, 16, false);
            data_chunk(&mut h, total - 44);
        }
        Format::Alaw => {
            fmt_chunk(&mut h, 6, 8000, 8, true);
            // Non-PCM formats carry a fact chunk with the frame count.
            h.extend_from_slice(b"fact");
            h.extend_from_slice(&4u32.to_le_bytes());
            h.extend_from_slice(&u32::try_from(frames).unwrap_or(u32::MAX).to_le_bytes());
            data_chunk(&mut h, 2 * frames);
        }
    }
    h
}

// ---- errors -----------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// The spool WAV is not what the recorder writes; retrying will not help.
    #[error("bad input {path}: {reason}")]
    Input { path: String, reason: String },
    #[error("spool file {0} is gone and the recording is not indexed")]
    Missing(String),
    #[error("record id {0:?} is not a safe file name")]
    RecordId(String),
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Crypto(#[from] CryptoError),
    #[error("index: {0}")]
    Store(#[from] StoreError),
    #[error("resampler: {0}")]
    Resample(String),
}

impl TranscodeError {
    /// Whether retrying the same job can succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            TranscodeError::Input { .. } | TranscodeError::Missing(_) | TranscodeError::RecordId(_)
        )
    }
}

// ---- conversion ---------------------------------------------------------------------------

/// Streaming 8 kHz → 16 kHz stereo, exactly 2 output frames per input frame.
struct Upsampler {
    fft: Fft<f32>,
    inb: Vec<f32>,
    outb: Vec<f32>,
    /// Output frames still to drop (the resampler's delay).
    skip: usize,
    /// Output frames still owed.
    owed: u64,
    bytes: Vec<u8>,
}

impl Upsampler {
    fn new(frames: u64) -> Result<Upsampler, TranscodeError> {
        let fft = Fft::<f32>::new(8000, 16000, BLOCK, 2, FixedSync::Input)
            .map_err(|e| TranscodeError::Resample(e.to_string()))?;
        let outb = vec![0f32; fft.output_frames_max() * 2];
        Ok(Upsampler {
            skip: fft.output_delay(),
            inb: vec![0f32; fft.input_frames_max() * 2],
            fft,
            outb,
            owed: frames * 2,
            bytes: Vec::new(),
        })
    }

    /// One block of up to BLOCK interleaved stereo frames (short only at the end: padded with
    /// silence).
    fn block(&mut self, frames: &[i16], out: &mut dyn Write) -> Result<(), TranscodeError> {
        let n_in = self.fft.input_frames_next();
        for (d, s) in self.inb.iter_mut().zip(frames.iter()) {
            *d = f32::from(*s) / 32768.0;
        }
        let filled = frames.len().min(self.inb.len());
        self.inb[filled..].iter_mut().for_each(|x| *x = 0.0);
        let cap = self.outb.len() / 2;
        let (_, n_out) = {
            let i = InterleavedSlice::new(&self.inb[..], 2, n_in)
                .map_err(|e| TranscodeError::Resample(e.to_string()))?;
            let mut o = InterleavedSlice::new_mut(&mut self.outb[..], 2, cap)
                .map_err(|e| TranscodeError::Resample(e.to_string()))?;
            self.fft
                .process_into_buffer(&i, &mut o, None)
                .map_err(|e| TranscodeError::Resample(e.to_string()))?
        };
        let drop = self.skip.min(n_out);
        self.skip -= drop;
        let take = ((n_out - drop) as u64).min(self.owed) as usize;
        self.owed -= take as u64;
        self.bytes.clear();
        for x in &self.outb[drop * 2..(drop + take) * 2] {
            let v = (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
        out.write_all(&self.bytes)?;
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Write) -> Result<(), TranscodeError> {
        // Flush the delay line with silence until every owed frame is out (bounded: the
        // delay is a fraction of a block).
        let mut guard = 0;
        while self.owed > 0 {
            self.block(&[], out)?;
            guard += 1;
            if guard > 64 {
                return Err(TranscodeError::Resample("resampler never caught up".into()));
            }
        }
        Ok(())
    }
}

/// Converts a plaintext 8 kHz 16-bit stereo WAV into each `(format, sink)`, in one pass.
/// Returns the number of input frames. Refuses any other WAV (rate, channels, sample format)
/// and a WAV whose data is shorter than its header says.
pub fn convert<R: Read>(
    input: R,
    name: &str,
    sinks: &mut [(Format, &mut dyn Write)],
) -> Result<u64, TranscodeError> {
    let bad = |reason: String| TranscodeError::Input {
        path: name.to_string(),
        reason,
    };
    let mut reader = hound::WavReader::new(input).map_err(|e| bad(e.to_string()))?;
    let spec = reader.spec();
    if spec.sample_rate != 8000
        || spec.channels != 2
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        return Err(bad(format!(
            "expected 8000 Hz 16-bit integer stereo, found {} Hz {}-bit {:?} {} channel(s)",
            spec.sample_rate, spec.bits_per_sample, spec.sample_format, spec.channels
        )));
    }
    let frames = u64::from(reader.duration());
    let mut up = None;
    for (f, w) in sinks.iter_mut() {
        w.write_all(&wav_header(*f, frames))?;
        if *f == Format::Wav16k && up.is_none() {
            up = Some(Upsampler::new(frames)?);
        }
    }
    let mut samples = reader.samples::<i16>();
    let mut blk: Vec<i16> = Vec::with_capacity(BLOCK * 2);
    let mut bytes: Vec<u8> = Vec::with_capacity(BLOCK * 4);
    let mut done = 0u64;
    while done < frames {
        blk.clear();
        let want = ((frames - done) as usize).min(BLOCK) * 2;
        for _ in 0..want {
            match samples.next() {
                Some(Ok(s)) => blk.push(s),
                Some(Err(e)) => return Err(bad(e.to_string())),
                None => {
                    return Err(bad(format!(
                        "data ends after {} of {frames} frames (header promises more)",
                        done + blk.len() as u64 / 2
                    )))
                }
            }
        }
        for (f, w) in sinks.iter_mut() {
            match f {
                Format::Wav => {
                    bytes.clear();
                    for s in &blk {
                        bytes.extend_from_slice(&s.to_le_bytes());
                    }
                    w.write_all(&bytes)?;
                }
                Format::Alaw => {
                    bytes.clear();
                    bytes.extend(blk.iter().map(|s| alaw_encode(*s)));
                    w.write_all(&bytes)?;
                }
                Format::Wav16k => {
                    if let Some(u) = up.as_mut() {
                        u.block(&blk, &mut **w)?;
                    }
                }
            }
        }
        done += blk.len() as u64 / 2;
    }
    if let Some(u) = up.as_mut() {
        for (f, w) in sinks.iter_mut() {
            if *f == Format::Wav16k {
                u.finish(&mut **w)?;
                break;
            }
        }
    }
    Ok(frames)
}

// ---- the job ------------------------------------------------------------------------------

/// Same alphabet as the grid's recordId check: safe as a file name.
pub fn valid_record_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `YYYY/MM/DD/<id>.<fmt>.gre` (UTC date of the start).
pub fn relative_path(meta: &RecordingMeta, f: Format) -> String {
    let days = (meta.started_ms / 86_400_000) as i64;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}/{m:02}/{d:02}/{}.{}.gre", meta.record_id, f.name())
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A finished spool recording to store.
#[derive(Debug, Clone)]
pub struct TranscodeJob {
    pub meta: RecordingMeta,
    /// `<spool>/<record_id>.wav`; its sidecar `<record_id>.json`, if any, is deleted with it.
    pub spool_wav: PathBuf,
}

impl TranscodeJob {
    /// The job of a spool WAV from its JSON sidecar (`x.wav` → `x.json`).
    pub fn from_sidecar(spool_wav: &Path) -> Result<TranscodeJob, TranscodeError> {
        let side = spool_wav.with_extension("json");
        let bad = |reason: String| TranscodeError::Input {
            path: side.display().to_string(),
            reason,
        };
        let f = File::open(&side).map_err(|e| bad(e.to_string()))?;
        // Sidecars are small; refuse a huge one rather than read it.
        let mut s = String::new();
        f.take(1 << 20)
            .read_to_string(&mut s)
            .map_err(|e| bad(e.to_string()))?;
        let meta: RecordingMeta = serde_json::from_str(&s).map_err(|e| bad(e.to_string()))?;
        Ok(TranscodeJob {
            meta,
            spool_wav: spool_wav.to_path_buf(),
        })
    }
}

impl TranscodeJob {
    /// The job of a spool WAV, ready for the transcoder. A sidecar still saying `recording`
    /// belongs to a recording a crash cut: its WAV header is repaired from the file's length
    /// and it becomes `partial` (the sidecar is rewritten first, so this happens once).
    pub fn prepare(spool_wav: &Path) -> Result<TranscodeJob, TranscodeError> {
        let mut job = TranscodeJob::from_sidecar(spool_wav)?;
        if job.meta.status == RecordingStatus::Recording {
            let bad = |reason: String| TranscodeError::Input {
                path: spool_wav.display().to_string(),
                reason,
            };
            let fixed = crate::media::wav::repair(spool_wav).map_err(|e| bad(e.to_string()))?;
            job.meta.status = RecordingStatus::Partial;
            job.meta.ended_ms = job.meta.started_ms + fixed.frames / 8;
            job.meta
                .write_sidecar(&spool_wav.with_extension("json"))
                .map_err(|e| bad(e.to_string()))?;
            tracing::warn!(record_id = %job.meta.record_id, duration_ms = fixed.frames / 8, "recording cut by a crash repaired; indexed as partial");
        }
        Ok(job)
    }
}

/// A recording stored and indexed (the integrator turns it into `RecordingReady`).
#[derive(Debug, Clone)]
pub struct RecordingStored {
    pub meta: RecordingMeta,
    pub files: Vec<StoredFile>,
    /// Input frames (8 kHz): the audio duration is frames / 8000 s.
    pub frames: u64,
    /// False when a re-run found the recording already indexed and only cleaned the spool.
    pub converted: bool,
}

#[derive(Debug, Clone)]
pub struct TranscodeConfig {
    /// `<state>/recordings`.
    pub recordings_dir: PathBuf,
    /// The daemon's database.
    pub db_path: PathBuf,
    /// Non-empty; the first is what downloads serve.
    pub formats: Vec<Format>,
    pub keyring: Arc<Keyring>,
    /// Plaintext per encrypted chunk (crypto::DEFAULT_CHUNK).
    pub chunk: u32,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn remove_if_exists(p: &Path) -> io::Result<bool> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// An output being written: `<final>.tmp`, encrypted.
struct Pending {
    format: Format,
    rel: String,
    tmp: PathBuf,
    fin: PathBuf,
    w: EncryptWriter<File>,
}

impl TranscodeConfig {
    fn begin(&self, meta: &RecordingMeta, f: Format) -> Result<Pending, TranscodeError> {
        let rel = relative_path(meta, f);
        let fin = self.recordings_dir.join(&rel);
        if let Some(d) = fin.parent() {
            std::fs::create_dir_all(d)?;
        }
        let mut tmp = fin.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp)?;
        let w = EncryptWriter::new(file, self.keyring.current(), self.chunk)?;
        Ok(Pending {
            format: f,
            rel,
            tmp,
            fin,
            w,
        })
    }

    /// Seals, fsyncs and renames an output into place.
    fn seal(p: Pending) -> Result<StoredFile, TranscodeError> {
        let (file, sealed) = p.w.finish()?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&p.tmp, &p.fin)?;
        if let Some(d) = p.fin.parent() {
            sync_dir(d)?;
        }
        Ok(StoredFile {
            format: p.format,
            path: p.rel,
            size: sealed.plaintext_len,
            sha256: hex::encode(sealed.sha256),
            key_id: sealed.key_id,
        })
    }

    /// Encrypts `formats` of the WAV read from `input` for `meta`; nothing is indexed.
    fn write_outputs<R: Read>(
        &self,
        meta: &RecordingMeta,
        input: R,
        name: &str,
        formats: &[Format],
    ) -> Result<(Vec<StoredFile>, u64), TranscodeError> {
        let mut pending = formats
            .iter()
            .map(|f| self.begin(meta, *f))
            .collect::<Result<Vec<_>, _>>()?;
        let result = {
            let mut sinks: Vec<(Format, &mut dyn Write)> = pending
                .iter_mut()
                .map(|p| (p.format, &mut p.w as &mut dyn Write))
                .collect();
            convert(input, name, &mut sinks)
        };
        let frames = match result {
            Ok(n) => n,
            Err(e) => {
                for p in pending {
                    let _ = std::fs::remove_file(&p.tmp);
                }
                return Err(e);
            }
        };
        let files = pending
            .into_iter()
            .map(Self::seal)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((files, frames))
    }

    /// Runs one job to the end (see the module comment for the crash-safe order). Idempotent.
    pub fn run(
        &self,
        store: &mut RecordingStore,
        job: &TranscodeJob,
        now_ms: u64,
    ) -> Result<RecordingStored, TranscodeError> {
        let id = &job.meta.record_id;
        if !valid_record_id(id) {
            return Err(TranscodeError::RecordId(id.clone()));
        }
        if let Some(rec) = store.get(id)? {
            let complete = self.formats.iter().all(|f| {
                rec.file(*f)
                    .is_some_and(|x| self.recordings_dir.join(&x.path).is_file())
            });
            // Complete, or stored under an older format list and the spool is gone already:
            // nothing to convert from, and nothing is lost.
            if complete || !job.spool_wav.exists() {
                // A crash after the commit: the spool is all that is left to do.
                self.cleanup_spool(&job.spool_wav)?;
                return Ok(RecordingStored {
                    meta: rec.meta,
                    files: rec.files,
                    frames: 0,
                    converted: false,
                });
            }
        }
        let input = match File::open(&job.spool_wav) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(TranscodeError::Missing(job.spool_wav.display().to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        let name = job.spool_wav.display().to_string();
        let (files, frames) = self.write_outputs(
            &job.meta,
            BufReader::with_capacity(64 * 1024, input),
            &name,
            &self.formats,
        )?;
        store.commit(&job.meta, &files, now_ms)?;
        self.cleanup_spool(&job.spool_wav)?;
        Ok(RecordingStored {
            meta: job.meta.clone(),
            files,
            frames,
            converted: true,
        })
    }

    /// Deletes the spool copy once the outputs and rows are durable. The deletion itself is
    /// not fsynced: if a power cut undoes it, the next run finds the rows and only deletes
    /// again (the job is idempotent), and one fsync per file is a quarter of a batch's time.
    fn cleanup_spool(&self, wav: &Path) -> io::Result<()> {
        remove_if_exists(wav)?;
        remove_if_exists(&wav.with_extension("json"))?;
        Ok(())
    }

    /// Adds `format` to a stored recording, from its stored `wav` (decrypted on the fly).
    pub fn add_format(
        &self,
        store: &mut RecordingStore,
        record_id: &str,
        format: Format,
    ) -> Result<(StoredFile, u64), TranscodeError> {
        let rec = store
            .get(record_id)?
            .ok_or_else(|| TranscodeError::Missing(record_id.to_string()))?;
        let src = rec.file(Format::Wav).ok_or_else(|| TranscodeError::Input {
            path: record_id.to_string(),
            reason: "no stored 8 kHz wav to convert from".into(),
        })?;
        let path = self.recordings_dir.join(&src.path);
        let reader = crypto::open_file(&path, &self.keyring)?;
        let name = path.display().to_string();
        let (mut files, frames) = self.write_outputs(
            &rec.meta,
            io::BufReader::with_capacity(64 * 1024, reader),
            &name,
            &[format],
        )?;
        let f = files
            .pop()
            .ok_or_else(|| TranscodeError::Resample("no output".into()))?;
        store.add_file(record_id, &f)?;
        Ok((f, frames))
    }
}

// ---- metrics ------------------------------------------------------------------------------

#[derive(Clone)]
pub struct TranscodeMetrics {
    pub queue_depth: IntGauge,
    pub seconds: Histogram,
    /// By status: complete, partial, failed.
    pub stored: IntCounterVec,
}

impl TranscodeMetrics {
    pub fn new(r: &Registry) -> TranscodeMetrics {
        let queue_depth = IntGauge::new(
            "gridedge_recording_transcode_queue_depth",
            "Finished recordings waiting for a transcode worker.",
        )
        .expect("valid metric definition");
        r.register(Box::new(queue_depth.clone()))
            .expect("unique metric name");
        let seconds = Histogram::with_opts(
            HistogramOpts::new(
                "gridedge_recording_transcode_seconds",
                "Time to transcode, encrypt and index one recording.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("valid metric definition");
        r.register(Box::new(seconds.clone()))
            .expect("unique metric name");
        let stored = IntCounterVec::new(
            Opts::new(
                "gridedge_recording_stored_total",
                "Recordings stored (complete, partial) or failed in the transcoder.",
            ),
            &["status"],
        )
        .expect("valid metric definition");
        r.register(Box::new(stored.clone()))
            .expect("unique metric name");
        TranscodeMetrics {
            queue_depth,
            seconds,
            stored,
        }
    }
}

// ---- the worker pool ------------------------------------------------------------------------

/// What a job came to, reported once per submitted job.
#[derive(Debug)]
pub enum TranscodeOutcome {
    Stored(RecordingStored),
    /// The spool file stays where it was. `permanent`: a retry cannot help (bad input).
    Failed {
        job: TranscodeJob,
        error: String,
        permanent: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full: the spool file stays; submit again later.
    #[error("transcode queue is full")]
    Busy(Box<TranscodeJob>),
    #[error("transcode pool is shut down")]
    Closed(Box<TranscodeJob>),
}

/// N worker threads behind a bounded queue.
pub struct TranscodePool {
    tx: Option<SyncSender<TranscodeJob>>,
    workers: Vec<JoinHandle<()>>,
    metrics: TranscodeMetrics,
}

impl TranscodePool {
    /// Starts `workers` threads (each with its own database connection) behind a queue of
    /// `queue` jobs. `on_done` runs on the worker thread once per job.
    pub fn start(
        cfg: TranscodeConfig,
        workers: usize,
        queue: usize,
        metrics: TranscodeMetrics,
        on_done: Arc<dyn Fn(TranscodeOutcome) + Send + Sync>,
    ) -> Result<TranscodePool, TranscodeError> {
        if cfg.formats.is_empty() {
            return Err(TranscodeError::Resample(
                "no output format configured".into(),
            ));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<TranscodeJob>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let cfg = Arc::new(cfg);
        let mut handles = Vec::new();
        for i in 0..workers.max(1) {
            let store = RecordingStore::open(&cfg.db_path)?;
            let (rx, cfg, m, done) = (
                Arc::clone(&rx),
                Arc::clone(&cfg),
                metrics.clone(),
                Arc::clone(&on_done),
            );
            let h = std::thread::Builder::new()
                .name(format!("rec-transcode-{i}"))
                .spawn(move || worker(&rx, &cfg, store, &m, &*done))?;
            handles.push(h);
        }
        Ok(TranscodePool {
            tx: Some(tx),
            workers: handles,
            metrics,
        })
    }

    /// Queues a job, or hands it back when the queue is full.
    pub fn submit(&self, job: TranscodeJob) -> Result<(), SubmitError> {
        let Some(tx) = &self.tx else {
            return Err(SubmitError::Closed(Box::new(job)));
        };
        // Counted before the send so a fast worker never takes the gauge below zero.
        self.metrics.queue_depth.inc();
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(j)) => {
                self.metrics.queue_depth.dec();
                Err(SubmitError::Busy(Box::new(j)))
            }
            Err(TrySendError::Disconnected(j)) => {
                self.metrics.queue_depth.dec();
                Err(SubmitError::Closed(Box::new(j)))
            }
        }
    }

    /// Stops taking jobs, lets the workers drain the queue, and joins them.
    pub fn shutdown(mut self) {
        self.tx = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn worker(
    rx: &Mutex<Receiver<TranscodeJob>>,
    cfg: &TranscodeConfig,
    mut store: RecordingStore,
    m: &TranscodeMetrics,
    done: &(dyn Fn(TranscodeOutcome) + Send + Sync),
) {
    loop {
        let job = {
            let Ok(rx) = rx.lock() else { return };
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return, // closed and drained
            }
        };
        m.queue_depth.dec();
        let t0 = Instant::now();
        let r = cfg.run(&mut store, &job, now_ms());
        m.seconds.observe(t0.elapsed().as_secs_f64());
        let outcome = match r {
            Ok(s) => {
                m.stored.with_label_values(&[s.meta.status.as_str()]).inc();
                TranscodeOutcome::Stored(s)
            }
            Err(e) => {
                m.stored.with_label_values(&["failed"]).inc();
                tracing::warn!(record_id = %job.meta.record_id, error = %e, "transcoding a recording failed; the spool file stays");
                TranscodeOutcome::Failed {
                    permanent: e.is_permanent(),
                    error: e.to_string(),
                    job,
                }
            }
        };
        done(outcome);
    }
}

/// Wall-clock helper for callers that report throughput.
pub fn audio_duration(frames: u64) -> Duration {
    Duration::from_millis(frames / 8)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::recording::crypto::Key;
    use crate::recording::store::tests::meta;
    use std::io::Cursor;

    /// A stereo 8 kHz WAV: 440 Hz on the left, 1 kHz on the right.
    pub(crate) fn stereo_wav(path: &Path, frames: u32) {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for i in 0..frames {
            let t = f64::from(i) / 8000.0;
            let l = (t * 440.0 * std::f64::consts::TAU).sin() * 12000.0;
            let r = (t * 1000.0 * std::f64::consts::TAU).sin() * 8000.0;
            w.write_sample(l as i16).unwrap();
            w.write_sample(r as i16).unwrap();
        }
        w.finalize().unwrap();
    }

    #[test]
    fn alaw_matches_g711_known_values_and_round_trips_every_code() {
        for (lin, code) in [
            (0i16, 0xd5u8),
            (-1, 0x55),
            (8, 0xd5),
            (1000, 0xfa),
            (-1000, 0x7a),
            (32767, 0xaa),
            (-32768, 0x2a),
        ] {
            assert_eq!(alaw_encode(lin), code, "encode {lin}");
        }
        assert_eq!(alaw_decode(0xd5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xaa), 32256);
        assert_eq!(alaw_decode(0x2a), -32256);
        assert_eq!(alaw_decode(0xfa), 1008);
        for c in 0..=255u8 {
            assert_eq!(alaw_encode(alaw_decode(c)), c, "code {c:#04x}");
        }
        // Monotonic and within half a quantization step everywhere.
        let mut prev = i16::MIN;
        for x in (i16::MIN..=i16::MAX).step_by(7) {
            let y = alaw_decode(alaw_encode(x));
            assert!(y >= prev || x < 0 && y >= prev - 1, "not monotonic at {x}");
            prev = y;
            let step = if x.unsigned_abs() < 512 {
                16
            } else {
                (x.unsigned_abs() / 16) as i32 + 16
            };
            assert!((i32::from(y) - i32::from(x)).abs() <= step, "{x} -> {y}");
        }
    }

    fn convert_all(wav: &Path) -> (Vec<u8>, Vec<u8>, Vec<u8>, u64) {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        let n = {
            let mut sinks: Vec<(Format, &mut dyn Write)> = vec![
                (Format::Wav, &mut a),
                (Format::Alaw, &mut b),
                (Format::Wav16k, &mut c),
            ];
            convert(File::open(wav).unwrap(), "t", &mut sinks).unwrap()
        };
        (a, b, c, n)
    }

    fn read_i16(bytes: &[u8]) -> (hound::WavSpec, Vec<i16>) {
        let r = hound::WavReader::new(Cursor::new(bytes)).unwrap();
        let spec = r.spec();
        (spec, r.into_samples::<i16>().map(|s| s.unwrap()).collect())
    }

    #[test]
    fn outputs_are_valid_and_faithful() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.wav");
        let frames = 8000 * 3 + 123;
        stereo_wav(&p, frames);
        let input = read_i16(&std::fs::read(&p).unwrap()).1;
        let (wav, alaw, w16, n) = convert_all(&p);
        assert_eq!(n, u64::from(frames));
        assert_eq!(wav.len() as u64, Format::Wav.output_len(n));
        assert_eq!(alaw.len() as u64, Format::Alaw.output_len(n));
        assert_eq!(w16.len() as u64, Format::Wav16k.output_len(n));
        // wav: bit-exact.
        let (spec, s) = read_i16(&wav);
        assert_eq!((spec.sample_rate, spec.channels), (8000, 2));
        assert_eq!(s, input);
        // alaw: a format-6 header (parsed by hand: hound reads PCM only), samples within
        // A-law quantization of the input.
        assert_eq!(&alaw[..4], b"RIFF");
        assert_eq!(
            u32::from_le_bytes(alaw[4..8].try_into().unwrap()) as usize,
            alaw.len() - 8
        );
        assert_eq!(&alaw[8..16], b"WAVEfmt ");
        assert_eq!(u16::from_le_bytes([alaw[20], alaw[21]]), 6);
        assert_eq!(u16::from_le_bytes([alaw[22], alaw[23]]), 2);
        assert_eq!(&alaw[38..42], b"fact");
        assert_eq!(&alaw[50..54], b"data");
        assert_eq!(
            u32::from_le_bytes(alaw[54..58].try_into().unwrap()),
            2 * frames
        );
        let err: f64 = alaw[58..]
            .iter()
            .zip(&input)
            .map(|(c, x)| (f64::from(alaw_decode(*c)) - f64::from(*x)).powi(2))
            .sum();
        let sig: f64 = input.iter().map(|x| f64::from(*x).powi(2)).sum();
        let snr = 10.0 * (sig / err).log10();
        assert!(snr > 30.0, "A-law SNR {snr:.1} dB");
        // wav16k: 16 kHz, exactly 2n frames, aligned: every other output sample is close to
        // the input (band-limited sines well below 4 kHz).
        let (spec, s) = read_i16(&w16);
        assert_eq!((spec.sample_rate, spec.channels), (16000, 2));
        assert_eq!(s.len() as u64, 4 * n);
        let (mut sig, mut err) = (0f64, 0f64);
        for k in 200..(frames as usize - 200) {
            for ch in 0..2 {
                let x = f64::from(input[2 * k + ch]);
                let y = f64::from(s[4 * k + ch]);
                sig += x * x;
                err += (x - y) * (x - y);
            }
        }
        let snr = 10.0 * (sig / err).log10();
        assert!(snr > 40.0, "16 kHz alignment/fidelity SNR {snr:.1} dB");
    }

    #[test]
    fn malformed_inputs_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let conv = |bytes: &[u8]| -> String {
            let mut out = Vec::new();
            let mut sinks: Vec<(Format, &mut dyn Write)> = vec![(Format::Wav16k, &mut out)];
            let e = convert(Cursor::new(bytes.to_vec()), "x.wav", &mut sinks).unwrap_err();
            assert!(e.is_permanent(), "{e}");
            e.to_string()
        };
        assert!(conv(b"").starts_with("bad input x.wav"));
        assert!(conv(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk").starts_with("bad input"));
        // Wrong shapes.
        for (ch, rate, bits) in [(1u16, 8000u32, 16u16), (2, 16000, 16), (2, 8000, 8)] {
            let p = dir.path().join("shape.wav");
            let spec = hound::WavSpec {
                channels: ch,
                sample_rate: rate,
                bits_per_sample: bits,
                sample_format: hound::SampleFormat::Int,
            };
            let mut w = hound::WavWriter::create(&p, spec).unwrap();
            for _ in 0..ch * 10 {
                if bits == 8 {
                    w.write_sample(1i8).unwrap();
                } else {
                    w.write_sample(1i16).unwrap();
                }
            }
            w.finalize().unwrap();
            let e = conv(&std::fs::read(&p).unwrap());
            assert!(e.contains("expected 8000 Hz 16-bit integer stereo"), "{e}");
        }
        // Truncated data (a crashed, unrepaired file).
        let p = dir.path().join("t.wav");
        stereo_wav(&p, 4000);
        let b = std::fs::read(&p).unwrap();
        let e = conv(&b[..b.len() - 1001]);
        assert!(e.contains("bad input"), "{e}");
    }

    pub(crate) fn config(dir: &Path, formats: Vec<Format>) -> TranscodeConfig {
        TranscodeConfig {
            recordings_dir: dir.join("recordings"),
            db_path: dir.join("gridedge.db"),
            formats,
            keyring: Arc::new(Keyring::new(Key::from_bytes(&[9; 32]), vec![])),
            chunk: 4096,
        }
    }

    pub(crate) fn spool(dir: &Path, id: &str, frames: u32) -> TranscodeJob {
        let sp = dir.join("spool");
        std::fs::create_dir_all(&sp).unwrap();
        let wav = sp.join(format!("{id}.wav"));
        stereo_wav(&wav, frames);
        let m = RecordingMeta {
            record_id: id.into(),
            ..meta(id, "call-1", 1_763_766_000_000)
        };
        std::fs::write(wav.with_extension("json"), serde_json::to_vec(&m).unwrap()).unwrap();
        TranscodeJob::from_sidecar(&wav).unwrap()
    }

    #[test]
    fn a_job_stores_encrypts_indexes_then_deletes_the_spool_and_reruns_safely() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), vec![Format::Wav, Format::Alaw]);
        let mut store = RecordingStore::open(&cfg.db_path).unwrap();
        let job = spool(dir.path(), "rec-1", 8000);
        let plain = std::fs::read(&job.spool_wav).unwrap();
        // A stale temp from a crash mid-write is simply overwritten.
        let stale = cfg.recordings_dir.join("2025/11/21/rec-1.wav.gre.tmp");
        std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
        std::fs::write(&stale, b"half").unwrap();
        let s = cfg.run(&mut store, &job, 5).unwrap();
        assert!(s.converted);
        assert_eq!(s.frames, 8000);
        assert_eq!(s.files[0].path, "2025/11/21/rec-1.wav.gre");
        assert!(!stale.exists());
        assert!(!job.spool_wav.exists());
        assert!(!job.spool_wav.with_extension("json").exists());
        let rec = store.get("rec-1").unwrap().unwrap();
        assert_eq!(rec.files.len(), 2);
        let wav = rec.file(Format::Wav).unwrap();
        let mut r = crypto::open_file(&cfg.recordings_dir.join(&wav.path), &cfg.keyring).unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        // hound's writer emits the canonical 44-byte header too: byte-identical.
        assert_eq!(got, plain);
        assert_eq!(wav.size, plain.len() as u64);
        assert_eq!(
            wav.sha256,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&plain))
        );
        assert_eq!(wav.key_id, cfg.keyring.current().id());
        // The encrypted file is not the plaintext.
        let enc = std::fs::read(cfg.recordings_dir.join(&wav.path)).unwrap();
        assert!(!enc.windows(4).any(|w| w == b"RIFF"));

        // Crash after the commit, before the spool was deleted: only the cleanup re-runs.
        let job2 = spool(dir.path(), "rec-1", 8000);
        let s = cfg.run(&mut store, &job2, 6).unwrap();
        assert!(!s.converted);
        assert!(!job2.spool_wav.exists());
        assert_eq!(store.get("rec-1").unwrap().unwrap().files, rec.files);

        // Crash after the files were renamed, before the commit: converted again, one row.
        let job3 = spool(dir.path(), "rec-3", 800);
        cfg.write_outputs(
            &job3.meta,
            File::open(&job3.spool_wav).unwrap(),
            "x",
            &cfg.formats,
        )
        .unwrap();
        assert!(store.get("rec-3").unwrap().is_none());
        let s = cfg.run(&mut store, &job3, 7).unwrap();
        assert!(s.converted);
        assert_eq!(store.by_call("call-1").unwrap().len(), 2);

        // Spool gone and nothing indexed: a clear permanent error.
        let mut ghost = job3.clone();
        ghost.meta.record_id = "rec-ghost".into();
        ghost.spool_wav = dir.path().join("spool/rec-ghost.wav");
        assert!(matches!(
            cfg.run(&mut store, &ghost, 8),
            Err(TranscodeError::Missing(_))
        ));
        // A hostile id never becomes a path.
        let mut evil = job3.clone();
        evil.meta.record_id = "../../etc/x".into();
        assert!(matches!(
            cfg.run(&mut store, &evil, 8),
            Err(TranscodeError::RecordId(_))
        ));
        // Malformed spool WAV: error, the spool file stays, no temp left behind.
        let bad = spool(dir.path(), "rec-bad", 10);
        std::fs::write(&bad.spool_wav, b"RIFFnot a wav").unwrap();
        let e = cfg.run(&mut store, &bad, 9).unwrap_err();
        assert!(e.is_permanent());
        assert!(bad.spool_wav.exists());
        assert!(!cfg
            .recordings_dir
            .join("2025/11/21/rec-bad.wav.gre.tmp")
            .exists());

        // Adding a format later, from the stored wav.
        let (f, frames) = cfg.add_format(&mut store, "rec-1", Format::Wav16k).unwrap();
        assert_eq!(frames, 8000);
        assert_eq!(f.size, Format::Wav16k.output_len(8000));
        assert!(store
            .get("rec-1")
            .unwrap()
            .unwrap()
            .file(Format::Wav16k)
            .is_some());
    }

    #[test]
    fn the_pool_is_bounded_reports_every_job_and_drains_on_shutdown() {
        use std::sync::mpsc;
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), vec![Format::Wav]);
        let reg = Registry::new();
        let m = TranscodeMetrics::new(&reg);
        let (out_tx, out_rx) = mpsc::channel();
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let out_tx = Mutex::new(out_tx);
        let entered_tx = Mutex::new(entered_tx);
        let pool = TranscodePool::start(
            cfg,
            1,
            1,
            m.clone(),
            Arc::new(move |o: TranscodeOutcome| {
                let _ = entered_tx.lock().unwrap().send(());
                // Hold the only worker until the test says so.
                let _ = release_rx.lock().unwrap().recv();
                let _ = out_tx.lock().unwrap().send(o);
            }),
        )
        .unwrap();
        let jobs: Vec<_> = (0..3)
            .map(|i| spool(dir.path(), &format!("p{i}"), 800))
            .collect();
        pool.submit(jobs[0].clone()).unwrap();
        entered_rx.recv().unwrap(); // worker busy in the callback
        pool.submit(jobs[1].clone()).unwrap(); // queued
        match pool.submit(jobs[2].clone()) {
            Err(SubmitError::Busy(j)) => assert_eq!(j.meta.record_id, "p2"),
            other => panic!("expected Busy, got {other:?}"),
        }
        assert_eq!(m.queue_depth.get(), 1);
        assert!(jobs[2].spool_wav.exists());
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        pool.shutdown();
        let got: Vec<String> = out_rx
            .try_iter()
            .map(|o| match o {
                TranscodeOutcome::Stored(s) => s.meta.record_id,
                TranscodeOutcome::Failed { error, .. } => panic!("{error}"),
            })
            .collect();
        assert_eq!(got, ["p0", "p1"]);
        assert_eq!(m.queue_depth.get(), 0);
        assert_eq!(m.stored.with_label_values(&["complete"]).get(), 2);
        assert_eq!(m.seconds.get_sample_count(), 2);
    }

    proptest::proptest! {
        #[test]
        fn alaw_never_panics_and_decodes_near_the_input(x in proptest::num::i16::ANY) {
            let y = alaw_decode(alaw_encode(x));
            let tol = if x.unsigned_abs() < 512 { 16 } else { i32::from(x.unsigned_abs() / 16) + 16 };
            proptest::prop_assert!((i32::from(y) - i32::from(x)).abs() <= tol);
        }

        /// Arbitrary bytes as a spool WAV: an error or a conversion, never a panic.
        #[test]
        fn convert_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut out = Vec::new();
            let mut sinks: Vec<(Format, &mut dyn Write)> = vec![(Format::Wav16k, &mut out)];
            let _ = convert(Cursor::new(data), "p", &mut sinks);
        }
    }

    #[test]
    fn paths_and_formats() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        let mut m = meta("r", "c", 0);
        m.started_ms = 1_709_164_800_000; // 2024-02-29T00:00Z
        assert_eq!(relative_path(&m, Format::Alaw), "2024/02/29/r.alaw.gre");
        assert!(Format::parse("mp3").unwrap_err().contains("not available"));
        assert!(Format::parse("ogg").is_err());
        for f in Format::ALL {
            assert_eq!(Format::parse(f.name()), Ok(f));
        }
        assert!(!valid_record_id(".x") && !valid_record_id("a/b") && valid_record_id("a.b-c_1"));
    }
}
