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
//! `/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices`, single objects
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

/// Static description of one served resource type.
#[derive(Debug)]
struct ResourceDef {
    kind: &'static str,
    list_kind: &'static str,
    /// API group, empty for the core group.
    group: &'static str,
    version: &'static str,
    /// `apiVersion` of the objects: `v1` or `group/version`.
    api_version: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
    /// Field selector labels this type accepts besides `metadata.name` and
    /// `metadata.namespace` (the real server rejects all others).
    extra_fields: &'static [&'static str],
}

const RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        kind: "Service",
        list_kind: "ServiceList",
        group: "",
        version: "v1",
        api_version: "v1",
        plural: "services",
        singular: "service",
        namespaced: true,
        extra_fields: &["spec.clusterIP", "spec.type"],
    },
    ResourceDef {
        kind: "Pod",
        list_kind: "PodList",
        group: "",
        version: "v1",
        api_version: "v1",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        extra_fields: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
    },
    ResourceDef {
        kind: "Namespace",
        list_kind: "NamespaceList",
        group: "",
        version: "v1",
        api_version: "v1",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        extra_fields: &["status.phase"],
    },
    ResourceDef {
        kind: "EndpointSlice",
        list_kind: "EndpointSliceList",
        group: "discovery.k8s.io",
        version: "v1",
        api_version: "discovery.k8s.io/v1",
        plural: "endpointslices",
        singular: "endpointslice",
        namespaced: true,
        extra_fields: &["addressType"],
    },
];

/// Index into [`RESOURCES`] of the resource named `name`: its kind, plural or
/// singular, case-insensitively.
fn resource_index(name: &str) -> Option<usize> {
    RESOURCES.iter().position(|r| {
        r.kind.eq_ignore_ascii_case(name)
            || r.plural.eq_ignore_ascii_case(name)
            || r.singular.eq_ignore_ascii_case(name)
    })
}

/// Like [`resource_index`], for the test-facing API: a typo there is a bug in
/// the test, so it panics with the list of known kinds.
fn expect_resource(name: &str) -> usize {
    resource_index(name).unwrap_or_else(|| {
        let known: Vec<_> = RESOURCES.iter().map(|r| r.kind).collect();
        panic!("fake_api: unknown kind {name:?}; known kinds: {known:?}")
    })
}

/// Store key: `(namespace or "", name)`. Its order is the list order, as the
/// real server lists in etcd key order (`/registry/<plural>/<ns>/<name>`).
type Key = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One write, as kept in the history for watch replay and list snapshots.
#[derive(Debug, Clone)]
struct HistoryEvent {
    rv: u64,
    res: usize,
    key: Key,
    kind: EventType,
    /// The object after the write; for a delete, the last state with the
    /// version of the delete (what the DELETED event carries). Shared with
    /// [`State::objects`], so that a write stores its object once.
    object: Arc<Value>,
    /// The object before the write (`None` for a create).
    prev: Option<Arc<Value>>,
}

/// An open watch stream registered for live events.
struct Watcher {
    id: u64,
    res: usize,
    filter: Filter,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<String>,
}

/// Mutable server state, behind [`Shared::state`].
struct State {
    /// The last resourceVersion handed out.
    rv: u64,
    /// Current objects, one map per entry of [`RESOURCES`].
    objects: Vec<BTreeMap<Key, Arc<Value>>>,
    /// Every write with a version above `floor`, oldest first.
    history: VecDeque<HistoryEvent>,
    /// The oldest version the history can answer for: watches may resume from
    /// any version `>= floor`, snapshots can be rebuilt for versions `>= floor`.
    floor: u64,
    watchers: Vec<Watcher>,
    next_watcher_id: u64,
    next_uid: u64,
    list_requests: Vec<usize>,
    watch_requests: Vec<usize>,
    request_log: VecDeque<String>,
    bookmark_interval: Option<Duration>,
    /// At most this many writes are kept in `history`; older ones are
    /// compacted away (raising `floor`).
    history_limit: usize,
    /// Answer every request with 503 (see `set_unavailable`).
    unavailable: bool,
}

impl State {
    fn new() -> Self {
        Self {
            rv: 1,
            objects: RESOURCES.iter().map(|_| BTreeMap::new()).collect(),
            history: VecDeque::new(),
            floor: 1,
            watchers: Vec::new(),
            next_watcher_id: 1,
            next_uid: 1,
            list_requests: vec![0; RESOURCES.len()],
            watch_requests: vec![0; RESOURCES.len()],
            request_log: VecDeque::new(),
            bookmark_interval: Some(DEFAULT_BOOKMARK_INTERVAL),
            history_limit: DEFAULT_HISTORY_LIMIT,
            unavailable: false,
        }
    }

