//! The query path, bytes in → bytes out, no socket: `Responder::respond(&packet, transport, &mut
//! out)` against an index of 1,000 headless Services × 10 Pods (plus the Services below), as the
//! UDP worker calls it.
//!
//! | case | question | what it exercises |
//! |---|---|---|
//! | `pod_a` | `web-0.svc-0.ns-0.svc.cluster.local` A, no EDNS | one stored A record |
//! | `headless_10_a` | `svc-0.ns-0.svc.cluster.local` A, no EDNS | a 10-record RRset |
//! | `headless_100_a/udp` | `big.ns-0.svc.cluster.local` A, EDNS 1232 | 100 records, cut at 1232 bytes (TC) |
//! | `headless_100_a/tcp` | the same over TCP | 100 records whole |
//! | `srv` | `_web._tcp.svc-0.ns-0.svc.cluster.local` SRV, EDNS 1232 | 10 SRV + 10 glue A |
//! | `nxdomain` | `api.example.com.ns-0.svc.cluster.local` A (an ndots:5 search-path miss) | miss + SOA |
//! | `refused` | `www.example.com` A | a name outside the zones |
//! | `pod_a_mixed_case` | `WEB-0.Svc-0.NS-0.svc.Cluster.Local` A | case folding |
//! | `pod_a_general_path` | the `pod_a` packet through `respond_general` (hickory-proto) | what the fast path saves |
//!
//! Before measuring, the binary prints the heap allocations per query of every case (a counting
//! `#[global_allocator]`): the fast path's target is zero.
//!
//! Run: `cargo bench --bench query` (add `-- --warm-up-time 1 --measurement-time 3` for a quick
//! run, or a filter such as `-- pod_a`). Instructions per query, repeatable on a busy machine:
//! `QUERY_COUNT=n QUERY_CASE=<case>` answers one case n times and exits; run it under
//! `valgrind --tool=callgrind` with n = 0 and n = 100,000 and divide the difference.

mod support;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

use headless_dns::dns::proto::{DEFAULT_MAX_UDP, MAX_MESSAGE};
use headless_dns::dns::{Responder, Transport};

#[global_allocator]
static ALLOC: support::Counting = support::Counting;

/// Filler Services of 10 Pods: the map holds ~22,000 names (Pod names, Service names, SRV names,
/// PTR names), so lookups do not run from a tiny, cache-resident table.
const FILLER_SERVICES: usize = 1_000;

struct Case {
    id: &'static str,
    packet: Vec<u8>,
    transport: Transport,
    general: bool,
}

fn cases() -> Vec<Case> {
    use RecordType::{A, SRV};
    let case = |id, name, rtype, edns, transport| Case {
        id,
        packet: support::query(name, rtype, edns),
        transport,
        general: false,
    };
    let mut cases = vec![
        case("pod_a", "web-0.svc-0.ns-0.svc.cluster.local.", A, None, Transport::Udp),
        case("headless_10_a", "svc-0.ns-0.svc.cluster.local.", A, None, Transport::Udp),
        case("headless_100_a/udp", "big.ns-0.svc.cluster.local.", A, Some(1232), Transport::Udp),
        case("headless_100_a/tcp", "big.ns-0.svc.cluster.local.", A, Some(1232), Transport::Tcp),
        case("srv", "_web._tcp.svc-0.ns-0.svc.cluster.local.", SRV, Some(1232), Transport::Udp),
        case("nxdomain", "api.example.com.ns-0.svc.cluster.local.", A, None, Transport::Udp),
        case("refused", "www.example.com.", A, None, Transport::Udp),
        case("pod_a_mixed_case", "WEB-0.Svc-0.NS-0.svc.Cluster.Local.", A, None, Transport::Udp),
    ];
    let mut general = case("pod_a_general_path", "web-0.svc-0.ns-0.svc.cluster.local.", A, None, Transport::Udp);
    general.general = true;
    cases.push(general);
    cases
}

