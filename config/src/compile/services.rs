//! Services and their endpoints, from Kubernetes Services (with Endpoints,
//! EndpointSlices, or selected Pods) and ServiceEntries.
//!
//! Endpoint sources, in Istio's order of preference for a Kubernetes
//! Service: EndpointSlices labelled `kubernetes.io/service-name`, else the
//! Endpoints object of the same name, else the Pods its selector matches
//! (what the endpoints controller would produce). Endpoint labels and
//! service accounts come from the Pod the endpoint references; when that
//! Pod is not among the resources, from the Deployment whose name prefixes
//! the Pod name (`reviews-v1-7f9c…` → Deployment `reviews-v1`).
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::intern::Interner;
use super::Index;
use crate::api::{Deployment, Pod};
use crate::hosts;
use crate::snapshot::{Protocol, Service, ServicePort, ServiceSource, Workload};

/// An endpoint before it is bound to a service port.
#[derive(Clone, Debug)]
pub(crate) struct RawEndpoint {
    pub ip: IpAddr,
    /// Service port name → endpoint (target) port.
    pub ports: Arc<BTreeMap<String, u16>>,
    /// Shared by the endpoints of one pod / Deployment.
    pub labels: Arc<BTreeMap<String, String>>,
    pub locality: Arc<str>,
    pub service_account: Option<Arc<str>>,
    pub namespace: Arc<str>,
    pub healthy: bool,
    pub weight: u32,
    pub name: String,
    pub node: Option<String>,
}

impl RawEndpoint {
    /// The workload of an endpoint without a Pod or WorkloadEntry behind it
    /// (Endpoints without Pod objects): its name, labels, locality and node,
    /// service account `default` when unknown, no services yet.
    pub(crate) fn into_workload(self) -> Workload {
        Workload {
            name: self.name,
            namespace: self.namespace.to_string(),
            ip: self.ip,
            labels: self.labels,
            service_account: self
                .service_account
                .as_deref()
                .unwrap_or("default")
                .to_string(),
            locality: self.locality.to_string(),
            node: self.node,
            // Usually one Service per workload.
            services: Vec::with_capacity(1),
        }
    }
}

/// Istio's locality from workload labels: `istio-locality`
/// (`region.zone.subzone`), else `topology.kubernetes.io/region` / `zone`
/// and `topology.istio.io/subzone`.
pub(crate) fn locality_of(labels: &BTreeMap<String, String>) -> String {
    if let Some(l) = labels.get("istio-locality") {
        return l.replace('.', "/");
    }
    let r = labels.get("topology.kubernetes.io/region");
    let z = labels.get("topology.kubernetes.io/zone");
    let s = labels.get("topology.istio.io/subzone");
    if r.is_none() && z.is_none() && s.is_none() {
        return String::new();
    }
    let parts = [r, z, s].map(|p| p.map(String::as_str).unwrap_or(""));
    parts.join("/").trim_end_matches('/').to_string()
}

fn labels(m: &Option<BTreeMap<String, String>>) -> BTreeMap<String, String> {
    m.clone().unwrap_or_default()
}

/// Labels, service account and node of an endpoint's workload.
type Identity = (
    Arc<BTreeMap<String, String>>,
    Option<Arc<str>>,
    Option<String>,
);

