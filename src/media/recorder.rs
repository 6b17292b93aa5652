//! A two-channel recording session, sans-IO over any `Write + Seek` sink.
//!
//! Each channel is a [`Stream`]; its samples are queued until the other channel has audio
//! for the same frames, then interleaved into the stereo WAV. Alignment: a channel's first
//! sample sits at the arrival of its first packet, measured from the recording's start.
//! A channel that stays silent for longer than its reorder window (hold, one-way audio, a
//! leg that never sends) is padded with silence up to "now − window", so the other channel
//! is never held back by more than the window and memory stays bounded.

use std::io::{self, Seek, Write};

use super::dtmf::DtmfEvent;
use super::jitter::{PacketRefused, Stream, StreamConfig, StreamStats};
use super::wav::StereoWavWriter;

/// Stereo channel. Default layout: customer left, agent right (the caller decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Left,
    Right,
}

impl Channel {
    fn index(self) -> usize {
        match self {
            Channel::Left => 0,
            Channel::Right => 1,
        }
    }
}

/// Tunables; [`RecordingOptions::default`] is what the daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordingOptions {
    /// Header checkpoint interval: a crash loses at most this much (before repair).
    pub checkpoint_ms: u64,
    /// A channel more than this far ahead of the other forces the other to be padded, so a
    /// sender running faster than real time cannot grow memory without bound.
    pub max_skew_ms: u64,
}

impl Default for RecordingOptions {
    fn default() -> Self {
        RecordingOptions {
            checkpoint_ms: 5000,
            max_skew_ms: 10_000,
        }
    }
}

/// A DTMF event with the channel it came from and its offset into the recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedDtmf {
    pub channel: Channel,
    pub offset_ms: u64,
    pub event: DtmfEvent,
}

/// At most this many DTMF events are kept per recording.
pub const MAX_DTMF: usize = 4096;

/// What [`Recording::finish`] reports.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingSummary {
    pub duration_ms: u64,
    pub frames: u64,
    pub left: StreamStats,
    pub right: StreamStats,
    pub dtmf: Vec<RecordedDtmf>,
}

struct Chan {
    stream: Stream,
    started: bool,
    /// Samples for frames [written, end).
    buf: Vec<i16>,
    end: u64,
    last_push_ms: u64,
}

/// One recording: two channels into one stereo 8 kHz WAV.
pub struct Recording<W: Write + Seek> {
    wav: StereoWavWriter<W>,
    start_ms: u64,
    opts: RecordingOptions,
    ch: [Chan; 2],
    written: u64,
    last_checkpoint_ms: u64,
    dtmf: Vec<RecordedDtmf>,
}

fn ms_to_frames(ms: u64) -> u64 {
    ms * 8
}

#[cfg(test)]
impl Recording<std::io::Cursor<Vec<u8>>> {
    fn wav_snapshot(&self) -> Vec<u8> {
        self.wav.sink_ref().get_ref().clone()
    }
}

impl<W: Write + Seek> Recording<W> {
    pub fn new(sink: W, left: StreamConfig, right: StreamConfig, now_ms: u64) -> io::Result<Self> {
        Self::with_options(sink, left, right, now_ms, RecordingOptions::default())
    }

    pub fn with_options(
        sink: W,
        left: StreamConfig,
        right: StreamConfig,
        now_ms: u64,
        opts: RecordingOptions,
    ) -> io::Result<Self> {
        let chan = |cfg| Chan {
            stream: Stream::new(cfg),
            started: false,
            buf: Vec::with_capacity(4096),
            end: 0,
            last_push_ms: now_ms,
        };
        Ok(Recording {
            wav: StereoWavWriter::new(sink)?,
            start_ms: now_ms,
            opts,
            ch: [chan(left), chan(right)],
            written: 0,
            last_checkpoint_ms: now_ms,
            dtmf: Vec::new(),
        })
    }

