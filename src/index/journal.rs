//! The IXFR journal (RFC 1995): for each serial change of the index, the records each served zone
//! lost and gained, so that a secondary at an older serial gets only the difference.
//!
//! ```text
//!  Writer::recompute ─ holds the gate (write) ─┐
//!    Index::publish / Index::remove, per name ─┼─▶ Journal::changed(old entry, new entry)
//!                                              │      decode both (as AXFR does), diff → pending
//!    Index::commit ────────────────────────────┘─▶ bump the serial; pending → Version N → N+1
//!  transfer (AXFR, IXFR) ─ holds the gate (read) ─▶ the serial with the names, or the versions
//! ```
//!
//! **Atomicity.** The writer publishes name by name, and queries may see a name's new answer
//! before the serial moves (that is what makes the hot path lock-free). Transfers must not: a
//! secondary that copied half of a change under the old serial could never apply the IXFR for
//! it. So the writer holds the [gate](Journal::publishing) for a whole recompute, from its first
//! publish to the serial bump and the journal commit, and a transfer reads the serial, the names
//! (AXFR) and the versions (IXFR) under the gate's read side. DNS queries never take it.
//!
//! **Exactness.** The difference is computed where each name's stored answer is swapped: the
//! records of the old entry against those of the new one, both decoded by the function AXFR
//! uses ([`super::wire::entry_records`]), and compared in wire form, TTL included (a TTL change
//! is a deletion and an addition, as RFC 1995 needs). A name published twice in one recompute
//! composes into one difference. Only changes after the index is ready are journaled: nobody
//! can transfer before (SERVFAIL), so the first version starts at the serial of the first AXFR.
//!
//! **Bound.** The journal is bounded in bytes (`--ixfr-journal-size`, [`DEFAULT_LIMIT`]) and
//! by half the size of the served zones (with a floor of [`FLOOR`]): beyond that, an AXFR costs
//! less than replaying the journal. The oldest versions go first; past [`MAX_VERSIONS`] the two
//! oldest are condensed into one, which drops their per-version SOA pairs but keeps the oldest
//! serial reachable.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable, BinEncoder, NameEncoding};
use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::wire::{AnswerRef, NameEntry};
use crate::dns::proto::rtype;

/// The default bound of the journal's memory (`--ixfr-journal-size`): 16 MiB. Heavy churn (100
/// Pod recreations a second, each about 800 bytes of deletions and additions: the Pod's A record,
/// its PTR, its place in the Service's RRset) fills it in about three and a half minutes; and it
/// is under half the zone of a 100,000-endpoint cluster (about 24 MB of stored answers).
pub const DEFAULT_LIMIT: usize = 16 << 20;
/// The journal may always hold this much, however small the zones: tiny zones transfer whole
/// cheaply anyway, but a few versions of history let a secondary follow without an AXFR.
pub const FLOOR: usize = 64 << 10;
/// Versions kept at most; past it the oldest two are condensed into one (16 in unit tests, so
/// that condensing is tested within the byte bound of a small zone).
pub const MAX_VERSIONS: usize = if cfg!(test) { 16 } else { 4096 };
/// Bookkeeping bytes counted per record (its box and its slot) and per version.
const RR_OVERHEAD: usize = 24;
const VERSION_OVERHEAD: usize = 64;

/// One record in uncompressed wire form (owner, type, class, TTL, RDATA), owner in lower case:
/// equal bytes are an equal record with an equal TTL.
pub type Rr = Box<[u8]>;

/// What one zone lost and gained between two serials. The two sets are disjoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneDiff {
    /// Records removed.
    pub deleted: BTreeSet<Rr>,
    /// Records added.
    pub added: BTreeSet<Rr>,
}

