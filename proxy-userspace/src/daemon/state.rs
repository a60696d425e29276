//! The daemon's live state, and what the admin API shows of it.
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use strait_config::snapshot::MeshSnapshot;

use crate::admin::AdminSource;
use crate::serve::Proxy;
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
    /// When the reload in progress started (milliseconds since the Unix
    /// epoch), 0 when none runs; see [`RELOAD_WEDGED_AFTER`].
    pub reload_started_ms: AtomicU64,
}

/// A reload running longer than this (a read that never returns, a
/// compile without end) makes `/ready` answer 503: the daemon no longer
/// follows its config.
pub const RELOAD_WEDGED_AFTER: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
        .max(1)
}

impl AdminSource for Live {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.reload_wedged()
    }

    fn config_dump(&self) -> serde_json::Value {
        serde_json::to_value(&**self.snapshot.load()).unwrap_or_default()
    }

    /// Envoy's `/clusters` text format: `cluster::endpoint::stat::value`.
    fn clusters(&self) -> String {
        let table = self.proxy.table();
        let mut out = String::new();
        for (name, c) in table.clusters_by_name() {
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

    /// Marks a reload as started (`true`) or finished.
    pub fn set_reloading(&self, reloading: bool) {
        let v = if reloading { now_ms() } else { 0 };
        self.reload_started_ms.store(v, Ordering::Release);
    }

    /// Whether a reload has been running for over [`RELOAD_WEDGED_AFTER`].
    pub fn reload_wedged(&self) -> bool {
        let started = self.reload_started_ms.load(Ordering::Acquire);
        started != 0 && now_ms().saturating_sub(started) > RELOAD_WEDGED_AFTER.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wedged_reload_makes_ready_false() {
        let snap = MeshSnapshot::default();
        let live = Live {
            snapshot: Arc::new(ArcSwap::from_pointee(snap.clone())),
            ready: AtomicBool::new(true),
            metrics: Arc::new(Metrics::new()),
            proxy: Proxy::new(&snap).unwrap(),
            certs: None,
            reload_started_ms: AtomicU64::new(0),
        };
        assert!(live.ready());
        live.set_reloading(true);
        assert!(live.ready(), "a reload that just started is not wedged");
        let long_ago = now_ms() - RELOAD_WEDGED_AFTER.as_millis() as u64 - 1000;
        live.reload_started_ms.store(long_ago, Ordering::Release);
        assert!(!live.ready(), "LIVE while a reload is wedged");
        live.set_reloading(false);
        assert!(live.ready());
    }
}
