//! The README's examples, asked with the real `dig` of the real binary on the shipped example.
//! Needs `dig` (Debian: bind9-dnsutils); skipped without it, except in CI.

mod support;

use std::process::Command;

use support::dns::require_tool;
use support::server::{BinaryServer, TestServer};

fn dig(addr: std::net::SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+time=2", "+tries=2"])
        .args(args)
        .output()
        .expect("dig runs");
    assert!(out.status.success(), "dig {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The example server once it serves (the "listening" line comes before the first state).
fn example_server() -> BinaryServer {
    let server = BinaryServer::example(&["--http", "127.0.0.1:0"]);
    let http = server.http_addr();
    support::server::wait_until(|| support::server::http_get(http, "/readyz").0 == 200);
    server
}

#[test]
fn readme_examples() {
    if !require_tool("dig") {
        return;
    }
    let server = example_server();
    let a = server.addr;
    assert_eq!(dig(a, &["+short", "web-0.nginx.default.svc.cluster.local"]), "10.244.1.5\n");
    assert_eq!(
        dig(a, &["+short", "_web._tcp.nginx.default.svc.cluster.local", "SRV"]),
        "0 50 80 web-0.nginx.default.svc.cluster.local.\n0 50 80 web-1.nginx.default.svc.cluster.local.\n"
    );
    assert_eq!(dig(a, &["+short", "-x", "10.244.1.5"]), "web-0.nginx.default.svc.cluster.local.\n");
    assert_eq!(dig(a, &["+short", "nginx.default.svc.cluster.local"]), "10.244.1.5\n10.244.2.7\n");
    assert_eq!(dig(a, &["+short", "api.default.svc.cluster.local"]), "10.96.0.20\n");
    assert_eq!(dig(a, &["+short", "db.default.svc.cluster.local"]), "db.example.com.\n");
    assert_eq!(dig(a, &["+short", "dns-version.cluster.local", "TXT"]), "\"1.1.0\"\n");
    assert_eq!(dig(a, &["+short", "+tcp", "web-1.nginx.default.svc.cluster.local"]), "10.244.2.7\n");

    // Full output: the header says authoritative, the SRV glue is there.
    let full = dig(a, &["_web._tcp.nginx.default.svc.cluster.local", "SRV"]);
    assert!(full.contains("flags: qr aa rd;"), "{full}");
    assert!(full.contains("ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 3"), "{full}");
    assert!(full.contains("web-0.nginx.default.svc.cluster.local. 5 IN A\t10.244.1.5"), "{full}");

    // NODATA and NXDOMAIN carry the SOA.
    let nodata = dig(a, &["web-0.nginx.default.svc.cluster.local", "AAAA"]);
    assert!(nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0, AUTHORITY: 1"), "{nodata}");
    assert!(nodata.contains("IN\tSOA\tns.dns.cluster.local. hostmaster.cluster.local."), "{nodata}");
    let nx = dig(a, &["web-9.nginx.default.svc.cluster.local"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    let refused = dig(a, &["example.com"]);
    assert!(refused.contains("status: REFUSED"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dig_retries_a_truncated_answer_over_tcp() {
    if !require_tool("dig") {
        return;
    }
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: ns-0}\nspec: {clusterIP: None}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: big-1, namespace: ns-0, labels: {kubernetes.io/service-name: big}}\n\
         addressType: IPv4\nendpoints:\n",
    );
    for i in 0..300 {
        yaml.push_str(&format!("- {{addresses: [10.1.{}.{}]}}\n", i / 250, i % 250 + 1));
    }
    let server = TestServer::start(&yaml).await;
    let addr = server.addr;
    let (full, truncated) = tokio::task::spawn_blocking(move || {
        (
            dig(addr, &["+short", "big.ns-0.svc.cluster.local"]),
            dig(addr, &["+ignore", "+bufsize=1232", "big.ns-0.svc.cluster.local"]),
        )
    })
    .await
    .unwrap();
    assert_eq!(full.lines().count(), 300, "dig fell back to TCP and got every address");
    assert!(truncated.contains("flags: qr aa tc rd;"), "{truncated}");
    server.stop().await;
}

#[test]
fn dig_nsid_tells_which_replica_answered() {
    if !require_tool("dig") {
        return;
    }
    let server = BinaryServer::example(&["--nsid", "replica-a"]);
    let out = dig(server.addr, &["+nsid", "web-0.nginx.default.svc.cluster.local"]);
    assert!(out.contains("; NSID: 72 65 70 6c 69 63 61 2d 61 (\"replica-a\")"), "{out}");
    assert!(out.contains("web-0.nginx.default.svc.cluster.local. 5 IN A\t10.244.1.5"), "{out}");
    // Without +nsid, no NSID.
    let out = dig(server.addr, &["web-0.nginx.default.svc.cluster.local"]);
    assert!(!out.contains("NSID"), "{out}");
}

#[test]
fn dig_chaos_txt_names_the_version_and_the_replica() {
    if !require_tool("dig") {
        return;
    }
    let server = BinaryServer::example(&["--nsid", "replica-a"]);
    let version = format!("\"headless-dns {}\"\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(dig(server.addr, &["+short", "CH", "TXT", "version.bind"]), version);
    assert_eq!(dig(server.addr, &["+short", "CH", "TXT", "VERSION.server"]), version);
    assert_eq!(dig(server.addr, &["+short", "CH", "TXT", "hostname.bind"]), "\"replica-a\"\n");
    assert_eq!(dig(server.addr, &["+short", "+tcp", "CH", "TXT", "id.server"]), "\"replica-a\"\n");
    let full = dig(server.addr, &["CH", "TXT", "version.bind"]);
    assert!(full.contains("status: NOERROR") && full.contains("flags: qr rd;"), "{full}");
    assert!(full.contains(&format!("version.bind.\t\t0\tCH\tTXT\t{}", version.trim_end())), "{full}");
    // Other CHAOS questions, and an empty --nsid, are refused.
    assert!(dig(server.addr, &["CH", "TXT", "authors.bind"]).contains("status: REFUSED"));
    assert!(dig(server.addr, &["CH", "A", "version.bind"]).contains("status: REFUSED"));
    let anonymous = BinaryServer::example(&["--nsid", ""]);
    assert!(dig(anonymous.addr, &["CH", "TXT", "hostname.bind"]).contains("status: REFUSED"));
    assert_eq!(dig(anonymous.addr, &["+short", "CH", "TXT", "version.bind"]), version);
}
