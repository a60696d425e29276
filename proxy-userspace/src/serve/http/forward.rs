//! Sending a routed request upstream: endpoint pick, circuit breaker,
//! per-try and route timeouts, Envoy's retry policy and backoff, outlier
//! detection, and the local replies for each failure.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version};
use tokio::time::Instant;

use crate::proxy::body::{full, ProxyBody};
use crate::proxy::head::ReqHeaders;
use crate::runtime::route::actions::TryOutcome;
use crate::runtime::route::RetryPolicy;
use crate::serve::failure::Failure;
use crate::serve::local_reply::{self as lr, local_reply};
use crate::telemetry::access_log::AccessLogRecord;
use crate::telemetry::flags::ResponseFlags;
use crate::transport::hbone::mesh::Route;
use crate::upstream::client::{ConnectError, UpstreamError};
use crate::upstream::cluster::outlier::TryResult;
use crate::upstream::cluster::{ActiveGuard, Cluster, PickContext};

/// The request body as the retry logic sees it.
pub enum RequestBody {
    /// Fully read (small, known size): can be sent again.
    Buffered(Bytes),
    /// Streamed through once: no retry after the first send.
    Streaming(ProxyBody),
}

/// A request ready to go upstream (headers already rewritten).
pub struct Outgoing {
    /// Method.
    pub method: http::Method,
    /// Path and query to send.
    pub path_and_query: http::uri::PathAndQuery,
    /// Headers to send.
    pub headers: ReqHeaders,
    /// Body.
    pub body: RequestBody,
    /// Downstream upgrade (WebSocket), when the client asked for one.
    pub on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// Set when a streamed client body failed (see
    /// `CountingBody::flag_errors`); `None` for bodies already read.
    pub downstream_error: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// How to forward.
pub struct Plan<'a> {
    /// Target cluster.
    pub cluster: &'a Arc<Cluster>,
    /// Retry policy.
    pub retries: &'a RetryPolicy,
    /// Route timeout.
    pub timeout: Option<Duration>,
    /// Speak HTTP/2 upstream.
    pub http2: bool,
    /// Original destination (PASSTHROUGH).
    pub original_dst: SocketAddr,
    /// Client address (consistent hash on source IP).
    pub source: SocketAddr,
    /// gRPC request (local replies as gRPC).
    pub grpc: bool,
    /// Mutual TLS between workloads (HBONE), when on.
    pub mesh: Option<&'a Arc<crate::transport::hbone::MeshOutbound>>,
}

/// Guards released when the response body ends: the circuit-breaker
/// admission and the endpoint's active-request count.
#[derive(Debug, Default)]
pub struct Held {
    /// Circuit-breaker slot.
    pub admission: Option<crate::upstream::cluster::limits::Admission>,
    /// Active request on the endpoint (LEAST_REQUEST).
    pub active: Option<ActiveGuard>,
}

/// The forwarded response plus what must live as long as its body.
pub struct Forwarded {
    /// The response for the client.
    pub response: Response<ProxyBody>,
    /// Guards (circuit-breaker admission, active-request count) released
    /// when the response body ends.
    pub hold: Held,
}

fn reply(status: StatusCode, body: &'static str, grpc: bool) -> Forwarded {
    Forwarded {
        response: local_reply(status, body, grpc),
        hold: Held::default(),
    }
}

/// A failure's local reply, recorded in `rec` ([`Failure`] maps it).
fn fail(f: Failure<'_>, rec: &mut AccessLogRecord, grpc: bool) -> Forwarded {
    Forwarded {
        response: f.reply(rec, grpc),
        hold: Held::default(),
    }
}

/// Envoy's default retry back-off: fully jittered exponential, base 25 ms,
/// cap 250 ms.
fn backoff(retry: u32) -> Duration {
    let cap = (25u64 << retry.min(4)).min(250);
    Duration::from_millis(rand::random::<u64>() % cap + 1)
}

