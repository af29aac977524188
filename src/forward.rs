//! Forwarding names outside the served zones to upstream resolvers (the drop-in case: the cluster
//! DNS must answer every name a Pod asks, or musl clients wait out a 5 s timeout on each REFUSED).
//!
//! ```text
//!  UDP worker (sync) ──Job──▶ mpsc ──▶ forwarding task ──spawn──▶ hickory Resolver ──▶ upstreams
//!  TCP connection ─────────await──────────────────────────────────┘   (response cache)
//! ```
//!
//! Each set of upstreams is a route with its own resolver: the stub domains (`--forward ZONE=…`,
//! longest zone first) and the default upstreams (the root zone). The hosts file (`--hosts`) is
//! asked before any of them; reverse names reach them only with fallthrough.
//!
//! hickory-resolver does the upstream work (UDP with TCP fallback, retries across servers, a
//! positive and negative response cache honouring TTLs); we only turn its result into a response
//! to the client's question. Failures become SERVFAIL within the upstream timeout, never a hang.
//!
//! Metrics, exact rather than inferred from TTLs: hickory-resolver counts its own cache hits and
//! misses through the `metrics` facade ([`CacheCounters`] hands those counters to our registry),
//! and every query that actually leaves for an upstream goes through [`CountedConn`], which counts
//! it, its answer's rcode and its round trip (CoreDNS's `cache` and `forward` plugin metrics).
//!
//! Loops: at start a probe for a random name under `headless-dns-loop.` is sent upstream. If it
//! comes back to us, an upstream forwards to us: forwarding is switched off (SERVFAIL) and an
//! error is logged, as CoreDNS's `loop` plugin detects the same (it halts the process instead).

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::BoxStream;
use hickory_proto::op::{DnsRequest, DnsResponse, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolveHosts, ResolverConfig, ServerOrderingStrategy,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::xfer::{DnsExchange, DnsHandle};
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::{ConnectionProvider, PoolContext, Resolver};
use tokio::sync::Semaphore;

use prometheus_client::metrics::counter::Counter;

use crate::coredns_metrics::CorednsCounts;
use crate::metrics::{ForwardMetrics, ProtoLabel, RCODES, RcodeLabel, UpstreamCounts};

/// How long one forwarded query may take before it is answered SERVFAIL.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwarded queries in flight at most (CoreDNS's `max_concurrent 1000`); beyond, SERVFAIL.
const MAX_CONCURRENT: usize = 1000;

/// Why forwarding could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/etc/resolv.conf` could not be read.
    #[error("reading the system resolver configuration: {0}")]
    SystemConf(#[source] NetError),
    /// The resolver could not be built.
    #[error("building the upstream resolver: {0}")]
    Build(#[source] NetError),
    /// No upstream.
    #[error("no upstream name servers (give --upstream ADDR, or --upstream none)")]
    NoUpstream,
}

/// A stub domain (`--forward ZONE=ADDR,…`, kube-dns `stubDomains`): names in `zone` go to
/// `upstreams` instead of the default ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stub {
    /// The zone, lower case.
    pub zone: crate::dns::name::Name,
    /// Its upstreams, asked as the default ones are.
    pub upstreams: Vec<SocketAddr>,
}

/// `--forward-policy`: which upstream of a set is asked first (CoreDNS `forward { policy }`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// The one answering fastest so far (hickory-resolver's query statistics), two asked at once
    /// and the first answer taken.
    #[default]
    Fastest,
    /// In the order given (CoreDNS `sequential`).
    Sequential,
    /// Each in turn (CoreDNS `round_robin`).
    RoundRobin,
}

/// How every set of upstreams is asked and cached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardOptions {
    /// Which upstream first.
    pub policy: Policy,
    /// `--cache-max-ttl`: cache positive answers (and cap their TTLs) at most this long.
    pub max_ttl: Option<Duration>,
    /// `--cache-max-negative-ttl`: the same for negative answers.
    pub max_negative_ttl: Option<Duration>,
}

