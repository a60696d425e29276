//! The compiled mesh: what the daemon and the kernel maps consume.
//!
//! Nothing downstream of this module re-parses YAML. Every collection is a
//! `BTreeMap` or a sorted `Vec`, so the same input always gives the same
//! snapshot (and the same JSON). Durations are milliseconds, percentages
//! `0.0..=100.0`.
pub mod cluster;
pub mod diff;
pub mod gateway;
pub mod l4;
pub mod policy;
pub mod route;
pub mod sidecar;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use cluster::{
    cluster_name, ClientTls, Cluster, ConnectionPool, ConsistentHash, Endpoint, HashAlgorithm,
    HashKey, LoadBalancer, OutlierDetection, SimpleLb, TlsMode, UpstreamTransport,
    REFUSE_NOT_MESHED, REFUSE_NO_IDENTITY,
};
pub use diff::{diff, Changes, SnapshotDiff};
pub use gateway::{Gateway, GatewayServer, ServerTls, VirtualHost};
pub use l4::{ExternalL4Service, L4Backend, L4LoadBalancer, L4Mode, L4Protocol, L4Service};
pub use policy::{
    AuthzAction, AuthzPolicy, AuthzRule, InboundWorkload, JwtRule, MtlsMode, PeerAuthn, PeerMtls,
    Policies, RequestAuthn, Selector, TargetRef, WorkloadPolicies,
};
pub use route::{
    AbortStatus, CorsPolicy, DirectResponse, Fault, FaultAbort, FaultDelay, HeaderMatch, HeaderOps,
    Headers, HttpMatch, HttpRoute, HttpRouteDestination, L4Match, Mirror, Redirect, RegexRewrite,
    Retries, Rewrite, Routes, StringMatch, TcpRoute, TlsRoute, WeightedCluster,
};
pub use sidecar::{EgressListener, SidecarScope};

/// Application protocol of a port, chosen as Istio does: UDP ports are UDP;
/// else `appProtocol` if set (Kubernetes' `kubernetes.io/h2c` → HTTP2,
/// `kubernetes.io/ws`/`wss` → HTTP/HTTPS); else the port name up to the first
/// `-` (`http-web` → HTTP, `grpc-web` → GRPC); anything else is
/// [`Protocol::Unknown`], for which the proxy sniffs the protocol.
/// ServiceEntry and Gateway ports give `protocol` explicitly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// HTTP/1.1 (or HTTP/2 upgraded by the client).
    #[serde(rename = "HTTP")]
    Http,
    /// HTTP/2 prior knowledge (h2c).
    #[serde(rename = "HTTP2")]
    Http2,
    /// HTTPS: TLS that the mesh does not terminate.
    #[serde(rename = "HTTPS")]
    Https,
    /// gRPC (HTTP/2).
    #[serde(rename = "GRPC")]
    Grpc,
    /// gRPC-Web (HTTP/1.1).
    #[serde(rename = "GRPC-WEB")]
    GrpcWeb,
    /// Opaque TCP.
    #[serde(rename = "TCP")]
    Tcp,
    /// TLS, routed by SNI.
    #[serde(rename = "TLS")]
    Tls,
    /// MongoDB (treated as TCP).
    #[serde(rename = "MONGO")]
    Mongo,
    /// Redis (treated as TCP).
    #[serde(rename = "REDIS")]
    Redis,
    /// MySQL (treated as TCP).
    #[serde(rename = "MYSQL")]
    Mysql,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// Not declared: detect (sniff) on the connection.
    #[serde(rename = "UNKNOWN")]
    Unknown,
}

impl Protocol {
    /// Istio's `protocol.Parse`: case-insensitive protocol names.
    pub fn parse(s: &str) -> Protocol {
        match s.to_ascii_lowercase().as_str() {
            "http" | "http1" => Protocol::Http,
            "http2" | "h2c" => Protocol::Http2,
            "https" => Protocol::Https,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "tcp" => Protocol::Tcp,
            "tls" => Protocol::Tls,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            "udp" => Protocol::Udp,
            _ => Protocol::Unknown,
        }
    }

    /// Protocol of a Kubernetes Service port (see the type's docs).
    pub fn from_service_port(name: &str, transport: &str, app_protocol: Option<&str>) -> Protocol {
        if transport.eq_ignore_ascii_case("UDP") {
            return Protocol::Udp;
        }
        if let Some(ap) = app_protocol {
            return match ap {
                "kubernetes.io/h2c" => Protocol::Http2,
                "kubernetes.io/ws" => Protocol::Http,
                "kubernetes.io/wss" => Protocol::Https,
                other => Protocol::parse(other),
            };
        }
        let lower = name.to_ascii_lowercase();
        let prefix = lower.split('-').next().unwrap_or("");
        Protocol::parse(prefix)
    }

