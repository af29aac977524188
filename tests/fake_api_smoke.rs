//! Proves that the fake API server in `tests/support/fake_api/` speaks the
//! Kubernetes API well enough for the real kube-rs client and runtime watcher:
//! lists with pagination and selectors, watches with replay, bookmarks,
//! dropped connections, 410 Gone, stalls and outages.

mod support;

use std::fmt::Debug;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;

use support::fake_api::FakeApiServer;
use support::objects::{
    Ep, mk_external_name_service, mk_headless_service, mk_namespace, mk_pod, mk_service, mk_slice, with_labels,
    with_trigger_time,
};

/// Upper bound for anything a test waits for.
const WAIT: Duration = Duration::from_secs(10);

/// A kube client configured from a kubeconfig file written by the fake,
/// exactly as the server under test will be configured. The returned
/// directory holds the file and must outlive nothing but this call.
async fn client_for(fake: &FakeApiServer) -> Client {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&path).expect("write kubeconfig");
    let kubeconfig = Kubeconfig::read_from(&path).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config from kubeconfig");
    assert_eq!(config.default_namespace, "default");
    Client::try_from(config).expect("client")
}

/// Polls `stream` on its own task, as the server under test polls its
/// watchers, and hands the items over a channel. A kube-runtime watcher only
/// makes requests while it is polled: without this, the watch that follows
/// the initial list would not be opened until the test asks for the next event.
fn drive<S>(stream: S) -> mpsc::UnboundedReceiver<S::Item>
where
    S: Stream + Send + 'static,
    S::Item: Send + 'static,
{
    let (tx, rx) = mpsc::unbounded();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if tx.unbounded_send(item).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next item of a stream, failing the test after [`WAIT`].
async fn next<S, T>(stream: &mut S) -> T
where
    S: Stream<Item = T> + Unpin,
{
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("timed out waiting for the next stream item")
        .expect("stream ended")
}

/// The next successful watcher event, skipping (and returning) the errors
/// the watcher reports while it recovers.
async fn next_event<S, K>(stream: &mut S) -> (Event<K>, Vec<watcher::Error>)
where
    S: Stream<Item = watcher::Result<Event<K>>> + Unpin,
{
    let mut errors = Vec::new();
    loop {
        match next(stream).await {
            Ok(event) => return (event, errors),
            Err(e) => errors.push(e),
        }
    }
}

/// Consumes `Init`, the `InitApply`s and `InitDone`; returns the names seen.
async fn expect_initial_list<S, K>(stream: &mut S) -> Vec<String>
where
    S: Stream<Item = watcher::Result<Event<K>>> + Unpin,
    K: kube::Resource + Debug,
{
    let (first, _) = next_event(stream).await;
    assert!(matches!(first, Event::Init), "expected Init, got {first:?}");
    let mut names = Vec::new();
    loop {
        match next_event(stream).await.0 {
            Event::InitApply(obj) => names.push(obj.meta().name.clone().unwrap_or_default()),
            Event::InitDone => return names,
            other => panic!("expected InitApply or InitDone, got {other:?}"),
        }
    }
}

fn seed_services(fake: &FakeApiServer) {
    fake.apply_many([
        mk_namespace("ns-0"),
        mk_namespace("ns-1"),
        mk_service("ns-0", "svc-0", "10.96.0.10", &[("http", 80, "TCP")]),
        mk_headless_service("ns-0", "svc-1", &[("dns", 53, "UDP"), ("", 8080, "TCP")]),
        mk_external_name_service("ns-1", "svc-2", "example.invalid"),
        mk_service("ns-1", "svc-3", "fd00::10", &[("grpc", 9000, "TCP")]),
    ]);
}

fn names<K: kube::Resource>(items: impl IntoIterator<Item = K>) -> Vec<String> {
    items.into_iter().map(|o| o.meta().name.clone().unwrap_or_default()).collect()
}

#[tokio::test]
async fn list_with_real_client_namespaced_and_paginated() {
    let fake = FakeApiServer::start();
    seed_services(&fake);
    let client = client_for(&fake).await;

    let all = Api::<Service>::all(client.clone()).list(&ListParams::default()).await.expect("list services");
    assert_eq!(names(all.items.clone()), ["svc-0", "svc-1", "svc-2", "svc-3"]);
    assert_eq!(all.metadata.resource_version.as_deref(), Some(fake.resource_version().to_string().as_str()));
    for svc in &all.items {
        assert!(svc.metadata.uid.is_some(), "uid set");
        assert!(svc.metadata.creation_timestamp.is_some(), "creationTimestamp set");
        assert!(svc.metadata.resource_version.is_some(), "resourceVersion set");
    }
    let headless = &all.items[1];
    assert_eq!(headless.spec.as_ref().unwrap().cluster_ip.as_deref(), Some("None"));

    let ns1 = Api::<Service>::namespaced(client.clone(), "ns-1").list(&ListParams::default()).await.expect("list ns-1");
    assert_eq!(names(ns1.items), ["svc-2", "svc-3"]);

    let namespaces = Api::<Namespace>::all(client.clone()).list(&ListParams::default()).await.expect("list namespaces");
    assert_eq!(names(namespaces.items), ["ns-0", "ns-1"]);

    // Page size smaller than the object count.
    let api = Api::<Service>::all(client.clone());
    let mut lp = ListParams::default().limit(3);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = api.list(&lp).await.expect("list page");
        pages += 1;
        seen.extend(names(page.items));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => {
                assert_eq!(page.metadata.remaining_item_count, Some(1));
                lp = lp.continue_token(&token);
            }
            _ => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(seen, ["svc-0", "svc-1", "svc-2", "svc-3"]);
    assert_eq!(fake.list_requests("Service"), 4);
}

#[tokio::test]
async fn list_label_and_field_selectors() {
    let fake = FakeApiServer::start();
    let mut pending = mk_pod("ns-0", "pod-2", &["10.0.0.3"], None, None);
    pending["status"]["phase"] = json!("Pending");
    fake.apply_many([
        with_labels(mk_pod("ns-0", "pod-0", &["10.0.0.1"], None, None), &[("tier", "web")]),
        with_labels(mk_pod("ns-0", "pod-1", &["10.0.0.2"], None, None), &[("tier", "db")]),
        pending,
        mk_pod("ns-1", "pod-3", &["10.0.0.4", "fd00::4"], Some("pod-3"), Some("sub-0")),
    ]);
    let api = Api::<Pod>::all(client_for(&fake).await);
    let list = |selector: &'static str, fields: &'static str| {
        let api = api.clone();
        async move {
            let mut lp = ListParams::default();
            if !selector.is_empty() {
                lp = lp.labels(selector);
            }
            if !fields.is_empty() {
                lp = lp.fields(fields);
            }
            names(api.list(&lp).await.expect("list pods").items)
        }
    };
    assert_eq!(list("tier=web", "").await, ["pod-0"]);
    assert_eq!(list("tier==db", "").await, ["pod-1"]);
    assert_eq!(list("tier!=web", "").await, ["pod-1", "pod-2", "pod-3"]);
    assert_eq!(list("tier", "").await, ["pod-0", "pod-1"]);
    assert_eq!(list("!tier", "").await, ["pod-2", "pod-3"]);
    assert_eq!(list("tier,app!=pod-0", "").await, ["pod-1"]);
    assert_eq!(list("tier in (web, db),app notin (pod-1)", "").await, ["pod-0"]);
    assert_eq!(list("", "status.phase=Running").await, ["pod-0", "pod-1", "pod-3"]);
    assert_eq!(list("", "status.phase!=Running").await, ["pod-2"]);
    assert_eq!(list("", "metadata.namespace==ns-1").await, ["pod-3"]);
    assert_eq!(list("tier", "metadata.name=pod-1,status.phase=Running").await, ["pod-1"]);

    let pod3 = Api::<Pod>::namespaced(api.clone().into_client(), "ns-1").get("pod-3").await.expect("get pod-3");
    let status = pod3.status.unwrap();
    assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.4"));
    assert_eq!(status.pod_ips.unwrap().len(), 2);
    assert_eq!(pod3.spec.unwrap().subdomain.as_deref(), Some("sub-0"));

    // Unsupported field labels and malformed selectors are 400s, not panics.
    let err = api.list(&ListParams::default().fields("spec.bogus=1")).await.expect_err("bad field selector");
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 400), "{err:?}");
    let err = api.list(&ListParams::default().labels("a in (b")).await.expect_err("bad label selector");
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 400), "{err:?}");
}

