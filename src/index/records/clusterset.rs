//! Record building for the cluster-set zone (`--multicluster-zone`, `clusterset.local`): what a
//! ServiceImport and its cluster-set EndpointSlices imply, as the "Kubernetes DNS-Based
//! Multicluster Service Discovery" specification (KEP-1645 `specification.md`, schema 1.0.0)
//! defines them, in the shapes the cluster zone uses for the same things (TTLs, SRV weights and
//! glue, `--ptr`).
//!
//! ```text
//!  <svc>.<ns>.svc.<zone>                       ClusterSetIP: spec.ips; headless: ready endpoints, all clusters
//!  _<port>._<proto>.<svc>.<ns>.svc.<zone>      SRV: to <svc>… (ClusterSetIP); to each endpoint name (headless)
//!  <hostname>.<clusterid>.<svc>.<ns>.svc.<zone>  headless: that cluster's endpoint
//!  <clusterid>.<svc>.<ns>.svc.<zone>           no records (§2.4.4): an empty non-terminal while names sit below
//!  reverse names                               PTR, only where the cluster zone has none (§2.3.3, §2.4.3)
//! ```

use super::{Builder, PtrMode, Rdata, RecordConfig, endpoint_label, srv_name, virtual_ip_records};
use crate::cluster::mcs::ImportKind;
use crate::cluster::{Model, ObjKey};
use crate::dns::name::reverse_name;

/// The records of the ServiceImport `key` (none without `--multicluster-zone`).
///
/// PTR records are added for every address; the writer publishes them only at reverse names no
/// cluster-zone owner has records at (specification §2.3.3 and §2.4.3, "Limitations": "only one
/// `PTR` record may exist per IP address. For implementations of Multicluster DNS that use IPs
/// that already have a `PTR` record assigned from the cluster-local DNS specification, no further
/// `PTR` records are required").
pub(super) fn import_records(b: &mut Builder, key: &ObjKey, model: &Model, cfg: &RecordConfig) {
    let (Some(zone), Some(import)) = (&cfg.clusterset, model.import(key)) else {
        return;
    };
    let Ok(base) = zone.prepend(&[&key.name, &key.ns, "svc"]) else {
        tracing::warn!(import = %key, "ServiceImport name is too long for a DNS name; skipping it");
        return;
    };
    match &import.kind {
        // §2.3.1–2.3.3: the clusterset IPs, SRV per named port to the Service name (and, as the
        // cluster zone, all of them at the Service name), PTR. No name below the Service's:
        // §2.3.4, "ClusterSetIP Services should NOT have a record disambiguating to a single
        // cluster's backends".
        // Without IPs (not allocated yet) nothing: SRV records would point at a name without
        // addresses.
        ImportKind::ClusterSetIp(ips) if ips.is_empty() => {}
        ImportKind::ClusterSetIp(ips) => virtual_ip_records(b, &base, ips, &import.ports, cfg.ttl_clusterip, true),
        // §2.4.1–2.4.3: every ready endpoint of every cluster at the Service name (none ready: no
        // name, NXDOMAIN), each under `<hostname>.<clusterid>`, SRV per endpoint and named port
        // of its slice (the endpoint's own port numbers), PTR to the endpoint name.
        //
        // §2.4.4 says `<clusterid>.<svc>.<ns>.svc.<zone>` should have no record; while an
        // endpoint name sits below it, it is an empty non-terminal (NODATA): a name with a name
        // below it exists (RFC 1034 §3.1), and an NXDOMAIN for it would tell resolvers doing
        // NXDOMAIN cut (RFC 8020 §2) that the endpoint names below do not exist either.
        ImportKind::Headless => {
            let ttl = cfg.ttl_headless;
            for cs in model.cluster_slices_of(key) {
                let Ok(cluster) = base.child(&cs.cluster) else { continue };
                let srv_names: Vec<(u16, _)> =
                    cs.slice.ports.iter().filter_map(|p| Some((p.port, srv_name(&base, p)?))).collect();
                for ep in cs.slice.endpoints.iter().filter(|e| e.ready) {
                    for &ip in &ep.addresses {
                        let Ok(ep_name) = cluster.child(&endpoint_label(ep, ip, false)) else { continue };
                        b.add(ep_name.clone(), ttl, Rdata::addr(ip));
                        b.add(base.clone(), ttl, Rdata::addr(ip));
                        for (port, name) in &srv_names {
                            let srv = Rdata::Srv { port: *port, target: ep_name.clone() };
                            b.add(name.clone(), ttl, srv.clone());
                            b.add(base.clone(), ttl, srv);
                        }
                        if cfg.ptr == PtrMode::All || ep.hostname().is_some() {
                            b.add(reverse_name(ip), ttl, Rdata::Ptr(ep_name));
                        }
                    }
                }
            }
        }
    }
}
