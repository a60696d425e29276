//! Istio's `MeshConfig`, read as istiod reads it: a `mesh.yaml` in the
//! configuration directory, or the `mesh` key of the `istio` ConfigMap in
//! `istio-system`. Absent fields take Istio's defaults
//! (`pkg/config/mesh.DefaultMeshConfig`). The compiled value is
//! [`crate::snapshot::MeshSnapshot::mesh`].
//!
//! Applied by the runtime: `outboundTrafficPolicy`, `defaultHttpRetryPolicy`,
//! `accessLogFile`, `accessLogEncoding`, `accessLogFormat`, `rootNamespace`
//! (scope of fail-closed security policies). Carried but not enforced yet
//! (reported as `STR0001`): everything else, listed by
//! [`MeshConfig::not_enforced`].
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::virtual_service::HttpRetry;

/// File name istiod's `--meshConfig` uses, looked for in the config directory.
pub const MESH_FILE: &str = "mesh.yaml";

/// `outboundTrafficPolicy.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    /// Unknown destinations are passed through (Envoy's `PassthroughCluster`).
    #[default]
    AllowAny,
    /// Only registry services: unknown destinations get Envoy's
    /// `BlackHoleCluster` (HTTP 502, TCP connection closed).
    RegistryOnly,
}

/// `outboundTrafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboundTrafficPolicy {
    /// Mode (default `ALLOW_ANY`).
    #[serde(default)]
    pub mode: OutboundMode,
}

/// `accessLogEncoding`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessLogEncoding {
    /// One text line per request.
    #[default]
    Text,
    /// One JSON object per request.
    Json,
}

/// Istio's MeshConfig: the fields Strait reads, plus every other field kept
/// as given (`other`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    /// Namespace whose policies apply mesh-wide (default `istio-system`).
    #[serde(default = "default_root_namespace")]
    pub root_namespace: String,
    /// SPIFFE trust domain (default `cluster.local`).
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// Automatic client-side mTLS (default `true`).
    #[serde(default = "yes")]
    pub enable_auto_mtls: bool,
    /// What happens to destinations outside the registry (default `ALLOW_ANY`).
    #[serde(default)]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// Retry policy of routes without `retries` (Istio's default: 2 attempts,
    /// `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`).
    #[serde(default)]
    pub default_http_retry_policy: Option<HttpRetry>,
    /// Where access logs go; `""` turns them off. Default here `/dev/stdout`
    /// (Strait logs by default; `--no-access-log` turns it off).
    #[serde(default = "default_access_log_file")]
    pub access_log_file: String,
    /// `TEXT` (default) or `JSON`.
    #[serde(default)]
    pub access_log_encoding: AccessLogEncoding,
    /// Envoy format string (TEXT) or JSON template; empty: Istio's default.
    #[serde(default)]
    pub access_log_format: String,
    /// Extension providers, as given. `envoyExtAuthzHttp` providers are
    /// applied (CUSTOM AuthorizationPolicies, [`MeshConfig::ext_authz_http`]);
    /// other kinds are carried, not enforced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extension_providers: Vec<serde_json::Value>,
    /// `pathNormalization`: `normalization` is applied by the proxy
    /// (`Proxy::follow_mesh_config`) before route and policy matching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_normalization: Option<serde_json::Value>,
    /// Every other MeshConfig field, as given (carried; not enforced).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

fn default_root_namespace() -> String {
    "istio-system".to_string()
}
fn default_trust_domain() -> String {
    "cluster.local".to_string()
}
fn default_access_log_file() -> String {
    "/dev/stdout".to_string()
}
fn yes() -> bool {
    true
}

impl Default for MeshConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults deserialize")
    }
}

impl MeshConfig {
    /// Parses a MeshConfig document (YAML or JSON).
    pub fn parse(text: &str) -> Result<MeshConfig, String> {
        if text.trim().is_empty() {
            return Ok(MeshConfig::default());
        }
        let v: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let v = crate::schema::yaml_to_json(v);
        if v.is_null() {
            return Ok(MeshConfig::default());
        }
        let m: MeshConfig = serde_json::from_value(v).map_err(|e| e.to_string())?;
        if let Some(r) = &m.default_http_retry_policy {
            if let Some(t) = &r.per_try_timeout {
                crate::duration::parse(t)
                    .map_err(|e| format!("defaultHttpRetryPolicy.perTryTimeout: {e}"))?;
            }
        }
        Ok(m)
    }

    /// Fields given that Strait carries but does not enforce yet, with why.
    pub fn not_enforced(&self) -> Vec<(String, &'static str)> {
        let d = MeshConfig::default();
        let mut out = Vec::new();
        if self.trust_domain != d.trust_domain {
            out.push(("trustDomain".to_string(), "no mesh mTLS identities yet"));
        }
        if self
            .extension_providers
            .iter()
            .any(|p| p.get("envoyExtAuthzHttp").is_none())
        {
            out.push((
                "extensionProviders".to_string(),
                "only envoyExtAuthzHttp providers are applied: no tracing, log or gRPC external authorization providers yet",
            ));
        }
        for k in self.other.keys() {
            out.push((k.clone(), "MeshConfig field not read by Strait"));
        }
        out
    }
}

/// A string or a number (proto `uint32` / `string` fields written either way).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NumOrString {
    /// `8000`.
    Num(u64),
    /// `"8000"`.
    Str(String),
}

impl NumOrString {
    /// The number, if it is one (or a string holding one).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            NumOrString::Num(n) => Some(*n),
            NumOrString::Str(s) => s.trim().parse().ok(),
        }
    }
}

