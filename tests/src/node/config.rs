//! The Kubernetes view of a node, written for `strait run --config DIR` as a
//! cluster's API server would show it:
//!
//! - `k8s-services.yaml`: Namespaces (enrolled in the mesh with
//!   `istio.io/dataplane-mode: ambient` unless
//!   [`Node::set_namespace_labels`] says otherwise), ServiceAccounts and Services with
//!   `spec.clusterIP` set to the allocated VIP. It depends only on the
//!   Services, so nodes built from the same platform write the same file.
//! - `k8s-pods-<node>.yaml`: this node's Pods with labels,
//!   `spec.serviceAccountName`, `spec.nodeName`, `status.podIP`,
//!   `status.hostIP` and a Ready condition.
//! - `k8s-endpointslices-<node>.yaml`: one `discovery.k8s.io/v1`
//!   EndpointSlice per selecting Service with this node's ready endpoints
//!   (`<service>-<node>`, label `kubernetes.io/service-name`), ports being the
//!   resolved target ports, as the EndpointSlice controller writes them.
//!
//! Files are replaced atomically (write, then rename), so a daemon watching
//! the directory never reads half a file.
use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};

use super::Node;

/// Writes the three files for `node` into `dir`.
pub fn write(node: &Node, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    write_docs(&dir.join("k8s-services.yaml"), &services(node))?;
    write_docs(
        &dir.join(format!("k8s-pods-{}.yaml", node.name())),
        &pods(node),
    )?;
    write_docs(
        &dir.join(format!("k8s-endpointslices-{}.yaml", node.name())),
        &endpoint_slices(node),
    )
}

fn services(node: &Node) -> Vec<Value> {
    let mut docs: Vec<Value> = node
        .namespaces
        .iter()
        .map(|ns| {
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": ns, "labels": node.namespace_labels(ns)}})
        })
        .collect();
    docs.extend(node.service_accounts.iter().map(|(ns, name)| {
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": name, "namespace": ns}})
    }));
    docs.extend(node.services().iter().map(|s| {
        let ports: Vec<Value> = s
            .ports
            .iter()
            .map(|p| {
                let mut v = json!({"port": p.port, "protocol": p.protocol});
                if let Some(n) = &p.name {
                    v["name"] = json!(n);
                }
                if let Some(a) = &p.app_protocol {
                    v["appProtocol"] = json!(a);
                }
                match &p.target_port {
                    Some(super::TargetPort::Number(n)) => v["targetPort"] = json!(n),
                    Some(super::TargetPort::Name(n)) => v["targetPort"] = json!(n),
                    None => v["targetPort"] = json!(p.port),
                }
                v
            })
            .collect();
        let cluster_ip = match (s.cluster_ip, s.headless) {
            (Some(ip), _) => json!(ip.to_string()),
            (None, _) => json!("None"),
        };
        let mut spec = json!({"type": "ClusterIP", "clusterIP": cluster_ip, "ports": ports});
        if !s.selector.is_empty() {
            spec["selector"] = json!(s.selector);
        }
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": s.name, "namespace": s.namespace,
                            "labels": {"app": s.selector.get("app").unwrap_or(&s.name)}},
               "spec": spec})
    }));
    docs
}

fn pods(node: &Node) -> Vec<Value> {
    node.pods()
        .iter()
        .map(|p| {
            let ports: Vec<Value> = p
                .spec
                .container_ports
                .iter()
                .map(|(name, port)| match name {
                    Some(n) => json!({"name": n, "containerPort": port}),
                    None => json!({"containerPort": port}),
                })
                .collect();
            let mut meta = json!({"name": p.spec.name, "namespace": p.spec.namespace,
                                  "labels": p.spec.labels});
            if let Some(d) = &p.spec.deployment {
                meta["annotations"] = json!({"strait.io/deployment": d});
            }
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                   "spec": {"serviceAccountName": p.spec.service_account,
                            "nodeName": node.name(),
                            "containers": [{"name": "app", "image": "strait/bookinfo-app",
                                            "ports": ports}]},
                   "status": {"phase": "Running", "podIP": p.ip.to_string(),
                              "podIPs": std::iter::once(p.ip.to_string())
                                  .chain(p.ip6.map(|a| a.to_string()))
                                  .map(|ip| json!({"ip": ip}))
                                  .collect::<Vec<_>>(),
                              "hostIP": node.gateway().to_string(),
                              "conditions": [{"type": "Ready", "status": "True"}]}})
        })
        .collect()
}

fn endpoint_slices(node: &Node) -> Vec<Value> {
    node.services()
        .iter()
        .filter(|s| !s.selector.is_empty())
        .map(|s| {
            let pods = node.endpoints(&s.namespace, &s.name);
            // The slice's ports are the pods' ports; a named targetPort is
            // resolved against the first endpoint's container ports.
            let container_ports = pods
                .first()
                .map(|p| p.spec.container_ports.clone())
                .unwrap_or_default();
            let ports: Vec<Value> = s
                .ports
                .iter()
                .map(|p| {
                    let mut v = json!({"port": p.target_port_number(&container_ports),
                                       "protocol": p.protocol});
                    if let Some(n) = &p.name {
                        v["name"] = json!(n);
                    }
                    if let Some(a) = &p.app_protocol {
                        v["appProtocol"] = json!(a);
                    }
                    v
                })
                .collect();
            let endpoints: Vec<Value> = pods
                .iter()
                .map(|p| {
                    json!({"addresses": [p.ip.to_string()],
                           "conditions": {"ready": true, "serving": true, "terminating": false},
                           "nodeName": node.name(),
                           "targetRef": {"kind": "Pod", "name": p.spec.name,
                                         "namespace": p.spec.namespace}})
                })
                .collect();
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                   "metadata": {"name": format!("{}-{}", s.name, node.name()),
                                "namespace": s.namespace,
                                "labels": {"kubernetes.io/service-name": s.name,
                                           "endpointslice.kubernetes.io/managed-by":
                                               "strait-tests"}},
                   "addressType": "IPv4", "ports": ports, "endpoints": endpoints})
        })
        .collect()
}

fn write_docs(path: &Path, docs: &[Value]) -> anyhow::Result<()> {
    let mut text = String::new();
    for d in docs {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(d)?);
    }
    // A hidden name, so a loader reading the directory skips it.
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().expect("a file name").to_string_lossy()
    ));
    std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}
