//! Compiled upstream clusters: one per (service host, port, subset), named
//! like Envoy's `outbound|<port>|<subset>|<host>` (empty subset for the
//! service-wide cluster). Traffic policy is merged as Istio merges it: the
//! DestinationRule's top-level `trafficPolicy`, then its `portLevelSettings`
//! for this port, then the subset's `trafficPolicy` (and the subset's own
//! `portLevelSettings`); each of loadBalancer / connectionPool /
//! outlierDetection / tls is replaced as a whole by the more specific level.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Protocol;

/// Envoy cluster name for an outbound cluster.
pub fn cluster_name(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// One upstream cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// `outbound|<port>|<subset>|<host>`.
    pub name: String,
    /// Service FQDN.
    pub host: String,
    /// Service port.
    pub port: u16,
    /// Subset name, empty for the whole service.
    pub subset: String,
    /// Subset labels (empty for the whole service).
    pub subset_labels: BTreeMap<String, String>,
    /// Protocol of the service port.
    pub protocol: Protocol,
    /// Endpoints (sorted by address); those of the subset only.
    pub endpoints: Vec<Endpoint>,
    /// Load balancing.
    pub load_balancer: LoadBalancer,
    /// Connection pool limits (circuit breaker thresholds).
    pub connection_pool: ConnectionPool,
    /// Passive health checking; None when the DestinationRule has none.
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream TLS.
    pub tls: ClientTls,
}

/// An upstream endpoint. The strings that repeat across endpoints
/// (locality, service account, namespace) are shared `Arc<str>`s; they
/// serialise as plain strings.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    /// Address with the *target* port.
    pub addr: SocketAddr,
    /// Workload labels (from the Pod, WorkloadEntry or ServiceEntry endpoint);
    /// shared by every endpoint (and [`super::Workload`]) of one workload.
    pub labels: Arc<BTreeMap<String, String>>,
    /// `region/zone/subzone` (from `topology.kubernetes.io/*` labels, the
    /// EndpointSlice zone, or the WorkloadEntry `locality`); empty if unknown.
    pub locality: Arc<str>,
    /// Kubernetes service account (SPIFFE `ns/<ns>/sa/<sa>`); None if unknown.
    pub service_account: Option<Arc<str>>,
    /// Namespace of the workload.
    pub namespace: Arc<str>,
    /// `false` for not-ready / terminating endpoints.
    pub healthy: bool,
    /// Load-balancing weight, ≥ 1.
    pub weight: u32,
}

/// Simple load-balancing algorithms (`LoadBalancerSettings.simple`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// Round robin.
    RoundRobin,
    /// Random.
    Random,
    /// Power of two choices, least active requests (Istio's default).
    LeastRequest,
    /// Connect to the original destination address.
    Passthrough,
}

/// What a consistent hash is computed from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    /// A request header's value.
    HttpHeaderName(String),
    /// A cookie; generated with `ttl_ms` when absent and a ttl is set.
    HttpCookie {
        /// Cookie name.
        name: String,
        /// Cookie path.
        path: Option<String>,
        /// Cookie lifetime, ms.
        ttl_ms: Option<u64>,
    },
    /// The client IP.
    UseSourceIp,
    /// A query parameter.
    HttpQueryParameterName(String),
}

/// Consistent hashing table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashAlgorithm {
    /// Ketama ring; Envoy's default minimum ring size is 1024.
    RingHash {
        /// Minimum ring entries.
        minimum_ring_size: u64,
    },
    /// Maglev; Envoy's default table size is 65537 (a prime).
    Maglev {
        /// Lookup table size.
        table_size: u64,
    },
}

/// Consistent-hash load balancing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistentHash {
    /// Hash input.
    pub key: HashKey,
    /// Table.
    pub algorithm: HashAlgorithm,
}

/// Load-balancing policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancer {
    /// A simple algorithm.
    Simple(SimpleLb),
    /// Consistent hashing.
    ConsistentHash(ConsistentHash),
}

impl Default for LoadBalancer {
    /// `ROUND_ROBIN`: with no DestinationRule load balancer (or `simple:
    /// UNSPECIFIED`), requests go round robin over the service's endpoints,
    /// as Strait's issue 5 asks. Istio itself programs Envoy's
    /// `LEAST_REQUEST` there; a DestinationRule with `simple:
    /// LEAST_REQUEST` selects it.
    fn default() -> Self {
        LoadBalancer::Simple(SimpleLb::RoundRobin)
    }
}