/// Labels and service account of a pod, directly or from its Deployment;
/// `cache` shares one label map per pod / Deployment.
fn pod_identity(
    idx: &Index<'_>,
    cache: &mut BTreeMap<(bool, String), Identity>,
    strings: &mut Interner,
    ns: &str,
    pod_name: Option<&str>,
    ip: IpAddr,
) -> Identity {
    let pod = pod_name
        .and_then(|n| idx.pods_by_name.get(&(ns.to_string(), n.to_string())))
        .or_else(|| idx.pods_by_ip.get(&ip))
        .copied();
    if let Some(p) = pod {
        let key = (true, p.metadata.name.clone().unwrap_or_default());
        return cache
            .entry(key)
            .or_insert_with(|| {
                let (l, sa, node) = pod_info(p);
                // The pod's Workload already holds these labels: share them.
                let shared = pod_ip(p)
                    .and_then(|ip| idx.workloads.get(&ip))
                    .filter(|w| *w.labels == l)
                    .map(|w| w.labels.clone());
                let sa = sa.map(|s| strings.get(&s));
                (shared.unwrap_or_else(|| Arc::new(l)), sa, node)
            })
            .clone();
    }
    if let Some(name) = pod_name {
        // The longest `-`-separated prefix of the pod name that names a
        // Deployment (`reviews-v1-7f9c-abcde` → `reviews-v1`).
        let mut prefix = name;
        while let Some((head, _)) = prefix.rsplit_once('-') {
            if let Some(d) = idx.deployments.get(&(ns.to_string(), head.to_string())) {
                return cache
                    .entry((false, head.to_string()))
                    .or_insert_with(|| {
                        let (l, sa, node) = deployment_info(d);
                        (Arc::new(l), sa.map(|s| strings.get(&s)), node)
                    })
                    .clone();
            }
            prefix = head;
        }
    }
    (Arc::default(), None, None)
}

pub(crate) fn pod_info(p: &Pod) -> (BTreeMap<String, String>, Option<String>, Option<String>) {
    let spec = p.spec.as_ref();
    (
        labels(&p.metadata.labels),
        Some(
            spec.and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
        ),
        spec.and_then(|s| s.node_name.clone()),
    )
}

fn deployment_info(d: &Deployment) -> (BTreeMap<String, String>, Option<String>, Option<String>) {
    let sa = d
        .service_account_name
        .clone()
        .unwrap_or_else(|| "default".into());
    (d.pod_labels.clone(), Some(sa), None)
}

