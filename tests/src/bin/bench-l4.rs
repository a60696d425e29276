//! L4 load client for `cargo xtask bench l4` and `l4-counters`: opens TCP
//! connections, C at a time, each one connect + one request line + read the
//! reply to EOF + close, and records each connection's latency (connect
//! start to EOF).
//!
//! ```text
//! bench-l4 [--connections N] [--concurrency C] [--passes P] [--warmup W]
//!          [--peer-pid PID]...
//!          [--arm NAME [--netns NS] [--cgroup DIR]] --addr IP:PORT [--addr IP:PORT]...
//!          [--arm NAME ...]...
//! ```
//!
//! Several *arms* (paths to compare) are measured by one process in short
//! alternating batches, so drift of a shared machine hits them alike: each
//! of the P passes runs one batch of N connections per arm, the arms in
//! their given order on even passes and reversed on odd ones (A B, B A,
//! ...; a linear drift cancels over two passes), after W unrecorded
//! passes. An arm's connections go round-robin over its `--addr`s, so a
//! direct arm can be given the same backends a VIP spreads over. Before
//! each batch the process (all its threads) moves into the arm's cgroup v2
//! directory (`--cgroup`: the sockets it then creates run the programs
//! attached there) or back into the one it started in, and its workers
//! start in the arm's network namespace (`--netns`, a name under
//! `/run/netns`; entered with setns(2), so `/sys` and the cgroup mount stay
//! visible, unlike `ip netns exec`) or the one it started in. Without
//! `--arm`, the `--addr`s form one arm.
//!
//! Prints one JSON object: `{"concurrency", "connections_per_batch",
//! "passes", "arms": [{"name", "connections", "errors", "seconds", "rate"
//! (connections/s over its batches), "cpu_us_per_conn", "peer_cpu_us_per_conn",
//! "p50_us", "p99_us", "max_us", "batches": [{"pass", "seq", "connections",
//! "errors", "seconds", "cpu_us", "peer_cpu_us", "vcsw", "ivcsw"}]}]}`.
//! `cpu_us` is this process's user + system time over the batch
//! (getrusage; the kernel's network work done in its context included);
//! `peer_cpu_us` the run time of every thread of the `--peer-pid`
//! processes (`/proc/PID/task/*/schedstat`), e.g. the backend; `vcsw` /
//! `ivcsw` this process's voluntary / involuntary context switches;
//! `bpf_runs` / `bpf_ns` the runs and run time (the kernel's BPF run-time
//! statistics, counted only while something holds them enabled, e.g.
//! bench-datapath) of every program attached to the arms' cgroups over the
//! batch, with per-program totals in the arm's `"bpf"` object.
//! Latencies in microseconds from an HDR histogram (3 significant digits).
//! Exits 1 when more than 1% of an arm's connections fail (a broken setup,
//! not a figure).
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

/// The request line every connection sends; bench-backend answers `OK\n`.
const REQUEST: &[u8] = b"PING\n";

/// One path to measure.
#[derive(Default)]
struct Arm {
    name: String,
    netns: Option<String>,
    cgroup: Option<PathBuf>,
    addrs: Vec<SocketAddr>,
}

struct Args {
    arms: Vec<Arm>,
    connections: u64,
    concurrency: u64,
    passes: u64,
    warmup: u64,
    peers: Vec<u32>,
}

/// The arm the next setting applies to; settings before any `--arm` open
/// the implicit first arm.
fn last_arm(args: &mut Args) -> &mut Arm {
    if args.arms.is_empty() {
        args.arms.push(Arm {
            name: "default".into(),
            ..Arm::default()
        });
    }
    args.arms.last_mut().expect("pushed")
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        arms: Vec::new(),
        connections: 10_000,
        concurrency: 8,
        passes: 1,
        warmup: 0,
        peers: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    let num = |flag: &str, v: String| -> Result<u64, String> {
        v.parse().map_err(|e| format!("{flag}: {e}"))
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--arm" => args.arms.push(Arm {
                name: value,
                ..Arm::default()
            }),
            "--addr" => last_arm(&mut args)
                .addrs
                .push(value.parse().map_err(|e| format!("--addr: {e}"))?),
            "--netns" => last_arm(&mut args).netns = Some(value),
            "--cgroup" => last_arm(&mut args).cgroup = Some(value.into()),
            "--connections" => args.connections = num(&flag, value)?,
            "--concurrency" => args.concurrency = num(&flag, value)?,
            "--passes" => args.passes = num(&flag, value)?,
            "--warmup" => args.warmup = num(&flag, value)?,
            "--peer-pid" => args.peers.push(num(&flag, value)? as u32),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.arms.is_empty() {
        return Err("--addr IP:PORT is required".into());
    }
    if let Some(a) = args.arms.iter().find(|a| a.addrs.is_empty()) {
        return Err(format!("arm {} has no --addr", a.name));
    }
    if args.concurrency == 0 || args.connections == 0 || args.passes == 0 {
        return Err("--connections, --concurrency and --passes must be > 0".into());
    }
    Ok(args)
}

