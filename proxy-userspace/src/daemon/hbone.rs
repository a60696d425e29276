//! Mutual TLS between workloads in `strait run` (HBONE, as ztunnel): on
//! when the daemon has workload identities (`--ca-dir` / `--ca-address`).
//!
//! - Outbound: the mesh view (meshed workloads' identities, this node's
//!   workloads) the proxy's [`MeshOutbound`] decides with, rebuilt on every
//!   reload.
//! - Inbound: for each meshed pod of this node, a listener on
//!   `<pod IP>:15008` opened inside the pod's network namespace
//!   (ztunnel's in-pod mode, see `transport/inpod.rs`), terminating TLS
//!   with the pod's certificate (by its service account), authorizing with
//!   the peer's SPIFFE ID (`serve::http::authz::check_hbone`, 401 when
//!   denied) and delivering from `127.0.0.6` inside the pod. When the
//!   pod's policies for the target port need HTTP facts (methods, paths,
//!   headers, JWT), the tunnel is answered 200 and its inner stream is
//!   served by the 15006 listener's path (`serve::inbound`, per request,
//!   with the peer identity): L7 policy without a waypoint. Every tunnel
//!   is recorded as the destination (`reporter="destination"`,
//!   `mutual_tls`, both SPIFFE IDs). Listeners follow pods appearing and
//!   leaving; a pod whose namespace is not found yet is tried again at
//!   every pod rescan.
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use strait_config::enroll::Enrollment;
use strait_config::snapshot::MeshSnapshot;

use crate::identity::{CertStore, SpiffeId};
use crate::policy::PeerIdentity;
use crate::serve::inbound::InboundConn;
use crate::serve::workers::WorkerSpawner;
use crate::serve::Proxy;
use crate::telemetry::{PeerInfo, Reporter};
use crate::transport::hbone::server::BoxFuture;
use crate::transport::hbone::{
    self, tls, ConnectCheck, InboundHandler, InnerStream, MeshOutbound, MeshView,
};
use crate::transport::inpod::{self, InPodNetns};

/// A meshed pod of this node that should have an HBONE listener.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LocalPod {
    id: SpiffeId,
    namespace: String,
    name: String,
    uid: Option<String>,
    /// The `baggage` its tunnels send.
    baggage: Option<http::HeaderValue>,
}

