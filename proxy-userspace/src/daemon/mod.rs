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
mod compiler;
pub mod hbone;
pub mod identity;
pub mod inbound;
mod kernel_tcp;
pub mod lock;
pub mod outbound_guard;
pub mod pods;
pub mod preflight;
mod priority;
pub mod privs;
pub mod shutdown;
pub mod sink;
pub mod state;
pub mod watch;

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use strait_config::enroll::Enrollment;
use strait_config::load::Limits;
use strait_config::snapshot::MeshSnapshot;
use strait_config::Diagnostic;

use crate::datapath::{Datapath, DatapathConfig, OriginalDestinations};
use crate::serve::{OriginalDst, Proxy};
use crate::sources::{ConfigStore, Source};
use crate::telemetry::Metrics;
use state::Live;

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
    /// The IPv6 outbound listener (`--outbound6`): where REDIRECT-mode
    /// IPv6 VIPs and meshed pods' IPv6 addresses are sent; `None`: such
    /// TCP connections are refused in the kernel.
    pub outbound6: Option<std::net::SocketAddrV6>,
    /// Longest wait for in-flight requests at shutdown.
    pub drain: Duration,
    /// Print one access-log line per request on stdout.
    pub access_log: bool,
    /// In-pod inbound capture ([`inbound`]); on unless
    /// `--no-inbound-capture`. Without `identity` it still steers
    /// policy-protected ports to the plaintext inbound listener and refuses
    /// STRICT ones in the kernel; PeerAuthentication is then also failed
    /// closed in the snapshot ([`compile_options`]).
    pub inbound_capture: bool,
    /// Kubelet probes (plain text from the node's address to a pod's probe
    /// ports) pass the in-pod capture; off with `--no-probe-exemption`.
    pub probe_exemption: bool,
    /// Node uplink to attach the XDP program to (external VIP balancer and
    /// source-prefix deny); none: no XDP program.
    pub xdp_uplink: Option<String>,
    /// Outer source address of tunnelled packets (default: the uplink's
    /// first IPv4 address).
    pub xdp_source: Option<std::net::Ipv4Addr>,
    /// Outer source address of ip6ip6-tunnelled packets (default: the
    /// uplink's first global IPv6 address).
    pub xdp_source6: Option<std::net::Ipv6Addr>,
    /// Gateway MAC for tunnelled packets (default: the neighbour entry of
    /// the uplink's default gateway).
    pub xdp_gateway_mac: Option<[u8; 6]>,
    /// `--xdp-gateway-mac6`: the IPv6 next hop's MAC (else from the NDP
    /// table).
    pub xdp_gateway_mac6: Option<[u8; 6]>,
    /// Replace pinned maps of an unusable layout instead of refusing
    /// ([`DatapathConfig::reset_maps`]).
    pub reset_maps: bool,
    /// Redirect same-node hops through the proxy socket to socket
    /// ([`DatapathConfig::sockmap`], `datapath::sockmap`).
    pub sockmap: bool,
    /// Bounds on config files (size, documents, nesting depth).
    pub limits: Limits,
    /// Workload certificates for the node's pods (none: no identity).
    pub identity: Option<identity::IdentityArgs>,
    /// The L7 proxy's HTTP limits and timeouts (request-headers, stream
    /// idle and connection idle timeouts, connection cap).
    pub proxy: crate::serve::ProxySettings,
}

