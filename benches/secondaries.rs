//! Scaling by replication (issue 14): one primary watching the API server and pushing the zone
//! to N secondaries by NOTIFY + IXFR, against the alternative big clusters run today, N replicas
//! each watching the API server — under the same endpoint churn.
//!
//! ```text
//! cargo build --release && cargo bench --bench secondaries
//!   SEC_COUNT=50 SEC_KNOT=10 SEC_SECONDS=60 SEC_RATE=1000 SEC_SERVICES=1000 SEC_ENDPOINTS=10
//! ```
//!
//! The API side is the test suite's fake API server (real list/watch over HTTP) in this process;
//! it writes `SEC_RATE` endpoint changes a second (each an EndpointSlice update: a Pod recreated
//! with a new IP) for `SEC_SECONDS`.
//!
//! 1. **Replication.** A primary (`--source kube`, `--notify` to every secondary) and
//!    `SEC_COUNT` headless-dns secondaries (`--source primary:`), plus `SEC_KNOT` Knot DNS
//!    secondaries, on loopback ports. Every 10 ms this process asks each server its SOA serial
//!    over UDP; a secondary's lag for a serial is from the poll that first saw the serial at the
//!    primary to the poll that first saw it (or a later one) at the secondary: p50, p99, max
//!    (10 ms resolution). Bytes the primary sent per change per secondary (the secondaries'
//!    transfer byte counters), against one AXFR of the zone (what AXFR-per-change would send).
//!    CPU seconds (from /proc) of the primary per change, and of the secondaries; RSS at the end.
//! 2. **The alternative.** `SEC_COUNT` replicas with `--source kube`, each watching the API
//!    server, under the same churn: the API server's CPU (its thread in this process) and bytes
//!    sent, the replicas' CPU and RSS.
//!
//! The primary runs on CPU 1 (`taskset`); this process (API server, churn, polls) on
//! `SEC_BENCH_CPU` (default 0), and the secondaries (or the replicas) on `SEC_SECONDARY_CPU` (default 0): on a 2-core machine
//! fifty servers share one core, which a cluster spreads over fifty nodes.
//! `SEC_BIN=PATH` runs another build (default: target/release/headless-dns).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};
use serde_json::{Value, json};
use support::dns::query_message;
use support::fake_api::FakeApiServer;
use support::knot::Knot;

const NS: &str = "bench";

/// A port that is free, below the ephemeral range (32768–60999 by default), so that none of the
/// hundreds of outgoing connections the servers open takes it before its server binds it.
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 50) as u16 * 100;
    loop {
        let port = base + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 7_000;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// EndpointSlice of Service `i`, its endpoints at generation `generations[j]`: each (Service,
/// endpoint, generation) has an address of its own (10.0.0.0/8 counted up, wrapping after 2^24).
fn slice(i: usize, generations: &[u32]) -> Value {
    let endpoints: Vec<Value> = generations
        .iter()
        .enumerate()
        .map(|(j, g)| {
            let n = ((i * 16 + j) as u32).wrapping_add(g.wrapping_mul(1 << 18)) & 0xFF_FFFF;
            let ip = std::net::Ipv4Addr::from((10 << 24) | n).to_string();
            json!({"addresses": [ip], "hostname": format!("web-{j}"), "conditions": {"ready": true}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-abcde"), "namespace": NS,
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "web", "port": 80, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

/// A server process pinned to CPU 1, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cpu: &str, bin: &str, args: &[String]) -> Proc {
    let child = Command::new("taskset")
        .arg("-c")
        .arg(cpu)
        .arg(bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the server starts");
    Proc(child)
}

/// CPU seconds (user + system) of a process, or of one thread (`/proc/self/task/TID`).
fn cpu_seconds(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // After the command: state is field 0; utime 11, stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// The fake API server's thread in this process.
fn api_thread(api: &FakeApiServer) -> String {
    let name = format!("fake-api-{}", api.addr().port());
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if name.starts_with(comm.trim()) {
            return task.path().join("stat").display().to_string();
        }
    }
    panic!("no thread {name}");
}

/// Asks every server its SOA serial at once (None: no answer in 50 ms).
fn serials(socket: &UdpSocket, servers: &[SocketAddr]) -> Vec<Option<u32>> {
    let mut ids = HashMap::new();
    for (k, server) in servers.iter().enumerate() {
        let mut q = query_message("cluster.local.", RecordType::SOA, None);
        q.metadata.id = k as u16;
        ids.insert(k as u16, k);
        let _ = socket.send_to(&q.to_vec().unwrap(), server);
    }
    let mut out = vec![None; servers.len()];
    let deadline = Instant::now() + Duration::from_millis(50);
    let mut buf = [0u8; 1500];
    while out.iter().any(Option::is_none) && Instant::now() < deadline {
        socket
            .set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))))
            .unwrap();
        let Ok(n) = socket.recv(&mut buf) else { break };
        let Ok(m) = Message::from_vec(&buf[..n]) else { continue };
        let Some(&k) = ids.get(&m.metadata.id) else { continue };
        out[k] = m.answers.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(soa.serial),
            _ => None,
        });
    }
    out
}

