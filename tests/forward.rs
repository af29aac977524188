//! Forwarding names outside the served zones to a real upstream: Knot DNS serving a test zone on
//! loopback. Needs `knotd` (Debian: knot); skipped without it, except in CI.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::dns::{addresses, ask, query_message, rcode, require_tool, tcp, zone_lines};
use support::server::{BinaryServer, example_manifest, wait_until};

/// A free loopback port (UDP and TCP), found by binding and releasing it.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Knot DNS authoritative for `example.test.` on 127.0.0.1.
struct Knot {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Knot {
    fn start() -> Knot {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("example.test.zone"),
            "$ORIGIN example.test.\n$TTL 300\n\
             @ IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 60\n\
             @ IN NS ns\nns IN A 127.0.0.1\nwww IN A 192.0.2.10\nwww IN AAAA 2001:db8::10\nalias IN CNAME www\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("knot.conf"),
            format!(
                "server:\n  listen: 127.0.0.1@{port}\n  rundir: {d}\n  udp-workers: 1\n  tcp-workers: 1\n  background-workers: 1\n\
                 database:\n  storage: {d}\n\
                 template:\n  - id: default\n    storage: {d}\n    semantic-checks: off\n\
                 zone:\n  - domain: example.test\n    file: {d}/example.test.zone\n\
                 log:\n  - target: stderr\n    any: warning\n"
            ),
        )
        .unwrap();
        let child = Command::new("knotd")
            .args(["-c", &dir.path().join("knot.conf").display().to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("knotd starts");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_until(|| {
            support::dns::udp_raw(
                addr,
                &query_message("www.example.test.", RecordType::A, None).to_vec().unwrap(),
                Duration::from_millis(200),
            )
            .is_some()
        });
        Knot { child, addr, _dir: dir }
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_with_upstream(upstream: &str) -> BinaryServer {
    let source = format!("file:{}", example_manifest().display());
    BinaryServer::start(&[
        "serve",
        "--source",
        &source,
        "--listen",
        "127.0.0.1:0",
        "--http",
        "none",
        "--upstream",
        upstream,
    ])
}

#[test]
fn names_outside_the_zones_are_forwarded_and_cached() {
    if !require_tool("knotd") {
        return;
    }
    let mut knot = Knot::start();
    let server = serve_with_upstream(&knot.addr.to_string());
    let dns = server.addr;

    let resp = ask(dns, "www.example.test.", RecordType::A);
    assert_eq!(rcode(&resp), ResponseCode::NoError);
    assert_eq!(addresses(&resp), ["192.0.2.10"]);
    assert!(resp.metadata.recursion_available && !resp.metadata.authoritative);
    // A CNAME chain comes back whole.
    let resp = ask(dns, "alias.example.test.", RecordType::A);
    assert_eq!(
        zone_lines(&resp.answers),
        ["alias.example.test. 300 IN CNAME www.example.test.", "www.example.test. 300 IN A 192.0.2.10"]
    );
    // Negative answers keep their rcode and SOA.
    let resp = ask(dns, "nope.example.test.", RecordType::A);
    assert_eq!(rcode(&resp), ResponseCode::NXDomain);
    assert_eq!(resp.authorities.first().map(|r| r.record_type()), Some(RecordType::SOA));
    // TCP too.
    let resp = tcp(dns, &query_message("www.example.test.", RecordType::AAAA, None));
    assert_eq!(addresses(&resp), ["2001:db8::10"]);
    // The cluster zone is still ours.
    assert_eq!(addresses(&ask(dns, "web-0.nginx.default.svc.cluster.local.", RecordType::A)), ["10.244.1.5"]);

    // The upstream goes away: cached answers keep coming, others fail fast with SERVFAIL.
    let _ = knot.child.kill();
    let _ = knot.child.wait();
    assert_eq!(addresses(&ask(dns, "www.example.test.", RecordType::A)), ["192.0.2.10"]);
    let started = Instant::now();
    let resp = ask(dns, "uncached.example.test.", RecordType::A);
    assert_eq!(rcode(&resp), ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
}

#[test]
fn a_forwarding_loop_is_detected_and_stopped() {
    // Our own address as the upstream: every forwarded query would come back to us.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let source = format!("file:{}", example_manifest().display());
    let server = BinaryServer::start(&[
        "serve",
        "--source",
        &source,
        "--listen",
        &listen,
        "--http",
        "none",
        "--upstream",
        &listen,
    ]);
    let line = server.wait_for_log("forwarding loop detected", Duration::from_secs(10));
    assert!(line.is_some(), "the loop was not reported");
    let started = Instant::now();
    assert_eq!(rcode(&ask(server.addr, "example.org.", RecordType::A)), ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_secs(1));
    wait_until(|| {
        addresses(&ask(server.addr, "web-0.nginx.default.svc.cluster.local.", RecordType::A)) == ["10.244.1.5"]
    });
}

#[test]
fn upstream_none_refuses_names_outside_the_zones() {
    let server = serve_with_upstream("none");
    assert_eq!(rcode(&ask(server.addr, "example.org.", RecordType::A)), ResponseCode::Refused);
}
