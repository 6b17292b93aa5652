//! The outbox's async shell: owns the writer thread, the HTTP client and the delivery loop
//! around the sans-IO [`Scheduler`].
//!
//! Architecture invariant: the `outbox` table is the only source of records. Producers commit
//! rows (through [`Outbox::enqueue`], or inside their own transaction with
//! [`super::store::insert`] followed by [`Outbox::committed`]); the delivery loop reads rows
//! with ids above the last it read. SQLite has one writer at a time and a row's id is taken
//! inside its transaction, so ids become visible in order and the scan never skips one. The
//! same scan, run every second, picks up rows replayed by the CLI from another process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rusqlite::Connection;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::OutboxConfig;
use super::judge::judge;
use super::metrics::OutboxMetrics;
use super::record::{NewRecord, RecordId, Target};
use super::scheduler::{AttemptResult, Decision, Dispatch, Scheduler};
use super::store::{self, DeadLetter, ReplaySelection};
use super::writer::{self, Command, WriterHandle};
use crate::clock::Now;
use crate::grid::targets::{GridConfig, PushTarget};
use crate::metrics::Metrics;
use crate::store::{Durability, Store};

/// Rows read per scan of the `outbox` table.
const SCAN_BATCH: usize = 4096;
/// Largest answer body read from the grid (its envelopes are tiny).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("the outbox is full ({depth} records, {bytes} bytes pending)")]
    Full { depth: usize, bytes: usize },
    #[error("push target {0} is not enabled")]
    Disabled(Target),
    #[error("the outbox could not commit: {0}")]
    Store(String),
    #[error("the outbox has stopped")]
    Closed,
}

/// Where and how one target's records are sent.
#[derive(Clone)]
struct Endpoint {
    uri: Uri,
    headers: HeaderMap,
    idempotency_header: Option<HeaderName>,
    timeout: Duration,
}

impl Endpoint {
    fn from_config(t: Target, p: &PushTarget) -> anyhow::Result<Endpoint> {
        use anyhow::Context as _;
        let key = format!("grid.push.{}", t.as_str());
        let uri: Uri = p.url.parse().with_context(|| format!("{key}.url"))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("gridedge/", env!("CARGO_PKG_VERSION"))),
        );
        for (k, v) in &p.headers {
            headers.insert(
                HeaderName::from_bytes(k.as_bytes()).with_context(|| format!("{key}.headers"))?,
                HeaderValue::from_str(v).with_context(|| format!("{key}.headers"))?,
            );
        }
        let token = match &p.bearer_token_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| {
                    format!("{key}.bearer_token_file: cannot read {}", path.display())
                })?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
            None => p.bearer_token.clone(),
        };
        let loopback = matches!(
            uri.host(),
            Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
        );
        if !token.is_empty() && uri.scheme_str() == Some("http") && !loopback {
            tracing::warn!(
                target = t.as_str(),
                "{key}: a bearer token is sent over plain http to a non-local host; use https"
            );
        }
        if !token.is_empty() {
            let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
                .with_context(|| format!("{key}.bearer_token"))?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        let idempotency_header = if p.idempotency_header.is_empty() {
            None
        } else {
            Some(HeaderName::from_bytes(p.idempotency_header.as_bytes())?)
        };
        Ok(Endpoint {
            uri,
            headers,
            idempotency_header,
            timeout: Duration::from_millis(p.timeout_ms),
        })
    }
}

type HttpClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

pub struct Outbox {
    cfg: OutboxConfig,
    db_path: PathBuf,
    writer: Mutex<Option<WriterHandle>>,
    writer_join: Mutex<Option<std::thread::JoinHandle<()>>>,
    notify: Arc<Notify>,
    sched: Mutex<Scheduler>,
    endpoints: HashMap<Target, Endpoint>,
    pub metrics: Arc<OutboxMetrics>,
}

/// Gauges of the whole outbox, for `/admin/outbox/stats` and the CLI.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxStats {
    pub depth: u64,
    pub oldest_age_ms: u64,
    pub dead: u64,
    pub dead_by_target: std::collections::BTreeMap<String, u64>,
}

