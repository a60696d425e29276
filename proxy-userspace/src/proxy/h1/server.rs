//! Strait's own HTTP/1.1 server loop for the outbound listener: nginx's
//! shape of work per request — read the head (and a small body) into one
//! buffer, run the request pipeline in this connection's task, write the
//! response head and as much body as is ready in one system call.
//!
//! Everything else goes to hyper, with the bytes read so far put back
//! ([`Handoff`]): the HTTP/2 preface, HTTP/1.0, `Upgrade`, `Expect`,
//! chunked request bodies, bodies over 64 KiB, requests hyper answers with
//! 4xx (malformed heads, too many headers).
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode, Version};
use http_body::Body;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::prefixed::Prefixed;
use super::request::{connection_has, header_line};
use super::spans::{span, uninit_headers};
use crate::proxy::head::{RawHeaders, ReqHead, ReqHeaders};
use crate::proxy::http::{handle, ConnInfo};
use crate::proxy::sniff::H2_PREFACE;

/// Most request headers this loop parses; more goes to hyper.
const MAX_HEADERS: usize = crate::proxy::head::MAX_RAW;
/// Largest head (bytes) this loop reads before handing over.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body (bytes) read ahead here; larger ones stream
/// through hyper.
const MAX_BODY: u64 = 64 * 1024;
/// Response bytes gathered before a write.
const WRITE_CHUNK: usize = 64 * 1024;

/// How a connection ended here.
pub enum Handoff {
    /// Closed (by either side) after the last response.
    Done,
    /// hyper serves the rest; reads start with the bytes read so far.
    Hyper(Prefixed<TcpStream>),
}

/// A parsed request this loop handles.
struct Parsed {
    head: ReqHead,
    body: Full<Bytes>,
    close: bool,
    head_request: bool,
}

// Lives for one parse on the stack; boxing the request would cost an
// allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
enum Step {
    Parsed(Parsed),
    NeedMore,
    Handoff,
}

/// Serves HTTP/1.1 requests on `stream` until it closes or a request needs
/// hyper.
pub async fn serve(info: Arc<ConnInfo>, mut stream: TcpStream) -> Handoff {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut wbuf: Vec<u8> = Vec::with_capacity(4 * 1024);
    let current_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
    loop {
        // Read until a whole head (and its small body) is here.
        let mut short_read = false;
        let parsed = loop {
            if buf.len() >= 3 && buf[..3] == H2_PREFACE[..3] {
                return handoff(buf, stream);
            }
            if buf.len() >= 3 {
                match parse(&mut buf) {
                    Step::Parsed(p) => break p,
                    Step::Handoff => return handoff(buf, stream),
                    Step::NeedMore if buf.len() > MAX_HEAD => return handoff(buf, stream),
                    Step::NeedMore => {}
                }
            }
            if buf.capacity() - buf.len() < 2048 {
                buf.reserve(8 * 1024);
            }
            let room = buf.capacity() - buf.len();
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Handoff::Done,
                Ok(n) => short_read = n < room,
            }
        };
        // The socket was drained by a short read: forget tokio's stale
        // "readable" so the watch below waits for a real event (new bytes
        // or the client closing) instead of a read that would find nothing.
        // Only on a current-thread runtime, where no other thread can
        // deliver an event between that read and this.
        if short_read && current_thread {
            let _ = stream.try_io(Interest::READABLE, || {
                Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
            });
        }
        let Parsed {
            head,
            body,
            close,
            head_request,
        } = parsed;
        let mut close = close;
        // Run the pipeline; a client that goes away meanwhile abandons the
        // request (logged `DC`, as Envoy does).
        // Made in place: a `let` then `pin!` would copy the whole
        // (kilobytes) future once more per request.
        let mut respond = std::pin::pin!(handle(info.clone(), head, body));
        let mut watching = true;
        let resp = loop {
            tokio::select! {
                biased;
                r = &mut respond => break r,
                // The stream's own reader waker slot: no waiter list.
                r = poll_fn(|cx| stream.poll_read_ready(cx)), if watching => {
                    if r.is_err() {
                        return Handoff::Done;
                    }
                    match stream.try_read_buf(&mut buf) {
                        Ok(0) => return Handoff::Done,
                        // Pipelined bytes: kept for the next request.
                        Ok(_) => watching = buf.len() < MAX_HEAD,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return Handoff::Done,
                    }
                }
            }
        };
        let Ok(resp) = resp;
        let (parts, mut body) = resp.into_parts();
        // Head.
        wbuf.clear();
        let no_body = head_request
            || parts.status.is_informational()
            || parts.status == StatusCode::NO_CONTENT
            || parts.status == StatusCode::NOT_MODIFIED;
        let has_length = parts.headers.contains_key(http::header::CONTENT_LENGTH);
        let chunked = if no_body || has_length {
            false
        } else {
            body.size_hint().exact().is_none() && !body.is_end_stream()
        };
        let length = if no_body || has_length || chunked {
            None
        } else {
            Some(body.size_hint().exact().unwrap_or(0))
        };
        encode_head(
            &mut wbuf,
            parts.status,
            &parts.headers,
            length,
            chunked,
            close,
        );
        // Body: gather what is ready, write when it would wait.
        let mut failed = false;
        let mut trailers: Option<HeaderMap> = None;
        loop {
            let next = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
                Poll::Pending if !wbuf.is_empty() => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
                Poll::Ready(f) => Poll::Ready(Some(f)),
            })
            .await;
            match next {
                None => {
                    if write(&mut stream, &mut wbuf).await.is_err() {
                        return Handoff::Done;
                    }
                }
                Some(None) => break,
                Some(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if no_body => drop(data),
                    Ok(data) if chunked => super::request::encode_chunk(&mut wbuf, &data),
                    Ok(data) => wbuf.extend_from_slice(&data),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                },
                Some(Some(Err(_))) => {
                    failed = true;
                    break;
                }
            }
            if wbuf.len() >= WRITE_CHUNK && write(&mut stream, &mut wbuf).await.is_err() {
                return Handoff::Done;
            }
        }
        if chunked && !failed {
            wbuf.extend_from_slice(b"0\r\n");
            for (n, v) in trailers.iter().flatten() {
                header_line(&mut wbuf, n.as_str().as_bytes(), v.as_bytes());
            }
            wbuf.extend_from_slice(b"\r\n");
        }
        // An upstream body that broke leaves this response unfinished: the
        // client learns it from the connection closing.
        close |= failed;
        if write(&mut stream, &mut wbuf).await.is_err() || close {
            let _ = stream.shutdown().await;
            return Handoff::Done;
        }
    }
}

