//! `bench-mesh`: the harness of `cargo xtask bench mesh` (issue 20). Two
//! simulated nodes joined by a link ([`strait_tests::node::link`]), a
//! client pod on node A, a server pod on node B running `bench-backend`,
//! and oha in the client pod (HTTP/1.1).
//!
//! Scenarios, all in the same two nodes at once:
//!
//! - `direct`: plain text pod to pod, no proxy (pods `zclient` → `zserver`
//!   of namespace `plain`, outside the mesh, backend port 8090);
//! - `strait-l4-hbone`: meshed pod `client` → Service `bench-tcp` (a TCP
//!   port, so no HTTP parsing): node A's daemon (`strait run`, pinned,
//!   one worker) tunnels each connection through HBONE to node B's
//!   daemon, which delivers to pod `server`;
//! - `strait-l7-hbone`: meshed pod `client` → Service `bench` (an HTTP
//!   port with a VirtualService): node A's daemon routes every request,
//!   then reaches the chosen endpoint through HBONE;
//! - `ztunnel`: two ztunnels (dedicated mode, `ZTUNNEL_WORKER_THREADS=1`,
//!   both trusting the same test root as Strait) in pods `zclient` and
//!   `zserver`; an iptables REDIRECT in `zclient` sends connections to
//!   `zserver:8091` to its ztunnel, which tunnels them to the other's
//!   `:15008`. Only with `--ztunnel`.
//!
//! Every Strait and ztunnel scenario is checked to really tunnel: after
//! its warm-up run the server pod must hold an established TCP connection
//! on port 15008 (else the harness fails rather than report plain text as
//! HBONE).
//!
//! Pinning: oha on CPU 0; both daemons (or both ztunnels) and the backends
//! on CPU 1 (`sched_setaffinity` before exec, so Strait sizes its worker
//! pool to the one CPU it has).
//!
//! Measurement rounds: each round measures every scenario's throughput
//! back to back, the first one rotating; one unrecorded warm-up per
//! scenario precedes them. Per scenario and round: requests/s at
//! saturation (64 keep-alive connections), new connections/s (one
//! request per connection, 16 at a time), the proxies' CPU seconds (utime
//! plus stime from `/proc/<pid>/stat`, both nodes) per 1,000 requests of the
//! saturation run, and each proxy's peak and current RSS. Then the
//! round's latency cycles: each cycle runs one short fixed-rate sub-run
//! of every scenario (1,000 requests/s open loop with latency
//! correction, `--latency-conns` keep-alive connections), the order
//! rotating cycle by cycle, so that every proxied sub-run has a direct
//! sub-run of its own cycle seconds away to be paired with. Per sub-run:
//! p50/p90/p99/p99.9, the proxies' CPU time, context switches and
//! run-queue wait per request (both nodes, all threads, from
//! `/proc/<pid>/task/*/{schedstat,status}`), the CPU steal share of
//! the proxies' CPU, and the host stalls a `cyclictest`-like probe saw
//! on either CPU during the sub-run (`stall_max_us`, `stall_sum_us`:
//! wake-ups of a pinned `SCHED_FIFO` thread later than 250 µs,
//! [`strait_tests::stall`]; null when the probe could not start) and the
//! CPU time other user-space processes took meanwhile, which the probe
//! cannot see (`foreign_cpu_us`, [`strait_tests::foreign_cpu`]). With
//! `--latency-pair-cycles N` each round (the half without the A/B flags)
//! then runs N more cycles of direct and `strait-l4-hbone` only. With
//! `--latency-judged-pairs N --latency-max-pairs M`, after the last round
//! the harness runs more cycles of that pair, one at a time, until N of
//! its pairs would be kept by the verdict's disturbance limits
//! (`--stall-share`, `--steal-limit`, `--slowed-direct`, passed by the
//! xtask; [`strait_tests::judged_pairs`]) or M were measured in all:
//! a rule that looks at the host only, never at the proxied p99. One JSON
//! line per (scenario, round) and per latency sub-run (`"latency": true`,
//! with its `cycle` and `conns`) on stdout; a scenario that cannot run
//! gets one line with `missing` saying why.
//!
//! `bench-mesh --strait PATH --backend PATH --ca DIR [--oha PATH]
//! [--secs N] [--latency-secs N] [--latency-cycles N]
//! [--latency-pair-cycles N] [--latency-conns N[,N]...] [--probe-ab]
//! [--rounds N] [--ztunnel PATH] [--only SCENARIO]... [--ab-sockmap |
//! --ab-args ARGS]` (`--latency-secs`: length of one latency sub-run,
//! default 2; `--latency-cycles`: cycles per round (and per half with an
//! A/B), default 3; `--latency-pair-cycles`: default 0;
//! `--latency-conns`: connections of a sub-run, default 4 (a list runs
//! every latency sub-run at each count, rows of the later counts named
//! `<row>@<conns>`: an A/B of the count); `--probe-ab`: every latency
//! sub-run with the host-stall probe and without it (`<row>@noprobe`),
//! to see what the probe itself costs; `--only`: measure just those, e.g. to profile one
//! path; `--ab-sockmap`: each round measures the rows, then (or first,
//! alternating) the Strait rows again with both daemons restarted with
//! `strait run --sockmap`, named `<row>+sockmap`, each half with its own
//! latency cycles (direct in both); `--ab-args "ARGS"`: the
//! same with any `strait run` flags, rows `<row>+ab`); `--ca` holds `root-cert.pem`
//! and `ca-key.pem` (the ztunnel test root, which ztunnel's `FAKE_CA`
//! signs with). Needs root; removes every namespace, cgroup and process it
//! made (the nodes' `Drop`), on error too.
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use strait_tests::foreign_cpu::ForeignCpu;
use strait_tests::judged_pairs;
use strait_tests::node::{link, Node, Pod, PodSpec, ServiceDef, ServicePort, TargetPort};
use strait_tests::stall::{Stall, StallProbe};

