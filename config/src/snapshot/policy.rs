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

/// The label Istio puts on a Gateway API gateway's pods; a policy with a
/// `Gateway` targetRef applies to the pods carrying it.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// Istio's scope of a RequestAuthentication / AuthorizationPolicy
/// (`pilot/pkg/model/authorization.go`, `policyattachment.go`): with
/// `targetRefs`, a `Gateway` target selects the pods labelled
/// [`GATEWAY_NAME_LABEL`]` = name` in the target's namespace and a core
/// `Service` target the workloads of that service (Strait enforces as the
/// service's waypoint would); otherwise a policy in `root_namespace`
/// applies in every namespace (all workloads without selector, the
/// matching ones with), and one elsewhere in its own namespace.
/// `services` are the hosts of the services that select the workload.
pub fn policy_applies(
    selector: &Selector,
    target_refs: &[TargetRef],
    root_namespace: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    services: &[String],
) -> bool {
    if !target_refs.is_empty() {
        return target_refs.iter().any(|t| match t.kind.as_str() {
            "Gateway" => {
                t.namespace == namespace
                    && labels.get(GATEWAY_NAME_LABEL).is_some_and(|g| *g == t.name)
            }
            "Service" if t.group.is_empty() => {
                let prefix = format!("{}.{}.svc.", t.name, t.namespace);
                services.iter().any(|h| h.starts_with(&prefix))
            }
            _ => false,
        });
    }
    if selector.namespace != root_namespace && selector.namespace != namespace {
        return false;
    }
    match &selector.match_labels {
        None => true,
        Some(m) => m.iter().all(|(k, v)| labels.get(k) == Some(v)),
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
    /// `metadata.creationTimestamp` (RFC 3339), when given: of several
    /// policies at one level Istio uses the oldest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

/// A workload's effective peer authentication, composed as Istio's
/// `ComposePeerAuthentication` (pilot/pkg/security/authn/policy_applier.go):
/// the mesh-wide policy (root namespace, no selector), then the namespace
/// policy (no selector), then the workload policy (selector, not in the root
/// namespace), each overriding its parent unless its mode is `UNSET`;
/// `PERMISSIVE` when nothing is set. Of several policies at one level the
/// oldest (`creationTimestamp`, then name) wins. Port-level modes come from
/// the workload policy only; a port-level `UNSET` takes the workload's mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerMtls {
    /// The mode of every port without an entry in `ports` (never `UNSET`).
    pub mode: MtlsMode,
    /// Target (container) port → mode (never `UNSET`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<u16, MtlsMode>,
}

impl Default for PeerMtls {
    fn default() -> Self {
        Self {
            mode: MtlsMode::Permissive,
            ports: BTreeMap::new(),
        }
    }
}

impl PeerMtls {
    /// The mode of target port `port`.
    pub fn mode_for(&self, port: u16) -> MtlsMode {
        self.ports.get(&port).copied().unwrap_or(self.mode)
    }

    /// `true` when some port is `STRICT`.
    pub fn any_strict(&self) -> bool {
        self.mode == MtlsMode::Strict || self.ports.values().any(|m| *m == MtlsMode::Strict)
    }
}

/// How the destination node treats new connections to one meshed workload
/// (the per-pod-port mode the kernel's in-pod `sk_lookup` program enforces).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundWorkload {
    /// PeerAuthentication, composed.
    pub mtls: PeerMtls,
    /// An AuthorizationPolicy or RequestAuthentication applies: plain-text
    /// connections that are accepted go through the inbound policy
    /// listener (Istio's 15006), not straight to the pod.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub policy: bool,
    /// A RequestAuthentication or an AuthorizationPolicy with HTTP-only
    /// attributes applies: HTTP connections are decided per request, not
    /// once per connection.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub l7: bool,
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
    /// `timeout`: JWKS fetch timeout in ms (`None`: Istio's 5 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// `spaceDelimitedClaims`: string claims matched as space-separated
    /// lists in `request.auth.claims[...]`, beside Istio's defaults
    /// `scope` and `permission`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
    /// `presence: REQUIRED`: a request without a token gets 401 `Jwt is
    /// missing` (default `OPTIONAL`: it passes, authorization decides).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub presence_required: bool,
}

