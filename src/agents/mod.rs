//! Agent presence (DESIGN.md job 2): who is signed in, ready, talking, wrapping up or resting.
//!
//! - [`state`]: the per-agent state machine, a sans-IO core (inputs with `now`, transitions out).
//! - [`counters`]: today's attendance counters per agent, reset at local midnight.
//! - [`presence`]: every seat's machine, counters and call in one sans-IO core that turns
//!   registrations, commands and call events into [`presence::AgentEvent`]s.
//! - [`directory`]: projects, extensions, agents, skill groups, access numbers; number
//!   allocation and derived secrets.
//! - [`service`]: the shell: store, registrar and tasks around the cores, and the management
//!   operations of seed 004.

pub mod counters;
pub mod directory;
pub mod presence;
pub mod service;
pub mod state;
