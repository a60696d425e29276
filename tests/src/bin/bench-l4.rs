//! L4 load client for `cargo xtask bench l4`: opens N TCP connections, C at
//! a time, each one connect + one request line + read the reply to EOF +
//! close, and records each connection's latency (connect start to EOF).
//!
//! `bench-l4 --addr IP:PORT [--connections N] [--concurrency C] [--cgroup DIR]`
//!
//! `--cgroup DIR` moves this process into the cgroup v2 directory DIR before
//! the first connect, so a `cgroup/connect4` program attached there applies.
//! Prints one JSON line: `{"connections", "errors", "seconds", "rate"
//! (connections/s), "p50_us", "p99_us", "max_us"}`; latencies in
//! microseconds from an HDR histogram (3 significant digits). Exits 1 when
//! more than 1% of connections fail (a broken setup, not a figure).
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The request line every connection sends; bench-backend answers `OK\n`.
const REQUEST: &[u8] = b"PING\n";

struct Args {
    addr: SocketAddr,
    connections: u64,
    concurrency: u64,
    cgroup: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut addr = None;
    let mut connections = 10_000;
    let mut concurrency = 8;
    let mut cgroup = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = Some(value()?.parse().map_err(|e| format!("--addr: {e}"))?),
            "--connections" => {
                connections = value()?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?
            }
            "--concurrency" => {
                concurrency = value()?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            "--cgroup" => cgroup = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let addr = addr.ok_or("--addr IP:PORT is required")?;
    if concurrency == 0 || connections == 0 {
        return Err("--connections and --concurrency must be > 0".into());
    }
    Ok(Args {
        addr,
        connections,
        concurrency,
        cgroup,
    })
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

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-l4: {e}");
            eprintln!(
                "usage: bench-l4 --addr IP:PORT [--connections N] [--concurrency C] [--cgroup DIR]"
            );
            std::process::exit(2);
        }
    };
    if let Some(dir) = &args.cgroup {
        // Writing 0 moves the writing process (all its threads) into the cgroup.
        if let Err(e) = std::fs::write(format!("{dir}/cgroup.procs"), "0") {
            eprintln!("bench-l4: cannot join cgroup {dir}: {e}");
            std::process::exit(2);
        }
    }
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (next, errors, total, addr) =
                (next.clone(), errors.clone(), args.connections, args.addr);
            std::thread::spawn(move || {
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
                let mut first_error = None;
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    match one(addr) {
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
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut first_error = None;
    for w in workers {
        let (h, e) = w.join().expect("worker panicked");
        hist.add(h).expect("same bounds");
        if first_error.is_none() {
            first_error = e;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let errors = errors.load(Ordering::Relaxed);
    println!(
        "{{\"connections\":{},\"errors\":{},\"seconds\":{:.3},\"rate\":{:.1},\"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
        args.connections,
        errors,
        secs,
        hist.len() as f64 / secs,
        hist.value_at_quantile(0.50),
        hist.value_at_quantile(0.99),
        hist.max(),
    );
    if errors * 100 > args.connections {
        eprintln!(
            "bench-l4: {errors} of {} connections to {} failed; first error: {:?}",
            args.connections, args.addr, first_error
        );
        std::process::exit(1);
    }
}
