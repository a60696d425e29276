//! VirtualService validation (Istio's `ValidateVirtualService`).
use super::common::{
    validate_duration, validate_export_to, validate_header_name, validate_ip_subnet,
    validate_labels, validate_port, validate_regex, validate_wildcard_domain,
};
use super::Report;
use crate::api::virtual_service::{
    Destination, Headers, HttpRoute, HttpRouteDestination, Percent, RouteDestination, StringMatch,
    VirtualService,
};
use crate::hosts;

const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

/// gRPC status names Istio accepts for `abort.grpcStatus`, indexed by
/// their numeric code (`UNAVAILABLE` is 14).
pub const GRPC_STATUS: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

fn applies_to_gateway(v: &VirtualService) -> bool {
    !v.gateways.is_empty() && !v.gateways.iter().any(|g| g == "mesh")
}

/// Validates a VirtualService spec.
pub(crate) fn validate(r: &mut Report<'_>, v: &VirtualService) {
    if v.hosts.is_empty() {
        if !v.gateways.is_empty() {
            r.err(
                "spec.gateways",
                "delegate virtual service must have no gateways specified",
            );
        }
        if !v.tls.is_empty() {
            r.err(
                "spec.tls",
                "delegate virtual service must have no tls route specified",
            );
        }
        if !v.tcp.is_empty() {
            r.err(
                "spec.tcp",
                "delegate virtual service must have no tcp route specified",
            );
        }
    }
    let gateway = applies_to_gateway(v);
    for (i, g) in v.gateways.iter().enumerate() {
        gateway_name(r, &format!("spec.gateways[{i}]"), g);
    }
    let mut all_valid = true;
    for (i, h) in v.hosts.iter().enumerate() {
        let f = format!("spec.hosts[{i}]");
        match validate_wildcard_domain(h) {
            Err(e) if h.parse::<std::net::IpAddr>().is_err() => {
                r.err(f, e);
                all_valid = false;
            }
            Ok(()) if !gateway && h == "*" => {
                r.err(
                    f,
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                );
                all_valid = false;
            }
            _ => {}
        }
    }
    if all_valid {
        for i in 0..v.hosts.len() {
            for j in i + 1..v.hosts.len() {
                let (a, b) = (&v.hosts[i], &v.hosts[j]);
                if hosts::matches(a, b) || hosts::matches(b, a) {
                    r.err(
                        "spec.hosts",
                        format!("duplicate hosts in virtual service: {a} & {b}"),
                    );
                }
            }
        }
    }
    if v.http.is_empty() && v.tcp.is_empty() && v.tls.is_empty() {
        r.err(
            "spec",
            "http, tcp or tls must be provided in virtual service",
        );
    }
    for (i, h) in v.http.iter().enumerate() {
        http_route(r, &format!("spec.http[{i}]"), h, v.hosts.is_empty());
    }
    for (i, t) in v.tls.iter().enumerate() {
        let f = format!("spec.tls[{i}]");
        if t.matches.is_empty() {
            r.err(&f, "TLS route must have at least one match condition");
        }
        for (j, m) in t.matches.iter().enumerate() {
            let mf = format!("{f}.match[{j}]");
            if m.sni_hosts.is_empty() {
                r.err(&mf, "TLS match must have at least one SNI host");
            }
            for (k, sni) in m.sni_hosts.iter().enumerate() {
                let sf = format!("{mf}.sniHosts[{k}]");
                if let Err(e) = validate_wildcard_domain(sni) {
                    if sni.parse::<std::net::IpAddr>().is_err() {
                        r.err(sf, e);
                    }
                } else if !v.hosts.iter().any(|h| hosts::matches(h, sni) || h == sni) {
                    r.err(
                        sf,
                        format!(
                            "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                            v.hosts.join(", ")
                        ),
                    );
                }
            }
            l4_match(
                r,
                &mf,
                &m.destination_subnets,
                m.port,
                &m.source_labels,
                &m.gateways,
            );
        }
        if t.route.is_empty() {
            r.err(&f, "TLS route is required");
        }
        route_destinations(r, &f, &t.route);
    }
    for (i, t) in v.tcp.iter().enumerate() {
        let f = format!("spec.tcp[{i}]");
        for (j, m) in t.matches.iter().enumerate() {
            l4_match(
                r,
                &format!("{f}.match[{j}]"),
                &m.destination_subnets,
                m.port,
                &m.source_labels,
                &m.gateways,
            );
        }
        if t.route.is_empty() {
            r.err(&f, "TCP route is required");
        }
        route_destinations(r, &f, &t.route);
    }
    let ns = r.namespace().to_string();
    r.check(
        "spec.exportTo",
        validate_export_to(&ns, &v.export_to, false),
    );
}

