//! One HBONE `CONNECT` stream as a byte stream, straight on the `h2`
//! crate's send and receive halves, as ztunnel's `H2Stream`
//! (`ztunnel/src/proxy/h2.rs`) does, and the keep-alive PINGs of a
//! connection.
//!
//! Why not hyper's upgrade: hyper 1.x hands an HTTP/2 `CONNECT` stream out
//! through a per-stream bridge task and a channel (`proto/h2/upgrade.rs`),
//! so every write is copied into a boxed slice, sent over the channel, and
//! a second task wakes to hand it to h2. Here a write goes to h2 directly:
//! one copy into [`Bytes`], no extra task or wake-up per write.
//!
//! Semantics: bytes written are DATA frames (at most the flow-control
//! capacity h2 grants at once); shutdown sends an empty DATA frame with
//! END_STREAM (a half-close); END_STREAM from the peer, or RST_STREAM
//! with NO_ERROR or CANCEL, reads as EOF; any other reset is an error.
//! Received bytes are returned to the peer's flow-control window as soon as
//! they arrive (the stream keeps at most one DATA frame of them). Dropping
//! the stream before both ends finished resets it (RST_STREAM CANCEL).
//!
//! On the wire per request/response of a keep-alive connection (issue 20,
//! `nstat` in each namespace at 1,000 requests/s): one DATA frame each
//! way, each in one TLS record and one TCP segment; no WINDOW_UPDATE (h2
//! returns released capacity only once it reaches half of the window
//! still open, `FlowControl::unclaimed_capacity`: after about a third of
//! the 4 MiB stream / 16 MiB connection window), no PING (one per
//! [`super::settings::KEEPALIVE_INTERVAL`]).
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A `CONNECT` stream's two halves as `AsyncRead + AsyncWrite`.
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received bytes not read yet.
    buf: Bytes,
    /// END_STREAM sent.
    shut: bool,
    /// END_STREAM (or a benign reset) received.
    eof: bool,
}

impl std::fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Stream")
            .field("buffered", &self.buf.len())
            .field("shut", &self.shut)
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl H2Stream {
    /// The stream of `send` and `recv` (one `CONNECT`'s halves).
    pub fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        Self {
            send,
            recv,
            buf: Bytes::new(),
            shut: false,
            eof: false,
        }
    }
}

/// An h2 error as an I/O error; a reset with NO_ERROR or CANCEL is `None`
/// (the peer ended the stream: EOF).
fn io_error(e: h2::Error) -> Option<io::Error> {
    if matches!(e.reason(), Some(Reason::NO_ERROR) | Some(Reason::CANCEL)) {
        return None;
    }
    Some(if e.is_io() {
        e.into_io()
            .unwrap_or_else(|| io::Error::other("HTTP/2 I/O error"))
    } else {
        io::Error::other(e)
    })
}

fn broken(e: h2::Error) -> io::Error {
    io_error(e).unwrap_or_else(|| io::ErrorKind::BrokenPipe.into())
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        while me.buf.is_empty() {
            if me.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(me.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = me.recv.flow_control().release_capacity(data.len());
                    me.buf = data;
                }
                Some(Err(e)) => match io_error(e) {
                    None => me.eof = true,
                    Some(e) => return Poll::Ready(Err(e)),
                },
                None => me.eof = true,
            }
        }
        let n = me.buf.len().min(out.remaining());
        out.put_slice(&me.buf[..n]);
        me.buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let me = &mut *self;
        if me.shut {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        loop {
            let cap = me.send.capacity();
            if cap > 0 {
                let n = cap.min(data.len());
                return Poll::Ready(
                    me.send
                        .send_data(Bytes::copy_from_slice(&data[..n]), false)
                        .map(|()| n)
                        .map_err(broken),
                );
            }
            me.send.reserve_capacity(data.len());
            if me.send.capacity() > 0 {
                continue;
            }
            match ready!(me.send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(broken(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's task writes the frames (and flushes them, many
        // streams' at once).
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        if !me.shut {
            me.shut = true;
            // An already closed or reset stream has nothing to end.
            let _ = me.send.send_data(Bytes::new(), true);
        }
        Poll::Ready(Ok(()))
    }
}

/// Sends a PING on `ping` every `interval` (ztunnel's `do_ping_pong`: the
/// first after one interval) and returns when one is not answered within
/// `timeout` or the connection is gone; the caller then closes the
/// connection.
pub async fn keep_alive(mut ping: h2::PingPong, interval: Duration, timeout: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!("HBONE keep-alive PING: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(?timeout, "HBONE keep-alive PING not answered");
                return;
            }
        }
    }
}
