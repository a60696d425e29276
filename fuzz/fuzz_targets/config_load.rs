//! The config loader on arbitrary bytes as one `*.yaml` file: YAML →
//! resources → validation → snapshot compile. Hostile input must never
//! take the daemon down: no panic, no hang. The compile is also checked to
//! be deterministic (compiling the same resources twice gives the same
//! snapshot), which the daemon's "skip an unchanged config" relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = strait_config::load::load_str(text, "fuzz.yaml");
    let _ = strait_config::validate::validate(&loaded.resources);
    let (snap, _diags) = strait_config::compile(&loaded.resources);
    let (again, _) = strait_config::compile(&loaded.resources);
    assert!(snap == again, "compile is deterministic");
    let diff = strait_config::snapshot::diff(&snap, &again);
    assert!(diff.is_empty(), "no diff between equal snapshots: {diff:?}");
});
