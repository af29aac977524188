//! headless-dns: an authoritative DNS server for a Kubernetes cluster domain, built for headless
//! Services and StatefulSet churn.
//!
//! ```text
//!  YAML manifests ─▶ source::file ─┐                                          ┌─▶ UDP workers (one
//!                                  ├─▶ Event ─▶ writer thread ─▶ index::Index ◀┤   socket per core)
//!  Kubernetes API ─▶ source::kube ─┘   (mpsc)   cluster::Model   (name → bytes)└─▶ TCP tasks
//!                                               index::Writer
//! ```
//!
//! - [`source`] turns the outside world into [`source::Event`]s.
//! - [`cluster`] holds minimal projections of the objects ([`cluster::Model`]).
//! - [`index`] derives the records of each changed Service, Pod or Namespace and publishes
//!   ready-to-send answers name by name ([`index::Writer`] → [`index::Index`]).
//! - [`dns`] parses queries, splices stored answers behind the client's question, and serves
//!   UDP and TCP.

#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    rust_2018_idioms,
    clippy::dbg_macro,
    clippy::print_stdout
)]

pub mod cluster;
pub mod config;
pub mod dns;
pub mod index;
pub mod source;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Model, Owner};
use crate::config::{Config, SourceConfig};
use crate::dns::Responder;
use crate::dns::server::{DnsServer, Sockets};
use crate::index::{Index, Writer};
use crate::source::Event;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file source could not read its manifests.
    #[error("file source: {0}")]
    File(#[from] source::file::Error),
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
    index: Arc<Index>,
    dns: DnsServer,
    cancel: CancellationToken,
    source: tokio::task::JoinHandle<()>,
    writer: std::thread::JoinHandle<()>,
}

impl Running {
    /// The bound DNS addresses (UDP and TCP on each).
    pub fn dns_addrs(&self) -> &[SocketAddr] {
        &self.dns_addrs
    }

    /// The published index.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// Stops serving and waits for every task.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.dns.stop().await;
        let _ = self.source.await;
        let _ = tokio::task::spawn_blocking(move || self.writer.join()).await;
    }
}

/// Starts the source, the writer and the DNS workers. Returns once the sockets are bound and the
/// source's initial state is read (answers may still be SERVFAIL until it is published).
pub async fn start(config: Config) -> Result<Running, Error> {
    let index = Arc::new(Index::new(&config.records));
    let writer = Writer::new(index.clone(), config.records.clone());
    let cancel = CancellationToken::new();
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);

    // Read the source's initial state first: a broken manifest fails before any socket opens.
    let source = match &config.source {
        SourceConfig::File { path, opts } => {
            let file = source::file::FileSource::load(path, opts.clone())?;
            tracing::info!(path = %path.display(), objects = file.object_count(), "manifests loaded");
            file
        }
    };

    // Serve (SERVFAIL for our zones until the initial state is published) before applying it,
    // so "listening" always precedes "serving" in the log.
    let sockets = Sockets::bind(&config.listen, config.udp_workers).map_err(Error::Bind)?;
    let dns_addrs = sockets.local_addrs();
    let responder = Arc::new(Responder::new(index.clone(), config.max_udp_size));
    let dns = DnsServer::start(sockets, responder, config.tcp.clone()).map_err(Error::Bind)?;
    for addr in &dns_addrs {
        tracing::info!(%addr, "listening (udp, tcp)");
    }

    let writer = std::thread::Builder::new()
        .name("index-writer".into())
        .spawn(move || apply_events(rx, writer))
        .map_err(Error::Bind)?;
    let source = tokio::spawn(source.run(tx, cancel.clone()));
    Ok(Running {
        dns_addrs,
        index,
        dns,
        cancel,
        source,
        writer,
    })
}

/// Runs the server until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let running = start(config).await?;
    shutdown.await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

/// The writer loop: applies events to the model in order and publishes after each batch, so
/// every change is visible to the next query once it has been applied.
fn apply_events(mut rx: mpsc::Receiver<Event>, mut writer: Writer) {
    let mut model = Model::new();
    let mut touched: HashSet<Owner> = HashSet::new();
    while let Some(first) = rx.blocking_recv() {
        let mut synced = false;
        let mut next = Some(first);
        let mut applied = 0;
        while let Some(event) = next.take() {
            match event {
                Event::Apply(obj) => touched.extend(model.apply(obj)),
                Event::Delete(what) => touched.extend(model.delete(&what)),
                Event::RelistStart(scope) => model.relist_start(scope),
                Event::RelistDone(scope) => touched.extend(model.relist_done(&scope)),
                Event::Synced => synced = true,
            }
            applied += 1;
            if applied < EVENT_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !touched.is_empty() {
            writer.recompute(&model, touched.drain());
        }
        if synced && !writer.index().is_ready() {
            let (services, slices, pods, namespaces) = model.counts();
            tracing::info!(
                services,
                slices,
                pods,
                namespaces,
                names = writer.index().len(),
                "initial state published; serving"
            );
            writer.index().set_ready(true);
        }
    }
}
