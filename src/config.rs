//! Command-line flags → one validated [`Config`]. Nothing else reads flags or the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::dns::name::Name;
use crate::dns::proto::{DEFAULT_MAX_UDP, MIN_UDP};
use crate::dns::server::TcpLimits;
use crate::index::{PodMode, PtrMode, RecordConfig};
use crate::source::file::FileOptions;
use crate::source::kube::KubeOptions;

/// `--udp-batch` by default: see the README's Performance section for the measurement.
pub const DEFAULT_UDP_BATCH: u16 = 32;

/// Why the flags do not make a configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--source` is neither `file:PATH`, `kube` nor `primary:ADDR`.
    #[error("--source {0:?}: expected file:PATH, kube, or primary:IP[:PORT] (repeatable)")]
    Source(String),
    /// Several `--source` flags that are not all primaries.
    #[error("--source is given {0} times: only primary:IP[:PORT] is repeatable (failover)")]
    Sources(usize),
    /// A flag only applies to `--source kube`.
    #[error("{0} only applies to --source kube")]
    KubeOnly(&'static str),
    /// `--upstream` is not an address (or `none` mixed with addresses).
    #[error("--upstream {0:?}: expected IP, IP:PORT, or none alone")]
    Upstream(String),
    /// A `--forward` is not `ZONE=ADDR[,ADDR…]`, or names a zone it cannot forward.
    #[error("--forward {value:?}: {reason}")]
    Forward {
        /// The flag's value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// `--namespace-labels` is not a label selector.
    #[error("--namespace-labels {value:?}: {reason}")]
    NamespaceLabels {
        /// The flag's value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// `--autopath` without `--pods verified`.
    #[error("--autopath needs --pods verified (it must know which Pod a client IP is)")]
    Autopath,
    /// `--notify` is not an address.
    #[error("--notify {0:?}: expected IP or IP:PORT ([IPv6]:PORT)")]
    Notify(String),
    /// `--transfer-to` or `--allow-notify` is not a network.
    #[error("{0} {1:?}: expected a CIDR (10.0.0.0/8) or an address")]
    Network(&'static str, String),
    /// `--allow-notify` without `--source primary:`.
    #[error("--allow-notify only applies to --source primary:IP[:PORT] (a secondary)")]
    AllowNotify,
    /// A record-building flag on a secondary, whose records its primary builds.
    #[error("{0} has no effect on a secondary (--source primary:): set it on the primary, which builds the records")]
    PrimaryOnly(&'static str),
    /// `--http` is not an address.
    #[error("--http {0:?}: expected ADDR:PORT or none")]
    Http(String),
    /// A `--zone` is not a domain name.
    #[error("--zone {zone:?}: {source}")]
    Zone {
        /// The flag's value.
        zone: String,
        /// Why it is not a name.
        #[source]
        source: crate::dns::name::NameError,
    },
    /// `--multicluster-zone` is not a name, or is also a `--zone`.
    #[error("--multicluster-zone {zone:?}: {reason}")]
    MulticlusterZone {
        /// The flag's value.
        zone: String,
        /// Why it cannot be served.
        reason: String,
    },
    /// A TTL is out of range.
    #[error("{flag} {value}: must be at most 3600 seconds")]
    Ttl {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: u32,
    },
}

/// headless-dns: authoritative DNS for a Kubernetes cluster domain.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, max_term_width = 100, args_override_self = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve DNS for the cluster zone(s) from a source of Kubernetes objects.
    Serve(Box<ServeArgs>),
    /// Ask a running server why a name answers what it answers: the answer, the Service, each
    /// EndpointSlice endpoint with its conditions and Pod, and what was left out and why.
    Explain(ExplainArgs),
    /// Print the `serve --config` file equivalent to a CoreDNS Corefile (kubeadm's, the Helm
    /// chart's, k3s's, OpenShift's), or fail naming the first line headless-dns cannot honour.
    FromCorefile(FromCorefileArgs),
}

/// Arguments of `from-corefile`.
#[derive(Debug, Args)]
pub struct FromCorefileArgs {
    /// The Corefile (`kubectl -n kube-system get configmap coredns -o jsonpath='{.data.Corefile}'`).
    pub file: PathBuf,
}

/// Arguments of `explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The name, e.g. web-1.nginx.default.svc.cluster.local (or a reverse name).
    pub name: String,
    /// The record type.
    #[arg(default_value = "A")]
    pub rtype: String,
    /// The server's HTTP address (its --http).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    pub server: String,
}

/// `--loadbalance`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LoadBalance {
    /// Stable order.
    Off,
    /// Rotate per query.
    RoundRobin,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where Services, EndpointSlices, Pods and Namespaces come from: `kube` watches the
    /// Kubernetes API; `file:PATH` reads Kubernetes YAML (a file, or a directory of
    /// *.yaml/*.yml/*.json; multi-document and `kind: List`, as `kubectl get -o yaml` writes) and
    /// re-reads it when it changes; `primary:IP[:PORT]` makes this server a secondary that copies
    /// the zones from a headless-dns primary by AXFR, then IXFR on each NOTIFY from it (and at the
    /// SOA refresh interval). Repeat `primary:` for failover: the first that answers is used.
    /// The secondary needs the primary's --zone, --ttl and --negative-ttl (its SOA is its own).
    #[arg(long, value_name = "SOURCE", required = true)]
    pub source: Vec<String>,

    /// A configuration file (YAML, JSON, or TOML when it ends in .toml) whose keys are these
    /// flags without the dashes (`source: kube`, `zone: [cluster.local]`, `ttl: 5`). Flags given
    /// on the command line override the file's.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// With `--source kube`: the kubeconfig file to use. Without it: `KUBECONFIG`, then
    /// `~/.kube/config`, then the in-cluster service account.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// With `--source kube`: serve only these namespaces (repeatable; default: all).
    #[arg(long = "namespace", value_name = "NS")]
    pub namespaces: Vec<String>,

    /// With `--source kube`: serve only Services and EndpointSlices matching this label selector
    /// (`app=web`, `tier in (a,b)`, `!canary`).
    #[arg(long, value_name = "SELECTOR")]
    pub label_selector: Option<String>,

    /// Serve only the Services of Namespaces whose labels match this selector (`team=a`,
    /// `env in (prod,stage)`, `!legacy`), following label changes (CoreDNS `namespace_labels`).
    /// With `--source kube` the API server filters the Namespace watch; with files, Namespace
    /// documents are checked as they are read. A Service whose Namespace is absent is not served.
    #[arg(long, value_name = "SELECTOR")]
    pub namespace_labels: Option<String>,

    /// Address for HTTP: `/healthz` (the process serves), `/readyz` (the first full state of the
    /// cluster is served), `/metrics` (Prometheus). `none` disables it.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub http: String,

    /// Address to answer DNS on, over UDP and TCP (repeatable). Port 0 picks a free port.
    #[arg(long = "listen", value_name = "ADDR", default_value = "0.0.0.0:53")]
    pub listen: Vec<SocketAddr>,

    /// Zone to be authoritative for (repeatable). `in-addr.arpa` and `ip6.arpa` are always served
    /// for the addresses the cluster knows.
    #[arg(long = "zone", value_name = "NAME", default_value = "cluster.local")]
    pub zones: Vec<String>,

    /// Also serve the Multi-Cluster Services zone (KEP-1645; `clusterset.local` is the name the
    /// MCS API fixes) from ServiceImports (multicluster.x-k8s.io v1beta1 or v1alpha1) and the
    /// EndpointSlices labelled multicluster.kubernetes.io/service-name and
    /// multicluster.kubernetes.io/source-cluster, as CoreDNS's `multicluster` option. With
    /// `--source kube` they are watched only when this is set; a cluster without the ServiceImport
    /// CRD logs one warning and the cluster zones keep serving [default: not served].
    #[arg(long, value_name = "NAME")]
    pub multicluster_zone: Option<String>,

    /// TTL in seconds of positive answers.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub ttl: u32,

    /// TTL of headless Service names, endpoint (Pod) names, their SRV and PTR records
    /// [default: --ttl].
    #[arg(long, value_name = "SECONDS")]
    pub ttl_headless: Option<u32>,

    /// TTL of ClusterIP Service names, their SRV and PTR records [default: --ttl].
    #[arg(long, value_name = "SECONDS")]
    pub ttl_clusterip: Option<u32>,

    /// TTL of negative answers (NXDOMAIN, NODATA): the SOA minimum. Short, so that a Pod being
    /// recreated is not cached as missing.
    #[arg(long, value_name = "SECONDS", default_value_t = 1)]
    pub negative_ttl: u32,

    /// Pod names `<a-b-c-d>.<ns>.pod.<zone>`: disabled (NXDOMAIN), insecure (any address,
    /// unchecked), verified (only addresses of running Pods in that namespace).
    #[arg(long, value_enum, default_value_t = PodMode::Disabled)]
    pub pods: PodMode,

    /// Which endpoints get PTR records: all (every ready endpoint, as CoreDNS) or hostname-only
    /// (only endpoints with a hostname, as the Kubernetes DNS specification).
    #[arg(long, value_enum, default_value_t = PtrMode::All)]
    pub ptr: PtrMode,

    /// Name an endpoint without a hostname by its Pod's name (`<pod>.<svc>.<ns>.svc.<zone>`,
    /// also its PTR target) instead of its dashed IP (CoreDNS `endpoint_pod_names`).
    #[arg(long)]
    pub endpoint_pod_names: bool,

    /// Serve no endpoint records (CoreDNS `noendpoints`): headless Service names and endpoint
    /// names are NXDOMAIN, and endpoints get no PTR; ClusterIP and ExternalName Services answer
    /// as usual. With --source kube, EndpointSlices are not listed or watched at all.
    #[arg(long)]
    pub no_endpoints: bool,

    /// A ClusterIP Service without a ready endpoint is NXDOMAIN (its SRV records too), so that a
    /// client's search list goes on to the next domain (CoreDNS `ignore empty_service`).
    #[arg(long)]
    pub ignore_empty_service: bool,

    /// UDP worker threads (one SO_REUSEPORT socket each) per listen address [default: one per CPU].
    #[arg(long, value_name = "N")]
    pub udp_workers: Option<usize>,

    /// Datagrams a UDP worker receives and answers per system call on Linux (`recvmmsg` and
    /// `sendmmsg`); 1 is one `recvfrom`/`sendto` per query.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_UDP_BATCH, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub udp_batch: u16,

    /// Largest UDP response in bytes, whatever larger size a client offers (1232 avoids IP
    /// fragmentation, DNS Flag Day 2020). Larger answers are truncated (TC) and retried over TCP.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_UDP)]
    pub max_udp_size: u16,

    /// Open TCP connections at most; at the limit the least recently active one is closed.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub tcp_max_connections: usize,

    /// Close a TCP connection after this long without a query.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub tcp_idle_timeout: Duration,

    /// Upstream resolver for names outside the served zones (repeatable; `IP` or `IP:PORT`), with
    /// a response cache. `none` answers them REFUSED, for use as a stub zone only
    /// [default: the name servers in /etc/resolv.conf].
    #[arg(long = "upstream", value_name = "ADDR")]
    pub upstreams: Vec<String>,

    /// A stub domain (kube-dns `stubDomains`, CoreDNS `forward ZONE ADDR…`): names in ZONE go to
    /// these upstreams (`IP` or `IP:PORT`, comma-separated) instead of --upstream, with the same
    /// cache, timeout and loop detection. Repeatable; the longest matching zone wins. A reverse
    /// zone (`10.in-addr.arpa`) gets the reverse names the cluster does not know.
    #[arg(long = "forward", value_name = "ZONE=ADDR[,ADDR…]")]
    pub forward: Vec<String>,

    /// Which of several upstreams is asked: `fastest` (by the answers so far; two at once, the
    /// first answer wins), `sequential` (in the order given, the next only on failure),
    /// `round-robin` (each in turn, one at a time); CoreDNS `forward { policy }`.
    #[arg(long, value_enum, default_value_t = crate::forward::Policy::Fastest)]
    pub forward_policy: crate::forward::Policy,

    /// Keep forwarded positive answers cached at most this many seconds, capping their TTLs
    /// (CoreDNS `cache SECONDS`) [default: as the upstream says, up to a day].
    #[arg(long, value_name = "SECONDS")]
    pub cache_max_ttl: Option<u64>,

    /// The same for negative answers (CoreDNS `cache { denial CAPACITY SECONDS }`)
    /// [default: as the upstream says, up to a day].
    #[arg(long, value_name = "SECONDS")]
    pub cache_max_negative_ttl: Option<u64>,

    /// Answer reverse names (`in-addr.arpa`, `ip6.arpa`) of addresses the cluster does not know
    /// NXDOMAIN, instead of forwarding them upstream (CoreDNS without `fallthrough in-addr.arpa
    /// ip6.arpa`). Without upstreams they are NXDOMAIN anyway.
    #[arg(long)]
    pub no_reverse_fallthrough: bool,

    /// Answer the names of this file in the /etc/hosts format (CoreDNS `hosts`, k3s's NodeHosts):
    /// A and AAAA for its names, PTR for its addresses, before any upstream. Names in the served
    /// zones stay the cluster's. Re-read when it changes (a ConfigMap update too); a bad line is
    /// skipped with a warning naming it.
    #[arg(long, value_name = "FILE")]
    pub hosts: Option<PathBuf>,

    /// TTL of the answers from --hosts (CoreDNS `hosts { ttl }`).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub hosts_ttl: u32,

    /// How often --hosts is checked for changes (CoreDNS `hosts { reload }`).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub hosts_reload: Duration,

    /// When every upstream fails, answer a forwarded name from its last answer if that expired
    /// less than this long ago, with TTL 30 (RFC 8767; CoreDNS `cache { serve_stale }`, which
    /// defaults to 1h when given). 0 (the default) turns it off.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    pub serve_stale: Duration,

    /// A forwarded name asked this many times, with no gap of --prefetch-duration between two
    /// asks, is looked up again before it expires (when --prefetch-percentage of its TTL is left),
    /// so clients keep finding it cached (CoreDNS `cache { prefetch }`). 0 (the default) turns
    /// it off.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub prefetch: u32,

    /// The longest gap between two asks of a name that --prefetch keeps fresh (CoreDNS
    /// `prefetch N DURATION`).
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = humantime::parse_duration)]
    pub prefetch_duration: Duration,

    /// How much of its TTL is left, in percent, when --prefetch refreshes a name (CoreDNS
    /// `prefetch N DURATION PERCENTAGE%`).
    #[arg(long, value_name = "PERCENT", default_value_t = 10, value_parser = clap::value_parser!(u8).range(10..=90))]
    pub prefetch_percentage: u8,

    /// Also expose the counters under CoreDNS's metric names and labels (`coredns_dns_requests_total`,
    /// `coredns_dns_responses_total`, `coredns_dns_request_duration_seconds`, `coredns_cache_*`,
    /// `coredns_forward_*`, `coredns_kubernetes_dns_programming_duration_seconds`), so that
    /// CoreDNS dashboards and alerts keep working.
    #[arg(long)]
    pub coredns_metrics: bool,

    /// Allow zone transfers (AXFR over TCP) to clients in this network (repeatable, CIDR such as
    /// `10.0.0.0/8` or a single address) [default: nobody].
    #[arg(long = "transfer-to", value_name = "CIDR")]
    pub transfer_to: Vec<String>,

    /// Send NOTIFY (RFC 1996) for every served zone to this secondary whenever the zone changes,
    /// so it transfers the change at once instead of at its next SOA refresh (repeatable; `IP` or
    /// `IP:PORT`, port 53 by default). Bursts are coalesced (`--notify-delay`); unanswered ones are
    /// sent again 4 times, backing off. The secondary still needs `--transfer-to` to pull the zone.
    #[arg(long = "notify", value_name = "ADDR")]
    pub notify: Vec<String>,

    /// Also send NOTIFY, at this port, to every address that transferred a zone from this server
    /// in the last 24 hours: node-local secondaries whose addresses are not known in advance (see
    /// deploy/node-local). Off by default.
    #[arg(long, value_name = "PORT")]
    pub notify_secondaries: Option<u16>,

    /// On a secondary (`--source primary:`): also accept NOTIFY from this network (repeatable,
    /// CIDR or address), e.g. the Pod network when the primaries sit behind a Service address.
    /// A NOTIFY only makes the secondary ask its own primaries sooner [default: the primaries'
    /// addresses only].
    #[arg(long = "allow-notify", value_name = "CIDR")]
    pub allow_notify: Vec<String>,

    /// Wait this long after a change before sending NOTIFY, and at least this long between two
    /// NOTIFY rounds, so a burst of changes becomes one NOTIFY (and one IXFR).
    #[arg(long, value_name = "DURATION", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub notify_delay: Duration,

    /// Memory for the IXFR journal (the differences between serials, for incremental transfers):
    /// bytes, or with a KiB/MiB/GiB suffix. Capped at half the served zones' size (but at least
    /// 64 KiB); the oldest differences go first. 0 answers every IXFR with the whole zone.
    #[arg(long, value_name = "BYTES", default_value = "16MiB", value_parser = parse_bytes)]
    pub ixfr_journal_size: usize,

    /// Server-side search (CoreDNS `autopath`): a query from a running Pod's IP that misses in its
    /// first search domain (`<name>.<ns>.svc.<zone>`) is answered with a CNAME to the first name of
    /// the Pod's search list that exists (`<name>.svc.<zone>`, `<name>.<zone>`, `<name>.` via
    /// --upstream): one round trip instead of four. Needs `--pods verified`.
    #[arg(long)]
    pub autopath: bool,

    /// Order of multi-address answers: `off` (a stable sorted order; the fast path copies bytes)
    /// or `round-robin` (rotated per query, as CoreDNS `loadbalance`).
    #[arg(long, value_enum, default_value_t = LoadBalance::Off)]
    pub loadbalance: LoadBalance,

    /// Answer at most N addresses for a name with more (a headless Service's A or AAAA), a
    /// different subset per query, spread over all of them so that load spreads evenly; the
    /// answer then fits in UDP without TC, for clients that cannot retry over TCP (musl before
    /// 1.2.4). Applies over TCP too [default: all ready endpoints, as the DNS specification says].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_answers: Option<u16>,

    /// The NSID (RFC 5001) answered to `dig +nsid`, and the TXT answer to `dig CH TXT
    /// hostname.bind` (or `id.server`), to tell which replica answered [default: the host name,
    /// which is the Pod name in Kubernetes]. At most 200 bytes are used. An empty value disables
    /// both (`CH TXT version.bind` still answers the version).
    #[arg(long, value_name = "ID")]
    pub nsid: Option<String>,

    /// On SIGTERM: stop reporting ready (`/readyz` 503) but keep answering for this long, so load
    /// balancers and kube-proxy move clients away before the process exits (CoreDNS `lameduck`).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub lameduck: Duration,

    /// With a file source: how often to check the files for changes.
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub file_poll_interval: Duration,

    /// With a file source: how long a changed file must stay unchanged before it is read, so a
    /// file being rewritten in place is never read half-written.
    #[arg(long, value_name = "DURATION", default_value = "300ms", value_parser = humantime::parse_duration)]
    pub file_settle: Duration,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (`info`, `debug`, `headless_dns=debug,kube=warn`, …); RUST_LOG overrides it.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log_level: String,
}