#[tokio::test]
async fn continue_tokens_are_consistent_snapshots_and_expire() {
    let fake = FakeApiServer::start();
    fake.apply_many((0..5).map(|i| mk_namespace(&format!("ns-{i}"))));
    let api = Api::<Namespace>::all(client_for(&fake).await);

    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(names(first.items), ["ns-0", "ns-1"]);
    let token = first.metadata.continue_.unwrap();
    // Changes after the first page are not visible in the following pages.
    fake.delete("Namespace", None, "ns-3");
    fake.apply(mk_namespace("ns-9"));
    fake.apply(with_labels(mk_namespace("ns-2"), &[("changed", "yes")]));
    let second = api.list(&ListParams::default().limit(10).continue_token(&token)).await.unwrap();
    assert_eq!(names(second.items.clone()), ["ns-2", "ns-3", "ns-4"]);
    assert!(!second.items[0].labels().contains_key("changed"));
    assert_eq!(second.metadata.resource_version, first.metadata.resource_version);

    // After a compaction the token is too old: 410 Gone, reason Expired.
    fake.compact();
    let err =
        api.list(&ListParams::default().limit(10).continue_token(&token)).await.expect_err("expired continue token");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected 410, got {other:?}"),
    }
    let fresh = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(fresh.items), ["ns-0", "ns-1", "ns-2", "ns-4", "ns-9"]);
}

