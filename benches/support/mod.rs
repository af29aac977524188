//! Shared by the benchmarks (`query`, `churn`, `scaling`, `event_to_answer`): a synthetic cluster built in memory, query
//! packets, and a counting global allocator.
//!
//! The cluster is shaped like the load benchmark's (`benches/load/run.py`): namespaces `ns-<k>`
//! holding 100 headless Services each, `svc-<i>`, whose endpoints are StatefulSet Pods `web-<p>`
//! with one named port (`web`, TCP 80), so every Service has `_web._tcp.svc-<i>.ns-<k>…` SRV
//! records. EndpointSlices hold at most 100 endpoints, as the EndpointSlice controller writes them.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name as HName, RecordType};

use headless_dns::cluster::object::{
    Conditions, Endpoint, Namespace, ObjKey, Object, Port, Protocol, Service, ServiceKind, Slice,
};
use headless_dns::dns::name::Name;
use headless_dns::index::{Index, RecordConfig};
use headless_dns::pipeline::Pipeline;
use headless_dns::source::Event;

/// Services per namespace.
pub const SERVICES_PER_NS: usize = 100;
/// Endpoints per EndpointSlice (the controller's default `--max-endpoints-per-slice`).
pub const ENDPOINTS_PER_SLICE: usize = 100;

/// `cluster.local`, TTL 5, CoreDNS defaults otherwise.
pub fn record_config() -> RecordConfig {
    RecordConfig::default_for(vec![Name::parse("cluster.local").unwrap()])
}

/// An empty pipeline (model, writer, index with its apex published), as the server starts.
pub fn new_pipeline() -> Pipeline {
    Pipeline::new(record_config())
}

/// The namespace of Service number `i`.
pub fn ns_of(i: usize) -> String {
    format!("ns-{}", i / SERVICES_PER_NS)
}

/// A distinct IPv4 address for endpoint `p` of Service `i`, generation `generation` (a recreated
/// Pod gets the next generation's address): distinct for `i < 131072`, `p < 8192` and
/// `generation < 4`, counted up from 10.0.0.0 (so it leaves 10/8 for the large clusters; nothing
/// routes these addresses).
pub fn ip(i: usize, p: usize, generation: usize) -> IpAddr {
    debug_assert!(i < 1 << 17 && p < 1 << 13);
    let n = (((generation & 3) as u32) << 30) | ((i as u32) << 13) | p as u32;
    IpAddr::V4(Ipv4Addr::from((10u32 << 24).wrapping_add(n)))
}

/// The `web` TCP port every Service exposes.
pub fn web_port() -> Port {
    Port { name: Some("web".into()), protocol: Protocol::Tcp, port: 80 }
}

/// A Namespace object.
pub fn namespace(name: &str) -> Object {
    Object::Namespace(Namespace { name: name.into() })
}

/// A headless Service.
pub fn headless_service(ns: &str, name: &str) -> Object {
    Object::Service(Service { key: ObjKey::new(ns, name), kind: ServiceKind::Headless, ports: vec![web_port()] })
}

/// The EndpointSlices of a headless Service with `pods` ready StatefulSet endpoints
/// (`web-0` … `web-<pods-1>`), at most [`ENDPOINTS_PER_SLICE`] per slice. `generations[p]` picks
/// endpoint `p`'s address (see [`ip`]); `None` means generation 0 for all.
pub fn slices(ns: &str, name: &str, i: usize, pods: usize, generations: Option<&[usize]>) -> Vec<Object> {
    (0..pods.div_ceil(ENDPOINTS_PER_SLICE))
        .map(|s| {
            let range = s * ENDPOINTS_PER_SLICE..((s + 1) * ENDPOINTS_PER_SLICE).min(pods);
            slice(ns, name, s, range, |p| ip(i, p, generations.map_or(0, |g| g[p])))
        })
        .collect()
}

/// Slice number `s` of a Service, holding endpoints `pods`, endpoint `p` at `addr(p)`.
pub fn slice(
    ns: &str,
    name: &str,
    s: usize,
    pods: impl IntoIterator<Item = usize>,
    addr: impl Fn(usize) -> IpAddr,
) -> Object {
    let endpoints = pods
        .into_iter()
        .map(|p| {
            let name = format!("web-{p}");
            Endpoint::new(
                addr(p).into(),
                Some(name.clone()),
                Some(&name),
                Conditions { ready: true, serving: true, terminating: false },
            )
        })
        .collect();
    Object::Slice(Slice {
        key: ObjKey::new(ns, format!("{name}-{s:05x}")),
        service: name.into(),
        ports: vec![web_port()],
        endpoints,
        trigger_time_ms: None,
    })
}

/// A whole cluster: `services` headless Services of `pods` endpoints each, with their
/// Namespaces, in the order a relist streams them.
pub fn cluster(services: usize, pods: usize) -> Vec<Object> {
    let mut objects = Vec::with_capacity(services * 2 + services / SERVICES_PER_NS + 1);
    for k in 0..services.div_ceil(SERVICES_PER_NS) {
        objects.push(namespace(&format!("ns-{k}")));
    }
    for i in 0..services {
        let (ns, name) = (ns_of(i), format!("svc-{i}"));
        objects.push(headless_service(&ns, &name));
        objects.extend(slices(&ns, &name, i, pods, None));
    }
    objects
}

/// Applies objects as one batch and publishes everything they touch, as the writer thread does
/// for an initial list; the index is then ready. Returns the index.
pub fn load(pipeline: &mut Pipeline, objects: impl IntoIterator<Item = Object>) -> Arc<Index> {
    pipeline.apply_batch(Instant::now(), objects.into_iter().map(Event::Apply).chain([Event::Synced]));
    pipeline.index().clone()
}

/// A query packet as a stub resolver sends it: RD set, one question, and an OPT record when
/// `edns` gives a UDP payload size.
pub fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut msg = Message::new(0x1234, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(HName::from_ascii(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        msg.set_edns(e);
    }
    msg.to_vec().unwrap()
}

/// Counts every heap allocation of the process, and the bytes live. Install it in a benchmark
/// binary with `#[global_allocator] static ALLOC: support::Counting = support::Counting;`.
pub struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

/// Allocations (including reallocations) since the process started.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Bytes requested from the allocator since the process started (freed or not).
pub fn allocated_bytes() -> u64 {
    ALLOCATED_BYTES.load(Ordering::Relaxed)
}

/// Heap bytes currently allocated.
pub fn live_bytes() -> i64 {
    LIVE_BYTES.load(Ordering::Relaxed)
}

// SAFETY: every method forwards to the system allocator unchanged; the counters are only
// observed, never used to decide anything.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes through
        // this wrapper).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: as for `dealloc`; `new_size` is checked by the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` `iterations` times and returns the heap allocations per call.
pub fn allocations_per_call(iterations: u64, f: impl FnMut()) -> f64 {
    allocations_and_bytes_per_call(iterations, f).0
}

/// Runs `f` `iterations` times and returns the heap allocations and the bytes allocated per call.
pub fn allocations_and_bytes_per_call(iterations: u64, mut f: impl FnMut()) -> (f64, f64) {
    f(); // first call: lazily initialised state (thread locals, map growth) is not the steady state.
    let (allocs, bytes) = (allocations(), allocated_bytes());
    for _ in 0..iterations {
        f();
    }
    let per = |n: u64| n as f64 / iterations as f64;
    (per(allocations() - allocs), per(allocated_bytes() - bytes))
}
