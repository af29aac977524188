//! The Kubernetes objects as headless-dns reads them: only the fields the projections in
//! object module uses.
//!
//! Both sources decode straight into these types. The full k8s-openapi types spent most of a
//! watch event's decoding on fields DNS never reads: `metadata.managedFields` (on an
//! EndpointSlice often longer than its endpoints), every label and annotation, each endpoint's
//! `nodeName`, `zone` and `hints`. serde skips the fields a struct does not declare, so those
//! bytes are scanned and never built.
//!
//! Every declared field is a [`Field`]: absent, present, or [`Wrong`] (a value of another type
//! than the API's schema says). A wrong type is recorded instead of failing the decode, because
//! serde cannot resume a stream after an error: one bad object would fail a whole list, or be
//! skipped without a name. A struct or list holding a wrong value is itself wrong, so the
//! top-level [`CheckTypes::wrong`] finds any, and the projections reject the object as the
//! k8s-openapi types did, with a warning naming it, while every other object keeps being served.
//!
//! Keep these structs to what is read: each field added here is decoded for every object of its
//! kind on every watch event and on every read of a manifest file.

use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, EnumAccess, IgnoredAny, MapAccess, SeqAccess, Unexpected, VariantAccess, Visitor};
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

// === Field ===

/// One field of an object as the API (or a manifest) carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Field<T> {
    /// Not there, or `null`.
    #[default]
    Absent,
    /// A value of the expected type.
    Present(T),
    /// A value of another type.
    Wrong(Wrong),
}

impl<T> Field<T> {
    /// The value, if present and of the expected type.
    pub fn get(&self) -> Option<&T> {
        match self {
            Field::Present(value) => Some(value),
            Field::Absent | Field::Wrong(_) => None,
        }
    }

    /// The value, if present and of the expected type.
    pub fn get_mut(&mut self) -> Option<&mut T> {
        match self {
            Field::Present(value) => Some(value),
            Field::Absent | Field::Wrong(_) => None,
        }
    }

    /// Takes the value out, if present and of the expected type, leaving the field absent.
    pub fn take(&mut self) -> Option<T> {
        match self {
            Field::Present(_) => std::mem::take(self).into_option(),
            Field::Absent | Field::Wrong(_) => None,
        }
    }

    /// The value, if present and of the expected type.
    pub fn into_option(self) -> Option<T> {
        match self {
            Field::Present(value) => Some(value),
            Field::Absent | Field::Wrong(_) => None,
        }
    }

    /// Whether the field is missing (or `null`).
    pub fn is_absent(&self) -> bool {
        matches!(self, Field::Absent)
    }

    /// What is wrong with this field, which its parent calls `name`.
    pub fn wrong_at(&self, name: &str) -> Option<Wrong> {
        match self {
            Field::Wrong(wrong) => Some(wrong.under(name)),
            Field::Absent | Field::Present(_) => None,
        }
    }
}

impl Field<String> {
    /// The text, if present and a string.
    pub fn as_str(&self) -> Option<&str> {
        self.get().map(String::as_str)
    }
}

/// A value of another type than the schema's, and where it is. Boxed: it is rare, and a
/// [`Field`] is moved as often as the object it is part of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wrong(Box<WrongAt>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct WrongAt {
    /// Where, below the field that holds it: `[2].conditions.ready`; empty for the field itself.
    path: String,
    /// `expected a boolean, found string "yes"`.
    message: String,
}

impl Wrong {
    fn new(expected: &str, found: Unexpected<'_>) -> Wrong {
        let message = match found {
            Unexpected::Unit => format!("expected {expected}, found null"),
            found => format!("expected {expected}, found {found}"),
        };
        Wrong(Box::new(WrongAt { path: String::new(), message }))
    }

    /// The same, one level up, below the field `name`.
    pub fn under(&self, name: &str) -> Wrong {
        Wrong(Box::new(WrongAt { path: join(name, &self.0.path), message: self.0.message.clone() }))
    }

    /// The same, one level up, at element `index` of a list.
    fn at_index(mut self, index: usize) -> Wrong {
        self.0.path = join(&format!("[{index}]"), &self.0.path);
        self
    }
}

