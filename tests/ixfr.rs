//! Incremental zone transfer (IXFR, RFC 1995) from the journal, over real sockets: the answer
//! shapes, bad requests, and a real Knot DNS secondary that follows the primary through Pod
//! recreations, scaling and Service deletions by IXFR alone. The Knot test needs `knotd`
//! (Debian: knot); skipped without it, except in CI.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use support::bind::Bind;
use support::dns::{addresses, ask, query_message, rcode, require_tool, udp, zone_lines};
use support::knot::{Knot, free_port};
use support::server::{BinaryServer, eventually, http_get, replace_file, wait_until};

/// A cluster: a headless Service `web` with one endpoint per Pod (hostname `web-<i>`, the IP
/// given), and the ClusterIP Service `api` with two endpoints, if present.
fn manifest(web: &[String], api: bool) -> String {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
         spec: {clusterIP: None, selector: {app: web}, ports: [{name: http, port: 80, protocol: TCP}]}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: web-abcde, namespace: default, labels: {kubernetes.io/service-name: web}}\n\
         addressType: IPv4\nports: [{name: http, port: 80, protocol: TCP}]\n",
    );
    yaml.push_str(if web.is_empty() { "endpoints: []\n" } else { "endpoints:\n" });
    for (i, ip) in web.iter().enumerate() {
        yaml.push_str(&format!("- {{addresses: [\"{ip}\"], hostname: web-{i}, conditions: {{ready: true}}}}\n"));
    }
    if api {
        yaml.push_str(
            "---\napiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: default}\n\
             spec: {type: ClusterIP, clusterIP: 10.96.0.20, clusterIPs: [10.96.0.20], \
             ports: [{name: http, port: 80, protocol: TCP}]}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {name: api-q8w4d, namespace: default, labels: {kubernetes.io/service-name: api}}\n\
             addressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}]\nendpoints:\n\
             - {addresses: [\"10.244.9.1\"], conditions: {ready: true}}\n\
             - {addresses: [\"10.244.9.2\"], conditions: {ready: true}}\n",
        );
    }
    yaml
}

/// A primary on `path`, re-read quickly, transferring to loopback and notifying `notify`.
fn primary(path: &Path, extra: &[&str]) -> BinaryServer {
    let source = format!("file:{}", path.display());
    let mut args = vec![
        "serve",
        "--source",
        &source,
        "--listen",
        "127.0.0.1:0",
        "--transfer-to",
        "127.0.0.1",
        "--file-poll-interval",
        "50ms",
        "--file-settle",
        "100ms",
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--http") {
        args.extend(["--http", "none"]);
    }
    BinaryServer::start(&args)
}

/// The zone's SOA serial as `server` answers it over UDP (None if it does not answer yet).
fn serial(server: SocketAddr) -> Option<u32> {
    let bytes = query_message("cluster.local.", RecordType::SOA, None).to_vec().unwrap();
    let answer = support::dns::udp_raw(server, &bytes, Duration::from_millis(300))?;
    let message = Message::from_vec(&answer).ok()?;
    message.answers.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    })
}

/// An IXFR request for cluster.local from a client at `serial`.
fn ixfr_request(serial: u32) -> Message {
    let mut request = query_message("cluster.local.", RecordType::IXFR, None);
    request.metadata.recursion_desired = false;
    request.add_authority(soa_at("cluster.local.", serial));
    request
}

/// Sends `request` over TCP and reads every response message until the server goes quiet.
fn transfer(server: SocketAddr, request: &Message) -> Vec<Message> {
    let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(3)).unwrap();
    let bytes = request.to_vec().unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).unwrap();
    let mut messages = Vec::new();
    stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            return messages;
        }
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut buf).unwrap();
        let message = Message::from_vec(&buf).expect("a transfer message decodes");
        assert_eq!(message.metadata.id, request.metadata.id);
        messages.push(message);
        // After the first message, the rest of a transfer follows at once.
        stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    }
}

/// The answer records of a transfer.
fn records(messages: &[Message]) -> Vec<Record> {
    messages.iter().flat_map(|m| m.answers.iter().cloned()).collect()
}

