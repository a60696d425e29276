//! `strait run`: the node daemon. It loads and attaches the eBPF programs,
//! compiles the config directory, writes the kernel maps, serves the
//! outbound listener (L7 proxy) and the admin API, hot-reloads the config,
//! and on SIGTERM/SIGINT drains in-flight requests (bounded) and exits 0.
//! Pinned maps and links stay, so L4 traffic keeps flowing while the daemon
//! restarts; `strait cleanup` removes them.
//!
//! Order of a start: preflight checks, the node lock ([`lock`]: one daemon
//! per node), the first config, listeners bound, programs loaded and
//! attached, maps written — all on the main thread — then capabilities are
//! dropped ([`privs`]) before any other thread starts. Reloads run on their
//! own thread, off the serving path: a reload that blocks or runs long
//! never delays requests, the admin API or SIGTERM.
pub mod ca;
pub mod cli;
pub mod identity;
pub mod lock;
pub mod preflight;
pub mod privs;
pub mod sink;
pub mod state;
pub mod store;
pub mod watch;

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use strait_config::load::Limits;
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
    /// Node uplink to attach the XDP program to (external VIP balancer and
    /// source-prefix deny); none: no XDP program.
    pub xdp_uplink: Option<String>,
    /// Outer source address of tunnelled packets (default: the uplink's
    /// first IPv4 address).
    pub xdp_source: Option<std::net::Ipv4Addr>,
    /// Gateway MAC for tunnelled packets (default: the neighbour entry of
    /// the uplink's default gateway).
    pub xdp_gateway_mac: Option<[u8; 6]>,
    /// Workload certificates for the node's pods (none: no identity).
    pub identity: Option<identity::IdentityArgs>,
    /// The L7 proxy's HTTP limits and timeouts (request-headers, stream
    /// idle and connection idle timeouts, connection cap).
    pub proxy: crate::proxy::ProxySettings,
    /// Bounds on config files (size, documents, nesting depth).
    pub limits: Limits,
}

/// The kernel's answer to "where was this connection going".
struct KernelOriginalDst(OriginalDestinations);

impl OriginalDst for KernelOriginalDst {
    fn original_destination(&self, peer: SocketAddr, _local: SocketAddr) -> Option<SocketAddr> {
        self.0.get(peer)
    }
}

/// Runs the daemon until SIGTERM/SIGINT. Errors are one line saying what is
/// wrong and what to do (not root, no BPF, no cgroup v2, port taken,
/// another daemon on the node, ...).
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let cgroup2 = preflight::check(&args.config)?;
    let mut dp_cfg = DatapathConfig::new(&args.node);
    dp_cfg.bpffs = args.bpffs.clone();
    dp_cfg.outbound = args.outbound;
    let node_lock = lock::lock_node(
        std::path::Path::new(lock::LOCK_DIR),
        &dp_cfg.pin_dir(),
        &args.node,
    )?;
    tracing::debug!(lock = %node_lock.path().display(), "node lock taken");
    let setup = setup(&args, &dp_cfg, cgroup2)?;
    privs::drop_privileges()?;
    tracing::info!(
        kept = ?privs::KEEP,
        "capabilities dropped after setup; no_new_privs set"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(serve(args, setup));
    // A reload stuck in a read or a compile is on its own thread and is
    // not waited for; neither is any task that does not stop at once.
    rt.shutdown_timeout(Duration::from_millis(500));
    drop(node_lock);
    result
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
/// `None` when the inputs are byte-identical to the previous reload's.
pub(crate) fn compile(store: &mut ConfigStore) -> Option<MeshSnapshot> {
    let reload = store.reload();
    if reload.unchanged {
        return None;
    }
    log_diagnostics(&reload.diagnostics);
    if reload.listing_failed {
        tracing::warn!(dir = %store.dir().display(), "config directory unreadable: still serving the last good config");
    }
    for f in &reload.kept_last_good {
        tracing::warn!(file = %f.display(), "file has errors: still serving its last good version");
    }
    let (snap, diags) = strait_config::compile(&reload.resources);
    // Validation errors were reported by the store; report the rest.
    let rest: Vec<Diagnostic> = diags.into_iter().filter(|d| !d.is_error()).collect();
    log_diagnostics(&rest);
    // Accepted but not enforced (STR0001): once per resource per load.
    for r in &reload.resources {
        log_diagnostics(&strait_config::enforced::diagnostics(r));
    }
    for (ip, why) in &snap.deny {
        tracing::warn!(workload = %ip, "{why}");
    }
    Some(snap)
}

fn meshed_ips(snap: &MeshSnapshot) -> Vec<IpAddr> {
    snap.workloads.keys().copied().collect()
}

/// What setup hands to serving.
struct Setup {
    store: ConfigStore,
    snap: MeshSnapshot,
    admin: std::net::TcpListener,
    outbound: std::net::TcpListener,
    datapath: Datapath,
    orig: KernelOriginalDst,
    pods: PathBuf,
}

/// Everything that needs privileges, on the calling thread.
fn setup(args: &RunArgs, dp_cfg: &DatapathConfig, cgroup2: PathBuf) -> anyhow::Result<Setup> {
    let node_ips = crate::sys::node_addresses();
    crate::proxy::self_guard::set(
        vec![args.admin, SocketAddr::V4(args.outbound)],
        node_ips.clone(),
    );
    let mut store =
        ConfigStore::with_limits(&args.config, args.limits).with_node_addresses(node_ips);
    let snap = compile(&mut store).unwrap_or_default();
    tracing::info!(
        services = snap.services.len(),
        clusters = snap.clusters.len(),
        kernel_services = snap.l4.len(),
        "config compiled"
    );

    let admin = crate::admin::bind_std(args.admin)?;
    let outbound = crate::proxy::workers::bind(SocketAddr::V4(args.outbound)).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on outbound address {}: {e} (is another strait running? pass --outbound ADDR)",
            args.outbound
        )
    })?;

    let mut datapath = Datapath::new(dp_cfg)?;
    let pods = args
        .pods_cgroup
        .clone()
        .unwrap_or_else(|| cgroup2.join(format!("strait-{}", args.node)).join("pods"));
    std::fs::create_dir_all(&pods)
        .with_context(|| format!("creating the pods cgroup {}", pods.display()))?;
    datapath.attach(&pods)?;
    if let Some(iface) = &args.xdp_uplink {
        let uplink = crate::datapath::resolve_uplink(iface, args.xdp_source, args.xdp_gateway_mac)?;
        datapath.attach_uplink(iface, &uplink)?;
    }
    apply_kernel(&mut datapath, &snap);
    let orig = KernelOriginalDst(OriginalDestinations::open(datapath.pin_dir())?);
    Ok(Setup {
        store,
        snap,
        admin,
        outbound,
        datapath,
        orig,
        pods,
    })
}

