//! The agents shell: owns the directory (store + in-memory view), the presence core and the
//! tasks that feed it (registrar events, timers, write-behind persistence), and carries out
//! the management operations of seed 004.
//!
//! Directory operations block on SQLite; callers run them on blocking threads. Lock order is
//! `dir` → `presence` → the SIP core, never the reverse, so no two operations can deadlock.
//! Every operation commits to the store first and only then changes memory and the registrar:
//! an operation that fails to commit changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use super::counters::{DailyCounters, DayClock};
use super::directory::{
    new_generation, Certificate, DirectoryError, DirectoryKey, Extension, ExtensionNumber, Project,
    ProjectCode, Ranges, Role, TelephoneType,
};
use super::presence::{
    AgentEvent, AgentEventKind, CallInfo, Command, Presence, PresenceError, SeatSnapshot,
    STATE_LABELS,
};
use super::state::{seed004_status, AgentConfig, AgentState, Seed004Status};
use crate::clock::Now;
use crate::config::Config;
use crate::events::CallEvent;
use crate::metrics::Metrics;
use crate::sip::credentials::Credential;
use crate::sip::server::SipServer;
use crate::store::{Durability, PresenceRow, Store, StoreError};

/// Receives every batch of agent events (the event stream, later the grid forwarder).
pub trait AgentEventSink: Send + Sync {
    fn publish(&self, events: &[AgentEvent]);
}

/// Why a management operation failed; each maps to one HTTP status and a precise message.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("storage failure: {0}")]
    Storage(#[from] StoreError),
}

impl From<DirectoryError> for OpError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::RangeExhausted { .. } => OpError::Conflict(e.to_string()),
            other => OpError::BadRequest(other.to_string()),
        }
    }
}

impl From<PresenceError> for OpError {
    fn from(e: PresenceError) -> Self {
        match e {
            PresenceError::UnknownSeat(_) => OpError::NotFound(e.to_string()),
            PresenceError::Refused { .. } => OpError::Conflict(e.to_string()),
        }
    }
}

/// What createProject returns.
#[derive(Debug, Clone)]
pub struct ProjectCreated {
    pub certificate: Certificate,
    pub servers: String,
    pub native_servers: String,
}

/// What getByCertificate returns.
#[derive(Debug, Clone)]
pub struct ExtensionLogin {
    pub servers: String,
    pub native_servers: String,
    pub username: String,
    pub password: String,
    pub uri: String,
}

/// One line of getExtentionByProject (and of `/topic/callExtStatus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionStatus {
    pub username: String,
    pub enabled: bool,
    pub status: Seed004Status,
    pub state: AgentState,
    pub call: Option<CallInfo>,
}

/// Who a login on the event stream turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub username: String,
    pub project: Option<ProjectCode>,
    /// The allocation logged in to (project extensions): a freed and reallocated number has a
    /// new generation, so an old session cannot act for the new holder.
    pub generation: Option<u64>,
}

struct DirSettings {
    ranges: Ranges,
    servers: String,
    native_servers: String,
    max_seats: u32,
    realm: String,
}

struct Dir {
    projects: HashMap<ProjectCode, Project>,
    /// Project extensions by number.
    extensions: BTreeMap<String, Extension>,
    settings: DirSettings,
}

pub struct AgentsService {
    dir: Mutex<Dir>,
    /// Taken after `dir` when both are needed, never before; the presence persister takes it
    /// alone, so writing presence never blocks the directory's readers.
    store: Mutex<Store>,
    presence: Mutex<Presence>,
    key: DirectoryKey,
    sip: Arc<SipServer>,
    metrics: Arc<Metrics>,
    sinks: RwLock<Vec<Arc<dyn AgentEventSink>>>,
    /// Every agent event, for consumers that want them all (the grid forwarder).
    pub events: broadcast::Sender<AgentEvent>,
    /// Extensions freed (project finished): event-stream sessions logged in as one of them
    /// close, since the number may soon belong to someone else.
    pub revocations: broadcast::Sender<String>,
    /// Wakes the timer task when a deadline may have moved earlier.
    wake: Notify,
    persist_interval: Mutex<Duration>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock already failed its request; the data is still
    // consistent (every operation commits to the store before touching memory).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn agent_config(cfg: &Config) -> AgentConfig {
    AgentConfig {
        acw_ms: cfg.presence.acw_secs * 1000,
        idle_after_rest: cfg.presence.idle_after_rest,
    }
}

