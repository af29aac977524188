//! Forwarding names outside the served zones to a real upstream: Knot DNS serving a test zone on
//! loopback. Needs `knotd` (Debian: knot); skipped without it, except in CI.

mod support;

use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use support::dns::{TIMEOUT, addresses, ask, query_message, rcode, require_tool, tcp, udp_raw, zone_lines};
use support::knot::{BIG_RECORDS, Knot, free_port};
use support::openmetrics;
use support::server::{BinaryServer, http_get, wait_until};

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

/// The value of one series in a `/metrics` scrape (0 when absent).
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).filter(|rest| rest.starts_with(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Knot as the upstream of a server with `/metrics`; `None` (SKIPPED) without `knotd`.
fn scraped_server_with_knot_upstream() -> Option<(Knot, BinaryServer, std::net::SocketAddr)> {
    if !require_tool("knotd") {
        return None;
    }
    let knot = Knot::start();
    let server = BinaryServer::example(&["--upstream", &knot.addr.to_string(), "--http", "127.0.0.1:0"]);
    let http = server.http_addr();
    Some((knot, server, http))
}

#[test]
fn metrics_count_cache_misses_then_hits_and_upstream_answers() {
    let Some((_knot, server, http)) = scraped_server_with_knot_upstream() else { return };
    let scrape = || http_get(http, "/metrics").1;
    // The loop probe at start is the first lookup (a miss that Knot refuses); let it finish.
    wait_until(|| series(&scrape(), "headless_dns_forward_responses_total{rcode=\"REFUSED\"}") >= 1.0);
    let before = scrape();
    let (hits, misses) = ("headless_dns_cache_hits_total", "headless_dns_cache_misses_total");
    let requests = "headless_dns_forward_requests_total{proto=\"udp\"}";
    let noerror = "headless_dns_forward_responses_total{rcode=\"NOERROR\"}";

    assert_eq!(addresses(&ask(server.addr, "www.example.test.", RecordType::A)), ["192.0.2.10"]);
    let first = scrape();
    assert_eq!(series(&first, misses) - series(&before, misses), 1.0, "{first}");
    assert_eq!(series(&first, hits) - series(&before, hits), 0.0, "{first}");
    assert_eq!(series(&first, requests) - series(&before, requests), 1.0, "{first}");
    assert_eq!(series(&first, noerror) - series(&before, noerror), 1.0, "{first}");
    assert!(series(&first, "headless_dns_forward_request_duration_seconds_count") >= 2.0, "{first}");

    // The same name again: from the cache, nothing sent upstream.
    assert_eq!(addresses(&ask(server.addr, "www.example.test.", RecordType::A)), ["192.0.2.10"]);
    let second = scrape();
    assert_eq!(series(&second, hits) - series(&first, hits), 1.0, "{second}");
    assert_eq!(series(&second, misses), series(&first, misses), "{second}");
    assert_eq!(series(&second, requests), series(&first, requests), "{second}");
}

/// `/metrics` is one OpenMetrics exposition whichever mechanism counts: the registry's own
/// metrics, the DNS workers' collector and hickory-resolver's cache counters (bridged from the
/// `metrics` facade) are each a declared family, each once, and a single `# EOF` ends it.
#[test]
fn metrics_are_one_valid_openmetrics_exposition() {
    let Some((_knot, server, http)) = scraped_server_with_knot_upstream() else { return };
    wait_until(|| http_get(http, "/readyz").0 == 200);
    for _ in 0..2 {
        assert_eq!(addresses(&ask(server.addr, "www.example.test.", RecordType::A)), ["192.0.2.10"]);
    }
    assert_eq!(addresses(&ask(server.addr, "web-0.nginx.default.svc.cluster.local.", RecordType::A)).len(), 1);
    let mut text = String::new();
    wait_until(|| {
        text = http_get(http, "/metrics").1;
        series(&text, "headless_dns_request_duration_seconds_count") >= 1.0
            && series(&text, "headless_dns_cache_hits_total") >= 1.0
    });
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    let families = openmetrics::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (name, kind) in [
        ("headless_dns_requests", "counter"),
        ("headless_dns_request_duration_seconds", "histogram"),
        ("headless_dns_cache_hits", "counter"),
        ("headless_dns_cache_misses", "counter"),
        ("headless_dns_forward_request_duration_seconds", "histogram"),
        ("headless_dns_event_to_answer_seconds", "histogram"),
        ("headless_dns_index_names", "gauge"),
        ("headless_dns_ready", "gauge"),
    ] {
        assert_eq!(families.get(name).map(|f| f.kind.as_str()), Some(kind), "{name}\n{text}");
    }
    let value = |family: &str, sample: &str| {
        families[family].samples.iter().find(|(name, ..)| name == sample).map(|(.., value)| *value)
    };
    assert_eq!(value("headless_dns_ready", "headless_dns_ready"), Some(1.0));
    assert!(value("headless_dns_cache_misses", "headless_dns_cache_misses_total") >= Some(2.0), "{text}");
    assert!(families.keys().all(|name| name.starts_with("headless_dns_")), "{:?}", families.keys());
    // What the checker refuses: text spliced after `# EOF`, or a family written twice.
    assert!(openmetrics::parse(&format!("{text}# EOF\n")).is_err());
    let again = "# TYPE headless_dns_requests counter\nheadless_dns_requests_total 1\n# EOF\n";
    assert!(openmetrics::parse(&text.replace("# EOF\n", again)).is_err());
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

/// A forwarded answer is finished as our own answers are: over UDP the client's EDNS size up to
/// `--max-udp-size` (it was clamped to 1232), an OPT advertising `--max-udp-size` (it said 1232),
/// and when it does not fit, TC with the whole records that fit (it was emptied: musl before
/// 1.2.4 has no TCP fallback and uses what a truncated answer holds).
#[test]
fn forwarded_answers_are_sized_and_truncated_as_our_own() {
    if !require_tool("knotd") {
        return;
    }
    let knot = Knot::start();
    let server = BinaryServer::example(&["--upstream", &knot.addr.to_string(), "--max-udp-size", "4096"]);
    let name = "big.example.test.";
    let ask_udp = |edns: Option<u16>| {
        let raw = udp_raw(server.addr, &query_message(name, RecordType::A, edns).to_vec().unwrap(), TIMEOUT);
        let raw = raw.expect("an answer");
        (raw.len(), Message::from_vec(&raw).unwrap())
    };

    // EDNS 4096 under --max-udp-size 4096: all 100 records (about 1.6 kB) in one datagram.
    let (len, resp) = ask_udp(Some(4096));
    assert!(len > 1232 && !resp.metadata.truncation, "{len} bytes, TC {}", resp.metadata.truncation);
    assert_eq!(resp.answers.len(), BIG_RECORDS);
    assert_eq!(resp.edns.as_ref().map(|e| e.max_payload()), Some(4096), "the OPT advertises --max-udp-size");

    // EDNS 1232 and no EDNS: cut to the limit, TC, and the whole records that fit.
    for (edns, limit) in [(Some(1232), 1232), (None, 512)] {
        let (len, resp) = ask_udp(edns);
        assert!(len <= limit, "{len} > {limit}");
        assert!(resp.metadata.truncation);
        assert!(!resp.answers.is_empty() && resp.answers.len() < BIG_RECORDS, "{} records", resp.answers.len());
        assert!(resp.answers.iter().all(|r| r.record_type() == RecordType::A));
        assert!(resp.metadata.recursion_available && !resp.metadata.authoritative);
    }

    // TCP: all of it.
    let resp = tcp(server.addr, &query_message(name, RecordType::A, None));
    assert!(!resp.metadata.truncation);
    assert_eq!(resp.answers.len(), BIG_RECORDS);
}
