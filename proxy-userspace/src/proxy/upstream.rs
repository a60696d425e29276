//! HTTP connection pools to upstream hosts (hyper-util's pooled client, one
//! per cluster and HTTP version), and the classification of their errors
//! into Envoy's reset reasons.
use std::error::Error as _;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::ProxyBody;
use super::cluster::PoolSettings;

/// The pools of one cluster. Requests carry the endpoint as the URI
/// authority, so each endpoint has its own idle connections.
#[derive(Clone, Debug)]
pub struct Clients {
    h1: Client<HttpConnector, ProxyBody>,
    h2: Client<HttpConnector, ProxyBody>,
}

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

impl Clients {
    /// Pools configured from the cluster's connection-pool settings.
    pub fn new(pool: &PoolSettings) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(pool.connect_timeout));
        conn.set_nodelay(true);
        conn.set_keepalive(pool.tcp_keepalive);
        conn.enforce_http(false);
        let idle_per_host = if pool.max_requests_per_connection == 1 {
            0
        } else {
            usize::MAX
        };
        let build = |h2: bool| {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(pool.idle_timeout)
                .pool_max_idle_per_host(idle_per_host)
                .pool_timer(TokioTimer::new())
                .set_host(false)
                .http2_only(h2);
            if h2 {
                b.timer(TokioTimer::new())
                    .http2_keep_alive_interval(Some(Duration::from_secs(300)))
                    .http2_adaptive_window(true);
            }
            b.build(conn.clone())
        };
        Self {
            h1: build(false),
            h2: build(true),
        }
    }

    /// Sends `req` (absolute URI naming the endpoint) over HTTP/2 when
    /// `http2`, else HTTP/1.1.
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
