//! A fake Kubernetes API server for integration tests.
//!
//! [`FakeApiServer`] serves the small, read-only slice of the Kubernetes REST
//! API that a watcher of Services, EndpointSlices, Pods and Namespaces uses,
//! over real HTTP/1.1 on `127.0.0.1`, so that the unmodified `kube` client
//! (`kube::Client`, `Api::list`, `Api::watch`, `kube::runtime::watcher`) can
//! talk to it exactly as it talks to a real cluster. Tests drive the cluster
//! state and inject faults through synchronous methods.
//!
//! # What it emulates
//!
//! The behaviour follows the Kubernetes "API concepts" document,
//! <https://kubernetes.io/docs/reference/using-api/api-concepts/>:
//!
//! * **Resource versions** (`#resource-versions`). One global, monotonically
//!   increasing counter, as etcd's revision is: every write (`apply`, `delete`)
//!   gets the next number, whatever its kind, so the versions of one kind have
//!   gaps. It is exposed as a decimal string, as the real server does.
//! * **List** (`#retrieving-large-results-sets-in-chunks`,
//!   `#semantics-for-get-and-list`). `GET <collection>` answers a `<Kind>List`
//!   whose `metadata.resourceVersion` is the version the list was served at.
//!   `limit` / `continue` paginate over a consistent snapshot: the continue
//!   token records the snapshot version, later pages are computed as of that
//!   version (rolling the history back), and a token older than the retained
//!   history answers `410 Gone` (`reason: Expired`), as the real server does
//!   once etcd compacted the snapshot. `resourceVersion` with
//!   `resourceVersionMatch=NotOlderThan|Exact` is honoured (an `Exact` list at
//!   a compacted version is `410 Gone`).
//! * **Watch** (`#efficient-detection-of-changes`). `GET <collection>?watch=true`
//!   answers `200` with a chunked body of newline-delimited JSON watch events
//!   `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}}`. Events
//!   after the requested `resourceVersion` are replayed from the per-server
//!   history, then live events follow. With `resourceVersion` unset or `"0"`
//!   the stream starts with a synthetic `ADDED` for every existing object.
//!   Label and field selectors are applied to watches the way the watch cache
//!   does: an object that stops matching is reported as `DELETED`, one that
//!   starts matching as `ADDED`.
//! * **410 Gone** (`#410-gone-responses`). A watch from a version older than the
//!   retained history (see [`FakeApiServer::compact`]; at most
//!   [`DEFAULT_HISTORY_LIMIT`] writes are retained) gets `200` and a single
//!   `ERROR` event carrying a `Status` with `code: 410`, `reason: Expired`,
//!   `message: "too old resource version: X (Y)"`, then the stream ends. The
//!   client must relist.
//! * **Bookmarks** (`#watch-bookmarks`). With `allowWatchBookmarks=true`, the
//!   stream receives `BOOKMARK` events whose object carries only `kind`,
//!   `apiVersion` and `metadata.resourceVersion`: periodically (see
//!   [`FakeApiServer::set_bookmark_interval`], 1 s by default) and on demand
//!   ([`FakeApiServer::send_bookmarks`]). A bookmark is queued behind the
//!   events already queued for that stream, so its version never runs ahead
//!   of what the stream delivered.
//! * **Streaming lists** (`#streaming-lists`, KEP-3157). `sendInitialEvents=true`
//!   (which needs `resourceVersionMatch=NotOlderThan` and
//!   `allowWatchBookmarks=true`) sends the current state as `ADDED` events and
//!   then a bookmark annotated `k8s.io/initial-events-end: "true"`. kube-runtime
//!   only uses this with `watcher::Config::streaming_lists()`; its default is a
//!   paginated list (`limit=500`) followed by a watch.
//! * `timeoutSeconds` ends a watch cleanly (terminating chunk) after that time.
//!
//! Served paths (JSON only, `GET` only; other methods get `405`):
//! `/api/v1/{services,pods,namespaces}`, `/api/v1/namespaces/{ns}/{services,pods}`,
//! `/apis/discovery.k8s.io/v1/endpointslices`,
//! `/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices`, the same for
//! `/apis/multicluster.x-k8s.io/v1beta1/serviceimports` (a CRD's, unless
//! [`set_served`](FakeApiServer::set_served) hides it), single objects
//! below those (`.../{name}`), the discovery documents `/api`, `/api/v1`,
//! `/apis`, `/apis/discovery.k8s.io`, `/apis/discovery.k8s.io/v1`, `/version`,
//! and `/healthz`, `/livez`, `/readyz`. Anything else is `404` with a `Status`
//! body. The kube client does not call the discovery endpoints for typed
//! `Api<K>` use; they are there for `kube::Discovery` and `apiserver_version()`.
//!
//! # Faults
//!
//! * [`drop_watches`](FakeApiServer::drop_watches): every open watch response
//!   is aborted mid-body (the connection is closed without the terminating
//!   chunk), as when the API server restarts or a load balancer cuts idle
//!   connections. Clients resume from their last version, without relisting.
//! * [`compact`](FakeApiServer::compact) forgets the history, like an etcd
//!   compaction; [`expire_watches`](FakeApiServer::expire_watches) combines a
//!   version bump, a compaction and dropped watches so that every watcher's
//!   resume is answered with 410 and it must relist.
//! * [`set_stalled`](FakeApiServer::set_stalled): new requests are held
//!   unanswered, and open watches deliver nothing, until unstalled.
//! * [`set_down`](FakeApiServer::set_down): the server is unreachable.
//!   Open connections (idle keep-alive ones included) are closed as soon as
//!   they are used, new connections are accepted and closed at once, and
//!   open watches are aborted. The client sees transport errors
//!   ("connection closed before message completed"), which kube's client
//!   does not retry, so a watcher reports them at once and applies its own
//!   backoff. This is the outage mode to use by default.
//! * [`set_unavailable`](FakeApiServer::set_unavailable): every request is
//!   answered `503 Service Unavailable` with a `Status` body (`reason:
//!   ServiceUnavailable`), as a load balancer without healthy backends
//!   answers; open watches are aborted. Beware: kube 5's default client
//!   (`Config::default_retry`) retries 429/503/504 answers itself, up to 15
//!   times with an exponential backoff from 5 ms (about 160 s in all), so a
//!   short 503 blip is invisible to the caller and a long one blocks it.
//!
//! # Threads
//!
//! The server runs on its own thread with its own single-threaded tokio
//! runtime, so it works the same from `#[test]` and `#[tokio::test]`. All the
//! control methods are synchronous and cheap (they take a mutex and push to
//! unbounded channels); none blocks on the server thread. Dropping the
//! [`FakeApiServer`] stops the runtime, which closes every connection.
//!
//! Set `FAKE_API_DEBUG=1` to log every request and fault to stderr.
//!
//! # Testing tips
//!
//! * A `kube::runtime::watcher` stream only sends requests while it is
//!   polled: after `InitDone` it opens its watch on the *next* poll. Poll it
//!   on a spawned task (as the server does) before waiting with
//!   [`wait_for_watches`](FakeApiServer::wait_for_watches).
//! * The watcher emits `Event::Init` before its list request, so a stalled
//!   server still yields `Init`.
//! * Raw `Api::watch` calls ask for bookmarks by default
//!   (`WatchParams::default()`), so they see periodic `BOOKMARK`s unless
//!   they call `.disable_bookmarks()` or the interval is turned off.
//! * A resumed watch from `resourceVersion=N` replays every matching write
//!   after `N`, so mutations made while a watcher is disconnected are not
//!   lost, as with a real server within its history window.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::IntoFuture;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::ops::Bound;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, mpsc, oneshot, watch};

