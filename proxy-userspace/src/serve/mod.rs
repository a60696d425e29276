//! Strait's L7 proxy, its top layer: what Envoy does for Istio, for the
//! traffic the kernel redirects to the node proxy (ARCHITECTURE.md, "What
//! runs where"). `serve` holds the listeners, connection handling and the
//! request path; it uses `upstream` (clusters' live state), `transport`
//! and `runtime` (route tables) below it, never the other way round
//! (`cargo xtask layers`).
//!
//! ```text
//! accept → OriginalDst → service (VIP:port) → protocol (declared / sniffed)
//!   HTTP/1.1, HTTP/2, gRPC → route match → CORS, redirect, fault, rewrite,
//!        headers, mirror → cluster (LB, circuit breaker, outlier) → retries
//!   TCP / TLS (by SNI)     → tcp / tls route → cluster → bytes both ways
//! ```
//!
//! Public API for the daemon and the benchmarks: [`Proxy`].
pub(crate) mod conn_exec;
pub(crate) mod counted;
pub(crate) mod failure;
pub mod http;
pub mod inbound;
pub(crate) mod local_reply;
pub mod sched;
pub mod sched_auto;
pub(crate) mod server;
pub mod slice;
pub mod table;
pub(crate) mod tcp;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

pub use crate::telemetry::access_log::{
    AccessLogRecord, AccessLogSink, LogFormat, NoAccessLog, StdoutAccessLog,
};
pub use crate::telemetry::flags::ResponseFlags;
pub use crate::transport::orig_dst::{FixedDestination, OriginalDst, StaticOriginalDst};
pub use http::normalize::PathNormalization;
pub use table::Table;
pub use workers::Workers;

use crate::runtime::compile::CompileError;
use crate::upstream::cluster;

/// Proxy-wide settings (Istio `meshConfig` equivalents).
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// How long to wait for the client's first bytes on a port without a
    /// declared protocol before treating it as opaque TCP (Istio
    /// `protocolDetectionTimeout`, default 0 = wait; here default 100 ms so
    /// server-first protocols are not stalled for long).
    pub protocol_detection_timeout: Duration,
    /// Whose security policies this proxy enforces (node name, root
    /// namespace); see [`crate::policy::Scope`].
    pub policy_scope: crate::policy::Scope,
    /// Longest time from a request head's first byte to its last (Envoy's
    /// `request_headers_timeout`; Envoy's edge-proxy guidance uses 10 s).
    /// A client slower than this (slowloris) is disconnected. Default 10 s.
    pub request_headers_timeout: Duration,
    /// Longest wait for more of a request body that is being read before
    /// routing, with no byte arriving (Envoy's `stream_idle_timeout`,
    /// default 5 min): `408` then close.
    pub stream_idle_timeout: Duration,
    /// A client connection with no request in flight for this long is
    /// closed (Envoy's `common_http_protocol_options.idle_timeout`,
    /// default 1 h).
    pub idle_timeout: Duration,
    /// Most client connections served at once, over all workers (Envoy's
    /// overload manager `global_downstream_max_connections`). One more is
    /// answered `503` (`OL`, "envoy overloaded") on HTTP ports, or closed,
    /// at once. Default 32,768.
    pub max_connections: usize,
    /// Initial path normalization (Istio's `meshConfig.pathNormalization`,
    /// default `BASE`); change it while serving with
    /// [`Proxy::set_path_normalization`].
    pub path_normalization: PathNormalization,
    /// Mutual TLS between workloads (HBONE), when the daemon has workload
    /// identities: connections to meshed workloads go through it.
    pub hbone: Option<std::sync::Arc<crate::transport::hbone::MeshOutbound>>,
    /// The scheduler slice each proxy worker thread asks for
    /// ([`slice::request`], `strait run --worker-slice-us`); `None`: the
    /// kernel's default. Only the workers ask, not the daemon's other
    /// threads.
    pub worker_slice: Option<Duration>,
    /// The scheduling priority each proxy worker thread takes
    /// ([`sched::WorkerPriority`], `strait run --worker-priority`); `None`:
    /// the daemon's own (normally nice 0, `SCHED_OTHER`).
    pub worker_priority: Option<sched::WorkerPriority>,
    /// Whether the kernel refusing [`Self::worker_priority`] fails
    /// [`workers::Workers::start`] (asked for on the command line) or is
    /// one warning, the workers then keeping the daemon's priority
    /// (`strait run`'s default `auto`).
    pub worker_priority_required: bool,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            protocol_detection_timeout: Duration::from_millis(100),
            policy_scope: crate::policy::Scope::default(),
            request_headers_timeout: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(3600),
            max_connections: 32_768,
            path_normalization: PathNormalization::Base,
            hbone: None,
            worker_slice: None,
            worker_priority: None,
            worker_priority_required: false,
        }
    }
}

