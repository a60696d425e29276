//! Validation with Istio's rules and wording (`pkg/config/validation`).
//!
//! Each finding is a [`Diagnostic`] naming the file, the document's line,
//! `Kind/namespace/name` and the field path (`spec.http[0].route[1].weight`).
//! Errors reject the resource alone (see [`crate::compile`]); warnings (e.g.
//! deprecated fields) do not.
mod common;
mod dual_stack;
mod endpoints;
mod networking;
mod security;
mod virtual_service;

use crate::api::{Object, Resource};
use crate::diag::{Diagnostic, Level};

pub use common::{validate_port, validate_regex, validate_wildcard_domain};
pub use endpoints::special_ip;
pub use virtual_service::GRPC_STATUS;

/// Collects findings for one resource.
pub(crate) struct Report<'a> {
    res: &'a Resource,
    pub out: Vec<Diagnostic>,
}

impl<'a> Report<'a> {
    fn new(res: &'a Resource) -> Self {
        Report {
            res,
            out: Vec::new(),
        }
    }

    /// An error at `field`.
    pub fn err(&mut self, field: impl Into<String>, msg: impl Into<String>) {
        self.out.push(Diagnostic::error(self.res, field, msg));
    }

    /// A warning at `field`.
    pub fn warn(&mut self, field: impl Into<String>, msg: impl Into<String>) {
        self.out
            .push(Diagnostic::at(Level::Warning, self.res, field, msg));
    }

    /// Records `r` as an error when it failed.
    pub fn check(&mut self, field: impl Into<String>, r: Result<(), String>) {
        if let Err(m) = r {
            self.err(field, m);
        }
    }

    /// Namespace of the resource.
    pub fn namespace(&self) -> &str {
        self.res.namespace()
    }

    /// Name of the resource.
    pub fn resource_name(&self) -> &str {
        self.res.name()
    }
}

/// Validates one resource. Returns errors and warnings.
pub fn validate_resource(res: &Resource) -> Vec<Diagnostic> {
    validate_resource_on_node(res, &[])
}

/// [`validate_resource`] on a node whose own addresses are `node`: an
/// endpoint at one of them is an error too (see [`special_ip`]).
pub fn validate_resource_on_node(res: &Resource, node: &[std::net::IpAddr]) -> Vec<Diagnostic> {
    let mut r = Report::new(res);
    endpoints::endpoint_addresses(&mut r, res, node);
    let name = res.name();
    if name.is_empty() {
        r.err("metadata.name", "name is required");
    }
    match &res.object {
        Object::VirtualService(o) => virtual_service::validate(&mut r, &o.spec),
        Object::DestinationRule(o) => networking::destination_rule(&mut r, &o.spec),
        Object::Gateway(o) => {
            if !name.is_empty() && !common::is_dns1123_label(name) {
                r.err("metadata.name", format!("invalid gateway name: {name:?}"));
            }
            networking::gateway(&mut r, &o.spec)
        }
        Object::ServiceEntry(o) => networking::service_entry(&mut r, &o.spec),
        Object::Sidecar(o) => networking::sidecar(&mut r, &o.spec),
        Object::WorkloadEntry(o) => networking::workload_entry(&mut r, "spec", &o.spec, true),
        Object::PeerAuthentication(o) => security::peer_authentication(&mut r, &o.spec),
        Object::RequestAuthentication(o) => security::request_authentication(&mut r, &o.spec),
        Object::AuthorizationPolicy(o) => security::authorization_policy(&mut r, &o.spec),
        Object::Service(s) => {
            for (i, p) in s
                .spec
                .iter()
                .flat_map(|s| s.ports.iter().flatten())
                .enumerate()
            {
                r.check(
                    format!("spec.ports[{i}].port"),
                    validate_port(p.port as i64),
                );
            }
            if let Some(ip) = s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) {
                if !ip.is_empty() && ip != "None" && ip.parse::<std::net::IpAddr>().is_err() {
                    r.err("spec.clusterIP", format!("{ip} is not a valid IP address"));
                }
            }
            if let Some(spec) = &s.spec {
                dual_stack::service(&mut r, spec);
            }
        }
        Object::EndpointSlice(s) => dual_stack::endpoint_slice(&mut r, s),
        _ => {}
    }
    r.out
}

/// Validates every resource; returns all findings, sorted by file and line.
pub fn validate(resources: &[Resource]) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = resources.iter().flat_map(validate_resource).collect();
    out.sort_by(|a, b| (&a.origin, &a.resource).cmp(&(&b.origin, &b.resource)));
    out
}
