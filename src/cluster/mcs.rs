//! Multi-Cluster Services (KEP-1645, kubernetes-sigs/mcs-api): the objects behind the
//! `clusterset.local` zone (`--multicluster-zone`), decoded with plain serde and projected to
//! minimal structs as the cluster zone's objects are.
//!
//! ```text
//!  ServiceImport <svc> (multicluster.x-k8s.io v1beta1 or v1alpha1)   spec.type, spec.ips, spec.ports
//!       ▲
//!       └── label multicluster.kubernetes.io/service-name ── EndpointSlice (discovery.k8s.io/v1)
//!           label multicluster.kubernetes.io/source-cluster = <clusterid>      one per cluster (or more)
//! ```
//!
//! The cluster-set EndpointSlices carry `multicluster.kubernetes.io/service-name`, not
//! `kubernetes.io/service-name` (which would make kube-proxy treat them as the local Service's),
//! so the cluster zone never sees them. Both sources decode these objects as kube's
//! `DynamicObject`, each in a [`Decoded`](super::api::Decoded) of its own (its metadata typed, the
//! rest a JSON value decoded here): a field of the wrong type skips that one object with a warning
//! naming it and the field, and everything else keeps serving.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DynamicObject;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use smallvec::SmallVec;

use super::api::{parse_ip, path_reason};
pub use super::object::{ClusterSetSlice, ImportKind, ServiceImport};
use super::object::{Conditions, Endpoint, Kind, ObjKey, Object, Port, ProjectError, Slice, dns_label, project_port};

/// The API group of ServiceImport.
pub const GROUP: &str = "multicluster.x-k8s.io";
/// The ServiceImport versions read, the preferred first (mcs-api v0.3 made v1beta1 the storage
/// version; v1alpha1 is what Submariner and older GKE and Cilium installs serve).
pub const VERSIONS: [&str; 2] = ["v1beta1", "v1alpha1"];
/// The label tying a cluster-set EndpointSlice to its ServiceImport (mcs-api `LabelServiceName`).
pub const IMPORT_NAME_LABEL: &str = "multicluster.kubernetes.io/service-name";
/// The label naming the cluster an EndpointSlice's endpoints are in (mcs-api `LabelSourceCluster`).
pub const SOURCE_CLUSTER_LABEL: &str = "multicluster.kubernetes.io/source-cluster";
/// The schema version `dns-version.<clusterset zone>` answers (MCS DNS specification §1, §2.2).
pub const SCHEMA_VERSION: &str = "1.0.0";

// === decoding ===

