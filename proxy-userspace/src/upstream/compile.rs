//! DestinationRule-derived cluster settings: endpoints, load balancer,
//! circuit-breaker limits, pool settings and outlier detection; and the
//! snapshot's clusters resolved against the live [`Registry`] (unchanged
//! clusters reused with their live state, changed ones rebuilt around it).
use std::time::Duration;

use http::HeaderName;
use strait_config::snapshot as snap;

use crate::runtime::compile::{err, CompileError};
use crate::transport::origination::Alpn;
use crate::upstream::cluster::{
    ClusterSpec, Endpoint, HashKey, LbSpec, Limits, OutlierDetection, PoolSettings, Prepared,
    Registry, Simple, UpstreamProtocol,
};

/// Resolves every cluster of `s` against `registry`. The caller commits
/// the result once the table using it is in service; on error nothing
/// changed.
///
/// Errors: a cluster the runtime cannot build (e.g. an invalid
/// `consistentHash.httpHeaderName`), named with its field.
pub fn prepare(s: &snap::MeshSnapshot, registry: &Registry) -> Result<Prepared, CompileError> {
    let mut prepared = Prepared::default();
    for (name, c) in &s.clusters {
        registry.prepare(&mut prepared, name, c, || cluster_spec(c))?;
    }
    Ok(prepared)
}

/// Resolves only the clusters `diff` names as added or changed against
/// `registry` ([`Prepared::partial`]: the result holds those; committing
/// it drops the removed ones and leaves every other cluster as it is).
/// Same contract as [`prepare`].
pub fn prepare_diff(
    new: &snap::MeshSnapshot,
    diff: &snap::SnapshotDiff,
    registry: &Registry,
) -> Result<Prepared, CompileError> {
    let mut prepared = Prepared::partial(diff.clusters.removed.clone());
    for name in diff.clusters.added.iter().chain(&diff.clusters.changed) {
        if let Some(c) = new.clusters.get(name) {
            registry.prepare(&mut prepared, name, c, || cluster_spec(c))?;
        }
    }
    Ok(prepared)
}

pub(crate) fn cluster_spec(c: &snap::Cluster) -> Result<ClusterSpec, CompileError> {
    let pool = &c.connection_pool;
    let protocol = if pool.use_client_protocol || c.protocol == snap::Protocol::Unknown {
        UpstreamProtocol::Downstream
    } else if matches!(c.protocol, snap::Protocol::Http2 | snap::Protocol::Grpc) || pool.h2_upgrade
    {
        UpstreamProtocol::Http2
    } else {
        UpstreamProtocol::Http1
    };
    let endpoints = c
        .endpoints
        .iter()
        .filter(|e| e.healthy)
        .map(|e| Endpoint::new(e.addr, e.labels.clone()))
        .collect();
    let lb = match &c.load_balancer {
        snap::LoadBalancer::Simple(s) => LbSpec::Simple(match s {
            snap::SimpleLb::RoundRobin => Simple::RoundRobin,
            snap::SimpleLb::Random => Simple::Random,
            snap::SimpleLb::LeastRequest => Simple::LeastRequest,
            snap::SimpleLb::Passthrough => Simple::Passthrough,
        }),
        snap::LoadBalancer::ConsistentHash(h) => {
            let key = match &h.key {
                snap::HashKey::HttpHeaderName(n) => {
                    HashKey::Header(HeaderName::try_from(n.to_ascii_lowercase()).map_err(|e| {
                        err(&c.name, "loadBalancer.consistentHash.httpHeaderName", e)
                    })?)
                }
                snap::HashKey::HttpCookie { name, path, ttl_ms } => HashKey::Cookie {
                    name: name.clone(),
                    path: path.clone(),
                    ttl: ttl_ms.filter(|t| *t > 0).map(Duration::from_millis),
                },
                snap::HashKey::UseSourceIp => HashKey::SourceIp,
                snap::HashKey::HttpQueryParameterName(n) => HashKey::QueryParameter(n.clone()),
            };
            match h.algorithm {
                snap::HashAlgorithm::RingHash { minimum_ring_size } => {
                    LbSpec::RingHash(key, (minimum_ring_size as usize).clamp(1, 1 << 20))
                }
                snap::HashAlgorithm::Maglev { table_size } => {
                    LbSpec::Maglev(key, (table_size as usize).clamp(1, 5_000_011))
                }
            }
        }
    };
    let limits = Limits {
        max_connections: pool.max_connections,
        max_pending_requests: pool.http1_max_pending_requests,
        max_requests: pool.http2_max_requests,
        max_retries: pool.max_retries,
    };
    let pool_settings = PoolSettings {
        connect_timeout: Duration::from_millis(pool.connect_timeout_ms.max(1)),
        idle_timeout: Duration::from_millis(pool.idle_timeout_ms.max(1)),
        max_requests_per_connection: pool.max_requests_per_connection,
        tcp_keepalive: None,
        tls: crate::transport::origination::Origination::for_cluster(
            &c.name,
            &c.host,
            &c.tls,
            match protocol {
                UpstreamProtocol::Http1 => Alpn::Http1,
                UpstreamProtocol::Http2 => Alpn::Http2,
                UpstreamProtocol::Downstream => Alpn::None,
            },
        ),
        mesh_tls: c.tls.mesh_policy(),
        // Routed requests pass the cluster's policy guard first.
        policy_checked: true,
    };
    let outlier = c.outlier_detection.as_ref().map(|o| OutlierDetection {
        consecutive_5xx: o.consecutive_5xx_errors,
        consecutive_gateway: o.consecutive_gateway_errors.unwrap_or(0),
        interval: Duration::from_millis(o.interval_ms),
        base_ejection_time: Duration::from_millis(o.base_ejection_time_ms),
        max_ejection_percent: o.max_ejection_percent,
    });
    Ok(ClusterSpec {
        name: c.name.clone(),
        service: c.host.clone(),
        port: c.port,
        protocol,
        endpoints,
        lb,
        limits,
        pool: pool_settings,
        outlier,
    })
}
