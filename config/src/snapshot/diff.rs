//! What changed between two snapshots, so the daemon can apply updates
//! incrementally (swap only the changed kernel entries, rebuild only the
//! changed clusters and route tables).
use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{L4Protocol, MeshSnapshot};

/// Keys added, removed and changed in one collection. Values are read from
/// the new snapshot (added, changed) or the old one (removed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes<K> {
    /// In `new` only.
    pub added: Vec<K>,
    /// In `old` only.
    pub removed: Vec<K>,
    /// In both with a different value.
    pub changed: Vec<K>,
}

impl<K> Default for Changes<K> {
    fn default() -> Self {
        Changes {
            added: vec![],
            removed: vec![],
            changed: vec![],
        }
    }
}

impl<K> Changes<K> {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

fn map_changes<K: Ord + Clone, V: PartialEq>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> Changes<K> {
    let mut c = Changes::default();
    for (k, v) in new {
        match old.get(k) {
            None => c.added.push(k.clone()),
            Some(o) if o != v => c.changed.push(k.clone()),
            _ => {}
        }
    }
    c.removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    c
}

/// Key of a kernel service entry.
pub type L4Key = (IpAddr, u16, L4Protocol);

/// The differences between two snapshots, collection by collection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotDiff {
    /// Service hosts.
    pub services: Changes<String>,
    /// Cluster names.
    pub clusters: Changes<String>,
    /// (host, port) route tables.
    pub routes: Changes<(String, u16)>,
    /// Gateway `namespace/name`.
    pub gateways: Changes<String>,
    /// Workload IPs.
    pub workloads: Changes<IpAddr>,
    /// Kernel service entries `(vip, port, protocol)`.
    pub l4: Changes<L4Key>,
    /// Any security policy changed (policies are small; re-resolve all).
    pub policies_changed: bool,
}

impl SnapshotDiff {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.clusters.is_empty()
            && self.routes.is_empty()
            && self.gateways.is_empty()
            && self.workloads.is_empty()
            && self.l4.is_empty()
            && !self.policies_changed
    }
}

fn flat_routes(s: &MeshSnapshot) -> BTreeMap<(String, u16), &super::Routes> {
    s.routes
        .iter()
        .flat_map(|(h, ports)| ports.iter().map(move |(p, r)| ((h.clone(), *p), r)))
        .collect()
}

fn l4_map(s: &MeshSnapshot) -> BTreeMap<L4Key, &super::L4Service> {
    s.l4.iter()
        .map(|e| ((e.vip, e.port, e.protocol), e))
        .collect()
}

/// Computes what changed from `old` to `new`; every list is sorted.
pub fn diff(old: &MeshSnapshot, new: &MeshSnapshot) -> SnapshotDiff {
    SnapshotDiff {
        services: map_changes(&old.services, &new.services),
        clusters: map_changes(&old.clusters, &new.clusters),
        routes: map_changes(&flat_routes(old), &flat_routes(new)),
        gateways: map_changes(&old.gateways, &new.gateways),
        workloads: map_changes(&old.workloads, &new.workloads),
        l4: map_changes(&l4_map(old), &l4_map(new)),
        policies_changed: old.policies != new.policies,
    }
}
