//! VirtualService rules → compiled route tables.
//!
//! Mesh traffic (VirtualServices with no `gateways` or with `mesh`): for a
//! service host, the VirtualService naming it exactly wins over wildcard
//! ones (the most specific wildcard first); when several name the same host
//! only the first (ordered by `namespace/name`, standing in for Istio's
//! creation time) is used — Istio merges same-host VirtualServices on
//! gateways only (IST0109 otherwise). Rules are filtered by port
//! (`match.port`) and gateway (`match.gateways`), keeping Istio's order.
//! A port with no rules gets a default route to its service-wide cluster.
use std::collections::BTreeMap;

use base64::Engine;

use super::Index;
use crate::api::virtual_service::{
    self as vs, Destination, HttpRoute as ApiHttpRoute, VirtualService,
};
use crate::api::Resource;
use crate::diag::Diagnostic;
use crate::duration::parse_ms;
use crate::hosts;
use crate::snapshot::{
    cluster_name, AbortStatus, CorsPolicy, DirectResponse, Fault, FaultAbort, FaultDelay,
    HeaderMatch, HeaderOps, Headers, HttpMatch, HttpRoute, HttpRouteDestination, L4Match, Mirror,
    Protocol, Redirect, RegexRewrite, Retries, Rewrite, Routes, Service, StringMatch, TcpRoute,
    TlsRoute, WeightedCluster,
};

/// The gateway a route table is compiled for: `mesh` or `namespace/name`.
pub(crate) const MESH: &str = "mesh";

/// `ns/name` of a gateway reference written in a VirtualService in `ns`.
pub(crate) fn gateway_ref(g: &str, ns: &str) -> String {
    if g == MESH || g.contains('/') {
        g.to_string()
    } else {
        format!("{ns}/{g}")
    }
}

/// The gateways a VirtualService binds to (`mesh` when none).
pub(crate) fn vs_gateways(res: &Resource, v: &VirtualService) -> Vec<String> {
    if v.gateways.is_empty() {
        vec![MESH.to_string()]
    } else {
        v.gateways
            .iter()
            .map(|g| gateway_ref(g, res.namespace()))
            .collect()
    }
}

fn string_match(m: &vs::StringMatch) -> Option<StringMatch> {
    if let Some(v) = &m.exact {
        Some(StringMatch::Exact(v.clone()))
    } else if let Some(v) = &m.prefix {
        Some(StringMatch::Prefix(v.clone()))
    } else {
        m.regex.as_ref().map(|v| StringMatch::Regex(v.clone()))
    }
}

fn header_match(m: &vs::StringMatch) -> HeaderMatch {
    match string_match(m) {
        Some(StringMatch::Exact(v)) => HeaderMatch::Exact(v),
        Some(StringMatch::Prefix(v)) => HeaderMatch::Prefix(v),
        Some(StringMatch::Regex(v)) => HeaderMatch::Regex(v),
        None => HeaderMatch::Present,
    }
}

fn header_map(m: &BTreeMap<String, vs::StringMatch>) -> BTreeMap<String, HeaderMatch> {
    m.iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), header_match(v)))
        .collect()
}

fn header_ops(h: Option<&vs::HeaderOperations>) -> HeaderOps {
    h.map(|h| HeaderOps {
        set: h.set.clone(),
        add: h.add.clone(),
        remove: h.remove.clone(),
    })
    .unwrap_or_default()
}

fn headers(h: Option<&vs::Headers>) -> Headers {
    Headers {
        request: header_ops(h.and_then(|h| h.request.as_ref())),
        response: header_ops(h.and_then(|h| h.response.as_ref())),
    }
}

/// Resolves a destination to (host, subset, port, cluster). Port: the
/// explicit one, else the destination service's only port, else the port
/// the traffic arrived on.
pub(crate) fn resolve_destination(
    d: &Destination,
    ns: &str,
    listener_port: u16,
    services: &BTreeMap<String, Service>,
) -> (String, String, u16, String) {
    let host = hosts::resolve(&d.host, ns);
    let subset = d.subset.clone().unwrap_or_default();
    let port = match &d.port {
        Some(p) if p.number != 0 => p.number as u16,
        _ => match services.get(&host) {
            Some(s) if s.ports.len() == 1 => s.ports[0].port,
            _ => listener_port,
        },
    };
    let cluster = cluster_name(port, &subset, &host);
    (host, subset, port, cluster)
}

