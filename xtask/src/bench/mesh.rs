//! `cargo xtask bench mesh [--quick]` (issue 20): pod to pod across two
//! simulated nodes, through the `bench-mesh` harness (tests/src/bin): a
//! client pod on node A, a server pod on node B, oha in the client pod.
//! Rows: direct plain text; Strait L4 over HBONE; Strait L7 route + HBONE;
//! ztunnel to ztunnel when `ZTUNNEL_BIN` is set (same nodes, same CPUs).
//! Rounds interleave the rows; cells are medians over the rounds. Writes
//! only its own section of bench/results.md (between `<!-- mesh:begin -->`
//! and `<!-- mesh:end -->`).
//!
//! Targets, judged against ztunnel in the same run: Strait L4 HBONE ≥ 1.3×
//! ztunnel's requests/s at ≤ 0.7× its CPU per request; two hops add
//! ≤ 0.2 ms p99 at 1,000 requests/s; RSS ≤ 12 MB per node.
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::Value;

use super::stats::{num, Samples};
use crate::build_ebpf;
use crate::cmd::{root, sh, step};

const BEGIN: &str = "<!-- mesh:begin -->";
const END: &str = "<!-- mesh:end -->";
/// Heading of the section this suite owns in results.md.
const HEADING: &str = "## Mesh: pod to pod across two nodes (HBONE)";

/// Which scenarios, in table order, and their names in the table.
const SCENARIOS: &[(&str, &str)] = &[
    ("direct", "direct (plain text, no proxy)"),
    ("strait-l4-hbone", "Strait L4 over HBONE"),
    (
        "strait-l4-hbone+sockmap",
        "Strait L4 over HBONE, `--sockmap`",
    ),
    ("strait-l7-hbone", "Strait L7 route + HBONE"),
    (
        "strait-l7-hbone+sockmap",
        "Strait L7 route + HBONE, `--sockmap`",
    ),
    ("ztunnel", "ztunnel → ztunnel"),
];

/// 12 MB (the issue's RSS target) in MiB.
const RSS_TARGET_MIB: f64 = 12e6 / (1024.0 * 1024.0);

/// The figures of one scenario over the rounds.
#[derive(Default)]
struct Figures {
    rps: Samples,
    p50: Samples,
    p99: Samples,
    conns: Samples,
    cpu: Samples,
    /// Largest peak RSS of either node, per round.
    rss_peak: Samples,
    /// Largest current RSS of either node, per round.
    rss_now: Samples,
    /// Largest anonymous part of the current RSS (heap, stacks), per round.
    rss_anon: Samples,
    /// p99 minus direct's p99 in the same round.
    added_p99: Samples,
}

fn f(v: &Value, k: &str) -> Option<f64> {
    v[k].as_f64().filter(|x| x.is_finite())
}

fn max_of(v: &Value, k: &str) -> Option<f64> {
    v[k].as_array()?
        .iter()
        .filter_map(Value::as_f64)
        .filter(|x| x.is_finite())
        .max_by(f64::total_cmp)
}

