//! Endpoint addresses pods must never be sent to, with Kubernetes' rules
//! and wording (`ValidateNonSpecialIP`, applied by the API server to
//! Endpoints and EndpointSlices): loopback, link-local, link-local
//! multicast and unspecified addresses, and — when the daemon validates on
//! a node — the node's own addresses. An endpoint there would let any pod
//! reach the node's own services (its admin API, its outbound listener)
//! through the proxy.
//!
//! Errors in Endpoints and EndpointSlices, as the API server rejects them.
//! Warnings in a Pod's `status.podIP(s)` (set by the kubelet, not checked
//! by the API server), WorkloadEntries, ServiceEntry
//! `endpoints` (STATIC) and ServiceEntry `addresses` when its resolution is
//! `NONE` (the original destination is then the endpoint): Istio accepts
//! those (its own samples use `127.0.0.2`), so the resource loads, and the
//! daemon's proxy refuses to connect to loopback, link-local, unspecified
//! and its own listeners' addresses at connect time
//! (`upstream::self_guard` in the daemon, `503 UF`).
use std::net::IpAddr;

use super::Report;
use crate::api::{Object, Resource};

/// Why `ip` may not be an endpoint for pod traffic, in Kubernetes'
/// words; `None` when it may. `node` lists the node's own addresses.
pub fn special_ip(ip: IpAddr, node: &[IpAddr]) -> Option<String> {
    let ip = ip.to_canonical();
    let why = match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => "may not be unspecified (0.0.0.0)",
        IpAddr::V6(v6) if v6.is_unspecified() => "may not be unspecified (::)",
        IpAddr::V4(v4) if v4.is_loopback() => {
            "may not be in the loopback range (127.0.0.0/8, ::1/128)"
        }
        IpAddr::V6(v6) if v6.is_loopback() => {
            "may not be in the loopback range (127.0.0.0/8, ::1/128)"
        }
        IpAddr::V4(v4) if v4.is_link_local() => {
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
        }
        IpAddr::V6(v6) if v6.is_unicast_link_local() => {
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
        }
        IpAddr::V4(v4) if v4.octets()[..3] == [224, 0, 0] => {
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
        }
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xff00 && v6.segments()[0] & 0x000f == 2 => {
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
        }
        _ if node.iter().any(|n| n.to_canonical() == ip) => {
            return Some(format!(
            "{ip}: may not be an address of this node (the proxy would connect to the node itself)"
        ))
        }
        _ => return None,
    };
    Some(format!("{ip}: {why}"))
}

/// How a special address is reported: an error (Kubernetes kinds, which
/// the API server rejects) or a warning (Istio kinds, which Istio accepts;
/// the proxy refuses the connection instead).
#[derive(Clone, Copy)]
enum Severity {
    Reject,
    Refuse,
}

fn check(r: &mut Report<'_>, field: String, addr: &str, node: &[IpAddr], sev: Severity) {
    let bare = addr.split('/').next().unwrap_or(addr);
    let why = if bare.eq_ignore_ascii_case("localhost")
        || bare.to_ascii_lowercase().ends_with(".localhost")
    {
        Some(format!("{addr}: may not be localhost"))
    } else {
        bare.parse::<IpAddr>()
            .ok()
            .and_then(|ip| special_ip(ip, node))
    };
    match (why, sev) {
        (Some(why), Severity::Reject) => r.err(field, why),
        (Some(why), Severity::Refuse) => r.warn(
            field,
            format!("{why}; the node proxy refuses to connect to it (503 UF)"),
        ),
        (None, _) => {}
    }
}

