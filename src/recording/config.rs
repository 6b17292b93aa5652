//! `[recording]`: the recording server's SIP URIs, media ports, timers, outputs and keys.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Off by default: no key is created and no media port is opened until an operator asks.
    pub enabled: bool,
    /// Request-URI user parts answered as recording URIs (`sip:record@host`). Anything else
    /// stays with the registrar's rules.
    pub uris: Vec<String>,
    /// The address media is received on and advertised in the SDP answer. Loopback by default,
    /// like every listener: recording a softswitch on the same host needs nothing more.
    pub media_ip: IpAddr,
    /// Even RTP ports are taken from this range; RTCP uses the odd port above each.
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    /// A recording whose streams all stay silent (no RTP at all) this long ends as if a BYE
    /// had come: the SRC has gone without telling us.
    pub rtp_timeout_secs: u64,
    /// Recordings at once; beyond it INVITEs get 503 with Retry-After.
    pub max_concurrent: usize,
    /// Threads receiving and writing media. One keeps up with about a thousand calls.
    pub media_threads: usize,
    /// How long a packet may arrive late and still be put in order.
    pub reorder_ms: u32,
    /// How often the WAV header is rewritten while recording: a crash loses at most this much.
    pub checkpoint_ms: u64,
    /// Outputs produced after the call, first one served for download: wav | alaw | wav16k.
    pub formats: Vec<String>,
    /// The AES-256 key (32 raw bytes or 64 hex characters, mode 0600). Created under the
    /// state directory when it does not exist.
    pub key_file: Option<PathBuf>,
    /// Recordings older than this are deleted with their index rows; 0 keeps them for ever.
    pub retention_days: u32,
    /// Transcoding threads, and jobs that may wait for one.
    pub workers: usize,
    pub queue: usize,
    /// The default puts the customer left and the agent right (Amazon Connect's layout).
    pub swap_channels: bool,
    /// Keep the keys of DTMF presses in the index. Off by default: they are often card
    /// numbers or PINs, and the index is not encrypted; when, how long and which side are
    /// kept either way.
    pub dtmf_digits: bool,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            enabled: false,
            uris: vec!["record".into()],
            media_ip: IpAddr::from([127, 0, 0, 1]),
            rtp_port_min: 30_000,
            rtp_port_max: 39_999,
            rtp_timeout_secs: 30,
            max_concurrent: 2_000,
            media_threads: 1,
            reorder_ms: 200,
            checkpoint_ms: 2_000,
            formats: vec!["wav".into()],
            key_file: None,
            retention_days: 90,
            workers: 2,
            queue: 1_024,
            swap_channels: false,
            dtmf_digits: false,
        }
    }
}

impl RecordingConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let range = crate::config::check_range;
        if self.media_ip.is_unspecified() {
            // The SDP answer names this address; 0.0.0.0 there means "hold" (RFC 2543).
            return Err((
                "recording.media_ip",
                "must be a concrete address the recording clients can reach".into(),
            ));
        }
        if self.uris.is_empty() {
            return Err(("recording.uris", "must name at least one user part".into()));
        }
        for u in &self.uris {
            if u.is_empty()
                || u.len() > 64
                || !u
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
            {
                return Err((
                    "recording.uris",
                    format!("{u:?} is not a plain SIP user part (A-Z a-z 0-9 - _ . +)"),
                ));
            }
        }
        range(
            "recording.rtp_port_min",
            self.rtp_port_min.into(),
            1024,
            65_534,
        )?;
        range(
            "recording.rtp_port_max",
            self.rtp_port_max.into(),
            u64::from(self.rtp_port_min) + 1,
            65_535,
        )?;
        range(
            "recording.rtp_timeout_secs",
            self.rtp_timeout_secs,
            1,
            3_600,
        )?;
        range(
            "recording.max_concurrent",
            self.max_concurrent as u64,
            1,
            100_000,
        )?;
        range("recording.media_threads", self.media_threads as u64, 1, 64)?;
        range("recording.reorder_ms", self.reorder_ms.into(), 20, 2_000)?;
        range("recording.checkpoint_ms", self.checkpoint_ms, 100, 60_000)?;
        range("recording.workers", self.workers as u64, 1, 64)?;
        range("recording.queue", self.queue as u64, 1, 1_000_000)?;
        range(
            "recording.retention_days",
            self.retention_days.into(),
            0,
            36_500,
        )?;
        if self.formats.is_empty() {
            return Err(("recording.formats", "must name at least one output".into()));
        }
        for f in &self.formats {
            super::transcode::Format::parse(f).map_err(|e| ("recording.formats", e))?;
        }
        Ok(())
    }

    /// Even ports of the range (RTP), each with its odd neighbour (RTCP).
    pub fn port_pairs(&self) -> usize {
        let lo = self.rtp_port_min.next_multiple_of(2);
        if lo >= self.rtp_port_max {
            return 0;
        }
        usize::from((self.rtp_port_max - lo).div_ceil(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_off() {
        let c = RecordingConfig::default();
        assert!(!c.enabled);
        c.validate().unwrap();
        assert_eq!(c.port_pairs(), 5_000);
    }

    #[test]
    fn refusals_name_the_key() {
        let cases: Vec<(RecordingConfig, &str)> = vec![
            (
                RecordingConfig {
                    uris: vec![],
                    ..Default::default()
                },
                "recording.uris",
            ),
            (
                RecordingConfig {
                    uris: vec!["rec ord".into()],
                    ..Default::default()
                },
                "recording.uris",
            ),
            (
                RecordingConfig {
                    rtp_port_min: 40_000,
                    rtp_port_max: 30_000,
                    ..Default::default()
                },
                "recording.rtp_port_max",
            ),
            (
                RecordingConfig {
                    rtp_timeout_secs: 0,
                    ..Default::default()
                },
                "recording.rtp_timeout_secs",
            ),
            (
                RecordingConfig {
                    media_ip: "0.0.0.0".parse().unwrap(),
                    ..Default::default()
                },
                "recording.media_ip",
            ),
            (
                RecordingConfig {
                    formats: vec![],
                    ..Default::default()
                },
                "recording.formats",
            ),
            (
                RecordingConfig {
                    formats: vec!["wav".into(), "mp3".into()],
                    ..Default::default()
                },
                "recording.formats",
            ),
        ];
        for (c, key) in cases {
            assert_eq!(c.validate().unwrap_err().0, key);
        }
    }
}
