//! Hostile TCP clients against the real binary: thousands of connections that send one byte and
//! stall, connections that pipeline queries and never read the answers, and messages of the
//! largest framed length (65,535 bytes of garbage). In each case the server's memory (VmRSS from
//! /proc) stays under a stated bound, the connections are closed within the configured limits,
//! and a well-behaved UDP client and TCP client keep getting answers throughout.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use support::dns::{addresses, query_message};
use support::server::{BinaryServer, eventually};

/// A headless Service `big` (300 ready endpoints: a 4.8 KB answer over TCP) and a StatefulSet
/// Pod name `web-0.nginx`.
fn manifest() -> String {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: default}\nspec: {clusterIP: None}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: big-1, namespace: default, labels: {kubernetes.io/service-name: big}}\n\
         addressType: IPv4\nendpoints:\n",
    );
    for i in 0..300 {
        yaml.push_str(&format!("- {{addresses: [10.1.{}.{}]}}\n", i / 250, i % 250 + 1));
    }
    yaml.push_str(
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: nginx, namespace: default}\nspec: {clusterIP: None}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: nginx-1, namespace: default, labels: {kubernetes.io/service-name: nginx}}\n\
         addressType: IPv4\nendpoints:\n- {addresses: [10.244.1.5], hostname: web-0}\n",
    );
    yaml
}

const POD: &str = "web-0.nginx.default.svc.cluster.local.";
const BIG: &str = "big.default.svc.cluster.local.";
const MIB: u64 = 1024;

struct Server {
    server: BinaryServer,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let manifest_path = dir.path().join("cluster.yaml");
        std::fs::write(&manifest_path, manifest()).unwrap();
        let source = format!("file:{}", manifest_path.display());
        let mut args = vec!["serve", "--source", &source, "--listen", "127.0.0.1:0", "--http", "none"];
        args.extend_from_slice(extra);
        let server = BinaryServer::start(&args);
        // "listening" comes before the manifest is served (SERVFAIL until then).
        eventually("the names to be served", Duration::from_secs(10), || udp_query(server.addr, POD).is_ok());
        // Warm up both transports, so that the baseline holds what a normal client makes the
        // server allocate.
        for _ in 0..20 {
            assert_eq!(udp_query(server.addr, POD).unwrap(), ["10.244.1.5"]);
            assert_eq!(tcp_query(server.addr, BIG).unwrap().len(), 300);
        }
        Server { server, _dir: dir }
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    fn pid(&self) -> u32 {
        self.server.child.id()
    }

    /// The server's resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// The server's open file descriptors (its sockets among them).
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).unwrap().count()
    }

    /// The largest send queue (bytes the kernel holds for unread answers) of the server's TCP
    /// connections: kernel memory, outside RSS. From /proc/net/tcp, whose `tx_queue` is hex.
    fn largest_send_queue(&self) -> usize {
        let port = format!(":{:04X}", self.addr().port());
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (local, queues) = (fields.get(1)?, fields.get(4)?);
                local.ends_with(&port).then(|| usize::from_str_radix(queues.split(':').next()?, 16).ok())?
            })
            .max()
            .unwrap_or(0)
    }
}

/// A query over UDP from a fresh socket; the addresses of the answer.
fn udp_query(server: SocketAddr, name: &str) -> std::io::Result<Vec<String>> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let query = query_message(name, RecordType::A, None);
    sock.send_to(&query.to_vec().unwrap(), server)?;
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf)?;
    answer_of(&query, &buf[..n])
}

/// A query over a new TCP connection, as a stub resolver retries a truncated answer.
fn tcp_query(server: SocketAddr, name: &str) -> std::io::Result<Vec<String>> {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let query = query_message(name, RecordType::A, None);
    let bytes = query.to_vec().unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    s.write_all(&framed)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf)?;
    answer_of(&query, &buf)
}

fn answer_of(query: &Message, bytes: &[u8]) -> std::io::Result<Vec<String>> {
    let resp = Message::from_vec(bytes).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
    if resp.metadata.id != query.metadata.id || resp.metadata.response_code != ResponseCode::NoError {
        return Err(std::io::Error::new(ErrorKind::InvalidData, format!("{:?}", resp.metadata)));
    }
    Ok(addresses(&resp))
}

/// A well-behaved client asking in a loop, over UDP and over TCP (a new connection each time,
/// retried once on a new connection if the server closed it first, as RFC 7766 §6.2.1 asks of
/// clients), while sampling the server's RSS.
struct Bystander {
    stop: Arc<AtomicBool>,
    peak_rss: Arc<AtomicU64>,
    thread: JoinHandle<Asked>,
}

