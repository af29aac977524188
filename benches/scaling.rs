//! Multi-core scaling of the query path: 1 thread vs 2 threads pinned to separate CPUs, answering
//! from one shared index (issue: "with N cores the server scales; state the method").
//!
//! Every UDP worker is an OS thread calling `Responder::handle` on a shared `Arc<Index>` (a
//! `DashMap`: a lookup takes one shard's read lock). If readers contended (a shared lock, a
//! shared counter, false sharing on the map), each thread's rate would fall when a second thread
//! runs. This bench measures it without sockets, so the client (dnsperf) does not compete for
//! the two cores:
//!
//! - the index of `benches/query.rs` (1,000 headless Services × 10 Pods, ~22,000 names);
//! - the load benchmark's query mix (60 % Pod A, 20 % headless Service A, 10 % SRV, 10 % in-zone
//!   NXDOMAIN of the ndots:5 search-path shape), 20,000 packets over all 1,000 Services, each
//!   thread starting at a different offset;
//! - rounds alternating 1 thread (pinned to CPU 0), 2 threads sharing one index (CPU 0 and CPU
//!   1, as the server runs), and 2 threads with an identical index each (nothing shared but the
//!   machine), each running a fixed time and counting queries;
//! - per thread, the CPU time the thread actually ran (`/proc/thread-self/schedstat`), so that
//!   other work on a shared machine taking a CPU away lowers the wall-clock rate but not
//!   **queries per thread CPU-second**, the figure that shows contention.
//!
//! It prints, per round and as the median over rounds: aggregate queries/s (wall clock), queries
//! per thread CPU-second, and the ratios: 2 threads / 1 thread (ideal 2.0× aggregate, 1.0× per
//! CPU-second) and shared index / an index each (1.0× if sharing the map costs nothing; below,
//! the price of the readers' shared cache lines, such as the shards' reader counts). The second
//! ratio separates contention on the index from what two busy cores cost anyway (shared L3 and
//! memory bandwidth, other work on a shared machine).
//!
//! Run: `cargo bench --bench scaling` (`-- --seconds 2 --rounds 5` to change the defaults of 3 s
//! and 3 rounds).

mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use headless_dns::dns::proto::{DEFAULT_MAX_UDP, MAX_MESSAGE};
use headless_dns::dns::{Caps, Outcome, Responder, Transport};

const SERVICES: usize = 1_000;
const PODS: usize = 10;
const PACKETS: usize = 20_000;

/// The load benchmark's mix (benches/load/run.py `query_file`), with a small deterministic PRNG.
fn query_mix() -> Vec<Vec<u8>> {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let external = ["api.example.com", "www.google.com", "s3.amazonaws.com", "github.com"];
    (0..PACKETS)
        .map(|_| {
            let r = next() % 100;
            let i = next() as usize % SERVICES;
            let svc = format!("svc-{i}.{}.svc.cluster.local.", support::ns_of(i));
            let (name, rtype) = match r {
                0..60 => (format!("web-{}.{svc}", next() as usize % PODS), RecordType::A),
                60..80 => (svc, RecordType::A),
                80..90 => (format!("_web._tcp.{svc}"), RecordType::SRV),
                _ => {
                    let e = external[next() as usize % external.len()];
                    let suffix = match next() % 3 {
                        0 => format!("{}.svc.cluster.local.", support::ns_of(i)),
                        1 => "svc.cluster.local.".to_string(),
                        _ => "cluster.local.".to_string(),
                    };
                    (format!("{e}.{suffix}"), if next() % 2 == 0 { RecordType::A } else { RecordType::AAAA })
                }
            };
            support::query(&name, rtype, None)
        })
        .collect()
}

/// Nanoseconds this thread has run on a CPU (the first field of `/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}

/// One thread's result: queries answered, wall seconds, CPU seconds.
struct Run {
    queries: u64,
    wall: f64,
    cpu: f64,
}

