//! StatefulSet churn as Kubernetes makes it: a real control plane (`tests/support/envtest.rs`)
//! whose StatefulSet and EndpointSlice controllers create the Pods and the slices of StatefulSet
//! `web` (Parallel) behind headless Service `nginx`; the test stands in for the scheduler and the
//! kubelet (binds each Pod, sets it Running and Ready with an address). The real binary watches
//! the API server and is asked over UDP, step by step, what the spec says each name must answer
//! (<https://github.com/kubernetes/dns/blob/master/docs/specification.md> §2.4.1: A records for
//! the *ready* endpoints; none ready → NXDOMAIN), while a concurrent querier proves the names that
//! do not change never fail. Prints SKIPPED without `KUBEBUILDER_ASSETS` unless `CI` is set.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams};
use support::dns::{addresses, ask, rcode};
use support::envtest::{ControlPlane, apply_value};
use support::objects::mk_headless_service;
use support::server::BinaryServer;

const NS: &str = "default";
const NODE: &str = "node-1";

fn fqdn(pod: &str) -> String {
    format!("{pod}.nginx.{NS}.svc.cluster.local.")
}

/// The address of Pod `web-<ordinal>` in its `generation`-th life.
fn pod_ip(ordinal: u8, generation: u8) -> IpAddr {
    IpAddr::from([10, 244, generation, 10 + ordinal])
}

/// (rcode, sorted addresses) of an A query.
fn a(dns: SocketAddr, name: &str) -> (ResponseCode, Vec<String>) {
    let resp = ask(dns, name, RecordType::A);
    let mut got = addresses(&resp);
    got.sort();
    (rcode(&resp), got)
}