impl Outbox {
    /// Opens the writer connection (synchronous=FULL) and the HTTP client. Pending rows are
    /// loaded by [`Self::run`].
    pub fn open(
        db_path: &Path,
        cfg: &OutboxConfig,
        grid: &GridConfig,
        metrics: &Metrics,
    ) -> anyhow::Result<Arc<Outbox>> {
        let store = Store::open(db_path, Durability::Full)?;
        let conn = store.into_connection();
        let notify = Arc::new(Notify::new());
        let om = Arc::new(OutboxMetrics::new(metrics.registry()));
        let (handle, join) = writer::spawn(
            conn,
            cfg.queue,
            cfg.commit_max_batch,
            Arc::clone(&notify),
            Arc::clone(&om),
        )?;
        let mut endpoints = HashMap::new();
        for t in Target::ALL {
            let p = grid.push.get(t);
            if p.enabled {
                endpoints.insert(t, Endpoint::from_config(t, p)?);
            }
        }
        Ok(Arc::new(Outbox {
            cfg: cfg.clone(),
            db_path: db_path.to_owned(),
            writer: Mutex::new(Some(handle)),
            writer_join: Mutex::new(Some(join)),
            notify,
            sched: Mutex::new(Scheduler::new(cfg.scheduler(), rand::random())),
            endpoints,
            metrics: om,
        }))
    }

    pub fn enabled(&self, t: Target) -> bool {
        self.endpoints.contains_key(&t)
    }

    /// Whether `bytes` more of `target`'s payload fit under its bounds (each target has its
    /// own, so a backlog of one push never refuses another's records). Producers that can
    /// push back (the CDR receiver) ask before accepting work.
    pub fn has_room(&self, target: Target, bytes: usize) -> Result<(), EnqueueError> {
        let st = self.lock_sched().stats(target);
        if st.depth >= self.cfg.max_records || st.bytes + bytes > self.cfg.max_bytes {
            return Err(EnqueueError::Full {
                depth: st.depth,
                bytes: st.bytes,
            });
        }
        Ok(())
    }

    fn lock_sched(&self) -> std::sync::MutexGuard<'_, Scheduler> {
        self.sched.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn writer(&self) -> Result<WriterHandle, EnqueueError> {
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(EnqueueError::Closed)
    }

    fn check(&self, records: &[NewRecord]) -> Result<(), EnqueueError> {
        if let Some(r) = records.iter().find(|r| !self.enabled(r.target)) {
            return Err(EnqueueError::Disabled(r.target));
        }
        let room = Target::ALL.into_iter().try_for_each(|t| {
            let bytes: usize = records
                .iter()
                .filter(|r| r.target == t)
                .map(|r| r.payload.len())
                .sum();
            if bytes == 0 {
                Ok(())
            } else {
                self.has_room(t, bytes)
            }
        });
        if let Err(e) = room {
            for r in records {
                self.metrics
                    .refused
                    .with_label_values(&[r.target.as_str()])
                    .inc();
            }
            return Err(e);
        }
        Ok(())
    }

    /// Commits records (group commit) and returns once they are durable.
    pub async fn enqueue(&self, records: Vec<NewRecord>) -> Result<Vec<RecordId>, EnqueueError> {
        self.check(&records)?;
        let (ack, rx) = oneshot::channel();
        let n = records.len();
        match self.writer()?.try_send(Command::Enqueue {
            records,
            ack: Some(ack),
        }) {
            Ok(()) => {}
            Err(writer::SendError::Full) => {
                let s = self.lock_sched();
                return Err(EnqueueError::Full {
                    depth: s.depth() + n,
                    bytes: s.bytes(),
                });
            }
            Err(writer::SendError::Closed) => return Err(EnqueueError::Closed),
        }
        rx.await
            .map_err(|_| EnqueueError::Closed)?
            .map_err(EnqueueError::Store)
    }

    /// Hands records to the writer without waiting for the commit (for producers on a
    /// synchronous path, such as presence's event sinks). Refused when full.
    pub fn enqueue_nowait(&self, records: Vec<NewRecord>) -> Result<(), EnqueueError> {
        self.check(&records)?;
        let targets: Vec<Target> = records.iter().map(|r| r.target).collect();
        match self
            .writer()?
            .try_send(Command::Enqueue { records, ack: None })
        {
            Ok(()) => Ok(()),
            Err(writer::SendError::Full) => {
                for t in targets {
                    self.metrics.refused.with_label_values(&[t.as_str()]).inc();
                }
                let s = self.lock_sched();
                Err(EnqueueError::Full {
                    depth: s.depth(),
                    bytes: s.bytes(),
                })
            }
            Err(writer::SendError::Closed) => Err(EnqueueError::Closed),
        }
    }

    /// Rows were committed by another connection (the CDR service's own transaction): scan.
    pub fn committed(&self, target: Target, n: usize) {
        self.metrics
            .enqueued
            .with_label_values(&[target.as_str()])
            .inc_by(n as u64);
        self.notify.notify_one();
    }

