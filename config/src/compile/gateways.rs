//! Gateways: servers plus the VirtualServices bound to them.
//!
//! A VirtualService binds to a gateway through `gateways: [name]` (its own
//! namespace) or `[namespace/name]`. On each server port its hosts that
//! intersect the server's hosts become one [`VirtualHost`]; VirtualServices
//! with the same host set on one gateway are merged by appending their rules
//! in `namespace/name` order (Istio merges gateway VirtualServices this way,
//! in creation order). A server host written `namespace/host` admits only
//! VirtualServices of that namespace (`.`: the Gateway's own, `*`: any).
use std::collections::BTreeMap;

use super::routes::{http_routes, l4_routes, vs_gateways};
use super::Index;
use crate::diag::Diagnostic;
use crate::hosts;
use crate::snapshot::{Gateway, GatewayServer, Protocol, ServerTls, Service, VirtualHost};

/// Every gateway, keyed `namespace/name`.
pub(crate) fn build(
    idx: &Index<'_>,
    services: &BTreeMap<String, Service>,
    _diags: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Gateway> {
    let mut out = BTreeMap::new();
    for (res, g) in &idx.gateways {
        let key = format!("{}/{}", res.namespace(), res.name());
        let servers: Vec<GatewayServer> = g
            .servers
            .iter()
            .map(|s| {
                let port = s.port.clone().unwrap_or_default();
                GatewayServer {
                    port: port.number as u16,
                    port_name: port.name,
                    protocol: Protocol::parse(&port.protocol),
                    bind: s.bind.clone(),
                    hosts: s
                        .hosts
                        .iter()
                        .map(|h| hosts::split_namespaced(h).1.to_string())
                        .collect(),
                    tls: s.tls.as_ref().map(|t| ServerTls {
                        mode: t.mode.clone().unwrap_or_else(|| "SIMPLE".into()),
                        https_redirect: t.https_redirect.unwrap_or(false),
                        server_certificate: t.server_certificate.clone(),
                        private_key: t.private_key.clone(),
                        ca_certificates: t.ca_certificates.clone(),
                        credential_name: t.credential_name.clone(),
                        subject_alt_names: t.subject_alt_names.clone(),
                        min_protocol_version: t.min_protocol_version.clone(),
                        max_protocol_version: t.max_protocol_version.clone(),
                    }),
                }
            })
            .collect();
        let mut routes: BTreeMap<u16, Vec<VirtualHost>> = BTreeMap::new();
        for (server, api_server) in servers.iter().zip(&g.servers) {
            // `namespace/host` server hosts only admit VirtualServices from
            // that namespace (`.`: the Gateway's, `*`: any).
            let admitted: Vec<(Option<&str>, &str)> = api_server
                .hosts
                .iter()
                .map(|h| hosts::split_namespaced(h))
                .collect();
            let vhosts = routes.entry(server.port).or_default();
            for (r, v) in &idx.virtual_services {
                if !vs_gateways(r, v).contains(&key) {
                    continue;
                }
                let mut domains: Vec<String> = v
                    .hosts
                    .iter()
                    .map(|h| hosts::resolve(h, r.namespace()))
                    .filter(|h| {
                        admitted.iter().any(|(ns, s)| {
                            let ns_ok = match *ns {
                                None | Some("*") => true,
                                Some(".") => r.namespace() == res.namespace(),
                                Some(n) => r.namespace() == n,
                            };
                            ns_ok && hosts::intersect(s, h)
                        })
                    })
                    .collect();
                if domains.is_empty() {
                    continue;
                }
                domains.sort();
                domains.dedup();
                let http = if server.protocol.is_http() || server.protocol == Protocol::Https {
                    http_routes(idx, r, v, server.port, &key, services)
                } else {
                    vec![]
                };
                let (tcp, tls) = l4_routes(r, v, server.port, &key, services);
                if http.is_empty() && tcp.is_empty() && tls.is_empty() {
                    continue;
                }
                let vh = match vhosts.iter_mut().find(|vh| vh.domains == domains) {
                    Some(vh) => vh,
                    None => {
                        vhosts.push(VirtualHost {
                            domains,
                            ..VirtualHost::default()
                        });
                        vhosts.last_mut().expect("just pushed")
                    }
                };
                vh.routes.http.extend(http);
                vh.routes.tcp.extend(tcp);
                vh.routes.tls.extend(tls);
            }
        }
        routes.retain(|_, v| !v.is_empty());
        out.insert(
            key.clone(),
            Gateway {
                name: key,
                selector: g.selector.clone(),
                servers,
                routes,
            },
        );
    }
    out
}