#[tokio::test]
async fn get_discovery_and_unknown_paths() {
    let fake = FakeApiServer::start();
    seed_services(&fake);
    let client = client_for(&fake).await;

    let svc = Api::<Service>::namespaced(client.clone(), "ns-0").get("svc-0").await.unwrap();
    assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("10.96.0.10"));
    let err = Api::<Service>::namespaced(client.clone(), "ns-0").get("svc-404").await.expect_err("missing service");
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 404 && s.reason == "NotFound"));

    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(version.major, "1");

    let req = axum::http::Request::get("/apis/apps/v1/deployments").body(Vec::new()).unwrap();
    let err = client.request_text(req).await.expect_err("unknown resource");
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 404), "{err:?}");

    let req = axum::http::Request::get("/api").body(Vec::new()).unwrap();
    let api_versions: serde_json::Value = client.request(req).await.expect("/api");
    assert_eq!(api_versions["versions"], json!(["v1"]));
}

#[tokio::test]
async fn watcher_sees_initial_list_then_apply_and_delete() {
    let fake = FakeApiServer::start();
    seed_services(&fake);
    let client = client_for(&fake).await;
    let mut stream = drive(watcher::watcher(Api::<Service>::all(client), watcher::Config::default()));

    assert_eq!(expect_initial_list(&mut stream).await, ["svc-0", "svc-1", "svc-2", "svc-3"]);
    assert!(fake.wait_for_watches("Service", 1, WAIT).await);

    fake.apply(mk_headless_service("ns-1", "svc-4", &[("http", 80, "TCP")]));
    match next_event(&mut stream).await.0 {
        Event::Apply(svc) => assert_eq!(svc.name_any(), "svc-4"),
        other => panic!("expected Apply, got {other:?}"),
    }
    // An update of an existing object.
    fake.apply(mk_service("ns-0", "svc-0", "10.96.0.11", &[("http", 80, "TCP")]));
    match next_event(&mut stream).await.0 {
        Event::Apply(svc) => {
            assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("10.96.0.11"));
            assert_eq!(svc.metadata.resource_version, Some(fake.resource_version().to_string()));
        }
        other => panic!("expected Apply, got {other:?}"),
    }
    // Re-applying the same object is a no-op, as on a real server.
    let rv = fake.resource_version();
    assert_eq!(fake.apply(mk_service("ns-0", "svc-0", "10.96.0.11", &[("http", 80, "TCP")])), rv);
    let deleted_rv = fake.delete("Service", Some("ns-0"), "svc-1").expect("svc-1 existed");
    match next_event(&mut stream).await.0 {
        Event::Delete(svc) => {
            assert_eq!(svc.name_any(), "svc-1");
            assert_eq!(svc.metadata.resource_version, Some(deleted_rv.to_string()));
        }
        other => panic!("expected Delete, got {other:?}"),
    }
    assert_eq!(fake.delete("Service", Some("ns-0"), "svc-1"), None);
    assert_eq!(fake.list_requests("Service"), 1);
    assert_eq!(fake.watch_requests("Service"), 1);
    for line in fake.request_log() {
        eprintln!("request: {line}");
    }
}

