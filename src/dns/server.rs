//! Sockets and workers.
//!
//! UDP: for each listen address, one socket per worker thread, all bound to the same port with
//! `SO_REUSEPORT` so the kernel spreads clients over the workers. Each worker is a plain OS thread
//! with buffers allocated once: no task spawn, no allocation and no lock held beyond one map
//! shard's read guard per query (hickory's server spawns a task per datagram, the thing we avoid).
//! On Linux a worker loops `recvmmsg` (up to `--udp-batch` datagrams) → [`Responder::handle`] for
//! each → one `sendmmsg` for the replies (`super::mmsg`); elsewhere, or with `--udp-batch 1`, it
//! loops `recv_from` → [`Responder::handle`] → `send_to`. Forwarded and autopath queries go to one
//! Tokio task (the slow lane), which sends their replies on a clone of the worker's socket. A
//! worker checks the stop flag at least every 100 ms (its socket's read timeout).
//!
//! TCP: Tokio tasks, one per connection, several queries per connection answered in order
//! (RFC 7766), in batches: one read takes every query a client has pipelined, and their answers
//! go out in one write, so a busy connection costs a few system calls per batch, not per query
//! (see `tcp_connection`). Connections are bounded; at the bound the least recently active
//! connection is closed to make room, so idle or slow clients can never lock new clients out.
//! Idle connections time out, and a message must arrive whole within a deadline once its length
//! has been read.

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket};
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::answer::{Caps, Outcome, Responder};
use super::finish::Transport;
use super::proto::MAX_MESSAGE;
use super::slow::Lane;
use super::stats::{LocalStats, QueryStats, is_v6};
use crate::forward::Forwarder;

/// Limits on TCP clients.
#[derive(Clone, Debug)]
pub struct TcpLimits {
    /// Open connections at most; at the limit the least recently active one is closed.
    pub max_connections: usize,
    /// How long a connection may wait between queries.
    pub idle_timeout: Duration,
    /// How long one query (after its length) or one response write may take.
    pub io_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits { max_connections: 1024, idle_timeout: Duration::from_secs(10), io_timeout: Duration::from_secs(2) }
    }
}

/// Bound, not yet serving, sockets.
pub struct Sockets {
    /// Per listen address: the UDP sockets, one per worker.
    pub udp: Vec<Vec<UdpSocket>>,
    /// Per listen address: the TCP listener.
    pub tcp: Vec<StdTcpListener>,
}

impl Sockets {
    /// Binds UDP and TCP on each address (the same port for both; with port 0, a free one).
    pub fn bind(addrs: &[SocketAddr], udp_workers: usize) -> io::Result<Sockets> {
        let mut sockets = Sockets { udp: Vec::new(), tcp: Vec::new() };
        for &addr in addrs {
            let mut attempt = 0;
            loop {
                match bind_one(addr, udp_workers.max(1)) {
                    Ok((udp, tcp)) => {
                        sockets.udp.push(udp);
                        sockets.tcp.push(tcp);
                        break;
                    }
                    // Port 0: the UDP port the kernel picked may be taken for TCP; pick again.
                    Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse && attempt < 20 => {
                        attempt += 1;
                    }
                    Err(e) => {
                        return Err(io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")));
                    }
                }
            }
        }
        Ok(sockets)
    }

    /// The bound addresses (UDP and TCP share them).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().filter_map(|s| s.first()?.local_addr().ok()).collect()
    }
}

fn new_socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

fn bind_one(addr: SocketAddr, workers: usize) -> io::Result<(Vec<UdpSocket>, StdTcpListener)> {
    let mut udp = Vec::with_capacity(workers);
    let mut port_addr = addr;
    for _ in 0..workers {
        let s = new_socket(port_addr, Type::DGRAM, Protocol::UDP)?;
        s.set_reuse_port(true)?;
        // Best effort: the kernel caps it at net.core.rmem_max (208 KiB by default).
        let _ = s.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
        s.bind(&port_addr.into())?;
        let s: UdpSocket = s.into();
        port_addr = s.local_addr()?;
        udp.push(s);
    }
    let t = new_socket(port_addr, Type::STREAM, Protocol::TCP)?;
    t.set_reuse_address(true)?;
    t.bind(&port_addr.into())?;
    t.listen(1024)?;
    t.set_nonblocking(true)?;
    Ok((udp, t.into()))
}

/// What every UDP worker, slow-lane task and TCP connection shares for the server's lifetime.
pub struct Shared {
    /// Answers queries from the index and finishes every response (`--max-udp-size`, `--nsid`).
    pub responder: Responder,
    /// Upstreams for names outside the served zones; `None` answers them REFUSED.
    pub forwarder: Option<Arc<Forwarder>>,
    /// Query counters for `/metrics`, which each worker adds its own counts into.
    pub stats: Arc<QueryStats>,
    /// Limits on TCP clients.
    pub tcp: TcpLimits,
    /// Datagrams a UDP worker receives and answers per system call on Linux (1: one
    /// `recv_from`/`send_to` per query, the loop used elsewhere).
    pub udp_batch: usize,
}

