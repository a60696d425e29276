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
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualService {
    /// Destination hosts the rules apply to (short names, FQDNs, wildcards).
    pub hosts: Vec<String>,
    /// Gateways (`ns/name` or `name`) and the reserved `mesh`.
    pub gateways: Vec<String>,
    /// HTTP rules, first match wins.
    pub http: Vec<HttpRoute>,
    /// TLS passthrough rules, matched by SNI.
    pub tls: Vec<TlsRoute>,
    /// Opaque TCP rules.
    pub tcp: Vec<TcpRoute>,
    /// Namespaces the resource is visible to (`.` own, `*` all).
    pub export_to: Vec<String>,
}

/// `HTTPRoute`: one HTTP rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// Rule name (used in access logs).
    pub name: Option<String>,
    /// Match conditions, ORed; empty matches everything.
    #[serde(rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    /// Weighted destinations.
    pub route: Vec<HttpRouteDestination>,
    /// Redirect instead of forwarding.
    pub redirect: Option<Box<HttpRedirect>>,
    /// Respond without forwarding.
    pub direct_response: Option<Box<HttpDirectResponse>>,
    /// Delegate to another VirtualService.
    pub delegate: Option<Box<Delegate>>,
    /// Rewrite before forwarding.
    pub rewrite: Option<Box<HttpRewrite>>,
    /// Overall timeout (duration string).
    pub timeout: Option<String>,
    /// Retry policy.
    pub retries: Option<Box<HttpRetry>>,
    /// Fault injection.
    pub fault: Option<Box<HttpFaultInjection>>,
    /// Mirror destination (single).
    pub mirror: Option<Destination>,
    /// Mirror destinations (several).
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Percentage of requests mirrored with `mirror`.
    pub mirror_percentage: Option<Percent>,
    /// Deprecated integer mirror percent.
    pub mirror_percent: Option<u32>,
    /// The same, spelled `mirror_percent` (the CRD accepts both; read as
    /// `mirrorPercent` when that is absent).
    #[serde(rename = "mirror_percent", skip_serializing_if = "Option::is_none")]
    pub mirror_percent_snake: Option<u32>,
    /// CORS policy.
    pub cors_policy: Option<Box<CorsPolicy>>,
    /// Header operations.
    pub headers: Option<Box<Headers>>,
    /// Removed from Istio's API (WebSocket upgrades are always allowed);
    /// still accepted so old files load.
    pub websocket_upgrade: Option<bool>,
}

/// `StringMatch`: exactly one of `exact`, `prefix`, `regex` (RE2 syntax).
/// An empty one in `headers` means "header present".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    /// Exact value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2 regular expression, matched against the whole value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// `HTTPMatchRequest`: all set conditions must hold (AND).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    /// Match name, prefixed to the route name.
    pub name: Option<String>,
    /// URI path.
    pub uri: Option<StringMatch>,
    /// URI scheme.
    pub scheme: Option<StringMatch>,
    /// HTTP method.
    pub method: Option<StringMatch>,
    /// Authority (Host).
    pub authority: Option<StringMatch>,
    /// Request headers (lower-case names).
    pub headers: BTreeMap<String, StringMatch>,
    /// Port the request was addressed to.
    pub port: Option<u32>,
    /// Client workload labels.
    pub source_labels: Labels,
    /// Gateways the match applies to.
    pub gateways: Vec<String>,
    /// Query parameters.
    pub query_params: BTreeMap<String, StringMatch>,
    /// Case-insensitive URI match.
    pub ignore_uri_case: bool,
    /// Headers that must NOT match.
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Client namespace.
    pub source_namespace: Option<String>,
    /// Stat prefix (Envoy).
    pub stat_prefix: Option<String>,
}

/// `Destination`: a host, optional subset and port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// Service host (short name, FQDN or ServiceEntry host).
    pub host: String,
    /// DestinationRule subset name.
    pub subset: Option<String>,
    /// Service port; required when the service has several ports.
    pub port: Option<PortSelector>,
}

/// `PortSelector`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// Port number.
    pub number: u32,
}

/// `HTTPRouteDestination`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    /// Where to send the request.
    pub destination: Destination,
    /// Relative weight; weights of a rule must sum to 100 when several.
    pub weight: Option<i64>,
    /// Header operations for this destination.
    pub headers: Option<Box<Headers>>,
}

/// `RouteDestination` (TCP/TLS).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    /// Where to send the connection.
    pub destination: Destination,
    /// Relative weight.
    pub weight: Option<i64>,
}

/// `Headers`: request and response header operations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    /// Operations on the request.
    pub request: Option<HeaderOperations>,
    /// Operations on the response.
    pub response: Option<HeaderOperations>,
}

/// `HeaderOperations`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    /// Overwrite.
    pub set: BTreeMap<String, String>,
    /// Append.
    pub add: BTreeMap<String, String>,
    /// Remove.
    pub remove: Vec<String>,
}

