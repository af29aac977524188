//! The decode path before the slim `cluster::api` types, kept to compare with (`benches/decode.rs`):
//! k8s-openapi types, then the projections as they were at 8f83cc6 (`src/cluster/object.rs`,
//! `src/source/file.rs`), copied unchanged but for paths. Do not fix or speed up: it is the
//! baseline.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use headless_dns::cluster::object::{
    self, Conditions, Endpoint, Kind, Namespace, ObjKey, Object, Pod, Port, ProjectError, Protocol, SERVICE_NAME_LABEL,
    Service, ServiceKind, Slice, TRIGGER_TIME_ANNOTATION,
};
use headless_dns::dns::name::Name;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use serde::de::DeserializeOwned;
use smallvec::SmallVec;

fn parse_protocol(text: Option<&str>) -> Result<Protocol, String> {
    match text.unwrap_or("TCP") {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        "SCTP" => Ok(Protocol::Sctp),
        other => Err(format!("unknown protocol {other:?}")),
    }
}

fn meta_key(
    kind: Kind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<ObjKey, ProjectError> {
    let name = meta.name.as_deref().unwrap_or_default();
    let ns = meta.namespace.as_deref().unwrap_or("default");
    if name.is_empty() {
        return Err(ProjectError {
            what: format!("{kind} in namespace {ns}"),
            reason: "metadata.name is missing".into(),
        });
    }
    Ok(ObjKey::new(ns, name))
}

fn dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= headless_dns::dns::name::MAX_LABEL
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim().parse().ok()
}

fn project_port(name: Option<&str>, protocol: Option<&str>, port: Option<i32>) -> Result<Option<Port>, String> {
    let Some(port) = port else {
        // An EndpointSlice port without a number means "all ports"; it has no SRV record.
        return Ok(None);
    };
    let port = u16::try_from(port).map_err(|_| format!("port {port} is out of range"))?;
    let protocol = parse_protocol(protocol)?;
    let name = name.filter(|n| !n.is_empty()).filter(|n| dns_label(n)).map(|n| n.to_ascii_lowercase().into_boxed_str());
    Ok(Some(Port { name, protocol, port }))
}

/// Projects a Service. A Service whose cluster IPs do not parse is rejected as a whole (serving a
/// Service with part of its addresses would be a silent lie); one with a bad port loses that port.
pub fn project_service(svc: &core::Service) -> Result<Service, ProjectError> {
    let key = meta_key(Kind::Service, &svc.metadata)?;
    let err = |reason: String| ProjectError { what: format!("Service {key}"), reason };
    let spec = svc.spec.clone().unwrap_or_default();
    let kind = match spec.type_.as_deref() {
        Some("ExternalName") => {
            let ext = spec.external_name.as_deref().unwrap_or_default();
            if ext.parse::<IpAddr>().is_ok() {
                return Err(err(format!("externalName {ext:?} is an IP address; only hostnames get a CNAME")));
            }
            let target = Name::parse(ext).map_err(|e| err(format!("externalName: {e}")))?;
            if target == Name::root() {
                return Err(err("externalName is empty".into()));
            }
            ServiceKind::ExternalName(target)
        }
        _ => {
            let texts: Vec<&str> = match (&spec.cluster_ips, &spec.cluster_ip) {
                (Some(ips), _) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
                (_, Some(ip)) => vec![ip.as_str()],
                _ => vec![],
            };
            if texts.contains(&"None") {
                ServiceKind::Headless
            } else {
                let mut ips = SmallVec::new();
                for text in texts.iter().filter(|t| !t.is_empty()) {
                    let ip = parse_ip(text).ok_or_else(|| err(format!("cluster IP {text:?} is not an IP address")))?;
                    ips.push(ip);
                }
                ServiceKind::ClusterIp(ips)
            }
        }
    };
    let mut ports = Vec::new();
    for p in spec.ports.iter().flatten() {
        match project_port(p.name.as_deref(), p.protocol.as_deref(), Some(p.port)) {
            Ok(Some(port)) => ports.push(port),
            Ok(None) => {}
            Err(reason) => tracing::warn!(service = %key, %reason, "skipping Service port"),
        }
    }
    Ok(Service { key, kind, ports })
}

/// Projects an EndpointSlice. Endpoints whose addresses do not parse are skipped with a warning;
/// FQDN slices (deprecated) carry no addresses we can serve and project to no endpoints.
pub fn project_slice(slice: &discovery::EndpointSlice) -> Result<Slice, ProjectError> {
    let key = meta_key(Kind::EndpointSlice, &slice.metadata)?;
    let err = |reason: String| ProjectError { what: format!("EndpointSlice {key}"), reason };
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| err(format!("label {SERVICE_NAME_LABEL} is missing")))?;
    let family = match slice.address_type.as_str() {
        "IPv4" => Some(false),
        "IPv6" => Some(true),
        "FQDN" => None,
        other => return Err(err(format!("unknown addressType {other:?}"))),
    };
    let mut ports = Vec::new();
    for p in slice.ports.iter().flatten() {
        match project_port(p.name.as_deref(), p.protocol.as_deref(), p.port) {
            Ok(Some(port)) => ports.push(port),
            Ok(None) => {}
            Err(reason) => tracing::warn!(slice = %key, %reason, "skipping EndpointSlice port"),
        }
    }
    let mut endpoints = Vec::with_capacity(slice.endpoints.len());
    for (i, ep) in slice.endpoints.iter().enumerate() {
        let Some(want_v6) = family else { break };
        let mut addresses: SmallVec<[IpAddr; 1]> = SmallVec::new();
        for text in &ep.addresses {
            match parse_ip(text) {
                Some(ip) if ip.is_ipv6() == want_v6 => addresses.push(ip),
                _ => tracing::warn!(
                    slice = %key, endpoint = i, address = %text, address_type = %slice.address_type,
                    "skipping endpoint address that is not an address of the slice's type"
                ),
            }
        }
        if addresses.is_empty() {
            continue;
        }
        let hostname = match ep.hostname.as_deref() {
            Some(h) if dns_label(h) => Some(h.to_ascii_lowercase()),
            Some(h) => {
                tracing::warn!(slice = %key, endpoint = i, hostname = %h,
                    "endpoint hostname is not a DNS label; using its dashed-IP name");
                None
            }
            None => None,
        };
        let conditions = ep.conditions.clone().unwrap_or_default();
        let ready = conditions.ready.unwrap_or(true);
        let pod = ep.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod")).and_then(|r| r.name.as_deref());
        endpoints.push(Endpoint::new(
            addresses.into_iter().collect(),
            hostname,
            pod,
            Conditions {
                ready,
                serving: conditions.serving.unwrap_or(ready),
                terminating: conditions.terminating.unwrap_or(false),
            },
        ));
    }
    let trigger_time_ms = slice
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TRIGGER_TIME_ANNOTATION))
        .and_then(|t| parse_rfc3339_ms(t));
    Ok(Slice { key, service: Arc::from(service.as_str()), ports, endpoints, trigger_time_ms })
}

