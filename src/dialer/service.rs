//! The campaign runtime's shell: owns the dialer's store connection and the [`Engine`],
//! serves the API's operations, and runs the loop that paces, originates through the ESL
//! client, and feeds the engine what the switch reports. Everything that decides lives in
//! the engine; everything here moves data between it, SQLite, presence, the ESL client and
//! the event stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::campaign::{AgentSnapshot, Engine, Finished, KillResult, Output, SwitchInput};
use super::compliance::{
    AbandonStats, Attempt, AttemptOutcome, ComplianceLog, WINDOW_24_HOURS_MS, WINDOW_30_DAYS_MS,
};
use super::config::DialerConfig;
use super::gateway::Gateway;
use super::lines::GatewayUsage;
use super::metrics::DialerMetrics;
use super::numbers::{self, Dedupe, ImportOutcome, PhoneNumber};
use super::pacing::AgentPhase;
use super::result::ResultDetail;
use super::rules::{choose_caller_id, matching_rule, next_retry};
use super::store::{is_unique_violation, DialerStore, LogQuery, LogRow};
use super::task::{Code, Counters, NumberSource, TaskLine, TaskSpec, TaskStatus};
use crate::agents::directory::ProjectCode;
use crate::agents::service::{AgentsService, OpError};
use crate::agents::state::AgentState;
use crate::api::stream::Hub;
use crate::clock::Now;
use crate::metrics::Metrics;
use crate::store::StoreError;
use crate::switch::client::{new_job_uuid, EslClient, EslClientError};
use crate::switch::esl::EslEvent;

struct Inner {
    store: DialerStore,
    engine: Engine,
    /// Status last written to the store, per task (writes only on change).
    persisted: HashMap<String, TaskStatus>,
    /// Pacing rounds so far (which task goes first).
    round: usize,
}

/// callTaskStatus, as the API and the stream report it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskStatusView {
    pub code: String,
    pub project: String,
    pub status: TaskStatus,
    pub rate: f64,
    pub counters: Counters,
    pub total: u64,
    pub running: u32,
    pub abandon_24h: AbandonStats,
    pub abandon_30d: AbandonStats,
    pub pacing: String,
}

pub struct DialerService {
    inner: Mutex<Inner>,
    cfg: DialerConfig,
    agents: Arc<AgentsService>,
    hub: Arc<Hub>,
    metrics: DialerMetrics,
    wake: Notify,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn phase(state: &AgentState) -> Option<AgentPhase> {
    Some(match state {
        AgentState::SignedOut => return None,
        AgentState::Idle => AgentPhase::Ready,
        AgentState::Reserved | AgentState::Talking | AgentState::Hold => AgentPhase::Talking,
        AgentState::AfterCallWork { .. } => AgentPhase::WrapUp,
        AgentState::NotReady { .. } | AgentState::Rest { .. } => AgentPhase::Paused,
    })
}

fn storage(e: StoreError) -> OpError {
    OpError::Storage(e)
}

/// The caller ID a task presents, when it can be chosen without the gateway: the task's
/// groups for its org (and skill group), then the grid's 保底号码.
fn task_caller_id(store: &DialerStore, spec: &TaskSpec) -> Option<String> {
    let fallback = |org: &str, sid: Option<&str>| {
        store
            .fallback_caller_id(org, sid)
            .map_err(|e| tracing::warn!(error = %e, "保底号码 lookup failed"))
            .ok()
            .flatten()
    };
    match (&spec.org_no, &spec.city_org_no) {
        (Some(org), city) => choose_caller_id(
            &spec.caller_id_groups,
            org,
            spec.service_id.as_deref(),
            city.as_deref().unwrap_or(org),
            fallback,
        )
        .ok(),
        (None, Some(city)) => fallback(city, spec.service_id.as_deref()),
        (None, None) => match spec.caller_id_groups.as_slice() {
            [only] => Some(only.outbound_number.clone()),
            _ => None,
        },
    }
}

impl DialerService {
    /// Opens the dialer's tables and loads gateways and tasks. Numbers that were in flight
    /// when the daemon stopped are closed as "outcome unknown" (see
    /// [`DialerStore::close_in_flight`]).
    pub fn open(
        path: &std::path::Path,
        cfg: DialerConfig,
        wrap_ms: u64,
        agents: Arc<AgentsService>,
        hub: Arc<Hub>,
        metrics: &Metrics,
        now: Now,
    ) -> anyhow::Result<Arc<DialerService>> {
        let mut store = DialerStore::open(path)?;
        for (task, number) in store.close_in_flight(now.unix_ms)? {
            tracing::warn!(
                task,
                number = %crate::text::truncate(&number, 4),
                "a call was in flight when the daemon stopped; logged with outcome unknown, not dialled again"
            );
        }
        let mut engine = Engine::new(cfg.engine(wrap_ms));
        engine.set_gateways(store.gateways()?);
        let mut persisted = HashMap::new();
        for t in store.tasks()? {
            let code = t.spec.code.as_str().to_owned();
            let mut counters = Counters::default();
            for (rd, outcome, n) in store.attempt_summary(&code)? {
                let outcome = AttemptOutcome::parse(&outcome).unwrap_or(AttemptOutcome::Failed);
                let rd = rd.and_then(ResultDetail::from_code);
                for _ in 0..n {
                    counters.add(rd, outcome);
                }
            }
            let total = store.task_total(&code)?;
            let caller = task_caller_id(&store, &t.spec);
            if let Err(e) = engine.upsert_task(t.spec, t.status, counters, total, caller) {
                tracing::error!(task = %code, error = %e, "call task not loaded");
                continue;
            }
            persisted.insert(code, t.status);
        }
        let svc = Arc::new(DialerService {
            inner: Mutex::new(Inner {
                store,
                engine,
                persisted,
                round: 0,
            }),
            cfg,
            agents,
            hub,
            metrics: DialerMetrics::new(metrics.registry()),
            wake: Notify::new(),
        });
        svc.update_gauges(now.unix_ms);
        Ok(svc)
    }

