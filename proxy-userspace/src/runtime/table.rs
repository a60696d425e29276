//! The runtime routing table: everything the proxy needs per request
//! about services and routes, built once per snapshot. Routes name their
//! clusters by [`ClusterId`]; the live clusters those ids stand for belong
//! to `upstream` and are paired with this table by `serve::Table`, which
//! is swapped in atomically (`ArcSwap`). A request holds an `Arc` to the
//! table it started with, so in-flight requests finish on their routes
//! while new ones see the new snapshot.
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::route::RouteTable;

/// A cluster as routes name it: an index into the table's cluster list
/// ([`ClusterIds`]), resolved per request to the live cluster by an array
/// lookup. Stable across incremental compiles for as long as the cluster
/// exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(u32);

impl ClusterId {
    /// The index into a per-id array (`upstream::cluster::ClusterSet`).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The clusters of a table: Envoy cluster name ↔ [`ClusterId`]. An id
/// stays with its name while the name is in the snapshot; the id of a
/// removed cluster may be given to a cluster added later (so the id space
/// stays as large as the most clusters ever present at once).
#[derive(Clone, Debug, Default)]
pub struct ClusterIds {
    names: Vec<Option<Arc<str>>>,
    ids: HashMap<Arc<str>, ClusterId>,
    free: Vec<ClusterId>,
}

impl ClusterIds {
    /// The id of cluster `name`, if the table has it.
    pub fn get(&self, name: &str) -> Option<ClusterId> {
        self.ids.get(name).copied()
    }

    /// The name of cluster `id`, if the table has it.
    pub fn name(&self, id: ClusterId) -> Option<&Arc<str>> {
        self.names.get(id.index())?.as_ref()
    }

    /// Every cluster, by id order.
    pub fn iter(&self) -> impl Iterator<Item = (ClusterId, &Arc<str>)> {
        self.names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((ClusterId(i as u32), n.as_ref()?)))
    }

    /// How many clusters.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// One past the largest id in use: the length a per-id array needs.
    pub fn slots(&self) -> usize {
        self.names.len()
    }

    /// The id of `name`, given a new one (a freed id first) when the
    /// table does not have it yet; `true` when the id is new.
    pub(crate) fn insert(&mut self, name: &str) -> (ClusterId, bool) {
        if let Some(id) = self.get(name) {
            return (id, false);
        }
        let name: Arc<str> = name.into();
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id.index()] = Some(name.clone());
                id
            }
            None => {
                let n = u32::try_from(self.names.len()).expect("fewer than 2^32 clusters");
                self.names.push(Some(name.clone()));
                ClusterId(n)
            }
        };
        self.ids.insert(name, id);
        (id, true)
    }

    /// Removes `name`; its id may be reused by a later [`Self::insert`].
    pub(crate) fn remove(&mut self, name: &str) -> Option<ClusterId> {
        let id = self.ids.remove(name)?;
        self.names[id.index()] = None;
        self.free.push(id);
        Some(id)
    }
}

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

/// What routes may match about the client workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceWorkload {
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Namespace.
    pub namespace: String,
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
    pub workloads: HashMap<IpAddr, Arc<SourceWorkload>>,
    /// MeshConfig `outboundTrafficPolicy.mode: REGISTRY_ONLY`: destinations
    /// the mesh does not know go to Envoy's `BlackHoleCluster` instead (HTTP:
    /// 502 from Istio's block-all route; TCP: the connection is closed).
    pub registry_only: bool,
}

/// Envoy's name for the cluster of blocked destinations.
pub const BLACK_HOLE_CLUSTER: &str = "BlackHoleCluster";

impl Table {
    /// The service port a connection to `dst` is for.
    pub fn service(&self, dst: SocketAddr) -> Option<&Arc<ServicePort>> {
        self.services.get(&dst)
    }
}