impl ZoneDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.deleted.is_empty() && self.added.is_empty()
    }

    /// This difference followed by `later`, as one difference.
    pub fn then(&mut self, later: ZoneDiff) {
        for rr in later.deleted {
            if !self.added.remove(&rr) {
                self.deleted.insert(rr);
            }
        }
        for rr in later.added {
            if !self.deleted.remove(&rr) {
                self.added.insert(rr);
            }
        }
    }

    fn bytes(&self) -> usize {
        self.deleted.iter().chain(&self.added).map(|rr| rr.len() + RR_OVERHEAD).sum()
    }
}

/// The change from one serial to the next, per zone (zones that did not change are absent).
#[derive(Debug)]
pub struct Version {
    /// The serial before.
    pub from: u32,
    /// The serial after.
    pub to: u32,
    zones: Vec<(u8, ZoneDiff)>,
    bytes: usize,
}

impl Version {
    /// What zone `zone` lost and gained (empty if it did not change).
    pub fn zone(&self, zone: u8) -> Option<&ZoneDiff> {
        self.zones.iter().find(|(z, _)| *z == zone).map(|(_, d)| d)
    }

    fn new(from: u32, to: u32, mut zones: Vec<(u8, ZoneDiff)>) -> Version {
        zones.retain(|(_, d)| !d.is_empty());
        let bytes = VERSION_OVERHEAD + zones.iter().map(|(_, d)| d.bytes()).sum::<usize>();
        Version { from, to, zones, bytes }
    }

    /// This version followed by `later`, as one version.
    fn then(&self, later: &Version) -> Version {
        let mut zones = self.zones.clone();
        for (zone, diff) in &later.zones {
            match zones.iter_mut().find(|(z, _)| z == zone) {
                Some((_, mine)) => mine.then(diff.clone()),
                None => zones.push((*zone, diff.clone())),
            }
        }
        Version::new(self.from, later.to, zones)
    }
}

#[derive(Default)]
struct State {
    /// The changes of the recompute in progress, per zone.
    pending: Vec<(u8, ZoneDiff)>,
    versions: VecDeque<Arc<Version>>,
    bytes: usize,
}

/// The journal of an [`Index`](super::Index). See the module doc.
pub struct Journal {
    gate: RwLock<()>,
    state: Mutex<State>,
    /// The configured bound in bytes (0: no journal, every IXFR is answered with the full zone).
    limit: AtomicUsize,
    /// Bytes of every stored answer (all zones), for the bound relative to the zone size.
    zone_bytes: AtomicUsize,
    /// Bytes and versions held, for metrics.
    bytes: AtomicUsize,
    versions: AtomicUsize,
}

// === impl Journal ===

impl Default for Journal {
    fn default() -> Self {
        Journal::new(DEFAULT_LIMIT)
    }
}

impl Journal {
    /// An empty journal bounded by `limit` bytes.
    pub fn new(limit: usize) -> Journal {
        Journal {
            gate: RwLock::new(()),
            state: Mutex::new(State::default()),
            limit: AtomicUsize::new(limit),
            zone_bytes: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            versions: AtomicUsize::new(0),
        }
    }

