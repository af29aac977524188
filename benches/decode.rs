//! Decoding what the sources read: the k8s-openapi types against the slim `cluster::api` types.
//!
//! - `watch_event/<path>`: one EndpointSlice watch event line as the API server sends it,
//!   `{"type":"MODIFIED","object":{…}}` with 10 endpoints (conditions, hostname, targetRef,
//!   nodeName, zone), a named port, the EndpointSlice controller's labels, the trigger-time
//!   annotation, an owner reference and the controller's `managedFields` entry. Decoded as
//!   kube-client decodes a watch line (`serde_json::from_str::<WatchEvent<K>>`, with `K` the
//!   watcher's `Decoded<api::EndpointSlice>` on the slim path), then projected.
//! - `yaml/<path>`: a manifest of one headless Service and its EndpointSlice (10 endpoints), in
//!   the shape `benches/load/run.py` writes, through `parse_manifests`.
//!
//! `<path>` is `openapi` (k8s-openapi types and the projections as they were before the slim
//! types, kept in `support/openapi.rs`) or `slim` (`cluster::api` and the current projections);
//! `watch_event/scan_only` reads the line without building anything, the floor for any decoder
//! behind kube-client's `serde_json::from_str`.
//! Before measuring, the binary checks that both paths give the same objects from the same
//! input, and prints the heap allocations and bytes of one decode on each.
//!
//! Run: `cargo bench --bench decode` (add `-- --warm-up-time 1 --measurement-time 3` for a quick
//! run).

mod support;

#[path = "support/openapi.rs"]
mod openapi;

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use k8s_openapi::api::discovery::v1 as discovery;
use kube::api::WatchEvent;

use headless_dns::cluster::api::{self, Decoded};
use headless_dns::cluster::object::{self, Object};
use headless_dns::source::file::parse_manifests;

#[global_allocator]
static ALLOC: support::Counting = support::Counting;

const ENDPOINTS: usize = 10;
const UID: &str = "5f0c6a1e-8d5b-4a2f-9a51-3c2d7e9b1f40";

/// The watch event, field order as the API server writes it (Go struct order, `type` first).
fn watch_event() -> String {
    let mut endpoints = String::new();
    for p in 0..ENDPOINTS {
        if p > 0 {
            endpoints.push(',');
        }
        write!(
            endpoints,
            r#"{{"addresses":["10.244.{node}.{ip}"],"conditions":{{"ready":true,"serving":true,"terminating":false}},"hostname":"web-{p}","targetRef":{{"kind":"Pod","namespace":"ns-0","name":"web-{p}","uid":"8e1b2c3d-0000-4000-8000-00000000000{p}"}},"nodeName":"node-{node}","zone":"zone-{zone}"}}"#,
            node = p % 3,
            ip = 10 + p,
            zone = ["a", "b", "c"][p % 3],
        )
        .unwrap();
    }
    let fields_v1 = format!(
        r#"{{"f:addressType":{{}},"f:endpoints":{{}},"f:metadata":{{"f:annotations":{{".":{{}},"f:endpoints.kubernetes.io/last-change-trigger-time":{{}}}},"f:generateName":{{}},"f:labels":{{".":{{}},"f:app.kubernetes.io/name":{{}},"f:endpointslice.kubernetes.io/managed-by":{{}},"f:kubernetes.io/service-name":{{}},"f:service.kubernetes.io/headless":{{}}}},"f:ownerReferences":{{".":{{}},"k:{{\"uid\":\"{UID}\"}}":{{}}}}}},"f:ports":{{}}}}"#
    );
    format!(
        concat!(
            r#"{{"type":"MODIFIED","object":{{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","#,
            r#""metadata":{{"name":"web-7xk2p","generateName":"web-","namespace":"ns-0","#,
            r#""uid":"0b6f4a2e-3c1d-4e5f-8a9b-7c6d5e4f3a2b","resourceVersion":"48213577","generation":42,"#,
            r#""creationTimestamp":"2025-01-01T00:00:00Z","#,
            r#""labels":{{"app.kubernetes.io/name":"web","endpointslice.kubernetes.io/managed-by":"endpointslice-controller.k8s.io","kubernetes.io/service-name":"web","service.kubernetes.io/headless":""}},"#,
            r#""annotations":{{"endpoints.kubernetes.io/last-change-trigger-time":"2025-01-01T00:10:00Z"}},"#,
            r#""ownerReferences":[{{"apiVersion":"v1","kind":"Service","name":"web","uid":"{uid}","controller":true,"blockOwnerDeletion":true}}],"#,
            r#""managedFields":[{{"manager":"kube-controller-manager","operation":"Update","apiVersion":"discovery.k8s.io/v1","time":"2025-01-01T00:10:00Z","fieldsType":"FieldsV1","fieldsV1":{fields}}}]}},"#,
            r#""addressType":"IPv4","endpoints":[{endpoints}],"ports":[{{"name":"web","protocol":"TCP","port":80}}]}}}}"#,
        ),
        uid = UID,
        fields = fields_v1,
        endpoints = endpoints,
    )
}

