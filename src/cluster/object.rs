//! Minimal projections of the Kubernetes objects that imply DNS records.
//!
//! Sources decode API objects as [`api`] types (only the fields read here) and project them to
//! these on ingest, dropping the rest: in a large cluster memory is dominated by what is kept per
//! Pod and per endpoint, and CoreDNS's answer to its own memory problem was the same
//! (`*svc = api.Service{}` after projecting, coredns/coredns plugin/kubernetes/object/service.go).
//! Keep these structs small: a field added here is paid for once per endpoint in the largest
//! cluster we serve.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use smallvec::SmallVec;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::api::{self, Decoded, Invalid, parse_ip};
pub use super::api::{SERVICE_NAME_LABEL, TRIGGER_TIME_ANNOTATION};
use crate::dns::name::Name;

/// The object kinds headless-dns reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `v1/Service`
    Service,
    /// `discovery.k8s.io/v1/EndpointSlice`
    EndpointSlice,
    /// `v1/Pod`
    Pod,
    /// `v1/Namespace`
    Namespace,
    /// `multicluster.x-k8s.io` `ServiceImport` (v1beta1 or v1alpha1): decoded in `cluster/mcs.rs`.
    ServiceImport,
    /// A `discovery.k8s.io/v1` EndpointSlice labelled `multicluster.kubernetes.io/service-name`:
    /// one cluster's endpoints of a ServiceImport.
    ClusterSetSlice,
}

impl Kind {
    /// Every kind, in the order a source lists them.
    pub const ALL: [Kind; 6] =
        [Kind::Namespace, Kind::Service, Kind::EndpointSlice, Kind::Pod, Kind::ServiceImport, Kind::ClusterSetSlice];

    /// The `kind` field of the API object.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
            Kind::ServiceImport => "ServiceImport",
            Kind::ClusterSetSlice => "MulticlusterEndpointSlice",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `namespace/name` of a namespaced object.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    /// The namespace.
    pub ns: Arc<str>,
    /// The object's name.
    pub name: Arc<str>,
}

impl ObjKey {
    /// Builds a key.
    pub fn new(ns: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        ObjKey { ns: ns.into(), name: name.into() }
    }
}

impl fmt::Display for ObjKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ns, self.name)
    }
}

impl fmt::Debug for ObjKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ns, self.name)
    }
}

/// Which object an event is about: its kind, and its key (namespace is empty for Namespaces).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    /// The object's kind.
    pub kind: Kind,
    /// Namespace and name; the namespace is empty for cluster-scoped kinds.
    pub key: ObjKey,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.ns.is_empty() {
            write!(f, "{} {}", self.kind, self.key.name)
        } else {
            write!(f, "{} {}", self.kind, self.key)
        }
    }
}

/// One projected object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    /// A Service.
    Service(Service),
    /// An EndpointSlice.
    Slice(Slice),
    /// A Pod.
    Pod(Pod),
    /// A Namespace.
    Namespace(Namespace),
    /// A ServiceImport (multi-cluster).
    Import(ServiceImport),
    /// One cluster's EndpointSlice of a ServiceImport.
    ClusterSetSlice(ClusterSetSlice),
}

impl Object {
    /// Which object this is.
    pub fn object_ref(&self) -> ObjectRef {
        match self {
            Object::Service(s) => ObjectRef { kind: Kind::Service, key: s.key.clone() },
            Object::Slice(s) => ObjectRef { kind: Kind::EndpointSlice, key: s.key.clone() },
            Object::Pod(p) => ObjectRef { kind: Kind::Pod, key: p.key.clone() },
            Object::Namespace(n) => ObjectRef { kind: Kind::Namespace, key: ObjKey::new("", n.name.clone()) },
            Object::Import(i) => ObjectRef { kind: Kind::ServiceImport, key: i.key.clone() },
            Object::ClusterSetSlice(s) => ObjectRef { kind: Kind::ClusterSetSlice, key: s.slice.key.clone() },
        }
    }
}

/// What kind of DNS a Service gets (Kubernetes DNS spec §2.3–2.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// ClusterIP, NodePort and LoadBalancer Services: their cluster IPs, both families.
    ClusterIp(SmallVec<[IpAddr; 1]>),
    /// `clusterIP: None`: the addresses of the ready endpoints.
    Headless,
    /// `type: ExternalName` with a hostname: a CNAME.
    ExternalName(Name),
}

