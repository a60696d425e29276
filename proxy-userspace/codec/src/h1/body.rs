//! The response body of a pooled HTTP/1.1 connection: reads the rest of
//! the response as the downstream side polls it, decoding chunked framing
//! (trailers become a trailers frame), and gives the connection back to
//! its pool once the response has been read to the end.
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};

use super::conn::Conn;
use super::response::BodyKind;
use crate::body::BoxError;

/// Where a connection goes when its response has been read to the end.
pub trait Reuse: Send + Sync + Unpin + 'static {
    /// Takes back a connection that can carry another request.
    fn reuse(&self, conn: Box<Conn>);
}

#[derive(Clone, Copy, Debug)]
enum State {
    Length(u64),
    UntilClose,
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    Done,
}

/// A response body read straight from its connection.
pub struct ResponseBody<R: Reuse> {
    conn: Option<Box<Conn>>,
    state: State,
    keep_alive: bool,
    home: Option<R>,
}

impl<R: Reuse> ResponseBody<R> {
    /// The body of a response with this framing on `conn`; `home` gets the
    /// connection back when `keep_alive` and the body has been read.
    pub fn new(conn: Box<Conn>, kind: BodyKind, keep_alive: bool, home: Option<R>) -> Self {
        let state = match kind {
            BodyKind::Empty => State::Done,
            BodyKind::Length(n) => State::Length(n),
            BodyKind::Chunked => State::ChunkSize,
            BodyKind::UntilClose => State::UntilClose,
        };
        let mut b = Self {
            conn: Some(conn),
            state,
            keep_alive,
            home,
        };
        if matches!(b.state, State::Done) {
            b.finish();
        }
        b
    }

    fn finish(&mut self) {
        self.state = State::Done;
        let Some(conn) = self.conn.take() else { return };
        // Bytes beyond the response mean the upstream is out of step.
        if self.keep_alive && conn.buf.is_empty() {
            if let Some(home) = self.home.take() {
                home.reuse(conn);
            }
        }
    }

    /// Reads more into the connection's buffer; `Ok(false)` on end of stream.
    fn poll_fill(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        loop {
            ready!(conn.io.poll_read_ready(cx))?;
            if conn.buf.capacity() - conn.buf.len() < 1024 {
                conn.buf.reserve(16 * 1024);
            }
            match conn.io.try_read_buf(&mut conn.buf) {
                Ok(n) => return Poll::Ready(Ok(n > 0)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

fn broken(msg: &str) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    Poll::Ready(Some(Err(msg.to_owned().into())))
}

impl<R: Reuse> Body for ResponseBody<R> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let need_more = match this.state {
                State::Done => {
                    this.finish();
                    return Poll::Ready(None);
                }
                State::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                State::Length(rem) if !conn.buf.is_empty() => {
                    let n = rem.min(conn.buf.len() as u64);
                    let data = conn.buf.split_to(n as usize).freeze();
                    this.state = State::Length(rem - n);
                    if rem == n {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::UntilClose if !conn.buf.is_empty() => {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::ChunkData(rem) if !conn.buf.is_empty() => {
                    let n = rem.min(conn.buf.len() as u64);
                    let data = conn.buf.split_to(n as usize).freeze();
                    this.state = if rem == n {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(rem - n)
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::ChunkSize => match httparse::parse_chunk_size(&conn.buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        conn.buf.advance(used);
                        this.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData(size)
                        };
                        false
                    }
                    Ok(httparse::Status::Partial) => true,
                    Err(_) => {
                        this.conn = None;
                        return broken("invalid chunk size in upstream response");
                    }
                },
                State::ChunkEnd if conn.buf.len() >= 2 => {
                    if &conn.buf[..2] != b"\r\n" {
                        this.conn = None;
                        return broken("invalid chunk end in upstream response");
                    }
                    conn.buf.advance(2);
                    this.state = State::ChunkSize;
                    false
                }
                State::Trailers if conn.buf.starts_with(b"\r\n") => {
                    conn.buf.advance(2);
                    this.finish();
                    return Poll::Ready(None);
                }
                State::Trailers if !conn.buf.is_empty() => {
                    let mut raw = [httparse::EMPTY_HEADER; 64];
                    match httparse::parse_headers(&conn.buf, &mut raw) {
                        Ok(httparse::Status::Complete((used, list))) => {
                            let mut map = http::HeaderMap::new();
                            for h in list {
                                if let (Ok(n), Ok(v)) = (
                                    http::HeaderName::from_bytes(h.name.as_bytes()),
                                    http::HeaderValue::from_bytes(h.value),
                                ) {
                                    map.append(n, v);
                                }
                            }
                            conn.buf.advance(used);
                            this.finish();
                            return Poll::Ready(Some(Ok(Frame::trailers(map))));
                        }
                        Ok(httparse::Status::Partial) => true,
                        Err(_) => {
                            this.conn = None;
                            return broken("invalid trailers in upstream response");
                        }
                    }
                }
                _ => true,
            };
            if !need_more {
                continue;
            }
            match ready!(Self::poll_fill(conn, cx)) {
                Ok(true) => {}
                Ok(false) if matches!(this.state, State::UntilClose) => {
                    this.keep_alive = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(false) => {
                    this.conn = None;
                    return broken("upstream closed the connection before the response ended");
                }
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.state, State::Done | State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
