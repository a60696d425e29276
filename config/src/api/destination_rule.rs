//! `networking.istio.io` DestinationRule: subsets and traffic policy.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::virtual_service::{Labels, PortSelector};

/// `istio.networking.v1.DestinationRule`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRule {
    /// Service host the rule applies to.
    pub host: String,
    /// Policy for every subset and port (boxed: ~1 KB inline, often absent).
    pub traffic_policy: Option<Box<TrafficPolicy>>,
    /// Named subsets selected by endpoint labels.
    pub subsets: Vec<Subset>,
    /// Visibility.
    pub export_to: Vec<String>,
    /// Workloads (clients) the rule applies to.
    pub workload_selector: Option<WorkloadSelector>,
}

/// `WorkloadSelector`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels a workload must carry.
    #[serde(alias = "labels")]
    pub match_labels: Labels,
}

/// `Subset`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// Subset name (no `.`).
    pub name: String,
    /// Endpoint labels.
    pub labels: Labels,
    /// Overrides the rule's traffic policy (boxed: ~1 KB inline, often absent).
    pub traffic_policy: Option<Box<TrafficPolicy>>,
}

/// `TrafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    /// Load balancing.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection limits.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Circuit breaking by ejection.
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream TLS.
    pub tls: Option<ClientTlsSettings>,
    /// Per-port overrides.
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// Tunnel settings (kept, not used).
    pub tunnel: Option<serde_yaml::Value>,
    /// PROXY protocol (kept, not used).
    pub proxy_protocol: Option<serde_yaml::Value>,
    /// `retryBudget` (kept; not enforced).
    pub retry_budget: Option<serde_yaml::Value>,
}

/// `TrafficPolicy.PortTrafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    /// The port.
    pub port: Option<PortSelector>,
    /// Load balancing.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection limits.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection.
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream TLS.
    pub tls: Option<ClientTlsSettings>,
}

/// `LoadBalancerSettings`: `simple` or `consistentHash`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    /// `UNSPECIFIED`, `RANDOM`, `PASSTHROUGH`, `ROUND_ROBIN`, `LEAST_REQUEST`, `LEAST_CONN`.
    pub simple: Option<String>,
    /// Consistent hashing.
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Locality weighting / failover.
    pub locality_lb_setting: Option<LocalityLbSetting>,
    /// Slow start (duration string).
    pub warmup_duration_secs: Option<String>,
    /// Slow start (newer form, kept).
    pub warmup: Option<serde_yaml::Value>,
    /// `backendUtilization` (kept; not enforced).
    pub backend_utilization: Option<serde_yaml::Value>,
    /// `zoneAwareLbSetting` (kept; not enforced).
    pub zone_aware_lb_setting: Option<serde_yaml::Value>,
}

/// `ConsistentHashLB`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHashLb {
    /// Hash on a request header.
    pub http_header_name: Option<String>,
    /// Hash on a cookie (generated when absent).
    pub http_cookie: Option<HttpCookie>,
    /// Hash on the client IP.
    pub use_source_ip: Option<bool>,
    /// Hash on a query parameter.
    pub http_query_parameter_name: Option<String>,
    /// Ring hash.
    pub ring_hash: Option<RingHash>,
    /// Maglev.
    pub maglev: Option<MagLev>,
    /// Deprecated ring size.
    pub minimum_ring_size: Option<u64>,
}

/// `ConsistentHashLB.HTTPCookie`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    /// Cookie name.
    pub name: String,
    /// Cookie path.
    pub path: Option<String>,
    /// Lifetime (duration string).
    pub ttl: Option<String>,
    /// Cookie `attributes` (kept; not enforced).
    pub attributes: Vec<serde_yaml::Value>,
}

/// `ConsistentHashLB.RingHash`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    /// Minimum ring size (Envoy default 1024).
    pub minimum_ring_size: Option<u64>,
}

/// `ConsistentHashLB.MagLev`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct MagLev {
    /// Table size, a prime (Envoy default 65537).
    pub table_size: Option<u64>,
}

