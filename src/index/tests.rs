//! Writer and index tests: driven with built objects, as linkerd's index tests are.

use std::net::IpAddr;
use std::sync::Arc;

use crate::dns::proto::MAX_MESSAGE;
use proptest::prelude::*;
use smallvec::smallvec;

use super::records::RecordConfig;
use super::{Index, Writer};
use crate::cluster::mcs::{ClusterSetSlice, ImportKind, ServiceImport};
use crate::cluster::object::{Conditions, Endpoint, Namespace, Object, Port, Protocol, Service, ServiceKind, Slice};
use crate::cluster::{Kind, ObjKey, ObjectRef, Owner};
use crate::dns::name::{Name, reverse_name};
use crate::pipeline::Pipeline;
use crate::source::Event;

fn cfg() -> RecordConfig {
    let clusterset = Some(Name::parse("clusterset.local").unwrap());
    RecordConfig { clusterset, ..RecordConfig::default_for(vec![Name::parse("cluster.local").unwrap()]) }
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

/// A zone's serial moves only when its records change: an unchanged zone is neither notified
/// nor transferred (zones: cluster.local, clusterset.local, in-addr.arpa, ip6.arpa).
#[test]
fn serial_moves_per_zone() {
    let mut f = Fixture::new();
    f.index().set_ready(true);
    let serials = |f: &Fixture| (0..4).map(|z| f.index().zone_serial(z)).collect::<Vec<_>>();
    let start = serials(&f);
    assert!(f.apply(service("ns-0", "ext", ServiceKind::ExternalName(Name::parse("example.com").unwrap()))));
    let after_cname = serials(&f);
    assert!(crate::dns::transfer::serial_lt(start[0], after_cname[0]));
    assert_eq!(after_cname[1..], start[1..], "only the cluster zone changed");
    assert!(f.apply(service("ns-0", "svc-0", ServiceKind::ClusterIp(smallvec!["10.96.0.1".parse().unwrap()]))));
    let after_ip = serials(&f);
    assert!(crate::dns::transfer::serial_lt(after_cname[0], after_ip[0]));
    assert_eq!(after_ip[2], after_ip[0], "its PTR is in in-addr.arpa");
    assert_eq!(after_ip[3], start[3], "nothing in ip6.arpa");
    assert_eq!(f.index().serial(), after_ip[0]);
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
        (
            prop::sample::select(vec!["slice-0", "slice-1", "slice-2"]),
            svc_name.clone(),
            prop::collection::vec(endpoint.clone(), 0..3)
        )
            .prop_map(|(n, s, eps)| slice("ns-0", n, s, eps)),
        Just(Object::Namespace(Namespace { name: "ns-0".into() })),
        (svc_name.clone(), prop::sample::select(vec!["10.0.0.3", ""])).prop_map(|(n, ip)| import("ns-0", n, ip)),
        (
            prop::sample::select(vec!["cs-0", "cs-1"]),
            svc_name,
            prop::sample::select(vec!["cluster-a", "cluster-b"]),
            prop::collection::vec(endpoint, 0..3)
        )
            .prop_map(|(n, s, c, eps)| cluster_slice(n, s, c, eps)),
    ]
}

/// A ServiceImport: ClusterSetIP `ip`, or headless when `ip` is empty.
fn import(ns: &str, name: &str, ip: &str) -> Object {
    let kind = match ip {
        "" => ImportKind::Headless,
        ip => ImportKind::ClusterSetIp(smallvec![ip.parse().unwrap()]),
    };
    let ports = vec![Port { name: Some("web".into()), protocol: Protocol::Tcp, port: 80 }];
    Object::Import(ServiceImport { key: ObjKey::new(ns, name), kind, ports })
}

fn cluster_slice(name: &str, import: &str, cluster: &str, endpoints: Vec<Endpoint>) -> Object {
    let Object::Slice(slice) = slice("ns-0", name, import, endpoints) else { unreachable!() };
    Object::ClusterSetSlice(ClusterSetSlice { cluster: cluster.into(), slice })
}

