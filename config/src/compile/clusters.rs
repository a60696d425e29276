//! Clusters per (service, port, subset) with merged DestinationRule policy.
use std::collections::BTreeMap;

use super::services::RawEndpoint;
use super::Index;
use crate::api::destination_rule::{
    ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection as ApiOd,
    Subset, TrafficPolicy,
};
use crate::api::Resource;
use crate::duration::parse_ms;
use crate::snapshot::policy::ROOT_NAMESPACE;
use crate::snapshot::{
    cluster_name, ClientTls, Cluster, ConnectionPool, ConsistentHash, Endpoint, HashAlgorithm,
    HashKey, LoadBalancer, OutlierDetection, Service, ServicePort, SimpleLb, TlsMode,
};

/// The DestinationRules that apply to one host, merged as Istio merges
/// rules for the same host: the first rule's `trafficPolicy` wins and
/// subsets are concatenated (a repeated subset name keeps the first).
#[derive(Default)]
pub(crate) struct MergedDr<'a> {
    pub traffic_policy: Option<&'a TrafficPolicy>,
    pub subsets: Vec<&'a Subset>,
    pub sources: Vec<&'a Resource>,
}

/// DestinationRules for `host` (a service in `svc_ns`): exact host matches,
/// else the most specific wildcard; ordered by the service's namespace,
/// then the root namespace, then `namespace/name`. Rules with a
/// `workloadSelector` apply to some clients only and are skipped here.
pub(crate) fn dr_for<'a>(idx: &Index<'a>, host: &str, svc_ns: &str) -> MergedDr<'a> {
    let mut cands: Vec<(
        u8,
        usize,
        &'a Resource,
        &'a crate::api::destination_rule::DestinationRule,
    )> = Vec::new();
    for (dh, i) in idx.dr_by_host.lookup(host) {
        let (r, dr) = idx.destination_rules[i];
        if dr.workload_selector.is_some() {
            continue;
        }
        let specificity = if dh == host { usize::MAX } else { dh.len() };
        let prio = if r.namespace() == svc_ns {
            0
        } else if r.namespace() == ROOT_NAMESPACE {
            1
        } else {
            2
        };
        cands.push((prio, specificity, r, dr));
    }
    let Some(best) = cands.iter().map(|c| c.1).max() else {
        return MergedDr::default();
    };
    cands.retain(|c| c.1 == best);
    cands.sort_by(|a, b| {
        (a.0, a.2.namespace(), a.2.name()).cmp(&(b.0, b.2.namespace(), b.2.name()))
    });
    let mut out = MergedDr::default();
    // A set of the names seen keeps the merge linear in the subset count
    // (a DestinationRule may list 100,000 subsets).
    let mut seen: std::collections::HashSet<&'a str> = std::collections::HashSet::new();
    for (_, _, r, dr) in cands {
        out.sources.push(r);
        if out.traffic_policy.is_none() {
            out.traffic_policy = dr.traffic_policy.as_deref();
        }
        for s in &dr.subsets {
            if seen.insert(s.name.as_str()) {
                out.subsets.push(s);
            }
        }
    }
    out
}

/// The four policy parts after merging.
#[derive(Default, Clone, Copy)]
pub(crate) struct Effective<'a> {
    pub lb: Option<&'a LoadBalancerSettings>,
    pub pool: Option<&'a ConnectionPoolSettings>,
    pub od: Option<&'a ApiOd>,
    pub tls: Option<&'a ClientTlsSettings>,
}

/// Istio's `MergeTrafficPolicy`: a policy's own fields, replaced as a whole
/// by its `portLevelSettings` entry for `port` (which does not inherit).
fn apply<'a>(base: Effective<'a>, p: Option<&'a TrafficPolicy>, port: u16) -> Effective<'a> {
    let Some(p) = p else { return base };
    let mut e = base;
    if p.load_balancer.is_some() {
        e.lb = p.load_balancer.as_ref();
    }
    if p.connection_pool.is_some() {
        e.pool = p.connection_pool.as_ref();
    }
    if p.outlier_detection.is_some() {
        e.od = p.outlier_detection.as_ref();
    }
    if p.tls.is_some() {
        e.tls = p.tls.as_ref();
    }
    if let Some(pl) = p
        .port_level_settings
        .iter()
        .find(|pl| pl.port.as_ref().map(|x| x.number) == Some(port as u32))
    {
        e = Effective {
            lb: pl.load_balancer.as_ref(),
            pool: pl.connection_pool.as_ref(),
            od: pl.outlier_detection.as_ref(),
            tls: pl.tls.as_ref(),
        };
    }
    e
}

