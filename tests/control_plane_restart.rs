//! `serve --source kube` against a real control plane (etcd, kube-apiserver, from
//! `$KUBEBUILDER_ASSETS`) while the API server restarts: a short and a 30-s outage, then an etcd
//! compaction before a restart. Throughout, stable names never fail; after each restart a change
//! is served within a few seconds (the watchers retry at most 500 ms apart and relist at once on
//! `410 Gone`); the relist is applied as a difference.
//!
//! Prints SKIPPED and passes without `KUBEBUILDER_ASSETS`; in CI (`CI` set) it must run.

mod support;

use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use serde::de::DeserializeOwned;
use support::dns::{addresses, ask, rcode};
use support::envtest::ControlPlane;
use support::objects::*;
use support::server::{BinaryServer, http_get};
use support::watchdog::Watchdog;

const NS: &str = "default";
const WEB: &[(&str, u16, &str)] = &[("web", 80, "TCP")];

fn web(i: usize) -> String {
    format!("web-{i}.nginx.{NS}.svc.cluster.local.")
}

/// The Service `nginx`'s one slice, written by the test (not by the EndpointSlice controller:
/// the Service has no selector).
fn slice(web1: &str) -> serde_json::Value {
    let eps = [Ep::new("10.0.0.1").hostname("web-0"), Ep::new(web1).hostname("web-1")];
    with_labels(mk_slice(NS, "nginx-abc", "nginx", "IPv4", WEB, &eps), &[(MANAGED_BY_LABEL, "test")])
}

/// Creates or updates `obj` by server-side apply.
async fn apply<K>(api: &Api<K>, obj: serde_json::Value)
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    api.patch(&name, &PatchParams::apply("headless-dns-test").force(), &Patch::Apply(&obj))
        .await
        .unwrap_or_else(|e| panic!("applying {name}: {e}"));
}

/// Polls until `name` answers exactly `want`; how long that took.
async fn served_after(dns: std::net::SocketAddr, name: &str, want: &str) -> Duration {
    let started = Instant::now();
    loop {
        let (rc, got) = tokio::task::spawn_blocking({
            let name = name.to_string();
            move || {
                let resp = ask(dns, &name, RecordType::A);
                (rcode(&resp), addresses(&resp))
            }
        })
        .await
        .unwrap();
        if rc == ResponseCode::NoError && got == [want] {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{name} never answered {want}: {rc:?} {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn relists(metrics: &str, kind: &str) -> u64 {
    let key = format!("headless_dns_kubernetes_relists_total{{kind=\"{kind}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_restarts_lose_nothing_and_a_change_after_is_served_at_once() {
    let Some(mut cp) = ControlPlane::start("api-restart").await else { return };
    let client = cp.client().await;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    apply(&services, mk_headless_service(NS, "nginx", WEB)).await;
    apply(&services, mk_service(NS, "api", "10.96.100.50", &[("http", 80, "TCP")])).await;
    apply(&slices, slice("10.0.0.2")).await;

    let server = BinaryServer::kube(cp.kubeconfig(), &[]);
    let dns = server.addr;
    served_after(dns, &web(1), "10.0.0.2").await;
    let http = server.http_addr();
    let dog = Watchdog::start(dns, vec![web(0), format!("api.{NS}.svc.cluster.local.")]);

    // Other objects change all the time in a cluster: the watchers' resourceVersions fall behind
    // etcd's revision, so the restarted API server answers their resumed watches 410 Gone.
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let mut bump = 0;
    let mut write_elsewhere = async || {
        bump += 1;
        let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "elsewhere", "namespace": NS}, "data": {"n": bump.to_string()}});
        apply(&configmaps, cm).await;
    };

    let mut ip = 2;
    for outage in [Duration::from_secs(2), Duration::from_secs(30)] {
        let before = relists(&http_get(http, "/metrics").1, "EndpointSlice");
        write_elsewhere().await;
        cp.stop_apiserver().await;
        tokio::time::sleep(outage).await;
        cp.start_apiserver().await;
        ip += 1;
        let want = format!("10.0.0.{ip}");
        apply(&slices, slice(&want)).await;
        let took = served_after(dns, &web(1), &want).await;
        eprintln!("after a {outage:?} outage: a change served {took:?} after it was applied");
        // The promise is about a second; this bound is for a loaded CI machine (the client
        // library's default backoff took 7 s after a 5-s outage and 78 s after a 45-s one).
        assert!(took < Duration::from_secs(5), "a change after a {outage:?} outage was served after {took:?}");
        // Usually 410 Gone and a relist; but the resumed watch may also be accepted (the
        // watcher's resourceVersion had caught up, by a bookmark for instance): a full run under
        // load saw no relist once. The relist path is asserted after the compaction below.
        let after = relists(&http_get(http, "/metrics").1, "EndpointSlice");
        eprintln!("relists of EndpointSlices across the {outage:?} outage: {before} → {after}");
    }

    // etcd compacted at its current revision, then a restart: the watchers' versions are gone
    // for good, and the relist is applied as a difference (the watchdog sees no flap).
    let before = relists(&http_get(http, "/metrics").1, "EndpointSlice");
    write_elsewhere().await;
    cp.compact_etcd().await;
    cp.stop_apiserver().await;
    cp.start_apiserver().await;
    ip += 1;
    let want = format!("10.0.0.{ip}");
    apply(&slices, slice(&want)).await;
    served_after(dns, &web(1), &want).await;
    let after = relists(&http_get(http, "/metrics").1, "EndpointSlice");
    assert!(after > before, "the watch relisted after the compaction ({before} → {after})");

    let asked = tokio::task::spawn_blocking(move || dog.finish()).await.unwrap();
    assert!(asked > 100, "the watchdog asked {asked} times");
    let warnings = server.drain_logs().iter().filter(|l| l.contains("watches failing")).count();
    assert!((1..=3).contains(&warnings), "one warning per outage, {warnings} for three");
}
