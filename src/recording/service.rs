//! The recording server's shell: the SIP application the SIP server hands recording requests
//! to, the port pool, the media threads, and the hand-off of finished files to the
//! transcoding pool.
//!
//! Flow of one recording: INVITE → [`Uas`] answers, ports bound by [`PortPool`] →
//! [`Control::Start`] to a media thread, which writes `<spool>/<id>.wav` (plus the
//! `<id>.json` sidecar written here first, so a crash leaves enough to repair and index the
//! file) → BYE / RTP timeout → the media thread finalizes the WAV and reports →
//! the sidecar is completed and the job goes to the transcoding pool → `RecordingStored`
//! → [`RecordingEvent::Ready`].

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::clock::Now;
use crate::media::recorder::Channel;
use crate::sip::location::{Flow, Transport};
use crate::sip::message::{HeaderName, Request};
use crate::sip::server::{SipApplication, SipServer};

use super::capture::{CaptureConfig, CaptureThread, Control, Report, StartSession};
use super::config::RecordingConfig;
use super::crypto::{Keyring, DEFAULT_CHUNK};
use super::metrics::RecordingMetrics;
use super::offer::{Role, SessionMeta};
use super::ports::PortPool;
use super::store::{DtmfMark, RecordingMeta, RecordingStatus};
use super::transcode::{
    Format, TranscodeConfig, TranscodeJob, TranscodeMetrics, TranscodeOutcome, TranscodePool,
};
use super::uas::{EndReason, MediaAction, Outgoing, RecordId, Uas, UasConfig};

/// Domain events of the recording server.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordingEvent {
    /// A recording began: the CDR can name it already (the call usually ends, and its CDR
    /// is built, before the file is transcoded).
    Started {
        record_id: String,
        call_refs: Vec<String>,
    },
    /// Finalized, encrypted and indexed: downloadable from now on.
    Ready {
        record_id: String,
        call_refs: Vec<String>,
        duration_ms: u64,
        partial: bool,
    },
}

/// Headers through which a softswitch names the call it forks to us (FreeSWITCH:
/// `{sip_h_X-Call-UUID=${uuid}}sofia/...`).
const CALL_REF_HEADERS: [&str; 2] = ["X-Call-UUID", "X-Gridedge-Call"];

struct Live {
    meta: RecordingMeta,
    thread: usize,
}

pub struct RecordingService {
    cfg: RecordingConfig,
    uas: Mutex<Uas>,
    ports: Mutex<PortPool>,
    threads: Vec<CaptureThread>,
    live: Mutex<std::collections::HashMap<RecordId, Live>>,
    reports: Mutex<Receiver<Report>>,
    spool: PathBuf,
    is_agent: Box<dyn Fn(&str) -> bool + Send + Sync>,
    events: broadcast::Sender<RecordingEvent>,
    pub metrics: Arc<RecordingMetrics>,
    /// Outgoing SIP (2xx retransmissions, our BYEs) waiting for the tick to send them.
    outgoing: Mutex<Vec<Outgoing>>,
    next_thread: std::sync::atomic::AtomicUsize,
    /// The receiver made before start-up recovery, so the `Ready` events of recovered
    /// recordings reach the first subscriber (the CDR link) instead of nobody.
    first_receiver: Mutex<Option<broadcast::Receiver<RecordingEvent>>>,
    /// Spool jobs handed to the pool and not yet done: the periodic spool scan skips them.
    queued: Arc<Mutex<std::collections::HashSet<String>>>,
    /// `None` once shut down.
    pool: Mutex<Option<TranscodePool>>,
    pending_stops: Mutex<Vec<(usize, Control)>>,
}

