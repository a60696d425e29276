//! Per-workload policy sets and Istio's evaluation order
//! (`security/authorization` concepts; Envoy RBAC filters in the order
//! Istio installs them): CUSTOM, then DENY, then ALLOW; AUDIT only logs.
use std::sync::Arc;

use strait_config::snapshot::{AuthzAction, AuthzPolicy};

use super::attrs::Attrs;
use super::jwt::Authn;
use super::matcher::Tri;
use super::rule::CRule;

/// One compiled AuthorizationPolicy.
#[derive(Debug)]
pub struct CompiledPolicy {
    /// `namespace/name`.
    pub name: Arc<str>,
    /// Action.
    pub action: AuthzAction,
    /// Rules, ORed; `Err` when the policy cannot be compiled (unknown
    /// condition key, ...): it then denies everything (fail closed).
    pub rules: Result<Vec<CRule>, String>,
}

impl CompiledPolicy {
    /// Compiles `p`. Never fails: what cannot be compiled is kept as the
    /// reason the policy denies everything.
    pub fn new(p: &AuthzPolicy) -> Self {
        let rules = p
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| CRule::compile(&p.name, i, r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string());
        Self {
            name: p.name.as_str().into(),
            action: p.action,
            rules,
        }
    }

    /// Whether a rule matches (OR over rules; no rules: never).
    pub fn matches(&self, a: &Attrs<'_>) -> Tri {
        let Ok(rules) = &self.rules else {
            return Tri::Unknown;
        };
        let mut out = Tri::No;
        for r in rules {
            out = out.max(r.eval(a));
            if out == Tri::Yes {
                break;
            }
        }
        out
    }
}

/// Why a request was denied (or allowed), for logs and the access log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// No ALLOW policy applies and no DENY / CUSTOM matched.
    NoAllowPolicy,
    /// An ALLOW policy matched.
    AllowMatched,
    /// ALLOW policies apply and none matched.
    NoAllowMatched,
    /// A DENY policy matched.
    DenyMatched,
    /// A DENY policy may match: a rule needs an attribute not available
    /// here (the peer's mTLS identity; HTTP fields on a TCP connection,
    /// which Istio ignores in DENY rules), so it is taken as matching.
    DenyUndecidable,
    /// A CUSTOM policy matched (or may match): Strait has no external
    /// authorizer client, so it denies (fail closed).
    CustomUnsupported,
    /// A policy could not be compiled: everything is denied.
    PolicyInvalid,
    /// The destination workload is on another node, where Strait does not
    /// intercept inbound traffic yet: it cannot be protected, so traffic
    /// to it through this node is denied.
    RemoteWorkload,
}

impl Why {
    /// Short text for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Why::NoAllowPolicy => "no ALLOW policy",
            Why::AllowMatched => "ALLOW policy matched",
            Why::NoAllowMatched => "no ALLOW policy matched",
            Why::DenyMatched => "DENY policy matched",
            Why::DenyUndecidable => {
                "DENY policy may match (mTLS identity not available, or HTTP fields on TCP): denied"
            }
            Why::CustomUnsupported => "CUSTOM policy matched: no external authorizer, denied",
            Why::PolicyInvalid => "policy cannot be enforced: denied",
            Why::RemoteWorkload => {
                "policy-selected workload on another node cannot be protected: denied"
            }
        }
    }
}

/// The outcome of authorization.
#[derive(Clone, Debug)]
pub struct Decision {
    /// Allowed?
    pub allowed: bool,
    /// Why.
    pub why: Why,
    /// The policy that decided (`namespace/name`), if one did.
    pub policy: Option<Arc<str>>,
    /// The AUDIT policies that matched (logged by the caller).
    pub audited: Vec<Arc<str>>,
}

impl Decision {
    fn deny(why: Why, policy: Option<&Arc<str>>) -> Self {
        Self {
            allowed: false,
            why,
            policy: policy.cloned(),
            audited: Vec::new(),
        }
    }
}

/// Everything that applies to one workload, built at snapshot swap.
#[derive(Debug, Default)]
pub struct PolicySet {
    /// CUSTOM policies.
    pub custom: Vec<Arc<CompiledPolicy>>,
    /// DENY policies.
    pub deny: Vec<Arc<CompiledPolicy>>,
    /// ALLOW policies.
    pub allow: Vec<Arc<CompiledPolicy>>,
    /// AUDIT policies.
    pub audit: Vec<Arc<CompiledPolicy>>,
    /// The workload's RequestAuthentication rules (`None`: none apply).
    pub authn: Option<Arc<Authn>>,
}

impl PolicySet {
    /// Adds a compiled policy under its action.
    pub fn push(&mut self, p: Arc<CompiledPolicy>) {
        match p.action {
            AuthzAction::Custom => self.custom.push(p),
            AuthzAction::Deny => self.deny.push(p),
            AuthzAction::Allow => self.allow.push(p),
            AuthzAction::Audit => self.audit.push(p),
        }
    }

    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.custom.is_empty()
            && self.deny.is_empty()
            && self.allow.is_empty()
            && self.audit.is_empty()
            && self.authn.is_none()
    }

    /// Istio's authorization of `a`: a policy that cannot be compiled
    /// denies; a CUSTOM match denies (no external authorizer yet); a DENY
    /// match (or an undecidable DENY rule) denies; then, if ALLOW policies
    /// apply, one must match. AUDIT matches are reported, never decide.
    pub fn authorize(&self, a: &Attrs<'_>) -> Decision {
        for p in self.custom.iter().chain(&self.deny).chain(&self.allow) {
            if p.rules.is_err() {
                return Decision::deny(Why::PolicyInvalid, Some(&p.name));
            }
        }
        for p in &self.custom {
            if p.matches(a) != Tri::No {
                return Decision::deny(Why::CustomUnsupported, Some(&p.name));
            }
        }
        for p in &self.deny {
            match p.matches(a) {
                Tri::Yes => return Decision::deny(Why::DenyMatched, Some(&p.name)),
                Tri::Unknown => return Decision::deny(Why::DenyUndecidable, Some(&p.name)),
                Tri::No => {}
            }
        }
        let mut d = if self.allow.is_empty() {
            Decision {
                allowed: true,
                why: Why::NoAllowPolicy,
                policy: None,
                audited: Vec::new(),
            }
        } else {
            match self.allow.iter().find(|p| p.matches(a) == Tri::Yes) {
                Some(p) => Decision {
                    allowed: true,
                    why: Why::AllowMatched,
                    policy: Some(p.name.clone()),
                    audited: Vec::new(),
                },
                None => Decision::deny(Why::NoAllowMatched, None),
            }
        };
        d.audited = self
            .audit
            .iter()
            .filter(|p| p.matches(a) != Tri::No)
            .map(|p| p.name.clone())
            .collect();
        d
    }
}
