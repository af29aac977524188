//! The manifests and the server against a real control plane (etcd, kube-apiserver,
//! kube-controller-manager 1.28 from `$KUBEBUILDER_ASSETS`, `tests/support/envtest.rs`):
//! - the RBAC of `deploy/rbac.yaml` is enough to serve and no more, proven with a real token;
//! - in the image, with the ServiceAccount mounted as a kubelet mounts it, the server finds the API
//!   server with no kubeconfig;
//! - every object in `deploy/*.yaml` is accepted by the API server (server-side dry run).
//!
//! Each test starts its own control plane (about 5 s). Without `KUBEBUILDER_ASSETS` (or podman,
//! for the image) they print SKIPPED and pass, unless `CI` is set.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use support::dns::{addresses, ask, rcode, require_tool};
use support::envtest::{ControlPlane, Options, apply_value, client_from_kubeconfig};
use support::image::{Container, DeploymentContainer, Image, free_port};
use support::objects::mk_service;
use support::server::{BinaryServer, try_http_get};

/// The Service every test serves: `api.default.svc.cluster.local` → 10.96.0.50.
const API_NAME: &str = "api.default.svc.cluster.local.";
const API_IP: &str = "10.96.0.50";

fn manifest(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(name)).unwrap()
}

/// Applies `deploy/rbac.yaml` and creates the Service `default/api`.
async fn install_rbac_and_service(plane: &ControlPlane) {
    plane.apply_yaml(&manifest("rbac.yaml"), false).await.expect("rbac.yaml applies");
    let service = mk_service("default", "api", API_IP, &[("http", 80, "TCP")]);
    apply_value(&plane.client().await, service, false).await.expect("create service");
}

