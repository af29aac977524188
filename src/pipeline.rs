//! One way in for events: the [`Pipeline`] owns the model, the index's writer and the index, and
//! applies [`Event`]s through one entry, [`Pipeline::apply_batch`] (and [`Pipeline::apply`] for
//! one). Production (the writer thread in `lib.rs`), unit and property tests, the fuzz target and
//! the benches all go through it, as kubert's `IndexNamespacedResource::{apply, delete, reset}`
//! is the one way into its index.
//!
//! ```text
//!  Event ─▶ Model::{apply, delete, relist_*} ─▶ touched owners ─▶ Writer::recompute ─▶ Index
//!                                                                  (one publish per batch)
//! ```
//!
//! The event-to-answer and programming-latency metrics are observed here, around the publish.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;

use crate::cluster::object::{Kind, Object, ServiceKind};
use crate::cluster::{Model, ObjKey, Owner};
use crate::index::{Index, RecordConfig, Writer};
use crate::metrics::{Metrics, ServiceKindLabel};
use crate::source::Event;

/// The model, the writer and the index, changed only by applying events.
pub struct Pipeline {
    /// Shared with `explain`, which reads it between batches.
    model: Arc<RwLock<Model>>,
    writer: Writer,
    metrics: Arc<Metrics>,
    /// Owners touched by the batch being applied (kept to reuse its table).
    touched: HashSet<Owner>,
    /// Slices whose trigger time is to be measured once published: (service, trigger ms).
    triggers: Vec<(ObjKey, i64)>,
    /// EndpointSlice relists in progress: their trigger times are old, not changes.
    open_slice_relists: usize,
}

/// What a batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Whether any published answer changed (the SOA serial then moved forward).
    pub changed: bool,
    /// Whether this batch made the index ready (its first [`Event::Synced`]).
    pub became_ready: bool,
}

// === impl Pipeline ===

impl Pipeline {
    /// An empty model and index for `cfg` (the apex published, not ready), with its own metrics.
    pub fn new(cfg: RecordConfig) -> Pipeline {
        Pipeline::with_capacity(cfg, 0)
    }

    /// [`Pipeline::new`], with the index sized for `names` names: an initial load of known size
    /// (manifests) then never grows the index's map.
    pub fn with_capacity(cfg: RecordConfig, names: usize) -> Pipeline {
        let index = Arc::new(Index::with_capacity(&cfg, names));
        let gates = cfg.namespace_gates_services;
        Pipeline::with_writer(Writer::new(index, cfg), gates)
    }

    /// A secondary's pipeline: its records come from zone transfers ([`Event::Transfer`]).
    pub fn secondary(cfg: RecordConfig) -> Pipeline {
        let index = Arc::new(Index::new(&cfg));
        Pipeline::with_writer(Writer::secondary(index, cfg), false)
    }

    /// `gates`: a Service is served only while its Namespace is (`--namespace-labels`).
    fn with_writer(writer: Writer, gates: bool) -> Pipeline {
        Pipeline {
            model: Arc::new(RwLock::new(Model::new().with_namespaces_gating_services(gates))),
            writer,
            metrics: Arc::new(Metrics::new()),
            touched: HashSet::new(),
            triggers: Vec::new(),
            open_slice_relists: 0,
        }
    }