/// Forwards queries to upstream resolvers: the stub domain whose zone is the longest match of
/// the name, else the default upstreams (if any).
pub struct Forwarder {
    /// Longest zone first; the default upstreams (the root zone) last.
    routes: Vec<Route>,
    in_flight: Semaphore,
    /// `--hosts`: asked before any upstream.
    hosts: Option<Arc<crate::hosts::Hosts>>,
    /// Whether reverse names reach the upstreams (`--no-reverse-fallthrough` clears it).
    reverse_fallthrough: bool,
    /// `in-addr.arpa.` and `ip6.arpa.`.
    reverse_zones: [Name; 2],
    /// `--serve-stale`, `--prefetch`: answers remembered beyond the resolver's cache.
    memory: Option<Arc<crate::stale::Memory>>,
    /// Hits of the resolver's cache, counted by it; the memory's are counted here.
    cache_hits: Counter,
    /// `--coredns-metrics`: what only the CoreDNS view counts.
    coredns: Option<CorednsCounts>,
    /// `--cache-max-negative-ttl`: also the cap of a negative answer's SOA TTL (hickory caps how
    /// long it keeps the answer; CoreDNS's cache caps the TTLs it answers with too).
    max_negative_ttl: Option<u32>,
}

/// One set of upstreams, with its own resolver (and so its own cache) and loop probe.
struct Route {
    zone: Name,
    resolver: Resolver<Counted>,
    upstreams: Vec<SocketAddr>,
    probe: Name,
    looped: AtomicBool,
}

