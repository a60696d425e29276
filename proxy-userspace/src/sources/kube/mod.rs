//! The Kubernetes API server as the daemon's config source
//! (`strait run --kubeconfig PATH`, or `--in-cluster` inside a pod).
//!
//! One kube-runtime `watcher` per kind (list, then watch; it resumes from
//! the last resource version after a disconnect and relists after
//! `410 Gone`, with kube's default backoff) feeds an [`ObjectStore`]; every
//! change wakes the daemon's reload loop, which compiles the served
//! objects exactly as it compiles a config directory. The daemon waits for
//! every kind's first complete list before it compiles and reports ready.
//! An Istio kind whose CRD is not installed (the list answers 404) counts
//! as listed and empty, and is watched again in case the CRD appears.
pub mod ca_auth;
pub mod events;
pub mod pods;
pub mod review;
pub mod store;

use std::path::Path;
use std::sync::{Arc, Mutex};

use futures_util::{StreamExt, TryStreamExt};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use serde_json::Value;
use std::sync::mpsc;

use tokio::sync::watch as tokio_watch;

pub use review::{ReviewedToken, TokenReviewError, TokenReviewer};
pub use store::{Change, KubeStore, ObjectStore};

/// Errors starting the Kubernetes source.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Not running in a pod (no service-account token or
    /// `KUBERNETES_SERVICE_HOST`).
    #[error("in-cluster config: {0}")]
    InCluster(#[from] kube::config::InClusterError),
    /// The client could not be built (TLS settings).
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// Which objects of a kind are watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Every object in every namespace.
    All,
    /// Only the `istio` ConfigMap (mesh config, key `mesh`) in the mesh
    /// config namespace ([`WatchOptions::mesh_config_namespace`]), as
    /// istiod reads it.
    MeshConfigMap,
    /// Secrets in every namespace except Helm releases and service-account
    /// tokens (istiod's field selector for the Secrets it reads for
    /// `credentialName`); of the rest only TLS material is loaded.
    TlsSecrets,
}

/// One watched kind: group, version, kind, plural.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Resource (plural) name.
    pub plural: &'static str,
    /// Which objects.
    pub selection: Selection,
}

impl Kind {
    const fn new(
        group: &'static str,
        version: &'static str,
        kind: &'static str,
        plural: &'static str,
    ) -> Self {
        Self {
            group,
            version,
            kind,
            plural,
            selection: Selection::All,
        }
    }

    const fn only(mut self, selection: Selection) -> Self {
        self.selection = selection;
        self
    }

    /// `apiVersion` as objects carry it.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, self.version, self.kind),
            self.plural,
        )
    }

    /// Istio kinds may be absent (CRDs not installed).
    fn optional(&self) -> bool {
        self.group.ends_with("istio.io")
    }
}

/// What Strait reads from the API server (all namespaces): the Kubernetes
/// kinds the compiler uses and Istio's networking and security kinds (v1,
/// the storage version of Istio's current CRDs).
pub const KINDS: &[Kind] = &[
    Kind::new("", "v1", "Namespace", "namespaces"),
    Kind::new("", "v1", "Service", "services"),
    Kind::new("", "v1", "Pod", "pods"),
    Kind::new("", "v1", "ServiceAccount", "serviceaccounts"),
    Kind::new("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    Kind::new(
        "networking.istio.io",
        "v1",
        "VirtualService",
        "virtualservices",
    ),
    Kind::new(
        "networking.istio.io",
        "v1",
        "DestinationRule",
        "destinationrules",
    ),
    Kind::new("networking.istio.io", "v1", "Gateway", "gateways"),
    Kind::new(
        "networking.istio.io",
        "v1",
        "ServiceEntry",
        "serviceentries",
    ),
    Kind::new("networking.istio.io", "v1", "Sidecar", "sidecars"),
    Kind::new(
        "networking.istio.io",
        "v1",
        "WorkloadEntry",
        "workloadentries",
    ),
    Kind::new(
        "security.istio.io",
        "v1",
        "PeerAuthentication",
        "peerauthentications",
    ),
    Kind::new(
        "security.istio.io",
        "v1",
        "RequestAuthentication",
        "requestauthentications",
    ),
    Kind::new(
        "security.istio.io",
        "v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
    ),
    Kind::new("", "v1", "ConfigMap", "configmaps").only(Selection::MeshConfigMap),
    Kind::new("", "v1", "Secret", "secrets").only(Selection::TlsSecrets),
];

/// istiod's field selector for the Secrets it watches.
pub const SECRET_FIELD_SELECTOR: &str =
    "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token";

/// Where the mesh config lives, and other choices of what is watched.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Namespace of the `istio` ConfigMap (istiod's own namespace;
    /// default `istio-system`).
    pub mesh_config_namespace: String,
    /// Report invalid objects as Events from this node (the reporting
    /// instance); `None`: log only.
    pub events_from: Option<String>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            mesh_config_namespace: "istio-system".into(),
            events_from: None,
        }
    }
}

