//! Where the proxy applies security policy ([`crate::policy`]): one call
//! in the HTTP request path ([`check_request`], after routing, rewrites and
//! route header operations — what the destination's sidecar would see —
//! and before forwarding) and one in the TCP path ([`check_connection`],
//! after the route picks a cluster). With no policy on the node both are a
//! single pointer check. A CUSTOM policy's external authorizer is asked
//! from [`check_request`] (the only await on this path).
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use http::{HeaderName, HeaderValue, Response, StatusCode};

use std::sync::Arc;

use crate::policy::ext_authz::{ExtAuthz, Verdict};
use crate::policy::{self, HeaderEdit, HeaderLookup, HttpRequest, Outcome, Request};
use crate::proxy::body::{empty, full, ProxyBody};
use crate::proxy::head::{ReqHead, ReqHeaders};
use crate::serve::local_reply::local_reply;
use crate::serve::table::Table;
use crate::telemetry::access_log::AccessLogRecord;
use crate::telemetry::flags::ResponseFlags;
use crate::transport::hbone::MeshOutbound;

/// Envoy's RBAC filter's 403 body.
pub const RBAC_DENIED: &str = "RBAC: access denied";

impl HeaderLookup for ReqHeaders {
    fn joined(&self, name: &HeaderName) -> Option<Cow<'_, str>> {
        let mut first: Option<&str> = None;
        let mut joined: Option<String> = None;
        self.find_map_all(name, |v| {
            let v = std::str::from_utf8(v).ok()?;
            match (&mut joined, first) {
                (None, None) => first = Some(v),
                (None, Some(f)) => joined = Some(format!("{f},{v}")),
                (Some(j), _) => {
                    j.push(',');
                    j.push_str(v);
                }
            }
            None::<()>
        });
        match joined {
            Some(j) => Some(Cow::Owned(j)),
            None => first.map(Cow::Borrowed),
        }
    }
}

/// Checks an HTTP request routed to `cluster`. `None`: go on (the JWT
/// header edits and the authorizer's `headersToUpstreamOnAllow` headers
/// are applied to `parts`); `Some(reply)`: answer with it — 401 with
/// Envoy's `jwt_authn` message, 403 `RBAC: access denied` (flag `RBAC`),
/// or the external authorizer's reply (flag `UAEX`).
#[inline]
pub async fn check_request(
    table: &Table,
    cluster: &str,
    peer: SocketAddr,
    parts: &mut ReqHead,
    grpc: bool,
    rec: &mut AccessLogRecord,
    mesh: Option<&MeshOutbound>,
) -> Option<Response<ProxyBody>> {
    // The no-policy path: one pointer check, nothing else inlined.
    let policies = table.policy.as_deref()?;
    match check_with(policies, cluster, peer, parts, grpc, rec, mesh) {
        Step::Done(r) => r,
        Step::Ask(ask, then) => ask_external(ask, *then, peer, cluster, parts, grpc, rec).await,
    }
}

/// [`check_request`] for a request on Envoy's `PassthroughCluster` to the
/// workload address `dst` (no Service): the policies of the workload at
/// `dst` ([`policy::PolicyTable::passthrough_guard`]), so a client that
/// dials a pod IP is checked as one that goes through its Service.
pub async fn check_passthrough_request(
    table: &Table,
    dst: SocketAddr,
    peer: SocketAddr,
    parts: &mut ReqHead,
    grpc: bool,
    rec: &mut AccessLogRecord,
    mesh: Option<&MeshOutbound>,
) -> Option<Response<ProxyBody>> {
    let guard = table.policy.as_deref()?.passthrough_guard(dst)?;
    const CLUSTER: &str = "PassthroughCluster";
    match check_guard(&guard, CLUSTER, peer, parts, grpc, rec, mesh) {
        Step::Done(r) => r,
        Step::Ask(ask, then) => ask_external(ask, *then, peer, CLUSTER, parts, grpc, rec).await,
    }
}

/// What the synchronous part of the check decided.
enum Step {
    Done(Option<Response<ProxyBody>>),
    Ask(Vec<(Arc<ExtAuthz>, Arc<str>)>, Box<Outcome>),
}