/// The zone as `server` transfers it (AXFR), as sorted record lines, the SOA once.
fn axfr_lines(server: SocketAddr) -> Vec<String> {
    let mut lines = zone_lines(&records(&transfer(server, &query_message("cluster.local.", RecordType::AXFR, None))));
    lines.sort();
    lines.dedup();
    lines
}

fn soa_serial(record: &Record) -> Option<u32> {
    match &record.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    }
}

#[test]
fn ixfr_answers_current_incremental_and_full_and_bad_requests_get_formerr() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.yaml");
    let web = |ips: &[&str]| ips.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    replace_file(&path, &manifest(&web(&["10.244.0.10", "10.244.0.11"]), true));
    let server = primary(&path, &["--http", "127.0.0.1:0"]);
    wait_until(|| rcode(&ask(server.addr, "web.default.svc.cluster.local.", RecordType::A)) == ResponseCode::NoError);
    let before = serial(server.addr).unwrap();

    // At the current serial: the single SOA, over TCP and over UDP (no TC).
    let current = records(&transfer(server.addr, &ixfr_request(before)));
    assert_eq!(current.len(), 1, "{:?}", zone_lines(&current));
    assert_eq!(soa_serial(&current[0]), Some(before));
    let over_udp = udp(server.addr, &ixfr_request(before));
    assert!(!over_udp.metadata.truncation);
    assert_eq!(over_udp.answers.iter().filter_map(soa_serial).collect::<Vec<_>>(), [before]);

    // web-1 recreated with a new IP: the difference, RFC 1995 §4.
    replace_file(&path, &manifest(&web(&["10.244.0.10", "10.244.0.99"]), true));
    wait_until(|| serial(server.addr) != Some(before));
    let after = serial(server.addr).unwrap();
    let answer = records(&transfer(server.addr, &ixfr_request(before)));
    let lines = zone_lines(&answer);
    let serials: Vec<u32> = answer.iter().filter_map(soa_serial).collect();
    assert_eq!(serials.first(), Some(&after), "{lines:#?}");
    assert_eq!(serials.last(), Some(&after), "{lines:#?}");
    assert_eq!(soa_serial(&answer[1]), Some(before), "an incremental answer: {lines:#?}");
    let deleted_at = 2;
    let added_at = answer.iter().skip(2).position(|r| soa_serial(r).is_some()).unwrap() + 2;
    let (deleted, added) = (&lines[deleted_at..added_at], &lines[added_at + 1..lines.len() - 1]);
    assert!(
        deleted.iter().any(|l| l.starts_with("web-1.web.default.svc.cluster.local. ") && l.ends_with(" A 10.244.0.11")),
        "{lines:#?}"
    );
    assert!(
        added.iter().any(|l| l.starts_with("web-1.web.default.svc.cluster.local. ") && l.ends_with(" A 10.244.0.99")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains("in-addr.arpa")), "another zone's records: {lines:#?}");
    // Over UDP, a client that is behind is sent to TCP.
    let over_udp = udp(server.addr, &ixfr_request(before));
    assert!(over_udp.metadata.truncation);
    assert_eq!(over_udp.answers.iter().filter_map(soa_serial).collect::<Vec<_>>(), [after]);

    // A serial the journal does not hold: the whole zone (AXFR-style: SOA, records, SOA).
    let full = records(&transfer(server.addr, &ixfr_request(before.wrapping_sub(1000))));
    assert_eq!(soa_serial(&full[0]), Some(after));
    assert_eq!(soa_serial(&full[1]), None, "{:?}", zone_lines(&full));
    let mut full_lines = zone_lines(&full);
    full_lines.sort();
    full_lines.dedup();
    assert_eq!(full_lines, axfr_lines(server.addr));

    // Bad requests: no SOA in the authority section, a SOA of another zone → FORMERR; garbage
    // → nothing. The server keeps answering.
    let no_soa = query_message("cluster.local.", RecordType::IXFR, None);
    assert_eq!(records(&transfer(server.addr, &no_soa)).len(), 0);
    assert_eq!(transfer(server.addr, &no_soa)[0].metadata.response_code, ResponseCode::FormErr);
    assert_eq!(udp(server.addr, &no_soa).metadata.response_code, ResponseCode::FormErr);
    let mut other_zone = ixfr_request(before);
    other_zone.authorities[0].name = Name::from_ascii("example.com.").unwrap();
    assert_eq!(transfer(server.addr, &other_zone)[0].metadata.response_code, ResponseCode::FormErr);
    let good = ixfr_request(before).to_vec().unwrap();
    for cut in [12, 20, good.len() - 1, good.len() - 5] {
        let mut stream = TcpStream::connect_timeout(&server.addr, Duration::from_secs(3)).unwrap();
        let mut framed = (cut as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&good[..cut]);
        let _ = stream.write_all(&framed);
        let _ = support::dns::udp_raw(server.addr, &good[..cut], Duration::from_millis(100));
    }
    assert_eq!(serial(server.addr), Some(after), "the server still answers");

    // The journal's memory is in /metrics.
    let (status, body) = http_get(server.http_addr(), "/metrics");
    assert_eq!(status, 200);
    let gauge = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<i64>().ok())
            .unwrap_or_else(|| panic!("{name} in {body}"))
    };
    assert!(gauge("headless_dns_ixfr_journal_bytes") > 0);
    assert!(gauge("headless_dns_ixfr_journal_versions") >= 1);
}