fn settings(cfg: &Config) -> Result<DirSettings, DirectoryError> {
    Ok(DirSettings {
        ranges: Ranges::parse(&cfg.directory.ranges)?,
        servers: cfg.directory.servers.clone(),
        native_servers: cfg.directory.native_servers.clone(),
        max_seats: cfg.directory.max_seats,
        realm: cfg.sip.realm.clone(),
    })
}

/// Reads the directory key, creating it (mode 0600) on first start.
pub fn load_or_create_key(path: &std::path::Path) -> anyhow::Result<DirectoryKey> {
    use anyhow::Context;
    match std::fs::read(path) {
        Ok(bytes) => {
            let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!(
                    "directory.key_file: {} must hold exactly 32 bytes (it holds {}); restore it from backup: extension passwords and project certificates derive from it",
                    path.display(),
                    bytes.len()
                )
            })?;
            Ok(DirectoryKey::from_bytes(arr))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let key = DirectoryKey::generate();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("directory.key_file: cannot create {}", path.display()))?;
            f.write_all(key.bytes())?;
            f.sync_all()?;
            tracing::info!(path = %path.display(), "created the directory key");
            Ok(key)
        }
        Err(e) => Err(anyhow::anyhow!(
            "directory.key_file: cannot read {}: {e}",
            path.display()
        )),
    }
}

impl AgentsService {
    /// Opens the directory, restores presence from the store and seats every extension.
    pub fn open(
        cfg: &Config,
        key: DirectoryKey,
        sip: Arc<SipServer>,
        metrics: Arc<Metrics>,
        now: Now,
    ) -> anyhow::Result<Arc<AgentsService>> {
        let mut store = Store::open(&cfg.db_path(), Durability::Normal)?;
        store.seed_directory(
            &cfg.agents,
            &cfg.skill_groups,
            &cfg.access_numbers,
            now.unix_secs(),
        )?;
        let projects: HashMap<ProjectCode, Project> = store
            .projects()?
            .into_iter()
            .map(|p| (p.code.clone(), p))
            .collect();
        let extensions: BTreeMap<String, Extension> = store
            .project_extensions()?
            .into_iter()
            .map(|e| (e.number.as_str().to_owned(), e))
            .collect();
        let clock = DayClock::new(&cfg.presence.timezone)
            .map_err(|e| anyhow::anyhow!("presence.timezone: {e}"))?;
        let mut presence = Presence::new(agent_config(cfg), clock, now.unix_ms);
        let restored: HashMap<String, PresenceRow> = store
            .load_presence()?
            .into_iter()
            .map(|r| (r.extension.clone(), r))
            .collect();
        // Every project extension is a seat (a disabled one too: enabling it must find its
        // seat), and so is every enabled config extension.
        let (users, online): (Vec<String>, Vec<bool>) = sip.with_endpoint(|ep| {
            let reg = &ep.registrar;
            reg.credentials()
                .iter()
                .filter(|(u, c)| c.enabled || extensions.contains_key(*u))
                .map(|(u, _)| (u.clone(), reg.location().is_online(u, now.unix_secs())))
                .unzip()
        });
        // The grid's agent id rides on the seat of the extension the agent uses.
        let agent_of: HashMap<String, String> = store
            .agents()?
            .into_iter()
            .filter_map(|a| Some((a.extension?, a.agent_id)))
            .collect();
        let mut bad_rows = 0usize;
        for (user, online) in users.iter().zip(online) {
            let project = extensions.get(user).and_then(|e| e.project.clone());
            let agent_id = agent_of
                .get(user)
                .cloned()
                .or_else(|| extensions.get(user).and_then(|e| e.agent_id.clone()));
            let snap = restored.get(user).and_then(|r| {
                let m = serde_json::from_str::<SeatSnapshot>(&r.machine).ok();
                let c = serde_json::from_str::<DailyCounters>(&r.counters).ok();
                if m.is_none() || c.is_none() {
                    bad_rows += 1;
                }
                Some((m?, c?))
            });
            presence.add_seat(user, project, agent_id, online, snap, now.unix_ms);
        }
        if bad_rows > 0 {
            tracing::warn!(
                rows = bad_rows,
                "unreadable presence rows; those agents start signed out"
            );
        }
        let (events, _) = broadcast::channel(4096);
        let svc = Arc::new(AgentsService {
            dir: Mutex::new(Dir {
                projects,
                extensions,
                settings: settings(cfg)?,
            }),
            store: Mutex::new(store),
            presence: Mutex::new(presence),
            key,
            sip,
            metrics,
            sinks: RwLock::new(Vec::new()),
            events,
            revocations: broadcast::channel(1024).0,
            wake: Notify::new(),
            persist_interval: Mutex::new(Duration::from_millis(cfg.presence.persist_interval_ms)),
        });
        svc.update_agent_gauges();
        svc.update_dir_gauges(&lock(&svc.dir));
        Ok(svc)
    }