/// Weight of one of `n` destinations (a lone destination without weight is 100).
fn weight(w: Option<i64>, n: usize) -> u32 {
    match w {
        Some(w) => w.clamp(0, u32::MAX as i64) as u32,
        None if n == 1 => 100,
        None => 0,
    }
}

fn pct(p: Option<&vs::Percent>, legacy: Option<i64>, default: f64) -> f64 {
    p.map(|p| p.value)
        .or(legacy.map(|v| v as f64))
        .unwrap_or(default)
        .clamp(0.0, 100.0)
}

/// Does a match apply to (port, gateway)? `vs_gws` are the VirtualService's
/// gateways, used when the match names none.
fn match_applies(
    port: Option<u32>,
    gws: &[String],
    ns: &str,
    on_port: u16,
    gateway: &str,
    vs_gws: &[String],
) -> bool {
    if let Some(p) = port {
        if p != on_port as u32 {
            return false;
        }
    }
    if gws.is_empty() {
        vs_gws.iter().any(|g| g == gateway)
    } else {
        gws.iter().any(|g| gateway_ref(g, ns) == gateway)
    }
}

/// Compiles the HTTP rules of one VirtualService for `port` on `gateway`.
pub(crate) fn http_routes(
    idx: &Index<'_>,
    res: &Resource,
    v: &VirtualService,
    port: u16,
    gateway: &str,
    services: &BTreeMap<String, Service>,
) -> Vec<HttpRoute> {
    let ns = res.namespace();
    let vs_gws = vs_gateways(res, v);
    let vs_name = format!("{ns}/{}", res.name());
    let mut out = Vec::new();
    for (r, owner) in super::delegate::expand(idx, res, v) {
        let r = r.as_ref();
        let matches: Vec<HttpMatch> = r
            .matches
            .iter()
            .filter(|m| match_applies(m.port, &m.gateways, ns, port, gateway, &vs_gws))
            .map(|m| HttpMatch {
                name: m.name.clone(),
                uri: m.uri.as_ref().and_then(string_match),
                scheme: m.scheme.as_ref().and_then(string_match),
                method: m.method.as_ref().and_then(string_match),
                authority: m.authority.as_ref().and_then(string_match),
                headers: header_map(&m.headers),
                without_headers: header_map(&m.without_headers),
                query_params: header_map(&m.query_params),
                port: m.port.map(|p| p as u16),
                source_labels: m.source_labels.clone(),
                source_namespace: m.source_namespace.clone(),
                gateways: m.gateways.iter().map(|g| gateway_ref(g, ns)).collect(),
                ignore_uri_case: m.ignore_uri_case,
            })
            .collect();
        if !r.matches.is_empty() && matches.is_empty() {
            continue;
        }
        if r.matches.is_empty() && !vs_gws.iter().any(|g| g == gateway) {
            continue;
        }
        let (name, dest_ns) = if std::ptr::eq(owner, res) {
            (vs_name.clone(), ns)
        } else {
            (
                format!("{}/{}", owner.namespace(), owner.name()),
                owner.namespace(),
            )
        };
        let mut matches = matches;
        matches.shrink_to_fit();
        out.push(http_route(
            r,
            &name,
            dest_ns,
            port,
            matches,
            services,
            &mesh_default_retries(&idx.mesh),
        ));
    }
    // Route tables live as long as the snapshot: no growth slack.
    out.shrink_to_fit();
    out
}

/// A VirtualService (or MeshConfig `defaultHttpRetryPolicy`) retry policy.
fn retries_from(rt: &crate::api::virtual_service::HttpRetry) -> Retries {
    Retries {
        attempts: rt.attempts.clamp(0, u32::MAX as i64) as u32,
        per_try_timeout_ms: rt.per_try_timeout.as_deref().and_then(|d| parse_ms(d).ok()),
        retry_on: rt
            .retry_on
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| Retries::default().retry_on),
        retry_remote_localities: rt.retry_remote_localities.unwrap_or(false),
    }
}

/// Retries of routes without a `retries` field: the MeshConfig's
/// `defaultHttpRetryPolicy`, else Istio's default ([`Retries::default`]).
pub(crate) fn mesh_default_retries(mesh: &crate::mesh::MeshConfig) -> Retries {
    mesh.default_http_retry_policy
        .as_ref()
        .map_or_else(Retries::default, retries_from)
}