/// Effective policy for (port, subset).
pub(crate) fn effective<'a>(
    dr: &MergedDr<'a>,
    port: u16,
    subset: Option<&'a Subset>,
) -> Effective<'a> {
    let top = apply(Effective::default(), dr.traffic_policy, port);
    apply(top, subset.and_then(|s| s.traffic_policy.as_deref()), port)
}

pub(crate) fn load_balancer(lb: Option<&LoadBalancerSettings>) -> LoadBalancer {
    let Some(lb) = lb else {
        return LoadBalancer::default();
    };
    if let Some(ch) = &lb.consistent_hash {
        let key = if let Some(h) = &ch.http_header_name {
            HashKey::HttpHeaderName(h.clone())
        } else if let Some(c) = &ch.http_cookie {
            HashKey::HttpCookie {
                name: c.name.clone(),
                path: c.path.clone(),
                ttl_ms: c.ttl.as_deref().and_then(|t| parse_ms(t).ok()),
            }
        } else if let Some(q) = &ch.http_query_parameter_name {
            HashKey::HttpQueryParameterName(q.clone())
        } else {
            HashKey::UseSourceIp
        };
        let algorithm = if let Some(m) = &ch.maglev {
            HashAlgorithm::Maglev {
                table_size: m.table_size.unwrap_or(65537),
            }
        } else {
            HashAlgorithm::RingHash {
                minimum_ring_size: ch
                    .ring_hash
                    .as_ref()
                    .and_then(|r| r.minimum_ring_size)
                    .or(ch.minimum_ring_size)
                    .unwrap_or(1024),
            }
        };
        return LoadBalancer::ConsistentHash(ConsistentHash { key, algorithm });
    }
    LoadBalancer::Simple(match lb.simple.as_deref() {
        Some("ROUND_ROBIN") => SimpleLb::RoundRobin,
        Some("RANDOM") => SimpleLb::Random,
        Some("PASSTHROUGH") => SimpleLb::Passthrough,
        // LEAST_CONN is Istio's deprecated alias of LEAST_REQUEST.
        Some("LEAST_REQUEST" | "LEAST_CONN") => SimpleLb::LeastRequest,
        // UNSPECIFIED or absent: the default (see `LoadBalancer::default`).
        _ => return LoadBalancer::default(),
    })
}

fn clamp_u32(v: Option<i64>, default: u32) -> u32 {
    v.map(|v| v.clamp(0, u32::MAX as i64) as u32)
        .unwrap_or(default)
}

pub(crate) fn connection_pool(p: Option<&ConnectionPoolSettings>) -> ConnectionPool {
    let mut out = ConnectionPool::default();
    let Some(p) = p else { return out };
    if let Some(t) = &p.tcp {
        out.max_connections = clamp_u32(t.max_connections, out.max_connections);
        if let Some(ms) = t.connect_timeout.as_deref().and_then(|d| parse_ms(d).ok()) {
            out.connect_timeout_ms = ms;
        }
        out.max_connection_duration_ms = t
            .max_connection_duration
            .as_deref()
            .and_then(|d| parse_ms(d).ok());
        if let Some(ms) = t.idle_timeout.as_deref().and_then(|d| parse_ms(d).ok()) {
            out.idle_timeout_ms = ms;
        }
    }
    if let Some(h) = &p.http {
        out.http1_max_pending_requests =
            clamp_u32(h.http1_max_pending_requests, out.http1_max_pending_requests);
        out.http2_max_requests = clamp_u32(h.http2_max_requests, out.http2_max_requests);
        out.max_requests_per_connection = clamp_u32(
            h.max_requests_per_connection,
            out.max_requests_per_connection,
        );
        out.max_retries = clamp_u32(h.max_retries, out.max_retries);
        if let Some(ms) = h.idle_timeout.as_deref().and_then(|d| parse_ms(d).ok()) {
            out.idle_timeout_ms = ms;
        }
        out.h2_upgrade = h.h2_upgrade_policy.as_deref() == Some("UPGRADE");
        out.use_client_protocol = h.use_client_protocol.unwrap_or(false);
    }
    out
}

pub(crate) fn outlier_detection(od: Option<&ApiOd>) -> Option<OutlierDetection> {
    let od = od?;
    let d = OutlierDetection::default();
    let gateway = od.consecutive_gateway_errors.or(od.consecutive_errors);
    Some(OutlierDetection {
        consecutive_5xx_errors: clamp_u32(od.consecutive_5xx_errors, d.consecutive_5xx_errors),
        consecutive_gateway_errors: gateway.map(|v| v.clamp(0, u32::MAX as i64) as u32),
        consecutive_local_origin_failures: od
            .consecutive_local_origin_failures
            .map(|v| v.clamp(0, u32::MAX as i64) as u32),
        split_external_local_origin_errors: od.split_external_local_origin_errors.unwrap_or(false),
        interval_ms: od
            .interval
            .as_deref()
            .and_then(|v| parse_ms(v).ok())
            .unwrap_or(d.interval_ms),
        base_ejection_time_ms: od
            .base_ejection_time
            .as_deref()
            .and_then(|v| parse_ms(v).ok())
            .unwrap_or(d.base_ejection_time_ms),
        max_ejection_percent: clamp_u32(od.max_ejection_percent, d.max_ejection_percent),
        min_health_percent: clamp_u32(od.min_health_percent, d.min_health_percent),
    })
}