    /// Live-reloadable settings (ranges, servers, ACW, rest policy, time zone) and the
    /// config's `[[agents]]`, `[[skill_groups]]` and `[[access_numbers]]` (re-seeded: entries
    /// the grid or the API made are kept; the grid forwarder pushes the differences).
    pub fn reload(&self, cfg: &Config, now: Now) -> anyhow::Result<()> {
        let s = settings(cfg)?;
        lock(&self.store).seed_directory(
            &cfg.agents,
            &cfg.skill_groups,
            &cfg.access_numbers,
            now.unix_secs(),
        )?;
        let clock = DayClock::new(&cfg.presence.timezone)
            .map_err(|e| anyhow::anyhow!("presence.timezone: {e}"))?;
        lock(&self.dir).settings = s;
        lock(&self.presence).set_config(agent_config(cfg), clock, now.unix_ms);
        *lock(&self.persist_interval) = Duration::from_millis(cfg.presence.persist_interval_ms);
        self.sync_config_seats(now);
        self.wake.notify_one();
        Ok(())
    }

    /// After the registrar's credentials changed (a reload): extensions added to the config get
    /// a seat, and seats of extensions that were removed or disabled are signed out and dropped.
    /// Project extensions are the directory's business and are left alone.
    fn sync_config_seats(&self, now: Now) {
        let dir = lock(&self.dir);
        let wanted: HashMap<String, bool> = self.sip.with_endpoint(|ep| {
            let reg = &ep.registrar;
            reg.credentials()
                .iter()
                .filter(|(u, c)| c.enabled && !dir.extensions.contains_key(*u))
                .map(|(u, _)| (u.clone(), reg.location().is_online(u, now.unix_secs())))
                .collect()
        });
        let mut events = Vec::new();
        {
            let mut p = lock(&self.presence);
            let stale: Vec<String> = p
                .seats()
                .map(|(u, _)| u.to_owned())
                .filter(|u| !dir.extensions.contains_key(u) && !wanted.contains_key(u))
                .collect();
            for u in stale {
                events.extend(p.remove_seat(&u, now.unix_ms));
            }
            for (u, online) in &wanted {
                if p.seat(u).is_none() {
                    p.add_seat(u, None, None, *online, None, now.unix_ms);
                }
            }
        }
        drop(dir);
        self.publish(events);
    }

    /// Replaces the registrar's whole credential table (a reload) with the one `load` reads,
    /// holding the directory's lock from the read to the swap so that no directory operation
    /// lands in between and is silently undone.
    pub fn replace_credentials(
        &self,
        load: impl FnOnce() -> anyhow::Result<crate::sip::credentials::CredentialTable>,
    ) -> anyhow::Result<crate::sip::location::Changes> {
        let _dir = lock(&self.dir);
        let table = load()?;
        Ok(self
            .sip
            .with_endpoint(|ep| ep.registrar.set_credentials(Arc::new(table))))
    }

    pub fn add_sink(&self, sink: Arc<dyn AgentEventSink>) {
        self.sinks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(sink);
    }

    /// Sends events to every sink, the broadcast channel and the metrics.
    fn publish(&self, events: Vec<AgentEvent>) {
        if events.is_empty() {
            return;
        }
        for e in &events {
            if let AgentEventKind::Transition(t) = &e.kind {
                self.metrics
                    .agent_transitions
                    .with_label_values(&[
                        STATE_LABELS[super::presence::state_index(&t.from)],
                        STATE_LABELS[super::presence::state_index(&t.to)],
                    ])
                    .inc();
                tracing::debug!(extension = %e.extension, from = t.from.name(), to = t.to.name(), "agent state");
            }
        }
        for s in self.sinks.read().unwrap_or_else(|e| e.into_inner()).iter() {
            s.publish(&events);
        }
        for e in events {
            // No subscriber is fine (the forwarder may not be configured).
            let _ = self.events.send(e);
        }
        self.update_agent_gauges();
        self.wake.notify_one();
    }

    fn update_agent_gauges(&self) {
        let counts = lock(&self.presence).counts_by_state();
        for (label, n) in STATE_LABELS.iter().zip(counts) {
            self.metrics
                .agents
                .with_label_values(&[label])
                .set(n as i64);
        }
    }

    /// Called with `dir` held by every operation that changes it.
    fn update_dir_gauges(&self, dir: &Dir) {
        self.metrics.projects.set(dir.projects.len() as i64);
        self.metrics
            .directory_extensions
            .set(dir.extensions.len() as i64);
    }