/// Where `strait run` finds its API server.
#[derive(Clone, Debug)]
pub struct KubeArgs {
    /// The kubeconfig; `None`: the in-cluster config.
    pub kubeconfig: Option<PathBuf>,
    /// What is watched beyond the defaults (the mesh config's namespace).
    pub watch: crate::sources::kube::WatchOptions,
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
    // Pending until serving installs the handlers ([`shutdown`]): a stop
    // request never cuts setup halfway nor kills a daemon that is ready.
    shutdown::block_stop_signals()?;
    crate::sys::tune_allocator();
    let dir = args.kube.is_none().then_some(args.config.as_path());
    let cgroup2 = preflight::check(dir)?;
    hbone::set_enabled(args.identity.is_some());
    let mut dp_cfg = DatapathConfig::new(&args.node);
    dp_cfg.bpffs = args.bpffs.clone();
    dp_cfg.outbound = args.outbound;
    dp_cfg.outbound6 = args.outbound6;
    dp_cfg.reset_maps = args.reset_maps;
    dp_cfg.sockmap = args.sockmap;
    let node_lock = lock::lock_node(
        std::path::Path::new(lock::LOCK_DIR),
        &dp_cfg.pin_dir(),
        &args.node,
    )?;
    tracing::debug!(lock = %node_lock.path().display(), "node lock taken");
    let setup = setup(&args, &dp_cfg, cgroup2)?;
    // The first config's parse tree and the eBPF loader's buffers are gone:
    // return their pages before the serving threads start (issue 20).
    crate::sys::release_free_memory();
    release_code_pages("setup");
    // Opening sockets in pods' network namespaces (HBONE, and the
    // plaintext inbound listener of the in-pod capture) needs setns.
    let sys_admin = args.identity.is_some() || args.inbound_capture;
    let sys_nice = args.proxy.worker_priority.is_some();
    privs::drop_privileges(sys_admin, sys_nice)?;
    tracing::info!(
        kept = ?privs::KEEP,
        sys_admin,
        sys_nice,
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

/// Unmaps the executable's read-only pages at the end of a phase whose
/// code serving does not run (start-up, a reload): only the code and data
/// the daemon uses afterwards are mapped again (issue 20: RSS per node;
/// [`crate::sys::code`]). Off with `STRAIT_RELEASE_CODE_PAGES=0`.
fn release_code_pages(phase: &'static str) {
    if !crate::sys::code::release_enabled() {
        return;
    }
    let bytes = crate::sys::code::release_code_pages();
    tracing::debug!(
        phase,
        released_kib = bytes / 1024,
        "executable pages released"
    );
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
/// object), and decide which pods are meshed. `None` when the inputs are
/// byte-identical to the previous reload's.
pub(crate) fn compile(store: &mut dyn Source) -> Option<(MeshSnapshot, Enrollment)> {
    compile_opts(store, &strait_config::CompileOptions::default())
}

/// [`compile`] for a data plane that can enforce what `opts` says (a
/// full compile each call; the reload loop keeps a [`compiler::Compiler`]).
pub(crate) fn compile_opts(
    store: &mut dyn Source,
    opts: &strait_config::CompileOptions,
) -> Option<(MeshSnapshot, Enrollment)> {
    let mut c = compiler::Compiler::new(*opts, hbone::enabled());
    c.reload(store, None)?;
    Some((c.snapshot().clone(), c.enrollment().clone()))
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
        let found = match pods::pod_cgroups(&self.root) {
            Ok(found) => found,
            Err(e) => {
                // Keep every pod captured as it is: a pod we could not see
                // is not a pod that left.
                tracing::warn!(root = %self.root.display(), "pods cgroup not listed, capture unchanged: {e}");
                return;
            }
        };
        let want = pods::meshed_cgroups(enrollment, &found);
        if self.attached.as_ref() == Some(&want) {
            return;
        }
        let failed = datapath.attach_each(&want);
        for (cg, e) in &failed {
            tracing::warn!(cgroup = %cg.display(), "pod not captured: {e:#}");
        }
        tracing::info!(
            meshed_pods = want.len() - failed.len(),
            pods_found = found.len(),
            "pod capture updated"
        );
        // A failed attach is tried again at the next rescan.
        self.attached = failed.is_empty().then_some(want);
    }
}

/// Keeps the config source's watch alive.
enum SourceGuard {
    Files(#[allow(dead_code)] watch::ConfigWatch),
    Kube(#[allow(dead_code)] crate::sources::kube::KubeWatch),
}

/// What setup hands to serving.
struct Setup {
    /// The config directory; `None` with an API server (opened in serve).
    store: Option<ConfigStore>,
    /// The first config (directory only).
    first: Option<(MeshSnapshot, Enrollment)>,
    /// What compiled it; the reload loop keeps compiling with it.
    compiler: compiler::Compiler,
    admin: std::net::TcpListener,
    outbound: std::net::TcpListener,
    /// The IPv6 outbound listener (`--outbound6`).
    outbound6: Option<std::net::TcpListener>,
    datapath: Datapath,
    /// Whether the first kernel write succeeded (else the first reload
    /// writes the whole table).
    kernel_ok: bool,
    orig: KernelOriginalDst,
    pods: PathBuf,
    capture: Capture,
    /// The outbound listener's source filter (this node only).
    guard: outbound_guard::OutboundGuard,
    /// In-pod inbound capture (unless `--no-inbound-capture`).
    inbound: Option<inbound::Inbound>,
    /// The uplink's IPv6 gateway MAC, when it was not known at start.
    gateway6: Option<crate::datapath::PendingGateway6>,
    /// The uplink's MTU announcements (with `--xdp-uplink`).
    mtu_watch: Option<crate::datapath::MtuWatch>,
}

/// What the compiled snapshot may leave to this daemon: PeerAuthentication
/// is enforced in the pods' namespaces when it has a CA.
fn compile_options(args: &RunArgs) -> strait_config::CompileOptions {
    strait_config::CompileOptions {
        peer_authn_enforced: args.inbound_capture && args.identity.is_some(),
    }
}

/// Everything that needs privileges, on the calling thread.
fn setup(args: &RunArgs, dp_cfg: &DatapathConfig, cgroup2: PathBuf) -> anyhow::Result<Setup> {
    let node_ips = crate::sys::node_addresses();
    let mut own = vec![args.admin, SocketAddr::V4(args.outbound)];
    own.extend(args.outbound6.map(SocketAddr::V6));
    crate::upstream::self_guard::set(own, node_ips.clone());
    let mut compiler = compiler::Compiler::new(compile_options(args), hbone::enabled());
    let (store, first) = match args.kube {
        None => {
            let mut store = ConfigStore::with_limits(&args.config, args.limits)
                .with_node_addresses(node_ips.clone());
            compiler.reload(&mut store, None);
            let first = (compiler.snapshot().clone(), compiler.enrollment().clone());
            tracing::info!(
                services = first.0.services.len(),
                clusters = first.0.clusters.len(),
                kernel_services = first.0.l4.len(),
                "config compiled"
            );
            // The parse and schema trees are freed and the YAML, schema
            // and compile code will not run again before a reload: return
            // both before the eBPF loader runs, so start-up's peak holds
            // one phase's pages, not both (issue 20).
            crate::sys::release_free_memory();
            release_code_pages("config");
            (Some(store), Some(first))
        }
        // The API server is read once serving starts; the kernel tables
        // pinned by a previous run keep serving until then.
        Some(_) => (None, None),
    };

    let admin = crate::admin::bind_std(args.admin)?;
    let outbound = crate::serve::workers::bind(SocketAddr::V4(args.outbound)).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on outbound address {}: {e} (is another strait running? pass --outbound ADDR)",
            args.outbound
        )
    })?;

    let outbound6 = match args.outbound6 {
        Some(a) => Some(crate::serve::workers::bind(SocketAddr::V6(a)).map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on IPv6 outbound address {a}: {e} (is another strait running? pass --outbound6 ADDR)"
            )
        })?),
        None => None,
    };
    let mut guard = outbound_guard::OutboundGuard::new(
        outbound
            .try_clone()
            .context("duplicating the outbound listener")?,
        outbound6
            .as_ref()
            .map(std::net::TcpListener::try_clone)
            .transpose()
            .context("duplicating the IPv6 outbound listener")?,
        &args.node,
        node_ips,
    )
    .context("attaching the outbound listener's source filter")?;
    if let Some((_, enrollment)) = &first {
        guard.update(enrollment);
    }
    let mut datapath = Datapath::new(dp_cfg)?;
    let pods = args
        .pods_cgroup
        .clone()
        .unwrap_or_else(|| cgroup2.join(format!("strait-{}", args.node)).join("pods"));
    std::fs::create_dir_all(&pods)
        .with_context(|| format!("creating the pods cgroup {}", pods.display()))?;
    datapath.load_socket_programs()?;
    if args.sockmap {
        match crate::datapath::sockmap::own_cgroup() {
            Ok(own) => {
                datapath.start_sockmap(&own);
            }
            Err(e) => tracing::warn!(
                "sockmap: the daemon's own cgroup is unknown, running without the redirect: {e:#}"
            ),
        }
    }
    let inbound = if args.inbound_capture {
        Some(inbound::Inbound::new(
            &mut datapath,
            &pods,
            args.probe_exemption,
        )?)
    } else {
        tracing::warn!("{}", inbound::UNENFORCED);
        None
    };
    let mut gateway6 = None;
    let mut mtu_watch = None;
    if let Some(iface) = &args.xdp_uplink {
        let uplink = crate::datapath::resolve_uplink(iface, args.xdp_source, args.xdp_gateway_mac)?;
        datapath.attach_uplink(iface, &uplink)?;
        let uplink6 =
            crate::datapath::resolve_uplink6(iface, args.xdp_source6, args.xdp_gateway_mac6);
        if let Some(w) = &uplink6.warning {
            tracing::warn!(uplink = %iface, "{w}");
        }
        datapath.configure_uplink6(uplink6.config.as_ref())?;
        gateway6 = crate::datapath::PendingGateway6::new(iface, &uplink6);
        // Subscribed after the MTU was read at attach: a change in between
        // is caught by the first 500 ms re-read.
        mtu_watch = datapath.watch_uplink_mtu().unwrap_or_else(|e| {
            tracing::warn!(uplink = %iface, "{e:#}: the uplink MTU is re-read every 500 ms only");
            None
        });
    } else {
        datapath.detach_uplink();
    }
    let mut capture = Capture {
        root: pods.clone(),
        attached: None,
    };
    let mut kernel_ok = true;
    if let Some((snap, enrollment)) = &first {
        capture.sync(&mut datapath, enrollment);
        kernel_ok = apply_kernel(&mut datapath, snap, enrollment);
    }
    let orig = KernelOriginalDst(OriginalDestinations::open(datapath.pin_dir())?);
    Ok(Setup {
        store,
        first,
        compiler,
        admin,
        outbound,
        outbound6,
        datapath,
        kernel_ok,
        orig,
        pods,
        capture,
        guard,
        inbound,
        gateway6,
        mtu_watch,
    })
}

