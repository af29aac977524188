//! Fuzzes the JSON object decoder: the input is one line of a watch stream, decoded as
//! kube-client decodes it (`serde_json::from_slice::<WatchEvent<Decoded<K>>>`) for each kind the
//! Kubernetes source watches, then projected as the source projects it.
//!
//! Invariants checked for every input:
//! - nothing panics;
//! - no divergence between the two ways an object is decoded: from its JSON text (a watch event,
//!   `Decoded::from_json`, which a `RawValue` hands the object's text to) and from a JSON value
//!   (a YAML manifest or a `List` item, `Decoded::from_value`) give the same projected object, or
//!   both reject it.
#![no_main]

use headless_dns::cluster::api::{self, Decoded};
use headless_dns::cluster::object::{self, ProjectError};
use headless_dns::cluster::{Kind, Object, mcs};
use kube::api::DynamicObject;
use kube::core::WatchEvent;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde_json::Value;

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