const ADMIN: &str = "127.0.0.1:15000";
/// The backend port every scenario but ztunnel's reaches.
const BACKEND_PORT: u16 = 8090;
/// The backend port in `zserver` that `zclient`'s ztunnel captures.
const ZT_PORT: u16 = 8091;
const FIXED_RPS: u32 = 1_000;
/// The host-stall probe records wake-ups later than this (a quarter of
/// the 1 ms period: finer than any threshold `cargo xtask bench mesh`
/// judges by).
const STALL_RECORD: Duration = Duration::from_micros(250);
/// Namespace of the pods outside the mesh (direct and ztunnel rows).
const PLAIN_NS: &str = "plain";

struct Args {
    strait: PathBuf,
    backend: PathBuf,
    ca: PathBuf,
    oha: PathBuf,
    secs: u32,
    /// Seconds of one fixed-rate (latency) sub-run.
    latency_secs: u32,
    /// Latency cycles per round: each measures every row's sub-run once.
    latency_cycles: usize,
    /// Extra latency cycles per round of direct and `strait-l4-hbone`
    /// only (the judged pair), after the full cycles.
    latency_pair_cycles: usize,
    /// `--latency-judged-pairs N`: after the last round, more cycles of
    /// the judged pair until N of its pairs are kept under
    /// [`Args::limits`] (0: off).
    judged_pairs: usize,
    /// `--latency-max-pairs M`: the judged pair's pairs measured in all,
    /// top-up included, at most.
    max_pairs: usize,
    /// `--stall-share`, `--steal-limit`, `--slowed-direct`: the limits the
    /// verdict drops disturbed pairs by ([`judged_pairs::Limits`]).
    limits: judged_pairs::Limits,
    /// Keep-alive connections of a latency sub-run; with more than one
    /// value every cycle runs each row at each count, the rows at the
    /// second and later counts named `<row>@<conns>`.
    latency_conns: Vec<u32>,
    rounds: usize,
    ztunnel: Option<PathBuf>,
    /// A/B of the host-stall probe's own cost: every latency sub-run
    /// with and without it (`--probe-ab`).
    probe_ab: bool,
    /// Measure only these scenarios (for profiling one path).
    only: Vec<String>,
    /// A/B of `strait run` flags: every round also measures the Strait
    /// rows with both daemons restarted with these arguments (rows
    /// `<name>+<suffix>`): `--ab-sockmap` is `--sockmap`, suffix `sockmap`;
    /// `--ab-args "ARGS"` any flags, suffix `ab`.
    ab: Option<(Vec<String>, &'static str)>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        strait: PathBuf::new(),
        backend: PathBuf::new(),
        ca: PathBuf::new(),
        oha: "oha".into(),
        secs: 3,
        latency_secs: 2,
        latency_cycles: 3,
        latency_pair_cycles: 0,
        judged_pairs: 0,
        max_pairs: 0,
        limits: judged_pairs::Limits {
            stall_share: 0.01,
            steal: 0.02,
            direct_factor: 2.0,
        },
        latency_conns: vec![4],
        rounds: 3,
        ztunnel: None,
        only: Vec::new(),
        ab: None,
        probe_ab: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--probe-ab" {
            a.probe_ab = true;
            continue;
        }
        if k == "--ab-sockmap" {
            a.ab = Some((vec!["--sockmap".into()], "sockmap"));
            continue;
        }
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--strait" => a.strait = v.into(),
            "--backend" => a.backend = v.into(),
            "--ca" => a.ca = v.into(),
            "--oha" => a.oha = v.into(),
            "--secs" => a.secs = v.parse()?,
            "--latency-secs" => a.latency_secs = v.parse()?,
            "--latency-cycles" => a.latency_cycles = v.parse()?,
            "--latency-pair-cycles" => a.latency_pair_cycles = v.parse()?,
            "--latency-judged-pairs" => a.judged_pairs = v.parse()?,
            "--latency-max-pairs" => a.max_pairs = v.parse()?,
            "--stall-share" => a.limits.stall_share = v.parse()?,
            "--steal-limit" => a.limits.steal = v.parse()?,
            "--slowed-direct" => a.limits.direct_factor = v.parse()?,
            "--latency-conns" => {
                a.latency_conns = v
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .context("--latency-conns: N[,N]...")?
            }
            "--rounds" => a.rounds = v.parse()?,
            "--ztunnel" => a.ztunnel = Some(v.into()),
            "--only" => a.only.push(v),
            "--ab-args" => a.ab = Some((v.split_whitespace().map(String::from).collect(), "ab")),
            other => bail!("unknown argument {other}"),
        }
    }
    if a.strait.as_os_str().is_empty()
        || a.backend.as_os_str().is_empty()
        || a.ca.as_os_str().is_empty()
    {
        bail!("usage: bench-mesh --strait PATH --backend PATH --ca DIR [--oha PATH] [--secs N] [--latency-secs N] [--latency-cycles N] [--latency-pair-cycles N] [--latency-judged-pairs N --latency-max-pairs M [--stall-share F] [--steal-limit F] [--slowed-direct F]] [--latency-conns N[,N]...] [--probe-ab] [--rounds N] [--ztunnel PATH] [--only SCENARIO]... [--ab-sockmap | --ab-args ARGS]");
    }
    Ok(a)
}

/// CPUs for the load generator and for the proxies and backends.
#[derive(Clone, Copy)]
struct Cpus {
    load: Option<usize>,
    server: Option<usize>,
}