    /// HTTP-family: routed with `http` rules.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
        )
    }

    /// Transport of the port.
    pub fn l4(self) -> L4Protocol {
        if self == Protocol::Udp {
            L4Protocol::Udp
        } else {
            L4Protocol::Tcp
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok();
        let s = s.as_ref().and_then(|v| v.as_str()).unwrap_or("UNKNOWN");
        f.write_str(s)
    }
}

/// Where a service comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceSource {
    /// A Kubernetes Service.
    Kubernetes,
    /// An Istio ServiceEntry inside the mesh (`MESH_INTERNAL`).
    ServiceEntryInternal,
    /// An Istio ServiceEntry outside the mesh (`MESH_EXTERNAL`, the default).
    ServiceEntryExternal,
}

/// One port of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// Port name (may be empty on single-port Kubernetes services).
    pub name: String,
    /// Service port.
    pub port: u16,
    /// Target port number when numeric (None: named target port, resolved
    /// per endpoint; or same as `port`).
    pub target_port: Option<u16>,
    /// Application protocol.
    pub protocol: Protocol,
}

/// A service: a Kubernetes Service or one host of a ServiceEntry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// FQDN, e.g. `reviews.default.svc.cluster.local` (ServiceEntry: its host).
    pub host: String,
    /// Resource name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// ClusterIP / ServiceEntry address; None for headless or address-less.
    /// A dual-stack Service's primary (`spec.clusterIP`, its first family).
    pub vip: Option<IpAddr>,
    /// A dual-stack Service's other ClusterIP (`spec.clusterIPs[1]`, the
    /// other family); a ServiceEntry's further `addresses`. Each is a VIP
    /// like `vip`, with the same ports and endpoints (the kernel balances
    /// a VIP over the endpoints of its own family). Empty for single-stack.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_vips: Vec<IpAddr>,
    /// Ports, sorted by number.
    pub ports: Vec<ServicePort>,
    /// Service labels.
    pub labels: BTreeMap<String, String>,
    /// Pod selector (Kubernetes) or workloadSelector (ServiceEntry).
    pub selector: BTreeMap<String, String>,
    /// Origin.
    pub source: ServiceSource,
    /// ServiceEntry `resolution` (`NONE`, `STATIC`, `DNS`, `DNS_ROUND_ROBIN`);
    /// Kubernetes services are `STATIC`-like (`CLIENT_SIDE_LB`).
    pub resolution: String,
    /// Namespaces that see it (`*`: all; from `exportTo` or the
    /// `networking.istio.io/exportTo` annotation).
    pub export_to: Vec<String>,
}

impl Service {
    /// Every VIP of the service: [`Self::vip`], then [`Self::extra_vips`].
    pub fn vips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.vip.into_iter().chain(self.extra_vips.iter().copied())
    }

    /// The port with this number.
    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }

    /// `true` when a workload in `namespace` may see the service.
    pub fn visible_from(&self, namespace: &str) -> bool {
        self.export_to
            .iter()
            .any(|e| e == "*" || e == namespace || (e == "." && namespace == self.namespace))
    }
}

/// A meshed workload instance (a Pod or a WorkloadEntry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// Pod / WorkloadEntry name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Address.
    pub ip: IpAddr,
    /// Labels; shared with the workload's cluster [`Endpoint`]s.
    pub labels: Arc<BTreeMap<String, String>>,
    /// Service account (`default` when the pod names none).
    pub service_account: String,
    /// `region/zone/subzone`, empty if unknown.
    pub locality: String,
    /// Node name, if known.
    pub node: Option<String>,
    /// Hosts of the services that select it, sorted.
    pub services: Vec<String>,
}

