//! Strait's mesh model: Istio and Kubernetes resources from YAML,
//! validation, analysis and compilation into a `MeshSnapshot`.
//! Pure functions: no sockets, no kernel.
pub mod snapshot;
