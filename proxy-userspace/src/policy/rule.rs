//! Compiled AuthorizationPolicy rules and their evaluation against
//! [`Attrs`], following Envoy's RBAC filter as Istio configures it
//! (`pilot/pkg/security/authz/model`): a rule holds when one `from`, one
//! `to` (each ORed; empty lists hold) and every `when` hold; within a
//! source/operation every set field holds; within a field one value
//! matches and no `not` value does.
use std::borrow::Cow;

use http::HeaderName;
use ipnet::IpNet;
use strait_config::snapshot::policy::{Condition, Operation, Source};
use strait_config::snapshot::AuthzRule;

use super::attrs::Attrs;
use super::matcher::{eval_ip, parse_cidr, Attr, Field, StrMatch, Tri};
use super::PolicyError;

fn strs(pos: &[String], neg: &[String]) -> Field<StrMatch> {
    Field::new(pos, neg, |s| StrMatch::istio(s))
}

fn cidrs(
    policy: &str,
    field: &str,
    pos: &[String],
    neg: &[String],
) -> Result<Field<IpNet>, PolicyError> {
    let parse = |v: &String| {
        parse_cidr(v)
            .ok_or_else(|| PolicyError::invalid(policy, field, format!("bad IP block {v:?}")))
    };
    Ok(Field {
        pos: pos.iter().map(parse).collect::<Result<_, _>>()?,
        neg: neg.iter().map(parse).collect::<Result<_, _>>()?,
    })
}

fn ports(
    policy: &str,
    field: &str,
    pos: &[String],
    neg: &[String],
) -> Result<Field<u16>, PolicyError> {
    let parse = |v: &String| {
        v.parse::<u16>()
            .map_err(|_| PolicyError::invalid(policy, field, format!("bad port {v:?}")))
    };
    Ok(Field {
        pos: pos.iter().map(parse).collect::<Result<_, _>>()?,
        neg: neg.iter().map(parse).collect::<Result<_, _>>()?,
    })
}

/// `from.source`.
#[derive(Debug)]
struct CSource {
    principals: Field<StrMatch>,
    request_principals: Field<StrMatch>,
    namespaces: Field<StrMatch>,
    ip_blocks: Field<IpNet>,
    remote_ip_blocks: Field<IpNet>,
    /// `serviceAccounts` (`namespace/name`, exact) against the peer's.
    service_accounts: Field<StrMatch>,
    /// `trustDomains` against the peer principal's trust domain.
    trust_domains: Field<StrMatch>,
}

/// `to.operation`.
#[derive(Debug)]
struct COp {
    hosts: Field<StrMatch>,
    ports: Field<u16>,
    methods: Field<StrMatch>,
    paths: Field<StrMatch>,
}

/// A `when` key.
#[derive(Debug)]
enum Key {
    Header(HeaderName),
    SourceIp,
    RemoteIp,
    DestIp,
    DestPort,
    SourceNamespace,
    SourcePrincipal,
    AuthPrincipal,
    AuthAudiences,
    AuthPresenter,
    AuthClaim(Vec<String>),
    Sni,
}

#[derive(Debug)]
enum CondValues {
    Str(Field<StrMatch>),
    Ip(Field<IpNet>),
    Port(Field<u16>),
}

#[derive(Debug)]
struct CCond {
    key: Key,
    values: CondValues,
}

/// One compiled rule.
#[derive(Debug)]
pub struct CRule {
    from: Vec<CSource>,
    to: Vec<COp>,
    when: Vec<CCond>,
}