#[tokio::test]
async fn watcher_resumes_after_dropped_connection_without_relisting() {
    let fake = FakeApiServer::start();
    seed_services(&fake);
    let client = client_for(&fake).await;
    let mut stream = drive(watcher::watcher(Api::<Service>::all(client), watcher::Config::default()));
    expect_initial_list(&mut stream).await;
    assert!(fake.wait_for_watches("Service", 1, WAIT).await);

    fake.drop_watches();
    assert_eq!(fake.open_watches("Service"), 0);
    // A change made while the watcher is disconnected is replayed from history
    // when it resumes from its last resourceVersion.
    fake.apply(mk_service("ns-1", "svc-5", "10.96.0.15", &[]));
    let (event, errors) = next_event(&mut stream).await;
    match event {
        Event::Apply(svc) => assert_eq!(svc.name_any(), "svc-5"),
        other => panic!("expected Apply, got {other:?}"),
    }
    eprintln!("errors reported by the watcher after drop_watches: {errors:?}");
    assert_eq!(fake.list_requests("Service"), 1, "no relist");
    assert_eq!(fake.watch_requests("Service"), 2, "one re-watch");
    let log = fake.request_log();
    let last = log.last().unwrap();
    assert!(last.contains("watch=true"), "{last}");
    assert!(!last.contains("resourceVersion=0"), "resumed from a real version: {last}");
}

#[tokio::test]
async fn watcher_relists_after_410_gone() {
    let fake = FakeApiServer::start();
    seed_services(&fake);
    let client = client_for(&fake).await;
    let mut stream = drive(watcher::watcher(Api::<Service>::all(client), watcher::Config::default()));
    expect_initial_list(&mut stream).await;
    assert!(fake.wait_for_watches("Service", 1, WAIT).await);

    fake.expire_watches();
    fake.delete("Service", Some("ns-0"), "svc-0");
    // The resumed watch gets ERROR 410, the watcher reports it, then relists.
    match next(&mut stream).await {
        Err(watcher::Error::WatchError(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
            assert!(status.message.starts_with("too old resource version: "), "{status:?}");
        }
        other => panic!("expected a 410 watch error, got {other:?}"),
    }
    assert_eq!(expect_initial_list(&mut stream).await, ["svc-1", "svc-2", "svc-3"]);
    assert_eq!(fake.list_requests("Service"), 2, "relisted");

    // And watching goes on from the new list.
    fake.apply(mk_namespace("ns-2"));
    fake.apply(mk_service("ns-2", "svc-6", "10.96.0.16", &[]));
    match next_event(&mut stream).await.0 {
        Event::Apply(svc) => assert_eq!(svc.name_any(), "svc-6"),
        other => panic!("expected Apply, got {other:?}"),
    }
}

#[tokio::test]
async fn raw_watch_replays_history_and_answers_410_after_compaction() {
    let fake = FakeApiServer::start();
    seed_services(&fake);
    let api = Api::<Service>::all(client_for(&fake).await);
    let start = fake.resource_version();
    fake.apply(mk_service("ns-0", "svc-7", "10.96.0.17", &[]));
    fake.delete("Service", Some("ns-0"), "svc-7");

    let mut watch = api
        .watch(&WatchParams::default().timeout(5).disable_bookmarks(), &start.to_string())
        .await
        .expect("watch")
        .boxed();
    assert!(matches!(next(&mut watch).await, Ok(WatchEvent::Added(s)) if s.name_any() == "svc-7"));
    assert!(matches!(next(&mut watch).await, Ok(WatchEvent::Deleted(s)) if s.name_any() == "svc-7"));
    drop(watch);

    fake.compact();
    let mut watch = api
        .watch(&WatchParams::default().timeout(5).disable_bookmarks(), &start.to_string())
        .await
        .expect("watch is accepted, the error comes as an event")
        .boxed();
    match next(&mut watch).await {
        Ok(WatchEvent::Error(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.message, format!("too old resource version: {start} ({})", fake.resource_version()));
        }
        other => panic!("expected ERROR 410, got {other:?}"),
    }
    let end = tokio::time::timeout(WAIT, watch.next()).await.expect("stream ends");
    assert!(end.is_none(), "the stream ends after the 410");

    // A list at an exact, compacted version is 410 as well.
    let err = api
        .list(&ListParams::default().at(&start.to_string()).matching(kube::api::VersionMatch::Exact))
        .await
        .expect_err("exact list at compacted version");
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 410), "{err:?}");
}

