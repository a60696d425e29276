//! Inbound capture for the meshed pods of this node (in-pod model, on by
//! default; `strait run --no-inbound-capture` turns it off, with a
//! warning, [`UNENFORCED`]). It needs no CA: without workload identities
//! the plaintext inbound listener still enforces AuthorizationPolicy and
//! RequestAuthentication (no peer identity: a rule that requires a
//! principal or namespace does not match an ALLOW), STRICT ports are
//! refused in the kernel, and nothing listens on 15008. For each meshed
//! pod whose cgroup is on this node, find its network namespace, open the
//! plaintext inbound listeners inside it (`0.0.0.0:15006` when the pod has
//! an IPv4 address, `[::]:15006` when it has an IPv6 one), attach the
//! `sk_lookup` program to it, register the listeners and write the pod's
//! per-port modes from the snapshot's `inbound` table, its IPv6 addresses
//! and its kubelet-probe exemptions. A pod is keyed by its IPv4 address,
//! an IPv6-only pod by a synthetic key (`proxy_common::V6_ONLY_KEY_BASE`).
//! Pods that leave (or stop being meshed) are detached and their
//! listeners closed. Runs on the reload thread, after every config change
//! and every pods-cgroup rescan.
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
use proxy_common::InpodProbe;

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

/// One captured pod (its listeners' tasks stop when it is dropped).
struct Captured {
    cgroup: PathBuf,
    /// Serves `0.0.0.0:15006` (a pod with an IPv4 address).
    task: Option<tokio::task::JoinHandle<()>>,
    /// Serves `[::]:15006` (a pod with an IPv6 address).
    task6: Option<tokio::task::JoinHandle<()>>,
    netns: Arc<InPodNetns>,
}

impl Drop for Captured {
    fn drop(&mut self) {
        for t in [self.task.take(), self.task6.take()].into_iter().flatten() {
            t.abort();
        }
    }
}

/// The node's in-pod inbound capture.
pub(crate) struct Inbound {
    capture: InpodCapture,
    /// Captured pods by pod key (IPv4 address, or an IPv6-only pod's key).
    pods: HashMap<Ipv4Addr, Captured>,
    proxy: Option<Proxy>,
    snapshot: Option<Arc<ArcSwap<MeshSnapshot>>>,
    root: PathBuf,
    /// Pods whose namespace was not found yet, logged once each.
    waiting: std::collections::HashSet<Ipv4Addr>,
    /// IPv6-only pods' first address → their synthetic pod key.
    v6_keys: HashMap<Ipv6Addr, Ipv4Addr>,
    /// Captured pods → their IPv6 addresses (published to local delivery).
    pods_v6: HashMap<Ipv4Addr, Vec<Ipv6Addr>>,
    /// Pods whose IPv6 policy listener failed to open (logged once).
    v6_failed: std::collections::HashSet<Ipv4Addr>,
    /// Whether kubelet probes are exempted (`--no-probe-exemption` off).
    probes: bool,
}

