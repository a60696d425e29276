//! `security.istio.io` resources: PeerAuthentication, RequestAuthentication,
//! AuthorizationPolicy (v1 and v1beta1 share one schema).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::destination_rule::WorkloadSelector;

/// `istio.security.v1.PeerAuthentication`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    /// Workloads (none: namespace; none in the root namespace: mesh).
    pub selector: Option<WorkloadSelector>,
    /// mTLS mode.
    pub mtls: Option<MutualTls>,
    /// Port → mTLS mode (needs a selector).
    #[serde(deserialize_with = "port_keys")]
    pub port_level_mtls: BTreeMap<u32, MutualTls>,
}

/// A map keyed by port, with keys written as numbers (`8080:`) or strings
/// (`"8080":`, as the CRD's OpenAPI schema and `kubectl` write them).
fn port_keys<'de, D, V>(d: D) -> Result<BTreeMap<u32, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    #[derive(Deserialize, PartialEq, Eq, PartialOrd, Ord)]
    #[serde(untagged)]
    enum Key {
        Num(u32),
        Text(String),
    }
    let raw: BTreeMap<Key, V> = BTreeMap::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| match k {
            Key::Num(n) => Ok((n, v)),
            Key::Text(t) => t
                .parse()
                .map(|n| (n, v))
                .map_err(|_| serde::de::Error::custom(format!("port {t:?} is not a number"))),
        })
        .collect()
}

/// `PeerAuthentication.MutualTLS`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    /// `UNSET`, `DISABLE`, `PERMISSIVE`, `STRICT`.
    pub mode: Option<String>,
}

/// `PolicyTargetReference`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// API group.
    pub group: Option<String>,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: Option<String>,
}

/// `istio.security.v1.RequestAuthentication`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthentication {
    /// Workloads.
    pub selector: Option<WorkloadSelector>,
    /// Gateway target.
    pub target_ref: Option<PolicyTargetReference>,
    /// Gateway targets.
    pub target_refs: Vec<PolicyTargetReference>,
    /// Accepted JWT issuers.
    pub jwt_rules: Vec<JwtRule>,
}

impl RequestAuthentication {
    /// `targetRef`, then `targetRefs`.
    pub fn targets(&self) -> impl Iterator<Item = &PolicyTargetReference> {
        self.target_ref.iter().chain(&self.target_refs)
    }
}

/// `JWTRule`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// `iss` claim; required.
    pub issuer: String,
    /// Accepted `aud` values (empty: any).
    pub audiences: Vec<String>,
    /// JWKS URL.
    #[serde(alias = "jwks_uri")]
    pub jwks_uri: Option<String>,
    /// Inline JWKS JSON.
    pub jwks: Option<String>,
    /// Token locations in headers.
    pub from_headers: Vec<JwtHeader>,
    /// Token locations in query parameters.
    pub from_params: Vec<String>,
    /// Token locations in cookies.
    pub from_cookies: Vec<String>,
    /// Header receiving the base64 payload.
    pub output_payload_to_header: Option<String>,
    /// Keep the token upstream.
    pub forward_original_token: Option<bool>,
    /// Claims copied to headers.
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// JWKS fetch timeout (duration string).
    pub timeout: Option<String>,
    /// `spaceDelimitedClaims`.
    pub space_delimited_claims: Vec<String>,
    /// `presence`: `OPTIONAL` (default) or `REQUIRED`.
    pub presence: Option<serde_yaml::Value>,
}

/// `JWTHeader`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    /// Header name.
    pub name: String,
    /// Prefix before the token (e.g. `Bearer `).
    pub prefix: Option<String>,
}

/// `ClaimToHeader`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// Header name.
    pub header: String,
    /// Claim name.
    pub claim: String,
}

/// `istio.security.v1.AuthorizationPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    /// Workloads.
    pub selector: Option<WorkloadSelector>,
    /// Gateway target.
    pub target_ref: Option<PolicyTargetReference>,
    /// Gateway targets.
    pub target_refs: Vec<PolicyTargetReference>,
    /// Rules, ORed.
    pub rules: Vec<Rule>,
    /// `ALLOW` (default), `DENY`, `AUDIT`, `CUSTOM`.
    pub action: Option<String>,
    /// Extension provider for CUSTOM.
    pub provider: Option<ExtensionProvider>,
}

impl AuthorizationPolicy {
    /// `targetRef`, then `targetRefs`.
    pub fn targets(&self) -> impl Iterator<Item = &PolicyTargetReference> {
        self.target_ref.iter().chain(&self.target_refs)
    }
}

/// `AuthorizationPolicy.ExtensionProvider`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    /// Provider name.
    pub name: String,
}

/// `Rule`: `from` AND `to` AND `when`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Sources, ORed.
    pub from: Vec<RuleFrom>,
    /// Operations, ORed.
    pub to: Vec<RuleTo>,
    /// Conditions, ANDed.
    pub when: Vec<Condition>,
}

/// `Rule.From`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    /// The source.
    pub source: Source,
}

/// `Rule.To`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    /// The operation.
    pub operation: Operation,
}

/// `Source`: fields ANDed, values within a field ORed.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities `<trust-domain>/ns/<ns>/sa/<sa>`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// Negated principals.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// JWT `iss/sub`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    /// Negated request principals.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    /// Peer namespaces.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Negated namespaces.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// Peer IPs/CIDRs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    /// Negated IP blocks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// Original client IPs (X-Forwarded-For).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    /// Negated remote IP blocks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
    /// `serviceAccounts` (`namespace/name`).
    pub service_accounts: Vec<String>,
    /// `notServiceAccounts`.
    pub not_service_accounts: Vec<String>,
    /// `trustDomains`.
    pub trust_domains: Vec<String>,
    /// `notTrustDomains`.
    pub not_trust_domains: Vec<String>,
}

/// `Operation`: fields ANDed, values ORed.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// Hosts (Host header).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Negated hosts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Destination ports (strings, like Istio).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Negated ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    /// HTTP methods.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Negated methods.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// Paths (exact, `prefix*`, `*suffix`, `*`, `{*}`/`{**}` templates).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Negated paths.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// `Condition`: `key` in `values` and not in `notValues`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// Attribute, e.g. `request.headers[x-token]`, `source.ip`.
    pub key: String,
    /// Accepted values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Rejected values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}
