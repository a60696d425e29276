//! `networking.istio.io` VirtualService (v1, v1beta1 and v1alpha3 share one
//! schema).
//!
//! Field names follow Istio's protobuf JSON mapping (camelCase). Unknown
//! fields are rejected like Istio's schema does. Durations stay strings here
//! (`"1s"`, `"0.5s"`, `"100ms"`, `"1m"`) and are parsed by
//! [`crate::duration`] during validation and compilation.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A label map (`key: value`).
pub type Labels = BTreeMap<String, String>;

/// `istio.networking.v1.VirtualService`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualService {
    /// Destination hosts the rules apply to (short names, FQDNs, wildcards).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Gateways (`ns/name` or `name`) and the reserved `mesh`.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// HTTP rules, first match wins.
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    /// TLS passthrough rules, matched by SNI.
    #[serde(default)]
    pub tls: Vec<TlsRoute>,
    /// Opaque TCP rules.
    #[serde(default)]
    pub tcp: Vec<TcpRoute>,
    /// Namespaces the resource is visible to (`.` own, `*` all).
    #[serde(default)]
    pub export_to: Vec<String>,
}

/// `HTTPRoute`: one HTTP rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// Rule name (used in access logs).
    #[serde(default)]
    pub name: Option<String>,
    /// Match conditions, ORed; empty matches everything.
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    /// Weighted destinations.
    #[serde(default)]
    pub route: Vec<HttpRouteDestination>,
    /// Redirect instead of forwarding.
    #[serde(default)]
    pub redirect: Option<Box<HttpRedirect>>,
    /// Respond without forwarding.
    #[serde(default)]
    pub direct_response: Option<Box<HttpDirectResponse>>,
    /// Delegate to another VirtualService.
    #[serde(default)]
    pub delegate: Option<Box<Delegate>>,
    /// Rewrite before forwarding.
    #[serde(default)]
    pub rewrite: Option<Box<HttpRewrite>>,
    /// Overall timeout (duration string).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Retry policy.
    #[serde(default)]
    pub retries: Option<Box<HttpRetry>>,
    /// Fault injection.
    #[serde(default)]
    pub fault: Option<Box<HttpFaultInjection>>,
    /// Mirror destination (single).
    #[serde(default)]
    pub mirror: Option<Destination>,
    /// Mirror destinations (several).
    #[serde(default)]
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Percentage of requests mirrored with `mirror`.
    #[serde(default)]
    pub mirror_percentage: Option<Percent>,
    /// Deprecated integer mirror percent.
    #[serde(default)]
    pub mirror_percent: Option<u32>,
    /// The same, spelled `mirror_percent` (the CRD accepts both; read as
    /// `mirrorPercent` when that is absent).
    #[serde(default, rename = "mirror_percent", skip_serializing_if = "Option::is_none")]
    pub mirror_percent_snake: Option<u32>,
    /// CORS policy.
    #[serde(default)]
    pub cors_policy: Option<Box<CorsPolicy>>,
    /// Header operations.
    #[serde(default)]
    pub headers: Option<Box<Headers>>,
    /// Removed from Istio's API (WebSocket upgrades are always allowed);
    /// still accepted so old files load.
    #[serde(default)]
    pub websocket_upgrade: Option<bool>,
}

/// `StringMatch`: exactly one of `exact`, `prefix`, `regex` (RE2 syntax).
/// An empty one in `headers` means "header present".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    /// Exact value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2 regular expression, matched against the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// `HTTPMatchRequest`: all set conditions must hold (AND).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    /// Match name, prefixed to the route name.
    #[serde(default)]
    pub name: Option<String>,
    /// URI path.
    #[serde(default)]
    pub uri: Option<StringMatch>,
    /// URI scheme.
    #[serde(default)]
    pub scheme: Option<StringMatch>,
    /// HTTP method.
    #[serde(default)]
    pub method: Option<StringMatch>,
    /// Authority (Host).
    #[serde(default)]
    pub authority: Option<StringMatch>,
    /// Request headers (lower-case names).
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    /// Port the request was addressed to.
    #[serde(default)]
    pub port: Option<u32>,
    /// Client workload labels.
    #[serde(default)]
    pub source_labels: Labels,
    /// Gateways the match applies to.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Query parameters.
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Case-insensitive URI match.
    #[serde(default)]
    pub ignore_uri_case: bool,
    /// Headers that must NOT match.
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Client namespace.
    #[serde(default)]
    pub source_namespace: Option<String>,
    /// Stat prefix (Envoy).
    #[serde(default)]
    pub stat_prefix: Option<String>,
}

