//! Finishing a response: the one place that decides, for every path (the fast path, the general
//! path's errors and CHAOS answers, forwarding, autopath, zone transfer), how large a response
//! may be, what OPT record it carries, how it is truncated and which header flags it echoes.
//!
//! - Size (RFC 1035 §4.2.1, RFC 6891 §6.2.5): over TCP 65,535 bytes; over UDP the client's EDNS
//!   size, at least 512, capped by `--max-udp-size`; 512 without EDNS.
//! - OPT (RFC 6891 §6.1.1, RFC 3225 §3, RFC 5001): only to a query that had one; it advertises
//!   `--max-udp-size`, echoes the DO bit, carries the extended RCODE and, when asked, the NSID.
//! - Truncation (RFC 2181 §9): keep the whole records that fit, in order, and set TC when an
//!   answer or authority record was left out. Never an empty response when records fit: musl
//!   before 1.2.4 has no TCP fallback and uses whatever a truncated answer holds.
//! - Flags: QR, and RD and CD copied from the query (RFC 1035 §4.1.1, RFC 4035 §3.1.6); AA, TC
//!   and RA are the path's to add.
//!
//! As hickory's `MessageResponseBuilder` and CoreDNS's `request.SizeAndDo`/`Scrub` do. Paths that
//! write bytes themselves (the fast path) ask [`Finish::room`] how much they may write and end
//! with [`Finish::write`]; paths holding hickory-proto records end with [`Finish::records`].

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::Record;
use hickory_proto::rr::rdata::opt::EdnsCode;
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use super::proto::{HEADER_LEN, MAX_MESSAGE, MIN_UDP, OPT_LEN, OPTION_NSID, Opt, flags, write_header, write_opt};

/// The longest NSID answered (the rest of `--nsid` is cut): with the OPT and the longest
/// question it still fits a 512-byte response, so the room left for records is never negative.
const MAX_NSID: usize = 200;

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

impl Edns {
    /// The parts of a decoded OPT record that shape the response.
    pub fn of(edns: &hickory_proto::op::Edns) -> Edns {
        Edns {
            udp_size: edns.max_payload(),
            dnssec_ok: edns.flags().dnssec_ok,
            nsid: edns.option(EdnsCode::NSID).is_some(),
        }
    }
}

/// What a response echoes of its query: the message ID, the header flags and the OPT record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Message ID.
    pub id: u16,
    /// The query's header flags.
    pub flags: u16,
    /// The query's OPT record, if any.
    pub edns: Option<Edns>,
}

impl Head {
    /// The head of a query decoded by hickory-proto.
    pub fn of(query: &Message) -> Head {
        let m = &query.metadata;
        let flags = if m.recursion_desired { flags::RD } else { 0 } | if m.checking_disabled { flags::CD } else { 0 };
        Head { id: m.id, flags, edns: query.edns.as_ref().map(Edns::of) }
    }
}

/// The server's side of the negotiation, fixed for its lifetime: `--max-udp-size` and `--nsid`.
#[derive(Clone, Debug)]
pub struct Policy {
    max_udp: u16,
    /// The NSID option (code, length, data), pre-encoded.
    nsid: Option<Box<[u8]>>,
}

// === impl Policy ===

impl Policy {
    /// Caps UDP responses at `max_udp` bytes (at least 512); no NSID.
    pub fn new(max_udp: u16) -> Policy {
        Policy { max_udp: max_udp.max(MIN_UDP), nsid: None }
    }

    /// Answers NSID requests with `id` (at most 200 bytes of it); an empty id disables it.
    pub fn with_nsid(mut self, id: &[u8]) -> Policy {
        self.nsid = (!id.is_empty()).then(|| {
            let len = id.len().min(MAX_NSID) as u16;
            let mut option = Vec::with_capacity(4 + len as usize);
            option.extend_from_slice(&OPTION_NSID.to_be_bytes());
            option.extend_from_slice(&len.to_be_bytes());
            option.extend_from_slice(&id[..len as usize]);
            option.into_boxed_slice()
        });
        self
    }

    /// The largest UDP response (at least 512 bytes).
    pub fn max_udp(&self) -> u16 {
        self.max_udp
    }

    /// The server's identity (the NSID), if it has one.
    pub fn server_id(&self) -> Option<&[u8]> {
        self.nsid.as_deref().map(|option| &option[4..])
    }

    /// How to finish the response to a query with `head` over `transport`, written into a
    /// buffer of `out_len` bytes.
    #[inline]
    pub fn finish(&self, head: Head, transport: Transport, out_len: usize) -> Finish<'_> {
        let limit = match (transport, head.edns) {
            (Transport::Tcp, _) => MAX_MESSAGE,
            (Transport::Udp, Some(e)) => e.udp_size.clamp(MIN_UDP, self.max_udp) as usize,
            (Transport::Udp, None) => MIN_UDP as usize,
        };
        let nsid = match (&self.nsid, head.edns) {
            (Some(option), Some(e)) if e.nsid => option,
            _ => &[][..],
        };
        Finish { head, limit: limit.min(out_len), max_udp: self.max_udp, nsid }
    }
}

