//! Pooled HTTP clients to one endpoint over originated TLS: hyper-util's
//! pooling client with a connector that always dials the endpoint, then
//! runs the cluster's TLS handshake. HTTP/1.1 keeps idle connections,
//! HTTP/2 shares one, both closed after the cluster's idle timeout.
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{Origination, OriginationError};

/// The local address of the connection that carried a response (in the
/// response's extensions; Envoy's `%UPSTREAM_LOCAL_ADDRESS%`).
#[derive(Clone, Copy, Debug)]
pub struct LocalAddr(pub SocketAddr);

/// One originated TLS connection.
pub struct TlsConn(TlsStream<TcpStream>);

impl Connection for TlsConn {
    fn connected(&self) -> Connected {
        let (tcp, session) = self.0.get_ref();
        let mut c = Connected::new();
        if let Ok(local) = tcp.local_addr() {
            c = c.extra(LocalAddr(local));
        }
        if session.alpn_protocol() == Some(b"h2") {
            c = c.negotiated_h2();
        }
        c
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// How to dial the endpoint (the cluster's connection-pool settings).
#[derive(Clone, Copy, Debug)]
pub struct Dial {
    /// `tcp.connectTimeout`: TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// `http.idleTimeout`.
    pub idle_timeout: Duration,
    /// `http.maxRequestsPerConnection == 1`: no keep-alive.
    pub no_keep_alive: bool,
    /// `tcp.tcpKeepalive` time.
    pub tcp_keepalive: Option<Duration>,
}

/// Dials one address (or, without one, the request URI's authority: the
/// PASSTHROUGH cluster's original destination) with TLS.
#[derive(Clone)]
struct Connector {
    addr: Option<SocketAddr>,
    origination: Origination,
    dial: Dial,
}

impl Origination {
    /// TCP connect to `addr` and the handshake, within `timeout`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        keepalive: Option<Duration>,
    ) -> Result<TlsStream<TcpStream>, OriginationError> {
        if let Some(e) = self.error() {
            return Err(OriginationError::Config(e.into()));
        }
        tokio::time::timeout(timeout, async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(OriginationError::Connect)?;
            let _ = tcp.set_nodelay(true);
            if let Some(ka) = keepalive {
                let sock = socket2::SockRef::from(&tcp);
                let _ = sock.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(ka));
            }
            self.handshake(tcp).await
        })
        .await
        .map_err(|_| OriginationError::Timeout)?
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<TlsConn>;
    type Error = OriginationError;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, OriginationError>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            let addr = match me.addr {
                Some(a) => a,
                None => uri
                    .authority()
                    .and_then(|a| a.as_str().parse().ok())
                    .ok_or_else(|| {
                        OriginationError::Config(
                            format!("no address to connect to in {uri}").into(),
                        )
                    })?,
            };
            let s = me
                .origination
                .connect(addr, me.dial.connect_timeout, me.dial.tcp_keepalive)
                .await?;
            Ok(TokioIo::new(TlsConn(s)))
        })
    }
}

/// HTTP/1.1 and HTTP/2 pools to one endpoint (or, for PASSTHROUGH, to
/// each request's authority) over originated TLS.
pub struct OriginClients<B> {
    addr: Option<SocketAddr>,
    h1: Client<Connector, B>,
    h2: Client<Connector, B>,
}

impl<B> std::fmt::Debug for OriginClients<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginClients")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl<B> OriginClients<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Empty pools to `addr` (`None`: to each request URI's authority,
    /// which must then be an `IP:port`).
    pub fn new(addr: Option<SocketAddr>, origination: Origination, dial: Dial) -> Self {
        let connector = Connector {
            addr,
            origination,
            dial,
        };
        let builder = |h2: bool| {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(dial.idle_timeout)
                .pool_max_idle_per_host(if dial.no_keep_alive { 0 } else { usize::MAX })
                .pool_timer(TokioTimer::new())
                .set_host(false)
                .http2_only(h2);
            if h2 {
                b.timer(TokioTimer::new()).http2_adaptive_window(true);
            }
            b.build(connector.clone())
        };
        Self {
            addr,
            h1: builder(false),
            h2: builder(true),
        }
    }

    /// Sends `req` (origin-form or absolute URI; the `Host` header or the
    /// URI's authority is kept as it is) over HTTP/2 when `http2`, else
    /// HTTP/1.1. Returns the response and the connection's local address.
    pub async fn send(
        &self,
        http2: bool,
        mut req: http::Request<B>,
    ) -> Result<
        (http::Response<hyper::body::Incoming>, Option<SocketAddr>),
        hyper_util::client::legacy::Error,
    > {
        // The pooling client keys connections by scheme and authority:
        // give it an absolute `https` URI (HTTP/1.1 still goes out in
        // origin form, HTTP/2 with this `:authority`).
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTPS);
        if parts.authority.is_none() {
            parts.authority = self.addr.and_then(|a| a.to_string().parse().ok());
        }
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        *req.uri_mut() = http::Uri::from_parts(parts).unwrap_or_default();
        let client = if http2 { &self.h2 } else { &self.h1 };
        let resp = client.request(req).await?;
        let local = resp.extensions().get::<LocalAddr>().map(|l| l.0);
        Ok((resp, local))
    }
}