    /// Records a write: appends it to the history and fans it out to the
    /// matching watchers (dropping watchers whose client went away).
    fn record(&mut self, event: HistoryEvent) {
        self.watchers.retain(|w| {
            if w.res != event.res {
                return true;
            }
            match watch_line_for(&w.filter, &event) {
                Some(line) => w.tx.send(line).is_ok(),
                None => !w.tx.is_closed(),
            }
        });
        self.history.push_back(event);
        self.trim_history();
    }

    /// Compacts the oldest writes beyond `history_limit`.
    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(oldest) = self.history.pop_front() {
                self.floor = oldest.rv;
            }
        }
    }

    /// The objects of `res` as of version `at`, rebuilt by undoing the history
    /// newer than `at`. `None` if `at` is older than the retained history.
    fn snapshot(&self, res: usize, at: u64) -> Option<Cow<'_, BTreeMap<Key, Arc<Value>>>> {
        if at >= self.rv {
            return Some(Cow::Borrowed(&self.objects[res]));
        }
        if at < self.floor {
            return None;
        }
        let mut objects = self.objects[res].clone();
        for ev in self.history.iter().rev().take_while(|e| e.rv > at) {
            if ev.res != res {
                continue;
            }
            match (&ev.kind, &ev.prev) {
                (EventType::Added, _) | (_, None) => {
                    objects.remove(&ev.key);
                }
                (EventType::Modified | EventType::Deleted, Some(prev)) => {
                    objects.insert(ev.key.clone(), prev.clone());
                }
            }
        }
        Some(Cow::Owned(objects))
    }

    /// Queues a bookmark at the current version on every watch that asked for them.
    fn queue_bookmarks(&mut self) {
        let rv = self.rv;
        self.watchers.retain(|w| {
            if !w.bookmarks {
                return true;
            }
            w.tx.send(bookmark_line(&RESOURCES[w.res], rv, false)).is_ok()
        });
    }

    fn log_request(&mut self, line: String) {
        if self.request_log.len() == REQUEST_LOG_CAPACITY {
            self.request_log.pop_front();
        }
        self.request_log.push_back(line);
    }
}

/// State shared between the test-facing handle and the server thread.
struct Shared {
    state: Mutex<State>,
    /// `true` while requests and watch streams are held (see `set_stalled`).
    stalled: watch::Sender<bool>,
    /// Bumped to abort every open watch stream at once.
    drops: watch::Sender<u64>,
    /// Wakes the bookmark ticker when its interval changes.
    bookmark_config: Notify,
    /// `true` while the server is unreachable (see `set_down`).
    down: AtomicBool,
    /// Bumped by `set_down(true)`: connections accepted under an older
    /// generation fail on their next read or write.
    down_generation: AtomicU64,
    addr: SocketAddr,
    debug: bool,
}

impl Shared {
    fn debug(&self, args: fmt::Arguments<'_>) {
        if self.debug {
            eprintln!("[fake-api {}] {args}", self.addr);
        }
    }

    /// Aborts every open watch stream. Must be called with the state locked
    /// (`st`), so that no stream registers between the two steps.
    fn drop_watches_locked(&self, st: &mut State) {
        st.watchers.clear();
        self.drops.send_modify(|generation| *generation += 1);
    }
}

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

/// Validates a test-supplied object and normalises its type and namespace.
fn prepare_object(mut obj: Value) -> (usize, Key, Value) {
    let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
    let res = expect_resource(&kind);
    let def = &RESOURCES[res];
    let Some(map) = obj.as_object_mut() else {
        panic!("fake_api: object is not a JSON object: {obj}");
    };
    map.insert("kind".to_owned(), json!(def.kind));
    map.insert("apiVersion".to_owned(), json!(def.api_version));
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let meta = meta.as_object_mut().expect("just made an object");
    let name = match meta.get("name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => panic!("fake_api: {} without metadata.name", def.kind),
    };
    let namespace = if def.namespaced {
        let ns =
            meta.get("namespace").and_then(Value::as_str).filter(|ns| !ns.is_empty()).unwrap_or("default").to_owned();
        meta.insert("namespace".to_owned(), json!(ns));
        ns
    } else {
        meta.remove("namespace");
        String::new()
    };
    (res, (namespace, name), obj)
}

