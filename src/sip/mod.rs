//! SIP: wire model, digest authentication, registrar, location service, guard and transports.

pub mod credentials;
pub mod digest;
pub mod endpoint;
pub mod framing;
pub mod guard;
pub mod header;
pub mod location;
pub mod message;
pub mod qualify;
pub mod registrar;
pub mod server;
pub mod transaction;
pub mod transport;
