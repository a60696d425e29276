//! A simulated Kubernetes node for namespace tests and the demo, built as
//! the design's (ARCHITECTURE.md) "Node model" describes:
//!
//! - the node is its own network namespace `strait-<id>-node` (never the
//!   host's), with `ip_forward=1` and its pod-network address
//!   `10.244.<index>.1/32` on `lo`;
//! - each pod is a namespace `strait-<id>-<namespace>-<pod>` joined to the
//!   node by a veth pair (`s<id>p<n>` on the node, `eth0` in the pod), with a
//!   /32 pod IP, a route to it on the node, and a default route via the node;
//! - each pod has a cgroup `<cgroup2>/strait-<id>/pods/<namespace>_<pod>`;
//!   processes "on the node" (the daemon) go to `<cgroup2>/strait-<id>/node`;
//! - the node has its own bpffs mount for the daemon's pins;
//! - Services get ClusterIPs in 10.96.0.0/16 ([`ipam::cluster_ip`]);
//! - [`Node::write_config`] writes the Kubernetes view (Services with their
//!   ClusterIP, Pods with `status.podIP`, EndpointSlices) for
//!   `strait run --config DIR`.
//!
//! Nothing is connected to the host's namespace, so no packet leaves the
//! machine. Several nodes are joined with [`link`]. Dropping a [`Node`]
//! (also while unwinding from a panic) kills its processes and removes its
//! namespaces, veths, cgroups, bpffs mount and tmp dir; [`sweep::stale`]
//! removes what a killed test run left behind.
pub mod bookinfo;
mod bpffs;
pub mod capture;
mod cgroups;
pub mod config;
mod daemon;
pub mod echo;
pub mod hello;
pub mod http;
pub mod ipam;
pub mod kube;
mod link;
pub mod names;
pub mod netns;
mod pair;
mod pod;
pub mod sweep;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

pub use daemon::{Daemon, DaemonBuilder, Guard, MeshCa, Stop, WAIT};
pub use kube::{DeploymentDef, Platform, ServiceDef, ServicePort, TargetPort};
pub use link::link;
pub use pair::{MeshPair, PairSpec};
pub use pod::{Pod, PodSpec};

/// Istio's outbound capture port, where the daemon's outbound listener is.
pub const OUTBOUND_PORT: u16 = 15001;

/// A node: its namespace, cgroups, pods and services. See the module docs.
#[derive(Debug)]
pub struct Node {
    name: String,
    index: u8,
    id: String,
    netns: String,
    cgroup: PathBuf,
    tmp: PathBuf,
    pods: Vec<Pod>,
    services: Vec<ServiceDef>,
    namespaces: BTreeSet<String>,
    namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    service_accounts: BTreeSet<(String, String)>,
    /// Dual-stack ([`Node::enable_ipv6`]).
    ipv6: bool,
}

/// A fixed link-local address of the node's end of every pod veth: the
/// pods' IPv6 default gateway (IPv6 answers neighbour solicitations only
/// for addresses of the interface asked on, so the node's `lo` address
/// cannot be the next hop as the IPv4 one is).
const NODE_LINK_LOCAL: &str = "fe80::1";

impl Node {
    /// Creates node `name` with pod CIDR `10.244.<index>.0/24` under the
    /// cgroup v2 mount `cgroup2` ([`crate::privileged::Privileged::cgroup2`]).
    /// Nodes that will be [`link`]ed need distinct indexes. Needs root.
    /// On error everything created so far is removed.
    pub fn new(cgroup2: &Path, name: &str, index: u8) -> anyhow::Result<Node> {
        sweep::once(cgroup2);
        let id = names::new_node_id();
        let node = Node {
            name: name.to_string(),
            index,
            netns: format!("{}{id}-node", names::PREFIX),
            cgroup: cgroup2.join(format!("{}{id}", names::PREFIX)),
            tmp: std::env::temp_dir().join(format!("{}{id}", names::PREFIX)),
            id,
            pods: Vec::new(),
            services: Vec::new(),
            namespaces: BTreeSet::new(),
            namespace_labels: BTreeMap::new(),
            service_accounts: BTreeSet::new(),
            ipv6: false,
        };
        node.setup()
            .with_context(|| format!("create node {name} ({})", node.netns))?;
        Ok(node)
    }