#[derive(Debug, Default)]
struct Asked {
    udp: usize,
    tcp: usize,
    tcp_retried: usize,
    failures: Vec<String>,
    slowest: Duration,
}

impl Bystander {
    fn start(server: &Server) -> Bystander {
        let (addr, pid) = (server.addr(), server.pid());
        let stop = Arc::new(AtomicBool::new(false));
        let peak_rss = Arc::new(AtomicU64::new(0));
        let (flag, peak) = (stop.clone(), peak_rss.clone());
        let thread = std::thread::spawn(move || {
            let mut asked = Asked::default();
            let rss = || {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let line = status.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string).unwrap_or_default();
                line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
            };
            while !flag.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                let started = Instant::now();
                match udp_query(addr, POD) {
                    Ok(a) if a == ["10.244.1.5"] => asked.udp += 1,
                    other => asked.failures.push(format!("udp: {other:?}")),
                }
                match tcp_query(addr, POD).or_else(|_| {
                    asked.tcp_retried += 1;
                    tcp_query(addr, POD)
                }) {
                    Ok(a) if a == ["10.244.1.5"] => asked.tcp += 1,
                    other => asked.failures.push(format!("tcp: {other:?}")),
                }
                asked.slowest = asked.slowest.max(started.elapsed());
                std::thread::sleep(Duration::from_millis(20));
            }
            asked
        });
        Bystander { stop, peak_rss, thread }
    }

    /// Stops it; checks that every query was answered. Returns the peak RSS seen (KiB).
    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let asked = self.thread.join().unwrap();
        println!("well-behaved client: {asked:?}");
        assert!(asked.failures.is_empty(), "a well-behaved client went unanswered: {asked:?}");
        assert!(asked.udp >= 5 && asked.tcp >= 5, "too few queries to tell: {asked:?}");
        self.peak_rss.load(Ordering::Relaxed)
    }
}

/// Keeps `server`'s RSS under `baseline + bound` while `attack` runs (and a bystander asks).
fn under_attack<T>(server: &Server, bound_kib: u64, what: &str, attack: impl FnOnce() -> T) -> T {
    let baseline = server.rss_kib();
    let bystander = Bystander::start(server);
    let held = attack();
    // Let the bystander ask (and sample memory) with the attack in place.
    std::thread::sleep(Duration::from_secs(1));
    let during = server.rss_kib();
    let peak = bystander.finish().max(during);
    println!(
        "{what}: RSS {} KiB before, {during} KiB after the attack, peak {peak} KiB (+{} KiB; bound +{bound_kib} KiB); {} fds",
        baseline,
        peak.saturating_sub(baseline),
        server.open_fds()
    );
    assert!(peak <= baseline + bound_kib, "{what}: RSS grew from {baseline} to {peak} KiB");
    held
}

/// Thousands of connections send one byte of a length prefix and stall. At most
/// `--tcp-max-connections` stay open (the least recently active are closed to admit new ones),
/// and each is closed after `--tcp-idle-timeout`.
#[test]
fn thousands_of_stalled_connections_are_bounded_and_time_out() {
    const MAX: usize = 256;
    let server = Server::start(&["--tcp-max-connections", "256", "--tcp-idle-timeout", "2s"]);
    let fds_before = server.open_fds();
    let held = under_attack(&server, 16 * MIB, "3,000 one-byte connections", || {
        let mut held = Vec::new();
        for _ in 0..3000 {
            let mut s = TcpStream::connect(server.addr()).unwrap();
            s.write_all(&[0]).unwrap();
            held.push(s);
        }
        // The server holds at most MAX of them, plus up to 32 it has closed to admit new ones
        // whose tasks have not run yet (and the bystander's).
        let open = server.open_fds() - fds_before;
        assert!(open <= MAX + 40, "{open} sockets open at a bound of {MAX}");
        held
    });
    // Once the idle timeout has passed every one of them is closed by the server.
    eventually("the stalled connections to close", Duration::from_secs(6), || server.open_fds() <= fds_before + 2);
    for mut s in held.into_iter().step_by(100) {
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let closed = matches!(s.read(&mut [0u8; 16]), Ok(0) | Err(_));
        assert!(closed, "the server closed the stalled connection");
    }
}