/// Asks the CUSTOM policies' authorizers, then applies `then`.
#[inline(never)]
async fn ask_external(
    ask: Vec<(Arc<ExtAuthz>, Arc<str>)>,
    then: Outcome,
    peer: SocketAddr,
    cluster: &str,
    parts: &mut ReqHead,
    grpc: bool,
    rec: &mut AccessLogRecord,
) -> Option<Response<ProxyBody>> {
    let host = crate::runtime::route::matching::authority(parts)
        .unwrap_or("")
        .to_string();
    let pq = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
    let headers = parts.headers.to_map();
    let check = CustomCheck {
        on_behalf_of: peer.ip(),
        method: &parts.method,
        path_and_query: &pq,
        host: &host,
        headers: &headers,
        peer,
        at: cluster,
    };
    match ask_custom(ask, check, rec).await {
        Ok(upstream) => {
            for (n, v) in upstream {
                parts.headers.insert(n, v);
            }
        }
        Err(reply) => return Some(reply),
    }
    match apply(then, peer, cluster, parts, grpc, rec) {
        Step::Done(r) => r,
        // `then` never asks again (enforce wraps once).
        Step::Ask(..) => Some(local_reply(StatusCode::FORBIDDEN, RBAC_DENIED, grpc)),
    }
}

/// One request as a CUSTOM policy's external authorizers are asked about
/// it ([`ask_custom`]).
pub(crate) struct CustomCheck<'a> {
    /// The local workload the check is made for (the source of a tunnel
    /// to a meshed authorizer): the client pod on the route path, the
    /// destination pod on the inbound policy listener.
    pub on_behalf_of: IpAddr,
    /// The request's method.
    pub method: &'a http::Method,
    /// Its path and query, as the authorizer's check request carries it.
    pub path_and_query: &'a str,
    /// Its authority.
    pub host: &'a str,
    /// Its headers (those the provider includes are sent).
    pub headers: &'a http::HeaderMap,
    /// The downstream client, for the log line.
    pub peer: SocketAddr,
    /// Where the check is made, for the log line: the cluster, or
    /// `inbound` on the inbound policy listener.
    pub at: &'a str,
}

/// Asks each CUSTOM policy's authorizer in `ask` in turn, before any DENY
/// or ALLOW policy (Istio's order; Envoy's `ext_authz` filter before
/// `rbac`). All allow: the headers they return for the upstream
/// (`headersToUpstreamOnAllow`), for the caller to set. The first deny
/// ends it: `rec` gets flag `UAEX` and the details `ext_authz_denied`
/// (`ext_authz_error` when the check itself failed and `statusOnError`
/// answers), and the reply is the authorizer's ([`ext_authz_reply`]); the
/// caller records the reply's status. Shared by the route path
/// ([`check_request`]) and the inbound policy listener
/// (`serve::inbound`).
pub(crate) async fn ask_custom(
    ask: Vec<(Arc<ExtAuthz>, Arc<str>)>,
    check: CustomCheck<'_>,
    rec: &mut AccessLogRecord,
) -> Result<Vec<(HeaderName, HeaderValue)>, Response<ProxyBody>> {
    let mut upstream = Vec::new();
    for (x, policy) in ask {
        let verdict = x
            .check(
                check.on_behalf_of,
                check.method,
                check.path_and_query,
                check.host,
                check.headers,
            )
            .await;
        match verdict {
            Verdict::Allow(h) => upstream.extend(h),
            Verdict::Deny {
                status,
                headers,
                body,
                error,
            } => {
                rec.response_flags
                    .insert(ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE);
                rec.response_code_details = Some(if error.is_some() {
                    "ext_authz_error"
                } else {
                    "ext_authz_denied"
                });
                tracing::debug!(
                    source = %check.peer, at = check.at, %policy, provider = %x.name, %status, ?error,
                    "request denied by the external authorizer of a CUSTOM AuthorizationPolicy"
                );
                return Err(ext_authz_reply(status, headers, body));
            }
        }
    }
    Ok(upstream)
}

