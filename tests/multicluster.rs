//! The cluster-set zone (`--multicluster-zone clusterset.local`, KEP-1645): the real binary,
//! serving ServiceImports and cluster-set EndpointSlices from YAML and from a fake API server,
//! asked over real DNS sockets.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType::{self, *};
use support::dns::{addresses, ask, rcode, require_tool, zone_lines};
use support::envtest::{ControlPlane, apply_value, wait_for};
use support::fake_api::FakeApiServer;
use support::knot::{Knot, free_port};
use support::objects::*;
use support::server::{BinaryServer, eventually};
use support::watchdog::Watchdog;

/// What a question gets.
enum Want {
    /// NOERROR with these answers (zone-file lines, in order) and, if not empty, this additional
    /// section (besides OPT).
    Records(&'static [&'static str], &'static [&'static str]),
    /// NOERROR, no answer, the zone SOA in the authority section.
    NoData,
    /// NXDOMAIN with the zone SOA.
    NxDomain,
}

use Want::*;

const fn rrs(answer: &'static [&'static str]) -> Want {
    Records(answer, &[])
}

/// Asks every question; fails listing every answer that differs.
fn check(dns: SocketAddr, table: &[(&str, RecordType, Want)]) {
    let mut failures = Vec::new();
    for (name, rtype, want) in table {
        let resp = ask(dns, name, *rtype);
        let (answer, additional) = (zone_lines(&resp.answers), zone_lines(&resp.additionals));
        let soa = resp.authorities.iter().any(|r| r.record_type() == SOA);
        let good = resp.metadata.authoritative
            && match want {
                Records(a, extra) => {
                    rcode(&resp) == ResponseCode::NoError && answer == *a && (extra.is_empty() || additional == *extra)
                }
                NoData => rcode(&resp) == ResponseCode::NoError && answer.is_empty() && soa,
                NxDomain => rcode(&resp) == ResponseCode::NXDomain && answer.is_empty() && soa,
            };
        if !good {
            failures
                .push(format!("{name} {rtype}: {:?} {answer:#?} additional {additional:#?} soa {soa}", rcode(&resp)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} questions answered wrong:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
}

/// The core test: the examples of the Multicluster DNS specification (KEP-1645
/// `specification.md`, schema 1.0.0), section by section, then what the specification leaves to
/// DNS itself, asked of the binary serving `tests/fixtures/clusterset.yaml` with the spec's TTL.
#[test]
fn the_specifications_examples() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clusterset.yaml");
    let flags = ["--multicluster-zone", "clusterset.local", "--ttl", "4", "--pods", "insecure"];
    let server = BinaryServer::file(&fixture, &flags);
    let published = server.wait_for_log("initial state published", Duration::from_secs(10)).expect("served");
    // Every object but the two broken ones.
    assert!(published.contains("imports=5 cluster_set_slices=5"), "{published}");
    const MY_PETS: &[&str] = &[
        "_https._tcp.headless.test.svc.clusterset.local. 4 IN SRV 0 16 443 my-pet-1.clustera.headless.test.svc.clusterset.local.",
        "_https._tcp.headless.test.svc.clusterset.local. 4 IN SRV 0 16 443 my-pet-1.clusterb.headless.test.svc.clusterset.local.",
        "_https._tcp.headless.test.svc.clusterset.local. 4 IN SRV 0 16 443 my-pet-2.clustera.headless.test.svc.clusterset.local.",
        "_https._tcp.headless.test.svc.clusterset.local. 4 IN SRV 0 16 443 my-pet-2.clusterb.headless.test.svc.clusterset.local.",
        "_https._tcp.headless.test.svc.clusterset.local. 4 IN SRV 0 16 443 my-pet-3.clustera.headless.test.svc.clusterset.local.",
        "_https._tcp.headless.test.svc.clusterset.local. 4 IN SRV 0 16 443 my-pet-3.clusterb.headless.test.svc.clusterset.local.",
    ];
    check(
        server.addr,
        &[
            // §2.2
            ("dns-version.clusterset.local.", TXT, rrs(&["dns-version.clusterset.local. 28800 IN TXT 1.0.0"])),
            // §2.3.1
            (
                "myservice.test.svc.clusterset.local.",
                A,
                rrs(&["myservice.test.svc.clusterset.local. 4 IN A 10.42.42.42"]),
            ),
            (
                "myservice.test.svc.clusterset.local.",
                AAAA,
                rrs(&["myservice.test.svc.clusterset.local. 4 IN AAAA 2001:db8::4242"]),
            ),
            // §2.3.2 (priority 0 and weight ⌊100/N⌋, as the cluster zone; glue in additional).
            (
                "_https._tcp.myservice.test.svc.clusterset.local.",
                SRV,
                Records(
                    &[
                        "_https._tcp.myservice.test.svc.clusterset.local. 4 IN SRV 0 100 443 myservice.test.svc.clusterset.local.",
                    ],
                    &[
                        "myservice.test.svc.clusterset.local. 4 IN A 10.42.42.42",
                        "myservice.test.svc.clusterset.local. 4 IN AAAA 2001:db8::4242",
                    ],
                ),
            ),
            // "Unnamed ports do not have an SRV record."
            ("_8443._tcp.myservice.test.svc.clusterset.local.", SRV, NxDomain),
            // §2.3.3
            (
                "1.0.3.10.in-addr.arpa.",
                PTR,
                rrs(&["1.0.3.10.in-addr.arpa. 4 IN PTR kubernetes.test.svc.clusterset.local."]),
            ),
            // §2.3.4: no name for one cluster's backends of a ClusterSetIP Service.
            ("clusterA.myservice.test.svc.clusterset.local.", A, NxDomain),
            // §2.4.1: every ready endpoint in every cluster; per endpoint and cluster.
            (
                "headless.test.svc.clusterset.local.",
                A,
                rrs(&[
                    "headless.test.svc.clusterset.local. 4 IN A 10.3.0.100",
                    "headless.test.svc.clusterset.local. 4 IN A 10.3.0.101",
                    "headless.test.svc.clusterset.local. 4 IN A 10.3.0.102",
                    "headless.test.svc.clusterset.local. 4 IN A 10.4.0.100",
                    "headless.test.svc.clusterset.local. 4 IN A 10.4.0.101",
                    "headless.test.svc.clusterset.local. 4 IN A 10.4.0.102",
                ]),
            ),
            (
                "headless.test.svc.clusterset.local.",
                AAAA,
                rrs(&[
                    "headless.test.svc.clusterset.local. 4 IN AAAA 2001:db8::1",
                    "headless.test.svc.clusterset.local. 4 IN AAAA 2001:db8::2",
                    "headless.test.svc.clusterset.local. 4 IN AAAA 2001:db8::3",
                ]),
            ),
            (
                "my-pet-1.clusterA.headless.test.svc.clusterset.local.",
                A,
                rrs(&["my-pet-1.clusterA.headless.test.svc.clusterset.local. 4 IN A 10.3.0.100"]),
            ),
            (
                "my-pet-1.clusterA.headless.test.svc.clusterset.local.",
                AAAA,
                rrs(&["my-pet-1.clusterA.headless.test.svc.clusterset.local. 4 IN AAAA 2001:db8::1"]),
            ),
            // §2.4.2: N ready endpoints × M named ports, the union of every cluster's.
            ("_https._tcp.headless.test.svc.clusterset.local.", SRV, rrs(MY_PETS)),
            // §2.4.3, IPv4 and IPv6.
            (
                "100.0.3.10.in-addr.arpa.",
                PTR,
                rrs(&["100.0.3.10.in-addr.arpa. 4 IN PTR my-pet-1.clustera.headless.test.svc.clusterset.local."]),
            ),
            (
                "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
                PTR,
                rrs(&[
                    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 4 IN PTR my-pet-1.clustera.headless.test.svc.clusterset.local.",
                ]),
            ),
        ],
    );

    // What the specification leaves to DNS, and to this server.
    check(
        server.addr,
        &[
            ("clusterset.local.", NS, rrs(&["clusterset.local. 4 IN NS ns.dns.clusterset.local."])),
            ("clusterset.local.", A, NoData),
            ("svc.clusterset.local.", A, NoData),
            ("test.svc.clusterset.local.", A, NoData),
            ("nope.test.svc.clusterset.local.", A, NxDomain),
            // A hostname present in both clusters: one name per cluster.
            (
                "my-pet-1.clusterB.headless.test.svc.clusterset.local.",
                A,
                rrs(&["my-pet-1.clusterB.headless.test.svc.clusterset.local. 4 IN A 10.4.0.100"]),
            ),
            ("my-pet-1.clusterB.headless.test.svc.clusterset.local.", AAAA, NoData),
            // Not ready (terminating): no name, not in the Service's answer, no SRV.
            ("my-pet-4.clusterB.headless.test.svc.clusterset.local.", A, NxDomain),
            // §2.4.4 wants no record at <clusterid>.<svc>…: an empty non-terminal while endpoint
            // names sit below it (RFC 8020), NXDOMAIN for a cluster that has none.
            ("clusterA.headless.test.svc.clusterset.local.", A, NoData),
            ("clusterC.headless.test.svc.clusterset.local.", A, NxDomain),
            // "If there are no ready endpoints for the headless Service, the answer should be NXDOMAIN."
            ("cache.test.svc.clusterset.local.", A, NxDomain),
            // An endpoint without a hostname: its dashed IP, as in the cluster zone.
            (
                "10-5-0-7.clusterA.api.test.svc.clusterset.local.",
                A,
                rrs(&["10-5-0-7.clusterA.api.test.svc.clusterset.local. 4 IN A 10.5.0.7"]),
            ),
            // The bare-name SRV of the cluster zone (CoreDNS) here too.
            (
                "myservice.test.svc.clusterset.local.",
                SRV,
                rrs(&["myservice.test.svc.clusterset.local. 4 IN SRV 0 100 443 myservice.test.svc.clusterset.local."]),
            ),
            // An address with a PTR from the cluster zone keeps it alone (§2.4.3 "Limitations");
            // the others get the cluster-set name.
            (
                "100.0.4.10.in-addr.arpa.",
                PTR,
                rrs(&["100.0.4.10.in-addr.arpa. 4 IN PTR my-pet-1.headless.test.svc.cluster.local."]),
            ),
            (
                "101.0.4.10.in-addr.arpa.",
                PTR,
                rrs(&["101.0.4.10.in-addr.arpa. 4 IN PTR my-pet-2.clusterb.headless.test.svc.clusterset.local."]),
            ),
            // The cluster zone is untouched: the cluster-set slices are not its Service's.
            ("headless.test.svc.cluster.local.", A, rrs(&["headless.test.svc.cluster.local. 4 IN A 10.4.0.100"])),
            ("dns-version.cluster.local.", TXT, rrs(&["dns-version.cluster.local. 28800 IN TXT 1.1.0"])),
            // Pod names (--pods insecure) are the cluster zone's only.
            ("10-3-0-100.test.pod.cluster.local.", A, rrs(&["10-3-0-100.test.pod.cluster.local. 4 IN A 10.3.0.100"])),
            ("pod.clusterset.local.", A, NxDomain),
            ("10-3-0-100.test.pod.clusterset.local.", A, NxDomain),
            // Skipped objects: the rest is served (above).
            ("bad.test.svc.clusterset.local.", A, NxDomain),
            ("stray.headless.test.svc.clusterset.local.", A, NxDomain),
        ],
    );
    // The apex SOA is the zone's own, as in negative answers above.
    let soa = zone_lines(&ask(server.addr, "clusterset.local.", SOA).answers);
    assert!(
        soa.len() == 1
            && soa[0].starts_with("clusterset.local. 4 IN SOA ns.dns.clusterset.local. hostmaster.clusterset.local. "),
        "{soa:?}"
    );
    let logs = server.startup_logs.join("\n");
    for skipped in ["ServiceImport test/bad", "spec.ips: invalid type", "EndpointSlice test/orphan", SOURCE_CLUSTER] {
        assert!(logs.contains(skipped), "a warning naming {skipped:?}:\n{logs}");
    }
}

/// The zone is a served zone like the cluster's: a real Knot secondary transfers it (AXFR) and
/// answers what the primary answers.
#[test]
fn a_knot_secondary_serves_the_transferred_cluster_set_zone() {
    if !require_tool("knotd") {
        return;
    }
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clusterset.yaml");
    let flags = ["--multicluster-zone", "clusterset.local", "--transfer-to", "127.0.0.0/8"];
    let primary = BinaryServer::file(&fixture, &flags);
    primary.wait_for_log("initial state published", Duration::from_secs(10)).expect("served");
    let knot = Knot::secondary_of("clusterset.local", free_port(), primary.addr);
    let probe = "myservice.test.svc.clusterset.local.";
    eventually("the secondary has the zone", Duration::from_secs(15), || {
        support::dns::udp_raw(
            knot.addr,
            &support::dns::query_message(probe, A, None).to_vec().unwrap(),
            Duration::from_millis(300),
        )
        .and_then(|r| hickory_proto::op::Message::from_vec(&r).ok())
        .is_some_and(|m| !m.answers.is_empty())
    });
    for (name, rtype) in [
        (probe, AAAA),
        ("headless.test.svc.clusterset.local.", A),
        ("my-pet-2.clusterB.headless.test.svc.clusterset.local.", A),
        ("_https._tcp.headless.test.svc.clusterset.local.", SRV),
        ("dns-version.clusterset.local.", TXT),
        ("clusterA.headless.test.svc.clusterset.local.", A),
        ("my-pet-4.clusterB.headless.test.svc.clusterset.local.", A),
    ] {
        let (ours, theirs) = (ask(primary.addr, name, rtype), ask(knot.addr, name, rtype));
        let (mut a, mut b) = (zone_lines(&ours.answers), zone_lines(&theirs.answers));
        a.sort();
        b.sort();
        assert_eq!((rcode(&ours), a), (rcode(&theirs), b), "{name} {rtype}");
    }
}

const SOURCE_CLUSTER: &str = "multicluster.kubernetes.io/source-cluster is missing";
const NS_0: &str = "ns-0";
const DB: &[(&str, u16, &str)] = &[("db", 5432, "TCP")];

fn pet(i: usize, cluster: &str) -> String {
    format!("db-{i}.{cluster}.db.{NS_0}.svc.clusterset.local.")
}

/// `serve --source kube --multicluster-zone clusterset.local` against a fake API server.
fn kube_server(api: &FakeApiServer, dir: &tempfile::TempDir) -> BinaryServer {
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    BinaryServer::kube(&kubeconfig, &["--multicluster-zone", "clusterset.local"])
}

fn db_slice(cluster: &str, endpoints: &[Ep]) -> serde_json::Value {
    mk_cluster_slice(NS_0, &format!("db-{cluster}"), "db", cluster, "IPv4", DB, endpoints)
}

fn expect(dns: SocketAddr, name: &str, want: &[&str]) {
    let want_rcode = if want.is_empty() { ResponseCode::NXDomain } else { ResponseCode::NoError };
    eventually(&format!("{name} → {want:?}"), Duration::from_secs(10), || {
        let resp = ask(dns, name, A);
        let mut got = addresses(&resp);
        got.sort();
        rcode(&resp) == want_rcode && got == want
    });
}

/// Churn through the Kubernetes API: one cluster's endpoints go not ready and come back, a
/// cluster joins, an import changes type and goes away; the names that did not change never
/// flap, and the cluster zone is never disturbed.
#[test]
fn churn_through_the_api_server_never_flaps_unchanged_names() {
    let api = FakeApiServer::start();
    let a_pets = [Ep::new("10.1.0.1").hostname("db-0"), Ep::new("10.1.0.2").hostname("db-1")];
    let b_pets = [Ep::new("10.2.0.1").hostname("db-0"), Ep::new("10.2.0.2").hostname("db-1")];
    // Wrongly typed (the fake API server does not validate): skipped, naming it.
    let mut bad = mk_service_import("v1beta1", NS_0, "bad", "ClusterSetIP", &["10.42.0.9"], &[("http", 80, "TCP")]);
    bad["spec"]["ports"][0]["port"] = serde_json::json!("eighty");
    api.apply_many([
        mk_namespace(NS_0),
        mk_headless_service(NS_0, "db", DB),
        mk_slice(NS_0, "db-local", "db", "IPv4", DB, &a_pets),
        mk_service_import("v1beta1", NS_0, "db", "Headless", &[], DB),
        mk_service_import("v1beta1", NS_0, "api", "ClusterSetIP", &["10.42.0.1"], &[("http", 80, "TCP")]),
        bad,
        db_slice("cluster-a", &a_pets),
        db_slice("cluster-b", &b_pets),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let server = kube_server(&api, &dir);
    let (dns, http) = (server.addr, server.http_addr());
    let service = format!("db.{NS_0}.svc.clusterset.local.");
    expect(dns, &service, &["10.1.0.1", "10.1.0.2", "10.2.0.1", "10.2.0.2"]);
    let api_name = format!("api.{NS_0}.svc.clusterset.local.");
    expect(dns, &api_name, &["10.42.0.1"]);
    assert_eq!(api.list_requests("ServiceImport"), 2, "one probe for the version, one list");
    let skipped = server.wait_for_log("ServiceImport ns-0/bad", Duration::from_secs(5)).expect("a warning");
    assert!(skipped.contains("spec.ports[0].port: invalid type"), "{skipped}");
    expect(dns, &format!("bad.{NS_0}.svc.clusterset.local."), &[]);

    let stable = vec![
        pet(0, "cluster-b"),
        pet(1, "cluster-b"),
        api_name.clone(),
        format!("db-0.db.{NS_0}.svc.cluster.local."),
        format!("db.{NS_0}.svc.cluster.local."),
    ];
    let dog = Watchdog::start(dns, stable);

    // cluster-a's endpoints go not ready: cluster-b's still answer.
    api.apply(db_slice("cluster-a", &[a_pets[0].clone().not_ready(), a_pets[1].clone().not_ready()]));
    expect(dns, &service, &["10.2.0.1", "10.2.0.2"]);
    expect(dns, &pet(0, "cluster-a"), &[]);
    let srv = ask(dns, &format!("_db._tcp.{service}"), SRV);
    assert_eq!(srv.answers.len(), 2, "SRV for cluster-b's two ready endpoints: {srv:?}");
    // `explain` says why, from the cluster asked about only.
    let (status, why) = support::server::http_get(http, &format!("/explain?name={}&type=A", pet(0, "cluster-a")));
    assert_eq!(status, 200, "{why}");
    for line in [
        "answer: Non-Existent Domain",
        "ServiceImport ns-0/db: Headless",
        "EndpointSlice ns-0/db-cluster-a from cluster cluster-a (2 endpoints)",
        "10.1.0.1 name=db-0 pod=- ready=false serving=false terminating=false → left out: not ready",
    ] {
        assert!(why.contains(line), "{line:?} in:\n{why}");
    }
    assert!(!why.contains("cluster-b"), "{why}");
    // …and who owns an address.
    for (reverse, owner) in [
        (
            "1.0.2.10.in-addr.arpa.",
            "endpoint of ServiceImport ns-0/db from cluster cluster-b in EndpointSlice ns-0/db-cluster-b",
        ),
        ("1.0.1.10.in-addr.arpa.", "endpoint of Service ns-0/db in EndpointSlice ns-0/db-local"),
        ("1.0.42.10.in-addr.arpa.", "clusterset IP of ServiceImport ns-0/api"),
    ] {
        let (_, why) = support::server::http_get(http, &format!("/explain?name={reverse}&type=PTR"));
        assert!(why.contains(owner), "{owner:?} in:\n{why}");
    }
    // …and come back.
    api.apply(db_slice("cluster-a", &a_pets));
    expect(dns, &pet(0, "cluster-a"), &["10.1.0.1"]);
    expect(dns, &service, &["10.1.0.1", "10.1.0.2", "10.2.0.1", "10.2.0.2"]);

    // A cluster joins, with a hostname the others have too; then leaves.
    api.apply(db_slice("cluster-c", &[Ep::new("10.3.0.1").hostname("db-0")]));
    expect(dns, &pet(0, "cluster-c"), &["10.3.0.1"]);
    expect(dns, &service, &["10.1.0.1", "10.1.0.2", "10.2.0.1", "10.2.0.2", "10.3.0.1"]);
    api.delete("EndpointSlice", Some(NS_0), "db-cluster-c");
    expect(dns, &pet(0, "cluster-c"), &[]);

    // A dropped watch and a 410 relist are applied as differences.
    api.drop_watches();
    api.apply(mk_service_import("v1beta1", NS_0, "cache", "ClusterSetIP", &["10.42.0.2"], &[]));
    expect(dns, &format!("cache.{NS_0}.svc.clusterset.local."), &["10.42.0.2"]);
    api.expire_watches();
    api.delete("ServiceImport", Some(NS_0), "cache");
    expect(dns, &format!("cache.{NS_0}.svc.clusterset.local."), &[]);
    assert!(dog.finish() > 0, "the watchdog asked");
}

/// Without the ServiceImport CRD: one warning, and the cluster zone serves (readiness does not
/// wait for a kind the cluster does not have). The cluster-set slices are still watched.
#[test]
fn without_the_crd_one_warning_and_the_cluster_zone_serves() {
    let api = FakeApiServer::start();
    api.set_served("ServiceImport", false);
    api.apply_many([
        mk_namespace(NS_0),
        mk_service(NS_0, "web", "10.96.0.7", &[("http", 80, "TCP")]),
        db_slice("cluster-a", &[Ep::new("10.1.0.1").hostname("db-0")]),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let server = kube_server(&api, &dir);
    let http = server.http_addr();
    let warning = server.wait_for_log("cannot watch ServiceImports", Duration::from_secs(15));
    let warning = warning.expect("a warning that ServiceImports cannot be watched");
    assert!(warning.contains("the ServiceImport CRD is not installed"), "{warning}");
    assert!(warning.contains("multicluster.x-k8s.io/v1beta1, multicluster.x-k8s.io/v1alpha1"), "{warning}");
    expect(server.addr, &format!("web.{NS_0}.svc.cluster.local."), &["10.96.0.7"]);
    check(
        server.addr,
        &[
            ("dns-version.clusterset.local.", TXT, rrs(&["dns-version.clusterset.local. 28800 IN TXT 1.0.0"])),
            (&format!("db.{NS_0}.svc.clusterset.local."), A, NxDomain),
        ],
    );
    assert_eq!(support::server::http_get(http, "/readyz").0, 200, "ready without the CRD");
    let later = server.drain_logs();
    assert!(!later.iter().any(|l| l.contains("cannot watch ServiceImports")), "warned once: {later:#?}");
}

/// Without `--multicluster-zone`, nothing of the cluster set is asked for or served, and its
/// EndpointSlices stay out of the cluster zone.
#[test]
fn without_the_flag_nothing_is_watched() {
    let api = FakeApiServer::start();
    api.apply_many([
        mk_namespace(NS_0),
        mk_headless_service(NS_0, "db", DB),
        mk_service_import("v1beta1", NS_0, "db", "Headless", &[], DB),
        db_slice("cluster-a", &[Ep::new("10.1.0.1").hostname("db-0")]),
        mk_slice(NS_0, "db-local", "db", "IPv4", DB, &[Ep::new("10.1.0.9").hostname("db-9")]),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let server = BinaryServer::kube(&kubeconfig, &[]);
    expect(server.addr, &format!("db.{NS_0}.svc.cluster.local."), &["10.1.0.9"]);
    assert_eq!(rcode(&ask(server.addr, "dns-version.clusterset.local.", TXT)), ResponseCode::Refused);
    assert_eq!(api.list_requests("ServiceImport"), 0);
    let logs = server.drain_logs().join("\n");
    assert!(!logs.contains("db-cluster-a"), "the cluster-set slice is not the cluster zone's: {logs}");
}

/// The ServiceImport CRD as mcs-api installs it before v1beta1: v1alpha1 only (the schema is not
/// what this test is about: the server must find the version that is served).
const CRD_V1ALPHA1: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: serviceimports.multicluster.x-k8s.io}
spec:
  group: multicluster.x-k8s.io
  scope: Namespaced
  names: {kind: ServiceImport, listKind: ServiceImportList, plural: serviceimports, singular: serviceimport}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

/// Against a real kube-apiserver (`$KUBEBUILDER_ASSETS`): with only the v1alpha1 CRD the server
/// falls back to it and serves the imports; with `deploy/rbac.yaml`'s ServiceAccount, which may not
/// read ServiceImports, it warns once and serves the cluster zone.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_api_server_with_the_v1alpha1_crd_and_without_the_rbac() {
    let Some(plane) = ControlPlane::start("mcs").await else { return };
    plane.apply_yaml(CRD_V1ALPHA1, false).await.expect("the CRD applies");
    let rbac =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rbac.yaml")).unwrap();
    plane.apply_yaml(&rbac, false).await.expect("rbac.yaml applies");
    let client = plane.client().await;
    let import = mk_service_import("v1alpha1", "default", "db", "Headless", &[], DB);
    wait_for("the CRD to be served", Duration::from_secs(20), || {
        let (client, import) = (client.clone(), import.clone());
        async move { apply_value(&client, import, false).await.ok() }
    })
    .await;
    let slice = mk_cluster_slice(
        "default",
        "db-cluster-a",
        "db",
        "cluster-a",
        "IPv4",
        DB,
        &[Ep::new("10.1.0.1").hostname("db-0")],
    );
    apply_value(&client, slice, false).await.expect("the cluster-set slice applies");
    apply_value(&client, mk_service("default", "api", "10.96.0.50", &[("http", 80, "TCP")]), false)
        .await
        .expect("the Service applies");

    let admin = BinaryServer::kube(plane.kubeconfig(), &["--multicluster-zone", "clusterset.local"]);
    let watching = admin.wait_for_log("watching ServiceImports", Duration::from_secs(20)).expect("a watch");
    assert!(watching.contains("v1alpha1"), "{watching}");
    expect(admin.addr, "db-0.cluster-a.db.default.svc.clusterset.local.", &["10.1.0.1"]);
    expect(admin.addr, "db.default.svc.clusterset.local.", &["10.1.0.1"]);

    let kubeconfig = plane.service_account_kubeconfig("kube-system", "headless-dns").await;
    let limited = BinaryServer::kube(&kubeconfig, &["--multicluster-zone", "clusterset.local"]);
    let warning = limited.wait_for_log("cannot watch ServiceImports", Duration::from_secs(20)).expect("a warning");
    assert!(warning.contains("not allowed to list them"), "{warning}");
    assert!(warning.contains("serviceimports.multicluster.x-k8s.io"), "{warning}");
    expect(limited.addr, "api.default.svc.cluster.local.", &["10.96.0.50"]);
    // Without its ServiceImport, a cluster-set EndpointSlice makes no name.
    expect(limited.addr, "db-0.cluster-a.db.default.svc.clusterset.local.", &[]);
}
