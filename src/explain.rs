//! `headless-dns explain NAME [TYPE]`: why a name answers what it answers.
//!
//! "Why does web-1 not resolve?" takes four `kubectl get`s and some knowledge of the DNS
//! specification. The running server knows the whole chain: the current answer, the Service, each
//! EndpointSlice and endpoint with its conditions and Pod, which endpoints were left out and why,
//! the TTL and the SOA serial. `/explain?name=…&type=…` renders it; the `explain` subcommand asks a
//! server for it.

use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name as HName, RecordType};
use parking_lot::RwLock;

use crate::cluster::mcs::ImportKind;
use crate::cluster::object::{Endpoint, ServiceKind, Slice};
use crate::cluster::{Model, ObjKey};
use crate::dns::grammar::{ClusterName, Labels, reverse_ip};
use crate::dns::name::{Name, dashed_ip};
use crate::dns::proto::{DEFAULT_MAX_UDP, MAX_MESSAGE};
use crate::dns::{Responder, Transport};
use crate::index::{Index, RecordConfig};

/// Why a name could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name is not a domain name.
    #[error("not a domain name: {0}")]
    Name(String),
    /// The type is not a record type.
    #[error("not a record type: {0}")]
    Type(String),
}

/// Explains names against the live model and index.
pub struct Explainer {
    model: Arc<RwLock<Model>>,
    responder: Responder,
    cfg: RecordConfig,
}

impl Explainer {
    /// An explainer over the server's model and index.
    pub fn new(model: Arc<RwLock<Model>>, index: Arc<Index>, cfg: RecordConfig) -> Explainer {
        Explainer { model, responder: Responder::new(index, DEFAULT_MAX_UDP), cfg }
    }

    /// The explanation of `name` for `rtype`, as text.
    pub fn explain(&self, name: &str, rtype: &str) -> Result<String, Error> {
        let qname = HName::from_ascii(name).map_err(|_| Error::Name(name.to_string()))?;
        let qname = if qname.is_fqdn() {
            qname
        } else {
            HName::from_ascii(format!("{name}.")).map_err(|_| Error::Name(name.into()))?
        };
        let qtype: RecordType = rtype.to_ascii_uppercase().parse().map_err(|_| Error::Type(rtype.to_string()))?;
        let mut out = String::new();

        // The answer, through the query path itself (over "TCP", so nothing is truncated).
        let mut query = Message::new(1, MessageType::Query, OpCode::Query);
        query.add_query(Query::query(qname.clone(), qtype));
        let mut buf = vec![0u8; MAX_MESSAGE];
        let packet = query.to_vec().map_err(|_| Error::Name(name.into()))?;
        let _ = writeln!(out, "{qname} {qtype}");
        match self.responder.respond(&packet, Transport::Tcp, &mut buf).and_then(|n| Message::from_vec(&buf[..n]).ok())
        {
            Some(resp) => {
                let _ = writeln!(
                    out,
                    "  answer: {} ({} answer, {} authority records), SOA serial {}",
                    resp.metadata.response_code,
                    resp.answers.len(),
                    resp.authorities.len(),
                    self.responder.index().serial()
                );
                for r in resp.answers.iter().chain(&resp.authorities) {
                    let _ = writeln!(out, "    {} {} IN {} {}", r.name, r.ttl, r.record_type(), r.data);
                }
            }
            None => {
                let _ = writeln!(out, "  answer: none");
            }
        }

        let lower = Name::parse(&qname.to_ascii()).map_err(|_| Error::Name(name.into()))?;
        let model = self.model.read();
        if let Some(zone) = self.cfg.clusterset.as_ref().filter(|z| lower.is_within(z)) {
            let prefix = &lower.as_wire()[..lower.as_wire().len() - zone.as_wire().len()];
            let kind = Labels::of(prefix).map_or(ClusterName::Other, |labels| labels.classify_clusterset());
            explain_cluster_set_name(&mut out, &model, kind, &self.cfg);
            return Ok(out);
        }
        let Some(zone) = self.cfg.zones.iter().find(|z| lower.is_within(z)) else {
            match reverse_ip(lower.as_wire()) {
                Some(ip) => explain_ip(&mut out, &model, ip),
                None => {
                    let _ = writeln!(
                        out,
                        "  outside the cluster zones {:?}: forwarded upstream, or REFUSED with --upstream none",
                        self.cfg.zones.iter().map(Name::to_dotted).collect::<Vec<_>>()
                    );
                }
            }
            return Ok(out);
        };
        let prefix = &lower.as_wire()[..lower.as_wire().len() - zone.as_wire().len()];
        let kind = Labels::of(prefix).map_or(ClusterName::Other, |labels| labels.classify());
        let text = |label: &[u8]| String::from_utf8_lossy(label).into_owned();
        let key = |ns: &[u8], svc: &[u8]| ObjKey::new(text(ns).as_str(), text(svc).as_str());
        match kind {
            ClusterName::Service { svc, ns } => explain_service(&mut out, &model, &key(ns, svc), None, &self.cfg),
            ClusterName::Endpoint { endpoint, svc, ns } => {
                explain_service(&mut out, &model, &key(ns, svc), Some(&text(endpoint)), &self.cfg)
            }
            ClusterName::Srv { port, proto, svc, ns } => {
                let (port, proto) = (text(port), text(proto));
                let _ = writeln!(out, "  SRV name for port {port} over {proto}: only named ports have SRV records");
                explain_service(&mut out, &model, &key(ns, svc), None, &self.cfg);
            }
            ClusterName::Namespace { ns } => {
                let ns = text(ns);
                let _ = writeln!(
                    out,
                    "  namespace name: exists (NODATA) when the Namespace object or any Service in it exists; Namespace {ns}: {}",
                    if model.has_namespace(&ns) { "exists" } else { "not known" }
                );
            }
            ClusterName::Pod { label, ns, .. } => {
                let (ip, ns) = (text(label), text(ns));
                let _ = writeln!(out, "  Pod name for address {ip} in namespace {ns}; --pods is {:?}", self.cfg.pods);
            }
            ClusterName::Fixed => {
                let _ = writeln!(out, "  a fixed name of the zone {zone}");
            }
            ClusterName::PodNamespace { .. }
            | ClusterName::Cluster { .. }
            | ClusterName::ClusterEndpoint { .. }
            | ClusterName::Other => {
                let _ = writeln!(out, "  not a name the Kubernetes DNS schema defines under {zone}: NXDOMAIN");
            }
        }
        Ok(out)
    }
}