fn responder() -> Responder {
    let mut pipeline = support::new_pipeline();
    let mut objects = support::cluster(FILLER_SERVICES, 10);
    // The 100-endpoint headless Service (Service number FILLER_SERVICES, so its addresses are its own).
    objects.push(support::headless_service("ns-0", "big"));
    objects.extend(support::slices("ns-0", "big", FILLER_SERVICES, 100, None));
    let index = support::load(&mut pipeline, objects);
    Responder::new(index, DEFAULT_MAX_UDP)
}

fn respond(r: &Responder, case: &Case, out: &mut [u8]) -> usize {
    let packet = black_box(&case.packet[..]);
    let n = if case.general {
        r.respond_general(packet, case.transport, out)
    } else {
        r.respond(packet, case.transport, out)
    };
    n.expect("every case is answered")
}

/// Prints what each case answers and its allocations per query; the fast-path cases must be 0.
fn report_allocations(r: &Responder, cases: &[Case]) {
    let mut out = vec![0u8; MAX_MESSAGE];
    println!("allocations per query (counting global allocator, 100,000 calls each, after one warm-up call):");
    println!(
        "  {:<22} {:>9} {:>6} {:>10} {:>4} {:>4} {:>4}  {:>11}",
        "case", "transport", "bytes", "rcode", "an", "ns", "ar", "allocs/query"
    );
    let mut fast_path_allocs = 0.0;
    for case in cases {
        let n = respond(r, case, &mut out);
        let msg = Message::from_vec(&out[..n]).expect("the response decodes");
        let tc = if msg.metadata.truncation { " TC" } else { "" };
        let allocs = support::allocations_per_call(100_000, || {
            black_box(respond(r, case, &mut out));
        });
        if !case.general {
            fast_path_allocs += allocs;
        }
        println!(
            "  {:<22} {:>9} {:>6} {:>10} {:>4} {:>4} {:>4}  {:>11}{}",
            case.id,
            format!("{:?}", case.transport),
            n,
            format!("{:?}{tc}", msg.metadata.response_code),
            msg.answers.len(),
            msg.authorities.len(),
            msg.additionals.len() + msg.edns.is_some() as usize,
            format!("{allocs:.2}"),
            if case.general { "  (general path, hickory-proto)" } else { "" },
        );
    }
    if fast_path_allocs == 0.0 {
        println!("  fast path: 0 allocations per query (target met)");
    } else {
        println!("  fast path: ALLOCATES ({fast_path_allocs:.2} allocations over all fast-path cases; target is 0)");
    }
    println!();
}

fn bench_queries(c: &mut Criterion) {
    let r = responder();
    let cases = cases();
    count_mode(&r, &cases);
    report_allocations(&r, &cases);
    let mut out = vec![0u8; MAX_MESSAGE];
    let mut group = c.benchmark_group("respond");
    group.throughput(Throughput::Elements(1));
    for case in &cases {
        group.bench_function(case.id, |b| b.iter(|| respond(&r, case, &mut out)));
    }
    group.finish();
}

/// `QUERY_COUNT=n QUERY_CASE=id`: answers that case n times and exits, so that under callgrind
/// the difference between two counts is the instructions of their queries, whatever else the
/// machine does (timings here move by up to 50 % between runs).
fn count_mode(r: &Responder, cases: &[Case]) {
    let Some(n) = std::env::var("QUERY_COUNT").ok().and_then(|n| n.parse::<usize>().ok()) else { return };
    let id = std::env::var("QUERY_CASE").unwrap_or_else(|_| "pod_a".into());
    let case = cases.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no case {id}"));
    let mut out = vec![0u8; MAX_MESSAGE];
    for _ in 0..n {
        black_box(respond(r, case, &mut out));
    }
    std::process::exit(0);
}

criterion_group!(benches, bench_queries);
criterion_main!(benches);
