//! Fault hooks on the connections: the listener and streams that emulate an unreachable or
//! stalled server (`set_down`, `set_stalled`).

use super::*;

/// The TCP listener, wrapped to emulate an unreachable server (`set_down`).
pub(super) struct FaultyListener {
    pub(super) inner: tokio::net::TcpListener,
    pub(super) shared: Arc<Shared>,
}

impl axum::serve::Listener for FaultyListener {
    type Io = FaultyIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (FaultyIo, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    // Read the generation first: a set_down(true) racing with
                    // this accept then cuts the connection on first use.
                    let generation = self.shared.down_generation.load(Ordering::SeqCst);
                    if self.shared.down.load(Ordering::SeqCst) {
                        self.shared.debug(format_args!("down: closing new connection from {peer}"));
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let io = FaultyIo { inner: stream, shared: Arc::clone(&self.shared), generation };
                    return (io, peer);
                }
                Err(e) => {
                    // Typically EMFILE; back off instead of spinning.
                    self.shared.debug(format_args!("accept error: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A server-side connection that fails once the server went down after it
/// was accepted (hyper then closes it).
pub(super) struct FaultyIo {
    pub(super) inner: tokio::net::TcpStream,
    pub(super) shared: Arc<Shared>,
    pub(super) generation: u64,
}

impl FaultyIo {
    pub(super) fn check(&self) -> io::Result<()> {
        if self.shared.down_generation.load(Ordering::SeqCst) == self.generation {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "fake API server is down"))
        }
    }
}

impl FaultyIo {
    fn count(&self, written: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = written {
            self.shared.bytes_sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
    }
}

impl AsyncRead for FaultyIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultyIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.count(&written);
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.count(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