fn explain_service(out: &mut String, model: &Model, key: &ObjKey, endpoint: Option<&str>, cfg: &RecordConfig) {
    let Some(svc) = model.service(key) else {
        let _ = writeln!(out, "  Service {key}: not known (no such Service in the API, or filtered out): NXDOMAIN");
        return;
    };
    let (kind, ttl) = match &svc.kind {
        ServiceKind::Headless => {
            ("headless (clusterIP: None): answers the ready endpoints".to_string(), cfg.ttl_headless)
        }
        ServiceKind::ClusterIp(ips) => (format!("ClusterIP {ips:?}"), cfg.ttl_clusterip),
        ServiceKind::ExternalName(target) => (format!("ExternalName → CNAME {target}"), cfg.ttl),
    };
    let ports: Vec<String> = svc
        .ports
        .iter()
        .map(|p| format!("{}/{}/{:?}", p.name.as_deref().unwrap_or("(unnamed)"), p.port, p.protocol))
        .collect();
    let _ = writeln!(out, "  Service {key}: {kind}; ports {ports:?}; TTL {ttl}s");
    let slices: Vec<&Slice> = model.slices_of(key).collect();
    if slices.is_empty() {
        let _ = writeln!(out, "  no EndpointSlice is labelled kubernetes.io/service-name={}", key.name);
    }
    let mut matched = false;
    for slice in &slices {
        matched |= explain_slice(out, slice, "", endpoint);
    }
    if let Some(e) = endpoint
        && !matched
    {
        let _ = writeln!(
            out,
            "  no endpoint named {e:?} in any slice of Service {key} (hostname, or dashed IP when it has none): NXDOMAIN"
        );
    }
}

/// A slice's endpoints, each with what it gets; returns whether `endpoint` (a name asked for) is
/// among them.
fn explain_slice(out: &mut String, slice: &Slice, from: &str, endpoint: Option<&str>) -> bool {
    let _ = writeln!(out, "  EndpointSlice {}{from} ({} endpoints):", slice.key, slice.endpoints.len());
    let mut matched = false;
    for ep in &slice.endpoints {
        for &ip in &ep.addresses {
            let label = ep.hostname().map(str::to_string).unwrap_or_else(|| dashed_ip(ip));
            let this = endpoint.is_some_and(|e| e == label);
            matched |= this;
            let verdict = verdict(ep, this, endpoint.is_some());
            let _ = writeln!(
                out,
                "    {ip} name={label} pod={} ready={} serving={} terminating={} → {verdict}",
                ep.pod_name().unwrap_or("-"),
                ep.ready,
                ep.serving,
                ep.terminating
            );
        }
    }
    matched
}

