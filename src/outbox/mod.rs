//! The durable outbox: at-least-once delivery of records to the grid platform.
//!
//! * [`record`]: what a record is (target, ordering key, idempotency key, payload).
//! * [`store`]: the `outbox` and `outbox_dead` tables; producers can enqueue inside their own
//!   transaction (the CDR service does, so a call's records and their outbox rows commit
//!   together).
//! * [`writer`]: the single SQLite writer with group commit (`synchronous=FULL`).
//! * [`scheduler`]: the sans-IO delivery core: per-key order, full-jitter backoff, target
//!   health with probes, dead-lettering.
//! * [`judge`]: how an HTTP answer is read (the grid's `{"code": "200"}` envelope).
//! * [`service`]: the async shell: HTTP client, delivery loop, back-pressure, replay.

pub mod cli;
pub mod config;
pub mod judge;
pub mod metrics;
pub mod record;
pub mod scheduler;
pub mod service;
pub mod store;
pub mod writer;

pub use config::OutboxConfig;
pub use record::{NewRecord, Pending, RecordId, Target};
pub use service::{EnqueueError, Outbox};
