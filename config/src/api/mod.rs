//! The input resources, as users write them.
//!
//! Istio kinds are hand-written serde types ([`virtual_service`],
//! [`destination_rule`], [`gateway`], [`service_entry`], [`security`]) in
//! Istio's protobuf JSON field names; Kubernetes kinds are `k8s-openapi`'s
//! types, except [`Deployment`] and [`EndpointSlice`], kept slim after
//! parsing with k8s-openapi's types ([`deployment`], [`endpoint_slice`]). A [`Resource`] is one YAML document with where it came from.
//!
//! Every field of the Istio spec types is optional, as in Istio's protobuf:
//! each struct carries `#[serde(default)]` (a missing field takes its type's
//! default, the derived `Default`) and `deny_unknown_fields` (an unknown
//! field is an error, as Istio's CRD schema has it).
pub mod deployment;
pub mod destination_rule;
pub mod endpoint_slice;
pub mod gateway;
pub mod secret;
pub mod security;
pub mod service_entry;
mod shrink;
pub mod virtual_service;

use std::fmt;

pub use deployment::Deployment;
pub use endpoint_slice::EndpointSlice;
pub use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service, ServiceAccount};
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// An Istio custom resource: metadata plus a typed `spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IstioObject<S> {
    /// `networking.istio.io/v1`, `.../v1beta1`, `.../v1alpha3`, `security.istio.io/v1`, ...
    #[serde(default)]
    pub api_version: String,
    /// Name, namespace, labels.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The typed spec.
    #[serde(default)]
    pub spec: S,
}

/// One loaded resource.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Object {
    VirtualService(Box<IstioObject<virtual_service::VirtualService>>),
    DestinationRule(Box<IstioObject<destination_rule::DestinationRule>>),
    Gateway(Box<IstioObject<gateway::Gateway>>),
    ServiceEntry(Box<IstioObject<service_entry::ServiceEntry>>),
    Sidecar(Box<IstioObject<service_entry::Sidecar>>),
    WorkloadEntry(Box<IstioObject<service_entry::WorkloadEntry>>),
    PeerAuthentication(Box<IstioObject<security::PeerAuthentication>>),
    RequestAuthentication(Box<IstioObject<security::RequestAuthentication>>),
    AuthorizationPolicy(Box<IstioObject<security::AuthorizationPolicy>>),
    Namespace(Box<Namespace>),
    Service(Box<Service>),
    Endpoints(Box<Endpoints>),
    EndpointSlice(Box<EndpointSlice>),
    Pod(Box<Pod>),
    Deployment(Box<Deployment>),
    ServiceAccount(Box<ServiceAccount>),
    /// Istio's MeshConfig (`mesh.yaml`, or the `istio` ConfigMap's `mesh` key).
    MeshConfig(Box<MeshConfigObject>),
    /// A Secret with TLS material, for `credentialName` ([`secret`]).
    Secret(Box<secret::TlsSecret>),
}

/// A MeshConfig with where it came from: `metadata` names the ConfigMap
/// (`istio-system/istio`) or, for a `mesh.yaml`, `istio-system/mesh`.
#[derive(Clone, Debug, PartialEq)]
pub struct MeshConfigObject {
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// The configuration.
    pub mesh: crate::mesh::MeshConfig,
}

impl Object {
    /// The Kubernetes kind, e.g. `VirtualService`.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::VirtualService(_) => "VirtualService",
            Object::DestinationRule(_) => "DestinationRule",
            Object::Gateway(_) => "Gateway",
            Object::ServiceEntry(_) => "ServiceEntry",
            Object::Sidecar(_) => "Sidecar",
            Object::WorkloadEntry(_) => "WorkloadEntry",
            Object::PeerAuthentication(_) => "PeerAuthentication",
            Object::RequestAuthentication(_) => "RequestAuthentication",
            Object::AuthorizationPolicy(_) => "AuthorizationPolicy",
            Object::Namespace(_) => "Namespace",
            Object::Service(_) => "Service",
            Object::Endpoints(_) => "Endpoints",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::Pod(_) => "Pod",
            Object::Deployment(_) => "Deployment",
            Object::ServiceAccount(_) => "ServiceAccount",
            Object::MeshConfig(_) => "MeshConfig",
            Object::Secret(_) => "Secret",
        }
    }

    /// The resource's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::VirtualService(o) => &o.metadata,
            Object::DestinationRule(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::ServiceEntry(o) => &o.metadata,
            Object::Sidecar(o) => &o.metadata,
            Object::WorkloadEntry(o) => &o.metadata,
            Object::PeerAuthentication(o) => &o.metadata,
            Object::RequestAuthentication(o) => &o.metadata,
            Object::AuthorizationPolicy(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::Endpoints(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
            Object::ServiceAccount(o) => &o.metadata,
            Object::MeshConfig(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
        }
    }

    /// Mutable metadata (the loader fills in the default namespace).
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::VirtualService(o) => &mut o.metadata,
            Object::DestinationRule(o) => &mut o.metadata,
            Object::Gateway(o) => &mut o.metadata,
            Object::ServiceEntry(o) => &mut o.metadata,
            Object::Sidecar(o) => &mut o.metadata,
            Object::WorkloadEntry(o) => &mut o.metadata,
            Object::PeerAuthentication(o) => &mut o.metadata,
            Object::RequestAuthentication(o) => &mut o.metadata,
            Object::AuthorizationPolicy(o) => &mut o.metadata,
            Object::Namespace(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::Endpoints(o) => &mut o.metadata,
            Object::EndpointSlice(o) => &mut o.metadata,
            Object::Pod(o) => &mut o.metadata,
            Object::Deployment(o) => &mut o.metadata,
            Object::ServiceAccount(o) => &mut o.metadata,
            Object::MeshConfig(o) => &mut o.metadata,
            Object::Secret(o) => &mut o.metadata,
        }
    }
}

/// Where a resource came from: file (or a label such as `<stdin>`) and the
/// 1-based line of its document's first line.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// File path or label.
    pub file: String,
    /// 1-based line of the document start.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One loaded YAML document.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// Where it came from.
    pub origin: Origin,
    /// The typed object; its namespace is always set (`default` when the
    /// document had none, like `kubectl apply`), except for `Namespace`.
    pub object: Object,
}

impl Resource {
    /// Kind, e.g. `VirtualService`.
    pub fn kind(&self) -> &'static str {
        self.object.kind()
    }

    /// `metadata.name` (empty when missing).
    pub fn name(&self) -> &str {
        self.object.metadata().name.as_deref().unwrap_or("")
    }

    /// `metadata.namespace` (empty for cluster-scoped kinds).
    pub fn namespace(&self) -> &str {
        self.object.metadata().namespace.as_deref().unwrap_or("")
    }

    /// `Kind/namespace/name`, the form used in every diagnostic.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.kind(), self.namespace(), self.name())
    }
}