/// `targetRef` / `targetRefs` of a policy (Istio's `PolicyTargetReference`).
/// Istio applies a policy with a `Gateway` target to the pods labelled
/// `gateway.networking.k8s.io/gateway-name: <name>`, and one with a
/// `Service` target to the waypoint of that service; Strait enforces a
/// `Service` target on the service's workloads (it is their waypoint).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRef {
    /// `group` (empty: core).
    pub group: String,
    /// `kind`: `Gateway`, `Service`, `ServiceEntry`, `GatewayClass`.
    pub kind: String,
    /// `name`.
    pub name: String,
    /// Namespace (the policy's when not set).
    pub namespace: String,
}

/// A RequestAuthentication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestAuthn {
    /// `namespace/name`.
    pub name: String,
    /// Scope.
    pub selector: Selector,
    /// `targetRef` / `targetRefs` (empty: `selector` decides).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<TargetRef>,
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
    /// `targetRef` / `targetRefs` (empty: `selector` decides).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<TargetRef>,
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
    /// Why Strait cannot enforce (part of) this policy as Istio would, one
    /// sentence each (`strait analyze` prints them). A policy with an
    /// entry is still applied, fail-closed: the parts Strait cannot decide
    /// deny (DENY, CUSTOM) or never allow (ALLOW). Empty: fully enforced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_enforced: Vec<String>,
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
        let peer = self.peer_mtls(ROOT_NAMESPACE, namespace, labels);
        out.mtls = peer.mode;
        out.port_mtls = peer.ports;
        out.request_authn = self.request_authn_for(ROOT_NAMESPACE, namespace, labels, &[]);
        out.authz = self.authz_for(ROOT_NAMESPACE, namespace, labels, &[]);
        out
    }

    /// The effective PeerAuthentication of a workload in `namespace` with
    /// `labels` (see [`PeerMtls`] for Istio's precedence).
    pub fn peer_mtls(
        &self,
        root_namespace: &str,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> PeerMtls {
        // Oldest first: creationTimestamp (absent sorts last), then name.
        let older = |a: &PeerAuthn, b: &PeerAuthn| {
            let key = |p: &PeerAuthn| (p.created.is_none(), p.created.clone(), p.name.clone());
            key(a) < key(b)
        };
        let (mut mesh, mut ns, mut wl): (
            Option<&PeerAuthn>,
            Option<&PeerAuthn>,
            Option<&PeerAuthn>,
        ) = (None, None, None);
        for pa in &self.peer_authentication {
            let slot = match &pa.selector.match_labels {
                None if pa.selector.namespace == root_namespace => &mut mesh,
                None if pa.selector.namespace == namespace => &mut ns,
                None => continue,
                // Istio ignores selector policies in the root namespace
                // for peer authentication ("workload level policy, aka has
                // selector and not in root namespace").
                Some(_) if pa.selector.namespace == root_namespace => continue,
                Some(m) => {
                    if pa.selector.namespace != namespace
                        || !m.iter().all(|(k, v)| labels.get(k) == Some(v))
                    {
                        continue;
                    }
                    &mut wl
                }
            };
            if slot.is_none_or(|have| older(pa, have)) {
                *slot = Some(pa);
            }
        }
        let mut out = PeerMtls::default();
        for p in [mesh, ns, wl].into_iter().flatten() {
            if p.mode != MtlsMode::Unset {
                out.mode = p.mode;
            }
        }
        if let Some(w) = wl {
            out.ports = w
                .port_level
                .iter()
                .map(|(port, m)| (*port, if *m == MtlsMode::Unset { out.mode } else { *m }))
                .collect();
        }
        out
    }

    /// The RequestAuthentications that apply to a workload
    /// ([`policy_applies`]).
    pub fn request_authn_for(
        &self,
        root_namespace: &str,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        services: &[String],
    ) -> Vec<&RequestAuthn> {
        self.request_authentication
            .iter()
            .filter(|r| {
                policy_applies(
                    &r.selector,
                    &r.target_refs,
                    root_namespace,
                    namespace,
                    labels,
                    services,
                )
            })
            .collect()
    }

    /// The AuthorizationPolicies that apply to a workload
    /// ([`policy_applies`]).
    pub fn authz_for(
        &self,
        root_namespace: &str,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        services: &[String],
    ) -> Vec<&AuthzPolicy> {
        self.authorization
            .iter()
            .filter(|a| {
                policy_applies(
                    &a.selector,
                    &a.target_refs,
                    root_namespace,
                    namespace,
                    labels,
                    services,
                )
            })
            .collect()
    }
}
