//! The cluster as DNS sees it: minimal projections of Kubernetes objects and the [`Model`] that
//! holds them.
//!
//! ```text
//!   Namespace        Service ◀──label kubernetes.io/service-name── EndpointSlice ─▶ endpoints
//!       │               │                                                        (ready, hostname)
//!       ▼               ▼                                                                │
//!  <ns>.svc.<zone>  <svc>.<ns>.svc.<zone>, _<port>._<proto>.<svc>…, <host>.<svc>…  ◀─────┘
//!   Pod ─▶ <a-b-c-d>.<ns>.pod.<zone> (--pods verified)
//! ```
//!
//! Every change to the model is reported as the set of [`Owner`]s whose records must be
//! recomputed; the index never rebuilds more than those.

pub mod api;
pub mod mcs;
mod model;
pub mod object;

pub use model::{Model, Owner, Scope};
pub use object::{Kind, ObjKey, Object, ObjectRef};
