//! Builds the runtime [`Table`] from a compiled `MeshSnapshot`: regexes
//! compiled, header names parsed, routes pointing at their clusters by
//! [`ClusterId`]. Runs once per snapshot swap, never per request. The live
//! clusters the ids stand for are resolved by `upstream` (its registry);
//! `serve::table` pairs the two.
mod route;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use strait_config::snapshot as snap;

use self::route::route_table;
use super::table::{
    Built, ClusterId, ClusterIds, PortProtocol, ServicePort, SourceWorkload, Table,
};

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

/// Compiles the whole runtime table: every cluster of the snapshot gets
/// an id (in name order), every service port its routes.
///
/// Errors: a route the runtime cannot build, or that names a cluster the
/// snapshot does not have.
pub fn compile(s: &snap::MeshSnapshot) -> Result<Table, CompileError> {
    let mut clusters = ClusterIds::default();
    for name in s.clusters.keys() {
        clusters.insert(name);
    }
    let workloads = workload_table(s);
    let mut services = HashMap::new();
    for svc in s.services.values() {
        // Every VIP of a dual-stack Service names the same service ports.
        let vips: Vec<std::net::IpAddr> = svc.vips().collect();
        for (vip, port) in vips
            .iter()
            .flat_map(|v| svc.ports.iter().map(move |p| (*v, p)))
        {
            let Some(routes) = s.routes_for(&svc.host, port.port) else {
                continue;
            };
            let loc = format!("{}:{}", svc.host, port.port);
            let table = route_table(&loc, routes, &clusters)?;
            let sp = ServicePort {
                host: svc.host.as_str().into(),
                port: port.port,
                protocol: port_protocol(port.protocol),
                routes: table,
            };
            services.insert(SocketAddr::new(vip, port.port), Arc::new(sp));
        }
    }
    let built = Built {
        route_tables: services.len(),
        workloads: workloads.len(),
    };
    Ok(Table {
        services,
        clusters,
        workloads,
        registry_only: s.mesh.outbound_traffic_policy.mode
            == strait_config::mesh::OutboundMode::RegistryOnly,
        built,
    })
}

