//! Forwarding names outside the served zones to a real upstream: Knot DNS serving a test zone on
//! loopback. Needs `knotd` (Debian: knot); skipped without it, except in CI.

mod support;

use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::dns::{addresses, ask, query_message, rcode, require_tool, tcp, zone_lines};
use support::knot::{Knot, free_port};
use support::server::{BinaryServer, wait_until};

fn serve_with_upstream(upstream: &str) -> BinaryServer {
    BinaryServer::example(&["--upstream", upstream])
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
    let server = BinaryServer::example(&["--listen", &listen, "--upstream", &listen]);
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
