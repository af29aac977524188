//! The query path: parse the question without allocating, look the lower-cased name up, and
//! splice the stored answer after the client's own question.
//!
//! ```text
//!  packet ─▶ parse_fast ──ok──▶ Responder::answer ─▶ header │ question as asked │ stored bytes │ OPT
//!               │                      ▲
//!               └─unusual─▶ general::decode (hickory-proto; errors, EDNS versions, CHAOS, …)
//! ```
//!
//! Both paths end in [`Responder::answer`], so they cannot disagree about what a name answers;
//! the general path only decides what the fast path leaves to it. Every response is finished by
//! [`super::finish::Finish`] (size, OPT, truncation, flags).

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name as HName, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinDecodable;

use super::finish::{Policy, Sections, Transport, header_only};
use super::general::{self, General};
use super::grammar::{ClusterName, Labels};
use super::name::{MAX_NAME, Name, POINTER_BITS};
use super::proto::{self, CLASS_IN, HEADER_LEN, MAX_MESSAGE, flags, rcode, rtype};
use super::question::{Fast, Question, parse_fast};
use crate::index::{Index, PodMode};

/// Answers queries from an [`Index`].
pub struct Responder {
    index: Arc<Index>,
    /// `--max-udp-size` and `--nsid`: how responses are finished.
    policy: Policy,
    /// Who may transfer zones (TCP only).
    transfer: super::transfer::TransferAcl,
    /// Rotate multi-address answers.
    round_robin: bool,
    /// `--max-answers`: at most this many records of an address RRset (`usize::MAX`: all).
    max_answers: usize,
    /// Whether address RRsets may be answered other than whole and in stored order
    /// (`round_robin`, or a `max_answers`): one flag, so with both off the hot path tests one bool
    /// as before.
    reorder: bool,
    /// Server-side search for queries from known Pods.
    autopath: bool,
    /// Forward reverse names of addresses the cluster does not know (when the caller forwards).
    reverse_fallthrough: bool,
    /// On a secondary: where NOTIFY from its primaries goes.
    inbox: Option<Arc<crate::notify::Inbox>>,
}

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

// === impl Responder ===

impl Responder {
    /// A responder that caps UDP answers at `max_udp` bytes (at least 512).
    pub fn new(index: Arc<Index>, max_udp: u16) -> Responder {
        Responder {
            index,
            policy: Policy::new(max_udp),
            transfer: Default::default(),
            round_robin: false,
            max_answers: usize::MAX,
            reorder: false,
            autopath: false,
            reverse_fallthrough: false,
            inbox: None,
        }
    }

    /// Accepts NOTIFY (RFC 1996) from the primaries `inbox` lists and hands it over; without
    /// one, NOTIFY is NOTIMP.
    pub fn with_inbox(mut self, inbox: Option<Arc<crate::notify::Inbox>>) -> Responder {
        self.inbox = inbox;
        self
    }

    /// Answers NSID requests (`dig +nsid`) with `id`, so a client can tell which replica answered
    /// (RFC 5001). An empty id disables it.
    pub fn with_nsid(mut self, id: &[u8]) -> Responder {
        self.policy = self.policy.with_nsid(id);
        self
    }

    /// Rotates the records of multi-address answers from query to query (CoreDNS `loadbalance`).
    pub fn with_round_robin(mut self, on: bool) -> Responder {
        self.round_robin = on;
        self.reorder = self.round_robin || self.max_answers != usize::MAX;
        self
    }

    /// Answers at most `max` records of an address RRset (a headless Service's A or AAAA), a
    /// different spread-out subset per query (`--max-answers`); `None`: all of them.
    pub fn with_max_answers(mut self, max: Option<usize>) -> Responder {
        self.max_answers = max.map_or(usize::MAX, |m| m.max(1));
        self.reorder = self.round_robin || self.max_answers != usize::MAX;
        self
    }

    /// Allows zone transfers to these networks (denied to everyone by default).
    pub fn with_transfer(mut self, acl: super::transfer::TransferAcl) -> Responder {
        self.transfer = acl;
        self
    }

    /// Who may transfer zones.
    pub fn transfer_acl(&self) -> &super::transfer::TransferAcl {
        &self.transfer
    }

    /// The largest UDP response this responder writes (at least 512 bytes).
    pub fn max_udp(&self) -> u16 {
        self.policy.max_udp()
    }

