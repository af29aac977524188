//! DNS protocol: names, the query path, and the UDP/TCP server.

pub mod answer;
pub mod autopath;
mod general;
pub mod name;
pub mod server;
pub mod stats;

pub use answer::{Caps, Outcome, Responder, Transport};