    pub fn config(&self) -> &DialerConfig {
        &self.cfg
    }

    // ---- lines -----------------------------------------------------------------------------

    pub fn add_gateway(&self, g: Gateway) -> Result<(i64, String), OpError> {
        let mut inner = lock(&self.inner);
        let r = inner.store.add_gateway(&g).map_err(|e| {
            if is_unique_violation(&e) {
                OpError::Conflict(format!("gwCode {:?} exists", g.gw_code))
            } else {
                storage(e)
            }
        })?;
        let gws = inner.store.gateways().map_err(storage)?;
        inner.engine.set_gateways(gws);
        Ok(r)
    }

    /// Updates a gateway; the password is kept when the update does not give one.
    /// `has_concurrency` false keeps the gateway's current capacity (an update that does not
    /// name `expectCount` must not silently stop the line).
    pub fn update_gateway(&self, mut g: Gateway, has_concurrency: bool) -> Result<(), OpError> {
        let mut inner = lock(&self.inner);
        let old = inner
            .store
            .gateway(g.id)
            .map_err(storage)?
            .ok_or_else(|| OpError::NotFound(format!("no gateway with id {}", g.id)))?;
        if old.gw_code != g.gw_code {
            return Err(OpError::Conflict(format!(
                "gateway {} has gwCode {:?}, not {:?}; a gateway's code cannot change",
                g.id, old.gw_code, g.gw_code
            )));
        }
        if g.password.is_none() {
            g.password = old.password;
        }
        if !has_concurrency {
            g.concurrency = old.concurrency;
        }
        inner.store.update_gateway(&g).map_err(storage)?;
        let gws = inner.store.gateways().map_err(storage)?;
        inner.engine.set_gateways(gws);
        self.wake.notify_one();
        Ok(())
    }

    pub fn gateways(&self) -> Result<Vec<Gateway>, OpError> {
        lock(&self.inner).store.gateways().map_err(storage)
    }

    /// getAvailableList: enabled gateways with their use.
    pub fn available(&self) -> Result<Vec<(Gateway, GatewayUsage)>, OpError> {
        let inner = lock(&self.inner);
        let usage: HashMap<String, GatewayUsage> = inner
            .engine
            .lines()
            .usage()
            .into_iter()
            .map(|u| (u.gw_code.clone(), u))
            .collect();
        Ok(inner
            .store
            .gateways()
            .map_err(storage)?
            .into_iter()
            .filter(|g| g.enabled)
            .filter_map(|g| usage.get(&g.gw_code).cloned().map(|u| (g, u)))
            .collect())
    }

    // ---- call lists and the blacklist ------------------------------------------------------

    /// Imports numbers into a list; returns the outcome and the list's last entry id.
    pub fn import(
        &self,
        list: &Code,
        raw: &[&str],
        mode: Dedupe,
        task: Option<&Code>,
        now: Now,
    ) -> Result<(ImportOutcome, i64), OpError> {
        if raw.len() > self.cfg.max_import {
            return Err(OpError::BadRequest(format!(
                "numbers: {} entries; at most {} per import",
                raw.len(),
                self.cfg.max_import
            )));
        }
        let mut inner = lock(&self.inner);
        let in_batch = match mode {
            Dedupe::WithinBatch | Dedupe::WithinTask => {
                inner.store.list_numbers(list.as_str()).map_err(storage)?
            }
            _ => Default::default(),
        };
        let in_task = match (mode, task) {
            (Dedupe::WithinTask, Some(t)) => {
                if inner.engine.task(t.as_str()).is_none() {
                    return Err(OpError::NotFound(format!("unknown callTaskCode {t}")));
                }
                inner.store.task_number_set(t.as_str()).map_err(storage)?
            }
            (Dedupe::WithinTask, None) => {
                return Err(OpError::BadRequest(
                    "deduplicationType 4 needs callTaskCode".into(),
                ))
            }
            _ => Default::default(),
        };
        let store = &inner.store;
        let outcome = numbers::import(raw.iter().copied(), mode, &in_batch, &in_task, |n| {
            store.blacklisted(n.as_str()).unwrap_or(true)
        });
        let last = inner
            .store
            .append_list(list.as_str(), &outcome.accepted, now.unix_ms)
            .map_err(storage)?;
        Ok((outcome, last))
    }

