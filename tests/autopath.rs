//! Server-side search (autopath): a client bound to a Pod's IP on loopback (127.0.0.9) asks the
//! first search-domain candidate and gets the first name of its search list that exists, in one
//! round trip. External names go to a real Knot DNS upstream. Needs `knotd` for the external case.

mod support;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use support::dns::{query_message, require_tool, zone_lines};
use support::knot::Knot;
use support::server::TestServer;

const POD_IP: &str = "127.0.0.9";

const CLUSTER: &str = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: ns-0}}
- {apiVersion: v1, kind: Namespace, metadata: {name: ns-1}}
- apiVersion: v1
  kind: Pod
  metadata: {name: client, namespace: ns-0}
  status: {phase: Running, podIP: 127.0.0.9}
- apiVersion: v1
  kind: Service
  metadata: {name: api, namespace: ns-1}
  spec: {clusterIP: 10.96.1.1}
- apiVersion: v1
  kind: Service
  metadata: {name: big, namespace: ns-1}
  spec: {clusterIP: None}
"#;

/// How many addresses the headless Service `big.ns-1` has: more than fit in 512 or 1232 bytes.
const BIG_RECORDS: usize = 100;

/// [`CLUSTER`] and the EndpointSlice of `big.ns-1`.
fn cluster() -> String {
    let endpoints: String = (1..=BIG_RECORDS).map(|i| format!("  - {{addresses: [10.244.9.{i}]}}\n")).collect();
    format!(
        "{CLUSTER}- apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n\
         \x20 metadata: {{name: big-0, namespace: ns-1, labels: {{kubernetes.io/service-name: big}}}}\n\
         \x20 addressType: IPv4\n  endpoints:\n{endpoints}"
    )
}

/// Asks `name` from `source` (an address on loopback).
fn ask_from(source: &str, server: SocketAddr, name: &str) -> Message {
    ask_from_sized(source, server, name, None).1
}

