//! The secondary's source (`--source primary:ADDR[:PORT]`, repeatable for failover): instead of
//! watching the API server, copy the zones from a headless-dns primary (or any server that
//! transfers them) by AXFR, then IXFR (RFC 1995) whenever a primary sends NOTIFY (RFC 1996), and
//! at the SOA refresh interval as a backstop.
//!
//! ```text
//!  NOTIFY from a listed primary ─▶ Inbox ─┐
//!  SOA refresh timer / retry backoff ─────┴▶ round: per zone, IXFR (AXFR without a copy)
//!                                            │ read, check the framing, decode records
//!                                            ▼
//!                   Event::Transfer ─▶ writer: applied whole, or not at all ─▶ outcome back
//! ```
//!
//! **Several primaries.** Replicas that watch the API server independently have different serial
//! histories (each serial is its own clock's time), so a difference is only ever asked of the
//! primary the zone's copy came from: the copy remembers its origin, and moving to another
//! primary (when the current one is unreachable) starts with a full transfer. So does the first
//! transfer after a primary could not be reached: it may have restarted, and a restarted
//! primary starts a new history whose serials may repeat the old one's. A primary that was only
//! slow (or paused) keeps its history, and the copy follows it by IXFR. A secondary never applies
//! a difference from a history it does not share.
//!
//! **Bad input loses nothing.** A transfer is read whole and its framing checked before anything
//! is applied; a malformed, truncated, oversized or refused transfer is logged with the peer and
//! the copy keeps serving. A difference that does not apply to the copy (it deletes a record the
//! copy does not hold, or starts at another serial) and a serial that went backwards are logged
//! and answered with a full transfer. Until the first transfer of every zone is applied, queries
//! for the zones get SERVFAIL and `/readyz` says 503; once it is, the copy serves whatever
//! happens to the primaries, and one warning per outage says they are unreachable.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{DNSClass, Name as HName, RData, Record, RecordType};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{Event, Sender};
use crate::dns::name::Name;
use crate::dns::proto::{MAX_MESSAGE, soa};
use crate::dns::server::{length_prefix, read_framed};
use crate::dns::transfer::serial_lt;
use crate::index::copy::{Content, CopiedRecord, Mismatch, Step, ZoneTransfer};
use crate::index::records::Rdata;
use crate::metrics::{Metrics, SecondaryMetrics, TransferLabel};
use crate::notify::Inbox;

/// How long connecting to a primary may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a primary may take to send each message of a transfer.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest transfer read (all its messages): a bound on what a faulty primary can make a
/// secondary hold. 100,000 endpoints transfer in about 25 MB.
const MAX_TRANSFER_BYTES: usize = 1 << 30;
/// Retry after a failed round: doubling from the first, up to the cap (or the SOA's retry,
/// whichever is shorter).
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_CAP: Duration = Duration::from_secs(30);

/// `--source primary:ADDR[:PORT]`: the primaries, in order of preference.
#[derive(Clone, Debug)]
pub struct PrimaryOptions {
    /// Their DNS addresses (TCP for transfers; NOTIFY is accepted from their IPs).
    pub primaries: Vec<SocketAddr>,
}

/// A transfer on its way to the writer, and the way its outcome comes back.
pub struct Delivery {
    /// The transfer, parsed and framed.
    pub transfer: ZoneTransfer,
    reply: parking_lot::Mutex<Option<oneshot::Sender<Result<bool, Mismatch>>>>,
}

impl Delivery {
    /// Sends the writer's outcome back to the transfer task.
    pub fn reply(&self, outcome: Result<bool, Mismatch>) {
        if let Some(tx) = self.reply.lock().take() {
            let _ = tx.send(outcome);
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery").field("zone", &self.transfer.zone).field("serial", &self.transfer.serial).finish()
    }
}

/// Why a transfer failed (nothing was applied).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The primary could not be reached or the connection broke.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The primary took too long.
    #[error("timed out")]
    Timeout,
    /// The primary answered with an error.
    #[error("primary answered {0}")]
    Refused(ResponseCode),
    /// The transfer is not a well-formed AXFR or IXFR.
    #[error("malformed transfer: {0}")]
    Malformed(String),
    /// The transfer exceeds [`MAX_TRANSFER_BYTES`].
    #[error("transfer larger than {} MiB", MAX_TRANSFER_BYTES >> 20)]
    TooLarge,
}

