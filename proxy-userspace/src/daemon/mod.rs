//! `strait run`: the node daemon. It loads and attaches the eBPF programs,
//! compiles the config directory, writes the kernel maps, serves the
//! outbound listener (L7 proxy) and the admin API, hot-reloads the config,
//! and on SIGTERM/SIGINT drains in-flight requests (bounded) and exits 0.
//! Pinned maps and links stay, so L4 traffic keeps flowing while the daemon
//! restarts; `strait cleanup` removes them.
pub mod cli;
pub mod preflight;
pub mod sink;
pub mod state;
pub mod store;
pub mod watch;

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use strait_config::snapshot::MeshSnapshot;
use strait_config::Diagnostic;

use crate::datapath::{Datapath, DatapathConfig, OriginalDestinations};
use crate::proxy::{OriginalDst, Proxy};
use crate::telemetry::Metrics;
use state::Live;
use store::ConfigStore;

/// Settings of `strait run`.
#[derive(Clone, Debug)]
pub struct RunArgs {
    /// Directory of Istio and Kubernetes YAML (watched).
    pub config: PathBuf,
    /// Node name: pins go to `<bpffs>/strait/<node>/`.
    pub node: String,
    /// The pods cgroup (default `<cgroup2>/strait-<node>/pods`, created).
    pub pods_cgroup: Option<PathBuf>,
    /// bpffs mount point.
    pub bpffs: PathBuf,
    /// Admin API address.
    pub admin: SocketAddr,
    /// Outbound listener: where the kernel redirects meshed connections and
    /// where the proxy listens (IPv4). Pods in their own network namespaces
    /// need the node's address here, not loopback.
    pub outbound: SocketAddrV4,
    /// Longest wait for in-flight requests at shutdown.
    pub drain: Duration,
    /// Print one access-log line per request on stdout.
    pub access_log: bool,
}

/// The kernel's answer to "where was this connection going".
struct KernelOriginalDst(OriginalDestinations);

impl OriginalDst for KernelOriginalDst {
    fn original_destination(&self, peer: SocketAddr, _local: SocketAddr) -> Option<SocketAddr> {
        self.0.get(peer)
    }
}

/// Runs the daemon until SIGTERM/SIGINT. Errors are one line saying what is
/// wrong and what to do (not root, no BPF, no cgroup v2, port taken, ...).
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let cgroup2 = preflight::check(&args.config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(args, cgroup2))
}

fn log_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        match d.level {
            strait_config::Level::Error => tracing::error!("{d}"),
            strait_config::Level::Warning => tracing::warn!("{d}"),
            strait_config::Level::Info => tracing::info!("{d}"),
        }
    }
}

/// Load, validate and compile the directory (last good version per file).
fn compile(store: &mut ConfigStore) -> MeshSnapshot {
    let reload = store.reload();
    log_diagnostics(&reload.diagnostics);
    for f in &reload.kept_last_good {
        tracing::warn!(file = %f.display(), "file has errors: still serving its last good version");
    }
    let (snap, diags) = strait_config::compile(&reload.resources);
    // Validation errors were reported by the store; report the rest.
    let rest: Vec<Diagnostic> = diags.into_iter().filter(|d| !d.is_error()).collect();
    log_diagnostics(&rest);
    snap
}

fn meshed_ips(snap: &MeshSnapshot) -> Vec<IpAddr> {
    snap.workloads.keys().copied().collect()
}

