//! The query path: parse the question without allocating, look the lower-cased name up, and
//! splice the stored answer after the client's own question.
//!
//! ```text
//!  packet ─▶ parse_fast ──ok──▶ Responder::answer ─▶ header │ question as asked │ stored bytes │ OPT
//!               │                      ▲
//!               └─unusual─▶ general::respond (hickory-proto decode; errors, EDNS versions, …)
//! ```
//!
//! Both paths end in [`Responder::answer`], so they cannot disagree about what a name answers;
//! the general path only decides what the fast path leaves to it.

use std::net::IpAddr;
use std::sync::Arc;

use super::general;
use super::name::{MAX_NAME, parse_dashed_ip};
use crate::index::wire::{self, CLASS_IN, OPT_LEN, rtype};
use crate::index::{Index, PodMode};

/// RCODEs (RFC 1035 §4.1.1, RFC 6891 §9).
pub mod rcode {
    /// No error.
    pub const NOERROR: u8 = 0;
    /// Format error.
    pub const FORMERR: u8 = 1;
    /// Server failure.
    pub const SERVFAIL: u8 = 2;
    /// Name does not exist.
    pub const NXDOMAIN: u8 = 3;
    /// Not implemented.
    pub const NOTIMP: u8 = 4;
    /// Refused.
    pub const REFUSED: u8 = 5;
    /// Bad EDNS version (extended RCODE 16: 4 low bits 0, OPT carries 1).
    pub const BADVERS: u16 = 16;
}

pub(super) const QR: u16 = 0x8000;
const AA: u16 = 0x0400;
pub(super) const TC: u16 = 0x0200;
pub(super) const RD: u16 = 0x0100;
pub(super) const CD: u16 = 0x0010;

/// Which transport a query came over: it sets the size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP: the client's EDNS size (512 without EDNS), capped by `--max-udp-size`.
    Udp,
    /// TCP: up to 65,535 bytes.
    Tcp,
}

/// The EDNS(0) part of a query (RFC 6891).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    /// Requestor's UDP payload size.
    pub udp_size: u16,
    /// The DO bit, echoed in the response (RFC 3225 §3).
    pub dnssec_ok: bool,
    /// Whether the query asked for the server's NSID (RFC 5001).
    pub nsid: bool,
}

/// A parsed question, borrowing from the packet or the general path's buffers.
#[derive(Debug)]
pub struct Question<'a> {
    /// Message ID.
    pub id: u16,
    /// The query's header flags (RD and CD are echoed).
    pub flags: u16,
    /// QNAME, QTYPE and QCLASS exactly as the client sent them (letter case included).
    pub asked: &'a [u8],
    /// QNAME in lower case, the index key.
    pub lower: &'a [u8],
    /// QTYPE.
    pub qtype: u16,
    /// The OPT record, if any.
    pub edns: Option<Edns>,
}

/// Answers queries from an [`Index`].
pub struct Responder {
    index: Arc<Index>,
    max_udp: u16,
    /// The NSID option (code, length, data) answered to queries that ask for it, pre-encoded.
    nsid: Option<Box<[u8]>>,
    /// Who may transfer zones (TCP only).
    transfer: crate::transfer::TransferAcl,
    /// Rotate multi-address answers.
    round_robin: bool,
    /// Server-side search for queries from known Pods.
    autopath: bool,
}

/// EDNS option code of NSID (RFC 5001).
const NSID: u16 = 3;
/// The longest NSID answered (the rest of `--nsid` is cut).
const MAX_NSID: usize = 200;

/// What the caller of [`Responder::handle`] can do beyond answering from the index.
#[derive(Clone, Copy, Debug, Default)]
pub struct Caps {
    /// Names outside the served zones may be forwarded.
    pub forward: bool,
    /// The client's address, for autopath.
    pub client: Option<IpAddr>,
}

