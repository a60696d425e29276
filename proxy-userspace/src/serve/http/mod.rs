//! The HTTP request pipeline of the outbound listener, in Envoy's filter
//! order: route match (404 `NR` when none), CORS, redirect / direct
//! response, fault injection, destination pick, rewrite and header
//! operations, mirroring, then forwarding with retries and timeouts.
pub(crate) mod authz;
pub mod cors;
pub mod forward;
pub mod log_body;
pub mod mirror;
pub use strait_codec::normalize;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt;

use self::forward::{Outgoing, Plan, RequestBody};
use self::log_body::{CountingBody, LoggedBody, PendingLog};
use super::failure::Failure;
use super::local_reply::{self, grpc_reply, local_reply};
use super::table::Table;
use super::Shared;
use crate::proxy::body::{empty, full, ProxyBody};
use crate::proxy::head::{ReqHead, ReqHeaders};
use crate::runtime::route::actions::{chance, AbortStatus};
use crate::runtime::route::{HttpRoute, MatchContext, RetryPolicy, RouteAction};
use crate::runtime::table::PortProtocol;
use crate::telemetry::access_log::AccessLogRecord;
use crate::telemetry::flags::ResponseFlags;
use crate::upstream::cluster::UpstreamProtocol;

/// Largest request body buffered so that it can be retried or mirrored
/// (Envoy's `per_request_buffer_limit_bytes` is 1 MiB; smaller here to keep
/// memory low). Larger or unknown-length bodies are streamed once.
const MAX_BUFFERED_BODY: u64 = 64 * 1024;

/// Per-connection facts every request on it shares.
pub struct ConnInfo {
    /// Proxy state (table, sink, settings).
    pub shared: Arc<Shared>,
    /// Original destination (service VIP:port).
    pub dst: SocketAddr,
    /// Client address.
    pub peer: SocketAddr,
    /// The connection's port protocol was sniffed, not declared.
    pub sniffed: bool,
    /// The connection's security and peer identities (telemetry labels).
    pub peer_info: crate::telemetry::PeerInfo,
}

static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");
static X_ENVOY_ORIGINAL_PATH: http::HeaderName =
    http::HeaderName::from_static("x-envoy-original-path");

/// The request bodies the pipeline takes: hyper's `Incoming` (HTTP/2 and
/// the HTTP/1.1 connections hyper serves) and the bodies Strait's own
/// HTTP/1.1 server reads ahead (`proxy::h1::server`).
pub trait RequestBodyIn:
    http_body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static
where
    Self::Error: Into<crate::proxy::body::BoxError>,
{
}

impl<B> RequestBodyIn for B
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<crate::proxy::body::BoxError>,
{
}

