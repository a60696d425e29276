//! `cargo xtask bench xdp`: packets per second per core of Strait's XDP
//! programs through `BPF_PROG_TEST_RUN` (the `bench-xdp` binary), beside
//! an `XDP_DROP`-only and an `XDP_TX`-only program as floors. Writes the
//! "XDP" section of bench/results.md, leaving the other sections as they
//! are.
//!
//! Targets (issue 19): LB ≥ 10 Mpps per core, deny ≥ 20 Mpps per core,
//! judged for IPv4 and IPv6 apart (each family has its deny, LB and
//! decapsulation rows).
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::build_ebpf;
use crate::cmd::{root, sh, step};

/// Heading of the section this suite owns in results.md.
const HEADING: &str = "## XDP: packets per second per core (BPF_PROG_TEST_RUN)";
/// Markers around the section (the heading alone is also recognised, for
/// files written before them).
const BEGIN: &str = "<!-- xdp:begin -->";
const END: &str = "<!-- xdp:end -->";

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    (!v.is_empty()).then(|| v[v.len() / 2])
}

fn nums(row: &Value, key: &str) -> Vec<f64> {
    row[key]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

pub fn run(quick: bool) -> anyhow::Result<()> {
    build_ebpf::run(true)?;
    step("debug build of bench-xdp (the timing is the kernel's)");
    sh(Command::new("cargo").current_dir(root()).args([
        "build",
        "-p",
        "strait-tests",
        "--bin",
        "bench-xdp",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root().join("target"), std::path::PathBuf::from);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (repeat, runs) = if quick {
        (1_000_000, 3)
    } else {
        (10_000_000, 5)
    };
    step(&format!("bench-xdp: repeat {repeat}, {runs} runs per case"));
    let mut cmd = Command::new(target.join("debug/bench-xdp"));
    cmd.args(["--repeat", &repeat.to_string(), "--runs", &runs.to_string()]);
    if cores >= 2 {
        cmd.args(["--cpu", "1"]);
    }
    let out = cmd.output().context("running bench-xdp")?;
    if !out.status.success() {
        bail!("bench-xdp failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("parsing bench-xdp output")?;
    let find = |program: &str| {
        rows.iter()
            .find(|r| r["program"] == program)
            .with_context(|| format!("no {program} row"))
    };
    let drop_repeat = median(&nums(find("xdp_drop")?, "repeat_ns")).context("floor")?;
    let drop_single = median(&nums(find("xdp_drop")?, "single_ns")).context("floor")?;
    let mut table = vec![
        "| Case | Verdict | ns/packet, repeat | over the floor (repeat) | ns/packet, single runs | over the floor (single) | Mpps per core |".to_string(),
        "|---|---|---|---|---|---|---|".to_string(),
    ];
    // Per-packet figures of the target rows, for the verdict lines: index
    // 0 IPv4, 1 IPv6.
    let mut deny_ns = [f64::NAN; 2];
    let mut lb_ns = [f64::NAN; 2];
    // The family's first "flow cache miss" row (reported beside the
    // verdict, not judged).
    let mut lb_miss_ns = [f64::NAN; 2];
    for r in &rows {
        let repeat_ns = median(&nums(r, "repeat_ns"));
        let single_ns = median(&nums(r, "single_ns")).unwrap_or(f64::NAN);
        // The balancer's repeat figure is taken on `xdp_lb_bench` (the
        // balancer, then its tunnel header taken off again): an upper
        // bound of its time per packet.
        let bound = r["timed_with"].as_str().is_some_and(|t| t != r["program"]);
        let per_packet = repeat_ns.unwrap_or(f64::NAN);
        let family = usize::from(r["family"] == 6);
        // The family's first deny row (a source in one of the prefixes).
        if r["program"] == "xdp_deny" && deny_ns[family].is_nan() {
            deny_ns[family] = per_packet;
        }
        // The family's first established-flow row, a flow cache hit (the
        // 4in6 row after it is reported, not judged).
        let case = r["case"].as_str().unwrap_or_default();
        if r["program"] == "xdp_lb" && r["verdict"] == 3 && case.contains("established") {
            if case.contains("flow cache miss") {
                if lb_miss_ns[family].is_nan() {
                    lb_miss_ns[family] = per_packet;
                }
            } else if lb_ns[family].is_nan() {
                lb_ns[family] = per_packet;
            }
        }
        let verdict = match r["verdict"].as_u64() {
            Some(1) => "DROP",
            Some(2) => "PASS",
            Some(3) => "TX",
            _ => "?",
        };
        table.push(format!(
            "| {} (`{}`) | {verdict} | {}{} | {:.0}{} | {single_ns:.0} | {:.0} | {:.1}{} |",
            r["case"].as_str().unwrap_or("?"),
            r["program"].as_str().unwrap_or("?"),
            repeat_ns.map_or("–".into(), |n| format!("{n:.0}")),
            if bound {
                format!(" (≤, `{}`)", r["timed_with"].as_str().unwrap_or("?"))
            } else {
                String::new()
            },
            per_packet - drop_repeat,
            if bound { " (≤)" } else { "" },
            single_ns - drop_single,
            1000.0 / per_packet,
            if bound { " (≥)" } else { "" },
        ));
    }
    let date = crate::cmd::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .unwrap_or_default()
        .trim()
        .to_string();
    let section = format!(
        "{HEADING}\n\n\
         `cargo xtask bench xdp{}` ({date}; {runs} runs per case, medians; pinned to CPU {}; load average {}). \
         64-byte-class TCP frames (IPv6: 80 bytes); 100 nodes behind each VIP; 1,000 /24 deny prefixes in four /16s (IPv4 DIR-16-8 table: the /16's entry, then its `DENY_V4_DIR24` slot, two array loads and no hash lookup; the LB's and the decapsulation's deny checks are misses: one array load) and 1,000 IPv6 /48 prefixes plus one /128 inside the first, in `DENY_V6_BUCKETS` (per hashed /48: the longest prefix in a slot compared in place, other lengths one `DENY_V6_LEN` hash lookup each; the first IPv6 deny row is a slot hit, the second a slot miss and one lookup; the LB's and the decapsulation's IPv6 deny checks are misses: three empty buckets). The target is judged on each family's first deny row. \
         *repeat*: one `BPF_PROG_TEST_RUN` with repeat {repeat}, the kernel's mean per repetition — exact for programs that leave the frame as it is. \
         *single runs*: the mean of repeat-1 calls on a fresh frame (colder caches, timer overhead included: compare with the floors). \
         The load balancer prepends the tunnel header (IPIP: 20 bytes; ip6ip6: 40) to the frame it is given, so a repetition would see the previous one's output: its repeat figure is taken on `xdp_lb_bench`, the same program followed by the removal of that header (three loads, three stores and one `bpf_xdp_adjust_head`, a decapsulation's rewrite without its checks), so every repetition balances the same client packet (checked on the counters: all tunnelled, none decapsulated, no new flow for the established one). That is an upper bound of a balanced packet's time (≤), hence a lower bound of its Mpps (≥). \
         An established flow is balanced from this CPU's flow cache slot (`XLB_FLOW_CACHE`, `XLB_FLOW_CACHE6`: a direct-mapped per-CPU array in front of the connection table, no hash-map helper call); the *flow cache miss* rows are timed on `xdp_lb_bench_miss`, which also clears that slot after each repetition, so each one takes the connection table (`XLB_CONNS`, `XLB_FLOWS6`: one hash lookup) as a flow whose slot another flow took does. \
         *over the floor (repeat)*: the row's time per packet minus the `XDP_DROP` floor's, what the program itself costs beside the test harness's per-repetition overhead. \
         Targets: LB ≥ 10 Mpps, deny ≥ 20 Mpps per core.\n\n{}\n\n\
         {}\n",
        if quick { " --quick" } else { "" },
        if cores >= 2 { "1" } else { "any" },
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
        table.join("\n"),
        ["IPv4", "IPv6"]
            .iter()
            .enumerate()
            .map(|(i, family)| verdicts(family, deny_ns[i], lb_ns[i], lb_miss_ns[i]))
            .collect::<Vec<_>>()
            .join(" "),
    );
    let section = format!("{BEGIN}\n{section}{END}\n");
    let path = root().join("bench/results.md");
    let md = std::fs::read_to_string(&path).unwrap_or_default();
    let new = splice(&md, &section);
    std::fs::write(&path, new).with_context(|| format!("writing {}", path.display()))?;
    println!("{section}");
    step(&format!("wrote the XDP section of {}", path.display()));
    Ok(())
}

/// The verdict sentence of one address family: its deny and established-
/// flow LB rows (ns per packet; the flow cache hit judged, the miss
/// reported beside it) against the targets.
fn verdicts(family: &str, deny_ns: f64, lb_ns: f64, lb_miss_ns: f64) -> String {
    let (deny, lb, miss) = (1000.0 / deny_ns, 1000.0 / lb_ns, 1000.0 / lb_miss_ns);
    format!(
        "{family} deny: {deny:.1} Mpps per core, target ≥ 20: {}. \
         {family} LB, established flow: ≥ {lb:.1} Mpps per core (lower bound), target ≥ 10: {} \
         (a flow whose cache slot another flow took: ≥ {miss:.1} Mpps).",
        if deny >= 20.0 { "met" } else { "not met" },
        if lb >= 10.0 {
            "met"
        } else {
            "not met (by the bound)"
        },
    )
}

/// `md` with its XDP section (between [`BEGIN`] and [`END`], else from
/// [`HEADING`] to the next `## `) replaced by `section`, or `section`
/// appended.
fn splice(md: &str, section: &str) -> String {
    if let (Some(b), Some(e)) = (md.find(BEGIN), md.find(END)) {
        if b < e {
            let after = e + END.len();
            let after = after + usize::from(md[after..].starts_with('\n'));
            return format!("{}{section}{}", &md[..b], &md[after..]);
        }
    }
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
    fn each_family_is_judged_against_the_targets() {
        let v6 = verdicts("IPv6", 45.0, 95.0, 125.0);
        assert!(
            v6.starts_with("IPv6 deny: 22.2 Mpps per core, target ≥ 20: met.")
                && v6.ends_with(
                    "LB, established flow: ≥ 10.5 Mpps per core (lower bound), target ≥ 10: met \
                     (a flow whose cache slot another flow took: ≥ 8.0 Mpps)."
                ),
            "{v6}"
        );
        let v4 = verdicts("IPv4", 55.0, 120.0, 130.0);
        assert!(
            v4.contains("18.2 Mpps per core, target ≥ 20: not met."),
            "{v4}"
        );
        assert!(
            v4.contains("≥ 8.3 Mpps per core (lower bound), target ≥ 10: not met (by the bound) ("),
            "{v4}"
        );
    }

    #[test]
    fn the_xdp_section_is_replaced_or_appended_and_others_kept() {
        let s = format!("{HEADING}\n\nnew\n");
        let appended = splice("# B\n\n## L4\n\nx\n", &s);
        assert_eq!(appended, format!("# B\n\n## L4\n\nx\n\n{s}"));
        let replaced = splice(&format!("# B\n\n{HEADING}\n\nold\n\n## L7\n\ny\n"), &s);
        assert_eq!(replaced, format!("# B\n\n{s}## L7\n\ny\n"));
        assert_eq!(splice(&appended, &s), appended);
        // With markers: only what lies between them is replaced.
        let marked = format!("{BEGIN}\n{HEADING}\n\nnew\n{END}\n");
        let md = format!("# B\n\n{BEGIN}\n{HEADING}\n\nold\n{END}\n<!-- policy:begin -->\n## P\n");
        assert_eq!(
            splice(&md, &marked),
            format!("# B\n\n{marked}<!-- policy:begin -->\n## P\n")
        );
    }
}
