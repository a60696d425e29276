//! `strait validate -f PATH...`: Istio's validation rules over files and
//! directories, like `istioctl validate`.
use std::path::PathBuf;
use std::process::ExitCode;

use strait_config::{load, validate, Level};

/// Loads and validates; prints every error (and warning) to stderr.
/// Exit 0 when all resources are valid, 1 otherwise.
pub fn run(paths: &[PathBuf]) -> ExitCode {
    let loaded = load::load_paths(paths);
    let mut findings: Vec<_> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.level != Level::Info)
        .cloned()
        .collect();
    findings.extend(validate::validate(&loaded.resources));
    let errors = findings.iter().filter(|d| d.is_error()).count();
    for d in &findings {
        eprintln!("{d}");
    }
    if errors == 0 {
        super::out(&format!(
            "validation succeeded: {} resources are valid",
            loaded.resources.len()
        ));
        ExitCode::SUCCESS
    } else {
        eprintln!("validation failed: {errors} error(s)");
        ExitCode::from(1)
    }
}
