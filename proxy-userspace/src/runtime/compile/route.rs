//! VirtualService-derived route tables: matches compiled (regexes
//! anchored), header operations parsed, destinations resolved to clusters.
use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use strait_config::snapshot as snap;

use super::{err, lookup, CompileError};
use crate::runtime::route::actions::{convert_substitution, grpc_code, AbortStatus, RetryOn};
use crate::runtime::route::{
    CorsPolicy, Fault, FaultAbort, HeaderOps, HttpMatch, HttpRoute, L4Match, L4Route, Mirror,
    Redirect, RetryPolicy, Rewrite, RouteAction, RouteTable, StringMatch, WeightedCluster,
    WeightedClusters,
};
use crate::runtime::table::ClusterIds;

pub(super) fn route_table(
    loc: &str,
    r: &snap::Routes,
    clusters: &ClusterIds,
) -> Result<RouteTable, CompileError> {
    let mut http = Vec::with_capacity(r.http.len());
    for (i, h) in r.http.iter().enumerate() {
        http.push(http_route(&format!("{loc} http[{i}]"), h, clusters)?);
    }
    let l4 = |kind: &str, rules: &[(Vec<snap::L4Match>, Vec<snap::WeightedCluster>)]| {
        rules
            .iter()
            .enumerate()
            .map(|(i, (m, w))| l4_route(&format!("{loc} {kind}[{i}]"), m, w, clusters))
            .collect::<Result<Vec<_>, _>>()
    };
    let tcp: Vec<_> = r
        .tcp
        .iter()
        .map(|t| (t.matches.clone(), t.route.clone()))
        .collect();
    let tls: Vec<_> = r
        .tls
        .iter()
        .map(|t| (t.matches.clone(), t.route.clone()))
        .collect();
    Ok(RouteTable {
        http,
        tcp: l4("tcp", &tcp)?,
        tls: l4("tls", &tls)?,
    })
}

fn l4_route(
    loc: &str,
    matches: &[snap::L4Match],
    route: &[snap::WeightedCluster],
    clusters: &ClusterIds,
) -> Result<L4Route, CompileError> {
    let mut ms = Vec::new();
    for (i, m) in matches.iter().enumerate() {
        let mut subnets = Vec::new();
        for (j, s) in m.destination_subnets.iter().enumerate() {
            subnets.push(parse_cidr(s).ok_or_else(|| {
                err(
                    loc,
                    format!("match[{i}].destinationSubnets[{j}]"),
                    format!("invalid CIDR {s:?}"),
                )
            })?);
        }
        ms.push(L4Match {
            port: m.port,
            destination_subnets: subnets,
            sni_hosts: m.sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            source_labels: m.source_labels.clone(),
            source_namespace: m.source_namespace.clone(),
        });
    }
    let mut dests = Vec::new();
    for (i, w) in route.iter().enumerate() {
        dests.push(WeightedCluster {
            cluster: lookup(clusters, loc, &format!("route[{i}]"), &w.cluster)?,
            weight: w.weight,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
        });
    }
    Ok(L4Route {
        matches: ms,
        route: WeightedClusters::new(dests),
    })
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    match s.split_once('/') {
        Some((ip, len)) => {
            let ip: IpAddr = ip.parse().ok()?;
            let len: u8 = len.parse().ok()?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            (len <= max).then_some((ip, len))
        }
        None => {
            let ip: IpAddr = s.parse().ok()?;
            Some((ip, if ip.is_ipv4() { 32 } else { 128 }))
        }
    }
}

fn string_match(
    loc: &str,
    field: &str,
    m: &snap::StringMatch,
) -> Result<StringMatch, CompileError> {
    Ok(match m {
        snap::StringMatch::Exact(s) => StringMatch::Exact(s.clone()),
        snap::StringMatch::Prefix(s) => StringMatch::Prefix(s.clone()),
        snap::StringMatch::Regex(r) => {
            StringMatch::regex(r).map_err(|e| err(loc, format!("{field}.regex"), e))?
        }
    })
}

fn header_match(
    loc: &str,
    field: &str,
    m: &snap::HeaderMatch,
) -> Result<StringMatch, CompileError> {
    Ok(match m {
        snap::HeaderMatch::Exact(s) => StringMatch::Exact(s.clone()),
        snap::HeaderMatch::Prefix(s) => StringMatch::Prefix(s.clone()),
        snap::HeaderMatch::Regex(r) => {
            StringMatch::regex(r).map_err(|e| err(loc, format!("{field}.regex"), e))?
        }
        snap::HeaderMatch::Present => StringMatch::Present,
    })
}

