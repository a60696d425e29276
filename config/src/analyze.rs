//! Analysis, like `istioctl analyze`, with Istio's message codes and
//! templates (`pkg/config/analysis/msg/messages.yaml`):
//!
//! | code | name | level |
//! |---|---|---|
//! | IST0101 | ReferencedResourceNotFound (host, host+subset, gateway, mirror host) | Error |
//! | IST0109 | ConflictingMeshGatewayVirtualServiceHosts | Error |
//! | IST0112 | VirtualServiceDestinationPortSelectorRequired | Error |
//! | IST0118 | PortNameIsNotUnderNamingConvention | Info |
//! | IST0130 | VirtualServiceUnreachableRule | Warning |
//! | IST0131 | VirtualServiceIneffectiveMatch | Info |
//! | IST0132 | VirtualServiceHostNotFoundInGateway | Warning |
//! | — | AuthorizationPolicy not enforced as Istio would (CUSTOM whose provider Strait cannot ask, mTLS identities, unknown `when` keys, unsupported targetRef kinds; fail-closed) | Warning |
//! | STR0001 | FieldNotEnforced (Strait's own: a field or kind accepted but not enforced yet, from [`crate::enforced::TABLE`]) | Warning |
//! | — | DestinationRule TLS the daemon refuses (`credentialName`, `ISTIO_MUTUAL` without a CA or to endpoints outside the mesh; [`crate::analyze_tls`]) | Warning / Info |
//! | — | ConflictingDestinationRules (Istio merges same-host rules and drops the later `trafficPolicy` / repeated subsets with only a log line; no IST code exists) | Warning |
//!
//! [`analyze`] also returns the validation findings, so one call gives the
//! whole report.
use std::collections::{BTreeMap, BTreeSet};

use crate::api::virtual_service::{Destination, VirtualService};
use crate::api::{Object, Resource};
use crate::compile::compile;
use crate::diag::{Diagnostic, Level};
use crate::hosts;
use crate::snapshot::{MeshSnapshot, Protocol};

/// Validates, compiles and analyzes `resources`; findings sorted by file,
/// line and resource.
pub fn analyze(resources: &[Resource]) -> Vec<Diagnostic> {
    let (snap, mut out) = compile(resources);
    let (latest, _) = crate::compile::dedupe(resources);
    let mut valid: Vec<&Resource> = Vec::with_capacity(latest.len());
    for r in latest {
        let findings = crate::validate::validate_resource(r);
        if !findings.iter().any(Diagnostic::is_error) {
            valid.push(r);
        }
        out.extend(findings.into_iter().filter(|d| !d.is_error()));
    }
    for r in &valid {
        out.extend(crate::enforced::diagnostics(r));
    }
    analyze_snapshot(&valid, &snap, &mut out);
    out.sort();
    out.dedup();
    out
}

fn msg(
    level: Level,
    code: &str,
    res: &Resource,
    field: impl Into<String>,
    text: String,
) -> Diagnostic {
    Diagnostic::at(level, res, field, text).with_code(code)
}

/// True when some service (exact or a ServiceEntry wildcard) has `host`.
fn host_exists(snap: &MeshSnapshot, host: &str) -> bool {
    snap.services.contains_key(host)
        || snap
            .services
            .keys()
            .any(|h| h.starts_with('*') && hosts::matches(h, host))
}

fn check_destination(
    out: &mut Vec<Diagnostic>,
    res: &Resource,
    f: &str,
    d: &Destination,
    snap: &MeshSnapshot,
    subsets: &BTreeMap<String, BTreeSet<String>>,
    mirror: bool,
) {
    let host = hosts::resolve(&d.host, res.namespace());
    if !host_exists(snap, &host) {
        let what = if mirror { "mirror host" } else { "host" };
        out.push(msg(
            Level::Error,
            "IST0101",
            res,
            format!("{f}.host"),
            format!("Referenced {what} not found: {:?}", d.host),
        ));
        return;
    }
    if let Some(s) = d.subset.as_deref().filter(|s| !s.is_empty()) {
        if !subsets.get(&host).is_some_and(|set| set.contains(s)) {
            out.push(msg(
                Level::Error,
                "IST0101",
                res,
                format!("{f}.subset"),
                format!(
                    "Referenced host+subset in destinationrule not found: \"{}+{s}\"",
                    d.host
                ),
            ));
        }
    }
    if d.port.is_none() {
        if let Some(svc) = snap.services.get(&host) {
            if svc.ports.len() > 1 {
                let ports: Vec<String> = svc.ports.iter().map(|p| p.port.to_string()).collect();
                out.push(msg(
                    Level::Error,
                    "IST0112",
                    res,
                    f,
                    format!(
                        "This VirtualService routes to a service {:?} that exposes multiple ports [{}]. Specifying a port in the destination is required to disambiguate.",
                        d.host,
                        ports.join(" ")
                    ),
                ));
            }
        }
    }
}