/// Each scenario's figures, in table order.
type PerScenario = Vec<(&'static str, Figures)>;
/// (scenario, why it was not measured).
type Missing = Vec<(String, String)>;

/// Collects the harness's lines per scenario; the `missing` reasons apart.
fn collect(rows: &[Value]) -> (PerScenario, Missing) {
    let direct_p99 = |round: &Value| {
        rows.iter()
            .find(|r| r["scenario"] == "direct" && r["round"] == *round)
            .and_then(|r| f(r, "p99_us"))
    };
    let mut missing = Vec::new();
    let mut out = Vec::new();
    for (key, _) in SCENARIOS {
        let mut fig = Figures::default();
        for r in rows.iter().filter(|r| r["scenario"] == *key) {
            if let Some(why) = r["missing"].as_str() {
                missing.push((key.to_string(), why.to_string()));
                continue;
            }
            let push = |s: &mut Samples, v: Option<f64>| {
                if let Some(v) = v {
                    s.push(v)
                }
            };
            push(&mut fig.rps, f(r, "rps"));
            push(&mut fig.p50, f(r, "p50_us"));
            push(&mut fig.p99, f(r, "p99_us"));
            push(&mut fig.conns, f(r, "new_connections_per_s"));
            push(&mut fig.cpu, f(r, "cpu_s_per_1k"));
            push(&mut fig.rss_peak, max_of(r, "rss_peak_mib"));
            push(&mut fig.rss_now, max_of(r, "rss_mib"));
            push(&mut fig.rss_anon, max_of(r, "rss_anon_mib"));
            if *key != "direct" {
                if let (Some(p), Some(d)) = (f(r, "p99_us"), direct_p99(&r["round"])) {
                    fig.added_p99.push(p - d);
                }
            }
        }
        out.push((*key, fig));
    }
    (out, missing)
}

/// Per round, `key`'s figure over ztunnel's figure in the same round.
fn paired(rows: &[Value], key: &str, field: &str) -> Samples {
    let mut s = Samples::default();
    for r in rows.iter().filter(|r| r["scenario"] == key) {
        let z = rows
            .iter()
            .find(|z| z["scenario"] == "ztunnel" && z["round"] == r["round"])
            .and_then(|z| f(z, field));
        if let (Some(v), Some(z)) = (f(r, field), z) {
            if z != 0.0 {
                s.push(v / z);
            }
        }
    }
    s
}

fn signed(s: &Samples) -> String {
    let (Some(m), Some((lo, hi))) = (s.median(), s.range()) else {
        return "–".into();
    };
    format!("{m:+.0} ({lo:+.0} to {hi:+.0})")
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "not met",
        None => "not measured",
    }
}

