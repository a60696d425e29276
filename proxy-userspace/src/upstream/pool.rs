//! Connection pool to one upstream host: HTTP/1.1 on Strait's own client
//! codec (`proxy::h1`, driven by the request's task), HTTP/2 and upgrades
//! on hyper's connection-level clients (`hyper::client::conn`).
//!
//! - HTTP/1.1: an idle list of keep-alive connections, most recently used
//!   first. A connection goes back to the list when its response body has
//!   been read to the end (not when it is dropped half-read), so the list
//!   only holds connections that can carry a new request.
//! - HTTP/2: one shared connection multiplexing every request, as Envoy's
//!   HTTP/2 pool (a new one after `maxRequestsPerConnection` streams or when
//!   it closes).
//! - `http.idleTimeout`: a sweeper closes connections idle longer than that
//!   (it runs only while there are idle connections).
//! - `http.maxRequestsPerConnection`: a connection is retired after that
//!   many requests (1 = no keep-alive).
//! - A bodiless request that got no byte of response because a pooled
//!   connection had just been closed by the upstream is sent once more on a
//!   new connection, as Envoy's pool does for a stale keep-alive connection;
//!   before a request with a body goes on a pooled connection, one
//!   non-blocking read checks that the upstream has not closed it.
//!
//! The circuit-breaker limits (`maxConnections`, pending requests) are
//! enforced before a request gets here (see `cluster::limits`).
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http_body::Body;
use http_body_util::BodyExt;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::proxy::body::{BoxError, ProxyBody};
use crate::proxy::h1::body::{ResponseBody, Reuse};
use crate::proxy::h1::conn::SendError;
use crate::proxy::h1::{self, Conn};
use crate::transport::hbone::{MeshOutbound, Tunnel};
use crate::transport::origination::{Dial, OriginClients};
pub use crate::upstream::client::Sent;
use crate::upstream::client::{classify_hyper, ConnectError, PoolSettings, UpstreamError};

/// The L7 pool of one HBONE tunnel (source pod, destination identity and
/// address): requests of different source pods never share a connection,
/// since each is presented with its own workload certificate. One map per
/// process ([`TunnelPools`]), pruned as it is used.
pub fn tunnel_pool(mesh: &Arc<MeshOutbound>, tunnel: Tunnel, settings: &PoolSettings) -> Pool {
    static POOLS: std::sync::OnceLock<TunnelPools> = std::sync::OnceLock::new();
    POOLS
        .get_or_init(|| TunnelPools::new(crate::transport::hbone::settings::POOL_IDLE_TIMEOUT))
        .get(mesh, tunnel, settings)
}

/// How often [`TunnelPools`] looks for pools to drop when the mesh view
/// has not changed.
const TUNNEL_PRUNE_INTERVAL: Duration = Duration::from_secs(30);

/// The L7 pools of the HBONE tunnels, keyed by [`Tunnel`]. The map never
/// outgrows the tunnels in use: when the mesh view changes, and at most
/// every 30 s otherwise, a lookup first drops the pools the view no longer
/// allows (the destination left the snapshot or changed identity, the
/// source pod left the node: [`MeshOutbound::allows`]) and those unused
/// for longer than `idle` (ztunnel's pool idle timeout, 5 min) with no
/// request in flight. Dropping a pool closes its idle connections, which
/// ends their `CONNECT` streams.
pub struct TunnelPools {
    idle: Duration,
    state: Mutex<TunnelPoolsState>,
}

struct TunnelPoolsState {
    pools: std::collections::HashMap<Tunnel, (Pool, std::time::Instant)>,
    pruned_at: std::time::Instant,
    generation: u64,
}

impl TunnelPools {
    /// An empty map whose pools are dropped after `idle` without use.
    pub fn new(idle: Duration) -> Self {
        Self {
            idle,
            state: Mutex::new(TunnelPoolsState {
                pools: Default::default(),
                pruned_at: std::time::Instant::now(),
                generation: 0,
            }),
        }
    }

    /// The pool of `tunnel` (made with `settings` if new), after pruning
    /// when due.
    pub fn get(&self, mesh: &Arc<MeshOutbound>, tunnel: Tunnel, settings: &PoolSettings) -> Pool {
        let now = std::time::Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let generation = mesh.generation();
        if generation != st.generation || now.duration_since(st.pruned_at) >= TUNNEL_PRUNE_INTERVAL
        {
            st.generation = generation;
            st.pruned_at = now;
            Self::prune_locked(&mut st, mesh, self.idle, now);
        }
        let entry = st
            .pools
            .entry(tunnel.clone())
            .or_insert_with(|| (Pool::through(mesh.clone(), tunnel, settings), now));
        entry.1 = now;
        entry.0.clone()
    }

