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

use crate::dns::stats::{QueryCollector, QueryStats};

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

/// `rcode` label: the response code of an upstream's answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RcodeLabel {
    /// `NOERROR`, `FORMERR`, `SERVFAIL`, `NXDOMAIN`, `NOTIMP`, `REFUSED` or `other`.
    pub rcode: &'static str,
}

/// `proto` label: the transport a query went over.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtoLabel {
    /// `udp` or `tcp`.
    pub proto: &'static str,
}

/// RCODE names as CoreDNS labels them; everything else is `other` (the last).
pub const RCODES: [&str; 7] = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other"];

/// One upstream's own counts (CoreDNS's `coredns_forward_*{to}`), made once per upstream address
/// so that counting needs no label built per query.
#[derive(Debug)]
pub struct UpstreamCounts {
    /// `ADDR:PORT`, CoreDNS's `to` label.
    pub to: String,
    /// Queries sent to it.
    pub requests: Counter,
    /// Its answers, by rcode (as [`RCODES`]).
    pub responses: [Counter; RCODES.len()],
    /// Query sent → its answer received, by rcode.
    pub duration: [Histogram; RCODES.len()],
}

/// The counts of each upstream address, made as its first connection opens.
#[derive(Debug, Default)]
pub struct PerUpstream(parking_lot::Mutex<Vec<Arc<UpstreamCounts>>>);

impl PerUpstream {
    /// The counts of `addr`.
    pub fn of(&self, addr: std::net::SocketAddr) -> Arc<UpstreamCounts> {
        let to = addr.to_string();
        let mut all = self.0.lock();
        if let Some(counts) = all.iter().find(|c| c.to == to) {
            return counts.clone();
        }
        let counts = Arc::new(UpstreamCounts {
            to,
            requests: Counter::default(),
            responses: Default::default(),
            duration: std::array::from_fn(|_| forward_duration()),
        });
        all.push(counts.clone());
        counts
    }

    /// Every upstream's counts, in the order they were first used.
    pub fn all(&self) -> Vec<Arc<UpstreamCounts>> {
        self.0.lock().clone()
    }
}

/// 100 µs … ~3.3 s, doubling: loopback upstreams answer in well under a millisecond.
fn forward_duration() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The forwarding metrics (CoreDNS's `cache` and `forward` plugins). Cheap to clone: every field
/// is a handle to shared atomics.
#[derive(Clone, Debug)]
pub struct ForwardMetrics {
    /// Forwarded lookups answered from the resolver's cache (`coredns_cache_hits_total`).
    pub cache_hits: Counter,
    /// Forwarded lookups the cache could not answer (`coredns_cache_misses_total`).
    pub cache_misses: Counter,
    /// Queries sent to an upstream, retries and TCP fallbacks included
    /// (`coredns_forward_requests_total`).
    pub requests: Family<ProtoLabel, Counter>,
    /// Upstream answers by rcode (`coredns_forward_responses_total`).
    pub responses: Family<RcodeLabel, Counter>,
    /// Query sent → upstream answer received (`coredns_forward_request_duration_seconds`).
    pub duration: Histogram,
    /// The same, per upstream (`--coredns-metrics`'s `to` label).
    pub upstreams: Arc<PerUpstream>,
}

/// `kind` and `result` labels of zone transfers a secondary made.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransferLabel {
    /// `axfr`, `ixfr` (a difference), `current` (nothing to transfer).
    pub kind: &'static str,
    /// `ok`, `error` (unreachable, malformed, refused) or `mismatch` (a difference that did
    /// not apply; a full transfer follows).
    pub result: &'static str,
}