/// What to do with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send the response of this length.
    Reply(usize),
    /// Forward it upstream: a name outside every served zone.
    Forward,
    /// Resolve it through the client Pod's search path (autopath): an in-zone miss ending in the
    /// client's first search domain.
    Autopath,
    /// Send nothing (a response, or not even a header).
    Drop,
}

impl Outcome {
    /// The response length, if there is one to send.
    pub fn reply(self) -> Option<usize> {
        match self {
            Outcome::Reply(n) => Some(n),
            Outcome::Forward | Outcome::Autopath | Outcome::Drop => None,
        }
    }
}

enum Fast<'a> {
    Ok(Question<'a>),
    Drop,
    General,
}

// === impl Responder ===

impl Responder {
    /// A responder that caps UDP answers at `max_udp` bytes (at least 512).
    pub fn new(index: Arc<Index>, max_udp: u16) -> Responder {
        Responder {
            index,
            max_udp: max_udp.max(512),
            nsid: None,
            transfer: Default::default(),
            round_robin: false,
            autopath: false,
        }
    }

    /// Answers NSID requests (`dig +nsid`) with `id`, so a client can tell which replica answered
    /// (RFC 5001). An empty id disables it.
    pub fn with_nsid(mut self, id: &[u8]) -> Responder {
        self.nsid = (!id.is_empty()).then(|| {
            // At most 200 bytes: with the OPT and the longest question it still fits a 512-byte
            // response, so the room left for records can never be negative.
            let len = id.len().min(MAX_NSID) as u16;
            let mut option = Vec::with_capacity(4 + len as usize);
            option.extend_from_slice(&NSID.to_be_bytes());
            option.extend_from_slice(&len.to_be_bytes());
            option.extend_from_slice(&id[..len as usize]);
            option.into_boxed_slice()
        });
        self
    }

    /// Rotates the records of multi-address answers from query to query (CoreDNS `loadbalance`).
    pub fn with_round_robin(mut self, on: bool) -> Responder {
        self.round_robin = on;
        self
    }

    /// Allows zone transfers to these networks (denied to everyone by default).
    pub fn with_transfer(mut self, acl: crate::transfer::TransferAcl) -> Responder {
        self.transfer = acl;
        self
    }

    /// Who may transfer zones.
    pub fn transfer_acl(&self) -> &crate::transfer::TransferAcl {
        &self.transfer
    }

    /// The server's identity (the NSID, `--nsid`), if it has one.
    pub(super) fn server_id(&self) -> Option<&[u8]> {
        self.nsid.as_deref().map(|option| &option[4..])
    }

    /// The NSID option to append for this query, if any.
    pub(super) fn nsid_for(&self, q: &Question<'_>) -> &[u8] {
        match (&self.nsid, q.edns) {
            (Some(option), Some(e)) if e.nsid => option,
            _ => &[],
        }
    }

    /// The largest UDP response this responder writes (at least 512 bytes).
    pub fn max_udp(&self) -> u16 {
        self.max_udp
    }

    /// The index answers come from.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// Answers one packet into `out` (which should hold [`wire::MAX_MESSAGE`] bytes). Returns the
    /// response length, or `None` when the packet must not be answered (a response, or not even
    /// a header).
    /// Names outside the served zones get REFUSED here; [`Responder::handle`] lets the caller
    /// forward them instead.
    pub fn respond(&self, packet: &[u8], transport: Transport, out: &mut [u8]) -> Option<usize> {
        self.handle(packet, transport, out, Caps::default()).reply()
    }

    /// Like [`Responder::respond`] but always through the general path (for tests comparing the
    /// two).
    pub fn respond_general(&self, packet: &[u8], transport: Transport, out: &mut [u8]) -> Option<usize> {
        general::respond(self, packet, transport, out, Caps::default()).reply()
    }