/// One pod's HBONE listener (its task stops when this is dropped).
struct PodListener {
    id: SpiffeId,
    /// The pod's namespace (its outbound tunnels are dialled from there).
    netns: Arc<InPodNetns>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PodListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The node's HBONE: outbound view and inbound listeners.
pub struct Hbone {
    /// What the proxy tunnels through.
    pub outbound: Arc<MeshOutbound>,
    certs: CertStore,
    trust_domain: String,
    node: String,
    /// `k8s.cluster.name` of the baggage (`--cluster-id`).
    cluster_id: String,
    pods_cgroup: PathBuf,
    netns_dir: PathBuf,
    proxy: Mutex<Option<Proxy>>,
    access_log: bool,
    wanted: Mutex<BTreeMap<IpAddr, LocalPod>>,
    listeners: Mutex<HashMap<IpAddr, PodListener>>,
    /// Pods whose listener could not be opened yet: failures so far and
    /// when to try again (0.5 s doubling up to 16 s), so a pod whose
    /// namespace never appears costs little and logs little.
    retry: Mutex<HashMap<IpAddr, (u32, std::time::Instant)>>,
    /// The proxy workers' runtimes, which serve accepted tunnels once set
    /// ([`Hbone::serve_on_workers`]); before, the daemon's runtime does.
    workers: Arc<std::sync::OnceLock<WorkerSpawner>>,
}

/// Longest wait between two attempts at a pod's listener.
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(16);

impl Hbone {
    /// HBONE for node `node` of cluster `cluster_id` with the
    /// certificates of `certs`.
    pub fn new(
        certs: CertStore,
        trust_domain: &str,
        node: &str,
        cluster_id: &str,
        pods_cgroup: &Path,
        access_log: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            outbound: MeshOutbound::new(certs.clone()),
            certs,
            trust_domain: trust_domain.to_string(),
            node: node.to_string(),
            cluster_id: cluster_id.to_string(),
            pods_cgroup: pods_cgroup.to_path_buf(),
            netns_dir: PathBuf::from(inpod::NAMED_NETNS_DIR),
            proxy: Mutex::new(None),
            access_log,
            wanted: Mutex::new(BTreeMap::new()),
            listeners: Mutex::new(HashMap::new()),
            retry: Mutex::new(HashMap::new()),
            workers: Arc::new(std::sync::OnceLock::new()),
        })
    }

    /// From now on, tunnels accepted by every listener (open or to come)
    /// are served on the proxy's worker threads, round robin: their
    /// single-threaded runtimes batch the HTTP/2 frames of many streams
    /// into one TLS write (see [`WorkerSpawner`]).
    pub fn serve_on_workers(&self, workers: WorkerSpawner) {
        let _ = self.workers.set(workers);
    }

    /// The proxy whose policy table authorizes inbound tunnels.
    pub fn set_proxy(&self, proxy: Proxy) {
        *self.proxy.lock().unwrap_or_else(|e| e.into_inner()) = Some(proxy);
    }

    /// After a reload: the outbound view, and the listeners of this node's
    /// meshed pods (opened, kept, or closed).
    pub fn update(&self, snap: &MeshSnapshot, enrollment: &Enrollment) {
        let mut view = MeshView {
            auto_mtls_off: !snap.mesh.enable_auto_mtls,
            ..MeshView::default()
        };
        let mut wanted = BTreeMap::new();
        for w in snap.workloads.values() {
            if !enrollment.ip_meshed(w.ip, &w.namespace) {
                continue;
            }
            let id = SpiffeId::new(&self.trust_domain, &w.namespace, &w.service_account);
            view.meshed.insert(w.ip, id.clone());
            if w.node.as_deref() == Some(self.node.as_str()) {
                view.local.insert(w.ip, id.clone());
                wanted.insert(
                    w.ip,
                    LocalPod {
                        id,
                        namespace: w.namespace.clone(),
                        name: w.name.clone(),
                        uid: enrollment
                            .pod(&w.namespace, &w.name)
                            .and_then(|p| p.uid.clone()),
                        baggage: baggage(w, &self.cluster_id),
                    },
                );
            }
        }
        self.outbound.set_view(view);
        *self.wanted.lock().unwrap_or_else(|e| e.into_inner()) = wanted;
        self.sync();
    }

    /// Opens the listeners still missing and closes those no longer
    /// wanted (called after [`Hbone::update`] and at every pod rescan),
    /// then tells the outbound client where each local pod's tunnels are
    /// dialled from (its namespace, so the destination sees the pod IP)
    /// and the baggage they carry.
    pub fn sync(&self) {
        self.sync_listeners();
        let wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        let listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let sources = wanted
            .iter()
            .map(|(ip, p)| {
                let pod = hbone::client::SourcePod {
                    netns: listeners.get(ip).map(|l| l.netns.clone()),
                    baggage: p.baggage.clone(),
                };
                (*ip, pod)
            })
            .collect();
        self.outbound.client().set_sources(sources);
    }

    fn sync_listeners(&self) {
        let wanted = self
            .wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        listeners.retain(|ip, l| {
            let keep = wanted.get(ip).is_some_and(|p| p.id == l.id);
            if !keep {
                tracing::info!(pod_ip = %ip, "HBONE listener closed");
            }
            keep
        });
        let now = std::time::Instant::now();
        let mut retry = self.retry.lock().unwrap_or_else(|e| e.into_inner());
        retry.retain(|ip, _| wanted.contains_key(ip) && !listeners.contains_key(ip));
        let missing: Vec<(&IpAddr, &LocalPod)> = wanted
            .iter()
            .filter(|(ip, _)| !listeners.contains_key(ip))
            .filter(|(ip, _)| retry.get(ip).is_none_or(|(_, at)| *at <= now))
            .collect();
        if missing.is_empty() {
            return;
        }
        let mut failed = |ip: IpAddr| -> u32 {
            let e = retry.entry(ip).or_insert((0, now));
            e.0 += 1;
            let wait = std::time::Duration::from_millis(500)
                .saturating_mul(1 << e.0.min(6))
                .min(RETRY_MAX);
            e.1 = now + wait;
            e.0
        };
        let cgroups = super::pods::pod_cgroups(&self.pods_cgroup).unwrap_or_default();
        for (ip, pod) in missing {
            let cg = pod
                .uid
                .as_ref()
                .and_then(|u| cgroups.get(&super::pods::PodKey::Uid(u.clone())))
                .or_else(|| {
                    cgroups.get(&super::pods::PodKey::Name(
                        pod.namespace.clone(),
                        pod.name.clone(),
                    ))
                });
            let hint = format!("-{}-{}", pod.namespace, pod.name);
            let netns = match inpod::find_netns(
                *ip,
                cg.map(|p| p.as_path()),
                &self.netns_dir,
                Some(&hint),
            ) {
                Ok(Some(n)) => Arc::new(n),
                Ok(None) => {
                    let n = failed(*ip);
                    tracing::debug!(pod = %format!("{}/{}", pod.namespace, pod.name), pod_ip = %ip, attempts = n, "pod network namespace not found yet");
                    continue;
                }
                Err(e) => {
                    if failed(*ip) == 1 {
                        tracing::warn!(pod_ip = %ip, "looking for the pod's network namespace: {e}");
                    }
                    continue;
                }
            };
            match self.listen(*ip, pod, netns) {
                Ok(l) => {
                    listeners.insert(*ip, l);
                }
                Err(e) => {
                    let n = failed(*ip);
                    if n == 1 || n % 16 == 0 {
                        tracing::warn!(
                            pod = %format!("{}/{}", pod.namespace, pod.name), pod_ip = %ip, attempts = n,
                            "HBONE listener not opened (tried again later): {e}"
                        );
                    }
                }
            }
        }
    }

    fn listen(
        &self,
        ip: IpAddr,
        pod: &LocalPod,
        netns: Arc<InPodNetns>,
    ) -> Result<PodListener, String> {
        let addr = SocketAddr::new(ip, hbone::PORT);
        let resolver = Arc::new(tls::StoreResolver::new(self.certs.clone(), pod.id.clone()));
        let cfg = tls::server_config(resolver, self.certs.root_store(), &self.trust_domain)
            .map_err(|e| e.to_string())?;
        let listener = inpod::listen_in_pod(&netns, addr)
            .map_err(|e| format!("listening on {addr} in {}: {e}", netns.path().display()))?;
        let proxy = self
            .proxy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or("the proxy is not running yet")?;
        let handler = Arc::new(PodInbound {
            netns: netns.clone(),
            proxy,
            pod: format!("{}/{}", pod.namespace, pod.name),
            id: pod.id.to_string().into(),
            access_log: self.access_log,
        });
        tracing::info!(
            pod = %handler.pod, %addr, identity = %pod.id, netns = %netns.path().display(),
            "HBONE listener open"
        );
        let workers = self.workers.clone();
        let spawn: hbone::server::Spawn = Arc::new(move |f| match workers.get() {
            Some(w) => w.spawn(f),
            None => drop(tokio::spawn(f)),
        });
        let task = tokio::spawn(hbone::server::serve_on(listener, cfg, handler, spawn));
        Ok(PodListener {
            id: pod.id.clone(),
            netns,
            task,
        })
    }

    /// Pod IPs with an open HBONE listener.
    pub fn listening(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        v.sort();
        v
    }
}

