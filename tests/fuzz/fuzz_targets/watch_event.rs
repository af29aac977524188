//! Fuzzes the JSON object decoder: the input is one line of a watch stream, decoded as
//! kube-client decodes it (`serde_json::from_slice::<WatchEvent<Decoded<K>>>`) for each kind the
//! Kubernetes source watches, then projected as the source projects it.
//!
//! Invariants checked for every input:
//! - nothing panics;
//! - no divergence between the two ways an object is decoded: from its JSON text (a watch event,
//!   `Decoded::from_json`, which a `RawValue` hands the object's text to) and from a JSON value
//!   (a YAML manifest or a `List` item, `Decoded::from_value`) give the same projected object, or
//!   both reject it. Except for a text with a key twice in one object: JSON leaves its meaning
//!   open, the text decoder rejects the object (serde's "duplicate field") and a value keeps the
//!   last; the API server never writes one, so such lines are only decoded, not compared.
#![no_main]

use headless_dns::cluster::api::{self, Decoded};
use headless_dns::cluster::object::{self, ProjectError};
use headless_dns::cluster::{Kind, Object, mcs};
use kube::api::DynamicObject;
use kube::core::WatchEvent;
use libfuzzer_sys::fuzz_target;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::collections::HashSet;
use std::fmt;

/// Decodes from JSON without a key twice in any object.
struct Unique;

impl<'de> de::Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
        d.deserialize_any(Unique)
    }
}

impl<'de> Visitor<'de> for Unique {
    type Value = Unique;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key) {
                return Err(de::Error::custom("a key twice"));
            }
            map.next_value::<Unique>()?;
        }
        Ok(Unique)
    }
}

/// Decodes the line as a watch event of `T` and projects its object; with the object's value
/// (if the line is a watch event of any JSON), also checks that decoding from the value agrees.
fn check<T: DeserializeOwned>(
    data: &[u8],
    value: Option<&Value>,
    kind: Kind,
    project: impl Fn(&mut T) -> Result<Object, ProjectError>,
) {
    let Ok(event) = serde_json::from_slice::<WatchEvent<Decoded<T>>>(data) else { return };
    let mut decoded = match event {
        WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => o,
        WatchEvent::Bookmark(_) | WatchEvent::Error(_) => return,
    };
    let from_text = object::project(kind, &mut decoded, &project);
    let Some(value) = value else { return };
    let from_value = object::project(kind, &mut Decoded::from_value(value), &project);
    match (&from_text, &from_value) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{kind}: the text and the value project differently"),
        (Err(_), Err(_)) => {}
        _ => panic!("{kind}: from the text {from_text:?}, from the value {from_value:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let value = match serde_json::from_slice::<WatchEvent<Value>>(data) {
        Ok(WatchEvent::Added(v) | WatchEvent::Modified(v) | WatchEvent::Deleted(v)) => Some(v),
        _ => None,
    };
    let value = value.filter(|_| serde_json::from_slice::<Unique>(data).is_ok());
    let value = value.as_ref();
    check::<api::Service>(data, value, Kind::Service, |s| object::project_service(s).map(Object::Service));
    check::<api::EndpointSlice>(data, value, Kind::EndpointSlice, |s| object::project_slice(s).map(Object::Slice));
    check::<api::Pod>(data, value, Kind::Pod, |p| object::project_pod(p).map(Object::Pod));
    check::<api::Namespace>(data, value, Kind::Namespace, |n| object::project_namespace(n).map(Object::Namespace));
    check::<DynamicObject>(data, value, Kind::ServiceImport, |o| {
        mcs::project_import(&o.metadata, &o.data).map(Object::Import)
    });
    check::<DynamicObject>(data, value, Kind::ClusterSetSlice, |o| {
        mcs::project_cluster_slice(&o.metadata, &o.data).map(Object::ClusterSetSlice)
    });
});