/// State shared by every connection of a proxy.
pub struct Shared {
    /// The current runtime table.
    pub table: ArcSwap<Table>,
    /// Live upstream state across tables (pools, breakers, ejections).
    pub registry: cluster::Registry,
    /// Access-log sink.
    pub sink: Arc<dyn AccessLogSink>,
    /// Settings.
    pub settings: ProxySettings,
    /// The path normalization in force (changeable while serving).
    pub path_normalization: http::normalize::PathNormalizationCell,
    /// Client connections being served now, over all listeners and
    /// workers (checked against `settings.max_connections`).
    pub connections: std::sync::atomic::AtomicUsize,
    /// What table swaps built anew, over the proxy's life.
    pub rebuilds: Arc<table::RebuildCounters>,
}

impl Shared {
    fn new(
        table: ArcSwap<Table>,
        registry: cluster::Registry,
        sink: Arc<dyn AccessLogSink>,
        settings: ProxySettings,
    ) -> Self {
        Self {
            table,
            registry,
            sink,
            path_normalization: http::normalize::PathNormalizationCell::new(
                settings.path_normalization,
            ),
            settings,
            connections: std::sync::atomic::AtomicUsize::new(0),
            rebuilds: Arc::default(),
        }
    }
}

/// A running L7 proxy. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy serving the routes of `snapshot`, logging nowhere.
    ///
    /// Errors: the snapshot holds something the runtime cannot build (an
    /// invalid regex or header name that slipped through validation); the
    /// message names the route or cluster.
    pub fn new(snapshot: &strait_config::snapshot::MeshSnapshot) -> Result<Self, CompileError> {
        Self::with_scope(snapshot, crate::policy::Scope::default())
    }

    /// A proxy serving `snapshot` that enforces the security policies of
    /// the workloads `scope` makes local (the daemon: its node).
    pub fn with_scope(
        snapshot: &strait_config::snapshot::MeshSnapshot,
        scope: crate::policy::Scope,
    ) -> Result<Self, CompileError> {
        let registry = cluster::Registry::new();
        let (mut table, prepared) = table::compile_with(snapshot, &registry)?;
        registry.commit(&prepared);
        table.policy = crate::policy::PolicyTable::build(snapshot, &scope).map(Arc::new);
        let proxy = Self::with_registry(table, registry);
        let settings = ProxySettings {
            policy_scope: scope,
            ..ProxySettings::default()
        };
        let proxy = proxy.with_settings(settings);
        proxy.follow_mesh_config(snapshot);
        Ok(proxy)
    }

    /// A proxy serving an already built table (see [`table::compile`]; its
    /// clusters' state is not carried over by later [`Proxy::update`]s).
    pub fn from_table(table: Table) -> Self {
        Self::with_registry(table, cluster::Registry::new())
    }

    fn with_registry(table: Table, registry: cluster::Registry) -> Self {
        Self {
            shared: Arc::new(Shared::new(
                ArcSwap::from_pointee(table),
                registry,
                Arc::new(NoAccessLog),
                ProxySettings::default(),
            )),
        }
    }

    /// Sends access-log records to `sink` (must be called before
    /// [`Proxy::serve`]; later calls do not affect running listeners).
    pub fn with_access_log(self, sink: Arc<dyn AccessLogSink>) -> Self {
        let mut settings = self.shared.settings.clone();
        settings.path_normalization = self.shared.path_normalization.get();
        let mut shared = Shared::new(
            ArcSwap::new(self.shared.table.load_full()),
            self.shared.registry.clone(),
            sink,
            settings,
        );
        shared.rebuilds = self.shared.rebuilds.clone();
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Replaces the settings (before [`Proxy::serve`]).
    pub fn with_settings(self, settings: ProxySettings) -> Self {
        let mut shared = Shared::new(
            ArcSwap::new(self.shared.table.load_full()),
            self.shared.registry.clone(),
            self.shared.sink.clone(),
            settings,
        );
        shared.rebuilds = self.shared.rebuilds.clone();
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Compiles `snapshot` and swaps it in atomically. Requests already
    /// routed finish on the old table. Clusters whose config is unchanged
    /// keep their connections, ejections and breaker counters; changed ones
    /// keep them for the endpoints they still have (see
    /// [`cluster::registry`]). On error the old table stays live and
    /// nothing changes. Returns how many clusters were rebuilt.
    pub fn update(
        &self,
        snapshot: &strait_config::snapshot::MeshSnapshot,
    ) -> Result<usize, CompileError> {
        let (mut table, prepared) = table::compile_with(snapshot, &self.shared.registry)?;
        table.policy = self.build_policies(snapshot);
        self.shared
            .rebuilds
            .count(&table.routes.built, prepared.rebuilt());
        self.update_table(table);
        self.shared.registry.commit(&prepared);
        self.follow_mesh_config(snapshot);
        Ok(prepared.rebuilt())
    }

    /// Applies `snapshot` given what changed since the snapshot the table
    /// in service was built from (`diff`, from
    /// [`strait_config::snapshot::diff()`]): only the changed clusters are
    /// rebuilt, and only the service ports whose routes changed or name an
    /// added or removed cluster ([`table::compile_incremental`]; a changed
    /// cluster keeps its id, so its routes stay); the rest of the table is shared
    /// with the old one. The policy table is rebuilt when policies changed,
    /// or when workloads or clusters changed and policies exist (which
    /// workloads they select and the endpoints guarded depend on both);
    /// without policies it stays absent and nothing is built. Same
    /// guarantees as [`Proxy::update`]. Returns how many clusters were
    /// rebuilt; [`Proxy::rebuild_counts`] counts the rest.
    pub fn apply_diff(
        &self,
        snapshot: &strait_config::snapshot::MeshSnapshot,
        diff: &strait_config::snapshot::SnapshotDiff,
    ) -> Result<usize, CompileError> {
        let current = self.shared.table.load_full();
        let (mut table, prepared) =
            table::compile_incremental(snapshot, diff, &current, &self.shared.registry)?;
        let p = &snapshot.policies;
        let policies = !p.authorization.is_empty() || !p.request_authentication.is_empty();
        if diff.policies_changed
            || (policies && (!diff.workloads.is_empty() || !diff.clusters.is_empty()))
        {
            table.policy = self.build_policies(snapshot);
        }
        self.shared
            .rebuilds
            .count(&table.routes.built, prepared.rebuilt());
        drop(current);
        self.update_table(table);
        self.shared.registry.commit(&prepared);
        self.follow_mesh_config(snapshot);
        Ok(prepared.rebuilt())
    }

    fn build_policies(
        &self,
        snapshot: &strait_config::snapshot::MeshSnapshot,
    ) -> Option<Arc<crate::policy::PolicyTable>> {
        self.shared
            .rebuilds
            .policy_tables
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::policy::PolicyTable::build(snapshot, &self.shared.settings.policy_scope)
            .map(Arc::new)
    }

    /// What the table swaps of this proxy built anew so far (tests and the
    /// daemon's reload log check that a change rebuilds only its part).
    pub fn rebuild_counts(&self) -> table::RebuildCounts {
        self.shared.rebuilds.get()
    }

    /// Applies the MeshConfig settings the request path reads at run time:
    /// `pathNormalization.normalization` (Istio's `NONE`, `BASE`,
    /// `MERGE_SLASHES`, `DECODE_AND_MERGE_SLASHES`; absent: `BASE`, Istio's
    /// default). An unknown value keeps `BASE` and is logged. Called by
    /// [`Proxy::update`] and [`Proxy::apply_diff`]; the daemon also calls it
    /// after building the proxy.
    pub fn follow_mesh_config(&self, snapshot: &strait_config::snapshot::MeshSnapshot) {
        let name = snapshot
            .mesh
            .path_normalization
            .as_ref()
            .and_then(|v| v.get("normalization"))
            .and_then(|v| v.as_str());
        let mode = match name {
            None => PathNormalization::Base,
            Some(n) => PathNormalization::from_istio(n).unwrap_or_else(|| {
                tracing::warn!(
                    value = n,
                    "MeshConfig pathNormalization.normalization: unknown value, BASE applies"
                );
                PathNormalization::Base
            }),
        };
        if self.path_normalization() != mode {
            self.set_path_normalization(mode);
        }
    }

    /// The live upstream state.
    pub fn registry(&self) -> &cluster::Registry {
        &self.shared.registry
    }

    /// Swaps in an already built table.
    pub fn update_table(&self, table: Table) {
        self.shared.table.store(Arc::new(table));
    }

    /// Sets Istio's `meshConfig.pathNormalization.normalization` while
    /// serving: requests that start afterwards are normalized this way.
    pub fn set_path_normalization(&self, mode: PathNormalization) {
        self.shared.path_normalization.set(mode);
    }

    /// The path normalization in force.
    pub fn path_normalization(&self) -> PathNormalization {
        self.shared.path_normalization.get()
    }

    /// Client connections being served now (all listeners and workers).
    pub fn connections(&self) -> usize {
        self.shared
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The table in use now.
    pub fn table(&self) -> Arc<Table> {
        self.shared.table.load_full()
    }

    /// Serves connections accepted on `listener` until it fails; each
    /// connection's destination comes from `orig`. Run it in a task; drop
    /// the task to stop accepting.
    pub async fn serve(
        &self,
        listener: TcpListener,
        orig: impl OriginalDst,
    ) -> std::io::Result<()> {
        server::serve(self.shared.clone(), listener, Arc::new(orig)).await
    }

    /// Serves `listener` on `workers` threads, each with its own
    /// single-threaded runtime (thread-per-core, like nginx's
    /// `worker_processes`; see [`workers`]). `workers` is usually the CPUs
    /// this process may run on. Returns once the threads run; stop them with
    /// [`Workers::shutdown`].
    ///
    /// Errors: the listener cannot be shared between threads, or a thread or
    /// runtime cannot start.
    pub fn serve_workers(
        &self,
        listener: std::net::TcpListener,
        orig: impl OriginalDst,
        workers: usize,
    ) -> std::io::Result<Workers> {
        Workers::start(self.shared.clone(), listener, None, Arc::new(orig), workers)
    }

    /// [`Proxy::serve_workers`] on the IPv4 outbound listener and, when
    /// given, the IPv6 one (`strait run --outbound6`): every worker
    /// accepts on both.
    pub fn serve_workers_on(
        &self,
        listener: std::net::TcpListener,
        listener6: Option<std::net::TcpListener>,
        orig: impl OriginalDst,
        workers: usize,
    ) -> std::io::Result<Workers> {
        Workers::start(
            self.shared.clone(),
            listener,
            listener6,
            Arc::new(orig),
            workers,
        )
    }
}
