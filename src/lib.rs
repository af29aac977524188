//! headless-dns: an authoritative DNS server for a Kubernetes cluster domain, built for headless
//! Services and StatefulSet churn.
//!
//! ```text
//!  YAML manifests ─▶ source::file ─┐                                           ┌─▶ UDP workers (one
//!                                  ├─▶ Event ─▶ writer thread ─▶ index::Index ◀┤   socket per core)
//!  Kubernetes API ─▶ source::kube ─┘   (mpsc)   pipeline::Pipeline (name → bytes)└─▶ TCP tasks
//!                                               (cluster::Model → index::Writer)
//! ```
//!
//! - [`source`] turns the outside world into [`source::Event`]s.
//! - [`pipeline`] is the one way in for events: it owns the model, the writer and the index.
//! - [`cluster`] holds minimal projections of the objects ([`cluster::Model`]).
//! - [`index`] derives the records of each changed Service, Pod or Namespace and publishes
//!   ready-to-send answers name by name ([`index::Writer`] → [`index::Index`]).
//! - [`dns`] parses queries, splices stored answers behind the client's question, and serves
//!   UDP and TCP.
//! - [`forward`] answers names outside the zones through upstreams (stub domains included), after
//!   [`hosts`] (`--hosts`); [`stale`] adds serve-stale and prefetch to its cache.
//! - [`dns::transfer`] and [`notify`] keep secondaries in step (AXFR, NOTIFY).
//! - [`coredns_metrics`] exposes the counters under CoreDNS's names; [`corefile`] converts a
//!   Corefile into a configuration file (`from-corefile`).

// `deny`, not `forbid`: dns::mmsg (recvmmsg/sendmmsg, measured faster) is the library's one
// exception; the binary's is jemalloc's configuration (src/main.rs).
#![deny(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, clippy::dbg_macro, clippy::print_stdout)]