/// Polls `/readyz` until it says 200.
fn wait_ready(http: SocketAddr, logs: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(try_http_get(http, "/readyz"), Ok((200, _))) {
        assert!(Instant::now() < deadline, "/readyz never said 200: {}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_serves_api(dns: SocketAddr) {
    let resp = ask(dns, API_NAME, RecordType::A);
    assert_eq!((rcode(&resp), addresses(&resp)), (ResponseCode::NoError, vec![API_IP.to_string()]));
}

/// Whether the client's user may do `verb` on `resource` (SelfSubjectAccessReview).
async fn allowed(client: &kube::Client, verb: &str, group: &str, resource: &str) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: Some("kube-system".into()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("self subject access review");
    answer.status.expect("a review status").allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_grants_enough_to_serve_and_nothing_more() {
    let Some(plane) = ControlPlane::start("rbac").await else { return };
    install_rbac_and_service(&plane).await;
    // Only the ServiceAccount's token (TokenRequest, as the kubelet mounts it).
    let kubeconfig = plane.service_account_kubeconfig("kube-system", "headless-dns").await;

    // The server with only the ServiceAccount's token: it lists and watches all it needs.
    let server = BinaryServer::kube(&kubeconfig, &[]);
    let http = server.http_addr();
    wait_ready(http, || server.drain_logs().join("\n"));
    assert_serves_api(server.addr);
    assert!(
        !server.drain_logs().iter().any(|l| l.contains("403") || l.contains("forbidden")),
        "no request of the server was forbidden"
    );

    // And nothing more: no write verb on anything.
    let sa = client_from_kubeconfig(&kubeconfig).await;
    for (group, resource) in
        [("", "services"), ("", "namespaces"), ("", "pods"), ("discovery.k8s.io", "endpointslices")]
    {
        for verb in ["get", "list", "watch"] {
            assert!(allowed(&sa, verb, group, resource).await, "{verb} {resource} is granted");
        }
    }
    let everything = [
        ("", "services"),
        ("", "namespaces"),
        ("", "pods"),
        ("discovery.k8s.io", "endpointslices"),
        ("", "endpoints"),
        ("", "configmaps"),
        ("", "secrets"),
        ("", "serviceaccounts"),
        ("apps", "deployments"),
        ("rbac.authorization.k8s.io", "clusterroles"),
        ("*", "*"),
    ];
    for (group, resource) in everything {
        for verb in ["create", "update", "patch", "delete", "deletecollection"] {
            assert!(!allowed(&sa, verb, group, resource).await, "{verb} {group}/{resource} is denied");
        }
    }
    // Nor read what deploy/README.md says it does not: Secrets, ConfigMaps, Nodes, Endpoints.
    for resource in ["secrets", "configmaps", "nodes", "endpoints"] {
        for verb in ["get", "list", "watch"] {
            assert!(!allowed(&sa, verb, "", resource).await, "{verb} {resource} is denied");
        }
    }
    // The API server agrees when asked for real.
    let denied =
        Api::<ConfigMap>::namespaced(sa, "kube-system").create(&PostParams::default(), &ConfigMap::default()).await;
    assert!(matches!(denied, Err(kube::Error::Api(ref s)) if s.code == 403), "{denied:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_finds_the_api_server_in_cluster() {
    if !require_tool("podman") {
        return;
    }
    let Some(plane) = ControlPlane::start("in-cluster").await else { return };
    install_rbac_and_service(&plane).await;
    let token = plane.service_account_token("kube-system", "headless-dns").await;
    // What the kubelet mounts for a Pod's ServiceAccount (readable by the container's user).
    let secrets = plane.dir().join("serviceaccount");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("token"), &token).unwrap();
    std::fs::copy(plane.ca_file(), secrets.join("ca.crt")).unwrap();
    std::fs::write(secrets.join("namespace"), "kube-system").unwrap();
    make_world_readable(&secrets);

    let image = Image::build("in-cluster");
    let deployment = DeploymentContainer::load();
    // The API server listens on the host's loopback only, so the container shares the host's
    // network: it cannot then listen on port 53 (the host's) nor set the Pod's sysctl, which are
    // proven by tests/image.rs; here it listens on free loopback ports.
    let (dns_port, http_port) = (free_port(), free_port());
    let mut flags: Vec<String> = deployment.flags.iter().filter(|f| !f.starts_with("--sysctl")).cloned().collect();
    flags.extend([
        "--network=host".to_string(),
        format!("--volume={}:/var/run/secrets/kubernetes.io/serviceaccount:ro", secrets.display()),
        "--env=KUBERNETES_SERVICE_HOST=127.0.0.1".to_string(),
        format!("--env=KUBERNETES_SERVICE_PORT={}", plane.apiserver_port()),
    ]);
    let mut args = deployment.args_with("--listen", &format!("127.0.0.1:{dns_port}"));
    let at = args.iter().position(|a| a == "--http").unwrap();
    args[at + 1] = format!("127.0.0.1:{http_port}");
    args.extend(["--upstream".into(), "none".into()]);
    assert!(!args.iter().any(|a| a.contains("kubeconfig")), "no kubeconfig: {args:?}");
    let container = Container::run("headless-dns-in-cluster", &flags, &image, &args);

    wait_ready(SocketAddr::from(([127, 0, 0, 1], http_port)), || container.logs());
    assert_serves_api(SocketAddr::from(([127, 0, 0, 1], dns_port)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_are_accepted_by_the_api_server() {
    let Some(plane) = ControlPlane::start("manifests").await else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "rbac, deployment, service: {files:?}");
    let mut kinds = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for doc in serde_saphyr::read::<_, serde_json::Value>(&mut text.as_bytes()) {
            let mut value = doc.unwrap();
            skip_fields_newer_than_1_28(&mut value);
            let client = plane.client().await;
            // Strict field validation: an unknown or misplaced field is an error, not a warning.
            let applied = apply_value(&client, value, true)
                .await
                .unwrap_or_else(|e| panic!("{} is rejected: {e}", file.display()));
            kinds.push(applied.types.map(|t| t.kind).unwrap_or_default());
        }
    }
    kinds.sort();
    let want = ["ClusterRole", "ClusterRoleBinding", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"];
    assert_eq!(kinds, want);
}

/// The control plane is Kubernetes 1.28; the manifests target 1.33. Fields added since are
/// removed here, each with the version that added it:
/// - `lifecycle.preStop.sleep` (the sleep action: 1.29 alpha, 1.30 beta and on by default); a
///   `lifecycle` left with no handler goes with it.
fn skip_fields_newer_than_1_28(object: &mut serde_json::Value) {
    if object["kind"] != "Deployment" {
        return;
    }
    for container in object["spec"]["template"]["spec"]["containers"].as_array_mut().into_iter().flatten() {
        let Some(lifecycle) = container.get_mut("lifecycle").and_then(|l| l.as_object_mut()) else { continue };
        if let Some(pre_stop) = lifecycle.get_mut("preStop").and_then(|p| p.as_object_mut()) {
            pre_stop.remove("sleep");
            if pre_stop.is_empty() {
                lifecycle.remove("preStop");
            }
        }
        if lifecycle.is_empty() {
            container.as_object_mut().unwrap().remove("lifecycle");
        }
    }
}

fn make_world_readable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        std::fs::set_permissions(entry.unwrap().path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// The harness's own promises, which the tests of API server outages build on. With the watch
/// cache off, a compaction sends 410 Gone to a watch from an older resourceVersion; a restarted
/// API server still has etcd's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_compacts_etcd_and_restarts_the_api_server() {
    let options = Options { watch_cache: false };
    let Some(mut plane) = ControlPlane::start_with("harness", options).await else { return };
    let maps = Api::<ConfigMap>::namespaced(plane.client().await, "default");
    let map = |name: &str| -> ConfigMap {
        serde_json::from_value(serde_json::json!({ "metadata": { "name": name } })).unwrap()
    };
    let first = maps.create(&PostParams::default(), &map("cm-0")).await.unwrap();
    let old_version = first.metadata.resource_version.unwrap();
    // Two more writes: a watch from a version starts after it, so compacting at the revision
    // right after it would still let it start.
    maps.create(&PostParams::default(), &map("cm-1")).await.unwrap();
    maps.create(&PostParams::default(), &map("cm-2")).await.unwrap();

    plane.compact_etcd().await;
    let gone = match maps.watch(&kube::api::WatchParams::default(), &old_version).await {
        Err(kube::Error::Api(status)) => status.code,
        Ok(stream) => {
            use futures::StreamExt;
            let mut stream = Box::pin(stream);
            match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
                Ok(Some(Ok(kube::api::WatchEvent::Error(e)))) => e.code,
                other => panic!("a watch from {old_version} after compaction: {other:?}"),
            }
        }
        Err(e) => panic!("watch: {e}"),
    };
    assert_eq!(gone, 410, "410 Gone from a compacted resourceVersion");

    plane.stop_apiserver().await;
    assert!(maps.get("cm-0").await.is_err(), "the API server is down");
    plane.start_apiserver().await;
    maps.get("cm-1").await.expect("etcd kept the data");
}