/// The markdown tables (figures, then targets) for the harness's lines.
fn tables(rows: &[Value]) -> String {
    let (figs, missing) = collect(rows);
    let l4_vs_zt = paired(rows, "strait-l4-hbone", "rps");
    let l7_vs_zt = paired(rows, "strait-l7-hbone", "rps");
    let mut t = vec![
        "| path | requests/s at saturation (64 keep-alive conns) | ÷ ztunnel, same round | p50 / p99 µs at 1,000 req/s | added p99 vs direct, same round (µs) | new connections/s | proxy CPU s / 1,000 req (both nodes) | RSS per node, MiB: peak (now; anonymous) |".to_string(),
        "|---|---|---|---|---|---|---|---|".to_string(),
    ];
    for ((key, title), (_, fig)) in SCENARIOS.iter().zip(&figs) {
        if let Some((_, why)) = missing.iter().find(|(k, _)| k == key) {
            t.push(format!("| {title} | {why} | | | | | | |"));
            continue;
        }
        if fig.rps.0.is_empty() {
            if key.ends_with("+sockmap") {
                continue;
            }
            t.push(format!("| {title} | not measured | | | | | | |"));
            continue;
        }
        let ratio = match *key {
            "strait-l4-hbone" => l4_vs_zt.cell(2, None),
            "strait-l7-hbone" => l7_vs_zt.cell(2, None),
            _ => "–".into(),
        };
        let p = |s: &Samples| s.median().map_or("–".into(), |m| num(m, 0));
        let (cpu, rss) = if *key == "direct" {
            ("–".to_string(), "–".to_string())
        } else {
            (
                fig.cpu.cell(4, None),
                format!(
                    "{} ({}; {})",
                    fig.rss_peak.median().map_or("–".into(), |m| num(m, 1)),
                    fig.rss_now.median().map_or("–".into(), |m| num(m, 1)),
                    fig.rss_anon.median().map_or("–".into(), |m| num(m, 1))
                ),
            )
        };
        t.push(format!(
            "| {title} | {} | {ratio} | {} / {} | {} | {} | {cpu} | {rss} |",
            fig.rps.cell(0, None),
            p(&fig.p50),
            p(&fig.p99),
            if *key == "direct" {
                "–".into()
            } else {
                signed(&fig.added_p99)
            },
            fig.conns.cell(0, None),
        ));
    }
    let fig = |k: &str| figs.iter().find(|(key, _)| *key == k).map(|(_, f)| f);
    let l4 = fig("strait-l4-hbone");
    let cpu_vs_zt = paired(rows, "strait-l4-hbone", "cpu_s_per_1k");
    let l4_added = l4.and_then(|f| f.added_p99.median());
    let rss_max = ["strait-l4-hbone", "strait-l7-hbone"]
        .iter()
        .filter_map(|k| fig(k)?.rss_peak.range().map(|r| r.1))
        .max_by(f64::total_cmp);
    t.push(String::new());
    t.push("| target (issue 20) | measured | |".into());
    t.push("|---|---|---|".into());
    t.push(format!(
        "| Strait L4 HBONE requests/s ≥ 1.3× ztunnel's (same round) | ×{} | {} |",
        l4_vs_zt.cell(2, None),
        verdict(l4_vs_zt.median().map(|m| m >= 1.3))
    ));
    t.push(format!(
        "| Strait L4 HBONE CPU per request ≤ 0.7× ztunnel's (same round) | ×{} | {} |",
        cpu_vs_zt.cell(2, None),
        verdict(cpu_vs_zt.median().map(|m| m <= 0.7))
    ));
    // A loaded host's scheduling delays swamp a two-hop difference: judge
    // the latency target only when direct's own p99 is under 1 ms and
    // steady over the rounds (its largest at most twice its smallest), and
    // the added p99 is not negative (a baseline slower than two proxies
    // was disturbed, not fast).
    let direct_p99 = fig("direct").and_then(|f| f.p99.median());
    let direct_range = fig("direct").and_then(|f| f.p99.range());
    let latency_verdict = match (direct_p99, direct_range, l4_added) {
        (Some(d), _, _) if d > 1000.0 => format!(
            "not judged: direct's own p99 is {} µs (host scheduling delays dominate)",
            num(d, 0)
        ),
        (_, Some((lo, hi)), _) if hi > 2.0 * lo => format!(
            "not judged: direct's own p99 moved from {} to {} µs over the rounds (host scheduling delays dominate)",
            num(lo, 0),
            num(hi, 0)
        ),
        (_, _, Some(m)) if m < 0.0 => {
            "not judged: a negative added p99 (direct's baseline was disturbed)".to_string()
        }
        _ => verdict(l4_added.map(|m| m <= 200.0)).to_string(),
    };
    t.push(format!(
        "| two hops (Strait L4 HBONE) add ≤ 200 µs p99 at 1,000 req/s | {} µs | {latency_verdict} |",
        l4.map_or("–".into(), |f| signed(&f.added_p99)),
    ));
    t.push(format!(
        "| RSS ≤ 12 MB ({RSS_TARGET_MIB:.1} MiB) per node (largest peak of either Strait node, any round) | {} MiB | {} |",
        rss_max.map_or("–".into(), |m| num(m, 1)),
        verdict(rss_max.map(|m| m <= RSS_TARGET_MIB))
    ));
    t.push(String::new());
    t.push(per_request(rows));
    t.join("\n")
}

/// The fixed-rate run in detail: the latency tail, and what one request
/// costs the two proxies when nothing batches (CPU time and context
/// switches over all their threads, per request answered). On two
/// proxies and a backend sharing one CPU, every microsecond of that CPU
/// time and every switch is on some request's path: the figures to judge
/// the added p99 by on a busy host, where the p99 itself moves.
fn per_request(rows: &[Value]) -> String {
    let mut t = vec![
        "| path, at 1,000 req/s | p90 / p99 / p99.9 µs | proxy CPU µs per request (both nodes) | proxy context switches per request (both nodes) |".to_string(),
        "|---|---|---|---|".to_string(),
    ];
    for (key, title) in SCENARIOS {
        let mut s: [Samples; 5] = Default::default();
        for r in rows.iter().filter(|r| r["scenario"] == *key) {
            for (i, k) in [
                "p90_us",
                "p99_us",
                "p99_9_us",
                "fixed_cpu_us_per_req",
                "fixed_switches_per_req",
            ]
            .iter()
            .enumerate()
            {
                if let Some(v) = f(r, k) {
                    s[i].push(v);
                }
            }
        }
        if s[1].0.is_empty() {
            continue;
        }
        let m = |s: &Samples, d: usize| s.median().map_or("–".into(), |m| num(m, d));
        let cost = |s: &Samples, d: usize| {
            if s.0.is_empty() {
                "–".to_string()
            } else {
                s.cell(d, None)
            }
        };
        t.push(format!(
            "| {title} | {} / {} / {} | {} | {} |",
            m(&s[0], 0),
            m(&s[1], 0),
            m(&s[2], 0),
            cost(&s[3], 1),
            cost(&s[4], 2),
        ));
    }
    t.join("\n")
}

