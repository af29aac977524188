//! The general path: everything the fast path does not recognise, decoded with hickory-proto.
//!
//! It decides the unusual outcomes (RFC 1035 §4.1.1, RFC 6891 §6.1.3, RFC 8482) and hands every
//! well-formed question to [`Responder::answer`], the same code that answers the fast path.

use hickory_proto::op::{Message, OpCode};
use hickory_proto::rr::rdata::opt::EdnsCode;

use super::answer::{Caps, Edns, Outcome, Question, Responder, Transport, rcode, write_header, write_opt};
use super::name::MAX_NAME;
use crate::index::wire::{CLASS_IN, rtype};

const QR: u16 = 0x8000;
const RD: u16 = 0x0100;

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
    if qclass != CLASS_IN {
        return Outcome::Reply(error_with_question(&q, rcode::REFUSED, 0, out));
    }
    if matches!(qtype, rtype::AXFR | rtype::IXFR) {
        // Zone transfers are denied unless configured (not yet supported at all).
        return Outcome::Reply(error_with_question(&q, rcode::REFUSED, 0, out));
    }
    if qtype == rtype::OPT {
        return Outcome::Reply(error_with_question(&q, rcode::FORMERR, 0, out));
    }
    r.answer(&q, transport, out, caps)
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
