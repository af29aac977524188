//! Zone transfer (AXFR, RFC 5936) of a served zone to the networks in `--transfer-to`, so a BIND,
//! Knot or NSD secondary can serve a copy, and so `dig AXFR cluster.local` dumps everything served.
//!
//! Denied unless configured. AXFR only over TCP. The records are read back from the index's
//! stored answers (decoded with hickory-proto), so a transfer shows exactly what queries get;
//! synthesized Pod names (`--pods insecure`) and SRV glue are not part of it.
//!
//! IXFR (RFC 1995) is answered from the index's [journal](crate::index::journal): a client at the
//! current serial (or ahead, RFC 1982) gets the single SOA; a client whose serial the journal
//! reaches back to gets the versions since (new SOA, then per version the old SOA, the deletions,
//! the new SOA, the additions; then the new SOA again); any other serial gets the whole zone, as
//! §4 allows. Over UDP, a client that is behind gets the current SOA with TC set, to come back
//! over TCP (§2). A request without the client's SOA in its authority section is FORMERR.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{DNSClass, Name as HName, RData, Record, RecordType};

use super::finish::{Finish, Head, Policy, Sections, Transport};
use super::name::is_within;
use super::proto::{MAX_MESSAGE, flags, rtype, soa};
use crate::index::Index;
use crate::index::journal::{Version, ZoneDiff};
use crate::index::wire::entry_records;

/// Networks allowed to transfer zones.
#[derive(Clone, Debug, Default)]
pub struct TransferAcl {
    nets: Vec<ipnet::IpNet>,
    /// With `--notify-secondaries`: who transferred, for NOTIFY.
    clients: Option<Arc<Clients>>,
    /// Answers already made at the current serials (shared by the clones).
    cache: Arc<Answers>,
}

/// The answers to the transfer requests seen last, by the request (without its ID) and the
/// serial they were made at: after each change, every secondary asks the same question (same
/// zone, same serial, and those of one software the same flags), and all but the first get the
/// messages made for the first, their ID patched, instead of the journal decoded and encoded
/// again per secondary. Bounded by [`Answers::BYTES`]; the oldest go first.
#[derive(Debug, Default)]
struct Answers {
    held: parking_lot::Mutex<std::collections::VecDeque<Made>>,
}

/// A request without its ID, the serial its answer was made at, and the answer's messages.
type Made = (Vec<u8>, u32, Arc<Vec<Vec<u8>>>);

impl Answers {
    /// Bytes of messages held at most.
    const BYTES: usize = 32 << 20;

    fn get(&self, request: &[u8], serial: u32) -> Option<Vec<Vec<u8>>> {
        let held = self.held.lock();
        let (_, _, messages) = held.iter().find(|(r, s, _)| *s == serial && r[..] == request[2..])?;
        let mut messages = messages.as_ref().clone();
        for message in &mut messages {
            message[..2].copy_from_slice(&request[..2]);
        }
        Some(messages)
    }

    fn put(&self, request: &[u8], serial: u32, messages: &[Vec<u8>]) {
        let size = |m: &[Vec<u8>]| m.iter().map(Vec::len).sum::<usize>();
        if size(messages) > Self::BYTES / 4 {
            return;
        }
        let mut held = self.held.lock();
        held.retain(|(_, s, _)| *s == serial);
        held.push_back((request[2..].to_vec(), serial, Arc::new(messages.to_vec())));
        while held.iter().map(|(_, _, m)| size(m)).sum::<usize>() > Self::BYTES {
            held.pop_front();
        }
    }
}

impl TransferAcl {
    /// An ACL of these networks (empty: nobody).
    pub fn new(nets: Vec<ipnet::IpNet>) -> Self {
        TransferAcl { nets, clients: None, cache: Arc::default() }
    }

    /// Records in `clients` every peer that transfers (or asks whether it is current).
    pub fn with_clients(mut self, clients: Option<Arc<Clients>>) -> Self {
        self.clients = clients;
        self
    }

    fn saw(&self, peer: IpAddr) {
        if let Some(clients) = &self.clients {
            clients.saw(peer);
        }
    }