    fn realm_and_online(&self, user: &str, now: Now) -> bool {
        self.sip
            .with_endpoint(|ep| ep.registrar.location().is_online(user, now.unix_secs()))
    }

    // ---- seed 004 management operations -------------------------------------------------

    /// createProject/v1: allocates `seats` extensions. Repeating the call with the same seats is
    /// a no-op that returns the same certificate (clients retry on timeouts).
    pub fn create_project(
        &self,
        code: &ProjectCode,
        seats: u32,
        now: Now,
    ) -> Result<ProjectCreated, OpError> {
        let mut dir = lock(&self.dir);
        if seats == 0 || seats > dir.settings.max_seats {
            return Err(OpError::BadRequest(format!(
                "seats must be between 1 and {}",
                dir.settings.max_seats
            )));
        }
        if let Some(p) = dir.projects.get(code) {
            if p.seats == seats {
                return Ok(ProjectCreated {
                    certificate: self.key.certificate(code, p.generation),
                    servers: dir.settings.servers.clone(),
                    native_servers: dir.settings.native_servers.clone(),
                });
            }
            return Err(OpError::Conflict(format!(
                "project {code} already exists with {} seats; finish it first",
                p.seats
            )));
        }
        let used = lock(&self.store).extension_users()?;
        let numbers = dir.settings.ranges.allocate(&used, seats as usize)?;
        let project = Project {
            code: code.clone(),
            seats,
            generation: new_generation(),
            created_at: now.unix_secs(),
        };
        let certificate = self.key.certificate(code, project.generation);
        let realm = dir.settings.realm.clone();
        let exts: Vec<(Extension, Credential)> = numbers
            .into_iter()
            .map(|number| self.new_extension(number, code, &realm))
            .collect();
        lock(&self.store).create_project(
            &realm,
            &project,
            &certificate.lookup_hash(),
            &exts,
            now.unix_secs(),
        )?;
        dir.projects.insert(code.clone(), project);
        let mut creds = Vec::with_capacity(exts.len());
        let mut events = Vec::new();
        {
            let mut p = lock(&self.presence);
            for (e, c) in exts {
                // A seat left by a config extension removed moments ago (before the reload
                // synced seats) must not hand its state and counters to the new agent.
                events.extend(p.remove_seat(e.number.as_str(), now.unix_ms));
                p.add_seat(
                    e.number.as_str(),
                    Some(code.clone()),
                    None,
                    false,
                    None,
                    now.unix_ms,
                );
                creds.push((e.number.as_str().to_owned(), Some(c)));
                dir.extensions.insert(e.number.as_str().to_owned(), e);
            }
        }
        let changes = self
            .sip
            .with_endpoint(|ep| ep.registrar.update_credentials(creds));
        self.sip.publish(changes);
        tracing::info!(project = %code, seats, "project created");
        let out = ProjectCreated {
            certificate,
            servers: dir.settings.servers.clone(),
            native_servers: dir.settings.native_servers.clone(),
        };
        self.update_dir_gauges(&dir);
        drop(dir);
        self.publish(events);
        Ok(out)
    }

    /// A freshly allocated project extension (new generation, so a new password) and its
    /// credential.
    fn new_extension(
        &self,
        number: ExtensionNumber,
        project: &ProjectCode,
        realm: &str,
    ) -> (Extension, Credential) {
        let generation = new_generation();
        let password = self.key.password(&number, generation);
        let cred = Credential::from_password(number.as_str(), realm, &password);
        let ext = Extension {
            number,
            project: Some(project.clone()),
            generation,
            enabled: true,
            claimed: None,
            agent_id: None,
            telephone_type: TelephoneType::BuiltIn,
        };
        (ext, cred)
    }

    fn login_for(&self, dir: &Dir, e: &Extension) -> ExtensionLogin {
        let host = dir
            .settings
            .native_servers
            .rsplit_once(':')
            .map_or(dir.settings.native_servers.as_str(), |(h, _)| h);
        ExtensionLogin {
            servers: dir.settings.servers.clone(),
            native_servers: dir.settings.native_servers.clone(),
            username: e.number.as_str().to_owned(),
            password: self.key.password(&e.number, e.generation),
            uri: format!("sip:{}@{}", e.number, host),
        }
    }