#[tokio::test]
async fn history_limit_compacts_old_writes() {
    let fake = FakeApiServer::start();
    fake.set_history_limit(2);
    let api = Api::<Namespace>::all(client_for(&fake).await);
    let start = fake.resource_version();
    fake.apply_many((0..3).map(|i| mk_namespace(&format!("ns-{i}"))));
    let wp = WatchParams::default().disable_bookmarks();
    // The first write was compacted away: resuming before it is 410 Gone.
    let mut watch = api.watch(&wp, &start.to_string()).await.unwrap().boxed();
    assert!(matches!(next(&mut watch).await, Ok(WatchEvent::Error(s)) if s.code == 410));
    // Resuming after it replays the two retained writes.
    let mut watch = api.watch(&wp, &(start + 1).to_string()).await.unwrap().boxed();
    assert!(matches!(next(&mut watch).await, Ok(WatchEvent::Added(n)) if n.name_any() == "ns-1"));
    assert!(matches!(next(&mut watch).await, Ok(WatchEvent::Added(n)) if n.name_any() == "ns-2"));
}

#[tokio::test]
async fn raw_watch_with_selector_sees_objects_enter_and_leave() {
    let fake = FakeApiServer::start();
    fake.apply(mk_slice(
        "ns-0",
        "svc-0-aaaaa",
        "svc-0",
        "IPv4",
        &[("http", 80, "TCP")],
        &[Ep::new("10.0.0.1").hostname("pod-0").target_pod("pod-0")],
    ));
    let api = Api::<EndpointSlice>::namespaced(client_for(&fake).await, "ns-0");
    let wp = WatchParams::default().labels("kubernetes.io/service-name=svc-0").disable_bookmarks();
    let mut watch = api.watch(&wp, "0").await.expect("watch").boxed();
    // resourceVersion=0: synthetic ADDED for the current state.
    match next(&mut watch).await {
        Ok(WatchEvent::Added(slice)) => {
            assert_eq!(slice.endpoints[0].hostname.as_deref(), Some("pod-0"));
            let conditions = slice.endpoints[0].conditions.clone().unwrap();
            assert_eq!(conditions.ready, Some(true));
        }
        other => panic!("expected ADDED, got {other:?}"),
    }
    // Relabelled away from the selector: DELETED; back: ADDED.
    let moved = mk_slice("ns-0", "svc-0-aaaaa", "svc-9", "IPv4", &[], &[]);
    fake.apply(moved);
    assert!(matches!(next(&mut watch).await, Ok(WatchEvent::Deleted(_))));
    fake.apply(with_trigger_time(
        mk_slice("ns-0", "svc-0-aaaaa", "svc-0", "IPv4", &[], &[Ep::new("10.0.0.2").not_ready()]),
        "2025-01-01T00:00:00Z",
    ));
    match next(&mut watch).await {
        Ok(WatchEvent::Added(slice)) => {
            assert_eq!(
                slice.annotations().get("endpoints.kubernetes.io/last-change-trigger-time"),
                Some(&"2025-01-01T00:00:00Z".to_owned())
            );
            assert_eq!(slice.endpoints[0].conditions.clone().unwrap().ready, Some(false));
        }
        other => panic!("expected ADDED, got {other:?}"),
    }
    // Another service's slice is filtered out.
    fake.apply(mk_slice("ns-0", "svc-1-bbbbb", "svc-1", "IPv6", &[], &[Ep::new("fd00::1")]));
    fake.delete("EndpointSlice", Some("ns-0"), "svc-0-aaaaa");
    assert!(matches!(next(&mut watch).await, Ok(WatchEvent::Deleted(s)) if s.name_any() == "svc-0-aaaaa"));
}

