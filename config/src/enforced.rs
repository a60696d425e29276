//! What Strait accepts but does not enforce yet: one table, field path →
//! status, reported by `strait analyze` and logged by the daemon as
//! [`FIELD_NOT_ENFORCED`] (`STR0001`) once per resource per load. The
//! README's "Not yet enforced" section mirrors [`TABLE`] (a test checks
//! they agree); remove a row when its feature lands.
//!
//! Security rows are [`Status::FailClosed`]: until Strait enforces them, the
//! workloads the resource selects get no traffic (see
//! [`crate::snapshot::MeshSnapshot::deny`]), instead of the traffic flowing
//! unchecked.
use serde_json::Value;

pub use crate::analyze::FIELD_NOT_ENFORCED;
use crate::api::{Object, Resource};
use crate::diag::{Diagnostic, Level};

/// What happens to a field Strait does not enforce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Accepted, reported, without effect.
    NotEnforced,
    /// A security setting: the selected workloads are made unreachable
    /// until Strait enforces it.
    FailClosed,
}

/// One row: `kind` + field path (array items `[]`, map values `*`).
#[derive(Clone, Copy, Debug)]
pub struct Row {
    /// Kind, e.g. `DestinationRule`.
    pub kind: &'static str,
    /// Path, e.g. `spec.trafficPolicy.tunnel`; `spec` for the whole kind.
    pub path: &'static str,
    /// Status.
    pub status: Status,
    /// Why / what would enforce it.
    pub note: &'static str,
}

const fn row(kind: &'static str, path: &'static str, note: &'static str) -> Row {
    Row {
        kind,
        path,
        status: Status::NotEnforced,
        note,
    }
}

const fn closed(kind: &'static str, path: &'static str, note: &'static str) -> Row {
    Row {
        kind,
        path,
        status: Status::FailClosed,
        note,
    }
}

/// AuthorizationPolicy and RequestAuthentication are enforced by the
/// proxy's policy module (`proxy-userspace/src/policy`), which fails closed
/// itself for what it cannot evaluate (`strait analyze` reports those).
///
/// Every field Strait accepts without enforcing it (DestinationRule rows
/// under `spec.trafficPolicy` cover subsets' and port-level policies too). Kinds not listed here and
/// not typed by Strait (Telemetry, WorkloadGroup, ProxyConfig, WasmPlugin,
/// EnvoyFilter, TrafficExtension) are reported whole at load.
pub const TABLE: &[Row] = &[
    closed("PeerAuthentication", "spec.mtls.mode", "STRICT is enforced in the kernel by strait run with a CA (--ca-dir or --ca-address; in-pod capture is on unless --no-inbound-capture); otherwise the selected workloads are unreachable"),
    closed("PeerAuthentication", "spec.portLevelMtls", "STRICT ports are enforced in the kernel by strait run with a CA (unless --no-inbound-capture); otherwise the selected workloads are unreachable"),
    row("DestinationRule", "spec.trafficPolicy.tunnel", "no HTTP CONNECT tunnelling"),
    row("DestinationRule", "spec.trafficPolicy.proxyProtocol", "no PROXY protocol to upstreams"),
    row("DestinationRule", "spec.trafficPolicy.retryBudget", "retry budgets"),
    row("DestinationRule", "spec.trafficPolicy.loadBalancer.warmup", "slow start"),
    row("DestinationRule", "spec.trafficPolicy.loadBalancer.warmupDurationSecs", "slow start"),
    row("DestinationRule", "spec.trafficPolicy.loadBalancer.localityLbSetting", "locality-weighted load balancing and failover"),
    row("DestinationRule", "spec.trafficPolicy.loadBalancer.backendUtilization", "ORCA load reports"),
    row("DestinationRule", "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting", "zone-aware load balancing"),
    row("DestinationRule", "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes", "cookie attributes"),
    row("DestinationRule", "spec.trafficPolicy.connectionPool.http.http2KeepAlive", "HTTP/2 PING keep-alive"),
    row("DestinationRule", "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes", "custom ejection status codes"),
    row("DestinationRule", "spec.workloadSelector", "DestinationRules apply to every client"),
    row("Gateway", "spec.servers[].tls.caCertCredentialName", "gateway client-certificate CA from a separate secret"),
    row("Gateway", "spec.servers[].tls.ecdhCurves", "rustls' default curves are used"),
    row("Gateway", "spec.servers[].tls.tlsCertificates", "multiple inline certificates"),
    row("Gateway", "spec.servers[].tls.insecureSkipVerify", "client certificate verification options"),
    row("VirtualService", "spec.http[].redirect.prefixRewrite", "redirect prefix rewrite"),
    row("VirtualService", "spec.http[].retries.retryIgnorePreviousHosts", "retries may pick the same host"),
    row("VirtualService", "spec.http[].fault.abort.http2Error", "HTTP/2 error aborts"),
    row("VirtualService", "spec.http[].fault.delay.exponentialDelay", "exponential delays"),
    row("VirtualService", "spec.tcp[].match[].sourceSubnet", "source subnet matches"),
    row("Sidecar", "spec.ingress", "inbound listeners (the daemon does not intercept inbound traffic)"),
    row("Sidecar", "spec.inboundConnectionPool", "inbound connection pools"),
    row("Sidecar", "spec.outboundTrafficPolicy", "per-Sidecar outbound policy (the mesh config's applies)"),
    row("Sidecar", "spec.egress[].captureMode", "capture modes"),
    row("ServiceEntry", "spec.subjectAltNames", "checked by mesh mTLS (HBONE), not built yet; DestinationRule tls.subjectAltNames is enforced"),
    row("ServiceEntry", "spec.endpoints[].network", "multi-network"),
    row("WorkloadEntry", "spec.network", "multi-network"),
];