/// Where objects come from.
#[derive(Clone, Debug)]
pub enum SourceConfig {
    /// Events sent by the embedding program through [`crate::Running::feed`] (benchmarks and
    /// tests that drive the model directly). Not reachable from the command line.
    External,
    /// The Kubernetes API.
    Kube(KubeOptions),
    /// Zone transfers from primaries (a secondary).
    Primary(crate::source::primary::PrimaryOptions),
    /// Kubernetes YAML files.
    File {
        /// A file or a directory.
        path: PathBuf,
        /// Polling and settling.
        opts: FileOptions,
    },
}

/// `--hosts` and its options.
#[derive(Clone, Debug)]
pub struct HostsConfig {
    /// The file.
    pub path: PathBuf,
    /// TTL of its answers.
    pub ttl: u32,
    /// How often to check it for changes.
    pub reload: Duration,
}

/// Everything the server needs, validated.
#[derive(Clone, Debug)]
pub struct Config {
    /// The object source.
    pub source: SourceConfig,
    /// DNS listen addresses (UDP and TCP each).
    pub listen: Vec<SocketAddr>,
    /// HTTP listen address, if any.
    pub http: Option<SocketAddr>,
    /// Zones, TTLs, and record options.
    pub records: RecordConfig,
    /// UDP worker threads per listen address.
    pub udp_workers: usize,
    /// Datagrams per `recvmmsg`/`sendmmsg` call (Linux; 1: one per call).
    pub udp_batch: usize,
    /// Largest UDP response.
    pub max_udp_size: u16,
    /// TCP limits.
    pub tcp: TcpLimits,
    /// How long to keep answering after a shutdown signal, not ready.
    pub lameduck: Duration,
    /// The NSID answered to queries that ask for it; empty for none.
    pub nsid: String,
    /// Forwarding: `None` off (REFUSED), `Some(empty)` the system's resolvers, else these.
    pub upstream: Option<Vec<SocketAddr>>,
    /// Stub domains: zones forwarded to upstreams of their own.
    pub stubs: Vec<crate::forward::Stub>,
    /// Forward reverse names of addresses the cluster does not know (when forwarding is on).
    pub reverse_fallthrough: bool,
    /// `--hosts`: a hosts file to answer from.
    pub hosts: Option<HostsConfig>,
    /// `--serve-stale`, `--prefetch`.
    pub stale: crate::stale::StaleOptions,
    /// `--coredns-metrics`: also the CoreDNS metric names.
    pub coredns_metrics: bool,
    /// `--forward-policy`, `--cache-max-ttl`, `--cache-max-negative-ttl`.
    pub forward: crate::forward::ForwardOptions,
    /// Networks allowed to transfer zones.
    pub transfer_to: Vec<ipnet::IpNet>,
    /// Secondaries to NOTIFY of changes.
    pub notify: Vec<SocketAddr>,
    /// Delay before a NOTIFY and between two NOTIFY rounds.
    pub notify_delay: Duration,
    /// NOTIFY recent transfer clients at this port.
    pub notify_secondaries: Option<u16>,
    /// A secondary's extra NOTIFY sources.
    pub allow_notify: Vec<ipnet::IpNet>,
    /// Bound of the IXFR journal in bytes (0: none).
    pub ixfr_journal_size: usize,
    /// Rotate multi-address answers.
    pub round_robin: bool,
    /// Answer at most this many records of an address RRset (`None`: all).
    pub max_answers: Option<usize>,
    /// Server-side search for queries from known Pods.
    pub autopath: bool,
}

