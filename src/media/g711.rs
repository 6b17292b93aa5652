//! G.711 µ-law (PCMU) and A-law (PCMA), ITU-T G.711.
//!
//! Decoding is one lookup in a 256-entry table built at compile time (a `const fn`), so the
//! hot path is a load per sample with no branches. Encoding is the classic segment search
//! with `leading_zeros`; it is used off the hot path (tests, the A-law WAV output, load
//! generators).

const fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let sign = u & 0x80;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if sign != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let exponent = ((a >> 4) & 0x07) as i32;
    let mantissa = (a & 0x0F) as i32;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_to_linear(i as u8)
        } else {
            ulaw_to_linear(i as u8)
        };
        i += 1;
    }
    t
}

/// µ-law code → linear 16-bit sample.
pub static ULAW_DECODE: [i16; 256] = build_table(false);
/// A-law code → linear 16-bit sample.
pub static ALAW_DECODE: [i16; 256] = build_table(true);

/// Appends the decoded µ-law payload to `out`.
#[inline]
pub fn decode_ulaw(payload: &[u8], out: &mut Vec<i16>) {
    out.extend(payload.iter().map(|&b| ULAW_DECODE[b as usize]));
}

/// Appends the decoded A-law payload to `out`.
#[inline]
pub fn decode_alaw(payload: &[u8], out: &mut Vec<i16>) {
    out.extend(payload.iter().map(|&b| ALAW_DECODE[b as usize]));
}

/// Linear sample → µ-law code (G.711 with the usual 0x84 bias and clipping at 32635).
pub fn encode_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let s = sample as i32;
    let sign = if s < 0 { 0x80u8 } else { 0 };
    let magnitude = s.abs().min(CLIP) + BIAS;
    // Segment = position of the highest set bit above bit 7 (magnitude >= 0x84 so bit 7 set).
    let exponent = (31 - (magnitude as u32).leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (magnitude >> (exponent + 3)) & 0x0F;
    !(sign | ((exponent as u8) << 4) | mantissa as u8)
}

/// Linear sample → A-law code.
pub fn encode_alaw(sample: i16) -> u8 {
    let s = sample as i32;
    let (sign, magnitude) = if s >= 0 {
        (0x80u8, s)
    } else {
        // -1 maps to the smallest negative step, as in the reference coder (~s, not -s).
        (0x00u8, !s)
    };
    let magnitude = magnitude.min(0x7FFF);
    let code = if magnitude < 256 {
        (magnitude >> 4) as u8
    } else {
        let exponent = 31 - (magnitude as u32).leading_zeros() as i32 - 7; // 1..=7
        let mantissa = (magnitude >> (exponent + 3)) & 0x0F;
        ((exponent as u8) << 4) | mantissa as u8
    };
    (sign | code) ^ 0x55
}

/// Appends µ-law codes for `samples`.
pub fn encode_ulaw_into(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&s| encode_ulaw(s)));
}

/// Appends A-law codes for `samples`.
pub fn encode_alaw_into(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&s| encode_alaw(s)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        assert_eq!(ULAW_DECODE[0xFF], 0);
        assert_eq!(ULAW_DECODE[0x7F], 0);
        assert_eq!(ULAW_DECODE[0x00], -32124);
        assert_eq!(ULAW_DECODE[0x80], 32124);
        assert_eq!(ALAW_DECODE[0xD5], 8);
        assert_eq!(ALAW_DECODE[0x55], -8);
        assert_eq!(ALAW_DECODE[0xAA], 32256);
        assert_eq!(ALAW_DECODE[0x2A], -32256);
        assert_eq!(encode_ulaw(0), 0xFF);
        assert_eq!(encode_alaw(0), 0xD5);
    }

    #[test]
    fn every_code_round_trips() {
        for c in 0..=255u8 {
            let u = ULAW_DECODE[c as usize];
            // µ-law has two zeros (0x7F and 0xFF); both decode to 0, which encodes to 0xFF.
            if u != 0 {
                assert_eq!(encode_ulaw(u), c, "ulaw code {c:#x}");
            }
            assert_eq!(encode_alaw(ALAW_DECODE[c as usize]), c, "alaw code {c:#x}");
        }
    }

    proptest! {
        #[test]
        fn quantisation_error_is_bounded(s in any::<i16>()) {
            // G.711 is ~13-bit (A) / 14-bit (µ) logarithmic: error under 1/16 of |s| plus a step.
            let u = ULAW_DECODE[encode_ulaw(s) as usize] as i32;
            let a = ALAW_DECODE[encode_alaw(s) as usize] as i32;
            prop_assert!((u - s as i32).abs() <= (s as i32).abs() / 15 + 40 || (s as i32).abs() > 32000);
            prop_assert!((a - s as i32).abs() <= (s as i32).abs() / 15 + 40 || (s as i32).abs() > 32000);
        }
    }
}
