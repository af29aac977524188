//! `serve --source kube`: the real binary, talking to a fake API server over HTTP with the
//! unmodified kube-rs client, asked over real DNS sockets.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::dns::{addresses, ask, rcode};
use support::fake_api::FakeApiServer;
use support::objects::*;
use support::server::{BinaryServer, eventually, http_get};
use support::watchdog::Watchdog;

const NS: &str = "ns-0";
const WEB: &[(&str, u16, &str)] = &[("web", 80, "TCP")];

struct Harness {
    api: FakeApiServer,
    server: BinaryServer,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Starts the fake API with `objects`, then the binary against it.
    fn start(objects: Vec<serde_json::Value>, extra: &[&str]) -> Harness {
        let api = FakeApiServer::start();
        api.apply_many(objects);
        Self::start_with(api, extra)
    }

    fn start_with(api: FakeApiServer, extra: &[&str]) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).unwrap();
        let server = BinaryServer::kube(&kubeconfig, extra);
        Harness { api, server, _dir: dir }
    }

    fn dns(&self) -> SocketAddr {
        self.server.addr
    }

    fn a(&self, name: &str) -> (ResponseCode, Vec<String>) {
        let resp = ask(self.dns(), name, RecordType::A);
        (rcode(&resp), addresses(&resp))
    }

    fn wait_ready(&self) {
        eventually("ready", Duration::from_secs(15), || {
            rcode(&ask(self.dns(), "dns-version.cluster.local.", RecordType::TXT)) == ResponseCode::NoError
        });
    }

    /// Waits until `name` answers exactly `want` (NXDOMAIN when empty).
    fn expect(&self, name: &str, want: &[&str]) {
        let want_rcode = if want.is_empty() { ResponseCode::NXDomain } else { ResponseCode::NoError };
        eventually(&format!("{name} → {want:?}"), Duration::from_secs(10), || {
            let (rc, mut got) = self.a(name);
            got.sort();
            rc == want_rcode && got == want
        });
    }
}

fn web(i: usize) -> String {
    format!("web-{i}.nginx.{NS}.svc.cluster.local.")
}

/// The StatefulSet's slice with web-0 at 10.0.0.1 and web-1 at `web1`.
fn web_0_and_1(web1: &str) -> serde_json::Value {
    mk_slice(
        NS,
        "nginx-abc",
        "nginx",
        "IPv4",
        WEB,
        &[Ep::new("10.0.0.1").hostname("web-0"), Ep::new(web1).hostname("web-1")],
    )
}

fn statefulset(pods: &[Ep]) -> Vec<serde_json::Value> {
    vec![mk_namespace(NS), mk_headless_service(NS, "nginx", WEB), mk_slice(NS, "nginx-abc", "nginx", "IPv4", WEB, pods)]
}

#[test]
fn not_ready_until_the_first_list_then_serving() {
    let api = FakeApiServer::start();
    api.apply_many(statefulset(&[Ep::new("10.0.0.1").hostname("web-0")]));
    api.set_stalled(true);
    let h = Harness::start_with(api, &[]);
    let http = h.server.http_addr();
    assert_eq!(http_get(http, "/healthz").0, 200);
    assert_eq!(http_get(http, "/readyz").0, 503);
    // Before the first list: SERVFAIL for our zones (never an NXDOMAIN that could be cached),
    // REFUSED elsewhere.
    assert_eq!(h.a(&web(0)).0, ResponseCode::ServFail);
    assert_eq!(h.a("example.com.").0, ResponseCode::Refused);
    h.api.set_stalled(false);
    h.expect(&web(0), &["10.0.0.1"]);
    eventually("/readyz 200", Duration::from_secs(5), || http_get(http, "/readyz").0 == 200);
    let (_, metrics) = http_get(http, "/metrics");
    assert!(metrics.contains("headless_dns_ready 1"), "{metrics}");
    assert!(metrics.contains("headless_dns_kubernetes_relists_total{kind=\"Service\"} 1"), "{metrics}");
}

