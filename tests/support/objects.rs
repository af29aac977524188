//! Builders for the Kubernetes objects the tests feed to the fake API server.
//!
//! Every builder returns a plain [`serde_json::Value`] shaped like what the real
//! API server stores: `apiVersion`, `kind`, `metadata` (name, namespace, labels,
//! annotations) and the `spec`/`status` fields that matter for DNS. The fake
//! server fills in `resourceVersion`, `uid` and `creationTimestamp` when the
//! object is applied, so the builders leave them out.
//!
//! Tests use boring numbered names (`ns-0`, `svc-3`, `pod-12`) and documentation
//! addresses; [`ipv4_for`] and [`ipv6_for`] hand out distinct addresses for
//! churn tests.
//!
//! ```ignore
//! let svc = mk_headless_service("ns-0", "svc-0", &[("http", 80, "TCP")]);
//! let slice = mk_slice(
//!     "ns-0",
//!     "svc-0-abc",
//!     "svc-0",
//!     "IPv4",
//!     &[("http", 80, "TCP")],
//!     &[Ep::new("10.0.0.1").hostname("pod-0").target_pod("pod-0")],
//! );
//! fake.apply_many([mk_namespace("ns-0"), svc, slice]);
//! ```

use serde_json::{Map, Value, json};

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label the EndpointSlice controller puts on the slices it manages.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Annotation carrying the time of the Pod/Service change that triggered a slice update.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// A Namespace in phase `Active`.
pub fn mk_namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": { "kubernetes.io/metadata.name": name },
        },
        "spec": { "finalizers": ["kubernetes"] },
        "status": { "phase": "Active" },
    })
}

/// A `ClusterIP` Service. The IP family (`IPv4`/`IPv6`) is derived from `cluster_ip`.
///
/// `ports` are `(name, port, protocol)`; an empty name leaves the port unnamed.
pub fn mk_service(ns: &str, name: &str, cluster_ip: &str, ports: &[(&str, u16, &str)]) -> Value {
    let family = if cluster_ip.contains(':') { "IPv6" } else { "IPv4" };
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ipFamilies": [family],
            "ipFamilyPolicy": "SingleStack",
            "selector": { "app": name },
            "ports": service_ports(ports),
            "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster",
        },
        "status": { "loadBalancer": {} },
    })
}

/// A headless Service (`clusterIP: None`).
pub fn mk_headless_service(ns: &str, name: &str, ports: &[(&str, u16, &str)]) -> Value {
    mk_service(ns, name, "None", ports)
}

/// An `ExternalName` Service pointing at `external_name` (a CNAME target).
pub fn mk_external_name_service(ns: &str, name: &str, external_name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "type": "ExternalName",
            "externalName": external_name,
            "sessionAffinity": "None",
        },
        "status": { "loadBalancer": {} },
    })
}

/// One endpoint of an EndpointSlice, built fluently.
///
/// The defaults match what the EndpointSlice controller writes for a running,
/// ready Pod: `ready: true`, `serving: true`, `terminating: false`. Each
/// condition setter takes `bool` or `None` (`None` omits the field, which
/// consumers must interpret as "unknown", i.e. ready).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ep {
    pub addresses: Vec<String>,
    pub hostname: Option<String>,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    /// Name of the Pod in the slice's namespace that backs this endpoint.
    pub target_pod: Option<String>,
    pub node_name: Option<String>,
    pub zone: Option<String>,
}

impl Ep {
    /// A ready endpoint with a single address.
    pub fn new(address: &str) -> Self {
        Self::addrs(&[address])
    }

    /// A ready endpoint with several addresses (the API allows 1..=100; the
    /// EndpointSlice controller only ever writes one).
    pub fn addrs(addresses: &[&str]) -> Self {
        Self {
            addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
            hostname: None,
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
            target_pod: None,
            node_name: None,
            zone: None,
        }
    }

    /// Sets `hostname` (what a Pod's `spec.hostname` becomes under a headless Service).
    pub fn hostname(mut self, hostname: &str) -> Self {
        self.hostname = Some(hostname.to_owned());
        self
    }

    pub fn ready(mut self, ready: impl Into<Option<bool>>) -> Self {
        self.ready = ready.into();
        self
    }

    pub fn serving(mut self, serving: impl Into<Option<bool>>) -> Self {
        self.serving = serving.into();
        self
    }

    pub fn terminating(mut self, terminating: impl Into<Option<bool>>) -> Self {
        self.terminating = terminating.into();
        self
    }

    /// A Pod that is not ready (yet): `ready: false, serving: false, terminating: false`.
    pub fn not_ready(self) -> Self {
        self.ready(false).serving(false).terminating(false)
    }