    /// getByCertificate/v1: the credentials of `username`, or of the next unclaimed
    /// extension, which is then claimed for `role`.
    pub fn by_certificate(
        &self,
        cert: &Certificate,
        username: Option<&ExtensionNumber>,
        role: Role,
    ) -> Result<ExtensionLogin, OpError> {
        let mut dir = lock(&self.dir);
        let code = lock(&self.store)
            .project_by_cert(&cert.lookup_hash())?
            .and_then(|c| ProjectCode::parse(&c).ok())
            .ok_or_else(|| OpError::NotFound("no project has this certificate".into()))?;
        let chosen = match username {
            Some(u) => {
                let e = dir
                    .extensions
                    .get(u.as_str())
                    .filter(|e| e.project.as_ref() == Some(&code))
                    .ok_or_else(|| {
                        OpError::NotFound(format!(
                            "extension {u} does not belong to project {code}"
                        ))
                    })?;
                e.number.clone()
            }
            None => dir
                .extensions
                .values()
                .find(|e| e.project.as_ref() == Some(&code) && e.claimed.is_none() && e.enabled)
                .map(|e| e.number.clone())
                .ok_or_else(|| {
                    OpError::Conflict(format!("project {code} has no unclaimed extension left"))
                })?,
        };
        if dir.extensions[chosen.as_str()].claimed.is_none() {
            lock(&self.store).claim_extension(&chosen, role)?;
            if let Some(e) = dir.extensions.get_mut(chosen.as_str()) {
                e.claimed = Some(role);
            }
        }
        Ok(self.login_for(&dir, &dir.extensions[chosen.as_str()]))
    }

    fn status_of(&self, p: &Presence, e: &Extension, online: bool) -> ExtensionStatus {
        let (state, call, registered) = match p.seat(e.number.as_str()) {
            Some(s) => (s.machine.state().clone(), s.call.clone(), online),
            None => (AgentState::SignedOut, None, online),
        };
        let mut status = seed004_status(&state, registered);
        if !e.enabled {
            status.work_status = -1;
        }
        ExtensionStatus {
            username: e.number.as_str().to_owned(),
            enabled: e.enabled,
            status,
            state,
            call,
        }
    }

    /// getExtentionByProject/v1.
    pub fn project_status(
        &self,
        code: &ProjectCode,
        now: Now,
    ) -> Result<Vec<ExtensionStatus>, OpError> {
        let dir = lock(&self.dir);
        if !dir.projects.contains_key(code) {
            return Err(OpError::NotFound(format!("unknown project {code}")));
        }
        let exts: Vec<&Extension> = dir
            .extensions
            .values()
            .filter(|e| e.project.as_ref() == Some(code))
            .collect();
        let online: Vec<bool> = self.sip.with_endpoint(|ep| {
            exts.iter()
                .map(|e| {
                    ep.registrar
                        .location()
                        .is_online(e.number.as_str(), now.unix_secs())
                })
                .collect()
        });
        let p = lock(&self.presence);
        Ok(exts
            .iter()
            .zip(online)
            .map(|(e, on)| self.status_of(&p, e, on))
            .collect())
    }

    /// The status of one seat (project or config extension).
    pub fn extension_status(&self, user: &str, now: Now) -> Result<ExtensionStatus, OpError> {
        let online = self.realm_and_online(user, now);
        let dir = lock(&self.dir);
        let p = lock(&self.presence);
        match dir.extensions.get(user) {
            Some(e) => Ok(self.status_of(&p, e, online)),
            None => {
                let seat = p
                    .seat(user)
                    .ok_or_else(|| OpError::NotFound(format!("unknown extension {user}")))?;
                Ok(ExtensionStatus {
                    username: user.to_owned(),
                    enabled: true,
                    status: seed004_status(seat.machine.state(), online),
                    state: seat.machine.state().clone(),
                    call: seat.call.clone(),
                })
            }
        }
    }

    /// Applies a command to a seat and publishes what it caused.
    pub fn command(&self, user: &str, cmd: Command, now: Now) -> Result<(), OpError> {
        let events = {
            // `dir` stays held so that a disable cannot slip in between the check and the
            // command (it would sign the agent out, and the command sign it back in).
            let dir = lock(&self.dir);
            if dir.extensions.get(user).is_some_and(|e| !e.enabled) {
                return Err(OpError::Conflict(format!("extension {user} is disabled")));
            }
            let events = lock(&self.presence).command(user, cmd, now.unix_ms)?;
            drop(dir);
            events
        };
        self.publish(events);
        Ok(())
    }

    /// setWorkStatus/v1 (and /app/idle, /app/busy).
    pub fn set_work_status(
        &self,
        user: &ExtensionNumber,
        available: bool,
        now: Now,
    ) -> Result<ExtensionStatus, OpError> {
        let cmd = if available {
            Command::Available
        } else {
            Command::Unavailable
        };
        self.command(user.as_str(), cmd, now)?;
        self.extension_status(user.as_str(), now)
    }

