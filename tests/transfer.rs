//! Zone transfer into a real secondary: Knot DNS pulls `cluster.local` over AXFR and answers the
//! same as the primary. Needs `knotd` (Debian: knot); skipped without it, except in CI.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use support::dns::{addresses, ask, query_message, rcode, require_tool, tcp, zone_lines};
use support::knot::{Knot, free_port};
use support::server::{BinaryServer, example_manifest, replace_file, wait_until};

#[test]
fn a_knot_secondary_serves_the_transferred_zone() {
    if !require_tool("knotd") {
        return;
    }
    let primary = BinaryServer::example(&["--transfer-to", "127.0.0.0/8"]);
    wait_until(|| {
        rcode(&ask(primary.addr, "web-0.nginx.default.svc.cluster.local.", RecordType::A)) == ResponseCode::NoError
    });
    let knot = Knot::secondary(primary.addr);
    let secondary = knot.addr;
    // The secondary answers once it has transferred the zone.
    wait_until(|| {
        support::dns::udp_raw(
            secondary,
            &query_message("web-0.nginx.default.svc.cluster.local.", RecordType::A, None).to_vec().unwrap(),
            Duration::from_millis(300),
        )
        .map(|r| hickory_proto::op::Message::from_vec(&r).map(|m| !m.answers.is_empty()).unwrap_or(false))
        .unwrap_or(false)
    });
    for (name, rtype) in [
        ("web-0.nginx.default.svc.cluster.local.", RecordType::A),
        ("nginx.default.svc.cluster.local.", RecordType::A),
        ("_web._tcp.nginx.default.svc.cluster.local.", RecordType::SRV),
        ("api.default.svc.cluster.local.", RecordType::A),
        ("db.default.svc.cluster.local.", RecordType::CNAME),
        ("dns-version.cluster.local.", RecordType::TXT),
        ("web-9.nginx.default.svc.cluster.local.", RecordType::A),
    ] {
        let (a, b) = (ask(primary.addr, name, rtype), ask(secondary, name, rtype));
        let mut answers_a = zone_lines(&a.answers);
        let mut answers_b = zone_lines(&b.answers);
        answers_a.sort();
        answers_b.sort();
        assert_eq!(rcode(&a), rcode(&b), "{name} {rtype}");
        assert_eq!(answers_a, answers_b, "{name} {rtype}");
    }
    // The SOA serial is the primary's.
    let soa = |addr| zone_lines(&ask(addr, "cluster.local.", RecordType::SOA).answers);
    let serial = |lines: Vec<String>| lines[0].split_whitespace().nth(6).map(str::to_string);
    assert_eq!(serial(soa(primary.addr)), serial(soa(secondary)));
}

#[test]
fn transfers_are_refused_unless_allowed() {
    let server = BinaryServer::example(&[]);
    wait_until(|| rcode(&ask(server.addr, "dns-version.cluster.local.", RecordType::TXT)) == ResponseCode::NoError);
    let resp = tcp(server.addr, &query_message("cluster.local.", RecordType::AXFR, None));
    assert_eq!(rcode(&resp), ResponseCode::Refused);
    assert!(resp.answers.is_empty());
    // Not over UDP either, even when allowed.
    let allowed = BinaryServer::example(&["--transfer-to", "127.0.0.1"]);
    wait_until(|| rcode(&ask(allowed.addr, "dns-version.cluster.local.", RecordType::TXT)) == ResponseCode::NoError);
    assert_eq!(rcode(&ask(allowed.addr, "cluster.local.", RecordType::AXFR)), ResponseCode::Refused);
    let resp = tcp(allowed.addr, &query_message("cluster.local.", RecordType::AXFR, None));
    assert_eq!(rcode(&resp), ResponseCode::NoError);
    assert_eq!(resp.answers.first().map(|r| r.record_type()), Some(RecordType::SOA));
    assert_eq!(resp.answers.last().map(|r| r.record_type()), Some(RecordType::SOA));
    assert!(resp.answers.len() > 10, "{}", resp.answers.len());
}

/// The shipped example with web-0 at `ip`, written into `dir`.
fn example_with_web0(dir: &Path, ip: &str) -> PathBuf {
    let path = dir.join("cluster.yaml");
    let yaml = std::fs::read_to_string(example_manifest()).unwrap().replace("10.244.1.5", ip);
    replace_file(&path, &yaml);
    path
}

/// The primary on a copy of the example that it re-reads quickly, notifying `peer`.
fn notifying_primary(manifest: &Path, peer: SocketAddr) -> BinaryServer {
    let source = format!("file:{}", manifest.display());
    let peer = peer.to_string();
    BinaryServer::start(&[
        "serve",
        "--source",
        &source,
        "--listen",
        "127.0.0.1:0",
        "--http",
        "none",
        "--transfer-to",
        "127.0.0.1",
        "--notify",
        &peer,
        "--notify-delay",
        "1s",
        "--file-poll-interval",
        "50ms",
        "--file-settle",
        "100ms",
    ])
}

