//! Wiring: builds every component from the config, binds listeners, spawns tasks, talks to
//! systemd, reloads on SIGHUP and shuts down gracefully on SIGTERM/SIGINT.
//!
//! Start-up order matters: store → credentials → bindings restored → listeners bound →
//! `listeners.json` written → ready (HTTP `/readyz` and sd_notify READY=1). Shutdown reverses
//! it: not ready → stop accepting → flush write-behind state → exit.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::agents::service::{load_or_create_key, AgentEventSink, AgentsService};
use crate::api::mgmt::MgmtState;
use crate::api::sign::{ApiAccount, Authenticator, SignConfig};
use crate::api::stream::{Hub, StreamState};
use crate::api::{self, ApiState};
use crate::cdr::service::CdrService;
use crate::clock::Now;
use crate::config::{Config, LogFormat};
use crate::grid::forward::GridForwarder;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::sip::credentials::{Credential, CredentialTable};
use crate::sip::digest::{DigestConfig, NonceKey, Verifier};
use crate::sip::endpoint::Endpoint;
use crate::sip::guard::{Guard, GuardConfig};
use crate::sip::message::Limits;
use crate::sip::qualify::QualifyConfig;
use crate::sip::registrar::{Registrar, RegistrarConfig};
use crate::sip::server::SipServer;
use crate::sip::transport;
use crate::sip::transport::listener::{self, Framing, StreamContext};
use crate::store::{Durability, Store};
use crate::switch::adapter::SwitchAdapter;
use crate::switch::calls::ChannelTracker;
use crate::switch::client::{EslClient, EslClientConfig};
use crate::switch::leg::LegVariables;

/// Lets SIGHUP change the log filter of the running subscriber.
pub type LogHandle = reload::Handle<EnvFilter, Registry>;

/// Installs the global tracing subscriber (text or JSON) and returns the filter's reload handle.
pub fn init_logging(cfg: &Config) -> LogHandle {
    let filter = EnvFilter::try_new(&cfg.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    match cfg.log.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init(),
    }
    handle
}

/// Addresses actually bound, written to `{state}/listeners.json` so tests and tooling can find
/// ephemeral ports.
#[derive(Debug, Default, Serialize)]
pub struct BoundAddrs {
    pub http: Option<SocketAddr>,
    pub sip: SipAddrs,
}

#[derive(Debug, Default, Serialize)]
pub struct SipAddrs {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub ws: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub wss: Vec<SocketAddr>,
}

fn registrar_config(cfg: &Config) -> RegistrarConfig {
    RegistrarConfig {
        domains: cfg
            .sip
            .domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect::<HashSet<_>>(),
        min_expires: cfg.sip.min_expires_secs,
        max_expires: cfg.sip.max_expires_secs,
        default_expires: cfg.sip.default_expires_secs,
        max_contacts: cfg.sip.max_contacts_per_aor,
        md5_only_user_agents: cfg
            .sip
            .auth
            .md5_only_user_agents
            .iter()
            .map(|u| u.to_ascii_lowercase())
            .filter(|u| !u.is_empty())
            .collect(),
    }
}

fn digest_config(cfg: &Config) -> anyhow::Result<DigestConfig> {
    Ok(DigestConfig {
        realm: cfg.sip.realm.clone(),
        algorithms: cfg.digest_algorithms()?,
        nonce_lifetime_secs: cfg.sip.auth.nonce_lifetime_secs,
        max_tracked_nonces: cfg.sip.auth.max_tracked_nonces,
        require_qop: cfg.sip.auth.require_qop,
    })
}

fn guard_config(cfg: &Config) -> GuardConfig {
    let g = &cfg.sip.guard;
    GuardConfig {
        enabled: g.enabled,
        window: Duration::from_secs(g.window_secs),
        max_requests: g.max_requests,
        ban: Duration::from_secs(g.ban_secs),
        auth_failure_limit: g.auth_failure_limit,
        auth_failure_window: Duration::from_secs(g.auth_failure_window_secs),
        auth_ban: Duration::from_secs(g.auth_ban_secs),
        allow: g.allow.clone(),
        scanner_user_agents: g.scanner_user_agents.clone(),
        max_tracked: g.max_tracked,
    }
}

fn qualify_config(cfg: &Config) -> QualifyConfig {
    QualifyConfig {
        interval_secs: cfg.sip.qualify_interval_secs,
        timeout_secs: cfg.sip.qualify_timeout_secs,
        max_failures: cfg.sip.qualify_max_failures,
        max_outstanding: 10_000,
    }
}

