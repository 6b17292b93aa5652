//! The media shell: threads that receive RTP for every live recording and write it to disk.
//!
//! Each thread owns an epoll set of its sessions' sockets and drains a ready socket with
//! `recvmmsg` (up to [`BATCH`] datagrams per system call), handing each datagram to the sans-IO
//! [`Recording`]. A tick every [`TICK_MS`] writes what the reorder windows released, checks
//! the RTP timeout and publishes counters. Why threads and epoll rather than a task per
//! socket: at a thousand calls this is 100,000 packets a second, and a task wake-up per packet
//! costs as much as the receive itself (reference §A3: packet I/O, not DSP, is the first
//! bottleneck).
//!
//! Nothing here decides SIP: sessions start and stop by [`Control`] messages from the service;
//! a session that times out is reported back so the service can end its dialog.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use crate::media::jitter::StreamConfig;
use crate::media::recorder::{Channel, Recording, RecordingOptions, RecordingSummary};

use super::metrics::RecordingMetrics;
use super::offer::StreamPlan;
use super::ports::StreamSockets;
use super::uas::{EndReason, RecordId};

/// Datagrams per `recvmmsg`.
const BATCH: usize = 32;
/// Largest RTP datagram kept; anything longer is truncated by the kernel and then refused by
/// the parser (MSG_TRUNC is checked).
const MAX_DATAGRAM: usize = 1500;
/// Streams one session may ever open (re-INVITEs add some): the epoll token has 7 bits for it.
const MAX_SLOTS: usize = 16;
/// Batches taken from one socket per readiness event. epoll is level-triggered, so a socket
/// with more waiting is reported again; one flooded port cannot starve the other sessions.
const MAX_BATCHES_PER_EVENT: usize = 4;
/// How often a thread writes released audio and checks timers.
pub const TICK_MS: u64 = 20;

/// A recording to start: where it goes and what arrives on which socket.
pub struct StartSession {
    pub record_id: RecordId,
    pub spool: PathBuf,
    pub streams: Vec<(StreamPlan, Channel, StreamSockets)>,
}

pub enum Control {
    Start(Box<StartSession>),
    Update {
        record_id: RecordId,
        streams: Vec<(StreamPlan, Channel, Option<StreamSockets>)>,
    },
    Stop {
        record_id: RecordId,
        reason: EndReason,
    },
}

/// What a thread reports back.
#[derive(Debug)]
pub enum Report {
    Finished {
        record_id: RecordId,
        reason: EndReason,
        spool: PathBuf,
        result: std::io::Result<RecordingSummary>,
    },
}

struct Slot {
    rtp: StreamSockets,
    channel: Channel,
}

struct Session {
    record_id: RecordId,
    spool: PathBuf,
    recording: Recording<BufWriter<File>>,
    slots: Vec<Slot>,
    last_packet_ms: u64,
    /// Every stream is on hold (the SRC said it sends nothing): silence is expected, so the
    /// RTP timeout waits until a re-INVITE resumes.
    on_hold: bool,
    /// Counters already published, so each tick adds only the difference.
    published: Counts,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    received: u64,
    lost: u64,
    reordered: u64,
    late: u64,
    duplicate: u64,
    refused: u64,
}

/// Handle to one capture thread.
pub struct CaptureThread {
    control: SyncSender<Control>,
    wake: Arc<EventFd>,
    pub handle: Option<std::thread::JoinHandle<()>>,
}