fn web0(server: SocketAddr) -> Vec<String> {
    support::dns::udp_raw(
        server,
        &query_message("web-0.nginx.default.svc.cluster.local.", RecordType::A, None).to_vec().unwrap(),
        Duration::from_millis(300),
    )
    .and_then(|r| Message::from_vec(&r).ok())
    .map(|m| addresses(&m))
    .unwrap_or_default()
}

#[test]
fn a_change_reaches_a_knot_secondary_at_once_by_notify() {
    if !require_tool("knotd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let manifest = example_with_web0(dir.path(), "10.244.1.5");
    let knot_port = free_port();
    let primary = notifying_primary(&manifest, ([127, 0, 0, 1], knot_port).into());
    // Knot refreshes no sooner than hourly (and our SOA says 7200 s): only a NOTIFY can explain
    // an update within seconds.
    let knot = Knot::secondary_on(knot_port, primary.addr);
    wait_until(|| web0(knot.addr) == ["10.244.1.5"]);

    example_with_web0(dir.path(), "10.244.1.99");
    wait_until(|| {
        addresses(&ask(primary.addr, "web-0.nginx.default.svc.cluster.local.", RecordType::A)) == ["10.244.1.99"]
    });
    let changed = Instant::now();
    while web0(knot.addr) != ["10.244.1.99"] {
        assert!(changed.elapsed() < Duration::from_secs(5), "the secondary did not follow within 5 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("secondary updated {:?} after the primary", changed.elapsed());
    let soa = |addr| zone_lines(&ask(addr, "cluster.local.", RecordType::SOA).answers);
    assert_eq!(soa(primary.addr), soa(knot.addr));
}

/// A NOTIFY received by a fake secondary: (message id, zone, when).
fn receive_notify(peer: &UdpSocket) -> Option<(Message, SocketAddr, Instant)> {
    let mut buf = [0u8; 512];
    let (n, from) = peer.recv_from(&mut buf).ok()?;
    Some((Message::from_vec(&buf[..n]).expect("a NOTIFY decodes"), from, Instant::now()))
}

fn acknowledge(peer: &UdpSocket, notify: &Message, to: SocketAddr) {
    let mut answer = Message::new(notify.metadata.id, MessageType::Response, OpCode::Notify);
    answer.metadata.authoritative = true;
    answer.add_query(notify.queries[0].clone());
    peer.send_to(&answer.to_vec().unwrap(), to).unwrap();
}

#[test]
fn notify_is_retried_until_answered_and_coalesced_during_churn() {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(2500))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = example_with_web0(dir.path(), "10.244.1.5");
    let _primary = notifying_primary(&manifest, peer.local_addr().unwrap());

    // Once serving: one NOTIFY per served zone, opcode NOTIFY, AA, the zone's SOA as question.
    // The first for cluster.local goes unanswered and comes again, with the same id.
    let mut unanswered = None;
    let mut zones = Vec::new();
    while zones.len() < 3 {
        let (notify, from, at) = receive_notify(&peer).expect("a NOTIFY per served zone");
        assert_eq!(notify.metadata.op_code, OpCode::Notify);
        assert!(notify.metadata.authoritative && notify.metadata.message_type == MessageType::Query);
        assert_eq!(notify.queries[0].query_type(), RecordType::SOA);
        assert_eq!(from.ip(), peer.local_addr().unwrap().ip(), "sent from loopback");
        let zone = notify.queries[0].name().to_ascii();
        if zone == "cluster.local." && unanswered.is_none() {
            unanswered = Some((notify.metadata.id, at));
            continue;
        }
        if let Some((id, first)) = unanswered.filter(|_| zone == "cluster.local.") {
            assert_eq!(notify.metadata.id, id, "a retransmission of the same NOTIFY");
            assert!(first.elapsed() >= Duration::from_millis(900), "{:?}", first.elapsed());
        }
        acknowledge(&peer, &notify, from);
        zones.push(zone);
    }
    zones.sort();
    assert_eq!(zones, ["cluster.local.", "in-addr.arpa.", "ip6.arpa."]);

    // Churn: ten changes in two seconds. Each reaches the peer, but as at most one NOTIFY per
    // zone per second.
    let started = Instant::now();
    let churn_dir = dir.path().to_path_buf();
    let churn = std::thread::spawn(move || {
        for i in 0..10 {
            example_with_web0(&churn_dir, &format!("10.244.1.{}", 100 + i));
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let mut cluster_local: Vec<(u16, Instant)> = Vec::new();
    while let Some((notify, from, at)) = receive_notify(&peer) {
        acknowledge(&peer, &notify, from);
        if notify.queries[0].name().to_ascii() == "cluster.local." {
            cluster_local.push((notify.metadata.id, at));
        }
        if started.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    churn.join().unwrap();
    // Count NOTIFYs, not retransmissions (which keep the id).
    cluster_local.dedup_by_key(|(id, _)| *id);
    let cluster_local: Vec<Instant> = cluster_local.into_iter().map(|(_, at)| at).collect();
    assert!(!cluster_local.is_empty(), "the churn was notified");
    assert!(cluster_local.len() <= 4, "{} NOTIFYs for cluster.local. in {:?}", cluster_local.len(), started.elapsed());
    for pair in cluster_local.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(900), "NOTIFYs {:?} apart", pair[1] - pair[0]);
    }
}