fn http_route(
    r: &ApiHttpRoute,
    vs_name: &str,
    ns: &str,
    port: u16,
    matches: Vec<HttpMatch>,
    services: &BTreeMap<String, Service>,
    default_retries: &Retries,
) -> HttpRoute {
    let n = r.route.len();
    let route = r
        .route
        .iter()
        .map(|d| {
            let (host, subset, dport, cluster) =
                resolve_destination(&d.destination, ns, port, services);
            HttpRouteDestination {
                cluster,
                host,
                subset,
                port: dport,
                weight: weight(d.weight, n),
                headers: headers(d.headers.as_deref()),
            }
        })
        .collect();
    let mut mirrors = Vec::new();
    if let Some(m) = &r.mirror {
        let (host, subset, mport, cluster) = resolve_destination(m, ns, port, services);
        let percentage = pct(
            r.mirror_percentage.as_ref(),
            r.mirror_percent.or(r.mirror_percent_snake).map(i64::from),
            100.0,
        );
        mirrors.push(Mirror {
            cluster,
            host,
            subset,
            port: mport,
            percentage,
        });
    }
    for m in &r.mirrors {
        let (host, subset, mport, cluster) =
            resolve_destination(&m.destination, ns, port, services);
        let percentage = pct(m.percentage.as_ref(), None, 100.0);
        mirrors.push(Mirror {
            cluster,
            host,
            subset,
            port: mport,
            percentage,
        });
    }
    let retries = match &r.retries {
        None => default_retries.clone(),
        Some(rt) => retries_from(rt),
    };
    let fault = r.fault.as_ref().map(|f| Fault {
        delay: f.delay.as_ref().map(|d| FaultDelay {
            fixed_delay_ms: d
                .fixed_delay
                .as_deref()
                .and_then(|v| parse_ms(v).ok())
                .unwrap_or(0),
            percentage: pct(d.percentage.as_ref(), d.percent, 0.0),
        }),
        abort: f.abort.as_ref().and_then(|a| {
            let status = if let Some(s) = a.http_status {
                AbortStatus::Http(s.clamp(0, u16::MAX as i64) as u16)
            } else {
                AbortStatus::Grpc(a.grpc_status.clone()?)
            };
            Some(FaultAbort {
                status,
                percentage: pct(a.percentage.as_ref(), None, 0.0),
            })
        }),
    });
    HttpRoute {
        name: r.name.clone().unwrap_or_default(),
        virtual_service: vs_name.to_string(),
        matches,
        route,
        redirect: r.redirect.as_ref().map(|rd| Redirect {
            uri: rd.uri.clone(),
            authority: rd.authority.clone(),
            port: rd.port.map(|p| p as u16),
            derive_port: rd.derive_port.clone(),
            scheme: rd.scheme.clone(),
            redirect_code: rd.redirect_code.map(|c| c as u16).unwrap_or(301),
        }),
        direct_response: r.direct_response.as_ref().map(|d| DirectResponse {
            status: d.status as u16,
            body: d.body.as_ref().and_then(|b| match (&b.string, &b.bytes) {
                (Some(s), _) => Some(s.clone().into_bytes()),
                (None, Some(b64)) => base64::engine::general_purpose::STANDARD.decode(b64).ok(),
                _ => None,
            }),
        }),
        rewrite: r.rewrite.as_ref().map(|rw| Rewrite {
            uri: rw.uri.clone(),
            authority: rw.authority.clone(),
            uri_regex_rewrite: rw.uri_regex_rewrite.as_ref().map(|x| RegexRewrite {
                pattern: x.pattern.clone(),
                rewrite: x.rewrite.clone(),
            }),
        }),
        headers: headers(r.headers.as_deref()),
        fault,
        mirrors,
        retries,
        timeout_ms: r
            .timeout
            .as_deref()
            .and_then(|t| parse_ms(t).ok())
            .filter(|t| *t > 0),
        cors_policy: r.cors_policy.as_ref().map(|c| CorsPolicy {
            allow_origins: c
                .allow_origins
                .iter()
                .filter_map(string_match)
                .chain(c.allow_origin.iter().map(|o| StringMatch::Exact(o.clone())))
                .collect(),
            allow_methods: c.allow_methods.clone(),
            allow_headers: c.allow_headers.clone(),
            expose_headers: c.expose_headers.clone(),
            max_age_ms: c.max_age.as_deref().and_then(|d| parse_ms(d).ok()),
            allow_credentials: c.allow_credentials,
            unmatched_preflights: c.unmatched_preflights.clone(),
        }),
    }
}

