//! `networking.istio.io` ServiceEntry, WorkloadEntry and Sidecar.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::destination_rule::WorkloadSelector;
use super::gateway::Port;
use super::virtual_service::Labels;

/// `istio.networking.v1.ServiceEntry`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    /// Hosts (DNS names, wildcards).
    pub hosts: Vec<String>,
    /// Virtual IPs / CIDRs.
    pub addresses: Vec<String>,
    /// Ports.
    pub ports: Vec<Port>,
    /// `MESH_EXTERNAL` (default) or `MESH_INTERNAL`.
    pub location: Option<String>,
    /// `NONE` (default), `STATIC`, `DNS`, `DNS_ROUND_ROBIN`.
    pub resolution: Option<String>,
    /// Static endpoints.
    pub endpoints: Vec<WorkloadEntry>,
    /// Selects WorkloadEntries/pods as endpoints.
    pub workload_selector: Option<WorkloadSelector>,
    /// Visibility.
    pub export_to: Vec<String>,
    /// Server SANs.
    pub subject_alt_names: Vec<String>,
}

/// `istio.networking.v1.WorkloadEntry` (also a ServiceEntry endpoint).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    /// IP or DNS name.
    pub address: String,
    /// Port name → endpoint port.
    pub ports: BTreeMap<String, u32>,
    /// Labels.
    pub labels: Labels,
    /// Network.
    pub network: Option<String>,
    /// `region/zone/subzone`.
    pub locality: Option<String>,
    /// LB weight.
    pub weight: Option<u32>,
    /// Service account.
    pub service_account: Option<String>,
}

/// `istio.networking.v1.Sidecar`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    /// Workloads the Sidecar applies to (none: whole namespace).
    pub workload_selector: Option<WorkloadSelector>,
    /// Inbound listeners (kept, not used).
    pub ingress: Vec<serde_yaml::Value>,
    /// Outbound visibility.
    pub egress: Vec<IstioEgressListener>,
    /// `REGISTRY_ONLY` or `ALLOW_ANY`.
    pub outbound_traffic_policy: Option<serde_yaml::Value>,
    /// Inbound pool (kept).
    pub inbound_connection_pool: Option<serde_yaml::Value>,
}

/// `IstioEgressListener`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioEgressListener {
    /// Port.
    pub port: Option<Port>,
    /// Bind address.
    pub bind: Option<String>,
    /// Capture mode.
    pub capture_mode: Option<String>,
    /// `namespace/dnsName` entries (`*/*`, `./*`, `~/*`).
    pub hosts: Vec<String>,
}
