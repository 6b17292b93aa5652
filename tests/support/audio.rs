//! Test signals and the measurements the recording tests make on them.
//!
//! * Synthesis: [`test_signal`] (a slow chirp plus an amplitude-modulated tone: no period
//!   shorter than the whole signal, so cross-correlation has one clear peak), [`tone`].
//! * WAV in/out through `hound` ([`write_wav`], [`read_wav`]).
//! * [`to_8k`]: a windowed-sinc low-pass and integer decimation (16 kHz / 48 kHz sources are
//!   compared with the 8 kHz recording timeline).
//! * [`align`]: the lag that maximises the cross-correlation (computed with a small radix-2
//!   FFT: a direct O(N·L) search is too slow in a debug build), and the normalized
//!   correlation and SNR at that lag.
//! * [`goertzel`]: the power of one frequency, to tell which channel carries which tone.
#![allow(dead_code)] // each test binary uses a different subset

use std::f64::consts::PI;
use std::io::Cursor;
use std::path::Path;

/// Peak amplitude of synthesized signals: well below full scale so no codec clips.
pub const AMPLITUDE: f64 = 0.3 * 32767.0;

/// A pure tone of `freq` Hz, `secs` long, at `rate` Hz.
pub fn tone(rate: u32, secs: f64, freq: f64, amp: f64) -> Vec<i16> {
    let n = (f64::from(rate) * secs).round() as usize;
    (0..n)
        .map(|i| (amp * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()).round() as i16)
        .collect()
}

/// A speech-band test signal at `rate` Hz: a linear chirp 300 -> 3000 Hz over the whole
/// duration plus a 700 Hz tone whose amplitude follows a 1.3 Hz envelope. Everything stays
/// under 3.4 kHz so G.711 at 8 kHz keeps all of it.
pub fn test_signal(rate: u32, secs: f64) -> Vec<i16> {
    let n = (f64::from(rate) * secs).round() as usize;
    let (f0, f1) = (300.0, 3000.0);
    let k = (f1 - f0) / secs; // Hz per second
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let chirp = (2.0 * PI * (f0 * t + 0.5 * k * t * t)).sin();
            let env = 0.5 + 0.5 * (2.0 * PI * 1.3 * t).sin();
            let am = env * (2.0 * PI * 700.0 * t).sin();
            (AMPLITUDE * (0.6 * chirp + 0.4 * am)).round() as i16
        })
        .collect()
}

/// Writes a mono 16-bit PCM WAV.
pub fn write_wav(path: &Path, rate: u32, samples: &[i16]) {
    write_wav_channels(path, rate, &[samples])
}

