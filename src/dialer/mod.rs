//! Outbound dialing: pacing policies (how many calls to launch), the discrete-event
//! simulator that compares them, and (later) campaigns, call lists and the compliance log.

pub mod pacing;
pub mod policies;