/// ztunnel's `baggage` of a source workload (`Workload::baggage` with
/// istiod's canonical labels): cluster, namespace, `k8s.deployment.name`
/// for a Deployment's pod (else `k8s.pod.name`), `service.name` (label
/// `service.istio.io/canonical-name`, `app.kubernetes.io/name`, `app`, else
/// the workload name), `service.version` (`service.istio.io/canonical-revision`,
/// `app.kubernetes.io/version`, `version`, else `latest`), region and zone
/// of its locality.
fn baggage(w: &strait_config::snapshot::Workload, cluster_id: &str) -> Option<http::HeaderValue> {
    let label = |keys: &[&str]| keys.iter().find_map(|k| w.labels.get(*k).cloned());
    let (kind, name) = match w.labels.contains_key("pod-template-hash") {
        true => ("k8s.deployment.name", super::sink::workload_name(w)),
        false => ("k8s.pod.name", w.name.clone()),
    };
    let service = label(&[
        "service.istio.io/canonical-name",
        "app.kubernetes.io/name",
        "app",
    ])
    .unwrap_or_else(|| name.clone());
    let version = label(&[
        "service.istio.io/canonical-revision",
        "app.kubernetes.io/version",
        "version",
    ])
    .unwrap_or_else(|| "latest".into());
    let mut loc = w.locality.split('/');
    let (region, zone) = (loc.next().unwrap_or(""), loc.next().unwrap_or(""));
    hbone::client::baggage_value(&[
        ("k8s.cluster.name", cluster_id),
        ("k8s.namespace.name", &w.namespace),
        (kind, &name),
        ("service.name", &service),
        ("service.version", &version),
        ("cloud.region", region),
        ("cloud.availability_zone", zone),
    ])
}

