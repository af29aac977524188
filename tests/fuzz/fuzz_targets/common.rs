//! What several targets share: the index they answer from, built once per process.
#![allow(dead_code)] // each target uses part of it

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use headless_dns::dns::name::Name;
use headless_dns::index::{Index, PodMode, RecordConfig};
use headless_dns::pipeline::Pipeline;
use headless_dns::source::Event;
use headless_dns::source::file::parse_manifests;

/// The server's `--max-udp-size` in these tests.
pub const MAX_UDP: u16 = 1232;

/// The record-test fixture: every record kind and negative case.
pub const FIXTURE: &str = include_str!("../../fixtures/records.yaml");

/// The zones served: `cluster.local` and `k8s.test`, with `--pods insecure` (so Pod names are
/// synthesized).
pub fn config() -> RecordConfig {
    let zones = vec![Name::parse("cluster.local").unwrap(), Name::parse("k8s.test").unwrap()];
    let mut cfg = RecordConfig::default_for(zones);
    cfg.pods = PodMode::Insecure;
    cfg
}

/// Manifests for answers that cannot fit: a headless Service whose A and SRV RRsets need
/// truncation over UDP, and (with `huge`) one so large that even a TCP message cannot hold its
/// RRset.
pub fn big_manifests(huge: bool) -> String {
    let mut yaml = String::new();
    let service = |name: &str| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: big}}\n\
             spec: {{clusterIP: None, ports: [{{name: web, port: 80}}, {{name: dns, port: 53, protocol: UDP}}]}}\n"
        )
    };
    yaml.push_str("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: big}\n");
    // 120 endpoints with hostnames: ~2 KB of A records, ~5 KB of SRV plus glue.
    yaml.push_str(&service("sts"));
    yaml.push_str(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: sts-1, namespace: big, labels: {kubernetes.io/service-name: sts}}\n\
         addressType: IPv4\nports: [{name: web, port: 80, protocol: TCP}, {name: dns, port: 53, protocol: UDP}]\nendpoints:\n",
    );
    for i in 0..120 {
        yaml.push_str(&format!("- {{addresses: [10.1.{}.{}], hostname: pod-{i}}}\n", i / 200, i % 200 + 1));
    }
    // 4,500 endpoints without hostnames: the A RRset alone is over 64 KB (complete = false).
    if huge {
        yaml.push_str(&service("huge"));
        for s in 0..5 {
            yaml.push_str(&format!(
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {{name: huge-{s}, namespace: big, labels: {{kubernetes.io/service-name: huge}}}}\n\
                 addressType: IPv4\nports: [{{name: web, port: 80, protocol: TCP}}]\nendpoints:\n"
            ));
            for i in 0..900 {
                yaml.push_str(&format!("- {{addresses: [10.2.{}.{}]}}\n", s * 5 + i / 200, i % 200 + 1));
            }
        }
    }
    // A dual-stack headless Service with IPv6 endpoints only.
    yaml.push_str(&service("v6"));
    yaml.push_str(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: v6-1, namespace: big, labels: {kubernetes.io/service-name: v6}}\n\
         addressType: IPv6\nports: [{name: web, port: 80, protocol: TCP}]\nendpoints:\n\
         - {addresses: [\"fd00::1\"], hostname: a}\n- {addresses: [\"fd00::2\"]}\n",
    );
    yaml
}

/// An index over [`config`]'s zones: with `ready`, holding the fixture and [`big_manifests`]
/// and published; without, before its first full sync (SERVFAIL / REFUSED).
pub fn index(ready: bool, huge: bool) -> Arc<Index> {
    let mut pipeline = Pipeline::new(config());
    if ready {
        let mut objects = parse_manifests(FIXTURE, Path::new("records.yaml")).unwrap();
        objects.extend(parse_manifests(&big_manifests(huge), Path::new("big.yaml")).unwrap());
        assert!(objects.len() > 15, "manifests did not parse: {}", objects.len());
        let events = objects.into_iter().map(Event::Apply).chain([Event::Synced]);
        pipeline.apply_batch(Instant::now(), events);
    }
    pipeline.index().clone()
}