/// `Destination`: a host, optional subset and port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// Service host (short name, FQDN or ServiceEntry host).
    #[serde(default)]
    pub host: String,
    /// DestinationRule subset name.
    #[serde(default)]
    pub subset: Option<String>,
    /// Service port; required when the service has several ports.
    #[serde(default)]
    pub port: Option<PortSelector>,
}

/// `PortSelector`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// Port number.
    #[serde(default)]
    pub number: u32,
}

/// `HTTPRouteDestination`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    /// Where to send the request.
    #[serde(default)]
    pub destination: Destination,
    /// Relative weight; weights of a rule must sum to 100 when several.
    #[serde(default)]
    pub weight: Option<i64>,
    /// Header operations for this destination.
    #[serde(default)]
    pub headers: Option<Box<Headers>>,
}

/// `RouteDestination` (TCP/TLS).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    /// Where to send the connection.
    #[serde(default)]
    pub destination: Destination,
    /// Relative weight.
    #[serde(default)]
    pub weight: Option<i64>,
}

/// `Headers`: request and response header operations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    /// Operations on the request.
    #[serde(default)]
    pub request: Option<HeaderOperations>,
    /// Operations on the response.
    #[serde(default)]
    pub response: Option<HeaderOperations>,
}

/// `HeaderOperations`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    /// Overwrite.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `HTTPRedirect`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirect {
    /// Replacement path.
    #[serde(default)]
    pub uri: Option<String>,
    /// Replacement authority.
    #[serde(default)]
    pub authority: Option<String>,
    /// Replacement port.
    #[serde(default)]
    pub port: Option<u32>,
    /// `FROM_PROTOCOL_DEFAULT` or `FROM_REQUEST_PORT`.
    #[serde(default)]
    pub derive_port: Option<String>,
    /// Replacement scheme.
    #[serde(default)]
    pub scheme: Option<String>,
    /// Status code, default 301.
    #[serde(default)]
    pub redirect_code: Option<u32>,
    /// `prefixRewrite` (kept; not enforced).
    #[serde(default)]
    pub prefix_rewrite: Option<String>,
}

/// `HTTPDirectResponse`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDirectResponse {
    /// Status code (200..599).
    #[serde(default)]
    pub status: u32,
    /// Optional body.
    #[serde(default)]
    pub body: Option<HttpBody>,
}

/// `HTTPBody`: `string` or base64 `bytes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBody {
    /// Text body.
    #[serde(default)]
    pub string: Option<String>,
    /// Base64 body.
    #[serde(default)]
    pub bytes: Option<String>,
}

/// `Delegate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delegate {
    /// VirtualService name.
    #[serde(default)]
    pub name: String,
    /// VirtualService namespace (default: the parent's).
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `HTTPRewrite`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    /// Replaces the matched prefix (or the whole path for exact/regex).
    #[serde(default)]
    pub uri: Option<String>,
    /// Replacement authority.
    #[serde(default)]
    pub authority: Option<String>,
    /// Regex rewrite of the path.
    #[serde(default)]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// `RegexRewrite`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    /// RE2 pattern.
    #[serde(default, rename = "match")]
    pub pattern: String,
    /// Replacement, `\1` style groups.
    #[serde(default)]
    pub rewrite: String,
}