    fn setup(&self) -> anyhow::Result<()> {
        std::fs::create_dir(&self.tmp).with_context(|| format!("create {}", self.tmp.display()))?;
        bpffs::mount(&self.bpffs_dir())?;
        cgroups::create(&self.cgroup)?;
        cgroups::create(&self.pods_cgroup())?;
        cgroups::create(&self.cgroup.join("node"))?;
        netns::add(&self.netns)?;
        netns::sysctl(&self.netns, "ipv4/ip_forward", "1")?;
        // Pod traffic to the daemon and between nodes arrives on interfaces
        // the reverse path would not pick; strict rp_filter (inherited from
        // some hosts) would drop it.
        netns::sysctl(&self.netns, "ipv4/conf/all/rp_filter", "0")?;
        netns::sysctl(&self.netns, "ipv4/conf/default/rp_filter", "0")?;
        netns::ip_batch(
            &self.netns,
            &[
                "link set lo up".into(),
                format!("addr add {}/32 dev lo", self.gateway()),
            ],
        )
    }

    /// The node's name (as in a Pod's `spec.nodeName`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's index: its pod CIDR is `10.244.<index>.0/24`.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The 8-character id (`<pid>_<n>`, see [`names`]) in every object name
    /// this node creates.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The node's network namespace, where the daemon runs.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The node's address on the pod network, `10.244.<index>.1`: the pods'
    /// gateway and the address other nodes reach this node at.
    pub fn gateway(&self) -> Ipv4Addr {
        ipam::gateway(self.index)
    }

    /// Makes the node dual-stack: its address `fd00:244:<index>::1` on
    /// `lo` ([`ipam::gateway6`]), IPv6 forwarding on, and every pod (those
    /// made before and after) an IPv6 address `fd00:244:<index>::<n>`
    /// ([`Pod::ip6`], written as the pod's second `status.podIPs`) routed
    /// through the node; [`Node::strait_run`] then passes `--outbound6
    /// [fd00:244:<index>::1]:15001`. Addresses are added without duplicate
    /// address detection, so they work at once.
    pub fn enable_ipv6(&mut self) -> anyhow::Result<()> {
        if self.ipv6 {
            return Ok(());
        }
        netns::sysctl(&self.netns, "ipv6/conf/all/disable_ipv6", "0")?;
        netns::sysctl(&self.netns, "ipv6/conf/all/forwarding", "1")?;
        netns::ip_batch(
            &self.netns,
            &[format!("addr add {}/128 dev lo nodad", self.gateway6())],
        )?;
        self.ipv6 = true;
        for n in 0..self.pods.len() {
            let ip6 = ipam::pod_ip6(self.index, n);
            self.pods[n].ip6 = Some(ip6);
            let pod = self.pods[n].clone();
            self.setup_pod6(&pod).with_context(|| {
                format!("IPv6 for pod {}/{}", pod.spec.namespace, pod.spec.name)
            })?;
        }
        Ok(())
    }

    fn setup_pod6(&self, pod: &Pod) -> anyhow::Result<()> {
        let Some(ip6) = pod.ip6 else {
            return Ok(());
        };
        netns::ip_batch(
            &self.netns,
            &[
                format!("addr add {NODE_LINK_LOCAL}/64 dev {} nodad", pod.node_veth),
                format!(
                    "route add {ip6}/128 dev {} src {}",
                    pod.node_veth,
                    self.gateway6()
                ),
            ],
        )?;
        netns::ip_batch(
            &pod.netns,
            &[
                format!("addr add {ip6}/128 dev eth0 nodad"),
                format!("route add ::/0 via {NODE_LINK_LOCAL} dev eth0 src {ip6}"),
            ],
        )
    }