/// The client's reply when an external authorizer denies: its status,
/// headers (`headersToDownstreamOnDeny`) and body.
pub(crate) fn ext_authz_reply(
    status: StatusCode,
    headers: http::HeaderMap,
    body: bytes::Bytes,
) -> Response<ProxyBody> {
    let mut r = Response::new(if body.is_empty() {
        empty()
    } else {
        full(body.clone())
    });
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    if !body.is_empty() {
        r.headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    r
}

/// With mutual TLS on (`mesh`): the client pod's identity (what its
/// tunnel presents), and whether every policy-selected workload of the
/// guard on another node is reached over HBONE (its node enforces).
fn mesh_peer(
    mesh: Option<&MeshOutbound>,
    guard: &policy::Guard,
    source: std::net::IpAddr,
) -> (Option<policy::PeerIdentity>, bool) {
    let Some(m) = mesh else {
        return (None, false);
    };
    let Some(id) = m.local_identity(source) else {
        return (None, false);
    };
    let peer = policy::PeerIdentity {
        principal: format!(
            "{}/ns/{}/sa/{}",
            id.trust_domain, id.namespace, id.service_account
        ),
        namespace: id.namespace,
    };
    let remote_enforced =
        !guard.remote_ips.is_empty() && guard.remote_ips.iter().all(|ip| m.is_meshed(*ip));
    (Some(peer), remote_enforced)
}

#[inline(never)]
fn check_with(
    policies: &policy::PolicyTable,
    cluster: &str,
    peer: SocketAddr,
    parts: &mut ReqHead,
    grpc: bool,
    rec: &mut AccessLogRecord,
    mesh: Option<&MeshOutbound>,
) -> Step {
    let Some(guard) = policies.guard(cluster) else {
        return Step::Done(None);
    };
    check_guard(guard, cluster, peer, parts, grpc, rec, mesh)
}

fn check_guard(
    guard: &policy::Guard,
    cluster: &str,
    peer: SocketAddr,
    parts: &mut ReqHead,
    grpc: bool,
    rec: &mut AccessLogRecord,
    mesh: Option<&MeshOutbound>,
) -> Step {
    let (identity, remote_enforced) = mesh_peer(mesh, guard, peer.ip());
    let outcome = {
        let host = crate::runtime::route::matching::authority(parts).unwrap_or("");
        let req = Request {
            source_ip: peer.ip(),
            sni: None,
            http: Some(HttpRequest {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query: parts.uri.query(),
                host,
                headers: &parts.headers,
            }),
        };
        policy::enforce_with_peer(guard, &req, identity.as_ref(), remote_enforced)
    };
    apply(outcome, peer, cluster, parts, grpc, rec)
}

/// Applies a local outcome: header edits on allow, or the 401 / 403 reply.
fn apply(
    outcome: Outcome,
    peer: SocketAddr,
    cluster: &str,
    parts: &mut ReqHead,
    grpc: bool,
    rec: &mut AccessLogRecord,
) -> Step {
    Step::Done(match outcome {
        Outcome::External { ask, then } => return Step::Ask(ask, then),
        Outcome::Allow { edits } => {
            for e in edits {
                match e {
                    HeaderEdit::Remove(n) => parts.headers.remove(&n),
                    HeaderEdit::Set(n, v) => parts.headers.insert(n, v),
                }
            }
            None
        }
        Outcome::Unauthenticated(why) => {
            rec.response_code_details = Some("jwt_authn_access_denied");
            tracing::debug!(source = %peer, cluster, "JWT rejected: {why}");
            let mut r = local_reply(StatusCode::UNAUTHORIZED, why, grpc);
            let realm = format!(
                "Bearer realm=\"http://{}{}\", error=\"invalid_token\"",
                crate::runtime::route::matching::authority(parts).unwrap_or(""),
                parts.uri.path()
            );
            if let Ok(v) = HeaderValue::from_str(&realm) {
                r.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
            }
            Some(r)
        }
        Outcome::Denied(d) => {
            rec.response_flags.insert(ResponseFlags::RBAC_ACCESS_DENIED);
            rec.response_code_details = Some(if d.policy.is_some() {
                "rbac_access_denied_matched_policy"
            } else {
                "rbac_access_denied_matched_policy[none]"
            });
            tracing::debug!(
                source = %peer, cluster, policy = ?d.policy, why = d.why.as_str(),
                "request denied by AuthorizationPolicy"
            );
            Some(local_reply(StatusCode::FORBIDDEN, RBAC_DENIED, grpc))
        }
    })
}

/// Whether a mirrored copy of `out` may go to `cluster`: its destination
/// workloads' policies must allow it, as they would the request itself (a
/// denied or unauthenticated copy is not sent; nothing is logged as a
/// denial, the client never sees mirrors). A copy that would need a
/// CUSTOM policy's external authorizer is not sent (the authorizer is
/// asked once, for the request itself).
pub fn mirror_allowed(
    table: &Table,
    cluster: &str,
    peer: SocketAddr,
    out: &super::forward::Outgoing,
) -> bool {
    let Some(guard) = table.policy.as_deref().and_then(|p| p.guard(cluster)) else {
        return true;
    };
    let host = out.headers.get_str(&http::header::HOST).unwrap_or_default();
    let req = Request {
        source_ip: peer.ip(),
        sni: None,
        http: Some(HttpRequest {
            method: out.method.as_str(),
            path: out.path_and_query.path(),
            query: out.path_and_query.query(),
            host,
            headers: &out.headers,
        }),
    };
    matches!(policy::enforce(guard, &req), Outcome::Allow { .. })
}

/// Checks a TCP connection routed to `cluster`; `true` when it is denied
/// (the caller closes it; flag `RBAC` in the access log).
pub fn check_connection(
    table: &Table,
    cluster: &str,
    peer: SocketAddr,
    sni: Option<&str>,
    rec: &mut AccessLogRecord,
    mesh: Option<&MeshOutbound>,
) -> bool {
    let Some(guard) = table.policy.as_deref().and_then(|p| p.guard(cluster)) else {
        return false;
    };
    connection_denied(guard, cluster, peer, sni, rec, mesh)
}

/// [`check_connection`] for a connection on Envoy's `PassthroughCluster`
/// to the workload address `dst` (see [`check_passthrough_request`]).
pub fn check_passthrough_connection(
    table: &Table,
    dst: SocketAddr,
    peer: SocketAddr,
    sni: Option<&str>,
    rec: &mut AccessLogRecord,
    mesh: Option<&MeshOutbound>,
) -> bool {
    let Some(guard) = table
        .policy
        .as_deref()
        .and_then(|p| p.passthrough_guard(dst))
    else {
        return false;
    };
    connection_denied(&guard, "PassthroughCluster", peer, sni, rec, mesh)
}

fn connection_denied(
    guard: &policy::Guard,
    cluster: &str,
    peer: SocketAddr,
    sni: Option<&str>,
    rec: &mut AccessLogRecord,
    mesh: Option<&MeshOutbound>,
) -> bool {
    let (identity, remote_enforced) = mesh_peer(mesh, guard, peer.ip());
    let req = Request {
        source_ip: peer.ip(),
        sni,
        http: None,
    };
    match policy::enforce_with_peer(guard, &req, identity.as_ref(), remote_enforced) {
        Outcome::Allow { .. } | Outcome::Unauthenticated(_) => false,
        // An HTTP authorizer cannot check a connection (enforce denies
        // those already); closed all the same.
        Outcome::External { .. } => {
            rec.response_flags
                .insert(ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE);
            true
        }
        Outcome::Denied(d) => {
            rec.response_flags.insert(ResponseFlags::RBAC_ACCESS_DENIED);
            rec.response_code_details = Some("rbac_access_denied_matched_policy");
            tracing::debug!(
                source = %peer, cluster, policy = ?d.policy, why = d.why.as_str(),
                "connection denied by AuthorizationPolicy"
            );
            true
        }
    }
}

/// Checks a connection arriving over HBONE at this node's workload
/// `target` from a peer with a verified mTLS identity (ztunnel's inbound
/// authorization): the workload's policy set with `source.principal` /
/// `source.namespace` known, as a TCP connection (HTTP-only fields are
/// undecidable: an ALLOW rule with them never matches). `true`: allowed.
/// Used for ports whose policies need only L4 facts; the others are
/// decided per request inside the tunnel (`serve::inbound`).
pub fn check_hbone(
    table: &Table,
    target: SocketAddr,
    source: std::net::IpAddr,
    peer: &policy::PeerIdentity,
) -> bool {
    let Some(view) = table
        .policy
        .as_deref()
        .and_then(|p| p.workloads.get(&target.ip()))
    else {
        return true;
    };
    let attrs = policy::Attrs {
        source_ip: source,
        remote_ip: source,
        dest_ip: Some(target.ip()),
        dest_port: target.port(),
        sni: None,
        peer: Some(peer),
        plaintext: false,
        http: None,
    };
    let d = view.set.authorize(&attrs);
    if !d.allowed {
        tracing::debug!(
            %source, %target, principal = %peer.principal, policy = ?d.policy, why = d.why.as_str(),
            "HBONE connection denied by AuthorizationPolicy"
        );
    }
    d.allowed
}

#[cfg(test)]
mod tests;
