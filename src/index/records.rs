//! Record building: what names and records an [`Owner`] implies (Kubernetes DNS-Based Service
//! Discovery 1.1.0, plus what CoreDNS's `kubernetes` plugin answers beyond it).
//!
//! This is pure: the model and the configuration in, a sorted list of `(name, records)` out.
//! The writer diffs it against what the owner published before.

mod clusterset;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use smallvec::SmallVec;

use crate::cluster::object::{Endpoint, Object, Port, ServiceKind, Slice};
use crate::cluster::{Model, ObjKey, Owner};
use crate::dns::name::{Name, dashed_ip, reverse_name};

/// The schema version `dns-version.<zone>` answers (spec §2.2).
pub const SCHEMA_VERSION: &str = "1.1.0";
/// The TTL of `dns-version.<zone>`, as in the spec's example and CoreDNS.
pub const SCHEMA_VERSION_TTL: u32 = 28800;

/// `--pods`: whether and how `<a-b-c-d>.<ns>.pod.<zone>` is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PodMode {
    /// No Pod names (NXDOMAIN), as CoreDNS's default.
    #[default]
    Disabled,
    /// Any well-formed dashed IP in any namespace answers with that IP, unchecked (CoreDNS
    /// `pods insecure`, kube-dns's behaviour).
    Insecure,
    /// Only IPs of running Pods in that namespace (needs Pods from the source).
    Verified,
}

/// `--ptr`: which endpoints get reverse (PTR) records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PtrMode {
    /// Every ready endpoint of every Service, one PTR per Service that selects the address
    /// (CoreDNS; kubernetes/kubernetes#127716 shows users rely on it).
    #[default]
    All,
    /// Only cluster IPs and ready endpoints that have a hostname (spec §2.4.3).
    HostnameOnly,
}

/// What record building needs to know.
#[derive(Clone, Debug)]
pub struct RecordConfig {
    /// Served cluster zones, e.g. `cluster.local`. PTR targets use the first.
    pub zones: Vec<Name>,
    /// Default TTL.
    pub ttl: u32,
    /// TTL of headless Service names, their endpoint names, SRV and PTR.
    pub ttl_headless: u32,
    /// TTL of ClusterIP Service names, their SRV and PTR.
    pub ttl_clusterip: u32,
    /// TTL of negative answers (the SOA minimum).
    pub negative_ttl: u32,
    /// Pod names.
    pub pods: PodMode,
    /// Reverse records for endpoints.
    pub ptr: PtrMode,
    /// Name an endpoint without a hostname by its Pod's name rather than its dashed IP (CoreDNS
    /// `endpoint_pod_names`).
    pub endpoint_pod_names: bool,
    /// No endpoint records: headless Services and endpoint names are NXDOMAIN, endpoints get no
    /// PTR (CoreDNS `noendpoints`).
    pub no_endpoints: bool,
    /// A ClusterIP Service without a ready endpoint is NXDOMAIN, so a client's search goes on
    /// (CoreDNS `ignore empty_service`).
    pub ignore_empty_service: bool,
    /// A Service is served only while its Namespace object is (`--namespace-labels`: the sources
    /// drop Namespaces whose labels do not match).
    pub namespace_gates_services: bool,
    /// `--multicluster-zone`: the zone ServiceImports are served in (`clusterset.local`), if any.
    pub clusterset: Option<Name>,
}

impl RecordConfig {
    /// `cluster.local`, TTL 5, negative TTL 1, CoreDNS defaults otherwise.
    pub fn default_for(zones: Vec<Name>) -> Self {
        RecordConfig {
            zones,
            ttl: 5,
            ttl_headless: 5,
            ttl_clusterip: 5,
            negative_ttl: 1,
            pods: PodMode::Disabled,
            ptr: PtrMode::All,
            endpoint_pod_names: false,
            no_endpoints: false,
            ignore_empty_service: false,
            namespace_gates_services: false,
            clusterset: None,
        }
    }
}

/// One record's data. The derived order sorts records of one type together, which is the order
/// they are answered in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rdata {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    Aaaa(Ipv6Addr),
    /// Alias.
    Cname(Name),
    /// Name server.
    Ns(Name),
    /// Reverse pointer.
    Ptr(Name),
    /// Service location; priority 0, weight decided when the RRset is built.
    Srv {
        /// Port number.
        port: u16,
        /// Target host.
        target: Name,
    },
    /// One character string.
    Txt(Arc<str>),
}

