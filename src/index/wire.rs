//! Ready-to-send answers.
//!
//! An [`Answer`] holds the answer and additional sections of a response to one (name, type),
//! encoded as they will sit in the message: after the 12-byte header and the question, whose
//! name has the same length as the stored name whatever letter case the client used. So every
//! offset is known when the record is built, owner names compress to a pointer at the question
//! (`0xC00C`), and the glue of an SRV answer points at the target inside the SRV record. The
//! server copies the bytes behind the client's own question; it never re-encodes.
//!
//! hickory-proto's encoder is not used here because the server must cut an answer at a record
//! boundary (truncation keeps as many whole records as fit, RFC 2181 §9) and splice it after
//! any question of the same length; both need the record offsets, which we record as we write.
//! Tests decode every kind of answer with hickory-proto to check the encoding.

use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, Record};
use triomphe::ThinArc;

use crate::dns::name::Name;
use crate::dns::proto::{
    CLASS_IN, HEADER_LEN, MAX_MESSAGE, OPT_LEN, QUESTION_POINTER, RECORD_HEAD_LEN, pointer, record_head, rtype,
};
use crate::index::records::Rdata;

/// A pre-encoded RRset (plus glue), ready to follow a question of a known length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// How many of the records are in the answer section; the rest are additional.
    pub ancount: u16,
    /// False when the RRset did not fit in the largest message and was cut: the server then sets
    /// TC even over TCP.
    pub complete: bool,
    /// The records, answer section first.
    pub bytes: Box<[u8]>,
    /// The end offset of each record within `bytes`, in order.
    pub ends: Box<[u16]>,
}

/// Everything a name answers, as the query path reads it: at most one allocation per name.
///
/// With 100,000 Pods the index holds about 240,000 names; as a struct of boxed answers each
/// name cost five allocations and an 80-byte map slot (906 B per endpoint in all). Packed into
/// one byte string each name is one allocation; behind a thin pointer (the length is stored
/// beside the bytes) the entry takes 8 bytes of its map slot. Layout (native byte order; the blob
/// never leaves the process):
///
/// ```text
/// 0: zone   1: flags (APEX, CNAME, ONE)   2: number of sets   3: unused
/// 4: per set, DIR bytes: type u16, ancount u16, records u16, complete u8, unused u8,
///                        start u32 (of its record ends: records × u16, then its bytes), bytes u32
/// ```
///
/// A CNAME, when present, is the first set (it answers every type). A name holding one record
/// of another type, flagged ONE, has no directory: `4: type u16, end u16, then the record`.
///
/// Most names hold a single A or PTR record (a Pod's address, an address's reverse name:
/// 200,000 of the 240,000 names at 100,000 endpoints). Those take no allocation at all: the
/// entry holds the TTL and the address, or the TTL and the target (the index's own name, shared),
/// and the record's 12 fixed bytes (owner pointer, type, class, TTL, length) are written at
/// lookup. That grows every map slot from 16 to 24 bytes (4 MB at 240,000 names) and saves a
/// 48-byte and an 80-byte allocation per endpoint (13 MB): measured on the large shape, RSS
/// 89.1 → 80.5 MiB. It also saves the Pod A query a pointer chase to a cold allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameEntry(Repr);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Repr {
    /// The packed layout above.
    Packed(ThinArc<(), u8>),
    /// One A record, not at an apex.
    Addr { zone: u8, ttl: u32, ip: [u8; 4] },
    /// One PTR record, not at an apex.
    Ptr { zone: u8, ttl: u32, target: Name },
}

// The map's slot is a name and an entry: keep the entry at two words (on 64-bit targets).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(size_of::<Option<NameEntry>>() == 16);

const APEX: u8 = 1;
const HAS_CNAME: u8 = 2;
const ONE: u8 = 4;
const HEAD: usize = 4;
const DIR: usize = 16;