/// The running DNS workers.
pub struct DnsServer {
    stop: Arc<AtomicBool>,
    cancel: CancellationToken,
    udp_threads: Vec<JoinHandle<()>>,
    tcp_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl DnsServer {
    /// Starts serving the sockets. Must be called within a Tokio runtime (for TCP).
    pub fn start(sockets: Sockets, shared: Shared) -> io::Result<DnsServer> {
        let shared = Arc::new(shared);
        let stop = Arc::new(AtomicBool::new(false));
        let cancel = CancellationToken::new();
        let mut udp_threads = Vec::new();
        let mut tcp_tasks = Vec::new();
        // UDP workers hand forwarded and autopath queries to one async task (they never wait on
        // upstreams).
        let forwarding = shared.forwarder.is_some();
        let jobs = (forwarding || shared.responder.autopath()).then(|| {
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            tcp_tasks.push(tokio::spawn(slow_lane(rx, shared.clone(), cancel.clone())));
            tx
        });
        for (addr_index, group) in sockets.udp.into_iter().enumerate() {
            for (worker, socket) in group.into_iter().enumerate() {
                socket.set_read_timeout(Some(Duration::from_millis(100)))?;
                let shared = shared.clone();
                let stop = stop.clone();
                let forward = match &jobs {
                    Some(tx) => Some((tx.clone(), Arc::new(socket.try_clone()?))),
                    None => None,
                };
                let thread =
                    std::thread::Builder::new().name(format!("dns-udp-{addr_index}-{worker}")).spawn(move || {
                        let worker = UdpWorker {
                            responder: &shared.responder,
                            stop: &stop,
                            forward,
                            forwarding,
                            shared_stats: &shared.stats,
                            stats: LocalStats::default(),
                            last_error_log: None,
                        };
                        udp_worker(socket, worker, shared.udp_batch)
                    })?;
                udp_threads.push(thread);
            }
        }
        let conns = Arc::new(Conns::default());
        for listener in sockets.tcp {
            let listener = TcpListener::from_std(listener)?;
            tcp_tasks.push(tokio::spawn(tcp_accept(listener, shared.clone(), conns.clone(), cancel.clone())));
        }
        Ok(DnsServer { stop, cancel, udp_threads, tcp_tasks })
    }

    /// Stops every worker and waits for them.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cancel.cancel();
        for task in self.tcp_tasks {
            let _ = task.await;
        }
        let threads = self.udp_threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Answers one packet, turning a panic (a bug: no input should cause one) into a dropped packet
/// instead of a dead worker.
fn respond_guarded(responder: &Responder, packet: &[u8], transport: Transport, out: &mut [u8], caps: Caps) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| responder.handle(packet, transport, out, caps))) {
        Ok(outcome) => outcome,
        Err(_) => {
            tracing::error!(len = packet.len(), packet = ?&packet[..packet.len().min(64)], "BUG: query handling panicked; packet dropped");
            Outcome::Drop
        }
    }
}

/// A query a UDP worker hands to the slow lane, with where to send the answer.
pub struct UdpJob {
    /// The query as received.
    pub packet: Vec<u8>,
    /// Who asked.
    pub peer: SocketAddr,
    /// The socket it came in on (a clone).
    pub socket: Arc<UdpSocket>,
    /// Autopath (else forward).
    pub autopath: bool,
}

/// Answers forwarded and autopath queries from UDP workers, each in its own task, until cancelled.
async fn slow_lane(mut jobs: tokio::sync::mpsc::Receiver<UdpJob>, shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let job = tokio::select! {
            job = jobs.recv() => match job { Some(job) => job, None => return },
            _ = cancel.cancelled() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let outcome = if job.autopath { Outcome::Autopath } else { Outcome::Forward };
            let mut out = vec![0u8; MAX_MESSAGE];
            let lane = Lane { responder: &shared.responder, forwarder: shared.forwarder.as_deref() };
            if let Some(n) = lane.answer(&job.packet, Transport::Udp, outcome, &mut out).await {
                // A UDP send does not block in practice; the socket is the worker's own.
                let _ = job.socket.send_to(&out[..n], job.peer);
            }
        });
    }
}

/// A UDP worker's way to the slow lane: the job queue and a clone of its socket to answer on.
type UdpForward = (tokio::sync::mpsc::Sender<UdpJob>, Arc<UdpSocket>);

/// What a UDP worker thread owns besides its socket and buffers.
struct UdpWorker<'a> {
    responder: &'a Responder,
    stop: &'a AtomicBool,
    forward: Option<UdpForward>,
    forwarding: bool,
    shared_stats: &'a QueryStats,
    stats: LocalStats,
    last_error_log: Option<Instant>,
}

// === impl UdpWorker ===