/// A headless Service and its EndpointSlice.
fn manifest() -> String {
    let mut yaml = String::from(concat!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: ns-0\n  labels: {app.kubernetes.io/name: web}\n",
        "spec:\n  clusterIP: None\n  clusterIPs: [None]\n  selector: {app: web}\n",
        "  ports:\n  - name: web\n    port: 80\n    protocol: TCP\n    targetPort: 8080\n",
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-7xk2p\n  namespace: ns-0\n",
        "  labels:\n    kubernetes.io/service-name: web\n    endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io\n",
        "  annotations:\n    endpoints.kubernetes.io/last-change-trigger-time: \"2025-01-01T00:10:00Z\"\n",
        "addressType: IPv4\nports:\n- name: web\n  port: 80\n  protocol: TCP\nendpoints:\n",
    ));
    for p in 0..ENDPOINTS {
        write!(
            yaml,
            "- addresses: [10.244.{node}.{ip}]\n  hostname: web-{p}\n  conditions: {{ready: true, serving: true, terminating: false}}\n  targetRef: {{kind: Pod, name: web-{p}, namespace: ns-0}}\n  nodeName: node-{node}\n",
            node = p % 3,
            ip = 10 + p,
        )
        .unwrap();
    }
    yaml
}

fn event_openapi(line: &str) -> Object {
    match serde_json::from_str::<WatchEvent<discovery::EndpointSlice>>(line) {
        Ok(WatchEvent::Modified(slice)) => Object::Slice(openapi::project_slice(&slice).unwrap()),
        other => panic!("not a MODIFIED event: {:?}", other.map_err(|e| e.to_string())),
    }
}

fn event_slim(line: &str) -> Object {
    match serde_json::from_str::<WatchEvent<Decoded<api::EndpointSlice>>>(line) {
        Ok(WatchEvent::Modified(Decoded::Ok(mut slice))) => Object::Slice(object::project_slice(&mut slice).unwrap()),
        other => panic!("not a MODIFIED event: {:?}", other.map_err(|e| e.to_string())),
    }
}

fn yaml_openapi(text: &str) -> Vec<Object> {
    openapi::parse_manifests(text, Path::new("bench.yaml")).unwrap()
}

fn yaml_slim(text: &str) -> Vec<Object> {
    parse_manifests(text, Path::new("bench.yaml")).unwrap()
}

/// Both paths give the same objects; then what one decode allocates on each.
fn check_and_count(line: &str, yaml: &str) {
    let slice = event_slim(line);
    assert_eq!(event_openapi(line), slice, "the watch event decodes the same both ways");
    let Object::Slice(s) = &slice else { unreachable!() };
    assert_eq!((s.endpoints.len(), s.ports.len(), s.trigger_time_ms.is_some()), (ENDPOINTS, 1, true));
    let objects = yaml_slim(yaml);
    assert_eq!(yaml_openapi(yaml), objects, "the manifest decodes the same both ways");
    assert_eq!(objects.len(), 2);

    println!("watch event: {} bytes; manifest: {} bytes", line.len(), yaml.len());
    let count = |what: &str, f: &dyn Fn()| {
        let (allocs, bytes) = support::allocations_and_bytes_per_call(1_000, f);
        println!("{what}: {allocs:.0} allocations, {bytes:.0} bytes per decode");
    };
    count("watch_event/openapi", &|| drop(black_box(event_openapi(line))));
    count("watch_event/slim", &|| drop(black_box(event_slim(line))));
    count("yaml/openapi", &|| drop(black_box(yaml_openapi(yaml))));
    count("yaml/slim", &|| drop(black_box(yaml_slim(yaml))));
}

fn bench(c: &mut Criterion) {
    let line = watch_event();
    let yaml = manifest();
    check_and_count(&line, &yaml);

    let mut group = c.benchmark_group("watch_event");
    group.throughput(Throughput::Elements(1));
    group.bench_function("openapi", |b| b.iter(|| event_openapi(black_box(&line))));
    group.bench_function("slim", |b| b.iter(|| event_slim(black_box(&line))));
    group.bench_function("scan_only", |b| {
        b.iter(|| serde_json::from_str::<serde::de::IgnoredAny>(black_box(&line)).unwrap())
    });
    group.finish();

    let mut group = c.benchmark_group("yaml");
    group.throughput(Throughput::Elements(2));
    group.bench_function("openapi", |b| b.iter(|| yaml_openapi(black_box(&yaml))));
    group.bench_function("slim", |b| b.iter(|| yaml_slim(black_box(&yaml))));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
