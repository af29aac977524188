//! `--coredns-metrics`: the same counts again under CoreDNS's metric names and labels (CoreDNS
//! 1.11's `metrics`, `cache` and `forward` plugins), so that dashboards and alerts built on them
//! (the coredns-mixin) keep working after a switch.
//!
//! ```text
//!  QueryStats (per-worker integers, flushed) ──┐
//!  ForwardMetrics (per upstream), programming ─┼─▶ CorednsCollector ──at scrape──▶ coredns_* series
//!  CorednsCounts: forwarded rcodes, cache      ─┘
//!    hits/misses, entries (slow lane)
//! ```
//!
//! Nothing is counted twice on the query path: the collector reads the counters the server keeps
//! anyway when `/metrics` is scraped, and the labels of a query (transport, client address
//! family, query type) are array indices there. Where our counts are coarser than CoreDNS's the
//! label is there with a value that says so, never a made-up split:
//! - `coredns_dns_request_duration_seconds` covers answers from our zones; forwarded queries are
//!   timed upstream, in `coredns_forward_request_duration_seconds`;
//! - `coredns_cache_entries` counts what client lookups put in the resolver's cache until it
//!   expires (hickory-resolver does not tell what it holds);
//! - `zone` is `.` and `view` empty, as for the single server block of the default Corefile;
//!   `plugin` is `kubernetes` for answers from our zones, `forward` for forwarded ones.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::Query;
use hickory_proto::rr::{Name, RecordType};
use parking_lot::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::dns::stats::QueryStats;
use crate::metrics::{ForwardMetrics, RCODES, RcodeLabel, ServiceKindLabel};

/// Names the cache ledger follows at most (as the resolver's cache holds).
const LEDGER_CAPACITY: usize = 10_000;
/// CoreDNS's cache kinds, as its `type` label: index 0 positive answers, 1 denials.
const CACHE_KINDS: [&str; 2] = ["success", "denial"];

/// What the forwarder counts for this view only (the CoreDNS view's own slow-lane counts).
#[derive(Clone, Debug, Default)]
pub struct CorednsCounts {
    /// Responses to forwarded queries, by rcode.
    pub answered: Family<RcodeLabel, Counter>,
    /// Client lookups the cache answered: positive answers, denials (as [`CACHE_KINDS`]).
    pub hits: [Counter; 2],
    /// Client lookups the cache could not answer.
    pub misses: Counter,
    /// What those misses put in the cache.
    pub entries: Arc<CacheLedger>,
}

/// The expiry and kind of each answer a client's lookup put in the resolver's cache, for
/// `coredns_cache_entries` (hickory-resolver does not tell what its cache holds).
#[derive(Debug, Default)]
pub struct CacheLedger(Mutex<HashMap<(Name, RecordType), (Instant, bool)>>);

impl CacheLedger {
    /// The answer to `question` is cached until `until`; `denial` if negative.
    pub fn cached(&self, question: &Query, until: Instant, denial: bool) {
        let key = (question.name().to_lowercase(), question.query_type());
        let mut entries = self.0.lock();
        if entries.len() >= LEDGER_CAPACITY && !entries.contains_key(&key) {
            let now = Instant::now();
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= LEDGER_CAPACITY {
                return;
            }
        }
        entries.insert(key, (until, denial));
    }

    /// The entries not yet expired: positive answers, denials.
    fn counts(&self) -> [i64; 2] {
        let now = Instant::now();
        let mut entries = self.0.lock();
        entries.retain(|_, (until, _)| *until > now);
        let denials = entries.values().filter(|(_, denial)| *denial).count();
        [(entries.len() - denials) as i64, denials as i64]
    }
}

