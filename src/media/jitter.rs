//! One received RTP stream (one m= line / one participant) turned into a gap-free 8 kHz
//! timeline.
//!
//! A recorder has no playout deadline, so this is a *reorder* buffer rather than a VoIP
//! jitter buffer: packets are held for up to `reorder_ms` waiting for missing sequence
//! numbers, then released in extended-sequence order and placed on the timeline by RTP
//! timestamp, with silence for whatever never came (loss, DTX, comfort noise).
//!
//! Memory is bounded: at most `max_packets` payloads (each at most [`MAX_PAYLOAD`] bytes) are
//! held, in slots whose buffers are reused, so the steady state allocates nothing per packet.
//!
//! Timeline rules:
//! - A *segment* is a run of packets whose timestamps are trusted relative to each other:
//!   one SSRC, one clock rate, no absurd timestamp jump. Within a segment, a packet's position
//!   is `base_pos + (timestamp − base_ts) / ticks_per_sample`.
//! - A new segment (SSRC change on re-INVITE/transfer, a sequence restart, a clock-rate
//!   change, or a timestamp that moved far more than the wall clock) is anchored where the
//!   previous packet's wall-clock arrival says it belongs, never before the write cursor.
//! - Audio that would land before the cursor is trimmed (small overlap) or re-anchored.

use std::collections::VecDeque;
use std::fmt;

use super::codec::{self, Codec, Decoder};
use super::dtmf::{DtmfError, DtmfEvent, DtmfTracker};
use super::rtp::{self, RtpError};

/// Largest payload accepted: a 1500-byte MTU's worth (G.711 at 150 ms, any Opus packet).
pub const MAX_PAYLOAD: usize = 1500;
/// Comfort noise (RFC 3389): counted and skipped; the gap becomes silence.
pub const PT_CN: u8 = 13;
/// RFC 3550 A.1: a forward sequence jump larger than this is suspect.
const MAX_DROPOUT: i64 = 3000;
/// RFC 3550 A.1: a backward jump larger than this is suspect rather than late.
const MAX_MISORDER: i64 = 100;
/// A timestamp may run ahead of the wall clock by this much before it counts as a jump.
const JUMP_SLACK_MS: u64 = 1000;
/// A new SSRC is adopted at once when the current one has been silent this long.
const SSRC_QUIET_MS: u64 = 100;
const SEQ_BITS: u32 = 48;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// What one stream accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Negotiated audio payload types.
    pub payload_types: Vec<(u8, Codec)>,
    /// Negotiated telephone-event payload type.
    pub dtmf_pt: Option<u8>,
    /// How long a packet waits for missing predecessors before the gap is given up on.
    pub reorder_ms: u32,
    /// Bound on packets held.
    pub max_packets: usize,
}

impl StreamConfig {
    /// Defaults: 200 ms reorder window, 64 packets (≈ 1.3 s of 20 ms packets).
    pub fn new(payload_types: Vec<(u8, Codec)>, dtmf_pt: Option<u8>) -> StreamConfig {
        StreamConfig {
            payload_types,
            dtmf_pt,
            reorder_ms: 200,
            max_packets: 64,
        }
    }
}

/// Why a datagram was not taken. Nothing on the timeline changes when one is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketRefused {
    Malformed(RtpError),
    /// RTCP on a muxed port; the caller should route it elsewhere.
    Rtcp,
    UnknownPayloadType(u8),
    CodecUnavailable(Codec),
    TooLarge(usize),
    /// `max_packets` are already waiting (a flood); the packet is dropped.
    BufferFull,
    /// The sequence number jumped by an RFC 3550 "dropout"; a second consecutive packet
    /// confirms a restart and is taken.
    SequenceJump,
    /// A packet from the SSRC this stream switched away from.
    StaleSsrc,
    /// First packet of a new SSRC while the current one is still sending: adopted only when
    /// the next one follows it (RFC 3550 §A.1-style probation), so one stray or spoofed
    /// packet cannot hijack the channel.
    SsrcProbation,
    Duplicate,
    /// Older than what was already written.
    Late,
    BadDtmf(DtmfError),
}

impl fmt::Display for PacketRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacketRefused::Malformed(e) => write!(f, "malformed RTP: {e}"),
            PacketRefused::Rtcp => f.write_str("RTCP packet on the RTP stream"),
            PacketRefused::UnknownPayloadType(pt) => {
                write!(f, "payload type {pt} was not negotiated")
            }
            PacketRefused::CodecUnavailable(c) => write!(f, "codec {c} is unavailable"),
            PacketRefused::TooLarge(n) => {
                write!(f, "payload of {n} bytes exceeds {MAX_PAYLOAD}")
            }
            PacketRefused::BufferFull => f.write_str("reorder buffer full"),
            PacketRefused::SequenceJump => f.write_str("sequence number jump (unconfirmed)"),
            PacketRefused::StaleSsrc => f.write_str("packet from a previous SSRC"),
            PacketRefused::SsrcProbation => {
                f.write_str("new SSRC while the current one is active (probation)")
            }
            PacketRefused::Duplicate => f.write_str("duplicate packet"),
            PacketRefused::Late => f.write_str("packet arrived after its place was written"),
            PacketRefused::BadDtmf(e) => write!(f, "bad telephone-event: {e}"),
        }
    }
}

impl std::error::Error for PacketRefused {}

