//! DestinationRule, Gateway, ServiceEntry, Sidecar and WorkloadEntry
//! validation (Istio's rules and wording).
use std::collections::BTreeSet;

use super::common::{
    is_dns1123_label, validate_duration, validate_export_to, validate_ip_subnet, validate_labels,
    validate_port, validate_wildcard_domain,
};
use super::virtual_service::validate_subset_name;
use super::Report;
use crate::api::destination_rule::{
    ClientTlsSettings, ConnectionPoolSettings, DestinationRule, LoadBalancerSettings,
    OutlierDetection, TrafficPolicy,
};
use crate::api::gateway::{Gateway, Port};
use crate::api::service_entry::{ServiceEntry, Sidecar, WorkloadEntry};
use crate::snapshot::Protocol;

const SIMPLE_LB: &[&str] = &[
    "UNSPECIFIED",
    "RANDOM",
    "PASSTHROUGH",
    "ROUND_ROBIN",
    "LEAST_REQUEST",
    "LEAST_CONN",
];
const CLIENT_TLS: &[&str] = &["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"];
const SERVER_TLS: &[&str] = &[
    "PASSTHROUGH",
    "SIMPLE",
    "MUTUAL",
    "AUTO_PASSTHROUGH",
    "ISTIO_MUTUAL",
    "OPTIONAL_MUTUAL",
];

fn enum_value(r: &mut Report<'_>, f: &str, v: &Option<String>, allowed: &[&str], what: &str) {
    if let Some(v) = v {
        if !allowed.contains(&v.as_str()) {
            r.err(f, format!("unknown value {v:?} for enum {what}"));
        }
    }
}

fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x & 1 == 0 {
        return false;
    }
    let limit = (x as f64).sqrt() as u64;
    (3..=limit).step_by(2).all(|f| !x.is_multiple_of(f))
}

fn outlier(r: &mut Report<'_>, f: &str, o: &OutlierDetection) {
    if let Some(d) = &o.base_ejection_time {
        r.check(format!("{f}.baseEjectionTime"), validate_duration(d));
    }
    if o.consecutive_errors.is_some_and(|c| c != 0) {
        r.warn(format!("{f}.consecutiveErrors"), "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead");
    }
    if !o.split_external_local_origin_errors.unwrap_or(false)
        && o.consecutive_local_origin_failures.is_some_and(|v| v > 0)
    {
        r.err(f, "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false");
    }
    if let Some(d) = &o.interval {
        r.check(format!("{f}.interval"), validate_duration(d));
    }
    for (name, v) in [
        ("maxEjectionPercent", o.max_ejection_percent),
        ("minHealthPercent", o.min_health_percent),
    ] {
        if let Some(v) = v {
            if !(0..=100).contains(&v) {
                r.err(
                    format!("{f}.{name}"),
                    format!("percentage {v} is not in range 0..100"),
                );
            }
        }
    }
}

fn pool(r: &mut Report<'_>, f: &str, p: &ConnectionPoolSettings) {
    if p.http.is_none() && p.tcp.is_none() {
        r.err(f, "connection pool must have at least one field");
    }
    if let Some(h) = &p.http {
        for (name, v, msg) in [
            (
                "http1MaxPendingRequests",
                h.http1_max_pending_requests,
                "http1 max pending requests must be non-negative",
            ),
            (
                "http2MaxRequests",
                h.http2_max_requests,
                "http2 max requests must be non-negative",
            ),
            (
                "maxRequestsPerConnection",
                h.max_requests_per_connection,
                "max requests per connection must be non-negative",
            ),
            (
                "maxRetries",
                h.max_retries,
                "max retries must be non-negative",
            ),
            (
                "maxConcurrentStreams",
                h.max_concurrent_streams,
                "max concurrent streams must be non-negative",
            ),
        ] {
            if v.is_some_and(|v| v < 0) {
                r.err(format!("{f}.http.{name}"), msg);
            }
        }
        if let Some(d) = &h.idle_timeout {
            r.check(format!("{f}.http.idleTimeout"), validate_duration(d));
        }
        enum_value(
            r,
            &format!("{f}.http.h2UpgradePolicy"),
            &h.h2_upgrade_policy,
            &["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"],
            "istio.networking.v1alpha3.ConnectionPoolSettings.HTTPSettings.H2UpgradePolicy",
        );
        if h.h2_upgrade_policy.as_deref() == Some("UPGRADE") && h.use_client_protocol == Some(true)
        {
            r.err(
                format!("{f}.http"),
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            );
        }
    }
    if let Some(t) = &p.tcp {
        if t.max_connections.is_some_and(|v| v < 0) {
            r.err(
                format!("{f}.tcp.maxConnections"),
                "max connections must be non-negative",
            );
        }
        for (name, d) in [
            ("connectTimeout", &t.connect_timeout),
            ("maxConnectionDuration", &t.max_connection_duration),
            ("idleTimeout", &t.idle_timeout),
        ] {
            if let Some(d) = d {
                r.check(format!("{f}.tcp.{name}"), validate_duration(d));
            }
        }
    }
}