    /// How responses are finished (for the paths outside this module: forwarding, autopath,
    /// zone transfer).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The index answers come from.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// Answers one packet into `out` (which should hold [`proto::MAX_MESSAGE`] bytes). Returns the
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
        self.general(packet, transport, out, Caps::default()).reply()
    }

    /// Answers one packet, or says to forward it (a name outside every served zone, when
    /// `caps.forward`), to search for it (autopath), or to drop it.
    pub fn handle(&self, packet: &[u8], transport: Transport, out: &mut [u8], caps: Caps) -> Outcome {
        let mut lower = [0u8; MAX_NAME];
        match parse_fast(packet, &mut lower) {
            Fast::Ok(q) => self.answer(&q, transport, out, caps),
            Fast::Drop => Outcome::Drop,
            Fast::General => self.general(packet, transport, out, caps),
        }
    }

    /// Answers a packet through the general path: decoded by hickory-proto, then answered as the
    /// fast path answers, or with the error the general path decided.
    fn general(&self, packet: &[u8], transport: Transport, out: &mut [u8], caps: Caps) -> Outcome {
        let (decoded, error) = match general::decode(packet) {
            General::Drop => return Outcome::Drop,
            General::HeaderOnly { id, flags, rcode } => return Outcome::Reply(header_only(out, id, flags, rcode)),
            General::Answer(decoded) => return self.answer(&decoded.question(), transport, out, caps),
            General::Ixfr(decoded) => {
                let policy = &self.policy;
                match crate::dns::transfer::ixfr_over_udp(&self.index, packet, caps.client, &self.transfer, policy, out)
                {
                    Some(n) => return Outcome::Reply(n),
                    None => (decoded, Some(rcode::REFUSED)),
                }
            }
            General::Notify(decoded, serial) => {
                return Outcome::Reply(self.notify(&decoded, serial, transport, out, caps));
            }
            General::BadNotify(decoded) => {
                let rcode = if self.inbox.is_some() { rcode::FORMERR } else { rcode::NOTIMP };
                (decoded, Some(rcode))
            }
            General::Chaos(decoded) => (decoded, None),
            General::Error(decoded, rcode) => (decoded, Some(rcode)),
        };
        let q = decoded.question();
        let finish = self.policy.finish(q.head(), transport, out.len());
        let n = match error {
            Some(rcode) => general::error(&q, rcode, &finish, out),
            None => general::chaos(&q, self.policy.server_id(), &finish, out)
                .unwrap_or_else(|| general::error(&q, rcode::REFUSED, &finish, out)),
        };
        Outcome::Reply(n)
    }

    /// Answers a NOTIFY (RFC 1996 §4.7: the question echoed, opcode NOTIFY, AA when accepted):
    /// NOERROR from a listed primary for a served zone, which wakes the secondary; REFUSED from
    /// anyone else; NOTAUTH for another zone; NOTIMP when this server is no secondary.
    fn notify(
        &self,
        decoded: &general::Decoded,
        serial: Option<u32>,
        transport: Transport,
        out: &mut [u8],
        caps: Caps,
    ) -> usize {
        let q = decoded.question();
        let finish = self.policy.finish(q.head(), transport, out.len());
        let served = self.index.zone_of(q.lower).is_some_and(|z| self.index.zone(z).name.as_wire() == q.lower);
        let rcode = match (&self.inbox, caps.client) {
            (None, _) => rcode::NOTIMP,
            (Some(_), _) if !served => rcode::NOTAUTH,
            (Some(inbox), Some(peer)) if inbox.accepts(peer) => {
                inbox.notified(q.lower, serial, peer);
                rcode::NOERROR
            }
            (Some(inbox), peer) => {
                inbox.refused(peer, q.lower);
                rcode::REFUSED
            }
        };
        let at = HEADER_LEN + q.asked.len();
        out[HEADER_LEN..at].copy_from_slice(q.asked);
        let aa = if rcode == rcode::NOERROR { flags::AA } else { 0 };
        finish.write(out, at, Sections { flags: flags::OPCODE_NOTIFY | aa, rcode, ..Sections::default() })
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

    /// Forwards reverse names (`in-addr.arpa`, `ip6.arpa`) the index does not hold, when the
    /// caller forwards, instead of answering NXDOMAIN (CoreDNS `fallthrough in-addr.arpa
    /// ip6.arpa`): addresses outside the cluster keep their names.
    pub fn with_reverse_fallthrough(mut self, on: bool) -> Responder {
        self.reverse_fallthrough = on;
        self
    }

    /// Whether `q` from `client` is a search-path candidate autopath should resolve: it ends in
    /// `<ns>.svc.<zone>` (a Pod's first search domain), has a name before that, and `client` is
    /// the IP of a running Pod in `<ns>` (its `--pods verified` name exists).
    fn autopath_candidate(&self, q: &Question<'_>, zone: u8, client: IpAddr) -> bool {
        let Some(labels) = self.labels_in_zone(q, zone) else { return false };
        let Some((ns, _)) = labels.search_base() else { return false };
        let Ok(ns) = std::str::from_utf8(ns) else { return false };
        let zone_name = &self.index.zone(zone).name;
        let Ok(pod_name) = zone_name.prepend(&[&super::name::dashed_ip(client), ns, "pod"]) else { return false };
        self.index.get(pod_name.as_wire()).is_some()
    }

    /// Writes the response to a well-formed question (or, with `forward`, leaves a name outside
    /// the served zones to the caller). A CNAME into the served zones (an ExternalName Service
    /// naming another Service) is followed by its target's records (`dns/slow.rs`, `chase`).
    #[inline]
    pub fn answer(&self, q: &Question<'_>, transport: Transport, out: &mut [u8], caps: Caps) -> Outcome {
        self.answer_inner(q, transport, out, caps, true)
    }

    /// [`Responder::answer`]; with `chase` false a CNAME is answered alone (the chase's own
    /// lookups, one link at a time).
    pub(super) fn answer_inner(
        &self,
        q: &Question<'_>,
        transport: Transport,
        out: &mut [u8],
        caps: Caps,
        chase: bool,
    ) -> Outcome {
        let finish = self.policy.finish(q.head(), transport, out.len());
        let room = finish.room();
        let mut at = HEADER_LEN + q.asked.len();
        out[HEADER_LEN..at].copy_from_slice(q.asked);
        let mut flags = flags::AA;
        let (mut an, mut ns, mut ar) = (0u16, 0u16, 0u16);
        let index = &*self.index;
        let mut rcode = rcode::NOERROR;
        let mut soa = None;

        if !index.is_ready() {
            // Never an authoritative NXDOMAIN before the first full sync (kubernetes/dns#186).
            flags &= !flags::AA;
            if index.zone_of(q.lower).is_some() {
                rcode = rcode::SERVFAIL;
            } else if caps.forward {
                return Outcome::Forward;
            } else {
                rcode = rcode::REFUSED;
            }
        } else if let Some(entry) = index.get(q.lower) {
            let stored = match entry.cname() {
                Some(cname) if chase && !matches!(q.qtype, rtype::CNAME | rtype::ANY) => {
                    // Only ExternalName Services have a CNAME: look where it points (written
                    // where the answer goes; overwritten below when it stays a bare CNAME).
                    let (_, len) = cname.fit(room - at);
                    cname.copy_to(&mut out[at..], len);
                    if self.target_in_zone(out, at, q.lower) {
                        // Release the map guard before the chase reads the index again.
                        drop(entry);
                        return chase_cname(self, q, transport, out);
                    }
                    Some(cname)
                }
                Some(cname) => Some(cname),
                None if q.qtype == rtype::ANY => entry.sets().next().map(|(_, a)| a),
                None => entry.rrset(q.qtype),
            };
            if let Some(answer) = stored
                && self.reorder
                && let Some((size, records)) = answer.uniform()
                && (self.round_robin || answer.ancount as usize > self.max_answers)
            {
                // Each record is `size` bytes owned by the question, so any order and any subset
                // is a valid answer: copy `take` of them, spread evenly over the stored (sorted)
                // order from a per-query start. Round-robin alone takes all of them, rotated
                // (CoreDNS `loadbalance round_robin`).
                let count = answer.ancount as usize;
                let take = count.min(self.max_answers);
                let fit = ((room - at) / size).min(take);
                at += copy_spread(records, size, count, next_start(count), fit, take, &mut out[at..]);
                an = fit as u16;
                if fit < take {
                    flags |= flags::TC;
                }
            } else if let Some(answer) = stored {
                let (n, len) = answer.fit(room - at);
                answer.copy_to(&mut out[at..], len);
                at += len;
                let ancount = answer.ancount as usize;
                if n < ancount || !answer.complete {
                    flags |= flags::TC;
                    an = n.min(ancount) as u16;
                } else {
                    an = ancount as u16;
                    ar = (n - ancount) as u16;
                }
            } else if entry.is_apex() && matches!(q.qtype, rtype::SOA | rtype::ANY) {
                soa = Some(Soa { zone: entry.zone(), ttl: index.ttl, answer: true });
            } else {
                soa = Some(Soa { zone: entry.zone(), ttl: index.negative_ttl, answer: false });
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
                    if proto::write_addr(&mut out[..room], &mut at, index.ttl, ip) {
                        an = 1;
                    } else {
                        flags |= flags::TC;
                    }
                }
                Synth::NoData => {
                    soa = Some(Soa { zone, ttl: index.negative_ttl, answer: false });
                }
                Synth::None if caps.forward && self.reverse_fallthrough && index.is_reverse(zone) => {
                    return Outcome::Forward;
                }
                Synth::None => {
                    rcode = rcode::NXDOMAIN;
                    soa = Some(Soa { zone, ttl: index.negative_ttl, answer: false });
                }
            }
        } else if caps.forward {
            // Outside every served zone; checked only after the index misses, so answers from
            // the index pay nothing for forwarding.
            return Outcome::Forward;
        } else {
            flags &= !flags::AA;
            rcode = rcode::REFUSED;
        }

        if let Some(Soa { zone, ttl, answer }) = soa {
            let n = self.soa(q, zone, ttl, &mut out[..room], &mut at);
            if n == 0 {
                flags |= flags::TC;
            }
            if answer { an = n } else { ns = n }
        }
        Outcome::Reply(finish.write(out, at, Sections { flags, rcode, an, ns, ar }))
    }

    /// Writes the zone's SOA (answer or authority) into `out` (as long as the room for
    /// records); returns the record count (0 if it did not fit).
    fn soa(&self, q: &Question<'_>, zone_id: u8, ttl: u32, out: &mut [u8], at: &mut usize) -> u16 {
        let zone = self.index.zone(zone_id);
        // The zone's name ends the question name: point at it.
        let owner = (HEADER_LEN + q.lower.len() - zone.name.as_wire().len()) as u16;
        let record = proto::Soa {
            owner,
            ttl,
            names: &zone.soa_names,
            serial: self.index.zone_serial(zone_id),
            minimum: self.index.negative_ttl,
        };
        proto::write_soa(out, at, record) as u16
    }

    /// `<a-b-c-d>.<ns>.pod.<zone>` under `--pods insecure` (CoreDNS: any well-formed address
    /// answers, unchecked). Verified Pod names are in the index; disabled means NXDOMAIN.
    fn synthesize_pod(&self, q: &Question<'_>, zone: u8) -> Synth {
        if self.index.pods != PodMode::Insecure {
            return Synth::None;
        }
        let Some(labels) = self.labels_in_zone(q, zone) else { return Synth::None };
        match labels.classify() {
            ClusterName::Pod { ip: Some(ip), .. } => {
                let asked = match q.qtype {
                    rtype::ANY => true,
                    rtype::A => ip.is_ipv4(),
                    rtype::AAAA => ip.is_ipv6(),
                    _ => false,
                };
                if asked { Synth::Addr(ip) } else { Synth::NoData }
            }
            ClusterName::PodNamespace { .. } => Synth::NoData,
            _ => Synth::None,
        }
    }

    /// Whether the CNAME record written at `record` in `out` points into a served zone. Its
    /// target compresses only against the question (`lower` is the question name, lower case).
    fn target_in_zone(&self, out: &[u8], record: usize, lower: &[u8]) -> bool {
        let mut name = [0u8; MAX_NAME];
        let (mut from, mut len) = (record + proto::RECORD_HEAD_LEN, 0);
        loop {
            let Some(&label) = out.get(from) else { return false };
            let (part, last) = if label & POINTER_BITS == POINTER_BITS {
                // A pointer ends the name at a suffix of the question.
                let Some(&low) = out.get(from + 1) else { return false };
                let offset = (((label & !POINTER_BITS) as usize) << 8 | low as usize).wrapping_sub(HEADER_LEN);
                let Some(rest) = lower.get(offset..) else { return false };
                (rest, true)
            } else {
                let Some(part) = out.get(from..from + 1 + label as usize) else { return false };
                (part, label == 0)
            };
            let Some(slot) = name.get_mut(len..len + part.len()) else { return false };
            slot.copy_from_slice(part);
            len += part.len();
            if last {
                break;
            }
            from += part.len();
        }
        name[..len].make_ascii_lowercase();
        self.index.zone_of(&name[..len]).is_some()
    }

    /// The labels of the question name below `zone` (which the name is within).
    /// `None` outside the cluster zones, where the Kubernetes grammar does not apply.
    fn labels_in_zone<'q>(&self, q: &Question<'q>, zone: u8) -> Option<Labels<'q>> {
        let zone = self.index.zone(zone);
        if !zone.cluster {
            return None;
        }
        let zone_len = zone.name.as_wire().len();
        Labels::of(q.lower.get(..q.lower.len().checked_sub(zone_len)?)?)
    }
}