/// Istio's rule name in messages: `"name"` or `#index`.
fn rule_name(name: Option<&str>, i: usize) -> String {
    match name {
        Some(n) if !n.is_empty() => format!("{n:?}"),
        _ => format!("#{i}"),
    }
}

/// IST0130 / IST0131 for one list of rules given each rule's name and its
/// matches serialized (empty list: catch-all).
fn unreachable(
    out: &mut Vec<Diagnostic>,
    res: &Resource,
    section: &str,
    rules: &[(String, Vec<(String, String)>)],
) {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    let mut catch_all: Option<&str> = None;
    for (i, (name, matches)) in rules.iter().enumerate() {
        let f = format!("spec.{section}[{i}]");
        if let Some(prev) = catch_all {
            let reason = if matches.is_empty() {
                "only the last rule can have no matches".to_string()
            } else {
                format!("a previous rule {prev} has no matches and catches all traffic")
            };
            out.push(msg(
                Level::Warning,
                "IST0130",
                res,
                &f,
                format!("VirtualService rule {name} not used ({reason})."),
            ));
            continue;
        }
        if matches.is_empty() {
            catch_all = Some(name);
            continue;
        }
        let mut dup = 0;
        for (j, (mname, key)) in matches.iter().enumerate() {
            if let Some(prev) = seen.get(key.as_str()) {
                dup += 1;
                out.push(msg(
                    Level::Info,
                    "IST0131",
                    res,
                    format!("{f}.match[{j}]"),
                    format!("VirtualService rule {name} match {mname} is not used (duplicate/overlapping match in rule {prev})."),
                ));
            } else {
                seen.insert(key, name);
            }
        }
        if dup == matches.len() {
            out.push(msg(
                Level::Warning,
                "IST0130",
                res,
                &f,
                format!("VirtualService rule {name} not used (all matches used by prior rules)."),
            ));
        }
    }
}

/// A rule's display name and its matches as (display name, comparison key).
type RuleMatches = (String, Vec<(String, String)>);

fn vs_rules(v: &VirtualService) -> [(&'static str, Vec<RuleMatches>); 3] {
    let http = v
        .http
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let ms = r
                .matches
                .iter()
                .enumerate()
                .map(|(j, m)| {
                    let mut m2 = m.clone();
                    m2.name = None;
                    (rule_name(m.name.as_deref(), j), json(&m2))
                })
                .collect();
            (rule_name(r.name.as_deref(), i), ms)
        })
        .collect();
    let tcp = numbered(v.tcp.iter().map(|r| &r.matches[..]));
    let tls = numbered(v.tls.iter().map(|r| &r.matches[..]));
    [("http", http), ("tcp", tcp), ("tls", tls)]
}

/// TCP or TLS rules (`rules`: each rule's matches), which have no names:
/// `#i` for rule `i`, `#j` for its match `j`.
fn numbered<'v, M: serde::Serialize + 'v>(
    rules: impl Iterator<Item = &'v [M]>,
) -> Vec<RuleMatches> {
    rules
        .enumerate()
        .map(|(i, ms)| {
            let ms = ms.iter().enumerate();
            (
                format!("#{i}"),
                ms.map(|(j, m)| (format!("#{j}"), json(m))).collect(),
            )
        })
        .collect()
}

/// A match's comparison key (Istio compares matches as JSON).
fn json<T: serde::Serialize>(m: &T) -> String {
    serde_json::to_string(m).unwrap_or_default()
}

/// AuthorizationPolicies Strait enforces only in part (fail-closed): one
/// warning per reason ([`crate::snapshot::AuthzPolicy::not_enforced`]).
fn policy_gaps(resources: &[&Resource], snap: &MeshSnapshot, out: &mut Vec<Diagnostic>) {
    for r in resources {
        if !matches!(r.object, Object::AuthorizationPolicy(_)) {
            continue;
        }
        let name = format!("{}/{}", r.namespace(), r.name());
        let Some(p) = snap.policies.authorization.iter().find(|p| p.name == name) else {
            continue;
        };
        for why in &p.not_enforced {
            out.push(Diagnostic::at(
                Level::Warning,
                r,
                "spec",
                format!("not enforced as Istio would: {why}"),
            ));
        }
        if let Some(why) = custom_gap(p, snap) {
            out.push(Diagnostic::at(
                Level::Warning,
                r,
                "spec.provider",
                format!("not enforced as Istio would: {why}"),
            ));
        }
    }
}