fn gateway_name(r: &mut Report<'_>, f: &str, g: &str) {
    match g.split_once('/') {
        None => {
            if let Err(e) = validate_wildcard_domain(g) {
                r.err(f, e);
            }
        }
        Some((ns, name)) => {
            if ns.is_empty() || name.is_empty() {
                r.err(f, "config namespace and gateway name cannot be empty");
            } else {
                if !super::common::is_dns1123_label(ns) {
                    r.err(f, format!("invalid value for namespace: {ns:?}"));
                }
                if !super::common::is_dns1123_label(name) {
                    r.err(f, format!("invalid value for gateway name: {name:?}"));
                }
            }
        }
    }
}

fn l4_match(
    r: &mut Report<'_>,
    f: &str,
    subnets: &[String],
    port: Option<u32>,
    labels: &std::collections::BTreeMap<String, String>,
    gateways: &[String],
) {
    for (k, s) in subnets.iter().enumerate() {
        r.check(
            format!("{f}.destinationSubnets[{k}]"),
            validate_ip_subnet(s),
        );
    }
    if let Some(p) = port.filter(|p| *p != 0) {
        r.check(format!("{f}.port"), validate_port(p as i64));
    }
    r.check(format!("{f}.sourceLabels"), validate_labels(labels));
    for (k, g) in gateways.iter().enumerate() {
        gateway_name(r, &format!("{f}.gateways[{k}]"), g);
    }
}

fn string_match(r: &mut Report<'_>, f: &str, m: &StringMatch, where_: &str, allow_empty: bool) {
    let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set > 1 {
        r.err(f, "only one of exact, prefix or regex may be set");
    }
    if set == 0 && !allow_empty {
        r.err(
            f,
            format!("{where_:?}: a match type (exact, prefix or regex) is required"),
        );
    }
    if let Some(p) = &m.prefix {
        if p.is_empty() && where_ == "uri" {
            r.err(
                f,
                format!("{where_:?}: prefix string match should not be empty"),
            );
        }
    }
    if let Some(re) = &m.regex {
        if re.is_empty() {
            r.err(
                f,
                format!("{where_:?}: regex string match should not be empty"),
            );
        } else {
            r.check(f, validate_regex(re, where_));
        }
    }
}

fn header_ops(r: &mut Report<'_>, f: &str, h: Option<&Headers>) {
    let Some(h) = h else { return };
    for (dir, ops) in [("request", &h.request), ("response", &h.response)] {
        let Some(ops) = ops else { continue };
        let request = dir == "request";
        for (op, names) in [
            ("set", ops.set.keys().collect::<Vec<_>>()),
            ("add", ops.add.keys().collect()),
            ("remove", ops.remove.iter().collect()),
        ] {
            for n in names {
                let fld = format!("{f}.headers.{dir}.{op}");
                if n.is_empty() {
                    r.err(fld, "header name cannot be empty");
                } else if !request || op == "remove" {
                    if n.eq_ignore_ascii_case("host") {
                        r.err(fld, format!("invalid header {n:?}: cannot set Host header"));
                    } else if n.starts_with(':') {
                        r.err(
                            fld,
                            format!("invalid header {n:?}: header cannot have \":\" prefix"),
                        );
                    }
                } else if n.starts_with(':') && !n.eq_ignore_ascii_case(":authority") {
                    r.err(
                        fld,
                        format!("invalid header {n:?}: header cannot have \":\" prefix"),
                    );
                }
            }
        }
        for (op, vals) in [("set", &ops.set), ("add", &ops.add)] {
            for v in vals.values() {
                if v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                    r.err(
                        format!("{f}.headers.{dir}.{op}"),
                        format!("header value configuration {v} is invalid"),
                    );
                }
            }
        }
    }
}