/// Transport protocol of a port, as it appears in SRV names (`_tcp`, `_udp`, `_sctp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The SRV label for this protocol.
    pub fn srv_label(self) -> &'static str {
        match self {
            Protocol::Tcp => "_tcp",
            Protocol::Udp => "_udp",
            Protocol::Sctp => "_sctp",
        }
    }

    fn parse(text: Option<&str>) -> Result<Protocol, String> {
        match text.unwrap_or("TCP") {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            other => Err(format!("unknown protocol {other:?}")),
        }
    }
}

/// A named or unnamed port of a Service or an EndpointSlice. Only named ports get SRV records.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port {
    /// The port's name, when it is a valid DNS label (`http`); SRV uses `_<name>`.
    pub name: Option<Box<str>>,
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
    /// The port number.
    pub port: u16,
}

/// A Service, reduced to what DNS needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Namespace and name.
    pub key: ObjKey,
    /// ClusterIP, headless or ExternalName.
    pub kind: ServiceKind,
    /// The Service's ports (SRV for ClusterIP Services).
    pub ports: Vec<Port>,
}

/// An EndpointSlice, reduced to what DNS (and `explain`) needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    /// Namespace and name of the slice itself.
    pub key: ObjKey,
    /// The Service it belongs to (label `kubernetes.io/service-name`).
    pub service: Arc<str>,
    /// The slice's ports (SRV for headless Services).
    pub ports: Vec<Port>,
    /// Its endpoints.
    pub endpoints: Vec<Endpoint>,
    /// `endpoints.kubernetes.io/last-change-trigger-time`, as Unix milliseconds.
    pub trigger_time_ms: Option<i64>,
}

/// One endpoint of a slice: 48 bytes, as there are as many as Pods behind Services. It was 72,
/// then 64; at 48 a slice of 10 endpoints takes a 512-byte allocation rather than 640 (1.3 MB
/// less at 100,000 endpoints), and the hostname and the Pod's name take one allocation, not two.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Its addresses (all of the slice's address family).
    pub addresses: Addresses,
    /// `conditions.ready`; absent means ready. Already honours `publishNotReadyAddresses`.
    pub ready: bool,
    /// `conditions.serving`; absent means the same as ready.
    pub serving: bool,
    /// `conditions.terminating`; absent means false.
    pub terminating: bool,
    /// The hostname, then the target Pod's name unless it equals the hostname (a StatefulSet
    /// Pod's does).
    names: Option<Box<str>>,
    /// The hostname's length within `names`; 0 when there is none.
    hostname_len: u8,
    /// Whether the target is a Pod: its name follows the hostname, or is the hostname when
    /// nothing follows.
    has_pod: bool,
}

/// An endpoint's conditions, as the EndpointSlice says them (absent `ready` means ready; absent
/// `serving` means `ready`; absent `terminating` means not terminating).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conditions {
    /// Ready to receive traffic (what DNS answers).
    pub ready: bool,
    /// Serving, whether terminating or not.
    pub serving: bool,
    /// Terminating.
    pub terminating: bool,
}

impl Endpoint {
    /// An endpoint. `hostname` must be a DNS label (the projection checks it: at most 63 bytes);
    /// its length is kept in a byte, so one over 255 bytes is dropped. It is kept as given,
    /// without a copy, unless a Pod name that differs follows it.
    pub fn new(addresses: Addresses, hostname: Option<String>, pod: Option<&str>, conditions: Conditions) -> Endpoint {
        let Conditions { ready, serving, terminating } = conditions;
        let mut names = hostname.filter(|h| h.len() <= usize::from(u8::MAX)).unwrap_or_default();
        let hostname_len = names.len() as u8;
        let pod = pod.filter(|p| !p.is_empty());
        if let Some(pod) = pod
            && pod != names
        {
            names.push_str(pod);
        }
        Endpoint {
            addresses,
            ready,
            serving,
            terminating,
            names: (!names.is_empty()).then(|| names.into_boxed_str()),
            hostname_len,
            has_pod: pod.is_some(),
        }
    }

    /// `hostname` (StatefulSet Pods), when it is a valid DNS label.
    pub fn hostname(&self) -> Option<&str> {
        let len = usize::from(self.hostname_len);
        self.names.as_deref().filter(|_| len > 0).map(|n| &n[..len])
    }

    /// `targetRef.name` when the target is a Pod.
    pub fn pod_name(&self) -> Option<&str> {
        let names = self.names.as_deref().filter(|_| self.has_pod)?;
        let after = &names[usize::from(self.hostname_len)..];
        Some(if after.is_empty() { names } else { after })
    }
}