/// Serves one request.
pub async fn handle<B>(
    conn: Arc<ConnInfo>,
    mut parts: ReqHead,
    body: B,
) -> Result<Response<LoggedBody>, Infallible>
where
    B: RequestBodyIn,
    B::Error: Into<crate::proxy::body::BoxError>,
{
    // Before anything reads the path: routes, logs and the upstream all
    // see the normalized one (Istio's `pathNormalization`).
    let bad_path = normalize_path(&mut parts, conn.shared.path_normalization.get()).is_err();
    let table = conn.shared.table.load_full();
    if !parts.headers.contains_key(&X_REQUEST_ID) {
        let id = uuid::Uuid::new_v4();
        let mut buf = uuid::Uuid::encode_buffer();
        let s = id.hyphenated().encode_lower(&mut buf);
        parts.headers.insert(
            X_REQUEST_ID.clone(),
            HeaderValue::from_str(s).expect("uuid is ASCII"),
        );
    }
    let grpc = is_grpc(&parts.headers);
    // Copy request fields into the record only when someone reads it.
    let full = conn.shared.sink.enabled();
    let header = |n: &http::HeaderName| {
        if !full {
            return None;
        }
        parts.headers.get_str(n).map(str::to_owned)
    };
    let bytes_received = full.then(|| Arc::new(AtomicU64::new(0)));
    // If the client goes away before the response starts, this future is
    // dropped mid-route: the guard still logs the request (code 0, `DC`).
    // Built in place (the record is large).
    let mut pending = Some(PendingLog {
        record: AccessLogRecord {
            start_time: full.then(SystemTime::now),
            method: Some(parts.method.clone()),
            path: parts
                .uri
                .path_and_query()
                .filter(|_| full)
                .map(|p| p.as_str().to_owned()),
            protocol: Some(protocol_name(parts.version)),
            request_protocol: if grpc { "grpc" } else { "http" },
            x_forwarded_for: header(&X_FORWARDED_FOR),
            user_agent: header(&http::header::USER_AGENT),
            request_id: header(&X_REQUEST_ID),
            authority: header_authority(&parts, full),
            downstream_local_address: Some(conn.dst),
            downstream_remote_address: Some(conn.peer),
            peer: if full {
                conn.peer_info.clone()
            } else {
                Default::default()
            },
            ..Default::default()
        },
        sink: conn.shared.sink.clone(),
        // No clock reads for a record nobody reads.
        start: full.then(Instant::now),
        bytes_received: bytes_received.clone(),
    });
    let body = CountingBody::new(body, bytes_received);
    let guard = AbandonGuard(&mut pending);
    let record = &mut guard.0.as_mut().expect("set above").record;
    let (response, hold) = if bad_path {
        record
            .response_flags
            .insert(ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR);
        record.response_code_details = Some("path_normalization_failed");
        (
            local_reply(StatusCode::BAD_REQUEST, "Bad Request", grpc),
            Held::default(),
        )
    } else {
        route(&conn, &table, parts, body, grpc, record).await
    };
    record.response_code = response.status().as_u16();
    if record.grpc_status.is_none() && grpc {
        record.grpc_status = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()?.parse().ok());
    }
    let (rparts, rbody) = response.into_parts();
    let mut body = if full {
        LoggedBody::new(rbody, Box::new(guard.0.take().expect("set above")))
    } else {
        // Nothing to log: dropped where it is.
        *guard.0 = None;
        LoggedBody::unlogged(rbody)
    };
    body.hold(hold);
    // `table` (and with it the routes this request used) is released here;
    // the guards in `hold` keep the cluster counters until the body ends.
    drop(table);
    Ok(Response::from_parts(rparts, body))
}

use self::forward::Held;

/// Logs a request whose handling was abandoned (client disconnect).
struct AbandonGuard<'a>(&'a mut Option<PendingLog>);

impl Drop for AbandonGuard<'_> {
    fn drop(&mut self) {
        if let Some(log) = self.0.take() {
            log.finish(0, false);
        }
    }
}