/// A stored answer, borrowed from a [`NameEntry`].
#[derive(Clone, Copy, Debug)]
pub struct AnswerRef<'a> {
    /// How many of the records are in the answer section; the rest are additional.
    pub ancount: u16,
    /// False when the RRset did not fit in the largest message (see [`Answer::complete`]).
    pub complete: bool,
    /// For a record held inline: its owner pointer, type, class, TTL and RDLENGTH, written at
    /// lookup; `bytes` is then its RDATA.
    head: Option<[u8; RECORD_HEAD_LEN]>,
    /// The records, answer section first (after `head`).
    bytes: &'a [u8],
    /// The end offset of each record (u16s, native order); empty with `head`.
    ends: &'a [u8],
}

impl<'a> AnswerRef<'a> {
    /// One record owned by the question, from its type, TTL and RDATA.
    fn inline(rtype: u16, ttl: u32, rdata: &'a [u8]) -> AnswerRef<'a> {
        let head = record_head(HEADER_LEN as u16, rtype, ttl, rdata.len());
        AnswerRef { ancount: 1, complete: true, head: Some(head), bytes: rdata, ends: &[] }
    }

    /// How many records (answer and additional) are stored.
    pub fn records(&self) -> usize {
        if self.head.is_some() { 1 } else { self.ends.len() / 2 }
    }

    /// The end offset of record `i` within the answer's bytes.
    pub fn end(&self, i: usize) -> usize {
        match self.head {
            Some(head) => head.len() + self.bytes.len(),
            None => u16::from_ne_bytes([self.ends[2 * i], self.ends[2 * i + 1]]) as usize,
        }
    }

    /// How many whole records fit in `room` bytes, and the byte length they take.
    pub fn fit(&self, room: usize) -> (usize, usize) {
        // Binary search over the record ends (the partition point of `end <= room`).
        let (mut lo, mut hi) = (0, self.records());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.end(mid) <= room {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let len = if lo == 0 { 0 } else { self.end(lo - 1) };
        (lo, len)
    }

    /// Copies the first `len` bytes of the answer (a length [`AnswerRef::fit`] returned) to `out`.
    #[inline]
    pub fn copy_to(&self, out: &mut [u8], len: usize) {
        match &self.head {
            Some(head) if len > 0 => {
                out[..head.len()].copy_from_slice(head);
                out[head.len()..len].copy_from_slice(&self.bytes[..len - head.len()]);
            }
            _ => out[..len].copy_from_slice(&self.bytes[..len]),
        }
    }

    /// The answer's bytes, copied.
    pub fn to_vec(&self) -> Vec<u8> {
        let len = self.head.map_or(0, |h| h.len()) + self.bytes.len();
        let mut out = vec![0; len];
        self.copy_to(&mut out, len);
        out
    }

    /// The record size and the records, if the answer is two or more same-sized answer records
    /// and nothing else (A or AAAA RRsets), which can be rotated by copying.
    pub fn uniform(&self) -> Option<(usize, &'a [u8])> {
        let count = self.ancount as usize;
        if count < 2 || self.head.is_some() || self.records() != count || !self.complete {
            return None;
        }
        let size = self.end(0);
        (self.bytes.len() == size * count).then_some((size, self.bytes))
    }
}

impl NameEntry {
    /// Packs a name's answers: `cname` (if any) and one answer per type, sorted by type.
    pub fn new(zone: u8, apex: bool, cname: Option<Answer>, rrsets: Vec<(u16, Answer)>) -> NameEntry {
        let flags = if apex { APEX } else { 0 } | if cname.is_some() { HAS_CNAME } else { 0 };
        let sets: Vec<(u16, Answer)> = cname.map(|a| (rtype::CNAME, a)).into_iter().chain(rrsets).collect();
        if let [(t, a)] = &sets[..]
            && a.ends.len() == 1
            && a.ancount == 1
            && a.complete
        {
            let mut blob = Vec::with_capacity(HEAD + 4 + a.bytes.len());
            blob.extend_from_slice(&[zone, flags | ONE, 1, 0]);
            blob.extend_from_slice(&t.to_ne_bytes());
            blob.extend_from_slice(&a.ends[0].to_ne_bytes());
            blob.extend_from_slice(&a.bytes);
            return NameEntry(Repr::Packed(ThinArc::from_header_and_slice((), &blob)));
        }
        let data: usize = sets.iter().map(|(_, a)| a.ends.len() * 2 + a.bytes.len()).sum();
        let mut blob = Vec::with_capacity(HEAD + sets.len() * DIR + data);
        blob.extend_from_slice(&[zone, flags, sets.len() as u8, 0]);
        let mut start = HEAD + sets.len() * DIR;
        for (t, a) in &sets {
            blob.extend_from_slice(&t.to_ne_bytes());
            blob.extend_from_slice(&a.ancount.to_ne_bytes());
            blob.extend_from_slice(&(a.ends.len() as u16).to_ne_bytes());
            blob.extend_from_slice(&[a.complete as u8, 0]);
            blob.extend_from_slice(&(start as u32).to_ne_bytes());
            blob.extend_from_slice(&(a.bytes.len() as u32).to_ne_bytes());
            start += a.ends.len() * 2 + a.bytes.len();
        }
        for (_, a) in &sets {
            for end in &a.ends {
                blob.extend_from_slice(&end.to_ne_bytes());
            }
            blob.extend_from_slice(&a.bytes);
        }
        NameEntry(Repr::Packed(ThinArc::from_header_and_slice((), &blob)))
    }

    /// A name (not an apex) whose only record is one A record, held without an allocation.
    pub fn addr(zone: u8, ttl: u32, ip: Ipv4Addr) -> NameEntry {
        NameEntry(Repr::Addr { zone, ttl, ip: ip.octets() })
    }

    /// A name (not an apex) whose only record is one PTR record to `target`, held without an
    /// allocation of its own. The target is written uncompressed.
    pub fn ptr(zone: u8, ttl: u32, target: Name) -> NameEntry {
        NameEntry(Repr::Ptr { zone, ttl, target })
    }

    /// The packed layout's bytes, if the entry is packed.
    #[inline]
    fn blob(&self) -> Option<&[u8]> {
        match &self.0 {
            Repr::Packed(blob) => Some(&blob.slice),
            _ => None,
        }
    }

    /// Index of the zone the name belongs to (for the SOA of negative answers).
    #[inline]
    pub fn zone(&self) -> u8 {
        match &self.0 {
            Repr::Packed(blob) => blob.slice[0],
            Repr::Addr { zone, .. } | Repr::Ptr { zone, .. } => *zone,
        }
    }

    /// Whether this is a zone apex, whose SOA is written per query.
    #[inline]
    pub fn is_apex(&self) -> bool {
        self.blob().is_some_and(|b| b[1] & APEX != 0)
    }

    /// The CNAME, which answers every type.
    #[inline]
    pub fn cname(&self) -> Option<AnswerRef<'_>> {
        let blob = self.blob()?;
        (blob[1] & HAS_CNAME != 0).then(|| set(blob, 0).1)
    }

    /// The stored answer for `qtype`, if the name has records of that type.
    #[inline]
    pub fn rrset(&self, qtype: u16) -> Option<AnswerRef<'_>> {
        match &self.0 {
            // Compare types in the directory; only the matching set is decoded.
            Repr::Packed(blob) => {
                let blob = &blob.slice[..];
                (0..blob[2] as usize).find(|&i| set_type(blob, i) == qtype).map(|i| set(blob, i).1)
            }
            Repr::Addr { ttl, ip, .. } => (qtype == rtype::A).then(|| AnswerRef::inline(rtype::A, *ttl, ip)),
            Repr::Ptr { ttl, target, .. } => {
                (qtype == rtype::PTR).then(|| AnswerRef::inline(rtype::PTR, *ttl, target.as_wire()))
            }
        }
    }

