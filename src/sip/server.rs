//! The shell around the SIP [`Endpoint`] core: shared by every transport task, it reads the
//! clock, takes the core's lock for the duration of one message, records metrics, publishes
//! registration events and queues write-behind persistence.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::clock::Now;
use crate::events::RegistrationChanged;
use crate::metrics::Metrics;
use crate::sip::endpoint::{Endpoint, Silence};
use crate::sip::guard::DropReason;
use crate::sip::location::{Changes, ConnectionId, Flow, Persist};
use crate::sip::registrar::AuthNote;
use crate::store::Store;

/// Coalesces binding changes between write-behind flushes: only the latest state of each
/// (AoR, contact) is written, so the queue is bounded by the number of bindings.
#[derive(Default)]
pub struct PersistQueue {
    pending: Mutex<HashMap<(String, String), Persist>>,
}

impl PersistQueue {
    pub fn push_all(&self, items: Vec<Persist>) {
        if items.is_empty() {
            return;
        }
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for item in items {
            let key = match &item {
                Persist::Upsert { aor, binding } => (aor.clone(), binding.contact.clone()),
                Persist::Delete { aor, contact } => (aor.clone(), contact.clone()),
            };
            p.insert(key, item);
        }
    }

    pub fn take(&self) -> Vec<Persist> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *p).into_values().collect()
    }

    pub fn len(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A SIP application beside the registrar (the recording server): it claims the requests that
/// are its own (by Request-URI or dialog) and answers them itself, under its own lock.
pub trait SipApplication: Send + Sync {
    fn claims(&self, req: &crate::sip::message::Request) -> bool;
    /// Whether the request belongs to one of the application's dialogs (ACK, BYE,
    /// re-INVITE): those are not counted by the flood guard, so a busy recording client is
    /// not banned for ending its own calls.
    fn in_dialog(&self, req: &crate::sip::message::Request) -> bool;
    /// The reply to send on the same flow, if any.
    fn handle(
        &self,
        req: &crate::sip::message::Request,
        flow: &Flow,
        now: Now,
    ) -> Option<(Vec<u8>, u16)>;
}

pub struct SipServer {
    endpoint: Mutex<Endpoint>,
    /// Set once at start-up when recording is on.
    app: std::sync::OnceLock<Arc<dyn SipApplication>>,
    /// A copy of the endpoint's parse limits, readable without the core's lock.
    limits: std::sync::RwLock<crate::sip::message::Limits>,
    /// UDP sockets by local address, so qualify probes leave from the listener the phone
    /// registered through (the only path its NAT lets back in).
    udp_sockets: Mutex<HashMap<SocketAddr, Arc<tokio::net::UdpSocket>>>,
    pub metrics: Arc<Metrics>,
    pub events: broadcast::Sender<RegistrationChanged>,
    pub persist: PersistQueue,
}

impl SipServer {
    pub fn new(endpoint: Endpoint, metrics: Arc<Metrics>) -> Arc<SipServer> {
        let (events, _) = broadcast::channel(4096);
        let server = Arc::new(SipServer {
            limits: std::sync::RwLock::new(endpoint.limits),
            endpoint: Mutex::new(endpoint),
            app: std::sync::OnceLock::new(),
            udp_sockets: Mutex::new(HashMap::new()),
            metrics,
            events,
            persist: PersistQueue::default(),
        });
        server.update_gauges();
        server
    }

    /// Runs `f` with the core locked. A poisoned lock is recovered: the core's invariants hold
    /// between calls, and a panic in one request must not take SIP down for everyone.
    pub fn with_endpoint<R>(&self, f: impl FnOnce(&mut Endpoint) -> R) -> R {
        let mut ep = self.endpoint.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut ep)
    }

    /// Handles one inbound message; returns the reply to send on the same flow, if any.
    pub fn handle(&self, bytes: &[u8], flow: &Flow) -> Option<(Vec<u8>, SocketAddr)> {
        let now = Now::system();
        // A bug that panics on some input must cost that one message, not the receive task
        // (and with it the listener). The core's lock is recovered on the next call.
        let limits = *self.limits.read().unwrap_or_else(|e| e.into_inner());
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Parsing needs no shared state, so it runs before the core's lock is taken and
            // receivers on several threads parse in parallel.
            let parsed = crate::sip::message::Message::parse(bytes, &limits);
            if let (Ok(crate::sip::message::Message::Request(req)), Some(app)) =
                (&parsed, self.app.get())
            {
                if app.claims(req) {
                    return Err(self.to_app(app.as_ref(), req, flow, now));
                }
            }
            Ok(self.with_endpoint(|ep| {
                let h = ep.handle_parsed(parsed, bytes, flow, now);
                // Read the gauges under the same lock rather than taking it again.
                let loc = ep.registrar.location();
                (h, loc.len(), loc.aor_count())
            }))
        }));
        let (h, bindings, aors) = match outcome {
            Ok(Ok(x)) => x,
            Ok(Err(app_reply)) => return app_reply,
            Err(_) => {
                self.metrics
                    .sip_dropped
                    .with_label_values(&["internal_error"])
                    .inc();
                tracing::error!(source = %flow.source, len = bytes.len(), "SIP core panicked on a message; dropped it");
                return None;
            }
        };
        let m = &self.metrics;
        match (h.silence, &h.method, h.status) {
            (Some(Silence::Guard(reason)), _, _) => {
                let label = match reason {
                    DropReason::Banned => "banned",
                    DropReason::Flood => "flood",
                    DropReason::Scanner => "scanner",
                };
                m.sip_dropped.with_label_values(&[label]).inc();
            }
            (Some(Silence::Unanswerable), _, _) => {
                m.sip_dropped.with_label_values(&["unparseable"]).inc()
            }
            (_, Some(method), Some(status)) if h.reply.is_some() => {
                m.count_request(method.as_str(), status)
            }
            _ => {}
        }
        if h.ip_banned {
            m.sip_guard_bans.with_label_values(&["ip"]).inc();
            tracing::warn!(source = %flow.source, "guard: source banned for flooding");
        }
        if let AuthNote::Failed(user, reason) = &h.auth {
            m.sip_auth_failures.inc();
            // A stable line for fail2ban: "SIP auth failure ... from ip <HOST>".
            tracing::warn!(user = %user, reason = ?reason, "SIP auth failure (REGISTER) from ip {}", flow.source.ip());
        }
        if h.user_banned {
            m.sip_guard_bans.with_label_values(&["user"]).inc();
            tracing::warn!(source = %flow.source, "guard: user banned from this source after repeated auth failures");
        }
        if !h.changes.is_empty() {
            self.record_changes(h.changes);
            self.metrics.sip_bindings_active.set(bindings as i64);
            self.metrics.sip_aors_registered.set(aors as i64);
        }
        h.reply
    }

    /// Installs the application that answers its own requests (once; later calls are ignored).
    pub fn set_application(&self, app: Arc<dyn SipApplication>) {
        let _ = self.app.set(app);
    }

    /// The UDP socket of a listener, for requests and retransmissions nobody asked for.
    pub fn udp_socket(&self, local: SocketAddr) -> Option<Arc<tokio::net::UdpSocket>> {
        self.udp_sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&local)
            .cloned()
    }

    /// A request for the application: the flood guard still applies, then it answers.
    fn to_app(
        &self,
        app: &dyn SipApplication,
        req: &crate::sip::message::Request,
        flow: &Flow,
        now: Now,
    ) -> Option<(Vec<u8>, SocketAddr)> {
        let ua = req.headers.get(&crate::sip::message::HeaderName::UserAgent);
        let verdict =
            self.with_endpoint(|ep| ep.guard.check_request(flow.source.ip(), ua, now.instant));
        if let crate::sip::guard::Verdict::Drop(reason) = verdict {
            let label = match reason {
                DropReason::Banned => "banned",
                DropReason::Flood => "flood",
                DropReason::Scanner => "scanner",
            };
            self.metrics.sip_dropped.with_label_values(&[label]).inc();
            return None;
        }
        let (bytes, status) = app.handle(req, flow, now)?;
        self.metrics.count_request(req.method.as_str(), status);
        Some((bytes, flow.source))
    }

    /// Changes the parse limits (reload); the endpoint's own copy is set by the caller.
    pub fn set_limits(&self, limits: crate::sip::message::Limits) {
        *self.limits.write().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    /// Whether a binding lives on this stream connection.
    pub fn connection_in_use(&self, conn: ConnectionId) -> bool {
        self.with_endpoint(|ep| ep.registrar.location().connection_in_use(conn))
    }

    /// A stream connection ended: drop its bindings (RFC 5626 flow failure).
    pub fn connection_closed(&self, conn: ConnectionId) {
        let changes = self.with_endpoint(|ep| ep.registrar.location_mut().connection_closed(conn));
        self.publish(changes);
    }

    /// Records metrics and events for a batch of binding changes, queues their persistence
    /// and refreshes the binding gauges.
    pub fn publish(&self, changes: Changes) {
        if changes.is_empty() {
            return;
        }
        self.record_changes(changes);
        self.update_gauges();
    }

    /// Metrics, events and write-behind for a batch of changes (gauges are the caller's).
    fn record_changes(&self, changes: Changes) {
        for e in changes.events {
            self.metrics
                .sip_registration_changes
                .with_label_values(&[e.change.as_str()])
                .inc();
            tracing::debug!(aor = %e.aor, contact = %e.contact, change = e.change.as_str(), "registration changed");
            // No subscriber is fine: nothing downstream of the registrar is running yet.
            let _ = self.events.send(e);
        }
        self.persist.push_all(changes.persist);
    }

    pub fn update_gauges(&self) {
        let (bindings, aors) = self.with_endpoint(|ep| {
            let loc = ep.registrar.location();
            (loc.len(), loc.aor_count())
        });
        self.metrics.sip_bindings_active.set(bindings as i64);
        self.metrics.sip_aors_registered.set(aors as i64);
    }

    /// Once a second: expire bindings, forget stale guard entries, refresh ban gauges, and
    /// qualify UDP contacts.
    pub async fn run_sweeper(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Now::system();
            let (changes, ips, users) = self.with_endpoint(|ep| {
                ep.guard.sweep(now.instant);
                ep.registrar.verifier_mut().sweep(now.unix_secs());
                let c = ep.registrar.location_mut().sweep(now.unix_secs());
                (
                    c,
                    ep.guard.banned_ips(now.instant),
                    ep.guard.banned_users(now.instant),
                )
            });
            self.metrics
                .sip_guard_banned
                .with_label_values(&["ip"])
                .set(ips as i64);
            self.metrics
                .sip_guard_banned
                .with_label_values(&["user"])
                .set(users as i64);
            self.publish(changes);
            self.update_gauges();
            self.qualify_tick(now.unix_secs()).await;
        }
    }

    pub fn add_udp_socket(&self, sock: Arc<tokio::net::UdpSocket>) {
        if let Ok(local) = sock.local_addr() {
            self.udp_sockets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(local, sock);
        }
    }

    /// Sends due OPTIONS probes and removes bindings that stopped answering.
    async fn qualify_tick(&self, now_unix: u64) {
        let (probes, changes) = self.with_endpoint(|ep| {
            if !ep.qualify.enabled() {
                return (Vec::new(), Changes::default());
            }
            let (probes, dead) = ep.qualify.poll(ep.registrar.location(), now_unix);
            let mut changes = Changes::default();
            for (aor, contact) in dead {
                let c = ep.registrar.location_mut().remove_contact(
                    &aor,
                    &contact,
                    crate::events::RegistrationChange::QualifyFailed,
                );
                changes.append(c);
            }
            (probes, changes)
        });
        self.publish(changes);
        for p in probes {
            let sock = self
                .udp_sockets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&p.local)
                .cloned();
            if let Some(sock) = sock {
                if let Err(e) = sock.send_to(&p.bytes, p.to).await {
                    tracing::debug!(error = %e, to = %p.to, "qualify probe not sent");
                }
            }
        }
    }

    /// Write-behind: every `interval`, commits the coalesced changes in one transaction. Once
    /// `shutdown` is cancelled (which the daemon does only after every producer has stopped)
    /// it flushes what is left, retrying a few times, so a graceful stop loses nothing.
    pub fn run_persister(
        self: Arc<Self>,
        mut store: Store,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        lower_thread_priority();
        let mut final_attempts = 0;
        loop {
            let stopping = shutdown.is_cancelled();
            let batch = self.persist.take();
            if !batch.is_empty() {
                let rows = batch.len();
                match store.apply_bindings(&batch) {
                    Ok(()) => {
                        self.metrics.store_persist_batches.inc();
                        self.metrics.store_persist_rows.inc_by(rows as u64);
                    }
                    Err(e) => {
                        self.metrics.store_persist_errors.inc();
                        tracing::error!(error = %e, rows, "persisting bindings failed; will retry");
                        // Put them back unless something newer arrived meanwhile.
                        let newer = self.persist.take();
                        self.persist.push_all(batch);
                        self.persist.push_all(newer);
                    }
                }
            }
            if stopping {
                if self.persist.is_empty() {
                    return;
                }
                final_attempts += 1;
                if final_attempts >= 5 {
                    tracing::error!(
                        rows = self.persist.len(),
                        "could not persist the last binding changes before exit"
                    );
                    return;
                }
            }
            std::thread::sleep(interval);
        }
    }
}

/// Write-behind must never starve the SIP path: a large SQLite batch sharing a CPU with the
/// receive loop would otherwise delay replies long enough for UDP phones to retransmit (and
/// for the socket buffer to overflow). On Linux, nice is per thread, so this affects only the
/// calling (persister) thread.
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority takes plain integers and only changes this thread's nice value.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}