/// `HTTPRedirect`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirect {
    /// Replacement path.
    pub uri: Option<String>,
    /// Replacement authority.
    pub authority: Option<String>,
    /// Replacement port.
    pub port: Option<u32>,
    /// `FROM_PROTOCOL_DEFAULT` or `FROM_REQUEST_PORT`.
    pub derive_port: Option<String>,
    /// Replacement scheme.
    pub scheme: Option<String>,
    /// Status code, default 301.
    pub redirect_code: Option<u32>,
    /// `prefixRewrite` (kept; not enforced).
    pub prefix_rewrite: Option<String>,
}

/// `HTTPDirectResponse`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDirectResponse {
    /// Status code (200..599).
    pub status: u32,
    /// Optional body.
    pub body: Option<HttpBody>,
}

/// `HTTPBody`: `string` or base64 `bytes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBody {
    /// Text body.
    pub string: Option<String>,
    /// Base64 body.
    pub bytes: Option<String>,
}

/// `Delegate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Delegate {
    /// VirtualService name.
    pub name: String,
    /// VirtualService namespace (default: the parent's).
    pub namespace: Option<String>,
}

/// `HTTPRewrite`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    /// Replaces the matched prefix (or the whole path for exact/regex).
    pub uri: Option<String>,
    /// Replacement authority.
    pub authority: Option<String>,
    /// Regex rewrite of the path.
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// `RegexRewrite`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    /// RE2 pattern.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Replacement, `\1` style groups.
    pub rewrite: String,
}

/// `HTTPRetry`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    /// Number of retries.
    pub attempts: i64,
    /// Timeout per attempt (duration string).
    pub per_try_timeout: Option<String>,
    /// Envoy `x-envoy-retry-on` conditions, comma separated.
    pub retry_on: Option<String>,
    /// Retry on other localities.
    pub retry_remote_localities: Option<bool>,
    /// Envoy retry back-off base interval.
    pub backoff: Option<String>,
    /// `retryIgnorePreviousHosts` (kept; not enforced).
    pub retry_ignore_previous_hosts: Option<bool>,
}

/// `Percent`: `value` in 0..100.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    /// Percentage, 0.0..=100.0.
    pub value: f64,
}

/// `HTTPFaultInjection`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    /// Delay before forwarding.
    pub delay: Option<FaultDelay>,
    /// Abort with an error.
    pub abort: Option<FaultAbort>,
}

/// `HTTPFaultInjection.Delay`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    /// Fixed delay (duration string).
    pub fixed_delay: Option<String>,
    /// Not supported by Istio.
    pub exponential_delay: Option<String>,
    /// Share of requests delayed.
    pub percentage: Option<Percent>,
    /// Deprecated integer percent.
    pub percent: Option<i64>,
}

/// `HTTPFaultInjection.Abort`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    /// HTTP status returned.
    pub http_status: Option<i64>,
    /// gRPC status name returned (e.g. `UNAVAILABLE`).
    pub grpc_status: Option<String>,
    /// HTTP/2 error (not supported by Istio).
    pub http2_error: Option<String>,
    /// Share of requests aborted.
    pub percentage: Option<Percent>,
}

/// `HTTPMirrorPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    /// Mirror destination.
    pub destination: Destination,
    /// Share of requests mirrored (default 100).
    pub percentage: Option<Percent>,
}

/// `CorsPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    /// Allowed origins.
    pub allow_origins: Vec<StringMatch>,
    /// Deprecated exact origins.
    pub allow_origin: Vec<String>,
    /// `Access-Control-Allow-Methods`.
    pub allow_methods: Vec<String>,
    /// `Access-Control-Allow-Headers`.
    pub allow_headers: Vec<String>,
    /// `Access-Control-Expose-Headers`.
    pub expose_headers: Vec<String>,
    /// `Access-Control-Max-Age` (duration string).
    pub max_age: Option<String>,
    /// `Access-Control-Allow-Credentials`.
    pub allow_credentials: Option<bool>,
    /// `FORWARD` or `IGNORE` preflights that match no origin.
    pub unmatched_preflights: Option<String>,
}

/// `TLSRoute`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    /// Matches (SNI is required).
    #[serde(rename = "match")]
    pub matches: Vec<TlsMatchAttributes>,
    /// Weighted destinations.
    pub route: Vec<RouteDestination>,
}

/// `TLSMatchAttributes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    /// SNI values (wildcards allowed).
    pub sni_hosts: Vec<String>,
    /// Destination CIDRs.
    pub destination_subnets: Vec<String>,
    /// Destination port.
    pub port: Option<u32>,
    /// Client labels.
    pub source_labels: Labels,
    /// Gateways.
    pub gateways: Vec<String>,
    /// Client namespace.
    pub source_namespace: Option<String>,
}

/// `TCPRoute`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    /// Matches, ORed.
    #[serde(rename = "match")]
    pub matches: Vec<L4MatchAttributes>,
    /// Weighted destinations.
    pub route: Vec<RouteDestination>,
}

/// `L4MatchAttributes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    /// Destination CIDRs.
    pub destination_subnets: Vec<String>,
    /// Destination port.
    pub port: Option<u32>,
    /// Client labels.
    pub source_labels: Labels,
    /// Gateways.
    pub gateways: Vec<String>,
    /// Client namespace.
    pub source_namespace: Option<String>,
    /// `sourceSubnet` (kept; not enforced).
    pub source_subnet: Option<String>,
}
