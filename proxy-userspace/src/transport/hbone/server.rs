//! The destination side of HBONE (ztunnel's `proxy/inbound.rs`): TLS
//! termination with the destination workload's certificate, the peer's
//! SPIFFE ID from its verified certificate, then one `CONNECT` per
//! tunnelled connection: checked (400 not CONNECT / bad authority /
//! authority IP not the dialled IP, 503 protected port), authorized (401),
//! connected to the pod within 10 s (else 503), answered 200, and bytes
//! copied both ways with half-close. A handler that needs the requests
//! inside the tunnel (L7 policy) takes the inner stream instead
//! ([`InboundHandler::inspect`]): 200 at once, then it decides.
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{Request, Response, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::settings::*;
use super::stream::{keep_alive, H2Stream};
use super::{tls, HboneError, PROTECTED_PORTS};
use crate::identity::SpiffeId;
use crate::transport::accept::AcceptBackoff;

/// What the destination side knows about one `CONNECT`.
#[derive(Clone, Debug)]
pub struct ConnectCheck {
    /// The peer's verified identity.
    pub peer: SpiffeId,
    /// The original client: `forwarded: for=` when the peer sent it, else
    /// the TLS connection's remote address (as ztunnel).
    pub source: SocketAddr,
    /// The pod address the tunnel delivers to (`:authority`).
    pub target: SocketAddr,
    /// The TCP peer of the TLS connection: the source pod's IP when the
    /// source node dials from inside the pod (ztunnel's in-pod mode and
    /// Strait), else the source node's address.
    pub remote: SocketAddr,
    /// When the `CONNECT` arrived.
    pub at: std::time::SystemTime,
}

/// The inner stream of an established tunnel (after the `200`), handed to
/// [`InboundHandler::serve_inner`].
pub type InnerStream = H2Stream;

/// A boxed future (the handler is used as a trait object).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How the destination side authorizes and delivers. Implemented by the
/// daemon (policy engine, in-pod delivery) and by tests.
pub trait InboundHandler: Send + Sync + 'static {
    /// Whether the handler serves this tunnel's inner stream itself
    /// ([`InboundHandler::serve_inner`]; e.g. its policies need the HTTP
    /// requests inside). Asked first; when `true` the `CONNECT` is answered
    /// 200 at once, and neither `authorize`, `connect`, `opened` nor
    /// `finished` is called for it. Default: `false`.
    fn inspect(&self, _c: &ConnectCheck) -> bool {
        false
    }
    /// Serves an inspected tunnel's inner stream to its end (checks,
    /// delivery, records). Default: closes it.
    fn serve_inner(&self, _c: ConnectCheck, _stream: InnerStream) -> BoxFuture<()> {
        Box::pin(async {})
    }
    /// Authorization of one `CONNECT`; `false` answers 401.
    fn authorize(&self, c: &ConnectCheck) -> bool;
    /// The connection to the pod (the daemon: from 127.0.0.6 inside the
    /// pod's network namespace).
    fn connect(&self, target: SocketAddr) -> BoxFuture<std::io::Result<TcpStream>>;
    /// A tunnel was established (200 sent; bytes flow next).
    fn opened(&self, _c: &ConnectCheck) {}
    /// A tunnelled connection ended (or was refused with `status`):
    /// bytes from the peer to the pod and back.
    fn finished(&self, c: &ConnectCheck, status: StatusCode, sent: u64, received: u64);
}

/// Checks a `CONNECT` request against the dialled address: the target, or
/// the status to answer (400: not CONNECT, no or bad authority, authority
/// IP other than the dialled one; 503: a protected port).
pub fn check_request<B>(req: &Request<B>, dialled: SocketAddr) -> Result<SocketAddr, StatusCode> {
    if req.method() != http::Method::CONNECT {
        return Err(StatusCode::BAD_REQUEST);
    }
    let target: SocketAddr = req
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse().ok())
        .ok_or(StatusCode::BAD_REQUEST)?;
    if target.ip() != dialled.ip() {
        return Err(StatusCode::BAD_REQUEST);
    }
    if PROTECTED_PORTS.contains(&target.port()) {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    Ok(target)
}

/// The client address of a `forwarded: for="<ip:port>"` header (the first
/// element), if it parses.
pub fn forwarded_for(headers: &http::HeaderMap) -> Option<SocketAddr> {
    let v = headers.get(http::header::FORWARDED)?.to_str().ok()?;
    let first = v.split(',').next()?;
    first.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        if !k.eq_ignore_ascii_case("for") {
            return None;
        }
        let v = v.trim_matches('"');
        v.parse()
            .ok()
            .or_else(|| v.parse::<std::net::IpAddr>().ok().map(|ip| (ip, 0).into()))
    })
}

/// Where [`serve_on`] runs each accepted connection: a function that
/// spawns the future on some runtime (the daemon: its proxy workers').
pub type Spawn = Arc<dyn Fn(BoxFuture<()>) + Send + Sync>;

/// Accepts HBONE connections on `listener` until it fails; each connection
/// is served on its own task on the current runtime.
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    handler: Arc<dyn InboundHandler>,
) {
    let spawn: Spawn = Arc::new(|f| drop(tokio::spawn(f)));
    serve_on(listener, config, handler, spawn).await
}