fn load_balancer(r: &mut Report<'_>, f: &str, lb: &LoadBalancerSettings) {
    enum_value(
        r,
        &format!("{f}.simple"),
        &lb.simple,
        SIMPLE_LB,
        "istio.networking.v1alpha3.LoadBalancerSettings.SimpleLB",
    );
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        r.err(f, "only one of simple or consistentHash can be set");
    }
    if let Some(ch) = &lb.consistent_hash {
        let cf = format!("{f}.consistentHash");
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip.is_some(),
            ch.http_query_parameter_name.is_some(),
        ];
        if keys.iter().filter(|k| **k).count() > 1 {
            r.err(&cf, "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName can be set");
        }
        if let Some(c) = &ch.http_cookie {
            if c.name.is_empty() {
                r.err(format!("{cf}.httpCookie"), "name required for HttpCookie");
            }
            if let Some(t) = &c.ttl {
                if let Err(e) = crate::duration::parse(t) {
                    r.err(format!("{cf}.httpCookie.ttl"), e);
                }
            }
        }
        if ch.minimum_ring_size.is_some_and(|v| v != 0) {
            r.warn(format!("{cf}.minimumRingSize"), "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead");
            if ch.ring_hash.is_some() || ch.maglev.is_some() {
                r.err(
                    &cf,
                    "only one of MinimumRingSize or Maglev/Ringhash can be set",
                );
            }
        }
        if let Some(m) = &ch.maglev {
            let t = m.table_size.unwrap_or(0);
            if t == 0 {
                r.err(
                    format!("{cf}.maglev.tableSize"),
                    "tableSize must be set for maglev",
                );
            } else if t >= 5_000_011 {
                r.err(
                    format!("{cf}.maglev.tableSize"),
                    "tableSize must be less than 5000011 for maglev",
                );
            } else if !is_prime(t) {
                r.err(
                    format!("{cf}.maglev.tableSize"),
                    "tableSize must be a prime number for maglev",
                );
            }
        }
    }
    if let Some(l) = &lb.locality_lb_setting {
        if !l.distribute.is_empty() && !l.failover.is_empty() {
            r.err(
                format!("{f}.localityLbSetting"),
                "can not simultaneously specify 'distribute' and 'failover'",
            );
        }
        for (i, d) in l.distribute.iter().enumerate() {
            let sum: u32 = d.to.values().sum();
            if sum != 100 {
                r.err(
                    format!("{f}.localityLbSetting.distribute[{i}]"),
                    "total weight across localities must be 100",
                );
            }
        }
        for (i, fo) in l.failover.iter().enumerate() {
            if fo.from == fo.to {
                r.err(
                    format!("{f}.localityLbSetting.failover[{i}]"),
                    "locality lb failover settings must specify different regions",
                );
            }
        }
    }
    if let Some(d) = &lb.warmup_duration_secs {
        r.check(format!("{f}.warmupDurationSecs"), validate_duration(d));
    }
}