fn join(parent: &str, path: &str) -> String {
    match path.chars().next() {
        None => parent.to_string(),
        Some('[') => format!("{parent}{path}"),
        Some(_) => format!("{parent}.{path}"),
    }
}

impl fmt::Display for Wrong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let WrongAt { path, message } = &*self.0;
        if path.is_empty() { f.write_str(message) } else { write!(f, "{path}: {message}") }
    }
}

/// The shapes of JSON or YAML a field type accepts. A [`Field`] of it records every other shape
/// as [`Wrong`], after reading past it.
pub trait Shape: Sized {
    /// What the schema expects, for the message: `a string`.
    const EXPECTED: &'static str;

    /// From `true` or `false`.
    fn from_bool(_: bool) -> Option<Self> {
        None
    }

    /// From an integer.
    fn from_int(_: i64) -> Option<Self> {
        None
    }

    /// From a string.
    fn from_text(_: &str) -> Option<Self> {
        None
    }

    /// From an owned string; gives it back when it is not accepted.
    fn from_owned_text(text: String) -> Result<Self, String> {
        Self::from_text(&text).ok_or(text)
    }

    /// From `null` as an element of a list (a `null` field is [`Field::Absent`]).
    fn from_null() -> Option<Self> {
        None
    }

    /// From a list. Must read all of it.
    fn from_seq<'de, A: SeqAccess<'de>>(seq: A) -> Result<Result<Self, Wrong>, A::Error> {
        drain_seq(seq)?;
        Ok(Err(Wrong::new(Self::EXPECTED, Unexpected::Seq)))
    }

    /// From a map. Must read all of it.
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Result<Self, Wrong>, A::Error> {
        drain_map(map)?;
        Ok(Err(Wrong::new(Self::EXPECTED, Unexpected::Map)))
    }
}

/// Reads the rest of a list, unbuilt.
pub fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Reads the rest of a map, unbuilt.
pub fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

impl<'de, T: Shape> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor(PhantomData))
    }
}

struct FieldVisitor<T>(PhantomData<T>);

impl<T: Shape> FieldVisitor<T> {
    fn shaped(value: Option<T>, found: Unexpected<'_>) -> Field<T> {
        match value {
            Some(value) => Field::Present(value),
            None => Field::Wrong(Wrong::new(T::EXPECTED, found)),
        }
    }
}

impl<T> From<Result<T, Wrong>> for Field<T> {
    fn from(result: Result<T, Wrong>) -> Field<T> {
        match result {
            Ok(value) => Field::Present(value),
            Err(wrong) => Field::Wrong(wrong),
        }
    }
}