/// Why the runtime cannot ask a CUSTOM policy's provider (it then denies
/// every request the policy matches), or `None` when it can: the provider
/// must be an `envoyExtAuthzHttp` entry of the mesh config with only the
/// fields Strait applies, and its `service` a registry host on `port` (or
/// an IP address).
pub fn custom_gap(p: &crate::snapshot::AuthzPolicy, snap: &MeshSnapshot) -> Option<String> {
    if p.action != crate::snapshot::AuthzAction::Custom {
        return None;
    }
    let deny = "requests this CUSTOM policy's rules match (or may match) are denied with 403";
    let Some(name) = p.provider.as_deref() else {
        return Some(format!("CUSTOM action without provider.name: {deny}"));
    };
    let cfg = match snap.mesh.ext_authz_http(name) {
        Ok(c) => c,
        Err(e) => return Some(format!("CUSTOM action: {e}: {deny}")),
    };
    let host = cfg
        .service
        .split_once('/')
        .map_or(cfg.service.as_str(), |(_, h)| h);
    let port = cfg.port().unwrap_or(0);
    let known = snap
        .clusters
        .contains_key(&format!("outbound|{port}||{host}"))
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok();
    if !known {
        return Some(format!(
            "CUSTOM action: extension provider {name:?}: service {:?} port {port} is not in the registry: {deny}",
            cfg.service
        ));
    }
    None
}