    /// Drops the pools `mesh` no longer allows and those idle for longer
    /// than the idle timeout at `now` (see the type's doc).
    #[cfg(test)]
    pub fn prune(&self, mesh: &MeshOutbound, now: std::time::Instant) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.pruned_at = now;
        Self::prune_locked(&mut st, mesh, self.idle, now);
    }

    fn prune_locked(
        st: &mut TunnelPoolsState,
        mesh: &MeshOutbound,
        idle: Duration,
        now: std::time::Instant,
    ) {
        st.pools.retain(|t, (pool, used)| {
            // Only the map holds it: no request or response body in flight.
            let unused = Arc::strong_count(&pool.inner) == 1;
            mesh.allows(t) && !(unused && now.saturating_duration_since(*used) > idle)
        });
    }

    /// Tunnels with a pool.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pools
            .len()
    }
}

/// The shared HTTP/2 connection.
struct H2Conn {
    tx: http2::SendRequest<ProxyBody>,
    local: Option<SocketAddr>,
    streams: u32,
    last_used: Duration,
}

/// State shared with response bodies (which give connections back) and
/// the idle sweeper.
struct Inner {
    addr: SocketAddr,
    settings: PoolSettings,
    /// Boxed: a connection moves between this list, the request and its
    /// response body on every request; a box moves as one pointer.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<Conn>>>,
    h2: Mutex<Option<H2Conn>>,
    /// Held while dialing the HTTP/2 connection so concurrent first
    /// requests share one.
    h2_dial: tokio::sync::Mutex<()>,
    sweeping: AtomicBool,
    /// TLS origination: every request goes through these instead.
    origin: Option<OriginClients<ProxyBody>>,
    /// Set for a pool whose connections go through an HBONE tunnel.
    via: Option<(Arc<MeshOutbound>, Tunnel)>,
}

