//! The general path: everything the fast path does not recognise, decoded with hickory-proto.
//!
//! It decides the unusual outcomes (RFC 1035 §4.1.1, RFC 6891 §6.1.3, RFC 8482) and hands every
//! well-formed question back to the caller as a [`Decoded`] question, which the responder answers
//! as it answers the fast path. Class CHAOS questions (`version.bind`, `hostname.bind`, …) only
//! ever reach this path, since the fast path takes class IN alone, so they cost the IN queries
//! nothing.

use hickory_proto::op::{Message, OpCode};

use super::finish::{Edns, Finish, Sections};
use super::name::MAX_NAME;
use super::proto::{CLASS_CH, CLASS_IN, HEADER_LEN, QUESTION_POINTER, flags, rcode, rtype};
use super::question::Question;

/// The answer to `version.bind` and `version.server`.
const VERSION: &str = concat!("headless-dns ", env!("CARGO_PKG_VERSION"));

/// What the general path makes of a packet.
pub enum General {
    /// Send nothing (a response, or not even a header).
    Drop,
    /// A header-only response with this RCODE (the opcode is not QUERY, or the packet does not
    /// decode to one question).
    HeaderOnly {
        /// The query's ID.
        id: u16,
        /// The query's flags.
        flags: u16,
        /// The RCODE.
        rcode: u16,
    },
    /// Answer this question from the index.
    Answer(Decoded),
    /// A class CHAOS question: see [`chaos`].
    Chaos(Decoded),
    /// An IXFR question (over UDP: see `transfer::ixfr_over_udp`).
    Ixfr(Decoded),
    /// A NOTIFY (RFC 1996) of a zone's change, with the serial of the SOA it may carry: a
    /// secondary answers it and refreshes the zone; any other server says NOTIMP.
    Notify(Decoded, Option<u32>),
    /// A NOTIFY whose question is not a zone's SOA: FORMERR on a secondary, NOTIMP elsewhere
    /// (as any opcode but QUERY is).
    BadNotify(Decoded),
    /// Answer the question with this RCODE and no records.
    Error(Decoded, u16),
}

/// A question decoded by hickory-proto, held in buffers of its own.
pub struct Decoded {
    id: u16,
    flags: u16,
    /// QNAME, QTYPE and QCLASS as the client wrote them, uncompressed.
    asked: Vec<u8>,
    lower: Vec<u8>,
    qtype: u16,
    edns: Option<Edns>,
}

impl Decoded {
    /// The question, as the fast path would have parsed it.
    pub fn question(&self) -> Question<'_> {
        Question {
            id: self.id,
            flags: self.flags,
            asked: &self.asked,
            lower: &self.lower,
            qtype: self.qtype,
            edns: self.edns,
        }
    }
}

