//! The audio codecs a recording accepts, and their decoders to the 8 kHz mono timeline.

use std::fmt;

use super::{g711, g722::G722Decoder, opus};

/// An audio codec we can record. `Opus` only when [`opus_available`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Pcmu,
    Pcma,
    G722,
    Opus,
}

impl Codec {
    /// RTP clock rate as written in `a=rtpmap` (RFC 3551: G.722 is 8000 despite 16 kHz audio;
    /// RFC 7587: Opus is always 48000).
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G722 => 8000,
            Codec::Opus => 48000,
        }
    }

    /// Channels in `a=rtpmap` (Opus is always declared `/2`, RFC 7587).
    pub fn rtpmap_channels(self) -> u8 {
        match self {
            Codec::Opus => 2,
            _ => 1,
        }
    }

    /// Encoding name as in `a=rtpmap` (compare case-insensitively when parsing).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::Opus => "opus",
        }
    }

    /// RFC 3551 static payload type, if any.
    pub fn static_pt(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::G722 => Some(9),
            Codec::Opus => None,
        }
    }

    /// RTP timestamp ticks per sample on the 8 kHz recording timeline.
    pub fn ticks_per_sample(self) -> u32 {
        self.clock_rate() / 8000
    }

    /// Parses an rtpmap encoding name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Codec> {
        [Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus]
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether Opus can be decoded here (libopus.so.0 loads).
pub fn opus_available() -> bool {
    opus::available()
}

/// A payload the decoder rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub codec: Codec,
    pub detail: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} payload rejected: {}", self.codec, self.detail)
    }
}

impl std::error::Error for DecodeError {}

/// The codec cannot be decoded on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecUnavailable(pub Codec);

impl fmt::Display for CodecUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not available (libopus.so.0 could not be loaded)",
            self.0
        )
    }
}

impl std::error::Error for CodecUnavailable {}

/// Decodes one RTP payload to 8 kHz mono i16, appending to `out`.
pub trait Decoder: Send {
    /// Returns the number of samples appended; on `Err`, `out` is unchanged.
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<usize, DecodeError>;
}

struct Pcmu;
struct Pcma;
struct G722(G722Decoder);
struct Opus(opus::OpusDecoder);

impl Decoder for Pcmu {
    #[inline]
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<usize, DecodeError> {
        g711::decode_ulaw(payload, out);
        Ok(payload.len())
    }
}

impl Decoder for Pcma {
    #[inline]
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<usize, DecodeError> {
        g711::decode_alaw(payload, out);
        Ok(payload.len())
    }
}

impl Decoder for G722 {
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<usize, DecodeError> {
        Ok(self.0.decode(payload, out))
    }
}

impl Decoder for Opus {
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<usize, DecodeError> {
        self.0.decode(payload, out).map_err(|code| DecodeError {
            codec: Codec::Opus,
            detail: format!("libopus error {code}"),
        })
    }
}

/// A fresh decoder for `codec`.
pub fn decoder(codec: Codec) -> Result<Box<dyn Decoder>, CodecUnavailable> {
    Ok(match codec {
        Codec::Pcmu => Box::new(Pcmu),
        Codec::Pcma => Box::new(Pcma),
        Codec::G722 => Box::new(G722(G722Decoder::new())),
        Codec::Opus => Box::new(Opus(
            opus::OpusDecoder::new().ok_or(CodecUnavailable(Codec::Opus))?,
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_rates() {
        assert_eq!(Codec::from_name("pcmu"), Some(Codec::Pcmu));
        assert_eq!(Codec::from_name("OPUS"), Some(Codec::Opus));
        assert_eq!(Codec::from_name("G729"), None);
        assert_eq!(Codec::G722.clock_rate(), 8000);
        assert_eq!(Codec::Opus.ticks_per_sample(), 6);
        assert_eq!(Codec::Pcma.static_pt(), Some(8));
    }

    #[test]
    fn opus_decoder_matches_availability() {
        assert_eq!(decoder(Codec::Opus).is_ok(), opus_available());
        let mut d = decoder(Codec::Pcmu).unwrap();
        let mut out = Vec::new();
        assert_eq!(d.decode(&[0xFF; 160], &mut out), Ok(160));
        assert!(out.iter().all(|&s| s == 0));
    }
}