    /// Sets the bound in bytes (0 turns the journal off).
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
        let mut state = self.state.lock();
        self.trim(&mut state);
    }

    /// The bound in effect: the configured one, at most half the served zones (at least [`FLOOR`]).
    pub fn effective_limit(&self) -> usize {
        let limit = self.limit.load(Ordering::Relaxed);
        limit.min((self.zone_bytes.load(Ordering::Relaxed) / 2).max(FLOOR))
    }

    /// Bytes held (records and bookkeeping).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Versions held.
    pub fn versions(&self) -> usize {
        self.versions.load(Ordering::Relaxed)
    }

    /// Held by the writer while it publishes and moves the serial: transfers wait, queries do not.
    pub fn publishing(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write()
    }

    /// Held by a transfer while it reads the serial and the names or the versions.
    pub fn reading(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read()
    }

    /// The versions from `serial` to the newest, oldest first, if the journal reaches back to
    /// `serial` without a gap. Call under [`Journal::reading`], with the serial read there.
    pub fn since(&self, serial: u32) -> Option<Vec<Arc<Version>>> {
        let state = self.state.lock();
        let start = state.versions.iter().position(|v| v.from == serial)?;
        let versions: Vec<Arc<Version>> = state.versions.range(start..).cloned().collect();
        versions.windows(2).all(|w| w[0].to == w[1].from).then_some(versions)
    }

    /// Records that the entry of `name` (wire, lower case) went from `old` to `new`. Only
    /// journaled when `ready`; the zone size is tracked always.
    pub(super) fn changed(&self, name: &[u8], old: Option<&NameEntry>, new: Option<&NameEntry>, ready: bool) {
        let (before, after) = (old.map_or(0, entry_bytes), new.map_or(0, entry_bytes));
        if after >= before {
            self.zone_bytes.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.zone_bytes.fetch_sub(before - after, Ordering::Relaxed);
        }
        if !ready || old == new || self.limit.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(zone) = old.or(new).map(NameEntry::zone) else { return };
        let diff = diff_entries(name, old, new);
        if diff.is_empty() {
            return;
        }
        let mut state = self.state.lock();
        match state.pending.iter_mut().find(|(z, _)| *z == zone) {
            Some((_, pending)) => pending.then(diff),
            None => state.pending.push((zone, diff)),
        }
    }

    /// The zones whose records the recompute in progress changed; None when the journal is not
    /// tracking changes (off, or before the index is ready), so it cannot tell.
    pub(super) fn pending_zones(&self, ready: bool) -> Option<Vec<u8>> {
        if !ready || self.limit.load(Ordering::Relaxed) == 0 {
            return None;
        }
        Some(self.state.lock().pending.iter().filter(|(_, d)| !d.is_empty()).map(|(z, _)| *z).collect())
    }

    /// Ends the recompute in progress: its changes become the version `from` → `to` (none before
    /// the index is `ready`: nobody can hold a copy from then).
    pub(super) fn commit(&self, from: u32, to: u32, ready: bool) {
        let mut state = self.state.lock();
        let pending = std::mem::take(&mut state.pending);
        if from == to {
            return;
        }
        if self.limit.load(Ordering::Relaxed) == 0 || !ready {
            state.versions.clear();
            state.bytes = 0;
        } else if state.versions.back().is_some_and(|v| v.to != from) {
            // Not a continuation of the history (cannot happen while every serial change comes
            // through here): start over rather than serve a wrong difference.
            tracing::error!(from, to, "BUG: journal gap; history dropped");
            state.versions.clear();
            state.bytes = 0;
        }
        if self.limit.load(Ordering::Relaxed) > 0 && ready {
            let version = Version::new(from, to, pending);
            state.bytes += version.bytes;
            state.versions.push_back(Arc::new(version));
        }
        self.trim(&mut state);
    }

    /// Condenses past [`MAX_VERSIONS`], then drops the oldest versions past the bound.
    fn trim(&self, state: &mut State) {
        while state.versions.len() > MAX_VERSIONS {
            let (Some(first), Some(second)) = (state.versions.pop_front(), state.versions.pop_front()) else { break };
            let merged = first.then(&second);
            state.bytes = state.bytes - first.bytes - second.bytes + merged.bytes;
            state.versions.push_front(Arc::new(merged));
        }
        let limit = self.effective_limit();
        while state.bytes > limit {
            let Some(oldest) = state.versions.pop_front() else { break };
            state.bytes -= oldest.bytes;
        }
        if self.limit.load(Ordering::Relaxed) == 0 {
            state.versions.clear();
            state.bytes = 0;
        }
        self.bytes.store(state.bytes, Ordering::Relaxed);
        self.versions.store(state.versions.len(), Ordering::Relaxed);
    }
}

