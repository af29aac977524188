//! The Kubernetes objects as headless-dns reads them: plain `#[derive(Deserialize)]` structs with
//! only the fields the projections in the object module use.
//!
//! Both sources decode straight into these types. The full k8s-openapi types spent most of a
//! watch event's decoding on fields DNS never reads: `metadata.managedFields` (on an
//! EndpointSlice often longer than its endpoints), every label and annotation, each endpoint's
//! `nodeName`, `zone` and `hints`. serde skips the fields a struct does not declare, so those
//! bytes are scanned and never built.
//!
//! One wrongly typed object must not cost the others: serde cannot resume after an error, so a
//! list (or a watch event, or a manifest) holds each object as a [`Decoded`], which decodes its
//! object on its own and, when that fails, keeps the error with the path of the bad field
//! (`spec.ports[0].port: invalid type: string "80", expected i32`) and as much of the metadata
//! as can be read. The object is then skipped with a warning naming it; every other object keeps
//! being served.
//!
//! Every field is an `Option`: the API omits empty fields and writes `null` for some (an
//! EndpointSlice without endpoints has `"endpoints": null`). Keep these structs to what is read:
//! each field added here is decoded for every object of its kind on every watch event and on
//! every read of a manifest file. A new kind is a struct deriving `Deserialize` with a `metadata:
//! Meta` field, decoded as `Decoded<NewKind>` where a source dispatches on the kind.

use std::fmt;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use smallvec::SmallVec;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The annotation the EndpointSlice controller sets to when the change that produced the slice
/// happened; the DNS programming-latency SLI is measured from it.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// An IP address, as Kubernetes writes them (surrounding space allowed).
pub(crate) fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim().parse().ok()
}

// === Decoded ===

/// One object of a list, a watch event or a manifest: the object, or why it is not one.
#[derive(Clone, Debug)]
pub enum Decoded<T> {
    /// Every declared field has the API's type.
    Ok(T),
    /// A field has another type (or the object is not a map). Boxed: rare, and large.
    Invalid(Box<Invalid>),
}

/// An object that did not decode: what of its metadata could be read, and the first bad field.
#[derive(Clone, Debug, PartialEq)]
pub struct Invalid {
    /// `name`, `namespace` and `resourceVersion`, each if it is a string; the watcher resumes
    /// from the resourceVersion whatever the object holds.
    pub meta: ObjectMeta,
    /// `spec.ports[0].port: invalid type: string "80", expected i32`.
    pub reason: String,
}

impl<T: DeserializeOwned> Decoded<T> {
    /// Decodes one object from its JSON text.
    pub fn from_json(text: &str) -> Decoded<T> {
        // The common case pays nothing for the path: it is tracked only on a second pass over an
        // object that failed.
        match serde_json::from_str(text) {
            Ok(object) => Decoded::Ok(object),
            Err(_) => {
                let error = serde_path_to_error::deserialize::<_, T>(&mut serde_json::Deserializer::from_str(text))
                    .err()
                    .map_or_else(|| "does not decode".to_string(), |e| json_reason(&e));
                let meta = serde_json::from_str::<serde_json::Value>(text).map(|v| readable_meta(&v));
                Decoded::Invalid(Box::new(Invalid { meta: meta.unwrap_or_default(), reason: error }))
            }
        }
    }

    /// Decodes one object from a value (a YAML document or a `List` item).
    pub fn from_value(value: &serde_json::Value) -> Decoded<T> {
        // As from JSON text, the path is tracked only on a second pass over an object that
        // failed: tracking it took a third of a manifest's decoding.
        if let Ok(object) = T::deserialize(value) {
            return Decoded::Ok(object);
        }
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(object) => Decoded::Ok(object),
            Err(e) => Decoded::Invalid(Box::new(Invalid {
                meta: readable_meta(value),
                reason: path_reason(e.path(), e.inner()),
            })),
        }
    }
}