fn object_key(def: &ResourceDef, namespace: Option<&str>, name: &str) -> Key {
    let ns = if def.namespaced { namespace.unwrap_or("default").to_owned() } else { String::new() };
    (ns, name.to_owned())
}

/// A deterministic, well-formed (version 4 layout) UID.
fn fake_uid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{:012x}", n & 0xffff_ffff_ffff)
}

/// The current UTC time as RFC 3339 with second precision, as Kubernetes
/// serialises `metav1.Time`.
fn rfc3339_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

// ----- selectors ------------------------------------------------------------------

/// One requirement of a label selector.
#[derive(Debug, Clone)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector`: all requirements must hold.
#[derive(Debug, Clone, Default)]
struct LabelSelector(Vec<LabelReq>);

impl LabelSelector {
    /// Parses the equality-based (`k=v`, `k==v`, `k!=v`) and set-based
    /// (`k`, `!k`, `k in (a,b)`, `k notin (a,b)`) forms, comma-joined.
    fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_outside_parens(s) {
            let term = term.trim();
            if term.is_empty() {
                if s.trim().is_empty() {
                    continue;
                }
                return Err(format!("invalid label selector {s:?}: empty requirement"));
            }
            reqs.push(Self::parse_term(term).map_err(|e| format!("invalid label selector {s:?}: {e}"))?);
        }
        Ok(Self(reqs))
    }

    fn parse_term(term: &str) -> Result<LabelReq, String> {
        if let Some(key) = term.strip_prefix('!') {
            return Ok(LabelReq::NotExists(valid_key(key.trim())?));
        }
        if let Some(open) = term.find('(') {
            let Some(values) = term[open + 1..].strip_suffix(')') else {
                return Err(format!("unterminated value set in {term:?}"));
            };
            let values: Vec<String> = values.split(',').map(|v| v.trim().to_owned()).collect();
            let mut head = term[..open].split_whitespace();
            let (Some(key), Some(op), None) = (head.next(), head.next(), head.next()) else {
                return Err(format!("expected `key in (...)` or `key notin (...)`, got {term:?}"));
            };
            let key = valid_key(key)?;
            return match op {
                "in" => Ok(LabelReq::In(key, values)),
                "notin" => Ok(LabelReq::NotIn(key, values)),
                _ => Err(format!("unknown set operator {op:?}")),
            };
        }
        for (op, ctor) in
            [("!=", LabelReq::NotEq as fn(String, String) -> LabelReq), ("==", LabelReq::Eq), ("=", LabelReq::Eq)]
        {
            if let Some((key, value)) = term.split_once(op) {
                let value = value.trim();
                if value.contains(['=', '!', ' ']) {
                    return Err(format!("invalid value {value:?}"));
                }
                return Ok(ctor(valid_key(key.trim())?, value.to_owned()));
            }
        }
        Ok(LabelReq::Exists(valid_key(term)?))
    }

    fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|req| match req {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        })
    }
}

fn valid_key(key: &str) -> Result<String, String> {
    if key.is_empty() || key.contains(|c: char| c.is_whitespace() || "=!(),".contains(c)) {
        Err(format!("invalid label key {key:?}"))
    } else {
        Ok(key.to_owned())
    }
}

