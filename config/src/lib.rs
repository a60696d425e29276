//! Strait's mesh model: Istio and Kubernetes resources from YAML,
//! validation, analysis and compilation into a [`MeshSnapshot`].
//! Pure functions: no sockets, no kernel.
//!
//! ```text
//! load::load_paths / load::load_str  →  Vec<Resource> (+ parse and Istio
//!                                        CRD-schema diagnostics, `schema`;
//!                                        MeshConfig from mesh.yaml or the
//!                                        istio ConfigMap, `mesh`)
//! validate::validate                 →  Istio's validation errors
//! analyze::analyze                   →  IST0xxx messages, STR0001 for what
//!                                        is accepted but not enforced (`enforced`)
//! compile::compile                   →  MeshSnapshot (+ diagnostics)
//! snapshot::diff                         →  what changed between two snapshots
//! ```
pub mod analyze;
pub mod api;
pub mod compile;
pub mod diag;
pub mod duration;
pub mod enforced;
pub mod enroll;
pub mod hosts;
pub mod load;
pub mod mesh;
pub mod schema;
pub mod snapshot;
pub mod validate;

pub use api::{Object, Origin, Resource};
pub use compile::{compile, compile_with, CompileOptions};
pub use diag::{Diagnostic, Level};
pub use snapshot::{diff, MeshSnapshot, SnapshotDiff};