    /// Every set, a CNAME first, then by type. None for an empty non-terminal: the name exists,
    /// every type is NODATA.
    pub fn sets(&self) -> impl Iterator<Item = (u16, AnswerRef<'_>)> + '_ {
        let inline = match &self.0 {
            Repr::Packed(_) => None,
            Repr::Addr { .. } => Some(rtype::A),
            Repr::Ptr { .. } => Some(rtype::PTR),
        };
        let packed = self.blob().into_iter().flat_map(|blob| (0..blob[2] as usize).map(move |i| set(blob, i)));
        inline.and_then(|t| Some((t, self.rrset(t)?))).into_iter().chain(packed)
    }
}

/// The type of set `i` of a packed entry (the first set's type sits at `HEAD` in both layouts).
fn set_type(blob: &[u8], i: usize) -> u16 {
    let at = HEAD + i * DIR;
    u16::from_ne_bytes([blob[at], blob[at + 1]])
}

/// Set `i` of a packed entry.
fn set(blob: &[u8], i: usize) -> (u16, AnswerRef<'_>) {
    if blob[1] & ONE != 0 {
        let answer = AnswerRef {
            ancount: 1,
            complete: true,
            head: None,
            ends: &blob[HEAD + 2..HEAD + 4],
            bytes: &blob[HEAD + 4..],
        };
        return (u16::from_ne_bytes([blob[HEAD], blob[HEAD + 1]]), answer);
    }
    let d = &blob[HEAD + i * DIR..HEAD + (i + 1) * DIR];
    let u16_at = |at: usize| u16::from_ne_bytes([d[at], d[at + 1]]);
    let u32_at = |at: usize| u32::from_ne_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]) as usize;
    let (records, start, len) = (u16_at(4) as usize, u32_at(8), u32_at(12));
    let ends_end = start + records * 2;
    let answer = AnswerRef {
        ancount: u16_at(2),
        complete: d[6] != 0,
        head: None,
        ends: &blob[start..ends_end],
        bytes: &blob[ends_end..ends_end + len],
    };
    (u16_at(0), answer)
}

