//! The CDR shell: takes legs from the ESL client, the mod_json_cdr receiver and the
//! error-directory sweeper; commits each before acknowledging it; runs the reconciler's timer;
//! builds closed calls into records, commits them, and announces them as [`CdrReady`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use super::builder::{build_call, CdrDirectory};
use super::mapping::CdrMapping;
use super::reconcile::{Added, ClosedCall, LegSource, Reconciler};
use super::record::{AgentRef, CallRecord};
use crate::clock::Now;
use crate::config::Config;
use crate::grid::cdr::TimeFormat;
use crate::metrics::Metrics;
use crate::store::{Durability, LegInsert, Store, StoreError};
use crate::switch::esl::EslEvent;
use crate::switch::leg::{Leg, LegError, LegVariables};
use crate::switch::raw_cdr::{self, CdrError, CdrLimits, PostEncoding, RawCdr};

/// A call's records, committed; the grid forwarder's input.
#[derive(Debug, Clone)]
pub struct CdrReady {
    pub call_key: String,
    pub records: Vec<CallRecord>,
}

/// Where a CDR document came from, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentOrigin {
    Post,
    Sweeper,
}

impl DocumentOrigin {
    fn label(self) -> &'static str {
        match self {
            Self::Post => "post",
            Self::Sweeper => "sweeper",
        }
    }
}

