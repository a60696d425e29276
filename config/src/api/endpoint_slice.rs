//! `discovery.k8s.io/v1` EndpointSlice, as much of it as Strait uses.
//!
//! The document is parsed with k8s-openapi's full type, so Kubernetes'
//! schema errors (`endpoints[0]: missing field \`addresses\``, a wrong field
//! type, ...) are the same, then kept in this slim form: k8s-openapi's
//! `Endpoint` is ~350 bytes before any field is set (hints, deprecated
//! topology, a full ObjectReference), 35 MB for 10^5 endpoints.
use k8s_openapi::api::discovery::v1 as kube;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use kube::{EndpointConditions, EndpointPort};

/// An EndpointSlice: its service (label `kubernetes.io/service-name`),
/// ports and endpoints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointSlice {
    /// Name, namespace, labels.
    pub metadata: ObjectMeta,
    /// `IPv4`, `IPv6` or `FQDN`.
    pub address_type: String,
    /// Ports, by name (the Service port names).
    pub ports: Option<Vec<EndpointPort>>,
    /// The endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// One endpoint of a slice.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Endpoint {
    /// Addresses (one in practice).
    pub addresses: Vec<String>,
    /// `ready`, `serving`, `terminating`.
    pub conditions: Option<EndpointConditions>,
    /// `targetRef.name`: the Pod behind the endpoint.
    pub target_name: Option<String>,
    /// `zone` (topology).
    pub zone: Option<String>,
    /// `nodeName`.
    pub node_name: Option<String>,
}

impl EndpointSlice {
    /// The Service the slice belongs to: its `kubernetes.io/service-name`
    /// label (Kubernetes' `discovery.k8s.io/v1` `LabelServiceName`), if set.
    pub fn service_name(&self) -> Option<&str> {
        let labels = self.metadata.labels.as_ref()?;
        labels.get("kubernetes.io/service-name").map(String::as_str)
    }
}

impl From<kube::EndpointSlice> for EndpointSlice {
    fn from(s: kube::EndpointSlice) -> Self {
        EndpointSlice {
            metadata: s.metadata,
            address_type: s.address_type,
            ports: s.ports,
            endpoints: s
                .endpoints
                .into_iter()
                .map(|e| Endpoint {
                    addresses: e.addresses,
                    conditions: e.conditions,
                    target_name: e.target_ref.and_then(|t| t.name),
                    zone: e.zone,
                    node_name: e.node_name,
                })
                .collect(),
        }
    }
}