/// Address glue for an SRV target.
pub struct Glue<'a> {
    /// The target name.
    pub target: &'a Name,
    /// TTL of its address records.
    pub ttl: u32,
    /// Its addresses.
    pub addrs: smallvec::SmallVec<[IpAddr; 2]>,
}

struct Encoder {
    /// Absolute offset in the message at which `bytes` starts.
    base: usize,
    qname: Name,
    bytes: Vec<u8>,
    ends: Vec<u16>,
    /// Room left for records before the message would exceed [`MAX_MESSAGE`].
    room: usize,
    complete: bool,
}

impl Encoder {
    /// An encoder for `records` records whose RDATA take at most `rdata_len` bytes in all (sized
    /// once, so that a large RRset does not grow its buffer a doubling at a time).
    fn new(qname: &Name, records: usize, rdata_len: usize) -> Encoder {
        let base = HEADER_LEN + qname.as_wire().len() + 4;
        Encoder {
            base,
            qname: qname.clone(),
            bytes: Vec::with_capacity((records * RECORD_HEAD_LEN + rdata_len).min(MAX_MESSAGE)),
            ends: Vec::with_capacity(records),
            room: MAX_MESSAGE - base - OPT_LEN,
            complete: true,
        }
    }

    /// Appends one record whose owner is the question name; `rdata` writes the RDATA and may
    /// note offsets. Returns false (and writes nothing) once the message is full.
    fn record(&mut self, owner: Owner, rtype: u16, ttl: u32, rdata: impl FnOnce(&mut Encoder)) -> bool {
        if !self.complete {
            return false;
        }
        let start = self.bytes.len();
        match owner {
            Owner::Question => self.bytes.extend_from_slice(&QUESTION_POINTER.to_be_bytes()),
            Owner::Pointer(at) => self.bytes.extend_from_slice(&pointer(at).to_be_bytes()),
            Owner::Name(name) => self.name_compressed(&name),
        }
        self.bytes.extend_from_slice(&rtype.to_be_bytes());
        self.bytes.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.bytes.extend_from_slice(&ttl.to_be_bytes());
        let len_at = self.bytes.len();
        self.bytes.extend_from_slice(&[0, 0]);
        rdata(self);
        let rdlen = self.bytes.len() - len_at - 2;
        self.bytes[len_at..len_at + 2].copy_from_slice(&(rdlen as u16).to_be_bytes());
        if self.bytes.len() > self.room {
            self.bytes.truncate(start);
            self.complete = false;
            return false;
        }
        self.ends.push(self.bytes.len() as u16);
        true
    }

