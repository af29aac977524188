//! Writer and index tests: driven with built objects, as linkerd's index tests are.

use std::net::IpAddr;
use std::sync::Arc;

use proptest::prelude::*;
use smallvec::smallvec;

use super::records::RecordConfig;
use super::{Index, Writer};
use crate::cluster::object::{Conditions, Endpoint, Namespace, Object, Port, Protocol, Service, ServiceKind, Slice};
use crate::cluster::{Kind, ObjKey, ObjectRef, Owner};
use crate::dns::name::{Name, reverse_name};
use crate::pipeline::Pipeline;
use crate::source::Event;

fn cfg() -> RecordConfig {
    RecordConfig::default_for(vec![Name::parse("cluster.local").unwrap()])
}

struct Fixture {
    pipeline: Pipeline,
}

impl Fixture {
    fn new() -> Self {
        Fixture { pipeline: Pipeline::new(cfg()) }
    }

    fn apply(&mut self, obj: Object) -> bool {
        self.pipeline.apply(Event::Apply(obj)).changed
    }

    fn delete(&mut self, kind: Kind, ns: &str, name: &str) -> bool {
        self.pipeline.apply(Event::Delete(ObjectRef { kind, key: ObjKey::new(ns, name) })).changed
    }

    fn index(&self) -> &Index {
        self.pipeline.index()
    }

    fn has(&self, name: &str) -> bool {
        self.index().get(Name::parse(name).unwrap().as_wire()).is_some()
    }

    fn rrset_count(&self, name: &Name, rtype: u16) -> usize {
        self.index().get(name.as_wire()).and_then(|e| e.rrset(rtype).map(|a| a.ancount as usize)).unwrap_or(0)
    }
}

fn service(ns: &str, name: &str, kind: ServiceKind) -> Object {
    Object::Service(Service {
        key: ObjKey::new(ns, name),
        kind,
        ports: vec![Port { name: Some("web".into()), protocol: Protocol::Tcp, port: 80 }],
    })
}

fn endpoint(ip: &str, hostname: Option<&str>, ready: bool) -> Endpoint {
    Endpoint::new(
        ip.parse::<IpAddr>().unwrap().into(),
        hostname.map(String::from),
        None,
        Conditions { ready, serving: ready, terminating: false },
    )
}

fn slice(ns: &str, name: &str, svc: &str, endpoints: Vec<Endpoint>) -> Object {
    Object::Slice(Slice {
        key: ObjKey::new(ns, name),
        service: svc.into(),
        ports: vec![Port { name: Some("web".into()), protocol: Protocol::Tcp, port: 80 }],
        endpoints,
        trigger_time_ms: None,
    })
}

#[test]
fn empty_non_terminals_come_and_go_with_what_is_below_them() {
    let mut f = Fixture::new();
    f.apply(service("ns-0", "svc-0", ServiceKind::Headless));
    f.apply(slice("ns-0", "slice-0", "svc-0", vec![endpoint("10.0.0.1", Some("pod-0"), true)]));
    assert!(f.has("pod-0.svc-0.ns-0.svc.cluster.local"));
    assert!(f.has("_tcp.svc-0.ns-0.svc.cluster.local"), "empty non-terminal above the SRV name");
    assert!(f.has("ns-0.svc.cluster.local"));
    assert!(f.has("0.0.10.in-addr.arpa"));

    f.delete(Kind::EndpointSlice, "ns-0", "slice-0");
    assert!(!f.has("pod-0.svc-0.ns-0.svc.cluster.local"));
    assert!(!f.has("_tcp.svc-0.ns-0.svc.cluster.local"));
    assert!(!f.has("svc-0.ns-0.svc.cluster.local"), "headless with no endpoints: NXDOMAIN");
    assert!(!f.has("ns-0.svc.cluster.local"), "no Namespace object and nothing below");
    assert!(!f.has("0.0.10.in-addr.arpa"));
    assert!(f.has("svc.cluster.local"), "fixed names stay");

    f.apply(Object::Namespace(Namespace { name: "ns-0".into() }));
    assert!(f.has("ns-0.svc.cluster.local"), "a Namespace object keeps its name");
}

#[test]
fn a_shared_reverse_name_keeps_one_ptr_per_service() {
    let mut f = Fixture::new();
    for svc in ["a", "b"] {
        f.apply(service("ns-0", svc, ServiceKind::Headless));
        f.apply(slice("ns-0", svc, svc, vec![endpoint("10.0.0.1", Some("pod-0"), true)]));
    }
    let reverse = reverse_name("10.0.0.1".parse().unwrap());
    assert_eq!(f.rrset_count(&reverse, crate::dns::proto::rtype::PTR), 2);
    f.delete(Kind::Service, "ns-0", "a");
    assert_eq!(f.rrset_count(&reverse, crate::dns::proto::rtype::PTR), 1);
    f.delete(Kind::Service, "ns-0", "b");
    assert!(f.index().get(reverse.as_wire()).is_none());
}

