//! The write side: what one change and a whole initial list cost the writer thread.
//!
//! - `endpoint_update/<N>`: one EndpointSlice update in which one endpoint's IP changes, in a
//!   headless Service of N = 1, 10 (the load benchmark's Services), 100 and 5,000 endpoints
//!   (slices of at most 100 endpoints, as the EndpointSlice controller writes them; the update
//!   replaces the slice holding `web-0`), next to 1,000 other Services × 10 Pods:
//!   `pipeline.apply(Event::Apply(slice))` (model, writer, index: the server's one way in).
//!   Every iteration is a real change (the address alternates between two generations).
//! - `initial_load/model_writer/10000x10`: 10,000 headless Services × 10 Pods (plus 100
//!   Namespaces), objects built in memory, applied to a new model and published to a new index.
//! - `initial_load/parse_manifests/10000x10`: the same cluster as Kubernetes YAML (the shape
//!   `benches/load/run.py` writes) through `source::file::parse_manifests`, to show what parsing
//!   adds to a file-source start.
//!
//! Before measuring, the binary prints the heap allocations per update and the heap the model
//! and the index hold after the initial load (counting `#[global_allocator]`).
//!
//! Run: `cargo bench --bench churn` (add `-- --warm-up-time 1 --measurement-time 3` for a
//! quick run, or a filter such as `-- endpoint_update`).
//!
//! With `CHURN_COUNT=<n>` in the environment the binary only applies n updates to the
//! 10-endpoint Service and exits: run it under `valgrind --tool=callgrind` with n = 0 and n =
//! 2,000 to count the instructions of one update, a figure that shared machines do not blur.

mod support;

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

use headless_dns::cluster::Model;
use headless_dns::cluster::object::Object;
use headless_dns::index::Index;
use headless_dns::pipeline::Pipeline;
use headless_dns::source::Event;
use headless_dns::source::file::parse_manifests;

#[global_allocator]
static ALLOC: support::Counting = support::Counting;

const FILLER_SERVICES: usize = 1_000;
const SIZES: [usize; 4] = [1, 10, 100, 5_000];
const LOAD_SERVICES: usize = 10_000;
const LOAD_PODS: usize = 10;

/// A model and index holding the filler Services and one Service `target` of `n` endpoints, and
/// the two versions of the slice holding its `web-0`: as loaded (generation 0), and with `web-0`
/// at its generation-1 address.
struct UpdateFixture {
    pipeline: Pipeline,
    versions: [Object; 2],
    /// Which version the model holds.
    current: usize,
}

fn update_fixture(n: usize) -> UpdateFixture {
    let mut pipeline = support::new_pipeline();
    let i = FILLER_SERVICES; // the target's Service number: its addresses are its own
    let mut objects = support::cluster(FILLER_SERVICES, 10);
    objects.push(support::headless_service("ns-0", "target"));
    objects.extend(support::slices("ns-0", "target", i, n, None));
    support::load(&mut pipeline, objects);
    // As in production once serving: every update is also journaled for IXFR
    // (CHURN_JOURNAL_SIZE=0 measures without the journal).
    pipeline.index().set_ready(true);
    if let Ok(size) = std::env::var("CHURN_JOURNAL_SIZE") {
        pipeline.index().journal().set_limit(size.parse().expect("CHURN_JOURNAL_SIZE is bytes"));
    }
    let range = 0..n.min(support::ENDPOINTS_PER_SLICE);
    let mut moved = vec![0; n];
    moved[0] = 1;
    let versions = [
        support::slice("ns-0", "target", 0, range.clone(), |p| support::ip(i, p, 0)),
        support::slice("ns-0", "target", 0, range, |p| support::ip(i, p, moved[p])),
    ];
    UpdateFixture { pipeline, versions, current: 0 }
}

impl UpdateFixture {
    /// Applies the slice (a clone of the other version than the model holds) and publishes;
    /// returns whether the index changed.
    fn update(&mut self, obj: Object) -> bool {
        self.current ^= 1;
        self.pipeline.apply(Event::Apply(obj)).changed
    }
}

/// Prints the allocations of one update (outside any timed loop).
fn report_update_allocations(n: usize, f: &mut UpdateFixture) {
    let rounds = if n >= 5_000 { 20 } else { 500 };
    let (allocs, bytes) = support::allocations_and_bytes_per_call(rounds, || {
        let obj = f.versions[f.current ^ 1].clone();
        assert!(f.update(obj), "every update changes the index");
    });
    let (clone_allocs, clone_bytes) = support::allocations_and_bytes_per_call(rounds, || {
        black_box(f.versions[0].clone());
    });
    println!(
        "endpoint_update/{n}: {:.0} allocations and {:.1} KiB allocated per update (the slice's clone \
         counted out); the index holds {} names",
        allocs - clone_allocs,
        (bytes - clone_bytes) / 1024.0,
        f.pipeline.index().len()
    );
}