fn limits(cfg: &Config) -> Limits {
    Limits {
        max_message_bytes: cfg.sip.max_message_bytes,
        max_headers: cfg.sip.max_headers,
        ..Limits::default()
    }
}

/// Hashes the config's `[[extensions]]` into the store and returns the store's credential table.
fn seed_and_load_credentials(
    store: &mut Store,
    cfg: &Config,
    now_unix: u64,
) -> anyhow::Result<CredentialTable> {
    let realm = &cfg.sip.realm;
    let mut seeds: Vec<(String, Credential)> = Vec::with_capacity(cfg.extensions.len());
    for (i, e) in cfg.extensions.iter().enumerate() {
        let enabled = e.enabled.unwrap_or(true);
        let mut c = match &e.password {
            Some(pw) => Credential::from_password(&e.user, realm, pw),
            // Config validation already checked the hex; this only re-states it.
            None => Credential::from_hex(
                e.ha1_md5.as_deref(),
                e.ha1_sha256.as_deref(),
                e.ha1_sha512_256.as_deref(),
                enabled,
            )
            .with_context(|| format!("extensions[{i}]"))?,
        };
        c.enabled = enabled;
        seeds.push((e.user.clone(), c));
    }
    store
        .seed_extensions(realm, &seeds, now_unix)
        .context("seeding extensions")?;
    let table = store.load_credentials(realm)?;
    // A phone answering a challenge for an algorithm its extension has no HA1 for fails like
    // a wrong password (and gets banned for it): say so at load time, not in a ticket later.
    for alg in cfg.digest_algorithms()? {
        let missing = table.values().filter(|c| c.ha1_hex(alg).is_none()).count();
        if missing > 0 {
            tracing::warn!(
                algorithm = alg.token(),
                extensions = missing,
                "extensions have no HA1 for an offered algorithm; phones choosing it cannot register (give them a password, or remove the algorithm)"
            );
        }
    }
    Ok(table)
}

/// Start-up parses the whole config and seeds every extension, leaving the heap full of freed
/// chunks between long-lived ones; glibc keeps those pages resident (at 100,000 extensions,
/// over 100 MB). `malloc_trim` hands them back to the kernel once, after start-up.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas and madvises free pages away; it has
    // no preconditions and does not touch live allocations.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The nonce key persists across restarts so outstanding challenges stay valid.
fn nonce_key(store: &Store) -> anyhow::Result<NonceKey> {
    if let Some(bytes) = store.meta_get("nonce_key")? {
        if let Ok(arr) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(NonceKey::from_bytes(arr));
        }
        tracing::warn!("stored nonce key has the wrong length; generating a new one");
    }
    let mut arr = [0u8; 32];
    rand::Rng::fill(&mut rand::thread_rng(), &mut arr);
    store.meta_set("nonce_key", &arr)?;
    Ok(NonceKey::from_bytes(arr))
}

