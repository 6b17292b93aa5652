//! The outbox's single SQLite writer: a thread that group-commits.
//!
//! With `synchronous=FULL` every commit costs a device flush (0.1–2 ms here), so one record per
//! transaction caps the outbox near a thousand records a second. The writer blocks for the
//! first command, then takes whatever else is already queued (up to `commit_max_batch`
//! records) into the same transaction: under load, batches grow by themselves; when idle, a
//! record commits alone with no added delay. Acknowledgements go out only after the commit.
//! Delivery outcomes (deletes, attempt counts, dead letters) ride the same transactions.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{oneshot, Notify};

use super::metrics::OutboxMetrics;
use super::record::{NewRecord, RecordId};
use super::scheduler::Decision;
use super::store::{self, ReplaySelection};
use crate::clock::Now;

pub type Ack = oneshot::Sender<Result<Vec<RecordId>, String>>;

pub enum Command {
    Enqueue {
        records: Vec<NewRecord>,
        /// None: fire and forget (the caller does not wait for durability).
        ack: Option<Ack>,
    },
    Apply(Vec<Decision>),
    Replay {
        which: ReplaySelection,
        ack: oneshot::Sender<Result<usize, String>>,
    },
    /// Delete dead letters that died before this time.
    PruneDead {
        before_ms: u64,
    },
}

#[derive(Clone)]
pub struct WriterHandle {
    tx: SyncSender<Command>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the outbox writer queue is full")]
    Full,
    #[error("the outbox writer has stopped")]
    Closed,
}

impl WriterHandle {
    pub fn try_send(&self, cmd: Command) -> Result<(), SendError> {
        self.tx.try_send(cmd).map_err(|e| match e {
            TrySendError::Full(_) => SendError::Full,
            TrySendError::Disconnected(_) => SendError::Closed,
        })
    }

    /// Hands delivery outcomes over, or gives them back when the queue is full.
    pub fn try_apply(&self, decisions: Vec<Decision>) -> Result<(), Vec<Decision>> {
        match self.tx.try_send(Command::Apply(decisions)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Command::Apply(d))) => Err(d),
            // A stopped writer commits nothing more: the rows stay and are delivered again.
            Err(_) => Ok(()),
        }
    }

    /// Waits for room (the delivery loop's outcomes must not be dropped; they are few).
    pub fn send_blocking(&self, cmd: Command) -> Result<(), SendError> {
        self.tx.send(cmd).map_err(|_| SendError::Closed)
    }
}

/// Starts the writer thread. It ends when every handle is dropped, after committing what was
/// queued.
pub fn spawn(
    conn: Connection,
    queue: usize,
    max_batch: usize,
    notify: Arc<Notify>,
    metrics: Arc<OutboxMetrics>,
) -> std::io::Result<(WriterHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel(queue);
    let join = std::thread::Builder::new()
        .name("gridedge-outbox".into())
        .spawn(move || run(conn, rx, max_batch, notify, metrics))?;
    Ok((WriterHandle { tx }, join))
}

fn run(
    mut conn: Connection,
    rx: Receiver<Command>,
    max_batch: usize,
    notify: Arc<Notify>,
    metrics: Arc<OutboxMetrics>,
) {
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(3600)) {
            Ok(c) => c,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        let mut records = batch_records(&batch[0]);
        while records < max_batch {
            match rx.try_recv() {
                Ok(c) => {
                    records += batch_records(&c);
                    batch.push(c);
                }
                Err(_) => break,
            }
        }
        commit(&mut conn, batch, &notify, &metrics);
    }
}

fn batch_records(c: &Command) -> usize {
    match c {
        Command::Enqueue { records, .. } => records.len(),
        Command::Apply(d) => d.len(),
        Command::Replay { .. } | Command::PruneDead { .. } => 1,
    }
}

