//! G.722 (RFC 3551: 16 kHz audio, 8000 Hz RTP clock, one byte per two 16 kHz samples) via
//! `ezk_g722::libg722`.
//!
//! The recording timeline is 8 kHz, so the decoder runs libg722 in its "eight_k" mode: it
//! decodes only the lower sub-band, which *is* the 0–4 kHz signal sampled at 8 kHz (the QMF
//! split already band-limited it). That is a decimation by two for free — no separate
//! resampler, no extra delay — and one output sample per payload byte, which matches the
//! 8000 Hz RTP clock exactly.

use ezk_g722::libg722::{decoder::Decoder, encoder::Encoder, Bitrate};

/// G.722 64 kbit/s decoder to 8 kHz mono.
pub struct G722Decoder {
    inner: Decoder,
}

impl Default for G722Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Decoder {
    pub fn new() -> G722Decoder {
        G722Decoder {
            inner: Decoder::new(Bitrate::Mode1_64000, false, true),
        }
    }

    /// Appends one 8 kHz sample per payload byte.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> usize {
        // libg722 returns a fresh Vec; G.722 is not the hot path (G.711 is), so the
        // allocation is accepted rather than forking the crate.
        let pcm = self.inner.decode(payload);
        out.extend_from_slice(&pcm);
        pcm.len()
    }
}

/// G.722 64 kbit/s encoder from 16 kHz mono (tests, load generators).
pub struct G722Encoder {
    inner: Encoder,
}

impl Default for G722Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Encoder {
    pub fn new() -> G722Encoder {
        G722Encoder {
            inner: Encoder::new(Bitrate::Mode1_64000, false, false),
        }
    }

    /// Encodes 16 kHz samples; an odd trailing sample is dropped (libg722 asserts on it).
    pub fn encode(&mut self, pcm16k: &[i16]) -> Vec<u8> {
        let even = pcm16k.len() & !1;
        self.inner.encode(&pcm16k[..even])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_sample_per_byte() {
        let mut enc = G722Encoder::new();
        let pcm: Vec<i16> = (0..320)
            .map(|i| ((i as f32 * 0.1).sin() * 5000.0) as i16)
            .collect();
        let bytes = enc.encode(&pcm);
        assert_eq!(bytes.len(), 160);
        let mut out = Vec::new();
        assert_eq!(G722Decoder::new().decode(&bytes, &mut out), 160);
        assert_eq!(enc.encode(&pcm[..3]).len(), 1);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let mut out = Vec::new();
            prop_assert_eq!(G722Decoder::new().decode(&payload, &mut out), payload.len());
        }
    }
}