/// Why a document or event was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The input itself is bad: the sender should not retry it (HTTP 400).
    #[error(transparent)]
    Document(#[from] CdrError),
    #[error(transparent)]
    Leg(#[from] LegError),
    /// Our side failed: the sender should retry (HTTP 503).
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The outbox towards the grid is full: the sender should retry later (HTTP 503), and
    /// FreeSWITCH keeps the document until then.
    #[error("the grid outbox is full; retry later")]
    Backpressure,
}

impl IngestError {
    pub fn is_input_error(&self) -> bool {
        !matches!(self, Self::Store(_) | Self::Backpressure)
    }
}

/// What happened to an accepted leg.
pub type Ingested = LegInsert;

/// The directory as the builder sees it: agents by extension, skill groups, extensions.
/// Rebuilt from the store every few seconds rather than per call.
#[derive(Debug, Default)]
struct DirectorySnapshot {
    agents: HashMap<String, (AgentRef, Vec<String>)>,
    groups: HashMap<String, String>,
    group_by_name: HashMap<String, String>,
    extensions: HashSet<String>,
    loaded_ms: u64,
}

impl DirectorySnapshot {
    fn load(store: &Store, now_ms: u64) -> Result<DirectorySnapshot, StoreError> {
        let mut snap = DirectorySnapshot {
            loaded_ms: now_ms,
            ..DirectorySnapshot::default()
        };
        for a in store.agents()? {
            if let Some(ext) = a.extension.clone() {
                snap.agents.insert(
                    ext.clone(),
                    (
                        AgentRef {
                            extension: ext,
                            agent_id: a.agent_id,
                            name: a.name,
                            org_no: a.org_no,
                            org_name: a.org_name,
                        },
                        a.skill_groups,
                    ),
                );
            }
        }
        for g in store.skill_groups()? {
            snap.group_by_name.insert(g.name.clone(), g.id.clone());
            snap.groups.insert(g.id, g.name);
        }
        snap.extensions.extend(store.extension_users()?);
        Ok(snap)
    }
}

impl CdrDirectory for DirectorySnapshot {
    fn agent_at(&self, extension: &str) -> Option<AgentRef> {
        self.agents.get(extension).map(|(a, _)| a.clone())
    }

    fn is_extension(&self, user: &str) -> bool {
        self.extensions.contains(user) || self.agents.contains_key(user)
    }

    fn skill_group(&self, key: &str) -> Option<(String, String)> {
        if let Some(name) = self.groups.get(key) {
            return Some((key.to_owned(), name.clone()));
        }
        self.group_by_name
            .get(key)
            .map(|id| (id.clone(), key.to_owned()))
    }

    fn agent_skill_group(&self, extension: &str) -> Option<(String, String)> {
        let (_, groups) = self.agents.get(extension)?;
        let id = groups.first()?;
        Some((id.clone(), self.groups.get(id).cloned().unwrap_or_default()))
    }
}

const DIRECTORY_REFRESH_MS: u64 = 5_000;

/// Where built records go besides the store: the grid forwarder turns them into outbox rows,
/// which [`CdrService`] commits in the same transaction as the records themselves.
pub trait RecordForwarder: Send + Sync {
    /// The outbox rows for one call's records (none when no CDR push is enabled).
    fn outbox_records(
        &self,
        call_key: &str,
        records: &[CallRecord],
    ) -> Vec<crate::outbox::NewRecord>;
    /// Called after the rows committed.
    fn committed(&self, rows: &[crate::outbox::NewRecord]);
    /// Whether the outbox can take more; when not, new documents are refused with 503.
    fn has_room(&self) -> bool;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct CdrService {
    /// Synchronous=FULL: a leg acknowledged to FreeSWITCH must survive a power cut.
    store: Mutex<Store>,
    core: Mutex<Reconciler>,
    directory: Mutex<DirectorySnapshot>,
    mapping: CdrMapping,
    time: TimeFormat,
    vars: LegVariables,
    limits: CdrLimits,
    metrics: Arc<Metrics>,
    ready: broadcast::Sender<CdrReady>,
    wake: Notify,
    error_dirs: Vec<PathBuf>,
    sweep_interval: Duration,
    leg_retention_ms: Option<u64>,
    last_prune_ms: Mutex<u64>,
    forwarder: std::sync::OnceLock<Arc<dyn RecordForwarder>>,
    /// Recordings announced by the recording server, by the call identifiers they name.
    recordings: Mutex<RecordingLinks>,
}

/// Call identifier (uuid, Call-ID, SIPREC session) → recording id, bounded: a recording's
/// call closes within minutes, so the oldest links can go once the map is full.
#[derive(Default)]
pub struct RecordingLinks {
    by_ref: HashMap<String, String>,
    order: std::collections::VecDeque<String>,
}

impl RecordingLinks {
    const MAX: usize = 100_000;

    pub fn link(&mut self, refs: &[String], record_id: &str) {
        for r in refs {
            if r.is_empty() {
                continue;
            }
            if self
                .by_ref
                .insert(r.clone(), record_id.to_owned())
                .is_none()
            {
                self.order.push_back(r.clone());
            }
            while self.order.len() > Self::MAX {
                if let Some(old) = self.order.pop_front() {
                    self.by_ref.remove(&old);
                }
            }
        }
    }

    /// Gives each leg without a recording the one linked to its uuid, call uuid or Call-ID.
    pub fn fill(&self, legs: &mut [crate::switch::leg::Leg]) {
        for leg in legs.iter_mut().filter(|l| l.recording.is_none()) {
            let found = [
                Some(&leg.key.uuid),
                Some(&leg.call_uuid),
                leg.sip_call_id.as_ref(),
            ]
            .into_iter()
            .flatten()
            .find_map(|r| self.by_ref.get(r));
            leg.recording = found.cloned();
        }
    }
}

/// How often old legs are pruned.
const PRUNE_INTERVAL_MS: u64 = 3_600_000;

impl CdrService {
    /// Opens the CDR store and re-feeds every leg of calls not built before the last stop.
    pub fn open(cfg: &Config, metrics: Arc<Metrics>, now: Now) -> anyhow::Result<Arc<CdrService>> {
        let store = Store::open(&cfg.db_path(), Durability::Full)?;
        let c = &cfg.cdr;
        let mut core = Reconciler::new(c.settle_secs * 1000, c.documents, c.max_pending)
            .with_orphan_ms(c.orphan_secs.saturating_mul(1000));
        let open = store.open_legs()?;
        let reopened = open.len();
        let vars = LegVariables {
            recording: c.recording_variables.clone(),
            ..LegVariables::default()
        };
        let limits = CdrLimits {
            max_bytes: c.max_body_bytes,
            ..CdrLimits::default()
        };
        for stored in open {
            // A leg stored by another version is read again from its raw document.
            let leg = stored.leg.or_else(|| {
                let doc = stored.document.as_deref()?;
                let raw = parse_document(doc, &limits).ok()?;
                Leg::from_raw(&raw, &vars).ok()
            });
            match leg {
                Some(leg) => {
                    core.add(leg, stored.source, now.unix_ms);
                }
                None => tracing::warn!(
                    source = stored.source.as_str(),
                    "a stored call leg is unreadable and has no document; skipped"
                ),
            }
        }
        if reopened > 0 {
            tracing::info!(
                legs = reopened,
                calls = core.pending(),
                "reopened unbuilt calls"
            );
        }
        metrics.cdr_calls_pending.set(core.pending() as i64);
        let directory = DirectorySnapshot::load(&store, now.unix_ms)?;
        let time = TimeFormat::new(&c.time_format, &c.timezone).map_err(anyhow::Error::msg)?;
        Ok(Arc::new(CdrService {
            store: Mutex::new(store),
            core: Mutex::new(core),
            directory: Mutex::new(directory),
            mapping: c.mapping.clone(),
            time,
            vars,
            limits,
            metrics,
            ready: broadcast::channel(4096).0,
            wake: Notify::new(),
            error_dirs: c.error_dirs.clone(),
            sweep_interval: Duration::from_secs(c.sweep_interval_secs),
            leg_retention_ms: (c.leg_retention_days > 0)
                .then(|| c.leg_retention_days.saturating_mul(86_400_000)),
            last_prune_ms: Mutex::new(0),
            forwarder: std::sync::OnceLock::new(),
            recordings: Mutex::new(RecordingLinks::default()),
        }))
    }

    /// Sends every call built from now on to `f` as well (set once, at start-up).
    /// Links a recording to the calls it names (the RecordingStarted/Ready events), so the
    /// call's records carry its id (SRFMSGID) when they are built.
    pub fn link_recording(&self, call_refs: &[String], record_id: &str) {
        lock(&self.recordings).link(call_refs, record_id);
    }

    pub fn set_forwarder(&self, f: Arc<dyn RecordForwarder>) {
        if self.forwarder.set(f).is_err() {
            tracing::warn!("CDR forwarder set twice; keeping the first");
        }
    }

    /// Every call's records as they are committed.
    pub fn subscribe(&self) -> broadcast::Receiver<CdrReady> {
        self.ready.subscribe()
    }

    pub fn time_format(&self) -> &TimeFormat {
        &self.time
    }

    pub fn limits(&self) -> &CdrLimits {
        &self.limits
    }

    /// Takes one CDR document (a mod_json_cdr POST body or a swept file): parses it, commits
    /// the leg, then hands it to the reconciler. Blocking (SQLite); call from a blocking
    /// context. On `Ok` the leg is durable.
    pub fn ingest_document(
        &self,
        body: &[u8],
        content_type: Option<&str>,
        origin: DocumentOrigin,
        now_ms: u64,
    ) -> Result<Ingested, IngestError> {
        let result = if self.forwarder.get().is_some_and(|f| !f.has_room()) {
            Err(IngestError::Backpressure)
        } else {
            self.ingest_document_inner(body, content_type, now_ms)
        };
        self.count_leg(origin.label(), &result);
        result
    }

    fn count_leg(&self, source: &str, result: &Result<Ingested, IngestError>) {
        let label = match result {
            Ok(LegInsert::New) => "stored",
            Ok(LegInsert::Duplicate) => "duplicate",
            Ok(LegInsert::Late) => "late",
            Err(e) if e.is_input_error() => "refused",
            Err(_) => "error",
        };
        self.metrics
            .cdr_legs
            .with_label_values(&[source, label])
            .inc();
    }

    fn ingest_document_inner(
        &self,
        body: &[u8],
        content_type: Option<&str>,
        now_ms: u64,
    ) -> Result<Ingested, IngestError> {
        let encoding = PostEncoding::from_content_type(content_type, body);
        let text = raw_cdr::unwrap_post(body, encoding, &self.limits)?;
        let raw = parse_document(&text, &self.limits)?;
        let leg = Leg::from_raw(&raw, &self.vars)?;
        self.accept(leg, LegSource::Document, Some(&text), now_ms)
    }

    /// Takes an ESL `CHANNEL_HANGUP_COMPLETE`.
    pub fn ingest_hangup_event(
        &self,
        event: &EslEvent,
        now_ms: u64,
    ) -> Result<Ingested, IngestError> {
        // Read in place: the event already holds every variable.
        let result = Leg::from_hangup_event(event, &self.vars)
            .map_err(IngestError::from)
            .and_then(|leg| self.accept(leg, LegSource::Esl, None, now_ms));
        self.count_leg("esl", &result);
        result
    }

    fn accept(
        &self,
        leg: Leg,
        source: LegSource,
        document: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<Ingested, IngestError> {
        // The store lock is held until the reconciler has the leg (lock order: store, then
        // core), so `close_due` never closes the call between the two and misses the leg.
        let mut store = lock(&self.store);
        let outcome = store.insert_leg(&leg, source, document, now_ms)?;
        match outcome {
            LegInsert::New => {
                let uuid = leg.key.uuid.clone();
                if lock(&self.core).add(leg, source, now_ms) == Added::Duplicate {
                    // The store is the authority; this would mean the two disagree.
                    tracing::warn!(leg = %uuid, source = source.as_str(), "leg new to the store but known to the reconciler");
                }
                drop(store);
                self.wake.notify_one();
            }
            LegInsert::Late => {
                self.metrics
                    .cdr_reconciliation
                    .with_label_values(&["late_leg"])
                    .inc();
                tracing::info!(leg = %leg.key.uuid, "leg arrived after its call was built");
            }
            LegInsert::Duplicate => {}
        }
        Ok(outcome)
    }

    /// Removes the legs of calls built more than the retention ago, at most hourly.
    pub fn prune(&self, now_ms: u64) -> Result<usize, StoreError> {
        let Some(retention) = self.leg_retention_ms else {
            return Ok(0);
        };
        {
            let mut last = lock(&self.last_prune_ms);
            if now_ms.saturating_sub(*last) < PRUNE_INTERVAL_MS {
                return Ok(0);
            }
            *last = now_ms;
        }
        let n = lock(&self.store).prune_legs(now_ms.saturating_sub(retention))?;
        if n > 0 {
            tracing::info!(legs = n, "pruned the legs of old calls");
        }
        Ok(n)
    }

    /// Builds and commits every call the reconciler closes at `now_ms`; returns how many.
    /// On a store error every call not yet committed goes back to the reconciler as it was,
    /// so the next attempt sees exactly the same legs.
    pub fn close_due(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut store = lock(&self.store);
        let closed: Vec<ClosedCall> = {
            let mut core = lock(&self.core);
            let closed = core.poll(now_ms);
            self.metrics.cdr_calls_pending.set(core.pending() as i64);
            closed
        };
        if closed.is_empty() {
            return Ok(0);
        }
        {
            let mut dir = lock(&self.directory);
            if now_ms.saturating_sub(dir.loaded_ms) >= DIRECTORY_REFRESH_MS {
                match DirectorySnapshot::load(&store, now_ms) {
                    Ok(fresh) => *dir = fresh,
                    // A stale directory only risks an agent's name being a few seconds old.
                    Err(e) => {
                        tracing::warn!(error = %e, "directory refresh failed; using the previous one")
                    }
                }
            }
        }
        let mut n = 0;
        let mut calls = closed.into_iter();
        while let Some(mut call) = calls.next() {
            lock(&self.recordings).fill(&mut call.legs);
            let records = build_call(&call.legs, &*lock(&self.directory), &self.mapping);
            let key_text = call.key.to_text();
            let rows = self
                .forwarder
                .get()
                .map(|f| f.outbox_records(&key_text, &records))
                .unwrap_or_default();
            match store.close_call(&call.key, call.outcome, &records, &rows, now_ms) {
                Ok(true) => {
                    if let Some(f) = self.forwarder.get() {
                        if !rows.is_empty() {
                            f.committed(&rows);
                        }
                    }
                }
                Ok(false) => {
                    tracing::warn!(call = %call.key.to_text(), "call already built; not built again");
                    continue;
                }
                Err(e) => {
                    let mut core = lock(&self.core);
                    core.reopen(call, now_ms);
                    for rest in calls {
                        core.reopen(rest, now_ms);
                    }
                    return Err(e);
                }
            }
            n += 1;
            self.metrics
                .cdr_reconciliation
                .with_label_values(&[call.outcome.as_str()])
                .inc();
            for r in &records {
                self.metrics
                    .cdrs_built
                    .with_label_values(&[r.segment.as_str()])
                    .inc();
            }
            let _ = self.ready.send(CdrReady {
                call_key: call.key.to_text(),
                records,
            });
        }
        Ok(n)
    }

    /// Records built for a call, from the store.
    pub fn records_of(
        &self,
        key: &super::reconcile::CallKey,
    ) -> Result<Vec<CallRecord>, StoreError> {
        lock(&self.store).call_records(key)
    }

    /// The reconciler's timer: closes calls when they complete or settle.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let now = Now::system().unix_ms;
            let this = Arc::clone(&self);
            let result = tokio::task::spawn_blocking(move || {
                let built = this.close_due(now);
                if let Err(e) = this.prune(now) {
                    tracing::error!(error = %e, "pruning old call legs failed");
                }
                built
            })
            .await;
            let failed = match result {
                Ok(Ok(_)) => false,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "storing call records failed; retrying");
                    true
                }
                Err(e) => {
                    tracing::error!(error = %e, "CDR builder task failed");
                    true
                }
            };
            let next = lock(&self.core).next_deadline();
            let mut wait = next.map_or(Duration::from_millis(PRUNE_INTERVAL_MS), |d| {
                Duration::from_millis(d.saturating_sub(Now::system().unix_ms).clamp(10, 3_600_000))
            });
            if failed {
                // A failing store is retried once a second, not in a tight loop.
                wait = wait.max(Duration::from_secs(1));
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The error-directory sweeper: mod_json_cdr writes a CDR there when every post failed
    /// and never sends it again. Each file is ingested (idempotently, so a file already
    /// posted is a duplicate) and moved to `ingested/`; a file that does not parse is left
    /// for one more pass (it may still be being written) and then moved to `refused/`.
    pub async fn run_sweeper(self: Arc<Self>, shutdown: CancellationToken) {
        if self.error_dirs.is_empty() {
            return;
        }
        let mut strikes: HashMap<PathBuf, u32> = HashMap::new();
        loop {
            let this = Arc::clone(&self);
            let mut s = std::mem::take(&mut strikes);
            let r = tokio::task::spawn_blocking(move || {
                let now = Now::system().unix_ms;
                for dir in &this.error_dirs {
                    this.sweep_dir(dir, &mut s, now);
                }
                s
            })
            .await;
            match r {
                Ok(s) => strikes = s,
                Err(e) => tracing::error!(error = %e, "CDR sweeper failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.sweep_interval) => {}
            }
        }
    }

    /// One pass over one directory. Public for tests, which drive it without timers.
    pub fn sweep_dir(&self, dir: &Path, strikes: &mut HashMap<PathBuf, u32>, now_ms: u64) -> usize {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read CDR error directory");
                return 0;
            }
        };
        // Regular files only, judged without following symlinks: the directory is writable by
        // the switch's user, and a link to /dev/zero or a FIFO must not hang or exhaust us.
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(".cdr.json") || n.ends_with(".cdr.xml"))
            })
            .collect();
        files.sort();
        strikes.retain(|p, _| files.contains(p));
        let mut taken = 0;
        for path in files {
            let body = match read_bounded(&path, self.limits.max_bytes) {
                Ok(b) => b,
                Err(_) => continue,
            };
            let result = match &body {
                Some(b) => self.ingest_document(b, None, DocumentOrigin::Sweeper, now_ms),
                None => Err(IngestError::Document(CdrError::TooLarge {
                    limit: self.limits.max_bytes,
                })),
            };
            match result {
                Ok(_) => {
                    strikes.remove(&path);
                    move_into(&path, "ingested");
                    taken += 1;
                }
                Err(e) if e.is_input_error() => {
                    let n = strikes.entry(path.clone()).or_insert(0);
                    *n += 1;
                    // A torn file (FreeSWITCH writes without fsync) may complete by the next
                    // pass; after two failures it is set aside, never deleted.
                    if *n >= 2 {
                        tracing::warn!(file = %path.display(), error = %e, "unreadable CDR file set aside");
                        strikes.remove(&path);
                        move_into(&path, "refused");
                    }
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "CDR file not stored; will retry");
                    break;
                }
            }
        }
        taken
    }
}

