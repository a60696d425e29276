//! `cargo xtask bench mesh [--quick]` (issue 20): pod to pod across two
//! simulated nodes, through the `bench-mesh` harness (tests/src/bin): a
//! client pod on node A, a server pod on node B, oha in the client pod.
//! Scenarios: direct plain text; Strait L7 route (node A's daemon routes,
//! plain text between the nodes); Strait L4 (kernel load balancing); Strait L4 and L7 over HBONE (measured
//! when node B's daemon reports mTLS connections, else "not available");
//! ztunnel to ztunnel when `ZTUNNEL_BIN` is set (not in the harness yet).
//! Writes the "Mesh" section of bench/results.md, leaving the other
//! sections as they are.
//!
//! Targets, judged against ztunnel in the same run: Strait L4 HBONE ≥ 1.3×
//! ztunnel's requests/s at ≤ 0.7× its CPU per request; two hops add
//! ≤ 0.2 ms p99 at 1,000 requests/s; RSS ≤ 12 MB per node.
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::build_ebpf;
use crate::cmd::{root, sh, step};

/// Heading of the section this suite owns in results.md.
const HEADING: &str = "## Mesh: pod to pod across two nodes";

/// Which scenarios, in table order, and their names in the table.
const SCENARIOS: &[(&str, &str)] = &[
    ("direct", "direct (plain text, no proxy)"),
    ("strait-l7", "Strait L7 route, plain text between nodes"),
    ("strait-l4", "Strait L4 (kernel load balancing, plain text)"),
    ("strait-l4-hbone", "Strait L4 over HBONE"),
    ("strait-l7-hbone", "Strait L7 route + HBONE"),
    ("ztunnel", "ztunnel → ztunnel"),
];

fn num(v: &Value, k: &str) -> Option<f64> {
    v[k].as_f64()
}

fn cell(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or("–".into(), |x| format!("{x:.digits$}"))
}

