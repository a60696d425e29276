//! Where the proxy applies security policy ([`crate::policy`]): one call
//! in the HTTP request path ([`check_request`], after routing, rewrites and
//! route header operations — what the destination's sidecar would see —
//! and before forwarding) and one in the TCP path ([`check_connection`],
//! after the route picks a cluster). With no policy on the node both are a
//! single pointer check.
use std::borrow::Cow;
use std::net::SocketAddr;

use http::{HeaderName, HeaderValue, Response, StatusCode};

use crate::policy::{self, HeaderEdit, HeaderLookup, HttpRequest, Outcome, Request};
use crate::proxy::body::ProxyBody;
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
/// header edits are applied to `parts`); `Some(reply)`: answer with it —
/// 401 with Envoy's `jwt_authn` message, or 403 `RBAC: access denied`
/// (flag `RBAC`).
#[inline]
pub fn check_request(
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
    check_with(policies, cluster, peer, parts, grpc, rec, mesh)
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
) -> Option<Response<ProxyBody>> {
    let guard = policies.guard(cluster)?;
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
    match outcome {
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
    }
}

/// Whether a mirrored copy of `out` may go to `cluster`: its destination
/// workloads' policies must allow it, as they would the request itself (a
/// denied or unauthenticated copy is not sent; nothing is logged as a
/// denial, the client never sees mirrors).
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
    let (identity, remote_enforced) = mesh_peer(mesh, guard, peer.ip());
    let req = Request {
        source_ip: peer.ip(),
        sni,
        http: None,
    };
    match policy::enforce_with_peer(guard, &req, identity.as_ref(), remote_enforced) {
        Outcome::Allow { .. } | Outcome::Unauthenticated(_) => false,
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