/// Reads at most `max` bytes of a regular file; None when it is larger.
fn read_bounded(path: &Path, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut buf = Vec::new();
    file.take(max as u64 + 1).read_to_end(&mut buf)?;
    Ok((buf.len() <= max).then_some(buf))
}

fn move_into(path: &Path, sub: &str) {
    let Some(parent) = path.parent() else { return };
    let target_dir = parent.join(sub);
    if let Err(e) = std::fs::create_dir_all(&target_dir) {
        tracing::error!(dir = %target_dir.display(), error = %e, "cannot create sweeper directory");
        return;
    }
    if let Some(name) = path.file_name() {
        if let Err(e) = std::fs::rename(path, target_dir.join(name)) {
            tracing::error!(file = %path.display(), error = %e, "cannot move swept CDR file");
        }
    }
}

/// A JSON or XML CDR document, told apart by its first byte.
pub fn parse_document(text: &[u8], limits: &CdrLimits) -> Result<RawCdr, CdrError> {
    match text.trim_ascii_start().first() {
        Some(b'<') => crate::switch::xml_cdr::parse_xml(text, limits),
        _ => raw_cdr::parse_json(text, limits),
    }
}

#[cfg(test)]
mod recording_link_tests {
    use super::RecordingLinks;
    use crate::cdr::reconcile::tests::leg;

