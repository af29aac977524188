//! The index: every name the server answers, mapped to ready-to-send answers.
//!
//! ```text
//!  Model ──owner_records()──▶ Writer ──insert/remove, name by name──▶ Index.names ◀── DNS workers
//!        (records.rs)        (writer.rs: diff per owner,             (DashMap<Name, NameEntry>)
//!                             merge shared names, empty
//!                             non-terminals, SOA serial)
//! ```
//!
//! One writer thread owns the [`Writer`]; DNS workers only read the [`Index`]. Each name's entry
//! is replaced whole, so a query sees either the old or the new answer for that name, never a mix
//! and never a gap. Negative answers need no second lookup: a name present with no records of the
//! asked type is NODATA, a name absent below a served zone is NXDOMAIN (names that exist only
//! because something exists below them are stored as empty entries).

pub mod records;
pub mod wire;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use dashmap::mapref::one::Ref;

pub use records::{PodMode, PtrMode, RecordConfig};
pub use wire::NameEntry;
pub use writer::Writer;

use crate::dns::name::{Name, is_within};

/// A zone the server is authoritative for.
#[derive(Debug)]
pub struct Zone {
    /// The apex.
    pub name: Name,
    /// The SOA's MNAME (`ns.dns.<zone>`) and RNAME (`hostmaster.<zone>`), uncompressed wire.
    pub soa_names: Box<[u8]>,
    /// The SOA's MNAME, `ns.dns.<zone>` (of the first cluster zone, for reverse zones).
    pub mname: Name,
    /// The SOA's RNAME, `hostmaster.<zone>`.
    pub rname: Name,
}

/// The hasher of the name map. Keys are short byte strings hashed on every query; foldhash is a
/// fast, DoS-resistant (randomly seeded) hasher, unlike the default SipHash which costs more
/// per query than the map lookup itself.
type Hasher = foldhash::fast::RandomState;

/// The published names. Shared by the writer and every DNS worker.
pub struct Index {
    names: DashMap<Name, NameEntry, Hasher>,
    zones: Box<[Zone]>,
    serial: AtomicU32,
    ready: AtomicBool,
    /// Default TTL, for synthesized Pod names and the apex SOA.
    pub ttl: u32,
    /// TTL of negative answers and the SOA minimum.
    pub negative_ttl: u32,
    /// How `<ip>.<ns>.pod.<zone>` is answered.
    pub pods: PodMode,
}

// === impl Index ===

impl Index {
    /// An empty index for the configured zones (plus `in-addr.arpa` and `ip6.arpa`). It answers
    /// SERVFAIL for its zones until [`Index::set_ready`].
    pub fn new(cfg: &RecordConfig) -> Index {
        let first = cfg.zones.first().cloned().unwrap_or_else(Name::root);
        let mut zones = Vec::new();
        for name in cfg.zones.iter().cloned().chain(records::reverse_zones()) {
            let home = if cfg.zones.contains(&name) { &name } else { &first };
            let mut soa_names = Vec::new();
            for label in ["ns", "dns"] {
                soa_names.push(label.len() as u8);
                soa_names.extend_from_slice(label.as_bytes());
            }
            soa_names.extend_from_slice(home.as_wire());
            soa_names.push(b"hostmaster".len() as u8);
            soa_names.extend_from_slice(b"hostmaster");
            soa_names.extend_from_slice(home.as_wire());
            let mname = home.prepend(&["ns", "dns"]).unwrap_or_else(|_| home.clone());
            let rname = home.child("hostmaster").unwrap_or_else(|_| home.clone());
            zones.push(Zone { name, soa_names: soa_names.into_boxed_slice(), mname, rname });
        }
        Index {
            names: DashMap::with_hasher(Hasher::default()),
            zones: zones.into_boxed_slice(),
            serial: AtomicU32::new(unix_now()),
            ready: AtomicBool::new(false),
            ttl: cfg.ttl,
            negative_ttl: cfg.negative_ttl,
            pods: cfg.pods,
        }
    }

    /// The entry of a lower-case wire name. Hold the returned guard only while copying bytes:
    /// it read-locks one shard of the map.
    #[inline]
    pub fn get(&self, lower: &[u8]) -> Option<Ref<'_, Name, NameEntry>> {
        self.names.get(lower)
    }

    /// The most specific served zone containing `lower`.
    pub fn zone_of(&self, lower: &[u8]) -> Option<u8> {
        self.zones
            .iter()
            .enumerate()
            .filter(|(_, z)| is_within(lower, z.name.as_wire()))
            .max_by_key(|(_, z)| z.name.as_wire().len())
            .map(|(i, _)| i as u8)
    }

    /// A zone by index.
    pub fn zone(&self, id: u8) -> &Zone {
        &self.zones[id as usize]
    }

    /// All zones.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// The current SOA serial.
    pub fn serial(&self) -> u32 {
        self.serial.load(Ordering::Relaxed)
    }

    /// Whether the first full view of the cluster is published.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the index as complete (or not): before, in-zone queries get SERVFAIL.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// How many names (including empty non-terminals) are published.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether nothing is published.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// A copy of every published name and entry, sorted by name (for dumps and tests; it clones
    /// the whole index).
    pub fn snapshot(&self) -> std::collections::BTreeMap<Name, NameEntry> {
        self.names.iter().map(|e| (e.key().clone(), e.value().clone())).collect()
    }

    fn publish(&self, name: Name, entry: NameEntry) {
        self.names.insert(name, entry);
    }

    fn unpublish(&self, name: &Name) {
        self.names.remove(name.as_wire());
    }

    /// Moves the serial forward: to the current Unix time (so replicas roughly agree, as
    /// CoreDNS's serial does), or by one if that is not ahead.
    fn bump_serial(&self) {
        let now = unix_now();
        let _ = self.serial.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
            Some(if now > s { now } else { s.wrapping_add(1) })
        });
    }
}

fn unix_now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(1)
}

#[cfg(test)]
mod tests;