impl<'de, T: Shape> Visitor<'de> for FieldVisitor<T> {
    type Value = Field<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTED)
    }

    fn visit_unit<E>(self) -> Result<Field<T>, E> {
        Ok(Field::Absent)
    }

    fn visit_none<E>(self) -> Result<Field<T>, E> {
        Ok(Field::Absent)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Field<T>, D::Error> {
        Field::deserialize(deserializer)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Field<T>, E> {
        Ok(Self::shaped(T::from_bool(v), Unexpected::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Field<T>, E> {
        Ok(Self::shaped(T::from_int(v), Unexpected::Signed(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Field<T>, E> {
        Ok(Self::shaped(i64::try_from(v).ok().and_then(T::from_int), Unexpected::Unsigned(v)))
    }

    fn visit_i128<E>(self, _: i128) -> Result<Field<T>, E> {
        Ok(Field::Wrong(Wrong::new(T::EXPECTED, Unexpected::Other("a 128-bit integer"))))
    }

    fn visit_u128<E>(self, _: u128) -> Result<Field<T>, E> {
        Ok(Field::Wrong(Wrong::new(T::EXPECTED, Unexpected::Other("a 128-bit integer"))))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Field<T>, E> {
        Ok(Field::Wrong(Wrong::new(T::EXPECTED, Unexpected::Float(v))))
    }

    fn visit_str<E>(self, v: &str) -> Result<Field<T>, E> {
        Ok(Self::shaped(T::from_text(v), Unexpected::Str(v)))
    }

    fn visit_string<E>(self, v: String) -> Result<Field<T>, E> {
        Ok(match T::from_owned_text(v) {
            Ok(value) => Field::Present(value),
            Err(v) => Field::Wrong(Wrong::new(T::EXPECTED, Unexpected::Str(&v))),
        })
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Field<T>, E> {
        Ok(Field::Wrong(Wrong::new(T::EXPECTED, Unexpected::Bytes(v))))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<T>, A::Error> {
        T::from_seq(seq).map(Field::from)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<T>, A::Error> {
        T::from_map(map).map(Field::from)
    }

    /// A YAML value with a tag of its own (`!thing value`).
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Field<T>, A::Error> {
        let (IgnoredAny, variant) = data.variant::<IgnoredAny>()?;
        variant.newtype_variant::<IgnoredAny>()?;
        Ok(Field::Wrong(Wrong::new(T::EXPECTED, Unexpected::Other("a tagged value"))))
    }
}

impl Shape for String {
    const EXPECTED: &'static str = "a string";

    fn from_text(text: &str) -> Option<Self> {
        Some(text.to_string())
    }

    fn from_owned_text(text: String) -> Result<Self, String> {
        Ok(text)
    }
}

impl Shape for bool {
    const EXPECTED: &'static str = "a boolean";

    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

/// Ports are `int32` in the API.
impl Shape for i32 {
    const EXPECTED: &'static str = "a 32-bit integer";

    fn from_int(v: i64) -> Option<Self> {
        i32::try_from(v).ok()
    }
}

/// A list is wrong if any element is.
impl<T: Shape> Shape for Vec<T> {
    const EXPECTED: &'static str = "a list";

    fn from_seq<'de, A: SeqAccess<'de>>(seq: A) -> Result<Result<Self, Wrong>, A::Error> {
        // As serde's own `Vec` impl: trust the size hint only so far.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        Ok(read_seq(seq, |item| items.push(item))?.map_or(Ok(items), Err))
    }
}

/// A list that is usually short (an endpoint's addresses: one, or two when dual-stack).
impl<A: smallvec::Array<Item: Shape>> Shape for SmallVec<A> {
    const EXPECTED: &'static str = "a list";

    fn from_seq<'de, S: SeqAccess<'de>>(seq: S) -> Result<Result<Self, Wrong>, S::Error> {
        let mut items = SmallVec::new();
        Ok(read_seq(seq, |item| items.push(item))?.map_or(Ok(items), Err))
    }
}

/// Reads a list into `push`, up to its first wrong element, and past the rest.
fn read_seq<'de, T: Shape, A: SeqAccess<'de>>(mut seq: A, mut push: impl FnMut(T)) -> Result<Option<Wrong>, A::Error> {
    let mut index = 0;
    while let Some(item) = seq.next_element::<Field<T>>()? {
        let item = match item {
            Field::Absent => T::from_null().ok_or_else(|| Wrong::new(T::EXPECTED, Unexpected::Unit)),
            Field::Present(value) => Ok(value),
            Field::Wrong(wrong) => Err(wrong),
        };
        match item {
            Ok(value) => push(value),
            Err(wrong) => {
                drain_seq(seq)?;
                return Ok(Some(wrong.at_index(index)));
            }
        }
        index += 1;
    }
    Ok(None)
}

/// The first wrongly typed field of a struct, if any.
pub trait CheckTypes {
    /// The first field (in declaration order) holding a value of the wrong type.
    fn wrong(&self) -> Option<Wrong>;
}

/// Declares an API struct: each field a [`Field`] named as the API names it, and
/// [`CheckTypes`] over all of them in order. A struct with `metadata` is an object (its
/// metadata checked first); one without is part of one, a map that is wrong if any field is.
macro_rules! api_struct {
    ($(#[$attr:meta])* pub struct $name:ident { metadata, $($field:ident: $ty:ty = $json:literal,)* }) => {
        api_struct!(@struct $(#[$attr])* $name { $($field: $ty = $json,)* } {
            /// `metadata`.
            pub metadata: Meta,
        });

        impl CheckTypes for $name {
            fn wrong(&self) -> Option<Wrong> {
                self.metadata.wrong() $(.or_else(|| self.$field.wrong_at($json)))*
            }
        }
    };
    ($(#[$attr:meta])* pub struct $name:ident { $($field:ident: $ty:ty = $json:literal,)* }) => {
        api_struct!(@struct $(#[$attr])* $name { $($field: $ty = $json,)* } {});

        impl CheckTypes for $name {
            fn wrong(&self) -> Option<Wrong> {
                None $(.or_else(|| self.$field.wrong_at($json)))*
            }
        }

        impl Shape for $name {
            const EXPECTED: &'static str = "a map";

            fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Result<Self, Wrong>, A::Error> {
                let value = $name::deserialize(MapAccessDeserializer::new(map))?;
                Ok(value.wrong().map_or(Ok(value), Err))
            }
        }
    };
    (@struct $(#[$attr:meta])* $name:ident { $($field:ident: $ty:ty = $json:literal,)* } { $($meta:tt)* }) => {
        $(#[$attr])*
        #[derive(Clone, Debug, Default, PartialEq, Deserialize)]
        #[serde(default)]
        pub struct $name {
            $($meta)*
            $(
                #[doc = concat!("`", $json, "`.")]
                #[serde(rename = $json)]
                pub $field: Field<$ty>,
            )*
        }
    };
}

// === Meta ===

/// `metadata`: what the projections and kube's watcher read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Meta {
    /// `name`, `namespace` and `resourceVersion` (all that is kept of it), as
    /// `kube::Resource::meta` hands them to the watcher, which resumes from the resourceVersion.
    pub object: ObjectMeta,
    /// The label [`SERVICE_NAME_LABEL`]; other labels are skipped unread.
    pub service_name: Option<String>,
    /// The annotation [`TRIGGER_TIME_ANNOTATION`]; other annotations are skipped unread.
    pub trigger_time: Option<String>,
    wrong: Option<Wrong>,
}

impl Meta {
    /// The first wrongly typed field, as `metadata.name: …`.
    pub fn wrong(&self) -> Option<Wrong> {
        self.wrong.clone()
    }
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct MetaFields {
    name: Field<String>,
    namespace: Field<String>,
    resource_version: Field<String>,
    labels: Field<OneEntry<ServiceNameLabel>>,
    annotations: Field<OneEntry<TriggerTimeAnnotation>>,
}

/// Never wrong as a whole: a wrongly typed field is reported, but the name is still used.
impl Shape for MetaFields {
    const EXPECTED: &'static str = "a map";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Result<Self, Wrong>, A::Error> {
        MetaFields::deserialize(MapAccessDeserializer::new(map)).map(Ok)
    }
}

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = match Field::<MetaFields>::deserialize(deserializer)? {
            Field::Absent => return Ok(Meta::default()),
            Field::Wrong(wrong) => return Ok(Meta { wrong: Some(wrong.under("metadata")), ..Meta::default() }),
            Field::Present(fields) => fields,
        };
        let wrong = (fields.name.wrong_at("name"))
            .or_else(|| fields.namespace.wrong_at("namespace"))
            .or_else(|| fields.resource_version.wrong_at("resourceVersion"))
            .or_else(|| fields.labels.wrong_at("labels"))
            .or_else(|| fields.annotations.wrong_at("annotations"))
            .map(|w| w.under("metadata"));
        Ok(Meta {
            object: ObjectMeta {
                name: fields.name.into_option(),
                namespace: fields.namespace.into_option(),
                resource_version: fields.resource_version.into_option(),
                ..ObjectMeta::default()
            },
            service_name: fields.labels.into_option().and_then(|e| e.value),
            trigger_time: fields.annotations.into_option().and_then(|e| e.value),
            wrong,
        })
    }
}

/// Names the one entry of a string map that is read.
pub trait MapKey {
    /// The key.
    const KEY: &'static str;
}

/// The label `kubernetes.io/service-name`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceNameLabel;

impl MapKey for ServiceNameLabel {
    const KEY: &'static str = SERVICE_NAME_LABEL;
}

/// The annotation `endpoints.kubernetes.io/last-change-trigger-time`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TriggerTimeAnnotation;

impl MapKey for TriggerTimeAnnotation {
    const KEY: &'static str = TRIGGER_TIME_ANNOTATION;
}

/// One entry of a map of strings (labels, annotations); the others are read past, unbuilt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct OneEntry<K> {
    value: Option<String>,
    key: PhantomData<K>,
}

/// Whether a map key is `K::KEY`, compared without building it.
struct IsKey<K>(bool, PhantomData<K>);

impl<K: MapKey> Shape for IsKey<K> {
    const EXPECTED: &'static str = "a string";

    fn from_text(text: &str) -> Option<Self> {
        Some(IsKey(text == K::KEY, PhantomData))
    }
}

impl<K: MapKey> Shape for OneEntry<K> {
    const EXPECTED: &'static str = "a map of strings";

    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Result<Self, Wrong>, A::Error> {
        let mut value = Field::Absent;
        while let Some(key) = map.next_key::<Field<IsKey<K>>>()? {
            if matches!(key, Field::Present(IsKey(true, _))) {
                value = map.next_value::<Field<String>>()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        match value {
            Field::Wrong(wrong) => Ok(Err(wrong.under(&format!("[{:?}]", K::KEY)))),
            value => Ok(Ok(OneEntry { value: value.into_option(), key: PhantomData })),
        }
    }
}

// === EndpointSlice ===

api_struct! {
    /// `discovery.k8s.io/v1` EndpointSlice.
    pub struct EndpointSlice {
        metadata,
        address_type: String = "addressType",
        endpoints: Vec<Endpoint> = "endpoints",
        ports: Vec<Port> = "ports",
    }
}

api_struct! {
    /// One entry of an EndpointSlice's `endpoints`.
    pub struct Endpoint {
        addresses: SmallVec<[Address; 1]> = "addresses",
        hostname: String = "hostname",
        conditions: Conditions = "conditions",
        target_ref: TargetRef = "targetRef",
    }
}

api_struct! {
    /// `conditions` of an endpoint.
    pub struct Conditions {
        ready: bool = "ready",
        serving: bool = "serving",
        terminating: bool = "terminating",
    }
}

api_struct! {
    /// `targetRef` of an endpoint.
    pub struct TargetRef {
        kind: TargetKind = "kind",
        name: String = "name",
    }
}

api_struct! {
    /// A port of an EndpointSlice or a Service.
    pub struct Port {
        name: String = "name",
        protocol: String = "protocol",
        port: i32 = "port",
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

impl Shape for Address {
    const EXPECTED: &'static str = "a string";

    fn from_text(text: &str) -> Option<Self> {
        Some(parse_ip(text).map_or_else(|| Address::Text(text.into()), Address::Ip))
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// `Pod`.
    Pod,
    /// Anything else.
    Other,
}

impl Shape for TargetKind {
    const EXPECTED: &'static str = "a string";

    fn from_text(text: &str) -> Option<Self> {
        Some(if text == "Pod" { TargetKind::Pod } else { TargetKind::Other })
    }
}

// === Service ===

api_struct! {
    /// `v1` Service.
    pub struct Service {
        metadata,
        spec: ServiceSpec = "spec",
    }
}

api_struct! {
    /// `spec` of a Service.
    pub struct ServiceSpec {
        type_: String = "type",
        external_name: String = "externalName",
        cluster_ip: String = "clusterIP",
        cluster_ips: Vec<String> = "clusterIPs",
        ports: Vec<Port> = "ports",
    }
}

// === Pod ===

api_struct! {
    /// `v1` Pod.
    pub struct Pod {
        metadata,
        status: PodStatus = "status",
    }
}

api_struct! {
    /// `status` of a Pod.
    pub struct PodStatus {
        phase: String = "phase",
        pod_ip: String = "podIP",
        pod_ips: Vec<PodIp> = "podIPs",
    }
}

api_struct! {
    /// One entry of a Pod's `status.podIPs`.
    pub struct PodIp {
        ip: String = "ip",
    }
}

// === Namespace ===

api_struct! {
    /// `v1` Namespace.
    pub struct Namespace {
        metadata,
    }
}
