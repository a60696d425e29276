//! The runtime routing table: everything the proxy needs per request
//! about services and routes, built once per snapshot. Routes name their
//! clusters by [`ClusterId`]; the live clusters those ids stand for belong
//! to `upstream` and are paired with this table by `serve::Table`, which
//! is swapped in atomically (`ArcSwap`). A request holds an `Arc` to the
//! table it started with, so in-flight requests finish on their routes
//! while new ones see the new snapshot.
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub use super::ids::{ClusterId, ClusterIds};
use super::route::RouteTable;
pub use super::route::SourceWorkload;

/// Protocol of a service port, as the config crate selected it from the
/// port name / `appProtocol` (Istio's rules; see `compile::port_protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortProtocol {
    /// HTTP/1.1 (the client may still speak HTTP/2: hyper serves both).
    Http,
    /// HTTP/2.
    Http2,
    /// gRPC (HTTP/2).
    Grpc,
    /// Opaque TCP (`tcp`, `mongo`, `mysql`, `redis`, ...).
    Tcp,
    /// TLS: routed by SNI (`tls`, `https`).
    Tls,
    /// Not declared: sniff the first bytes.
    Unknown,
}

/// One service port the proxy handles.
#[derive(Debug)]
pub struct ServicePort {
    /// FQDN, e.g. `reviews.default.svc.cluster.local`.
    pub host: Arc<str>,
    /// Service port.
    pub port: u16,
    /// Declared protocol.
    pub protocol: PortProtocol,
    /// Routes (VirtualService rules, or the default route).
    pub routes: RouteTable,
}

/// The whole runtime table.
#[derive(Debug, Default)]
pub struct Table {
    /// Service VIP:port (and headless pod IP:port) → its routes.
    pub services: HashMap<SocketAddr, Arc<ServicePort>>,
    /// Every cluster of the snapshot, by name and id (routes hold ids).
    pub clusters: ClusterIds,
    /// Pod IP → the workload (`sourceLabels` / `sourceNamespace` matching).
    /// A persistent map: an incremental compile shares every entry it did
    /// not change with the previous table (issue 21: 100,000 workloads
    /// are not copied for one endpoint change).
    pub workloads: Workloads,
    /// MeshConfig `outboundTrafficPolicy.mode: REGISTRY_ONLY`: destinations
    /// the mesh does not know go to Envoy's `BlackHoleCluster` instead (HTTP:
    /// 502 from Istio's block-all route; TCP: the connection is closed).
    pub registry_only: bool,
    /// What building this table built anew (the rest is shared with the
    /// table it was built from).
    pub built: Built,
}

/// Pod IP → workload, shared between tables (see [`Table::workloads`]).
pub type Workloads = imbl::HashMap<IpAddr, Arc<SourceWorkload>>;

/// What one runtime-table build built anew (see [`Table::built`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Built {
    /// Service ports whose route table was compiled.
    pub route_tables: usize,
    /// Workloads whose entry was (re)built.
    pub workloads: usize,
}

/// Envoy's name for the cluster of blocked destinations.
pub const BLACK_HOLE_CLUSTER: &str = "BlackHoleCluster";

impl Table {
    /// The service port a connection to `dst` is for.
    pub fn service(&self, dst: SocketAddr) -> Option<&Arc<ServicePort>> {
        self.services.get(&dst)
    }
}
