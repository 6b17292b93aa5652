//! What the outbox holds: records bound for one push target, each with the key that orders it
//! and the idempotency key the receiver deduplicates on.

use std::fmt;

use bytes::Bytes;

/// A push of the grid contract (seed 000 section 二). Each has its own URL, credentials and
/// metrics label; records of different targets never wait for each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// 话单推送: one record per call segment.
    Cdr,
    /// 坐席事件(考勤)推送: agent state changes and heartbeats.
    AgentEvent,
    /// 坐席信息变更推送 (增删改).
    AgentChange,
    /// 网格接入号信息变更推送 (增删改).
    AccessNumber,
    /// 呼叫中心明细数据推送: the signed camelCase call detail format.
    Detail,
}

impl Target {
    pub const ALL: [Target; 5] = [
        Target::Cdr,
        Target::AgentEvent,
        Target::AgentChange,
        Target::AccessNumber,
        Target::Detail,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Cdr => "cdr",
            Target::AgentEvent => "agent_event",
            Target::AgentChange => "agent_change",
            Target::AccessNumber => "access_number",
            Target::Detail => "detail",
        }
    }

    pub fn parse(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outbox row id: SQLite's AUTOINCREMENT rowid, so it never repeats and grows in commit
/// order (SQLite has one writer at a time, and a row's id is taken inside its transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct RecordId(pub i64);

/// A record to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub target: Target,
    /// Records with the same target and key are delivered in enqueue order, one at a time
    /// (per call for CDRs, per agent for agent events).
    pub key: String,
    /// Sent as the idempotency header; equals the payload's own unique id (`streamnumber`,
    /// `steamNumber`), so a receiver can deduplicate on either.
    pub idempotency_key: String,
    /// The request body, exactly as it will be sent.
    pub payload: Bytes,
}

/// A committed record waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub id: RecordId,
    pub target: Target,
    pub key: String,
    pub idempotency_key: String,
    pub payload: Bytes,
    /// When it was committed (Unix ms).
    pub enqueued_ms: u64,
    /// Attempts that counted against `max_attempts` so far (persisted across restarts).
    pub attempts: u32,
}

impl Pending {
    /// What the record costs against `outbox.max_bytes`.
    pub fn size(&self) -> usize {
        self.payload.len() + self.key.len() + self.idempotency_key.len() + 64
    }
}