/// Starts a primary on a small cluster with `--notify` to `notify_port`, then a secondary on it
/// (`start`, given the primary's address), and walks the cluster through Pod recreations, scaling
/// and Service deletions. After each step, the secondary follows and its AXFR equals the
/// primary's, `check(secondary, primary, step)` passes, and the primary sent every change as an
/// IXFR difference (its log says so). Returns the secondary and how many steps there were.
fn follow_the_primary<S>(
    notify_port: u16,
    start: impl FnOnce(SocketAddr) -> S,
    addr: impl Fn(&S) -> SocketAddr,
    check: impl Fn(SocketAddr, SocketAddr, &str),
) -> (S, usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.yaml");
    let mut next_ip = 10;
    let mut ip = || {
        next_ip += 1;
        format!("10.244.{}.{}", next_ip / 250, next_ip % 250 + 1)
    };
    let mut web: Vec<String> = (0..3).map(|_| ip()).collect();
    replace_file(&path, &manifest(&web, true));
    let notify = format!("127.0.0.1:{notify_port}");
    let server = primary(&path, &["--notify", &notify]);
    wait_until(|| serial(server.addr).is_some());
    let secondary = start(server.addr);
    let at = addr(&secondary);
    wait_until(|| serial(at).is_some() && serial(at) == serial(server.addr));
    assert_eq!(axfr_lines(at), axfr_lines(server.addr), "after the initial AXFR");
    check(at, server.addr, "the initial transfer");

    let mut steps: Vec<(&str, Vec<String>, bool)> = Vec::new();
    web[1] = ip();
    steps.push(("web-1 recreated", web.clone(), true));
    web.extend((0..3).map(|_| ip()));
    steps.push(("scaled up to 6", web.clone(), true));
    web.truncate(2);
    steps.push(("scaled down to 2", web.clone(), true));
    steps.push(("api deleted", web.clone(), false));
    web = web.iter().map(|_| ip()).collect();
    steps.push(("every Pod recreated", web.clone(), false));
    steps.push(("api back", web.clone(), true));
    web.clear();
    steps.push(("scaled to zero", web.clone(), true));
    for (step, web, api) in &steps {
        let before = serial(server.addr).unwrap();
        replace_file(&path, &manifest(web, *api));
        wait_until(|| serial(server.addr) != Some(before));
        let started = Instant::now();
        wait_until(|| serial(at) == serial(server.addr));
        eprintln!("{step}: the secondary followed in {:?}", started.elapsed());
        assert_eq!(axfr_lines(at), axfr_lines(server.addr), "after: {step}");
        check(at, server.addr, step);
    }
    let log = server.drain_logs();
    let incremental = log.iter().filter(|l| l.contains("incremental zone transfer")).count();
    assert!(incremental >= steps.len(), "{incremental} IXFR differences sent for {} steps", steps.len());
    assert!(!log.iter().any(|l| l.contains("not in the journal")), "an IXFR was answered with the whole zone");
    (secondary, steps.len())
}

