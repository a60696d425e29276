//! `cargo xtask bench l4-counters`: what the sockops `TCP_STATS` counters
//! (Istio's `istio_tcp_*` for kernel-balanced connections, issue 19) cost
//! per connection. One service, the L4 suite's client and backend; each
//! round holds Strait's data path twice, once loaded with the counters on
//! and once with them off (`bench-datapath --no-tcp-stats`: the sockops
//! program neither counts nor asks for state callbacks), and runs direct
//! and Strait's VIP under each. Two figures:
//!
//! - the sockops program's kernel run time per connection (BPF run-time
//!   statistics over every event of every connection through the cgroup),
//!   on minus off: the counters' own CPU cost (target ≤ 0.2 µs);
//! - the connection rate of Strait's VIP over direct's in the same round,
//!   counters on (target: within 5%), and on over off.
use std::net::SocketAddrV4;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;

use super::l4::{self, run_client, BACKEND_PORTS};
use super::netns::{self, SERVER_IP};
use super::procs::Proc;
use super::report::{Section, Table};
use super::stats::{num, Samples};
use super::Env;
use crate::cmd::step;

/// Section title in results.md.
pub const TITLE: &str = "L4 counters: TCP_STATS cost per kernel-balanced connection";

/// Target of issue 19: added sockops time per connection, µs.
const TARGET_ADDED_US: f64 = 0.2;
/// Target of issue 19: Strait's connection rate within this of direct's.
const TARGET_WITHIN: f64 = 0.05;

/// One data-path lifetime's figures.
struct Held {
    direct: f64,
    strait: f64,
    /// Sockops kernel run time per connection through the cgroup, ns.
    sockops_ns: f64,
    /// Sockops runs per connection.
    runs_per_conn: f64,
    /// Connections `TCP_STATS` counted opened.
    opened: u64,
}

/// Holds the data path (`counters` on or off) for one direct and one
/// Strait run of `conns` connections each.
fn hold(env: &Env, file: &std::path::Path, counters: bool, conns: u32) -> anyhow::Result<Held> {
    let node = netns::pin_node();
    let _pins = netns::PinGuard(node.clone());
    let mut cmd = std::process::Command::new(env.bin("bench-datapath"));
    cmd.args(["--node", &node])
        .arg("--cgroup")
        .arg(env.cgroup.path())
        .arg("--services")
        .arg(file);
    if !counters {
        cmd.arg("--no-tcp-stats");
    }
    let mut dp = Proc::spawn("bench-datapath", cmd)?;
    dp.wait_line("ready", Duration::from_secs(120))?;
    let svcs = l4::services(1);
    let vip = svcs[l4::target(1)].vip;
    let direct = SocketAddrV4::new(SERVER_IP, BACKEND_PORTS[0]);
    let d = run_client(env, &env.topo.client, direct, conns, false)?;
    let s = run_client(env, &env.topo.client, vip, conns, true)?;
    dp.close_stdin();
    let line = dp.wait_line("sockops", Duration::from_secs(60))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!("bench-datapath: `sockops <runs> <ns> <opened>` expected, got {line:?}")
        })?;
    let [runs, ns, opened] = f[..] else {
        bail!("bench-datapath: `sockops <runs> <ns> <opened>` expected, got {line:?}");
    };
    if counters && opened < u64::from(conns) {
        bail!("counters on, yet TCP_STATS counted {opened} of {conns} connections opened");
    }
    if !counters && opened != 0 {
        bail!("counters off, yet TCP_STATS counted {opened} connections");
    }
    Ok(Held {
        direct: d.rate,
        strait: s.rate,
        sockops_ns: ns as f64 / f64::from(conns),
        runs_per_conn: runs as f64 / f64::from(conns),
        opened,
    })
}