#[derive(Default, Deserialize)]
#[serde(default)]
struct ImportBody {
    spec: ImportSpec,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ImportSpec {
    #[serde(rename = "type")]
    type_: Option<String>,
    ips: Option<Vec<String>>,
    ports: Option<Vec<PortDoc>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct PortDoc {
    name: Option<String>,
    protocol: Option<String>,
    port: Option<i32>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SliceBody {
    address_type: Option<String>,
    // Go writes an empty list as `null`.
    endpoints: Option<Vec<EndpointDoc>>,
    ports: Option<Vec<PortDoc>>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct EndpointDoc {
    addresses: Option<Vec<String>>,
    conditions: Option<ConditionsDoc>,
    hostname: Option<String>,
    target_ref: Option<TargetRefDoc>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ConditionsDoc {
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct TargetRefDoc {
    kind: Option<String>,
    name: Option<String>,
}

/// Decodes `body`, naming the field that has the wrong type (`spec.ips[1]: invalid type: …`).
fn decode<T: DeserializeOwned>(body: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(body).map_err(|e| path_reason(e.path(), e.inner()))
}

fn key_of(kind: Kind, meta: &ObjectMeta) -> Result<ObjKey, ProjectError> {
    let ns = meta.namespace.as_deref().unwrap_or("default");
    match meta.name.as_deref() {
        Some(name) if !name.is_empty() => Ok(ObjKey::new(ns, name)),
        _ => Err(ProjectError { what: format!("{kind} in namespace {ns}"), reason: "metadata.name is missing".into() }),
    }
}

fn ports_of(docs: Option<Vec<PortDoc>>, what: &str) -> Vec<Port> {
    let mut ports = Vec::new();
    for p in docs.into_iter().flatten() {
        match project_port(p.name.as_deref(), p.protocol.as_deref(), p.port) {
            Ok(Some(port)) => ports.push(port),
            Ok(None) => {}
            Err(reason) => tracing::warn!(object = what, %reason, "skipping port"),
        }
    }
    ports
}

/// Projects a ServiceImport (`body` holds its `spec`). One with an unknown `spec.type` or an
/// `ips` entry that is not an address is rejected whole, naming it.
pub fn project_import(meta: &ObjectMeta, body: &Value) -> Result<ServiceImport, ProjectError> {
    let key = key_of(Kind::ServiceImport, meta)?;
    let what = format!("ServiceImport {key}");
    let err = |reason: String| ProjectError { what: what.clone(), reason };
    let ImportBody { spec } = decode(body).map_err(err)?;
    let kind = match spec.type_.as_deref() {
        Some("Headless") => ImportKind::Headless,
        Some("ClusterSetIP") => {
            let mut ips = SmallVec::new();
            for text in spec.ips.iter().flatten() {
                let ip = parse_ip(text).ok_or_else(|| err(format!("spec.ips: {text:?} is not an IP address")))?;
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
            ImportKind::ClusterSetIp(ips)
        }
        Some(other) => return Err(err(format!("spec.type {other:?}: expected ClusterSetIP or Headless"))),
        None => return Err(err("spec.type is missing".into())),
    };
    Ok(ServiceImport { key, kind, ports: ports_of(spec.ports, &what) })
}

/// Projects a cluster-set EndpointSlice (`body` holds `addressType`, `endpoints`, `ports`), as
/// the cluster zone reads an EndpointSlice: ready is `conditions.ready` (absent: ready), an
/// endpoint hostname that is not a DNS label falls back to the dashed IP, addresses of the other
/// family are skipped.
pub fn project_cluster_slice(meta: &ObjectMeta, body: &Value) -> Result<ClusterSetSlice, ProjectError> {
    let key = key_of(Kind::ClusterSetSlice, meta)?;
    let what = format!("EndpointSlice {key}");
    let err = |reason: String| ProjectError { what: what.clone(), reason };
    let no_labels = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&no_labels);
    let label = |name: &str| labels.get(name).filter(|v| !v.is_empty());
    let service = label(IMPORT_NAME_LABEL).ok_or_else(|| err(format!("label {IMPORT_NAME_LABEL} is missing")))?;
    let cluster = label(SOURCE_CLUSTER_LABEL)
        .ok_or_else(|| err(format!("label {SOURCE_CLUSTER_LABEL} is missing (the cluster ID its names need)")))?
        .to_ascii_lowercase();
    if !dns_label(&cluster) {
        return Err(err(format!("label {SOURCE_CLUSTER_LABEL}: cluster ID {cluster:?} is not a DNS label")));
    }
    let body: SliceBody = decode(body).map_err(err)?;
    let want_v6 = match body.address_type.as_deref() {
        Some("IPv4") => Some(false),
        Some("IPv6") => Some(true),
        Some("FQDN") => None,
        Some(other) => return Err(err(format!("unknown addressType {other:?}"))),
        None => return Err(err("addressType is missing".into())),
    };
    let mut endpoints = Vec::new();
    for (i, ep) in body.endpoints.into_iter().flatten().enumerate() {
        let Some(want_v6) = want_v6 else { break };
        let addresses: SmallVec<[IpAddr; 1]> = ep
            .addresses
            .iter()
            .flatten()
            .filter_map(|text| match parse_ip(text) {
                Some(ip) if ip.is_ipv6() == want_v6 => Some(ip),
                _ => {
                    tracing::warn!(slice = %key, endpoint = i, address = %text,
                        "skipping endpoint address that is not an address of the slice's type");
                    None
                }
            })
            .collect();
        if addresses.is_empty() {
            continue;
        }
        let hostname = ep.hostname.map(|h| h.to_ascii_lowercase()).filter(|h| {
            dns_label(h) || {
                tracing::warn!(slice = %key, endpoint = i, hostname = %h,
                    "endpoint hostname is not a DNS label; using its dashed-IP name");
                false
            }
        });
        let c = ep.conditions.unwrap_or_default();
        let ready = c.ready.unwrap_or(true);
        let conditions =
            Conditions { ready, serving: c.serving.unwrap_or(ready), terminating: c.terminating.unwrap_or(false) };
        let pod = ep.target_ref.filter(|r| r.kind.as_deref() == Some("Pod")).and_then(|r| r.name);
        endpoints.push(Endpoint::new(addresses.into(), hostname, pod.as_deref(), conditions));
    }
    let ports = ports_of(body.ports, &what);
    let slice = Slice { key, service: Arc::from(service.as_str()), ports, endpoints, trigger_time_ms: None };
    Ok(ClusterSetSlice { cluster: Arc::from(cluster), slice })
}

/// Which multi-cluster kind a manifest document (or `List` item) is: a ServiceImport of a version
/// in [`VERSIONS`], or a `discovery.k8s.io/v1` EndpointSlice labelled [`IMPORT_NAME_LABEL`].
/// `None` for anything else, which the cluster zone's reading takes (an EndpointSlice without the
/// label is the cluster zone's). A cluster-set EndpointSlice belongs to the cluster-set zone only,
/// as the Kubernetes source leaves it out of the cluster zone's watch.
pub fn manifest_kind(api_version: &str, kind: &str, doc: &Value) -> Option<Kind> {
    match (api_version.split_once('/'), kind) {
        (Some((GROUP, version)), "ServiceImport") if VERSIONS.contains(&version) => Some(Kind::ServiceImport),
        (Some(("discovery.k8s.io", "v1")), "EndpointSlice")
            if doc.pointer("/metadata/labels").and_then(|l| l.get(IMPORT_NAME_LABEL)).is_some() =>
        {
            Some(Kind::ClusterSetSlice)
        }
        _ => None,
    }
}

/// Projects a ServiceImport or a cluster-set EndpointSlice (`kind`), as both sources decode them:
/// kube's `DynamicObject`, its metadata typed and the rest a JSON value.
pub fn project(kind: Kind, object: &mut DynamicObject) -> Result<Object, ProjectError> {
    match kind {
        Kind::ClusterSetSlice => project_cluster_slice(&object.metadata, &object.data).map(Object::ClusterSetSlice),
        _ => project_import(&object.metadata, &object.data).map(Object::Import),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::api::Decoded;
    use crate::cluster::object;

    fn objects(yaml: &str) -> Vec<Object> {
        crate::source::file::parse_manifests(yaml, std::path::Path::new("set.yaml")).unwrap()
    }

    #[test]
    fn both_versions_and_both_types_project() {
        let objs = objects(
            r#"
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceImport
metadata: {name: db, namespace: ns-0}
spec: {type: ClusterSetIP, ips: [10.42.0.1, "fd00::42"], ports: [{name: PG, port: 5432}, {port: 9}]}
---
apiVersion: v1
kind: List
items:
- apiVersion: multicluster.x-k8s.io/v1alpha1
  kind: ServiceImport
  metadata: {name: web, namespace: ns-0}
  spec: {type: Headless, ports: [{name: http, port: 80, protocol: TCP}]}
"#,
        );
        let [Object::Import(db), Object::Import(web)] = &objs[..] else { panic!("{objs:?}") };
        assert_eq!(
            db.kind,
            ImportKind::ClusterSetIp(SmallVec::from_vec(vec![
                "10.42.0.1".parse().unwrap(),
                "fd00::42".parse().unwrap()
            ]))
        );
        assert_eq!(db.ports.len(), 2);
        assert_eq!(db.ports[0].name.as_deref(), Some("pg"));
        assert_eq!((web.key.to_string(), &web.kind), ("ns-0/web".to_string(), &ImportKind::Headless));
    }

    #[test]
    fn cluster_set_slices_carry_their_cluster_and_are_the_cluster_set_zones() {
        let objs = objects(
            r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-a
  namespace: ns-0
  labels: {multicluster.kubernetes.io/service-name: web, multicluster.kubernetes.io/source-cluster: Cluster-A}
addressType: IPv4
ports: null
endpoints:
- {addresses: [10.1.0.5], hostname: web-0, conditions: {ready: false}}
- {addresses: ["fd00::1"]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: local, namespace: ns-0, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
"#,
        );
        // The labelled slice is the cluster-set zone's alone; the other is the cluster zone's.
        let [Object::ClusterSetSlice(s), Object::Slice(local)] = &objs[..] else { panic!("{objs:?}") };
        assert_eq!(local.key, ObjKey::new("ns-0", "local"));
        assert_eq!(&*s.cluster, "cluster-a");
        assert_eq!(&*s.slice.service, "web");
        assert_eq!(s.slice.endpoints.len(), 1, "the IPv6 address of an IPv4 slice is skipped");
        assert!(!s.slice.endpoints[0].ready);
    }

    /// A list as kube-client decodes it: an item whose metadata does not decode fails only
    /// itself, named as far as it can be (through `Decoded`, as the cluster zone's objects are).
    #[test]
    fn wrongly_typed_metadata_fails_only_its_object() {
        let text = r#"{"apiVersion":"multicluster.x-k8s.io/v1beta1","kind":"ServiceImportList","metadata":{},"items":[
            {"metadata":{"name":"a","namespace":"ns-0","labels":{"x":5}},"spec":{"type":"Headless"}},
            {"metadata":{"name":"b","namespace":"ns-0"},"spec":{"type":"Headless"}}]}"#;
        let list: kube::core::ObjectList<Decoded<DynamicObject>> = serde_json::from_str(text).unwrap();
        let results: Vec<_> = (list.items.into_iter())
            .map(|mut item| object::project(Kind::ServiceImport, &mut item, |o| project(Kind::ServiceImport, o)))
            .collect();
        let err = results[0].as_ref().unwrap_err();
        assert_eq!(err.what, "ServiceImport ns-0/a");
        assert_eq!(err.reason, "metadata.labels.x: invalid type: integer `5`, expected a string");
        assert!(matches!(&results[1], Ok(Object::Import(i)) if i.kind == ImportKind::Headless), "{:?}", results[1]);
    }

    /// A wrongly typed object is skipped with the field named; the others are kept.
    #[test]
    fn bad_objects_are_rejected_naming_them_and_the_field() {
        let meta: ObjectMeta = serde_json::from_value(serde_json::json!({"name": "db", "namespace": "ns-1"})).unwrap();
        let cases = [
            (
                serde_json::json!({"spec": {"type": "ClusterSetIP", "ips": ["10.0.0.1", 5]}}),
                "spec.ips[1]: invalid type",
            ),
            (serde_json::json!({"spec": {"type": "ClusterSetIP", "ips": ["10.0.0.300"]}}), "is not an IP address"),
            (serde_json::json!({"spec": {"type": "LoadBalancer"}}), "expected ClusterSetIP or Headless"),
            (serde_json::json!({"spec": {"ports": "80"}}), "spec.ports: invalid type"),
            (serde_json::json!({}), "spec.type is missing"),
        ];
        for (body, reason) in cases {
            let err = project_import(&meta, &body).unwrap_err();
            assert_eq!(err.what, "ServiceImport ns-1/db");
            assert!(err.reason.contains(reason), "{body}: {}", err.reason);
        }
        let mut meta = meta;
        meta.labels = Some([(IMPORT_NAME_LABEL.to_string(), "db".to_string())].into());
        let err = project_cluster_slice(&meta, &serde_json::json!({"addressType": "IPv4"})).unwrap_err();
        assert!(err.reason.contains(SOURCE_CLUSTER_LABEL), "{}", err.reason);
        meta.labels.as_mut().unwrap().insert(SOURCE_CLUSTER_LABEL.into(), "a".into());
        let err = project_cluster_slice(
            &meta,
            &serde_json::json!({"addressType": "IPv4", "endpoints": [{"addresses": "x"}]}),
        )
        .unwrap_err();
        assert_eq!(err.what, "EndpointSlice ns-1/db");
        assert!(err.reason.starts_with("endpoints[0].addresses: invalid type"), "{}", err.reason);
    }
}