/// Forwards `out` under `plan`, filling the upstream fields of `rec`.
pub async fn forward(plan: Plan<'_>, mut out: Outgoing, rec: &mut AccessLogRecord) -> Forwarded {
    let cluster = plan.cluster;
    rec.upstream_cluster = Some(cluster.name.clone());
    let deadline = plan.timeout.map(|t| Instant::now() + t);
    let mut avoid = None;
    let mut retries_done = 0u32;
    let new_cookie = cluster
        .lb
        .cookie_to_generate(&out.headers)
        .map(|(name, path, ttl)| NewCookie {
            name: name.to_owned(),
            path: path.map(str::to_owned),
            ttl,
            value: format!("{:016x}", rand::random::<u64>()),
        });
    loop {
        let ctx = PickContext {
            headers: Some(&out.headers),
            query: out.path_and_query.query(),
            source_ip: Some(plan.source.ip()),
            avoid,
            generated_cookie: new_cookie.as_ref().map(|c| c.value.as_str()),
        };
        let (addr, authority, ep) = if cluster.lb.is_passthrough() {
            let a = plan.original_dst;
            match a.to_string().parse() {
                Ok(auth) => (a, auth, None),
                Err(_) => {
                    return reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        lr::NO_HEALTHY_UPSTREAM,
                        plan.grpc,
                    )
                }
            }
        } else {
            match cluster.pick(&ctx) {
                Some(ep) => (ep.addr, ep.authority.clone(), Some(ep)),
                None => return fail(Failure::NoHealthyUpstream, rec, plan.grpc),
            }
        };
        rec.upstream_host = Some(addr);
        // How the try leaves the node (one decision, `mesh::route`): a
        // meshed destination goes through the source pod's HBONE tunnel (a
        // pool of its own; PASSTHROUGH gets an endpoint); a refusal is a
        // connect failure (503 `UF` with the reason) and sends nothing.
        let mut refused = None;
        let tunnel_pool = match crate::transport::hbone::mesh::route(
            plan.mesh.map(|m| &**m),
            cluster.pool.mesh_tls,
            plan.source.ip(),
            addr,
        ) {
            Route::Plain => None,
            Route::Refuse(reason) => {
                refused = Some(reason);
                None
            }
            Route::Tunnel(t) => plan.mesh.map(|m| {
                rec.peer = t.peer_info();
                crate::upstream::pool::tunnel_pool(m, t, &cluster.pool)
            }),
        };
        // So does a checked PASSTHROUGH request to a captured local pod's
        // policy port: its pool delivers inside the pod
        // (`transport/local_delivery.rs`; no connection reuse on this path).
        let in_pod = ep.is_none()
            && cluster.lb.is_passthrough()
            && crate::transport::local_delivery::delivers_in_pod(addr);
        let ep = match ep {
            None if tunnel_pool.is_some() || in_pod => Some(Arc::new(
                crate::upstream::cluster::Endpoint::new(addr, Default::default()),
            )),
            ep => ep,
        };
        let Some(admission) = cluster.breaker.admit(!plan.http2).await else {
            return fail(Failure::Overflow, rec, plan.grpc);
        };
        let active = ep.clone().map(ActiveGuard::new);
        let replayable = matches!(out.body, RequestBody::Buffered(_));
        let body = match &mut out.body {
            // `empty()` is zero-sized: no allocation for bodiless requests.
            RequestBody::Buffered(b) if b.is_empty() => crate::proxy::body::empty(),
            RequestBody::Buffered(b) => full(b.clone()),
            RequestBody::Streaming(b) => std::mem::replace(b, crate::proxy::body::empty()),
        };
        if retries_done > 0 {
            out.headers.insert(
                X_ENVOY_ATTEMPT_COUNT.clone(),
                HeaderValue::from(retries_done + 1),
            );
        }
        let sent_at = Instant::now();
        let per_try_deadline = plan.retries.per_try_timeout.map(|t| sent_at + t);
        let try_deadline = match (deadline, per_try_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // An endpoint's HTTP/1.1 pool borrows the head, so a request that
        // may be retried keeps it without a copy.
        let borrowed_h1 = !plan.http2 && out.on_upgrade.is_none() && ep.is_some();
        // With a deadline the try is boxed with its timer: requests
        // without one keep a smaller future. Each branch awaits its future
        // where it is made: moving an unstarted future copies all of it.
        let result = if let Some(reason) = refused {
            Some(Err(UpstreamError::Connect(ConnectError::Refused(reason))))
        } else if borrowed_h1 {
            let pool = match &tunnel_pool {
                Some(t) => t,
                None => ep.as_ref().expect("checked").clients(&cluster.pool),
            };
            let pq = out.path_and_query.as_str();
            match try_deadline {
                Some(d) => Box::pin(tokio::time::timeout_at(
                    d,
                    pool.send_h1_parts(&out.method, pq, &out.headers, body),
                ))
                .await
                .ok(),
                None => Some(
                    pool.send_h1_parts(&out.method, pq, &out.headers, body)
                        .await,
                ),
            }
        } else {
            let keep = replayable && retries_done < plan.retries.attempts;
            let req = build_request(&mut out, plan.http2, &ep, authority, body, keep);
            // Boxed: HTTP/2 and hyper's clients make this future several
            // times the HTTP/1.1 pool's, and inline it would size (and be
            // copied with) every request's future.
            match try_deadline {
                Some(d) => Box::pin(tokio::time::timeout_at(
                    d,
                    send(cluster, &ep, tunnel_pool.as_ref(), plan.http2, req),
                ))
                .await
                .ok(),
                None => {
                    Some(Box::pin(send(cluster, &ep, tunnel_pool.as_ref(), plan.http2, req)).await)
                }
            }
        };
        if super::downstream_failed(&out.downstream_error) && !matches!(&result, Some(Ok(_))) {
            // The client's body broke (malformed chunked framing, early
            // close): its fault, not the upstream's. No outlier count, no
            // retry; Envoy answers 400 with `DPE`.
            rec.response_flags
                .insert(ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR);
            rec.response_code_details = Some("downstream_protocol_error");
            return reply(StatusCode::BAD_REQUEST, "Bad Request", plan.grpc);
        }
        let outcome = match &result {
            None => TryOutcome::PerTryTimeout,
            Some(Ok(sent)) => TryOutcome::Response(
                sent.response.status().as_u16(),
                grpc_status(sent.response.headers()),
            ),
            Some(Err(UpstreamError::Connect(_))) => TryOutcome::ConnectFailure,
            Some(Err(UpstreamError::RefusedStream)) => TryOutcome::RefusedStream,
            Some(Err(UpstreamError::Reset(_))) => TryOutcome::Reset,
        };
        if let Some(ep) = &ep {
            cluster.record(
                ep,
                match outcome {
                    TryOutcome::Response(s, _) => TryResult::Status(s),
                    _ => TryResult::LocalFailure,
                },
            );
        }
        let overall_expired = deadline.is_some_and(|d| Instant::now() >= d);
        let may_retry = plan.retries.retriable(outcome);
        if may_retry && retries_done < plan.retries.attempts && replayable && !overall_expired {
            if let Some(slot) = cluster.breaker.retry() {
                drop(result);
                drop(admission);
                drop(active);
                let mut pause = backoff(retries_done);
                if let Some(d) = deadline {
                    pause = pause.min(d.saturating_duration_since(Instant::now()));
                }
                tokio::time::sleep(pause).await;
                drop(slot);
                retries_done += 1;
                avoid = Some(addr);
                continue;
            }
        }
        if may_retry && retries_done > 0 {
            rec.response_flags
                .insert(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
        }
        return match result {
            None => fail(
                Failure::Timeout {
                    overall: overall_expired,
                },
                rec,
                plan.grpc,
            ),
            Some(Err(e)) => fail(Failure::Upstream(&e), rec, plan.grpc),
            Some(Ok(sent)) => {
                let mut resp = sent.response;
                rec.response_code_details = Some("via_upstream");
                let service_ms = sent_at.elapsed().as_millis() as u64;
                rec.upstream_service_time_ms = Some(service_ms);
                rec.upstream_local_address = sent.local;
                resp.headers_mut()
                    .insert(X_ENVOY_UPSTREAM_SERVICE_TIME.clone(), ms_value(service_ms));
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(down) = out.on_upgrade.take() {
                        let up = hyper::upgrade::on(&mut resp);
                        tokio::spawn(tunnel(down, up));
                    }
                }
                if let Some(c) = &new_cookie {
                    if let Ok(v) = HeaderValue::from_str(&c.set_cookie()) {
                        resp.headers_mut().append(http::header::SET_COOKIE, v);
                    }
                }
                let hold = Held {
                    admission: Some(admission),
                    active,
                };
                Forwarded {
                    response: resp,
                    hold,
                }
            }
        };
    }
}

