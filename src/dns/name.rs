//! Domain names as the index stores them: lower-case wire format.
//!
//! The index is keyed by the exact bytes a query carries in its question (RFC 1035 §3.1:
//! length-prefixed labels ending with the root label), folded to lower case once, when the
//! record is built. A query is folded into a stack buffer and looked up without allocating.
//! Kubernetes names are already lower-case DNS labels, so folding only matters for what
//! clients send ("All comparisons between query data and Kubernetes data are
//! case-insensitive", Kubernetes DNS spec §2.1).

use std::borrow::Borrow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};

use triomphe::ThinArc;

/// RFC 1035 §2.3.4: a label is at most 63 octets, a name at most 255 octets in wire form.
pub const MAX_LABEL: usize = 63;
/// See [`MAX_LABEL`].
pub const MAX_NAME: usize = 255;
/// The two high bits that mark a length octet as a compression pointer (RFC 1035 §4.1.4); a
/// label length never has them.
pub const POINTER_BITS: u8 = 0xC0;

/// Why a string cannot be a domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A label was empty (two dots in a row, or a leading dot).
    #[error("empty label in {0:?}")]
    EmptyLabel(String),
    /// A label was longer than 63 octets.
    #[error("label longer than 63 octets in {0:?}")]
    LongLabel(String),
    /// The whole name was longer than 255 octets in wire form.
    #[error("name longer than 255 octets: {0:?}")]
    LongName(String),
    /// A label held a character that is not a letter, digit, hyphen or underscore.
    #[error("invalid character in {0:?}")]
    BadChar(String),
}

/// A domain name in lower-case wire format, always valid and absolute.
///
/// Cheap to clone (one reference count); the index, the writer's bookkeeping and the published
/// map share the same bytes.
///
/// A thin pointer (triomphe's `ThinArc` keeps the length beside the bytes): 8 bytes instead of
/// the 16 of an `Arc<[u8]>`. Names are the keys of the index and of the writer's maps, about
/// 250,000 of each at 100,000 endpoints, and the slot size is paid again for every empty slot of
/// a hash table: with thin names and entries the large shape's heap went from 113 to 102 MB.
///
/// Each allocation also holds a [`Mark`], scratch space for the index's writer.
#[derive(Clone)]
pub struct Name(ThinArc<Mark, u8>);

/// A word beside a name's reference count, for the index's writer: it keeps its bookkeeping for a
/// published name (owners, how many names sit below it) in the mark of the name instance that keys
/// the index's map, rather than in each bucket of the map. Each bucket is 8 bytes smaller (24
/// rather than 32), 4 MB at 240,000 names (a map of 524,288 buckets), while most names stay in
/// their allocator size class. Only the map's key carries a meaningful mark: an equal name built elsewhere has its own.
/// Clones share it. The writer is the only thread that reads or writes marks.
#[derive(Default)]
pub struct Mark(AtomicU64);

impl Mark {
    /// The stored word.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Replaces the stored word.
    pub fn set(&self, word: u64) {
        self.0.store(word, Ordering::Relaxed);
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        // Clones of one name (an owner's base name at each of its records) compare by pointer.
        std::ptr::eq(self.0.heap_ptr(), other.0.heap_ptr()) || self.as_wire() == other.as_wire()
    }
}

impl Eq for Name {}

impl std::hash::Hash for Name {
    /// Hashes as the wire bytes do, so that maps keyed by names can be searched with `&[u8]`
    /// ([`Borrow`]).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_wire().hash(state);
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if std::ptr::eq(self.0.heap_ptr(), other.0.heap_ptr()) {
            return std::cmp::Ordering::Equal;
        }
        self.as_wire().cmp(other.as_wire())
    }
}

// === impl Name ===

impl Name {
    /// The root name (`.`).
    pub fn root() -> Name {
        Name::from_wire_unchecked(&[0])
    }

    /// Parses dotted text (`web-0.nginx.default.svc.cluster.local`, a trailing dot is optional)
    /// and folds it to lower case. Accepts letters, digits, `-` and `_` (SRV labels).
    pub fn parse(text: &str) -> Result<Name, NameError> {
        let text = text.strip_suffix('.').unwrap_or(text);
        if text.is_empty() {
            return Ok(Name::root());
        }
        Name::from_labels(text.split('.')).map_err(|e| match e {
            NameError::EmptyLabel(_) => NameError::EmptyLabel(text.to_string()),
            NameError::LongLabel(_) => NameError::LongLabel(text.to_string()),
            NameError::LongName(_) => NameError::LongName(text.to_string()),
            NameError::BadChar(_) => NameError::BadChar(text.to_string()),
        })
    }

