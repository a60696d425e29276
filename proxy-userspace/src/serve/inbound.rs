//! The plaintext inbound listener (Istio's 15006, "virtualInbound"): the
//! in-pod `sk_lookup` program hands it the plain-text connections to a
//! meshed pod's ports that an AuthorizationPolicy or RequestAuthentication
//! protects (`datapath/inpod.rs`). One listener per pod, opened inside the
//! pod's network namespace; the original destination is the accepted
//! socket's local address (`<pod IP>:<port>`, as the client dialled it).
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
//! metrics report them with `reporter="destination"`.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use strait_config::MeshSnapshot;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::http::authz::RBAC_DENIED;
use super::local_reply::local_reply;
use super::Shared;
use crate::policy::{self, Guard, GuardEntry, HttpRequest, Outcome, Request as PolicyRequest};
use crate::proxy::body::ProxyBody;
use crate::telemetry::access_log::AccessLogRecord;
use crate::telemetry::flags::ResponseFlags;
use crate::transport::inpod::{connect_in_pod, InPodNetns};
use crate::transport::sniff::{sniff, Sniffed};

/// Istio's inbound cluster name for a target port (`inbound|9080||`).
pub fn inbound_cluster(port: u16) -> Arc<str> {
    format!("inbound|{port}||").into()
}

/// Accepts the pod's captured plain-text connections until the listener
/// fails or the task is aborted (the pod left).
///
/// `snapshot` is the live snapshot: its `inbound` table says whether the
/// pod's policies need HTTP facts.
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    netns: Arc<InPodNetns>,
    snapshot: Arc<ArcSwap<MeshSnapshot>>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("inbound accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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
        let (shared, netns) = (shared.clone(), netns.clone());
        let l7 = snapshot.load().inbound.get(&dst.ip()).is_some_and(|w| w.l7);
        tokio::spawn(async move { connection(shared, netns, stream, peer, dst, l7).await });
    }
}

fn is_own_port(port: u16) -> bool {
    use proxy_common::ports;
    [ports::OUTBOUND, ports::INBOUND_PLAINTEXT, ports::HBONE].contains(&port)
}

fn is_passthrough(peer: SocketAddr) -> bool {
    peer.ip() == std::net::IpAddr::V4(crate::transport::inpod::INBOUND_SOURCE_V4)
}

/// The guard of the pod behind `dst`: its policy set with `destination.ip`
/// and `destination.port` of this connection. `None`: no policy applies
/// (any more) — the connection is delivered unchecked.
fn guard_for(shared: &Shared, dst: SocketAddr) -> Option<Guard> {
    let table = shared.table.load();
    let view = table.policy.as_deref()?.workloads.get(&dst.ip())?;
    Some(Guard {
        entries: vec![GuardEntry {
            set: view.set.clone(),
            dest_ip: Some(dst.ip()),
            dest_port: dst.port(),
        }],
        remote: None,
        remote_ips: Vec::new(),
    })
}

async fn connection(
    shared: Arc<Shared>,
    netns: Arc<InPodNetns>,
    stream: TcpStream,
    peer: SocketAddr,
    dst: SocketAddr,
    l7: bool,
) {
    let _ = stream.set_nodelay(true);
    let guard = guard_for(&shared, dst);
    if l7 {
        if let Some(g) = guard {
            let timeout = shared.settings.protocol_detection_timeout;
            if let Ok(Sniffed::Http1 | Sniffed::Http2) = sniff(&stream, timeout).await {
                http(shared, netns, stream, peer, dst, Arc::new(g)).await;
                return;
            }
            tcp(shared, netns, stream, peer, dst, Some(g)).await;
            return;
        }
    }
    tcp(shared, netns, stream, peer, dst, guard).await;
}

fn record(peer: SocketAddr, dst: SocketAddr, protocol: &'static str) -> AccessLogRecord {
    AccessLogRecord {
        start_time: Some(SystemTime::now()),
        request_protocol: protocol,
        downstream_local_address: Some(dst),
        downstream_remote_address: Some(peer),
        upstream_host: Some(dst),
        upstream_cluster: Some(inbound_cluster(dst.port())),
        ..Default::default()
    }
}

