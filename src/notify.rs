//! NOTIFY (RFC 1996) to the secondaries named by `--notify`, so a BIND, Knot or NSD secondary
//! fetches a change at once instead of at its next SOA refresh (ours says 7200 s).
//!
//! ```text
//!  Index.serial ──poll──▶ one task per peer ──NOTIFY per zone (UDP, retried)──▶ secondary
//!                          (a round `delay` after a change,        └─▶ IXFR (or AXFR) back
//!                           at most one round per `delay`)
//! ```
//!
//! A zone is notified when its serial moves, which it does only when its records change (a
//! reverse zone of addresses that did not change is left alone). Changes are coalesced: a round waits `--notify-delay` ([`DEFAULT_DELAY`]) after the change
//! that starts it, and a peer gets at most one NOTIFY per zone per delay, carrying whatever
//! changed meanwhile, so churn never becomes a storm (nor a storm of transfers): a burst of
//! updates becomes one NOTIFY and one IXFR. The delay is short because it is added to every
//! change's way to the secondaries; one IXFR per delay per secondary is cheap. A NOTIFY that is not answered is
//! sent again after 1, 2, 4 and 8 s (RFC 1996 §3.6 leaves the interval and count to the operator;
//! its 60 s suggestion is far slower than a Pod recreation), and given up early when a newer serial
//! supersedes it. Only the configured peers are ever sent anything.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::dns::proto::MIN_UDP;
use crate::dns::transfer::unmapped;
use crate::index::Index;

/// The default `--notify-delay`: from a change to its NOTIFY, and between two rounds to a peer.
pub const DEFAULT_DELAY: Duration = Duration::from_millis(50);
/// How often the serial is looked at (an atomic load).
const POLL: Duration = Duration::from_millis(10);
/// How long to wait for each answer: the first send and three retransmissions.
const WAITS: [Duration; 4] =
    [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4), Duration::from_secs(8)];

/// What became of one NOTIFY.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The peer answered, with this rcode.
    Answered(ResponseCode),
    /// No answer after every retransmission (or the socket failed).
    Silent,
    /// A newer serial came before an answer: the next round notifies it.
    Superseded,
}

/// How long a learned secondary (`--notify-secondaries`) is notified after its last transfer: far
/// longer than its SOA refresh (7200 s), so one that is current and idle is not forgotten.
pub const LEARNED_FOR: Duration = Duration::from_secs(24 * 3600);

/// Secondaries learned from their transfers, and the port they take NOTIFY on.
pub struct Learned {
    /// Who transferred recently.
    pub clients: Arc<crate::dns::transfer::Clients>,
    /// Where they listen for NOTIFY.
    pub port: u16,
}

/// Notifies `peers`, and the secondaries `learned` finds, of every serial change of `index`
/// until `cancel`.
pub async fn run(
    index: Arc<Index>,
    peers: Vec<SocketAddr>,
    learned: Option<Learned>,
    delay: Duration,
    cancel: CancellationToken,
) {
    // By zone id: a zone's NOTIFY names it, its serial is the index's of that id.
    let zones: Vec<Name> =
        index.zones().iter().map(|z| Name::from_ascii(z.name.to_dotted()).expect("zone names are valid")).collect();
    let zones = Arc::new(zones);
    let spawn = |peer| tokio::spawn(notify_peer(index.clone(), zones.clone(), peer, delay));
    let mut tasks: std::collections::HashMap<SocketAddr, tokio::task::JoinHandle<()>> =
        peers.iter().map(|&peer| (peer, spawn(peer))).collect();
    if let Some(learned) = learned {
        let mut check = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = check.tick() => {}
            }
            let recent: HashSet<SocketAddr> =
                learned.clients.recent(LEARNED_FOR).into_iter().map(|ip| SocketAddr::new(ip, learned.port)).collect();
            for &peer in &recent {
                tasks.entry(peer).or_insert_with(|| {
                    tracing::info!(%peer, "secondary learned from its transfer; notifying it of changes");
                    spawn(peer)
                });
            }
            tasks.retain(|peer, task| {
                let keep = peers.contains(peer) || recent.contains(peer);
                if !keep {
                    tracing::info!(%peer, "secondary has not transferred for a day; no longer notified");
                    task.abort();
                }
                keep
            });
        }
    } else {
        cancel.cancelled().await;
    }
    for task in tasks.into_values() {
        task.abort();
    }
}

