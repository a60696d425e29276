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
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode, Version};
use http_body::Body;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::prefixed::Prefixed;
use super::request::{connection_has, header_line};
use super::spans::{span, uninit_headers};
use crate::proxy::head::{RawHeaders, ReqHead, ReqHeaders};
use crate::serve::http::{handle, ConnInfo};
use crate::transport::sniff::H2_PREFACE;

/// Most request headers this loop parses; more goes to hyper.
const MAX_HEADERS: usize = crate::proxy::head::MAX_RAW;
/// Largest request head (request line and headers, bytes): Envoy's
/// `max_request_headers_kb` default, 60 KiB. A longer head gets 431.
pub const MAX_HEAD: usize = 60 * 1024;
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
    /// The head is incomplete.
    NeedMore,
    /// The head is complete; its body is not all here yet.
    NeedBody,
    Handoff,
    /// A framing error: answered here, then the connection closes.
    Reject(Reject),
}

/// A request refused before routing, as Envoy's HTTP/1.1 codec refuses it:
/// the status, Envoy's `%RESPONSE_CODE_DETAILS%`, and flag `DPE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reject {
    /// Status sent (400, 431).
    pub status: StatusCode,
    /// Envoy's response code details.
    pub details: &'static str,
}

impl Reject {
    /// An invalid `Content-Length`, or two different ones.
    pub const BAD_CONTENT_LENGTH: Self = Self {
        status: StatusCode::BAD_REQUEST,
        details: "http1.codec_error",
    };
    /// `Transfer-Encoding` and `Content-Length` together.
    pub const CHUNKED_WITH_LENGTH: Self = Self {
        status: StatusCode::BAD_REQUEST,
        details: "http1.content_length_and_chunked_not_allowed",
    };
    /// A head over [`MAX_HEAD`].
    pub const HEADERS_TOO_LARGE: Self = Self {
        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        details: "http1.headers_too_large",
    };
}

/// Serves HTTP/1.1 requests on `stream` until it closes or a request needs
/// hyper.
pub async fn serve(info: Arc<ConnInfo>, mut stream: TcpStream) -> Handoff {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut wbuf: Vec<u8> = Vec::with_capacity(4 * 1024);
    let current_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
    let settings = &info.shared.settings;
    // One timer per connection, re-armed lazily: it fires at a deadline
    // that may be stale, and only then is the real one computed (so a
    // request costs one clock read, not a timer update).
    let mut clock = Clock::new(settings);
    let timer =
        tokio::time::sleep_until(clock.last_active + BUFFER_RELEASE.min(settings.idle_timeout));
    tokio::pin!(timer);
    loop {
        // Read until a whole head (and its small body) is here.
        let mut short_read = false;
        let parsed = loop {
            if buf.len() >= 3 && buf[..3] == H2_PREFACE[..3] {
                return handoff(buf, stream);
            }
            let mut wait = Wait::Idle;
            if !buf.is_empty() {
                wait = Wait::Head;
            }
            if buf.len() >= 3 {
                match parse(&mut buf) {
                    Step::Parsed(p) => break p,
                    Step::Handoff => return handoff(buf, stream),
                    Step::NeedMore if buf.len() > MAX_HEAD => {
                        reject(&info, &mut stream, Reject::HEADERS_TOO_LARGE).await;
                        return Handoff::Done;
                    }
                    Step::Reject(r) => {
                        reject(&info, &mut stream, r).await;
                        return Handoff::Done;
                    }
                    Step::NeedMore => {}
                    Step::NeedBody => wait = Wait::Body,
                }
            }
            clock.waiting(wait, timer.as_mut());
            if buf.capacity() == 0 {
                // Buffers were released while idle: wait for bytes before
                // allocating them again.
                tokio::select! {
                    biased;
                    r = stream.readable() => if r.is_err() { return Handoff::Done },
                    () = &mut timer => match clock.expired(timer.as_mut(), &mut buf, &mut wbuf) {
                        None => continue,
                        Some(r) => { expire(&info, &mut stream, r).await; return Handoff::Done }
                    },
                }
                buf.reserve(8 * 1024);
                continue;
            }
            if buf.capacity() - buf.len() < 2048 {
                buf.reserve(8 * 1024);
            }
            let room = buf.capacity() - buf.len();
            let read = tokio::select! {
                biased;
                r = stream.read_buf(&mut buf) => r,
                () = &mut timer => match clock.expired(timer.as_mut(), &mut buf, &mut wbuf) {
                    None => continue,
                    Some(r) => { expire(&info, &mut stream, r).await; return Handoff::Done }
                },
            };
            match read {
                Ok(0) | Err(_) => return Handoff::Done,
                Ok(n) => short_read = n < room,
            }
        };
        clock.request_started();
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
        wbuf.reserve(4 * 1024);
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
        clock.request_done();
        if buf.is_empty() {
            // Nothing pipelined: give both buffers back while the client
            // thinks (nginx frees its keep-alive buffers the same way), so
            // idle connections hold none; the next request takes them from
            // the allocator's thread-local free list.
            buf = BytesMut::new();
            wbuf = Vec::new();
        }
    }
}

