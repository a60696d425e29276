//! What the evaluator knows about a request or connection ([`Attrs`]), in
//! Istio's attribute vocabulary (`source.ip`, `request.headers[...]`,
//! `request.auth.claims[...]`, ...).
use std::borrow::Cow;
use std::net::IpAddr;

use http::HeaderName;

use super::jwt::JwtIdentity;

/// The peer's mTLS identity (SPIFFE `<trust-domain>/ns/<ns>/sa/<sa>`),
/// from the HBONE tunnel's verified certificate (destination side) or the
/// client pod's workload identity (source side). Where it is not known
/// the proxy passes `None`, and rules that need it are undecidable
/// ([`super::Tri::Unknown`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// `cluster.local/ns/foo/sa/bar`.
    pub principal: String,
    /// `foo`.
    pub namespace: String,
}

/// Request header access for `request.headers[...]` conditions.
pub trait HeaderLookup {
    /// Every value of `name` joined with `,` (as Envoy's header matcher
    /// sees a repeated header); `None` when absent.
    fn joined(&self, name: &HeaderName) -> Option<Cow<'_, str>>;
}

impl HeaderLookup for http::HeaderMap {
    fn joined(&self, name: &HeaderName) -> Option<Cow<'_, str>> {
        let mut it = self.get_all(name).iter().filter_map(|v| v.to_str().ok());
        let first = it.next()?;
        match it.next() {
            None => Some(Cow::Borrowed(first)),
            Some(second) => {
                let mut s = format!("{first},{second}");
                for v in it {
                    s.push(',');
                    s.push_str(v);
                }
                Some(Cow::Owned(s))
            }
        }
    }
}

/// HTTP facts of a request.
pub struct HttpAttrs<'a> {
    /// `:method`.
    pub method: &'a str,
    /// Path without the query string, as the request pipeline hands it
    /// (normalization is the pipeline's job).
    pub path: &'a str,
    /// `:authority` / `Host`.
    pub host: &'a str,
    /// Headers.
    pub headers: &'a dyn HeaderLookup,
    /// The verified JWT, if the request carried one.
    pub auth: Option<&'a JwtIdentity>,
}

/// Everything a rule may ask about one request or connection. For TCP,
/// `http` is `None` and HTTP-only fields are undecidable, which gives
/// Istio's behaviour: an ALLOW rule with HTTP fields never matches TCP, a
/// DENY rule matches with its HTTP fields ignored.
pub struct Attrs<'a> {
    /// The downstream peer's address (`source.ip`, `ipBlocks`).
    pub source_ip: IpAddr,
    /// The original client (`remote.ip`, `remoteIpBlocks`): Istio derives
    /// it from `X-Forwarded-For` only with `numTrustedProxies`, which is 0
    /// by default, so it is the peer's address.
    pub remote_ip: IpAddr,
    /// The destination workload's address (`destination.ip`); `None` when
    /// the decision covers several endpoints (then undecidable).
    pub dest_ip: Option<IpAddr>,
    /// The destination workload's port (`destination.port`, `ports`).
    pub dest_port: u16,
    /// TLS SNI (`connection.sni`).
    pub sni: Option<&'a str>,
    /// mTLS identity of the peer (`None` when not known: plain text).
    pub peer: Option<&'a PeerIdentity>,
    /// HTTP facts; `None` for TCP connections.
    pub http: Option<HttpAttrs<'a>>,
}