/// The destination side for one pod.
struct PodInbound {
    netns: Arc<InPodNetns>,
    proxy: Proxy,
    pod: String,
    /// The pod's SPIFFE ID (`destination_principal`).
    id: Arc<str>,
    access_log: bool,
}

/// Istio's principal of a SPIFFE ID: without `spiffe://`.
fn peer_identity(id: &SpiffeId) -> PeerIdentity {
    PeerIdentity {
        principal: format!(
            "{}/ns/{}/sa/{}",
            id.trust_domain, id.namespace, id.service_account
        ),
        namespace: id.namespace.clone(),
    }
}

impl PodInbound {
    /// What the serving path and the records know of a tunnel.
    fn conn(&self, c: &ConnectCheck) -> InboundConn {
        InboundConn {
            source: c.source,
            dst: c.target,
            peer: Some(peer_identity(&c.peer)),
            telemetry: PeerInfo::mutual_tls(
                Reporter::Destination,
                Some(c.peer.to_string().into()),
                Some(self.id.clone()),
            ),
            record_connection: true,
        }
    }
}

impl InboundHandler for PodInbound {
    fn inspect(&self, c: &ConnectCheck) -> bool {
        self.proxy.inbound_needs_http(c.target)
    }

    fn serve_inner(&self, c: ConnectCheck, stream: InnerStream) -> BoxFuture<()> {
        let serving = self
            .proxy
            .serve_inbound_stream(self.netns.clone(), stream, self.conn(&c));
        let (access_log, pod) = (self.access_log, self.pod.clone());
        Box::pin(async move {
            if access_log {
                tracing::info!(
                    target: "strait::hbone",
                    pod = %pod, src.addr = %c.source, peer.addr = %c.remote, dst.addr = %c.target,
                    src.identity = %c.peer, "inbound HBONE connection opened (requests checked inside)"
                );
            }
            serving.await;
            if access_log {
                tracing::info!(
                    target: "strait::hbone",
                    pod = %pod, src.addr = %c.source, peer.addr = %c.remote, dst.addr = %c.target,
                    src.identity = %c.peer, status = 200, inspected = true,
                    "inbound HBONE connection"
                );
            }
        })
    }

    fn authorize(&self, c: &ConnectCheck) -> bool {
        crate::serve::http::authz::check_hbone(
            &self.proxy.table(),
            c.target,
            c.source.ip(),
            &peer_identity(&c.peer),
        )
    }

    fn connect(&self, target: SocketAddr) -> BoxFuture<std::io::Result<tokio::net::TcpStream>> {
        let netns = self.netns.clone();
        Box::pin(async move { inpod::connect_in_pod(&netns, target).await })
    }

    fn opened(&self, c: &ConnectCheck) {
        self.proxy.inbound_opened(&self.conn(c));
        if self.access_log {
            tracing::info!(
                target: "strait::hbone",
                pod = %self.pod, src.addr = %c.source, peer.addr = %c.remote, dst.addr = %c.target,
                src.identity = %c.peer, "inbound HBONE connection opened"
            );
        }
    }

    fn finished(&self, c: &ConnectCheck, status: http::StatusCode, sent: u64, received: u64) {
        // `sent`: from the peer to the pod; `received`: back.
        self.proxy
            .log_inbound_connection(&self.conn(c), status, sent, received, c.at);
        if self.access_log {
            tracing::info!(
                target: "strait::hbone",
                pod = %self.pod, src.addr = %c.source, peer.addr = %c.remote, dst.addr = %c.target,
                src.identity = %c.peer, status = status.as_u16(),
                bytes_sent = sent, bytes_recv = received,
                "inbound HBONE connection"
            );
        }
    }
}