    /// Whether `peer` may transfer.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = unmapped(peer);
        self.nets.iter().any(|n| n.contains(&peer))
    }
}

/// The secondaries that transferred a zone recently (`--notify-secondaries`): node-local
/// secondaries are not known in advance, so the NOTIFY task learns them from their transfers.
/// Bounded: at most [`Clients::MAX`] addresses, the least recently seen dropped first.
#[derive(Debug, Default)]
pub struct Clients {
    seen: parking_lot::Mutex<std::collections::HashMap<IpAddr, std::time::Instant>>,
}

impl Clients {
    /// Addresses held at most (a 5,000-node cluster needs 5,000).
    pub const MAX: usize = 65_536;

    /// `peer` transferred a zone (or asked whether its copy is current) just now.
    pub fn saw(&self, peer: IpAddr) {
        let mut seen = self.seen.lock();
        if seen.len() >= Self::MAX
            && !seen.contains_key(&peer)
            && let Some(oldest) = seen.iter().min_by_key(|(_, at)| **at).map(|(ip, _)| *ip)
        {
            seen.remove(&oldest);
        }
        seen.insert(unmapped(peer), std::time::Instant::now());
    }

    /// The addresses seen within `window`; older ones are forgotten.
    pub fn recent(&self, window: std::time::Duration) -> Vec<IpAddr> {
        let mut seen = self.seen.lock();
        seen.retain(|_, at| at.elapsed() < window);
        seen.keys().copied().collect()
    }
}

/// An IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 peer) as the IPv4
/// address it is.
pub fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Whether a TCP query is a zone transfer request (AXFR or IXFR).
pub fn is_transfer(query: &[u8]) -> bool {
    matches!(super::stats::qtype_of(query), Some(rtype::AXFR | rtype::IXFR))
}

/// The response messages to a transfer request from `peer`: the whole zone framed by its SOA, an
/// incremental transfer, or a single REFUSED/NOTAUTH/FORMERR/SERVFAIL message. Each message is
/// finished by `policy` (over TCP).
pub fn respond(index: &Index, query: &[u8], peer: IpAddr, acl: &TransferAcl, policy: &Policy) -> Vec<Vec<u8>> {
    let Ok(request) = Message::from_vec(query) else { return Vec::new() };
    let Some(question) = request.queries.first().cloned() else { return Vec::new() };
    let finish = policy.finish(Head::of(&request), Transport::Tcp, MAX_MESSAGE);
    let (zone_id, client) = match check(index, &request, &question, peer, acl) {
        Ok(checked) => checked,
        Err(code) => return pack(&finish, &question, Vec::new(), rcode_only(code)),
    };
    acl.saw(peer);
    let zone = index.zone(zone_id);
    let authoritative = Sections { flags: flags::AA, ..Sections::default() };
    // The serial and the names (or the journal) as one state: the writer waits meanwhile.
    let gate = index.journal().reading();
    let serial = index.zone_serial(zone_id);
    if let Some(messages) = acl.cache.get(query, serial) {
        drop(gate);
        tracing::debug!(%peer, zone = %zone.name, from = ?client, serial, "zone transfer as made for another secondary");
        return messages;
    }
    let messages = answer(index, zone_id, client, serial, gate, peer);
    let messages = pack(&finish, &question, messages, authoritative);
    acl.cache.put(query, serial, &messages);
    messages
}

