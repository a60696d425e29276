//! Compiled route tables: HTTP, TCP and TLS rules per (host, port), in
//! Istio's rule order (first match wins).
//!
//! Units: every duration is **milliseconds** (`*_ms: u64`); every percentage
//! is an `f64` in `0.0..=100.0`. Regexes are RE2 syntax, already checked with
//! the `regex` crate at load, matched against the whole value (Envoy's
//! `safe_regex` semantics: the proxy must anchor them, `^(?:re)$`).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The routes of one service host and port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Routes {
    /// HTTP rules for HTTP-family ports (http, http2, grpc, grpc-web, and
    /// unknown ports that sniff as HTTP).
    pub http: Vec<HttpRoute>,
    /// Opaque TCP rules.
    pub tcp: Vec<TcpRoute>,
    /// TLS passthrough rules matched by SNI.
    pub tls: Vec<TlsRoute>,
}

/// A string condition (Istio `StringMatch`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StringMatch {
    /// Equal to.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Whole value matches this RE2 regex.
    Regex(String),
}

/// A header or query-parameter condition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderMatch {
    /// Equal to.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Whole value matches this RE2 regex.
    Regex(String),
    /// The header is present (Istio: an empty `StringMatch`).
    Present,
}

/// One HTTP match block; all set conditions must hold. A route's matches
/// are ORed; a route with no matches matches every request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpMatch {
    /// Match name.
    pub name: Option<String>,
    /// Path (without query string).
    pub uri: Option<StringMatch>,
    /// `http` / `https`.
    pub scheme: Option<StringMatch>,
    /// Method.
    pub method: Option<StringMatch>,
    /// Host / `:authority`.
    pub authority: Option<StringMatch>,
    /// Header name (lower case) → condition.
    pub headers: BTreeMap<String, HeaderMatch>,
    /// Headers that must not match (absent, or value not matching).
    pub without_headers: BTreeMap<String, HeaderMatch>,
    /// Query parameter → condition.
    pub query_params: BTreeMap<String, HeaderMatch>,
    /// Destination port.
    pub port: Option<u16>,
    /// Client workload labels (all must be present with these values).
    pub source_labels: BTreeMap<String, String>,
    /// Client namespace.
    pub source_namespace: Option<String>,
    /// Gateways (`ns/name`, or `mesh`) this match applies to; empty: the
    /// VirtualService's gateways.
    pub gateways: Vec<String>,
    /// Match `uri` case-insensitively.
    pub ignore_uri_case: bool,
}

/// Request/response header mutations, applied in Envoy's order: remove,
/// then set (overwrite), then add (append).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderOps {
    /// Overwrite these headers.
    pub set: BTreeMap<String, String>,
    /// Append these headers.
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    pub remove: Vec<String>,
}

impl HeaderOps {
    /// `true` when nothing is changed.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// Header mutations on both directions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headers {
    /// On the request sent upstream.
    pub request: HeaderOps,
    /// On the response sent downstream.
    pub response: HeaderOps,
}

/// One weighted destination of an HTTP rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpRouteDestination {
    /// Envoy cluster name, key into [`super::MeshSnapshot::clusters`].
    pub cluster: String,
    /// Destination FQDN.
    pub host: String,
    /// Subset (empty: all endpoints).
    pub subset: String,
    /// Service port.
    pub port: u16,
    /// Relative weight (Istio: sums to 100; a lone destination has 100).
    pub weight: u32,
    /// Per-destination header operations, applied after the rule's.
    pub headers: Headers,
}

/// `HTTPRedirect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// New path (replaces the whole path).
    pub uri: Option<String>,
    /// New authority.
    pub authority: Option<String>,
    /// New port.
    pub port: Option<u16>,
    /// `FROM_PROTOCOL_DEFAULT` / `FROM_REQUEST_PORT`.
    pub derive_port: Option<String>,
    /// New scheme.
    pub scheme: Option<String>,
    /// Status: 301 (default), 302, 303, 307, 308.
    pub redirect_code: u16,
}

/// `HTTPDirectResponse`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectResponse {
    /// Status code.
    pub status: u16,
    /// Body bytes (from `body.string`, or base64-decoded `body.bytes`).
    pub body: Option<Vec<u8>>,
}

/// `HTTPRewrite`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewrite {
    /// Replaces the part of the path matched by a `prefix` uri match (the
    /// whole path for exact/regex matches), like Envoy's `prefix_rewrite`.
    pub uri: Option<String>,
    /// New Host / `:authority`.
    pub authority: Option<String>,
    /// Regex substitution on the path.
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// `RegexRewrite`: replace every match of `pattern` with `rewrite`
/// (`\1`-style groups).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegexRewrite {
    /// RE2 pattern.
    pub pattern: String,
    /// Substitution.
    pub rewrite: String,
}

/// Fault delay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultDelay {
    /// Delay, ms.
    pub fixed_delay_ms: u64,
    /// Share of requests delayed, 0..100.
    pub percentage: f64,
}

/// What a fault abort returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbortStatus {
    /// HTTP status code.
    Http(u16),
    /// gRPC status name (e.g. `UNAVAILABLE`), sent as `grpc-status` trailers
    /// with HTTP 200.
    Grpc(String),
}