/// Whether this daemon has workload identities (set once at start).
static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Records at start whether mTLS is on (a CA is configured).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether mTLS is on.
pub fn enabled() -> bool {
    ENABLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether a kernel entry has a meshed backend (the test
/// [`redirect_meshed_services`] applies).
pub fn l4_meshed(
    svc: &strait_config::snapshot::L4Service,
    workloads: &BTreeMap<IpAddr, strait_config::snapshot::Workload>,
    enrollment: &Enrollment,
) -> bool {
    svc.backends.iter().any(|b| {
        workloads
            .get(&b.addr.ip())
            .is_some_and(|w| enrollment.ip_meshed(w.ip, &w.namespace))
    })
}

/// With mTLS on, a kernel-balanced (L4) service with a meshed endpoint
/// needs the proxy (the kernel cannot encrypt): its mode becomes REDIRECT,
/// as policies force it. Services whose endpoints are all plaintext keep
/// the kernel fast path. Applied to every compiled snapshot, so reload
/// diffs compare like with like. Returns how many services changed.
pub fn redirect_meshed_services(snap: &mut MeshSnapshot, enrollment: &Enrollment) -> usize {
    use strait_config::snapshot::L4Mode;
    let workloads = &snap.workloads;
    let mut n = 0;
    for svc in &mut snap.l4 {
        if svc.mode != L4Mode::L4 {
            continue;
        }
        if l4_meshed(svc, workloads, enrollment) {
            svc.mode = L4Mode::Redirect;
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_config::snapshot::L4Mode;

    fn pod(ns: &str, name: &str, ip: &str, app: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}\n\
             spec: {{nodeName: n1, serviceAccountName: {app}, containers: [{{name: c, image: i}}]}}\n\
             status: {{phase: Running, podIP: {ip}}}\n---\n"
        )
    }

    fn service(ns: &str, name: &str, ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec: {{clusterIP: {ip}, selector: {{app: {name}}}, ports: [{{name: tcp, port: 7000}}]}}\n---\n"
        )
    }

    #[test]
    fn l4_services_with_meshed_endpoints_are_redirected_and_plaintext_ones_keep_the_kernel_path() {
        let yaml = [
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: mesh, labels: {istio.io/dataplane-mode: ambient}}\n---\n".to_string(),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: plain}\n---\n".to_string(),
            pod("mesh", "a-0", "10.244.1.2", "a"),
            pod("plain", "b-0", "10.244.1.3", "b"),
            service("mesh", "a", "10.96.0.10"),
            service("plain", "b", "10.96.0.11"),
        ]
        .concat();
        let loaded = strait_config::load::load_str(&yaml, "t.yaml");
        let (mut snap, _) = strait_config::compile(&loaded.resources);
        let enrollment = Enrollment::from_resources(&loaded.resources);
        let mode = |snap: &MeshSnapshot, vip: &str| {
            snap.l4
                .iter()
                .find(|s| s.vip.to_string() == vip)
                .map(|s| s.mode)
                .unwrap()
        };
        assert_eq!(mode(&snap, "10.96.0.10"), L4Mode::L4);
        assert_eq!(redirect_meshed_services(&mut snap, &enrollment), 1);
        assert_eq!(mode(&snap, "10.96.0.10"), L4Mode::Redirect);
        assert_eq!(mode(&snap, "10.96.0.11"), L4Mode::L4);
    }

    #[test]
    fn baggage_is_ztunnels_for_deployment_pods_and_bare_pods() {
        let w = |name: &str, labels: &[(&str, &str)], locality: &str| {
            strait_config::snapshot::Workload {
                name: name.into(),
                namespace: "shop".into(),
                ip: "10.244.1.9".parse().unwrap(),
                labels: Arc::new(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                service_account: "sa".into(),
                locality: locality.into(),
                node: None,
                services: Vec::new(),
            }
        };
        let deployed = w(
            "reviews-v2-5b64f47978-xk2lp",
            &[
                ("pod-template-hash", "5b64f47978"),
                ("app", "reviews"),
                ("version", "v2"),
            ],
            "eu-west1/eu-west1-b/",
        );
        assert_eq!(
            baggage(&deployed, "Kubernetes").unwrap(),
            "k8s.cluster.name=Kubernetes,k8s.namespace.name=shop,k8s.deployment.name=reviews-v2,\
             service.name=reviews,service.version=v2,cloud.region=eu-west1,\
             cloud.availability_zone=eu-west1-b"
        );
        // A bare pod: its own name; the canonical labels win over `app`;
        // no version label is `latest`; no locality, no cloud fields.
        let bare = w(
            "debug",
            &[("app", "x"), ("service.istio.io/canonical-name", "tools")],
            "",
        );
        assert_eq!(
            baggage(&bare, "c1").unwrap(),
            "k8s.cluster.name=c1,k8s.namespace.name=shop,k8s.pod.name=debug,\
             service.name=tools,service.version=latest"
        );
    }
}