fn split_outside_parens(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A parsed `fieldSelector`: `field=value`, `field==value`, `field!=value`, comma-joined.
#[derive(Debug, Clone, Default)]
struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    fn parse(def: &ResourceDef, s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in s.split(',') {
            let term = term.trim();
            if term.is_empty() {
                if s.trim().is_empty() {
                    continue;
                }
                return Err(format!("invalid field selector {s:?}: empty requirement"));
            }
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid field selector: {term:?}: no operator"));
            };
            let field = field.trim();
            if !(field == "metadata.name" || field == "metadata.namespace" || def.extra_fields.contains(&field)) {
                // The real server's message for an unsupported field label.
                return Err(format!("field label not supported: {field}"));
            }
            reqs.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(Self(reqs))
    }

    fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let mut cur = obj;
            for part in field.split('.') {
                cur = cur.get(part).unwrap_or(&Value::Null);
            }
            let actual = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

/// What a list or watch selects: a namespace (for namespaced paths) and selectors.
#[derive(Debug, Clone, Default)]
struct Filter {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && obj.pointer("/metadata/namespace").and_then(Value::as_str) != Some(ns.as_str())
        {
            return false;
        }
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

// ----- watch events ---------------------------------------------------------------

/// One watch event as the API server frames it: `type` before `object`, as Go encodes the
/// `WatchEvent` struct. (A `json!` map would sort `object` first; serde then buffers the whole
/// object to find the tag before decoding it, which a client of the real server never pays.)
fn event_line(event_type: &str, object: &Value) -> String {
    let object = serde_json::to_string(object).unwrap_or_default();
    let event_type = serde_json::to_string(event_type).unwrap_or_default();
    format!("{{\"type\":{event_type},\"object\":{object}}}\n")
}

fn bookmark_line(def: &ResourceDef, rv: u64, initial_events_end: bool) -> String {
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    event_line("BOOKMARK", &json!({ "kind": def.kind, "apiVersion": def.api_version, "metadata": metadata }))
}

/// The line a watcher with `filter` gets for a history event, if any. Like the
/// watch cache, a modification that makes an object leave the selection is a
/// `DELETED` of its previous state (at the new version), one that makes it
/// enter is an `ADDED`.
fn watch_line_for(filter: &Filter, ev: &HistoryEvent) -> Option<String> {
    let now = filter.matches(&ev.object);
    match ev.kind {
        EventType::Added => now.then(|| event_line("ADDED", &ev.object)),
        EventType::Deleted => now.then(|| event_line("DELETED", &ev.object)),
        EventType::Modified => {
            let before = ev.prev.as_ref().is_some_and(|p| filter.matches(p));
            match (before, now) {
                (true, true) => Some(event_line("MODIFIED", &ev.object)),
                (false, true) => Some(event_line("ADDED", &ev.object)),
                (true, false) => {
                    let mut prev = ev.prev.as_deref().cloned().unwrap_or(Value::Null);
                    prev["metadata"]["resourceVersion"] = json!(ev.rv.to_string());
                    Some(event_line("DELETED", &prev))
                }
                (false, false) => None,
            }
        }
    }
}

// ----- HTTP -------------------------------------------------------------------------

async fn serve(shared: Arc<Shared>, listener: StdTcpListener, shutdown: oneshot::Receiver<()>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(inner) => FaultyListener { inner, shared: Arc::clone(&shared) },
        Err(e) => {
            eprintln!("fake_api: cannot register listener: {e}");
            return;
        }
    };
    tokio::spawn(bookmark_ticker(Arc::clone(&shared)));
    let handler_shared = Arc::clone(&shared);
    let app = Router::new().fallback(move |req: Request<Body>| {
        let shared = Arc::clone(&handler_shared);
        async move { handle(shared, req).await }
    });
    tokio::select! {
        res = axum::serve(listener, app).into_future() => {
            if let Err(e) = res {
                eprintln!("fake_api: server error: {e}");
            }
        }
        _ = shutdown => {}
    }
}

/// The TCP listener, wrapped to emulate an unreachable server (`set_down`).
struct FaultyListener {
    inner: tokio::net::TcpListener,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for FaultyListener {
    type Io = FaultyIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (FaultyIo, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    // Read the generation first: a set_down(true) racing with
                    // this accept then cuts the connection on first use.
                    let generation = self.shared.down_generation.load(Ordering::SeqCst);
                    if self.shared.down.load(Ordering::SeqCst) {
                        self.shared.debug(format_args!("down: closing new connection from {peer}"));
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let io = FaultyIo { inner: stream, shared: Arc::clone(&self.shared), generation };
                    return (io, peer);
                }
                Err(e) => {
                    // Typically EMFILE; back off instead of spinning.
                    self.shared.debug(format_args!("accept error: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A server-side connection that fails once the server went down after it
/// was accepted (hyper then closes it).
struct FaultyIo {
    inner: tokio::net::TcpStream,
    shared: Arc<Shared>,
    generation: u64,
}

impl FaultyIo {
    fn check(&self) -> io::Result<()> {
        if self.shared.down_generation.load(Ordering::SeqCst) == self.generation {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "fake API server is down"))
        }
    }
}

impl AsyncRead for FaultyIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultyIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Sends the periodic bookmarks (skipped while stalled).
async fn bookmark_ticker(shared: Arc<Shared>) {
    loop {
        let interval = shared.state.lock().bookmark_interval;
        match interval {
            Some(interval) => {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {
                        if !*shared.stalled.borrow() {
                            shared.state.lock().queue_bookmarks();
                        }
                    }
                    () = shared.bookmark_config.notified() => {}
                }
            }
            None => shared.bookmark_config.notified().await,
        }
    }
}

/// Where a request path leads.
#[derive(Debug)]
enum Route {
    Collection { res: usize, namespace: Option<String> },
    Object { res: usize, namespace: Option<String>, name: String },
    Discovery(Value),
    Health,
    NotFound,
}

fn route(shared: &Shared, path: &str) -> Route {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["version"] => return Route::Discovery(version_doc()),
        ["healthz" | "livez" | "readyz"] => return Route::Health,
        ["api"] => return Route::Discovery(api_versions_doc(shared.addr)),
        ["apis"] => return Route::Discovery(api_group_list_doc()),
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", group] => {
            return group_doc(group).map_or(Route::NotFound, Route::Discovery);
        }
        ["apis", group, version, rest @ ..] => (group, version, rest),
        _ => return Route::NotFound,
    };
    let find =
        |plural: &str| RESOURCES.iter().position(|r| r.group == group && r.version == version && r.plural == plural);
    let known_gv = RESOURCES.iter().any(|r| r.group == group && r.version == version);
    match rest {
        [] if known_gv => Route::Discovery(resource_list_doc(group, version)),
        [plural] => match find(plural) {
            Some(res) => Route::Collection { res, namespace: None },
            None => Route::NotFound,
        },
        [plural, name] => match find(plural) {
            Some(res) if !RESOURCES[res].namespaced => Route::Object { res, namespace: None, name: (*name).to_owned() },
            _ => Route::NotFound,
        },
        ["namespaces", ns, plural] => match find(plural) {
            Some(res) if RESOURCES[res].namespaced => Route::Collection { res, namespace: Some((*ns).to_owned()) },
            _ => Route::NotFound,
        },
        ["namespaces", ns, plural, name] => match find(plural) {
            Some(res) if RESOURCES[res].namespaced => {
                Route::Object { res, namespace: Some((*ns).to_owned()), name: (*name).to_owned() }
            }
            _ => Route::NotFound,
        },
        _ => Route::NotFound,
    }
}

/// Decoded query parameters; the last occurrence of a name wins.
#[derive(Debug, Default)]
struct Query(BTreeMap<String, String>);

impl Query {
    fn parse(raw: &str) -> Self {
        let mut map = BTreeMap::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(percent_decode(k), percent_decode(v));
        }
        Self(map)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A boolean parameter the way Go's `strconv.ParseBool` reads it; absent
    /// or unparsable is `false`.
    fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("1" | "t" | "T" | "true" | "TRUE" | "True"))
    }
}

