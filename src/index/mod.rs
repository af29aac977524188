//! The index: every name the server answers, mapped to ready-to-send answers.
//!
//! ```text
//!  Model ──owner_records()──▶ Writer ──insert/remove, name by name──▶ Index.names ◀── DNS workers
//!        (records.rs)        (writer.rs: diff per owner,      (DashMap<Name, Option<NameEntry>>)
//!                             merge shared names, empty
//!                             non-terminals, SOA serial)
//! ```
//!
//! One writer thread owns the [`Writer`]; DNS workers only read the [`Index`]. Each name's entry
//! is replaced whole, so a query sees either the old or the new answer for that name, never a mix
//! and never a gap. Negative answers need no second lookup: a name present with no records of the
//! asked type is NODATA, a name absent below a served zone is NXDOMAIN (names that exist only
//! because something exists below them are stored as empty entries).
//!
//! The writer's bookkeeping for each name (its owners, how many names sit below it) lives with the
//! name itself, in the [`Mark`](crate::dns::name::Mark) of the name that keys this map: every
//! name is hashed into one table, not two (at 100,000 endpoints a second table of 240,000 names
//! cost 9 MB), and the table's buckets stay 24 bytes: a name and its entry, which holds a
//! single A or PTR record inline (see [`NameEntry`]). A name the writer has taken in but not yet
//! published maps to no entry, and readers do not see it.

pub mod copy;
pub mod journal;
pub mod records;
pub mod wire;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use dashmap::mapref::one::MappedRef;

pub use journal::Journal;
pub use records::{PodMode, PtrMode, RecordConfig};
pub use wire::NameEntry;
pub(crate) use writer::SMALL_SET;
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
    /// Whether the Kubernetes name grammar (Pod names, autopath's search domains) applies: a
    /// cluster zone, not the cluster-set zone or a reverse zone.
    pub cluster: bool,
}

/// The hasher of the name map. Keys are short byte strings hashed on every query; foldhash is a
/// fast, DoS-resistant (randomly seeded) hasher, unlike the default SipHash which costs more
/// per query than the map lookup itself.
type Hasher = foldhash::fast::RandomState;

/// The published names. Shared by the writer and every DNS worker.
pub struct Index {
    /// Every name the writer tracks; None while the writer is building it (readers skip it).
    names: DashMap<Name, Option<NameEntry>, Hasher>,
    /// How many names have an entry.
    published: AtomicUsize,
    zones: Box<[Zone]>,
    /// Each zone's SOA serial, by zone id. A primary moves a zone's to the newest serial when the
    /// zone's records change (so an unchanged zone is neither notified nor transferred); a
    /// secondary sets each to its primary's.
    serials: Box<[AtomicU32]>,
    /// The newest serial given to any zone: where the next change starts (the journal's history
    /// is one sequence of these, each version naming the zones it changed).
    latest: AtomicU32,
    ready: AtomicBool,
    /// Default TTL, for synthesized Pod names and the apex SOA.
    pub ttl: u32,
    /// TTL of negative answers and the SOA minimum.
    pub negative_ttl: u32,
    /// How `<ip>.<ns>.pod.<zone>` is answered.
    pub pods: PodMode,
    /// What each serial change changed, for IXFR.
    journal: Journal,
}

// === impl Index ===

impl Index {
    /// An empty index for the configured zones (plus the cluster-set zone if configured, and
    /// `in-addr.arpa` and `ip6.arpa`). It answers
    /// SERVFAIL for its zones until [`Index::set_ready`].
    pub fn new(cfg: &RecordConfig) -> Index {
        Index::with_capacity(cfg, 0)
    }

    /// [`Index::new`], with room for `names` names (see [`records::name_estimate`]).
    pub fn with_capacity(cfg: &RecordConfig, names: usize) -> Index {
        let first = cfg.zones.first().cloned().unwrap_or_else(Name::root);
        let mut zones = Vec::new();
        for name in cfg.zones.iter().chain(&cfg.clusterset).cloned().chain(records::reverse_zones()) {
            let cluster = cfg.zones.contains(&name);
            let home = if cluster || cfg.clusterset.as_ref() == Some(&name) { &name } else { &first };
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
            zones.push(Zone { name, soa_names: soa_names.into_boxed_slice(), mname, rname, cluster });
        }
        let now = unix_now();
        Index {
            names: DashMap::with_capacity_and_hasher(names, Hasher::default()),
            published: AtomicUsize::new(0),
            serials: zones.iter().map(|_| AtomicU32::new(now)).collect(),
            latest: AtomicU32::new(now),
            zones: zones.into_boxed_slice(),
            ready: AtomicBool::new(false),
            ttl: cfg.ttl,
            negative_ttl: cfg.negative_ttl,
            pods: cfg.pods,
            journal: Journal::default(),
        }
    }

    /// The IXFR journal, and the gate that keeps transfers consistent with the serial.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The entry of a lower-case wire name. Hold the returned guard only while copying bytes:
    /// it read-locks one shard of the map.
    #[inline]
    pub fn get(&self, lower: &[u8]) -> Option<MappedRef<'_, Name, Option<NameEntry>, NameEntry>> {
        self.names.get(lower)?.try_map(Option::as_ref).ok()
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

    /// Whether zone `id` is `in-addr.arpa` or `ip6.arpa` (the last two, after the cluster zones).
    pub fn is_reverse(&self, id: u8) -> bool {
        id as usize + 2 >= self.zones.len()
    }

