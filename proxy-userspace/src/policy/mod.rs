//! Istio security policy, enforced on the node: RequestAuthentication (JWT)
//! and AuthorizationPolicy.
//!
//! ```text
//! snapshot swap: MeshSnapshot ──PolicyTable::build(scope)──▶ cluster → Guard ─▶ PolicySet per workload
//! request:       table.policy? (one pointer check) → guard(cluster)? → enforce():
//!                remote workload? → authn (401) → CUSTOM → DENY → ALLOW (403) → AUDIT log
//! ```
//!
//! What is enforced where (see README "Security policy"):
//! - on the L7 path of the node whose daemon handles the request, for
//!   requests routed to a cluster whose endpoints are policy-selected
//!   workloads of this node (the server side, as Istio enforces);
//! - TCP connections to such clusters are checked once, after the route;
//!   a denied connection is closed;
//! - a policy-selected workload on another node is left to its node when
//!   it is reached over HBONE (that node decides with the peer's identity,
//!   per request when its policies need HTTP facts); otherwise it cannot
//!   be protected and traffic to it through this node is denied
//!   ([`Why::RemoteWorkload`]);
//! - rules that need the peer's mTLS identity (`principals`, `namespaces`,
//!   `source.principal`, `source.namespace`) are decided with it when the
//!   caller knows it ([`enforce_with_peer`]); without it they are
//!   undecidable: ALLOW never matches on them, DENY and CUSTOM deny;
//! - CUSTOM asks the `envoyExtAuthzHttp` provider it names
//!   ([`ext_authz`]) before DENY and ALLOW decide; a provider Strait
//!   cannot use (gRPC, unsupported fields, not found) makes a match deny,
//!   and so does a CUSTOM match on a TCP connection.
pub mod attrs;
pub mod build;
pub mod eval;
pub mod ext_authz;
pub mod jwt;
pub mod matcher;
pub mod rule;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_index;
#[cfg(test)]
mod tests_jwt;

use std::net::IpAddr;
use std::sync::Arc;

pub use attrs::{Attrs, HeaderLookup, HttpAttrs, PeerIdentity};
pub use build::{Guard, GuardEntry, PolicyTable, Scope, WorkloadView, DEFAULT_ROOT_NAMESPACE};
pub use eval::{CompiledPolicy, Decision, PolicySet, Why};
pub use jwt::{AuthnResult, HeaderEdit, JwtIdentity};
pub use matcher::Tri;

/// A policy problem found while building the table.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A field the evaluator cannot use.
    #[error("AuthorizationPolicy {policy}: {field}: {message}")]
    Invalid {
        /// `namespace/name`.
        policy: String,
        /// Field path, e.g. `rules[0].when[1]`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A JWKS that cannot be used.
    #[error("jwks: {0}")]
    Jwks(String),
}

impl PolicyError {
    pub(crate) fn invalid(policy: &str, field: &str, message: String) -> Self {
        PolicyError::Invalid {
            policy: policy.into(),
            field: field.into(),
            message,
        }
    }
}

/// The HTTP side of a request, as [`enforce`] needs it.
pub struct HttpRequest<'a> {
    /// `:method`.
    pub method: &'a str,
    /// Path without query (as the pipeline hands it).
    pub path: &'a str,
    /// Query string (JWT `fromParams`).
    pub query: Option<&'a str>,
    /// `:authority` / `Host`.
    pub host: &'a str,
    /// Headers.
    pub headers: &'a dyn HeaderLookup,
}

/// A request (HTTP) or connection (TCP) to check.
pub struct Request<'a> {
    /// Downstream peer address.
    pub source_ip: IpAddr,
    /// TLS SNI, if known.
    pub sni: Option<&'a str>,
    /// HTTP facts; `None` for TCP.
    pub http: Option<HttpRequest<'a>>,
}