/// The markdown table for the harness's JSON lines.
fn table(rows: &[Value]) -> String {
    let direct_p99 = rows
        .iter()
        .find(|r| r["scenario"] == "direct")
        .and_then(|r| num(r, "p99_us"));
    let mut t = vec![
        "| Scenario | requests/s (saturation, 64 conns) | p50 / p99 at 1,000 req/s (µs) | added p99 vs direct (µs) | new connections/s | proxy CPU s per 1,000 requests (both nodes) | RSS per node (MiB) |".to_string(),
        "|---|---|---|---|---|---|---|".to_string(),
    ];
    for (key, title) in SCENARIOS {
        let Some(r) = rows.iter().find(|r| r["scenario"] == *key) else {
            t.push(format!("| {title} | not measured | | | | | |"));
            continue;
        };
        if let Some(why) = r["missing"].as_str() {
            t.push(format!("| {title} | {why} | | | | | |"));
            continue;
        }
        let p99 = num(r, "p99_us");
        let added = match (p99, direct_p99) {
            (Some(p), Some(d)) if *key != "direct" => format!("{:+.0}", p - d),
            _ => "–".into(),
        };
        let rss: Vec<String> = r["rss_mib"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .map(|m| format!("{m:.1}"))
            .collect();
        t.push(format!(
            "| {title} | {} | {} / {} | {added} | {} | {} | {} |",
            cell(num(r, "rps"), 0),
            cell(num(r, "p50_us"), 0),
            cell(p99, 0),
            cell(num(r, "new_connections_per_s"), 0),
            cell(num(r, "cpu_s_per_1k"), 4),
            if rss.is_empty() {
                "–".to_string()
            } else {
                rss.join(" / ")
            },
        ));
    }
    t.join("\n")
}

pub fn run(quick: bool) -> anyhow::Result<()> {
    super::install::ensure(true)?;
    build_ebpf::run(true)?;
    step("release build of strait, bench-mesh and bench-backend");
    sh(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "-p",
        "strait",
        "--bin",
        "strait",
        "-p",
        "strait-tests",
        "--bin",
        "bench-mesh",
        "--bin",
        "bench-backend",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root().join("target"), std::path::PathBuf::from)
        .join("release");
    let secs = if quick { 2 } else { 10 };
    step(&format!("bench-mesh: {secs} s per measurement"));
    let mut cmd = Command::new(target.join("bench-mesh"));
    cmd.arg("--strait")
        .arg(target.join("strait"))
        .arg("--backend")
        .arg(target.join("bench-backend"))
        .args(["--secs", &secs.to_string()]);
    if let Some(z) = std::env::var_os("ZTUNNEL_BIN") {
        cmd.arg("--ztunnel").arg(z);
    }
    let out = cmd.output().context("running bench-mesh")?;
    if !out.status.success() {
        bail!(
            "bench-mesh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("parsing bench-mesh output")?;
    let date = crate::cmd::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .unwrap_or_default()
        .trim()
        .to_string();
    let section = format!(
        "{HEADING}\n\n\
         `cargo xtask bench mesh{}` ({date}; {secs} s per measurement, one run; load average {}). \
         Two simulated nodes (network namespaces joined by a veth link), a client pod on node A running oha (HTTP/1.1), \
         a server pod on node B running bench-backend; `strait run` (release build) on both nodes for the Strait rows. \
         Saturation: 64 keep-alive connections; latency: 1,000 requests/s open loop with latency correction; \
         new connections/s: one request per connection, 16 at a time. CPU: utime + stime of both daemons over the saturation run. \
         RSS: each daemon's peak (VmHWM). Nothing is pinned: client, daemons and backend share the machine's CPUs. \
         Targets (issue 20), judged against ztunnel in the same run: Strait L4 HBONE ≥ 1.3× ztunnel's requests/s at ≤ 0.7× its CPU per request; \
         two hops add ≤ 0.2 ms p99 at 1,000 requests/s; RSS ≤ 12 MB per node.\n\n{}\n",
        if quick { " --quick" } else { "" },
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
        table(&rows),
    );
    let path = root().join("bench/results.md");
    let md = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, splice(&md, &section))
        .with_context(|| format!("writing {}", path.display()))?;
    println!("{section}");
    step(&format!("wrote the Mesh section of {}", path.display()));
    Ok(())
}

/// `md` with its Mesh section (from [`HEADING`] to the next `## `)
/// replaced by `section`, or `section` appended.
fn splice(md: &str, section: &str) -> String {
    match md.find(HEADING) {
        Some(start) => {
            let after = &md[start + HEADING.len()..];
            let end = after
                .find("\n## ")
                .map_or(md.len(), |i| start + HEADING.len() + i + 1);
            format!("{}{section}{}", &md[..start], &md[end..])
        }
        None => format!(
            "{}\n{section}",
            md.trim_end_matches('\n').to_string() + "\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mesh_section_is_replaced_or_appended_and_others_kept() {
        let s = format!("{HEADING}\n\nnew\n");
        let appended = splice("# B\n\n## L4\n\nx\n", &s);
        assert_eq!(appended, format!("# B\n\n## L4\n\nx\n\n{s}"));
        let replaced = splice(&format!("# B\n\n{HEADING}\n\nold\n\n## L7\n\ny\n"), &s);
        assert_eq!(replaced, format!("# B\n\n{s}## L7\n\ny\n"));
    }

    #[test]
    fn missing_scenarios_say_why_and_added_p99_is_against_direct() {
        let rows: Vec<Value> = [
            r#"{"scenario":"direct","rps":20000,"p50_us":100,"p99_us":300,"new_connections_per_s":5000,"cpu_s_per_1k":null,"rss_mib":[]}"#,
            r#"{"scenario":"strait-l7","rps":15000,"p50_us":150,"p99_us":420,"new_connections_per_s":4000,"cpu_s_per_1k":0.03,"rss_mib":[9.5,8.0]}"#,
            r#"{"scenario":"strait-l4-hbone","missing":"not available: no HBONE"}"#,
        ]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
        let t = table(&rows);
        assert!(
            t.contains("| direct (plain text, no proxy) | 20000 | 100 / 300 | – | 5000 | – | – |"),
            "{t}"
        );
        assert!(
            t.contains("| 15000 | 150 / 420 | +120 | 4000 | 0.0300 | 9.5 / 8.0 |"),
            "{t}"
        );
        assert!(
            t.contains("| Strait L4 over HBONE | not available: no HBONE |"),
            "{t}"
        );
        assert!(t.contains("| ztunnel → ztunnel | not measured |"), "{t}");
    }
}