fn serial_ge(a: u32, b: u32) -> bool {
    a == b || a.wrapping_sub(b) < 1 << 31
}

/// The bytes of an AXFR of cluster.local from `server`: every message up to the closing SOA.
fn axfr_size(server: SocketAddr) -> usize {
    use std::io::{Read, Write};
    let request = query_message("cluster.local.", RecordType::AXFR, None).to_vec().unwrap();
    let mut stream = std::net::TcpStream::connect(server).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut framed = (request.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&request);
    stream.write_all(&framed).unwrap();
    let (mut bytes, mut soas) = (0, 0);
    while soas < 2 {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            break;
        }
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut buf).unwrap();
        bytes += buf.len() + 2;
        let message = Message::from_vec(&buf).unwrap();
        soas += message.answers.iter().filter(|r| r.record_type() == RecordType::SOA).count();
    }
    bytes
}

fn metric(http: SocketAddr, name: &str) -> f64 {
    let body = (0..3).find_map(|_| support::server::try_http_get(http, "/metrics").ok().map(|(_, body)| body));
    let Some(body) = body else {
        eprintln!("no /metrics from {http}");
        return 0.0;
    };
    body.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Writes `rate` endpoint changes a second for `seconds`; returns how many.
fn churn(api: &FakeApiServer, generations: &mut [Vec<u32>], rate: usize, seconds: u64) -> usize {
    let started = Instant::now();
    let mut done = 0;
    let tick = Duration::from_millis(10);
    let per_tick = (rate / 100).max(1);
    while started.elapsed() < Duration::from_secs(seconds) {
        let next = started + tick * ((done / per_tick) as u32 + 1);
        for _ in 0..per_tick {
            let i = (done * 7919) % generations.len();
            let j = done % generations[i].len();
            generations[i][j] += 1;
            api.apply(slice(i, &generations[i]));
            done += 1;
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    done
}

fn main() {
    let count = env_usize("SEC_COUNT", 50);
    let knots = env_usize("SEC_KNOT", 10);
    let seconds = env_usize("SEC_SECONDS", 60) as u64;
    let rate = env_usize("SEC_RATE", 1000);
    let services = env_usize("SEC_SERVICES", 1000);
    let endpoints = env_usize("SEC_ENDPOINTS", 10);
    assert!(endpoints <= 16 && services <= 1 << 14, "addresses are unique up to 16 endpoints × 16,384 Services");
    // The secondaries (and the replicas of the alternative) share a CPU: 0, with this process,
    // or 1, with the primary.
    let secondary_cpu = std::env::var("SEC_SECONDARY_CPU").unwrap_or_else(|_| "0".into());
    let bin = std::env::var("SEC_BIN")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/headless-dns").into());
    if !std::path::Path::new(&bin).exists() {
        println!("secondaries bench: build the release binary first (cargo build --release), or set SEC_BIN");
        return;
    }
    // This process (the API server, the churn, the polls): CPU 0 by default, with the
    // secondaries; `SEC_BENCH_CPU=1` puts it with the primary, the control plane's side.
    let bench_cpu = env_usize("SEC_BENCH_CPU", 0);
    if let Some(core) = core_affinity::get_core_ids().and_then(|ids| ids.into_iter().nth(bench_cpu)) {
        core_affinity::set_for_current(core);
    }

    let api = FakeApiServer::start();
    api.set_history_limit(20_000);
    let mut objects = vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})];
    let mut generations = vec![vec![0u32; endpoints]; services];
    for (i, generation) in generations.iter().enumerate() {
        objects.push(support::objects::mk_headless_service(NS, &format!("svc-{i}"), &[("web", 80, "TCP")]));
        objects.push(slice(i, generation));
    }
    api.apply_many(objects);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let kubeconfig = kubeconfig.display().to_string();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let api_cpu = api_thread(&api);
    println!(
        "{services} headless Services × {endpoints} endpoints; {rate} endpoint changes/s for {seconds} s; \
         {count} headless-dns and {knots} Knot secondaries"
    );

    // 1. Replication.
    let primary_port = free_port();
    let primary_http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let ports: Vec<u16> = (0..count + knots).map(|_| free_port()).collect();
    let mut args: Vec<String> = ["serve", "--source", "kube", "--kubeconfig", &kubeconfig, "--upstream", "none"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--listen".into(), format!("127.0.0.1:{primary_port}"), "--http".into(), primary_http.to_string()]);
    args.extend(["--transfer-to".into(), "127.0.0.1".into(), "--udp-workers".into(), "1".into()]);
    for port in &ports {
        args.extend(["--notify".into(), format!("127.0.0.1:{port}")]);
    }
    let primary = spawn("1", &bin, &args);
    let primary_addr: SocketAddr = ([127, 0, 0, 1], primary_port).into();
    let mut secondaries = Vec::new();
    let mut https = Vec::new();
    for port in &ports[..count] {
        let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let args: Vec<String> = [
            "serve".into(),
            "--source".into(),
            format!("primary:{primary_addr}"),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--http".into(),
            http.to_string(),
            "--upstream".into(),
            "none".into(),
            "--udp-workers".into(),
            "1".into(),
        ]
        .to_vec();
        secondaries.push(spawn(&secondary_cpu, &bin, &args));
        https.push(http);
    }
    let knot_servers: Vec<Knot> = ports[count..].iter().map(|&port| Knot::secondary_on(port, primary_addr)).collect();
    for knot in &knot_servers {
        let _ = Command::new("taskset").args(["-pc", &secondary_cpu, &knot.child.id().to_string()]).output();
    }
    let mut servers = vec![primary_addr];
    servers.extend(ports.iter().map(|&port| SocketAddr::from(([127, 0, 0, 1], port))));
    let started = Instant::now();
    loop {
        let now = serials(&socket, &servers);
        if now[0].is_some() && now.iter().all(|s| *s == now[0]) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "secondaries did not catch up: {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "all {} servers at the primary's serial {:.1} s after start",
        servers.len(),
        started.elapsed().as_secs_f64()
    );

    let pids: Vec<u32> = secondaries.iter().map(|p| p.0.id()).collect();
    let knot_pids: Vec<u32> = knot_servers.iter().map(|k| k.child.id()).collect();
    let cpu_of = |pids: &[u32]| pids.iter().map(|pid| cpu_seconds(&format!("/proc/{pid}/stat"))).sum::<f64>();
    let (primary_cpu0, sec_cpu0, knot_cpu0) = (cpu_of(&[primary.0.id()]), cpu_of(&pids), cpu_of(&knot_pids));
    let api_cpu0 = cpu_seconds(&api_cpu);
    let api_bytes0 = api.bytes_sent();
    let bytes0: f64 = https.iter().map(|h| metric(*h, "headless_dns_secondary_transfer_bytes_total")).sum();

    // The churn on its own thread; the polls here.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (changes, lags) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let n = churn(&api, &mut generations, rate, seconds);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            n
        });
        // For each serial of the primary, when a poll first saw it; per secondary, the index of
        // the next primary serial it has not reached yet.
        let mut seen: Vec<(u32, Instant)> = Vec::new();
        let mut next = vec![0usize; servers.len()];
        let mut lags: Vec<Vec<Duration>> = vec![Vec::new(); servers.len()];
        let mut settle: Option<Instant> = None;
        loop {
            let tick = Instant::now();
            let now = serials(&socket, &servers);
            if let Some(s) = now[0]
                && seen.last().is_none_or(|(last, _)| *last != s)
            {
                seen.push((s, tick));
            }
            for k in 1..servers.len() {
                let Some(s) = now[k] else { continue };
                while next[k] < seen.len() && serial_ge(s, seen[next[k]].0) {
                    lags[k].push(tick.saturating_duration_since(seen[next[k]].1));
                    next[k] += 1;
                }
            }
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                let settle = *settle.get_or_insert(tick);
                if next.iter().skip(1).all(|&n| n == seen.len()) || settle.elapsed() > Duration::from_secs(10) {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(10).saturating_sub(tick.elapsed()));
        }
        (writer.join().unwrap(), lags)
    });
    let primary_cpu = cpu_of(&[primary.0.id()]) - primary_cpu0;
    let sec_cpu = cpu_of(&pids) - sec_cpu0;
    let knot_cpu = cpu_of(&knot_pids) - knot_cpu0;
    let api_cpu_used = cpu_seconds(&api_cpu) - api_cpu0;
    let api_bytes = api.bytes_sent() - api_bytes0;
    let bytes: f64 =
        https.iter().map(|h| metric(*h, "headless_dns_secondary_transfer_bytes_total")).sum::<f64>() - bytes0;
    let axfr_bytes = axfr_size(primary_addr);
    let primary_metric = |name: &str| metric(primary_http, name);
    println!(
        "(primary: {} relists, {} watch errors; {} of {count} secondaries' /metrics read)",
        primary_metric("headless_dns_kubernetes_relists_total"),
        primary_metric("headless_dns_kubernetes_watch_errors_total"),
        https.iter().filter(|h| support::server::try_http_get(**h, "/metrics").is_ok()).count(),
    );
    let summary = |range: std::ops::Range<usize>| {
        let mut all: Vec<Duration> = lags[range].iter().flatten().copied().collect();
        all.sort();
        format!(
            "p50 {} · p99 {} · max {} ({} serials)",
            ms(percentile(&all, 0.5)),
            ms(percentile(&all, 0.99)),
            ms(all.last().copied().unwrap_or_default()),
            all.len()
        )
    };
    println!("\n| replication: 1 primary → secondaries | |");
    println!("|---|---|");
    println!("| changes written | {changes} ({:.0}/s) |", changes as f64 / seconds as f64);
    println!("| serial lag, {count} headless-dns secondaries | {} |", summary(1..1 + count));
    if knots > 0 {
        println!("| serial lag, {knots} Knot secondaries | {} |", summary(1 + count..servers.len()));
    }
    println!(
        "| bytes sent per change per secondary | {:.0} B (AXFR of the zone: {axfr_bytes} B) |",
        bytes / changes as f64 / count as f64
    );
    println!("| primary CPU per change | {:.1} µs ({primary_cpu:.1} s) |", primary_cpu / changes as f64 * 1e6);
    println!(
        "| headless-dns secondary CPU, each | {:.2} s ({:.1} µs per change) |",
        sec_cpu / count as f64,
        sec_cpu / count as f64 / changes as f64 * 1e6
    );
    if knots > 0 {
        println!("| Knot secondary CPU, each | {:.2} s |", knot_cpu / knots as f64);
    }
    let mean_rss = pids.iter().map(|&p| rss_mib(p)).sum::<f64>() / count.max(1) as f64;
    println!(
        "| RSS: primary · headless-dns secondary (mean) | {:.1} MiB · {mean_rss:.1} MiB |",
        rss_mib(primary.0.id())
    );
    if knots > 0 {
        let knot_rss = knot_pids.iter().map(|&p| rss_mib(p)).sum::<f64>() / knots as f64;
        println!("| RSS: Knot secondary (mean) | {knot_rss:.1} MiB |");
    }
    println!("| API server: CPU · bytes sent | {api_cpu_used:.1} s · {:.1} MiB |", api_bytes as f64 / (1 << 20) as f64);
    drop(knot_servers);
    drop(secondaries);
    drop(primary);

    // 2. The alternative: every replica watches the API server.
    let mut replicas = Vec::new();
    let mut replica_addrs = Vec::new();
    for _ in 0..count {
        let port = free_port();
        let args: Vec<String> = [
            "serve",
            "--source",
            "kube",
            "--kubeconfig",
            &kubeconfig,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--http",
            "none",
            "--upstream",
            "none",
            "--udp-workers",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        replicas.push(spawn(&secondary_cpu, &bin, &args));
        replica_addrs.push(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let started = Instant::now();
    while serials(&socket, &replica_addrs).iter().any(Option::is_none) {
        assert!(started.elapsed() < Duration::from_secs(300), "replicas not ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("\n{count} replicas ready {:.1} s after start", started.elapsed().as_secs_f64());
    let pids: Vec<u32> = replicas.iter().map(|p| p.0.id()).collect();
    let (cpu0, api_cpu0, api_bytes0) = (cpu_of(&pids), cpu_seconds(&api_cpu), api.bytes_sent());
    let changes = churn(&api, &mut generations, rate, seconds);
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_of(&pids) - cpu0;
    let api_cpu_used = cpu_seconds(&api_cpu) - api_cpu0;
    let api_bytes = api.bytes_sent() - api_bytes0;
    let mean_rss = pids.iter().map(|&p| rss_mib(p)).sum::<f64>() / count.max(1) as f64;
    println!("\n| the alternative: {count} replicas watching the API server | |");
    println!("|---|---|");
    println!("| changes written | {changes} |");
    println!("| API server: CPU · bytes sent | {api_cpu_used:.1} s · {:.1} MiB |", api_bytes as f64 / (1 << 20) as f64);
    println!(
        "| replica CPU, each | {:.2} s ({:.1} µs per change) |",
        cpu / count as f64,
        cpu / count as f64 / changes as f64 * 1e6
    );
    println!("| RSS: replica (mean) | {mean_rss:.1} MiB |");
}