/// What one request brought (public for the fuzz target, with [`receive`]).
#[doc(hidden)]
#[derive(Debug)]
pub enum Fetched {
    /// The copy is current (a single SOA with its serial).
    Current,
    /// The whole zone must be asked for (the primary's serial went backwards, or it answered
    /// a newer serial without the difference), for this reason.
    Full(String),
    /// A transfer to apply, and its SOA.
    Transfer(ZoneTransfer, Box<SOA>),
}

/// Copies the zones from `opts.primaries` until `cancel`.
pub async fn run(
    opts: PrimaryOptions,
    zones: Vec<Name>,
    inbox: Arc<Inbox>,
    tx: Sender,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut secondary = Secondary::new(opts.primaries, zones, tx, metrics.secondary.clone());
    let ticker = tokio::spawn(tick(metrics.secondary.clone(), secondary.refreshed.clone(), inbox.clone()));
    let mut retry = RETRY_FIRST;
    let mut outage: Option<Instant> = None;
    // The zones the next round refreshes (None: all of them).
    let mut which: Option<Vec<usize>> = None;
    loop {
        let wait = match secondary.round(which.as_deref()).await {
            Ok(()) => {
                if let Some(since) = outage.take() {
                    tracing::info!(failing_for = ?since.elapsed(), "copy up to date again");
                }
                if !secondary.synced {
                    secondary.synced = true;
                    if !super::send(&secondary.tx, Event::Synced).await {
                        break;
                    }
                }
                retry = RETRY_FIRST;
                secondary.refresh
            }
            Err(error) => {
                if outage.is_none() {
                    outage = Some(Instant::now());
                    tracing::warn!(
                        primaries = ?secondary.primaries,
                        %error,
                        serving = if secondary.synced { "the last copy" } else { "SERVFAIL until a first transfer" },
                        "cannot bring the copy up to date from any primary; retrying with backoff"
                    );
                } else {
                    tracing::debug!(%error, "primaries still unreachable");
                }
                let wait = retry.min(secondary.retry);
                retry = (retry * 2).min(RETRY_CAP);
                wait
            }
        };
        // A NOTIFY names the zone that changed: only those are asked for, unless the round
        // failed (then every zone, once a primary answers again) or the refresh timer is due.
        let notified = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = inbox.wait() => true,
            _ = tokio::time::sleep(wait) => false,
        };
        let zones = inbox.take_zones();
        which = (notified && outage.is_none())
            .then(|| {
                let which: Vec<usize> = (0..secondary.zones.len())
                    .filter(|&z| zones.iter().any(|w| w.as_slice() == secondary.zones[z].as_wire()))
                    .collect();
                (!which.is_empty()).then_some(which)
            })
            .flatten();
    }
    ticker.abort();
}