/// `application/x-www-form-urlencoded` decoding: `%XX` and `+`. Invalid escapes
/// are kept literally, invalid UTF-8 is replaced.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(shared: Arc<Shared>, req: Request<Body>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let raw_query = req.uri().query().unwrap_or("").to_owned();
    let query = Query::parse(&raw_query);
    let route = route(&shared, &path);
    let is_watch = query.flag("watch");
    {
        let mut st = shared.state.lock();
        let line =
            if raw_query.is_empty() { format!("{method} {path}") } else { format!("{method} {path}?{raw_query}") };
        shared.debug(format_args!("{line}"));
        st.log_request(line);
        if let (Route::Collection { res, .. }, &Method::GET) = (&route, &method) {
            if is_watch {
                st.watch_requests[*res] += 1;
            } else {
                st.list_requests[*res] += 1;
            }
        }
    }

    // Hold the request while stalled.
    let mut stalled = shared.stalled.subscribe();
    if *stalled.borrow() {
        shared.debug(format_args!("holding {method} {path} (stalled)"));
    }
    let _ = stalled.wait_for(|s| !*s).await;

    if shared.state.lock().unavailable {
        return status_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the fake API server is unavailable (set_unavailable)",
        );
    }
    if method != Method::GET {
        return status_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("the fake API server is read-only; {method} is not supported"),
        );
    }

    match route {
        Route::Discovery(doc) => json_response(StatusCode::OK, &doc),
        Route::Health => {
            let mut resp = Response::new(Body::from("ok"));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            resp
        }
        Route::NotFound => {
            status_response(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource")
        }
        Route::Object { res, namespace, name } => get_object(&shared, res, namespace, &name),
        Route::Collection { res, namespace } => {
            let def = &RESOURCES[res];
            let filter = match parse_filter(def, namespace, &query) {
                Ok(f) => f,
                Err(msg) => return status_response(StatusCode::BAD_REQUEST, "BadRequest", &msg),
            };
            if is_watch { start_watch(&shared, res, filter, &query) } else { list(&shared, res, &filter, &query) }
        }
    }
}

