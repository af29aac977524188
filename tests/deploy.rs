//! The manifests in `deploy/` (`kubectl apply -f deploy/`): every document is a kind we expect,
//! deserializes into its k8s-openapi type (Kubernetes 1.33) and survives a round trip through that
//! type unchanged — k8s-openapi ignores unknown fields, so the round trip is what catches a
//! misspelled or misplaced field — and the settings the deployment relies on hold: read-only RBAC
//! on exactly the four watched resources, a locked-down container, probes on the HTTP endpoints,
//! DNS over UDP and TCP, and a command line the binary accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::Parser;
use headless_dns::config::{Cli, Command, SourceConfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSecurityContext, PodSpec, SecurityContext, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::{Metadata, NamespaceResourceScope, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

/// The files `kubectl apply -f deploy/` applies, and nothing else may be.
const MANIFESTS: [&str; 3] = ["deployment.yaml", "rbac.yaml", "service.yaml"];
const NAMESPACE: &str = "kube-system";
const NAME: &str = "headless-dns";
const APP_LABEL: &str = "app.kubernetes.io/name";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// What `kubectl apply -f DIR` picks up from a directory (not recursive).
fn kubectl_would_apply(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ["yaml", "yml", "json"].contains(&e.to_ascii_lowercase().as_str()))
}

/// One object's place in the manifests, its kind and metadata, for the checks common to all.
struct Placed {
    at: String,
    kind: &'static str,
    namespaced: bool,
    metadata: ObjectMeta,
}

#[derive(Default)]
struct Manifests {
    all: Vec<Placed>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    disruption_budgets: Vec<PodDisruptionBudget>,
}

impl Manifests {
    /// Reads every document of every file kubectl would apply from `deploy/`. Panics on a YAML
    /// error, an unknown kind, a document that does not deserialize into its type, or one that
    /// does not survive the round trip through it.
    fn load() -> Manifests {
        let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
            .expect("deploy/ exists")
            .map(|entry| entry.expect("readable deploy/").path())
            .filter(|path| kubectl_would_apply(path))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no manifests in deploy/");
        let mut m = Manifests::default();
        for path in files {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            // Empty documents (a trailing `---`) are skipped, as kubectl skips them.
            for (i, document) in serde_saphyr::read::<_, serde_json::Value>(&mut text.as_bytes()).enumerate() {
                let at = format!("deploy/{file}, document {}", i + 1);
                let value = document.unwrap_or_else(|e| panic!("{at}: not YAML: {e}"));
                let kind =
                    value.get("kind").and_then(|k| k.as_str()).unwrap_or_else(|| panic!("{at}: no `kind`")).to_owned();
                match kind.as_str() {
                    "ServiceAccount" => m.service_accounts.push(typed(&mut m.all, &at, &value)),
                    "ClusterRole" => m.cluster_roles.push(typed(&mut m.all, &at, &value)),
                    "ClusterRoleBinding" => m.cluster_role_bindings.push(typed(&mut m.all, &at, &value)),
                    "Deployment" => m.deployments.push(typed(&mut m.all, &at, &value)),
                    "Service" => m.services.push(typed(&mut m.all, &at, &value)),
                    "PodDisruptionBudget" => m.disruption_budgets.push(typed(&mut m.all, &at, &value)),
                    other => panic!("{at}: unexpected kind {other:?} (add it to tests/deploy.rs)"),
                }
            }
        }
        m
    }

    fn deployment(&self) -> &Deployment {
        one(&self.deployments, "Deployment")
    }

    fn pod_spec(&self) -> &PodSpec {
        self.deployment()
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("the Deployment has a Pod template spec")
    }

    fn container(&self) -> &Container {
        let pod = self.pod_spec();
        assert_eq!(pod.containers.len(), 1, "one container");
        assert!(pod.init_containers.is_none(), "no init containers");
        &pod.containers[0]
    }
}

/// Deserializes one document as `T`, checks the round trip, and records where it was.
fn typed<T>(all: &mut Vec<Placed>, at: &str, value: &Json) -> T
where
    T: Resource + Metadata<Ty = ObjectMeta> + DeserializeOwned + Serialize + 'static,
{
    let object = round_trip::<T>(value)
        .unwrap_or_else(|problems| panic!("{at}: {} {}:\n  {}", T::API_VERSION, T::KIND, problems.join("\n  ")));
    all.push(Placed {
        at: at.to_owned(),
        kind: T::KIND,
        namespaced: std::any::TypeId::of::<T::Scope>() == std::any::TypeId::of::<NamespaceResourceScope>(),
        metadata: object.metadata().clone(),
    });
    object
}

/// Deserializes `value` into `T` (which checks `apiVersion` and `kind` too), serializes it back
/// and compares: every field of the document must come back unchanged, and nothing may be added.
fn round_trip<T: DeserializeOwned + Serialize>(original: &Json) -> Result<T, Vec<String>> {
    let object = T::deserialize(original).map_err(|e| vec![e.to_string()])?;
    let back = serde_json::to_value(&object).expect("k8s-openapi objects serialize");
    let mut problems = Vec::new();
    diff("", original, &back, &mut problems);
    if problems.is_empty() {
        Ok(object)
    } else {
        problems.insert(0, "changed by a round trip through its type (a misspelled or misplaced field?):".into());
        Err(problems)
    }
}

fn diff(path: &str, original: &Json, back: &Json, out: &mut Vec<String>) {
    match (original, back) {
        (Json::Object(a), Json::Object(b)) => {
            for (key, va) in a {
                let p = format!("{path}.{key}");
                match b.get(key) {
                    Some(vb) => diff(&p, va, vb, out),
                    None => out.push(format!("{p}: dropped (no such field here)")),
                }
            }
            for (key, vb) in b {
                if !a.contains_key(key) {
                    out.push(format!("{path}.{key}: added as {vb}"));
                }
            }
        }
        (Json::Array(a), Json::Array(b)) if a.len() == b.len() => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        (a, b) if a == b => {}
        (Json::Number(a), Json::String(b)) if a.to_string() == *b => {
            out.push(format!("{path}: the number {a} came back as the string {b:?} (a quantity: quote it)"))
        }
        (a, b) => out.push(format!("{path}: {a} came back as {b}")),
    }
}

fn one<'a, T>(items: &'a [T], kind: &str) -> &'a T {
    assert_eq!(items.len(), 1, "exactly one {kind} in deploy/");
    &items[0]
}

