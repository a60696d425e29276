//! Inbound capture for the meshed pods of this node (in-pod model, on by
//! default; `strait run --no-inbound-capture` turns it off, with a
//! warning, [`UNENFORCED`]). It needs no CA: without workload identities
//! the plaintext inbound listener still enforces AuthorizationPolicy and
//! RequestAuthentication (no peer identity: a rule that requires a
//! principal or namespace does not match an ALLOW), STRICT ports are
//! refused in the kernel, and nothing listens on 15008. For each meshed
//! pod whose cgroup
//! is on this node, find its network namespace, open the plaintext inbound
//! listener `0.0.0.0:15006` inside it, attach the `sk_lookup` program to
//! it, register the listener and write the pod's per-port modes from the
//! snapshot's `inbound` table. Pods that leave (or stop being meshed) are
//! detached and their listener closed. Runs on the reload thread, after
//! every config change and every pods-cgroup rescan.
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use strait_config::enroll::Enrollment;
use strait_config::snapshot::InboundWorkload;
use strait_config::MeshSnapshot;

use super::pods::{self, PodKey};
use crate::datapath::inpod::{mode_entries, InboundAction, InpodCapture, InpodSocket};
use crate::datapath::Datapath;
use crate::serve::Proxy;
use crate::transport::inpod::{self, find_netns, listen_in_pod, InPodNetns};
use crate::transport::local_delivery::{self, PolicyPorts};

/// What the daemon logs (at start and after each reload that leaves
/// policy-protected workloads) when the capture is turned off.
pub const UNENFORCED: &str = "inbound capture is OFF (--no-inbound-capture): connections made straight to pod IPs are NOT checked against AuthorizationPolicy or RequestAuthentication on this node, and PeerAuthentication STRICT fails closed instead of being enforced; drop --no-inbound-capture to enforce them";

/// With the capture off: logs [`UNENFORCED`] with the pod IPs whose
/// AuthorizationPolicy / RequestAuthentication connections straight to
/// the pod IP bypass (none: nothing logged).
pub(crate) fn warn_unenforced(snap: &MeshSnapshot) {
    let ips: Vec<String> = snap
        .inbound
        .iter()
        .filter(|(_, w)| w.policy)
        .map(|(ip, _)| ip.to_string())
        .collect();
    if !ips.is_empty() {
        tracing::warn!(workloads = %ips.join(","), "{UNENFORCED}");
    }
}

/// One captured pod.
struct Captured {
    cgroup: PathBuf,
    task: tokio::task::JoinHandle<()>,
    netns: Arc<InPodNetns>,
}

/// The node's in-pod inbound capture.
pub(crate) struct Inbound {
    capture: InpodCapture,
    pods: HashMap<Ipv4Addr, Captured>,
    proxy: Option<Proxy>,
    snapshot: Option<Arc<ArcSwap<MeshSnapshot>>>,
    root: PathBuf,
    /// Pods whose namespace was not found yet, logged once each.
    waiting: std::collections::HashSet<Ipv4Addr>,
    /// IPv6-only meshed pods, logged once each (not captured).
    v6_only: std::collections::HashSet<Ipv6Addr>,
    /// Captured pods → their IPv6 addresses (published to local delivery).
    pods_v6: HashMap<Ipv4Addr, Vec<Ipv6Addr>>,
    /// Pods whose IPv6 policy-port refusal was logged.
    v6_refused: std::collections::HashSet<Ipv4Addr>,
}