/// HTTP/1.1 and HTTP/2 connections to one endpoint.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// An empty pool to `addr` with the cluster's settings.
    pub fn new(addr: SocketAddr, settings: &PoolSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                addr,
                settings: settings.clone(),
                idle: Mutex::new(Vec::new()),
                h2: Mutex::new(None),
                h2_dial: tokio::sync::Mutex::new(()),
                sweeping: AtomicBool::new(false),
                origin: settings.tls.clone().map(|o| {
                    let dial = Dial {
                        connect_timeout: settings.connect_timeout,
                        idle_timeout: settings.idle_timeout,
                        no_keep_alive: settings.max_requests_per_connection == 1,
                        tcp_keepalive: settings.tcp_keepalive,
                    };
                    OriginClients::new(Some(addr), o, dial)
                }),
                via: None,
            }),
        }
    }

    /// A pool whose connections are HBONE `CONNECT` streams for `tunnel`
    /// (mutual TLS to the destination pod), one per process and tunnel
    /// (see [`tunnel_pool`]).
    fn through(mesh: Arc<MeshOutbound>, tunnel: Tunnel, settings: &PoolSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                addr: tunnel.dst,
                settings: settings.clone(),
                idle: Mutex::new(Vec::new()),
                h2: Mutex::new(None),
                h2_dial: tokio::sync::Mutex::new(()),
                sweeping: AtomicBool::new(false),
                origin: None,
                via: Some((mesh, tunnel)),
            }),
        }
    }

    /// Sends `req` over HTTP/2 when `http2`, else HTTP/1.1. The URI must
    /// carry the authority for HTTP/2 (`:authority`); HTTP/1.1 sends the
    /// path and query (origin form) with the request's own `Host`.
    pub async fn send(
        &self,
        http2: bool,
        req: http::Request<ProxyBody>,
    ) -> Result<Sent, UpstreamError> {
        if self.inner.origin.is_some() {
            return Box::pin(self.send_originated(http2, req)).await;
        }
        if http2 {
            self.send_h2(req).await
        } else {
            self.send_h1(req).await
        }
    }

    async fn send_h1(&self, req: http::Request<ProxyBody>) -> Result<Sent, UpstreamError> {
        if req.headers().contains_key(http::header::UPGRADE) {
            return Box::pin(self.send_upgrade(req)).await;
        }
        let (parts, body) = req.into_parts();
        // Origin form on the wire: `GET /path HTTP/1.1` plus `Host`.
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let headers = crate::proxy::head::ReqHeaders::Map(parts.headers);
        self.send_h1_parts(&parts.method, pq, &headers, body).await
    }

    /// Sends a request over HTTP/1.1 in origin form (`path_and_query`, and
    /// `Host` among `headers`), borrowing the head so that a caller that
    /// may retry keeps it without a copy. No `Upgrade` requests (see
    /// [`Pool::send`]).
    pub async fn send_h1_parts(
        &self,
        method: &http::Method,
        path_and_query: &str,
        headers: &crate::proxy::head::ReqHeaders,
        body: ProxyBody,
    ) -> Result<Sent, UpstreamError> {
        if self.inner.origin.is_some() {
            let mut req = http::Request::new(body);
            *req.method_mut() = method.clone();
            *req.uri_mut() = path_and_query
                .parse()
                .map_err(|e| UpstreamError::Reset(Box::new(e)))?;
            *req.headers_mut() = headers.to_map();
            return Box::pin(self.send_originated(false, req)).await;
        }
        // A bodiless request can go again on a new connection if a pooled
        // one turns out closed; one with a body is checked before sending.
        let replayable = body.is_end_stream();
        // Dialing is boxed: it is rare, and its futures (connect, timer)
        // would otherwise make every request's future bigger.
        let mut fresh = false;
        let mut conn = match self.checkout_h1(!replayable) {
            Some(c) => c,
            None => {
                fresh = true;
                Box::pin(self.dial_h1()).await?
            }
        };
        let mut body = Some(body);
        loop {
            let b = body.take().unwrap_or_else(crate::proxy::body::empty);
            match conn.send(method, path_and_query, headers, b).await {
                Ok(head) => {
                    conn.served += 1;
                    return Ok(self.h1_response(head, conn));
                }
                // The pooled connection had been closed by the upstream:
                // once more on a new one, as Envoy's pool does.
                Err(SendError::Closed(_)) if !fresh && replayable => {
                    fresh = true;
                    conn = Box::pin(self.dial_h1()).await?;
                }
                Err(e) => return Err(UpstreamError::Reset(Box::new(e))),
            }
        }
    }

    /// TLS origination (`transport::origination`): a failed connect or
    /// handshake is a connect failure (`UF`) with its reason.
    async fn send_originated(
        &self,
        http2: bool,
        req: http::Request<ProxyBody>,
    ) -> Result<Sent, UpstreamError> {
        if super::self_guard::is_self(self.inner.addr) {
            return Err(UpstreamError::Connect(ConnectError::Refused(
                super::self_guard::REFUSED,
            )));
        }
        let origin = self.inner.origin.as_ref().expect("checked by the caller");
        let (resp, local) = origin
            .send(http2, req)
            .await
            .map_err(super::client::classify)?;
        Ok(Sent {
            response: resp.map(|b| b.map_err(BoxError::from).boxed()),
            local,
        })
    }

    fn h1_response(&self, head: h1::response::Head, conn: Box<Conn>) -> Sent {
        let local = conn.local;
        let max = self.inner.settings.max_requests_per_connection;
        let keep_alive = head.keep_alive && (max == 0 || conn.served < max);
        let home = keep_alive.then(|| Home(Arc::downgrade(&self.inner)));
        let body = ResponseBody::new(conn, head.body, keep_alive, home);
        let mut response = http::Response::new(BodyExt::boxed(body));
        *response.status_mut() = head.status;
        *response.headers_mut() = head.headers;
        Sent { response, local }
    }

    /// The most recently used idle connection that is still open; with
    /// `probe`, one that has been checked not to be closed by the upstream.
    fn checkout_h1(&self, probe: bool) -> Option<Box<Conn>> {
        let timeout = self.inner.settings.idle_timeout;
        loop {
            let c = self.inner.idle.lock().expect("pool lock").pop()?;
            if now().saturating_sub(c.since) >= timeout || (probe && c.is_closed()) {
                continue;
            }
            return Some(c);
        }
    }

    async fn dial(&self) -> Result<TcpStream, UpstreamError> {
        let addr = self.inner.addr;
        if super::self_guard::is_self(addr) {
            return Err(UpstreamError::Connect(ConnectError::Refused(
                super::self_guard::REFUSED,
            )));
        }
        let connect = async {
            match &self.inner.via {
                Some((mesh, tunnel)) => mesh.bridge(tunnel).await,
                None => {
                    let checked = self.inner.settings.policy_checked;
                    crate::transport::local_delivery::connect(addr, checked).await
                }
            }
        };
        let stream = match tokio::time::timeout(self.inner.settings.connect_timeout, connect).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(UpstreamError::Connect(e.into())),
            Err(_) => return Err(UpstreamError::Connect(ConnectError::Timeout)),
        };
        let _ = stream.set_nodelay(true);
        if let Some(ka) = self.inner.settings.tcp_keepalive {
            let sock = socket2::SockRef::from(&stream);
            let _ = sock.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(ka));
        }
        Ok(stream)
    }

    async fn dial_h1(&self) -> Result<Box<Conn>, UpstreamError> {
        Ok(Box::new(Conn::new(self.dial().await?)))
    }

    /// A WebSocket (or other `Upgrade`) request: its own connection through
    /// hyper's client, which hands over the upgraded stream.
    async fn send_upgrade(&self, req: http::Request<ProxyBody>) -> Result<Sent, UpstreamError> {
        let stream = self.dial().await?;
        let local = stream.local_addr().ok();
        let (mut tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect(ConnectError::Handshake(e)))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let resp = tx.send_request(req).await.map_err(classify_hyper)?;
        Ok(Sent {
            response: resp.map(|b| b.map_err(BoxError::from).boxed()),
            local,
        })
    }

    async fn send_h2(&self, req: http::Request<ProxyBody>) -> Result<Sent, UpstreamError> {
        let (mut tx, local) = match self.checkout_h2() {
            Some(c) => c,
            None => Box::pin(self.dial_h2()).await?,
        };
        let resp = tx.send_request(req).await.map_err(classify_hyper)?;
        Ok(Sent {
            response: resp.map(|b| b.map_err(BoxError::from).boxed()),
            local,
        })
    }

    /// The shared HTTP/2 connection, when open and under its stream budget.
    fn checkout_h2(&self) -> Option<(http2::SendRequest<ProxyBody>, Option<SocketAddr>)> {
        let max = self.inner.settings.max_requests_per_connection;
        let mut slot = self.inner.h2.lock().expect("pool lock");
        let c = slot.as_mut()?;
        if c.tx.is_closed() || (max != 0 && c.streams >= max) {
            *slot = None;
            return None;
        }
        c.streams += 1;
        c.last_used = now();
        Some((c.tx.clone(), c.local))
    }

    async fn dial_h2(
        &self,
    ) -> Result<(http2::SendRequest<ProxyBody>, Option<SocketAddr>), UpstreamError> {
        let _dialing = self.inner.h2_dial.lock().await;
        // Someone else may have connected while we waited.
        if let Some(c) = self.checkout_h2() {
            return Ok(c);
        }
        let stream = self.dial().await?;
        let local = stream.local_addr().ok();
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect(ConnectError::Handshake(e)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        *self.inner.h2.lock().expect("pool lock") = Some(H2Conn {
            tx: tx.clone(),
            local,
            streams: 1,
            last_used: now(),
        });
        self.inner.start_sweeper();
        Ok((tx, local))
    }
}

