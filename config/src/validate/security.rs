//! PeerAuthentication, RequestAuthentication and AuthorizationPolicy
//! validation (Istio's rules and wording).
use super::common::{validate_duration, validate_header_name, validate_ip_subnet};
use super::Report;
use crate::api::destination_rule::WorkloadSelector;
use crate::api::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};

fn selector(r: &mut Report<'_>, s: &Option<WorkloadSelector>) {
    let Some(s) = s else { return };
    for (k, v) in &s.match_labels {
        if k.is_empty() {
            r.err(
                "spec.selector.matchLabels",
                format!("empty key is not supported in selector: \"{k}={v}\""),
            );
        }
        if k.contains('*') || v.contains('*') {
            r.err(
                "spec.selector.matchLabels",
                format!("wildcard is not supported in selector: \"{k}={v}\""),
            );
        }
    }
    if s.match_labels.is_empty() {
        r.warn(
            "spec.selector",
            "workload selector specified without labels",
        );
    }
}

fn mtls_mode(r: &mut Report<'_>, f: &str, m: &Option<String>) {
    if let Some(m) = m {
        if !["UNSET", "DISABLE", "PERMISSIVE", "STRICT"].contains(&m.as_str()) {
            r.err(f, format!("unknown value {m:?} for enum istio.security.v1beta1.PeerAuthentication.MutualTLS.Mode"));
        }
    }
}

/// PeerAuthentication.
pub(crate) fn peer_authentication(r: &mut Report<'_>, p: &PeerAuthentication) {
    let empty_selector = p
        .selector
        .as_ref()
        .is_none_or(|s| s.match_labels.is_empty());
    if empty_selector && !p.port_level_mtls.is_empty() {
        r.err(
            "spec.portLevelMtls",
            "mesh/namespace peer authentication cannot have port level mTLS",
        );
    }
    for (port, m) in &p.port_level_mtls {
        if *port == 0 || *port > 65535 {
            r.err("spec.portLevelMtls", "port must be in range 1..65535");
        }
        mtls_mode(r, &format!("spec.portLevelMtls.{port}.mode"), &m.mode);
    }
    if let Some(m) = &p.mtls {
        mtls_mode(r, "spec.mtls.mode", &m.mode);
    }
    selector(r, &p.selector);
}