fn parse_filter(def: &ResourceDef, namespace: Option<String>, q: &Query) -> Result<Filter, String> {
    Ok(Filter {
        namespace,
        labels: LabelSelector::parse(q.get("labelSelector").unwrap_or(""))?,
        fields: FieldSelector::parse(def, q.get("fieldSelector").unwrap_or(""))?,
    })
}

fn get_object(shared: &Shared, res: usize, namespace: Option<String>, name: &str) -> Response<Body> {
    let def = &RESOURCES[res];
    let key = (namespace.unwrap_or_default(), name.to_owned());
    match shared.state.lock().objects[res].get(&key) {
        Some(obj) => json_response(StatusCode::OK, obj),
        None => {
            let mut status =
                status_object(404, "NotFound", &format!("{}{} \"{name}\" not found", def.plural, group_suffix(def)));
            status["details"] = json!({ "name": name, "group": def.group, "kind": def.plural });
            json_response(StatusCode::NOT_FOUND, &status)
        }
    }
}

fn group_suffix(def: &ResourceDef) -> String {
    if def.group.is_empty() { String::new() } else { format!(".{}", def.group) }
}

/// A resourceVersion parameter, or the `400 Bad Request` to answer.
fn parse_rv(s: &str) -> Result<u64, Box<Response<Body>>> {
    s.parse::<u64>().map_err(|_| {
        Box::new(status_response(StatusCode::BAD_REQUEST, "BadRequest", &format!("invalid resource version {s:?}")))
    })
}

fn expired(message: String) -> Response<Body> {
    status_response(StatusCode::GONE, "Expired", &message)
}

fn list(shared: &Shared, res: usize, filter: &Filter, q: &Query) -> Response<Body> {
    let def = &RESOURCES[res];
    let rv_param = q.get("resourceVersion").unwrap_or("");
    let rv_match = q.get("resourceVersionMatch").unwrap_or("");
    let continue_token = q.get("continue").unwrap_or("");
    let limit = match q.get("limit").unwrap_or("") {
        "" => None,
        l => match l.parse::<i64>() {
            Ok(n) if n > 0 => usize::try_from(n).ok(),
            Ok(_) => None,
            Err(_) => {
                return status_response(StatusCode::BAD_REQUEST, "BadRequest", &format!("invalid limit {l:?}"));
            }
        },
    };
    if !matches!(rv_match, "" | "NotOlderThan" | "Exact") {
        return invalid(&format!("resourceVersionMatch: Unsupported value: {rv_match:?}"));
    }
    if !rv_match.is_empty() && rv_param.is_empty() {
        return invalid("resourceVersionMatch is forbidden unless resourceVersion is provided");
    }
    if !continue_token.is_empty() && !rv_match.is_empty() {
        return invalid("resourceVersionMatch is forbidden when continue is provided");
    }
    if !continue_token.is_empty() && !rv_param.is_empty() && rv_param != "0" {
        return status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "specifying resource version is not allowed when using continue",
        );
    }

    let st = shared.state.lock();
    // Which version to serve, and where to resume in key order.
    let (at, start_after): (u64, Option<Key>) = if continue_token.is_empty() {
        let at = match rv_param {
            "" | "0" => st.rv,
            v => {
                let v = match parse_rv(v) {
                    Ok(v) => v,
                    Err(resp) => return *resp,
                };
                if rv_match == "Exact" && v == 0 {
                    return invalid("resourceVersionMatch: Exact requires a non-zero resourceVersion");
                }
                if v > st.rv {
                    return status_response(
                        StatusCode::GATEWAY_TIMEOUT,
                        "Timeout",
                        &format!("Too large resource version: {v}, current: {}", st.rv),
                    );
                }
                // A plain `resourceVersion=N` on a paginated list means Exact
                // (see "Semantics for get and list"), otherwise NotOlderThan.
                let exact = rv_match == "Exact" || (rv_match.is_empty() && limit.is_some());
                if exact { v } else { st.rv }
            }
        };
        (at, None)
    } else {
        match parse_continue(continue_token) {
            Some((at, key)) => (at, Some(key)),
            None => {
                return status_response(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("invalid continue token {continue_token:?}"),
                );
            }
        }
    };
    let Some(objects) = st.snapshot(res, at) else {
        return expired(if continue_token.is_empty() {
            "The resourceVersion for the provided list is too old.".to_owned()
        } else {
            "The provided continue parameter is too old to display a consistent list result. \
             You can start a new list without the continue parameter, or use the continue \
             token in this response to retrieve the remainder of the results. Continuing with \
             the provided token results in an inconsistent list - objects that were created, \
             modified, or deleted between the time the first chunk was returned and now may \
             show up in the list."
                .to_owned()
        });
    };
    let (items, last_key, remaining) = page(&objects, filter, start_after.as_ref(), limit);
    drop(objects);
    let mut metadata = json!({ "resourceVersion": at.to_string() });
    if remaining > 0
        && let Some((ns, name)) = last_key
    {
        metadata["continue"] = json!(format!("{at}/{ns}/{name}"));
        metadata["remainingItemCount"] = json!(remaining);
    }
    drop(st);
    json_response(
        StatusCode::OK,
        &json!({
            "kind": def.list_kind,
            "apiVersion": def.api_version,
            "metadata": metadata,
            "items": items,
        }),
    )
}