/// Serves until SIGTERM/SIGINT, then drains. The handlers are installed
/// before anything serves and the signals unblocked only then
/// ([`shutdown`]): one sent during setup, or as soon as `/ready` answers,
/// stops the daemon with exit 0, never kills it. One during the rest of
/// start-up (the API server's first sync, the first certificates) stops
/// it before it serves.
async fn serve(args: RunArgs, setup: Setup) -> anyhow::Result<()> {
    let mut stop = shutdown::Shutdown::install()?;
    shutdown::unblock_stop_signals()?;
    let running = tokio::select! {
        r = start(&args, setup) => r?,
        () = stop.recv() => {
            tracing::info!("SIGTERM/SIGINT during start-up: stopping before serving");
            return Ok(());
        }
    };
    stop.recv().await;
    tracing::info!(
        drain_ms = args.drain.as_millis() as u64,
        "shutting down: draining in-flight requests"
    );
    running.live.set_ready(false);
    running.workers.shutdown(args.drain).await;
    running.admin.abort();
    tracing::info!("stopped; kernel maps stay pinned for the next start");
    Ok(())
}

/// What [`start`] leaves running until the stop request.
struct Running {
    live: Arc<Live>,
    workers: crate::serve::workers::Workers,
    admin: tokio::task::JoinHandle<()>,
}

