//! The binary's command line: help for every flag, clear errors, and the README's run command.

mod support;

use std::process::Command;

use hickory_proto::rr::RecordType;
use support::dns::{addresses, ask};
use support::server::{BinaryServer, example_manifest};

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_headless-dns")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn help_explains_every_flag() {
    let (ok, help, _) = run(&["serve", "--help"]);
    assert!(ok);
    for flag in [
        "--source",
        "--config",
        "--kubeconfig",
        "--namespace",
        "--label-selector",
        "--namespace-labels",
        "--http",
        "--listen",
        "--zone",
        "--multicluster-zone",
        "--ttl ",
        "--ttl-headless",
        "--ttl-clusterip",
        "--negative-ttl",
        "--pods",
        "--ptr",
        "--endpoint-pod-names",
        "--no-endpoints",
        "--ignore-empty-service",
        "--udp-workers",
        "--max-udp-size",
        "--tcp-max-connections",
        "--tcp-idle-timeout",
        "--file-poll-interval",
        "--file-settle",
        "--lameduck",
        "--nsid",
        "--autopath",
        "--loadbalance",
        "--max-answers",
        "--transfer-to",
        "--notify",
        "--notify-delay",
        "--notify-secondaries",
        "--allow-notify",
        "--ixfr-journal-size",
        "--upstream",
        "--forward",
        "--no-reverse-fallthrough",
        "--hosts",
        "--hosts-ttl",
        "--hosts-reload",
        "--serve-stale",
        "--prefetch",
        "--prefetch-duration",
        "--prefetch-percentage",
        "--coredns-metrics",
        "--forward-policy",
        "--cache-max-ttl",
        "--cache-max-negative-ttl",
        "--log-format",
        "--log-level",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
    assert!(help.contains("[default: cluster.local]") && help.contains("[default: 5]"), "{help}");
}

#[test]
fn bad_flags_are_clear_errors() {
    let (ok, _, err) = run(&["serve", "--source", "bogus"]);
    assert!(!ok);
    assert!(err.contains("--source \"bogus\": expected file:PATH, kube, or primary:IP[:PORT]"), "{err}");
    let (ok, _, err) = run(&["serve", "--source", "primary:10.0.0.1", "--source", "kube"]);
    assert!(!ok);
    assert!(err.contains("--source is given 2 times: only primary:IP[:PORT] is repeatable"), "{err}");
    let (ok, _, err) = run(&["serve", "--source", "kube", "--allow-notify", "10.0.0.0/8"]);
    assert!(!ok);
    assert!(err.contains("--allow-notify only applies to --source primary:"), "{err}");
    let (ok, _, err) = run(&["serve", "--source", "primary:10.0.0.1", "--no-endpoints"]);
    assert!(!ok);
    assert!(err.contains("--no-endpoints has no effect on a secondary"), "{err}");
    let (ok, _, err) = run(&["serve", "--source", "primary:not-an-address"]);
    assert!(!ok);
    assert!(err.contains("--source \"primary:not-an-address\""), "{err}");
    let (ok, _, err) = run(&["serve", "--source", "file:/nonexistent/cluster.yaml", "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/cluster.yaml"), "{err}");
    let (ok, _, err) = run(&["serve", "--source", "file:x", "--zone", "bad..zone"]);
    assert!(!ok);
    assert!(err.contains("--zone \"bad..zone\""), "{err}");
    let (ok, _, err) = run(&["serve", "--source", "file:x", "--multicluster-zone", "Cluster.Local."]);
    assert!(!ok);
    assert!(err.contains("--multicluster-zone \"Cluster.Local.\": it is also a --zone"), "{err}");
    let (ok, _, err) = run(&["serve", "--source", "kube", "--autopath"]);
    assert!(!ok);
    assert!(err.contains("--autopath needs --pods verified"), "{err}");
    let (ok, _, err) = run(&["serve", "--source", "file:x", "--ttl", "99999"]);
    assert!(!ok);
    assert!(err.contains("--ttl 99999"), "{err}");
    for bad in ["not-an-address", "127.0.0.1:99999", "ns1.example.org:53", "[::1]:x"] {
        let (ok, _, err) = run(&["serve", "--source", "file:x", "--notify", "127.0.0.2", "--notify", bad]);
        assert!(!ok);
        assert!(err.contains(&format!("--notify {bad:?}: expected IP or IP:PORT")), "{err}");
    }
    // The same from a configuration file.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("headless-dns.yaml");
    std::fs::write(&config, "source: file:x\nnotify: [\"[::1]:5300\", not-an-address]\n").unwrap();
    let (ok, _, err) = run(&["serve", "--config", &config.display().to_string()]);
    assert!(!ok);
    assert!(err.contains("--notify \"not-an-address\""), "{err}");
}

#[test]
fn serves_the_shipped_example() {
    let server = BinaryServer::example(&["--log-format", "json", "--http", "127.0.0.1:0"]);
    assert!(server.wait_for_log("serving", std::time::Duration::from_secs(10)).is_some());
    assert_eq!(addresses(&ask(server.addr, "web-0.nginx.default.svc.cluster.local.", RecordType::A)), ["10.244.1.5"]);
    assert_eq!(addresses(&ask(server.addr, "web-1.nginx.default.svc.cluster.local.", RecordType::A)), ["10.244.2.7"]);
}