fn client_tls(r: &mut Report<'_>, f: &str, t: &ClientTlsSettings) {
    enum_value(
        r,
        &format!("{f}.mode"),
        &t.mode,
        CLIENT_TLS,
        "istio.networking.v1alpha3.ClientTLSSettings.TLSmode",
    );
    let mode = t.mode.as_deref().unwrap_or("DISABLE");
    if mode == "ISTIO_MUTUAL" || mode == "DISABLE" {
        let set = t.client_certificate.is_some()
            || t.private_key.is_some()
            || t.ca_certificates.is_some()
            || t.credential_name.is_some();
        if set && mode == "ISTIO_MUTUAL" {
            r.err(f, "cannot specify client certificates or CA certificate or CA CRL or credentialName with ISTIO_MUTUAL");
        }
    }
    if mode == "MUTUAL" && t.credential_name.is_none() {
        if t.client_certificate.is_none() {
            r.err(f, "client certificate required for mutual tls");
        }
        if t.private_key.is_none() {
            r.err(f, "private key required for mutual tls");
        }
    }
}

fn traffic_policy(r: &mut Report<'_>, f: &str, p: &TrafficPolicy) {
    if p.outlier_detection.is_none()
        && p.connection_pool.is_none()
        && p.load_balancer.is_none()
        && p.tls.is_none()
        && p.port_level_settings.is_empty()
        && p.tunnel.is_none()
        && p.proxy_protocol.is_none()
    {
        r.err(f, "traffic policy must have at least one field");
        return;
    }
    if let Some(o) = &p.outlier_detection {
        outlier(r, &format!("{f}.outlierDetection"), o);
    }
    if let Some(c) = &p.connection_pool {
        pool(r, &format!("{f}.connectionPool"), c);
    }
    if let Some(lb) = &p.load_balancer {
        load_balancer(r, &format!("{f}.loadBalancer"), lb);
    }
    if let Some(t) = &p.tls {
        client_tls(r, &format!("{f}.tls"), t);
    }
    for (i, pl) in p.port_level_settings.iter().enumerate() {
        let pf = format!("{f}.portLevelSettings[{i}]");
        match &pl.port {
            None => r.err(&pf, "portTrafficPolicy must have valid port"),
            Some(port) => r.check(
                format!("{pf}.port.number"),
                validate_port(port.number as i64),
            ),
        }
        if pl.outlier_detection.is_none()
            && pl.connection_pool.is_none()
            && pl.load_balancer.is_none()
            && pl.tls.is_none()
        {
            r.err(&pf, "port traffic policy must have at least one field");
        }
        if let Some(o) = &pl.outlier_detection {
            outlier(r, &format!("{pf}.outlierDetection"), o);
        }
        if let Some(c) = &pl.connection_pool {
            pool(r, &format!("{pf}.connectionPool"), c);
        }
        if let Some(lb) = &pl.load_balancer {
            load_balancer(r, &format!("{pf}.loadBalancer"), lb);
        }
        if let Some(t) = &pl.tls {
            client_tls(r, &format!("{pf}.tls"), t);
        }
    }
}

/// DestinationRule.
pub(crate) fn destination_rule(r: &mut Report<'_>, d: &DestinationRule) {
    r.check("spec.host", validate_wildcard_domain(&d.host));
    if let Some(p) = &d.traffic_policy {
        traffic_policy(r, "spec.trafficPolicy", p);
    }
    let mut names = BTreeSet::new();
    for (i, s) in d.subsets.iter().enumerate() {
        let f = format!("spec.subsets[{i}]");
        if !names.insert(s.name.as_str()) {
            r.err(
                format!("{f}.name"),
                format!("duplicate subset names: {}", s.name),
            );
        }
        r.check(format!("{f}.name"), validate_subset_name(&s.name));
        r.check(format!("{f}.labels"), validate_labels(&s.labels));
        if let Some(p) = &s.traffic_policy {
            traffic_policy(r, &format!("{f}.trafficPolicy"), p);
        }
    }
    let ns = r.namespace().to_string();
    r.check(
        "spec.exportTo",
        validate_export_to(&ns, &d.export_to, false),
    );
    if let Some(ws) = &d.workload_selector {
        if ws.match_labels.is_empty() {
            r.warn(
                "spec.workloadSelector",
                "workload selector specified without labels",
            );
        }
        if !d.export_to.is_empty() && d.export_to.iter().any(|e| e != "." && e != &ns) {
            r.err("spec.exportTo", "destination rule with workload selector cannot have exportTo beyond current namespace");
        }
    }
}