async fn route<B>(
    conn: &ConnInfo,
    table: &Arc<Table>,
    mut parts: ReqHead,
    body: CountingBody<B>,
    grpc: bool,
    rec: &mut AccessLogRecord,
) -> (Response<ProxyBody>, Held)
where
    B: RequestBodyIn,
    B::Error: Into<crate::proxy::body::BoxError>,
{
    let no_hold = Held::default;
    if parts.method == http::Method::CONNECT {
        // No route matches CONNECT without a `connect_matcher`, which
        // Istio does not configure: Envoy answers 404 `NR`.
        rec.response_flags.insert(ResponseFlags::NO_ROUTE_FOUND);
        rec.response_code_details = Some("route_not_found");
        return (local_reply(StatusCode::NOT_FOUND, "", grpc), no_hold());
    }
    let Some(svc) = table.service(conn.dst) else {
        if table.registry_only() {
            // REGISTRY_ONLY: Istio's block-all route, a 502 direct response
            // on the BlackHoleCluster.
            rec.upstream_cluster = Some(crate::runtime::table::BLACK_HOLE_CLUSTER.into());
            rec.response_code_details = Some("direct_response");
            return (local_reply(StatusCode::BAD_GATEWAY, "", grpc), no_hold());
        }
        // Unknown destination: Envoy's PassthroughCluster. A workload's
        // address is checked against that workload's policies.
        if let Some(r) = authz::check_passthrough_request(
            table,
            conn.dst,
            conn.peer,
            &mut parts,
            grpc,
            rec,
            conn.shared.settings.hbone.as_deref(),
        )
        .await
        {
            return (r, no_hold());
        }
        let policy = RetryPolicy::default();
        let http2 = parts.version == Version::HTTP_2;
        let out = outgoing(&mut parts, body);
        let plan = Plan {
            cluster: table.clusters.passthrough(),
            retries: &policy,
            timeout: None,
            http2,
            original_dst: conn.dst,
            source: conn.peer,
            grpc,
            mesh: conn.shared.settings.hbone.as_ref(),
        };
        let f = Box::pin(forward::forward(plan, out, rec)).await;
        return (f.response, f.hold);
    };
    rec.destination_service = Some(svc.host.clone());
    let scheme: std::borrow::Cow<'static, str> = match parts.headers.get_str(&X_FORWARDED_PROTO) {
        None | Some("http") => "http".into(),
        Some("https") => "https".into(),
        Some(other) => other.to_owned().into(),
    };
    let source = table.routes.workloads.get(&conn.peer.ip()).map(|w| &**w);
    let ctx = MatchContext {
        port: svc.port,
        source,
        scheme: &scheme,
    };
    let Some((route, matched)) = svc.routes.select_http(&parts, &ctx) else {
        return (Failure::NoRoute.reply(rec, grpc), no_hold());
    };
    rec.route_name = route.name.clone();

    // CORS: an allowed preflight is answered here.
    let cors_origin = route
        .cors
        .as_ref()
        .and_then(|c| cors::allowed_origin(c, &parts.headers));
    if let (Some(policy), Some(origin)) = (&route.cors, &cors_origin) {
        if cors::is_preflight(&parts.method, &parts.headers) {
            rec.response_code_details = Some("cors_response");
            return (cors::preflight_response(policy, origin.clone()), no_hold());
        }
    }

    let forward_to = match &route.action {
        RouteAction::Redirect(r) => {
            let authority = crate::runtime::route::matching::authority(&parts).unwrap_or_default();
            let location = r.location(&parts.uri, authority, &scheme);
            let mut resp = Response::new(empty());
            *resp.status_mut() = r.code;
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(http::header::LOCATION, v);
            }
            rec.response_code_details = Some("direct_response");
            return (resp, no_hold());
        }
        RouteAction::DirectResponse { status, body } => {
            let mut resp = Response::new(if body.is_empty() {
                empty()
            } else {
                full(body.clone())
            });
            *resp.status_mut() = *status;
            route.response_headers.apply(resp.headers_mut());
            rec.response_code_details = Some("direct_response");
            return (resp, no_hold());
        }
        RouteAction::Forward(w) => w,
    };

    if let Some(fault) = &route.fault {
        if let Some((pct, delay)) = fault.delay {
            if chance(pct) {
                rec.response_flags.insert(ResponseFlags::DELAY_INJECTED);
                tokio::time::sleep(delay).await;
            }
        }
        if let Some(abort) = &fault.abort {
            if chance(abort.percent) {
                rec.response_flags.insert(ResponseFlags::FAULT_INJECTED);
                rec.response_code_details = Some("fault_filter_abort");
                let resp = match abort.status {
                    AbortStatus::Grpc(code) => grpc_reply(code, local_reply::FAULT_ABORT),
                    AbortStatus::Http(code) => {
                        let status =
                            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                        local_reply(status, local_reply::FAULT_ABORT, false)
                    }
                };
                return (resp, no_hold());
            }
        }
    }

    // A route's cluster id always resolves in the table it was compiled
    // with; were it not to, the request fails closed like an empty cluster.
    let Some((dest, dest_cluster)) = forward_to
        .pick()
        .and_then(|d| Some((d, table.cluster(d.cluster)?)))
    else {
        return (Failure::NoHealthyUpstream.reply(rec, grpc), no_hold());
    };

    // Mirrors get the authority as the client sent it (before rewrite).
    let mirror_authority = header_authority(&parts, !route.mirrors.is_empty());
    // Rewrite, then header operations (route, then destination).
    let matched_uri = matched.and_then(|i| route.matches[i].uri.as_ref());
    if let Some(rw) = &route.rewrite {
        if let Some(new) = rw.rewrite_path(&parts.uri, matched_uri) {
            if let Some(pq) = parts.uri.path_and_query() {
                if let Ok(v) = HeaderValue::from_str(pq.path()) {
                    parts.headers.insert(X_ENVOY_ORIGINAL_PATH.clone(), v);
                }
            }
            if let Ok(u) = http::Uri::builder().path_and_query(new).build() {
                parts.uri = u;
            }
        }
        if let Some(a) = &rw.authority {
            parts.headers.insert(http::header::HOST, a.clone());
        }
    }
    for ops in [&route.request_headers, &dest.request_headers] {
        if !ops.is_empty() {
            ops.apply(parts.headers.map_mut());
        }
    }
    // Security policy of the destination workloads (one pointer check when
    // the node has none).
    let cluster = &dest_cluster.name;
    if let Some(r) = authz::check_request(
        table,
        cluster,
        conn.peer,
        &mut parts,
        grpc,
        rec,
        conn.shared.settings.hbone.as_deref(),
    )
    .await
    {
        return (r, no_hold());
    }

    let http2 = match dest_cluster.protocol {
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::Http2 => true,
        UpstreamProtocol::Downstream => parts.version == Version::HTTP_2,
    } || (svc.protocol == PortProtocol::Grpc || grpc)
        && dest_cluster.protocol != UpstreamProtocol::Http1;

    let want_buffer = route.retries.attempts > 0 || !route.mirrors.is_empty();
    let mut out = outgoing(&mut parts, body);
    if let Some(o) = buffer_if_small(&mut out, want_buffer).await {
        rec.response_flags
            .insert(ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR);
        rec.response_code_details = Some("downstream_protocol_error");
        return (o, no_hold());
    }
    if let RequestBody::Buffered(b) = &out.body {
        for m in &route.mirrors {
            let Some(mc) = table.cluster(m.cluster) else {
                continue;
            };
            let allowed = || authz::mirror_allowed(table, &mc.name, conn.peer, &out);
            if chance(m.percent) && allowed() {
                mirror::spawn_mirror(
                    mc.clone(),
                    conn.shared
                        .settings
                        .hbone
                        .clone()
                        .map(|m| (m, conn.peer.ip())),
                    out.method.clone(),
                    out.path_and_query.clone(),
                    out.headers.to_map(),
                    b.clone(),
                    mirror_authority.as_deref().unwrap_or(""),
                );
            }
        }
    }

    let plan = Plan {
        cluster: dest_cluster,
        retries: &route.retries,
        timeout: route.timeout,
        http2,
        original_dst: conn.dst,
        source: conn.peer,
        grpc,
        mesh: conn.shared.settings.hbone.as_ref(),
    };
    let mut f = forward::forward(plan, out, rec).await;
    finish_response(route, dest, cors_origin, &mut f.response);
    (f.response, f.hold)
}