async fn serve(args: RunArgs, setup: Setup) -> anyhow::Result<()> {
    let Setup {
        mut store,
        snap,
        admin,
        outbound,
        mut datapath,
        orig,
        pods,
    } = setup;
    let admin_listener = tokio::net::TcpListener::from_std(admin)
        .with_context(|| format!("admin listener {}", args.admin))?;

    // Security policy is enforced for the workloads of this node.
    let scope = crate::policy::Scope {
        node: Some(args.node.clone()),
        ..Default::default()
    };
    let settings = crate::proxy::ProxySettings {
        policy_scope: scope.clone(),
        ..args.proxy.clone()
    };
    let proxy = Proxy::with_scope(&snap, scope)
        .map_err(|e| anyhow::anyhow!("building the proxy's routes: {e}"))?
        .with_settings(settings);
    let snapshot = Arc::new(ArcSwap::from_pointee(snap));
    let embedded_ca = matches!(
        args.identity,
        Some(identity::IdentityArgs {
            mode: identity::CaMode::Embedded { .. },
            ..
        })
    );
    let metrics = Arc::new(if embedded_ca {
        Metrics::with_ca()
    } else {
        Metrics::new()
    });
    let secrets = match &args.identity {
        Some(id) => Some(identity::start(id, &args.node, snapshot.clone(), &metrics).await?),
        None => None,
    };
    let sink = sink::TelemetrySink::new(snapshot.clone(), metrics.clone(), args.access_log);
    let proxy = proxy.with_access_log(Arc::new(sink));
    let live = Arc::new(Live {
        snapshot: snapshot.clone(),
        ready: AtomicBool::new(false),
        metrics,
        proxy: proxy.clone(),
        certs: secrets.as_ref().map(|s| s.store().clone()),
        reload_started_ms: AtomicU64::new(0),
    });

    let admin_task = tokio::spawn(crate::admin::serve(admin_listener, live.clone()));
    // Thread-per-core: one worker (own single-threaded runtime) per CPU.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let proxy_workers = proxy
        .serve_workers(outbound, orig, workers)
        .context("starting the proxy workers")?;
    let (watch, changes) = watch::watch(&args.config)?;
    let reload_live = live.clone();
    let reload_identity = args
        .identity
        .as_ref()
        .map(|i| (i.trust_domain.clone(), args.node.clone()));
    let reload_secrets = secrets.clone();
    // Reloads run on their own thread: reading and compiling a large or
    // hostile config never occupies the runtime serving the admin API and
    // the shutdown signal. The thread is not joined at exit.
    // The runtime's context: a reload may start tasks (certificate renewals).
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("strait-reload".into())
        .spawn(move || {
            let _runtime = runtime.enter();
            let _watch = watch;
            while watch::next_burst(&changes) {
                reload_live.set_reloading(true);
                if let Some(snap) = reload_once(&mut store, &reload_live, &mut datapath) {
                    if let (Some(mgr), Some((td, node))) = (&reload_secrets, &reload_identity) {
                        mgr.set_wanted(&identity::wanted(&snap, node, td));
                    }
                }
                reload_live.set_reloading(false);
            }
        })
        .context("starting the reload thread")?;
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
    admin_task.abort();
    tracing::info!("stopped; kernel maps stay pinned for the next start");
    Ok(())
}

/// One reload: read, compile, swap the proxy's table, write the kernel
/// maps. Returns the snapshot now served when it changed.
fn reload_once(
    store: &mut ConfigStore,
    live: &Live,
    datapath: &mut Datapath,
) -> Option<Arc<MeshSnapshot>> {
    let started = Instant::now();
    let Some(snap) = compile(store) else {
        tracing::debug!("config files unchanged: nothing reloaded");
        return None;
    };
    tracing::info!("config files changed: reloading");
    if **live.snapshot.load() == snap {
        tracing::debug!("config unchanged");
        return None;
    }
    if let Err(e) = live.proxy.update(&snap) {
        tracing::error!("new config not applied, the last good one keeps serving: {e}");
        return None;
    }
    apply_kernel(datapath, &snap);
    let snap = Arc::new(snap);
    live.snapshot.store(snap.clone());
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "config reloaded"
    );
    Some(snap)
}

fn apply_kernel(datapath: &mut Datapath, snap: &MeshSnapshot) {
    match datapath.apply(&snap.l4) {
        Ok(report) => tracing::debug!(?report, "kernel tables written"),
        Err(e) => tracing::error!("writing the kernel service tables: {e:#}"),
    }
    if let Err(e) = datapath.set_workloads(&meshed_ips(snap)) {
        tracing::error!("writing the meshed workloads: {e:#}");
    }
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