fn percentage(r: &mut Report<'_>, f: &str, p: &Option<Percent>) {
    if let Some(p) = p {
        let v = p.value;
        if !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
            r.err(
                f,
                format!("percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"),
            );
        }
    }
}

fn destination(r: &mut Report<'_>, f: &str, d: &Destination) {
    if d.host == "*" {
        r.err(format!("{f}.host"), "invalid destination host *");
    } else {
        r.check(format!("{f}.host"), validate_wildcard_domain(&d.host));
    }
    if let Some(s) = &d.subset {
        r.check(format!("{f}.subset"), validate_subset_name(s));
    }
    if let Some(p) = &d.port {
        r.check(format!("{f}.port.number"), validate_port(p.number as i64));
    }
}

/// `subset name cannot be empty` / `subset name is invalid: v1.0`.
pub(crate) fn validate_subset_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("subset name cannot be empty".into());
    }
    if !super::common::is_dns1123_label(s) {
        return Err(format!("subset name is invalid: {s}"));
    }
    Ok(())
}

fn weights(r: &mut Report<'_>, f: &str, ws: impl Iterator<Item = Option<i64>>) {
    let mut total = 0i64;
    let mut n = 0;
    for (i, w) in ws.enumerate() {
        n += 1;
        let w = w.unwrap_or(0);
        if w < 0 {
            r.err(format!("{f}.route[{i}].weight"), format!("weight {w} < 0"));
        }
        total += w;
    }
    if n > 1 && total == 0 {
        r.err(format!("{f}.route"), "total destination weight = 0");
    }
}

fn route_destinations(r: &mut Report<'_>, f: &str, rd: &[RouteDestination]) {
    for (i, d) in rd.iter().enumerate() {
        destination(r, &format!("{f}.route[{i}].destination"), &d.destination);
    }
    weights(r, f, rd.iter().map(|d| d.weight));
}

fn http_destinations(r: &mut Report<'_>, f: &str, rd: &[HttpRouteDestination]) {
    for (i, d) in rd.iter().enumerate() {
        let df = format!("{f}.route[{i}]");
        destination(r, &format!("{df}.destination"), &d.destination);
        header_ops(r, &df, d.headers.as_deref());
    }
    weights(r, f, rd.iter().map(|d| d.weight));
}

