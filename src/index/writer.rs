//! The [`Writer`]: publishes owners' records into the [`Index`], name by name.
//!
//! The writer keeps no copy of the records it published: per owner only its names and a
//! fingerprint of what it puts at each, enough to tell which names an update changes. When a
//! name must be rebuilt, the records of its owners come from the model ([`owner_records`]), once
//! per owner per [`Writer::recompute`]. At 100,000 endpoints the full copies cost 74 MiB; the
//! fingerprints cost a tenth of that, and the initial load builds no second copy.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;

use smallvec::SmallVec;

use super::Index;
use super::copy::{Copy, Mismatch, ZoneTransfer};
use super::records::{OwnerRecords, Rdata, RecordConfig, Rrs, owner_records};
use super::wire::{Answer, Glue, NameEntry, encode_rrset, rdata_type};
use crate::cluster::{Model, Owner};
use crate::dns::name::Name;
use crate::dns::proto::rtype;

/// The writer's maps: keyed by names and owners built from cluster objects, so hashed with a
/// randomly seeded fast hasher (foldhash) rather than SipHash, which dominated the initial load.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type Set<K> = HashSet<K, foldhash::fast::RandomState>;

/// An owner, interned: nodes refer to owners by a 4-byte id instead of a 40-byte [`Owner`].
type OwnerId = u32;
const NO_OWNER: OwnerId = OwnerId::MAX;

/// Bookkeeping for one published name: 8 bytes, as there is one per name (240,000 at 100,000
/// endpoints; a node holding its owners inline took 72 bytes per map slot). It is stored in the
/// [`Mark`](crate::dns::name::Mark) of the name that keys the index's map.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Node {
    /// Who puts records here, or [`NO_OWNER`]. Forward names have one owner; reverse names and
    /// Pod names can have several (two Services selecting one Pod, hostNetwork Pods sharing an
    /// IP): the others are in [`Writer::more_owners`].
    owner: OwnerId,
    /// How many published names sit directly below this one. A name with no owner but children
    /// is an empty non-terminal (`_tcp.<svc>…`, `<ns>.svc.<zone>`): NODATA, not NXDOMAIN.
    children: u32,
}

impl Default for Node {
    fn default() -> Self {
        Node { owner: NO_OWNER, children: 0 }
    }
}

impl Node {
    /// The node stored in `name`'s mark.
    pub(crate) fn load(name: &Name) -> Node {
        let word = name.mark().get();
        Node { owner: word as u32, children: (word >> 32) as u32 }
    }

    /// Stores the node in `name`'s mark.
    pub(crate) fn store(self, name: &Name) {
        name.mark().set(u64::from(self.owner) | u64::from(self.children) << 32);
    }

    /// Runs `f` on the node in `name`'s mark and stores it back.
    pub(crate) fn update<R>(name: &Name, f: impl FnOnce(&mut Node) -> R) -> R {
        let mut node = Node::load(name);
        let out = f(&mut node);
        node.store(name);
        out
    }
}

/// An interned owner and what it publishes: its names, sorted, each with a fingerprint of its
/// records there.
struct OwnerSlot {
    owner: Owner,
    published: Box<[(Name, u64)]>,
}

/// How many owners' records a recompute holds before publishing them (2 in unit tests, so that
/// the property tests cover publishing one recompute in several chunks).
const RECOMPUTE_CHUNK: usize = if cfg!(test) { 2 } else { 256 };

/// The capacity a drained set keeps: enough for an update, so that updates do not allocate it.
pub(crate) const SMALL_SET: usize = 256;

/// The records of the owners one [`Writer::recompute`] reads, each computed once.
type Fresh = Map<OwnerId, OwnerRecords>;

/// The SRV targets of a name being published, sorted and each once, with their nodes.
type Targets = Vec<(Name, Option<Node>)>;

