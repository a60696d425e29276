//! `cargo xtask bench policy [--quick]`: the CPU Strait's policy check adds
//! to one request (issue 17): 0, 10 and 1,000 AuthorizationPolicies on the
//! destination workload, and one RequestAuthentication verifying Istio's
//! RS256 sample token with a cached key. The workload is the `policy_bench`
//! example of the strait crate (in-process: the check the request path
//! calls, no network), pinned to one CPU. Writes only its own section of
//! bench/results.md (between `<!-- policy:begin -->` and
//! `<!-- policy:end -->`), leaving the other suites' figures alone.
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::cmd::{root, step};

const BEGIN: &str = "<!-- policy:begin -->";
const END: &str = "<!-- policy:end -->";

/// Targets: 1,000 policies ≤ 5 µs over none; JWT ≤ 20 µs.
const TARGET_1000_NS: f64 = 5_000.0;
const TARGET_JWT_NS: f64 = 20_000.0;

fn jwt_dir() -> anyhow::Result<PathBuf> {
    for up in ["../shared/istio/jwt", "../../shared/istio/jwt"] {
        let d = root().join(up);
        if d.join("jwks.json").is_file() {
            return Ok(d);
        }
    }
    bail!("Istio's JWT samples (../shared/istio/jwt/) not found beside the repository")
}

/// Runs the case and updates bench/results.md.
pub fn run(quick: bool) -> anyhow::Result<()> {
    step("policy: building the policy_bench example (release)");
    let exe = super::install::release_example("strait", "policy_bench")?;
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1"]).arg(&exe).arg(jwt_dir()?);
    if quick {
        cmd.arg("--quick");
    }
    step("policy: measuring");
    let out = cmd.output().context("running policy_bench")?;
    if !out.status.success() {
        bail!(
            "policy_bench failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("policy_bench output")?;
    let cases = v["cases"].as_array().context("cases")?;
    let ns = |name: &str| {
        cases
            .iter()
            .find(|c| c["name"].as_str().is_some_and(|n| n.starts_with(name)))
            .and_then(|c| c["ns_per_request"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let base = ns("0 policies");
    let mut md = vec![
        BEGIN.to_string(),
        "## Policy: CPU per request of the policy check".into(),
        String::new(),
        format!(
            "`cargo xtask bench policy{}` ({} UTC): `strait::policy::enforce` as the request path calls it, in process (no network), pinned to CPU 1, {} runs of {} requests (fewer for 1,000 policies), median of the thread's CPU time per request (`CLOCK_THREAD_CPUTIME_ID`: time other processes of a loaded machine take is not counted). \
             Policies select the destination workload: one DENY per ten, the rest ALLOW, each with methods, its own path prefix and a `request.headers[x-tenant]` condition; the request matches only the last ALLOW. \
             The index (lists of 16+ policies, keyed by exact and `prefix*` paths, else by exact `request.headers[...]` values) evaluates only the policies that can match; the \"no path to index\" case has 1,000 ALLOW policies with only a `request.headers[x-tenant]` condition (one exact value each), narrowed by the header index. \
             JWT: one RequestAuthentication, Istio's `demo.jwt` (RS256, 2048-bit key), the same token on every request: after the first request it is a hit of the verified-token cache (Envoy's jwt_cache; `exp`/`nbf` still checked per request). A token not in the cache costs a signature verification, measured at 25.5 µs before the cache (2026-12-05 05:19 UTC). \
             \"requests/s\" is what one core could check per second at that cost, not an end-to-end proxy rate; end-to-end requests/s through the proxy with policies is not measured yet (the L7 suite measures the no-policy path, where the check is one pointer test).",
            if quick { " --quick" } else { "" },
            super::report::utc_minute(),
            v["runs"],
            v["iters"],
        ),
        String::new(),
        "| case | CPU ns per request | added over 0 policies | checks/s per core | target |".into(),
        "|---|---|---|---|---|".into(),
    ];
    for c in cases {
        let name = c["name"].as_str().unwrap_or("?");
        let n = c["ns_per_request"].as_f64().unwrap_or(f64::NAN);
        let added = n - base;
        let target = if name == "1000 policies" {
            format!(
                "≤ 5 µs: {}",
                if added <= TARGET_1000_NS {
                    "met"
                } else {
                    "NOT met"
                }
            )
        } else if name.contains("RequestAuthentication") {
            format!(
                "≤ 20 µs: {}",
                if added <= TARGET_JWT_NS {
                    "met"
                } else {
                    "NOT met"
                }
            )
        } else {
            "-".into()
        };
        md.push(format!(
            "| {name} | {n:.0} | {:.2} µs | {:.0} | {target} |",
            added / 1000.0,
            c["requests_per_s"].as_f64().unwrap_or(0.0)
        ));
    }
    md.push(END.to_string());
    let text = md.join("\n");
    let path = super::report::write_marked(BEGIN, END, &text)?;
    step(&format!("policy: wrote its section of {}", path.display()));
    println!("{text}");
    Ok(())
}