// One slot of a slice's endpoint list: keep it at 48 bytes (on 64-bit targets).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(size_of::<Endpoint>() == 48);

/// An endpoint's addresses: the API allows up to 100, but there is almost always one, and one is
/// kept inline (24 bytes; a `SmallVec` of one took 32).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addresses {
    /// The usual single address.
    One(IpAddr),
    /// None or several.
    Many(Box<[IpAddr]>),
}

impl std::ops::Deref for Addresses {
    type Target = [IpAddr];

    fn deref(&self) -> &[IpAddr] {
        match self {
            Addresses::One(ip) => std::slice::from_ref(ip),
            Addresses::Many(ips) => ips,
        }
    }
}

impl From<IpAddr> for Addresses {
    fn from(ip: IpAddr) -> Self {
        Addresses::One(ip)
    }
}

impl From<SmallVec<[IpAddr; 1]>> for Addresses {
    fn from(ips: SmallVec<[IpAddr; 1]>) -> Self {
        match ips[..] {
            [ip] => Addresses::One(ip),
            _ => Addresses::Many(ips.into_iter().collect()),
        }
    }
}

impl FromIterator<IpAddr> for Addresses {
    fn from_iter<I: IntoIterator<Item = IpAddr>>(iter: I) -> Self {
        iter.into_iter().collect::<SmallVec<[IpAddr; 1]>>().into()
    }
}

impl<'a> IntoIterator for &'a Addresses {
    type Item = &'a IpAddr;
    type IntoIter = std::slice::Iter<'a, IpAddr>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// A Pod, reduced to its addresses (for `--pods verified`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    /// Namespace and name.
    pub key: ObjKey,
    /// `status.podIPs` (or `status.podIP`); empty while the Pod has none or has finished.
    pub ips: SmallVec<[IpAddr; 2]>,
}

/// A Namespace: its existence makes `<ns>.svc.<zone>` answer NODATA instead of NXDOMAIN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// The namespace's name.
    pub name: Arc<str>,
}

/// Why an API object could not be used. The object is skipped with a warning naming it; every
/// other object keeps being served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct ProjectError {
    /// The object, as `Kind namespace/name` (or as much of it as was readable).
    pub what: String,
    /// What is wrong with it.
    pub reason: String,
}

fn meta_key(kind: Kind, meta: &ObjectMeta) -> Result<ObjKey, ProjectError> {
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

/// Projects a decoded object with `project`, or names an undecodable one (as far as its
/// metadata can be read) and its bad field.
pub fn project<T, O>(
    kind: Kind,
    decoded: &mut Decoded<T>,
    project: impl FnOnce(&mut T) -> Result<O, ProjectError>,
) -> Result<O, ProjectError> {
    match decoded {
        Decoded::Ok(object) => project(object),
        Decoded::Invalid(invalid) => {
            let Invalid { meta, reason } = &**invalid;
            let what = match meta_key(kind, meta) {
                Ok(key) if kind == Kind::Namespace => format!("{kind} {}", key.name),
                Ok(key) => format!("{kind} {key}"),
                Err(_) if kind == Kind::Namespace => kind.to_string(),
                Err(e) => e.what,
            };
            Err(ProjectError { what, reason: reason.clone() })
        }
    }
}

pub(super) fn dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= crate::dns::name::MAX_LABEL
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

pub(super) fn project_port(
    name: Option<&str>,
    protocol: Option<&str>,
    port: Option<i32>,
) -> Result<Option<Port>, String> {
    let Some(port) = port else {
        // An EndpointSlice port without a number means "all ports"; it has no SRV record.
        return Ok(None);
    };
    let port = u16::try_from(port).map_err(|_| format!("port {port} is out of range"))?;
    let protocol = Protocol::parse(protocol)?;
    let name = name.filter(|n| !n.is_empty()).filter(|n| dns_label(n)).map(|n| n.to_ascii_lowercase().into_boxed_str());
    Ok(Some(Port { name, protocol, port }))
}

/// Projects a Service. A Service whose cluster IPs do not parse is rejected as a whole (serving a
/// Service with part of its addresses would be a silent lie); one with a bad port loses that port.
pub fn project_service(svc: &api::Service) -> Result<Service, ProjectError> {
    let key = meta_key(Kind::Service, &svc.metadata.object)?;
    let err = |reason: String| ProjectError { what: format!("Service {key}"), reason };
    let no_spec = api::ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&no_spec);
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
            let texts: Vec<&str> = match (&spec.cluster_ips, spec.cluster_ip.as_deref()) {
                (Some(ips), _) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
                (_, Some(ip)) => vec![ip],
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
        // `port` is required in a Service; k8s-openapi read a missing one as 0.
        let number = p.port.unwrap_or(0);
        match project_port(p.name.as_deref(), p.protocol.as_deref(), Some(number)) {
            Ok(Some(port)) => ports.push(port),
            Ok(None) => {}
            Err(reason) => tracing::warn!(service = %key, %reason, "skipping Service port"),
        }
    }
    Ok(Service { key, kind, ports })
}