fn commit(conn: &mut Connection, batch: Vec<Command>, notify: &Notify, metrics: &OutboxMetrics) {
    // A failed transaction (SQLITE_BUSY past the busy timeout while another process holds
    // the write lock, a transient I/O error) is retried, not dropped: dropping it would lose
    // fire-and-forget records and delivery outcomes (a lost dead letter resurrects its
    // record). Producers meanwhile fill the bounded queue and are refused: back-pressure.
    let mut wait = Duration::from_millis(50);
    let mut tries = 0u32;
    let result = loop {
        let r = try_commit(conn, &batch);
        match r {
            Ok(ids) => break Ok(ids),
            Err(e) if tries < 100 => {
                tries += 1;
                tracing::warn!(error = %e, tries, "outbox commit failed; retrying");
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => break Err(e),
        }
    };
    finish(conn, batch, result, notify, metrics);
}

type Committed = Result<Vec<Result<Vec<RecordId>, String>>, crate::store::StoreError>;

fn try_commit(conn: &mut Connection, batch: &[Command]) -> Committed {
    let now_ms = Now::system().unix_ms;
    (|| -> Committed {
        let tx = conn.transaction()?;
        let mut ids = Vec::new();
        for cmd in batch {
            match cmd {
                Command::Enqueue { records, .. } => {
                    let mut one = Vec::with_capacity(records.len());
                    for r in records {
                        one.push(store::insert(&tx, r, now_ms)?);
                    }
                    ids.push(Ok(one));
                }
                Command::Apply(decisions) => store::apply(&tx, decisions, now_ms)?,
                Command::PruneDead { before_ms } => {
                    let n = store::prune_dead(&tx, *before_ms)?;
                    if n > 0 {
                        tracing::info!(dead_letters = n, "pruned dead letters past retention");
                    }
                }
                Command::Replay { .. } => {}
            }
        }
        tx.commit()?;
        Ok(ids)
    })()
}

fn finish(
    conn: &mut Connection,
    batch: Vec<Command>,
    result: Committed,
    notify: &Notify,
    metrics: &OutboxMetrics,
) {
    let now_ms = Now::system().unix_ms;
    let mut enqueued = 0usize;
    let mut applied = 0usize;
    let mut new_rows = false;
    match result {
        Ok(ids) => {
            let mut ids = ids.into_iter();
            for cmd in batch {
                match cmd {
                    Command::Enqueue { records, ack } => {
                        enqueued += records.len();
                        for r in &records {
                            metrics
                                .enqueued
                                .with_label_values(&[r.target.as_str()])
                                .inc();
                        }
                        new_rows = true;
                        let got = ids.next().unwrap_or_else(|| Ok(Vec::new()));
                        if let Some(ack) = ack {
                            let _ = ack.send(got);
                        }
                    }
                    Command::Apply(d) => applied += d.len(),
                    Command::PruneDead { .. } => {}
                    // Replays run in their own transactions (pages of rows, each moved whole).
                    Command::Replay { which, ack } => {
                        let r = store::replay(conn, which, now_ms).map_err(|e| e.to_string());
                        if matches!(r, Ok(n) if n > 0) {
                            new_rows = true;
                        }
                        let _ = ack.send(r);
                    }
                }
            }
        }
        Err(e) => {
            // Nothing of the batch is durable: enqueuers hear so (the CDR receiver answers
            // 503 and FreeSWITCH retries); outcomes are lost, which only means a redelivery.
            tracing::error!(error = %e, "outbox commit failed");
            for cmd in batch {
                match cmd {
                    Command::Enqueue { ack: Some(ack), .. } => {
                        let _ = ack.send(Err(e.to_string()));
                    }
                    Command::Replay { ack, .. } => {
                        let _ = ack.send(Err(e.to_string()));
                    }
                    _ => {}
                }
            }
        }
    }
    if enqueued > 0 {
        metrics
            .commit_batch
            .with_label_values(&["enqueue"])
            .observe(enqueued as f64);
    }
    if applied > 0 {
        metrics
            .commit_batch
            .with_label_values(&["outcome"])
            .observe(applied as f64);
    }
    if new_rows {
        notify.notify_one();
    }
}