/// Pins the process `cmd` starts to `cpu` (before exec, so threads and the
/// program's own view of its CPUs follow).
fn pin(cmd: &mut Command, cpu: Option<usize>) {
    let Some(cpu) = cpu else { return };
    // SAFETY: only sched_setaffinity(2) on a stack value, async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// How oha drives one measurement.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Saturate,
    /// 1,000 requests/s open loop over this many keep-alive connections.
    Fixed(u32),
    Connections,
}

/// One oha run from `client`; its JSON. Fails when fewer than 99% of the
/// requests got a 200.
fn oha(
    client: &Pod,
    a: &Args,
    cpus: Cpus,
    url: &str,
    mode: Mode,
    secs: u32,
) -> anyhow::Result<Value> {
    let mut cmd = client.command(&a.oha)?;
    pin(&mut cmd, cpus.load);
    cmd.args([
        "--no-tui",
        "--output-format",
        "json",
        "--worker-threads",
        "1",
    ])
    .args(["-z", &format!("{secs}s")]);
    match mode {
        Mode::Saturate => cmd.args(["-c", "64"]),
        Mode::Fixed(conns) => cmd.args([
            "-c",
            &conns.to_string(),
            "-q",
            &FIXED_RPS.to_string(),
            "--latency-correction",
        ]),
        Mode::Connections => cmd.args(["-c", "16", "--disable-keepalive"]),
    };
    let out = cmd
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .context("running oha")?;
    if !out.status.success() {
        bail!("oha: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("oha's JSON")?;
    let ok = v["statusCodeDistribution"]["200"].as_f64().unwrap_or(0.0);
    let success = v["summary"]["successRate"].as_f64().unwrap_or(0.0);
    if ok == 0.0 || success < 0.99 {
        bail!(
            "{url}: {ok} responses with 200, success rate {success}; errors: {}",
            v["errorDistribution"]
        );
    }
    Ok(v)
}

/// Requests answered 200 per second of the run.
fn ok_per_sec(v: &Value, secs: u32) -> f64 {
    v["statusCodeDistribution"]["200"].as_f64().unwrap_or(0.0) / f64::from(secs)
}

/// utime + stime of `pid` (all its threads), seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / tck
}

/// Over all threads of `pids`: CPU time (ns, `/proc/<pid>/task/*/schedstat`
/// field 1), context switches (voluntary + involuntary, from each
/// task's `status`) and time spent runnable waiting for the CPU (ns,
/// schedstat field 2: run-queue delay).
fn sched_totals(pids: &[u32]) -> (f64, f64, f64) {
    let (mut ns, mut switches, mut waited) = (0.0, 0.0, 0.0);
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let p = t.path();
            let stat = std::fs::read_to_string(p.join("schedstat")).unwrap_or_default();
            let mut fields = stat
                .split_whitespace()
                .map(|v| v.parse::<f64>().unwrap_or(0.0));
            ns += fields.next().unwrap_or(0.0);
            waited += fields.next().unwrap_or(0.0);
            let status = std::fs::read_to_string(p.join("status")).unwrap_or_default();
            switches += status
                .lines()
                .filter(|l| {
                    l.starts_with("voluntary_ctxt_switches:")
                        || l.starts_with("nonvoluntary_ctxt_switches:")
                })
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                .sum::<f64>();
        }
    }
    (ns, switches, waited)
}

/// A `VmHWM:`/`VmRSS:` figure of `pid`, MiB.
fn vm_mib(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// One scenario: how to reach the backend and which processes are its
/// proxies (one per node).
#[derive(Clone)]
struct Scenario {
    name: &'static str,
    client: Pod,
    url: String,
    proxies: Vec<u32>,
}

/// Steal and total jiffies of `cpu` (or of all CPUs) from `/proc/stat`.
fn cpu_jiffies(cpu: Option<usize>) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let key = cpu.map_or("cpu".to_string(), |c| format!("cpu{c}"));
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(key.as_str()))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    Some((*v.get(7)?, v.iter().take(8).sum()))
}

/// Measures `s`'s throughput once: saturation, new connections, RSS.
fn measure(s: &Scenario, a: &Args, cpus: Cpus, round: usize) -> anyhow::Result<Value> {
    let cpu0: f64 = s.proxies.iter().map(|p| cpu_seconds(*p)).sum();
    let sat = oha(&s.client, a, cpus, &s.url, Mode::Saturate, a.secs)?;
    let cpu = s.proxies.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - cpu0;
    let ok = sat["statusCodeDistribution"]["200"].as_f64().unwrap_or(0.0);
    let conns = oha(&s.client, a, cpus, &s.url, Mode::Connections, a.secs)?;
    Ok(json!({
        "scenario": s.name,
        "round": round,
        "rps": ok_per_sec(&sat, a.secs),
        "new_connections_per_s": ok_per_sec(&conns, a.secs),
        "cpu_s_per_1k": (!s.proxies.is_empty()).then(|| cpu / (ok / 1000.0)),
        "rss_peak_mib": s.proxies.iter().map(|p| vm_mib(*p, "VmHWM:")).collect::<Vec<_>>(),
        "rss_mib": s.proxies.iter().map(|p| vm_mib(*p, "VmRSS:")).collect::<Vec<_>>(),
        "rss_anon_mib": s.proxies.iter().map(|p| vm_mib(*p, "RssAnon:")).collect::<Vec<_>>(),
    }))
}

/// Where one latency sub-run stands: its round, its cycle and its
/// connection count.
#[derive(Clone, Copy)]
struct SubRun {
    round: usize,
    /// Numbers the cycles of the whole run: the rows of one cycle ran
    /// seconds apart, so a proxied row is paired with direct's of its
    /// cycle.
    cycle: usize,
    conns: u32,
}

