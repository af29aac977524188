//! The Kubernetes DNS name grammar (spec 1.1.0), parsed in one place: the fast path's Pod names
//! and autopath check, the autopath search and `explain` all read names through [`Labels`].
//!
//! ```text
//!  <zone>, svc.<zone>, pod.<zone>, dns-version.<zone>      fixed names
//!  <ns>.svc.<zone>                                         a namespace (NODATA when it exists)
//!  <svc>.<ns>.svc.<zone>                                   a Service
//!  <hostname>.<svc>.<ns>.svc.<zone>                        an endpoint (hostname or dashed IP)
//!  _<port>._<proto>.<svc>.<ns>.svc.<zone>                  a named port (SRV)
//!  <a-b-c-d>.<ns>.pod.<zone>                               a Pod by address
//!  <d>.<c>.<b>.<a>.in-addr.arpa, <32 nibbles>.ip6.arpa     reverse names (PTR)
//! ```
//!
//! The cluster-set zone (`--multicluster-zone`, Multicluster DNS specification §2) has the same
//! shapes without Pod names, and one more level for endpoints, the cluster they are in
//! ([`Labels::classify_clusterset`]):
//!
//! ```text
//!  <hostname>.<clusterid>.<svc>.<ns>.svc.<zone>            an endpoint in one cluster
//!  <clusterid>.<svc>.<ns>.svc.<zone>                       no records (§2.4.4)
//! ```
//!
//! As CoreDNS's `parseRequest` (plugin/kubernetes/parse.go), but on lower-case wire bytes and
//! without allocating: the labels are borrowed from the name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::name::{MAX_NAME, parse_dashed_ip};

/// The most labels a name can have (each at least two bytes of a 255-byte name).
const MAX_LABELS: usize = MAX_NAME / 2;

/// The labels of a name below a zone, most specific first, borrowed from its wire bytes.
pub struct Labels<'a> {
    labels: [&'a [u8]; MAX_LABELS],
    len: usize,
}

/// What a name below a cluster zone is, by the grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterName<'a> {
    /// The apex, `svc.<zone>`, `pod.<zone>` or `dns-version.<zone>`.
    Fixed,
    /// `<ns>.svc.<zone>`.
    Namespace {
        /// The namespace.
        ns: &'a [u8],
    },
    /// `<svc>.<ns>.svc.<zone>`.
    Service {
        /// The Service.
        svc: &'a [u8],
        /// Its namespace.
        ns: &'a [u8],
    },
    /// `<hostname>.<svc>.<ns>.svc.<zone>`.
    Endpoint {
        /// The endpoint's hostname, or its dashed IP.
        endpoint: &'a [u8],
        /// The Service.
        svc: &'a [u8],
        /// Its namespace.
        ns: &'a [u8],
    },
    /// `_<port>._<proto>.<svc>.<ns>.svc.<zone>`.
    Srv {
        /// The port name, without its underscore.
        port: &'a [u8],
        /// The protocol, without its underscore.
        proto: &'a [u8],
        /// The Service.
        svc: &'a [u8],
        /// Its namespace.
        ns: &'a [u8],
    },
    /// `<ns>.pod.<zone>`.
    PodNamespace {
        /// The namespace.
        ns: &'a [u8],
    },
    /// `<a-b-c-d>.<ns>.pod.<zone>`.
    Pod {
        /// The address, if the label is a dashed IP.
        ip: Option<IpAddr>,
        /// The label as asked.
        label: &'a [u8],
        /// The namespace.
        ns: &'a [u8],
    },
    /// `<clusterid>.<svc>.<ns>.svc.<zone>`, in the cluster-set zone only: no records of its own
    /// (Multicluster DNS specification §2.4.4).
    Cluster {
        /// The cluster ID.
        cluster: &'a [u8],
        /// The ServiceImport.
        svc: &'a [u8],
        /// Its namespace.
        ns: &'a [u8],
    },
    /// `<hostname>.<clusterid>.<svc>.<ns>.svc.<zone>`, in the cluster-set zone only: an endpoint
    /// of a headless ServiceImport in one cluster (§2.4.1).
    ClusterEndpoint {
        /// The endpoint's hostname, or its dashed IP.
        endpoint: &'a [u8],
        /// The cluster ID.
        cluster: &'a [u8],
        /// The ServiceImport.
        svc: &'a [u8],
        /// Its namespace.
        ns: &'a [u8],
    },
    /// Anything else: not a name the schema defines.
    Other,
}

// === impl Labels ===