#[test]
fn serial_moves_on_change_only() {
    let mut f = Fixture::new();
    let before = f.index().serial();
    assert!(f.apply(service("ns-0", "svc-0", ServiceKind::ClusterIp(smallvec!["10.96.0.1".parse().unwrap()]))));
    let after = f.index().serial();
    assert!(after > before);
    assert!(!f.apply(service("ns-0", "svc-0", ServiceKind::ClusterIp(smallvec!["10.96.0.1".parse().unwrap()]))));
    assert_eq!(f.index().serial(), after);
}

#[test]
fn srv_glue_follows_a_pod_recreation() {
    let mut f = Fixture::new();
    f.apply(service("ns-0", "svc-0", ServiceKind::Headless));
    f.apply(slice("ns-0", "slice-0", "svc-0", vec![endpoint("10.0.0.1", Some("pod-0"), true)]));
    let srv = Name::parse("_web._tcp.svc-0.ns-0.svc.cluster.local").unwrap();
    let glue_before = f.index().get(srv.as_wire()).unwrap().rrset(crate::dns::proto::rtype::SRV).unwrap().to_vec();
    // Same hostname, new IP: the SRV record is unchanged, its glue is not.
    f.apply(slice("ns-0", "slice-0", "svc-0", vec![endpoint("10.0.0.2", Some("pod-0"), true)]));
    let glue_after = f.index().get(srv.as_wire()).unwrap().rrset(crate::dns::proto::rtype::SRV).unwrap().to_vec();
    assert_ne!(glue_before, glue_after);
    assert!(glue_after.ends_with(&[10, 0, 0, 2]));
}

/// A small universe of objects, so that random sequences collide often.
fn arb_object() -> impl Strategy<Value = Object> {
    let ips = prop::sample::select(vec!["10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::1"]);
    let endpoint = (ips, prop::option::of(prop::sample::select(vec!["pod-0", "pod-1"])), any::<bool>())
        .prop_map(|(ip, host, ready)| endpoint(ip, host, ready));
    let svc_name = prop::sample::select(vec!["svc-0", "svc-1"]);
    let kind = prop_oneof![
        Just(ServiceKind::Headless),
        Just(ServiceKind::ClusterIp(smallvec!["10.96.0.1".parse().unwrap()])),
        Just(ServiceKind::ExternalName(Name::parse("example.com").unwrap())),
    ];
    prop_oneof![
        (svc_name.clone(), kind).prop_map(|(n, k)| service("ns-0", n, k)),
        (prop::sample::select(vec!["slice-0", "slice-1", "slice-2"]), svc_name, prop::collection::vec(endpoint, 0..3))
            .prop_map(|(n, s, eps)| slice("ns-0", n, s, eps)),
        Just(Object::Namespace(Namespace { name: "ns-0".into() })),
    ]
}

#[derive(Clone, Debug)]
enum Step {
    Apply(Object),
    Delete(ObjectRef),
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => arb_object().prop_map(Step::Apply),
        1 => arb_object().prop_map(|o| Step::Delete(o.object_ref())),
    ]
}

proptest! {
    /// Whatever order events arrive in, the incrementally maintained index equals the index
    /// built from scratch from the final model.
    #[test]
    fn incremental_index_equals_a_rebuild(steps in prop::collection::vec(arb_step(), 1..40)) {
        let mut f = Fixture::new();
        for step in steps {
            match step {
                Step::Apply(o) => { f.apply(o); }
                Step::Delete(r) => { f.pipeline.apply(Event::Delete(r)); }
            }
        }
        let cfg = cfg();
        let fresh_index = Arc::new(Index::new(&cfg));
        let mut fresh = Writer::new(fresh_index.clone(), cfg);
        // The oracle: a writer recomputing every owner of the final model at once.
        let model = f.pipeline.model().read();
        let owners: Vec<Owner> = model.owners().collect();
        fresh.recompute(&model, owners);
        prop_assert_eq!(f.index().snapshot(), fresh_index.snapshot());
        // The published-names count (the `index_names` metric) and the writer's own tally of
        // names (published or not) agree with what is there: nothing is left half-published.
        prop_assert_eq!(f.index().len(), f.index().snapshot().len());
        prop_assert_eq!(f.pipeline.writer().sizes().0, f.index().len());
    }
}