impl UdpWorker<'_> {
    /// Handles a receive error: a timeout (the socket's 100 ms read timeout, so `stop` is seen
    /// promptly) or an interrupted call is idle time, when the counts are published.
    fn recv_error(&mut self, e: io::Error) {
        if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) {
            self.stats.flush(self.shared_stats);
            return;
        }
        // ICMP errors from earlier sends surface here (ECONNREFUSED); log at most once a minute.
        if self.last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            tracing::debug!(error = %e, "UDP receive error");
            self.last_error_log = Some(Instant::now());
        }
    }

    /// Answers one datagram into `out` and returns the reply's length, or hands it to the slow
    /// lane (which sends its own reply), or drops it.
    fn serve(&mut self, packet: &[u8], peer: SocketAddr, out: &mut [u8], received: Instant) -> Option<usize> {
        let caps = Caps { forward: self.forwarding, client: Some(peer.ip()) };
        match respond_guarded(self.responder, packet, Transport::Udp, out, caps) {
            Outcome::Reply(len) => {
                self.stats.answered(false, is_v6(&peer), &out[..len], received.elapsed().as_nanos() as u64);
                Some(len)
            }
            outcome @ (Outcome::Forward | Outcome::Autopath) => {
                self.stats.forwarded(false, is_v6(&peer), packet);
                if let Some((jobs, reply)) = &self.forward {
                    let autopath = outcome == Outcome::Autopath;
                    let job = UdpJob { packet: packet.to_vec(), peer, socket: reply.clone(), autopath };
                    // A full queue means upstreams are far behind: drop, the client retries.
                    let _ = jobs.try_send(job);
                }
                None
            }
            Outcome::Drop => {
                self.stats.dropped();
                None
            }
        }
    }

    /// One datagram per system call each way: `recv_from` → answer → `send_to`. The portable
    /// loop, and `--udp-batch 1` on Linux.
    fn run_simple(mut self, socket: &UdpSocket) {
        let mut rx = vec![0u8; MAX_MESSAGE];
        let mut tx = vec![0u8; MAX_MESSAGE];
        while !self.stop.load(Ordering::Relaxed) {
            if self.stats.due() {
                self.stats.flush(self.shared_stats);
            }
            let (n, peer) = match socket.recv_from(&mut rx) {
                Ok(received) => received,
                Err(e) => {
                    self.recv_error(e);
                    continue;
                }
            };
            if let Some(len) = self.serve(&rx[..n], peer, &mut tx, Instant::now())
                && let Err(e) = socket.send_to(&tx[..len], peer)
            {
                tracing::trace!(error = %e, %peer, "UDP send failed");
            }
        }
    }

    /// Up to `size` datagrams per system call each way: `recvmmsg` → answer each into its own
    /// reply buffer → `sendmmsg` (see [`super::mmsg`]).
    #[cfg(target_os = "linux")]
    fn run_batched(mut self, socket: &UdpSocket, size: usize) {
        let mut batch = super::mmsg::Batch::new(size, self.responder.max_udp() as usize);
        while !self.stop.load(Ordering::Relaxed) {
            if self.stats.due() {
                self.stats.flush(self.shared_stats);
            }
            let n = match batch.recv(socket) {
                Ok(n) => n,
                Err(e) => {
                    self.recv_error(e);
                    continue;
                }
            };
            let received = Instant::now();
            for i in 0..n {
                let Some((packet, peer, out)) = batch.slot(i) else {
                    self.stats.dropped();
                    continue;
                };
                if let Some(len) = self.serve(packet, peer, out, received) {
                    batch.reply(i, len);
                }
            }
            let sent = batch.send(socket);
            if let Some(e) = sent.error {
                tracing::trace!(error = %e, failed = sent.failed, "UDP send failed");
            }
        }
    }
}

fn udp_worker(socket: UdpSocket, worker: UdpWorker<'_>, batch: usize) {
    #[cfg(target_os = "linux")]
    if batch > 1 {
        return worker.run_batched(&socket, batch);
    }
    let _ = batch;
    worker.run_simple(&socket)
}

/// Open TCP connections, for eviction at the limit.
#[derive(Default)]
struct Conns {
    open: Mutex<Vec<Arc<Conn>>>,
    epoch: std::sync::OnceLock<Instant>,
    /// How many connections the process's file descriptor limit allows, once accept has run out
    /// of them (0: not yet).
    fd_bound: AtomicUsize,
    /// Connections whose tasks still hold their sockets: those open, and those closed to make
    /// room whose tasks have not run yet.
    live: AtomicUsize,
    /// Signalled when a connection's task has let go of its socket.
    released: Notify,
}

/// How far the sockets held may run ahead of the bound while closed connections' tasks are still
/// to run (accepting waits beyond it).
const TCP_CLOSING: usize = 32;

struct Conn {
    last_active_ms: AtomicU64,
    close: Notify,
}

