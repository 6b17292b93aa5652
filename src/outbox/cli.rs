//! `gridedge outbox ...`: the operator's dead-letter tools, working on the state database
//! directly, so they work whether or not the daemon runs (SQLite WAL: the CLI's reads never
//! block the daemon, and a replay is one short transaction the daemon's scan picks up within
//! a second).

use std::path::Path;

use serde_json::{json, Value};

use super::record::Target;
use super::service::{dead_letters, open_reader, stats};
use super::store::{dead_get, replay, ReplaySelection};
use crate::clock::Now;
use crate::store::{Durability, Store};

/// One CLI operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Stats,
    List {
        target: Option<Target>,
        limit: usize,
        after: i64,
    },
    Show(i64),
    Replay(ReplaySelection),
}

/// Runs `op` against the database at `db`; the answer is the same JSON the admin API gives.
pub fn run(db: &Path, op: Op) -> anyhow::Result<Value> {
    if !db.exists() {
        anyhow::bail!(
            "{}: no state database (has the daemon ever run with this state.dir?)",
            db.display()
        );
    }
    let now = Now::system().unix_ms;
    match op {
        Op::Stats => Ok(serde_json::to_value(stats(&open_reader(db)?, now)?)?),
        Op::List {
            target,
            limit,
            after,
        } => {
            let items = dead_letters(&open_reader(db)?, target, after, limit)?;
            Ok(json!({ "count": items.len(), "items": items }))
        }
        Op::Show(id) => match dead_get(&open_reader(db)?, id)? {
            Some(d) => Ok(serde_json::to_value(d)?),
            None => anyhow::bail!("no dead letter {id}"),
        },
        Op::Replay(which) => {
            let store = Store::open(db, Durability::Full)?;
            let mut conn = store.into_connection();
            let n = replay(&mut conn, which, now)?;
            if n == 0 {
                if let ReplaySelection::One(id) = which {
                    anyhow::bail!("no dead letter {id}");
                }
            }
            Ok(json!({ "replayed": n }))
        }
    }
}
