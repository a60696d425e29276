//! Security resources → [`Policies`].
use super::Index;
use crate::api::destination_rule::WorkloadSelector;
use crate::api::security::{AuthorizationPolicy, PolicyTargetReference, Rule};
use crate::api::Resource;
use crate::snapshot::policy::JwtHeader;
use crate::snapshot::{
    AuthzAction, AuthzPolicy, AuthzRule, JwtRule, MtlsMode, PeerAuthn, Policies, RequestAuthn,
    Selector, TargetRef,
};

fn target_refs<'a>(
    res: &Resource,
    refs: impl Iterator<Item = &'a PolicyTargetReference>,
) -> Vec<TargetRef> {
    refs.map(|t| TargetRef {
        group: t.group.clone().unwrap_or_default(),
        kind: t.kind.clone(),
        name: t.name.clone(),
        namespace: t
            .namespace
            .clone()
            .unwrap_or_else(|| res.namespace().to_string()),
    })
    .collect()
}

/// `when` keys Strait evaluates (Istio's condition keys). Keys are matched
/// on their name up to `[`.
pub const CONDITION_KEYS: &[&str] = &[
    "request.headers",
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "request.auth.claims",
    "destination.ip",
    "destination.port",
    "connection.sni",
];

/// `true` when `key` is one of Istio's condition keys Strait evaluates.
pub fn known_condition_key(key: &str) -> bool {
    let base = key.split('[').next().unwrap_or(key);
    let bracket_ok = match base {
        "request.headers" | "request.auth.claims" => {
            key.len() > base.len() + 2 && key.ends_with(']')
        }
        _ => key == base,
    };
    CONDITION_KEYS.contains(&base) && bracket_ok
}

/// What of `ap` Strait cannot enforce as Istio would (see
/// [`AuthzPolicy::not_enforced`]).
fn not_enforced(ap: &AuthorizationPolicy, refs: &[TargetRef]) -> Vec<String> {
    let mut out = Vec::new();
    let identity = ap.rules.iter().any(|r| {
        r.from.iter().any(|f| {
            let s = &f.source;
            !(s.principals.is_empty()
                && s.not_principals.is_empty()
                && s.namespaces.is_empty()
                && s.not_namespaces.is_empty()
                && s.service_accounts.is_empty()
                && s.not_service_accounts.is_empty()
                && s.trust_domains.is_empty()
                && s.not_trust_domains.is_empty())
        }) || r
            .when
            .iter()
            .any(|c| c.key == "source.principal" || c.key == "source.namespace")
    });
    if identity {
        out.push(
            "principals / namespaces / serviceAccounts / trustDomains / source.principal / source.namespace need the peer's mTLS \
             identity, which Strait does not have yet (HBONE/mTLS not built): rules using them \
             never allow (ALLOW) and always deny (DENY, CUSTOM)"
                .into(),
        );
    }
    for (i, r) in ap.rules.iter().enumerate() {
        for (j, c) in r.when.iter().enumerate() {
            if !known_condition_key(&c.key) {
                out.push(format!(
                    "rules[{i}].when[{j}].key {:?} is not a condition key Strait knows: \
                     the policy fails closed (every request to the workload is denied)",
                    c.key
                ));
            }
        }
    }
    for t in refs {
        if !(t.kind == "Service" && t.group.is_empty() || t.kind == "Gateway") {
            out.push(format!(
                "targetRef {}/{} {}: only Service and Gateway targets are supported; \
                 the policy applies to no workload",
                t.group, t.kind, t.name
            ));
        }
    }
    out
}

fn selector(res: &Resource, s: Option<&WorkloadSelector>) -> Selector {
    Selector {
        namespace: res.namespace().to_string(),
        match_labels: s.map(|s| s.match_labels.clone()).filter(|m| !m.is_empty()),
    }
}

pub(crate) fn mtls_mode(m: Option<&str>) -> MtlsMode {
    match m {
        Some("DISABLE") => MtlsMode::Disable,
        Some("PERMISSIVE") => MtlsMode::Permissive,
        Some("STRICT") => MtlsMode::Strict,
        _ => MtlsMode::Unset,
    }
}