/// Fault abort.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultAbort {
    /// Returned status.
    pub status: AbortStatus,
    /// Share of requests aborted, 0..100.
    pub percentage: f64,
}

/// Fault injection (response flags `DI` for delays, `FI` for aborts).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Delay.
    pub delay: Option<FaultDelay>,
    /// Abort.
    pub abort: Option<FaultAbort>,
}

/// A mirror target: a copy of the request is sent, the response ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mirror {
    /// Envoy cluster name.
    pub cluster: String,
    /// Destination FQDN.
    pub host: String,
    /// Subset (empty: all).
    pub subset: String,
    /// Service port.
    pub port: u16,
    /// Share of requests mirrored, 0..100 (Istio default 100).
    pub percentage: f64,
}

/// Retry policy. Istio's default when a rule has no `retries`: 2 attempts,
/// `retry_on = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"`
/// with retriable status 503, no per-try timeout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retries {
    /// Retries after the first try (0: none).
    pub attempts: u32,
    /// Timeout per try, ms (None: the route timeout).
    pub per_try_timeout_ms: Option<u64>,
    /// Envoy `retry_on` conditions, comma separated; may include HTTP status
    /// codes (Istio turns them into `retriable-status-codes`).
    pub retry_on: String,
    /// Retry other localities.
    pub retry_remote_localities: bool,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            attempts: 2,
            per_try_timeout_ms: None,
            retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
                .to_string(),
            retry_remote_localities: false,
        }
    }
}

/// CORS (Envoy's CORS filter semantics).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsPolicy {
    /// Allowed origins (`allowOrigins`, plus deprecated `allowOrigin` as exact).
    pub allow_origins: Vec<StringMatch>,
    /// `Access-Control-Allow-Methods`.
    pub allow_methods: Vec<String>,
    /// `Access-Control-Allow-Headers`.
    pub allow_headers: Vec<String>,
    /// `Access-Control-Expose-Headers`.
    pub expose_headers: Vec<String>,
    /// `Access-Control-Max-Age`, ms (sent in seconds).
    pub max_age_ms: Option<u64>,
    /// `Access-Control-Allow-Credentials`.
    pub allow_credentials: Option<bool>,
    /// `FORWARD` (default) or `IGNORE`.
    pub unmatched_preflights: Option<String>,
}

/// One compiled HTTP rule. Exactly one of `route` (non-empty), `redirect`
/// or `direct_response` is the action (validation guarantees it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpRoute {
    /// Rule name (`name` in the VirtualService, else empty).
    pub name: String,
    /// Origin VirtualService, `namespace/name` (empty for default routes).
    pub virtual_service: String,
    /// Matches, ORed; empty matches everything.
    pub matches: Vec<HttpMatch>,
    /// Weighted destinations.
    pub route: Vec<HttpRouteDestination>,
    /// Redirect action.
    pub redirect: Option<Redirect>,
    /// Direct response action.
    pub direct_response: Option<DirectResponse>,
    /// Rewrite before forwarding.
    pub rewrite: Option<Rewrite>,
    /// Header operations of the rule.
    pub headers: Headers,
    /// Fault injection.
    pub fault: Option<Fault>,
    /// Mirrors (`mirror` + `mirrorPercentage`, and `mirrors`).
    pub mirrors: Vec<Mirror>,
    /// Retries (Istio's default policy when the rule has none).
    pub retries: Retries,
    /// Overall timeout, ms (None: no timeout, Istio's default).
    pub timeout_ms: Option<u64>,
    /// CORS.
    pub cors_policy: Option<CorsPolicy>,
}

/// An L4 match (TCP and TLS rules). All set conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct L4Match {
    /// Destination CIDRs (`10.0.0.0/8`, or a bare IP).
    pub destination_subnets: Vec<String>,
    /// Destination port.
    pub port: Option<u16>,
    /// Client labels.
    pub source_labels: BTreeMap<String, String>,
    /// Client namespace.
    pub source_namespace: Option<String>,
    /// Gateways.
    pub gateways: Vec<String>,
    /// SNI values (TLS rules only; `*.example.com` wildcards).
    pub sni_hosts: Vec<String>,
}

/// A weighted L4 destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedCluster {
    /// Envoy cluster name.
    pub cluster: String,
    /// FQDN.
    pub host: String,
    /// Subset.
    pub subset: String,
    /// Port.
    pub port: u16,
    /// Relative weight.
    pub weight: u32,
}

/// A TCP rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpRoute {
    /// Origin VirtualService `namespace/name` (empty for default routes).
    pub virtual_service: String,
    /// Matches, ORed; empty matches everything.
    pub matches: Vec<L4Match>,
    /// Destinations.
    pub route: Vec<WeightedCluster>,
}

/// A TLS (SNI) rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsRoute {
    /// Origin VirtualService `namespace/name`.
    pub virtual_service: String,
    /// Matches, ORed.
    pub matches: Vec<L4Match>,
    /// Destinations.
    pub route: Vec<WeightedCluster>,
}