#[tokio::test]
async fn bookmarks_periodic_and_on_demand() {
    let fake = FakeApiServer::start();
    fake.set_bookmark_interval(None);
    seed_services(&fake);
    let api = Api::<Service>::all(client_for(&fake).await);
    let rv = fake.resource_version().to_string();
    let mut watch = api.watch(&WatchParams::default(), &rv).await.expect("watch").boxed();
    assert!(fake.wait_for_watches("Service", 1, WAIT).await);
    fake.bump_resource_version();
    fake.send_bookmarks();
    match next(&mut watch).await {
        Ok(WatchEvent::Bookmark(bm)) => {
            assert_eq!(bm.metadata.resource_version, fake.resource_version().to_string());
            assert_eq!(bm.types.kind, "Service");
        }
        other => panic!("expected BOOKMARK, got {other:?}"),
    }
    fake.set_bookmark_interval(Some(Duration::from_millis(50)));
    assert!(matches!(next(&mut watch).await, Ok(WatchEvent::Bookmark(_))));
    assert!(matches!(next(&mut watch).await, Ok(WatchEvent::Bookmark(_))));

    // The runtime watcher requests bookmarks by default and takes them in stride.
    let mut stream = drive(watcher::watcher(api.clone(), watcher::Config::default()));
    expect_initial_list(&mut stream).await;
    // Bookmarks flow (every 50 ms) while the watcher is polled; it swallows them.
    let quiet = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(quiet.is_err(), "bookmarks are not surfaced as events: {quiet:?}");
    fake.apply(mk_service("ns-0", "svc-8", "10.96.0.18", &[]));
    let (event, errors) = next_event(&mut stream).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert!(matches!(event, Event::Apply(ref s) if s.name_any() == "svc-8"), "{event:?}");
    let watch_line = fake.request_log().into_iter().rfind(|l| l.contains("watch=true")).unwrap();
    assert!(watch_line.contains("allowWatchBookmarks=true"), "{watch_line}");
}