    pub fn blacklist_add(&self, numbers: &[PhoneNumber], now: Now) -> Result<usize, OpError> {
        lock(&self.inner)
            .store
            .blacklist_add(numbers, now.unix_ms)
            .map_err(storage)
    }

    pub fn blacklist_remove(&self, numbers: &[PhoneNumber]) -> Result<usize, OpError> {
        lock(&self.inner)
            .store
            .blacklist_remove(numbers)
            .map_err(storage)
    }

    pub fn blacklist_page(&self, offset: u64, limit: u64) -> Result<(u64, Vec<String>), OpError> {
        lock(&self.inner)
            .store
            .blacklist_page(offset, limit)
            .map_err(storage)
    }

    // ---- tasks -----------------------------------------------------------------------------

    fn check_lines(inner: &Inner, lines: &[TaskLine]) -> Result<Vec<Gateway>, OpError> {
        let gws = inner.store.gateways().map_err(storage)?;
        let mut used = Vec::new();
        for l in lines {
            match gws.iter().find(|g| g.gw_code == l.code) {
                Some(g) => used.push(g.clone()),
                None => {
                    return Err(OpError::BadRequest(format!(
                        "callGWs: unknown gateway {:?}",
                        l.code
                    )))
                }
            }
        }
        Ok(used)
    }

    /// submitCallTask: checks the project, lines, number source and caller ID, then creates
    /// the task with its numbers (status 1). Returns the number count.
    pub fn submit(&self, spec: TaskSpec, now: Now) -> Result<u64, OpError> {
        let project = ProjectCode::parse(&spec.project)
            .map_err(|e| OpError::BadRequest(format!("projectCode: {e}")))?;
        self.agents.project_members(&project, None)?;
        let mut inner = lock(&self.inner);
        if inner.engine.task(spec.code.as_str()).is_some() {
            return Err(OpError::Conflict(format!(
                "callTaskCode {} exists",
                spec.code
            )));
        }
        let gws = Self::check_lines(&inner, &spec.lines)?;
        let caller = task_caller_id(&inner.store, &spec);
        if caller.is_none() && gws.iter().any(|g| g.origination_call_id.is_none()) {
            return Err(OpError::BadRequest(
                "no caller ID: give outboundNumberGroups for orgNo, set a 保底号码 for cityOrgNo, or give every gateway in callGWs an originationCallId".into(),
            ));
        }
        let numbers: Vec<(Option<i64>, String)> = match &spec.source {
            NumberSource::List(list) => {
                if !inner.store.list_exists(list.as_str()).map_err(storage)? {
                    return Err(OpError::NotFound(format!("unknown callListId {list}")));
                }
                inner
                    .store
                    .list_entries_after(list.as_str(), 0)
                    .map_err(storage)?
            }
            NumberSource::Recall { task, results } => {
                if inner.engine.task(task.as_str()).is_none() {
                    return Err(OpError::NotFound(format!(
                        "unknown originalCallTaskCode {task}"
                    )));
                }
                inner
                    .store
                    .numbers_by_result(task.as_str(), results, 0, 0, u64::MAX >> 1)
                    .map_err(storage)?
                    .1
                    .into_iter()
                    .map(|(_, n)| (None, n))
                    .collect()
            }
        };
        let total = inner
            .store
            .create_task(&spec, &numbers, now.unix_ms)
            .map_err(|e| {
                if is_unique_violation(&e) {
                    OpError::Conflict(format!("callTaskCode {} exists", spec.code))
                } else {
                    storage(e)
                }
            })?;
        let code = spec.code.as_str().to_owned();
        inner
            .engine
            .upsert_task(
                spec,
                TaskStatus::Initialized,
                Counters::default(),
                total,
                caller,
            )
            .map_err(OpError::BadRequest)?;
        inner
            .persisted
            .insert(code.clone(), TaskStatus::Initialized);
        drop(inner);
        self.publish_status(&code, now.unix_ms);
        self.update_gauges(now.unix_ms);
        Ok(total)
    }

    /// start / pause / end.
    pub fn set_status(&self, code: &Code, to: TaskStatus, now: Now) -> Result<(), OpError> {
        let mut inner = lock(&self.inner);
        let from = inner
            .engine
            .task(code.as_str())
            .map(|t| t.status)
            .ok_or_else(|| OpError::NotFound(format!("unknown callTaskCode {code}")))?;
        if from == TaskStatus::Ended && to != TaskStatus::Ended {
            return Err(OpError::Conflict(format!("call task {code} has ended")));
        }
        if to == TaskStatus::Running {
            // The 保底号码 may have been set since the task was submitted.
            let spec = inner.engine.task(code.as_str()).map(|t| t.spec.clone());
            if let Some(spec) = spec {
                if now.unix_ms >= spec.expires_ms {
                    return Err(OpError::Conflict(format!("call task {code} has expired")));
                }
                let caller = task_caller_id(&inner.store, &spec);
                let (status, counters, total) = inner
                    .engine
                    .task(code.as_str())
                    .map(|t| (t.status, t.counters, t.total))
                    .unwrap_or((from, Counters::default(), 0));
                inner
                    .engine
                    .upsert_task(spec, status, counters, total, caller)
                    .map_err(OpError::BadRequest)?;
            }
        }
        inner
            .store
            .set_task_status(code.as_str(), to, now.unix_ms)
            .map_err(storage)?;
        inner.persisted.insert(code.as_str().to_owned(), to);
        inner.engine.set_status(code.as_str(), to);
        drop(inner);
        self.publish_status(code.as_str(), now.unix_ms);
        self.update_gauges(now.unix_ms);
        self.wake.notify_one();
        Ok(())
    }

