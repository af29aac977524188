//! DNS protocol: the wire vocabulary, names, the query path, and the UDP/TCP server.
//!
//! ```text
//!  server ─▶ answer::Responder ─┬─▶ question::parse_fast (no allocation)
//!     │                         └─▶ general::decode (hickory-proto)    ─▶ finish::Finish ─▶ bytes
//!     └─▶ slow (forwarding, autopath) ─────────────────────────────────┘
//! ```
//!
//! `proto` and `name` are leaves (they import nothing from the crate); everything else here
//! reads the index, which never imports from here but those two.

pub mod answer;
pub mod autopath;
pub mod finish;
mod general;
pub mod grammar;
// recvmmsg/sendmmsg for the UDP workers (the crate's other `unsafe` is the allocator
// configuration in main.rs).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod mmsg;
pub mod name;
pub mod proto;
pub mod question;
pub mod server;
mod slow;
pub mod stats;
pub mod transfer;

pub use answer::{Caps, Outcome, Responder};
pub use finish::{Edns, Transport};
pub use question::Question;