#[test]
fn statefulset_pod_recreation_step_by_step() {
    let web0 = Ep::new("10.0.0.1").hostname("web-0").target_pod("web-0");
    let web1 = |ip: &str| Ep::new(ip).hostname("web-1").target_pod("web-1");
    let h = Harness::start(statefulset(&[web0.clone(), web1("10.0.0.2")]), &[]);
    h.wait_ready();
    h.expect(&web(1), &["10.0.0.2"]);
    let dog = Watchdog::start(h.dns(), vec![web(0)]);
    let slice = |eps: &[Ep]| mk_slice(NS, "nginx-abc", "nginx", "IPv4", WEB, eps);

    // Deleted: terminating (not ready, still serving).
    h.api.apply(slice(&[web0.clone(), web1("10.0.0.2").terminating_serving()]));
    h.expect(&web(1), &[]);
    h.expect(&format!("nginx.{NS}.svc.cluster.local."), &["10.0.0.1"]);
    // Gone from the slice.
    h.api.apply(slice(std::slice::from_ref(&web0)));
    h.expect(&web(1), &[]);
    // Recreated with a new IP, not ready yet.
    h.api.apply(slice(&[web0.clone(), web1("10.0.0.9").not_ready()]));
    h.expect(&web(1), &[]);
    // Ready.
    h.api.apply(slice(&[web0.clone(), web1("10.0.0.9")]));
    h.expect(&web(1), &["10.0.0.9"]);
    h.expect(&format!("nginx.{NS}.svc.cluster.local."), &["10.0.0.1", "10.0.0.9"]);
    let ptr = ask(h.dns(), "9.0.0.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(ptr.answers.len(), 1, "PTR follows the new address");
    assert!(dog.finish() > 0, "the watchdog asked");
}

#[test]
fn scale_up_down_and_services_and_namespaces_come_and_go() {
    let h = Harness::start(statefulset(&[Ep::new("10.0.0.1").hostname("web-0")]), &[]);
    h.wait_ready();
    let pods: Vec<Ep> = (0..5).map(|i| Ep::new(&format!("10.0.0.{}", i + 1)).hostname(&format!("web-{i}"))).collect();
    h.api.apply(mk_slice(NS, "nginx-abc", "nginx", "IPv4", WEB, &pods));
    h.expect(&web(4), &["10.0.0.5"]);
    h.api.apply(mk_slice(NS, "nginx-abc", "nginx", "IPv4", WEB, &pods[..2]));
    h.expect(&web(4), &[]);
    h.expect(&web(1), &["10.0.0.2"]);

    // Service deleted and recreated (as ClusterIP).
    h.api.delete("Service", Some(NS), "nginx");
    h.expect(&format!("nginx.{NS}.svc.cluster.local."), &[]);
    h.expect(&web(0), &[]);
    h.api.apply(mk_service(NS, "nginx", "10.96.0.7", WEB));
    h.expect(&format!("nginx.{NS}.svc.cluster.local."), &["10.96.0.7"]);
    h.expect(&web(0), &["10.0.0.1"]);

    // Namespace deleted with its objects.
    assert_eq!(rcode(&ask(h.dns(), &format!("{NS}.svc.cluster.local."), RecordType::A)), ResponseCode::NoError);
    h.api.delete("EndpointSlice", Some(NS), "nginx-abc");
    h.api.delete("Service", Some(NS), "nginx");
    h.api.delete("Namespace", None, NS);
    eventually("namespace gone", Duration::from_secs(10), || {
        rcode(&ask(h.dns(), &format!("{NS}.svc.cluster.local."), RecordType::A)) == ResponseCode::NXDomain
    });
}

#[test]
fn dual_stack_and_split_slices_never_lose_an_address() {
    let h = Harness::start(
        vec![
            mk_namespace(NS),
            mk_headless_service(NS, "nginx", WEB),
            mk_slice(NS, "nginx-v4", "nginx", "IPv4", WEB, &[Ep::new("10.0.0.1").hostname("web-0")]),
            mk_slice(NS, "nginx-v6", "nginx", "IPv6", WEB, &[Ep::new("fd00::1").hostname("web-0")]),
        ],
        &[],
    );
    h.wait_ready();
    let aaaa = ask(h.dns(), &web(0), RecordType::AAAA);
    assert_eq!(addresses(&aaaa), ["fd00::1"]);
    h.expect(&web(0), &["10.0.0.1"]);

    // An endpoint moves from one IPv4 slice to another: added to the new one first, as the
    // controller does; the address is in either slice at every moment.
    let dog = Watchdog::start(h.dns(), vec![web(0)]);
    h.api.apply(mk_slice(NS, "nginx-v4-b", "nginx", "IPv4", WEB, &[Ep::new("10.0.0.1").hostname("web-0")]));
    h.api.apply(mk_slice(NS, "nginx-v4", "nginx", "IPv4", WEB, &[]));
    h.api.delete("EndpointSlice", Some(NS), "nginx-v4");
    std::thread::sleep(Duration::from_millis(300));
    dog.finish();
    h.expect(&web(0), &["10.0.0.1"]);
}

#[test]
fn dropped_watches_and_410_relists_never_flap_and_apply_what_was_missed() {
    let mut objects = statefulset(&[Ep::new("10.0.0.1").hostname("web-0"), Ep::new("10.0.0.2").hostname("web-1")]);
    objects.push(mk_service(NS, "api", "10.96.0.5", &[("http", 80, "TCP")]));
    let h = Harness::start(objects, &[]);
    h.wait_ready();
    let dog = Watchdog::start(h.dns(), vec![web(0), format!("api.{NS}.svc.cluster.local.")]);
    let lists_before = h.api.list_requests("EndpointSlice");

    // The connection drops; a change made meanwhile is replayed on resume.
    h.api.drop_watches();
    h.api.apply(mk_slice(
        NS,
        "nginx-abc",
        "nginx",
        "IPv4",
        WEB,
        &[Ep::new("10.0.0.1").hostname("web-0"), Ep::new("10.0.0.3").hostname("web-1")],
    ));
    h.expect(&web(1), &["10.0.0.3"]);

    // History expires (410 Gone): the watcher relists, and the relist is applied as a difference.
    h.api.apply(mk_service(NS, "extra", "10.96.0.6", &[]));
    h.api.expire_watches();
    h.expect(&format!("extra.{NS}.svc.cluster.local."), &["10.96.0.6"]);
    h.api.delete("Service", Some(NS), "extra");
    h.api.expire_watches();
    h.expect(&format!("extra.{NS}.svc.cluster.local."), &[]);
    eventually("a relist", Duration::from_secs(10), || h.api.list_requests("EndpointSlice") > lists_before);
    assert!(dog.finish() > 0, "the watchdog asked");
}

/// The watchers of the default flags, as the outage warning names them.
const WATCHES: &str = "EndpointSlice, Namespace, Service";

#[test]
fn an_api_outage_keeps_the_last_records_serving_and_is_logged_once() {
    let h = Harness::start(statefulset(&[Ep::new("10.0.0.1").hostname("web-0")]), &[]);
    h.wait_ready();
    h.server.drain_logs();
    h.api.set_down(true);
    let dog = Watchdog::start(h.dns(), vec![web(0)]);
    let warning = h.server.wait_for_log("watches failing", Duration::from_secs(10)).expect("an outage warning");
    assert!(warning.contains("WARN") && warning.contains(WATCHES), "names every failing watch: {warning}");
    // Many retries happen during the outage (one at least every half second per watch).
    std::thread::sleep(Duration::from_secs(3));
    let outage = h.server.drain_logs();
    assert_eq!(outage.iter().filter(|l| l.contains("watches failing")).count(), 0, "one warning per outage");
    // kube's client logs every failed request itself; that goes to debug.
    let noise: Vec<_> = outage.iter().filter(|l| l.contains("kube_client")).collect();
    assert!(noise.is_empty(), "the client library's per-retry lines at the default level: {noise:?}");

    // The API server comes back with its history: each watch resumes where it was, and says so
    // at once, although nothing changed (the Namespace watch has no event to deliver).
    h.api.set_down(false);
    for _ in 0..3 {
        let line =
            h.server.wait_for_log("watch recovered", Duration::from_secs(5)).expect("a recovered line per watch");
        assert!(line.contains("INFO"), "{line}");
    }
    h.api.apply(web_0_and_1("10.0.0.2"));
    h.expect(&web(1), &["10.0.0.2"]);
    dog.finish();

    // A second outage is a new one: warned about once more.
    h.api.set_down(true);
    assert!(h.server.wait_for_log("watches failing", Duration::from_secs(10)).is_some());
    h.api.set_down(false);
    assert!(h.server.wait_for_log("watch recovered", Duration::from_secs(5)).is_some());
}

/// Polls until `name` answers exactly `want`; how long that took.
fn served_after(h: &Harness, name: &str, want: &[&str]) -> Duration {
    let started = Instant::now();
    h.expect(name, want);
    started.elapsed()
}

#[test]
fn after_a_long_outage_and_a_restart_a_change_is_served_at_once() {
    let h = Harness::start(statefulset(&[Ep::new("10.0.0.1").hostname("web-0")]), &[]);
    h.wait_ready();
    let dog = Watchdog::start(h.dns(), vec![web(0)]);
    // Long enough for kube's default backoff to grow past 6 s between attempts.
    h.api.set_down(true);
    std::thread::sleep(Duration::from_secs(8));
    // What a restarted API server looks like: the resumed watches' versions are gone (410).
    h.api.apply(web_0_and_1("10.0.0.2"));
    h.api.expire_watches();
    h.api.set_down(false);
    let took = served_after(&h, &web(1), &["10.0.0.2"]);
    // The promise is a second: at most 500 ms to the next attempt, then the relist. Generous
    // here for a loaded machine; the old backoff took 4-14 s.
    assert!(took < Duration::from_secs(2), "served {took:?} after the API server came back");
    dog.finish();
}

#[test]
fn a_410_gone_relists_without_waiting() {
    let h = Harness::start(statefulset(&[Ep::new("10.0.0.1").hostname("web-0")]), &[]);
    h.wait_ready();
    let started = Instant::now();
    for round in 2..7 {
        // Each resume is answered 410 Gone; the relist brings what changed meanwhile.
        let lists = h.api.list_requests("EndpointSlice");
        h.api.expire_watches();
        let ip = format!("10.0.0.{round}");
        h.api.apply(mk_slice(NS, "nginx-abc", "nginx", "IPv4", WEB, &[Ep::new(&ip).hostname("web-0")]));
        eventually("a relist", Duration::from_secs(10), || h.api.list_requests("EndpointSlice") > lists);
        h.expect(&web(0), &[&ip]);
    }
    let took = started.elapsed();
    // A backoff wait per 410 would be at least 0.8 s a round (kube's default), 4 s in all.
    assert!(took < Duration::from_millis(2500), "five 410 relists took {took:?}");
    assert!(h.server.drain_logs().iter().all(|l| !l.contains("watches failing")), "a 410 is no outage");
}

#[test]
fn a_bad_object_is_skipped_with_a_warning_naming_it() {
    let mut objects = statefulset(&[Ep::new("10.0.0.1").hostname("web-0")]);
    objects.push(mk_service(NS, "broken", "10.96.0.999", &[]));
    let h = Harness::start(objects, &[]);
    h.wait_ready();
    h.expect(&web(0), &["10.0.0.1"]);
    let warning = h.server.wait_for_log("skipping object", Duration::from_secs(5)).expect("a warning");
    assert!(warning.contains("Service ns-0/broken"), "{warning}");
    h.expect(&format!("broken.{NS}.svc.cluster.local."), &[]);
}

/// Objects the API server would never send (a wrongly typed field, a missing required one) are
/// skipped with a warning naming them, in a list or a watch event, and never fail the rest.
#[test]
fn malformed_objects_are_skipped_with_a_warning_naming_them() {
    let mut bad_addresses =
        mk_slice(NS, "bad-addresses", "nginx", "IPv4", WEB, &[Ep::new("10.0.0.7").hostname("web-7")]);
    bad_addresses["endpoints"][0]["addresses"] = serde_json::json!("10.0.0.7");
    let mut no_type = mk_slice(NS, "no-type", "nginx", "IPv4", WEB, &[Ep::new("10.0.0.8").hostname("web-8")]);
    no_type.as_object_mut().unwrap().remove("addressType");
    let mut objects = statefulset(&[Ep::new("10.0.0.1").hostname("web-0")]);
    objects.extend([bad_addresses, no_type]);
    let h = Harness::start(objects, &[]);
    h.wait_ready();
    h.expect(&web(0), &["10.0.0.1"]);
    let mut want = vec![
        (
            "EndpointSlice ns-0/bad-addresses",
            r#"endpoints[0].addresses: invalid type: string "10.0.0.7", expected a sequence"#,
        ),
        ("EndpointSlice ns-0/no-type", "addressType is missing"),
    ];
    while !want.is_empty() {
        let line = h
            .server
            .wait_for_log("skipping object", Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no warning for {want:?}"));
        want.retain(|(what, why)| !(line.contains(what) && line.contains(why)));
    }
    h.expect(&web(7), &[]);
    h.expect(&web(8), &[]);
    // A malformed update replaces what it updates, as any unusable version does.
    let mut port_text = mk_slice(NS, "nginx-abc", "nginx", "IPv4", WEB, &[Ep::new("10.0.0.1").hostname("web-0")]);
    port_text["ports"][0]["port"] = serde_json::json!("80");
    h.api.apply(port_text);
    let line = h.server.wait_for_log("skipping object", Duration::from_secs(5)).expect("a warning");
    let why = r#"ports[0].port: invalid type: string "80", expected i32"#;
    assert!(line.contains("EndpointSlice ns-0/nginx-abc") && line.contains(why), "{line}");
    h.expect(&web(0), &[]);
    h.api.apply(mk_slice(NS, "nginx-abc", "nginx", "IPv4", WEB, &[Ep::new("10.0.0.2").hostname("web-0")]));
    h.expect(&web(0), &["10.0.0.2"]);
}

#[test]
fn namespace_and_label_filters() {
    let objects = vec![
        mk_namespace("ns-0"),
        mk_namespace("ns-1"),
        with_labels(mk_service("ns-0", "a", "10.96.0.1", &[]), &[("dns", "yes")]),
        mk_service("ns-0", "b", "10.96.0.2", &[]),
        with_labels(mk_service("ns-1", "c", "10.96.0.3", &[]), &[("dns", "yes")]),
    ];
    let h = Harness::start(objects, &["--namespace", "ns-0", "--label-selector", "dns=yes"]);
    h.wait_ready();
    h.expect("a.ns-0.svc.cluster.local.", &["10.96.0.1"]);
    h.expect("b.ns-0.svc.cluster.local.", &[]);
    h.expect("c.ns-1.svc.cluster.local.", &[]);
    assert_eq!(rcode(&ask(h.dns(), "ns-1.svc.cluster.local.", RecordType::A)), ResponseCode::NXDomain);
}

#[test]
fn programming_latency_is_measured_from_the_trigger_time() {
    let h = Harness::start(statefulset(&[Ep::new("10.0.0.1").hostname("web-0")]), &[]);
    h.wait_ready();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let trigger = k8s_openapi::jiff::Timestamp::from_second(now as i64 - 1).unwrap().to_string();
    h.api.apply(with_trigger_time(
        mk_slice(NS, "nginx-abc", "nginx", "IPv4", WEB, &[Ep::new("10.0.0.5").hostname("web-0")]),
        &trigger,
    ));
    h.expect(&web(0), &["10.0.0.5"]);
    let (_, metrics) = http_get(h.server.http_addr(), "/metrics");
    let count = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "headless_dns_dns_programming_duration_seconds_count{service_kind=\"headless_with_selector\"}",
            )
        })
        .unwrap_or_else(|| panic!("no programming latency in:\n{metrics}"));
    assert!(count.ends_with(" 1"), "{count}");
}

#[test]
fn explain_says_why_a_pod_name_does_not_resolve() {
    let web0 = Ep::new("10.0.0.1").hostname("web-0").target_pod("web-0");
    let web1 = Ep::new("10.0.0.2").hostname("web-1").target_pod("web-1").terminating_serving();
    let h = Harness::start(statefulset(&[web0, web1]), &[]);
    h.wait_ready();
    let http = format!("http://{}", h.server.http_addr());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_headless-dns"))
        .args(["explain", &web(1), "A", "--server", &http])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("answer: Non-Existent Domain"), "{text}");
    assert!(text.contains("Service ns-0/nginx: headless"), "{text}");
    assert!(text.contains("EndpointSlice ns-0/nginx-abc"), "{text}");
    assert!(
        text.contains(
            "10.0.0.2 name=web-1 pod=web-1 ready=false serving=true terminating=true → left out: terminating"
        ),
        "{text}"
    );
    // A bad server address is a clear error.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_headless-dns"))
        .args(["explain", &web(1), "--server", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("connecting to http://127.0.0.1:1"));
}
