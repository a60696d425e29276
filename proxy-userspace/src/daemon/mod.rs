//! `strait run`: the node daemon. It loads and attaches the eBPF programs,
//! compiles the config directory, writes the kernel maps, serves the
//! outbound listener (L7 proxy) and the admin API, hot-reloads the config,
//! and on SIGTERM/SIGINT drains in-flight requests (bounded) and exits 0.
//! Pinned maps and links stay, so L4 traffic keeps flowing while the daemon
//! restarts; `strait cleanup` removes them.
pub mod ca;
pub mod cli;
pub mod identity;
pub mod pods;
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
use strait_config::enroll::Enrollment;
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
    /// Directory of Istio and Kubernetes YAML (watched); unused with `kube`.
    pub config: PathBuf,
    /// Read the configuration from a Kubernetes API server instead.
    pub kube: Option<KubeArgs>,
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
    /// Workload certificates for the node's pods (none: no identity).
    pub identity: Option<identity::IdentityArgs>,
}

/// Where `strait run` finds its API server.
#[derive(Clone, Debug)]
pub struct KubeArgs {
    /// The kubeconfig; `None`: the in-cluster config.
    pub kubeconfig: Option<PathBuf>,
}

/// Keeps the config source's watch alive.
enum SourceGuard {
    Files(#[allow(dead_code)] watch::ConfigWatch),
    Kube(#[allow(dead_code)] crate::sources::kube::KubeWatch),
}

type Opened = (
    Box<dyn store::Source>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    SourceGuard,
);

/// Opens the config directory or the API server; for an API server,
/// returns once every kind has been listed (so nothing half-synced is
/// ever served).
async fn open_source(args: &RunArgs) -> anyhow::Result<Opened> {
    match &args.kube {
        None => {
            let (w, changes) = watch::watch(&args.config)?;
            Ok((
                Box::new(ConfigStore::new(&args.config)),
                changes,
                SourceGuard::Files(w),
            ))
        }
        Some(k) => {
            let client = crate::sources::kube::client(k.kubeconfig.as_deref())
                .await
                .context("connecting to the Kubernetes API server")?;
            let (store, changes, mut w) = crate::sources::kube::start(client);
            tracing::info!("waiting for the initial list of every watched kind");
            w.wait_synced().await;
            tracing::info!(counts = ?w.counts(), "API server in sync");
            Ok((Box::new(store), changes, SourceGuard::Kube(w)))
        }
    }
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
    let dir = args.kube.is_none().then_some(args.config.as_path());
    let cgroup2 = preflight::check(dir)?;
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

/// Load, validate and compile the source (last good version per file or
/// object), and decide which pods are meshed.
pub(crate) fn compile(store: &mut dyn store::Source) -> (MeshSnapshot, Enrollment) {
    let reload = store.reload();
    log_diagnostics(&reload.diagnostics);
    for f in &reload.kept_last_good {
        tracing::warn!(file = %f.display(), "file has errors: still serving its last good version");
    }
    let (snap, diags) = strait_config::compile(&reload.resources);
    // Validation errors were reported by the store; report the rest.
    let rest: Vec<Diagnostic> = diags.into_iter().filter(|d| !d.is_error()).collect();
    log_diagnostics(&rest);
    let enrollment = Enrollment::from_resources(&reload.resources);
    (snap, enrollment)
}

/// The meshed workloads' IPs: connections to them are redirected to the
/// node proxy. Workloads that are not enrolled are left alone.
fn meshed_ips(snap: &MeshSnapshot, enrollment: &Enrollment) -> Vec<IpAddr> {
    snap.workloads
        .values()
        .filter(|w| enrollment.ip_meshed(w.ip, &w.namespace))
        .map(|w| w.ip)
        .collect()
}

/// Which pod cgroups carry the socket programs: the meshed pods' (see
/// [`pods`]). Re-checked after every config change and every
/// [`CGROUP_RESCAN`], since a pod's cgroup appears after its Pod object.
struct Capture {
    root: PathBuf,
    attached: Option<Vec<PathBuf>>,
}

/// How often the pods cgroup is searched for new or ended pods.
const CGROUP_RESCAN: Duration = Duration::from_millis(500);

impl Capture {
    fn sync(&mut self, datapath: &mut Datapath, enrollment: &Enrollment) {
        let found = pods::pod_cgroups(&self.root);
        let want = pods::meshed_cgroups(enrollment, &found);
        if self.attached.as_ref() == Some(&want) {
            return;
        }
        let failed = datapath.attach_each(&want);
        for (cg, e) in &failed {
            tracing::warn!(cgroup = %cg.display(), "pod not captured: {e:#}");
        }
        let captured: Vec<PathBuf> = want
            .iter()
            .filter(|w| !failed.iter().any(|(f, _)| f == *w))
            .cloned()
            .collect();
        tracing::info!(
            meshed_pods = captured.len(),
            pods_found = found.len(),
            "pod capture updated"
        );
        // A failed attach is tried again at the next rescan.
        self.attached = failed.is_empty().then_some(want);
    }
}

async fn serve(args: RunArgs, cgroup2: PathBuf) -> anyhow::Result<()> {
    let (mut store, mut changes, _source) = open_source(&args).await?;
    let (snap, enrollment) = compile(&mut *store);
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
    let mut capture = Capture {
        root: pods.clone(),
        attached: None,
    };
    capture.sync(&mut datapath, &enrollment);
    apply_kernel(&mut datapath, &snap, &enrollment);
    let orig = KernelOriginalDst(OriginalDestinations::open(datapath.pin_dir())?);

    let proxy =
        Proxy::new(&snap).map_err(|e| anyhow::anyhow!("building the proxy's routes: {e}"))?;
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
    });

    let admin_task = tokio::spawn(crate::admin::serve(admin_listener, live.clone()));
    // Thread-per-core: one worker (own single-threaded runtime) per CPU.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let proxy_workers = proxy
        .serve_workers(outbound, orig, workers)
        .context("starting the proxy workers")?;
    let reload_live = live.clone();
    let reload_identity = args
        .identity
        .as_ref()
        .map(|i| (i.trust_domain.clone(), args.node.clone()));
    let reload_secrets = secrets.clone();
    let reload_task = tokio::spawn(async move {
        let mut enrollment = enrollment;
        let mut rescan = tokio::time::interval(CGROUP_RESCAN);
        loop {
            tokio::select! {
                change = changes.recv() => if change.is_none() { break },
                _ = rescan.tick() => {
                    capture.sync(&mut datapath, &enrollment);
                    continue;
                }
            }
            // One recompile for a burst of changes.
            while changes.try_recv().is_ok() {}
            let started = Instant::now();
            let (snap, enrolled) = compile(&mut *store);
            if enrolled != enrollment {
                enrollment = enrolled;
                capture.sync(&mut datapath, &enrollment);
                if let Err(e) = datapath.set_workloads(&meshed_ips(&snap, &enrollment)) {
                    tracing::error!("writing the meshed workloads: {e:#}");
                }
            }
            if **reload_live.snapshot.load() == snap {
                tracing::debug!("config unchanged");
                continue;
            }
            if let Err(e) = reload_live.proxy.update(&snap) {
                tracing::error!("new config not applied, the last good one keeps serving: {e}");
                continue;
            }
            apply_kernel(&mut datapath, &snap, &enrollment);
            if let (Some(mgr), Some((td, node))) = (&reload_secrets, &reload_identity) {
                mgr.set_wanted(&identity::wanted(&snap, node, td));
            }
            reload_live.snapshot.store(Arc::new(snap));
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "config reloaded"
            );
        }
        datapath
    });
    live.set_ready(true);
    tracing::info!(
        node = %args.node, pods_cgroup = %pods.display(), outbound = %args.outbound,
        admin = %args.admin, config = %source_name(&args), "strait is serving"
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

fn source_name(args: &RunArgs) -> String {
    match &args.kube {
        None => args.config.display().to_string(),
        Some(KubeArgs {
            kubeconfig: Some(k),
        }) => format!("kubeconfig {}", k.display()),
        Some(_) => "in-cluster API server".into(),
    }
}

fn apply_kernel(datapath: &mut Datapath, snap: &MeshSnapshot, enrollment: &Enrollment) {
    match datapath.apply(&snap.l4) {
        Ok(report) => tracing::debug!(?report, "kernel tables written"),
        Err(e) => tracing::error!("writing the kernel service tables: {e:#}"),
    }
    if let Err(e) = datapath.set_workloads(&meshed_ips(snap, enrollment)) {
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
