//! A secondary's copy of its primary's zones (`--source primary:ADDR`): the records each zone
//! transfer brought, kept per name and type, which the [`Writer`](super::Writer) publishes
//! through the same index and hot path as a primary's records.
//!
//! ```text
//!  source::primary ─ AXFR / IXFR, parsed ─▶ Event::Transfer ─▶ Pipeline ─▶ Writer::apply_transfer
//!                                                                            │ Copy::apply (staged,
//!                                                                            │  all or nothing)
//!                                                                            ▼
//!                              changed (name, type)s as owners ─▶ Writer::recompute at the serial
//! ```
//!
//! Each `(name, type)` is an owner of its own: the writer then derives what a primary derives
//! from the same records (empty non-terminals, SRV glue from the targets' addresses, the inline
//! single-address entries), so a secondary's answers are built by the code that built the
//! primary's. A transfer is applied whole or not at all: an IXFR whose difference does not apply
//! to the copy (a deletion of a record we do not hold, a history that does not start at our
//! serial) changes nothing and is reported, and the caller falls back to a full transfer.

use std::collections::HashMap;
use std::fmt;

use super::records::{Rdata, Rrs};
use crate::dns::name::Name;
use crate::dns::proto::rtype::{A, AAAA, SRV};

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One record of a transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopiedRecord {
    /// Owner name (lower case).
    pub name: Name,
    /// TTL.
    pub ttl: u32,
    /// Data (its type is [`rdata_type`](super::wire::rdata_type)).
    pub rdata: Rdata,
}

/// One zone's transfer, parsed and checked for its framing (SOA first and last, serials in
/// order), not yet applied.
#[derive(Clone, Debug)]
pub struct ZoneTransfer {
    /// The zone's apex.
    pub zone: Name,
    /// The serial the zone is at once applied.
    pub serial: u32,
    /// What the primary sent.
    pub content: Content,
}

/// The records of a [`ZoneTransfer`].
#[derive(Clone, Debug)]
pub enum Content {
    /// The whole zone but its SOA (an AXFR, or an IXFR answered in full).
    Full(Vec<CopiedRecord>),
    /// Differences, oldest first; the first starts at the serial the copy holds.
    Incremental(Vec<Step>),
}

/// One version of an incremental transfer (RFC 1995 §4).
#[derive(Clone, Debug)]
pub struct Step {
    /// The serial before.
    pub from: u32,
    /// The serial after.
    pub to: u32,
    /// Records removed.
    pub deleted: Vec<CopiedRecord>,
    /// Records added.
    pub added: Vec<CopiedRecord>,
}

/// Why a transfer does not apply to the copy. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The zone is not one this server serves.
    UnknownZone(String),
    /// A record lies outside the zone it was transferred in.
    OutsideZone(String),
    /// The difference starts at another serial than the copy's.
    Serial {
        /// The serial the difference starts at.
        from: u32,
        /// The copy's serial (none before the first full transfer).
        held: Option<u32>,
    },
    /// A deleted record is not in the copy (or has another TTL).
    NotHeld(String),
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::UnknownZone(zone) => write!(f, "zone {zone} is not served here"),
            Mismatch::OutsideZone(name) => write!(f, "record {name} lies outside the transferred zone"),
            Mismatch::Serial { from, held: Some(held) } => {
                write!(f, "difference starts at serial {from}, the copy is at {held}")
            }
            Mismatch::Serial { from, held: None } => write!(f, "difference starts at serial {from}, no copy is held"),
            Mismatch::NotHeld(record) => write!(f, "deletion of a record the copy does not hold: {record}"),
        }
    }
}

/// What a transfer changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// The `(name, type)`s whose records changed.
    pub sets: Vec<(Name, u16)>,
    /// Names whose SRV records target a name whose addresses changed: their answers carry
    /// those addresses as glue, so they are rebuilt too.
    pub glue: Vec<Name>,
}

/// The records of every copied zone, by name and type, and each zone's serial.
#[derive(Default)]
pub struct Copy {
    sets: Map<(Name, u16), Rrs>,
    /// For each SRV target, the names whose SRV records point at it.
    referrers: Map<Name, Vec<Name>>,
    /// Per zone (by index zone id): the serial of the copy.
    serials: Map<u8, u32>,
}

// === impl Copy ===

impl Copy {
    /// The records held at `name` of type `t`.
    pub fn get(&self, name: &Name, t: u16) -> Option<&Rrs> {
        self.sets.get(&(name.clone(), t))
    }

    /// The serial of zone `zone`'s copy, if one is held.
    pub fn serial(&self, zone: u8) -> Option<u32> {
        self.serials.get(&zone).copied()
    }

