//! What `strait analyze` says about DestinationRule `trafficPolicy.tls`
//! settings that the daemon refuses (fail closed) rather than honours:
//!
//! - `credentialName` (SIMPLE/MUTUAL): Strait has no Kubernetes Secret
//!   model, so connections through that policy are refused with 503 `UF`.
//! - `ISTIO_MUTUAL`: needs workload certificates (`strait run --ca-dir` or
//!   `--ca-address`); endpoints of the host that are not meshed (no known
//!   workload identity) are refused, as Envoy's handshake with a
//!   non-Istio peer would fail (503 `UF`).
//!
//! Both are warnings without an Istio code (Istio has none for them).
use crate::api::destination_rule::{ClientTlsSettings, DestinationRule, TrafficPolicy};
use crate::api::{Object, Resource};
use crate::diag::{Diagnostic, Level};
use crate::hosts;
use crate::snapshot::MeshSnapshot;

/// The `tls` blocks of one traffic policy (and its port-level settings).
fn policy_blocks<'a>(
    prefix: &str,
    p: &'a TrafficPolicy,
    out: &mut Vec<(String, &'a ClientTlsSettings)>,
) {
    if let Some(t) = &p.tls {
        out.push((format!("{prefix}.tls"), t));
    }
    for (i, pl) in p.port_level_settings.iter().enumerate() {
        if let Some(t) = &pl.tls {
            out.push((format!("{prefix}.portLevelSettings[{i}].tls"), t));
        }
    }
}

/// Every `tls` block of a DestinationRule with its field path.
fn tls_blocks(dr: &DestinationRule) -> Vec<(String, &ClientTlsSettings)> {
    let mut out = Vec::new();
    if let Some(p) = &dr.traffic_policy {
        policy_blocks("spec.trafficPolicy", p, &mut out);
    }
    for (i, s) in dr.subsets.iter().enumerate() {
        if let Some(p) = &s.traffic_policy {
            policy_blocks(&format!("spec.subsets[{i}].trafficPolicy"), p, &mut out);
        }
    }
    out
}

/// Warnings for the DestinationRules among `resources` (see the module doc).
pub(crate) fn tls_gaps(resources: &[&Resource], snap: &MeshSnapshot, out: &mut Vec<Diagnostic>) {
    for r in resources {
        let Object::DestinationRule(d) = &r.object else {
            continue;
        };
        let host = hosts::resolve(&d.spec.host, r.namespace());
        for (field, t) in tls_blocks(&d.spec) {
            let mode = t.mode.as_deref().unwrap_or("DISABLE");
            if matches!(mode, "SIMPLE" | "MUTUAL") && t.credential_name.is_some() {
                out.push(Diagnostic::at(
                    Level::Warning,
                    r,
                    format!("{field}.credentialName"),
                    "credentialName names a Kubernetes Secret, which Strait does not read: \
                     connections through this TLS policy are refused (503 UF); use \
                     caCertificates/clientCertificate/privateKey files"
                        .to_string(),
                ));
            }
            if mode != "ISTIO_MUTUAL" {
                continue;
            }
            out.push(Diagnostic::at(
                Level::Info,
                r,
                format!("{field}.mode"),
                "ISTIO_MUTUAL uses the workloads' certificates: a daemon without a CA \
                 (--ca-dir or --ca-address) refuses these connections (503 UF)"
                    .to_string(),
            ));
            let outside: Vec<String> = snap
                .clusters
                .values()
                .filter(|c| hosts::matches(&host, &c.host))
                .flat_map(|c| &c.endpoints)
                .filter(|e| e.service_account.is_none())
                .map(|e| e.addr.to_string())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            if !outside.is_empty() {
                out.push(Diagnostic::at(
                    Level::Warning,
                    r,
                    format!("{field}.mode"),
                    format!(
                        "ISTIO_MUTUAL to endpoints outside the mesh (no workload identity): \
                         connections to {} are refused (503 UF)",
                        outside.join(", ")
                    ),
                ));
            }
        }
    }
}
