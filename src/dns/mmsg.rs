//! Batched UDP I/O on Linux: `recvmmsg(2)` and `sendmmsg(2)`. The library's only `unsafe` code
//! (the binary's is the allocator configuration in `main.rs`).
//!
//! Under load, 87 % of a worker's time went to one `recvfrom` and one `sendto` per query. A
//! [`Batch`] receives up to N datagrams with one `recvmmsg` (`MSG_WAITFORONE`: block until the
//! first arrives, then take what is already queued, never wait for more) and sends the replies
//! with one `sendmmsg`:
//!
//! ```text
//!  recvmmsg ─▶ slot 0: query │ peer ─▶ Responder ─▶ reply 0 ─┐
//!              slot 1: query │ peer ─▶ Responder ─▶ (none: forwarded, dropped)
//!              slot 2: query │ peer ─▶ Responder ─▶ reply 2 ─┴─▶ sendmmsg (replies 0, 2)
//! ```
//!
//! Everything the two calls need (N receive buffers, N reply buffers, N peer addresses, and the
//! `iovec`s and `mmsghdr`s pointing at them) is allocated once per worker, so a query costs no
//! allocation. The pointers in the headers are written afresh before each call, from the buffers'
//! current addresses, so no pointer outlives the borrow it was taken from.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::ptr::null_mut;

use libc::{iovec, mmsghdr, sockaddr_storage, socklen_t};
use socket2::{SockAddr, SockAddrStorage};

/// Receive buffer per datagram. A query does not come near it (a question is at most 271 bytes,
/// EDNS options a few dozen more); a longer datagram arrives cut (`MSG_TRUNC`) and is dropped.
pub const RX_SLOT: usize = 4096;

/// Buffers and headers for up to `size` datagrams in and `size` replies out.
pub struct Batch {
    size: usize,
    /// Bytes per reply buffer: the largest UDP response the responder writes.
    tx_slot: usize,
    rx: Box<[u8]>,
    tx: Box<[u8]>,
    peers: Box<[sockaddr_storage]>,
    rx_iov: Box<[iovec]>,
    rx_hdrs: Box<[mmsghdr]>,
    tx_iov: Box<[iovec]>,
    tx_hdrs: Box<[mmsghdr]>,
    /// Datagrams in the slots from the last [`Batch::recv`].
    received: usize,
    /// Replies to send: (slot, length), in the order they were answered.
    replies: Box<[(usize, usize)]>,
    queued: usize,
}

/// What [`Batch::send`] did.
#[derive(Debug, Default)]
pub struct Sent {
    /// Replies that could not be sent (and were skipped).
    pub failed: usize,
    /// The first error, for the log.
    pub error: Option<io::Error>,
}

/// `n` all-zero values.
///
/// # Safety
///
/// All-zero bytes must be a valid `T`: true of libc's plain C structs used here (`iovec`,
/// `mmsghdr`, `sockaddr_storage`: null pointers, zero lengths, `AF_UNSPEC`), not of Rust types
/// with references or niches.
unsafe fn zeroed_slice<T>(n: usize) -> Box<[T]> {
    // SAFETY: the caller guarantees all-zero is a valid T.
    (0..n).map(|_| unsafe { zeroed::<T>() }).collect()
}

// === impl Batch ===

impl Batch {
    /// Room for `size` datagrams (at least 1) with replies of up to `tx_slot` bytes each.
    pub fn new(size: usize, tx_slot: usize) -> Batch {
        let size = size.max(1);
        Batch {
            size,
            tx_slot,
            rx: vec![0; size * RX_SLOT].into_boxed_slice(),
            tx: vec![0; size * tx_slot].into_boxed_slice(),
            // SAFETY (all five): libc C structs, valid all-zero (see `zeroed_slice`).
            peers: unsafe { zeroed_slice(size) },
            rx_iov: unsafe { zeroed_slice(size) },
            rx_hdrs: unsafe { zeroed_slice(size) },
            tx_iov: unsafe { zeroed_slice(size) },
            tx_hdrs: unsafe { zeroed_slice(size) },
            received: 0,
            replies: vec![(0, 0); size].into_boxed_slice(),
            queued: 0,
        }
    }