fn write_listeners(dir: &Path, bound: &BoundAddrs) -> anyhow::Result<()> {
    let path = dir.join("listeners.json");
    let tmp = dir.join("listeners.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(bound)?)?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn notify(state: sd_notify::NotifyState<'_>) {
    // Outside systemd NOTIFY_SOCKET is unset and this is a no-op.
    if let Err(e) = sd_notify::notify(false, &[state]) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Runs the daemon until SIGTERM/SIGINT. `config_path` is re-read on SIGHUP.
pub async fn run(
    mut cfg: Config,
    config_path: Option<PathBuf>,
    log: LogHandle,
) -> anyhow::Result<()> {
    let now = Now::system();
    std::fs::create_dir_all(&cfg.state.dir)
        .with_context(|| format!("state.dir: cannot create {}", cfg.state.dir.display()))?;
    let mut store = Store::open(&cfg.db_path(), Durability::Normal).context("opening the store")?;
    let credentials = Arc::new(seed_and_load_credentials(
        &mut store,
        &cfg,
        now.unix_secs(),
    )?);
    // The plaintext seeds have served their purpose; don't keep them (or their memory) around.
    cfg.extensions = Vec::new();
    release_freed_memory();
    let key = nonce_key(&store)?;
    let restored = store.load_bindings(now.unix_secs())?;

    let metrics = Arc::new(Metrics::new());
    let verifier = Verifier::new(digest_config(&cfg)?, key);
    let mut registrar = Registrar::new(registrar_config(&cfg), verifier, Arc::clone(&credentials));
    let mut kept = 0usize;
    for (aor, binding) in restored {
        if credentials.get(&aor).is_some_and(|c| c.enabled)
            && registrar
                .location_mut()
                .restore(aor, binding, now.unix_secs())
        {
            kept += 1;
        }
    }
    tracing::info!(
        extensions = credentials.len(),
        bindings_restored = kept,
        "store loaded"
    );
    // The registrar now holds the only reference, so directory updates change the table in
    // place instead of copying it.
    drop(credentials);
    let mut endpoint = Endpoint::new(Guard::new(guard_config(&cfg)), registrar, limits(&cfg));
    endpoint.qualify.set_config(qualify_config(&cfg));
    let server = SipServer::new(endpoint, Arc::clone(&metrics));
    let directory_key = load_or_create_key(&cfg.directory_key_path())?;
    let agents = AgentsService::open(
        &cfg,
        directory_key,
        Arc::clone(&server),
        Arc::clone(&metrics),
        now,
    )
    .context("opening the directory")?;
    // A project topic must hold one project-wide change (every seat at once, twice: e.g.
    // setWorkStatusByProjectCode) for a supervisor reading concurrently.
    let project_topic_capacity = cfg
        .management
        .stream_queue
        .max(2 * cfg.directory.max_seats as usize + 16);
    let hub = Arc::new(Hub::new(project_topic_capacity, Arc::clone(&metrics)));
    agents.add_sink(Arc::clone(&hub) as Arc<dyn AgentEventSink>);
    let mgmt_state = Arc::new(MgmtState {
        agents: Arc::clone(&agents),
        auth: std::sync::Mutex::new(authenticator(&cfg)?),
        metrics: Arc::clone(&metrics),
        hub: Arc::clone(&hub),
        max_body_bytes: cfg.management.max_body_bytes,
    });
    let shutdown = CancellationToken::new();
    let stream_state = Arc::new(StreamState::new(
        Arc::clone(&mgmt_state),
        cfg.management.max_stream_connections,
        cfg.management.stream_queue,
        shutdown.clone(),
    ));

    let tasks = TaskTracker::new();
    let mut bound = BoundAddrs::default();
    let cdr = CdrService::open(&cfg, Arc::clone(&metrics), Now::system())
        .context("opening the CDR store")?;
    let outbox = Outbox::open(&cfg.db_path(), &cfg.outbox, &cfg.grid, &metrics)
        .context("opening the outbox")?;
    let forwarder = GridForwarder::new(
        Arc::clone(&outbox),
        &cfg.grid,
        cdr.time_format().clone(),
        &cfg.db_path(),
        Now::system(),
    )
    .context("grid forwarding")?;
    cdr.set_forwarder(Arc::clone(&forwarder) as Arc<dyn crate::cdr::service::RecordForwarder>);
    agents.add_sink(Arc::clone(&forwarder) as Arc<dyn AgentEventSink>);

    // The grid platform's routes, and the board of queued calls the switch adapter feeds.
    let queue_board = Arc::new(crate::grid::queue_board::SharedQueueBoard::new(
        cfg.grid_api.max_queued_calls,
        metrics.registry(),
    ));
    // The recording server: a SIP application beside the registrar, its media threads and
    // transcoding pool, and the index the grid downloads from.
    let recording = if cfg.recording.enabled {
        Some(start_recording(&cfg, &server, &metrics)?)
    } else {
        None
    };
    let recording_index: Arc<dyn api::grid::RecordingIndex> = match &recording {
        Some(r) => Arc::clone(&r.index) as Arc<dyn api::grid::RecordingIndex>,
        None => Arc::new(api::grid::NoRecordings),
    };

    let grid_state = if cfg.grid_api.enabled {
        // One enterprise id for pushes and queries unless [grid_api] names another.
        let mut grid_api = cfg.grid_api.clone();
        if grid_api.ent_id.is_empty() {
            grid_api.ent_id = cfg.grid.ent_id.clone();
        }
        Some(
            api::grid::GridState::open(
                &grid_api,
                cfg.cdr.mapping.queues.clone(),
                &cfg.db_path(),
                Arc::clone(&agents),
                Arc::clone(&queue_board),
                recording_index,
                Arc::clone(&metrics),
            )
            .context("grid_api")?,
        )
    } else {
        None
    };

    // The campaign runtime: its tables, gateways and tasks; it runs once ESL is up.
    let dialer = crate::dialer::service::DialerService::open(
        &cfg.db_path(),
        cfg.dialer.clone(),
        cfg.presence.acw_secs * 1000,
        Arc::clone(&agents),
        Arc::clone(&hub),
        &metrics,
        Now::system(),
    )
    .context("opening the dialer")?;

    // HTTP first, so /healthz answers while SIP comes up.
    let api_state = Arc::new(ApiState {
        metrics: Arc::clone(&metrics),
        ready: Default::default(),
    });
    let http = TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("http.listen: cannot bind {}", cfg.http.listen))?;
    bound.http = Some(http.local_addr()?);
    {
        let router = api::router(
            Arc::clone(&api_state),
            api::Surfaces {
                mgmt: mgmt_state.clone(),
                stream: Arc::clone(&stream_state),
                cdr: Arc::new(api::cdr::CdrReceiverState {
                    service: Arc::clone(&cdr),
                    metrics: Arc::clone(&metrics),
                    allow: cfg.cdr.allow.clone(),
                    credentials: cfg.cdr.credentials.clone(),
                    max_body_bytes: cfg.cdr.max_body_bytes,
                }),
                cdr_path: cfg.cdr.receiver_path.clone(),
                outbox: Arc::new(api::outbox::OutboxAdminState {
                    mgmt: mgmt_state.clone(),
                    outbox: Arc::clone(&outbox),
                }),
                grid: grid_state,
                campaign: Arc::new(api::campaign::CampaignState {
                    mgmt: mgmt_state.clone(),
                    dialer: Arc::clone(&dialer),
                }),
                recording: match &recording {
                    Some(_) => Some(Arc::new(api::recording::RecordingApiState {
                        mgmt: mgmt_state.clone(),
                        store: std::sync::Mutex::new(
                            crate::recording::RecordingStore::open(&cfg.db_path())
                                .context("opening the recording index")?,
                        ),
                        db_path: cfg.db_path(),
                    })),
                    None => None,
                },
            },
        );
        let token = shutdown.clone();
        let max_http = cfg.http.max_connections;
        let http_idle = Duration::from_secs(cfg.http.idle_timeout_secs);
        tasks.spawn(async move {
            let serve = axum::serve(
                api::listener::LimitedListener::new(http, max_http, http_idle),
                router.into_make_service_with_connect_info::<api::listener::Peer>(),
            )
            .with_graceful_shutdown(async move { token.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "http server failed");
            }
        });
    }

    // SIP listeners.
    let workers = worker_threads();
    for addr in &cfg.sip.udp {
        let sock = Arc::new(
            transport::udp::bind(*addr, cfg.sip.udp_buffer_bytes)
                .with_context(|| format!("sip.udp: cannot bind {addr}"))?,
        );
        bound.sip.udp.push(sock.local_addr()?);
        server.add_udp_socket(Arc::clone(&sock));
        // Several receivers per socket let a multi-threaded runtime spread datagrams.
        for _ in 0..workers {
            tasks.spawn(transport::udp::serve(
                Arc::clone(&sock),
                Arc::clone(&server),
                cfg.sip.max_message_bytes,
                shutdown.clone(),
            ));
        }
    }
    let ctx = StreamContext {
        server: Arc::clone(&server),
        limits: limits(&cfg),
        connections: Arc::new(Semaphore::new(cfg.sip.max_connections)),
        per_ip: Default::default(),
        max_per_ip: cfg.sip.max_connections_per_ip,
        idle_timeout: Duration::from_secs(cfg.sip.idle_timeout_secs),
        handshake_timeout: Duration::from_secs(cfg.sip.handshake_timeout_secs),
        shutdown: shutdown.clone(),
    };
    for addr in &cfg.sip.tcp {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("sip.tcp: cannot bind {addr}"))?;
        bound.sip.tcp.push(l.local_addr()?);
        tasks.spawn(listener::serve(
            l,
            None,
            Framing::ContentLength,
            ctx.clone(),
        ));
    }
    for addr in &cfg.sip.ws {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("sip.ws: cannot bind {addr}"))?;
        bound.sip.ws.push(l.local_addr()?);
        tasks.spawn(listener::serve(l, None, Framing::WebSocket, ctx.clone()));
    }
    if cfg.tls_enabled() {
        let (cert, key) = (cfg.sip.tls_cert.as_deref(), cfg.sip.tls_key.as_deref());
        let acceptor =
            transport::tls::acceptor(cert.unwrap_or(Path::new("")), key.unwrap_or(Path::new("")))?;
        for addr in &cfg.sip.tls {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("sip.tls: cannot bind {addr}"))?;
            bound.sip.tls.push(l.local_addr()?);
            tasks.spawn(listener::serve(
                l,
                Some(acceptor.clone()),
                Framing::ContentLength,
                ctx.clone(),
            ));
        }
        for addr in &cfg.sip.wss {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("sip.wss: cannot bind {addr}"))?;
            bound.sip.wss.push(l.local_addr()?);
            tasks.spawn(listener::serve(
                l,
                Some(acceptor.clone()),
                Framing::WebSocket,
                ctx.clone(),
            ));
        }
    }

    tasks.spawn(Arc::clone(&server).run_sweeper(shutdown.clone()));
    tasks.spawn(Arc::clone(&agents).run_registrations(shutdown.clone()));
    tasks.spawn(Arc::clone(&agents).run_timers(shutdown.clone()));
    tasks.spawn(Arc::clone(&cdr).run(shutdown.clone()));
    if let Some(r) = &recording {
        tasks.spawn(Arc::clone(&r.service).run(Arc::clone(&server), shutdown.clone()));
        tasks.spawn(link_recordings(
            r.service.subscribe(),
            Arc::clone(&cdr),
            shutdown.clone(),
        ));
        tasks.spawn(run_retention(
            cfg.db_path(),
            crate::recording::service::recordings_dir(&cfg.state.dir),
            cfg.recording.retention_days,
            shutdown.clone(),
        ));
    }
    tasks.spawn(Arc::clone(&cdr).run_sweeper(shutdown.clone()));
    tasks.spawn(Arc::clone(&outbox).run(shutdown.clone()));
    tasks.spawn(Arc::clone(&forwarder).run(
        Arc::clone(&agents),
        cfg.grid.sync_secs,
        shutdown.clone(),
    ));
    let (dialer_tx, dialer_rx) = tokio::sync::mpsc::channel(cfg.dialer.event_queue);
    if cfg.esl.enabled {
        let (feed_tx, feed_rx) = tokio::sync::mpsc::channel(cfg.esl.queue);
        let (esl, esl_task) = EslClient::spawn(
            esl_client_config(&cfg)?,
            feed_tx,
            Arc::clone(&metrics),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            let _ = esl_task.await;
        });
        let adapter = SwitchAdapter {
            agents: Arc::clone(&agents),
            cdr: Arc::clone(&cdr),
            sip: Arc::clone(&server),
            metrics: Arc::clone(&metrics),
            tracker: ChannelTracker::new(100_000, &LegVariables::default().task_code),
            queue_board: Arc::clone(&queue_board),
            dialer: Some((Arc::clone(&dialer), dialer_tx)),
        };
        tasks.spawn(adapter.run(feed_rx, shutdown.clone()));
        tasks.spawn(Arc::clone(&dialer).run(Some(esl), dialer_rx, shutdown.clone()));
    } else {
        // No softswitch: tasks can be set up and expire, nothing is dialled.
        drop(dialer_tx);
        tasks.spawn(Arc::clone(&dialer).run(None, dialer_rx, shutdown.clone()));
    }
    // Presence is flushed by its own persister after the other tasks stop (see below).
    let presence_stop = CancellationToken::new();
    let presence_persister = tokio::spawn(Arc::clone(&agents).run_persister(presence_stop.clone()));
    // The persister has its own stop signal, given only after every task that can still
    // change bindings (and answer 200 for it) has finished.
    let persist_stop = CancellationToken::new();
    let persister = {
        let server = Arc::clone(&server);
        let token = persist_stop.clone();
        let interval = Duration::from_millis(cfg.sip.persist_interval_ms);
        std::thread::Builder::new()
            .name("gridedge-persist".into())
            .spawn(move || server.run_persister(store, interval, token))?
    };

    let signals = Signals::install().context("installing signal handlers")?;
    write_listeners(&cfg.state.dir, &bound)?;
    api_state.ready.store(true, Ordering::Release);
    metrics.ready.set(1);
    tracing::info!(listeners = %serde_json::to_string(&bound).unwrap_or_default(), "gridedge ready");
    notify(sd_notify::NotifyState::Ready);
    tasks.spawn(watchdog(Arc::clone(&server), shutdown.clone()));

    wait_for_signals(
        signals,
        &mut cfg,
        config_path.as_deref(),
        &server,
        &Reloadable {
            agents: &agents,
            mgmt: &mgmt_state,
        },
        &log,
    )
    .await;

    tracing::info!("shutting down");
    notify(sd_notify::NotifyState::Stopping);
    api_state.ready.store(false, Ordering::Release);
    metrics.ready.set(0);
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(10), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within 10 s");
    }
    // Event-stream sessions were told to stop with everything else; a command one of them
    // is carrying out must land before the last presence flush.
    stream_state.sessions.close();
    if tokio::time::timeout(Duration::from_secs(5), stream_state.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!("some event-stream sessions did not stop within 5 s");
    }
    // Every producer has stopped: let the outbox writer commit what it holds.
    {
        let outbox = Arc::clone(&outbox);
        let _ = tokio::task::spawn_blocking(move || outbox.close()).await;
    }
    // Only now can nothing produce binding or presence changes: let the persisters flush.
    presence_stop.cancel();
    let _ = presence_persister.await;
    persist_stop.cancel();
    tokio::task::spawn_blocking(move || persister.join())
        .await
        .ok()
        .and_then(Result::ok)
        .context("write-behind persister panicked")?;
    tracing::info!("stopped");
    Ok(())
}

