//! The container image, run as `deploy/deployment.yaml` runs it: built FROM scratch by
//! `deploy/image/build-local.sh` from the binary cargo built for this test, started by podman with
//! the Deployment's args and security context (user 65532, read-only root, all capabilities
//! dropped but NET_BIND_SERVICE, no privilege escalation, the Pod's sysctl), listening on port 53
//! inside the container, published on a loopback port. The example cluster is mounted as a file
//! source in place of `--source kube`. Needs podman (skipped without it, unless `CI` is set).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::dns::{addresses, ask, query_message, rcode, require_tool, tcp};
use support::image::{Container, DeploymentContainer, Image, free_port, podman_ok};
use support::server::{example_manifest, try_http_get};

const WEB_0: &str = "web-0.nginx.default.svc.cluster.local.";

#[test]
fn image_runs_as_the_deployment_runs_it() {
    if !require_tool("podman") {
        return;
    }
    let started = Instant::now();
    let image = Image::build("image");
    eprintln!("image {} built in {:?}", image.tag, started.elapsed());

    // No shell, no root: the entrypoint is the binary and the user is the Deployment's.
    let config = podman_ok(&["image", "inspect", "--format", "{{.Config.User}} {{.Config.Entrypoint}}", &image.tag]);
    assert_eq!(config, "65532:65532 [/headless-dns]");

    let deployment = DeploymentContainer::load();
    let dns_in: SocketAddr = deployment.arg("--listen").parse().unwrap();
    let http_in: SocketAddr = deployment.arg("--http").parse().unwrap();
    assert_eq!(dns_in.port(), 53, "the Deployment serves DNS on port 53");
    let (dns_port, http_port) = (free_port(), free_port());
    let mut flags = deployment.flags.clone();
    flags.extend([
        format!("--publish=127.0.0.1:{dns_port}:{}/udp", dns_in.port()),
        format!("--publish=127.0.0.1:{dns_port}:{}/tcp", dns_in.port()),
        format!("--publish=127.0.0.1:{http_port}:{}/tcp", http_in.port()),
        format!("--volume={}:/etc/headless-dns/cluster.yaml:ro", example_manifest().display()),
    ]);
    // The file source stands in for the API server; no forwarding (tests stay on loopback).
    let mut args = deployment.args_with("--source", "file:/etc/headless-dns/cluster.yaml");
    args.extend(["--upstream".into(), "none".into()]);
    let container = Container::run("headless-dns-image", &flags, &image, &args);

    let dns = SocketAddr::from(([127, 0, 0, 1], dns_port));
    let http = SocketAddr::from(([127, 0, 0, 1], http_port));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(try_http_get(http, "/readyz"), Ok((200, _))) {
        assert!(Instant::now() < deadline, "/readyz never said 200: {}", container.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("ready {:?} after start", started.elapsed());

    let over_udp = ask(dns, WEB_0, RecordType::A);
    assert_eq!((rcode(&over_udp), addresses(&over_udp)), (ResponseCode::NoError, vec!["10.244.1.5".to_string()]));
    let over_tcp = tcp(dns, &query_message(WEB_0, RecordType::A, None));
    assert_eq!((rcode(&over_tcp), addresses(&over_tcp)), (ResponseCode::NoError, vec!["10.244.1.5".to_string()]));
    assert!(container.logs().contains(r#""addr":"0.0.0.0:53""#), "listens on port 53 in the container");

    // SIGTERM: not ready, still answering for the lame-duck time (`--lameduck`, 5 s by default),
    // then a clean exit (0), well before podman's SIGKILL.
    let lameduck = Duration::from_secs(5);
    let stopping = Instant::now();
    let exit = container.stop(30);
    let took = stopping.elapsed();
    assert_eq!(exit, 0, "exits by itself on SIGTERM: {}", container.logs());
    assert!(took < lameduck + Duration::from_secs(5), "stopped in {took:?}");
    assert!(container.logs().contains("shutting down"), "{}", container.logs());
    eprintln!("stopped in {took:?}; total {:?}", started.elapsed());
}
