//! `--serve-stale` and `--prefetch` (CoreDNS `cache { serve_stale; prefetch }`), on top of
//! hickory-resolver's response cache, which has neither.
//!
//! ```text
//!  forward.rs: lookup ok ──remember──▶ Memory { (name, type) → answers, expiry, asks }
//!              lookup failed ──recall──▶ an answer expired less than --serve-stale ago, TTL 30
//!              the --prefetch'th ask ──▶ one task per popular name: at PERCENTAGE % of its TTL
//!                 left, clear it from the resolver's cache and look it up again; meanwhile and
//!                 after, clients are answered from here (TTLs counting down, never reaching 0)
//! ```
//!
//! Only positive answers are remembered. The memory holds at most [`CAPACITY`] names; when
//! full, names past their stale window are dropped, and new ones wait for room.
//!
//! Prefetch as CoreDNS's: a name is popular once asked `--prefetch` times with no gap of
//! `--prefetch-duration` between two asks; it is refreshed when `--prefetch-percentage` of its
//! TTL is left (at least one second, at most half the TTL), again and again while it is asked
//! within `--prefetch-duration` and since its last refresh. hickory-resolver's cache cannot be
//! written to, so a popular name is answered from the memory rather than from that cache from
//! the moment it is scheduled; a refresh that fails lets the name expire (and, with
//! `--serve-stale`, be served stale).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::Query;
use hickory_proto::rr::{Name, Record, RecordType};
use parking_lot::Mutex;

/// Names remembered at most (as hickory-resolver's cache holds).
pub const CAPACITY: usize = 10_000;
/// The TTL of a stale answer (RFC 8767 §5: "30 seconds … recommended").
pub const STALE_TTL: u32 = 30;

/// `--serve-stale` and `--prefetch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaleOptions {
    /// How long past its expiry an answer may still be served when every upstream fails
    /// (zero: never).
    pub serve_stale: Duration,
    /// Asks that make a name popular enough to keep fresh (0: never).
    pub prefetch: u32,
    /// The longest gap between two asks of a popular name (CoreDNS's default 1m).
    pub prefetch_duration: Duration,
    /// The part of its TTL left, in percent, when a popular name is refreshed (CoreDNS's
    /// default 10).
    pub prefetch_percentage: u8,
}

impl Default for StaleOptions {
    fn default() -> Self {
        StaleOptions {
            serve_stale: Duration::ZERO,
            prefetch: 0,
            prefetch_duration: Duration::from_secs(60),
            prefetch_percentage: 10,
        }
    }
}

impl StaleOptions {
    /// Whether either is on.
    pub fn any(&self) -> bool {
        !self.serve_stale.is_zero() || self.prefetch > 0
    }
}

struct Remembered {
    /// The records, their TTLs as they were at `at`.
    answers: Vec<Record>,
    at: Instant,
    expires: Instant,
    /// The TTL of the fresh answer (the prefetch threshold is a part of it).
    ttl: u32,
    /// Asks with no gap of `--prefetch-duration` between two (CoreDNS's hits).
    asks: u32,
    last_ask: Instant,
    /// A task keeps it fresh: answered from here.
    refreshing: bool,
}

/// What forward.rs remembers of its upstreams' answers.
pub struct Memory {
    opts: StaleOptions,
    entries: Mutex<HashMap<(Name, RecordType), Remembered>>,
}

impl Memory {
    /// An empty memory.
    pub fn new(opts: StaleOptions) -> Memory {
        Memory { opts, entries: Mutex::new(HashMap::new()) }
    }

    fn key(question: &Query) -> (Name, RecordType) {
        (question.name().to_lowercase(), question.query_type())
    }