impl Conns {
    fn now_ms(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    /// Registers a new connection, closing the least recently active one if at the limit.
    fn admit(&self, max: usize) -> Arc<Conn> {
        let conn = Arc::new(Conn { last_active_ms: AtomicU64::new(self.now_ms()), close: Notify::new() });
        let max = self.bound(max);
        self.live.fetch_add(1, Ordering::AcqRel);
        let mut open = self.open.lock();
        while open.len() >= max && Self::evict_oldest(&mut open) {}
        open.push(conn.clone());
        conn
    }

    /// The bound on open connections: `max` (`--tcp-max-connections`), or less if the file
    /// descriptor limit said so.
    fn bound(&self, max: usize) -> usize {
        match self.fd_bound.load(Ordering::Relaxed) {
            0 => max,
            fds => max.min(fds),
        }
    }

    /// Waits until the sockets still held are within [`TCP_CLOSING`] of the bound. Under a flood of
    /// new connections the accept loop would otherwise run ahead of the tasks of the connections
    /// it closes (a scheduling round's worth: over a hundred sockets).
    async fn room(&self, max: usize) {
        while self.live.load(Ordering::Acquire) >= self.bound(max) + TCP_CLOSING {
            self.released.notified().await;
        }
    }

    /// Closes the least recently active connection; false if there is none.
    fn evict_oldest(open: &mut Vec<Arc<Conn>>) -> bool {
        let Some((i, _)) = open.iter().enumerate().min_by_key(|(_, c)| c.last_active_ms.load(Ordering::Relaxed)) else {
            return false;
        };
        open.swap_remove(i).close.notify_one();
        true
    }

    /// Accept ran out of file descriptors (the process's limit, `ulimit -n`, is below
    /// `--tcp-max-connections`): from now on the connections open now, less a margin for the
    /// server's other files, are the bound, and the oldest are closed down to it, so new
    /// clients get in at once instead of waiting for idle ones to time out. Returns the bound if
    /// it is new. The bound is set once: running out again means closed connections have not
    /// released their descriptors yet (their tasks run a little later), not a lower limit.
    fn out_of_fds(&self) -> Option<usize> {
        let mut open = self.open.lock();
        let (bound, new) = match self.fd_bound.load(Ordering::Relaxed) {
            0 => (open.len().saturating_sub(16).max(1), true),
            bound => (bound, false),
        };
        self.fd_bound.store(bound, Ordering::Relaxed);
        while open.len() > bound && Self::evict_oldest(&mut open) {}
        new.then_some(bound)
    }

    /// A connection's task has ended and dropped its socket.
    fn release(&self, conn: &Arc<Conn>) {
        self.open.lock().retain(|c| !Arc::ptr_eq(c, conn));
        self.live.fetch_sub(1, Ordering::AcqRel);
        self.released.notify_one();
    }
}

async fn tcp_accept(listener: TcpListener, shared: Arc<Shared>, conns: Arc<Conns>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = conns.room(shared.tcp.max_connections) => {}
            _ = cancel.cancelled() => return,
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if let Some(bound) = conns.out_of_fds() {
                        tracing::warn!(error = %e, bound, "TCP accept out of file descriptors: at most this many \
                            connections from now on (raise `ulimit -n` or lower --tcp-max-connections)");
                    }
                    // Let the closed connections' tasks release their descriptors.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Err(e) => {
                    // Back off instead of spinning.
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = cancel.cancelled() => return,
        };
        // A fixed send buffer instead of the kernel's autotuning (up to `tcp_wmem`'s 4 MiB): a
        // client that pipelines queries and never reads fills it after a few dozen answers
        // instead of making us answer and hold megabytes per connection.
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(TCP_SEND_BUFFER);
        let conn = conns.admit(shared.tcp.max_connections);
        let (shared, conns, cancel) = (shared.clone(), conns.clone(), cancel.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = tcp_connection(stream, peer, &shared, &conns, &conn) => {}
                _ = conn.close.notified() => tracing::debug!(%peer, "TCP connection evicted at the connection limit"),
                _ = cancel.cancelled() => {}
            }
            conns.release(&conn);
        });
    }
}

/// The longest message read over TCP. A query is a header, one question of at most 259 bytes and
/// an OPT record (plus, for IXFR, one SOA): a few hundred bytes. Anything longer (up to the
/// 65,535 bytes the length prefix allows) closes the connection unread, so a hostile client
/// cannot make the server hold 64 KiB per connection.
pub const MAX_TCP_QUERY: usize = 4096;

/// SO_SNDBUF of a TCP connection (Linux doubles it for its bookkeeping: 128 KiB of queued
/// answers per connection at most). Ample for a client that reads its answers; a zone transfer
/// to a secondary 10 ms away still moves about 10 MB/s.
const TCP_SEND_BUFFER: usize = 64 * 1024;