fn analyze_snapshot(resources: &[&Resource], snap: &MeshSnapshot, out: &mut Vec<Diagnostic>) {
    policy_gaps(resources, snap, out);
    crate::analyze_tls::tls_gaps(resources, snap, out);
    // Subsets defined per resolved host.
    let mut subsets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut drs_by_host: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
    let gateways: BTreeSet<String> = resources
        .iter()
        .filter(|r| matches!(r.object, Object::Gateway(_)))
        .map(|r| format!("{}/{}", r.namespace(), r.name()))
        .collect();
    for r in resources {
        if let Object::DestinationRule(d) = &r.object {
            let host = hosts::resolve(&d.spec.host, r.namespace());
            for s in &d.spec.subsets {
                subsets
                    .entry(host.clone())
                    .or_default()
                    .insert(s.name.clone());
            }
            if d.spec.workload_selector.is_none() {
                drs_by_host.entry(host).or_default().push(r);
            }
        }
    }
    // A DestinationRule on a wildcard host also defines subsets for the hosts it covers.
    let wild: Vec<(String, BTreeSet<String>)> = subsets
        .iter()
        .filter(|(h, _)| h.starts_with('*'))
        .map(|(h, s)| (h.clone(), s.clone()))
        .collect();
    for host in snap.services.keys() {
        for (w, s) in &wild {
            if hosts::matches(w, host) {
                subsets
                    .entry(host.clone())
                    .or_default()
                    .extend(s.iter().cloned());
            }
        }
    }
    let mut mesh_hosts: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
    for r in resources {
        let Object::VirtualService(v) = &r.object else {
            continue;
        };
        let v = &v.spec;
        for (i, g) in v.gateways.iter().enumerate() {
            if g == "mesh" {
                continue;
            }
            let full = if g.contains('/') {
                g.clone()
            } else {
                format!("{}/{g}", r.namespace())
            };
            if !gateways.contains(&full) {
                out.push(msg(
                    Level::Error,
                    "IST0101",
                    r,
                    format!("spec.gateways[{i}]"),
                    format!("Referenced gateway not found: {g:?}"),
                ));
            } else if let Some(gw) = snap.gateways.get(&full) {
                let missing: Vec<&String> = v
                    .hosts
                    .iter()
                    .filter(|h| {
                        let h = hosts::resolve(h, r.namespace());
                        !gw.servers
                            .iter()
                            .any(|s| s.hosts.iter().any(|sh| hosts::intersect(sh, &h)))
                    })
                    .collect();
                if !missing.is_empty() {
                    let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
                    out.push(msg(
                        Level::Warning,
                        "IST0132",
                        r,
                        "spec.hosts",
                        format!("one or more host [{}] defined in VirtualService {}/{} not found in Gateway {full}.", list.join(" "), r.namespace(), r.name()),
                    ));
                }
            }
        }
        if v.gateways.is_empty() || v.gateways.iter().any(|g| g == "mesh") {
            for h in &v.hosts {
                mesh_hosts
                    .entry(hosts::resolve(h, r.namespace()))
                    .or_default()
                    .push(r);
            }
        }
        for (i, h) in v.http.iter().enumerate() {
            for (j, d) in h.route.iter().enumerate() {
                check_destination(
                    out,
                    r,
                    &format!("spec.http[{i}].route[{j}].destination"),
                    &d.destination,
                    snap,
                    &subsets,
                    false,
                );
            }
            if let Some(m) = &h.mirror {
                check_destination(
                    out,
                    r,
                    &format!("spec.http[{i}].mirror"),
                    m,
                    snap,
                    &subsets,
                    true,
                );
            }
            for (j, m) in h.mirrors.iter().enumerate() {
                check_destination(
                    out,
                    r,
                    &format!("spec.http[{i}].mirrors[{j}].destination"),
                    &m.destination,
                    snap,
                    &subsets,
                    true,
                );
            }
        }
        for (sec, list) in [
            ("tcp", v.tcp.iter().map(|t| &t.route).collect::<Vec<_>>()),
            ("tls", v.tls.iter().map(|t| &t.route).collect()),
        ] {
            for (i, routes) in list.into_iter().enumerate() {
                for (j, d) in routes.iter().enumerate() {
                    check_destination(
                        out,
                        r,
                        &format!("spec.{sec}[{i}].route[{j}].destination"),
                        &d.destination,
                        snap,
                        &subsets,
                        false,
                    );
                }
            }
        }
        for (section, rules) in vs_rules(v) {
            unreachable(out, r, section, &rules);
        }
    }
    for (host, vss) in &mesh_hosts {
        if vss.len() > 1 {
            let names: Vec<String> = vss
                .iter()
                .map(|r| format!("{}/{}", r.namespace(), r.name()))
                .collect();
            for r in vss {
                out.push(msg(
                    Level::Error,
                    "IST0109",
                    r,
                    "spec.hosts",
                    format!(
                        "The VirtualServices {} associated with mesh gateway define the same host {host} which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
                        names.join(",")
                    ),
                ));
            }
        }
    }
    for (host, drs) in &drs_by_host {
        if drs.len() < 2 {
            continue;
        }
        let names: Vec<String> = drs
            .iter()
            .map(|r| format!("{}/{}", r.namespace(), r.name()))
            .collect();
        let mut policies = 0;
        let mut seen = BTreeSet::new();
        let mut dup = BTreeSet::new();
        for r in drs {
            if let Object::DestinationRule(d) = &r.object {
                policies += usize::from(d.spec.traffic_policy.is_some());
                for s in &d.spec.subsets {
                    if !seen.insert(s.name.clone()) {
                        dup.insert(s.name.clone());
                    }
                }
            }
        }
        if policies > 1 || !dup.is_empty() {
            let what = if !dup.is_empty() {
                format!(
                    "subsets {:?} are defined more than once",
                    dup.iter().collect::<Vec<_>>()
                )
            } else {
                "more than one sets trafficPolicy".to_string()
            };
            for r in drs {
                out.push(Diagnostic::at(
                    Level::Warning,
                    r,
                    "spec.host",
                    format!("ConflictingDestinationRules: the DestinationRules {} define the same host {host} and {what}; only the first (by namespace/name) applies.", names.join(",")),
                ));
            }
        }
    }
    for r in resources {
        let Object::Service(s) = &r.object else {
            continue;
        };
        for (i, p) in s
            .spec
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .enumerate()
        {
            let name = p.name.clone().unwrap_or_default();
            let proto = Protocol::from_service_port(
                &name,
                p.protocol.as_deref().unwrap_or("TCP"),
                p.app_protocol.as_deref(),
            );
            if proto == Protocol::Unknown {
                let target = match &p.target_port {
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                        n.to_string()
                    }
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => {
                        s.clone()
                    }
                    None => p.port.to_string(),
                };
                out.push(msg(
                    Level::Info,
                    "IST0118",
                    r,
                    format!("spec.ports[{i}].name"),
                    format!("Port name {name} (port: {}, targetPort: {target}) doesn't follow the naming convention of Istio port.", p.port),
                ));
            }
        }
    }
}

/// Strait's own analyzer code, in Istio's style: a field or kind Strait
/// accepts but does not enforce yet (see [`crate::enforced`]).
pub const FIELD_NOT_ENFORCED: &str = "STR0001";