impl Rdata {
    /// The address record for an IP.
    pub fn addr(ip: IpAddr) -> Rdata {
        match ip {
            IpAddr::V4(v4) => Rdata::A(v4),
            IpAddr::V6(v6) => Rdata::Aaaa(v6),
        }
    }
}

/// The records one owner puts at one name. An empty `rdata` still makes the name exist
/// (an empty non-terminal such as `svc.<zone>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rrs {
    /// TTL for all of them.
    pub ttl: u32,
    /// Sorted, without duplicates.
    pub rdata: SmallVec<[Rdata; 1]>,
}

/// An owner's names, sorted by name, each once.
pub type OwnerRecords = Vec<(Name, Rrs)>;

/// Collects an owner's records, then sorts and groups them once. (A `BTreeMap` keyed by name
/// searched the tree on every record: a third of the cost of an EndpointSlice update.)
#[derive(Default)]
pub(super) struct Builder {
    /// `(name, ttl, rdata)`; no rdata where a name only has to exist.
    records: Vec<(Name, u32, Option<Rdata>)>,
}

impl Builder {
    pub(super) fn add(&mut self, name: Name, ttl: u32, rdata: Rdata) {
        self.records.push((name, ttl, Some(rdata)));
    }

    pub(super) fn touch(&mut self, name: Name, ttl: u32) {
        self.records.push((name, ttl, None));
    }

    fn finish(mut self) -> OwnerRecords {
        // Most records of a Service sit at its own name: clones of one name compare by pointer.
        // Names first, then each name's records among themselves, each sort with a plain
        // comparator: 3 % fewer instructions per update than one sort by (name, record).
        self.records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut runs: Vec<usize> = Vec::new();
        for run in self.records.chunk_by_mut(|a, b| a.0 == b.0) {
            if run.len() > 1 {
                run.sort_unstable_by(|a, b| a.2.cmp(&b.2));
            }
            runs.push(run.len());
        }
        let mut out: OwnerRecords = Vec::with_capacity(runs.len());
        let mut records = self.records.into_iter();
        for run in runs {
            let mut group = records.by_ref().take(run);
            let Some((name, mut ttl, first)) = group.next() else { break };
            let mut rdata: SmallVec<[Rdata; 1]> = SmallVec::with_capacity(run);
            rdata.extend(first);
            for (_, t, r) in group {
                ttl = ttl.min(t);
                if let Some(r) = r
                    && rdata.last() != Some(&r)
                {
                    rdata.push(r);
                }
            }
            out.push((name, Rrs { ttl, rdata }));
        }
        out
    }
}

/// About how many names `objects` publish, for sizing the index's map before an initial load:
/// a map grown from empty moves every name a dozen times on the way (and reads each name's
/// bytes again to rehash it), 6 % of the large shape's start-up. Each name is counted as
/// [`owner_records`] makes it; the empty non-terminals of the reverse zones are the distinct
/// parents of the IPv4 addresses (`c.b.a.10.in-addr.arpa` needs `b.a.10…` and `a.10…`).
pub fn name_estimate(objects: &[Object], cfg: &RecordConfig) -> usize {
    let (mut forward, mut reverse) = (0, 0);
    let mut parents: std::collections::HashSet<u32, foldhash::fast::RandomState> = Default::default();
    for object in objects {
        match object {
            Object::Namespace(_) => forward += 1,
            // The Service's name, and per port its SRV name and `_<proto>` non-terminal.
            Object::Service(svc) => {
                forward += 1 + 2 * svc.ports.len();
                if let ServiceKind::ClusterIp(ips) = &svc.kind {
                    reverse += ips.len();
                }
            }
            // Per address an endpoint name and a PTR.
            Object::Slice(slice) => {
                for ip in slice.endpoints.iter().flat_map(|e| e.addresses.iter()) {
                    forward += 1;
                    reverse += 1;
                    if let IpAddr::V4(v4) = ip {
                        let n = u32::from(*v4);
                        parents.insert(n >> 8);
                        parents.insert((n >> 16) | 1 << 31);
                    }
                }
            }
            _ => {}
        }
    }
    forward * cfg.zones.len().max(1) + reverse + parents.len()
}