fn finish_response(
    route: &HttpRoute,
    dest: &crate::runtime::route::WeightedCluster,
    cors_origin: Option<HeaderValue>,
    resp: &mut Response<ProxyBody>,
) {
    let upgrade = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let mut headers = ReqHeaders::Map(std::mem::take(resp.headers_mut()));
    headers.strip_hop_by_hop(upgrade);
    *resp.headers_mut() = headers.into_map();
    route.response_headers.apply(resp.headers_mut());
    dest.response_headers.apply(resp.headers_mut());
    if let (Some(policy), Some(origin)) = (&route.cors, cors_origin) {
        cors::decorate(policy, origin, resp.headers_mut());
    }
}

/// Builds the upstream request from the client's: hop-by-hop headers
/// removed, `host` and `x-forwarded-proto` set as Envoy does.
fn outgoing<B>(parts: &mut ReqHead, body: CountingBody<B>) -> Outgoing
where
    B: RequestBodyIn,
    B::Error: Into<crate::proxy::body::BoxError>,
{
    let upgrade =
        parts.headers.contains_key(&http::header::UPGRADE) && parts.version == Version::HTTP_11;
    let on_upgrade = if upgrade {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    let mut headers = std::mem::take(&mut parts.headers);
    headers.strip_hop_by_hop(upgrade);
    if !headers.contains_key(&http::header::HOST) {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                headers.insert(http::header::HOST, v);
            }
        }
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let mut downstream_error = None;
    let body = if body.is_end_stream() {
        RequestBody::Buffered(bytes::Bytes::new())
    } else {
        let flag = Arc::new(AtomicBool::new(false));
        downstream_error = Some(flag.clone());
        RequestBody::Streaming(body.flag_errors(flag).boxed())
    };
    Outgoing {
        method: parts.method.clone(),
        path_and_query,
        headers,
        body,
        on_upgrade,
        downstream_error,
    }
}

