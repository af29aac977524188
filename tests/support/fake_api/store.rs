//! The object store and its write history: the served resource types, the objects by key, every
//! write as a history event (for watch replay and list snapshots), and the label and field
//! selectors that filter them.

use super::*;

/// Static description of one served resource type.
#[derive(Debug)]
pub(super) struct ResourceDef {
    pub(super) kind: &'static str,
    pub(super) list_kind: &'static str,
    /// API group, empty for the core group.
    pub(super) group: &'static str,
    pub(super) version: &'static str,
    /// `apiVersion` of the objects: `v1` or `group/version`.
    pub(super) api_version: &'static str,
    pub(super) plural: &'static str,
    pub(super) singular: &'static str,
    pub(super) namespaced: bool,
    /// Field selector labels this type accepts besides `metadata.name` and
    /// `metadata.namespace` (the real server rejects all others).
    pub(super) extra_fields: &'static [&'static str],
}

pub(super) const RESOURCES: &[ResourceDef] = &[
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
    // A custom resource (the Multi-Cluster Services API's), served as if its CRD were installed.
    ResourceDef {
        kind: "ServiceImport",
        list_kind: "ServiceImportList",
        group: "multicluster.x-k8s.io",
        version: "v1beta1",
        api_version: "multicluster.x-k8s.io/v1beta1",
        plural: "serviceimports",
        singular: "serviceimport",
        namespaced: true,
        extra_fields: &[],
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
pub(super) fn resource_index(name: &str) -> Option<usize> {
    RESOURCES.iter().position(|r| {
        r.kind.eq_ignore_ascii_case(name)
            || r.plural.eq_ignore_ascii_case(name)
            || r.singular.eq_ignore_ascii_case(name)
    })
}

/// Like [`resource_index`], for the test-facing API: a typo there is a bug in
/// the test, so it panics with the list of known kinds.
pub(super) fn expect_resource(name: &str) -> usize {
    resource_index(name).unwrap_or_else(|| {
        let known: Vec<_> = RESOURCES.iter().map(|r| r.kind).collect();
        panic!("fake_api: unknown kind {name:?}; known kinds: {known:?}")
    })
}

/// Store key: `(namespace or "", name)`. Its order is the list order, as the
/// real server lists in etcd key order (`/registry/<plural>/<ns>/<name>`).
pub(super) type Key = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One write, as kept in the history for watch replay and list snapshots.
#[derive(Debug, Clone)]
pub(super) struct HistoryEvent {
    pub(super) rv: u64,
    pub(super) res: usize,
    pub(super) key: Key,
    pub(super) kind: EventType,
    /// The object after the write; for a delete, the last state with the
    /// version of the delete (what the DELETED event carries). Shared with
    /// [`State::objects`], so that a write stores its object once.
    pub(super) object: Arc<Value>,
    /// The object before the write (`None` for a create).
    pub(super) prev: Option<Arc<Value>>,
}

/// An open watch stream registered for live events.
pub(super) struct Watcher {
    pub(super) id: u64,
    pub(super) res: usize,
    pub(super) filter: Filter,
    pub(super) bookmarks: bool,
    pub(super) tx: mpsc::UnboundedSender<String>,
}

/// Mutable server state, behind [`Shared::state`].
pub(super) struct State {
    /// The last resourceVersion handed out.
    pub(super) rv: u64,
    /// Current objects, one map per entry of [`RESOURCES`].
    pub(super) objects: Vec<BTreeMap<Key, Arc<Value>>>,
    /// Every write with a version above `floor`, oldest first.
    pub(super) history: VecDeque<HistoryEvent>,
    /// The oldest version the history can answer for: watches may resume from
    /// any version `>= floor`, snapshots can be rebuilt for versions `>= floor`.
    pub(super) floor: u64,
    pub(super) watchers: Vec<Watcher>,
    pub(super) next_watcher_id: u64,
    pub(super) next_uid: u64,
    pub(super) list_requests: Vec<usize>,
    pub(super) watch_requests: Vec<usize>,
    pub(super) request_log: VecDeque<String>,
    pub(super) bookmark_interval: Option<Duration>,
    /// At most this many writes are kept in `history`; older ones are
    /// compacted away (raising `floor`).
    pub(super) history_limit: usize,
    /// Answer every request with 503 (see `set_unavailable`).
    pub(super) unavailable: bool,
    /// Per entry of [`RESOURCES`]: answered `404`, as a CRD that is not installed (see `set_served`).
    pub(super) unserved: Vec<bool>,
}

impl State {
    pub(super) fn new() -> Self {
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
            unserved: vec![false; RESOURCES.len()],
            request_log: VecDeque::new(),
            bookmark_interval: Some(DEFAULT_BOOKMARK_INTERVAL),
            history_limit: DEFAULT_HISTORY_LIMIT,
            unavailable: false,
        }
    }

    /// Records a write: appends it to the history and fans it out to the
    /// matching watchers (dropping watchers whose client went away).
    pub(super) fn record(&mut self, event: HistoryEvent) {
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
    pub(super) fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(oldest) = self.history.pop_front() {
                self.floor = oldest.rv;
            }
        }
    }

    /// The objects of `res` as of version `at`, rebuilt by undoing the history
    /// newer than `at`. `None` if `at` is older than the retained history.
    pub(super) fn snapshot(&self, res: usize, at: u64) -> Option<Cow<'_, BTreeMap<Key, Arc<Value>>>> {
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
    pub(super) fn queue_bookmarks(&mut self) {
        let rv = self.rv;
        self.watchers.retain(|w| {
            if !w.bookmarks {
                return true;
            }
            w.tx.send(bookmark_line(&RESOURCES[w.res], rv, false)).is_ok()
        });
    }

    pub(super) fn log_request(&mut self, line: String) {
        if self.request_log.len() == REQUEST_LOG_CAPACITY {
            self.request_log.pop_front();
        }
        self.request_log.push_back(line);
    }
}

