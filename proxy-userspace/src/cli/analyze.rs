//! `strait analyze PATH...`: like `istioctl analyze` over local files.
use std::path::PathBuf;
use std::process::ExitCode;

use strait_config::{analyze, load};

/// `istioctl analyze` exits 79 when it finds issues at the failure
/// threshold (Error by default).
const ISSUES_FOUND: u8 = 79;

/// Prints every message (`Level [CODE] file:line Kind/ns/name field: text`).
pub fn run(paths: &[PathBuf]) -> ExitCode {
    let loaded = load::load_paths(paths);
    let mut all = loaded.diagnostics.clone();
    all.extend(analyze::analyze(&loaded.resources));
    if all.is_empty() {
        super::out(&format!(
            "✔ No validation issues found when analyzing {} resources.",
            loaded.resources.len()
        ));
        return ExitCode::SUCCESS;
    }
    for d in &all {
        super::out(&d.to_string());
    }
    if all.iter().any(|d| d.is_error()) {
        ExitCode::from(ISSUES_FOUND)
    } else {
        ExitCode::SUCCESS
    }
}
