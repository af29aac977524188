//! What an operator replacing CoreDNS relies on (issue 15), through the real binary over real
//! sockets: ExternalName chains inside the zones, reverse fallthrough, stub domains and the hosts
//! file. Forwarding goes to a real Knot DNS on loopback (skipped without `knotd`, except in CI).

mod support;

use std::path::Path;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use support::dns::{addresses, ask, query_message, rcode, tcp, zone_lines};
use support::objects::{Ep, mk_external_name_service, mk_headless_service, mk_namespace, mk_service, mk_slice};
use support::server::{BinaryServer, eventually, replace_file};

/// Writes `objects` as one `kind: List` (what `kubectl get -o yaml` writes).
fn write_cluster(path: &Path, objects: &[Value]) {
    let list = json!({ "apiVersion": "v1", "kind": "List", "items": objects });
    replace_file(path, &serde_json::to_string_pretty(&list).unwrap());
}

/// `serve` on the objects in `dir/cluster.json`, polling them quickly, with `extra` flags.
fn serve(dir: &Path, extra: &[&str]) -> BinaryServer {
    let source = format!("file:{}", dir.join("cluster.json").display());
    let mut args = vec!["serve", "--source", &source, "--listen", "127.0.0.1:0", "--http", "none"];
    args.extend(["--file-poll-interval", "20ms", "--file-settle", "50ms"]);
    args.extend_from_slice(extra);
    let server = BinaryServer::start(&args);
    let ready = server.wait_for_log("initial state published", std::time::Duration::from_secs(10));
    assert!(ready.is_some(), "the server did not publish its initial state");
    server
}

fn svc(name: &str) -> String {
    format!("{name}.ns-0.svc.cluster.local.")
}

fn chain_objects(headless_ips: &[&str]) -> Vec<Value> {
    let eps: Vec<Ep> = headless_ips.iter().map(|ip| Ep::new(ip)).collect();
    vec![
        mk_namespace("ns-0"),
        mk_service("ns-0", "svc-0", "10.96.0.10", &[("http", 80, "TCP")]),
        mk_headless_service("ns-0", "svc-1", &[("http", 80, "TCP")]),
        mk_slice("ns-0", "svc-1-a", "svc-1", "IPv4", &[("http", 80, "TCP")], &eps),
        mk_external_name_service("ns-0", "ext-0", "svc-0.ns-0.svc.cluster.local"),
        mk_external_name_service("ns-0", "ext-1", "ext-0.ns-0.svc.cluster.local"),
        mk_external_name_service("ns-0", "ext-2", "svc-1.ns-0.svc.cluster.local"),
        mk_external_name_service("ns-0", "ext-3", "nope.ns-0.svc.cluster.local"),
        mk_external_name_service("ns-0", "ext-4", "www.example.com"),
        mk_external_name_service("ns-0", "loop-0", "loop-1.ns-0.svc.cluster.local"),
        mk_external_name_service("ns-0", "loop-1", "loop-0.ns-0.svc.cluster.local"),
    ]
}

#[test]
fn external_names_inside_the_zones_are_followed_to_their_records() {
    let dir = tempfile::tempdir().unwrap();
    write_cluster(&dir.path().join("cluster.json"), &chain_objects(&["10.0.0.1", "10.0.0.2"]));
    let server = serve(dir.path(), &[]);
    let dns = server.addr;

    // One link: the CNAME, then the target Service's address, authoritative; UDP and TCP alike.
    let expected = [
        "ext-0.ns-0.svc.cluster.local. 5 IN CNAME svc-0.ns-0.svc.cluster.local.",
        "svc-0.ns-0.svc.cluster.local. 5 IN A 10.96.0.10",
    ];
    for resp in [ask(dns, &svc("ext-0"), RecordType::A), tcp(dns, &query_message(&svc("ext-0"), RecordType::A, None))] {
        assert_eq!(zone_lines(&resp.answers), expected);
        assert!(resp.metadata.authoritative);
        assert_eq!(rcode(&resp), ResponseCode::NoError);
    }
    // The question's letter case is kept in the first owner name.
    let resp = ask(dns, "EXT-0.ns-0.svc.Cluster.Local.", RecordType::A);
    assert_eq!(resp.answers[0].name.to_ascii(), "EXT-0.ns-0.svc.Cluster.Local.");
    assert_eq!(addresses(&resp), ["10.96.0.10"]);

    // A chain of two CNAMEs.
    let resp = ask(dns, &svc("ext-1"), RecordType::A);
    assert_eq!(
        zone_lines(&resp.answers),
        [
            "ext-1.ns-0.svc.cluster.local. 5 IN CNAME ext-0.ns-0.svc.cluster.local.",
            "ext-0.ns-0.svc.cluster.local. 5 IN CNAME svc-0.ns-0.svc.cluster.local.",
            "svc-0.ns-0.svc.cluster.local. 5 IN A 10.96.0.10",
        ]
    );
    // SRV follows too, with the target's glue.
    let resp = ask(dns, &svc("ext-2"), RecordType::SRV);
    assert_eq!(resp.answers.iter().filter(|r| r.record_type() == RecordType::SRV).count(), 2);
    assert_eq!(resp.additionals.iter().filter(|r| r.record_type() == RecordType::A).count(), 2);

    // A loop stops with the CNAMEs so far; a missing target is NXDOMAIN after the CNAME (RFC 6604).
    let resp = ask(dns, &svc("loop-0"), RecordType::A);
    assert_eq!(
        zone_lines(&resp.answers),
        [
            "loop-0.ns-0.svc.cluster.local. 5 IN CNAME loop-1.ns-0.svc.cluster.local.",
            "loop-1.ns-0.svc.cluster.local. 5 IN CNAME loop-0.ns-0.svc.cluster.local.",
        ]
    );
    assert_eq!(rcode(&resp), ResponseCode::NoError);
    let resp = ask(dns, &svc("ext-3"), RecordType::A);
    assert_eq!(rcode(&resp), ResponseCode::NXDomain);
    assert_eq!(resp.answers.len(), 1);
    assert_eq!(resp.authorities.first().map(|r| r.record_type()), Some(RecordType::SOA));

    // Outside the zones: the bare CNAME, for the client's resolver to follow. Asked for the
    // CNAME itself: the CNAME alone.
    let bare = |name: &str, qtype| zone_lines(&ask(dns, name, qtype).answers);
    assert_eq!(bare(&svc("ext-4"), RecordType::A), ["ext-4.ns-0.svc.cluster.local. 5 IN CNAME www.example.com."]);
    assert_eq!(bare(&svc("ext-0"), RecordType::CNAME), [expected[0]]);

    // The target's records are read when asked: a change to them shows through the CNAME.
    let addrs = |resp: Message| addresses(&resp);
    assert_eq!(addrs(ask(dns, &svc("ext-2"), RecordType::A)), ["10.0.0.1", "10.0.0.2"]);
    write_cluster(&dir.path().join("cluster.json"), &chain_objects(&["10.0.0.3"]));
    eventually("the headless target's new address", std::time::Duration::from_secs(10), || {
        addrs(ask(dns, &svc("ext-2"), RecordType::A)) == ["10.0.0.3"]
    });
}