#[test]
fn knot_follows_the_primary_by_ixfr_through_recreations_scaling_and_deletions() {
    if !require_tool("knotd") {
        return;
    }
    let port = free_port();
    let (knot, steps) = follow_the_primary(port, |primary| Knot::secondary_on(port, primary), |k| k.addr, |_, _, _| {});
    // Every step came by IXFR: one AXFR (the first), no fallback to AXFR.
    let log = knot.log();
    eprintln!("{log}");
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    let axfr_finished = log.lines().filter(|l| l.contains("AXFR, incoming") && l.contains("finished")).count();
    let ixfr_finished = log.lines().filter(|l| l.contains("IXFR, incoming") && l.contains("finished")).count();
    assert_eq!(axfr_finished, 1, "only the first transfer is a full one:\n{log}");
    assert!(ixfr_finished >= steps, "{ixfr_finished} IXFRs for {steps} steps:\n{log}");
    assert_eq!(count("fallback"), 0, "{log}");
    assert_eq!(count("AXFR-style"), 0, "{log}");
    assert_eq!(count("error"), 0, "{log}");
}

#[test]
fn bind_follows_the_primary_by_ixfr_through_recreations_scaling_and_deletions() {
    if !require_tool("named") {
        return;
    }
    let port = free_port();
    let (bind, steps) = follow_the_primary(port, |primary| Bind::secondary_on(port, primary), |b| b.addr, |_, _, _| {});
    // BIND does not log at info level whether a transfer was incremental; the primary's log did
    // (above). Here: one transfer per step after the first, each a success.
    let log = bind.log();
    eprintln!("{log}");
    let completed = log.lines().filter(|l| l.contains("Transfer completed")).count();
    assert!(completed > steps, "{completed} transfers for {steps} steps:\n{log}");
    assert!(!log.lines().any(|l| l.contains("failed") || l.contains("error")), "{log}");
}

/// A headless-dns secondary (`--source primary:ADDR`) on `port`, copying from `primary`.
fn secondary_on(port: u16, primary: SocketAddr, extra: &[&str]) -> BinaryServer {
    let source = format!("primary:{primary}");
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["serve", "--source", &source, "--listen", &listen, "--transfer-to", "127.0.0.1"];
    args.extend_from_slice(extra);
    if !extra.contains(&"--http") {
        args.extend(["--http", "none"]);
    }
    BinaryServer::start(&args)
}