pub mod cluster;
pub mod config;
pub mod coredns_metrics;
pub mod corefile;
pub mod dns;
pub mod explain;
pub mod forward;
pub mod hosts;
pub mod http;
pub mod index;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod source;
pub mod stale;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SourceConfig};
use crate::dns::Responder;
use crate::dns::server::{DnsServer, Shared, Sockets};
use crate::index::Index;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::source::Event;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file source could not read its manifests.
    #[error("file source: {0}")]
    File(#[from] source::file::Error),
    /// The Kubernetes client could not be configured.
    #[error("kube source: {0}")]
    Kube(#[from] source::kube::Error),
    /// Forwarding could not be set up.
    #[error("forwarding: {0}")]
    Forward(#[from] forward::Error),
    /// The hosts file could not be read.
    #[error("{0}")]
    Hosts(#[from] hosts::Error),
    /// A listen address could not be bound.
    #[error("{0}")]
    Bind(#[source] std::io::Error),
}

/// How many events the source may queue ahead of the writer.
const EVENT_QUEUE: usize = 4096;
/// How many queued events the writer applies before publishing.
const EVENT_BATCH: usize = 1024;

/// A started server.
pub struct Running {
    dns_addrs: Vec<SocketAddr>,
    http_addr: Option<SocketAddr>,
    index: Arc<Index>,
    metrics: Arc<Metrics>,
    dns: DnsServer,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    writer: std::thread::JoinHandle<()>,
    feed: Option<source::Sender>,
    draining: Arc<AtomicBool>,
    lameduck: std::time::Duration,
}

impl Running {
    /// The bound DNS addresses (UDP and TCP on each).
    pub fn dns_addrs(&self) -> &[SocketAddr] {
        &self.dns_addrs
    }

    /// The bound HTTP address, if HTTP is enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The published index.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// With [`SourceConfig::External`]: the channel to send events on.
    pub fn feed(&self) -> Option<&source::Sender> {
        self.feed.as_ref()
    }

    /// Stops serving and waits for every task.
    pub async fn stop(mut self) {
        self.feed = None;
        self.cancel.cancel();
        self.dns.stop().await;
        for task in self.tasks {
            let _ = task.await;
        }
        let _ = tokio::task::spawn_blocking(move || self.writer.join()).await;
    }
}

enum Started {
    External,
    File(source::file::FileSource),
    Kube(source::kube::Connection, source::kube::KubeOptions),
    Primary(source::primary::PrimaryOptions, Arc<notify::Inbox>),
}

/// Starts the source, the writer, the DNS workers and the HTTP endpoints. Returns once the
/// sockets are bound (answers are SERVFAIL for the served zones until the source's first full
/// state is published).
pub async fn start(config: Config) -> Result<Running, Error> {
    let metrics = Arc::new(Metrics::new());
    let secondary = matches!(config.source, SourceConfig::Primary(_));
    let cancel = CancellationToken::new();
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);

    // Prepare the source first: a broken manifest or kubeconfig fails before any socket opens.
    let source = match &config.source {
        SourceConfig::File { path, opts } => {
            let pods = config.records.pods == index::PodMode::Verified;
            let file = source::file::FileSource::load(path, opts.clone(), pods)?;
            tracing::info!(path = %path.display(), objects = file.object_count(), "manifests loaded");
            // The parse's values and scratch are freed; the objects are kept.
            memory::release();
            Started::File(file)
        }
        SourceConfig::Kube(opts) => Started::Kube(source::kube::connect(opts).await?, opts.clone()),
        SourceConfig::Primary(opts) => {
            let primaries = opts.primaries.iter().map(|p| p.ip()).collect();
            let inbox = notify::Inbox::new(primaries, config.allow_notify.clone());
            Started::Primary(opts.clone(), Arc::new(inbox))
        }
        SourceConfig::External => Started::External,
    };
    let inbox = match &source {
        Started::Primary(_, inbox) => Some(inbox.clone()),
        _ => None,
    };
    let pipeline = match &source {
        Started::Primary(..) => Pipeline::secondary(config.records.clone()),
        Started::File(file) => {
            let names = index::records::name_estimate(file.initial(), &config.records);
            Pipeline::with_capacity(config.records.clone(), names)
        }
        Started::External | Started::Kube(..) => Pipeline::new(config.records.clone()),
    };
    let pipeline = pipeline.with_metrics(metrics.clone());
    let (index, model) = (pipeline.index().clone(), pipeline.model().clone());
    // A secondary's zones may sit at different serials for a moment (each is transferred on
    // its own), so it keeps no journal: its own secondaries get full transfers.
    index.journal().set_limit(if secondary { 0 } else { config.ixfr_journal_size });

    // Serve (SERVFAIL for our zones until the initial state is published) before applying it,
    // so "listening" always precedes "serving" in the log.
    let sockets = Sockets::bind(&config.listen, config.udp_workers).map_err(Error::Bind)?;
    let dns_addrs = sockets.local_addrs();
    let clients = config.notify_secondaries.map(|_| Arc::new(dns::transfer::Clients::default()));
    let responder = Responder::new(index.clone(), config.max_udp_size)
        .with_nsid(config.nsid.as_bytes())
        .with_transfer(dns::transfer::TransferAcl::new(config.transfer_to.clone()).with_clients(clients.clone()))
        .with_round_robin(config.round_robin)
        .with_max_answers(config.max_answers)
        .with_autopath(config.autopath)
        .with_inbox(inbox)
        // Unknown reverse names go to the slow lane for the hosts file even without fallthrough.
        .with_reverse_fallthrough(config.reverse_fallthrough || config.hosts.is_some());
    // `--coredns-metrics`: the forwarder counts its answers' rcodes for the CoreDNS view.
    let coredns_counts = config.coredns_metrics.then(coredns_metrics::CorednsCounts::default);
    let hosts = match &config.hosts {
        Some(h) => Some(Arc::new(hosts::Hosts::load(&h.path, h.ttl)?)),
        None => None,
    };
    let forwarder = if config.upstream.is_some() || !config.stubs.is_empty() || hosts.is_some() {
        let forwarder = forward::Forwarder::new(
            config.upstream.as_deref(),
            &config.stubs,
            config.forward,
            metrics.forward.clone(),
        )?
        .with_hosts(hosts.clone())
        .with_stale(config.stale)
        .with_coredns_counts(coredns_counts.clone())
        .with_reverse_fallthrough(config.reverse_fallthrough);
        for (zone, upstreams) in forwarder.stubs() {
            tracing::info!(%zone, ?upstreams, "forwarding a stub domain");
        }
        if config.upstream.is_some() {
            tracing::info!(upstreams = ?forwarder.upstreams(), "forwarding names outside the served zones");
        }
        Some(Arc::new(forwarder))
    } else {
        None
    };
    if config.coredns_metrics {
        let collector =
            coredns_metrics::CorednsCollector::new(&metrics, &dns_addrs, coredns_counts.unwrap_or_default());
        metrics.expose_coredns(collector.into_registry());
    }
    let shared = Shared {
        responder,
        forwarder: forwarder.clone(),
        stats: metrics.queries.clone(),
        tcp: config.tcp.clone(),
        udp_batch: config.udp_batch,
    };
    let dns = DnsServer::start(sockets, shared).map_err(Error::Bind)?;
    for addr in &dns_addrs {
        tracing::info!(%addr, "listening (udp, tcp)");
    }
    let mut tasks = Vec::new();
    let mut http_addr = None;
    let draining = Arc::new(AtomicBool::new(false));
    if let Some(addr) = config.http {
        let explainer = Arc::new(explain::Explainer::new(model.clone(), index.clone(), config.records.clone()));
        let state =
            http::Shared { index: index.clone(), metrics: metrics.clone(), draining: draining.clone(), explainer };
        let (bound, server) = http::serve(addr, state, cancel.clone()).await.map_err(Error::Bind)?;
        tracing::info!(addr = %bound, "http endpoints: /healthz /readyz /metrics");
        http_addr = Some(bound);
        tasks.push(tokio::spawn(server));
    }

    let writer = std::thread::Builder::new()
        .name("index-writer".into())
        .spawn({
            let (runtime, cancel) = (tokio::runtime::Handle::current(), cancel.clone());
            move || apply_events(rx, pipeline, runtime, cancel)
        })
        .map_err(Error::Bind)?;
    if let (Some(hosts), Some(h)) = (hosts, &config.hosts) {
        tasks.push(tokio::spawn(hosts.watch(h.reload, cancel.clone())));
    }
    if let Some(forwarder) = forwarder {
        // After the sockets serve, so a probe that comes back to us is seen.
        tasks.push(tokio::spawn(forwarder.probe_for_loops()));
    }
    if !config.notify.is_empty() || config.notify_secondaries.is_some() {
        tracing::info!(peers = ?config.notify, learned_at_port = ?config.notify_secondaries, "sending NOTIFY to secondaries on every change");
        let learned = config.notify_secondaries.zip(clients).map(|(port, clients)| notify::Learned { clients, port });
        tasks.push(tokio::spawn(notify::run(
            index.clone(),
            config.notify.clone(),
            learned,
            config.notify_delay,
            cancel.clone(),
        )));
    }
    let mut feed = None;
    match source {
        Started::External => feed = Some(tx),
        Started::File(file) => tasks.push(tokio::spawn(file.run(tx, cancel.clone()))),
        Started::Kube(conn, opts) => {
            tasks.push(tokio::spawn(source::kube::run(conn, opts, tx, metrics.clone(), cancel.clone())))
        }
        Started::Primary(opts, inbox) => {
            tracing::info!(primaries = ?opts.primaries, "secondary: copying the zones from the primaries");
            let zones = index.zones().iter().map(|z| z.name.clone()).collect();
            tasks.push(tokio::spawn(source::primary::run(opts, zones, inbox, tx, metrics.clone(), cancel.clone())))
        }
    }
    let lameduck = config.lameduck;
    Ok(Running { dns_addrs, http_addr, index, metrics, dns, cancel, tasks, writer, feed, draining, lameduck })
}

/// Runs the server until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let running = start(config).await?;
    shutdown.await;
    if !running.lameduck.is_zero() {
        // Not ready from now on, but still answering: clients move away before we stop.
        tracing::info!(lameduck = ?running.lameduck, "shutting down: not ready, still answering");
        running.draining.store(true, Ordering::Relaxed);
        running.metrics.ready.set(0);
        tokio::time::sleep(running.lameduck).await;
    }
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

/// Waits for the next event, or for shutdown: a source, or an embedder holding a feed, may keep
/// the channel open after stop.
fn next_event(
    runtime: &tokio::runtime::Handle,
    rx: &mut mpsc::Receiver<(Instant, Event)>,
    cancel: &CancellationToken,
) -> Option<(Instant, Event)> {
    runtime.block_on(async {
        tokio::select! {
            biased;
            event = rx.recv() => event,
            _ = cancel.cancelled() => None,
        }
    })
}

/// The writer loop: reads events and applies them through the pipeline, up to [`EVENT_BATCH`]
/// queued events per publish, so every change is visible to the next query once it has been
/// applied.
fn apply_events(
    mut rx: mpsc::Receiver<(Instant, Event)>,
    mut pipeline: Pipeline,
    runtime: tokio::runtime::Handle,
    cancel: CancellationToken,
) {
    while let Some((oldest, first)) = next_event(&runtime, &mut rx, &cancel) {
        let queued = std::iter::from_fn(|| rx.try_recv().ok().map(|(_, event)| event)).take(EVENT_BATCH - 1);
        pipeline.apply_batch(oldest, std::iter::once(first).chain(queued));
    }
}