/// `true` when a rule needs HTTP attributes (Istio: such a rule on a TCP
/// port is ignored for ALLOW and matches for DENY).
pub(crate) fn rule_needs_l7(r: &Rule) -> bool {
    let op = r.to.iter().any(|t| {
        let o = &t.operation;
        !(o.hosts.is_empty()
            && o.not_hosts.is_empty()
            && o.methods.is_empty()
            && o.not_methods.is_empty()
            && o.paths.is_empty()
            && o.not_paths.is_empty())
    });
    let src = r.from.iter().any(|f| {
        !(f.source.request_principals.is_empty()
            && f.source.not_request_principals.is_empty()
            && f.source.remote_ip_blocks.is_empty()
            && f.source.not_remote_ip_blocks.is_empty())
    });
    let when = r.when.iter().any(|c| c.key.starts_with("request."));
    op || src || when
}

/// Every policy, sorted by `namespace/name`.
pub(crate) fn build(idx: &Index<'_>) -> Policies {
    let name = |r: &Resource| format!("{}/{}", r.namespace(), r.name());
    let mut p = Policies::default();
    for (r, pa) in &idx.peer_authn {
        p.peer_authentication.push(PeerAuthn {
            name: name(r),
            selector: selector(r, pa.selector.as_ref()),
            mode: mtls_mode(pa.mtls.as_ref().and_then(|m| m.mode.as_deref())),
            port_level: pa
                .port_level_mtls
                .iter()
                .map(|(port, m)| (*port as u16, mtls_mode(m.mode.as_deref())))
                .collect(),
            created: r
                .object
                .metadata()
                .creation_timestamp
                .as_ref()
                .and_then(|t| serde_json::to_value(t).ok())
                .and_then(|v| v.as_str().map(String::from)),
        });
    }
    for (r, ra) in &idx.request_authn {
        p.request_authentication.push(RequestAuthn {
            name: name(r),
            selector: selector(r, ra.selector.as_ref()),
            target_refs: target_refs(r, ra.targets()),
            jwt_rules: ra
                .jwt_rules
                .iter()
                .map(|j| JwtRule {
                    issuer: j.issuer.clone(),
                    audiences: j.audiences.clone(),
                    jwks_uri: j.jwks_uri.clone(),
                    jwks: j.jwks.clone(),
                    from_headers: j
                        .from_headers
                        .iter()
                        .map(|h| JwtHeader {
                            name: h.name.clone(),
                            prefix: h.prefix.clone().unwrap_or_default(),
                        })
                        .collect(),
                    from_params: j.from_params.clone(),
                    from_cookies: j.from_cookies.clone(),
                    output_payload_to_header: j.output_payload_to_header.clone(),
                    forward_original_token: j.forward_original_token.unwrap_or(false),
                    output_claim_to_headers: j
                        .output_claim_to_headers
                        .iter()
                        .map(|c| (c.claim.clone(), c.header.clone()))
                        .collect(),
                    // Validation rejects a bad duration (CRD CEL rule).
                    timeout_ms: j
                        .timeout
                        .as_deref()
                        .and_then(|t| crate::duration::parse(t).ok())
                        .map(|d| d.as_millis() as u64),
                    space_delimited_claims: j.space_delimited_claims.clone(),
                    presence_required: j
                        .presence
                        .as_ref()
                        .and_then(|p| p.as_str())
                        .is_some_and(|p| p == "REQUIRED"),
                })
                .collect(),
        });
    }
    for (r, ap) in &idx.authz {
        let refs = target_refs(r, ap.targets());
        p.authorization.push(AuthzPolicy {
            name: name(r),
            selector: selector(r, ap.selector.as_ref()),
            not_enforced: not_enforced(ap, &refs),
            target_refs: refs,
            action: match ap.action.as_deref() {
                Some("DENY") => AuthzAction::Deny,
                Some("AUDIT") => AuthzAction::Audit,
                Some("CUSTOM") => AuthzAction::Custom,
                _ => AuthzAction::Allow,
            },
            provider: ap.provider.as_ref().map(|p| p.name.clone()),
            rules: ap
                .rules
                .iter()
                .map(|rule| AuthzRule {
                    from: rule.from.iter().map(|f| f.source.clone()).collect(),
                    to: rule.to.iter().map(|t| t.operation.clone()).collect(),
                    when: rule.when.clone(),
                })
                .collect(),
            needs_l7: ap.rules.iter().any(rule_needs_l7),
        });
    }
    p
}
