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

use super::netns::{self, SERVER_IP, VIP_NET};
use super::procs::{in_ns, Proc};
use super::report::{Section, Table};
use super::stats::Samples;
use super::{interrupted, Env};
use crate::cmd::step;

/// Service counts measured.
pub const SIZES: [usize; 3] = [1, 1_000, 10_000];
/// Backend ports of the measured service (bench-backend `--tcp`).
pub const BACKEND_PORTS: [u16; 3] = [8080, 8081, 8082];
/// The port every service VIP exposes.
const SERVICE_PORT: u16 = 80;
/// Client threads, each running connections back to back.
const CONCURRENCY: u32 = 8;

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

/// One bench-l4 run's figures.
pub(super) struct Run {
    pub rate: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Runs `bench-l4` in namespace `ns` against `addr` (`conns` connections;
/// inside the bench cgroup when `cgroup`, so Strait's socket programs apply).
pub(super) fn run_client(
    env: &Env,
    ns: &str,
    addr: SocketAddrV4,
    conns: u32,
    cgroup: bool,
) -> anyhow::Result<Run> {
    if interrupted() {
        bail!("interrupted");
    }
    let mut cmd = in_ns(ns, env.cpus.load, env.bin("bench-l4"));
    cmd.args(["--addr", &addr.to_string()])
        .args(["--connections", &conns.to_string()])
        .args(["--concurrency", &CONCURRENCY.to_string()]);
    if cgroup {
        // `ip netns exec` mounts a fresh /sys, hiding the cgroup2 mount, so
        // join the cgroup first: a shell moves itself in, then execs (same
        // pid) into `ip netns exec ... bench-l4`.
        let mut wrapped = std::process::Command::new("sh");
        wrapped
            .arg("-c")
            .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
            .arg(env.cgroup.path())
            .arg(cmd.get_program())
            .args(cmd.get_args());
        cmd = wrapped;
    }
    let out = cmd.output().context("running bench-l4")?;
    if !out.status.success() {
        bail!(
            "bench-l4 to {addr} in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("bench-l4 output")?;
    let f = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("bench-l4 output lacks {k}"))
    };
    Ok(Run {
        rate: f("rate")?,
        p50_us: f("p50_us")?,
        p99_us: f("p99_us")?,
    })
}

/// Figures of one contender over the runs.
#[derive(Default)]
struct Figures {
    rate: Samples,
    p50: Samples,
    p99: Samples,
}

impl Figures {
    fn push(&mut self, r: Run) {
        self.rate.push(r.rate);
        self.p50.push(r.p50_us);
        self.p99.push(r.p99_us);
    }
}

const CONTENDERS: [&str; 3] = [
    "direct (backend pod IP)",
    "Strait VIP (cgroup/connect4)",
    "iptables DNAT VIP (kube-proxy chains)",
];

/// Runs the L4 suite and returns its section.
pub fn run(env: &Env) -> anyhow::Result<Section> {
    // Each run lasts about a second at least (shorter runs are dominated by
    // scheduler noise on a 2-core machine), and L4 gets more rounds than the
    // other suites because its runs are cheap and the target is a 5% margin.
    let conns: u32 = if env.quick { 10_000 } else { 30_000 };
    let runs = env.runs * 2 + 1;
    let mut tables = Vec::new();
    let mut raw = Vec::new();
    for n in SIZES {
        step(&format!(
            "L4: {n} services, {runs} runs of {conns} connections per contender"
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

        let vip = svcs[target(n)].vip;
        let direct = SocketAddrV4::new(SERVER_IP, BACKEND_PORTS[0]);
        let client = env.topo.client.clone();
        let kube = env.topo.kube.clone();
        let paths: [(&str, SocketAddrV4, bool); 3] = [
            (&client, direct, false),
            (&client, vip, true),
            (&kube, vip, false),
        ];
        // Warm-up (not recorded): caches, conntrack, page faults, CPU
        // frequency; as long as one measured run.
        for (ns, addr, cg) in paths {
            run_client(env, ns, addr, conns, cg)?;
        }
        let mut figs: [Figures; 3] = Default::default();
        // Interleave contenders within each round so drift hits all alike,
        // and rotate who goes first so no contender always follows the
        // slow iptables run or the pause between sizes.
        for round in 0..runs {
            for k in 0..paths.len() {
                let i = (round + k) % paths.len();
                let (ns, addr, cg) = paths[i];
                figs[i].push(run_client(env, ns, addr, conns, cg)?);
            }
        }
        dp.check_alive()?;
        drop(dp);

        let rows = CONTENDERS
            .iter()
            .zip(&figs)
            .map(|(name, f)| {
                vec![
                    name.to_string(),
                    f.rate.cell(0, Some(&figs[0].rate)),
                    f.rate
                        .paired_ratios(&figs[0].rate)
                        .map_or("n/a".into(), |r| r.cell(3, None)),
                    f.p50.cell(0, Some(&figs[0].p50)),
                    f.p99.cell(0, Some(&figs[0].p99)),
                ]
            })
            .collect();
        let mut notes = vec![format!(
            "Rules/maps load time for {} service(s): Strait {strait_load:.2} s (load + attach + map writes), iptables-restore {ipt_load:.2} s.",
            super::stats::num(n as f64, 0)
        )];
        let paired = |f: &Figures| f.rate.paired_ratios(&figs[0].rate)?.median();
        if let (Some(s), Some(i)) = (paired(&figs[1]), paired(&figs[2])) {
            notes.push(format!(
                "Connection rate relative to direct (median of the {runs} paired rounds): Strait {:+.1}%, iptables {:+.1}%.",
                (s - 1.0) * 100.0,
                (i - 1.0) * 100.0
            ));
        }
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
                "p50 µs".into(),
                "p99 µs".into(),
            ],
            rows,
            notes,
        });
        raw.push(json!({
            "services": n,
            "connections_per_run": conns,
            "runs": runs,
            "concurrency": CONCURRENCY,
            "load_seconds": {"strait": strait_load, "iptables": ipt_load},
            "contenders": CONTENDERS.iter().zip(&figs).map(|(name, f)| json!({
                "name": name, "connections_per_s": f.rate.json(),
                "rate_over_direct_paired": f.rate.paired_ratios(&figs[0].rate).map(|r| r.json()),
                "p50_us": f.p50.json(), "p99_us": f.p99.json(),
            })).collect::<Vec<_>>(),
        }));
    }
    Ok(Section {
        title: "L4: TCP connect + request + close".into(),
        intro: vec![format!(
            "Client `bench-l4` (tests/src/bin/bench-l4.rs): {CONCURRENCY} threads, each connection is connect → write `PING\\n` → read `OK\\n` to EOF → close; latency from connect() to EOF, HDR histogram. \
             Backend `bench-backend --tcp` on 198.18.0.2:{{8080,8081,8082}} in the server namespace; the measured service has those three endpoints, the others two unused endpoints each; VIPs in {VIP_NET}. \
             Each round runs every contender back to back, the first one rotating; one unrecorded warm-up run per contender precedes the rounds. \
             Cells: median of the runs (min–max) and ×ratio of medians to direct; \"rate ÷ direct, same round\" is each round's rate over direct's rate in that round (median, min–max), which cancels drift between rounds. For latency, lower is better."
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