    /// setWorkStatusByProjectCode/v1: every extension of the project; those that cannot change
    /// (not registered, in a call, disabled) are listed with the reason.
    pub fn set_project_work_status(
        &self,
        code: &ProjectCode,
        available: bool,
        now: Now,
    ) -> Result<(usize, Vec<(String, String)>), OpError> {
        let users: Vec<String> = {
            let dir = lock(&self.dir);
            if !dir.projects.contains_key(code) {
                return Err(OpError::NotFound(format!("unknown project {code}")));
            }
            dir.extensions
                .values()
                .filter(|e| e.project.as_ref() == Some(code))
                .map(|e| e.number.as_str().to_owned())
                .collect()
        };
        let mut ok = 0usize;
        let mut refused = Vec::new();
        for u in users {
            let cmd = if available {
                Command::Available
            } else {
                Command::Unavailable
            };
            match self.command(&u, cmd, now) {
                Ok(()) => ok += 1,
                Err(e) => refused.push((u, e.to_string())),
            }
        }
        Ok((ok, refused))
    }

    /// setExtensionStatus/v1: disabling signs the agent out, removes the phone's bindings and
    /// makes the registrar refuse it (403) until it is enabled again.
    pub fn set_extension_enabled(
        &self,
        user: &ExtensionNumber,
        enabled: bool,
        now: Now,
    ) -> Result<(), OpError> {
        let mut dir = lock(&self.dir);
        let realm = dir.settings.realm.clone();
        let e = dir
            .extensions
            .get(user.as_str())
            .cloned()
            .ok_or_else(|| OpError::NotFound(format!("unknown extension {user}")))?;
        if e.enabled == enabled {
            return Ok(());
        }
        lock(&self.store).set_extension_enabled(user, enabled, now.unix_secs())?;
        if let Some(x) = dir.extensions.get_mut(user.as_str()) {
            x.enabled = enabled;
        }
        let mut cred = Credential::from_password(
            user.as_str(),
            &realm,
            &self.key.password(user, e.generation),
        );
        cred.enabled = enabled;
        let events = {
            let mut p = lock(&self.presence);
            if enabled {
                if p.seat(user.as_str()).is_none() {
                    p.add_seat(
                        user.as_str(),
                        e.project.clone(),
                        e.agent_id.clone(),
                        false,
                        None,
                        now.unix_ms,
                    );
                }
                Vec::new()
            } else {
                p.force_sign_out(user.as_str(), now.unix_ms)
            }
        };
        // The registrar changes under `dir` too, so a concurrent operation on the same number
        // cannot interleave between the store and the registrar. Removing the bindings
        // publishes RegistrationChanged, which marks the seat offline.
        let changes = self.sip.with_endpoint(|ep| {
            ep.registrar
                .update_credentials([(user.as_str().to_owned(), Some(cred))])
        });
        self.sip.publish(changes);
        // Event-stream sessions of a disabled extension stay open (they see it go offline and
        // unavailable) but can no longer subscribe or command; see `identity_current`.
        drop(dir);
        self.publish(events);
        tracing::info!(extension = %user, enabled, "extension status changed");
        Ok(())
    }

    /// finishProject/v1: signs every agent out, unregisters the phones and frees the numbers.
    pub fn finish_project(&self, code: &ProjectCode, now: Now) -> Result<usize, OpError> {
        let mut dir = lock(&self.dir);
        if !dir.projects.contains_key(code) {
            return Err(OpError::NotFound(format!("unknown project {code}")));
        }
        let users: Vec<String> = dir
            .extensions
            .values()
            .filter(|e| e.project.as_ref() == Some(code))
            .map(|e| e.number.as_str().to_owned())
            .collect();
        lock(&self.store).finish_project(code)?;
        dir.projects.remove(code);
        for u in &users {
            dir.extensions.remove(u);
        }
        let events: Vec<AgentEvent> = {
            let mut p = lock(&self.presence);
            users
                .iter()
                .flat_map(|u| p.remove_seat(u, now.unix_ms))
                .collect()
        };
        // Under `dir`: a createProject that reuses these numbers must not run before their old
        // credentials are gone, or it would see its new ones deleted.
        let changes = self.sip.with_endpoint(|ep| {
            ep.registrar
                .update_credentials(users.iter().map(|u| (u.clone(), None)))
        });
        self.sip.publish(changes);
        self.update_dir_gauges(&dir);
        drop(dir);
        for u in &users {
            let _ = self.revocations.send(u.clone());
        }
        self.publish(events);
        tracing::info!(project = %code, extensions = users.len(), "project finished");
        Ok(users.len())
    }

