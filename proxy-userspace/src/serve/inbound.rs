//! The destination side's serving path. Two callers, one code path, each
//! with its connection facts ([`InboundConn`]):
//!
//! - the plaintext inbound listener (Istio's 15006, "virtualInbound"): the
//!   in-pod `sk_lookup` program hands it the plain-text connections to a
//!   meshed pod's ports that an AuthorizationPolicy or RequestAuthentication
//!   protects (`datapath/inpod.rs`). One listener per pod and family
//!   (`0.0.0.0:15006`, `[::]:15006`), opened inside the pod's network
//!   namespace; the original destination is the accepted socket's local
//!   address (`<pod IP>:<port>`, as the client dialled it);
//! - the HBONE destination side (`daemon/hbone.rs`), for a tunnel whose
//!   pod's policies need HTTP facts: the tunnel's inner stream, with the
//!   peer's verified SPIFFE identity ([`super::Proxy::serve_inbound_stream`]);
//!   tunnels decided at the `CONNECT` are only recorded here
//!   ([`super::Proxy::log_inbound_connection`]).
//!
//! Enforcement follows the split, as ztunnel and Envoy do: a
//! workload whose policies need only L4 facts is decided once per
//! connection (a denied connection is closed, flag `RBAC`); one with L7
//! policies (paths, methods, headers, JWT) is served as HTTP (HTTP/1.1 or
//! h2, by sniffing) and decided per request (`403 RBAC: access denied`,
//! `401` for a bad JWT) — a non-HTTP connection to it is decided once with
//! no HTTP facts, as Istio does for a TCP port. Allowed traffic is
//! delivered to the pod from `127.0.0.6` inside its namespace
//! ([`crate::transport::inpod::connect_in_pod`]), which the kernel program
//! never captures again. Records carry the cluster `inbound|<port>||`, so
//! metrics report them with `reporter="destination"`, and the connection's
//! `connection_security_policy` (`none` for plain text, `mutual_tls` with
//! both SPIFFE IDs for HBONE).
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use strait_config::MeshSnapshot;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use super::counted::Counted;
use super::http::authz::{ask_custom, CustomCheck, RBAC_DENIED};
use super::local_reply::local_reply;
use super::Shared;
use crate::policy::{self, Guard, HttpRequest, Outcome, PeerIdentity, Request as PolicyRequest};
use crate::proxy::body::ProxyBody;
use crate::proxy::h1::prefixed::Prefixed;
use crate::telemetry::access_log::AccessLogRecord;
use crate::telemetry::flags::ResponseFlags;
use crate::telemetry::{PeerInfo, Reporter, SecurityPolicy};
use crate::transport::accept::AcceptBackoff;
use crate::transport::inpod::{connect_in_pod, InPodNetns};
use crate::transport::sniff::{sniff_read, Sniffed};

/// Istio's inbound cluster name for a target port (`inbound|9080||`).
pub fn inbound_cluster(port: u16) -> Arc<str> {
    format!("inbound|{port}||").into()
}

/// A byte stream the destination side can serve: a TCP connection
/// accepted by the 15006 listener, or the inner stream of an HBONE tunnel.
pub trait InboundIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> InboundIo for T {}

/// What the destination side knows about one inbound connection, whichever
/// listener accepted it: the facts its policy checks and its records use.
#[derive(Clone, Debug)]
pub struct InboundConn {
    /// The client: `source.ip` / `ipBlocks` and
    /// `%DOWNSTREAM_REMOTE_ADDRESS%` (for HBONE, the tunnel's
    /// `forwarded: for=`, else its TLS peer, as ztunnel).
    pub source: SocketAddr,
    /// The pod address the connection is for (`destination.ip`,
    /// `destination.port`; delivered there from 127.0.0.6).
    pub dst: SocketAddr,
    /// The client's verified mTLS identity (HBONE): decides `principals`,
    /// `namespaces`, `source.principal`, `source.namespace`. `None` for
    /// plain text (those rules are then undecidable: ALLOW never matches,
    /// DENY denies).
    pub peer: Option<PeerIdentity>,
    /// What every record of the connection reports (`reporter`,
    /// `connection_security_policy`, `source_principal`,
    /// `destination_principal`, `%DOWNSTREAM_PEER_URI_SAN%`).
    pub telemetry: PeerInfo,
    /// Also record the connection itself (Istio's `istio_tcp_*`) when its
    /// requests are served as HTTP: HBONE tunnels, which ztunnel reports
    /// at L4 whatever they carry. The 15006 listener reports requests only,
    /// as Envoy's HTTP inbound chain does.
    pub record_connection: bool,
}

