//! The L4 suites' client: one `bench-l4` process measures every path of a
//! round in short alternating batches (A B, B A, ...: the arms' order
//! reverses pass by pass, so a linear drift of the shared machine cancels
//! out over two passes), and reports per batch the connections, the wall
//! time, the CPU time of the client and of the backend (every process in
//! the server namespace), and the kernel's run time of the programs
//! attached to the bench cgroup. This module starts it and reads its
//! figures; the arithmetic the reports are built from lives here too.
use std::net::SocketAddrV4;
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::Value;

use super::stats::Samples;
use super::{interrupted, Env};
use crate::cmd::output;

/// Client threads, each running connections back to back.
pub const CONCURRENCY: u32 = 8;

/// One path measured: where the client's sockets are made and where they
/// connect to.
pub struct Arm<'a> {
    pub name: &'a str,
    /// Network namespace (a name under /run/netns).
    pub netns: &'a str,
    /// Whether the sockets are made in the bench cgroup (Strait's socket
    /// programs, when attached there, run for them).
    pub cgroup: bool,
    /// Connection `i` of a batch goes to `addrs[i % len]`.
    pub addrs: Vec<SocketAddrV4>,
}

/// How many connections a round makes.
#[derive(Clone, Copy)]
pub struct Plan {
    /// Connections per batch (one arm, one pass).
    pub batch: u32,
    /// Recorded passes: each runs one batch of every arm.
    pub passes: u32,
    /// Unrecorded passes first.
    pub warmup: u32,
}

/// One batch of one arm.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub pass: u64,
    pub connections: u64,
    pub seconds: f64,
    /// Client process CPU time (user + system), µs.
    pub cpu_us: u64,
    /// Run time of every thread in the server namespace, µs.
    pub peer_cpu_us: u64,
    /// Runs and run time (ns) of the programs attached to the bench cgroup.
    pub bpf_runs: u64,
    pub bpf_ns: u64,
}

impl Batch {
    fn rate(&self) -> f64 {
        self.connections as f64 / self.seconds
    }
}

/// One arm's figures over a round.
#[derive(Clone, Debug, Default)]
pub struct ArmRun {
    pub batches: Vec<Batch>,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Per attached program: (name, runs, run time ns) over the round.
    pub programs: Vec<(String, u64, u64)>,
}

impl ArmRun {
    fn total<T: std::iter::Sum<T>>(&self, f: impl Fn(&Batch) -> T) -> T {
        self.batches.iter().map(f).sum()
    }

    /// Connections over the round.
    pub fn connections(&self) -> u64 {
        self.total(|b| b.connections)
    }

    /// Connections per second of batch time (every batch's connections
    /// over the sum of the batches' wall times).
    pub fn rate(&self) -> f64 {
        self.connections() as f64 / self.total(|b| b.seconds)
    }

    /// Client + backend CPU time per connection, µs.
    pub fn cpu_us_per_conn(&self) -> f64 {
        self.total(|b| b.cpu_us + b.peer_cpu_us) as f64 / self.connections() as f64
    }

    /// Run time of the bench cgroup's programs per connection, ns.
    pub fn bpf_ns_per_conn(&self) -> f64 {
        self.total(|b| b.bpf_ns) as f64 / self.connections() as f64
    }

    /// Program runs per connection.
    pub fn bpf_runs_per_conn(&self) -> f64 {
        self.total(|b| b.bpf_runs) as f64 / self.connections() as f64
    }

    /// Run time per connection (ns) of the attached program named `name`.
    pub fn program_ns_per_conn(&self, name: &str) -> Option<f64> {
        let (_, _, ns) = self.programs.iter().find(|(n, _, _)| n == name)?;
        Some(*ns as f64 / self.connections() as f64)
    }

    /// Pass by pass, this arm's batch rate over `base`'s batch rate in the
    /// same pass (the two batches ran next to each other).
    pub fn pass_ratios(&self, base: &ArmRun) -> Samples {
        Samples(
            self.batches
                .iter()
                .filter_map(|b| {
                    let x = base.batches.iter().find(|x| x.pass == b.pass)?;
                    Some(b.rate() / x.rate())
                })
                .collect(),
        )
    }
}

