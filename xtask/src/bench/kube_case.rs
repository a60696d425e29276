//! `cargo xtask bench kube [--quick]`: the Kubernetes source at scale
//! (issue 18): 10,000 Services and 100,000 endpoints (10,000 EndpointSlices
//! of 10) in 100 meshed Namespaces, listed by the daemon's real source
//! (kube-runtime watchers, every object loaded and validated) from a fake
//! API server on loopback in the same process, then compiled. The workload
//! is the strait crate's `kube_bench` example. Writes only its own section
//! of bench/results.md (between `<!-- kube:begin -->` and
//! `<!-- kube:end -->`).
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::Value;

use super::stats::Samples;
use crate::cmd::step;

const BEGIN: &str = "<!-- kube:begin -->";
const END: &str = "<!-- kube:end -->";

/// Runs the case (`--quick`: one run, else three) and updates
/// bench/results.md.
pub fn run(quick: bool) -> anyhow::Result<()> {
    step("kube: building the kube_bench example (release)");
    let exe = super::install::release_example("strait", "kube_bench")?;
    let runs = if quick { 1 } else { 3 };
    let mut results: Vec<Value> = Vec::new();
    for i in 0..runs {
        step(&format!("kube: run {} of {runs}", i + 1));
        let out = Command::new(&exe).output().context("running kube_bench")?;
        if !out.status.success() {
            bail!(
                "kube_bench failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        results.push(serde_json::from_slice(&out.stdout).context("kube_bench output")?);
    }
    let cell = |field: &str, digits: usize| {
        Samples(results.iter().filter_map(|r| r[field].as_f64()).collect()).cell(digits, None)
    };
    let first = &results[0];
    let md = [
        BEGIN.to_string(),
        "## Kubernetes source: initial sync at 10,000 Services".into(),
        String::new(),
        format!(
            "`cargo xtask bench kube{}` ({} UTC, {} run{}): `cargo run --release -p strait --example kube_bench`. \
             A fake API server in the same process serves {} objects ({} Services, {} endpoints in EndpointSlices of 10, 100 meshed Namespaces; list pages of 500 as kube-runtime asks, {} list requests; the watches then stay quiet). \
             The daemon's Kubernetes source (`strait::sources::kube::start`, one kube-runtime watcher per watched kind, every object loaded and validated as a file's) lists everything; then the first snapshot is compiled as the daemon's first reload does. \
             \"initial sync\" is from starting the source to every kind listed (what `/ready` waits for); peak RSS is the whole process's (VmHWM), the fake server's generated objects and pre-rendered list pages included (an upper bound for the daemon's source + snapshot). The daemon's allocator (mimalloc). Unpinned; other work on this shared 2-core VM moves the absolute times.",
            if quick { " --quick" } else { "" },
            super::report::utc_minute(),
            runs,
            if runs == 1 { "" } else { "s, median (min–max)" },
            first["objects"],
            first["services"],
            first["endpoints"],
            first["list_requests"],
        ),
        String::new(),
        "| figure | value |".into(),
        "|---|---|".into(),
        format!("| initial sync (list + load + validate), ms | {} |", cell("sync_ms", 0)),
        format!("| first compile (→ MeshSnapshot + enrollment), ms | {} |", cell("compile_ms", 0)),
        format!("| sync + compile, ms | {} |", cell("total_ms", 0)),
        format!("| peak RSS of the process, MB | {} |", cell("peak_rss_mb", 1)),
        END.to_string(),
    ];
    let text = md.join("\n");
    let path = super::report::write_marked(BEGIN, END, &text)?;
    step(&format!("kube: wrote its section of {}", path.display()));
    println!("{text}");
    Ok(())
}
