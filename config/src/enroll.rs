//! Enrollment: which pods are in the mesh, decided the way Istio users
//! decide it, from labels on Namespaces and Pods.
//!
//! - A namespace is meshed when it is labelled
//!   `istio.io/dataplane-mode=ambient` (Istio's ambient mode) or
//!   `istio-injection=enabled` (the sidecar-injection label users already
//!   have on their namespaces). A pod labelled
//!   `istio.io/dataplane-mode=ambient` is meshed in any namespace.
//! - A pod opts out with the label `istio.io/dataplane-mode=none`, or
//!   `sidecar.istio.io/inject: "false"` as a label or an annotation. Pods on
//!   the host network are never captured (Istio's CNI skips them too).
//!
//! Follows Istio's `PodRedirectionEnabled` (istio/istio
//! `cni/pkg/util/podutil.go`), plus the injection labels of sidecar mode,
//! which Strait accepts as the same intent. Meshed pods get redirection (and
//! mTLS and policy); pods that are not meshed are left alone: their traffic
//! is not captured, and connections to them are not redirected.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::api::{Object, Pod, Resource};

/// Istio's ambient enrollment label (namespace or pod).
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
/// Istio's sidecar-injection namespace label.
pub const INJECTION: &str = "istio-injection";
/// Istio's per-pod injection label / annotation.
pub const INJECT: &str = "sidecar.istio.io/inject";

/// Why a pod is (not) meshed, for logs and `/config_dump`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Its namespace is labelled `istio.io/dataplane-mode=ambient`.
    NamespaceAmbient,
    /// Its namespace is labelled `istio-injection=enabled`.
    NamespaceInjection,
    /// The pod itself is labelled `istio.io/dataplane-mode=ambient`.
    PodAmbient,
    /// Not meshed: its namespace carries no enrollment label.
    NamespaceNotEnrolled,
    /// Not meshed: the pod is labelled `istio.io/dataplane-mode=none`.
    PodOptOut,
    /// Not meshed: `sidecar.istio.io/inject: "false"` on the pod.
    InjectFalse,
    /// Not meshed: the pod uses the host's network namespace.
    HostNetwork,
}

impl Reason {
    /// Whether the pod is meshed.
    pub fn meshed(self) -> bool {
        matches!(
            self,
            Reason::NamespaceAmbient | Reason::NamespaceInjection | Reason::PodAmbient
        )
    }
}

/// The namespace-level decision from a Namespace's labels: `Some(reason)`
/// when the namespace is meshed.
pub fn namespace_enrolled(labels: &BTreeMap<String, String>) -> Option<Reason> {
    if labels.get(DATAPLANE_MODE).map(String::as_str) == Some("ambient") {
        Some(Reason::NamespaceAmbient)
    } else if labels.get(INJECTION).map(String::as_str) == Some("enabled") {
        Some(Reason::NamespaceInjection)
    } else {
        None
    }
}

/// Istio's rule for one pod, given its namespace's labels (empty when the
/// namespace is unknown).
pub fn pod_reason(namespace_labels: &BTreeMap<String, String>, pod: &Pod) -> Reason {
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let mode = labels.get(DATAPLANE_MODE).map(String::as_str);
    if mode == Some("none") {
        return Reason::PodOptOut;
    }
    if labels.get(INJECT).map(String::as_str) == Some("false")
        || annotations.get(INJECT).map(String::as_str) == Some("false")
    {
        return Reason::InjectFalse;
    }
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
    {
        return Reason::HostNetwork;
    }
    if mode == Some("ambient") {
        return Reason::PodAmbient;
    }
    namespace_enrolled(namespace_labels).unwrap_or(Reason::NamespaceNotEnrolled)
}

/// One pod's enrollment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PodEnrollment {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid` (what a kubelet names the pod's cgroup after).
    pub uid: Option<String>,
    /// `status.podIP` of a pod that has not finished.
    pub ip: Option<IpAddr>,
    /// Every address of such a pod: `status.podIP`, then the other
    /// `status.podIPs` (a dual-stack pod's IPv6 address); empty when `ip`
    /// is `None`.
    #[serde(skip)]
    pub ips: Vec<IpAddr>,
    /// `spec.nodeName`.
    pub node: Option<String>,
    /// The ports kubelet probes (`livenessProbe`, `readinessProbe`,
    /// `startupProbe` of every container: `httpGet`, `tcpSocket`, `grpc`;
    /// a named port resolved against the container's own `ports`, as
    /// kubelet does), sorted, without duplicates. An unresolvable name is
    /// left out.
    #[serde(skip)]
    pub probe_ports: Vec<u16>,
    /// The decision and why.
    pub reason: Reason,
}

