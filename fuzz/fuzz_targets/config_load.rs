//! The config loader on arbitrary bytes as one `*.yaml` file: YAML →
//! resources → validation → snapshot compile → the proxy's runtime table.
//! Hostile input must never take the daemon down: no panic, no hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = strait_config::load::load_str(text, "fuzz.yaml");
    let _ = strait_config::validate::validate(&loaded.resources);
    let (snap, _diags) = strait_config::compile(&loaded.resources);
    let _ = strait::runtime::compile::compile(&snap);
});