impl Inbound {
    /// Loads the program (needs the privileges of setup).
    pub(crate) fn new(datapath: &mut Datapath, pods_root: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            capture: InpodCapture::new(datapath.ebpf_mut())?,
            pods: HashMap::new(),
            proxy: None,
            snapshot: None,
            root: pods_root.to_path_buf(),
            waiting: Default::default(),
            v6_only: Default::default(),
            pods_v6: HashMap::new(),
            v6_refused: Default::default(),
        })
    }

    /// Where accepted connections are served (once serving starts).
    pub(crate) fn serve_with(&mut self, proxy: Proxy, snapshot: Arc<ArcSwap<MeshSnapshot>>) {
        self.proxy = Some(proxy);
        self.snapshot = Some(snapshot);
    }

    /// Makes the capture follow `enrollment` and the pods cgroup, with the
    /// modes of `snap`. Must run inside the tokio runtime.
    pub(crate) fn sync(
        &mut self,
        datapath: &mut Datapath,
        snap: &MeshSnapshot,
        enrollment: &Enrollment,
    ) {
        let (Some(proxy), Some(live)) = (self.proxy.clone(), self.snapshot.clone()) else {
            return;
        };
        let found = match pods::pod_cgroups(&self.root) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("pods cgroup not listed, inbound capture unchanged: {e}");
                return;
            }
        };
        let want = wanted(enrollment, &found);
        self.warn_v6_only(enrollment, snap);
        let gone: Vec<Ipv4Addr> = self
            .pods
            .iter()
            .filter(|(ip, c)| want.get(ip).map(|w| &w.cgroup) != Some(&c.cgroup))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in gone {
            if let Some(c) = self.pods.remove(&ip) {
                c.task.abort();
            }
            local_delivery::remove(IpAddr::V4(ip));
            for a in self.pods_v6.remove(&ip).unwrap_or_default() {
                local_delivery::remove(IpAddr::V6(a));
            }
            self.capture.detach(datapath.ebpf_mut(), ip);
            tracing::info!(pod = %ip, "inbound capture removed");
        }
        for (ip, Want { cgroup, v6 }) in &want {
            let mut new = false;
            if !self.pods.contains_key(ip) {
                match self.start(datapath, *ip, cgroup, &proxy, &live) {
                    Ok(Some(c)) => {
                        self.waiting.remove(ip);
                        self.pods.insert(*ip, c);
                        new = true;
                    }
                    Ok(None) => {
                        if self.waiting.insert(*ip) {
                            tracing::info!(pod = %ip, "pod network namespace not found yet; inbound capture waits");
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(pod = %ip, "inbound capture not set up: {e:#}");
                        continue;
                    }
                }
            }
            let w = snap.inbound.get(&IpAddr::V4(*ip));
            self.capture.set_modes(*ip, w);
            self.capture.set_v6(*ip, v6);
            if let Some(c) = self.pods.get(ip) {
                let ports = policy_ports(w);
                // IPv6 plain text to a policy port is refused in the pod
                // (no IPv6 policy listener): the proxy's own checked
                // deliveries go from `::6` inside the pod instead.
                for a in self.pods_v6.remove(ip).unwrap_or_default() {
                    if !v6.contains(&a) {
                        local_delivery::remove(IpAddr::V6(a));
                    }
                }
                for a in v6 {
                    local_delivery::set(IpAddr::V6(*a), c.netns.clone(), ports.clone());
                }
                if !v6.is_empty() {
                    self.pods_v6.insert(*ip, v6.clone());
                }
                local_delivery::set(IpAddr::V4(*ip), c.netns.clone(), ports);
                if w.is_some_and(|w| {
                    mode_entries(w)
                        .values()
                        .any(|a| *a == InboundAction::Plaintext)
                }) && !v6.is_empty()
                    && self.v6_refused.insert(*ip)
                {
                    tracing::warn!(pod = %ip, ipv6 = ?v6, "plain text to the pod's IPv6 address on ports covered by AuthorizationPolicy/RequestAuthentication is refused (the policy listener is IPv4-only); meshed (HBONE) and IPv4 clients are served");
                }
            }
            if new {
                tracing::info!(pod = %ip, "inbound capture attached in the pod's network namespace");
            }
        }
    }

    /// Logs once, as an error, each meshed IPv6-only pod (no IPv4 address)
    /// whose STRICT mode or policy the capture cannot enforce: it is not
    /// captured (the capture is keyed by the pod's IPv4 address).
    fn warn_v6_only(&mut self, enrollment: &Enrollment, snap: &MeshSnapshot) {
        for p in enrollment.pods.iter().filter(|p| p.meshed()) {
            let Some(IpAddr::V6(a)) = p.ip else {
                continue;
            };
            if a.to_ipv4_mapped().is_some()
                || p.ips.iter().any(|i| i.is_ipv4())
                || !snap
                    .inbound
                    .get(&IpAddr::V6(a))
                    .is_some_and(|w| mode_entries(w).values().any(|x| *x != InboundAction::Pass))
            {
                continue;
            }
            if self.v6_only.insert(a) {
                tracing::error!(pod = %format!("{}/{}", p.namespace, p.name), ip = %a, "IPv6-only pod: in-pod inbound capture needs an IPv4 pod address, so PeerAuthentication STRICT and AuthorizationPolicy/RequestAuthentication are NOT enforced for plain-text clients outside the mesh connecting straight to this pod's address");
            }
        }
    }

    fn start(
        &mut self,
        datapath: &mut Datapath,
        ip: Ipv4Addr,
        cgroup: &Path,
        proxy: &Proxy,
        live: &Arc<ArcSwap<MeshSnapshot>>,
    ) -> anyhow::Result<Option<Captured>> {
        use anyhow::Context;
        let hint = cgroup
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split_once('_'))
            .map(|(ns, pod)| format!("-{ns}-{pod}"));
        let Some(netns) = find_netns(
            IpAddr::V4(ip),
            Some(cgroup),
            Path::new(inpod::NAMED_NETNS_DIR),
            hint.as_deref(),
        )?
        else {
            return Ok(None);
        };
        // The namespace's identity, and a descriptor to attach to.
        let ns_file = std::fs::File::open(netns.path())
            .with_context(|| format!("opening {}", netns.path().display()))?;
        let inode = {
            use std::os::unix::fs::MetadataExt;
            ns_file.metadata()?.ino()
        };
        let addr = SocketAddr::from((
            Ipv4Addr::UNSPECIFIED,
            proxy_common::ports::INBOUND_PLAINTEXT,
        ));
        let listener = listen_in_pod(&netns, addr)
            .with_context(|| format!("listening on {addr} in the pod's network namespace"))?;
        self.capture
            .attach(datapath.ebpf_mut(), ip, &ns_file, inode)?;
        self.capture
            .set_socket(ip, InpodSocket::Plaintext, &listener)?;
        let netns: Arc<InPodNetns> = Arc::new(netns);
        let task = tokio::spawn(proxy.serve_inbound(listener, netns.clone(), live.clone()));
        Ok(Some(Captured {
            cgroup: cgroup.to_path_buf(),
            task,
            netns,
        }))
    }
}