/// Everything from the first config to `/ready` saying ready: the proxy,
/// the admin API, the reload thread.
async fn start(args: &RunArgs, setup: Setup) -> anyhow::Result<Running> {
    let Setup {
        store,
        first,
        admin,
        outbound,
        outbound6,
        mut datapath,
        mut kernel_ok,
        orig,
        pods,
        mut capture,
        mut guard,
        mut inbound,
        mut compiler,
        mut gateway6,
        mtu_watch,
    } = setup;
    // The source and its first config: the directory's was compiled in
    // setup; an API server's once every watched kind is listed.
    let (mut store, changes, source_guard, first): (Box<dyn Source>, _, _, _) = match (store, first)
    {
        (Some(mut store), Some(first)) => {
            // Reloads re-read only the files the watcher names.
            let paths = crate::sources::ChangedPaths::default();
            store.follow(paths.clone());
            let (w, changes) = watch::watch(&args.config, paths)?;
            (Box::new(store), changes, SourceGuard::Files(w), first)
        }
        _ => {
            let k = args.kube.clone().context("no config source")?;
            let client = crate::sources::kube::client(k.kubeconfig.as_deref())
                .await
                .context("connecting to the Kubernetes API server")?;
            let (mut store, changes, mut w) = crate::sources::kube::start(client, &k.watch);
            tracing::info!("waiting for the initial list of every watched kind");
            w.wait_synced().await;
            tracing::info!(counts = ?w.counts(), "API server in sync");
            compiler.reload(&mut store, None);
            let first = (compiler.snapshot().clone(), compiler.enrollment().clone());
            capture.sync(&mut datapath, &first.1);
            guard.update(&first.1);
            apply_kernel(&mut datapath, &first.0, &first.1);
            (Box::new(store), changes, SourceGuard::Kube(w), first)
        }
    };
    let (snap, enrollment) = first;
    let admin_listener = tokio::net::TcpListener::from_std(admin)
        .with_context(|| format!("admin listener {}", args.admin))?;
    // Security policy is enforced for the workloads of this node.
    let scope = crate::policy::Scope {
        node: Some(args.node.clone()),
        ..Default::default()
    };
    let settings = crate::serve::ProxySettings {
        policy_scope: scope.clone(),
        ..args.proxy.clone()
    };
    let proxy = Proxy::with_scope(&snap, scope)
        .map_err(|e| anyhow::anyhow!("building the proxy's routes: {e}"))?
        .with_settings(settings.clone());
    proxy.follow_mesh_config(&snap);
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
        Some(id) => {
            Some(identity::start(id, &args.node, snapshot.clone(), &enrollment, &metrics).await?)
        }
        None => None,
    };
    // mTLS between workloads (HBONE) when the node has identities.
    let mesh = match (&secrets, &args.identity) {
        (Some(s), Some(id)) => Some(hbone::Hbone::new(
            s.store().clone(),
            &id.trust_domain,
            &args.node,
            &id.cluster_id,
            &pods,
            args.access_log,
        )),
        _ => None,
    };
    // The external authorizer's check requests take the same outbound
    // decision as the proxy's connections (HBONE to a meshed authorizer).
    crate::policy::ext_authz::set_dialer(Some(Box::new(
        crate::transport::hbone::control::MeshDialer(mesh.as_ref().map(|m| m.outbound.clone())),
    )));
    let proxy = match &mesh {
        Some(m) => {
            let p = proxy.with_settings(crate::serve::ProxySettings {
                hbone: Some(m.outbound.clone()),
                ..settings
            });
            p.follow_mesh_config(&snapshot.load());
            p
        }
        None => proxy,
    };
    let sink = sink::TelemetrySink::new(snapshot.clone(), metrics.clone(), args.access_log);
    let proxy = proxy.with_access_log(Arc::new(sink));
    if let Some(m) = &mesh {
        m.set_proxy(proxy.clone());
        m.update(&snapshot.load(), &enrollment);
    }
    let live = Arc::new(Live {
        snapshot: snapshot.clone(),
        ready: AtomicBool::new(false),
        metrics,
        proxy: proxy.clone(),
        reload_started_ms: AtomicU64::new(0),
        certs: secrets.as_ref().map(|s| s.store().clone()),
    });

    if let Some(ib) = &mut inbound {
        ib.serve_with(proxy.clone(), snapshot.clone());
    }
    let admin_task = tokio::spawn(crate::admin::serve(admin_listener, live.clone()));
    if let Some(w) = mtu_watch {
        tokio::spawn(watch_uplink_mtu(w));
    }
    // Thread-per-core: one worker (own single-threaded runtime) per CPU.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let proxy_workers = proxy
        .serve_workers_on(outbound, outbound6, orig, workers)
        .context("starting the proxy workers")?;
    if let Some(m) = &mesh {
        m.serve_on_workers(proxy_workers.spawner());
    }
    let reload_live = live.clone();
    let reload_identity = args
        .identity
        .as_ref()
        .map(|i| (i.trust_domain.clone(), args.node.clone()));
    let reload_secrets = secrets.clone();
    let reload_mesh = mesh.clone();
    // Reloads run on their own thread: reading and compiling a large or
    // hostile config never occupies the runtime serving the admin API and
    // the shutdown signal. The thread is not joined at exit.
    // The runtime's context: a reload may start tasks (certificate renewals).
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("strait-reload".into())
        .spawn(move || {
            priority::lower_this_thread();
            let _runtime = runtime.enter();
            let _source = source_guard;
            let mut enrollment = enrollment;
            match &mut inbound {
                Some(ib) => ib.sync(&mut datapath, &reload_live.snapshot.load(), &enrollment),
                None => inbound::warn_unenforced(&reload_live.snapshot.load()),
            }
            let mut kernel_tcp = kernel_tcp::KernelTcpMetrics::default();
            loop {
                kernel_tcp.poll(
                    &datapath,
                    &reload_live.snapshot.load(),
                    &reload_live.metrics,
                    false,
                );
                // Pod cgroups come and go between config changes: look
                // for them while no change arrives.
                match changes.recv_timeout(CGROUP_RESCAN) {
                    Ok(()) => rest_of_burst(&changes),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        capture.sync(&mut datapath, &enrollment);
                        if let Some(ib) = &mut inbound {
                            ib.sync(&mut datapath, &reload_live.snapshot.load(), &enrollment);
                        }
                        if let Some(m) = &reload_mesh {
                            m.sync();
                        }
                        retry_gateway6(&mut gateway6, &mut datapath);
                        follow_uplink_mtu(&mut datapath);
                        continue;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
                reload_live.set_reloading(true);
                let reloaded = reload_once(
                    &mut *store,
                    &mut compiler,
                    &reload_live,
                    &mut datapath,
                    &mut capture,
                    &mut enrollment,
                    &mut kernel_ok,
                );
                if let (None, Some(snap)) = (&inbound, &reloaded) {
                    inbound::warn_unenforced(snap);
                }
                guard.update(&enrollment);
                follow_uplink_mtu(&mut datapath);
                if let Some(ib) = &mut inbound {
                    ib.sync(&mut datapath, &reload_live.snapshot.load(), &enrollment);
                }
                // After every reload: a pod joining or leaving the mesh
                // (a label flip) changes the identities without changing
                // the snapshot.
                if let (Some(mgr), Some((td, node))) = (&reload_secrets, &reload_identity) {
                    let snap = reload_live.snapshot.load();
                    mgr.set_wanted(&identity::wanted(&snap, &enrollment, node, td));
                }
                if let Some(m) = &reload_mesh {
                    m.update(&reload_live.snapshot.load(), &enrollment);
                }
                reload_live.set_reloading(false);
                // The reload's parse trees, schema trees and the replaced
                // snapshot were freed on this thread: return their pages
                // now (issue 20: RSS per node; a few hundred µs).
                crate::sys::release_free_memory();
                if reloaded.is_some() {
                    release_code_pages("reload");
                }
            }
        })
        .context("starting the reload thread")?;
    // With mesh mTLS: LIVE once the local workloads' certificates are in
    // (bounded: a CA outage must not keep the node from serving).
    if let Some(s) = &secrets {
        s.wait_ready(Duration::from_secs(10)).await;
    }
    // Before /ready says LIVE: start-up's code is unmapped before traffic.
    release_code_pages("certificates");
    live.set_ready(true);
    tracing::info!(
        node = %args.node, pods_cgroup = %pods.display(), outbound = %args.outbound,
        admin = %args.admin, config = %source_name(args), "strait is serving"
    );
    Ok(Running {
        live,
        workers: proxy_workers,
        admin: admin_task,
    })
}