/// The records answering a transfer of zone `zone_id` at `serial` to a client at `client`
/// (IXFR) or without a copy (AXFR), read under `gate`.
fn answer(
    index: &Index,
    zone_id: u8,
    client: Option<u32>,
    serial: u32,
    gate: parking_lot::RwLockReadGuard<'_, ()>,
    peer: IpAddr,
) -> Vec<Record> {
    let zone = index.zone(zone_id);
    if let Some(client) = client {
        if !serial_lt(client, serial) {
            drop(gate);
            tracing::debug!(%peer, zone = %zone.name, serial, "IXFR: secondary is current");
            return vec![soa_record(index, zone_id, serial)];
        }
        if let Some(versions) = index.journal().since(client) {
            drop(gate);
            let records = incremental(index, zone_id, serial, &versions);
            tracing::info!(%peer, zone = %zone.name, from = client, serial, versions = versions.len(), "incremental zone transfer");
            return records;
        }
        tracing::info!(%peer, zone = %zone.name, from = client, serial, "IXFR: serial not in the journal; full transfer");
    }
    let snapshot = index.snapshot();
    drop(gate);
    let soa = soa_record(index, zone_id, serial);
    let mut records = vec![soa.clone()];
    for (name, entry) in snapshot {
        if !is_within(name.as_wire(), zone.name.as_wire()) || index.zone_of(name.as_wire()) != Some(zone_id) {
            continue;
        }
        records.extend(entry_records(name.as_wire(), &entry));
    }
    records.push(soa);
    tracing::info!(%peer, zone = %zone.name, serial, records = records.len(), "zone transferred");
    records
}

/// The answer to an IXFR over UDP, written to `out`: the current SOA, with TC set if the client is
/// behind (the difference goes over TCP). None if `query` does not decode (the caller answers).
pub fn ixfr_over_udp(
    index: &Index,
    query: &[u8],
    peer: Option<IpAddr>,
    acl: &TransferAcl,
    policy: &Policy,
    out: &mut [u8],
) -> Option<usize> {
    let request = Message::from_vec(query).ok()?;
    let question = request.queries.first().cloned()?;
    let peer = peer?;
    let finish = policy.finish(Head::of(&request), Transport::Udp, out.len());
    match check(index, &request, &question, peer, acl) {
        Err(code) => finish.records(out, &question, [&[], &[], &[]], rcode_only(code)),
        Ok((zone_id, client)) => {
            acl.saw(peer);
            let serial = index.zone_serial(zone_id);
            let behind = client.is_none_or(|client| serial_lt(client, serial));
            let body = Sections { flags: flags::AA | if behind { flags::TC } else { 0 }, ..Sections::default() };
            finish.records(out, &question, [&[soa_record(index, zone_id, serial)], &[], &[]], body)
        }
    }
}

fn rcode_only(code: ResponseCode) -> Sections {
    Sections { rcode: code.into(), ..Sections::default() }
}

/// Checks a transfer request: the peer may transfer, the question is the apex of a served zone,
/// the index is ready, and an IXFR carries the client's SOA. Returns the zone and, for IXFR,
/// the client's serial.
fn check(
    index: &Index,
    request: &Message,
    question: &Query,
    peer: IpAddr,
    acl: &TransferAcl,
) -> Result<(u8, Option<u32>), ResponseCode> {
    if !acl.allows(peer) {
        tracing::info!(%peer, zone = %question.name(), "zone transfer refused: peer not in --transfer-to");
        return Err(ResponseCode::Refused);
    }
    let lower: Vec<u8> = wire_of(question.name()).iter().map(u8::to_ascii_lowercase).collect();
    let Some(zone_id) = index.zone_of(&lower) else { return Err(ResponseCode::NotAuth) };
    if index.zone(zone_id).name.as_wire() != lower.as_slice() {
        return Err(ResponseCode::NotAuth);
    }
    if request.queries.len() != 1 || question.query_class() != DNSClass::IN {
        return Err(ResponseCode::FormErr);
    }
    if !index.is_ready() {
        return Err(ResponseCode::ServFail);
    }
    if question.query_type() != RecordType::IXFR {
        return Ok((zone_id, None));
    }
    // RFC 1995 §3: "the authority section of the IXFR query contains the SOA record of client's
    // version of the zone".
    let client = request.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) if wire_of(&r.name).eq_ignore_ascii_case(&lower) => Some(soa.serial),
        _ => None,
    });
    match client {
        Some(serial) => Ok((zone_id, Some(serial))),
        None => {
            tracing::info!(%peer, zone = %question.name(), "IXFR without the client's SOA: FORMERR");
            Err(ResponseCode::FormErr)
        }
    }
}