/// The receive buffer asked for each UDP socket. The default (net.core.rmem_default, 208 KiB)
/// holds about 200 queries, 12 ms at 16,000 queries a second: a worker that loses its core that
/// long to the writer applying a burst of changes (they share it on a small node) drops queries
/// in the kernel, which a client only sees as a timeout (a 20-minute soak lost 1,589 of 19.2
/// million that way). 4 MiB rides out such stalls; the kernel grants at most
/// net.core.rmem_max, so on a node left at its default this changes nothing.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// What a connection keeps of its buffers between batches (a larger one is freed once emptied).
const TCP_KEEP: usize = 4096;

/// Bytes one read takes from a connection: dozens of pipelined queries per system call. It also
/// bounds the queries a connection holds unanswered while its client does not read.
pub const TCP_READ: usize = 8 * 1024;

/// Answers gathered before they are written: one write for a whole batch of pipelined queries,
/// and at most this much (plus one answer) held for a client that does not read.
pub const TCP_BATCH: usize = 8 * 1024;

/// Room before the read area of [`Scratch::rx`] for the start of a message left over from the
/// previous read, so that the two join without another copy of what was read.
pub const TCP_CARRY: usize = 2 + MAX_TCP_QUERY;

/// The buffers each TCP-serving thread reads and answers into, one set per runtime thread
/// instead of one per connection. Borrowed only between two awaits.
struct Scratch {
    /// [`TCP_CARRY`] bytes for a partial message, then [`TCP_READ`] bytes to read into.
    rx: Vec<u8>,
    /// Framed answers: [`TCP_BATCH`] bytes, then room for one more answer of any size.
    tx: Vec<u8>,
}

thread_local! {
    static TCP_SCRATCH: std::cell::RefCell<Scratch> = const { std::cell::RefCell::new(Scratch { rx: Vec::new(), tx: Vec::new() }) };
}

/// What a connection does after a batch, once the answers the socket did not take are written.
enum Next {
    /// Read more: every complete message in hand is answered.
    Read,
    /// Answer the messages still in hand (the client was not reading fast enough to take more).
    Answer,
    /// Serve a zone transfer request, then answer what follows it.
    Transfer(Vec<u8>),
    /// The slow lane answers this query (forward or autopath), then what follows it.
    Slow(Outcome, Vec<u8>),
    /// Close the connection.
    Close,
}