fn worker_threads() -> usize {
    std::env::var("GRIDEDGE_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// Builds the Tokio runtime with `GRIDEDGE_WORKER_THREADS` workers (default: one per CPU).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .thread_name("gridedge-worker")
        .enable_all()
        .build()
}

/// Pings the systemd watchdog only while the SIP core's lock can be taken: a wedged core stops
/// the pings and systemd restarts us.
async fn watchdog(server: Arc<SipServer>, shutdown: CancellationToken) {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = Duration::from_micros(usec / 2);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let s = Arc::clone(&server);
        let alive = tokio::time::timeout(
            period,
            tokio::task::spawn_blocking(move || s.with_endpoint(|_| ())),
        )
        .await;
        if matches!(alive, Ok(Ok(()))) {
            notify(sd_notify::NotifyState::Watchdog);
        } else {
            tracing::error!("SIP core unresponsive; withholding watchdog ping");
        }
    }
}

/// The signals the daemon answers, installed before it reports ready so that a SIGHUP or
/// SIGTERM arriving right after READY=1 is handled, not fatal.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Components outside the SIP core that take part in a reload.
struct Reloadable<'a> {
    agents: &'a Arc<AgentsService>,
    mgmt: &'a Arc<MgmtState>,
}

fn authenticator(cfg: &Config) -> anyhow::Result<Authenticator> {
    Ok(Authenticator::new(api_accounts(cfg)?, sign_config(cfg)))
}