impl CaptureThread {
    pub fn spawn(
        index: usize,
        cfg: CaptureConfig,
        metrics: Arc<RecordingMetrics>,
        reports: SyncSender<Report>,
    ) -> std::io::Result<CaptureThread> {
        let wake = Arc::new(EventFd::new()?);
        // Bounded: a burst of INVITEs beyond it is refused by the service (503), not queued
        // without limit.
        let (tx, rx) = std::sync::mpsc::sync_channel(4_096);
        let w = Arc::clone(&wake);
        let handle = std::thread::Builder::new()
            .name(format!("gridedge-media-{index}"))
            .spawn(move || {
                let mut t = match Worker::new(cfg, metrics, reports, rx, w) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(error = %e, "media thread could not start");
                        return;
                    }
                };
                t.run();
            })?;
        Ok(CaptureThread {
            control: tx,
            wake,
            handle: Some(handle),
        })
    }

    /// Sends a control message; `Err` when the thread's queue is full or it has gone.
    pub fn send(&self, c: Control) -> Result<(), Control> {
        match self.control.try_send(c) {
            Ok(()) => {
                self.wake.signal();
                Ok(())
            }
            Err(TrySendError::Full(c)) | Err(TrySendError::Disconnected(c)) => Err(c),
        }
    }
}

#[derive(Clone)]
pub struct CaptureConfig {
    pub rtp_timeout_ms: u64,
    pub reorder_ms: u32,
    pub checkpoint_ms: u64,
}

/// A Linux eventfd: the one way to wake an `epoll_wait` from another thread.
pub struct EventFd(RawFd);

impl EventFd {
    fn new() -> std::io::Result<EventFd> {
        // SAFETY: plain syscall; the fd is owned by the returned value and closed on drop.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(EventFd(fd))
    }

    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our own eventfd. A full counter (never
        // reached in practice) only means the thread is already awake.
        unsafe { libc::write(self.0, (&one as *const u64).cast(), 8) };
    }

    fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our own non-blocking eventfd.
        unsafe { libc::read(self.0, (&mut v as *mut u64).cast(), 8) };
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

/// epoll tokens: the eventfd, or (session key, slot, rtcp?) packed into the u64.
const WAKE_TOKEN: u64 = u64::MAX;

fn token(session: u64, slot: usize, rtcp: bool) -> u64 {
    (session << 8) | ((slot as u64 & 0x7f) << 1) | u64::from(rtcp)
}

fn untoken(t: u64) -> (u64, usize, bool) {
    (t >> 8, ((t >> 1) & 0x7f) as usize, t & 1 == 1)
}

struct Worker {
    cfg: CaptureConfig,
    metrics: Arc<RecordingMetrics>,
    reports: SyncSender<Report>,
    control: Receiver<Control>,
    wake: Arc<EventFd>,
    epoll: RawFd,
    sessions: HashMap<u64, Session>,
    by_record: HashMap<RecordId, u64>,
    next_key: u64,
    epoch: Instant,
    bufs: Vec<[u8; MAX_DATAGRAM]>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        // SAFETY: the epoll fd is ours and closed once.
        unsafe { libc::close(self.epoll) };
    }
}

