//! The HTTP endpoints: `/healthz` (the process serves), `/readyz` (the first full state of the
//! cluster is served), `/metrics` (Prometheus).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::explain::Explainer;
use crate::index::Index;
use crate::metrics::Metrics;

/// What the endpoints read.
#[derive(Clone)]
pub struct Shared {
    /// The published index (`/readyz`: ready once the first full state is in it).
    pub index: Arc<Index>,
    /// Every metric (`/metrics`).
    pub metrics: Arc<Metrics>,
    /// Set while shutting down with a lame-duck period: `/readyz` says 503.
    pub draining: Arc<AtomicBool>,
    /// `/explain`.
    pub explainer: Arc<Explainer>,
}

/// Binds the HTTP listener (so a bad address fails at start) and returns its address and the
/// serving future.
pub async fn serve(
    addr: SocketAddr,
    shared: Shared,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, impl Future<Output = ()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen for HTTP on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/explain", get(explain))
        .with_state(shared);
    let server = async move {
        if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await {
            tracing::error!(%error, "HTTP server failed");
        }
    };
    Ok((local, server))
}

async fn readyz(State(s): State<Shared>) -> impl IntoResponse {
    if s.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: shutting down (lame duck)\n")
    } else if s.index.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the first full state (list of the cluster, or zone transfer) is not served yet\n",
        )
    }
}

/// What `/readyz` says, as the `headless_dns_ready` gauge: 0 during the lame duck too.
fn ready(s: &Shared) -> bool {
    s.index.is_ready() && !s.draining.load(Ordering::Relaxed)
}

async fn metrics_text(State(s): State<Shared>) -> impl IntoResponse {
    s.metrics.index_names.set(s.index.len() as i64);
    s.metrics.ixfr_journal_bytes.set(s.index.journal().bytes() as i64);
    s.metrics.ixfr_journal_versions.set(s.index.journal().versions() as i64);
    s.metrics.ready.set(ready(&s) as i64);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.render())
}

#[derive(serde::Deserialize)]
struct ExplainQuery {
    name: String,
    #[serde(rename = "type", default)]
    rtype: Option<String>,
}

/// `/explain?name=web-1.nginx.default.svc.cluster.local&type=A`: why a name answers what it does.
async fn explain(State(s): State<Shared>, Query(q): Query<ExplainQuery>) -> impl IntoResponse {
    let rtype = q.rtype.as_deref().unwrap_or("A");
    match s.explainer.explain(&q.name, rtype) {
        Ok(text) => (StatusCode::OK, text),
        Err(error) => (StatusCode::BAD_REQUEST, format!("{error}\n")),
    }
}