/// Computes the records of `owner` from the model.
pub fn owner_records(owner: &Owner, model: &Model, cfg: &RecordConfig) -> OwnerRecords {
    let mut b = Builder::default();
    match owner {
        Owner::Apex => apex_records(&mut b, cfg),
        Owner::Namespace(ns) => {
            if model.has_namespace(ns) {
                for zone in &cfg.zones {
                    if let Ok(name) = zone.prepend(&[ns, "svc"]) {
                        b.touch(name, cfg.ttl);
                    }
                }
            }
        }
        Owner::Service(key) => service_records(&mut b, key, model, cfg),
        Owner::Import(key) => clusterset::import_records(&mut b, key, model, cfg),
        Owner::Pod(key) => {
            if cfg.pods == PodMode::Verified
                && let Some(pod) = model.pod(key)
            {
                for &ip in &pod.ips {
                    for zone in &cfg.zones {
                        if let Ok(name) = zone.prepend(&[&dashed_ip(ip), &key.ns, "pod"]) {
                            b.add(name, cfg.ttl, Rdata::addr(ip));
                        }
                    }
                }
            }
        }
        // The writer reads a secondary's RRsets from its copy (see `Writer::records_of`).
        Owner::Copied(..) => {}
    }
    b.finish()
}

/// The fixed names of every zone: NS at the apex, `dns-version` TXT, and the empty
/// non-terminals `svc.<zone>` and `pod.<zone>` (NODATA, as CoreDNS answers them); the cluster-set
/// zone has the same apex with its own schema version (MCS DNS specification §2.2) and no Pod
/// names. The SOA is not here: its serial changes with every update, so the server writes it per
/// query.
fn apex_records(b: &mut Builder, cfg: &RecordConfig) {
    let cluster = cfg.zones.iter().map(|zone| (zone, SCHEMA_VERSION, &["svc", "pod"][..]));
    let clusterset = cfg.clusterset.iter().map(|zone| (zone, crate::cluster::mcs::SCHEMA_VERSION, &["svc"][..]));
    for (zone, version, fixed) in cluster.chain(clusterset) {
        if let Ok(ns) = zone.prepend(&["ns", "dns"]) {
            b.add(zone.clone(), cfg.ttl, Rdata::Ns(ns));
        }
        if let Ok(name) = zone.child("dns-version") {
            b.add(name, SCHEMA_VERSION_TTL, Rdata::Txt(Arc::from(version)));
        }
        for label in fixed {
            if let Ok(name) = zone.child(label) {
                b.touch(name, cfg.ttl);
            }
        }
    }
    if let Some(first) = cfg.zones.first()
        && let Ok(ns) = first.prepend(&["ns", "dns"])
    {
        for reverse in reverse_zones() {
            b.add(reverse, cfg.ttl, Rdata::Ns(ns.clone()));
        }
    }
}

/// The reverse zones served alongside the cluster zones.
pub fn reverse_zones() -> [Name; 2] {
    [
        Name::from_labels(["in-addr", "arpa"]).expect("static name"),
        Name::from_labels(["ip6", "arpa"]).expect("static name"),
    ]
}

/// The name of an endpoint under its Service: its hostname, else (with `pod_names`) its Pod's
/// name, else its dashed IP. A Pod name is a DNS subdomain: one with dots is not a label, and the
/// dashed IP is used (as a hostname must be a label).
pub(super) fn endpoint_label(ep: &Endpoint, ip: IpAddr, pod_names: bool) -> std::borrow::Cow<'_, str> {
    match ep.hostname() {
        Some(h) => std::borrow::Cow::Borrowed(h),
        None => match ep.pod_name().filter(|p| pod_names && !p.contains('.')) {
            Some(pod) => std::borrow::Cow::Borrowed(pod),
            None => std::borrow::Cow::Owned(dashed_ip(ip)),
        },
    }
}

pub(super) fn srv_name(service: &Name, port: &Port) -> Option<Name> {
    let name = port.name.as_deref()?;
    service.prepend(&[&format!("_{name}"), port.protocol.srv_label()]).ok()
}

