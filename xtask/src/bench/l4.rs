//! `cargo xtask bench l4`: TCP connect + request + close through three
//! paths, with 1, 1,000 and 10,000 services configured:
//!
//! - direct: the client connects to the backend's (pod) IP;
//! - Strait: the client is in a cgroup with Strait's `cgroup/connect4`
//!   program attached and connects to a service VIP; the kernel picks a
//!   backend once, at connect(), from the SERVICES/BACKENDS hash maps;
//! - iptables: the client's namespace has the nat table kube-proxy's
//!   iptables mode writes (KUBE-SERVICES → KUBE-SVC-* → KUBE-SEP-* with
//!   `-m statistic --mode random --probability`), loaded by iptables-restore.
//!
//! Every configured service has its own VIP; the one measured sits in the
//! middle of KUBE-SERVICES (kube-proxy's order follows service names, so a
//! random service is on average half-way down that linear chain).
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::l4_client::{self, Arm, ArmRun, Plan, CONCURRENCY};
use super::netns::{self, SERVER_IP, VIP_NET};
use super::procs::{in_ns, Proc};
use super::report::{Section, Table};
use super::stats::Samples;
use super::Env;
use crate::cmd::step;

/// Service counts measured.
pub const SIZES: [usize; 3] = [1, 1_000, 10_000];
/// Backend ports of the measured service (bench-backend `--tcp`).
pub const BACKEND_PORTS: [u16; 3] = [8080, 8081, 8082];
/// The port every service VIP exposes.
const SERVICE_PORT: u16 = 80;

/// One L4 service: a VIP and its endpoints.
pub struct Service {
    pub vip: SocketAddrV4,
    pub endpoints: Vec<SocketAddrV4>,
}

/// `n` services with VIPs from 198.19.0.1 up; the one at [`target`] has
/// the real backends, the others two endpoints each on addresses nothing
/// uses (they are configured, never connected to).
pub fn services(n: usize) -> Vec<Service> {
    let base = u32::from(Ipv4Addr::new(198, 19, 0, 1));
    (0..n)
        .map(|i| {
            let vip = SocketAddrV4::new(Ipv4Addr::from(base + i as u32), SERVICE_PORT);
            let endpoints = if i == target(n) {
                BACKEND_PORTS
                    .iter()
                    .map(|&p| SocketAddrV4::new(SERVER_IP, p))
                    .collect()
            } else {
                (0..2)
                    .map(|k| {
                        SocketAddrV4::new(
                            Ipv4Addr::new(198, 18, 1, (1 + (2 * i + k) % 250) as u8),
                            80,
                        )
                    })
                    .collect()
            };
            Service { vip, endpoints }
        })
        .collect()
}

/// Index of the measured service among `n`.
pub fn target(n: usize) -> usize {
    n / 2
}

/// The nat table kube-proxy's iptables mode programs for `svcs`, in
/// iptables-restore format (client CIDR 198.18.0.0/16 as clusterCIDR).
pub fn kube_proxy_rules(svcs: &[Service]) -> String {
    let mut chains = String::new();
    let mut rules = String::new();
    for c in [
        "KUBE-SERVICES",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
        "KUBE-NODEPORTS",
    ] {
        let _ = writeln!(chains, ":{c} - [0:0]");
    }
    rules.push_str(
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    rules.push_str("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n");
    rules.push_str("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n");
    rules.push_str("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n");
    rules.push_str("-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n");
    rules.push_str("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n");
    let mut per_service = String::new();
    for (i, s) in svcs.iter().enumerate() {
        let name = format!("bench/svc-{i}:http");
        let svc_chain = chain_name("KUBE-SVC-", &format!("{name}tcp"));
        let _ = writeln!(chains, ":{svc_chain} - [0:0]");
        let (vip, port) = (s.vip.ip(), s.vip.port());
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m tcp --dport {port} -j {svc_chain}"
        );
        let _ = writeln!(
            per_service,
            "-A {svc_chain} ! -s 198.18.0.0/16 -d {vip}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m tcp --dport {port} -j KUBE-MARK-MASQ"
        );
        let n = s.endpoints.len();
        for (k, ep) in s.endpoints.iter().enumerate() {
            let sep = chain_name("KUBE-SEP-", &format!("{name}tcp{ep}"));
            let _ = writeln!(chains, ":{sep} - [0:0]");
            if k + 1 < n {
                // kube-proxy: probability 1/(n-k) to pick endpoint k among the rest.
                let _ = writeln!(
                    per_service,
                    "-A {svc_chain} -m comment --comment \"{name} -> {ep}\" -m statistic --mode random --probability {:.10} -j {sep}",
                    1.0 / (n - k) as f64
                );
            } else {
                let _ = writeln!(
                    per_service,
                    "-A {svc_chain} -m comment --comment \"{name} -> {ep}\" -j {sep}"
                );
            }
            let _ = writeln!(
                per_service,
                "-A {sep} -s {}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ",
                ep.ip()
            );
            let _ = writeln!(
                per_service,
                "-A {sep} -p tcp -m comment --comment \"{name}\" -m tcp -j DNAT --to-destination {ep}"
            );
        }
    }
    rules.push_str("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n");
    format!("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n{chains}{rules}{per_service}COMMIT\n")
}

