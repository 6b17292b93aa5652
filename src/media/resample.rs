//! Fixed-ratio resampling with `rubato::Fft` (8 kHz → 16 kHz for ASR outputs, and any other
//! integer-rate pair), streaming and whole-buffer.
//!
//! The streaming [`Resampler`] trims rubato's start-up delay and, on [`Resampler::finish`],
//! flushes the tail so the output has exactly `ceil(input × to / from)` samples, aligned with
//! the input: a 10 s file at 8 kHz becomes exactly 10 s at 16 kHz.

use std::fmt;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};

/// Resampler construction or processing failed (bad rates; never for valid input lengths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResampleError(pub String);

impl fmt::Display for ResampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "resampling failed: {}", self.0)
    }
}

impl std::error::Error for ResampleError {}

fn err(e: impl fmt::Display) -> ResampleError {
    ResampleError(e.to_string())
}

/// Frames per rubato call: 20 ms at 8 kHz, the RTP packet size, as measured in the reference
/// (5–6 ns per input sample for 8k→16k).
pub const DEFAULT_CHUNK: usize = 160;

/// Streaming mono i16 resampler.
pub struct Resampler {
    fft: Fft<f32>,
    from: u64,
    to: u64,
    chunk: usize,
    inbuf: Vec<f32>,
    outbuf: Vec<f32>,
    /// Output frames still to discard (rubato's delay).
    skip: usize,
    total_in: u64,
    total_out: u64,
}

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz taking `chunk` input frames per FFT call.
    pub fn new(from: u32, to: u32, chunk: usize) -> Result<Resampler, ResampleError> {
        if from == 0 || to == 0 || chunk == 0 {
            return Err(ResampleError(format!(
                "invalid rates {from} → {to} or chunk {chunk}"
            )));
        }
        let fft =
            Fft::<f32>::new(from as usize, to as usize, chunk, 1, FixedSync::Input).map_err(err)?;
        let outbuf = vec![0.0; fft.output_frames_max()];
        let skip = fft.output_delay();
        let chunk = fft.input_frames_next();
        Ok(Resampler {
            fft,
            from: from as u64,
            to: to as u64,
            chunk,
            inbuf: Vec::with_capacity(chunk),
            outbuf,
            skip,
            total_in: 0,
            total_out: 0,
        })
    }

    /// 8 kHz → 16 kHz with the default chunk.
    pub fn up_8k_to_16k() -> Result<Resampler, ResampleError> {
        Resampler::new(8000, 16000, DEFAULT_CHUNK)
    }

    /// Appends the resampled output that is ready to `out`; returns how many were appended.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) -> Result<usize, ResampleError> {
        self.total_in += input.len() as u64;
        let mut n = 0;
        let mut rest = input;
        while !rest.is_empty() {
            let take = (self.chunk - self.inbuf.len()).min(rest.len());
            self.inbuf
                .extend(rest[..take].iter().map(|&s| s as f32 / 32768.0));
            rest = &rest[take..];
            if self.inbuf.len() == self.chunk {
                n += self.run_chunk(out, u64::MAX)?;
                self.inbuf.clear();
            }
        }
        Ok(n)
    }

    fn run_chunk(&mut self, out: &mut Vec<i16>, limit: u64) -> Result<usize, ResampleError> {
        let input = InterleavedSlice::new(&self.inbuf[..], 1, self.chunk).map_err(err)?;
        let cap = self.outbuf.len();
        let mut output = InterleavedSlice::new_mut(&mut self.outbuf[..], 1, cap).map_err(err)?;
        let (_, produced) = self
            .fft
            .process_into_buffer(&input, &mut output, None)
            .map_err(err)?;
        let drop = self.skip.min(produced);
        self.skip -= drop;
        let room = limit.saturating_sub(self.total_out) as usize;
        let keep = (produced - drop).min(room);
        out.extend(
            self.outbuf[drop..drop + keep]
                .iter()
                .map(|&x| (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16),
        );
        self.total_out += keep as u64;
        Ok(keep)
    }

    /// Flushes the tail; afterwards exactly `ceil(total_in × to / from)` samples have been
    /// produced in all. The resampler is reset for reuse.
    pub fn finish(&mut self, out: &mut Vec<i16>) -> Result<usize, ResampleError> {
        let expected = (self.total_in * self.to).div_ceil(self.from);
        let mut n = 0;
        // Each zero-padded chunk pushes out at least chunk×ratio frames, so this terminates
        // after delay/chunk + 2 rounds.
        let mut guard = 0;
        while self.total_out < expected && guard < 1000 {
            self.inbuf.resize(self.chunk, 0.0);
            n += self.run_chunk(out, expected)?;
            self.inbuf.clear();
            guard += 1;
        }
        self.fft.reset();
        self.skip = self.fft.output_delay();
        self.total_in = 0;
        self.total_out = 0;
        Ok(n)
    }
}

/// Resamples a whole mono buffer.
pub fn resample_all(input: &[i16], from: u32, to: u32) -> Result<Vec<i16>, ResampleError> {
    let mut r = Resampler::new(from, to, DEFAULT_CHUNK.max(from as usize / 50))?;
    let mut out = Vec::with_capacity((input.len() as u64 * to as u64 / from as u64) as usize + 8);
    r.process(input, &mut out)?;
    r.finish(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tone(rate: f32, freq: f32, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| ((2.0 * std::f32::consts::PI * freq * i as f32 / rate).sin() * 10000.0) as i16)
            .collect()
    }

    #[test]
    fn upsampled_tone_matches_synthesized_16k_tone() {
        let src = tone(8000.0, 440.0, 8000);
        let up = resample_all(&src, 8000, 16000).unwrap();
        assert_eq!(up.len(), 16000);
        let want = tone(16000.0, 440.0, 16000);
        // Skip the edges (filter ramp-up/down); the middle must match closely.
        let (a, b) = (&up[400..15600], &want[400..15600]);
        let err: f64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| ((x as f64) - (y as f64)).powi(2))
            .sum::<f64>()
            / a.len() as f64;
        let sig: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum::<f64>() / b.len() as f64;
        let snr = 10.0 * (sig / err.max(1e-9)).log10();
        assert!(snr > 30.0, "SNR {snr} dB");
    }

    #[test]
    fn streaming_equals_whole_and_lengths_are_exact() {
        let src = tone(8000.0, 1000.0, 1234);
        let whole = resample_all(&src, 8000, 16000).unwrap();
        let mut r = Resampler::up_8k_to_16k().unwrap();
        let mut out = Vec::new();
        for part in src.chunks(37) {
            r.process(part, &mut out).unwrap();
        }
        r.finish(&mut out).unwrap();
        assert_eq!(out, whole);
        assert_eq!(
            resample_all(&tone(16000.0, 300.0, 999), 16000, 8000)
                .unwrap()
                .len(),
            500
        );
        assert!(Resampler::new(0, 8000, 160).is_err());
        assert!(resample_all(&[], 8000, 16000).unwrap().is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn any_input_any_split(src in proptest::collection::vec(any::<i16>(), 0..2000), split in 1usize..500) {
            let mut r = Resampler::up_8k_to_16k().unwrap();
            let mut out = Vec::new();
            for part in src.chunks(split) {
                r.process(part, &mut out).unwrap();
            }
            r.finish(&mut out).unwrap();
            prop_assert_eq!(out.len(), src.len() * 2);
        }
    }
}