    /// One datagram for channel `ch`. Refused packets change nothing.
    pub fn push(&mut self, ch: Channel, datagram: &[u8], now_ms: u64) -> Result<(), PacketRefused> {
        let c = &mut self.ch[ch.index()];
        c.stream.push(datagram, now_ms)?;
        c.last_push_ms = now_ms;
        if !c.started {
            c.started = true;
            // The channel's first sample belongs at its first arrival; whatever came before
            // (or was padded) is silence.
            let origin = ms_to_frames(now_ms.saturating_sub(self.start_ms));
            if origin > c.end {
                c.buf.resize(c.buf.len() + (origin - c.end) as usize, 0);
                c.end = origin;
            }
        }
        Ok(())
    }

    /// New negotiated payload types for a channel (re-INVITE); the timeline continues.
    pub fn reconfigure(&mut self, ch: Channel, cfg: StreamConfig) {
        let c = &mut self.ch[ch.index()];
        // Release what was received under the old mapping first.
        let n = c.stream.finish(&mut c.buf);
        c.end += n as u64;
        c.stream.reconfigure(cfg);
    }

    /// Writes whatever is final; pads idle channels; checkpoints the header every
    /// `checkpoint_ms`.
    pub fn poll(&mut self, now_ms: u64) -> io::Result<()> {
        for c in &mut self.ch {
            if c.started {
                let n = c.stream.drain(now_ms, &mut c.buf);
                c.end += n as u64;
            }
        }
        let elapsed = now_ms.saturating_sub(self.start_ms);
        for c in &mut self.ch {
            let window = c.stream.config().reorder_ms as u64;
            let target = ms_to_frames(elapsed.saturating_sub(window));
            let idle = now_ms.saturating_sub(c.last_push_ms) > window && c.stream.pending() == 0;
            if idle && c.end < target {
                Self::pad(c, target - c.end);
            }
        }
        // Bound the skew between channels.
        let skew = ms_to_frames(self.opts.max_skew_ms);
        let (e0, e1) = (self.ch[0].end, self.ch[1].end);
        if e0 > e1 + skew {
            Self::pad(&mut self.ch[1], e0 - e1 - skew);
        } else if e1 > e0 + skew {
            Self::pad(&mut self.ch[0], e1 - e0 - skew);
        }
        self.collect_dtmf();
        self.write_common()?;
        if now_ms.saturating_sub(self.last_checkpoint_ms) >= self.opts.checkpoint_ms {
            self.wav.checkpoint()?;
            self.last_checkpoint_ms = now_ms;
        }
        Ok(())
    }

    fn pad(c: &mut Chan, frames: u64) {
        if c.started {
            c.stream.pad(frames, &mut c.buf);
        } else {
            c.buf.resize(c.buf.len() + frames as usize, 0);
        }
        c.end += frames;
    }

    fn collect_dtmf(&mut self) {
        for (i, c) in self.ch.iter_mut().enumerate() {
            for event in c.stream.take_dtmf() {
                if self.dtmf.len() < MAX_DTMF {
                    self.dtmf.push(RecordedDtmf {
                        channel: if i == 0 {
                            Channel::Left
                        } else {
                            Channel::Right
                        },
                        offset_ms: event.at_ms.saturating_sub(self.start_ms),
                        event,
                    });
                }
            }
        }
    }

    fn write_common(&mut self) -> io::Result<()> {
        let upto = self.ch[0].end.min(self.ch[1].end);
        let n = upto.saturating_sub(self.written) as usize;
        if n == 0 {
            return Ok(());
        }
        let [l, r] = &mut self.ch;
        self.wav.write_frames(&l.buf[..n], &r.buf[..n])?;
        for c in [l, r] {
            c.buf.copy_within(n.., 0);
            let keep = c.buf.len() - n;
            c.buf.truncate(keep);
        }
        self.written += n as u64;
        Ok(())
    }

    /// Frames written to the sink so far.
    pub fn frames_written(&self) -> u64 {
        self.written
    }

    /// Milliseconds since the last packet on either channel (RTP timeout).
    pub fn idle_ms(&self, now_ms: u64) -> u64 {
        let last = self.ch[0].last_push_ms.max(self.ch[1].last_push_ms);
        now_ms.saturating_sub(last)
    }

    pub fn stats(&self, ch: Channel) -> StreamStats {
        self.ch[ch.index()].stream.stats()
    }

    /// Flushes both channels, pads the shorter one with silence to the longer, and finalizes
    /// the header. The recording ends at the last audio received; `now_ms` (the BYE or the
    /// RTP timeout) does not extend it with trailing silence.
    pub fn finish(self, now_ms: u64) -> io::Result<RecordingSummary> {
        self.finish_into_inner(now_ms).map(|(s, _)| s)
    }

