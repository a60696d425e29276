//! The daemon's live state, and what the admin API shows of it.
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use strait_config::snapshot::MeshSnapshot;

use crate::admin::AdminSource;
use crate::proxy::Proxy;
use crate::telemetry::Metrics;

/// Shared by the reload loop, the access-log sink and the admin API.
pub struct Live {
    /// The snapshot being served.
    pub snapshot: Arc<ArcSwap<MeshSnapshot>>,
    /// Set once the first config is applied and the listeners are up;
    /// cleared when draining.
    pub ready: AtomicBool,
    /// Istio's standard metrics.
    pub metrics: Arc<Metrics>,
    /// The L7 proxy (for per-endpoint state in `/clusters`).
    pub proxy: Proxy,
    /// The node's workload certificates (`/certs`), when identity is on.
    pub certs: Option<crate::identity::CertStore>,
}

impl AdminSource for Live {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn config_dump(&self) -> serde_json::Value {
        serde_json::to_value(&**self.snapshot.load()).unwrap_or_default()
    }

    /// Envoy's `/clusters` text format: `cluster::endpoint::stat::value`.
    fn clusters(&self) -> String {
        let table = self.proxy.table();
        let mut names: Vec<_> = table.clusters.keys().cloned().collect();
        names.sort();
        let mut out = String::new();
        for name in names {
            let c = &table.clusters[&name];
            for ep in &c.endpoints {
                let health = if ep.is_ejected() {
                    "/failed_outlier_check"
                } else {
                    "healthy"
                };
                let _ = writeln!(
                    out,
                    "{name}::{}::rq_active::{}",
                    ep.addr,
                    ep.active_requests()
                );
                let _ = writeln!(out, "{name}::{}::health_flags::{health}", ep.addr);
                for (k, v) in ep
                    .labels
                    .iter()
                    .filter(|(k, _)| *k == "version" || *k == "app")
                {
                    let _ = writeln!(out, "{name}::{}::label_{k}::{v}", ep.addr);
                }
            }
        }
        out
    }

    fn certs(&self) -> serde_json::Value {
        match &self.certs {
            Some(store) => store.to_json(),
            None => crate::admin::no_certs(),
        }
    }

    fn prometheus(&self) -> String {
        self.metrics.encode()
    }
}

impl Live {
    /// Marks the daemon ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}
