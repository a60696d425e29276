//! The Kubernetes resources a node is built from: Namespaces,
//! ServiceAccounts, Services and Deployments read from multi-document YAML
//! (the shape of Istio's `samples/bookinfo/platform/kube/bookinfo.yaml`).
//! Only the fields a node needs are read; other kinds are skipped.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Kubernetes' default namespace, used when `metadata.namespace` is absent.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Kubernetes' default service account, used when a pod template names none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// What one YAML source describes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Platform {
    /// Namespaces named by a Namespace resource or used by any resource.
    pub namespaces: BTreeSet<String>,
    /// `(namespace, name)` of ServiceAccount resources and of accounts that
    /// pod templates use.
    pub service_accounts: BTreeSet<(String, String)>,
    /// Services, in file order.
    pub services: Vec<ServiceDef>,
    /// Deployments, in file order.
    pub deployments: Vec<DeploymentDef>,
}

/// A Service (`v1`), the fields a node needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceDef {
    pub name: String,
    pub namespace: String,
    /// `spec.selector`: pods with all these labels are its endpoints.
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    /// `spec.clusterIP` when the YAML sets an address; `None` means "allocate
    /// one" ([`super::ipam`]).
    pub cluster_ip: Option<Ipv4Addr>,
    /// `spec.clusterIP: None`: a headless Service, which gets no VIP.
    pub headless: bool,
}

/// One `spec.ports[]` entry of a Service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port name; Istio reads the protocol from its prefix (`http`, `grpc-…`).
    pub name: Option<String>,
    /// The service (VIP) port.
    pub port: u16,
    /// The pod port; absent means the same as `port`.
    pub target_port: Option<TargetPort>,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// `appProtocol`, which Istio prefers over the name prefix.
    pub app_protocol: Option<String>,
}

impl ServiceDef {
    /// A Service `default/<name>` selecting the pods labelled `app=<app>`,
    /// with `ports` and a VIP allocated by the node.
    pub fn app(name: &str, app: &str, ports: Vec<ServicePort>) -> ServiceDef {
        ServiceDef {
            name: name.into(),
            namespace: "default".into(),
            selector: [("app".to_string(), app.to_string())].into(),
            ports,
            cluster_ip: None,
            headless: false,
        }
    }
}

impl ServicePort {
    /// A TCP port `port` named `name` (Istio reads the protocol from the
    /// name's prefix: `http`, `tcp-…`) to the same pod port.
    pub fn named(name: &str, port: u16) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            target_port: None,
            protocol: "TCP".into(),
            app_protocol: None,
        }
    }
}

/// `targetPort`: a number or the name of a container port.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

/// A Deployment (`apps/v1`): its pod template is what a node's pods are.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentDef {
    pub name: String,
    pub namespace: String,
    /// `spec.replicas`, default 1.
    pub replicas: u32,
    /// `spec.template.metadata.labels`: the workload labels Istio matches
    /// subsets and policies against.
    pub labels: BTreeMap<String, String>,
    /// `spec.template.spec.serviceAccountName` (or the deprecated
    /// `serviceAccount`), default `default`.
    pub service_account: String,
    /// `(name, containerPort)` of every container port in the template.
    pub container_ports: Vec<(Option<String>, u16)>,
}

fn tcp() -> String {
    "TCP".into()
}

#[derive(Deserialize, Default)]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
}

#[derive(Deserialize)]
struct Head {
    kind: Option<String>,
    #[serde(default)]
    metadata: Meta,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceSpecDoc {
    #[serde(default)]
    selector: BTreeMap<String, String>,
    #[serde(default)]
    ports: Vec<ServicePort>,
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
}

#[derive(Deserialize)]
struct DeploymentSpecDoc {
    replicas: Option<u32>,
    template: PodTemplate,
}

#[derive(Deserialize)]
struct PodTemplate {
    #[serde(default)]
    metadata: TemplateMeta,
    #[serde(default)]
    spec: PodSpecDoc,
}

#[derive(Deserialize, Default)]
struct TemplateMeta {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodSpecDoc {
    service_account_name: Option<String>,
    service_account: Option<String>,
    #[serde(default)]
    containers: Vec<Container>,
}

#[derive(Deserialize)]
struct Container {
    #[serde(default)]
    ports: Vec<ContainerPort>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerPort {
    name: Option<String>,
    container_port: u16,
}

impl Platform {
    /// Reads a YAML file; errors name the file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses multi-document YAML. `source` names the input in errors, which
    /// read `<source>: document N: <Kind>/<namespace>/<name>: <field path>:
    /// <problem>`.
    pub fn parse(source: &str, text: &str) -> anyhow::Result<Self> {
        let mut p = Platform::default();
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let at = format!("{source}: document {}", i + 1);
            let value = serde_yaml::Value::deserialize(doc).with_context(|| at.clone())?;
            if value.is_null() {
                continue;
            }
            let head: Head = field(&value, "").with_context(|| at.clone())?;
            let kind = head.kind.unwrap_or_default();
            let namespace = head
                .metadata
                .namespace
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
            let Some(name) = head.metadata.name else {
                bail!("{at}: {kind}: metadata.name is required");
            };
            let at = format!("{at}: {kind}/{namespace}/{name}");
            match kind.as_str() {
                "Namespace" => {
                    p.namespaces.insert(name);
                }
                "ServiceAccount" => {
                    p.namespaces.insert(namespace.clone());
                    p.service_accounts.insert((namespace, name));
                }
                "Service" => {
                    let spec: ServiceSpecDoc = field(&value["spec"], "spec").context(at.clone())?;
                    let (cluster_ip, headless) = match spec.cluster_ip.as_deref() {
                        None | Some("") => (None, false),
                        Some("None") => (None, true),
                        Some(ip) => (
                            Some(ip.parse().map_err(|_| {
                                anyhow!("{at}: spec.clusterIP: {ip:?} is not an IPv4 address")
                            })?),
                            false,
                        ),
                    };
                    if spec.ports.is_empty() {
                        bail!("{at}: spec.ports: a Service needs at least one port");
                    }
                    p.namespaces.insert(namespace.clone());
                    p.services.push(ServiceDef {
                        name,
                        namespace,
                        selector: spec.selector,
                        ports: spec.ports,
                        cluster_ip,
                        headless,
                    });
                }
                "Deployment" => {
                    let spec: DeploymentSpecDoc =
                        field(&value["spec"], "spec").context(at.clone())?;
                    let t = spec.template;
                    if t.metadata.labels.is_empty() {
                        bail!(
                            "{at}: spec.template.metadata.labels: a Deployment's pods need labels"
                        );
                    }
                    let service_account = t
                        .spec
                        .service_account_name
                        .or(t.spec.service_account)
                        .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_string());
                    p.namespaces.insert(namespace.clone());
                    p.service_accounts
                        .insert((namespace.clone(), service_account.clone()));
                    p.deployments.push(DeploymentDef {
                        name,
                        namespace,
                        replicas: spec.replicas.unwrap_or(1),
                        labels: t.metadata.labels,
                        service_account,
                        container_ports: t
                            .spec
                            .containers
                            .into_iter()
                            .flat_map(|c| c.ports)
                            .map(|cp| (cp.name, cp.container_port))
                            .collect(),
                    });
                }
                // Istio resources and other Kubernetes kinds are the
                // daemon's business, not the node's.
                _ => {}
            }
        }
        Ok(p)
    }