/// Counters for metrics and the recording summary.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StreamStats {
    /// Packets taken (audio, DTMF, CN).
    pub received: u64,
    /// Sequence numbers never received (per segment).
    pub lost: u64,
    /// Packets that arrived after a higher sequence number.
    pub reordered: u64,
    pub late: u64,
    pub duplicate: u64,
    /// Malformed, unknown PT, too large, buffer full, sequence jump, stale SSRC, bad DTMF.
    pub refused: u64,
    pub rtcp: u64,
    pub decode_errors: u64,
    pub ssrc_changes: u64,
    /// Timestamp jumps, sequence restarts and backward timestamps that forced a new segment.
    pub resyncs: u64,
    /// RFC 3550 §6.4.1 interarrival jitter of the current SSRC, in ms.
    pub jitter_ms: f64,
    /// Samples of silence inserted for gaps.
    pub silence_samples: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Audio {
        pt: u8,
        ticks: u32,
    },
    /// DTMF or comfort noise: takes a sequence number, produces no audio.
    NoAudio,
}

struct Slot {
    key: u64,
    ext_ts: i64,
    arrival_ms: u64,
    kind: Kind,
    payload: Vec<u8>,
}

/// Receive-side state of the current SSRC.
struct Rx {
    ssrc: u32,
    epoch: u64,
    ticks: u32,
    max_seq: i64,
    ts_ref: i64,
    /// Sequence number that would confirm a suspected restart.
    bad_seq: Option<u16>,
    last_transit_ms: Option<f64>,
}

struct Segment {
    epoch: u64,
    base_ts: i64,
    base_pos: u64,
    ticks: u32,
}

struct DecoderEntry {
    pt: u8,
    codec: Codec,
    decoder: Option<Box<dyn Decoder>>,
}

/// One received stream.
pub struct Stream {
    cfg: StreamConfig,
    decoders: Vec<DecoderEntry>,
    dtmf_clock: u32,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Slot indices sorted by key (epoch ‖ extended sequence).
    order: VecDeque<usize>,
    rx: Option<Rx>,
    prev_ssrc: Option<u32>,
    /// (SSRC, sequence) that would confirm a switch to a new SSRC.
    ssrc_candidate: Option<(u32, u16)>,
    /// The packet that opened the probation, (SSRC, sequence, bytes, arrival): replayed when
    /// the next one confirms the switch, so a transfer's first 20 ms are not lost. One
    /// datagram at most.
    ssrc_held: Option<(u32, u16, Vec<u8>, u64)>,
    /// Arrival of the last packet taken from the current SSRC.
    rx_last_ms: u64,
    /// A re-INVITE announced new media: the next new SSRC needs no probation.
    ssrc_open: bool,
    next_epoch: u64,
    seg: Option<Segment>,
    /// Samples emitted so far (the stream-local write cursor).
    cursor: u64,
    /// Arrival and position of the last released audio packet, for wall-clock anchoring.
    last_audio: Option<(u64, u64)>,
    last_released: Option<u64>,
    /// Bit i set = key `last_released − i` was released (duplicate vs. late).
    released_mask: u128,
    scratch: Vec<i16>,
    dtmf: DtmfTracker,
    stats: StreamStats,
    first_arrival_ms: Option<u64>,
    last_arrival_ms: Option<u64>,
}

fn make_decoders(cfg: &StreamConfig, old: Vec<DecoderEntry>) -> Vec<DecoderEntry> {
    let mut old = old;
    cfg.payload_types
        .iter()
        .map(|&(pt, codec)| {
            // Keep a decoder (and its state) whose PT and codec did not change.
            if let Some(i) = old.iter().position(|e| e.pt == pt && e.codec == codec) {
                return old.swap_remove(i);
            }
            DecoderEntry {
                pt,
                codec,
                decoder: codec::decoder(codec).ok(),
            }
        })
        .collect()
}

fn dtmf_clock(cfg: &StreamConfig) -> u32 {
    // telephone-event runs at the audio codec's RTP clock (8000, or 48000 with Opus).
    cfg.payload_types
        .first()
        .map(|&(_, c)| c.clock_rate())
        .unwrap_or(8000)
}

impl Stream {
    pub fn new(cfg: StreamConfig) -> Stream {
        let mut cfg = cfg;
        cfg.max_packets = cfg.max_packets.clamp(1, 4096);
        let decoders = make_decoders(&cfg, Vec::new());
        Stream {
            dtmf_clock: dtmf_clock(&cfg),
            decoders,
            slots: Vec::new(),
            free: Vec::new(),
            order: VecDeque::with_capacity(cfg.max_packets),
            cfg,
            rx: None,
            prev_ssrc: None,
            ssrc_candidate: None,
            ssrc_held: None,
            rx_last_ms: 0,
            ssrc_open: false,
            next_epoch: 0,
            seg: None,
            cursor: 0,
            last_audio: None,
            last_released: None,
            released_mask: 0,
            scratch: Vec::new(),
            dtmf: DtmfTracker::new(),
            stats: StreamStats::default(),
            first_arrival_ms: None,
            last_arrival_ms: None,
        }
    }

    /// Replaces the negotiated payload types (re-INVITE) and lets the next new SSRC in
    /// without probation. The timeline continues; decoders
    /// for unchanged (PT, codec) pairs keep their state. Held packets whose PT disappears are
    /// dropped on release and counted as decode errors, so release them first ([`Stream::finish`]).
    pub fn reconfigure(&mut self, cfg: StreamConfig) {
        let mut cfg = cfg;
        cfg.max_packets = cfg.max_packets.clamp(1, 4096);
        let old = std::mem::take(&mut self.decoders);
        self.decoders = make_decoders(&cfg, old);
        self.dtmf_clock = dtmf_clock(&cfg);
        self.cfg = cfg;
        // New SDP usually means new media (transfer, re-INVITE to another endpoint).
        self.ssrc_open = true;
    }

    pub fn config(&self) -> &StreamConfig {
        &self.cfg
    }