/// Owns the write side of the index: what each owner published, and the tree of names.
pub struct Writer {
    index: Arc<Index>,
    cfg: RecordConfig,
    /// Interned owners that publish something; ids index `slots`.
    owner_ids: Map<Owner, OwnerId>,
    slots: Vec<Option<OwnerSlot>>,
    /// Ids free for reuse (freed at the end of a recompute, so an id is never reused within one).
    free_ids: Vec<OwnerId>,
    /// The second and further owners of names that have several.
    more_owners: Map<Name, SmallVec<[OwnerId; 2]>>,
    dirty: Set<Name>,
    /// Fingerprints records. Randomly seeded 64-bit hashes: a collision (an update mistaken for
    /// no change) is a 2⁻⁶⁴ event that no object contents can aim at.
    fingerprint: foldhash::quality::RandomState,
    /// On a secondary: the transferred records, which its [`Owner::Copied`] owners publish.
    copy: Option<Copy>,
}

// === impl Writer ===

impl Writer {
    /// A writer for `index`, with the zone apexes published.
    pub fn new(index: Arc<Index>, cfg: RecordConfig) -> Writer {
        Writer::build(index, cfg, None)
    }

    /// A secondary's writer for `index`: its records come from zone transfers
    /// ([`Writer::apply_transfer`]); of the apex owner's records only the names remain (the
    /// fixed empty non-terminals), since the primary's NS and `dns-version` arrive by transfer.
    pub fn secondary(index: Arc<Index>, cfg: RecordConfig) -> Writer {
        Writer::build(index, cfg, Some(Copy::default()))
    }

    fn build(index: Arc<Index>, cfg: RecordConfig, copy: Option<Copy>) -> Writer {
        let mut writer = Writer {
            index,
            cfg,
            owner_ids: Map::default(),
            slots: Vec::new(),
            free_ids: Vec::new(),
            more_owners: Map::default(),
            dirty: Set::default(),
            fingerprint: Default::default(),
            copy,
        };
        for zone in writer.index.zones().iter().map(|z| z.name.clone()).collect::<Vec<_>>() {
            writer.index.update_node_or_insert(&zone, |_, _| ());
            writer.dirty.insert(zone);
        }
        writer.recompute(&Model::new(), [Owner::Apex]);
        writer
    }

    /// The index this writer publishes to.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// Recomputes the records of `owners` from the model and publishes what changed. Returns
    /// whether anything did (the SOA serial then moved forward).
    pub fn recompute(&mut self, model: &Model, owners: impl IntoIterator<Item = Owner>) -> bool {
        self.recompute_to(model, owners, None)
    }

    /// A secondary's way in: applies a zone transfer to the copy (whole, or not at all) and
    /// publishes the RRsets it changed with the transfer's serial. Returns whether anything
    /// changed; a transfer that does not apply changes nothing.
    pub fn apply_transfer(&mut self, transfer: &ZoneTransfer) -> Result<bool, Mismatch> {
        let index = Arc::clone(&self.index);
        let Some(zone) = index.zone_of(transfer.zone.as_wire()).filter(|&z| index.zone(z).name == transfer.zone) else {
            return Err(Mismatch::UnknownZone(transfer.zone.to_string()));
        };
        let copy = self.copy.get_or_insert_with(Copy::default);
        let changed = copy.apply(zone, transfer, |name| index.zone_of(name.as_wire()) == Some(zone))?;
        // SRV answers whose targets' addresses changed: the addresses are their glue.
        self.dirty.extend(changed.glue);
        let owners = changed.sets.into_iter().map(|(name, t)| Owner::Copied(name, t));
        Ok(self.recompute_to(&Model::new(), owners, Some((zone, transfer.serial))))
    }

    /// How many transferred RRsets a secondary holds.
    pub fn copy_len(&self) -> usize {
        self.copy.as_ref().map_or(0, Copy::len)
    }