    /// Remembers a positive answer from the resolver (its records' TTLs are what is left of
    /// them); `ask` when a client asked for it. Returns when to refresh it, once it is popular.
    pub fn remember(&self, question: &Query, answers: &[Record], ask: bool) -> Option<Instant> {
        let ttl = answers.iter().map(|r| r.ttl).min()?;
        let now = Instant::now();
        let expires = now + Duration::from_secs(u64::from(ttl));
        let mut entries = self.entries.lock();
        if entries.len() >= CAPACITY {
            let window = self.opts.serve_stale;
            entries.retain(|_, e| e.refreshing || e.expires + window > now);
        }
        let len = entries.len();
        let entry = match entries.entry(Memory::key(question)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(_) if len >= CAPACITY => return None,
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Remembered {
                answers: Vec::new(),
                at: now,
                expires,
                ttl,
                asks: 0,
                last_ask: now,
                refreshing: false,
            }),
        };
        // The same cached answer (expiring within a second of the last) keeps the expiry and
        // TTL of the fresh one (a cached answer's TTL is rounded down).
        let same = entry.expires.max(expires) - entry.expires.min(expires) <= Duration::from_secs(1);
        if !same {
            entry.expires = expires;
            entry.ttl = ttl;
        }
        entry.answers = answers.to_vec();
        entry.at = now;
        if ask {
            self.ask(entry, now);
        }
        if self.opts.prefetch == 0 || entry.refreshing || entry.asks < self.opts.prefetch || ttl == 0 {
            return None;
        }
        entry.refreshing = true;
        Some(self.refresh_at(entry))
    }

    fn ask(&self, entry: &mut Remembered, now: Instant) {
        let gap = now.saturating_duration_since(entry.last_ask);
        entry.asks = if gap < self.opts.prefetch_duration { entry.asks.saturating_add(1) } else { 1 };
        entry.last_ask = now;
    }

    /// When `--prefetch-percentage` of the fresh answer's TTL is left (at least a second, as
    /// CoreDNS rounds up), but not before half of it has passed.
    fn refresh_at(&self, entry: &Remembered) -> Instant {
        let ttl = u64::from(entry.ttl);
        let left = Duration::from_secs((ttl * u64::from(self.opts.prefetch_percentage)).div_ceil(100).max(1));
        let half = Duration::from_millis(ttl * 500);
        let fetched = entry.expires.checked_sub(Duration::from_secs(ttl)).unwrap_or(entry.at);
        entry.expires.checked_sub(left).unwrap_or(entry.at).max(fetched + half)
    }

    /// The answer to `question` if a task keeps it fresh, with the TTLs left (at least 1), as
    /// an ask.
    pub fn answer(&self, question: &Query) -> Option<Vec<Record>> {
        if self.opts.prefetch == 0 {
            return None;
        }
        let mut entries = self.entries.lock();
        let entry = entries.get_mut(&Memory::key(question))?;
        let now = Instant::now();
        if !entry.refreshing || now >= entry.expires {
            return None;
        }
        self.ask(entry, now);
        let passed = u32::try_from(now.duration_since(entry.at).as_secs()).unwrap_or(u32::MAX);
        let mut answers = entry.answers.clone();
        for record in &mut answers {
            record.ttl = record.ttl.saturating_sub(passed).max(1);
        }
        Some(answers)
    }

    /// Whether `question` is still worth refreshing: asked since its last refresh, and within
    /// `--prefetch-duration`. If not, it is let go: the resolver's cache answers it again.
    fn still_popular(&self, question: &Query) -> bool {
        let mut entries = self.entries.lock();
        let Some(entry) = entries.get_mut(&Memory::key(question)) else { return false };
        let popular = entry.last_ask >= entry.at && entry.last_ask.elapsed() < self.opts.prefetch_duration;
        entry.refreshing &= popular;
        popular
    }

    /// The refreshed answer (`None`: the refresh failed, and the name is let go); returns when
    /// to refresh it next.
    fn refreshed(&self, question: &Query, answers: Option<&[Record]>) -> Option<Instant> {
        let mut entries = self.entries.lock();
        let entry = entries.get_mut(&Memory::key(question))?;
        let fresh = answers.and_then(|a| Some((a, a.iter().map(|r| r.ttl).min()?))).filter(|(_, ttl)| *ttl > 0);
        let Some((answers, ttl)) = fresh else {
            entry.refreshing = false;
            return None;
        };
        let now = Instant::now();
        entry.answers = answers.to_vec();
        entry.at = now;
        entry.ttl = ttl;
        entry.expires = now + Duration::from_secs(u64::from(ttl));
        Some(self.refresh_at(entry))
    }
    /// The answer to `question` if it expired less than `--serve-stale` ago, with the stale TTL.
    pub fn recall(&self, question: &Query) -> Option<Vec<Record>> {
        let entries = self.entries.lock();
        let entry = entries.get(&Memory::key(question))?;
        if self.opts.serve_stale.is_zero() || entry.expires + self.opts.serve_stale < Instant::now() {
            return None;
        }
        let mut answers = entry.answers.clone();
        for record in &mut answers {
            record.ttl = STALE_TTL;
        }
        tracing::debug!(name = %question.name(), "upstreams failed; serving a stale answer");
        Some(answers)
    }
}

/// Keeps `question` fresh from `due` on: looks it up again (`lookup` must bypass the resolver's
/// cache) each time its refresh is due, for as long as it stays popular and the lookups succeed.
pub fn keep_fresh<F, Fut>(memory: Arc<Memory>, question: Query, due: Instant, lookup: F)
where
    F: Fn(Query) -> Fut + Send + 'static,
    Fut: Future<Output = Option<Vec<Record>>> + Send,
{
    tokio::spawn(async move {
        let mut due = due;
        loop {
            tokio::time::sleep_until(due.into()).await;
            if !memory.still_popular(&question) {
                return;
            }
            tracing::debug!(name = %question.name(), "prefetching a popular name");
            let answers = lookup(question.clone()).await;
            match memory.refreshed(&question, answers.as_deref()) {
                Some(next) => due = next,
                None => return,
            }
        }
    });
}