impl Config {
    /// A configuration for tests and embedding: the file source at `path`, on `listen`.
    pub fn for_file(path: impl Into<PathBuf>, listen: SocketAddr) -> Config {
        Config {
            source: SourceConfig::File { path: path.into(), opts: FileOptions::default() },
            listen: vec![listen],
            http: None,
            records: RecordConfig::default_for(vec![Name::parse("cluster.local").expect("static name")]),
            udp_workers: 2,
            udp_batch: DEFAULT_UDP_BATCH as usize,
            max_udp_size: DEFAULT_MAX_UDP,
            tcp: TcpLimits::default(),
            lameduck: Duration::ZERO,
            nsid: String::new(),
            upstream: None,
            stubs: Vec::new(),
            reverse_fallthrough: true,
            hosts: None,
            stale: crate::stale::StaleOptions::default(),
            coredns_metrics: false,
            forward: crate::forward::ForwardOptions::default(),
            transfer_to: Vec::new(),
            notify: Vec::new(),
            notify_delay: crate::notify::DEFAULT_DELAY,
            notify_secondaries: None,
            allow_notify: Vec::new(),
            ixfr_journal_size: crate::index::journal::DEFAULT_LIMIT,
            round_robin: false,
            max_answers: None,
            autopath: false,
        }
    }
}