    /// The node's IPv6 address with [`Node::enable_ipv6`]: `fd00:244:<index>::1`.
    pub fn gateway6(&self) -> Ipv6Addr {
        ipam::gateway6(self.index)
    }

    /// Whether [`Node::enable_ipv6`] was called.
    pub fn ipv6(&self) -> bool {
        self.ipv6
    }

    /// The node's pod CIDR, `10.244.<index>.0/24`.
    pub fn pod_cidr(&self) -> String {
        ipam::pod_cidr(self.index)
    }

    /// The node's cgroup, `<cgroup2>/strait-<id>`.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The pods cgroup, `<cgroup2>/strait-<id>/pods`: `strait run
    /// --pods-cgroup` attaches the socket programs here.
    pub fn pods_cgroup(&self) -> PathBuf {
        self.cgroup.join("pods")
    }

    /// A scratch directory removed with the node (logs, config dir, …).
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// This node's own bpffs instance, mounted at `<tmp dir>/bpffs`, where
    /// its daemon pins its maps (`strait run --bpffs`). Each bpffs mount is
    /// separate, so nodes never see each other's pins; unmounting it on drop
    /// releases every pin.
    pub fn bpffs_dir(&self) -> PathBuf {
        self.tmp.join("bpffs")
    }

    /// Creates a pod on this node; see the module docs for its shape.
    /// Errors: a duplicate `namespace/name`, a full pod CIDR, `ip` failing.
    pub fn add_pod(&mut self, spec: PodSpec) -> anyhow::Result<&Pod> {
        if self.pod(&spec.namespace, &spec.name).is_some() {
            bail!(
                "pod {}/{} already exists on node {}",
                spec.namespace,
                spec.name,
                self.name
            );
        }
        let n = self.pods.len();
        let pod = Pod {
            ip: ipam::pod_ip(self.index, n)?,
            ip6: self.ipv6.then(|| ipam::pod_ip6(self.index, n)),
            node: self.name.clone(),
            netns: format!(
                "{}{}-{}-{}",
                names::PREFIX,
                self.id,
                spec.namespace,
                spec.name
            ),
            node_veth: format!("s{}p{n:02}", self.id),
            cgroup: self
                .pods_cgroup()
                .join(format!("{}_{}", spec.namespace, spec.name)),
            spec,
        };
        self.namespaces.insert(pod.spec.namespace.clone());
        self.service_accounts
            .insert((pod.spec.namespace.clone(), pod.spec.service_account.clone()));
        // Recorded first, so that Drop removes a half-made pod too.
        self.pods.push(pod.clone());
        self.setup_pod(&pod)
            .and_then(|()| self.setup_pod6(&pod))
            .with_context(|| format!("create pod {}/{}", pod.spec.namespace, pod.spec.name))?;
        Ok(self.pods.last().expect("just pushed"))
    }

    fn setup_pod(&self, pod: &Pod) -> anyhow::Result<()> {
        cgroups::create(&pod.cgroup)?;
        netns::add(&pod.netns)?;
        // Both ends are created inside namespaces: the host never sees them.
        netns::ip(&[
            "-n",
            &self.netns,
            "link",
            "add",
            &pod.node_veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &pod.netns,
        ])?;
        let gw = self.gateway();
        netns::ip_batch(
            &self.netns,
            &[
                format!("link set {} up", pod.node_veth),
                format!("route add {}/32 dev {} src {gw}", pod.ip, pod.node_veth),
            ],
        )?;
        netns::ip_batch(
            &pod.netns,
            &[
                "link set lo up".into(),
                "link set eth0 up".into(),
                format!("addr add {}/32 dev eth0", pod.ip),
                format!("route add {gw}/32 dev eth0 scope link"),
                format!("route add default via {gw} dev eth0 src {}", pod.ip),
            ],
        )
    }