/// State shared between the test-facing handle and the server thread.
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// `true` while requests and watch streams are held (see `set_stalled`).
    pub(super) stalled: watch::Sender<bool>,
    /// Bumped to abort every open watch stream at once.
    pub(super) drops: watch::Sender<u64>,
    /// Wakes the bookmark ticker when its interval changes.
    pub(super) bookmark_config: Notify,
    /// `true` while the server is unreachable (see `set_down`).
    pub(super) down: AtomicBool,
    /// Bumped by `set_down(true)`: connections accepted under an older
    /// generation fail on their next read or write.
    pub(super) down_generation: AtomicU64,
    pub(super) addr: SocketAddr,
    pub(super) debug: bool,
    /// Bytes written to clients (headers, lists, watch events), for benchmarks.
    pub(super) bytes_sent: AtomicU64,
}

impl Shared {
    pub(super) fn debug(&self, args: fmt::Arguments<'_>) {
        if self.debug {
            eprintln!("[fake-api {}] {args}", self.addr);
        }
    }

    /// Aborts every open watch stream. Must be called with the state locked
    /// (`st`), so that no stream registers between the two steps.
    pub(super) fn drop_watches_locked(&self, st: &mut State) {
        st.watchers.clear();
        self.drops.send_modify(|generation| *generation += 1);
    }
}

/// Validates a test-supplied object and normalises its type and namespace.
pub(super) fn prepare_object(mut obj: Value) -> (usize, Key, Value) {
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

pub(super) fn object_key(def: &ResourceDef, namespace: Option<&str>, name: &str) -> Key {
    let ns = if def.namespaced { namespace.unwrap_or("default").to_owned() } else { String::new() };
    (ns, name.to_owned())
}

/// A deterministic, well-formed (version 4 layout) UID.
pub(super) fn fake_uid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{:012x}", n & 0xffff_ffff_ffff)
}

/// The current UTC time as RFC 3339 with second precision, as Kubernetes
/// serialises `metav1.Time`.
pub(super) fn rfc3339_now() -> String {
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
pub(super) enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector`: all requirements must hold.
#[derive(Debug, Clone, Default)]
pub(super) struct LabelSelector(pub(super) Vec<LabelReq>);

impl LabelSelector {
    /// Parses the equality-based (`k=v`, `k==v`, `k!=v`) and set-based
    /// (`k`, `!k`, `k in (a,b)`, `k notin (a,b)`) forms, comma-joined.
    pub(super) fn parse(s: &str) -> Result<Self, String> {
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

    pub(super) fn parse_term(term: &str) -> Result<LabelReq, String> {
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

    pub(super) fn matches(&self, obj: &Value) -> bool {
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

pub(super) fn valid_key(key: &str) -> Result<String, String> {
    if key.is_empty() || key.contains(|c: char| c.is_whitespace() || "=!(),".contains(c)) {
        Err(format!("invalid label key {key:?}"))
    } else {
        Ok(key.to_owned())
    }
}

pub(super) fn split_outside_parens(s: &str) -> Vec<&str> {
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
pub(super) struct FieldSelector(pub(super) Vec<(String, bool, String)>);

impl FieldSelector {
    pub(super) fn parse(def: &ResourceDef, s: &str) -> Result<Self, String> {
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

    pub(super) fn matches(&self, obj: &Value) -> bool {
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
pub(super) struct Filter {
    pub(super) namespace: Option<String>,
    pub(super) labels: LabelSelector,
    pub(super) fields: FieldSelector,
}

impl Filter {
    pub(super) fn matches(&self, obj: &Value) -> bool {
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
pub(super) fn event_line(event_type: &str, object: &Value) -> String {
    let object = serde_json::to_string(object).unwrap_or_default();
    let event_type = serde_json::to_string(event_type).unwrap_or_default();
    format!("{{\"type\":{event_type},\"object\":{object}}}\n")
}

pub(super) fn bookmark_line(def: &ResourceDef, rv: u64, initial_events_end: bool) -> String {
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
pub(super) fn watch_line_for(filter: &Filter, ev: &HistoryEvent) -> Option<String> {
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
