//! Prometheus metrics, rendered by `/metrics` in the text exposition format.
//!
//! Names follow CoreDNS's where the meaning matches (`coredns_kubernetes_dns_programming_duration_seconds`
//! → `headless_dns_dns_programming_duration_seconds`), so existing dashboards translate by prefix.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::dns::stats::QueryStats;

/// `service_kind` label of the programming-latency histogram (as CoreDNS's).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceKindLabel {
    /// `cluster_ip` or `headless_with_selector` (slices of Services without a selector carry no
    /// trigger time).
    pub service_kind: &'static str,
}

/// `kind` label: the watched object kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `Service`, `EndpointSlice`, `Pod` or `Namespace`.
    pub kind: &'static str,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Time from an EndpointSlice's `last-change-trigger-time` to the update being served: the
    /// SIG Scalability DNS programming-latency SLI.
    pub programming_duration: Family<ServiceKindLabel, Histogram>,
    /// Time from a source event arriving to it being visible to queries.
    pub event_to_answer: Histogram,
    /// Watch stream errors (each followed by a backoff and a retry).
    pub watch_errors: Family<KindLabel, Counter>,
    /// Full lists (initial and after a watch could not resume).
    pub relists: Family<KindLabel, Counter>,
    /// 1 once the first full state is served.
    pub ready: Gauge,
    /// Published names, including empty non-terminals.
    pub index_names: Gauge,
    /// Services in the model.
    pub services: Gauge,
    /// EndpointSlices in the model.
    pub endpoint_slices: Gauge,
    /// Pods in the model.
    pub pods: Gauge,
    /// Query counters, fed by the DNS workers.
    pub queries: Arc<QueryStats>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("headless_dns");
        // 1 ms … ~16 s, doubling: the SLI is about seconds; the fast path is sub-millisecond.
        let programming_duration = Family::<ServiceKindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register(
            "dns_programming_duration_seconds",
            "From an EndpointSlice's last-change-trigger-time to the change being served",
            programming_duration.clone(),
        );
        // 10 µs … ~10 s.
        let event_to_answer = Histogram::new(exponential_buckets(0.00001, 2.0, 20));
        registry.register(
            "event_to_answer_seconds",
            "From a source event arriving to it being visible to queries",
            event_to_answer.clone(),
        );
        let watch_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "kubernetes_watch_errors",
            "Watch stream errors, each retried with backoff",
            watch_errors.clone(),
        );
        let relists = Family::<KindLabel, Counter>::default();
        registry.register(
            "kubernetes_relists",
            "Full lists of a kind (initial, or after a watch could not resume)",
            relists.clone(),
        );
        let ready = Gauge::default();
        registry.register("ready", "1 once the first full state of the cluster is served", ready.clone());
        let index_names = Gauge::default();
        registry.register(
            "index_names",
            "Names published in the index (with empty non-terminals)",
            index_names.clone(),
        );
        let services = Gauge::default();
        registry.register("services", "Services in the model", services.clone());
        let endpoint_slices = Gauge::default();
        registry.register("endpoint_slices", "EndpointSlices in the model", endpoint_slices.clone());
        let pods = Gauge::default();
        registry.register("pods", "Pods in the model", pods.clone());
        Metrics {
            registry,
            programming_duration,
            event_to_answer,
            watch_errors,
            relists,
            ready,
            index_names,
            services,
            endpoint_slices,
            pods,
            queries: Arc::new(QueryStats::default()),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        // The query counters go before the closing "# EOF".
        if out.ends_with("# EOF\n") {
            out.truncate(out.len() - "# EOF\n".len());
        }
        self.queries.render(&mut out);
        out.push_str("# EOF\n");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