fn weighted(
    rd: &[vs::RouteDestination],
    ns: &str,
    port: u16,
    services: &BTreeMap<String, Service>,
) -> Vec<WeightedCluster> {
    rd.iter()
        .map(|d| {
            let (host, subset, dport, cluster) =
                resolve_destination(&d.destination, ns, port, services);
            WeightedCluster {
                cluster,
                host,
                subset,
                port: dport,
                weight: weight(d.weight, rd.len()),
            }
        })
        .collect()
}

/// TCP and TLS rules of one VirtualService for `port` on `gateway`. A TCP
/// rule without matches applies wherever its VirtualService does; a TLS
/// one nowhere (SNI is required).
pub(crate) fn l4_routes(
    res: &Resource,
    v: &VirtualService,
    port: u16,
    gateway: &str,
    services: &BTreeMap<String, Service>,
) -> (Vec<TcpRoute>, Vec<TlsRoute>) {
    let on = (port, gateway);
    let tcp = v.tcp.iter().map(|r| (&r.matches[..], &r.route[..]));
    let tls = v.tls.iter().map(|r| (&r.matches[..], &r.route[..]));
    (
        rules(res, v, on, services, tcp),
        rules(res, v, on, services, tls),
    )
}

/// What TCP and TLS rules share: the rules of `v` (`rules`: each rule's
/// matches and destinations) for `port` on `gateway`, each with the
/// matches that apply there. A rule whose matches all apply elsewhere is
/// left out; so is one without matches, unless
/// [`L4Attributes::EMPTY_MATCHES_ALL`] and `v` binds `gateway`.
fn rules<'v, M: L4Attributes + 'v>(
    res: &Resource,
    v: &VirtualService,
    (port, gateway): (u16, &str),
    services: &BTreeMap<String, Service>,
    rules: impl Iterator<Item = (&'v [M], &'v [vs::RouteDestination])>,
) -> Vec<M::Route> {
    let ns = res.namespace();
    let vs_gws = vs_gateways(res, v);
    let mut out = Vec::new();
    for (given, route) in rules {
        let matches: Vec<L4Match> = given
            .iter()
            .filter(|m| match_applies(m.port(), m.gateways(), ns, port, gateway, &vs_gws))
            .map(|m| m.compile(ns))
            .collect();
        let applies = if given.is_empty() {
            M::EMPTY_MATCHES_ALL && vs_gws.iter().any(|g| g == gateway)
        } else {
            !matches.is_empty()
        };
        if !applies {
            continue;
        }
        out.push(M::route(
            format!("{ns}/{}", res.name()),
            matches,
            weighted(route, ns, port, services),
        ));
    }
    out.shrink_to_fit();
    out
}

/// A TCP (`L4MatchAttributes`) or TLS (`TLSMatchAttributes`) match: the
/// fields [`rules`] reads, which the two API types share, and what their
/// rules compile to.
trait L4Attributes {
    /// The compiled rule: [`TcpRoute`] or [`TlsRoute`].
    type Route;
    /// A rule without matches applies wherever its VirtualService does
    /// (TCP), or nowhere (TLS: SNI is required).
    const EMPTY_MATCHES_ALL: bool;
    /// `port`.
    fn port(&self) -> Option<u32>;
    /// `gateways`, as written.
    fn gateways(&self) -> &[String];
    /// The compiled match, gateways resolved in the VirtualService's `ns`.
    fn compile(&self, ns: &str) -> L4Match;
    /// The compiled rule of VirtualService `virtual_service` (`ns/name`).
    fn route(
        virtual_service: String,
        matches: Vec<L4Match>,
        route: Vec<WeightedCluster>,
    ) -> Self::Route;
}