impl Forwarder {
    /// A forwarder to `upstreams` (the name servers of `/etc/resolv.conf` when empty; none at all
    /// when `None`) and to the stub domains, counting into `metrics`.
    pub fn new(
        upstreams: Option<&[SocketAddr]>,
        stubs: &[Stub],
        opts: ForwardOptions,
        metrics: ForwardMetrics,
    ) -> Result<Forwarder, Error> {
        let mut routes = Vec::new();
        for stub in stubs {
            let zone = Name::from_ascii(stub.zone.to_dotted()).map_err(|e| Error::Build(NetError::from(e)))?;
            routes.push(Route::new(zone, stub.upstreams.clone(), opts, &metrics)?);
        }
        if let Some(upstreams) = upstreams {
            let upstreams = if upstreams.is_empty() { system_upstreams()? } else { upstreams.to_vec() };
            if upstreams.is_empty() {
                return Err(Error::NoUpstream);
            }
            routes.push(Route::new(Name::root(), upstreams, opts, &metrics)?);
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.zone.num_labels()));
        let reverse_zones =
            crate::index::records::reverse_zones().map(|z| Name::from_ascii(z.to_dotted()).unwrap_or_default());
        Ok(Forwarder {
            routes,
            in_flight: Semaphore::new(MAX_CONCURRENT),
            hosts: None,
            reverse_fallthrough: true,
            reverse_zones,
            memory: None,
            cache_hits: metrics.cache_hits.clone(),
            coredns: None,
            max_negative_ttl: opts.max_negative_ttl.map(|d| d.as_secs().min(u64::from(u32::MAX)) as u32),
        })
    }

    /// Counts what the CoreDNS view needs besides our own metrics: the rcode of every forwarded
    /// answer, and each client lookup as a cache hit (success or denial) or miss.
    pub fn with_coredns_counts(mut self, coredns: Option<CorednsCounts>) -> Forwarder {
        self.coredns = coredns;
        self
    }

    /// Serves stale answers when the upstreams fail, and refreshes popular names before they
    /// expire (both off by default, as in CoreDNS).
    pub fn with_stale(mut self, opts: crate::stale::StaleOptions) -> Forwarder {
        self.memory = opts.any().then(|| Arc::new(crate::stale::Memory::new(opts)));
        self
    }

    /// Answers the names of a hosts file before asking any upstream.
    pub fn with_hosts(mut self, hosts: Option<Arc<crate::hosts::Hosts>>) -> Forwarder {
        self.hosts = hosts;
        self
    }

    /// Whether reverse names (of addresses the cluster does not know) go upstream; if not, only
    /// the hosts file answers them.
    pub fn with_reverse_fallthrough(mut self, on: bool) -> Forwarder {
        self.reverse_fallthrough = on;
        self
    }

    /// The default upstreams, if any.
    pub fn upstreams(&self) -> &[SocketAddr] {
        self.routes.iter().find(|r| r.zone.is_root()).map_or(&[], |r| &r.upstreams)
    }

    /// Each stub domain and its upstreams, longest zone first.
    pub fn stubs(&self) -> impl Iterator<Item = (&Name, &[SocketAddr])> {
        self.routes.iter().filter(|r| !r.zone.is_root()).map(|r| (&r.zone, &r.upstreams[..]))
    }

    /// Sends each route's loop probe upstream once.
    pub async fn probe_for_loops(self: Arc<Self>) {
        let probes = self.routes.iter().map(|route| {
            tokio::time::timeout(UPSTREAM_TIMEOUT * 2, route.resolver.lookup(route.probe.clone(), RecordType::HINFO))
        });
        futures::future::join_all(probes).await;
    }

    /// Answers `question` from the hosts file, else through the upstreams of the longest zone
    /// that holds it; `None` when nothing is for it. Failures (a timeout, an unreachable
    /// upstream, too many queries in flight, a detected loop) are SERVFAIL within the upstream
    /// timeout, never a hang.
    pub async fn resolve(&self, question: &Query) -> Option<Resolved> {
        let resolved = self.resolve_uncounted(question).await?;
        if let Some(coredns) = &self.coredns {
            coredns.answered.get_or_create(&RcodeLabel { rcode: rcode_name(resolved.rcode) }).inc();
        }
        Some(resolved)
    }

    async fn resolve_uncounted(&self, question: &Query) -> Option<Resolved> {
        if let Some(hosts) = &self.hosts
            && let Some(answers) = hosts.table().answer(question.name(), question.query_type(), hosts.ttl)
        {
            return Some(Resolved { answers, ..Resolved::no_error() });
        }
        if !self.reverse_fallthrough && self.reverse_zones.iter().any(|z| z.zone_of(question.name())) {
            return None;
        }
        let route = self.routes.iter().find(|r| r.zone.zone_of(question.name()))?;
        let servfail = Resolved { rcode: ResponseCode::ServFail, answers: Vec::new(), authorities: Vec::new() };
        if question.name().eq_case(&route.probe) || question.name() == &route.probe {
            if !route.looped.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    zone = %route.zone,
                    upstreams = ?route.upstreams,
                    "forwarding loop detected: an upstream sends our queries back to us; forwarding to it is off (SERVFAIL) until restart"
                );
            }
            return Some(servfail);
        }
        if route.looped.load(Ordering::Relaxed) {
            return Some(servfail);
        }
        if let Some(answers) = self.memory.as_ref().and_then(|m| m.answer(question)) {
            // A popular name kept fresh by prefetch: a hit, from the memory.
            self.cache_hits.inc();
            if let Some(coredns) = &self.coredns {
                coredns.hits[0].inc();
            }
            return Some(Resolved { answers, ..Resolved::no_error() });
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Some(servfail);
        };
        let lookup = route.resolver.lookup(question.name().clone(), question.query_type());
        let (result, seen) = CACHE_SEEN
            .scope(Cell::new(0), async {
                let result = tokio::time::timeout(UPSTREAM_TIMEOUT + Duration::from_millis(500), lookup).await;
                (result, CACHE_SEEN.with(Cell::get))
            })
            .await;
        if let Some(coredns) = &self.coredns {
            self.count_cache(coredns, question, seen, &result);
        }
        Some(match result {
            Ok(Ok(lookup)) => {
                let answers = lookup.answers().to_vec();
                if let Some(memory) = &self.memory
                    && let Some(due) = memory.remember(question, &answers, true)
                {
                    let resolver = route.resolver.clone();
                    crate::stale::keep_fresh(memory.clone(), question.clone(), due, move |q| {
                        // Out of the resolver's cache first, so that the lookup goes upstream
                        // (the memory answers the name meanwhile); the fresh answer is cached
                        // again.
                        resolver.clear_lookup_cache(q.name().clone(), q.query_type());
                        let resolver = resolver.clone();
                        async move {
                            let lookup = resolver.lookup(q.name().clone(), q.query_type());
                            let lookup = tokio::time::timeout(UPSTREAM_TIMEOUT * 2, lookup).await;
                            lookup.ok()?.ok().map(|l| l.answers().to_vec())
                        }
                    });
                }
                Resolved { answers, ..Resolved::no_error() }
            }
            Ok(Err(NetError::Dns(DnsError::NoRecordsFound(none)))) => Resolved {
                rcode: none.response_code,
                answers: Vec::new(),
                authorities: none
                    .soa
                    .map(|soa| soa.into_record_of_rdata())
                    .map(|mut soa| {
                        soa.ttl = soa.ttl.min(self.max_negative_ttl.unwrap_or(u32::MAX));
                        soa
                    })
                    .into_iter()
                    .collect(),
            },
            Ok(Err(error)) => {
                tracing::debug!(name = %question.name(), %error, "upstream failed");
                self.stale_or(servfail, question)
            }
            Err(_) => {
                tracing::debug!(name = %question.name(), "upstream timed out");
                self.stale_or(servfail, question)
            }
        })
    }

    /// Counts a client's lookup for the CoreDNS view: a hit (by kind) if the resolver's cache
    /// alone answered it, else a miss, whose answer the cache now holds until it expires.
    fn count_cache(
        &self,
        coredns: &CorednsCounts,
        question: &Query,
        seen: u8,
        result: &Result<Result<hickory_resolver::lookup::Lookup, NetError>, tokio::time::error::Elapsed>,
    ) {
        let cached = match result {
            Ok(Ok(lookup)) => Some((false, lookup.valid_until())),
            Ok(Err(NetError::Dns(DnsError::NoRecordsFound(none)))) => {
                let ttl = none.negative_ttl.unwrap_or(0).min(self.max_negative_ttl.unwrap_or(u32::MAX));
                Some((true, Instant::now() + Duration::from_secs(u64::from(ttl))))
            }
            _ => None,
        };
        match (seen, cached) {
            (CACHE_HIT, Some((denial, _))) => {
                coredns.hits[usize::from(denial)].inc();
            }
            (0, _) | (CACHE_HIT, None) => {}
            (_, cached) => {
                coredns.misses.inc();
                if let Some((denial, until)) = cached {
                    coredns.entries.cached(question, until, denial);
                }
            }
        }
    }

    /// A remembered answer expired less than `--serve-stale` ago (RFC 8767), else `failed`.
    fn stale_or(&self, failed: Resolved, question: &Query) -> Resolved {
        match self.memory.as_ref().and_then(|m| m.recall(question)) {
            Some(answers) => Resolved { answers, ..Resolved::no_error() },
            None => failed,
        }
    }
}