    /// Builds a name from labels, most specific first, folding them to lower case.
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> Result<Name, NameError> {
        let mut wire = WireBuf::new();
        for label in labels {
            push_label(&mut wire, label)?;
        }
        wire.push(0);
        if wire.len() > MAX_NAME {
            return Err(NameError::LongName(Name::display_wire(&wire)));
        }
        Ok(Name::from_wire_unchecked(&wire))
    }

    /// `label.self`, e.g. `Name::parse("svc.cluster.local")?.child("default")`.
    pub fn child(&self, label: &str) -> Result<Name, NameError> {
        let mut wire = WireBuf::new();
        push_label(&mut wire, label)?;
        wire.extend_from_slice(self.as_wire());
        if wire.len() > MAX_NAME {
            return Err(NameError::LongName(Name::display_wire(&wire)));
        }
        Ok(Name::from_wire_unchecked(&wire))
    }

    /// `labels….self`, the labels given most specific first.
    pub fn prepend(&self, labels: &[&str]) -> Result<Name, NameError> {
        let mut wire = WireBuf::new();
        for label in labels {
            push_label(&mut wire, label)?;
        }
        wire.extend_from_slice(self.as_wire());
        if wire.len() > MAX_NAME {
            return Err(NameError::LongName(Name::display_wire(&wire)));
        }
        Ok(Name::from_wire_unchecked(&wire))
    }

    /// Wraps wire bytes that are known to be valid lower-case wire format.
    pub(crate) fn from_wire_unchecked(wire: &[u8]) -> Name {
        debug_assert!(wire_len(wire) == Some(wire.len()));
        Name(ThinArc::from_header_and_slice(Mark::default(), wire))
    }

    /// This allocation's mark (shared by its clones).
    pub fn mark(&self) -> &Mark {
        &self.0.header.header
    }

    /// The wire-format bytes, ending with the root label.
    pub fn as_wire(&self) -> &[u8] {
        &self.0.slice
    }

    /// The wire bytes of the parent name (`self` without its first label), or `None` at the root.
    pub fn parent_wire(&self) -> Option<&[u8]> {
        parent_wire(self.as_wire())
    }

    /// The parent name, or `None` at the root.
    pub fn parent(&self) -> Option<Name> {
        self.parent_wire().map(Name::from_wire_unchecked)
    }

    /// The first label, without its length octet.
    pub fn first_label(&self) -> &[u8] {
        let len = self.as_wire()[0] as usize;
        &self.as_wire()[1..1 + len]
    }

    /// Whether `self` is `zone` or lies below it.
    pub fn is_within(&self, zone: &Name) -> bool {
        is_within(self.as_wire(), zone.as_wire())
    }

    /// The name in dotted text with a trailing dot, as `dig` prints it.
    pub fn to_dotted(&self) -> String {
        Name::display_wire(self.as_wire())
    }

    fn display_wire(wire: &[u8]) -> String {
        let mut out = String::with_capacity(wire.len() + 1);
        let mut at = 0;
        while at < wire.len() {
            let len = wire[at] as usize;
            if len == 0 {
                break;
            }
            let end = (at + 1 + len).min(wire.len());
            out.push_str(&String::from_utf8_lossy(&wire[at + 1..end]));
            out.push('.');
            at = end;
        }
        if out.is_empty() {
            out.push('.');
        }
        out
    }
}

impl Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        self.as_wire()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_dotted())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({})", self.to_dotted())
    }
}

/// A name being built, on the stack: building a name then costs one allocation, the name's own.
type WireBuf = smallvec::SmallVec<[u8; 256]>;

fn push_label(wire: &mut WireBuf, label: &str) -> Result<(), NameError> {
    if label.is_empty() {
        return Err(NameError::EmptyLabel(label.to_string()));
    }
    if label.len() > MAX_LABEL {
        return Err(NameError::LongLabel(label.to_string()));
    }
    if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(NameError::BadChar(label.to_string()));
    }
    wire.push(label.len() as u8);
    wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    Ok(())
}

/// The length of the uncompressed wire name at the start of `wire`, or `None` if it is not one
/// (a compression pointer, a label running past the end, or longer than 255 octets).
pub fn wire_len(wire: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let len = *wire.get(at)? as usize;
        if len & POINTER_BITS as usize != 0 {
            return None;
        }
        at += 1 + len;
        if at > MAX_NAME {
            return None;
        }
        if len == 0 {
            return Some(at);
        }
    }
}

/// The bytes after the first label of an uncompressed wire name.
pub fn parent_wire(wire: &[u8]) -> Option<&[u8]> {
    let len = *wire.first()? as usize;
    if len == 0 {
        return None;
    }
    wire.get(1 + len..)
}

/// Whether the wire name `name` equals `zone` or lies below it (both lower case).
pub fn is_within(name: &[u8], zone: &[u8]) -> bool {
    let mut rest = name;
    loop {
        if rest.len() < zone.len() {
            return false;
        }
        if rest.len() == zone.len() {
            return rest == zone;
        }
        match parent_wire(rest) {
            Some(parent) => rest = parent,
            None => return false,
        }
    }
}