/// One connection's full life; returns its latency or the error.
fn one(addr: SocketAddr) -> std::io::Result<Duration> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(REQUEST)?;
    let mut reply = Vec::with_capacity(16);
    s.read_to_end(&mut reply)?;
    if !reply.starts_with(b"OK") {
        return Err(std::io::Error::other("unexpected reply"));
    }
    drop(s);
    Ok(start.elapsed())
}

/// Where the process is placed for an arm's batch: network namespace (for
/// the workers it starts) and cgroup (the whole process).
struct Places {
    home_netns: File,
    home_cgroup: Option<PathBuf>,
    netns: Vec<Option<File>>,
    /// The cgroup the process is in now, once moved (a move waits for an
    /// RCU grace period: skipped when the next batch needs the same one).
    current: Option<PathBuf>,
}

impl Places {
    fn open(arms: &[Arm]) -> Result<Self, String> {
        let home_netns =
            File::open("/proc/self/ns/net").map_err(|e| format!("/proc/self/ns/net: {e}"))?;
        let home_cgroup = if arms.iter().any(|a| a.cgroup.is_some()) {
            Some(own_cgroup()?)
        } else {
            None
        };
        let netns = arms
            .iter()
            .map(|a| {
                a.netns
                    .as_ref()
                    .map(|n| {
                        File::open(format!("/run/netns/{n}"))
                            .map_err(|e| format!("network namespace {n}: {e}"))
                    })
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            home_netns,
            home_cgroup,
            netns,
            current: None,
        })
    }

    /// Moves this thread into arm `i`'s namespace and the process into its
    /// cgroup (or back home).
    fn enter(&mut self, i: usize, arm: &Arm) -> Result<(), String> {
        use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
        use std::os::fd::AsFd;
        let ns = self.netns[i].as_ref().unwrap_or(&self.home_netns);
        move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
            .map_err(|e| format!("setns for arm {}: {e}", arm.name))?;
        if let Some(dir) = arm.cgroup.as_ref().or(self.home_cgroup.as_ref()) {
            if self.current.as_ref() != Some(dir) {
                // Writing 0 moves the writing process (all its threads).
                std::fs::write(dir.join("cgroup.procs"), "0")
                    .map_err(|e| format!("joining cgroup {}: {e}", dir.display()))?;
                self.current = Some(dir.clone());
            }
        }
        Ok(())
    }
}

/// The cgroup v2 directory this process is in (`0::PATH` in
/// /proc/self/cgroup under the cgroup2 mount).
fn own_cgroup() -> Result<PathBuf, String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").map_err(|e| e.to_string())?;
    let mount = mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .ok_or("no cgroup2 mount")?;
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("no cgroup v2 entry in /proc/self/cgroup")?;
    Ok(mount.join(path.trim_start_matches('/')))
}

/// This process's CPU time (user + system, µs) and voluntary / involuntary
/// context switches, every thread (live or ended) included.
fn own_usage() -> (u64, u64, u64) {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (
        us(ru.ru_utime) + us(ru.ru_stime),
        ru.ru_nvcsw as u64,
        ru.ru_nivcsw as u64,
    )
}

/// Run time (µs) of every live thread of `pids` (first field of
/// `/proc/PID/task/TID/schedstat`, ns).
fn peer_cpu_us(pids: &[u32]) -> u64 {
    let mut ns = 0u64;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    ns / 1000
}

/// The programs attached to the arms' cgroups (BPF_PROG_QUERY), whose
/// run-time statistics each batch reads.
struct Programs {
    ids: Vec<u32>,
}