/// A cluster-set PTR yields to the cluster zone's at the same address, and comes back when that
/// one goes (MCS DNS specification §2.4.3, "Limitations").
#[test]
fn a_cluster_set_ptr_only_where_the_cluster_zone_has_none() {
    let mut f = Fixture::new();
    f.apply(import("ns-0", "svc-0", ""));
    f.apply(cluster_slice("cs-0", "svc-0", "cluster-a", vec![endpoint("10.0.0.1", Some("pod-0"), true)]));
    let reverse = reverse_name("10.0.0.1".parse().unwrap());
    let ptr = |f: &Fixture| {
        let entry = f.index().get(reverse.as_wire()).map(|e| e.rrset(crate::dns::proto::rtype::PTR).is_some());
        (entry.is_some(), f.has("pod-0.cluster-a.svc-0.ns-0.svc.clusterset.local"))
    };
    assert_eq!(ptr(&f), (true, true));
    let target = |f: &Fixture| {
        let entry = f.index().get(reverse.as_wire()).unwrap();
        let answer = entry.rrset(crate::dns::proto::rtype::PTR).unwrap();
        let mut buf = vec![0u8; MAX_MESSAGE];
        let (_, len) = answer.fit(buf.len());
        answer.copy_to(&mut buf, len);
        String::from_utf8_lossy(&buf[..len]).contains("clusterset")
    };
    assert!(target(&f), "the cluster-set name while the cluster zone has none");
    f.apply(service("ns-0", "local", ServiceKind::Headless));
    f.apply(slice("ns-0", "slice-0", "local", vec![endpoint("10.0.0.1", Some("pod-0"), true)]));
    assert_eq!(f.rrset_count(&reverse, crate::dns::proto::rtype::PTR), 1, "one PTR: the cluster zone's");
    assert!(!target(&f), "the cluster zone's name");
    f.delete(Kind::Service, "ns-0", "local");
    assert!(target(&f), "the cluster-set name again");
    f.delete(Kind::ClusterSetSlice, "ns-0", "cs-0");
    assert!(f.index().get(reverse.as_wire()).is_none());
    assert!(!f.has("cluster-a.svc-0.ns-0.svc.clusterset.local"), "the empty non-terminal goes with its names");
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

// === IXFR journal ===

/// Zone `zone` as AXFR sends it (without its SOA), in wire form.
fn zone_rrs(index: &Index, zone: u8) -> std::collections::BTreeSet<super::journal::Rr> {
    let mut rrs = std::collections::BTreeSet::new();
    for (name, entry) in index.snapshot() {
        if index.zone_of(name.as_wire()) == Some(zone) {
            rrs.extend(super::journal::rrs(name.as_wire(), &entry));
        }
    }
    rrs
}

/// Applies the versions since `serial` to `state`, strictly: a deleted record must be there, an
/// added one must not (as a secondary applies IXFR).
fn replay(
    index: &Index,
    zone: u8,
    serial: u32,
    mut state: std::collections::BTreeSet<super::journal::Rr>,
) -> Result<std::collections::BTreeSet<super::journal::Rr>, String> {
    let versions = index.journal().since(serial).ok_or(format!("serial {serial} not in the journal"))?;
    for version in versions {
        let Some(diff) = version.zone(zone) else { continue };
        for rr in &diff.deleted {
            if !state.remove(rr) {
                return Err(format!("{}→{}: deletes a record that is not there", version.from, version.to));
            }
        }
        for rr in &diff.added {
            if !state.insert(rr.clone()) {
                return Err(format!("{}→{}: adds a record that is there", version.from, version.to));
            }
        }
    }
    Ok(state)
}

proptest! {
    /// For any event sequence, the journal from every serial it holds, applied to the zone as it
    /// was at that serial, gives the current zone (every served zone); an unknown serial is not
    /// in it (the transfer then sends the whole zone).
    #[test]
    fn ixfr_from_every_journaled_serial_gives_the_current_zone(steps in prop::collection::vec(arb_step(), 1..30)) {
        let mut f = Fixture::new();
        f.index().set_ready(true);
        let zones = f.index().zones().len() as u8;
        let snapshot = |f: &Fixture| (0..zones).map(|z| zone_rrs(f.index(), z)).collect::<Vec<_>>();
        let mut states = vec![(f.index().serial(), snapshot(&f))];
        for step in steps {
            match step {
                Step::Apply(o) => { f.apply(o); }
                Step::Delete(r) => { f.pipeline.apply(Event::Delete(r)); }
            }
            let serial = f.index().serial();
            if states.last().is_some_and(|(s, _)| *s != serial) {
                states.push((serial, snapshot(&f)));
            }
        }
        let current = f.index().serial();
        let now = snapshot(&f);
        let past: Vec<_> = states.into_iter().filter(|(s, _)| *s != current).collect();
        // Past MAX_VERSIONS, the oldest versions are condensed: serials in between are no longer
        // reachable (a full transfer), the oldest and the newest ones are.
        let reachable = past.iter().filter(|(s, _)| f.index().journal().since(*s).is_some()).count();
        prop_assert!(reachable >= past.len().min(super::journal::MAX_VERSIONS - 1), "{} of {}", reachable, past.len());
        prop_assert!(past.first().is_none_or(|(s, _)| f.index().journal().since(*s).is_some()));
        for (serial, then) in past {
            if f.index().journal().since(serial).is_none() {
                continue;
            }
            for (zone, state) in then.into_iter().enumerate() {
                let replayed = replay(f.index(), zone as u8, serial, state);
                prop_assert_eq!(replayed.as_ref(), Ok(&now[zone]), "from {} in zone {}", serial, zone);
            }
        }
        prop_assert!(f.index().journal().since(current).is_none());
        prop_assert!(f.index().journal().since(current.wrapping_add(1 << 20)).is_none());
    }
}

#[test]
fn the_journal_condenses_old_versions_and_drops_past_its_bound() {
    use super::journal::MAX_VERSIONS;
    let mut f = Fixture::new();
    f.index().set_ready(true);
    let first = f.index().serial();
    let at_first = zone_rrs(f.index(), 0);
    f.apply(service("ns-0", "svc-0", ServiceKind::Headless));
    // A Pod recreated over and over: more versions than the journal keeps apart.
    for i in 0..MAX_VERSIONS + 10 {
        let ip = format!("10.0.{}.{}", i % 200, 1 + i % 2);
        f.apply(slice("ns-0", "slice-0", "svc-0", vec![endpoint(&ip, Some("pod-0"), true)]));
    }
    let journal = f.index().journal();
    assert_eq!(journal.versions(), MAX_VERSIONS);
    // The oldest serial is still reachable, through the condensed version.
    assert_eq!(replay(f.index(), 0, first, at_first).unwrap(), zone_rrs(f.index(), 0));
    // A smaller bound drops the oldest versions first.
    journal.set_limit(4096);
    assert!(journal.bytes() <= 4096, "{}", journal.bytes());
    assert!(journal.versions() > 0 && journal.versions() < MAX_VERSIONS);
    assert!(journal.since(first).is_none());
    // No bound, no journal.
    journal.set_limit(0);
    assert_eq!((journal.bytes(), journal.versions()), (0, 0));
}

/// A transfer through `transfer::respond`, as a TCP client gets it: its answer records.
fn transfer_records(
    index: &Index,
    zone: &str,
    qtype: hickory_proto::rr::RecordType,
    serial: Option<u32>,
) -> Vec<hickory_proto::rr::Record> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::SOA;
    use hickory_proto::rr::{Name as HName, RData, Record};
    let apex = HName::from_ascii(zone).unwrap();
    let mut request = Message::new(7, MessageType::Query, OpCode::Query);
    request.add_query(Query::query(apex.clone(), qtype));
    if let Some(serial) = serial {
        let soa = SOA::new(apex.clone(), apex.clone(), serial, 0, 0, 0, 0);
        request.add_authority(Record::from_rdata(apex, 0, RData::SOA(soa)));
    }
    let acl = crate::dns::transfer::TransferAcl::new(vec!["127.0.0.1/32".parse().unwrap()]);
    let policy = crate::dns::finish::Policy::new(1232);
    let messages =
        crate::dns::transfer::respond(index, &request.to_vec().unwrap(), [127, 0, 0, 1].into(), &acl, &policy);
    messages.iter().flat_map(|m| Message::from_vec(m).unwrap().answers).collect()
}