/// The rounds of NOTIFY to one peer: one once the first state is served (the peer may hold an
/// older copy), then one after each change: `delay` after it, and at most one per `delay`. A
/// round names only the zones whose serial moved since the last one.
async fn notify_peer(index: Arc<Index>, zones: Arc<Vec<Name>>, peer: SocketAddr, delay: Duration) {
    let mut notified: Vec<Option<u32>> = vec![None; zones.len()];
    let serials = |index: &Index| (0..zones.len()).map(|z| index.zone_serial(z as u8)).collect::<Vec<_>>();
    let mut silent = false;
    let mut declined: HashSet<Name> = HashSet::new();
    // One socket per zone, kept from round to round: a round every few tens of milliseconds
    // would otherwise open and close one per zone each time.
    let mut sockets: Vec<Option<UdpSocket>> = zones.iter().map(|_| None).collect();
    loop {
        let current = |z: usize| notified[z] == Some(index.zone_serial(z as u8));
        while !index.is_ready() || (0..zones.len()).all(current) {
            tokio::time::sleep(POLL).await;
        }
        // Let a burst of changes settle into one round.
        tokio::time::sleep(delay).await;
        let round = tokio::time::Instant::now();
        let moved: Vec<(u8, u32)> = serials(&index)
            .into_iter()
            .enumerate()
            .filter(|(z, s)| notified[*z] != Some(*s))
            .map(|(z, s)| (z as u8, s))
            .collect();
        for &(zone, serial) in &moved {
            notified[zone as usize] = Some(serial);
        }
        let sends = sockets.iter_mut().enumerate().filter_map(|(z, socket)| {
            let &(zone, serial) = moved.iter().find(|(m, _)| *m as usize == z)?;
            Some(notify(&index, peer, zone, &zones[z], serial, socket))
        });
        let outcomes = futures::future::join_all(sends).await;
        for (&(zone, serial), outcome) in moved.iter().zip(outcomes) {
            let zone = &zones[zone as usize];
            match outcome {
                Outcome::Answered(ResponseCode::NoError) => {
                    tracing::debug!(%peer, %zone, serial, "NOTIFY acknowledged");
                    if std::mem::take(&mut silent) {
                        tracing::info!(%peer, "secondary answers NOTIFY again");
                    }
                }
                Outcome::Answered(rcode) => {
                    // NOTAUTH: the peer is no secondary of this zone (often the reverse zones).
                    // REFUSED: its ACL does not allow us. Retrying would not change either.
                    if declined.insert(zone.clone()) {
                        if rcode == ResponseCode::NotAuth {
                            tracing::debug!(%peer, %zone, %rcode, "secondary does not serve this zone");
                        } else {
                            tracing::warn!(%peer, %zone, %rcode, "secondary declines NOTIFY for this zone");
                        }
                    }
                }
                Outcome::Silent if !std::mem::replace(&mut silent, true) => tracing::warn!(
                    %peer,
                    %zone,
                    attempts = WAITS.len(),
                    "secondary does not answer NOTIFY; it will learn of changes at its SOA refresh"
                ),
                Outcome::Silent => tracing::debug!(%peer, %zone, serial, "NOTIFY not answered"),
                Outcome::Superseded => {}
            }
        }
        tokio::time::sleep_until(round + delay).await;
    }
}

/// Sends one NOTIFY for `zone` (id `zone_id`) to `peer` on `socket` (opened if there is none yet)
/// and waits for its answer, retransmitting the same message.
async fn notify(
    index: &Index,
    peer: SocketAddr,
    zone_id: u8,
    zone: &Name,
    serial: u32,
    socket: &mut Option<UdpSocket>,
) -> Outcome {
    let id = crate::forward::rand_u64() as u16;
    // RFC 1996 §3.7: opcode NOTIFY, AA set, the zone's SOA as the question.
    let mut message = Message::new(id, MessageType::Query, OpCode::Notify);
    message.metadata.authoritative = true;
    message.add_query(Query::query(zone.clone(), RecordType::SOA));
    let Ok(packet) = message.to_vec() else { return Outcome::Silent };
    let local: IpAddr = match (peer.ip(), peer.ip().is_loopback()) {
        (IpAddr::V4(_), true) => Ipv4Addr::LOCALHOST.into(),
        (IpAddr::V4(_), false) => Ipv4Addr::UNSPECIFIED.into(),
        (IpAddr::V6(_), true) => Ipv6Addr::LOCALHOST.into(),
        (IpAddr::V6(_), false) => Ipv6Addr::UNSPECIFIED.into(),
    };
    if socket.is_none() {
        *socket = match UdpSocket::bind((local, 0)).await {
            Ok(socket) if socket.connect(peer).await.is_ok() => Some(socket),
            Ok(_) | Err(_) => return Outcome::Silent,
        };
    }
    let Some(socket) = socket.as_ref() else { return Outcome::Silent };
    let mut buf = [0u8; MIN_UDP as usize];
    for wait in WAITS {
        if index.zone_serial(zone_id) != serial {
            return Outcome::Superseded;
        }
        if let Err(error) = socket.send(&packet).await {
            tracing::debug!(%peer, %error, "sending NOTIFY failed");
        }
        let deadline = tokio::time::Instant::now() + wait;
        // Answers to anything else (a late answer to an earlier round) are skipped.
        loop {
            match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Err(_)) => {
                    // Typically ICMP port unreachable: the peer is not up yet. Wait out the
                    // interval all the same, so retransmissions keep their spacing.
                    tokio::time::sleep_until(deadline).await;
                    break;
                }
                Ok(Ok(n)) => {
                    if let Ok(answer) = Message::from_vec(&buf[..n])
                        && answer.metadata.id == id
                        && answer.metadata.message_type == MessageType::Response
                        && answer.metadata.op_code == OpCode::Notify
                    {
                        return Outcome::Answered(answer.metadata.response_code);
                    }
                }
            }
        }
    }
    Outcome::Silent
}

