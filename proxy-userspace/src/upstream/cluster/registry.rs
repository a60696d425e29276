//! The upstream state registry: the live state of every cluster, kept for
//! the life of the process across config swaps, keyed by Envoy cluster name
//! and, inside a cluster, by endpoint address.
//!
//! What it keeps per cluster: the circuit breaker (one per cluster, ever:
//! a swap never has two breakers counting the same upstream), and per
//! endpoint the connection pool, the outlier-detection counters and
//! ejection, and the active-request count (LEAST_REQUEST). A config swap
//! asks the registry for each cluster of the new snapshot
//! ([`Registry::prepare`]) and, once the whole runtime table has been
//! built, [`Registry::commit`]s:
//!
//! - a cluster whose config is unchanged is the same `Arc<Cluster>` as
//!   before: connections, ejections and counters untouched (Envoy keeps a
//!   cluster that CDS did not change);
//! - a changed cluster is rebuilt around the same breaker (new limits
//!   applied to the live counters) and the same endpoints for the addresses
//!   it still has (Envoy's EDS update in place); an added address gets a
//!   fresh endpoint;
//! - a removed endpoint (or cluster) is only dropped from the registry: the
//!   requests in flight on it hold it and finish, then its pool closes its
//!   connections (draining, as Envoy's removed host);
//! - when a cluster's connection-pool settings change, its endpoints are
//!   made new (Envoy rebuilds a cluster whose settings changed); the
//!   breaker stays.
//!
//! The registry also runs outlier detection's `interval` sweep (see
//! [`super::outlier`]) on one background thread, started when a cluster
//! with outlier detection is first committed; it ends with the registry.
//!
//! Nothing here runs per request: requests reach the state through the
//! `Arc<Cluster>`s the runtime table resolved at swap time.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use strait_config::snapshot as snap;

use super::endpoint::now_ms;
use super::{Cluster, ClusterSpec};

/// Process-wide upstream state. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.inner.state.lock().map_or(0, |s| s.clusters.len());
        f.debug_struct("Registry").field("clusters", &n).finish()
    }
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    /// The `PassthroughCluster` (its pools live as long as the registry).
    passthrough: OnceLock<Arc<Cluster>>,
    /// The sweeper thread, once started (to wake it on commit).
    sweeper: Mutex<Option<std::thread::Thread>>,
}

#[derive(Default)]
struct State {
    clusters: HashMap<Arc<str>, Entry>,
}

struct Entry {
    /// The config the cluster was built from.
    source: snap::Cluster,
    cluster: Arc<Cluster>,
    /// Next outlier sweep (ms of [`now_ms`]).
    next_sweep: u64,
}

/// The clusters of one snapshot, resolved against the registry and not yet
/// committed. Dropping it without [`Registry::commit`] leaves the registry
/// as it was (a failed compile changes nothing).
#[derive(Default)]
pub struct Prepared {
    /// Every cluster of the snapshot by name; from [`Prepared::partial`],
    /// only the clusters a snapshot diff added or changed.
    pub clusters: HashMap<Arc<str>, Arc<Cluster>>,
    /// The ones built or rebuilt, with their config.
    changed: Vec<(Arc<str>, snap::Cluster)>,
    /// `Some` (the names the diff removed) when built from a diff: the
    /// registry's other clusters stay as they are.
    removed: Option<Vec<String>>,
}

impl Prepared {
    /// An empty set for the clusters a snapshot diff added or changed;
    /// [`Registry::commit`] drops the `removed` ones and keeps every
    /// cluster the diff did not name (so a commit costs what the diff
    /// names, not what the mesh has).
    pub fn partial(removed: Vec<String>) -> Self {
        Self {
            removed: Some(removed),
            ..Self::default()
        }
    }