// The server, by concern: the object store and its write history (`store`), the list/watch HTTP
// API over them (`http`), and the fault hooks on the connections (`faults`). This file holds the
// test-facing handle, [`FakeApiServer`], whose methods are the whole public API.
mod faults;
mod http;
mod store;

use faults::*;
use http::*;
use store::*;

/// Default interval between periodic bookmarks on watches that asked for them.
pub const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

/// Watch duration when the client sends no `timeoutSeconds` (the real server
/// picks a random value between 30 and 60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Default number of writes kept for watch replay and list snapshots (the
/// real watch cache keeps a window of recent events, etcd about 5 minutes).
pub const DEFAULT_HISTORY_LIMIT: usize = 10_000;

/// How many request lines [`FakeApiServer::request_log`] keeps.
const REQUEST_LOG_CAPACITY: usize = 10_000;

/// The version reported by `/version`.
const FAKE_MINOR: &str = "33";

/// A fake Kubernetes API server on `127.0.0.1`. See the [module docs](self).
pub struct FakeApiServer {
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeApiServer").field("addr", &self.shared.addr).finish_non_exhaustive()
    }
}

impl FakeApiServer {
    /// Binds `127.0.0.1:0` and starts serving on a background thread.
    ///
    /// # Panics
    ///
    /// If the loopback listener or the runtime cannot be created.
    pub fn start() -> Self {
        let listener = StdTcpListener::bind(("127.0.0.1", 0)).expect("fake_api: bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("fake_api: set_nonblocking");
        let addr = listener.local_addr().expect("fake_api: local_addr");
        let (stalled, _) = watch::channel(false);
        let (drops, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
            stalled,
            drops,
            bookmark_config: Notify::new(),
            down: AtomicBool::new(false),
            down_generation: AtomicU64::new(0),
            addr,
            debug: std::env::var_os("FAKE_API_DEBUG").is_some_and(|v| !v.is_empty() && v != "0"),
            bytes_sent: AtomicU64::new(0),
        });
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("fake_api: build tokio runtime");
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let server_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("fake-api-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(serve(server_shared, listener, shutdown_rx));
                // Drops every connection task, closing the sockets at once
                // instead of waiting for open watches to finish.
                runtime.shutdown_background();
            })
            .expect("fake_api: spawn server thread");
        shared.debug(format_args!("listening"));
        Self { shared, shutdown: Some(shutdown_tx), thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Writes a kubeconfig for this server to `path`: one cluster `fake`
    /// (server [`url`](Self::url)), one user `fake` with a dummy bearer
    /// token, and current-context `fake` with namespace `default`.
    pub fn write_kubeconfig(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// The kubeconfig that [`write_kubeconfig`](Self::write_kubeconfig) writes.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {url}
users:
- name: fake
  user:
    token: fake-token
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
    namespace: default
current-context: fake
preferences: {{}}
",
            url = self.url()
        )
    }