/// Writes what the socket takes of `bytes` now, without waiting; the rest goes to `pending`.
fn write_now(stream: &TcpStream, bytes: &[u8], pending: &mut Vec<u8>) -> io::Result<()> {
    let mut sent = 0;
    while sent < bytes.len() {
        match stream.try_write(&bytes[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    pending.extend_from_slice(&bytes[sent..]);
    Ok(())
}

/// What [`read_framed`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framed {
    /// A whole message, now in the buffer.
    Message,
    /// Its length prefix announces this many bytes, more than allowed: nothing more was read.
    TooLong(usize),
}

/// Reads one TCP message (RFC 1035 §4.2.2, RFC 7766 §8: two bytes of length in network order,
/// then the message) into `buf`, resized to it. The length may take `idle` to come, the message
/// `within` once the length is read. Errors are the stream's: `UnexpectedEof` when it ends before
/// a whole message, `TimedOut` when a deadline passes. Both ends use it: the server for queries,
/// the secondary for transfer messages (`source::primary`).
pub async fn read_framed<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
    idle: Duration,
    within: Duration,
) -> io::Result<Framed> {
    let timed_out = |_| io::Error::from(io::ErrorKind::TimedOut);
    let mut len = [0u8; 2];
    tokio::time::timeout(idle, stream.read_exact(&mut len)).await.map_err(timed_out)??;
    let len = usize::from(u16::from_be_bytes(len));
    if len > max {
        return Ok(Framed::TooLong(len));
    }
    buf.resize(len, 0);
    tokio::time::timeout(within, stream.read_exact(buf)).await.map_err(timed_out)??;
    Ok(Framed::Message)
}

/// The two-byte length prefix of a TCP message of `len` bytes. A DNS message is at most 65,535
/// bytes ([`MAX_MESSAGE`]); a longer one is a bug, and would desynchronise the stream.
pub fn length_prefix(len: usize) -> [u8; 2] {
    u16::try_from(len).expect("a DNS message is at most 65,535 bytes").to_be_bytes()
}

/// One read of what the socket holds. A read shorter than `buf` has emptied the socket's receive
/// queue, so it also clears the stream's readiness (as a read that would block does), unless the
/// client has closed its side (`read_closed`: the end of input must still be read). Without
/// this, every batch would end with one more read that finds nothing. Nothing is lost: data that
/// arrives after the read raises a new edge-triggered event, which the runtime delivers as new
/// readiness (its clearing only takes the readiness this read was made on), as nginx does with
/// its `ready` flag on a short `recv`.
fn read_drained(stream: &TcpStream, buf: &mut [u8], read_closed: bool) -> io::Result<usize> {
    use std::io::Read;
    let mut got = 0;
    let read = stream.try_io(tokio::io::Interest::READABLE, || {
        got = (&*socket2::SockRef::from(stream)).read(buf)?;
        match got {
            n if n > 0 && n < buf.len() && !read_closed => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    });
    match read {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        read => read,
    }
}

/// Empties `buf`, freeing it if it grew past [`TCP_KEEP`].
fn clear_buffer(buf: &mut Vec<u8>) {
    buf.clear();
    if buf.capacity() > TCP_KEEP {
        *buf = Vec::new();
    }
}

/// Where [`split_queries`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split<B> {
    /// The input ends inside a message, or at its end: read more.
    Partial,
    /// A length prefix announces this many bytes, more than [`MAX_TCP_QUERY`]: close.
    TooLong(usize),
    /// The caller stopped at a query (counted as used).
    Stopped(B),
}

/// The server's TCP framing (RFC 1035 §4.2.2, RFC 7766 §8) over what one batch has in hand:
/// hands each whole message at the start of `input` to `each`, in order, until `input` ends
/// inside a message, a prefix announces more than [`MAX_TCP_QUERY`] bytes, or `each` breaks.
/// Returns how many bytes of `input` it used (whole messages only) and why it stopped. The
/// messages are borrowed from `input`: no copy, no allocation.
pub fn split_queries<B>(input: &[u8], mut each: impl FnMut(&[u8]) -> ControlFlow<B>) -> (usize, Split<B>) {
    let mut used = 0;
    loop {
        let Some(&[hi, lo]) = input.get(used..used + 2) else { return (used, Split::Partial) };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len > MAX_TCP_QUERY {
            return (used, Split::TooLong(len));
        }
        let Some(query) = input.get(used + 2..used + 2 + len) else { return (used, Split::Partial) };
        used += 2 + len;
        if let ControlFlow::Break(stop) = each(query) {
            return (used, Split::Stopped(stop));
        }
    }
}

/// Runs `answer` over the input a connection has in hand, and keeps in `carry` what it did not
/// use. With `read` (`Some(n)`: `n` bytes just read into `rx[TCP_CARRY..]`), the input is `carry`
/// (the start of one message, less than [`TCP_CARRY`] bytes) joined to them, copied in front of
/// them in `rx`; without, it is `carry` alone (whole messages left by a batch that stopped
/// early). `answer` returns how many bytes it used, and what to return.
pub fn join_read<T>(
    carry: &mut Vec<u8>,
    rx: &mut [u8],
    read: Option<usize>,
    answer: impl FnOnce(&[u8]) -> (usize, T),
) -> T {
    let Some(n) = read else {
        let (used, next) = answer(carry);
        carry.drain(..used);
        return next;
    };
    // Only the start of one message is ever carried into a read (a batch that stops with whole
    // messages left is followed by one without a read).
    debug_assert!(carry.len() < TCP_CARRY);
    let from = TCP_CARRY - carry.len();
    rx[from..TCP_CARRY].copy_from_slice(carry);
    let input = &rx[from..TCP_CARRY + n];
    let (used, next) = answer(input);
    carry.clear();
    carry.extend_from_slice(&input[used..]);
    next
}

/// One TCP connection's state between batches.
struct TcpConn<'a> {
    stream: TcpStream,
    peer: SocketAddr,
    shared: &'a Shared,
    stats: LocalStats,
    /// Input not answered yet: the start of a message, or (after [`Next::Answer`] and the like)
    /// messages that follow one whose answer had to wait.
    carry: Vec<u8>,
    /// Answers the socket has not taken yet.
    pending: Vec<u8>,
    /// The client has shut its side down (seen with the last readiness).
    read_closed: bool,
}

