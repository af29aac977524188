//! How the Kubernetes watchers come back after the API server went away, and how they say so.
//!
//! ```text
//!  watch error ──410 Gone──────────────▶ relist now (no wait: the version is gone, not the server)
//!              └─anything else─▶ Retry: 50-100, 100-200, 200-400, then 250-500 ms per attempt
//!  a 2xx answer to this watcher's client (list or watch) ─▶ Answered ─▶ reset, "watch recovered"
//! ```
//!
//! kube-runtime's default backoff grows to 30 s (×2 jitter) and resets only after 120 s without
//! errors, and a `410 Gone` costs one more wait: a change made just after a 45 s control-plane
//! outage was served 78 s later. Here an attempt is never more than half a second apart, so a
//! change made once the API server answers again is served within about a second whatever the
//! outage's length, and a `410 Gone` relists at once. Probing a server that is down costs a refused
//! connection; many replicas spread out through the jitter instead of reconnecting in lockstep.
//!
//! [`Outage`] turns the watchers' failures into one warning per outage naming every failing
//! watch, and one "watch recovered" line per watch when its connection is re-established, even
//! for a kind that has no event to deliver.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use kube::client::Body;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

// === impl Retry ===

/// The wait before a watcher's next attempt after an error: doubling from [`Retry::FIRST`] up to
/// [`Retry::CAP`], each wait drawn from its upper half ("equal jitter").
#[derive(Debug, Default)]
pub(crate) struct Retry {
    failures: u32,
}

impl Retry {
    /// The first wait's upper bound.
    pub(crate) const FIRST: Duration = Duration::from_millis(100);
    /// No wait is longer: the bound on how stale a watcher is once the API server answers again.
    pub(crate) const CAP: Duration = Duration::from_millis(500);

    /// The wait before the next attempt; each call counts one more consecutive failure.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let upper = Self::FIRST.saturating_mul(1 << self.failures.min(16)).min(Self::CAP);
        self.failures = self.failures.saturating_add(1);
        let half = upper / 2;
        half + half.mul_f64(unit_random())
    }

    /// A success: the next failure starts the schedule over.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A uniform number in [0, 1).
fn unit_random() -> f64 {
    (crate::forward::rand_u64() >> 11) as f64 / (1u64 << 53) as f64
}

// === impl Answered ===

/// A client layer that counts the API server's successful answers (2xx response heads, which a
/// watch sends as soon as it is established). Each watcher has its own client, so the count says
/// that *its* list or watch got through.
#[derive(Clone)]
pub(crate) struct Answered(Arc<watch::Sender<u64>>);

impl Answered {
    /// A layer and the receiver that sees its count.
    pub(crate) fn new() -> (Answered, watch::Receiver<u64>) {
        let (tx, rx) = watch::channel(0);
        (Answered(Arc::new(tx)), rx)
    }
}

impl<S> tower::Layer<S> for Answered {
    type Service = AnsweredService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AnsweredService { inner, answered: self.0.clone() }
    }
}

/// The service [`Answered`] wraps around the client's stack.
#[derive(Clone)]
pub(crate) struct AnsweredService<S> {
    inner: S,
    answered: Arc<watch::Sender<u64>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<Body>> for AnsweredService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let response = self.inner.call(request);
        let answered = self.answered.clone();
        Box::pin(async move {
            let response = response.await?;
            if response.status().is_success() {
                answered.send_modify(|n| *n = n.wrapping_add(1));
            }
            Ok(response)
        })
    }
}

// === impl Outage ===

/// How long after a watch fails the outage is logged, if a watch is still failing then: a
/// connection that drops and resumes at once is no outage, and an API server that went away
/// breaks every watch within this time, so one warning names them all.
const GATHER: Duration = Duration::from_secs(1);

/// The watchers' shared view of an outage, for the log: one warning naming every failing watch.
pub(crate) struct Outage {
    state: Mutex<OutageState>,
    changed: Notify,
}

#[derive(Default)]
struct OutageState {
    /// Failing watch → its first error.
    failing: BTreeMap<String, String>,
    /// Whether this outage's warning was logged.
    reported: bool,
}

impl Outage {
    /// An outage tracker for the watchers of one source.
    pub(crate) fn new() -> Arc<Outage> {
        Arc::new(Outage { state: Mutex::default(), changed: Notify::new() })
    }

    /// `watch` failed (the first failure since it last worked).
    pub(crate) fn failed(&self, watch: &str, error: &dyn std::fmt::Display) {
        tracing::debug!(watch, %error, "watch failed");
        self.state.lock().failing.insert(watch.to_string(), error.to_string());
        self.changed.notify_one();
    }

    /// `watch` works again.
    pub(crate) fn recovered(&self, watch: &str) {
        let mut state = self.state.lock();
        state.failing.remove(watch);
        if state.reported {
            tracing::info!(watch, "watch recovered");
        } else {
            tracing::debug!(watch, "watch recovered");
        }
        if state.failing.is_empty() {
            state.reported = false;
        }
    }

    /// Logs each outage once, [`GATHER`] after its first failure.
    pub(crate) async fn report(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = cancel.cancelled() => return,
            }
            if self.state.lock().reported {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(GATHER) => {}
                _ = cancel.cancelled() => return,
            }
            let mut state = self.state.lock();
            if state.reported || state.failing.is_empty() {
                continue;
            }
            state.reported = true;
            let watches: Vec<&str> = state.failing.keys().map(String::as_str).collect();
            let error = state.failing.values().next().map(String::as_str).unwrap_or_default();
            tracing::warn!(
                watches = %watches.join(", "),
                %error,
                retry_within = ?Retry::CAP,
                "Kubernetes API watches failing; the last known records keep serving"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_doubles_to_the_cap_with_jitter_and_resets() {
        let mut retry = Retry::default();
        let uppers = [100, 200, 400, 500, 500, 500, 500, 500];
        for upper in uppers {
            let d = retry.next_delay();
            let upper = Duration::from_millis(upper);
            assert!(d >= upper / 2 && d <= upper, "{d:?} outside [{:?}, {upper:?}]", upper / 2);
        }
        for _ in 0..1000 {
            assert!(retry.next_delay() <= Retry::CAP);
        }
        retry.reset();
        assert!(retry.next_delay() <= Retry::FIRST);
    }

    #[test]
    fn jitter_spreads_the_attempts() {
        let waits: std::collections::HashSet<Duration> = (0..50).map(|_| Retry::default().next_delay()).collect();
        assert!(waits.len() > 40, "{} distinct first waits of 50", waits.len());
    }
}
