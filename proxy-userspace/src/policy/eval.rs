//! Per-workload policy sets and Istio's evaluation order
//! (`security/authorization` concepts; Envoy RBAC filters in the order
//! Istio installs them): CUSTOM, then DENY, then ALLOW; AUDIT only logs.
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use strait_config::snapshot::{AuthzAction, AuthzPolicy};

use super::attrs::Attrs;
use super::ext_authz::ExtAuthz;
use super::jwt::Authn;
use super::matcher::Tri;
use super::rule::{CRule, PathKey};

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
    /// CUSTOM: the `provider.name` (resolved against the mesh config's
    /// `extensionProviders` when the table is built).
    pub provider: Option<Arc<str>>,
    /// A rule uses HTTP-only attributes (`AuthzPolicy::needs_l7`: methods,
    /// paths, hosts, request principals, `request.*` keys): deciding it
    /// needs the requests, not only the connection.
    pub needs_l7: bool,
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
            provider: p.provider.as_deref().map(Into::into),
            needs_l7: p.needs_l7,
        }
    }

    /// Whether the policy can match a request to destination port `port`
    /// (a policy that failed to compile always can: it denies).
    pub fn can_match_port(&self, port: u16) -> bool {
        match &self.rules {
            Err(_) => true,
            Ok(rules) => rules.iter().any(|r| r.can_match_port(port)),
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
    /// A CUSTOM policy matched (or may match) and its provider cannot be
    /// asked: unknown or unusable `extensionProviders` entry, an
    /// `envoyExtAuthzGrpc` provider, several providers on one workload,
    /// or a TCP connection (an HTTP authorizer cannot check it). Denied
    /// (fail closed).
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
            Why::CustomUnsupported => {
                "CUSTOM policy matched and its provider cannot be asked (see strait analyze): denied"
            }
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
    /// Allowed (by the DENY and ALLOW policies)?
    pub allowed: bool,
    /// Why.
    pub why: Why,
    /// The policy that decided (`namespace/name`), if one did.
    pub policy: Option<Arc<str>>,
    /// The AUDIT policies that matched (logged by the caller).
    pub audited: Vec<Arc<str>>,
    /// A CUSTOM policy matched: this external authorizer must be asked
    /// first (Istio's order CUSTOM → DENY → ALLOW); `allowed` applies only
    /// if it allows. `None` when no CUSTOM policy matched.
    pub external: Option<(Arc<ExtAuthz>, Arc<str>)>,
}

impl Decision {
    fn deny(why: Why, policy: Option<&Arc<str>>) -> Self {
        Self {
            allowed: false,
            why,
            policy: policy.cloned(),
            audited: Vec::new(),
            external: None,
        }
    }
}

/// Lists shorter than this are evaluated in order; longer ones through a
/// [`PathIndex`].
const INDEX_MIN: usize = 16;

/// The policies of one action list that can match an HTTP request: those
/// indexed under its exact path, one of its path prefixes, or the exact
/// value of a request header one of their rules requires, plus those that
/// cannot be indexed. Each rule is indexed by its paths when every
/// operation lists exact / `prefix*` paths, else by a `when` condition on
/// `request.headers[...]` with exact values, else not at all (its policy is
/// always a candidate). Built once per policy set (at snapshot swap).
#[derive(Debug, Default)]
struct PathIndex {
    /// Policies some rule of which cannot be indexed.
    always: Vec<u32>,
    /// Exact path → policies.
    exact: Keyed,
    /// Path prefix → policies.
    prefix: Keyed,
    /// The distinct prefix lengths in `prefix`, ascending.
    prefix_lens: Vec<usize>,
    /// Header → exact value → policies.
    headers: Vec<(http::HeaderName, Keyed)>,
}

/// A key (exact path, prefix, header value) → the policies under it.
type Keyed = HashMap<Box<str>, Vec<u32>>;

fn add(map: &mut Keyed, key: &str, i: u32) {
    let v = map.entry(key.into()).or_default();
    if v.last() != Some(&i) {
        v.push(i);
    }
}

impl PathIndex {
    /// `None` for short lists (a scan is cheaper) and lists where no policy
    /// can be indexed.
    fn build(list: &[Arc<CompiledPolicy>]) -> Option<Self> {
        if list.len() < INDEX_MIN {
            return None;
        }
        let mut ix = PathIndex::default();
        for (i, p) in list.iter().enumerate() {
            let i = i as u32;
            let rules = match &p.rules {
                Ok(rules) => rules,
                // Invalid policies deny before any list is consulted.
                Err(_) => {
                    ix.always.push(i);
                    continue;
                }
            };
            // Every rule needs a key, else the policy is always a candidate.
            // (No rules: never matches, so never a candidate.)
            if !rules
                .iter()
                .all(|r| r.path_keys().is_some() || r.header_key().is_some())
            {
                ix.always.push(i);
                continue;
            }
            for r in rules {
                if let Some(keys) = r.path_keys() {
                    for k in keys {
                        match k {
                            PathKey::Exact(e) => add(&mut ix.exact, e, i),
                            PathKey::Prefix(p) => add(&mut ix.prefix, p, i),
                        }
                    }
                } else if let Some((name, vals)) = r.header_key() {
                    let at = match ix.headers.iter().position(|(n, _)| n == name) {
                        Some(at) => at,
                        None => {
                            ix.headers.push((name.clone(), HashMap::new()));
                            ix.headers.len() - 1
                        }
                    };
                    for v in vals {
                        add(&mut ix.headers[at].1, v, i);
                    }
                }
            }
        }
        if ix.always.len() == list.len() {
            return None;
        }
        let mut lens: Vec<usize> = ix.prefix.keys().map(|k| k.len()).collect();
        lens.sort_unstable();
        lens.dedup();
        ix.prefix_lens = lens;
        Some(ix)
    }

    /// The positions of the policies that can match a request with `path`
    /// and `headers`, ascending.
    fn candidates(&self, path: &str, headers: &dyn super::attrs::HeaderLookup) -> Vec<u32> {
        let mut out = self.always.clone();
        if let Some(v) = self.exact.get(path) {
            out.extend_from_slice(v);
        }
        for &l in &self.prefix_lens {
            if l > path.len() {
                break;
            }
            if let Some(v) = path.get(..l).and_then(|p| self.prefix.get(p)) {
                out.extend_from_slice(v);
            }
        }
        for (name, values) in &self.headers {
            if let Some(v) = headers.joined(name).and_then(|h| values.get(&*h)) {
                out.extend_from_slice(v);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// What [`PolicySet`] derives from its lists once.
#[derive(Debug, Default)]
struct Prepared {
    /// The first policy that failed to compile (it denies everything).
    invalid: Option<Arc<str>>,
    custom: Option<PathIndex>,
    deny: Option<PathIndex>,
    allow: Option<PathIndex>,
    audit: Option<PathIndex>,
}

/// Calls `f` on the policies of `list` that can match `a`, in list order,
/// until it returns `Some`: through `ix` for HTTP requests, every policy
/// otherwise (a TCP connection leaves HTTP fields undecided).
fn scan<'p, T>(
    list: &'p [Arc<CompiledPolicy>],
    ix: Option<&PathIndex>,
    a: &Attrs<'_>,
    mut f: impl FnMut(&'p Arc<CompiledPolicy>) -> Option<T>,
) -> Option<T> {
    match (ix, &a.http) {
        (Some(ix), Some(h)) => ix
            .candidates(h.path, h.headers)
            .into_iter()
            .find_map(|i| f(&list[i as usize])),
        _ => list.iter().find_map(f),
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
    /// The authorizer of the CUSTOM policies (`extensionProviders` entry
    /// named by their `provider`): `None` until resolved (a CUSTOM match
    /// then denies), `Err` with the reason it cannot be used (a match
    /// denies, `strait analyze` says why).
    pub ext_authz: Option<Result<Arc<ExtAuthz>, String>>,
    prepared: OnceLock<Prepared>,
}

impl PolicySet {
    /// Adds a compiled policy under its action.
    pub fn push(&mut self, p: Arc<CompiledPolicy>) {
        self.prepared = OnceLock::new();
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

    /// The policies of this set that can match requests to destination
    /// port `port` (the rest never match there: `ports` / `notPorts` /
    /// `destination.port` exclude it), sharing the authn rules and the
    /// authorizer. `None` when every policy can match (use this set).
    pub fn for_port(&self, port: u16) -> Option<PolicySet> {
        let keep = |l: &[Arc<CompiledPolicy>]| -> Vec<Arc<CompiledPolicy>> {
            l.iter()
                .filter(|p| p.can_match_port(port))
                .cloned()
                .collect()
        };
        let out = PolicySet {
            custom: keep(&self.custom),
            deny: keep(&self.deny),
            allow: keep(&self.allow),
            audit: keep(&self.audit),
            authn: self.authn.clone(),
            ext_authz: self.ext_authz.clone(),
            prepared: OnceLock::new(),
        };
        let same = out.custom.len() == self.custom.len()
            && out.deny.len() == self.deny.len()
            && out.allow.len() == self.allow.len()
            && out.audit.len() == self.audit.len();
        // An ALLOW list that loses every policy must still deny: keep the
        // set as it is then (its ALLOW policies evaluate to no match).
        if same || (!self.allow.is_empty() && out.allow.is_empty()) {
            return None;
        }
        Some(out)
    }

    /// Whether deciding a connection to destination port `port` needs its
    /// HTTP requests: a RequestAuthentication applies (JWTs are per
    /// request), or a CUSTOM, DENY or ALLOW policy that can match the port
    /// has HTTP-only attributes ([`CompiledPolicy::needs_l7`]). `false`:
    /// the connection's facts decide (once per connection). AUDIT policies
    /// only log and never make a connection L7.
    pub fn needs_http(&self, port: u16) -> bool {
        self.authn.is_some()
            || self
                .custom
                .iter()
                .chain(&self.deny)
                .chain(&self.allow)
                .any(|p| p.needs_l7 && p.can_match_port(port))
    }

    /// Builds the indexes now (else the first request does).
    pub fn prepare(&self) {
        self.prepared();
    }

    fn prepared(&self) -> &Prepared {
        self.prepared.get_or_init(|| Prepared {
            invalid: self
                .custom
                .iter()
                .chain(&self.deny)
                .chain(&self.allow)
                .find(|p| p.rules.is_err())
                .map(|p| p.name.clone()),
            custom: PathIndex::build(&self.custom),
            deny: PathIndex::build(&self.deny),
            allow: PathIndex::build(&self.allow),
            audit: PathIndex::build(&self.audit),
        })
    }

    /// Istio's authorization of `a`: a policy that cannot be compiled
    /// denies; a CUSTOM match asks the external authorizer (the returned
    /// decision carries it) or, when it cannot be asked, denies; a DENY
    /// match (or an undecidable DENY rule) denies; then, if ALLOW policies
    /// apply, one must match. AUDIT matches are reported, never decide.
    /// Only policies that can match (path index, for long lists) are
    /// evaluated.
    pub fn authorize(&self, a: &Attrs<'_>) -> Decision {
        let pre = self.prepared();
        if let Some(p) = &pre.invalid {
            return Decision::deny(Why::PolicyInvalid, Some(p));
        }
        let custom = scan(&self.custom, pre.custom.as_ref(), a, |p| {
            (p.matches(a) != Tri::No).then_some(p)
        });
        let mut external = None;
        if let Some(p) = custom {
            match (&self.ext_authz, &a.http) {
                (Some(Ok(x)), Some(_)) => external = Some((x.clone(), p.name.clone())),
                _ => return Decision::deny(Why::CustomUnsupported, Some(&p.name)),
            }
        }
        let deny = scan(&self.deny, pre.deny.as_ref(), a, |p| match p.matches(a) {
            Tri::Yes => Some(Decision::deny(Why::DenyMatched, Some(&p.name))),
            Tri::Unknown => Some(Decision::deny(Why::DenyUndecidable, Some(&p.name))),
            Tri::No => None,
        });
        let denied = deny.is_some();
        let mut d = if let Some(d) = deny {
            d
        } else if self.allow.is_empty() {
            Decision {
                allowed: true,
                why: Why::NoAllowPolicy,
                policy: None,
                audited: Vec::new(),
                external: None,
            }
        } else {
            match scan(&self.allow, pre.allow.as_ref(), a, |p| {
                (p.matches(a) == Tri::Yes).then_some(p)
            }) {
                Some(p) => Decision {
                    allowed: true,
                    why: Why::AllowMatched,
                    policy: Some(p.name.clone()),
                    audited: Vec::new(),
                    external: None,
                },
                None => Decision::deny(Why::NoAllowMatched, None),
            }
        };
        d.external = external;
        if !denied {
            let mut audited = Vec::new();
            scan(&self.audit, pre.audit.as_ref(), a, |p| {
                if p.matches(a) != Tri::No {
                    audited.push(p.name.clone());
                }
                None::<()>
            });
            d.audited = audited;
        }
        d
    }
}