/// Asks `name` from `source` with an EDNS size, or none: (response length, response).
fn ask_from_sized(source: &str, server: SocketAddr, name: &str, edns: Option<u16>) -> (usize, Message) {
    let sock = UdpSocket::bind((source.parse::<IpAddr>().unwrap(), 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(&query_message(name, RecordType::A, edns).to_vec().unwrap(), server).unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).expect("an answer");
    (n, Message::from_vec(&buf[..n]).unwrap())
}

/// What a glibc/musl resolver with the Pod's search path and ndots:5 does for `short`: try each
/// search domain, then the name itself, until one answers. Returns (queries, final answer).
fn resolve_like_a_pod(server: SocketAddr, short: &str) -> (usize, Message) {
    let candidates = [
        format!("{short}.ns-0.svc.cluster.local."),
        format!("{short}.svc.cluster.local."),
        format!("{short}.cluster.local."),
        format!("{short}."),
    ];
    for (i, name) in candidates.iter().enumerate() {
        let resp = ask_from(POD_IP, server, name);
        if resp.metadata.response_code == ResponseCode::NoError && !resp.answers.is_empty() {
            return (i + 1, resp);
        }
    }
    panic!("{short} did not resolve");
}

#[tokio::test(flavor = "multi_thread")]
async fn autopath_answers_the_first_search_candidate_that_exists() {
    let knot = require_tool("knotd").then(Knot::start);
    let upstream = knot.as_ref().map(|k| k.addr);
    let server = TestServer::start_with(CLUSTER, |c| {
        c.records.pods = headless_dns::index::PodMode::Verified;
        c.autopath = true;
        c.upstream = upstream.map(|u| vec![u]);
    })
    .await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        // In the cluster: `api.ns-1` from ns-0 → api.ns-1.svc.cluster.local, in one round trip.
        let resp = ask_from(POD_IP, addr, "api.ns-1.ns-0.svc.cluster.local.");
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            zone_lines(&resp.answers),
            [
                "api.ns-1.ns-0.svc.cluster.local. 5 IN CNAME api.ns-1.svc.cluster.local.",
                "api.ns-1.svc.cluster.local. 5 IN A 10.96.1.1"
            ]
        );
        let (queries, _) = resolve_like_a_pod(addr, "api.ns-1");
        assert_eq!(queries, 1);

        // Not from a known Pod: plain NXDOMAIN.
        let resp = ask_from("127.0.0.1", addr, "api.ns-1.ns-0.svc.cluster.local.");
        assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
        // Not the Pod's own namespace: plain NXDOMAIN.
        let resp = ask_from(POD_IP, addr, "api.ns-1.ns-1.svc.cluster.local.");
        assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
        // Nothing exists anywhere: the original NXDOMAIN, so the client's own search goes on.
        let resp = ask_from(POD_IP, addr, "nothing.ns-0.svc.cluster.local.");
        assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);

        // Outside the cluster, through the upstream: 4 round trips without autopath, 1 with.
        if upstream.is_some() {
            let resp = ask_from(POD_IP, addr, "www.example.test.ns-0.svc.cluster.local.");
            assert_eq!(
                zone_lines(&resp.answers),
                [
                    "www.example.test.ns-0.svc.cluster.local. 5 IN CNAME www.example.test.",
                    "www.example.test. 300 IN A 192.0.2.10"
                ]
            );
            let (queries, _) = resolve_like_a_pod(addr, "www.example.test");
            assert_eq!(queries, 1, "one round trip instead of four");
        }
    })
    .await
    .unwrap();
    server.stop().await;
    drop(knot);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_autopath_a_pod_needs_one_round_trip_per_search_domain() {
    let server = TestServer::start_with(CLUSTER, |c| c.records.pods = headless_dns::index::PodMode::Verified).await;
    let addr = server.addr;
    let queries = tokio::task::spawn_blocking(move || resolve_like_a_pod(addr, "api.ns-1").0).await.unwrap();
    assert_eq!(queries, 2, "api.ns-1.ns-0.svc… (NXDOMAIN), then api.ns-1.svc…");
    server.stop().await;
}

/// An autopath answer is finished as every other answer: over UDP the client's EDNS size up to
/// `--max-udp-size` (it was clamped to 1232), an OPT advertising `--max-udp-size` (it said 1232),
/// and when it does not fit, TC with the whole records that fit (it was emptied).
#[tokio::test(flavor = "multi_thread")]
async fn autopath_answers_are_sized_and_truncated_as_our_own() {
    let server = TestServer::start_with(&cluster(), |c| {
        c.records.pods = headless_dns::index::PodMode::Verified;
        c.autopath = true;
        c.max_udp_size = 4096;
    })
    .await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let name = "big.ns-1.ns-0.svc.cluster.local.";
        // EDNS 4096 under --max-udp-size 4096: the CNAME and all 100 addresses in one datagram.
        let (len, resp) = ask_from_sized(POD_IP, addr, name, Some(4096));
        assert!(len > 1232 && !resp.metadata.truncation, "{len} bytes, TC {}", resp.metadata.truncation);
        assert_eq!(resp.answers.len(), 1 + BIG_RECORDS);
        assert_eq!(resp.edns.as_ref().map(|e| e.max_payload()), Some(4096), "the OPT advertises --max-udp-size");

        // EDNS 1232 and no EDNS: TC, the CNAME and the addresses that fit.
        for (edns, limit) in [(Some(1232), 1232), (None, 512)] {
            let (len, resp) = ask_from_sized(POD_IP, addr, name, edns);
            assert!(len <= limit, "{len} > {limit}");
            assert!(resp.metadata.truncation);
            assert_eq!(resp.answers.first().map(|r| r.record_type()), Some(RecordType::CNAME));
            assert!((2..=BIG_RECORDS).contains(&resp.answers.len()), "{} records", resp.answers.len());
        }
    })
    .await
    .unwrap();
    server.stop().await;
}