/// The name CoreDNS gives an endpoint without a hostname: its IP with `.` or `:` replaced by `-`
/// (`10-244-1-5`, `fd00--1`; an IPv6 text that ends with `-` gets a `0`, as CoreDNS's
/// `endpointHostname` does).
pub fn dashed_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => {
            let mut dashed = v6.to_string().replace(':', "-");
            if dashed.ends_with('-') {
                dashed.push('0');
            }
            dashed
        }
    }
}

/// The inverse of [`dashed_ip`], for Pod names (`10-244-1-5.default.pod.cluster.local`).
pub fn parse_dashed_ip(label: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(label).ok()?;
    if text.bytes().filter(|&b| b == b'-').count() == 3
        && let Ok(v4) = text.replace('-', ".").parse::<Ipv4Addr>()
    {
        return Some(IpAddr::V4(v4));
    }
    text.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// The reverse-lookup name of an address: `5.1.244.10.in-addr.arpa.` or the 32-nibble
/// `….ip6.arpa.` form (RFC 1035 §3.5, RFC 3596 §2.5; Kubernetes DNS spec §2.3.3).
pub fn reverse_name(ip: IpAddr) -> Name {
    let mut wire = WireBuf::new();
    match ip {
        IpAddr::V4(v4) => {
            for &octet in v4.octets().iter().rev() {
                let digits = [octet / 100, octet / 10 % 10, octet % 10];
                let skip = if octet >= 100 {
                    0
                } else if octet >= 10 {
                    1
                } else {
                    2
                };
                wire.push(3 - skip as u8);
                wire.extend(digits[skip..].iter().map(|d| b'0' + d));
            }
            wire.extend_from_slice(b"\x07in-addr\x04arpa\x00");
        }
        IpAddr::V6(v6) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for octet in v6.octets().iter().rev() {
                wire.extend_from_slice(&[1, HEX[(octet & 0xF) as usize], 1, HEX[(octet >> 4) as usize]]);
            }
            wire.extend_from_slice(b"\x03ip6\x04arpa\x00");
        }
    }
    Name::from_wire_unchecked(&wire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_folds_case_and_accepts_trailing_dot() {
        let a = Name::parse("Web-0.NGINX.default.svc.cluster.local.").unwrap();
        let b = Name::parse("web-0.nginx.default.svc.cluster.local").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_dotted(), "web-0.nginx.default.svc.cluster.local.");
        assert_eq!(Name::parse(".").unwrap(), Name::root());
    }

    #[test]
    fn parse_rejects_bad_names() {
        assert!(matches!(Name::parse("a..b"), Err(NameError::EmptyLabel(_))));
        assert!(matches!(Name::parse(&"x".repeat(64)), Err(NameError::LongLabel(_))));
        assert!(matches!(Name::parse("a b.c"), Err(NameError::BadChar(_))));
        let long = vec!["abcdefghij"; 30].join(".");
        assert!(matches!(Name::parse(&long), Err(NameError::LongName(_))));
    }

    #[test]
    fn parents_and_zones() {
        let zone = Name::parse("cluster.local").unwrap();
        let name = Name::parse("nginx.default.svc.cluster.local").unwrap();
        assert!(name.is_within(&zone));
        assert!(zone.is_within(&zone));
        assert!(!Name::parse("xcluster.local").unwrap().is_within(&zone));
        assert!(!Name::parse("local").unwrap().is_within(&zone));
        assert_eq!(name.parent().unwrap().to_dotted(), "default.svc.cluster.local.");
        assert_eq!(Name::root().parent(), None);
        assert_eq!(name.first_label(), b"nginx");
    }

    #[test]
    fn dashed_names_round_trip() {
        for text in ["10.244.1.5", "fd00::1", "fd00::", "2001:db8:0:1::a", "::1"] {
            let ip: IpAddr = text.parse().unwrap();
            let dashed = dashed_ip(ip);
            assert_eq!(parse_dashed_ip(dashed.as_bytes()), Some(ip), "{dashed}");
        }
        assert_eq!(dashed_ip("fd00::".parse().unwrap()), "fd00--0");
        assert_eq!(parse_dashed_ip(b"web-0"), None);
    }

    #[test]
    fn reverse_names() {
        assert_eq!(reverse_name("10.244.1.5".parse().unwrap()).to_dotted(), "5.1.244.10.in-addr.arpa.");
        assert_eq!(reverse_name("0.100.255.99".parse().unwrap()).to_dotted(), "99.255.100.0.in-addr.arpa.");
        assert_eq!(
            reverse_name("2001:db8::567:89ab".parse().unwrap()).to_dotted(),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
        );
    }
}
