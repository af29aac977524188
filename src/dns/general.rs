//! The general path: everything the fast path does not recognise, decoded with hickory-proto.
//!
//! It decides the unusual outcomes (RFC 1035 §4.1.1, RFC 6891 §6.1.3, RFC 8482) and hands every
//! well-formed question to [`Responder::answer`], the same code that answers the fast path.
//! Class CHAOS questions (`version.bind`, `hostname.bind`, …) only ever reach this path, since the
//! fast path takes class IN alone, so they cost the IN queries nothing.

use hickory_proto::op::{Message, OpCode};
use hickory_proto::rr::rdata::opt::EdnsCode;

use super::answer::{
    CD, Caps, Edns, Outcome, QR, Question, RD, Responder, TC, Transport, rcode, write_header, write_opt,
};
use super::name::MAX_NAME;
use crate::index::wire::{CLASS_IN, OPT_LEN, rtype};

/// The CHAOS class (RFC 1035 §3.2.4).
const CLASS_CH: u16 = 3;
/// The answer to `version.bind` and `version.server`.
const VERSION: &str = concat!("headless-dns ", env!("CARGO_PKG_VERSION"));

/// Answers a packet the fast path could not; `None` means drop it.
pub fn respond(r: &Responder, packet: &[u8], transport: Transport, out: &mut [u8], caps: Caps) -> Outcome {
    if packet.len() < 12 {
        return Outcome::Drop;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    if flags & QR != 0 {
        return Outcome::Drop;
    }
    let opcode_bits = flags & 0x7800;
    let header_only = |out: &mut [u8], rcode: u8| {
        write_header(out, id, QR | opcode_bits | (flags & RD) | rcode as u16, 0, 0, 0, 0);
        Outcome::Reply(12)
    };
    if opcode_bits != 0 {
        // Only QUERY is implemented (no NOTIFY, UPDATE, …), whatever the rest of the packet.
        return header_only(out, rcode::NOTIMP);
    }
    let Ok(msg) = Message::from_vec(packet) else {
        tracing::trace!(len = packet.len(), "undecodable query: FORMERR");
        return header_only(out, rcode::FORMERR);
    };
    debug_assert_eq!(msg.metadata.op_code, OpCode::Query);
    if msg.queries.len() != 1 {
        return header_only(out, rcode::FORMERR);
    }
    let query = &msg.queries[0];

    // The question as the client wrote it, uncompressed, and its lower-case form.
    let mut asked = Vec::with_capacity(MAX_NAME + 4);
    for label in query.name().iter() {
        asked.push(label.len() as u8);
        asked.extend_from_slice(label);
    }
    asked.push(0);
    if asked.len() > MAX_NAME {
        return header_only(out, rcode::FORMERR);
    }
    let lower: Vec<u8> = asked.iter().map(u8::to_ascii_lowercase).collect();
    let qtype = u16::from(query.query_type());
    let qclass = u16::from(query.query_class());
    asked.extend_from_slice(&qtype.to_be_bytes());
    asked.extend_from_slice(&qclass.to_be_bytes());

    let edns = msg.edns.as_ref().map(|e| Edns {
        udp_size: e.max_payload(),
        dnssec_ok: e.flags().dnssec_ok,
        nsid: e.option(EdnsCode::NSID).is_some(),
    });
    let q = Question { id, flags, asked: &asked, lower: &lower, qtype, edns };

    if let Some(e) = &msg.edns
        && e.version() != 0
    {
        // RFC 6891 §6.1.3: BADVERS, with an OPT of the version we do support.
        return Outcome::Reply(error_with_question(&q, (rcode::BADVERS & 0xF) as u8, (rcode::BADVERS >> 4) as u8, out));
    }
    if qclass == CLASS_CH
        && let Some(n) = chaos(r, &q, transport, out)
    {
        return Outcome::Reply(n);
    }
    if qclass != CLASS_IN {
        return Outcome::Reply(error_with_question(&q, rcode::REFUSED, 0, out));
    }
    // IXFR over UDP: the current SOA, with TC when the client is behind (transfer.rs).
    if qtype == rtype::IXFR
        && transport == Transport::Udp
        && let Some(n) = crate::transfer::ixfr_over_udp(r.index(), packet, caps.client, r.transfer_acl(), out)
    {
        return Outcome::Reply(n);
    }
    if matches!(qtype, rtype::AXFR | rtype::IXFR) {
        // AXFR is only over TCP (server.rs sends transfers to transfer.rs).
        return Outcome::Reply(error_with_question(&q, rcode::REFUSED, 0, out));
    }
    if qtype == rtype::OPT {
        return Outcome::Reply(error_with_question(&q, rcode::FORMERR, 0, out));
    }
    r.answer(&q, transport, out, caps)
}

/// The CHAOS TXT names servers answer about themselves, as CoreDNS's `chaos` plugin does (class
/// CH, TTL 0, not authoritative): `version.bind` and `version.server` give the version,
/// `hostname.bind` and `id.server` the NSID (`--nsid`, the host name by default; nothing when it
/// is empty). `None` for any other question, which the caller refuses.
fn chaos(r: &Responder, q: &Question<'_>, transport: Transport, out: &mut [u8]) -> Option<usize> {
    if q.qtype != rtype::TXT {
        return None;
    }
    let text = match q.lower {
        b"\x07version\x04bind\x00" | b"\x07version\x06server\x00" => VERSION.as_bytes(),
        b"\x08hostname\x04bind\x00" | b"\x02id\x06server\x00" => r.server_id()?,
        _ => return None,
    };
    let nsid = r.nsid_for(q);
    let room = r.limit(q, transport, out).saturating_sub(if q.edns.is_some() { OPT_LEN + nsid.len() } else { 0 });
    let mut at = 12 + q.asked.len();
    out[12..at].copy_from_slice(q.asked);
    // One TXT record owned by the question (a pointer to offset 12); the text in strings of at
    // most 255 bytes.
    let rdlen = text.len() + text.len().div_ceil(255);
    let mut flags = QR | (q.flags & (RD | CD));
    let mut an = 0;
    if at + 12 + rdlen <= room {
        for v in [0xC00C, rtype::TXT, CLASS_CH, 0, 0, rdlen as u16] {
            out[at..at + 2].copy_from_slice(&v.to_be_bytes());
            at += 2;
        }
        for chunk in text.chunks(255) {
            out[at] = chunk.len() as u8;
            out[at + 1..at + 1 + chunk.len()].copy_from_slice(chunk);
            at += 1 + chunk.len();
        }
        an = 1;
    } else {
        flags |= TC;
    }
    let mut ar = 0;
    if let Some(edns) = q.edns {
        write_opt(out, &mut at, 1232, 0, edns.dnssec_ok, nsid);
        ar = 1;
    }
    write_header(out, q.id, flags, 1, an, 0, ar);
    Some(at)
}

/// A response with the question echoed and no records but the OPT.
fn error_with_question(q: &Question<'_>, rcode: u8, ext_rcode: u8, out: &mut [u8]) -> usize {
    let mut at = 12 + q.asked.len();
    out[12..at].copy_from_slice(q.asked);
    let mut ar = 0;
    if let Some(edns) = q.edns {
        write_opt(out, &mut at, 1232, ext_rcode, edns.dnssec_ok, &[]);
        ar = 1;
    }
    write_header(out, q.id, QR | (q.flags & RD) | rcode as u16, 1, 0, 0, ar);
    at
}