/// Projects an EndpointSlice. Endpoints whose addresses do not parse are skipped with a warning;
/// FQDN slices (deprecated) carry no addresses we can serve and project to no endpoints.
///
/// Endpoint hostnames and Pod names are moved out of `slice` rather than copied: this is the
/// churn path, and they are two allocations per endpoint. Its metadata is left as it was.
pub fn project_slice(slice: &mut api::EndpointSlice) -> Result<Slice, ProjectError> {
    let key = meta_key(Kind::EndpointSlice, &slice.metadata.object)?;
    let err = |reason: String| ProjectError { what: format!("EndpointSlice {key}"), reason };
    let service = (slice.metadata.service_name.as_deref())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| err(format!("label {SERVICE_NAME_LABEL} is missing")))?;
    let address_type = slice.address_type.as_deref().unwrap_or_default();
    let family = match address_type {
        "IPv4" => Some(false),
        "IPv6" => Some(true),
        "FQDN" => None,
        "" => return Err(err("addressType is missing".into())),
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
    let listed = slice.endpoints.as_mut().map_or(&mut [][..], Vec::as_mut_slice);
    let mut endpoints = Vec::with_capacity(listed.len());
    for (i, ep) in listed.iter_mut().enumerate() {
        let Some(want_v6) = family else { break };
        let mut addresses: SmallVec<[IpAddr; 1]> = SmallVec::new();
        for address in ep.addresses.iter().flat_map(|a| &a.0) {
            match address {
                api::Address::Ip(ip) if ip.is_ipv6() == want_v6 => addresses.push(*ip),
                _ => tracing::warn!(
                    slice = %key, endpoint = i, %address, %address_type,
                    "skipping endpoint address that is not an address of the slice's type"
                ),
            }
        }
        if addresses.is_empty() {
            continue;
        }
        let hostname = match ep.hostname.take() {
            Some(mut h) if dns_label(&h) => {
                h.make_ascii_lowercase();
                Some(h)
            }
            Some(h) => {
                tracing::warn!(slice = %key, endpoint = i, hostname = %h,
                    "endpoint hostname is not a DNS label; using its dashed-IP name");
                None
            }
            None => None,
        };
        let conditions = ep.conditions.as_ref();
        let condition = |pick: fn(&api::Conditions) -> Option<bool>| conditions.and_then(pick);
        let ready = condition(|c| c.ready).unwrap_or(true);
        let pod = (ep.target_ref.as_mut()).filter(|r| r.kind == Some(api::TargetKind::Pod)).and_then(|r| r.name.take());
        endpoints.push(Endpoint::new(
            addresses.into(),
            hostname,
            pod.as_deref(),
            Conditions {
                ready,
                serving: condition(|c| c.serving).unwrap_or(ready),
                terminating: condition(|c| c.terminating).unwrap_or(false),
            },
        ));
    }
    let trigger_time_ms = slice.metadata.trigger_time.as_deref().and_then(parse_rfc3339_ms);
    Ok(Slice { key, service: Arc::from(service), ports, endpoints, trigger_time_ms })
}

/// Projects a Pod. Pods that have finished (`Succeeded`, `Failed`) project with no addresses:
/// their IPs may already belong to another Pod.
pub fn project_pod(pod: &api::Pod) -> Result<Pod, ProjectError> {
    let key = meta_key(Kind::Pod, &pod.metadata.object)?;
    let no_status = api::PodStatus::default();
    let status = pod.status.as_ref().unwrap_or(&no_status);
    let texts: Vec<&str> = match (&status.pod_ips, status.pod_ip.as_deref()) {
        _ if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) => vec![],
        // `ip` is required in `podIPs`; k8s-openapi read a missing one as "".
        (Some(list), _) if !list.is_empty() => list.iter().map(|p| p.ip.as_deref().unwrap_or_default()).collect(),
        (_, Some(ip)) => vec![ip],
        _ => vec![],
    };
    let ips = pod_ips(&key, texts)?;
    Ok(Pod { key, ips })
}