impl TcpConn<'_> {
    /// One batch: with `read`, one read of whatever the client has sent (joined to the start of a
    /// message left from the last read); then every complete message in hand is answered in
    /// order into the thread's scratch, and the answers written with one write (one per
    /// [`TCP_BATCH`] bytes of answers). What the socket does not take goes to `pending`, and
    /// answering stops there, leaving the rest of the input in `carry`. A transfer request, a
    /// query for the slow lane, or a malformed message also ends the batch.
    fn batch(&mut self, read: bool) -> Next {
        TCP_SCRATCH.with_borrow_mut(|scratch| {
            if scratch.rx.len() < TCP_CARRY + TCP_READ {
                scratch.rx.resize(TCP_CARRY + TCP_READ, 0);
                scratch.tx.resize(TCP_BATCH + 2 + MAX_MESSAGE, 0);
            }
            let read = if read {
                match read_drained(&self.stream, &mut scratch.rx[TCP_CARRY..], self.read_closed) {
                    Ok(0) => return Next::Close,
                    Ok(n) => Some(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Read,
                    Err(_) => return Next::Close,
                }
            } else {
                None
            };
            let mut carry = std::mem::take(&mut self.carry);
            let next = join_read(&mut carry, &mut scratch.rx, read, |input| self.answer(input, &mut scratch.tx));
            self.carry = carry;
            next
        })
    }

    /// Answers the complete messages at the start of `input` into `tx` and writes the answers;
    /// returns how much of `input` it used and what comes next.
    fn answer(&mut self, input: &[u8], tx: &mut [u8]) -> (usize, Next) {
        let (responder, forwarder) = (&self.shared.responder, self.shared.forwarder.as_deref());
        let caps = Caps { forward: forwarder.is_some(), client: Some(self.peer.ip()) };
        let received = Instant::now();
        let mut out = 0;
        let (used, split) = split_queries(input, |query| {
            if super::transfer::is_transfer(query) {
                return ControlFlow::Break(Next::Transfer(query.to_vec()));
            }
            let answer = &mut tx[out + 2..out + 2 + MAX_MESSAGE];
            match respond_guarded(responder, query, Transport::Tcp, answer, caps) {
                Outcome::Reply(n) => {
                    self.stats.answered(true, is_v6(&self.peer), &answer[..n], received.elapsed().as_nanos() as u64);
                    tx[out..out + 2].copy_from_slice(&length_prefix(n));
                    out += 2 + n;
                }
                outcome @ (Outcome::Autopath | Outcome::Forward) => {
                    self.stats.forwarded(true, is_v6(&self.peer), query);
                    return ControlFlow::Break(Next::Slow(outcome, query.to_vec()));
                }
                // Not even a header, or a response: nothing sensible to say on this connection.
                Outcome::Drop => {
                    self.stats.dropped();
                    return ControlFlow::Break(Next::Close);
                }
            }
            if out >= TCP_BATCH {
                let written = write_now(&self.stream, &tx[..out], &mut self.pending);
                out = 0;
                if written.is_err() {
                    return ControlFlow::Break(Next::Close);
                }
                if !self.pending.is_empty() {
                    // The client is not reading: answer the rest once this is written.
                    return ControlFlow::Break(Next::Answer);
                }
            }
            ControlFlow::Continue(())
        });
        let next = match split {
            Split::Partial => Next::Read,
            Split::TooLong(len) => {
                tracing::debug!(peer = %self.peer, len, "TCP message longer than any query; connection closed");
                self.stats.dropped();
                Next::Close
            }
            Split::Stopped(next) => next,
        };
        if out > 0 && write_now(&self.stream, &tx[..out], &mut self.pending).is_err() {
            return (used, Next::Close);
        }
        (used, next)
    }
}

