//! `networking.istio.io` ServiceEntry, WorkloadEntry and Sidecar.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::destination_rule::WorkloadSelector;
use super::gateway::Port;
use super::virtual_service::Labels;

/// `istio.networking.v1.ServiceEntry`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    /// Hosts (DNS names, wildcards).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Virtual IPs / CIDRs.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<Port>,
    /// `MESH_EXTERNAL` (default) or `MESH_INTERNAL`.
    #[serde(default)]
    pub location: Option<String>,
    /// `NONE` (default), `STATIC`, `DNS`, `DNS_ROUND_ROBIN`.
    #[serde(default)]
    pub resolution: Option<String>,
    /// Static endpoints.
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntry>,
    /// Selects WorkloadEntries/pods as endpoints.
    #[serde(default)]
    pub workload_selector: Option<WorkloadSelector>,
    /// Visibility.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Server SANs.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

/// `istio.networking.v1.WorkloadEntry` (also a ServiceEntry endpoint).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    /// IP or DNS name.
    #[serde(default)]
    pub address: String,
    /// Port name → endpoint port.
    #[serde(default)]
    pub ports: BTreeMap<String, u32>,
    /// Labels.
    #[serde(default)]
    pub labels: Labels,
    /// Network.
    #[serde(default)]
    pub network: Option<String>,
    /// `region/zone/subzone`.
    #[serde(default)]
    pub locality: Option<String>,
    /// LB weight.
    #[serde(default)]
    pub weight: Option<u32>,
    /// Service account.
    #[serde(default)]
    pub service_account: Option<String>,
}

/// `istio.networking.v1.Sidecar`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    /// Workloads the Sidecar applies to (none: whole namespace).
    #[serde(default)]
    pub workload_selector: Option<WorkloadSelector>,
    /// Inbound listeners (kept, not used).
    #[serde(default)]
    pub ingress: Vec<serde_yaml::Value>,
    /// Outbound visibility.
    #[serde(default)]
    pub egress: Vec<IstioEgressListener>,
    /// `REGISTRY_ONLY` or `ALLOW_ANY`.
    #[serde(default)]
    pub outbound_traffic_policy: Option<serde_yaml::Value>,
    /// Inbound pool (kept).
    #[serde(default)]
    pub inbound_connection_pool: Option<serde_yaml::Value>,
}

/// `IstioEgressListener`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioEgressListener {
    /// Port.
    #[serde(default)]
    pub port: Option<Port>,
    /// Bind address.
    #[serde(default)]
    pub bind: Option<String>,
    /// Capture mode.
    #[serde(default)]
    pub capture_mode: Option<String>,
    /// `namespace/dnsName` entries (`*/*`, `./*`, `~/*`).
    #[serde(default)]
    pub hosts: Vec<String>,
}
