//! Agent presence (DESIGN.md job 2): who is signed in, ready, talking, wrapping up or resting.
//!
//! [`state`] is the sans-IO core: one [`state::AgentMachine`] per agent takes inputs (SIP
//! registration changes, API commands, softswitch call events, timer ticks) with `now` as a
//! parameter and returns the [`state::Transition`]s that attendance counters and the grid's
//! agent-event push are built from.

pub mod state;
