//! Which pods run on which node, from the API server, for the CA under
//! Kubernetes (`strait ca serve --kubeconfig/--in-cluster`).
//!
//! istiod keeps a pod informer indexed by (node, service account) for the
//! same purpose (istio/istio `security/pkg/server/ca/node_auth.go`,
//! `NodeSaIndex`). [`PodIndex`] keeps, per pod, only its UID, service
//! account and node, and counts pods per (node, namespace, service
//! account). A relist (start, `410 Gone`) replaces the whole set at its end.
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::watch;

use crate::identity::ca::NodePods;
use crate::identity::SpiffeId;

/// What the CA needs to know of one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    /// `metadata.uid`.
    pub uid: String,
    /// `spec.serviceAccountName` (`default` when unset, as the API server
    /// fills it).
    pub service_account: String,
    /// `spec.nodeName` (empty while unscheduled).
    pub node: String,
}

impl PodFacts {
    fn of(p: &Pod) -> ((String, String), PodFacts) {
        let m = &p.metadata;
        let spec = p.spec.as_ref();
        (
            (
                m.namespace.clone().unwrap_or_default(),
                m.name.clone().unwrap_or_default(),
            ),
            PodFacts {
                uid: m.uid.clone().unwrap_or_default(),
                service_account: spec
                    .and_then(|s| s.service_account_name.clone())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "default".into()),
                node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            },
        )
    }
}

type Key = (String, String);
type NodeSa = (String, String, String);

#[derive(Default)]
struct State {
    pods: HashMap<Key, PodFacts>,
    relist: Option<HashMap<Key, PodFacts>>,
    by_node_sa: HashMap<NodeSa, usize>,
    synced: bool,
}

impl State {
    fn count(&mut self, f: &PodFacts, ns: &str, add: bool) {
        if f.node.is_empty() {
            return;
        }
        let k = (f.node.clone(), ns.to_string(), f.service_account.clone());
        if add {
            *self.by_node_sa.entry(k).or_default() += 1;
        } else if let Some(n) = self.by_node_sa.get_mut(&k) {
            *n -= 1;
            if *n == 0 {
                self.by_node_sa.remove(&k);
            }
        }
    }

    fn put(&mut self, key: Key, f: PodFacts) {
        self.count(&f, &key.0, true);
        if let Some(old) = self.pods.insert(key.clone(), f) {
            self.count(&old, &key.0, false);
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.pods.remove(key) {
            self.count(&old, &key.0, false);
        }
    }
}

/// The pods of the cluster as the CA needs them. Shared by the watcher
/// (writing) and the CA's requests (reading).
pub struct PodIndex {
    state: RwLock<State>,
    synced: watch::Sender<bool>,
}

impl Default for PodIndex {
    fn default() -> Self {
        Self {
            state: RwLock::default(),
            synced: watch::channel(false).0,
        }
    }
}

impl PodIndex {
    /// An empty index, not synced.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies one watcher event.
    pub fn handle(&self, ev: Event<Pod>) {
        let mut st = self.write();
        match ev {
            Event::Init => st.relist = Some(HashMap::new()),
            Event::InitApply(p) => {
                let (k, f) = PodFacts::of(&p);
                if let Some(buf) = st.relist.as_mut() {
                    buf.insert(k, f);
                }
            }
            Event::InitDone => {
                let next = st.relist.take().unwrap_or_default();
                let mut fresh = State {
                    synced: true,
                    ..State::default()
                };
                for (k, f) in next {
                    fresh.put(k, f);
                }
                *st = fresh;
                drop(st);
                self.synced.send_replace(true);
            }
            Event::Apply(p) => {
                let (k, f) = PodFacts::of(&p);
                st.put(k, f);
            }
            Event::Delete(p) => {
                let (k, _) = PodFacts::of(&p);
                st.remove(&k);
            }
        }
    }

    /// The pod `namespace/name`, if known.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodFacts> {
        self.read()
            .pods
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Whether the first complete list arrived.
    pub fn synced(&self) -> bool {
        self.read().synced
    }

    /// Waits for the first complete list.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Known pods.
    pub fn len(&self) -> usize {
        self.read().pods.len()
    }

    /// Whether no pod is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl NodePods for PodIndex {
    fn runs_on(&self, node: &str, id: &SpiffeId) -> bool {
        let k = (
            node.to_string(),
            id.namespace.clone(),
            id.service_account.clone(),
        );
        self.read().by_node_sa.get(&k).is_some_and(|n| *n > 0)
    }

    fn ready(&self) -> bool {
        self.synced()
    }

    fn pods_per_node(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for f in self.read().pods.values() {
            if !f.node.is_empty() {
                *out.entry(f.node.clone()).or_default() += 1;
            }
        }
        out
    }
}

/// Watches every Pod into `index` until dropped (abort the task): list,
/// then watch, resuming after a disconnect and relisting after `410 Gone`
/// with kube's default backoff.
pub async fn watch_pods(client: kube::Client, index: Arc<PodIndex>) {
    let api: Api<Pod> = Api::all(client);
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures_util::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(ev) => index.handle(ev),
            Err(e) => tracing::warn!("CA: watching Pods: {e} (retrying)"),
        }
    }
}