impl InboundConn {
    /// A plain-text connection from `source` to the pod at `dst`, accepted
    /// by the 15006 listener: `connection_security_policy="none"`,
    /// `reporter="destination"`.
    pub fn plaintext(source: SocketAddr, dst: SocketAddr) -> Self {
        InboundConn {
            source,
            dst,
            peer: None,
            telemetry: PeerInfo {
                security: SecurityPolicy::None,
                reporter: Reporter::Destination,
                ..Default::default()
            },
            record_connection: false,
        }
    }
}

/// Accepts the pod's captured plain-text connections until the listener
/// fails or the task is aborted (the pod left).
///
/// `snapshot` is the live snapshot: its `inbound` table says whether the
/// pod has policies that need HTTP facts (the policy table then says
/// whether they can apply to the connection's port).
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    netns: Arc<InPodNetns>,
    snapshot: Arc<ArcSwap<MeshSnapshot>>,
) {
    let mut backoff = AcceptBackoff::new("inbound listener");
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => {
                backoff.accepted();
                s
            }
            Err(e) => {
                backoff.failed(&e).await;
                continue;
            }
        };
        let Ok(dst) = stream.local_addr() else {
            continue;
        };
        // Never serve the daemon's own ports or its own deliveries: that
        // would loop (ztunnel answers 503 for 15001/15006/15008).
        if is_own_port(dst.port()) || is_passthrough(peer) {
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (shared, netns) = (shared.clone(), netns.clone());
        let l7 = snapshot.load().inbound.get(&dst.ip()).is_some_and(|w| w.l7);
        let conn = Arc::new(InboundConn::plaintext(peer, dst));
        tokio::spawn(async move { connection(shared, netns, stream, conn, l7).await });
    }
}

/// The policy decision for a connection or request: with the tunnel's
/// verified peer identity (HBONE), or — on the plaintext listener, which
/// only ever sees plain text — as Istio decides for a plaintext peer (no
/// identity: rules that require one do not match, their `not*` forms do).
fn decide(guard: &Guard, req: &PolicyRequest<'_>, peer: Option<&policy::PeerIdentity>) -> Outcome {
    match peer {
        Some(p) => policy::enforce_with_peer(guard, req, Some(p), false),
        None => policy::enforce_plaintext(guard, req),
    }
}

fn is_own_port(port: u16) -> bool {
    use proxy_common::ports;
    [ports::OUTBOUND, ports::INBOUND_PLAINTEXT, ports::HBONE].contains(&port)
}

fn is_passthrough(peer: SocketAddr) -> bool {
    use crate::transport::inpod::{INBOUND_SOURCE_V4, INBOUND_SOURCE_V6};
    match peer.ip() {
        std::net::IpAddr::V4(a) => a == INBOUND_SOURCE_V4,
        std::net::IpAddr::V6(a) => a == INBOUND_SOURCE_V6,
    }
}

/// The guard of the pod behind `dst`: its policy set with `destination.ip`
/// and `destination.port` of this connection. `None`: no policy applies
/// (any more) — the connection is delivered unchecked.
fn guard_for(shared: &Shared, dst: SocketAddr) -> Option<Guard> {
    let table = shared.table.load();
    let view = table.policy.as_deref()?.workloads.get(&dst.ip())?;
    Some(Guard::local(view.set.clone(), dst))
}

