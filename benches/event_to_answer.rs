//! Churn benchmark (issue: "Measure"): how fast a change reaches queries.
//!
//! 1. Initial list: 10,000 headless Services × 10 endpoints (100,000 endpoints, 20,000 objects)
//!    fed as one relist into a running server; reports the time from the first event to the index
//!    being ready, and from the last event sent to ready ("served within 1 s of arriving").
//! 2. Event-to-answer: 10,000 StatefulSet Pod recreations, each as two EndpointSlice updates
//!    (the Pod leaves the slice; it returns with a new IP). For each update the time is taken
//!    from sending the event to the writer to the first query that sees the new answer, and
//!    p50/p99/max are printed.
//!
//! Pinning: the server's threads (writer, DNS workers) are created while the process is pinned to
//! CPU 0; the querying thread then pins itself to CPU 1. Queries go through the server's own
//! query path (`Responder::respond`, bytes in → bytes out) against the live index, so the figure
//! is the writer's latency, not a socket round trip.
//!
//! Run: `cargo bench --bench event_to_answer` (release profile).

mod support;

/// The shipped binary's allocator (src/main.rs), so that the timings are the binary's.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use headless_dns::cluster::object::{Kind, Object};
use headless_dns::config::{Config, SourceConfig};
use headless_dns::dns::{Responder, Transport};
use headless_dns::source::{Event, Scope};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const SERVICES: usize = 10_000;
const PODS: usize = 10;
const RECREATIONS: usize = 10_000;

fn service(i: usize) -> Object {
    support::headless_service("ns-0", &format!("svc-{i}"))
}

/// Addresses numbered densely (10.0.0.0 up), as Pod CIDRs of few nodes are; a new generation
/// moves every address past the whole cluster's.
fn ip(service: usize, pod: usize, generation: usize) -> IpAddr {
    let n = (generation * SERVICES * PODS + service * PODS + pod) as u32;
    IpAddr::V4(std::net::Ipv4Addr::from((10u32 << 24) | (n & 0x00FF_FFFF)))
}

/// Service `i`'s one slice, with its Pods at `generations`, Pod `skip` left out.
fn slice(i: usize, generations: &[usize], skip: Option<usize>) -> Object {
    let pods = (0..PODS).filter(|&p| Some(p) != skip);
    support::slice("ns-0", &format!("svc-{i}"), 0, pods, |p| ip(i, p, generations[p]))
}

fn query(name: &str) -> Vec<u8> {
    support::query(name, RecordType::A, None)
}

/// The answer's rcode and first address, decoded by hand (no allocation in the spin loop).
fn answer(responder: &Responder, packet: &[u8], out: &mut [u8]) -> (u8, Option<[u8; 4]>) {
    let n = responder.respond(packet, Transport::Udp, out).unwrap();
    let rcode = out[3] & 0xF;
    let ancount = u16::from_be_bytes([out[6], out[7]]);
    if ancount == 0 {
        return (rcode, None);
    }
    // The single A record's RDATA is the last 4 bytes.
    (rcode, Some(out[n - 4..n].try_into().unwrap()))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let pinned = cores.len() >= 2 && core_affinity::set_for_current(cores[0]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut config = Config::for_file("unused", "127.0.0.1:0".parse().unwrap());
    config.source = SourceConfig::External;
    config.udp_workers = 1;
    let running = rt.block_on(headless_dns::start(config)).unwrap();
    let feed = running.feed().unwrap().clone();
    let send = |event: Event| rt.block_on(headless_dns::source::send(&feed, event));

    // 1. Initial list.
    let objects: Vec<Object> = (0..SERVICES).flat_map(|i| [service(i), slice(i, &[0; PODS], None)]).collect();
    let started = Instant::now();
    for kind in Kind::ALL {
        send(Event::RelistStart(Scope::all(kind)));
    }
    for obj in objects {
        send(Event::Apply(obj));
    }
    for kind in Kind::ALL {
        send(Event::RelistDone(Scope::all(kind)));
    }
    send(Event::Synced);
    let sent = started.elapsed();
    while !running.index().is_ready() {
        std::thread::sleep(Duration::from_micros(200));
    }
    let total = started.elapsed();
    println!(
        "initial list: {SERVICES} headless Services x {PODS} endpoints ({} endpoints, {} names)",
        SERVICES * PODS,
        running.index().len()
    );
    println!("  first event → ready: {total:?}; last event sent → ready: {:?}", total.saturating_sub(sent));

    // 2. Event-to-answer, querier pinned to the other core.
    let responder = Responder::new(running.index().clone(), 1232);
    let (tx, rx) = std::sync::mpsc::channel::<(String, Option<[u8; 4]>, Instant)>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Duration>();
    let querier = std::thread::spawn(move || {
        if pinned {
            core_affinity::set_for_current(cores[1]);
        }
        let mut out = vec![0u8; 65535];
        while let Ok((name, want, sent)) = rx.recv() {
            let packet = query(&name);
            loop {
                let (rcode, got) = answer(&responder, &packet, &mut out);
                let seen = match want {
                    Some(ip) => got == Some(ip),
                    None => rcode == ResponseCode::NXDomain.low(),
                };
                if seen {
                    done_tx.send(sent.elapsed()).unwrap();
                    break;
                }
                std::hint::spin_loop();
            }
        }
    });
    let mut generations = vec![vec![0usize; PODS]; SERVICES];
    let mut latencies = Vec::with_capacity(RECREATIONS * 2);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..RECREATIONS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let (s, p) = ((seed % SERVICES as u64) as usize, ((seed >> 32) % PODS as u64) as usize);
        let name = format!("web-{p}.svc-{s}.ns-0.svc.cluster.local.");
        // The Pod is deleted: it leaves the slice.
        let at = Instant::now();
        send(Event::Apply(slice(s, &generations[s], Some(p))));
        tx.send((name.clone(), None, at)).unwrap();
        latencies.push(done_rx.recv().unwrap());
        // It is recreated with a new IP.
        generations[s][p] += 1;
        let new_ip = match ip(s, p, generations[s][p]) {
            IpAddr::V4(v4) => v4.octets(),
            IpAddr::V6(_) => unreachable!(),
        };
        let at = Instant::now();
        send(Event::Apply(slice(s, &generations[s], None)));
        tx.send((name, Some(new_ip), at)).unwrap();
        latencies.push(done_rx.recv().unwrap());
    }
    drop(tx);
    querier.join().unwrap();
    latencies.sort();
    println!(
        "event-to-answer over {RECREATIONS} Pod recreations ({} updates, Service of {PODS} endpoints, {SERVICES} Services loaded): p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );
    println!(
        "pinning: {}",
        if pinned { "server threads on CPU 0, querier on CPU 1" } else { "not pinned (fewer than 2 CPUs)" }
    );
    rt.block_on(running.stop());
}
