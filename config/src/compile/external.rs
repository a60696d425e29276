//! External VIPs of Kubernetes Services for the uplink XDP balancer
//! ([`ExternalL4Service`]): `spec.externalIPs` and
//! `status.loadBalancer.ingress[].ip`, each port spread over the nodes
//! hosting the port's endpoints, by the node address of the VIP's family:
//! the Pod's `status.hostIPs` (Kubernetes 1.28+, one address per family of
//! a dual-stack node) and `status.hostIP` (the primary address; all that
//! older clusters publish).
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

/// A Pod's node addresses: `status.hostIPs` in order, then `status.hostIP`
/// if not among them; unparsable entries are left out.
fn node_addresses(s: &k8s_openapi::api::core::v1::PodStatus) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let listed = s.host_ips.iter().flatten().map(|h| h.ip.as_str());
    for ip in listed.chain(s.host_ip.as_deref()) {
        if let Ok(a) = ip.parse::<IpAddr>() {
            if !out.contains(&a) {
                out.push(a);
            }
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
            // Per endpoint: its node's addresses and whether it is ready.
            let mut endpoints: Vec<(Vec<IpAddr>, bool)> = Vec::new();
            if let Some(c) = snap.clusters.get(&cluster_name(port.port, "", &host)) {
                for e in &c.endpoints {
                    let status = idx
                        .pods_by_ip
                        .get(&e.addr.ip())
                        .and_then(|p| p.status.as_ref());
                    if let Some(s) = status {
                        endpoints.push((node_addresses(s), e.healthy));
                    }
                }
            }
            for vip in &vips {
                let mut nodes: BTreeMap<IpAddr, u32> = BTreeMap::new();
                let mut unplaced = 0;
                for (addrs, healthy) in &endpoints {
                    // The node's address of the VIP's family; for an IPv4
                    // VIP on a node without IPv4, its IPv6 one (4in6, as
                    // Katran keys each real by its own family). IPv6 VIPs
                    // are not sent to IPv4-only nodes (6in4 is not built).
                    let same = addrs.iter().find(|a| a.is_ipv4() == vip.is_ipv4());
                    let node = same.or_else(|| addrs.iter().find(|_| vip.is_ipv4()));
                    match node {
                        Some(node) => *nodes.entry(*node).or_default() += u32::from(*healthy),
                        None if !addrs.is_empty() => unplaced += 1,
                        None => {}
                    }
                }
                out.push(ExternalL4Service {
                    host: host.clone(),
                    vip: *vip,
                    port: port.port,
                    protocol: port.protocol.l4(),
                    nodes: nodes.iter().map(|(a, w)| (*a, *w)).collect(),
                    unplaced,
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

    #[test]
    fn an_ipv6_vip_is_spread_over_the_nodes_ipv6_host_ips() {
        let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: front, namespace: web}\n\
            spec:\n  clusterIP: 10.96.0.20\n  selector: {app: front}\n  externalIPs: [198.51.100.7, \"2001:db8:7::7\"]\n  ports:\n  - {name: http, port: 80}\n";
        let pod = |name: &str, ip: &str, host_ips: &str| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: web, labels: {{app: front}}}}\n\
                 spec: {{containers: [{{name: c, image: x}}]}}\n\
                 status: {{podIP: {ip}, hostIP: 192.168.0.{name}, hostIPs: [{host_ips}], phase: Running, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
            )
        };
        let yaml = format!(
            "{svc}{}{}{}",
            pod("11", "10.244.1.5", "{ip: 192.168.0.11}, {ip: \"fd00::11\"}"),
            pod("12", "10.244.2.5", "{ip: 192.168.0.12}, {ip: \"fd00::12\"}"),
            // A node without an IPv6 address: left out of the IPv6 VIP, counted.
            pod("13", "10.244.3.5", "{ip: 192.168.0.13}"),
        );
        let s = snap(&yaml);
        let nodes = |vip: &str| -> (Vec<(String, u32)>, u32) {
            let e = s
                .external
                .iter()
                .find(|e| e.vip.to_string() == vip)
                .unwrap();
            let n = e.nodes.iter().map(|(a, w)| (a.to_string(), *w)).collect();
            (n, e.unplaced)
        };
        assert_eq!(
            nodes("2001:db8:7::7"),
            (vec![("fd00::11".into(), 1), ("fd00::12".into(), 1)], 1)
        );
        assert_eq!(
            nodes("198.51.100.7"),
            (
                vec![
                    ("192.168.0.11".into(), 1),
                    ("192.168.0.12".into(), 1),
                    ("192.168.0.13".into(), 1)
                ],
                0
            )
        );
    }

    #[test]
    fn an_ipv4_vip_takes_an_ipv6_only_node_by_its_ipv6_address_and_a_dual_stack_one_by_ipv4() {
        let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: front, namespace: web}\n\
            spec:\n  clusterIP: 10.96.0.20\n  selector: {app: front}\n  externalIPs: [198.51.100.7, \"2001:db8:7::7\"]\n  ports:\n  - {name: http, port: 80}\n";
        let pod = |name: &str, ip: &str, host: &str, host_ips: &str| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: web, labels: {{app: front}}}}\n\
                 spec: {{containers: [{{name: c, image: x}}]}}\n\
                 status: {{podIP: {ip}, hostIP: \"{host}\", hostIPs: [{host_ips}], phase: Running, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
            )
        };
        let yaml = format!(
            "{svc}{}{}{}",
            pod(
                "a",
                "10.244.1.5",
                "192.168.0.11",
                "{ip: 192.168.0.11}, {ip: \"fd00::11\"}"
            ),
            // IPv6-only nodes (two endpoints on one).
            pod("b", "10.244.2.5", "fd00::12", "{ip: \"fd00::12\"}"),
            pod("c", "10.244.2.6", "fd00::12", "{ip: \"fd00::12\"}"),
        );
        let s = snap(&yaml);
        let nodes = |vip: &str| -> (Vec<(String, u32)>, u32) {
            let e = s
                .external
                .iter()
                .find(|e| e.vip.to_string() == vip)
                .unwrap();
            let n = e.nodes.iter().map(|(a, w)| (a.to_string(), *w)).collect();
            (n, e.unplaced)
        };
        assert_eq!(
            nodes("198.51.100.7"),
            (vec![("192.168.0.11".into(), 1), ("fd00::12".into(), 2)], 0),
            "IPIP to the dual-stack node, 4in6 to the IPv6-only one"
        );
        assert_eq!(
            nodes("2001:db8:7::7"),
            (vec![("fd00::11".into(), 1), ("fd00::12".into(), 2)], 0)
        );
    }
}