/// The SOA a response carries: the zone's, with this TTL, in the answer or the authority section.
struct Soa {
    zone: u8,
    ttl: u32,
    answer: bool,
}

enum Synth {
    Addr(std::net::IpAddr),
    NoData,
    None,
}

thread_local! {
    /// How many reordered answers this worker thread has written (no shared counter on the hot
    /// path).
    static ROTATION: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Where the next reordered answer of `count` records starts: the fractional part of n·φ for the
/// worker's n-th such answer, scaled to `count` (Fibonacci hashing, one multiplication). For
/// consecutive n these points are spread as evenly as any sequence can be (the three-distance
/// theorem), and they stay so for every stride: a stub resolver that asks A and AAAA in turn
/// gives each type every other n, which with `n % count` would start the A answers only at even
/// offsets and, with some `--max-answers`, never answer some endpoints at all.
fn next_start(count: usize) -> usize {
    const PHI: u64 = 0x9E37_79B9_7F4A_7C15; // 2^64 / φ
    let n = ROTATION.with(|r| {
        let n = r.get();
        r.set(n.wrapping_add(1));
        n
    });
    ((n.wrapping_mul(PHI) as u128 * count as u128) >> 64) as usize
}

/// Copies `fit` of `take` records spread evenly over the `count` records of `size` bytes in
/// `records`, starting at record `start`: record i of the answer is record
/// `(start + ⌊i·count/take⌋) mod count`, so the records differ, and over all starts each is
/// answered equally often. Spreading rather than taking neighbours matters because the stored
/// order is sorted by address, and neighbouring Pod IPs are mostly on the same node. Returns the
/// bytes written to `out`.
fn copy_spread(
    records: &[u8],
    size: usize,
    count: usize,
    start: usize,
    fit: usize,
    take: usize,
    out: &mut [u8],
) -> usize {
    let mut at = 0;
    // ⌊i·count/take⌋ without a division per record: whole steps plus a carried remainder.
    let (step, extra) = (count / take, count % take);
    let (mut r, mut carry) = (start, 0);
    for _ in 0..fit {
        out[at..at + size].copy_from_slice(&records[r * size..(r + 1) * size]);
        at += size;
        r += step;
        carry += extra;
        if carry >= take {
            carry -= take;
            r += 1;
        }
        if r >= count {
            r -= count;
        }
    }
    at
}

// === CNAME chains within the zones ===

/// CNAMEs followed within the served zones at most, after the first (CoreDNS's `plugin.A` follows
/// in-zone targets recursively; a bound keeps a long chain from costing more than it is worth).
pub const MAX_CHASE: usize = 8;

/// Answers `q`, whose name holds a CNAME into the served zones (an ExternalName Service whose
/// `externalName` is another Service), with the CNAME followed by its target's records, as RFC
/// 1034 §4.3.2 step 3a and CoreDNS do: the client gets the address in one round trip. Targets
/// that are CNAMEs again are followed up to [`MAX_CHASE`] links; a chain that loops, leaves the
/// zones or is too long stops with the CNAMEs so far (the client's resolver takes it from there).
/// The RCODE and authority section are those of the last name, so a target that does not exist
/// is NXDOMAIN after the CNAME (RFC 6604).
///
/// Runs in the worker that read the query: only the index is asked, nothing waits.
fn chase_cname(responder: &Responder, q: &Question<'_>, transport: Transport, out: &mut [u8]) -> Outcome {
    match follow(responder, q, transport, out) {
        Some(n) => Outcome::Reply(n),
        // Something did not decode (a bug, not an input): the bare CNAME, as before chasing.
        None => responder.answer_inner(q, transport, out, Caps::default(), false),
    }
}

fn follow(responder: &Responder, q: &Question<'_>, transport: Transport, out: &mut [u8]) -> Option<usize> {
    let name_len = q.asked.len().checked_sub(4)?;
    let question = Query::query(HName::from_bytes(&q.asked[..name_len]).ok()?, RecordType::from(q.qtype));
    let index = responder.index();
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut asked = q.asked.to_vec();
    let mut lower = Name::parse(&question.name().to_ascii()).ok()?;
    let mut seen = vec![lower.clone()];
    let (mut answers, mut last): (Vec<Record>, Message) = (Vec::new(), Message::query());
    for _ in 0..=MAX_CHASE {
        let link = Question { id: 0, flags: 0, asked: &asked, lower: lower.as_wire(), qtype: q.qtype, edns: None };
        let n = responder.answer_inner(&link, Transport::Tcp, &mut buf, Caps::default(), false).reply()?;
        last = Message::from_vec(&buf[..n]).ok()?;
        let owner = HName::from_bytes(&asked[..asked.len() - 4]).ok()?;
        let target = last.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name.eq_case(&owner) => Some(target.0.clone()),
            _ => None,
        });
        answers.append(&mut last.answers);
        let Some(target) = target else { break };
        let Ok(next) = Name::parse(&target.to_ascii()) else { break };
        if index.zone_of(next.as_wire()).is_none() || seen.contains(&next) {
            break;
        }
        asked = next.as_wire().to_vec();
        asked.extend_from_slice(&q.qtype.to_be_bytes());
        asked.extend_from_slice(&CLASS_IN.to_be_bytes());
        seen.push(next.clone());
        lower = next;
    }
    let finish = responder.policy().finish(q.head(), transport, out.len());
    let body = Sections { flags: flags::AA, rcode: last.metadata.response_code.into(), ..Sections::default() };
    finish.records(out, &question, [&answers, &last.authorities, &last.additionals], body)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::index::RecordConfig;
    use crate::pipeline::Pipeline;
    use crate::source::Event;
    use crate::source::file::parse_manifests;

    fn responder() -> Responder {
        let cfg = RecordConfig::default_for(vec![crate::dns::name::Name::parse("cluster.local").unwrap()]);
        let mut pipeline = Pipeline::new(cfg);
        let yaml = include_str!("../../tests/fixtures/records.yaml");
        let objects = parse_manifests(yaml, std::path::Path::new("records.yaml")).unwrap();
        pipeline.apply_batch(std::time::Instant::now(), objects.into_iter().map(Event::Apply).chain([Event::Synced]));
        Responder::new(pipeline.index().clone(), proto::DEFAULT_MAX_UDP)
    }

    proptest! {
        /// `--max-answers`' spread: the records of one answer differ, and over every start each
        /// record is answered equally often (`take` times in `count` starts).
        #[test]
        fn spread_answers_differ_and_cover_evenly(count in 2usize..300, take in 1usize..300) {
            let take = take.min(count);
            let records: Vec<u8> = (0..count).flat_map(|r| (r as u32).to_be_bytes()).collect();
            let mut answered = vec![0usize; count];
            let mut out = vec![0u8; take * 4];
            for start in 0..count {
                prop_assert_eq!(copy_spread(&records, 4, count, start, take, take, &mut out), take * 4);
                let mut picked: Vec<u32> =
                    out.chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap())).collect();
                prop_assert_eq!(picked[0] as usize, start);
                picked.sort_unstable();
                picked.dedup();
                prop_assert_eq!(picked.len(), take, "distinct records");
                for r in picked {
                    answered[r as usize] += 1;
                }
            }
            prop_assert!(answered.iter().all(|&n| n == take), "{:?}", answered);
        }

        /// No input panics; every response is a response to the query's ID, within the UDP limit.
        #[test]
        fn random_bytes_never_panic(packet in prop::collection::vec(any::<u8>(), 0..700)) {
            let r = responder();
            let mut out = vec![0u8; proto::MAX_MESSAGE];
            for transport in [Transport::Udp, Transport::Tcp] {
                if let Some(n) = r.respond(&packet, transport, &mut out) {
                    prop_assert!(n >= 12);
                    prop_assert_eq!(&out[..2], &packet[..2]);
                    prop_assert!(out[2] & 0x80 != 0, "QR set");
                    if transport == Transport::Udp {
                        prop_assert!(n <= proto::DEFAULT_MAX_UDP as usize);
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
            let mut out = vec![0u8; proto::MAX_MESSAGE];
            if let Some(n) = r.respond(&packet, Transport::Udp, &mut out) {
                prop_assert!((HEADER_LEN..=proto::DEFAULT_MAX_UDP as usize).contains(&n));
            }
        }
    }
}
