//! `networking.istio.io` DestinationRule: subsets and traffic policy.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::virtual_service::{Labels, PortSelector};

/// `istio.networking.v1.DestinationRule`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRule {
    /// Service host the rule applies to.
    #[serde(default)]
    pub host: String,
    /// Policy for every subset and port (boxed: ~1 KB inline, often absent).
    #[serde(default)]
    pub traffic_policy: Option<Box<TrafficPolicy>>,
    /// Named subsets selected by endpoint labels.
    #[serde(default)]
    pub subsets: Vec<Subset>,
    /// Visibility.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Workloads (clients) the rule applies to.
    #[serde(default)]
    pub workload_selector: Option<WorkloadSelector>,
}

/// `WorkloadSelector`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels a workload must carry.
    #[serde(default, alias = "labels")]
    pub match_labels: Labels,
}

/// `Subset`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// Subset name (no `.`).
    #[serde(default)]
    pub name: String,
    /// Endpoint labels.
    #[serde(default)]
    pub labels: Labels,
    /// Overrides the rule's traffic policy (boxed: ~1 KB inline, often absent).
    #[serde(default)]
    pub traffic_policy: Option<Box<TrafficPolicy>>,
}

/// `TrafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    /// Load balancing.
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection limits.
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Circuit breaking by ejection.
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream TLS.
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
    /// Per-port overrides.
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// Tunnel settings (kept, not used).
    #[serde(default)]
    pub tunnel: Option<serde_yaml::Value>,
    /// PROXY protocol (kept, not used).
    #[serde(default)]
    pub proxy_protocol: Option<serde_yaml::Value>,
    /// `retryBudget` (kept; not enforced).
    #[serde(default)]
    pub retry_budget: Option<serde_yaml::Value>,
}

/// `TrafficPolicy.PortTrafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    /// The port.
    #[serde(default)]
    pub port: Option<PortSelector>,
    /// Load balancing.
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection limits.
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection.
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream TLS.
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
}

/// `LoadBalancerSettings`: `simple` or `consistentHash`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    /// `UNSPECIFIED`, `RANDOM`, `PASSTHROUGH`, `ROUND_ROBIN`, `LEAST_REQUEST`, `LEAST_CONN`.
    #[serde(default)]
    pub simple: Option<String>,
    /// Consistent hashing.
    #[serde(default)]
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Locality weighting / failover.
    #[serde(default)]
    pub locality_lb_setting: Option<LocalityLbSetting>,
    /// Slow start (duration string).
    #[serde(default)]
    pub warmup_duration_secs: Option<String>,
    /// Slow start (newer form, kept).
    #[serde(default)]
    pub warmup: Option<serde_yaml::Value>,
    /// `backendUtilization` (kept; not enforced).
    #[serde(default)]
    pub backend_utilization: Option<serde_yaml::Value>,
    /// `zoneAwareLbSetting` (kept; not enforced).
    #[serde(default)]
    pub zone_aware_lb_setting: Option<serde_yaml::Value>,
}

/// `ConsistentHashLB`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHashLb {
    /// Hash on a request header.
    #[serde(default)]
    pub http_header_name: Option<String>,
    /// Hash on a cookie (generated when absent).
    #[serde(default)]
    pub http_cookie: Option<HttpCookie>,
    /// Hash on the client IP.
    #[serde(default)]
    pub use_source_ip: Option<bool>,
    /// Hash on a query parameter.
    #[serde(default)]
    pub http_query_parameter_name: Option<String>,
    /// Ring hash.
    #[serde(default)]
    pub ring_hash: Option<RingHash>,
    /// Maglev.
    #[serde(default)]
    pub maglev: Option<MagLev>,
    /// Deprecated ring size.
    #[serde(default)]
    pub minimum_ring_size: Option<u64>,
}

/// `ConsistentHashLB.HTTPCookie`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    /// Cookie name.
    #[serde(default)]
    pub name: String,
    /// Cookie path.
    #[serde(default)]
    pub path: Option<String>,
    /// Lifetime (duration string).
    #[serde(default)]
    pub ttl: Option<String>,
    /// Cookie `attributes` (kept; not enforced).
    #[serde(default)]
    pub attributes: Vec<serde_yaml::Value>,
}

/// `ConsistentHashLB.RingHash`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    /// Minimum ring size (Envoy default 1024).
    #[serde(default)]
    pub minimum_ring_size: Option<u64>,
}

/// `ConsistentHashLB.MagLev`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MagLev {
    /// Table size, a prime (Envoy default 65537).
    #[serde(default)]
    pub table_size: Option<u64>,
}

