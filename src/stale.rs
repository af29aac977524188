//! `--serve-stale` and `--prefetch` (CoreDNS `cache { serve_stale; prefetch }`), on top of
//! hickory-resolver's response cache, which has neither.
//!
//! ```text
//!  forward.rs: lookup ok ──remember──▶ Memory { (name, type) → answers, expiry, asks }
//!              lookup failed ──recall──▶ an answer expired less than --serve-stale ago, TTL 30
//!              the --prefetch'th ask within a TTL ──▶ one task looks the name up again as it
//!                                                     expires, so the cache stays warm
//! ```
//!
//! Only positive answers are remembered. The memory holds at most [`CAPACITY`] names; when
//! full, names past their stale window are dropped, and new ones wait for room.
//!
//! Prefetch refreshes at the moment the entry expires rather than before (hickory-resolver's
//! cache cannot be bypassed, and a lookup before expiry would return the cached answer): a popular
//! name costs clients an upstream round trip only if they ask within that round trip.

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StaleOptions {
    /// How long past its expiry an answer may still be served when every upstream fails
    /// (zero: never).
    pub serve_stale: Duration,
    /// Asks within one TTL that make a name popular enough to refresh as it expires (0: never).
    pub prefetch: u32,
}

impl StaleOptions {
    /// Whether either is on.
    pub fn any(&self) -> bool {
        !self.serve_stale.is_zero() || self.prefetch > 0
    }
}

struct Remembered {
    answers: Vec<Record>,
    expires: Instant,
    asks: u32,
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

    /// Remembers a positive answer (its records' TTLs are what is left of them); `ask` when a
    /// client asked for it. Returns when a refresh is due: the instant the answer expires, once
    /// per TTL, for a name asked `--prefetch` times within it.
    pub fn remember(&self, question: &Query, answers: &[Record], ask: bool) -> Option<Instant> {
        let ttl = answers.iter().map(|r| r.ttl).min()?;
        let now = Instant::now();
        let expires = now + Duration::from_secs(u64::from(ttl));
        let mut entries = self.entries.lock();
        if entries.len() >= CAPACITY {
            let window = self.opts.serve_stale;
            entries.retain(|_, e| e.expires + window > now);
        }
        let len = entries.len();
        let entry = match entries.entry(Memory::key(question)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(_) if len >= CAPACITY => return None,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Remembered { answers: Vec::new(), expires, asks: 0, refreshing: false })
            }
        };
        // The same cached answer (expiring within a second of the last) is another ask; a new
        // one starts counting again.
        let same = entry.expires.max(expires) - entry.expires.min(expires) <= Duration::from_secs(1);
        entry.asks = if same { entry.asks } else { 0 } + u32::from(ask);
        if !same {
            // Kept from the fresh answer: a cached one's TTL is rounded down.
            entry.expires = expires;
            entry.refreshing = false;
        }
        entry.answers = answers.to_vec();
        let due = self.opts.prefetch > 0 && entry.asks >= self.opts.prefetch && !entry.refreshing;
        entry.refreshing |= due;
        // Just after the resolver's cache lets the entry go.
        due.then_some(entry.expires + Duration::from_millis(50))
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

/// Looks `question` up again at `due` (just as it expires from the resolver's cache), so the
/// next client finds it cached; the fresh answer is remembered in turn.
pub fn schedule_refresh<F, Fut>(memory: Arc<Memory>, question: Query, due: Instant, lookup: F)
where
    F: FnOnce(Query) -> Fut + Send + 'static,
    Fut: Future<Output = Option<Vec<Record>>> + Send,
{
    tokio::spawn(async move {
        tokio::time::sleep_until(due.into()).await;
        if let Some(answers) = lookup(question.clone()).await {
            // A refresh is not an ask: remembered as a new answer, counting from zero.
            let _ = memory.remember(&question, &answers, false);
        }
    });
}