fn finish(shared: &Shared, mut rec: AccessLogRecord, start: Instant) {
    rec.duration_ms = start.elapsed().as_millis() as u64;
    shared.sink.log(rec);
}

/// Once per connection: check, then bytes both ways.
async fn tcp(
    shared: Arc<Shared>,
    netns: Arc<InPodNetns>,
    mut client: TcpStream,
    peer: SocketAddr,
    dst: SocketAddr,
    guard: Option<Guard>,
) {
    let start = Instant::now();
    let mut rec = record(peer, dst, "tcp");
    if let Some(g) = &guard {
        let req = PolicyRequest {
            source_ip: peer.ip(),
            sni: None,
            http: None,
        };
        if let Outcome::Denied(d) = policy::enforce_plaintext(g, &req) {
            rec.response_flags.insert(ResponseFlags::RBAC_ACCESS_DENIED);
            rec.response_code_details = Some("rbac_access_denied_matched_policy");
            tracing::debug!(source = %peer, destination = %dst, policy = ?d.policy, "inbound connection denied by AuthorizationPolicy");
            drop(client);
            finish(&shared, rec, start);
            return;
        }
    }
    let mut upstream = match connect_in_pod(&netns, dst).await {
        Ok(s) => s,
        Err(e) => {
            rec.response_flags
                .insert(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
            rec.upstream_transport_failure_reason = Some(e.to_string());
            finish(&shared, rec, start);
            return;
        }
    };
    rec.upstream_local_address = upstream.local_addr().ok();
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => {
            rec.bytes_received = up;
            rec.bytes_sent = down;
        }
        Err(_) => rec
            .response_flags
            .insert(ResponseFlags::UPSTREAM_CONNECTION_TERMINATION),
    }
    let _ = client.shutdown().await;
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
async fn http(
    shared: Arc<Shared>,
    netns: Arc<InPodNetns>,
    stream: TcpStream,
    peer: SocketAddr,
    dst: SocketAddr,
    guard: Arc<Guard>,
) {
    let upstream = Arc::new(tokio::sync::Mutex::new(Upstream::None));
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (shared, netns, guard, upstream) = (
            shared.clone(),
            netns.clone(),
            guard.clone(),
            upstream.clone(),
        );
        async move {
            Ok::<_, std::convert::Infallible>(
                request(shared, netns, guard, upstream, peer, dst, req).await,
            )
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
}

async fn request(
    shared: Arc<Shared>,
    netns: Arc<InPodNetns>,
    guard: Arc<Guard>,
    upstream: Arc<tokio::sync::Mutex<Upstream>>,
    peer: SocketAddr,
    dst: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let mut rec = record(peer, dst, "http");
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
        policy::enforce_plaintext(&guard, &preq)
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
        // CUSTOM (ext_authz) is asked on the outbound path only; a request
        // straight to the pod IP that a CUSTOM policy matches fails closed.
        Outcome::External { ask, .. } => {
            rec.response_flags
                .insert(ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE);
            rec.response_code_details = Some("ext_authz_error");
            tracing::warn!(source = %peer, destination = %dst, policies = ask.len(), "a CUSTOM AuthorizationPolicy matched a request straight to a pod IP; the external authorizer is not asked on this path: denied");
            rec.response_code = 403;
            finish(&shared, rec, start);
            return local_reply(StatusCode::FORBIDDEN, RBAC_DENIED, grpc);
        }
        Outcome::Denied(d) => {
            rec.response_flags.insert(ResponseFlags::RBAC_ACCESS_DENIED);
            rec.response_code_details = Some("rbac_access_denied_matched_policy");
            tracing::debug!(source = %peer, destination = %dst, policy = ?d.policy, "inbound request denied by AuthorizationPolicy");
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
}