/// The directory of the CA both Strait nodes and ztunnel's FAKE_CA use
/// (ztunnel's test root, `../shared/hbone/ztunnel-test-ca/`).
fn test_ca() -> std::path::PathBuf {
    root().join("../shared/hbone/ztunnel-test-ca")
}

/// The daemon as shipped (`cargo xtask dist`: the `dist` profile, static
/// glibc, fixed load address; [`crate::dist`]); `why` goes into the step
/// line. Returns the binary's path. Also used by `cargo xtask
/// symbol-order`.
pub(crate) fn build_dist_strait(why: &str) -> anyhow::Result<std::path::PathBuf> {
    crate::dist::build(false, why)
}

/// `cargo build --release` of the `bench-mesh` harness and `bench-backend`.
pub(crate) fn build_harness() -> anyhow::Result<()> {
    step("release build of bench-mesh and bench-backend");
    sh(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "-p",
        "strait-tests",
        "--bin",
        "bench-mesh",
        "--bin",
        "bench-backend",
    ]))?;
    Ok(())
}

pub fn run(quick: bool) -> anyhow::Result<()> {
    super::install::ensure(true)?;
    build_ebpf::run(true)?;
    // The daemon is measured as shipped (the `dist` profile: its size is
    // most of the RSS); the harness and the backend as `release`.
    let strait = build_dist_strait("as shipped")?;
    build_harness()?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root().join("target"), std::path::PathBuf::from);
    let target = target_dir.join("release");
    let (secs, rounds) = if quick { (2, 3) } else { (10, 5) };
    // The p99 of a 2 s run rests on 20 samples: the fixed-rate run is
    // longer (6,000 / 20,000 requests per round).
    let latency_secs = if quick { 6 } else { 20 };
    let ztunnel = std::env::var_os("ZTUNNEL_BIN");
    let load_before = super::loadavg();
    let steal_before = super::cpu_times();
    step(&format!(
        "bench-mesh: {rounds} rounds, {secs} s per measurement{}",
        if ztunnel.is_some() {
            ", with ztunnel"
        } else {
            ", ZTUNNEL_BIN not set"
        }
    ));
    let mut cmd = Command::new(target.join("bench-mesh"));
    cmd.arg("--strait")
        .arg(&strait)
        .arg("--backend")
        .arg(target.join("bench-backend"))
        .arg("--ca")
        .arg(test_ca())
        .args(["--secs", &secs.to_string(), "--rounds", &rounds.to_string()])
        .args(["--latency-secs", &latency_secs.to_string()])
        // A/B of `strait run --sockmap` in the same rounds (rows
        // `… --sockmap`).
        .arg("--ab-sockmap");
    if let Some(z) = &ztunnel {
        cmd.arg("--ztunnel").arg(z);
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running bench-mesh")?;
    if !out.status.success() {
        bail!("bench-mesh failed (see above)");
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
        "{BEGIN}\n{HEADING}\n\n\
         `{}cargo xtask bench mesh{}` ({date}; {rounds} rounds, {secs} s per measurement, {latency_secs} s for the latency one; load average {load_before} at the start, {} at the end (1/5/15 min); \
         CPU steal over the run {}; a 2-core VM whose other load the load average shows, so absolute figures move: compare rows of the same run). \
         Two simulated nodes (network namespaces joined by a veth link), a client pod on node A running oha 1.16 (HTTP/1.1, one worker thread), \
         a server pod on node B running bench-backend (hyper, 20-byte body). Pinned: oha on CPU 0; both proxies and the backends on CPU 1 \
         (`strait run` then starts one proxy worker; ztunnel `ZTUNNEL_WORKER_THREADS=1`). Rows: direct is plain text between two pods outside the mesh; \
         Strait rows are `strait run` (the `dist` build that ships, `--no-access-log`, each node's embedded CA on ztunnel's test root) on both nodes, \
         L4 through a Service with a TCP port (no HTTP parsing), L7 through a Service with an HTTP port and a VirtualService (node A routes every request); \
         ztunnel rows are two ztunnels (dedicated mode in the client and server pods, `FAKE_CA`, local workload file, iptables REDIRECT of the client's \
         connections, warn-level logs). Each tunnelled row is checked to hold an HBONE connection (port 15008) in the server pod before it is measured. \
         Each round measures every row back to back, the first one rotating, after one unrecorded warm-up each; cells are the median (min–max) over the rounds. \
         `--sockmap` rows: the same Strait rows in the same round with both daemons restarted with `strait run --sockmap` (the same-node hops, client pod → node A's proxy and node B's proxy → server pod, moved socket to socket by `sk_msg`); \
         each round restarts the daemons for both halves, without the flag first in odd rounds and with it first in even ones; direct and ztunnel are measured in the half without it. \
         Saturation: 64 keep-alive connections; latency: 1,000 requests/s open loop with latency correction (16 connections), \
         with the proxies' CPU time and context switches over that run (`/proc/<pid>/task/*/schedstat` and `status`, all threads, both nodes) per request answered; \
         new connections/s: one request per connection, 16 at a time (the tunnels stay pooled: a new `CONNECT` stream, not a new TLS handshake, per connection, for both). \
         CPU: utime + stime of both proxies (`/proc/<pid>/stat`, all threads) over the saturation run, per 1,000 requests answered. \
         RSS: the larger of the two proxies' VmHWM (peak), VmRSS (at the end of the round) and RssAnon (its anonymous part: heap and stacks; \
         the rest of VmRSS is the executable's pages, file-backed and shared between the two daemons on this one machine).\n\n{}\n{END}",
        ztunnel
            .as_ref()
            .map_or(String::new(), |_| "ZTUNNEL_BIN=… ".to_string()),
        if quick { " --quick" } else { "" },
        super::loadavg(),
        super::steal_fraction(steal_before, super::cpu_times())
            .map_or("unknown".into(), |f| format!("{:.1}%", 100.0 * f)),
        tables(&rows),
    );
    let path = root().join("bench/results.md");
    let md = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, splice(&md, &section))
        .with_context(|| format!("writing {}", path.display()))?;
    println!("{section}");
    step(&format!("wrote the Mesh section of {}", path.display()));
    Ok(())
}