fn bench_updates(c: &mut Criterion) {
    if let Ok(count) = std::env::var("CHURN_COUNT") {
        let count: usize = count.parse().expect("CHURN_COUNT is a number of updates");
        let mut f = update_fixture(10);
        for _ in 0..count {
            let obj = f.versions[f.current ^ 1].clone();
            f.update(obj);
        }
        std::process::exit(0);
    }
    let mut group = c.benchmark_group("endpoint_update");
    group.throughput(Throughput::Elements(1));
    for n in SIZES {
        if n >= 5_000 {
            // Tens of milliseconds per update: 10 samples, not 100.
            group.sample_size(10);
        }
        // Built on first use, so that a filter excluding this size skips the work.
        let mut fixture: Option<UpdateFixture> = None;
        group.bench_function(n.to_string(), move |b| {
            let f = fixture.get_or_insert_with(|| {
                let mut f = update_fixture(n);
                report_update_allocations(n, &mut f);
                f
            });
            let versions = f.versions.clone();
            let mut flip = f.current;
            b.iter_batched(
                || {
                    flip ^= 1;
                    versions[flip].clone()
                },
                |obj| f.update(obj),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// The cluster as Kubernetes YAML, as `benches/load/run.py` writes it.
fn cluster_yaml(services: usize, pods: usize) -> String {
    let mut y = String::with_capacity(services * pods * 200);
    for k in 0..services.div_ceil(support::SERVICES_PER_NS) {
        let _ = write!(y, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{k}\n---\n");
    }
    for i in 0..services {
        let ns = support::ns_of(i);
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  namespace: {ns}\nspec:\n  \
             clusterIP: None\n  clusterIPs: [None]\n  selector: {{app: svc-{i}}}\n  ports:\n  - \
             name: web\n    port: 80\n    protocol: TCP\n---\n"
        );
        let _ = write!(
            y,
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-{i}-00000\n  \
             namespace: {ns}\n  labels:\n    kubernetes.io/service-name: svc-{i}\naddressType: IPv4\n\
             ports:\n- name: web\n  port: 80\n  protocol: TCP\nendpoints:\n"
        );
        for p in 0..pods {
            let _ = write!(
                y,
                "- addresses: [{}]\n  hostname: web-{p}\n  conditions: {{ready: true, serving: true, \
                 terminating: false}}\n  targetRef: {{kind: Pod, name: web-{p}, namespace: {ns}}}\n",
                support::ip(i, p, 0)
            );
        }
        y.push_str("---\n");
    }
    y
}

fn report_load_memory(objects: &[Object]) {
    let start = support::live_bytes();
    // The model alone first (for its share of the heap), then the whole pipeline.
    let mut model = Model::new();
    for obj in objects.iter().cloned() {
        model.apply(obj);
    }
    let model_bytes = support::live_bytes() - start;
    drop(model);
    let start = support::live_bytes();
    let t = Instant::now();
    let mut pipeline = support::new_pipeline();
    let index = support::load(&mut pipeline, objects.iter().cloned());
    let elapsed = t.elapsed();
    let all_bytes = support::live_bytes() - start;
    drop(pipeline);
    let index_bytes = support::live_bytes() - start;
    let endpoints = (LOAD_SERVICES * LOAD_PODS) as f64;
    println!(
        "initial load of {LOAD_SERVICES} headless Services × {LOAD_PODS} Pods ({} objects): {:.0} ms once, {} names",
        objects.len(),
        elapsed.as_secs_f64() * 1e3,
        index.len()
    );
    println!(
        "  heap: model {:.1} MiB ({:.0} B/endpoint), writer bookkeeping {:.1} MiB, index {:.1} MiB ({:.0} B/endpoint); total {:.1} MiB",
        mib(model_bytes),
        model_bytes as f64 / endpoints,
        mib(all_bytes - model_bytes - index_bytes),
        mib(index_bytes),
        index_bytes as f64 / endpoints,
        mib(all_bytes)
    );
    drop::<std::sync::Arc<Index>>(index);
}

fn mib(bytes: i64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn bench_initial_load(c: &mut Criterion) {
    // Built on first use, so that a filter excluding these benchmarks skips the work.
    let data: std::cell::OnceCell<(Vec<Object>, String)> = std::cell::OnceCell::new();
    let data = || {
        data.get_or_init(|| {
            let objects = support::cluster(LOAD_SERVICES, LOAD_PODS);
            report_load_memory(&objects);
            let yaml = cluster_yaml(LOAD_SERVICES, LOAD_PODS);
            let parsed = parse_manifests(&yaml, Path::new("cluster.yaml")).expect("the generated YAML parses");
            assert!(parsed == objects, "the YAML projects to the objects built in memory");
            println!("  YAML: {:.1} MiB, {} documents", yaml.len() as f64 / (1024.0 * 1024.0), objects.len());
            (objects, yaml)
        })
    };

    let id = format!("{LOAD_SERVICES}x{LOAD_PODS}");
    let mut group = c.benchmark_group("initial_load");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements((LOAD_SERVICES * LOAD_PODS) as u64));
    group.bench_function(format!("model_writer/{id}"), |b| {
        let objects = &data().0;
        b.iter_batched(
            || objects.clone(),
            |objects| {
                let mut pipeline = support::new_pipeline();
                support::load(&mut pipeline, objects);
                pipeline
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function(format!("parse_manifests/{id}"), |b| {
        let yaml = &data().1;
        b.iter(|| parse_manifests(black_box(yaml), Path::new("cluster.yaml")).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench_updates, bench_initial_load);
criterion_main!(benches);