    /// A Pod being deleted that still serves: `ready: false, serving: true, terminating: true`.
    pub fn terminating_serving(self) -> Self {
        self.ready(false).serving(true).terminating(true)
    }

    /// Sets `targetRef` to the Pod `pod` in the slice's namespace.
    pub fn target_pod(mut self, pod: &str) -> Self {
        self.target_pod = Some(pod.to_owned());
        self
    }

    pub fn node_name(mut self, node: &str) -> Self {
        self.node_name = Some(node.to_owned());
        self
    }

    pub fn zone(mut self, zone: &str) -> Self {
        self.zone = Some(zone.to_owned());
        self
    }

    fn to_json(&self, ns: &str) -> Value {
        let mut conditions = Map::new();
        for (key, value) in [("ready", self.ready), ("serving", self.serving), ("terminating", self.terminating)] {
            if let Some(value) = value {
                conditions.insert(key.to_owned(), Value::Bool(value));
            }
        }
        let mut ep = Map::new();
        ep.insert("addresses".to_owned(), json!(self.addresses));
        ep.insert("conditions".to_owned(), Value::Object(conditions));
        if let Some(hostname) = &self.hostname {
            ep.insert("hostname".to_owned(), json!(hostname));
        }
        if let Some(pod) = &self.target_pod {
            ep.insert("targetRef".to_owned(), json!({ "kind": "Pod", "namespace": ns, "name": pod }));
        }
        if let Some(node) = &self.node_name {
            ep.insert("nodeName".to_owned(), json!(node));
        }
        if let Some(zone) = &self.zone {
            ep.insert("zone".to_owned(), json!(zone));
        }
        Value::Object(ep)
    }
}

/// An EndpointSlice (`discovery.k8s.io/v1`) for `service_name`, labelled the
/// way the EndpointSlice controller labels it.
///
/// `address_type` is `"IPv4"`, `"IPv6"` or `"FQDN"`; `ports` are
/// `(name, port, protocol)` with an empty name for an unnamed port.
pub fn mk_slice(
    ns: &str,
    slice_name: &str,
    service_name: &str,
    address_type: &str,
    ports: &[(&str, u16, &str)],
    endpoints: &[Ep],
) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(name, port, protocol)| json!({ "name": name, "port": port, "protocol": protocol }))
        .collect();
    let endpoints: Vec<Value> = endpoints.iter().map(|ep| ep.to_json(ns)).collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name,
            "namespace": ns,
            "labels": {
                SERVICE_NAME_LABEL: service_name,
                MANAGED_BY_LABEL: "endpointslice-controller.k8s.io",
            },
            "generateName": format!("{service_name}-"),
        },
        "addressType": address_type,
        "ports": ports,
        "endpoints": endpoints,
    })
}

/// A running Pod with the given IPs (the first one is `status.podIP`), and
/// optional `spec.hostname` / `spec.subdomain`.
pub fn mk_pod(ns: &str, name: &str, ips: &[&str], hostname: Option<&str>, subdomain: Option<&str>) -> Value {
    let mut spec = json!({
        "containers": [{ "name": "main", "image": "registry.invalid/app:1" }],
        "restartPolicy": "Always",
        "nodeName": "node-0",
    });
    if let Some(hostname) = hostname {
        spec["hostname"] = json!(hostname);
    }
    if let Some(subdomain) = subdomain {
        spec["subdomain"] = json!(subdomain);
    }
    let mut status = json!({
        "phase": "Running",
        "conditions": [{ "type": "Ready", "status": "True" }],
        "podIPs": ips.iter().map(|ip| json!({ "ip": ip })).collect::<Vec<_>>(),
    });
    if let Some(first) = ips.first() {
        status["podIP"] = json!(first);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": { "app": subdomain.unwrap_or(name) },
        },
        "spec": spec,
        "status": status,
    })
}

/// Sets the `endpoints.kubernetes.io/last-change-trigger-time` annotation
/// (RFC 3339, e.g. `"2025-01-01T00:00:00Z"`) on a slice built by [`mk_slice`].
pub fn with_trigger_time(slice: Value, time: &str) -> Value {
    with_annotation(slice, LAST_CHANGE_TRIGGER_TIME, time)
}

/// Adds (or replaces) one annotation.
pub fn with_annotation(mut obj: Value, key: &str, value: &str) -> Value {
    set_field(&mut obj, &format!("metadata.annotations.{}", escape_key(key)), json!(value));
    obj
}