/// The request for HTTP/2, upgrades and PASSTHROUGH: the head is moved
/// out of `out` unless `keep` (another try may need it).
fn build_request(
    out: &mut Outgoing,
    http2: bool,
    ep: &Option<Arc<crate::upstream::cluster::Endpoint>>,
    authority: http::uri::Authority,
    body: ProxyBody,
    keep: bool,
) -> Request<ProxyBody> {
    // Envoy sends the request's own authority: `:authority` over HTTP/2,
    // `Host` over HTTP/1.1. The endpoint is the pool's.
    let mut headers = if keep {
        out.headers.to_map()
    } else {
        std::mem::take(&mut out.headers).into_map()
    };
    // An endpoint's pool speaks HTTP/1.1 in origin form (`Host` is in the
    // headers): no absolute URI to build.
    let uri = if ep.is_some() && !http2 {
        http::Uri::from(out.path_and_query.clone())
    } else {
        let req_authority = if ep.is_some() {
            headers
                .remove(http::header::HOST)
                .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
                .unwrap_or(authority)
        } else {
            authority
        };
        http::Uri::builder()
            .scheme("http")
            .authority(req_authority)
            .path_and_query(out.path_and_query.clone())
            .build()
            .expect("scheme, authority and path are valid")
    };
    let mut req = Request::new(body);
    *req.method_mut() = out.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = if http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    *req.headers_mut() = headers;
    req
}