    /// One datagram as received at `now_ms`.
    pub fn push(&mut self, datagram: &[u8], now_ms: u64) -> Result<(), PacketRefused> {
        let r = self.push_inner(datagram, now_ms);
        match r {
            Ok(()) => {
                self.stats.received += 1;
                self.first_arrival_ms.get_or_insert(now_ms);
                self.last_arrival_ms = Some(now_ms);
            }
            Err(PacketRefused::Duplicate) => self.stats.duplicate += 1,
            Err(PacketRefused::Late) => self.stats.late += 1,
            Err(PacketRefused::Rtcp) => self.stats.rtcp += 1,
            Err(_) => self.stats.refused += 1,
        }
        r
    }

    fn push_inner(&mut self, datagram: &[u8], now_ms: u64) -> Result<(), PacketRefused> {
        if rtp::is_rtcp(datagram) {
            return Err(PacketRefused::Rtcp);
        }
        let p = rtp::parse(datagram).map_err(PacketRefused::Malformed)?;
        if p.payload.len() > MAX_PAYLOAD {
            return Err(PacketRefused::TooLarge(p.payload.len()));
        }
        let kind = if Some(p.payload_type) == self.cfg.dtmf_pt {
            // Validate before touching any state.
            super::dtmf::parse(p.payload).map_err(PacketRefused::BadDtmf)?;
            Kind::NoAudio
        } else if p.payload_type == PT_CN && !self.decoders.iter().any(|e| e.pt == PT_CN) {
            Kind::NoAudio
        } else {
            let e = self
                .decoders
                .iter()
                .find(|e| e.pt == p.payload_type)
                .ok_or(PacketRefused::UnknownPayloadType(p.payload_type))?;
            if e.decoder.is_none() {
                return Err(PacketRefused::CodecUnavailable(e.codec));
            }
            Kind::Audio {
                pt: p.payload_type,
                ticks: e.codec.ticks_per_sample(),
            }
        };

        // Which epoch (segment of trusted sequence/timestamps) does this packet belong to?
        let ticks = match kind {
            Kind::Audio { ticks, .. } => Some(ticks),
            Kind::NoAudio => None,
        };
        let new_epoch = match &self.rx {
            None => true,
            Some(rx) if rx.ssrc != p.ssrc => {
                if self.prev_ssrc == Some(p.ssrc) {
                    return Err(PacketRefused::StaleSsrc);
                }
                let quiet = now_ms.saturating_sub(self.rx_last_ms) >= SSRC_QUIET_MS;
                let confirmed = self.ssrc_candidate == Some((p.ssrc, p.sequence));
                if !(quiet || confirmed || self.ssrc_open) {
                    if self
                        .ssrc_held
                        .as_ref()
                        .is_some_and(|h| (h.0, h.1) == (p.ssrc, p.sequence))
                    {
                        return Err(PacketRefused::Duplicate);
                    }
                    self.ssrc_candidate = Some((p.ssrc, p.sequence.wrapping_add(1)));
                    self.ssrc_held = Some((p.ssrc, p.sequence, datagram.to_vec(), now_ms));
                    return Err(PacketRefused::SsrcProbation);
                }
                if confirmed {
                    if let Some((_, _, held, at)) = self.ssrc_held.take() {
                        // The switch is real: the held packet goes first (it was counted
                        // refused when it came; now it is received), then this one.
                        self.ssrc_open = true;
                        if self.push_inner(&held, at).is_ok() {
                            self.stats.refused = self.stats.refused.saturating_sub(1);
                            self.stats.received += 1;
                        }
                        return self.push_inner(datagram, now_ms);
                    }
                }
                true
            }
            Some(rx) => ticks.is_some_and(|t| t != rx.ticks),
        };
        let full = self.order.len() >= self.cfg.max_packets;
        if new_epoch {
            if full {
                return Err(PacketRefused::BufferFull);
            }
            if let Some(rx) = &self.rx {
                if rx.ssrc != p.ssrc {
                    self.prev_ssrc = Some(rx.ssrc);
                    self.stats.ssrc_changes += 1;
                    self.stats.jitter_ms = 0.0;
                }
            }
            self.ssrc_candidate = None;
            self.ssrc_held = None;
            self.ssrc_open = false;
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            self.rx = Some(Rx {
                ssrc: p.ssrc,
                epoch,
                ticks: ticks.unwrap_or(self.rx.as_ref().map_or(1, |r| r.ticks)),
                max_seq: (1 << 16) + p.sequence as i64,
                ts_ref: (1 << 32) + p.timestamp as i64,
                bad_seq: None,
                last_transit_ms: None,
            });
        }
        let Some(rx) = self.rx.as_mut() else {
            return Err(PacketRefused::BufferFull); // unreachable: set just above
        };
        let delta = p.sequence.wrapping_sub(rx.max_seq as u16) as i16 as i64;
        if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&delta) {
            // RFC 3550 A.1: believe a restart only when the next packet follows it.
            if rx.bad_seq == Some(p.sequence) {
                if full {
                    return Err(PacketRefused::BufferFull);
                }
                let epoch = self.next_epoch;
                self.next_epoch += 1;
                rx.epoch = epoch;
                rx.max_seq = (1 << 16) + p.sequence as i64;
                rx.ts_ref = (1 << 32) + p.timestamp as i64;
                rx.bad_seq = None;
                rx.last_transit_ms = None;
                self.stats.resyncs += 1;
            } else {
                rx.bad_seq = Some(p.sequence.wrapping_add(1));
                return Err(PacketRefused::SequenceJump);
            }
        }
        let delta = p.sequence.wrapping_sub(rx.max_seq as u16) as i16 as i64;
        let ext_seq = rx.max_seq + delta;
        if ext_seq < 0 {
            return Err(PacketRefused::Late);
        }
        let key = (rx.epoch << SEQ_BITS) | (ext_seq as u64 & SEQ_MASK);
        // Already written?
        if let Some(last) = self.last_released {
            if key <= last {
                let back = last - key;
                if back < 128 && self.released_mask & (1u128 << back) != 0 {
                    return Err(PacketRefused::Duplicate);
                }
                return Err(PacketRefused::Late);
            }
        }
        // Already waiting?
        let slots = &self.slots;
        let at = self.order.partition_point(|&i| slots[i].key < key);
        if at < self.order.len() && self.slots[self.order[at]].key == key {
            return Err(PacketRefused::Duplicate);
        }
        if full {
            return Err(PacketRefused::BufferFull);
        }

