//! Fail closed: a security resource Strait cannot enforce yet
//! ([`crate::enforced::fails_closed`]) denies all traffic to the workloads it
//! selects. Their IPs go to [`MeshSnapshot::deny`] and their endpoints leave
//! every cluster — and so every kernel backend set, built from the clusters —
//! so an L7 request to their services gets Envoy's 503 `UH` (no healthy
//! upstream) and an L4 connection has no backend. This is the single
//! decision point: when a kind or field becomes enforced, its row leaves
//! [`crate::enforced::TABLE`] and the workloads are reachable again.
//!
//! Scope as Istio's: a resource in the root namespace (MeshConfig
//! `rootNamespace`) without selector selects the whole mesh; without
//! selector elsewhere, its namespace; `selector.matchLabels`, the matching
//! workloads of its namespace; `targetRef(s)` to a Service, that Service's
//! workloads (any other target kind: its whole namespace, to stay closed).
use std::collections::BTreeMap;

use crate::api::security::PolicyTargetReference;
use crate::api::{Object, Resource};
use crate::mesh::MeshConfig;
use crate::snapshot::{MeshSnapshot, Workload};

/// What a security resource selects.
struct Scope<'a> {
    namespace: &'a str,
    labels: Option<&'a BTreeMap<String, String>>,
    targets: Vec<&'a PolicyTargetReference>,
}

fn scope(res: &Resource) -> Option<Scope<'_>> {
    let ns = res.namespace();
    let (selector, targets) = match &res.object {
        Object::AuthorizationPolicy(o) => (o.spec.selector.as_ref(), o.spec.targets().collect()),
        Object::RequestAuthentication(o) => (o.spec.selector.as_ref(), o.spec.targets().collect()),
        Object::PeerAuthentication(o) => (o.spec.selector.as_ref(), Vec::new()),
        _ => return None,
    };
    Some(Scope {
        namespace: ns,
        labels: selector.map(|s| &s.match_labels).filter(|l| !l.is_empty()),
        targets,
    })
}

fn selects(s: &Scope<'_>, root: &str, w: &Workload) -> bool {
    if !s.targets.is_empty() {
        return s.targets.iter().any(|t| {
            let ns = t
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(s.namespace);
            if w.namespace != ns {
                return false;
            }
            if t.kind == "Service" {
                let prefix = format!("{}.{ns}.", t.name);
                w.services.iter().any(|h| h.starts_with(&prefix))
            } else {
                true
            }
        });
    }
    match s.labels {
        None if s.namespace == root => true,
        None => w.namespace == s.namespace,
        Some(l) => w.namespace == s.namespace && l.iter().all(|(k, v)| w.labels.get(k) == Some(v)),
    }
}

/// Marks the workloads `valid` security resources cannot protect and drops
/// their endpoints from the clusters.
pub(crate) fn fail_closed(
    valid: &[&Resource],
    mesh: &MeshConfig,
    opts: &super::CompileOptions,
    snap: &mut MeshSnapshot,
) {
    for res in valid {
        if !crate::enforced::fails_closed(res) {
            continue;
        }
        // Enforced in each pod's network namespace by the daemon.
        if opts.peer_authn_enforced && matches!(res.object, Object::PeerAuthentication(_)) {
            continue;
        }
        let Some(s) = scope(res) else { continue };
        for w in snap.workloads.values() {
            if selects(&s, &mesh.root_namespace, w) {
                snap.deny.entry(w.ip).or_insert_with(|| {
                    format!(
                        "{} is not enforced by Strait yet: traffic to this workload is denied (fail closed)",
                        res.key()
                    )
                });
            }
        }
    }
    if snap.deny.is_empty() {
        return;
    }
    for c in snap.clusters.values_mut() {
        c.endpoints
            .retain(|e| !snap.deny.contains_key(&e.addr.ip()));
    }
}