/// One latency sub-run of `s`: 1,000 requests/s open loop for
/// `latency_secs`, its percentiles, the proxies' CPU time, context
/// switches and run-queue wait per request answered (both nodes, all
/// threads), the steal share of the proxies' CPU and the host stalls the
/// probe saw on either CPU ([`StallProbe`]) over the sub-run.
fn latency(
    s: &Scenario,
    a: &Args,
    cpus: Cpus,
    at: SubRun,
    probe: Option<&StallProbe>,
) -> anyhow::Result<Value> {
    let sched0 = sched_totals(&s.proxies);
    let steal0 = cpu_jiffies(cpus.server);
    let foreign0 = ForeignCpu::now();
    let t0 = Instant::now();
    let fixed = oha(
        &s.client,
        a,
        cpus,
        &s.url,
        Mode::Fixed(at.conns),
        a.latency_secs,
    )?;
    let t1 = Instant::now();
    let foreign = foreign0.since(&ForeignCpu::now());
    let steal1 = cpu_jiffies(cpus.server);
    let sched1 = sched_totals(&s.proxies);
    let stalls = probe.map(|p| p.between(t0, t1));
    let stall_us = |f: fn(&[Stall]) -> f64| stalls.as_deref().map(f);
    let fixed_ok = fixed["statusCodeDistribution"]["200"]
        .as_f64()
        .unwrap_or(0.0);
    // Per request answered at the fixed rate, both proxies together: the
    // CPU time and the context switches (every one a run-queue pass on
    // the proxies' shared CPU) each request costs when nothing batches.
    let per_req = |x: f64| (!s.proxies.is_empty() && fixed_ok > 0.0).then(|| x / fixed_ok);
    let pct = |k: &str| fixed["latencyPercentiles"][k].as_f64().map(|s| s * 1e6);
    let steal = match (steal0, steal1) {
        (Some((s0, t0)), Some((s1, t1))) if t1 > t0 => {
            Some(s1.saturating_sub(s0) as f64 / (t1 - t0) as f64)
        }
        _ => None,
    };
    Ok(json!({
        "scenario": s.name,
        "round": at.round,
        "cycle": at.cycle,
        "conns": at.conns,
        "secs": a.latency_secs,
        "latency": true,
        "requests": fixed_ok,
        "p50_us": pct("p50"),
        "p90_us": pct("p90"),
        "p99_us": pct("p99"),
        "p99_9_us": pct("p99.9"),
        "fixed_rps": ok_per_sec(&fixed, a.latency_secs),
        "fixed_cpu_us_per_req": per_req((sched1.0 - sched0.0) / 1e3),
        "fixed_switches_per_req": per_req(sched1.1 - sched0.1),
        "fixed_runq_wait_us_per_req": per_req((sched1.2 - sched0.2) / 1e3),
        "steal": steal,
        // Longest stall on either CPU, and all stalls over the
        // threshold summed (µs; null without the probe).
        "stall_max_us": stall_us(|v| v.iter().map(|s| s.late.as_secs_f64() * 1e6).fold(0.0, f64::max)),
        "stall_sum_us": stall_us(|v| v.iter().map(|s| s.late.as_secs_f64() * 1e6).sum()),
        // CPU time of user-space processes outside the benchmark (µs,
        // any CPU): work the probe cannot see ([`ForeignCpu`]).
        "foreign_cpu_us": foreign as f64 / 1e3,
    }))
}

/// `cycles` latency cycles of `rows` (`rows[0]` is direct when
/// measured): each cycle runs every row's sub-run once at each of
/// `a.latency_conns`, in an order rotating cycle by cycle (the counts
/// too), so every proxied sub-run has a direct one of its count seconds
/// away. Cycles are numbered from `first_cycle`; rows at a count other
/// than the first are named `<row>@<conns>`.
#[allow(clippy::too_many_arguments)]
fn latency_cycles(
    rows: &[&Scenario],
    a: &Args,
    cpus: Cpus,
    probe: Option<&StallProbe>,
    round: usize,
    (first_cycle, cycles): (usize, usize),
    rename: impl Fn(&Scenario) -> String,
) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let n = rows.len().max(1);
    let k = a.latency_conns.len().max(1);
    for c in 0..cycles {
        let cycle = first_cycle + c;
        for j in 0..a.latency_conns.len() {
            let ci = (j + c) % k;
            let conns = a.latency_conns[ci];
            // `--probe-ab`: every sub-run with the probe running (started
            // for it) and without (rows `<row>@noprobe`), alternating.
            for variant in 0..1 + usize::from(a.probe_ab) {
                let with_probe = !a.probe_ab || (variant + c) % 2 == 0;
                for i in 0..rows.len() {
                    let s = rows[(i + cycle) % n];
                    let mut name = if ci == 0 {
                        rename(s)
                    } else {
                        format!("{}@{conns}", rename(s))
                    };
                    if !with_probe {
                        name.push_str("@noprobe");
                    }
                    eprintln!(
                        "bench-mesh: round {} latency cycle {} {name}",
                        round + 1,
                        cycle + 1,
                    );
                    let at = SubRun {
                        round,
                        cycle,
                        conns,
                    };
                    let local = match (a.probe_ab && with_probe, cpus.load, cpus.server) {
                        (true, Some(l), Some(sv)) => {
                            Some(StallProbe::start(&[l, sv], STALL_RECORD)?)
                        }
                        _ => None,
                    };
                    let here = if a.probe_ab { local.as_ref() } else { probe };
                    let mut v = latency(s, a, cpus, at, here).with_context(|| s.name)?;
                    v["scenario"] = json!(name);
                    out.push(v);
                }
            }
        }
    }
    Ok(out)
}