/// One try: the endpoint's pool, or the PASSTHROUGH client when `ep` is
/// `None` (boxed: rare, and its future is large).
async fn send(
    cluster: &Cluster,
    ep: &Option<Arc<crate::upstream::cluster::Endpoint>>,
    tunnel: Option<&crate::upstream::pool::Pool>,
    http2: bool,
    req: Request<ProxyBody>,
) -> Result<crate::upstream::client::Sent, UpstreamError> {
    if let Some(t) = tunnel {
        return t.send(http2, req).await;
    }
    match ep {
        Some(ep) => ep.clients(&cluster.pool).send(http2, req).await,
        None => Box::pin(cluster.clients.send(http2, req)).await,
    }
}

/// A hash cookie made up for a client that had none.
struct NewCookie {
    name: String,
    path: Option<String>,
    ttl: Duration,
    value: String,
}

impl NewCookie {
    /// Envoy's form: `name="value"; Max-Age=N; Path=p; HttpOnly`.
    fn set_cookie(&self) -> String {
        let mut s = format!(
            "{}=\"{}\"; Max-Age={}",
            self.name,
            self.value,
            self.ttl.as_secs()
        );
        if let Some(p) = &self.path {
            s.push_str("; Path=");
            s.push_str(p);
        }
        s.push_str("; HttpOnly");
        s
    }
}

static X_ENVOY_UPSTREAM_SERVICE_TIME: http::HeaderName =
    http::HeaderName::from_static("x-envoy-upstream-service-time");
static X_ENVOY_ATTEMPT_COUNT: http::HeaderName =
    http::HeaderName::from_static("x-envoy-attempt-count");
static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// `ms` as a header value; the common small values without allocating.
fn ms_value(ms: u64) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match SMALL.get(ms as usize) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(ms),
    }
}

fn grpc_status(h: &http::HeaderMap) -> Option<u32> {
    h.get(&GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

/// Copies bytes both ways between an upgraded client and upstream
/// connection (WebSocket).
async fn tunnel(down: hyper::upgrade::OnUpgrade, up: hyper::upgrade::OnUpgrade) {
    let (Ok(down), Ok(up)) = tokio::join!(down, up) else {
        return;
    };
    let mut down = hyper_util::rt::TokioIo::new(down);
    let mut up = hyper_util::rt::TokioIo::new(up);
    let _ = crate::transport::copy::copy_bidirectional(&mut down, &mut up).await;
}
