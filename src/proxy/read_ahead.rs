//! A TCP connection to an API server that reads ahead of its TLS layer.
//!
//! rustls asks its socket for at most 4 KiB at a time once it has handed out what it had
//! (`DeframerVecBuffer::prepare_read`): a 1 MiB answer took 73 `recv` calls (`perf
//! stat`). [`ReadAhead`] reads what the socket has, up to [`READ_AHEAD`] bytes, in one
//! call, and serves rustls's small reads from that (23 calls for 1 MiB), at the cost of
//! one copy of the bytes (rustls copies them into its own buffer). A read as large as
//! [`READ_AHEAD`] goes straight to the socket.
//!
//! awc's connections ([`crate::proxy::upstream`]), the HTTP/2 client's
//! ([`crate::proxy::multiplex`]) and the tunnel's ([`crate::proxy::tunnel`]) are read
//! ahead.
//!
//! The buffer exists only while it holds bytes: it is taken when the socket is readable
//! and freed once handed out, so a connection that waits (an idle watch over HTTP/1.1)
//! holds none. tokio's `BufReader` would keep its buffer for the connection's life (64 KiB
//! per idle watch), and would still need a wrapper to report buffered bytes as readiness
//! (`ActixStream::poll_read_ready`).
//!
//! The socket is read with tokio's own `poll_read`, which takes a read that did not fill
//! the buffer as a sign that the socket is drained (edge-triggered epoll tells when more
//! comes). A `try_read` would not, and every wake-up of the connection ended with one
//! more `recv` that found nothing: 0.10-0.14 `EAGAIN`s per 1 KiB request at 32
//! connections (`perf record` of `sys_exit_recvfrom`), none since.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, Ready};
use tokio::net::TcpStream;

/// The most read from the socket at once.
pub const READ_AHEAD: usize = 64 * 1024;

/// A TCP stream with a read-ahead buffer (see the module documentation).
#[derive(Debug)]
pub struct ReadAhead {
    io: TcpStream,
    ahead: BytesMut,
}

impl ReadAhead {
    /// Reads `io` ahead.
    pub fn new(io: TcpStream) -> ReadAhead {
        ReadAhead {
            io,
            ahead: BytesMut::new(),
        }
    }

    /// Hands out what was read ahead.
    fn hand_out(&mut self, out: &mut ReadBuf<'_>) {
        let n = self.ahead.len().min(out.remaining());
        out.put_slice(&self.ahead[..n]);
        self.ahead.advance(n);
        if self.ahead.is_empty() {
            // freed: a connection that waits holds no buffer
            self.ahead = BytesMut::new();
        }
    }
}

impl AsyncRead for ReadAhead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.ahead.is_empty() {
            this.hand_out(out);
            return Poll::Ready(Ok(()));
        }
        if out.remaining() >= READ_AHEAD {
            return Pin::new(&mut this.io).poll_read(cx, out);
        }
        // no buffer for a socket with nothing to read
        ready!(this.io.poll_read_ready(cx))?;
        this.ahead.reserve(READ_AHEAD);
        // tokio's own read: a read that leaves room in the buffer shows the socket was
        // drained, and tokio then takes it as not readable until epoll says otherwise,
        // instead of asking it once more for an `EAGAIN` at each wake-up
        let read = tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.ahead);
        match read {
            Poll::Ready(Ok(n)) if n > 0 => {
                this.hand_out(out);
                Poll::Ready(Ok(()))
            }
            // the end (nothing read, as the caller sees it), an error, or readiness
            // that was stale
            other => {
                this.ahead = BytesMut::new();
                other.map_ok(|_| ())
            }
        }
    }
}

impl AsyncWrite for ReadAhead {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl actix_rt::net::ActixStream for ReadAhead {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        if !self.ahead.is_empty() {
            return Poll::Ready(Ok(Ready::READABLE));
        }
        actix_rt::net::ActixStream::poll_read_ready(&self.io, cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        actix_rt::net::ActixStream::poll_write_ready(&self.io, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Small reads are served from one read of the socket, in order, to the end.
    #[actix_rt::test]
    async fn small_reads_see_every_byte_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let to_send = sent.clone();
        let writer = actix_rt::spawn(async move {
            let (mut peer, _) = listener.accept().await.unwrap();
            for piece in to_send.chunks(70_000) {
                peer.write_all(piece).await.unwrap();
            }
        });
        let mut io = ReadAhead::new(TcpStream::connect(addr).await.unwrap());
        let mut got = Vec::new();
        let mut small = [0u8; 4096];
        loop {
            // rustls's size of read, and now and then one larger than the read-ahead
            let n = if got.len() % 3 == 0 {
                let mut large = vec![0u8; READ_AHEAD + 1];
                let n = io.read(&mut large).await.unwrap();
                got.extend_from_slice(&large[..n]);
                n
            } else {
                let n = io.read(&mut small).await.unwrap();
                got.extend_from_slice(&small[..n]);
                n
            };
            if n == 0 {
                break;
            }
        }
        writer.await.unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the bytes arrive as sent");
        assert!(io.ahead.capacity() == 0, "no buffer kept at the end");
    }
}
