//! The source side of HBONE: mTLS HTTP/2 connections to
//! `<destination pod IP>:15008`, pooled per (source identity, destination
//! identity, destination address) as ztunnel's `WorkloadHBONEPool`
//! (`ztunnel/src/proxy/pool.rs`): at most
//! [`MAX_STREAMS_PER_CONNECTION`](super::settings::MAX_STREAMS_PER_CONNECTION)
//! streams on one connection, idle connections closed after
//! [`POOL_IDLE_TIMEOUT`](super::settings::POOL_IDLE_TIMEOUT), and one
//! connection dialled per key at a time (ztunnel's
//! `established_conn_writelock`): a burst of new client connections to one
//! destination shares the first tunnel instead of each opening its own TLS
//! connection (each holds ~50 KB of TLS and HTTP/2 buffers on both nodes).
//! Each proxied TCP connection is one `CONNECT` stream ([`HboneStream`]).
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::settings::*;
use super::stream::{keep_alive, H2Stream};
use super::{tls, HboneError};
use crate::identity::{CertStore, SpiffeId};
use crate::transport::inpod::InPodNetns;

/// One tunnelled connection to open.
#[derive(Clone, Debug)]
pub struct OutboundRequest {
    /// The source workload (whose certificate is presented).
    pub source: SpiffeId,
    /// The destination workload's identity (the server must present it).
    pub destination: SpiffeId,
    /// More accepted server identities (a service's `subjectAltNames`).
    pub extra_sans: Vec<String>,
    /// Where to dial: `<destination pod IP>:15008`.
    pub hbone_addr: SocketAddr,
    /// The `:authority`: `<destination pod IP>:<target port>`.
    pub target: SocketAddr,
    /// The downstream client (`forwarded: for="<ip:port>"`).
    pub forwarded_for: Option<SocketAddr>,
    /// The service host when the original destination was a service
    /// (`forwarded: ...;host=<host>`).
    pub service_host: Option<String>,
    /// The source pod's IP, when the source is a local pod: the tunnel is
    /// dialled from it (inside its network namespace, as ztunnel's in-pod
    /// mode) and its `baggage` is sent, when [`Outbound::set_sources`]
    /// knows it; connections are pooled per source IP (ztunnel's
    /// `WorkloadKey::src`).
    pub source_ip: Option<IpAddr>,
}

/// What the client knows of one local source pod (see
/// [`Outbound::set_sources`]).
#[derive(Clone, Debug, Default)]
pub struct SourcePod {
    /// The pod's network namespace: tunnels are dialled from inside it, so
    /// the destination sees the pod IP as the TCP peer. `None`: from the
    /// node's address (the namespace is not known yet).
    pub netns: Option<Arc<InPodNetns>>,
    /// The `baggage` header value sent on its `CONNECT`s (ztunnel's
    /// `baggage_header_val` of the source workload).
    pub baggage: Option<http::HeaderValue>,
}

/// What a pooled connection is shared by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PoolKey {
    source: SpiffeId,
    destination: SpiffeId,
    addr: SocketAddr,
    /// The source pod's IP when the connection is dialled from it.
    src: Option<IpAddr>,
}

struct PooledConn {
    tx: Connection,
    active: Arc<AtomicUsize>,
    last_used: Mutex<Instant>,
}

impl PooledConn {
    fn usable(&self) -> bool {
        !self.tx.is_closed() && self.active.load(Ordering::Relaxed) < MAX_STREAMS_PER_CONNECTION
    }