fn handoff(buf: BytesMut, stream: TcpStream) -> Handoff {
    Handoff::Hyper(Prefixed::new(buf.freeze(), stream))
}

async fn write(stream: &mut TcpStream, wbuf: &mut Vec<u8>) -> std::io::Result<()> {
    if wbuf.is_empty() {
        return Ok(());
    }
    let r = super::io::write_all(stream, wbuf).await;
    wbuf.clear();
    r
}

/// Parses one request at the start of `buf`, removing it (head and body)
/// when this loop handles it.
fn parse(buf: &mut BytesMut) -> Step {
    let mut raw = uninit_headers::<MAX_HEADERS>();
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Step::NeedMore,
        Err(_) => return Step::Handoff,
    };
    if req.version != Some(1) {
        return Step::Handoff;
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Step::Handoff;
    };
    if !path.starts_with('/') {
        return Step::Handoff;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Step::Handoff;
    };
    let base = buf.as_ptr() as usize;
    let path_span = (path.as_ptr() as usize - base, path.len());
    let mut spans = Vec::with_capacity(req.headers.len());
    let mut length = 0u64;
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Step::Handoff;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let Some(v) = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
            else {
                return Step::Handoff;
            };
            if v > MAX_BODY || (length != 0 && length != v) {
                return Step::Handoff;
            }
            length = v;
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= connection_has(h.value, b"close");
        }
        spans.push(span(base, h));
    }
    if (buf.len() as u64) < head_len as u64 + length {
        return Step::NeedMore;
    }
    let head = buf.split_to(head_len).freeze();
    let body = buf.split_to(length as usize).freeze();
    let Ok(uri) = http::Uri::from_maybe_shared(head.slice(path_span.0..path_span.0 + path_span.1))
    else {
        return Step::Handoff;
    };
    let head_request = method == Method::HEAD;
    let head = ReqHead {
        method,
        uri,
        version: Version::HTTP_11,
        headers: ReqHeaders::Raw(RawHeaders::new(head, spans)),
        extensions: http::Extensions::new(),
    };
    Step::Parsed(Parsed {
        head,
        body: Full::new(body),
        close,
        head_request,
    })
}

/// `HTTP/1.1 <code> <reason>`, the headers, `date` when absent, the
/// framing header, `connection: close` when closing.
fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    length: Option<u64>,
    chunked: bool,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (n, v) in headers {
        header_line(out, n.as_str().as_bytes(), v.as_bytes());
    }
    if !headers.contains_key(http::header::DATE) {
        super::date::with(|d| header_line(out, b"date", d));
    }
    if let Some(n) = length {
        header_line(
            out,
            b"content-length",
            itoa::Buffer::new().format(n).as_bytes(),
        );
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