pub(crate) fn client_tls(t: Option<&ClientTlsSettings>) -> ClientTls {
    let Some(t) = t else {
        return ClientTls {
            auto_mtls: true,
            ..ClientTls::default()
        };
    };
    ClientTls {
        mode: match t.mode.as_deref() {
            Some("SIMPLE") => TlsMode::Simple,
            Some("MUTUAL") => TlsMode::Mutual,
            Some("ISTIO_MUTUAL") => TlsMode::IstioMutual,
            _ => TlsMode::Disable,
        },
        auto_mtls: false,
        sni: t.sni.clone(),
        subject_alt_names: t.subject_alt_names.clone(),
        credential_name: t.credential_name.clone(),
        ca_certificates: t.ca_certificates.clone(),
        client_certificate: t.client_certificate.clone(),
        private_key: t.private_key.clone(),
        insecure_skip_verify: t.insecure_skip_verify.unwrap_or(false),
        ca_crl: t.ca_crl.clone(),
    }
}

fn endpoints_for(
    raw: &[RawEndpoint],
    port: &ServicePort,
    labels: &BTreeMap<String, String>,
) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = raw
        .iter()
        .filter(|e| labels.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
        .filter_map(|e| {
            // Endpoint port: by service port name; a single unnamed port
            // falls back to the only endpoint port; else the target port.
            let p = e
                .ports
                .get(&port.name)
                .copied()
                .or_else(|| (e.ports.len() == 1).then(|| *e.ports.values().next().unwrap()))
                .or(port.target_port)?;
            Some(Endpoint {
                addr: std::net::SocketAddr::new(e.ip, p),
                labels: e.labels.clone(),
                locality: e.locality.clone(),
                service_account: e.service_account.clone(),
                namespace: e.namespace.clone(),
                healthy: e.healthy,
                weight: e.weight.max(1),
            })
        })
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.addr == b.addr);
    // Snapshots live long and hold 10^5 endpoints: drop the growth slack.
    out.shrink_to_fit();
    out
}

/// Every cluster of every service.
pub(crate) fn build(
    idx: &Index<'_>,
    services: &BTreeMap<String, Service>,
    raw: &BTreeMap<String, Vec<RawEndpoint>>,
) -> BTreeMap<String, Cluster> {
    let empty = Vec::new();
    let list: Vec<&Service> = services.values().collect();
    // Services are independent: compile them on every core.
    let built = super::par::map_chunks(&list, |chunk| {
        let mut out = Vec::new();
        for svc in chunk {
            service_clusters(idx, svc, raw.get(&svc.host).unwrap_or(&empty), &mut out);
        }
        out
    });
    // Sort the names, then move each cluster once (a `Cluster` is ~0.5 KB;
    // sorting the pairs themselves would copy them n·log n times).
    let mut order: Vec<usize> = (0..built.len()).collect();
    order.sort_unstable_by(|a, b| built[*a].0.cmp(&built[*b].0));
    let mut slots: Vec<Option<(String, Cluster)>> = built.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// The clusters of one service: per port, service-wide then per subset.
pub(crate) fn service_clusters(
    idx: &Index<'_>,
    svc: &Service,
    eps: &[RawEndpoint],
    out: &mut Vec<(String, Cluster)>,
) {
    let dr = dr_for(idx, &svc.host, &svc.namespace);
    for port in &svc.ports {
        let subsets = std::iter::once(None).chain(dr.subsets.iter().map(|s| Some(*s)));
        for subset in subsets {
            let e = effective(&dr, port.port, subset);
            let name = subset.map(|s| s.name.as_str()).unwrap_or("");
            let labels = subset.map(|s| s.labels.clone()).unwrap_or_default();
            let cname = cluster_name(port.port, name, &svc.host);
            out.push((
                cname.clone(),
                Cluster {
                    name: cname,
                    host: svc.host.clone(),
                    port: port.port,
                    subset: name.to_string(),
                    endpoints: endpoints_for(eps, port, &labels),
                    subset_labels: labels,
                    protocol: port.protocol,
                    load_balancer: load_balancer(e.lb),
                    connection_pool: connection_pool(e.pool),
                    outlier_detection: outlier_detection(e.od),
                    tls: client_tls(e.tls),
                },
            ));
        }
    }
}