impl Worker {
    fn new(
        cfg: CaptureConfig,
        metrics: Arc<RecordingMetrics>,
        reports: SyncSender<Report>,
        control: Receiver<Control>,
        wake: Arc<EventFd>,
    ) -> std::io::Result<Worker> {
        // SAFETY: plain syscall; the fd is closed in Drop.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let w = Worker {
            cfg,
            metrics,
            reports,
            control,
            wake,
            epoll,
            sessions: HashMap::new(),
            by_record: HashMap::new(),
            next_key: 1,
            epoch: Instant::now(),
            bufs: vec![[0u8; MAX_DATAGRAM]; BATCH],
        };
        w.add(w.wake.0, WAKE_TOKEN)?;
        Ok(w)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn add(&self, fd: RawFd, token: u64) -> std::io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: valid epoll fd, valid socket fd, event struct lives across the call.
        let r = unsafe { libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn remove(&self, fd: RawFd) {
        // SAFETY: removing an fd we added; failure (already closed) is harmless.
        unsafe { libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
    }

    fn run(&mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut next_tick = self.now_ms() + TICK_MS;
        loop {
            let now = self.now_ms();
            let timeout = next_tick.saturating_sub(now).min(TICK_MS) as i32;
            // SAFETY: the events buffer is valid for its length.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll,
                    events.as_mut_ptr(),
                    events.len() as i32,
                    timeout,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "epoll_wait failed; media thread stops");
                    return;
                }
            }
            for ev in events.iter().take(n.max(0) as usize) {
                let t = ev.u64;
                if t == WAKE_TOKEN {
                    self.wake.drain();
                    if !self.controls() {
                        return;
                    }
                } else {
                    self.receive(t);
                }
            }
            let now = self.now_ms();
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK_MS;
            }
        }
    }

    /// Applies queued control messages; `false` when the service has gone (shut down).
    fn controls(&mut self) -> bool {
        loop {
            match self.control.try_recv() {
                Ok(Control::Start(s)) => self.start(*s),
                Ok(Control::Update { record_id, streams }) => self.update(record_id, streams),
                Ok(Control::Stop { record_id, reason }) => {
                    if let Some(key) = self.by_record.remove(&record_id) {
                        self.finish(key, reason);
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => return true,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    let keys: Vec<u64> = self.sessions.keys().copied().collect();
                    for k in keys {
                        self.finish(k, EndReason::Shutdown);
                    }
                    return false;
                }
            }
        }
    }

    fn stream_config(&self, plan: &StreamPlan) -> StreamConfig {
        let mut c = StreamConfig::new(plan.payload_types.clone(), plan.dtmf_pt);
        c.reorder_ms = self.cfg.reorder_ms;
        c
    }

    fn start(&mut self, s: StartSession) {
        let now = self.now_ms();
        let opened = File::create(&s.spool).and_then(|f| {
            let mut left = None;
            let mut right = None;
            for (plan, ch, _) in &s.streams {
                match ch {
                    Channel::Left => left = left.or(Some(self.stream_config(plan))),
                    Channel::Right => right = right.or(Some(self.stream_config(plan))),
                }
            }
            // A side nobody sends (one-stream INVITE) still gets a stream: it stays silent.
            let silent = || StreamConfig::new(vec![], None);
            Recording::with_options(
                BufWriter::with_capacity(16 * 1024, f),
                left.unwrap_or_else(silent),
                right.unwrap_or_else(silent),
                now,
                RecordingOptions {
                    checkpoint_ms: self.cfg.checkpoint_ms,
                    ..RecordingOptions::default()
                },
            )
        });
        let recording = match opened {
            Ok(r) => r,
            Err(e) => {
                let _ = self.reports.try_send(Report::Finished {
                    record_id: s.record_id,
                    reason: EndReason::Shutdown,
                    spool: s.spool,
                    result: Err(e),
                });
                return;
            }
        };
        let on_hold = s.streams.iter().all(|(p, _, _)| !p.sending);
        let key = self.next_key;
        self.next_key += 1;
        let mut slots = Vec::new();
        for (i, (_, channel, sockets)) in s.streams.into_iter().enumerate() {
            let ok = self
                .add(sockets.rtp.as_raw_fd(), token(key, i, false))
                .and_then(|_| self.add(sockets.rtcp.as_raw_fd(), token(key, i, true)));
            if let Err(e) = ok {
                tracing::error!(record_id = %s.record_id, error = %e, "cannot watch a media socket");
            }
            slots.push(Slot {
                rtp: sockets,
                channel,
            });
        }
        self.by_record.insert(s.record_id.clone(), key);
        self.sessions.insert(
            key,
            Session {
                record_id: s.record_id,
                spool: s.spool,
                recording,
                slots,
                last_packet_ms: now,
                on_hold,
                published: Counts::default(),
            },
        );
        self.metrics.active.inc();
    }

    fn update(
        &mut self,
        record_id: RecordId,
        streams: Vec<(StreamPlan, Channel, Option<StreamSockets>)>,
    ) {
        let Some(&key) = self.by_record.get(&record_id) else {
            return;
        };
        let cfgs: Vec<StreamConfig> = streams
            .iter()
            .map(|(p, _, _)| self.stream_config(p))
            .collect();
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session.on_hold = streams.iter().all(|(p, _, _)| !p.sending);
        // Resuming restarts the clock: the silence of the hold is not a timeout.
        session.last_packet_ms = self.epoch.elapsed().as_millis() as u64;
        let mut added = Vec::new();
        for ((plan, channel, sockets), cfg) in streams.into_iter().zip(cfgs) {
            match sockets {
                // A stream already received: it keeps its socket; the side it feeds is the one
                // reconfigured (and the slot follows the plan's side).
                None => {
                    if let Some(slot) = session.slots.iter_mut().find(|s| s.rtp.port == plan.port) {
                        slot.channel = channel;
                    }
                }
                Some(sockets) if session.slots.len() < MAX_SLOTS => {
                    let i = session.slots.len();
                    added.push((sockets.rtp.as_raw_fd(), sockets.rtcp.as_raw_fd(), i));
                    session.slots.push(Slot {
                        rtp: sockets,
                        channel,
                    });
                }
                Some(_) => {
                    tracing::warn!(record_id = %record_id, "too many streams re-negotiated for one recording; the new one is not received");
                }
            }
            session.recording.reconfigure(channel, cfg);
        }
        for (rtp, rtcp, i) in added {
            let _ = self.add(rtp, token(key, i, false));
            let _ = self.add(rtcp, token(key, i, true));
        }
    }

    /// Drains one ready socket with `recvmmsg`.
    fn receive(&mut self, t: u64) {
        let (key, slot, rtcp) = untoken(t);
        let now = self.now_ms();
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(s) = session.slots.get(slot) else {
            return;
        };
        let fd = if rtcp {
            s.rtp.rtcp.as_raw_fd()
        } else {
            s.rtp.rtp.as_raw_fd()
        };
        let channel = s.channel;
        let mut lens = [(0usize, false); BATCH];
        for _ in 0..MAX_BATCHES_PER_EVENT {
            let got = recv_batch(fd, &mut self.bufs, &mut lens);
            if got == 0 {
                break;
            }
            for (i, &(len, truncated)) in lens.iter().enumerate().take(got) {
                if rtcp {
                    // RTCP reports are not needed for a recording aligned by arrival and RTP
                    // timestamps; they are read only to keep the socket drained.
                    continue;
                }
                let Some(buf) = self.bufs.get(i) else { break };
                if truncated {
                    self.metrics.packets.with_label_values(&["refused"]).inc();
                    continue;
                }
                // Only audio the stream took keeps the session alive: garbage sprayed at an
                // open port must not hold a dead recording open.
                if session.recording.push(channel, &buf[..len], now).is_ok() {
                    session.last_packet_ms = now;
                }
            }
            if got < BATCH {
                break;
            }
        }
    }

    fn tick(&mut self, now: u64) {
        let mut timed_out = Vec::new();
        let mut failed = Vec::new();
        for (&key, s) in &mut self.sessions {
            if let Err(e) = s.recording.poll(now) {
                tracing::error!(record_id = %s.record_id, error = %e, "writing a recording failed");
                failed.push(key);
                continue;
            }
            publish(&self.metrics, s);
            if !s.on_hold && now.saturating_sub(s.last_packet_ms) >= self.cfg.rtp_timeout_ms {
                timed_out.push(key);
            }
        }
        for key in timed_out {
            if let Some(s) = self.sessions.get(&key) {
                self.by_record.remove(&s.record_id.clone());
            }
            self.finish(key, EndReason::RtpTimeout);
        }
        for key in failed {
            if let Some(s) = self.sessions.get(&key) {
                self.by_record.remove(&s.record_id.clone());
            }
            self.finish(key, EndReason::Shutdown);
        }
    }

    fn finish(&mut self, key: u64, reason: EndReason) {
        let Some(mut s) = self.sessions.remove(&key) else {
            return;
        };
        for slot in &s.slots {
            self.remove(slot.rtp.rtp.as_raw_fd());
            self.remove(slot.rtp.rtcp.as_raw_fd());
        }
        // Take what is still queued on the sockets before they close: the last packets of a
        // call often race its BYE.
        let now = self.now_ms();
        let mut lens = [(0usize, false); BATCH];
        for slot in &s.slots {
            let fd = slot.rtp.rtp.as_raw_fd();
            for _ in 0..MAX_BATCHES_PER_EVENT {
                let got = recv_batch(fd, &mut self.bufs, &mut lens);
                for (j, &(len, truncated)) in lens.iter().enumerate().take(got) {
                    if !truncated {
                        let _ = s.recording.push(slot.channel, &self.bufs[j][..len], now);
                    }
                }
                if got < BATCH {
                    break;
                }
            }
        }
        publish(&self.metrics, &mut s);
        let result = s.recording.finish(now);
        self.metrics.active.dec();
        if let Ok(summary) = &result {
            for st in [&summary.left, &summary.right] {
                if st.received > 0 {
                    self.metrics.jitter_ms.observe(st.jitter_ms);
                }
            }
        }
        // Blocking send: the report is what gets the file transcoded and indexed; the
        // service drains reports promptly, and losing one would strand a recording until the
        // next start-up's spool scan.
        let _ = self.reports.send(Report::Finished {
            record_id: s.record_id,
            reason,
            spool: s.spool,
            result,
        });
    }
}

