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
        "--kubeconfig",
        "--namespace",
        "--label-selector",
        "--http",
        "--listen",
        "--zone",
        "--ttl ",
        "--ttl-headless",
        "--ttl-clusterip",
        "--negative-ttl",
        "--pods",
        "--ptr",
        "--udp-workers",
        "--max-udp-size",
        "--tcp-max-connections",
        "--tcp-idle-timeout",
        "--file-poll-interval",
        "--file-settle",
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
    assert!(err.contains("--source \"bogus\": expected file:PATH or kube"), "{err}");
    let (ok, _, err) = run(&["serve", "--source", "file:/nonexistent/cluster.yaml", "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/cluster.yaml"), "{err}");
    let (ok, _, err) = run(&["serve", "--source", "file:x", "--zone", "bad..zone"]);
    assert!(!ok);
    assert!(err.contains("--zone \"bad..zone\""), "{err}");
    let (ok, _, err) = run(&["serve", "--source", "file:x", "--ttl", "99999"]);
    assert!(!ok);
    assert!(err.contains("--ttl 99999"), "{err}");
}

#[test]
fn serves_the_shipped_example() {
    let source = format!("file:{}", example_manifest().display());
    let server = BinaryServer::start(&[
        "serve",
        "--source",
        &source,
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--http",
        "127.0.0.1:0",
    ]);
    assert!(server.wait_for_log("serving", std::time::Duration::from_secs(10)).is_some());
    assert_eq!(addresses(&ask(server.addr, "web-0.nginx.default.svc.cluster.local.", RecordType::A)), ["10.244.1.5"]);
    assert_eq!(addresses(&ask(server.addr, "web-1.nginx.default.svc.cluster.local.", RecordType::A)), ["10.244.2.7"]);
}