    /// How many RRsets are held.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Applies `transfer` to zone `zone` (whose records are those `in_zone` accepts), whole or
    /// not at all. Returns the `(name, type)`s whose records changed.
    pub fn apply(
        &mut self,
        zone: u8,
        transfer: &ZoneTransfer,
        in_zone: impl Fn(&Name) -> bool,
    ) -> Result<Changed, Mismatch> {
        let mut staged: Map<(Name, u16), Option<Rrs>> = Map::default();
        let check = |r: &CopiedRecord| if in_zone(&r.name) { Ok(()) } else { Err(Mismatch::OutsideZone(describe(r))) };
        match &transfer.content {
            Content::Full(records) => {
                for key in self.sets.keys().filter(|(name, _)| in_zone(name)) {
                    staged.insert(key.clone(), None);
                }
                for record in records {
                    check(record)?;
                    add(&mut staged, &self.sets, record);
                }
            }
            Content::Incremental(steps) => {
                let held = self.serial(zone);
                match steps.first() {
                    Some(first) if held == Some(first.from) => {}
                    Some(first) => return Err(Mismatch::Serial { from: first.from, held }),
                    None if held.is_some() => {}
                    None => return Err(Mismatch::Serial { from: transfer.serial, held }),
                }
                for step in steps {
                    for record in &step.deleted {
                        check(record)?;
                        delete(&mut staged, &self.sets, record)?;
                    }
                    for record in &step.added {
                        check(record)?;
                        add(&mut staged, &self.sets, record);
                    }
                }
            }
        }
        let mut changed = Changed::default();
        for (key, rrs) in staged {
            let rrs = rrs.filter(|r| !r.rdata.is_empty());
            if self.sets.get(&key) == rrs.as_ref() {
                continue;
            }
            let old = match rrs {
                Some(rrs) => self.sets.insert(key.clone(), rrs),
                None => self.sets.remove(&key),
            };
            if key.1 == SRV {
                self.retarget(&key.0, old.as_ref());
            }
            changed.sets.push(key);
        }
        for (name, t) in &changed.sets {
            if matches!(*t, A | AAAA)
                && let Some(referrers) = self.referrers.get(name)
            {
                changed.glue.extend(referrers.iter().cloned());
            }
        }
        self.serials.insert(zone, transfer.serial);
        Ok(changed)
    }

    /// Moves the SRV RRset at `name` from the targets of its `old` records to those of its
    /// current ones in [`Copy::referrers`].
    fn retarget(&mut self, name: &Name, old: Option<&Rrs>) {
        for target in targets(old) {
            if let Some(referrers) = self.referrers.get_mut(&target) {
                referrers.retain(|r| r != name);
                if referrers.is_empty() {
                    self.referrers.remove(&target);
                }
            }
        }
        let new: Vec<Name> = targets(self.sets.get(&(name.clone(), SRV))).collect();
        for target in new {
            let referrers = self.referrers.entry(target).or_default();
            if !referrers.contains(name) {
                referrers.push(name.clone());
            }
        }
    }
}

/// The SRV targets of an RRset.
fn targets(rrs: Option<&Rrs>) -> impl Iterator<Item = Name> + '_ {
    rrs.into_iter().flat_map(|rrs| &rrs.rdata).filter_map(|r| match r {
        Rdata::Srv { target, .. } => Some(target.clone()),
        _ => None,
    })
}

/// The staged RRset of `record`'s name and type, read from `sets` the first time.
fn staged_set<'a>(
    staged: &'a mut Map<(Name, u16), Option<Rrs>>,
    sets: &Map<(Name, u16), Rrs>,
    record: &CopiedRecord,
) -> &'a mut Option<Rrs> {
    let key = (record.name.clone(), super::wire::rdata_type(&record.rdata));
    staged.entry(key).or_insert_with_key(|key| sets.get(key).cloned())
}

/// Adds `record` to its staged RRset, kept sorted and without duplicates. The RRset takes the
/// record's TTL (RFC 2181 §5.2: one TTL per RRset).
fn add(staged: &mut Map<(Name, u16), Option<Rrs>>, sets: &Map<(Name, u16), Rrs>, record: &CopiedRecord) {
    let set =
        staged_set(staged, sets, record).get_or_insert_with(|| Rrs { ttl: record.ttl, rdata: Default::default() });
    if set.rdata.is_empty() {
        set.ttl = record.ttl;
    }
    set.ttl = set.ttl.min(record.ttl);
    if let Err(at) = set.rdata.binary_search(&record.rdata) {
        set.rdata.insert(at, record.rdata.clone());
    }
}

/// Removes `record` from its staged RRset; it must be there, with its TTL.
fn delete(
    staged: &mut Map<(Name, u16), Option<Rrs>>,
    sets: &Map<(Name, u16), Rrs>,
    record: &CopiedRecord,
) -> Result<(), Mismatch> {
    let set = staged_set(staged, sets, record);
    let at = set
        .as_ref()
        .filter(|set| set.ttl == record.ttl)
        .and_then(|set| set.rdata.binary_search(&record.rdata).ok())
        .ok_or_else(|| Mismatch::NotHeld(describe(record)))?;
    if let Some(set) = set {
        set.rdata.remove(at);
    }
    Ok(())
}