/// Reports every endpoint address of `res` that pods may not be sent to.
pub(crate) fn endpoint_addresses(r: &mut Report<'_>, res: &Resource, node: &[IpAddr]) {
    match &res.object {
        Object::Endpoints(e) => {
            for (i, s) in e.subsets.iter().flatten().enumerate() {
                for (key, list) in [
                    ("addresses", &s.addresses),
                    ("notReadyAddresses", &s.not_ready_addresses),
                ] {
                    for (j, a) in list.iter().flatten().enumerate() {
                        check(
                            r,
                            format!("subsets[{i}].{key}[{j}].ip"),
                            &a.ip,
                            node,
                            Severity::Reject,
                        );
                    }
                }
            }
        }
        Object::EndpointSlice(s) => {
            for (i, e) in s.endpoints.iter().enumerate() {
                for (j, a) in e.addresses.iter().enumerate() {
                    check(
                        r,
                        format!("endpoints[{i}].addresses[{j}]"),
                        a,
                        node,
                        Severity::Reject,
                    );
                }
            }
        }
        Object::Pod(p) => {
            if let Some(st) = &p.status {
                if let Some(ip) = &st.pod_ip {
                    check(r, "status.podIP".into(), ip, node, Severity::Refuse);
                }
                for (i, ip) in st.pod_ips.iter().flatten().enumerate() {
                    check(
                        r,
                        format!("status.podIPs[{i}].ip"),
                        &ip.ip,
                        node,
                        Severity::Refuse,
                    );
                }
            }
        }
        Object::WorkloadEntry(w) => check(
            r,
            "spec.address".into(),
            &w.spec.address,
            node,
            Severity::Refuse,
        ),
        Object::ServiceEntry(se) => {
            let se = &se.spec;
            for (i, e) in se.endpoints.iter().enumerate() {
                check(
                    r,
                    format!("spec.endpoints[{i}].address"),
                    &e.address,
                    node,
                    Severity::Refuse,
                );
            }
            if se.resolution.as_deref().unwrap_or("NONE") == "NONE" {
                for (i, a) in se.addresses.iter().enumerate() {
                    check(r, format!("spec.addresses[{i}]"), a, node, Severity::Refuse);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load_str;

    fn diags(yaml: &str, node: &[IpAddr], errors: bool) -> Vec<String> {
        let l = load_str(yaml, "eps.yaml");
        assert!(!l.has_errors(), "{:?}", l.diagnostics);
        l.resources
            .iter()
            .flat_map(|r| super::super::validate_resource_on_node(r, node))
            .filter(|d| d.is_error() == errors)
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn loopback_link_local_and_node_endpoints_are_rejected_with_file_resource_and_field() {
        let yaml = "apiVersion: v1\nkind: Endpoints\nmetadata: {name: admin, namespace: ns}\nsubsets:\n- addresses: [{ip: 10.244.0.5}, {ip: 127.0.0.1}]\n  ports: [{port: 15000}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, namespace: ns, labels: {kubernetes.io/service-name: admin}}\naddressType: IPv4\nendpoints:\n- addresses: [169.254.169.254]\n- addresses: [10.244.0.1]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se, namespace: ns}\nspec:\n  hosts: [x.example]\n  addresses: [127.0.0.2]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: NONE\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: we, namespace: ns}\nspec:\n  address: \"::1\"\n";
        let node: Vec<IpAddr> = vec!["10.244.0.1".parse().unwrap()];
        let errs = diags(yaml, &node, true);
        let find = |list: &[String], s: &str| {
            list.iter()
                .find(|e| e.contains(s))
                .cloned()
                .unwrap_or_else(|| panic!("nothing with {s:?} in {list:#?}"))
        };
        let e = find(&errs, "127.0.0.1");
        assert!(
            e.contains("eps.yaml")
                && e.contains("Endpoints/ns/admin")
                && e.contains("subsets[0].addresses[1].ip")
                && e.contains("loopback"),
            "{e}"
        );
        assert!(find(&errs, "169.254.169.254").contains("endpoints[0].addresses[0]"));
        assert!(find(&errs, "10.244.0.1").contains("address of this node"));
        assert_eq!(errs.len(), 3, "{errs:#?}");
        // Istio accepts these in its own kinds (its samples use 127.0.0.2):
        // a warning, and the proxy refuses the connection.
        let warns = diags(yaml, &node, false);
        assert!(find(&warns, "127.0.0.2").contains("ServiceEntry/ns/se"));
        let w = find(&warns, "WorkloadEntry/ns/we");
        assert!(
            w.contains("::1: may not be in the loopback range") && w.contains("503 UF"),
            "{w}"
        );
        // Off the node (`strait validate`), node addresses are not known.
        assert_eq!(diags(yaml, &[], true).len(), 2);
    }
}
