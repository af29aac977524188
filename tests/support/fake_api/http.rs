//! The list/watch HTTP API over the store: routing, discovery documents, list pages, and watch
//! streams with bookmarks.

use super::*;

// ----- HTTP -------------------------------------------------------------------------

pub(super) async fn serve(shared: Arc<Shared>, listener: StdTcpListener, shutdown: oneshot::Receiver<()>) {
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

/// Sends the periodic bookmarks (skipped while stalled).
pub(super) async fn bookmark_ticker(shared: Arc<Shared>) {
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
pub(super) enum Route {
    Collection { res: usize, namespace: Option<String> },
    Object { res: usize, namespace: Option<String>, name: String },
    Discovery(Value),
    Health,
    NotFound,
}

pub(super) fn route(shared: &Shared, path: &str) -> Route {
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
    let unserved = shared.state.lock().unserved.clone();
    let find = |plural: &str| {
        RESOURCES
            .iter()
            .position(|r| r.group == group && r.version == version && r.plural == plural)
            .filter(|&i| !unserved[i])
    };
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
pub(super) struct Query(pub(super) BTreeMap<String, String>);

impl Query {
    pub(super) fn parse(raw: &str) -> Self {
        let mut map = BTreeMap::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(percent_decode(k), percent_decode(v));
        }
        Self(map)
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A boolean parameter the way Go's `strconv.ParseBool` reads it; absent
    /// or unparsable is `false`.
    pub(super) fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("1" | "t" | "T" | "true" | "TRUE" | "True"))
    }
}

/// `application/x-www-form-urlencoded` decoding: `%XX` and `+`. Invalid escapes
/// are kept literally, invalid UTF-8 is replaced.
pub(super) fn percent_decode(s: &str) -> String {
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

pub(super) async fn handle(shared: Arc<Shared>, req: Request<Body>) -> Response<Body> {
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

pub(super) fn parse_filter(def: &ResourceDef, namespace: Option<String>, q: &Query) -> Result<Filter, String> {
    Ok(Filter {
        namespace,
        labels: LabelSelector::parse(q.get("labelSelector").unwrap_or(""))?,
        fields: FieldSelector::parse(def, q.get("fieldSelector").unwrap_or(""))?,
    })
}

pub(super) fn get_object(shared: &Shared, res: usize, namespace: Option<String>, name: &str) -> Response<Body> {
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

pub(super) fn group_suffix(def: &ResourceDef) -> String {
    if def.group.is_empty() { String::new() } else { format!(".{}", def.group) }
}

/// A resourceVersion parameter, or the `400 Bad Request` to answer.
pub(super) fn parse_rv(s: &str) -> Result<u64, Box<Response<Body>>> {
    s.parse::<u64>().map_err(|_| {
        Box::new(status_response(StatusCode::BAD_REQUEST, "BadRequest", &format!("invalid resource version {s:?}")))
    })
}

pub(super) fn expired(message: String) -> Response<Body> {
    status_response(StatusCode::GONE, "Expired", &message)
}

pub(super) fn list(shared: &Shared, res: usize, filter: &Filter, q: &Query) -> Response<Body> {
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
pub(super) fn page(
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
pub(super) fn parse_continue(token: &str) -> Option<(u64, Key)> {
    let mut parts = token.splitn(3, '/');
    let rv = parts.next()?.parse().ok()?;
    let ns = parts.next()?.to_owned();
    let name = parts.next()?.to_owned();
    Some((rv, (ns, name)))
}

pub(super) fn invalid(message: &str) -> Response<Body> {
    status_response(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
}

pub(super) fn start_watch(shared: &Arc<Shared>, res: usize, filter: Filter, q: &Query) -> Response<Body> {
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
pub(super) struct WatchGuard {
    pub(super) shared: Arc<Shared>,
    pub(super) id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let id = self.id;
        self.shared.state.lock().watchers.retain(|w| w.id != id);
    }
}

/// The body of one watch response.
pub(super) struct WatchStream {
    pub(super) rx: mpsc::UnboundedReceiver<String>,
    pub(super) stalled: watch::Receiver<bool>,
    /// `None` for a finite stream (the 410 answer), which ends cleanly when
    /// its channel is drained and is not affected by drop_watches().
    pub(super) drops: Option<watch::Receiver<u64>>,
    pub(super) deadline: tokio::time::Instant,
    pub(super) _guard: Option<WatchGuard>,
    pub(super) done: bool,
}

impl WatchStream {
    pub(super) fn live(
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

    pub(super) fn finite(rx: mpsc::UnboundedReceiver<String>, shared: &Shared, timeout: Duration) -> Self {
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
    pub(super) async fn next_chunk(&mut self) -> Option<io::Result<String>> {
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

pub(super) fn watch_response(stream: WatchStream) -> Response<Body> {
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

pub(super) fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = code;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A `metav1.Status` failure object.
pub(super) fn status_object(code: u16, reason: &str, message: &str) -> Value {
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

pub(super) fn status_response(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(code, &status_object(code.as_u16(), reason, message))
}

pub(super) fn version_doc() -> Value {
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

pub(super) fn api_versions_doc(addr: SocketAddr) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string() }],
    })
}

pub(super) fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&str> = RESOURCES.iter().map(|r| r.group).filter(|g| !g.is_empty()).collect();
    groups.dedup();
    groups
}

pub(super) fn group_entry(group: &str) -> Value {
    let version = RESOURCES.iter().find(|r| r.group == group).map_or("v1", |r| r.version);
    let gv = format!("{group}/{version}");
    json!({
        "name": group,
        "versions": [{ "groupVersion": gv, "version": version }],
        "preferredVersion": { "groupVersion": gv, "version": version },
    })
}

pub(super) fn api_group_list_doc() -> Value {
    let groups: Vec<Value> = groups().into_iter().map(group_entry).collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

pub(super) fn group_doc(group: &str) -> Option<Value> {
    groups().contains(&group).then(|| {
        let mut doc = group_entry(group);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        doc
    })
}

pub(super) fn resource_list_doc(group: &str, version: &str) -> Value {
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
