//! One upstream HTTP/1.1 connection, driven by the task that sends on it.
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::request::{encode_chunk, encode_head, framing, Framing, LAST_CHUNK};
use super::response::{parse, Head};
use crate::body::ProxyBody;

/// Largest response head accepted, in bytes (hyper's default read buffer
/// limit is about 400 KiB; Envoy's header limit is 60 KiB).
const MAX_HEAD: usize = 64 * 1024;
/// Request bodies up to this size (bytes) are written with the head in one
/// system call; longer ones are streamed as they arrive.
const COALESCE: u64 = 64 * 1024;

/// An open connection with its read buffer.
#[derive(Debug)]
pub struct Conn {
    pub(crate) io: TcpStream,
    /// Bytes read but not consumed yet.
    pub(crate) buf: BytesMut,
    /// Reused write buffer.
    wbuf: Vec<u8>,
    /// Local address (`%UPSTREAM_LOCAL_ADDRESS%`).
    pub local: Option<SocketAddr>,
    /// When it was last given back to the pool (pool clock).
    pub since: Duration,
    /// Requests it has carried.
    pub served: u32,
}

/// Why a request on a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Nothing of a response arrived before the connection closed or was
    /// reset (`None`: an orderly close): on a reused connection the
    /// upstream had closed it while idle, and a replayable request may go
    /// again on a new connection.
    #[error("upstream closed the connection before responding")]
    Closed(#[source] Option<std::io::Error>),
    /// Reading the request body from the client failed.
    #[error("request body")]
    RequestBody(#[source] crate::body::BoxError),
    /// The response head was over [`MAX_HEAD`] bytes.
    #[error("upstream response head too large")]
    HeadTooLarge,
    /// The response head is not valid HTTP/1.
    #[error("invalid upstream response head")]
    Parse(#[source] super::response::ParseError),
    /// The connection failed, or closed, part way through the response head.
    #[error("upstream connection failed mid-response")]
    Broken(#[source] Option<std::io::Error>),
}

impl Conn {
    /// Wraps a connected stream.
    pub fn new(io: TcpStream) -> Self {
        let local = io.local_addr().ok();
        Self {
            io,
            buf: BytesMut::with_capacity(8 * 1024),
            wbuf: Vec::with_capacity(1024),
            local,
            since: Duration::ZERO,
            served: 0,
        }
    }

    /// Whether the upstream has closed (or sent stray bytes on) this idle
    /// connection. One non-blocking read; no wait.
    pub fn is_closed(&self) -> bool {
        let mut b = [0u8; 1];
        !matches!(self.io.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Writes the request and reads the response head. The body is read
    /// afterwards through [`super::body::ResponseBody`].
    pub async fn send(
        &mut self,
        method: &http::Method,
        path_and_query: &str,
        headers: &crate::head::ReqHeaders,
        mut body: ProxyBody,
    ) -> Result<Head, SendError> {
        let exact = body.size_hint().exact();
        let framing = framing(headers, exact, body.is_end_stream());
        self.wbuf.clear();
        encode_head(&mut self.wbuf, method, path_and_query, headers, framing);
        if framing != Framing::Empty {
            let chunked = framing == Framing::Chunked;
            // Small bodies go out with the head; others as they arrive.
            let coalesce = exact.is_some_and(|n| n <= COALESCE);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(SendError::RequestBody)?;
                let Ok(data) = frame.into_data() else {
                    continue; // trailers are not sent over HTTP/1.1
                };
                if chunked {
                    encode_chunk(&mut self.wbuf, &data);
                } else {
                    self.wbuf.extend_from_slice(&data);
                }
                if !coalesce {
                    self.flush().await?;
                }
            }
            if chunked {
                self.wbuf.extend_from_slice(LAST_CHUNK);
            }
        }
        self.flush().await?;
        self.read_head(method == http::Method::HEAD).await
    }

    async fn flush(&mut self) -> Result<(), SendError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let r = super::io::write_all(&self.io, &self.wbuf).await;
        self.wbuf.clear();
        r.map_err(|e| SendError::Closed(Some(e)))
    }

    async fn read_head(&mut self, head_request: bool) -> Result<Head, SendError> {
        let mut got_any = !self.buf.is_empty();
        loop {
            if !self.buf.is_empty() {
                match parse(&mut self.buf, head_request) {
                    // 100 Continue and other interim responses: skip.
                    Ok(Some(h)) if h.status.is_informational() && h.status != 101 => continue,
                    Ok(Some(h)) => return Ok(h),
                    Ok(None) if self.buf.len() > MAX_HEAD => return Err(SendError::HeadTooLarge),
                    Ok(None) => {}
                    Err(e) => return Err(SendError::Parse(e)),
                }
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(8 * 1024);
            }
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) if !got_any => return Err(SendError::Closed(None)),
                Ok(0) => return Err(SendError::Broken(None)),
                Ok(_) => got_any = true,
                Err(e) if !got_any => return Err(SendError::Closed(Some(e))),
                Err(e) => return Err(SendError::Broken(Some(e))),
            }
        }
    }
}
