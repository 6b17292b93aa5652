//! Call records: FreeSWITCH call legs in, seed 000's per-segment call records out.
//!
//! - [`builder`]: the sans-IO core turning one finished call's legs into records;
//! - [`mapping`]: the configurable tables behind the contract's 需梳理 fields;
//! - [`record`]: the record in domain terms (the grid's field names live in `grid::cdr`).

pub mod builder;
pub mod mapping;
pub mod reconcile;
pub mod record;
pub mod service;