    /// setTaskConcurrent: new lines and rate.
    pub fn set_concurrent(
        &self,
        code: &Code,
        lines: Vec<TaskLine>,
        rate: f64,
        now: Now,
    ) -> Result<(), OpError> {
        let mut inner = lock(&self.inner);
        let t = inner
            .engine
            .task(code.as_str())
            .ok_or_else(|| OpError::NotFound(format!("unknown callTaskCode {code}")))?;
        if t.status == TaskStatus::Ended {
            return Err(OpError::Conflict(format!("call task {code} has ended")));
        }
        let (mut spec, status, counters, total, caller) = (
            t.spec.clone(),
            t.status,
            t.counters,
            t.total,
            t.caller_id.clone(),
        );
        Self::check_lines(&inner, &lines)?;
        spec.lines = lines;
        spec.rate = rate;
        inner
            .store
            .update_task_spec(&spec, now.unix_ms)
            .map_err(storage)?;
        inner
            .engine
            .upsert_task(spec, status, counters, total, caller)
            .map_err(OpError::BadRequest)?;
        drop(inner);
        self.publish_status(code.as_str(), now.unix_ms);
        self.wake.notify_one();
        Ok(())
    }

    /// callTaskAdditional: the list's entries after `last_id` join the task. Returns how many.
    pub fn additional(&self, code: &Code, last_id: i64, now: Now) -> Result<u64, OpError> {
        let mut inner = lock(&self.inner);
        let t = inner
            .engine
            .task(code.as_str())
            .ok_or_else(|| OpError::NotFound(format!("unknown callTaskCode {code}")))?;
        if t.status == TaskStatus::Ended {
            return Err(OpError::Conflict(format!("call task {code} has ended")));
        }
        let NumberSource::List(list) = t.spec.source.clone() else {
            return Err(OpError::Conflict(format!(
                "call task {code} is a recall task and has no call list"
            )));
        };
        let held = inner.store.task_entry_ids(code.as_str()).map_err(storage)?;
        let fresh: Vec<(Option<i64>, String)> = inner
            .store
            .list_entries_after(list.as_str(), last_id.max(0))
            .map_err(storage)?
            .into_iter()
            .filter(|(id, _)| id.is_some_and(|id| !held.contains(&id)))
            .collect();
        let n = fresh.len() as u64;
        inner
            .store
            .add_task_numbers(code.as_str(), &fresh)
            .map_err(storage)?;
        inner.engine.add_total(code.as_str(), n);
        drop(inner);
        self.publish_status(code.as_str(), now.unix_ms);
        self.wake.notify_one();
        Ok(n)
    }

    /// getCallList: hands numbers of a running preview task to an agent.
    pub fn hand_out(&self, code: &Code, count: u32, now: Now) -> Result<Vec<String>, OpError> {
        let mut inner = lock(&self.inner);
        let t = inner
            .engine
            .task(code.as_str())
            .ok_or_else(|| OpError::NotFound(format!("unknown callTaskCode {code}")))?;
        if t.spec.call_type != super::task::CallType::Preview {
            return Err(OpError::Conflict(format!(
                "call task {code} is predictive; getCallList serves preview tasks"
            )));
        }
        if t.status != TaskStatus::Running {
            return Err(OpError::Conflict(format!(
                "call task {code} is {}, not running",
                t.status.label()
            )));
        }
        let mut out = Vec::new();
        let mut suppressed = false;
        // Blacklisted numbers are logged as suppressed and never handed out.
        while out.len() < count as usize {
            let want = count - out.len() as u32;
            let got = inner
                .store
                .hand_out(code.as_str(), want, now.unix_ms)
                .map_err(storage)?;
            if got.is_empty() {
                break;
            }
            for (id, n) in got {
                if inner.store.blacklisted(&n).map_err(storage)? {
                    self.suppress(&mut inner, code.as_str(), id, &n, now.unix_ms);
                    suppressed = true;
                    continue;
                }
                out.push(n);
            }
        }
        drop(inner);
        if suppressed {
            self.publish_status(code.as_str(), now.unix_ms);
        }
        Ok(out)
    }

    pub fn status(&self, code: &Code, now: Now) -> Result<TaskStatusView, OpError> {
        self.status_view(code.as_str(), now.unix_ms, true)
            .ok_or_else(|| OpError::NotFound(format!("unknown callTaskCode {code}")))
    }