/// RequestAuthentication.
pub(crate) fn request_authentication(r: &mut Report<'_>, ra: &RequestAuthentication) {
    let set = [
        ra.selector.is_some(),
        ra.target_ref.is_some(),
        !ra.target_refs.is_empty(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set > 1 {
        r.err(
            "spec",
            "only one of targetRefs or workloadSelector can be set",
        );
    }
    selector(r, &ra.selector);
    for (i, j) in ra.jwt_rules.iter().enumerate() {
        let f = format!("spec.jwtRules[{i}]");
        if j.issuer.is_empty() {
            r.err(format!("{f}.issuer"), "issuer must be set");
        }
        if j.audiences.iter().any(String::is_empty) {
            r.err(
                format!("{f}.audiences"),
                "audience must be non-empty string",
            );
        }
        if let Some(u) = &j.jwks_uri {
            let ok = (u.starts_with("http://") || u.starts_with("https://"))
                && u.split("://").nth(1).is_some_and(|h| !h.is_empty());
            if !ok {
                r.err(format!("{f}.jwksUri"), format!("invalid jwks uri: {u:?}"));
            }
        }
        if let Some(k) = &j.jwks {
            match serde_json::from_str::<serde_json::Value>(k) {
                Ok(v) if v.get("keys").is_some_and(|k| k.is_array()) || v.get("kty").is_some() => {}
                Ok(_) => r.err(format!("{f}.jwks"), "jwks parse error: missing \"keys\""),
                Err(e) => r.err(format!("{f}.jwks"), format!("jwks parse error: {e}")),
            }
        }
        for (k, h) in j.from_headers.iter().enumerate() {
            if h.name.is_empty() {
                r.err(
                    format!("{f}.fromHeaders[{k}].name"),
                    "location header name must be non-empty string",
                );
            }
        }
        if j.from_params.iter().any(String::is_empty) {
            r.err(
                format!("{f}.fromParams"),
                "location query must be non-empty string",
            );
        }
        if j.from_cookies.iter().any(String::is_empty) {
            r.err(
                format!("{f}.fromCookies"),
                "cookie name must be non-empty string",
            );
        }
        for (k, c) in j.output_claim_to_headers.iter().enumerate() {
            let cf = format!("{f}.outputClaimToHeaders[{k}]");
            if c.claim.is_empty() || c.header.is_empty() {
                r.err(
                    cf,
                    "outputClaimToHeaders header and claim value must be non-empty string",
                );
            } else {
                r.check(cf, validate_header_name(&c.header));
            }
        }
        if let Some(t) = &j.timeout {
            r.check(format!("{f}.timeout"), validate_duration(t));
        }
    }
}

/// AuthorizationPolicy. Errors are prefixed like Istio:
/// `invalid policy <name>.<namespace>: ...`.
pub(crate) fn authorization_policy(r: &mut Report<'_>, ap: &AuthorizationPolicy) {
    let mut errs: Vec<(String, String)> = Vec::new();
    let set = [
        ap.selector.is_some(),
        ap.target_ref.is_some(),
        !ap.target_refs.is_empty(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set > 1 {
        errs.push((
            "spec".into(),
            "only one of targetRefs or workloadSelector can be set".into(),
        ));
    }
    selector(r, &ap.selector);
    let action = ap.action.as_deref().unwrap_or("ALLOW");
    if !["ALLOW", "DENY", "AUDIT", "CUSTOM"].contains(&action) {
        errs.push(("spec.action".into(), format!("unknown value {action:?} for enum istio.security.v1beta1.AuthorizationPolicy.Action")));
    }
    if action == "CUSTOM" {
        if ap.rules.is_empty() {
            errs.push(("spec.rules".into(), "CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request".into()));
        } else if ap.provider.as_ref().is_none_or(|p| p.name.is_empty()) {
            errs.push((
                "spec.provider".into(),
                "`provider.name` must not be empty".into(),
            ));
        }
    }
    if ap.provider.is_some() && action != "CUSTOM" {
        errs.push((
            "spec.provider".into(),
            format!("`provider` must not be with non CUSTOM action, found {action}"),
        ));
    }
    if action == "DENY" && ap.rules.is_empty() {
        errs.push(("spec.rules".into(), "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request".into()));
    }
    for (i, rule) in ap.rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        for (j, from) in rule.from.iter().enumerate() {
            let s = &from.source;
            if *s == Default::default() {
                errs.push((
                    format!("{f}.from[{j}].source"),
                    format!("`from.source` must not be empty, found at rule {i}"),
                ));
            }
            for (name, list) in [
                ("ipBlocks", &s.ip_blocks),
                ("notIpBlocks", &s.not_ip_blocks),
                ("remoteIpBlocks", &s.remote_ip_blocks),
                ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
            ] {
                for ip in list {
                    if let Err(e) = validate_ip_subnet(ip) {
                        errs.push((format!("{f}.from[{j}].source.{name}"), e));
                    }
                }
            }
            let lists = [
                ("Principals", &s.principals),
                ("RequestPrincipals", &s.request_principals),
                ("Namespaces", &s.namespaces),
                ("NotPrincipals", &s.not_principals),
                ("NotRequestPrincipals", &s.not_request_principals),
                ("NotNamespaces", &s.not_namespaces),
            ];
            no_empty_values(|| format!("{f}.from[{j}].source"), lists, &mut errs);
        }
        for (j, to) in rule.to.iter().enumerate() {
            let o = &to.operation;
            if *o == Default::default() {
                errs.push((
                    format!("{f}.to[{j}].operation"),
                    format!("`to.operation` must not be empty, found at rule {i}"),
                ));
            }
            for p in o.ports.iter().chain(&o.not_ports) {
                if p.parse::<u16>().map_or(true, |n| n == 0) {
                    errs.push((
                        format!("{f}.to[{j}].operation.ports"),
                        format!("invalid port {p}: port must be in range 1..65535"),
                    ));
                }
            }
            let lists = [
                ("Methods", &o.methods),
                ("Paths", &o.paths),
                ("Hosts", &o.hosts),
                ("NotMethods", &o.not_methods),
                ("NotPaths", &o.not_paths),
                ("NotHosts", &o.not_hosts),
            ];
            no_empty_values(|| format!("{f}.to[{j}].operation"), lists, &mut errs);
        }
        for (j, c) in rule.when.iter().enumerate() {
            if c.key.is_empty() {
                errs.push((
                    format!("{f}.when[{j}].key"),
                    "`key` must not be empty".into(),
                ));
            } else if c.values.is_empty() && c.not_values.is_empty() {
                errs.push((
                    format!("{f}.when[{j}]"),
                    format!(
                        "at least one of `values` or `notValues` must be set for key {}",
                        c.key
                    ),
                ));
            }
        }
    }
    let name = format!("{}.{}", r_name(r), r.namespace());
    for (f, m) in errs {
        r.err(f, format!("invalid policy {name}: {m}"));
    }
}

/// Istio's check that a source's or an operation's lists hold no empty
/// value: one error at `field()` per list of `lists` (`(name, values)`, in
/// Istio's order) with an empty value.
fn no_empty_values(
    field: impl Fn() -> String,
    lists: [(&str, &Vec<String>); 6],
    errs: &mut Vec<(String, String)>,
) {
    for (name, list) in lists {
        if list.iter().any(String::is_empty) {
            errs.push((field(), format!("empty value not allowed, found in {name}")));
        }
    }
}

fn r_name(r: &Report<'_>) -> String {
    r.resource_name().to_string()
}
