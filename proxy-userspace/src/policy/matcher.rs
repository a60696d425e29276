//! Istio's value matching for AuthorizationPolicy fields and conditions
//! (`pilot/pkg/security/authz/matcher`): exact, `prefix*`, `*suffix`, `*`
//! (presence: any non-empty value), path templates `{*}` / `{**}`, CIDRs;
//! and the three-valued logic ([`Tri`]) the evaluator combines them with.
use std::borrow::Cow;
use std::net::IpAddr;

use ipnet::IpNet;

/// A three-valued truth: whether a field matched, did not, or cannot be
/// decided (the attribute is not known to Strait: a peer's mTLS identity,
/// or an HTTP attribute on a TCP connection). Ordered `No < Unknown < Yes`
/// so AND is `min` and OR is `max` (Kleene logic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tri {
    /// Does not match.
    No,
    /// Cannot be decided.
    Unknown,
    /// Matches.
    Yes,
}

impl Tri {
    /// `Yes` / `No` from a bool.
    pub fn from_bool(b: bool) -> Self {
        if b {
            Tri::Yes
        } else {
            Tri::No
        }
    }
}

impl std::ops::Not for Tri {
    type Output = Tri;

    /// Negation; `Unknown` stays `Unknown`.
    fn not(self) -> Tri {
        match self {
            Tri::Yes => Tri::No,
            Tri::No => Tri::Yes,
            Tri::Unknown => Tri::Unknown,
        }
    }
}

/// One Istio string pattern.
#[derive(Clone, Debug)]
pub enum StrMatch {
    /// The whole value.
    Exact(Box<str>),
    /// `abc*`.
    Prefix(Box<str>),
    /// `*abc`.
    Suffix(Box<str>),
    /// `*`: any non-empty value.
    Presence,
    /// A path template with `{*}` (one segment) or `{**}` (any rest).
    Template(regex::Regex),
}

impl StrMatch {
    /// Istio's string matcher for `v` (`matcher.StringMatcher`).
    pub fn istio(v: &str) -> Self {
        if v == "*" {
            StrMatch::Presence
        } else if let Some(s) = v.strip_prefix('*') {
            StrMatch::Suffix(s.into())
        } else if let Some(p) = v.strip_suffix('*') {
            StrMatch::Prefix(p.into())
        } else {
            StrMatch::Exact(v.into())
        }
    }

    /// Istio's path matcher: [`StrMatch::istio`], plus `{*}` / `{**}`
    /// templates (`matcher.PathTemplateMatcher`).
    pub fn istio_path(v: &str) -> Self {
        if v.contains("{*}") || v.contains("{**}") {
            let mut re = String::from("^");
            let mut rest = v;
            while !rest.is_empty() {
                if let Some(r) = rest.strip_prefix("{**}") {
                    re.push_str(".*");
                    rest = r;
                } else if let Some(r) = rest.strip_prefix("{*}") {
                    re.push_str("[^/]+");
                    rest = r;
                } else {
                    let c = rest.chars().next().expect("non-empty");
                    re.push_str(&regex::escape(&c.to_string()));
                    rest = &rest[c.len_utf8()..];
                }
            }
            re.push('$');
            if let Ok(r) = regex::Regex::new(&re) {
                return StrMatch::Template(r);
            }
        }
        Self::istio(v)
    }

    /// Whether `s` matches (case-sensitive).
    pub fn matches(&self, s: &str) -> bool {
        match self {
            StrMatch::Exact(e) => s == &**e,
            StrMatch::Prefix(p) => s.starts_with(&**p),
            StrMatch::Suffix(x) => s.ends_with(&**x),
            StrMatch::Presence => !s.is_empty(),
            StrMatch::Template(r) => r.is_match(s),
        }
    }

    /// Whether `s` matches, ASCII case-insensitively (hosts).
    pub fn matches_ignore_case(&self, s: &str) -> bool {
        let b = s.as_bytes();
        match self {
            StrMatch::Exact(e) => s.eq_ignore_ascii_case(e),
            StrMatch::Prefix(p) => b
                .get(..p.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(p.as_bytes())),
            StrMatch::Suffix(x) => {
                b.len() >= x.len() && b[b.len() - x.len()..].eq_ignore_ascii_case(x.as_bytes())
            }
            StrMatch::Presence => !s.is_empty(),
            StrMatch::Template(r) => r.is_match(&s.to_ascii_lowercase()),
        }
    }
}

/// A value list and its `not` list (`paths` / `notPaths`, `values` /
/// `notValues`): the field holds when a value matches (or there are none)
/// and no `not` value matches.
#[derive(Clone, Debug)]
pub struct Field<M> {
    /// Values, ORed (empty: any).
    pub pos: Vec<M>,
    /// Negated values, ORed then negated.
    pub neg: Vec<M>,
}

impl<M> Default for Field<M> {
    fn default() -> Self {
        Self {
            pos: Vec::new(),
            neg: Vec::new(),
        }
    }
}

impl<M> Field<M> {
    /// Builds a field from Istio's value lists.
    pub fn new<T>(pos: &[T], neg: &[T], f: impl Fn(&T) -> M) -> Self {
        Self {
            pos: pos.iter().map(&f).collect(),
            neg: neg.iter().map(&f).collect(),
        }
    }

    /// No constraint.
    pub fn is_empty(&self) -> bool {
        self.pos.is_empty() && self.neg.is_empty()
    }

    /// The field against an attribute: `matches(m)` says whether pattern
    /// `m` matches it; `known` is false when the attribute cannot be known
    /// (→ [`Tri::Unknown`] unless the field is empty).
    pub fn eval(&self, known: bool, matches: impl Fn(&M) -> bool) -> Tri {
        if self.is_empty() {
            return Tri::Yes;
        }
        if !known {
            return Tri::Unknown;
        }
        let pos = self.pos.is_empty() || self.pos.iter().any(&matches);
        Tri::from_bool(pos && !self.neg.iter().any(matches))
    }
}

/// An attribute's value(s) as the evaluator sees them.
#[derive(Clone, Debug)]
pub enum Attr<'a> {
    /// Not knowable here (mTLS identity without mTLS; HTTP attribute on TCP).
    Unknown,
    /// Known to be absent (no header, no JWT, claim not in the token).
    Absent,
    /// One value.
    One(Cow<'a, str>),
    /// Several values (a list claim, `aud` list): a pattern matches when it
    /// matches one of them.
    Many(Vec<String>),
}

impl Attr<'_> {
    /// Whether it can be known.
    pub fn known(&self) -> bool {
        !matches!(self, Attr::Unknown)
    }

    /// Whether `m` matches the value (or one of the values).
    pub fn any(&self, m: &StrMatch) -> bool {
        match self {
            Attr::Unknown | Attr::Absent => false,
            Attr::One(v) => m.matches(v),
            Attr::Many(vs) => vs.iter().any(|v| m.matches(v)),
        }
    }

    /// A string field against this attribute.
    pub fn eval(&self, f: &Field<StrMatch>) -> Tri {
        f.eval(self.known(), |m| self.any(m))
    }
}

/// Istio's `ipBlocks` entry: an address (`1.2.3.4`, a /32 or /128) or a
/// CIDR. `None` when it parses as neither (validation rejects those).
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// An IP field (`ipBlocks` / `notIpBlocks`, `source.ip` values) against `ip`.
pub fn eval_ip(f: &Field<IpNet>, ip: Option<IpAddr>) -> Tri {
    f.eval(ip.is_some(), |n| ip.is_some_and(|ip| n.contains(&ip)))
}