/// Runs one round of `plan` over `arms` and returns each arm's figures,
/// in `arms` order.
pub fn run(env: &Env, arms: &[Arm], plan: Plan) -> anyhow::Result<Vec<ArmRun>> {
    if interrupted() {
        bail!("interrupted");
    }
    let mut cmd = match env.cpus.load {
        Some(c) => {
            let mut t = Command::new("taskset");
            t.args(["-c", &c.to_string()]).arg(env.bin("bench-l4"));
            t
        }
        None => Command::new(env.bin("bench-l4")),
    };
    cmd.args(["--connections", &plan.batch.to_string()])
        .args(["--passes", &plan.passes.to_string()])
        .args(["--warmup", &plan.warmup.to_string()])
        .args(["--concurrency", &CONCURRENCY.to_string()]);
    for pid in server_pids(&env.topo.server) {
        cmd.args(["--peer-pid", &pid.to_string()]);
    }
    for a in arms {
        cmd.args(["--arm", a.name, "--netns", a.netns]);
        if a.cgroup {
            cmd.arg("--cgroup").arg(env.cgroup.path());
        }
        for addr in &a.addrs {
            cmd.args(["--addr", &addr.to_string()]);
        }
    }
    let out = cmd.output().context("running bench-l4")?;
    if !out.status.success() {
        bail!(
            "bench-l4 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("bench-l4 output")?;
    parse(&v, arms.len())
}

/// The pids of every process in network namespace `ns`.
fn server_pids(ns: &str) -> Vec<u32> {
    output(Command::new("ip").args(["netns", "pids", ns]))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// bench-l4's JSON into per-arm figures.
fn parse(v: &Value, arms: usize) -> anyhow::Result<Vec<ArmRun>> {
    let list = v["arms"].as_array().context("bench-l4 output lacks arms")?;
    if list.len() != arms {
        bail!("bench-l4 reported {} arms, {arms} expected", list.len());
    }
    let u = |v: &Value, k: &str| {
        v[k].as_u64()
            .with_context(|| format!("bench-l4 output lacks {k}"))
    };
    let f = |v: &Value, k: &str| {
        v[k].as_f64()
            .with_context(|| format!("bench-l4 output lacks {k}"))
    };
    list.iter()
        .map(|a| {
            let batches = a["batches"]
                .as_array()
                .context("bench-l4 output lacks batches")?
                .iter()
                .map(|b| {
                    Ok(Batch {
                        pass: u(b, "pass")?,
                        connections: u(b, "connections")?,
                        seconds: f(b, "seconds")?,
                        cpu_us: u(b, "cpu_us")?,
                        peer_cpu_us: u(b, "peer_cpu_us")?,
                        bpf_runs: u(b, "bpf_runs")?,
                        bpf_ns: u(b, "bpf_ns")?,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            if batches
                .iter()
                .any(|b| b.connections == 0 || b.seconds <= 0.0)
            {
                bail!("bench-l4: an empty batch in arm {}", a["name"]);
            }
            let programs = a["bpf"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(name, p)| Ok((name.clone(), u(p, "runs")?, u(p, "ns")?)))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
                .transpose()?
                .unwrap_or_default();
            Ok(ArmRun {
                batches,
                p50_us: f(a, "p50_us")?,
                p99_us: f(a, "p99_us")?,
                programs,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn batch(pass: u64, conns: u64, seconds: f64, cpu: u64, peer: u64, bpf: u64) -> Value {
        json!({"pass": pass, "seq": 0, "connections": conns, "errors": 0, "seconds": seconds,
               "cpu_us": cpu, "peer_cpu_us": peer, "vcsw": 0, "ivcsw": 0,
               "bpf_runs": bpf / 100, "bpf_ns": bpf})
    }

    fn output() -> Value {
        json!({"arms": [
            {"name": "direct", "p50_us": 400, "p99_us": 900,
             "bpf": {},
             "batches": [batch(0, 1000, 0.10, 30_000, 20_000, 0), batch(1, 1000, 0.05, 30_000, 20_000, 0)]},
            {"name": "vip", "p50_us": 410, "p99_us": 950,
             "bpf": {"connect4": {"runs": 2000, "ns": 200_000}, "orig_dst_sockop": {"runs": 14000, "ns": 1_400_000}},
             "batches": [batch(0, 1000, 0.11, 31_000, 20_000, 800_000), batch(1, 1000, 0.05, 31_000, 20_000, 800_000)]}
        ]})
    }

    #[test]
    fn rate_cpu_and_bpf_per_connection_over_the_round() {
        let arms = parse(&output(), 2).unwrap();
        // 2,000 connections in 0.15 s of batch time.
        assert!((arms[0].rate() - 2000.0 / 0.15).abs() < 1e-6);
        assert_eq!(arms[0].cpu_us_per_conn(), 50.0);
        assert_eq!(arms[1].cpu_us_per_conn(), 51.0);
        assert_eq!(arms[1].bpf_ns_per_conn(), 800.0);
        assert_eq!(arms[1].bpf_runs_per_conn(), 8.0);
        assert_eq!(arms[1].program_ns_per_conn("connect4"), Some(100.0));
        assert_eq!(arms[0].program_ns_per_conn("connect4"), None);
        assert_eq!(arms[1].p99_us, 950.0);
    }

    #[test]
    fn pass_ratios_pair_batches_of_the_same_pass() {
        let arms = parse(&output(), 2).unwrap();
        let r = arms[1].pass_ratios(&arms[0]);
        assert_eq!(r.0.len(), 2);
        assert!((r.0[0] - 0.10 / 0.11).abs() < 1e-12);
        assert!((r.0[1] - 1.0).abs() < 1e-12);
        // A baseline against itself: exactly 1 in every pass.
        assert!(arms[0].pass_ratios(&arms[0]).0.iter().all(|&x| x == 1.0));
    }

    #[test]
    fn malformed_output_is_an_error() {
        assert!(parse(&output(), 3).is_err());
        let mut v = output();
        v["arms"][0]["batches"][0]["seconds"] = json!(0.0);
        assert!(parse(&v, 2).is_err());
        v["arms"][0]["batches"][0] = json!({"pass": 0});
        assert!(parse(&v, 2).is_err());
    }
}