/// Writes a 16-bit PCM WAV with one slice per channel (interleaved on disk).
pub fn write_wav_channels(path: &Path, rate: u32, channels: &[&[i16]]) {
    let spec = hound::WavSpec {
        channels: channels.len() as u16,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create WAV");
    let n = channels.iter().map(|c| c.len()).max().unwrap_or(0);
    for i in 0..n {
        for c in channels {
            w.write_sample(c.get(i).copied().unwrap_or(0)).unwrap();
        }
    }
    w.finalize().expect("finalize WAV");
}

/// A decoded WAV: its spec and one vector per channel.
#[derive(Debug, Clone)]
pub struct Wav {
    pub spec: hound::WavSpec,
    pub channels: Vec<Vec<i16>>,
}

impl Wav {
    pub fn frames(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }
    pub fn duration_secs(&self) -> f64 {
        self.frames() as f64 / f64::from(self.spec.sample_rate)
    }
}

/// Parses a 16-bit PCM WAV from bytes.
pub fn read_wav(bytes: &[u8]) -> Result<Wav, String> {
    let r = hound::WavReader::new(Cursor::new(bytes)).map_err(|e| format!("not a WAV: {e}"))?;
    let spec = r.spec();
    if spec.bits_per_sample != 16 || spec.sample_format != hound::SampleFormat::Int {
        return Err(format!("not 16-bit PCM: {spec:?}"));
    }
    let ch = usize::from(spec.channels.max(1));
    let mut channels = vec![Vec::new(); ch];
    for (i, s) in r.into_samples::<i16>().enumerate() {
        channels[i % ch].push(s.map_err(|e| format!("WAV sample {i}: {e}"))?);
    }
    Ok(Wav { spec, channels })
}

/// Low-pass (windowed sinc, cut-off 3.6 kHz) and decimate `x` from `rate` to 8 kHz. `rate`
/// must be a multiple of 8000.
pub fn to_8k(x: &[i16], rate: u32) -> Vec<i16> {
    assert!(
        rate % 8000 == 0,
        "to_8k: {rate} Hz is not a multiple of 8 kHz"
    );
    let m = (rate / 8000) as usize;
    if m == 1 {
        return x.to_vec();
    }
    let taps = 32 * m + 1;
    let fc = 3600.0 / f64::from(rate);
    let h: Vec<f64> = (0..taps)
        .map(|i| {
            let k = i as f64 - (taps / 2) as f64;
            let sinc = if k == 0.0 {
                2.0 * fc
            } else {
                (2.0 * PI * fc * k).sin() / (PI * k)
            };
            let w = 0.54 - 0.46 * (2.0 * PI * i as f64 / (taps - 1) as f64).cos();
            sinc * w
        })
        .collect();
    let half = taps / 2;
    (0..x.len() / m)
        .map(|o| {
            let c = o * m;
            let mut acc = 0.0;
            for (j, hj) in h.iter().enumerate() {
                let idx = c as isize + j as isize - half as isize;
                if idx >= 0 && (idx as usize) < x.len() {
                    acc += hj * f64::from(x[idx as usize]);
                }
            }
            acc.round().clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// Root-mean-square of a signal (0 for an empty one).
pub fn rms(x: &[i16]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

/// The largest absolute sample.
pub fn peak(x: &[i16]) -> i16 {
    x.iter().map(|s| s.saturating_abs()).max().unwrap_or(0)
}

// ---- FFT ---------------------------------------------------------------------------------

/// In-place iterative radix-2 FFT over (re, im); `inverse` without the 1/N scale.
fn fft(re: &mut [f64], im: &mut [f64], inverse: bool) {
    let n = re.len();
    debug_assert!(n.is_power_of_two() && im.len() == n);
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let ang = 2.0 * PI / len as f64 * if inverse { 1.0 } else { -1.0 };
        let (wr, wi) = (ang.cos(), ang.sin());
        for start in (0..n).step_by(len) {
            let (mut cr, mut ci) = (1.0f64, 0.0f64);
            for k in 0..len / 2 {
                let (a, b) = (start + k, start + k + len / 2);
                let tr = re[b] * cr - im[b] * ci;
                let ti = re[b] * ci + im[b] * cr;
                re[b] = re[a] - tr;
                im[b] = im[a] - ti;
                re[a] += tr;
                im[a] += ti;
                let ncr = cr * wr - ci * wi;
                ci = cr * wi + ci * wr;
                cr = ncr;
            }
        }
        len <<= 1;
    }
}

/// Cross-correlation c[l] = Σ_t rec[t + l] · reference[t] for every l in 0..rec.len().
fn xcorr(reference: &[i16], rec: &[i16]) -> Vec<f64> {
    let n = (reference.len() + rec.len()).next_power_of_two();
    let mut ar: Vec<f64> = rec.iter().map(|&s| f64::from(s)).collect();
    ar.resize(n, 0.0);
    let mut ai = vec![0.0; n];
    let mut br: Vec<f64> = reference.iter().map(|&s| f64::from(s)).collect();
    br.resize(n, 0.0);
    let mut bi = vec![0.0; n];
    fft(&mut ar, &mut ai, false);
    fft(&mut br, &mut bi, false);
    // A · conj(B)
    for k in 0..n {
        let (r, i) = (ar[k] * br[k] + ai[k] * bi[k], ai[k] * br[k] - ar[k] * bi[k]);
        ar[k] = r;
        ai[k] = i;
    }
    fft(&mut ar, &mut ai, true);
    ar.truncate(rec.len());
    ar.iter().map(|v| v / n as f64).collect()
}

/// How well `rec` contains `reference`.
#[derive(Debug, Clone, Copy)]
pub struct Alignment {
    /// `reference[0]` sits at `rec[lag]`.
    pub lag: usize,
    /// Normalized cross-correlation at `lag` over the overlap (1.0 = identical shape).
    pub correlation: f64,
    /// Signal-to-noise ratio in dB of `rec` against `reference` after the best gain.
    pub snr_db: f64,
}

/// Finds where `reference` starts inside `rec` (reference delayed by 0..rec.len()) and
/// measures the match there. The best lag maximises the *normalized* correlation among the
/// 32 largest raw peaks, so a loud unrelated stretch cannot win by energy alone.
pub fn align(reference: &[i16], rec: &[i16]) -> Alignment {
    if reference.is_empty() || rec.is_empty() {
        return Alignment {
            lag: 0,
            correlation: 0.0,
            snr_db: f64::NEG_INFINITY,
        };
    }
    let c = xcorr(reference, rec);
    let mut order: Vec<usize> = (0..c.len()).collect();
    order.sort_by(|&a, &b| c[b].total_cmp(&c[a]));
    let mut best = Alignment {
        lag: 0,
        correlation: f64::NEG_INFINITY,
        snr_db: f64::NEG_INFINITY,
    };
    for &lag in order.iter().take(32) {
        let a = measure_at(reference, rec, lag);
        if a.correlation > best.correlation {
            best = a;
        }
    }
    best
}

/// Normalized correlation and SNR of `rec[lag..]` against `reference` over their overlap.
pub fn measure_at(reference: &[i16], rec: &[i16], lag: usize) -> Alignment {
    let n = reference.len().min(rec.len().saturating_sub(lag));
    let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
    for t in 0..n {
        let x = f64::from(reference[t]);
        let y = f64::from(rec[lag + t]);
        xy += x * y;
        xx += x * x;
        yy += y * y;
    }
    let correlation = if xx > 0.0 && yy > 0.0 {
        xy / (xx * yy).sqrt()
    } else {
        0.0
    };
    // best gain g = xy/xx; noise = y - g x
    let g = if xx > 0.0 { xy / xx } else { 0.0 };
    let signal = g * g * xx;
    let noise = (yy - 2.0 * g * xy + g * g * xx).max(1e-9);
    Alignment {
        lag,
        correlation,
        snr_db: 10.0 * (signal.max(1e-9) / noise).log10(),
    }
}

/// Goertzel power of `freq` in `x` (normalized by length², comparable across signals).
pub fn goertzel(x: &[i16], rate: u32, freq: f64) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    let w = 2.0 * PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let p = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    p / (x.len() as f64).powi(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_finds_a_delay_and_measures_a_perfect_match() {
        let src = test_signal(8000, 2.0);
        let mut rec = vec![0i16; 3210];
        rec.extend_from_slice(&src);
        rec.extend(std::iter::repeat_n(0, 4000));
        let a = align(&src, &rec);
        assert_eq!(a.lag, 3210);
        assert!(a.correlation > 0.999, "{a:?}");
        assert!(a.snr_db > 60.0, "{a:?}");
    }

    #[test]
    fn noise_and_gain_lower_snr_not_lag() {
        let src = test_signal(8000, 2.0);
        let mut seed = 12345u32;
        let mut noise = || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            ((seed >> 16) as i16 as f64 / 32768.0 * 300.0) as i16
        };
        let mut rec: Vec<i16> = vec![0; 100];
        rec.extend(
            src.iter()
                .map(|&s| ((f64::from(s) * 0.5) as i16).saturating_add(noise())),
        );
        let a = align(&src, &rec);
        assert_eq!(a.lag, 100);
        assert!(a.correlation > 0.95 && a.correlation < 0.9999, "{a:?}");
        assert!(a.snr_db > 10.0 && a.snr_db < 40.0, "{a:?}");
        // an unrelated signal does not correlate
        let other = tone(8000, 2.0, 1234.0, AMPLITUDE);
        assert!(align(&src, &other).correlation < 0.3);
    }

    #[test]
    fn decimation_keeps_the_speech_band() {
        let src48 = test_signal(48000, 1.0);
        let src8 = test_signal(8000, 1.0);
        let d = to_8k(&src48, 48000);
        assert_eq!(d.len(), src8.len());
        let a = measure_at(&src8, &d, 0);
        assert!(a.correlation > 0.99, "{a:?}");
        let d16 = to_8k(&test_signal(16000, 1.0), 16000);
        assert!(measure_at(&src8, &d16, 0).correlation > 0.99);
    }

    #[test]
    fn goertzel_tells_tones_apart() {
        let a = tone(8000, 0.5, 440.0, AMPLITUDE);
        assert!(goertzel(&a, 8000, 440.0) > 100.0 * goertzel(&a, 8000, 1000.0));
    }

    #[test]
    fn wav_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.wav");
        let l = tone(8000, 0.1, 440.0, 1000.0);
        let r = tone(8000, 0.1, 1000.0, 1000.0);
        write_wav_channels(&p, 8000, &[&l, &r]);
        let w = read_wav(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(w.channels, vec![l, r]);
        assert_eq!(w.spec.sample_rate, 8000);
    }
}