fn api_accounts(cfg: &Config) -> anyhow::Result<Vec<ApiAccount>> {
    cfg.management
        .accounts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            ApiAccount::new(a.account.clone(), a.secret.as_str())
                .map_err(|e| anyhow::anyhow!("management.accounts[{i}]: {e}"))
        })
        .collect()
}

fn sign_config(cfg: &Config) -> SignConfig {
    SignConfig {
        window_ms: cfg.management.timestamp_window_secs * 1000,
        allow: cfg.management.allow.clone(),
        max_replay_entries: cfg.management.max_replay_entries,
    }
}

async fn wait_for_signals(
    signals: Signals,
    cfg: &mut Config,
    path: Option<&Path>,
    server: &Arc<SipServer>,
    others: &Reloadable<'_>,
    log: &LogHandle,
) {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                notify(sd_notify::NotifyState::Reloading);
                match reload(cfg, path, server, others, log).await {
                    Ok(()) => tracing::info!("configuration reloaded"),
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "reload refused; keeping the running configuration"),
                }
                notify(sd_notify::NotifyState::Ready);
            }
        }
    }
}

/// The ESL client's settings; the password comes from `esl.password_file` when set.
fn esl_client_config(cfg: &Config) -> anyhow::Result<EslClientConfig> {
    let e = &cfg.esl;
    let password = match &e.password_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("esl.password_file: cannot read {}", path.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
        None => e.password.clone(),
    };
    let mut c = EslClientConfig::new(e.address.clone(), password);
    c.reconnect_min = Duration::from_millis(e.reconnect_min_ms);
    c.reconnect_max = Duration::from_millis(e.reconnect_max_ms);
    c.connect_timeout = Duration::from_millis(e.connect_timeout_ms);
    c.api_timeout = Duration::from_millis(e.api_timeout_ms);
    c.feed_capacity = e.queue;
    c.limits.max_body_bytes = e.max_frame_bytes;
    // Refuse at start-up what the client would only refuse later, on its own task.
    c.validate().map_err(|err| anyhow::anyhow!("esl: {err}"))?;
    Ok(c)
}