/// Keeps the age gauges current: seconds since the last refresh, and the lag behind the newest
/// NOTIFY (from its arrival until a round that started after it succeeded).
async fn tick(metrics: SecondaryMetrics, refreshed: Arc<parking_lot::Mutex<Option<Instant>>>, inbox: Arc<Inbox>) {
    loop {
        let refreshed = *refreshed.lock();
        if let Some(at) = refreshed {
            metrics.since_refresh.set(at.elapsed().as_secs_f64());
        }
        let lag = match (inbox.latest(), refreshed) {
            (Some(notified), Some(at)) if at >= notified => 0.0,
            (Some(notified), _) => notified.elapsed().as_secs_f64(),
            (None, _) => 0.0,
        };
        metrics.notify_lag.set(lag);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The transfer task's state: where each zone's copy came from and at which serial.
struct Secondary {
    primaries: Vec<SocketAddr>,
    /// The primary tried first: the last one that answered.
    preferred: usize,
    zones: Vec<Name>,
    /// Per zone: the primary the copy came from and its serial.
    held: Vec<Option<(usize, u32)>>,
    /// Refresh and retry intervals of the newest SOA.
    refresh: Duration,
    retry: Duration,
    synced: bool,
    /// When a round that started then last succeeded.
    refreshed: Arc<parking_lot::Mutex<Option<Instant>>>,
    /// The connection of the last transfer and its primary, kept for the next one: a NOTIFY
    /// round every few tens of milliseconds would otherwise open a connection per zone per
    /// round. The primary closes it when idle (10 s), and the next request opens another.
    conn: Option<(usize, TcpStream)>,
    tx: Sender,
    metrics: SecondaryMetrics,
}

impl Secondary {
    fn new(primaries: Vec<SocketAddr>, zones: Vec<Name>, tx: Sender, metrics: SecondaryMetrics) -> Secondary {
        let held = vec![None; zones.len()];
        Secondary {
            primaries,
            preferred: 0,
            zones,
            held,
            refresh: Duration::from_secs(u64::from(soa::REFRESH)),
            retry: Duration::from_secs(u64::from(soa::RETRY)),
            synced: false,
            refreshed: Arc::new(parking_lot::Mutex::new(None)),
            conn: None,
            tx,
            metrics,
        }
    }

    /// Brings the zones `which` (None: every zone) up to date from the preferred primary, else
    /// the next one that answers.
    async fn round(&mut self, which: Option<&[usize]>) -> Result<(), FetchError> {
        let started = Instant::now();
        let mut last_error = None;
        for offset in 0..self.primaries.len() {
            let primary = (self.preferred + offset) % self.primaries.len();
            match self.refresh_from(primary, which).await {
                Ok(()) => {
                    if primary != self.preferred {
                        tracing::info!(primary = %self.primaries[primary], "now copying from this primary");
                        self.preferred = primary;
                    }
                    *self.refreshed.lock() = Some(started);
                    return Ok(());
                }
                Err(error) => {
                    tracing::debug!(primary = %self.primaries[primary], %error, "transfer failed");
                    if matches!(error, FetchError::Io(_) | FetchError::Timeout) {
                        // It may come back as a new process: a new history, whose serials may
                        // repeat ours. The first transfer from it after this is a full one.
                        self.forget(primary);
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or(FetchError::Timeout))
    }

    /// Brings the zones `which` (None: every zone) up to date from `primary`. Moving to another
    /// primary takes every zone: the copy must not mix two primaries' histories for long.
    async fn refresh_from(&mut self, primary: usize, which: Option<&[usize]>) -> Result<(), FetchError> {
        let all: Vec<usize> = (0..self.zones.len()).collect();
        let which = which.filter(|_| primary == self.preferred).unwrap_or(&all);
        for &zone in which {
            self.refresh_zone(primary, zone).await?;
        }
        Ok(())
    }

    /// Brings one zone up to date from `primary`: IXFR when its copy came from there, else
    /// AXFR; a difference that does not apply, or a serial gone backwards, is followed by AXFR.
    async fn refresh_zone(&mut self, primary: usize, zone: usize) -> Result<(), FetchError> {
        let peer = self.primaries[primary];
        let name = self.zones[zone].clone();
        let mut held = self.held[zone].filter(|(from, _)| *from == primary).map(|(_, serial)| serial);
        loop {
            let kind = if held.is_some() { "ixfr" } else { "axfr" };
            let fetched = match self.fetch(primary, &name, held).await {
                Ok(fetched) => fetched,
                Err(error) => {
                    self.count(kind, "error");
                    if matches!(error, FetchError::Malformed(_) | FetchError::TooLarge | FetchError::Refused(_)) {
                        tracing::warn!(%peer, zone = %name, %error, "zone transfer failed; the copy keeps serving");
                    }
                    return Err(error);
                }
            };
            let (transfer, soa) = match fetched {
                Fetched::Current => {
                    self.count("current", "ok");
                    return Ok(());
                }
                Fetched::Full(reason) => {
                    tracing::warn!(%peer, zone = %name, held = ?held, reason, "full transfer");
                    held = None;
                    continue;
                }
                Fetched::Transfer(transfer, soa) => (transfer, soa),
            };
            let kind = if matches!(transfer.content, Content::Full(_)) { "axfr" } else { "ixfr" };
            if let (Some(held), Content::Full(_)) = (held, &transfer.content)
                && serial_lt(transfer.serial, held)
            {
                tracing::warn!(%peer, zone = %name, serial = transfer.serial, held, "primary's serial went backwards; taking its zone");
            }
            let serial = transfer.serial;
            match self.deliver(transfer).await {
                Some(Ok(changed)) => {
                    self.count(kind, "ok");
                    self.held[zone] = Some((primary, serial));
                    self.refresh = interval(soa.refresh, soa::REFRESH);
                    self.retry = interval(soa.retry, soa::RETRY);
                    if zone == 0 {
                        self.metrics.serial.set(i64::from(serial));
                    }
                    tracing::debug!(%peer, zone = %name, serial, kind, changed, "zone transfer applied");
                    return Ok(());
                }
                Some(Err(mismatch)) => {
                    self.count(kind, "mismatch");
                    tracing::warn!(%peer, zone = %name, serial, %mismatch, "transfer does not apply to the copy; full transfer");
                    if held.is_none() {
                        return Err(FetchError::Malformed(mismatch.to_string()));
                    }
                    held = None;
                }
                // The writer stopped: shutting down.
                None => return Ok(()),
            }
        }
    }

    /// Asks `primary` for `zone`: IXFR from `held`, or AXFR without a copy; on the connection
    /// kept from the last transfer if it is to the same primary, else (or if the primary closed
    /// it meanwhile) on a new one, which is kept if the transfer succeeds.
    async fn fetch(&mut self, primary: usize, zone: &Name, held: Option<u32>) -> Result<Fetched, FetchError> {
        let peer = self.primaries[primary];
        if let Some((from, stream)) = self.conn.take()
            && from == primary
        {
            match exchange(stream, zone, held, &self.metrics).await {
                Ok((fetched, stream)) => {
                    self.conn = Some((primary, stream));
                    return Ok(fetched);
                }
                // Closed while idle: not the primary's failure, ask again on a new connection.
                Err(Exchange::Unanswered) => tracing::debug!(%peer, "kept connection closed; reconnecting"),
                Err(Exchange::Failed(error)) => return Err(error),
            }
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer))
            .await
            .map_err(|_| FetchError::Timeout)??;
        match exchange(stream, zone, held, &self.metrics).await {
            Ok((fetched, stream)) => {
                self.conn = Some((primary, stream));
                Ok(fetched)
            }
            Err(Exchange::Unanswered) => Err(FetchError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the primary closed the connection without answering",
            ))),
            Err(Exchange::Failed(error)) => Err(error),
        }
    }

    /// Forgets which serials came from `primary`, so that the next transfers from it are full.
    fn forget(&mut self, primary: usize) {
        for held in &mut self.held {
            if held.is_some_and(|(from, _)| from == primary) {
                *held = None;
            }
        }
    }

    /// Hands a transfer to the writer and waits for its outcome (None: the writer stopped).
    async fn deliver(&self, transfer: ZoneTransfer) -> Option<Result<bool, Mismatch>> {
        let (reply, outcome) = oneshot::channel();
        let delivery = Delivery { transfer, reply: parking_lot::Mutex::new(Some(reply)) };
        if !super::send(&self.tx, Event::Transfer(Arc::new(delivery))).await {
            return None;
        }
        outcome.await.ok()
    }

    fn count(&self, kind: &'static str, result: &'static str) {
        self.metrics.transfers.get_or_create(&TransferLabel { kind, result }).inc();
    }
}

/// An SOA timer as a duration (the default when it is not positive).
fn interval(seconds: i32, default: u32) -> Duration {
    Duration::from_secs(u64::try_from(seconds).ok().filter(|s| *s > 0).unwrap_or(u64::from(default)))
}

/// Why an exchange on a connection brought no transfer.
enum Exchange {
    /// The connection was closed (or reset) before any answer: a kept connection the primary
    /// closed while it was idle.
    Unanswered,
    /// Anything else.
    Failed(FetchError),
}

impl From<FetchError> for Exchange {
    fn from(error: FetchError) -> Exchange {
        Exchange::Failed(error)
    }
}

impl From<std::io::Error> for Exchange {
    fn from(error: std::io::Error) -> Exchange {
        Exchange::Failed(error.into())
    }
}

/// Asks for `zone` on `stream`: IXFR from `held`, or AXFR without a copy. Returns the stream,
/// positioned after the answer, for the next request.
async fn exchange(
    mut stream: TcpStream,
    zone: &Name,
    held: Option<u32>,
    metrics: &SecondaryMetrics,
) -> Result<(Fetched, TcpStream), Exchange> {
    let apex = HName::from_ascii(zone.to_dotted()).map_err(|e| FetchError::Malformed(e.to_string()))?;
    let id = crate::forward::rand_u64() as u16;
    let mut request = Message::new(id, MessageType::Query, OpCode::Query);
    let qtype = if held.is_some() { RecordType::IXFR } else { RecordType::AXFR };
    request.add_query(Query::query(apex.clone(), qtype));
    if let Some(serial) = held {
        // RFC 1995 §3: the client's SOA in the authority section; only its serial matters.
        let soa = SOA::new(HName::root(), HName::root(), serial, 0, 0, 0, 0);
        request.authorities.push(Record::from_rdata(apex.clone(), 0, RData::SOA(soa)));
    }
    let bytes = request.to_vec().map_err(|e| FetchError::Malformed(e.to_string()))?;
    let mut framed = length_prefix(bytes.len()).to_vec();
    framed.extend_from_slice(&bytes);
    if let Err(error) = stream.write_all(&framed).await {
        return Err(if closed(&error) { Exchange::Unanswered } else { error.into() });
    }
    // Whether the primary answers at all: a kept connection it closed meanwhile ends (or is
    // reset) before the first byte.
    match tokio::time::timeout(READ_TIMEOUT, stream.peek(&mut [0u8; 1])).await {
        Err(_) => return Err(FetchError::Timeout.into()),
        Ok(Ok(0)) => return Err(Exchange::Unanswered),
        Ok(Err(error)) if closed(&error) => return Err(Exchange::Unanswered),
        Ok(Err(error)) => return Err(error.into()),
        Ok(Ok(_)) => {}
    }
    let fetched = receive(&mut stream, id, zone, held, metrics).await?;
    Ok((fetched, stream))
}

/// Reads the answer to transfer request `id` for `zone` (IXFR from `held`, or AXFR) from
/// `stream`, and checks its framing. Public for the fuzz target (`tests/fuzz`), which feeds it
/// bytes instead of a connection.
#[doc(hidden)]
pub async fn receive<R: AsyncRead + Unpin>(
    stream: &mut R,
    id: u16,
    zone: &Name,
    held: Option<u32>,
    metrics: &SecondaryMetrics,
) -> Result<Fetched, FetchError> {
    let mut reader = Reader::new(zone.clone(), held);
    let mut total = 0;
    let mut buf = Vec::new();
    loop {
        match read_framed(stream, &mut buf, MAX_MESSAGE, READ_TIMEOUT, READ_TIMEOUT).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(FetchError::Malformed("the primary closed the connection before the final SOA".into()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(FetchError::Timeout),
            Err(e) => return Err(e.into()),
        }
        total += buf.len();
        metrics.transfer_bytes.inc_by(buf.len() as u64 + 2);
        if total > MAX_TRANSFER_BYTES {
            return Err(FetchError::TooLarge);
        }
        let message = Message::from_vec(&buf).map_err(|e| FetchError::Malformed(e.to_string()))?;
        if message.metadata.id != id || message.metadata.message_type != MessageType::Response {
            return Err(FetchError::Malformed("an answer to another query".into()));
        }
        if message.metadata.response_code != ResponseCode::NoError {
            return Err(FetchError::Refused(message.metadata.response_code));
        }
        if message.answers.is_empty() {
            return Err(FetchError::Malformed("a message without records".into()));
        }
        for record in &message.answers {
            if reader.push(record)? {
                return reader.finish();
            }
        }
        if reader.only_soa() {
            // A single SOA, alone in its message: the answer to an IXFR from a copy that is
            // current (or ahead).
            return reader.finish();
        }
    }
}

/// Whether `error` says the other end closed the connection.
fn closed(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(error.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe)
}

/// Where the reader is in the record sequence (RFC 5936 §2.2, RFC 1995 §4).
enum State {
    /// Nothing read.
    Start,
    /// The opening SOA read: the next record tells AXFR from IXFR.
    Opened,
    /// Reading a whole zone.
    Full,
    /// Reading a version's deletions (after its old SOA).
    Deleting,
    /// Reading a version's additions (after its new SOA).
    Adding,
}

/// Reads a transfer record by record, checking its framing.
struct Reader {
    zone: Name,
    held: Option<u32>,
    state: State,
    soa: Option<Box<SOA>>,
    records: Vec<CopiedRecord>,
    steps: Vec<Step>,
    step: Option<Step>,
    /// Records of types the index does not hold, skipped.
    skipped: usize,
}

impl Reader {
    fn new(zone: Name, held: Option<u32>) -> Reader {
        Reader {
            zone,
            held,
            state: State::Start,
            soa: None,
            records: Vec::new(),
            steps: Vec::new(),
            step: None,
            skipped: 0,
        }
    }

    fn serial(&self) -> u32 {
        self.soa.as_ref().map_or(0, |s| s.serial)
    }

    fn only_soa(&self) -> bool {
        matches!(self.state, State::Opened)
    }

    /// Takes the next record. Returns true at the final SOA.
    fn push(&mut self, record: &Record) -> Result<bool, FetchError> {
        let malformed = |what: &str| Err(FetchError::Malformed(what.to_string()));
        let soa = match &record.data {
            RData::SOA(soa) => {
                if name_of(&record.name).is_none_or(|n| n != self.zone) {
                    return malformed("an SOA record that is not the zone's");
                }
                Some(soa)
            }
            _ => None,
        };
        match (&self.state, soa) {
            (State::Start, Some(soa)) => {
                self.soa = Some(Box::new(soa.clone()));
                self.state = State::Opened;
            }
            (State::Start, None) => return malformed("the first record is not the zone's SOA"),
            (State::Opened, Some(soa)) if Some(soa.serial) == self.held && soa.serial != self.serial() => {
                self.step = Some(Step { from: soa.serial, to: soa.serial, deleted: Vec::new(), added: Vec::new() });
                self.state = State::Deleting;
            }
            // An empty zone: its SOA twice.
            (State::Opened, Some(soa)) if soa.serial == self.serial() => {
                self.state = State::Full;
                return Ok(true);
            }
            (State::Opened, Some(_)) => return malformed("the second SOA is neither the copy's nor the zone's"),
            (State::Opened, None) => {
                self.state = State::Full;
                self.keep(record, false);
            }
            (State::Full, Some(soa)) if soa.serial == self.serial() => return Ok(true),
            (State::Full, Some(_)) => return malformed("an SOA inside the zone"),
            (State::Full, None) => self.keep(record, false),
            (State::Deleting, Some(soa)) => {
                let step = self.step.as_mut().expect("a step is open while deleting");
                if !serial_lt(step.from, soa.serial) {
                    return malformed("a version that does not move the serial forward");
                }
                step.to = soa.serial;
                self.state = State::Adding;
            }
            (State::Deleting, None) => self.keep(record, true),
            (State::Adding, Some(soa)) => {
                let step = self.step.take().expect("a step is open while adding");
                let to = step.to;
                self.steps.push(step);
                if soa.serial != to {
                    return malformed("a version that does not start where the last one ended");
                }
                if to == self.serial() {
                    return Ok(true);
                }
                self.step = Some(Step { from: to, to, deleted: Vec::new(), added: Vec::new() });
                self.state = State::Deleting;
            }
            (State::Adding, None) => self.keep(record, false),
        }
        Ok(false)
    }

    /// Keeps a zone record (a deletion or not), or counts it as skipped.
    fn keep(&mut self, record: &Record, deleted: bool) {
        let Some(copied) = copied(record) else {
            self.skipped += 1;
            return;
        };
        match (&mut self.step, deleted) {
            (Some(step), true) => step.deleted.push(copied),
            (Some(step), false) => step.added.push(copied),
            (None, _) => self.records.push(copied),
        }
    }

    /// What the records read say, once the final SOA (or a lone one) is read.
    fn finish(self) -> Result<Fetched, FetchError> {
        let Some(soa) = self.soa else { return Err(FetchError::Malformed("no SOA".into())) };
        if self.skipped > 0 {
            tracing::warn!(zone = %self.zone, skipped = self.skipped, "transfer holds records of types this server does not serve; skipped");
        }
        let content = match self.state {
            State::Opened => {
                // A lone SOA: RFC 1995 §2 sends it to a copy that is current (or ahead).
                return match self.held {
                    Some(held) if held == soa.serial => Ok(Fetched::Current),
                    Some(held) if serial_lt(soa.serial, held) => {
                        Ok(Fetched::Full(format!("primary's serial went backwards ({} after {held})", soa.serial)))
                    }
                    Some(held) => Ok(Fetched::Full(format!("a lone SOA {} newer than the copy's {held}", soa.serial))),
                    None => Err(FetchError::Malformed("a lone SOA in answer to AXFR".into())),
                };
            }
            State::Adding | State::Deleting if !self.steps.is_empty() && self.step.is_none() => {
                Content::Incremental(self.steps)
            }
            State::Adding | State::Deleting => {
                return Err(FetchError::Malformed("the transfer ended mid-version".into()));
            }
            State::Full | State::Start => Content::Full(self.records),
        };
        let transfer = ZoneTransfer { zone: self.zone, serial: soa.serial, content };
        Ok(Fetched::Transfer(transfer, soa))
    }
}

/// Our name of a transferred name (lower case), if it is one we can hold.
fn name_of(name: &HName) -> Option<Name> {
    let labels: Option<Vec<&str>> = name.iter().map(|label| std::str::from_utf8(label).ok()).collect();
    Name::from_labels(labels?).ok()
}

/// A transferred record as the index holds it; None for types it does not hold (and SOA).
fn copied(record: &Record) -> Option<CopiedRecord> {
    if record.dns_class != DNSClass::IN {
        return None;
    }
    let rdata = match &record.data {
        RData::A(a) => Rdata::A(a.0),
        RData::AAAA(aaaa) => Rdata::Aaaa(aaaa.0),
        RData::CNAME(cname) => Rdata::Cname(name_of(&cname.0)?),
        RData::NS(ns) => Rdata::Ns(name_of(&ns.0)?),
        RData::PTR(ptr) => Rdata::Ptr(name_of(&ptr.0)?),
        RData::SRV(srv) => Rdata::Srv { port: srv.port, target: name_of(&srv.target)? },
        RData::TXT(txt) => {
            let text: Vec<u8> = txt.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
            Rdata::Txt(Arc::from(String::from_utf8(text).ok()?))
        }
        _ => return None,
    };
    Some(CopiedRecord { name: name_of(&record.name)?, ttl: record.ttl, rdata })
}