// === impl Route ===

impl Route {
    /// A resolver for the names in `zone`, asking `upstreams`.
    fn new(
        zone: Name,
        upstreams: Vec<SocketAddr>,
        fwd: ForwardOptions,
        metrics: &ForwardMetrics,
    ) -> Result<Route, Error> {
        let mut config = ResolverConfig::from_parts(None, vec![], vec![]);
        for addr in &upstreams {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for conn in &mut ns.connections {
                conn.port = addr.port();
            }
            config.add_name_server(ns);
        }
        let provider = Counted { runtime: TokioRuntimeProvider::default(), metrics: metrics.clone() };
        let mut builder = Resolver::builder_with_config(config, provider);
        let opts = builder.options_mut();
        // Names arrive fully qualified: no search list, no hosts file.
        opts.ndots = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.timeout = UPSTREAM_TIMEOUT;
        opts.attempts = 1;
        opts.cache_size = 10_000;
        opts.preserve_intermediates = true;
        opts.server_ordering_strategy = match fwd.policy {
            Policy::Fastest => ServerOrderingStrategy::QueryStatistics,
            Policy::Sequential => ServerOrderingStrategy::UserProvidedOrder,
            Policy::RoundRobin => ServerOrderingStrategy::RoundRobin,
        };
        if fwd.policy != Policy::Fastest {
            // One upstream at a time, the next only on failure (hickory asks two at once by
            // default and takes the first answer, which would make any order moot).
            opts.num_concurrent_reqs = 1;
        }
        opts.positive_max_ttl = fwd.max_ttl;
        opts.negative_max_ttl = fwd.max_negative_ttl;
        // opts.edns_payload_len: hickory's default, 1232 (DNS Flag Day 2020), is ours too.
        // The resolver registers its cache counters while it is built: bind them to ours.
        let resolver =
            metrics::with_local_recorder(&CacheCounters(metrics.clone()), || builder.build()).map_err(Error::Build)?;
        // Under the route's zone, so a stub domain's upstreams are asked it (and a loop through
        // them comes back to this route).
        let probe = Name::from_ascii(format!("{:016x}.{:016x}.headless-dns-loop.", rand_u64(), rand_u64()))
            .and_then(|p| p.append_domain(&zone))
            .map_err(|e| Error::Build(NetError::from(e)))?;
        Ok(Route { zone, resolver, upstreams, probe, looped: AtomicBool::new(false) })
    }
}