    /// The Service named `name` in `namespace`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceDef> {
        self.services
            .iter()
            .find(|s| s.namespace == namespace && s.name == name)
    }
}

/// Deserializes `value`, naming the field path on error (prefixed by `at`).
fn field<T: DeserializeOwned>(value: &serde_yaml::Value, at: &str) -> anyhow::Result<T> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        let path = match (at.is_empty(), path.as_str()) {
            (true, p) => p.to_string(),
            (false, ".") => at.to_string(),
            (false, p) => format!("{at}.{p}"),
        };
        anyhow!("{path}: {}", e.into_inner())
    })
}

impl ServiceDef {
    /// Whether a pod with `labels` is an endpoint of this Service: a
    /// non-empty selector whose every label the pod has (Kubernetes' rule;
    /// an empty selector selects nothing automatically).
    pub fn selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        namespace == self.namespace
            && !self.selector.is_empty()
            && self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl ServicePort {
    /// The pod port this service port forwards to: a numeric `targetPort`,
    /// a named one looked up in `container_ports`, else `port`.
    pub fn target_port_number(&self, container_ports: &[(Option<String>, u16)]) -> u16 {
        match &self.target_port {
            Some(TargetPort::Number(n)) => *n,
            Some(TargetPort::Name(name)) => container_ports
                .iter()
                .find(|(n, _)| n.as_deref() == Some(name.as_str()))
                .map_or(self.port, |(_, p)| *p),
            None => self.port,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, labels: {app: reviews}}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: reviews}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: bookinfo-reviews}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v2, namespace: shop}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: reviews, version: v2}}
    spec:
      serviceAccountName: bookinfo-reviews
      containers: [{name: reviews, ports: [{containerPort: 9080}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec: {hosts: [reviews]}
"#;

    #[test]
    fn reads_services_and_deployments() {
        let p = Platform::parse("t.yaml", YAML).unwrap();
        assert_eq!(p.services.len(), 1);
        let s = &p.services[0];
        assert_eq!((s.namespace.as_str(), s.ports[0].port), ("default", 9080));
        assert_eq!(s.ports[0].name.as_deref(), Some("http"));
        assert_eq!(s.ports[0].protocol, "TCP");
        let d = &p.deployments[0];
        assert_eq!((d.namespace.as_str(), d.replicas), ("shop", 2));
        assert_eq!(d.labels["version"], "v2");
        assert_eq!(d.service_account, "bookinfo-reviews");
        assert_eq!(d.container_ports, vec![(None, 9080)]);
        assert!(p.namespaces.contains("shop") && p.namespaces.contains("default"));
        assert!(
            !s.selects("shop", &d.labels),
            "selectors do not cross namespaces"
        );
        assert!(s.selects("default", &d.labels));
    }

    #[test]
    fn errors_name_source_resource_and_field() {
        let bad = "kind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: many\n  template: {metadata: {labels: {a: b}}}\n";
        let e = format!("{:#}", Platform::parse("p.yaml", bad).unwrap_err());
        assert!(
            e.contains("p.yaml: document 1: Deployment/default/x"),
            "{e}"
        );
        assert!(e.contains("spec.replicas"), "{e}");

        let bad =
            "kind: Service\nmetadata: {name: s}\nspec: {clusterIP: 10.96.x, ports: [{port: 80}]}\n";
        let e = format!("{:#}", Platform::parse("p.yaml", bad).unwrap_err());
        assert!(e.contains("Service/default/s: spec.clusterIP"), "{e}");
    }

    #[test]
    fn named_target_ports_resolve_against_container_ports() {
        let port = ServicePort {
            name: None,
            port: 80,
            target_port: Some(TargetPort::Name("web".into())),
            protocol: tcp(),
            app_protocol: None,
        };
        assert_eq!(port.target_port_number(&[(Some("web".into()), 8080)]), 8080);
        assert_eq!(port.target_port_number(&[]), 80);
    }
}
