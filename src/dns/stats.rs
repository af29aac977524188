//! Query counters for `/metrics`, kept off the hot path's shared cache lines.
//!
//! Each worker counts into its own [`LocalStats`] (plain integers) and adds them into the shared
//! [`QueryStats`] atomics every [`FLUSH_EVERY`] queries and whenever it is idle, so queries on
//! different cores never contend on a counter. Names follow CoreDNS's `coredns_dns_requests_total`,
//! `coredns_dns_responses_total{rcode}`, `coredns_dns_request_duration_seconds`,
//! `coredns_dns_response_size_bytes`, with our prefix.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::proto::{DEFAULT_MAX_UDP, HEADER_LEN, MAX_MESSAGE, MIN_UDP, rtype};

/// Queries a worker counts before publishing its counts.
pub const FLUSH_EVERY: u32 = 1024;

/// Query types counted by name; everything else is `other`.
const TYPES: [(u16, &str); 10] = [
    (rtype::A, "A"),
    (rtype::AAAA, "AAAA"),
    (rtype::SRV, "SRV"),
    (rtype::PTR, "PTR"),
    (rtype::TXT, "TXT"),
    (rtype::SOA, "SOA"),
    (rtype::NS, "NS"),
    (rtype::CNAME, "CNAME"),
    (rtype::ANY, "ANY"),
    (0, "other"),
];
/// RCODEs counted by name (index = rcode for 0..=5); everything else is `other`.
const RCODES: [&str; 7] = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other"];
/// Upper bounds of the latency buckets, in nanoseconds (1 µs … ~1 s, ×4).
const LATENCY_NS: [u64; 11] =
    [1_000, 4_000, 16_000, 64_000, 256_000, 1_024_000, 4_096_000, 16_384_000, 65_536_000, 262_144_000, 1_048_576_000];
/// Upper bounds of the response-size buckets, in bytes.
const SIZES: [u64; 8] = [64, 128, 256, MIN_UDP as u64, DEFAULT_MAX_UDP as u64, 4096, 16384, MAX_MESSAGE as u64];
/// Transports, as labels.
const PROTOS: [&str; 2] = ["udp", "tcp"];
/// Address families of the clients, as CoreDNS labels them (`1` IPv4, `2` IPv6).
const FAMILIES: [&str; 2] = ["1", "2"];

const N_TYPES: usize = TYPES.len();
const N_RCODES: usize = RCODES.len();
const N_LAT: usize = LATENCY_NS.len() + 1;
const N_SIZES: usize = SIZES.len() + 1;

/// The shared counters.
#[derive(Debug)]
pub struct QueryStats {
    /// By transport, client address family, query type.
    requests: [[[AtomicU64; N_TYPES]; 2]; 2],
    responses: [AtomicU64; N_RCODES],
    forwarded: AtomicU64,
    dropped: AtomicU64,
    /// By query type.
    latency: [[AtomicU64; N_LAT]; N_TYPES],
    latency_sum_ns: [AtomicU64; N_TYPES],
    sizes: [AtomicU64; N_SIZES],
    size_sum: AtomicU64,
}

/// A worker's own counters, added into [`QueryStats`] by [`LocalStats::flush`].
pub struct LocalStats {
    /// By query type: the type is looked up once per query, the rest are offsets from it.
    by_type: [TypeCounts; N_TYPES],
    responses: [u64; N_RCODES],
    forwarded: u64,
    dropped: u64,
    sizes: [u64; N_SIZES],
    size_sum: u64,
    pending: u32,
}

/// A worker's counts of one query type.
#[derive(Clone, Copy, Default)]
struct TypeCounts {
    /// By transport, client address family.
    requests: [[u64; 2]; 2],
    latency: [u64; N_LAT],
    latency_sum_ns: u64,
}

fn type_index(qtype: u16) -> usize {
    TYPES.iter().position(|(t, _)| *t == qtype).unwrap_or(N_TYPES - 1)
}

fn bucket(bounds: &[u64], v: u64) -> usize {
    bounds.iter().position(|&b| v <= b).unwrap_or(bounds.len())
}

/// The QTYPE of the (first) question of a message, if it has one in plain form.
pub fn qtype_of(message: &[u8]) -> Option<u16> {
    if message.len() < HEADER_LEN || u16::from_be_bytes([message[4], message[5]]) == 0 {
        return None;
    }
    let at = HEADER_LEN + super::name::wire_len(&message[HEADER_LEN..])?;
    message.get(at..at + 2).map(|t| u16::from_be_bytes([t[0], t[1]]))
}

