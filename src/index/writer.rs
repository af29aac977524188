//! The [`Writer`]: publishes owners' records into the [`Index`], name by name.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use smallvec::SmallVec;

use super::Index;
use super::records::{OwnerRecords, Rdata, RecordConfig, Rrs, owner_records};
use super::wire::{self, Answer, Glue, NameEntry, encode_rrset, rdata_type};
use crate::cluster::{Model, Owner};
use crate::dns::name::Name;

/// Bookkeeping for one published name.
#[derive(Default)]
struct Node {
    /// Who puts records here. Forward names have one owner; reverse names and Pod names can have
    /// several (two Services selecting one Pod, hostNetwork Pods sharing an IP).
    owners: SmallVec<[Owner; 1]>,
    /// How many published names sit directly below this one. A name with no owner but children
    /// is an empty non-terminal (`_tcp.<svc>…`, `<ns>.svc.<zone>`): NODATA, not NXDOMAIN.
    children: u32,
}

/// Owns the write side of the index: what each owner published, and the tree of names.
pub struct Writer {
    index: Arc<Index>,
    cfg: RecordConfig,
    owners: HashMap<Owner, OwnerRecords>,
    nodes: HashMap<Name, Node>,
    dirty: HashSet<Name>,
}

// === impl Writer ===

