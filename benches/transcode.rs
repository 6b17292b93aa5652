//! Batch transcoding of finished recordings, 8 kHz → 16 kHz (issue 7: 1,000× real time per
//! core or better).
//!
//! - `convert/wav16k_60s`: the conversion alone (hound read, rubato `Fft` resample, WAV
//!   write) of one 60 s stereo 8 kHz call, from memory to memory.
//! - `convert/wav16k_encrypted_60s`: the same plus AES-256-GCM chunked encryption and the
//!   plaintext SHA-256, as stored.
//! - `batch/spool_20x30s_1job`: `gridedge transcode`'s engine on one thread over 20 spool
//!   files of 30 s (real files, fsync, rename, SQLite commit, spool deletion).
//!
//! Throughput is in input frames per second: divide by 8,000 for × real time.
//!
//! Measured 2026-11-22 on the shared 2-core dev VM (load ~2): `wav16k_60s` 26.2 ms (≈2,290×
//! real time per core), `wav16k_encrypted_60s` 32.4 ms (≈1,850×), `spool_20x30s_1job`
//! 735 ms for 600 s of audio (≈820×): the crash-safe path's fsyncs (output file, its
//! directory, the SQLite FULL commit, the spool directory) cost ≈20 ms per file here.

use std::io::{Cursor, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gridedge::recording::cli::transcode_backlog;
use gridedge::recording::crypto::{EncryptWriter, Key, Keyring, DEFAULT_CHUNK};
use gridedge::recording::store::{RecordingMeta, RecordingStatus};
use gridedge::recording::transcode::{convert, Format, TranscodeConfig};

fn wav_bytes(frames: u32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut c = Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut c, spec).expect("wav");
        let mut seed = 1u32;
        for i in 0..frames {
            // Speech-like enough: a tone plus noise on each side.
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = ((seed >> 16) as i16) / 16;
            let t = f64::from(i) / 8000.0;
            let tone = ((t * 440.0 * std::f64::consts::TAU).sin() * 6000.0) as i16;
            w.write_sample(tone.saturating_add(noise)).expect("sample");
            w.write_sample(noise).expect("sample");
        }
        w.finalize().expect("finalize");
    }
    c.into_inner()
}

fn convert_bench(c: &mut Criterion) {
    let frames = 60 * 8000;
    let input = wav_bytes(frames);
    let key = Key::from_bytes(&[7; 32]);
    let mut g = c.benchmark_group("convert");
    g.throughput(Throughput::Elements(u64::from(frames)));
    g.sample_size(20);
    g.bench_function("wav16k_60s", |b| {
        let mut out = Vec::with_capacity(frames as usize * 8 + 64);
        b.iter(|| {
            out.clear();
            let mut sinks: Vec<(Format, &mut dyn Write)> = vec![(Format::Wav16k, &mut out)];
            black_box(convert(Cursor::new(&input[..]), "bench", &mut sinks).expect("convert"));
        })
    });
    g.bench_function("wav16k_encrypted_60s", |b| {
        b.iter(|| {
            let mut w = EncryptWriter::new(
                Cursor::new(Vec::with_capacity(frames as usize * 8 + 4096)),
                &key,
                DEFAULT_CHUNK,
            )
            .expect("writer");
            {
                let mut sinks: Vec<(Format, &mut dyn Write)> = vec![(Format::Wav16k, &mut w)];
                convert(Cursor::new(&input[..]), "bench", &mut sinks).expect("convert");
            }
            black_box(w.finish().expect("finish"));
        })
    });
    g.finish();
}

fn spool(dir: &Path, n: usize, wav: &[u8]) {
    let sp = dir.join("recordings/spool");
    std::fs::create_dir_all(&sp).expect("spool dir");
    for i in 0..n {
        let id = format!("bench-{i}");
        std::fs::write(sp.join(format!("{id}.wav")), wav).expect("wav");
        let meta = RecordingMeta {
            record_id: id.clone(),
            call_id: format!("call-{i}"),
            agent: Some("1001".into()),
            participants: vec![],
            started_ms: 1_763_766_000_000,
            ended_ms: 1_763_766_030_000,
            codec: "PCMA".into(),
            status: RecordingStatus::Complete,
            call_refs: vec![],
            dtmf: vec![],
        };
        std::fs::write(
            sp.join(format!("{id}.json")),
            serde_json::to_vec(&meta).expect("json"),
        )
        .expect("sidecar");
    }
}

fn batch_bench(c: &mut Criterion) {
    const FILES: usize = 20;
    let frames = 30 * 8000;
    let wav = wav_bytes(frames);
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements((FILES as u64) * u64::from(frames)));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("spool_20x30s_1job", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                spool(dir.path(), FILES, &wav);
                let cfg = TranscodeConfig {
                    recordings_dir: dir.path().join("recordings"),
                    db_path: dir.path().join("gridedge.db"),
                    formats: vec![Format::Wav16k],
                    keyring: Arc::new(Keyring::new(Key::from_bytes(&[7; 32]), vec![])),
                    chunk: DEFAULT_CHUNK,
                };
                (dir, cfg)
            },
            |(dir, cfg)| {
                let r = transcode_backlog(
                    &cfg,
                    &dir.path().join("recordings/spool"),
                    None,
                    1,
                    Duration::from_secs(3600),
                    &mut |_, _| {},
                )
                .expect("batch");
                assert_eq!(r.failed, 0);
                black_box(r);
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, convert_bench, batch_bench);
criterion_main!(benches);