/// Rows whose field `res` sets, with the first concrete path set.
pub fn findings(res: &Resource) -> Vec<(&'static Row, String)> {
    let Some(spec) = spec_json(&res.object) else {
        return Vec::new();
    };
    let mut present = Vec::new();
    leaves(&spec, "spec", "spec", &mut present);
    let kind = res.kind();
    let mut out = Vec::new();
    for row in TABLE.iter().filter(|r| r.kind == kind) {
        let hit = present.iter().find(|(generic, _)| {
            generic == row.path
                || generic
                    .strip_prefix(row.path)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        });
        if let Some((_, concrete)) = hit {
            if applies(row, res) {
                out.push((row, concrete.clone()));
            }
        }
    }
    out
}

/// Value-dependent rows: PeerAuthentication is fail-closed only for STRICT.
fn applies(row: &Row, res: &Resource) -> bool {
    match (&res.object, row.path) {
        (Object::PeerAuthentication(p), "spec.mtls.mode") => {
            p.spec.mtls.as_ref().and_then(|m| m.mode.as_deref()) == Some("STRICT")
        }
        (Object::PeerAuthentication(p), "spec.portLevelMtls") => p
            .spec
            .port_level_mtls
            .values()
            .any(|m| m.mode.as_deref() == Some("STRICT")),
        _ => true,
    }
}

/// `true` when `res` is a security resource Strait cannot enforce, so the
/// workloads it selects must be denied all traffic.
pub fn fails_closed(res: &Resource) -> bool {
    findings(res)
        .iter()
        .any(|(r, _)| r.status == Status::FailClosed)
}

/// One `STR0001` diagnostic per row `res` hits (for a MeshConfig, per field
/// it sets that Strait does not apply), in Istio's message style.
pub fn diagnostics(res: &Resource) -> Vec<Diagnostic> {
    if let Object::MeshConfig(m) = &res.object {
        return m
            .mesh
            .not_enforced()
            .into_iter()
            .map(|(field, why)| {
                Diagnostic::at(
                    Level::Warning,
                    res,
                    field.clone(),
                    format!("MeshConfig field {field} is not yet enforced by Strait and has no effect: {why}"),
                )
                .with_code(FIELD_NOT_ENFORCED)
            })
            .collect();
    }
    findings(res)
        .into_iter()
        .map(|(row, path)| {
            let (level, what) = match row.status {
                Status::NotEnforced => (Level::Warning, "has no effect"),
                Status::FailClosed => (Level::Warning, "fails closed"),
            };
            Diagnostic::at(
                level,
                res,
                path.clone(),
                format!(
                    "Field {path} is not yet enforced by Strait and {what}: {}",
                    row.note
                ),
            )
            .with_code(FIELD_NOT_ENFORCED)
        })
        .collect()
}

fn spec_json(o: &Object) -> Option<Value> {
    let v = match o {
        Object::VirtualService(o) => serde_json::to_value(&o.spec),
        Object::DestinationRule(o) => serde_json::to_value(&o.spec),
        Object::Gateway(o) => serde_json::to_value(&o.spec),
        Object::ServiceEntry(o) => serde_json::to_value(&o.spec),
        Object::Sidecar(o) => serde_json::to_value(&o.spec),
        Object::WorkloadEntry(o) => serde_json::to_value(&o.spec),
        Object::PeerAuthentication(o) => serde_json::to_value(&o.spec),
        Object::RequestAuthentication(o) => serde_json::to_value(&o.spec),
        Object::AuthorizationPolicy(o) => serde_json::to_value(&o.spec),
        _ => return None,
    };
    v.ok()
}

/// Set leaves as (generic path, concrete path). Empty strings, lists and
/// maps and nulls are "not set". The spec itself counts as set (so a row
/// for `spec` matches every resource of its kind).
fn leaves(v: &Value, generic: &str, concrete: &str, out: &mut Vec<(String, String)>) {
    if generic == "spec" {
        out.push(("spec".to_string(), "spec".to_string()));
    }
    match v {
        Value::Null => {}
        Value::String(s) if s.is_empty() => {}
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                leaves(x, &format!("{generic}[]"), &format!("{concrete}[{i}]"), out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                leaves(
                    x,
                    &format!("{generic}.{k}"),
                    &format!("{concrete}.{k}"),
                    out,
                );
            }
        }
        _ => out.push((normalise(generic), concrete.to_string())),
    }
}

/// DestinationRule subset and port-level policies share the rows of
/// `spec.trafficPolicy`.
fn normalise(generic: &str) -> String {
    generic
        .replace("spec.subsets[].trafficPolicy", "spec.trafficPolicy")
        .replace("trafficPolicy.portLevelSettings[]", "trafficPolicy")
}