/// Adds (or replaces) labels.
pub fn with_labels(mut obj: Value, labels: &[(&str, &str)]) -> Value {
    for (key, value) in labels {
        set_field(&mut obj, &format!("metadata.labels.{}", escape_key(key)), json!(value));
    }
    obj
}

/// Removes a label if present.
pub fn without_label(mut obj: Value, key: &str) -> Value {
    if let Some(labels) = obj.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(key);
    }
    obj
}

/// Sets `spec.publishNotReadyAddresses` on a Service.
pub fn with_publish_not_ready(mut svc: Value, publish: bool) -> Value {
    set_field(&mut svc, "spec.publishNotReadyAddresses", json!(publish));
    svc
}

/// Sets the field at a dotted `path`, creating intermediate objects. A key
/// that itself contains dots (label and annotation keys) is written with
/// each dot escaped as `\.`, e.g. `metadata.labels.app\.kubernetes\.io/name`.
///
/// Anything on the way that is not an object is replaced by one.
pub fn set_field(obj: &mut Value, path: &str, value: Value) {
    let parts = split_path(path);
    let mut cur = obj;
    for part in &parts[..parts.len().saturating_sub(1)] {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let map = cur.as_object_mut().expect("just made an object");
        cur = map.entry(part.clone()).or_insert_with(|| Value::Object(Map::new()));
    }
    if let Some(last) = parts.last() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        cur.as_object_mut().expect("just made an object").insert(last.clone(), value);
    }
}

/// The `index`-th address of 10.0.0.0/8 after 10.0.0.0 (`ipv4_for(0)` is
/// `10.0.0.1`), for tests that need many distinct addresses.
pub fn ipv4_for(index: u32) -> String {
    let n = (index % 0x00ff_fffe) + 1;
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// The `index`-th address in the documentation prefix `2001:db8::/32`
/// (`ipv6_for(0)` is `2001:db8::1`).
pub fn ipv6_for(index: u32) -> String {
    let n = u64::from(index) + 1;
    format!("2001:db8::{:x}:{:x}", (n >> 16) & 0xffff, n & 0xffff).replace("::0:", "::")
}

fn service_ports(ports: &[(&str, u16, &str)]) -> Vec<Value> {
    ports
        .iter()
        .map(|(name, port, protocol)| {
            let mut p = json!({ "port": port, "protocol": protocol, "targetPort": port });
            if !name.is_empty() {
                p["name"] = json!(name);
            }
            p
        })
        .collect()
}

fn escape_key(key: &str) -> String {
    key.replace('.', "\\.")
}

fn split_path(path: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    parts.last_mut().expect("never empty").push(next);
                }
            }
            '.' => parts.push(String::new()),
            c => parts.last_mut().expect("never empty").push(c),
        }
    }
    parts
}

/// Label that ties a cluster-set EndpointSlice to its ServiceImport (Multi-Cluster Services API).
pub const MCS_SERVICE_NAME_LABEL: &str = "multicluster.kubernetes.io/service-name";
/// Label naming the cluster a cluster-set EndpointSlice's endpoints are in.
pub const MCS_SOURCE_CLUSTER_LABEL: &str = "multicluster.kubernetes.io/source-cluster";

/// A ServiceImport (`multicluster.x-k8s.io/<version>`) of `type_` `ClusterSetIP` (with `ips`) or
/// `Headless`, as an MCS controller writes it.
pub fn mk_service_import(
    version: &str,
    ns: &str,
    name: &str,
    type_: &str,
    ips: &[&str],
    ports: &[(&str, u16, &str)],
) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(name, port, protocol)| json!({ "name": name, "port": port, "protocol": protocol }))
        .collect();
    json!({
        "apiVersion": format!("multicluster.x-k8s.io/{version}"),
        "kind": "ServiceImport",
        "metadata": { "name": name, "namespace": ns },
        "spec": { "type": type_, "ips": ips, "ports": ports },
    })
}

/// One cluster's EndpointSlice of a ServiceImport: [`mk_slice`] labelled for the cluster set
/// (and not for a local Service), as Submariner's Lighthouse writes them.
pub fn mk_cluster_slice(
    ns: &str,
    slice_name: &str,
    import: &str,
    cluster: &str,
    address_type: &str,
    ports: &[(&str, u16, &str)],
    endpoints: &[Ep],
) -> Value {
    let slice = mk_slice(ns, slice_name, import, address_type, ports, endpoints);
    let slice = with_labels(slice, &[(MCS_SERVICE_NAME_LABEL, import), (MCS_SOURCE_CLUSTER_LABEL, cluster)]);
    without_label(without_label(slice, SERVICE_NAME_LABEL), MANAGED_BY_LABEL)
}