        // Taken: from here on, state changes.
        rx.bad_seq = None;
        self.rx_last_ms = now_ms;
        let ts_delta = p.timestamp.wrapping_sub(rx.ts_ref as u32) as i32 as i64;
        let ext_ts = rx.ts_ref + ts_delta;
        if ts_delta > 0 {
            rx.ts_ref = ext_ts;
        }
        if delta < 0 {
            self.stats.reordered += 1;
        } else {
            rx.max_seq = ext_seq;
        }
        if let Kind::Audio { ticks, .. } = kind {
            // RFC 3550 §6.4.1 with transit measured in ms.
            let clock_khz = ticks as f64 * 8.0;
            let transit = now_ms as f64 - ext_ts as f64 / clock_khz;
            if let Some(prev) = rx.last_transit_ms {
                let d = (transit - prev).abs();
                self.stats.jitter_ms += (d - self.stats.jitter_ms) / 16.0;
            }
            rx.last_transit_ms = Some(transit);
        } else if Some(p.payload_type) == self.cfg.dtmf_pt {
            // Validated above, so this cannot fail.
            let _ = self
                .dtmf
                .on_packet(p.ssrc, p.timestamp, p.payload, self.dtmf_clock, now_ms);
        }
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    key: 0,
                    ext_ts: 0,
                    arrival_ms: 0,
                    kind: Kind::NoAudio,
                    payload: Vec::new(),
                });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[idx];
        slot.key = key;
        slot.ext_ts = ext_ts;
        slot.arrival_ms = now_ms;
        slot.kind = kind;
        slot.payload.clear();
        slot.payload.extend_from_slice(p.payload);
        self.order.insert(at, idx);
        Ok(())
    }

    /// Appends the samples that are final to `out` (gaps filled with silence). Returns how many
    /// were appended.
    pub fn drain(&mut self, now_ms: u64, out: &mut Vec<i16>) -> usize {
        let start = out.len();
        while let Some(&head) = self.order.front() {
            let s = &self.slots[head];
            let contiguous = self.last_released.is_some_and(|l| s.key == l + 1);
            let waited = now_ms >= s.arrival_ms.saturating_add(self.cfg.reorder_ms as u64);
            if !(contiguous || waited) {
                break;
            }
            self.release_head(out);
        }
        out.len() - start
    }

    /// Releases everything held (end of the call).
    pub fn finish(&mut self, out: &mut Vec<i16>) -> usize {
        let start = out.len();
        while !self.order.is_empty() {
            self.release_head(out);
        }
        self.dtmf.flush();
        out.len() - start
    }

    /// Appends `samples` of silence and moves the cursor: the recorder pads an idle channel
    /// (hold, one-way audio) so the other channel is not held back. Later audio is placed at
    /// or after the new cursor.
    pub fn pad(&mut self, samples: u64, out: &mut Vec<i16>) {
        out.resize(out.len() + samples as usize, 0);
        self.cursor += samples;
        self.stats.silence_samples += samples;
    }

    fn release_head(&mut self, out: &mut Vec<i16>) {
        let Some(idx) = self.order.pop_front() else {
            return;
        };
        self.free.push(idx);
        let (key, ext_ts, arrival_ms, kind) = {
            let s = &self.slots[idx];
            (s.key, s.ext_ts, s.arrival_ms, s.kind)
        };
        let epoch = key >> SEQ_BITS;
        if let Some(last) = self.last_released {
            if last >> SEQ_BITS == epoch {
                self.stats.lost += key - last - 1;
            }
            let shift = key - last;
            self.released_mask = if shift >= 128 {
                0
            } else {
                self.released_mask << shift
            };
        }
        self.released_mask |= 1;
        self.last_released = Some(key);

        let Kind::Audio { pt, ticks } = kind else {
            return;
        };
        let Some(dec) = self
            .decoders
            .iter_mut()
            .find(|e| e.pt == pt)
            .and_then(|e| e.decoder.as_mut())
        else {
            self.stats.decode_errors += 1;
            return;
        };

        // Where the wall clock says this packet belongs (for new segments).
        let anchor = match self.last_audio {
            Some((arr, pos)) => (pos + arrival_ms.saturating_sub(arr) * 8).max(self.cursor),
            None => self.cursor,
        };
        let mut pos = match &self.seg {
            Some(seg) if seg.epoch == epoch && seg.ticks == ticks => {
                let d = (ext_ts - seg.base_ts) / ticks as i64;
                (seg.base_pos as i64 + d).max(0) as u64
            }
            _ => {
                self.seg = Some(Segment {
                    epoch,
                    base_ts: ext_ts,
                    base_pos: anchor,
                    ticks,
                });
                anchor
            }
        };
        let wall_ms = self
            .last_audio
            .map_or(0, |(arr, _)| arrival_ms.saturating_sub(arr));
        if pos > self.cursor + (wall_ms + JUMP_SLACK_MS) * 8 {
            // The timestamp ran far ahead of the wall clock: not a real gap.
            self.stats.resyncs += 1;
            self.seg = Some(Segment {
                epoch,
                base_ts: ext_ts,
                base_pos: anchor,
                ticks,
            });
            pos = anchor;
        }

        if pos >= self.cursor {
            let before = out.len();
            let gap = pos - self.cursor;
            out.resize(before + gap as usize, 0);
            match dec.decode(&self.slots[idx].payload, out) {
                Ok(n) => {
                    self.stats.silence_samples += gap;
                    self.cursor = pos + n as u64;
                    self.last_audio = Some((arrival_ms, pos));
                }
                Err(_) => {
                    // Leave the gap for the next packet to fill: nothing is written.
                    out.truncate(before);
                    self.stats.decode_errors += 1;
                }
            }
            return;
        }
        // Overlaps what was written: keep only the new tail, or re-anchor if nothing is new
        // (the sender restarted timestamps without telling us, e.g. after hold).
        self.scratch.clear();
        if dec
            .decode(&self.slots[idx].payload, &mut self.scratch)
            .is_err()
        {
            self.stats.decode_errors += 1;
            return;
        }
        let overlap = (self.cursor - pos) as usize;
        if overlap < self.scratch.len() {
            out.extend_from_slice(&self.scratch[overlap..]);
            self.cursor = pos + self.scratch.len() as u64;
            self.last_audio = Some((arrival_ms, pos));
        } else {
            self.stats.resyncs += 1;
            self.seg = Some(Segment {
                epoch,
                base_ts: ext_ts,
                base_pos: anchor,
                ticks,
            });
            let gap = anchor - self.cursor;
            out.resize(out.len() + gap as usize, 0);
            self.stats.silence_samples += gap;
            out.extend_from_slice(&self.scratch);
            self.cursor = anchor + self.scratch.len() as u64;
            self.last_audio = Some((arrival_ms, anchor));
        }
    }

    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// DTMF events completed since the last call (RFC 4733, deduplicated); `at_ms` is the
    /// caller's clock at the event's first packet.
    pub fn take_dtmf(&mut self) -> Vec<DtmfEvent> {
        self.dtmf.take()
    }

    /// Samples emitted so far.
    pub fn emitted(&self) -> u64 {
        self.cursor
    }

    /// Packets waiting in the reorder buffer.
    pub fn pending(&self) -> usize {
        self.order.len()
    }

    pub fn first_arrival_ms(&self) -> Option<u64> {
        self.first_arrival_ms
    }

    pub fn last_arrival_ms(&self) -> Option<u64> {
        self.last_arrival_ms
    }
}