/// Whether serial `a` is before serial `b` (RFC 1982 §3.2; undefined pairs count as not before).
pub fn serial_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 1 << 31
}

/// The zone's SOA at `serial`.
fn soa_record(index: &Index, zone_id: u8, serial: u32) -> Record {
    let zone = index.zone(zone_id);
    let apex = HName::from_ascii(zone.name.to_dotted()).expect("zone names are valid");
    Record::from_rdata(
        apex,
        index.ttl,
        RData::SOA(SOA::new(
            HName::from_ascii(zone.mname.to_dotted()).expect("valid"),
            HName::from_ascii(zone.rname.to_dotted()).expect("valid"),
            serial,
            soa::REFRESH as i32,
            soa::RETRY as i32,
            soa::EXPIRE as i32,
            index.negative_ttl,
        )),
    )
}

/// The IXFR answer records from `versions` (from the client's serial to `serial`), RFC 1995 §4.
/// The journal's versions are the index's (each names the zones it changed): those that did not
/// change this zone are skipped, and the zone's serial steps from one that did to the next.
fn incremental(index: &Index, zone_id: u8, serial: u32, versions: &[Arc<Version>]) -> Vec<Record> {
    let records_of = |rrs: &std::collections::BTreeSet<crate::index::journal::Rr>| {
        rrs.iter().filter_map(|rr| crate::index::journal::from_rr(rr)).collect::<Vec<_>>()
    };
    // (from, to, the zone's difference): empty versions extend the next one, trailing ones the last.
    let mut steps: Vec<(u32, u32, Option<&ZoneDiff>)> = Vec::new();
    let mut from = versions.first().map_or(serial, |v| v.from);
    for version in versions {
        if let Some(diff) = version.zone(zone_id) {
            steps.push((from, version.to, Some(diff)));
            from = version.to;
        }
    }
    match steps.last_mut() {
        Some(last) => last.1 = serial,
        None => steps.push((from, serial, None)),
    }
    let soa = soa_record(index, zone_id, serial);
    let mut records = vec![soa.clone()];
    for (from, to, diff) in steps {
        records.push(soa_record(index, zone_id, from));
        records.extend(diff.map(|d| records_of(&d.deleted)).unwrap_or_default());
        records.push(soa_record(index, zone_id, to));
        records.extend(diff.map(|d| records_of(&d.added)).unwrap_or_default());
    }
    records.push(soa);
    records
}

/// Packs `records` into messages of about 16 KiB, as servers commonly do, each finished by
/// `finish`.
fn pack(finish: &Finish<'_>, question: &Query, records: Vec<Record>, body: Sections) -> Vec<Vec<u8>> {
    let mut out = vec![0u8; MAX_MESSAGE];
    let mut message = |records: &[Record]| {
        let n = finish.records(&mut out, question, [records, &[], &[]], body)?;
        Some(out[..n].to_vec())
    };
    let mut messages = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for record in records {
        let estimate = 64 + rdata_estimate(&record.data);
        if size + estimate > 16 * 1024 && !current.is_empty() {
            messages.extend(message(&current));
            current.clear();
            size = 0;
        }
        size += estimate;
        current.push(record);
    }
    messages.extend(message(&current));
    messages
}

/// About the RDATA's length, without formatting it (formatting every record as text to measure it
/// was 7 % of a primary's CPU while it served fifty secondaries).
fn rdata_estimate(data: &RData) -> usize {
    match data {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        RData::PTR(name) => name.0.len(),
        RData::CNAME(name) => name.0.len(),
        RData::NS(name) => name.0.len(),
        RData::SRV(srv) => 6 + srv.target.len(),
        RData::SOA(soa) => 20 + soa.mname.len() + soa.rname.len(),
        RData::TXT(txt) => txt.txt_data.iter().map(|s| s.len() + 1).sum(),
        other => other.to_string().len(),
    }
}

fn wire_of(name: &HName) -> Vec<u8> {
    let mut wire = Vec::with_capacity(64);
    for label in name.iter() {
        wire.push(label.len() as u8);
        wire.extend_from_slice(label);
    }
    wire.push(0);
    wire
}
