//! Sources turn the outside world into one ordered stream of [`Event`]s.
//!
//! ```text
//!  YAML files ──poll, settle, parse──▶ source::file ─┐
//!                                                    ├─▶ mpsc<Event> ─▶ writer (Model → Index)
//!  Kubernetes API ──list/watch────▶ source::kube ────┤
//!  primaries ──AXFR/IXFR on NOTIFY──▶ source::primary┘   (a secondary: zone transfers)
//! ```
//!
//! A full list (initial sync, a `410 Gone` relist, a re-read file) is framed by
//! [`Event::RelistStart`] and [`Event::RelistDone`] with the objects applied one by one in
//! between: the model replaces what changed and deletes, at the end, what the list no longer
//! contains. Nothing is cleared and refilled, so unchanged names never disappear, and no second
//! copy of the cluster is ever held.

pub mod file;
pub mod kube;
pub mod primary;
mod reconnect;
pub mod yaml;

use std::time::Instant;

use tokio::sync::mpsc;

pub use crate::cluster::Scope;
use crate::cluster::{Object, ObjectRef};

/// One change, in the order the source observed it.
#[derive(Clone, Debug)]
pub enum Event {
    /// An object was created or updated (or re-listed).
    Apply(Object),
    /// An object was deleted. Deletions that happen while a source is disconnected arrive as
    /// the absence of the object from the next relist instead.
    Delete(ObjectRef),
    /// A full list of the scope begins.
    RelistStart(Scope),
    /// The full list of the scope is complete; what it did not contain is deleted.
    RelistDone(Scope),
    /// Every kind the source watches has been listed completely once: the index may answer.
    Synced,
    /// A secondary's zone transfer, to apply whole or not at all; the outcome goes back to the
    /// transfer task.
    Transfer(std::sync::Arc<primary::Delivery>),
}

/// The channel sources send on: each event with the instant it arrived, so the writer can measure
/// event-to-answer latency.
pub type Sender = mpsc::Sender<(Instant, Event)>;

/// Sends an event stamped with the current instant. Returns false when the writer has stopped.
pub async fn send(tx: &Sender, event: Event) -> bool {
    tx.send((Instant::now(), event)).await.is_ok()
}