/// A Pod's addresses from the texts of `status.podIPs` (or `podIP`), each once; the Pod is
/// rejected, naming it, if one is not an IP address.
pub fn pod_ips<'a>(
    key: &ObjKey,
    texts: impl IntoIterator<Item = &'a str>,
) -> Result<SmallVec<[IpAddr; 2]>, ProjectError> {
    let mut ips = SmallVec::new();
    for text in texts {
        match parse_ip(text) {
            Some(ip) if !ips.contains(&ip) => ips.push(ip),
            Some(_) => {}
            None => {
                return Err(ProjectError {
                    what: format!("Pod {key}"),
                    reason: format!("pod IP {text:?} is not an IP address"),
                });
            }
        }
    }
    Ok(ips)
}

/// Projects a Namespace.
pub fn project_namespace(ns: &api::Namespace) -> Result<Namespace, ProjectError> {
    let name = ns.metadata.object.name.as_deref().unwrap_or_default();
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

// === multi-cluster projections (decoded in cluster/mcs.rs) ===

/// What a ServiceImport is answered as (MCS DNS specification §2.3, §2.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportKind {
    /// `type: ClusterSetIP`: its `ips`, both families.
    ClusterSetIp(SmallVec<[IpAddr; 2]>),
    /// `type: Headless`: the ready endpoints of every cluster.
    Headless,
}

/// A ServiceImport, reduced to what DNS needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceImport {
    /// Namespace and name (the exported Service's, by namespace sameness).
    pub key: ObjKey,
    /// ClusterSetIP or headless.
    pub kind: ImportKind,
    /// `spec.ports` (SRV for ClusterSetIP imports).
    pub ports: Vec<Port>,
}

