//! How routes name clusters: [`ClusterId`], an index the request path
//! resolves to a live cluster with one array lookup, and [`ClusterIds`],
//! a table's names ↔ ids, kept stable across incremental compiles.
use std::collections::HashMap;
use std::sync::Arc;

/// A cluster as routes name it: an index into the table's cluster list
/// ([`ClusterIds`]), resolved per request to the live cluster by an array
/// lookup. Stable across incremental compiles for as long as the cluster
/// exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(u32);

impl ClusterId {
    /// The index into a per-id array (`upstream::cluster::ClusterSet`).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The clusters of a table: Envoy cluster name ↔ [`ClusterId`]. An id
/// stays with its name while the name is in the snapshot; the id of a
/// removed cluster may be given to a cluster added later (so the id space
/// stays as large as the most clusters ever present at once).
#[derive(Clone, Debug, Default)]
pub struct ClusterIds {
    names: Vec<Option<Arc<str>>>,
    ids: HashMap<Arc<str>, ClusterId>,
    free: Vec<ClusterId>,
}

impl ClusterIds {
    /// The id of cluster `name`, if the table has it.
    pub fn get(&self, name: &str) -> Option<ClusterId> {
        self.ids.get(name).copied()
    }

    /// The name of cluster `id`, if the table has it.
    pub fn name(&self, id: ClusterId) -> Option<&Arc<str>> {
        self.names.get(id.index())?.as_ref()
    }

    /// Every cluster, by id order.
    pub fn iter(&self) -> impl Iterator<Item = (ClusterId, &Arc<str>)> {
        self.names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((ClusterId(i as u32), n.as_ref()?)))
    }

    /// How many clusters.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// One past the largest id in use: the length a per-id array needs.
    pub fn slots(&self) -> usize {
        self.names.len()
    }

    /// The id of `name`, given a new one (a freed id first) when the
    /// table does not have it yet; `true` when the id is new.
    pub(crate) fn insert(&mut self, name: &str) -> (ClusterId, bool) {
        if let Some(id) = self.get(name) {
            return (id, false);
        }
        let name: Arc<str> = name.into();
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id.index()] = Some(name.clone());
                id
            }
            None => {
                let n = u32::try_from(self.names.len()).expect("fewer than 2^32 clusters");
                self.names.push(Some(name.clone()));
                ClusterId(n)
            }
        };
        self.ids.insert(name, id);
        (id, true)
    }

    /// Removes `name`; its id may be reused by a later [`Self::insert`].
    pub(crate) fn remove(&mut self, name: &str) -> Option<ClusterId> {
        let id = self.ids.remove(name)?;
        self.names[id.index()] = None;
        self.free.push(id);
        Some(id)
    }
}
