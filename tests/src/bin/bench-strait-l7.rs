//! Strait's L7 proxy for `cargo xtask bench l7`: one listener in front of
//! one Kubernetes Service, routed the way the node proxy routes a
//! redirected connection (original destination → service → HTTP route →
//! cluster → endpoint), with the access log off like the other proxies.
//!
//! `bench-strait-l7 --listen IP:PORT --upstream IP:PORT [--workers N]`
//!
//! The mesh config is a Service `backend.bench` (ClusterIP 198.19.255.1,
//! port 80 named `http`) whose Endpoints are `--upstream`; every accepted
//! connection's original destination is that VIP (there is no kernel
//! redirect in front of this listener). HTTP/1.1 and h2c clients are told
//! apart by protocol detection, as on the outbound listener. `--workers`
//! worker threads, each with its own single-threaded runtime, as the
//! daemon runs (default: the CPUs this process may use). Prints `ready`
//! once listening.
use std::net::SocketAddr;

use anyhow::{bail, Context};
use strait::serve::{FixedDestination, Proxy};

/// The allocator the `strait` binary uses.
#[global_allocator]
static GLOBAL: strait::Allocator = strait::Allocator;

/// The Service's ClusterIP and port the proxy sees as original destination.
const VIP: &str = "198.19.255.1:80";

fn config(upstream: SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: backend
  namespace: bench
spec:
  clusterIP: 198.19.255.1
  ports:
  - name: http
    port: 80
    targetPort: {port}
---
apiVersion: v1
kind: Endpoints
metadata:
  name: backend
  namespace: bench
subsets:
- addresses:
  - ip: {ip}
  ports:
  - name: http
    port: {port}
",
        ip = upstream.ip(),
        port = upstream.port()
    )
}

fn run() -> anyhow::Result<()> {
    let (mut listen, mut upstream, mut workers) = (None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(v.parse::<SocketAddr>().context("--listen")?),
            "--upstream" => upstream = Some(v.parse::<SocketAddr>().context("--upstream")?),
            "--workers" => workers = Some(v.parse::<usize>().context("--workers")?),
            other => bail!("unknown argument {other}"),
        }
    }
    let (Some(listen), Some(upstream)) = (listen, upstream) else {
        bail!("usage: bench-strait-l7 --listen IP:PORT --upstream IP:PORT [--workers N]");
    };
    let loaded = strait_config::load::load_str(&config(upstream), "bench-strait-l7");
    if loaded.has_errors() {
        bail!("bench config: {:?}", loaded.diagnostics);
    }
    let (snapshot, _diagnostics) = strait_config::compile(&loaded.resources);
    let proxy = Proxy::new(&snapshot).map_err(|e| anyhow::anyhow!("{e}"))?;
    let workers =
        workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let listener =
        strait::serve::workers::bind(listen).with_context(|| format!("listening on {listen}"))?;
    let vip: SocketAddr = VIP.parse().expect("static address");
    // Thread-per-core, as the daemon serves its outbound listener.
    let running = proxy
        .serve_workers(listener, FixedDestination(vip), workers)
        .context("starting the workers")?;
    println!("ready");
    running.join();
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-strait-l7: {e:#}");
        std::process::exit(1);
    }
}