/// The questions whose answers a secondary must give exactly as its primary does: the core
/// records of the specification, negative answers (NXDOMAIN vs NODATA, with the SOA) and SRV glue.
const CONFORMANCE: &[(&str, RecordType)] = &[
    ("cluster.local.", RecordType::SOA),
    ("cluster.local.", RecordType::NS),
    ("dns-version.cluster.local.", RecordType::TXT),
    ("web.default.svc.cluster.local.", RecordType::A),
    ("web.default.svc.cluster.local.", RecordType::AAAA),
    ("web.default.svc.cluster.local.", RecordType::SRV),
    ("web-0.web.default.svc.cluster.local.", RecordType::A),
    ("web-1.web.default.svc.cluster.local.", RecordType::A),
    ("web-5.web.default.svc.cluster.local.", RecordType::A),
    ("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV),
    ("_tcp.web.default.svc.cluster.local.", RecordType::A),
    ("api.default.svc.cluster.local.", RecordType::A),
    ("_http._tcp.api.default.svc.cluster.local.", RecordType::SRV),
    ("nothing.default.svc.cluster.local.", RecordType::A),
    ("svc.cluster.local.", RecordType::A),
    ("pod.cluster.local.", RecordType::A),
    ("20.0.96.10.in-addr.arpa.", RecordType::PTR),
    ("1.9.244.10.in-addr.arpa.", RecordType::PTR),
    ("9.9.9.10.in-addr.arpa.", RecordType::PTR),
];

/// A response as lines to compare: rcode, AA, and every section.
fn answer_lines(server: SocketAddr, name: &str, rtype: RecordType) -> Vec<String> {
    let m = ask(server, name, rtype);
    let mut lines = vec![format!(
        "rcode {} aa {} tc {}",
        m.metadata.response_code, m.metadata.authoritative, m.metadata.truncation
    )];
    for (section, records) in [("an", &m.answers), ("ns", &m.authorities), ("ar", &m.additionals)] {
        lines.extend(zone_lines(records).into_iter().map(|l| format!("{section} {l}")));
    }
    lines
}

fn assert_same_answers(secondary: SocketAddr, primary: SocketAddr, step: &str) {
    for (name, rtype) in CONFORMANCE {
        assert_eq!(
            answer_lines(secondary, name, *rtype),
            answer_lines(primary, name, *rtype),
            "{name} {rtype} after {step}"
        );
    }
}

#[test]
fn a_headless_dns_secondary_follows_by_ixfr_and_answers_as_the_primary() {
    let port = free_port();
    let (secondary, steps) =
        follow_the_primary(port, |primary| secondary_on(port, primary, &[]), |s| s.addr, assert_same_answers);
    let log = secondary.drain_logs();
    assert!(log.iter().any(|l| l.contains("first zone transfers applied; serving")), "{log:#?}");
    assert!(!log.iter().any(|l| l.contains("WARN") || l.contains("ERROR")), "{log:#?}");
    eprintln!("{steps} steps followed");
}

/// A primary on `path` listening on `port`, notifying `notify`.
fn primary_on(path: &Path, port: u16, notify: u16) -> BinaryServer {
    let (listen, notify) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{notify}"));
    primary(path, &["--listen", &listen, "--notify", &notify])
}

fn signal(server: &BinaryServer, signal: &str) {
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill").args([signal, &pid]).status().unwrap().success());
}

/// Sends a NOTIFY for cluster.local to `to` from `from` (an address on loopback); returns the
/// answer's rcode.
fn send_notify(from: &str, to: SocketAddr) -> Option<ResponseCode> {
    let mut notify = query_message("cluster.local.", RecordType::SOA, None);
    notify.metadata.op_code = hickory_proto::op::OpCode::Notify;
    notify.metadata.authoritative = true;
    notify.metadata.recursion_desired = false;
    let socket = std::net::UdpSocket::bind((from, 0)).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    socket.send_to(&notify.to_vec().unwrap(), to).unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).ok()?;
    let answer = Message::from_vec(&buf[..n]).ok()?;
    assert_eq!(answer.metadata.op_code, hickory_proto::op::OpCode::Notify);
    assert_eq!(answer.metadata.id, notify.metadata.id);
    Some(answer.metadata.response_code)
}