/// `prefix` + 16 base32 characters of a hash of `key`, the shape of
/// kube-proxy's chain names (which hash with SHA-256; any stable hash does).
fn chain_name(prefix: &str, key: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let fnv = |seed: u64| {
        key.bytes()
            .fold(seed, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
    };
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    let mut s = String::from(prefix);
    for i in 0..16 {
        let v = if i < 12 {
            a >> (i * 5)
        } else {
            b >> ((i - 12) * 5)
        };
        s.push(ALPHABET[(v & 31) as usize] as char);
    }
    s
}

const CONTENDERS: [&str; 3] = [
    "direct (backend pod IPs)",
    "Strait VIP (cgroup/connect4)",
    "iptables DNAT VIP (kube-proxy chains)",
];

/// The rounds of one service count: per contender, one [`ArmRun`] a round.
fn measure(
    env: &Env,
    svcs: &[Service],
    n: usize,
    rounds: usize,
    plan: Plan,
) -> anyhow::Result<[Vec<ArmRun>; 3]> {
    let target = &svcs[target(n)];
    let arms = [
        // Direct goes round-robin over the same three backends the VIPs
        // spread over, so every path loads the backend alike.
        Arm {
            name: "direct",
            netns: &env.topo.client,
            cgroup: false,
            addrs: target.endpoints.clone(),
        },
        Arm {
            name: "strait",
            netns: &env.topo.client,
            cgroup: true,
            addrs: vec![target.vip],
        },
        Arm {
            name: "iptables",
            netns: &env.topo.kube,
            cgroup: false,
            addrs: vec![target.vip],
        },
    ];
    let mut out: [Vec<ArmRun>; 3] = Default::default();
    for _ in 0..rounds {
        for (i, r) in l4_client::run(env, &arms, plan)?.into_iter().enumerate() {
            out[i].push(r);
        }
    }
    Ok(out)
}

/// Per round, `f` of each run.
fn per_round(runs: &[ArmRun], f: impl Fn(&ArmRun) -> f64) -> Samples {
    Samples(runs.iter().map(f).collect())
}

/// Per round, the arm's rate over the baseline's rate in the same round.
pub(super) fn round_ratios(runs: &[ArmRun], base: &[ArmRun]) -> Samples {
    Samples(
        runs.iter()
            .zip(base)
            .map(|(r, b)| r.rate() / b.rate())
            .collect(),
    )
}

/// Every pass of every round: the arm's batch rate over the baseline's
/// batch of the same pass.
pub(super) fn all_pass_ratios(runs: &[ArmRun], base: &[ArmRun]) -> Samples {
    Samples(
        runs.iter()
            .zip(base)
            .flat_map(|(r, b)| r.pass_ratios(b).0)
            .collect(),
    )
}

/// Runs the L4 suite and returns its section.
pub fn run(env: &Env) -> anyhow::Result<Section> {
    // Per round and contender 10 (quick) or 15 passes of 1,000 or 2,000
    // connections, the contenders alternating batch by batch; L4 gets more
    // rounds than the other suites because its runs are cheap and the
    // target is a 5% margin.
    let plan = Plan {
        batch: if env.quick { 1_000 } else { 2_000 },
        passes: if env.quick { 10 } else { 15 },
        warmup: 1,
    };
    let rounds = env.runs * 2 + 1;
    let mut tables = Vec::new();
    let mut raw = Vec::new();
    for n in SIZES {
        step(&format!(
            "L4: {n} services, {rounds} rounds of {} passes × {} connections per contender",
            plan.passes, plan.batch
        ));
        let svcs = services(n);
        let file = env.tmp.join(format!("l4-services-{n}.txt"));
        let text: String = svcs
            .iter()
            .map(|s| {
                let eps: Vec<String> = s.endpoints.iter().map(|e| e.to_string()).collect();
                format!("{} {}\n", s.vip, eps.join(","))
            })
            .collect();
        std::fs::write(&file, text)?;

        // Strait: the daemon's Datapath, held by a helper process.
        let node = netns::pin_node();
        let _pins = netns::PinGuard(node.clone());
        let mut dp = Proc::spawn("bench-datapath", {
            let mut c = std::process::Command::new(env.bin("bench-datapath"));
            c.args(["--node", &node])
                .arg("--cgroup")
                .arg(env.cgroup.path())
                .arg("--services")
                .arg(&file);
            c
        })?;
        let ready = dp.wait_line("ready", Duration::from_secs(120))?;
        let strait_load = ready
            .split_whitespace()
            .nth(2)
            .and_then(|ms| ms.parse::<f64>().ok())
            .context("bench-datapath: `ready <services> <ms>` expected")?
            / 1000.0;

        // iptables: the whole nat table replaced, as kube-proxy does.
        let rules = env.tmp.join(format!("l4-iptables-{n}.rules"));
        std::fs::write(&rules, kube_proxy_rules(&svcs))?;
        let t = Instant::now();
        let status = in_ns(&env.topo.kube, None, "iptables-restore")
            .arg(&rules)
            .status()
            .context("running iptables-restore")?;
        if !status.success() {
            bail!("iptables-restore {} failed with {status}", rules.display());
        }
        let ipt_load = t.elapsed().as_secs_f64();

        let figs = measure(env, &svcs, n, rounds, plan)?;
        dp.check_alive()?;
        drop(dp);

        let direct = &figs[0];
        let rows = CONTENDERS
            .iter()
            .zip(&figs)
            .map(|(name, f)| {
                let rate = per_round(f, ArmRun::rate);
                vec![
                    name.to_string(),
                    rate.cell(0, Some(&per_round(direct, ArmRun::rate))),
                    round_ratios(f, direct).cell(3, None),
                    per_round(f, ArmRun::cpu_us_per_conn).cell(1, None),
                    per_round(f, |r| r.p50_us).cell(0, Some(&per_round(direct, |r| r.p50_us))),
                    per_round(f, |r| r.p99_us).cell(0, Some(&per_round(direct, |r| r.p99_us))),
                ]
            })
            .collect();
        let mut notes = vec![format!(
            "Rules/maps load time for {} service(s): Strait {strait_load:.2} s (load + attach + map writes), iptables-restore {ipt_load:.2} s.",
            super::stats::num(n as f64, 0)
        )];
        let passes = all_pass_ratios(&figs[1], direct);
        notes.push(format!(
            "Connection rate relative to direct, batch by batch ({} passes: median [95% interval]): Strait {}, iptables {}. Strait's socket programs ran {} ns per connection ({} runs).",
            passes.0.len(),
            passes.interval_cell(3),
            all_pass_ratios(&figs[2], direct).interval_cell(3),
            per_round(&figs[1], ArmRun::bpf_ns_per_conn).cell(0, None),
            per_round(&figs[1], ArmRun::bpf_runs_per_conn).cell(1, None),
        ));
        tables.push(Table {
            title: format!(
                "L4: {} service{}",
                super::stats::num(n as f64, 0),
                if n == 1 { "" } else { "s" }
            ),
            columns: vec![
                "path".into(),
                "connections/s".into(),
                "rate ÷ direct, same round".into(),
                "CPU µs per connection".into(),
                "p50 µs".into(),
                "p99 µs".into(),
            ],
            rows,
            notes,
        });
        raw.push(json!({
            "services": n,
            "connections_per_batch": plan.batch,
            "passes_per_round": plan.passes,
            "rounds": rounds,
            "concurrency": CONCURRENCY,
            "load_seconds": {"strait": strait_load, "iptables": ipt_load},
            "contenders": CONTENDERS.iter().zip(&figs).map(|(name, f)| json!({
                "name": name,
                "connections_per_s": per_round(f, ArmRun::rate).json(),
                "rate_over_direct_per_round": round_ratios(f, direct).json(),
                "rate_over_direct_per_pass": all_pass_ratios(f, direct).json(),
                "cpu_us_per_connection": per_round(f, ArmRun::cpu_us_per_conn).json(),
                "bpf_ns_per_connection": per_round(f, ArmRun::bpf_ns_per_conn).json(),
                "p50_us": per_round(f, |r| r.p50_us).json(),
                "p99_us": per_round(f, |r| r.p99_us).json(),
            })).collect::<Vec<_>>(),
        }));
    }
    Ok(Section {
        title: "L4: TCP connect + request + close".into(),
        intro: vec![format!(
            "Client `bench-l4` (tests/src/bin/bench-l4.rs): {CONCURRENCY} threads, each connection is connect → write `PING\\n` → read `OK\\n` to EOF → close; latency from connect() to EOF, HDR histogram. \
             Backend `bench-backend --tcp` on 198.18.0.2:{{8080,8081,8082}} in the server namespace; the measured service has those three endpoints, the others two unused endpoints each; VIPs in {VIP_NET}. \
             Method (since 2026-12-05): one client process per round measures the three paths in alternating batches of {} connections ({} passes, the order reversing every pass: direct, Strait, iptables, then iptables, Strait, direct; one unrecorded pass first), so the machine's drift hits them alike; direct connects round-robin to the same three backends the VIPs spread over (before: one backend, each path a separate process of 10,000–30,000 connections). \
             Cells: median over the {rounds} rounds (min–max) and ×ratio of medians to direct; \"rate ÷ direct, same round\" is each round's rate over direct's rate in that round; the notes give the batch-by-batch ratio with a 95% interval for its median (sign test). \
             \"CPU µs per connection\": user + system time of the client process and every thread in the server namespace (the backend) over the batches, the kernel's network work done in their context included, per connection. For latency, lower is better.",
            plan.batch, plan.passes
        )],
        tables,
        json: Value::Array(raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_proxy_chains_for_three_endpoints() {
        let svcs = services(1);
        let r = kube_proxy_rules(&svcs);
        let svc = chain_name("KUBE-SVC-", "bench/svc-0:httptcp");
        assert!(r.starts_with("*nat\n") && r.ends_with("COMMIT\n"));
        assert!(r.contains(&format!(
            "-A KUBE-SERVICES -d 198.19.0.1/32 -p tcp -m comment --comment \"bench/svc-0:http cluster IP\" -m tcp --dport 80 -j {svc}"
        )));
        // Endpoint k of 3 is taken with probability 1/(3-k), the last always.
        assert!(r.contains("--probability 0.3333333333 -j KUBE-SEP-"));
        assert!(r.contains("--probability 0.5000000000 -j KUBE-SEP-"));
        assert_eq!(r.matches(&format!("-A {svc} -m comment")).count(), 3);
        assert_eq!(
            r.matches("-j DNAT --to-destination 198.18.0.2:808").count(),
            3
        );
        // The nodeports jump stays last in KUBE-SERVICES.
        let last = r
            .lines()
            .rfind(|l| l.starts_with("-A KUBE-SERVICES"))
            .unwrap();
        assert!(last.contains("KUBE-NODEPORTS"), "{last}");
    }

    #[test]
    fn measured_service_is_in_the_middle_and_vips_are_unique() {
        let svcs = services(1000);
        assert_eq!(target(1000), 500);
        assert_eq!(svcs[500].endpoints[0], SocketAddrV4::new(SERVER_IP, 8080));
        let mut vips: Vec<_> = svcs.iter().map(|s| s.vip).collect();
        vips.dedup();
        assert_eq!(vips.len(), 1000);
        assert_eq!(services(10_000)[9_999].vip.ip().octets()[..2], [198, 19]);
    }

    #[test]
    fn chain_names_are_stable_and_distinct() {
        let a = chain_name("KUBE-SEP-", "x");
        assert_eq!(a, chain_name("KUBE-SEP-", "x"));
        assert_ne!(a, chain_name("KUBE-SEP-", "y"));
        assert_eq!(a.len(), "KUBE-SEP-".len() + 16);
    }
}