    /// A task's status; the abandon rates (two range scans of the log) only `with_rates`.
    fn status_view(&self, code: &str, now_ms: u64, with_rates: bool) -> Option<TaskStatusView> {
        let inner = lock(&self.inner);
        let t = inner.engine.task(code)?;
        let log = ComplianceLog::new(inner.store.connection());
        let stats = |w| {
            if !with_rates {
                return AbandonStats::new(0, 0);
            }
            log.abandon_stats(code, now_ms, w)
                .unwrap_or(AbandonStats::new(0, 0))
        };
        Some(TaskStatusView {
            code: code.to_owned(),
            project: t.spec.project.clone(),
            status: t.status,
            rate: t.spec.rate,
            counters: t.counters,
            total: t.total,
            running: inner.engine.in_flight(code),
            abandon_24h: stats(WINDOW_24_HOURS_MS),
            abandon_30d: stats(WINDOW_30_DAYS_MS),
            pacing: t.pacer_name(),
        })
    }

    /// The compliance log of a task, in id order after `after`.
    pub fn attempts(
        &self,
        code: &Code,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Attempt)>, OpError> {
        let inner = lock(&self.inner);
        if inner.engine.task(code.as_str()).is_none() {
            return Err(OpError::NotFound(format!("unknown callTaskCode {code}")));
        }
        ComplianceLog::new(inner.store.connection())
            .attempts(code.as_str(), after, limit)
            .map_err(storage)
    }

    pub fn call_log(&self, q: &LogQuery<'_>) -> Result<(u64, Vec<LogRow>), OpError> {
        lock(&self.inner).store.call_log(q).map_err(storage)
    }

    pub fn numbers_by_result(
        &self,
        code: &Code,
        results: &[u8],
        after: i64,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<(i64, String)>), OpError> {
        let inner = lock(&self.inner);
        if inner.engine.task(code.as_str()).is_none() {
            return Err(OpError::NotFound(format!("unknown callTaskCode {code}")));
        }
        inner
            .store
            .numbers_by_result(code.as_str(), results, after, offset, limit)
            .map_err(storage)
    }

    // ---- the stream and metrics --------------------------------------------------------------

    /// Publishes callTaskStatus (counters only: the rolling rates are refreshed for the
    /// metrics every few seconds by [`Self::update_gauges`], not per call).
    fn publish_status(&self, code: &str, now_ms: u64) {
        let Some(v) = self.status_view(code, now_ms, false) else {
            return;
        };
        let topic = format!("/topic/callTaskStatus/{}", v.project);
        self.hub.publish(&topic, || {
            serde_json::json!({
                "code": v.code,
                "totalCnt": v.total,
                "failCnt": v.counters.fail,
                "rejectCnt": v.counters.reject,
                "missCnt": v.counters.miss,
                "successCnt": v.counters.success,
                "rate": v.rate,
                "status": v.status.code(),
                "runningCnt": v.running,
            })
        });
        self.metrics
            .in_flight
            .with_label_values(&[code])
            .set(i64::from(v.running));
    }

    fn update_gauges(&self, now_ms: u64) {
        let codes: Vec<(String, TaskStatus)> = {
            let inner = lock(&self.inner);
            inner
                .engine
                .tasks()
                .map(|t| (t.spec.code.as_str().to_owned(), t.status))
                .collect()
        };
        for s in TaskStatus::ALL {
            let n = codes.iter().filter(|(_, st)| *st == s).count();
            self.metrics
                .tasks
                .with_label_values(&[s.label()])
                .set(n as i64);
        }
        // The rolling rates of tasks that are not ended (ended tasks keep their last value).
        for (code, st) in codes {
            if st != TaskStatus::Ended {
                self.publish_metrics_only(&code, now_ms);
            }
        }
    }

    fn publish_metrics_only(&self, code: &str, now_ms: u64) {
        if let Some(v) = self.status_view(code, now_ms, true) {
            self.metrics
                .abandon_rate
                .with_label_values(&[code, "24h"])
                .set(v.abandon_24h.rate);
            self.metrics
                .abandon_rate
                .with_label_values(&[code, "30d"])
                .set(v.abandon_30d.rate);
            self.metrics
                .in_flight
                .with_label_values(&[code])
                .set(i64::from(v.running));
        }
    }

    // ---- the runtime -------------------------------------------------------------------------

    /// What the switch adapter forwards: channel events of calls that may be ours.
    pub fn wants_event(ev: &EslEvent) -> bool {
        matches!(
            ev.name(),
            Some("CHANNEL_ANSWER" | "CHANNEL_BRIDGE" | "CHANNEL_HANGUP_COMPLETE")
        )
    }