fn soa_serial(record: &hickory_proto::rr::Record) -> Option<u32> {
    match &record.data {
        hickory_proto::rr::RData::SOA(soa) => Some(soa.serial),
        _ => None,
    }
}

/// Applies an IXFR answer (RFC 1995 §4) to `state` as a strict secondary would.
fn apply_ixfr(
    mut state: std::collections::BTreeSet<super::journal::Rr>,
    answer: &[hickory_proto::rr::Record],
) -> Result<std::collections::BTreeSet<super::journal::Rr>, String> {
    let end = answer.first().and_then(soa_serial).ok_or("no leading SOA")?;
    let mut at = 1;
    // Per version: SOA (old), deletions, SOA (new), additions; then the final SOA.
    while at < answer.len() - 1 {
        let mut deleting = true;
        soa_serial(&answer[at]).ok_or("no version SOA")?;
        at += 1;
        while at < answer.len() - 1 {
            if soa_serial(&answer[at]).is_some() {
                if !deleting {
                    break;
                }
                deleting = false;
                at += 1;
                continue;
            }
            let rr = super::journal::to_rr(&answer[at]).ok_or("unencodable")?;
            let ok = if deleting { state.remove(&rr) } else { state.insert(rr) };
            if !ok {
                return Err(format!("record {} cannot be {}", answer[at], if deleting { "deleted" } else { "added" }));
            }
            at += 1;
        }
    }
    (soa_serial(&answer[answer.len() - 1]) == Some(end)).then_some(state).ok_or("no final SOA".into())
}