    /// distributionSeat/v1: gives the project one more extension, the number asked for.
    pub fn distribution_seat(
        &self,
        code: &ProjectCode,
        user: &ExtensionNumber,
        now: Now,
    ) -> Result<(), OpError> {
        let mut dir = lock(&self.dir);
        if !dir.projects.contains_key(code) {
            return Err(OpError::NotFound(format!("unknown project {code}")));
        }
        if let Some(e) = dir.extensions.get(user.as_str()) {
            return if e.project.as_ref() == Some(code) {
                Ok(())
            } else {
                Err(OpError::Conflict(format!(
                    "extension {user} belongs to another project"
                )))
            };
        }
        if !dir.settings.ranges.contains(user.as_str()) {
            return Err(OpError::BadRequest(format!(
                "extension {user} is outside directory.ranges"
            )));
        }
        if lock(&self.store).extension_users()?.contains(user.as_str()) {
            return Err(OpError::Conflict(format!(
                "extension {user} is already in use"
            )));
        }
        let realm = dir.settings.realm.clone();
        let (e, cred) = self.new_extension(user.clone(), code, &realm);
        lock(&self.store).add_project_extension(&realm, &e, &cred, now.unix_secs())?;
        if let Some(p) = dir.projects.get_mut(code) {
            p.seats += 1;
        }
        dir.extensions.insert(user.as_str().to_owned(), e);
        let mut p = lock(&self.presence);
        let events = p.remove_seat(user.as_str(), now.unix_ms);
        p.add_seat(
            user.as_str(),
            Some(code.clone()),
            None,
            false,
            None,
            now.unix_ms,
        );
        drop(p);
        let changes = self.sip.with_endpoint(|ep| {
            ep.registrar
                .update_credentials([(user.as_str().to_owned(), Some(cred))])
        });
        self.sip.publish(changes);
        self.update_dir_gauges(&dir);
        drop(dir);
        self.publish(events);
        Ok(())
    }

    /// The extensions of a project (for sendToUser without a username), or the one named,
    /// checked to belong to it.
    pub fn project_members(
        &self,
        code: &ProjectCode,
        user: Option<&ExtensionNumber>,
    ) -> Result<Vec<String>, OpError> {
        let dir = lock(&self.dir);
        if !dir.projects.contains_key(code) {
            return Err(OpError::NotFound(format!("unknown project {code}")));
        }
        match user {
            Some(u) => match dir.extensions.get(u.as_str()) {
                Some(e) if e.project.as_ref() == Some(code) => Ok(vec![u.as_str().to_owned()]),
                _ => Err(OpError::NotFound(format!(
                    "extension {u} does not belong to project {code}"
                ))),
            },
            None => Ok(dir
                .extensions
                .values()
                .filter(|e| e.project.as_ref() == Some(code))
                .map(|e| e.number.as_str().to_owned())
                .collect()),
        }
    }

    /// Checks an agent desktop's login (extension and SIP password) in constant time.
    pub fn verify_agent(&self, user: &str, password: &str) -> Option<AgentIdentity> {
        let (project, generation) = {
            let dir = lock(&self.dir);
            match dir.extensions.get(user) {
                Some(e) if !e.enabled => return None,
                Some(e) => (e.project.clone(), Some(e.generation)),
                None => (None, None),
            }
        };
        let realm = lock(&self.dir).settings.realm.clone();
        let ok = self.sip.with_endpoint(|ep| {
            ep.registrar
                .credentials()
                .get(user)
                .is_some_and(|c| c.enabled && c.password_matches(user, &realm, password))
        });
        ok.then(|| AgentIdentity {
            username: user.to_owned(),
            project,
            generation,
        })
    }

    /// Whether a login made earlier still stands: the same allocation of the number, still
    /// enabled (config extensions: still present and enabled).
    pub fn identity_current(&self, id: &AgentIdentity) -> bool {
        let dir = lock(&self.dir);
        match (dir.extensions.get(&id.username), id.generation) {
            (Some(e), Some(g)) => e.enabled && e.generation == g,
            (None, None) => self.sip.with_endpoint(|ep| {
                ep.registrar
                    .credentials()
                    .get(&id.username)
                    .is_some_and(|c| c.enabled)
            }),
            _ => false,
        }
    }