    /// Whether the lane already holds records (heartbeats do not join a backlog).
    pub fn lane_busy(&self, t: Target, key: &str) -> bool {
        self.lock_sched().lane_busy(t, key)
    }

    /// Moves dead letters back into the outbox (same idempotency key, fresh attempts).
    pub async fn replay(&self, which: ReplaySelection) -> Result<usize, EnqueueError> {
        let (ack, rx) = oneshot::channel();
        let w = self.writer()?;
        tokio::task::spawn_blocking(move || w.send_blocking(Command::Replay { which, ack }))
            .await
            .map_err(|_| EnqueueError::Closed)?
            .map_err(|_| EnqueueError::Closed)?;
        rx.await
            .map_err(|_| EnqueueError::Closed)?
            .map_err(EnqueueError::Store)
    }

    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// Stops the writer after it has committed what was queued (called at shutdown, after
    /// every producer has stopped).
    pub fn close(&self) {
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(j) = self
            .writer_join
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = j.join();
        }
    }

    /// The delivery loop: until `shutdown`. Requests in flight at shutdown are abandoned;
    /// their rows stay and are delivered again after the restart (same idempotency key).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let reader = match open_reader(&self.db_path) {
            Ok(c) => Arc::new(Mutex::new(c)),
            Err(e) => {
                tracing::error!(error = %e, "outbox: cannot open the store for reading; nothing will be delivered");
                return;
            }
        };
        // A connection that cannot be made within half an attempt's budget is "unreachable"
        // (an outage: no attempt counted), rather than a timeout of a request the receiver
        // may have seen.
        let shortest = self
            .endpoints
            .values()
            .map(|e| e.timeout)
            .min()
            .unwrap_or(Duration::from_secs(10));
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(shortest / 2));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(self.cfg.concurrency)
            .build(connector);
        let mut cursor = RecordId(0);
        let mut held_warned = false;
        let mut dirty = true;
        let mut inflight: JoinSet<Outcome> = JoinSet::new();
        let mut tasks_of: HashMap<tokio::task::Id, (RecordId, Target)> = HashMap::new();
        // Decisions not yet handed to the writer: never dropped (a lost delete is only a
        // redelivery, but a lost dead letter would resurrect the record).
        let mut unsent: Vec<Decision> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        loop {
            if dirty {
                dirty = false;
                let r = Arc::clone(&reader);
                let after = cursor;
                let rows = tokio::task::spawn_blocking(move || {
                    let conn = r.lock().unwrap_or_else(|e| e.into_inner());
                    store::load_after(&conn, after, SCAN_BATCH)
                })
                .await;
                match rows {
                    Ok(Ok(rows)) => {
                        dirty = rows.len() == SCAN_BATCH;
                        let now = Now::system().unix_ms;
                        let mut held = 0usize;
                        let mut s = self.lock_sched();
                        for row in rows {
                            cursor = cursor.max(row.id);
                            if self.enabled(row.target) {
                                s.push(row, now);
                            } else {
                                held += 1;
                            }
                        }
                        drop(s);
                        if held > 0 && !held_warned {
                            held_warned = true;
                            tracing::warn!(held, "outbox holds records of push targets that are not enabled; they stay until the target is enabled again");
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "outbox: reading pending records failed")
                    }
                    Err(e) => tracing::error!(error = %e, "outbox: reader task failed"),
                }
            }
            // Outcomes the writer could not take yet go first; until they are queued nothing
            // new is sent (the writer is stalled: sending more would only pile up outcomes).
            if !unsent.is_empty() {
                match self.writer() {
                    Ok(w) => {
                        if let Err(back) = w.try_apply(std::mem::take(&mut unsent)) {
                            unsent = back;
                        }
                    }
                    Err(_) => unsent.clear(),
                }
            }
            // Send whatever may go now.
            let now = Now::system().unix_ms;
            while unsent.is_empty() {
                let Some(d) = self.lock_sched().poll_dispatch(now) else {
                    break;
                };
                let Some(ep) = self.endpoints.get(&d.target).cloned() else {
                    continue; // cannot happen: only enabled targets are pushed
                };
                let (id, target) = (d.id, d.target);
                let task = inflight.spawn(deliver(client.clone(), ep, d));
                tasks_of.insert(task.id(), (id, target));
            }
            let wake = self.lock_sched().next_wakeup();
            let sleep = async {
                match wake {
                    Some(at) => {
                        tokio::time::sleep(Duration::from_millis(
                            at.saturating_sub(Now::system().unix_ms),
                        ))
                        .await
                    }
                    None => std::future::pending().await,
                }
            };
            // New rows and the tick come before completions: a steady stream of answers
            // must not keep new records from being read.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.notify.notified() => dirty = true,
                _ = tick.tick() => {
                    dirty = true;
                    ticks += 1;
                    self.update_gauges(if ticks % 5 == 1 { Some(&reader) } else { None });
                    if ticks % 3600 == 1 && self.cfg.dead_retention_days > 0 {
                        let before_ms = Now::system()
                            .unix_ms
                            .saturating_sub(self.cfg.dead_retention_days * 86_400_000);
                        if let Ok(w) = self.writer() {
                            let _ = w.try_send(Command::PruneDead { before_ms });
                        }
                    }
                }
                Some(done) = inflight.join_next_with_id(), if !inflight.is_empty() => {
                    let mut outcomes = Vec::new();
                    let mut take = |r: Result<(tokio::task::Id, Outcome), tokio::task::JoinError>| {
                        match r {
                            Ok((task, o)) => {
                                tasks_of.remove(&task);
                                outcomes.push(o);
                            }
                            // A delivery task that panicked must not leave its lane in
                            // flight for ever: its record is retried.
                            Err(e) => {
                                if let Some((id, target)) = tasks_of.remove(&e.id()) {
                                    tracing::error!(id = id.0, error = %e, "delivery task failed");
                                    outcomes.push((
                                        Dispatch {
                                            id,
                                            target,
                                            idempotency_key: String::new(),
                                            payload: Bytes::new(),
                                            attempt: 0,
                                            enqueued_ms: 0,
                                            probe: false,
                                        },
                                        AttemptResult::Transient {
                                            reason: format!("internal error: {e}"),
                                            retry_after_ms: None,
                                        },
                                        Duration::ZERO,
                                    ));
                                }
                            }
                        }
                    };
                    take(done);
                    while let Some(more) = inflight.try_join_next_with_id() {
                        take(more);
                    }
                    let decisions = self.settle(outcomes);
                    unsent.extend(decisions);
                }
                _ = sleep => {}
            }
        }
        inflight.abort_all();
    }

    /// Feeds answers to the scheduler; returns its decisions for the writer.
    fn settle(&self, outcomes: Vec<Outcome>) -> Vec<Decision> {
        let now = Now::system().unix_ms;
        let mut decisions = Vec::with_capacity(outcomes.len());
        {
            let mut s = self.lock_sched();
            for (d, result, took) in outcomes {
                let t = d.target.as_str();
                self.metrics
                    .push_seconds
                    .with_label_values(&[t])
                    .observe(took.as_secs_f64());
                let rejected = matches!(result, AttemptResult::Rejected { .. });
                let Some(decision) = s.on_result(d.id, result, now) else {
                    continue;
                };
                match &decision {
                    Decision::Delivered { enqueued_ms, .. } => {
                        self.metrics
                            .deliveries
                            .with_label_values(&[t, "delivered"])
                            .inc();
                        self.metrics
                            .delivery_seconds
                            .with_label_values(&[t])
                            .observe(now.saturating_sub(*enqueued_ms) as f64 / 1000.0);
                    }
                    Decision::Retry {
                        reason, attempts, ..
                    } => {
                        self.metrics
                            .deliveries
                            .with_label_values(&[t, "retry"])
                            .inc();
                        self.metrics.retries.with_label_values(&[t]).inc();
                        tracing::debug!(target = t, id = d.id.0, attempts, reason = %reason, probe = d.probe, "push failed; will retry");
                    }
                    Decision::Dead { record, reason } => {
                        self.metrics
                            .deliveries
                            .with_label_values(&[t, "dead"])
                            .inc();
                        let why = if rejected {
                            "rejected"
                        } else if reason.starts_with("expired") {
                            "expired"
                        } else {
                            "exhausted"
                        };
                        self.metrics
                            .dead_lettered
                            .with_label_values(&[t, why])
                            .inc();
                        self.metrics.dead_letters.with_label_values(&[t]).inc();
                        tracing::warn!(target = t, id = record.id.0, key = %record.idempotency_key, reason = %reason, "record dead-lettered");
                    }
                }
                decisions.push(decision);
            }
        }
        decisions
    }

    fn update_gauges(&self, reader: Option<&Arc<Mutex<Connection>>>) {
        let now = Now::system().unix_ms;
        let s = self.lock_sched();
        for t in Target::ALL {
            let st = s.stats(t);
            let l = [t.as_str()];
            self.metrics
                .depth
                .with_label_values(&l)
                .set(st.depth as i64);
            self.metrics
                .bytes
                .with_label_values(&l)
                .set(st.bytes as i64);
            self.metrics.oldest_age_seconds.with_label_values(&l).set(
                st.oldest_enqueued_ms
                    .map(|e| now.saturating_sub(e) / 1000)
                    .unwrap_or(0) as i64,
            );
            self.metrics
                .target_down
                .with_label_values(&l)
                .set(st.down as i64);
        }
        drop(s);
        // The dead-letter gauge is recounted now and then: replays and the CLI change it
        // behind the daemon's back.
        if let Some(reader) = reader {
            let conn = reader.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(counts) = store::dead_counts(&conn) {
                for t in Target::ALL {
                    let n = counts
                        .iter()
                        .find(|(name, _)| name == t.as_str())
                        .map(|(_, n)| *n)
                        .unwrap_or(0);
                    self.metrics
                        .dead_letters
                        .with_label_values(&[t.as_str()])
                        .set(n as i64);
                }
            }
        }
    }
}