    /// Receives up to `size` datagrams with one call: blocks (up to the socket's read timeout)
    /// until one arrives, then takes those already queued. Returns how many arrived; they are in
    /// slots `0..n`. Forgets the replies of the previous batch.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.received = 0;
        self.queued = 0;
        let rx = self.rx.as_mut_ptr();
        for (i, iov) in self.rx_iov.iter_mut().enumerate() {
            *iov = iovec { iov_base: rx.wrapping_add(i * RX_SLOT).cast(), iov_len: RX_SLOT };
        }
        let (iovs, peers) = (self.rx_iov.as_mut_ptr(), self.peers.as_mut_ptr());
        for (i, h) in self.rx_hdrs.iter_mut().enumerate() {
            point(h, peers.wrapping_add(i), size_of::<sockaddr_storage>() as socklen_t, iovs.wrapping_add(i));
        }
        // SAFETY: `rx_hdrs` holds `size` initialised headers; each points at its own iovec (one
        // per header, `msg_iovlen` 1), which points at its own RX_SLOT bytes of `rx`, and at its
        // own `sockaddr_storage` with `msg_namelen` its size. All of these are owned by `self`,
        // live across the call, and are not otherwise borrowed during it. The kernel writes at
        // most `iov_len` bytes per buffer and `msg_namelen` bytes per address. No timeout
        // pointer (the socket's SO_RCVTIMEO applies to the wait for the first datagram).
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.rx_hdrs.as_mut_ptr(),
                self.size as libc::c_uint,
                libc::MSG_WAITFORONE,
                null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received = (n as usize).min(self.size);
        Ok(self.received)
    }

    /// Datagram `i` of the last receive, its sender, and the reply buffer of its slot; `None` if
    /// it cannot be answered (cut short by `MSG_TRUNC`, or from an address family other than
    /// IPv4 and IPv6).
    pub fn slot(&mut self, i: usize) -> Option<(&[u8], SocketAddr, &mut [u8])> {
        if i >= self.received {
            return None;
        }
        let h = &self.rx_hdrs[i];
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let peer = peer(&self.peers[i], h.msg_hdr.msg_namelen)?;
        let len = (h.msg_len as usize).min(RX_SLOT);
        let packet = &self.rx[i * RX_SLOT..i * RX_SLOT + len];
        let out = &mut self.tx[i * self.tx_slot..(i + 1) * self.tx_slot];
        Some((packet, peer, out))
    }

    /// Queues the reply written into slot `i`'s buffer (its first `len` bytes) for [`Batch::send`].
    pub fn reply(&mut self, i: usize, len: usize) {
        if i < self.received && self.queued < self.size {
            self.replies[self.queued] = (i, len.min(self.tx_slot));
            self.queued += 1;
        }
    }

    /// Sends the queued replies, each to the peer its query came from, with as few `sendmmsg`
    /// calls as the kernel allows: after a partial send the rest go in the next call; a reply the
    /// kernel refuses (EPERM from a firewall, ENETUNREACH, …) is skipped, so every call makes
    /// progress. EINTR retries.
    pub fn send(&mut self, socket: &UdpSocket) -> Sent {
        let count = self.queued;
        self.queued = 0;
        let tx = self.tx.as_mut_ptr();
        for (iov, &(slot, len)) in self.tx_iov.iter_mut().zip(&self.replies[..count]) {
            *iov = iovec { iov_base: tx.wrapping_add(slot * self.tx_slot).cast(), iov_len: len };
        }
        let (iovs, peers) = (self.tx_iov.as_mut_ptr(), self.peers.as_mut_ptr());
        for (j, &(slot, _)) in self.replies[..count].iter().enumerate() {
            let namelen = self.rx_hdrs[slot].msg_hdr.msg_namelen;
            point(&mut self.tx_hdrs[j], peers.wrapping_add(slot), namelen, iovs.wrapping_add(j));
        }
        let mut sent = Sent::default();
        let mut at = 0;
        while at < count {
            let rest = self.tx_hdrs[at..count].as_mut_ptr();
            // SAFETY: headers `at..count` were initialised above; each points at its own iovec,
            // which points at `len` bytes inside its slot of `tx` (`len <= tx_slot`), and at
            // the peer address the kernel wrote for that slot, with the length it wrote. All
            // are owned by `self` and not otherwise borrowed during the call; the kernel only
            // reads them (and writes `msg_len`).
            let n = unsafe { libc::sendmmsg(socket.as_raw_fd(), rest, (count - at) as libc::c_uint, 0) };
            if n > 0 {
                at += n as usize;
                continue;
            }
            let error = io::Error::last_os_error();
            if n < 0 && error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The reply at `at` failed (sendmmsg reports an error only for the first message of
            // a call): skip it.
            at += 1;
            sent.failed += 1;
            sent.error.get_or_insert(error);
        }
        sent
    }
}

/// Points a header at one address (`namelen` bytes) and one buffer, with no control data.
fn point(h: &mut mmsghdr, peer: *mut sockaddr_storage, namelen: socklen_t, iov: *mut iovec) {
    h.msg_hdr.msg_name = peer.cast();
    h.msg_hdr.msg_namelen = namelen;
    h.msg_hdr.msg_iov = iov;
    h.msg_hdr.msg_iovlen = 1;
    h.msg_hdr.msg_control = null_mut();
    h.msg_hdr.msg_controllen = 0;
    h.msg_hdr.msg_flags = 0;
    h.msg_len = 0;
}

/// The address the kernel wrote into `storage` (`len` bytes of it), converted by socket2.
fn peer(storage: &sockaddr_storage, len: socklen_t) -> Option<SocketAddr> {
    if len as usize > size_of::<sockaddr_storage>() {
        return None;
    }
    let mut copy = SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_storage` is one of this platform's sockaddr types (`view_as`'s contract).
    unsafe { *copy.view_as::<sockaddr_storage>() = *storage };
    // SAFETY: recvmmsg wrote a valid address of `len` bytes (its `msg_namelen`) into `storage`,
    // and `len` is within the storage; socket2 reads the family and only that many bytes.
    let addr = unsafe { SockAddr::new(copy, len) };
    addr.as_socket()
}
