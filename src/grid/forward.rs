//! The bridge from domain events to the outbox: builds each enabled push's payload (in the
//! contract's format, by the serializers of this module's siblings) and enqueues it with its
//! ordering key and idempotency key.
//!
//! * Call records (话单推送, and the signed detail format when enabled) are enqueued by the CDR
//!   service inside the transaction that stores them ([`CdrForwarder`]).

use std::sync::Arc;

use bytes::Bytes;

use super::cdr::{to_grid, TimeFormat};
use crate::cdr::record::CallRecord;
use crate::cdr::service::RecordForwarder;
use crate::outbox::{NewRecord, Outbox, Target};

/// Serializes a JSON object; a `Map` of strings cannot fail to serialize.
pub(crate) fn json_bytes(v: &serde_json::Map<String, serde_json::Value>) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

pub struct CdrForwarder {
    pub outbox: Arc<Outbox>,
    pub time: TimeFormat,
}

impl RecordForwarder for CdrForwarder {
    fn outbox_records(&self, call_key: &str, records: &[CallRecord]) -> Vec<NewRecord> {
        let mut rows = Vec::new();
        if self.outbox.enabled(Target::Cdr) {
            // Per-call order: a call's segments share one lane, keyed by the call.
            for r in records {
                rows.push(NewRecord {
                    target: Target::Cdr,
                    key: call_key.to_string(),
                    idempotency_key: r.stream_number.clone(),
                    payload: json_bytes(&to_grid(r, &self.time)),
                });
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
        // A call yields a handful of records of ~1.5 KB.
        self.outbox.has_room(16 * 1024).is_ok()
    }
}