/// `LocalityLoadBalancerSetting`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLbSetting {
    /// Weighted distribution from a locality to others.
    #[serde(default)]
    pub distribute: Vec<LocalityDistribute>,
    /// Failover from a region to another.
    #[serde(default)]
    pub failover: Vec<LocalityFailover>,
    /// Label keys for failover priority.
    #[serde(default)]
    pub failover_priority: Vec<String>,
    /// Enable locality load balancing.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `LocalityLoadBalancerSetting.Distribute`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityDistribute {
    /// Origin locality (`region/zone/subzone`, `*` allowed).
    #[serde(default)]
    pub from: String,
    /// Destination locality → weight (sum 100).
    #[serde(default)]
    pub to: BTreeMap<String, u32>,
}

/// `LocalityLoadBalancerSetting.Failover`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityFailover {
    /// Origin region.
    #[serde(default)]
    pub from: String,
    /// Failover region.
    #[serde(default)]
    pub to: String,
}

/// `ConnectionPoolSettings`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    /// TCP limits.
    #[serde(default)]
    pub tcp: Option<TcpSettings>,
    /// HTTP limits.
    #[serde(default)]
    pub http: Option<HttpSettings>,
}

/// `ConnectionPoolSettings.TCPSettings`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    /// Max connections to a host.
    #[serde(default)]
    pub max_connections: Option<i64>,
    /// Connect timeout (duration string).
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// Keepalive (kept).
    #[serde(default)]
    pub tcp_keepalive: Option<serde_yaml::Value>,
    /// Max connection lifetime (duration string).
    #[serde(default)]
    pub max_connection_duration: Option<String>,
    /// Idle timeout (duration string).
    #[serde(default)]
    pub idle_timeout: Option<String>,
}

/// `ConnectionPoolSettings.HTTPSettings`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    /// Max pending requests.
    #[serde(default)]
    pub http1_max_pending_requests: Option<i64>,
    /// Max active requests.
    #[serde(default)]
    pub http2_max_requests: Option<i64>,
    /// Requests per connection (0 = unlimited).
    #[serde(default)]
    pub max_requests_per_connection: Option<i64>,
    /// Max outstanding retries.
    #[serde(default)]
    pub max_retries: Option<i64>,
    /// Idle timeout (duration string).
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// `DEFAULT`, `DO_NOT_UPGRADE`, `UPGRADE`.
    #[serde(default)]
    pub h2_upgrade_policy: Option<String>,
    /// Use the client's protocol upstream.
    #[serde(default)]
    pub use_client_protocol: Option<bool>,
    /// Max concurrent HTTP/2 streams.
    #[serde(default)]
    pub max_concurrent_streams: Option<i64>,
    /// `http2KeepAlive` (kept; not enforced).
    #[serde(default)]
    pub http2_keep_alive: Option<serde_yaml::Value>,
}

/// `OutlierDetection`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Separate local-origin errors.
    #[serde(default)]
    pub split_external_local_origin_errors: Option<bool>,
    /// Local-origin failures before ejection.
    #[serde(default)]
    pub consecutive_local_origin_failures: Option<i64>,
    /// 502/503/504 before ejection.
    #[serde(default)]
    pub consecutive_gateway_errors: Option<i64>,
    /// 5xx before ejection.
    #[serde(default, rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<i64>,
    /// Deprecated alias of consecutiveGatewayErrors.
    #[serde(default)]
    pub consecutive_errors: Option<i64>,
    /// Sweep interval (duration string).
    #[serde(default)]
    pub interval: Option<String>,
    /// Base ejection time (duration string).
    #[serde(default)]
    pub base_ejection_time: Option<String>,
    /// Max share of ejected hosts.
    #[serde(default)]
    pub max_ejection_percent: Option<i64>,
    /// Below this share of healthy hosts, ejection stops.
    #[serde(default)]
    pub min_health_percent: Option<i64>,
    /// `outlierDetectionHttpErrorCodes` (kept; not enforced).
    #[serde(default)]
    pub outlier_detection_http_error_codes: Option<serde_yaml::Value>,
}

/// `ClientTLSSettings`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    /// `DISABLE`, `SIMPLE`, `MUTUAL`, `ISTIO_MUTUAL`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Client certificate file.
    #[serde(default)]
    pub client_certificate: Option<String>,
    /// Client key file.
    #[serde(default)]
    pub private_key: Option<String>,
    /// CA bundle file.
    #[serde(default)]
    pub ca_certificates: Option<String>,
    /// Secret holding cert/key/CA.
    #[serde(default)]
    pub credential_name: Option<String>,
    /// Accepted server SANs.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// SNI sent.
    #[serde(default)]
    pub sni: Option<String>,
    /// Skip server verification.
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
    /// CRL file.
    #[serde(default)]
    pub ca_crl: Option<String>,
}