/// The path and the message, without serde_json's position (a column inside one object of a
/// list says less than the path does).
fn json_reason(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let inner = e.inner();
    let text = inner.to_string();
    let position = format!(" at line {} column {}", inner.line(), inner.column());
    path_reason(e.path(), text.strip_suffix(&position).unwrap_or(&text))
}

/// `path: message`, or the message alone when the object itself is wrong (also for the
/// multi-cluster objects, `cluster::mcs`).
pub(crate) fn path_reason(path: &serde_path_to_error::Path, message: impl fmt::Display) -> String {
    match path.to_string().as_str() {
        "." => format!("{message}"),
        path => format!("{path}: {message}"),
    }
}

/// The metadata fields of an undecodable object that are strings.
fn readable_meta(object: &serde_json::Value) -> ObjectMeta {
    let text = |field: &str| object.get("metadata")?.get(field)?.as_str().map(String::from);
    ObjectMeta {
        name: text("name"),
        namespace: text("namespace"),
        resource_version: text("resourceVersion"),
        ..ObjectMeta::default()
    }
}

/// Decodes the item on its own from the text the deserializer holds, so that a wrong type
/// fails this item alone. kube-client decodes lists and watch lines from a buffer
/// (`serde_json::from_str`), which the borrowed [`RawValue`] points into: the item's text is
/// found by one scan and never copied.
impl<'de, T: DeserializeOwned> Deserialize<'de> for Decoded<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        Ok(Decoded::from_json(raw.get()))
    }
}

// === Meta ===

/// `metadata`: what the projections and kube's watcher read.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "MetaFields")]
pub struct Meta {
    /// `name`, `namespace` and `resourceVersion` (all that is kept of it), as
    /// `kube::Resource::meta` hands them to the watcher, which resumes from the resourceVersion.
    pub object: ObjectMeta,
    /// The label [`SERVICE_NAME_LABEL`]; other labels are skipped unread.
    pub service_name: Option<String>,
    /// The annotation [`TRIGGER_TIME_ANNOTATION`]; other annotations are skipped unread.
    pub trigger_time: Option<String>,
}

/// Named as the API names the type, for messages (`expected struct ObjectMeta`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", expecting = "struct ObjectMeta")]
struct MetaFields {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    labels: Option<Labels>,
    annotations: Option<Annotations>,
}

/// `metadata.labels`: the one that is read.
#[derive(Deserialize)]
struct Labels {
    #[serde(rename = "kubernetes.io/service-name")]
    service_name: Option<String>,
}

/// `metadata.annotations`: the one that is read.
#[derive(Deserialize)]
struct Annotations {
    #[serde(rename = "endpoints.kubernetes.io/last-change-trigger-time")]
    trigger_time: Option<String>,
}

impl From<MetaFields> for Meta {
    fn from(fields: MetaFields) -> Meta {
        Meta {
            object: ObjectMeta {
                name: fields.name,
                namespace: fields.namespace,
                resource_version: fields.resource_version,
                ..ObjectMeta::default()
            },
            service_name: fields.labels.and_then(|l| l.service_name),
            trigger_time: fields.annotations.and_then(|a| a.trigger_time),
        }
    }
}

// === EndpointSlice ===

/// `discovery.k8s.io/v1` EndpointSlice.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    /// `metadata`.
    #[serde(default)]
    pub metadata: Meta,
    /// `addressType`.
    pub address_type: Option<String>,
    /// `endpoints`.
    pub endpoints: Option<Vec<Endpoint>>,
    /// `ports`.
    pub ports: Option<Vec<Port>>,
}

/// One entry of an EndpointSlice's `endpoints`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// `addresses`.
    pub addresses: Option<Addresses>,
    /// `hostname`.
    pub hostname: Option<String>,
    /// `conditions`.
    pub conditions: Option<Conditions>,
    /// `targetRef`.
    pub target_ref: Option<TargetRef>,
}