impl Default for LocalStats {
    fn default() -> Self {
        LocalStats {
            by_type: [TypeCounts::default(); N_TYPES],
            responses: [0; N_RCODES],
            forwarded: 0,
            dropped: 0,
            sizes: [0; N_SIZES],
            size_sum: 0,
            pending: 0,
        }
    }
}

impl LocalStats {
    /// Counts an answered query: `response` is what was sent, `tcp` the transport, `v6`
    /// whether the client's address is IPv6 (see [`is_v6`]).
    #[inline]
    pub fn answered(&mut self, tcp: bool, v6: bool, response: &[u8], elapsed_ns: u64) {
        let of_type = &mut self.by_type[type_index(qtype_of(response).unwrap_or(0))];
        of_type.requests[tcp as usize][v6 as usize] += 1;
        of_type.latency[bucket(&LATENCY_NS, elapsed_ns)] += 1;
        of_type.latency_sum_ns += elapsed_ns;
        let rcode = response.get(3).map(|b| (b & 0xF) as usize).unwrap_or(N_RCODES - 1);
        self.responses[rcode.min(N_RCODES - 1)] += 1;
        self.sizes[bucket(&SIZES, response.len() as u64)] += 1;
        self.size_sum += response.len() as u64;
        self.pending += 1;
    }

    /// Counts a query handed to the forwarder.
    pub fn forwarded(&mut self, tcp: bool, v6: bool, query: &[u8]) {
        self.by_type[type_index(qtype_of(query).unwrap_or(0))].requests[tcp as usize][v6 as usize] += 1;
        self.forwarded += 1;
        self.pending += 1;
    }

    /// Counts a packet that was not answered.
    pub fn dropped(&mut self) {
        self.dropped += 1;
        self.pending += 1;
    }

    /// Whether enough is counted to publish.
    #[inline]
    pub fn due(&self) -> bool {
        self.pending >= FLUSH_EVERY
    }

    /// Adds the counts into the shared counters and resets them.
    pub fn flush(&mut self, into: &QueryStats) {
        if self.pending == 0 {
            return;
        }
        let add = |a: &AtomicU64, v: u64| {
            if v != 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        };
        for (t, of_type) in self.by_type.iter().enumerate() {
            for (p, families) in of_type.requests.iter().enumerate() {
                for (f, v) in families.iter().enumerate() {
                    add(&into.requests[p][f][t], *v);
                }
            }
            for (i, v) in of_type.latency.iter().enumerate() {
                add(&into.latency[t][i], *v);
            }
            add(&into.latency_sum_ns[t], of_type.latency_sum_ns);
        }
        for (i, v) in self.responses.iter().enumerate() {
            add(&into.responses[i], *v);
        }
        add(&into.forwarded, self.forwarded);
        add(&into.dropped, self.dropped);
        for (i, v) in self.sizes.iter().enumerate() {
            add(&into.sizes[i], *v);
        }
        add(&into.size_sum, self.size_sum);
        *self = LocalStats::default();
    }
}

impl Default for QueryStats {
    fn default() -> Self {
        QueryStats {
            requests: Default::default(),
            responses: Default::default(),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            latency: Default::default(),
            latency_sum_ns: Default::default(),
            sizes: Default::default(),
            size_sum: AtomicU64::new(0),
        }
    }
}

// === impl QueryStats ===