/// A connection that has not sent its first request after this long gives
/// its first read and write buffers back (12 KiB); later, buffers are
/// given back after every response with nothing pipelined behind it, and
/// taken again when bytes arrive.
const BUFFER_RELEASE: Duration = Duration::from_secs(5);

/// What the connection waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// The next request (nothing buffered): idle timeout.
    Idle,
    /// The rest of a request head: request-headers timeout.
    Head,
    /// The rest of a small request body: stream idle timeout.
    Body,
}

/// A connection's timeouts, checked when its (lazily armed) timer fires.
struct Clock {
    /// When the last response was written (or the connection accepted).
    last_active: Instant,
    /// When the head being read started to arrive (set lazily: the first
    /// time the loop has to wait for more of it).
    head_started: Option<Instant>,
    /// When the body being read last made progress (set lazily too).
    body_progress: Option<(Instant, usize)>,
    wait: Wait,
    headers_timeout: Duration,
    idle_timeout: Duration,
    stream_idle_timeout: Duration,
}

/// Why a connection is being closed by a timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expired {
    /// Idle for the idle timeout: closed without a reply.
    Idle,
    /// A head or body too slow: `408` (Envoy's `request_header_timeout`,
    /// `stream_idle_timeout`).
    TooSlow(&'static str),
}

impl Clock {
    fn new(s: &crate::serve::ProxySettings) -> Self {
        Self {
            last_active: Instant::now(),
            head_started: None,
            body_progress: None,
            wait: Wait::Idle,
            headers_timeout: s.request_headers_timeout,
            idle_timeout: s.idle_timeout,
            stream_idle_timeout: s.stream_idle_timeout,
        }
    }

    /// The loop is about to wait in state `wait`.
    fn waiting(&mut self, wait: Wait, timer: Pin<&mut tokio::time::Sleep>) {
        self.wait = wait;
        if wait == Wait::Head && self.head_started.is_none() {
            let now = Instant::now();
            self.head_started = Some(now);
            // Shorter than what the timer waits for now: arm it earlier.
            let due = now + self.headers_timeout;
            if timer.deadline() > due {
                timer.reset(due);
            }
        }
    }

    fn request_started(&mut self) {
        self.head_started = None;
        self.body_progress = None;
    }

    fn request_done(&mut self) {
        self.last_active = Instant::now();
    }

    /// The timer fired: `None` (re-armed at the real deadline) or why the
    /// connection ends. Releases the buffers of a connection idle for
    /// [`BUFFER_RELEASE`].
    fn expired(
        &mut self,
        timer: Pin<&mut tokio::time::Sleep>,
        buf: &mut BytesMut,
        wbuf: &mut Vec<u8>,
    ) -> Option<Expired> {
        let now = Instant::now();
        let due = match self.wait {
            Wait::Head => {
                let due = self.head_started.unwrap_or(now) + self.headers_timeout;
                if now >= due {
                    return Some(Expired::TooSlow("request_header_timeout"));
                }
                due
            }
            Wait::Body => {
                let (at, len) = self.body_progress.unwrap_or((now, buf.len()));
                let at = if len == buf.len() { at } else { now };
                self.body_progress = Some((at, buf.len()));
                let due = at + self.stream_idle_timeout;
                if now >= due {
                    return Some(Expired::TooSlow("stream_idle_timeout"));
                }
                due
            }
            Wait::Idle => {
                let idle_due = self.last_active + self.idle_timeout;
                if now >= idle_due {
                    return Some(Expired::Idle);
                }
                let release = self.last_active + BUFFER_RELEASE;
                if now < release {
                    release.min(idle_due)
                } else {
                    if buf.is_empty() && buf.capacity() > 0 {
                        *buf = BytesMut::new();
                        *wbuf = Vec::new();
                    }
                    idle_due
                }
            }
        };
        // Stale or early wake-ups (activity since it was armed): wait on.
        let due = if self.wait == Wait::Body {
            due.min(now + BUFFER_RELEASE)
        } else {
            due
        };
        timer.reset(due.max(now + Duration::from_millis(1)));
        None
    }
}