    /// How many clusters were built or rebuilt (the rest are reused as they
    /// were).
    pub fn rebuilt(&self) -> usize {
        self.changed.len()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resolves cluster `name` of the new snapshot into `prepared`: the
    /// live cluster when `source` is what it was built from, else one
    /// built from `build()` around the live state (breaker, endpoints by
    /// address). Errors are `build`'s.
    pub fn prepare<E>(
        &self,
        prepared: &mut Prepared,
        name: &str,
        source: &snap::Cluster,
        build: impl FnOnce() -> Result<ClusterSpec, E>,
    ) -> Result<(), E> {
        let state = self.inner.state.lock().expect("registry lock");
        let prev = state.clusters.get(name);
        let (key, cluster) = match prev {
            Some(e) if e.source == *source => (e.cluster.name.clone(), e.cluster.clone()),
            _ => {
                let c = Arc::new(Cluster::build(build()?, prev.map(|e| &*e.cluster)));
                prepared.changed.push((c.name.clone(), source.clone()));
                (c.name.clone(), c)
            }
        };
        prepared.clusters.insert(key, cluster);
        Ok(())
    }

    /// Makes `prepared` the registry's clusters: rebuilt ones replace the
    /// old, clusters the snapshot no longer has are dropped (their
    /// endpoints drain with the requests still holding them).
    pub fn commit(&self, prepared: &Prepared) {
        let mut outlier = false;
        {
            let mut state = self.inner.state.lock().expect("registry lock");
            match &prepared.removed {
                None => state
                    .clusters
                    .retain(|name, _| prepared.clusters.contains_key(name)),
                Some(removed) => {
                    for name in removed {
                        state.clusters.remove(name.as_str());
                    }
                }
            }
            let now = now_ms();
            for (name, source) in &prepared.changed {
                let cluster = prepared.clusters[name].clone();
                let interval = cluster.outlier.as_ref().map(|o| o.interval);
                let next_sweep = match state.clusters.get(name) {
                    Some(e) => e.next_sweep,
                    None => now + interval.map_or(0, |i| i.as_millis() as u64),
                };
                state.clusters.insert(
                    name.clone(),
                    Entry {
                        source: source.clone(),
                        cluster,
                        next_sweep,
                    },
                );
            }
            outlier |= match prepared.removed {
                None => state.clusters.values().any(|e| e.cluster.outlier.is_some()),
                // The clusters not named were there at an earlier commit,
                // which woke the sweeper for them.
                Some(_) => prepared
                    .changed
                    .iter()
                    .any(|(n, _)| prepared.clusters[n].outlier.is_some()),
            };
        }
        if outlier {
            self.wake_sweeper();
        }
    }

    /// Envoy's `PassthroughCluster`, the same one for every snapshot.
    pub fn passthrough(&self) -> Arc<Cluster> {
        self.inner
            .passthrough
            .get_or_init(|| Arc::new(super::passthrough_cluster()))
            .clone()
    }

    /// The live cluster `name`, if the registry has it.
    pub fn cluster(&self, name: &str) -> Option<Arc<Cluster>> {
        let state = self.inner.state.lock().expect("registry lock");
        state.clusters.get(name).map(|e| e.cluster.clone())
    }

    /// Runs the outlier sweeps due at `now` (ms of [`now_ms`]); returns when
    /// the next one is due (`None`: no cluster has outlier detection).
    pub fn sweep(&self, now: u64) -> Option<u64> {
        self.inner.sweep(now)
    }

    fn wake_sweeper(&self) {
        let mut slot = self.inner.sweeper.lock().expect("registry lock");
        if let Some(t) = slot.as_ref() {
            t.unpark();
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("strait-outlier".into())
            .spawn(move || sweeper(weak));
        match spawned {
            Ok(h) => *slot = Some(h.thread().clone()),
            Err(e) => tracing::error!("cannot start the outlier-detection sweeper: {e}"),
        }
    }
}

impl Inner {
    fn sweep(&self, now: u64) -> Option<u64> {
        let mut state = self.state.lock().expect("registry lock");
        let mut next: Option<u64> = None;
        for e in state.clusters.values_mut() {
            let Some(od) = &e.cluster.outlier else {
                continue;
            };
            if now >= e.next_sweep {
                od.sweep(&e.cluster.endpoints, now);
                let interval = (od.interval.as_millis() as u64).max(1);
                e.next_sweep = now + interval;
            }
            next = Some(next.map_or(e.next_sweep, |n| n.min(e.next_sweep)));
        }
        next
    }
}

/// The sweeper thread: sleeps until the next sweep is due (or a commit
/// wakes it), ends when the registry is gone.
fn sweeper(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let now = now_ms();
        let next = inner.sweep(now);
        drop(inner);
        // Re-check at least every second so a dropped registry ends the
        // thread.
        let wait = next.map_or(1000, |n| n.saturating_sub(now)).clamp(1, 1000);
        std::thread::park_timeout(Duration::from_millis(wait));
    }
}