fn strings(items: &Option<Vec<String>>) -> BTreeSet<&str> {
    items.iter().flatten().map(String::as_str).collect()
}

/// The container port `port` (a number or a port name) refers to, checked to be declared.
fn container_port(container: &Container, port: &IntOrString, protocol: &str) -> i32 {
    let ports = container.ports.as_deref().unwrap_or_default();
    let found = ports.iter().find(|p| {
        let same_port = match port {
            IntOrString::Int(n) => p.container_port == *n,
            IntOrString::String(name) => p.name.as_deref() == Some(name.as_str()),
        };
        same_port && p.protocol.as_deref().unwrap_or("TCP") == protocol
    });
    found.unwrap_or_else(|| panic!("the container declares no {protocol} port {port:?}")).container_port
}

#[test]
fn deploy_holds_only_the_manifests_kubectl_applies() {
    let found: BTreeSet<String> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| kubectl_would_apply(path))
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> = MANIFESTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        found, expected,
        "`kubectl apply -f deploy/` applies every *.yaml, *.yml and *.json directly in deploy/: \
         keep anything else (docs, examples) out of it or in a subdirectory"
    );
}

#[test]
fn every_document_is_a_known_kind_that_survives_a_round_trip() {
    let m = Manifests::load();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for placed in &m.all {
        *kinds.entry(placed.kind).or_default() += 1;
    }
    let expected: BTreeMap<&str, usize> =
        ["ClusterRole", "ClusterRoleBinding", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"]
            .into_iter()
            .map(|kind| (kind, 1))
            .collect();
    assert_eq!(kinds, expected);
}

#[test]
fn the_round_trip_catches_a_misspelled_field() {
    let typo: serde_json::Value = serde_saphyr::from_str(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n\
         spec:\n  replica: 2\n  selector: {}\n  template: {}\n",
    )
    .unwrap();
    let problems = round_trip::<Deployment>(&typo).expect_err("`replica` is not a field");
    assert!(problems.iter().any(|p| p.starts_with(".spec.replica: dropped")), "{problems:?}");
    let port_as_string: serde_json::Value =
        serde_saphyr::from_str("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: \"53\"}]}\n")
            .unwrap();
    assert!(round_trip::<Service>(&port_as_string).is_err(), "a port is a number");
    let wrong_version: serde_json::Value =
        serde_saphyr::from_str("apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata: {name: x}\n").unwrap();
    assert!(round_trip::<PodDisruptionBudget>(&wrong_version).is_err());
}

#[test]
fn every_object_is_labelled_and_namespaced_in_kube_system() {
    let m = Manifests::load();
    for placed in &m.all {
        let meta = &placed.metadata;
        let at = &placed.at;
        assert!(meta.name.is_some(), "{at}: no name");
        let label = meta.labels.as_ref().and_then(|l| l.get(APP_LABEL));
        assert_eq!(label.map(String::as_str), Some(NAME), "{at}: {APP_LABEL}");
        if placed.namespaced {
            assert_eq!(meta.namespace.as_deref(), Some(NAMESPACE), "{at}: namespace");
        } else {
            assert_eq!(meta.namespace, None, "{at}: a cluster-scoped object has no namespace");
        }
    }
}

#[test]
fn the_cluster_role_only_reads_the_four_watched_resources() {
    let m = Manifests::load();
    let role = one(&m.cluster_roles, "ClusterRole");
    assert_eq!(role.metadata.name.as_deref(), Some("system:headless-dns"));
    assert!(role.aggregation_rule.is_none(), "an aggregated role grants what others add");
    let read = BTreeSet::from(["get", "list", "watch"]);
    let mut granted: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for rule in role.rules.iter().flatten() {
        assert!(rule.non_resource_urls.is_none(), "{rule:?}: non-resource URLs");
        assert!(rule.resource_names.is_none(), "{rule:?}: resource names");
        let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
        assert!(verbs.is_subset(&read), "{rule:?}: verbs beyond get/list/watch");
        let groups = strings(&rule.api_groups);
        let resources = strings(&rule.resources);
        assert!(!groups.is_empty() && !resources.is_empty(), "{rule:?}");
        for group in &groups {
            for resource in &resources {
                granted.entry((group, resource)).or_default().extend(&verbs);
            }
        }
    }
    let expected: BTreeMap<(&str, &str), BTreeSet<&str>> =
        [("", "services"), ("", "pods"), ("", "namespaces"), ("discovery.k8s.io", "endpointslices")]
            .into_iter()
            .map(|resource| (resource, read.clone()))
            .collect();
    assert_eq!(granted, expected, "exactly get/list/watch on exactly these");
}

#[test]
fn the_deployment_runs_as_the_bound_service_account() {
    let m = Manifests::load();
    let account = m.pod_spec().service_account_name.as_deref().expect("serviceAccountName");
    assert_eq!(account, NAME);
    let sa = one(&m.service_accounts, "ServiceAccount");
    assert_eq!(sa.metadata.name.as_deref(), Some(account));
    assert_eq!(
        m.deployment().metadata.namespace,
        sa.metadata.namespace,
        "the ServiceAccount is in the Deployment's namespace"
    );
    assert_ne!(sa.automount_service_account_token, Some(false), "the token is needed");
    assert_ne!(m.pod_spec().automount_service_account_token, Some(false));

    let binding = one(&m.cluster_role_bindings, "ClusterRoleBinding");
    let role = one(&m.cluster_roles, "ClusterRole");
    assert_eq!(binding.role_ref.api_group, "rbac.authorization.k8s.io");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subjects = binding.subjects.as_deref().unwrap_or_default();
    assert_eq!(subjects.len(), 1, "the binding has one subject: {subjects:?}");
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(subjects[0].name, account);
    assert_eq!(subjects[0].namespace.as_deref(), Some(NAMESPACE));
}

#[test]
fn the_deployment_is_highly_available_and_rolls_without_errors() {
    let m = Manifests::load();
    let spec = m.deployment().spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let strategy = spec.strategy.as_ref().expect("strategy");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let rolling = strategy.rolling_update.as_ref().expect("rollingUpdate");
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));

    let labels = spec.template.metadata.as_ref().and_then(|m| m.labels.as_ref());
    let selector = spec.selector.match_labels.as_ref().expect("matchLabels");
    assert_eq!(selector.get(APP_LABEL).map(String::as_str), Some(NAME));
    assert_eq!(labels.and_then(|l| l.get(APP_LABEL)), selector.get(APP_LABEL));

    let pod = m.pod_spec();
    assert_eq!(pod.priority_class_name.as_deref(), Some("system-cluster-critical"));
    assert_eq!(pod.dns_policy.as_deref(), Some("Default"), "a DNS server must not resolve through itself");
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    let anti = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())
        .expect("preferred pod anti-affinity");
    assert!(
        anti.iter().any(|term| {
            term.pod_affinity_term.topology_key == "kubernetes.io/hostname"
                && term.pod_affinity_term.label_selector.as_ref().and_then(|s| s.match_labels.as_ref())
                    == Some(selector)
        }),
        "anti-affinity prefers other nodes than its own replicas': {anti:?}"
    );
    assert!(
        pod.affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .is_some_and(|a| a.required_during_scheduling_ignored_during_execution.is_none()),
        "preferred only: a required anti-affinity would block the surge Pod on small clusters"
    );

    let resources = m.container().resources.as_ref().expect("resources");
    let get = |map: &Option<BTreeMap<String, Quantity>>, key: &str| map.as_ref()?.get(key).map(|q| q.0.clone());
    assert_eq!(get(&resources.requests, "cpu").as_deref(), Some("100m"));
    assert_eq!(get(&resources.requests, "memory").as_deref(), Some("64Mi"));
    assert_eq!(get(&resources.limits, "memory").as_deref(), Some("256Mi"));
    assert_eq!(get(&resources.limits, "cpu"), None, "no CPU limit: DNS latency");
}