fn header_name(loc: &str, field: &str, n: &str) -> Result<HeaderName, CompileError> {
    HeaderName::try_from(n.to_ascii_lowercase()).map_err(|e| err(loc, field, e))
}

fn header_value(loc: &str, field: &str, v: &str) -> Result<HeaderValue, CompileError> {
    HeaderValue::from_str(v).map_err(|e| err(loc, field, e))
}

fn header_ops(loc: &str, field: &str, o: &snap::HeaderOps) -> Result<HeaderOps, CompileError> {
    let pairs = |kind: &str, m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| {
                let f = format!("{field}.{kind}.{k}");
                Ok((header_name(loc, &f, k)?, header_value(loc, &f, v)?))
            })
            .collect::<Result<Vec<_>, CompileError>>()
    };
    Ok(HeaderOps {
        set: pairs("set", &o.set)?,
        add: pairs("add", &o.add)?,
        remove: o
            .remove
            .iter()
            .map(|k| header_name(loc, &format!("{field}.remove"), k))
            .collect::<Result<_, _>>()?,
    })
}

fn http_match(loc: &str, i: usize, m: &snap::HttpMatch) -> Result<HttpMatch, CompileError> {
    let f = |s: &str| format!("match[{i}].{s}");
    let opt = |field: &str, v: &Option<snap::StringMatch>| {
        v.as_ref()
            .map(|m| string_match(loc, &f(field), m))
            .transpose()
    };
    let headers = |field: &str, map: &std::collections::BTreeMap<String, snap::HeaderMatch>| {
        map.iter()
            .map(|(k, v)| {
                let ff = f(&format!("{field}.{k}"));
                Ok((header_name(loc, &ff, k)?, header_match(loc, &ff, v)?))
            })
            .collect::<Result<Vec<_>, CompileError>>()
    };
    Ok(HttpMatch {
        name: m.name.clone(),
        uri: opt("uri", &m.uri)?,
        scheme: opt("scheme", &m.scheme)?,
        method: opt("method", &m.method)?,
        authority: opt("authority", &m.authority)?,
        headers: headers("headers", &m.headers)?,
        without_headers: headers("withoutHeaders", &m.without_headers)?,
        query_params: m
            .query_params
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    header_match(loc, &f(&format!("queryParams.{k}")), v)?,
                ))
            })
            .collect::<Result<_, CompileError>>()?,
        port: m.port,
        source_labels: m.source_labels.clone(),
        source_namespace: m.source_namespace.clone(),
        ignore_uri_case: m.ignore_uri_case,
    })
}