    /// [`Writer::recompute`], ending with a zone at `serial` if given (a secondary's: its
    /// primary's), else moving the serial forward if anything changed.
    fn recompute_to(
        &mut self,
        model: &Model,
        owners: impl IntoIterator<Item = Owner>,
        serial: Option<(u8, u32)>,
    ) -> bool {
        // Transfers wait until the names and the serial (and the journal) agree again.
        let index = Arc::clone(&self.index);
        let _publishing = index.journal().publishing();
        let mut changed = false;
        let mut fresh = Fresh::default();
        let mut done: Set<OwnerId> = Set::default();
        let mut freed = Vec::new();
        for owner in owners {
            let id = self.intern(&owner);
            if !done.insert(id) {
                continue;
            }
            let records = self.records_of(&owner, model);
            changed |= self.set_owner(id, &records);
            if self.slots[id as usize].as_ref().is_some_and(|s| s.published.is_empty()) {
                freed.push(id);
            }
            fresh.insert(id, records);
            // Publish in chunks, so that an initial list of the whole cluster never holds a
            // second copy of every record at once.
            if fresh.len() >= RECOMPUTE_CHUNK {
                self.flush(model, &mut fresh);
                fresh.clear();
            }
        }
        self.flush(model, &mut fresh);
        for id in freed {
            if let Some(slot) = self.slots[id as usize].take() {
                self.owner_ids.remove(&slot.owner);
                self.free_ids.push(id);
            }
        }
        self.index.commit(changed, serial);
        changed
    }

    /// The records of `owner`: from the model, or a secondary's from its copy.
    fn records_of(&self, owner: &Owner, model: &Model) -> OwnerRecords {
        let Some(copy) = &self.copy else { return owner_records(owner, model, &self.cfg) };
        match owner {
            Owner::Copied(name, t) => {
                copy.get(name, *t).map(|rrs| vec![(name.clone(), rrs.clone())]).unwrap_or_default()
            }
            // Only the names: the primary's NS and `dns-version` come by transfer.
            Owner::Apex => owner_records(owner, model, &self.cfg)
                .into_iter()
                .map(|(name, rrs)| (name, Rrs { ttl: rrs.ttl, rdata: SmallVec::new() }))
                .collect(),
            Owner::Namespace(_) | Owner::Service(_) | Owner::Pod(_) | Owner::Import(_) => Vec::new(),
        }
    }