impl PodEnrollment {
    /// Whether the pod is meshed.
    pub fn meshed(&self) -> bool {
        self.reason.meshed()
    }
}

/// Every pod's enrollment, and the meshed namespaces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Enrollment {
    /// Meshed namespaces.
    pub namespaces: BTreeSet<String>,
    /// Pods, sorted by namespace and name.
    pub pods: Vec<PodEnrollment>,
}

impl Enrollment {
    /// Decides every Pod of `resources` against the Namespaces of
    /// `resources` (a namespace with no Namespace object has no labels, so
    /// it is not meshed).
    pub fn from_resources(resources: &[Resource]) -> Self {
        let mut ns_labels: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
        for r in resources {
            if let Object::Namespace(ns) = &r.object {
                ns_labels.insert(r.name(), ns.metadata.labels.clone().unwrap_or_default());
            }
        }
        let empty = BTreeMap::new();
        let namespaces = ns_labels
            .iter()
            .filter(|(_, l)| namespace_enrolled(l).is_some())
            .map(|(n, _)| n.to_string())
            .collect();
        let mut pods: Vec<PodEnrollment> = resources
            .iter()
            .filter_map(|r| match &r.object {
                Object::Pod(p) => Some(PodEnrollment {
                    namespace: r.namespace().to_string(),
                    name: r.name().to_string(),
                    uid: p.metadata.uid.clone(),
                    ip: running_ip(p),
                    ips: crate::compile::pod_ips(p),
                    node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
                    probe_ports: probe_ports(p),
                    reason: pod_reason(ns_labels.get(r.namespace()).unwrap_or(&empty), p),
                }),
                _ => None,
            })
            .collect();
        pods.sort();
        Self { namespaces, pods }
    }

    /// Whether the workload at `ip` in `namespace` is meshed: the decision
    /// of the Pod with that IP, else (an address known only from
    /// Endpoints/EndpointSlices or a WorkloadEntry) its namespace's.
    pub fn ip_meshed(&self, ip: IpAddr, namespace: &str) -> bool {
        match self
            .pods
            .iter()
            .find(|p| p.ip == Some(ip) || p.ips.contains(&ip))
        {
            Some(p) => p.meshed(),
            None => self.namespaces.contains(namespace),
        }
    }

    /// The pod `namespace/name`, if known.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodEnrollment> {
        self.pods
            .binary_search_by(|p| (p.namespace.as_str(), p.name.as_str()).cmp(&(namespace, name)))
            .ok()
            .map(|i| &self.pods[i])
    }
}

