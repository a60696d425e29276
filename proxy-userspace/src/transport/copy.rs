//! Bidirectional byte copy between two streams with buffers that start
//! small and grow only for connections that move bulk data (issue 20:
//! memory per connection).
//!
//! `tokio::io::copy_bidirectional` gives every direction of every
//! connection an 8 KiB buffer up front: 16 KiB per proxied connection,
//! resident once touched, although most mesh connections carry requests and
//! responses of a few hundred bytes. ztunnel's `copy.rs` starts each
//! direction small and resizes it when reads keep filling it; this does the
//! same: each direction starts at [`INITIAL_BUFFER`] bytes and doubles (up
//! to [`MAX_BUFFER`], one TLS record, so an HBONE tunnel still sends
//! full-size DATA frames) every time a read fills the whole buffer. A
//! buffer never shrinks. Semantics are tokio's `copy_bidirectional`'s: each
//! direction copies until its reader reaches EOF, then shuts its writer
//! down; the first error of either direction ends the copy; the result is
//! the byte counts (a → b, b → a).
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes each direction's buffer starts with.
pub const INITIAL_BUFFER: usize = 1024;
/// The largest a direction's buffer grows to (16 KiB: a TLS record's
/// plaintext, and ztunnel's large buffer).
pub const MAX_BUFFER: usize = 16 * 1024;

/// One direction: read into `buf[..cap]`, write out `buf[pos..cap]`.
struct Half {
    buf: Vec<u8>,
    pos: usize,
    cap: usize,
    amt: u64,
    read_done: bool,
    need_flush: bool,
}

impl Half {
    fn new() -> Self {
        Half {
            buf: vec![0; INITIAL_BUFFER],
            pos: 0,
            cap: 0,
            amt: 0,
            read_done: false,
            need_flush: false,
        }
    }

    /// Copies until `r` reaches EOF and everything read is written and
    /// flushed; the byte count.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut r: Pin<&mut R>,
        mut w: Pin<&mut W>,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.pos == self.cap && !self.read_done {
                // Empty: resizing moves no data.
                self.pos = 0;
                self.cap = 0;
                let mut rb = ReadBuf::new(&mut self.buf);
                match r.as_mut().poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            self.read_done = true;
                        } else {
                            self.cap = n;
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Nothing to write: flush what was written (the
                        // reader may wait for the writer's peer).
                        if self.need_flush {
                            ready!(w.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.pos < self.cap {
                let n = ready!(w.as_mut().poll_write(cx, &self.buf[self.pos..self.cap]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "write zero bytes into writer",
                    )));
                }
                self.pos += n;
                self.amt += n as u64;
                self.need_flush = true;
            }
            // The read filled the whole buffer: more is probably waiting.
            if self.cap == self.buf.len() && self.buf.len() < MAX_BUFFER {
                let grown = (self.buf.len() * 2).min(MAX_BUFFER);
                self.buf.resize(grown, 0);
            }
            if self.read_done {
                ready!(w.as_mut().poll_flush(cx))?;
                return Poll::Ready(Ok(self.amt));
            }
        }
    }
}

/// Where one direction is.
enum State {
    Running(Half),
    ShuttingDown(u64),
    Done(u64),
}

fn poll_direction<R, W>(
    cx: &mut Context<'_>,
    state: &mut State,
    mut r: Pin<&mut R>,
    mut w: Pin<&mut W>,
) -> Poll<io::Result<u64>>
where
    R: AsyncRead + ?Sized,
    W: AsyncWrite + ?Sized,
{
    loop {
        match state {
            State::Running(half) => {
                let n = ready!(half.poll_copy(cx, r.as_mut(), w.as_mut()))?;
                // The buffer is freed as soon as its direction is done.
                *state = State::ShuttingDown(n);
            }
            State::ShuttingDown(n) => {
                ready!(w.as_mut().poll_shutdown(cx))?;
                *state = State::Done(*n);
            }
            State::Done(n) => return Poll::Ready(Ok(*n)),
        }
    }
}

/// Copies `a` → `b` and `b` → `a` at once until both directions reached EOF
/// (each shutting its writer down after its reader's EOF), like
/// `tokio::io::copy_bidirectional`, with buffers that grow from
/// [`INITIAL_BUFFER`] to [`MAX_BUFFER`] bytes only while reads fill them.
/// Returns the bytes copied (a → b, b → a). Errors: the first I/O error of
/// either direction (the other is abandoned).
pub async fn copy_bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = State::Running(Half::new());
    let mut b_to_a = State::Running(Half::new());
    poll_fn(|cx| {
        let ab = poll_direction(cx, &mut a_to_b, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let ba = poll_direction(cx, &mut b_to_a, Pin::new(&mut *b), Pin::new(&mut *a))?;
        let ab = ready!(ab);
        let ba = ready!(ba);
        Poll::Ready(Ok((ab, ba)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Both directions arrive intact, each side sees the other's EOF, and
    /// the counts are the bytes moved.
    #[tokio::test]
    async fn copies_both_ways_and_propagates_eof() {
        let (mut client, mut proxy_a) = tokio::io::duplex(64 * 1024);
        let (mut proxy_b, mut server) = tokio::io::duplex(64 * 1024);
        let copy =
            tokio::spawn(async move { copy_bidirectional(&mut proxy_a, &mut proxy_b).await });
        // Large enough to grow the buffer to its maximum.
        let up: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..3_000u32).map(|i| (i % 241) as u8).collect();
        let (up2, down2) = (up.clone(), down.clone());
        let client_side = tokio::spawn(async move {
            client.write_all(&up2).await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut got_up = Vec::new();
        server.read_to_end(&mut got_up).await.unwrap();
        assert_eq!(got_up, up);
        server.write_all(&down2).await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(client_side.await.unwrap(), down);
        let (ab, ba) = copy.await.unwrap().unwrap();
        assert_eq!((ab, ba), (up.len() as u64, down.len() as u64));
    }

    /// A buffer grows only while reads fill it and stops at MAX_BUFFER.
    #[tokio::test]
    async fn buffer_grows_with_full_reads_only() {
        let mut half = Half::new();
        let mut small: &[u8] = &[7u8; 100];
        let mut sink = Vec::new();
        let n = poll_fn(|cx| half.poll_copy(cx, Pin::new(&mut small), Pin::new(&mut sink)))
            .await
            .unwrap();
        assert_eq!(n, 100);
        assert_eq!(half.buf.len(), INITIAL_BUFFER, "small reads keep it small");

        let mut half = Half::new();
        let big = vec![9u8; 10 * MAX_BUFFER];
        let mut src: &[u8] = &big;
        let mut sink = Vec::new();
        let n = poll_fn(|cx| half.poll_copy(cx, Pin::new(&mut src), Pin::new(&mut sink)))
            .await
            .unwrap();
        assert_eq!(n, big.len() as u64);
        assert_eq!(sink, big);
        assert_eq!(half.buf.len(), MAX_BUFFER, "bulk grows it to the maximum");
    }

    /// An error of one direction ends the copy with that error.
    #[tokio::test]
    async fn error_ends_the_copy() {
        struct Broken;
        impl AsyncRead for Broken {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset")))
            }
        }
        impl AsyncWrite for Broken {
            fn poll_write(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                b: &[u8],
            ) -> Poll<io::Result<usize>> {
                Poll::Ready(Ok(b.len()))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        let (mut other, _keep) = tokio::io::duplex(1024);
        let err = copy_bidirectional(&mut Broken, &mut other)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }
}