fn http_route(r: &mut Report<'_>, f: &str, h: &HttpRoute, delegate: bool) {
    let root = h.delegate.is_some();
    if root {
        if h.redirect.is_some() {
            r.err(
                f,
                format!(
                    "root HTTP route {} must not specify redirect",
                    h.name.as_deref().unwrap_or("")
                ),
            );
        }
        if !h.route.is_empty() {
            r.err(
                f,
                format!(
                    "root HTTP route {} must not specify route",
                    h.name.as_deref().unwrap_or("")
                ),
            );
        }
    } else {
        if delegate && h.delegate.is_some() {
            r.err(f, "delegate HTTP route cannot contain delegate");
        }
        if h.redirect.is_some() {
            if !h.route.is_empty() {
                r.err(f, "HTTP route cannot contain both route and redirect");
            }
            if h.fault.is_some() {
                r.err(f, "HTTP route cannot contain both fault and redirect");
            }
            if h.rewrite.is_some() {
                r.err(
                    f,
                    "HTTP route rule cannot contain both rewrite and redirect",
                );
            }
            if h.direct_response.is_some() {
                r.err(
                    f,
                    "HTTP route cannot contain both redirect and direct_response",
                );
            }
        } else if h.direct_response.is_some() {
            if !h.route.is_empty() {
                r.err(
                    f,
                    "HTTP route cannot contain both route and direct_response",
                );
            }
            if h.fault.is_some() {
                r.err(
                    f,
                    "HTTP route cannot contain both fault and direct_response",
                );
            }
            if h.rewrite.is_some() {
                r.err(
                    f,
                    "HTTP route rule cannot contain both rewrite and direct_response",
                );
            }
        } else if h.route.is_empty() {
            r.err(f, "HTTP route, redirect or direct_response is required");
        }
    }
    for (i, m) in h.matches.iter().enumerate() {
        let mf = format!("{f}.match[{i}]");
        for (name, sm) in &m.headers {
            r.check(format!("{mf}.headers"), validate_header_name(name));
            string_match(r, &format!("{mf}.headers.{name}"), sm, "headers", true);
        }
        for (name, sm) in &m.without_headers {
            r.check(format!("{mf}.withoutHeaders"), validate_header_name(name));
            string_match(
                r,
                &format!("{mf}.withoutHeaders.{name}"),
                sm,
                "withoutHeaders",
                true,
            );
        }
        for (name, sm) in &m.query_params {
            string_match(
                r,
                &format!("{mf}.queryParams.{name}"),
                sm,
                "queryParams",
                true,
            );
        }
        for (what, sm) in [
            ("uri", &m.uri),
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(sm) = sm {
                string_match(r, &format!("{mf}.{what}"), sm, what, false);
            }
        }
        if let Some(p) = m.port.filter(|p| *p != 0) {
            r.check(format!("{mf}.port"), validate_port(p as i64));
        }
        r.check(
            format!("{mf}.sourceLabels"),
            validate_labels(&m.source_labels),
        );
        for (k, g) in m.gateways.iter().enumerate() {
            gateway_name(r, &format!("{mf}.gateways[{k}]"), g);
        }
        if let Some(ns) = &m.source_namespace {
            if !super::common::is_dns1123_label(ns) {
                r.err(
                    format!("{mf}.sourceNamespace"),
                    format!("sourceNamespace match {ns} is invalid"),
                );
            }
        }
    }
    header_ops(r, f, h.headers.as_deref());
    if let Some(c) = &h.cors_policy {
        let cf = format!("{f}.corsPolicy");
        for (i, o) in c.allow_origins.iter().enumerate() {
            let val = o
                .exact
                .as_deref()
                .or(o.prefix.as_deref())
                .or(o.regex.as_deref())
                .unwrap_or("");
            if val.is_empty() {
                r.err(
                    format!("{cf}.allowOrigins[{i}]"),
                    format!("'{val}' is not a valid match type for CORS allow origins"),
                );
            } else if let Some(re) = &o.regex {
                r.check(
                    format!("{cf}.allowOrigins[{i}]"),
                    validate_regex(re, "corsPolicy.allowOrigins"),
                );
            }
        }
        for m in &c.allow_methods {
            if !METHODS.contains(&m.as_str()) {
                r.err(
                    format!("{cf}.allowMethods"),
                    format!("{m:?} is not a supported HTTP method"),
                );
            }
        }
        for (what, list) in [
            ("allowHeaders", &c.allow_headers),
            ("exposeHeaders", &c.expose_headers),
        ] {
            for n in list.iter().filter(|n| n.as_str() != "*") {
                r.check(format!("{cf}.{what}"), validate_header_name(n));
            }
        }
        if let Some(ma) = &c.max_age {
            r.check(format!("{cf}.maxAge"), validate_duration(ma));
            if crate::duration::parse(ma).is_ok_and(|d| d.subsec_nanos() > 0) {
                r.err(
                    format!("{cf}.maxAge"),
                    "max_age duration is accurate only to seconds precision",
                );
            }
        }
    }
    if let Some(fault) = &h.fault {
        let ff = format!("{f}.fault");
        if fault.abort.is_none() && fault.delay.is_none() {
            r.err(
                &ff,
                "HTTP fault injection must have an abort and/or a delay",
            );
        }
        if let Some(a) = &fault.abort {
            percentage(r, &format!("{ff}.abort.percentage"), &a.percentage);
            if let Some(s) = a.http_status {
                if !(200..=600).contains(&s) {
                    r.err(
                        format!("{ff}.abort.httpStatus"),
                        format!("HTTP status {s} is not in range 200-599"),
                    );
                }
            } else if let Some(g) = &a.grpc_status {
                if !GRPC_STATUS.contains(&g.as_str()) {
                    r.err(format!("{ff}.abort.grpcStatus"), format!("gRPC status {g:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"));
                }
            } else if a.http2_error.is_some() {
                r.err(
                    format!("{ff}.abort.http2Error"),
                    "HTTP/2 abort fault injection not supported yet",
                );
            } else {
                r.warn(
                    format!("{ff}.abort"),
                    "abort configured, but error type not set",
                );
            }
        }
        if let Some(d) = &fault.delay {
            percentage(r, &format!("{ff}.delay.percentage"), &d.percentage);
            if let Some(p) = d.percent {
                if !(0..=100).contains(&p) {
                    r.err(
                        format!("{ff}.delay.percent"),
                        format!("percentage {p} is not in range 0..100"),
                    );
                }
            }
            if let Some(fd) = &d.fixed_delay {
                r.check(format!("{ff}.delay.fixedDelay"), validate_duration(fd));
            }
            if d.exponential_delay.is_some() {
                r.err(
                    format!("{ff}.delay.exponentialDelay"),
                    "exponentialDelay not supported yet",
                );
            }
        }
    }
    if let Some(p) = h.mirror_percent.or(h.mirror_percent_snake) {
        if p > 100 {
            r.err(
                format!("{f}.mirrorPercent"),
                format!("mirror_percent must have a max value of 100 (it has {p})"),
            );
        }
        r.warn(
            format!("{f}.mirrorPercent"),
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
    }
    if let Some(p) = &h.mirror_percentage {
        if p.value > 100.0 {
            r.err(
                format!("{f}.mirrorPercentage"),
                format!(
                    "mirror_percentage must have a max value of 100 (it has {:.6})",
                    p.value
                ),
            );
        }
        if p.value < 0.0 {
            r.err(
                format!("{f}.mirrorPercentage"),
                format!(
                    "mirror_percentage must have a min value of 0 (it has {:.6})",
                    p.value
                ),
            );
        }
    }
    if let Some(m) = &h.mirror {
        destination(r, &format!("{f}.mirror"), m);
    }
    for (i, m) in h.mirrors.iter().enumerate() {
        destination(r, &format!("{f}.mirrors[{i}].destination"), &m.destination);
        if let Some(p) = &m.percentage {
            if p.value > 100.0 {
                r.err(
                    format!("{f}.mirrors[{i}].percentage"),
                    format!(
                        "mirror percentage must have a max value of 100 (it has {:.6})",
                        p.value
                    ),
                );
            }
            if p.value < 0.0 {
                r.err(
                    format!("{f}.mirrors[{i}].percentage"),
                    format!(
                        "mirror percentage must have a min value of 0 (it has {:.6})",
                        p.value
                    ),
                );
            }
        }
    }
    if let Some(rd) = &h.redirect {
        let rf = format!("{f}.redirect");
        if rd.uri.as_deref().unwrap_or("").is_empty()
            && rd.authority.as_deref().unwrap_or("").is_empty()
            && rd.port.is_none()
            && rd.derive_port.is_none()
            && rd.scheme.as_deref().unwrap_or("").is_empty()
        {
            r.err(&rf, "redirect must specify URI, authority, scheme, or port");
        }
        if let Some(c) = rd.redirect_code.filter(|c| *c != 0) {
            if !(300..=399).contains(&c) {
                r.err(
                    format!("{rf}.redirectCode"),
                    format!("{c} is not a valid redirect code, must be 3xx"),
                );
            }
        }
        if let Some(s) = rd.scheme.as_deref().filter(|s| !s.is_empty()) {
            if s != "http" && s != "https" {
                r.err(
                    format!("{rf}.scheme"),
                    "invalid redirect scheme, must be \"http\" or \"https\"",
                );
            }
        }
        if let Some(p) = rd.port.filter(|p| *p > 0) {
            r.check(format!("{rf}.port"), validate_port(p as i64));
        }
    }
    if let Some(dr) = &h.direct_response {
        let body_len = dr
            .body
            .as_ref()
            .map(|b| {
                b.string
                    .as_deref()
                    .or(b.bytes.as_deref())
                    .map_or(0, str::len)
            })
            .unwrap_or(0);
        if body_len > 1024 * 1024 {
            r.err(format!("{f}.directResponse.body"), "large direct_responses may impact control plane performance, must be less than 1MB");
        }
        if !(200..=600).contains(&dr.status) {
            r.err(
                format!("{f}.directResponse.status"),
                format!("HTTP status {} is not in range 200-599", dr.status),
            );
        }
    }
    if let Some(rt) = &h.retries {
        let rf = format!("{f}.retries");
        if rt.attempts < 0 {
            r.err(format!("{rf}.attempts"), "attempts cannot be negative");
        }
        if rt.attempts == 0
            && (rt.per_try_timeout.is_some()
                || rt.retry_on.as_deref().is_some_and(|s| !s.is_empty())
                || rt.retry_remote_localities.is_some())
        {
            r.err(
                &rf,
                "http retry policy configured when attempts are set to 0 (disabled)",
            );
        }
        if let Some(t) = &rt.per_try_timeout {
            r.check(format!("{rf}.perTryTimeout"), validate_duration(t));
        }
        if let Some(on) = rt.retry_on.as_deref().filter(|s| !s.is_empty()) {
            for p in on.split(',') {
                let status = p.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c));
                if !status && !RETRY_ON.contains(&p) {
                    r.err(
                        format!("{rf}.retryOn"),
                        format!("{p:?} is not a valid retryOn policy"),
                    );
                }
            }
        }
    }
    if let Some(rw) = &h.rewrite {
        let rf = format!("{f}.rewrite");
        let uri = rw.uri.as_deref().is_some_and(|u| !u.is_empty());
        if uri && rw.uri_regex_rewrite.is_some() {
            r.err(
                &rf,
                "rewrite may only contain one of URI or UriRegexRewrite",
            );
        } else if !uri
            && rw.uri_regex_rewrite.is_none()
            && rw.authority.as_deref().unwrap_or("").is_empty()
        {
            r.err(&rf, "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified");
        }
        if let Some(x) = &rw.uri_regex_rewrite {
            if x.pattern.is_empty() || x.rewrite.is_empty() {
                r.err(format!("{rf}.uriRegexRewrite"), "UriRegexRewrite has errors\nUriRegexRewrite requires both Rewrite and Match fields to be specified");
            } else if let Err(e) = validate_regex(&x.pattern, "HTTPRewrite.UriRegexRewrite.Match") {
                r.err(
                    format!("{rf}.uriRegexRewrite.match"),
                    format!("UriRegexRewrite has errors\n{e}"),
                );
            }
        }
    }
    http_destinations(r, f, &h.route);
    if let Some(t) = &h.timeout {
        r.check(format!("{f}.timeout"), validate_duration(t));
    }
}