    /// Observes into `metrics` instead of its own.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Pipeline {
        self.metrics = metrics;
        self
    }

    /// The published index.
    pub fn index(&self) -> &Arc<Index> {
        self.writer.index()
    }

    /// The writer (for its bookkeeping's sizes).
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// The model, for readers between batches (`explain`).
    pub fn model(&self) -> &Arc<RwLock<Model>> {
        &self.model
    }

    /// Applies one event and publishes what it touched.
    pub fn apply(&mut self, event: Event) -> Applied {
        self.apply_batch(Instant::now(), [event])
    }

    /// Applies `events` in order and publishes what they touched once, so every change is
    /// visible to the next query once the batch returns. `received` is when the oldest of them
    /// arrived (for the event-to-answer metric).
    pub fn apply_batch(&mut self, received: Instant, events: impl IntoIterator<Item = Event>) -> Applied {
        // Held for the batch only: `explain` reads the model between batches.
        let shared = self.model.clone();
        let mut guard = shared.write();
        let model = &mut *guard;
        let mut synced = false;
        let mut applied = Applied::default();
        for event in events {
            match event {
                Event::Apply(obj) => {
                    // The SLI counts changes, not the initial list (old trigger times).
                    if let Object::Slice(slice) = &obj
                        && let Some(ms) = slice.trigger_time_ms
                        && self.open_slice_relists == 0
                    {
                        self.triggers.push((ObjKey::new(slice.key.ns.clone(), slice.service.clone()), ms));
                    }
                    self.touched.extend(model.apply(obj));
                }
                Event::Delete(what) => self.touched.extend(model.delete(&what)),
                Event::RelistStart(scope) => {
                    self.open_slice_relists += (scope.kind == Kind::EndpointSlice) as usize;
                    model.relist_start(scope);
                }
                Event::RelistDone(scope) => {
                    self.open_slice_relists =
                        self.open_slice_relists.saturating_sub((scope.kind == Kind::EndpointSlice) as usize);
                    self.touched.extend(model.relist_done(&scope));
                }
                Event::Synced => synced = true,
                Event::Transfer(delivery) => {
                    let outcome = self.writer.apply_transfer(&delivery.transfer);
                    applied.changed |= outcome == Ok(true);
                    delivery.reply(outcome);
                }
            }
        }
        if !self.touched.is_empty() {
            applied.changed |= self.writer.recompute(model, self.touched.drain());
            // A drained set keeps the table of the initial list (one slot per Service), and every
            // later batch would scan and clear all of it.
            self.touched.shrink_to(crate::index::SMALL_SET);
        }
        self.observe(model, received);
        if synced && !self.index().is_ready() {
            self.index().set_ready(true);
            self.metrics.ready.set(1);
            applied.became_ready = true;
            // The initial list is applied: its scratch need not stay cached in this thread, and
            // from now on freed memory goes back at once.
            crate::memory::release();
            crate::memory::steady();
            let (services, slices, pods, namespaces) = model.counts();
            let (imports, cluster_set_slices) = model.cluster_set_counts();
            let names = self.index().len();
            if self.writer.copy_len() > 0 {
                let (serial, rrsets) = (self.index().serial(), self.writer.copy_len());
                tracing::info!(serial, rrsets, names, "first zone transfers applied; serving");
            } else {
                tracing::info!(
                    services,
                    slices,
                    pods,
                    namespaces,
                    imports,
                    cluster_set_slices,
                    names,
                    "initial state published; serving"
                );
            }
        }
        applied
    }

    /// The metrics observed around a publish: event-to-answer, programming latency, object counts.
    fn observe(&mut self, model: &Model, received: Instant) {
        let metrics = &self.metrics;
        metrics.event_to_answer.observe(received.elapsed().as_secs_f64());
        if !self.triggers.is_empty() {
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
            for (service, ms) in self.triggers.drain(..) {
                let service_kind = match model.service(&service).map(|s| &s.kind) {
                    Some(ServiceKind::Headless) => "headless_with_selector",
                    Some(ServiceKind::ClusterIp(_)) => "cluster_ip",
                    _ => continue,
                };
                let seconds = (now_ms - ms).max(0) as f64 / 1000.0;
                metrics.programming_duration.get_or_create(&ServiceKindLabel { service_kind }).observe(seconds);
            }
        }
        let (services, slices, pods, _) = model.counts();
        metrics.services.set(services as i64);
        metrics.endpoint_slices.set(slices as i64);
        metrics.pods.set(pods as i64);
    }
}