/// Makes the XDP balancer's "too big" check follow the uplink's MTU as
/// the kernel announces it ([`crate::datapath::MtuWatch`]): one task on
/// the runtime, woken by the netlink socket; a change is logged. Lost
/// announcements are the 500 ms re-read's ([`follow_uplink_mtu`]); a socket
/// error ends the watch (warned), leaving the MTU to that re-read.
async fn watch_uplink_mtu(watch: crate::datapath::MtuWatch) {
    // SAFETY: the watch owns its socket; the descriptor stays open and the
    // same for the watch's life, which the `AsyncFd` holds.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(watch, tokio::io::Interest::READABLE)
    };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("the uplink MTU is re-read every 500 ms only: {e}");
            return;
        }
    };
    loop {
        let mut ready = match fd.readable_mut().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("the uplink MTU is re-read every 500 ms only: {e}");
                return;
            }
        };
        let watch = ready.get_inner_mut();
        match watch.read() {
            Ok(r) => {
                if let Some((old, new)) = r.changed {
                    log_mtu_change(old, new, "netlink");
                }
                if r.lost {
                    tracing::debug!(
                        uplink = watch.iface(),
                        "link announcements lost: the 500 ms re-read catches up"
                    );
                }
            }
            Err(e) => {
                // A socket that fails once may stay readable and fail
                // again: stop rather than spin, the re-read carries on.
                tracing::warn!(
                    uplink = watch.iface(),
                    "following the uplink MTU: {e:#}; the MTU is re-read every 500 ms only from now on"
                );
                return;
            }
        }
        // `read` returned once the socket had nothing left.
        ready.clear_ready();
    }
}