/// The ports of a pod the kernel steers to its policy listener (what the
/// node proxy delivers inside the pod once it has checked a connection).
fn policy_ports(w: Option<&InboundWorkload>) -> PolicyPorts {
    let Some(w) = w else {
        return PolicyPorts::default();
    };
    let mut out = PolicyPorts::default();
    for (port, a) in mode_entries(w) {
        let steered = a == InboundAction::Plaintext;
        if port == 0 {
            out.default = steered;
        } else {
            out.ports.insert(port, steered);
        }
    }
    out
}

/// One meshed pod to capture.
#[derive(Debug, PartialEq)]
struct Want {
    /// Its cgroup on this node.
    cgroup: PathBuf,
    /// Its IPv6 `status.podIPs` (dual stack).
    v6: Vec<Ipv6Addr>,
}

/// Meshed pods with an IPv4 address and a cgroup on this node → their
/// cgroup and IPv6 addresses.
fn wanted(enrollment: &Enrollment, found: &BTreeMap<PodKey, PathBuf>) -> BTreeMap<Ipv4Addr, Want> {
    enrollment
        .pods
        .iter()
        .filter(|p| p.meshed())
        .filter_map(|p| {
            let ip = match p.ip? {
                IpAddr::V4(a) => a,
                IpAddr::V6(a) => a.to_ipv4_mapped()?,
            };
            let cg = p
                .uid
                .as_ref()
                .and_then(|u| found.get(&PodKey::Uid(u.clone())))
                .or_else(|| found.get(&PodKey::Name(p.namespace.clone(), p.name.clone())))?;
            let v6 = p
                .ips
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V6(a) if a.to_ipv4_mapped().is_none() => Some(*a),
                    _ => None,
                })
                .collect();
            Some((
                ip,
                Want {
                    cgroup: cg.clone(),
                    v6,
                },
            ))
        })
        .collect()
}