/// Tone synthesis, packetizing and correlation shared by the media tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::super::codec::Codec;
    use super::super::g711;
    use super::super::g722::G722Encoder;
    use super::super::opus::OpusEncoder;
    use super::super::rtp::{build, Header};

    pub fn tone(rate: u32, freqs: &[f32], n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                let v: f32 = freqs
                    .iter()
                    .map(|f| (2.0 * std::f32::consts::PI * f * t).sin())
                    .sum();
                (v / freqs.len() as f32 * 12000.0) as i16
            })
            .collect()
    }

    /// Encodes `secs` of a two-tone signal into 20 ms RTP packets; returns the packets and
    /// the 8 kHz reference the decoded audio should match.
    pub fn packets(
        codec: Codec,
        pt: u8,
        ssrc: u32,
        seq0: u16,
        ts0: u32,
        n: usize,
    ) -> (Vec<Vec<u8>>, Vec<i16>) {
        let freqs = [440.0, 1000.0];
        let reference = tone(8000, &freqs, n * 160);
        let mut out = Vec::new();
        let mut g722 = G722Encoder::new();
        let mut opus = if codec == Codec::Opus {
            OpusEncoder::new(48000)
        } else {
            None
        };
        let wide = tone(16000, &freqs, n * 320);
        let full = tone(48000, &freqs, n * 960);
        for i in 0..n {
            let payload = match codec {
                Codec::Pcmu => {
                    let mut p = Vec::new();
                    g711::encode_ulaw_into(&reference[i * 160..(i + 1) * 160], &mut p);
                    p
                }
                Codec::Pcma => {
                    let mut p = Vec::new();
                    g711::encode_alaw_into(&reference[i * 160..(i + 1) * 160], &mut p);
                    p
                }
                Codec::G722 => g722.encode(&wide[i * 320..(i + 1) * 320]),
                Codec::Opus => opus
                    .as_mut()
                    .expect("opus available")
                    .encode(&full[i * 960..(i + 1) * 960])
                    .expect("opus encodes"),
            };
            let h = Header {
                marker: i == 0,
                payload_type: pt,
                sequence: seq0.wrapping_add(i as u16),
                timestamp: ts0.wrapping_add((i as u32) * 160 * codec.ticks_per_sample()),
                ssrc,
            };
            out.push(build(&h, &payload));
        }
        (out, reference)
    }

    /// Best normalized cross-correlation of `got` against `want` over lags 0..=max_lag
    /// (codec delay), computed on `want`'s middle to stay clear of start-up transients.
    pub fn correlation(got: &[i16], want: &[i16], max_lag: usize) -> f64 {
        let lo = want.len() / 10;
        let hi = want.len() - want.len() / 10;
        (0..=max_lag)
            .map(|lag| {
                let (mut xy, mut xx, mut yy) = (0f64, 0f64, 0f64);
                for (i, &w) in want.iter().enumerate().take(hi).skip(lo) {
                    let x = w as f64;
                    let y = *got.get(i + lag).unwrap_or(&0) as f64;
                    xy += x * y;
                    xx += x * x;
                    yy += y * y;
                }
                xy / (xx.sqrt() * yy.sqrt()).max(1e-9)
            })
            .fold(f64::MIN, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::media::dtmf;
    use crate::media::rtp::{build, Header};
    use proptest::prelude::*;

    fn cfg() -> StreamConfig {
        StreamConfig::new(vec![(0, Codec::Pcmu), (8, Codec::Pcma)], Some(101))
    }

    /// Pushes packets at 20 ms spacing in the given order (arrival = 20 ms × order index),
    /// draining after each; returns the whole output.
    fn run(stream: &mut Stream, pkts: &[&[u8]]) -> Vec<i16> {
        let mut out = Vec::new();
        for (i, p) in pkts.iter().enumerate() {
            let now = i as u64 * 20;
            let _ = stream.push(p, now);
            stream.drain(now, &mut out);
        }
        stream.finish(&mut out);
        out
    }

    #[test]
    fn in_order_stream_is_decoded_exactly() {
        let (pkts, reference) = packets(Codec::Pcmu, 0, 1, 65530, 4_294_967_000, 50);
        let mut s = Stream::new(cfg());
        let refs: Vec<&[u8]> = pkts.iter().map(|p| &p[..]).collect();
        let out = run(&mut s, &refs);
        assert_eq!(out.len(), 8000);
        assert!(correlation(&out, &reference, 0) > 0.99);
        let st = s.stats();
        assert_eq!((st.received, st.lost, st.reordered, st.late), (50, 0, 0, 0));
        assert!(st.jitter_ms < 0.01, "{}", st.jitter_ms);
    }

    #[test]
    fn loss_reorder_duplication_keep_the_length() {
        let (pkts, reference) = packets(Codec::Pcmu, 0, 7, 100, 1000, 50);
        let mut order: Vec<&[u8]> = Vec::new();
        for i in 0..50 {
            match i {
                10 | 11 | 30 => {} // lost
                5 => {}            // delivered after 6
                6 => {
                    order.push(&pkts[6]);
                    order.push(&pkts[5]);
                }
                20 => {
                    order.push(&pkts[20]);
                    order.push(&pkts[20]); // duplicate while waiting
                }
                _ => order.push(&pkts[i]),
            }
        }
        order.push(&pkts[3]); // duplicate long after it was written
        let mut s = Stream::new(cfg());
        let out = run(&mut s, &order);
        assert_eq!(out.len(), 8000, "gaps filled by timestamp");
        assert!(out[1600..1920].iter().all(|&x| x == 0));
        assert!(out[4800..4960].iter().all(|&x| x == 0));
        let mut expected = reference.clone();
        expected[1600..1920].fill(0);
        expected[4800..4960].fill(0);
        assert!(correlation(&out, &expected, 0) > 0.99);
        let st = s.stats();
        assert_eq!(st.lost, 3);
        assert_eq!(st.reordered, 1);
        assert_eq!(st.duplicate, 2);
        assert_eq!(st.silence_samples, 480);
    }

    #[test]
    fn late_packet_is_dropped_and_counted() {
        let (pkts, _) = packets(Codec::Pcmu, 0, 7, 0, 0, 20);
        let mut s = Stream::new(cfg());
        let mut out = Vec::new();
        for (i, p) in pkts.iter().enumerate() {
            if i != 4 {
                s.push(p, i as u64 * 20).unwrap();
            }
            s.drain(i as u64 * 20, &mut out);
        }
        assert_eq!(s.push(&pkts[4], 1000), Err(PacketRefused::Late));
        s.finish(&mut out);
        assert_eq!(out.len(), 3200);
        assert_eq!((s.stats().late, s.stats().lost), (1, 1));
    }

    #[test]
    fn ssrc_change_continues_the_timeline() {
        let (a, _) = packets(Codec::Pcmu, 0, 1, 100, 5000, 25);
        let (b, _) = packets(Codec::Pcmu, 0, 2, 40000, 123_456_789, 25);
        let all: Vec<&[u8]> = a.iter().chain(b.iter()).map(|p| &p[..]).collect();
        let mut s = Stream::new(cfg());
        let out = run(&mut s, &all);
        assert_eq!(out.len(), 8000);
        assert_eq!(s.stats().ssrc_changes, 1);
        // A straggler from the old SSRC is refused, not a flap back.
        assert_eq!(s.push(&a[24], 2000), Err(PacketRefused::StaleSsrc));
    }

    #[test]
    fn timestamp_jump_is_resynced_by_wall_clock() {
        let (mut pkts, _) = packets(Codec::Pcmu, 0, 1, 0, 0, 50);
        for p in pkts.iter_mut().skip(25) {
            let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]).wrapping_add(80_000_000);
            p[4..8].copy_from_slice(&ts.to_be_bytes());
        }
        let refs: Vec<&[u8]> = pkts.iter().map(|p| &p[..]).collect();
        let mut s = Stream::new(cfg());
        let out = run(&mut s, &refs);
        assert_eq!(out.len(), 8000);
        assert_eq!(s.stats().resyncs, 1);
    }

    #[test]
    fn sequence_restart_needs_confirmation() {
        let (a, _) = packets(Codec::Pcmu, 0, 1, 0, 0, 10);
        let (b, _) = packets(Codec::Pcmu, 0, 1, 30000, 1600, 10);
        let mut s = Stream::new(cfg());
        let mut out = Vec::new();
        for (i, p) in a.iter().enumerate() {
            s.push(p, i as u64 * 20).unwrap();
        }
        assert_eq!(s.push(&b[0], 200), Err(PacketRefused::SequenceJump));
        for (i, p) in b.iter().enumerate().skip(1) {
            s.push(p, 200 + i as u64 * 20).unwrap();
        }
        s.finish(&mut out);
        assert_eq!(out.len(), 3200, "the unconfirmed first packet is silence");
        assert_eq!(s.stats().resyncs, 1);
    }

    #[test]
    fn an_immediate_ssrc_switch_loses_no_packet() {
        // A transfer: the new SSRC starts 20 ms after the old one's last packet. The first
        // new packet waits in probation and is replayed once the next one confirms it.
        let (a, _) = packets(Codec::Pcmu, 0, 1, 100, 0, 10);
        let (b, _) = packets(Codec::Pcmu, 0, 2, 5000, 90_000, 10);
        let mut s = Stream::new(cfg());
        let mut out = Vec::new();
        let mut t = 0;
        for p in a.iter().chain(&b) {
            let _ = s.push(p, t);
            s.drain(t, &mut out);
            t += 20;
        }
        // The held packet's duplicate is a duplicate, not a second probation.
        s.finish(&mut out);
        let st = s.stats();
        assert_eq!(st.received, 20, "{st:?}");
        assert_eq!(st.refused, 0, "{st:?}");
        assert_eq!(st.ssrc_changes, 1);
        assert_eq!(out.len(), 20 * 160);
        let mut d = Stream::new(cfg());
        d.push(&a[0], 0).unwrap();
        assert_eq!(d.push(&b[0], 20), Err(PacketRefused::SsrcProbation));
        assert_eq!(d.push(&b[0], 21), Err(PacketRefused::Duplicate));
        d.push(&b[1], 40).unwrap();
        assert_eq!(d.stats().received, 3);
    }

    #[test]
    fn hostile_packets_change_nothing() {
        let (pkts, _) = packets(Codec::Pcmu, 0, 1, 0, 0, 3);
        let mut s = Stream::new(cfg());
        s.push(&pkts[0], 0).unwrap();
        let h = |pt| Header {
            marker: false,
            payload_type: pt,
            sequence: 1,
            timestamp: 160,
            ssrc: 1,
        };
        assert_eq!(
            s.push(&build(&h(96), &[0; 160]), 1),
            Err(PacketRefused::UnknownPayloadType(96))
        );
        assert!(matches!(
            s.push(&[0x80, 0, 1], 1),
            Err(PacketRefused::Malformed(_))
        ));
        assert_eq!(
            s.push(&[0x80, 200, 0, 1, 0, 0, 0, 0], 1),
            Err(PacketRefused::Rtcp)
        );
        assert_eq!(
            s.push(&build(&h(0), &[0; 1501]), 1),
            Err(PacketRefused::TooLarge(1501))
        );
        assert!(matches!(
            s.push(&build(&h(101), &[1, 2]), 1),
            Err(PacketRefused::BadDtmf(_))
        ));
        // A different SSRC's garbage does not flip the stream either.
        let mut bad = build(&h(96), &[0; 10]);
        bad[8] = 9;
        assert!(s.push(&bad, 1).is_err());
        // A well-formed packet from a stranger SSRC while this one is live: probation.
        let mut stranger = build(&h(0), &[0; 160]);
        stranger[8] = 9;
        assert_eq!(s.push(&stranger, 5), Err(PacketRefused::SsrcProbation));
        assert_eq!(s.stats().refused, 6);
        assert_eq!(s.stats().ssrc_changes, 0);
        s.push(&pkts[1], 20).unwrap();
        s.push(&pkts[2], 40).unwrap();
        let mut out = Vec::new();
        s.finish(&mut out);
        assert_eq!(out.len(), 480);
        assert_eq!(s.stats().lost, 0);
    }

    #[test]
    fn bounded_under_flood() {
        let mut s = Stream::new(StreamConfig {
            max_packets: 16,
            ..cfg()
        });
        let mut full = 0;
        for i in 0..100u16 {
            // Every other sequence number missing: nothing becomes contiguous.
            let p = build(
                &Header {
                    marker: false,
                    payload_type: 0,
                    sequence: i * 2,
                    timestamp: i as u32 * 320,
                    ssrc: 3,
                },
                &[0xFF; 160],
            );
            if s.push(&p, 0) == Err(PacketRefused::BufferFull) {
                full += 1;
            }
            assert!(s.pending() <= 16);
        }
        assert_eq!(full, 84);
        let mut out = Vec::new();
        // Positions by timestamp: 16 packets 320 ticks apart, the gaps silent.
        assert_eq!(s.drain(200, &mut out), 15 * 320 + 160);
    }

    #[test]
    fn dtmf_is_metadata_and_takes_sequence_numbers() {
        let (pkts, _) = packets(Codec::Pcmu, 0, 1, 0, 0, 10);
        let mut s = Stream::new(cfg());
        let mut out = Vec::new();
        let mut seq = 0u16;
        let mut now = 0;
        let mut send = |s: &mut Stream, p: &[u8], now: u64, out: &mut Vec<i16>| {
            let mut p = p.to_vec();
            p[2..4].copy_from_slice(&seq.to_be_bytes());
            seq += 1;
            s.push(&p, now).unwrap();
            s.drain(now, out);
        };
        for (i, p) in pkts.iter().enumerate() {
            send(&mut s, p, now, &mut out);
            if i == 4 {
                for (d, end) in [
                    (160, false),
                    (320, false),
                    (480, true),
                    (480, true),
                    (480, true),
                ] {
                    let ev = dtmf::build(&dtmf::TelephoneEvent {
                        event: 9,
                        end,
                        volume: 10,
                        duration: d,
                    });
                    let h = Header {
                        marker: d == 160 && !end,
                        payload_type: 101,
                        sequence: 0,
                        timestamp: 800,
                        ssrc: 1,
                    };
                    send(&mut s, &build(&h, &ev), now + 5, &mut out);
                }
            }
            now += 20;
        }
        s.finish(&mut out);
        assert_eq!(out.len(), 1600);
        assert_eq!(s.stats().lost, 0);
        let ev = s.take_dtmf();
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].digit, ev[0].duration_ms, ev[0].ended),
            (Some('9'), 60, true)
        );
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let (pkts, _) = packets(Codec::Pcmu, 0, 1, 0, 0, 200);
        let mut s = Stream::new(cfg());
        for (i, p) in pkts.iter().enumerate() {
            // Arrival alternates 10 ms early/late around the 20 ms grid.
            let now = i as u64 * 20 + if i % 2 == 0 { 0 } else { 10 };
            s.push(p, now).unwrap();
            s.drain(now, &mut Vec::new());
        }
        let j = s.stats().jitter_ms;
        assert!((j - 10.0).abs() < 1.0, "jitter {j}");
    }

    fn round_trip(codec: Codec, pt: u8, threshold: f64, max_lag: usize) {
        if codec == Codec::Opus && !codec::opus_available() {
            eprintln!("libopus unavailable: Opus round trip skipped");
            return;
        }
        let (pkts, reference) = packets(codec, pt, 42, 1000, 0, 100);
        // Swap neighbours to exercise the reorder path.
        let mut order: Vec<&[u8]> = pkts.iter().map(|p| &p[..]).collect();
        for i in (10..90).step_by(7) {
            order.swap(i, i + 1);
        }
        let mut s = Stream::new(StreamConfig::new(vec![(pt, codec)], None));
        let out = run(&mut s, &order);
        assert_eq!(out.len(), reference.len(), "{codec}");
        let c = correlation(&out, &reference, max_lag);
        assert!(c > threshold, "{codec}: correlation {c} ≤ {threshold}");
        // Level too: the G.722 low band and libopus at 8 kHz keep the source's loudness.
        let rms = |x: &[i16]| {
            (x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
        };
        let level = rms(&out[800..7200]) / rms(&reference[800..7200]);
        assert!((0.7..1.4).contains(&level), "{codec}: level ratio {level}");
        eprintln!("{codec}: correlation {c:.4}, level ratio {level:.3}");
    }

    #[test]
    fn pcmu_round_trip() {
        round_trip(Codec::Pcmu, 0, 0.999, 0);
    }

    #[test]
    fn pcma_round_trip() {
        round_trip(Codec::Pcma, 8, 0.999, 0);
    }

    #[test]
    fn g722_round_trip() {
        round_trip(Codec::G722, 9, 0.95, 64);
    }

    #[test]
    fn opus_round_trip() {
        round_trip(Codec::Opus, 111, 0.90, 160);
    }

    #[test]
    fn reconfigure_switches_codec_mid_call() {
        let (a, _) = packets(Codec::Pcmu, 0, 1, 0, 0, 10);
        let (b, _) = packets(Codec::Pcma, 8, 1, 10, 1600, 10);
        let mut s = Stream::new(StreamConfig::new(vec![(0, Codec::Pcmu)], None));
        let mut out = Vec::new();
        for (i, p) in a.iter().enumerate() {
            s.push(p, i as u64 * 20).unwrap();
        }
        assert_eq!(
            s.push(&b[0], 200),
            Err(PacketRefused::UnknownPayloadType(8))
        );
        // Release what came under the old mapping first (Recording::reconfigure does this).
        s.finish(&mut out);
        s.reconfigure(StreamConfig::new(vec![(8, Codec::Pcma)], None));
        for (i, p) in b.iter().enumerate() {
            s.push(p, 200 + i as u64 * 20).unwrap();
        }
        s.finish(&mut out);
        assert_eq!(out.len(), 3200);
        assert_eq!(s.stats().decode_errors, 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any mix of real packets, garbage and random headers: no panic, bounded, and the
        /// output only ever grows.
        #[test]
        fn arbitrary_input_is_safe(ops in proptest::collection::vec(
            (any::<u8>(), any::<u16>(), any::<u32>(), 0u8..4, proptest::collection::vec(any::<u8>(), 0..200), 0u64..100),
            0..200)) {
            let mut s = Stream::new(StreamConfig { max_packets: 32, ..cfg() });
            let mut out = Vec::new();
            let mut now = 0u64;
            for (kind, seq, ts, ssrc, bytes, dt) in ops {
                now += dt;
                let dgram = match kind % 4 {
                    0 => bytes.clone(),
                    _ => build(&Header { marker: false, payload_type: [0, 8, 101, 13][kind as usize % 4],
                        sequence: seq, timestamp: ts, ssrc: ssrc as u32 }, &bytes),
                };
                let before = (out.len(), s.emitted());
                let _ = s.push(&dgram, now);
                prop_assert!(s.pending() <= 32);
                s.drain(now, &mut out);
                prop_assert!(out.len() >= before.0);
                prop_assert_eq!(out.len() as u64 - before.0 as u64, s.emitted() - before.1);
            }
            s.finish(&mut out);
            prop_assert_eq!(out.len() as u64, s.emitted());
        }

        /// A real stream with drops, duplicates and bounded reordering: the output is exactly
        /// as long as the timestamps span (when the last packet arrives).
        #[test]
        fn impaired_stream_has_the_right_length(
            n in 5usize..80,
            drops in proptest::collection::vec(any::<bool>(), 80),
            dups in proptest::collection::vec(any::<bool>(), 80),
            swaps in proptest::collection::vec(0usize..80, 0..20),
            seq0 in any::<u16>(), ts0 in any::<u32>())
        {
            let (pkts, _) = packets(Codec::Pcma, 8, 5, seq0, ts0, n);
            let mut order: Vec<&[u8]> = Vec::new();
            for i in 0..n {
                if i == 0 || i == n - 1 || !drops[i] {
                    order.push(&pkts[i]);
                    if dups[i] { order.push(&pkts[i]); }
                }
            }
            for &w in &swaps {
                let w = w % order.len();
                if w + 1 < order.len() { order.swap(w, w + 1); }
            }
            // Keep the first packet first so the timeline starts at its timestamp.
            let first = order.iter().position(|p| *p == &pkts[0][..]).unwrap();
            let f = order.remove(first);
            order.insert(0, f);
            let mut s = Stream::new(StreamConfig::new(vec![(8, Codec::Pcma)], None));
            let out = run(&mut s, &order);
            prop_assert_eq!(out.len(), n * 160);
        }
    }
}