#[tokio::test]
async fn watch_timeout_seconds_ends_the_stream_cleanly() {
    let fake = FakeApiServer::start();
    let api = Api::<Service>::all(client_for(&fake).await);
    let rv = fake.resource_version().to_string();
    let started = tokio::time::Instant::now();
    let mut watch =
        api.watch(&WatchParams::default().timeout(1).disable_bookmarks(), &rv).await.expect("watch").boxed();
    let end = tokio::time::timeout(WAIT, watch.next()).await.expect("ends");
    assert!(end.is_none(), "{end:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn stall_delays_the_initial_list() {
    let fake = FakeApiServer::start();
    seed_services(&fake);
    let client = client_for(&fake).await;
    fake.set_stalled(true);
    let mut stream = drive(watcher::watcher(Api::<Service>::all(client), watcher::Config::default()));
    // The watcher emits Init before it lists; the list itself is held.
    assert!(matches!(next(&mut stream).await, Ok(Event::Init)));
    let held = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
    assert!(held.is_err(), "nothing may arrive while stalled: {held:?}");
    assert_eq!(fake.list_requests("Service"), 1, "the list arrived and is held");
    fake.set_stalled(false);
    let mut names = Vec::new();
    loop {
        match next_event(&mut stream).await.0 {
            Event::InitApply(svc) => names.push(svc.name_any()),
            Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(names.len(), 4);

    // A stall also holds events on open watches; they arrive in order afterwards.
    assert!(fake.wait_for_watches("Service", 1, WAIT).await);
    fake.set_stalled(true);
    fake.delete("Service", Some("ns-1"), "svc-2");
    fake.apply(mk_service("ns-1", "svc-2", "10.96.0.12", &[]));
    let held = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(held.is_err(), "nothing may arrive while stalled: {held:?}");
    fake.set_stalled(false);
    assert!(matches!(next_event(&mut stream).await.0, Event::Delete(_)));
    assert!(matches!(next_event(&mut stream).await.0, Event::Apply(_)));
}

#[tokio::test]
async fn down_closes_connections_and_watcher_recovers() {
    let fake = FakeApiServer::start();
    seed_services(&fake);
    let api = Api::<Service>::all(client_for(&fake).await);
    // Warm the client's connection pool, so that the outage also has to cut
    // an idle keep-alive connection.
    assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 4);
    fake.set_down(true);
    let started = tokio::time::Instant::now();
    let err = api.list(&ListParams::default()).await.expect_err("down");
    assert!(!matches!(err, kube::Error::Api(_)), "a transport error: {err:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "fails fast, no retries");
    eprintln!("list while down: {err:?}");
    fake.set_down(false);
    assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 4);

    // A watcher that loses the server keeps retrying (with backoff) and resumes.
    use kube::runtime::WatchStreamExt;
    let mut stream = drive(watcher::watcher(api.clone(), watcher::Config::default()).default_backoff());
    expect_initial_list(&mut stream).await;
    assert!(fake.wait_for_watches("Service", 1, WAIT).await);
    let lists_before = fake.list_requests("Service");
    fake.set_down(true);
    let errored = next(&mut stream).await;
    assert!(errored.is_err(), "{errored:?}");
    eprintln!("watcher while down: {errored:?}");
    fake.apply(mk_service("ns-0", "svc-9", "10.96.0.19", &[]));
    fake.set_down(false);
    match next_event(&mut stream).await.0 {
        Event::Apply(svc) => assert_eq!(svc.name_any(), "svc-9"),
        other => panic!("expected Apply, got {other:?}"),
    }
    assert_eq!(fake.list_requests("Service"), lists_before, "resumed without relisting");
}

#[tokio::test]
async fn unavailable_answers_503_which_kube_retries_by_default() {
    let fake = FakeApiServer::start();
    seed_services(&fake);
    let no_retry = {
        let mut config = kube::Config::new(fake.url().parse().unwrap());
        config.default_retry = false;
        Client::try_from(config).unwrap()
    };
    fake.set_unavailable(true);
    let err = Api::<Service>::all(no_retry).list(&ListParams::default()).await.expect_err("unavailable");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 503);
            assert_eq!(status.reason, "ServiceUnavailable");
        }
        other => panic!("expected 503, got {other:?}"),
    }
    assert_eq!(fake.list_requests("Service"), 1);

    // The default client retries 503s itself: a short blip goes unnoticed.
    let api = Api::<Service>::all(client_for(&fake).await);
    let list = tokio::spawn(async move { api.list(&ListParams::default()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.set_unavailable(false);
    let list = tokio::time::timeout(WAIT, list).await.unwrap().unwrap();
    assert_eq!(list.expect("retried until available").items.len(), 4);
    assert!(fake.list_requests("Service") > 2, "retried");
}

#[tokio::test]
async fn streaming_list_watcher() {
    let fake = FakeApiServer::start();
    seed_services(&fake);
    let api = Api::<Service>::all(client_for(&fake).await);
    let mut stream = drive(watcher::watcher(api, watcher::Config::default().streaming_lists()));
    assert_eq!(expect_initial_list(&mut stream).await, ["svc-0", "svc-1", "svc-2", "svc-3"]);
    assert_eq!(fake.list_requests("Service"), 0);
    fake.apply(mk_service("ns-0", "svc-10", "10.96.0.20", &[]));
    assert!(matches!(next_event(&mut stream).await.0, Event::Apply(_)));
    let first = fake.request_log().into_iter().find(|l| l.contains("watch")).unwrap();
    assert!(first.contains("sendInitialEvents=true"), "{first}");
}

/// The fake is usable from a plain `#[test]`: it brings its own runtime.
#[test]
fn plain_test_with_its_own_client_runtime() {
    let fake = FakeApiServer::start();
    seed_services(&fake);
    assert_eq!(fake.objects("Service").len(), 4);
    assert!(fake.get("Namespace", None, "ns-1").is_some());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let count = runtime.block_on(async {
        let api = Api::<Service>::namespaced(client_for(&fake).await, "ns-0");
        api.list(&ListParams::default()).await.unwrap().items.len()
    });
    assert_eq!(count, 2);
    let kubeconfig = fake.kubeconfig_yaml();
    assert!(kubeconfig.contains(&format!("server: http://127.0.0.1:{}", fake.addr().port())));
    drop(fake); // shuts the server down promptly
}
