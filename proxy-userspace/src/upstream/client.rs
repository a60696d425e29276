//! Upstream errors as Envoy's reset reasons, the PASSTHROUGH client, and
//! the types every pool shares (settings, what a send returns).
//!
//! Each endpoint has its own connection pool (`pool`) that always dials
//! that endpoint, so requests keep their real `:authority` / `Host` (as
//! Envoy sends them). PASSTHROUGH traffic uses a hyper-util client that
//! dials the URI's authority.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::proxy::body::{BoxError, ProxyBody};

/// Connection-pool settings other than the circuit-breaker limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// `tcp.connectTimeout` (Istio default 10 s).
    pub connect_timeout: Duration,
    /// `http.idleTimeout` (Istio default 1 h).
    pub idle_timeout: Duration,
    /// `http.maxRequestsPerConnection`; 0 = unlimited, 1 = no keep-alive.
    /// A connection is retired after this many requests (HTTP/2: streams).
    pub max_requests_per_connection: u32,
    /// `tcp.tcpKeepalive` set.
    pub tcp_keepalive: Option<Duration>,
    /// TLS origination (DestinationRule `SIMPLE`/`MUTUAL`), built with the
    /// cluster; `None`: plain TCP.
    pub tls: Option<crate::transport::origination::Origination>,
    /// The cluster's DestinationRule TLS mode and whether auto mTLS
    /// applies: with the mesh view, decides per connection between plain
    /// text, HBONE and refusal (`transport::hbone::mesh::route`, after
    /// [`strait_config::snapshot::MeshTlsPolicy::transport`]).
    pub mesh_tls: strait_config::snapshot::MeshTlsPolicy,
    /// Every request sent on these connections was checked against the
    /// endpoints' AuthorizationPolicy first (a route's cluster; not
    /// Envoy's `PassthroughCluster`): a captured local pod's policy port
    /// is then reached from inside the pod, not checked a second time by
    /// its policy listener ([`crate::transport::local_delivery`]).
    pub policy_checked: bool,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(3600),
            max_requests_per_connection: 0,
            tcp_keepalive: None,
            tls: None,
            mesh_tls: Default::default(),
            policy_checked: false,
        }
    }
}

/// A response from the pool and the local address of the connection that
/// carried it (`%UPSTREAM_LOCAL_ADDRESS%`).
pub struct Sent {
    /// The response; its body gives the connection back when read to the end.
    pub response: http::Response<ProxyBody>,
    /// Local address of the upstream connection.
    pub local: Option<SocketAddr>,
}