fn http_route(
    loc: &str,
    h: &snap::HttpRoute,
    clusters: &ClusterIds,
) -> Result<HttpRoute, CompileError> {
    let matches = h
        .matches
        .iter()
        .enumerate()
        .map(|(i, m)| http_match(loc, i, m))
        .collect::<Result<_, _>>()?;
    let action = if let Some(r) = &h.redirect {
        RouteAction::Redirect(Redirect {
            uri: r.uri.clone(),
            authority: r.authority.clone(),
            port: r.port,
            port_from_protocol_default: r.derive_port.as_deref() == Some("FROM_PROTOCOL_DEFAULT"),
            scheme: r.scheme.clone(),
            code: StatusCode::from_u16(if r.redirect_code == 0 {
                301
            } else {
                r.redirect_code
            })
            .map_err(|e| err(loc, "redirect.redirectCode", e))?,
        })
    } else if let Some(d) = &h.direct_response {
        RouteAction::DirectResponse {
            status: StatusCode::from_u16(d.status)
                .map_err(|e| err(loc, "directResponse.status", e))?,
            body: d.body.clone().unwrap_or_default().into(),
        }
    } else {
        let mut dests = Vec::new();
        for (i, d) in h.route.iter().enumerate() {
            let f = format!("route[{i}]");
            dests.push(WeightedCluster {
                cluster: lookup(clusters, loc, &f, &d.cluster)?,
                weight: d.weight,
                request_headers: header_ops(
                    loc,
                    &format!("{f}.headers.request"),
                    &d.headers.request,
                )?,
                response_headers: header_ops(
                    loc,
                    &format!("{f}.headers.response"),
                    &d.headers.response,
                )?,
            });
        }
        RouteAction::Forward(WeightedClusters::new(dests))
    };
    let rewrite = h
        .rewrite
        .as_ref()
        .map(|r| -> Result<Rewrite, CompileError> {
            Ok(Rewrite {
                uri: r.uri.clone(),
                uri_regex: r
                    .uri_regex_rewrite
                    .as_ref()
                    .map(|rr| {
                        regex::Regex::new(&rr.pattern)
                            .map(|re| (re, convert_substitution(&rr.rewrite)))
                            .map_err(|e| err(loc, "rewrite.uriRegexRewrite.match", e))
                    })
                    .transpose()?,
                authority: r
                    .authority
                    .as_deref()
                    .map(|a| header_value(loc, "rewrite.authority", a))
                    .transpose()?,
            })
        })
        .transpose()?;
    let fault = h
        .fault
        .as_ref()
        .map(|f| -> Result<Fault, CompileError> {
            Ok(Fault {
                delay: f
                    .delay
                    .as_ref()
                    .map(|d| (d.percentage, Duration::from_millis(d.fixed_delay_ms))),
                abort: f
                    .abort
                    .as_ref()
                    .map(|a| -> Result<FaultAbort, CompileError> {
                        Ok(FaultAbort {
                            percent: a.percentage,
                            status: match &a.status {
                                snap::AbortStatus::Http(c) => AbortStatus::Http(*c),
                                snap::AbortStatus::Grpc(name) => {
                                    AbortStatus::Grpc(grpc_code(name).ok_or_else(|| {
                                        err(loc, "fault.abort.grpcStatus", "unknown gRPC status")
                                    })?)
                                }
                            },
                        })
                    })
                    .transpose()?,
            })
        })
        .transpose()?;
    let mirrors = h
        .mirrors
        .iter()
        .enumerate()
        .map(|(i, m)| {
            Ok(Mirror {
                cluster: lookup(clusters, loc, &format!("mirrors[{i}]"), &m.cluster)?,
                percent: m.percentage,
            })
        })
        .collect::<Result<_, CompileError>>()?;
    let mut codes = Vec::new();
    let retry_on = RetryOn::parse(&h.retries.retry_on, &mut codes)
        .map_err(|e| err(loc, "retries.retryOn", e))?;
    if retry_on.contains(RetryOn::RETRIABLE_STATUS_CODES) && codes.is_empty() {
        // Istio's default policy lists 503 as the retriable status.
        codes.push(503);
    }
    let retries = RetryPolicy {
        attempts: h.retries.attempts,
        per_try_timeout: h.retries.per_try_timeout_ms.map(Duration::from_millis),
        retry_on,
        retriable_status_codes: codes,
    };
    let cors = h
        .cors_policy
        .as_ref()
        .map(|c| cors_policy(loc, c))
        .transpose()?;
    let name = if !h.name.is_empty() {
        Some(h.name.as_str().into())
    } else if h.virtual_service.is_empty() {
        Some("default".into())
    } else {
        None
    };
    Ok(HttpRoute {
        name,
        matches,
        action,
        rewrite,
        request_headers: header_ops(loc, "headers.request", &h.headers.request)?,
        response_headers: header_ops(loc, "headers.response", &h.headers.response)?,
        fault,
        mirrors,
        retries,
        timeout: h.timeout_ms.filter(|t| *t > 0).map(Duration::from_millis),
        cors,
    })
}

fn cors_policy(loc: &str, c: &snap::CorsPolicy) -> Result<CorsPolicy, CompileError> {
    let join = |field: &str, v: &[String]| {
        (!v.is_empty())
            .then(|| header_value(loc, field, &v.join(",")))
            .transpose()
    };
    Ok(CorsPolicy {
        allow_origins: c
            .allow_origins
            .iter()
            .map(|m| string_match(loc, "corsPolicy.allowOrigins", m))
            .collect::<Result<_, _>>()?,
        allow_methods: join("corsPolicy.allowMethods", &c.allow_methods)?,
        allow_headers: join("corsPolicy.allowHeaders", &c.allow_headers)?,
        expose_headers: join("corsPolicy.exposeHeaders", &c.expose_headers)?,
        max_age: c.max_age_ms.map(|ms| HeaderValue::from(ms / 1000)),
        allow_credentials: c.allow_credentials.unwrap_or(false),
    })
}
