//! CUSTOM AuthorizationPolicies: the external authorizer named by their
//! `provider`, from the mesh config's `extensionProviders`
//! (`envoyExtAuthzHttp`), asked over HTTP/1.1 as Envoy's `ext_authz` HTTP
//! filter asks its `http_service` in the configuration Istio generates
//! (`pilot/pkg/security/authz/builder/extauthz.go`):
//!
//! - check request: the client request's method, `pathPrefix` + path and
//!   query, no body; headers `host`, `authorization` and those matching
//!   `includeRequestHeadersInCheck` (exact, `prefix*`, `*suffix`, case
//!   insensitive), then `includeAdditionalHeadersInCheck` set over them;
//! - `200`: allowed; the provider's response headers matching
//!   `headersToUpstreamOnAllow` are set on the upstream request;
//! - `5xx`, a connection error or `timeout` (default 600 s, Istio's):
//!   allowed when `failOpen`, else the client gets `statusOnError`
//!   (default 403) with an empty body;
//! - any other status: denied; the client gets the provider's status, body
//!   and headers (those matching `headersToDownstreamOnDeny`, or all but
//!   hop-by-hop and `host`/`content-length` when it is empty).
//!
//! Not supported (the provider is refused, its CUSTOM policies deny every
//! request they match, and `strait analyze` says why): `envoyExtAuthzGrpc`,
//! `includeRequestBodyInCheck`, `headersToDownstreamOnAllow`, and any field
//! not listed above.
//!
//! How a check request leaves the node is the mesh's one outbound decision
//! (as Envoy reaches its `ext_authz` cluster with the cluster's TLS
//! settings and auto mTLS): the daemon installs a [`Dialer`]
//! ([`set_dialer`], `transport/hbone/control.rs`) that tunnels to a meshed
//! authorizer over HBONE as the workload the check is made for, and
//! refuses (the check fails: `statusOnError`, or allowed under `failOpen`)
//! when `ISTIO_MUTUAL` cannot be honoured. Without a dialer (unit tests)
//! checks go out in plain text.
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Empty};
use strait_config::snapshot::{MeshSnapshot, MeshTlsPolicy};

use super::matcher::StrMatch;

/// A connection a [`Dialer`] opened for a check request (an HBONE stream).
pub trait CheckIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> CheckIo for T {}

/// How a [`Dialer`] says a check request leaves the node.
pub enum Dialed {
    /// Plain text: the provider's own pooled HTTP client connects.
    Plain,
    /// Over this connection (one check request on it).
    Stream(Box<dyn CheckIo>),
}

/// A boxed dial future.
pub type DialFuture<'a> = Pin<Box<dyn Future<Output = std::io::Result<Dialed>> + Send + 'a>>;

/// Opens the connection for a check request to `dst` (an endpoint of the
/// provider's service, whose DestinationRule TLS is `tls`) made on behalf
/// of the local workload at `source`, with `host` the provider's
/// `service`. An error is a refusal (nothing was sent) or a connect
/// failure; the check then fails (`statusOnError` / `failOpen`).
pub trait Dialer: Send + Sync {
    /// See the trait.
    fn dial<'a>(
        &'a self,
        source: IpAddr,
        dst: SocketAddr,
        tls: MeshTlsPolicy,
        host: &'a str,
    ) -> DialFuture<'a>;
}

fn dialer_slot() -> &'static arc_swap::ArcSwapOption<Box<dyn Dialer>> {
    static D: std::sync::OnceLock<arc_swap::ArcSwapOption<Box<dyn Dialer>>> =
        std::sync::OnceLock::new();
    D.get_or_init(arc_swap::ArcSwapOption::empty)
}

/// Installs how every provider's check requests (and the JWKS fetcher's
/// connections, `jwt/jwks.rs`) are dialled (the daemon: the mesh's
/// outbound decision); `None`: plain text.
pub fn set_dialer(d: Option<Box<dyn Dialer>>) {
    dialer_slot().store(d.map(Arc::new));
}

/// The installed [`Dialer`]'s decision for a connection to `dst`
/// ([`Dialed::Plain`] when none is installed).
pub async fn dial(
    source: IpAddr,
    dst: SocketAddr,
    tls: MeshTlsPolicy,
    host: &str,
) -> std::io::Result<Dialed> {
    match dialer_slot().load_full() {
        Some(d) => d.dial(source, dst, tls, host).await,
        None => Ok(Dialed::Plain),
    }
}

/// Istio's default `timeout` of an `envoyExtAuthzHttp` provider (10 min).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Largest provider response body passed on to the client on deny; a
/// larger one is an error (`statusOnError` / `failOpen`).
pub const MAX_DENY_BODY: usize = 64 * 1024;

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