/// What changed from `old` to `new` at `name`. Only the RRsets whose answer records differ in
/// their stored bytes are decoded: equal bytes after the same question decode to the same
/// records, and decoding is most of the journal's cost (an SRV answer whose glue alone changed,
/// as on every Pod recreation, is not decoded at all).
fn diff_entries(name: &[u8], old: Option<&NameEntry>, new: Option<&NameEntry>) -> ZoneDiff {
    fn sets(entry: Option<&NameEntry>) -> Vec<(u16, AnswerRef<'_>)> {
        entry.map(|e| e.sets().collect()).unwrap_or_default()
    }
    fn find<'a>(sets: &[(u16, AnswerRef<'a>)], t: u16) -> Option<AnswerRef<'a>> {
        sets.iter().find(|(u, _)| *u == t).map(|(_, a)| *a)
    }
    let (old, new) = (sets(old), sets(new));
    let mut diff = ZoneDiff::default();
    let types: BTreeSet<u16> = old.iter().chain(&new).map(|(t, _)| *t).collect();
    for t in types {
        let (before, after) = (find(&old, t), find(&new, t));
        if let (Some(b), Some(a)) = (before, after) {
            let (b, a) = (answer_records(b), answer_records(a));
            if b == a {
                continue;
            }
            if address_records(name, t, &b, &a, &mut diff) {
                continue;
            }
        }
        let decode = |answer: Option<AnswerRef<'_>>| -> BTreeSet<Rr> {
            answer.map(|a| super::wire::decode(name, t, a).iter().filter_map(to_rr).collect()).unwrap_or_default()
        };
        let (before, after) = (decode(before), decode(after));
        diff.deleted.extend(before.difference(&after).cloned());
        diff.added.extend(after.difference(&before).cloned());
    }
    diff
}

/// For an A or AAAA RRset, whose records are each self-contained (owner: a pointer to the
/// question; RDATA: an address), diffs the stored records and decodes only those that differ
/// (a Service of 100 endpoints losing one decodes one record, not 200). False, doing nothing,
/// for other types or records of another shape.
fn address_records(name: &[u8], t: u16, before: &[Vec<u8>], after: &[Vec<u8>], diff: &mut ZoneDiff) -> bool {
    let self_contained = |r: &Vec<u8>| r.starts_with(&[0xC0, 0x0C]);
    if !matches!(t, rtype::A | rtype::AAAA) || !before.iter().chain(after).all(self_contained) {
        return false;
    }
    let decode = |record: &&[u8]| super::wire::decode_records(name, t, 1, 0, record).first().and_then(to_rr);
    let before: BTreeSet<&[u8]> = before.iter().map(Vec::as_slice).collect();
    let after: BTreeSet<&[u8]> = after.iter().map(Vec::as_slice).collect();
    diff.deleted.extend(before.difference(&after).filter_map(decode));
    diff.added.extend(after.difference(&before).filter_map(decode));
    true
}

/// The stored bytes of each of an answer's answer-section records (not its glue).
fn answer_records(answer: AnswerRef<'_>) -> Vec<Vec<u8>> {
    let bytes = answer.to_vec();
    let mut start = 0;
    (0..answer.ancount as usize)
        .map(|i| {
            let record = bytes[start..answer.end(i)].to_vec();
            start = answer.end(i);
            record
        })
        .collect()
}

/// The records of a stored entry, in wire form: decoded as AXFR decodes them.
pub fn rrs(name: &[u8], entry: &NameEntry) -> BTreeSet<Rr> {
    super::wire::entry_records(name, entry).iter().filter_map(to_rr).collect()
}

/// A record in uncompressed wire form.
pub fn to_rr(record: &Record) -> Option<Rr> {
    let mut bytes = Vec::with_capacity(64);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_name_encoding(NameEncoding::Uncompressed);
    record.emit(&mut encoder).ok()?;
    Some(bytes.into_boxed_slice())
}

/// A record back from its wire form.
pub fn from_rr(rr: &[u8]) -> Option<Record> {
    Record::from_bytes(rr).ok()
}

/// The bytes an entry's answers take (for the bound relative to the zone's size).
fn entry_bytes(entry: &NameEntry) -> usize {
    entry.sets().map(|(_, a)| if a.records() == 0 { 0 } else { a.end(a.records() - 1) }).sum()
}
