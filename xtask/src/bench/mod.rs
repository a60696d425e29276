//! `cargo xtask bench [l4|l7|config|all|policy|mesh|kube|l4-counters] [--quick]`: Strait's figures beside
//! the alternatives (direct, iptables DNAT, nginx, HAProxy), measured in
//! one run on one machine, written to bench/results.md and results.json.
//!
//! Everything runs in network namespaces the bench creates (see
//! [`netns`]); the load generator is pinned to CPU 0 and the server side
//! (backend and the proxy under test) to CPU 1 when the machine has two or
//! more. Namespaces, the cgroup, processes and temporary files are removed
//! on success, error, panic and Ctrl-C.
mod config_case;
pub(crate) mod install;
mod kube_case;
mod l4;
mod l4_client;
mod l4_counters;
mod l7;
pub(crate) mod mesh;
mod mesh_lock;
mod netns;
mod policy_case;
mod procs;
mod report;
mod rounds;
mod stats;
mod xdp;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cmd::{root, step};
use procs::{in_ns, Proc};

/// Which cases to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// TCP connection rate and latency: direct, Strait VIP, iptables DNAT.
    L4,
    /// HTTP/1.1 and h2 through Strait, nginx and HAProxy.
    L7,
    /// Config compile time and memory, and the propagation of one endpoint
    /// change, at 10,000 services (writes only its own section of
    /// bench/results.md).
    Config,
    /// XDP programs through BPF_PROG_TEST_RUN: load balancer, deny, floors
    /// (writes only its own section of results.md).
    Xdp,
    /// All of the above (not `policy`; `xdp` runs at the end).
    All,
    /// CPU per request of the security-policy check (in process; writes
    /// only its own section of bench/results.md).
    Policy,
    /// Pod to pod across two simulated nodes: direct, Strait L7, HBONE,
    /// ztunnel (writes only its own section of bench/results.md).
    Mesh,
    /// The Kubernetes source's initial sync and memory at 10,000 Services
    /// and 100,000 endpoints from a fake API server (in process; writes
    /// only its own section of bench/results.md).
    Kube,
    /// What the sockops `TCP_STATS` counters cost per kernel-balanced
    /// connection: counters on vs off (writes only its own section of
    /// bench/results.md).
    L4Counters,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C (or SIGTERM) arrived; long loops check it and bail so
/// the guards tear everything down.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Which CPUs to pin to (`None`: no pinning, a 1-CPU machine).
#[derive(Clone, Copy)]
pub struct Cpus {
    /// The load generator.
    pub load: Option<usize>,
    /// The backend and the proxy under test.
    pub server: Option<usize>,
}

/// What every case needs. Field order is drop order: the namespaces (and
/// every process left in them) go before the cgroup and the temp dir.
pub struct Env {
    pub topo: netns::Topology,
    pub cgroup: netns::BenchCgroup,
    pub cpus: Cpus,
    pub quick: bool,
    /// Runs per case (median and min–max over these).
    pub runs: usize,
    /// Scratch directory for configs and rule files.
    pub tmp: PathBuf,
    release: PathBuf,
}

impl Env {
    /// A release binary of the workspace.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.release.join(name)
    }

    /// A binary built with the `dist` profile (how Strait ships: fat LTO).
    pub fn dist_bin(&self, name: &str) -> PathBuf {
        self.release.with_file_name("dist").join(name)
    }
}