/// The judged pair's extra latency cycles ([`Args::latency_pair_cycles`]):
/// direct and `strait-l4-hbone` only, numbered after the round's (or
/// half's) full cycles from `first_cycle`.
fn pair_cycles(
    scenarios: &[&Scenario],
    a: &Args,
    cpus: Cpus,
    probe: Option<&StallProbe>,
    round: usize,
    first_cycle: usize,
) -> anyhow::Result<Vec<Value>> {
    let pair: Vec<&Scenario> = scenarios
        .iter()
        .copied()
        .filter(|s| s.name == "direct" || s.name == "strait-l4-hbone")
        .collect();
    if pair.len() != 2 || a.latency_pair_cycles == 0 {
        return Ok(Vec::new());
    }
    latency_cycles(
        &pair,
        a,
        cpus,
        probe,
        round,
        (first_cycle, a.latency_pair_cycles),
        |s| s.name.to_string(),
    )
}

/// Points the Strait scenarios at the daemons just (re)started.
fn set_proxies(scenarios: &mut [Scenario], daemons: &[Killed]) {
    let pids: Vec<u32> = daemons.iter().map(|d| d.0.id()).collect();
    for s in scenarios
        .iter_mut()
        .filter(|s| s.name.starts_with("strait"))
    {
        s.proxies = pids.clone();
    }
}

/// Whether the judged pair needs more cycles after the last round
/// (`--latency-judged-pairs`): fewer of its pairs kept than asked for,
/// and fewer measured than `--latency-max-pairs`.
fn needs_top_up(out: &[Value], a: &Args) -> bool {
    let (kept, measured) = judged_pairs::count(out, "strait-l4-hbone", a.limits);
    a.judged_pairs > 0 && kept < a.judged_pairs && measured < a.max_pairs
}

/// `--latency-judged-pairs`: after the last round, one more cycle of the
/// judged pair at a time (numbered as round `a.rounds`, cycles from 0,
/// the order alternating) until [`needs_top_up`] says enough or
/// `--latency-max-pairs` cycles ran. `scenarios`
/// are filtered to direct and `strait-l4-hbone`, run as they are (the
/// caller restarts the daemons without A/B flags first).
fn top_up(
    out: &mut Vec<Value>,
    scenarios: &[&Scenario],
    a: &Args,
    cpus: Cpus,
    probe: Option<&StallProbe>,
) -> anyhow::Result<()> {
    let pair: Vec<&Scenario> = scenarios
        .iter()
        .copied()
        .filter(|s| s.name == "direct" || s.name == "strait-l4-hbone")
        .collect();
    let mut cycle = 0;
    // Bounded by cycles run too: a sub-run without a p99 (oha failed)
    // is not a pair, so the count alone might never reach the limit.
    while pair.len() == 2 && cycle < a.max_pairs && needs_top_up(out, a) {
        out.extend(latency_cycles(
            &pair,
            a,
            cpus,
            probe,
            a.rounds,
            (cycle, 1),
            |s| s.name.to_string(),
        )?);
        cycle += 1;
    }
    let (kept, measured) = judged_pairs::count(out, "strait-l4-hbone", a.limits);
    eprintln!(
        "bench-mesh: judged pair: {kept} of {measured} pairs kept ({cycle} cycles after the last round)"
    );
    Ok(())
}

/// `e` with each Strait daemon's state (running, or how it exited) and
/// the end of its log: a failed sub-run says whether a daemon died.
fn with_daemon_logs(e: anyhow::Error, daemons: &mut [Killed], nodes: [&Node; 2]) -> anyhow::Error {
    let mut ctx = String::new();
    for (d, n) in daemons.iter_mut().zip(nodes) {
        let state = match d.0.try_wait() {
            Ok(Some(st)) => format!("exited ({st})"),
            Ok(None) => "running".into(),
            Err(e) => format!("unknown ({e})"),
        };
        let log = std::fs::read_to_string(n.tmp_dir().join("strait.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        ctx.push_str(&format!(
            "\nstrait run on {}: {state}; its log ends:\n",
            n.name()
        ));
        for l in tail.iter().rev() {
            ctx.push_str(l);
            ctx.push('\n');
        }
    }
    e.context(ctx)
}

fn missing(name: &str, why: &str) -> Value {
    json!({"scenario": name, "missing": why})
}

