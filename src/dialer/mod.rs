//! Outbound dialing: pacing policies (how many calls to launch), the discrete-event
//! simulator that compares them, and (later) campaigns, call lists and the compliance log.

pub mod compliance;
pub mod lines;
pub mod numbers;
pub mod pacing;
pub mod policies;
pub mod result;
pub mod rules;
pub mod sim;
pub mod window;