fn log_mtu_change(old: u16, new: u16, via: &'static str) {
    tracing::info!(
        old,
        new,
        via,
        "uplink MTU changed: VIP packets that no longer fit once tunnelled are answered with ICMP too big at the new MTU"
    );
}

/// Makes the XDP balancer's "too big" check follow the uplink's MTU (see
/// [`Datapath::follow_uplink_mtu`]): the fallback of [`watch_uplink_mtu`];
/// a change is logged.
fn follow_uplink_mtu(dp: &mut Datapath) {
    match dp.follow_uplink_mtu() {
        Ok(Some((old, new))) => log_mtu_change(old, new, "rescan"),
        Ok(None) => {}
        Err(e) => tracing::warn!("writing the uplink MTU: {e:#}"),
    }
}

/// Writes the uplink's IPv6 gateway MAC once it is found (IPv6 VIPs were
/// dropped until then), and stops looking.
fn retry_gateway6(pending: &mut Option<crate::datapath::PendingGateway6>, dp: &mut Datapath) {
    let Some(cfg) = pending.as_mut().and_then(|p| p.retry()) else {
        return;
    };
    match dp.configure_uplink6(Some(&cfg)) {
        Ok(()) => {
            tracing::info!(source = %cfg.source, "IPv6 gateway MAC resolved: IPv6 external VIPs are balanced");
            *pending = None;
        }
        Err(e) => tracing::warn!("writing the IPv6 uplink settings: {e:#}"),
    }
}

