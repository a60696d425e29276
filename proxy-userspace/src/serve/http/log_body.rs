//! Wraps the response body to count the bytes sent and to emit the access
//! log record when the response ends (or the client goes away).
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::proxy::body::{BoxError, ProxyBody};
use crate::telemetry::access_log::{AccessLogRecord, AccessLogSink};
use crate::telemetry::flags::ResponseFlags;

/// The pending record of one request.
pub struct PendingLog {
    /// The record, completed at the end.
    pub record: AccessLogRecord,
    /// Where it goes.
    pub sink: Arc<dyn AccessLogSink>,
    /// When the request started; `None` when the sink is disabled (the
    /// record is then never emitted).
    pub start: Option<Instant>,
    /// Request bytes read so far (shared with the request body counter);
    /// `None` when the sink is disabled (nothing counts them).
    pub bytes_received: Option<Arc<AtomicU64>>,
}

impl PendingLog {
    /// Completes and emits the record.
    pub fn finish(mut self, bytes_sent: u64, complete: bool) {
        let Some(start) = self.start else {
            return;
        };
        let r = &mut self.record;
        r.bytes_sent = bytes_sent;
        r.bytes_received = self
            .bytes_received
            .as_ref()
            .map_or(0, |b| b.load(Ordering::Relaxed));
        r.duration_ms = start.elapsed().as_millis() as u64;
        if !complete {
            r.response_flags
                .insert(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
        }
        self.sink.log(self.record);
    }
}

/// A response body that logs when done.
pub struct LoggedBody {
    inner: ProxyBody,
    sent: u64,
    // Boxed: the record is large, and a response (moved several times per
    // request) should not carry its space when nothing is logged.
    log: Option<Box<PendingLog>>,
    held: super::forward::Held,
}

impl LoggedBody {
    /// Wraps `inner` without a record (access log and telemetry off): it
    /// only holds the request's guards until the body ends.
    pub fn unlogged(inner: ProxyBody) -> Self {
        Self {
            inner,
            sent: 0,
            log: None,
            held: Default::default(),
        }
    }

    /// Wraps `inner`; `log` is emitted at end of stream or drop.
    pub fn new(inner: ProxyBody, log: Box<PendingLog>) -> Self {
        let mut b = Self {
            inner,
            sent: 0,
            log: Some(log),
            held: Default::default(),
        };
        if b.inner.is_end_stream() {
            if let Some(l) = b.log.take() {
                l.finish(0, true);
            }
        }
        b
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.sent += d.len() as u64;
                }
                if let Some(t) = frame.trailers_ref() {
                    if let Some(log) = this.log.as_mut() {
                        if let Some(g) = t
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok()?.parse().ok())
                        {
                            log.record.grpc_status = Some(g);
                        }
                    }
                }
                if this.inner.is_end_stream() {
                    if let Some(l) = this.log.take() {
                        l.finish(this.sent, true);
                    }
                }
            }
            Poll::Ready(None) => {
                this.held = Default::default();
                if let Some(l) = this.log.take() {
                    l.finish(this.sent, true);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut l) = this.log.take() {
                    l.record
                        .response_flags
                        .insert(ResponseFlags::UPSTREAM_CONNECTION_TERMINATION);
                    l.finish(this.sent, true);
                }
            }
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(l) = self.log.take() {
            l.finish(self.sent, false);
        }
    }
}

/// A request body that counts the bytes read from the client and notes
/// whether reading it failed.
pub struct CountingBody<B> {
    inner: B,
    count: Option<Arc<AtomicU64>>,
    failed: Option<Arc<AtomicBool>>,
}

impl<B> CountingBody<B> {
    /// Counts into `count` (`None`: counts nothing).
    pub fn new(inner: B, count: Option<Arc<AtomicU64>>) -> Self {
        Self {
            inner,
            count,
            failed: None,
        }
    }

    /// Sets `flag` when the client's body fails (a downstream protocol
    /// error: malformed chunked framing, a body cut short).
    pub fn flag_errors(mut self, flag: Arc<AtomicBool>) -> Self {
        self.failed = Some(flag);
        self
    }
}

impl<B> Body for CountingBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                if let (Some(d), Some(c)) = (f.data_ref(), &this.count) {
                    c.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(f) = &this.failed {
                    f.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl LoggedBody {
    /// Keeps `guards` alive until the body ends (circuit-breaker slots,
    /// active-request counts).
    pub fn hold(&mut self, guards: super::forward::Held) {
        self.held = guards;
    }
}