fn port_protocol(r: &mut Report<'_>, f: &str, p: &Port) {
    if Protocol::parse(&p.protocol) == Protocol::Unknown {
        r.err(format!("{f}.protocol"), format!("invalid protocol {:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP", p.protocol));
    }
}

/// Gateway.
pub(crate) fn gateway(r: &mut Report<'_>, g: &Gateway) {
    if g.servers.is_empty() {
        r.err("spec.servers", "gateway must have at least one server");
    }
    let mut names = BTreeSet::new();
    for (i, s) in g.servers.iter().enumerate() {
        let f = format!("spec.servers[{i}]");
        if s.hosts.is_empty() {
            r.err(
                format!("{f}.hosts"),
                "server config must contain at least one host",
            );
        }
        for (j, h) in s.hosts.iter().enumerate() {
            let (ns, host) = crate::hosts::split_namespaced(h);
            if let Some(ns) = ns {
                if ns != "*" && ns != "." && ns != "~" && !is_dns1123_label(ns) {
                    r.err(
                        format!("{f}.hosts[{j}]"),
                        format!("invalid namespace value {ns:?} in host {h:?}"),
                    );
                }
            }
            if host != "*" {
                if let Err(e) = validate_wildcard_domain(host) {
                    if host.parse::<std::net::IpAddr>().is_err() {
                        r.err(format!("{f}.hosts[{j}]"), e);
                    }
                }
            }
        }
        let Some(port) = &s.port else {
            r.err(format!("{f}.port"), "port is required");
            continue;
        };
        port_protocol(r, &format!("{f}.port"), port);
        if port.number > 0 || !s.bind.as_deref().unwrap_or("").starts_with("unix://") {
            r.check(
                format!("{f}.port.number"),
                validate_port(port.number as i64),
            );
        }
        if port.target_port.is_some_and(|t| t > 0) {
            r.err(
                format!("{f}.port.targetPort"),
                "targetPort has no impact on Gateways",
            );
        }
        if port.name.is_empty() {
            r.err(
                format!("{f}.port.name"),
                format!(
                    "port name must be set: number:{} protocol:{:?}",
                    port.number, port.protocol
                ),
            );
        } else if !names.insert(port.name.clone()) {
            r.err(
                format!("{f}.port.name"),
                format!(
                    "port names in servers must be unique: duplicate name {}",
                    port.name
                ),
            );
        }
        let proto = Protocol::parse(&port.protocol);
        let is_tls = matches!(proto, Protocol::Https | Protocol::Tls);
        match &s.tls {
            None if is_tls => r.err(
                format!("{f}.tls"),
                "server must have TLS settings for HTTPS/TLS protocols",
            ),
            Some(t) => {
                enum_value(
                    r,
                    &format!("{f}.tls.mode"),
                    &t.mode,
                    SERVER_TLS,
                    "istio.networking.v1alpha3.ServerTLSSettings.TLSmode",
                );
                if !is_tls {
                    let redirect_only = t.https_redirect == Some(true)
                        && t.mode.is_none()
                        && t.server_certificate.is_none()
                        && t.private_key.is_none()
                        && t.ca_certificates.is_none();
                    if proto.is_http() {
                        if !redirect_only {
                            r.err(
                                format!("{f}.tls"),
                                "server cannot have TLS settings for plain text HTTP ports",
                            );
                        }
                    } else if proto != Protocol::Unknown {
                        r.err(
                            format!("{f}.tls"),
                            "server cannot have TLS settings for non HTTPS/TLS ports",
                        );
                    }
                } else {
                    let mode = t.mode.as_deref().unwrap_or("SIMPLE");
                    let cred = t.credential_name.is_some();
                    match mode {
                        "ISTIO_MUTUAL" => {
                            if t.server_certificate.is_some() {
                                r.err(
                                    format!("{f}.tls"),
                                    "ISTIO_MUTUAL TLS cannot have associated server certificate",
                                );
                            }
                            if t.private_key.is_some() {
                                r.err(
                                    format!("{f}.tls"),
                                    "ISTIO_MUTUAL TLS cannot have associated private key",
                                );
                            }
                            if t.ca_certificates.is_some() {
                                r.err(
                                    format!("{f}.tls"),
                                    "ISTIO_MUTUAL TLS cannot have associated CA bundle",
                                );
                            }
                            if cred {
                                r.err(
                                    format!("{f}.tls"),
                                    "ISTIO_MUTUAL TLS cannot have associated credentialName",
                                );
                            }
                        }
                        "SIMPLE" if !cred => {
                            if t.server_certificate.is_none() {
                                r.err(
                                    format!("{f}.tls"),
                                    "SIMPLE TLS requires a server certificate",
                                );
                            }
                            if t.private_key.is_none() {
                                r.err(format!("{f}.tls"), "SIMPLE TLS requires a private key");
                            }
                        }
                        "MUTUAL" | "OPTIONAL_MUTUAL" if !cred => {
                            if t.server_certificate.is_none() {
                                r.err(
                                    format!("{f}.tls"),
                                    "MUTUAL TLS requires a server certificate",
                                );
                            }
                            if t.private_key.is_none() {
                                r.err(format!("{f}.tls"), "MUTUAL TLS requires a private key");
                            }
                            if t.ca_certificates.is_none() {
                                r.err(format!("{f}.tls"), "MUTUAL TLS requires a client CA bundle");
                            }
                        }
                        _ => {}
                    }
                }
            }
            None => {}
        }
        if let Some(b) = s
            .bind
            .as_deref()
            .filter(|b| !b.is_empty() && !b.starts_with("unix://"))
        {
            if b.parse::<std::net::IpAddr>().is_err() {
                r.err(format!("{f}.bind"), format!("{b} is not a valid IP"));
            }
        }
    }
}