impl Config {
    /// The file source's options, when the source is files.
    pub fn file_options_mut(&mut self) -> Option<&mut FileOptions> {
        match &mut self.source {
            SourceConfig::File { opts, .. } => Some(opts),
            SourceConfig::Kube(_) | SourceConfig::External | SourceConfig::Primary(_) => None,
        }
    }
}

impl ServeArgs {
    fn upstream(&self) -> Result<Option<Vec<SocketAddr>>, Error> {
        if self.upstreams.iter().any(|u| u == "none") {
            return if self.upstreams.len() == 1 { Ok(None) } else { Err(Error::Upstream("none".into())) };
        }
        let addrs = self.upstreams.iter().map(|text| dns_peer(text).ok_or_else(|| Error::Upstream(text.clone())));
        Ok(Some(addrs.collect::<Result<_, _>>()?))
    }

    /// `--forward ZONE=ADDR[,ADDR…]` → stub domains, each zone once, none inside a served zone
    /// (whose names are answered from the cluster and never forwarded).
    fn stubs(&self, zones: &[Name]) -> Result<Vec<crate::forward::Stub>, Error> {
        let mut stubs: Vec<crate::forward::Stub> = Vec::new();
        for value in &self.forward {
            let err = |reason: &str| Error::Forward { value: value.clone(), reason: reason.to_string() };
            let (zone, addrs) = value.split_once('=').ok_or_else(|| err("expected ZONE=ADDR[,ADDR…]"))?;
            let zone = Name::parse(zone).map_err(|e| err(&e.to_string()))?;
            if zone == Name::root() {
                return Err(err("the root zone is --upstream's"));
            }
            if let Some(served) = zones.iter().find(|z| zone.is_within(z)) {
                return Err(err(&format!("inside the served zone {}, which is never forwarded", served.to_dotted())));
            }
            if stubs.iter().any(|s| s.zone == zone) {
                return Err(err("the zone is given twice"));
            }
            let upstreams = addrs
                .split(',')
                .map(|a| dns_peer(a.trim()).ok_or_else(|| err(&format!("{a:?} is not IP or IP:PORT"))))
                .collect::<Result<Vec<_>, _>>()?;
            stubs.push(crate::forward::Stub { zone, upstreams });
        }
        Ok(stubs)
    }

