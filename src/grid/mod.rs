//! The grid platform contract (seed 000 section 二): payload types in the contract's exact
//! field names, enum encodings and time formats. Domain types stay elsewhere; this module only
//! translates them.

pub mod agent_event;
pub mod auth;
pub mod cdr;
pub mod changes;
pub mod detail;
pub mod forward;
pub mod push;
pub mod query;
pub mod queue_board;
pub mod targets;