/// A read-only view for the API and the CLI (WAL readers never block the writer).
pub fn open_reader(db_path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(
        db_path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // The delivery loop reads back rows just written: map the file instead of a read(2)
    // per page, and keep the recent pages cached.
    conn.pragma_update(None, "mmap_size", 256i64 << 20)?;
    conn.pragma_update(None, "cache_size", -16_384i64)?;
    Ok(conn)
}

/// Summary of a store, for the API and the CLI.
pub fn stats(conn: &Connection, now_ms: u64) -> anyhow::Result<OutboxStats> {
    let (depth, oldest) = store::pending_summary(conn)?;
    let by_target: std::collections::BTreeMap<String, u64> =
        store::dead_counts(conn)?.into_iter().collect();
    Ok(OutboxStats {
        depth,
        oldest_age_ms: oldest.map(|o| now_ms.saturating_sub(o)).unwrap_or(0),
        dead: by_target.values().sum(),
        dead_by_target: by_target,
    })
}

/// Dead letters, for the API and the CLI.
pub fn dead_letters(
    conn: &Connection,
    target: Option<Target>,
    after: i64,
    limit: usize,
) -> anyhow::Result<Vec<DeadLetter>> {
    Ok(store::dead_list(conn, target, after, limit)?)
}

/// A finished attempt: what was sent, how it went, how long it took.
type Outcome = (Dispatch, AttemptResult, Duration);

async fn deliver(client: HttpClient, ep: Endpoint, d: Dispatch) -> Outcome {
    let started = Instant::now();
    let result = tokio::time::timeout(ep.timeout, attempt(&client, &ep, &d)).await;
    let took = started.elapsed();
    let result = match result {
        Ok(r) => r,
        Err(_) => AttemptResult::Transient {
            reason: format!("timeout after {} ms", ep.timeout.as_millis()),
            retry_after_ms: None,
        },
    };
    (d, result, took)
}

async fn attempt(client: &HttpClient, ep: &Endpoint, d: &Dispatch) -> AttemptResult {
    let mut req = hyper::Request::post(ep.uri.clone());
    if let Some(h) = req.headers_mut() {
        h.extend(ep.headers.clone());
        if let Some(name) = &ep.idempotency_header {
            if let Ok(v) = HeaderValue::from_str(&d.idempotency_key) {
                h.insert(name.clone(), v);
            }
        }
    }
    let req = match req.body(Full::new(d.payload.clone())) {
        Ok(r) => r,
        Err(e) => {
            return AttemptResult::Rejected {
                reason: format!("cannot build the request: {e}"),
            }
        }
    };
    let resp = match client.request(req).await {
        Ok(r) => r,
        Err(e) => {
            let mut reason = format!("transport: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                reason.push_str(&format!(": {s}"));
                src = s.source();
            }
            // A TLS or certificate failure also surfaces as a connect error, but it is a
            // configuration problem that retrying will not fix quickly: count it.
            let lower = reason.to_ascii_lowercase();
            if e.is_connect() && !lower.contains("certificate") && !lower.contains("tls") {
                return AttemptResult::Unreachable { reason };
            }
            return AttemptResult::Transient {
                reason,
                retry_after_ms: None,
            };
        }
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if (200..300).contains(&status) => {
            return AttemptResult::Transient {
                reason: format!("reading the answer: {e}"),
                retry_after_ms: None,
            }
        }
        Err(_) => Bytes::new(),
    };
    judge(status, retry_after.as_deref(), &body)
}