    // ----- cluster state -------------------------------------------------

    /// Creates or replaces an object (identified by `kind`, namespace and name)
    /// and returns the current resourceVersion afterwards.
    ///
    /// The server sets `apiVersion`/`kind` from the kind, defaults
    /// `metadata.namespace` to `default` for namespaced kinds (and removes it
    /// for cluster-scoped ones), keeps `uid` and `creationTimestamp` of the
    /// object it replaces (or sets them), and stamps the new
    /// `resourceVersion`. Watches get `ADDED` or `MODIFIED`.
    ///
    /// As on the real server, a replace that changes nothing is a no-op: no
    /// new version, no event.
    ///
    /// # Panics
    ///
    /// If `obj` has an unknown `kind` or no `metadata.name` (a test bug).
    pub fn apply(&self, obj: Value) -> u64 {
        self.apply_many([obj])
    }

    /// [`apply`](Self::apply) for several objects, atomically with respect to
    /// readers: a list or watch sees all or none of them. Each object still
    /// gets its own resourceVersion. Returns the last one.
    pub fn apply_many(&self, objs: impl IntoIterator<Item = Value>) -> u64 {
        let prepared: Vec<(usize, Key, Value)> = objs.into_iter().map(prepare_object).collect();
        let mut st = self.shared.state.lock();
        for (res, key, mut obj) in prepared {
            // The stored object is only read here and moved into the history below, never
            // cloned: the load benchmark's churn run writes 1,000 objects a second through this
            // on the load generator's CPU.
            let existing = st.objects[res].get(&key);
            let mut new_uid = false;
            {
                let meta = obj["metadata"].as_object_mut().expect("prepare_object made metadata an object");
                let old_meta = existing.and_then(|e| e["metadata"].as_object());
                for field in ["uid", "creationTimestamp"] {
                    if let Some(v) = old_meta.and_then(|m| m.get(field)) {
                        meta.insert(field.to_owned(), v.clone());
                    }
                }
                match old_meta.and_then(|m| m.get("resourceVersion")) {
                    Some(v) => meta.insert("resourceVersion".to_owned(), v.clone()),
                    None => meta.remove("resourceVersion"),
                };
                if !meta.contains_key("uid") {
                    meta.insert("uid".to_owned(), json!(fake_uid(st.next_uid)));
                    new_uid = true;
                }
                if !meta.contains_key("creationTimestamp") {
                    meta.insert("creationTimestamp".to_owned(), json!(rfc3339_now()));
                }
            }
            if existing.map(|e| &**e) == Some(&obj) {
                continue; // no-op update (which never has a new uid: the stored object has one)
            }
            st.next_uid += u64::from(new_uid);
            st.rv += 1;
            let rv = st.rv;
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            let obj = Arc::new(obj);
            let existing = st.objects[res].insert(key.clone(), obj.clone());
            let kind = if existing.is_some() { EventType::Modified } else { EventType::Added };
            self.shared.debug(format_args!("{kind:?} {} {}/{} rv={rv}", RESOURCES[res].kind, key.0, key.1));
            st.record(HistoryEvent { rv, res, key, kind, object: obj, prev: existing });
        }
        st.rv
    }