/// Compiles the runtime table for `new` from the table in service
/// (`current`, built from the snapshot `diff` was computed against), using
/// the diff end to end: clusters keep their ids (a changed cluster's routes
/// need no rebuild: the id now stands for the rebuilt live cluster), added
/// ones get one, removed ones free theirs; only the service ports whose
/// service or routes changed, or whose routes name an added or removed
/// cluster, get a new route table. Every other service port and the
/// workload table are the same `Arc`s as before.
///
/// Errors: as [`compile`]; on error `current` is untouched.
pub fn compile_incremental(
    new: &snap::MeshSnapshot,
    diff: &snap::SnapshotDiff,
    current: &Table,
) -> Result<Table, CompileError> {
    let mut clusters = current.clusters.clone();
    // Ids whose cluster came or went: a route table naming one is rebuilt.
    let mut stale: HashSet<ClusterId> = HashSet::new();
    for name in &diff.clusters.removed {
        stale.extend(clusters.remove(name));
    }
    for name in diff.clusters.added.iter().chain(&diff.clusters.changed) {
        if new.clusters.contains_key(name) {
            let (id, fresh) = clusters.insert(name);
            if fresh {
                stale.insert(id);
            }
        }
    }
    let touched_hosts: HashSet<&str> = diff
        .services
        .added
        .iter()
        .chain(&diff.services.changed)
        .map(String::as_str)
        .collect();
    let touched_routes: HashSet<(&str, u16)> = diff
        .routes
        .added
        .iter()
        .chain(&diff.routes.changed)
        .map(|(h, p)| (h.as_str(), *p))
        .collect();
    let mut built = Built::default();
    // No service came, went or changed and no cluster id came or went:
    // only the route tables the diff names can differ, so the table in
    // service is copied (pointers) and those are patched — the cost of an
    // endpoint change does not grow with the number of services.
    let services = if stale.is_empty() && diff.services.is_empty() {
        let mut services = current.services.clone();
        let named = diff
            .routes
            .added
            .iter()
            .chain(&diff.routes.changed)
            .chain(&diff.routes.removed);
        for (host, p) in named {
            let Some(svc) = new.services.get(host) else {
                continue;
            };
            for port in svc.ports.iter().filter(|sp| sp.port == *p) {
                for vip in svc.vips() {
                    let key = SocketAddr::new(vip, *p);
                    let Some(routes) = new.routes_for(host, *p) else {
                        services.remove(&key);
                        continue;
                    };
                    let loc = format!("{host}:{p}");
                    let sp = ServicePort {
                        host: svc.host.as_str().into(),
                        port: *p,
                        protocol: port_protocol(port.protocol),
                        routes: route_table(&loc, routes, &clusters)?,
                    };
                    built.route_tables += 1;
                    services.insert(key, Arc::new(sp));
                }
            }
        }
        services
    } else {
        rebuild_services(
            new,
            current,
            &touched_hosts,
            &touched_routes,
            &stale,
            &clusters,
            &mut built,
        )?
    };
    // Only the workloads that came, went or changed are built; the rest
    // of the (persistent) table is shared with the one in service.
    let mut workloads = current.workloads.clone();
    let w = &diff.workloads;
    for ip in &w.removed {
        workloads.remove(ip);
    }
    for ip in w.added.iter().chain(&w.changed) {
        let Some(sw) = new.workloads.get(ip).map(source_workload) else {
            continue;
        };
        if workloads.get(ip).is_none_or(|old| **old != sw) {
            built.workloads += 1;
            workloads.insert(*ip, Arc::new(sw));
        }
    }
    Ok(Table {
        services,
        clusters,
        workloads,
        registry_only: new.mesh.outbound_traffic_policy.mode
            == strait_config::mesh::OutboundMode::RegistryOnly,
        built,
    })
}

/// The service ports of `new`, reusing those of `current` that no touched
/// service or route and no stale cluster id concerns (a service or a
/// cluster id came or went: every service port is looked at).
fn rebuild_services(
    new: &snap::MeshSnapshot,
    current: &Table,
    touched_hosts: &HashSet<&str>,
    touched_routes: &HashSet<(&str, u16)>,
    stale: &HashSet<ClusterId>,
    clusters: &ClusterIds,
    built: &mut Built,
) -> Result<HashMap<SocketAddr, Arc<ServicePort>>, CompileError> {
    let mut services = HashMap::with_capacity(current.services.len());
    for svc in new.services.values() {
        let vips: Vec<std::net::IpAddr> = svc.vips().collect();
        for (vip, port) in vips
            .iter()
            .flat_map(|v| svc.ports.iter().map(move |p| (*v, p)))
        {
            let key = SocketAddr::new(vip, port.port);
            let touched = touched_hosts.contains(svc.host.as_str())
                || touched_routes.contains(&(svc.host.as_str(), port.port));
            let reusable = current
                .services
                .get(&key)
                .filter(|sp| !touched && sp.routes.clusters().all(|id| !stale.contains(&id)));
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
            built.route_tables += 1;
            services.insert(key, Arc::new(sp));
        }
    }
    Ok(services)
}

fn workload_table(s: &snap::MeshSnapshot) -> super::table::Workloads {
    s.workloads
        .iter()
        .map(|(ip, w)| (*ip, Arc::new(source_workload(w))))
        .collect()
}

fn source_workload(w: &snap::Workload) -> SourceWorkload {
    SourceWorkload {
        labels: (*w.labels).clone(),
        namespace: w.namespace.clone(),
    }
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

pub(super) fn lookup(
    clusters: &ClusterIds,
    loc: &str,
    field: &str,
    name: &str,
) -> Result<ClusterId, CompileError> {
    clusters
        .get(name)
        .ok_or_else(|| err(loc, field, format!("unknown cluster {name:?}")))
}

#[cfg(test)]
mod tests;
