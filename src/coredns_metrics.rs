//! `--coredns-metrics`: the same counts again under CoreDNS's metric names and labels, so that
//! dashboards and alerts built on them (the coredns-mixin) keep working after a switch.
//!
//! ```text
//!  QueryStats (per-worker integers, flushed) ─┐
//!  ForwardMetrics, programming histogram ─────┼─▶ CorednsCollector ──at scrape──▶ coredns_* series
//!  forwarded responses by rcode (slow lane) ──┘
//! ```
//!
//! Nothing is counted twice on the query path: the collector reads the counters the server keeps
//! anyway when `/metrics` is scraped. Where our counts are coarser than CoreDNS's the label is
//! there with a value that says so, never a made-up split:
//! - `family` is that of the first `--listen` address (`1` IPv4, `2` IPv6): queries are not
//!   counted per client address family;
//! - `coredns_dns_request_duration_seconds` covers answers from our zones with `type=""` (the
//!   latency is not kept per query type); forwarded queries are timed upstream, in
//!   `coredns_forward_request_duration_seconds`;
//! - `coredns_cache_*` has `type=""` (hits are not split into success and denial), and the
//!   `coredns_forward_*` series have one `to` naming every upstream, comma-separated;
//! - `zone` is `.` and `view` empty, as for the single server block of the default Corefile;
//!   `plugin` is `kubernetes` for answers from our zones, `forward` for forwarded ones.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::dns::stats::QueryStats;
use crate::metrics::{ForwardMetrics, RcodeLabel, ServiceKindLabel};

/// The rcodes forward.rs labels its counts with.
const RCODES: [&str; 7] = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other"];

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
    /// Responses to forwarded queries, by rcode (counted in the slow lane).
    forwarded: Family<RcodeLabel, Counter>,
    server: String,
    family: &'static str,
    to: String,
}

impl CorednsCollector {
    /// A view of `metrics` for a server listening on `listen` and forwarding to `upstreams`, with
    /// `forwarded` counting the forwarder's answers by rcode.
    pub fn new(
        metrics: &crate::metrics::Metrics,
        listen: &[SocketAddr],
        upstreams: &[SocketAddr],
        forwarded: Family<RcodeLabel, Counter>,
    ) -> CorednsCollector {
        let first = listen.first();
        CorednsCollector {
            queries: metrics.queries.clone(),
            forward: metrics.forward.clone(),
            programming: metrics.programming_duration.clone(),
            forwarded,
            server: format!("dns://:{}", first.map_or(53, |a| a.port())),
            family: if first.is_some_and(|a| a.is_ipv6()) { "2" } else { "1" },
            to: upstreams.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","),
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
        let (server, family, to) = (self.server.as_str(), self.family, self.to.as_str());
        let at = [("server", server), ("zone", "."), ("view", "")];

        let help = "Counter of DNS requests made per zone, protocol and family.";
        let mut requests = encoder.encode_descriptor("coredns_dns_requests", help, None, MetricType::Counter)?;
        for (proto, qtype, n) in self.queries.requests() {
            let labels = [at[0], at[1], at[2], ("proto", proto), ("family", family), ("type", qtype)];
            requests.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }

        let help = "Counter of response status codes.";
        let mut responses = encoder.encode_descriptor("coredns_dns_responses", help, None, MetricType::Counter)?;
        for (rcode, n) in self.queries.responses() {
            let labels = [at[0], at[1], at[2], ("rcode", rcode), ("plugin", "kubernetes")];
            responses.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        for (rcode, n) in counts(&self.forwarded) {
            let labels = [at[0], at[1], at[2], ("plugin", "forward"), ("rcode", rcode)];
            responses.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }

        let help = "Histogram of the time (in seconds) each request took.";
        let (buckets, sum) = self.queries.latency();
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder
            .encode_descriptor("coredns_dns_request_duration_seconds", help, None, MetricType::Histogram)?
            .encode_family(&[at[0], at[1], at[2], ("type", "")])?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;

        let cache = [("server", server), ("zones", "."), ("view", "")];
        let help = "The count of cache hits.";
        let hits = self.forward.cache_hits.get();
        encoder
            .encode_descriptor("coredns_cache_hits", help, None, MetricType::Counter)?
            .encode_family(&[cache[0], ("type", ""), cache[1], cache[2]])?
            .encode_counter::<NoLabelSet, _, u64>(&hits, None)?;
        let help = "The count of cache misses. Deprecated, derive misses from cache hits/requests counters.";
        let misses = self.forward.cache_misses.get();
        encoder
            .encode_descriptor("coredns_cache_misses", help, None, MetricType::Counter)?
            .encode_family(&cache)?
            .encode_counter::<NoLabelSet, _, u64>(&misses, None)?;

        let help = "Counter of requests made per upstream.";
        let sent: u64 = ["udp", "tcp"]
            .iter()
            .map(|proto| self.forward.requests.get(&crate::metrics::ProtoLabel { proto }).map_or(0, |c| c.get()))
            .sum();
        encoder
            .encode_descriptor("coredns_forward_requests", help, None, MetricType::Counter)?
            .encode_family(&[("to", to)])?
            .encode_counter::<NoLabelSet, _, u64>(&sent, None)?;
        let help = "Counter of responses received per upstream.";
        let mut upstream = encoder.encode_descriptor("coredns_forward_responses", help, None, MetricType::Counter)?;
        for (rcode, n) in counts(&self.forward.responses) {
            upstream.encode_family(&[("to", to), ("rcode", rcode)])?.encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        let help = "Histogram of the time each request took.";
        let mut duration =
            encoder.encode_descriptor("coredns_forward_request_duration_seconds", help, None, MetricType::Histogram)?;
        self.forward.duration.encode(duration.encode_family(&[("to", to)])?)?;

        let help = "Histogram of the time (in seconds) it took to program a dns instance.";
        let name = "coredns_kubernetes_dns_programming_duration_seconds";
        self.programming.encode(encoder.encode_descriptor(name, help, None, MetricType::Histogram)?)?;
        Ok(())
    }
}