impl RecordingService {
    /// Opens the spool, repairs what a crash left there, starts the media threads and the
    /// transcoding pool.
    pub fn open(
        cfg: RecordingConfig,
        state_dir: &Path,
        db_path: &Path,
        keyring: Arc<Keyring>,
        registry: &prometheus::Registry,
        is_agent: Box<dyn Fn(&str) -> bool + Send + Sync>,
    ) -> anyhow::Result<Arc<RecordingService>> {
        let spool = spool_dir(state_dir);
        std::fs::create_dir_all(&spool)?;
        let metrics = Arc::new(RecordingMetrics::new(registry));
        let (events, _) = broadcast::channel(1_024);
        let formats = cfg
            .formats
            .iter()
            .map(|f| Format::parse(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("recording.formats: {e}"))?;
        let done_events = events.clone();
        let first_receiver = events.subscribe();
        let queued: Arc<Mutex<std::collections::HashSet<String>>> = Default::default();
        let done_queued = Arc::clone(&queued);
        let pool = TranscodePool::start(
            TranscodeConfig {
                recordings_dir: recordings_dir(state_dir),
                db_path: db_path.to_path_buf(),
                formats,
                keyring,
                chunk: DEFAULT_CHUNK,
            },
            cfg.workers,
            cfg.queue,
            TranscodeMetrics::new(registry),
            Arc::new(move |outcome| match outcome {
                TranscodeOutcome::Stored(s) => {
                    lock(&done_queued).remove(&s.meta.record_id);
                    let m = &s.meta;
                    let _ = done_events.send(RecordingEvent::Ready {
                        record_id: m.record_id.clone(),
                        call_refs: m.call_refs.clone(),
                        duration_ms: m.ended_ms.saturating_sub(m.started_ms),
                        partial: m.status == RecordingStatus::Partial,
                    });
                }
                TranscodeOutcome::Failed {
                    job,
                    error,
                    permanent,
                } => {
                    lock(&done_queued).remove(&job.meta.record_id);
                    tracing::error!(record_id = %job.meta.record_id, error = %error, permanent, "storing a recording failed; it stays in the spool");
                }
            }),
        )?;
        let (report_tx, report_rx) = std::sync::mpsc::sync_channel(4_096);
        let capture = CaptureConfig {
            rtp_timeout_ms: cfg.rtp_timeout_secs * 1000,
            reorder_ms: cfg.reorder_ms,
            checkpoint_ms: cfg.checkpoint_ms,
        };
        let threads = (0..cfg.media_threads)
            .map(|i| {
                CaptureThread::spawn(
                    i,
                    capture.clone(),
                    Arc::clone(&metrics),
                    report_tx.clone() as SyncSender<Report>,
                )
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let uas = Uas::new(
            UasConfig {
                uris: cfg.uris.clone(),
                media_ip: cfg.media_ip,
                max_concurrent: cfg.max_concurrent,
                opus: crate::media::codec::opus_available(),
            },
            rand::random(),
        );
        if !crate::media::codec::opus_available() {
            tracing::info!("libopus.so.0 not found: Opus is not offered to recording clients");
        }
        let svc = Arc::new(RecordingService {
            ports: Mutex::new(PortPool::new(
                cfg.media_ip,
                cfg.rtp_port_min,
                cfg.rtp_port_max,
            )),
            cfg,
            uas: Mutex::new(uas),
            threads,
            live: Mutex::new(Default::default()),
            reports: Mutex::new(report_rx),
            spool,
            pool: Mutex::new(Some(pool)),
            first_receiver: Mutex::new(Some(first_receiver)),
            queued,
            pending_stops: Mutex::new(Vec::new()),
            is_agent,
            events,
            metrics,
            outgoing: Mutex::new(Vec::new()),
            next_thread: Default::default(),
        });
        svc.scan_spool(true);
        Ok(svc)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<RecordingEvent> {
        lock(&self.first_receiver)
            .take()
            .unwrap_or_else(|| self.events.subscribe())
    }

    /// Hands a job to the pool; `false` when it stays in the spool for the next scan.
    fn submit(&self, job: TranscodeJob) -> bool {
        let id = job.meta.record_id.clone();
        let pool = lock(&self.pool);
        let Some(pool) = pool.as_ref() else {
            return false;
        };
        // Marked before the hand-off: a fast worker's completion must find it to remove.
        lock(&self.queued).insert(id.clone());
        match pool.submit(job) {
            Ok(()) => true,
            Err(_) => {
                lock(&self.queued).remove(&id);
                false
            }
        }
    }

    pub fn active(&self) -> usize {
        lock(&self.live).len()
    }

    /// Every WAV in the spool with a sidecar is a recording that has not reached the index.
    /// At start-up, those a crash cut are repaired and indexed as partial, finished ones go
    /// to the pool as they are. Later scans (every minute) pick up what a full queue or a
    /// failed job left, skipping live and queued recordings. Nothing is dropped.
    fn scan_spool(&self, startup: bool) {
        let Ok(dir) = std::fs::read_dir(&self.spool) else {
            return;
        };
        let mut n = 0;
        for entry in dir.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let wav = path.with_extension("wav");
            let Some(id) = wav.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            if lock(&self.queued).contains(&id)
                || lock(&self.live).contains_key(&RecordId::from_stored(id.clone()))
            {
                continue;
            }
            if !startup {
                // A sidecar still saying `recording` belongs to a live recording being set
                // up, never to one this process lost: only a start-up repairs those.
                match TranscodeJob::from_sidecar(&wav) {
                    Ok(j) if j.meta.status == RecordingStatus::Recording => continue,
                    Ok(_) => {}
                    Err(_) => continue,
                }
            }
            let job = match TranscodeJob::prepare(&wav) {
                Ok(j) => j,
                Err(e) => {
                    if startup {
                        tracing::error!(path = %wav.display(), error = %e, "a recording left in the spool cannot be recovered now; it stays there");
                    }
                    continue;
                }
            };
            if !self.submit(job) {
                tracing::warn!(
                    "transcoding queue full; the rest of the spool waits for the next scan"
                );
                break;
            }
            n += 1;
        }
        if n > 0 {
            tracing::info!(
                recordings = n,
                startup,
                "spool recordings queued for storing"
            );
        }
    }

    fn channel_of(&self, role: Role) -> Channel {
        match (role, self.cfg.swap_channels) {
            (Role::Customer, false) | (Role::Agent, true) => Channel::Left,
            (Role::Agent, false) | (Role::Customer, true) => Channel::Right,
        }
    }

    fn apply(&self, actions: Vec<MediaAction>, call_refs: &[String]) -> Result<(), RecordId> {
        for a in actions {
            match a {
                MediaAction::Start {
                    record_id,
                    call_id,
                    streams,
                    meta,
                    started_ms,
                } => {
                    let wav = self.spool.join(format!("{record_id}.wav"));
                    // What a CDR leg may carry: the softswitch's uuid (X-Call-UUID), the SIPREC
                    // session ids (RFC 7989 Session-ID: local and remote uuid), and the
                    // recording session's own Call-ID (a FreeSWITCH fork's leg has it as its
                    // sip_call_id).
                    let mut refs: Vec<String> = Vec::new();
                    for r in meta
                        .call_refs
                        .iter()
                        .chain(call_refs)
                        .chain(std::iter::once(&call_id))
                    {
                        for part in session_id_parts(r) {
                            if !refs.contains(&part) {
                                refs.push(part);
                            }
                        }
                    }
                    let sidecar = self.sidecar(&record_id, &call_id, &meta, &refs, started_ms);
                    if let Err(e) = sidecar.write_sidecar(&wav.with_extension("json")) {
                        tracing::error!(record_id = %record_id, error = %e, "cannot write the recording sidecar; refusing the recording");
                        return Err(record_id);
                    }
                    let mut sockets = Vec::new();
                    {
                        let mut ports = lock(&self.ports);
                        for s in &streams {
                            if let Some(sk) = ports.claim(s.port) {
                                sockets.push((s.clone(), self.channel_of(s.role), sk));
                            }
                        }
                    }
                    let t = self
                        .next_thread
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        % self.threads.len();
                    let start = StartSession {
                        record_id: record_id.clone(),
                        spool: wav,
                        streams: sockets,
                    };
                    if self.threads[t]
                        .send(Control::Start(Box::new(start)))
                        .is_err()
                    {
                        // Refused (500): no WAV will ever exist, so no sidecar may stay.
                        let _ = std::fs::remove_file(self.spool.join(format!("{record_id}.json")));
                        return Err(record_id);
                    }
                    lock(&self.live).insert(
                        record_id.clone(),
                        Live {
                            meta: sidecar,
                            thread: t,
                        },
                    );
                    let _ = self.events.send(RecordingEvent::Started {
                        record_id: record_id.to_string(),
                        call_refs: refs,
                    });
                }
                MediaAction::Update { record_id, streams } => {
                    let Some(t) = lock(&self.live).get(&record_id).map(|l| l.thread) else {
                        continue;
                    };
                    let mut ports = lock(&self.ports);
                    let streams = streams
                        .into_iter()
                        .map(|s| {
                            let sk = ports.claim(s.port);
                            let ch = self.channel_of(s.role);
                            (s, ch, sk)
                        })
                        .collect();
                    drop(ports);
                    let _ = self.threads[t].send(Control::Update { record_id, streams });
                }
                MediaAction::Stop { record_id, reason } => {
                    self.stop(record_id, reason);
                }
            }
        }
        Ok(())
    }

    fn stop(&self, record_id: RecordId, reason: EndReason) {
        let Some(t) = lock(&self.live).get(&record_id).map(|l| l.thread) else {
            return;
        };
        // Stop must get through, but nobody may wait for it here (this runs on the SIP
        // receive path and on the async tick): a full control queue keeps it for the next
        // tick, by which time the media thread has drained its queue.
        if let Err(back) = self.threads[t].send(Control::Stop { record_id, reason }) {
            lock(&self.pending_stops).push((t, back));
        }
    }

    /// Stops that found their media thread's queue full, tried again on every tick.
    fn retry_stops(&self) {
        let pending = std::mem::take(&mut *lock(&self.pending_stops));
        for (t, msg) in pending {
            if let Err(back) = self.threads[t].send(msg) {
                lock(&self.pending_stops).push((t, back));
            }
        }
    }

    fn dtmf_mark(&self, d: &crate::media::recorder::RecordedDtmf) -> DtmfMark {
        let side = match (d.channel, self.cfg.swap_channels) {
            (Channel::Left, false) | (Channel::Right, true) => "customer",
            _ => "agent",
        };
        let key = match (self.cfg.dtmf_digits, d.event.digit) {
            (true, Some(c)) => c.to_string(),
            (true, None) => format!("event {}", d.event.event),
            (false, _) => "x".into(),
        };
        DtmfMark {
            offset_ms: d.offset_ms,
            duration_ms: d.event.duration_ms,
            side: side.into(),
            key,
        }
    }

    fn sidecar(
        &self,
        record_id: &RecordId,
        call_id: &str,
        meta: &SessionMeta,
        refs: &[String],
        started_ms: u64,
    ) -> RecordingMeta {
        RecordingMeta {
            record_id: record_id.to_string(),
            call_id: call_id.to_owned(),
            agent: meta.agent.clone(),
            participants: meta
                .participants
                .iter()
                .map(|p| {
                    let who = p.aor.clone().or_else(|| p.name.clone()).unwrap_or_default();
                    match p.role {
                        Role::Agent => format!("agent:{who}"),
                        Role::Customer => format!("customer:{who}"),
                    }
                })
                .collect(),
            call_refs: refs.to_vec(),
            dtmf: Vec::new(),
            started_ms,
            ended_ms: started_ms,
            codec: meta.codec.map(|c| c.name().to_owned()).unwrap_or_default(),
            status: RecordingStatus::Recording,
        }
    }

    /// The periodic work: SIP timers, reports from the media threads, outgoing SIP.
    pub async fn run(self: Arc<Self>, sip: Arc<SipServer>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            ticks += 1;
            if ticks % 1_200 == 0 {
                // Once a minute: what a full queue or a failed job left in the spool.
                let me = Arc::clone(&self);
                let _ = tokio::task::spawn_blocking(move || me.scan_spool(false)).await;
            }
            let now = Now::system();
            let (mut out, actions) = {
                let mut ports = lock(&self.ports);
                lock(&self.uas).poll(now.instant, &mut *ports)
            };
            for a in actions {
                if let MediaAction::Stop { record_id, reason } = a {
                    self.stop(record_id, reason);
                }
            }
            self.retry_stops();
            self.drain_reports(&mut out);
            out.append(&mut lock(&self.outgoing));
            for o in out {
                if o.transport != Transport::Udp {
                    continue;
                }
                if let Some(sock) = sip.udp_socket(o.from) {
                    let _ = sock.send_to(&o.bytes, o.to).await;
                }
            }
        }
        // Shutdown: every live recording is finalized and its SRC told (BYE); the files are
        // handed to the pool, which gets a few seconds to store them. Whatever is not stored
        // by then stays in the spool with its sidecar and is stored at the next start.
        let ids = lock(&self.uas).record_ids();
        let mut out = Vec::new();
        for id in ids {
            self.stop(id.clone(), EndReason::Shutdown);
            let mut ports = lock(&self.ports);
            out.extend(lock(&self.uas).end(&id, &mut *ports));
        }
        for o in out {
            if let Some(sock) = sip.udp_socket(o.from) {
                let _ = sock.send_to(&o.bytes, o.to).await;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while !lock(&self.live).is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.retry_stops();
            self.drain_reports(&mut Vec::new());
        }
        let pool = lock(&self.pool).take();
        if let Some(pool) = pool {
            let joined = tokio::task::spawn_blocking(move || pool.shutdown());
            if tokio::time::timeout(Duration::from_secs(5), joined)
                .await
                .is_err()
            {
                tracing::warn!(
                    "transcoding still busy at shutdown; the rest is stored at the next start"
                );
            }
        }
    }

    fn drain_reports(&self, out: &mut Vec<Outgoing>) {
        let reports: Vec<Report> = {
            let rx = lock(&self.reports);
            std::iter::from_fn(|| rx.try_recv().ok()).collect()
        };
        for Report::Finished {
            record_id,
            reason,
            spool,
            result,
        } in reports
        {
            // The media side ended it (RTP timeout, a write error): end the dialog too and
            // tell the SRC. After a BYE the dialog is already gone and this does nothing.
            {
                let mut ports = lock(&self.ports);
                if let Some(bye) = lock(&self.uas).end(&record_id, &mut *ports) {
                    out.push(bye);
                }
            }
            self.metrics
                .ended
                .with_label_values(&[reason.as_str()])
                .inc();
            let Some(live) = lock(&self.live).remove(&record_id) else {
                continue;
            };
            let mut meta = live.meta;
            match result {
                Ok(summary) => {
                    meta.ended_ms = meta.started_ms + summary.duration_ms;
                    meta.dtmf = summary.dtmf.iter().map(|d| self.dtmf_mark(d)).collect();
                    meta.status = if reason == EndReason::Shutdown {
                        RecordingStatus::Partial
                    } else {
                        RecordingStatus::Complete
                    };
                }
                Err(e) if !spool.exists() => {
                    // The file could not even be created: there is nothing to keep, and a
                    // sidecar without its WAV would only be an error at every start.
                    tracing::error!(record_id = %record_id, error = %e, "recording file could not be created; nothing was recorded");
                    let _ = std::fs::remove_file(spool.with_extension("json"));
                    continue;
                }
                Err(e) => {
                    tracing::error!(record_id = %record_id, error = %e, "finalizing a recording failed; repairing it");
                    match crate::media::wav::repair(&spool) {
                        Ok(fixed) => {
                            meta.ended_ms = meta.started_ms + fixed.frames / 8;
                            meta.status = RecordingStatus::Partial;
                        }
                        Err(e) => {
                            tracing::error!(record_id = %record_id, error = %e, "recording left in the spool for the next start-up");
                            continue;
                        }
                    }
                }
            }
            if let Err(e) = meta.write_sidecar(&spool.with_extension("json")) {
                tracing::error!(record_id = %record_id, error = %e, "cannot complete the sidecar; the next start-up indexes the recording");
                continue;
            }
            if !self.submit(TranscodeJob {
                spool_wav: spool,
                meta,
            }) {
                tracing::warn!(record_id = %record_id, "transcoding queue full; the recording stays in the spool for the next scan");
            }
        }
    }
}

impl SipApplication for RecordingService {
    fn claims(&self, req: &Request) -> bool {
        lock(&self.uas).claims(req)
    }

    fn in_dialog(&self, req: &Request) -> bool {
        lock(&self.uas).in_dialog(req)
    }

    fn handle(&self, req: &Request, flow: &Flow, now: Now) -> Option<(Vec<u8>, u16)> {
        let out = {
            let mut ports = lock(&self.ports);
            let mut uas = lock(&self.uas);
            uas.handle(req, flow, now, &mut *ports, &*self.is_agent)
        };
        let status = out.status?;
        if status >= 400 {
            self.metrics
                .refused
                .with_label_values(&[&status.to_string()])
                .inc();
        }
        let refs: Vec<String> = CALL_REF_HEADERS
            .iter()
            .filter_map(|h| req.headers.get(&HeaderName::parse(h)))
            .map(|v| v.trim().chars().take(128).collect())
            .filter(|v: &String| !v.is_empty())
            .collect();
        if let Err(record_id) = self.apply(out.actions, &refs) {
            // The media side could not take it: undo the dialog and refuse.
            let mut ports = lock(&self.ports);
            let _ = lock(&self.uas).end(&record_id, &mut *ports);
            let mut r = crate::sip::registrar::reply_with_tag(
                req,
                500,
                "Server Internal Error (recording could not start)",
            );
            r.headers.push(HeaderName::Other("Retry-After".into()), "5");
            self.metrics.refused.with_label_values(&["500"]).inc();
            return Some((crate::sip::endpoint::encode_reply(r, req, flow), 500));
        }
        out.reply.map(|r| (r, status))
    }
}

/// `ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2` → both
/// uuids; anything else as it is.
fn session_id_parts(r: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut parts = r.split(';');
    if let Some(first) = parts.next().map(str::trim).filter(|s| !s.is_empty()) {
        out.push(first.to_owned());
    }
    for p in parts {
        if let Some(v) = p.trim().strip_prefix("remote=") {
            // RFC 7989's null uuid means "not known yet".
            if !v.is_empty() && v.bytes().any(|b| b != b'0') {
                out.push(v.to_owned());
            }
        }
    }
    out
}

pub fn recordings_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("recordings")
}

pub fn spool_dir(state_dir: &Path) -> PathBuf {
    recordings_dir(state_dir).join("spool")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_split_into_their_uuids() {
        assert_eq!(
            session_id_parts(
                "ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2"
            ),
            vec![
                "ab30317f1a784dc48ff824d0d3715d86",
                "47755a9de7794ba387653f2099600ef2"
            ]
        );
        assert_eq!(
            session_id_parts("ab30;remote=00000000000000000000000000000000"),
            vec!["ab30"]
        );
        assert_eq!(session_id_parts("call-1@host"), vec!["call-1@host"]);
        assert!(session_id_parts("").is_empty());
    }
}
