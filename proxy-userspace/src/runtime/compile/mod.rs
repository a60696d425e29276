//! Builds the runtime [`Table`] from a compiled `MeshSnapshot`: regexes
//! compiled, header names parsed, clusters resolved against the upstream
//! [`Registry`] (unchanged clusters reused with their live state, changed
//! ones rebuilt around it), routes pointing at their clusters. Runs once
//! per snapshot swap, never per request.
mod route;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use strait_config::snapshot as snap;

use self::route::route_table;
use super::table::{PortProtocol, ServicePort, SourceWorkload, Table};
use crate::upstream::cluster::{Cluster, Prepared, Registry};
use crate::upstream::compile::cluster_spec;

/// Something in the snapshot the runtime cannot build. Names the route
/// (`host:port http[i]`) or cluster and the field.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {field}: {message}")]
pub struct CompileError {
    /// `reviews.default.svc.cluster.local:9080 http[0]`, or a cluster name.
    pub location: String,
    /// Field path, e.g. `match[0].headers.end-user.regex`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

pub(crate) fn err(
    location: &str,
    field: impl Into<String>,
    message: impl ToString,
) -> CompileError {
    CompileError {
        location: location.to_owned(),
        field: field.into(),
        message: message.to_string(),
    }
}

/// Compiles the whole runtime table with fresh upstream state (tests,
/// `strait compile`); a running proxy uses [`compile_with`].
pub fn compile(s: &snap::MeshSnapshot) -> Result<Table, CompileError> {
    let registry = Registry::new();
    let (table, prepared) = compile_with(s, &registry)?;
    registry.commit(&prepared);
    Ok(table)
}

/// Compiles the runtime table for `new` from the table in service
/// (`current`, built from the snapshot `diff` was computed against), using
/// the diff end to end: only the clusters `diff` names are resolved
/// against `registry` (rebuilt around their live state), and only the
/// service ports whose service or routes changed, or whose routes point at
/// a rebuilt cluster, get a new route table; every other service port,
/// cluster and the workload table are the same `Arc`s as before. The
/// caller commits the returned [`Prepared`] once the table is in service.
pub fn compile_incremental(
    new: &snap::MeshSnapshot,
    diff: &snap::SnapshotDiff,
    current: &Table,
    registry: &Registry,
) -> Result<(Table, Prepared), CompileError> {
    let mut prepared = Prepared::default();
    prepared.clusters = current.clusters.clone();
    for name in &diff.clusters.removed {
        prepared.clusters.remove(name.as_str());
    }
    for name in diff.clusters.added.iter().chain(&diff.clusters.changed) {
        if let Some(c) = new.clusters.get(name) {
            registry.prepare(&mut prepared, name, c, || cluster_spec(c))?;
        }
    }
    let touched_hosts: std::collections::HashSet<&str> = diff
        .services
        .added
        .iter()
        .chain(&diff.services.changed)
        .map(String::as_str)
        .collect();
    let touched_routes: std::collections::HashSet<(&str, u16)> = diff
        .routes
        .added
        .iter()
        .chain(&diff.routes.changed)
        .map(|(h, p)| (h.as_str(), *p))
        .collect();
    let clusters = &prepared.clusters;
    let mut services = HashMap::with_capacity(current.services.len());
    for svc in new.services.values() {
        let Some(vip) = svc.vip else { continue };
        for port in &svc.ports {
            let key = SocketAddr::new(vip, port.port);
            let touched = touched_hosts.contains(svc.host.as_str())
                || touched_routes.contains(&(svc.host.as_str(), port.port));
            let reusable = current.services.get(&key).filter(|sp| {
                !touched
                    && sp
                        .routes
                        .clusters()
                        .all(|c| clusters.get(&c.name).is_some_and(|now| Arc::ptr_eq(now, c)))
            });
            if let Some(sp) = reusable {
                services.insert(key, sp.clone());
                continue;
            }
            let Some(routes) = new.routes_for(&svc.host, port.port) else {
                continue;
            };
            let loc = format!("{}:{}", svc.host, port.port);
            let sp = ServicePort {
                host: svc.host.as_str().into(),
                port: port.port,
                protocol: port_protocol(port.protocol),
                routes: route_table(&loc, routes, clusters)?,
            };
            services.insert(key, Arc::new(sp));
        }
    }
    let workloads = if diff.workloads.is_empty() {
        current.workloads.clone()
    } else {
        workload_table(new)
    };
    let table = Table {
        services,
        clusters: prepared.clusters.clone(),
        workloads,
        passthrough: registry.passthrough(),
        policy: None,
        registry_only: new.mesh.outbound_traffic_policy.mode
            == strait_config::mesh::OutboundMode::RegistryOnly,
    };
    Ok((table, prepared))
}

fn workload_table(s: &snap::MeshSnapshot) -> HashMap<std::net::IpAddr, Arc<SourceWorkload>> {
    s.workloads
        .iter()
        .map(|(ip, w)| {
            let sw = SourceWorkload {
                labels: (*w.labels).clone(),
                namespace: w.namespace.clone(),
            };
            (*ip, Arc::new(sw))
        })
        .collect()
}

/// Compiles the runtime table against the live upstream state of
/// `registry`. The caller commits the returned [`Prepared`] once the table
/// is in service; on error nothing changed.
pub fn compile_with(
    s: &snap::MeshSnapshot,
    registry: &Registry,
) -> Result<(Table, Prepared), CompileError> {
    let mut prepared = Prepared::default();
    for (name, c) in &s.clusters {
        registry.prepare(&mut prepared, name, c, || cluster_spec(c))?;
    }
    let clusters = &prepared.clusters;
    let workloads = workload_table(s);
    let mut services = HashMap::new();
    for svc in s.services.values() {
        let Some(vip) = svc.vip else { continue };
        for port in &svc.ports {
            let Some(routes) = s.routes_for(&svc.host, port.port) else {
                continue;
            };
            let loc = format!("{}:{}", svc.host, port.port);
            let table = route_table(&loc, routes, clusters)?;
            let sp = ServicePort {
                host: svc.host.as_str().into(),
                port: port.port,
                protocol: port_protocol(port.protocol),
                routes: table,
            };
            services.insert(SocketAddr::new(vip, port.port), Arc::new(sp));
        }
    }
    let table = Table {
        services,
        clusters: prepared.clusters.clone(),
        workloads,
        passthrough: registry.passthrough(),
        policy: None,
        registry_only: s.mesh.outbound_traffic_policy.mode
            == strait_config::mesh::OutboundMode::RegistryOnly,
    };
    Ok((table, prepared))
}

fn port_protocol(p: snap::Protocol) -> PortProtocol {
    use snap::Protocol as P;
    match p {
        P::Http | P::GrpcWeb => PortProtocol::Http,
        P::Http2 => PortProtocol::Http2,
        P::Grpc => PortProtocol::Grpc,
        P::Tcp | P::Mongo | P::Redis | P::Mysql | P::Udp => PortProtocol::Tcp,
        P::Tls | P::Https => PortProtocol::Tls,
        P::Unknown => PortProtocol::Unknown,
    }
}

pub(super) type Clusters = HashMap<Arc<str>, Arc<Cluster>>;

pub(super) fn lookup(
    clusters: &Clusters,
    loc: &str,
    field: &str,
    name: &str,
) -> Result<Arc<Cluster>, CompileError> {
    clusters
        .get(name)
        .cloned()
        .ok_or_else(|| err(loc, field, format!("unknown cluster {name:?}")))
}