    /// The id of `owner`, interning it if it is new.
    fn intern(&mut self, owner: &Owner) -> OwnerId {
        if let Some(&id) = self.owner_ids.get(owner) {
            return id;
        }
        let slot = Some(OwnerSlot { owner: owner.clone(), published: Box::default() });
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as OwnerId
            }
        };
        self.owner_ids.insert(owner.clone(), id);
        id
    }

    /// The owners of a node: its first, then any others.
    fn owners_of<'a>(&'a self, name: &Name, node: Node) -> impl Iterator<Item = OwnerId> + 'a {
        let more = if node.owner == NO_OWNER { None } else { self.more_owners.get(name) };
        (node.owner != NO_OWNER).then_some(node.owner).into_iter().chain(more.into_iter().flatten().copied())
    }

    /// Removes `owner` from `name`'s node.
    fn detach(&mut self, name: &Name, owner: OwnerId) {
        let more = self.more_owners.get_mut(name);
        self.index.update_node(name.as_wire(), |_, node| {
            if node.owner == owner {
                node.owner = match more {
                    Some(more) if !more.is_empty() => more.remove(0),
                    _ => NO_OWNER,
                };
            } else if let Some(more) = more {
                more.retain(|o| *o != owner);
            }
        });
        if self.more_owners.get(name).is_some_and(|m| m.is_empty()) {
            self.more_owners.remove(name);
        }
    }

    /// Replaces what `owner` publishes, marking the names whose answers change.
    fn set_owner(&mut self, owner: OwnerId, new: &OwnerRecords) -> bool {
        let old = match &mut self.slots[owner as usize] {
            Some(slot) => std::mem::take(&mut slot.published),
            None => Box::default(),
        };
        let mut published: Vec<(Name, u64)> = Vec::with_capacity(new.len());
        let mut changed = false;
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < new.len() {
            let order = match (old.get(i), new.get(j)) {
                (Some(o), Some(n)) => o.0.cmp(&n.0),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, _) => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let name = &old[i].0;
                    self.detach(name, owner);
                    self.dirty.insert(name.clone());
                    changed = true;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let name = self.attach(&new[j].0, owner);
                    published.push((name, self.fingerprint(&new[j].1)));
                    changed = true;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    // Keep the published name (shared with the node and the index key).
                    let (name, before) = &old[i];
                    let after = self.fingerprint(&new[j].1);
                    if *before != after {
                        self.dirty.insert(name.clone());
                        changed = true;
                    }
                    published.push((name.clone(), after));
                    i += 1;
                    j += 1;
                }
            }
        }
        if changed {
            // SRV answers carry their targets' addresses: rebuild them when any record of the
            // owner changed, even if the SRV records themselves did not.
            for (name, rrs) in new {
                if rrs.rdata.iter().any(|r| matches!(r, Rdata::Srv { .. })) {
                    self.dirty.insert(name.clone());
                }
            }
        }
        if let Some(slot) = &mut self.slots[owner as usize] {
            slot.published = published.into_boxed_slice();
        }
        changed
    }

    fn fingerprint(&self, rrs: &Rrs) -> u64 {
        self.fingerprint.hash_one(rrs)
    }

    /// Adds `owner` to `name`'s node, creating the node and any missing ancestors below its zone.
    /// Returns the node's name (one allocation per name, shared by the node, the owner's list
    /// and the index).
    fn attach(&mut self, name: &Name, owner: OwnerId) -> Name {
        // One lookup, which takes a new name in (the whole initial load is new names).
        let ((key, first), new) = self.index.update_node_or_insert(name, |key, node| {
            let first = node.owner;
            if first == NO_OWNER {
                node.owner = owner;
            }
            (key.clone(), first)
        });
        if first != NO_OWNER && first != owner {
            let more = self.more_owners.entry(key.clone()).or_default();
            if !more.contains(&owner) {
                more.push(owner);
            }
        }
        self.dirty.insert(key.clone());
        if new {
            self.link_to_parent(&key);
        }
        key
    }

    fn link_to_parent(&mut self, name: &Name) {
        let mut child = name.clone();
        while let Some(wire) = self.parent_in_zone(child.as_wire()) {
            // Most parents are there already (a Pod name's Service): found by their bytes, with
            // no name made for them. `None` inside: linked, nothing more to do.
            let found = self.index.update_node(wire, |key, node| {
                node.children += 1;
                (node.children == 1 && node.owner == NO_OWNER).then(|| key.clone())
            });
            let parent = match found {
                Some(None) => return,
                Some(Some(parent)) => parent,
                None => {
                    let parent = Name::from_wire_unchecked(wire);
                    self.index.update_node_or_insert(&parent, |_, node| node.children += 1);
                    parent
                }
            };
            // A new empty non-terminal: publish it, and link it in turn.
            self.dirty.insert(parent.clone());
            child = parent;
        }
    }

    /// The parent of the name `wire`, if the name is strictly below a served zone.
    fn parent_in_zone<'a>(&self, wire: &'a [u8]) -> Option<&'a [u8]> {
        let zone = self.index.zone_of(wire)?;
        if self.index.zone(zone).name.as_wire() == wire {
            return None;
        }
        crate::dns::name::parent_wire(wire)
    }

    /// Publishes or removes every dirty name, deepest first, so that removing the last name below
    /// an empty non-terminal removes it too.
    fn flush(&mut self, model: &Model, fresh: &mut Fresh) {
        while !self.dirty.is_empty() {
            let mut batch: Vec<Name> = self.dirty.drain().collect();
            // Draining scans and clears the set's whole table, which keeps the size of the
            // initial load (tens of thousands of names): shrink it back for later updates.
            self.dirty.shrink_to(SMALL_SET);
            batch.sort_unstable_by_key(|n| std::cmp::Reverse(n.as_wire().len()));
            for name in batch {
                self.publish(name, model, fresh);
            }
        }
    }

    fn publish(&mut self, name: Name, model: &Model, fresh: &mut Fresh) {
        let Some(zone) = self.index.zone_of(name.as_wire()) else {
            tracing::warn!(%name, "record outside every served zone; not published");
            self.index.remove(&name);
            return;
        };
        let apex = self.index.zone(zone).name == name;
        // Each name's node is looked up once here and passed on: at 1,000 watch events a
        // second, looking names up again for each step was a tenth of the writer's time.
        let node = self.index.node(&name);
        let keep = match node {
            Some(node) => apex || node.owner != NO_OWNER || node.children > 0,
            None => false,
        };
        if !keep {
            self.more_owners.remove(&name);
            if self.index.remove(&name).is_some()
                && let Some(parent) = self.parent_in_zone(name.as_wire())
                && let Some(parent) = self.index.update_node(parent, |key, node| {
                    node.children = node.children.saturating_sub(1);
                    key.clone()
                })
            {
                self.dirty.insert(parent);
            }
            return;
        }
        // The records of every owner of the name and of its SRV targets (for glue).
        self.read_owners(&name, node, model, fresh);
        // SRV targets, each once, with their nodes. An owner's SRV records come sorted by port,
        // then target, so with one port this sort finds the order already there.
        let mut targets: Targets = self
            .records_at(&name, node, fresh)
            .filter_map(|(_, r)| match r {
                Rdata::Srv { target, .. } => Some(target.clone()),
                _ => None,
            })
            .map(|target| {
                let node = self.index.node(&target);
                (target, node)
            })
            .collect();
        targets.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        targets.dedup_by(|a, b| a.0 == b.0);
        for (target, node) in &targets {
            self.read_owners(target, *node, model, fresh);
        }
        let entry = self.build_entry(&name, node, (zone, apex), fresh, &targets);
        self.index.publish(&name, entry);
    }

    /// Computes the records of the owners of `name` (whose node is `node`) that this recompute
    /// has not read yet.
    fn read_owners(&self, name: &Name, node: Option<Node>, model: &Model, fresh: &mut Fresh) {
        let Some(node) = node else {
            return;
        };
        for id in self.owners_of(name, node) {
            if !fresh.contains_key(&id)
                && let Some(slot) = &self.slots[id as usize]
            {
                fresh.insert(id, self.records_of(&slot.owner, model));
            }
        }
    }

    /// Every record at `name` (whose node is `node`), from all its owners (read into `fresh`),
    /// with each owner's TTL.
    fn records_at<'a>(
        &'a self,
        name: &Name,
        node: Option<Node>,
        fresh: &'a Fresh,
    ) -> impl Iterator<Item = (u32, &'a Rdata)> + 'a {
        let mut owners: SmallVec<[OwnerId; 2]> =
            node.map(|node| self.owners_of(name, node).collect()).unwrap_or_default();
        // A ServiceImport's PTR only where the cluster zone has none (MCS DNS specification
        // §2.3.3, §2.4.3): at a name that other owners also publish, they win. (ServiceImports
        // share no forward names with other owners.)
        let imported =
            |id: &OwnerId| matches!(&self.slots[*id as usize], Some(OwnerSlot { owner: Owner::Import(_), .. }));
        if owners.iter().any(|id| !imported(id)) {
            owners.retain(|id| !imported(id));
        }
        let name = name.clone();
        owners
            .into_iter()
            .filter_map(move |owner| {
                let records = fresh.get(&owner)?;
                let at = records.binary_search_by(|(n, _)| n.cmp(&name)).ok()?;
                let rrs: &Rrs = &records[at].1;
                Some(rrs.rdata.iter().map(move |r| (rrs.ttl, r)))
            })
            .flatten()
    }

    /// The entry of `name` (its zone, and whether it is the zone's apex) from the records of
    /// its owners and the addresses of its SRV targets.
    fn build_entry(
        &self,
        name: &Name,
        node: Option<Node>,
        (zone, apex): (u8, bool),
        fresh: &Fresh,
        targets: &Targets,
    ) -> NameEntry {
        // One RRset per type, each sorted and without duplicates, all in one list; an RRset's
        // TTL is the lowest of its owners' (RFC 2181 §5.2). The derived order of `Rdata` keeps
        // each type's records together.
        let mut records: Vec<(u32, &Rdata)> = self.records_at(name, node, fresh).collect();
        records.sort_unstable_by(|a, b| a.1.cmp(b.1));
        let mut list: Vec<&Rdata> = Vec::with_capacity(records.len());
        let mut by_type: SmallVec<[(u16, u32, std::ops::Range<usize>); 2]> = SmallVec::new();
        for run in records.chunk_by(|a, b| rdata_type(a.1) == rdata_type(b.1)) {
            let start = list.len();
            let mut ttl = u32::MAX;
            for &(t, rdata) in run {
                ttl = ttl.min(t);
                if list[start..].last() != Some(&rdata) {
                    list.push(rdata);
                }
            }
            by_type.push((rdata_type(run[0].1), ttl, start..list.len()));
        }
        by_type.sort_unstable_by_key(|(t, _, _)| *t);
        // A single A or PTR record is held inline (see `NameEntry`); a PTR's target is the
        // index's own copy of the name, so the entry holds no name of its own.
        if let [(_, ttl, range)] = &by_type[..]
            && !apex
        {
            match list[range.clone()] {
                [Rdata::A(v4)] => return NameEntry::addr(zone, *ttl, *v4),
                [Rdata::Ptr(target)] => {
                    let target = self.index.key(target).unwrap_or_else(|| target.clone());
                    return NameEntry::ptr(zone, *ttl, target);
                }
                _ => {}
            }
        }
        let mut cname = None;
        let mut rrsets = Vec::with_capacity(by_type.len());
        for (t, ttl, range) in by_type {
            let glue = if t == rtype::SRV { self.glue(targets, fresh) } else { Vec::new() };
            let answer: Answer = encode_rrset(name, ttl, &list[range], &glue);
            if t == rtype::CNAME {
                cname = Some(answer);
            } else {
                rrsets.push((t, answer));
            }
        }
        NameEntry::new(zone, apex, cname, rrsets)
    }

    /// The addresses of each SRV target (each once, with its node), for the SRV answer's glue.
    fn glue<'a>(&'a self, targets: &'a Targets, fresh: &'a Fresh) -> Vec<Glue<'a>> {
        let mut glue: Vec<Glue<'a>> = Vec::with_capacity(targets.len());
        for (target, node) in targets {
            let mut ttl = u32::MAX;
            let mut addrs: SmallVec<[IpAddr; 2]> = SmallVec::new();
            for (t, r) in self.records_at(target, *node, fresh) {
                let ip = match r {
                    Rdata::A(v4) => IpAddr::V4(*v4),
                    Rdata::Aaaa(v6) => IpAddr::V6(*v6),
                    _ => continue,
                };
                ttl = ttl.min(t);
                if !addrs.contains(&ip) {
                    addrs.push(ip);
                }
            }
            addrs.sort_unstable();
            if !addrs.is_empty() {
                glue.push(Glue { target, ttl, addrs });
            }
        }
        glue
    }

    /// How many names and owners the writer tracks (for metrics and tests).
    pub fn sizes(&self) -> (usize, usize) {
        (self.index.tracked(), self.owner_ids.len())
    }
}
