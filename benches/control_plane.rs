//! headless-dns against a real control plane (etcd + kube-apiserver 1.28 from
//! `$KUBEBUILDER_ASSETS`), at scale: start-up, churn, and API server restarts.
//!
//! ```text
//! KUBEBUILDER_ASSETS=DIR cargo bench --bench control_plane
//!   CP_SERVICES=10000 CP_ENDPOINTS=10 CP_CHANGES=1000 CP_OUTAGES=5,30,120 CP_OUTAGE_CHANGES=20
//! ```
//!
//! 1. Creates `CP_SERVICES` headless Services, each with one EndpointSlice of `CP_ENDPOINTS`
//!    ready StatefulSet-style endpoints (`web-<j>.svc-<i>.bench.svc.cluster.local`).
//! 2. Starts the release binary (`--source kube`): process start → `/readyz` 200, and RSS then.
//! 3. `CP_CHANGES` endpoint changes, one at a time: the API server's answer to the write → the
//!    new address answered over DNS (p50/p99/max).
//! 4. For each outage length: a write elsewhere (so the watchers' versions fall behind, as in
//!    any busy cluster), the API server stopped for that long and started again, then
//!    `CP_OUTAGE_CHANGES` changes made as soon as it answers: write → answered (p50/max); the
//!    first measures the catch-up. RSS before, and its peak from the restart to the last change
//!    (VmHWM, reset through `/proc/PID/clear_refs`), for the relist's memory.
//!
//! The server runs on CPU 0 (`taskset`), the control plane and this driver wherever the
//! scheduler puts them: on a 2-core machine the API server competes with both.
//! `CP_SERVER_BIN=PATH` runs another build of the server (an older one, to compare).

#[path = "../tests/support/envtest.rs"]
mod envtest;
#[path = "../tests/support/objects.rs"]
#[allow(dead_code)]
mod objects;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use objects::*;

