//! The DNS wire vocabulary: protocol numbers and the writers of the fixed-shape parts of a
//! message (header, OPT, one SOA or address record). Each number is defined here once.
//!
//! A leaf module: it imports nothing from the crate, so the index (which stores records in this
//! vocabulary) and the responders can both use it without depending on each other.

use std::net::IpAddr;

/// Length of the message header (RFC 1035 §4.1.1).
pub const HEADER_LEN: usize = 12;
/// The largest DNS message (a TCP length prefix is 16 bits, RFC 1035 §4.2.2).
pub const MAX_MESSAGE: usize = 65535;
/// The largest UDP response to a query without EDNS, and the least a client may offer with it
/// (RFC 1035 §4.2.1, RFC 6891 §6.2.5).
pub const MIN_UDP: u16 = 512;
/// The default `--max-udp-size`: a response of at most 1232 bytes is not fragmented on any IPv6
/// path (DNS Flag Day 2020).
pub const DEFAULT_MAX_UDP: u16 = 1232;
/// Bytes an OPT record without options takes (RFC 6891 §6.1.2).
pub const OPT_LEN: usize = 11;
/// Bytes of a record before its RDATA when the owner is a compression pointer: pointer, type,
/// class, TTL, RDLENGTH.
pub const RECORD_HEAD_LEN: usize = 12;
/// A compression pointer to message offset `offset` (RFC 1035 §4.1.4).
pub const fn pointer(offset: u16) -> u16 {
    0xC000 | offset
}
/// The compression pointer to the question name, which always starts at offset 12.
pub const QUESTION_POINTER: u16 = pointer(HEADER_LEN as u16);
/// EDNS option code of NSID (RFC 5001).
pub const OPTION_NSID: u16 = 3;

/// Class IN.
pub const CLASS_IN: u16 = 1;
/// Class CHAOS (RFC 1035 §3.2.4).
pub const CLASS_CH: u16 = 3;

/// Header flag bits (RFC 1035 §4.1.1, RFC 4035 §3.1.6).
pub mod flags {
    /// A response.
    pub const QR: u16 = 0x8000;
    /// The OPCODE field.
    pub const OPCODE: u16 = 0x7800;
    /// OPCODE NOTIFY (RFC 1996), in place in the flags word.
    pub const OPCODE_NOTIFY: u16 = 4 << 11;
    /// Authoritative answer.
    pub const AA: u16 = 0x0400;
    /// Truncated.
    pub const TC: u16 = 0x0200;
    /// Recursion desired.
    pub const RD: u16 = 0x0100;
    /// Recursion available.
    pub const RA: u16 = 0x0080;
    /// Checking disabled.
    pub const CD: u16 = 0x0010;
    /// The DO bit in an OPT record's flags (RFC 3225 §3).
    pub const DO: u16 = 0x8000;
}

/// Record types (RFC 1035 §3.2.2, RFC 3596, RFC 2782, RFC 6891).
pub mod rtype {
    /// IPv4 address.
    pub const A: u16 = 1;
    /// Name server.
    pub const NS: u16 = 2;
    /// Alias.
    pub const CNAME: u16 = 5;
    /// Start of authority.
    pub const SOA: u16 = 6;
    /// Reverse pointer.
    pub const PTR: u16 = 12;
    /// Text.
    pub const TXT: u16 = 16;
    /// IPv6 address.
    pub const AAAA: u16 = 28;
    /// Service location.
    pub const SRV: u16 = 33;
    /// EDNS pseudo-record.
    pub const OPT: u16 = 41;
    /// Incremental zone transfer.
    pub const IXFR: u16 = 251;
    /// Zone transfer.
    pub const AXFR: u16 = 252;
    /// Any type (RFC 8482 minimal answers).
    pub const ANY: u16 = 255;
}

/// RCODEs (RFC 1035 §4.1.1, RFC 6891 §9). Up to 12 bits: the low 4 sit in the header, the rest
/// in the OPT record.
pub mod rcode {
    /// No error.
    pub const NOERROR: u16 = 0;
    /// Format error.
    pub const FORMERR: u16 = 1;
    /// Server failure.
    pub const SERVFAIL: u16 = 2;
    /// Name does not exist.
    pub const NXDOMAIN: u16 = 3;
    /// Not implemented.
    pub const NOTIMP: u16 = 4;
    /// Refused.
    pub const REFUSED: u16 = 5;
    /// Not authoritative for the zone.
    pub const NOTAUTH: u16 = 9;
    /// Bad EDNS version (extended RCODE 16: 4 low bits 0, OPT carries 1).
    pub const BADVERS: u16 = 16;
}

/// The SOA timers we publish (CoreDNS's): refresh, retry and expire, in seconds. The serial and
/// the minimum (the negative TTL) come from the index.
pub mod soa {
    /// How often a secondary checks the serial.
    pub const REFRESH: u32 = 7200;
    /// How soon a secondary retries a failed refresh.
    pub const RETRY: u32 = 1800;
    /// How long a secondary serves without reaching its primary.
    pub const EXPIRE: u32 = 86400;
}