fn publish(metrics: &RecordingMetrics, s: &mut Session) {
    let mut now = Counts::default();
    for ch in [Channel::Left, Channel::Right] {
        let st = s.recording.stats(ch);
        now.received += st.received;
        now.lost += st.lost;
        now.reordered += st.reordered;
        now.late += st.late;
        now.duplicate += st.duplicate;
        now.refused += st.refused;
    }
    let p = s.published;
    let add = |label: &str, a: u64, b: u64| {
        if a > b {
            metrics.packets.with_label_values(&[label]).inc_by(a - b);
        }
    };
    add("received", now.received, p.received);
    add("lost", now.lost, p.lost);
    add("reordered", now.reordered, p.reordered);
    add("late", now.late, p.late);
    add("duplicate", now.duplicate, p.duplicate);
    add("refused", now.refused, p.refused);
    s.published = now;
}

/// One `recvmmsg` on a non-blocking socket: how many datagrams arrived, with (length,
/// truncated) of each in `lens`. No allocation: this runs once per packet burst.
fn recv_batch(
    fd: RawFd,
    bufs: &mut [[u8; MAX_DATAGRAM]],
    lens: &mut [(usize, bool); BATCH],
) -> usize {
    let n = bufs.len().min(BATCH);
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        iovs[i] = libc::iovec {
            iov_base: bufs[i].as_mut_ptr().cast(),
            iov_len: MAX_DATAGRAM,
        };
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every header points at a live iovec, which points at a live buffer of
    // MAX_DATAGRAM bytes; no address or control buffers are requested.
    let got = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            n as u32,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got <= 0 {
        return 0;
    }
    let got = got as usize;
    for (i, slot) in lens.iter_mut().enumerate().take(got) {
        let len = hdrs[i].msg_len as usize;
        let truncated = hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        *slot = (len.min(MAX_DATAGRAM), truncated);
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for (k, s, r) in [
            (1u64, 0usize, false),
            (12345, 3, true),
            (1 << 40, 127, false),
        ] {
            assert_eq!(untoken(token(k, s, r)), (k, s, r));
        }
        // Session keys count up from 1; the wake token would need key 2^56 − 1.
        assert_ne!(token(1 << 55, 127, true), WAKE_TOKEN);
    }
}