impl Inbound {
    /// Loads the program (needs the privileges of setup). With `probes`,
    /// plain text from the node's own address to a pod's probe ports is
    /// let through ([`PodEnrollment::probe_ports`](strait_config::enroll::PodEnrollment::probe_ports)).
    pub(crate) fn new(
        datapath: &mut Datapath,
        pods_root: &Path,
        probes: bool,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            capture: InpodCapture::new(datapath.ebpf_mut())?,
            pods: HashMap::new(),
            proxy: None,
            snapshot: None,
            root: pods_root.to_path_buf(),
            waiting: Default::default(),
            v6_keys: HashMap::new(),
            pods_v6: HashMap::new(),
            v6_failed: Default::default(),
            probes,
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
        let want = wanted(enrollment, &found, &mut self.v6_keys);
        let gone: Vec<Ipv4Addr> = self
            .pods
            .iter()
            .filter(|(ip, c)| want.get(ip).map(|w| &w.cgroup) != Some(&c.cgroup))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in gone {
            self.pods.remove(&ip);
            local_delivery::remove(IpAddr::V4(ip));
            for a in self.pods_v6.remove(&ip).unwrap_or_default() {
                local_delivery::remove(IpAddr::V6(a));
            }
            self.v6_failed.remove(&ip);
            self.capture.detach(datapath.ebpf_mut(), ip);
            tracing::info!(pod_key = %ip, "inbound capture removed");
        }
        for (key, want) in &want {
            let primary = want.primary();
            let mut new = false;
            if !self.pods.contains_key(key) {
                match self.start(datapath, *key, want, &proxy, &live) {
                    Ok(Some(c)) => {
                        self.waiting.remove(key);
                        self.pods.insert(*key, c);
                        new = true;
                    }
                    Ok(None) => {
                        if self.waiting.insert(*key) {
                            tracing::info!(pod = %primary, "pod network namespace not found yet; inbound capture waits");
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(pod = %primary, "inbound capture not set up: {e:#}");
                        continue;
                    }
                }
            }
            if let Some(c) = self.pods.get_mut(key) {
                if !want.v6.is_empty() && c.task6.is_none() {
                    match listen6(&c.netns, &mut self.capture, *key, &proxy, &live) {
                        Ok(t) => {
                            c.task6 = Some(t);
                            self.v6_failed.remove(key);
                        }
                        Err(e) => {
                            if self.v6_failed.insert(*key) {
                                tracing::warn!(pod = %primary, ipv6 = ?want.v6, "IPv6 policy listener not opened (plain text to the pod's IPv6 policy ports is refused until it is): {e:#}");
                            }
                        }
                    }
                }
            }
            let w = snap.inbound.get(&primary);
            self.capture.set_modes(*key, w);
            self.capture.set_v6(*key, &want.v6);
            let probes = if self.probes {
                probe_exemptions(want)
            } else {
                BTreeMap::new()
            };
            self.capture.set_probes(*key, &probes);
            if let Some(c) = self.pods.get(key) {
                let ports = policy_ports(w);
                // The proxy's own checked deliveries to a policy port go
                // from `127.0.0.6` / `::6` inside the pod, not through the
                // policy listener (see `transport/local_delivery.rs`).
                for a in self.pods_v6.remove(key).unwrap_or_default() {
                    if !want.v6.contains(&a) {
                        local_delivery::remove(IpAddr::V6(a));
                    }
                }
                for a in &want.v6 {
                    local_delivery::set(IpAddr::V6(*a), c.netns.clone(), ports.clone());
                }
                if !want.v6.is_empty() {
                    self.pods_v6.insert(*key, want.v6.clone());
                }
                if let Some(v4) = want.v4 {
                    local_delivery::set(IpAddr::V4(v4), c.netns.clone(), ports);
                }
            }
            if new {
                tracing::info!(pod = %primary, ipv6 = ?want.v6, "inbound capture attached in the pod's network namespace");
            }
        }
        // Every pod's IPv6 addresses are in `INPOD_V6` now: only then go
        // the ones no pod has any more (an address another pod took over
        // is never missing in between).
        self.capture.sweep_v6();
    }

    fn start(
        &mut self,
        datapath: &mut Datapath,
        key: Ipv4Addr,
        want: &Want,
        proxy: &Proxy,
        live: &Arc<ArcSwap<MeshSnapshot>>,
    ) -> anyhow::Result<Option<Captured>> {
        use anyhow::Context;
        let hint = want
            .cgroup
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split_once('_'))
            .map(|(ns, pod)| format!("-{ns}-{pod}"));
        let Some(netns) = find_netns(
            want.primary(),
            Some(&want.cgroup),
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
        let listener = match want.v4 {
            Some(_) => {
                let addr = SocketAddr::from((
                    Ipv4Addr::UNSPECIFIED,
                    proxy_common::ports::INBOUND_PLAINTEXT,
                ));
                Some(listen_in_pod(&netns, addr).with_context(|| {
                    format!("listening on {addr} in the pod's network namespace")
                })?)
            }
            None => None,
        };
        self.capture
            .attach(datapath.ebpf_mut(), key, &ns_file, inode)?;
        let netns: Arc<InPodNetns> = Arc::new(netns);
        let task = match listener {
            Some(l) => {
                self.capture.set_socket(key, InpodSocket::Plaintext, &l)?;
                Some(tokio::spawn(proxy.serve_inbound(
                    l,
                    netns.clone(),
                    live.clone(),
                )))
            }
            None => None,
        };
        Ok(Some(Captured {
            cgroup: want.cgroup.clone(),
            task,
            task6: None,
            netns,
        }))
    }
}

/// Opens the IPv6 policy listener `[::]:15006` in `netns` (IPv6 only),
/// registers it for pod `key` and serves it.
fn listen6(
    netns: &Arc<InPodNetns>,
    capture: &mut InpodCapture,
    key: Ipv4Addr,
    proxy: &Proxy,
    live: &Arc<ArcSwap<MeshSnapshot>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use anyhow::Context;
    let addr = SocketAddr::from((
        Ipv6Addr::UNSPECIFIED,
        proxy_common::ports::INBOUND_PLAINTEXT,
    ));
    let l = listen_in_pod(netns, addr)
        .with_context(|| format!("listening on {addr} in the pod's network namespace"))?;
    capture.set_socket(key, InpodSocket::Plaintext6, &l)?;
    Ok(tokio::spawn(proxy.serve_inbound(
        l,
        netns.clone(),
        live.clone(),
    )))
}

/// The kubelet-probe exemptions of one pod: each probe port → the node's
/// source address towards each of the pod's addresses (what the kernel
/// picks for kubelet's unbound connection; found by connecting a UDP
/// socket, which sends nothing).
fn probe_exemptions(want: &Want) -> BTreeMap<u16, InpodProbe> {
    if want.probe_ports.is_empty() {
        return BTreeMap::new();
    }
    let p = InpodProbe {
        src4: want
            .v4
            .and_then(|a| node_source(IpAddr::V4(a)))
            .and_then(|s| match s {
                IpAddr::V4(s) => Some(proxy_common::ipv4_to_be(u32::from(s))),
                IpAddr::V6(_) => None,
            })
            .unwrap_or(0),
        src6: want
            .v6
            .first()
            .and_then(|a| node_source(IpAddr::V6(*a)))
            .and_then(|s| match s {
                IpAddr::V6(s) => Some(proxy_common::ipv6_words(s.octets())),
                IpAddr::V4(_) => None,
            })
            .unwrap_or([0; 4]),
    };
    if p == InpodProbe::default() {
        return BTreeMap::new();
    }
    want.probe_ports.iter().map(|port| (*port, p)).collect()
}

/// The source address this (the node's) network namespace uses to reach
/// `ip`; `None` without a route.
fn node_source(ip: IpAddr) -> Option<IpAddr> {
    let any: SocketAddr = match ip {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect((ip, 9)).ok()?;
    let src = s.local_addr().ok()?.ip();
    (!src.is_unspecified()).then_some(src)
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
    /// Its IPv4 address, if any.
    v4: Option<Ipv4Addr>,
    /// Its IPv6 `status.podIPs`.
    v6: Vec<Ipv6Addr>,
    /// The ports kubelet probes.
    probe_ports: Vec<u16>,
}

impl Want {
    /// The address the pod is known by (its namespace holds it; the
    /// snapshot's `inbound` table is keyed by it): the IPv4 address, else
    /// the first IPv6 one.
    fn primary(&self) -> IpAddr {
        match (self.v4, self.v6.first()) {
            (Some(a), _) => IpAddr::V4(a),
            (None, Some(a)) => IpAddr::V6(*a),
            (None, None) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }
}

/// Meshed pods with an address and a cgroup on this node, by pod key: the
/// IPv4 address, or for an IPv6-only pod a synthetic key from `v6_keys`
/// (allocated from [`proxy_common::V6_ONLY_KEY_BASE`] up, kept while the
/// pod stays, freed when it leaves).
fn wanted(
    enrollment: &Enrollment,
    found: &BTreeMap<PodKey, PathBuf>,
    v6_keys: &mut HashMap<Ipv6Addr, Ipv4Addr>,
) -> BTreeMap<Ipv4Addr, Want> {
    let mut out = BTreeMap::new();
    let mut v6_only = Vec::new();
    for p in enrollment.pods.iter().filter(|p| p.meshed()) {
        let Some(cg) = p
            .uid
            .as_ref()
            .and_then(|u| found.get(&PodKey::Uid(u.clone())))
            .or_else(|| found.get(&PodKey::Name(p.namespace.clone(), p.name.clone())))
        else {
            continue;
        };
        let mut v4 = None;
        let mut v6 = Vec::new();
        for a in p.ip.iter().chain(&p.ips) {
            match a.to_canonical() {
                IpAddr::V4(a) => {
                    v4.get_or_insert(a);
                }
                IpAddr::V6(a) => {
                    if !v6.contains(&a) {
                        v6.push(a)
                    }
                }
            }
        }
        let want = Want {
            cgroup: cg.clone(),
            v4,
            v6,
            probe_ports: p.probe_ports.clone(),
        };
        match (v4, want.v6.first()) {
            (Some(a), _) => {
                out.insert(a, want);
            }
            (None, Some(_)) => v6_only.push(want),
            (None, None) => {}
        }
    }
    v6_keys.retain(|a, _| v6_only.iter().any(|w| w.v6.first() == Some(a)));
    for want in v6_only {
        let first = want.v6[0];
        let key = match v6_keys.get(&first) {
            Some(k) => *k,
            None => {
                let used: std::collections::HashSet<Ipv4Addr> = v6_keys.values().copied().collect();
                let base = u32::from(Ipv4Addr::from(proxy_common::V6_ONLY_KEY_BASE));
                let Some(k) = (1..0x0fff_ffffu32)
                    .map(|n| Ipv4Addr::from(base + n))
                    .find(|k| !used.contains(k))
                else {
                    continue;
                };
                v6_keys.insert(first, k);
                k
            }
        };
        out.insert(key, want);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrollment(pods: &[(&str, &[&str])]) -> Enrollment {
        let mut y = String::from(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}\n",
        );
        for (name, ips) in pods {
            let list: Vec<String> = ips.iter().map(|i| format!("{{ip: \"{i}\"}}")).collect();
            y += &format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  containers:\n  - name: app\n    image: app\n    readinessProbe: {{tcpSocket: {{port: 8080}}}}\nstatus: {{podIP: \"{}\", podIPs: [{}]}}\n",
                ips[0],
                list.join(", ")
            );
        }
        let l = strait_config::load::load_str(&y, "t.yaml");
        Enrollment::from_resources(&l.resources)
    }

    fn found(names: &[&str]) -> BTreeMap<PodKey, PathBuf> {
        names
            .iter()
            .map(|n| {
                (
                    PodKey::Name("shop".into(), n.to_string()),
                    PathBuf::from(format!("/cg/{n}")),
                )
            })
            .collect()
    }

    #[test]
    fn ipv6_only_pods_get_stable_synthetic_keys_and_dual_stack_pods_their_ipv4() {
        let e = enrollment(&[
            ("dual", &["10.0.0.1", "fd00::1"]),
            ("six", &["fd00::2"]),
            ("seven", &["fd00::3"]),
        ]);
        let mut keys = HashMap::new();
        let w = wanted(&e, &found(&["dual", "six", "seven"]), &mut keys);
        let dual = &w[&Ipv4Addr::new(10, 0, 0, 1)];
        assert_eq!(dual.v6, vec!["fd00::1".parse::<Ipv6Addr>().unwrap()]);
        assert_eq!(dual.probe_ports, vec![8080]);
        let six = keys[&"fd00::2".parse::<Ipv6Addr>().unwrap()];
        let seven = keys[&"fd00::3".parse::<Ipv6Addr>().unwrap()];
        assert_ne!(six, seven);
        for k in [six, seven] {
            assert!(k.is_multicast(), "{k}: not a key a TCP connection can have");
            assert_eq!(w[&k].v4, None);
        }
        assert_eq!(w[&six].primary(), "fd00::2".parse::<IpAddr>().unwrap());
        // The same pods keep their keys; a pod that leaves frees its key,
        // and the next IPv6-only pod may take it.
        let w = wanted(&e, &found(&["dual", "seven"]), &mut keys);
        assert_eq!(w.len(), 2);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[&"fd00::3".parse::<Ipv6Addr>().unwrap()], seven);
    }
}