#[test]
fn a_secondary_is_servfail_until_its_first_transfer_and_keeps_serving_without_its_primary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.yaml");
    let web = |ips: &[&str]| ips.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    replace_file(&path, &manifest(&web(&["10.244.0.10", "10.244.0.11"]), true));
    let (primary_port, secondary_port) = (free_port(), free_port());
    let primary_addr: SocketAddr = ([127, 0, 0, 1], primary_port).into();
    let secondary = secondary_on(secondary_port, primary_addr, &["--http", "127.0.0.1:0"]);
    let http = secondary.http_addr();
    let web_1 = "web-1.web.default.svc.cluster.local.";

    // No primary yet: SERVFAIL and not ready, for as long as it takes.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(rcode(&ask(secondary.addr, web_1, RecordType::A)), ResponseCode::ServFail);
    assert_eq!(http_get(http, "/readyz").0, 503);
    assert!(secondary.wait_for_log("cannot bring the copy up to date", Duration::from_secs(5)).is_some());

    // The primary comes up: the secondary copies it and is ready.
    let server = primary_on(&path, primary_port, secondary_port);
    eventually("the first transfer", Duration::from_secs(10), || {
        addresses(&ask(secondary.addr, web_1, RecordType::A)) == ["10.244.0.11"]
    });
    assert_eq!(http_get(http, "/readyz").0, 200);
    assert!(secondary.wait_for_log("copy up to date again", Duration::from_secs(5)).is_some());

    // The primary stops (SIGSTOP) while web-1 is recreated: the copy keeps serving; when the
    // primary resumes with the same history, the change comes by IXFR.
    signal(&server, "-STOP");
    replace_file(&path, &manifest(&web(&["10.244.0.10", "10.244.0.12"]), true));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(addresses(&ask(secondary.addr, web_1, RecordType::A)), ["10.244.0.11"]);
    server.drain_logs();
    signal(&server, "-CONT");
    eventually("the change after the pause", Duration::from_secs(10), || {
        addresses(&ask(secondary.addr, web_1, RecordType::A)) == ["10.244.0.12"]
    });
    assert!(server.wait_for_log("incremental zone transfer", Duration::from_secs(5)).is_some());

    // The primary goes away: the copy keeps serving, one warning says so.
    drop(server);
    assert_eq!(send_notify("127.0.0.1", secondary.addr), Some(ResponseCode::NoError));
    assert!(secondary.wait_for_log("cannot bring the copy up to date", Duration::from_secs(10)).is_some());
    for _ in 0..5 {
        assert_eq!(addresses(&ask(secondary.addr, web_1, RecordType::A)), ["10.244.0.12"]);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http_get(http, "/readyz").0, 200);
    let (_, metrics) = http_get(http, "/metrics");
    assert!(metrics.contains("headless_dns_secondary_transfers_total{kind=\"ixfr\",result=\"error\"}"), "{metrics}");

    // A new primary process: a new serial history (which may even repeat the old serials), so
    // after an outage the copy is replaced by a full transfer.
    replace_file(&path, &manifest(&web(&["10.244.0.10", "10.244.0.13"]), false));
    let server = primary_on(&path, primary_port, secondary_port);
    eventually("the new primary's zone", Duration::from_secs(10), || {
        addresses(&ask(secondary.addr, web_1, RecordType::A)) == ["10.244.0.13"]
    });
    assert_eq!(rcode(&ask(secondary.addr, "api.default.svc.cluster.local.", RecordType::A)), ResponseCode::NXDomain);
    assert!(
        server.wait_for_log("zone transferred peer=127.0.0.1 zone=cluster.local.", Duration::from_secs(5)).is_some()
    );
    assert_eq!(serial(secondary.addr), serial(server.addr));
    assert_eq!(axfr_lines(secondary.addr), axfr_lines(server.addr));
}

/// What the scripted primary sends for cluster.local (the reverse zones are always empty, at
/// serial 1).
#[derive(Clone, Copy, Debug)]
enum Script {
    /// The zone at this serial: web-0 at this address.
    Zone(u32, [u8; 4]),
    /// Bytes that are no DNS message.
    Garbage,
    /// The opening SOA and a record, then the connection closes.
    Truncated(u32),
    /// To IXFR, a difference that deletes a record nobody has; to AXFR, this zone.
    BadDifference(u32, [u8; 4]),
}

fn soa_at(zone: &str, serial: u32) -> Record {
    let soa = SOA::new(
        Name::from_ascii("ns.dns.cluster.local.").unwrap(),
        Name::from_ascii("hostmaster.cluster.local.").unwrap(),
        serial,
        7200,
        1800,
        86400,
        1,
    );
    Record::from_rdata(Name::from_ascii(zone).unwrap(), 5, RData::SOA(soa))
}

fn web_0(ip: [u8; 4]) -> Record {
    let name = Name::from_ascii("web-0.web.default.svc.cluster.local.").unwrap();
    Record::from_rdata(name, 5, RData::A(hickory_proto::rr::rdata::A(ip.into())))
}

/// What a scripted primary saw: connections accepted, and the zone of each request in order.
#[derive(Default)]
struct Seen {
    connections: usize,
    zones: Vec<String>,
}

/// A zone-transfer server on loopback that answers each request as `script` says, every request
/// of a connection until the client closes it, unless `one_per_connection` (then it closes each
/// connection after its first answer, as a primary's idle timeout would).
fn scripted_primary(script: std::sync::Arc<std::sync::Mutex<Script>>) -> SocketAddr {
    scripted_primary_seeing(script, true, Default::default())
}

fn scripted_primary_seeing(
    script: std::sync::Arc<std::sync::Mutex<Script>>,
    one_per_connection: bool,
    seen: std::sync::Arc<std::sync::Mutex<Seen>>,
) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            seen.lock().unwrap().connections += 1;
            let (script, seen) = (script.clone(), seen.clone());
            std::thread::spawn(move || serve_script(stream, &script, one_per_connection, &seen));
        }
    });
    addr
}

