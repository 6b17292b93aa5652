//! `[outbox]`: bounds, concurrency and retry policy of the durable outbox.

use serde::Deserialize;

use super::scheduler::SchedulerConfig;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Pending records above which producers are pushed back: the CDR receiver answers 503
    /// (FreeSWITCH keeps the document and retries), agent events are refused and counted.
    pub max_records: usize,
    /// The same bound in bytes of pending payload (the scheduler holds payloads in memory).
    pub max_bytes: usize,
    /// Deliveries in flight across all targets.
    pub concurrency: usize,
    /// Counted failures before a record is dead-lettered (0: only `max_age_secs` applies).
    pub max_attempts: u32,
    /// A record older than this is dead-lettered at its next failure.
    pub max_age_secs: u64,
    /// Full-jitter backoff: a retry waits random(0, min(max, base · 2^attempts)).
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Consecutive transient failures after which a target is treated as down and only
    /// probed.
    pub down_after: u32,
    /// Most records one group commit writes.
    pub commit_max_batch: usize,
    /// Records enqueued but not yet committed (the writer's queue).
    pub queue: usize,
    /// Dead letters older than this are deleted (0 keeps them for ever).
    pub dead_retention_days: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        let s = SchedulerConfig::default();
        OutboxConfig {
            max_records: 500_000,
            max_bytes: 512 << 20,
            concurrency: s.max_in_flight,
            max_attempts: s.max_attempts,
            max_age_secs: s.max_age_ms / 1000,
            backoff_base_ms: s.backoff_base_ms,
            backoff_max_ms: s.backoff_max_ms,
            down_after: s.down_after,
            commit_max_batch: 4096,
            queue: 65_536,
            dead_retention_days: 30,
        }
    }
}

impl OutboxConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let range = crate::config::check_range;
        range(
            "outbox.max_records",
            self.max_records as u64,
            1,
            100_000_000,
        )?;
        range("outbox.max_bytes", self.max_bytes as u64, 1 << 20, 64 << 30)?;
        range("outbox.concurrency", self.concurrency as u64, 1, 4096)?;
        range(
            "outbox.max_attempts",
            self.max_attempts as u64,
            0,
            1_000_000,
        )?;
        range("outbox.max_age_secs", self.max_age_secs, 1, 366 * 86_400)?;
        range("outbox.backoff_base_ms", self.backoff_base_ms, 1, 3_600_000)?;
        range(
            "outbox.backoff_max_ms",
            self.backoff_max_ms,
            self.backoff_base_ms,
            86_400_000,
        )?;
        range("outbox.down_after", self.down_after as u64, 1, 1_000_000)?;
        range(
            "outbox.commit_max_batch",
            self.commit_max_batch as u64,
            1,
            100_000,
        )?;
        range("outbox.queue", self.queue as u64, 1, 10_000_000)?;
        range(
            "outbox.dead_retention_days",
            self.dead_retention_days,
            0,
            3650,
        )?;
        Ok(())
    }

    pub fn scheduler(&self) -> SchedulerConfig {
        SchedulerConfig {
            max_in_flight: self.concurrency,
            backoff_base_ms: self.backoff_base_ms,
            backoff_max_ms: self.backoff_max_ms,
            max_attempts: self.max_attempts,
            max_age_ms: self.max_age_secs.saturating_mul(1000),
            down_after: self.down_after,
        }
    }
}