/// What the upstreams said about a question.
#[derive(Debug)]
pub struct Resolved {
    /// The response code.
    pub rcode: ResponseCode,
    /// The answer records (a CNAME chain included).
    pub answers: Vec<Record>,
    /// The authority records (the SOA of a negative answer).
    pub authorities: Vec<Record>,
}

impl Resolved {
    fn no_error() -> Resolved {
        Resolved { rcode: ResponseCode::NoError, answers: Vec::new(), authorities: Vec::new() }
    }
}

// === impl CacheCounters ===

/// Hands hickory-resolver's cache hit and miss counters (its optional `metrics` feature) to our
/// registry. The resolver creates its counter handles once, in `build()`, so building it inside
/// `metrics::with_local_recorder` binds them to ours: no process-global recorder, one set per
/// forwarder. Every other metric it would register is a no-op (the upstream traffic is counted by
/// [`CountedConn`], per query sent).
struct CacheCounters(ForwardMetrics);

impl metrics::Recorder for CacheCounters {
    fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let (ours, seen) = match key.name() {
            hickory_resolver::metrics::CACHE_HIT_TOTAL => (&self.0.cache_hits, CACHE_HIT),
            hickory_resolver::metrics::CACHE_MISS_TOTAL => (&self.0.cache_misses, CACHE_MISS),
            _ => return metrics::Counter::noop(),
        };
        metrics::Counter::from_arc(Arc::new(Bridged(ours.clone(), seen)))
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

tokio::task_local! {
    /// What the resolver's cache did for the lookup this task awaits ([`CACHE_HIT`],
    /// [`CACHE_MISS`], both for a CNAME chain partly cached): hickory-resolver counts its cache
    /// hits and misses within the lookup's own poll, in the task awaiting it.
    static CACHE_SEEN: Cell<u8>;
}

const CACHE_HIT: u8 = 1;
const CACHE_MISS: u8 = 2;

/// A `metrics` counter that is one of our Prometheus counters, and notes in [`CACHE_SEEN`] that
/// it counted.
struct Bridged(prometheus_client::metrics::counter::Counter, u8);

impl metrics::CounterFn for Bridged {
    fn increment(&self, value: u64) {
        self.0.inc_by(value);
        let _ = CACHE_SEEN.try_with(|seen| seen.set(seen.get() | self.1));
    }