impl Inner {
    fn checkin(self: &Arc<Self>, mut conn: Box<Conn>) {
        conn.since = now();
        self.idle.lock().expect("pool lock").push(conn);
        self.start_sweeper();
    }

    /// Starts the idle sweeper unless it runs already. It closes
    /// connections idle for `idleTimeout` and stops when none are left.
    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.sweeping.store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(self);
        let timeout = self.settings.idle_timeout;
        // Close within a quarter of the timeout after it passes, and
        // notice connections the upstream closed within seconds.
        let tick = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
        rt.spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(inner) = weak.upgrade() else { return };
                if !inner.sweep(timeout) {
                    inner.sweeping.store(false, Ordering::Release);
                    // A checkin may have raced the store: look once more.
                    if inner.is_empty() || inner.sweeping.swap(true, Ordering::AcqRel) {
                        return;
                    }
                }
            }
        });
    }

    /// Drops expired connections; whether any remain.
    fn sweep(&self, timeout: Duration) -> bool {
        let mut idle = self.idle.lock().expect("pool lock");
        idle.retain(|c| now().saturating_sub(c.since) < timeout && !c.is_closed());
        let mut h2 = self.h2.lock().expect("pool lock");
        if h2
            .as_ref()
            .is_some_and(|c| c.tx.is_closed() || now().saturating_sub(c.last_used) >= timeout)
        {
            *h2 = None;
        }
        !idle.is_empty() || h2.is_some()
    }

    fn is_empty(&self) -> bool {
        self.idle.lock().expect("pool lock").is_empty()
            && self.h2.lock().expect("pool lock").is_none()
    }
}