/// One `envoyExtAuthzHttp` provider, resolved against the snapshot.
pub struct ExtAuthz {
    /// `extensionProviders[].name`.
    pub name: String,
    /// `service` (as configured) and `port`.
    pub service: String,
    /// `port`.
    pub port: u16,
    /// Where check requests go: the endpoints of the registry service
    /// `outbound|port||service`, or the address when `service` is an IP.
    endpoints: Vec<SocketAddr>,
    /// The DestinationRule TLS of the provider's cluster (auto mTLS when
    /// it has none or `service` is an address).
    mesh_tls: MeshTlsPolicy,
    next: AtomicUsize,
    path_prefix: String,
    timeout: Duration,
    fail_open: bool,
    status_on_error: StatusCode,
    include: Vec<StrMatch>,
    additional: Vec<(HeaderName, HeaderValue)>,
    to_upstream: Vec<StrMatch>,
    to_downstream: Vec<StrMatch>,
    client: Client,
}

impl std::fmt::Debug for ExtAuthz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtAuthz")
            .field("name", &self.name)
            .field("service", &self.service)
            .field("port", &self.port)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// What the authorizer decided about one request.
#[derive(Debug)]
pub enum Verdict {
    /// Go on; set these headers on the upstream request.
    Allow(Vec<(HeaderName, HeaderValue)>),
    /// Answer the client with this response (the provider's, or
    /// `statusOnError` when `error` is set).
    Deny {
        /// Status.
        status: StatusCode,
        /// Headers for the client.
        headers: HeaderMap,
        /// Body.
        body: Bytes,
        /// The check failed (connection error, timeout, 5xx): the reply
        /// is `statusOnError`. Envoy's `ext_authz_error` vs `ext_authz_denied`.
        error: Option<String>,
    },
}

fn header_patterns(v: &[String]) -> Vec<StrMatch> {
    v.iter()
        .map(|s| StrMatch::istio(&s.to_ascii_lowercase()))
        .collect()
}