#[test]
fn the_container_is_locked_down() {
    let m = Manifests::load();
    let pod = m.pod_spec();
    let none = SecurityContext::default();
    let c = m.container().security_context.as_ref().unwrap_or(&none);
    let none_pod = PodSecurityContext::default();
    let p = pod.security_context.as_ref().unwrap_or(&none_pod);
    // The container's setting wins over the Pod's.
    assert_eq!(c.run_as_non_root.or(p.run_as_non_root), Some(true), "runAsNonRoot");
    assert_eq!(c.run_as_user.or(p.run_as_user), Some(65532), "runAsUser");
    assert_eq!(c.run_as_group.or(p.run_as_group), Some(65532), "runAsGroup");
    assert_eq!(c.read_only_root_filesystem, Some(true), "readOnlyRootFilesystem");
    assert_eq!(c.allow_privilege_escalation, Some(false), "allowPrivilegeEscalation");
    assert_ne!(c.privileged, Some(true), "privileged");
    let caps = c.capabilities.as_ref().expect("capabilities");
    assert_eq!(strings(&caps.drop), BTreeSet::from(["ALL"]), "drop ALL");
    assert_eq!(strings(&caps.add), BTreeSet::from(["NET_BIND_SERVICE"]), "add only this");
    let seccomp = c.seccomp_profile.as_ref().or(p.seccomp_profile.as_ref());
    assert_eq!(seccomp.map(|s| s.type_.as_str()), Some("RuntimeDefault"));
    for (what, set) in [("hostNetwork", pod.host_network), ("hostPID", pod.host_pid), ("hostIPC", pod.host_ipc)] {
        assert_ne!(set, Some(true), "{what}");
    }
    assert!(m.container().ports.iter().flatten().all(|p| p.host_port.is_none()), "no host ports");
}