    /// Answers one packet, or says to forward it (a name outside every served zone, when
    /// `caps.forward`), to search for it (autopath), or to drop it.
    pub fn handle(&self, packet: &[u8], transport: Transport, out: &mut [u8], caps: Caps) -> Outcome {
        let mut lower = [0u8; MAX_NAME];
        match parse_fast(packet, &mut lower) {
            Fast::Ok(q) => self.answer(&q, transport, out, caps),
            Fast::Drop => Outcome::Drop,
            Fast::General => general::respond(self, packet, transport, out, caps),
        }
    }

    /// Whether server-side search (autopath) is on.
    pub fn autopath(&self) -> bool {
        self.autopath
    }

    /// Turns on server-side search for queries from known Pods (needs `--pods verified`).
    pub fn with_autopath(mut self, on: bool) -> Responder {
        self.autopath = on;
        self
    }

    /// Whether `q` from `client` is a search-path candidate autopath should resolve: it ends in
    /// `<ns>.svc.<zone>` (a Pod's first search domain), has a name before that, and `client` is
    /// the IP of a running Pod in `<ns>` (its `--pods verified` name exists).
    fn autopath_candidate(&self, q: &Question<'_>, zone: u8, client: IpAddr) -> bool {
        let zone_len = self.index.zone(zone).name.as_wire().len();
        let prefix = &q.lower[..q.lower.len() - zone_len];
        // Labels of the prefix, most specific first: need [base…, ns, "svc"] with base non-empty.
        let mut starts = [0usize; 128];
        let mut count = 0;
        let mut i = 0;
        while i < prefix.len() && count < starts.len() {
            starts[count] = i;
            count += 1;
            i += 1 + prefix[i] as usize;
        }
        if count < 3 || &prefix[starts[count - 1]..] != b"\x03svc" {
            return false;
        }
        let ns = &prefix[starts[count - 2] + 1..starts[count - 1]];
        let Ok(ns) = std::str::from_utf8(ns) else { return false };
        let zone_name = &self.index.zone(zone).name;
        let Ok(pod_name) = zone_name.prepend(&[&super::name::dashed_ip(client), ns, "pod"]) else { return false };
        self.index.get(pod_name.as_wire()).is_some()
    }

    /// The size limit for a response.
    pub(super) fn limit(&self, q: &Question<'_>, transport: Transport, out: &[u8]) -> usize {
        let limit = match (transport, q.edns) {
            (Transport::Tcp, _) => wire::MAX_MESSAGE,
            (Transport::Udp, Some(e)) => e.udp_size.clamp(512, self.max_udp) as usize,
            (Transport::Udp, None) => 512,
        };
        limit.min(out.len())
    }

