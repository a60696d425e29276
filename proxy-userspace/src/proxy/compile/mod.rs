//! Builds the runtime [`Table`] from a compiled `MeshSnapshot`: regexes
//! compiled, header names parsed, clusters with their endpoints, load
//! balancers and limits created, routes pointing at their clusters. Runs
//! once per snapshot swap, never per request.
mod cluster;
mod route;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use strait_config::snapshot as snap;

use self::cluster::cluster_spec;
use self::route::route_table;
use super::cluster::Cluster;
use super::table::{passthrough_cluster, PortProtocol, ServicePort, SourceWorkload, Table};

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

pub(super) fn err(
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

/// Compiles the whole runtime table.
pub fn compile(s: &snap::MeshSnapshot) -> Result<Table, CompileError> {
    let mut clusters = HashMap::new();
    for (name, c) in &s.clusters {
        clusters.insert(
            Arc::<str>::from(name.as_str()),
            Arc::new(Cluster::new(cluster_spec(c)?)),
        );
    }
    let workloads = s
        .workloads
        .iter()
        .map(|(ip, w)| {
            let sw = SourceWorkload {
                labels: (*w.labels).clone(),
                namespace: w.namespace.clone(),
            };
            (*ip, Arc::new(sw))
        })
        .collect();
    let mut services = HashMap::new();
    for svc in s.services.values() {
        let Some(vip) = svc.vip else { continue };
        for port in &svc.ports {
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
    Ok(Table {
        services,
        clusters,
        workloads,
        passthrough: Arc::new(passthrough_cluster()),
        policy: None,
        registry_only: s.mesh.outbound_traffic_policy.mode
            == strait_config::mesh::OutboundMode::RegistryOnly,
    })
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