/// Removes the scratch directory on drop.
struct TmpDir(PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The backend port for HTTP (h1 and h2c); L4 uses [`l4::BACKEND_PORTS`].
pub const HTTP_BACKEND_PORT: u16 = 8090;

pub fn run(suite: Suite, quick: bool) -> anyhow::Result<()> {
    if suite == Suite::Xdp {
        return xdp::run(quick);
    }
    if suite == Suite::Policy {
        return policy_case::run(quick);
    }
    if suite == Suite::Mesh {
        return mesh::run(quick);
    }
    if suite == Suite::Kube {
        return kube_case::run(quick);
    }
    let started = Instant::now();
    ctrlc::set_handler(|| {
        eprintln!("\ninterrupted: tearing down");
        INTERRUPTED.store(true, Ordering::Relaxed);
    })
    .context("installing the Ctrl-C handler")?;
    let want = |s: Suite| suite == Suite::All || suite == s;

    install::ensure(want(Suite::L7))?;
    let release = install::build(want(Suite::L7))?;
    step("removing what an interrupted bench left behind");
    netns::cleanup_stale();

    let tmp = root().join(format!("target/bench-tmp-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let _tmp_guard = TmpDir(tmp.clone());
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
    step("network namespaces and cgroup");
    let env = Env {
        topo: netns::Topology::create()?,
        cgroup: netns::BenchCgroup::create()?,
        cpus,
        quick,
        runs: if quick { 3 } else { 5 },
        tmp,
        release,
    };
    let machine = report::Machine::read();
    let load_before = loadavg();
    let steal_before = cpu_times();

    step("backend");
    let mut backend_cmd = in_ns(&env.topo.server, env.cpus.server, env.bin("bench-backend"));
    for p in l4::BACKEND_PORTS {
        backend_cmd.args(["--tcp", &format!("{}:{p}", netns::SERVER_IP)]);
    }
    backend_cmd.args([
        "--http",
        &format!("{}:{HTTP_BACKEND_PORT}", netns::SERVER_IP),
    ]);
    let mut backend = Proc::spawn("bench-backend", backend_cmd)?;
    backend.wait_line("ready", Duration::from_secs(10))?;

    let mut sections = Vec::new();
    let mut failed = Vec::new();
    type Case = fn(&Env) -> anyhow::Result<report::Section>;
    let cases: [(Suite, &str, Case); 4] = [
        (Suite::L4, "L4", l4::run),
        (Suite::L7, "L7", l7::run),
        (Suite::Config, "Config", config_case::run),
        (Suite::L4Counters, "L4 counters", l4_counters::run),
    ];
    for (s, name, case) in cases {
        if !want(s) {
            continue;
        }
        match case(&env) {
            Ok(section) => sections.push(section),
            Err(e) if interrupted() => return Err(e.context("bench interrupted; nothing written")),
            Err(e) => {
                eprintln!("error: {name} case failed: {e:#}");
                failed.push(name);
                sections.push(report::Section {
                    title: name.to_string(),
                    intro: vec![format!("**Failed** in this run: {e:#}")],
                    tables: Vec::new(),
                    json: serde_json::json!({"error": format!("{e:#}")}),
                });
            }
        }
        backend.check_alive()?;
    }
    drop(backend);

    let header = vec![
        format!(
            "Mode: `{}` ({} runs per figure), suites: {}; took {:.0} s. Load generator pinned to CPU {}, backend and proxy under test to CPU {} (taskset). \
             Cells are the median over the runs with (min–max) and ×ratio to the direct baseline of the same table.",
            if quick { "cargo xtask bench --quick" } else { "cargo xtask bench" },
            env.runs,
            format!("{suite:?}").to_lowercase(),
            started.elapsed().as_secs_f64(),
            env.cpus.load.map_or("any".into(), |c| c.to_string()),
            env.cpus.server.map_or("any".into(), |c| c.to_string()),
        ),
        format!(
            "Noise: load average {load_before} at the start and {} at the end (1/5/15 min) on a {cores}-core machine; other work (builds) may share it. \
             CPU steal (time the host ran something else while this VM wanted the CPU; /proc/stat) over the run: {}. \
             Absolute figures move between runs and machines; the ratios between contenders measured in the same run, interleaved run by run, are the point.",
            loadavg(),
            steal_share(steal_before, cpu_times()),
        ),
    ];
    let dir = root().join("bench");
    if suite != Suite::All {
        // One suite alone (`bench l7`, `bench l4`, ...): only its own
        // section changes; every other suite's figures stay.
        report::write_sections(&dir, &machine, &header, &sections)?;
    } else {
        report::write(&dir, &machine, &header, &sections)?;
    }
    step(&format!("wrote {}", dir.join("results.md").display()));
    drop(env);
    if suite == Suite::All {
        if let Err(e) = xdp::run(quick) {
            eprintln!("error: XDP case failed: {e:#}");
            failed.push("XDP");
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("cases failed: {}", failed.join(", "));
    }
    Ok(())
}

/// (steal, total) jiffies of all CPUs from the `cpu` line of /proc/stat.
pub(crate) fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total = v.iter().take(8).sum();
    Some((*v.get(7)?, total))
}

/// Steal as a fraction (0–1) of all CPU time between two `cpu_times`
/// readings; `None` when either is missing or no time passed.
pub(crate) fn steal_fraction(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    match (before, after) {
        (Some((s0, t0)), Some((s1, t1))) if t1 > t0 => {
            Some(s1.saturating_sub(s0) as f64 / (t1 - t0) as f64)
        }
        _ => None,
    }
}

/// [`steal_fraction`] as a percentage for the report.
fn steal_share(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> String {
    steal_fraction(before, after).map_or("unknown".into(), |f| format!("{:.1}%", 100.0 * f))
}

/// The first three fields of /proc/loadavg.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