    /// Fails if a flag of `--source kube` is set.
    fn no_kube_flags(&self) -> Result<(), Error> {
        for (flag, set) in [
            ("--kubeconfig", self.kubeconfig.is_some()),
            ("--namespace", !self.namespaces.is_empty()),
            ("--label-selector", self.label_selector.is_some()),
        ] {
            if set {
                return Err(Error::KubeOnly(flag));
            }
        }
        Ok(())
    }

    /// `--source primary:IP[:PORT]`, repeated: the primaries' addresses (None if these are other
    /// sources).
    fn primaries(&self) -> Result<Option<Vec<SocketAddr>>, Error> {
        let mut primaries = Vec::new();
        for text in &self.source {
            let Some(addr) = text.strip_prefix("primary:") else { return Ok(None) };
            primaries.push(dns_peer(addr).ok_or_else(|| Error::Source(text.clone()))?);
        }
        Ok(Some(primaries))
    }

    /// Validates the flags.
    pub fn to_config(&self) -> Result<Config, Error> {
        let namespace_labels = match &self.namespace_labels {
            Some(text) => Some(
                crate::cluster::namespace::NamespaceLabels::parse(text)
                    .map_err(|reason| Error::NamespaceLabels { value: text.clone(), reason })?,
            ),
            None => None,
        };
        let primaries = self.primaries()?;
        if primaries.is_none() && !self.allow_notify.is_empty() {
            return Err(Error::AllowNotify);
        }
        let single = match (&self.source[..], &primaries) {
            (_, Some(_)) => "",
            ([one], None) => one.as_str(),
            (many, None) => return Err(Error::Sources(many.len())),
        };
        let source = match (single.split_once(':'), primaries) {
            (_, Some(primaries)) => {
                self.no_kube_flags()?;
                for (flag, set) in [
                    ("--namespace-labels", self.namespace_labels.is_some()),
                    ("--endpoint-pod-names", self.endpoint_pod_names),
                    ("--no-endpoints", self.no_endpoints),
                    ("--ignore-empty-service", self.ignore_empty_service),
                ] {
                    if set {
                        return Err(Error::PrimaryOnly(flag));
                    }
                }
                SourceConfig::Primary(crate::source::primary::PrimaryOptions { primaries })
            }
            (None, None) if single == "kube" => SourceConfig::Kube(KubeOptions {
                kubeconfig: self.kubeconfig.clone(),
                namespaces: self.namespaces.clone(),
                label_selector: self.label_selector.clone(),
                pods: self.pods == PodMode::Verified,
                namespace_labels: namespace_labels.as_ref().map(|s| s.text.clone()),
                clusterset: self.multicluster_zone.is_some(),
                no_endpoints: self.no_endpoints,
            }),
            (Some(("file", path)), None) if !path.is_empty() => {
                self.no_kube_flags()?;
                SourceConfig::File {
                    path: PathBuf::from(path),
                    opts: FileOptions {
                        poll_interval: self.file_poll_interval,
                        settle: self.file_settle,
                        namespace_labels: namespace_labels.clone(),
                    },
                }
            }
            _ => return Err(Error::Source(single.to_string())),
        };
        if self.autopath && self.pods != PodMode::Verified {
            return Err(Error::Autopath);
        }
        let http = match self.http.as_str() {
            "none" | "" => None,
            addr => Some(addr.parse().map_err(|_| Error::Http(self.http.clone()))?),
        };
        let mut zones = Vec::new();
        for zone in &self.zones {
            let name = Name::parse(zone).map_err(|source| Error::Zone { zone: zone.clone(), source })?;
            if !zones.contains(&name) {
                zones.push(name);
            }
        }
        let clusterset = match &self.multicluster_zone {
            None => None,
            Some(text) => {
                let err = |reason: String| Error::MulticlusterZone { zone: text.clone(), reason };
                let name = Name::parse(text).map_err(|e| err(e.to_string()))?;
                if zones.contains(&name) {
                    return Err(err("it is also a --zone; the cluster-set zone must be a zone of its own".into()));
                }
                Some(name)
            }
        };
        let ttl_headless = self.ttl_headless.unwrap_or(self.ttl);
        let ttl_clusterip = self.ttl_clusterip.unwrap_or(self.ttl);
        for (flag, value) in [
            ("--ttl", self.ttl),
            ("--ttl-headless", ttl_headless),
            ("--ttl-clusterip", ttl_clusterip),
            ("--negative-ttl", self.negative_ttl),
        ] {
            if value > 3600 {
                return Err(Error::Ttl { flag, value });
            }
        }
        let stubs = self.stubs(&zones)?;
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Ok(Config {
            source,
            listen: self.listen.clone(),
            http,
            records: RecordConfig {
                zones,
                ttl: self.ttl,
                ttl_headless,
                ttl_clusterip,
                negative_ttl: self.negative_ttl,
                pods: self.pods,
                ptr: self.ptr,
                endpoint_pod_names: self.endpoint_pod_names,
                no_endpoints: self.no_endpoints,
                ignore_empty_service: self.ignore_empty_service,
                namespace_gates_services: namespace_labels.is_some(),
                clusterset,
            },
            udp_workers: self.udp_workers.unwrap_or(cpus).max(1),
            udp_batch: self.udp_batch as usize,
            max_udp_size: self.max_udp_size.max(MIN_UDP),
            tcp: TcpLimits {
                max_connections: self.tcp_max_connections.max(1),
                idle_timeout: self.tcp_idle_timeout,
                ..TcpLimits::default()
            },
            lameduck: self.lameduck,
            nsid: self.nsid.clone().unwrap_or_else(host_name),
            upstream: self.upstream()?,
            stubs,
            reverse_fallthrough: !self.no_reverse_fallthrough,
            stale: crate::stale::StaleOptions {
                serve_stale: self.serve_stale,
                prefetch: self.prefetch,
                prefetch_duration: self.prefetch_duration,
                prefetch_percentage: self.prefetch_percentage,
            },
            coredns_metrics: self.coredns_metrics,
            forward: crate::forward::ForwardOptions {
                policy: self.forward_policy,
                max_ttl: self.cache_max_ttl.map(Duration::from_secs),
                max_negative_ttl: self.cache_max_negative_ttl.map(Duration::from_secs),
            },
            hosts: self.hosts.clone().map(|path| HostsConfig {
                path,
                ttl: self.hosts_ttl,
                reload: self.hosts_reload.max(Duration::from_millis(10)),
            }),
            round_robin: self.loadbalance == LoadBalance::RoundRobin,
            max_answers: self.max_answers.map(usize::from),
            autopath: self.autopath,
            notify: self
                .notify
                .iter()
                .map(|text| dns_peer(text).ok_or_else(|| Error::Notify(text.clone())))
                .collect::<Result<_, _>>()?,
            notify_delay: self.notify_delay,
            notify_secondaries: self.notify_secondaries,
            allow_notify: networks("--allow-notify", &self.allow_notify)?,
            ixfr_journal_size: self.ixfr_journal_size,
            transfer_to: networks("--transfer-to", &self.transfer_to)?,
        })
    }
}