/// Connection pool limits. Defaults are the values Istio programs into
/// Envoy when a DestinationRule sets none: effectively unlimited
/// (`u32::MAX`, i.e. 4294967295) for connections, pending requests,
/// requests and retries; connect timeout 10 s; HTTP idle timeout 1 h;
/// unlimited requests per connection. (Envoy's own defaults, without Istio,
/// are 1024 connections / pending / requests and 3 retries.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionPool {
    /// `tcp.maxConnections`: max connections to the cluster.
    pub max_connections: u32,
    /// `tcp.connectTimeout`, ms.
    pub connect_timeout_ms: u64,
    /// `tcp.maxConnectionDuration`, ms (None: unlimited).
    pub max_connection_duration_ms: Option<u64>,
    /// `http.http1MaxPendingRequests`: queued requests waiting for a connection.
    pub http1_max_pending_requests: u32,
    /// `http.http2MaxRequests`: max concurrent requests to the cluster.
    pub http2_max_requests: u32,
    /// `http.maxRequestsPerConnection` (0: unlimited).
    pub max_requests_per_connection: u32,
    /// `http.maxRetries`: max concurrent retries to the cluster.
    pub max_retries: u32,
    /// `http.idleTimeout` (or `tcp.idleTimeout`), ms.
    pub idle_timeout_ms: u64,
    /// `http.h2UpgradePolicy == UPGRADE`.
    pub h2_upgrade: bool,
    /// `http.useClientProtocol`.
    pub use_client_protocol: bool,
}

impl Default for ConnectionPool {
    fn default() -> Self {
        ConnectionPool {
            max_connections: u32::MAX,
            connect_timeout_ms: 10_000,
            max_connection_duration_ms: None,
            http1_max_pending_requests: u32::MAX,
            http2_max_requests: u32::MAX,
            max_requests_per_connection: 0,
            max_retries: u32::MAX,
            idle_timeout_ms: 3_600_000,
            h2_upgrade: false,
            use_client_protocol: false,
        }
    }
}

/// Outlier detection (Envoy semantics). Defaults are Istio's/Envoy's when a
/// DestinationRule has an `outlierDetection` block: 5 consecutive 5xx,
/// gateway errors off, interval 10 s, base ejection 30 s, max ejection 10 %,
/// min health 0 % (Istio sets Envoy's panic threshold to 0 unless given).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutlierDetection {
    /// `consecutive5xxErrors` (0: disabled).
    pub consecutive_5xx_errors: u32,
    /// `consecutiveGatewayErrors` (502/503/504/connect failures; None: off).
    pub consecutive_gateway_errors: Option<u32>,
    /// `consecutiveLocalOriginFailures` (with split errors).
    pub consecutive_local_origin_failures: Option<u32>,
    /// `splitExternalLocalOriginErrors`.
    pub split_external_local_origin_errors: bool,
    /// `interval`, ms.
    pub interval_ms: u64,
    /// `baseEjectionTime`, ms (multiplied by the times ejected).
    pub base_ejection_time_ms: u64,
    /// `maxEjectionPercent`, 0..100.
    pub max_ejection_percent: u32,
    /// `minHealthPercent`, 0..100.
    pub min_health_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx_errors: 5,
            consecutive_gateway_errors: None,
            consecutive_local_origin_failures: None,
            split_external_local_origin_errors: false,
            interval_ms: 10_000,
            base_ejection_time_ms: 30_000,
            max_ejection_percent: 10,
            min_health_percent: 0,
        }
    }
}

/// Upstream TLS mode (`ClientTLSSettings.TLSmode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    /// Plain text (unless auto mTLS applies; see [`ClientTls::auto_mtls`]).
    #[default]
    Disable,
    /// TLS origination, server verified (Envoy's `UpstreamTlsContext`).
    Simple,
    /// TLS origination presenting the given client certificate.
    Mutual,
    /// mTLS with the mesh workload certificate (HBONE between nodes).
    IstioMutual,
}

/// Upstream TLS settings of a cluster: the `trafficPolicy.tls` that applies
/// to it after Istio's precedence (subset `portLevelSettings` > subset >
/// top-level `portLevelSettings` > top level; each level replaces `tls` as
/// a whole), or auto mTLS when no level sets it. File paths are read by
/// the daemon when it builds the cluster (never per request).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientTls {
    /// Mode.
    pub mode: TlsMode,
    /// `true` when no DestinationRule set `tls`: Istio's auto mTLS uses
    /// ISTIO_MUTUAL to meshed endpoints and plain text otherwise.
    pub auto_mtls: bool,
    /// SNI to send (SIMPLE/MUTUAL); `None`: the cluster's host.
    pub sni: Option<String>,
    /// Accepted server SANs; when set, one of the server certificate's SANs
    /// must equal one of them (instead of the host-name check against SNI).
    pub subject_alt_names: Vec<String>,
    /// Kubernetes Secret holding cert/key/CA (`credentialName`).
    pub credential_name: Option<String>,
    /// CA bundle file (PEM); `None`: the system's trust store.
    pub ca_certificates: Option<String>,
    /// Client certificate chain file (PEM, MUTUAL).
    pub client_certificate: Option<String>,
    /// Client private key file (PEM, MUTUAL).
    pub private_key: Option<String>,
    /// Skip server certificate verification (and SAN checks).
    pub insecure_skip_verify: bool,
    /// Certificate revocation list file (PEM), checked with the CA.
    #[serde(default)]
    pub ca_crl: Option<String>,
}