    /// Translates a channel event into the engine's terms, with the event's own time (capped
    /// at `now`: the 2-second rule is about when things happened, not when we read them). The
    /// engine ignores calls it does not know.
    fn input_of(ev: &EslEvent, now_ms: u64) -> Option<(SwitchInput, u64)> {
        let uuid = ev.get("Unique-ID").filter(|u| !u.is_empty())?.to_owned();
        let at = ev
            .get("Event-Date-Timestamp")
            .and_then(|t| t.trim().parse::<u64>().ok())
            .map(|us| (us / 1000).min(now_ms))
            .filter(|&ms| ms > 0)
            .unwrap_or(now_ms);
        let input = match ev.name()? {
            "CHANNEL_ANSWER" => SwitchInput::Answered {
                uuid,
                machine: ev
                    .var("amd_result")
                    .is_some_and(|v| v.eq_ignore_ascii_case("MACHINE")),
            },
            "CHANNEL_BRIDGE" => SwitchInput::Bridged { uuid },
            "CHANNEL_HANGUP_COMPLETE" => {
                let disp = ev.var("sip_hangup_disposition").unwrap_or("");
                SwitchInput::Hangup {
                    uuid,
                    cause: ev.get("Hangup-Cause").unwrap_or("").to_owned(),
                    customer_hung_up: disp.starts_with("recv_"),
                    sip_status: ev.var("sip_term_status").and_then(|s| s.parse().ok()),
                }
            }
            _ => return None,
        };
        Some((input, at))
    }

    /// Runs the dialer until `shutdown`: paces every running task each tick (and when woken),
    /// originates through `esl`, and applies the switch's events (from the adapter) and job
    /// results as they come.
    pub async fn run(
        self: Arc<Self>,
        esl: Option<EslClient>,
        mut feed: mpsc::Receiver<DialerFeed>,
        shutdown: CancellationToken,
    ) {
        let (results_tx, mut results) = mpsc::channel::<SwitchInput>(self.cfg.event_queue);
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.tick_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut gauges_at = 0u64;
        loop {
            // Pacing (presence snapshot, SQLite claims) runs on the tick or when woken, never
            // per event: a burst of events must not turn into a burst of database work.
            let pace = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => true,
                _ = self.wake.notified() => true,
                Some(item) = feed.recv() => {
                    let now = Now::system().unix_ms;
                    match item {
                        DialerFeed::Event(ev) => {
                            if let Some((input, at)) = Self::input_of(&ev, now) {
                                self.apply(input, at, &esl, &results_tx);
                            }
                        }
                        DialerFeed::Live { uuids, since_ms } => {
                            let out = {
                                let mut inner = lock(&self.inner);
                                let out = inner.engine.reconcile(&uuids, since_ms, now);
                                self.commit_finished(&mut inner, out, now)
                            };
                            self.carry_out(out, &esl, &results_tx, now);
                        }
                    }
                    false
                }
                Some(input) = results.recv() => {
                    let now = Now::system().unix_ms;
                    self.apply(input, now, &esl, &results_tx);
                    false
                }
            };
            if !pace {
                continue;
            }
            let now = Now::system().unix_ms;
            let connected = esl.as_ref().is_some_and(EslClient::is_connected);
            let outputs = self.step(now, connected);
            self.carry_out(outputs, &esl, &results_tx, now);
            if now >= gauges_at {
                gauges_at = now + 5_000;
                self.update_gauges(now);
            }
        }
    }

    fn apply(
        &self,
        input: SwitchInput,
        at_ms: u64,
        esl: &Option<EslClient>,
        results: &mpsc::Sender<SwitchInput>,
    ) {
        let out = {
            let mut inner = lock(&self.inner);
            let out = inner.engine.on_switch(input, at_ms);
            self.commit_finished(&mut inner, out, at_ms)
        };
        self.carry_out(out, esl, results, at_ms);
    }

    /// One pacing round: timers, connections, launches.
    fn step(&self, now: u64, connected: bool) -> Vec<Output> {
        let agents: HashMap<String, Vec<AgentSnapshot>> = self
            .agents
            .project_agents()
            .into_iter()
            .map(|(p, list)| {
                let snaps = list
                    .into_iter()
                    .filter_map(|(ext, state, since_ms)| {
                        phase(&state).map(|phase| AgentSnapshot {
                            ext,
                            phase,
                            since_ms,
                        })
                    })
                    .collect();
                (p, snaps)
            })
            .collect();
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let mut out = inner.engine.tick(now);
        out.extend(inner.engine.connect(&agents, now));
        if connected {
            out.extend(self.launch(inner, &agents, now));
        }
        self.commit_finished(inner, out, now)
    }