/// An AXFR's serial and records (without the SOA).
fn axfr(index: &Index, zone: &str) -> (u32, std::collections::BTreeSet<super::journal::Rr>) {
    let records = transfer_records(index, zone, hickory_proto::rr::RecordType::AXFR, None);
    let serial = soa_serial(&records[0]).unwrap();
    (serial, records.iter().filter(|r| soa_serial(r).is_none()).filter_map(super::journal::to_rr).collect())
}

/// AXFRs taken while the writer publishes (name by name, in several chunks per recompute) are
/// each of exactly one serial: an IXFR from that serial applies to it exactly and gives the
/// current zone. Without the journal's gate, a transfer taken mid-recompute carries part of the
/// next serial's changes under the old serial, and the IXFR cannot apply.
#[test]
fn transfers_during_churn_are_each_of_one_serial() {
    let mut f = Fixture::new();
    f.index().set_ready(true);
    f.apply(service("ns-0", "svc-0", ServiceKind::Headless));
    f.apply(service("ns-0", "svc-1", ServiceKind::Headless));
    let index = Arc::clone(f.pipeline.index());
    let churn = std::thread::spawn(move || {
        for i in 0..400 {
            for svc in ["svc-0", "svc-1"] {
                let eps = (0..4)
                    .map(|k| {
                        endpoint(
                            &format!("10.{}.{}.{}", svc.len() + k, i % 9, k + 1),
                            Some(["pod-0", "pod-1", "pod-2", "pod-3"][k]),
                            true,
                        )
                    })
                    .collect();
                f.apply(slice("ns-0", &format!("slice-{svc}"), svc, eps));
            }
        }
    });
    let mut taken = Vec::new();
    while !churn.is_finished() {
        taken.push(axfr(&index, "cluster.local."));
    }
    churn.join().unwrap();
    let (now_serial, now) = axfr(&index, "cluster.local.");
    let mut checked = 0;
    for (serial, state) in taken {
        if serial == now_serial {
            assert_eq!(state, now);
            continue;
        }
        let answer = transfer_records(&index, "cluster.local.", hickory_proto::rr::RecordType::IXFR, Some(serial));
        if answer.get(1).and_then(soa_serial) != Some(serial) {
            continue; // no longer in the journal: the whole zone
        }
        assert_eq!(apply_ixfr(state, &answer).map(|s| s == now), Ok(true), "IXFR from {serial}");
        checked += 1;
    }
    assert!(checked > 0, "no transfer taken during the churn is still in the journal");
}

proptest! {
    /// Malformed transfer requests (a valid IXFR with bytes changed, cut short or extended) get
    /// an answer or nothing, never a panic, over TCP and UDP.
    #[test]
    fn malformed_transfer_requests_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        use hickory_proto::op::{Message, MessageType, OpCode, Query};
        use hickory_proto::rr::rdata::SOA;
        use hickory_proto::rr::{Name as HName, RData, Record, RecordType};
        let f = Fixture::new();
        f.index().set_ready(true);
        let apex = HName::from_ascii("cluster.local.").unwrap();
        let mut request = Message::new(7, MessageType::Query, OpCode::Query);
        request.add_query(Query::query(apex.clone(), RecordType::IXFR));
        let soa = SOA::new(apex.clone(), apex.clone(), f.index().serial().wrapping_sub(1), 0, 0, 0, 0);
        request.add_authority(Record::from_rdata(apex, 0, RData::SOA(soa)));
        let mut bytes = request.to_vec().unwrap();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        bytes.extend(extra);
        let acl = crate::dns::transfer::TransferAcl::new(vec!["127.0.0.1/32".parse().unwrap()]);
        let policy = crate::dns::finish::Policy::new(1232);
        for message in crate::dns::transfer::respond(f.index(), &bytes, [127, 0, 0, 1].into(), &acl, &policy) {
            prop_assert!(message.len() <= MAX_MESSAGE);
        }
        let mut out = vec![0u8; MAX_MESSAGE];
        let _ = crate::dns::transfer::ixfr_over_udp(f.index(), &bytes, Some([127, 0, 0, 1].into()), &acl, &policy, &mut out);
    }
}