/// The enforcement outcome.
#[derive(Debug)]
pub enum Outcome {
    /// Go on; apply `edits` (JWT token removal, output headers) first.
    Allow {
        /// Header changes from RequestAuthentication.
        edits: Vec<HeaderEdit>,
    },
    /// A JWT failed verification: 401 with this body (Envoy's text).
    Unauthenticated(&'static str),
    /// Authorization denied: 403 `RBAC: access denied` (HTTP), or the
    /// connection is closed (TCP).
    Denied(Decision),
    /// CUSTOM policies matched (HTTP only): ask these authorizers first,
    /// in order (`(provider, policy name)`); a deny or error from one is
    /// the answer, and if all allow, `then` (an `Allow` or `Denied` from
    /// DENY / ALLOW) applies. Istio's order CUSTOM → DENY → ALLOW.
    External {
        /// The authorizers and the CUSTOM policy that matched for each.
        ask: Vec<(Arc<ext_authz::ExtAuthz>, Arc<str>)>,
        /// What applies once every authorizer allowed.
        then: Box<Outcome>,
    },
}

impl Outcome {
    /// Wraps `self` so the authorizers in `ask` are asked first.
    fn after(self, ask: Vec<(Arc<ext_authz::ExtAuthz>, Arc<str>)>) -> Outcome {
        if ask.is_empty() {
            return self;
        }
        Outcome::External {
            ask,
            then: Box::new(self),
        }
    }
}

/// The enforcement decision for one request or connection to `guard`
/// (the one place that decides; the proxy only applies the outcome):
/// a remote policy-selected workload denies; then, per local policy set,
/// JWT authentication (HTTP only: Istio's RequestAuthentication is an HTTP
/// filter) and Istio's authorization order. The request must pass every
/// set of the cluster's endpoints.
pub fn enforce(guard: &Guard, req: &Request<'_>) -> Outcome {
    enforce_with_peer(guard, req, None, false)
}

/// [`enforce`] when the client's mTLS identity is known (`peer`: the node
/// tunnels its connection with that workload's certificate, HBONE), so
/// `principals` / `namespaces` / `source.principal` rules are decided; and
/// `remote_enforced`: every policy-selected workload of the guard on
/// another node is reached over HBONE, whose destination node enforces its
/// policies, so it is not denied here.
pub fn enforce_with_peer(
    guard: &Guard,
    req: &Request<'_>,
    peer: Option<&PeerIdentity>,
    remote_enforced: bool,
) -> Outcome {
    if let Some(w) = guard.remote.as_ref().filter(|_| !remote_enforced) {
        tracing::debug!(workload = %w, "policy-selected workload on another node: denied");
        return Outcome::Denied(Decision {
            allowed: false,
            why: Why::RemoteWorkload,
            policy: None,
            audited: Vec::new(),
            external: None,
        });
    }
    let mut edits: Vec<HeaderEdit> = Vec::new();
    let mut ask: Vec<(Arc<ext_authz::ExtAuthz>, Arc<str>)> = Vec::new();
    for e in &guard.entries {
        let mut identity: Option<Arc<JwtIdentity>> = None;
        if let (Some(authn), Some(h)) = (&e.set.authn, &req.http) {
            match authn.authenticate(h.headers, h.query) {
                AuthnResult::NoToken => {}
                AuthnResult::Failed(why) => return Outcome::Unauthenticated(why),
                AuthnResult::Verified(id, ed) => {
                    identity = Some(id);
                    for x in ed {
                        if !edits.contains(&x) {
                            edits.push(x);
                        }
                    }
                }
            }
        }
        let attrs = Attrs {
            source_ip: req.source_ip,
            remote_ip: req.source_ip,
            dest_ip: e.dest_ip,
            dest_port: e.dest_port,
            sni: req.sni,
            peer,
            http: req.http.as_ref().map(|h| HttpAttrs {
                method: h.method,
                path: h.path,
                host: h.host,
                headers: h.headers,
                auth: identity.as_deref(),
            }),
        };
        let mut d = e.set.authorize(&attrs);
        if let Some((x, p)) = d.external.take() {
            if !ask.iter().any(|(y, _)| Arc::ptr_eq(&x, y)) {
                ask.push((x, p));
            }
        }
        for p in &d.audited {
            tracing::info!(
                policy = %p,
                source = %req.source_ip,
                allowed = d.allowed,
                "AUDIT: request matched an AUDIT AuthorizationPolicy"
            );
        }
        if !d.allowed {
            return Outcome::Denied(d).after(ask);
        }
    }
    Outcome::Allow { edits }.after(ask)
}
