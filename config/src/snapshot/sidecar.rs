//! Sidecar egress scoping: which services a workload may reach by name.
//!
//! Istio's rule: the Sidecar in the workload's namespace whose
//! `workloadSelector` matches the workload applies; else the namespace's
//! Sidecar without selector; else the one without selector in the root
//! namespace (`istio-system`); else everything exported to the namespace is
//! visible. An egress host is `namespace/dnsName` with namespace `*` (any),
//! `.` (the Sidecar's), `~` (none) or a name, and dnsName `*`, a wildcard or
//! an FQDN (or a short name, taken in that namespace).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::policy::ROOT_NAMESPACE;
use super::Service;
use crate::hosts;

/// One egress listener of a Sidecar.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressListener {
    /// Listener port (None: all ports).
    pub port: Option<u16>,
    /// `(namespace, dnsName)` pairs, `.` already replaced by the Sidecar's namespace.
    pub hosts: Vec<(String, String)>,
}

/// A compiled Sidecar resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarScope {
    /// `namespace/name`.
    pub name: String,
    /// Namespace of the Sidecar.
    pub namespace: String,
    /// `workloadSelector.labels`; None: the whole namespace.
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Egress listeners.
    pub egress: Vec<EgressListener>,
}

impl SidecarScope {
    /// `true` when `svc` (on `port`) is listed by an egress listener.
    pub fn allows(&self, svc: &Service, port: u16) -> bool {
        self.egress
            .iter()
            .filter(|l| l.port.is_none_or(|p| p == port))
            .any(|l| {
                l.hosts.iter().any(|(ns, h)| {
                    let ns_ok = ns == "*" || (ns != "~" && *ns == svc.namespace);
                    let name = if h == "*" || h.contains('.') {
                        h.clone()
                    } else {
                        hosts::resolve(h, &svc.namespace)
                    };
                    ns_ok && hosts::matches(&name, &svc.host)
                })
            })
    }
}

/// The Sidecar that applies to a workload (see module docs), if any.
pub fn scope_for<'a>(
    sidecars: &'a BTreeMap<String, SidecarScope>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<&'a SidecarScope> {
    let in_ns = || sidecars.values().filter(move |s| s.namespace == namespace);
    in_ns()
        .find(|s| {
            s.match_labels
                .as_ref()
                .is_some_and(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
        })
        .or_else(|| in_ns().find(|s| s.match_labels.is_none()))
        .or_else(|| {
            sidecars
                .values()
                .find(|s| s.namespace == ROOT_NAMESPACE && s.match_labels.is_none())
        })
}