impl Writer {
    /// A writer for `index`, with the zone apexes published.
    pub fn new(index: Arc<Index>, cfg: RecordConfig) -> Writer {
        let mut writer = Writer { index, cfg, owners: HashMap::new(), nodes: HashMap::new(), dirty: HashSet::new() };
        for zone in writer.index.zones().iter().map(|z| z.name.clone()).collect::<Vec<_>>() {
            writer.nodes.entry(zone.clone()).or_default();
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
        let mut changed = false;
        for owner in owners {
            let records = owner_records(&owner, model, &self.cfg);
            changed |= self.set_owner(owner, records);
        }
        self.flush();
        if changed {
            self.index.bump_serial();
        }
        changed
    }

    /// Replaces what `owner` publishes, marking the names whose answers change.
    fn set_owner(&mut self, owner: Owner, new: OwnerRecords) -> bool {
        let old = self.owners.remove(&owner).unwrap_or_default();
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
                    if let Some(node) = self.nodes.get_mut(name) {
                        node.owners.retain(|o| *o != owner);
                    }
                    self.dirty.insert(name.clone());
                    changed = true;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    self.attach(&new[j].0, &owner);
                    changed = true;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    if old[i].1 != new[j].1 {
                        self.dirty.insert(new[j].0.clone());
                        changed = true;
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        if changed {
            // SRV answers carry their targets' addresses: rebuild them when any record of the
            // owner changed, even if the SRV records themselves did not.
            for (name, rrs) in &new {
                if rrs.rdata.iter().any(|r| matches!(r, Rdata::Srv { .. })) {
                    self.dirty.insert(name.clone());
                }
            }
        }
        if !new.is_empty() {
            self.owners.insert(owner, new);
        }
        changed
    }

    /// Adds `owner` to `name`'s node, creating the node and any missing ancestors below its zone.
    fn attach(&mut self, name: &Name, owner: &Owner) {
        self.dirty.insert(name.clone());
        if let Some(node) = self.nodes.get_mut(name) {
            if !node.owners.contains(owner) {
                node.owners.push(owner.clone());
            }
            return;
        }
        self.nodes.insert(name.clone(), Node { owners: smallvec::smallvec![owner.clone()], children: 0 });
        self.link_to_parent(name);
    }

    fn link_to_parent(&mut self, name: &Name) {
        let mut child = name.clone();
        while let Some(parent) = self.parent_in_zone(&child) {
            let node = self.nodes.entry(parent.clone()).or_default();
            node.children += 1;
            if node.children > 1 || !node.owners.is_empty() {
                return;
            }
            // A new empty non-terminal: publish it, and link it in turn.
            self.dirty.insert(parent.clone());
            child = parent;
        }
    }

    /// The parent of `name`, if `name` is strictly below a served zone.
    fn parent_in_zone(&self, name: &Name) -> Option<Name> {
        let zone = self.index.zone_of(name.as_wire())?;
        if self.index.zone(zone).name == *name {
            return None;
        }
        name.parent()
    }

    /// Publishes or removes every dirty name, deepest first, so that removing the last name below
    /// an empty non-terminal removes it too.
    fn flush(&mut self) {
        while !self.dirty.is_empty() {
            let mut batch: Vec<Name> = self.dirty.drain().collect();
            batch.sort_unstable_by_key(|n| std::cmp::Reverse(n.as_wire().len()));
            for name in batch {
                self.publish(name);
            }
        }
    }

    fn publish(&mut self, name: Name) {
        let Some(zone) = self.index.zone_of(name.as_wire()) else {
            tracing::warn!(%name, "record outside every served zone; not published");
            self.nodes.remove(&name);
            return;
        };
        let apex = self.index.zone(zone).name == name;
        let keep = match self.nodes.get(&name) {
            Some(node) => apex || !node.owners.is_empty() || node.children > 0,
            None => false,
        };
        if !keep {
            if self.nodes.remove(&name).is_some()
                && let Some(parent) = self.parent_in_zone(&name)
                && let Some(node) = self.nodes.get_mut(&parent)
            {
                node.children = node.children.saturating_sub(1);
                self.dirty.insert(parent);
            }
            self.index.unpublish(&name);
            return;
        }
        let entry = self.build_entry(&name, zone, apex);
        self.index.publish(name, entry);
    }

    /// Every record at `name`, from all its owners, with each owner's TTL.
    fn records_at<'a>(&'a self, name: &Name) -> impl Iterator<Item = (u32, &'a Rdata)> + 'a {
        let owners = self.nodes.get(name).map(|n| n.owners.as_slice()).unwrap_or_default();
        let name = name.clone();
        owners
            .iter()
            .filter_map(move |owner| {
                let records = self.owners.get(owner)?;
                let at = records.binary_search_by(|(n, _)| n.cmp(&name)).ok()?;
                let rrs: &Rrs = &records[at].1;
                Some(rrs.rdata.iter().map(move |r| (rrs.ttl, r)))
            })
            .flatten()
    }

    fn build_entry(&self, name: &Name, zone: u8, apex: bool) -> NameEntry {
        // Group by type; an RRset's TTL is the lowest of its owners' (RFC 2181 §5.2).
        let mut by_type: Vec<(u16, u32, Vec<&Rdata>)> = Vec::new();
        for (ttl, rdata) in self.records_at(name) {
            let t = rdata_type(rdata);
            match by_type.iter_mut().find(|(bt, _, _)| *bt == t) {
                Some((_, min_ttl, list)) => {
                    *min_ttl = (*min_ttl).min(ttl);
                    list.push(rdata);
                }
                None => by_type.push((t, ttl, vec![rdata])),
            }
        }
        by_type.sort_unstable_by_key(|(t, _, _)| *t);
        let mut cname = None;
        let mut rrsets = Vec::with_capacity(by_type.len());
        for (t, ttl, mut list) in by_type {
            list.sort_unstable();
            list.dedup();
            let glue = if t == wire::rtype::SRV { self.glue(&list) } else { Vec::new() };
            let answer: Answer = encode_rrset(name, ttl, &list, &glue);
            if t == wire::rtype::CNAME {
                cname = Some(answer);
            } else {
                rrsets.push((t, answer));
            }
        }
        NameEntry { zone, apex, cname, rrsets: rrsets.into_boxed_slice() }
    }

    fn glue<'a>(&'a self, srv: &[&'a Rdata]) -> Vec<Glue<'a>> {
        let mut glue: Vec<Glue<'a>> = Vec::new();
        // Each target once; a set keeps this O(targets), not O(targets²), for Services of
        // thousands of endpoints.
        let mut seen: HashSet<&Name> = HashSet::with_capacity(srv.len());
        for rd in srv {
            let Rdata::Srv { target, .. } = rd else {
                continue;
            };
            if !seen.insert(target) {
                continue;
            }
            let mut ttl = u32::MAX;
            let mut addrs: Vec<IpAddr> = Vec::new();
            for (t, r) in self.records_at(target) {
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
        (self.nodes.len(), self.owners.len())
    }
}