/// See [`PodEnrollment::probe_ports`] (kubelet's
/// `probe.ResolveContainerPort`).
fn probe_ports(p: &Pod) -> Vec<u16> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let mut out = Vec::new();
    for c in p.spec.iter().flat_map(|s| s.containers.iter()) {
        let resolve = |port: &IntOrString| -> Option<u16> {
            match port {
                IntOrString::Int(n) => u16::try_from(*n).ok().filter(|n| *n != 0),
                IntOrString::String(name) => c
                    .ports
                    .iter()
                    .flatten()
                    .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                    .and_then(|cp| u16::try_from(cp.container_port).ok()),
            }
        };
        let probes = [&c.liveness_probe, &c.readiness_probe, &c.startup_probe];
        for pr in probes.into_iter().flatten() {
            let port = pr
                .http_get
                .as_ref()
                .and_then(|h| resolve(&h.port))
                .or_else(|| pr.tcp_socket.as_ref().and_then(|t| resolve(&t.port)))
                .or_else(|| {
                    pr.grpc
                        .as_ref()
                        .and_then(|g| u16::try_from(g.port).ok())
                        .filter(|n| *n != 0)
                });
            out.extend(port);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn running_ip(p: &Pod) -> Option<IpAddr> {
    let st = p.status.as_ref()?;
    if matches!(st.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    st.pod_ip.as_deref()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Enrollment {
        let l = crate::load::load_str(yaml, "t.yaml");
        assert!(!l.has_errors(), "{:?}", l.diagnostics);
        Enrollment::from_resources(&l.resources)
    }

    const PODS: &str = "
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop, uid: '1111'}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: shop, labels: {istio.io/dataplane-mode: none}}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: shop, annotations: {sidecar.istio.io/inject: 'false'}}
status: {podIP: 10.0.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: d, namespace: shop}
spec: {hostNetwork: true, containers: []}
status: {podIP: 10.0.0.4}
---
apiVersion: v1
kind: Pod
metadata: {name: e, namespace: other, labels: {istio.io/dataplane-mode: ambient}}
status: {podIP: 10.0.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: f, namespace: other}
status: {podIP: 10.0.0.6}
";

    fn reasons(e: &Enrollment) -> Vec<(&str, Reason)> {
        e.pods.iter().map(|p| (p.name.as_str(), p.reason)).collect()
    }

    #[test]
    fn an_ambient_namespace_meshes_its_pods_except_those_opting_out() {
        let e = load(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, labels: {{istio.io/dataplane-mode: ambient}}}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: other}}\n---{PODS}"
        ));
        assert_eq!(
            reasons(&e),
            vec![
                ("e", Reason::PodAmbient),
                ("f", Reason::NamespaceNotEnrolled),
                ("a", Reason::NamespaceAmbient),
                ("b", Reason::PodOptOut),
                ("c", Reason::InjectFalse),
                ("d", Reason::HostNetwork),
            ]
        );
        assert_eq!(e.pod("shop", "a").unwrap().uid.as_deref(), Some("1111"));
        assert!(e.ip_meshed("10.0.0.1".parse().unwrap(), "shop"));
        assert!(!e.ip_meshed("10.0.0.2".parse().unwrap(), "shop"));
        assert!(e.ip_meshed("10.0.0.5".parse().unwrap(), "other"));
        // An address with no Pod object follows its namespace.
        assert!(e.ip_meshed("10.0.9.9".parse().unwrap(), "shop"));
        assert!(!e.ip_meshed("10.0.9.9".parse().unwrap(), "other"));
    }

    #[test]
    fn a_dual_stack_pod_is_meshed_and_a_workload_at_each_address() {
        let yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: shop, labels: {app: a}}\nspec: {serviceAccountName: sa-a, containers: [{name: c}]}\nstatus: {phase: Running, podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}, {ip: 'fd00::1'}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: shop, labels: {istio.io/dataplane-mode: none}}\nstatus: {phase: Running, podIP: 10.0.0.2, podIPs: [{ip: 10.0.0.2}, {ip: 'fd00::2'}]}\n";
        let e = load(yaml);
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(
            e.pod("shop", "a").unwrap().ips,
            vec!["10.0.0.1".parse::<IpAddr>().unwrap(), v6]
        );
        assert!(e.ip_meshed(v6, "other"));
        // The opted-out pod's IPv6 address is not meshed either.
        assert!(!e.ip_meshed("fd00::2".parse().unwrap(), "shop"));
        // The compiled snapshot has the pod at both addresses, one identity.
        let l = crate::load::load_str(yaml, "t.yaml");
        let (snap, _) = crate::compile::compile(&l.resources);
        let (w4, w6) = (
            &snap.workloads[&"10.0.0.1".parse::<IpAddr>().unwrap()],
            &snap.workloads[&v6],
        );
        assert_eq!((w6.name.as_str(), w6.ip), ("a", v6));
        assert_eq!(
            (&w4.service_account, &w4.labels),
            (&w6.service_account, &w6.labels)
        );
    }

    #[test]
    fn istio_injection_enabled_meshes_and_disabled_or_missing_does_not() {
        let ns = |labels: &str| {
            load(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, labels: {{{labels}}}}}\n---{PODS}"
            ))
        };
        let on = ns("istio-injection: enabled");
        assert_eq!(
            on.pod("shop", "a").unwrap().reason,
            Reason::NamespaceInjection
        );
        for off in [
            "istio-injection: disabled",
            "istio.io/dataplane-mode: none",
            "",
        ] {
            let e = ns(off);
            assert!(!e.pod("shop", "a").unwrap().meshed(), "{off}");
            assert!(e.namespaces.is_empty(), "{off}");
        }
        // No Namespace object at all: nothing in it is meshed.
        assert!(!load(PODS).pod("shop", "a").unwrap().meshed());
    }

    #[test]
    fn probe_ports_are_the_containers_probe_ports_with_names_resolved_per_container() {
        let e = load(
            "apiVersion: v1
kind: Pod
metadata: {name: p, namespace: shop}
spec:
  containers:
  - name: app
    ports: [{name: http, containerPort: 8080}, {name: admin, containerPort: 9901}]
    livenessProbe: {httpGet: {path: /healthz, port: http}}
    readinessProbe: {tcpSocket: {port: 8080}}
    startupProbe: {exec: {command: [true]}}
  - name: grpc
    ports: [{name: g, containerPort: 7070}]
    readinessProbe: {grpc: {port: 7070}}
    livenessProbe: {httpGet: {port: admin}}
status: {podIP: 10.0.0.9}
",
        );
        // `admin` names a port of the other container: kubelet would not
        // resolve it either.
        assert_eq!(e.pod("shop", "p").unwrap().probe_ports, vec![7070, 8080]);
    }
}
