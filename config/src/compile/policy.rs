//! Security resources → [`Policies`].
use super::Index;
use crate::api::destination_rule::WorkloadSelector;
use crate::api::security::Rule;
use crate::api::Resource;
use crate::snapshot::policy::JwtHeader;
use crate::snapshot::{
    AuthzAction, AuthzPolicy, AuthzRule, JwtRule, MtlsMode, PeerAuthn, Policies, RequestAuthn,
    Selector,
};

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
        });
    }
    for (r, ra) in &idx.request_authn {
        p.request_authentication.push(RequestAuthn {
            name: name(r),
            selector: selector(r, ra.selector.as_ref()),
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
                })
                .collect(),
        });
    }
    for (r, ap) in &idx.authz {
        p.authorization.push(AuthzPolicy {
            name: name(r),
            selector: selector(r, ap.selector.as_ref()),
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