/// No DestinationRule `tls`: Istio's auto mTLS (`auto_mtls: true`), so
/// clusters built without one (PASSTHROUGH, BlackHole) reach meshed pods
/// over HBONE like any other.
impl Default for ClientTls {
    fn default() -> Self {
        Self {
            mode: TlsMode::default(),
            auto_mtls: true,
            sni: None,
            subject_alt_names: Vec::new(),
            credential_name: None,
            ca_certificates: None,
            client_certificate: None,
            private_key: None,
            insecure_skip_verify: false,
            ca_crl: None,
        }
    }
}

/// How a connection to one endpoint of a cluster leaves the node: the one
/// decision the proxy and the HBONE transport share
/// ([`ClientTls::transport`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamTransport {
    /// Plain TCP to the endpoint.
    Plaintext,
    /// HBONE (HTTP/2 CONNECT over mTLS with workload certificates) to the
    /// endpoint's `:15008`.
    Hbone,
    /// TLS origination (`SIMPLE` / `MUTUAL`) to the endpoint itself.
    Originate,
    /// No connection: the setting cannot be honoured (fail closed). The
    /// text is the reason, used as Envoy's
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%` with response flag `UF`.
    Refuse(&'static str),
}

/// Why an `ISTIO_MUTUAL` connection is refused when the daemon has no
/// workload certificates.
pub const REFUSE_NO_IDENTITY: &str =
    "ISTIO_MUTUAL needs workload certificates: the daemon has no CA (--ca-dir or --ca-address)";
/// Why an `ISTIO_MUTUAL` connection is refused to a destination outside
/// the mesh.
pub const REFUSE_NOT_MESHED: &str =
    "ISTIO_MUTUAL to a destination outside the mesh (no workload identity to verify)";

/// The part of a cluster's [`ClientTls`] that decides the transport: its
/// mode and whether auto mTLS applies. Small and `Copy`, so the proxy
/// carries it with every cluster's pool settings and decides per
/// connection without cloning the file paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeshTlsPolicy {
    /// `trafficPolicy.tls.mode` after Istio's precedence.
    pub mode: TlsMode,
    /// No DestinationRule set `tls` (Istio's auto mTLS).
    pub auto_mtls: bool,
}

/// No DestinationRule: auto mTLS.
impl Default for MeshTlsPolicy {
    fn default() -> Self {
        Self {
            mode: TlsMode::Disable,
            auto_mtls: true,
        }
    }
}

impl MeshTlsPolicy {
    /// How to reach one endpoint of the cluster, as Istio decides it:
    ///
    /// - `DISABLE` set explicitly: plain text.
    /// - unset (auto mTLS, MeshConfig `enableAutoMtls`, default on): HBONE
    ///   when the destination is meshed and the daemon has workload
    ///   certificates, else plain text (Istio's auto mTLS falls back to
    ///   plain text for destinations without a sidecar).
    /// - `ISTIO_MUTUAL`: HBONE to a meshed destination; refused (fail
    ///   closed) to a destination outside the mesh or without a CA, where
    ///   Envoy's handshake would fail with `UF`.
    /// - `SIMPLE` / `MUTUAL`: TLS origination to the endpoint itself.
    ///
    /// `meshed`: the endpoint is a meshed pod (a known pod IP with a
    /// service account); `have_identity`: the daemon has a CA;
    /// `enable_auto_mtls`: the MeshConfig's `enableAutoMtls`.
    pub fn transport(
        self,
        meshed: bool,
        have_identity: bool,
        enable_auto_mtls: bool,
    ) -> UpstreamTransport {
        match self.mode {
            TlsMode::Disable if self.auto_mtls && enable_auto_mtls && meshed && have_identity => {
                UpstreamTransport::Hbone
            }
            TlsMode::Disable => UpstreamTransport::Plaintext,
            TlsMode::IstioMutual if !have_identity => UpstreamTransport::Refuse(REFUSE_NO_IDENTITY),
            TlsMode::IstioMutual if !meshed => UpstreamTransport::Refuse(REFUSE_NOT_MESHED),
            TlsMode::IstioMutual => UpstreamTransport::Hbone,
            TlsMode::Simple | TlsMode::Mutual => UpstreamTransport::Originate,
        }
    }
}

impl ClientTls {
    /// The mode and auto-mTLS flag ([`MeshTlsPolicy`]).
    pub fn mesh_policy(&self) -> MeshTlsPolicy {
        MeshTlsPolicy {
            mode: self.mode,
            auto_mtls: self.auto_mtls,
        }
    }

    /// [`MeshTlsPolicy::transport`] for this cluster.
    pub fn transport(
        &self,
        meshed: bool,
        have_identity: bool,
        enable_auto_mtls: bool,
    ) -> UpstreamTransport {
        self.mesh_policy()
            .transport(meshed, have_identity, enable_auto_mtls)
    }

    /// `true` for `SIMPLE` and `MUTUAL` (TLS origination).
    pub fn originates(&self) -> bool {
        matches!(self.mode, TlsMode::Simple | TlsMode::Mutual)
    }
}
