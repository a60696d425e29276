//! The live clusters one runtime table's [`ClusterId`]s stand for: what a
//! request turns a route's destination into, by an array lookup.
use std::collections::HashMap;
use std::sync::Arc;

use super::Cluster;
use crate::runtime::table::{ClusterId, ClusterIds};

/// Live clusters indexed by [`ClusterId`] (the ids of one runtime table),
/// plus Envoy's `PassthroughCluster`. Built at every swap from the
/// registry's resolved clusters; requests only read it.
#[derive(Clone, Debug)]
pub struct ClusterSet {
    by_id: Vec<Option<Arc<Cluster>>>,
    passthrough: Arc<Cluster>,
}

impl ClusterSet {
    /// The clusters `ids` names, taken from `live` (name → live cluster);
    /// an id whose name `live` lacks resolves to nothing.
    pub fn new(
        ids: &ClusterIds,
        live: &HashMap<Arc<str>, Arc<Cluster>>,
        passthrough: Arc<Cluster>,
    ) -> Self {
        let mut by_id = vec![None; ids.slots()];
        for (id, name) in ids.iter() {
            by_id[id.index()] = live.get(name).cloned();
        }
        Self { by_id, passthrough }
    }

    /// Brings a copy of the set of the table in service up to date for
    /// the new table's `ids`: the `removed` ids (of the old table) resolve
    /// to nothing, the clusters in `live` (name → live cluster: the ones a
    /// diff added or changed) to themselves; every other id keeps its
    /// cluster. Costs one pointer copy per id plus the change.
    pub fn patch(
        &mut self,
        ids: &ClusterIds,
        removed: impl IntoIterator<Item = ClusterId>,
        live: &HashMap<Arc<str>, Arc<Cluster>>,
    ) {
        self.by_id.resize(ids.slots().max(self.by_id.len()), None);
        for id in removed {
            if let Some(slot) = self.by_id.get_mut(id.index()) {
                *slot = None;
            }
        }
        for (name, c) in live {
            if let Some(id) = ids.get(name) {
                self.by_id[id.index()] = Some(c.clone());
            }
        }
        self.by_id.truncate(ids.slots());
    }

    /// The live cluster `id` stands for (`None` only for an id of another
    /// table).
    #[inline]
    pub fn get(&self, id: ClusterId) -> Option<&Arc<Cluster>> {
        self.by_id.get(id.index())?.as_ref()
    }

    /// Envoy's `PassthroughCluster`: traffic to destinations the mesh does
    /// not know goes to the original destination.
    pub fn passthrough(&self) -> &Arc<Cluster> {
        &self.passthrough
    }

    /// Every cluster (not the passthrough), by id order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.by_id.iter().flatten()
    }

    /// How many clusters.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl Default for ClusterSet {
    fn default() -> Self {
        Self {
            by_id: Vec::new(),
            passthrough: Arc::new(super::passthrough_cluster()),
        }
    }
}