/// Runs the case and returns its section.
pub fn run(env: &Env) -> anyhow::Result<Section> {
    let conns: u32 = if env.quick { 10_000 } else { 20_000 };
    let rounds = env.runs * 2 + 1;
    let file = env.tmp.join("l4-counters-services.txt");
    let svc = &l4::services(1)[0];
    let eps: Vec<String> = svc.endpoints.iter().map(|e| e.to_string()).collect();
    std::fs::write(&file, format!("{} {}\n", svc.vip, eps.join(",")))?;
    step(&format!(
        "L4 counters: {rounds} rounds, counters on and off, {conns} connections per run"
    ));
    // Warm-up, not recorded.
    hold(env, &file, true, conns)?;
    let mut direct = Samples::default();
    let mut on = Samples::default();
    let mut off = Samples::default();
    let mut on_vs_direct = Samples::default();
    let mut off_vs_direct = Samples::default();
    let mut on_vs_off = Samples::default();
    let mut ns_on = Samples::default();
    let mut ns_off = Samples::default();
    let mut added = Samples::default();
    let mut runs_on = Samples::default();
    let mut runs_off = Samples::default();
    for round in 0..rounds {
        // Alternate which goes first, so drift hits both alike.
        let (a, b) = if round % 2 == 0 {
            let a = hold(env, &file, true, conns)?;
            (a, hold(env, &file, false, conns)?)
        } else {
            let b = hold(env, &file, false, conns)?;
            (hold(env, &file, true, conns)?, b)
        };
        direct.push((a.direct + b.direct) / 2.0);
        on.push(a.strait);
        off.push(b.strait);
        on_vs_direct.push(a.strait / a.direct);
        off_vs_direct.push(b.strait / b.direct);
        on_vs_off.push(a.strait / b.strait);
        ns_on.push(a.sockops_ns);
        ns_off.push(b.sockops_ns);
        added.push((a.sockops_ns - b.sockops_ns) / 1000.0);
        runs_on.push(a.runs_per_conn);
        runs_off.push(b.runs_per_conn);
        debug_assert!(a.opened > 0 && b.opened == 0);
    }
    let added_us = added.median().unwrap_or(f64::NAN);
    let within = on_vs_direct.median().unwrap_or(f64::NAN);
    let met = |ok: bool| if ok { "met" } else { "not met" };
    let rows = vec![
        vec![
            "direct (backend pod IP)".into(),
            direct.cell(0, None),
            "1.000".into(),
            "—".into(),
            "—".into(),
        ],
        vec![
            "Strait VIP, counters off".into(),
            off.cell(0, Some(&direct)),
            off_vs_direct.cell(3, None),
            ns_off.cell(0, None),
            runs_off.cell(1, None),
        ],
        vec![
            "Strait VIP, counters on (default)".into(),
            on.cell(0, Some(&direct)),
            on_vs_direct.cell(3, None),
            ns_on.cell(0, None),
            runs_on.cell(1, None),
        ],
    ];
    let notes = vec![
        format!(
            "Added by the counters per connection (sockops run time on − off, same round, median): {} µs ({}); target ≤ {TARGET_ADDED_US} µs: {}.",
            num(added_us, 3),
            added.cell(3, None),
            met(added_us <= TARGET_ADDED_US)
        ),
        format!(
            "Strait VIP ÷ direct with the counters on (same round, median): {within:.3}; target within {:.0}%: {}. Counters on ÷ off: {}.",
            TARGET_WITHIN * 100.0,
            met(within >= 1.0 - TARGET_WITHIN),
            on_vs_off.cell(3, None)
        ),
    ];
    Ok(Section {
        title: TITLE.into(),
        intro: vec![format!(
            "`cargo xtask bench l4-counters{}`: one service with three endpoints, the L4 suite's client (`bench-l4`, 8 threads, connect → `PING` → `OK` → close) and backend. \
             Each of {rounds} rounds holds Strait's data path (`bench-datapath`, as the daemon sets it up) twice, once with the `TCP_STATS` counters on and once loaded with them off (`DatapathConfig::tcp_stats`; the order alternates), and under each runs {conns} connections direct and {conns} through Strait's VIP. \
             \"sockops ns per connection\" is the kernel's run-time statistics (`bpf_stats_enabled`) of the sockops program over every event of every connection through the cgroup, divided by the connections; the counters add one `TCP_STATS` update when the connection is established and the state-callback runs until its counts are final (then it is counted closed and the callback turned off): one when the client closes first, two (`CLOSE_WAIT`, then `LAST_ACK`) when the backend does, as `bench-backend` does here. \
             The end-to-end rates move by more than that between runs on this shared machine; the run-time difference is the cost.",
            if env.quick { " --quick" } else { "" }
        )],
        tables: vec![Table {
            title: "L4 counters: 1 service".into(),
            columns: vec![
                "path".into(),
                "connections/s".into(),
                "rate ÷ direct, same round".into(),
                "sockops ns per connection".into(),
                "sockops runs per connection".into(),
            ],
            rows,
            notes,
        }],
        json: json!({
            "connections_per_run": conns,
            "rounds": rounds,
            "direct": direct.json(),
            "strait_counters_on": on.json(),
            "strait_counters_off": off.json(),
            "on_over_direct": on_vs_direct.json(),
            "off_over_direct": off_vs_direct.json(),
            "on_over_off": on_vs_off.json(),
            "sockops_ns_per_connection_on": ns_on.json(),
            "sockops_ns_per_connection_off": ns_off.json(),
            "added_us_per_connection": added.json(),
        }),
    })
}