/// A client from `kubeconfig` (its current context), or the in-cluster
/// config (the pod's service account) when `None`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc_err = |source| KubeError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(kc_err)?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(kc_err)?
        }
        None => kube::Config::incluster()?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// The running watchers (aborted on drop) and whether the initial sync is
/// done.
pub struct KubeWatch {
    store: Arc<Mutex<ObjectStore>>,
    synced: tokio_watch::Receiver<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for KubeWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts one watcher per kind of [`KINDS`] on the current runtime.
/// Returns the store the daemon compiles, one `()` per change of what it
/// serves, and the watchers.
pub fn start(
    client: kube::Client,
    opts: &WatchOptions,
) -> (KubeStore, mpsc::Receiver<()>, KubeWatch) {
    let (wake, changes) = mpsc::channel();
    let kinds: Vec<&'static str> = KINDS.iter().map(|k| k.kind).collect();
    let (mut store, synced) = ObjectStore::new(&kinds, wake);
    let mut tasks = Vec::new();
    if let Some(node) = &opts.events_from {
        let (sink, task) = events::start(client.clone(), node);
        store = store.with_events(sink);
        tasks.push(task);
    }
    let store = Arc::new(Mutex::new(store));
    tasks.extend(
        KINDS
            .iter()
            .map(|k| tokio::spawn(watch_kind(client.clone(), *k, store.clone(), opts.clone()))),
    );
    let watch = KubeWatch {
        store: store.clone(),
        synced,
        tasks,
    };
    (KubeStore(store), changes, watch)
}

impl KubeWatch {
    /// Waits until every kind has been listed completely once, logging the
    /// kinds still missing every 10 s.
    pub async fn wait_synced(&mut self) {
        loop {
            let wait = self.synced.wait_for(|s| *s);
            match tokio::time::timeout(std::time::Duration::from_secs(10), wait).await {
                Ok(_) => return,
                Err(_) => {
                    let missing = self
                        .store
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .unsynced();
                    tracing::warn!(?missing, "waiting for the initial list from the API server");
                }
            }
        }
    }

    /// Served object counts per kind.
    pub fn counts(&self) -> std::collections::BTreeMap<&'static str, usize> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .counts()
    }
}

/// The object as the loader reads it: `apiVersion` and `kind` set (list
/// items come without them).
pub fn to_value(kind: &Kind, obj: DynamicObject) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(kind.api_version()));
        m.insert("kind".into(), Value::String(kind.kind.to_string()));
    }
    v
}

/// kube-runtime's event as a store [`Change`].
pub fn change(kind: &Kind, ev: Event<DynamicObject>) -> Change {
    match ev {
        Event::Init => Change::Init,
        Event::InitApply(o) => Change::InitApply(to_value(kind, o)),
        Event::InitDone => Change::InitDone,
        Event::Apply(o) => Change::Apply(to_value(kind, o)),
        Event::Delete(o) => Change::Delete(to_value(kind, o)),
    }
}

fn is_not_found(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s.code == 404,
        _ => false,
    }
}

async fn watch_kind(
    client: kube::Client,
    kind: Kind,
    store: Arc<Mutex<ObjectStore>>,
    opts: WatchOptions,
) {
    let ar = kind.api_resource();
    let (api, config): (Api<DynamicObject>, _) = match kind.selection {
        Selection::All => (Api::all_with(client, &ar), watcher::Config::default()),
        Selection::MeshConfigMap => (
            Api::namespaced_with(client, &opts.mesh_config_namespace, &ar),
            watcher::Config::default().fields("metadata.name=istio"),
        ),
        Selection::TlsSecrets => (
            Api::all_with(client, &ar),
            watcher::Config::default().fields(SECRET_FIELD_SELECTOR),
        ),
    };
    let mesh_ns = opts.mesh_config_namespace;
    let stream = watcher::watcher(api, config)
        .default_backoff()
        .map_ok(move |ev| {
            // The loader reads the `istio` ConfigMap of `istio-system`;
            // one of another configured namespace is that one.
            ev.modify(|o| {
                if kind.selection == Selection::MeshConfigMap && mesh_ns != "istio-system" {
                    o.metadata.namespace = Some("istio-system".into());
                }
            })
        });
    futures_util::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let mut st = store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match ev {
            Ok(ev) => st.handle(kind.kind, change(&kind, ev)),
            Err(e) if kind.optional() && is_not_found(&e) => {
                if !st.synced() {
                    tracing::warn!(
                        kind = kind.kind,
                        api_version = %kind.api_version(),
                        "not served by the API server (CRD not installed?): none loaded"
                    );
                }
                st.mark_absent(kind.kind);
            }
            Err(e) => tracing::warn!(kind = kind.kind, "watch: {e} (retrying)"),
        }
    }
}

#[cfg(test)]
mod ca_tests;
#[cfg(test)]
mod events_tests;
#[cfg(test)]
mod fake_api;
#[cfg(test)]
mod fake_server;
#[cfg(test)]
mod tests;
