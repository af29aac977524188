//! Every record kind and negative case, asked of the real server over UDP.
//!
//! Cases are tables in zone-file syntax, as CoreDNS's `handler_test.go` writes them.

mod support;

use headless_dns::index::{PodMode, PtrMode};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::dns::{ask, rcode, zone_lines};
use support::server::TestServer;

const FIXTURE: &str = include_str!("fixtures/records.yaml");

struct Case {
    name: &'static str,
    rtype: RecordType,
    rcode: ResponseCode,
    answer: &'static [&'static str],
    /// Additional-section records (besides OPT); checked only when non-empty.
    additional: &'static [&'static str],
    /// Whether the authority section carries the zone SOA (negative answers).
    soa: bool,
}

const fn ok(name: &'static str, rtype: RecordType, answer: &'static [&'static str]) -> Case {
    Case { name, rtype, rcode: ResponseCode::NoError, answer, additional: &[], soa: false }
}

const fn nodata(name: &'static str, rtype: RecordType) -> Case {
    Case { name, rtype, rcode: ResponseCode::NoError, answer: &[], additional: &[], soa: true }
}

const fn nxdomain(name: &'static str, rtype: RecordType) -> Case {
    Case { name, rtype, rcode: ResponseCode::NXDomain, answer: &[], additional: &[], soa: true }
}

fn check(server: std::net::SocketAddr, cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let resp = ask(server, case.name, case.rtype);
        let got_answer = zone_lines(&resp.answers);
        let got_additional = zone_lines(&resp.additionals);
        let soa = resp.authorities.iter().any(|r| r.record_type() == RecordType::SOA);
        let ok = rcode(&resp) == case.rcode
            && got_answer == case.answer
            && (case.additional.is_empty() || got_additional == case.additional)
            && soa == case.soa
            && resp.metadata.authoritative;
        if !ok {
            failures.push(format!(
                "{} {}: got {:?} answer {:#?} additional {:#?} soa {soa}; want {:?} answer {:#?} additional {:#?} soa {}",
                case.name, case.rtype, rcode(&resp), got_answer, got_additional, case.rcode, case.answer, case.additional, case.soa
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn spec_records() {
    use RecordType::*;
    let server = TestServer::start(FIXTURE).await;
    check(
        server.addr,
        &[
            // §2.2 schema version, apex SOA and NS.
            ok("dns-version.cluster.local.", TXT, &["dns-version.cluster.local. 28800 IN TXT 1.1.0"]),
            ok("cluster.local.", NS, &["cluster.local. 5 IN NS ns.dns.cluster.local."]),
            // §2.4.1 headless: ready endpoints of every slice, merged and deduplicated, both families.
            ok(
                "nginx.ns-0.svc.cluster.local.",
                A,
                &["nginx.ns-0.svc.cluster.local. 5 IN A 10.244.1.5", "nginx.ns-0.svc.cluster.local. 5 IN A 10.244.2.7"],
            ),
            ok("nginx.ns-0.svc.cluster.local.", AAAA, &["nginx.ns-0.svc.cluster.local. 5 IN AAAA fd00::5"]),
            ok("web-0.nginx.ns-0.svc.cluster.local.", A, &["web-0.nginx.ns-0.svc.cluster.local. 5 IN A 10.244.1.5"]),
            ok("web-0.nginx.ns-0.svc.cluster.local.", AAAA, &["web-0.nginx.ns-0.svc.cluster.local. 5 IN AAAA fd00::5"]),
            // An IPv4-only Pod name has no AAAA: NODATA, never NXDOMAIN (musl gives up on NXDOMAIN).
            nodata("web-1.nginx.ns-0.svc.cluster.local.", AAAA),
            nodata("web-1.nginx.ns-0.svc.cluster.local.", MX),
            // Not ready: not published.
            nxdomain("web-2.nginx.ns-0.svc.cluster.local.", A),
            // §2.4.2 headless SRV: one per ready endpoint and named port, glue in additional.
            Case {
                additional: &[
                    "web-0.nginx.ns-0.svc.cluster.local. 5 IN A 10.244.1.5",
                    "web-0.nginx.ns-0.svc.cluster.local. 5 IN AAAA fd00::5",
                    "web-1.nginx.ns-0.svc.cluster.local. 5 IN A 10.244.2.7",
                ],
                ..ok(
                    "_web._tcp.nginx.ns-0.svc.cluster.local.",
                    SRV,
                    &[
                        "_web._tcp.nginx.ns-0.svc.cluster.local. 5 IN SRV 0 50 80 web-0.nginx.ns-0.svc.cluster.local.",
                        "_web._tcp.nginx.ns-0.svc.cluster.local. 5 IN SRV 0 50 80 web-1.nginx.ns-0.svc.cluster.local.",
                    ],
                )
            },
            // CoreDNS extension: SRV at the bare Service name.
            ok(
                "nginx.ns-0.svc.cluster.local.",
                SRV,
                &[
                    "nginx.ns-0.svc.cluster.local. 5 IN SRV 0 50 80 web-0.nginx.ns-0.svc.cluster.local.",
                    "nginx.ns-0.svc.cluster.local. 5 IN SRV 0 50 80 web-1.nginx.ns-0.svc.cluster.local.",
                ],
            ),
            // Unnamed ports have no SRV; `_tcp.<svc>` is an empty non-terminal.
            nodata("_tcp.nginx.ns-0.svc.cluster.local.", SRV),
            nxdomain("_9000._tcp.nginx.ns-0.svc.cluster.local.", SRV),
            nxdomain("_web._udp.nginx.ns-0.svc.cluster.local.", SRV),
            // §2.3 ClusterIP: all cluster IPs, SRV to the Service name, endpoint names (CoreDNS).
            ok("api.ns-0.svc.cluster.local.", A, &["api.ns-0.svc.cluster.local. 5 IN A 10.96.0.20"]),
            ok("api.ns-0.svc.cluster.local.", AAAA, &["api.ns-0.svc.cluster.local. 5 IN AAAA fd00:96::20"]),
            Case {
                additional: &[
                    "api.ns-0.svc.cluster.local. 5 IN A 10.96.0.20",
                    "api.ns-0.svc.cluster.local. 5 IN AAAA fd00:96::20",
                ],
                ..ok(
                    "_http._tcp.api.ns-0.svc.cluster.local.",
                    SRV,
                    &["_http._tcp.api.ns-0.svc.cluster.local. 5 IN SRV 0 100 80 api.ns-0.svc.cluster.local."],
                )
            },
            ok(
                "_dns._udp.api.ns-0.svc.cluster.local.",
                SRV,
                &["_dns._udp.api.ns-0.svc.cluster.local. 5 IN SRV 0 100 53 api.ns-0.svc.cluster.local."],
            ),
            ok(
                "10-244-1-9.api.ns-0.svc.cluster.local.",
                A,
                &["10-244-1-9.api.ns-0.svc.cluster.local. 5 IN A 10.244.1.9"],
            ),
            // §2.3.3, §2.4.3 PTR; CoreDNS: every endpoint.
            ok("20.0.96.10.in-addr.arpa.", PTR, &["20.0.96.10.in-addr.arpa. 5 IN PTR api.ns-0.svc.cluster.local."]),
            ok(
                "5.1.244.10.in-addr.arpa.",
                PTR,
                &["5.1.244.10.in-addr.arpa. 5 IN PTR web-0.nginx.ns-0.svc.cluster.local."],
            ),
            ok(
                "9.1.244.10.in-addr.arpa.",
                PTR,
                &["9.1.244.10.in-addr.arpa. 5 IN PTR 10-244-1-9.api.ns-0.svc.cluster.local."],
            ),
            ok(
                "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
                PTR,
                &[
                    "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. 5 IN PTR web-0.nginx.ns-0.svc.cluster.local.",
                ],
            ),
            nxdomain("9.3.244.10.in-addr.arpa.", PTR),
            nxdomain("1.2.3.4.in-addr.arpa.", PTR),
            nodata("244.10.in-addr.arpa.", PTR),
            // §2.5 ExternalName: CNAME for any type; IP-valued ExternalName is not served.
            ok("db.ns-0.svc.cluster.local.", A, &["db.ns-0.svc.cluster.local. 5 IN CNAME db.example.com."]),
            ok("db.ns-0.svc.cluster.local.", CNAME, &["db.ns-0.svc.cluster.local. 5 IN CNAME db.example.com."]),
            nxdomain("by-ip.ns-0.svc.cluster.local.", A),
            // Headless with no ready endpoint: NXDOMAIN, and so are its names.
            nxdomain("empty.ns-0.svc.cluster.local.", A),
            nxdomain("empty-0.empty.ns-0.svc.cluster.local.", A),
            nxdomain("_web._tcp.empty.ns-0.svc.cluster.local.", SRV),
            // Empty non-terminals: NODATA; unknown names: NXDOMAIN.
            nodata("svc.cluster.local.", A),
            nodata("pod.cluster.local.", A),
            nodata("ns-0.svc.cluster.local.", A),
            nodata("ns-empty.svc.cluster.local.", A),
            nxdomain("nope.svc.cluster.local.", A),
            nxdomain("nope.ns-0.svc.cluster.local.", A),
            nxdomain("a.b.c.nginx.ns-0.svc.cluster.local.", A),
            nxdomain("nope.cluster.local.", A),
            // No wildcards (CoreDNS removed them).
            nxdomain("*.ns-0.svc.cluster.local.", A),
            nxdomain("any.ns-0.svc.cluster.local.", A),
            // Pods disabled by default.
            nxdomain("10-244-1-5.ns-0.pod.cluster.local.", A),
        ],
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn names_match_case_insensitively_and_echo_the_question() {
    let server = TestServer::start(FIXTURE).await;
    let resp = ask(server.addr, "WEB-0.Nginx.NS-0.svc.Cluster.Local.", RecordType::A);
    assert_eq!(resp.queries[0].name().to_string(), "WEB-0.Nginx.NS-0.svc.Cluster.Local.");
    assert_eq!(support::dns::addresses(&resp), ["10.244.1.5"]);
    assert_eq!(
        resp.answers[0].name.to_string(),
        "WEB-0.Nginx.NS-0.svc.Cluster.Local.",
        "owner compresses to the question"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn outside_the_zones_is_refused() {
    let server = TestServer::start(FIXTURE).await;
    for name in ["example.com.", "local.", "."] {
        let resp = ask(server.addr, name, RecordType::A);
        assert_eq!(rcode(&resp), ResponseCode::Refused, "{name}");
        assert!(!resp.metadata.authoritative);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_verified_answers_only_running_pods_in_their_namespace() {
    use RecordType::*;
    let server = TestServer::start_with(FIXTURE, |c| c.records.pods = PodMode::Verified).await;
    check(
        server.addr,
        &[
            ok("10-244-1-5.ns-0.pod.cluster.local.", A, &["10-244-1-5.ns-0.pod.cluster.local. 5 IN A 10.244.1.5"]),
            ok("fd00--5.ns-0.pod.cluster.local.", AAAA, &["fd00--5.ns-0.pod.cluster.local. 5 IN AAAA fd00::5"]),
            nodata("10-244-1-5.ns-0.pod.cluster.local.", AAAA),
            nodata("ns-0.pod.cluster.local.", A),
            nxdomain("10-244-1-5.other.pod.cluster.local.", A),
            nxdomain("10-9-9-9.ns-0.pod.cluster.local.", A),
            // A Pod that has finished no longer owns its IP.
            nxdomain("10-244-9-9.ns-0.pod.cluster.local.", A),
        ],
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_insecure_echoes_any_address() {
    use RecordType::*;
    let server = TestServer::start_with(FIXTURE, |c| c.records.pods = PodMode::Insecure).await;
    check(
        server.addr,
        &[
            ok("10-9-9-9.anything.pod.cluster.local.", A, &["10-9-9-9.anything.pod.cluster.local. 5 IN A 10.9.9.9"]),
            ok("fd00--7.anything.pod.cluster.local.", AAAA, &["fd00--7.anything.pod.cluster.local. 5 IN AAAA fd00::7"]),
            nodata("10-9-9-9.anything.pod.cluster.local.", AAAA),
            nodata("anything.pod.cluster.local.", A),
            nxdomain("not-an-ip.anything.pod.cluster.local.", A),
            nxdomain("a.10-9-9-9.anything.pod.cluster.local.", A),
        ],
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ptr_hostname_only_follows_the_spec() {
    use RecordType::*;
    let server = TestServer::start_with(FIXTURE, |c| c.records.ptr = PtrMode::HostnameOnly).await;
    check(
        server.addr,
        &[
            ok(
                "5.1.244.10.in-addr.arpa.",
                PTR,
                &["5.1.244.10.in-addr.arpa. 5 IN PTR web-0.nginx.ns-0.svc.cluster.local."],
            ),
            ok("20.0.96.10.in-addr.arpa.", PTR, &["20.0.96.10.in-addr.arpa. 5 IN PTR api.ns-0.svc.cluster.local."]),
            nxdomain("9.1.244.10.in-addr.arpa.", PTR),
        ],
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ttls_per_kind_and_negative_ttl() {
    use RecordType::*;
    let server = TestServer::start_with(FIXTURE, |c| {
        c.records.ttl = 7;
        c.records.ttl_headless = 2;
        c.records.ttl_clusterip = 30;
        c.records.negative_ttl = 3;
    })
    .await;
    check(
        server.addr,
        &[
            ok("nginx.ns-0.svc.cluster.local.", AAAA, &["nginx.ns-0.svc.cluster.local. 2 IN AAAA fd00::5"]),
            ok("web-0.nginx.ns-0.svc.cluster.local.", A, &["web-0.nginx.ns-0.svc.cluster.local. 2 IN A 10.244.1.5"]),
            ok("api.ns-0.svc.cluster.local.", A, &["api.ns-0.svc.cluster.local. 30 IN A 10.96.0.20"]),
            ok("db.ns-0.svc.cluster.local.", CNAME, &["db.ns-0.svc.cluster.local. 7 IN CNAME db.example.com."]),
        ],
    );
    let resp = ask(server.addr, "nope.ns-0.svc.cluster.local.", A);
    let soa = &resp.authorities[0];
    assert_eq!(soa.ttl, 3);
    let hickory_proto::rr::RData::SOA(soa) = &soa.data else { panic!("{soa:?}") };
    assert_eq!(soa.minimum, 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn several_zones() {
    use RecordType::*;
    let server = TestServer::start_with(FIXTURE, |c| {
        c.records.zones.push(headless_dns::dns::name::Name::parse("cluster.example").unwrap());
    })
    .await;
    check(
        server.addr,
        &[
            ok(
                "web-0.nginx.ns-0.svc.cluster.example.",
                A,
                &["web-0.nginx.ns-0.svc.cluster.example. 5 IN A 10.244.1.5"],
            ),
            ok("web-0.nginx.ns-0.svc.cluster.local.", A, &["web-0.nginx.ns-0.svc.cluster.local. 5 IN A 10.244.1.5"]),
            ok("dns-version.cluster.example.", TXT, &["dns-version.cluster.example. 28800 IN TXT 1.1.0"]),
            nxdomain("nope.cluster.example.", A),
        ],
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn loadbalance_round_robin_rotates_addresses() {
    let server = TestServer::start_with(FIXTURE, |c| {
        c.round_robin = true;
        c.udp_workers = 1;
    })
    .await;
    let name = "nginx.ns-0.svc.cluster.local.";
    let firsts: Vec<String> =
        (0..4).map(|_| support::dns::addresses(&ask(server.addr, name, RecordType::A))[0].clone()).collect();
    assert_eq!(firsts, ["10.244.1.5", "10.244.2.7", "10.244.1.5", "10.244.2.7"]);
    let mut all = support::dns::addresses(&ask(server.addr, name, RecordType::A));
    all.sort();
    assert_eq!(all, ["10.244.1.5", "10.244.2.7"], "every address, once");
    server.stop().await;

    // Off (the default): a stable order.
    let server = TestServer::start(FIXTURE).await;
    let firsts: Vec<String> =
        (0..4).map(|_| support::dns::addresses(&ask(server.addr, name, RecordType::A))[0].clone()).collect();
    assert_eq!(firsts, ["10.244.1.5"; 4]);
    server.stop().await;
}

/// Pods matter to DNS only under `--pods verified`; otherwise the file source does not hold them
/// (as the Kubernetes source does not watch them), and the Services are served the same.
#[tokio::test(flavor = "multi_thread")]
async fn the_file_source_holds_pods_only_for_pods_verified() {
    for (mode, pods) in [(PodMode::Disabled, 0), (PodMode::Insecure, 0), (PodMode::Verified, 2)] {
        let server = TestServer::start_with(FIXTURE, |c| {
            c.records.pods = mode;
            c.http = Some("127.0.0.1:0".parse().unwrap());
        })
        .await;
        let (_, metrics) = support::server::http_get(server.http_addr().unwrap(), "/metrics");
        assert!(metrics.contains(&format!("\nheadless_dns_pods {pods}\n")), "{mode:?}: {metrics}");
        check(
            server.addr,
            &[ok(
                "web-0.nginx.ns-0.svc.cluster.local.",
                RecordType::A,
                &["web-0.nginx.ns-0.svc.cluster.local. 5 IN A 10.244.1.5"],
            )],
        );
        server.stop().await;
    }
}
