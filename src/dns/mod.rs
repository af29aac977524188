//! DNS protocol: names, the query path, and the UDP/TCP server.

pub mod answer;
pub mod autopath;
mod general;
// The crate's one `unsafe` module: recvmmsg/sendmmsg for the UDP workers.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod mmsg;
pub mod name;
pub mod server;
pub mod stats;

pub use answer::{Caps, Outcome, Responder, Transport};