/// Settings bound at start-up (sockets, files, buffers, the persister's pace) cannot change
/// under a running daemon: the running values are kept, with a warning naming each one, so
/// later reloads keep comparing against what is actually in force.
struct RecordingParts {
    service: Arc<crate::recording::service::RecordingService>,
    index: Arc<crate::recording::StoredRecordings>,
}

/// Opens the key, the recording server and the download index.
fn start_recording(
    cfg: &Config,
    server: &Arc<SipServer>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<RecordingParts> {
    let key_path = cfg
        .recording
        .key_file
        .clone()
        .unwrap_or_else(|| cfg.state.dir.join("recording.key"));
    let keyring = Arc::new(
        crate::recording::Keyring::load_or_create(&key_path)
            .with_context(|| format!("recording.key_file {}", key_path.display()))?,
    );
    // Which side a plain INVITE's audio goes to: a sender that is one of our extensions is
    // the agent. Weak: the SIP server holds the service, the service must not hold it back.
    let weak = Arc::downgrade(server);
    let is_agent = Box::new(move |user: &str| {
        weak.upgrade()
            .is_some_and(|s| s.with_endpoint(|ep| ep.registrar.credentials().contains_key(user)))
    });
    let service = crate::recording::service::RecordingService::open(
        cfg.recording.clone(),
        &cfg.state.dir,
        &cfg.db_path(),
        Arc::clone(&keyring),
        metrics.registry(),
        is_agent,
    )
    .context("starting the recording server")?;
    server.set_application(Arc::clone(&service) as Arc<dyn crate::sip::server::SipApplication>);
    let formats = cfg
        .recording
        .formats
        .iter()
        .map(|f| crate::recording::Format::parse(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("recording.formats: {e}"))?;
    let index = Arc::new(
        crate::recording::StoredRecordings::open(
            &cfg.db_path(),
            crate::recording::service::recordings_dir(&cfg.state.dir),
            keyring,
            formats,
        )
        .context("opening the recording index")?,
    );
    tracing::info!(
        uris = ?cfg.recording.uris,
        media_ip = %cfg.recording.media_ip,
        ports = %format!("{}-{}", cfg.recording.rtp_port_min, cfg.recording.rtp_port_max),
        "recording server ready"
    );
    Ok(RecordingParts { service, index })
}

/// Carries recording ids to the CDR builder (SRFMSGID): at the start of a recording (the
/// call's CDR is usually built before the file is stored) and again when it is ready.
async fn link_recordings(
    mut events: tokio::sync::broadcast::Receiver<crate::recording::service::RecordingEvent>,
    cdr: Arc<CdrService>,
    shutdown: CancellationToken,
) {
    use crate::recording::service::RecordingEvent;
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = events.recv() => ev,
        };
        match ev {
            Ok(RecordingEvent::Started {
                record_id,
                call_refs,
            })
            | Ok(RecordingEvent::Ready {
                record_id,
                call_refs,
                ..
            }) => cdr.link_recording(&call_refs, &record_id),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "recording events lagged; those calls' CDRs may lack their recording id"
                );
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Deletes expired recordings once an hour (and once shortly after start).
async fn run_retention(
    db_path: std::path::PathBuf,
    recordings_dir: std::path::PathBuf,
    days: u32,
    shutdown: CancellationToken,
) {
    if days == 0 {
        return;
    }
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let (db, dir) = (db_path.clone(), recordings_dir.clone());
        let done = tokio::task::spawn_blocking(move || {
            let mut store = crate::recording::RecordingStore::open(&db)?;
            crate::recording::retention::apply(&mut store, &dir, Now::system().unix_ms, days, 500)
        })
        .await;
        match done {
            Ok(Ok(r)) if r.recordings > 0 || r.errors > 0 => {
                tracing::info!(
                    deleted = r.recordings,
                    files = r.files,
                    errors = r.errors,
                    "recording retention"
                )
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "recording retention failed"),
            Err(e) => tracing::error!(error = %e, "recording retention task failed"),
        }
    }
}

fn keep_restart_only_settings(running: &Config, new: &mut Config) {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($($field:ident).+, $key:literal) => {
            if new.$($field).+ != running.$($field).+ {
                changed.push($key);
                new.$($field).+ = running.$($field).+.clone();
            }
        };
    }
    keep!(state.dir, "state.dir");
    // The softswitch connection and the CDR pipeline are built once at start-up.
    keep!(esl, "esl");
    keep!(cdr, "cdr");
    // The outbox and its push targets are built once at start-up.
    keep!(outbox, "outbox");
    keep!(grid, "grid");
    keep!(grid_api, "grid_api");
    // The recording server's ports, threads, keys and outputs are set up once.
    keep!(recording, "recording");
    // Project extensions' HA1 values are bound to the realm they were created in.
    keep!(sip.realm, "sip.realm");
    keep!(directory.key_file, "directory.key_file");
    keep!(
        management.max_stream_connections,
        "management.max_stream_connections"
    );
    keep!(management.stream_queue, "management.stream_queue");
    keep!(management.max_body_bytes, "management.max_body_bytes");
    keep!(http.listen, "http.listen");
    keep!(http.max_connections, "http.max_connections");
    keep!(http.idle_timeout_secs, "http.idle_timeout_secs");
    keep!(sip.udp, "sip.udp");
    keep!(sip.tcp, "sip.tcp");
    keep!(sip.ws, "sip.ws");
    keep!(sip.tls, "sip.tls");
    keep!(sip.wss, "sip.wss");
    keep!(sip.tls_cert, "sip.tls_cert");
    keep!(sip.tls_key, "sip.tls_key");
    keep!(sip.max_message_bytes, "sip.max_message_bytes");
    keep!(sip.udp_buffer_bytes, "sip.udp_buffer_bytes");
    keep!(sip.max_connections, "sip.max_connections");
    keep!(sip.max_connections_per_ip, "sip.max_connections_per_ip");
    keep!(sip.idle_timeout_secs, "sip.idle_timeout_secs");
    keep!(sip.handshake_timeout_secs, "sip.handshake_timeout_secs");
    keep!(sip.persist_interval_ms, "sip.persist_interval_ms");
    if !changed.is_empty() {
        tracing::warn!(keys = %changed.join(", "), "these settings take effect only after a restart; keeping the running values");
    }
}