/// A pod is running and has an IP.
pub(crate) fn pod_ip(p: &Pod) -> Option<IpAddr> {
    let st = p.status.as_ref()?;
    if matches!(st.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    st.pod_ip.as_deref()?.parse().ok()
}

/// Every address of a running pod: `status.podIP`, then the other
/// `status.podIPs` (a dual-stack pod's other family), without repeats.
/// Empty when the pod has finished or has no `podIP`.
pub(crate) fn pod_ips(p: &Pod) -> Vec<IpAddr> {
    let Some(first) = pod_ip(p) else {
        return Vec::new();
    };
    let mut out = vec![first];
    let more = p.status.as_ref().and_then(|s| s.pod_ips.as_ref());
    for ip in more.into_iter().flatten() {
        if let Ok(ip) = ip.ip.parse::<IpAddr>() {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

fn pod_ready(p: &Pod) -> bool {
    let conds = p.status.as_ref().and_then(|s| s.conditions.as_ref());
    match conds {
        // No conditions recorded (hand-written Pods): treat as ready.
        None => true,
        Some(c) => c
            .iter()
            .find(|c| c.type_ == "Ready")
            .is_none_or(|c| c.status == "True"),
    }
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Compiles every Kubernetes Service; returns services and raw endpoints.
pub(crate) fn kube_services(
    idx: &Index<'_>,
    services: &mut BTreeMap<String, Service>,
    endpoints: &mut BTreeMap<String, Vec<RawEndpoint>>,
) {
    // Services compile independently; each thread shares strings within
    // its own chunk.
    let built = super::par::map_chunks(&idx.services, |chunk| {
        let mut strings = Interner::default();
        chunk
            .iter()
            .filter_map(|svc| kube_service(idx, &mut strings, svc))
            .collect()
    });
    for (svc, eps) in built {
        endpoints.insert(svc.host.clone(), eps);
        services.insert(svc.host.clone(), svc);
    }
}

/// One Kubernetes Service and its endpoints; None for ExternalName and
/// spec-less Services.
pub(crate) fn kube_service(
    idx: &Index<'_>,
    strings: &mut Interner,
    svc: &crate::api::Service,
) -> Option<(Service, Vec<RawEndpoint>)> {
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let host = hosts::service_fqdn(&name, &ns);
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let (vip, extra_vips) = cluster_ips(spec);
    let mut ports: Vec<ServicePort> = Vec::new();
    let mut target_names: BTreeMap<String, IntOrString> = BTreeMap::new();
    for p in spec.ports.iter().flatten() {
        let pname = p.name.clone().unwrap_or_default();
        let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
        target_names.insert(pname.clone(), target.clone());
        ports.push(ServicePort {
            protocol: Protocol::from_service_port(
                &pname,
                p.protocol.as_deref().unwrap_or("TCP"),
                p.app_protocol.as_deref(),
            ),
            name: pname,
            port: p.port as u16,
            target_port: match target {
                IntOrString::Int(n) => Some(n as u16),
                IntOrString::String(_) => None,
            },
        });
    }
    ports.sort_by_key(|p| p.port);
    let selector = spec.selector.clone().unwrap_or_default();
    let export_to = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("networking.istio.io/exportTo"))
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_else(|| vec!["*".to_string()]);
    let eps = kube_endpoints(idx, strings, &ns, &name, &selector, &target_names);
    Some((
        Service {
            host,
            name,
            namespace: ns,
            vip,
            extra_vips,
            ports,
            labels: labels(&svc.metadata.labels),
            selector,
            source: ServiceSource::Kubernetes,
            resolution: "STATIC".into(),
            export_to,
        },
        eps,
    ))
}

/// A Service's VIPs: the primary (`spec.clusterIP`, else
/// `spec.clusterIPs[0]`) and, for a dual-stack Service, the other family's
/// `spec.clusterIPs[1]`. Headless (`None`) has none; validation
/// (`validate/dual_stack.rs`) has rejected malformed lists already.
fn cluster_ips(spec: &k8s_openapi::api::core::v1::ServiceSpec) -> (Option<IpAddr>, Vec<IpAddr>) {
    let list = spec.cluster_ips.as_deref().unwrap_or_default();
    let primary = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty())
        .or(list.first().map(String::as_str))
        .filter(|ip| *ip != "None")
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    let Some(primary) = primary else {
        return (None, Vec::new());
    };
    let extra = list
        .iter()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .filter(|ip| *ip != primary && ip.is_ipv4() != primary.is_ipv4())
        .take(1)
        .collect();
    (Some(primary), extra)
}

fn kube_endpoints(
    idx: &Index<'_>,
    strings: &mut Interner,
    ns: &str,
    name: &str,
    selector: &BTreeMap<String, String>,
    targets: &BTreeMap<String, IntOrString>,
) -> Vec<RawEndpoint> {
    let key = (ns.to_string(), name.to_string());
    let mut out = Vec::new();
    let mut cache = BTreeMap::new();
    let namespace = strings.get(ns);
    let mut push = |ip: IpAddr,
                    ports: Arc<BTreeMap<String, u16>>,
                    pod: Option<&str>,
                    healthy: bool,
                    zone: Option<&str>,
                    node: Option<String>| {
        let (labels, sa, pod_node) = pod_identity(idx, &mut cache, strings, ns, pod, ip);
        let mut locality = locality_of(&labels);
        if locality.is_empty() {
            if let Some(z) = zone {
                locality = format!("/{z}");
            }
        }
        let locality = strings.get(&locality);
        out.push(RawEndpoint {
            ip,
            ports,
            labels,
            locality,
            service_account: sa,
            namespace: namespace.clone(),
            healthy,
            weight: 1,
            name: pod.unwrap_or("").to_string(),
            node: node.or(pod_node),
        });
    };
    if let Some(slices) = idx.slices_by_service.get(&key) {
        for s in slices {
            let ports: Arc<BTreeMap<String, u16>> = s
                .ports
                .iter()
                .flatten()
                .filter_map(|p| Some((p.name.clone().unwrap_or_default(), p.port? as u16)))
                .collect::<BTreeMap<_, _>>()
                .into();
            for e in &s.endpoints {
                let c = e.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
                for a in &e.addresses {
                    if let Ok(ip) = a.parse() {
                        let pod = e.target_name.as_deref();
                        push(
                            ip,
                            ports.clone(),
                            pod,
                            ready && !terminating,
                            e.zone.as_deref(),
                            e.node_name.clone(),
                        );
                    }
                }
            }
        }
    } else if let Some(eps) = idx.endpoints_by_name.get(&key) {
        for sub in eps.subsets.iter().flatten() {
            let ports: Arc<BTreeMap<String, u16>> = sub
                .ports
                .iter()
                .flatten()
                .map(|p| (p.name.clone().unwrap_or_default(), p.port as u16))
                .collect::<BTreeMap<_, _>>()
                .into();
            for (list, healthy) in [(&sub.addresses, true), (&sub.not_ready_addresses, false)] {
                for a in list.iter().flatten() {
                    if let Ok(ip) = a.ip.parse() {
                        let pod = a.target_ref.as_ref().and_then(|t| t.name.as_deref());
                        push(ip, ports.clone(), pod, healthy, None, a.node_name.clone());
                    }
                }
            }
        }
    } else if !selector.is_empty() {
        for pod in idx
            .pods
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
        {
            let Some(ip) = pod_ip(pod) else { continue };
            if !selects(selector, &labels(&pod.metadata.labels)) {
                continue;
            }
            let ports: Arc<BTreeMap<String, u16>> = targets
                .iter()
                .filter_map(|(pname, t)| Some((pname.clone(), target_port(pod, t)?)))
                .collect::<BTreeMap<_, _>>()
                .into();
            push(
                ip,
                ports,
                pod.metadata.name.as_deref(),
                pod_ready(pod),
                None,
                None,
            );
        }
    }
    out.sort_by_key(|e| e.ip);
    out.shrink_to_fit();
    out
}

/// Resolves a Service `targetPort` on a pod (named ports from containers).
fn target_port(pod: &Pod, t: &IntOrString) -> Option<u16> {
    match t {
        IntOrString::Int(n) => Some(*n as u16),
        IntOrString::String(name) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port as u16),
    }
}

/// Compiles ServiceEntries (one service per host). A host already defined by
/// a Kubernetes Service keeps the Kubernetes definition, as in Istio.
pub(crate) fn service_entries(
    idx: &Index<'_>,
    services: &mut BTreeMap<String, Service>,
    endpoints: &mut BTreeMap<String, Vec<RawEndpoint>>,
    strings: &mut Interner,
) {
    for (res, se) in &idx.service_entries {
        let ns = res.namespace().to_string();
        // Every address is a VIP (Istio gives each its own listener);
        // CIDR ranges are not VIPs.
        let mut addrs = se.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok());
        let vip = addrs.next();
        let extra_vips: Vec<IpAddr> = addrs.collect();
        let mut ports: Vec<ServicePort> = se
            .ports
            .iter()
            .map(|p| ServicePort {
                name: p.name.clone(),
                port: p.number as u16,
                target_port: p.target_port.map(|t| t as u16),
                protocol: Protocol::parse(&p.protocol),
            })
            .collect();
        ports.sort_by_key(|p| p.port);
        let selector = se
            .workload_selector
            .as_ref()
            .map(|w| w.match_labels.clone())
            .unwrap_or_default();
        let mut eps = Vec::new();
        let port_map = |named: &BTreeMap<String, u32>| -> BTreeMap<String, u16> {
            se.ports
                .iter()
                .map(|p| {
                    let n = named
                        .get(&p.name)
                        .copied()
                        .or(p.target_port)
                        .unwrap_or(p.number);
                    (p.name.clone(), n as u16)
                })
                .collect()
        };
        for e in &se.endpoints {
            let Ok(ip) = e.address.parse() else { continue };
            eps.push(RawEndpoint {
                ip,
                ports: Arc::new(port_map(&e.ports)),
                labels: Arc::new(e.labels.clone()),
                locality: strings.get(e.locality.as_deref().unwrap_or_default()),
                service_account: e.service_account.as_deref().map(|s| strings.get(s)),
                namespace: strings.get(&ns),
                healthy: true,
                weight: e.weight.unwrap_or(1).max(1),
                name: String::new(),
                node: None,
            });
        }
        if !selector.is_empty() {
            for w in idx.workloads.values().filter(|w| w.namespace == ns) {
                if selects(&selector, &w.labels) {
                    eps.push(RawEndpoint {
                        ip: w.ip,
                        ports: Arc::new(port_map(&BTreeMap::new())),
                        labels: w.labels.clone(),
                        locality: strings.get(&w.locality),
                        service_account: Some(strings.get(&w.service_account)),
                        namespace: strings.get(&ns),
                        healthy: true,
                        weight: 1,
                        name: w.name.clone(),
                        node: w.node.clone(),
                    });
                }
            }
        }
        eps.sort_by_key(|e| e.ip);
        let external = se.location.as_deref() != Some("MESH_INTERNAL");
        let export_to = if se.export_to.is_empty() {
            vec!["*".to_string()]
        } else {
            se.export_to.clone()
        };
        for h in &se.hosts {
            let host = hosts::resolve(h, &ns);
            if services.contains_key(&host) {
                continue;
            }
            endpoints.insert(host.clone(), eps.clone());
            services.insert(
                host.clone(),
                Service {
                    host,
                    name: res.name().to_string(),
                    namespace: ns.clone(),
                    vip,
                    extra_vips: extra_vips.clone(),
                    ports: ports.clone(),
                    labels: labels(&res.object.metadata().labels),
                    selector: selector.clone(),
                    source: if external {
                        ServiceSource::ServiceEntryExternal
                    } else {
                        ServiceSource::ServiceEntryInternal
                    },
                    resolution: se.resolution.clone().unwrap_or_else(|| "NONE".into()),
                    export_to: export_to.clone(),
                },
            );
        }
    }
}

/// Workloads from Pods (with an IP) and WorkloadEntries. A dual-stack
/// pod is one workload at each of its addresses ([`pod_ips`]), as ztunnel
/// indexes a workload by every address.
pub(crate) fn workloads(idx: &Index<'_>) -> BTreeMap<IpAddr, Workload> {
    let mut out = BTreeMap::new();
    for p in &idx.pods {
        let ips = pod_ips(p);
        if ips.is_empty() {
            continue;
        }
        let (labels, sa, node) = pod_info(p);
        let labels = Arc::new(labels);
        for ip in ips {
            out.insert(
                ip,
                Workload {
                    name: p.metadata.name.clone().unwrap_or_default(),
                    namespace: p.metadata.namespace.clone().unwrap_or_default(),
                    ip,
                    locality: locality_of(&labels),
                    labels: labels.clone(),
                    service_account: sa.clone().unwrap_or_else(|| "default".into()),
                    node: node.clone(),
                    services: Vec::new(),
                },
            );
        }
    }
    for (res, we) in &idx.workload_entries {
        let Ok(ip) = we.address.parse() else { continue };
        out.entry(ip).or_insert_with(|| Workload {
            name: res.name().to_string(),
            namespace: res.namespace().to_string(),
            ip,
            labels: Arc::new(we.labels.clone()),
            service_account: we
                .service_account
                .clone()
                .unwrap_or_else(|| "default".into()),
            locality: we.locality.clone().unwrap_or_default(),
            node: None,
            services: Vec::new(),
        });
    }
    out
}