/// `HTTPRetry`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    /// Number of retries.
    #[serde(default)]
    pub attempts: i64,
    /// Timeout per attempt (duration string).
    #[serde(default)]
    pub per_try_timeout: Option<String>,
    /// Envoy `x-envoy-retry-on` conditions, comma separated.
    #[serde(default)]
    pub retry_on: Option<String>,
    /// Retry on other localities.
    #[serde(default)]
    pub retry_remote_localities: Option<bool>,
    /// Envoy retry back-off base interval.
    #[serde(default)]
    pub backoff: Option<String>,
    /// `retryIgnorePreviousHosts` (kept; not enforced).
    #[serde(default)]
    pub retry_ignore_previous_hosts: Option<bool>,
}

/// `Percent`: `value` in 0..100.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    /// Percentage, 0.0..=100.0.
    #[serde(default)]
    pub value: f64,
}

/// `HTTPFaultInjection`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    /// Delay before forwarding.
    #[serde(default)]
    pub delay: Option<FaultDelay>,
    /// Abort with an error.
    #[serde(default)]
    pub abort: Option<FaultAbort>,
}

/// `HTTPFaultInjection.Delay`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    /// Fixed delay (duration string).
    #[serde(default)]
    pub fixed_delay: Option<String>,
    /// Not supported by Istio.
    #[serde(default)]
    pub exponential_delay: Option<String>,
    /// Share of requests delayed.
    #[serde(default)]
    pub percentage: Option<Percent>,
    /// Deprecated integer percent.
    #[serde(default)]
    pub percent: Option<i64>,
}

/// `HTTPFaultInjection.Abort`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    /// HTTP status returned.
    #[serde(default)]
    pub http_status: Option<i64>,
    /// gRPC status name returned (e.g. `UNAVAILABLE`).
    #[serde(default)]
    pub grpc_status: Option<String>,
    /// HTTP/2 error (not supported by Istio).
    #[serde(default)]
    pub http2_error: Option<String>,
    /// Share of requests aborted.
    #[serde(default)]
    pub percentage: Option<Percent>,
}

/// `HTTPMirrorPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    /// Mirror destination.
    #[serde(default)]
    pub destination: Destination,
    /// Share of requests mirrored (default 100).
    #[serde(default)]
    pub percentage: Option<Percent>,
}

/// `CorsPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    /// Allowed origins.
    #[serde(default)]
    pub allow_origins: Vec<StringMatch>,
    /// Deprecated exact origins.
    #[serde(default)]
    pub allow_origin: Vec<String>,
    /// `Access-Control-Allow-Methods`.
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// `Access-Control-Allow-Headers`.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// `Access-Control-Expose-Headers`.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// `Access-Control-Max-Age` (duration string).
    #[serde(default)]
    pub max_age: Option<String>,
    /// `Access-Control-Allow-Credentials`.
    #[serde(default)]
    pub allow_credentials: Option<bool>,
    /// `FORWARD` or `IGNORE` preflights that match no origin.
    #[serde(default)]
    pub unmatched_preflights: Option<String>,
}

/// `TLSRoute`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    /// Matches (SNI is required).
    #[serde(default, rename = "match")]
    pub matches: Vec<TlsMatchAttributes>,
    /// Weighted destinations.
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// `TLSMatchAttributes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    /// SNI values (wildcards allowed).
    #[serde(default)]
    pub sni_hosts: Vec<String>,
    /// Destination CIDRs.
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    /// Destination port.
    #[serde(default)]
    pub port: Option<u32>,
    /// Client labels.
    #[serde(default)]
    pub source_labels: Labels,
    /// Gateways.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Client namespace.
    #[serde(default)]
    pub source_namespace: Option<String>,
}

/// `TCPRoute`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    /// Matches, ORed.
    #[serde(default, rename = "match")]
    pub matches: Vec<L4MatchAttributes>,
    /// Weighted destinations.
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// `L4MatchAttributes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    /// Destination CIDRs.
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    /// Destination port.
    #[serde(default)]
    pub port: Option<u32>,
    /// Client labels.
    #[serde(default)]
    pub source_labels: Labels,
    /// Gateways.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Client namespace.
    #[serde(default)]
    pub source_namespace: Option<String>,
    /// `sourceSubnet` (kept; not enforced).
    #[serde(default)]
    pub source_subnet: Option<String>,
}