    fn launch(
        &self,
        inner: &mut Inner,
        agents: &HashMap<String, Vec<AgentSnapshot>>,
        now: u64,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        // Tasks that ran dry are looked at again every few seconds (retries fall due).
        if now % 5_000 < self.cfg.tick_ms {
            let dry: Vec<String> = inner
                .engine
                .tasks()
                .filter(|t| t.status == TaskStatus::Running && t.drained)
                .map(|t| t.spec.code.as_str().to_owned())
                .collect();
            for code in dry {
                inner.engine.set_drained(&code, false);
            }
        }
        let mut running: Vec<(String, String)> = inner
            .engine
            .tasks()
            .filter(|t| t.status == TaskStatus::Running && !t.drained)
            .map(|t| (t.spec.code.as_str().to_owned(), t.spec.project.clone()))
            .collect();
        // Tasks sharing a gateway take turns going first, or the first in code order would
        // take every line that frees up and starve the others.
        if !running.is_empty() {
            inner.round = inner.round.wrapping_add(1);
            let k = inner.round % running.len();
            running.rotate_left(k);
        }
        for (code, project) in running {
            let list = agents.get(&project).map(Vec::as_slice).unwrap_or(&[]);
            let n = inner.engine.launch_count(&code, list, now);
            if n == 0 {
                continue;
            }
            let due = match inner.store.claim_due(&code, n, now) {
                Ok(d) => d,
                Err(e) => {
                    self.metrics.store_errors.inc();
                    tracing::error!(task = %code, error = %e, "claiming numbers failed");
                    continue;
                }
            };
            if (due.len() as u32) < n {
                inner.engine.set_drained(&code, true);
            }
            let mut unclaim = Vec::new();
            for d in due {
                // The blacklist may have grown since the import; an add-zero retry is checked
                // under both forms. A failed lookup fails closed: the number waits.
                let listed = match (
                    inner.store.blacklisted(&d.number),
                    inner.store.blacklisted(&d.original),
                ) {
                    (Ok(a), Ok(b)) => a || b,
                    (Err(e), _) | (_, Err(e)) => {
                        self.metrics.store_errors.inc();
                        tracing::error!(task = %code, error = %e, "blacklist lookup failed");
                        unclaim.push(d.id);
                        continue;
                    }
                };
                if listed {
                    self.suppress(inner, &code, d.id, &d.number, now);
                    out.push(Output::Status { task: code.clone() });
                    continue;
                }
                let uuid = new_job_uuid();
                match inner.engine.launch(&code, &d, &uuid, now) {
                    Some(o) => {
                        self.metrics.launches.with_label_values(&[&code]).inc();
                        out.push(o);
                    }
                    None => unclaim.push(d.id),
                }
            }
            if !unclaim.is_empty() {
                if let Err(e) = inner.store.unclaim(&unclaim) {
                    self.metrics.store_errors.inc();
                    tracing::error!(task = %code, error = %e, "giving numbers back failed");
                }
            }
        }
        out
    }

    /// Logs a number that is never dialled because it is blacklisted.
    fn suppress(&self, inner: &mut Inner, task: &str, number_id: i64, number: &str, now: u64) {
        let attempt = Attempt::without_call(
            task,
            number,
            number_id,
            AttemptOutcome::Suppressed,
            "blacklisted",
            now,
        );
        if let Err(e) = inner.store.finish_attempt(&attempt, None) {
            self.metrics.store_errors.inc();
            tracing::error!(task, error = %e, "logging a suppressed number failed");
            return;
        }
        inner.engine.suppressed(task);
        self.metrics
            .attempts
            .with_label_values(&[task, "suppressed"])
            .inc();
    }

    /// Commits every finished attempt (compliance row, the number's next state, its retry)
    /// while the engine's lock is still held, so no reader ever sees counters that count an
    /// attempt the log does not hold yet. Returns the other outputs.
    fn commit_finished(&self, inner: &mut Inner, outputs: Vec<Output>, now: u64) -> Vec<Output> {
        let mut rest = Vec::with_capacity(outputs.len());
        for o in outputs {
            match o {
                Output::Finished(f) => self.record(inner, f, now),
                Output::Unclaim { number_id } => {
                    if let Err(e) = inner.store.unclaim(&[number_id]) {
                        self.metrics.store_errors.inc();
                        tracing::error!(error = %e, "giving a number back failed");
                    }
                }
                other => rest.push(other),
            }
        }
        rest
    }

    /// Logs a finished attempt and schedules its retry (each rule has its own budget), in one
    /// transaction.
    fn record(&self, inner: &mut Inner, f: Finished, now: u64) {
        let rules = inner
            .engine
            .task(&f.task)
            .map(|t| t.spec.retry_rules.clone())
            .unwrap_or_default();
        let retry = matching_rule(&rules, f.result).and_then(|rule| {
            let number_id = f.attempt.task_number_id?;
            let used = inner
                .store
                .retry_count(number_id, rule.status.code())
                .unwrap_or(u8::MAX);
            next_retry(
                std::slice::from_ref(rule),
                f.result,
                &f.attempt.number,
                used,
                now,
            )
            .map(|r| (r.at_ms, r.number, rule.status.code()))
        });
        if retry.is_some() {
            inner.engine.set_drained(&f.task, false);
        }
        match inner.store.finish_attempt(&f.attempt, retry) {
            Ok(_) => {
                self.metrics
                    .attempts
                    .with_label_values(&[&f.task, f.attempt.outcome.as_str()])
                    .inc();
            }
            Err(e) => {
                // The in-memory counters already hold this attempt; the number stays in
                // flight in the table and is closed as "outcome unknown" at the next start.
                self.metrics.store_errors.inc();
                tracing::error!(task = %f.task, error = %e, "logging an attempt failed");
            }
        }
    }

