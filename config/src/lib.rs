//! Strait's mesh model: Istio and Kubernetes resources from YAML,
//! validation, analysis and compilation into a [`MeshSnapshot`].
//! Pure functions: no sockets, no kernel.
//!
//! ```text
//! load::load_paths / load::load_str  →  Vec<Resource> (+ parse diagnostics)
//! validate::validate                 →  Istio's validation errors
//! analyze::analyze                   →  IST0xxx messages
//! compile::compile                   →  MeshSnapshot (+ diagnostics)
//! snapshot::diff                         →  what changed between two snapshots
//! ```
pub mod analyze;
pub mod api;
pub mod compile;
pub mod diag;
pub mod duration;
pub mod enforced;
pub mod hosts;
pub mod load;
pub mod mesh;
pub mod schema;
pub mod snapshot;
pub mod validate;

pub use api::{Object, Origin, Resource};
pub use compile::compile;
pub use diag::{Diagnostic, Level};
pub use snapshot::{diff, MeshSnapshot, SnapshotDiff};