/// Decodes a packet the fast path could not read.
pub fn decode(packet: &[u8]) -> General {
    if packet.len() < HEADER_LEN {
        return General::Drop;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let query_flags = u16::from_be_bytes([packet[2], packet[3]]);
    if query_flags & flags::QR != 0 {
        return General::Drop;
    }
    let header_only = |rcode| General::HeaderOnly { id, flags: query_flags, rcode };
    let opcode = query_flags & flags::OPCODE;
    if opcode != 0 && opcode != flags::OPCODE_NOTIFY {
        // QUERY and NOTIFY only (no UPDATE, …), whatever the rest of the packet.
        return header_only(rcode::NOTIMP);
    }
    let Ok(msg) = Message::from_vec(packet) else {
        tracing::trace!(len = packet.len(), "undecodable query: FORMERR");
        return header_only(rcode::FORMERR);
    };
    debug_assert!(matches!(msg.metadata.op_code, OpCode::Query | OpCode::Notify));
    if msg.queries.len() != 1 {
        return header_only(rcode::FORMERR);
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
        return header_only(rcode::FORMERR);
    }
    let lower: Vec<u8> = asked.iter().map(u8::to_ascii_lowercase).collect();
    let qtype = u16::from(query.query_type());
    let qclass = u16::from(query.query_class());
    asked.extend_from_slice(&qtype.to_be_bytes());
    asked.extend_from_slice(&qclass.to_be_bytes());
    let decoded = Decoded { id, flags: query_flags, asked, lower, qtype, edns: msg.edns.as_ref().map(Edns::of) };

    if let Some(e) = &msg.edns
        && e.version() != 0
    {
        // RFC 6891 §6.1.3: BADVERS, with an OPT of the version we do support.
        return General::Error(decoded, rcode::BADVERS);
    }
    if opcode == flags::OPCODE_NOTIFY {
        // RFC 1996 §3.7: the zone's SOA as the question, perhaps its new SOA as the answer.
        if qclass != CLASS_IN || qtype != rtype::SOA {
            return General::BadNotify(decoded);
        }
        let serial = msg.answers.iter().find_map(|r| match &r.data {
            hickory_proto::rr::RData::SOA(soa) => Some(soa.serial),
            _ => None,
        });
        return General::Notify(decoded, serial);
    }
    if qclass == CLASS_CH {
        return General::Chaos(decoded);
    }
    if qclass != CLASS_IN {
        return General::Error(decoded, rcode::REFUSED);
    }
    if qtype == rtype::IXFR {
        // Over UDP, the current SOA (with TC when the client is behind): the responder asks
        // the transfer module. Over TCP, the server hands every transfer to it before this path.
        return General::Ixfr(decoded);
    }
    if qtype == rtype::AXFR {
        // Zone transfers are answered over TCP only (see the transfer module); over UDP, refused.
        return General::Error(decoded, rcode::REFUSED);
    }
    if qtype == rtype::OPT {
        return General::Error(decoded, rcode::FORMERR);
    }
    General::Answer(decoded)
}

/// The CHAOS TXT names servers answer about themselves, as CoreDNS's `chaos` plugin does (class
/// CH, TTL 0, not authoritative): `version.bind` and `version.server` give the version,
/// `hostname.bind` and `id.server` the NSID (`server_id`: `--nsid`, the host name by default;
/// nothing when it is empty). `None` for any other question, which the caller refuses.
pub fn chaos(q: &Question<'_>, server_id: Option<&[u8]>, finish: &Finish<'_>, out: &mut [u8]) -> Option<usize> {
    if q.qtype != rtype::TXT {
        return None;
    }
    let text = match q.lower {
        b"\x07version\x04bind\x00" | b"\x07version\x06server\x00" => VERSION.as_bytes(),
        b"\x08hostname\x04bind\x00" | b"\x02id\x06server\x00" => server_id?,
        _ => return None,
    };
    let mut at = HEADER_LEN + q.asked.len();
    out[HEADER_LEN..at].copy_from_slice(q.asked);
    // One TXT record owned by the question; the text in strings of at most 255 bytes.
    let rdlen = text.len() + text.len().div_ceil(255);
    let mut body = Sections::default();
    if at + 12 + rdlen <= finish.room() {
        for v in [QUESTION_POINTER, rtype::TXT, CLASS_CH, 0, 0, rdlen as u16] {
            out[at..at + 2].copy_from_slice(&v.to_be_bytes());
            at += 2;
        }
        for chunk in text.chunks(255) {
            out[at] = chunk.len() as u8;
            out[at + 1..at + 1 + chunk.len()].copy_from_slice(chunk);
            at += 1 + chunk.len();
        }
        body.an = 1;
    } else {
        body.flags |= flags::TC;
    }
    Some(finish.write(out, at, body))
}

/// A response with the question echoed and no records but the OPT.
pub fn error(q: &Question<'_>, rcode: u16, finish: &Finish<'_>, out: &mut [u8]) -> usize {
    let at = HEADER_LEN + q.asked.len();
    out[HEADER_LEN..at].copy_from_slice(q.asked);
    finish.write(out, at, Sections { rcode, ..Sections::default() })
}