const NS: &str = "bench";
const PORTS: &[(&str, u16, &str)] = &[("web", 80, "TCP")];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn slice(service: usize, endpoints: usize, generation: u32) -> serde_json::Value {
    let eps: Vec<Ep> = (0..endpoints)
        .map(|j| {
            let ip = ipv4_for(generation * 2_000_000 + (service * endpoints + j) as u32);
            Ep::new(&ip).hostname(&format!("web-{j}"))
        })
        .collect();
    let name = format!("svc-{service}");
    with_labels(mk_slice(NS, &format!("{name}-0"), &name, "IPv4", PORTS, &eps), &[(MANAGED_BY_LABEL, "bench")])
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The A records of `name`, over UDP (None on timeout).
fn addresses(socket: &UdpSocket, server: SocketAddr, name: &str) -> Option<Vec<String>> {
    let mut query = Message::new(7, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    socket.send_to(&query.to_vec().unwrap(), server).ok()?;
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    let resp = Message::from_vec(&buf[..n]).ok()?;
    Some(
        resp.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect(),
    )
}

struct Server {
    child: Child,
    dns: SocketAddr,
    socket: UdpSocket,
}

impl Server {
    /// Starts the binary; returns it once `/readyz` says 200, with the time that took.
    fn start(kubeconfig: &std::path::Path, dns_port: u16, http_port: u16) -> (Server, Duration) {
        let started = Instant::now();
        let dns = SocketAddr::from(([127, 0, 0, 1], dns_port));
        let http = SocketAddr::from(([127, 0, 0, 1], http_port));
        let binary = std::env::var("CP_SERVER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_headless-dns").into());
        let child = Command::new("taskset")
            .args(["-c", "0", &binary, "serve", "--source", "kube", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--listen", &dns.to_string(), "--http", &http.to_string(), "--upstream", "none"])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("taskset and the binary start");
        loop {
            if readyz(http) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(300), "not ready in 300 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = started.elapsed();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        (Server { child, dns, socket }, took)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls until `name` answers `want` (every 200 µs); the time since `since`.
    fn answered(&self, name: &str, want: &str, since: Instant) -> Duration {
        loop {
            if addresses(&self.socket, self.dns, name).is_some_and(|a| a == [want]) {
                return since.elapsed();
            }
            assert!(since.elapsed() < Duration::from_secs(300), "{name} never answered {want}");
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn readyz(http: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&http, Duration::from_millis(200)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(s, "GET /readyz HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_whitespace().nth(1) == Some("200")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// One endpoint change: the API server's answer to the write → the new address answered.
struct Churn {
    slices: Api<EndpointSlice>,
    services: usize,
    endpoints: usize,
    generation: u32,
    next: usize,
}

impl Churn {
    async fn change(&mut self, server: &Server) -> Duration {
        self.generation += 1;
        let service = (self.next * 7919) % self.services;
        self.next += 1;
        let obj = slice(service, self.endpoints, self.generation);
        let want = obj["endpoints"][0]["addresses"][0].as_str().unwrap().to_string();
        let slice_name = obj["metadata"]["name"].as_str().unwrap().to_string();
        self.slices
            .patch(&slice_name, &PatchParams::apply("bench").force(), &Patch::Apply(&obj))
            .await
            .expect("slice update");
        let written = Instant::now();
        let qname = format!("web-0.svc-{service}.{NS}.svc.cluster.local.");
        tokio::task::block_in_place(|| server.answered(&qname, &want, written))
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os("KUBEBUILDER_ASSETS").is_none() {
        println!("control_plane bench: set KUBEBUILDER_ASSETS to a directory with etcd and kube-apiserver");
        return;
    }
    let services = env_usize("CP_SERVICES", 10_000);
    let endpoints = env_usize("CP_ENDPOINTS", 10);
    let changes = env_usize("CP_CHANGES", 1000);
    let outage_changes = env_usize("CP_OUTAGE_CHANGES", 20);
    let outages: Vec<u64> = std::env::var("CP_OUTAGES")
        .unwrap_or_else(|_| "5,30,120".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();

    let mut cp = envtest::ControlPlane::start("bench").await.expect("a control plane");
    let client = cp.client().await;
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
            .unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
    let svc_api: Api<Service> = Api::namespaced(client.clone(), NS);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);

    let loading = Instant::now();
    futures::stream::iter(0..services)
        .map(|i| {
            let (svc_api, slices) = (svc_api.clone(), slices.clone());
            async move {
                let svc: Service = serde_json::from_value(mk_headless_service(NS, &format!("svc-{i}"), PORTS)).unwrap();
                svc_api.create(&PostParams::default(), &svc).await.expect("create service");
                let sl: EndpointSlice = serde_json::from_value(slice(i, endpoints, 0)).unwrap();
                slices.create(&PostParams::default(), &sl).await.expect("create slice");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    println!("loaded {services} Services × {endpoints} endpoints in {:.1} s", loading.elapsed().as_secs_f64());

    let (server, ready) = Server::start(cp.kubeconfig(), free_port(), free_port());
    let rss_ready = rss_kib(server.pid(), "VmRSS:");
    println!("| start → /readyz 200 | {} |", ms(ready));
    println!("| RSS at ready | {:.1} MiB |", rss_ready as f64 / 1024.0);

    let mut churn = Churn { slices, services, endpoints, generation: 0, next: 0 };
    let mut took = Vec::with_capacity(changes);
    for _ in 0..changes {
        took.push(churn.change(&server).await);
    }
    took.sort();
    if !took.is_empty() {
        println!(
            "| {changes} changes: write → answered | p50 {} · p99 {} · max {} |",
            ms(percentile(&took, 0.5)),
            ms(percentile(&took, 0.99)),
            ms(*took.last().unwrap())
        );
    }

    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    for (round, secs) in outages.iter().enumerate() {
        let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "elsewhere", "namespace": NS}, "data": {"round": round.to_string()}});
        configmaps.patch("elsewhere", &PatchParams::apply("bench").force(), &Patch::Apply(&cm)).await.unwrap();
        let steady = rss_kib(server.pid(), "VmRSS:");
        let _ = std::fs::write(format!("/proc/{}/clear_refs", server.pid()), "5");
        cp.stop_apiserver().await;
        tokio::time::sleep(Duration::from_secs(*secs)).await;
        cp.start_apiserver().await;
        let mut after = Vec::with_capacity(outage_changes);
        for _ in 0..outage_changes {
            after.push(churn.change(&server).await);
        }
        let first = after.first().copied().unwrap_or_default();
        after.sort();
        let peak = rss_kib(server.pid(), "VmHWM:");
        println!(
            "| {secs} s outage | first change {} · p50 {} · max {} (of {outage_changes}) | RSS steady {:.1} MiB, peak {:.1} MiB ({:.2}×) |",
            ms(first),
            ms(percentile(&after, 0.5)),
            ms(*after.last().unwrap_or(&Duration::ZERO)),
            steady as f64 / 1024.0,
            peak as f64 / 1024.0,
            peak as f64 / steady.max(1) as f64,
        );
    }
}