async fn serve(args: RunArgs, cgroup2: PathBuf) -> anyhow::Result<()> {
    let mut store = ConfigStore::new(&args.config);
    let snap = compile(&mut store);
    tracing::info!(
        services = snap.services.len(),
        clusters = snap.clusters.len(),
        kernel_services = snap.l4.len(),
        "config compiled"
    );

    let admin_listener = crate::admin::bind(args.admin).await?;
    let outbound = crate::proxy::workers::bind(SocketAddr::V4(args.outbound)).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on outbound address {}: {e} (is another strait running? pass --outbound ADDR)",
            args.outbound
        )
    })?;

    let mut dp_cfg = DatapathConfig::new(&args.node);
    dp_cfg.bpffs = args.bpffs.clone();
    dp_cfg.outbound = args.outbound;
    let mut datapath = Datapath::new(&dp_cfg)?;
    let pods = args
        .pods_cgroup
        .clone()
        .unwrap_or_else(|| cgroup2.join(format!("strait-{}", args.node)).join("pods"));
    std::fs::create_dir_all(&pods)
        .with_context(|| format!("creating the pods cgroup {}", pods.display()))?;
    datapath.attach(&pods)?;
    let kernel_applied = apply_kernel(&mut datapath, &snap);
    let orig = KernelOriginalDst(OriginalDestinations::open(datapath.pin_dir())?);

    let proxy =
        Proxy::new(&snap).map_err(|e| anyhow::anyhow!("building the proxy's routes: {e}"))?;
    let snapshot = Arc::new(ArcSwap::from_pointee(snap));
    let metrics = Arc::new(Metrics::new());
    let sink = sink::TelemetrySink::new(snapshot.clone(), metrics.clone(), args.access_log);
    let proxy = proxy.with_access_log(Arc::new(sink));
    let live = Arc::new(Live {
        snapshot: snapshot.clone(),
        ready: AtomicBool::new(false),
        metrics,
        proxy: proxy.clone(),
    });

    let admin_task = tokio::spawn(crate::admin::serve(admin_listener, live.clone()));
    // Thread-per-core: one worker (own single-threaded runtime) per CPU.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let proxy_workers = proxy
        .serve_workers(outbound, orig, workers)
        .context("starting the proxy workers")?;
    let (_watch, mut changes) = watch::watch(&args.config)?;
    let reload_live = live.clone();
    let reload_task = tokio::spawn(async move {
        let mut kernel_ok = kernel_applied;
        while changes.recv().await.is_some() {
            let started = Instant::now();
            let snap = compile(&mut store);
            let old = reload_live.snapshot.load_full();
            if *old == snap {
                tracing::debug!("config unchanged");
                continue;
            }
            let compiled = started.elapsed();
            // Only what changed is rebuilt (proxy) and rewritten (kernel).
            let diff = strait_config::snapshot::diff(&old, &snap);
            drop(old);
            let rebuilt = match reload_live.proxy.apply_diff(&snap, &diff) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!("new config not applied, the last good one keeps serving: {e}");
                    continue;
                }
            };
            let proxied = started.elapsed();
            // After a failed write the kernel may differ from the old
            // snapshot: then the whole table is compared once more.
            kernel_ok = if kernel_ok {
                apply_kernel_changes(&mut datapath, &snap, &diff)
            } else {
                apply_kernel(&mut datapath, &snap)
            };
            reload_live.snapshot.store(Arc::new(snap));
            tracing::info!(
                compile_ms = compiled.as_millis() as u64,
                proxy_us = (proxied - compiled).as_micros() as u64,
                kernel_us = (started.elapsed() - proxied).as_micros() as u64,
                clusters_rebuilt = rebuilt,
                kernel_services_changed =
                    diff.l4.added.len() + diff.l4.changed.len() + diff.l4.removed.len(),
                "config reloaded"
            );
        }
        datapath
    });
    live.set_ready(true);
    tracing::info!(
        node = %args.node, pods_cgroup = %pods.display(), outbound = %args.outbound,
        admin = %args.admin, config = %args.config.display(), "strait is serving"
    );

    shutdown_signal().await;
    tracing::info!(
        drain_ms = args.drain.as_millis() as u64,
        "shutting down: draining in-flight requests"
    );
    live.set_ready(false);
    proxy_workers.shutdown(args.drain).await;
    reload_task.abort();
    admin_task.abort();
    tracing::info!("stopped; kernel maps stay pinned for the next start");
    Ok(())
}

/// Makes the kernel tables hold `snap`'s; whether every write succeeded.
fn apply_kernel(datapath: &mut Datapath, snap: &MeshSnapshot) -> bool {
    let mut ok = true;
    match datapath.apply(&snap.l4) {
        Ok(report) => tracing::debug!(?report, "kernel tables written"),
        Err(e) => {
            tracing::error!("writing the kernel service tables: {e:#}");
            ok = false;
        }
    }
    if let Err(e) = datapath.set_workloads(&meshed_ips(snap)) {
        tracing::error!("writing the meshed workloads: {e:#}");
        ok = false;
    }
    ok
}

/// Writes the kernel part of a snapshot diff: the L4 services and meshed
/// workloads it names, nothing else. Whether every write succeeded.
fn apply_kernel_changes(
    datapath: &mut Datapath,
    snap: &MeshSnapshot,
    diff: &strait_config::snapshot::SnapshotDiff,
) -> bool {
    let mut ok = true;
    if !diff.l4.is_empty() {
        match datapath.apply_changes(&snap.l4, &diff.l4) {
            Ok(report) => tracing::debug!(?report, "kernel tables written"),
            Err(e) => {
                tracing::error!("writing the kernel service tables: {e:#}");
                ok = false;
            }
        }
    }
    let w = &diff.workloads;
    if !w.added.is_empty() || !w.removed.is_empty() {
        if let Err(e) = datapath.change_workloads(&w.added, &w.removed) {
            tracing::error!("writing the meshed workloads: {e:#}");
            ok = false;
        }
    }
    ok
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
