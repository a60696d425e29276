//! The L4 kernel table (`SERVICES` / `BACKENDS` maps).
//!
//! One entry per service with a VIP, per port. Mode rule (ARCHITECTURE.md / DESIGN, "Kernel
//! data path"): [`L4Mode::Redirect`] when the port's traffic needs the node
//! proxy, that is when any of these holds, else [`L4Mode::L4`]:
//! 1. a mesh VirtualService routes the host (any http, tcp or tls rule:
//!    subsets, weights, rewrites and faults are L7/proxy work);
//! 2. the effective DestinationRule policy for the port sets upstream TLS
//!    other than DISABLE, an HTTP-keyed consistent hash (header, cookie,
//!    query parameter), HTTP connection-pool limits, or outlier detection;
//! 3. any AuthorizationPolicy (L4-only ones too: the kernel path has no
//!    policy check) or RequestAuthentication selects a workload of the
//!    service;
//! 4. a PeerAuthentication makes a workload of the service STRICT (mTLS
//!    needs the proxy; PERMISSIVE accepts plain text, so L4 still works).
//!
//! Load balancer: `RANDOM` → Random, `ROUND_ROBIN`/`LEAST_REQUEST` →
//! RoundRobin (the kernel keeps no per-request state, so least-request is
//! approximated by round robin), `consistentHash` (source IP or Maglev) →
//! Maglev; with no DestinationRule load balancer the kernel picks at
//! random, like kube-proxy.
use std::collections::BTreeMap;

use super::clusters::{dr_for, effective};
use super::routes::mesh_vs_for;
use super::Index;
use crate::snapshot::{
    cluster_name, Cluster, HashAlgorithm, HashKey, L4Backend, L4LoadBalancer, L4Mode, L4Service,
    LoadBalancer, MeshSnapshot, MtlsMode, SimpleLb, Workload,
};

pub(crate) fn policy_needs_proxy(snap: &MeshSnapshot, workloads: &[&Workload]) -> bool {
    workloads.iter().any(|w| {
        let p = snap.policies.for_workload(&w.namespace, &w.labels);
        let root = snap.mesh.root_namespace.as_str();
        let pol = &snap.policies;
        // Fail closed (compile/deny.rs): the proxy answers for the service.
        snap.deny.contains_key(&w.ip)
            || p.mtls == MtlsMode::Strict
            || p.port_mtls.values().any(|m| *m == MtlsMode::Strict)
            || !pol
                .request_authn_for(root, &w.namespace, &w.labels, &w.services)
                .is_empty()
            // Every AuthorizationPolicy, L4-only ones too: the kernel's L4
            // path has no policy check, so nothing may bypass the proxy.
            || !pol
                .authz_for(root, &w.namespace, &w.labels, &w.services)
                .is_empty()
    })
}

/// Builds the table, sorted by (vip, port, protocol).
pub(crate) fn build(idx: &Index<'_>, snap: &MeshSnapshot) -> Vec<L4Service> {
    let mut by_host: BTreeMap<&str, Vec<&Workload>> = BTreeMap::new();
    for w in snap.workloads.values() {
        for h in &w.services {
            by_host.entry(h.as_str()).or_default().push(w);
        }
    }
    let none = Vec::new();
    let policies_exist = !snap.policies.peer_authentication.is_empty()
        || !snap.policies.request_authentication.is_empty()
        || !snap.policies.authorization.is_empty();
    let list: Vec<&crate::snapshot::Service> = snap.services.values().collect();
    // Services are independent: compile them on every core.
    let mut out: Vec<L4Service> = super::par::map_chunks(&list, |chunk| {
        let mut out = Vec::new();
        for svc in chunk {
            if svc.vip.is_none() {
                continue;
            }
            let routed = mesh_vs_for(idx, &svc.host).is_some();
            let policy = policies_exist
                && policy_needs_proxy(snap, by_host.get(svc.host.as_str()).unwrap_or(&none));
            // A dual-stack Service: one entry set per VIP (same mode and
            // backends; the kernel keeps each VIP's own family).
            for vip in svc.vips() {
                service_entries(idx, snap, svc, vip, routed || policy, &mut out);
            }
        }
        out
    });
    out.sort_by(|a, b| {
        (a.vip, a.port, a.protocol, &a.host).cmp(&(b.vip, b.port, b.protocol, &b.host))
    });
    out.dedup_by(|a, b| (a.vip, a.port, a.protocol) == (b.vip, b.port, b.protocol));
    out
}

/// The entries of one service with a VIP, one per port; `needs_proxy` when
/// a VirtualService or a policy already sends its traffic to the proxy.
fn service_entries(
    idx: &Index<'_>,
    snap: &MeshSnapshot,
    svc: &crate::snapshot::Service,
    vip: std::net::IpAddr,
    needs_proxy: bool,
    out: &mut Vec<L4Service>,
) {
    let dr = dr_for(idx, &svc.host, &svc.namespace);
    for port in &svc.ports {
        let e = effective(&dr, port.port, None);
        let tls = e
            .tls
            .is_some_and(|t| t.mode.as_deref().is_some_and(|m| m != "DISABLE"));
        let http_pool = e.pool.is_some_and(|p| p.http.is_some());
        let cluster = snap.clusters.get(&cluster_name(port.port, "", &svc.host));
        let lb = cluster.map(|c| c.load_balancer.clone()).unwrap_or_default();
        let http_hash =
            matches!(&lb, LoadBalancer::ConsistentHash(ch) if ch.key != HashKey::UseSourceIp);
        let redirect = needs_proxy || tls || http_pool || e.od.is_some() || http_hash;
        let load_balancer = match &lb {
            LoadBalancer::Simple(SimpleLb::RoundRobin | SimpleLb::LeastRequest)
                if e.lb.is_some() =>
            {
                L4LoadBalancer::RoundRobin
            }
            LoadBalancer::ConsistentHash(ch)
                if ch.key == HashKey::UseSourceIp
                    || matches!(ch.algorithm, HashAlgorithm::Maglev { .. }) =>
            {
                L4LoadBalancer::Maglev
            }
            _ => L4LoadBalancer::Random,
        };
        let backends = backends(cluster);
        out.push(L4Service {
            host: svc.host.clone(),
            vip,
            port: port.port,
            protocol: port.protocol.l4(),
            mode: if redirect {
                L4Mode::Redirect
            } else {
                L4Mode::L4
            },
            load_balancer,
            backends,
        });
    }
}

/// The kernel backends of a port's service-wide `cluster` (none without
/// one), sorted: each endpoint's address, weight (at least 1) and health.
pub(crate) fn backends(cluster: Option<&Cluster>) -> Vec<L4Backend> {
    let mut backends: Vec<L4Backend> = cluster
        .map(|c| {
            c.endpoints
                .iter()
                .map(|e| L4Backend {
                    addr: e.addr,
                    weight: e.weight.max(1),
                    healthy: e.healthy,
                })
                .collect()
        })
        .unwrap_or_default();
    backends.sort();
    backends
}
