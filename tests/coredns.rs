//! What an operator replacing CoreDNS relies on (issue 15), through the real binary over real
//! sockets: ExternalName chains inside the zones, reverse fallthrough, stub domains and the hosts
//! file. Forwarding goes to a real Knot DNS on loopback (skipped without `knotd`, except in CI).

mod support;

use std::path::Path;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

use hickory_proto::rr::RData;
use support::dns::{addresses, ask, query_message, rcode, require_tool, tcp, zone_lines};
use support::fake_api::FakeApiServer;
use support::knot::{Knot, free_port};
use support::objects::{
    Ep, mk_external_name_service, mk_headless_service, mk_namespace, mk_service, mk_slice, with_labels,
};
use support::server::{BinaryServer, eventually, replace_file, wait_until};

/// Writes `objects` as one `kind: List` (what `kubectl get -o yaml` writes).
fn write_cluster(path: &Path, objects: &[Value]) {
    let list = json!({ "apiVersion": "v1", "kind": "List", "items": objects });
    replace_file(path, &serde_json::to_string_pretty(&list).unwrap());
}

/// `serve` on the objects in `dir/cluster.json`, polling them quickly, with `extra` flags, once
/// it serves them.
fn serve(dir: &Path, extra: &[&str]) -> BinaryServer {
    let server = start(dir, extra);
    let ready = server.wait_for_log("initial state published", Duration::from_secs(10));
    assert!(ready.is_some(), "the server did not publish its initial state");
    server
}

/// [`serve`] without waiting for the objects to be served.
fn start(dir: &Path, extra: &[&str]) -> BinaryServer {
    let source = format!("file:{}", dir.join("cluster.json").display());
    let mut args = vec!["serve", "--source", &source];
    args.extend(["--file-poll-interval", "20ms", "--file-settle", "50ms"]);
    for (flag, default) in [("--listen", "127.0.0.1:0"), ("--http", "none")] {
        if !extra.contains(&flag) {
            args.extend([flag, default]);
        }
    }
    args.extend_from_slice(extra);
    BinaryServer::start(&args)
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
    eventually("the headless target's new address", Duration::from_secs(10), || {
        addrs(ask(dns, &svc("ext-2"), RecordType::A)) == ["10.0.0.3"]
    });
}

/// The PTR targets in the answer section.
fn ptrs(resp: &Message) -> Vec<String> {
    resp.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::PTR(p) => Some(p.0.to_ascii()),
            _ => None,
        })
        .collect()
}

/// The owner of the SOA in the authority section: whose negative answer it is.
fn soa_owner(resp: &Message) -> Option<String> {
    resp.authorities.iter().find(|r| r.record_type() == RecordType::SOA).map(|r| r.name.to_ascii())
}

/// A cluster with one ClusterIP Service at 10.96.0.10, in `dir`.
fn small_cluster(dir: &Path) {
    write_cluster(&dir.join("cluster.json"), &chain_objects(&["10.0.0.1"]));
}