/// A zone's serial moves only with its own changes: its IXFR has one step per change of its own
/// (not a SOA pair per change elsewhere), and a zone that did not change is current.
#[test]
fn a_reverse_zone_ixfr_has_one_step_per_change_of_its_own() {
    use hickory_proto::rr::RecordType;
    let mut f = Fixture::new();
    f.index().set_ready(true);
    let zone_id = |f: &Fixture, zone: &str| f.index().zone_of(Name::parse(zone).unwrap().as_wire()).unwrap();
    let ip6 = f.index().zone_serial(zone_id(&f, "ip6.arpa"));
    f.apply(service("ns-0", "svc-0", ServiceKind::Headless));
    f.apply(slice("ns-0", "slice-0", "svc-0", vec![endpoint("10.0.0.1", Some("pod-0"), true)]));
    let (before, reverse) = axfr(f.index(), "in-addr.arpa.");
    let external = |n: &str| service("ns-0", n, ServiceKind::ExternalName(Name::parse("example.com").unwrap()));
    assert!(f.apply(external("svc-1")));
    assert!(f.apply(slice("ns-0", "slice-0", "svc-0", vec![endpoint("10.0.0.2", Some("pod-0"), true)])));
    let changed = f.index().zone_serial(zone_id(&f, "in-addr.arpa"));
    assert!(f.apply(external("svc-2")));
    assert_eq!(f.index().zone_serial(zone_id(&f, "in-addr.arpa")), changed, "svc-2 has no PTR");
    assert_ne!(f.index().serial(), changed);
    let answer = transfer_records(f.index(), "in-addr.arpa.", RecordType::IXFR, Some(before));
    let serials: Vec<u32> = answer.iter().filter_map(soa_serial).collect();
    assert_eq!(serials, [changed, before, changed, changed], "{answer:?}");
    assert_eq!(apply_ixfr(reverse, &answer), Ok(axfr(f.index(), "in-addr.arpa.").1));
    // A zone that did not change at all keeps its serial: a client there is current.
    assert_eq!(f.index().zone_serial(zone_id(&f, "ip6.arpa")), ip6);
    let answer = transfer_records(f.index(), "ip6.arpa.", RecordType::IXFR, Some(ip6));
    assert_eq!(answer.iter().filter_map(soa_serial).collect::<Vec<_>>(), [ip6]);
}

/// A file's initial load sizes the index's map from its objects: the estimate must stay close to
/// the names the records make, or the map grows on the way all the same (too low) or keeps empty
/// slots for good (too high).
#[test]
fn the_name_estimate_is_the_names_the_objects_publish() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples/cluster.yaml")).unwrap();
    let mut objects = crate::source::file::parse_manifests(&example, std::path::Path::new("cluster.yaml")).unwrap();
    // The load benchmark's shape: headless Services of StatefulSet Pods, each on its own /24.
    for i in 0..300 {
        let (ns, svc) = (format!("ns-{}", i % 10), format!("svc-{i}"));
        objects.push(service(&ns, &svc, ServiceKind::Headless));
        let ip = |p: usize| format!("10.{}.{}.{p}", i / 256, i % 256);
        let endpoints = (0..10).map(|p| endpoint(&ip(p), Some(&format!("web-{p}")), true)).collect();
        objects.push(slice(&ns, &format!("{svc}-abcde"), &svc, endpoints));
    }
    let estimate = super::records::name_estimate(&objects, &cfg());
    let mut pipeline = Pipeline::with_capacity(cfg(), estimate);
    pipeline.apply_batch(std::time::Instant::now(), objects.into_iter().map(Event::Apply));
    let names = pipeline.index().tracked();
    assert!(names > 7_000, "{names} names");
    assert!(estimate.abs_diff(names) * 100 <= names, "estimate {estimate}, names {names}");
}