/// [`serve`], each accepted connection (TLS handshake, then its streams)
/// started by `spawn`.
pub async fn serve_on(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    handler: Arc<dyn InboundHandler>,
    spawn: Spawn,
) {
    let mut backoff = AcceptBackoff::new("HBONE listener");
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => {
                backoff.accepted();
                c
            }
            Err(e) => {
                backoff.failed(&e).await;
                continue;
            }
        };
        // The socket moves to the runtime that serves it (registered with
        // that runtime's reactor, so its wake-ups stay on that thread).
        let tcp = match tcp.into_std() {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(%remote, "HBONE connection: {e}");
                continue;
            }
        };
        let (config, handler) = (config.clone(), handler.clone());
        spawn(Box::pin(async move {
            let served = match TcpStream::from_std(tcp) {
                Ok(tcp) => serve_connection(tcp, config, handler).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = served {
                tracing::debug!(%remote, "HBONE connection: {e}");
            }
        }));
    }
}

/// Serves one HBONE connection: TLS (client certificate required), ALPN
/// `h2`, then HTTP/2 `CONNECT` streams until the peer closes.
pub async fn serve_connection(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    handler: Arc<dyn InboundHandler>,
) -> Result<(), HboneError> {
    let dialled = tcp.local_addr()?;
    let remote = tcp.peer_addr()?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_rustls::TlsAcceptor::from(config).accept(tcp),
    )
    .await
    .map_err(|_| HboneError::Timeout)?
    .map_err(HboneError::Tls)?;
    let conn = tls.get_ref().1;
    if conn.alpn_protocol() != Some(tls::ALPN_H2) {
        return Err(HboneError::Alpn);
    }
    let peer = conn
        .peer_certificates()
        .and_then(tls::peer_identity)
        .ok_or(HboneError::NoPeerIdentity)?;
    let mut conn = h2::server::Builder::new()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(64 * 1024)
        .max_send_buffer_size(400 * 1024)
        .handshake::<_, Bytes>(tls)
        .await?;
    // Keep-alive PINGs (ztunnel's `do_ping_pong`): one unanswered closes
    // the connection.
    let (dead_tx, mut dead) = tokio::sync::oneshot::channel::<()>();
    let pinger = conn.ping_pong().map(|ping| {
        tokio::spawn(async move {
            keep_alive(ping, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT).await;
            let _ = dead_tx.send(());
        })
    });
    let _pinger = AbortOnDrop(pinger);
    // Accepting drives the connection; each stream runs on its own task.
    loop {
        tokio::select! {
            biased;
            r = conn.accept() => match r {
                Some(r) => {
                    let (req, respond) = r?;
                    let (peer, handler) = (peer.clone(), handler.clone());
                    tokio::spawn(handle(req, respond, dialled, remote, peer, handler));
                }
                None => return Ok(()),
            },
            // Only a PING that went unanswered (not a dropped sender).
            Ok(()) = &mut dead => {
                conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                return Err(HboneError::Timeout);
            }
        }
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.abort();
        }
    }
}

fn status(code: StatusCode) -> Response<()> {
    let mut r = Response::new(());
    *r.status_mut() = code;
    r
}

/// Answers `respond` with `code` and no body (END_STREAM).
fn refuse(mut respond: SendResponse<Bytes>, code: StatusCode) {
    let _ = respond.send_response(status(code), true);
}

/// One `CONNECT` stream, to its end: checks, authorization, the
/// connection to the pod, the `200`, then bytes both ways.
async fn handle(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    dialled: SocketAddr,
    remote: SocketAddr,
    peer: SpiffeId,
    handler: Arc<dyn InboundHandler>,
) {
    let target = match check_request(&req, dialled) {
        Ok(t) => t,
        Err(code) => {
            tracing::debug!(peer = %peer, uri = %req.uri(), %code, "HBONE CONNECT refused");
            return refuse(respond, code);
        }
    };
    let check = ConnectCheck {
        peer,
        source: forwarded_for(req.headers()).unwrap_or(remote),
        target,
        remote,
        at: std::time::SystemTime::now(),
    };
    if handler.inspect(&check) {
        match respond.send_response(status(StatusCode::OK), false) {
            Ok(send) => {
                let stream = H2Stream::new(send, req.into_body());
                handler.serve_inner(check, stream).await;
            }
            Err(e) => tracing::debug!(%target, "HBONE: answering the CONNECT: {e}"),
        }
        return;
    }
    if !handler.authorize(&check) {
        handler.finished(&check, StatusCode::UNAUTHORIZED, 0, 0);
        return refuse(respond, StatusCode::UNAUTHORIZED);
    }
    let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, handler.connect(target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%target, "HBONE: connecting to the pod: {e}");
            handler.finished(&check, StatusCode::SERVICE_UNAVAILABLE, 0, 0);
            return refuse(respond, StatusCode::SERVICE_UNAVAILABLE);
        }
        Err(_) => {
            handler.finished(&check, StatusCode::SERVICE_UNAVAILABLE, 0, 0);
            return refuse(respond, StatusCode::SERVICE_UNAVAILABLE);
        }
    };
    let send = match respond.send_response(status(StatusCode::OK), false) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%target, "HBONE: answering the CONNECT: {e}");
            handler.finished(&check, StatusCode::OK, 0, 0);
            return;
        }
    };
    handler.opened(&check);
    let _ = upstream.set_nodelay(true);
    let mut tunnel = H2Stream::new(send, req.into_body());
    let r = crate::transport::copy::copy_bidirectional(&mut tunnel, &mut upstream).await;
    let _ = tunnel.shutdown().await;
    let (sent, received) = r.unwrap_or((0, 0));
    handler.finished(&check, StatusCode::OK, sent, received);
}