/// A name of the cluster-set zone: its ServiceImport and the cluster-set EndpointSlices (only
/// those of the cluster asked for, for a name below a cluster ID).
fn explain_cluster_set_name(out: &mut String, model: &Model, kind: ClusterName<'_>, cfg: &RecordConfig) {
    let text = |label: &[u8]| String::from_utf8_lossy(label).into_owned();
    let (svc, ns, cluster, endpoint) = match kind {
        ClusterName::Service { svc, ns } | ClusterName::Srv { svc, ns, .. } => (svc, ns, None, None),
        ClusterName::Cluster { cluster, svc, ns } => (svc, ns, Some(text(cluster)), None),
        ClusterName::ClusterEndpoint { endpoint, cluster, svc, ns } => {
            (svc, ns, Some(text(cluster)), Some(text(endpoint)))
        }
        ClusterName::Fixed | ClusterName::Namespace { .. } => {
            let _ = writeln!(
                out,
                "  a fixed name or a namespace of the cluster-set zone (NODATA while names sit below it)"
            );
            return;
        }
        _ => {
            let _ = writeln!(out, "  not a name the Multicluster DNS specification defines: NXDOMAIN");
            return;
        }
    };
    let key = ObjKey::new(text(ns).as_str(), text(svc).as_str());
    let Some(import) = model.import(&key) else {
        let _ = writeln!(
            out,
            "  ServiceImport {key}: not known (no such ServiceImport, or its CRD is not installed): NXDOMAIN"
        );
        return;
    };
    let (kind, ttl) = match &import.kind {
        ImportKind::Headless => {
            ("Headless: answers the ready endpoints of every cluster".to_string(), cfg.ttl_headless)
        }
        ImportKind::ClusterSetIp(ips) => {
            (format!("ClusterSetIP {ips:?}: no per-cluster names (§2.3.4)"), cfg.ttl_clusterip)
        }
    };
    let _ = writeln!(out, "  ServiceImport {key}: {kind}; TTL {ttl}s");
    let slices: Vec<_> =
        model.cluster_slices_of(&key).filter(|s| cluster.as_ref().is_none_or(|c| *c == *s.cluster)).collect();
    if slices.is_empty() {
        let _ = writeln!(
            out,
            "  no EndpointSlice is labelled multicluster.kubernetes.io/service-name={}{}",
            key.name,
            cluster.map(|c| format!(" from cluster {c}")).unwrap_or_default()
        );
    }
    for s in slices {
        explain_slice(out, &s.slice, &format!(" from cluster {}", s.cluster), endpoint.as_deref());
    }
}

fn verdict(ep: &Endpoint, this: bool, asked_for_endpoint: bool) -> &'static str {
    match (asked_for_endpoint, this, ep.ready) {
        (true, false, _) => "another name",
        (_, _, true) => "in the answer",
        (_, _, false) if ep.terminating => "left out: terminating (not ready)",
        (_, _, false) => "left out: not ready",
    }
}

fn explain_ip(out: &mut String, model: &Model, ip: IpAddr) {
    let _ = writeln!(out, "  reverse name of {ip}");
    let mut found = false;
    for (owner, cluster, slice, ep) in model.endpoints_with(ip) {
        found = true;
        let owner = match cluster {
            None => format!("Service {owner}"),
            Some(cluster) => format!("ServiceImport {owner} from cluster {cluster}"),
        };
        let _ = writeln!(
            out,
            "    endpoint of {owner} in EndpointSlice {} (ready={}, hostname={:?})",
            slice.key,
            ep.ready,
            ep.hostname()
        );
    }
    for (owner, import) in model.services_with_cluster_ip(ip) {
        found = true;
        let what = if import { "clusterset IP of ServiceImport" } else { "cluster IP of Service" };
        let _ = writeln!(out, "    {what} {owner}");
    }
    if !found {
        let _ = writeln!(out, "    no Service or endpoint has this address: NXDOMAIN");
    }
}