fn serve_script(
    mut stream: TcpStream,
    script: &std::sync::Mutex<Script>,
    one_per_connection: bool,
    seen: &std::sync::Mutex<Seen>,
) {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        if stream.read_exact(&mut buf).is_err() {
            return;
        }
        let request = Message::from_vec(&buf).unwrap();
        let question = request.queries[0].clone();
        let zone = question.name().to_ascii();
        seen.lock().unwrap().zones.push(zone.clone());
        let held = request.authorities.iter().find_map(soa_serial);
        let full = |serial: u32, records: Vec<Record>| {
            let mut all = vec![soa_at(&zone, serial)];
            all.extend(records);
            all.push(soa_at(&zone, serial));
            all
        };
        let records: Vec<Record> = match (*script.lock().unwrap(), zone.as_str()) {
            (_, "in-addr.arpa." | "ip6.arpa.") if held == Some(1) => vec![soa_at(&zone, 1)],
            (_, "in-addr.arpa." | "ip6.arpa.") => full(1, Vec::new()),
            (Script::Garbage, _) => {
                let _ = stream.write_all(&[0, 6, 0xde, 0xad, 0xbe, 0xef, 0, 1]);
                return;
            }
            (Script::Truncated(serial), _) => vec![soa_at(&zone, serial), web_0([10, 9, 9, 9])],
            (Script::Zone(serial, _) | Script::BadDifference(serial, _), _) if held == Some(serial) => {
                vec![soa_at(&zone, serial)]
            }
            (Script::BadDifference(serial, ip), _) if held.is_some() => vec![
                soa_at(&zone, serial),
                soa_at(&zone, held.unwrap()),
                web_0([10, 9, 9, 9]),
                soa_at(&zone, serial),
                web_0(ip),
                soa_at(&zone, serial),
            ],
            (Script::Zone(serial, ip) | Script::BadDifference(serial, ip), _) => full(serial, vec![web_0(ip)]),
        };
        let truncated = matches!(*script.lock().unwrap(), Script::Truncated(_));
        let mut response = request.clone();
        response.metadata.message_type = hickory_proto::op::MessageType::Response;
        response.metadata.authoritative = true;
        response.authorities.clear();
        response.answers = records;
        let bytes = response.to_vec().unwrap();
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        if stream.write_all(&framed).is_err() || one_per_connection || truncated {
            return;
        }
    }
}

/// A NOTIFY names the zone that changed: the secondary asks for that zone only, on the
/// connection it kept from its first transfers, and opens another when the primary has closed
/// that one.
#[test]
fn a_secondary_asks_for_the_notified_zone_on_the_connection_it_kept() {
    let script = std::sync::Arc::new(std::sync::Mutex::new(Script::Zone(100, [10, 0, 0, 1])));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
    let primary = scripted_primary_seeing(script.clone(), false, seen.clone());
    let secondary = secondary_on(free_port(), primary, &[]);
    let web_0 = "web-0.web.default.svc.cluster.local.";
    let answers = || addresses(&ask(secondary.addr, web_0, RecordType::A));
    eventually("the first transfer", Duration::from_secs(10), || answers() == ["10.0.0.1"]);
    let zones = |seen: &Seen| seen.zones.iter().map(|z| z.trim_end_matches('.').to_string()).collect::<Vec<_>>();
    assert_eq!(zones(&seen.lock().unwrap()), ["cluster.local", "in-addr.arpa", "ip6.arpa"]);
    for (round, serial) in [101, 102, 103].into_iter().enumerate() {
        *script.lock().unwrap() = Script::Zone(serial, [10, 0, 0, serial as u8]);
        assert_eq!(send_notify("127.0.0.1", secondary.addr), Some(ResponseCode::NoError));
        let ip = format!("10.0.0.{serial}");
        eventually("the notified change", Duration::from_secs(5), || answers() == [ip.as_str()]);
        let seen = seen.lock().unwrap();
        assert_eq!(zones(&seen)[3..], vec!["cluster.local"; round + 1][..], "only the notified zone");
        assert_eq!(seen.connections, 1, "one connection for every transfer");
    }
    drop(secondary);
}