/// Waits until [`watch::DEBOUNCE_MS`] pass without a change (at most
/// [`watch::MAX_DELAY_MS`]), as [`watch::next_burst`] does after its first.
fn rest_of_burst(rx: &std::sync::mpsc::Receiver<()>) {
    let until = Instant::now() + Duration::from_millis(watch::MAX_DELAY_MS);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(Duration::from_millis(watch::DEBOUNCE_MS).min(left)) {
            Ok(()) if !left.is_zero() => continue,
            _ => return,
        }
    }
}

/// One reload: read, compile (incrementally when only endpoints changed,
/// see [`compiler`]), decide enrollment, apply what changed to the proxy's
/// table and the kernel maps (from the snapshot diff: only the changed
/// clusters, route tables and kernel services are rebuilt or rewritten),
/// attach to the meshed pods, then publish the new snapshot. Returns the
/// snapshot now serving when it changed. `kernel_ok` is false after a
/// failed kernel write: the next reload then compares every kernel service
/// once more instead of trusting the diff.
fn reload_once(
    store: &mut dyn Source,
    compiler: &mut compiler::Compiler,
    live: &Live,
    datapath: &mut Datapath,
    capture: &mut Capture,
    enrollment: &mut Enrollment,
    kernel_ok: &mut bool,
) -> Option<Arc<MeshSnapshot>> {
    let started = Instant::now();
    let old = live.snapshot.load_full();
    let Some(step) = compiler.reload(store, Some(&old)) else {
        tracing::debug!("config files unchanged: nothing reloaded");
        return None;
    };
    tracing::info!(
        incremental = step.incremental,
        "config files changed: reloading"
    );
    let snap = compiler.snapshot();
    if step.enrollment_changed {
        *enrollment = compiler.enrollment().clone();
        capture.sync(datapath, enrollment);
        if let Err(e) = datapath.set_workloads(&meshed_ips(snap, enrollment)) {
            tracing::error!("writing the meshed workloads: {e:#}");
            *kernel_ok = false;
        }
    }
    let diff = step.diff.unwrap_or_default();
    // A full compile may change what the diff does not cover (mesh
    // config, VIPs, inbound modes): compare those snapshots whole.
    if diff.is_empty() && (step.incremental || *old == *snap) {
        tracing::debug!("config unchanged");
        return None;
    }
    drop(old);
    let compiled = started.elapsed();
    let counts = live.proxy.rebuild_counts();
    let rebuilt = match live.proxy.apply_diff(snap, &diff) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("new config not applied, the last good one keeps serving: {e}");
            // The next reload diffs against the snapshot in service.
            compiler.invalidate();
            return None;
        }
    };
    let proxied = started.elapsed();
    *kernel_ok = if *kernel_ok {
        apply_kernel_changes(datapath, snap, &diff, enrollment)
    } else {
        apply_kernel(datapath, snap, enrollment)
    };
    let written = started.elapsed();
    let snap = compiler.publish(step.incremental, &diff, &live.snapshot);
    let built = live.proxy.rebuild_counts();
    tracing::info!(
        incremental = step.incremental,
        elapsed_ms = started.elapsed().as_millis() as u64,
        compile_us = compiled.as_micros() as u64,
        proxy_us = (proxied - compiled).as_micros() as u64,
        kernel_us = (written - proxied).as_micros() as u64,
        diff_to_map_us = (written - compiled).as_micros() as u64,
        publish_us = (started.elapsed() - written).as_micros() as u64,
        clusters_rebuilt = rebuilt,
        route_tables_built = built.route_tables - counts.route_tables,
        policy_tables_built = built.policy_tables - counts.policy_tables,
        kernel_services_changed =
            diff.l4.added.len() + diff.l4.changed.len() + diff.l4.removed.len(),
        "config reloaded"
    );
    Some(snap)
}