/// Why an upstream try failed before response headers, as Envoy's reset
/// reasons; the cause is kept as the error's source. Which response flag
/// and local reply each one becomes is decided in one place,
/// `serve/failure.rs`.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed or timed out (`UF`, reset reason
    /// `connection failure`).
    #[error("connection failure")]
    Connect(#[source] ConnectError),
    /// HTTP/2 REFUSED_STREAM (`refused-stream` retries).
    #[error("refused stream")]
    RefusedStream,
    /// Reset / disconnect before headers (`UC`, reset reason
    /// `connection termination`).
    #[error("connection termination")]
    Reset(#[source] BoxError),
}

/// Why a connection to an upstream could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connect timeout (`connectTimeout`) passed.
    #[error("connect timeout")]
    Timeout,
    /// The system refused (`ECONNREFUSED`, unreachable, ...).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The connection was made but the HTTP/2 (or upgrade) handshake failed.
    #[error("handshake")]
    Handshake(#[source] hyper::Error),
    /// Strait refused to connect (e.g. the endpoint is this node's own
    /// proxy or admin listener, `self_guard`).
    #[error("{0}")]
    Refused(&'static str),
    /// hyper-util's client could not connect (PASSTHROUGH).
    #[error("connect")]
    Client(#[source] BoxError),
}

impl UpstreamError {
    /// Envoy's `%UPSTREAM_TRANSPORT_FAILURE_REASON%` for a connect failure:
    /// the innermost cause's message (e.g. `Connection refused (os error
    /// 111)`, `connect timeout`).
    pub fn transport_failure_reason(&self) -> Option<String> {
        let Self::Connect(e) = self else { return None };
        let mut last: &dyn std::error::Error = e;
        while let Some(s) = last.source() {
            last = s;
        }
        Some(last.to_string())
    }
}

fn builder(pool: &PoolSettings, h2: bool) -> hyper_util::client::legacy::Builder {
    let idle_per_host = if pool.max_requests_per_connection == 1 {
        0
    } else {
        usize::MAX
    };
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(pool.idle_timeout)
        .pool_max_idle_per_host(idle_per_host)
        .pool_timer(TokioTimer::new())
        .set_host(false)
        .http2_only(h2);
    if h2 {
        b.timer(TokioTimer::new()).http2_adaptive_window(true);
    }
    b
}

/// Pools for PASSTHROUGH: dial whatever the URI's authority says (over
/// TLS when the cluster originates it).
#[derive(Clone, Debug)]
pub struct Clients {
    h1: Client<HttpConnector, ProxyBody>,
    h2: Client<HttpConnector, ProxyBody>,
    origin: Option<std::sync::Arc<crate::transport::origination::OriginClients<ProxyBody>>>,
}

impl Clients {
    /// Pools configured from the cluster's connection-pool settings.
    pub fn new(pool: &PoolSettings) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(pool.connect_timeout));
        conn.set_nodelay(true);
        conn.set_keepalive(pool.tcp_keepalive);
        conn.enforce_http(false);
        let origin = pool.tls.clone().map(|o| {
            let dial = crate::transport::origination::Dial {
                connect_timeout: pool.connect_timeout,
                idle_timeout: pool.idle_timeout,
                no_keep_alive: pool.max_requests_per_connection == 1,
                tcp_keepalive: pool.tcp_keepalive,
            };
            std::sync::Arc::new(crate::transport::origination::OriginClients::new(
                None, o, dial,
            ))
        });
        Self {
            h1: builder(pool, false).build(conn.clone()),
            h2: builder(pool, true).build(conn),
            origin,
        }
    }

    /// Sends `req` (absolute URI naming the destination address).
    pub async fn send(
        &self,
        http2: bool,
        req: http::Request<ProxyBody>,
    ) -> Result<Sent, UpstreamError> {
        let target = req.uri().authority().and_then(|a| a.as_str().parse().ok());
        if target.is_some_and(super::self_guard::is_self) {
            return Err(UpstreamError::Connect(ConnectError::Refused(
                super::self_guard::REFUSED,
            )));
        }
        if let Some(o) = &self.origin {
            let (resp, local) = o.send(http2, req).await.map_err(classify)?;
            return Ok(Sent {
                response: resp.map(|b| b.map_err(Into::into).boxed()),
                local,
            });
        }
        let client = if http2 { &self.h2 } else { &self.h1 };
        let resp = client.request(req).await.map_err(classify)?;
        let local = resp
            .extensions()
            .get::<hyper_util::client::legacy::connect::HttpInfo>()
            .map(|i| i.local_addr());
        Ok(Sent {
            response: resp.map(|b| b.map_err(Into::into).boxed()),
            local,
        })
    }
}

/// Envoy's reset reason for an error of hyper's connection-level client.
pub(crate) fn classify_hyper(e: hyper::Error) -> UpstreamError {
    if refused(&e) {
        return UpstreamError::RefusedStream;
    }
    UpstreamError::Reset(Box::new(e))
}

/// Whether an h2 REFUSED_STREAM is among `e`'s sources.
fn refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return true;
            }
        }
        src = s.source();
    }
    false
}

pub(crate) fn classify(e: hyper_util::client::legacy::Error) -> UpstreamError {
    if e.is_connect() {
        return UpstreamError::Connect(ConnectError::Client(Box::new(e)));
    }
    if refused(&e) {
        return UpstreamError::RefusedStream;
    }
    UpstreamError::Reset(Box::new(e))
}