/// Reads a small body of known length fully so it can be retried or
/// mirrored. Returns a reply when the client's body fails.
async fn buffer_if_small(out: &mut Outgoing, want: bool) -> Option<Response<ProxyBody>> {
    if !want {
        return None;
    }
    let RequestBody::Streaming(body) = &mut out.body else {
        return None;
    };
    match body.size_hint().exact() {
        Some(n) if n <= MAX_BUFFERED_BODY => {}
        _ => return None,
    }
    let b = std::mem::replace(body, empty());
    match b.collect().await {
        Ok(c) => {
            out.body = RequestBody::Buffered(c.to_bytes());
            None
        }
        Err(_) => Some(local_reply(StatusCode::BAD_REQUEST, "Bad Request", false)),
    }
}

/// Normalizes the request's path in place as `mode` says (see
/// [`normalize`]); the query and any scheme/authority stay.
///
/// Errors: the path cannot be normalized (`%00`): Envoy answers 400.
pub fn normalize_path(
    parts: &mut ReqHead,
    mode: normalize::PathNormalization,
) -> Result<(), normalize::NormalizeError> {
    normalize::normalize_head(parts, mode)
}

/// Logs a request the HTTP/1.1 codec refused before routing (framing
/// errors, oversized heads): `status`, flag `DPE`, Envoy's `details`.
/// `dpe`: flag it `DPE` (a malformed request; not for timeouts).
pub fn log_protocol_error(conn: &ConnInfo, status: StatusCode, details: &'static str, dpe: bool) {
    let sink = &conn.shared.sink;
    if !sink.enabled() {
        return;
    }
    sink.log(AccessLogRecord {
        start_time: Some(SystemTime::now()),
        protocol: Some("HTTP/1.1"),
        request_protocol: "http",
        response_code: status.as_u16(),
        response_flags: if dpe {
            ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR
        } else {
            ResponseFlags::empty()
        },
        response_code_details: Some(details),
        downstream_local_address: Some(conn.dst),
        downstream_remote_address: Some(conn.peer),
        peer: conn.peer_info.clone(),
        ..Default::default()
    });
}

/// Whether the client's body of `out` failed (malformed chunked framing,
/// early close): the client's fault, answered 400 `DPE`.
pub(crate) fn downstream_failed(flag: &Option<Arc<AtomicBool>>) -> bool {
    flag.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// The request's `:authority` / `Host`, copied only when `wanted`.
fn header_authority(parts: &ReqHead, wanted: bool) -> Option<String> {
    if !wanted {
        return None;
    }
    crate::runtime::route::matching::authority(parts).map(str::to_owned)
}

fn is_grpc(h: &ReqHeaders) -> bool {
    h.get_str(&http::header::CONTENT_TYPE)
        .is_some_and(|v| v.starts_with("application/grpc"))
}

fn protocol_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}