/// ServiceEntry.
pub(crate) fn service_entry(r: &mut Report<'_>, se: &ServiceEntry) {
    if se.hosts.is_empty() {
        r.err("spec.hosts", "service entry must have at least one host");
    }
    for (i, h) in se.hosts.iter().enumerate() {
        if h == "*" {
            r.err(format!("spec.hosts[{i}]"), "invalid host *");
        } else {
            r.check(format!("spec.hosts[{i}]"), validate_wildcard_domain(h));
        }
    }
    for (i, a) in se.addresses.iter().enumerate() {
        r.check(format!("spec.addresses[{i}]"), validate_ip_subnet(a));
    }
    enum_value(
        r,
        "spec.location",
        &se.location,
        &["MESH_EXTERNAL", "MESH_INTERNAL"],
        "istio.networking.v1alpha3.ServiceEntry.Location",
    );
    enum_value(
        r,
        "spec.resolution",
        &se.resolution,
        &["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"],
        "istio.networking.v1alpha3.ServiceEntry.Resolution",
    );
    let resolution = se.resolution.as_deref().unwrap_or("NONE");
    if se.ports.is_empty() && se.workload_selector.is_none() {
        r.err("spec.ports", "service entry must have at least one port");
    }
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, p) in se.ports.iter().enumerate() {
        let f = format!("spec.ports[{i}]");
        if !names.insert(p.name.clone()) {
            r.err(
                format!("{f}.name"),
                format!("service entry port name {:?} already defined", p.name),
            );
        }
        if !numbers.insert(p.number) {
            r.err(
                format!("{f}.number"),
                format!("service entry port {} already defined", p.number),
            );
        }
        if p.name.is_empty() {
            r.err(format!("{f}.name"), "port name cannot be empty");
        }
        r.check(format!("{f}.number"), validate_port(p.number as i64));
        if let Some(t) = p.target_port {
            r.check(format!("{f}.targetPort"), validate_port(t as i64));
        }
        port_protocol(r, &f, p);
    }
    if resolution == "NONE" && !se.endpoints.is_empty() {
        r.err(
            "spec.endpoints",
            "no endpoints should be provided for resolution type none",
        );
    }
    if resolution == "STATIC" && se.endpoints.is_empty() && se.workload_selector.is_none() {
        r.err(
            "spec.endpoints",
            "endpoints must be provided for resolution type STATIC",
        );
    }
    if se.workload_selector.is_some() && !se.endpoints.is_empty() {
        r.err(
            "spec",
            "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
        );
    }
    for (i, e) in se.endpoints.iter().enumerate() {
        let f = format!("spec.endpoints[{i}]");
        if resolution == "STATIC"
            && !e.address.is_empty()
            && e.address.parse::<std::net::IpAddr>().is_err()
            && !e.address.starts_with("unix://")
        {
            r.err(
                format!("{f}.address"),
                format!("endpoint address {:?} is not a valid IP address", e.address),
            );
        }
        for name in e.ports.keys() {
            if !names.contains(name) {
                r.err(
                    format!("{f}.ports"),
                    format!(
                        "endpoint port {} is not defined by the service entry",
                        e.ports[name]
                    ),
                );
            }
        }
        workload_entry(r, &f, e, resolution != "STATIC");
    }
    let ns = r.namespace().to_string();
    r.check(
        "spec.exportTo",
        validate_export_to(&ns, &se.export_to, true),
    );
}

