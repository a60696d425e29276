//! Upstream clusters' live state, kept for the life of the process across
//! config swaps: the registry (`cluster::registry`), load balancers,
//! circuit breakers, outlier detection, connection pools (`pool`), the
//! PASSTHROUGH client and upstream errors (`client`), the guard against
//! connecting to the proxy itself (`self_guard`), and how a snapshot
//! cluster becomes a [`cluster::ClusterSpec`] (`compile`). Imports
//! `transport`, `runtime` and below only (ARCHITECTURE.md).
pub(crate) mod client;
pub mod cluster;
pub(crate) mod compile;
pub(crate) mod pool;
pub(crate) mod self_guard;

pub use cluster::{Cluster, Registry};