/// Ends a connection whose timer expired: `408` with `connection: close`
/// for a request too slow to arrive (logged with its details), nothing
/// for an idle one.
async fn expire(info: &ConnInfo, stream: &mut TcpStream, why: Expired) {
    match why {
        Expired::Idle => {
            let _ = stream.shutdown().await;
        }
        Expired::TooSlow(details) => {
            let r = Reject {
                status: StatusCode::REQUEST_TIMEOUT,
                details,
            };
            reject_with(info, stream, r, false).await;
        }
    }
}

/// Answers a request refused by the codec (`connection: close`, Envoy's
/// body: the status text), logs it with flag `DPE` and closes.
async fn reject(info: &ConnInfo, stream: &mut TcpStream, r: Reject) {
    reject_with(info, stream, r, true).await
}

async fn reject_with(info: &ConnInfo, stream: &mut TcpStream, r: Reject, dpe: bool) {
    let reason = r.status.canonical_reason().unwrap_or("");
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(r.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    header_line(
        &mut out,
        b"content-length",
        itoa::Buffer::new().format(reason.len()).as_bytes(),
    );
    header_line(&mut out, b"content-type", b"text/plain");
    super::date::with(|d| header_line(&mut out, b"date", d));
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(reason.as_bytes());
    let _ = super::io::write_all(stream, &out).await;
    let _ = stream.shutdown().await;
    // Read (and drop) what the client is still sending for a moment, so
    // closing with unread bytes does not reset the connection before the
    // client has read the reply.
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut left = 1usize << 20;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    crate::serve::http::log_protocol_error(info, r.status, r.details, dpe);
}

/// What the server loop makes of `bytes` as the next request on a
/// connection: the same code path as serving, for the fuzz target
/// (`fuzz/fuzz_targets/h1_request.rs`) and tests.
#[derive(Debug)]
pub enum ParseOutcome {
    /// A request served by this loop.
    Request {
        /// Method.
        method: Method,
        /// Path and query as routed (before normalization).
        path: String,
        /// The header lines forwarded upstream, in order.
        headers: Vec<(Vec<u8>, Vec<u8>)>,
        /// Request body length.
        body: usize,
        /// Bytes of `bytes` the request took (head and body).
        consumed: usize,
    },
    /// The head is incomplete.
    NeedMore,
    /// The head is complete, the body is not.
    NeedBody,
    /// hyper would serve it.
    Handoff,
    /// Refused with this reply.
    Reject(Reject),
}

/// Parses `bytes` as the server loop does (see [`ParseOutcome`]).
pub fn parse_one(bytes: &[u8]) -> ParseOutcome {
    let mut buf = BytesMut::from(bytes);
    match parse(&mut buf) {
        Step::Parsed(p) => {
            let headers = p
                .head
                .headers
                .to_map()
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect();
            ParseOutcome::Request {
                method: p.head.method,
                path: p.head.uri.to_string(),
                headers,
                body: p.body.size_hint().exact().unwrap_or(0) as usize,
                consumed: bytes.len() - buf.len(),
            }
        }
        Step::NeedMore => ParseOutcome::NeedMore,
        Step::NeedBody => ParseOutcome::NeedBody,
        Step::Handoff => ParseOutcome::Handoff,
        Step::Reject(r) => ParseOutcome::Reject(r),
    }
}

/// A `Content-Length` value: decimal digits only (no sign, no spaces, no
/// list), without overflow; `None` otherwise (RFC 9110 §8.6).
pub fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
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
    let mut close = false;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut handoff = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
            handoff = true;
        } else if name.eq_ignore_ascii_case(b"upgrade") || name.eq_ignore_ascii_case(b"expect") {
            handoff = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // RFC 9112 §6.3: an invalid or a second, different length is
            // an unrecoverable framing error (Envoy: 400). The same value
            // repeated is kept once, as Envoy coalesces it.
            let Some(v) = parse_content_length(h.value) else {
                return Step::Reject(Reject::BAD_CONTENT_LENGTH);
            };
            match content_length {
                Some(prev) if prev != v => return Step::Reject(Reject::BAD_CONTENT_LENGTH),
                Some(_) => continue,
                None => content_length = Some(v),
            }
            if v > MAX_BODY {
                handoff = true;
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= connection_has(h.value, b"close");
        }
        spans.push(span(base, h));
    }
    if chunked && content_length.is_some() {
        // Both framings: the classic smuggling vector. Envoy rejects it
        // unless `allow_chunked_length` is set (RFC 9112 §6.3 allows it).
        return Step::Reject(Reject::CHUNKED_WITH_LENGTH);
    }
    if handoff {
        return Step::Handoff;
    }
    let length = content_length.unwrap_or(0);
    if (buf.len() as u64) < head_len as u64 + length {
        return Step::NeedBody;
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