/// A path a rule is indexed under ([`CRule::path_keys`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKey<'a> {
    /// The whole path.
    Exact(&'a str),
    /// A prefix of the path (`/api/*` → `/api/`).
    Prefix(&'a str),
}

/// `request.auth.claims[a][b]` → `["a", "b"]`.
fn claim_path(rest: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut s = rest;
    while !s.is_empty() {
        let inner = s.strip_prefix('[')?;
        let end = inner.find(']')?;
        if end == 0 {
            return None;
        }
        out.push(inner[..end].to_string());
        s = &inner[end + 1..];
    }
    (!out.is_empty()).then_some(out)
}

fn key(k: &str) -> Option<Key> {
    Some(match k {
        "source.ip" => Key::SourceIp,
        "remote.ip" => Key::RemoteIp,
        "destination.ip" => Key::DestIp,
        "destination.port" => Key::DestPort,
        "source.namespace" => Key::SourceNamespace,
        "source.principal" => Key::SourcePrincipal,
        "request.auth.principal" => Key::AuthPrincipal,
        "request.auth.audiences" => Key::AuthAudiences,
        "request.auth.presenter" => Key::AuthPresenter,
        "connection.sni" => Key::Sni,
        _ => {
            if let Some(rest) = k.strip_prefix("request.headers[") {
                let name = rest.strip_suffix(']')?;
                Key::Header(HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok()?)
            } else if let Some(rest) = k.strip_prefix("request.auth.claims") {
                Key::AuthClaim(claim_path(rest)?)
            } else {
                return None;
            }
        }
    })
}

fn cond(policy: &str, field: &str, c: &Condition) -> Result<CCond, PolicyError> {
    let key = key(&c.key).ok_or_else(|| {
        PolicyError::invalid(policy, field, format!("unknown condition key {:?}", c.key))
    })?;
    let values = match key {
        Key::SourceIp | Key::RemoteIp | Key::DestIp => {
            CondValues::Ip(cidrs(policy, field, &c.values, &c.not_values)?)
        }
        Key::DestPort => CondValues::Port(ports(policy, field, &c.values, &c.not_values)?),
        _ => CondValues::Str(strs(&c.values, &c.not_values)),
    };
    Ok(CCond { key, values })
}

impl CRule {
    /// Compiles rule `i` of `policy`. Errors: an unknown condition key or a
    /// value the evaluator cannot parse (the policy then fails closed).
    pub fn compile(policy: &str, i: usize, r: &AuthzRule) -> Result<Self, PolicyError> {
        let f = format!("rules[{i}]");
        let source = |s: &Source| -> Result<CSource, PolicyError> {
            Ok(CSource {
                principals: strs(&s.principals, &s.not_principals),
                request_principals: strs(&s.request_principals, &s.not_request_principals),
                namespaces: strs(&s.namespaces, &s.not_namespaces),
                ip_blocks: cidrs(policy, &f, &s.ip_blocks, &s.not_ip_blocks)?,
                remote_ip_blocks: cidrs(policy, &f, &s.remote_ip_blocks, &s.not_remote_ip_blocks)?,
                service_accounts: Field::new(&s.service_accounts, &s.not_service_accounts, |v| {
                    StrMatch::Exact(v.as_str().into())
                }),
                trust_domains: strs(&s.trust_domains, &s.not_trust_domains),
            })
        };
        let op = |o: &Operation| -> Result<COp, PolicyError> {
            Ok(COp {
                hosts: strs(&o.hosts, &o.not_hosts),
                ports: ports(policy, &f, &o.ports, &o.not_ports)?,
                methods: strs(&o.methods, &o.not_methods),
                paths: Field::new(&o.paths, &o.not_paths, |s| StrMatch::istio_path(s)),
            })
        };
        Ok(CRule {
            from: r.from.iter().map(source).collect::<Result<_, _>>()?,
            to: r.to.iter().map(op).collect::<Result<_, _>>()?,
            when: r
                .when
                .iter()
                .enumerate()
                .map(|(j, c)| cond(policy, &format!("{f}.when[{j}]"), c))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The request paths this rule can match, when it can only match some:
    /// every operation of `to` lists `paths` that are all exact values or
    /// `prefix*` patterns (else `None`: any path may match). A request
    /// whose path matches none of them is never matched by this rule, with
    /// HTTP facts known (`paths` is then decided, and `No`).
    pub fn path_keys(&self) -> Option<Vec<PathKey<'_>>> {
        if self.to.is_empty() {
            return None;
        }
        let mut keys = Vec::new();
        for o in &self.to {
            if o.paths.pos.is_empty() {
                return None;
            }
            for m in &o.paths.pos {
                keys.push(match m {
                    StrMatch::Exact(e) => PathKey::Exact(e),
                    StrMatch::Prefix(p) => PathKey::Prefix(p),
                    _ => return None,
                });
            }
        }
        Some(keys)
    }

    /// The request header values this rule can match, when it can only
    /// match some: a `when` condition on `request.headers[name]` whose
    /// `values` are all exact (`None` otherwise). A request whose header
    /// (its values joined with `,`, as evaluated) is not one of them, or
    /// that lacks the header, is never matched by this rule over HTTP.
    pub fn header_key(&self) -> Option<(&HeaderName, Vec<&str>)> {
        self.when.iter().find_map(|c| {
            let (Key::Header(n), CondValues::Str(f)) = (&c.key, &c.values) else {
                return None;
            };
            if f.pos.is_empty() {
                return None;
            }
            let vals = f
                .pos
                .iter()
                .map(|m| match m {
                    StrMatch::Exact(e) => Some(&**e),
                    _ => None,
                })
                .collect::<Option<Vec<&str>>>()?;
            Some((n, vals))
        })
    }

    /// Whether the rule can match a request or connection to destination
    /// port `port` (`ports` / `notPorts` of every operation and
    /// `destination.port` conditions); `false` means it never can, so a
    /// workload port's policy list may leave it out at build time.
    pub fn can_match_port(&self, port: u16) -> bool {
        let to = self.to.is_empty()
            || self
                .to
                .iter()
                .any(|o| o.ports.eval(true, |p| *p == port) != Tri::No);
        to && self.when.iter().all(|c| match &c.values {
            CondValues::Port(f) if matches!(c.key, Key::DestPort) => {
                f.eval(true, |p| *p == port) != Tri::No
            }
            _ => true,
        })
    }

    /// Whether the rule matches `a`.
    pub fn eval(&self, a: &Attrs<'_>) -> Tri {
        let from = any(&self.from, |s| source(s, a));
        if from == Tri::No {
            return Tri::No;
        }
        let to = any(&self.to, |o| operation(o, a));
        if to == Tri::No {
            return Tri::No;
        }
        let mut out = from.min(to);
        for c in &self.when {
            out = out.min(condition(c, a));
            if out == Tri::No {
                return Tri::No;
            }
        }
        out
    }
}

/// OR over `items` (an empty list holds).
fn any<T>(items: &[T], f: impl Fn(&T) -> Tri) -> Tri {
    if items.is_empty() {
        return Tri::Yes;
    }
    let mut out = Tri::No;
    for i in items {
        out = out.max(f(i));
        if out == Tri::Yes {
            break;
        }
    }
    out
}

/// A peer-identity attribute without a peer: absent on a known plaintext
/// connection, else unknown.
fn no_peer<'a>(a: &Attrs<'_>) -> Attr<'a> {
    if a.plaintext {
        Attr::Absent
    } else {
        Attr::Unknown
    }
}

fn principal_attr<'a>(a: &'a Attrs<'_>) -> Attr<'a> {
    match &a.http {
        None => Attr::Unknown,
        Some(h) => match h.auth {
            Some(j) => Attr::One(Cow::Borrowed(&j.principal)),
            None => Attr::Absent,
        },
    }
}

fn source(s: &CSource, a: &Attrs<'_>) -> Tri {
    let peer = |f: &Field<StrMatch>, v: Option<&str>| {
        let attr = match (a.peer, v) {
            (Some(_), Some(v)) => Attr::One(Cow::Borrowed(v)),
            (Some(_), None) => Attr::Absent,
            (None, _) if a.plaintext => Attr::Absent,
            (None, _) => Attr::Unknown,
        };
        attr.eval(f)
    };
    [
        eval_ip(&s.ip_blocks, Some(a.source_ip)),
        eval_ip(&s.remote_ip_blocks, Some(a.remote_ip)),
        principal_attr(a).eval(&s.request_principals),
        peer(&s.principals, a.peer.map(|p| p.principal.as_str())),
        peer(&s.namespaces, a.peer.map(|p| p.namespace.as_str())),
        peer(
            &s.service_accounts,
            a.peer
                .and_then(|p| service_account(&p.principal))
                .as_deref(),
        ),
        peer(
            &s.trust_domains,
            a.peer.and_then(|p| trust_domain(&p.principal)),
        ),
    ]
    .into_iter()
    .min()
    .unwrap_or(Tri::Yes)
}

/// `namespace/name` of a SPIFFE principal `<td>/ns/<ns>/sa/<sa>`.
fn service_account(principal: &str) -> Option<String> {
    let (_, rest) = principal.split_once("/ns/")?;
    let (ns, sa) = rest.split_once("/sa/")?;
    Some(format!("{ns}/{sa}"))
}

/// The trust domain of a SPIFFE principal `<td>/ns/<ns>/sa/<sa>`.
fn trust_domain(principal: &str) -> Option<&str> {
    principal.split_once("/ns/").map(|(td, _)| td)
}

fn operation(o: &COp, a: &Attrs<'_>) -> Tri {
    let port = o.ports.eval(true, |p| *p == a.dest_port);
    if port == Tri::No {
        return Tri::No;
    }
    let Some(h) = &a.http else {
        let http = [&o.hosts, &o.methods, &o.paths]
            .iter()
            .all(|f| f.is_empty());
        return if http { port } else { port.min(Tri::Unknown) };
    };
    let hosts = o.hosts.eval(true, |m| m.matches_ignore_case(h.host));
    let methods = o.methods.eval(true, |m| m.matches(h.method));
    let paths = o.paths.eval(true, |m| m.matches(h.path));
    port.min(hosts).min(methods).min(paths)
}

/// The JSON value of a claim as an attribute (strings; lists of strings;
/// numbers and booleans as text).
fn claim_attr(v: Option<&serde_json::Value>) -> Attr<'_> {
    use serde_json::Value;
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match v {
        None | Some(Value::Null) => Attr::Absent,
        Some(Value::String(s)) => Attr::One(Cow::Borrowed(s)),
        Some(Value::Array(a)) => Attr::Many(a.iter().filter_map(text).collect()),
        Some(other) => text(other).map_or(Attr::Absent, |s| Attr::One(Cow::Owned(s))),
    }
}

