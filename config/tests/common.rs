//! Helpers shared by the integration tests.
#![allow(dead_code)]
use std::path::PathBuf;

/// `../shared/istio` next to the repository, or None (test skips with a
/// printed reason; fails when `STRAIT_NO_SKIP` is set).
pub fn istio_dir(test: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/istio");
    if dir.is_dir() {
        return Some(dir);
    }
    let msg = format!("{test}: Istio samples not found at {}", dir.display());
    if std::env::var_os("STRAIT_NO_SKIP").is_some() {
        panic!("{msg} (STRAIT_NO_SKIP is set)");
    }
    eprintln!("skipping {msg}");
    None
}
