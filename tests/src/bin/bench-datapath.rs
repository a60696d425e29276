//! Holds Strait's socket data path for `cargo xtask bench l4`, set up as
//! the daemon sets it up: [`strait::datapath::Datapath`] loads the eBPF
//! object with its maps pinned under `/sys/fs/bpf/strait/<node>/`, attaches
//! the socket programs (connect4/6, sendmsg4, recvmsg4, getpeername4,
//! sockops) to a cgroup, and writes a table of L4 services (mode L4,
//! weighted random). It keeps them until its stdin closes (the bench closes
//! it, or dies), then detaches everything and removes its pins.
//!
//! `bench-datapath --node NAME --cgroup DIR --services FILE [--no-tcp-stats]`
//!
//! FILE has one service a line: `VIP:PORT BACKEND:PORT[,BACKEND:PORT...]`
//! (IPv4, TCP). Prints `ready <services> <milliseconds>` once every entry
//! is written (the time is for load + attach + apply), and at exit
//! `sockops <runs> <total ns> <connections counted opened>` (the kernel's
//! run-time statistics of the sockops program while it was held).
//! `--no-tcp-stats` loads the programs with the `TCP_STATS` counters off
//! (`DatapathConfig::tcp_stats`), to measure what they cost.
use std::io::Read;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use anyhow::{bail, Context};
use strait::datapath::{
    Datapath, DatapathConfig, L4Backend, L4LoadBalancer, L4Mode, L4Protocol, L4Service,
};

fn parse(text: &str, file: &str) -> anyhow::Result<Vec<(SocketAddrV4, Vec<SocketAddrV4>)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let ctx = || format!("{file}:{}: expected `VIP:PORT BACKEND:PORT[,...]`", n + 1);
        let (vip, backends) = line.split_once(' ').with_context(ctx)?;
        let vip = vip.parse().with_context(ctx)?;
        let backends = backends
            .split(',')
            .map(|b| b.trim().parse())
            .collect::<Result<Vec<_>, _>>()
            .with_context(ctx)?;
        out.push((vip, backends));
    }
    Ok(out)
}

fn run() -> anyhow::Result<()> {
    let mut node = None;
    let mut cgroup = None;
    let mut services = None;
    let mut tcp_stats = true;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--node" => node = it.next(),
            "--cgroup" => cgroup = it.next().map(PathBuf::from),
            "--services" => services = it.next(),
            "--no-tcp-stats" => tcp_stats = false,
            other => bail!("unknown argument {other}"),
        }
    }
    let (Some(node), Some(cgroup), Some(file)) = (node, cgroup, services) else {
        bail!("usage: bench-datapath --node NAME --cgroup DIR --services FILE");
    };
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
    let table = parse(&text, &file)?;

    let services: Vec<L4Service> = table
        .iter()
        .enumerate()
        .map(|(i, (vip, backends))| L4Service {
            host: format!("svc-{i}.bench.svc.cluster.local"),
            vip: (*vip.ip()).into(),
            port: vip.port(),
            protocol: L4Protocol::Tcp,
            mode: L4Mode::L4,
            load_balancer: L4LoadBalancer::Random,
            backends: backends
                .iter()
                .map(|b| L4Backend {
                    addr: SocketAddr::V4(*b),
                    weight: 1,
                    healthy: true,
                })
                .collect(),
        })
        .collect();

    let start = std::time::Instant::now();
    let mut dp = Datapath::new(&DatapathConfig {
        tcp_stats,
        ..DatapathConfig::new(node)
    })?;
    let result = dp
        .attach(&cgroup)
        .and_then(|()| dp.apply(&services).map(|_| ()));
    if let Err(e) = result {
        let _ = dp.cleanup();
        return Err(e);
    }
    println!(
        "ready {} {}",
        dp.service_count(),
        start.elapsed().as_millis()
    );
    // The kernel counts each program's runs and run time while this is
    // held: the cost per connection printed at exit.
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();
    // Block until the bench closes our stdin, then detach and unpin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    if stats.is_some() {
        report(&dp);
    }
    dp.cleanup()
}

/// Prints (stderr) each socket program's runs and mean run time, and the
/// sockops program's time per kernel-balanced connection (the connections
/// its `TCP_STATS` counted opened): what the per-connection telemetry
/// costs, all events of a connection included.
fn report(dp: &Datapath) {
    let opened: u64 = dp
        .tcp_stats()
        .map(|s| s.iter().map(|(_, v)| v.opened).sum())
        .unwrap_or(0);
    for (name, runs, time) in dp.program_stats() {
        if name == strait::datapath::programs::SOCKOPS {
            println!("sockops {runs} {} {opened}", time.as_nanos());
        }
        if runs == 0 {
            continue;
        }
        let per_run = time.as_nanos() as f64 / runs as f64;
        eprint!("bench-datapath: {name}: {runs} runs, {per_run:.0} ns per run");
        if name == strait::datapath::programs::SOCKOPS && opened > 0 {
            let per_conn = time.as_nanos() as f64 / opened as f64;
            eprint!(", {per_conn:.0} ns per balanced connection ({opened} connections)");
        }
        eprintln!();
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-datapath: {e:#}");
        std::process::exit(1);
    }
}