    /// Carries out what needs no lock: commands go to the switch (their results come back
    /// through `results`), status to the stream.
    fn carry_out(
        &self,
        outputs: Vec<Output>,
        esl: &Option<EslClient>,
        results: &mpsc::Sender<SwitchInput>,
        now: u64,
    ) {
        let mut status_of: Vec<String> = Vec::new();
        for o in outputs {
            match o {
                Output::Command { uuid, command } => self.send(uuid, command, esl, results),
                Output::Status { task } => {
                    if !status_of.contains(&task) {
                        status_of.push(task);
                    }
                }
                Output::Paused { task, reason } => {
                    tracing::warn!(task = %task, ?reason, "call task paused itself");
                    if !status_of.contains(&task) {
                        status_of.push(task);
                    }
                }
                Output::Finished(_) | Output::Unclaim { .. } => {
                    tracing::error!("a finished attempt reached carry_out uncommitted");
                }
            }
        }
        for task in status_of {
            self.persist_status(&task, now);
            self.publish_status(&task, now);
        }
    }

    /// Writes a task's status when the engine changed it (pause by the guard, expiry).
    fn persist_status(&self, task: &str, now: u64) {
        let mut inner = lock(&self.inner);
        let Some(status) = inner.engine.task(task).map(|t| t.status) else {
            return;
        };
        if inner.persisted.get(task) == Some(&status) {
            return;
        }
        match inner.store.set_task_status(task, status, now) {
            Ok(()) => {
                inner.persisted.insert(task.to_owned(), status);
            }
            Err(e) => {
                self.metrics.store_errors.inc();
                tracing::error!(task, error = %e, "writing the task status failed");
            }
        }
    }

    fn send(
        &self,
        uuid: String,
        command: String,
        esl: &Option<EslClient>,
        results: &mpsc::Sender<SwitchInput>,
    ) {
        let kind: &'static str = match command.split(' ').next() {
            Some("originate") => "originate",
            Some("uuid_transfer") => "uuid_transfer",
            Some("uuid_kill") => "uuid_kill",
            _ => "other",
        };
        let Some(esl) = esl.clone() else {
            let input = match kind {
                "originate" => SwitchInput::NotSent { uuid },
                "uuid_kill" => SwitchInput::KillResult {
                    uuid,
                    result: KillResult::Failed,
                },
                _ => SwitchInput::TransferFailed { uuid },
            };
            let _ = results.try_send(input);
            return;
        };
        let results = results.clone();
        let counter = self.metrics.commands.clone();
        tokio::spawn(async move {
            let r = esl.bgapi(&command).await;
            let label = match &r {
                Ok(body) if body.starts_with("+OK") => "ok",
                Ok(_) => "err",
                Err(_) => "lost",
            };
            counter.with_label_values(&[kind, label]).inc();
            let input = match (kind, r) {
                ("originate", Ok(body)) => {
                    let body = body.trim();
                    match body.strip_prefix("-ERR") {
                        Some(cause) => SwitchInput::Job {
                            uuid,
                            ok: false,
                            cause: cause.trim().to_owned(),
                        },
                        None => SwitchInput::Job {
                            uuid,
                            ok: body.starts_with("+OK"),
                            cause: String::new(),
                        },
                    }
                }
                // Sent, but the answer never came: the call may be up.
                ("originate", Err(EslClientError::Timeout | EslClientError::Disconnected)) => {
                    SwitchInput::JobUnknown { uuid }
                }
                // Never reached FreeSWITCH (not connected, queue full, refused outright).
                ("originate", Err(e)) => {
                    tracing::warn!(error = %e, "originate not sent");
                    SwitchInput::NotSent { uuid }
                }
                ("uuid_transfer", Ok(body)) if !body.starts_with("+OK") => {
                    SwitchInput::TransferFailed { uuid }
                }
                ("uuid_transfer", Err(_)) => SwitchInput::TransferFailed { uuid },
                ("uuid_kill", Ok(body)) => SwitchInput::KillResult {
                    uuid,
                    result: if body.starts_with("+OK") {
                        KillResult::Ok
                    } else if body.contains("No such channel") {
                        KillResult::Gone
                    } else {
                        KillResult::Failed
                    },
                },
                ("uuid_kill", Err(_)) => SwitchInput::KillResult {
                    uuid,
                    result: KillResult::Failed,
                },
                _ => return,
            };
            // Bounded: a full queue waits here, in this call's own task, not in the loop.
            let _ = results.send(input).await;
        });
    }

    /// Counts an event the adapter could not queue.
    pub fn event_dropped(&self) {
        self.metrics.events_dropped.inc();
    }
}

/// What the switch adapter feeds the dialer.
#[derive(Debug)]
pub enum DialerFeed {
    /// A channel event (answer, bridge, hang-up) that may concern one of our calls.
    Event(EslEvent),
    /// The live channels after an event-socket (re)connect, as of `since_ms`.
    Live {
        uuids: std::collections::HashSet<String>,
        since_ms: u64,
    },
}