    fn idle_since(&self) -> Option<Instant> {
        (self.active.load(Ordering::Relaxed) == 0)
            .then(|| *self.last_used.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The node's HBONE client: the workload certificates and the connection
/// pool. Cheap to share (`Arc`).
pub struct Outbound {
    certs: CertStore,
    pool: Mutex<HashMap<PoolKey, Vec<Arc<PooledConn>>>>,
    /// Keys with a dial in progress; the dial holds the lock, later
    /// connects to the key wait on it, then look in the pool again. An
    /// entry leaves the map with its last user.
    dialing: Mutex<HashMap<PoolKey, Arc<tokio::sync::Mutex<()>>>>,
    connect_timeout: Duration,
    sources: arc_swap::ArcSwap<HashMap<IpAddr, SourcePod>>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

impl Outbound {
    /// A client presenting certificates from `certs`. Starts the idle
    /// sweeper on the current tokio runtime, if any.
    pub fn new(certs: CertStore) -> Arc<Self> {
        let me = Arc::new(Self {
            certs,
            pool: Mutex::new(HashMap::new()),
            dialing: Mutex::new(HashMap::new()),
            connect_timeout: CONNECT_TIMEOUT,
            sources: arc_swap::ArcSwap::from_pointee(HashMap::new()),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&me);
            rt.spawn(sweeper(weak));
        }
        me
    }

    /// Replaces what is known of the local source pods (by pod IP): where
    /// their tunnels are dialled from and the `baggage` they send.
    pub fn set_sources(&self, sources: HashMap<IpAddr, SourcePod>) {
        self.sources.store(Arc::new(sources));
    }

    /// The certificate store.
    pub fn certs(&self) -> &CertStore {
        &self.certs
    }

    /// Open pooled connections (for `/config_dump`-style views and tests).
    pub fn connections(&self) -> usize {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|v| v.iter().filter(|c| !c.tx.is_closed()).count())
            .sum()
    }

    /// Opens a `CONNECT` stream for `req`, on a pooled connection when one
    /// has room, else on a new one. Errors: no certificate for the source,
    /// TCP/TLS/HTTP/2 failures, a non-200 answer.
    pub async fn connect(&self, req: &OutboundRequest) -> Result<HboneStream, HboneError> {
        let from = req
            .source_ip
            .and_then(|ip| self.sources.load().get(&ip).cloned());
        let key = PoolKey {
            source: req.source.clone(),
            destination: req.destination.clone(),
            addr: req.hbone_addr,
            src: from
                .as_ref()
                .and_then(|f| f.netns.as_ref())
                .and(req.source_ip),
        };
        let conn = match self.checkout(&key) {
            Some(c) => c,
            None => {
                let netns = from.as_ref().and_then(|f| f.netns.as_deref());
                self.checkout_or_dial(&key, req, netns).await?
            }
        };
        let guard = StreamGuard(conn.clone());
        let mut request = connect_request(req);
        if let Some(b) = from.and_then(|f| f.baggage) {
            request.headers_mut().insert(BAGGAGE, b);
        }
        let io = tokio::time::timeout(self.connect_timeout, conn.tx.open(request))
            .await
            .map_err(|_| HboneError::Timeout)??;
        Ok(HboneStream { io, _guard: guard })
    }

    fn checkout(&self, key: &PoolKey) -> Option<Arc<PooledConn>> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let conns = pool.get_mut(key)?;
        conns.retain(|c| !c.tx.is_closed());
        let c = conns.iter().find(|c| c.usable())?.clone();
        c.active.fetch_add(1, Ordering::Relaxed);
        Some(c)
    }

    /// [`Outbound::dial`] once per key at a time: waits for a dial to
    /// `key` in progress, then takes a connection from the pool if that
    /// dial (or another) left one with room, else dials. The wait is
    /// bounded by the connect timeout too (a destination whose dials hang
    /// fails each waiting connection within two timeouts, not after every
    /// dial before it).
    async fn checkout_or_dial(
        &self,
        key: &PoolKey,
        req: &OutboundRequest,
        from: Option<&InPodNetns>,
    ) -> Result<Arc<PooledConn>, HboneError> {
        let lock = self
            .dialing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let r = match tokio::time::timeout(self.connect_timeout, lock.lock()).await {
            Err(_) => Err(HboneError::Timeout),
            Ok(held) => {
                let r = match self.checkout(key) {
                    Some(c) => Ok(c),
                    None => self.dial(key, req, from).await,
                };
                drop(held);
                r
            }
        };
        let mut dialing = self.dialing.lock().unwrap_or_else(|e| e.into_inner());
        // Clones are only made under this lock: the map's and ours left
        // means nobody waits.
        if Arc::strong_count(&lock) == 2 {
            dialing.remove(key);
        }
        r
    }

    async fn dial(
        &self,
        key: &PoolKey,
        req: &OutboundRequest,
        from: Option<&InPodNetns>,
    ) -> Result<Arc<PooledConn>, HboneError> {
        let cert = self
            .certs
            .get(&req.source)
            .ok_or_else(|| HboneError::NoCertificate(req.source.to_string()))?;
        let mut expected = vec![req.destination.to_string()];
        expected.extend(req.extra_sans.iter().cloned());
        let cfg = tls::client_config(&cert, self.certs.root_store(), expected)?;
        let addr = req.hbone_addr;
        let tx = tokio::time::timeout(self.connect_timeout, async move {
            let tcp = match (from, key.src) {
                (Some(netns), Some(src)) => connect_from_pod(netns, src, addr).await?,
                _ => TcpStream::connect(addr).await?,
            };
            handshake_on(cfg, addr, tcp).await
        })
        .await
        .map_err(|_| HboneError::Timeout)??;
        let conn = Arc::new(PooledConn {
            tx,
            active: Arc::new(AtomicUsize::new(1)),
            last_used: Mutex::new(Instant::now()),
        });
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .push(conn.clone());
        Ok(conn)
    }

    /// Keeps only the pooled connections whose (source identity,
    /// destination identity, HBONE address) `keep` accepts; the others
    /// leave the pool (streams open on them finish).
    pub fn retain(&self, keep: impl Fn(&SpiffeId, &SpiffeId, SocketAddr) -> bool) {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| keep(&k.source, &k.destination, k.addr));
    }

    /// Keys with a dial in progress or waited for (for tests).
    #[cfg(test)]
    pub(crate) fn dials_in_progress(&self) -> usize {
        self.dialing.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Pool entries, open or not (for tests: the map never outgrows its
    /// destinations).
    pub fn pool_keys(&self) -> usize {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Drops closed connections and those idle longer than `idle`.
    fn sweep(&self, idle: Duration) {
        let now = Instant::now();
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.retain(|_, conns| {
            conns.retain(|c| !c.tx.is_closed() && c.idle_since().is_none_or(|t| now - t < idle));
            !conns.is_empty()
        });
    }
}

async fn sweeper(me: Weak<Outbound>) {
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let Some(me) = me.upgrade() else { return };
        me.sweep(POOL_IDLE_TIMEOUT);
    }
}

/// TCP connect, TLS handshake (ALPN `h2` required), HTTP/2 handshake with
/// ztunnel's client settings; the connection is driven by a spawned task.
#[cfg(test)]
pub(crate) async fn handshake(
    cfg: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> Result<Connection, HboneError> {
    handshake_on(cfg, addr, TcpStream::connect(addr).await?).await
}

/// A TCP connection to `dst` opened inside the source pod's network
/// namespace, bound to the pod's IP `src`: the destination sees the pod as
/// the peer, as with ztunnel's in-pod socket factory
/// (`ztunnel/src/inpod/config.rs`, `InPodSocketFactory`). The socket is
/// the daemon's (its cgroup), so the pod's socket programs do not see it.
async fn connect_from_pod(
    netns: &InPodNetns,
    src: IpAddr,
    dst: SocketAddr,
) -> std::io::Result<TcpStream> {
    let sock = netns.run(|| -> std::io::Result<std::net::TcpStream> {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(dst),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        s.set_nonblocking(true)?;
        s.bind(&SocketAddr::new(src, 0).into())?;
        Ok(s.into())
    })??;
    tokio::net::TcpSocket::from_std_stream(sock)
        .connect(dst)
        .await
}

/// One mTLS HTTP/2 connection to a destination's `:15008`, driven by a
/// spawned task; another sends its keep-alive PINGs and closes it when
/// one goes unanswered. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Connection {
    tx: h2::client::SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

impl Connection {
    /// Whether the connection has ended (its task returned), or the peer
    /// sent GOAWAY (no new stream is accepted on it).
    pub(crate) fn is_closed(&self) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return true;
        }
        let mut tx = self.tx.clone();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(tx.poll_ready(&mut cx), Poll::Ready(Err(_)))
    }

    /// Sends `request` (a `CONNECT`) and waits for the answer: the stream
    /// on 200, else [`HboneError::Status`].
    pub(crate) async fn open(&self, request: http::Request<()>) -> Result<H2Stream, HboneError> {
        let mut tx = self.tx.clone().ready().await?;
        let (resp, send) = tx.send_request(request, false)?;
        let resp = resp.await?;
        if resp.status() != http::StatusCode::OK {
            return Err(HboneError::Status(resp.status()));
        }
        Ok(H2Stream::new(send, resp.into_body()))
    }
}

/// Sets the flag when dropped (the connection task ended or was aborted).
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// TLS handshake on `tcp` (ALPN `h2` required), HTTP/2 handshake with
/// ztunnel's client settings (`ztunnel/src/proxy/h2/client.rs`); the
/// connection is driven by a spawned task.
async fn handshake_on(
    cfg: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    tcp: TcpStream,
) -> Result<Connection, HboneError> {
    let _ = tcp.set_nodelay(true);
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(HboneError::Tls)?;
    if tls.get_ref().1.alpn_protocol() != Some(tls::ALPN_H2) {
        return Err(HboneError::Alpn);
    }
    let (tx, mut conn) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .initial_max_send_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(16 * 1024)
        .max_send_buffer_size(STREAM_WINDOW as usize)
        .enable_push(false)
        .handshake::<_, Bytes>(tls)
        .await?;
    let ping = conn.ping_pong();
    let closed = Arc::new(AtomicBool::new(false));
    let done = SetOnDrop(closed.clone());
    let task = tokio::spawn(async move {
        let _done = done;
        if let Err(e) = conn.await {
            tracing::debug!(%addr, "HBONE connection ended: {e}");
        }
    });
    if let Some(ping) = ping {
        tokio::spawn(async move {
            keep_alive(ping, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT).await;
            task.abort();
        });
    }
    Ok(Connection { tx, closed })
}

/// The `baggage` request header (W3C Baggage; ztunnel's `BAGGAGE_HEADER`).
pub const BAGGAGE: http::HeaderName = http::HeaderName::from_static("baggage");
/// The `traceparent` request header (W3C Trace Context).
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// The `CONNECT` ztunnel sends (`ztunnel/src/proxy/outbound.rs`,
/// `create_hbone_request`): `:method CONNECT`, `:authority <ip:port>` (no
/// `:scheme`, no `:path`), `forwarded` and a fresh `traceparent` (one
/// random trace per tunnelled connection, as ztunnel's per-connection
/// `TraceParent::new()`). [`Outbound::connect`] adds the source's
/// `baggage`.
pub fn connect_request(req: &OutboundRequest) -> http::Request<()> {
    let mut b = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(req.target.to_string())
        .version(http::Version::HTTP_2);
    if let Some(f) = forwarded(req) {
        b = b.header(http::header::FORWARDED, f);
    }
    b = b.header(TRACEPARENT, traceparent());
    b.body(()).expect("valid CONNECT request")
}

/// A new `traceparent`: version 00, random 128-bit trace id and 64-bit
/// parent id, flags 00 (not sampled), as ztunnel's `TraceParent::new`.
pub fn traceparent() -> http::HeaderValue {
    let (trace, parent): (u128, u64) = (rand::random(), rand::random());
    let v = format!("00-{trace:032x}-{parent:016x}-00");
    http::HeaderValue::from_str(&v).expect("hex digits and dashes")
}

/// ztunnel's `baggage` value for a source workload
/// (`ztunnel/src/baggage.rs`, `baggage_header_val`): `k8s.cluster.name`,
/// `k8s.namespace.name`, `k8s.<workload type>.name`, `service.name`,
/// `service.version`, `cloud.region`, `cloud.availability_zone`, in this
/// order, empty ones left out. `None` when nothing is left or a value
/// cannot be a header.
pub fn baggage_value(fields: &[(&str, &str)]) -> Option<http::HeaderValue> {
    let v = fields
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    if v.is_empty() {
        return None;
    }
    http::HeaderValue::from_str(&v).ok()
}

fn forwarded(req: &OutboundRequest) -> Option<String> {
    let for_ = req.forwarded_for?;
    // Port 0: a pooled tunnel carrying many client connections of one pod.
    let mut v = if for_.port() == 0 {
        format!("for=\"{}\"", for_.ip())
    } else {
        format!("for=\"{for_}\"")
    };
    if let Some(h) = &req.service_host {
        v.push_str(";host=");
        v.push_str(h);
    }
    Some(v)
}

/// Counts a stream on its pooled connection until dropped.
struct StreamGuard(Arc<PooledConn>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        *self.0.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One tunnelled TCP connection: bytes written are DATA frames, shutdown
/// is END_STREAM (a half-close), END_STREAM or RST_STREAM NO_ERROR/CANCEL
/// from the peer reads as EOF.
pub struct HboneStream {
    io: H2Stream,
    _guard: StreamGuard,
}

impl std::fmt::Debug for HboneStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HboneStream").finish_non_exhaustive()
    }
}

impl AsyncRead for HboneStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for HboneStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