#[test]
fn bad_transfers_and_strangers_notify_lose_nothing() {
    let script = std::sync::Arc::new(std::sync::Mutex::new(Script::Zone(100, [10, 0, 0, 1])));
    let primary = scripted_primary(script.clone());
    let secondary = secondary_on(free_port(), primary, &[]);
    let web_0 = "web-0.web.default.svc.cluster.local.";
    let answers = || addresses(&ask(secondary.addr, web_0, RecordType::A));
    eventually("the first transfer", Duration::from_secs(10), || answers() == ["10.0.0.1"]);
    let set = |next: Script| {
        *script.lock().unwrap() = next;
        assert_eq!(send_notify("127.0.0.1", secondary.addr), Some(ResponseCode::NoError));
    };

    // Garbage, then a transfer cut before its final SOA: each logged with the peer; the copy
    // keeps serving.
    set(Script::Garbage);
    let line = secondary.wait_for_log("zone transfer failed", Duration::from_secs(5)).expect("logged");
    assert!(line.contains(&format!("peer={primary}")) && line.contains("malformed transfer"), "{line}");
    assert_eq!(answers(), ["10.0.0.1"]);
    set(Script::Truncated(101));
    let line = secondary.wait_for_log("zone transfer failed", Duration::from_secs(5)).expect("logged");
    assert!(line.contains("before the final SOA"), "{line}");
    assert_eq!(answers(), ["10.0.0.1"]);
    assert_eq!(serial(secondary.addr), Some(100));

    // A difference that deletes a record the copy does not hold: nothing of it is applied, and
    // a full transfer follows.
    set(Script::BadDifference(101, [10, 0, 0, 2]));
    let line = secondary.wait_for_log("does not apply to the copy", Duration::from_secs(5)).expect("logged");
    assert!(line.contains("10.9.9.9"), "{line}");
    // The names are published a moment before the serial moves: wait for both.
    let at = |ip: &str, n: u32| answers() == [ip] && serial(secondary.addr) == Some(n);
    eventually("the full transfer after it", Duration::from_secs(5), || at("10.0.0.2", 101));

    // The primary's serial goes backwards: logged, and its zone is taken whole.
    set(Script::Zone(50, [10, 0, 0, 3]));
    let line = secondary.wait_for_log("went backwards", Duration::from_secs(5)).expect("logged");
    assert!(line.contains("serial=50 held=101"), "{line}");
    eventually("the zone after the serial went back", Duration::from_secs(5), || at("10.0.0.3", 50));

    // NOTIFY from anyone but the primary is refused and logged; nothing is transferred.
    *script.lock().unwrap() = Script::Zone(51, [10, 0, 0, 4]);
    assert_eq!(send_notify("127.0.0.2", secondary.addr), Some(ResponseCode::Refused));
    let line = secondary.wait_for_log("NOTIFY refused", Duration::from_secs(5)).expect("logged");
    assert!(line.contains("127.0.0.2"), "{line}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(answers(), ["10.0.0.3"]);
}

#[test]
fn a_primary_notifies_the_secondaries_it_learned_from_their_transfers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.yaml");
    let web = |ips: &[&str]| ips.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    replace_file(&path, &manifest(&web(&["10.244.0.10"]), true));
    // No --notify: the primary learns its secondaries from their transfers, and notifies
    // them at the port every node-local secondary listens on.
    let port = free_port();
    let server = primary(&path, &["--notify-secondaries", &port.to_string()]);
    let secondary = secondary_on(port, server.addr, &[]);
    let web_0 = "web-0.web.default.svc.cluster.local.";
    eventually("the first transfer", Duration::from_secs(10), || {
        addresses(&ask(secondary.addr, web_0, RecordType::A)) == ["10.244.0.10"]
    });
    assert!(server.wait_for_log("secondary learned from its transfer", Duration::from_secs(5)).is_some());
    // The SOA refresh is two hours: only a NOTIFY brings the change within seconds.
    replace_file(&path, &manifest(&web(&["10.244.0.20"]), true));
    eventually("the change, pushed by NOTIFY", Duration::from_secs(5), || {
        addresses(&ask(secondary.addr, web_0, RecordType::A)) == ["10.244.0.20"]
    });
}