    /// Every project's agents that presence knows, with their state and since when (for the
    /// dialer's pacing and its choice of agent). Disabled extensions are left out.
    pub fn project_agents(
        &self,
    ) -> std::collections::HashMap<String, Vec<(String, AgentState, u64)>> {
        // Same order as `command`: directory, then presence.
        let dir = lock(&self.dir);
        let p = lock(&self.presence);
        let mut out: std::collections::HashMap<String, Vec<(String, AgentState, u64)>> =
            std::collections::HashMap::new();
        for e in dir.extensions.values() {
            let Some(code) = &e.project else { continue };
            if !e.enabled {
                continue;
            }
            if let Some(seat) = p.seat(e.number.as_str()) {
                out.entry(code.as_str().to_owned()).or_default().push((
                    e.number.as_str().to_owned(),
                    seat.machine.state().clone(),
                    seat.machine.since_ms(),
                ));
            }
        }
        out
    }

    /// The project an extension belongs to.
    pub fn project_of(&self, user: &str) -> Option<ProjectCode> {
        lock(&self.dir)
            .extensions
            .get(user)
            .and_then(|e| e.project.clone())
    }

    /// A call event from the softswitch adapter (or a test).
    pub fn call_event(&self, ev: &CallEvent) -> Result<(), OpError> {
        let events = lock(&self.presence).call_event(ev)?;
        self.publish(events);
        Ok(())
    }

    /// Runs `f` over the presence core (read-only views for queries and tests).
    pub fn with_presence<R>(&self, f: impl FnOnce(&Presence) -> R) -> R {
        f(&lock(&self.presence))
    }

    // ---- tasks --------------------------------------------------------------------------

    /// Feeds registrar events into presence. A lagging receiver (a registration storm) resyncs
    /// every seat from the location table rather than guessing.
    pub async fn run_registrations(self: Arc<Self>, shutdown: CancellationToken) {
        let mut rx = self.sip.events.subscribe();
        // Anything that happened between start-up and subscribing.
        self.resync_registrations();
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = rx.recv() => ev,
            };
            match ev {
                Ok(e) => {
                    let ip: Option<IpAddr> = Some(e.source.ip());
                    let now = Now::system();
                    let events =
                        lock(&self.presence).registration(&e.aor, e.online, ip, now.unix_ms);
                    self.publish(events);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "presence fell behind the registrar; resyncing");
                    self.resync_registrations();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn resync_registrations(&self) {
        let now = Now::system();
        let users: Vec<String> =
            self.with_presence(|p| p.seats().map(|(u, _)| u.to_owned()).collect());
        let online: Vec<bool> = self.sip.with_endpoint(|ep| {
            users
                .iter()
                .map(|u| ep.registrar.location().is_online(u, now.unix_secs()))
                .collect()
        });
        let events: Vec<AgentEvent> = {
            let mut p = lock(&self.presence);
            users
                .iter()
                .zip(online)
                .flat_map(|(u, on)| p.registration(u, on, None, now.unix_ms))
                .collect()
        };
        self.publish(events);
    }

    /// Fires presence timers (after-call work, rest, midnight) when they fall due.
    pub async fn run_timers(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let now = Now::system();
            let deadline = lock(&self.presence).next_deadline();
            // Bounded, so a wall-clock step is noticed within a second.
            let wait = Duration::from_millis(deadline.saturating_sub(now.unix_ms).min(1000));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => continue,
                _ = tokio::time::sleep(wait) => {}
            }
            let now = Now::system();
            let events = lock(&self.presence).tick(now.unix_ms);
            self.publish(events);
        }
    }

    /// Writes changed seats to the store every `presence.persist_interval_ms`, and once more on
    /// shutdown.
    pub async fn run_persister(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let interval = *lock(&self.persist_interval);
            let stop = tokio::select! {
                _ = shutdown.cancelled() => true,
                _ = tokio::time::sleep(interval) => false,
            };
            let svc = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || svc.persist_now()).await;
            if stop {
                return;
            }
        }
    }

    /// Writes every changed seat now. On failure the seats stay dirty for the next round.
    pub fn persist_now(&self) {
        let (dirty, removed) = lock(&self.presence).take_dirty();
        if dirty.is_empty() && removed.is_empty() {
            return;
        }
        let rows: Vec<PresenceRow> = dirty
            .iter()
            .map(|(ext, snap, counters)| PresenceRow {
                extension: ext.clone(),
                machine: serde_json::to_string(snap).unwrap_or_default(),
                counters: serde_json::to_string(counters).unwrap_or_default(),
            })
            .collect();
        let saved = lock(&self.store).save_presence(&rows, &removed, Now::system().unix_secs());
        if let Err(e) = saved {
            self.metrics.store_persist_errors.inc();
            tracing::error!(error = %e, "persisting presence failed; will retry");
            let mut p = lock(&self.presence);
            p.mark_dirty(dirty.into_iter().map(|(e, _, _)| e), removed);
        }
    }
}
