//! gridedge: a contact-center edge daemon.
//!
//! See `ARCHITECTURE.md` for the bird's-eye view. Every protocol or policy core in this crate is
//! sans-IO: it takes input and `now` and returns output; only `daemon` and the `*::transport`
//! shells own sockets, clocks and tasks.

pub mod agents;
pub mod api;
pub mod cdr;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dialer;
pub mod events;
pub mod grid;
pub mod media;
pub mod metrics;
pub mod outbox;
pub mod recording;
pub mod sip;
pub mod store;
pub mod switch;
pub mod text;