    /// Adds a Service; a missing ClusterIP is allocated
    /// ([`ipam::cluster_ip`]), headless ones get none. Returns it with its
    /// address. Errors: a duplicate `namespace/name`, a ClusterIP in use.
    pub fn add_service(&mut self, mut svc: ServiceDef) -> anyhow::Result<&ServiceDef> {
        if self.service(&svc.namespace, &svc.name).is_some() {
            bail!(
                "Service/{}/{} already exists on node {}",
                svc.namespace,
                svc.name,
                self.name
            );
        }
        let taken: BTreeSet<Ipv4Addr> = self.services.iter().filter_map(|s| s.cluster_ip).collect();
        match svc.cluster_ip {
            Some(ip) if taken.contains(&ip) => {
                bail!(
                    "Service/{}/{}: spec.clusterIP: {ip} is already allocated",
                    svc.namespace,
                    svc.name
                )
            }
            Some(_) => {}
            None if svc.headless => {}
            None => svc.cluster_ip = Some(ipam::cluster_ip(&svc.namespace, &svc.name, &taken)),
        }
        self.namespaces.insert(svc.namespace.clone());
        self.services.push(svc);
        Ok(self.services.last().expect("just pushed"))
    }

    /// Creates what `platform` describes: its Services, and for each
    /// Deployment `replicas` pods named `<deployment>-<node>-<i>` with the
    /// template's labels and service account. Returns the new pods' names.
    pub fn apply(&mut self, platform: &Platform) -> anyhow::Result<Vec<String>> {
        self.namespaces.extend(platform.namespaces.iter().cloned());
        self.service_accounts
            .extend(platform.service_accounts.iter().cloned());
        for svc in &platform.services {
            self.add_service(svc.clone())?;
        }
        let mut created = Vec::new();
        for d in &platform.deployments {
            for i in 0..d.replicas {
                let name = format!("{}-{}-{i}", d.name, self.name);
                self.add_pod(PodSpec {
                    name: name.clone(),
                    namespace: d.namespace.clone(),
                    labels: d.labels.clone(),
                    service_account: d.service_account.clone(),
                    container_ports: d.container_ports.clone(),
                    deployment: Some(d.name.clone()),
                })?;
                created.push(name);
            }
        }
        Ok(created)
    }