/// `LocalityLoadBalancerSetting`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLbSetting {
    /// Weighted distribution from a locality to others.
    pub distribute: Vec<LocalityDistribute>,
    /// Failover from a region to another.
    pub failover: Vec<LocalityFailover>,
    /// Label keys for failover priority.
    pub failover_priority: Vec<String>,
    /// Enable locality load balancing.
    pub enabled: Option<bool>,
}

/// `LocalityLoadBalancerSetting.Distribute`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityDistribute {
    /// Origin locality (`region/zone/subzone`, `*` allowed).
    pub from: String,
    /// Destination locality → weight (sum 100).
    pub to: BTreeMap<String, u32>,
}

/// `LocalityLoadBalancerSetting.Failover`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityFailover {
    /// Origin region.
    pub from: String,
    /// Failover region.
    pub to: String,
}

/// `ConnectionPoolSettings`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    /// TCP limits.
    pub tcp: Option<TcpSettings>,
    /// HTTP limits.
    pub http: Option<HttpSettings>,
}

/// `ConnectionPoolSettings.TCPSettings`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    /// Max connections to a host.
    pub max_connections: Option<i64>,
    /// Connect timeout (duration string).
    pub connect_timeout: Option<String>,
    /// Keepalive (kept).
    pub tcp_keepalive: Option<serde_yaml::Value>,
    /// Max connection lifetime (duration string).
    pub max_connection_duration: Option<String>,
    /// Idle timeout (duration string).
    pub idle_timeout: Option<String>,
}

/// `ConnectionPoolSettings.HTTPSettings`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    /// Max pending requests.
    pub http1_max_pending_requests: Option<i64>,
    /// Max active requests.
    pub http2_max_requests: Option<i64>,
    /// Requests per connection (0 = unlimited).
    pub max_requests_per_connection: Option<i64>,
    /// Max outstanding retries.
    pub max_retries: Option<i64>,
    /// Idle timeout (duration string).
    pub idle_timeout: Option<String>,
    /// `DEFAULT`, `DO_NOT_UPGRADE`, `UPGRADE`.
    pub h2_upgrade_policy: Option<String>,
    /// Use the client's protocol upstream.
    pub use_client_protocol: Option<bool>,
    /// Max concurrent HTTP/2 streams.
    pub max_concurrent_streams: Option<i64>,
    /// `http2KeepAlive` (kept; not enforced).
    pub http2_keep_alive: Option<serde_yaml::Value>,
}

/// `OutlierDetection`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Separate local-origin errors.
    pub split_external_local_origin_errors: Option<bool>,
    /// Local-origin failures before ejection.
    pub consecutive_local_origin_failures: Option<i64>,
    /// 502/503/504 before ejection.
    pub consecutive_gateway_errors: Option<i64>,
    /// 5xx before ejection.
    #[serde(rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<i64>,
    /// Deprecated alias of consecutiveGatewayErrors.
    pub consecutive_errors: Option<i64>,
    /// Sweep interval (duration string).
    pub interval: Option<String>,
    /// Base ejection time (duration string).
    pub base_ejection_time: Option<String>,
    /// Max share of ejected hosts.
    pub max_ejection_percent: Option<i64>,
    /// Below this share of healthy hosts, ejection stops.
    pub min_health_percent: Option<i64>,
    /// `outlierDetectionHttpErrorCodes` (kept; not enforced).
    pub outlier_detection_http_error_codes: Option<serde_yaml::Value>,
}

/// `ClientTLSSettings`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    /// `DISABLE`, `SIMPLE`, `MUTUAL`, `ISTIO_MUTUAL`.
    pub mode: Option<String>,
    /// Client certificate file.
    pub client_certificate: Option<String>,
    /// Client key file.
    pub private_key: Option<String>,
    /// CA bundle file.
    pub ca_certificates: Option<String>,
    /// Secret holding cert/key/CA.
    pub credential_name: Option<String>,
    /// Accepted server SANs.
    pub subject_alt_names: Vec<String>,
    /// SNI sent.
    pub sni: Option<String>,
    /// Skip server verification.
    pub insecure_skip_verify: Option<bool>,
    /// CRL file.
    pub ca_crl: Option<String>,
}