/// A secondary's metrics (`--source primary:ADDR`).
#[derive(Clone, Debug, Default)]
pub struct SecondaryMetrics {
    /// The serial of the copy (of the first zone).
    pub serial: Gauge,
    /// Seconds since the last round of transfers that reached a primary.
    pub since_refresh: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// From the newest NOTIFY to the copy having applied what it announced (0 when no NOTIFY
    /// is pending; growing while one is).
    pub notify_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Zone transfers by kind and result.
    pub transfers: Family<TransferLabel, Counter>,
    /// Bytes of the transfer messages received.
    pub transfer_bytes: Counter,
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
    /// Bytes held by the IXFR journal.
    pub ixfr_journal_bytes: Gauge,
    /// Versions (serial changes) held by the IXFR journal.
    pub ixfr_journal_versions: Gauge,
    /// Services in the model.
    pub services: Gauge,
    /// EndpointSlices in the model.
    pub endpoint_slices: Gauge,
    /// Pods in the model.
    pub pods: Gauge,
    /// Query counters, fed by the DNS workers.
    pub queries: Arc<QueryStats>,
    /// Forwarding: cache hits and misses, upstream requests and responses.
    pub forward: ForwardMetrics,
    /// `--coredns-metrics`: the CoreDNS names (`crate::coredns_metrics`), without our prefix.
    coredns: std::sync::OnceLock<Registry>,
    /// A secondary's copy: serial, refresh age, NOTIFY lag, transfers.
    pub secondary: SecondaryMetrics,
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
        let ixfr_journal_bytes = Gauge::default();
        registry.register(
            "ixfr_journal_bytes",
            "Memory held by the IXFR journal (records and bookkeeping)",
            ixfr_journal_bytes.clone(),
        );
        let ixfr_journal_versions = Gauge::default();
        registry.register(
            "ixfr_journal_versions",
            "Serial changes the IXFR journal can send incrementally",
            ixfr_journal_versions.clone(),
        );
        let services = Gauge::default();
        registry.register("services", "Services in the model", services.clone());
        let endpoint_slices = Gauge::default();
        registry.register("endpoint_slices", "EndpointSlices in the model", endpoint_slices.clone());
        let pods = Gauge::default();
        registry.register("pods", "Pods in the model", pods.clone());
        let forward = ForwardMetrics {
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            requests: Family::default(),
            responses: Family::default(),
            duration: forward_duration(),
            upstreams: Arc::default(),
        };
        registry.register(
            "cache_hits",
            "Forwarded lookups answered from the response cache",
            forward.cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Forwarded lookups not answered from the response cache",
            forward.cache_misses.clone(),
        );
        registry.register(
            "forward_requests",
            "Queries sent to upstream resolvers (retries and TCP fallbacks included)",
            forward.requests.clone(),
        );
        registry.register("forward_responses", "Answers from upstream resolvers by rcode", forward.responses.clone());
        registry.register(
            "forward_request_duration_seconds",
            "From a query sent upstream to its answer",
            forward.duration.clone(),
        );
        let secondary = SecondaryMetrics::default();
        registry.register("secondary_serial", "A secondary's SOA serial of its copy", secondary.serial.clone());
        registry.register(
            "secondary_seconds_since_refresh",
            "Seconds since a secondary last reached a primary and brought its copy up to date",
            secondary.since_refresh.clone(),
        );
        registry.register(
            "secondary_notify_lag_seconds",
            "From the newest NOTIFY to the copy having applied it (0 when none is pending)",
            secondary.notify_lag.clone(),
        );
        registry.register("secondary_transfers", "Zone transfers a secondary made", secondary.transfers.clone());
        registry.register(
            "secondary_transfer_bytes",
            "Bytes of zone transfer messages a secondary received",
            secondary.transfer_bytes.clone(),
        );
        let queries = Arc::new(QueryStats::default());
        registry.register_collector(Box::new(QueryCollector(queries.clone())));
        Metrics {
            registry,
            programming_duration,
            event_to_answer,
            watch_errors,
            relists,
            ready,
            index_names,
            ixfr_journal_bytes,
            ixfr_journal_versions,
            services,
            endpoint_slices,
            pods,
            queries,
            forward,
            coredns: std::sync::OnceLock::new(),
            secondary,
        }
    }

    /// Also renders `registry` (the CoreDNS names), after ours.
    pub fn expose_coredns(&self, registry: Registry) {
        let _ = self.coredns.set(registry);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        if let Some(coredns) = self.coredns.get() {
            // One exposition: the first registry's `# EOF` goes, the second's ends it.
            out.truncate(out.strip_suffix("# EOF\n").map_or(out.len(), str::len));
            let _ = prometheus_client::encoding::text::encode(&mut out, coredns);
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