    fn absolute(&self, value: u64) {
        self.0.inc_by(value.saturating_sub(self.0.get()));
    }
}

// === impl Counted ===

/// The resolver's connection provider (Tokio UDP and TCP, as by default), with every connection
/// wrapped in a [`CountedConn`].
#[derive(Clone)]
struct Counted {
    runtime: TokioRuntimeProvider,
    metrics: ForwardMetrics,
}

impl ConnectionProvider for Counted {
    type Conn = CountedConn;
    type FutureConn = Pin<Box<dyn Future<Output = Result<CountedConn, NetError>> + Send>>;
    type RuntimeProvider = TokioRuntimeProvider;

    fn new_connection(
        &self,
        ip: IpAddr,
        config: &ConnectionConfig,
        cx: &PoolContext,
    ) -> Result<Self::FutureConn, NetError> {
        let proto = if matches!(config.protocol, ProtocolConfig::Udp) { "udp" } else { "tcp" };
        let connecting = self.runtime.new_connection(ip, config, cx)?;
        let metrics = self.metrics.clone();
        let upstream = self.metrics.upstreams.of(SocketAddr::new(ip, config.port));
        Ok(Box::pin(async move { Ok(CountedConn { inner: connecting.await?, proto, metrics, upstream }) }))
    }

    fn runtime_provider(&self) -> &TokioRuntimeProvider {
        &self.runtime
    }
}

/// One upstream connection; counts each query sent on it, the rcode of the answer and the time
/// to it. A query that gets no answer (timeout, refused connection) counts as a request only.
#[derive(Clone)]
struct CountedConn {
    inner: DnsExchange<TokioRuntimeProvider>,
    proto: &'static str,
    metrics: ForwardMetrics,
    upstream: Arc<UpstreamCounts>,
}

impl DnsHandle for CountedConn {
    type Response = BoxStream<'static, Result<DnsResponse, NetError>>;
    type Runtime = TokioRuntimeProvider;

    fn send(&self, request: DnsRequest) -> Self::Response {
        self.metrics.requests.get_or_create(&ProtoLabel { proto: self.proto }).inc();
        self.upstream.requests.inc();
        let (sent, metrics, upstream) = (Instant::now(), self.metrics.clone(), self.upstream.clone());
        self.inner
            .send(request)
            .inspect(move |answer| {
                if let Ok(response) = answer {
                    let took = sent.elapsed().as_secs_f64();
                    metrics.duration.observe(took);
                    let slot = rcode_slot(response.metadata.response_code);
                    metrics.responses.get_or_create(&RcodeLabel { rcode: RCODES[slot] }).inc();
                    upstream.responses[slot].inc();
                    upstream.duration[slot].observe(took);
                }
            })
            .boxed()
    }
}

/// The place of an rcode in [`RCODES`].
fn rcode_slot(code: ResponseCode) -> usize {
    match code {
        ResponseCode::NoError => 0,
        ResponseCode::FormErr => 1,
        ResponseCode::ServFail => 2,
        ResponseCode::NXDomain => 3,
        ResponseCode::NotImp => 4,
        ResponseCode::Refused => 5,
        _ => RCODES.len() - 1,
    }
}

/// RCODE names as CoreDNS labels them.
fn rcode_name(code: ResponseCode) -> &'static str {
    RCODES[rcode_slot(code)]
}

/// The name servers in `/etc/resolv.conf` (port 53).
fn system_upstreams() -> Result<Vec<SocketAddr>, Error> {
    let (config, _) = hickory_resolver::system_conf::read_system_conf().map_err(Error::SystemConf)?;
    let mut out: Vec<SocketAddr> = Vec::new();
    for ns in config.name_servers() {
        let port = ns.connections.first().map(|c| c.port).unwrap_or(53);
        let addr = SocketAddr::new(ns.ip, port);
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    Ok(out)
}

/// A random number, good enough for DNS message IDs and probe names (not for keys).
pub(crate) fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}