impl Programs {
    /// Every program attached to any of `dirs`, any cgroup attach type.
    fn attached(dirs: &[&PathBuf]) -> Result<Self, String> {
        use std::os::fd::AsRawFd;
        #[repr(C)]
        #[derive(Default)]
        struct Query {
            target_fd: u32,
            attach_type: u32,
            query_flags: u32,
            attach_flags: u32,
            prog_ids: u64,
            prog_cnt: u32,
            pad: u32,
        }
        const BPF_PROG_QUERY: libc::c_long = 16;
        let mut ids = Vec::new();
        for dir in dirs {
            let f = File::open(dir).map_err(|e| format!("cgroup {}: {e}", dir.display()))?;
            // bpf_attach_type values 0..=60 cover every cgroup hook; the
            // others answer EINVAL and are skipped.
            for attach_type in 0..=60u32 {
                let mut buf = [0u32; 64];
                let mut q = Query {
                    target_fd: f.as_raw_fd() as u32,
                    attach_type,
                    prog_ids: buf.as_mut_ptr() as u64,
                    prog_cnt: buf.len() as u32,
                    ..Query::default()
                };
                // SAFETY: `q` is a valid bpf_attr prefix for BPF_PROG_QUERY
                // and `prog_ids` points at `prog_cnt` writable u32s.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_bpf,
                        BPF_PROG_QUERY,
                        &mut q as *mut Query,
                        std::mem::size_of::<Query>(),
                    )
                };
                if r == 0 {
                    ids.extend_from_slice(&buf[..(q.prog_cnt as usize).min(buf.len())]);
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(Self { ids })
    }

    /// Each program's (name, runs, run time ns), in `ids` order.
    fn stats(&self) -> Vec<(String, u64, u64)> {
        if self.ids.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<(String, u64, u64)> = self
            .ids
            .iter()
            .map(|id| (format!("prog {id}"), 0, 0))
            .collect();
        for info in aya::programs::loaded_programs().flatten() {
            if let Ok(i) = self.ids.binary_search(&info.id()) {
                out[i] = (
                    info.name_as_str().unwrap_or("?").to_string(),
                    info.run_count(),
                    info.run_time().as_nanos() as u64,
                );
            }
        }
        out
    }
}

/// One batch's figures.
struct Batch {
    pass: u64,
    seq: u64,
    ok: u64,
    errors: u64,
    seconds: f64,
    cpu_us: u64,
    peer_cpu_us: u64,
    vcsw: u64,
    ivcsw: u64,
    /// Per program: runs, run time ns.
    bpf: Vec<(u64, u64)>,
}

/// Runs `n` connections over `addrs` (round-robin), `c` at a time, into
/// `hist`; returns (ok, errors, seconds, first error).
fn batch(
    addrs: &[SocketAddr],
    n: u64,
    c: u64,
    hist: &mut Histogram<u64>,
) -> (u64, u64, f64, Option<std::io::Error>) {
    let next = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let start = Instant::now();
    let results: Vec<_> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..c)
            .map(|_| {
                s.spawn(|| {
                    let mut h =
                        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
                    let mut first_error = None;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        match one(addrs[(i % addrs.len() as u64) as usize]) {
                            Ok(d) => h.saturating_record(d.as_micros() as u64),
                            Err(e) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                first_error.get_or_insert(e);
                            }
                        }
                    }
                    (h, first_error)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut first_error = None;
    let mut ok = 0;
    for (h, e) in results {
        ok += h.len();
        hist.add(h).expect("same bounds");
        if first_error.is_none() {
            first_error = e;
        }
    }
    (ok, errors.load(Ordering::Relaxed), secs, first_error)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-l4: {e}");
            eprintln!(
                "usage: bench-l4 [--connections N] [--concurrency C] [--passes P] [--warmup W] [--peer-pid PID]... \
                 [--arm NAME [--netns NS] [--cgroup DIR]] --addr IP:PORT... [--arm ...]..."
            );
            std::process::exit(2);
        }
    };
    let mut places = match Places::open(&args.arms) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench-l4: {e}");
            std::process::exit(2);
        }
    };
    let cgroups: Vec<&PathBuf> = args.arms.iter().filter_map(|a| a.cgroup.as_ref()).collect();
    let programs = match Programs::attached(&cgroups) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench-l4: {e}");
            std::process::exit(2);
        }
    };
    let mut prog_names = vec![String::new(); programs.ids.len()];
    let n_arms = args.arms.len();
    let mut hists: Vec<Histogram<u64>> = (0..n_arms)
        .map(|_| Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"))
        .collect();
    let mut batches: Vec<Vec<Batch>> = (0..n_arms).map(|_| Vec::new()).collect();
    let mut first_errors: Vec<Option<std::io::Error>> = (0..n_arms).map(|_| None).collect();
    let mut seq = 0;
    for pass in 0..args.warmup + args.passes {
        let recorded = pass >= args.warmup;
        let order: Vec<usize> = if pass % 2 == 0 {
            (0..n_arms).collect()
        } else {
            (0..n_arms).rev().collect()
        };
        for i in order {
            let arm = &args.arms[i];
            if let Err(e) = places.enter(i, arm) {
                eprintln!("bench-l4: {e}");
                std::process::exit(2);
            }
            let (cpu0, v0, iv0) = own_usage();
            let peer0 = peer_cpu_us(&args.peers);
            let bpf0 = programs.stats();
            let mut scratch;
            let hist = if recorded {
                &mut hists[i]
            } else {
                scratch = Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds");
                &mut scratch
            };
            let (ok, errors, seconds, err) =
                batch(&arm.addrs, args.connections, args.concurrency, hist);
            let (cpu1, v1, iv1) = own_usage();
            let peer1 = peer_cpu_us(&args.peers);
            let bpf1 = programs.stats();
            for (name, (n, _, _)) in prog_names.iter_mut().zip(&bpf1) {
                n.clone_into(name);
            }
            if first_errors[i].is_none() {
                first_errors[i] = err;
            }
            if recorded {
                batches[i].push(Batch {
                    pass: pass - args.warmup,
                    seq,
                    ok,
                    errors,
                    seconds,
                    cpu_us: cpu1 - cpu0,
                    peer_cpu_us: peer1.saturating_sub(peer0),
                    vcsw: v1 - v0,
                    ivcsw: iv1 - iv0,
                    bpf: bpf0
                        .iter()
                        .zip(&bpf1)
                        .map(|(a, b)| (b.1.saturating_sub(a.1), b.2.saturating_sub(a.2)))
                        .collect(),
                });
                seq += 1;
            }
        }
    }
    let mut failed = false;
    let arms: Vec<serde_json::Value> = args
        .arms
        .iter()
        .zip(&batches)
        .zip(&hists)
        .zip(&first_errors)
        .map(|(((arm, bs), hist), first_error)| {
            let ok: u64 = bs.iter().map(|b| b.ok).sum();
            let errors: u64 = bs.iter().map(|b| b.errors).sum();
            let secs: f64 = bs.iter().map(|b| b.seconds).sum();
            let cpu: u64 = bs.iter().map(|b| b.cpu_us).sum();
            let peer: u64 = bs.iter().map(|b| b.peer_cpu_us).sum();
            if errors * 100 > ok + errors {
                eprintln!(
                    "bench-l4: {errors} of {} connections of arm {} ({:?}) failed; first error: {first_error:?}",
                    ok + errors,
                    arm.name,
                    arm.addrs
                );
                failed = true;
            }
            let per_conn = |us: u64| us as f64 / ok.max(1) as f64;
            let batches: Vec<serde_json::Value> = bs
                .iter()
                .map(|b| {
                    json!({
                        "pass": b.pass, "seq": b.seq, "connections": b.ok, "errors": b.errors,
                        "seconds": b.seconds, "cpu_us": b.cpu_us, "peer_cpu_us": b.peer_cpu_us,
                        "vcsw": b.vcsw, "ivcsw": b.ivcsw,
                        "bpf_runs": b.bpf.iter().map(|p| p.0).sum::<u64>(),
                        "bpf_ns": b.bpf.iter().map(|p| p.1).sum::<u64>(),
                    })
                })
                .collect();
            let bpf: serde_json::Map<String, serde_json::Value> = prog_names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let runs: u64 = bs.iter().map(|b| b.bpf[i].0).sum();
                    let ns: u64 = bs.iter().map(|b| b.bpf[i].1).sum();
                    (name.clone(), json!({"runs": runs, "ns": ns}))
                })
                .collect();
            json!({
                "bpf": bpf,
                "name": arm.name, "connections": ok, "errors": errors, "seconds": secs,
                "rate": ok as f64 / secs.max(1e-9),
                "cpu_us_per_conn": per_conn(cpu), "peer_cpu_us_per_conn": per_conn(peer),
                "p50_us": hist.value_at_quantile(0.50), "p99_us": hist.value_at_quantile(0.99),
                "max_us": hist.max(), "batches": batches,
            })
        })
        .collect();
    println!(
        "{}",
        json!({
            "concurrency": args.concurrency, "connections_per_batch": args.connections,
            "passes": args.passes, "arms": arms,
        })
    );
    if failed {
        std::process::exit(1);
    }
}