    /// Deletes an object; watches get `DELETED` with its last state (stamped
    /// with the version of the delete). Returns that version, or `None` if
    /// there was no such object. `namespace` is ignored for cluster-scoped kinds.
    ///
    /// # Panics
    ///
    /// If `kind` is unknown.
    pub fn delete(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<u64> {
        let res = expect_resource(kind);
        let key = object_key(&RESOURCES[res], namespace, name);
        let mut st = self.shared.state.lock();
        let prev = st.objects[res].remove(&key)?;
        st.rv += 1;
        let rv = st.rv;
        let mut object = Value::clone(&prev);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let object = Arc::new(object);
        self.shared.debug(format_args!("Deleted {} {}/{} rv={rv}", RESOURCES[res].kind, key.0, key.1));
        st.record(HistoryEvent { rv, res, key, kind: EventType::Deleted, object, prev: Some(prev) });
        Some(rv)
    }

    /// The current object, if any.
    pub fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let res = expect_resource(kind);
        let key = object_key(&RESOURCES[res], namespace, name);
        self.shared.state.lock().objects[res].get(&key).map(|o| Value::clone(o))
    }

    /// All current objects of a kind, in list order.
    pub fn objects(&self, kind: &str) -> Vec<Value> {
        let res = expect_resource(kind);
        self.shared.state.lock().objects[res].values().map(|o| Value::clone(o)).collect()
    }

    /// The last resourceVersion handed out (what a list would report now).
    pub fn resource_version(&self) -> u64 {
        self.shared.state.lock().rv
    }

    /// Advances the resourceVersion without changing any served object, as a
    /// write to some other resource in the cluster would. Returns the new version.
    pub fn bump_resource_version(&self) -> u64 {
        let mut st = self.shared.state.lock();
        st.rv += 1;
        st.rv
    }

    // ----- faults ----------------------------------------------------------

    /// Aborts every open watch stream mid-body, without the terminating chunk.
    pub fn drop_watches(&self) {
        let mut st = self.shared.state.lock();
        self.shared.debug(format_args!("dropping {} watches", st.watchers.len()));
        self.shared.drop_watches_locked(&mut st);
    }

    /// Forgets the history up to the current version, like an etcd
    /// compaction: watches resuming from an older version, `continue`
    /// tokens of older lists and `Exact` lists at older versions get 410.
    /// Open watches are not affected.
    pub fn compact(&self) {
        let mut st = self.shared.state.lock();
        st.floor = st.rv;
        st.history.clear();
        self.shared.debug(format_args!("compacted at rv={}", st.floor));
    }

    /// Keeps at most `limit` writes (all kinds together) for watch replay,
    /// continue tokens and `Exact` lists; older ones are compacted away as by
    /// [`compact`](Self::compact). Default [`DEFAULT_HISTORY_LIMIT`].
    pub fn set_history_limit(&self, limit: usize) {
        let mut st = self.shared.state.lock();
        st.history_limit = limit;
        st.trim_history();
    }