    /// Writes the response to a well-formed question (or, with `forward`, leaves a name outside
    /// the served zones to the caller).
    pub fn answer(&self, q: &Question<'_>, transport: Transport, out: &mut [u8], caps: Caps) -> Outcome {
        let limit = self.limit(q, transport, out);
        let nsid = self.nsid_for(q);
        let room = limit - if q.edns.is_some() { OPT_LEN + nsid.len() } else { 0 };
        let mut at = 12 + q.asked.len();
        out[12..at].copy_from_slice(q.asked);
        let mut flags = QR | (q.flags & (RD | CD)) | AA;
        let (mut an, mut ns, mut ar) = (0u16, 0u16, 0u16);
        let index = &*self.index;
        let mut rcode = rcode::NOERROR;

        if !index.is_ready() {
            // Never an authoritative NXDOMAIN before the first full sync (kubernetes/dns#186).
            flags &= !AA;
            if index.zone_of(q.lower).is_some() {
                rcode = rcode::SERVFAIL;
            } else if caps.forward {
                return Outcome::Forward;
            } else {
                rcode = rcode::REFUSED;
            }
        } else if let Some(entry) = index.get(q.lower) {
            let stored = match entry.cname() {
                Some(cname) => Some(cname),
                None if q.qtype == rtype::ANY => entry.sets().next().map(|(_, a)| a),
                None => entry.rrset(q.qtype),
            };
            if let Some(answer) = stored
                && self.round_robin
                && let Some((size, records)) = answer.uniform()
            {
                // Rotate the addresses (CoreDNS `loadbalance round_robin`): each record is `size`
                // bytes owned by the question, so any order is valid; start at a per-worker counter.
                let count = answer.ancount as usize;
                let start = ROTATION.with(|r| {
                    let n = r.get();
                    r.set(n.wrapping_add(1));
                    n
                }) % count;
                let fit = ((room - at) / size).min(count);
                for i in 0..fit {
                    let r = (start + i) % count;
                    out[at..at + size].copy_from_slice(&records[r * size..(r + 1) * size]);
                    at += size;
                }
                an = fit as u16;
                if fit < count {
                    flags |= TC;
                }
            } else if let Some(answer) = stored {
                let (n, len) = answer.fit(room - at);
                answer.copy_to(&mut out[at..], len);
                at += len;
                let ancount = answer.ancount as usize;
                if n < ancount || !answer.complete {
                    flags |= TC;
                    an = n.min(ancount) as u16;
                } else {
                    an = ancount as u16;
                    ar = (n - ancount) as u16;
                }
            } else if entry.is_apex() && matches!(q.qtype, rtype::SOA | rtype::ANY) {
                an = self.soa(q, entry.zone(), index.ttl, out, &mut at, room, &mut flags);
            } else {
                ns = self.soa(q, entry.zone(), index.negative_ttl, out, &mut at, room, &mut flags);
            }
        } else if let Some(zone) = index.zone_of(q.lower) {
            if self.autopath
                && let Some(client) = caps.client
                && self.autopath_candidate(q, zone, client)
            {
                return Outcome::Autopath;
            }
            match self.synthesize_pod(q, zone) {
                Synth::Addr(ip) => {
                    if wire::write_addr(&mut out[..room], &mut at, index.ttl, ip) {
                        an = 1;
                    } else {
                        flags |= TC;
                    }
                }
                Synth::NoData => {
                    ns = self.soa(q, zone, index.negative_ttl, out, &mut at, room, &mut flags);
                }
                Synth::None => {
                    rcode = rcode::NXDOMAIN;
                    ns = self.soa(q, zone, index.negative_ttl, out, &mut at, room, &mut flags);
                }
            }
        } else if caps.forward {
            // Outside every served zone; checked only after the index misses, so answers from
            // the index pay nothing for forwarding.
            return Outcome::Forward;
        } else {
            flags &= !AA;
            rcode = rcode::REFUSED;
        }

        if let Some(edns) = q.edns {
            ar += 1;
            write_opt(out, &mut at, self.max_udp, 0, edns.dnssec_ok, nsid);
        }
        write_header(out, q.id, flags | rcode as u16, 1, an, ns, ar);
        Outcome::Reply(at)
    }

    /// Writes the zone's SOA (answer or authority); returns the record count (0 if it did not fit).
    #[allow(clippy::too_many_arguments)]
    fn soa(
        &self,
        q: &Question<'_>,
        zone: u8,
        ttl: u32,
        out: &mut [u8],
        at: &mut usize,
        room: usize,
        flags: &mut u16,
    ) -> u16 {
        let zone = self.index.zone(zone);
        // The zone's name ends the question name: point at it.
        let owner = (12 + q.lower.len() - zone.name.as_wire().len()) as u16;
        let serial = self.index.serial();
        if wire::write_soa(&mut out[..room], at, owner, ttl, &zone.soa_names, serial, self.index.negative_ttl) {
            1
        } else {
            *flags |= TC;
            0
        }
    }

