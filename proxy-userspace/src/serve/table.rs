//! What a request or connection reads, swapped as one on every config
//! change: the runtime routes (`runtime`), the live clusters their ids
//! stand for (`upstream`) and the node's security policies (`policy`).
//! The functions here are the one place a snapshot becomes all three.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use strait_config::snapshot as snap;

use crate::policy::PolicyTable;
use crate::runtime::compile::{self as runtime_compile, CompileError};
use crate::runtime::table::{ClusterId, ServicePort};
use crate::upstream::cluster::{Cluster, ClusterSet, Prepared, Registry};
use crate::upstream::compile as upstream_compile;

/// The proxy's table in service.
#[derive(Debug, Default)]
pub struct Table {
    /// Service ports, routes, workloads, cluster names and ids.
    pub routes: crate::runtime::Table,
    /// The live clusters the routes' ids stand for.
    pub clusters: ClusterSet,
    /// Security policies of this node's workloads (`None`: none apply,
    /// and requests pay one pointer check).
    pub policy: Option<Arc<PolicyTable>>,
}

impl Table {
    /// The service port a connection to `dst` is for.
    pub fn service(&self, dst: SocketAddr) -> Option<&Arc<ServicePort>> {
        self.routes.service(dst)
    }

    /// The live cluster a route's `id` stands for.
    #[inline]
    pub fn cluster(&self, id: ClusterId) -> Option<&Arc<Cluster>> {
        self.clusters.get(id)
    }

    /// The live cluster named `name` (Envoy cluster name).
    pub fn cluster_named(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(self.routes.clusters.get(name)?)
    }

    /// Every cluster with its name, in name order (admin `/clusters`).
    pub fn clusters_by_name(&self) -> Vec<(&Arc<str>, &Arc<Cluster>)> {
        let mut all: Vec<_> = self
            .routes
            .clusters
            .iter()
            .filter_map(|(id, name)| Some((name, self.clusters.get(id)?)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all
    }

    /// MeshConfig `outboundTrafficPolicy.mode: REGISTRY_ONLY`.
    pub fn registry_only(&self) -> bool {
        self.routes.registry_only
    }
}

/// What a proxy's table swaps built anew, summed over its life (see
/// [`crate::serve::Proxy::rebuild_counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RebuildCounts {
    /// Service ports whose route table was compiled.
    pub route_tables: u64,
    /// Workload entries of the runtime table built.
    pub workloads: u64,
    /// Live clusters rebuilt (changed or added).
    pub clusters: u64,
    /// Policy tables built (`PolicyTable::build` calls).
    pub policy_tables: u64,
}

/// The counters behind [`RebuildCounts`].
#[derive(Debug, Default)]
pub struct RebuildCounters {
    route_tables: AtomicU64,
    workloads: AtomicU64,
    clusters: AtomicU64,
    /// Incremented by each policy table build.
    pub policy_tables: AtomicU64,
}

impl RebuildCounters {
    /// Adds one table build: what the runtime compile built, and how
    /// many clusters were rebuilt.
    pub fn count(&self, built: &crate::runtime::table::Built, clusters: usize) {
        self.route_tables
            .fetch_add(built.route_tables as u64, Ordering::Relaxed);
        self.workloads
            .fetch_add(built.workloads as u64, Ordering::Relaxed);
        self.clusters.fetch_add(clusters as u64, Ordering::Relaxed);
    }

    /// The sums so far.
    pub fn get(&self) -> RebuildCounts {
        RebuildCounts {
            route_tables: self.route_tables.load(Ordering::Relaxed),
            workloads: self.workloads.load(Ordering::Relaxed),
            clusters: self.clusters.load(Ordering::Relaxed),
            policy_tables: self.policy_tables.load(Ordering::Relaxed),
        }
    }
}

/// Compiles the whole table with fresh upstream state (tests, fuzzing);
/// a running proxy uses [`compile_with`].
///
/// Errors: what [`compile_with`] returns.
pub fn compile(s: &snap::MeshSnapshot) -> Result<Table, CompileError> {
    let registry = Registry::new();
    let (table, prepared) = compile_with(s, &registry)?;
    registry.commit(&prepared);
    Ok(table)
}

/// Compiles the table against the live upstream state of `registry`
/// (policies are left to the caller). The caller commits the returned
/// [`Prepared`] once the table is in service; on error nothing changed.
///
/// Errors: a route or cluster the runtime cannot build (names the route or
/// cluster and the field).
pub fn compile_with(
    s: &snap::MeshSnapshot,
    registry: &Registry,
) -> Result<(Table, Prepared), CompileError> {
    let prepared = upstream_compile::prepare(s, registry)?;
    let routes = runtime_compile::compile(s)?;
    let clusters = ClusterSet::new(&routes.clusters, &prepared.clusters, registry.passthrough());
    let table = Table {
        routes,
        clusters,
        policy: None,
    };
    Ok((table, prepared))
}

/// Compiles the table for `new` from the table in service (`current`,
/// built from the snapshot `diff` was computed against): only the clusters
/// `diff` names are resolved against `registry` (`upstream::compile::
/// prepare_diff`) and only the service ports that need it get new routes
/// ([`runtime_compile::compile_incremental`]).
/// Policies are carried over (the caller rebuilds them when they changed).
/// Same contract as [`compile_with`].
pub fn compile_incremental(
    new: &snap::MeshSnapshot,
    diff: &snap::SnapshotDiff,
    current: &Table,
    registry: &Registry,
) -> Result<(Table, Prepared), CompileError> {
    let prepared = upstream_compile::prepare_diff(new, diff, registry)?;
    let routes = runtime_compile::compile_incremental(new, diff, &current.routes)?;
    let mut clusters = current.clusters.clone();
    let removed = diff
        .clusters
        .removed
        .iter()
        .filter_map(|name| current.routes.clusters.get(name));
    clusters.patch(&routes.clusters, removed, &prepared.clusters);
    let table = Table {
        routes,
        clusters,
        policy: current.policy.clone(),
    };
    Ok((table, prepared))
}

#[cfg(test)]
mod tests;