fn describe(record: &CopiedRecord) -> String {
    format!("{} {} {:?}", record.name, record.ttl, record.rdata)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn a(name: &str, ttl: u32, ip: [u8; 4]) -> CopiedRecord {
        CopiedRecord { name: Name::parse(name).unwrap(), ttl, rdata: Rdata::A(Ipv4Addr::from(ip)) }
    }

    fn zone() -> Name {
        Name::parse("cluster.local").unwrap()
    }

    fn full(serial: u32, records: Vec<CopiedRecord>) -> ZoneTransfer {
        ZoneTransfer { zone: zone(), serial, content: Content::Full(records) }
    }

    fn step(from: u32, to: u32, deleted: Vec<CopiedRecord>, added: Vec<CopiedRecord>) -> ZoneTransfer {
        ZoneTransfer {
            zone: zone(),
            serial: to,
            content: Content::Incremental(vec![Step { from, to, deleted, added }]),
        }
    }

    fn within(name: &Name) -> bool {
        name.is_within(&zone())
    }

    #[test]
    fn a_full_transfer_replaces_the_zone_and_reports_what_changed() {
        let mut copy = Copy::default();
        let first = copy.apply(0, &full(1, vec![a("a.cluster.local", 5, [10, 0, 0, 1])]), within).unwrap();
        assert_eq!(first.sets.len(), 1);
        let second = copy.apply(0, &full(2, vec![a("b.cluster.local", 5, [10, 0, 0, 2])]), within).unwrap();
        assert_eq!(second.sets.len(), 2, "a removed, b added");
        assert!(copy.get(&Name::parse("a.cluster.local").unwrap(), 1).is_none());
        assert_eq!(copy.serial(0), Some(2));
    }

    #[test]
    fn a_difference_that_does_not_apply_changes_nothing() {
        let mut copy = Copy::default();
        copy.apply(0, &full(1, vec![a("a.cluster.local", 5, [10, 0, 0, 1])]), within).unwrap();
        // Adds one record, then deletes one the copy does not hold: all or nothing.
        let bad =
            step(1, 2, vec![a("a.cluster.local", 5, [10, 0, 0, 9])], vec![a("c.cluster.local", 5, [10, 0, 0, 3])]);
        assert!(matches!(copy.apply(0, &bad, within), Err(Mismatch::NotHeld(_))));
        let wrong_ttl = step(1, 2, vec![a("a.cluster.local", 30, [10, 0, 0, 1])], vec![]);
        assert!(matches!(copy.apply(0, &wrong_ttl, within), Err(Mismatch::NotHeld(_))));
        let elsewhere = step(7, 8, vec![], vec![]);
        assert_eq!(copy.apply(0, &elsewhere, within), Err(Mismatch::Serial { from: 7, held: Some(1) }));
        let outside = step(1, 2, vec![], vec![a("a.example.org", 5, [10, 0, 0, 1])]);
        assert!(matches!(copy.apply(0, &outside, within), Err(Mismatch::OutsideZone(_))));
        assert_eq!(copy.serial(0), Some(1));
        assert_eq!(copy.len(), 1);
        assert!(copy.get(&Name::parse("c.cluster.local").unwrap(), 1).is_none());
    }

    #[test]
    fn a_difference_moves_records_and_the_serial() {
        let mut copy = Copy::default();
        copy.apply(0, &full(1, vec![a("web-0.cluster.local", 5, [10, 0, 0, 1])]), within).unwrap();
        let recreated = step(
            1,
            2,
            vec![a("web-0.cluster.local", 5, [10, 0, 0, 1])],
            vec![a("web-0.cluster.local", 5, [10, 0, 0, 2])],
        );
        let changed = copy.apply(0, &recreated, within).unwrap();
        assert_eq!(changed.sets.len(), 1);
        let set = copy.get(&Name::parse("web-0.cluster.local").unwrap(), 1).unwrap();
        assert_eq!(set.rdata.as_slice(), &[Rdata::A(Ipv4Addr::new(10, 0, 0, 2))]);
        assert_eq!(copy.serial(0), Some(2));
    }

    #[test]
    fn an_address_change_rebuilds_the_srv_answers_that_carry_it_as_glue() {
        let mut copy = Copy::default();
        let target = Name::parse("web-0.web.cluster.local").unwrap();
        let srv = CopiedRecord {
            name: Name::parse("_http._tcp.web.cluster.local").unwrap(),
            ttl: 5,
            rdata: Rdata::Srv { port: 80, target: target.clone() },
        };
        copy.apply(0, &full(1, vec![srv.clone(), a("web-0.web.cluster.local", 5, [10, 0, 0, 1])]), within).unwrap();
        let moved = step(
            1,
            2,
            vec![a("web-0.web.cluster.local", 5, [10, 0, 0, 1])],
            vec![a("web-0.web.cluster.local", 5, [10, 0, 0, 2])],
        );
        assert_eq!(copy.apply(0, &moved, within).unwrap().glue, vec![srv.name.clone()]);
        // Once the SRV record is gone, the target's changes rebuild nothing else.
        copy.apply(0, &step(2, 3, vec![srv], vec![]), within).unwrap();
        let again = step(
            3,
            4,
            vec![a("web-0.web.cluster.local", 5, [10, 0, 0, 2])],
            vec![a("web-0.web.cluster.local", 5, [10, 0, 0, 3])],
        );
        assert!(copy.apply(0, &again, within).unwrap().glue.is_empty());
    }
}