/// Output of `program args` run by `cmd` (stdout, lossy).
fn run_out(mut cmd: Command, args: &[&str]) -> String {
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// GET `url` from inside a namespace (`cmd` is a curl command there).
fn curl(cmd: Command, url: &str) -> String {
    run_out(cmd, &["-sS", "-m", "5", url])
}

/// Established TCP connections with local port 15008 in `pod`'s namespace.
fn hbone_connections(pod: &Pod) -> usize {
    pod.command("ss")
        .map(|c| {
            run_out(c, &["-Htn", "state", "established", "sport", "=", ":15008"])
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count()
        })
        .unwrap_or(0)
}

/// Kills a process (and waits for it) on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bench-backend --http` on `ports` of `pod` and waits for `ready`.
fn backend(pod: &Pod, a: &Args, cpus: Cpus, ports: &[u16]) -> anyhow::Result<Killed> {
    use std::io::BufRead;
    let mut cmd = pod.command(&a.backend)?;
    pin(&mut cmd, cpus.server);
    for p in ports {
        cmd.args(["--http", &format!("{}:{p}", pod.ip)]);
    }
    let mut child = Killed(
        cmd.stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .context("spawning bench-backend")?,
    );
    let out = child.0.stdout.take().context("backend stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line)?;
    if line.trim() != "ready" {
        bail!("bench-backend did not start: {line:?}");
    }
    Ok(child)
}

/// A CA directory for `strait run --ca-dir` made of the test root (the
/// root signs workload certificates directly, as ztunnel's FAKE_CA does).
fn ca_dir(src: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let ca = dir.join("ca");
    std::fs::create_dir_all(&ca)?;
    let root = std::fs::read_to_string(src.join("root-cert.pem"))
        .with_context(|| format!("{}/root-cert.pem", src.display()))?;
    for f in ["ca-cert.pem", "root-cert.pem", "cert-chain.pem"] {
        std::fs::write(ca.join(f), &root)?;
    }
    std::fs::copy(src.join("ca-key.pem"), ca.join("ca-key.pem"))
        .with_context(|| format!("{}/ca-key.pem", src.display()))?;
    Ok(ca)
}

/// Starts `strait run` on `node` reading `config`, pinned, with its own
/// embedded CA on the shared test root; waits for `/ready`.
fn daemon(
    node: &Node,
    a: &Args,
    cpus: Cpus,
    config: &Path,
    extra: &[&str],
) -> anyhow::Result<Killed> {
    let log = node.tmp_dir().join("strait.log");
    let f = std::fs::File::create(&log)?;
    let mut cmd = node.strait_run(&a.strait, config)?;
    pin(&mut cmd, cpus.server);
    // Measured as a node runs it: with RUST_BACKTRACE set (a developer's
    // shell) every `anyhow` error captures a backtrace, which maps the
    // unwind tables and the symboliser's code (~0.7 MiB more RSS).
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    let mut child = Killed(
        cmd.args(["--admin", ADMIN, "--no-access-log", "--log-level", "warn"])
            .args(extra)
            .arg("--ca-dir")
            .arg(ca_dir(&a.ca, node.tmp_dir())?)
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .context("spawning strait run")?,
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if curl(node.command("curl")?, &format!("http://{ADMIN}/ready")).trim() == "LIVE" {
            return Ok(child);
        }
        if let Some(st) = child.0.try_wait()? {
            bail!(
                "strait run on {} exited ({st}):\n{}",
                node.name(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "strait run on {} not ready in 90 s:\n{}",
                node.name(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// ztunnel's local workload file: both pods of the ztunnel scenario,
/// HBONE-capable.
fn ztunnel_workloads(pods: &[(&Pod, &str)]) -> String {
    let mut s = String::from("workloads:\n");
    for (p, node) in pods {
        s.push_str(&format!(
            "- uid: Kubernetes//Pod/{ns}/{name}\n  name: {name}\n  namespace: {ns}\n  serviceAccount: {sa}\n  workloadIps: [\"{ip}\"]\n  protocol: HBONE\n  node: {node}\n  network: \"\"\n  trustDomain: cluster.local\n  services: {{}}\n",
            ns = p.spec.namespace,
            name = p.spec.name,
            sa = p.spec.service_account,
            ip = p.ip,
        ));
    }
    s
}

/// Starts ztunnel in dedicated mode in `pod` (FAKE_CA, the local workload
/// file, one worker thread, no access log), pinned; waits for its
/// readiness port.
fn ztunnel(
    bin: &Path,
    pod: &Pod,
    dir: &Path,
    cpus: Cpus,
    workloads: &Path,
) -> anyhow::Result<Killed> {
    let log = dir.join(format!("ztunnel-{}.log", pod.spec.name));
    let f = std::fs::File::create(&log)?;
    let mut cmd = pod.command(bin)?;
    pin(&mut cmd, cpus.server);
    let mut child = Killed(
        cmd.env("FAKE_CA", "true")
            .env("XDS_ADDRESS", "")
            .env("LOCAL_XDS_PATH", workloads)
            .env("PROXY_MODE", "dedicated")
            .env(
                "PROXY_WORKLOAD_INFO",
                format!(
                    "{}/{}/{}",
                    pod.spec.namespace, pod.spec.name, pod.spec.service_account
                ),
            )
            .env("ENABLE_ORIG_SRC", "false")
            .env("IPV6_ENABLED", "false")
            .env("ZTUNNEL_WORKER_THREADS", "1")
            .env("RUST_LOG", "warn")
            .stdout(f.try_clone()?)
            .stderr(f)
            .stdin(Stdio::null())
            .spawn()
            .context("spawning ztunnel")?,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut c = pod.command("curl")?;
        c.args(["-o", "/dev/null", "-w", "%{http_code}"]);
        if curl(c, "http://127.0.0.1:15021/healthz/ready") == "200" {
            return Ok(child);
        }
        if let Some(st) = child.0.try_wait()? {
            bail!(
                "ztunnel in {} exited ({st}):\n{}",
                pod.spec.name,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "ztunnel in {} not ready in 60 s:\n{}",
                pod.spec.name,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn service(name: &str, port_name: &str, port: u16) -> ServiceDef {
    ServiceDef {
        name: name.into(),
        namespace: "default".into(),
        selector: BTreeMap::from([("app".to_string(), "server".to_string())]),
        ports: vec![ServicePort {
            name: Some(port_name.into()),
            port,
            target_port: Some(TargetPort::Number(BACKEND_PORT)),
            protocol: "TCP".into(),
            app_protocol: None,
        }],
        cluster_ip: None,
        headless: false,
    }
}

fn run(a: &Args) -> anyhow::Result<Vec<Value>> {
    let Some(p) = strait_tests::privileged::require("bench-mesh") else {
        bail!("bench-mesh needs root, cgroup v2 and the eBPF object");
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpus = if cores >= 2 {
        Cpus {
            load: Some(0),
            server: Some(1),
        }
    } else {
        Cpus {
            load: None,
            server: None,
        }
    };
    // The host-stall probe on both CPUs (load generator's and proxies'):
    // recorded per latency sub-run; without it the lines say null.
    let probe = match (cpus.load, cpus.server) {
        _ if a.probe_ab => None,
        (Some(l), Some(s)) => match StallProbe::start(&[l, s], STALL_RECORD) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("bench-mesh: no host-stall probe: {e}");
                None
            }
        },
        _ => None,
    };
    let probe = probe.as_ref();
    let mut na = Node::new(&p.cgroup2, "mesh-a", 61)?;
    let mut nb = Node::new(&p.cgroup2, "mesh-b", 62)?;
    link(&na, &nb)?;
    // Meshed: `client` (A) and `server` (B) in `default`. Outside the
    // mesh: `zclient` (A) and `zserver` (B) in `plain`.
    na.add_pod(PodSpec::new("client", &[("app", "client")]))?;
    nb.add_pod(PodSpec::new("server", &[("app", "server")]))?;
    for (n, name) in [(&mut na, "zclient"), (&mut nb, "zserver")] {
        let mut s = PodSpec::new(name, &[("app", name)]);
        s.namespace = PLAIN_NS.into();
        s.service_account = name.into();
        n.set_namespace_labels(PLAIN_NS, &[]);
        n.add_pod(s)?;
    }
    let http_svc = service("bench", "http", 80);
    let tcp_svc = service("bench-tcp", "tcp-bench", 9000);
    let vip_http = na
        .add_service(http_svc.clone())?
        .cluster_ip
        .context("ClusterIP")?;
    let vip_tcp = na
        .add_service(tcp_svc.clone())?
        .cluster_ip
        .context("ClusterIP")?;
    nb.add_service(http_svc)?;
    nb.add_service(tcp_svc)?;
    let pod = |n: &Node, ns: &str, name: &str| -> anyhow::Result<Pod> {
        n.pod(ns, name)
            .cloned()
            .with_context(|| format!("pod {ns}/{name}"))
    };
    let (client, server) = (
        pod(&na, "default", "client")?,
        pod(&nb, "default", "server")?,
    );
    let (zclient, zserver) = (
        pod(&na, PLAIN_NS, "zclient")?,
        pod(&nb, PLAIN_NS, "zserver")?,
    );
    let _backend = backend(&server, a, cpus, &[BACKEND_PORT])?;
    let _zbackend = backend(&zserver, a, cpus, &[BACKEND_PORT, ZT_PORT])?;

    // Strait on both nodes; both see the whole cluster.
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bench, namespace: default}\nspec:\n  hosts: [bench]\n  http:\n  - route:\n    - destination: {host: bench}\n";
    for n in [&na, &nb] {
        let dir = n.tmp_dir().join("config");
        na.write_config(&dir)?;
        nb.write_config(&dir)?;
        std::fs::write(dir.join("bench-vs.yaml"), vs)?;
    }
    let start_daemons = |extra: &[&str]| -> anyhow::Result<Vec<Killed>> {
        let mut out = Vec::new();
        for n in [&na, &nb] {
            out.push(daemon(n, a, cpus, &n.tmp_dir().join("config"), extra)?);
        }
        Ok(out)
    };
    let mut daemons = start_daemons(&[])?;
    let strait_pids: Vec<u32> = daemons.iter().map(|d| d.0.id()).collect();

    let mut scenarios = vec![
        Scenario {
            name: "direct",
            client: zclient.clone(),
            url: format!("http://{}:{BACKEND_PORT}/", zserver.ip),
            proxies: Vec::new(),
        },
        Scenario {
            name: "strait-l4-hbone",
            client: client.clone(),
            url: format!("http://{vip_tcp}:9000/"),
            proxies: strait_pids.clone(),
        },
        Scenario {
            name: "strait-l7-hbone",
            client: client.clone(),
            url: format!("http://{vip_http}/"),
            proxies: strait_pids.clone(),
        },
    ];
    let mut out = Vec::new();
    let mut _ztunnels = Vec::new();
    match &a.ztunnel {
        None => out.push(missing("ztunnel", "not run: ZTUNNEL_BIN is not set")),
        Some(bin) => {
            let dir = nb.tmp_dir().to_path_buf();
            let workloads = dir.join("ztunnel-workloads.yaml");
            std::fs::write(
                &workloads,
                ztunnel_workloads(&[(&zclient, na.name()), (&zserver, nb.name())]),
            )?;
            let rule = zclient
                .command("iptables")?
                .args([
                    "-t",
                    "nat",
                    "-A",
                    "OUTPUT",
                    "-p",
                    "tcp",
                    "-d",
                    &zserver.ip.to_string(),
                    "--dport",
                    &ZT_PORT.to_string(),
                    "-j",
                    "REDIRECT",
                    "--to-ports",
                    "15001",
                    "-w",
                ])
                .stdin(Stdio::null())
                .output()
                .context("running iptables in zclient")?;
            if !rule.status.success() {
                bail!(
                    "iptables REDIRECT in zclient: {}",
                    String::from_utf8_lossy(&rule.stderr).trim()
                );
            }
            _ztunnels.push(ztunnel(bin, &zserver, &dir, cpus, &workloads)?);
            _ztunnels.push(ztunnel(bin, &zclient, &dir, cpus, &workloads)?);
            scenarios.push(Scenario {
                name: "ztunnel",
                client: zclient.clone(),
                url: format!("http://{}:{ZT_PORT}/", zserver.ip),
                proxies: _ztunnels.iter().map(|z| z.0.id()).collect(),
            });
        }
    }

    if !a.only.is_empty() {
        scenarios.retain(|s| a.only.iter().any(|o| o == s.name));
    }
    warm_up(&scenarios, a, cpus, &server, &zserver, true)?;
    let routed = !scenarios.iter().any(|s| s.name == "strait-l7-hbone")
        || curl(
            na.command("curl")?,
            &format!("http://{ADMIN}/stats/prometheus"),
        )
        .lines()
        .any(|l| {
            l.starts_with("istio_requests_total{") && l.contains("destination_service=\"bench.")
        });
    if !routed {
        bail!("strait-l7-hbone: node A's daemon counted no HTTP request to the bench service");
    }

    if let Some((ab_args, suffix)) = &a.ab {
        // Per round: the rows as they are, then (or first, alternating)
        // the Strait rows again with both daemons restarted with the
        // A/B flags; the daemons are restarted for every half so both
        // start equally warm.
        let ab_args: Vec<&str> = ab_args.iter().map(String::as_str).collect();
        let per_half = a.latency_cycles + a.latency_pair_cycles;
        for round in 0..a.rounds {
            for half in 0..2 {
                let on = (half + round) % 2 == 1;
                drop(std::mem::take(&mut daemons));
                daemons = start_daemons(if on { &ab_args } else { &[] })?;
                set_proxies(&mut scenarios, &daemons);
                let these: Vec<&Scenario> = scenarios
                    .iter()
                    .filter(|s| !on || s.name.starts_with("strait"))
                    .collect();
                let n = these.len().max(1);
                let owned: Vec<Scenario> = (0..these.len())
                    .map(|i| these[(i + round) % n].clone())
                    .collect();
                // ztunnel's pooled tunnels from the first half are still
                // open: direct was checked untunnelled by the first warm-up.
                warm_up(&owned, a, cpus, &server, &zserver, false)?;
                let rename = |s: &Scenario| {
                    if on && s.name != "direct" {
                        format!("{}+{suffix}", s.name)
                    } else {
                        s.name.to_string()
                    }
                };
                for s in &owned {
                    eprintln!("bench-mesh: round {} {} {suffix}={on}", round + 1, s.name);
                    let mut v = measure(s, a, cpus, round).with_context(|| s.name)?;
                    v["scenario"] = json!(rename(s));
                    out.push(v);
                }
                // Latency: direct in both halves, so that every proxied
                // sub-run has a direct one of its own cycle.
                let mut lat: Vec<&Scenario> = scenarios
                    .iter()
                    .filter(|s| s.name == "direct" && on)
                    .collect();
                lat.extend(owned.iter());
                let first = (round * 2 + half) * per_half;
                let cycles = (first, a.latency_cycles);
                let lines = latency_cycles(&lat, a, cpus, probe, round, cycles, rename).and_then(
                    |mut v| {
                        // The judged pair's extra cycles: in the half
                        // without the A/B flags.
                        if !on {
                            let first = first + a.latency_cycles;
                            v.extend(pair_cycles(&lat, a, cpus, probe, round, first)?);
                        }
                        Ok(v)
                    },
                );
                out.extend(lines.map_err(|e| with_daemon_logs(e, &mut daemons, [&na, &nb]))?);
            }
        }
        if needs_top_up(&out, a) {
            // The last half may have run with the A/B flags: the judged
            // pair's top-up runs without them, like its other cycles.
            drop(std::mem::take(&mut daemons));
            daemons = start_daemons(&[])?;
            set_proxies(&mut scenarios, &daemons);
            let pair: Vec<Scenario> = scenarios
                .iter()
                .filter(|s| s.name == "direct" || s.name == "strait-l4-hbone")
                .cloned()
                .collect();
            warm_up(&pair, a, cpus, &server, &zserver, false)?;
            let refs: Vec<&Scenario> = pair.iter().collect();
            top_up(&mut out, &refs, a, cpus, probe)
                .map_err(|e| with_daemon_logs(e, &mut daemons, [&na, &nb]))?;
        }
        drop(_ztunnels);
        drop(daemons);
        return Ok(out);
    }

    for round in 0..a.rounds {
        for i in 0..scenarios.len() {
            let s = &scenarios[(i + round) % scenarios.len()];
            eprintln!("bench-mesh: round {} {}", round + 1, s.name);
            out.push(measure(s, a, cpus, round).with_context(|| s.name)?);
        }
        let lat: Vec<&Scenario> = scenarios.iter().collect();
        let first = round * (a.latency_cycles + a.latency_pair_cycles);
        let cycles = (first, a.latency_cycles);
        let lines = latency_cycles(&lat, a, cpus, probe, round, cycles, |s| s.name.to_string())
            .and_then(|mut v| {
                let first = first + a.latency_cycles;
                v.extend(pair_cycles(&lat, a, cpus, probe, round, first)?);
                Ok(v)
            });
        out.extend(lines.map_err(|e| with_daemon_logs(e, &mut daemons, [&na, &nb]))?);
    }
    let lat: Vec<&Scenario> = scenarios.iter().collect();
    top_up(&mut out, &lat, a, cpus, probe)
        .map_err(|e| with_daemon_logs(e, &mut daemons, [&na, &nb]))?;
    drop(_ztunnels);
    drop(daemons);
    Ok(out)
}

/// Warm-up (pools, certificates) of each scenario, and the check that the
/// tunnelled scenarios really tunnel (`first`: also that direct does not,
/// before any tunnel was opened).
fn warm_up(
    scenarios: &[Scenario],
    a: &Args,
    cpus: Cpus,
    server: &Pod,
    zserver: &Pod,
    first: bool,
) -> anyhow::Result<()> {
    for s in scenarios {
        eprintln!("bench-mesh: warm-up {}", s.name);
        // Listeners and certificates come up asynchronously after
        // `/ready`: retry the warm-up for a while before giving up.
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = oha(&s.client, a, cpus, &s.url, Mode::Saturate, 1) {
            if Instant::now() > deadline {
                return Err(e.context(format!("{} warm-up", s.name)));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let server_pod = if s.name.starts_with("strait") {
            server
        } else {
            zserver
        };
        let tunnels = hbone_connections(server_pod);
        match (s.name, tunnels) {
            ("direct", 0) => {}
            ("direct", _) if !first => {}
            ("direct", n) => bail!("direct: {n} HBONE connections in zserver before any tunnel"),
            (name, 0) => bail!(
                "{name}: no established HBONE connection (port 15008) in the server pod after the warm-up: not tunnelled"
            ),
            _ => {}
        }
    }
    Ok(())
}

fn main() {
    let result = args().and_then(|a| run(&a));
    match result {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
        }
        Err(e) => {
            eprintln!("bench-mesh: {e:#}");
            std::process::exit(1);
        }
    }
}