/// How one response is finished (see the module doc).
#[derive(Clone, Copy, Debug)]
pub struct Finish<'a> {
    head: Head,
    limit: usize,
    max_udp: u16,
    nsid: &'a [u8],
}

/// What a response's body holds and how it ends: the flags a path adds to those
/// [`Finish`] echoes (AA, TC, RA), the RCODE (up to 12 bits) and the record counts of the answer,
/// authority and additional sections (without the OPT, which [`Finish`] adds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sections {
    /// AA, TC, RA as the path decided.
    pub flags: u16,
    /// The RCODE, extended RCODEs included.
    pub rcode: u16,
    /// Answer records.
    pub an: u16,
    /// Authority records.
    pub ns: u16,
    /// Additional records (the OPT not counted).
    pub ar: u16,
}

// === impl Finish ===

impl Finish<'_> {
    /// The largest response allowed.
    #[inline]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes the header, question and records may take: the limit less the OPT record.
    #[inline]
    pub fn room(&self) -> usize {
        self.limit - self.opt_len()
    }

    fn opt_len(&self) -> usize {
        if self.head.edns.is_some() { OPT_LEN + self.nsid.len() } else { 0 }
    }

    /// Appends the OPT record (if the query had one) after the `at` bytes written and writes the
    /// header (QDCOUNT 1); returns the response's length.
    #[inline]
    pub fn write(&self, out: &mut [u8], mut at: usize, body: Sections) -> usize {
        let mut ar = body.ar;
        if let Some(edns) = self.head.edns {
            let opt = Opt {
                udp_size: self.max_udp,
                ext_rcode: (body.rcode >> 4) as u8,
                dnssec_ok: edns.dnssec_ok,
                options: self.nsid,
            };
            write_opt(out, &mut at, opt);
            ar += 1;
        }
        let flags = flags::QR | (self.head.flags & (flags::RD | flags::CD)) | body.flags | (body.rcode & 0xF);
        write_header(out, self.head.id, flags, [1, body.an, body.ns, ar]);
        at
    }

    /// Writes a response of `question` and hickory-proto `sections` (answer, authority,
    /// additional) into `out`, keeping the whole records that fit; `None` if it cannot be encoded.
    pub fn records(&self, out: &mut [u8], question: &Query, sections: [&[Record]; 3], body: Sections) -> Option<usize> {
        let mut buf = Vec::with_capacity(self.limit.min(4096));
        // Record by record with one encoder, so names compress as in a whole message and every
        // record boundary is known; compression pointers only point backwards, so a cut at a
        // boundary leaves every pointer valid.
        let mut ends: [Vec<usize>; 3] = Default::default();
        {
            let mut encoder = BinEncoder::new(&mut buf);
            encoder.emit_vec(&[0; HEADER_LEN]).ok()?;
            question.emit(&mut encoder).ok()?;
            for (section, records) in sections.iter().enumerate() {
                for record in *records {
                    record.emit(&mut encoder).ok()?;
                    ends[section].push(encoder.offset());
                }
            }
        }
        let room = self.room();
        let question_end = HEADER_LEN + question.to_bytes().ok()?.len();
        if question_end > room.min(out.len()) {
            return None;
        }
        let mut counts = [0u16; 3];
        let mut len = question_end;
        let mut cut = false;
        for (section, ends) in ends.iter().enumerate() {
            let fit = ends.partition_point(|&end| end <= room);
            if fit < ends.len() {
                cut |= section < 2;
            }
            if let Some(&end) = fit.checked_sub(1).and_then(|i| ends.get(i)) {
                len = end;
            }
            counts[section] = fit as u16;
            if fit < ends.len() {
                break;
            }
        }
        out[..len].copy_from_slice(&buf[..len]);
        let flags = body.flags | if cut { flags::TC } else { 0 };
        let [an, ns, ar] = counts;
        Some(self.write(out, len, Sections { flags, rcode: body.rcode, an, ns, ar }))
    }
}

/// A header-only response (no question, no OPT) to a query that cannot be read further, with its
/// opcode and RD echoed; returns its length.
pub fn header_only(out: &mut [u8], id: u16, query_flags: u16, rcode: u16) -> usize {
    let flags = flags::QR | (query_flags & (flags::OPCODE | flags::RD)) | (rcode & 0xF);
    write_header(out, id, flags, [0; 4]);
    HEADER_LEN
}