/// Runs one thread per responder, thread `t` pinned to `cores[t]`, each answering the mix in a
/// loop from its own offset until `seconds` pass.
fn run(
    responders: &[&Arc<Responder>],
    packets: &Arc<Vec<Vec<u8>>>,
    cores: &[core_affinity::CoreId],
    seconds: f64,
) -> Vec<Run> {
    let threads = responders.len();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(std::sync::Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (responder, packets, stop, start) =
                (responders[t].clone(), packets.clone(), stop.clone(), start.clone());
            let core = cores.get(t).copied();
            std::thread::spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                let mut out = vec![0u8; MAX_MESSAGE];
                let caps = Caps { forward: false, client: Some([10, 0, 0, 1].into()) };
                let mut at = t * packets.len() / 2;
                let mut queries = 0u64;
                start.wait();
                let cpu0 = thread_cpu_ns();
                let wall0 = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    // Check the flag every 256 queries, not per query.
                    for _ in 0..256 {
                        let packet = &packets[at];
                        at = if at + 1 == packets.len() { 0 } else { at + 1 };
                        let outcome = responder.handle(black_box(packet), Transport::Udp, &mut out, caps);
                        debug_assert!(matches!(outcome, Outcome::Reply(_)));
                        black_box(outcome);
                    }
                    queries += 256;
                }
                let wall = wall0.elapsed().as_secs_f64();
                let cpu = match (cpu0, thread_cpu_ns()) {
                    (Some(a), Some(b)) => (b - a) as f64 / 1e9,
                    _ => f64::NAN,
                };
                Run { queries, wall, cpu }
            })
        })
        .collect();
    start.wait();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; accept and ignore it and other flags.
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: f64| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default)
    };
    let seconds = flag("--seconds", 3.0);
    let rounds = flag("--rounds", 3.0) as usize;

    let build = || {
        let index = support::load(&mut support::new_pipeline(), support::cluster(SERVICES, PODS));
        Arc::new(Responder::new(index, DEFAULT_MAX_UDP))
    };
    let (responder, other) = (build(), build());
    let packets = Arc::new(query_mix());
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cores.len() < 2 {
        println!("scaling: needs 2 CPUs, this machine has {}", cores.len());
        return;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "scaling: {} names, {PACKETS} packets (60 % Pod A, 20 % Service A, 10 % SRV, 10 % NXDOMAIN), \
         {seconds} s per run, {rounds} rounds; threads pinned to CPUs {:?}; load average {}",
        responder.index().len(),
        cores.iter().take(2).map(|c| c.id).collect::<Vec<_>>(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    // Warm up: page in both indexes and the packets on both CPUs.
    run(&[&responder, &other], &packets, &cores, 0.5);

    let modes: [(&str, Vec<&Arc<Responder>>); 3] = [
        ("1 thread", vec![&responder]),
        ("2 threads, one shared index", vec![&responder, &responder]),
        ("2 threads, an index each", vec![&responder, &other]),
    ];
    // Per mode, per round: (aggregate queries/s, mean queries per thread CPU-second).
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); modes.len()];
    for round in 1..=rounds {
        for (m, (label, responders)) in modes.iter().enumerate() {
            let runs = run(responders, &packets, &cores, seconds);
            let aggregate: f64 = runs.iter().map(|r| r.queries as f64 / r.wall).sum();
            let per_cpu: Vec<f64> = runs.iter().map(|r| r.queries as f64 / r.cpu).collect();
            let on_cpu: Vec<String> = runs.iter().map(|r| format!("{:.0} %", r.cpu / r.wall * 100.0)).collect();
            println!(
                "  round {round}, {label:<28} {aggregate:>10.0} queries/s; per thread: {} queries per CPU-second, on CPU {}",
                per_cpu.iter().map(|q| format!("{q:.0}")).collect::<Vec<_>>().join(" / "),
                on_cpu.join(" / "),
            );
            results[m].push((aggregate, per_cpu.iter().sum::<f64>() / per_cpu.len() as f64));
        }
    }
    println!("median over {rounds} rounds:");
    let medians: Vec<(f64, f64)> = results
        .iter()
        .map(|r| (median(r.iter().map(|x| x.0).collect()), median(r.iter().map(|x| x.1).collect())))
        .collect();
    for ((label, _), (aggregate, per_cpu)) in modes.iter().zip(&medians) {
        println!("  {label:<28} {aggregate:>10.0} queries/s, {per_cpu:>10.0} queries per thread CPU-second");
    }
    let [one, shared, private] = [medians[0], medians[1], medians[2]];
    println!(
        "  2 threads (shared index) / 1 thread: {:.2}× aggregate queries/s (ideal 2.00×), {:.2}× queries per thread CPU-second (ideal 1.00×)",
        shared.0 / one.0,
        shared.1 / one.1
    );
    println!(
        "  shared index / an index each (2 threads): {:.2}× queries per thread CPU-second (1.00×: sharing the index costs nothing)",
        shared.1 / private.1
    );
}