    /// `<a-b-c-d>.<ns>.pod.<zone>` under `--pods insecure` (CoreDNS: any well-formed address
    /// answers, unchecked). Verified Pod names are in the index; disabled means NXDOMAIN.
    fn synthesize_pod(&self, q: &Question<'_>, zone: u8) -> Synth {
        if self.index.pods != PodMode::Insecure {
            return Synth::None;
        }
        let prefix_len = q.lower.len() - self.index.zone(zone).name.as_wire().len();
        let prefix = &q.lower[..prefix_len];
        let mut labels: [&[u8]; 3] = [&[]; 3];
        let mut count = 0;
        let mut i = 0;
        while i < prefix.len() {
            let len = prefix[i] as usize;
            if count == 3 {
                return Synth::None;
            }
            labels[count] = &prefix[i + 1..i + 1 + len];
            count += 1;
            i += 1 + len;
        }
        match count {
            2 if labels[1] == b"pod" => Synth::NoData,
            3 if labels[2] == b"pod" => match parse_dashed_ip(labels[0]) {
                Some(ip)
                    if matches!(
                        (q.qtype, ip.is_ipv4()),
                        (rtype::A | rtype::ANY, true) | (rtype::AAAA | rtype::ANY, false)
                    ) =>
                {
                    Synth::Addr(ip)
                }
                Some(_) => Synth::NoData,
                None => Synth::None,
            },
            _ => Synth::None,
        }
    }
}

enum Synth {
    Addr(std::net::IpAddr),
    NoData,
    None,
}