/// Where a secondary (`--source primary:ADDR`) receives NOTIFY (RFC 1996 §4): accepted from the
/// listed primaries only, each one waking the transfer task; anyone else is refused and logged.
pub struct Inbox {
    primaries: Vec<IpAddr>,
    /// `--allow-notify`: further networks NOTIFY is accepted from.
    allowed: Vec<ipnet::IpNet>,
    wake: tokio::sync::Notify,
    /// When the newest accepted NOTIFY arrived.
    latest: parking_lot::Mutex<Option<std::time::Instant>>,
    /// The zones (wire) notified since the transfer task last took them.
    zones: parking_lot::Mutex<Vec<Vec<u8>>>,
    /// When a refused NOTIFY was last logged (at most one line per [`REFUSED_LOG_EVERY`]).
    refused_logged: parking_lot::Mutex<Option<std::time::Instant>>,
}

/// How often a stranger's NOTIFY is logged at most: each is refused, a flood is not logged whole.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

impl Inbox {
    /// An inbox accepting NOTIFY from `primaries` and the `allowed` networks.
    pub fn new(primaries: Vec<IpAddr>, allowed: Vec<ipnet::IpNet>) -> Inbox {
        Inbox {
            primaries: primaries.into_iter().map(unmapped).collect(),
            allowed,
            wake: tokio::sync::Notify::new(),
            latest: parking_lot::Mutex::new(None),
            zones: parking_lot::Mutex::new(Vec::new()),
            refused_logged: parking_lot::Mutex::new(None),
        }
    }

    /// Whether `peer` is a listed primary or in an allowed network.
    pub fn accepts(&self, peer: IpAddr) -> bool {
        let peer = unmapped(peer);
        self.primaries.contains(&peer) || self.allowed.iter().any(|net| net.contains(&peer))
    }

    /// A listed primary announced a change of `zone` (wire), perhaps to `serial`.
    pub fn notified(&self, zone: &[u8], serial: Option<u32>, peer: IpAddr) {
        tracing::debug!(%peer, zone = %display_wire(zone), ?serial, "NOTIFY received");
        *self.latest.lock() = Some(std::time::Instant::now());
        let mut zones = self.zones.lock();
        if !zones.iter().any(|z| z.eq_ignore_ascii_case(zone)) {
            zones.push(zone.to_ascii_lowercase());
        }
        drop(zones);
        // Stores a permit when the task is busy transferring: it refreshes once more after.
        self.wake.notify_one();
    }

    /// A NOTIFY from someone who is not a listed primary was refused.
    pub fn refused(&self, peer: Option<IpAddr>, zone: &[u8]) {
        let mut logged = self.refused_logged.lock();
        if logged.is_none_or(|at| at.elapsed() >= REFUSED_LOG_EVERY) {
            *logged = Some(std::time::Instant::now());
            tracing::warn!(
                peer = ?peer,
                zone = %display_wire(zone),
                primaries = ?self.primaries,
                "NOTIFY refused: the sender is not a listed primary (--source primary:ADDR, --allow-notify)"
            );
        }
    }

    /// Waits for the next NOTIFY (or returns at once if one came since the last wait).
    pub async fn wait(&self) {
        self.wake.notified().await;
    }

    /// The zones (wire, lower case) notified since the last call.
    pub fn take_zones(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.zones.lock())
    }

    /// When the newest accepted NOTIFY arrived.
    pub fn latest(&self) -> Option<std::time::Instant> {
        *self.latest.lock()
    }
}

fn display_wire(wire: &[u8]) -> String {
    if crate::dns::name::wire_len(wire) != Some(wire.len()) {
        return String::from("?");
    }
    crate::dns::name::Name::from_wire_unchecked(wire).to_dotted()
}