/// The records of a virtual IP Service at `base` (spec §2.3.1–2.3.3; a ClusterSetIP import's
/// the same, multicluster spec §2.3.1–2.3.3): its addresses, a PTR to it for each (with `ptr`),
/// and per named port an SRV to it, at `_<port>._<proto>.<base>` and at `base` itself (CoreDNS).
pub(super) fn virtual_ip_records(b: &mut Builder, base: &Name, ips: &[IpAddr], ports: &[Port], ttl: u32, ptr: bool) {
    for &ip in ips {
        b.add(base.clone(), ttl, Rdata::addr(ip));
        if ptr {
            b.add(reverse_name(ip), ttl, Rdata::Ptr(base.clone()));
        }
    }
    for port in ports {
        if let Some(name) = srv_name(base, port) {
            let srv = Rdata::Srv { port: port.port, target: base.clone() };
            b.add(name, ttl, srv.clone());
            b.add(base.clone(), ttl, srv);
        }
    }
}

fn service_records(b: &mut Builder, key: &ObjKey, model: &Model, cfg: &RecordConfig) {
    let Some(svc) = model.service(key) else {
        return;
    };
    if cfg.namespace_gates_services && !model.has_namespace(&key.ns) {
        return;
    }
    // `noendpoints`: as if no Service had endpoints (CoreDNS stops watching them).
    let slices: Vec<&Slice> = if cfg.no_endpoints { Vec::new() } else { model.slices_of(key).collect() };
    if cfg.ignore_empty_service
        && matches!(svc.kind, ServiceKind::ClusterIp(_))
        && !slices.iter().any(|s| s.endpoints.iter().any(|e| e.ready && !e.addresses.is_empty()))
    {
        return;
    }
    let (headless, ttl) = match &svc.kind {
        ServiceKind::Headless => (true, cfg.ttl_headless),
        ServiceKind::ClusterIp(_) => (false, cfg.ttl_clusterip),
        ServiceKind::ExternalName(_) => (false, cfg.ttl),
    };
    let ptr_zone = cfg.zones.first();
    for (zone_index, zone) in cfg.zones.iter().enumerate() {
        let Ok(base) = zone.prepend(&[&key.name, &key.ns, "svc"]) else {
            tracing::warn!(service = %key, "Service name is too long for a DNS name; skipping it");
            return;
        };
        let with_ptr = zone_index == 0 && ptr_zone.is_some();

        match &svc.kind {
            // Spec §2.5: a CNAME and nothing else, not even endpoint names (CoreDNS skips them).
            ServiceKind::ExternalName(target) => {
                b.add(base, ttl, Rdata::Cname(target.clone()));
                continue;
            }
            // Spec §2.3.1–2.3.3: the cluster IPs, SRV per named port targeting the Service name,
            // PTR for each cluster IP.
            ServiceKind::ClusterIp(ips) => virtual_ip_records(b, &base, ips, &svc.ports, ttl, with_ptr),
            ServiceKind::Headless => {}
        }

        // Spec §2.4.1–2.4.3 for headless Services; CoreDNS also answers endpoint names for
        // ClusterIP Services. Only ready endpoints count; "ready" is the EndpointSlice
        // condition, which already honours publishNotReadyAddresses.
        let endpoint_ttl = cfg.ttl_headless;
        for slice in &slices {
            // The slice's SRV names, built once rather than once per endpoint.
            let srv_names: SmallVec<[(u16, Name); 2]> = if headless {
                slice.ports.iter().filter_map(|p| Some((p.port, srv_name(&base, p)?))).collect()
            } else {
                SmallVec::new()
            };
            for ep in slice.endpoints.iter().filter(|e| e.ready) {
                for &ip in &ep.addresses {
                    let label = endpoint_label(ep, ip, cfg.endpoint_pod_names);
                    let Ok(ep_name) = base.child(&label) else {
                        continue;
                    };
                    b.add(ep_name.clone(), endpoint_ttl, Rdata::addr(ip));
                    if headless {
                        b.add(base.clone(), ttl, Rdata::addr(ip));
                        for (port, name) in &srv_names {
                            let srv = Rdata::Srv { port: *port, target: ep_name.clone() };
                            b.add(name.clone(), ttl, srv.clone());
                            b.add(base.clone(), ttl, srv);
                        }
                    }
                    let wants_ptr = match cfg.ptr {
                        PtrMode::All => true,
                        PtrMode::HostnameOnly => headless && ep.hostname().is_some(),
                    };
                    if with_ptr && wants_ptr {
                        b.add(reverse_name(ip), endpoint_ttl, Rdata::Ptr(ep_name));
                    }
                }
            }
        }
    }
}