/// One page of a list: the matching objects after `start_after` (at most
/// `limit`), the key of the last one, and how many matching objects remain.
fn page(
    objects: &BTreeMap<Key, Arc<Value>>,
    filter: &Filter,
    start_after: Option<&Key>,
    limit: Option<usize>,
) -> (Vec<Value>, Option<Key>, usize) {
    let lower = start_after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut matching = objects.range::<Key, _>((lower, Bound::Unbounded)).filter(|(_, obj)| filter.matches(obj));
    let mut items = Vec::new();
    let mut last_key = None;
    for (key, obj) in matching.by_ref() {
        items.push(Value::clone(obj));
        last_key = Some(key.clone());
        if limit.is_some_and(|l| items.len() >= l) {
            break;
        }
    }
    (items, last_key, matching.count())
}

/// Continue tokens are `"{snapshot rv}/{namespace}/{name}"` (opaque to clients).
fn parse_continue(token: &str) -> Option<(u64, Key)> {
    let mut parts = token.splitn(3, '/');
    let rv = parts.next()?.parse().ok()?;
    let ns = parts.next()?.to_owned();
    let name = parts.next()?.to_owned();
    Some((rv, (ns, name)))
}

fn invalid(message: &str) -> Response<Body> {
    status_response(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
}

fn start_watch(shared: &Arc<Shared>, res: usize, filter: Filter, q: &Query) -> Response<Body> {
    let def = &RESOURCES[res];
    let bookmarks = q.flag("allowWatchBookmarks");
    let send_initial = q.flag("sendInitialEvents");
    let rv_param = q.get("resourceVersion").unwrap_or("");
    let rv_match = q.get("resourceVersionMatch").unwrap_or("");
    let timeout = match q.get("timeoutSeconds").map(str::parse::<u64>) {
        None | Some(Ok(0)) => DEFAULT_WATCH_TIMEOUT,
        Some(Ok(secs)) => Duration::from_secs(secs),
        Some(Err(_)) => {
            return status_response(StatusCode::BAD_REQUEST, "BadRequest", "invalid timeoutSeconds");
        }
    };
    if send_initial && rv_match != "NotOlderThan" {
        return invalid(
            "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless resourceVersionMatch is set to NotOlderThan",
        );
    }
    if send_initial && !bookmarks {
        return invalid(
            "allowWatchBookmarks: Required value: allowWatchBookmarks must be set to true when sendInitialEvents is specified",
        );
    }
    if !send_initial && !rv_match.is_empty() {
        return invalid(
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        );
    }
    let requested = match rv_param {
        "" | "0" => None,
        v => match parse_rv(v) {
            Ok(v) => Some(v),
            Err(resp) => return *resp,
        },
    };

    let (tx, rx) = mpsc::unbounded_channel();
    let mut st = shared.state.lock();
    // Subscribe under the lock so that a drop_watches() after registration is seen.
    let mut drops = shared.drops.subscribe();
    drops.borrow_and_update();

    match requested {
        Some(v) if !send_initial => {
            if v < st.floor {
                let message = format!("too old resource version: {v} ({})", st.floor);
                shared.debug(format_args!("watch {}: {message}", def.plural));
                let _ = tx.send(event_line("ERROR", &status_object(410, "Expired", &message)));
                drop(st);
                drop(tx);
                return watch_response(WatchStream::finite(rx, shared, timeout));
            }
            for ev in st.history.iter().filter(|e| e.res == res && e.rv > v) {
                if let Some(line) = watch_line_for(&filter, ev) {
                    let _ = tx.send(line);
                }
            }
        }
        _ => {
            // Unset or "0" (or a streaming list): synthetic ADDED events for the
            // current state, in key order.
            for obj in st.objects[res].values().filter(|o| filter.matches(o)) {
                let _ = tx.send(event_line("ADDED", obj));
            }
            if send_initial {
                let _ = tx.send(bookmark_line(def, st.rv, true));
            }
        }
    }
    let id = st.next_watcher_id;
    st.next_watcher_id += 1;
    st.watchers.push(Watcher { id, res, filter, bookmarks, tx });
    drop(st);
    let guard = WatchGuard { shared: Arc::clone(shared), id };
    watch_response(WatchStream::live(rx, shared, drops, timeout, guard))
}

/// Unregisters a watcher when its response body is dropped (client gone,
/// stream finished, server shut down).
struct WatchGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let id = self.id;
        self.shared.state.lock().watchers.retain(|w| w.id != id);
    }
}