/// `conditions` of an endpoint.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Conditions {
    /// `ready`.
    pub ready: Option<bool>,
    /// `serving`.
    pub serving: Option<bool>,
    /// `terminating`.
    pub terminating: Option<bool>,
}

/// `targetRef` of an endpoint.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct TargetRef {
    /// `kind`.
    pub kind: Option<TargetKind>,
    /// `name`.
    pub name: Option<String>,
}

/// A port of an EndpointSlice or a Service.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Port {
    /// `name`.
    pub name: Option<String>,
    /// `protocol`.
    pub protocol: Option<String>,
    /// `port`: `int32` in the API.
    pub port: Option<i32>,
}

/// An endpoint's `addresses`: one, or two when dual-stack, so kept inline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addresses(pub SmallVec<[Address; 1]>);

impl<'de> Deserialize<'de> for Addresses {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AddressesVisitor;
        impl<'de> Visitor<'de> for AddressesVisitor {
            type Value = Addresses;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Addresses, A::Error> {
                let mut addresses = SmallVec::new();
                while let Some(address) = seq.next_element()? {
                    addresses.push(address);
                }
                Ok(Addresses(addresses))
            }
        }
        deserializer.deserialize_seq(AddressesVisitor)
    }
}

/// An endpoint address, parsed as it is read: a valid one is never built as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// Text that is not an IP address (as in an FQDN slice).
    Text(Box<str>),
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AddressVisitor;
        impl Visitor<'_> for AddressVisitor {
            type Value = Address;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E>(self, text: &str) -> Result<Address, E> {
                Ok(parse_ip(text).map_or_else(|| Address::Text(text.into()), Address::Ip))
            }
        }
        deserializer.deserialize_str(AddressVisitor)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(ip) => ip.fmt(f),
            Address::Text(text) => f.write_str(text),
        }
    }
}

/// `targetRef.kind`: only whether it is a Pod is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum TargetKind {
    /// `Pod`.
    Pod,
    /// Anything else.
    #[serde(other)]
    Other,
}

// === Service ===

/// `v1` Service.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Service {
    /// `metadata`.
    #[serde(default)]
    pub metadata: Meta,
    /// `spec`.
    pub spec: Option<ServiceSpec>,
}

/// `spec` of a Service.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `type`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// `externalName`.
    pub external_name: Option<String>,
    /// `clusterIP`.
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// `clusterIPs`.
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Option<Vec<String>>,
    /// `ports`.
    pub ports: Option<Vec<Port>>,
}

// === Pod ===

/// `v1` Pod.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Pod {
    /// `metadata`.
    #[serde(default)]
    pub metadata: Meta,
    /// `status`.
    pub status: Option<PodStatus>,
}

/// `status` of a Pod.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// `phase`.
    pub phase: Option<String>,
    /// `podIP`.
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    /// `podIPs`.
    #[serde(rename = "podIPs")]
    pub pod_ips: Option<Vec<PodIp>>,
}

/// One entry of a Pod's `status.podIPs`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct PodIp {
    /// `ip`.
    pub ip: Option<String>,
}

// === Namespace ===

/// `v1` Namespace.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Namespace {
    /// `metadata`.
    #[serde(default)]
    pub metadata: Meta,
}

/// How YAML is read (manifests and the config file): scalars as YAML 1.2 and serde_yaml read
/// them, so `yes`, `no`, `on`, `off`, `y` and `n` are strings (a namespace `n` is not `false`)
/// and `0755` or `1_000` are not numbers; and no limits on size, since a dump of a large cluster
/// has millions of nodes in thousands of documents and the file is the operator's own, already
/// in memory. Aliases stay limited: they expand beyond the file's size.
pub(crate) fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        // One line, for the log: `… at line 5, column 7`, not a rendered snippet.
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: None,
            max_events: usize::MAX,
            max_nodes: usize::MAX,
            max_documents: usize::MAX,
            max_total_scalar_bytes: usize::MAX,
        },
    }
}