/// One TCP connection: queries answered in order until the client goes idle or misbehaves.
///
/// Queries are answered in batches: one read takes whatever the client has sent (up to
/// [`TCP_READ`] bytes, dozens of pipelined queries), every complete query in it is answered
/// into the thread's [`TCP_SCRATCH`], and the answers go out in one write. No task, timer or
/// allocation per query.
///
/// Memory per connection: the start of a message left over from a read (at most
/// [`MAX_TCP_QUERY`] bytes), and what the socket has not taken of one batch of answers. Only
/// when the client does not read (a full send buffer) are those answers, and the queries read
/// after them, copied into the connection's own buffers; the connection answers nothing more
/// and reads nothing more until they are written, and a write that does not finish within the
/// I/O deadline closes the connection. So a client that pipelines and never reads holds one
/// batch of answers ([`TCP_BATCH`] bytes and one answer) and one read of queries, never a queue.
async fn tcp_connection(stream: TcpStream, peer: SocketAddr, shared: &Shared, conns: &Conns, conn: &Conn) {
    let limits = &shared.tcp;
    let _ = stream.set_nodelay(true);
    let mut c = TcpConn {
        stream,
        peer,
        shared,
        stats: LocalStats::default(),
        carry: Vec::new(),
        pending: Vec::new(),
        read_closed: false,
    };
    // When the message begun in `carry` must be complete (once its length is in).
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut read = true;
    loop {
        if read {
            // Idle until a length arrives; then the rest of the message has the I/O deadline.
            let until = match deadline {
                Some(at) => at,
                None => tokio::time::Instant::now() + limits.idle_timeout,
            };
            match tokio::time::timeout_at(until, c.stream.ready(tokio::io::Interest::READABLE)).await {
                Ok(Ok(ready)) => c.read_closed = ready.is_read_closed(),
                _ => return,
            }
        }
        let next = c.batch(read);
        if read {
            conn.last_active_ms.store(conns.now_ms(), Ordering::Relaxed);
        }
        c.stats.flush(&shared.stats);
        if !c.pending.is_empty() {
            match tokio::time::timeout(limits.io_timeout, c.stream.write_all(&c.pending)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
            clear_buffer(&mut c.pending);
        }
        if c.carry.len() < 2 {
            deadline = None;
        } else if deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + limits.io_timeout);
        }
        if c.carry.is_empty() {
            clear_buffer(&mut c.carry);
        }
        read = false;
        match next {
            Next::Read => {
                read = true;
                continue;
            }
            Next::Answer => continue,
            Next::Close => return,
            Next::Transfer(request) => {
                // A transfer reads the whole zone (and may wait for the writer to finish a
                // publish): off the async workers, which keep answering queries meanwhile.
                let responder = &shared.responder;
                let (index, acl, policy) =
                    (responder.index().clone(), responder.transfer_acl().clone(), responder.policy().clone());
                let ip = peer.ip();
                let transfer =
                    tokio::task::spawn_blocking(move || super::transfer::respond(&index, &request, ip, &acl, &policy));
                let Ok(messages) = transfer.await else { return };
                for message in messages {
                    let mut framed = Vec::with_capacity(2 + message.len());
                    framed.extend_from_slice(&length_prefix(message.len()));
                    framed.extend_from_slice(&message);
                    match tokio::time::timeout(limits.io_timeout * 5, c.stream.write_all(&framed)).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                }
            }
            Next::Slow(outcome, query) => {
                // Waits on upstreams: the answer needs a buffer of the connection's own.
                c.pending.resize(2 + MAX_MESSAGE, 0);
                let lane = Lane { responder: &shared.responder, forwarder: shared.forwarder.as_deref() };
                let Some(n) = lane.answer(&query, Transport::Tcp, outcome, &mut c.pending[2..]).await else { return };
                c.pending[..2].copy_from_slice(&length_prefix(n));
                c.pending.truncate(2 + n);
                match tokio::time::timeout(limits.io_timeout, c.stream.write_all(&c.pending)).await {
                    Ok(Ok(())) => {}
                    _ => return,
                }
                clear_buffer(&mut c.pending);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages come out of a stream whole and in order; a prefix over the limit stops reading,
    /// and a stream that ends inside a message is an error.
    #[tokio::test]
    async fn read_framed_splits_a_stream() {
        let (t, max) = (Duration::from_secs(1), 8);
        let mut stream: &[u8] = &[0, 3, b'a', b'b', b'c', 0, 0, 0, 9, 1, 2];
        let mut buf = Vec::new();
        assert_eq!(read_framed(&mut stream, &mut buf, max, t, t).await.unwrap(), Framed::Message);
        assert_eq!(buf, b"abc");
        assert_eq!(read_framed(&mut stream, &mut buf, max, t, t).await.unwrap(), Framed::Message);
        assert!(buf.is_empty());
        assert_eq!(read_framed(&mut stream, &mut buf, max, t, t).await.unwrap(), Framed::TooLong(9));
        assert_eq!(stream, [1, 2], "a message over the limit is left unread");
        let mut cut: &[u8] = &[0, 4, b'a', b'b'];
        let e = read_framed(&mut cut, &mut buf, max, t, t).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(length_prefix(258), [1, 2]);
    }

    /// The batched reader hands on whole messages in order, carries the start of the next one
    /// into the following read, stops where its caller stops and at a prefix over the limit.
    #[test]
    fn split_queries_carries_a_message_across_reads() {
        let mut rx = vec![0u8; TCP_CARRY + TCP_READ];
        let mut carry = Vec::new();
        let mut seen = Vec::new();
        let mut read = |carry: &mut Vec<u8>, bytes: &[u8], seen: &mut Vec<Vec<u8>>| {
            rx[TCP_CARRY..TCP_CARRY + bytes.len()].copy_from_slice(bytes);
            join_read(carry, &mut rx, Some(bytes.len()), |input| {
                split_queries(input, |query| {
                    seen.push(query.to_vec());
                    if query == b"stop" { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
                })
            })
        };
        assert_eq!(read(&mut carry, &[0, 3, b'a', b'b', b'c', 0, 2, b'd'], &mut seen), Split::Partial);
        assert_eq!((&seen[..], &carry[..]), (&[b"abc".to_vec()][..], &[0, 2, b'd'][..]));
        let next = read(&mut carry, &[b'e', 0, 4, b's', b't', b'o', b'p', 0, 0, 0, 1], &mut seen);
        assert_eq!(next, Split::Stopped(()));
        assert_eq!(seen, [&b"abc"[..], b"de", b"stop"]);
        assert_eq!(carry, [0, 0, 0, 1], "what follows a stop is kept, whole messages included");
        // The next batch answers what is in hand without reading.
        let next =
            join_read(&mut carry, &mut [], None, |input| split_queries(input, |_| ControlFlow::<()>::Continue(())));
        assert_eq!((next, &carry[..]), (Split::Partial, &[0, 1][..]));
        let too_long = (MAX_TCP_QUERY as u16 + 1).to_be_bytes();
        assert_eq!(
            split_queries(&too_long, |_| ControlFlow::<()>::Continue(())),
            (0, Split::TooLong(MAX_TCP_QUERY + 1))
        );
    }
}