thread_local! {
    /// Where the next rotated answer starts, per worker thread (no shared counter on the hot path).
    static ROTATION: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Writes a 12-byte header.
pub fn write_header(out: &mut [u8], id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) {
    for (i, v) in [id, flags, qd, an, ns, ar].into_iter().enumerate() {
        out[i * 2..i * 2 + 2].copy_from_slice(&v.to_be_bytes());
    }
}

/// Appends an OPT record without options (RFC 6891 §6.1.2).
pub fn write_opt(out: &mut [u8], at: &mut usize, udp_size: u16, ext_rcode: u8, dnssec_ok: bool, options: &[u8]) {
    let o = &mut out[*at..*at + OPT_LEN + options.len()];
    o[0] = 0;
    o[1..3].copy_from_slice(&rtype::OPT.to_be_bytes());
    o[3..5].copy_from_slice(&udp_size.to_be_bytes());
    o[5] = ext_rcode;
    o[6] = 0;
    o[7..9].copy_from_slice(&(if dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
    o[9..11].copy_from_slice(&(options.len() as u16).to_be_bytes());
    o[11..].copy_from_slice(options);
    *at += OPT_LEN + options.len();
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Parses the common query shape — one question, class IN, no compression in the question,
/// at most an OPT record of version 0 — into `lower`. Anything else goes to the general path.
fn parse_fast<'a>(packet: &'a [u8], lower: &'a mut [u8; MAX_NAME]) -> Fast<'a> {
    if packet.len() < 12 {
        return Fast::Drop;
    }
    let flags = be16(packet, 2);
    if flags & QR != 0 {
        // Never answer a response: two servers must not reflect packets at each other.
        return Fast::Drop;
    }
    let opcode = (flags >> 11) & 0xF;
    let (qd, an, ns, ar) = (be16(packet, 4), be16(packet, 6), be16(packet, 8), be16(packet, 10));
    if opcode != 0 || qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return Fast::General;
    }
    let mut at = 12;
    loop {
        let Some(&len) = packet.get(at) else {
            return Fast::General;
        };
        let len = len as usize;
        if len & 0xC0 != 0 || at - 12 + 1 + len > MAX_NAME {
            return Fast::General;
        }
        let Some(label) = packet.get(at + 1..at + 1 + len) else {
            return Fast::General;
        };
        lower[at - 12] = len as u8;
        for (dst, src) in lower[at - 12 + 1..at - 12 + 1 + len].iter_mut().zip(label) {
            *dst = src.to_ascii_lowercase();
        }
        at += 1 + len;
        if len == 0 {
            break;
        }
    }
    let name_end = at;
    let Some(tail) = packet.get(at..at + 4) else {
        return Fast::General;
    };
    let (qtype, qclass) = (be16(tail, 0), be16(tail, 2));
    if qclass != CLASS_IN || matches!(qtype, rtype::AXFR | rtype::IXFR | rtype::OPT) {
        return Fast::General;
    }
    at += 4;
    let mut edns = None;
    if ar == 1 {
        // OPT: root owner, TYPE 41, CLASS = UDP size, TTL = ext-rcode/version/flags, RDLEN.
        let Some(opt) = packet.get(at..at + OPT_LEN) else {
            return Fast::General;
        };
        if opt[0] != 0 || be16(opt, 1) != rtype::OPT || opt[6] != 0 {
            return Fast::General;
        }
        let rdlen = be16(opt, 9) as usize;
        at += OPT_LEN;
        // Options (code, length, data) must exactly fill RDLEN; anything else is for the general
        // path to reject (RFC 6891 §6.1.2), so both paths agree.
        let Some(mut options) = packet.get(at..at + rdlen) else { return Fast::General };
        let mut nsid = false;
        while !options.is_empty() {
            let Some(len) = options.get(2..4).map(|l| u16::from_be_bytes([l[0], l[1]]) as usize) else {
                return Fast::General;
            };
            // "The name server MUST ignore any NSID payload data that might be present in the query."
            nsid |= be16(options, 0) == NSID;
            let Some(rest) = options.get(4 + len..) else { return Fast::General };
            options = rest;
        }
        at += rdlen;
        edns = Some(Edns { udp_size: be16(opt, 3), dnssec_ok: opt[7] & 0x80 != 0, nsid });
    }
    if at != packet.len() {
        return Fast::General;
    }
    let lower_len = name_end - 12;
    Fast::Ok(Question {
        id: be16(packet, 0),
        flags,
        asked: &packet[12..name_end + 4],
        lower: &lower[..lower_len],
        qtype,
        edns,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::cluster::Model;
    use crate::index::{RecordConfig, Writer};
    use crate::source::file::parse_manifests;

    fn responder() -> Responder {
        let cfg = RecordConfig::default_for(vec![crate::dns::name::Name::parse("cluster.local").unwrap()]);
        let index = Arc::new(Index::new(&cfg));
        let mut writer = Writer::new(index.clone(), cfg);
        let mut model = Model::new();
        let yaml = include_str!("../../tests/fixtures/records.yaml");
        for obj in parse_manifests(yaml, std::path::Path::new("records.yaml")).unwrap() {
            let touched = model.apply(obj);
            writer.recompute(&model, touched);
        }
        index.set_ready(true);
        Responder::new(index, 1232)
    }

    proptest! {
        /// No input panics; every response is a response to the query's ID, within the UDP limit.
        #[test]
        fn random_bytes_never_panic(packet in prop::collection::vec(any::<u8>(), 0..700)) {
            let r = responder();
            let mut out = vec![0u8; wire::MAX_MESSAGE];
            for transport in [Transport::Udp, Transport::Tcp] {
                if let Some(n) = r.respond(&packet, transport, &mut out) {
                    prop_assert!(n >= 12);
                    prop_assert_eq!(&out[..2], &packet[..2]);
                    prop_assert!(out[2] & 0x80 != 0, "QR set");
                    if transport == Transport::Udp {
                        prop_assert!(n <= 1232);
                    }
                }
            }
        }

        /// A valid query with random bytes flipped: same guarantees.
        #[test]
        fn mutated_queries_never_panic(flips in prop::collection::vec((0usize..64, any::<u8>()), 1..6)) {
            let r = responder();
            let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
            for label in ["web-0", "nginx", "ns-0", "svc", "cluster", "local"] {
                packet.push(label.len() as u8);
                packet.extend_from_slice(label.as_bytes());
            }
            packet.extend_from_slice(&[0, 0, 1, 0, 1, 0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
            for (at, byte) in flips {
                let at = at % packet.len();
                packet[at] = byte;
            }
            let mut out = vec![0u8; wire::MAX_MESSAGE];
            if let Some(n) = r.respond(&packet, Transport::Udp, &mut out) {
                prop_assert!((12..=1232).contains(&n));
            }
        }
    }
}
