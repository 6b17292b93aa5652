//! The bridge from domain events to the outbox: builds each enabled push's payload in the
//! contract's format (by the serializers of this module's siblings) and enqueues it with its
//! ordering key and idempotency key.
//!
//! * Call records (话单推送, and the signed 明细 format) are enqueued by the CDR service inside
//!   the transaction that stores them ([`RecordForwarder`]): committed together or not at all.
//! * Agent events (坐席事件/考勤) are enqueued as presence emits them ([`AgentEventSink`]);
//!   presence is the record of truth and the outbox row is the only copy of the event, so the
//!   writer's group commit is the durable write. Heartbeats report every signed-in agent's
//!   current state every `heartbeat_secs`, except agents whose lane still holds undelivered
//!   events (a heartbeat must not queue behind a backlog it would only repeat).
//! * Directory changes (坐席信息变更, 网格接入号信息变更) are found by comparing the directory
//!   with the last snapshot pushed, which is stored in `meta` and updated in the transaction
//!   that enqueues the changes: every change is pushed once, whatever made it (config reload,
//!   the management API, the grid's own change push), and a restart neither loses nor
//!   repeats one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::agent_event::{self, AgentEventFormat, AgentInfo, AgentStatus};
use super::cdr::{to_grid, TimeFormat};
use super::changes::{self, AgentSnapshot, ChangesConfig};
use super::detail::{self, DetailExtras, DetailFormat};
use super::push::GridPush;
use super::targets::GridConfig;
use crate::agents::directory::{AccessNumber, Agent, SkillGroup};
use crate::agents::presence::AgentEvent;
use crate::agents::service::{AgentEventSink, AgentsService};
use crate::cdr::record::CallRecord;
use crate::cdr::service::RecordForwarder;
use crate::clock::Now;
use crate::outbox::{NewRecord, Outbox, Target};
use crate::store::{Durability, Store, StoreError};

/// The `meta` key of the last directory snapshot pushed.
const PUSHED_DIRECTORY: &str = "grid.pushed_directory";

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct DirectorySnapshot {
    agents: Vec<Agent>,
    skill_groups: Vec<SkillGroup>,
    access_numbers: Vec<AccessNumber>,
}

/// Who an extension's agent is, for the agent-event push.
#[derive(Debug, Clone)]
struct Who {
    agent_id: String,
    name: String,
    department: String,
}

pub struct GridForwarder {
    outbox: Arc<Outbox>,
    ent_id: String,
    cdr_time: TimeFormat,
    agent_fmt: AgentEventFormat,
    changes: ChangesConfig,
    detail: DetailFormat,
    /// steamNumber sequences: start-up time in ms times a million plus a counter, so they are
    /// unique across restarts unless a run emits a million events per millisecond of uptime.
    seq: AtomicU64,
    /// Agents by extension, refreshed from the directory at every sync.
    who: RwLock<HashMap<String, Who>>,
    store: Mutex<Store>,
}