#[test]
fn reverse_names_the_cluster_does_not_know_fall_through_to_the_upstream() {
    if !require_tool("knotd") {
        return;
    }
    let knot = Knot::authoritative(&[("2.0.192.in-addr.arpa", "10 IN PTR www.example.test.\n")]);
    let dir = tempfile::tempdir().unwrap();
    small_cluster(dir.path());
    let upstream = knot.addr.to_string();
    let server = serve(dir.path(), &["--upstream", &upstream]);

    // An address outside the cluster: the upstream's name, not authoritative.
    let resp = ask(server.addr, "10.2.0.192.in-addr.arpa.", RecordType::PTR);
    assert_eq!(ptrs(&resp), ["www.example.test."]);
    assert!(resp.metadata.recursion_available && !resp.metadata.authoritative);
    // Unknown upstream too: its NXDOMAIN, with its SOA.
    let resp = ask(server.addr, "99.2.0.192.in-addr.arpa.", RecordType::PTR);
    assert_eq!((rcode(&resp), soa_owner(&resp).as_deref()), (ResponseCode::NXDomain, Some("2.0.192.in-addr.arpa.")));
    // The cluster's own addresses are still ours.
    let resp = ask(server.addr, "10.0.96.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(ptrs(&resp), ["svc-0.ns-0.svc.cluster.local."]);
    assert!(resp.metadata.authoritative);

    // The old behaviour on request, and without upstreams: our NXDOMAIN.
    for flags in [&["--upstream", &upstream, "--no-reverse-fallthrough"][..], &["--upstream", "none"]] {
        let server = serve(dir.path(), flags);
        let resp = ask(server.addr, "10.2.0.192.in-addr.arpa.", RecordType::PTR);
        assert_eq!((rcode(&resp), soa_owner(&resp).as_deref()), (ResponseCode::NXDomain, Some("in-addr.arpa.")));
        assert!(resp.metadata.authoritative, "{flags:?}");
    }
}

#[test]
fn stub_domains_take_their_zone_and_the_longest_zone_wins() {
    if !require_tool("knotd") {
        return;
    }
    let mut outer = Knot::authoritative(&[("example.test", "www IN A 192.0.2.10\n")]);
    let mut inner = Knot::authoritative(&[
        ("sub.example.test", "www IN A 192.0.2.77\n"),
        ("10.in-addr.arpa", "99.0.0 IN PTR legacy.example.test.\n"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    small_cluster(dir.path());
    let (outer_zone, inner_zone) = (format!("example.test={}", outer.addr), format!("sub.example.test={}", inner.addr));
    let reverse_zone = format!("10.in-addr.arpa=127.0.0.1:1,{}", inner.addr);
    let server = serve(dir.path(), &["--forward", &inner_zone, "--forward", &outer_zone, "--forward", &reverse_zone]);
    let dns = server.addr;

    assert_eq!(addresses(&ask(dns, "www.example.test.", RecordType::A)), ["192.0.2.10"]);
    // The longer zone's upstream, though the shorter zone holds the name too.
    assert_eq!(addresses(&ask(dns, "www.sub.example.test.", RecordType::A)), ["192.0.2.77"]);
    // A reverse stub zone gets the addresses the cluster does not know, even with a dead first
    // upstream; the cluster's own stay ours.
    assert_eq!(ptrs(&ask(dns, "99.0.0.10.in-addr.arpa.", RecordType::PTR)), ["legacy.example.test."]);
    assert_eq!(ptrs(&ask(dns, "10.0.96.10.in-addr.arpa.", RecordType::PTR)), ["svc-0.ns-0.svc.cluster.local."]);
    // No default upstream (`--upstream none`, the harness's default): others are refused.
    assert_eq!(rcode(&ask(dns, "www.example.org.", RecordType::A)), ResponseCode::Refused);

    // The same cache as the default upstream: with both upstreams gone, what was asked still
    // answers, and what was not fails fast.
    for knot in [&mut outer, &mut inner] {
        let _ = knot.child.kill();
        let _ = knot.child.wait();
    }
    assert_eq!(addresses(&ask(dns, "www.sub.example.test.", RecordType::A)), ["192.0.2.77"]);
    let started = Instant::now();
    assert_eq!(rcode(&ask(dns, "new.sub.example.test.", RecordType::A)), ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
}

#[test]
fn a_stub_domain_that_loops_back_is_switched_off_alone() {
    let dir = tempfile::tempdir().unwrap();
    small_cluster(dir.path());
    let listen = format!("127.0.0.1:{}", free_port());
    let stub = format!("loop.test={listen}");
    let server = start(dir.path(), &["--listen", &listen, "--forward", &stub]);
    let line = server.wait_for_log("forwarding loop detected", Duration::from_secs(10));
    assert!(line.as_deref().is_some_and(|l| l.contains("loop.test")), "{line:?}");
    let started = Instant::now();
    assert_eq!(rcode(&ask(server.addr, "www.loop.test.", RecordType::A)), ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_secs(1));
    wait_until(|| addresses(&ask(server.addr, &svc("svc-0"), RecordType::A)) == ["10.96.0.10"]);
}

#[test]
fn bad_stub_domains_are_refused_at_start_naming_the_flag() {
    for (value, reason) in [
        ("example.test", "expected ZONE=ADDR"),
        ("example.test=nowhere", "\"nowhere\" is not IP or IP:PORT"),
        ("ns-0.svc.cluster.local=10.0.0.1", "inside the served zone cluster.local."),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_headless-dns"))
            .args(["serve", "--source", "file:/dev/null", "--forward", value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(&format!("--forward {value:?}")) && stderr.contains(reason), "{stderr}");
    }
}

/// Writes `text` as `dir/NodeHosts` the way the kubelet updates a ConfigMap volume: the file is a
/// symlink through `..data`, and an update makes a new directory and swaps `..data` to it.
fn configmap_write(dir: &Path, version: usize, text: &str) {
    let data = dir.join(format!("..2026_{version}"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("NodeHosts"), text).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(data.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    if version == 0 {
        std::os::unix::fs::symlink("..data/NodeHosts", dir.join("NodeHosts")).unwrap();
    }
}

#[test]
fn a_hosts_file_is_answered_and_followed_through_configmap_updates() {
    let dir = tempfile::tempdir().unwrap();
    small_cluster(dir.path());
    let volume = dir.path().join("coredns");
    std::fs::create_dir(&volume).unwrap();
    configmap_write(
        &volume,
        0,
        "# k3s NodeHosts\n192.168.1.10 node-0\nfd00::10 node-0\n192.168.1.11 node-1 node-1.lan\n\
         192.168.1.30 svc-0.ns-0.svc.cluster.local\n",
    );
    let hosts = volume.join("NodeHosts").display().to_string();
    let server = serve(dir.path(), &["--hosts", &hosts, "--hosts-reload", "50ms", "--hosts-ttl", "60"]);
    let dns = server.addr;

    let resp = ask(dns, "node-0.", RecordType::A);
    assert_eq!(zone_lines(&resp.answers), ["node-0. 60 IN A 192.168.1.10"]);
    assert_eq!(addresses(&ask(dns, "node-0.", RecordType::AAAA)), ["fd00::10"]);
    assert_eq!(ptrs(&ask(dns, "11.1.168.192.in-addr.arpa.", RecordType::PTR)), ["node-1.", "node-1.lan."]);
    // A name of the file without the asked type: NODATA. Not in the file, no upstream: REFUSED.
    let resp = ask(dns, "node-1.lan.", RecordType::AAAA);
    assert_eq!((rcode(&resp), resp.answers.len()), (ResponseCode::NoError, 0));
    assert_eq!(rcode(&ask(dns, "node-9.", RecordType::A)), ResponseCode::Refused);
    // The cluster's names stay the cluster's; its reverse names too.
    assert_eq!(addresses(&ask(dns, &svc("svc-0"), RecordType::A)), ["10.96.0.10"]);
    assert_eq!(ptrs(&ask(dns, "10.0.96.10.in-addr.arpa.", RecordType::PTR)), ["svc-0.ns-0.svc.cluster.local."]);
    // Unknown reverse names without upstreams: NXDOMAIN, as before.
    assert_eq!(rcode(&ask(dns, "99.1.168.192.in-addr.arpa.", RecordType::PTR)), ResponseCode::NXDomain);

    // The ConfigMap changes: a node moves, one leaves, and a bad line is skipped and named.
    configmap_write(&volume, 1, "192.168.1.20 node-0\n192.168.1.300 node-2\n");
    let warning = server.wait_for_log("line skipped", Duration::from_secs(10));
    assert!(warning.as_deref().is_some_and(|l| l.contains("line=2") && l.contains("192.168.1.300")), "{warning:?}");
    eventually("node-0's new address", Duration::from_secs(10), || {
        addresses(&ask(dns, "node-0.", RecordType::A)) == ["192.168.1.20"]
    });
    assert_eq!(rcode(&ask(dns, "node-1.", RecordType::A)), ResponseCode::Refused);
    assert_eq!(rcode(&ask(dns, "11.1.168.192.in-addr.arpa.", RecordType::PTR)), ResponseCode::NXDomain);
}

fn kubernetes_objects(svc_2_ready: bool) -> Vec<Value> {
    let http = [("http", 80, "TCP")];
    let mut svc_2_eps = Vec::new();
    if svc_2_ready {
        svc_2_eps.push(Ep::new("10.0.0.20"));
    }
    vec![
        mk_namespace("ns-0"),
        mk_service("ns-0", "svc-0", "10.96.0.10", &http),
        mk_slice(
            "ns-0",
            "svc-0-a",
            "svc-0",
            "IPv4",
            &http,
            &[Ep::new("10.0.0.5").target_pod("pod-5"), Ep::new("10.0.0.6").hostname("web-0").target_pod("web-0")],
        ),
        mk_headless_service("ns-0", "svc-1", &http),
        mk_slice("ns-0", "svc-1-a", "svc-1", "IPv4", &http, &[Ep::new("10.0.0.1").target_pod("pod-a")]),
        mk_service("ns-0", "svc-2", "10.96.0.20", &http),
        mk_slice("ns-0", "svc-2-a", "svc-2", "IPv4", &http, &svc_2_eps),
        mk_service("ns-0", "svc-3", "10.96.0.30", &http),
        mk_slice("ns-0", "svc-3-a", "svc-3", "IPv4", &http, &[Ep::new("10.0.0.30").not_ready()]),
    ]
}

#[test]
fn kubernetes_plugin_options_have_coredns_meanings() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster.json");
    write_cluster(&cluster, &kubernetes_objects(false));
    let a = |dns, name: &str| {
        let resp = ask(dns, name, RecordType::A);
        if rcode(&resp) == ResponseCode::NXDomain { vec!["NXDOMAIN".to_string()] } else { addresses(&resp) }
    };
    let ptr = |dns, name: &str| ptrs(&ask(dns, name, RecordType::PTR));

    // Defaults: dashed-IP endpoint names; every ClusterIP Service answers.
    let server = serve(dir.path(), &[]);
    assert_eq!(a(server.addr, &svc("10-0-0-5.svc-0")), ["10.0.0.5"]);
    assert_eq!(a(server.addr, &svc("pod-5.svc-0")), ["NXDOMAIN"]);
    assert_eq!(a(server.addr, &svc("svc-2")), ["10.96.0.20"]);
    drop(server);

    // endpoint_pod_names: the Pod's name unless there is a hostname; PTR follows.
    let server = serve(dir.path(), &["--endpoint-pod-names"]);
    assert_eq!(a(server.addr, &svc("pod-5.svc-0")), ["10.0.0.5"]);
    assert_eq!(a(server.addr, &svc("10-0-0-5.svc-0")), ["NXDOMAIN"]);
    assert_eq!(a(server.addr, &svc("web-0.svc-0")), ["10.0.0.6"]);
    assert_eq!(a(server.addr, &svc("pod-a.svc-1")), ["10.0.0.1"]);
    assert_eq!(ptr(server.addr, "5.0.0.10.in-addr.arpa."), ["pod-5.svc-0.ns-0.svc.cluster.local."]);
    drop(server);

    // noendpoints: headless Services and endpoint names are NXDOMAIN, cluster IPs answer.
    let server = serve(dir.path(), &["--no-endpoints"]);
    assert_eq!(a(server.addr, &svc("svc-1")), ["NXDOMAIN"]);
    assert_eq!(a(server.addr, &svc("web-0.svc-0")), ["NXDOMAIN"]);
    assert_eq!(a(server.addr, &svc("svc-0")), ["10.96.0.10"]);
    assert_eq!(ptr(server.addr, "5.0.0.10.in-addr.arpa."), Vec::<String>::new());
    assert_eq!(ptr(server.addr, "10.0.96.10.in-addr.arpa."), ["svc-0.ns-0.svc.cluster.local."]);
    drop(server);

    // ignore empty_service: no ready endpoint, NXDOMAIN (SRV too), until one is ready.
    let server = serve(dir.path(), &["--ignore-empty-service"]);
    assert_eq!(a(server.addr, &svc("svc-2")), ["NXDOMAIN"]);
    assert_eq!(a(server.addr, &svc("svc-3")), ["NXDOMAIN"]);
    assert_eq!(rcode(&ask(server.addr, &svc("_http._tcp.svc-2"), RecordType::SRV)), ResponseCode::NXDomain);
    assert_eq!(a(server.addr, &svc("svc-0")), ["10.96.0.10"]);
    write_cluster(&cluster, &kubernetes_objects(true));
    eventually("svc-2 answering once an endpoint is ready", Duration::from_secs(10), || {
        a(server.addr, &svc("svc-2")) == ["10.96.0.20"]
    });
}

/// Two namespaces labelled `team=<team of ns-0>` and `team=<team of ns-1>`, a Service in each.
fn team_objects(teams: [&str; 2]) -> Vec<Value> {
    let mut objects = Vec::new();
    for (i, team) in teams.into_iter().enumerate() {
        let ns = format!("ns-{i}");
        objects.push(with_labels(mk_namespace(&ns), &[("team", team)]));
        objects.push(mk_service(&ns, &format!("svc-{i}"), &format!("10.96.0.{}", 10 + i), &[("http", 80, "TCP")]));
    }
    objects
}

/// What `svc-0.ns-0` and `svc-1.ns-1` answer: an address or NXDOMAIN.
fn team_answers(dns: std::net::SocketAddr) -> [String; 2] {
    ["svc-0.ns-0.svc.cluster.local.", "svc-1.ns-1.svc.cluster.local."].map(|name| {
        let resp = ask(dns, name, RecordType::A);
        if rcode(&resp) == ResponseCode::NXDomain { "NXDOMAIN".into() } else { addresses(&resp).join(",") }
    })
}

#[test]
fn namespace_labels_select_namespaces_and_follow_relabelling_in_files() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster.json");
    write_cluster(&cluster, &team_objects(["a", "b"]));
    let server = serve(dir.path(), &["--namespace-labels", "team in (a,c)"]);
    assert_eq!(team_answers(server.addr), ["10.96.0.10", "NXDOMAIN"]);
    assert_eq!(ptrs(&ask(server.addr, "11.0.96.10.in-addr.arpa.", RecordType::PTR)), Vec::<String>::new());

    write_cluster(&cluster, &team_objects(["b", "c"]));
    eventually("the relabelled namespaces", Duration::from_secs(10), || {
        team_answers(server.addr) == ["NXDOMAIN", "10.96.0.11"]
    });
    assert_eq!(ptrs(&ask(server.addr, "11.0.96.10.in-addr.arpa.", RecordType::PTR)), ["svc-1.ns-1.svc.cluster.local."]);

    // A selector that does not parse stops the start, naming the flag.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_headless-dns"))
        .args(["serve", "--source", "file:/dev/null", "--namespace-labels", "team in (a"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--namespace-labels \"team in (a\""), "{stderr}");
}

#[test]
fn namespace_labels_follow_relabelling_through_the_kubernetes_api() {
    let api = FakeApiServer::start();
    api.apply_many(team_objects(["a", "b"]));
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = home.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let server = BinaryServer::kube(&kubeconfig, &["--namespace-labels", "team=a"]);
    eventually("the selected namespace served", Duration::from_secs(10), || {
        team_answers(server.addr) == ["10.96.0.10", "NXDOMAIN"]
    });
    api.apply(with_labels(mk_namespace("ns-1"), &[("team", "a")]));
    api.apply(with_labels(mk_namespace("ns-0"), &[("team", "b")]));
    eventually("the relabelled namespaces", Duration::from_secs(10), || {
        team_answers(server.addr) == ["NXDOMAIN", "10.96.0.11"]
    });
}

#[test]
fn no_endpoints_never_lists_or_watches_endpoint_slices() {
    let api = FakeApiServer::start();
    api.apply_many(kubernetes_objects(true));
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = home.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let a = |dns, name: &str| {
        let resp = ask(dns, name, RecordType::A);
        if rcode(&resp) == ResponseCode::NXDomain { vec!["NXDOMAIN".to_string()] } else { addresses(&resp) }
    };

    let server = BinaryServer::kube(&kubeconfig, &["--no-endpoints"]);
    eventually("the ClusterIP Service served", Duration::from_secs(10), || {
        a(server.addr, &svc("svc-0")) == ["10.96.0.10"]
    });
    assert_eq!(a(server.addr, &svc("svc-1")), ["NXDOMAIN"]);
    // Once the other watchers have listed and gone on to watch, none asked for EndpointSlices.
    eventually("the Service and Namespace watches", Duration::from_secs(10), || {
        api.watch_requests("Service") >= 1 && api.watch_requests("Namespace") >= 1
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!((api.list_requests("EndpointSlice"), api.watch_requests("EndpointSlice")), (0, 0));
    drop(server);

    // Without the flag the same API server is asked for them (the counts above mean something).
    let server = BinaryServer::kube(&kubeconfig, &[]);
    eventually("the headless Service served", Duration::from_secs(10), || {
        a(server.addr, &svc("svc-1")) == ["10.0.0.1"]
    });
    assert!(api.list_requests("EndpointSlice") >= 1);

    // `serve --help` says so.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_headless-dns")).args(["serve", "--help"]).output();
    let help = String::from_utf8_lossy(&help.unwrap().stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(help.contains("EndpointSlices are not listed or watched at all"), "{help}");
}

/// Knot with `short.example.test. 2 IN A 192.0.2.20`.
fn knot_with_short_ttl() -> Knot {
    Knot::authoritative(&[("example.test", "short 2 IN A 192.0.2.20\nother IN A 192.0.2.21\n")])
}

#[test]
fn serve_stale_answers_expired_names_when_the_upstream_stops_for_a_bounded_time() {
    if !require_tool("knotd") {
        return;
    }
    let mut knot = knot_with_short_ttl();
    let dir = tempfile::tempdir().unwrap();
    small_cluster(dir.path());
    let upstream = knot.addr.to_string();
    let stale = serve(dir.path(), &["--upstream", &upstream, "--serve-stale", "1h"]);
    let brief = serve(dir.path(), &["--upstream", &upstream, "--serve-stale", "100ms"]);
    let plain = serve(dir.path(), &["--upstream", &upstream]);
    for server in [&stale, &brief, &plain] {
        let resp = ask(server.addr, "short.example.test.", RecordType::A);
        assert_eq!(zone_lines(&resp.answers), ["short.example.test. 2 IN A 192.0.2.20"]);
    }
    let _ = knot.child.kill();
    let _ = knot.child.wait();
    std::thread::sleep(Duration::from_millis(2500));

    // Expired, upstream gone: the last answer with TTL 30 (RFC 8767), within the window only.
    let resp = ask(stale.addr, "short.example.test.", RecordType::A);
    assert_eq!(zone_lines(&resp.answers), ["short.example.test. 30 IN A 192.0.2.20"]);
    assert_eq!(rcode(&ask(stale.addr, "other.example.test.", RecordType::A)), ResponseCode::ServFail);
    assert_eq!(rcode(&ask(brief.addr, "short.example.test.", RecordType::A)), ResponseCode::ServFail);
    assert_eq!(rcode(&ask(plain.addr, "short.example.test.", RecordType::A)), ResponseCode::ServFail);
}

/// The value of one series in a `/metrics` scrape (0 when absent).
fn metric(http: std::net::SocketAddr, name: &str) -> f64 {
    let text = support::server::http_get(http, "/metrics").1;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

/// [`knot_with_short_ttl`] as the upstream of a server with `/metrics` and `extra` flags, once
/// its loop probe is answered: (Knot, cluster directory, server, HTTP address).
fn forwarding_with_metrics(extra: &[&str]) -> (Knot, tempfile::TempDir, BinaryServer, std::net::SocketAddr) {
    let knot = knot_with_short_ttl();
    let dir = tempfile::tempdir().unwrap();
    small_cluster(dir.path());
    let upstream = knot.addr.to_string();
    let mut args = vec!["--upstream", &upstream, "--http", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let server = start(dir.path(), &args);
    let http = server.http_addr();
    wait_until(|| metric(http, "headless_dns_forward_responses_total{rcode=\"REFUSED\"}") >= 1.0);
    (knot, dir, server, http)
}

/// A fake upstream on loopback: every A question under `example.test.` is answered 192.0.2.30
/// with TTL `ttl`, anything else REFUSED; it notes each A question and when it came.
struct CountingUpstream {
    addr: std::net::SocketAddr,
    asked: std::sync::Arc<std::sync::Mutex<Vec<(String, Instant)>>>,
}

impl CountingUpstream {
    fn start(ttl: u32) -> CountingUpstream {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let noted = std::sync::Arc::downgrade(&asked);
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends once the test drops its CountingUpstream.
            while let Some(asked) = noted.upgrade() {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else { continue };
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                let mut response = query.clone();
                response.metadata.message_type = hickory_proto::op::MessageType::Response;
                response.metadata.recursion_available = true;
                match query.queries.first() {
                    Some(q) if q.query_type() == RecordType::A && q.name().to_ascii().ends_with(".example.test.") => {
                        asked.lock().unwrap().push((q.name().to_ascii(), Instant::now()));
                        let a = RData::A(hickory_proto::rr::rdata::A::new(192, 0, 2, 30));
                        response.answers = vec![hickory_proto::rr::Record::from_rdata(q.name().clone(), ttl, a)];
                    }
                    _ => response.metadata.response_code = ResponseCode::Refused,
                }
                let _ = sock.send_to(&response.to_vec().unwrap(), peer);
            }
        });
        CountingUpstream { addr, asked }
    }

    /// When the upstream was asked `name`.
    fn asked(&self, name: &str) -> Vec<Instant> {
        self.asked.lock().unwrap().iter().filter(|(n, _)| n == name).map(|(_, at)| *at).collect()
    }
}

#[test]
fn prefetch_refreshes_a_popular_name_before_it_expires() {
    let upstream = CountingUpstream::start(4);
    let dir = tempfile::tempdir().unwrap();
    small_cluster(dir.path());
    let to = upstream.addr.to_string();
    let server = serve(dir.path(), &["--upstream", &to, "--prefetch", "2"]);
    let (popular, once) = ("popular.example.test.", "once.example.test.");

    // Asked once: not popular. Asked every 200 ms for 10 s (2.5 TTLs of 4 s): popular.
    assert_eq!(addresses(&ask(server.addr, once, RecordType::A)), ["192.0.2.30"]);
    let start = Instant::now();
    let mut ttls = Vec::new();
    while start.elapsed() < Duration::from_secs(10) {
        let resp = ask(server.addr, popular, RecordType::A);
        assert_eq!(addresses(&resp), ["192.0.2.30"]);
        ttls.push(resp.answers[0].ttl);
        std::thread::sleep(Duration::from_millis(200));
    }

    // Fetched once for the first client, then again each time 10 % of the TTL (rounded up to a
    // second) is left: every 3 s, before the 4 s run out. No client ever missed (that would
    // be an upstream query off this beat) or saw a TTL of 0.
    let asked = upstream.asked(popular);
    let gaps: Vec<Duration> = asked.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(asked.len(), 4, "{gaps:?}");
    for gap in &gaps {
        assert!(*gap > Duration::from_millis(2800) && *gap < Duration::from_millis(3500), "{gaps:?}");
    }
    assert!(ttls.iter().all(|&ttl| (1..=4).contains(&ttl)), "{ttls:?}");
    assert!(ttls.contains(&2), "the TTLs count down between refreshes: {ttls:?}");
    assert_eq!(upstream.asked(once).len(), 1);

    // Once nobody asks, the refreshes stop.
    let refreshes = upstream.asked(popular).len();
    std::thread::sleep(Duration::from_secs(5));
    assert!(upstream.asked(popular).len() <= refreshes + 1);
}

/// A port free on both 127.0.0.1 and ::1, UDP and TCP.
fn free_dual_port() -> u16 {
    loop {
        let port = free_port();
        if std::net::UdpSocket::bind(("::1", port)).is_ok() && std::net::TcpListener::bind(("::1", port)).is_ok() {
            return port;
        }
    }
}

#[test]
fn coredns_metric_names_count_real_queries() {
    if !require_tool("knotd") {
        return;
    }
    // One port on IPv4 and IPv6 loopback: one `server` label, two address families.
    let port = free_dual_port();
    let (v4, v6) = (format!("127.0.0.1:{port}"), format!("[::1]:{port}"));
    let (knot, dir, _server, http) = forwarding_with_metrics(&["--coredns-metrics", "--listen", &v4, "--listen", &v6]);
    let (v4, v6): (std::net::SocketAddr, std::net::SocketAddr) = (v4.parse().unwrap(), v6.parse().unwrap());
    let upstream = knot.addr.to_string();
    wait_until(|| addresses(&ask(v4, &svc("svc-0"), RecordType::A)) == ["10.96.0.10"]);
    wait_until(|| addresses(&ask(v6, &svc("svc-0"), RecordType::A)) == ["10.96.0.10"]);
    let at = format!("server=\"dns://:{port}\",zone=\".\",view=\"\"");
    let cache = format!("server=\"dns://:{port}\"");
    let to = format!("to=\"{upstream}\"");
    let series = [
        format!("coredns_dns_requests_total{{{at},proto=\"udp\",family=\"1\",type=\"A\"}}"),
        format!("coredns_dns_requests_total{{{at},proto=\"udp\",family=\"2\",type=\"A\"}}"),
        format!("coredns_dns_requests_total{{{at},proto=\"udp\",family=\"2\",type=\"AAAA\"}}"),
        format!("coredns_dns_responses_total{{{at},rcode=\"NOERROR\",plugin=\"kubernetes\"}}"),
        format!("coredns_dns_responses_total{{{at},rcode=\"NXDOMAIN\",plugin=\"kubernetes\"}}"),
        format!("coredns_dns_responses_total{{{at},plugin=\"forward\",rcode=\"NOERROR\"}}"),
        format!("coredns_dns_responses_total{{{at},plugin=\"forward\",rcode=\"NXDOMAIN\"}}"),
        format!("coredns_dns_request_duration_seconds_count{{{at},type=\"A\"}}"),
        format!("coredns_dns_request_duration_seconds_count{{{at},type=\"AAAA\"}}"),
        format!("coredns_cache_requests_total{{{cache},zones=\".\",view=\"\"}}"),
        format!("coredns_cache_misses_total{{{cache},zones=\".\",view=\"\"}}"),
        format!("coredns_cache_hits_total{{{cache},type=\"success\",zones=\".\",view=\"\"}}"),
        format!("coredns_cache_hits_total{{{cache},type=\"denial\",zones=\".\",view=\"\"}}"),
        format!("coredns_cache_entries{{{cache},type=\"success\",zones=\".\",view=\"\"}}"),
        format!("coredns_cache_entries{{{cache},type=\"denial\",zones=\".\",view=\"\"}}"),
        format!("coredns_forward_requests_total{{{to}}}"),
        format!("coredns_forward_responses_total{{rcode=\"NOERROR\",{to}}}"),
        format!("coredns_forward_responses_total{{rcode=\"NXDOMAIN\",{to}}}"),
        format!("coredns_forward_request_duration_seconds_count{{{to},rcode=\"NOERROR\"}}"),
    ];
    let scrape = || series.iter().map(|s| metric(http, s)).collect::<Vec<f64>>();
    // The queries above are published once the workers idle (100 ms): let them.
    std::thread::sleep(Duration::from_millis(500));
    let before = scrape();

    // Over IPv4: 3 cluster answers, 1 cluster NXDOMAIN; a forwarded name missed then hit; a
    // forwarded NXDOMAIN missed.
    for _ in 0..3 {
        assert_eq!(addresses(&ask(v4, &svc("svc-0"), RecordType::A)), ["10.96.0.10"]);
    }
    assert_eq!(rcode(&ask(v4, &svc("nope"), RecordType::A)), ResponseCode::NXDomain);
    for _ in 0..2 {
        assert_eq!(addresses(&ask(v4, "other.example.test.", RecordType::A)), ["192.0.2.21"]);
    }
    assert_eq!(rcode(&ask(v4, "nope.example.test.", RecordType::A)), ResponseCode::NXDomain);
    // Over IPv6: a cluster NODATA (AAAA of an IPv4 Service), then both forwarded names hit.
    assert_eq!(rcode(&ask(v6, &svc("svc-0"), RecordType::AAAA)), ResponseCode::NoError);
    assert_eq!(addresses(&ask(v6, "other.example.test.", RecordType::A)), ["192.0.2.21"]);
    assert_eq!(rcode(&ask(v6, "nope.example.test.", RecordType::A)), ResponseCode::NXDomain);
    // (Workers publish their counts when idle.)
    let expected = [
        7.0, 2.0, 1.0, // requests: IPv4 A, IPv6 A, IPv6 AAAA
        4.0, 1.0, 3.0, 2.0, // responses: cluster NOERROR, NXDOMAIN; forwarded NOERROR, NXDOMAIN
        4.0, 1.0, // cluster answers timed, A and AAAA
        5.0, 2.0, 2.0, 1.0, // cache: lookups, misses, success hits, denial hits
        1.0, 1.0, // cache entries: success, denial
        2.0, 1.0, 1.0, 1.0, // upstream: requests, NOERROR, NXDOMAIN, NOERROR timed
    ];
    let moved = || scrape().iter().zip(&before).map(|(a, b)| a - b).collect::<Vec<f64>>();
    eventually("the counts of the queries", Duration::from_secs(5), || moved() == expected);
    let text = support::server::http_get(http, "/metrics").1;
    assert!(text.contains("# TYPE coredns_kubernetes_dns_programming_duration_seconds histogram"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1);
    // Both registries make one OpenMetrics exposition, as a scraper in OpenMetrics mode reads it.
    let families = support::openmetrics::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (name, kind) in [
        ("coredns_dns_requests", "counter"),
        ("headless_dns_requests", "counter"),
        ("coredns_cache_entries", "gauge"),
        ("coredns_forward_request_duration_seconds", "histogram"),
    ] {
        assert_eq!(families.get(name).map(|f| f.kind.as_str()), Some(kind), "{name}\n{text}");
    }
    // Only what was asked: no IPv6 series for a type asked over IPv4 alone, one `to` per upstream.
    assert!(!text.contains("family=\"2\",type=\"SRV\""), "{text}");
    assert!(!text.contains(&format!("to=\"{upstream},")), "{text}");

    // Off by default.
    let plain = start(dir.path(), &["--http", "127.0.0.1:0"]);
    assert!(!support::server::http_get(plain.http_addr(), "/metrics").1.contains("coredns_"));
}

/// `headless-dns from-corefile FILE`: (success, stdout, stderr).
fn from_corefile(file: &Path) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_headless-dns")).arg("from-corefile").arg(file).output();
    let out = out.unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn from_corefile_converts_the_common_corefiles_into_configs_that_serve() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corefile");
    let dir = tempfile::tempdir().unwrap();
    small_cluster(dir.path());
    std::fs::write(dir.path().join("NodeHosts"), "192.168.1.10 node-0\n").unwrap();
    let hosts = dir.path().join("NodeHosts").display().to_string();
    // (fixture, TTL of answers and of negative answers, what else the config must say)
    for (name, ttl, says) in [
        ("kubeadm", 30, &["loadbalance: round-robin", "cache-max-ttl: 30", "lameduck: 5s"][..]),
        ("helm", 30, &["coredns-metrics: true", "pods: insecure"]),
        ("k3s", 5, &["hosts: \"/etc/coredns/NodeHosts\"", "hosts-ttl: 60", "hosts-reload: 15s"]),
        (
            "openshift",
            5,
            &["forward-policy: sequential", "forward: [\"example.test=127.0.0.1:9\"]", "max-udp-size: 1232"],
        ),
    ] {
        let (ok, config, err) = from_corefile(&fixtures.join(format!("{name}.Corefile")));
        assert!(ok, "{name}: {err}");
        for line in says {
            assert!(config.lines().any(|l| l.starts_with(line)), "{name}: no {line:?} in\n{config}");
        }
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &config).unwrap();
        let file = file.display().to_string();
        // Started as produced, but on loopback, from files, without the machine's resolvers and
        // (k3s) with a NodeHosts of the test's.
        let server = serve(dir.path(), &["--config", &file, "--hosts", &hosts]);
        let resp = ask(server.addr, &svc("svc-0"), RecordType::A);
        assert_eq!(zone_lines(&resp.answers), [format!("svc-0.ns-0.svc.cluster.local. {ttl} IN A 10.96.0.10")]);
        let resp = ask(server.addr, &svc("nope"), RecordType::A);
        assert_eq!(resp.authorities.first().map(|r| r.ttl), Some(ttl), "{name}: negative TTL");
        if name == "k3s" {
            assert_eq!(
                zone_lines(&ask(server.addr, "node-0.", RecordType::A).answers),
                ["node-0. 60 IN A 192.168.1.10"]
            );
        }
    }
}

#[test]
fn from_corefile_refuses_what_it_cannot_honour_naming_the_line() {
    let kubeadm =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corefile/kubeadm.Corefile"))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Corefile");
    for (change, line, says) in [
        (
            ("    errors\n", "    errors\n    rewrite name foo.example bar.example\n"),
            3,
            "`rewrite name foo.example bar.example`",
        ),
        (
            ("    errors\n", "    errors\n    template IN A example.test {\n      answer x\n    }\n"),
            3,
            "`template IN A example.test`",
        ),
        (("       fallthrough in-addr.arpa ip6.arpa\n", "       fallthrough\n"), 9, "only reverse names fall through"),
        (("       max_concurrent 1000\n", "       force_tcp\n"), 14, "`force_tcp`"),
        (("    loop\n", "    log\n"), 20, "queries are not logged"),
    ] {
        assert!(kubeadm.contains(change.0));
        std::fs::write(&file, kubeadm.replacen(change.0, change.1, 1)).unwrap();
        let (ok, out, err) = from_corefile(&file);
        assert!(!ok && out.is_empty(), "{change:?} was accepted:\n{out}");
        assert!(err.contains(&format!("{}:{line}: ", file.display())) && err.contains(says), "{change:?}: {err}");
    }
}

#[test]
fn cache_max_ttl_caps_forwarded_ttls_as_coredns_cache_does() {
    if !require_tool("knotd") {
        return;
    }
    let knot = knot_with_short_ttl();
    let dir = tempfile::tempdir().unwrap();
    small_cluster(dir.path());
    let upstream = knot.addr.to_string();
    let capped =
        serve(dir.path(), &["--upstream", &upstream, "--cache-max-ttl", "30", "--cache-max-negative-ttl", "7"]);
    let plain = serve(dir.path(), &["--upstream", &upstream]);
    // Knot says 300 for the address and 60 for the negative answer's SOA.
    let ttls = |dns| {
        let positive = ask(dns, "other.example.test.", RecordType::A).answers.first().map(|r| r.ttl);
        let negative = ask(dns, "nope.example.test.", RecordType::A).authorities.first().map(|r| r.ttl);
        (positive, negative)
    };
    assert_eq!(ttls(plain.addr), (Some(300), Some(60)));
    assert_eq!(ttls(capped.addr), (Some(30), Some(7)));
}

#[test]
fn forward_policy_sequential_asks_the_first_upstream_first() {
    if !require_tool("knotd") {
        return;
    }
    // Two upstreams that answer every name under example.test, each with its own address.
    let first = Knot::authoritative(&[("example.test", "* IN A 192.0.2.1\n")]);
    let second = Knot::authoritative(&[("example.test", "* IN A 192.0.2.2\n")]);
    let dir = tempfile::tempdir().unwrap();
    small_cluster(dir.path());
    let (a, b) = (first.addr.to_string(), second.addr.to_string());
    let answers = |policy: &str| {
        let server = serve(dir.path(), &["--upstream", &a, "--upstream", &b, "--forward-policy", policy]);
        let mut seen: Vec<String> = (0..12)
            .flat_map(|i| addresses(&ask(server.addr, &format!("name-{i}.example.test."), RecordType::A)))
            .collect();
        seen.sort();
        seen.dedup();
        seen
    };
    assert_eq!(answers("sequential"), ["192.0.2.1"]);
    assert_eq!(answers("round-robin"), ["192.0.2.1", "192.0.2.2"]);
}