    /// The pods, in creation order.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// The pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| p.spec.namespace == namespace && p.spec.name == name)
    }

    /// The Services, in the order they were added.
    pub fn services(&self) -> &[ServiceDef] {
        &self.services
    }

    /// The Service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceDef> {
        self.services
            .iter()
            .find(|s| s.namespace == namespace && s.name == name)
    }

    /// The pods on this node that Service `namespace/name` selects.
    pub fn endpoints(&self, namespace: &str, name: &str) -> Vec<&Pod> {
        let Some(svc) = self.service(namespace, name) else {
            return Vec::new();
        };
        self.pods
            .iter()
            .filter(|p| svc.selects(&p.spec.namespace, &p.spec.labels))
            .collect()
    }

    /// A command that runs `program` on the node: in the node's network
    /// namespace and its `node` cgroup, outside the pods cgroup (where the
    /// daemon runs). The node kills it on drop if it is still running.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> anyhow::Result<Command> {
        let mut cmd = Command::new(program);
        netns::enter(&mut cmd, &self.netns, Some(&self.cgroup.join("node")))?;
        Ok(cmd)
    }

    /// One TCP connection from the node (its namespace, outside the pods
    /// cgroup: as kubelet or another node process dials) to `addr` with
    /// `strait-probe tcp`: see [`Pod::probe`].
    pub fn probe(&self, addr: std::net::SocketAddr) -> String {
        pod::probe_with(|probe| self.command(probe), addr)
    }

    /// Where this node's daemon should listen for redirected connections:
    /// `<node address>:15001` (Istio's outbound capture port). Pods have
    /// their own loopback, so `127.0.0.1` in the node's namespace is out of
    /// their reach; the node address is routed from every pod.
    pub fn outbound_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.gateway(), OUTBOUND_PORT)
    }

    /// Where this node's daemon listens for redirected IPv6 connections
    /// with [`Node::enable_ipv6`]: `[fd00:244:<index>::1]:15001`.
    pub fn outbound6_addr(&self) -> SocketAddrV6 {
        SocketAddrV6::new(self.gateway6(), OUTBOUND_PORT, 0, 0)
    }

    /// `strait run` for this node, as a [`Node::command`] (node namespace,
    /// outside the pods cgroup): `run --config <config_dir> --node <name>
    /// --pods-cgroup <pods cgroup> --bpffs <node bpffs> --outbound
    /// <outbound_addr>` (and `--outbound6 <outbound6_addr>` on a dual-stack
    /// node). Add flags (`--admin`, `--log-level`) and spawn it;
    /// the node kills it on drop.
    pub fn strait_run(&self, strait: &Path, config_dir: &Path) -> anyhow::Result<Command> {
        self.strait_run_from(strait, &["--config".as_ref(), config_dir.as_os_str()])
    }

    /// [`Node::strait_run`] reading the configuration from the API server
    /// of `kubeconfig` (`run --kubeconfig <kubeconfig> ...`).
    pub fn strait_run_kube(&self, strait: &Path, kubeconfig: &Path) -> anyhow::Result<Command> {
        self.strait_run_from(strait, &["--kubeconfig".as_ref(), kubeconfig.as_os_str()])
    }

    fn strait_run_from(
        &self,
        strait: &Path,
        source: &[&std::ffi::OsStr],
    ) -> anyhow::Result<Command> {
        let mut cmd = self.command(strait)?;
        cmd.arg("run")
            .args(source)
            .args(["--node", &self.name])
            .arg("--pods-cgroup")
            .arg(self.pods_cgroup())
            .arg("--bpffs")
            .arg(self.bpffs_dir())
            .args(["--outbound", &self.outbound_addr().to_string()]);
        if self.ipv6 {
            cmd.args(["--outbound6", &self.outbound6_addr().to_string()]);
        }
        Ok(cmd)
    }

    /// Runs `f` on a thread inside the node's network namespace.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
        netns::run_in(&self.netns, f)
    }

    /// Sets the labels [`Node::write_config`] gives Namespace `namespace`.
    /// A namespace without labels set here is written with
    /// `istio.io/dataplane-mode: ambient`, so its pods are meshed (see
    /// `strait_config::enroll`); `set_namespace_labels(ns, &[])` leaves it
    /// out of the mesh.
    pub fn set_namespace_labels(&mut self, namespace: &str, labels: &[(&str, &str)]) {
        self.namespace_labels.insert(
            namespace.to_string(),
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }

    /// Sets label `key` of pod `namespace/name` (what [`Node::write_config`]
    /// writes as the Pod's labels); `None` removes it. Returns false when
    /// there is no such pod.
    pub fn set_pod_label(
        &mut self,
        namespace: &str,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> bool {
        let Some(pod) = self
            .pods
            .iter_mut()
            .find(|p| p.spec.namespace == namespace && p.spec.name == name)
        else {
            return false;
        };
        match value {
            Some(v) => pod.spec.labels.insert(key.to_string(), v.to_string()),
            None => pod.spec.labels.remove(key),
        };
        true
    }

    /// The labels of Namespace `namespace` in the written config (see
    /// [`Node::set_namespace_labels`]).
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        self.namespace_labels
            .get(namespace)
            .cloned()
            .unwrap_or_else(|| {
                [("istio.io/dataplane-mode".to_string(), "ambient".to_string())].into()
            })
    }

    /// Writes the Kubernetes view of this node into the config directory
    /// `dir` (created if missing); see [`config`] for the files.
    pub fn write_config(&self, dir: &Path) -> anyhow::Result<()> {
        config::write(self, dir)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Processes first: a namespace with a process in it outlives
        // `ip netns del`, and so would its veths.
        cgroups::remove_tree(&self.cgroup);
        for pod in &self.pods {
            sweep::remove_netns(&pod.netns);
        }
        sweep::remove_netns(&self.netns);
        sweep::remove_tmp(&self.tmp);
    }
}