impl GridForwarder {
    pub fn new(
        outbox: Arc<Outbox>,
        grid: &GridConfig,
        cdr_time: TimeFormat,
        db_path: &Path,
        now: Now,
    ) -> anyhow::Result<Arc<GridForwarder>> {
        let agent_fmt = AgentEventFormat::new(&grid.agent_event).map_err(anyhow::Error::msg)?;
        let detail = DetailFormat::new(&grid.detail).map_err(anyhow::Error::msg)?;
        Ok(Arc::new(GridForwarder {
            outbox,
            ent_id: grid.ent_id.clone(),
            cdr_time,
            agent_fmt,
            changes: grid.changes.clone(),
            detail,
            seq: AtomicU64::new(now.unix_ms.saturating_mul(1_000_000)),
            who: RwLock::new(HashMap::new()),
            store: Mutex::new(Store::open(db_path, Durability::Full)?),
        }))
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn who(&self, extension: &str) -> Option<Who> {
        self.who
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(extension)
            .cloned()
    }

    /// A change's outbox row. Its idempotency key is salted with a sequence: the same change
    /// made again later (add, delete, add) is a new push, not a duplicate.
    fn change_record(&self, p: changes::ChangePush, target: Target) -> NewRecord {
        let key = changes::salted_idempotency_key(&p, self.next_seq());
        let mut row = p.into_record(target);
        row.idempotency_key = key;
        row
    }

    /// Re-reads the directory, refreshes the agent names and enqueues the changes since the
    /// last snapshot pushed (in one transaction with the new snapshot). Returns how many
    /// changes were enqueued.
    pub fn sync_directory(&self, now_ms: u64) -> Result<usize, StoreError> {
        let agents_on = self.outbox.enabled(Target::AgentChange);
        let numbers_on = self.outbox.enabled(Target::AccessNumber);
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let mut current = DirectorySnapshot {
            agents: store.agents()?,
            skill_groups: store.skill_groups()?,
            access_numbers: store.access_numbers()?,
        };
        // entId is required (000:L593): an access number without its own carries
        // [grid.changes] default_ent_id, else ours.
        let default_ent = if self.changes.default_ent_id.is_empty() {
            &self.ent_id
        } else {
            &self.changes.default_ent_id
        };
        for n in &mut current.access_numbers {
            if n.ent_id.is_empty() {
                n.ent_id = default_ent.clone();
            }
        }
        {
            let mut who = self.who.write().unwrap_or_else(|e| e.into_inner());
            who.clear();
            for a in &current.agents {
                if let Some(ext) = &a.extension {
                    who.insert(
                        ext.clone(),
                        Who {
                            agent_id: a.agent_id.clone(),
                            name: a.name.clone(),
                            department: a.department.clone(),
                        },
                    );
                }
            }
        }
        if !agents_on && !numbers_on {
            return Ok(0);
        }
        let pushed: DirectorySnapshot = store
            .meta_get(PUSHED_DIRECTORY)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut rows = Vec::new();
        if agents_on {
            let old = AgentSnapshot {
                agents: &pushed.agents,
                skill_groups: &pushed.skill_groups,
            };
            let new = AgentSnapshot {
                agents: &current.agents,
                skill_groups: &current.skill_groups,
            };
            for c in changes::diff_agents(old, new) {
                rows.push(self.change_record(c.to_push(&self.changes), Target::AgentChange));
            }
        }
        if numbers_on {
            for c in changes::diff_access_numbers(&pushed.access_numbers, &current.access_numbers) {
                rows.push(self.change_record(c.to_push(&self.changes), Target::AccessNumber));
            }
        }
        if rows.is_empty() {
            return Ok(0);
        }
        // A target switched off keeps its side of the old snapshot, so switching it on
        // later pushes what changed meanwhile.
        let snapshot = DirectorySnapshot {
            agents: if agents_on {
                current.agents
            } else {
                pushed.agents
            },
            skill_groups: if agents_on {
                current.skill_groups
            } else {
                pushed.skill_groups
            },
            access_numbers: if numbers_on {
                current.access_numbers
            } else {
                pushed.access_numbers
            },
        };
        let conn = store.connection();
        let tx = conn.unchecked_transaction()?;
        for r in &rows {
            crate::outbox::store::insert(&tx, r, now_ms)?;
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            rusqlite::params![PUSHED_DIRECTORY, serde_json::to_vec(&snapshot).unwrap_or_default()],
        )?;
        tx.commit()?;
        drop(store);
        for t in [Target::AgentChange, Target::AccessNumber] {
            let n = rows.iter().filter(|r| r.target == t).count();
            if n > 0 {
                self.outbox.committed(t, n);
            }
        }
        tracing::info!(
            changes = rows.len(),
            "directory changes enqueued for the grid"
        );
        Ok(rows.len())
    }

    /// Heartbeats for every signed-in agent whose lane is idle. Returns how many.
    pub fn heartbeats(&self, agents: &AgentsService, now_ms: u64) -> usize {
        if !self.outbox.enabled(Target::AgentEvent) {
            return 0;
        }
        let statuses: Vec<AgentStatus> = agents.with_presence(|p| {
            p.seats()
                .map(|(ext, seat)| AgentStatus::of_seat(ext, seat))
                .collect()
        });
        let mut rows = Vec::new();
        for st in statuses {
            let who = self.who(&st.extension);
            let info = AgentInfo {
                agent_id: who.as_ref().map(|w| w.agent_id.as_str()),
                agent_name: who.as_ref().map(|w| w.name.as_str()).unwrap_or(""),
            };
            let Some(push) =
                agent_event::heartbeat(&st, &info, self.next_seq(), now_ms, &self.agent_fmt)
            else {
                continue; // signed out: no heartbeat
            };
            if self.outbox.lane_busy(Target::AgentEvent, push.lane_key()) {
                continue;
            }
            rows.push(push.into_record(Target::AgentEvent));
        }
        let n = rows.len();
        if n > 0 {
            if let Err(e) = self.outbox.enqueue_nowait(rows) {
                tracing::warn!(error = %e, "agent heartbeats not enqueued");
                return 0;
            }
        }
        n
    }

    /// Directory sync every `sync_secs`, heartbeats every `heartbeat_secs` (0: none).
    pub async fn run(
        self: Arc<Self>,
        agents: Arc<AgentsService>,
        sync_secs: u64,
        shutdown: CancellationToken,
    ) {
        let heartbeat_ms = self.agent_fmt.heartbeat_secs().saturating_mul(1000);
        let mut last_heartbeat = Now::system().unix_ms;
        let mut tick = tokio::time::interval(Duration::from_secs(sync_secs.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let me = Arc::clone(&self);
            let now = Now::system().unix_ms;
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || me.sync_directory(now)).await {
                tracing::warn!(error = %e, "directory sync for the grid failed; will retry");
            }
            if heartbeat_ms > 0 && now.saturating_sub(last_heartbeat) >= heartbeat_ms {
                last_heartbeat = now;
                // Stamped after the sync, when the states are read: a heartbeat's etime is
                // never earlier than the state it reports.
                self.heartbeats(&agents, Now::system().unix_ms);
            }
        }
    }
}

impl RecordForwarder for GridForwarder {
    fn outbox_records(&self, call_key: &str, records: &[CallRecord]) -> Vec<NewRecord> {
        let mut rows = Vec::new();
        if self.outbox.enabled(Target::Cdr) {
            // Per-call order: a call's segments share one lane, keyed by the call.
            for r in records {
                rows.push(
                    GridPush::new(
                        to_grid(r, &self.cdr_time),
                        r.stream_number.clone(),
                        call_key.to_string(),
                    )
                    .into_record(Target::Cdr),
                );
            }
        }
        if self.outbox.enabled(Target::Detail) {
            // The signed format describes a whole call: one push, from the last segment
            // (the one that ends the session).
            if let Some(r) = records.iter().rev().find(|r| detail::is_final_segment(r)) {
                let dept = r
                    .agent
                    .as_ref()
                    .and_then(|a| self.who(&a.extension))
                    .map(|w| w.department)
                    .unwrap_or_default();
                let extras = DetailExtras {
                    dept_name: &dept,
                    ..DetailExtras::default()
                };
                let push = detail::to_detail(
                    r,
                    &self.ent_id,
                    Now::system().unix_ms,
                    &extras,
                    &self.detail,
                );
                rows.push(push.into_record(Target::Detail));
            }
        }
        rows
    }