fn is_hop_by_hop(n: &HeaderName) -> bool {
    matches!(
        n.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

impl ExtAuthz {
    /// The provider `name` of the snapshot's mesh config, resolved
    /// against its registry. Errors (one sentence, for logs and `strait
    /// analyze`): see [`strait_config::mesh::MeshConfig::ext_authz_http`];
    /// a bad header in `includeAdditionalHeadersInCheck`; a `service` that
    /// is neither in the registry on `port` nor an IP address.
    pub fn build(name: &str, snap: &MeshSnapshot) -> Result<ExtAuthz, String> {
        let cfg = snap.mesh.ext_authz_http(name)?;
        let port = cfg.port().ok_or("envoyExtAuthzHttp.port: bad")?;
        let timeout = cfg.timeout()?;
        let status_on_error = cfg
            .status_on_error()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or("envoyExtAuthzHttp.statusOnError: bad")?;
        let mut include = header_patterns(&cfg.include_request_headers_in_check);
        include.extend(header_patterns(&cfg.include_headers_in_check));
        let mut additional = Vec::new();
        for (k, v) in &cfg.include_additional_headers_in_check {
            let n = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(|_| {
                format!("envoyExtAuthzHttp.includeAdditionalHeadersInCheck: bad header name {k:?}")
            })?;
            let v = HeaderValue::from_str(v).map_err(|_| {
                format!("envoyExtAuthzHttp.includeAdditionalHeadersInCheck.{k}: bad value")
            })?;
            additional.push((n, v));
        }
        let (endpoints, mesh_tls) = resolve(&cfg.service, port, snap)
            .map_err(|e| format!("extension provider {name:?}: {e}"))?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build_http();
        Ok(ExtAuthz {
            name: name.to_string(),
            service: cfg.service.clone(),
            port,
            endpoints,
            mesh_tls,
            next: AtomicUsize::new(0),
            path_prefix: cfg.path_prefix.clone().unwrap_or_default(),
            timeout,
            fail_open: cfg.fail_open,
            status_on_error,
            include,
            additional,
            to_upstream: header_patterns(&cfg.headers_to_upstream_on_allow),
            to_downstream: header_patterns(&cfg.headers_to_downstream_on_deny),
            client,
        })
    }

    /// Asks the authorizer about a request (`method`, `path_and_query`,
    /// `host`, the request's `headers`), on behalf of the local workload
    /// at `source` (whose identity a tunnel to a meshed authorizer
    /// presents). Never fails: errors become [`Verdict::Allow`]
    /// (`failOpen`) or a `statusOnError` deny.
    pub async fn check(
        &self,
        source: IpAddr,
        method: &Method,
        path_and_query: &str,
        host: &str,
        headers: &HeaderMap,
    ) -> Verdict {
        match tokio::time::timeout(
            self.timeout,
            self.ask(source, method, path_and_query, host, headers),
        )
        .await
        {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => self.on_error(e),
            Err(_) => self.on_error(format!("no answer within {:?}", self.timeout)),
        }
    }

    fn on_error(&self, e: String) -> Verdict {
        tracing::warn!(provider = %self.name, fail_open = self.fail_open, "external authorizer failed: {e}");
        if self.fail_open {
            return Verdict::Allow(Vec::new());
        }
        Verdict::Deny {
            status: self.status_on_error,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            error: Some(e),
        }
    }

    /// The check request's headers.
    fn check_headers(&self, host: &str, headers: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::new();
        for (n, v) in headers {
            if is_hop_by_hop(n) || n == http::header::CONTENT_LENGTH || n == http::header::HOST {
                continue;
            }
            let wanted = n == http::header::AUTHORIZATION
                || self.include.iter().any(|m| m.matches(n.as_str()));
            if wanted {
                out.append(n.clone(), v.clone());
            }
        }
        if let Ok(h) = HeaderValue::from_str(host) {
            out.insert(http::header::HOST, h);
        }
        for (n, v) in &self.additional {
            out.insert(n.clone(), v.clone());
        }
        out
    }

    async fn ask(
        &self,
        source: IpAddr,
        method: &Method,
        path_and_query: &str,
        host: &str,
        headers: &HeaderMap,
    ) -> Result<Verdict, String> {
        if self.endpoints.is_empty() {
            return Err(format!("{}:{} has no endpoints", self.service, self.port));
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        let uri: http::Uri = format!(
            "http://{}{}{}",
            self.endpoints[i], self.path_prefix, path_and_query
        )
        .parse()
        .map_err(|e| format!("check request URI: {e}"))?;
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(uri)
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        *req.headers_mut() = self.check_headers(host, headers);
        let ep = self.endpoints[i];
        let dialed = dial(source, ep, self.mesh_tls, &self.service)
            .await
            .map_err(|e| format!("connect {ep}: {e}"))?;
        let resp = match dialed {
            Dialed::Plain => self.client.request(req).await.map_err(|e| {
                let mut s = e.to_string();
                if let Some(src) = std::error::Error::source(&e) {
                    s = format!("{s}: {src}");
                }
                s
            })?,
            Dialed::Stream(io) => send_on(io, req).await?,
        };
        let status = resp.status();
        if status.is_server_error() {
            return Err(format!("provider answered {status}"));
        }
        let (parts, body) = resp.into_parts();
        if status == StatusCode::OK {
            let up = parts
                .headers
                .iter()
                .filter(|(n, _)| {
                    !is_hop_by_hop(n)
                        && *n != http::header::CONTENT_LENGTH
                        && *n != http::header::HOST
                        && self.to_upstream.iter().any(|m| m.matches(n.as_str()))
                })
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            return Ok(Verdict::Allow(up));
        }
        let limited = http_body_util::Limited::new(body, MAX_DENY_BODY);
        let body = limited
            .collect()
            .await
            .map_err(|e| format!("provider response body: {e}"))?
            .to_bytes();
        let mut out = HeaderMap::new();
        for (n, v) in &parts.headers {
            if is_hop_by_hop(n) || n == http::header::CONTENT_LENGTH || n == http::header::HOST {
                continue;
            }
            if self.to_downstream.is_empty()
                || self.to_downstream.iter().any(|m| m.matches(n.as_str()))
            {
                out.append(n.clone(), v.clone());
            }
        }
        Ok(Verdict::Deny {
            status,
            headers: out,
            body,
            error: None,
        })
    }
}

/// Sends one check request on a dialled connection (HTTP/1.1, the
/// request in origin form; `host` is already set).
async fn send_on(
    io: Box<dyn CheckIo>,
    mut req: http::Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String> {
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *req.uri_mut() = pq.parse().map_err(|e| format!("check request URI: {e}"))?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| format!("check request: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tx.send_request(req)
        .await
        .map_err(|e| format!("check request: {e}"))
}

/// The check request targets: the endpoints of the registry service
/// `service` (`host` or Istio's `namespace/host` form) on `port`, with
/// its cluster's DestinationRule TLS, else the address when `service` is
/// an IP literal (auto mTLS).
fn resolve(
    service: &str,
    port: u16,
    snap: &MeshSnapshot,
) -> Result<(Vec<SocketAddr>, MeshTlsPolicy), String> {
    let host = service.split_once('/').map_or(service, |(_, h)| h);
    let cluster = format!("outbound|{port}||{host}");
    if let Some(c) = snap.clusters.get(&cluster) {
        let eps = c.endpoints.iter().map(|e| e.addr).collect();
        return Ok((eps, c.tls.mesh_policy()));
    }
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok((vec![SocketAddr::new(ip, port)], MeshTlsPolicy::default()));
    }
    Err(format!(
        "service {service:?} port {port} is not in the registry (no cluster {cluster})"
    ))
}
