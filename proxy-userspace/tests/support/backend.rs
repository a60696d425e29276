//! Test backends on loopback that say which instance served them and
//! record what they received. HTTP/1.1 and HTTP/2 (prior knowledge) on one
//! port; gRPC echo with trailers; WebSocket-style upgrade echo; and
//! programmable failures.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What a backend received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Method.
    pub method: http::Method,
    /// Path and query.
    pub path: String,
    /// Headers.
    pub headers: HeaderMap,
    /// HTTP version.
    pub version: http::Version,
    /// `:authority` (HTTP/2) or `Host` (HTTP/1.1).
    pub authority: Option<String>,
    /// Body.
    pub body: Bytes,
}

/// Shared state of a backend.
#[derive(Debug, Default)]
pub struct State {
    /// Instance name, returned in the body and `x-served-by`.
    pub name: String,
    /// Requests served.
    pub hits: AtomicUsize,
    /// Connections accepted.
    pub accepted: AtomicUsize,
    /// Connections open now.
    pub open: AtomicUsize,
    /// The next `fail_next` requests get `fail_status`.
    pub fail_next: AtomicUsize,
    /// Status for failures.
    pub fail_status: AtomicUsize,
    /// Every request (headers and body).
    pub seen: Mutex<Vec<Seen>>,
}

/// A running backend; stops when dropped.
pub struct Backend {
    /// Listening address.
    pub addr: SocketAddr,
    /// State.
    pub state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Starts a backend named `name` on `addr` (port 0 = any).
    pub async fn start(name: &str, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            name: name.to_owned(),
            ..Default::default()
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                st.accepted.fetch_add(1, Ordering::SeqCst);
                st.open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let st2 = st.clone();
                    let svc = service_fn(move |req| serve(st2.clone(), req));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                    st.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Ok(Self { addr, state, task })
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    /// Makes the next `n` requests fail with `status`.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.state
            .fail_status
            .store(status as usize, Ordering::SeqCst);
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    /// The requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

fn authority(parts: &http::request::Parts) -> Option<String> {
    parts.uri.authority().map(|a| a.to_string()).or_else(|| {
        parts
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    })
}

fn text(status: StatusCode, name: &str, body: String) -> Response<BoxBody> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert("x-served-by", name.parse().unwrap());
    r
}

async fn serve(
    st: Arc<State>,
    mut req: Request<Incoming>,
) -> Result<Response<BoxBody>, Infallible> {
    st.hits.fetch_add(1, Ordering::SeqCst);
    let is_grpc = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if req.headers().contains_key("upgrade") {
        return Ok(upgrade(&st, &mut req));
    }
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let (parts, body) = req.into_parts();
    if is_grpc {
        return Ok(grpc(st, parts, body, path).await);
    }
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    st.seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        path: path.clone(),
        headers: parts.headers.clone(),
        version: parts.version,
        authority: authority(&parts),
        body: body.clone(),
    });
    let left = st.fail_next.load(Ordering::SeqCst);
    if left > 0
        && st
            .fail_next
            .compare_exchange(left, left - 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    {
        let code = StatusCode::from_u16(st.fail_status.load(Ordering::SeqCst) as u16).unwrap();
        return Ok(text(code, &st.name, format!("{} failing", st.name)));
    }
    if let Some(ms) = path
        .strip_prefix("/delay/")
        .and_then(|s| s.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(code) = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
    {
        return Ok(text(
            StatusCode::from_u16(code).unwrap(),
            &st.name,
            st.name.clone(),
        ));
    }
    Ok(text(StatusCode::OK, &st.name, st.name.clone()))
}

/// Accepts an upgrade and echoes bytes, prefixed once with the name.
fn upgrade(st: &Arc<State>, req: &mut Request<Incoming>) -> Response<BoxBody> {
    let on = hyper::upgrade::on(req);
    let name = st.name.clone();
    tokio::spawn(async move {
        let Ok(up) = on.await else { return };
        let mut io = TokioIo::new(up);
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = io.write_all(format!("{name}:").as_bytes()).await;
        let mut buf = [0u8; 1024];
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut().insert("upgrade", "echo".parse().unwrap());
    r.headers_mut()
        .insert("connection", "upgrade".parse().unwrap());
    r
}

/// gRPC framing: 1 byte compressed flag, 4 bytes big-endian length.
pub fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.extend_from_slice(&[0]);
    b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    b.extend_from_slice(msg);
    b.freeze()
}

/// Splits gRPC length-prefixed messages.
pub fn grpc_messages(mut data: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    while data.len() >= 5 {
        let n = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        if data.len() < 5 + n {
            break;
        }
        out.push(Bytes::copy_from_slice(&data[5..5 + n]));
        data = &data[5 + n..];
    }
    out
}

/// A tiny gRPC service (`/test.Echo/*`): `Unary` echoes the message with the
/// instance name; `Stream` answers every message of a client stream as it
/// arrives; `Fail` returns `grpc-status: 14` in trailers after headers.
async fn grpc(
    st: Arc<State>,
    parts: http::request::Parts,
    mut body: Incoming,
    path: String,
) -> Response<BoxBody> {
    let name = st.name.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Frame<Bytes>>(16);
    st.seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        path: path.clone(),
        headers: parts.headers.clone(),
        version: parts.version,
        authority: authority(&parts),
        body: Bytes::new(),
    });
    tokio::spawn(async move {
        let mut buf = BytesMut::new();
        let mut answered = 0;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
                let msgs = grpc_messages(&buf);
                for m in msgs.iter().skip(answered) {
                    if path.ends_with("/Stream") || path.ends_with("/Unary") {
                        let reply = format!("{name}:{}", String::from_utf8_lossy(m));
                        let _ = tx.send(Frame::data(grpc_frame(reply.as_bytes()))).await;
                    }
                }
                answered = msgs.len();
            }
        }
        let mut trailers = HeaderMap::new();
        if path.ends_with("/Fail") {
            trailers.insert("grpc-status", "14".parse().unwrap());
            trailers.insert("grpc-message", "backend unavailable".parse().unwrap());
        } else {
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("x-served-by-trailer", name.parse().unwrap());
        }
        let _ = tx.send(Frame::trailers(trailers)).await;
    });
    let stream = futures_stream(rx);
    let mut r = Response::new(StreamBody::new(stream).boxed());
    r.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    r.headers_mut()
        .insert("x-served-by", st.name.parse().unwrap());
    r
}

fn futures_stream(
    mut rx: tokio::sync::mpsc::Receiver<Frame<Bytes>>,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Sync + 'static {
    struct S(tokio::sync::mpsc::Receiver<Frame<Bytes>>);
    impl futures_core::Stream for S {
        type Item = Result<Frame<Bytes>, Infallible>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            self.0.poll_recv(cx).map(|o| o.map(Ok))
        }
    }
    let _ = &mut rx;
    S(rx)
}