    fn committed(&self, rows: &[NewRecord]) {
        for t in Target::ALL {
            let n = rows.iter().filter(|r| r.target == t).count();
            if n > 0 {
                self.outbox.committed(t, n);
            }
        }
    }

    fn has_room(&self) -> bool {
        // Only the call-record pushes push back on the CDR receiver, and only when on: a
        // backlog of agent events must not stop FreeSWITCH's documents from being stored. A
        // call yields a handful of records of ~1.5 KB.
        let full = [Target::Cdr, Target::Detail]
            .into_iter()
            .find(|t| self.outbox.enabled(*t) && self.outbox.has_room(*t, 16 * 1024).is_err());
        match full {
            Some(t) => {
                self.outbox
                    .metrics
                    .refused
                    .with_label_values(&[t.as_str()])
                    .inc();
                false
            }
            None => true,
        }
    }
}

impl AgentEventSink for GridForwarder {
    fn publish(&self, events: &[AgentEvent]) {
        if !self.outbox.enabled(Target::AgentEvent) {
            return;
        }
        let mut rows = Vec::new();
        for ev in events {
            let who = self.who(&ev.extension);
            let info = AgentInfo {
                agent_id: who.as_ref().map(|w| w.agent_id.as_str()),
                agent_name: who.as_ref().map(|w| w.name.as_str()).unwrap_or(""),
            };
            if let Some(push) = agent_event::from_event(ev, &info, self.next_seq(), &self.agent_fmt)
            {
                rows.push(push.into_record(Target::AgentEvent));
            }
        }
        if rows.is_empty() {
            return;
        }
        let n = rows.len();
        if let Err(e) = self.outbox.enqueue_nowait(rows) {
            tracing::warn!(error = %e, events = n, "agent events not enqueued for the grid");
        }
    }
}