/// Everything the data plane needs, compiled from the resources.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MeshSnapshot {
    /// Host → service.
    pub services: BTreeMap<String, Service>,
    /// Envoy cluster name (`outbound|port|subset|host`) → cluster.
    pub clusters: BTreeMap<String, Cluster>,
    /// Host → port → routes for mesh (sidecar/waypoint) traffic. Every port of
    /// every service has an entry (a default route when no VirtualService).
    pub routes: BTreeMap<String, BTreeMap<u16, Routes>>,
    /// `namespace/name` → gateway.
    pub gateways: BTreeMap<String, Gateway>,
    /// Security policies.
    pub policies: Policies,
    /// Pod / WorkloadEntry IP → workload.
    pub workloads: BTreeMap<IpAddr, Workload>,
    /// VIP → hosts having that address (sorted).
    pub vips: BTreeMap<IpAddr, Vec<String>>,
    /// Kernel service table, sorted by (vip, port, protocol).
    pub l4: Vec<L4Service>,
    /// External VIPs for the uplink XDP balancer, sorted by (vip, port,
    /// protocol).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external: Vec<ExternalL4Service>,
    /// `namespace/name` → Sidecar egress scope.
    #[serde(default)]
    pub sidecars: BTreeMap<String, SidecarScope>,
    /// Istio's MeshConfig (defaults when none was given).
    #[serde(default)]
    pub mesh: crate::mesh::MeshConfig,
    /// Workload IP → why it gets no traffic: a security resource selecting it
    /// that Strait cannot enforce yet ([`crate::enforced`], fail closed). Its
    /// endpoints are left out of every cluster and kernel backend set, so
    /// requests to its services get 503 `UH` and connections are refused.
    /// The one place enforcement work lifts (see `compile/deny.rs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deny: BTreeMap<IpAddr, String>,
    /// `namespace/name` → the TLS material of a Secret (`kubernetes.io/tls`
    /// or generic with `tls.crt`/`tls.key`/`ca.crt` or `cert`/`key`/
    /// `cacert`), for `credentialName`. Never serialized (no key material in
    /// `strait config compile` or `/config_dump`); see
    /// [`MeshSnapshot::credential`].
    #[serde(skip)]
    pub credentials: BTreeMap<String, Arc<crate::api::secret::TlsSecret>>,
    /// Workload IP → how the destination node treats new connections to
    /// it: the PeerAuthentication mode per target port and whether an
    /// AuthorizationPolicy or RequestAuthentication applies. Only
    /// workloads with something else than `PERMISSIVE` without policy are
    /// listed (the rest are left alone). The daemon writes it to the
    /// in-pod `sk_lookup` program's mode map (`datapath/inpod.rs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inbound: BTreeMap<IpAddr, InboundWorkload>,
}

impl MeshSnapshot {
    /// The TLS Secret `credentialName` names, looked up as Istio does: in
    /// `namespace` (the namespace of the resource that names it).
    pub fn credential(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<&Arc<crate::api::secret::TlsSecret>> {
        self.credentials.get(&format!("{namespace}/{name}"))
    }

    /// Pretty JSON (what `strait config compile -o json` prints).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("snapshot serializes to JSON")
    }

    /// YAML (what `strait config compile -o yaml` prints).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("snapshot serializes to YAML")
    }

    /// The service and port behind an original destination `vip:port`.
    pub fn service_by_vip(&self, vip: IpAddr, port: u16) -> Option<(&Service, &ServicePort)> {
        self.vips.get(&vip)?.iter().find_map(|h| {
            let s = self.services.get(h)?;
            Some((s, s.port(port)?))
        })
    }

    /// Routes of `host:port`.
    pub fn routes_for(&self, host: &str, port: u16) -> Option<&Routes> {
        self.routes.get(host)?.get(&port)
    }

    /// Routes for an original destination `vip:port`, with the service.
    pub fn routes_by_vip(&self, vip: IpAddr, port: u16) -> Option<(&Service, &Routes)> {
        let (svc, p) = self.service_by_vip(vip, port)?;
        Some((svc, self.routes_for(&svc.host, p.port)?))
    }

    /// A cluster by Envoy name.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.get(name)
    }

    /// The workload with this IP.
    pub fn workload(&self, ip: IpAddr) -> Option<&Workload> {
        self.workloads.get(&ip)
    }

    /// `true` when a workload in `namespace` with `labels` may reach
    /// `host:port` by name: the service is exported to the namespace
    /// (`exportTo`) and the applicable Sidecar (if any) lists it.
    pub fn visible(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        host: &str,
        port: u16,
    ) -> bool {
        let Some(svc) = self.services.get(host) else {
            return false;
        };
        svc.visible_from(namespace)
            && sidecar::scope_for(&self.sidecars, namespace, labels)
                .is_none_or(|s| s.allows(svc, port))
    }

    /// The kernel entry for `vip:port/proto`.
    pub fn l4_service(&self, vip: IpAddr, port: u16, proto: L4Protocol) -> Option<&L4Service> {
        self.l4
            .binary_search_by(|s| (s.vip, s.port, s.protocol).cmp(&(vip, port, proto)))
            .ok()
            .map(|i| &self.l4[i])
    }
}
