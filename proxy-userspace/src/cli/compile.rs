//! `strait config compile PATH... [-o json|yaml]`: print the MeshSnapshot.
use std::path::PathBuf;
use std::process::ExitCode;

use strait_config::{compile, load, Level};

use crate::Format;

/// Prints the snapshot to stdout and every error/warning to stderr. Invalid
/// resources are left out of the snapshot; exit 1 when there were any.
pub fn run(paths: &[PathBuf], format: Format) -> ExitCode {
    let loaded = load::load_paths(paths);
    let (snap, diags) = compile(&loaded.resources);
    let mut failed = false;
    for d in loaded.diagnostics.iter().chain(&diags) {
        if d.level != Level::Info {
            eprintln!("{d}");
        }
        failed |= d.is_error();
    }
    let text = match format {
        Format::Json => snap.to_json(),
        Format::Yaml => snap.to_yaml(),
    };
    super::out(text.trim_end());
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
