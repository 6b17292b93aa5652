//! Recording media path costs.
//!
//! `receive_to_disk`: one 160-byte PCMU packet pushed to each channel of a two-channel
//! [`Recording`] and a `poll` that decodes, interleaves and writes the stereo frames into a
//! real file-backed WAV (header checkpoints included) — the per-packet cost of recording,
//! reported per packet (two packets per iteration). The goal in the issue is 1,000 concurrent
//! two-party calls per core including UDP receive: 100,000 packets/s, so ~1 µs per packet
//! must cover `recvmmsg` too.
//!
//! `resample_8k_16k`: `rubato::Fft` 8 kHz → 16 kHz in 160-sample chunks, per input sample.

use std::fs::File;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use gridedge::media::codec::Codec;
use gridedge::media::jitter::StreamConfig;
use gridedge::media::recorder::{Channel, Recording};
use gridedge::media::resample::Resampler;
use gridedge::media::rtp::{build, Header};

/// Iterations per recording file (5 minutes of audio, ~9.6 MB) so the bench's disk use stays
/// bounded however many iterations Criterion asks for.
const PER_FILE: u64 = 15_000;

fn packet(ssrc: u32) -> Vec<u8> {
    let payload: Vec<u8> = (0..160).map(|i| (i * 7 % 256) as u8).collect();
    build(
        &Header {
            marker: false,
            payload_type: 0,
            sequence: 0,
            timestamp: 0,
            ssrc,
        },
        &payload,
    )
}

fn stamp(pkt: &mut [u8], i: u64) {
    pkt[2..4].copy_from_slice(&(i as u16).to_be_bytes());
    pkt[4..8].copy_from_slice(&((i * 160) as u32).to_be_bytes());
}

fn receive_to_disk(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.wav");
    let cfg = || StreamConfig::new(vec![(0, Codec::Pcmu)], Some(101));
    let mut g = c.benchmark_group("recording");
    g.throughput(Throughput::Elements(2));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("receive_to_disk_pcmu_per_2_packets", |b| {
        b.iter_custom(|iters| {
            let (mut l, mut r) = (packet(1), packet(2));
            let start = Instant::now();
            let mut done = 0;
            while done < iters {
                let n = (iters - done).min(PER_FILE);
                let file = File::create(&path).expect("create");
                let mut rec = Recording::new(file, cfg(), cfg(), 0).expect("recording");
                for i in 0..n {
                    let now = i * 20;
                    stamp(&mut l, i);
                    stamp(&mut r, i);
                    rec.push(Channel::Left, black_box(&l), now).expect("left");
                    rec.push(Channel::Right, black_box(&r), now).expect("right");
                    rec.poll(now).expect("poll");
                }
                black_box(rec.finish(n * 20).expect("finish"));
                done += n;
            }
            start.elapsed()
        })
    });
    g.finish();
}

fn resample(c: &mut Criterion) {
    let input: Vec<i16> = (0..160)
        .map(|i| ((i as f32 * 0.3).sin() * 8000.0) as i16)
        .collect();
    let mut rs = Resampler::up_8k_to_16k().expect("resampler");
    let mut out = Vec::with_capacity(4096);
    let mut g = c.benchmark_group("resample");
    g.throughput(Throughput::Elements(160));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("fft_8k_to_16k_per_sample", |b| {
        b.iter(|| {
            out.clear();
            black_box(rs.process(black_box(&input), &mut out).expect("process"));
        })
    });
    // Batch transcoding (after the call) can use bigger chunks.
    let long: Vec<i16> = (0..1024)
        .map(|i| ((i as f32 * 0.3).sin() * 8000.0) as i16)
        .collect();
    let mut rs = Resampler::new(8000, 16000, 1024).expect("resampler");
    g.throughput(Throughput::Elements(1024));
    g.bench_function("fft_8k_to_16k_chunk1024_per_sample", |b| {
        b.iter(|| {
            out.clear();
            black_box(rs.process(black_box(&long), &mut out).expect("process"));
        })
    });
    g.finish();
}

criterion_group!(benches, receive_to_disk, resample);
criterion_main!(benches);
