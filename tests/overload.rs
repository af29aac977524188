//! Overload: a UDP flood from loopback, several sender threads for about two seconds, against
//! the real binary. While it lasts, `/healthz` and `/metrics` answer and a TCP client gets its
//! answers; once it stops, a UDP client's queries are all answered again within a second.
//!
//! The figures (how much of the flood was answered) are printed, not asserted: on a shared
//! machine they say little. The load benchmark is the place for them.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use support::dns::{addresses, query_message, tcp};
use support::server::{BinaryServer, eventually, http_get};

const POD: &str = "web-0.nginx.default.svc.cluster.local.";
const SENDERS: usize = 4;

/// The sum of a counter's samples whose labels contain `label`.
fn counter(metrics: &str, name: &str, label: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// One UDP query with a short timeout: whether it was answered.
fn answered(sock: &UdpSocket, server: SocketAddr, query: &[u8]) -> bool {
    if sock.send_to(query, server).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    // Skip late answers to earlier queries of this socket: match the ID.
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        if n >= 2 && buf[..2] == query[..2] {
            return true;
        }
    }
    false
}

#[test]
fn a_udp_flood_leaves_http_and_tcp_answering_and_udp_recovers_within_a_second() {
    let server = BinaryServer::example(&["--http", "127.0.0.1:0"]);
    let http = server.http_addr();
    eventually("the example to be served", Duration::from_secs(10), || http_get(http, "/readyz").0 == 200);
    let (_, before) = http_get(http, "/metrics");

    // The flood: each sender its own socket (so the kernel spreads them over the workers),
    // sending as fast as it can and never reading.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let query = query_message(POD, RecordType::A, None).to_vec().unwrap();
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (stop, sent, query, addr) = (stop.clone(), sent.clone(), query.clone(), server.addr);
            std::thread::spawn(move || {
                let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        let _ = sock.send_to(&query, addr);
                    }
                    n += 256;
                }
                sent.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();

    // During the flood: the HTTP endpoints and a TCP client answer.
    let flood_started = Instant::now();
    let mut checks = 0;
    let mut slowest = Duration::ZERO;
    while flood_started.elapsed() < Duration::from_secs(2) {
        let started = Instant::now();
        assert_eq!(http_get(http, "/healthz").0, 200, "/healthz during the flood");
        let (status, metrics) = http_get(http, "/metrics");
        assert_eq!(status, 200, "/metrics during the flood");
        assert!(metrics.contains("headless_dns_requests_total"), "{metrics}");
        let resp = tcp(server.addr, &query_message(POD, RecordType::A, None));
        assert_eq!(addresses(&resp), ["10.244.1.5"], "TCP during the flood");
        slowest = slowest.max(started.elapsed());
        checks += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    let stopped = Instant::now();

    // After the flood: every query of a batch of 50 is answered (200 ms each) within a second;
    // "generous slack" for a shared machine: the batch must start within 1.5 s.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let recovered = loop {
        let batch_start = stopped.elapsed();
        if (0..50).all(|_| answered(&sock, server.addr, &query)) {
            break batch_start;
        }
        assert!(stopped.elapsed() < Duration::from_secs(5), "UDP queries still unanswered 5 s after the flood");
    };

    let (_, after) = http_get(http, "/metrics");
    let requests = counter(&after, "headless_dns_requests_total", "proto=\"udp\"")
        - counter(&before, "headless_dns_requests_total", "proto=\"udp\"");
    let noerror = counter(&after, "headless_dns_responses_total", "NOERROR")
        - counter(&before, "headless_dns_responses_total", "NOERROR");
    println!(
        "flood: {} queries sent by {SENDERS} threads in {:.1} s, {requests} received by the server and \
         {noerror} answered NOERROR; {checks} rounds of /healthz, /metrics and a TCP query, slowest {slowest:?}; all of a batch \
         of 50 UDP queries answered from {recovered:?} after the flood stopped",
        sent.load(Ordering::Relaxed),
        (stopped - flood_started).as_secs_f64(),
    );
    assert!(checks >= 3, "too few checks during the flood: {checks}");
    // It kept answering what it could (the rest the kernel dropped at the full socket queues).
    assert!(noerror >= 1000, "only {noerror} queries answered during the flood");
    assert!(recovered < Duration::from_millis(1500), "UDP recovered only {recovered:?} after the flood");
}