/// Whether connections to `dst` (a local pod) are decided per HTTP
/// request: its policies for that port need HTTP facts
/// ([`crate::policy::PolicySet::needs_http`]).
fn needs_http(guard: &Guard, dst: SocketAddr) -> bool {
    guard.entries.iter().any(|e| e.set.needs_http(dst.port()))
}

/// Serves one inbound connection to a local pod (see the module doc):
/// with `l7` and policies that need HTTP facts on its port, the stream is
/// sniffed and HTTP/1.1 or h2 is decided per request; anything else is
/// decided once, as a TCP connection.
async fn connection<S: InboundIo>(
    shared: Arc<Shared>,
    netns: Arc<InPodNetns>,
    mut stream: S,
    conn: Arc<InboundConn>,
    l7: bool,
) {
    let guard = guard_for(&shared, conn.dst);
    let guard = match guard {
        Some(g) if l7 && needs_http(&g, conn.dst) => g,
        other => return tcp(shared, netns, stream, conn, other).await,
    };
    let timeout = shared.settings.protocol_detection_timeout;
    let Ok((sniffed, head)) = sniff_read(&mut stream, timeout).await else {
        return;
    };
    let stream = Prefixed::new(head, stream);
    if !matches!(sniffed, Sniffed::Http1 | Sniffed::Http2) {
        // Istio: HTTP fields on a TCP connection — ALLOW rules with them
        // never match, DENY rules match.
        return tcp(shared, netns, stream, conn, Some(guard)).await;
    }
    if !conn.record_connection {
        return http(shared, netns, stream, conn, Arc::new(guard)).await;
    }
    let start = Instant::now();
    let mut rec = record(&conn, "tcp");
    shared.sink.opened(&rec);
    rec.opened_counted = true;
    let stream = Counted::new(stream);
    let counts = stream.counts();
    http(shared.clone(), netns, stream, conn, Arc::new(guard)).await;
    (rec.bytes_received, rec.bytes_sent) = counts.get();
    finish(&shared, rec, start);
}

fn record(conn: &InboundConn, protocol: &'static str) -> AccessLogRecord {
    AccessLogRecord {
        start_time: Some(SystemTime::now()),
        request_protocol: protocol,
        downstream_local_address: Some(conn.dst),
        downstream_remote_address: Some(conn.source),
        upstream_host: Some(conn.dst),
        upstream_cluster: Some(inbound_cluster(conn.dst.port())),
        peer: conn.telemetry.clone(),
        ..Default::default()
    }
}

fn finish(shared: &Shared, mut rec: AccessLogRecord, start: Instant) {
    rec.duration_ms = start.elapsed().as_millis() as u64;
    shared.sink.log(rec);
}