#[test]
fn probes_ask_readyz_and_healthz_on_the_http_port() {
    let m = Manifests::load();
    let container = m.container();
    for (probe, path) in
        [(container.readiness_probe.as_ref(), "/readyz"), (container.liveness_probe.as_ref(), "/healthz")]
    {
        let get = probe.and_then(|p| p.http_get.as_ref()).unwrap_or_else(|| panic!("an httpGet probe on {path}"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(container_port(container, &get.port, "TCP"), 8080, "{path}");
        assert_eq!(get.scheme.as_deref().unwrap_or("HTTP"), "HTTP", "{path}");
    }
}

#[test]
fn the_service_carries_dns_over_udp_and_tcp_to_ready_pods() {
    let m = Manifests::load();
    let service = one(&m.services, "Service");
    let spec = service.spec.as_ref().expect("spec");
    assert_eq!(spec.type_.as_deref().unwrap_or("ClusterIP"), "ClusterIP");
    assert_ne!(spec.cluster_ip.as_deref(), Some("None"), "not headless: one stable address");
    let pod_labels = m
        .deployment()
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let selector = spec.selector.as_ref().expect("selector");
    assert!(!selector.is_empty());
    assert!(
        selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
        "the Service selects the Deployment's Pods: {selector:?} vs {pod_labels:?}"
    );
    assert_ne!(spec.publish_not_ready_addresses, Some(true), "ready Pods only");

    let container = m.container();
    let mut dns = BTreeSet::new();
    for port in spec.ports.iter().flatten() {
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        let target = port.target_port.clone().unwrap_or(IntOrString::Int(port.port));
        let backend = container_port(container, &target, protocol);
        if port.port == 53 {
            assert_eq!(backend, 53, "{port:?}");
            dns.insert(protocol);
        }
    }
    assert_eq!(dns, BTreeSet::from(["TCP", "UDP"]), "port 53 over UDP and TCP");
    let metrics =
        spec.ports.iter().flatten().find(|p| p.name.as_deref() == Some("http-metrics")).expect("an http-metrics port");
    assert_eq!(metrics.port, 8080);

    let pdb = one(&m.disruption_budgets, "PodDisruptionBudget");
    let pdb_spec = pdb.spec.as_ref().expect("spec");
    assert_eq!(pdb_spec.min_available, Some(IntOrString::Int(1)));
    assert_eq!(pdb_spec.max_unavailable, None);
    let pdb_selector =
        pdb_spec.selector.as_ref().and_then(|s| s.match_labels.as_ref()).expect("a matchLabels selector");
    assert!(pdb_selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
}

#[test]
fn the_container_command_line_is_one_the_binary_accepts() {
    let m = Manifests::load();
    let container = m.container();
    let args = container.args.as_deref().expect("args");
    assert!(args.windows(2).any(|w| w[0] == "--source" && w[1] == "kube"), "--source kube: {args:?}");
    let cli = Cli::try_parse_from(std::iter::once("headless-dns").chain(args.iter().map(String::as_str)))
        .unwrap_or_else(|e| panic!("the container's args {args:?} do not parse:\n{e}"));
    #[allow(irrefutable_let_patterns)]
    let Command::Serve(serve) = cli.command else {
        panic!("the container's args are not `serve`: {args:?}");
    };
    let config = serve.to_config().unwrap_or_else(|e| panic!("the container's args {args:?} are rejected: {e}"));
    assert!(matches!(config.source, SourceConfig::Kube(_)));
    let http = config.http.expect("the HTTP endpoints are on");
    assert_eq!(http.port() as i32, container_port(container, &IntOrString::String("http".into()), "TCP"));
    assert!(http.ip().is_unspecified(), "probes reach the Pod IP");
    assert!(!config.listen.is_empty());
    for addr in &config.listen {
        assert!(addr.ip().is_unspecified(), "the Service reaches the Pod IP: {addr}");
        for protocol in ["UDP", "TCP"] {
            assert_eq!(addr.port() as i32, container_port(container, &IntOrString::Int(addr.port().into()), protocol));
        }
    }
}

/// The args of a container as the kubelet would pass them: `$(VAR)` replaced by `vars`.
fn expanded(container: &Container, vars: &[(&str, &str)]) -> Vec<String> {
    let mut args = container.args.clone().unwrap_or_default();
    for arg in &mut args {
        for (name, value) in vars {
            *arg = arg.replace(&format!("$({name})"), value);
        }
    }
    args
}

fn serve_config(args: &[String]) -> headless_dns::config::Config {
    let cli = Cli::try_parse_from(std::iter::once("headless-dns").chain(args.iter().map(String::as_str)))
        .unwrap_or_else(|e| panic!("args {args:?} do not parse:\n{e}"));
    #[allow(irrefutable_let_patterns)]
    let Command::Serve(serve) = cli.command else { panic!("not `serve`: {args:?}") };
    serve.to_config().unwrap_or_else(|e| panic!("args {args:?} are rejected: {e}"))
}

#[test]
fn node_local_secondaries_follow_the_primaries_they_are_wired_to() {
    use k8s_openapi::api::apps::v1::DaemonSet;
    let dir = deploy_dir().join("node-local");
    let read =
        |file: &str| -> Json { serde_saphyr::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap() };
    let mut all = Vec::new();
    let daemonset: DaemonSet = typed(&mut all, "node-local/daemonset.yaml", &read("daemonset.yaml"));
    let primary_service: Service = typed(&mut all, "node-local/primary-service.yaml", &read("primary-service.yaml"));
    assert!(all.iter().all(|p| p.metadata.namespace.as_deref() == Some(NAMESPACE)));

    // The secondary: on the node's network, a secondary of the primaries' Service, listening on
    // the link-local address and on the node's address at the port the primaries notify.
    let pod = daemonset.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("Default"), "a DNS server must not resolve through itself");
    assert_eq!(pod.automount_service_account_token, Some(false), "a secondary needs no API credentials");
    let container = &pod.containers[0];
    let args = expanded(container, &[("HEADLESS_DNS_PRIMARY_SERVICE_HOST", "10.96.0.54"), ("NODE_IP", "10.0.1.7")]);
    let secondary = serve_config(&args);
    let SourceConfig::Primary(opts) = &secondary.source else { panic!("not a secondary: {args:?}") };
    assert_eq!(opts.primaries, ["10.96.0.54:53".parse().unwrap()]);
    assert!(secondary.listen.contains(&"169.254.20.10:53".parse().unwrap()), "{args:?}");
    let notify_port = secondary
        .listen
        .iter()
        .find(|a| a.ip().to_string() == "10.0.1.7")
        .expect("a listen address on the node's IP, for NOTIFY")
        .port();
    let caps = container.security_context.as_ref().and_then(|s| s.capabilities.as_ref()).unwrap();
    assert_eq!(strings(&caps.add), BTreeSet::from(["NET_BIND_SERVICE"]));
    assert_eq!(strings(&caps.drop), BTreeSet::from(["ALL"]));
    let init = &pod.init_containers.as_ref().expect("the link-local address is set up")[0];
    let script = init.command.as_ref().unwrap().join(" ");
    assert!(script.contains("169.254.20.10/32") && script.contains("NOTRACK"), "{script}");

    // The primaries, patched as README.md says: they allow transfers and notify the secondaries
    // at the port those listen on.
    let patch: Vec<Json> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("primary-args.json")).unwrap()).unwrap();
    let manifests = Manifests::load();
    let mut primary_args = manifests.container().args.clone().unwrap();
    for op in &patch {
        assert_eq!(op["op"], "add");
        assert_eq!(op["path"], "/spec/template/spec/containers/0/args/-");
        primary_args.push(op["value"].as_str().unwrap().to_owned());
    }
    let primary = serve_config(&primary_args);
    assert_eq!(primary.notify_secondaries, Some(notify_port));
    assert!(primary.transfer_to.iter().any(|net| net.contains(&"10.0.1.7".parse::<std::net::IpAddr>().unwrap())));

    // The primaries' Service: TCP 53 to the Deployment's Pods, one primary per node.
    let spec = primary_service.spec.as_ref().unwrap();
    assert_eq!(spec.session_affinity.as_deref(), Some("ClientIP"));
    let labels = manifests.deployment().spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.clone();
    for (key, value) in spec.selector.as_ref().unwrap() {
        assert_eq!(labels.as_ref().and_then(|l| l.get(key)), Some(value), "the selector picks the primaries");
    }
    let port = &spec.ports.as_ref().unwrap()[0];
    assert_eq!((port.port, port.protocol.as_deref()), (53, Some("TCP")));
}
