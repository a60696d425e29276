//! Strait's L7 proxy: what Envoy does for Istio, for the traffic the kernel
//! redirects to the node proxy (DESIGN "Userspace daemon").
//!
//! ```text
//! accept → OriginalDst → service (VIP:port) → protocol (declared / sniffed)
//!   HTTP/1.1, HTTP/2, gRPC → route match → CORS, redirect, fault, rewrite,
//!        headers, mirror → cluster (LB, circuit breaker, outlier) → retries
//!   TCP / TLS (by SNI)     → tcp / tls route → cluster → bytes both ways
//! ```
//!
//! Public API for the daemon and the benchmarks: [`Proxy`].
pub mod access_log;
pub mod body;
pub mod cluster;
pub mod compile;
pub mod conn_exec;
pub mod failure;
pub mod flags;
pub mod h1;
pub mod head;
pub mod http;
pub mod orig_dst;
pub mod pool;
pub mod route;
pub mod server;
pub mod sniff;
pub mod table;
pub mod tcp;
pub mod tls;
pub mod upstream;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

pub use access_log::{AccessLogRecord, AccessLogSink, NoAccessLog, StdoutAccessLog};
pub use flags::ResponseFlags;
pub use orig_dst::{FixedDestination, OriginalDst, StaticOriginalDst};
pub use table::Table;
pub use workers::Workers;

/// Proxy-wide settings (Istio `meshConfig` equivalents).
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// How long to wait for the client's first bytes on a port without a
    /// declared protocol before treating it as opaque TCP (Istio
    /// `protocolDetectionTimeout`, default 0 = wait; here default 100 ms so
    /// server-first protocols are not stalled for long).
    pub protocol_detection_timeout: Duration,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            protocol_detection_timeout: Duration::from_millis(100),
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
    pub fn new(
        snapshot: &strait_config::snapshot::MeshSnapshot,
    ) -> Result<Self, compile::CompileError> {
        let registry = cluster::Registry::new();
        let (table, prepared) = compile::compile_with(snapshot, &registry)?;
        registry.commit(&prepared);
        Ok(Self::with_registry(table, registry))
    }

    /// A proxy serving an already built runtime table (its clusters' state
    /// is not carried over by later [`Proxy::update`]s).
    pub fn from_table(table: Table) -> Self {
        Self::with_registry(table, cluster::Registry::new())
    }

    fn with_registry(table: Table, registry: cluster::Registry) -> Self {
        Self {
            shared: Arc::new(Shared {
                table: ArcSwap::from_pointee(table),
                registry,
                sink: Arc::new(NoAccessLog),
                settings: ProxySettings::default(),
            }),
        }
    }

    /// Sends access-log records to `sink` (must be called before
    /// [`Proxy::serve`]; later calls do not affect running listeners).
    pub fn with_access_log(self, sink: Arc<dyn AccessLogSink>) -> Self {
        let shared = Shared {
            table: ArcSwap::new(self.shared.table.load_full()),
            registry: self.shared.registry.clone(),
            sink,
            settings: self.shared.settings.clone(),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Replaces the settings (before [`Proxy::serve`]).
    pub fn with_settings(self, settings: ProxySettings) -> Self {
        let shared = Shared {
            table: ArcSwap::new(self.shared.table.load_full()),
            registry: self.shared.registry.clone(),
            sink: self.shared.sink.clone(),
            settings,
        };
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
    ) -> Result<usize, compile::CompileError> {
        let (table, prepared) = compile::compile_with(snapshot, &self.shared.registry)?;
        self.update_table(table);
        self.shared.registry.commit(&prepared);
        Ok(prepared.rebuilt())
    }

    /// Applies `snapshot` given what changed since the snapshot the table
    /// in service was built from (`diff`, from
    /// [`strait_config::snapshot::diff`]): only the changed clusters and the
    /// service ports that use them or whose routes changed are rebuilt
    /// ([`compile::compile_incremental`]); the rest of the table is shared
    /// with the old one. Same guarantees as [`Proxy::update`]. Returns how
    /// many clusters were rebuilt.
    pub fn apply_diff(
        &self,
        snapshot: &strait_config::snapshot::MeshSnapshot,
        diff: &strait_config::snapshot::SnapshotDiff,
    ) -> Result<usize, compile::CompileError> {
        let current = self.shared.table.load_full();
        let (table, prepared) =
            compile::compile_incremental(snapshot, diff, &current, &self.shared.registry)?;
        drop(current);
        self.update_table(table);
        self.shared.registry.commit(&prepared);
        Ok(prepared.rebuilt())
    }

    /// The live upstream state.
    pub fn registry(&self) -> &cluster::Registry {
        &self.shared.registry
    }

    /// Swaps in an already built table.
    pub fn update_table(&self, table: Table) {
        self.shared.table.store(Arc::new(table));
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
        Workers::start(self.shared.clone(), listener, Arc::new(orig), workers)
    }
}
