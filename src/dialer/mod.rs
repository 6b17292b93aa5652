//! Outbound dialing: pacing policies (how many calls to launch), the discrete-event
//! simulator that compares them, campaigns (tasks, lines, call lists, the engine that runs their
//! calls), and the compliance log.

pub mod campaign;
pub mod compliance;
pub mod config;
pub mod gateway;
pub mod lines;
pub mod metrics;
pub mod numbers;
pub mod pacing;
pub mod policies;
pub mod result;
pub mod rules;
pub mod service;
pub mod sim;
pub mod store;
pub mod task;
pub mod window;