/// The body of one watch response.
struct WatchStream {
    rx: mpsc::UnboundedReceiver<String>,
    stalled: watch::Receiver<bool>,
    /// `None` for a finite stream (the 410 answer), which ends cleanly when
    /// its channel is drained and is not affected by drop_watches().
    drops: Option<watch::Receiver<u64>>,
    deadline: tokio::time::Instant,
    _guard: Option<WatchGuard>,
    done: bool,
}

impl WatchStream {
    fn live(
        rx: mpsc::UnboundedReceiver<String>,
        shared: &Shared,
        drops: watch::Receiver<u64>,
        timeout: Duration,
        guard: WatchGuard,
    ) -> Self {
        Self {
            rx,
            stalled: shared.stalled.subscribe(),
            drops: Some(drops),
            deadline: tokio::time::Instant::now() + timeout,
            _guard: Some(guard),
            done: false,
        }
    }

    fn finite(rx: mpsc::UnboundedReceiver<String>, shared: &Shared, timeout: Duration) -> Self {
        Self {
            rx,
            stalled: shared.stalled.subscribe(),
            drops: None,
            deadline: tokio::time::Instant::now() + timeout,
            _guard: None,
            done: false,
        }
    }

    /// The next chunk: `Some(Ok(line))`, `Some(Err(_))` to abort the response
    /// (hyper then closes the connection without the terminating chunk), or
    /// `None` to end it cleanly.
    async fn next_chunk(&mut self) -> Option<io::Result<String>> {
        let Self { rx, stalled, drops, deadline, done, .. } = self;
        if *done {
            return None;
        }
        let finite = drops.is_none();
        loop {
            let is_stalled = *stalled.borrow_and_update();
            let dropped = async {
                match drops.as_mut() {
                    Some(d) => {
                        let _ = d.changed().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let why = tokio::select! {
                biased;
                () = dropped => "watch dropped",
                res = stalled.changed() => {
                    if res.is_err() {
                        return None;
                    }
                    continue;
                }
                msg = rx.recv(), if !is_stalled => match msg {
                    Some(line) => return Some(Ok(line)),
                    None if finite => return None,
                    None => "watch unregistered",
                },
                () = tokio::time::sleep_until(*deadline) => return None,
            };
            *done = true;
            return Some(Err(io::Error::new(io::ErrorKind::ConnectionAborted, why)));
        }
    }
}

fn watch_response(stream: WatchStream) -> Response<Body> {
    let body =
        futures::stream::unfold(
            stream,
            |mut stream| async move { stream.next_chunk().await.map(|chunk| (chunk, stream)) },
        );
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

// ----- responses ------------------------------------------------------------------

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = code;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A `metav1.Status` failure object.
fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn status_response(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(code, &status_object(code.as_u16(), reason, message))
}

fn version_doc() -> Value {
    json!({
        "major": "1",
        "minor": FAKE_MINOR,
        "gitVersion": format!("v1.{FAKE_MINOR}.0-fake"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn api_versions_doc(addr: SocketAddr) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string() }],
    })
}

fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&str> = RESOURCES.iter().map(|r| r.group).filter(|g| !g.is_empty()).collect();
    groups.dedup();
    groups
}

fn group_entry(group: &str) -> Value {
    let gv = format!("{group}/v1");
    json!({
        "name": group,
        "versions": [{ "groupVersion": gv, "version": "v1" }],
        "preferredVersion": { "groupVersion": gv, "version": "v1" },
    })
}

fn api_group_list_doc() -> Value {
    let groups: Vec<Value> = groups().into_iter().map(group_entry).collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

fn group_doc(group: &str) -> Option<Value> {
    groups().contains(&group).then(|| {
        let mut doc = group_entry(group);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        doc
    })
}

fn resource_list_doc(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| {
            json!({
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "list", "watch"],
            })
        })
        .collect();
    let gv = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources })
}