/// Writes a header.
pub fn write_header(out: &mut [u8], id: u16, flags: u16, counts: [u16; 4]) {
    let [qd, an, ns, ar] = counts;
    for (i, v) in [id, flags, qd, an, ns, ar].into_iter().enumerate() {
        out[i * 2..i * 2 + 2].copy_from_slice(&v.to_be_bytes());
    }
}

/// The fields of an OPT record (RFC 6891 §6.1.2); version 0.
#[derive(Clone, Copy, Debug)]
pub struct Opt<'a> {
    /// The UDP payload size we accept.
    pub udp_size: u16,
    /// The upper 8 bits of the RCODE.
    pub ext_rcode: u8,
    /// The DO bit.
    pub dnssec_ok: bool,
    /// The options, pre-encoded (code, length, data).
    pub options: &'a [u8],
}

/// Appends an OPT record.
pub fn write_opt(out: &mut [u8], at: &mut usize, opt: Opt<'_>) {
    let options = opt.options;
    let o = &mut out[*at..*at + OPT_LEN + options.len()];
    o[0] = 0;
    o[1..3].copy_from_slice(&rtype::OPT.to_be_bytes());
    o[3..5].copy_from_slice(&opt.udp_size.to_be_bytes());
    o[5] = opt.ext_rcode;
    o[6] = 0;
    o[7..9].copy_from_slice(&(if opt.dnssec_ok { flags::DO } else { 0 }).to_be_bytes());
    o[9..11].copy_from_slice(&(options.len() as u16).to_be_bytes());
    o[11..].copy_from_slice(options);
    *at += OPT_LEN + options.len();
}

/// A record's fixed 12 bytes: its owner as a compression pointer to message offset `owner`, its
/// type, class IN, TTL and RDATA length.
pub fn record_head(owner: u16, rtype: u16, ttl: u32, rdlen: usize) -> [u8; RECORD_HEAD_LEN] {
    let mut head = [0; RECORD_HEAD_LEN];
    head[0..2].copy_from_slice(&pointer(owner).to_be_bytes());
    head[2..4].copy_from_slice(&rtype.to_be_bytes());
    head[4..6].copy_from_slice(&CLASS_IN.to_be_bytes());
    head[6..10].copy_from_slice(&ttl.to_be_bytes());
    head[10..12].copy_from_slice(&(rdlen as u16).to_be_bytes());
    head
}

/// The variable fields of a zone's SOA record.
#[derive(Clone, Copy, Debug)]
pub struct Soa<'a> {
    /// Message offset of the zone name (the owner, written as a compression pointer).
    pub owner: u16,
    /// The record's TTL.
    pub ttl: u32,
    /// MNAME and RNAME, pre-encoded.
    pub names: &'a [u8],
    /// The zone's serial.
    pub serial: u32,
    /// The negative TTL (RFC 2308 §4).
    pub minimum: u32,
}

/// Appends the SOA record of a zone. Returns false if it does not fit.
///
/// Inlined into the answer path (every NXDOMAIN and NODATA writes one): out of line, as it went
/// when it moved here from `index/wire.rs`, passing the `Soa` through memory cost about 90
/// instructions per negative answer under callgrind (1,295 → 1,395 for an NXDOMAIN).
#[inline(always)]
pub fn write_soa(out: &mut [u8], at: &mut usize, soa_record: Soa<'_>) -> bool {
    let Soa { owner, ttl, names, serial, minimum } = soa_record;
    let len = RECORD_HEAD_LEN + names.len() + 20;
    let Some(dst) = out.get_mut(*at..*at + len) else {
        return false;
    };
    dst[..RECORD_HEAD_LEN].copy_from_slice(&record_head(owner, rtype::SOA, ttl, names.len() + 20));
    let mut i = RECORD_HEAD_LEN;
    dst[i..i + names.len()].copy_from_slice(names);
    i += names.len();
    for v in [serial, soa::REFRESH, soa::RETRY, soa::EXPIRE, minimum] {
        dst[i..i + 4].copy_from_slice(&v.to_be_bytes());
        i += 4;
    }
    *at += len;
    true
}

/// Appends an address record owned by the question name (for synthesized Pod names).
pub fn write_addr(out: &mut [u8], at: &mut usize, ttl: u32, ip: IpAddr) -> bool {
    let (v4, v6);
    let (rtype, data): (u16, &[u8]) = match ip {
        IpAddr::V4(ip) => {
            v4 = ip.octets();
            (rtype::A, &v4)
        }
        IpAddr::V6(ip) => {
            v6 = ip.octets();
            (rtype::AAAA, &v6)
        }
    };
    let len = RECORD_HEAD_LEN + data.len();
    let Some(dst) = out.get_mut(*at..*at + len) else {
        return false;
    };
    dst[..RECORD_HEAD_LEN].copy_from_slice(&record_head(HEADER_LEN as u16, rtype, ttl, data.len()));
    dst[RECORD_HEAD_LEN..].copy_from_slice(data);
    *at += len;
    true
}