/// Networks given as CIDRs or single addresses, for `flag`.
fn networks(flag: &'static str, texts: &[String]) -> Result<Vec<ipnet::IpNet>, Error> {
    texts
        .iter()
        .map(|t| {
            t.parse::<ipnet::IpNet>()
                .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| Error::Network(flag, t.clone()))
        })
        .collect()
}

/// A size in bytes: a number, optionally followed by `KiB`, `MiB` or `GiB` (`K`, `M`, `G`).
fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => return Err(format!("{text:?}: expected bytes, or a number with KiB, MiB or GiB")),
    };
    let n: usize = digits.parse().map_err(|_| format!("{text:?}: expected a number of bytes"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("{text:?}: too large"))
}

/// A DNS peer: `IP:PORT`, `[IPv6]:PORT`, or an address alone (port 53).
fn dns_peer(text: &str) -> Option<SocketAddr> {
    let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
    text.parse().ok().or_else(|| bare.parse().ok().map(|ip| SocketAddr::new(ip, 53)))
}

/// The host name (the Pod name in Kubernetes).
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("--config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not parse, or holds something other than a map of options.
    #[error("--config {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Expands `serve --config FILE` into the flags the file sets, placed before the command line's own
/// so that those override the file (for repeatable flags, the command line's values replace the
/// file's). Every key is checked against `serve`'s flags: the file is equivalent to the flags, with
/// the same validation.
pub fn expand_config_file(args: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>, FileError> {
    use clap::CommandFactory;
    let Some(serve_at) = args.iter().position(|a| a == "serve") else { return Ok(args) };
    let rest: Vec<String> = args[serve_at + 1..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let path = rest.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--config=")
            .map(str::to_string)
            .or_else(|| (a == "--config").then(|| rest.get(i + 1).cloned()).flatten())
    });
    let Some(path) = path.map(PathBuf::from) else { return Ok(args) };
    let text = std::fs::read_to_string(&path).map_err(|source| FileError::Read { path: path.clone(), source })?;
    let parse_err = |reason: String| FileError::Parse { path: path.clone(), reason };
    let entries: Vec<(String, serde_json::Value)> = if path.extension().is_some_and(|e| e == "toml") {
        let table: toml::Table = toml::from_str(&text).map_err(|e| parse_err(e.to_string()))?;
        let json = serde_json::to_value(table).map_err(|e| parse_err(e.to_string()))?;
        json.as_object().map(|m| m.clone().into_iter().collect()).unwrap_or_default()
    } else {
        let value: serde_json::Value = serde_saphyr::from_str_with_options(&text, crate::cluster::api::yaml_options())
            .map_err(|e| parse_err(e.to_string()))?;
        match value {
            serde_json::Value::Object(map) => map.into_iter().collect(),
            serde_json::Value::Null => Vec::new(),
            _ => return Err(parse_err("expected a map of options (`ttl: 5`)".into())),
        }
    };
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("serve exists");
    let mut flags: Vec<std::ffi::OsString> = Vec::new();
    for (key, value) in entries {
        let arg =
            serve.get_arguments().find(|a| a.get_long() == Some(key.as_str())).filter(|_| key != "config").ok_or_else(
                || parse_err(format!("unknown option {key:?} (the keys are the flags of `headless-dns serve --help`)")),
            )?;
        let repeatable = matches!(arg.get_action(), clap::ArgAction::Append);
        if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
            // A switch: `autopath: true` sets it, `false` leaves it off.
            match value {
                serde_json::Value::Bool(true) if !rest.iter().any(|a| a == &format!("--{key}")) => {
                    flags.push(format!("--{key}").into())
                }
                serde_json::Value::Bool(_) => {}
                other => return Err(parse_err(format!("{key}: expected true or false, got {other}"))),
            }
            continue;
        }
        let on_command_line = rest.iter().any(|a| a == &format!("--{key}") || a.starts_with(&format!("--{key}=")));
        if on_command_line {
            continue;
        }
        let scalar = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => Ok(s.clone()),
            serde_json::Value::Number(n) => Ok(n.to_string()),
            serde_json::Value::Bool(b) => Ok(b.to_string()),
            other => Err(parse_err(format!("{key}: expected a value, got {other}"))),
        };
        let values = match &value {
            serde_json::Value::Array(items) if repeatable => items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?,
            serde_json::Value::Array(_) => return Err(parse_err(format!("{key}: takes one value, not a list"))),
            v => vec![scalar(v)?],
        };
        for v in values {
            flags.push(format!("--{key}").into());
            flags.push(v.into());
        }
    }
    let mut out = args[..=serve_at].to_vec();
    out.extend(flags);
    out.extend(args[serve_at + 1..].iter().cloned());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_are_bytes_or_binary_units() {
        for (text, bytes) in [("0", 0), ("4096", 4096), ("64KiB", 64 << 10), ("16MiB", 16 << 20), ("1G", 1 << 30)] {
            assert_eq!(parse_bytes(text), Ok(bytes), "{text}");
        }
        for bad in ["", "MiB", "16 MB", "-1", "1.5MiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
