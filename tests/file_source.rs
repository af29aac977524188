//! The file source: changes on disk become answers, without restarts, half-written files, or
//! names that flap.

mod support;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::dns::{addresses, ask, rcode};
use support::server::{BinaryServer, TestServer, replace_file, wait_until};

/// A headless Service `nginx` in `ns-0` with Pods `web-<i>` at the given IPs.
fn statefulset(ips: &[&str]) -> String {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: nginx, namespace: ns-0}\nspec: {clusterIP: None, ports: [{name: web, port: 80}]}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: nginx-1, namespace: ns-0, labels: {kubernetes.io/service-name: nginx}}\n\
         addressType: IPv4\nports: [{name: web, port: 80}]\nendpoints:\n",
    );
    for (i, ip) in ips.iter().enumerate() {
        yaml.push_str(&format!("- {{addresses: [{ip}], hostname: web-{i}, conditions: {{ready: true}}}}\n"));
    }
    yaml
}

fn web(i: usize) -> String {
    format!("web-{i}.nginx.ns-0.svc.cluster.local.")
}

/// Polls until `web-i` answers `ip`, returning how long it took.
async fn wait_for(server: &TestServer, i: usize, ip: &str) -> Duration {
    let started = Instant::now();
    loop {
        if addresses(&ask(server.addr, &web(i), RecordType::A)) == [ip] {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "web-{i} never became {ip}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_file_is_served_without_restart() {
    let server = TestServer::start(&statefulset(&["10.0.0.1", "10.0.0.2"])).await;
    assert_eq!(addresses(&ask(server.addr, &web(0), RecordType::A)), ["10.0.0.1"]);
    let serial = server.index().serial();
    replace_file(&server.manifest, &statefulset(&["10.0.0.9", "10.0.0.2"]));
    wait_for(&server, 0, "10.0.0.9").await;
    assert!(server.index().serial() > serial, "SOA serial moved forward");
    // Scale down: web-1 disappears.
    replace_file(&server.manifest, &statefulset(&["10.0.0.9"]));
    let started = Instant::now();
    while rcode(&ask(server.addr, &web(1), RecordType::A)) != ResponseCode::NXDomain {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.stop().await;
}

/// Continuously asks for `names` until stopped, counting answers that are not exactly `want`.
fn hammer(
    addr: std::net::SocketAddr,
    names: Vec<String>,
    want: Vec<&'static str>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, usize)> {
    std::thread::spawn(move || {
        let (mut asked, mut wrong) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            for (name, want) in names.iter().zip(&want) {
                let resp = ask(addr, name, RecordType::A);
                asked += 1;
                if addresses(&resp) != [*want] {
                    wrong += 1;
                    eprintln!("{name}: {:?} {:?}", rcode(&resp), addresses(&resp));
                }
            }
        }
        (asked, wrong)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_rewritten_in_place_in_pieces_is_never_applied_half_written() {
    let server = TestServer::start_with(&statefulset(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]), |c| {
        let opts = c.file_options_mut().unwrap();
        opts.settle = Duration::from_millis(400);
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let querier = hammer(server.addr, vec![web(2)], vec!["10.0.0.3"], stop.clone());

    // An editor saving in place: truncate, then write in pieces with pauses.
    let full = statefulset(&["10.0.0.7", "10.0.0.2", "10.0.0.3"]);
    let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(&server.manifest).unwrap();
    for piece in full.as_bytes().chunks(full.len() / 4 + 1) {
        file.write_all(piece).unwrap();
        file.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    drop(file);
    wait_for(&server, 0, "10.0.0.7").await;
    stop.store(true, Ordering::Relaxed);
    let (asked, wrong) = querier.join().unwrap();
    assert!(asked > 10);
    assert_eq!(wrong, 0, "web-2 (in the last piece) must never vanish");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_file_keeps_the_last_good_state() {
    let server = TestServer::start(&statefulset(&["10.0.0.1"])).await;
    replace_file(&server.manifest, "apiVersion: v1\nkind: Service\nmetadata: {name: [unclosed\n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(addresses(&ask(server.addr, &web(0), RecordType::A)), ["10.0.0.1"]);
    // Fixed again: applied.
    replace_file(&server.manifest, &statefulset(&["10.0.0.5"]));
    wait_for(&server, 0, "10.0.0.5").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_object_is_skipped_and_the_rest_served() {
    let yaml = format!(
        "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: broken, namespace: ns-0}}\nspec: {{clusterIP: 10.96.0.999}}\n",
        statefulset(&["10.0.0.1"])
    );
    let server = TestServer::start(&yaml).await;
    assert_eq!(addresses(&ask(server.addr, &web(0), RecordType::A)), ["10.0.0.1"]);
    assert_eq!(rcode(&ask(server.addr, "broken.ns-0.svc.cluster.local.", RecordType::A)), ResponseCode::NXDomain);
    server.stop().await;
}

/// A malformed object (a wrongly typed field, a missing required one) is skipped with a warning
/// naming it and its document; the rest of the file is served.
#[test]
fn malformed_objects_are_skipped_with_a_warning_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.yaml");
    std::fs::write(&path, statefulset(&["10.0.0.1"])).unwrap();
    let source = format!("file:{}", path.display());
    let server = BinaryServer::start(&["serve", "--source", &source, "--listen", "127.0.0.1:0", "--http", "none"]);
    let slice = |name: &str| {
        format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}, namespace: ns-0, labels: {{kubernetes.io/service-name: nginx}}}}\n"
        )
    };
    let yaml = format!(
        "{}{}addressType: IPv4\nendpoints: [{{addresses: 10.0.0.7, hostname: web-7}}]\n{}endpoints: [{{addresses: [10.0.0.8]}}]\n",
        statefulset(&["10.0.0.2"]),
        slice("bad-addresses"),
        slice("no-type"),
    );
    replace_file(&path, &yaml);
    for (what, why) in [
        (
            "EndpointSlice ns-0/bad-addresses",
            r#"document 3 reason=endpoints[0].addresses: invalid type: string "10.0.0.7", expected a sequence"#,
        ),
        ("EndpointSlice ns-0/no-type", "document 4 reason=addressType is missing"),
    ] {
        let line = server.wait_for_log("skipping object", Duration::from_secs(10)).expect("a warning");
        assert!(line.contains(what) && line.contains(why), "{line}");
    }
    // The warnings come from parsing; the rest of the file is applied after.
    wait_until(|| addresses(&ask(server.addr, &web(0), RecordType::A)) == ["10.0.0.2"]);
    assert_eq!(rcode(&ask(server.addr, "web-7.nginx.ns-0.svc.cluster.local.", RecordType::A)), ResponseCode::NXDomain);
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_names_never_flap_while_others_churn() {
    let server = TestServer::start(&statefulset(&["10.0.0.1", "10.0.0.2"])).await;
    let stop = Arc::new(AtomicBool::new(false));
    let querier = hammer(server.addr, vec![web(0)], vec!["10.0.0.1"], stop.clone());
    let changes = AtomicUsize::new(0);
    for round in 0..15 {
        // web-1 is recreated: gone, back with a new IP.
        replace_file(&server.manifest, &statefulset(&["10.0.0.1"]));
        tokio::time::sleep(Duration::from_millis(120)).await;
        let ip = format!("10.0.1.{}", round + 1);
        replace_file(&server.manifest, &statefulset(&["10.0.0.1", &ip]));
        tokio::time::sleep(Duration::from_millis(120)).await;
        changes.fetch_add(1, Ordering::Relaxed);
    }
    wait_for(&server, 1, "10.0.1.15").await;
    stop.store(true, Ordering::Relaxed);
    let (asked, wrong) = querier.join().unwrap();
    assert_eq!(changes.load(Ordering::Relaxed), 15);
    assert!(asked > 50, "{asked}");
    assert_eq!(wrong, 0, "web-0 did not change and must never vanish or change");
    server.stop().await;
}

/// Serves a directory of manifests, polled every 20 ms, once its first state is published.
async fn serve_dir(dir: &std::path::Path) -> headless_dns::Running {
    let mut config = headless_dns::config::Config::for_file(dir, "127.0.0.1:0".parse().unwrap());
    config.file_options_mut().unwrap().poll_interval = Duration::from_millis(20);
    config.file_options_mut().unwrap().settle = Duration::from_millis(50);
    let running = headless_dns::start(config).await.unwrap();
    while !running.index().is_ready() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_of_manifests() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), statefulset(&["10.0.0.1"])).unwrap();
    std::fs::write(
        dir.path().join("b.yml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: ns-0}\nspec: {clusterIP: 10.96.0.1}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    let running = serve_dir(dir.path()).await;
    let addr = running.dns_addrs()[0];
    assert_eq!(addresses(&ask(addr, "api.ns-0.svc.cluster.local.", RecordType::A)), ["10.96.0.1"]);
    assert_eq!(addresses(&ask(addr, &web(0), RecordType::A)), ["10.0.0.1"]);
    // Removing a file removes its objects.
    std::fs::remove_file(dir.path().join("b.yml")).unwrap();
    let started = Instant::now();
    while rcode(&ask(addr, "api.ns-0.svc.cluster.local.", RecordType::A)) != ResponseCode::NXDomain {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(addresses(&ask(addr, &web(0), RecordType::A)), ["10.0.0.1"]);
    running.stop().await;
}

/// A Service `api` in `ns-0` with one cluster IP.
fn api_service(ip: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: api, namespace: ns-0}}\nspec: {{clusterIP: {ip}}}\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_in_two_files_survives_either_being_removed() {
    const API: &str = "api.ns-0.svc.cluster.local.";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), api_service("10.96.0.1")).unwrap();
    let running = serve_dir(dir.path()).await;
    let addr = running.dns_addrs()[0];
    // A watchdog: the name must answer an address at every moment of the moves below.
    let stop = Arc::new(AtomicBool::new(false));
    let gaps = Arc::new(AtomicUsize::new(0));
    let watchdog = {
        let (stop, gaps) = (stop.clone(), gaps.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if addresses(&ask(addr, API, RecordType::A)).is_empty() {
                    gaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let until = |ip: &'static str| async move {
        let started = Instant::now();
        while addresses(&ask(addr, API, RecordType::A)) != [ip] {
            assert!(started.elapsed() < Duration::from_secs(10), "api never became {ip}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    // A second file defines it too, differently: the newer read wins.
    replace_file(&dir.path().join("b.yaml"), &api_service("10.96.0.2"));
    until("10.96.0.2").await;
    // Removing that file brings back the first file's version, which the source reads again.
    std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
    until("10.96.0.1").await;
    // Moving it to another file, then deleting the old one, never removes it either.
    replace_file(&dir.path().join("c.yaml"), &api_service("10.96.0.1"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    until("10.96.0.1").await;
    stop.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();
    assert_eq!(gaps.load(Ordering::Relaxed), 0, "api vanished while it moved between files");
    // Gone from every file, it is deleted.
    std::fs::write(dir.path().join("c.yaml"), "").unwrap();
    let started = Instant::now();
    while rcode(&ask(addr, API, RecordType::A)) != ResponseCode::NXDomain {
        assert!(started.elapsed() < Duration::from_secs(10), "api never deleted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_file_at_start_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.yaml");
    std::fs::write(&path, "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [\n").unwrap();
    let config = headless_dns::config::Config::for_file(&path, "127.0.0.1:0".parse().unwrap());
    let err = headless_dns::start(config).await.err().expect("start fails").to_string();
    assert!(err.contains("cluster.yaml: document 2:"), "{err}");
    assert!(err.contains("line 5") && !err.contains('\n'), "one line, naming where: {err}");
    let config =
        headless_dns::config::Config::for_file(dir.path().join("missing.yaml"), "127.0.0.1:0".parse().unwrap());
    let err = headless_dns::start(config).await.err().expect("start fails").to_string();
    assert!(err.contains("missing.yaml") && err.contains("No such file"), "{err}");
}