    /// Makes every current watcher relist: bumps the version, compacts, and
    /// drops the open watches, so each resume is answered with 410 Gone.
    pub fn expire_watches(&self) {
        let mut st = self.shared.state.lock();
        st.rv += 1;
        st.floor = st.rv;
        st.history.clear();
        self.shared.debug(format_args!("expired {} watches, compacted at rv={}", st.watchers.len(), st.floor));
        self.shared.drop_watches_locked(&mut st);
    }

    /// While `true`, new requests are held without an answer and open watch
    /// streams deliver nothing (their events queue up, and are delivered in
    /// order once unstalled).
    pub fn set_stalled(&self, stalled: bool) {
        self.shared.debug(format_args!("stalled={stalled}"));
        self.shared.stalled.send_replace(stalled);
    }

    /// While `true`, the server is unreachable: every connection is closed
    /// without an answer (open ones on their next use, new ones at once) and
    /// open watches are aborted. See the [module docs](self#faults).
    pub fn set_down(&self, down: bool) {
        let mut st = self.shared.state.lock();
        self.shared.debug(format_args!("down={down}"));
        if down {
            self.shared.down_generation.fetch_add(1, Ordering::SeqCst);
            self.shared.drop_watches_locked(&mut st);
        }
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// While `true`, every request is answered `503` with a `Status` body
    /// (`reason: ServiceUnavailable`), and going unavailable aborts open
    /// watches. kube's default client retries 503s by itself for minutes;
    /// see the [module docs](self#faults).
    pub fn set_unavailable(&self, unavailable: bool) {
        let mut st = self.shared.state.lock();
        self.shared.debug(format_args!("unavailable={unavailable}"));
        st.unavailable = unavailable;
        if unavailable {
            self.shared.drop_watches_locked(&mut st);
        }
    }

    /// Whether a kind is served: an unserved kind's paths answer `404`, as a custom resource whose
    /// CRD is not installed (its objects are kept, and served again with `true`).
    pub fn set_served(&self, kind: &str, served: bool) {
        let res = expect_resource(kind);
        self.shared.debug(format_args!("{kind} served={served}"));
        self.shared.state.lock().unserved[res] = !served;
    }

    /// Sets the interval of periodic bookmarks (`None` disables them; they
    /// can still be sent with [`send_bookmarks`](Self::send_bookmarks)).
    pub fn set_bookmark_interval(&self, interval: Option<Duration>) {
        self.shared.state.lock().bookmark_interval = interval.filter(|d| !d.is_zero());
        self.shared.bookmark_config.notify_one();
    }

    /// Queues a bookmark at the current version on every watch that asked for them.
    pub fn send_bookmarks(&self) {
        self.shared.state.lock().queue_bookmarks();
    }

    // ----- observation -------------------------------------------------------

    /// Bytes written to clients so far (HTTP headers and bodies), for benchmarks.
    pub fn bytes_sent(&self) -> u64 {
        self.shared.bytes_sent.load(Ordering::Relaxed)
    }

    /// How many list requests (non-watch collection GETs) arrived for `kind`,
    /// counting those answered with an error or still stalled.
    pub fn list_requests(&self, kind: &str) -> usize {
        self.shared.state.lock().list_requests[expect_resource(kind)]
    }

    /// How many watch requests arrived for `kind`, as [`list_requests`](Self::list_requests).
    pub fn watch_requests(&self, kind: &str) -> usize {
        self.shared.state.lock().watch_requests[expect_resource(kind)]
    }

    /// How many watch streams of `kind` are currently open and receiving live events.
    pub fn open_watches(&self, kind: &str) -> usize {
        let res = expect_resource(kind);
        let st = self.shared.state.lock();
        st.watchers.iter().filter(|w| w.res == res && !w.tx.is_closed()).count()
    }

    /// Waits (asynchronously, on the caller's runtime) until at least `n`
    /// watches of `kind` are open. Returns `false` on timeout.
    pub async fn wait_for_watches(&self, kind: &str, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.open_watches(kind) >= n {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The last requests, oldest first, as `"GET /path?query"`.
    pub fn request_log(&self) -> Vec<String> {
        self.shared.state.lock().request_log.iter().cloned().collect()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Unblock anything waiting on a stall so nothing lingers.
        self.shared.stalled.send_replace(false);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
