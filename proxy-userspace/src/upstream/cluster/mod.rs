//! Upstream clusters (Envoy `outbound|port|subset|host`): endpoints, load
//! balancer, circuit breaker, outlier detection and the connection pools.
//! A [`Cluster`] is what one snapshot's routes point at; its live state
//! (breaker, endpoints with their pools and outlier counters) comes from
//! the process-wide [`Registry`] and outlives the snapshot.
pub mod endpoint;
pub mod hash;
pub mod lb;
pub mod limits;
pub mod outlier;
pub mod registry;
pub mod set;

use std::sync::Arc;

pub use endpoint::{ActiveGuard, Endpoint};
pub use lb::{HashKey, LoadBalancer, PickContext, Simple};
pub use limits::{CircuitBreaker, Limits};
pub use outlier::OutlierDetection;
pub use registry::{Prepared, Registry};
pub use set::ClusterSet;

use crate::upstream::client::Clients;
pub use crate::upstream::client::PoolSettings;

/// Which HTTP version the proxy speaks to the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (service port protocol `http`).
    Http1,
    /// HTTP/2 prior knowledge (`http2`, `grpc`, `grpc-web`, or
    /// `h2UpgradePolicy: UPGRADE`).
    Http2,
    /// The client's protocol (ports with sniffed protocol, Envoy's
    /// `use_downstream_protocol_config`).
    Downstream,
}

/// Everything needed to build a [`Cluster`].
#[derive(Debug)]
pub struct ClusterSpec {
    /// Envoy cluster name, e.g. `outbound|9080|v1|reviews.default.svc.cluster.local`.
    pub name: String,
    /// Service host (FQDN).
    pub service: String,
    /// Service port.
    pub port: u16,
    /// Upstream HTTP version.
    pub protocol: UpstreamProtocol,
    /// Members (already filtered by subset labels).
    pub endpoints: Vec<Endpoint>,
    /// Load-balancer policy.
    pub lb: LbSpec,
    /// Circuit-breaker limits.
    pub limits: Limits,
    /// Pool settings.
    pub pool: PoolSettings,
    /// Outlier detection, when configured.
    pub outlier: Option<OutlierDetection>,
}

/// The load-balancer part of a [`ClusterSpec`].
#[derive(Clone, Debug)]
pub enum LbSpec {
    /// A simple policy.
    Simple(Simple),
    /// Ring hash with `minimumRingSize`.
    RingHash(HashKey, usize),
    /// Maglev with `tableSize`.
    Maglev(HashKey, usize),
}

/// A live cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Envoy cluster name.
    pub name: Arc<str>,
    /// Service host (FQDN).
    pub service: Arc<str>,
    /// Service port.
    pub port: u16,
    /// Upstream HTTP version.
    pub protocol: UpstreamProtocol,
    /// Members.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Load balancer and its state.
    pub lb: LoadBalancer,
    /// Circuit breaker and its counters.
    pub breaker: CircuitBreaker,
    /// Outlier detection.
    pub outlier: Option<OutlierDetection>,
    /// Pool settings.
    pub pool: PoolSettings,
    /// HTTP connection pools.
    pub(crate) clients: Clients,
}

impl Cluster {
    /// Builds a cluster with fresh state: hash tables, counters and (lazy)
    /// pools.
    pub fn new(spec: ClusterSpec) -> Self {
        Self::build(spec, None)
    }

    /// Builds a cluster that carries on `prev`'s live state (the registry's
    /// config swap): the same circuit breaker with `spec`'s limits, and
    /// `prev`'s endpoint for every address (and labels) both have, unless
    /// the pool settings changed (then every endpoint is new, as Envoy
    /// rebuilds a cluster whose settings changed).
    pub fn build(spec: ClusterSpec, prev: Option<&Cluster>) -> Self {
        let same_pools = prev.is_some_and(|p| p.pool == spec.pool);
        let live: std::collections::HashMap<std::net::SocketAddr, &Arc<Endpoint>> = match prev {
            Some(p) if same_pools => p.endpoints.iter().map(|e| (e.addr, e)).collect(),
            _ => Default::default(),
        };
        let endpoints: Vec<Arc<Endpoint>> = spec
            .endpoints
            .into_iter()
            .map(|e| match live.get(&e.addr) {
                Some(l) if l.labels == e.labels => Arc::clone(l),
                _ => Arc::new(e),
            })
            .collect();
        let breaker = match prev {
            Some(p) => {
                p.breaker.set_limits(spec.limits);
                p.breaker.clone()
            }
            None => CircuitBreaker::new(spec.limits),
        };
        let clients = match prev {
            Some(p) if same_pools => p.clients.clone(),
            _ => Clients::new(&spec.pool),
        };
        let lb = match spec.lb {
            LbSpec::Simple(s) => LoadBalancer::simple(s),
            LbSpec::RingHash(k, size) => {
                LoadBalancer::Hash(k, hash::HashTable::ring(&endpoints, size))
            }
            LbSpec::Maglev(k, size) => {
                LoadBalancer::Hash(k, hash::HashTable::maglev(&endpoints, size))
            }
        };
        Self {
            name: spec.name.into(),
            service: spec.service.into(),
            port: spec.port,
            protocol: spec.protocol,
            endpoints,
            lb,
            breaker,
            outlier: spec.outlier,
            pool: spec.pool,
            clients,
        }
    }

    /// Picks an endpoint; `None` = no healthy upstream (or PASSTHROUGH).
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<Arc<Endpoint>> {
        self.lb.pick(&self.endpoints, ctx)
    }

    /// Records a try's result for outlier detection.
    pub fn record(&self, ep: &Endpoint, result: outlier::TryResult) {
        if let Some(od) = &self.outlier {
            od.record(ep, result, &self.endpoints);
        }
    }
}

/// Envoy's `PassthroughCluster`: original destination, client's protocol.
pub fn passthrough_cluster() -> Cluster {
    Cluster::new(ClusterSpec {
        name: "PassthroughCluster".into(),
        service: "PassthroughCluster".into(),
        port: 0,
        protocol: UpstreamProtocol::Downstream,
        endpoints: Vec::new(),
        lb: LbSpec::Simple(Simple::Passthrough),
        limits: Default::default(),
        // Every request and connection on it is checked against its
        // destination workload's policies first
        // (`serve/http/authz.rs::check_passthrough_request`).
        pool: crate::upstream::client::PoolSettings {
            policy_checked: true,
            ..Default::default()
        },
        outlier: None,
    })
}