    /// Writes `name`, compressing its longest suffix that is also a suffix of the question name
    /// (allowed for owner names and for NS/CNAME/PTR targets, RFC 1035 §4.1.4).
    fn name_compressed(&mut self, name: &Name) {
        let qwire = self.qname.as_wire();
        let mut rest = name.as_wire();
        loop {
            if rest.len() > 1 && rest.len() <= qwire.len() {
                let at = qwire.len() - rest.len();
                if &qwire[at..] == rest && is_label_start(qwire, at) {
                    self.bytes.extend_from_slice(&pointer((HEADER_LEN + at) as u16).to_be_bytes());
                    return;
                }
            }
            let len = rest[0] as usize;
            if len == 0 {
                self.bytes.push(0);
                return;
            }
            self.bytes.extend_from_slice(&rest[..1 + len]);
            rest = &rest[1 + len..];
        }
    }

    fn finish(self, ancount: usize) -> Answer {
        let ancount = ancount.min(self.ends.len());
        Answer {
            ancount: ancount as u16,
            complete: self.complete,
            bytes: self.bytes.into_boxed_slice(),
            ends: self.ends.into_boxed_slice(),
        }
    }
}

enum Owner {
    Question,
    Pointer(u16),
    Name(Name),
}

fn is_label_start(wire: &[u8], at: usize) -> bool {
    let mut i = 0;
    while i < at {
        i += 1 + wire[i] as usize;
    }
    i == at
}

/// The record type of an rdata.
pub fn rdata_type(rdata: &Rdata) -> u16 {
    match rdata {
        Rdata::A(_) => rtype::A,
        Rdata::Aaaa(_) => rtype::AAAA,
        Rdata::Cname(_) => rtype::CNAME,
        Rdata::Ns(_) => rtype::NS,
        Rdata::Ptr(_) => rtype::PTR,
        Rdata::Srv { .. } => rtype::SRV,
        Rdata::Txt(_) => rtype::TXT,
    }
}

