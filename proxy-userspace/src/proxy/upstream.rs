//! HTTP connection pools to upstream hosts and the classification of their
//! errors into Envoy's reset reasons.
//!
//! Each endpoint has its own pooled hyper-util client whose connector
//! always dials that endpoint, so requests keep their real `:authority` /
//! `Host` (as Envoy sends them) while connections are still pooled per
//! host. PASSTHROUGH traffic uses a client that dials the URI's authority.
use std::error::Error as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::body::ProxyBody;
use super::cluster::PoolSettings;

/// Local address of the upstream connection, in the response extensions
/// (`%UPSTREAM_LOCAL_ADDRESS%`).
#[derive(Clone, Copy, Debug)]
pub struct UpstreamLocal(pub SocketAddr);

/// Why an upstream try failed before response headers.
#[derive(Debug)]
pub enum UpstreamError {
    /// TCP connect failed or timed out (`UF`, reset reason
    /// `connection failure`).
    Connect(String),
    /// HTTP/2 REFUSED_STREAM (`refused-stream` retries).
    RefusedStream,
    /// Reset / disconnect before headers (`UC`, reset reason
    /// `connection termination`).
    Reset(String),
}

/// A connector that dials one fixed address whatever the URI says.
#[derive(Clone, Debug)]
pub struct FixedConnector {
    addr: SocketAddr,
    connect_timeout: Duration,
}

/// An upstream TCP connection.
pub struct UpstreamConn {
    io: TokioIo<TcpStream>,
    local: Option<SocketAddr>,
}

impl tower_service::Service<http::Uri> for FixedConnector {
    type Response = UpstreamConn;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<UpstreamConn>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let (addr, timeout) = (self.addr, self.connect_timeout);
        Box::pin(async move {
            let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout")
                })??;
            stream.set_nodelay(true)?;
            let local = stream.local_addr().ok();
            Ok(UpstreamConn {
                io: TokioIo::new(stream),
                local,
            })
        })
    }
}

impl Connection for UpstreamConn {
    fn connected(&self) -> Connected {
        let c = Connected::new();
        match self.local {
            Some(l) => c.extra(UpstreamLocal(l)),
            None => c,
        }
    }
}

impl hyper::rt::Read for UpstreamConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamConn {
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

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
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

/// HTTP/1.1 and HTTP/2 pools to one endpoint.
#[derive(Clone, Debug)]
pub struct EndpointClients {
    h1: Client<FixedConnector, ProxyBody>,
    h2: Client<FixedConnector, ProxyBody>,
}

impl EndpointClients {
    /// Pools to `addr` with the cluster's settings.
    pub fn new(addr: SocketAddr, pool: &PoolSettings) -> Self {
        let conn = FixedConnector {
            addr,
            connect_timeout: pool.connect_timeout,
        };
        Self {
            h1: builder(pool, false).build(conn.clone()),
            h2: builder(pool, true).build(conn),
        }
    }

    /// Sends `req` (any absolute URI: it names the authority, not the
    /// address) over HTTP/2 when `http2`, else HTTP/1.1.
    pub async fn send(
        &self,
        http2: bool,
        req: http::Request<ProxyBody>,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        let client = if http2 { &self.h2 } else { &self.h1 };
        client.request(req).await.map_err(classify)
    }
}

/// Pools for PASSTHROUGH: dial whatever the URI's authority says.
#[derive(Clone, Debug)]
pub struct Clients {
    h1: Client<HttpConnector, ProxyBody>,
    h2: Client<HttpConnector, ProxyBody>,
}

impl Clients {
    /// Pools configured from the cluster's connection-pool settings.
    pub fn new(pool: &PoolSettings) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(pool.connect_timeout));
        conn.set_nodelay(true);
        conn.set_keepalive(pool.tcp_keepalive);
        conn.enforce_http(false);
        Self {
            h1: builder(pool, false).build(conn.clone()),
            h2: builder(pool, true).build(conn),
        }
    }

    /// Sends `req` (absolute URI naming the destination address).
    pub async fn send(
        &self,
        http2: bool,
        req: http::Request<ProxyBody>,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        let client = if http2 { &self.h2 } else { &self.h1 };
        client.request(req).await.map_err(classify)
    }
}

fn classify(e: hyper_util::client::legacy::Error) -> UpstreamError {
    if e.is_connect() {
        let mut reason = String::new();
        let mut src = e.source();
        while let Some(s) = src {
            reason = s.to_string();
            src = s.source();
        }
        return UpstreamError::Connect(reason);
    }
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return UpstreamError::RefusedStream;
            }
        }
        src = s.source();
    }
    UpstreamError::Reset(e.to_string())
}