fn condition(c: &CCond, a: &Attrs<'_>) -> Tri {
    let f = match &c.values {
        CondValues::Ip(f) => {
            let ip = match c.key {
                Key::SourceIp => Some(a.source_ip),
                Key::RemoteIp => Some(a.remote_ip),
                _ => a.dest_ip,
            };
            return eval_ip(f, ip);
        }
        CondValues::Port(f) => return f.eval(true, |p| *p == a.dest_port),
        CondValues::Str(f) => f,
    };
    let auth = a.http.as_ref().map(|h| h.auth);
    let attr: Attr<'_> = match &c.key {
        Key::Header(n) => match &a.http {
            None => Attr::Unknown,
            Some(h) => h.headers.joined(n).map_or(Attr::Absent, Attr::One),
        },
        Key::SourceNamespace => a
            .peer
            .map_or(no_peer(a), |p| Attr::One(Cow::Borrowed(&p.namespace))),
        Key::SourcePrincipal => a
            .peer
            .map_or(no_peer(a), |p| Attr::One(Cow::Borrowed(&p.principal))),
        Key::Sni => a.sni.map_or(Attr::Absent, |s| Attr::One(Cow::Borrowed(s))),
        Key::AuthPrincipal => principal_attr(a),
        Key::AuthAudiences => match auth {
            None => Attr::Unknown,
            Some(None) => Attr::Absent,
            Some(Some(j)) => claim_attr(j.claims.get("aud")),
        },
        Key::AuthPresenter => match auth {
            None => Attr::Unknown,
            Some(None) => Attr::Absent,
            Some(Some(j)) => claim_attr(j.claims.get("azp")),
        },
        Key::AuthClaim(path) => match auth {
            None => Attr::Unknown,
            Some(None) => Attr::Absent,
            Some(Some(j)) => {
                let mut v = j.claims.get(&path[0]);
                for p in &path[1..] {
                    v = v.and_then(|x| x.get(p));
                }
                claim_attr(v)
            }
        },
        Key::SourceIp | Key::RemoteIp | Key::DestIp | Key::DestPort => Attr::Unknown,
    };
    attr.eval(f)
}