/// Connections that pipeline queries for a 4.8 KB answer and never read: the server's writes
/// fill the socket buffers and stall. Each stalled connection holds at most one answer in the
/// server and 128 KiB in the kernel (SO_SNDBUF); a write that cannot finish within the 2 s I/O
/// deadline closes the connection. Other connections are not held up.
#[test]
fn pipelined_queries_never_read_neither_block_others_nor_grow_memory() {
    let server = Server::start(&[]);
    let fds_before = server.open_fds();
    let query = query_message(BIG, RecordType::A, None).to_vec().unwrap();
    let mut framed = Vec::new();
    for _ in 0..1000 {
        framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
        framed.extend_from_slice(&query);
    }
    let held = under_attack(&server, 16 * MIB, "300 connections that never read", || {
        let mut held = Vec::new();
        for _ in 0..300 {
            // A small receive buffer fills after a few answers, so the test does not spend its
            // time (and the machine's CPU) answering megabytes first.
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_recv_buffer_size(4096).unwrap();
            s.connect(&server.addr().into()).unwrap();
            let mut s: TcpStream = s.into();
            s.set_nonblocking(true).unwrap();
            // Write until the server stops reading (its answers fill the buffers).
            let mut sent = 0;
            while sent < framed.len() {
                match s.write(&framed[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("write: {e}"),
                }
            }
            held.push(s);
        }
        // The kernel's send queue is fixed in size (SO_SNDBUF), not autotuned to megabytes.
        std::thread::sleep(Duration::from_millis(200));
        let queued = server.largest_send_queue();
        println!("largest send queue of a connection that does not read: {queued} bytes");
        assert!(queued <= 160 * 1024, "{queued} bytes queued for one connection");
        held
    });
    eventually("the stalled writers to be closed", Duration::from_secs(8), || server.open_fds() <= fds_before + 2);
    drop(held);
}

/// Messages of the largest framed length, 65,535 bytes of garbage behind a query-like header,
/// on 1,000 connections kept open: each is answered (FORMERR) or its connection closed, promptly,
/// and the server does not keep 64 KiB per connection.
#[test]
fn largest_framed_garbage_is_answered_or_dropped_without_harm() {
    let server = Server::start(&[]);
    let mut garbage = vec![0u8; 2 + 65535];
    garbage[..2].copy_from_slice(&65535u16.to_be_bytes());
    // ID, flags (a standard query), QDCOUNT 1, then noise.
    garbage[2..8].copy_from_slice(&[0x12, 0x34, 0x01, 0x00, 0x00, 0x01]);
    let mut x: u32 = 0x9e37_79b9;
    for b in &mut garbage[14..] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let (answered, closed) = under_attack(&server, 24 * MIB, "1,000 65,535-byte messages", || {
        let mut held = Vec::new();
        for _ in 0..1000 {
            let mut s = TcpStream::connect(server.addr()).unwrap();
            // The server may close before reading it all (a reset): that is a drop.
            let _ = s.write_all(&garbage);
            held.push(s);
        }
        let (mut answered, mut closed) = (0, 0);
        for s in &mut held {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut len = [0u8; 2];
            match s.read_exact(&mut len) {
                Ok(()) => {
                    let mut resp = vec![0u8; u16::from_be_bytes(len) as usize];
                    s.read_exact(&mut resp).unwrap();
                    let resp = Message::from_vec(&resp).expect("a decodable answer");
                    assert_eq!(resp.metadata.response_code, ResponseCode::FormErr);
                    answered += 1;
                }
                Err(e) if e.kind() == ErrorKind::UnexpectedEof || e.kind() == ErrorKind::ConnectionReset => closed += 1,
                Err(e) => panic!("neither answered nor closed within 5 s: {e}"),
            }
        }
        (answered, closed)
    });
    println!("65,535-byte garbage: {answered} answered FORMERR, {closed} connections closed");
}

/// A file descriptor limit below `--tcp-max-connections` (a soft `ulimit -n` of 1,024 is common,
/// and so is the default bound of 1,024): once accept runs out of descriptors, the connections
/// open then become the bound and the oldest are closed, so a new client is answered at once
/// rather than after the idle timeout (10 s) frees descriptors.
#[test]
fn a_file_descriptor_limit_below_the_bound_does_not_lock_new_clients_out() {
    if !support::dns::require_tool("prlimit") {
        return;
    }
    let server = Server::start(&[]);
    let limit = 128;
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &server.pid().to_string(), &format!("--nofile={limit}:{limit}")])
        .status()
        .unwrap();
    assert!(status.success(), "prlimit --pid");
    let mut held = Vec::new();
    for _ in 0..400 {
        let mut s = TcpStream::connect(server.addr()).unwrap();
        s.write_all(&[0]).unwrap();
        held.push(s);
    }
    let started = Instant::now();
    let answer = tcp_query(server.addr(), POD).or_else(|_| tcp_query(server.addr(), POD));
    let took = started.elapsed();
    println!("at a limit of {limit} descriptors, 400 stalled connections: a new client answered in {took:?}");
    assert_eq!(answer.unwrap(), ["10.244.1.5"]);
    assert!(took < Duration::from_secs(3), "a new client waited {took:?}");
    assert!(server.open_fds() <= limit, "{} descriptors open", server.open_fds());
    drop(held);
}