/// The counts of a family by rcode, those that exist. (A family's own encoding cannot take more
/// labels: prometheus-client encodes one label set per family.)
fn counts(family: &Family<RcodeLabel, Counter>) -> impl Iterator<Item = (&'static str, u64)> + '_ {
    RCODES.iter().filter_map(|&rcode| Some((rcode, family.get(&RcodeLabel { rcode })?.get())))
}

/// What the CoreDNS view reads, and the forwarded responses it counts itself.
#[derive(Debug)]
pub struct CorednsCollector {
    queries: Arc<QueryStats>,
    forward: ForwardMetrics,
    programming: Family<ServiceKindLabel, Histogram>,
    /// Counted in the slow lane for this view.
    coredns: CorednsCounts,
    server: String,
}

impl CorednsCollector {
    /// A view of `metrics` for a server listening on `listen`, with `coredns` counted by the
    /// forwarder.
    pub fn new(metrics: &crate::metrics::Metrics, listen: &[SocketAddr], coredns: CorednsCounts) -> CorednsCollector {
        CorednsCollector {
            queries: metrics.queries.clone(),
            forward: metrics.forward.clone(),
            programming: metrics.programming_duration.clone(),
            coredns,
            server: format!("dns://:{}", listen.first().map_or(53, |a| a.port())),
        }
    }

    /// A registry (no prefix: the names are CoreDNS's) holding this view.
    pub fn into_registry(self) -> Registry {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        registry
    }
}

impl Collector for CorednsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let server = self.server.as_str();
        let at = [("server", server), ("zone", "."), ("view", "")];

        let help = "Counter of DNS requests made per zone, protocol and family.";
        let mut requests = encoder.encode_descriptor("coredns_dns_requests", help, None, MetricType::Counter)?;
        for (proto, family, qtype, n) in self.queries.requests() {
            let labels = [at[0], at[1], at[2], ("proto", proto), ("family", family), ("type", qtype)];
            requests.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }

        let help = "Counter of response status codes.";
        let mut responses = encoder.encode_descriptor("coredns_dns_responses", help, None, MetricType::Counter)?;
        for (rcode, n) in self.queries.responses() {
            let labels = [at[0], at[1], at[2], ("rcode", rcode), ("plugin", "kubernetes")];
            responses.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        for (rcode, n) in counts(&self.coredns.answered) {
            let labels = [at[0], at[1], at[2], ("plugin", "forward"), ("rcode", rcode)];
            responses.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }

        let help = "Histogram of the time (in seconds) each request took.";
        let name = "coredns_dns_request_duration_seconds";
        let mut duration = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (qtype, buckets, sum) in self.queries.latency_by_type() {
            let count = buckets.iter().map(|(_, n)| n).sum();
            duration
                .encode_family(&[at[0], at[1], at[2], ("type", qtype)])?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }

        let cache = [("server", server), ("zones", "."), ("view", "")];
        let help = "The number of elements in the cache.";
        let mut entries = encoder.encode_descriptor("coredns_cache_entries", help, None, MetricType::Gauge)?;
        for (kind, n) in CACHE_KINDS.iter().zip(self.coredns.entries.counts()) {
            entries.encode_family(&[cache[0], ("type", kind), cache[1], cache[2]])?.encode_gauge(&n)?;
        }
        let hits = self.coredns.hits.each_ref().map(Counter::get);
        let misses = self.coredns.misses.get();
        let help = "The count of cache requests.";
        encoder
            .encode_descriptor("coredns_cache_requests", help, None, MetricType::Counter)?
            .encode_family(&cache)?
            .encode_counter::<NoLabelSet, _, u64>(&(hits[0] + hits[1] + misses), None)?;
        let help = "The count of cache hits.";
        let mut hit = encoder.encode_descriptor("coredns_cache_hits", help, None, MetricType::Counter)?;
        for (kind, n) in CACHE_KINDS.iter().zip(hits) {
            hit.encode_family(&[cache[0], ("type", kind), cache[1], cache[2]])?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        let help = "The count of cache misses. Deprecated, derive misses from cache hits/requests counters.";
        encoder
            .encode_descriptor("coredns_cache_misses", help, None, MetricType::Counter)?
            .encode_family(&cache)?
            .encode_counter::<NoLabelSet, _, u64>(&misses, None)?;

        let upstreams = self.forward.upstreams.all();
        let help = "Counter of requests made per upstream.";
        let mut sent = encoder.encode_descriptor("coredns_forward_requests", help, None, MetricType::Counter)?;
        for upstream in &upstreams {
            sent.encode_family(&[("to", upstream.to.as_str())])?
                .encode_counter::<NoLabelSet, _, u64>(&upstream.requests.get(), None)?;
        }
        let help = "Counter of responses received per upstream.";
        let mut answers = encoder.encode_descriptor("coredns_forward_responses", help, None, MetricType::Counter)?;
        for upstream in &upstreams {
            for (rcode, n) in RCODES.iter().zip(&upstream.responses).filter(|(_, n)| n.get() > 0) {
                answers
                    .encode_family(&[("rcode", *rcode), ("to", upstream.to.as_str())])?
                    .encode_counter::<NoLabelSet, _, u64>(&n.get(), None)?;
            }
        }
        let help = "Histogram of the time each request took.";
        let name = "coredns_forward_request_duration_seconds";
        let mut took = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for upstream in &upstreams {
            // Observed with each response: there where a response was counted.
            let observed = RCODES.iter().zip(upstream.responses.iter().zip(&upstream.duration));
            for (rcode, (_, h)) in observed.filter(|(_, (n, _))| n.get() > 0) {
                h.encode(took.encode_family(&[("to", upstream.to.as_str()), ("rcode", *rcode)])?)?;
            }
        }

        let help = "Histogram of the time (in seconds) it took to program a dns instance.";
        let name = "coredns_kubernetes_dns_programming_duration_seconds";
        self.programming.encode(encoder.encode_descriptor(name, help, None, MetricType::Histogram)?)?;
        Ok(())
    }
}