impl<'a> Labels<'a> {
    /// The labels of `prefix`, the wire bytes of a name before its zone (no root label). `None`
    /// if the bytes are not whole labels.
    pub fn of(prefix: &'a [u8]) -> Option<Labels<'a>> {
        let mut labels = Labels { labels: [&[]; MAX_LABELS], len: 0 };
        let mut at = 0;
        while at < prefix.len() {
            let len = prefix[at] as usize;
            let label = prefix.get(at + 1..at + 1 + len).filter(|_| len > 0)?;
            *labels.labels.get_mut(labels.len)? = label;
            labels.len += 1;
            at += 1 + len;
        }
        Some(labels)
    }

    /// The labels, most specific first.
    pub fn as_slice(&self) -> &[&'a [u8]] {
        &self.labels[..self.len]
    }

    /// What the name is, by the grammar.
    pub fn classify(&self) -> ClusterName<'a> {
        let srv_label = |l: &'a [u8]| l.strip_prefix(b"_").filter(|rest| !rest.is_empty());
        match *self.as_slice() {
            [] | [b"svc"] | [b"pod"] | [b"dns-version"] => ClusterName::Fixed,
            [ns, b"svc"] => ClusterName::Namespace { ns },
            [svc, ns, b"svc"] => ClusterName::Service { svc, ns },
            [endpoint, svc, ns, b"svc"] if !endpoint.starts_with(b"_") => ClusterName::Endpoint { endpoint, svc, ns },
            [port, proto, svc, ns, b"svc"] => match (srv_label(port), srv_label(proto)) {
                (Some(port), Some(proto)) => ClusterName::Srv { port, proto, svc, ns },
                _ => ClusterName::Other,
            },
            [ns, b"pod"] => ClusterName::PodNamespace { ns },
            [label, ns, b"pod"] => ClusterName::Pod { ip: parse_dashed_ip(label), label, ns },
            _ => ClusterName::Other,
        }
    }

    /// What the name is, by the grammar of the cluster-set zone: the cluster zone's Service, SRV
    /// and fixed names, endpoints one level further down below their cluster ID, no Pod names.
    pub fn classify_clusterset(&self) -> ClusterName<'a> {
        match *self.as_slice() {
            [b"pod"] => ClusterName::Other,
            [cluster, svc, ns, b"svc"] if !cluster.starts_with(b"_") => ClusterName::Cluster { cluster, svc, ns },
            [endpoint, cluster, svc, ns, b"svc"] if !endpoint.starts_with(b"_") => {
                ClusterName::ClusterEndpoint { endpoint, cluster, svc, ns }
            }
            _ => match self.classify() {
                ClusterName::Endpoint { .. } | ClusterName::Pod { .. } | ClusterName::PodNamespace { .. } => {
                    ClusterName::Other
                }
                other => other,
            },
        }
    }

    /// For a name in a Pod's first search domain, `<base…>.<ns>.svc.<zone>` with at least one
    /// base label: the namespace and the base labels (what the client asked before its search
    /// path was appended). Autopath resolves these.
    pub fn search_base(&self) -> Option<(&'a [u8], &[&'a [u8]])> {
        match self.as_slice() {
            [base @ .., ns, b"svc"] if !base.is_empty() => Some((ns, base)),
            _ => None,
        }
    }
}