/// Projects a Pod. Pods that have finished (`Succeeded`, `Failed`) project with no addresses:
/// their IPs may already belong to another Pod.
pub fn project_pod(pod: &core::Pod) -> Result<Pod, ProjectError> {
    let key = meta_key(Kind::Pod, &pod.metadata)?;
    let status = pod.status.clone().unwrap_or_default();
    let texts: Vec<&str> = match (&status.pod_ips, &status.pod_ip) {
        _ if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) => vec![],
        (Some(list), _) if !list.is_empty() => list.iter().map(|p| p.ip.as_str()).collect(),
        (_, Some(ip)) => vec![ip.as_str()],
        _ => vec![],
    };
    let ips = object::pod_ips(&key, texts)?;
    Ok(Pod { key, ips })
}

/// Projects a Namespace.
pub fn project_namespace(ns: &core::Namespace) -> Result<Namespace, ProjectError> {
    let name = ns.metadata.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        return Err(ProjectError { what: "Namespace".into(), reason: "metadata.name is missing".into() });
    }
    Ok(Namespace { name: Arc::from(name) })
}

/// Parses the RFC 3339 timestamps Kubernetes writes (`2024-05-01T10:00:00Z`, optionally with
/// fractional seconds) into Unix milliseconds.
fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let t: k8s_openapi::jiff::Timestamp = text.parse().ok()?;
    Some(t.as_millisecond())
}

/// Parses every document of a manifest file. A YAML error fails the whole file; an object that
/// cannot be used is skipped with a warning naming it.
pub fn parse_manifests(text: &str, path: &Path) -> Result<Vec<Object>, String> {
    let mut objects = Vec::new();
    for (i, doc) in serde_saphyr::read::<_, serde_json::Value>(&mut text.as_bytes()).enumerate() {
        let document = i + 1;
        let value = doc.map_err(|source| format!("{}: document {document}: {source}", path.display()))?;
        collect(value, path, document, &mut objects);
    }
    Ok(objects)
}

fn collect(value: serde_json::Value, path: &Path, document: usize, out: &mut Vec<Object>) {
    if value.is_null() {
        return;
    }
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_string();
    let api_version = value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or_default().to_string();
    let name = || {
        let meta = value.get("metadata");
        let ns = meta.and_then(|m| m.get("namespace")).and_then(|n| n.as_str());
        let name = meta.and_then(|m| m.get("name")).and_then(|n| n.as_str()).unwrap_or("<unnamed>");
        match ns {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        }
    };
    let where_ = format!("{}: document {document}", path.display());
    let projected: std::result::Result<Object, String> = match (api_version.as_str(), kind.as_str()) {
        (_, k) if k == "List" || (k.ends_with("List") && value.get("items").is_some()) => {
            if let Some(serde_json::Value::Array(items)) = value.get("items").cloned() {
                for item in items {
                    collect(item, path, document, out);
                }
            }
            return;
        }
        ("v1", "Service") => {
            typed::<core::Service>(&value).and_then(|s| proj(project_service(&s))).map(Object::Service)
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            typed::<discovery::EndpointSlice>(&value).and_then(|s| proj(project_slice(&s))).map(Object::Slice)
        }
        ("v1", "Pod") => typed::<core::Pod>(&value).and_then(|p| proj(project_pod(&p))).map(Object::Pod),
        ("v1", "Namespace") => {
            typed::<core::Namespace>(&value).and_then(|n| proj(project_namespace(&n))).map(Object::Namespace)
        }
        (_, "Service" | "EndpointSlice" | "Pod" | "Namespace") => {
            tracing::warn!(object = %name(), %api_version, at = %where_, "skipping object of an unsupported apiVersion");
            return;
        }
        _ => {
            tracing::debug!(object = %name(), at = %where_, "ignoring kind");
            return;
        }
    };
    match projected {
        Ok(obj) => out.push(obj),
        Err(reason) => tracing::warn!(object = %name(), at = %where_, %reason, "skipping object"),
    }
}

fn typed<T: DeserializeOwned>(value: &serde_json::Value) -> std::result::Result<T, String> {
    T::deserialize(value).map_err(|e| e.to_string())
}

fn proj<T>(r: std::result::Result<T, ProjectError>) -> std::result::Result<T, String> {
    r.map_err(|e| e.reason)
}