/// `md` with its Mesh section (from [`BEGIN`] to [`END`]) replaced by
/// `section`, or `section` appended.
fn splice(md: &str, section: &str) -> String {
    match (md.find(BEGIN), md.find(END)) {
        (Some(b), Some(e)) if e > b => format!("{}{section}{}", &md[..b], &md[e + END.len()..]),
        _ => format!("{}\n\n{section}\n", md.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mesh_section_is_replaced_or_appended_and_others_kept() {
        let s = format!("{BEGIN}\nnew\n{END}");
        let appended = splice("# B\n\n## L4\n\nx\n", &s);
        assert_eq!(appended, format!("# B\n\n## L4\n\nx\n\n{s}\n"));
        let replaced = splice(&format!("# B\n\n{BEGIN}\nold\n{END}\n\n## L7\n\ny\n"), &s);
        assert_eq!(replaced, format!("# B\n\n{s}\n\n## L7\n\ny\n"));
    }

    fn rows(lines: &[&str]) -> Vec<Value> {
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn cells_are_medians_added_p99_is_paired_with_direct_and_targets_are_judged_against_ztunnel() {
        let rows = rows(&[
            r#"{"scenario":"direct","round":0,"rps":20000,"p50_us":100,"p99_us":300,"new_connections_per_s":5000,"cpu_s_per_1k":null,"rss_peak_mib":[],"rss_mib":[]}"#,
            r#"{"scenario":"direct","round":1,"rps":22000,"p50_us":100,"p99_us":500,"new_connections_per_s":5000,"cpu_s_per_1k":null,"rss_peak_mib":[],"rss_mib":[]}"#,
            r#"{"scenario":"strait-l4-hbone","round":0,"rps":15000,"p50_us":150,"p99_us":420,"new_connections_per_s":4000,"cpu_s_per_1k":0.02,"rss_peak_mib":[9.5,8.0],"rss_mib":[7.0,6.0],"rss_anon_mib":[3.0,2.0]}"#,
            r#"{"scenario":"strait-l4-hbone","round":1,"rps":16000,"p50_us":150,"p99_us":640,"new_connections_per_s":4000,"cpu_s_per_1k":0.02,"rss_peak_mib":[9.5,13.0],"rss_mib":[7.0,6.0],"rss_anon_mib":[4.0,2.0]}"#,
            r#"{"scenario":"ztunnel","round":0,"rps":10000,"p50_us":150,"p99_us":600,"new_connections_per_s":3000,"cpu_s_per_1k":0.04,"rss_peak_mib":[15,15],"rss_mib":[14,14]}"#,
            r#"{"scenario":"ztunnel","round":1,"rps":16000,"p50_us":150,"p99_us":700,"new_connections_per_s":3000,"cpu_s_per_1k":0.04,"rss_peak_mib":[15,15],"rss_mib":[14,14]}"#,
            r#"{"scenario":"strait-l7-hbone","missing":"not available: why"}"#,
        ]);
        let t = tables(&rows);
        // Medians of two rounds; added p99 per round: +120 and +140.
        assert!(
            t.contains("| Strait L4 over HBONE | 15,500 (15,000–16,000) | 1.25 (1.00–1.50) | 150 / 530 | +130 (+120 to +140) | 4,000 (4,000–4,000) | 0.0200 (0.0200–0.0200) | 11.2 (7.0; 3.5) |"),
            "{t}"
        );
        assert!(t.contains("| direct (plain text, no proxy) | 21,000 (20,000–22,000) | – | 100 / 400 | – | 5,000 (5,000–5,000) | – | – |"), "{t}");
        assert!(
            t.contains("| Strait L7 route + HBONE | not available: why |"),
            "{t}"
        );
        assert!(
            t.contains("≥ 1.3× ztunnel's (same round) | ×1.25 (1.00–1.50) | not met |"),
            "{t}"
        );
        assert!(
            t.contains("≤ 0.7× ztunnel's (same round) | ×0.50 (0.50–0.50) | met |"),
            "{t}"
        );
        assert!(
            t.contains("add ≤ 200 µs p99 at 1,000 req/s | +130 (+120 to +140) µs | met |"),
            "{t}"
        );
        assert!(t.contains("| 13.0 MiB | not met |"), "{t}");
        // A noisy host: direct's p99 over 1 ms leaves the target unjudged.
        let noisy: Vec<Value> = rows
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if r["scenario"] == "direct" {
                    r["p99_us"] = serde_json::json!(3000);
                }
                r
            })
            .collect();
        assert!(
            tables(&noisy).contains(
                "| not judged: direct's own p99 is 3,000 µs (host scheduling delays dominate) |"
            ),
            "{}",
            tables(&noisy)
        );
        // One disturbed direct round: its p99 moves more than twice over.
        let unsteady: Vec<Value> = rows
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if r["scenario"] == "direct" && r["round"] == 1 {
                    r["p99_us"] = serde_json::json!(900);
                }
                r
            })
            .collect();
        assert!(
            tables(&unsteady).contains(
                "| not judged: direct's own p99 moved from 300 to 900 µs over the rounds (host scheduling delays dominate) |"
            ),
            "{}",
            tables(&unsteady)
        );
        // Steady but slower than the tunnel: not a pass.
        let slower: Vec<Value> = rows
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if r["scenario"] == "direct" {
                    r["p99_us"] = serde_json::json!(700);
                }
                r
            })
            .collect();
        assert!(
            tables(&slower)
                .contains("| not judged: a negative added p99 (direct's baseline was disturbed) |"),
            "{}",
            tables(&slower)
        );
    }

    #[test]
    fn the_fixed_rate_run_is_detailed_per_request_for_the_proxies() {
        let rows = rows(&[
            r#"{"scenario":"direct","round":0,"p90_us":140,"p99_us":200,"p99_9_us":900,"fixed_cpu_us_per_req":null,"fixed_switches_per_req":null}"#,
            r#"{"scenario":"strait-l4-hbone","round":0,"p90_us":280,"p99_us":450,"p99_9_us":1500,"fixed_cpu_us_per_req":140.0,"fixed_switches_per_req":3.7}"#,
            r#"{"scenario":"strait-l4-hbone","round":1,"p90_us":300,"p99_us":500,"p99_9_us":1700,"fixed_cpu_us_per_req":150.0,"fixed_switches_per_req":3.9}"#,
            r#"{"scenario":"ztunnel","missing":"not run: ZTUNNEL_BIN is not set"}"#,
        ]);
        let t = per_request(&rows);
        assert!(
            t.contains("| direct (plain text, no proxy) | 140 / 200 / 900 | – | – |"),
            "{t}"
        );
        assert!(
            t.contains("| Strait L4 over HBONE | 290 / 475 / 1,600 | 145.0 (140.0–150.0) | 3.80 (3.70–3.90) |"),
            "{t}"
        );
        // Scenarios without a fixed-rate run have no row.
        assert!(!t.contains("ztunnel"), "{t}");
        assert!(
            tables(&rows).contains(&t),
            "the per-request table follows the targets"
        );
    }

    #[test]
    fn without_ztunnel_the_relative_targets_are_not_measured() {
        let rows = rows(&[
            r#"{"scenario":"strait-l4-hbone","round":0,"rps":15000,"p50_us":150,"p99_us":420,"new_connections_per_s":4000,"cpu_s_per_1k":0.02,"rss_peak_mib":[9.5,8.0],"rss_mib":[7.0,6.0]}"#,
            r#"{"scenario":"ztunnel","missing":"not run: ZTUNNEL_BIN is not set"}"#,
        ]);
        let t = tables(&rows);
        assert!(
            t.contains("| ztunnel → ztunnel | not run: ZTUNNEL_BIN is not set |"),
            "{t}"
        );
        assert!(
            t.contains("≥ 1.3× ztunnel's (same round) | ×n/a | not measured |"),
            "{t}"
        );
        assert!(t.contains("| 9.5 MiB | met |"), "{t}");
        // No `--sockmap` lines: no such rows.
        assert!(!t.contains("--sockmap"), "{t}");
    }

    #[test]
    fn sockmap_rows_are_paired_with_direct_of_their_round() {
        let rows = rows(&[
            r#"{"scenario":"direct","round":0,"rps":20000,"p50_us":100,"p99_us":300,"new_connections_per_s":5000,"cpu_s_per_1k":null,"rss_peak_mib":[],"rss_mib":[]}"#,
            r#"{"scenario":"strait-l4-hbone","round":0,"rps":15000,"p50_us":150,"p99_us":420,"new_connections_per_s":4000,"cpu_s_per_1k":0.02,"rss_peak_mib":[9.5,8.0],"rss_mib":[7.0,6.0],"fixed_cpu_us_per_req":90,"fixed_switches_per_req":4.3}"#,
            r#"{"scenario":"strait-l4-hbone+sockmap","round":0,"rps":17000,"p50_us":140,"p99_us":380,"new_connections_per_s":4100,"cpu_s_per_1k":0.018,"rss_peak_mib":[9.5,8.0],"rss_mib":[7.0,6.0],"fixed_cpu_us_per_req":70,"fixed_switches_per_req":4.1}"#,
        ]);
        let t = tables(&rows);
        assert!(
            t.contains("| Strait L4 over HBONE, `--sockmap` | 17,000 | – | 140 / 380 | +80 (+80 to +80) | 4,100 | 0.0180 |"),
            "{t}"
        );
        assert!(
            t.contains("| Strait L4 over HBONE, `--sockmap` | – / 380 / – | 70.0 | 4.10 |"),
            "{t}"
        );
        // The L7 `--sockmap` row was not run: not listed.
        assert!(!t.contains("Strait L7 route + HBONE, `--sockmap`"), "{t}");
    }
}
