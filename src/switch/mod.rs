//! Softswitch adapters: the FreeSWITCH Event Socket (ESL) client, the `mod_json_cdr`
//! receiver and call events (see `DESIGN.md`).
//!
//! Only the sans-IO ESL codec exists so far: [`esl`] frames and parses what FreeSWITCH sends
//! on the inbound event socket, encodes commands, and tracks the auth/subscribe/`bgapi`
//! handshake. The socket shell, reconnect and reconciliation (`api show channels as json`)
//! and the CDR receiver come later and build on it.

pub mod adapter;
pub mod calls;
pub mod client;
pub mod esl;
pub mod leg;
pub mod raw_cdr;
pub mod xml_cdr;
pub mod callcenter;