/// The address a reverse name (`5.1.244.10.in-addr.arpa.`, 32 nibbles `.ip6.arpa.`) stands
/// for, from its lower-case wire bytes; `None` for any other name.
pub fn reverse_ip(wire: &[u8]) -> Option<IpAddr> {
    if let Some(prefix) = wire.strip_suffix(b"\x07in-addr\x04arpa\x00") {
        let labels = Labels::of(prefix)?;
        let [d, c, b, a] = *labels.as_slice() else { return None };
        let octet = |l: &[u8]| std::str::from_utf8(l).ok()?.parse::<u8>().ok().filter(|_| l.len() == 1 || l[0] != b'0');
        return Some(IpAddr::V4(Ipv4Addr::new(octet(a)?, octet(b)?, octet(c)?, octet(d)?)));
    }
    let prefix = wire.strip_suffix(b"\x03ip6\x04arpa\x00")?;
    let labels = Labels::of(prefix)?;
    if labels.len != 32 {
        return None;
    }
    let mut octets = [0u8; 16];
    for (i, nibble) in labels.as_slice().iter().rev().enumerate() {
        let [digit] = **nibble else { return None };
        let value = (digit as char).to_digit(16)? as u8;
        octets[i / 2] |= if i % 2 == 0 { value << 4 } else { value };
    }
    Some(IpAddr::V6(Ipv6Addr::from(octets)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::name::{Name, reverse_name};

    /// The prefix (wire bytes before `cluster.local.`) of a dotted name.
    fn prefix(text: &str) -> Vec<u8> {
        let name = Name::parse(text).unwrap();
        let zone = Name::parse("cluster.local").unwrap();
        let wire = name.as_wire();
        wire[..wire.len() - zone.as_wire().len()].to_vec()
    }

    /// The grammar's table of examples: each name and what it is.
    #[test]
    fn names_classify_as_the_spec_defines_them() {
        use ClusterName::*;
        let ip = Some("10.244.1.5".parse().unwrap());
        let cases: &[(&str, ClusterName<'_>)] = &[
            ("cluster.local", Fixed),
            ("svc.cluster.local", Fixed),
            ("pod.cluster.local", Fixed),
            ("dns-version.cluster.local", Fixed),
            ("ns-0.svc.cluster.local", Namespace { ns: b"ns-0" }),
            ("nginx.ns-0.svc.cluster.local", Service { svc: b"nginx", ns: b"ns-0" }),
            ("web-0.nginx.ns-0.svc.cluster.local", Endpoint { endpoint: b"web-0", svc: b"nginx", ns: b"ns-0" }),
            (
                "10-244-1-5.nginx.ns-0.svc.cluster.local",
                Endpoint { endpoint: b"10-244-1-5", svc: b"nginx", ns: b"ns-0" },
            ),
            ("_web._tcp.nginx.ns-0.svc.cluster.local", Srv { port: b"web", proto: b"tcp", svc: b"nginx", ns: b"ns-0" }),
            ("_web.tcp.nginx.ns-0.svc.cluster.local", Other),
            ("_.tcp.nginx.ns-0.svc.cluster.local", Other),
            ("_web.nginx.ns-0.svc.cluster.local", Other),
            ("ns-0.pod.cluster.local", PodNamespace { ns: b"ns-0" }),
            ("10-244-1-5.ns-0.pod.cluster.local", Pod { ip, label: b"10-244-1-5", ns: b"ns-0" }),
            ("web-0.ns-0.pod.cluster.local", Pod { ip: None, label: b"web-0", ns: b"ns-0" }),
            ("a.web-0.nginx.ns-0.svc.cluster.local", Other),
            ("nginx.ns-0.cluster.local", Other),
        ];
        for (text, want) in cases {
            let wire = prefix(text);
            assert_eq!(Labels::of(&wire).unwrap().classify(), *want, "{text}");
        }
    }

    /// The cluster-set grammar's table: the names of the Multicluster DNS specification's examples.
    #[test]
    fn cluster_set_names_classify_as_the_multicluster_spec_defines_them() {
        use ClusterName::*;
        let cases: &[(&str, ClusterName<'_>)] = &[
            ("dns-version.clusterset.local", Fixed),
            ("svc.clusterset.local", Fixed),
            ("test.svc.clusterset.local", Namespace { ns: b"test" }),
            ("myservice.test.svc.clusterset.local", Service { svc: b"myservice", ns: b"test" }),
            (
                "_https._tcp.myservice.test.svc.clusterset.local",
                Srv { port: b"https", proto: b"tcp", svc: b"myservice", ns: b"test" },
            ),
            (
                "clustera.myservice.test.svc.clusterset.local",
                Cluster { cluster: b"clustera", svc: b"myservice", ns: b"test" },
            ),
            (
                "my-hostname.clustera.myservice.test.svc.clusterset.local",
                ClusterEndpoint { endpoint: b"my-hostname", cluster: b"clustera", svc: b"myservice", ns: b"test" },
            ),
            ("_https.clustera.myservice.test.svc.clusterset.local", Other),
            ("a.my-pet.clustera.headless.test.svc.clusterset.local", Other),
            ("pod.clusterset.local", Other),
            ("10-1-2-3.test.pod.clusterset.local", Other),
        ];
        let zone = Name::parse("clusterset.local").unwrap();
        for (text, want) in cases {
            let wire = Name::parse(text).unwrap().as_wire().to_vec();
            let prefix = &wire[..wire.len() - zone.as_wire().len()];
            assert_eq!(Labels::of(prefix).unwrap().classify_clusterset(), *want, "{text}");
        }
    }

    #[test]
    fn search_bases_are_names_asked_within_a_namespace() {
        // The name, and "<ns>: <base>" or nothing.
        let cases = [
            ("api.ns-1.ns-0.svc.cluster.local", Some("ns-0: api.ns-1")),
            ("www.example.com.ns-0.svc.cluster.local", Some("ns-0: www.example.com")),
            ("nginx.ns-0.svc.cluster.local", Some("ns-0: nginx")),
            ("ns-0.svc.cluster.local", None),
            ("api.ns-0.pod.cluster.local", None),
        ];
        for (text, want) in cases {
            let wire = prefix(text);
            let labels = Labels::of(&wire).unwrap();
            let got = labels.search_base().map(|(ns, base)| {
                let base: Vec<&str> = base.iter().map(|l| std::str::from_utf8(l).unwrap()).collect();
                format!("{}: {}", std::str::from_utf8(ns).unwrap(), base.join("."))
            });
            assert_eq!(got.as_deref(), want, "{text}");
        }
    }

    #[test]
    fn reverse_names_parse_back_to_their_address() {
        for text in ["10.244.1.5", "0.100.255.99", "2001:db8::567:89ab", "::1", "fd00::"] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(reverse_ip(reverse_name(ip).as_wire()), Some(ip), "{text}");
        }
        for text in ["1.2.3.in-addr.arpa", "01.2.3.4.in-addr.arpa", "256.2.3.4.in-addr.arpa", "1.ip6.arpa", "x.local"] {
            assert_eq!(reverse_ip(Name::parse(text).unwrap().as_wire()), None, "{text}");
        }
    }
}