/// Once per connection: check, then bytes both ways.
async fn tcp<S: InboundIo>(
    shared: Arc<Shared>,
    netns: Arc<InPodNetns>,
    mut client: S,
    conn: Arc<InboundConn>,
    guard: Option<Guard>,
) {
    let start = Instant::now();
    let mut rec = record(&conn, "tcp");
    if let Some(g) = &guard {
        let req = PolicyRequest {
            source_ip: conn.source.ip(),
            sni: None,
            http: None,
        };
        match decide(g, &req, conn.peer.as_ref()) {
            Outcome::Allow { .. } | Outcome::Unauthenticated(_) => {}
            // An HTTP authorizer cannot check a connection (the policy set
            // denies those already); closed all the same.
            Outcome::External { .. } => {
                rec.response_flags
                    .insert(ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE);
                drop(client);
                finish(&shared, rec, start);
                return;
            }
            Outcome::Denied(d) => {
                rec.response_flags.insert(ResponseFlags::RBAC_ACCESS_DENIED);
                rec.response_code_details = Some("rbac_access_denied_matched_policy");
                tracing::debug!(
                    source = %conn.source, destination = %conn.dst, policy = ?d.policy,
                    why = d.why.as_str(), "inbound connection denied by AuthorizationPolicy"
                );
                drop(client);
                finish(&shared, rec, start);
                return;
            }
        }
    }
    let mut upstream = match connect_in_pod(&netns, conn.dst).await {
        Ok(s) => s,
        Err(e) => {
            rec.response_flags
                .insert(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
            rec.upstream_transport_failure_reason = Some(e.to_string());
            finish(&shared, rec, start);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    rec.upstream_local_address = upstream.local_addr().ok();
    shared.sink.opened(&rec);
    rec.opened_counted = true;
    super::tcp::relay(&mut client, &mut upstream, &mut rec).await;
    finish(&shared, rec, start);
}

/// The upstream HTTP connection of one downstream connection, made on the
/// first allowed request.
enum Upstream {
    None,
    H1(hyper::client::conn::http1::SendRequest<Incoming>),
    H2(hyper::client::conn::http2::SendRequest<Incoming>),
}

/// Per request: check with HTTP facts, then forward to the pod.
async fn http<S: InboundIo>(
    shared: Arc<Shared>,
    netns: Arc<InPodNetns>,
    stream: S,
    conn: Arc<InboundConn>,
    guard: Arc<Guard>,
) {
    let upstream = Arc::new(tokio::sync::Mutex::new(Upstream::None));
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (shared, netns, guard, upstream, conn) = (
            shared.clone(),
            netns.clone(),
            guard.clone(),
            upstream.clone(),
            conn.clone(),
        );
        async move {
            Ok::<_, std::convert::Infallible>(
                request(shared, netns, guard, upstream, &conn, req).await,
            )
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
}

/// Puts the request's path in Istio's `pathNormalization` form (what the
/// policies match and the pod receives, as Envoy does). `Err`: it cannot
/// be normalized (`%00`), Envoy answers 400.
fn normalize_path<B>(
    req: &mut Request<B>,
    mode: crate::serve::PathNormalization,
) -> Result<(), strait_codec::normalize::NormalizeError> {
    let Some(pq) = req.uri().path_and_query() else {
        return Ok(());
    };
    let Some(new) = strait_codec::normalize::normalize(pq.as_str(), mode)? else {
        return Ok(());
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = http::uri::PathAndQuery::try_from(new).ok();
    if let Ok(u) = http::Uri::from_parts(parts) {
        *req.uri_mut() = u;
    }
    Ok(())
}

async fn request(
    shared: Arc<Shared>,
    netns: Arc<InPodNetns>,
    guard: Arc<Guard>,
    upstream: Arc<tokio::sync::Mutex<Upstream>>,
    conn: &InboundConn,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let (peer, dst) = (conn.source, conn.dst);
    let mut rec = record(conn, "http");
    rec.method = Some(req.method().clone());
    rec.path = Some(req.uri().path().to_string());
    rec.protocol = Some(if req.version() == http::Version::HTTP_2 {
        "HTTP/2"
    } else {
        "HTTP/1.1"
    });
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        rec.request_protocol = "grpc";
    }
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(String::from)
        })
        .unwrap_or_default();
    rec.user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    if normalize_path(&mut req, shared.path_normalization.get()).is_err() {
        rec.response_flags
            .insert(ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR);
        rec.response_code_details = Some("path_normalization_failed");
        rec.response_code = 400;
        rec.authority = Some(host);
        finish(&shared, rec, start);
        return local_reply(StatusCode::BAD_REQUEST, "Bad Request", grpc);
    }
    rec.authority = Some(host.clone());
    let outcome = {
        let path = req.uri().path().to_string();
        let query = req.uri().query().map(String::from);
        let preq = PolicyRequest {
            source_ip: peer.ip(),
            sni: None,
            http: Some(HttpRequest {
                method: req.method().as_str(),
                path: &path,
                query: query.as_deref(),
                host: &host,
                headers: req.headers(),
            }),
        };
        decide(&guard, &preq, conn.peer.as_ref())
    };
    // CUSTOM first (Istio's order): ask the authorizers, then DENY/ALLOW.
    let outcome = match outcome {
        Outcome::External { ask, then } => {
            let pq = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            let at = format!("inbound {dst}");
            let check = CustomCheck {
                on_behalf_of: conn.dst.ip(),
                method: req.method(),
                path_and_query: &pq,
                host: &host,
                headers: req.headers(),
                peer,
                at: &at,
            };
            match ask_custom(ask, check, &mut rec).await {
                Ok(on_allow) => {
                    for (n, v) in on_allow {
                        req.headers_mut().insert(n, v);
                    }
                }
                Err(reply) => {
                    rec.response_code = reply.status().as_u16();
                    finish(&shared, rec, start);
                    return reply;
                }
            }
            *then
        }
        o => o,
    };
    match outcome {
        Outcome::Allow { edits } => {
            for e in edits {
                match e {
                    policy::HeaderEdit::Remove(n) => {
                        req.headers_mut().remove(&n);
                    }
                    policy::HeaderEdit::Set(n, v) => {
                        req.headers_mut().insert(n, v);
                    }
                }
            }
        }
        Outcome::Unauthenticated(why) => {
            rec.response_code_details = Some("jwt_authn_access_denied");
            let mut r = local_reply(StatusCode::UNAUTHORIZED, why, grpc);
            let realm = format!(
                "Bearer realm=\"http://{host}{}\", error=\"invalid_token\"",
                req.uri().path()
            );
            if let Ok(v) = HeaderValue::from_str(&realm) {
                r.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
            }
            rec.response_code = 401;
            finish(&shared, rec, start);
            return r;
        }
        // The authorizers were asked above and `then` never asks again
        // (enforce wraps once); fail closed all the same.
        Outcome::External { ask, .. } => {
            rec.response_flags
                .insert(ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE);
            rec.response_code_details = Some("ext_authz_error");
            tracing::warn!(source = %peer, destination = %dst, policies = ask.len(), "CUSTOM AuthorizationPolicy outcome left undecided: denied");
            rec.response_code = 403;
            finish(&shared, rec, start);
            return local_reply(StatusCode::FORBIDDEN, RBAC_DENIED, grpc);
        }
        Outcome::Denied(d) => {
            rec.response_flags.insert(ResponseFlags::RBAC_ACCESS_DENIED);
            rec.response_code_details = Some("rbac_access_denied_matched_policy");
            tracing::debug!(source = %peer, destination = %dst, policy = ?d.policy, why = d.why.as_str(), "inbound request denied by AuthorizationPolicy");
            rec.response_code = 403;
            finish(&shared, rec, start);
            return local_reply(StatusCode::FORBIDDEN, RBAC_DENIED, grpc);
        }
    }
    let resp = forward(&netns, &upstream, dst, req).await;
    let resp = match resp {
        Ok(r) => r,
        Err(why) => {
            rec.response_flags
                .insert(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
            rec.upstream_transport_failure_reason = Some(why);
            rec.response_code = 503;
            finish(&shared, rec, start);
            return local_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers",
                grpc,
            );
        }
    };
    rec.response_code = resp.status().as_u16();
    finish(&shared, rec, start);
    resp.map(|b| {
        b.map_err(|e| Box::new(e) as crate::proxy::body::BoxError)
            .boxed()
    })
}

/// Sends `req` to the pod over this downstream connection's upstream
/// connection (made from 127.0.0.6 in the pod's namespace on first use,
/// HTTP/2 when the request is).
async fn forward(
    netns: &InPodNetns,
    upstream: &tokio::sync::Mutex<Upstream>,
    dst: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Incoming>, String> {
    let h2 = req.version() == http::Version::HTTP_2;
    let mut up = upstream.lock().await;
    // A kept connection the pod closed (or of the other version) is
    // replaced; one that is not ready is replaced too, once.
    let ready = match &mut *up {
        Upstream::H1(s) if !h2 && !s.is_closed() => s.ready().await.is_ok(),
        Upstream::H2(s) if h2 && !s.is_closed() => s.ready().await.is_ok(),
        _ => false,
    };
    if !ready {
        let io = TokioIo::new(
            connect_in_pod(netns, dst)
                .await
                .map_err(|e| e.to_string())?,
        );
        *up = if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Upstream::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Upstream::H1(send)
        };
    }
    if !h2 {
        // HTTP/1.1 upstream: origin-form.
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        if let Ok(u) = pq.parse() {
            *req.uri_mut() = u;
        }
    }
    match &mut *up {
        Upstream::H1(s) => {
            s.ready().await.map_err(|e| e.to_string())?;
            s.send_request(req).await.map_err(|e| e.to_string())
        }
        Upstream::H2(s) => {
            let mut s = s.clone();
            drop(up);
            s.ready().await.map_err(|e| e.to_string())?;
            s.send_request(req).await.map_err(|e| e.to_string())
        }
        Upstream::None => Err("no upstream".into()),
    }
}

impl super::Proxy {
    /// Serves one pod's plaintext inbound listener (see [`serve`]) with
    /// this proxy's policy table and access log, until the returned future
    /// is dropped or aborted.
    pub fn serve_inbound(
        &self,
        listener: TcpListener,
        netns: Arc<InPodNetns>,
        snapshot: Arc<ArcSwap<MeshSnapshot>>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        serve(self.shared.clone(), listener, netns, snapshot)
    }

    /// Whether a connection to the local pod address `dst` must be served
    /// by [`Proxy::serve_inbound_stream`] (decided per HTTP request) rather
    /// than decided once with the connection's facts: the pod's policies
    /// that can apply to `dst`'s port need HTTP facts (HTTP fields, JWT).
    ///
    /// [`Proxy::serve_inbound_stream`]: super::Proxy::serve_inbound_stream
    pub fn inbound_needs_http(&self, dst: SocketAddr) -> bool {
        guard_for(&self.shared, dst).is_some_and(|g| needs_http(&g, dst))
    }

    /// Serves one inbound stream to the local pod `conn.dst` on the same
    /// path as the 15006 listener (the HBONE destination side calls it
    /// with a tunnel's inner stream when [`Proxy::inbound_needs_http`]):
    /// HTTP/1.1 or h2 (sniffed) decided per request with `conn`'s facts
    /// (403 `RBAC: access denied`, 401 for a bad JWT), anything else
    /// decided once as TCP (a policy that needs HTTP facts then denies, as
    /// Istio does for a TCP port); allowed traffic is delivered from
    /// 127.0.0.6 inside `netns`. Records (`inbound|<port>||`,
    /// `reporter="destination"`) carry `conn.telemetry`.
    ///
    /// [`Proxy::inbound_needs_http`]: super::Proxy::inbound_needs_http
    pub fn serve_inbound_stream<S: InboundIo>(
        &self,
        netns: Arc<InPodNetns>,
        stream: S,
        conn: InboundConn,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        connection(self.shared.clone(), netns, stream, Arc::new(conn), true)
    }

    /// Counts an inbound connection whose bytes this proxy does not serve
    /// itself (an HBONE tunnel copied by the transport) as opened
    /// (`istio_tcp_connections_opened_total`), when its bytes start to
    /// flow; [`Proxy::log_inbound_connection`] with a 200 then records its
    /// end without counting it again.
    ///
    /// [`Proxy::log_inbound_connection`]: super::Proxy::log_inbound_connection
    pub fn inbound_opened(&self, conn: &InboundConn) {
        self.shared.sink.opened(&record(conn, "tcp"));
    }

    /// Records one inbound connection whose bytes this proxy did not
    /// serve itself (an HBONE tunnel copied by the transport): Istio's
    /// `istio_tcp_*` metrics and an access-log line with `conn.telemetry`.
    /// `status` is how the tunnel's `CONNECT` was answered: 401 (denied by
    /// AuthorizationPolicy, flag `RBAC`), 503 (the pod refused, flag
    /// `UF`), 200 (bytes flowed). `from_client` / `to_client`: bytes each
    /// way; `opened`: when the `CONNECT` arrived. For a 200, the caller
    /// counted the opening with [`Proxy::inbound_opened`].
    ///
    /// [`Proxy::inbound_opened`]: super::Proxy::inbound_opened
    pub fn log_inbound_connection(
        &self,
        conn: &InboundConn,
        status: http::StatusCode,
        from_client: u64,
        to_client: u64,
        opened: SystemTime,
    ) {
        let mut rec = record(conn, "tcp");
        rec.start_time = Some(opened);
        // A tunnel answered 200 was counted as opened then
        // ([`Proxy::inbound_opened`], called by the HBONE handler).
        rec.opened_counted = status == StatusCode::OK;
        rec.bytes_received = from_client;
        rec.bytes_sent = to_client;
        match status {
            StatusCode::UNAUTHORIZED => {
                rec.response_flags.insert(ResponseFlags::RBAC_ACCESS_DENIED);
                rec.response_code_details = Some("rbac_access_denied_matched_policy");
            }
            StatusCode::SERVICE_UNAVAILABLE => rec
                .response_flags
                .insert(ResponseFlags::UPSTREAM_CONNECTION_FAILURE),
            _ => {}
        }
        rec.duration_ms = opened.elapsed().map_or(0, |d| d.as_millis() as u64);
        self.shared.sink.log(rec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tunnel decided at the CONNECT is recorded as the destination
    /// with its identities; a refused one carries Envoy's flag.
    #[tokio::test]
    async fn tunnels_are_recorded_as_the_destination_with_their_identities() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<AccessLogRecord>();
        let proxy = super::super::Proxy::new(&MeshSnapshot::default())
            .unwrap()
            .with_access_log(Arc::new(tx));
        let conn = InboundConn {
            source: "10.244.1.5:40000".parse().unwrap(),
            dst: "10.244.2.7:8080".parse().unwrap(),
            peer: None,
            telemetry: PeerInfo::mutual_tls(
                Reporter::Destination,
                Some("spiffe://cluster.local/ns/a/sa/client".into()),
                Some("spiffe://cluster.local/ns/b/sa/server".into()),
            ),
            record_connection: true,
        };
        let at = SystemTime::now();
        proxy.log_inbound_connection(&conn, StatusCode::OK, 11, 22, at);
        proxy.log_inbound_connection(&conn, StatusCode::UNAUTHORIZED, 0, 0, at);
        proxy.log_inbound_connection(&conn, StatusCode::SERVICE_UNAVAILABLE, 0, 0, at);
        let ok = rx.recv().await.unwrap();
        assert_eq!(ok.request_protocol, "tcp");
        assert_eq!((ok.bytes_received, ok.bytes_sent), (11, 22));
        assert_eq!(ok.upstream_cluster.as_deref(), Some("inbound|8080||"));
        assert_eq!(ok.downstream_remote_address, Some(conn.source));
        assert_eq!(ok.peer, conn.telemetry);
        assert_eq!(ok.response_flags.to_string(), "-");
        // `%DOWNSTREAM_PEER_URI_SAN%` is the client's SPIFFE ID.
        let line =
            crate::telemetry::access_log::LogFormat::new(false, "%DOWNSTREAM_PEER_URI_SAN%\n")
                .unwrap()
                .render(&ok);
        assert!(
            line.contains("spiffe://cluster.local/ns/a/sa/client"),
            "{line}"
        );
        let denied = rx.recv().await.unwrap();
        assert_eq!(denied.response_flags.to_string(), "RBAC");
        let refused = rx.recv().await.unwrap();
        assert_eq!(refused.response_flags.to_string(), "UF");
        // Plain text through the 15006 listener: `none`, destination.
        let plain = InboundConn::plaintext(conn.source, conn.dst);
        assert_eq!(plain.telemetry.security.as_str(), "none");
        assert_eq!(plain.telemetry.reporter.as_str(), "destination");
    }
}
