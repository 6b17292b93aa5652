//! One push payload ready for the outbox: the JSON object in the contract's format, the key
//! that orders it and the key the grid deduplicates it by. Every serializer of this module's
//! siblings produces one; the forwarder turns it into an outbox row.

use serde_json::{Map, Value};

use crate::outbox::{NewRecord, Target};

#[derive(Debug, Clone, PartialEq)]
pub struct GridPush {
    body: Map<String, Value>,
    idempotency_key: String,
    lane_key: String,
}

impl GridPush {
    pub fn new(body: Map<String, Value>, idempotency_key: String, lane_key: String) -> Self {
        GridPush {
            body,
            idempotency_key,
            lane_key,
        }
    }

    /// The JSON object to POST.
    pub fn body(&self) -> &Map<String, Value> {
        &self.body
    }

    pub fn into_body(self) -> Map<String, Value> {
        self.body
    }

    /// Sent as the idempotency header; equals the payload's own unique id where the
    /// contract has one (`steamNumber`, `streamnumber`).
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }

    /// Records with the same lane key are delivered in order (per agent, per call).
    pub fn lane_key(&self) -> &str {
        &self.lane_key
    }

    /// The outbox row for `target`.
    pub fn into_record(self, target: Target) -> NewRecord {
        NewRecord {
            target,
            key: self.lane_key,
            idempotency_key: self.idempotency_key,
            payload: bytes::Bytes::from(serde_json::to_vec(&self.body).unwrap_or_default()),
        }
    }
}