/// Implements [`L4Attributes`] for an API match type (same field names,
/// no common type): its rule type, [`L4Attributes::EMPTY_MATCHES_ALL`], and
/// [`L4Match::sni_hosts`] from `$m`.
macro_rules! l4_attributes {
    ($t:ty => $route:ident, $empty_matches_all:expr, |$m:ident| $sni_hosts:expr) => {
        impl L4Attributes for $t {
            type Route = $route;
            const EMPTY_MATCHES_ALL: bool = $empty_matches_all;
            fn port(&self) -> Option<u32> {
                self.port
            }
            fn gateways(&self) -> &[String] {
                &self.gateways
            }
            fn compile(&self, ns: &str) -> L4Match {
                L4Match {
                    destination_subnets: self.destination_subnets.clone(),
                    port: self.port.map(|p| p as u16),
                    source_labels: self.source_labels.clone(),
                    source_namespace: self.source_namespace.clone(),
                    gateways: self.gateways.iter().map(|g| gateway_ref(g, ns)).collect(),
                    sni_hosts: {
                        let $m = self;
                        $sni_hosts
                    },
                }
            }
            fn route(
                virtual_service: String,
                matches: Vec<L4Match>,
                route: Vec<WeightedCluster>,
            ) -> $route {
                $route {
                    virtual_service,
                    matches,
                    route,
                }
            }
        }
    };
}
l4_attributes!(vs::L4MatchAttributes => TcpRoute, true, |_m| vec![]);
l4_attributes!(vs::TlsMatchAttributes => TlsRoute, false, |m| m.sni_hosts.clone());

/// The VirtualService that routes mesh traffic for `host`, if any.
pub(crate) fn mesh_vs_for<'a>(
    idx: &Index<'a>,
    host: &str,
) -> Option<(&'a Resource, &'a VirtualService)> {
    let mut best: Option<(usize, &'a Resource, &'a VirtualService, usize)> = None;
    for (h, i) in idx.vs_by_host.lookup(host) {
        let (r, v) = idx.virtual_services[i];
        if !vs_gateways(r, v).iter().any(|g| g == MESH) {
            continue;
        }
        let spec = if h == host { usize::MAX } else { h.len() };
        // Strictly greater: the first VirtualService (namespace/name order) wins ties.
        if best
            .as_ref()
            .is_none_or(|b| spec > b.0 || (spec == b.0 && i < b.3))
        {
            best = Some((spec, r, v, i));
        }
    }
    best.map(|(_, r, v, _)| (r, v))
}

/// The default route of a port: everything to the service-wide cluster.
fn default_routes(svc: &Service, port: u16, protocol: Protocol, retries: &Retries) -> Routes {
    let cluster = cluster_name(port, "", &svc.host);
    let mut r = Routes::default();
    if protocol.is_http() || protocol == Protocol::Unknown {
        r.http.push(HttpRoute {
            name: "default".into(),
            route: vec![HttpRouteDestination {
                cluster: cluster.clone(),
                host: svc.host.clone(),
                subset: String::new(),
                port,
                weight: 100,
                headers: Headers::default(),
            }],
            retries: retries.clone(),
            ..HttpRoute::default()
        });
    }
    if !protocol.is_http() {
        r.tcp.push(TcpRoute {
            virtual_service: String::new(),
            matches: vec![],
            route: vec![WeightedCluster {
                cluster,
                host: svc.host.clone(),
                subset: String::new(),
                port,
                weight: 100,
            }],
        });
    }
    r
}

/// Route tables for mesh traffic, for every port of every service.
pub(crate) fn mesh_routes(
    idx: &Index<'_>,
    services: &BTreeMap<String, Service>,
    _diags: &mut Vec<Diagnostic>,
) -> BTreeMap<String, BTreeMap<u16, Routes>> {
    let list: Vec<&Service> = services.values().collect();
    // Services are independent: compile them on every core.
    super::par::map(&list, |svc| {
        let vs = mesh_vs_for(idx, &svc.host);
        let mut per_port = BTreeMap::new();
        for p in &svc.ports {
            let mut routes = Routes::default();
            if let Some((r, v)) = vs {
                if p.protocol.is_http() || p.protocol == Protocol::Unknown {
                    routes.http = http_routes(idx, r, v, p.port, MESH, services);
                }
                (routes.tcp, routes.tls) = l4_routes(r, v, p.port, MESH, services);
            }
            let wants_http = p.protocol.is_http() || p.protocol == Protocol::Unknown;
            if (routes.http.is_empty() && wants_http)
                || (routes.tcp.is_empty() && !p.protocol.is_http())
            {
                let defaults =
                    default_routes(svc, p.port, p.protocol, &mesh_default_retries(&idx.mesh));
                if routes.http.is_empty() {
                    routes.http = defaults.http;
                }
                if routes.tcp.is_empty() {
                    routes.tcp = defaults.tcp;
                }
            }
            per_port.insert(p.port, routes);
        }
        (svc.host.clone(), per_port)
    })
    .into_iter()
    .collect()
}