    #[test]
    fn legs_take_the_recording_named_by_uuid_call_uuid_or_call_id() {
        let mut links = RecordingLinks::default();
        links.link(&["fs-uuid-b".into(), "".into()], "r1");
        links.link(&["sip-call-9".into()], "r2");
        let mut legs = vec![
            leg("fs-uuid-a", "call-1", &[]),
            leg("fs-uuid-b", "call-1", &[]),
            leg("fs-uuid-c", "call-2", &[]),
            leg("fs-uuid-d", "call-3", &[]),
        ];
        legs[2].sip_call_id = Some("sip-call-9".into());
        legs[3].recording = Some("from-switch".into());
        links.fill(&mut legs);
        let got: Vec<Option<&str>> = legs.iter().map(|l| l.recording.as_deref()).collect();
        assert_eq!(got, vec![None, Some("r1"), Some("r2"), Some("from-switch")]);
        // A link by the call uuid reaches every leg of the call.
        links.link(&["call-1".into()], "r3");
        let mut legs = vec![leg("x", "call-1", &[])];
        links.fill(&mut legs);
        assert_eq!(legs[0].recording.as_deref(), Some("r3"));
    }

    #[test]
    fn links_are_bounded() {
        let mut links = RecordingLinks::default();
        for i in 0..RecordingLinks::MAX + 10 {
            links.link(&[format!("c{i}")], "r");
        }
        assert_eq!(links.by_ref.len(), RecordingLinks::MAX);
        assert!(!links.by_ref.contains_key("c0"));
        assert!(links
            .by_ref
            .contains_key(&format!("c{}", RecordingLinks::MAX + 9)));
    }
}