/// `extensionProviders[].envoyExtAuthzHttp`
/// (`MeshConfig.ExtensionProvider.EnvoyExternalAuthorizationHttpProvider`):
/// the fields Strait applies. Any other field (`includeRequestBodyInCheck`,
/// `headersToDownstreamOnAllow`, ...) makes the provider unusable (a
/// CUSTOM policy naming it denies what it matches) rather than ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtAuthzHttp {
    /// The authorizer's service: a registry host (`ext-authz.foo.svc.cluster.local`,
    /// or Istio's `foo/ext-authz.foo.svc.cluster.local`), or an IP address.
    pub service: String,
    /// Its port.
    pub port: NumOrString,
    /// Prepended to the request path in the check request.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Check timeout (Istio's default: 600s).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Allow the request when the authorizer cannot be reached or errs.
    #[serde(default)]
    pub fail_open: bool,
    /// Status sent to the client when the check errs (default `403`).
    #[serde(default)]
    pub status_on_error: Option<NumOrString>,
    /// Request headers sent in the check (exact, `prefix*`, `*suffix`).
    #[serde(default)]
    pub include_request_headers_in_check: Vec<String>,
    /// Deprecated name of `includeRequestHeadersInCheck`.
    #[serde(default)]
    pub include_headers_in_check: Vec<String>,
    /// Headers added to the check request.
    #[serde(default)]
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    /// Authorizer response headers set on the upstream request on allow.
    #[serde(default)]
    pub headers_to_upstream_on_allow: Vec<String>,
    /// Authorizer response headers sent to the client on deny (empty: all).
    #[serde(default)]
    pub headers_to_downstream_on_deny: Vec<String>,
}

impl MeshConfig {
    /// The `envoyExtAuthzHttp` provider `name`. Errors, one sentence each:
    /// no provider of that name; an `envoyExtAuthzGrpc` or other kind; a
    /// field Strait does not apply or a bad value.
    pub fn ext_authz_http(&self, name: &str) -> Result<ExtAuthzHttp, String> {
        let p = self
            .extension_providers
            .iter()
            .find(|p| p.get("name").and_then(|n| n.as_str()) == Some(name))
            .ok_or_else(|| {
                format!("no extension provider {name:?} in the mesh config's extensionProviders")
            })?;
        let Some(cfg) = p.get("envoyExtAuthzHttp") else {
            return Err(if p.get("envoyExtAuthzGrpc").is_some() {
                format!("extension provider {name:?} is envoyExtAuthzGrpc, which Strait does not support yet (use envoyExtAuthzHttp)")
            } else {
                format!(
                    "extension provider {name:?} is not an external authorizer (envoyExtAuthzHttp)"
                )
            });
        };
        let x: ExtAuthzHttp = serde_json::from_value(cfg.clone())
            .map_err(|e| format!("extension provider {name:?}: envoyExtAuthzHttp: {e} (Strait refuses a provider rather than apply it in part)"))?;
        x.check()
            .map_err(|e| format!("extension provider {name:?}: envoyExtAuthzHttp.{e}"))?;
        Ok(x)
    }
}

impl ExtAuthzHttp {
    /// Port as a number.
    pub fn port(&self) -> Option<u16> {
        self.port
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
    }

    /// `statusOnError` (default 403).
    pub fn status_on_error(&self) -> Option<u16> {
        match &self.status_on_error {
            None => Some(403),
            Some(s) => s
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (200..600).contains(c)),
        }
    }

    /// `timeout` (default 600 s).
    pub fn timeout(&self) -> Result<std::time::Duration, String> {
        match &self.timeout {
            None => Ok(std::time::Duration::from_secs(600)),
            Some(t) => crate::duration::parse(t),
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.service.is_empty() {
            return Err("service: required".into());
        }
        if self.port().is_none() {
            return Err("port: required, 1-65535".into());
        }
        if let Some(p) = &self.path_prefix {
            if !p.is_empty() && !p.starts_with('/') {
                return Err(format!("pathPrefix: {p:?} must start with /"));
            }
        }
        self.timeout().map_err(|e| format!("timeout: {e}"))?;
        if self.status_on_error().is_none() {
            return Err("statusOnError: not an HTTP status code".into());
        }
        Ok(())
    }
}

/// `true` for a file that holds a MeshConfig (`…/mesh.yaml`).
pub fn is_mesh_file(file: &std::path::Path) -> bool {
    file.file_name().and_then(|n| n.to_str()) == Some(MESH_FILE)
}

/// The MeshConfig resource of a `mesh.yaml` (named `istio-system/mesh`).
pub fn from_file(text: &str) -> Result<crate::api::MeshConfigObject, String> {
    Ok(crate::api::MeshConfigObject {
        metadata: meta("mesh"),
        mesh: MeshConfig::parse(text)?,
    })
}

/// The MeshConfig of a ConfigMap document when it is istiod's (`istio` in
/// `istio-system`, key `mesh`); `Ok(None)` for any other ConfigMap.
pub fn from_config_map(doc: &str) -> Result<Option<crate::api::MeshConfigObject>, String> {
    let cm: k8s_openapi::api::core::v1::ConfigMap =
        serde_yaml::from_str(doc).map_err(|e| e.to_string())?;
    let m = &cm.metadata;
    if m.name.as_deref() != Some("istio") || m.namespace.as_deref() != Some("istio-system") {
        return Ok(None);
    }
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("mesh"))
        .map(String::as_str)
        .unwrap_or("");
    Ok(Some(crate::api::MeshConfigObject {
        metadata: meta("istio"),
        mesh: MeshConfig::parse(text).map_err(|e| format!("data.mesh: {e}"))?,
    }))
}

fn meta(name: &str) -> crate::api::ObjectMeta {
    crate::api::ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some("istio-system".to_string()),
        ..Default::default()
    }
}