/// Waits (up to 15 s) until `name` answers exactly `want` (NXDOMAIN when empty).
async fn expect(dns: SocketAddr, name: &str, want: &[IpAddr]) {
    let want_rcode = if want.is_empty() { ResponseCode::NXDomain } else { ResponseCode::NoError };
    let mut want: Vec<String> = want.iter().map(IpAddr::to_string).collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = a(dns, name);
        if got == (want_rcode, want.clone()) {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: want {want_rcode:?} {want:?}, got {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks each name in a loop from a thread of its own; every answer must be its address.
struct Querier {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u64, Vec<String>)>,
}

impl Querier {
    fn start(dns: SocketAddr, names: Vec<(String, IpAddr)>) -> Querier {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (mut queries, mut failures) = (0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                for (name, ip) in &names {
                    let got = a(dns, name);
                    queries += 1;
                    if got != (ResponseCode::NoError, vec![ip.to_string()]) {
                        failures.push(format!("{name}: {got:?}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (queries, failures)
        });
        Querier { stop, thread }
    }

    /// Stops it and asserts that no answer was wrong.
    fn finish(self, phase: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let (queries, failures) = self.thread.join().expect("querier thread");
        assert!(failures.is_empty(), "{phase}: {} of {queries} answers wrong: {:?}", failures.len(), failures);
        assert!(queries > 10, "{phase}: only {queries} queries");
        eprintln!("{phase}: {queries} queries, all answered");
    }
}

/// What the EndpointSlices of `nginx` say about one Pod's endpoint.
#[derive(Debug, Clone, PartialEq)]
enum Endpoint {
    Absent,
    Listed { ip: IpAddr, ready: bool },
}

async fn endpoint_of(slices: &Api<EndpointSlice>, pod: &str) -> Endpoint {
    let lp = ListParams::default().labels("kubernetes.io/service-name=nginx");
    let list = slices.list(&lp).await.expect("list slices");
    for slice in list.items {
        for ep in slice.endpoints {
            if ep.target_ref.as_ref().and_then(|r| r.name.as_deref()) == Some(pod) {
                let ip = ep.addresses[0].parse().expect("an address");
                let ready = ep.conditions.and_then(|c| c.ready).unwrap_or(true);
                return Endpoint::Listed { ip, ready };
            }
        }
    }
    Endpoint::Absent
}

/// Sets `web`'s replicas.
async fn scale(sets: &Api<StatefulSet>, replicas: i32) {
    let patch = serde_json::json!({ "spec": { "replicas": replicas } });
    sets.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("scale web");
}

/// Stands in for the kubelet finishing the termination of Pods the StatefulSet controller
/// deleted (gracefully: they stay Terminating with no kubelet): until `gone` are all gone.
async fn finish_terminations(plane: &ControlPlane, pods: &Api<Pod>, gone: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = pods.list(&ListParams::default()).await.expect("list pods");
        let left: Vec<Pod> =
            list.items.into_iter().filter(|p| gone.contains(&p.metadata.name.as_deref().unwrap_or(""))).collect();
        if left.is_empty() {
            return;
        }
        for pod in &left {
            if pod.metadata.deletion_timestamp.is_some() {
                plane.force_delete_pod(NS, pod.metadata.name.as_deref().unwrap()).await;
            }
        }
        assert!(
            Instant::now() < deadline,
            "pods not deleted: {:?}",
            left.iter().map(|p| &p.metadata.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_churn_as_kubernetes_makes_it() {
    let Some(plane) = ControlPlane::start("churn").await else { return };
    let client = plane.client().await;
    let (pods, slices, sets) = (
        Api::<Pod>::namespaced(client.clone(), NS),
        Api::<EndpointSlice>::namespaced(client.clone(), NS),
        Api::<StatefulSet>::namespaced(client.clone(), NS),
    );
    plane.create_node(NODE).await;
    apply_value(&client, mk_headless_service(NS, "nginx", &[("web", 80, "TCP")]), false).await.expect("service");
    let web = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": { "name": "web", "namespace": NS },
        "spec": {
            "serviceName": "nginx", "replicas": 3, "podManagementPolicy": "Parallel",
            "selector": { "matchLabels": { "app": "nginx" } },
            "template": {
                "metadata": { "labels": { "app": "nginx" } },
                "spec": { "containers": [{ "name": "nginx", "image": "nginx:1.27",
                                           "ports": [{ "name": "web", "containerPort": 80 }] }] },
            },
        },
    });
    apply_value(&client, web, false).await.expect("statefulset");

    // The server runs as deployed: as the ServiceAccount of deploy/rbac.yaml, with its token.
    let rbac = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac.yaml")).unwrap();
    plane.apply_yaml(&rbac, false).await.expect("rbac.yaml applies");
    let kubeconfig = plane.service_account_kubeconfig("kube-system", "headless-dns").await;
    let server = BinaryServer::kube(&kubeconfig, &[]);
    let dns = server.addr;

    for i in 0..3 {
        plane.run_pod(NS, &format!("web-{i}"), NODE, pod_ip(i, 1)).await;
    }
    for i in 0..3 {
        expect(dns, &fqdn(&format!("web-{i}")), &[pod_ip(i, 1)]).await;
    }
    expect(dns, &format!("nginx.{NS}.svc.cluster.local."), &[pod_ip(0, 1), pod_ip(1, 1), pod_ip(2, 1)]).await;

    // --- web-1 is deleted (--grace-period=0 --force) and recreated with a new address. ---
    let querier = Querier::start(dns, vec![(fqdn("web-0"), pod_ip(0, 1)), (fqdn("web-2"), pod_ip(2, 1))]);
    let web_1 = fqdn("web-1");
    let (old, new) = (pod_ip(1, 1), pod_ip(1, 2));
    let old_uid = pods.get("web-1").await.unwrap().metadata.uid;
    plane.force_delete_pod(NS, "web-1").await;

    // The old address while the slice lists it ready; NXDOMAIN only once it does not. The server
    // can lag the API, never lead it: read the slice after each answer.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = a(dns, &web_1);
        let slice = endpoint_of(&slices, "web-1").await;
        if slice == (Endpoint::Listed { ip: old, ready: true }) {
            assert_eq!(answer, (ResponseCode::NoError, vec![old.to_string()]), "the slice lists {old} ready");
        }
        assert!(
            answer == (ResponseCode::NoError, vec![old.to_string()]) || answer == (ResponseCode::NXDomain, vec![]),
            "web-1 after its deletion: {answer:?}"
        );
        if answer.0 == ResponseCode::NXDomain {
            break;
        }
        assert!(Instant::now() < deadline, "web-1 still answers {answer:?}; slice: {slice:?}");
    }

    // The StatefulSet controller recreates web-1 (a new Pod, unbound, no address). It is
    // scheduled and started with a new address, not ready yet: still NXDOMAIN.
    let uid = |p: Option<Pod>| p.and_then(|p| p.metadata.uid);
    let deadline = Instant::now() + Duration::from_secs(15);
    while matches!(uid(pods.get_opt("web-1").await.unwrap()), ref u if u.is_none() || *u == old_uid) {
        assert_eq!(a(dns, &web_1), (ResponseCode::NXDomain, vec![]), "web-1 has no Pod");
        assert!(Instant::now() < deadline, "web-1 was not recreated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    plane.bind_pod(NS, "web-1", NODE).await;
    plane.set_pod_status(NS, "web-1", new, false).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while endpoint_of(&slices, "web-1").await != (Endpoint::Listed { ip: new, ready: false }) {
        assert_eq!(a(dns, &web_1), (ResponseCode::NXDomain, vec![]), "web-1 has no ready address");
        assert!(Instant::now() < deadline, "the slice never listed {new} not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..20 {
        assert_eq!(a(dns, &web_1), (ResponseCode::NXDomain, vec![]), "{new} is listed, not ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Ready: the new address as soon as the slice says so.
    plane.set_pod_status(NS, "web-1", new, true).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while endpoint_of(&slices, "web-1").await != (Endpoint::Listed { ip: new, ready: true }) {
        let answer = a(dns, &web_1);
        assert!(answer.1.iter().all(|ip| *ip == new.to_string()), "never the old address again: {answer:?}");
        assert!(Instant::now() < deadline, "the slice never listed {new} ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let slice_ready = Instant::now();
    expect(dns, &web_1, &[new]).await;
    let lag = slice_ready.elapsed();
    eprintln!("web-1's new address answered {lag:?} after the slice was seen ready");
    assert!(lag < Duration::from_secs(2), "the new address took {lag:?} after the slice said ready");

    // --- Scale to 5: web-3 and web-4 join. ---
    scale(&sets, 5).await;
    for i in 3..5 {
        plane.run_pod(NS, &format!("web-{i}"), NODE, pod_ip(i, 1)).await;
    }
    for i in 3..5 {
        expect(dns, &fqdn(&format!("web-{i}")), &[pod_ip(i, 1)]).await;
    }
    let all = [pod_ip(0, 1), new, pod_ip(2, 1), pod_ip(3, 1), pod_ip(4, 1)];
    expect(dns, &format!("nginx.{NS}.svc.cluster.local."), &all).await;
    querier.finish("web-1 recreated, scaled to 5 (web-0, web-2 asked)");

    // --- Scale to 2: web-4, web-3 and web-2 terminate, then are removed. ---
    let querier = Querier::start(dns, vec![(fqdn("web-0"), pod_ip(0, 1)), (fqdn("web-1"), new)]);
    scale(&sets, 2).await;
    finish_terminations(&plane, &pods, &["web-2", "web-3", "web-4"]).await;
    for i in 2..5 {
        expect(dns, &fqdn(&format!("web-{i}")), &[]).await;
    }
    expect(dns, &format!("nginx.{NS}.svc.cluster.local."), &[pod_ip(0, 1), new]).await;
    // Gone for good: the controller does not recreate them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(pods.get_opt("web-2").await.unwrap().is_none(), "web-2 stays deleted");
    querier.finish("scaled to 2 (web-0, web-1 asked)");
}