/// One cluster's EndpointSlice of a ServiceImport: the slice as the cluster zone keeps it (its
/// `service` is the ServiceImport's name), and the cluster it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSetSlice {
    /// `multicluster.kubernetes.io/source-cluster`, lower case (a DNS label).
    pub cluster: Arc<str>,
    /// The endpoints and ports.
    pub slice: Slice,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes one object as the file source does: YAML to a value, then the type.
    fn decoded<T: serde::de::DeserializeOwned>(yaml: &str) -> Decoded<T> {
        Decoded::from_value(&serde_saphyr::from_str_with_options(yaml, crate::cluster::api::yaml_options()).unwrap())
    }

    fn decode<T: serde::de::DeserializeOwned>(yaml: &str) -> Result<T, Box<Invalid>> {
        match decoded(yaml) {
            Decoded::Ok(object) => Ok(object),
            Decoded::Invalid(invalid) => Err(invalid),
        }
    }

    fn service(yaml: &str) -> Result<Service, ProjectError> {
        project(Kind::Service, &mut decoded(yaml), |s| project_service(s))
    }

    #[test]
    fn service_kinds() {
        let s = service(
            "metadata: {name: web, namespace: ns-0}\nspec: {clusterIP: 10.0.0.1, clusterIPs: [10.0.0.1, 'fd00::1'], ports: [{name: HTTP, port: 80}, {port: 81, protocol: UDP}]}",
        )
        .unwrap();
        assert_eq!(
            s.kind,
            ServiceKind::ClusterIp(SmallVec::from_vec(vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()]))
        );
        assert_eq!(s.ports[0].name.as_deref(), Some("http"));
        assert_eq!(s.ports[1].name, None);
        assert_eq!(s.ports[1].protocol, Protocol::Udp);

        let h = service("metadata: {name: nginx}\nspec: {clusterIP: None}").unwrap();
        assert_eq!(h.kind, ServiceKind::Headless);
        assert_eq!(h.key, ObjKey::new("default", "nginx"));

        let e = service("metadata: {name: db}\nspec: {type: ExternalName, externalName: DB.Example.com.}").unwrap();
        assert_eq!(e.kind, ServiceKind::ExternalName(Name::parse("db.example.com").unwrap()));
    }

    #[test]
    fn bad_services_are_rejected_with_their_name() {
        let err = service("metadata: {name: x, namespace: ns-1}\nspec: {clusterIP: 10.0.0.300}").unwrap_err();
        assert_eq!(err.what, "Service ns-1/x");
        assert!(err.reason.contains("10.0.0.300"), "{err}");
        let err = service("metadata: {name: ext}\nspec: {type: ExternalName, externalName: 1.2.3.4}").unwrap_err();
        assert!(err.reason.contains("IP address"), "{err}");
        assert!(service("metadata: {namespace: a}\nspec: {}").is_err());
    }

    #[test]
    fn slice_conditions_and_addresses() {
        let mut slice: api::EndpointSlice = decode(
            r#"
metadata:
  name: nginx-abc
  namespace: default
  labels: {kubernetes.io/service-name: nginx}
  annotations: {endpoints.kubernetes.io/last-change-trigger-time: "2024-05-01T10:00:00Z"}
addressType: IPv4
ports: [{name: web, port: 80, protocol: TCP}]
endpoints:
- addresses: [10.244.1.5]
  hostname: web-0
  targetRef: {kind: Pod, name: web-0}
- addresses: [10.244.1.6, 10.244.1.7]
  conditions: {ready: false, serving: true, terminating: true}
  targetRef: {kind: Pod, name: nginx-7d9c}
- addresses: ["fd00::1"]
- addresses: [not-an-ip]
"#,
        )
        .unwrap();
        let s = project_slice(&mut slice).unwrap();
        assert_eq!(&*s.service, "nginx");
        assert_eq!(s.endpoints.len(), 2, "the IPv6 and the bad address are skipped");
        assert!(s.endpoints[0].ready && s.endpoints[0].serving && !s.endpoints[0].terminating);
        assert_eq!(s.endpoints[0].hostname(), Some("web-0"));
        assert_eq!(s.endpoints[0].pod_name(), Some("web-0"));
        assert_eq!(*s.endpoints[0].addresses, ["10.244.1.5".parse::<IpAddr>().unwrap()]);
        assert!(!s.endpoints[1].ready && s.endpoints[1].terminating);
        assert_eq!((s.endpoints[1].hostname(), s.endpoints[1].pod_name()), (None, Some("nginx-7d9c")));
        assert_eq!(s.endpoints[1].addresses.len(), 2, "every address of an endpoint is kept");
        assert_eq!(s.trigger_time_ms, Some(1_714_557_600_000));
    }

    #[test]
    fn slice_without_service_label_is_rejected() {
        let mut slice: api::EndpointSlice =
            decode("metadata: {name: s, namespace: a}\naddressType: IPv4\nendpoints: []").unwrap();
        let err = project_slice(&mut slice).unwrap_err();
        assert_eq!(err.what, "EndpointSlice a/s");
    }

    fn slice(yaml: &str) -> Result<Slice, ProjectError> {
        project(Kind::EndpointSlice, &mut decoded(yaml), project_slice)
    }

    const SLICE_META: &str = "metadata: {name: s, namespace: a, labels: {kubernetes.io/service-name: svc}}\n";

    #[test]
    fn a_slice_without_address_type_is_rejected() {
        let err = slice(&format!("{SLICE_META}endpoints: [{{addresses: [10.0.0.1]}}]")).unwrap_err();
        assert_eq!((err.what.as_str(), err.reason.as_str()), ("EndpointSlice a/s", "addressType is missing"));
    }

    /// What the k8s-openapi types refused to decode is refused here too, naming the object and
    /// the field, instead of being read as absent.
    #[test]
    fn wrongly_typed_fields_reject_the_slice_naming_it_and_the_field() {
        for (body, reason) in [
            (
                "endpoints: [{addresses: 10.0.0.1}]",
                r#"endpoints[0].addresses: invalid type: string "10.0.0.1", expected a sequence"#,
            ),
            (
                "endpoints: [{addresses: [10.0.0.1]}, {addresses: [10.0.0.2, 5]}]",
                "endpoints[1].addresses[1]: invalid type: integer `5`, expected a string",
            ),
            (
                "endpoints: [{addresses: [10.0.0.1], conditions: {ready: 'yes'}}]",
                r#"endpoints[0].conditions.ready: invalid type: string "yes", expected a boolean"#,
            ),
            (
                "endpoints: [{addresses: [10.0.0.1], targetRef: Pod}]",
                r#"endpoints[0].targetRef: invalid type: string "Pod", expected struct TargetRef"#,
            ),
            ("endpoints: {}", "endpoints: invalid type: map, expected a sequence"),
            ("ports: [{name: web, port: '80'}]", r#"ports[0].port: invalid type: string "80", expected i32"#),
            (
                "ports: [{name: web, port: 3000000000}]",
                "ports[0].port: invalid value: integer `3000000000`, expected i32",
            ),
            ("ports: [{name: web, port: 80.5}]", "ports[0].port: invalid type: floating point `80.5`, expected i32"),
            ("ports: [null]", "ports[0]: invalid type: null, expected struct Port"),
        ] {
            let err = slice(&format!("{SLICE_META}addressType: IPv4\n{body}")).unwrap_err();
            assert_eq!((err.what.as_str(), err.reason.as_str()), ("EndpointSlice a/s", reason), "{body}");
        }
        let err = slice(&format!("{SLICE_META}addressType: [IPv4]")).unwrap_err();
        assert_eq!(err.reason, "addressType: invalid type: sequence, expected a string");
    }

    #[test]
    fn wrongly_typed_metadata_is_named_as_far_as_it_can_be() {
        let err = slice("metadata: {name: s, namespace: a, resourceVersion: 5}\naddressType: IPv4").unwrap_err();
        assert_eq!(err.what, "EndpointSlice a/s");
        assert_eq!(err.reason, "metadata.resourceVersion: invalid type: integer `5`, expected a string");
        let err = slice("metadata: {name: [s], namespace: a}\naddressType: IPv4").unwrap_err();
        assert_eq!(err.what, "EndpointSlice in namespace a");
        assert_eq!(err.reason, "metadata.name: invalid type: sequence, expected a string");
        let err =
            slice("metadata: {name: s, namespace: a, labels: {kubernetes.io/service-name: 5}}\naddressType: IPv4")
                .unwrap_err();
        assert_eq!(
            err.reason,
            "metadata.labels.kubernetes.io/service-name: invalid type: integer `5`, expected a string"
        );
        let err = slice("metadata: s\naddressType: IPv4").unwrap_err();
        assert_eq!(err.reason, r#"metadata: invalid type: string "s", expected struct ObjectMeta"#);

        let err = service("metadata: {name: x, namespace: a}\nspec: {clusterIPs: 10.0.0.1}").unwrap_err();
        assert_eq!(err.what, "Service a/x");
        assert_eq!(err.reason, r#"spec.clusterIPs: invalid type: string "10.0.0.1", expected a sequence"#);
        let err =
            project(Kind::Pod, &mut decoded("metadata: {name: p, namespace: a}\nstatus: {podIPs: [{ip: 5}]}"), |p| {
                project_pod(p)
            })
            .unwrap_err();
        assert_eq!(err.reason, "status.podIPs[0].ip: invalid type: integer `5`, expected a string");
        let mut ns = decoded("metadata: {name: n, resourceVersion: [1]}");
        let err = project(Kind::Namespace, &mut ns, |n| project_namespace(n)).unwrap_err();
        assert_eq!(
            (err.what.as_str(), err.reason.as_str()),
            ("Namespace n", "metadata.resourceVersion: invalid type: sequence, expected a string")
        );
    }

    /// A list as kube-client decodes it: a wrongly typed item fails only itself, named with the
    /// path of its bad field, and keeps its resourceVersion for the watcher.
    #[test]
    fn one_bad_item_of_a_list_fails_only_itself() {
        let text = r#"{"apiVersion":"v1","kind":"ServiceList","metadata":{"resourceVersion":"9"},"items":[
            {"metadata":{"name":"a","namespace":"ns-0"},"spec":{"clusterIP":"10.0.0.1"}},
            {"metadata":{"name":"b","namespace":"ns-0","resourceVersion":"7"},"spec":{"ports":[{"port":"80"}]}},
            "not an object",
            {"metadata":{"name":"c","namespace":"ns-0"},"spec":{"clusterIP":"None"}}]}"#;
        let list: kube::core::ObjectList<Decoded<api::Service>> = serde_json::from_str(text).unwrap();
        let results: Vec<_> = (list.items.into_iter())
            .map(|mut item| {
                let version = kube::Resource::meta(&item).resource_version.clone();
                (project(Kind::Service, &mut item, |s| project_service(s)), version)
            })
            .collect();
        assert_eq!(results[0].0.as_ref().unwrap().key, ObjKey::new("ns-0", "a"));
        let bad = results[1].0.as_ref().unwrap_err();
        assert_eq!(bad.what, "Service ns-0/b");
        assert_eq!(bad.reason, r#"spec.ports[0].port: invalid type: string "80", expected i32"#);
        assert_eq!(results[1].1.as_deref(), Some("7"));
        let not_an_object = results[2].0.as_ref().unwrap_err();
        assert_eq!(not_an_object.what, "Service in namespace default");
        assert_eq!(not_an_object.reason, r#"invalid type: string "not an object", expected struct Service"#);
        assert_eq!(results[3].0.as_ref().unwrap().kind, ServiceKind::Headless);
    }

    /// A watch event as the API server sends it: what is not read (managedFields, other labels
    /// and annotations, owner references, topology) is skipped, whatever its type.
    #[test]
    fn a_watch_event_decodes_what_is_read() {
        let line = r#"{"type":"MODIFIED","object":{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1",
            "metadata":{"name":"web-abc","generateName":"web-","namespace":"ns-0","uid":"u-1","resourceVersion":"42",
              "labels":{"app":"web","kubernetes.io/service-name":"web","weird":{"not":"a string"}},
              "annotations":{"endpoints.kubernetes.io/last-change-trigger-time":"2024-05-01T10:00:00Z","note":7},
              "ownerReferences":[{"apiVersion":"v1","kind":"Service","name":"web","uid":"u-0","controller":true}],
              "managedFields":[{"manager":"kube-controller-manager","operation":"Update","fieldsType":"FieldsV1",
                "fieldsV1":{"f:endpoints":{},"f:metadata":{"f:labels":{".":{}}}}}]},
            "addressType":"IPv6",
            "endpoints":[{"addresses":["fd00::5"],"conditions":{"ready":false,"serving":true,"terminating":true},
              "hostname":"Web-0","targetRef":{"kind":"Pod","namespace":"ns-0","name":"web-0","uid":"u-2"},
              "nodeName":"node-1","zone":"a","hints":{"forZones":[{"name":"a"}]}}],
            "ports":[{"name":"web","protocol":"TCP","port":80,"appProtocol":"http"}]}}"#;
        let event: kube::api::WatchEvent<Decoded<api::EndpointSlice>> = serde_json::from_str(line).unwrap();
        let kube::api::WatchEvent::Modified(Decoded::Ok(mut obj)) = event else { panic!("not a decoded MODIFIED") };
        assert_eq!(obj.metadata.object.resource_version.as_deref(), Some("42"));
        assert_eq!(obj.metadata.object.managed_fields, None);
        let s = project_slice(&mut obj).unwrap();
        assert_eq!(s.key, ObjKey::new("ns-0", "web-abc"));
        assert_eq!(&*s.service, "web");
        assert_eq!(s.ports, [Port { name: Some("web".into()), protocol: Protocol::Tcp, port: 80 }]);
        assert_eq!(
            s.endpoints,
            [Endpoint::new(
                "fd00::5".parse::<IpAddr>().unwrap().into(),
                Some("web-0".into()),
                Some("web-0"),
                Conditions { ready: false, serving: true, terminating: true }
            )]
        );
        assert_eq!(s.trigger_time_ms, Some(1_714_557_600_000));
    }

    #[test]
    fn an_endpoint_gives_back_its_hostname_and_pod_name() {
        let ip: Addresses = "10.0.0.1".parse::<IpAddr>().unwrap().into();
        let cases = [
            (Some("web-0"), Some("web-0")),
            (Some("web-0"), Some("web-0-pod")),
            (Some("web-0"), None),
            (None, Some("nginx-7d9c")),
            (None, None),
        ];
        for (hostname, pod) in cases {
            let ep = Endpoint::new(
                ip.clone(),
                hostname.map(String::from),
                pod,
                Conditions { ready: true, serving: true, terminating: false },
            );
            assert_eq!((ep.hostname(), ep.pod_name()), (hostname, pod));
        }
    }

    #[test]
    fn finished_pods_have_no_addresses() {
        let pod: api::Pod = decode(
            "metadata: {name: p, namespace: a}\nstatus: {phase: Running, podIP: 10.1.1.1, podIPs: [{ip: 10.1.1.1}, {ip: 'fd00::5'}]}",
        )
        .unwrap();
        assert_eq!(project_pod(&pod).unwrap().ips.len(), 2);
        let done: api::Pod =
            decode("metadata: {name: p, namespace: a}\nstatus: {phase: Succeeded, podIP: 10.1.1.1}").unwrap();
        assert!(project_pod(&done).unwrap().ips.is_empty());
    }
}