/// WorkloadEntry (standalone or ServiceEntry endpoint at `f`).
pub(crate) fn workload_entry(r: &mut Report<'_>, f: &str, we: &WorkloadEntry, allow_fqdn: bool) {
    if we.address.is_empty() {
        if we.network.is_none() {
            r.err(format!("{f}.address"), "address is required");
        }
    } else if !we.address.starts_with("unix://") && we.address.parse::<std::net::IpAddr>().is_err()
    {
        if !allow_fqdn {
            r.err(
                format!("{f}.address"),
                format!(
                    "endpoint address {:?} is not a valid IP address",
                    we.address
                ),
            );
        } else if validate_wildcard_domain(&we.address).is_err() || we.address.contains('*') {
            r.err(
                format!("{f}.address"),
                format!(
                    "endpoint address {:?} is not a valid FQDN or an IP address",
                    we.address
                ),
            );
        }
    }
    for (name, port) in &we.ports {
        r.check(format!("{f}.ports.{name}"), validate_port(*port as i64));
    }
    r.check(format!("{f}.labels"), validate_labels(&we.labels));
}

/// Sidecar.
pub(crate) fn sidecar(r: &mut Report<'_>, s: &Sidecar) {
    if let Some(ws) = &s.workload_selector {
        if ws.match_labels.is_empty() {
            r.warn("spec.workloadSelector", "sidecar: workload selector specified without labels, will be applied to all services in namespace");
        }
    }
    if s.egress.is_empty()
        && s.ingress.is_empty()
        && s.outbound_traffic_policy.is_none()
        && s.inbound_connection_pool.is_none()
    {
        r.err("spec", "sidecar: empty configuration provided");
        return;
    }
    let mut ports = BTreeSet::new();
    let n = s.egress.len();
    for (i, e) in s.egress.iter().enumerate() {
        let f = format!("spec.egress[{i}]");
        match &e.port {
            None if i + 1 != n => r.err(&f, "sidecar: the egress listener with empty port should be the last listener in the list"),
            None => {}
            Some(p) => {
                r.check(format!("{f}.port.number"), validate_port(p.number as i64));
                if !ports.insert(p.number) {
                    r.err(format!("{f}.port"), "sidecar: ports on IP bound listeners must be unique");
                }
            }
        }
        if e.hosts.is_empty() {
            r.err(
                format!("{f}.hosts"),
                "sidecar: egress listener must contain at least one host",
            );
        }
        for (j, h) in e.hosts.iter().enumerate() {
            let hf = format!("{f}.hosts[{j}]");
            match h.split_once('/') {
                None => r.err(hf, format!("host must be of form namespace/dnsName: {h:?}")),
                Some((ns, host)) => {
                    if ns.is_empty() || host.is_empty() {
                        r.err(
                            hf,
                            format!(
                                "config namespace and dnsName in host entry cannot be empty: {h:?}"
                            ),
                        );
                    } else if ns != "*" && ns != "." && ns != "~" && !is_dns1123_label(ns) {
                        r.err(hf, format!("invalid namespace value {ns:?} in host {h:?}"));
                    } else if host != "*" {
                        r.check(hf, validate_wildcard_domain(host));
                    }
                }
            }
        }
    }
}