/// Applies what can change live: log filter, credentials, guard, digest and registrar policy.
/// Listener addresses, the state directory and TLS files need a restart.
async fn reload(
    cfg: &mut Config,
    path: Option<&Path>,
    server: &Arc<SipServer>,
    others: &Reloadable<'_>,
    log: &LogHandle,
) -> anyhow::Result<()> {
    let Some(path) = path else {
        anyhow::bail!("running on embedded defaults: there is no file to reload");
    };
    let new = Config::load(path)?;
    let mut new = new;
    keep_restart_only_settings(cfg, &mut new);
    let digest = digest_config(&new)?;
    let accounts = api_accounts(&new)?;
    let db = new.db_path();
    let new_for_seed = new.clone();
    // Seeding, loading and swapping the table happen under the directory's lock, so that no
    // project extension created, disabled or freed meanwhile is undone by a stale table.
    let agents = Arc::clone(others.agents);
    let changes = tokio::task::spawn_blocking(move || {
        agents.replace_credentials(|| -> anyhow::Result<CredentialTable> {
            let mut store = Store::open(&db, Durability::Normal)?;
            seed_and_load_credentials(&mut store, &new_for_seed, Now::system().unix_secs())
        })
    })
    .await??;
    log.modify(|f| *f = EnvFilter::new(&new.log.level))?;
    server.with_endpoint(|ep| {
        ep.guard.set_config(guard_config(&new));
        ep.limits = limits(&new);
        ep.qualify.set_config(qualify_config(&new));
        ep.registrar.set_config(registrar_config(&new));
        ep.registrar.verifier_mut().set_config(digest);
    });
    server.set_limits(limits(&new));
    server.publish(changes);
    others.agents.reload(&new, Now::system())?;
    {
        let mut auth = others.mgmt.auth.lock().unwrap_or_else(|e| e.into_inner());
        auth.set_accounts(accounts);
        auth.set_config(sign_config(&new));
    }
    new.extensions = Vec::new();
    *cfg = new;
    release_freed_memory();
    Ok(())
}
