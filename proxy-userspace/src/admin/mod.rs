//! The admin API (default `127.0.0.1:15000`), with Envoy's admin paths:
//! `/ready`, `/healthz`, `/config_dump`, `/clusters`, `/certs`,
//! `/stats/prometheus` (also as `/metrics`, istiod's monitoring path).
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::transport::accept::AcceptBackoff;

/// What the admin API shows; the daemon implements it over its live state.
pub trait AdminSource: Send + Sync + 'static {
    /// Whether the daemon has loaded a config and its listeners are up.
    fn ready(&self) -> bool;
    /// The live snapshot as JSON (`/config_dump`).
    fn config_dump(&self) -> serde_json::Value;
    /// Envoy's `/clusters` text: one `cluster::endpoint::stat::value` line
    /// per endpoint statistic (health_flags, cx_active, rq_total, …).
    fn clusters(&self) -> String;
    /// Prometheus text exposition (`/stats/prometheus`).
    fn prometheus(&self) -> String;
    /// The node's workload certificates (`/certs`, like Envoy's `/certs`
    /// and `istioctl proxy-config secret`): identity, serial, validity,
    /// issuer chain, time to renewal. Never key material.
    fn certs(&self) -> serde_json::Value {
        no_certs()
    }
}

/// `/certs` when the daemon has no identity configured.
pub fn no_certs() -> serde_json::Value {
    serde_json::json!({ "certificates": [], "trust_bundle": [] })
}

/// Serves the admin API on `listener` until the task is dropped. A failed
/// `accept` is logged (once per run of failures) and retried after a
/// back-off instead of at once, as Envoy does, so file-descriptor
/// exhaustion does not spin a core.
pub async fn serve(listener: TcpListener, source: Arc<dyn AdminSource>) {
    let mut backoff = AcceptBackoff::new("admin listener");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.accepted();
                stream
            }
            Err(e) => {
                backoff.failed(&e).await;
                continue;
            }
        };
        let source = source.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let source = source.clone();
                async move { Ok::<_, Infallible>(handle(&*source, &req)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Binds the admin address, failing with a message that names it.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::from_std(bind_std(addr)?)
        .map_err(|e| anyhow::anyhow!("admin listener {addr}: {e}"))
}

/// [`bind`] without a runtime: a non-blocking std listener, for binding
/// before the daemon drops its privileges and starts its runtime.
pub fn bind_std(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| {
        anyhow::anyhow!("cannot listen on admin address {addr}: {e} (is another strait or Envoy running? pass --admin ADDR)")
    })?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn handle(source: &dyn AdminSource, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        );
    }
    match req.uri().path() {
        // Envoy answers LIVE / PRE_INITIALIZING.
        "/ready" if source.ready() => text(StatusCode::OK, "LIVE\n".into()),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "PRE_INITIALIZING\n".into()),
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/config_dump" => {
            let body = serde_json::to_string_pretty(&source.config_dump()).unwrap_or_default();
            respond(StatusCode::OK, "application/json", body)
        }
        "/clusters" => text(StatusCode::OK, source.clusters()),
        "/certs" => {
            let body = serde_json::to_string_pretty(&source.certs()).unwrap_or_default();
            respond(StatusCode::OK, "application/json", body)
        }
        "/stats/prometheus" | "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            source.prometheus(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "paths: /ready /healthz /config_dump /clusters /certs /stats/prometheus\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body)
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}
