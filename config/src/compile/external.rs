//! External VIPs of Kubernetes Services for the uplink XDP balancer
//! ([`ExternalL4Service`]): `spec.externalIPs` and
//! `status.loadBalancer.ingress[].ip`, each port spread over the nodes
//! (Pods' `status.hostIP`) hosting the port's endpoints.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::Index;
use crate::snapshot::{cluster_name, ExternalL4Service, MeshSnapshot};

/// The external addresses of a Service object, sorted, without duplicates.
fn addresses(svc: &crate::api::Service) -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    let spec_ips = svc.spec.as_ref().and_then(|s| s.external_ips.as_ref());
    for ip in spec_ips.into_iter().flatten() {
        if let Ok(a) = ip.parse() {
            out.insert(a);
        }
    }
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref());
    for i in ingress.into_iter().flatten() {
        if let Some(Ok(a)) = i.ip.as_deref().map(str::parse) {
            out.insert(a);
        }
    }
    out
}

/// Builds the table, sorted by (vip, port, protocol, host); a VIP:port
/// claimed by two Services keeps the first host in that order.
pub(crate) fn build(idx: &Index<'_>, snap: &MeshSnapshot) -> Vec<ExternalL4Service> {
    let mut out = Vec::new();
    for svc in &idx.services {
        let vips = addresses(svc);
        if vips.is_empty() {
            continue;
        }
        let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        let host = crate::hosts::service_fqdn(name, ns);
        let Some(service) = snap.services.get(&host) else {
            continue;
        };
        for port in &service.ports {
            let mut nodes: BTreeMap<IpAddr, u32> = BTreeMap::new();
            if let Some(c) = snap.clusters.get(&cluster_name(port.port, "", &host)) {
                for e in &c.endpoints {
                    let host_ip = idx
                        .pods_by_ip
                        .get(&e.addr.ip())
                        .and_then(|p| p.status.as_ref())
                        .and_then(|s| s.host_ip.as_deref())
                        .and_then(|ip| ip.parse().ok());
                    if let Some(node) = host_ip {
                        *nodes.entry(node).or_default() += u32::from(e.healthy);
                    }
                }
            }
            for vip in &vips {
                out.push(ExternalL4Service {
                    host: host.clone(),
                    vip: *vip,
                    port: port.port,
                    protocol: port.protocol.l4(),
                    nodes: nodes.iter().map(|(a, w)| (*a, *w)).collect(),
                });
            }
        }
    }
    out.sort_by(|a, b| {
        (a.vip, a.port, a.protocol, &a.host).cmp(&(b.vip, b.port, b.protocol, &b.host))
    });
    out.dedup_by(|a, b| (a.vip, a.port, a.protocol) == (b.vip, b.port, b.protocol));
    out
}

#[cfg(test)]
mod tests {
    use crate::snapshot::L4Protocol;

    fn snap(yaml: &str) -> crate::MeshSnapshot {
        let loaded = crate::load::load_str(yaml, "test.yaml");
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let (snap, diags) = crate::compile(&loaded.resources);
        assert!(!diags.iter().any(|d| d.is_error()), "{diags:?}");
        snap
    }

    fn pod(name: &str, ip: &str, host: &str, ready: bool) -> String {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: web, labels: {{app: front}}}}\n\
             spec: {{containers: [{{name: c, image: x}}]}}\n\
             status: {{podIP: {ip}, hostIP: {host}, phase: Running, conditions: [{{type: Ready, status: \"{}\"}}]}}\n",
            if ready { "True" } else { "False" }
        )
    }

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: front, namespace: web}\n\
        spec:\n  clusterIP: 10.96.0.20\n  selector: {app: front}\n  externalIPs: [198.51.100.7]\n  ports:\n  - {name: http, port: 80, targetPort: 8080}\n  - {name: dns, port: 53, protocol: UDP}\n\
        status:\n  loadBalancer:\n    ingress: [{ip: 203.0.113.9}, {hostname: lb.example.com}]\n";

    #[test]
    fn external_ips_and_ingress_spread_over_the_nodes_of_the_endpoints() {
        let yaml = format!(
            "{SERVICE}{}{}{}",
            pod("a", "10.244.1.5", "192.168.0.11", true),
            pod("b", "10.244.1.6", "192.168.0.11", true),
            pod("c", "10.244.2.5", "192.168.0.12", true),
        );
        let s = snap(&yaml);
        type Row = (String, u16, L4Protocol, Vec<(String, u32)>);
        let got: Vec<Row> = s
            .external
            .iter()
            .map(|e| {
                (
                    e.vip.to_string(),
                    e.port,
                    e.protocol,
                    e.nodes.iter().map(|(a, w)| (a.to_string(), *w)).collect(),
                )
            })
            .collect();
        let nodes = vec![
            ("192.168.0.11".to_string(), 2),
            ("192.168.0.12".to_string(), 1),
        ];
        assert_eq!(
            got,
            vec![
                ("198.51.100.7".into(), 53, L4Protocol::Udp, nodes.clone()),
                ("198.51.100.7".into(), 80, L4Protocol::Tcp, nodes.clone()),
                ("203.0.113.9".into(), 53, L4Protocol::Udp, nodes.clone()),
                ("203.0.113.9".into(), 80, L4Protocol::Tcp, nodes),
            ]
        );
        assert!(s
            .external
            .iter()
            .all(|e| e.host == "front.web.svc.cluster.local"));
    }

    #[test]
    fn a_node_with_only_unready_endpoints_is_drained_and_no_vip_means_no_entry() {
        let yaml = format!(
            "{SERVICE}{}{}",
            pod("a", "10.244.1.5", "192.168.0.11", true),
            pod("c", "10.244.2.5", "192.168.0.12", false),
        );
        let s = snap(&yaml);
        let e = s.external.iter().find(|e| e.port == 80).unwrap();
        let nodes: Vec<(String, u32)> = e.nodes.iter().map(|(a, w)| (a.to_string(), *w)).collect();
        assert_eq!(
            nodes,
            vec![
                ("192.168.0.11".to_string(), 1),
                ("192.168.0.12".to_string(), 0)
            ]
        );
        let plain = SERVICE
            .replace("  externalIPs: [198.51.100.7]\n", "")
            .replace(
                "ingress: [{ip: 203.0.113.9}, {hostname: lb.example.com}]",
                "ingress: []",
            );
        let yaml = format!("{plain}{}", pod("a", "10.244.1.5", "192.168.0.11", true));
        assert!(snap(&yaml).external.is_empty());
    }
}
