//! Zone transfer into a real secondary: Knot DNS pulls `cluster.local` over AXFR and answers the
//! same as the primary. Needs `knotd` (Debian: knot); skipped without it, except in CI.

mod support;

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::dns::{ask, query_message, rcode, require_tool, tcp, zone_lines};
use support::knot::Knot;
use support::server::{BinaryServer, wait_until};

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
