//! Zone transfer (AXFR, RFC 5936) of a served zone to the networks in `--transfer-to`, so a BIND,
//! Knot or NSD secondary can serve a copy, and so `dig AXFR cluster.local` dumps everything served.
//!
//! Denied unless configured. Only over TCP. IXFR is answered with a full transfer, which RFC 1995
//! §4 allows ("the server may respond with a full zone transfer"). The records are read back from
//! the index's stored answers (decoded with hickory-proto), so a transfer shows exactly what
//! queries get; synthesized Pod names (`--pods insecure`) and SRV glue are not part of it.

use std::net::IpAddr;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{DNSClass, Name as HName, RData, Record};

use super::finish::{Head, Policy, Sections, Transport};
use super::name::is_within;
use super::proto::{HEADER_LEN, MAX_MESSAGE, flags, rtype, soa};
use crate::index::Index;

/// Networks allowed to transfer zones.
#[derive(Clone, Debug, Default)]
pub struct TransferAcl {
    nets: Vec<ipnet::IpNet>,
}

impl TransferAcl {
    /// An ACL of these networks (empty: nobody).
    pub fn new(nets: Vec<ipnet::IpNet>) -> Self {
        TransferAcl { nets }
    }

    /// Whether `peer` may transfer.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&peer))
    }
}

/// Whether a TCP query is a zone transfer request (AXFR or IXFR).
pub fn is_transfer(query: &[u8]) -> bool {
    matches!(super::stats::qtype_of(query), Some(rtype::AXFR | rtype::IXFR))
}

/// The response messages to a transfer request from `peer`: the whole zone framed by its SOA, or a
/// single REFUSED/NOTAUTH/SERVFAIL message. Each message is finished by `policy` (over TCP).
pub fn respond(index: &Index, query: &[u8], peer: IpAddr, acl: &TransferAcl, policy: &Policy) -> Vec<Vec<u8>> {
    let Ok(request) = Message::from_vec(query) else { return Vec::new() };
    let Some(question) = request.queries.first().cloned() else { return Vec::new() };
    let finish = policy.finish(Head::of(&request), Transport::Tcp, MAX_MESSAGE);
    let mut out = vec![0u8; MAX_MESSAGE];
    let mut message = |records: &[Record], body: Sections| {
        let n = finish.records(&mut out, &question, [records, &[], &[]], body)?;
        Some(out[..n].to_vec())
    };
    let mut reply = |code: ResponseCode| -> Vec<Vec<u8>> {
        let body = Sections { rcode: code.into(), ..Sections::default() };
        message(&[], body).into_iter().collect()
    };
    if !acl.allows(peer) {
        tracing::info!(%peer, zone = %question.name(), "zone transfer refused: peer not in --transfer-to");
        return reply(ResponseCode::Refused);
    }
    let lower: Vec<u8> = wire_of(question.name()).iter().map(u8::to_ascii_lowercase).collect();
    let Some(zone_id) = index.zone_of(&lower) else { return reply(ResponseCode::NotAuth) };
    let zone = index.zone(zone_id);
    if zone.name.as_wire() != lower.as_slice() {
        return reply(ResponseCode::NotAuth);
    }
    if !index.is_ready() {
        return reply(ResponseCode::ServFail);
    }
    let serial = index.serial();
    let apex = HName::from_ascii(zone.name.to_dotted()).expect("zone names are valid");
    let soa = Record::from_rdata(
        apex.clone(),
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
    );
    let mut records = vec![soa.clone()];
    for (name, entry) in index.snapshot() {
        if !is_within(name.as_wire(), zone.name.as_wire()) || index.zone_of(name.as_wire()) != Some(zone_id) {
            continue;
        }
        for (t, answer) in entry.sets() {
            records.extend(decode(name.as_wire(), t, answer));
        }
    }
    records.push(soa);
    tracing::info!(%peer, zone = %zone.name, serial, records = records.len(), "zone transferred");

    // Pack into messages of about 16 KiB, as servers commonly do.
    let mut messages = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    let body = Sections { flags: flags::AA, ..Sections::default() };
    for record in records {
        let estimate = 64 + record.data.to_string().len();
        if size + estimate > 16 * 1024 && !current.is_empty() {
            messages.extend(message(&current, body));
            current.clear();
            size = 0;
        }
        size += estimate;
        current.push(record);
    }
    messages.extend(message(&current, body));
    messages
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

/// The answer records of a stored answer, decoded by framing it as the response it is spliced into.
fn decode(name: &[u8], t: u16, answer: crate::index::wire::AnswerRef<'_>) -> Vec<Record> {
    let bytes = answer.to_vec();
    let mut message = Vec::with_capacity(HEADER_LEN + name.len() + 4 + bytes.len());
    let arcount = answer.records() as u16 - answer.ancount;
    for v in [0u16, 0x8400, 1, answer.ancount, 0, arcount] {
        message.extend_from_slice(&v.to_be_bytes());
    }
    message.extend_from_slice(name);
    message.extend_from_slice(&t.to_be_bytes());
    message.extend_from_slice(&1u16.to_be_bytes());
    message.extend_from_slice(&bytes);
    match Message::from_vec(&message) {
        Ok(m) => m.answers.into_iter().filter(|r| r.dns_class == DNSClass::IN).collect(),
        Err(error) => {
            tracing::error!(%error, "BUG: a stored answer does not decode; left out of the transfer");
            Vec::new()
        }
    }
}
