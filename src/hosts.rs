//! `--hosts FILE`: names from a file in the `/etc/hosts` format, as CoreDNS's `hosts` plugin
//! serves them (k3s puts its nodes' names in `/etc/coredns/NodeHosts` this way).
//!
//! ```text
//!  FILE ──poll (metadata, then contents)──▶ parse ──▶ ArcSwap<Table> ◀── slow lane (forward.rs)
//! ```
//!
//! Each line is an address followed by its names (`192.168.1.10 node-1 node-1.lan`); `#` starts
//! a comment. The names answer A or AAAA with their addresses, and the reverse names of the
//! addresses answer PTR with the names. A line that cannot be used is skipped with a warning
//! naming its number; every other line is served. The file is polled: a ConfigMap volume swaps
//! its `..data` symlink rather than writing the file, and reading through the path follows the
//! swap. A file that disappears keeps its last names serving.
//!
//! Names in the served cluster zones are the cluster's (the index answers them); the hosts
//! names are asked for names outside them and for reverse names the cluster does not know,
//! before any upstream.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name as HName, RData, Record, RecordType};
use tokio_util::sync::CancellationToken;

use crate::dns::name::{Name, reverse_name};

/// Why the hosts file could not be used at start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("--hosts {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// What the file says, by name and by reverse name.
#[derive(Debug, Default)]
pub struct Table {
    by_name: HashMap<Name, Vec<IpAddr>>,
    by_reverse: HashMap<Name, Vec<HName>>,
}

/// A line that was skipped, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Its number, from 1.
    pub line: usize,
    /// Why.
    pub reason: String,
}

// === impl Table ===

impl Table {
    /// Parses the `/etc/hosts` format; unusable lines are returned, not fatal.
    pub fn parse(text: &str) -> (Table, Vec<Skipped>) {
        let mut table = Table::default();
        let mut skipped = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("");
            let mut fields = line.split_whitespace();
            let Some(addr) = fields.next() else { continue };
            let skip = |reason: String| Skipped { line: i + 1, reason };
            // A zone index (`fe80::1%eth0`) means nothing off the host; CoreDNS drops it too.
            let Ok(ip) = addr.split('%').next().unwrap_or(addr).parse::<IpAddr>() else {
                skipped.push(skip(format!("{addr:?} is not an IP address")));
                continue;
            };
            let names: Vec<&str> = fields.collect();
            if names.is_empty() {
                skipped.push(skip(format!("{addr} has no names")));
                continue;
            }
            let parsed: Result<Vec<Name>, _> = names.iter().map(|n| Name::parse(n)).collect();
            let parsed = match parsed {
                Ok(parsed) => parsed,
                Err(error) => {
                    skipped.push(skip(error.to_string()));
                    continue;
                }
            };
            for name in parsed {
                let Ok(target) = HName::from_ascii(name.to_dotted()) else { continue };
                push_new(table.by_name.entry(name).or_default(), ip);
                push_new(table.by_reverse.entry(reverse_name(ip)).or_default(), target);
            }
        }
        (table, skipped)
    }

    /// How many names (forward) the table holds.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The records of `name` for `qtype` with `ttl`, or `None` when the file does not have the
    /// name (an empty list is NODATA: the name is there, without that type).
    pub fn answer(&self, name: &HName, qtype: RecordType, ttl: u32) -> Option<Vec<Record>> {
        let key = Name::parse(&name.to_ascii()).ok()?;
        let record = |data| Record::from_rdata(name.clone(), ttl, data);
        if let Some(addrs) = self.by_name.get(&key) {
            let records = addrs.iter().filter_map(|ip| match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(*v4))),
                (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(*v6))),
                _ => None,
            });
            return Some(records.map(record).collect());
        }
        let targets = self.by_reverse.get(&key)?;
        let wanted = qtype == RecordType::PTR;
        Some(targets.iter().filter(|_| wanted).map(|t| record(RData::PTR(PTR(t.clone())))).collect())
    }
}

fn push_new<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// The hosts file as served now, replaced whole on every change.
pub struct Hosts {
    path: PathBuf,
    /// TTL of its answers (`--hosts-ttl`, CoreDNS `ttl`).
    pub ttl: u32,
    table: ArcSwap<Table>,
}

// === impl Hosts ===

impl Hosts {
    /// Reads `path` (an error if it cannot be read; unusable lines are warnings).
    pub fn load(path: &Path, ttl: u32) -> Result<Hosts, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.into(), source })?;
        let hosts = Hosts { path: path.into(), ttl, table: ArcSwap::from_pointee(Table::default()) };
        hosts.apply(&text);
        Ok(hosts)
    }

    /// The current table.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Parses `text`, warns about each skipped line, and serves the result.
    fn apply(&self, text: &str) {
        let (table, skipped) = Table::parse(text);
        for Skipped { line, reason } in &skipped {
            tracing::warn!(path = %self.path.display(), line, %reason, "hosts file: line skipped");
        }
        tracing::info!(path = %self.path.display(), names = table.len(), skipped = skipped.len(), "hosts file read");
        self.table.store(Arc::new(table));
    }

    /// Re-reads the file whenever what its path leads to changes (checked every `interval`),
    /// until cancelled.
    pub async fn watch(self: Arc<Self>, interval: Duration, cancel: CancellationToken) {
        let stamp = |path: &Path| -> Option<(u64, u64, SystemTime)> {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.ino(), meta.len(), meta.modified().ok()?))
        };
        let mut last = stamp(&self.path);
        let mut missing_reported = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = cancel.cancelled() => return,
            }
            let now = stamp(&self.path);
            if now.is_none() && !missing_reported {
                tracing::warn!(path = %self.path.display(), "hosts file is gone; its last names keep serving");
            }
            missing_reported = now.is_none();
            if now.is_none() || now == last {
                continue;
            }
            match std::fs::read_to_string(&self.path) {
                Ok(text) => {
                    self.apply(&text);
                    last = now;
                }
                Err(error) => tracing::warn!(path = %self.path.display(), %error, "hosts file unreadable; retrying"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_as_etc_hosts_and_bad_ones_are_named() {
        let text = "# k3s NodeHosts\n192.168.1.10 node-0 Node-0.lan  # first\n\n\
                    fd00::1 node-0\n999.1.1.1 broken\n10.0.0.1\n10.0.0.2 bad..name\n";
        let (table, skipped) = Table::parse(text);
        let lines: Vec<usize> = skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, [5, 6, 7], "{skipped:?}");
        let ask = |name: &str, t| table.answer(&HName::from_ascii(name).unwrap(), t, 60).map(|r| r.len());
        assert_eq!(ask("node-0.", RecordType::A), Some(1));
        assert_eq!(ask("NODE-0.", RecordType::AAAA), Some(1));
        assert_eq!(ask("node-0.lan.", RecordType::AAAA), Some(0));
        assert_eq!(ask("10.1.168.192.in-addr.arpa.", RecordType::PTR), Some(2));
        assert_eq!(ask("broken.", RecordType::A), None);
    }
}