/// A monotonic clock with a few milliseconds' resolution
/// (`CLOCK_MONOTONIC_COARSE`): idle times need no better, and it is read
/// on every request without touching the TSC.
fn now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Where a finished HTTP/1.1 response gives its connection back.
struct Home(Weak<Inner>);

impl Reuse for Home {
    fn reuse(&self, conn: Box<Conn>) {
        if let Some(pool) = self.0.upgrade() {
            pool.checkin(conn);
        }
    }
}

#[cfg(test)]
mod tunnel_pool_tests {
    use std::net::IpAddr;
    use std::time::Instant;

    use super::*;
    use crate::identity::{CertStore, SpiffeId};
    use crate::transport::hbone::MeshView;

    fn id(sa: &str) -> SpiffeId {
        SpiffeId::new("cluster.local", "ns", sa)
    }

    fn view(local: &[(&str, &str)], meshed: &[(&str, &str)]) -> MeshView {
        let m = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(ip, sa)| (ip.parse::<IpAddr>().unwrap(), id(sa)))
                .collect()
        };
        MeshView {
            local: m(local),
            meshed: m(meshed),
            auto_mtls_off: false,
        }
    }

    fn tunnel(src: &str, sa: &str, dst: &str, dsa: &str) -> Tunnel {
        Tunnel {
            source_ip: src.parse().unwrap(),
            source: id(sa),
            destination: id(dsa),
            dst: SocketAddr::new(dst.parse().unwrap(), 8080),
        }
    }

    #[tokio::test]
    async fn tunnel_pools_drop_destinations_that_left_the_view_and_idle_ones() {
        let mesh = MeshOutbound::new(CertStore::new(Vec::new()));
        mesh.set_view(view(
            &[("10.0.0.1", "client")],
            &[("10.0.0.1", "client"), ("10.0.1.1", "a"), ("10.0.1.2", "b")],
        ));
        let pools = TunnelPools::new(Duration::from_secs(300));
        let s = PoolSettings::default();
        let to_a = tunnel("10.0.0.1", "client", "10.0.1.1", "a");
        let to_b = tunnel("10.0.0.1", "client", "10.0.1.2", "b");
        let held_a = pools.get(&mesh, to_a.clone(), &s);
        drop(pools.get(&mesh, to_b.clone(), &s));
        // The same tunnel reuses its pool.
        drop(pools.get(&mesh, to_a.clone(), &s));
        assert_eq!(pools.len(), 2);

        // `b` leaves the snapshot: the next lookup (the view changed)
        // drops its pool, and `a`'s stays.
        mesh.set_view(view(
            &[("10.0.0.1", "client")],
            &[("10.0.0.1", "client"), ("10.0.1.1", "a")],
        ));
        drop(pools.get(&mesh, to_a.clone(), &s));
        assert_eq!(pools.len(), 1);

        // A destination address that now has another identity is not
        // reached through the old tunnel's pool either.
        mesh.set_view(view(
            &[("10.0.0.1", "client")],
            &[("10.0.0.1", "client"), ("10.0.1.1", "other")],
        ));
        pools.prune(&mesh, Instant::now());
        assert_eq!(pools.len(), 0);

        // Idle past the timeout: dropped, unless a request holds the pool.
        mesh.set_view(view(
            &[("10.0.0.1", "client")],
            &[("10.0.0.1", "client"), ("10.0.1.1", "a"), ("10.0.1.2", "b")],
        ));
        drop(held_a);
        let held_a = pools.get(&mesh, to_a.clone(), &s);
        drop(pools.get(&mesh, to_b.clone(), &s));
        let later = Instant::now() + Duration::from_secs(301);
        pools.prune(&mesh, later);
        assert_eq!(pools.len(), 1, "the held pool stays, the idle one goes");
        drop(held_a);
        pools.prune(&mesh, later);
        assert_eq!(pools.len(), 0);
        // Before the timeout nothing idle is dropped.
        drop(pools.get(&mesh, to_a, &s));
        pools.prune(&mesh, Instant::now() + Duration::from_secs(299));
        assert_eq!(pools.len(), 1);
    }
}