    /// A zone by index.
    pub fn zone(&self, id: u8) -> &Zone {
        &self.zones[id as usize]
    }

    /// All zones.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// The newest SOA serial of any zone (on a primary, the serial of the last change).
    pub fn serial(&self) -> u32 {
        self.latest.load(Ordering::Relaxed)
    }

    /// The current SOA serial of zone `zone`.
    pub fn zone_serial(&self, zone: u8) -> u32 {
        self.serials.get(zone as usize).map_or(0, |s| s.load(Ordering::Relaxed))
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
        self.published.load(Ordering::Relaxed)
    }

    /// Whether nothing is published.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every published name and entry, sorted by name (for dumps and tests; it clones
    /// the whole index).
    pub fn snapshot(&self) -> std::collections::BTreeMap<Name, NameEntry> {
        self.names.iter().filter_map(|e| Some((e.key().clone(), e.value().clone()?))).collect()
    }

    /// The map's own instance of `name`, if it holds the name.
    fn key(&self, name: &Name) -> Option<Name> {
        self.names.get(name.as_wire()).map(|e| e.key().clone())
    }

    /// The writer's node of `name`, if the map holds the name.
    fn node(&self, name: &Name) -> Option<writer::Node> {
        self.names.get(name.as_wire()).map(|e| writer::Node::load(e.key()))
    }

    /// Runs `f` on the node of the name `wire` (given the map's key, the name's shared
    /// allocation) and stores it back, if the map holds the name. `f` must not touch the map: a
    /// shard is locked.
    fn update_node<R>(&self, wire: &[u8], f: impl FnOnce(&Name, &mut writer::Node) -> R) -> Option<R> {
        let e = self.names.get(wire)?;
        Some(writer::Node::update(e.key(), |node| f(e.key(), node)))
    }

    /// Runs `f` on the node of `name` as [`Index::update_node`] does, first taking the name in
    /// (unpublished, with an empty node) if the map does not hold it, in one lookup. Returns what
    /// `f` returns and whether the name was taken in.
    fn update_node_or_insert<R>(&self, name: &Name, f: impl FnOnce(&Name, &mut writer::Node) -> R) -> (R, bool) {
        let (e, new) = match self.names.entry(name.clone()) {
            Entry::Occupied(e) => (e.into_ref().downgrade(), false),
            Entry::Vacant(e) => {
                // The name may have been a key before: its mark is stale.
                writer::Node::default().store(name);
                (e.insert(None).downgrade(), true)
            }
        };
        (writer::Node::update(e.key(), |node| f(e.key(), node)), new)
    }

    /// Replaces the answers of a name the map holds.
    fn publish(&self, name: &Name, entry: NameEntry) {
        let new = entry.clone();
        if let Some(mut e) = self.names.get_mut(name.as_wire()) {
            let old = e.replace(entry);
            if old.is_none() {
                self.published.fetch_add(1, Ordering::Relaxed);
            }
            // Journaled once the shard is unlocked.
            drop(e);
            self.journal.changed(name.as_wire(), old.as_ref(), Some(&new), self.is_ready());
        }
    }

    /// Drops a name, its answers and its node. Returns its node.
    fn remove(&self, name: &Name) -> Option<writer::Node> {
        let (key, entry) = self.names.remove(name.as_wire())?;
        if entry.is_some() {
            self.published.fetch_sub(1, Ordering::Relaxed);
            self.journal.changed(name.as_wire(), entry.as_ref(), None, self.is_ready());
        }
        Some(writer::Node::load(&key))
    }

    /// How many names the map holds, published or not (the writer's node count).
    fn tracked(&self) -> usize {
        self.names.len()
    }

    /// Ends a recompute: moves a zone's serial to the one given (a secondary's: its primary's),
    /// else moves the serial forward and gives it to the zones whose records changed, as the
    /// journal saw them (every zone when the journal is not tracking changes: before the first
    /// sync, or with `--ixfr-journal-size 0`), and commits the journal's version for it. Call
    /// with the gate held.
    fn commit(&self, changed: bool, serial: Option<(u8, u32)>) {
        let from = self.serial();
        match serial {
            Some((zone, serial)) => {
                self.serials[zone as usize].store(serial, Ordering::Relaxed);
                self.latest.store(serial, Ordering::Relaxed);
            }
            None => match self.journal.pending_zones(self.is_ready()) {
                Some(zones) if !zones.is_empty() => {
                    let next = self.bump_serial();
                    for zone in zones {
                        self.serials[zone as usize].store(next, Ordering::Relaxed);
                    }
                }
                Some(_) => {}
                None if changed => {
                    let next = self.bump_serial();
                    for serial in &self.serials {
                        serial.store(next, Ordering::Relaxed);
                    }
                }
                None => {}
            },
        }
        self.journal.commit(from, self.serial(), self.is_ready());
    }

    /// Moves the newest serial forward: to the current Unix time (so replicas roughly agree, as
    /// CoreDNS's serial does), or by one if that is not ahead. Returns it.
    fn bump_serial(&self) -> u32 {
        let (now, current) = (unix_now(), self.serial());
        // RFC 1982: `now` is ahead when it is less than 2^31 past `current`.
        let ahead = now != current && now.wrapping_sub(current) < 1 << 31;
        let next = if ahead { now } else { current.wrapping_add(1) };
        self.latest.store(next, Ordering::Relaxed);
        next
    }
}

fn unix_now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(1)
}

#[cfg(test)]
mod tests;