impl QueryStats {
    /// Queries received so far: (transport, client address family, query type, count), those
    /// counted at least once, for other views of the same counts (`crate::coredns_metrics`).
    pub fn requests(&self) -> impl Iterator<Item = (&'static str, &'static str, &'static str, u64)> + '_ {
        PROTOS.iter().enumerate().flat_map(move |(p, proto)| {
            FAMILIES.iter().enumerate().flat_map(move |(f, family)| {
                TYPES.iter().enumerate().filter_map(move |(t, (_, name))| {
                    let n = self.requests[p][f][t].load(Ordering::Relaxed);
                    (n > 0).then_some((*proto, *family, *name, n))
                })
            })
        })
    }

    /// Responses from our zones so far: (rcode, count).
    pub fn responses(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        RCODES.iter().zip(&self.responses).map(|(rcode, n)| (*rcode, n.load(Ordering::Relaxed)))
    }

    /// The local-answer latency histogram of each query type answered at least once: (query
    /// type, (upper bound in seconds, count) per bucket, sum in seconds).
    pub fn latency_by_type(&self) -> impl Iterator<Item = (&'static str, Vec<(f64, u64)>, f64)> + '_ {
        TYPES.iter().enumerate().filter_map(move |(t, (_, name))| {
            let buckets = latency_buckets(self.latency[t].iter().map(|n| n.load(Ordering::Relaxed)));
            let sum = self.latency_sum_ns[t].load(Ordering::Relaxed) as f64 / 1e9;
            buckets.iter().any(|(_, n)| *n > 0).then_some((*name, buckets, sum))
        })
    }
}

/// The latency buckets with their upper bounds in seconds.
fn latency_buckets(counts: impl Iterator<Item = u64>) -> Vec<(f64, u64)> {
    LATENCY_NS.iter().map(|&ns| ns as f64 / 1e9).chain([f64::INFINITY]).zip(counts).collect()
}

/// Whether a client counts as IPv6 (CoreDNS's family 2): an IPv4-mapped address is IPv4.
#[inline]
pub fn is_v6(peer: &std::net::SocketAddr) -> bool {
    matches!(peer, std::net::SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_none())
}

/// The query counters as a prometheus-client collector, read from the shared atomics at each
/// scrape: counting stays a plain integer add per query on the hot path (see [`LocalStats`]),
/// and `/metrics` has one registry and one encoder.
#[derive(Debug)]
pub struct QueryCollector(pub Arc<QueryStats>);

impl Collector for QueryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let stats = &*self.0;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let help = "Queries received, by transport and query type.";
        let mut requests = encoder.encode_descriptor("requests", help, None, MetricType::Counter)?;
        for (p, proto) in PROTOS.iter().enumerate() {
            for (t, (_, name)) in TYPES.iter().enumerate() {
                let labels = [("proto", *proto), ("type", *name)];
                let n = get(&stats.requests[p][0][t]) + get(&stats.requests[p][1][t]);
                requests.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
        let help = "Responses sent from our zones, by rcode.";
        let mut responses = encoder.encode_descriptor("responses", help, None, MetricType::Counter)?;
        for (i, rcode) in RCODES.iter().enumerate() {
            let labels = [("rcode", *rcode)];
            responses.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&get(&stats.responses[i]), None)?;
        }
        let counters = [
            ("forwarded", "Queries forwarded upstream.", &stats.forwarded),
            ("dropped", "Packets not answered (responses, runts, full forwarding queue).", &stats.dropped),
        ];
        for (name, help, value) in counters {
            encoder
                .encode_descriptor(name, help, None, MetricType::Counter)?
                .encode_counter::<NoLabelSet, _, u64>(&get(value), None)?;
        }
        // Our histogram is over every query type.
        let latency = latency_buckets((0..N_LAT).map(|i| stats.latency.iter().map(|row| get(&row[i])).sum()));
        let sizes = SIZES.iter().map(|&b| b as f64).chain([f64::INFINITY]).zip(stats.sizes.iter().map(get)).collect();
        let histograms = [
            (
                "request_duration_seconds",
                "Time from receiving a query to its response being ready (local answers).",
                latency,
                stats.latency_sum_ns.iter().map(get).sum::<u64>() as f64 / 1e9,
            ),
            ("response_size_bytes", "Size of the responses sent from our zones.", sizes, get(&stats.size_sum) as f64),
        ];
        for (name, help, buckets, sum) in histograms {
            let count = buckets.iter().map(|(_, n)| n).sum();
            encoder
                .encode_descriptor(name, help, None, MetricType::Histogram)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_flush_and_render() {
        let shared = QueryStats::default();
        let mut local = LocalStats::default();
        // A response to an A query with NXDOMAIN.
        let mut response = vec![0x12, 0x34, 0x84, 0x03, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'x', 0, 0, 1, 0, 1];
        local.answered(false, false, &response, 5_000);
        response[3] = 0x00;
        local.answered(true, true, &response, 500);
        local.dropped();
        local.flush(&shared);
        let mut registry = prometheus_client::registry::Registry::with_prefix("headless_dns");
        registry.register_collector(Box::new(QueryCollector(Arc::new(shared))));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("headless_dns_requests_total{proto=\"udp\",type=\"A\"} 1"), "{text}");
        assert!(text.contains("headless_dns_requests_total{proto=\"tcp\",type=\"A\"} 1"), "{text}");
        assert!(text.contains("headless_dns_responses_total{rcode=\"NXDOMAIN\"} 1"), "{text}");
        assert!(text.contains("headless_dns_dropped_total 1"), "{text}");
        assert!(text.contains("headless_dns_request_duration_seconds_bucket{le=\"0.000001\"} 1"), "{text}");
        assert!(text.contains("headless_dns_request_duration_seconds_count 2"), "{text}");
    }
}