    /// Like [`Recording::finish`] but hands the sink back.
    pub fn finish_into_inner(mut self, _now_ms: u64) -> io::Result<(RecordingSummary, W)> {
        for c in &mut self.ch {
            let n = c.stream.finish(&mut c.buf);
            c.end += n as u64;
        }
        let end = self.ch[0].end.max(self.ch[1].end);
        for c in &mut self.ch {
            if c.end < end {
                let missing = end - c.end;
                Self::pad(c, missing);
            }
        }
        self.collect_dtmf();
        self.write_common()?;
        let frames = self.wav.frames();
        let sink = self.wav.finalize()?;
        Ok((
            RecordingSummary {
                duration_ms: frames / 8,
                frames,
                left: self.ch[0].stream.stats(),
                right: self.ch[1].stream.stats(),
                dtmf: self.dtmf,
            },
            sink,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::Codec;
    use crate::media::dtmf;
    use crate::media::jitter::test_support::{correlation, packets, tone};
    use crate::media::rtp::{build, Header};
    use proptest::prelude::*;
    use std::io::Cursor;

    fn pcmu() -> StreamConfig {
        StreamConfig::new(vec![(0, Codec::Pcmu), (8, Codec::Pcma)], Some(101))
    }

    fn read(bytes: Vec<u8>) -> (Vec<i16>, Vec<i16>) {
        let mut rd = hound::WavReader::new(Cursor::new(bytes)).expect("valid WAV");
        assert_eq!(rd.spec().channels, 2);
        assert_eq!(rd.spec().sample_rate, 8000);
        let s: Vec<i16> = rd.samples::<i16>().map(|x| x.unwrap()).collect();
        (
            s.iter().step_by(2).copied().collect(),
            s.iter().skip(1).step_by(2).copied().collect(),
        )
    }

    #[test]
    fn two_parties_land_on_their_channels_aligned_by_arrival() {
        // Customer (left) starts at t=0, agent (right) 100 ms later with its own SSRC/seq/ts.
        let (lp, lref) = packets(Codec::Pcmu, 0, 1, 10, 1000, 100);
        let (rp, _) = packets(Codec::Pcma, 8, 2, 50000, 77, 95);
        let start = 1_000_000;
        let mut rec = Recording::new(Cursor::new(Vec::new()), pcmu(), pcmu(), start).unwrap();
        for i in 0..100u64 {
            let now = start + i * 20;
            rec.push(Channel::Left, &lp[i as usize], now).unwrap();
            if i >= 5 {
                rec.push(Channel::Right, &rp[i as usize - 5], now).unwrap();
            }
            rec.poll(now).unwrap();
        }
        let (sum, sink) = rec.finish_into_inner(start + 2000).unwrap();
        assert_eq!(sum.frames, 16000);
        assert_eq!(sum.duration_ms, 2000);
        assert_eq!(sum.left.received, 100);
        assert_eq!(sum.right.received, 95);
        let (l, r) = read(sink.into_inner());
        assert_eq!(l.len(), 16000);
        assert!(
            correlation(&l, &lref, 0) > 0.99,
            "left carries the customer"
        );
        assert!(r[..800].iter().all(|&x| x == 0), "right starts 100 ms in");
        assert!(r[800..].iter().any(|&x| x != 0));
        // Right is the same two-tone signal shifted by 800 frames.
        let shifted: Vec<i16> = r[800..].to_vec();
        let rref = tone(8000, &[440.0, 1000.0], 95 * 160);
        assert!(correlation(&shifted, &rref, 0) > 0.99);
    }

    #[test]
    fn idle_channel_is_padded_and_memory_stays_bounded() {
        let (lp, _) = packets(Codec::Pcmu, 0, 1, 0, 0, 250);
        let mut rec = Recording::new(Cursor::new(Vec::new()), pcmu(), pcmu(), 0).unwrap();
        for (i, p) in lp.iter().enumerate() {
            let now = i as u64 * 20;
            rec.push(Channel::Left, p, now).unwrap();
            rec.poll(now).unwrap();
            if now >= 400 {
                // Written up to at most one reorder window (+ one packet) behind real time.
                assert!(rec.frames_written() + (200 + 40) * 8 >= now * 8, "{now}");
            }
            assert!(rec.ch[0].buf.len() <= 3 * 1600);
        }
        let sum = rec.finish(5000).unwrap();
        assert_eq!(sum.frames, 250 * 160);
    }

    #[test]
    fn checkpoint_keeps_the_file_readable_and_dtmf_is_reported() {
        let (lp, _) = packets(Codec::Pcmu, 0, 1, 0, 0, 400);
        let mut rec = Recording::with_options(
            Cursor::new(Vec::new()),
            pcmu(),
            pcmu(),
            0,
            RecordingOptions {
                checkpoint_ms: 1000,
                ..RecordingOptions::default()
            },
        )
        .unwrap();
        for (i, p) in lp.iter().enumerate() {
            let now = i as u64 * 20;
            rec.push(Channel::Left, p, now).unwrap();
            if i == 100 {
                let ev = dtmf::build(&dtmf::TelephoneEvent {
                    event: 1,
                    end: true,
                    volume: 10,
                    duration: 800,
                });
                let h = Header {
                    marker: true,
                    payload_type: 101,
                    sequence: 1,
                    timestamp: 0,
                    ssrc: 9,
                };
                rec.push(Channel::Right, &build(&h, &ev), now).unwrap();
            }
            rec.poll(now).unwrap();
            if now == 5000 {
                // The sink as it is on disk at this instant (BufWriter contents excluded).
                let snapshot = rec.wav_snapshot();
                let rd = hound::WavReader::new(Cursor::new(snapshot)).unwrap();
                assert!(rd.duration() >= 3000 * 8, "checkpointed {}", rd.duration());
            }
        }
        let sum = rec.finish(8000).unwrap();
        assert_eq!(sum.dtmf.len(), 1);
        assert_eq!(sum.dtmf[0].channel, Channel::Right);
        assert_eq!(sum.dtmf[0].offset_ms, 2000);
        assert_eq!(sum.dtmf[0].event.digit, Some('1'));
    }

    #[test]
    fn reinvite_reconfigure_keeps_one_timeline() {
        let (a, _) = packets(Codec::Pcmu, 0, 1, 0, 0, 50);
        let (b, _) = packets(Codec::G722, 9, 2, 0, 0, 50);
        let mut rec = Recording::new(Cursor::new(Vec::new()), pcmu(), pcmu(), 0).unwrap();
        for (i, p) in a.iter().enumerate() {
            rec.push(Channel::Left, p, i as u64 * 20).unwrap();
            rec.poll(i as u64 * 20).unwrap();
        }
        assert!(rec.push(Channel::Left, &b[0], 1000).is_err());
        rec.reconfigure(
            Channel::Left,
            StreamConfig::new(vec![(9, Codec::G722)], None),
        );
        for (i, p) in b.iter().enumerate() {
            let now = 1000 + i as u64 * 20;
            rec.push(Channel::Left, p, now).unwrap();
            rec.poll(now).unwrap();
        }
        let sum = rec.finish(2000).unwrap();
        assert_eq!(sum.frames, 16000);
        assert_eq!(sum.left.ssrc_changes, 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Garbage on either channel never panics, never breaks the file.
        #[test]
        fn garbage_keeps_a_valid_file(ops in proptest::collection::vec(
            (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..200), 0u64..300), 0..120)) {
            let mut rec = Recording::new(Cursor::new(Vec::new()), pcmu(), pcmu(), 0).unwrap();
            let mut now = 0;
            for (left, mut bytes, dt) in ops {
                now += dt;
                if bytes.len() > 12 && dt % 3 == 0 {
                    bytes[0] = 0x80;
                    bytes[1] = 0;
                }
                let ch = if left { Channel::Left } else { Channel::Right };
                let _ = rec.push(ch, &bytes, now);
                rec.poll(now).unwrap();
            }
            let (sum, sink) = rec.finish_into_inner(now).unwrap();
            let (l, r) = read(sink.into_inner());
            prop_assert_eq!(l.len() as u64, sum.frames);
            prop_assert_eq!(r.len() as u64, sum.frames);
        }
    }
}