#[test]
fn sigterm_drains_without_failing_a_query() {
    let mut server = BinaryServer::example(&["--http", "127.0.0.1:0", "--lameduck", "1s"]);
    let http = server.http_addr();
    let dns = server.addr;
    support::server::wait_until(|| support::server::http_get(http, "/readyz").0 == 200);

    // Load: one client asking as fast as it can until the process is gone.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let load = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, 0);
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let packet = support::dns::query_message("web-0.nginx.default.svc.cluster.local.", RecordType::A, None);
            match support::dns::udp_raw(dns, &packet.to_vec().unwrap(), std::time::Duration::from_millis(500)) {
                Some(_) => ok += 1,
                None => failed += 1,
            }
        }
        (ok, failed)
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    let pid = server.child.id().to_string();
    let sent = std::time::Instant::now();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    // During the lame duck: not ready, still answering.
    support::server::wait_until(|| support::server::http_get(http, "/readyz").0 == 503);
    assert_eq!(addresses(&ask(dns, "web-1.nginx.default.svc.cluster.local.", RecordType::A)), ["10.244.2.7"]);
    assert_eq!(support::server::http_get(http, "/healthz").0, 200);
    let (_, metrics) = support::server::http_get(http, "/metrics");
    assert!(metrics.lines().any(|l| l == "headless_dns_ready 0"), "the gauge says what /readyz says:\n{metrics}");
    // Stop the load just before the lame duck ends; every query until then was answered.
    std::thread::sleep(std::time::Duration::from_millis(700).saturating_sub(sent.elapsed()));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    assert!(ok > 10, "{ok}");
    assert_eq!(failed, 0, "queries failed during the lame duck");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(sent.elapsed() >= std::time::Duration::from_secs(1), "exited before the lame duck ended");
    assert!(sent.elapsed() < std::time::Duration::from_secs(5), "{:?}", sent.elapsed());
}

#[test]
fn metrics_count_queries_by_type_and_rcode() {
    let server = BinaryServer::example(&["--http", "127.0.0.1:0"]);
    let http = server.http_addr();
    support::server::wait_until(|| support::server::http_get(http, "/readyz").0 == 200);
    for _ in 0..5 {
        ask(server.addr, "web-0.nginx.default.svc.cluster.local.", RecordType::A);
    }
    for _ in 0..3 {
        ask(server.addr, "nope.default.svc.cluster.local.", RecordType::AAAA);
    }
    support::dns::tcp(
        server.addr,
        &support::dns::query_message("_web._tcp.nginx.default.svc.cluster.local.", RecordType::SRV, None),
    );
    // Workers publish their counts when idle, each on its own (the TCP path after the UDP
    // workers, under load): scrape until every count shows.
    let value = |text: &str, series: &str| -> u64 {
        text.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    let want = [
        ("headless_dns_requests_total{proto=\"udp\",type=\"A\"}", 5),
        ("headless_dns_requests_total{proto=\"udp\",type=\"AAAA\"}", 3),
        ("headless_dns_requests_total{proto=\"tcp\",type=\"SRV\"}", 1),
        ("headless_dns_responses_total{rcode=\"NXDOMAIN\"}", 3),
        ("headless_dns_request_duration_seconds_count", 9),
        ("headless_dns_response_size_bytes_count", 9),
    ];
    let mut text = String::new();
    support::server::wait_until(|| {
        text = support::server::http_get(http, "/metrics").1;
        want.iter().all(|(series, at_least)| value(&text, series) >= *at_least)
    });
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
    assert!(text.contains("headless_dns_index_names "), "{text}");
}

#[test]
fn a_config_file_is_equivalent_to_flags_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("headless-dns.yaml");
    std::fs::write(
        &yaml,
        format!(
            "source: file:{}\nzone: [cluster.local, cluster.example]\nttl: 9\nttl-headless: 7\nhttp: none\nupstream: none\n",
            example_manifest().display()
        ),
    )
    .unwrap();
    let config = yaml.display().to_string();
    let server = BinaryServer::start(&["serve", "--config", &config, "--listen", "127.0.0.1:0", "--ttl-headless", "3"]);
    support::server::wait_until(|| {
        !addresses(&ask(server.addr, "web-0.nginx.default.svc.cluster.example.", RecordType::A)).is_empty()
    });
    let resp = ask(server.addr, "web-0.nginx.default.svc.cluster.example.", RecordType::A);
    assert_eq!(resp.answers[0].ttl, 3, "the command line overrides the file");
    let resp = ask(server.addr, "db.default.svc.cluster.local.", RecordType::CNAME);
    assert_eq!(resp.answers[0].ttl, 9, "the file's --ttl applies");

    // TOML works too.
    let toml = dir.path().join("headless-dns.toml");
    std::fs::write(
        &toml,
        format!(
            "source = \"file:{}\"\nttl = 4\nhttp = \"none\"\nupstream = [\"none\"]\n",
            example_manifest().display()
        ),
    )
    .unwrap();
    let config = toml.display().to_string();
    let server = BinaryServer::start(&["serve", "--config", &config, "--listen", "127.0.0.1:0"]);
    support::server::wait_until(|| {
        !ask(server.addr, "db.default.svc.cluster.local.", RecordType::CNAME).answers.is_empty()
    });
    assert_eq!(ask(server.addr, "db.default.svc.cluster.local.", RecordType::CNAME).answers[0].ttl, 4);

    // Unknown keys and bad values are clear errors naming the file.
    std::fs::write(&yaml, "source: kube\nttll: 5\n").unwrap();
    let (ok, _, err) = run(&["serve", "--config", &yaml.display().to_string()]);
    assert!(!ok);
    assert!(err.contains("headless-dns.yaml") && err.contains("unknown option \"ttll\""), "{err}");
    std::fs::write(&yaml, "source: kube\nttl: [1, 2]\n").unwrap();
    let (ok, _, err) = run(&["serve", "--config", &yaml.display().to_string()]);
    assert!(!ok);
    assert!(err.contains("ttl: takes one value"), "{err}");
}
