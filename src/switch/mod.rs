//! Softswitch adapters: FreeSWITCH's Event Socket (ESL) and its CDR documents (see `DESIGN.md`).
//!
//! - [`esl`]: the sans-IO wire codec and inbound session machine;
//! - [`client`]: the socket shell (reconnect, resync, `api`/`bgapi`);
//! - [`adapter`]: the daemon's consumer of the event feed;
//! - [`calls`]: live call state from channel events, for presence;
//! - [`callcenter`]: mod_callcenter and sofia registration events;
//! - [`raw_cdr`], [`xml_cdr`]: CDR documents (mod_json_cdr, mod_xml_cdr, hang-up events);
//! - [`leg`]: one call leg, normalized from any of them.

/// The bytes of a FreeSWITCH sample in `tests/fixtures/freeswitch/`, for this module's tests.
/// Defined before the submodules so that their tests see it.
#[cfg(test)]
macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/freeswitch/",
            $name
        ))
        .as_slice()
    };
}

pub mod adapter;
pub mod callcenter;
pub mod calls;
pub mod client;
pub mod esl;
pub mod leg;
pub mod raw_cdr;
pub mod xml_cdr;