fn source_name(args: &RunArgs) -> String {
    match &args.kube {
        None => args.config.display().to_string(),
        Some(KubeArgs {
            kubeconfig: Some(k),
            ..
        }) => format!("kubeconfig {}", k.display()),
        Some(_) => "in-cluster API server".into(),
    }
}

/// Makes the kernel tables hold `snap`'s; whether every write succeeded.
fn apply_kernel(datapath: &mut Datapath, snap: &MeshSnapshot, enrollment: &Enrollment) -> bool {
    let mut ok = true;
    match datapath.apply(&snap.l4) {
        Ok(report) => tracing::debug!(?report, "kernel tables written"),
        Err(e) => {
            tracing::error!("writing the kernel service tables: {e:#}");
            ok = false;
        }
    }
    if let Err(e) = datapath.set_workloads(&meshed_ips(snap, enrollment)) {
        tracing::error!("writing the meshed workloads: {e:#}");
        ok = false;
    }
    apply_uplink(datapath, snap);
    ok
}

/// The uplink XDP tables of `snap`: deny rules (AuthorizationPolicy DENY
/// by source address only; a failure is logged, the proxy enforces the
/// policies) and external VIPs.
fn apply_uplink(datapath: &mut Datapath, snap: &MeshSnapshot) {
    match datapath.apply_deny_policies(snap) {
        Ok(report) => tracing::debug!(?report, "XDP deny rules written"),
        Err(e) => {
            tracing::error!("writing the XDP deny rules (the proxy still enforces them): {e:#}")
        }
    }
    match datapath.apply_external_services(snap) {
        Ok(report) => tracing::debug!(?report, "XDP external VIPs written"),
        Err(e) => tracing::error!("writing the XDP external VIPs: {e:#}"),
    }
}

/// Writes the kernel part of a snapshot diff: the L4 services and meshed
/// workloads it names, nothing else. Whether every write succeeded.
fn apply_kernel_changes(
    datapath: &mut Datapath,
    snap: &MeshSnapshot,
    diff: &strait_config::snapshot::SnapshotDiff,
    enrollment: &Enrollment,
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
    // Which workloads are meshed also depends on enrollment: the whole set
    // is written when any workload changed.
    let w = &diff.workloads;
    if !w.added.is_empty() || !w.removed.is_empty() {
        if let Err(e) = datapath.set_workloads(&meshed_ips(snap, enrollment)) {
            tracing::error!("writing the meshed workloads: {e:#}");
            ok = false;
        }
    }
    // Deny rules follow policies and workloads; external VIPs follow
    // services and their endpoints (clusters). Both write only what
    // changed.
    if diff.policies_changed
        || !w.is_empty()
        || !diff.services.is_empty()
        || !diff.clusters.is_empty()
    {
        apply_uplink(datapath, snap);
    }
    ok
}