/// Encodes one RRset (all `rdata` of one type) at `qname`. SRV answers carry the addresses of
/// their targets (from `glue`) in the additional section, each pointing at its target name
/// inside the SRV record.
pub fn encode_rrset(qname: &Name, ttl: u32, rdata: &[&Rdata], glue: &[Glue<'_>]) -> Answer {
    // Each record is a 2-byte owner pointer, 10 bytes of type, class, TTL and length, and RDATA
    // (names counted uncompressed, so this is an upper bound).
    let rdata_len = |rd: &Rdata| match rd {
        Rdata::A(_) => 4,
        Rdata::Aaaa(_) => 16,
        Rdata::Cname(n) | Rdata::Ns(n) | Rdata::Ptr(n) => n.as_wire().len(),
        Rdata::Srv { target, .. } => 6 + target.as_wire().len(),
        Rdata::Txt(text) => text.len() + text.len() / 255 + 1,
    };
    let glue_records: usize = glue.iter().map(|g| g.addrs.len()).sum();
    let glue_len: usize = glue.iter().flat_map(|g| &g.addrs).map(|ip| if ip.is_ipv4() { 4 } else { 16 }).sum();
    let len = rdata.iter().map(|rd| rdata_len(rd)).sum::<usize>() + glue_len;
    let mut enc = Encoder::new(qname, rdata.len() + glue_records, len);
    // Kubernetes DNS spec §2.3.2/§2.4.2 and CoreDNS: priority 0, weight ⌊100/N⌋, at least 1.
    let weight = (100 / rdata.len().max(1)).max(1) as u16;
    // Where each SRV target was written, for the glue's owner pointers (a map: O(records)).
    let mut targets: std::collections::HashMap<&Name, u16, foldhash::fast::RandomState> =
        std::collections::HashMap::with_capacity_and_hasher(glue.len(), Default::default());
    for rd in rdata {
        let rtype = rdata_type(rd);
        let written = enc.record(Owner::Question, rtype, ttl, |e| match rd {
            Rdata::A(v4) => e.bytes.extend_from_slice(&v4.octets()),
            Rdata::Aaaa(v6) => e.bytes.extend_from_slice(&v6.octets()),
            Rdata::Cname(n) | Rdata::Ns(n) | Rdata::Ptr(n) => e.name_compressed(n),
            Rdata::Srv { port, target } => {
                e.bytes.extend_from_slice(&0u16.to_be_bytes());
                e.bytes.extend_from_slice(&weight.to_be_bytes());
                e.bytes.extend_from_slice(&port.to_be_bytes());
                // RFC 2782: the target is not compressed; remember where it is for the glue.
                let at = e.base + e.bytes.len();
                if at < 0x4000 {
                    targets.entry(target).or_insert(at as u16);
                }
                e.bytes.extend_from_slice(target.as_wire());
            }
            Rdata::Txt(text) => {
                for chunk in text.as_bytes().chunks(255) {
                    e.bytes.push(chunk.len() as u8);
                    e.bytes.extend_from_slice(chunk);
                }
            }
        });
        if !written {
            break;
        }
    }
    let ancount = enc.ends.len();
    for g in glue {
        let owner = match targets.get(g.target) {
            Some(&at) => Owner::Pointer(at),
            None => Owner::Name(g.target.clone()),
        };
        for &ip in &g.addrs {
            let owner = match &owner {
                Owner::Pointer(at) => Owner::Pointer(*at),
                _ => Owner::Name(g.target.clone()),
            };
            let rtype = if ip.is_ipv4() { rtype::A } else { rtype::AAAA };
            let written = enc.record(owner, rtype, g.ttl, |e| match ip {
                IpAddr::V4(v4) => e.bytes.extend_from_slice(&v4.octets()),
                IpAddr::V6(v6) => e.bytes.extend_from_slice(&v6.octets()),
            });
            if !written {
                // Glue is optional: a full message keeps its answers complete.
                enc.complete = true;
                return enc.finish(ancount);
            }
        }
    }
    enc.finish(ancount)
}

// === decoding stored answers (zone transfer, the IXFR journal) ===

/// The records of a stored entry (its answers, not their glue), as a transfer sends them.
pub fn entry_records(name: &[u8], entry: &NameEntry) -> Vec<Record> {
    entry.sets().flat_map(|(t, answer)| decode(name, t, answer)).collect()
}

/// The answer records of a stored answer, decoded by framing it as the response it is spliced into.
pub(crate) fn decode(name: &[u8], t: u16, answer: AnswerRef<'_>) -> Vec<Record> {
    decode_records(name, t, answer.ancount, answer.records() as u16 - answer.ancount, &answer.to_vec())
}

/// Stored records (`ancount` answer records, then `arcount` additional ones), decoded after a
/// question for `name` and `t`, as in the response they are spliced into.
pub(crate) fn decode_records(name: &[u8], t: u16, ancount: u16, arcount: u16, bytes: &[u8]) -> Vec<Record> {
    let mut message = Vec::with_capacity(HEADER_LEN + name.len() + 4 + bytes.len());
    for v in [0u16, 0x8400, 1, ancount, 0, arcount] {
        message.extend_from_slice(&v.to_be_bytes());
    }
    message.extend_from_slice(name);
    message.extend_from_slice(&t.to_be_bytes());
    message.extend_from_slice(&1u16.to_be_bytes());
    message.extend_from_slice(bytes);
    match Message::from_vec(&message) {
        Ok(m) => m.answers.into_iter().filter(|r| r.dns_class == DNSClass::IN).collect(),
        Err(error) => {
            tracing::error!(%error, "BUG: a stored answer does not decode; left out of the transfer");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads an entry's set back as an [`Answer`].
    fn answer(a: AnswerRef<'_>) -> Answer {
        Answer {
            ancount: a.ancount,
            complete: a.complete,
            bytes: a.to_vec().into(),
            ends: (0..a.records()).map(|i| a.end(i) as u16).collect(),
        }
    }

    #[test]
    fn inline_entries_answer_as_the_packed_layout_does() {
        let name = Name::parse("web-0.nginx.default.svc.cluster.local").unwrap();
        let reverse = Name::parse("5.1.244.10.in-addr.arpa").unwrap();
        let ip = "10.244.1.5".parse().unwrap();
        let cases = [
            (NameEntry::addr(2, 30, ip), &name, rtype::A, Rdata::A(ip)),
            (NameEntry::ptr(2, 30, name.clone()), &reverse, rtype::PTR, Rdata::Ptr(name.clone())),
        ];
        for (inline, owner, t, rdata) in cases {
            let packed = encode_rrset(owner, 30, &[&rdata], &[]);
            assert_eq!((inline.zone(), inline.is_apex(), inline.cname().is_none()), (2, false, true));
            assert_eq!(inline.rrset(t).map(answer).as_ref(), Some(&packed), "{owner}");
            assert!(inline.rrset(rtype::AAAA).is_none());
            let sets: Vec<(u16, Answer)> = inline.sets().map(|(t, a)| (t, answer(a))).collect();
            assert_eq!(sets, vec![(t, packed.clone())]);
            // A cut answer keeps whole records only: all of it or nothing.
            let stored = inline.rrset(t).unwrap();
            assert_eq!(stored.fit(packed.bytes.len() - 1), (0, 0));
            assert_eq!(stored.fit(packed.bytes.len()), (1, packed.bytes.len()));
        }
    }

    #[test]
    fn one_record_entries_read_back_as_stored_and_take_less_room() {
        let name = Name::parse("web-0.nginx.default.svc.cluster.local").unwrap();
        let (a1, a2) = (Rdata::A("10.0.0.1".parse().unwrap()), Rdata::A("10.0.0.2".parse().unwrap()));
        let one = encode_rrset(&name, 30, &[&a1], &[]);
        let two = encode_rrset(&name, 30, &[&a1, &a2], &[]);
        for (apex, cname) in [(false, None), (true, None), (false, Some(one.clone()))] {
            let single = NameEntry::new(3, apex, cname.clone(), vec![(rtype::A, one.clone())]);
            let double = NameEntry::new(3, apex, cname.clone(), vec![(rtype::A, two.clone())]);
            for (entry, stored) in [(&single, &one), (&double, &two)] {
                assert_eq!((entry.zone(), entry.is_apex()), (3, apex));
                assert_eq!(entry.cname().map(answer), cname);
                assert_eq!(entry.rrset(rtype::A).map(answer).as_ref(), Some(stored));
                assert!(entry.rrset(rtype::AAAA).is_none());
                let types: Vec<u16> = entry.sets().map(|(t, _)| t).collect();
                assert_eq!(types, if cname.is_some() { vec![rtype::CNAME, rtype::A] } else { vec![rtype::A] });
            }
            if cname.is_none() {
                // No directory: the type and the record's end, then the record.
                assert_eq!(single.blob().unwrap().len(), HEAD + 4 + one.bytes.len());
                assert_eq!(double.blob().unwrap().len(), HEAD + DIR + 4 + two.bytes.len());
            }
        }
    }
}
