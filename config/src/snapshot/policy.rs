//! Compiled security policies: PeerAuthentication, RequestAuthentication and
//! AuthorizationPolicy, each with the workloads it selects.
//!
//! Scope follows Istio: a policy in the root namespace (`istio-system`)
//! without selector applies to the whole mesh; without selector elsewhere to
//! its namespace; with `selector.matchLabels` to the matching workloads of
//! its namespace. [`Policies::for_workload`] resolves what applies to one
//! workload.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::api::security::{Condition, Operation, Source};

/// Istio's root namespace: mesh-wide policies live here.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// Which workloads a policy selects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    /// Namespace of the policy.
    pub namespace: String,
    /// `selector.matchLabels`; None: every workload in scope.
    pub match_labels: Option<BTreeMap<String, String>>,
}

impl Selector {
    /// `true` when the policy is mesh-wide (root namespace, no selector).
    pub fn is_mesh_wide(&self) -> bool {
        self.namespace == ROOT_NAMESPACE && self.match_labels.is_none()
    }

    /// `true` when a workload in `namespace` with `labels` is selected.
    pub fn selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        if self.is_mesh_wide() {
            return true;
        }
        if self.namespace != namespace {
            return false;
        }
        match &self.match_labels {
            None => true,
            Some(m) => m.iter().all(|(k, v)| labels.get(k) == Some(v)),
        }
    }
}

/// mTLS mode of a PeerAuthentication.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the parent scope.
    #[default]
    Unset,
    /// Plain text only.
    Disable,
    /// mTLS and plain text accepted (Istio's default).
    Permissive,
    /// mTLS only.
    Strict,
}

/// A PeerAuthentication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAuthn {
    /// `namespace/name`.
    pub name: String,
    /// Scope.
    pub selector: Selector,
    /// Mode for all ports.
    pub mode: MtlsMode,
    /// Workload port → mode.
    pub port_level: BTreeMap<u16, MtlsMode>,
}

/// A JWT header location.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtHeader {
    /// Header name.
    pub name: String,
    /// Prefix before the token.
    pub prefix: String,
}

/// One accepted JWT issuer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtRule {
    /// `iss`.
    pub issuer: String,
    /// Accepted `aud` (empty: any).
    pub audiences: Vec<String>,
    /// JWKS URL.
    pub jwks_uri: Option<String>,
    /// Inline JWKS JSON.
    pub jwks: Option<String>,
    /// Token locations; empty means Istio's default
    /// (`Authorization: Bearer <token>` and `?access_token=`).
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters.
    pub from_params: Vec<String>,
    /// Cookies.
    pub from_cookies: Vec<String>,
    /// Header that receives the base64url payload.
    pub output_payload_to_header: Option<String>,
    /// Keep the token upstream (default: removed).
    pub forward_original_token: bool,
    /// Claim → header copies.
    pub output_claim_to_headers: Vec<(String, String)>,
}

/// A RequestAuthentication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestAuthn {
    /// `namespace/name`.
    pub name: String,
    /// Scope.
    pub selector: Selector,
    /// Issuers.
    pub jwt_rules: Vec<JwtRule>,
}

/// AuthorizationPolicy action. Evaluation order (Istio): CUSTOM, then DENY
/// (any match denies, 403 `RBAC: access denied`), then ALLOW (if any ALLOW
/// policy applies, a request must match one of them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthzAction {
    /// Allow on match.
    #[default]
    Allow,
    /// Deny on match.
    Deny,
    /// Log only.
    Audit,
    /// External authorizer.
    Custom,
}

/// One rule: all of `from` (ORed), `to` (ORed) and `when` (ANDed) must hold;
/// an empty list holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzRule {
    /// Sources.
    pub from: Vec<Source>,
    /// Operations.
    pub to: Vec<Operation>,
    /// Conditions.
    pub when: Vec<Condition>,
}

/// An AuthorizationPolicy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzPolicy {
    /// `namespace/name`.
    pub name: String,
    /// Scope.
    pub selector: Selector,
    /// Action.
    pub action: AuthzAction,
    /// CUSTOM provider name.
    pub provider: Option<String>,
    /// Rules, ORed. No rules: ALLOW matches nothing (deny all), DENY
    /// matches nothing.
    pub rules: Vec<AuthzRule>,
    /// `true` when a rule uses HTTP-only attributes (paths, methods, hosts,
    /// request principals, `request.*` keys): the workload needs the L7 proxy.
    pub needs_l7: bool,
}

/// Every policy, sorted by `namespace/name`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policies {
    /// PeerAuthentications.
    pub peer_authentication: Vec<PeerAuthn>,
    /// RequestAuthentications.
    pub request_authentication: Vec<RequestAuthn>,
    /// AuthorizationPolicies.
    pub authorization: Vec<AuthzPolicy>,
}

/// The policies that apply to one workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadPolicies<'a> {
    /// Effective mTLS mode per Istio's precedence (workload selector >
    /// namespace > mesh; UNSET inherits; PERMISSIVE when nothing is set).
    pub mtls: MtlsMode,
    /// Port-level overrides from the selecting PeerAuthentication.
    pub port_mtls: BTreeMap<u16, MtlsMode>,
    /// RequestAuthentications that apply.
    pub request_authn: Vec<&'a RequestAuthn>,
    /// AuthorizationPolicies that apply.
    pub authz: Vec<&'a AuthzPolicy>,
}

impl Policies {
    /// Resolve the policies of a workload in `namespace` with `labels`.
    pub fn for_workload(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> WorkloadPolicies<'_> {
        let mut out = WorkloadPolicies::default();
        let (mut mesh, mut ns, mut wl) = (MtlsMode::Unset, MtlsMode::Unset, MtlsMode::Unset);
        for pa in &self.peer_authentication {
            if !pa.selector.selects(namespace, labels) {
                continue;
            }
            if pa.selector.is_mesh_wide() {
                mesh = pa.mode;
            } else if pa.selector.match_labels.is_none() {
                ns = pa.mode;
            } else {
                wl = pa.mode;
                out.port_mtls = pa.port_level.clone();
            }
        }
        out.mtls = [wl, ns, mesh]
            .into_iter()
            .find(|m| *m != MtlsMode::Unset)
            .unwrap_or(MtlsMode::Permissive);
        // Port-level UNSET inherits the workload's mode.
        let base = out.mtls;
        for m in out.port_mtls.values_mut() {
            if *m == MtlsMode::Unset {
                *m = base;
            }
        }
        out.request_authn = self
            .request_authentication
            .iter()
            .filter(|r| r.selector.selects(namespace, labels))
            .collect();
        out.authz = self
            .authorization
            .iter()
            .filter(|a| a.selector.selects(namespace, labels))
            .collect();
        out
    }
}
